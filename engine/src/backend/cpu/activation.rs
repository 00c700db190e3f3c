//! Activations applied in the GEMM epilogue. Must match `reference::gelu` / `gelu_tanh`.
use crate::config::Activation;

#[inline]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2))
}

#[inline]
pub fn gelu_tanh(x: f32) -> f32 {
    const C: f32 = 0.797_884_6; // sqrt(2/pi)
    0.5 * x * (1.0 + libm::tanhf(C * (x + 0.044715 * x * x * x)))
}

pub fn activate_inplace(act: Option<Activation>, xs: &mut [f32]) {
    match act {
        None => {}
        Some(Activation::Gelu) => xs.iter_mut().for_each(|x| *x = gelu(*x)),
        Some(Activation::GeluTanh) => xs.iter_mut().for_each(|x| *x = gelu_tanh(*x)),
    }
}
