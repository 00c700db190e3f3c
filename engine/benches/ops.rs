//! Criterion benches of each CPU op family, reported as GFLOP/s (criterion's "elements" are
//! FLOPs here) so they read against the machine's peak.
//!
//!   cargo bench -p bge-engine --bench ops
use bge_engine::backend::cpu::gemm_bf16::{self, Bf16Kernel, PackedBf16};
use bge_engine::backend::cpu::gemm_int8::{self, Int8Kernel, PackedInt8};
use bge_engine::backend::cpu::{activation, attention, gemm, norm, Isa, PackedLinear};
use bge_engine::batch::PackedBatch;
use bge_engine::config::Activation;
use bge_engine::tokenize::Encoded;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn data(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect()
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap()
}

fn bench_gemm(c: &mut Criterion) {
    let mut g = c.benchmark_group("gemm");
    // MiniLM / bge-small shapes: QKV, attention output, FFN in, FFN out; m = tokens.
    for &(m, n, k) in &[(16, 1152, 384), (256, 1152, 384), (256, 384, 384), (256, 1536, 384), (256, 384, 1536), (2048, 1536, 384)] {
        let x = data(m * k);
        let w = data(n * k);
        let b = data(n);
        let mut y = vec![0.0; m * n];
        g.throughput(Throughput::Elements((2 * m * n * k) as u64));
        for isa in Isa::available() {
            let packed = PackedLinear::pack(isa, &w, &b, n, k);
            for threads in [1, 2] {
                let p = pool(threads);
                g.bench_with_input(BenchmarkId::new(format!("{isa:?}/t{threads}"), format!("{m}x{n}x{k}")), &(), |bch, _| {
                    bch.iter(|| gemm::gemm(&p, &x, m, &packed, None, &mut y))
                });
            }
        }
    }
    g.finish();
}

/// A reduced-precision GEMM per kernel family, 1 and 2 threads, on shapes of `bench_gemm` with
/// its FLOP count: `pack` packs for a kernel, `run` computes y.
fn bench_kernels<K: Copy, P>(
    c: &mut Criterion,
    group: &str,
    kernels: &[(&str, K)],
    pack: impl Fn(K, &[f32], &[f32], usize, usize) -> P,
    run: impl Fn(&rayon::ThreadPool, &[f32], usize, &P, &mut [f32]),
) {
    let mut g = c.benchmark_group(group);
    for &(m, n, k) in &[(16, 1152, 384), (256, 1152, 384), (256, 384, 1536), (2048, 1536, 384)] {
        let x = data(m * k);
        let w = data(n * k);
        let b = data(n);
        let mut y = vec![0.0; m * n];
        g.throughput(Throughput::Elements((2 * m * n * k) as u64));
        for &(name, kernel) in kernels {
            let packed = pack(kernel, &w, &b, n, k);
            for threads in [1, 2] {
                let p = pool(threads);
                g.bench_with_input(BenchmarkId::new(format!("{name}/t{threads}"), format!("{m}x{n}x{k}")), &(), |bch, _| bch.iter(|| run(&p, &x, m, &packed, &mut y)));
            }
        }
    }
    g.finish();
}

/// The int8 GEMM (bge.precision = int8) per kernel family.
fn bench_gemm_int8(c: &mut Criterion) {
    let kernels: Vec<_> = Int8Kernel::available().into_iter().filter(|&k| k != Int8Kernel::Portable).map(|k| (k.name(), k)).collect();
    bench_kernels(c, "gemm_int8", &kernels, PackedInt8::pack, |p, x, m, w, y| gemm_int8::gemm_int8(p, Isa::detect(), x, m, w, None, y));
}

/// The bf16 GEMM (bge.precision = bf16) per kernel family, where the CPU has AVX512-BF16.
fn bench_gemm_bf16(c: &mut Criterion) {
    let kernels: Vec<_> = Bf16Kernel::available().into_iter().map(|k| (k.name(), k)).collect();
    bench_kernels(c, "gemm_bf16", &kernels, PackedBf16::pack_for, |p, x, m, w, y| gemm_bf16::gemm_bf16(p, x, m, w, None, y));
}

fn bench_attention(c: &mut Criterion) {
    let mut g = c.benchmark_group("attention");
    let (heads, d) = (12, 32);
    let isa = Isa::detect();
    for &(seqs, len) in &[(1, 16), (32, 128), (4, 512)] {
        let encs: Vec<Encoded> = (0..seqs).map(|_| Encoded { ids: vec![0; len], type_ids: vec![0; len] }).collect();
        let batch = PackedBatch::new(&encs.iter().collect::<Vec<_>>());
        let t = batch.num_tokens();
        let qkv = data(t * 3 * heads * d);
        let mut out = vec![0.0; t * heads * d];
        g.throughput(Throughput::Elements((4 * seqs * len * len * heads * d) as u64));
        let p = pool(2);
        g.bench_function(BenchmarkId::new(format!("{isa:?}/t2"), format!("{seqs}x{len}")), |bch| {
            bch.iter(|| attention::attention(isa, &p, &qkv, &batch, heads, d, &mut out))
        });
    }
    g.finish();
}

fn bench_elementwise(c: &mut Criterion) {
    let mut g = c.benchmark_group("elementwise");
    let isa = Isa::detect();
    let (rows, h) = (256, 384);
    let gamma = data(h);
    let beta = data(h);
    let res = data(rows * h);
    let mut x = data(rows * h);
    g.throughput(Throughput::Elements((rows * h) as u64));
    let p = pool(2);
    g.bench_function("add_layer_norm/256x384", |bch| bch.iter(|| norm::add_layer_norm(isa, &p, &mut x, Some(&res), &gamma, &beta, 1e-12)));
    let mut y = data(rows * 1536);
    g.throughput(Throughput::Elements((rows * 1536) as u64));
    g.bench_function("gelu/256x1536", |bch| bch.iter(|| activation::activate_inplace(isa, Some(Activation::Gelu), &mut y)));
    g.finish();
}

criterion_group!(benches, bench_gemm, bench_gemm_int8, bench_gemm_bf16, bench_attention, bench_elementwise);
criterion_main!(benches);
