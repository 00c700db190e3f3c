//! Decoder embedders (Gemma2, Mistral, Qwen3) on the GPU: the same network as
//! models/decoder/mod.rs, over device buffers. Per layer, with x the f32 residual stream:
//!   h16  = RMSNorm(x)·g_in                       (rms_norm.cu, 16-bit out)
//!   qkv  = h16 · Wqkvᵀ                            (cuBLAS, f32 out)
//!   qkv  = rope(qk_norm(qkv))                     (rope.cu, in place)
//!   a16  = causal_attention(qkv)                  (causal_attention.cu)
//!   y    = a16 · Woᵀ                              (cuBLAS)
//!   x   += RMSNorm(y)·g_post   | x += y          (rms_norm.cu | residual_add)
//!   h16  = RMSNorm(x)·g_pre_mlp
//!   gu   = h16 · Wgate|upᵀ                        (cuBLAS)
//!   a16  = act(gate)·up                           (activation.cu gated_*)
//!   y    = a16 · Wdownᵀ                           (cuBLAS)
//!   x   += RMSNorm(y)·g_post_mlp | x += y
//! then x = RMSNorm(x)·g_final in place and the last token of each sequence, normalised
//! (pooling.cu). GEMM inputs are f16, as PyTorch's fp16 inference of these models (FlagEmbedding's
//! use_fp16); unlike it, the residual stream, norms, softmax and pooling stay f32, so the
//! embedding scale and the growing residual stream that make Gemma2 overflow in f16 never meet
//! a 16-bit type. (bf16 GEMM inputs, `load_with(.., Bf16)`, measured further from transformers
//! on the tiny test models: cosine 0.9994 against 0.99999 for f16.)
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaSlice, CudaStream};

use crate::backend::cuda::{self, gemm::Blas};
use crate::backend::cuda::kernels::CAUSAL_ATTENTION_MAX_HEAD_DIM;
use crate::backend::cuda::{Device, Half, Kernels};
use crate::backend::{reference, CausalAttention};
use crate::batch::PackedBatch;
use crate::config::{Activation, DecoderSpec, ModelSpec, Pooling};
use crate::error::{Error, Result};
use super::{decoder_spec, layer_attention, read_decoder_layer, read_gain, ANCHOR};
use crate::models::Forward;
use crate::weights::WeightFile;

struct DeviceLinear {
    /// [out, in] in the GEMM precision.
    weight: CudaSlice<u16>,
    out_features: usize,
    in_features: usize,
}

struct DeviceLayer {
    qkv: DeviceLinear,
    o: DeviceLinear,
    gate_up: DeviceLinear,
    down: DeviceLinear,
    input_norm: CudaSlice<f32>,
    post_attention_norm: Option<CudaSlice<f32>>,
    pre_mlp_norm: CudaSlice<f32>,
    post_mlp_norm: Option<CudaSlice<f32>>,
    qk_norm: Option<(CudaSlice<f32>, CudaSlice<f32>)>,
    attention: CausalAttention,
}

/// Per-call buffers, sized for the largest batch seen so far.
struct Workspace {
    tokens: usize,
    seqs: usize,
    ids: CudaSlice<u32>,
    positions: CudaSlice<u32>,
    cu_seqlens: CudaSlice<i32>,
    /// Residual stream [tokens, hidden] f32.
    x32: CudaSlice<f32>,
    /// Every GEMM's f32 output: [tokens, max(qkv width, 2·inter, hidden)].
    gemm32: CudaSlice<f32>,
    /// Normed 16-bit GEMM input [tokens, hidden].
    h16: CudaSlice<u16>,
    /// Attention output or gated activation, 16-bit: [tokens, max(heads·d, inter)].
    act16: CudaSlice<u16>,
    /// Pooled vectors [seqs, hidden].
    pooled: CudaSlice<f32>,
}

pub struct CudaDecoder {
    device: Arc<Device>,
    kernels: Kernels,
    spec: DecoderSpec,
    hidden: usize,
    heads: usize,
    inter: usize,
    eps: f32,
    activation: Activation,
    vocab: usize,
    embed: CudaSlice<f32>,
    inv_freq: CudaSlice<f32>,
    final_norm: CudaSlice<f32>,
    layers: Vec<DeviceLayer>,
    workspace: Mutex<Option<Workspace>>,
}

fn unavailable(reason: impl std::fmt::Display) -> Error {
    Error::DeviceUnavailable(reason.to_string())
}

fn internal(reason: impl std::fmt::Display) -> Error {
    Error::Internal(format!("CUDA: {reason}"))
}

impl CudaDecoder {
    pub fn load(spec: &ModelSpec, weights: &WeightFile) -> Result<CudaDecoder> {
        Self::load_with(spec, weights, cuda::MODEL_HALF)
    }

    /// Err(DeviceUnavailable) when there is no usable GPU or the model needs something the
    /// kernels lack; model-file errors are the same as on the CPU.
    pub fn load_with(spec: &ModelSpec, weights: &WeightFile, precision: Half) -> Result<CudaDecoder> {
        let device = cuda::device()?;
        let d = decoder_spec(spec)?;
        if d.head_dim > CAUSAL_ATTENTION_MAX_HEAD_DIM {
            return Err(unavailable(format!(
                "model \"{}\" has attention head dimension {}; the CUDA kernels support up to {CAUSAL_ATTENTION_MAX_HEAD_DIM}",
                spec.name, d.head_dim
            )));
        }
        match catch_unwind(AssertUnwindSafe(|| Self::upload(device.clone(), spec, weights, precision))) {
            Ok(r) => r,
            Err(panic) => Err(unavailable(format!("loading \"{}\" onto {} failed: {}", spec.name, device.name, cuda::panic_text(&panic)))),
        }
    }

    fn upload(device: Arc<Device>, spec: &ModelSpec, w: &WeightFile, precision: Half) -> Result<CudaDecoder> {
        let kernels = Kernels::load(&device, precision).map_err(unavailable)?;
        let _exec = device.exec();
        let stream = &device.stream;
        let d = decoder_spec(spec)?.clone();
        let (h, i, hd) = (spec.hidden_size, spec.intermediate_size, d.head_dim);
        let (q_out, qkv_out) = (spec.num_heads * hd, (spec.num_heads + 2 * d.num_kv_heads) * hd);
        let gpu = |e: String| unavailable(format!("uploading \"{}\" to {}: {e}", spec.name, device.name));
        let f32_buf = |data: &[f32]| stream.clone_htod(data).map_err(|e| gpu(format!("{e:?}")));
        let linear = |weight: &[f32], out_features: usize, in_features: usize| -> Result<DeviceLinear> {
            let staged = f32_buf(weight)?;
            let mut narrow = stream.alloc_zeros::<u16>(weight.len()).map_err(|e| gpu(format!("{e:?}")))?;
            kernels.cast_from_f32(stream, &staged, weight.len(), &mut narrow).map_err(gpu)?;
            Ok(DeviceLinear { weight: narrow, out_features, in_features })
        };
        let mut layers = Vec::with_capacity(spec.num_layers);
        for l in 0..spec.num_layers {
            let t = read_decoder_layer(w, spec, l)?;
            let optional = |g: &Option<Vec<f32>>| g.as_deref().map(f32_buf).transpose();
            layers.push(DeviceLayer {
                qkv: linear(&t.qkv, qkv_out, h)?,
                o: linear(&t.o, h, q_out)?,
                gate_up: linear(&t.gate_up, 2 * i, h)?,
                down: linear(&t.down, h, i)?,
                input_norm: f32_buf(&t.input_norm)?,
                post_attention_norm: optional(&t.post_attention_norm)?,
                pre_mlp_norm: f32_buf(&t.pre_mlp_norm)?,
                post_mlp_norm: optional(&t.post_mlp_norm)?,
                qk_norm: match (&t.q_norm, &t.k_norm) {
                    (Some(q), Some(k)) => Some((f32_buf(q)?, f32_buf(k)?)),
                    _ => None,
                },
                attention: layer_attention(spec, &d, l),
            });
            // Each layer's staging copies are dropped here; keep the queue from growing.
            stream.synchronize().map_err(|e| gpu(format!("{e:?}")))?;
        }
        // The embedding table stays f32 (gathered, never multiplied): 3.7 GB for
        // bge-multilingual-gemma2's 256,002 × 3,584.
        let embed = f32_buf(&w.f32(ANCHOR, &[spec.vocab_size, h])?)?;
        let inv_freq = f32_buf(&reference::rope_inv_freq(hd, d.rope_theta))?;
        let final_norm = f32_buf(&read_gain(w, "norm", h, &d)?)?;
        stream.synchronize().map_err(|e| gpu(format!("{e:?}")))?;
        drop(_exec);
        Ok(CudaDecoder {
            kernels,
            spec: d,
            hidden: h,
            heads: spec.num_heads,
            inter: i,
            eps: spec.layer_norm_eps,
            activation: spec.activation,
            vocab: spec.vocab_size,
            embed,
            inv_freq,
            final_norm,
            layers,
            workspace: Mutex::new(None),
            device,
        })
    }

    fn qkv_width(&self) -> usize {
        (self.heads + 2 * self.spec.num_kv_heads) * self.spec.head_dim
    }

    /// A workspace for `tokens` tokens in `seqs` sequences (the encoder's reuse rule).
    fn ensure_workspace(&self, slot: &mut Option<Workspace>, stream: &Arc<CudaStream>, tokens: usize, seqs: usize) -> Result<()> {
        if let Some(ws) = slot.as_ref() {
            let fits = ws.tokens >= tokens && ws.seqs >= seqs;
            let oversized = ws.tokens > (4 * tokens).max(4096) || ws.seqs > (4 * seqs).max(256);
            if fits && !oversized {
                return Ok(());
            }
        }
        let (tokens, seqs) = ((tokens + tokens / 2).next_multiple_of(256), (seqs + seqs / 2).next_multiple_of(16));
        *slot = None;
        let h = self.hidden;
        let alloc_err = |e: cudarc::driver::DriverError| internal(format!("cannot allocate buffers for {tokens} tokens on {} ({e:?})", self.device.name));
        *slot = Some(Workspace {
            tokens,
            seqs,
            ids: stream.alloc_zeros(tokens).map_err(alloc_err)?,
            positions: stream.alloc_zeros(tokens).map_err(alloc_err)?,
            cu_seqlens: stream.alloc_zeros(seqs + 1).map_err(alloc_err)?,
            x32: stream.alloc_zeros(tokens * h).map_err(alloc_err)?,
            gemm32: stream.alloc_zeros(tokens * self.qkv_width().max(2 * self.inter).max(h)).map_err(alloc_err)?,
            h16: stream.alloc_zeros(tokens * h).map_err(alloc_err)?,
            act16: stream.alloc_zeros(tokens * (self.heads * self.spec.head_dim).max(self.inter)).map_err(alloc_err)?,
            pooled: stream.alloc_zeros(seqs * h).map_err(alloc_err)?,
        });
        Ok(())
    }

    /// Queues the whole decoder for `batch`; ws.x32 will hold the final-normed hidden states.
    fn enqueue(&self, blas: &mut Blas, ws: &mut Workspace, batch: &PackedBatch, interrupt: &mut dyn FnMut()) -> std::result::Result<(), String> {
        let stream = &self.device.stream;
        let (n, h, seqs, i) = (batch.num_tokens(), self.hidden, batch.num_seqs(), self.inter);
        let cu: Vec<i32> = batch.cu_seqlens.iter().map(|&c| c as i32).collect();
        let copy = |e: cudarc::driver::DriverError| format!("copying the batch to the GPU ({e:?})");
        stream.memcpy_htod(&batch.ids[..], &mut ws.ids).map_err(copy)?;
        stream.memcpy_htod(&batch.positions[..], &mut ws.positions).map_err(copy)?;
        stream.memcpy_htod(&cu[..], &mut ws.cu_seqlens).map_err(copy)?;

        let k = &self.kernels;
        let p = k.precision;
        let (eps, d) = (self.eps, &self.spec);
        k.embed_scaled(stream, n, h, &ws.ids, &self.embed, d.embedding_scale.unwrap_or(1.0), &mut ws.x32)?;
        for layer in &self.layers {
            interrupt();
            let lin = |blas: &mut Blas, x: &CudaSlice<u16>, l: &DeviceLinear, y: &mut CudaSlice<f32>| blas.linear(stream, p, x, n, &l.weight, l.out_features, l.in_features, y);
            k.rms_norm(stream, n, h, Some(&ws.x32), &layer.input_norm, eps, None, Some(&mut ws.h16))?;
            lin(blas, &ws.h16, &layer.qkv, &mut ws.gemm32)?;
            let qk_norm = layer.qk_norm.as_ref().map(|(q, kn)| (q, kn, eps));
            k.rope(stream, n, &mut ws.gemm32, &ws.positions, &self.inv_freq, self.heads, d.num_kv_heads, d.head_dim, qk_norm)?;
            k.causal_attention(stream, &ws.gemm32, &ws.cu_seqlens, seqs, batch.max_len, n, &layer.attention, &mut ws.act16)?;
            lin(blas, &ws.act16, &layer.o, &mut ws.gemm32)?;
            match &layer.post_attention_norm {
                Some(g) => k.rms_norm(stream, n, h, Some(&ws.gemm32), g, eps, Some((&mut ws.x32, true)), None)?,
                None => k.residual_add(stream, n * h, &ws.gemm32, &mut ws.x32)?,
            }
            k.rms_norm(stream, n, h, Some(&ws.x32), &layer.pre_mlp_norm, eps, None, Some(&mut ws.h16))?;
            lin(blas, &ws.h16, &layer.gate_up, &mut ws.gemm32)?;
            k.gated_activation(stream, self.activation, n, i, &ws.gemm32, &mut ws.act16)?;
            lin(blas, &ws.act16, &layer.down, &mut ws.gemm32)?;
            match &layer.post_mlp_norm {
                Some(g) => k.rms_norm(stream, n, h, Some(&ws.gemm32), g, eps, Some((&mut ws.x32, true)), None)?,
                None => k.residual_add(stream, n * h, &ws.gemm32, &mut ws.x32)?,
            }
        }
        k.rms_norm(stream, n, h, None, &self.final_norm, eps, Some((&mut ws.x32, false)), None)
    }

    fn run<T>(&self, batch: &PackedBatch, interrupt: &mut dyn FnMut(), finish: impl FnOnce(&Self, &mut Workspace) -> std::result::Result<T, String>) -> Result<T> {
        if let Some(&id) = batch.ids.iter().find(|&&id| id as usize >= self.vocab) {
            return Err(Error::Internal(format!("token {id} is outside the model's vocabulary of {}", self.vocab)));
        }
        if batch.num_tokens() == 0 {
            return Err(Error::InvalidArgument("a batch of sequences with no tokens".into()));
        }
        let mut blas = self.device.exec();
        let mut slot = self.workspace.lock().unwrap_or_else(|e| e.into_inner());
        self.ensure_workspace(&mut slot, &self.device.stream, batch.num_tokens(), batch.num_seqs())?;
        let ws = slot.as_mut().expect("workspace just ensured");
        self.enqueue(&mut blas, ws, batch, interrupt).map_err(internal)?;
        self.device.wait(interrupt).map_err(internal)?;
        finish(self, ws).map_err(internal)
    }
}

impl Forward for CudaDecoder {
    fn forward(&self, _pool: &rayon::ThreadPool, batch: &PackedBatch, interrupt: &mut dyn FnMut()) -> Result<Vec<f32>> {
        let n = batch.num_tokens() * self.hidden;
        if batch.num_seqs() == 0 {
            return Ok(Vec::new());
        }
        self.run(batch, interrupt, |this, ws| this.device.stream.clone_dtoh(&ws.x32.slice(0..n)).map_err(|e| format!("copying hidden states back ({e:?})")))
    }

    /// Pools on the GPU and copies back only the vectors.
    fn embed(&self, pool: &rayon::ThreadPool, batch: &PackedBatch, hidden: usize, pooling: Pooling, normalize: bool, interrupt: &mut dyn FnMut()) -> Result<Vec<Vec<f32>>> {
        debug_assert_eq!(hidden, self.hidden);
        if pooling != Pooling::LAST_TOKEN {
            // Other poolings of a decoder: on the host, from the hidden states.
            let states = self.forward(pool, batch, interrupt)?;
            return Ok(crate::heads::pooled::pool(&states, hidden, batch, pooling, normalize));
        }
        let (seqs, tokens) = (batch.num_seqs(), batch.num_tokens());
        if seqs == 0 {
            return Ok(Vec::new());
        }
        let flat = self.run(batch, interrupt, |this, ws| {
            let stream = &this.device.stream;
            this.kernels.pool_normalize(stream, &ws.x32, &ws.cu_seqlens, seqs, tokens, this.hidden, pooling, normalize, &mut ws.pooled)?;
            stream.clone_dtoh(&ws.pooled.slice(0..seqs * this.hidden)).map_err(|e| format!("copying embeddings back ({e:?})"))
        })?;
        Ok(flat.chunks_exact(self.hidden).map(<[f32]>::to_vec).collect())
    }
}
