//! Backends run the encoder's op families. The encoder (models/encoder/) is written once over
//! the [`Ops`] trait; [`reference`] is the plain scalar oracle every faster backend is tested
//! against, [`cpu`] the SIMD + rayon one. [`cuda`] runs the same encoder on an NVIDIA GPU with its
//! own forward pass over device buffers (models/mod.rs `Forward`), not through `Ops`.
use crate::batch::PackedBatch;
use crate::config::Activation;
pub use reference::CausalAttention;

pub mod cpu;
pub mod cuda;
pub mod reference;

/// Which implementation of the ops to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    Reference,
    Cpu,
    /// The CPU backend with linear layers in bfloat16 (AVX512-BF16), for speed over exactness.
    CpuBf16,
    /// The CPU backend with linear layers in int8 (weights per channel, activations per token).
    CpuInt8,
    /// NVIDIA GPU: kernels/*.cu through NVRTC, GEMMs through cuBLAS, f16 GEMM inputs.
    Cuda,
}

/// The precision of the linear layers a caller asks for: the one type from bge.precision (and a
/// registration's precision) to the CPU backend that runs it. The GPU computes in fp16 whatever
/// is asked; callers decide whether a GPU may serve a request (registry.rs in the extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Precision {
    Fp32,
    /// bfloat16 inputs, f32 sums (AVX512-BF16).
    Bf16,
    /// Weights per output channel and activations per token in int8, exact i32 sums.
    Int8,
}

impl Precision {
    pub const ALL: [Precision; 3] = [Precision::Fp32, Precision::Bf16, Precision::Int8];

    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
            Precision::Int8 => "int8",
        }
    }

    /// The precision named `name` (as [`Precision::name`] writes it); None for anything else.
    pub fn parse(name: &str) -> Option<Precision> {
        Precision::ALL.into_iter().find(|p| p.name() == name)
    }
}

impl BackendKind {
    /// The CPU backend that runs linear layers in `precision`.
    pub fn cpu(precision: Precision) -> BackendKind {
        match precision {
            Precision::Fp32 => BackendKind::Cpu,
            Precision::Bf16 => BackendKind::CpuBf16,
            Precision::Int8 => BackendKind::CpuInt8,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Reference => "reference",
            BackendKind::Cpu => "cpu",
            BackendKind::CpuBf16 => "cpu-bf16",
            BackendKind::CpuInt8 => "cpu-int8",
            BackendKind::Cuda => "cuda",
        }
    }
}

/// The op families of a BERT-style encoder, over row-major f32 buffers.
pub trait Ops: Send + Sync + 'static {
    /// A linear layer prepared once at load (the CPU backend packs it into SIMD panels).
    type Linear: Send + Sync;

    /// `weight` is [out_features, in_features] (PyTorch's nn.Linear layout), `bias` [out_features].
    fn prepare_linear(&self, weight: Vec<f32>, bias: Vec<f32>, out_features: usize, in_features: usize) -> Self::Linear;

    /// y[rows, out] = act(x[rows, in] · Wᵀ + b).
    fn linear(&self, pool: &rayon::ThreadPool, x: &[f32], rows: usize, lin: &Self::Linear, act: Option<Activation>, y: &mut [f32]);

    /// x[r] = LayerNorm(x[r] + residual[r]) · gamma + beta for every row of width gamma.len().
    fn add_layer_norm(&self, pool: &rayon::ThreadPool, x: &mut [f32], residual: Option<&[f32]>, gamma: &[f32], beta: &[f32], eps: f32);

    /// Multi-head self-attention over a packed batch: each sequence attends only to itself.
    /// `qkv` is [tokens, 3·heads·head_dim] laid out q | k | v; `out` is [tokens, heads·head_dim],
    /// of which only the rows of the tokens in `queries` are computed (callers split long work).
    #[allow(clippy::too_many_arguments)]
    fn attention(&self, pool: &rayon::ThreadPool, qkv: &[f32], batch: &PackedBatch, num_heads: usize, head_dim: usize, out: &mut [f32], queries: std::ops::Range<usize>);

    // The decoder's op families (models/decoder/); each documented at its reference function.

    /// [`reference::rms_norm`]: out (or out +=) RMSNorm(x) · gain, rows of width gain.len().
    fn rms_norm(&self, pool: &rayon::ThreadPool, x: &[f32], gain: &[f32], eps: f32, out: &mut [f32], accumulate: bool);

    /// [`reference::rope`] with the angles of `table`, in place on every q and k head of `qkv`.
    fn rope(&self, pool: &rayon::ThreadPool, qkv: &mut [f32], table: &RopeTable, heads: usize, kv_heads: usize, qk_norm: Option<(&[f32], &[f32], f32)>);

    /// [`reference::causal_attention`] for the query tokens in `queries`.
    fn causal_attention(&self, pool: &rayon::ThreadPool, qkv: &[f32], batch: &PackedBatch, attention: &CausalAttention, out: &mut [f32], queries: std::ops::Range<usize>);

    /// [`reference::gated_activation`]: out = act(gate) · up for rows of gate | up.
    fn gated_activation(&self, pool: &rayon::ThreadPool, gate_up: &[f32], inter: usize, act: Activation, out: &mut [f32]);

    /// Bytes of a layer's widest output (f32 rows) one forward pass should keep within for
    /// speed, when this backend runs faster on shorter passes; `None` when longer ones are fine.
    fn pass_output_bytes(&self) -> Option<usize> {
        None
    }
}

/// The RoPE angles of one batch: cos and sin of position × inverse frequency for every token and
/// pair, [tokens, head_dim / 2] each, computed once per forward pass and shared by the layers.
pub struct RopeTable {
    pub head_dim: usize,
    pub theta: f64,
    pub positions: Vec<u32>,
    pub cos: Vec<f32>,
    pub sin: Vec<f32>,
}

impl RopeTable {
    /// As transformers: the angle is an f32 product ([`reference::rope_angle`]), its cosine and
    /// sine rounded to f32.
    pub fn new(positions: &[u32], head_dim: usize, theta: f64) -> RopeTable {
        let inv_freq = reference::rope_inv_freq(head_dim, theta);
        let mut cos = Vec::with_capacity(positions.len() * head_dim / 2);
        let mut sin = Vec::with_capacity(positions.len() * head_dim / 2);
        for &p in positions {
            for &f in &inv_freq {
                let angle = reference::rope_angle(p, f) as f64;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        RopeTable { head_dim, theta, positions: positions.to_vec(), cos, sin }
    }
}
