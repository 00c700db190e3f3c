//! bge.precision = int8: every int8 kernel this machine runs (AVX512-VNNI, AVX2, portable)
//! against the scalar integer reference, exactly; quantization against its definition; the
//! dequantized GEMM against the f32 reference within the quantization error bound; and the whole
//! model against sentence-transformers' goldens and fp32 retrieval.
mod common;

use bge_engine::backend::cpu::gemm_int8::{self, Int8Kernel, PackedInt8};
use bge_engine::backend::cpu::{activation, Cpu, Isa};
use bge_engine::backend::Precision;
use bge_engine::backend::{reference, BackendKind};
use bge_engine::config::Activation;
use bge_engine::{Model, RunOptions};
use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ROWS: [usize; 6] = [1, 3, 4, 16, 17, 130];
const COLS: [usize; 5] = [1, 7, 31, 33, 97];
const DEPTHS: [usize; 7] = [1, 3, 5, 31, 63, 65, 387];

#[test]
fn int8_kernels_are_available_as_the_cpu_says() {
    let kernels = Int8Kernel::available();
    assert!(kernels.contains(&Int8Kernel::Portable));
    assert_eq!(kernels.contains(&Int8Kernel::Avx2), Isa::available().contains(&Isa::Avx2));
    assert_eq!(kernels.contains(&Int8Kernel::Avx512Vnni), gemm_int8::vnni_available());
    assert_eq!(kernels.contains(&Int8Kernel::Amx), gemm_int8::amx_available());
    // The backend's choice follows the f32 kernel family (BGE_CPU_ISA=avx2 forces AVX2 here).
    let cpu = Cpu::int8().unwrap();
    assert_eq!(cpu.precision, Precision::Int8);
    assert_eq!(cpu.describe().1, "int8");
    let want = match cpu.isa {
        Isa::Avx512 if gemm_int8::amx_available() => Int8Kernel::Amx,
        Isa::Avx512 if gemm_int8::vnni_available() => Int8Kernel::Avx512Vnni,
        Isa::Avx512 | Isa::Avx2 => Int8Kernel::Avx2,
        Isa::Portable => Int8Kernel::Portable,
    };
    assert_eq!(cpu.int8_kernel(), want);
}

#[test]
fn weight_quantization_follows_its_definition() {
    let mut rng = StdRng::seed_from_u64(5);
    for k in [1usize, 2, 7, 64, 65, 385] {
        let n = 4;
        let mut w = random(&mut rng, n * k, 3.0);
        w[2 * k..3 * k].fill(0.0); // a zero row
        let q = gemm_int8::quantize_weights(&w, n, k);
        let groups = k.div_ceil(gemm_int8::GROUP);
        assert_eq!(q.scales.len(), n * groups);
        for c in 0..n {
            for g in 0..groups {
                let span = c * k + g * gemm_int8::GROUP..c * k + ((g + 1) * gemm_int8::GROUP).min(k);
                let amax = w[span.clone()].iter().fold(0.0f64, |a, v| a.max(v.abs() as f64));
                let s = q.scales[c * groups + g] as f64;
                assert!((s - amax / 127.0).abs() <= 1e-6 * s.max(1e-30), "({c}, {g}): scale {s} for max {amax}");
                assert!(q.q[span.clone()].iter().all(|&v| v != -128), "symmetric range only");
                if amax > 0.0 {
                    assert_eq!(q.q[span.clone()].iter().map(|v| v.unsigned_abs()).max(), Some(127), "the largest weight maps to ±127");
                }
                for (v, &qv) in w[span.clone()].iter().zip(&q.q[span]) {
                    // Nearest level: the error is at most half a step.
                    assert!((qv as f64 * s - *v as f64).abs() <= s * 0.5 * (1.0 + 1e-5) + 1e-30, "({c}, {g}): {v} -> {qv}·{s}");
                }
            }
        }
    }
}

#[test]
fn token_quantization_and_digits_follow_their_definition() {
    let mut rng = StdRng::seed_from_u64(6);
    let x = random(&mut rng, 1000, 7.0);
    let mut v = vec![0i32; x.len()];
    let s = gemm_int8::quantize_token(&x, &mut v) as f64;
    let amax = x.iter().fold(0.0f64, |a, v| a.max(v.abs() as f64));
    assert!((s - amax / 32512.0).abs() <= 1e-6 * s);
    assert_eq!(v.iter().map(|q| q.abs()).max(), Some(32512));
    for (xv, &q) in x.iter().zip(&v) {
        // Nearest level, up to the f32 rounding of x·(32512/max) (≈ 0.002 of a step at 32512).
        assert!((q as f64 * s - *xv as f64).abs() <= s * 0.51, "{xv} -> {q}·{s}");
    }
    let mut zero = vec![1i32; 5];
    assert_eq!(gemm_int8::quantize_token(&[0.0; 5], &mut zero), 0.0);
    assert_eq!(zero, vec![0; 5]);
    for v in -32512..=32512 {
        let (hi, lo) = gemm_int8::digits(v);
        assert!((-127..=127).contains(&hi), "{v}: high digit {hi}");
        assert_eq!(256 * hi as i32 + lo as i32, v, "{v} = 256·{hi} + {lo}");
    }
}

#[test]
fn int8_kernels_match_the_reference_bitwise() {
    let mut rng = StdRng::seed_from_u64(17);
    let pool = pool(3);
    for kernel in Int8Kernel::available() {
        for &m in &ROWS {
            for &n in &COLS {
                for &k in &DEPTHS {
                    let x = random(&mut rng, m * k, 2.0);
                    let w = random(&mut rng, n * k, 0.5);
                    let b = random(&mut rng, n, 0.5);
                    let qw = gemm_int8::quantize_weights(&w, n, k);
                    let packed = PackedInt8::pack_quantized(kernel, &qw, &b);
                    let want = gemm_int8::reference_gemm(&x, m, &qw, &b);
                    for act in [None, Some(Activation::Gelu)] {
                        for isa in Isa::available() {
                            // Poison the output: every element must be written.
                            let mut got = vec![f32::NAN; m * n];
                            gemm_int8::gemm_int8(&pool, isa, &x, m, &packed, act, &mut got);
                            let mut expect = want.clone();
                            activation::activate_inplace(isa, act, &mut expect);
                            // Per-group integer sums enter f32 exactly and in a fixed order, so any
                            // differing sum shows as a differing bit.
                            let bad = got.iter().zip(&expect).position(|(g, e)| g.to_bits() != e.to_bits());
                            assert!(bad.is_none(), "{kernel:?} (activation on {isa:?}) m={m} n={n} k={k} {act:?}: element {bad:?} differs");
                        }
                    }
                }
            }
        }
    }
}

/// Saturation shows only at the extremes: values of ±max everywhere make every digit product
/// as large as it gets (and with offset digits, the VNNI sums as large as they get).
#[test]
fn int8_kernels_do_not_saturate_at_full_scale() {
    let pool = pool(2);
    let (m, n, k) = (5usize, 40usize, 1541usize);
    let mut rng = StdRng::seed_from_u64(23);
    let sign = |rng: &mut StdRng| if rng.random_bool(0.5) { 1.0f32 } else { -1.0 };
    let mut x: Vec<f32> = (0..m * k).map(|_| sign(&mut rng)).collect();
    x[..k].fill(-1.0);
    x[k..2 * k].fill(1.0);
    // Row 2 also holds values at level -(60·256 + 128): high digit -60, low digit -128.
    for p in (0..k).step_by(3) {
        x[2 * k + p] = -(128.0 + 256.0 * 60.0) / 32512.0;
    }
    let mut w: Vec<f32> = (0..n * k).map(|_| sign(&mut rng)).collect();
    w[..k].fill(-1.0);
    w[k..2 * k].fill(1.0);
    let b = vec![0.0; n];
    let qw = gemm_int8::quantize_weights(&w, n, k);
    let want = gemm_int8::reference_gemm(&x, m, &qw, &b);
    for kernel in Int8Kernel::available() {
        let packed = PackedInt8::pack_quantized(kernel, &qw, &b);
        let mut got = vec![0.0; m * n];
        gemm_int8::gemm_int8(&pool, Isa::detect(), &x, m, &packed, None, &mut got);
        assert!(got.iter().zip(&want).all(|(g, e)| g.to_bits() == e.to_bits()), "{kernel:?}");
        for (i, g) in got.iter().enumerate() {
            let exact: f32 = (0..k).map(|p| x[i / n * k + p] * w[i % n * k + p]).sum();
            assert!((g - exact).abs() <= 1e-3 * k as f32, "{kernel:?} element {i}: {g} vs {exact}");
        }
    }
}

/// Against the f32 reference GEMM: the error of each output is bounded by the rounding of x and w
/// (half a quantization step each), which checks scales, groups and bias independently.
#[test]
fn int8_gemm_is_within_the_quantization_bound_of_f32() {
    let mut rng = StdRng::seed_from_u64(29);
    let (m, n, k) = (9usize, 45usize, 300usize);
    let x = random(&mut rng, m * k, 3.0);
    let w = random(&mut rng, n * k, 0.2);
    let b = random(&mut rng, n, 1.0);
    let mut want = vec![0.0; m * n];
    reference::linear(&x, m, &w, &b, n, k, None, &mut want);
    let sx: Vec<f32> = x.chunks(k).map(|r| r.iter().fold(0.0f32, |a, v| a.max(v.abs())) / 32512.0).collect();
    let g = gemm_int8::GROUP;
    let sw = |c: usize, p: usize| w[c * k + p / g * g..c * k + ((p / g + 1) * g).min(k)].iter().fold(0.0f32, |a, v| a.max(v.abs())) / 127.0;
    for kernel in Int8Kernel::available() {
        let packed = PackedInt8::pack(kernel, &w, &b, n, k);
        let mut got = vec![0.0; m * n];
        gemm_int8::gemm_int8(&pool(2), Isa::Portable, &x, m, &packed, None, &mut got);
        for r in 0..m {
            for c in 0..n {
                // |xw - x'w'| ≤ |x|·|w-w'| + |w'|·|x-x'| ≤ |x|·sw/2 + (|w|+sw/2)·sx/2.
                let bound: f32 = (0..k).map(|p| x[r * k + p].abs() * sw(c, p) / 2.0 + (w[c * k + p].abs() + sw(c, p) / 2.0) * sx[r] / 2.0).sum();
                let err = (got[r * n + c] - want[r * n + c]).abs();
                assert!(err <= bound * 1.01 + 1e-5, "{kernel:?} ({r}, {c}): error {err} over bound {bound}");
            }
        }
    }
}

#[test]
fn int8_rows_do_not_depend_on_batch_or_threads() {
    let mut rng = StdRng::seed_from_u64(31);
    let (m, n, k) = (77usize, 65usize, 130usize);
    let x = random(&mut rng, m * k, 1.0);
    let w = random(&mut rng, n * k, 0.5);
    let b = random(&mut rng, n, 0.5);
    for kernel in Int8Kernel::available() {
        let packed = PackedInt8::pack(kernel, &w, &b, n, k);
        let mut all = vec![0.0; m * n];
        gemm_int8::gemm_int8(&pool(3), Isa::detect(), &x, m, &packed, None, &mut all);
        for row in [0usize, 1, 4, 76] {
            let mut one = vec![0.0; n];
            gemm_int8::gemm_int8(&pool(1), Isa::detect(), &x[row * k..(row + 1) * k], 1, &packed, None, &mut one);
            assert!(one == all[row * n..(row + 1) * n], "{kernel:?}: row {row} alone differs from the batch");
        }
    }
}

#[test]
fn int8_model_stays_close_to_sentence_transformers() {
    let g = goldens();
    let model = Model::load("all-MiniLM-L6-v2", &minilm(), BackendKind::CpuInt8).unwrap();
    assert_eq!(model.precision, "int8");
    let texts: Vec<&str> = g.texts.iter().map(String::as_str).collect();
    let got = model.embed(&texts, &RunOptions::default(), &mut || {}).unwrap();
    let worst = got.iter().zip(&g.mean256.embeddings).map(|(a, b)| cosine(a, b)).fold(1.0, f64::min);
    eprintln!("int8 ({:?}): lowest cosine to sentence-transformers over {} texts: {worst:.6}", model.isa, texts.len());
    assert!(worst >= 0.999, "int8: lowest cosine {worst} < 0.999");
}

/// Short and odd inputs are where int8 strays furthest from fp32 (a handful of tokens, so no
/// averaging over many positions): single characters, punctuation, symbols, other scripts,
/// repeats, two- and three-word queries. fp32 matches sentence-transformers to 1e-6 (goldens),
/// so it stands in for the reference here.
#[test]
fn int8_stays_close_to_fp32_on_short_and_odd_texts() {
    let texts = [
        "", "a", "I", "x", "?", "!!!", "...", "-", "#", "OK!", "ok", "no", "yes", "why?", "42", "3.14159", "1 2 3 4 5 6 7 8 9 10",
        "😀", "🔥🔥🔥", "😀 hello 😀", "東京", "北京欢迎你", "Привет", "مرحبا", "ñ", "Ünïcödé", "π", "∑",
        "aaaaaaaaaaaaaaaaaaaa", "the the the the the", "SELECT * FROM t;", "def f(x): return x", "<html><body>",
        "https://example.com/a?b=c", "@user", "e=mc^2", "NaN", "null", "   ", "\t", "what is love", "password reset",
        "best pizza near me", "404 not found", "no if", "that", "not", "there", "also", "this you be", "and that not way",
    ];
    let opts = RunOptions::default();
    let embed = |backend| Model::load("all-MiniLM-L6-v2", &minilm(), backend).unwrap().embed(&texts, &opts, &mut || {}).unwrap();
    let (fp32, int8) = (embed(BackendKind::Cpu), embed(BackendKind::CpuInt8));
    let (worst, at) = fp32.iter().zip(&int8).map(|(a, b)| cosine(a, b)).zip(0..).fold((1.0, 0), |w, c| if c.0 < w.0 { c } else { w });
    eprintln!("int8 vs fp32 on {} short and odd texts: lowest cosine {worst:.6} ({:?})", texts.len(), texts[at]);
    assert!(worst >= 0.999, "int8: lowest cosine {worst} < 0.999 on {:?}", texts[at]);
}

/// Retrieval with int8 embeddings finds what fp32 finds: queries (phrases cut from passages)
/// against passages of benches/rag_corpus.txt, top-10 sets compared.
#[test]
fn int8_retrieval_agrees_with_fp32() {
    let corpus = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches/rag_corpus.txt")).unwrap();
    let passages: Vec<&str> = corpus.lines().take(600).collect();
    // Words 2..10 of every tenth passage: a query that has an answer, phrased shorter.
    let queries: Vec<String> = passages.iter().step_by(10).map(|p| p.split_whitespace().skip(2).take(8).collect::<Vec<_>>().join(" ")).collect();
    let queries: Vec<&str> = queries.iter().map(String::as_str).collect();
    let top10 = |backend| {
        let model = Model::load("all-MiniLM-L6-v2", &minilm(), backend).unwrap();
        let p = model.embed(&passages, &RunOptions::default(), &mut || {}).unwrap();
        let q = model.embed_queries(&queries, &RunOptions::default(), &mut || {}).unwrap();
        q.iter()
            .map(|qv| {
                let mut scored: Vec<(f64, usize)> = p.iter().enumerate().map(|(i, pv)| (cosine(qv, pv), i)).collect();
                scored.sort_by(|a, b| b.0.total_cmp(&a.0));
                scored[..10].iter().map(|s| s.1).collect::<std::collections::HashSet<usize>>()
            })
            .collect::<Vec<_>>()
    };
    let (fp32, int8) = (top10(BackendKind::Cpu), top10(BackendKind::CpuInt8));
    let shared: usize = fp32.iter().zip(&int8).map(|(a, b)| a.intersection(b).count()).sum();
    let overlap = shared as f64 / (10 * queries.len()) as f64;
    eprintln!("int8 vs fp32: top-10 overlap {overlap:.4} over {} queries, {} passages", queries.len(), passages.len());
    assert!(overlap >= 0.95, "int8 top-10 overlap with fp32 {overlap} < 0.95");
}
