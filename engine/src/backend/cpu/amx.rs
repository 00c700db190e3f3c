//! Intel AMX plumbing shared by the tile kernels (int8 `tdpbusd` in gemm_int8.rs, bf16
//! `tdpbf16ps` in gemm_bf16.rs): whether the CPU has the tiles and Linux grants them to this
//! process, and the per-thread tile configuration. Both kernels use the same shape, eight tiles
//! of 16 rows × 64 bytes, so one configuration serves either.

/// Rows of every tile: an A tile holds 16 tokens.
pub const ROWS: usize = 16;

/// CPUID leaf 7 EDX bits: AMX-BF16 (22), AMX-TILE (24), AMX-INT8 (25).
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
const AMX_BF16: u32 = 1 << 22;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
const AMX_TILE: u32 = 1 << 24;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
const AMX_INT8: u32 = 1 << 25;

/// Whether the CPU has AMX-TILE plus the `extension` bits and Linux lets this process use the
/// tile registers: their 8 kB of state is off until a process asks (arch_prctl
/// ARCH_REQ_XCOMP_PERM; granted once for the whole process and kept by forks). Callers check
/// the AVX-512 features their epilogues need first (CPUID leaf 7 exists wherever AVX512-F does).
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn granted_with(extension: u32) -> bool {
    // Both read once: kernels check before every GEMM, and CPUID exits to the hypervisor in a VM.
    static EDX: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    static GRANTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    // Leaf 7 is present on every CPU with AVX512-F, which callers checked.
    let edx = *EDX.get_or_init(|| core::arch::x86_64::__cpuid_count(7, 0).edx);
    let wanted = AMX_TILE | extension;
    edx & wanted == wanted
        && *GRANTED.get_or_init(|| {
            const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
            const XFEATURE_XTILEDATA: libc::c_long = 18;
            // SAFETY: a plain syscall with integer arguments.
            unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 }
        })
}

/// AMX-INT8 usable (the caller checked AVX512-F/BW/VNNI).
pub fn int8_granted() -> bool {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    return granted_with(AMX_INT8);
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    false
}

/// AMX-BF16 usable (the caller checked AVX512-F/BF16).
pub fn bf16_granted() -> bool {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    return granted_with(AMX_BF16);
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    false
}

/// The tile registers configured on this thread while it lives, when `on`: configuring costs
/// about 100 ns, so it happens once per task rather than per kernel call, and the tiles are
/// released at the end (a thread holding tile state makes every context switch save 8 kB more).
pub struct TileSession(bool);

impl TileSession {
    /// # Safety
    /// With `on`, the CPU has AMX and this process was granted it ([`int8_granted`] or
    /// [`bf16_granted`] returned true).
    pub unsafe fn start(on: bool) -> TileSession {
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        if on {
            configure_tiles();
            return TileSession(true);
        }
        TileSession(false)
    }
}

impl Drop for TileSession {
    fn drop(&mut self) {
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        if self.0 {
            // SAFETY: configured in start, so the CPU has AMX.
            unsafe { core::arch::asm!("tilerelease", options(nostack, nomem)) };
        }
    }
}

/// The configuration ldtilecfg reads (palette 1): all eight tiles 16 rows of 64 bytes.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
unsafe fn configure_tiles() {
    let mut c = [0u8; 64];
    c[0] = 1;
    for t in 0..8 {
        c[16 + 2 * t] = 64;
        c[48 + t] = ROWS as u8;
    }
    let config = TileConfig(c);
    core::arch::asm!("ldtilecfg [{}]", in(reg) config.0.as_ptr(), options(nostack, readonly));
}
