//! The CUDA backend: kernels/*.cu compiled with NVRTC on first use, GEMMs through cuBLAS, one
//! stream, weights uploaded once per process.
//!
//! Nothing here touches CUDA until [`device`] is first called; that call probes the libraries
//! with dlopen (probe.rs) before cudarc is used at all, because cudarc panics when a library is
//! missing. The outcome, success or the reason for failure, is kept for the life of the process
//! so a machine without a GPU pays for the probe once. The CUDA context is created by that
//! first call, in the process that makes it (a PostgreSQL backend, never the postmaster).
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use cudarc::driver::{CudaContext, CudaModule, CudaStream};

use crate::error::{Error, Result};

pub mod gemm;
pub mod kernels;
pub mod nvrtc;
pub mod probe;

pub use kernels::Kernels;

/// What bge_models() reports for a GPU copy: models load with GEMM inputs in [`MODEL_HALF`].
/// The kernels also build for bf16 (tested), which no setting selects yet.
pub const PRECISION: &str = "fp16";

/// The 16-bit type models load with on the GPU.
pub const MODEL_HALF: Half = Half::F16;

/// The 16-bit type of GEMM inputs (weights and activations). Accumulation is always f32, and
/// the residual stream, LayerNorm, softmax and pooling stay f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Half {
    /// IEEE half: 10 mantissa bits, what PyTorch's fp16 inference uses. The default.
    F16,
    /// bfloat16: 7 mantissa bits but f32's range, for models whose activations overflow f16.
    Bf16,
}

impl Half {
    /// Suffix of the kernels instantiated for this type.
    pub fn suffix(self) -> &'static str {
        match self {
            Half::F16 => "f16",
            Half::Bf16 => "bf16",
        }
    }
}

/// The GPU this process uses (ordinal 0 of those CUDA_VISIBLE_DEVICES shows), its stream, its
/// cuBLAS handle and its compiled kernel modules. Shared by every model in the process.
pub struct Device {
    pub ctx: Arc<CudaContext>,
    /// The one stream all work is queued on, in order.
    pub stream: Arc<CudaStream>,
    /// e.g. "NVIDIA H100 80GB HBM3".
    pub name: String,
    /// Compute capability as major * 10 + minor (90 for an H100).
    pub sm: u32,
    /// What NVRTC builds for this GPU.
    pub target: nvrtc::Target,
    /// Held for a whole forward pass: serialises the stream and the cuBLAS handle, which is not
    /// safe to use from two threads at once.
    exec: Mutex<gemm::Blas>,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
}

static DEVICE: OnceLock<std::result::Result<Arc<Device>, String>> = OnceLock::new();

/// The process's GPU, set up on the first call; Err(DeviceUnavailable) says why there is none.
pub fn device() -> Result<Arc<Device>> {
    DEVICE.get_or_init(init).clone().map_err(Error::DeviceUnavailable)
}

/// Whether a usable GPU is present (probing on the first call, remembered afterwards).
pub fn available() -> bool {
    device().is_ok()
}

/// The probe's outcome if it has run, without running it.
pub fn probed() -> Option<bool> {
    DEVICE.get().map(|d| d.is_ok())
}

fn init() -> std::result::Result<Arc<Device>, String> {
    probe::libraries()?;
    // cudarc may still panic (a library present but missing a symbol it wants): contain it.
    catch_unwind(AssertUnwindSafe(open)).unwrap_or_else(|panic| Err(format!("CUDA set-up failed: {}", panic_text(&panic))))
}

fn open() -> std::result::Result<Arc<Device>, String> {
    use cudarc::driver::sys::CUresult;
    let count = CudaContext::device_count().map_err(|e| match e.0 {
        CUresult::CUDA_ERROR_NO_DEVICE => "no CUDA GPU is visible to this process".to_string(),
        _ => format!("the NVIDIA driver failed to initialise ({e:?})"),
    })?;
    if count < 1 {
        return Err("no CUDA GPU is visible to this process".into());
    }
    let ctx = CudaContext::new(0).map_err(|e| format!("cannot create a CUDA context on GPU 0 ({e:?})"))?;
    // One stream, in-order: cudarc's per-buffer event tracking would only add overhead.
    // SAFETY: called before any buffer exists; all work goes to the single stream below.
    unsafe { ctx.disable_event_tracking() };
    let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
    let (major, minor) = ctx.compute_capability().map_err(|e| format!("cannot query {name} ({e:?})"))?;
    // The attention kernel multiplies on the tensor cores with mma.sync m16n8k16 (f16 and bf16),
    // which Ampere (8.0) introduced.
    if major < 8 {
        return Err(format!("{name} has compute capability {major}.{minor}; the CUDA backend needs 8.0 (Ampere) or newer"));
    }
    let sm = (major * 10 + minor) as u32;
    let target = nvrtc::target_for(sm)?;
    let stream = ctx.new_stream().map_err(|e| format!("cannot create a CUDA stream ({e:?})"))?;
    let blas = gemm::Blas::new(&stream)?;
    Ok(Arc::new(Device { ctx, stream, name, sm, target, exec: Mutex::new(blas), modules: Mutex::new(HashMap::new()) }))
}

pub(crate) fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".into())
}

impl Device {
    /// Exclusive use of the stream and cuBLAS for one forward pass. A pass that unwound (a
    /// PostgreSQL cancel) leaves nothing half-done that the next one could trip on, so a
    /// poisoned lock is simply taken over.
    pub fn exec(&self) -> MutexGuard<'_, gemm::Blas> {
        self.exec.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The module built from `file`, compiled (or read from the on-disk cache) on first use.
    pub fn module(&self, file: &nvrtc::KernelFile) -> std::result::Result<Arc<CudaModule>, String> {
        let mut modules = self.modules.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = modules.get(file.name) {
            return Ok(m.clone());
        }
        let image = cached_image(file, self.target)?;
        let module = self
            .ctx
            .load_module(cudarc::nvrtc::Ptx::from_binary(image))
            .map_err(|e| format!("cannot load {} for {} on {} ({e:?})", file.name, self.target, self.name))?;
        modules.insert(file.name, module.clone());
        Ok(module)
    }

    /// Waits for all queued work, calling `interrupt` while it runs (it may unwind).
    pub fn wait(&self, interrupt: &mut dyn FnMut()) -> std::result::Result<(), String> {
        let done = self.stream.record_event(None).map_err(|e| format!("CUDA event ({e:?})"))?;
        let started = std::time::Instant::now();
        loop {
            match done.try_is_complete() {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => return Err(format!("CUDA error while running kernels ({e:?})")),
            }
            interrupt();
            // Spin briefly (short batches finish in microseconds), then stop burning the CPU.
            if started.elapsed() < std::time::Duration::from_micros(200) {
                std::thread::yield_now();
            } else {
                std::thread::sleep(std::time::Duration::from_micros(50));
            }
        }
    }
}

/// A compiled image of `file` for `target`, from `$BGE_CUDA_CACHE_DIR` (default: a directory
/// of the current user's in the temp dir) when an identical build is there, else compiled now
/// and stored. NVRTC takes seconds for attention.cu, and every PostgreSQL connection is a new
/// process. The cache is only used when the directory belongs to this user and no one else can
/// write it: a planted image would run on the GPU.
fn cached_image(file: &nvrtc::KernelFile, target: nvrtc::Target) -> std::result::Result<Vec<u8>, String> {
    let version = nvrtc::version()?;
    let key = {
        use std::hash::{Hash, Hasher};
        // SipHash with fixed keys: the same build gets the same name in every process.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (file.source, nvrtc::COMMON_HEADER.source, target, version).hash(&mut h);
        h.finish()
    };
    let stem = file.name.trim_end_matches(".cu");
    let path = cache_dir().map(|d| d.join(format!("{stem}-{target}-{key:016x}.bin")));
    if let Some(p) = &path {
        if let Ok(image) = std::fs::read(p) {
            if !image.is_empty() {
                return Ok(image);
            }
        }
    }
    let image = nvrtc::compile(file, target)?;
    if let Some(p) = &path {
        let tmp = p.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&tmp, &image).is_ok() {
            let _ = std::fs::rename(&tmp, p);
        }
        let _ = std::fs::remove_file(&tmp);
    }
    Ok(image)
}

fn cache_dir() -> Option<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    let dir = match std::env::var_os("BGE_CUDA_CACHE_DIR") {
        Some(d) if d.is_empty() => return None,
        Some(d) => PathBuf::from(d),
        None => std::env::temp_dir().join(format!("pg_bge-cuda-{uid}")),
    };
    let _ = std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir);
    let meta = std::fs::symlink_metadata(&dir).ok()?;
    (meta.is_dir() && meta.uid() == uid && meta.mode() & 0o022 == 0).then_some(dir)
}
