//! cast.cu, and with it bge_common.cuh's f16/bf16 conversions (the PTX cvt and the integer
//! bf16 rounding), against the `half` crate: every 16-bit value widened, and f32 narrowed over
//! every 16-bit value, every midpoint between neighbouring 16-bit values (the ties
//! round-to-nearest-even decides), the edges (zero, subnormals, the largest finite values,
//! overflow, infinities, NaN) and random floats of every magnitude.
mod common;

use bge_engine::backend::cuda::Half;
use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn to_f32(p: Half, bits: u16) -> f32 {
    widen(p, &[bits])[0]
}

#[test]
fn every_16_bit_value_widens_exactly() {
    let emu = Emu::new();
    let all: Vec<u16> = (0..=u16::MAX).collect();
    for p in PRECISIONS {
        let mut out = emu.poisoned_f32(all.len());
        emu.kernels(p).cast_to_f32(&emu.dev.stream, &emu.up(&all), all.len(), &mut out).unwrap();
        for (&bits, got) in all.iter().zip(emu.down(&out)) {
            let want = to_f32(p, bits);
            if want.is_nan() {
                assert!(got.is_nan(), "{p:?} {bits:#06x}: NaN widened to {got}");
            } else {
                assert_eq!(got.to_bits(), want.to_bits(), "{p:?} {bits:#06x}: {got:e} vs {want:e}");
            }
        }
    }
}

#[test]
fn f32_narrows_like_the_half_crate() {
    let emu = Emu::new();
    let mut rng = StdRng::seed_from_u64(1);
    for p in PRECISIONS {
        let mut input: Vec<f32> = Vec::new();
        for bits in 0..=u16::MAX {
            let v = to_f32(p, bits);
            input.push(v);
            // The midpoint to the next value up in magnitude: exactly representable in f32, and
            // a tie that only round-to-nearest-even settles.
            let next = to_f32(p, bits.wrapping_add(1));
            if v.is_finite() && next.is_finite() && (bits & 0x7fff) != 0x7fff {
                input.push(((v as f64 + next as f64) / 2.0) as f32);
            }
        }
        input.extend((0..100_000).map(|_| f32::from_bits(rng.random::<u32>())));
        input.extend((0..100_000).map(|_| rng.random_range(-70_000.0f32..70_000.0)));
        input.extend([0.0, -0.0, 1e-8, -1e-8, 5.96e-8, 2.98e-8, 6.1e-5, 65504.0, 65519.99, 65520.0, -65520.0, 1e30, -1e30]);
        input.extend([f32::MIN_POSITIVE, 1e-40, -1e-45, f32::MAX, f32::MIN, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, -f32::NAN]);
        let n = input.len();
        let mut out = emu.poisoned_16(p, n);
        emu.kernels(p).cast_from_f32(&emu.dev.stream, &emu.up(&input), n, &mut out).unwrap();
        for (&v, got) in input.iter().zip(emu.down(&out)) {
            let want = narrow(p, v);
            if v.is_nan() {
                assert!(to_f32(p, got).is_nan(), "{p:?}: NaN narrowed to {got:#06x}");
            } else {
                assert_eq!(got, want, "{p:?} narrowing {v:e} ({:#010x}): {got:#06x} vs {want:#06x}", v.to_bits());
            }
        }
    }
}
