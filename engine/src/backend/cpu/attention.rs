//! Self-attention over a packed varlen batch: one task per (sequence, head), each sequence
//! attends only to its own tokens, no padding anywhere. Must match `reference::attention`.
//!
//! Per query row: scores against the sequence's keys, a max-subtracted softmax, then the
//! probability-weighted sum of values. Memory is O(seq_len) per task, not O(seq_len²).
use rayon::prelude::*;

use super::simd::{axpy, dot};
use super::SendPtr;
use crate::batch::PackedBatch;

pub fn attention(pool: &rayon::ThreadPool, qkv: &[f32], batch: &PackedBatch, heads: usize, d: usize, out: &mut [f32]) {
    let hidden = heads * d;
    assert_eq!(qkv.len(), batch.num_tokens() * 3 * hidden);
    assert_eq!(out.len(), batch.num_tokens() * hidden);
    let scale = 1.0 / (d as f32).sqrt();
    let dst = SendPtr(out.as_mut_ptr());
    let task = |t: usize| {
        let (s, h) = (t / heads, t % heads);
        let range = batch.seq_range(s);
        let len = range.len();
        // This head's keys and values, contiguous: [len, d] each.
        let mut keys = Vec::with_capacity(len * d);
        let mut values = Vec::with_capacity(len * d);
        for j in range.clone() {
            let row = &qkv[j * 3 * hidden..];
            keys.extend_from_slice(&row[hidden + h * d..hidden + (h + 1) * d]);
            values.extend_from_slice(&row[2 * hidden + h * d..2 * hidden + (h + 1) * d]);
        }
        let mut scores = vec![0.0f32; len];
        let mut acc = vec![0.0f32; d];
        for i in range {
            let q = &qkv[i * 3 * hidden + h * d..][..d];
            let mut max = f32::NEG_INFINITY;
            for (sc, k) in scores.iter_mut().zip(keys.chunks_exact(d)) {
                *sc = dot(q, k) * scale;
                max = max.max(*sc);
            }
            let mut sum = 0.0f32;
            for sc in scores.iter_mut() {
                *sc = (*sc - max).exp();
                sum += *sc;
            }
            acc.fill(0.0);
            for (p, v) in scores.iter().zip(values.chunks_exact(d)) {
                axpy(*p, v, &mut acc);
            }
            let inv = 1.0 / sum;
            // SAFETY: each (token, head) slice of `out` is written by exactly one task.
            let o = unsafe { std::slice::from_raw_parts_mut(dst.get().add(i * hidden + h * d), d) };
            for (o, a) in o.iter_mut().zip(&acc) {
                *o = a * inv;
            }
        }
    };
    let tasks = batch.num_seqs() * heads;
    pool.install(|| (0..tasks).into_par_iter().for_each(task));
}
