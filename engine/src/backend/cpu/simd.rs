//! Small `wide` helpers shared by the CPU op families. Reductions always run in the same
//! order (8 lanes, then the lanes left to right, then the tail) so results never depend on
//! how work was split.
use wide::f32x8;

#[inline(always)]
pub fn load8(s: &[f32]) -> f32x8 {
    f32x8::from(<[f32; 8]>::try_from(&s[..8]).unwrap())
}

pub fn sum8(xs: &[f32]) -> f32 {
    let mut acc = f32x8::ZERO;
    let mut chunks = xs.chunks_exact(8);
    for c in &mut chunks {
        acc += load8(c);
    }
    chunks.remainder().iter().fold(acc.reduce_add(), |s, v| s + v)
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = f32x8::ZERO;
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        acc = load8(x).mul_add(load8(y), acc);
    }
    ca.remainder().iter().zip(cb.remainder()).fold(acc.reduce_add(), |s, (x, y)| s + x * y)
}

/// y += alpha · x
pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    let a8 = f32x8::splat(alpha);
    let mut cx = x.chunks_exact(8);
    let mut cy = y.chunks_exact_mut(8);
    for (xs, ys) in (&mut cx).zip(&mut cy) {
        let r: [f32; 8] = a8.mul_add(load8(xs), load8(ys)).into();
        ys.copy_from_slice(&r);
    }
    for (xv, yv) in cx.remainder().iter().zip(cy.into_remainder()) {
        *yv += alpha * xv;
    }
}
