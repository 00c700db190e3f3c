//! GEMM for linear layers: y[m, n] = act(x[m, k] · Wᵀ + b). Must match `reference::linear`.
//!
//! W (PyTorch layout [n, k]) is packed once at load into panels of NR columns, k-major
//! (panel[p][0..NR] = W[col0..col0+NR][p]), zero-padded, so the microkernel streams it with
//! aligned-width loads. The microkernel keeps an MR×NR tile of accumulators in registers and
//! broadcasts one x value per row per k step. Row remainders run through instances of the same
//! kernel with fewer rows: every output element is the same fused multiply-add chain over
//! k = 0..K in order, whatever the batch size, the row's place in it, or the thread count. That is what makes results bitwise batch-invariant.
//!
//! The kernel is chosen at run time: AVX-512 (up to 14×32), AVX2+FMA (6×16), or a portable `wide`
//! kernel (4×16) for other CPUs. `wide` picks its instructions when the crate is compiled, so
//! the dispatched x86 kernels use `core::arch` inside `#[target_feature]` functions. The work is
//! split over (row block × panel group) tasks, never over k, so the thread count cannot change
//! a result either.
use std::ops::Range;
use std::sync::OnceLock;


use super::activation::activate_inplace;
use super::SendPtr;
use crate::config::Activation;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    Avx512,
    Avx2,
    Portable,
}

impl Isa {
    /// The environment variable that forces a kernel family (`avx512`, `avx2`, `portable`;
    /// unset, empty or `auto` means the best this CPU runs). Read once per process: for a
    /// server, set it in the postmaster's environment. Tests use it to prove every path.
    pub const ENV: &'static str = "BGE_CPU_ISA";

    /// The kernel family this process runs: [`Isa::ENV`] when set, else the best available.
    /// An unknown name, or one this CPU cannot run, is an error (never a silent fallback).
    pub fn selected() -> Result<Isa> {
        static SELECTED: OnceLock<std::result::Result<Isa, String>> = OnceLock::new();
        SELECTED
            .get_or_init(|| Isa::choose(std::env::var(Isa::ENV).ok().as_deref()))
            .clone()
            .map_err(|reason| Error::CpuFeatureMissing { reason, hint: Isa::env_hint() })
    }

    /// The choice `BGE_CPU_ISA=requested` makes on this CPU.
    pub fn choose(requested: Option<&str>) -> std::result::Result<Isa, String> {
        let best = Isa::detect();
        match requested.map(str::trim).filter(|r| !r.is_empty() && !r.eq_ignore_ascii_case("auto")) {
            None => Ok(best),
            Some(name) => match Isa::parse(name) {
                Some(isa) if Isa::available().contains(&isa) => Ok(isa),
                Some(isa) => Err(format!("{}={} asks for {} kernels, which this CPU cannot run", Isa::ENV, name, isa.name())),
                None => Err(format!("{}={name} is not a kernel family", Isa::ENV)),
            },
        }
    }

    fn env_hint() -> String {
        let names: Vec<&str> = Isa::available().iter().map(|i| i.name()).collect();
        format!(
            "This CPU runs: {}. Set {} in the server's environment to one of those or to auto (the default), then restart the server.",
            names.join(", "),
            Isa::ENV
        )
    }

    /// The best kernel this CPU runs.
    pub fn detect() -> Isa {
        *Isa::available().last().expect("the portable kernel is always available")
    }

    /// Every kernel this CPU can run, best last (tests check each against the reference).
    pub fn available() -> Vec<Isa> {
        let mut v = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                v.push(Isa::Avx2);
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                v.push(Isa::Avx512);
            }
        }
        v
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2",
            Isa::Portable => "portable",
        }
    }

    pub fn parse(name: &str) -> Option<Isa> {
        [Isa::Avx512, Isa::Avx2, Isa::Portable].into_iter().find(|i| i.name().eq_ignore_ascii_case(name))
    }

    /// (MR, NR): rows and columns of the register tile.
    pub fn tile(self) -> (usize, usize) {
        match self {
            Isa::Avx512 => (8, 32),
            Isa::Avx2 => (6, 16),
            Isa::Portable => (4, 16),
        }
    }

    /// Most rows the microkernel takes in one call (see [`gemm_block`]'s passes). AVX-512 has
    /// registers for 14 rows × 32 columns; the others have none to spare beyond MR.
    pub fn max_rows(self) -> usize {
        match self {
            Isa::Avx512 => 14,
            _ => self.tile().0,
        }
    }
}

const MAX_TILE: usize = 14 * 32;

pub struct PackedLinear {
    pub isa: Isa,
    pub n: usize,
    pub k: usize,
    panels: Vec<f32>,
    bias: Vec<f32>,
}

impl PackedLinear {
    pub fn pack(isa: Isa, weight: &[f32], bias: &[f32], n: usize, k: usize) -> PackedLinear {
        assert_eq!(weight.len(), n * k);
        assert_eq!(bias.len(), n);
        let (_, nr) = isa.tile();
        let num_panels = n.div_ceil(nr);
        let mut panels = vec![0.0f32; num_panels * k * nr];
        for col in 0..n {
            let (panel, lane) = (col / nr, col % nr);
            let base = panel * k * nr + lane;
            for p in 0..k {
                panels[base + p * nr] = weight[col * k + p];
            }
        }
        let mut padded_bias = vec![0.0f32; num_panels * nr];
        padded_bias[..n].copy_from_slice(bias);
        PackedLinear { isa, n, k, panels, bias: padded_bias }
    }

    pub fn view(&self) -> Panels<'_> {
        Panels { isa: self.isa, n: self.n, k: self.k, panels: &self.panels, bias: &self.bias }
    }
}

/// A packed right-hand side: `panels` of k×NR floats (k-major, zero-padded to NR columns) and
/// a bias padded to a whole number of panels.
#[derive(Clone, Copy)]
pub struct Panels<'a> {
    pub isa: Isa,
    pub n: usize,
    pub k: usize,
    pub panels: &'a [f32],
    pub bias: &'a [f32],
}

/// Computes `rows` (1..=[`Isa::max_rows`]) rows of a tile into `out` (row stride `ldo`, NR writable
/// floats per row): x rows at `a` (stride `lda`, `rows` readable rows), the packed panel at `b`,
/// bias added. Each output is the same FMA chain over k whatever `rows` is, so fewer rows only
/// skip work, never change results.
/// `stream`: the panel is not in cache yet (its first pass), so the kernel prefetches ahead.
type Microkernel = unsafe fn(rows: usize, stream: bool, k: usize, a: *const f32, lda: usize, b: *const f32, bias: *const f32, out: *mut f32, ldo: usize);

/// Dispatches a row count to the const-generic instance `$f::<R>` (or `$f::<R, $stream>`)
/// for R in 1..=MR.
macro_rules! by_rows {
    ($f:ident, $rows:expr, $args:tt, [$($r:literal)*]) => {
        match $rows {
            $($r => $f::<$r> $args,)*
            r => unreachable!("{r} rows"),
        }
    };
    ($f:ident, $rows:expr, $stream:literal, $args:tt, [$($r:literal)*]) => {
        match $rows {
            $($r => $f::<$r, $stream> $args,)*
            r => unreachable!("{r} rows"),
        }
    };
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use core::arch::x86_64::*;

    /// Asks for the 64-byte lines `lines` one 4 KiB page past `at`. On a panel's first pass
    /// (a short batch) every weight streams from memory once, and the hardware prefetcher stops
    /// at page boundaries; a page ahead keeps the next one on its way. Measured on a 2-vCPU
    /// Xeon: a 10-token MiniLM pass went from 8.2 to 5.6 ms on one thread (half and two pages
    /// ahead were no better). Prefetches never fault, so past the panels' end they only cost
    /// an issue slot. The int8 and bf16 kernels use it too.
    #[inline(always)]
    pub(crate) unsafe fn prefetch_next_page(at: *const i8, lines: std::ops::Range<usize>) {
        for line in lines {
            _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(4096 + 64 * line));
        }
    }

    macro_rules! microkernel {
        ($name:ident, $feat:literal, $lanes:literal, $mr:literal, $nv:literal,
         $zero:ident, $set1:ident, $load:ident, $fma:ident, $add:ident, $store:ident) => {
            #[target_feature(enable = $feat)]
            unsafe fn $name<const R: usize, const STREAM: bool>(k: usize, a: *const f32, lda: usize, b: *const f32, bias: *const f32, out: *mut f32, ldo: usize) {
                let mut acc = [[$zero(); $nv]; R];
                for p in 0..k {
                    let bp = b.add(p * $nv * $lanes);
                    if STREAM {
                        prefetch_next_page(bp as *const i8, 0..$nv * $lanes / 16);
                    }
                    let mut bv = [$zero(); $nv];
                    for v in 0..$nv {
                        bv[v] = $load(bp.add(v * $lanes));
                    }
                    for i in 0..R {
                        let ai = $set1(*a.add(i * lda + p));
                        for v in 0..$nv {
                            acc[i][v] = $fma(ai, bv[v], acc[i][v]);
                        }
                    }
                }
                for i in 0..R {
                    for v in 0..$nv {
                        let r = $add(acc[i][v], $load(bias.add(v * $lanes)));
                        $store(out.add(i * ldo + v * $lanes), r);
                    }
                }
            }
        };
    }

    microkernel!(avx512_rx32, "avx512f", 16, 8, 2, _mm512_setzero_ps, _mm512_set1_ps, _mm512_loadu_ps, _mm512_fmadd_ps, _mm512_add_ps, _mm512_storeu_ps);
    microkernel!(avx2_rx16, "avx2,fma", 8, 6, 2, _mm256_setzero_ps, _mm256_set1_ps, _mm256_loadu_ps, _mm256_fmadd_ps, _mm256_add_ps, _mm256_storeu_ps);

    pub unsafe fn avx512_x32(rows: usize, stream: bool, k: usize, a: *const f32, lda: usize, b: *const f32, bias: *const f32, out: *mut f32, ldo: usize) {
        match stream {
            true => by_rows!(avx512_rx32, rows, true, (k, a, lda, b, bias, out, ldo), [1 2 3 4 5 6 7 8 9 10 11 12 13 14]),
            false => by_rows!(avx512_rx32, rows, false, (k, a, lda, b, bias, out, ldo), [1 2 3 4 5 6 7 8 9 10 11 12 13 14]),
        }
    }

    pub unsafe fn avx2_6x16(rows: usize, stream: bool, k: usize, a: *const f32, lda: usize, b: *const f32, bias: *const f32, out: *mut f32, ldo: usize) {
        match stream {
            true => by_rows!(avx2_rx16, rows, true, (k, a, lda, b, bias, out, ldo), [1 2 3 4 5 6]),
            false => by_rows!(avx2_rx16, rows, false, (k, a, lda, b, bias, out, ldo), [1 2 3 4 5 6]),
        }
    }
}

/// Portable 4×16 kernel on `wide::f32x8` (whatever the crate was compiled for; `wide` has no
/// prefetch, so streaming passes run as any other).
unsafe fn portable_4x16(rows: usize, _stream: bool, k: usize, a: *const f32, lda: usize, b: *const f32, bias: *const f32, out: *mut f32, ldo: usize) {
    by_rows!(portable_rx16, rows, (k, a, lda, b, bias, out, ldo), [1 2 3 4])
}

unsafe fn portable_rx16<const R: usize>(k: usize, a: *const f32, lda: usize, b: *const f32, bias: *const f32, out: *mut f32, ldo: usize) {
    use wide::f32x8;
    let load = |p: *const f32| f32x8::from(*(p as *const [f32; 8]));
    let mut acc = [[f32x8::ZERO; 2]; R];
    for p in 0..k {
        let b0 = load(b.add(p * 16));
        let b1 = load(b.add(p * 16 + 8));
        for (i, row) in acc.iter_mut().enumerate() {
            let ai = f32x8::splat(*a.add(i * lda + p));
            row[0] = ai.mul_add(b0, row[0]);
            row[1] = ai.mul_add(b1, row[1]);
        }
    }
    for (i, row) in acc.iter().enumerate() {
        for (v, r) in row.iter().enumerate() {
            let lanes: [f32; 8] = (*r + load(bias.add(v * 8))).into();
            std::ptr::copy_nonoverlapping(lanes.as_ptr(), out.add(i * ldo + v * 8), 8);
        }
    }
}

fn microkernel(isa: Isa) -> Microkernel {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => x86::avx512_x32,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => x86::avx2_6x16,
        _ => portable_4x16,
    }
}

/// Serial core shared by the GEMM and attention: y[r, c] for r in `rows`, c in the columns of
/// `panels`, from x rows at `x` (stride `lda`) into `y` (stride `ldy`), activation applied.
///
/// # Safety
/// `x` must hold rows.end rows of stride lda (k readable floats each) and `y` rows.end rows of
/// stride ldy covering the chosen panels' columns; no other thread may write those outputs.
pub unsafe fn gemm_block(
    w: Panels<'_>,
    x: *const f32,
    lda: usize,
    rows: std::ops::Range<usize>,
    panels: std::ops::Range<usize>,
    y: *mut f32,
    ldy: usize,
    act: Option<Activation>,
) {
    let nr = w.isa.tile().1;
    // The block's rows in as few passes of at most max_rows as it takes, of even size: a
    // short query is one pass (each panel streams in once), and no narrow remainder pass
    // (whose few accumulators wait on FMA latency) follows the full ones.
    let passes = rows.len().div_ceil(w.isa.max_rows()).max(1);
    let step = rows.len().div_ceil(passes).max(1);
    let k = w.k;
    let kernel = microkernel(w.isa);
    let mut tile = [0.0f32; MAX_TILE];
    for panel in panels {
        let col0 = panel * nr;
        let cols = nr.min(w.n - col0);
        let b = w.panels[panel * k * nr..].as_ptr();
        let bias = w.bias[col0..].as_ptr();
        for row0 in rows.clone().step_by(step) {
            // The last pass may be narrower: no padding rows computed.
            let r = step.min(rows.end - row0);
            // The block's first tile brings the panel in; later tiles find it in L1/L2.
            let stream = row0 == rows.start;
            let dst = y.add(row0 * ldy + col0);
            if cols == nr && act.is_none() {
                // A whole panel without activation goes straight into y.
                kernel(r, stream, k, x.add(row0 * lda), lda, b, bias, dst, ldy);
            } else {
                // Through the tile: activated in one call (per row, the calls cost more than
                // the arithmetic), and the last panel's padding columns dropped.
                kernel(r, stream, k, x.add(row0 * lda), lda, b, bias, tile.as_mut_ptr(), nr);
                activate_inplace(w.isa, act, &mut tile[..r * nr]);
                for i in 0..r {
                    copy_row(tile.as_ptr().add(i * nr), dst.add(i * ldy), cols);
                }
            }
        }
    }
}

/// Copies `len` floats from `src` to `dst` (not overlapping), whole runs of 16 as fixed-size
/// copies the compiler inlines: a tile row copied with a variable length is a call into
/// memmove, which for 32 floats costs more than the copy.
///
/// # Safety
/// `src` readable and `dst` writable for `len` floats.
pub(crate) unsafe fn copy_row(src: *const f32, dst: *mut f32, len: usize) {
    let whole = len / 16 * 16;
    for c in (0..whole).step_by(16) {
        std::ptr::copy_nonoverlapping(src.add(c), dst.add(c), 16);
    }
    for c in whole..len {
        *dst.add(c) = *src.add(c);
    }
}

/// Rows of x one task walks through while it sweeps its panels (keeps them in L2).
const ROW_BLOCK_TILES: usize = 12;
/// Most panels one task covers; fewer when that leaves threads idle.
const MAX_PANELS_PER_TASK: usize = 8;

/// Splits an m-row GEMM over `num_panels` column panels into (row block × panel group) tasks
/// and runs `block(rows, panels)` for each on the pool. Never splits k.
pub(crate) fn for_each_task(pool: &rayon::ThreadPool, m: usize, num_panels: usize, mr: usize, block: impl Fn(Range<usize>, Range<usize>) + Sync) {
    let row_block = mr * ROW_BLOCK_TILES;
    let row_blocks = m.div_ceil(row_block);
    // At least ~3 tasks per thread so uneven tasks still balance.
    let want_tasks = 3 * pool.current_num_threads();
    let per_task = (num_panels * row_blocks / want_tasks).clamp(1, MAX_PANELS_PER_TASK);
    let panel_groups = num_panels.div_ceil(per_task);
    let tasks = row_blocks * panel_groups;
    let run_task = |t: usize| {
        let (rb, g) = (t / panel_groups, t % panel_groups);
        block(rb * row_block..((rb + 1) * row_block).min(m), g * per_task..((g + 1) * per_task).min(num_panels));
    };
    super::run_tasks(pool, tasks, run_task);
}

pub fn gemm(pool: &rayon::ThreadPool, x: &[f32], m: usize, w: &PackedLinear, act: Option<Activation>, y: &mut [f32]) {
    let (k, n) = (w.k, w.n);
    assert_eq!(x.len(), m * k);
    assert_eq!(y.len(), m * n);
    if m == 0 {
        return;
    }
    let (mr, nr) = w.isa.tile();
    let out = SendPtr(y.as_mut_ptr());
    let view = w.view();
    for_each_task(pool, m, n.div_ceil(nr), mr, |rows, panels| {
        // SAFETY: x has m rows of k floats, y m rows of n; tasks cover disjoint (rows, panels).
        unsafe { gemm_block(view, x.as_ptr(), k, rows, panels, out.get(), n, act) };
    });
}
