//! The decoder's CPU kernels (RMSNorm, RoPE, causal attention, gated activation) against the
//! scalar reference on random data of awkward sizes, for every SIMD path this machine runs.
mod common;

use bge_engine::backend::cpu::{activation, causal_attention, rms_norm, rope, Isa};
use bge_engine::backend::{reference, CausalAttention, RopeTable};
use bge_engine::config::Activation;
use common::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

#[test]
fn rms_norm_matches_reference() {
    let mut rng = StdRng::seed_from_u64(21);
    for isa in Isa::available() {
        for &h in &[1usize, 7, 16, 48, 250, 3584] {
            for &rows in &[1usize, 5, 40] {
                let x = random(&mut rng, rows * h, 3.0);
                let gain = random(&mut rng, h, 2.0);
                let base = random(&mut rng, rows * h, 1.0);
                for accumulate in [false, true] {
                    let mut got = if accumulate { base.clone() } else { vec![f32::NAN; rows * h] };
                    rms_norm::rms_norm(isa, &pool(3), &x, &gain, 1e-6, &mut got, accumulate);
                    let mut want = base.clone();
                    reference::rms_norm(&x, &gain, 1e-6, &mut want, accumulate);
                    let e = rel_err(&got, &want);
                    assert!(e < 1e-6, "{isa:?} h={h} rows={rows} accumulate={accumulate}: rel err {e}");
                }
            }
        }
    }
}

#[test]
fn rope_matches_reference_with_and_without_qk_norm() {
    let mut rng = StdRng::seed_from_u64(22);
    for isa in Isa::available() {
        for &(heads, kv, d) in &[(4usize, 2usize, 24usize), (2, 1, 2), (3, 3, 40), (16, 8, 256)] {
            let tokens = 37;
            // Positions as a packed batch has them, beyond small numbers too.
            let positions: Vec<u32> = (0..tokens as u32).map(|t| t * 97 % 3000).collect();
            let table = RopeTable::new(&positions, d, 10_000.0);
            let qkv = random(&mut rng, tokens * (heads + 2 * kv) * d, 2.0);
            let (q_gain, k_gain) = (random(&mut rng, d, 2.0), random(&mut rng, d, 2.0));
            for norm in [false, true] {
                let qk_norm = norm.then_some((q_gain.as_slice(), k_gain.as_slice(), 1e-6f32));
                let mut got = qkv.clone();
                rope::rope(isa, &pool(2), &mut got, &table, heads, kv, qk_norm);
                let mut want = qkv.clone();
                reference::rope(&mut want, &positions, heads, kv, d, 10_000.0, qk_norm);
                let e = rel_err(&got, &want);
                assert!(e < 2e-6, "{isa:?} heads={heads} kv={kv} d={d} qk_norm={norm}: rel err {e}");
                // The values are untouched.
                let v0 = (heads + kv) * d;
                let w = (heads + 2 * kv) * d;
                assert!((0..tokens).all(|t| got[t * w + v0..(t + 1) * w] == qkv[t * w + v0..(t + 1) * w]));
            }
        }
    }
}

#[test]
fn causal_attention_matches_reference() {
    let mut rng = StdRng::seed_from_u64(23);
    let lens = [1usize, 2, 9, 64, 65, 130, 7];
    let batch = batch_of(&lens);
    let n = batch.num_tokens();
    for isa in Isa::available() {
        for &(heads, kv_heads, head_dim) in &[(4usize, 2usize, 24usize), (2, 2, 16), (8, 1, 40), (2, 1, 256)] {
            for window in [None, Some(1), Some(8), Some(64), Some(1000)] {
                for softcap in [None, Some(2.0f32)] {
                    let a = CausalAttention { heads, kv_heads, head_dim, scale: 0.3, softcap, window };
                    let qkv = random(&mut rng, n * a.qkv_width(), 2.0);
                    let mut got = vec![f32::NAN; n * heads * head_dim];
                    causal_attention::causal_attention(isa, &pool(3), &qkv, &batch, &a, &mut got, 0..n);
                    let mut want = vec![0.0; n * heads * head_dim];
                    reference::causal_attention(&qkv, &batch, &a, &mut want, 0..n);
                    let e = rel_err(&got, &want);
                    // Scores grow with head_dim (inputs up to 2): so does f32 rounding.
                    assert!(e < 1e-6 * (head_dim as f32).sqrt(), "{isa:?} {a:?}: rel err {e}");
                    // Rows computed in pieces (how long batches are split between interrupt
                    // checks) are bitwise the rows computed together.
                    let mut pieces = vec![f32::NAN; n * heads * head_dim];
                    for (start, end) in [(0, 3), (3, 70), (70, 71), (71, n)] {
                        causal_attention::causal_attention(isa, &pool(2), &qkv, &batch, &a, &mut pieces, start..end);
                    }
                    assert!(pieces == got, "{isa:?} {a:?}: split queries differ");
                }
            }
        }
    }
}

#[test]
fn causal_attention_rows_do_not_depend_on_the_batch() {
    let mut rng = StdRng::seed_from_u64(24);
    let a = CausalAttention { heads: 4, kv_heads: 2, head_dim: 24, scale: 0.25, softcap: Some(2.0), window: Some(8) };
    let w = a.qkv_width();
    let alone = random(&mut rng, 100 * w, 2.0);
    let other = random(&mut rng, 37 * w, 2.0);
    for isa in Isa::available() {
        let mut one = vec![0.0; 100 * 96];
        causal_attention::causal_attention(isa, &pool(1), &alone, &batch_of(&[100]), &a, &mut one, 0..100);
        let joined: Vec<f32> = other.iter().chain(&alone).copied().collect();
        let mut both = vec![0.0; 137 * 96];
        causal_attention::causal_attention(isa, &pool(3), &joined, &batch_of(&[37, 100]), &a, &mut both, 0..137);
        assert!(both[37 * 96..] == one[..], "{isa:?}: a sequence's rows changed with its batch");
    }
}

#[test]
fn gated_activation_matches_reference() {
    let mut rng = StdRng::seed_from_u64(25);
    for isa in Isa::available() {
        for &inter in &[1usize, 7, 16, 96, 1000] {
            for act in [Activation::GeluTanh, Activation::Silu, Activation::Gelu] {
                let rows = 19;
                let gate_up = random(&mut rng, rows * 2 * inter, 6.0);
                let mut got = vec![f32::NAN; rows * inter];
                activation::gated_activation(isa, &pool(3), &gate_up, inter, act, &mut got);
                let mut want = vec![0.0; rows * inter];
                reference::gated_activation(&gate_up, inter, act, &mut want);
                let e = rel_err(&got, &want);
                assert!(e < 2e-6, "{isa:?} inter={inter} {act:?}: rel err {e}");
            }
        }
    }
}
