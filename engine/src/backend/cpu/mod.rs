//! The CPU backend: SIMD kernels (one file per op family) run on an explicit rayon pool.
use super::Ops;
use crate::batch::PackedBatch;
use crate::config::Activation;

pub mod activation;
pub mod attention;
pub mod gemm;
pub mod gemm_bf16;
pub mod norm;
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

pub struct Cpu {
    pub isa: Isa,
    /// Linear layers in bfloat16 (AVX512-BF16); everything else stays f32.
    pub bf16: bool,
}

impl Cpu {
    pub fn new() -> Cpu {
        Cpu { isa: Isa::detect(), bf16: false }
    }

    /// The reduced-precision variant; None when the CPU has no AVX512-BF16.
    pub fn bf16() -> Option<Cpu> {
        gemm_bf16::available().then(|| Cpu { isa: Isa::detect(), bf16: true })
    }
}

/// A linear layer packed for the CPU GEMM of the chosen precision.
pub enum CpuLinear {
    F32(PackedLinear),
    Bf16(gemm_bf16::PackedBf16),
}

impl Default for Cpu {
    fn default() -> Self {
        Self::new()
    }
}

impl Ops for Cpu {
    type Linear = CpuLinear;

    fn prepare_linear(&self, weight: Vec<f32>, bias: Vec<f32>, out_features: usize, in_features: usize) -> CpuLinear {
        if self.bf16 {
            CpuLinear::Bf16(gemm_bf16::PackedBf16::pack(&weight, &bias, out_features, in_features))
        } else {
            CpuLinear::F32(PackedLinear::pack(self.isa, &weight, &bias, out_features, in_features))
        }
    }

    fn linear(&self, pool: &rayon::ThreadPool, x: &[f32], rows: usize, lin: &CpuLinear, act: Option<Activation>, y: &mut [f32]) {
        match lin {
            CpuLinear::F32(w) => gemm::gemm(pool, x, rows, w, act, y),
            CpuLinear::Bf16(w) => gemm_bf16::gemm_bf16(pool, x, rows, w, act, y),
        }
    }

    fn add_layer_norm(&self, pool: &rayon::ThreadPool, x: &mut [f32], residual: Option<&[f32]>, gamma: &[f32], beta: &[f32], eps: f32) {
        norm::add_layer_norm(self.isa, pool, x, residual, gamma, beta, eps)
    }

    fn attention(&self, pool: &rayon::ThreadPool, qkv: &[f32], batch: &PackedBatch, heads: usize, d: usize, out: &mut [f32]) {
        attention::attention(self.isa, pool, qkv, batch, heads, d, out)
    }
}
