//! GEMM for linear layers: y[m, n] = act(x[m, k] · Wᵀ + b). Must match `reference::linear`.
//!
//! W (PyTorch layout [n, k]) is packed once at load into panels of NR columns, k-major
//! (panel[p][0..NR] = W[col0..col0+NR][p]), zero-padded, so the microkernel streams it with
//! aligned-width loads. The microkernel keeps an MR×NR tile of accumulators in registers and
//! broadcasts one x value per row per k step. Row remainders are copied into a zero-padded
//! MR-row buffer and run through the same kernel: every output element is the same fused
//! multiply-add chain over k = 0..K in order, whatever the batch size, the row's place in it,
//! or the thread count. That is what makes results bitwise batch-invariant.
//!
//! The kernel is chosen at run time: AVX-512 (8×32), AVX2+FMA (6×16), or a portable `wide`
//! kernel (4×16) for other CPUs. `wide` picks its instructions when the crate is compiled, so
//! the dispatched x86 kernels use `core::arch` inside `#[target_feature]` functions.
use rayon::prelude::*;

use super::activation::activate_inplace;
use super::SendPtr;
use crate::config::Activation;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    Avx512,
    Avx2,
    Portable,
}

impl Isa {
    /// The best kernel this CPU runs.
    pub fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                return Isa::Avx2;
            }
        }
        Isa::Portable
    }

    /// Every kernel this CPU can run (tests check each against the reference).
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

    /// (MR, NR): rows and columns of the register tile.
    pub fn tile(self) -> (usize, usize) {
        match self {
            Isa::Avx512 => (8, 32),
            Isa::Avx2 => (6, 16),
            Isa::Portable => (4, 16),
        }
    }
}

const MAX_TILE: usize = 8 * 32;

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
}

/// Computes one MR×NR tile into `tile` (row stride NR): x rows at `a` (stride `lda`, exactly
/// MR readable rows), the packed panel at `b`, bias added.
type Microkernel = unsafe fn(k: usize, a: *const f32, lda: usize, b: *const f32, bias: *const f32, tile: *mut f32);

#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::x86_64::*;

    macro_rules! microkernel {
        ($name:ident, $feat:literal, $lanes:literal, $mr:literal, $nv:literal,
         $zero:ident, $set1:ident, $load:ident, $fma:ident, $add:ident, $store:ident) => {
            #[target_feature(enable = $feat)]
            pub unsafe fn $name(k: usize, a: *const f32, lda: usize, b: *const f32, bias: *const f32, tile: *mut f32) {
                let mut acc = [[$zero(); $nv]; $mr];
                for p in 0..k {
                    let bp = b.add(p * $nv * $lanes);
                    let mut bv = [$zero(); $nv];
                    for v in 0..$nv {
                        bv[v] = $load(bp.add(v * $lanes));
                    }
                    for i in 0..$mr {
                        let ai = $set1(*a.add(i * lda + p));
                        for v in 0..$nv {
                            acc[i][v] = $fma(ai, bv[v], acc[i][v]);
                        }
                    }
                }
                for i in 0..$mr {
                    for v in 0..$nv {
                        let r = $add(acc[i][v], $load(bias.add(v * $lanes)));
                        $store(tile.add((i * $nv + v) * $lanes), r);
                    }
                }
            }
        };
    }

    microkernel!(avx512_8x32, "avx512f", 16, 8, 2, _mm512_setzero_ps, _mm512_set1_ps, _mm512_loadu_ps, _mm512_fmadd_ps, _mm512_add_ps, _mm512_storeu_ps);
    microkernel!(avx2_6x16, "avx2,fma", 8, 6, 2, _mm256_setzero_ps, _mm256_set1_ps, _mm256_loadu_ps, _mm256_fmadd_ps, _mm256_add_ps, _mm256_storeu_ps);
}

/// Portable 4×16 kernel on `wide::f32x8` (whatever the crate was compiled for).
unsafe fn portable_4x16(k: usize, a: *const f32, lda: usize, b: *const f32, bias: *const f32, tile: *mut f32) {
    use wide::f32x8;
    let load = |p: *const f32| f32x8::from(*(p as *const [f32; 8]));
    let mut acc = [[f32x8::ZERO; 2]; 4];
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
            let out: [f32; 8] = (*r + load(bias.add(v * 8))).into();
            std::ptr::copy_nonoverlapping(out.as_ptr(), tile.add(i * 16 + v * 8), 8);
        }
    }
}

fn microkernel(isa: Isa) -> Microkernel {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => x86::avx512_8x32,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => x86::avx2_6x16,
        _ => portable_4x16,
    }
}

/// Rows of x one task walks through while it sweeps its panels (keeps them in L2).
const ROW_BLOCK_TILES: usize = 12;
/// Panels one task covers.
const PANELS_PER_TASK: usize = 4;

pub fn gemm(pool: &rayon::ThreadPool, x: &[f32], m: usize, w: &PackedLinear, act: Option<Activation>, y: &mut [f32]) {
    let (k, n) = (w.k, w.n);
    assert_eq!(x.len(), m * k);
    assert_eq!(y.len(), m * n);
    if m == 0 {
        return;
    }
    let (mr, nr) = w.isa.tile();
    let kernel = microkernel(w.isa);
    let row_block = mr * ROW_BLOCK_TILES;
    let num_panels = n.div_ceil(nr);
    let panel_groups = num_panels.div_ceil(PANELS_PER_TASK);
    let tasks = m.div_ceil(row_block) * panel_groups;
    let out = SendPtr(y.as_mut_ptr());

    let run_task = |t: usize| {
        let (rb, g) = (t / panel_groups, t % panel_groups);
        let rows = rb * row_block..((rb + 1) * row_block).min(m);
        // The last, partial MR rows go through a zero-padded copy so the kernel sees MR rows.
        let tail_start = rows.end - (rows.end - rows.start) % mr;
        let tail: Vec<f32> = if tail_start < rows.end {
            let mut buf = vec![0.0f32; mr * k];
            buf[..(rows.end - tail_start) * k].copy_from_slice(&x[tail_start * k..rows.end * k]);
            buf
        } else {
            Vec::new()
        };
        let mut tile = [0.0f32; MAX_TILE];
        for panel in g * PANELS_PER_TASK..((g + 1) * PANELS_PER_TASK).min(num_panels) {
            let col0 = panel * nr;
            let cols = nr.min(n - col0);
            let b = w.panels[panel * k * nr..].as_ptr();
            let bias = w.bias[col0..].as_ptr();
            for row0 in rows.clone().step_by(mr) {
                let a = if row0 < tail_start { x[row0 * k..].as_ptr() } else { tail.as_ptr() };
                let valid_rows = mr.min(rows.end - row0);
                // SAFETY: `a` has MR rows of k floats, `b` a full k×NR panel, `bias` NR floats
                // (padded at pack time), `tile` MR×NR floats.
                unsafe { kernel(k, a, k, b, bias, tile.as_mut_ptr()) };
                for i in 0..valid_rows {
                    // SAFETY: tasks write disjoint (row, column) ranges of y, all in bounds.
                    let dst = unsafe { std::slice::from_raw_parts_mut(out.get().add((row0 + i) * n + col0), cols) };
                    dst.copy_from_slice(&tile[i * nr..i * nr + cols]);
                    activate_inplace(act, dst);
                }
            }
        }
    };
    if tasks == 1 {
        run_task(0);
    } else {
        pool.install(|| (0..tasks).into_par_iter().for_each(run_task));
    }
}
