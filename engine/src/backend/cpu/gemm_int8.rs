//! 8-bit GEMM (bge.precision = int8): y = act(x·Wᵀ + b) with W quantized symmetrically per output
//! channel at load and x per row (token) at run time, products summed exactly in i32:
//!   y[r, c] = (Σ_k qx[r, k]·qw[c, k]) as f32 · (sx[r]·sw[c]) + b[c],
//! qw = round(w / sw), sw = max|w[c, ·]| / 127; qx likewise per row; both in [-127, 127].
//!
//! Integer sums do not depend on order, so every kernel (AVX-512 VNNI, AVX2, portable) and the
//! scalar [`reference_accumulate`] give the same i32, and one dequantization formula
//! ([`dequantize`]: convert, multiply, add; never fused) makes the f32 outputs bitwise equal too.
//! For the same reason a row's result never depends on its batch or the thread count.
//!
//! Packing: panels of NR = 32 columns; for each group of 4 k (k zero-padded to a multiple of 4)
//! a panel holds 128 bytes, [qw[c][4g..4g+4]] for c = 0..32: one 32-bit lane per column, the
//! layout vpdpbusd wants. A 4-byte group of one x row is broadcast to every lane.
//!
//! The kernels, and why each is exact (never saturating):
//! - VNNI: vpdpbusd multiplies u8 by i8 and adds four products into i32 without saturation. x is
//!   stored offset by +128 as u8, so the sum carries an extra 128·Σ_k qw[c, k], removed with a
//!   per-column compensation term computed at pack time.
//! - AVX2: vpmaddubsw (u8×i8, pairs summed into i16) saturates for u8 ≥ 128, so x stays signed:
//!   |x| as the u8 operand and w with x's sign moved onto it (vpsignb) as the i8 one; a pair is
//!   then at most 2·127·127 = 32258 < 32767. vpmaddwd by 1 widens pairs to i32.
//! - portable: plain integer loops over the packed panel.
use rayon::prelude::*;

use super::activation::activate_inplace;
use super::gemm::{for_each_task, Isa};
use super::SendPtr;
use crate::config::Activation;

/// Columns per panel.
const NR: usize = 32;
/// Most rows one kernel call handles (fewer rows use a narrower instance, not padding).
const MR: usize = 4;
/// The largest magnitude of a quantized value (symmetric: -128 is never used).
const QMAX: f32 = 127.0;

/// The int8 kernel family; chosen from the f32 [`Isa`] and the CPU's features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Int8Kernel {
    Avx512Vnni,
    Avx2,
    Portable,
}

impl Int8Kernel {
    /// The kernel the f32 kernel family `isa` pairs with: VNNI under avx512 where the CPU has
    /// AVX512-VNNI (and BW, which vpdpbusd on zmm needs), else AVX2 under avx512 or avx2.
    pub fn for_isa(isa: Isa) -> Int8Kernel {
        match isa {
            Isa::Avx512 if vnni_available() => Int8Kernel::Avx512Vnni,
            Isa::Avx512 | Isa::Avx2 => Int8Kernel::Avx2,
            Isa::Portable => Int8Kernel::Portable,
        }
    }

    /// Every int8 kernel this CPU runs (tests check each against the reference).
    pub fn available() -> Vec<Int8Kernel> {
        let mut v = vec![Int8Kernel::Portable];
        if Isa::available().contains(&Isa::Avx2) {
            v.push(Int8Kernel::Avx2);
        }
        if vnni_available() {
            v.push(Int8Kernel::Avx512Vnni);
        }
        v
    }

    pub fn name(self) -> &'static str {
        match self {
            Int8Kernel::Avx512Vnni => "avx512vnni",
            Int8Kernel::Avx2 => "avx2",
            Int8Kernel::Portable => "portable",
        }
    }

    /// Whether x rows are stored offset by +128 (as u8) rather than as i8.
    fn offset_x(self) -> bool {
        self == Int8Kernel::Avx512Vnni
    }
}

/// Whether this CPU has AVX512-VNNI (with the F and BW subsets the kernel also uses).
pub fn vnni_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bw") && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The scale that maps a row of largest magnitude `amax` onto [-127, 127] (0 for a zero row).
fn scale_of(amax: f32) -> f32 {
    amax / QMAX
}

/// Quantizes `row` with its own scale into `out` (same length); returns the scale.
pub fn quantize_row(row: &[f32], out: &mut [i8]) -> f32 {
    let amax = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if amax == 0.0 || !amax.is_finite() {
        // A zero row is exact at any scale; a non-finite one cannot be quantized, and a NaN
        // scale makes its outputs NaN rather than silently wrong.
        out.fill(0);
        return if amax == 0.0 { 0.0 } else { f32::NAN };
    }
    let inv = QMAX / amax;
    for (q, v) in out.iter_mut().zip(row) {
        *q = (v * inv).round_ties_even().clamp(-QMAX, QMAX) as i8;
    }
    scale_of(amax)
}

/// A matrix quantized per row: `q` is rows × cols, row-major; `scales[r]` dequantizes row r.
pub struct QuantizedRows {
    pub rows: usize,
    pub cols: usize,
    pub q: Vec<i8>,
    pub scales: Vec<f32>,
}

/// Per-row quantization of a rows × cols matrix (weights per output channel, x per token).
pub fn quantize_rows(m: &[f32], rows: usize, cols: usize) -> QuantizedRows {
    assert_eq!(m.len(), rows * cols);
    let mut q = vec![0i8; rows * cols];
    let scales = if cols == 0 {
        vec![0.0; rows]
    } else {
        m.chunks_exact(cols).zip(q.chunks_exact_mut(cols)).map(|(r, o)| quantize_row(r, o)).collect()
    };
    QuantizedRows { rows, cols, q, scales }
}

/// The exact i32 products qx · qwᵀ (rows of x × rows of w), by the definition: the oracle.
pub fn reference_accumulate(x: &QuantizedRows, w: &QuantizedRows) -> Vec<i32> {
    assert_eq!(x.cols, w.cols);
    let k = x.cols;
    let mut acc = vec![0i32; x.rows * w.rows];
    for r in 0..x.rows {
        for c in 0..w.rows {
            acc[r * w.rows + c] = (0..k).map(|p| x.q[r * k + p] as i32 * w.q[c * k + p] as i32).sum();
        }
    }
    acc
}

/// The one dequantization formula every path uses (separate multiply and add, so SIMD and
/// scalar round identically).
#[inline(always)]
pub fn dequantize(acc: i32, x_scale: f32, w_scale: f32, bias: f32) -> f32 {
    acc as f32 * (x_scale * w_scale) + bias
}

pub struct PackedInt8 {
    pub kernel: Int8Kernel,
    pub n: usize,
    pub k: usize,
    /// k rounded up to a multiple of 4.
    kp: usize,
    panels: Vec<i8>,
    /// Per-column weight scales, bias and 128·Σ_k qw (VNNI's offset correction), padded to
    /// whole panels.
    scales: Vec<f32>,
    bias: Vec<f32>,
    compensation: Vec<i32>,
}

impl PackedInt8 {
    /// Quantizes `weight` ([n, k], PyTorch layout) per output channel and packs it for `kernel`.
    pub fn pack(kernel: Int8Kernel, weight: &[f32], bias: &[f32], n: usize, k: usize) -> PackedInt8 {
        Self::pack_quantized(kernel, &quantize_rows(weight, n, k), bias)
    }

    /// Packs weights already quantized per row (tests feed the same ones to the reference).
    pub fn pack_quantized(kernel: Int8Kernel, w: &QuantizedRows, bias: &[f32]) -> PackedInt8 {
        let (n, k) = (w.rows, w.cols);
        assert_eq!(bias.len(), n);
        let kp = k.next_multiple_of(4);
        let num_panels = n.div_ceil(NR);
        let mut panels = vec![0i8; num_panels * kp * NR];
        let mut compensation = vec![0i32; num_panels * NR];
        for col in 0..n {
            let (panel, lane) = (col / NR, col % NR);
            for p in 0..k {
                panels[panel * kp * NR + (p / 4) * 4 * NR + lane * 4 + p % 4] = w.q[col * k + p];
            }
            compensation[col] = 128 * w.q[col * k..(col + 1) * k].iter().map(|&v| v as i32).sum::<i32>();
        }
        let pad = |v: &[f32]| {
            let mut out = vec![0.0f32; num_panels * NR];
            out[..n].copy_from_slice(v);
            out
        };
        PackedInt8 { kernel, n, k, kp, panels, scales: pad(&w.scales), bias: pad(bias), compensation }
    }

    /// Bytes of packed weights (bge_models() and benchmarks compare footprints).
    pub fn weight_bytes(&self) -> usize {
        self.panels.len()
    }
}

/// Computes the i32 sums of `rows` (≤ MR) x rows at `a` (stride `lda` bytes, kp readable each)
/// against one packed panel `b`, into `tile` (row stride NR).
type Kernel = unsafe fn(rows: usize, kp: usize, a: *const u8, lda: usize, b: *const i8, tile: *mut i32);

/// Portable kernel: integer loops over the packed layout.
unsafe fn portable_kernel(rows: usize, kp: usize, a: *const u8, lda: usize, b: *const i8, tile: *mut i32) {
    for i in 0..rows {
        let mut acc = [0i32; NR];
        for g in 0..kp / 4 {
            let bg = b.add(g * 4 * NR);
            for (lane, s) in acc.iter_mut().enumerate() {
                for j in 0..4 {
                    *s += *(a.add(i * lda + 4 * g + j) as *const i8) as i32 * *bg.add(lane * 4 + j) as i32;
                }
            }
        }
        std::ptr::copy_nonoverlapping(acc.as_ptr(), tile.add(i * NR), NR);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{MR, NR};
    use core::arch::x86_64::*;

    /// R rows × 32 columns with vpdpbusd; x rows are u8 (offset +128).
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn vnni_rows<const R: usize>(kp: usize, a: *const u8, lda: usize, b: *const i8, tile: *mut i32) {
        let mut acc = [[_mm512_setzero_si512(); 2]; R];
        for g in 0..kp / 4 {
            let bg = b.add(g * 4 * NR);
            let b0 = _mm512_loadu_si512(bg as *const __m512i);
            let b1 = _mm512_loadu_si512(bg.add(64) as *const __m512i);
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm512_set1_epi32((a.add(i * lda + 4 * g) as *const i32).read_unaligned());
                row[0] = _mm512_dpbusd_epi32(row[0], ai, b0);
                row[1] = _mm512_dpbusd_epi32(row[1], ai, b1);
            }
        }
        for (i, row) in acc.iter().enumerate() {
            _mm512_storeu_si512(tile.add(i * NR) as *mut __m512i, row[0]);
            _mm512_storeu_si512(tile.add(i * NR + 16) as *mut __m512i, row[1]);
        }
    }

    pub unsafe fn vnni(rows: usize, kp: usize, a: *const u8, lda: usize, b: *const i8, tile: *mut i32) {
        const _: () = assert!(MR == 4);
        match rows {
            1 => vnni_rows::<1>(kp, a, lda, b, tile),
            2 => vnni_rows::<2>(kp, a, lda, b, tile),
            3 => vnni_rows::<3>(kp, a, lda, b, tile),
            _ => vnni_rows::<4>(kp, a, lda, b, tile),
        }
    }

    /// R rows × 16 columns (half a panel, `half` 0 or 1) with the sign trick; x rows are i8.
    #[target_feature(enable = "avx2")]
    unsafe fn avx2_rows<const R: usize>(kp: usize, a: *const u8, lda: usize, b: *const i8, half: usize, tile: *mut i32) {
        let ones = _mm256_set1_epi16(1);
        let mut acc = [[_mm256_setzero_si256(); 2]; R];
        for g in 0..kp / 4 {
            let bg = b.add(g * 4 * NR + half * 64);
            let b0 = _mm256_loadu_si256(bg as *const __m256i);
            let b1 = _mm256_loadu_si256(bg.add(32) as *const __m256i);
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm256_set1_epi32((a.add(i * lda + 4 * g) as *const i32).read_unaligned());
                let abs_a = _mm256_sign_epi8(ai, ai);
                let p0 = _mm256_maddubs_epi16(abs_a, _mm256_sign_epi8(b0, ai));
                let p1 = _mm256_maddubs_epi16(abs_a, _mm256_sign_epi8(b1, ai));
                row[0] = _mm256_add_epi32(row[0], _mm256_madd_epi16(p0, ones));
                row[1] = _mm256_add_epi32(row[1], _mm256_madd_epi16(p1, ones));
            }
        }
        for (i, row) in acc.iter().enumerate() {
            _mm256_storeu_si256(tile.add(i * NR + half * 16) as *mut __m256i, row[0]);
            _mm256_storeu_si256(tile.add(i * NR + half * 16 + 8) as *mut __m256i, row[1]);
        }
    }

    pub unsafe fn avx2(rows: usize, kp: usize, a: *const u8, lda: usize, b: *const i8, tile: *mut i32) {
        for half in 0..2 {
            match rows {
                1 => avx2_rows::<1>(kp, a, lda, b, half, tile),
                2 => avx2_rows::<2>(kp, a, lda, b, half, tile),
                3 => avx2_rows::<3>(kp, a, lda, b, half, tile),
                _ => avx2_rows::<4>(kp, a, lda, b, half, tile),
            }
        }
    }
}

fn kernel_fn(kernel: Int8Kernel) -> Kernel {
    match kernel {
        #[cfg(target_arch = "x86_64")]
        Int8Kernel::Avx512Vnni => {
            assert!(vnni_available(), "VNNI int8 kernel on a CPU without AVX512-VNNI");
            x86::vnni
        }
        #[cfg(target_arch = "x86_64")]
        Int8Kernel::Avx2 => {
            assert!(Isa::available().contains(&Isa::Avx2), "AVX2 int8 kernel on a CPU without AVX2");
            x86::avx2
        }
        _ => portable_kernel,
    }
}

/// Quantized x rows as the kernels read them: `bytes` holds rows of `kp` (i8, or u8 offset by
/// +128 for VNNI; padding quantizes 0), `scales` one per row. Kept per thread and reused, so
/// steady-state calls allocate nothing.
#[derive(Default)]
struct XScratch {
    bytes: Vec<u8>,
    scales: Vec<f32>,
}

thread_local! {
    static X_SCRATCH: std::cell::RefCell<XScratch> = std::cell::RefCell::new(XScratch::default());
}

/// Quantizes row `x` into `dst` (kp bytes) for `kernel`; returns the scale.
fn quantize_x_row(kernel: Int8Kernel, x: &[f32], dst: &mut [u8]) -> f32 {
    let k = x.len();
    // SAFETY: i8 and u8 have the same size and alignment.
    let q: &mut [i8] = unsafe { std::slice::from_raw_parts_mut(dst.as_mut_ptr() as *mut i8, dst.len()) };
    let scale = quantize_row(x, &mut q[..k]);
    q[k..].fill(0);
    if kernel.offset_x() {
        for b in dst.iter_mut() {
            *b ^= 0x80; // i8 v → u8 v + 128
        }
    }
    scale
}

/// y = act(x·Wᵀ + b) for m rows; see the module comment. Activations use the f32 kernels of `isa`.
pub fn gemm_int8(pool: &rayon::ThreadPool, isa: Isa, x: &[f32], m: usize, w: &PackedInt8, act: Option<Activation>, y: &mut [f32]) {
    let (k, kp, n) = (w.k, w.kp, w.n);
    assert_eq!(x.len(), m * k);
    assert_eq!(y.len(), m * n);
    if m == 0 {
        return;
    }
    X_SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        let XScratch { bytes, scales } = &mut *scratch;
        bytes.clear();
        bytes.resize(m * kp, 0);
        scales.clear();
        scales.resize(m, 0.0);
        let quantize = |((row, dst), scale): ((usize, &mut [u8]), &mut f32)| {
            *scale = quantize_x_row(w.kernel, &x[row * k..(row + 1) * k], dst);
        };
        // Quantizing is O(m·k) against the GEMM's O(m·k·n): split it only when large.
        if super::inline(pool) || m * k < (1 << 16) || k == 0 {
            bytes.chunks_mut(kp.max(1)).enumerate().zip(scales.iter_mut()).for_each(quantize);
        } else {
            pool.install(|| bytes.par_chunks_mut(kp).enumerate().zip(scales.par_iter_mut()).for_each(quantize));
        }
        run_quantized(pool, isa, bytes, scales, m, w, act, y);
    });
}

#[allow(clippy::too_many_arguments)]
fn run_quantized(pool: &rayon::ThreadPool, isa: Isa, xq: &[u8], x_scales: &[f32], m: usize, w: &PackedInt8, act: Option<Activation>, y: &mut [f32]) {
    let (kp, n) = (w.kp, w.n);
    let kernel = kernel_fn(w.kernel);
    let out = SendPtr(y.as_mut_ptr());
    for_each_task(pool, m, n.div_ceil(NR), MR, |rows, panels| {
        let mut acc = [0i32; MR * NR];
        let mut tile = [0.0f32; MR * NR];
        for panel in panels {
            let col0 = panel * NR;
            let cols = NR.min(n - col0);
            let comp = &w.compensation[col0..col0 + NR];
            let (ws, bias) = (&w.scales[col0..col0 + NR], &w.bias[col0..col0 + NR]);
            for row0 in rows.clone().step_by(MR) {
                let r = MR.min(rows.end - row0);
                // SAFETY: xq has m rows of kp bytes and row0 + r ≤ m; the panel has kp/4 groups
                // of 4·NR bytes; acc has room for MR rows of NR.
                unsafe { kernel(r, kp, xq[row0 * kp..].as_ptr(), kp, w.panels[panel * kp * NR..].as_ptr(), acc.as_mut_ptr()) };
                for i in 0..r {
                    let xs = x_scales[row0 + i];
                    for c in 0..NR {
                        let s = if w.kernel.offset_x() { acc[i * NR + c] - comp[c] } else { acc[i * NR + c] };
                        tile[i * NR + c] = dequantize(s, xs, ws[c], bias[c]);
                    }
                }
                activate_inplace(isa, act, &mut tile[..r * NR]);
                for i in 0..r {
                    // SAFETY: tasks write disjoint (rows, panels) of y, which has m rows of n.
                    let dst = unsafe { std::slice::from_raw_parts_mut(out.get().add((row0 + i) * n + col0), cols) };
                    dst.copy_from_slice(&tile[i * NR..i * NR + cols]);
                }
            }
        }
    });
}

/// The i32 sums (offset correction applied) the kernel computes for x: what the tests compare
/// with [`reference_accumulate`] exactly.
pub fn kernel_accumulate(x: &[f32], m: usize, w: &PackedInt8) -> Vec<i32> {
    let (k, kp, n) = (w.k, w.kp, w.n);
    assert_eq!(x.len(), m * k);
    let mut xq = vec![0u8; m * kp];
    for r in 0..m {
        quantize_x_row(w.kernel, &x[r * k..(r + 1) * k], &mut xq[r * kp..(r + 1) * kp]);
    }
    let kernel = kernel_fn(w.kernel);
    let mut out = vec![0i32; m * n];
    let mut acc = [0i32; MR * NR];
    for panel in 0..n.div_ceil(NR) {
        let col0 = panel * NR;
        for row0 in (0..m).step_by(MR) {
            let r = MR.min(m - row0);
            // SAFETY: as in run_quantized.
            unsafe { kernel(r, kp, xq[row0 * kp..].as_ptr(), kp, w.panels[panel * kp * NR..].as_ptr(), acc.as_mut_ptr()) };
            for i in 0..r {
                for c in col0..n.min(col0 + NR) {
                    let s = acc[i * NR + c - col0];
                    out[(row0 + i) * n + c] = if w.kernel.offset_x() { s - w.compensation[c] } else { s };
                }
            }
        }
    }
    out
}
