//! Activations applied in the GEMM epilogue, and the decoders' gated MLP middle. Must match
//! `reference::gelu` / `gelu_tanh` / `silu` and `reference::gated_activation`.
use rayon::prelude::*;

use super::simd::{map_inplace, multiversion, F32s, Lanewise};
use super::Isa;
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

/// x·sigmoid(x) = x / (1 + e^(−x)).
#[inline(always)]
pub fn silu<V: F32s>(x: V) -> V {
    x.div(V::splat(1.0).add(V::zero().sub(x).exp()))
}

#[inline(always)]
fn apply<V: F32s>(act: Activation, x: V) -> V {
    match act {
        Activation::Gelu => gelu(x),
        Activation::GeluTanh => gelu_tanh(x),
        Activation::Silu => silu(x),
    }
}

struct Silu;
impl Lanewise for Silu {
    #[inline(always)]
    fn apply<V: F32s>(x: V) -> V {
        silu(x)
    }
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
        Some(Activation::Silu) => map_inplace::<V, Silu>(xs),
    }
}

multiversion!(pub fn activate_inplace(act: Option<Activation>, xs: &mut [f32]) = activate_impl);

/// out = act(gate) · up for rows of gate | up; the tail goes through zero-padded vectors so
/// every element sees the same arithmetic.
#[inline(always)]
fn gated_rows_impl<V: F32s>(gate_up: &[f32], inter: usize, act: Activation, out: &mut [f32]) {
    let full = inter / V::LANES * V::LANES;
    for (row, o) in gate_up.chunks_exact(2 * inter).zip(out.chunks_exact_mut(inter)) {
        let (gate, up) = row.split_at(inter);
        for c in (0..full).step_by(V::LANES) {
            unsafe { apply(act, V::load(gate.as_ptr().add(c))).mul(V::load(up.as_ptr().add(c))).store(o.as_mut_ptr().add(c)) };
        }
        if full < inter {
            let n = inter - full;
            let (mut g, mut u) = ([0.0f32; 16], [0.0f32; 16]);
            g[..n].copy_from_slice(&gate[full..]);
            u[..n].copy_from_slice(&up[full..]);
            unsafe { apply(act, V::load(g.as_ptr())).mul(V::load(u.as_ptr())).store(g.as_mut_ptr()) };
            o[full..].copy_from_slice(&g[..n]);
        }
    }
}

multiversion!(fn gated_rows(gate_up: &[f32], inter: usize, act: Activation, out: &mut [f32]) = gated_rows_impl);

/// Rows per rayon task.
const GATED_ROWS_PER_TASK: usize = 8;

pub fn gated_activation(isa: Isa, pool: &rayon::ThreadPool, gate_up: &[f32], inter: usize, act: Activation, out: &mut [f32]) {
    let span = inter * GATED_ROWS_PER_TASK;
    let task = |(t, o): (usize, &mut [f32])| gated_rows(isa, &gate_up[2 * t * span..2 * t * span + 2 * o.len()], inter, act, o);
    if out.len() <= span || super::inline(pool) {
        out.chunks_mut(span).enumerate().for_each(task);
    } else {
        pool.install(|| out.par_chunks_mut(span).enumerate().for_each(task));
    }
}
