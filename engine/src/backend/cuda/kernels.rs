//! Typed launchers for kernels/*.cu, one per op family. Each checks buffer sizes (an error, not
//! undefined behaviour, when a caller gets them wrong) and picks the launch shape the kernel
//! file's header comment documents.
use std::collections::HashMap;

use cudarc::driver::{CudaFunction, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg};

use super::nvrtc::{self, KernelFile};
use super::{Device, Half};
use crate::backend::CausalAttention;
use crate::config::{Activation, Pooling};

/// Head dimensions attention.cu is instantiated for.
pub const ATTENTION_HEAD_DIMS: [usize; 4] = [32, 64, 96, 128];
/// Queries per attention block (Q_ROWS in attention.cu) and its threads (ATTENTION_THREADS).
const ATTENTION_QUERY_TILE: usize = 128;
const ATTENTION_THREADS: u32 = 256;
/// Grid cap for the grid-stride elementwise kernels.
const MAX_ELEMENTWISE_BLOCKS: usize = 65_535;
/// The largest gridDim.y / gridDim.z any GPU accepts.
const MAX_GRID_Z: usize = 65_535;

/// The kernels of one precision, resolved once.
pub struct Kernels {
    pub precision: Half,
    embed_layer_norm: CudaFunction,
    bias_residual_layer_norm: CudaFunction,
    bias_gelu_erf: CudaFunction,
    bias_gelu_tanh: CudaFunction,
    attention: HashMap<usize, CudaFunction>,
    pool: CudaFunction,
    l2_normalize_rows: CudaFunction,
    cast_from_f32: CudaFunction,
    cast_to_f32: CudaFunction,
    decoder: DecoderKernels,
}

/// The decoders' kernels (rms_norm.cu, rope.cu, causal_attention.cu, the gated activations,
/// the scaled embedding gather).
struct DecoderKernels {
    embed_scaled: CudaFunction,
    rms_norm: CudaFunction,
    residual_add: CudaFunction,
    rope_qk: CudaFunction,
    causal_attention: CudaFunction,
    gated_gelu_tanh: CudaFunction,
    gated_silu: CudaFunction,
}

/// Largest head dimension causal_attention.cu holds (32 lanes × MAX_CHUNKS).
pub const CAUSAL_ATTENTION_MAX_HEAD_DIM: usize = 256;
/// Query rows per causal attention block (ROWS_PER_BLOCK in causal_attention.cu).
const CAUSAL_ATTENTION_ROWS: usize = 4;

type Launch = std::result::Result<(), String>;

fn ptr<T>(buf: &CudaSlice<T>, stream: &CudaStream) -> u64 {
    buf.device_ptr(stream).0
}

fn need<T>(buf: &CudaSlice<T>, len: usize, what: &str) -> Launch {
    if buf.len() < len {
        return Err(format!("{what}: buffer holds {} elements, the launch needs {len}", buf.len()));
    }
    Ok(())
}

/// Block size for one-row-per-block kernels (LayerNorm family).
fn row_block(hidden: usize) -> u32 {
    if hidden <= 1024 {
        128
    } else {
        256
    }
}

fn elementwise(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(256).clamp(1, MAX_ELEMENTWISE_BLOCKS);
    LaunchConfig { grid_dim: (blocks as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 }
}

fn launched(r: std::result::Result<Option<(cudarc::driver::CudaEvent, cudarc::driver::CudaEvent)>, cudarc::driver::DriverError>, what: &str) -> Launch {
    r.map(|_| ()).map_err(|e| format!("launching {what} failed ({e:?})"))
}

impl Kernels {
    /// Every (file, function) the launchers use for `precision`. The compile test checks that
    /// each is defined; [`Kernels::load`] resolves exactly these.
    pub fn function_names(precision: Half) -> Vec<(KernelFile, String)> {
        let s = precision.suffix();
        let mut names = vec![
            (nvrtc::EMBEDDING, format!("embed_layer_norm_{s}")),
            (nvrtc::LAYER_NORM, format!("bias_residual_layer_norm_{s}")),
            (nvrtc::ACTIVATION, format!("bias_gelu_erf_{s}")),
            (nvrtc::ACTIVATION, format!("bias_gelu_tanh_{s}")),
            (nvrtc::POOLING, "pool".to_string()),
            (nvrtc::POOLING, "l2_normalize_rows".to_string()),
            (nvrtc::CAST, format!("cast_f32_to_{s}")),
            (nvrtc::CAST, format!("cast_{s}_to_f32")),
        ];
        names.extend(ATTENTION_HEAD_DIMS.iter().map(|d| (nvrtc::ATTENTION, format!("attention_d{d}_{s}"))));
        names.extend([
            (nvrtc::EMBEDDING, "embed_scaled".to_string()),
            (nvrtc::RMS_NORM, format!("rms_norm_{s}")),
            (nvrtc::RMS_NORM, "residual_add".to_string()),
            (nvrtc::ROPE, "rope_qk".to_string()),
            (nvrtc::CAUSAL_ATTENTION, format!("causal_attention_{s}")),
            (nvrtc::ACTIVATION, format!("gated_gelu_tanh_{s}")),
            (nvrtc::ACTIVATION, format!("gated_silu_{s}")),
        ]);
        names
    }

    /// Compiles (or finds in the cache) every kernel file and resolves the functions for
    /// `precision`.
    pub fn load(device: &Device, precision: Half) -> std::result::Result<Kernels, String> {
        let mut functions = HashMap::new();
        for (file, name) in Self::function_names(precision) {
            let f = device.module(&file)?.load_function(&name).map_err(|e| format!("{name} missing from {} ({e:?})", file.name))?;
            functions.insert(name, f);
        }
        let s = precision.suffix();
        let mut take = |name: String| functions.remove(&name).ok_or_else(|| format!("kernel {name} was not resolved"));
        let mut attention = HashMap::new();
        for d in ATTENTION_HEAD_DIMS {
            attention.insert(d, take(format!("attention_d{d}_{s}"))?);
        }
        Ok(Kernels {
            precision,
            embed_layer_norm: take(format!("embed_layer_norm_{s}"))?,
            bias_residual_layer_norm: take(format!("bias_residual_layer_norm_{s}"))?,
            bias_gelu_erf: take(format!("bias_gelu_erf_{s}"))?,
            bias_gelu_tanh: take(format!("bias_gelu_tanh_{s}"))?,
            attention,
            pool: take("pool".to_string())?,
            l2_normalize_rows: take("l2_normalize_rows".to_string())?,
            cast_from_f32: take(format!("cast_f32_to_{s}"))?,
            cast_to_f32: take(format!("cast_{s}_to_f32"))?,
            decoder: DecoderKernels {
                embed_scaled: take("embed_scaled".to_string())?,
                rms_norm: take(format!("rms_norm_{s}"))?,
                residual_add: take("residual_add".to_string())?,
                rope_qk: take("rope_qk".to_string())?,
                causal_attention: take(format!("causal_attention_{s}"))?,
                gated_gelu_tanh: take(format!("gated_gelu_tanh_{s}"))?,
                gated_silu: take(format!("gated_silu_{s}"))?,
            },
        })
    }

    pub fn supports_head_dim(d: usize) -> bool {
        ATTENTION_HEAD_DIMS.contains(&d)
    }

    /// embedding.cu: out = LayerNorm(word[id] + (position[pos] + token_type[type])), as f32 and
    /// as the 16-bit GEMM input. Ids must already be checked against the tables.
    #[allow(clippy::too_many_arguments)]
    pub fn embed_layer_norm(
        &self,
        stream: &CudaStream,
        tokens: usize,
        hidden: usize,
        ids: &CudaSlice<u32>,
        positions: &CudaSlice<u32>,
        type_ids: &CudaSlice<u32>,
        word: &CudaSlice<f32>,
        position: &CudaSlice<f32>,
        token_type: &CudaSlice<f32>,
        gamma: &CudaSlice<f32>,
        beta: &CudaSlice<f32>,
        eps: f32,
        out32: &mut CudaSlice<f32>,
        out16: &mut CudaSlice<u16>,
    ) -> Launch {
        for (b, what) in [(ids, "ids"), (positions, "positions"), (type_ids, "type ids")] {
            need(b, tokens, what)?;
        }
        need(gamma, hidden, "gamma")?;
        need(beta, hidden, "beta")?;
        need(out32, tokens * hidden, "embedding out32")?;
        need(out16, tokens * hidden, "embedding out16")?;
        if tokens == 0 {
            return Ok(());
        }
        let p = [ptr(ids, stream), ptr(positions, stream), ptr(type_ids, stream), ptr(word, stream), ptr(position, stream), ptr(token_type, stream), ptr(gamma, stream), ptr(beta, stream)];
        let (o32, o16) = (ptr(out32, stream), ptr(out16, stream));
        let hidden_i = hidden as i32;
        let cfg = LaunchConfig { grid_dim: (tokens as u32, 1, 1), block_dim: (row_block(hidden), 1, 1), shared_mem_bytes: 0 };
        let mut l = stream.launch_builder(&self.embed_layer_norm);
        for v in &p {
            l.arg(v);
        }
        l.arg(&hidden_i).arg(&eps).arg(&o32).arg(&o16);
        // SAFETY: argument list matches embed_layer_norm_* in embedding.cu; sizes checked.
        launched(unsafe { l.launch(cfg) }, "embed_layer_norm")
    }

    /// layer_norm.cu: x32 = LayerNorm((linear_out + bias) + x32) in place, and x16 = the same
    /// values in 16 bits.
    #[allow(clippy::too_many_arguments)]
    pub fn bias_residual_layer_norm(
        &self,
        stream: &CudaStream,
        rows: usize,
        hidden: usize,
        linear_out: &CudaSlice<f32>,
        bias: &CudaSlice<f32>,
        gamma: &CudaSlice<f32>,
        beta: &CudaSlice<f32>,
        eps: f32,
        x32: &mut CudaSlice<f32>,
        x16: &mut CudaSlice<u16>,
    ) -> Launch {
        need(linear_out, rows * hidden, "layer norm input")?;
        for (b, what) in [(bias, "bias"), (gamma, "gamma"), (beta, "beta")] {
            need(b, hidden, what)?;
        }
        need(x32, rows * hidden, "residual stream")?;
        need(x16, rows * hidden, "layer norm out16")?;
        if rows == 0 {
            return Ok(());
        }
        let (y, b, g, bt, x, o16) = (ptr(linear_out, stream), ptr(bias, stream), ptr(gamma, stream), ptr(beta, stream), ptr(x32, stream), ptr(x16, stream));
        let hidden_i = hidden as i32;
        let cfg = LaunchConfig { grid_dim: (rows as u32, 1, 1), block_dim: (row_block(hidden), 1, 1), shared_mem_bytes: 0 };
        let mut l = stream.launch_builder(&self.bias_residual_layer_norm);
        // residual and out32 are the same buffer: the residual stream is updated in place.
        l.arg(&y).arg(&b).arg(&x).arg(&g).arg(&bt).arg(&hidden_i).arg(&eps).arg(&x).arg(&o16);
        // SAFETY: argument list matches bias_residual_layer_norm_* in layer_norm.cu.
        launched(unsafe { l.launch(cfg) }, "bias_residual_layer_norm")
    }

    /// activation.cu: out = act(linear_out + bias) in 16 bits.
    #[allow(clippy::too_many_arguments)]
    pub fn bias_gelu(
        &self,
        stream: &CudaStream,
        activation: Activation,
        rows: usize,
        cols: usize,
        linear_out: &CudaSlice<f32>,
        bias: &CudaSlice<f32>,
        out: &mut CudaSlice<u16>,
    ) -> Launch {
        need(linear_out, rows * cols, "activation input")?;
        need(bias, cols, "bias")?;
        need(out, rows * cols, "activation output")?;
        if rows * cols == 0 {
            return Ok(());
        }
        let f = match activation {
            Activation::Gelu => &self.bias_gelu_erf,
            Activation::GeluTanh => &self.bias_gelu_tanh,
            Activation::Silu => return Err("no bias + SiLU kernel (no encoder uses SiLU)".into()),
        };
        let (y, b, o) = (ptr(linear_out, stream), ptr(bias, stream), ptr(out, stream));
        let (rows_u, cols_i) = (rows as u64, cols as i32);
        let mut l = stream.launch_builder(f);
        l.arg(&y).arg(&b).arg(&rows_u).arg(&cols_i).arg(&o);
        // One block per row (grid-stride over rows past the cap).
        let cfg = LaunchConfig { grid_dim: (rows.min(MAX_ELEMENTWISE_BLOCKS) as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: argument list matches bias_gelu_* in activation.cu.
        launched(unsafe { l.launch(cfg) }, "bias_gelu")
    }

    /// attention.cu: ctx = softmax(q kᵀ / √d) v per sequence and head, qkv bias folded in.
    #[allow(clippy::too_many_arguments)]
    pub fn attention(
        &self,
        stream: &CudaStream,
        qkv: &CudaSlice<f32>,
        bias: &CudaSlice<f32>,
        cu_seqlens: &CudaSlice<i32>,
        num_seqs: usize,
        max_len: usize,
        tokens: usize,
        heads: usize,
        head_dim: usize,
        out: &mut CudaSlice<u16>,
    ) -> Launch {
        let f = self.attention.get(&head_dim).ok_or_else(|| format!("attention has no kernel for head dimension {head_dim}"))?;
        let hidden = heads * head_dim;
        need(qkv, tokens * 3 * hidden, "qkv")?;
        need(bias, 3 * hidden, "qkv bias")?;
        need(cu_seqlens, num_seqs + 1, "cu_seqlens")?;
        need(out, tokens * hidden, "attention output")?;
        if num_seqs == 0 || max_len == 0 {
            return Ok(());
        }
        let (q, b, cu, o) = (ptr(qkv, stream), ptr(bias, stream), ptr(cu_seqlens, stream), ptr(out, stream));
        let heads_i = heads as i32;
        let scale_log2 = (std::f64::consts::LOG2_E / (head_dim as f64).sqrt()) as f32;
        // Sequences go in gridDim.z, which no GPU lets exceed 65,535: a larger batch is launched
        // in slices, each given cu_seqlens from its first sequence on (the offsets in it are
        // absolute token indices, so the kernel needs nothing else).
        for first in (0..num_seqs).step_by(MAX_GRID_Z) {
            let seqs = (num_seqs - first).min(MAX_GRID_Z);
            let cu_slice = cu + (first * std::mem::size_of::<i32>()) as u64;
            let cfg = LaunchConfig {
                grid_dim: (max_len.div_ceil(ATTENTION_QUERY_TILE) as u32, heads as u32, seqs as u32),
                block_dim: (ATTENTION_THREADS, 1, 1),
                shared_mem_bytes: 0,
            };
            let mut l = stream.launch_builder(f);
            l.arg(&q).arg(&b).arg(&cu_slice).arg(&heads_i).arg(&scale_log2).arg(&o);
            // SAFETY: argument list matches attention_d*_* in attention.cu; cu_slice points at
            // entry `first` of cu_seqlens, which holds num_seqs + 1 entries.
            launched(unsafe { l.launch(cfg) }, "attention")?;
        }
        Ok(())
    }

    /// pooling.cu: out[s] = pooled (and, with `normalize`, L2-normalised) sequence s.
    #[allow(clippy::too_many_arguments)]
    pub fn pool_normalize(
        &self,
        stream: &CudaStream,
        hidden_states: &CudaSlice<f32>,
        cu_seqlens: &CudaSlice<i32>,
        num_seqs: usize,
        tokens: usize,
        hidden: usize,
        pooling: Pooling,
        normalize: bool,
        out: &mut CudaSlice<f32>,
    ) -> Launch {
        need(hidden_states, tokens * hidden, "hidden states")?;
        need(cu_seqlens, num_seqs + 1, "cu_seqlens")?;
        need(out, num_seqs * pooling.modes() * hidden, "pooled output")?;
        if num_seqs == 0 {
            return Ok(());
        }
        let (h, cu, o) = (ptr(hidden_states, stream), ptr(cu_seqlens, stream), ptr(out, stream));
        let flags = [
            hidden as i32,
            pooling.cls as i32,
            pooling.max as i32,
            pooling.mean as i32,
            pooling.mean_sqrt_len as i32,
            pooling.last_token as i32,
        ];
        let cfg = LaunchConfig { grid_dim: (num_seqs as u32, hidden.div_ceil(32) as u32, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        let mut l = stream.launch_builder(&self.pool);
        l.arg(&h).arg(&cu);
        for v in &flags {
            l.arg(v);
        }
        l.arg(&o);
        // SAFETY: argument list matches pool in pooling.cu.
        launched(unsafe { l.launch(cfg) }, "pool")?;
        if !normalize {
            return Ok(());
        }
        let width = (pooling.modes() * hidden) as i32;
        let cfg = LaunchConfig { grid_dim: (num_seqs as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
        let mut l = stream.launch_builder(&self.l2_normalize_rows);
        l.arg(&width).arg(&o);
        // SAFETY: argument list matches l2_normalize_rows in pooling.cu.
        launched(unsafe { l.launch(cfg) }, "l2_normalize_rows")
    }

    /// embedding.cu embed_scaled: out32[t] = word[ids[t]] · scale. Ids must already be checked.
    pub fn embed_scaled(&self, stream: &CudaStream, tokens: usize, hidden: usize, ids: &CudaSlice<u32>, word: &CudaSlice<f32>, scale: f32, out32: &mut CudaSlice<f32>) -> Launch {
        need(ids, tokens, "ids")?;
        need(out32, tokens * hidden, "embedding output")?;
        if tokens == 0 {
            return Ok(());
        }
        let (i, w, o, hidden_i) = (ptr(ids, stream), ptr(word, stream), ptr(out32, stream), hidden as i32);
        let cfg = LaunchConfig { grid_dim: (tokens as u32, 1, 1), block_dim: (128, 1, 1), shared_mem_bytes: 0 };
        let mut l = stream.launch_builder(&self.decoder.embed_scaled);
        l.arg(&i).arg(&w).arg(&hidden_i).arg(&scale).arg(&o);
        // SAFETY: argument list matches embed_scaled in embedding.cu; sizes checked.
        launched(unsafe { l.launch(cfg) }, "embed_scaled")
    }

    /// rms_norm.cu: v = RMSNorm(x)·gain per row; out32 = v (or += v with `accumulate`) when
    /// given, out16 = v in 16 bits when given. `out32` may be `x` itself: pass `in_place`.
    #[allow(clippy::too_many_arguments)]
    pub fn rms_norm(
        &self,
        stream: &CudaStream,
        rows: usize,
        hidden: usize,
        x: Option<&CudaSlice<f32>>,
        gain: &CudaSlice<f32>,
        eps: f32,
        out32: Option<(&mut CudaSlice<f32>, bool)>,
        out16: Option<&mut CudaSlice<u16>>,
    ) -> Launch {
        need(gain, hidden, "gain")?;
        let o32 = match &out32 {
            Some((b, _)) => {
                need(b, rows * hidden, "rms_norm out32")?;
                ptr(b, stream)
            }
            None => 0,
        };
        let accumulate = out32.as_ref().is_some_and(|(_, a)| *a) as i32;
        // No separate input: the norm of out32 in place.
        let xp = match x {
            Some(b) => {
                need(b, rows * hidden, "rms_norm input")?;
                ptr(b, stream)
            }
            None if o32 != 0 && accumulate == 0 => o32,
            None => return Err("rms_norm: no input (in place needs out32 without accumulate)".into()),
        };
        let o16 = match &out16 {
            Some(b) => {
                need(b, rows * hidden, "rms_norm out16")?;
                ptr(b, stream)
            }
            None => 0,
        };
        if rows == 0 {
            return Ok(());
        }
        let (g, hidden_i) = (ptr(gain, stream), hidden as i32);
        let cfg = LaunchConfig { grid_dim: (rows as u32, 1, 1), block_dim: (row_block(hidden), 1, 1), shared_mem_bytes: 0 };
        let mut l = stream.launch_builder(&self.decoder.rms_norm);
        l.arg(&xp).arg(&g).arg(&hidden_i).arg(&eps).arg(&accumulate).arg(&o32).arg(&o16);
        // SAFETY: argument list matches rms_norm_* in rms_norm.cu; null outputs are skipped.
        launched(unsafe { l.launch(cfg) }, "rms_norm")
    }

    /// rms_norm.cu residual_add: x += y over n elements.
    pub fn residual_add(&self, stream: &CudaStream, n: usize, y: &CudaSlice<f32>, x: &mut CudaSlice<f32>) -> Launch {
        need(y, n, "residual input")?;
        need(x, n, "residual stream")?;
        if n == 0 {
            return Ok(());
        }
        let (yp, xp, n_u) = (ptr(y, stream), ptr(x, stream), n as u64);
        let mut l = stream.launch_builder(&self.decoder.residual_add);
        l.arg(&yp).arg(&n_u).arg(&xp);
        // SAFETY: argument list matches residual_add in rms_norm.cu.
        launched(unsafe { l.launch(elementwise(n)) }, "residual_add")
    }

    /// rope.cu: RoPE (after the optional per-head q/k norm) in place on the query and key heads.
    #[allow(clippy::too_many_arguments)]
    pub fn rope(
        &self,
        stream: &CudaStream,
        tokens: usize,
        qkv: &mut CudaSlice<f32>,
        positions: &CudaSlice<u32>,
        inv_freq: &CudaSlice<f32>,
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
        qk_norm: Option<(&CudaSlice<f32>, &CudaSlice<f32>, f32)>,
    ) -> Launch {
        need(qkv, tokens * (heads + 2 * kv_heads) * head_dim, "qkv")?;
        need(positions, tokens, "positions")?;
        need(inv_freq, head_dim / 2, "inv_freq")?;
        if tokens == 0 {
            return Ok(());
        }
        let (q, p, f) = (ptr(qkv, stream), ptr(positions, stream), ptr(inv_freq, stream));
        let (qg, kg, eps) = match qk_norm {
            Some((qg, kg, eps)) => {
                need(qg, head_dim, "q_norm")?;
                need(kg, head_dim, "k_norm")?;
                (ptr(qg, stream), ptr(kg, stream), eps)
            }
            None => (0, 0, 0.0f32),
        };
        let (h, kv, d) = (heads as i32, kv_heads as i32, head_dim as i32);
        let cfg = LaunchConfig { grid_dim: (tokens as u32, 1, 1), block_dim: (128, 1, 1), shared_mem_bytes: 0 };
        let mut l = stream.launch_builder(&self.decoder.rope_qk);
        l.arg(&q).arg(&p).arg(&f).arg(&h).arg(&kv).arg(&d).arg(&qg).arg(&kg).arg(&eps);
        // SAFETY: argument list matches rope_qk in rope.cu; sizes checked.
        launched(unsafe { l.launch(cfg) }, "rope_qk")
    }

    /// causal_attention.cu: causal GQA attention with soft-cap and sliding window.
    #[allow(clippy::too_many_arguments)]
    pub fn causal_attention(
        &self,
        stream: &CudaStream,
        qkv: &CudaSlice<f32>,
        cu_seqlens: &CudaSlice<i32>,
        num_seqs: usize,
        max_len: usize,
        tokens: usize,
        a: &CausalAttention,
        out: &mut CudaSlice<u16>,
    ) -> Launch {
        if a.head_dim > CAUSAL_ATTENTION_MAX_HEAD_DIM || a.kv_heads == 0 || !a.heads.is_multiple_of(a.kv_heads) {
            return Err(format!("causal attention cannot run {a:?}"));
        }
        need(qkv, tokens * a.qkv_width(), "qkv")?;
        need(cu_seqlens, num_seqs + 1, "cu_seqlens")?;
        need(out, tokens * a.heads * a.head_dim, "attention output")?;
        if num_seqs == 0 || max_len == 0 {
            return Ok(());
        }
        let (q, cu, o) = (ptr(qkv, stream), ptr(cu_seqlens, stream), ptr(out, stream));
        let (h, kv, d) = (a.heads as i32, a.kv_heads as i32, a.head_dim as i32);
        let softcap = a.softcap.unwrap_or(0.0);
        let window = a.window.map_or(0, |w| w.min(i32::MAX as usize) as i32);
        for first in (0..num_seqs).step_by(MAX_GRID_Z) {
            let seqs = (num_seqs - first).min(MAX_GRID_Z);
            let cu_slice = cu + (first * std::mem::size_of::<i32>()) as u64;
            let cfg = LaunchConfig {
                grid_dim: (max_len.div_ceil(CAUSAL_ATTENTION_ROWS) as u32, a.heads as u32, seqs as u32),
                block_dim: (32 * CAUSAL_ATTENTION_ROWS as u32, 1, 1),
                shared_mem_bytes: 0,
            };
            let mut l = stream.launch_builder(&self.decoder.causal_attention);
            l.arg(&q).arg(&cu_slice).arg(&h).arg(&kv).arg(&d).arg(&a.scale).arg(&softcap).arg(&window).arg(&o);
            // SAFETY: argument list matches causal_attention_* in causal_attention.cu; cu_slice
            // points at entry `first` of cu_seqlens.
            launched(unsafe { l.launch(cfg) }, "causal_attention")?;
        }
        Ok(())
    }

    /// activation.cu gated_*: out = act(gate) · up for rows of gate | up, in 16 bits.
    pub fn gated_activation(&self, stream: &CudaStream, activation: Activation, rows: usize, inter: usize, gate_up: &CudaSlice<f32>, out: &mut CudaSlice<u16>) -> Launch {
        need(gate_up, rows * 2 * inter, "gate_up")?;
        need(out, rows * inter, "gated output")?;
        if rows * inter == 0 {
            return Ok(());
        }
        let f = match activation {
            Activation::GeluTanh => &self.decoder.gated_gelu_tanh,
            Activation::Silu => &self.decoder.gated_silu,
            Activation::Gelu => return Err("no gated exact-GELU kernel (no decoder uses it)".into()),
        };
        let (g, o, rows_u, inter_i) = (ptr(gate_up, stream), ptr(out, stream), rows as u64, inter as i32);
        let mut l = stream.launch_builder(f);
        l.arg(&g).arg(&rows_u).arg(&inter_i).arg(&o);
        // SAFETY: argument list matches gated_* in activation.cu.
        launched(unsafe { l.launch(elementwise(rows * inter)) }, "gated activation")
    }

    /// cast.cu: out = input narrowed to this precision (round to nearest even).
    pub fn cast_from_f32(&self, stream: &CudaStream, input: &CudaSlice<f32>, n: usize, out: &mut CudaSlice<u16>) -> Launch {
        need(input, n, "cast input")?;
        need(out, n, "cast output")?;
        self.cast(stream, &self.cast_from_f32, ptr(input, stream), ptr(out, stream), n)
    }

    /// cast.cu: out = input widened from this precision to f32.
    pub fn cast_to_f32(&self, stream: &CudaStream, input: &CudaSlice<u16>, n: usize, out: &mut CudaSlice<f32>) -> Launch {
        need(input, n, "cast input")?;
        need(out, n, "cast output")?;
        self.cast(stream, &self.cast_to_f32, ptr(input, stream), ptr(out, stream), n)
    }

    fn cast(&self, stream: &CudaStream, f: &CudaFunction, input: u64, out: u64, n: usize) -> Launch {
        if n == 0 {
            return Ok(());
        }
        let n_u = n as u64;
        let mut l = stream.launch_builder(f);
        l.arg(&input).arg(&out).arg(&n_u);
        // SAFETY: argument list matches cast_* in cast.cu.
        launched(unsafe { l.launch(elementwise(n)) }, "cast")
    }
}
