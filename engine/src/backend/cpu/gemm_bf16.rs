//! Reduced-precision GEMM (bge.precision = bf16): y = act(x·Wᵀ + b) with W and x rounded to
//! bfloat16 and products accumulated in f32 by AVX512-BF16's vdpbf16ps (two multiply-adds per
//! f32 lane per instruction: twice the f32 FMA rate). Must match `reference::linear` within
//! bf16 rounding (inputs carry 8 significant bits).
//!
//! Packing: panels of 32 columns; for each k pair (2p, 2p+1) a panel holds 64 bf16,
//! [w[c][2p], w[c][2p+1]] for c = 0..32, so one 512-bit load gives 16 columns' pairs and a
//! broadcast 32-bit (x[2p], x[2p+1]) pair multiplies all of them. k is padded to even with zeros.
//! As in the f32 GEMM, every output is one fixed chain over k, whatever the batch or threads.
use half::bf16;
use rayon::prelude::*;

use super::activation::activate_inplace;
use super::gemm::{copy_row, for_each_task, Isa};
use super::SendPtr;
use crate::config::Activation;

const MR: usize = 8;
const NR: usize = 32;

/// Whether this CPU has AVX512-BF16.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

pub struct PackedBf16 {
    pub n: usize,
    pub k: usize,
    /// k rounded up to even.
    kp: usize,
    panels: Vec<u16>,
    bias: Vec<f32>,
}

impl PackedBf16 {
    pub fn pack(weight: &[f32], bias: &[f32], n: usize, k: usize) -> PackedBf16 {
        assert_eq!(weight.len(), n * k);
        let kp = k.next_multiple_of(2);
        let num_panels = n.div_ceil(NR);
        let mut panels = vec![0u16; num_panels * kp * NR];
        for col in 0..n {
            let (panel, lane) = (col / NR, col % NR);
            for kk in 0..k {
                let (pair, half_) = (kk / 2, kk % 2);
                // Within a pair: 16 columns × 2 values per 512-bit half.
                let idx = panel * kp * NR + pair * 2 * NR + (lane / 16) * 32 + (lane % 16) * 2 + half_;
                panels[idx] = bf16::from_f32(weight[col * k + kk]).to_bits();
            }
        }
        let mut padded_bias = vec![0.0f32; num_panels * NR];
        padded_bias[..n].copy_from_slice(bias);
        PackedBf16 { n, k, kp, panels, bias: padded_bias }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::x86_64::*;

    /// 8×32 tile: `a` rows of bf16 (stride `lda` elements, `pairs` pairs each), `b` a packed panel.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn kernel_8x32(pairs: usize, stream: bool, a: *const u16, lda: usize, b: *const u16, bias: *const f32, tile: *mut f32) {
        let mut acc = [[_mm512_setzero_ps(); 2]; super::MR];
        for p in 0..pairs {
            let bp = b.add(p * 64);
            if stream {
                super::super::gemm::x86::prefetch_next_page(bp as *const i8, 0..2);
            }
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(bp as *const __m512i));
            let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(bp.add(32) as *const __m512i));
            for (i, row) in acc.iter_mut().enumerate() {
                let pair = (a.add(i * lda + 2 * p) as *const i32).read_unaligned();
                let ai: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair));
                row[0] = _mm512_dpbf16_ps(row[0], ai, b0);
                row[1] = _mm512_dpbf16_ps(row[1], ai, b1);
            }
        }
        for (i, row) in acc.iter().enumerate() {
            for (v, r) in row.iter().enumerate() {
                _mm512_storeu_ps(tile.add(i * 32 + v * 16), _mm512_add_ps(*r, _mm512_loadu_ps(bias.add(v * 16))));
            }
        }
    }

    /// Rounds `src` to bf16 (nearest even) into `dst`, which is at least as long.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn to_bf16(src: &[f32], dst: &mut [u16]) {
        let full = src.len() / 16 * 16;
        for c in (0..full).step_by(16) {
            let v: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(_mm512_loadu_ps(src.as_ptr().add(c))));
            _mm256_storeu_si256(dst.as_mut_ptr().add(c) as *mut __m256i, v);
        }
        for c in full..src.len() {
            dst[c] = half::bf16::from_f32(src[c]).to_bits();
        }
    }
}

pub fn gemm_bf16(pool: &rayon::ThreadPool, x: &[f32], m: usize, w: &PackedBf16, act: Option<Activation>, y: &mut [f32]) {
    assert!(available(), "bf16 GEMM on a CPU without AVX512-BF16");
    let (k, kp, n) = (w.k, w.kp, w.n);
    assert_eq!(x.len(), m * k);
    assert_eq!(y.len(), m * n);
    if m == 0 {
        return;
    }
    // x in bf16, rows padded to kp and the row count to a whole number of MR-row tiles.
    let rows_padded = m.next_multiple_of(MR);
    let mut xb = vec![0u16; rows_padded * kp];
    let convert = |(row, dst): (usize, &mut [u16])| {
        if row < m {
            // SAFETY: available() checked the CPU features.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                x86::to_bf16(&x[row * k..(row + 1) * k], dst)
            }
        }
    };
    if super::inline(pool) {
        xb.chunks_mut(kp).enumerate().for_each(convert);
    } else {
        super::in_pool(pool, || xb.par_chunks_mut(kp).enumerate().for_each(convert));
    }

    let out = SendPtr(y.as_mut_ptr());
    for_each_task(pool, m, n.div_ceil(NR), MR, |rows, panels| {
        let mut tile = [0.0f32; MR * NR];
        for panel in panels {
            let col0 = panel * NR;
            let cols = NR.min(n - col0);
            for row0 in rows.clone().step_by(MR) {
                // SAFETY: xb has rows_padded ≥ row0 + MR rows of kp; the panel has kp/2 pairs;
                // tasks write disjoint (rows, panels) of y.
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    x86::kernel_8x32(kp / 2, row0 == rows.start, xb[row0 * kp..].as_ptr(), kp, w.panels[panel * kp * NR..].as_ptr(), w.bias[col0..].as_ptr(), tile.as_mut_ptr());
                }
                activate_inplace(Isa::Avx512, act, &mut tile);
                for i in 0..MR.min(rows.end - row0) {
                    // SAFETY: as above.
                    unsafe { copy_row(tile[i * NR..].as_ptr(), out.get().add((row0 + i) * n + col0), cols) };
                }
            }
        }
    });
}
