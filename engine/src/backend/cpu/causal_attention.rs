//! Causal grouped-query attention for decoders (Gemma2, Mistral, Qwen3) over a packed batch:
//! scaled scores, optional soft-cap, causal mask with an optional sliding window, softmax, times
//! the values. Must match `reference::causal_attention`.
//!
//! One task per (sequence, query head, block of QUERY_BLOCK queries). Blocks are aligned to the
//! sequence start, whatever range of queries the caller asks for, and a block packs exactly the
//! keys its queries can see (from the first key its first query sees to its last query), so
//! memory stays O(block × visible keys) and sliding-window layers cost O(window), not O(len).
//! Both products run on the GEMM microkernel as in attention.rs. Each row's softmax runs over
//! exactly its visible keys, lanes counted from the first of them, and the keys it cannot see
//! get probability 0, which adds nothing to P·V: a row's result depends only on the row, never
//! on its block, the batch or the thread count.
use std::ops::Range;

use super::attention::pack_keys_values;
use super::gemm::{gemm_block, Isa, Panels};
use super::simd::{max, multiversion, F32s};
use super::SendPtr;
use crate::backend::CausalAttention;
use crate::batch::PackedBatch;

const QUERY_BLOCK: usize = 64;

/// s·scale, soft-capped as cap·tanh(s·scale/cap) with tanh(u) = 1 − 2/(e^{2u} + 1).
#[inline(always)]
fn transform<V: F32s>(s: V, scale: f32, softcap: Option<f32>) -> V {
    let s = s.mul(V::splat(scale));
    match softcap {
        None => s,
        Some(cap) => {
            let u = s.mul(V::splat(1.0 / cap));
            let t = V::splat(1.0).sub(V::splat(2.0).div(u.add(u).exp().add(V::splat(1.0))));
            t.mul(V::splat(cap))
        }
    }
}

/// Softmax over `row[visible]` of the transformed scores; every other entry becomes 0.
#[inline(always)]
fn softmax_visible_impl<V: F32s>(row: &mut [f32], visible: Range<usize>, scale: f32, softcap: Option<f32>) {
    row[..visible.start].fill(0.0);
    row[visible.end..].fill(0.0);
    let v = &mut row[visible];
    let len = v.len();
    let full = len / V::LANES * V::LANES;
    // The tail goes through one zero-padded vector: the same arithmetic as the full lanes.
    let mut tail = [0.0f32; 16];
    tail[..len - full].copy_from_slice(&v[full..]);
    for c in (0..full).step_by(V::LANES) {
        unsafe {
            let p = v.as_mut_ptr().add(c);
            transform(V::load(p), scale, softcap).store(p);
        }
    }
    unsafe { transform(V::load(tail.as_ptr()), scale, softcap).store(tail.as_mut_ptr()) };
    v[full..].copy_from_slice(&tail[..len - full]);
    let m = V::splat(max::<V>(v));
    let mut acc = V::zero();
    for c in (0..full).step_by(V::LANES) {
        unsafe {
            let p = v.as_mut_ptr().add(c);
            let e = V::load(p).sub(m).exp();
            e.store(p);
            acc = acc.add(e);
        }
    }
    let mut sum = acc.reduce_add();
    if full < len {
        tail[..len - full].copy_from_slice(&v[full..]);
        unsafe { V::load(tail.as_ptr()).sub(m).exp().store(tail.as_mut_ptr()) };
        v[full..].copy_from_slice(&tail[..len - full]);
        sum = tail[..len - full].iter().fold(sum, |s, x| s + x);
    }
    let inv = V::splat(1.0 / sum);
    for c in (0..full).step_by(V::LANES) {
        unsafe {
            let p = v.as_mut_ptr().add(c);
            V::load(p).mul(inv).store(p);
        }
    }
    let inv = 1.0 / sum;
    v[full..].iter_mut().for_each(|x| *x *= inv);
}

multiversion!(fn softmax_visible(row: &mut [f32], visible: Range<usize>, scale: f32, softcap: Option<f32>) = softmax_visible_impl);

/// Attention for the query tokens in `queries` (each row's result does not depend on which
/// other rows are computed with it).
pub fn causal_attention(isa: Isa, pool: &rayon::ThreadPool, qkv: &[f32], batch: &PackedBatch, a: &CausalAttention, out: &mut [f32], queries: Range<usize>) {
    let (d, width, out_width) = (a.head_dim, a.qkv_width(), a.heads * a.head_dim);
    assert_eq!(qkv.len(), batch.num_tokens() * width);
    assert_eq!(out.len(), batch.num_tokens() * out_width);
    let group = a.heads / a.kv_heads;
    let (_, nr) = isa.tile();
    let dst = SendPtr(out.as_mut_ptr());
    // (sequence, first query of an aligned block) for every block holding some of the queries.
    let mut blocks = Vec::new();
    for s in 0..batch.num_seqs() {
        let r = batch.seq_range(s);
        let (first, last) = (queries.start.max(r.start), queries.end.min(r.end));
        if first < last {
            let b0 = (first - r.start) / QUERY_BLOCK * QUERY_BLOCK;
            blocks.extend((b0..last - r.start).step_by(QUERY_BLOCK).map(|b| (s, b)));
        }
    }
    let task = |t: usize| {
        let ((s, b0), h) = (blocks[t / a.heads], t % a.heads);
        let kv = h / group;
        let range = batch.seq_range(s);
        let base = range.start;
        let b1 = (b0 + QUERY_BLOCK).min(range.len());
        // The queries computed here, relative to the sequence.
        let (q0, q1) = (queries.start.max(base + b0) - base, queries.end.min(base + b1) - base);
        // Keys [k0, b1): what the block's queries see (visible ranges only move forward).
        let k0 = a.visible(b0).start;
        let keys_n = b1 - k0;
        let key_panels = keys_n.div_ceil(nr);
        let value_panels = d.div_ceil(nr);
        let mut keys = vec![0.0f32; key_panels * d * nr];
        let mut values = vec![0.0f32; value_panels * keys_n * nr];
        pack_keys_values(nr, d, keys_n, |j| {
            let row = &qkv[(base + k0 + j) * width..][..width];
            (&row[(a.heads + kv) * d..][..d], &row[(a.heads + a.kv_heads + kv) * d..][..d])
        }, &mut keys, &mut values);
        let zero_bias = vec![0.0f32; key_panels.max(value_panels) * nr];
        let key_view = Panels { isa, n: keys_n, k: d, panels: &keys, bias: &zero_bias };
        let value_view = Panels { isa, n: d, k: keys_n, panels: &values, bias: &zero_bias };
        let rows = q1 - q0;
        let mut scores = vec![0.0f32; rows * keys_n];
        // SAFETY: q rows lie inside qkv (stride `width`); scores has rows × keys_n floats.
        unsafe {
            let q = qkv.as_ptr().add((base + q0) * width + h * d);
            gemm_block(key_view, q, width, 0..rows, 0..key_panels, scores.as_mut_ptr(), keys_n, None);
        }
        for (r, row) in scores.chunks_exact_mut(keys_n).enumerate() {
            let visible = a.visible(q0 + r);
            softmax_visible(isa, row, visible.start - k0..visible.end - k0, a.scale, a.softcap);
        }
        // SAFETY: each (token, head) slice of `out` is written by exactly this task.
        unsafe {
            let o = dst.get().add((base + q0) * out_width + h * d);
            gemm_block(value_view, scores.as_ptr(), keys_n, 0..rows, 0..value_panels, o, out_width, None);
        }
    };
    super::run_tasks(pool, blocks.len() * a.heads, task);
}
