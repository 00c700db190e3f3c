//! The CPU backend: SIMD kernels (one file per op family) run on an explicit rayon pool.
use super::{CausalAttention, Ops, Precision, RopeTable};
use crate::batch::PackedBatch;
use crate::config::Activation;
use crate::error::{Error, Result};

pub mod activation;
pub mod amx;
pub mod attention;
pub mod causal_attention;
pub mod gemm;
pub mod gemm_bf16;
pub mod gemm_int8;
pub mod norm;
pub mod rms_norm;
pub mod rope;
pub mod simd;

pub use gemm::{Isa, PackedLinear};

/// A raw output pointer shared by tasks that write disjoint parts of one buffer.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub *mut f32);
// SAFETY: users guarantee tasks write disjoint elements and the buffer outlives the tasks.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    pub fn get(self) -> *mut f32 {
        self.0
    }
}

pub(crate) use crate::threads::{in_pool, inline};

/// Runs `task(0..tasks)` on the pool, or on the calling thread for one task or a one-thread pool.
pub(crate) fn run_tasks(pool: &rayon::ThreadPool, tasks: usize, task: impl Fn(usize) + Sync + Send) {
    use rayon::prelude::*;
    if tasks <= 1 || inline(pool) {
        (0..tasks).for_each(task);
    } else {
        in_pool(pool, || (0..tasks).into_par_iter().for_each(task));
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Cpu {
    pub isa: Isa,
    /// Of the linear layers; everything else stays f32.
    pub precision: Precision,
}

impl Cpu {
    /// The f32 backend on the kernel family [`Isa::selected`] picks.
    pub fn new() -> Result<Cpu> {
        Ok(Cpu { isa: Isa::selected()?, precision: Precision::Fp32 })
    }

    /// The reduced-precision variant: needs AVX512-BF16 and the AVX-512 kernels selected.
    pub fn bf16() -> Result<Cpu> {
        let isa = Isa::selected()?;
        if isa == Isa::Avx512 && gemm_bf16::available() {
            return Ok(Cpu { isa, precision: Precision::Bf16 });
        }
        let why = if gemm_bf16::available() {
            format!("this server runs the {} kernels ({}={})", isa.name(), Isa::ENV, std::env::var(Isa::ENV).unwrap_or_default())
        } else {
            format!("this CPU has no AVX512-BF16 (it runs the {} kernels)", isa.name())
        };
        Err(Error::CpuFeatureMissing {
            reason: format!("bf16 precision needs a CPU with AVX512-BF16 and the avx512 kernels; {why}"),
            hint: "SET bge.precision = fp32 (the default): it runs on every CPU and matches sentence-transformers exactly. bf16 helps only on CPUs with AVX512-BF16 (Intel Cooper Lake, Sapphire Rapids and later; AMD Zen 4 and later).".into(),
        })
    }

    /// The 8-bit variant: runs on every CPU (VNNI, AVX2 or portable integer kernels).
    pub fn int8() -> Result<Cpu> {
        Ok(Cpu { isa: Isa::selected()?, precision: Precision::Int8 })
    }

    /// The int8 kernel family this backend's linear layers run on (when its precision is int8).
    pub fn int8_kernel(&self) -> gemm_int8::Int8Kernel {
        gemm_int8::Int8Kernel::for_isa(self.isa)
    }

    /// What it computes with, for bge_models(): the kernel family and the linear layers' precision.
    pub fn describe(&self) -> (&'static str, &'static str) {
        (self.isa.name(), self.precision.name())
    }
}

/// A linear layer packed for the CPU GEMM of the chosen precision.
pub enum CpuLinear {
    F32(PackedLinear),
    Bf16(gemm_bf16::PackedBf16),
    Int8(gemm_int8::PackedInt8),
}

impl Ops for Cpu {
    type Linear = CpuLinear;

    fn prepare_linear(&self, weight: Vec<f32>, bias: Vec<f32>, out_features: usize, in_features: usize) -> CpuLinear {
        match self.precision {
            Precision::Fp32 => CpuLinear::F32(PackedLinear::pack(self.isa, &weight, &bias, out_features, in_features)),
            Precision::Bf16 => CpuLinear::Bf16(gemm_bf16::PackedBf16::pack(&weight, &bias, out_features, in_features)),
            Precision::Int8 => CpuLinear::Int8(gemm_int8::PackedInt8::pack(self.int8_kernel(), &weight, &bias, out_features, in_features)),
        }
    }

    fn linear(&self, pool: &rayon::ThreadPool, x: &[f32], rows: usize, lin: &CpuLinear, act: Option<Activation>, y: &mut [f32]) {
        match lin {
            CpuLinear::F32(w) => gemm::gemm(pool, x, rows, w, act, y),
            CpuLinear::Bf16(w) => gemm_bf16::gemm_bf16(pool, x, rows, w, act, y),
            CpuLinear::Int8(w) => gemm_int8::gemm_int8(pool, self.isa, x, rows, w, act, y),
        }
    }

    fn add_layer_norm(&self, pool: &rayon::ThreadPool, x: &mut [f32], residual: Option<&[f32]>, gamma: &[f32], beta: &[f32], eps: f32) {
        norm::add_layer_norm(self.isa, pool, x, residual, gamma, beta, eps)
    }

    fn attention(&self, pool: &rayon::ThreadPool, qkv: &[f32], batch: &PackedBatch, heads: usize, d: usize, out: &mut [f32], queries: std::ops::Range<usize>) {
        attention::attention_rows(self.isa, pool, qkv, batch, heads, d, out, queries)
    }

    fn rms_norm(&self, pool: &rayon::ThreadPool, x: &[f32], gain: &[f32], eps: f32, out: &mut [f32], accumulate: bool) {
        rms_norm::rms_norm(self.isa, pool, x, gain, eps, out, accumulate)
    }

    fn rope(&self, pool: &rayon::ThreadPool, qkv: &mut [f32], table: &RopeTable, heads: usize, kv_heads: usize, qk_norm: Option<(&[f32], &[f32], f32)>) {
        rope::rope(self.isa, pool, qkv, table, heads, kv_heads, qk_norm)
    }

    fn causal_attention(&self, pool: &rayon::ThreadPool, qkv: &[f32], batch: &PackedBatch, a: &CausalAttention, out: &mut [f32], queries: std::ops::Range<usize>) {
        causal_attention::causal_attention(self.isa, pool, qkv, batch, a, out, queries)
    }

    fn gated_activation(&self, pool: &rayon::ThreadPool, gate_up: &[f32], inter: usize, act: Activation, out: &mut [f32]) {
        activation::gated_activation(self.isa, pool, gate_up, inter, act, out)
    }

    /// int8's GEMMs are fast enough that writing and rereading their f32 outputs shows: measured
    /// on all-MiniLM-L6-v2 (2-vCPU Xeon, AMX), passes of 1,024 tokens (6 MiB of FFN
    /// intermediate) ran the corpus 6.7% faster than passes of 4,096 (10 of 12 paired rounds);
    /// fp32 measured the same either way.
    fn pass_output_bytes(&self) -> Option<usize> {
        (self.precision == Precision::Int8).then_some(6 << 20)
    }
}
