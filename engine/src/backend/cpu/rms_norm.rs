//! RMSNorm, the decoders' normalisation. Must match `reference::rms_norm`.
//!
//! v = (x · (mean(x²) + eps)^-½) · gain, each product rounded as transformers rounds it (no
//! fused multiply-add), then written or added to the output (the residual add after Gemma2's
//! sandwich norms).
use rayon::prelude::*;

use super::simd::{multiversion, F32s};
use super::Isa;

/// Rows per rayon task: enough work to amortise scheduling.
const ROWS_PER_TASK: usize = 16;

/// 1 / sqrt(mean(row²) + eps), squares summed in lanes then the tail.
#[inline(always)]
pub(crate) fn inv_rms<V: F32s>(row: &[f32], eps: f32) -> f32 {
    let full = row.len() / V::LANES * V::LANES;
    let mut acc = V::zero();
    for c in (0..full).step_by(V::LANES) {
        let v = unsafe { V::load(row.as_ptr().add(c)) };
        acc = v.fma(v, acc);
    }
    let squares = row[full..].iter().fold(acc.reduce_add(), |s, v| s + v * v);
    1.0 / (squares / row.len() as f32 + eps).sqrt()
}

/// out = (or +=) (row · inv) · gain for one row.
#[inline(always)]
pub(crate) fn scale_row<V: F32s>(row: &[f32], inv: f32, gain: &[f32], out: &mut [f32], accumulate: bool) {
    let h = gain.len();
    let full = h / V::LANES * V::LANES;
    let iv = V::splat(inv);
    for c in (0..full).step_by(V::LANES) {
        unsafe {
            let v = V::load(row.as_ptr().add(c)).mul(iv).mul(V::load(gain.as_ptr().add(c)));
            let p = out.as_mut_ptr().add(c);
            if accumulate { V::load(p).add(v) } else { v }.store(p);
        }
    }
    for c in full..h {
        let v = row[c] * inv * gain[c];
        out[c] = if accumulate { out[c] + v } else { v };
    }
}

#[inline(always)]
fn rms_rows_impl<V: F32s>(x: &[f32], gain: &[f32], eps: f32, out: &mut [f32], accumulate: bool) {
    let h = gain.len();
    for (row, o) in x.chunks_exact(h).zip(out.chunks_exact_mut(h)) {
        scale_row::<V>(row, inv_rms::<V>(row, eps), gain, o, accumulate);
    }
}

multiversion!(fn rms_rows(x: &[f32], gain: &[f32], eps: f32, out: &mut [f32], accumulate: bool) = rms_rows_impl);

pub fn rms_norm(isa: Isa, pool: &rayon::ThreadPool, x: &[f32], gain: &[f32], eps: f32, out: &mut [f32], accumulate: bool) {
    assert_eq!(x.len(), out.len());
    let span = gain.len() * ROWS_PER_TASK;
    let task = |(t, o): (usize, &mut [f32])| rms_rows(isa, &x[t * span..t * span + o.len()], gain, eps, o, accumulate);
    if out.len() <= span || super::inline(pool) {
        out.chunks_mut(span).enumerate().for_each(task);
    } else {
        pool.install(|| out.par_chunks_mut(span).enumerate().for_each(task));
    }
}
