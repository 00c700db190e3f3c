//! 8-bit GEMM (bge.precision = int8): y = act(x·Wᵀ + b) from 8-bit integer dot products with
//! exact i32 sums. The contract every kernel meets bitwise is [`reference_gemm`]:
//!
//! - W is quantized at load per output channel and per group of G = 64 inputs, symmetrically:
//!   qw[c, k] = round(w[c, k] / sw[c, g]), sw[c, g] = max|w[c, g·G..(g+1)·G]| / 127.
//! - x is quantized at run time per token (row) to 16 bits: v[r, k] = round(x[r, k] / sx[r]),
//!   sx[r] = max|x[r, ·]| / 32512, |v| ≤ 32512 = 127·256; the 8-bit dot products (VNNI, AMX)
//!   take v as two digits, v = 256·hi + lo, hi = floor((v + 128) / 256) ∈ [-127, 127],
//!   lo ∈ [-128, 127]; the 16-bit ones (AVX2, portable) take v itself.
//! - Per group, acc[r, c, g] = Σ_{k in g} v·qw = 256·Σ hi·qw + Σ lo·qw, exact in i32
//!   (|acc| ≤ 64·32512·127 < 2³¹); then f = fma(acc as f32, sw[c, g], f) over g in order, and
//!   y = f·sx[r] + b[c] (multiply, then add).
//!
//! Why not plain per-channel weights and one 8-bit digit per token: measured on all-MiniLM-L6-v2
//! against the goldens, that gives a lowest cosine of 0.981 (per-channel weights alone 0.9965,
//! 8-bit tokens alone 0.984: BERT's hidden states have a few outlier channels that take the
//! whole 8-bit range); groups of 64 with 16-bit tokens give 0.9994, above the 0.999 bf16 meets.
//! Weight bytes stay one per weight (plus 1/16 for scales), a quarter of f32's; the second digit
//! doubles the integer work, so the arithmetic gain over f32 is smaller than 8-bit tokens would
//! give: measured on a 2-vCPU Xeon with AVX512-VNNI, a 10×384×1536 GEMM ran at 1.6–1.8× the f32
//! rate on one thread and 1.2–1.35× on two (AMX: 2.5–4×).
//!
//! Integer sums do not depend on order and the f32 steps are the same everywhere, so AMX, VNNI,
//! AVX2, portable and the reference agree bitwise, and a row never depends on its batch or threads.
//!
//! Packing: panels of NR = 32 columns; for each group of 4 k (k zero-padded to a multiple of G)
//! a panel holds 128 bytes, qw[c][4j..4j+4] for c = 0..32: one 32-bit lane per column, the
//! layout vpdpbusd wants; a 4-byte run of a digit row is broadcast to every lane.
//! - VNNI: vpdpbusd multiplies u8 by i8 and adds four products into i32 without saturation.
//!   Digits are stored offset by +128 (u8); the offset adds 257·128·Σ_{k in g} qw[c, k] to the
//!   combined group sum, removed by a per-(group, column) compensation term made at pack time.
//! - AMX (Sapphire Rapids and later, where Linux grants the process the tile state): the same
//!   offset digits and packed panels; one group is one tdpbusd step: tiles of 16 tokens × 64
//!   digits (high and low) against the group's 16 rows of 4 k × 16 columns (two per panel),
//!   four i32 sum tiles stored to memory, and the VNNI epilogue in AVX-512, pipelined one group
//!   behind the tiles. Digit rows are padded to whole tiles of 16 tokens.
//! - AVX2: vpmaddwd on the 16-bit values: a token's 4 values of one k-run, broadcast as a
//!   quadword, against 4 columns' 4-byte runs widened to i16 (vpmovsxbw) give each column two
//!   pair sums in adjacent i32 lanes (|pair| ≤ 2·32512·127, exact), added up over the group and
//!   folded into one sum per column at its end. Two uops (vpmaddwd, vpaddd) per 16 products,
//!   against five per 8-bit digit pair with vpmaddubsw, and one pass instead of two.
//! - portable: plain integer loops over the packed panel and the 16-bit values.
use rayon::prelude::*;

use super::activation::activate_inplace;
use super::amx;
use super::gemm::{copy_row, for_each_task, Isa};
use super::simd::{multiversion, F32s};
use super::SendPtr;
use crate::config::Activation;

/// Columns per panel.
const NR: usize = 32;
/// Most tokens one vector kernel call handles (fewer use a narrower instance, not padding).
const MR: usize = 4;
/// Most tokens one AMX kernel call handles: the rows of a tile.
const AMX_ROWS: usize = amx::ROWS;
/// Inputs per weight scale.
pub const GROUP: usize = 64;
/// Largest |qw|: symmetric, -128 never used.
const W_MAX: f32 = 127.0;
/// Largest |v| of a token value: 127·256, so the high digit stays within ±127.
const X_MAX: f32 = 32512.0;

/// The int8 kernel family; chosen from the f32 [`Isa`] and the CPU's features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Int8Kernel {
    /// Intel AMX tiles (tdpbusd); the epilogue in AVX-512.
    Amx,
    Avx512Vnni,
    Avx2,
    Portable,
}

impl Int8Kernel {
    /// The kernel the f32 kernel family `isa` pairs with: AMX under avx512 where the CPU and
    /// the kernel grant it, else VNNI where the CPU has AVX512-VNNI, else AVX2 under avx512 or
    /// avx2, portable under portable.
    pub fn for_isa(isa: Isa) -> Int8Kernel {
        match isa {
            Isa::Avx512 if amx_available() => Int8Kernel::Amx,
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
        if amx_available() {
            v.push(Int8Kernel::Amx);
        }
        v
    }

    pub fn name(self) -> &'static str {
        match self {
            Int8Kernel::Amx => "amx",
            Int8Kernel::Avx512Vnni => "avx512vnni",
            Int8Kernel::Avx2 => "avx2",
            Int8Kernel::Portable => "portable",
        }
    }

    /// How the kernel reads quantized tokens.
    fn token_layout(self) -> TokenLayout {
        match self {
            Int8Kernel::Amx | Int8Kernel::Avx512Vnni => TokenLayout::OffsetDigits,
            Int8Kernel::Avx2 | Int8Kernel::Portable => TokenLayout::Values,
        }
    }

    /// Most tokens one kernel call takes: an AMX tile has 16 rows.
    fn tokens_per_call(self) -> usize {
        if self == Int8Kernel::Amx {
            AMX_ROWS
        } else {
            MR
        }
    }
}

/// A quantized token as a kernel reads it: 2·kp bytes either way.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TokenLayout {
    /// kp high digits, then kp low digits, each offset by +128 (u8): vpdpbusd and tdpbusd
    /// multiply unsigned by signed bytes.
    OffsetDigits,
    /// The kp 16-bit values themselves (i16).
    Values,
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

/// Whether this CPU has AMX-INT8 (with AVX512-F/BW for the epilogue) and Linux lets this
/// process use the tile registers (see [`amx`]).
pub fn amx_available() -> bool {
    vnni_available() && amx::int8_granted()
}

/// Weights quantized per output channel and group of [`GROUP`] inputs: `q` is [n, k] row-major,
/// `scales` [n, groups].
pub struct QuantizedWeights {
    pub n: usize,
    pub k: usize,
    pub q: Vec<i8>,
    pub scales: Vec<f32>,
}

impl QuantizedWeights {
    pub fn groups(&self) -> usize {
        self.k.div_ceil(GROUP)
    }
}

/// Symmetric quantization of `values` to [-max_level, max_level] with one scale (max|v| / max_level;
/// 0 for an all-zero slice, whose levels are then 0).
fn quantize_symmetric(values: &[f32], max_level: f32, out: &mut [i32]) -> f32 {
    let amax = values.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if amax == 0.0 || !amax.is_finite() {
        out.fill(0);
        // A non-finite input cannot be quantized: a NaN scale makes its outputs NaN, not wrong.
        return if amax == 0.0 { 0.0 } else { f32::NAN };
    }
    let inv = max_level / amax;
    for (q, v) in out.iter_mut().zip(values) {
        *q = round_even((v * inv).clamp(-max_level, max_level)) as i32;
    }
    amax / max_level
}

/// Round to nearest, ties to even, for |x| < 2²²: adding 1.5·2²³ leaves no fraction bits, so
/// the addition itself rounds. Unlike f32::round_ties_even (a libm call on baseline x86-64),
/// it vectorises.
#[inline(always)]
fn round_even(x: f32) -> f32 {
    const SHIFT: f32 = 12_582_912.0; // 1.5·2²³
    (x + SHIFT) - SHIFT
}

pub fn quantize_weights(w: &[f32], n: usize, k: usize) -> QuantizedWeights {
    assert_eq!(w.len(), n * k);
    let groups = k.div_ceil(GROUP);
    let mut q = vec![0i8; n * k];
    let mut scales = vec![0.0f32; n * groups];
    let mut levels = [0i32; GROUP];
    for c in 0..n {
        for g in 0..groups {
            let span = c * k + g * GROUP..c * k + ((g + 1) * GROUP).min(k);
            let len = span.len();
            scales[c * groups + g] = quantize_symmetric(&w[span.clone()], W_MAX, &mut levels[..len]);
            for (d, l) in q[span].iter_mut().zip(&levels[..len]) {
                *d = *l as i8;
            }
        }
    }
    QuantizedWeights { n, k, q, scales }
}

/// One token quantized to 16 bits: `v` (|v| ≤ 32512) and its scale.
pub fn quantize_token(x: &[f32], v: &mut [i32]) -> f32 {
    quantize_symmetric(x, X_MAX, v)
}

/// The two 8-bit digits of a token value: v = 256·hi + lo.
#[inline(always)]
pub fn digits(v: i32) -> (i8, i8) {
    let hi = (v + 128) >> 8;
    (hi as i8, (v - (hi << 8)) as i8)
}

/// The oracle: y = x·Wᵀ + b by the module's definition, from x's 16-bit values directly (no
/// digits, no packing), before the activation.
pub fn reference_gemm(x: &[f32], m: usize, w: &QuantizedWeights, bias: &[f32]) -> Vec<f32> {
    let (n, k, groups) = (w.n, w.k, w.groups());
    let mut y = vec![0.0f32; m * n];
    let mut v = vec![0i32; k];
    for r in 0..m {
        let sx = quantize_token(&x[r * k..(r + 1) * k], &mut v);
        for c in 0..n {
            let mut f = 0.0f32;
            for g in 0..groups {
                let acc: i32 = (g * GROUP..((g + 1) * GROUP).min(k)).map(|p| v[p] * w.q[c * k + p] as i32).sum();
                f = (acc as f32).mul_add(w.scales[c * groups + g], f);
            }
            y[r * n + c] = dequantize(f, sx, bias[c]);
        }
    }
    y
}

/// The last step every path shares (separate multiply and add).
#[inline(always)]
pub fn dequantize(f: f32, x_scale: f32, bias: f32) -> f32 {
    f * x_scale + bias
}

/// A byte buffer on 64-byte boundaries, so vector and tile rows of 64 bytes never straddle two
/// cache lines; its length is a multiple of 64.
#[derive(Default)]
struct CacheLines(Vec<Line>);

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

impl CacheLines {
    fn resize(&mut self, bytes: usize) {
        debug_assert_eq!(bytes % 64, 0);
        self.0.resize(bytes / 64, Line([0; 64]));
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: Line is 64 plain bytes without padding.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr() as *const u8, self.0.len() * 64) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in bytes.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr() as *mut u8, self.0.len() * 64) }
    }
}

pub struct PackedInt8 {
    pub kernel: Int8Kernel,
    pub n: usize,
    pub k: usize,
    /// k rounded up to a multiple of GROUP.
    kp: usize,
    /// i8 weights.
    panels: CacheLines,
    /// Per panel, per group: NR weight scales and NR VNNI offset corrections (0 for other
    /// kernels), next to each other so a group's epilogue reads one run.
    group_scales: Vec<f32>,
    compensation: Vec<i32>,
    /// Padded to whole panels.
    bias: Vec<f32>,
}

impl PackedInt8 {
    /// Quantizes `weight` ([n, k], PyTorch layout) and packs it for `kernel`.
    pub fn pack(kernel: Int8Kernel, weight: &[f32], bias: &[f32], n: usize, k: usize) -> PackedInt8 {
        Self::pack_quantized(kernel, &quantize_weights(weight, n, k), bias)
    }

    /// Packs weights already quantized (tests feed the same ones to the reference).
    pub fn pack_quantized(kernel: Int8Kernel, w: &QuantizedWeights, bias: &[f32]) -> PackedInt8 {
        let (n, k) = (w.n, w.k);
        assert_eq!(bias.len(), n);
        let kp = k.next_multiple_of(GROUP).max(GROUP);
        let (num_panels, groups, padded_groups) = (n.div_ceil(NR), w.groups(), kp / GROUP);
        let mut panels = CacheLines::default();
        panels.resize(num_panels * kp * NR);
        let bytes = panels.bytes_mut();
        let mut group_scales = vec![0.0f32; num_panels * padded_groups * NR];
        let mut compensation = vec![0i32; num_panels * padded_groups * NR];
        for col in 0..n {
            let (panel, lane) = (col / NR, col % NR);
            for p in 0..k {
                bytes[panel * kp * NR + (p / 4) * 4 * NR + lane * 4 + p % 4] = w.q[col * k + p] as u8;
            }
            for g in 0..groups {
                let at = (panel * padded_groups + g) * NR + lane;
                group_scales[at] = w.scales[col * groups + g];
                if kernel.token_layout() == TokenLayout::OffsetDigits {
                    let sum: i32 = w.q[col * k + g * GROUP..col * k + ((g + 1) * GROUP).min(k)].iter().map(|&q| q as i32).sum();
                    compensation[at] = 257 * 128 * sum;
                }
            }
        }
        let mut padded_bias = vec![0.0f32; num_panels * NR];
        padded_bias[..n].copy_from_slice(bias);
        PackedInt8 { kernel, n, k, kp, panels, group_scales, compensation, bias: padded_bias }
    }
}

/// One kernel call: `tokens` (≤ its tokens_per_call) tokens whose quantized rows start at `a`
/// (token t at a + t·2·kp, in the kernel's [`TokenLayout`]) with their scales `xs`, one
/// packed panel at `b` with its per-group scales `s`, corrections `comp` and NR biases `bias`;
/// writes the NR outputs of token t, dequantized, before the activation, at out + t·out_stride.
/// `stream`: the panel is not in cache yet (its first pass), so the kernel prefetches ahead.
#[derive(Clone, Copy)]
struct KernelArgs {
    tokens: usize,
    stream: bool,
    kp: usize,
    a: *const u8,
    xs: *const f32,
    b: *const i8,
    s: *const f32,
    comp: *const i32,
    bias: *const f32,
    out: *mut f32,
    out_stride: usize,
}

type Kernel = unsafe fn(&KernelArgs);

/// Portable kernel: integer loops over the packed layout and the 16-bit values.
unsafe fn portable_kernel(p: &KernelArgs) {
    let kp = p.kp;
    for t in 0..p.tokens {
        let values = p.a.add(t * 2 * kp) as *const i16;
        let mut f = [0.0f32; NR];
        for g in 0..kp / GROUP {
            for (lane, fl) in f.iter_mut().enumerate() {
                let mut acc = 0i32;
                for j in g * GROUP / 4..(g + 1) * GROUP / 4 {
                    for d in 0..4 {
                        let w = *p.b.add(j * 4 * NR + lane * 4 + d) as i32;
                        acc += values.add(4 * j + d).read_unaligned() as i32 * w;
                    }
                }
                *fl = (acc as f32).mul_add(*p.s.add(g * NR + lane), *fl);
            }
        }
        for (lane, fl) in f.iter().enumerate() {
            *p.out.add(t * p.out_stride + lane) = dequantize(*fl, *p.xs.add(t), *p.bias.add(lane));
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::gemm::x86::prefetch_next_page;
    use super::{KernelArgs, GROUP, NR};
    use core::arch::x86_64::*;

    /// T tokens × 32 columns with vpdpbusd on offset digits.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn vnni_tokens<const T: usize>(p: &KernelArgs) {
        let kp = p.kp;
        let mut f = [[_mm512_setzero_ps(); 2]; T];
        for g in 0..kp / GROUP {
            let mut hi = [[_mm512_setzero_si512(); 2]; T];
            let mut lo = [[_mm512_setzero_si512(); 2]; T];
            for j in g * GROUP / 4..(g + 1) * GROUP / 4 {
                let bj = p.b.add(j * 4 * NR);
                if p.stream {
                    prefetch_next_page(bj, 0..2);
                }
                let b0 = _mm512_loadu_si512(bj as *const __m512i);
                let b1 = _mm512_loadu_si512(bj.add(64) as *const __m512i);
                for t in 0..T {
                    let at = p.a.add(t * 2 * kp + 4 * j);
                    let ah = _mm512_set1_epi32((at as *const i32).read_unaligned());
                    let al = _mm512_set1_epi32((at.add(kp) as *const i32).read_unaligned());
                    hi[t][0] = _mm512_dpbusd_epi32(hi[t][0], ah, b0);
                    hi[t][1] = _mm512_dpbusd_epi32(hi[t][1], ah, b1);
                    lo[t][0] = _mm512_dpbusd_epi32(lo[t][0], al, b0);
                    lo[t][1] = _mm512_dpbusd_epi32(lo[t][1], al, b1);
                }
            }
            for v in 0..2 {
                let s = _mm512_loadu_ps(p.s.add(g * NR + 16 * v));
                let comp = _mm512_loadu_si512(p.comp.add(g * NR + 16 * v) as *const __m512i);
                for t in 0..T {
                    let acc = _mm512_sub_epi32(_mm512_add_epi32(_mm512_slli_epi32::<8>(hi[t][v]), lo[t][v]), comp);
                    f[t][v] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), s, f[t][v]);
                }
            }
        }
        for (t, row) in f.iter().enumerate() {
            for (v, &fv) in row.iter().enumerate() {
                store_dequantized(p, t, v, fv);
            }
        }
    }

    pub unsafe fn vnni(p: &KernelArgs) {
        match p.tokens {
            1 => vnni_tokens::<1>(p),
            2 => vnni_tokens::<2>(p),
            3 => vnni_tokens::<3>(p),
            _ => vnni_tokens::<4>(p),
        }
    }

    /// Stores f·xs[t] + bias (multiply, then add: [`super::dequantize`]) for the 16 columns
    /// 16·v.. of token t.
    #[inline(always)]
    unsafe fn store_dequantized(p: &KernelArgs, t: usize, v: usize, f: __m512) {
        let y = _mm512_add_ps(_mm512_mul_ps(f, _mm512_set1_ps(*p.xs.add(t))), _mm512_loadu_ps(p.bias.add(16 * v)));
        _mm512_storeu_ps(p.out.add(t * p.out_stride + 16 * v), y);
    }

    /// One group's sums as tilestored writes them: rows of NR i32, high digits then low digits.
    #[repr(C, align(64))]
    struct GroupSums([[i32; super::AMX_ROWS * NR]; 2]);

    /// Up to 16 tokens × 32 columns with tdpbusd on offset digits, the same sums as [`vnni`];
    /// the AVX-512 epilogue of one group overlaps the tile work of the next (two sum buffers).
    /// Tiles always load 16 token rows (the digit buffer is padded to them); the epilogue reads
    /// `tokens`. Tiles: tmm0/tmm1 the high/low digits of 16 tokens for one group, tmm2/tmm3 the
    /// group's weights for columns 0..16 and 16..32 (rows of 4 k × 16 columns), tmm4..tmm7 the
    /// i32 sums high×0..16, high×16..32, low×0..16, low×16..32. Needs an
    /// [`amx::TileSession`] on this thread.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn amx(p: &KernelArgs) {
        let (tokens, kp) = (p.tokens, p.kp);
        debug_assert!((1..=super::AMX_ROWS).contains(&tokens));
        // Per token and 16 columns, Σ_g acc·s so far. Left uninitialised (zeroing 2 KB was a
        // memset call per kernel call): the first group writes each row that is later read.
        let mut f = core::mem::MaybeUninit::<[[__m512; 2]; super::AMX_ROWS]>::uninit();
        let f = f.as_mut_ptr() as *mut [__m512; 2];
        // Written by tilestored before every read.
        let mut sums = core::mem::MaybeUninit::<[GroupSums; 2]>::uninit();
        let base = sums.as_mut_ptr() as *mut GroupSums;
        let sums_of = |g: usize| {
            let buf = base.add(g & 1) as *mut i32;
            (buf, buf.add(super::AMX_ROWS * NR))
        };
        let groups = kp / GROUP;
        // Software-pipelined: the tiles of group g run while the epilogue reads group g − 1's
        // sums, stored one step earlier (a load right after tilestored would wait for it).
        for g in 0..=groups {
            if g < groups {
                let (hi, lo) = sums_of(g);
                let b = p.b.add(g * GROUP * NR);
                if p.stream {
                    prefetch_next_page(b, 0..GROUP * NR / 64);
                }
                core::arch::asm!(
                    "tilezero tmm4",
                    "tilezero tmm5",
                    "tilezero tmm6",
                    "tilezero tmm7",
                    "tileloadd tmm0, [{a_hi} + {a_stride}*1]",
                    "tileloadd tmm1, [{a_lo} + {a_stride}*1]",
                    "tileloadd tmm2, [{b0} + {b_stride}*1]",
                    "tileloadd tmm3, [{b1} + {b_stride}*1]",
                    "tdpbusd tmm4, tmm0, tmm2",
                    "tdpbusd tmm5, tmm0, tmm3",
                    "tdpbusd tmm6, tmm1, tmm2",
                    "tdpbusd tmm7, tmm1, tmm3",
                    "tilestored [{hi0} + {c_stride}*1], tmm4",
                    "tilestored [{hi1} + {c_stride}*1], tmm5",
                    "tilestored [{lo0} + {c_stride}*1], tmm6",
                    "tilestored [{lo1} + {c_stride}*1], tmm7",
                    a_hi = in(reg) p.a.add(g * GROUP),
                    a_lo = in(reg) p.a.add(kp + g * GROUP),
                    a_stride = in(reg) 2 * kp,
                    b0 = in(reg) b,
                    b1 = in(reg) b.add(64),
                    b_stride = in(reg) 4 * NR,
                    hi0 = in(reg) hi,
                    hi1 = in(reg) hi.add(16),
                    lo0 = in(reg) lo,
                    lo1 = in(reg) lo.add(16),
                    c_stride = in(reg) 4 * NR,
                    options(nostack),
                );
            }
            if g > 0 {
                let g = g - 1;
                let (hi, lo) = sums_of(g);
                for v in 0..2 {
                    let s = _mm512_loadu_ps(p.s.add(g * NR + 16 * v));
                    let comp = _mm512_loadu_si512(p.comp.add(g * NR + 16 * v) as *const __m512i);
                    for t in 0..tokens {
                        let h = _mm512_loadu_si512(hi.add(t * NR + 16 * v) as *const __m512i);
                        let l = _mm512_loadu_si512(lo.add(t * NR + 16 * v) as *const __m512i);
                        let acc = _mm512_sub_epi32(_mm512_add_epi32(_mm512_slli_epi32::<8>(h), l), comp);
                        let before = if g == 0 { _mm512_setzero_ps() } else { (*f.add(t))[v] };
                        (*f.add(t))[v] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), s, before);
                    }
                }
            }
        }
        for t in 0..tokens {
            for v in 0..2 {
                store_dequantized(p, t, v, (*f.add(t))[v]);
            }
        }
    }

    /// T tokens × 8 columns (quarter `part` of the panel) with vpmaddwd on 16-bit values.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2_tokens<const T: usize>(p: &KernelArgs, part: usize) {
        let kp = p.kp;
        let mut f = [_mm256_setzero_ps(); T];
        for g in 0..kp / GROUP {
            // Per token, columns 0..4 and 4..8 of the part: lanes 2c and 2c + 1 hold column c's
            // two pair sums.
            let mut acc = [[_mm256_setzero_si256(); 2]; T];
            for j in g * GROUP / 4..(g + 1) * GROUP / 4 {
                let bj = p.b.add(j * 4 * NR);
                if p.stream && part == 0 {
                    prefetch_next_page(bj, 0..2);
                }
                let w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(bj.add(part * 32) as *const __m128i));
                let w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(bj.add(part * 32 + 16) as *const __m128i));
                for (t, acc_t) in acc.iter_mut().enumerate() {
                    let v = _mm256_set1_epi64x((p.a.add(t * 2 * kp + 8 * j) as *const i64).read_unaligned());
                    acc_t[0] = _mm256_add_epi32(acc_t[0], _mm256_madd_epi16(v, w0));
                    acc_t[1] = _mm256_add_epi32(acc_t[1], _mm256_madd_epi16(v, w1));
                }
            }
            let s = _mm256_loadu_ps(p.s.add(g * NR + 8 * part));
            for t in 0..T {
                // hadd gives columns [0 1 4 5 | 2 3 6 7]; the quadword shuffle puts them in order.
                let sums = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_hadd_epi32(acc[t][0], acc[t][1]));
                f[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), s, f[t]);
            }
        }
        for (t, row) in f.iter().enumerate() {
            let y = _mm256_add_ps(_mm256_mul_ps(*row, _mm256_set1_ps(*p.xs.add(t))), _mm256_loadu_ps(p.bias.add(8 * part)));
            _mm256_storeu_ps(p.out.add(t * p.out_stride + 8 * part), y);
        }
    }

    pub unsafe fn avx2(p: &KernelArgs) {
        for part in 0..4 {
            match p.tokens {
                1 => avx2_tokens::<1>(p, part),
                2 => avx2_tokens::<2>(p, part),
                3 => avx2_tokens::<3>(p, part),
                _ => avx2_tokens::<4>(p, part),
            }
        }
    }
}

fn kernel_fn(kernel: Int8Kernel) -> Kernel {
    match kernel {
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        Int8Kernel::Amx => {
            assert!(amx_available(), "AMX int8 kernel on a CPU or kernel without AMX");
            x86::amx
        }
        #[cfg(target_arch = "x86_64")]
        Int8Kernel::Avx512Vnni => {
            assert!(vnni_available(), "VNNI int8 kernel on a CPU without AVX512-VNNI");
            x86::vnni
        }
        #[cfg(target_arch = "x86_64")]
        Int8Kernel::Avx2 => {
            assert!(Isa::available().contains(&Isa::Avx2), "AVX2 int8 kernel on a CPU without AVX2+FMA");
            x86::avx2
        }
        _ => portable_kernel,
    }
}

/// Quantized x as the kernels read it: per token 2·kp bytes in the kernel's [`TokenLayout`]
/// (padding is value 0), and one scale per token; for AMX, rows up to a multiple of 16 tokens,
/// so every tile load reads 16 rows of this buffer (rows past the tokens are never used).
/// Kept per thread and reused, so steady-state calls allocate nothing.
#[derive(Default)]
struct XScratch {
    bytes: CacheLines,
    scales: Vec<f32>,
}

thread_local! {
    static X_SCRATCH: std::cell::RefCell<XScratch> = std::cell::RefCell::new(XScratch::default());
}

/// Quantizes token `x` into `dst` (2·kp bytes) in `layout`; returns the scale. The same
/// arithmetic as [`quantize_token`] and [`digits`], in vectors.
#[inline(always)]
fn encode_token_simd<V: F32s>(x: &[f32], layout: TokenLayout, dst: &mut [u8]) -> f32 {
    let (k, kp) = (x.len(), dst.len() / 2);
    // The byte that encodes 0 (digits 0 and 0, or value 0).
    let zero = if layout == TokenLayout::OffsetDigits { 0x80 } else { 0 };
    let chunks = k / V::LANES;
    let mut buf = [0.0f32; 16];
    let load = |c: usize, buf: &mut [f32; 16]| -> V {
        if c < chunks {
            // SAFETY: chunk c < k / LANES lies inside x.
            unsafe { V::load(x.as_ptr().add(c * V::LANES)) }
        } else {
            let tail = &x[c * V::LANES..];
            buf.fill(0.0);
            buf[..tail.len()].copy_from_slice(tail);
            // SAFETY: buf holds 16 ≥ LANES floats.
            unsafe { V::load(buf.as_ptr()) }
        }
    };
    let steps = k.div_ceil(V::LANES);
    // The new element first: vector max returns its second operand when one is NaN, so a NaN
    // is skipped as f32::max skips it in the reference.
    let amax = (0..steps).fold(V::zero(), |m, c| load(c, &mut buf).abs().max(m)).reduce_max();
    if amax == 0.0 || !amax.is_finite() {
        dst.fill(zero);
        return if amax == 0.0 { 0.0 } else { f32::NAN };
    }
    let (inv, limit, shift) = (V::splat(X_MAX / amax), V::splat(X_MAX), V::splat(12_582_912.0));
    let (hi, lo) = dst.split_at_mut(kp);
    for c in 0..steps {
        let v = load(c, &mut buf).mul(inv).max(V::splat(-X_MAX)).min(limit).add(shift).sub(shift);
        // SAFETY: kp is a multiple of 64, so whole vectors up to k stay inside each row (and
        // 2·c·LANES bytes inside the values).
        unsafe {
            match layout {
                TokenLayout::OffsetDigits => v.store_offset_digits(hi.as_mut_ptr().add(c * V::LANES), lo.as_mut_ptr().add(c * V::LANES)),
                TokenLayout::Values => v.store_i16((hi.as_mut_ptr() as *mut i16).add(c * V::LANES)),
            }
        }
    }
    match layout {
        TokenLayout::OffsetDigits => {
            hi[steps * V::LANES..].fill(zero);
            lo[steps * V::LANES..].fill(zero);
        }
        TokenLayout::Values => dst[2 * steps * V::LANES..].fill(zero),
    }
    amax / X_MAX
}

multiversion!(fn encode_token(x: &[f32], layout: TokenLayout, dst: &mut [u8]) -> f32 = encode_token_simd);

/// y = act(x·Wᵀ + b) for m rows; see the module comment. Activations use the f32 kernels of `isa`.
pub fn gemm_int8(pool: &rayon::ThreadPool, isa: Isa, x: &[f32], m: usize, w: &PackedInt8, act: Option<Activation>, y: &mut [f32]) {
    let (k, kp) = (w.k, w.kp);
    assert_eq!(x.len(), m * k);
    assert_eq!(y.len(), m * w.n);
    if m == 0 {
        return;
    }
    let layout = w.kernel.token_layout();
    let rows = if w.kernel == Int8Kernel::Amx { m.next_multiple_of(AMX_ROWS) } else { m };
    // Taken out, not borrowed, while the pool runs: a thread waiting for its tasks may steal
    // another caller's GEMM, which then finds an empty scratch and makes its own.
    let mut scratch = X_SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
    {
        let XScratch { bytes, scales } = &mut scratch;
        // Every used byte is written below; no need to clear.
        bytes.resize(rows * 2 * kp);
        let bytes = bytes.bytes_mut();
        scales.resize(m, 0.0);
        let quantize = |(row, (dst, scale)): (usize, (&mut [u8], &mut f32))| *scale = encode_token(isa, &x[row * k..(row + 1) * k], layout, dst);
        // Quantizing is O(m·k) against the GEMM's O(m·k·n): split it only when large.
        if super::inline(pool) || m * k < (1 << 16) {
            bytes[..m * 2 * kp].chunks_mut(2 * kp).zip(&mut scales[..m]).enumerate().for_each(quantize);
        } else {
            super::in_pool(pool, || bytes[..m * 2 * kp].par_chunks_mut(2 * kp).zip(&mut scales[..m]).enumerate().for_each(quantize));
        }
        run_quantized(pool, isa, bytes, scales, m, w, act, y);
    }
    X_SCRATCH.with(|s| *s.borrow_mut() = scratch);
}

#[allow(clippy::too_many_arguments)]
fn run_quantized(pool: &rayon::ThreadPool, isa: Isa, xq: &[u8], x_scales: &[f32], m: usize, w: &PackedInt8, act: Option<Activation>, y: &mut [f32]) {
    let (kp, n) = (w.kp, w.n);
    let groups = kp / GROUP;
    let kernel = kernel_fn(w.kernel);
    let mr = w.kernel.tokens_per_call();
    let out = SendPtr(y.as_mut_ptr());
    for_each_task(pool, m, n.div_ceil(NR), mr, |rows, panels| {
        // SAFETY: packing for Amx needs amx_available() (kernel_fn asserts it).
        let _tiles = unsafe { amx::TileSession::start(w.kernel == Int8Kernel::Amx) };
        let mut tile = [0.0f32; AMX_ROWS * NR];
        for panel in panels {
            let col0 = panel * NR;
            let cols = NR.min(n - col0);
            for row0 in rows.clone().step_by(mr) {
                let tokens = mr.min(rows.end - row0);
                // A whole panel without activation goes straight into y; otherwise through the
                // tile, activated there in one call.
                let direct = cols == NR && act.is_none();
                // SAFETY: tasks write disjoint (rows, panels) of y, which has m rows of n.
                let (dst, dst_stride) = if direct { (unsafe { out.get().add(row0 * n + col0) }, n) } else { (tile.as_mut_ptr(), NR) };
                let args = KernelArgs {
                    tokens,
                    // The block's first tokens bring the panel in; later ones find it in cache.
                    stream: row0 == rows.start,
                    kp,
                    a: xq[row0 * 2 * kp..].as_ptr(),
                    xs: x_scales[row0..].as_ptr(),
                    b: w.panels.bytes()[panel * kp * NR..].as_ptr() as *const i8,
                    s: w.group_scales[panel * groups * NR..].as_ptr(),
                    comp: w.compensation[panel * groups * NR..].as_ptr(),
                    bias: w.bias[col0..].as_ptr(),
                    out: dst,
                    out_stride: dst_stride,
                };
                // SAFETY: xq has m tokens of 2·kp bytes (AMX: padded to 16) and row0 + tokens ≤ m;
                // the panel has kp/4 runs of 4·NR bytes, `groups` runs of NR scales and
                // corrections and NR biases; dst has `tokens` rows of NR at its stride.
                unsafe { kernel(&args) };
                if !direct {
                    activate_inplace(isa, act, &mut tile[..tokens * NR]);
                    for t in 0..tokens {
                        // SAFETY: as above.
                        unsafe { copy_row(tile[t * NR..].as_ptr(), out.get().add((row0 + t) * n + col0), cols) };
                    }
                }
            }
        }
    });
}
