//! Helpers shared by the emulated kernel tests: device buffers, NaN poisoning, the 16-bit
//! formats, and the error measure and tolerances of engine/tests/cuda.rs (the GPU tests).
#![allow(dead_code)]
use std::sync::Arc;

use bge_cuda_emulator::{set_schedule, Schedule, SCHEDULES};
use bge_engine::backend::cuda::{Device, Kernels, Half};
use bge_engine::batch::PackedBatch;
use bge_engine::tokenize::Encoded;
use cudarc::driver::{CudaSlice, DeviceRepr};
use rand::rngs::StdRng;
use rand::Rng;

pub const PRECISIONS: [Half; 2] = [Half::F16, Half::Bf16];

/// The emulated device and both precisions' kernels, loaded through the engine.
pub struct Emu {
    pub dev: Arc<Device>,
    pub kernels: Vec<Kernels>,
}

impl Emu {
    pub fn new() -> Emu {
        let dev = bge_cuda_emulator::device();
        let kernels = PRECISIONS.iter().map(|&p| Kernels::load(&dev, p).unwrap_or_else(|e| panic!("{p:?} kernels: {e}"))).collect();
        Emu { dev, kernels }
    }
    pub fn kernels(&self, p: Half) -> &Kernels {
        self.kernels.iter().find(|k| k.precision == p).unwrap()
    }
    pub fn up<T: DeviceRepr>(&self, v: &[T]) -> CudaSlice<T> {
        self.dev.stream.clone_htod(v).unwrap()
    }
    pub fn down<T: DeviceRepr + Default + Clone>(&self, b: &CudaSlice<T>) -> Vec<T> {
        self.dev.stream.clone_dtoh(b).unwrap()
    }
    /// An output buffer full of NaN: an element a kernel forgets to write stays NaN.
    pub fn poisoned_f32(&self, n: usize) -> CudaSlice<f32> {
        self.up(&vec![f32::NAN; n])
    }
    pub fn poisoned_16(&self, p: Half, n: usize) -> CudaSlice<u16> {
        self.up(&vec![nan16(p); n])
    }
}

/// Runs `f` once under each schedule (launches from this thread follow it).
pub fn under_each_schedule(mut f: impl FnMut(Schedule)) {
    for s in SCHEDULES {
        set_schedule(s);
        f(s);
    }
    set_schedule(Schedule::Ascending);
}

pub fn random(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

/// max |got - want| relative to the largest |want| (plus 1, for outputs near zero); fails on
/// any non-finite value, which is what an unwritten (NaN-poisoned) element looks like.
pub fn rel_err(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    if let Some(i) = got.iter().position(|v| !v.is_finite()) {
        panic!("non-finite output at {i} of {}: {}", got.len(), got[i]);
    }
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())) + 1.0;
    got.iter().zip(want).fold(0.0f32, |m, (g, w)| m.max((g - w).abs())) / scale
}

/// 16-bit NaN of each precision, to poison outputs.
pub fn nan16(p: Half) -> u16 {
    match p {
        Half::F16 => 0x7e00,
        Half::Bf16 => 0x7fc0,
    }
}

pub fn widen(p: Half, bits: &[u16]) -> Vec<f32> {
    bits.iter()
        .map(|&b| match p {
            Half::F16 => half::f16::from_bits(b).to_f32(),
            Half::Bf16 => half::bf16::from_bits(b).to_f32(),
        })
        .collect()
}

pub fn narrow(p: Half, v: f32) -> u16 {
    match p {
        Half::F16 => half::f16::from_f32(v).to_bits(),
        Half::Bf16 => half::bf16::from_f32(v).to_bits(),
    }
}

/// Relative size of one rounding step of the 16-bit type.
pub fn ulp16(p: Half) -> f32 {
    match p {
        Half::F16 => 1.0 / 1024.0,
        Half::Bf16 => 1.0 / 128.0,
    }
}

/// A packed batch of sequences of these lengths (token ids do not matter to the kernels).
pub fn batch_of(lens: &[usize]) -> PackedBatch {
    let encs: Vec<Encoded> = lens.iter().map(|&l| Encoded { ids: vec![0; l], type_ids: vec![0; l] }).collect();
    PackedBatch::new(&encs.iter().collect::<Vec<_>>())
}

pub fn cu_seqlens(batch: &PackedBatch) -> Vec<i32> {
    batch.cu_seqlens.iter().map(|&c| c as i32).collect()
}
