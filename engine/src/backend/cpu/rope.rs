//! Rotary position embedding (half-split, rotate_half), in place on the query and key heads of
//! a fused q | k | v buffer; for Qwen3 each head is RMS-normalised first. Must match
//! `reference::rope`.
//!
//! For pair i < d/2 with the token's (cos, sin): lo' = lo·cos − hi·sin, hi' = hi·cos + lo·sin,
//! each product rounded before the sum (no fused multiply-add), as transformers computes
//! q·cos + rotate_half(q)·sin.
use rayon::prelude::*;

use super::rms_norm::{inv_rms, scale_row};
use super::simd::{multiversion, F32s};
use super::Isa;
use crate::backend::RopeTable;

/// Tokens per rayon task.
const TOKENS_PER_TASK: usize = 8;

#[inline(always)]
fn rotate<V: F32s>(head: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = head.len() / 2;
    let (lo, hi) = head.split_at_mut(half);
    let full = half / V::LANES * V::LANES;
    for i in (0..full).step_by(V::LANES) {
        unsafe {
            let (l, h) = (V::load(lo.as_ptr().add(i)), V::load(hi.as_ptr().add(i)));
            let (c, s) = (V::load(cos.as_ptr().add(i)), V::load(sin.as_ptr().add(i)));
            l.mul(c).sub(h.mul(s)).store(lo.as_mut_ptr().add(i));
            h.mul(c).add(l.mul(s)).store(hi.as_mut_ptr().add(i));
        }
    }
    for i in full..half {
        let (l, h) = (lo[i], hi[i]);
        lo[i] = l * cos[i] - h * sin[i];
        hi[i] = h * cos[i] + l * sin[i];
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn rope_rows_impl<V: F32s>(rows: &mut [f32], first_token: usize, table: &RopeTable, heads: usize, kv_heads: usize, qk_norm: Option<(&[f32], &[f32], f32)>) {
    let d = table.head_dim;
    let width = (heads + 2 * kv_heads) * d;
    let mut scratch = vec![0.0f32; if qk_norm.is_some() { d } else { 0 }];
    for (r, row) in rows.chunks_exact_mut(width).enumerate() {
        let t = first_token + r;
        let (cos, sin) = (&table.cos[t * d / 2..(t + 1) * d / 2], &table.sin[t * d / 2..(t + 1) * d / 2]);
        for h in 0..heads + kv_heads {
            let head = &mut row[h * d..(h + 1) * d];
            if let Some((q_gain, k_gain, eps)) = qk_norm {
                scratch.copy_from_slice(head);
                scale_row::<V>(&scratch, inv_rms::<V>(&scratch, eps), if h < heads { q_gain } else { k_gain }, head, false);
            }
            rotate::<V>(head, cos, sin);
        }
    }
}

multiversion!(fn rope_rows(rows: &mut [f32], first_token: usize, table: &RopeTable, heads: usize, kv_heads: usize, qk_norm: Option<(&[f32], &[f32], f32)>) = rope_rows_impl);

pub fn rope(isa: Isa, pool: &rayon::ThreadPool, qkv: &mut [f32], table: &RopeTable, heads: usize, kv_heads: usize, qk_norm: Option<(&[f32], &[f32], f32)>) {
    let width = (heads + 2 * kv_heads) * table.head_dim;
    assert_eq!(qkv.len(), table.positions.len() * width);
    let span = width * TOKENS_PER_TASK;
    let task = |(t, rows): (usize, &mut [f32])| rope_rows(isa, rows, t * TOKENS_PER_TASK, table, heads, kv_heads, qk_norm);
    if qkv.len() <= span || super::inline(pool) {
        qkv.chunks_mut(span).enumerate().for_each(task);
    } else {
        pool.install(|| qkv.par_chunks_mut(span).enumerate().for_each(task));
    }
}
