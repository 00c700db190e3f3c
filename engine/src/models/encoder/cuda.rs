//! The BERT encoder on the GPU: the same network as models/encoder/mod.rs (post-LayerNorm
//! transformer, Hugging Face's BertModel), over device buffers instead of the [`Ops`] trait,
//! because its activations never leave the GPU between ops.
//!
//! Per layer, with x the f32 residual stream and x16 its 16-bit copy:
//!   qkv  = x16 · Wqkvᵀ            (cuBLAS, f32 out)
//!   ctx  = attention(qkv + bqkv)    (attention.cu, 16-bit out)
//!   y    = ctx · Woᵀ                (cuBLAS)
//!   x    = LN(y + bo + x)           (layer_norm.cu, also writes x16)
//!   h    = gelu(x16 · W1ᵀ + b1)     (cuBLAS, then activation.cu, 16-bit out)
//!   y    = h · W2ᵀ                  (cuBLAS)
//!   x    = LN(y + b2 + x)           (layer_norm.cu)
//! Weights are uploaded once, when the model loads; buffers are kept across calls, grown when
//! a batch needs more and shrunk after a batch far smaller than them.
//!
//! [`Ops`]: crate::backend::Ops
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaSlice, CudaStream};

use crate::backend::cuda::{self, gemm::Blas};
use crate::backend::cuda::{Device, Half, Kernels};
use crate::batch::PackedBatch;
use crate::config::{Activation, ModelSpec, Pooling};
use crate::error::{Error, Result};
use super::{read_layer, read_norm, LayerNorm, LinearTensors};
use crate::models::Forward;
use crate::weights::WeightFile;

struct DeviceLinear {
    /// [out, in] in the model's GEMM precision.
    weight: CudaSlice<u16>,
    /// [out] f32, added by the kernel that reads the GEMM's output.
    bias: CudaSlice<f32>,
    out_features: usize,
    in_features: usize,
}

struct DeviceNorm {
    gamma: CudaSlice<f32>,
    beta: CudaSlice<f32>,
}

struct DeviceLayer {
    qkv: DeviceLinear,
    attn_out: DeviceLinear,
    attn_norm: DeviceNorm,
    ffn_in: DeviceLinear,
    ffn_out: DeviceLinear,
    ffn_norm: DeviceNorm,
}

/// Per-call buffers, sized for the largest batch seen so far.
struct Workspace {
    tokens: usize,
    seqs: usize,
    ids: CudaSlice<u32>,
    positions: CudaSlice<u32>,
    type_ids: CudaSlice<u32>,
    cu_seqlens: CudaSlice<i32>,
    /// Residual stream [tokens, hidden] f32.
    x32: CudaSlice<f32>,
    /// Its 16-bit copy, the next GEMM's input.
    x16: CudaSlice<u16>,
    /// Every GEMM's f32 output: [tokens, max(3·hidden, intermediate)].
    gemm32: CudaSlice<f32>,
    /// Attention output or activated FFN input, 16-bit: [tokens, max(hidden, intermediate)].
    act16: CudaSlice<u16>,
    /// Pooled vectors [seqs, modes·hidden].
    pooled: CudaSlice<f32>,
}

pub struct CudaEncoder {
    device: Arc<Device>,
    kernels: Kernels,
    hidden: usize,
    heads: usize,
    intermediate: usize,
    eps: f32,
    activation: Activation,
    vocab: usize,
    max_positions: usize,
    type_vocab: usize,
    word: CudaSlice<f32>,
    position: CudaSlice<f32>,
    token_type: CudaSlice<f32>,
    emb_norm: DeviceNorm,
    layers: Vec<DeviceLayer>,
    workspace: Mutex<Option<Workspace>>,
}

fn unavailable(reason: impl std::fmt::Display) -> Error {
    Error::DeviceUnavailable(reason.to_string())
}

fn internal(reason: impl std::fmt::Display) -> Error {
    Error::Internal(format!("CUDA: {reason}"))
}

impl CudaEncoder {
    /// Loads the model onto the GPU in f16 (the precision PyTorch's fp16 inference uses).
    pub fn load(spec: &ModelSpec, weights: &WeightFile) -> Result<CudaEncoder> {
        Self::load_with(spec, weights, cuda::MODEL_HALF)
    }

    /// Loads the model onto the GPU with GEMM inputs in `precision`. Err(DeviceUnavailable)
    /// when there is no usable GPU or the model needs something the kernels lack; model-file
    /// errors are the same as on the CPU.
    pub fn load_with(spec: &ModelSpec, weights: &WeightFile, precision: Half) -> Result<CudaEncoder> {
        let device = cuda::device()?;
        let head_dim = spec.head_dim();
        if !Kernels::supports_head_dim(head_dim) {
            return Err(unavailable(format!(
                "model \"{}\" has attention head dimension {head_dim}; the CUDA kernels support {:?}",
                spec.name,
                cuda::kernels::ATTENTION_HEAD_DIMS
            )));
        }
        match catch_unwind(AssertUnwindSafe(|| Self::upload(device.clone(), spec, weights, precision))) {
            Ok(r) => r,
            Err(panic) => Err(unavailable(format!("loading \"{}\" onto {} failed: {}", spec.name, device.name, cuda::panic_text(&panic)))),
        }
    }

    fn upload(device: Arc<Device>, spec: &ModelSpec, w: &WeightFile, precision: Half) -> Result<CudaEncoder> {
        let kernels = Kernels::load(&device, precision).map_err(unavailable)?;
        let _exec = device.exec();
        let stream = &device.stream;
        let h = spec.hidden_size;
        let gpu = |e: String| unavailable(format!("uploading \"{}\" to {}: {e}", spec.name, device.name));
        let f32_buf = |data: &[f32]| stream.clone_htod(data).map_err(|e| gpu(format!("{e:?}")));
        let norm = |t: LayerNorm| -> Result<DeviceNorm> { Ok(DeviceNorm { gamma: f32_buf(&t.gamma)?, beta: f32_buf(&t.beta)? }) };
        let linear = |t: LinearTensors| -> Result<DeviceLinear> {
            let staged = f32_buf(&t.weight)?;
            let mut narrow = stream.alloc_zeros::<u16>(t.weight.len()).map_err(|e| gpu(format!("{e:?}")))?;
            kernels.cast_from_f32(stream, &staged, t.weight.len(), &mut narrow).map_err(gpu)?;
            Ok(DeviceLinear { weight: narrow, bias: f32_buf(&t.bias)?, out_features: t.out_features, in_features: t.in_features })
        };

        let mut layers = Vec::with_capacity(spec.num_layers);
        for l in 0..spec.num_layers {
            let t = read_layer(w, spec, l)?;
            layers.push(DeviceLayer {
                qkv: linear(t.qkv)?,
                attn_out: linear(t.attn_out)?,
                attn_norm: norm(t.attn_norm)?,
                ffn_in: linear(t.ffn_in)?,
                ffn_out: linear(t.ffn_out)?,
                ffn_norm: norm(t.ffn_norm)?,
            });
        }
        // Embedding tables stay f32: they are gathered, not multiplied, and feed a LayerNorm.
        let word = f32_buf(&w.f32("embeddings.word_embeddings.weight", &[spec.vocab_size, h])?)?;
        let position = f32_buf(&w.f32("embeddings.position_embeddings.weight", &[spec.max_position_embeddings, h])?)?;
        let token_type = f32_buf(&w.f32("embeddings.token_type_embeddings.weight", &[spec.type_vocab_size, h])?)?;
        let emb_norm = norm(read_norm(w, "embeddings.LayerNorm", h)?)?;
        stream.synchronize().map_err(|e| gpu(format!("{e:?}")))?;
        drop(_exec);
        Ok(CudaEncoder {
            kernels,
            hidden: h,
            heads: spec.num_heads,
            intermediate: spec.intermediate_size,
            eps: spec.layer_norm_eps,
            activation: spec.activation,
            vocab: spec.vocab_size,
            max_positions: spec.max_position_embeddings,
            type_vocab: spec.type_vocab_size,
            word,
            position,
            token_type,
            emb_norm,
            layers,
            workspace: Mutex::new(None),
            device,
        })
    }

    /// The GPU's name, for display.
    pub fn device_name(&self) -> &str {
        &self.device.name
    }

    fn check_tables(&self, batch: &PackedBatch) -> Result<()> {
        for t in 0..batch.num_tokens() {
            let (id, pos, ty) = (batch.ids[t] as usize, batch.positions[t] as usize, batch.type_ids[t] as usize);
            if id >= self.vocab || pos >= self.max_positions || ty >= self.type_vocab {
                return Err(Error::Internal(format!("token {id} at position {pos} (type {ty}) is outside the model's tables")));
            }
        }
        Ok(())
    }

    /// A workspace able to hold `tokens` tokens in `seqs` sequences, reusing the last one while
    /// it fits and is not more than 4× too large (so one huge batch does not pin GPU memory
    /// for the life of the backend). Batch sizes are bounded upstream (Model::in_batches).
    fn ensure_workspace(&self, slot: &mut Option<Workspace>, stream: &Arc<CudaStream>, tokens: usize, seqs: usize) -> Result<()> {
        if let Some(ws) = slot.as_ref() {
            let fits = ws.tokens >= tokens && ws.seqs >= seqs;
            let oversized = ws.tokens > (4 * tokens).max(4096) || ws.seqs > (4 * seqs).max(256);
            if fits && !oversized {
                return Ok(());
            }
        }
        // Headroom so a run of slightly longer batches does not reallocate each time.
        let (tokens, seqs) = ((tokens + tokens / 2).next_multiple_of(256), (seqs + seqs / 2).next_multiple_of(16));
        *slot = None; // free the old buffers before allocating new ones
        let h = self.hidden;
        let alloc_err = |e: cudarc::driver::DriverError| internal(format!("cannot allocate buffers for {tokens} tokens on {} ({e:?})", self.device.name));
        let ws = Workspace {
            tokens,
            seqs,
            ids: stream.alloc_zeros(tokens).map_err(alloc_err)?,
            positions: stream.alloc_zeros(tokens).map_err(alloc_err)?,
            type_ids: stream.alloc_zeros(tokens).map_err(alloc_err)?,
            cu_seqlens: stream.alloc_zeros(seqs + 1).map_err(alloc_err)?,
            x32: stream.alloc_zeros(tokens * h).map_err(alloc_err)?,
            x16: stream.alloc_zeros(tokens * h).map_err(alloc_err)?,
            gemm32: stream.alloc_zeros(tokens * (3 * h).max(self.intermediate)).map_err(alloc_err)?,
            act16: stream.alloc_zeros(tokens * h.max(self.intermediate)).map_err(alloc_err)?,
            // Room for all four pooling modes, so any model sharing nothing but this size fits.
            pooled: stream.alloc_zeros(seqs * 4 * h).map_err(alloc_err)?,
        };
        *slot = Some(ws);
        Ok(())
    }

    /// Queues the whole encoder for `batch`; on return ws.x32 will hold the last hidden states
    /// once the stream gets there.
    fn enqueue(&self, blas: &mut Blas, ws: &mut Workspace, batch: &PackedBatch, interrupt: &mut dyn FnMut()) -> std::result::Result<(), String> {
        let stream = &self.device.stream;
        let (n, h, seqs) = (batch.num_tokens(), self.hidden, batch.num_seqs());
        let cu: Vec<i32> = batch.cu_seqlens.iter().map(|&c| c as i32).collect();
        let copy = |e: cudarc::driver::DriverError| format!("copying the batch to the GPU ({e:?})");
        stream.memcpy_htod(&batch.ids[..], &mut ws.ids).map_err(copy)?;
        stream.memcpy_htod(&batch.positions[..], &mut ws.positions).map_err(copy)?;
        stream.memcpy_htod(&batch.type_ids[..], &mut ws.type_ids).map_err(copy)?;
        stream.memcpy_htod(&cu[..], &mut ws.cu_seqlens).map_err(copy)?;

        let k = &self.kernels;
        let p = k.precision;
        let e = &self.emb_norm;
        k.embed_layer_norm(stream, n, h, &ws.ids, &ws.positions, &ws.type_ids, &self.word, &self.position, &self.token_type, &e.gamma, &e.beta, self.eps, &mut ws.x32, &mut ws.x16)?;
        for layer in &self.layers {
            interrupt();
            let lin = |blas: &mut Blas, x: &CudaSlice<u16>, l: &DeviceLinear, y: &mut CudaSlice<f32>| blas.linear(stream, p, x, n, &l.weight, l.out_features, l.in_features, y);
            lin(blas, &ws.x16, &layer.qkv, &mut ws.gemm32)?;
            k.attention(stream, &ws.gemm32, &layer.qkv.bias, &ws.cu_seqlens, seqs, batch.max_len, n, self.heads, h / self.heads, &mut ws.act16)?;
            lin(blas, &ws.act16, &layer.attn_out, &mut ws.gemm32)?;
            let an = &layer.attn_norm;
            k.bias_residual_layer_norm(stream, n, h, &ws.gemm32, &layer.attn_out.bias, &an.gamma, &an.beta, self.eps, &mut ws.x32, &mut ws.x16)?;
            lin(blas, &ws.x16, &layer.ffn_in, &mut ws.gemm32)?;
            k.bias_gelu(stream, self.activation, n, self.intermediate, &ws.gemm32, &layer.ffn_in.bias, &mut ws.act16)?;
            lin(blas, &ws.act16, &layer.ffn_out, &mut ws.gemm32)?;
            let fnorm = &layer.ffn_norm;
            k.bias_residual_layer_norm(stream, n, h, &ws.gemm32, &layer.ffn_out.bias, &fnorm.gamma, &fnorm.beta, self.eps, &mut ws.x32, &mut ws.x16)?;
        }
        Ok(())
    }

    /// Runs the encoder, then `finish` (which queues more work and copies results back) with
    /// the device held.
    fn run<T>(
        &self,
        batch: &PackedBatch,
        interrupt: &mut dyn FnMut(),
        finish: impl FnOnce(&Self, &mut Workspace) -> std::result::Result<T, String>,
    ) -> Result<T> {
        self.check_tables(batch)?;
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

impl Forward for CudaEncoder {
    fn forward(&self, _pool: &rayon::ThreadPool, batch: &PackedBatch, interrupt: &mut dyn FnMut()) -> Result<Vec<f32>> {
        let n = batch.num_tokens() * self.hidden;
        if batch.num_seqs() == 0 {
            return Ok(Vec::new());
        }
        self.run(batch, interrupt, |this, ws| {
            this.device.stream.clone_dtoh(&ws.x32.slice(0..n)).map_err(|e| format!("copying hidden states back ({e:?})"))
        })
    }

    /// Pools on the GPU and copies back only the vectors.
    fn embed(&self, _pool: &rayon::ThreadPool, batch: &PackedBatch, hidden: usize, pooling: Pooling, normalize: bool, interrupt: &mut dyn FnMut()) -> Result<Vec<Vec<f32>>> {
        debug_assert_eq!(hidden, self.hidden);
        let width = pooling.modes() * self.hidden;
        let (seqs, tokens) = (batch.num_seqs(), batch.num_tokens());
        if seqs == 0 {
            return Ok(Vec::new());
        }
        let flat = self.run(batch, interrupt, |this, ws| {
            let stream = &this.device.stream;
            this.kernels.pool_normalize(stream, &ws.x32, &ws.cu_seqlens, seqs, tokens, this.hidden, pooling, normalize, &mut ws.pooled)?;
            stream.clone_dtoh(&ws.pooled.slice(0..seqs * width)).map_err(|e| format!("copying embeddings back ({e:?})"))
        })?;
        Ok(flat.chunks_exact(width).map(<[f32]>::to_vec).collect())
    }
}
