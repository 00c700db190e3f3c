//! Causal decoders used as embedders: Gemma2 (bge-multilingual-gemma2), and Mistral and Qwen3
//! (bge-en-icl, Qwen3-Embedding) as settings of the same network ([`DecoderSpec`]). The
//! reference is transformers' Gemma2Model (and MistralModel, Qwen3Model):
//!   x = embed_tokens[ids] (· sqrt(hidden), Gemma)
//!   per layer:
//!     a = o_proj(attention(rope(q, k), v)) of input_layernorm(x)   (GQA, causal, window, soft-cap)
//!     Gemma2:  x += post_attention_layernorm(a);  x += post_feedforward_layernorm(mlp(pre_feedforward_layernorm(x)))
//!     others:  x += a;                            x += mlp(post_attention_layernorm(x))
//!     mlp(h) = down(act(gate(h)) · up(h))
//!   final norm; the embedding is the last token's row (heads/pooled.rs).
//! Sequences are packed without padding, positions count from 0 in each: what left or right
//! padding with attention masks computes.
/// The same network on the GPU, over device buffers.
pub mod cuda;

use super::encoder::row_chunks;
use super::Forward;
use crate::backend::{CausalAttention, Ops, RopeTable};
use crate::batch::PackedBatch;
use crate::config::{Activation, DecoderSpec, ModelSpec};
use crate::error::{try_zeroed, Error, Result};
use crate::weights::{EmbeddingTable, WeightFile};

/// The tensor every decoder has, by which the file's name prefix ("model." or none) is found.
pub const ANCHOR: &str = "embed_tokens.weight";

/// One layer's tensors as read from the file: q, k, v fused into one [(heads + 2·kv)·d, hidden]
/// matrix laid out q | k | v, gate and up into one [2·inter, hidden] laid out gate | up; norm
/// weights already turned into gains (1 + w for Gemma).
pub struct DecoderLayerTensors {
    pub qkv: Vec<f32>,
    pub o: Vec<f32>,
    pub gate_up: Vec<f32>,
    pub down: Vec<f32>,
    pub input_norm: Vec<f32>,
    /// Gemma2's norm of the attention output (its post_attention_layernorm).
    pub post_attention_norm: Option<Vec<f32>>,
    /// The norm before the MLP: Gemma2's pre_feedforward_layernorm, the others'
    /// post_attention_layernorm.
    pub pre_mlp_norm: Vec<f32>,
    /// Gemma2's post_feedforward_layernorm.
    pub post_mlp_norm: Option<Vec<f32>>,
    /// Qwen3's per-head query and key norms.
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
}

/// The decoder settings of `spec` (which must be a decoder).
pub fn decoder_spec(spec: &ModelSpec) -> Result<&DecoderSpec> {
    spec.decoder.as_ref().ok_or_else(|| Error::Internal(format!("model \"{}\" is not a decoder", spec.name)))
}

/// A norm's gain: the weight, plus one for Gemma's (1 + w) convention (computed in f32, as
/// transformers does before the multiply).
pub fn read_gain(w: &WeightFile, name: &str, width: usize, d: &DecoderSpec) -> Result<Vec<f32>> {
    let mut g = w.f32(&format!("{name}.weight"), &[width])?;
    if d.norm_adds_one {
        g.iter_mut().for_each(|v| *v += 1.0);
    }
    Ok(g)
}

/// Layer `l`'s tensors, shapes checked against `spec`.
pub fn read_decoder_layer(w: &WeightFile, spec: &ModelSpec, l: usize) -> Result<DecoderLayerTensors> {
    let d = decoder_spec(spec)?;
    let (h, i, hd) = (spec.hidden_size, spec.intermediate_size, d.head_dim);
    let (q_out, kv_out) = (spec.num_heads * hd, d.num_kv_heads * hd);
    let p = format!("layers.{l}");
    let mut qkv = w.f32(&format!("{p}.self_attn.q_proj.weight"), &[q_out, h])?;
    qkv.extend_from_slice(&w.f32(&format!("{p}.self_attn.k_proj.weight"), &[kv_out, h])?);
    qkv.extend_from_slice(&w.f32(&format!("{p}.self_attn.v_proj.weight"), &[kv_out, h])?);
    let mut gate_up = w.f32(&format!("{p}.mlp.gate_proj.weight"), &[i, h])?;
    gate_up.extend_from_slice(&w.f32(&format!("{p}.mlp.up_proj.weight"), &[i, h])?);
    let gain = |name: &str, width: usize| read_gain(w, &format!("{p}.{name}"), width, d);
    let (post_attention_norm, pre_mlp_norm, post_mlp_norm) = if d.sandwich_norms {
        (Some(gain("post_attention_layernorm", h)?), gain("pre_feedforward_layernorm", h)?, Some(gain("post_feedforward_layernorm", h)?))
    } else {
        (None, gain("post_attention_layernorm", h)?, None)
    };
    let (q_norm, k_norm) = if d.qk_norm { (Some(gain("self_attn.q_norm", hd)?), Some(gain("self_attn.k_norm", hd)?)) } else { (None, None) };
    Ok(DecoderLayerTensors {
        qkv,
        o: w.f32(&format!("{p}.self_attn.o_proj.weight"), &[h, q_out])?,
        gate_up,
        down: w.f32(&format!("{p}.mlp.down_proj.weight"), &[h, i])?,
        input_norm: gain("input_layernorm", h)?,
        post_attention_norm,
        pre_mlp_norm,
        post_mlp_norm,
        q_norm,
        k_norm,
    })
}

/// The attention settings of layer `l`.
pub fn layer_attention(spec: &ModelSpec, d: &DecoderSpec, l: usize) -> CausalAttention {
    CausalAttention {
        heads: spec.num_heads,
        kv_heads: d.num_kv_heads,
        head_dim: d.head_dim,
        scale: d.attention_scale,
        softcap: d.attention_softcap,
        window: d.layer_windows[l],
    }
}

struct Layer<L> {
    qkv: L,
    o: L,
    gate_up: L,
    down: L,
    attention: CausalAttention,
    t: DecoderLayerTensors,
}

pub struct Decoder<O: Ops> {
    ops: O,
    spec: DecoderSpec,
    hidden: usize,
    inter: usize,
    eps: f32,
    activation: Activation,
    embed: EmbeddingTable,
    final_norm: Vec<f32>,
    layers: Vec<Layer<O::Linear>>,
}

impl<O: Ops> Decoder<O> {
    pub fn load(ops: O, spec: &ModelSpec, w: &WeightFile) -> Result<Decoder<O>> {
        let d = decoder_spec(spec)?.clone();
        let (h, i) = (spec.hidden_size, spec.intermediate_size);
        let (q_out, qkv_out) = (spec.num_heads * d.head_dim, (spec.num_heads + 2 * d.num_kv_heads) * d.head_dim);
        let mut layers = Vec::with_capacity(spec.num_layers);
        for l in 0..spec.num_layers {
            let mut t = read_decoder_layer(w, spec, l)?;
            // No biases: the linears get zeros (the GEMM adds them exactly).
            let prepare = |weight: &mut Vec<f32>, out: usize, inp: usize| ops.prepare_linear(std::mem::take(weight), vec![0.0; out], out, inp);
            layers.push(Layer {
                qkv: prepare(&mut t.qkv, qkv_out, h),
                o: prepare(&mut t.o, h, q_out),
                gate_up: prepare(&mut t.gate_up, 2 * i, h),
                down: prepare(&mut t.down, h, i),
                attention: layer_attention(spec, &d, l),
                t,
            });
        }
        Ok(Decoder {
            hidden: h,
            inter: i,
            eps: spec.layer_norm_eps,
            activation: spec.activation,
            embed: w.table(ANCHOR, spec.vocab_size, h)?,
            final_norm: read_gain(w, "norm", h, &d)?,
            layers,
            spec: d,
            ops,
        })
    }

    /// Token embeddings, times the embedding scale where the model has one.
    fn embed_tokens(&self, batch: &PackedBatch) -> Result<Vec<f32>> {
        let h = self.hidden;
        let mut x = try_zeroed(batch.num_tokens() * h)?;
        self.embed.check()?;
        for (t, row) in x.chunks_exact_mut(h).enumerate() {
            let id = batch.ids[t] as usize;
            if id >= self.embed.rows {
                return Err(Error::Internal(format!("token {id} is outside the model's vocabulary of {}", self.embed.rows)));
            }
            self.embed.row(id, row)?;
            if let Some(scale) = self.spec.embedding_scale {
                row.iter_mut().for_each(|v| *v *= scale);
            }
        }
        Ok(x)
    }

    /// y = x·Wᵀ in row chunks with `interrupt` between them (see encoder.rs).
    #[allow(clippy::too_many_arguments)]
    fn linear(&self, pool: &rayon::ThreadPool, x: &[f32], n: usize, (k, m): (usize, usize), lin: &O::Linear, y: &mut [f32], interrupt: &mut dyn FnMut()) {
        for rows in row_chunks(n, 2 * k * m) {
            self.ops.linear(pool, &x[rows.start * k..rows.end * k], rows.len(), lin, None, &mut y[rows.start * m..rows.end * m]);
            interrupt();
        }
    }
}

impl<O: Ops> Forward for Decoder<O> {
    fn forward(&self, pool: &rayon::ThreadPool, batch: &PackedBatch, interrupt: &mut dyn FnMut()) -> Result<Vec<f32>> {
        let (h, n, i, eps) = (self.hidden, batch.num_tokens(), self.inter, self.eps);
        let ops = &self.ops;
        let (heads, kv_heads, hd) = (self.layers.first().map_or(0, |l| l.attention.heads), self.spec.num_kv_heads, self.spec.head_dim);
        let (q_out, qkv_out) = (heads * hd, (heads + 2 * kv_heads) * hd);
        let table = RopeTable::new(&batch.positions, hd, self.spec.rope_theta);
        let mut x = self.embed_tokens(batch)?;
        let mut normed = try_zeroed(n * h)?;
        let mut qkv = try_zeroed(n * qkv_out)?;
        let mut ctx = try_zeroed(n * q_out)?;
        let mut y = try_zeroed(n * h)?;
        let mut gate_up = try_zeroed(n * 2 * i)?;
        let mut act = try_zeroed(n * i)?;
        for layer in &self.layers {
            interrupt();
            let t = &layer.t;
            ops.rms_norm(pool, &x, &t.input_norm, eps, &mut normed, false);
            self.linear(pool, &normed, n, (h, qkv_out), &layer.qkv, &mut qkv, interrupt);
            let qk_norm = t.q_norm.as_deref().zip(t.k_norm.as_deref()).map(|(q, k)| (q, k, eps));
            ops.rope(pool, &mut qkv, &table, heads, kv_heads, qk_norm);
            let visible = layer.attention.window.unwrap_or(batch.max_len).min(batch.max_len);
            for queries in row_chunks(n, 4 * visible * q_out) {
                ops.causal_attention(pool, &qkv, batch, &layer.attention, &mut ctx, queries);
                interrupt();
            }
            self.linear(pool, &ctx, n, (q_out, h), &layer.o, &mut y, interrupt);
            match &t.post_attention_norm {
                Some(g) => ops.rms_norm(pool, &y, g, eps, &mut x, true),
                None => x.iter_mut().zip(&y).for_each(|(a, b)| *a += b),
            }
            ops.rms_norm(pool, &x, &t.pre_mlp_norm, eps, &mut normed, false);
            self.linear(pool, &normed, n, (h, 2 * i), &layer.gate_up, &mut gate_up, interrupt);
            ops.gated_activation(pool, &gate_up, i, self.activation, &mut act);
            self.linear(pool, &act, n, (i, h), &layer.down, &mut y, interrupt);
            match &t.post_mlp_norm {
                Some(g) => ops.rms_norm(pool, &y, g, eps, &mut x, true),
                None => x.iter_mut().zip(&y).for_each(|(a, b)| *a += b),
            }
        }
        ops.rms_norm(pool, &x, &self.final_norm, eps, &mut normed, false);
        Ok(normed)
    }
}
