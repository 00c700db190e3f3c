//! The backend's linear layers (gemm.rs: y = x · Wᵀ as a column-major "TN" cublasGemmEx) on the
//! emulated cuBLAS, against reference::linear. This checks pg_bge's side of the call (operation
//! flags, m/n/k, leading dimensions, data types): the emulated cuBLAS follows cuBLAS's
//! column-major conventions and checks every operand lies inside its buffer. cuBLAS itself is
//! not under test here.
mod common;

use bge_engine::backend::reference;
use common::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

#[test]
fn linear_matches_reference() {
    let emu = Emu::new();
    let mut blas = emu.dev.exec();
    let mut rng = StdRng::seed_from_u64(5);
    for p in PRECISIONS {
        for &(rows, out_f, in_f) in &[(1usize, 1usize, 1usize), (7, 33, 384), (33, 1152, 384), (31, 384, 1536), (1, 3072, 768)] {
            // Inputs already rounded to 16 bits, so only accumulation order and f32 sums differ.
            let x: Vec<u16> = random(&mut rng, rows * in_f, 1.0).into_iter().map(|v| narrow(p, v)).collect();
            let w: Vec<u16> = random(&mut rng, out_f * in_f, 0.5).into_iter().map(|v| narrow(p, v)).collect();
            let mut y = emu.poisoned_f32(rows * out_f);
            blas.linear(&emu.dev.stream, p, &emu.up(&x), rows, &emu.up(&w), out_f, in_f, &mut y).unwrap();
            let mut want = vec![0.0; rows * out_f];
            reference::linear(&widen(p, &x), rows, &widen(p, &w), &vec![0.0; out_f], out_f, in_f, None, &mut want);
            let e = rel_err(&emu.down(&y), &want);
            assert!(e < 1e-5 * (in_f as f32).sqrt().max(1.0), "{p:?} [{rows}x{in_f}]·[{out_f}x{in_f}]ᵀ: rel err {e}");
        }
    }
}
