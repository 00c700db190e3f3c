//! Every CPU kernel against the scalar reference on random data of awkward sizes, for every
//! SIMD path this machine can run (AVX-512, AVX2, portable).
mod common;

use bge_engine::backend::cpu::{activation, attention, gemm, norm, Isa, PackedLinear};
use bge_engine::backend::reference;
use bge_engine::config::Activation;
use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[test]
fn gemm_matches_reference_on_awkward_sizes() {
    let mut rng = StdRng::seed_from_u64(7);
    let pool = pool(3);
    // On AVX-512, 10 and 14 rows run as one pass (a short query), 15 and 33 as passes of 8 and 7, 11 each.
    let sizes = [1usize, 7, 10, 14, 15, 33, 383];
    let widths = [1usize, 7, 33, 1537];
    for isa in Isa::available() {
        for &m in &sizes {
            for &n in &widths {
                for &k in &[1usize, 7, 33, 384, 1537] {
                    if m * n * k > 60_000_000 {
                        continue;
                    }
                    let x = random(&mut rng, m * k, 1.0);
                    let w = random(&mut rng, n * k, 0.5);
                    let b = random(&mut rng, n, 0.5);
                    for act in [None, Some(Activation::Gelu), Some(Activation::GeluTanh)] {
                        let packed = PackedLinear::pack(isa, &w, &b, n, k);
                        // Poison the output: every element must be written.
                        let mut got = vec![f32::NAN; m * n];
                        gemm::gemm(&pool, &x, m, &packed, act, &mut got);
                        let mut want = vec![0.0; m * n];
                        reference::linear(&x, m, &w, &b, n, k, act, &mut want);
                        let e = rel_err(&got, &want);
                        assert!(e < 2e-6 * (k as f32).sqrt().max(1.0), "{isa:?} m={m} n={n} k={k} {act:?}: rel err {e}");
                    }
                }
            }
        }
    }
}

#[test]
fn gemm_rows_do_not_depend_on_batch_or_threads() {
    let mut rng = StdRng::seed_from_u64(11);
    let (n, k) = (97, 130);
    let w = random(&mut rng, n * k, 0.5);
    let b = random(&mut rng, n, 0.5);
    let x = random(&mut rng, 383 * k, 1.0);
    for isa in Isa::available() {
        let packed = PackedLinear::pack(isa, &w, &b, n, k);
        let mut all = vec![0.0; 383 * n];
        gemm::gemm(&pool(3), &x, 383, &packed, None, &mut all);
        for row in [0usize, 1, 5, 8, 100, 382] {
            let mut one = vec![0.0; n];
            gemm::gemm(&pool(1), &x[row * k..(row + 1) * k], 1, &packed, None, &mut one);
            assert!(one == all[row * n..(row + 1) * n], "{isa:?}: row {row} alone differs from row {row} in a batch of 383");
        }
        // Short batches (one pass of up to Isa::max_rows rows, or two of even size).
        for (start, len) in [(3usize, 10usize), (50, 14), (200, 15)] {
            let mut some = vec![0.0; len * n];
            gemm::gemm(&pool(2), &x[start * k..(start + len) * k], len, &packed, None, &mut some);
            assert!(some == all[start * n..(start + len) * n], "{isa:?}: rows {start}..{} alone differ from the same rows in a batch of 383", start + len);
        }
    }
}

#[test]
fn add_layer_norm_matches_reference() {
    let mut rng = StdRng::seed_from_u64(3);
    let pool = pool(2);
    for &h in &[1usize, 7, 33, 384, 1537] {
        for &rows in &[1usize, 7, 33, 100] {
            let x0 = random(&mut rng, rows * h, 3.0);
            let res = random(&mut rng, rows * h, 3.0);
            let gamma = random(&mut rng, h, 2.0);
            let beta = random(&mut rng, h, 1.0);
            for (isa, residual) in Isa::available().into_iter().flat_map(|isa| [(isa, None), (isa, Some(res.as_slice()))]) {
                let mut got = x0.clone();
                norm::add_layer_norm(isa, &pool, &mut got, residual, &gamma, &beta, 1e-12);
                let mut want = x0.clone();
                reference::add_layer_norm(&mut want, residual, &gamma, &beta, 1e-12);
                let e = rel_err(&got, &want);
                assert!(e < 1e-5, "{isa:?} h={h} rows={rows} residual={}: rel err {e}", residual.is_some());
            }
        }
    }
}

#[test]
fn attention_matches_reference_on_varlen_batches() {
    let mut rng = StdRng::seed_from_u64(5);
    let pool = pool(3);
    for &(heads, d) in &[(1usize, 1usize), (12, 32), (3, 7), (2, 64)] {
        for lens in [vec![1], vec![7, 1, 33], vec![100, 3, 257], vec![1, 1, 1, 1], vec![383]] {
            let batch = batch_of(&lens);
            let t = batch.num_tokens();
            let qkv = random(&mut rng, t * 3 * heads * d, 2.0);
            let mut want = vec![0.0; t * heads * d];
            reference::attention(&qkv, &batch, heads, d, &mut want, 0..batch.num_tokens());
            for isa in Isa::available() {
                let mut got = vec![f32::NAN; t * heads * d];
                attention::attention(isa, &pool, &qkv, &batch, heads, d, &mut got);
                let e = rel_err(&got, &want);
                assert!(e < 1e-5, "{isa:?} heads={heads} d={d} lens={lens:?}: rel err {e}");
                // Computed in random query chunks (as the encoder does, to check for
                // interrupts between them): bitwise the same.
                let mut chunked = vec![f32::NAN; t * heads * d];
                let mut start = 0;
                while start < t {
                    let end = (start + rng.random_range(1..=t)).min(t);
                    attention::attention_rows(isa, &pool, &qkv, &batch, heads, d, &mut chunked, start..end);
                    start = end;
                }
                assert!(chunked == got, "{isa:?} heads={heads} d={d} lens={lens:?}: chunked attention differs");
            }
        }
    }
}

#[test]
fn attention_keeps_sequences_apart() {
    // Changing one sequence's tokens must not move another sequence's outputs by a single bit.
    let mut rng = StdRng::seed_from_u64(9);
    let (heads, d) = (4, 16);
    let batch = batch_of(&[5, 9, 3]);
    let mut qkv = random(&mut rng, batch.num_tokens() * 3 * heads * d, 1.0);
    let isa = Isa::detect();
    let mut before = vec![0.0; batch.num_tokens() * heads * d];
    attention::attention(isa, &pool(2), &qkv, &batch, heads, d, &mut before);
    let row = 3 * heads * d;
    for v in &mut qkv[5 * row..14 * row] {
        *v += 1.0;
    }
    let mut after = vec![0.0; before.len()];
    attention::attention(isa, &pool(2), &qkv, &batch, heads, d, &mut after);
    let hd = heads * d;
    assert!(before[..5 * hd] == after[..5 * hd] && before[14 * hd..] == after[14 * hd..]);
    assert!(before[5 * hd..14 * hd] != after[5 * hd..14 * hd]);
}

#[test]
fn activations_match_reference_over_their_range() {
    let xs: Vec<f32> = (-4000..=4000).map(|i| i as f32 * 0.0025).chain([-30.0, -9.5, 9.5, 30.0, 0.0, -0.0]).collect();
    for isa in Isa::available() {
        for act in [Activation::Gelu, Activation::GeluTanh] {
            let mut got = xs.clone();
            activation::activate_inplace(isa, Some(act), &mut got);
            for (x, g) in xs.iter().zip(&got) {
                let want = reference::activate(Some(act), *x);
                assert!((g - want).abs() <= 3e-7 * (1.0 + x.abs()), "{isa:?} {act:?}({x}) = {g}, reference {want}");
            }
        }
    }
}

#[test]
fn bf16_gemm_matches_reference_within_bf16_rounding() {
    use bge_engine::backend::cpu::gemm_bf16::{self, Bf16Kernel, PackedBf16};
    if !gemm_bf16::available() {
        eprintln!("\n*** SKIPPED bf16_gemm_matches_reference_within_bf16_rounding: this CPU has no AVX512-BF16 ***\n");
        return;
    }
    let kernels = Bf16Kernel::available();
    eprintln!("bf16 kernels on this CPU: {:?}", kernels.iter().map(|k| k.name()).collect::<Vec<_>>());
    let mut rng = StdRng::seed_from_u64(13);
    let pool = pool(3);
    // Rows around the 8-row and 16/32-token tiles, k around AMX's 32-input steps.
    for &m in &[1usize, 7, 16, 17, 33, 383] {
        for &n in &[1usize, 7, 33, 1537] {
            for &k in &[1usize, 7, 33, 64, 384] {
                let x = random(&mut rng, m * k, 1.0);
                let w = random(&mut rng, n * k, 0.5);
                let b = random(&mut rng, n, 0.5);
                // Oracle: the reference on inputs rounded to bf16 the same way, so only the
                // accumulation order differs.
                let round = |v: &[f32]| v.iter().map(|x| half::bf16::from_f32(*x).to_f32()).collect::<Vec<_>>();
                let mut want = vec![0.0; m * n];
                reference::linear(&round(&x), m, &round(&w), &b, n, k, Some(Activation::Gelu), &mut want);
                for &kernel in &kernels {
                    let packed = PackedBf16::pack_for(kernel, &w, &b, n, k);
                    let mut got = vec![f32::NAN; m * n];
                    gemm_bf16::gemm_bf16(&pool, &x, m, &packed, Some(Activation::Gelu), &mut got);
                    let e = rel_err(&got, &want);
                    assert!(e < 2e-6 * (k as f32).sqrt().max(1.0), "{kernel:?} m={m} n={n} k={k}: rel err {e}");
                    // Every row alone gives bitwise the same result as inside the batch.
                    let row = m / 2;
                    let mut one = vec![0.0; n];
                    gemm_bf16::gemm_bf16(&pool, &x[row * k..(row + 1) * k], 1, &packed, Some(Activation::Gelu), &mut one);
                    assert!(one == got[row * n..(row + 1) * n], "{kernel:?} m={m} n={n} k={k}: row {row} alone differs");
                }
            }
        }
    }
}

#[test]
fn isa_choice_follows_the_environment_variable() {
    let available = Isa::available();
    let best = *available.last().unwrap();
    assert_eq!(Isa::detect(), best);
    for unset in [None, Some(""), Some("auto"), Some(" AUTO ")] {
        assert_eq!(Isa::choose(unset), Ok(best), "{unset:?}");
    }
    for isa in [Isa::Avx512, Isa::Avx2, Isa::Portable] {
        assert_eq!(Isa::parse(isa.name()), Some(isa));
        let got = Isa::choose(Some(&isa.name().to_uppercase()));
        if available.contains(&isa) {
            assert_eq!(got, Ok(isa));
        } else {
            let msg = got.unwrap_err();
            assert!(msg.contains("this CPU cannot run") && msg.contains(isa.name()), "{msg}");
        }
    }
    let msg = Isa::choose(Some("avx9000")).unwrap_err();
    assert!(msg.contains("BGE_CPU_ISA=avx9000 is not a kernel family"), "{msg}");
    // The process-wide choice is whatever BGE_CPU_ISA says for this test run (scripts/test.sh
    // runs the goldens once per family), and the CPU backend runs on it.
    let want = Isa::choose(std::env::var(Isa::ENV).ok().as_deref());
    assert_eq!(Isa::selected().ok(), want.clone().ok());
    assert_eq!(bge_engine::backend::cpu::Cpu::new().ok().map(|c| c.isa), want.ok());
}

#[test]
fn bf16_backend_needs_avx512_bf16_and_says_what_to_use_instead() {
    use bge_engine::backend::cpu::{gemm_bf16, Cpu};
    let avx512_selected = Isa::selected().ok() == Some(Isa::Avx512);
    match Cpu::bf16() {
        Ok(cpu) => assert!(gemm_bf16::available() && avx512_selected && cpu.precision == bge_engine::backend::Precision::Bf16 && cpu.describe() == ("avx512", "bf16")),
        Err(e) => {
            assert!(!(gemm_bf16::available() && avx512_selected), "bf16 refused on a CPU that runs it: {e}");
            assert_eq!(e.kind(), bge_engine::error::ErrorKind::FeatureNotSupported);
            assert!(e.to_string().starts_with("bf16 precision needs a CPU with AVX512-BF16 and the avx512 kernels; this "), "{e}");
            assert!(e.hint().unwrap().starts_with("SET bge.precision = fp32 (the default)"), "{:?}", e.hint());
        }
    }
}
