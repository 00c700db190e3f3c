//! Finds the CUDA libraries with plain dlopen before cudarc is ever called: cudarc panics when
//! a library it needs cannot be loaded, and a panic must never be how a PostgreSQL backend
//! learns that a machine has no GPU.
//!
//! Libraries are opened with the names cudarc itself tries, so once a probe succeeds cudarc
//! finds the same objects. A library found only in an extra directory (`$BGE_CUDA_LIB_DIR`,
//! then `$CUDA_HOME/lib64`, or `/usr/local/cuda/lib64` when CUDA_HOME is unset) is opened by its
//! full path and kept open; the dynamic loader then answers cudarc's later open of the same
//! soname with it.
use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};

/// A required library, and what its absence means to a user.
struct Needed {
    /// cudarc's name for it: lib{name}.so, lib{name}.so.13, ...
    name: &'static str,
    /// The message when it is missing; fixed text (no search list), as it reaches SQL clients.
    missing: &'static str,
}

const NEEDED: [Needed; 3] = [
    Needed { name: "cuda", missing: "the NVIDIA driver (libcuda.so.1) cannot be loaded" },
    Needed { name: "nvrtc", missing: "NVRTC, the CUDA runtime compiler (libnvrtc.so), cannot be loaded" },
    Needed { name: "cublas", missing: "cuBLAS (libcublas.so) cannot be loaded" },
];

/// Opens every library the CUDA backend needs; the error names the first one missing.
pub fn libraries() -> Result<(), String> {
    for needed in &NEEDED {
        open_any(needed.name).map_err(|_| needed.missing.to_string())?;
    }
    Ok(())
}

/// Directories searched after the dynamic loader's own path.
pub fn extra_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("BGE_CUDA_LIB_DIR") {
        dirs.extend(std::env::split_paths(&d));
    }
    // The toolkit: $CUDA_HOME (or $CUDA_PATH), else where CUDA installs by default.
    let toolkit = ["CUDA_HOME", "CUDA_PATH"].iter().find_map(std::env::var_os).map(PathBuf::from);
    dirs.push(toolkit.unwrap_or_else(|| PathBuf::from("/usr/local/cuda")).join("lib64"));
    dirs
}

fn candidates(name: &str) -> Vec<String> {
    let mut names = cudarc::get_lib_name_candidates(name);
    if name == "cuda" {
        // The driver's soname first: it is what every driver install provides.
        names.insert(0, "libcuda.so.1".into());
    }
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

/// Opens `name` under any of cudarc's candidate names, on the loader's path, then in the extra
/// directories. Err lists what was tried.
fn open_any(name: &str) -> Result<(), Vec<String>> {
    let names = candidates(name);
    for n in &names {
        if dlopen(Path::new(n)) {
            return Ok(());
        }
    }
    let mut tried = names.clone();
    for dir in extra_dirs() {
        for n in &names {
            let path = dir.join(n);
            if path.is_file() {
                // Libraries these open by soname when they are themselves opened by path.
                match name {
                    "nvrtc" => preload_prefixed(&dir, "libnvrtc-builtins.so"),
                    "cublas" => preload_prefixed(&dir, "libcublasLt.so"),
                    _ => {}
                }
                if dlopen(&path) {
                    return Ok(());
                }
            }
        }
        tried.push(format!("{}/", dir.display()));
    }
    Err(tried)
}

/// Opens every library in `dir` whose name starts with `prefix`. NVRTC opens
/// libnvrtc-builtins, and cuBLAS needs libcublasLt, by soname; when the library itself came
/// from a directory outside the loader's path, opening these from there first makes that
/// lookup hit.
fn preload_prefixed(dir: &Path, prefix: &str) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(prefix) {
                dlopen(&e.path());
            }
        }
    }
}

/// Opens NVRTC from `dir` (a pip `nvidia-cuda-nvrtc` lib directory, say) by full path, with its
/// builtins; cudarc then finds it without LD_LIBRARY_PATH. Used by the kernel-compile test.
pub fn load_nvrtc_from(dir: &Path) -> Result<PathBuf, String> {
    preload_prefixed(dir, "libnvrtc-builtins.so");
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libnvrtc.so")))
        .collect();
    found.sort();
    for path in found {
        if dlopen(&path) {
            return Ok(path);
        }
    }
    Err(format!("no loadable libnvrtc.so* in {}", dir.display()))
}

/// True when NVRTC is loadable now (the probe for code that only compiles kernels).
pub fn nvrtc() -> Result<(), String> {
    open_any("nvrtc").map_err(|tried| format!("NVRTC (libnvrtc.so) cannot be loaded; tried {}", tried.join(", ")))
}

/// dlopen that keeps the handle: a loaded CUDA library stays loaded for the process.
fn dlopen(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else { return false };
    // SAFETY: a NUL-terminated path; the handle is deliberately never closed. Loading runs the
    // library's initialisers, which for the CUDA libraries create no context.
    let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        // Clear the error state so a later dlerror() does not report this attempt.
        // SAFETY: dlerror has no preconditions.
        let _ = unsafe { dlerror_text() };
        return false;
    }
    true
}

unsafe fn dlerror_text() -> Option<String> {
    let e = libc::dlerror();
    (!e.is_null()).then(|| CStr::from_ptr(e).to_string_lossy().into_owned())
}
