//! Activations applied in the GEMM epilogue. Must match `reference::gelu` / `gelu_tanh`.
use super::simd::{map_inplace, multiversion, F32s, Lanewise};
use crate::config::Activation;

/// GELU(x) = 0.5·x·(1 + erf(x/√2)) = 0.5·(x + |x|·erf(|x|/√2)), which needs erf on x ≥ 0 only.
#[inline(always)]
pub fn gelu<V: F32s>(x: V) -> V {
    let a = x.abs();
    let e = a.mul(V::splat(std::f32::consts::FRAC_1_SQRT_2)).erf_nonneg();
    V::splat(0.5).mul(a.fma(e, x))
}

/// 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), with tanh(u) = 1 − 2/(e^{2u} + 1).
#[inline(always)]
pub fn gelu_tanh<V: F32s>(x: V) -> V {
    let u = x.mul(x).mul(x).fma(V::splat(0.044715), x).mul(V::splat(2.0 * 0.797_884_6));
    let t = V::splat(1.0).sub(V::splat(2.0).div(u.exp().add(V::splat(1.0))));
    V::splat(0.5).mul(x).fma(t, V::splat(0.5).mul(x))
}

struct Gelu;
impl Lanewise for Gelu {
    #[inline(always)]
    fn apply<V: F32s>(x: V) -> V {
        gelu(x)
    }
}

struct GeluTanh;
impl Lanewise for GeluTanh {
    #[inline(always)]
    fn apply<V: F32s>(x: V) -> V {
        gelu_tanh(x)
    }
}

#[inline(always)]
fn activate_impl<V: F32s>(act: Option<Activation>, xs: &mut [f32]) {
    match act {
        None => {}
        Some(Activation::Gelu) => map_inplace::<V, Gelu>(xs),
        Some(Activation::GeluTanh) => map_inplace::<V, GeluTanh>(xs),
    }
}

multiversion!(pub fn activate_inplace(act: Option<Activation>, xs: &mut [f32]) = activate_impl);
