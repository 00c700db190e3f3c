//! The decoder kernels (rms_norm.cu, rope.cu, causal_attention.cu, the gated activations, the
//! scaled embedding gather) against the scalar reference under both schedules, and the whole
//! CUDA decoder (bge-engine's `Model` with the CUDA backend, unchanged) on the tiny Gemma2,
//! Mistral and Qwen3 models against the transformers goldens (engine/tests/goldens/tiny-*.json).
mod common;

use std::path::{Path, PathBuf};

use bge_engine::backend::cuda::Half;
use bge_engine::models::decoder::cuda::CudaDecoder;
use bge_engine::backend::{reference, BackendKind, CausalAttention};
use bge_engine::config::Activation;
use bge_engine::models::Forward;
use bge_engine::{Model, RunOptions};
use common::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

#[test]
fn rms_norm_matches_reference() {
    let emu = Emu::new();
    let mut rng = StdRng::seed_from_u64(31);
    for p in PRECISIONS {
        let k = emu.kernels(p);
        for (rows, h) in [(3usize, 48usize), (2, 1000)] {
            let x = random(&mut rng, rows * h, 3.0);
            let gain = random(&mut rng, h, 2.0);
            let base = random(&mut rng, rows * h, 1.0);
            let (dx, dg) = (emu.up(&x), emu.up(&gain));
            under_each_schedule(|s| {
                // Written to a 16-bit copy, then added to the residual stream.
                let mut out16 = emu.poisoned_16(p, rows * h);
                k.rms_norm(&emu.dev.stream, rows, h, Some(&dx), &dg, 1e-6, None, Some(&mut out16)).unwrap();
                let mut want = vec![0.0; rows * h];
                reference::rms_norm(&x, &gain, 1e-6, &mut want, false);
                let e = rel_err(&widen(p, &emu.down(&out16)), &want);
                assert!(e < ulp16(p), "{s:?} {p:?} h={h} out16: rel err {e}");
                let mut out32 = emu.up(&base);
                k.rms_norm(&emu.dev.stream, rows, h, Some(&dx), &dg, 1e-6, Some((&mut out32, true)), None).unwrap();
                let mut want = base.clone();
                reference::rms_norm(&x, &gain, 1e-6, &mut want, true);
                let e = rel_err(&emu.down(&out32), &want);
                assert!(e < 1e-6, "{s:?} {p:?} h={h} accumulate: rel err {e}");
                // In place, as the final norm runs.
                let mut inplace = emu.up(&x);
                k.rms_norm(&emu.dev.stream, rows, h, None, &dg, 1e-6, Some((&mut inplace, false)), None).unwrap();
                let mut want = vec![0.0; rows * h];
                reference::rms_norm(&x, &gain, 1e-6, &mut want, false);
                let e = rel_err(&emu.down(&inplace), &want);
                assert!(e < 1e-6, "{s:?} {p:?} h={h} in place: rel err {e}");
            });
        }
    }
}

#[test]
fn rope_matches_reference() {
    let emu = Emu::new();
    let k = emu.kernels(Half::F16);
    let mut rng = StdRng::seed_from_u64(32);
    for (heads, kv, d) in [(4usize, 2usize, 24usize), (2, 1, 80), (1, 1, 256)] {
        let tokens = 9;
        let positions: Vec<u32> = (0..tokens as u32).map(|t| t * 331 % 5000).collect();
        let qkv = random(&mut rng, tokens * (heads + 2 * kv) * d, 2.0);
        let (qg, kg) = (random(&mut rng, d, 2.0), random(&mut rng, d, 2.0));
        let inv_freq = emu.up(&reference::rope_inv_freq(d, 10_000.0));
        let (dpos, dqg, dkg) = (emu.up(&positions), emu.up(&qg), emu.up(&kg));
        for norm in [false, true] {
            under_each_schedule(|s| {
                let mut got = emu.up(&qkv);
                let qk_norm = norm.then_some((&dqg, &dkg, 1e-6f32));
                k.rope(&emu.dev.stream, tokens, &mut got, &dpos, &inv_freq, heads, kv, d, qk_norm).unwrap();
                let mut want = qkv.clone();
                reference::rope(&mut want, &positions, heads, kv, d, 10_000.0, norm.then_some((qg.as_slice(), kg.as_slice(), 1e-6)));
                let e = rel_err(&emu.down(&got), &want);
                assert!(e < 2e-6, "{s:?} heads={heads} kv={kv} d={d} qk_norm={norm}: rel err {e}");
            });
        }
    }
}

#[test]
fn causal_attention_matches_reference() {
    let emu = Emu::new();
    let mut rng = StdRng::seed_from_u64(33);
    let batch = batch_of(&[1, 9, 40, 3]);
    let n = batch.num_tokens();
    let cu = emu.up(&cu_seqlens(&batch));
    for p in PRECISIONS {
        let k = emu.kernels(p);
        for (heads, kv_heads, head_dim, window, softcap) in
            [(4usize, 2usize, 24usize, Some(8usize), Some(2.0f32)), (2, 2, 64, None, None), (2, 1, 256, Some(5), Some(50.0)), (3, 1, 40, Some(1), None)]
        {
            let a = CausalAttention { heads, kv_heads, head_dim, scale: 0.2, softcap, window };
            let qkv = random(&mut rng, n * a.qkv_width(), 2.0);
            let dqkv = emu.up(&qkv);
            let mut want = vec![0.0; n * heads * head_dim];
            reference::causal_attention(&qkv, &batch, &a, &mut want, 0..n);
            under_each_schedule(|s| {
                let mut out = emu.poisoned_16(p, n * heads * head_dim);
                k.causal_attention(&emu.dev.stream, &dqkv, &cu, batch.num_seqs(), batch.max_len, n, &a, &mut out).unwrap();
                let e = rel_err(&widen(p, &emu.down(&out)), &want);
                assert!(e < ulp16(p), "{s:?} {p:?} {a:?}: rel err {e}");
            });
        }
    }
}

#[test]
fn gated_activation_and_scaled_embedding_match_reference() {
    let emu = Emu::new();
    let mut rng = StdRng::seed_from_u64(34);
    let (rows, inter) = (5usize, 37usize);
    let gate_up = random(&mut rng, rows * 2 * inter, 5.0);
    let d_gate_up = emu.up(&gate_up);
    for p in PRECISIONS {
        let k = emu.kernels(p);
        for act in [Activation::GeluTanh, Activation::Silu] {
            let mut want = vec![0.0; rows * inter];
            reference::gated_activation(&gate_up, inter, act, &mut want);
            let mut out = emu.poisoned_16(p, rows * inter);
            k.gated_activation(&emu.dev.stream, act, rows, inter, &d_gate_up, &mut out).unwrap();
            let e = rel_err(&widen(p, &emu.down(&out)), &want);
            assert!(e < ulp16(p), "{p:?} {act:?}: rel err {e}");
        }
    }
    let (vocab, h) = (11usize, 33usize);
    let table = random(&mut rng, vocab * h, 1.0);
    let ids: Vec<u32> = vec![3, 0, 10, 3];
    let mut out = emu.poisoned_f32(ids.len() * h);
    let k = emu.kernels(Half::F16);
    k.embed_scaled(&emu.dev.stream, ids.len(), h, &emu.up(&ids), &emu.up(&table), 5.75, &mut out).unwrap();
    let want: Vec<f32> = ids.iter().flat_map(|&i| table[i as usize * h..(i as usize + 1) * h].iter().map(|v| v * 5.75)).collect();
    assert_eq!(emu.down(&out), want);
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[derive(serde::Deserialize)]
struct DecoderGoldens {
    texts: Vec<String>,
    embeddings: Vec<Vec<f32>>,
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// The whole decoder on the emulated GPU against transformers: through `Model` (fp16 GEMM
/// inputs) at the GPU tests' bar of 0.9999, and loaded with bf16 GEMM inputs at 0.999.
#[test]
fn cuda_decoder_matches_goldens() {
    bge_cuda_emulator::device();
    for name in ["tiny-gemma2", "tiny-mistral", "tiny-qwen3"] {
        let dir = repo().join("engine/tests/models").join(name);
        let g: DecoderGoldens = serde_json::from_str(&std::fs::read_to_string(repo().join(format!("engine/tests/goldens/{name}.json"))).unwrap()).unwrap();
        let texts: Vec<&str> = g.texts.iter().map(String::as_str).collect();

        let model = Model::load(name, &dir, BackendKind::Cuda).unwrap();
        assert_eq!((model.backend, model.precision), (BackendKind::Cuda, "fp16"));
        let launches = bge_cuda_emulator::launches();
        let got = model.embed(&texts, &RunOptions { max_batch_tokens: 300, ..RunOptions::default() }, &mut || {}).unwrap();
        assert!(bge_cuda_emulator::launches() > launches, "the embeddings were not computed by the emulated kernels");
        let worst = got.iter().zip(&g.embeddings).map(|(a, b)| cosine(a, b)).fold(1.0, f64::min);
        eprintln!("{name} on the emulated GPU, fp16 GEMMs: lowest cosine {worst:.6}");
        assert!(worst >= 0.9999, "{name} fp16: lowest cosine {worst}");

        let spec = &model.spec;
        let weights = bge_engine::weights::WeightFile::open_anchored(&weights_path(&dir), bge_engine::models::decoder::ANCHOR).unwrap();
        let bf16 = CudaDecoder::load_with(spec, &weights, Half::Bf16).unwrap();
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let encoded = model.encode_all(&texts, bge_engine::TextRole::Passage, true, &mut || {}).unwrap();
        let seqs: Vec<&bge_engine::tokenize::Encoded> = encoded.iter().collect();
        let batch = bge_engine::batch::PackedBatch::new(&seqs);
        let got = bf16.embed(&pool, &batch, spec.hidden_size, spec.pooling, spec.normalize, &mut || {}).unwrap();
        let worst = got.iter().zip(&g.embeddings).map(|(a, b)| cosine(a, b)).fold(1.0, f64::min);
        eprintln!("{name} on the emulated GPU, bf16 GEMMs: lowest cosine {worst:.6}");
        assert!(worst >= 0.999, "{name} bf16: lowest cosine {worst}");
    }
}

fn weights_path(dir: &Path) -> PathBuf {
    let single = dir.join("model.safetensors");
    if single.exists() {
        single
    } else {
        dir.join("model.safetensors.index.json")
    }
}
