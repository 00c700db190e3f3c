//! Criterion benches of the whole model: tokens/s by sequence length and batch size, for
//! all-MiniLM-L6-v2 (the test model) and a bge-small-shaped (12 layers, 384 hidden) random
//! model; includes the batch-1 latency of a 16-token query.
//!
//!   cargo bench -p bge-engine --bench model
use std::path::Path;

use bge_engine::backend::cpu::Cpu;
use bge_engine::batch::PackedBatch;
use bge_engine::config::{Activation, ModelSpec, Pooling};
use bge_engine::models::encoder::Encoder;
use bge_engine::models::Forward;
use bge_engine::tokenize::Encoded;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn batch(seqs: usize, len: usize) -> PackedBatch {
    let encs: Vec<Encoded> = (0..seqs)
        .map(|s| Encoded { ids: (0..len).map(|i| 1000 + ((s * 31 + i * 7) % 20000) as u32).collect(), type_ids: vec![0; len] })
        .collect();
    PackedBatch::new(&encs.iter().collect::<Vec<_>>())
}

fn run(c: &mut Criterion, name: &str, net: &dyn Forward) {
    let mut g = c.benchmark_group(name);
    g.sample_size(10);
    let pool = bge_engine::threads::pool(2).unwrap();
    for &(seqs, len) in &[(1, 16), (1, 128), (32, 32), (32, 128), (8, 256)] {
        let b = batch(seqs, len);
        g.throughput(Throughput::Elements((seqs * len) as u64));
        g.bench_function(BenchmarkId::new("tokens", format!("{seqs}x{len}")), |bch| bch.iter(|| net.forward(&pool, &b, &mut || {}).unwrap()));
    }
    g.finish();
}

fn bench_models(c: &mut Criterion) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/all-MiniLM-L6-v2");
    let spec = ModelSpec::load("all-MiniLM-L6-v2", &dir).unwrap();
    let weights = bge_engine::weights::WeightFile::open(&dir.join("model.safetensors")).unwrap();
    let minilm = Encoder::load(Cpu::new().unwrap(), &spec, &weights).unwrap();
    run(c, "all-MiniLM-L6-v2", &minilm);

    // bge-small-en-v1.5's shape (12 layers, 384 hidden) with random weights: speed only.
    let small = ModelSpec { num_layers: 12, pooling: Pooling { cls: true, ..Default::default() }, activation: Activation::Gelu, ..spec };
    let path = std::env::temp_dir().join("bge-bench-small.safetensors");
    write_random_weights(&small, &path);
    let weights = bge_engine::weights::WeightFile::open(&path).unwrap();
    let small_bf16 = Cpu::bf16().ok().map(|cpu| Encoder::load(cpu, &small, &weights).unwrap());
    let small_int8 = Encoder::load(Cpu::int8().unwrap(), &small, &weights).unwrap();
    let small = Encoder::load(Cpu::new().unwrap(), &small, &weights).unwrap();
    run(c, "bge-small-shape", &small);
    // bge.precision = bf16: half the weight bytes, which batch-1 latency is bound by.
    if let Some(net) = small_bf16 {
        run(c, "bge-small-shape-bf16", &net);
    }
    // bge.precision = int8: a quarter of the weight bytes.
    run(c, "bge-small-shape-int8", &small_int8);
}

/// A BertModel safetensors file of `spec`'s shape with small pseudo-random weights.
fn write_random_weights(spec: &ModelSpec, path: &Path) {
    let (h, i) = (spec.hidden_size, spec.intermediate_size);
    let mut shapes: Vec<(String, Vec<usize>)> = vec![
        ("embeddings.word_embeddings.weight".into(), vec![spec.vocab_size, h]),
        ("embeddings.position_embeddings.weight".into(), vec![spec.max_position_embeddings, h]),
        ("embeddings.token_type_embeddings.weight".into(), vec![spec.type_vocab_size, h]),
        ("embeddings.LayerNorm.weight".into(), vec![h]),
        ("embeddings.LayerNorm.bias".into(), vec![h]),
    ];
    for l in 0..spec.num_layers {
        let p = format!("encoder.layer.{l}");
        for (name, out_f, in_f) in [
            ("attention.self.query", h, h),
            ("attention.self.key", h, h),
            ("attention.self.value", h, h),
            ("attention.output.dense", h, h),
            ("intermediate.dense", i, h),
            ("output.dense", h, i),
        ] {
            shapes.push((format!("{p}.{name}.weight"), vec![out_f, in_f]));
            shapes.push((format!("{p}.{name}.bias"), vec![out_f]));
        }
        for norm in ["attention.output.LayerNorm", "output.LayerNorm"] {
            shapes.push((format!("{p}.{norm}.weight"), vec![h]));
            shapes.push((format!("{p}.{norm}.bias"), vec![h]));
        }
    }
    let mut seed = 0x2545F491u32;
    let bytes: Vec<Vec<u8>> = shapes
        .iter()
        .map(|(_, shape)| {
            (0..shape.iter().product::<usize>())
                .flat_map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    ((seed % 2000) as f32 / 20000.0 - 0.05).to_le_bytes()
                })
                .collect()
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = shapes
        .iter()
        .zip(&bytes)
        .map(|((name, shape), b)| (name.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

criterion_group!(benches, bench_models);
criterion_main!(benches);
