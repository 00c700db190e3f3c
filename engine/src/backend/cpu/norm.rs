//! Residual add + LayerNorm in one pass over each row. Must match `reference::add_layer_norm`.
use rayon::prelude::*;
use wide::f32x8;

use super::simd::{load8, sum8};

/// Rows per rayon task: enough work to amortise scheduling.
const ROWS_PER_TASK: usize = 16;

fn norm_row(row: &mut [f32], residual: Option<&[f32]>, gamma: &[f32], beta: &[f32], eps: f32) {
    let h = row.len();
    if let Some(res) = residual {
        row.iter_mut().zip(res).for_each(|(v, r)| *v += *r);
    }
    let mean = sum8(row) / h as f32;
    // Two passes (mean, then centred squares) as the reference does, for accuracy.
    let mut acc = f32x8::ZERO;
    let mut chunks = row.chunks_exact(8);
    let m8 = f32x8::splat(mean);
    for c in &mut chunks {
        let d = load8(c) - m8;
        acc = d.mul_add(d, acc);
    }
    let mut var = acc.reduce_add();
    for v in chunks.remainder() {
        var += (v - mean) * (v - mean);
    }
    let inv = 1.0 / (var / h as f32 + eps).sqrt();
    for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
        *v = (*v - mean) * inv * g + b;
    }
}

pub fn add_layer_norm(pool: &rayon::ThreadPool, x: &mut [f32], residual: Option<&[f32]>, gamma: &[f32], beta: &[f32], eps: f32) {
    let h = gamma.len();
    let task = |(t, rows): (usize, &mut [f32])| {
        for (r, row) in rows.chunks_exact_mut(h).enumerate() {
            let i = t * ROWS_PER_TASK + r;
            norm_row(row, residual.map(|res| &res[i * h..(i + 1) * h]), gamma, beta, eps);
        }
    };
    if x.len() <= h * ROWS_PER_TASK {
        x.chunks_mut(h * ROWS_PER_TASK).enumerate().for_each(task);
    } else {
        pool.install(|| x.par_chunks_mut(h * ROWS_PER_TASK).enumerate().for_each(task));
    }
}
