//! The scalar reference backend: the simplest correct code, f64 accumulation, no threads, no
//! SIMD. It is the oracle the CPU and CUDA kernels are tested against; never optimise it.
use super::Ops;
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

pub fn activate(act: Option<Activation>, x: f32) -> f32 {
    match act {
        None => x,
        Some(Activation::Gelu) => gelu(x),
        Some(Activation::GeluTanh) => gelu_tanh(x),
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
}
