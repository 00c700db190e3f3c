//! The scalar reference backend: the simplest correct code, f64 accumulation, no threads, no
//! SIMD. It is the oracle the CPU and CUDA kernels are tested against; never optimise it.
use super::{Ops, RopeTable};
use crate::batch::PackedBatch;
use crate::config::Activation;

pub struct Reference;

pub struct RefLinear {
    weight: Vec<f32>,
    bias: Vec<f32>,
    out_features: usize,
    in_features: usize,
}

pub fn gelu(x: f32) -> f32 {
    let x = x as f64;
    (0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))) as f32
}

pub fn gelu_tanh(x: f32) -> f32 {
    let x = x as f64;
    let c = (2.0 / std::f64::consts::PI).sqrt();
    (0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())) as f32
}

pub fn silu(x: f32) -> f32 {
    let x = x as f64;
    (x / (1.0 + (-x).exp())) as f32
}

pub fn activate(act: Option<Activation>, x: f32) -> f32 {
    match act {
        None => x,
        Some(Activation::Gelu) => gelu(x),
        Some(Activation::GeluTanh) => gelu_tanh(x),
        Some(Activation::Silu) => silu(x),
    }
}

/// y = act(x · Wᵀ + b)
pub fn linear(x: &[f32], rows: usize, w: &[f32], b: &[f32], out_f: usize, in_f: usize, act: Option<Activation>, y: &mut [f32]) {
    for r in 0..rows {
        for o in 0..out_f {
            let mut acc = b[o] as f64;
            for i in 0..in_f {
                acc += x[r * in_f + i] as f64 * w[o * in_f + i] as f64;
            }
            y[r * out_f + o] = activate(act, acc as f32);
        }
    }
}

/// x = LayerNorm(x + residual) · gamma + beta, row by row.
pub fn add_layer_norm(x: &mut [f32], residual: Option<&[f32]>, gamma: &[f32], beta: &[f32], eps: f32) {
    let h = gamma.len();
    for r in 0..x.len() / h {
        let row = &mut x[r * h..(r + 1) * h];
        if let Some(res) = residual {
            for (v, s) in row.iter_mut().zip(&res[r * h..(r + 1) * h]) {
                *v += *s;
            }
        }
        let mean = row.iter().map(|v| *v as f64).sum::<f64>() / h as f64;
        let var = row.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / h as f64;
        let inv = 1.0 / (var + eps as f64).sqrt();
        for (i, v) in row.iter_mut().enumerate() {
            *v = ((*v as f64 - mean) * inv * gamma[i] as f64 + beta[i] as f64) as f32;
        }
    }
}

/// softmax(q·kᵀ/√d)·v per sequence and head, sequences delimited by cu_seqlens.
/// Attention for the query tokens in `queries` (all: 0..tokens).
pub fn attention(qkv: &[f32], batch: &PackedBatch, heads: usize, d: usize, out: &mut [f32], queries: std::ops::Range<usize>) {
    let hidden = heads * d;
    let scale = 1.0 / (d as f64).sqrt();
    for s in 0..batch.num_seqs() {
        let range = batch.seq_range(s);
        for h in 0..heads {
            for i in range.clone().filter(|i| queries.contains(i)) {
                let q = &qkv[i * 3 * hidden + h * d..][..d];
                let scores: Vec<f64> = range
                    .clone()
                    .map(|j| {
                        let k = &qkv[j * 3 * hidden + hidden + h * d..][..d];
                        q.iter().zip(k).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() * scale
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f64 = exps.iter().sum();
                for c in 0..d {
                    let mut acc = 0.0;
                    for (jj, j) in range.clone().enumerate() {
                        acc += exps[jj] * qkv[j * 3 * hidden + 2 * hidden + h * d + c] as f64;
                    }
                    out[i * hidden + h * d + c] = (acc / sum) as f32;
                }
            }
        }
    }
}

// ---- decoder op families (Gemma2, Mistral, Qwen3) ----------------------------------------

/// RMSNorm of every row of width gain.len(): v = x·(mean(x²) + eps)^-½ · gain, written to `out`
/// (`accumulate`: added to it, the residual add after Gemma2's sandwich norms). `gain` is the
/// effective factor: 1 + w for Gemma, w for Llama-style norms.
pub fn rms_norm(x: &[f32], gain: &[f32], eps: f32, out: &mut [f32], accumulate: bool) {
    let h = gain.len();
    for (row, o) in x.chunks_exact(h).zip(out.chunks_exact_mut(h)) {
        let ms = row.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / h as f64;
        let inv = 1.0 / (ms + eps as f64).sqrt();
        for ((o, v), g) in o.iter_mut().zip(row).zip(gain) {
            let y = *v as f64 * inv * *g as f64;
            *o = if accumulate { (*o as f64 + y) as f32 } else { y as f32 };
        }
    }
}

/// RoPE's inverse frequencies as transformers computes them in f32:
/// 1 / theta^(2i / d) for i < d/2 (the power of f32 operands, rounded to f32).
pub fn rope_inv_freq(head_dim: usize, theta: f64) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|i| {
            let exponent = (2 * i) as f32 / head_dim as f32;
            1.0f32 / ((theta as f32) as f64).powf(exponent as f64) as f32
        })
        .collect()
}

/// The rotation angle of pair i at `position`: an f32 product, as transformers takes it.
pub fn rope_angle(position: u32, inv_freq: f32) -> f32 {
    position as f32 * inv_freq
}

/// The query and key heads of a fused q | k | v row laid out [heads | kv_heads | kv_heads] × d:
/// (offset of the head in the row, is it a key head).
pub fn qk_heads(heads: usize, kv_heads: usize, d: usize) -> impl Iterator<Item = usize> {
    (0..heads + kv_heads).map(move |h| h * d)
}

/// Rotary position embedding, half-split (rotate_half): for i < d/2, with (c, s) the cosine and
/// sine of the token's angle for pair i,
///   out[i] = x[i]·c − x[i + d/2]·s,   out[i + d/2] = x[i + d/2]·c + x[i]·s,
/// applied in place to every query and key head of `qkv` ([tokens, (heads + 2·kv_heads)·d]).
/// With `qk_norm` = (query gain, key gain, eps), each head is RMS-normalised first (Qwen3).
#[allow(clippy::too_many_arguments)]
pub fn rope(qkv: &mut [f32], positions: &[u32], heads: usize, kv_heads: usize, d: usize, theta: f64, qk_norm: Option<(&[f32], &[f32], f32)>) {
    let width = (heads + 2 * kv_heads) * d;
    let inv_freq = rope_inv_freq(d, theta);
    for (t, row) in qkv.chunks_exact_mut(width).enumerate() {
        for off in qk_heads(heads, kv_heads, d) {
            let head = &mut row[off..off + d];
            if let Some((q_gain, k_gain, eps)) = qk_norm {
                let gain = if off < heads * d { q_gain } else { k_gain };
                let copy = head.to_vec();
                rms_norm(&copy, gain, eps, head, false);
            }
            let x: Vec<f64> = head.iter().map(|v| *v as f64).collect();
            for i in 0..d / 2 {
                let angle = rope_angle(positions[t], inv_freq[i]) as f64;
                let (c, s) = ((angle.cos() as f32) as f64, (angle.sin() as f32) as f64);
                head[i] = (x[i] * c - x[i + d / 2] * s) as f32;
                head[i + d / 2] = (x[i + d / 2] * c + x[i] * s) as f32;
            }
        }
    }
}

/// What a decoder's attention layer does beyond plain softmax attention.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CausalAttention {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Factor on q·k.
    pub scale: f32,
    /// Scores become cap·tanh(score/cap) before the mask.
    pub softcap: Option<f32>,
    /// Query i sees key j iff j ≤ i and i − j < window (None: every j ≤ i).
    pub window: Option<usize>,
}

impl CausalAttention {
    /// The keys query `i` of a sequence sees: a contiguous range ending at i.
    pub fn visible(&self, i: usize) -> std::ops::Range<usize> {
        let first = match self.window {
            Some(w) => (i + 1).saturating_sub(w),
            None => 0,
        };
        first..i + 1
    }

    /// Width of a fused q | k | v row.
    pub fn qkv_width(&self) -> usize {
        (self.heads + 2 * self.kv_heads) * self.head_dim
    }
}

/// Causal grouped-query attention per sequence: query head h reads kv head h / (heads /
/// kv_heads); scores q·k·scale, soft-capped, masked to [`CausalAttention::visible`], softmax,
/// times v. `qkv` is [tokens, (heads + 2·kv_heads)·d] laid out q | k | v (RoPE applied), `out`
/// [tokens, heads·d]; only the rows of the tokens in `queries` are computed.
pub fn causal_attention(qkv: &[f32], batch: &PackedBatch, a: &CausalAttention, out: &mut [f32], queries: std::ops::Range<usize>) {
    let (d, width) = (a.head_dim, a.qkv_width());
    let group = a.heads / a.kv_heads;
    for s in 0..batch.num_seqs() {
        let range = batch.seq_range(s);
        for h in 0..a.heads {
            let kv = h / group;
            let (k_off, v_off) = ((a.heads + kv) * d, (a.heads + a.kv_heads + kv) * d);
            for i in range.clone().filter(|i| queries.contains(i)) {
                let q = &qkv[i * width + h * d..][..d];
                let keys: Vec<usize> = a.visible(i - range.start).map(|j| range.start + j).collect();
                let scores: Vec<f64> = keys
                    .iter()
                    .map(|&j| {
                        let k = &qkv[j * width + k_off..][..d];
                        let s = q.iter().zip(k).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() * a.scale as f64;
                        match a.softcap {
                            Some(cap) => cap as f64 * (s / cap as f64).tanh(),
                            None => s,
                        }
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f64 = exps.iter().sum();
                for c in 0..d {
                    let acc: f64 = keys.iter().zip(&exps).map(|(&j, e)| e * qkv[j * width + v_off + c] as f64).sum();
                    out[i * a.heads * d + h * d + c] = (acc / sum) as f32;
                }
            }
        }
    }
}

/// The gated MLP's middle: out[r, c] = act(gate[r, c]) · up[r, c], where each row of `gate_up`
/// is gate | up (2·inter wide).
pub fn gated_activation(gate_up: &[f32], inter: usize, act: Activation, out: &mut [f32]) {
    for (row, o) in gate_up.chunks_exact(2 * inter).zip(out.chunks_exact_mut(inter)) {
        for c in 0..inter {
            o[c] = (activate(Some(act), row[c]) as f64 * row[inter + c] as f64) as f32;
        }
    }
}

impl Ops for Reference {
    type Linear = RefLinear;

    fn prepare_linear(&self, weight: Vec<f32>, bias: Vec<f32>, out_features: usize, in_features: usize) -> RefLinear {
        RefLinear { weight, bias, out_features, in_features }
    }

    fn linear(&self, _pool: &rayon::ThreadPool, x: &[f32], rows: usize, l: &RefLinear, act: Option<Activation>, y: &mut [f32]) {
        linear(x, rows, &l.weight, &l.bias, l.out_features, l.in_features, act, y)
    }

    fn add_layer_norm(&self, _pool: &rayon::ThreadPool, x: &mut [f32], residual: Option<&[f32]>, gamma: &[f32], beta: &[f32], eps: f32) {
        add_layer_norm(x, residual, gamma, beta, eps)
    }

    fn attention(&self, _pool: &rayon::ThreadPool, qkv: &[f32], batch: &PackedBatch, heads: usize, d: usize, out: &mut [f32], queries: std::ops::Range<usize>) {
        attention(qkv, batch, heads, d, out, queries)
    }

    fn rms_norm(&self, _pool: &rayon::ThreadPool, x: &[f32], gain: &[f32], eps: f32, out: &mut [f32], accumulate: bool) {
        rms_norm(x, gain, eps, out, accumulate)
    }

    /// Recomputes the angles from the table's positions and theta (an independent check of it).
    fn rope(&self, _pool: &rayon::ThreadPool, qkv: &mut [f32], table: &RopeTable, heads: usize, kv_heads: usize, qk_norm: Option<(&[f32], &[f32], f32)>) {
        rope(qkv, &table.positions, heads, kv_heads, table.head_dim, table.theta, qk_norm)
    }

    fn causal_attention(&self, _pool: &rayon::ThreadPool, qkv: &[f32], batch: &PackedBatch, a: &CausalAttention, out: &mut [f32], queries: std::ops::Range<usize>) {
        causal_attention(qkv, batch, a, out, queries)
    }

    fn gated_activation(&self, _pool: &rayon::ThreadPool, gate_up: &[f32], inter: usize, act: Activation, out: &mut [f32]) {
        gated_activation(gate_up, inter, act, out)
    }
}
