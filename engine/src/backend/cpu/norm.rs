//! Residual add + LayerNorm in one pass over each row. Must match `reference::add_layer_norm`.
use rayon::prelude::*;

use super::simd::{multiversion, sum, F32s};
use super::Isa;

/// Rows per rayon task: enough work to amortise scheduling.
const ROWS_PER_TASK: usize = 16;

#[inline(always)]
fn norm_rows_impl<V: F32s>(x: &mut [f32], residual: Option<&[f32]>, gamma: &[f32], beta: &[f32], eps: f32) {
    let h = gamma.len();
    let full = h / V::LANES * V::LANES;
    for (r, row) in x.chunks_exact_mut(h).enumerate() {
        if let Some(res) = residual {
            row.iter_mut().zip(&res[r * h..(r + 1) * h]).for_each(|(v, s)| *v += *s);
        }
        let mean = sum::<V>(row) / h as f32;
        // Two passes (mean, then centred squares), as the reference, for accuracy.
        let m = V::splat(mean);
        let mut acc = V::zero();
        for c in (0..full).step_by(V::LANES) {
            let d = unsafe { V::load(row.as_ptr().add(c)) }.sub(m);
            acc = d.fma(d, acc);
        }
        let var = row[full..].iter().fold(acc.reduce_add(), |s, v| s + (v - mean) * (v - mean)) / h as f32;
        let inv = 1.0 / (var + eps).sqrt();
        let iv = V::splat(inv);
        for c in (0..full).step_by(V::LANES) {
            unsafe {
                let p = row.as_mut_ptr().add(c);
                let g = V::load(gamma.as_ptr().add(c));
                let b = V::load(beta.as_ptr().add(c));
                V::load(p).sub(m).mul(iv).fma(g, b).store(p);
            }
        }
        for c in full..h {
            row[c] = (row[c] - mean) * inv * gamma[c] + beta[c];
        }
    }
}

multiversion!(fn norm_rows(x: &mut [f32], residual: Option<&[f32]>, gamma: &[f32], beta: &[f32], eps: f32) = norm_rows_impl);

pub fn add_layer_norm(isa: Isa, pool: &rayon::ThreadPool, x: &mut [f32], residual: Option<&[f32]>, gamma: &[f32], beta: &[f32], eps: f32) {
    let h = gamma.len();
    let span = h * ROWS_PER_TASK;
    let task = |(t, rows): (usize, &mut [f32])| norm_rows(isa, rows, residual.map(|res| &res[t * span..t * span + rows.len()]), gamma, beta, eps);
    if x.len() <= span {
        task((0, x));
    } else if super::inline(pool) {
        x.chunks_mut(span).enumerate().for_each(task);
    } else {
        super::in_pool(pool, || x.par_chunks_mut(span).enumerate().for_each(task));
    }
}
