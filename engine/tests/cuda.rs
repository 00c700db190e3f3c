//! The CUDA backend. Two kinds of tests live here:
//!
//! - Without a GPU: every file in kernels/ compiles with NVRTC for sm_80 and sm_90, defines
//!   every function the launchers resolve, and documents itself; and asking for CUDA where
//!   there is none is a clean `DeviceUnavailable` error, never a panic. These FAIL when NVRTC
//!   cannot be found, so CI cannot pass them by accident: run scripts/gpu/install_nvrtc.sh
//!   first (it installs NVRTC into .cuda-tools, which this test finds; or set
//!   BGE_CUDA_TOOLS to another such directory).
//! - With a GPU: every kernel against backend/reference.rs (or heads/pooled.rs) on random data of
//!   awkward sizes, with outputs poisoned with NaN beforehand so an unwritten element shows;
//!   the whole model against the CPU backend (cosine >= 0.9999); and batch invariance. They
//!   print a loud SKIPPED line and return when there is no GPU.
mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bge_engine::backend::cuda::nvrtc::{self, Target, KERNEL_FILES};
use bge_engine::backend::cuda::{self, probe, Device, Half, Kernels};
use bge_engine::models::encoder::cuda::CudaEncoder;
use bge_engine::backend::{reference, BackendKind};
use bge_engine::batch::PackedBatch;
use bge_engine::config::{Activation, Pooling};
use bge_engine::error::{Error, ErrorKind};
use bge_engine::models::Forward;
use bge_engine::tokenize::Encoded;
use bge_engine::{Model, RunOptions};
use common::*;
use cudarc::driver::CudaSlice;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

// ---------------------------------------------------------------------------------------------
// NVRTC: no GPU needed.

/// The repository: the working directory when it is one (a test binary carried to a GPU
/// machine runs from a copy of the repository elsewhere), else where this file was built.
fn repo_root() -> PathBuf {
    let cwd = std::env::current_dir().unwrap();
    if cwd.join("kernels").is_dir() && cwd.join("engine/tests/goldens").is_dir() {
        return cwd;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// common::goldens(), read from [`repo_root`].
fn goldens_here() -> Goldens {
    let path = repo_root().join("engine/tests/goldens/all-MiniLM-L6-v2.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

fn tools_dir() -> PathBuf {
    std::env::var_os("BGE_CUDA_TOOLS").map(PathBuf::from).unwrap_or_else(|| repo_root().join(".cuda-tools"))
}

/// The directory holding libnvrtc.so* under the tools directory (pip's nvidia/cu*/lib layout).
fn tools_nvrtc_dir() -> Option<PathBuf> {
    std::fs::read_dir(tools_dir().join("nvidia"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("lib"))
        .find(|lib| std::fs::read_dir(lib).into_iter().flatten().flatten().any(|e| e.file_name().to_string_lossy().starts_with("libnvrtc.so")))
}

/// Makes NVRTC loadable: from $BGE_CUDA_TOOLS or <repo>/.cuda-tools, else from the system.
/// Panics with the fix when there is none.
fn load_nvrtc() {
    let tools = tools_dir();
    match tools_nvrtc_dir() {
        Some(dir) => {
            probe::load_nvrtc_from(&dir).unwrap_or_else(|e| panic!("NVRTC in {} does not load: {e}", dir.display()));
        }
        None => {
            if let Err(e) = probe::nvrtc() {
                panic!(
                    "NVRTC not found, so the CUDA kernels cannot be compile-checked: {e}.\n\
                     Run scripts/gpu/install_nvrtc.sh (installs it from PyPI into {}), or set BGE_CUDA_TOOLS.",
                    tools.display()
                );
            }
        }
    }
}

#[test]
fn kernel_directory_matches_the_embedded_list() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(repo_root().join("kernels"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".cu"))
        .collect();
    let embedded: BTreeSet<String> = KERNEL_FILES.iter().map(|f| f.name.to_string()).collect();
    assert_eq!(on_disk, embedded, "kernels/*.cu and nvrtc::KERNEL_FILES must list the same files");
    for file in KERNEL_FILES {
        let disk = std::fs::read_to_string(repo_root().join("kernels").join(file.name)).unwrap();
        assert_eq!(disk, file.source, "{}: the embedded copy is stale (rebuild)", file.name);
        let header: String = file.source.lines().take_while(|l| l.starts_with("//")).collect::<Vec<_>>().join("\n");
        for needed in ["Must match:", "Layout", "Launch:"] {
            assert!(header.contains(needed), "{}: the opening comment must say \"{needed}\"", file.name);
        }
    }
}

#[test]
fn every_kernel_compiles_for_sm80_and_sm90() {
    load_nvrtc();
    let (major, minor) = nvrtc::version().expect("nvrtcVersion");
    eprintln!("NVRTC {major}.{minor}");
    let mut failures = Vec::new();
    for file in KERNEL_FILES {
        for target in [Target::Cubin(80), Target::Cubin(90)] {
            let started = std::time::Instant::now();
            match nvrtc::compile(&file, target) {
                Ok(image) => {
                    assert!(image.len() > 100, "{} for {target}: suspiciously small image", file.name);
                    eprintln!("  {} for {target}: {} bytes in {:.1?}", file.name, image.len(), started.elapsed());
                }
                Err(e) => failures.push(e),
            }
        }
    }
    assert!(failures.is_empty(), "kernels that do not compile:\n{}", failures.join("\n\n"));
}

#[test]
fn every_launched_function_is_defined() {
    load_nvrtc();
    // PTX names every entry point; compile each file once and look the launchers' names up.
    let mut ptx_of = std::collections::HashMap::new();
    for precision in [Half::F16, Half::Bf16] {
        for (file, name) in Kernels::function_names(precision) {
            let ptx = ptx_of.entry(file.name).or_insert_with(|| {
                let image = nvrtc::compile(&file, Target::Ptx(80)).unwrap_or_else(|e| panic!("{e}"));
                String::from_utf8_lossy(&image).into_owned()
            });
            assert!(ptx.contains(&format!(".entry {name}(")), "{} defines no kernel {name}", file.name);
        }
    }
}

#[test]
fn target_choice_follows_the_gpu() {
    load_nvrtc();
    assert_eq!(nvrtc::target_for(90).unwrap(), Target::Cubin(90));
    assert_eq!(nvrtc::target_for(80).unwrap(), Target::Cubin(80));
    // A GPU newer than this NVRTC gets PTX for the newest architecture it knows.
    let newest = *nvrtc::supported_archs().unwrap().iter().max().unwrap();
    assert_eq!(nvrtc::target_for(newest + 1).unwrap(), Target::Ptx(newest));
    assert!(nvrtc::target_for(10).is_err());
}

// ---------------------------------------------------------------------------------------------
// No GPU: clean errors.

/// Runs the test `name` of this binary alone in a child process, with `env` set (None: removed);
/// the child must pass. Returns its stdout and stderr.
fn run_child(name: &str, env: &[(&str, Option<&std::ffi::OsStr>)]) -> String {
    run_child_with(std::process::Command::new(std::env::current_exe().unwrap()), name, env)
}

/// This test binary started by the dynamic loader itself with `--inhibit-cache` and `stubs`
/// as its library path, where that loader exists (x86-64 glibc), else started directly.
fn without_loader_cache(stubs: &Path) -> std::process::Command {
    let loader = Path::new("/lib64/ld-linux-x86-64.so.2");
    if !loader.exists() {
        return std::process::Command::new(std::env::current_exe().unwrap());
    }
    let mut cmd = std::process::Command::new(loader);
    cmd.arg("--inhibit-cache").arg("--library-path").arg(stubs).arg(std::env::current_exe().unwrap());
    cmd
}

fn run_child_with(mut cmd: std::process::Command, name: &str, env: &[(&str, Option<&std::ffi::OsStr>)]) -> String {
    cmd.args(["--exact", name, "--nocapture", "--test-threads=1"]);
    for (key, value) in env {
        match value {
            Some(v) => cmd.env(key, v),
            None => cmd.env_remove(key),
        };
    }
    let out = cmd.output().unwrap();
    let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "child {name} failed:\n{text}");
    text
}

#[test]
fn without_a_gpu_cuda_is_a_clean_error() {
    // On a machine with a GPU the same checks run in a child process that sees none
    // (CUDA_VISIBLE_DEVICES="" makes the real driver's cuInit report no device).
    if std::env::var_os("BGE_NO_GPU_CHILD").is_none() && cuda::available() {
        let out = run_child(
            "without_a_gpu_cuda_is_a_clean_error",
            &[("BGE_NO_GPU_CHILD", Some("1".as_ref())), ("CUDA_VISIBLE_DEVICES", Some("".as_ref()))],
        );
        assert!(out.contains("no GPU here, as expected"), "the child did not check the no-GPU path:\n{out}");
        return;
    }
    let dev = cuda::device();
    let err = dev.err().expect("a CUDA device where none should be visible");
    assert!(matches!(err, Error::DeviceUnavailable(_)), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::DeviceUnavailable);
    assert!(err.to_string().starts_with("CUDA is not available: "), "{err}");
    assert!(err.hint().unwrap().contains("bge.device"));
    eprintln!("no GPU here, as expected: {err}");
    // The failed probe is remembered, not retried.
    assert_eq!(cuda::probed(), Some(false));
    assert!(!cuda::available());
    // Loading a model on CUDA fails the same way, after the model files were read fine.
    match Model::load("all-MiniLM-L6-v2", &minilm(), BackendKind::Cuda) {
        Err(Error::DeviceUnavailable(_)) => {}
        Err(other) => panic!("expected DeviceUnavailable, got {other:?}"),
        Ok(_) => panic!("a CUDA model loaded without a GPU"),
    }
}

/// A machine with the NVIDIA driver installed but no GPU (a container without the device, a
/// host whose GPU is gone) is the case `bge.device = auto` meets most. A stub libcuda.so.1 whose
/// cuInit answers CUDA_ERROR_NO_DEVICE stands in for it, in a child process so this process's
/// remembered probe is not disturbed. The same stub without NVRTC checks that message too.
#[test]
fn stub_driver_without_gpu_is_a_clean_error() {
    // NVRTC for the child that should find one: the test's own copy, else the system's.
    let nvrtc_dir = tools_nvrtc_dir().or_else(system_nvrtc_dir).unwrap_or_else(|| {
        panic!("NVRTC not found under {} nor the CUDA library directories: run scripts/gpu/install_nvrtc.sh", tools_dir().display())
    });
    let stubs = temp_dir("cuda-stub-driver");
    let build = |file: &str, soname: &str, code: &str| {
        let src = stubs.join(format!("{file}.c"));
        std::fs::write(&src, code).unwrap();
        let out = std::process::Command::new("cc")
            .args(["-shared", "-fPIC", &format!("-Wl,-soname,{soname}"), "-o"])
            .arg(stubs.join(soname))
            .arg(&src)
            .output()
            .expect("a C compiler (cc) to build the stub driver");
        assert!(out.status.success(), "cc: {}", String::from_utf8_lossy(&out.stderr));
    };
    build(
        "cuda",
        "libcuda.so.1",
        "int cuInit(unsigned flags) { return 100; /* CUDA_ERROR_NO_DEVICE */ }\n\
         int cuDeviceGetCount(int *n) { *n = 0; return 0; }\n",
    );
    build("cublas", "libcublas.so.13", "void pg_bge_stub_cublas(void) {}\n");
    // Under every other name cudarc tries too, so none of them reaches a real library.
    for (lib, stub) in [("cuda", "libcuda.so.1"), ("cublas", "libcublas.so.13")] {
        for name in cudarc::get_lib_name_candidates(lib) {
            let link = stubs.join(&name);
            if !link.exists() {
                std::os::unix::fs::symlink(stub, &link).unwrap();
            }
        }
    }

    // The stubs come first on the library path, and on a machine with the real libraries the
    // child runs through the dynamic loader with its cache off, so the driver, NVRTC and
    // cuBLAS that ldconfig knows stay out of sight; CUDA_HOME points at the stub directory so
    // no toolkit directory is searched either.
    let child = |with_nvrtc: bool| {
        let found_nvrtc = nvrtc_dir.as_os_str();
        let out = run_child_with(
            without_loader_cache(&stubs),
            "stub_driver_child",
            &[
                ("BGE_STUB_DRIVER_CHILD", Some("1".as_ref())),
                ("LD_LIBRARY_PATH", Some(stubs.as_os_str())),
                ("CUDA_HOME", Some(stubs.as_os_str())),
                ("CUDA_PATH", None),
                // Found by path, not on LD_LIBRARY_PATH: exercises BGE_CUDA_LIB_DIR and the
                // libnvrtc-builtins preload.
                ("BGE_CUDA_LIB_DIR", with_nvrtc.then_some(found_nvrtc)),
            ],
        );
        out.lines().find_map(|l| l.split_once("CHILD-RESULT: ").map(|(_, r)| r.to_string())).unwrap_or_else(|| panic!("child printed no result:\n{out}"))
    };
    assert_eq!(child(true), "CUDA is not available: no CUDA GPU is visible to this process");
    assert_eq!(child(false), "CUDA is not available: NVRTC, the CUDA runtime compiler (libnvrtc.so), cannot be loaded");
}

/// The directory of the machine's own NVRTC, among those the probe searches.
fn system_nvrtc_dir() -> Option<PathBuf> {
    probe::extra_dirs().into_iter().find(|d| std::fs::read_dir(d).into_iter().flatten().flatten().any(|e| e.file_name().to_string_lossy().starts_with("libnvrtc.so")))
}

/// Run by stub_driver_without_gpu_is_a_clean_error in a child process; a no-op otherwise.
#[test]
fn stub_driver_child() {
    if std::env::var_os("BGE_STUB_DRIVER_CHILD").is_none() {
        return;
    }
    let err = match cuda::device() {
        Ok(_) => panic!("the stub driver produced a device"),
        Err(e) => e,
    };
    assert!(matches!(err, Error::DeviceUnavailable(_)), "{err:?}");
    // A CUDA model load fails the same way, without a panic.
    assert!(matches!(Model::load("all-MiniLM-L6-v2", &minilm(), BackendKind::Cuda), Err(Error::DeviceUnavailable(_))));
    println!("CHILD-RESULT: {err}");
}

// ---------------------------------------------------------------------------------------------
// GPU: kernels against the reference.

/// The GPU, or None after a loud message.
fn gpu(test: &str) -> Option<Arc<Device>> {
    match cuda::device() {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("\n*** SKIPPED {test}: no usable GPU ({e}) ***\n");
            None
        }
    }
}

/// 16-bit NaN of each precision, to poison outputs.
fn nan16(p: Half) -> u16 {
    match p {
        Half::F16 => 0x7e00,
        Half::Bf16 => 0x7fc0,
    }
}

fn widen(p: Half, bits: &[u16]) -> Vec<f32> {
    bits.iter()
        .map(|&b| match p {
            Half::F16 => half::f16::from_bits(b).to_f32(),
            Half::Bf16 => half::bf16::from_bits(b).to_f32(),
        })
        .collect()
}

fn narrow(p: Half, v: f32) -> u16 {
    match p {
        Half::F16 => half::f16::from_f32(v).to_bits(),
        Half::Bf16 => half::bf16::from_f32(v).to_bits(),
    }
}

/// Relative size of one rounding step of the 16-bit type.
fn ulp16(p: Half) -> f32 {
    match p {
        Half::F16 => 1.0 / 1024.0,
        Half::Bf16 => 1.0 / 128.0,
    }
}

struct Gpu {
    dev: Arc<Device>,
}

impl Gpu {
    fn up<T: cudarc::driver::DeviceRepr>(&self, v: &[T]) -> CudaSlice<T> {
        self.dev.stream.clone_htod(v).unwrap()
    }
    fn down<T: cudarc::driver::DeviceRepr + Default + Clone>(&self, b: &CudaSlice<T>) -> Vec<T> {
        self.dev.stream.clone_dtoh(b).unwrap()
    }
    fn poisoned_f32(&self, n: usize) -> CudaSlice<f32> {
        self.up(&vec![f32::NAN; n])
    }
    fn poisoned_16(&self, p: Half, n: usize) -> CudaSlice<u16> {
        self.up(&vec![nan16(p); n])
    }
}

fn cu_seqlens(batch: &PackedBatch) -> Vec<i32> {
    batch.cu_seqlens.iter().map(|&c| c as i32).collect()
}

const PRECISIONS: [Half; 2] = [Half::F16, Half::Bf16];

#[test]
fn gpu_casts_round_like_the_half_crate() {
    let Some(dev) = gpu("gpu_casts_round_like_the_half_crate") else { return };
    let g = Gpu { dev: dev.clone() };
    let _exec = dev.exec();
    let mut rng = StdRng::seed_from_u64(1);
    let mut input = random(&mut rng, 100_003, 70_000.0);
    input.extend([0.0, -0.0, 1e-8, -1e-8, 65504.0, 65520.0, 1e30, f32::INFINITY, f32::NEG_INFINITY, 5.96e-8, 6.1e-5]);
    for p in PRECISIONS {
        let k = Kernels::load(&dev, p).unwrap();
        let n = input.len();
        let x = g.up(&input);
        let mut narrow_buf = g.poisoned_16(p, n);
        k.cast_from_f32(&dev.stream, &x, n, &mut narrow_buf).unwrap();
        let got = g.down(&narrow_buf);
        for (i, (&v, &b)) in input.iter().zip(&got).enumerate() {
            assert_eq!(b, narrow(p, v), "{p:?} cast of {v} (index {i})");
        }
        let mut wide = g.poisoned_f32(n);
        k.cast_to_f32(&dev.stream, &narrow_buf, n, &mut wide).unwrap();
        let back = g.down(&wide);
        for (i, (&b, &w)) in got.iter().zip(&back).enumerate() {
            assert_eq!(w.to_bits(), widen(p, &[b])[0].to_bits(), "{p:?} widening of {b:#06x} (index {i})");
        }
    }
}

#[test]
fn gpu_embedding_layer_norm_matches_reference() {
    let Some(dev) = gpu("gpu_embedding_layer_norm_matches_reference") else { return };
    let g = Gpu { dev: dev.clone() };
    let _exec = dev.exec();
    let mut rng = StdRng::seed_from_u64(2);
    for p in PRECISIONS {
        let k = Kernels::load(&dev, p).unwrap();
        for &h in &[33usize, 384, 768, 1000, 1537] {
            for &tokens in &[1usize, 7, 300] {
                let (vocab, max_pos, types) = (97, 513, 2);
                let word = random(&mut rng, vocab * h, 1.0);
                let pos = random(&mut rng, max_pos * h, 1.0);
                let ty = random(&mut rng, types * h, 1.0);
                let gamma = random(&mut rng, h, 2.0);
                let beta = random(&mut rng, h, 1.0);
                let ids: Vec<u32> = (0..tokens).map(|_| rng.random_range(0..vocab as u32)).collect();
                let positions: Vec<u32> = (0..tokens).map(|_| rng.random_range(0..max_pos as u32)).collect();
                let type_ids: Vec<u32> = (0..tokens).map(|_| rng.random_range(0..types as u32)).collect();
                let mut out32 = g.poisoned_f32(tokens * h);
                let mut out16 = g.poisoned_16(p, tokens * h);
                k.embed_layer_norm(
                    &dev.stream, tokens, h, &g.up(&ids), &g.up(&positions), &g.up(&type_ids), &g.up(&word), &g.up(&pos), &g.up(&ty), &g.up(&gamma), &g.up(&beta), 1e-12,
                    &mut out32, &mut out16,
                )
                .unwrap();
                // The reference: Encoder::embed_tokens's sum, then the scalar LayerNorm.
                let mut want = vec![0.0f32; tokens * h];
                for t in 0..tokens {
                    for c in 0..h {
                        want[t * h + c] = word[ids[t] as usize * h + c] + (pos[positions[t] as usize * h + c] + ty[type_ids[t] as usize * h + c]);
                    }
                }
                reference::add_layer_norm(&mut want, None, &gamma, &beta, 1e-12);
                let got32 = g.down(&out32);
                let e = rel_err(&got32, &want);
                assert!(e < 1e-5, "{p:?} h={h} tokens={tokens}: f32 rel err {e}");
                let e16 = rel_err(&widen(p, &g.down(&out16)), &want);
                assert!(e16 < ulp16(p), "{p:?} h={h} tokens={tokens}: 16-bit rel err {e16}");
            }
        }
    }
}

#[test]
fn gpu_bias_residual_layer_norm_matches_reference() {
    let Some(dev) = gpu("gpu_bias_residual_layer_norm_matches_reference") else { return };
    let g = Gpu { dev: dev.clone() };
    let _exec = dev.exec();
    let mut rng = StdRng::seed_from_u64(3);
    for p in PRECISIONS {
        let k = Kernels::load(&dev, p).unwrap();
        for &h in &[1usize, 33, 384, 1024, 1537, 2049] {
            for &rows in &[1usize, 7, 100] {
                let y = random(&mut rng, rows * h, 3.0);
                let bias = random(&mut rng, h, 1.0);
                let res = random(&mut rng, rows * h, 3.0);
                let gamma = random(&mut rng, h, 2.0);
                let beta = random(&mut rng, h, 1.0);
                let mut x32 = g.up(&res);
                let mut x16 = g.poisoned_16(p, rows * h);
                k.bias_residual_layer_norm(&dev.stream, rows, h, &g.up(&y), &g.up(&bias), &g.up(&gamma), &g.up(&beta), 1e-12, &mut x32, &mut x16).unwrap();
                let mut want: Vec<f32> = y.iter().enumerate().map(|(i, v)| v + bias[i % h]).collect();
                reference::add_layer_norm(&mut want, Some(&res), &gamma, &beta, 1e-12);
                let e = rel_err(&g.down(&x32), &want);
                assert!(e < 1e-5, "{p:?} h={h} rows={rows}: f32 rel err {e}");
                let e16 = rel_err(&widen(p, &g.down(&x16)), &want);
                assert!(e16 < ulp16(p), "{p:?} h={h} rows={rows}: 16-bit rel err {e16}");
            }
        }
    }
}

#[test]
fn gpu_bias_gelu_matches_reference() {
    let Some(dev) = gpu("gpu_bias_gelu_matches_reference") else { return };
    let g = Gpu { dev: dev.clone() };
    let _exec = dev.exec();
    let mut rng = StdRng::seed_from_u64(4);
    for p in PRECISIONS {
        let k = Kernels::load(&dev, p).unwrap();
        for act in [Activation::Gelu, Activation::GeluTanh] {
            for &(rows, cols) in &[(1usize, 1usize), (7, 1537), (300, 1536), (3, 70_001)] {
                let y = random(&mut rng, rows * cols, 6.0);
                let bias = random(&mut rng, cols, 1.0);
                let mut out = g.poisoned_16(p, rows * cols);
                k.bias_gelu(&dev.stream, act, rows, cols, &g.up(&y), &g.up(&bias), &mut out).unwrap();
                let want: Vec<f32> = y.iter().enumerate().map(|(i, v)| reference::activate(Some(act), v + bias[i % cols])).collect();
                let got = widen(p, &g.down(&out));
                // Elementwise: each value within one 16-bit rounding of the f64 reference.
                for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                    assert!(a.is_finite(), "{p:?} {act:?}: element {i} not written");
                    assert!((a - b).abs() <= ulp16(p) * b.abs().max(1e-3) + 1e-6, "{p:?} {act:?} rows={rows} cols={cols} [{i}]: {a} vs {b}");
                }
            }
        }
    }
}

#[test]
fn gpu_gemm_matches_reference() {
    let Some(dev) = gpu("gpu_gemm_matches_reference") else { return };
    let g = Gpu { dev: dev.clone() };
    let mut blas = dev.exec();
    let mut rng = StdRng::seed_from_u64(5);
    for p in PRECISIONS {
        for &(rows, out_f, in_f) in &[(1usize, 1usize, 1usize), (7, 33, 384), (300, 1152, 384), (33, 384, 1536), (1, 3072, 768)] {
            // Inputs already rounded to 16 bits, so only accumulation order and f32 sums differ.
            let x: Vec<u16> = random(&mut rng, rows * in_f, 1.0).into_iter().map(|v| narrow(p, v)).collect();
            let w: Vec<u16> = random(&mut rng, out_f * in_f, 0.5).into_iter().map(|v| narrow(p, v)).collect();
            let mut y = g.poisoned_f32(rows * out_f);
            blas.linear(&dev.stream, p, &g.up(&x), rows, &g.up(&w), out_f, in_f, &mut y).unwrap();
            let mut want = vec![0.0; rows * out_f];
            reference::linear(&widen(p, &x), rows, &widen(p, &w), &vec![0.0; out_f], out_f, in_f, None, &mut want);
            let e = rel_err(&g.down(&y), &want);
            assert!(e < 1e-5 * (in_f as f32).sqrt().max(1.0), "{p:?} [{rows}x{in_f}]·[{out_f}x{in_f}]ᵀ: rel err {e}");
        }
    }
}

#[test]
fn gpu_attention_matches_reference_on_varlen_batches() {
    let Some(dev) = gpu("gpu_attention_matches_reference_on_varlen_batches") else { return };
    let g = Gpu { dev: dev.clone() };
    let _exec = dev.exec();
    let mut rng = StdRng::seed_from_u64(6);
    for p in PRECISIONS {
        let k = Kernels::load(&dev, p).unwrap();
        for &(heads, d) in &[(12usize, 32usize), (2, 64), (12, 64), (3, 96), (1, 128)] {
            // Lengths around the 16-row warp, 64-key and 128-query tiles, singletons, and a 512.
            for lens in [vec![1], vec![7, 1, 33, 17], vec![63, 64, 65], vec![127, 128, 129], vec![100, 3, 257, 1], vec![512], vec![1, 1, 1, 1]] {
                let batch = batch_of(&lens);
                let t = batch.num_tokens();
                let hidden = heads * d;
                let qkv = random(&mut rng, t * 3 * hidden, 2.0);
                let bias = random(&mut rng, 3 * hidden, 0.5);
                let mut out = g.poisoned_16(p, t * hidden);
                k.attention(&dev.stream, &g.up(&qkv), &g.up(&bias), &g.up(&cu_seqlens(&batch)), batch.num_seqs(), batch.max_len, t, heads, d, &mut out).unwrap();
                let with_bias: Vec<f32> = qkv.iter().enumerate().map(|(i, v)| v + bias[i % (3 * hidden)]).collect();
                let mut want = vec![0.0; t * hidden];
                reference::attention(&with_bias, &batch, heads, d, &mut want, 0..batch.num_tokens());
                let e = rel_err(&widen(p, &g.down(&out)), &want);
                assert!(e < 2.0 * ulp16(p), "{p:?} heads={heads} d={d} lens={lens:?}: rel err {e}");
            }
        }
    }
}

#[test]
fn gpu_attention_keeps_sequences_apart() {
    let Some(dev) = gpu("gpu_attention_keeps_sequences_apart") else { return };
    let g = Gpu { dev: dev.clone() };
    let _exec = dev.exec();
    let k = Kernels::load(&dev, Half::F16).unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    let (heads, d) = (4, 32);
    let batch = batch_of(&[5, 90, 3]);
    let t = batch.num_tokens();
    let hd = heads * d;
    let mut qkv = random(&mut rng, t * 3 * hd, 1.0);
    let bias = random(&mut rng, 3 * hd, 0.5);
    let run = |qkv: &[f32]| {
        let mut out = g.poisoned_16(Half::F16, t * hd);
        k.attention(&dev.stream, &g.up(qkv), &g.up(&bias), &g.up(&cu_seqlens(&batch)), 3, batch.max_len, t, heads, d, &mut out).unwrap();
        g.down(&out)
    };
    let before = run(&qkv);
    for v in &mut qkv[5 * 3 * hd..95 * 3 * hd] {
        *v += 1.0;
    }
    let after = run(&qkv);
    assert!(before[..5 * hd] == after[..5 * hd] && before[95 * hd..] == after[95 * hd..], "a sequence saw its neighbour");
    assert!(before[5 * hd..95 * hd] != after[5 * hd..95 * hd]);
}

#[test]
fn gpu_pooling_matches_reference() {
    let Some(dev) = gpu("gpu_pooling_matches_reference") else { return };
    let g = Gpu { dev: dev.clone() };
    let _exec = dev.exec();
    let k = Kernels::load(&dev, Half::F16).unwrap();
    let mut rng = StdRng::seed_from_u64(8);
    for &h in &[1usize, 33, 384, 1000] {
        for lens in [vec![1], vec![7, 1, 300], vec![2, 513]] {
            let batch = batch_of(&lens);
            let t = batch.num_tokens();
            let states = random(&mut rng, t * h, 3.0);
            // The four encoder modes in every combination, last-token alone and with all of them.
            for bits in (1..16u32).chain([16, 31]) {
                let pooling = Pooling { cls: bits & 1 != 0, max: bits & 2 != 0, mean: bits & 4 != 0, mean_sqrt_len: bits & 8 != 0, last_token: bits & 16 != 0 };
                for normalize in [false, true] {
                    let width = pooling.modes() * h;
                    let mut out = g.poisoned_f32(batch.num_seqs() * width);
                    k.pool_normalize(&dev.stream, &g.up(&states), &g.up(&cu_seqlens(&batch)), batch.num_seqs(), t, h, pooling, normalize, &mut out).unwrap();
                    let want: Vec<f32> = bge_engine::heads::pooled::pool(&states, h, &batch, pooling, normalize).concat();
                    let e = rel_err(&g.down(&out), &want);
                    assert!(e < 1e-5, "h={h} lens={lens:?} {pooling:?} normalize={normalize}: rel err {e}");
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// GPU: whole model.

fn texts() -> Vec<String> {
    let g = goldens_here();
    let mut t = g.texts.clone();
    // Long inputs too, so attention sees 256-token sequences.
    t.push("The quick brown fox jumps over the lazy dog. ".repeat(60));
    t.push(String::new());
    t
}

#[test]
fn gpu_model_matches_cpu() {
    let Some(_dev) = gpu("gpu_model_matches_cpu") else { return };
    let texts = texts();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let tmp = temp_dir("cuda-cls512");
    for dir in [minilm(), cls512_variant(&minilm(), &tmp)] {
        let cpu = Model::load("all-MiniLM-L6-v2", &dir, BackendKind::Cpu).unwrap();
        let gpu = Model::load("all-MiniLM-L6-v2", &dir, BackendKind::Cuda).unwrap();
        assert_eq!(gpu.backend, BackendKind::Cuda);
        let want = cpu.embed(&refs, &RunOptions::default(), &mut || {}).unwrap();
        let got = gpu.embed(&refs, &RunOptions::default(), &mut || {}).unwrap();
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!(a.iter().all(|v| v.is_finite()), "{}: text {i} has non-finite values", dir.display());
            let c = cosine(a, b);
            assert!(c >= 0.9999, "{}: text {i} cosine {c} vs CPU", dir.display());
        }
    }
}

#[test]
fn gpu_model_matches_goldens() {
    let Some(_dev) = gpu("gpu_model_matches_goldens") else { return };
    let g = goldens_here();
    let model = Model::load("all-MiniLM-L6-v2", &minilm(), BackendKind::Cuda).unwrap();
    let refs: Vec<&str> = g.texts.iter().map(String::as_str).collect();
    let got = model.embed(&refs, &RunOptions::default(), &mut || {}).unwrap();
    for (i, (a, b)) in got.iter().zip(&g.mean256.embeddings).enumerate() {
        let c = cosine(a, b);
        assert!(c >= 0.9999, "text {i}: cosine {c} vs sentence-transformers");
    }
}

#[test]
fn gpu_bf16_model_is_close_to_cpu() {
    let Some(_dev) = gpu("gpu_bf16_model_is_close_to_cpu") else { return };
    let texts = texts();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let cpu = Model::load("all-MiniLM-L6-v2", &minilm(), BackendKind::Cpu).unwrap();
    let spec = &cpu.spec;
    let weights = bge_engine::weights::WeightFile::open(&minilm().join("model.safetensors")).unwrap();
    let enc = CudaEncoder::load_with(spec, &weights, Half::Bf16).unwrap();
    let encoded: Vec<Encoded> = refs.iter().map(|t| cpu.tokenizer.encode(t, true).unwrap()).collect();
    let batch = PackedBatch::new(&encoded.iter().collect::<Vec<_>>());
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let got = enc.embed(&pool, &batch, spec.hidden_size, spec.pooling, spec.normalize, &mut || {}).unwrap();
    let want = cpu.embed_encoded(&encoded, &RunOptions { max_batch_tokens: 1 << 20, ..Default::default() }, &mut || {}).unwrap();
    // embed_encoded sorts by length internally but returns input order, as `got` is.
    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
        let c = cosine(a, b);
        eprintln!("bf16 text {i}: cosine {c}");
        assert!(c >= 0.999, "bf16 text {i}: cosine {c} vs CPU");
    }
}

#[test]
fn gpu_results_do_not_depend_on_the_batch() {
    let Some(_dev) = gpu("gpu_results_do_not_depend_on_the_batch") else { return };
    let g = goldens_here();
    let model = Model::load("all-MiniLM-L6-v2", &minilm(), BackendKind::Cuda).unwrap();
    let texts: Vec<String> = (0..64).map(|i| format!("{}{}", g.texts[i % g.texts.len()], if i >= g.texts.len() { " again" } else { "" })).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let alone: Vec<Vec<f32>> = refs.iter().map(|t| model.embed(&[t], &RunOptions::default(), &mut || {}).unwrap().remove(0)).collect();
    let mut worst = 1.0f64;
    let mut bitwise = true;
    for max_batch_tokens in [1 << 20, 700, 1] {
        let batched = model.embed(&refs, &RunOptions { max_batch_tokens, ..Default::default() }, &mut || {}).unwrap();
        for (i, (a, b)) in alone.iter().zip(&batched).enumerate() {
            let c = cosine(a, b);
            worst = worst.min(c);
            bitwise &= a == b;
            // Every kernel but cuBLAS is per-row; cuBLAS may pick another algorithm for another
            // row count, which moves last bits (and so an f16 rounding now and then), never the
            // vector: a row seeing another sequence's tokens would fall far below this.
            assert!(c >= 0.9999, "row {i}: cosine {c} alone vs batched (max_batch_tokens {max_batch_tokens})");
        }
    }
    eprintln!("GPU batch invariance: worst cosine {worst}, bitwise equal: {bitwise}");
}

#[test]
fn gpu_interrupt_may_abort_and_the_model_stays_usable() {
    let Some(_dev) = gpu("gpu_interrupt_may_abort_and_the_model_stays_usable") else { return };
    let model = Model::load("all-MiniLM-L6-v2", &minilm(), BackendKind::Cuda).unwrap();
    let mut calls = 0;
    let before = model.embed(&["hello"], &RunOptions::default(), &mut || calls += 1).unwrap();
    assert!(calls >= model.spec.num_layers, "interrupt called {calls} times for {} layers", model.spec.num_layers);
    let aborted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        model.embed(&["hello"], &RunOptions::default(), &mut || panic!("canceling statement due to user request"))
    }));
    assert!(aborted.is_err());
    assert_eq!(model.embed(&["hello"], &RunOptions::default(), &mut || {}).unwrap(), before);
}
