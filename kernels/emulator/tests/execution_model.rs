//! The emulator's own semantics, on the small kernels of selftest/emulator_selftest.cu: that
//! __syncthreads is a real barrier (and its absence shows), warp shuffles exchange what CUDA
//! says they do, undefined behaviour (divergent barriers, lanes that do not exist, accesses past
//! a buffer, PTX it cannot execute) fails the launch with a message, and the PTX conversion
//! honours each rounding modifier.
mod common;

use std::sync::Arc;

use bge_cuda_emulator::{device, last_error};
use bge_engine::backend::cuda::nvrtc::{self, KernelFile, Target};
use common::*;
use cudarc::driver::{CudaFunction, CudaStream, DriverError, LaunchConfig, PushKernelArg};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SELFTEST: KernelFile = KernelFile { name: "emulator_selftest.cu", source: include_str!("../selftest/emulator_selftest.cu") };

fn function(name: &str) -> CudaFunction {
    device().module(&SELFTEST).unwrap().load_function(name).unwrap()
}

fn stream() -> Arc<CudaStream> {
    device().stream.clone()
}

fn config(blocks: u32, threads: u32) -> LaunchConfig {
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 }
}

/// The launch's error and the emulator's message for it.
fn failure<T>(r: Result<T, DriverError>) -> (String, String) {
    match r {
        Ok(_) => panic!("the launch should have failed"),
        Err(e) => (format!("{e:?}"), last_error()),
    }
}

fn neighbour_sum(input: &[f32], threads: usize, use_barrier: bool) -> Vec<f32> {
    let s = stream();
    let x = s.clone_htod(input).unwrap();
    let mut out = s.clone_htod(&vec![f32::NAN; input.len()]).unwrap();
    let f = function("neighbour_sum");
    let flag = use_barrier as i32;
    let mut l = s.launch_builder(&f);
    l.arg(&x).arg(&mut out).arg(&flag);
    unsafe { l.launch(config((input.len() / threads) as u32, threads as u32)) }.unwrap();
    s.clone_dtoh(&out).unwrap()
}

fn neighbour_sum_reference(input: &[f32], threads: usize) -> Vec<f32> {
    input
        .chunks(threads)
        .flat_map(|b| (0..threads).map(move |t| b[(t + threads - 1) % threads] + b[t] + b[(t + 1) % threads]))
        .collect()
}

#[test]
fn barrier_makes_shared_memory_writes_visible() {
    let mut rng = StdRng::seed_from_u64(1);
    for threads in [32, 96, 256, 1024] {
        let input = random(&mut rng, 3 * threads, 1.0);
        let want = neighbour_sum_reference(&input, threads);
        under_each_schedule(|s| assert_eq!(neighbour_sum(&input, threads, true), want, "{threads} threads, {s:?}"));
    }
}

/// Without the barrier a thread reads neighbours that have not run yet: the emulator must show
/// that under either schedule, or a kernel missing a barrier could pass.
#[test]
fn a_missing_barrier_gives_wrong_results() {
    let mut rng = StdRng::seed_from_u64(2);
    for threads in [32, 256] {
        let input = random(&mut rng, 2 * threads, 1.0);
        let want = neighbour_sum_reference(&input, threads);
        under_each_schedule(|s| {
            let got = neighbour_sum(&input, threads, false);
            let wrong = got.iter().zip(&want).filter(|(a, b)| a != b).count();
            assert!(wrong > 0, "{threads} threads, {s:?}: a missing barrier went unnoticed");
        });
    }
}

#[test]
fn block_sum_adds_up_every_block_size() {
    let mut rng = StdRng::seed_from_u64(3);
    for threads in [32usize, 64, 96, 128, 256, 1024] {
        let blocks = 3;
        let input = random(&mut rng, blocks * threads, 1.0);
        under_each_schedule(|s| {
            let st = stream();
            let x = st.clone_htod(&input).unwrap();
            let mut out = st.clone_htod(&vec![f32::NAN; blocks]).unwrap();
            let f = function("block_sums");
            let mut l = st.launch_builder(&f);
            l.arg(&x).arg(&mut out);
            unsafe { l.launch(config(blocks as u32, threads as u32)) }.unwrap();
            let got = st.clone_dtoh(&out).unwrap();
            for (b, g) in got.iter().enumerate() {
                let want: f64 = input[b * threads..(b + 1) * threads].iter().map(|v| *v as f64).sum();
                assert!((*g as f64 - want).abs() < 1e-4, "{threads} threads, {s:?}, block {b}: {g} vs {want}");
            }
        });
    }
}

#[test]
fn warp_shuffles_follow_cuda_semantics() {
    let threads = 64usize;
    let input: Vec<i32> = (0..threads as i32).map(|t| 1000 + 7 * t).collect();
    let s = stream();
    let x = s.clone_htod(&input).unwrap();
    let mut out = s.clone_htod(&vec![-1i32; 5 * threads]).unwrap();
    let f = function("warp_shuffles");
    let mut l = s.launch_builder(&f);
    l.arg(&x).arg(&mut out);
    unsafe { l.launch(config(1, threads as u32)) }.unwrap();
    let got = s.clone_dtoh(&out).unwrap();
    for t in 0..threads {
        let (warp, lane) = (t / 32 * 32, t % 32);
        let v = |l: usize| input[warp + l];
        // Sources outside the warp (or the width-8 segment, going up) return the lane's own value.
        let down = if lane + 3 < 32 { v(lane + 3) } else { v(lane) };
        let up = if lane >= 3 { v(lane - 3) } else { v(lane) };
        let want = [v(lane ^ 5), down, up, v(7), v(lane ^ 4)];
        assert_eq!(&got[5 * t..5 * t + 5], &want, "thread {t}");
    }
}

#[test]
fn a_barrier_some_threads_skip_fails_the_launch() {
    let f = function("barrier_some_threads_skip");
    let s = stream();
    let waiting = 16i32;
    let mut l = s.launch_builder(&f);
    l.arg(&waiting);
    let (e, message) = failure(unsafe { l.launch(config(1, 64)) });
    assert!(e.contains("CUDA_ERROR_LAUNCH_FAILED"), "{e}");
    assert!(message.contains("deadlock") && message.contains("not every thread of the block"), "{message}");
    // Every thread reaching it is fine.
    let all = 64i32;
    let mut l = s.launch_builder(&f);
    l.arg(&all);
    unsafe { l.launch(config(2, 64)) }.unwrap();
}

#[test]
fn threads_at_different_barriers_fail_the_launch() {
    let f = function("barriers_at_two_places");
    let (e, message) = failure(unsafe { stream().launch_builder(&f).launch(config(1, 64)) });
    assert!(e.contains("CUDA_ERROR_LAUNCH_FAILED"), "{e}");
    assert!(message.contains("different __syncthreads"), "{message}");
}

#[test]
fn a_full_warp_shuffle_in_a_partial_warp_fails_the_launch() {
    let s = stream();
    let mut out = s.clone_htod(&[0.0f32; 64]).unwrap();
    let f = function("shuffle_in_partial_warp");
    let mut l = s.launch_builder(&f);
    l.arg(&mut out);
    let (e, message) = failure(unsafe { l.launch(config(1, 48)) });
    assert!(e.contains("CUDA_ERROR_LAUNCH_FAILED"), "{e}");
    assert!(message.contains("lanes that do not exist"), "{message}");
    let mut l = s.launch_builder(&f);
    l.arg(&mut out);
    unsafe { l.launch(config(1, 64)) }.unwrap();
    assert!(s.clone_dtoh(&out).unwrap().iter().all(|v| *v == 32.0));
}

#[test]
fn a_write_past_the_end_of_a_buffer_is_an_illegal_address() {
    let s = stream();
    let mut out = s.clone_htod(&[0.0f32; 64]).unwrap();
    let f = function("write_shifted");
    for offset in [0i32, 1] {
        let mut l = s.launch_builder(&f);
        l.arg(&mut out).arg(&offset);
        let r = unsafe { l.launch(config(1, 64)) };
        if offset == 0 {
            r.unwrap();
        } else {
            let (e, message) = failure(r);
            assert!(e.contains("CUDA_ERROR_ILLEGAL_ADDRESS"), "{e}");
            assert!(message.contains("thread (63,0,0)") && message.contains("0 bytes past the end of a 256-byte device buffer"), "{message}");
        }
    }
}

#[test]
fn ptx_it_cannot_execute_fails_the_launch() {
    let s = stream();
    let x = s.clone_htod(&[1.0f32; 32]).unwrap();
    let mut out = s.clone_htod(&[0u16; 32]).unwrap();
    let f = function("unsupported_ptx");
    let mut l = s.launch_builder(&f);
    l.arg(&x).arg(&mut out);
    let (e, message) = failure(unsafe { l.launch(config(1, 32)) });
    assert!(e.contains("CUDA_ERROR_LAUNCH_FAILED"), "{e}");
    assert!(message.contains("cvt.rn.ftz.f16.f32") && message.contains(".ftz is not emulated"), "{message}");
}

/// The neighbours of `x` in a 16-bit format given by its round-to-nearest-even result `r`,
/// and the result of each rounding mode: [rn, rz, rm, rp].
fn modes(x: f32, rne_bits: u16, to_f32: impl Fn(u16) -> f32) -> [u16; 4] {
    let next = |b: u16, up: bool| -> u16 {
        let negative = b & 0x8000 != 0;
        match (b & 0x7fff == 0, up, negative) {
            (true, true, _) => 0x0001,  // ±0 -> smallest positive
            (true, false, _) => 0x8001, // ±0 -> smallest negative
            (false, true, false) | (false, false, true) => b + 1,
            _ => b - 1,
        }
    };
    let v = to_f32(rne_bits);
    if v == x {
        return [rne_bits; 4];
    }
    let (lo, hi) = if v < x { (rne_bits, next(rne_bits, true)) } else { (next(rne_bits, false), rne_bits) };
    let toward_zero = if x > 0.0 { lo } else { hi };
    [rne_bits, toward_zero, lo, hi]
}

#[test]
fn ptx_conversions_honour_each_rounding_mode() {
    let mut rng = StdRng::seed_from_u64(4);
    let mut input: Vec<f32> = (0..20_000).map(|_| f32::from_bits(rng.random::<u32>())).filter(|v| !v.is_nan()).collect();
    input.extend((0..20_000).map(|_| rng.random_range(-70_000.0f32..70_000.0)));
    input.extend([0.0, -0.0, 1e-8, -1e-8, 3e-8, 65504.0, 65519.0, 65520.0, -65520.0, 1e30, -1e30, f32::INFINITY, f32::NEG_INFINITY]);
    input.extend([f32::MIN_POSITIVE, -f32::MIN_POSITIVE, 1e-40, -1e-40, f32::MAX, f32::MIN]);
    let n = input.len();
    let s = stream();
    let x = s.clone_htod(&input).unwrap();
    let mut h = s.clone_htod(&vec![0u16; 4 * n]).unwrap();
    let mut b = s.clone_htod(&vec![0u16; 4 * n]).unwrap();
    let f = function("cvt_rounding_modes");
    let n_u = n as u64;
    let mut l = s.launch_builder(&f);
    l.arg(&x).arg(&mut h).arg(&mut b).arg(&n_u);
    unsafe { l.launch(config(n.div_ceil(256) as u32, 256)) }.unwrap();
    let (h, b) = (s.clone_dtoh(&h).unwrap(), s.clone_dtoh(&b).unwrap());
    for (i, &v) in input.iter().enumerate() {
        let want_h = modes(v, half::f16::from_f32(v).to_bits(), |b| half::f16::from_bits(b).to_f32());
        assert_eq!(&h[4 * i..4 * i + 4], &want_h, "f16 of {v:e} ({:#010x}) in rn rz rm rp", v.to_bits());
        let want_b = modes(v, half::bf16::from_f32(v).to_bits(), |b| half::bf16::from_bits(b).to_f32());
        assert_eq!(&b[4 * i..4 * i + 4], &want_b, "bf16 of {v:e} ({:#010x}) in rn rz rm rp", v.to_bits());
    }
}

/// The fake NVRTC refuses kernel text other than what the emulator compiled, so an edited
/// kernel can never be tested against a stale build.
#[test]
fn only_the_kernel_text_the_emulator_compiled_is_accepted() {
    device();
    let edited = KernelFile { name: "pooling.cu", source: "// not the kernel file\n" };
    let e = nvrtc::compile(&edited, Target::Cubin(90)).expect_err("an edited kernel file compiled");
    assert!(e.contains("differs from the text the CUDA emulator was built from"), "{e}");
    let unknown = KernelFile { name: "nonexistent.cu", source: "" };
    assert!(nvrtc::compile(&unknown, Target::Cubin(90)).is_err());
    nvrtc::compile(&SELFTEST, Target::Cubin(90)).unwrap();
}

#[test]
fn a_block_beyond_launch_bounds_is_refused() {
    let s = stream();
    let mut out = s.clone_htod(&[0.0f32; 128]).unwrap();
    let f = function("bounded_to_64");
    let mut l = s.launch_builder(&f);
    l.arg(&mut out);
    unsafe { l.launch(config(1, 64)) }.unwrap();
    let mut l = s.launch_builder(&f);
    l.arg(&mut out);
    let (e, message) = failure(unsafe { l.launch(config(1, 128)) });
    assert!(e.contains("CUDA_ERROR_INVALID_VALUE"), "{e}");
    assert!(message.contains("__launch_bounds__(64)"), "{message}");
}

#[test]
fn an_index_past_a_shared_tile_fails_the_launch() {
    let s = stream();
    let mut out = s.clone_htod(&[0.0f32; 64]).unwrap();
    let f = function("shared_tile_shifted");
    for offset in [0i32, 1] {
        let mut l = s.launch_builder(&f);
        l.arg(&mut out).arg(&offset);
        let r = unsafe { l.launch(config(1, 64)) };
        if offset == 0 {
            r.unwrap();
            assert_eq!(s.clone_dtoh(&out).unwrap(), (0..64).map(|t| t as f32).collect::<Vec<_>>());
        } else {
            let (e, message) = failure(r);
            assert!(e.contains("CUDA_ERROR_ILLEGAL_INSTRUCTION"), "{e}");
            assert!(message.contains("thread (63,0,0)") && message.contains("fixed-size array"), "{message}");
        }
    }
}
