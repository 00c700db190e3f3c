//! The BERT encoder (post-LayerNorm transformer), mirroring Hugging Face's BertModel:
//! embeddings (word + position + token type, LayerNorm), then per layer
//! x = LN(x + Wo·attn(Wqkv·x)), x = LN(x + W2·gelu(W1·x)).
//! XLM-RoBERTa (BGE-M3) is the same network; only its position ids differ, and those come with
//! the batch ([`crate::config::PositionIds`]).
/// The same network on the GPU, over device buffers.
pub mod cuda;

use super::Forward;
use crate::backend::Ops;
use crate::batch::PackedBatch;
use crate::config::{Activation, ModelSpec};
use std::ops::Range;

use crate::error::{try_zeroed, Error, Result};
use crate::weights::{EmbeddingTable, WeightFile};

/// A LayerNorm's tensors.
pub struct LayerNorm {
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
}

/// A linear layer's tensors as the file holds them: weight [out, in], bias [out].
pub struct LinearTensors {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub out_features: usize,
    pub in_features: usize,
}

/// One encoder layer's tensors, read once for every backend; Q, K and V are fused into one
/// [3h, h] linear laid out q | k | v (as the attention kernels expect).
pub struct LayerTensors {
    pub qkv: LinearTensors,
    pub attn_out: LinearTensors,
    pub attn_norm: LayerNorm,
    pub ffn_in: LinearTensors,
    pub ffn_out: LinearTensors,
    pub ffn_norm: LayerNorm,
}

/// The LayerNorm `name` (without ".weight"/".bias") of width `h`.
pub fn read_norm(w: &WeightFile, name: &str, h: usize) -> Result<LayerNorm> {
    Ok(LayerNorm { gamma: w.f32(&format!("{name}.weight"), &[h])?, beta: w.f32(&format!("{name}.bias"), &[h])? })
}

fn read_linear(w: &WeightFile, name: &str, out_features: usize, in_features: usize) -> Result<LinearTensors> {
    Ok(LinearTensors {
        weight: w.f32(&format!("{name}.weight"), &[out_features, in_features])?,
        bias: w.f32(&format!("{name}.bias"), &[out_features])?,
        out_features,
        in_features,
    })
}

/// Layer `l`'s tensors, shapes checked against `spec`.
pub fn read_layer(w: &WeightFile, spec: &ModelSpec, l: usize) -> Result<LayerTensors> {
    let (h, i) = (spec.hidden_size, spec.intermediate_size);
    let p = format!("encoder.layer.{l}");
    let mut qkv = read_linear(w, &format!("{p}.attention.self.query"), h, h)?;
    for part in ["key", "value"] {
        let t = read_linear(w, &format!("{p}.attention.self.{part}"), h, h)?;
        qkv.weight.extend_from_slice(&t.weight);
        qkv.bias.extend_from_slice(&t.bias);
    }
    qkv.out_features = 3 * h;
    Ok(LayerTensors {
        qkv,
        attn_out: read_linear(w, &format!("{p}.attention.output.dense"), h, h)?,
        attn_norm: read_norm(w, &format!("{p}.attention.output.LayerNorm"), h)?,
        ffn_in: read_linear(w, &format!("{p}.intermediate.dense"), i, h)?,
        ffn_out: read_linear(w, &format!("{p}.output.dense"), h, i)?,
        ffn_norm: read_norm(w, &format!("{p}.output.LayerNorm"), h)?,
    })
}

struct Layer<L> {
    qkv: L,
    attn_out: L,
    attn_norm: LayerNorm,
    ffn_in: L,
    ffn_out: L,
    ffn_norm: LayerNorm,
}

pub struct Encoder<O: Ops> {
    ops: O,
    hidden: usize,
    heads: usize,
    intermediate: usize,
    eps: f32,
    activation: Activation,
    word: EmbeddingTable,
    position: Vec<f32>,
    token_type: Vec<f32>,
    max_positions: usize,
    type_vocab: usize,
    emb_norm: LayerNorm,
    layers: Vec<Layer<O::Linear>>,
}

impl<O: Ops> Encoder<O> {
    pub fn load(ops: O, spec: &ModelSpec, w: &WeightFile) -> Result<Encoder<O>> {
        let h = spec.hidden_size;
        let prepare = |t: LinearTensors| ops.prepare_linear(t.weight, t.bias, t.out_features, t.in_features);
        let mut layers = Vec::with_capacity(spec.num_layers);
        for l in 0..spec.num_layers {
            let t = read_layer(w, spec, l)?;
            layers.push(Layer {
                qkv: prepare(t.qkv),
                attn_out: prepare(t.attn_out),
                attn_norm: t.attn_norm,
                ffn_in: prepare(t.ffn_in),
                ffn_out: prepare(t.ffn_out),
                ffn_norm: t.ffn_norm,
            });
        }
        Ok(Encoder {
            hidden: h,
            heads: spec.num_heads,
            intermediate: spec.intermediate_size,
            eps: spec.layer_norm_eps,
            activation: spec.activation,
            word: w.table("embeddings.word_embeddings.weight", spec.vocab_size, h)?,
            position: w.f32("embeddings.position_embeddings.weight", &[spec.max_position_embeddings, h])?,
            token_type: w.f32("embeddings.token_type_embeddings.weight", &[spec.type_vocab_size, h])?,
            max_positions: spec.max_position_embeddings,
            type_vocab: spec.type_vocab_size,
            emb_norm: read_norm(w, "embeddings.LayerNorm", h)?,
            layers,
            ops,
        })
    }

    fn embed_tokens(&self, batch: &PackedBatch) -> Result<Vec<f32>> {
        let h = self.hidden;
        let mut x = try_zeroed(batch.num_tokens() * h)?;
        self.word.check()?;
        for (t, row) in x.chunks_exact_mut(h).enumerate() {
            let (id, pos, ty) = (batch.ids[t] as usize, batch.positions[t] as usize, batch.type_ids[t] as usize);
            if id >= self.word.rows || pos >= self.max_positions || ty >= self.type_vocab {
                return Err(Error::Internal(format!("token {id} at position {pos} (type {ty}) is outside the model's tables")));
            }
            self.word.row(id, row)?;
            for ((v, p), tt) in row.iter_mut().zip(&self.position[pos * h..(pos + 1) * h]).zip(&self.token_type[ty * h..(ty + 1) * h]) {
                *v += p + tt;
            }
        }
        Ok(x)
    }

    /// y = act(x·Wᵀ + b) for `n` rows of width `k` into rows of width `m`, in row chunks of
    /// about [`CHUNK_FLOPS`] with `interrupt` between them (a row's result does not depend on
    /// its chunk).
    #[allow(clippy::too_many_arguments)]
    fn linear(&self, pool: &rayon::ThreadPool, x: &[f32], n: usize, (k, m): (usize, usize), lin: &O::Linear, act: Option<Activation>, y: &mut [f32], interrupt: &mut dyn FnMut()) {
        for rows in row_chunks(n, 2 * k * m) {
            self.ops.linear(pool, &x[rows.start * k..rows.end * k], rows.len(), lin, act, &mut y[rows.start * m..rows.end * m]);
            interrupt();
        }
    }
}

/// Work between two interrupt checks: about 10 ms on two cores, so cancel and
/// statement_timeout act within a fraction of a second whatever the batch.
pub(crate) const CHUNK_FLOPS: usize = 2_000_000_000;

/// 0..n in chunks of whole 288-row blocks (a multiple of every GEMM row block) costing about
/// CHUNK_FLOPS at `flops_per_row`.
pub(crate) fn row_chunks(n: usize, flops_per_row: usize) -> impl Iterator<Item = Range<usize>> {
    let rows = (CHUNK_FLOPS / flops_per_row.max(1) / 288).max(1) * 288;
    (0..n).step_by(rows).map(move |start| start..(start + rows).min(n))
}

impl<O: Ops> Encoder<O> {
    /// Matmul and attention FLOPs of a forward pass over `batch`: 2 per weight of the linear
    /// layers per token, plus 4·max_len·hidden per token for attention.
    fn forward_flops(&self, batch: &PackedBatch) -> usize {
        let (h, i) = (self.hidden, self.intermediate);
        let per_token = 2 * (4 * h * h + 2 * h * i) + 4 * batch.max_len * h;
        self.layers.len() * batch.num_tokens() * per_token
    }

    /// The layers over `x`, with `interrupt` between them.
    fn layers(&self, pool: &rayon::ThreadPool, batch: &PackedBatch, mut hidden: Vec<f32>, interrupt: &mut dyn FnMut()) -> Result<Vec<f32>> {
        let (h, n, i) = (self.hidden, batch.num_tokens(), self.intermediate);
        let ops = &self.ops;
        let mut buffers = LayerBuffers::take();
        let [qkv, ctx, y, inter] = &mut buffers.0;
        let (qkv, ctx, inter) = (at_least(qkv, n * 3 * h)?, at_least(ctx, n * h)?, at_least(inter, n * i)?);
        // x and y trade places twice per layer, so x ends each layer as `hidden` again.
        let (mut x, mut y) = (&mut hidden[..], at_least(y, n * h)?);
        for layer in &self.layers {
            interrupt();
            self.linear(pool, x, n, (h, 3 * h), &layer.qkv, None, qkv, interrupt);
            for queries in row_chunks(n, 4 * batch.max_len * h) {
                ops.attention(pool, qkv, batch, self.heads, h / self.heads, ctx, queries);
                interrupt();
            }
            self.linear(pool, ctx, n, (h, h), &layer.attn_out, None, y, interrupt);
            ops.add_layer_norm(pool, y, Some(x), &layer.attn_norm.gamma, &layer.attn_norm.beta, self.eps);
            std::mem::swap(&mut x, &mut y);
            self.linear(pool, x, n, (h, i), &layer.ffn_in, Some(self.activation), inter, interrupt);
            self.linear(pool, inter, n, (i, h), &layer.ffn_out, None, y, interrupt);
            ops.add_layer_norm(pool, y, Some(x), &layer.ffn_norm.gamma, &layer.ffn_norm.beta, self.eps);
            std::mem::swap(&mut x, &mut y);
        }
        buffers.give_back();
        Ok(hidden)
    }
}

/// The layers' activation buffers (qkv, context, the second hidden state, the FFN's
/// intermediate), kept per thread and reused: a fresh zeroed allocation per pass cost about 5%
/// of a batched int8 run in memset and page faults. Every element a pass reads it has written
/// first, so what earlier passes left there never matters.
#[derive(Default)]
struct LayerBuffers([Vec<f32>; 4]);

thread_local! {
    static LAYER_BUFFERS: std::cell::RefCell<LayerBuffers> = std::cell::RefCell::new(LayerBuffers::default());
}

impl LayerBuffers {
    /// Bytes a thread keeps between passes; a larger batch's buffers are freed after it, so a
    /// backend does not hold a bulk load's memory while it idles.
    const KEEP_BYTES: usize = 64 << 20;

    /// This thread's buffers, taken out (a pass that runs inside another finds none and allocates).
    fn take() -> LayerBuffers {
        LAYER_BUFFERS.with(|b| std::mem::take(&mut *b.borrow_mut()))
    }

    fn give_back(self) {
        let bytes: usize = self.0.iter().map(|v| v.capacity() * std::mem::size_of::<f32>()).sum();
        if bytes <= Self::KEEP_BYTES {
            LAYER_BUFFERS.with(|b| *b.borrow_mut() = self);
        }
    }
}

/// The first `len` floats of `v`, which is reallocated (zeroed) only when too short.
fn at_least(v: &mut Vec<f32>, len: usize) -> Result<&mut [f32]> {
    if v.len() < len {
        // Freed first, so the old and the new buffer are never both held.
        *v = Vec::new();
        *v = try_zeroed(len)?;
    }
    Ok(&mut v[..len])
}

impl<O: Ops> Forward for Encoder<O> {
    fn preferred_pass_tokens(&self) -> Option<usize> {
        // The widest layer output is the FFN intermediate (or qkv, for a narrow FFN).
        let widest = self.intermediate.max(3 * self.hidden);
        self.ops.pass_output_bytes().map(|bytes| (bytes / (4 * widest)).max(1))
    }

    fn forward(&self, pool: &rayon::ThreadPool, batch: &PackedBatch, interrupt: &mut dyn FnMut()) -> Result<Vec<f32>> {
        let mut x = self.embed_tokens(batch)?;
        if self.forward_flops(batch) <= CHUNK_FLOPS {
            // A short pass (a query, a few sentences) makes one trip into the pool for all its
            // ops instead of one per op: at batch 1 the trips cost as much as the arithmetic.
            // `interrupt` may call into PostgreSQL, so it runs here on the calling thread,
            // before and after; the pass takes about as long as one chunk between checks.
            interrupt();
            let x = crate::threads::in_pool(pool, || {
                self.ops.add_layer_norm(pool, &mut x, None, &self.emb_norm.gamma, &self.emb_norm.beta, self.eps);
                self.layers(pool, batch, x, &mut || {})
            })?;
            interrupt();
            return Ok(x);
        }
        self.ops.add_layer_norm(pool, &mut x, None, &self.emb_norm.gamma, &self.emb_norm.beta, self.eps);
        self.layers(pool, batch, x, interrupt)
    }
}
