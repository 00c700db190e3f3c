//! The kernel sources (kernels/*.cu, embedded at build time) and their compilation with NVRTC.
//!
//! Kernels compile to a CUBIN for the exact GPU (`sm_XY`): a CUBIN from a newer NVRTC still
//! loads on an older driver of the same major version, where PTX from it would not. Only a GPU
//! newer than NVRTC knows gets PTX for NVRTC's newest virtual architecture, for the driver to
//! finish.
use std::ffi::{c_char, c_int, CString};

use cudarc::nvrtc::sys;

/// One kernel source file: one op family.
#[derive(Debug, Clone, Copy)]
pub struct KernelFile {
    /// File name under kernels/.
    pub name: &'static str,
    pub source: &'static str,
}

/// The header every kernel includes, handed to NVRTC in memory.
pub const COMMON_HEADER: KernelFile = KernelFile { name: "bge_common.cuh", source: include_str!("../../../../kernels/bge_common.cuh") };

pub const EMBEDDING: KernelFile = KernelFile { name: "embedding.cu", source: include_str!("../../../../kernels/embedding.cu") };
pub const LAYER_NORM: KernelFile = KernelFile { name: "layer_norm.cu", source: include_str!("../../../../kernels/layer_norm.cu") };
pub const ACTIVATION: KernelFile = KernelFile { name: "activation.cu", source: include_str!("../../../../kernels/activation.cu") };
pub const ATTENTION: KernelFile = KernelFile { name: "attention.cu", source: include_str!("../../../../kernels/attention.cu") };
pub const POOLING: KernelFile = KernelFile { name: "pooling.cu", source: include_str!("../../../../kernels/pooling.cu") };
pub const CAST: KernelFile = KernelFile { name: "cast.cu", source: include_str!("../../../../kernels/cast.cu") };
pub const RMS_NORM: KernelFile = KernelFile { name: "rms_norm.cu", source: include_str!("../../../../kernels/rms_norm.cu") };
pub const ROPE: KernelFile = KernelFile { name: "rope.cu", source: include_str!("../../../../kernels/rope.cu") };
pub const CAUSAL_ATTENTION: KernelFile =
    KernelFile { name: "causal_attention.cu", source: include_str!("../../../../kernels/causal_attention.cu") };

/// Every kernel file; the compile test checks this list against the kernels/ directory.
pub const KERNEL_FILES: [KernelFile; 9] = [EMBEDDING, LAYER_NORM, ACTIVATION, ATTENTION, POOLING, CAST, RMS_NORM, ROPE, CAUSAL_ATTENTION];

/// What NVRTC produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// SASS for one real architecture, e.g. `Cubin(90)` = sm_90.
    Cubin(u32),
    /// PTX for a virtual architecture, e.g. `Ptx(90)` = compute_90.
    Ptx(u32),
}

impl Target {
    pub fn option(self) -> String {
        match self {
            Target::Cubin(sm) => format!("--gpu-architecture=sm_{sm}"),
            Target::Ptx(sm) => format!("--gpu-architecture=compute_{sm}"),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Cubin(sm) => write!(f, "sm_{sm}"),
            Target::Ptx(sm) => write!(f, "compute_{sm}"),
        }
    }
}

/// NVRTC's version (major, minor). Callers must have probed that NVRTC loads.
pub fn version() -> Result<(i32, i32), String> {
    let (mut major, mut minor) = (0, 0);
    // SAFETY: two valid out-pointers.
    check(unsafe { sys::nvrtcVersion(&mut major, &mut minor) }, "nvrtcVersion")?;
    Ok((major, minor))
}

/// The real architectures this NVRTC can compile for (75, 80, 86, 89, 90, ...).
pub fn supported_archs() -> Result<Vec<u32>, String> {
    let mut n: c_int = 0;
    // SAFETY: valid out-pointer, then a buffer of the size NVRTC reported.
    check(unsafe { sys::nvrtcGetNumSupportedArchs(&mut n) }, "nvrtcGetNumSupportedArchs")?;
    let mut archs = vec![0 as c_int; n.max(0) as usize];
    check(unsafe { sys::nvrtcGetSupportedArchs(archs.as_mut_ptr()) }, "nvrtcGetSupportedArchs")?;
    Ok(archs.into_iter().map(|a| a as u32).collect())
}

/// The target to build for a GPU of compute capability `sm` (major * 10 + minor).
pub fn target_for(sm: u32) -> Result<Target, String> {
    let archs = supported_archs()?;
    if archs.contains(&sm) {
        return Ok(Target::Cubin(sm));
    }
    match archs.iter().copied().max() {
        // A GPU newer than this NVRTC: PTX for the newest architecture it knows.
        Some(newest) if newest < sm => Ok(Target::Ptx(newest)),
        _ => Err(format!("this NVRTC cannot compile for sm_{sm}; it knows {archs:?}")),
    }
}

/// Compiles `file` for `target`. The image is a CUBIN, or NUL-terminated PTX text; Err carries
/// NVRTC's log.
pub fn compile(file: &KernelFile, target: Target) -> Result<Vec<u8>, String> {
    let src = CString::new(file.source).map_err(|_| format!("{}: NUL byte in source", file.name))?;
    let name = CString::new(file.name).unwrap();
    let header_src = CString::new(COMMON_HEADER.source).unwrap();
    let header_name = CString::new(COMMON_HEADER.name).unwrap();
    let headers = [header_src.as_ptr()];
    let include_names = [header_name.as_ptr()];
    let options: Vec<CString> = [target.option().as_str(), "--std=c++17"]
        .iter()
        .map(|o| CString::new(*o).unwrap())
        .collect();
    let option_ptrs: Vec<*const c_char> = options.iter().map(|o| o.as_ptr()).collect();

    let mut prog: sys::nvrtcProgram = std::ptr::null_mut();
    // SAFETY: all strings outlive the program, which is destroyed below on every path.
    check(
        unsafe { sys::nvrtcCreateProgram(&mut prog, src.as_ptr(), name.as_ptr(), 1, headers.as_ptr(), include_names.as_ptr()) },
        "nvrtcCreateProgram",
    )?;
    let result = (|| {
        // SAFETY: prog is a live program; options are NUL-terminated strings.
        let compiled = unsafe { sys::nvrtcCompileProgram(prog, option_ptrs.len() as c_int, option_ptrs.as_ptr()) };
        if compiled != sys::nvrtcResult::NVRTC_SUCCESS {
            return Err(format!("{} for {target}: {compiled:?}\n{}", file.name, log(prog)));
        }
        let mut size = 0usize;
        let mut image;
        // SAFETY: size queries then copies into buffers of exactly that size.
        unsafe {
            match target {
                Target::Cubin(_) => {
                    check(sys::nvrtcGetCUBINSize(prog, &mut size), "nvrtcGetCUBINSize")?;
                    image = vec![0u8; size];
                    check(sys::nvrtcGetCUBIN(prog, image.as_mut_ptr() as *mut c_char), "nvrtcGetCUBIN")?;
                }
                Target::Ptx(_) => {
                    check(sys::nvrtcGetPTXSize(prog, &mut size), "nvrtcGetPTXSize")?;
                    image = vec![0u8; size];
                    check(sys::nvrtcGetPTX(prog, image.as_mut_ptr() as *mut c_char), "nvrtcGetPTX")?;
                }
            }
        }
        if image.is_empty() {
            return Err(format!("{} for {target}: NVRTC returned an empty image", file.name));
        }
        Ok(image)
    })();
    // SAFETY: prog came from nvrtcCreateProgram and is destroyed once.
    unsafe { sys::nvrtcDestroyProgram(&mut prog) };
    result
}

fn log(prog: sys::nvrtcProgram) -> String {
    let mut size = 0usize;
    // SAFETY: size query, then a buffer of that size.
    unsafe {
        if sys::nvrtcGetProgramLogSize(prog, &mut size) != sys::nvrtcResult::NVRTC_SUCCESS || size == 0 {
            return String::new();
        }
        let mut buf = vec![0u8; size];
        if sys::nvrtcGetProgramLog(prog, buf.as_mut_ptr() as *mut c_char) != sys::nvrtcResult::NVRTC_SUCCESS {
            return String::new();
        }
        String::from_utf8_lossy(&buf).trim_end_matches('\0').trim().to_string()
    }
}

fn check(r: sys::nvrtcResult, what: &str) -> Result<(), String> {
    if r == sys::nvrtcResult::NVRTC_SUCCESS {
        Ok(())
    } else {
        Err(format!("{what} failed: {r:?}"))
    }
}
