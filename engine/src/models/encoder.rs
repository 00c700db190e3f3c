//! The BERT encoder (post-LayerNorm transformer), mirroring Hugging Face's BertModel:
//! embeddings (word + position + token type, LayerNorm), then per layer
//! x = LN(x + Wo·attn(Wqkv·x)), x = LN(x + W2·gelu(W1·x)).
//! XLM-RoBERTa (BGE-M3) is the same network; only its position ids differ, and those come with
//! the batch ([`crate::batch::PositionIds`]).
use super::Forward;
use crate::backend::Ops;
use crate::batch::PackedBatch;
use crate::config::{Activation, ModelSpec};
use crate::error::{Error, Result};
use crate::weights::{EmbeddingTable, WeightFile};

struct LayerNorm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
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
        let norm = |name: &str| -> Result<LayerNorm> { Ok(LayerNorm { gamma: w.f32(&format!("{name}.weight"), &[h])?, beta: w.f32(&format!("{name}.bias"), &[h])? }) };
        let linear = |name: &str, out_f: usize, in_f: usize| -> Result<(Vec<f32>, Vec<f32>)> {
            Ok((w.f32(&format!("{name}.weight"), &[out_f, in_f])?, w.f32(&format!("{name}.bias"), &[out_f])?))
        };
        let mut layers = Vec::with_capacity(spec.num_layers);
        for l in 0..spec.num_layers {
            let p = format!("encoder.layer.{l}");
            // Q, K and V become one [3h, h] GEMM.
            let (mut wqkv, mut bqkv) = linear(&format!("{p}.attention.self.query"), h, h)?;
            for part in ["key", "value"] {
                let (wp, bp) = linear(&format!("{p}.attention.self.{part}"), h, h)?;
                wqkv.extend_from_slice(&wp);
                bqkv.extend_from_slice(&bp);
            }
            let (wo, bo) = linear(&format!("{p}.attention.output.dense"), h, h)?;
            let (w1, b1) = linear(&format!("{p}.intermediate.dense"), spec.intermediate_size, h)?;
            let (w2, b2) = linear(&format!("{p}.output.dense"), h, spec.intermediate_size)?;
            layers.push(Layer {
                qkv: ops.prepare_linear(wqkv, bqkv, 3 * h, h),
                attn_out: ops.prepare_linear(wo, bo, h, h),
                attn_norm: norm(&format!("{p}.attention.output.LayerNorm"))?,
                ffn_in: ops.prepare_linear(w1, b1, spec.intermediate_size, h),
                ffn_out: ops.prepare_linear(w2, b2, h, spec.intermediate_size),
                ffn_norm: norm(&format!("{p}.output.LayerNorm"))?,
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
            emb_norm: norm("embeddings.LayerNorm")?,
            layers,
            ops,
        })
    }

    fn embed_tokens(&self, batch: &PackedBatch) -> Result<Vec<f32>> {
        let h = self.hidden;
        let mut x = vec![0.0f32; batch.num_tokens() * h];
        for (t, row) in x.chunks_exact_mut(h).enumerate() {
            let (id, pos, ty) = (batch.ids[t] as usize, batch.positions[t] as usize, batch.type_ids[t] as usize);
            if id >= self.word.rows || pos >= self.max_positions || ty >= self.type_vocab {
                return Err(Error::Internal(format!("token {id} at position {pos} (type {ty}) is outside the model's tables")));
            }
            self.word.row(id, row);
            for ((v, p), tt) in row.iter_mut().zip(&self.position[pos * h..(pos + 1) * h]).zip(&self.token_type[ty * h..(ty + 1) * h]) {
                *v += p + tt;
            }
        }
        Ok(x)
    }
}

impl<O: Ops> Forward for Encoder<O> {
    fn forward(&self, pool: &rayon::ThreadPool, batch: &PackedBatch, interrupt: &mut dyn FnMut()) -> Result<Vec<f32>> {
        let (h, n) = (self.hidden, batch.num_tokens());
        let ops = &self.ops;
        let mut x = self.embed_tokens(batch)?;
        ops.add_layer_norm(pool, &mut x, None, &self.emb_norm.gamma, &self.emb_norm.beta, self.eps);
        let mut qkv = vec![0.0f32; n * 3 * h];
        let mut ctx = vec![0.0f32; n * h];
        let mut y = vec![0.0f32; n * h];
        let mut inter = vec![0.0f32; n * self.intermediate];
        for layer in &self.layers {
            interrupt();
            ops.linear(pool, &x, n, &layer.qkv, None, &mut qkv);
            ops.attention(pool, &qkv, batch, self.heads, h / self.heads, &mut ctx);
            ops.linear(pool, &ctx, n, &layer.attn_out, None, &mut y);
            ops.add_layer_norm(pool, &mut y, Some(&x), &layer.attn_norm.gamma, &layer.attn_norm.beta, self.eps);
            std::mem::swap(&mut x, &mut y);
            ops.linear(pool, &x, n, &layer.ffn_in, Some(self.activation), &mut inter);
            ops.linear(pool, &inter, n, &layer.ffn_out, None, &mut y);
            ops.add_layer_norm(pool, &mut y, Some(&x), &layer.ffn_norm.gamma, &layer.ffn_norm.beta, self.eps);
            std::mem::swap(&mut x, &mut y);
        }
        Ok(x)
    }
}
