//! Reduced-precision GEMM (bge.precision = bf16): y = act(x·Wᵀ + b) with W and x rounded to
//! bfloat16 and products accumulated in f32 by AVX512-BF16's vdpbf16ps (two multiply-adds per
//! f32 lane per instruction: twice the f32 FMA rate). Must match `reference::linear` within
//! bf16 rounding (inputs carry 8 significant bits).
//!
//! Packing: panels of 32 columns; for each k pair (2p, 2p+1) a panel holds 64 bf16,
//! [w[c][2p], w[c][2p+1]] for c = 0..32, so one 512-bit load gives 16 columns' pairs and a
//! broadcast 32-bit (x[2p], x[2p+1]) pair multiplies all of them. k is padded to even with zeros.
//! As in the f32 GEMM, every output is one fixed chain over k, whatever the batch or threads.
//!
//! AMX (Sapphire Rapids and later, where Linux grants the tile state): the same panels read as
//! tiles. A pair row of a panel is 16 columns' pairs per 64 bytes, exactly a row of the B tile
//! tdpbf16ps wants, so one tile is 16 pairs (32 k) × 16 columns at a stride of 128 bytes; an A
//! tile is 16 tokens × 32 k of the bf16 input. Unlike the int8 kernel (whose per-group scales
//! force a store of the sums every 64 inputs), the f32 sums stay in the tiles over all of k and
//! are stored once: two token tiles × two column tiles, four tdpbf16ps per four tile loads. k is
//! padded to a multiple of 32 for it. Each output element is computed from its own token row
//! and column alone, so the result is still independent of the batch and the threads.
use half::bf16;
use rayon::prelude::*;

use super::activation::activate_inplace;
use super::amx;
use super::gemm::{copy_row, for_each_task, Isa};
use super::SendPtr;
use crate::config::Activation;

/// Rows of the AVX512-BF16 register tile.
const MR: usize = 8;
/// Columns per panel.
const NR: usize = 32;
/// Tokens per AMX kernel call: two tiles of 16.
const AMX_TOKENS: usize = 2 * amx::ROWS;

/// Whether this CPU has AVX512-BF16.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The bf16 kernel family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bf16Kernel {
    /// AMX-BF16 tiles (tdpbf16ps), f32 sums kept in tiles over all of k.
    Amx,
    /// AVX512-BF16 vdpbf16ps on an 8 × 32 register tile.
    Avx512,
}

impl Bf16Kernel {
    /// Every bf16 kernel this CPU runs (none without AVX512-BF16; tests check each).
    pub fn available() -> Vec<Bf16Kernel> {
        match available() {
            false => vec![],
            true if amx::bf16_granted() => vec![Bf16Kernel::Avx512, Bf16Kernel::Amx],
            true => vec![Bf16Kernel::Avx512],
        }
    }

    /// The fastest of [`Bf16Kernel::available`].
    pub fn best() -> Option<Bf16Kernel> {
        Bf16Kernel::available().last().copied()
    }

    pub fn name(self) -> &'static str {
        match self {
            Bf16Kernel::Amx => "amx",
            Bf16Kernel::Avx512 => "avx512bf16",
        }
    }

    /// Tokens one kernel call computes (the bf16 input is padded to a multiple of them).
    fn tokens_per_call(self) -> usize {
        match self {
            Bf16Kernel::Amx => AMX_TOKENS,
            Bf16Kernel::Avx512 => MR,
        }
    }

    /// k padded to what the kernel steps by: pairs, or AMX tiles of 32.
    fn padded_k(self, k: usize) -> usize {
        match self {
            Bf16Kernel::Amx => k.next_multiple_of(32),
            Bf16Kernel::Avx512 => k.next_multiple_of(2),
        }
    }
}

pub struct PackedBf16 {
    pub kernel: Bf16Kernel,
    pub n: usize,
    pub k: usize,
    /// k padded for the kernel (zeros).
    kp: usize,
    panels: Vec<u16>,
    bias: Vec<f32>,
}

impl PackedBf16 {
    /// Packs for the best kernel this CPU runs (it must have AVX512-BF16).
    pub fn pack(weight: &[f32], bias: &[f32], n: usize, k: usize) -> PackedBf16 {
        PackedBf16::pack_for(Bf16Kernel::best().expect("bf16 GEMM on a CPU without AVX512-BF16"), weight, bias, n, k)
    }

    pub fn pack_for(kernel: Bf16Kernel, weight: &[f32], bias: &[f32], n: usize, k: usize) -> PackedBf16 {
        assert_eq!(weight.len(), n * k);
        let kp = kernel.padded_k(k);
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
        PackedBf16 { kernel, n, k, kp, panels, bias: padded_bias }
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

    /// 16·T tokens × 32 columns with tdpbf16ps into `tile` (rows of 32 f32), bias added: `a`
    /// token rows of bf16 (stride `lda` elements; 16·T rows readable), `b` a packed panel of
    /// `pairs` pairs (a multiple of 16). Tiles: tmm0/tmm1 tokens 0..16 / 16..32, tmm2/tmm3 the
    /// panel's columns 0..16 / 16..32, tmm4..tmm7 the sums (token tile × column tile). Needs an
    /// [`amx::TileSession`](super::amx::TileSession) on this thread.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn amx_tokens<const T: usize>(pairs: usize, stream: bool, a: *const u16, lda: usize, b: *const u16, bias: *const f32, tile: *mut f32) {
        core::arch::asm!("tilezero tmm4", "tilezero tmm5", "tilezero tmm6", "tilezero tmm7", options(nostack, nomem));
        for p in (0..pairs).step_by(16) {
            let bp = b.add(p * 64);
            if stream {
                super::super::gemm::x86::prefetch_next_page(bp as *const i8, 0..32);
            }
            if T == 2 {
                core::arch::asm!(
                    "tileloadd tmm0, [{a0} + {a_stride}*1]",
                    "tileloadd tmm1, [{a1} + {a_stride}*1]",
                    "tileloadd tmm2, [{b0} + {b_stride}*1]",
                    "tileloadd tmm3, [{b1} + {b_stride}*1]",
                    "tdpbf16ps tmm4, tmm0, tmm2",
                    "tdpbf16ps tmm5, tmm0, tmm3",
                    "tdpbf16ps tmm6, tmm1, tmm2",
                    "tdpbf16ps tmm7, tmm1, tmm3",
                    a0 = in(reg) a.add(2 * p),
                    a1 = in(reg) a.add(16 * lda + 2 * p),
                    a_stride = in(reg) 2 * lda,
                    b0 = in(reg) bp,
                    b1 = in(reg) bp.add(32),
                    b_stride = in(reg) 128usize,
                    options(nostack, readonly),
                );
            } else {
                core::arch::asm!(
                    "tileloadd tmm0, [{a0} + {a_stride}*1]",
                    "tileloadd tmm2, [{b0} + {b_stride}*1]",
                    "tileloadd tmm3, [{b1} + {b_stride}*1]",
                    "tdpbf16ps tmm4, tmm0, tmm2",
                    "tdpbf16ps tmm5, tmm0, tmm3",
                    a0 = in(reg) a.add(2 * p),
                    a_stride = in(reg) 2 * lda,
                    b0 = in(reg) bp,
                    b1 = in(reg) bp.add(32),
                    b_stride = in(reg) 128usize,
                    options(nostack, readonly),
                );
            }
        }
        core::arch::asm!(
            "tilestored [{c0} + {c_stride}*1], tmm4",
            "tilestored [{c1} + {c_stride}*1], tmm5",
            c0 = in(reg) tile,
            c1 = in(reg) tile.add(16),
            c_stride = in(reg) 4 * super::NR,
            options(nostack),
        );
        if T == 2 {
            core::arch::asm!(
                "tilestored [{c0} + {c_stride}*1], tmm6",
                "tilestored [{c1} + {c_stride}*1], tmm7",
                c0 = in(reg) tile.add(16 * super::NR),
                c1 = in(reg) tile.add(16 * super::NR + 16),
                c_stride = in(reg) 4 * super::NR,
                options(nostack),
            );
        }
        for t in 0..16 * T {
            for v in 0..2 {
                let at = tile.add(t * super::NR + 16 * v);
                _mm512_storeu_ps(at, _mm512_add_ps(_mm512_loadu_ps(at), _mm512_loadu_ps(bias.add(16 * v))));
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
    let mr = w.kernel.tokens_per_call();
    // x in bf16, rows padded to kp and the row count to a whole number of kernel calls.
    let rows_padded = m.next_multiple_of(mr);
    // This thread's buffer from earlier calls (taken out, not borrowed, while the pool runs: a
    // thread waiting for its tasks may run another caller's GEMM, which then makes its own).
    let mut xb = X_BF16.with(|s| std::mem::take(&mut *s.borrow_mut()));
    xb.resize(rows_padded * kp, 0);
    // Every element is written: padding rows and columns as zeros, which the kernels read.
    let convert = |(row, dst): (usize, &mut [u16])| {
        if row < m {
            // SAFETY: available() checked the CPU features.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                x86::to_bf16(&x[row * k..(row + 1) * k], dst)
            }
            dst[k..].fill(0);
        } else {
            dst.fill(0);
        }
    };
    if super::inline(pool) {
        xb.chunks_mut(kp).enumerate().for_each(convert);
    } else {
        super::in_pool(pool, || xb.par_chunks_mut(kp).enumerate().for_each(convert));
    }

    let out = SendPtr(y.as_mut_ptr());
    for_each_task(pool, m, n.div_ceil(NR), mr, |rows, panels| {
        // SAFETY: PackedBf16 holds an Amx packing only where Bf16Kernel::available() listed it.
        let _tiles = unsafe { amx::TileSession::start(w.kernel == Bf16Kernel::Amx) };
        let mut tile = [0.0f32; AMX_TOKENS * NR];
        for panel in panels {
            let col0 = panel * NR;
            let cols = NR.min(n - col0);
            for row0 in rows.clone().step_by(mr) {
                let tokens = mr.min(rows.end - row0);
                // SAFETY: xb has rows_padded ≥ row0 + mr rows of kp; the panel has kp/2 pairs;
                // tasks write disjoint (rows, panels) of y.
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    let (stream, a, b, bias) = (row0 == rows.start, xb[row0 * kp..].as_ptr(), w.panels[panel * kp * NR..].as_ptr(), w.bias[col0..].as_ptr());
                    match w.kernel {
                        // One token tile when the second would be only padding.
                        Bf16Kernel::Amx if tokens <= amx::ROWS => x86::amx_tokens::<1>(kp / 2, stream, a, kp, b, bias, tile.as_mut_ptr()),
                        Bf16Kernel::Amx => x86::amx_tokens::<2>(kp / 2, stream, a, kp, b, bias, tile.as_mut_ptr()),
                        Bf16Kernel::Avx512 => x86::kernel_8x32(kp / 2, stream, a, kp, b, bias, tile.as_mut_ptr()),
                    }
                }
                activate_inplace(Isa::Avx512, act, &mut tile[..tokens * NR]);
                for i in 0..tokens {
                    // SAFETY: as above.
                    unsafe { copy_row(tile[i * NR..].as_ptr(), out.get().add((row0 + i) * n + col0), cols) };
                }
            }
        }
    });
    X_BF16.with(|s| *s.borrow_mut() = xb);
}

thread_local! {
    /// Per-thread bf16 input buffer, reused so steady-state calls allocate nothing.
    static X_BF16: std::cell::RefCell<Vec<u16>> = const { std::cell::RefCell::new(Vec::new()) };
}
