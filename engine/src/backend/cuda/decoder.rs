//! Decoders (Gemma2, Mistral, Qwen3) on the GPU. Placeholder until the kernels land.
use crate::batch::PackedBatch;
use crate::config::ModelSpec;
use crate::error::{Error, Result};
use crate::models::Forward;
use crate::weights::WeightFile;

pub struct CudaDecoder;

impl CudaDecoder {
    pub fn load(spec: &ModelSpec, _weights: &WeightFile) -> Result<CudaDecoder> {
        super::device()?;
        Err(Error::DeviceUnavailable(format!("model \"{}\" is a decoder; the CUDA backend runs encoders only", spec.name)))
    }
}

impl Forward for CudaDecoder {
    fn forward(&self, _pool: &rayon::ThreadPool, _batch: &PackedBatch, _interrupt: &mut dyn FnMut()) -> Result<Vec<f32>> {
        unreachable!("never loaded")
    }
}
