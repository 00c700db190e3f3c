//! embedding.cu and layer_norm.cu (the LayerNorm family: one row per block, block sums through
//! warp shuffles and shared memory) against reference::add_layer_norm, at the GPU tests'
//! tolerances, for hidden sizes around the warp (1, 31, 33), the 128-thread block (384, 1024)
//! and the 256-thread one (1025, 1537), past what stays in registers (2049), over 1 to 257 rows,
//! under both schedules.
mod common;

use bge_engine::backend::reference;
use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const HIDDEN: [usize; 8] = [1, 31, 33, 384, 1024, 1025, 1537, 2049];
const ROWS: [usize; 4] = [1, 31, 33, 257];

#[test]
fn embedding_layer_norm_matches_reference() {
    let emu = Emu::new();
    let mut rng = StdRng::seed_from_u64(2);
    for h in HIDDEN {
        for tokens in ROWS {
            let (vocab, max_pos, types) = (97, 513, 2);
            let word = random(&mut rng, vocab * h, 1.0);
            let pos = random(&mut rng, max_pos * h, 1.0);
            let ty = random(&mut rng, types * h, 1.0);
            let gamma = random(&mut rng, h, 2.0);
            let beta = random(&mut rng, h, 1.0);
            let ids: Vec<u32> = (0..tokens).map(|_| rng.random_range(0..vocab as u32)).collect();
            let positions: Vec<u32> = (0..tokens).map(|_| rng.random_range(0..max_pos as u32)).collect();
            let type_ids: Vec<u32> = (0..tokens).map(|_| rng.random_range(0..types as u32)).collect();
            // The reference: Encoder::embed_tokens's sum, then the scalar LayerNorm.
            let mut want = vec![0.0f32; tokens * h];
            for t in 0..tokens {
                for c in 0..h {
                    want[t * h + c] = word[ids[t] as usize * h + c] + (pos[positions[t] as usize * h + c] + ty[type_ids[t] as usize * h + c]);
                }
            }
            reference::add_layer_norm(&mut want, None, &gamma, &beta, 1e-12);
            let bufs = [&word, &pos, &ty, &gamma, &beta].map(|v| emu.up(v));
            let (d_ids, d_pos, d_ty) = (emu.up(&ids), emu.up(&positions), emu.up(&type_ids));
            for p in PRECISIONS {
                under_each_schedule(|s| {
                    let mut out32 = emu.poisoned_f32(tokens * h);
                    let mut out16 = emu.poisoned_16(p, tokens * h);
                    let [w, ps, t, g, b] = &bufs;
                    emu.kernels(p)
                        .embed_layer_norm(&emu.dev.stream, tokens, h, &d_ids, &d_pos, &d_ty, w, ps, t, g, b, 1e-12, &mut out32, &mut out16)
                        .unwrap();
                    let e = rel_err(&emu.down(&out32), &want);
                    assert!(e < 1e-5, "{p:?} {s:?} h={h} tokens={tokens}: f32 rel err {e}");
                    let e16 = rel_err(&widen(p, &emu.down(&out16)), &want);
                    assert!(e16 < ulp16(p), "{p:?} {s:?} h={h} tokens={tokens}: 16-bit rel err {e16}");
                });
            }
        }
    }
}

#[test]
fn bias_residual_layer_norm_matches_reference() {
    let emu = Emu::new();
    let mut rng = StdRng::seed_from_u64(3);
    for h in HIDDEN {
        for rows in ROWS {
            let y = random(&mut rng, rows * h, 3.0);
            let bias = random(&mut rng, h, 1.0);
            let res = random(&mut rng, rows * h, 3.0);
            let gamma = random(&mut rng, h, 2.0);
            let beta = random(&mut rng, h, 1.0);
            let mut want: Vec<f32> = y.iter().enumerate().map(|(i, v)| v + bias[i % h]).collect();
            reference::add_layer_norm(&mut want, Some(&res), &gamma, &beta, 1e-12);
            let (d_y, d_bias, d_gamma, d_beta) = (emu.up(&y), emu.up(&bias), emu.up(&gamma), emu.up(&beta));
            for p in PRECISIONS {
                under_each_schedule(|s| {
                    // The residual stream is updated in place, as in the encoder.
                    let mut x32 = emu.up(&res);
                    let mut x16 = emu.poisoned_16(p, rows * h);
                    emu.kernels(p).bias_residual_layer_norm(&emu.dev.stream, rows, h, &d_y, &d_bias, &d_gamma, &d_beta, 1e-12, &mut x32, &mut x16).unwrap();
                    let e = rel_err(&emu.down(&x32), &want);
                    assert!(e < 1e-5, "{p:?} {s:?} h={h} rows={rows}: f32 rel err {e}");
                    let e16 = rel_err(&widen(p, &emu.down(&x16)), &want);
                    assert!(e16 < ulp16(p), "{p:?} {s:?} h={h} rows={rows}: 16-bit rel err {e16}");
                });
            }
        }
    }
}
