//! activation.cu (bias + GELU, erf and tanh forms, 16-bit out) against reference::activate,
//! elementwise within one 16-bit rounding, as the GPU test requires. Shapes: single elements,
//! rows that are not multiples of the 256-thread block, and one launch large enough that the
//! grid is capped and the grid-stride loop wraps.
mod common;

use bge_cuda_emulator::{set_schedule, Schedule, SCHEDULES};
use bge_engine::backend::cuda::Half;
use bge_engine::backend::reference;
use bge_engine::config::Activation;
use common::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

fn check(emu: &Emu, rows: usize, cols: usize, seed: u64, acts: &[Activation], precisions: &[Half], schedules: &[Schedule]) {
    let mut rng = StdRng::seed_from_u64(seed);
    let y = random(&mut rng, rows * cols, 6.0);
    let bias = random(&mut rng, cols, 1.0);
    let (d_y, d_bias) = (emu.up(&y), emu.up(&bias));
    for &act in acts {
        let want: Vec<f32> = y.iter().enumerate().map(|(i, v)| reference::activate(Some(act), v + bias[i % cols])).collect();
        for &p in precisions {
            for &s in schedules {
                set_schedule(s);
                let mut out = emu.poisoned_16(p, rows * cols);
                emu.kernels(p).bias_gelu(&emu.dev.stream, act, rows, cols, &d_y, &d_bias, &mut out).unwrap();
                for (i, (a, b)) in widen(p, &emu.down(&out)).iter().zip(&want).enumerate() {
                    assert!(a.is_finite(), "{p:?} {act:?} {s:?}: element {i} not written");
                    assert!((a - b).abs() <= ulp16(p) * b.abs().max(1e-3) + 1e-6, "{p:?} {act:?} {s:?} rows={rows} cols={cols} [{i}]: {a} vs {b}");
                }
            }
        }
    }
    set_schedule(Schedule::Ascending);
}

#[test]
fn bias_gelu_matches_reference() {
    let emu = Emu::new();
    for (i, &(rows, cols)) in [(1usize, 1usize), (1, 31), (7, 33), (33, 1537), (257, 1536), (3, 70_001)].iter().enumerate() {
        check(&emu, rows, cols, i as u64, &[Activation::Gelu, Activation::GeluTanh], &PRECISIONS, &SCHEDULES);
    }
}

/// 65,535 blocks of 256 threads cover 16,776,960 elements; one row more sends the first threads
/// of the capped grid round the grid-stride loop a second time. The loop is the same for every
/// activation and type, so one of each.
#[test]
fn bias_gelu_grid_stride_loop_covers_everything() {
    let emu = Emu::new();
    let cols = 4096;
    let rows = 65_535 * 256 / cols + 1;
    assert!(rows * cols > 65_535 * 256);
    check(&emu, rows, cols, 99, &[Activation::Gelu], &[Half::Bf16], &[Schedule::Ascending]);
}
