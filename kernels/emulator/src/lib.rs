//! Test-only: pg_bge's CUDA kernels run on the CPU, through pg_bge's own CUDA backend.
//!
//! build.rs compiles kernels/*.cu as C++ (bge_common.cuh includes kernels/host_emulation.h
//! under BGE_HOST_EMULATION) into an emulated device made of three libraries named like the
//! NVIDIA ones: libcuda.so (the driver API and the execution model), libnvrtc.so and
//! libcublas.so. [`device`] loads them before anything else, so that when bge-engine's CUDA
//! backend probes for the NVIDIA libraries and cudarc opens them by name, both get these. The
//! engine then runs unchanged: its NVRTC compile step, module loading, launch shapes, argument
//! lists, buffer sizing and cuBLAS calls are the real ones; only what is below the driver API is
//! emulated. The tests compare the results with bge-engine's scalar reference.
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::{Arc, OnceLock};

use bge_engine::backend::cuda::{self, Device};

/// Where build.rs put the emulated libraries.
pub const LIB_DIR: &str = env!("BGE_EMULATOR_LIB_DIR");
/// The emulated GPU's name (driver.cpp); a real driver answering instead would be a test error.
pub const DEVICE_NAME: &str = "pg_bge host emulation";

struct Emulator {
    driver: *mut c_void,
}
// SAFETY: a dlopen handle, only ever passed to dlsym, which is thread-safe.
unsafe impl Send for Emulator {}
unsafe impl Sync for Emulator {}

static EMULATOR: OnceLock<Emulator> = OnceLock::new();

fn emulator() -> &'static Emulator {
    EMULATOR.get_or_init(|| {
        // No on-disk module cache: the emulated "images" only mean something to this process.
        std::env::set_var("BGE_CUDA_CACHE_DIR", "");
        let mut driver = std::ptr::null_mut();
        for name in ["libcuda.so", "libnvrtc.so", "libcublas.so"] {
            let path = CString::new(format!("{LIB_DIR}/{name}")).unwrap();
            // SAFETY: a NUL-terminated path; the handle stays open for the process. Opening by
            // full path first means later opens by soname (the engine's probe, cudarc) get
            // these objects.
            let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
            if handle.is_null() {
                // SAFETY: dlerror returns a message for the failed dlopen just above.
                let why = unsafe { CStr::from_ptr(libc::dlerror()) }.to_string_lossy().into_owned();
                panic!("cannot load the emulated {name}: {why}");
            }
            if name == "libcuda.so" {
                driver = handle;
            }
        }
        Emulator { driver }
    })
}

fn symbol<T: Copy>(name: &str) -> T {
    let c = CString::new(name).unwrap();
    // SAFETY: a live handle and a NUL-terminated name; T is the symbol's function type.
    let p = unsafe { libc::dlsym(emulator().driver, c.as_ptr()) };
    assert!(!p.is_null(), "the emulated driver has no {name}");
    assert_eq!(std::mem::size_of::<T>(), std::mem::size_of::<*mut c_void>());
    // SAFETY: p is the address of a function of type T (see driver.cpp).
    unsafe { std::mem::transmute_copy(&p) }
}

/// The emulated GPU, as bge-engine's CUDA backend sees it. Panics if the backend found
/// anything else (a real NVIDIA driver opened before these libraries could be).
pub fn device() -> Arc<Device> {
    emulator();
    let dev = cuda::device().unwrap_or_else(|e| panic!("the emulated CUDA device does not work: {e}"));
    assert_eq!(dev.name, DEVICE_NAME, "bge-engine opened a CUDA driver other than the emulator's");
    dev
}

/// The order in which a block's runnable threads resume at each switch (see cpp/runtime.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// The lowest-numbered runnable thread runs first: low warps run ahead.
    Ascending,
    /// The highest-numbered runnable thread runs first: high warps run ahead.
    Descending,
}

/// Both schedules: a test runs under each, so a missing barrier shows whichever way it reads.
pub const SCHEDULES: [Schedule; 2] = [Schedule::Ascending, Schedule::Descending];

/// Sets the schedule of the launches made from this thread.
pub fn set_schedule(schedule: Schedule) {
    let f: extern "C" fn(c_int) = symbol("bge_emu_set_schedule");
    f(match schedule {
        Schedule::Ascending => 0,
        Schedule::Descending => 1,
    });
}

/// Why this thread's last launch failed; empty after a successful one.
pub fn last_error() -> String {
    let f: extern "C" fn() -> *const c_char = symbol("bge_emu_last_error");
    // SAFETY: a NUL-terminated string owned by the calling thread's emulator state.
    unsafe { CStr::from_ptr(f()) }.to_string_lossy().into_owned()
}

/// Kernel launches the emulator has run in this process.
pub fn launches() -> u64 {
    let f: extern "C" fn() -> u64 = symbol("bge_emu_launches");
    f()
}
