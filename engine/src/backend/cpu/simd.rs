//! The SIMD vocabulary of the CPU kernels, chosen at run time.
//!
//! Kernels are written once, generic over [`F32s`], as `#[inline(always)]` functions; the
//! [`multiversion!`] macro instantiates each inside `#[target_feature]` wrappers for AVX-512 and
//! AVX2+FMA plus a portable `wide` version, and dispatches on the detected [`Isa`](super::Isa). (`wide`
//! alone picks its instructions when the crate is compiled, which would pin a binary to the
//! build machine's CPU or to SSE2.) Reductions run in a fixed order (lanes left to right, then
//! the tail), so results never depend on how work was split across threads or batches.
use wide::f32x8;

/// A vector of f32 lanes.
pub trait F32s: Copy {
    const LANES: usize;
    fn zero() -> Self;
    fn splat(v: f32) -> Self;
    /// # Safety
    /// `p` points to LANES readable floats.
    unsafe fn load(p: *const f32) -> Self;
    /// # Safety
    /// `p` points to LANES writable floats.
    unsafe fn store(self, p: *mut f32);
    fn add(self, o: Self) -> Self;
    fn sub(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
    fn div(self, o: Self) -> Self;
    /// self · b + c
    fn fma(self, b: Self, c: Self) -> Self;
    fn max(self, o: Self) -> Self;
    fn min(self, o: Self) -> Self;
    fn abs(self) -> Self;
    /// self · 2^n for integral n (|n| < 127).
    fn scale_pow2(self, n: Self) -> Self;
    fn round(self) -> Self;
    /// Writes each lane, an integer v in [-32896, 32639], as the two bytes of the u16
    /// v + 32896: the high byte to `hi`, the low byte to `lo`. Those are the offset digits
    /// of v (see gemm_int8): hi + 128 and lo + 128 for v = 256·hi + lo, hi = ⌊(v + 128)/256⌋.
    /// # Safety
    /// `hi` and `lo` point to LANES writable bytes each.
    unsafe fn store_offset_digits(self, hi: *mut u8, lo: *mut u8);
    /// Writes each lane, an integer within ±2¹⁵, as an i16.
    /// # Safety
    /// `p` points to LANES writable i16.
    unsafe fn store_i16(self, p: *mut i16);

    fn reduce_add(self) -> f32 {
        let mut buf = [0.0f32; 16];
        unsafe { self.store(buf.as_mut_ptr()) };
        buf[..Self::LANES].iter().fold(0.0, |s, v| s + v)
    }

    fn reduce_max(self) -> f32 {
        let mut buf = [0.0f32; 16];
        unsafe { self.store(buf.as_mut_ptr()) };
        buf[..Self::LANES].iter().fold(f32::NEG_INFINITY, |s, v| s.max(*v))
    }

    /// e^x, about 1 ulp (Cody–Waite reduction, degree-6 polynomial); inputs clamped to ±88.
    #[inline(always)]
    fn exp(self) -> Self {
        let x = self.min(Self::splat(88.0)).max(Self::splat(-88.0));
        let n = x.mul(Self::splat(std::f32::consts::LOG2_E)).round();
        let r = n.fma(Self::splat(-0.693_359_4), x);
        let r = n.fma(Self::splat(2.121_944_4e-4), r);
        let mut p = Self::splat(1.987_569_1e-4);
        p = p.fma(r, Self::splat(1.398_199_9e-3));
        p = p.fma(r, Self::splat(8.333_452e-3));
        p = p.fma(r, Self::splat(4.166_579_6e-2));
        p = p.fma(r, Self::splat(1.666_666_5e-1));
        p = p.fma(r, Self::splat(0.5));
        let y = p.mul(r.mul(r)).add(r).add(Self::splat(1.0));
        y.scale_pow2(n)
    }

    /// erf(x) for x ≥ 0, absolute error below 1.5e-7 (Abramowitz & Stegun 7.1.26).
    #[inline(always)]
    fn erf_nonneg(self) -> Self {
        let t = Self::splat(1.0).div(self.fma(Self::splat(0.327_591_1), Self::splat(1.0)));
        let mut p = Self::splat(1.061_405_4);
        p = p.fma(t, Self::splat(-1.453_152));
        p = p.fma(t, Self::splat(1.421_413_8));
        p = p.fma(t, Self::splat(-0.284_496_72));
        p = p.fma(t, Self::splat(0.254_829_6));
        let e = self.mul(self).mul(Self::splat(-1.0)).exp();
        Self::splat(1.0).sub(p.mul(t).mul(e))
    }
}

/// Instantiates an `#[inline(always)]` generic kernel `$imp::<V>` for every ISA and a
/// dispatcher `$name(isa, args…)`.
macro_rules! multiversion {
    ($vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? = $imp:ident) => {
        $vis fn $name(isa: $crate::backend::cpu::Isa, $($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f")]
            unsafe fn avx512($($arg: $ty),*) $(-> $ret)? { $imp::<core::arch::x86_64::__m512>($($arg),*) }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2($($arg: $ty),*) $(-> $ret)? { $imp::<core::arch::x86_64::__m256>($($arg),*) }
            match isa {
                // SAFETY: Isa::selected/available only report features this CPU has.
                #[cfg(target_arch = "x86_64")]
                $crate::backend::cpu::Isa::Avx512 => unsafe { avx512($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                $crate::backend::cpu::Isa::Avx2 => unsafe { avx2($($arg),*) },
                _ => $imp::<wide::f32x8>($($arg),*),
            }
        }
    };
}
pub(crate) use multiversion;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::F32s;
    use core::arch::x86_64::*;

    macro_rules! impl_x86 {
        ($v:ty, $lanes:literal, $zero:ident, $set1:ident, $load:ident, $store:ident, $add:ident, $sub:ident,
         $mul:ident, $div:ident, $fma:ident, $max:ident, $min:ident, $abs:ident, $round:ident, $scale:ident,
         $digits:ident, $i16:ident) => {
            impl F32s for $v {
                const LANES: usize = $lanes;
                #[inline(always)]
                fn zero() -> Self { unsafe { $zero() } }
                #[inline(always)]
                fn splat(v: f32) -> Self { unsafe { $set1(v) } }
                #[inline(always)]
                unsafe fn load(p: *const f32) -> Self { $load(p) }
                #[inline(always)]
                unsafe fn store(self, p: *mut f32) { $store(p, self) }
                #[inline(always)]
                fn add(self, o: Self) -> Self { unsafe { $add(self, o) } }
                #[inline(always)]
                fn sub(self, o: Self) -> Self { unsafe { $sub(self, o) } }
                #[inline(always)]
                fn mul(self, o: Self) -> Self { unsafe { $mul(self, o) } }
                #[inline(always)]
                fn div(self, o: Self) -> Self { unsafe { $div(self, o) } }
                #[inline(always)]
                fn fma(self, b: Self, c: Self) -> Self { unsafe { $fma(self, b, c) } }
                #[inline(always)]
                fn max(self, o: Self) -> Self { unsafe { $max(self, o) } }
                #[inline(always)]
                fn min(self, o: Self) -> Self { unsafe { $min(self, o) } }
                #[inline(always)]
                fn abs(self) -> Self { unsafe { $abs(self) } }
                #[inline(always)]
                fn round(self) -> Self { unsafe { $round(self) } }
                #[inline(always)]
                unsafe fn store_offset_digits(self, hi: *mut u8, lo: *mut u8) { $digits(self, hi, lo) }
                #[inline(always)]
                unsafe fn store_i16(self, p: *mut i16) { $i16(self, p) }
                #[inline(always)]
                fn scale_pow2(self, n: Self) -> Self { unsafe { $scale(self, n) } }
            }
        };
    }

    #[inline(always)]
    unsafe fn round512(x: __m512) -> __m512 {
        _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x)
    }
    #[inline(always)]
    unsafe fn round256(x: __m256) -> __m256 {
        _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x)
    }
    #[inline(always)]
    unsafe fn offset_digits512(x: __m512, hi: *mut u8, lo: *mut u8) {
        let u = _mm512_add_epi32(_mm512_cvtps_epi32(x), _mm512_set1_epi32(32896));
        _mm_storeu_si128(lo as *mut __m128i, _mm512_cvtepi32_epi8(u));
        _mm_storeu_si128(hi as *mut __m128i, _mm512_cvtepi32_epi8(_mm512_srli_epi32::<8>(u)));
    }
    #[inline(always)]
    unsafe fn offset_digits256(x: __m256, hi: *mut u8, lo: *mut u8) {
        let u = _mm256_add_epi32(_mm256_cvtps_epi32(x), _mm256_set1_epi32(32896));
        // Byte 0 (low) and byte 1 (high) of each i32 to the bottom quadword of its 128-bit
        // half, then the two halves' quadwords together.
        let pick = _mm256_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12, 1, 5, 9, 13, -1, -1, -1, -1, -1, -1, -1, -1);
        let bytes = _mm256_shuffle_epi8(u, pick);
        // Dwords: [lo 0..4, hi 0..4, _, _ | lo 4..8, hi 4..8, _, _] -> lo 0..8 then hi 0..8.
        let joined = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 0, 0, 0, 0));
        let halves = _mm256_castsi256_si128(joined);
        _mm_storel_epi64(lo as *mut __m128i, halves);
        _mm_storel_epi64(hi as *mut __m128i, _mm_unpackhi_epi64(halves, halves));
    }
    #[inline(always)]
    unsafe fn i16_512(x: __m512, p: *mut i16) {
        _mm256_storeu_si256(p as *mut __m256i, _mm512_cvtepi32_epi16(_mm512_cvtps_epi32(x)));
    }
    #[inline(always)]
    unsafe fn i16_256(x: __m256, p: *mut i16) {
        // packs works per 128-bit half: [a0..3 a0..3 | a4..7 a4..7] as i16; quadwords 0 and 2.
        let i = _mm256_cvtps_epi32(x);
        let packed = _mm256_permute4x64_epi64::<0b1000>(_mm256_packs_epi32(i, i));
        _mm_storeu_si128(p as *mut __m128i, _mm256_castsi256_si128(packed));
    }
    // |x| by clearing the sign bit. On 512-bit vectors with integer AND: the float form
    // (_mm512_and_ps) is AVX512DQ, which the avx512 kernels do not require.
    #[inline(always)]
    unsafe fn abs512(x: __m512) -> __m512 {
        _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(0x7fff_ffff)))
    }
    #[inline(always)]
    unsafe fn abs256(x: __m256) -> __m256 {
        _mm256_and_ps(x, _mm256_set1_ps(f32::from_bits(0x7fff_ffff)))
    }
    #[inline(always)]
    unsafe fn scale256(x: __m256, n: __m256) -> __m256 {
        // 2^n built in the exponent field.
        let bits = _mm256_slli_epi32::<23>(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)));
        _mm256_mul_ps(x, _mm256_castsi256_ps(bits))
    }

    impl_x86!(__m512, 16, _mm512_setzero_ps, _mm512_set1_ps, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_add_ps, _mm512_sub_ps,
        _mm512_mul_ps, _mm512_div_ps, _mm512_fmadd_ps, _mm512_max_ps, _mm512_min_ps, abs512, round512, _mm512_scalef_ps, offset_digits512, i16_512);
    impl_x86!(__m256, 8, _mm256_setzero_ps, _mm256_set1_ps, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_add_ps, _mm256_sub_ps,
        _mm256_mul_ps, _mm256_div_ps, _mm256_fmadd_ps, _mm256_max_ps, _mm256_min_ps, abs256, round256, scale256, offset_digits256, i16_256);
}

impl F32s for f32x8 {
    const LANES: usize = 8;
    fn zero() -> Self {
        f32x8::ZERO
    }
    fn splat(v: f32) -> Self {
        f32x8::splat(v)
    }
    unsafe fn load(p: *const f32) -> Self {
        f32x8::from(std::ptr::read_unaligned(p as *const [f32; 8]))
    }
    unsafe fn store(self, p: *mut f32) {
        std::ptr::write_unaligned(p as *mut [f32; 8], self.to_array())
    }
    fn add(self, o: Self) -> Self {
        self + o
    }
    fn sub(self, o: Self) -> Self {
        self - o
    }
    fn mul(self, o: Self) -> Self {
        self * o
    }
    fn div(self, o: Self) -> Self {
        self / o
    }
    fn fma(self, b: Self, c: Self) -> Self {
        self.mul_add(b, c)
    }
    fn max(self, o: Self) -> Self {
        f32x8::max(self, o)
    }
    fn min(self, o: Self) -> Self {
        f32x8::min(self, o)
    }
    fn abs(self) -> Self {
        f32x8::abs(self)
    }
    fn round(self) -> Self {
        f32x8::from(self.to_array().map(|v| v.round_ties_even()))
    }
    unsafe fn store_offset_digits(self, hi: *mut u8, lo: *mut u8) {
        for (i, v) in self.to_array().into_iter().enumerate() {
            let u = (v as i32 + 32896) as u16;
            *hi.add(i) = (u >> 8) as u8;
            *lo.add(i) = u as u8;
        }
    }
    unsafe fn store_i16(self, p: *mut i16) {
        for (i, v) in self.to_array().into_iter().enumerate() {
            p.add(i).write_unaligned(v as i16);
        }
    }
    fn scale_pow2(self, n: Self) -> Self {
        let (x, n) = (self.to_array(), n.to_array());
        f32x8::from(std::array::from_fn::<f32, 8, _>(|i| x[i] * (n[i] as i32 as f32).exp2()))
    }
}

// ---- slice helpers used by several op families -------------------------------------------

/// Σ xs, lanes then tail.
#[inline(always)]
pub fn sum<V: F32s>(xs: &[f32]) -> f32 {
    let mut acc = V::zero();
    let chunks = xs.len() / V::LANES;
    for c in 0..chunks {
        acc = acc.add(unsafe { V::load(xs.as_ptr().add(c * V::LANES)) });
    }
    xs[chunks * V::LANES..].iter().fold(acc.reduce_add(), |s, v| s + v)
}

/// Largest element (−∞ for an empty slice).
#[inline(always)]
pub fn max<V: F32s>(xs: &[f32]) -> f32 {
    let mut acc = V::splat(f32::NEG_INFINITY);
    let chunks = xs.len() / V::LANES;
    for c in 0..chunks {
        acc = acc.max(unsafe { V::load(xs.as_ptr().add(c * V::LANES)) });
    }
    xs[chunks * V::LANES..].iter().fold(acc.reduce_max(), |s, v| s.max(*v))
}

/// A lane-wise function, as a type so kernels call it statically (a closure or fn pointer
/// would not inherit the caller's target features, and its intrinsics would not inline).
pub trait Lanewise {
    fn apply<V: F32s>(x: V) -> V;
}

/// Applies `F` to every element; the tail goes through a zero-padded vector, so every element
/// sees exactly the same arithmetic.
#[inline(always)]
pub fn map_inplace<V: F32s, F: Lanewise>(xs: &mut [f32]) {
    let chunks = xs.len() / V::LANES;
    for c in 0..chunks {
        unsafe {
            let p = xs.as_mut_ptr().add(c * V::LANES);
            F::apply(V::load(p)).store(p);
        }
    }
    let tail = &mut xs[chunks * V::LANES..];
    if !tail.is_empty() {
        let mut buf = [0.0f32; 16];
        buf[..tail.len()].copy_from_slice(tail);
        unsafe { F::apply(V::load(buf.as_ptr())).store(buf.as_mut_ptr()) };
        let n = tail.len();
        tail.copy_from_slice(&buf[..n]);
    }
}
