//! Self-attention over a packed varlen batch. Must match `reference::attention`.
//!
//! One task per (sequence, head); a sequence attends only to its own tokens, nothing is padded.
//! Inside a task, both products run on the GEMM microkernel: S = Q·Kᵀ with this head's keys
//! packed as the right-hand side, a vectorised softmax per row, then O = P·V with the values
//! packed. Queries go in blocks of QUERY_BLOCK rows, so memory is O(block × seq_len), never
//! O(seq_len²), and long inputs stay cheap to hold.
use std::ops::Range;

use super::gemm::{copy_row, gemm_block, Isa, Panels};
use super::simd::{max, multiversion, F32s};
use super::SendPtr;
use crate::batch::PackedBatch;

const QUERY_BLOCK: usize = 64;

/// Row-wise softmax(scale · s) in place over rows of `len` scores.
#[inline(always)]
fn softmax_rows_impl<V: F32s>(scores: &mut [f32], len: usize, scale: f32) {
    let full = len / V::LANES * V::LANES;
    let sc = V::splat(scale);
    for row in scores.chunks_exact_mut(len) {
        let m = V::splat(max::<V>(row) * scale);
        let mut acc = V::zero();
        for c in (0..full).step_by(V::LANES) {
            unsafe {
                let p = row.as_mut_ptr().add(c);
                let e = V::load(p).fma(sc, V::zero()).sub(m).exp();
                e.store(p);
                acc = acc.add(e);
            }
        }
        // The tail goes through one zero-padded vector: the same exp as the full lanes.
        let mut sum = acc.reduce_add();
        if full < len {
            let mut buf = [0.0f32; 16];
            buf[..len - full].copy_from_slice(&row[full..]);
            let e = unsafe { V::load(buf.as_ptr()) }.fma(sc, V::zero()).sub(m).exp();
            unsafe { e.store(buf.as_mut_ptr()) };
            row[full..].copy_from_slice(&buf[..len - full]);
            sum = buf[..len - full].iter().fold(sum, |s, v| s + v);
        }
        let inv = V::splat(1.0 / sum);
        for c in (0..full).step_by(V::LANES) {
            unsafe {
                let p = row.as_mut_ptr().add(c);
                V::load(p).mul(inv).store(p);
            }
        }
        let inv = 1.0 / sum;
        row[full..].iter_mut().for_each(|v| *v *= inv);
    }
}

multiversion!(fn softmax_rows(scores: &mut [f32], len: usize, scale: f32) = softmax_rows_impl);

pub fn attention(isa: Isa, pool: &rayon::ThreadPool, qkv: &[f32], batch: &PackedBatch, heads: usize, d: usize, out: &mut [f32]) {
    attention_rows(isa, pool, qkv, batch, heads, d, out, 0..batch.num_tokens())
}

/// Attention for the query tokens in `queries` only (each row's result does not depend on
/// which other rows are computed with it).
#[allow(clippy::too_many_arguments)]
pub fn attention_rows(isa: Isa, pool: &rayon::ThreadPool, qkv: &[f32], batch: &PackedBatch, heads: usize, d: usize, out: &mut [f32], queries: Range<usize>) {
    let hidden = heads * d;
    let row = 3 * hidden;
    assert_eq!(qkv.len(), batch.num_tokens() * row);
    assert_eq!(out.len(), batch.num_tokens() * hidden);
    let scale = 1.0 / (d as f32).sqrt();
    let (_, nr) = isa.tile();
    let dst = SendPtr(out.as_mut_ptr());
    // The sequences that hold some of the queries.
    let seqs: Vec<usize> = (0..batch.num_seqs()).filter(|&s| {
        let r = batch.seq_range(s);
        r.start < queries.end && queries.start < r.end
    }).collect();
    let task = |t: usize| ATTENTION_SCRATCH.with(|scratch| {
        let AttentionScratch { keys, values, zero_bias, scores } = &mut *scratch.borrow_mut();
        let (s, h) = (seqs[t / heads], t % heads);
        let range = batch.seq_range(s);
        let (base, len) = (range.start, range.len());
        // This task's queries, relative to the sequence.
        let (first, last) = (queries.start.max(base) - base, queries.end.min(range.end) - base);
        let (key_panels, value_panels) = (len.div_ceil(nr), d.div_ceil(nr));
        let keys = at_least(keys, key_panels * d * nr);
        let values = at_least(values, value_panels * len * nr);
        pack_keys_values(nr, d, len, |j| {
            let token = &qkv[(base + j) * row..][..row];
            (&token[hidden + h * d..][..d], &token[2 * hidden + h * d..][..d])
        }, keys, values);
        let zero_bias = at_least(zero_bias, key_panels.max(value_panels) * nr);
        let key_view = Panels { isa, n: len, k: d, panels: keys, bias: zero_bias };
        let value_view = Panels { isa, n: d, k: len, panels: values, bias: zero_bias };
        let scores = at_least(scores, QUERY_BLOCK.min(last - first) * len);
        for q0 in (first..last).step_by(QUERY_BLOCK) {
            let rows = QUERY_BLOCK.min(last - q0);
            let scores = &mut scores[..rows * len];
            // SAFETY: q rows lie inside qkv (stride 3·hidden); scores has rows × len floats.
            unsafe {
                let q = qkv.as_ptr().add((base + q0) * row + h * d);
                gemm_block(key_view, q, row, 0..rows, 0..key_panels, scores.as_mut_ptr(), len, None);
            }
            softmax_rows(isa, scores, len, scale);
            // SAFETY: each (token, head) slice of `out` is written by exactly this task.
            unsafe {
                let o = dst.get().add((base + q0) * hidden + h * d);
                gemm_block(value_view, scores.as_ptr(), len, 0..rows, 0..value_panels, o, hidden, None);
            }
        }
    });
    super::run_tasks(pool, seqs.len() * heads, task);
}

/// Per-thread buffers of the attention tasks, reused so steady-state calls allocate nothing.
#[derive(Default)]
struct AttentionScratch {
    keys: Vec<f32>,
    values: Vec<f32>,
    zero_bias: Vec<f32>,
    scores: Vec<f32>,
}

thread_local! {
    static ATTENTION_SCRATCH: std::cell::RefCell<AttentionScratch> = std::cell::RefCell::new(AttentionScratch::default());
}

/// The first `len` floats of `v`, grown with zeros when shorter. What earlier calls left there
/// stays: callers overwrite what they read, and stale padding lanes (see [`pack_keys_values`])
/// only reach output columns that are dropped.
fn at_least(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if v.len() < len {
        v.resize(len, 0.0);
    }
    &mut v[..len]
}

/// Packs `len` tokens' keys and values (`kv(j)`: token j's key and value rows of d floats) as
/// GEMM right-hand sides: `keys` for S = Q·Kᵀ (n = len, k = d; panel[c][lane] = K[j][c]) and
/// `values` for O = P·V (n = d, k = len; panel[j][lane] = V[j][c]). The padding lanes of the
/// last panels are not written: they only produce output columns past len or d, never stored.
pub(crate) fn pack_keys_values<'a>(nr: usize, d: usize, len: usize, kv: impl Fn(usize) -> (&'a [f32], &'a [f32]), keys: &mut [f32], values: &mut [f32]) {
    for j in 0..len {
        let (k_row, v_row) = kv(j);
        // Key j is lane j % nr of panel j / nr: a column, every nr floats.
        let key_lane = keys[(j / nr) * d * nr + j % nr..].iter_mut().step_by(nr);
        key_lane.zip(k_row).for_each(|(dst, v)| *dst = *v);
        // Value j is row j of every value panel: runs of nr floats.
        for (panel, run) in v_row.chunks(nr).enumerate() {
            let dst = &mut values[(panel * len + j) * nr..][..run.len()];
            // SAFETY: both slices hold run.len() floats.
            unsafe { copy_row(run.as_ptr(), dst.as_mut_ptr(), run.len()) };
        }
    }
}
