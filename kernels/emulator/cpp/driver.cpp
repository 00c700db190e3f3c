// libcuda.so of the emulated device: the part of the CUDA driver API that cudarc calls for
// pg_bge's CUDA backend (engine/src/backend/cuda), answered on the CPU. One device, one context,
// streams and events that are always complete (everything runs synchronously in the call that
// enqueues it), modules that are the emulator's compiled kernel files, and cuLaunchKernel
// running the grid through runtime.cpp. Values follow the driver's documented ones
// (CUresult codes, cuMemAlloc of 0 bytes is CUDA_ERROR_INVALID_VALUE, ...).
#include <atomic>
#include <cstdio>
#include <cstring>
#include <string>

#include "runtime.h"

#define EXPORT extern "C" __attribute__((visibility("default")))

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef void* CUcontext;
typedef void* CUstream;
typedef void* CUevent;
typedef void* CUmodule;
typedef void* CUfunction;

namespace {

enum : CUresult {
    CUDA_SUCCESS = 0,
    CUDA_ERROR_INVALID_VALUE = 1,
    CUDA_ERROR_OUT_OF_MEMORY = 2,
    CUDA_ERROR_INVALID_DEVICE = 101,
    CUDA_ERROR_INVALID_IMAGE = 200,
    CUDA_ERROR_INVALID_HANDLE = 400,
    CUDA_ERROR_NOT_FOUND = 500,
    CUDA_ERROR_NOT_SUPPORTED = 801,
};

// The device name the tests check, so a real GPU's driver can never pass for the emulator.
const char DEVICE_NAME[] = "pg_bge host emulation";
// Module images the fake NVRTC (nvrtc.cpp) produces: this prefix, then the kernel file's name.
const char IMAGE_PREFIX[] = "pg_bge-emulated-module:";

int g_context_tag, g_stream_tag, g_event_tag;
CUcontext const CONTEXT = &g_context_tag;
thread_local CUcontext t_current = nullptr;
thread_local std::string t_last_error;
thread_local bge_emu::Schedule t_schedule = bge_emu::ASCENDING;
std::atomic<unsigned long long> g_launches{0};

CUresult copy(void* dst, const void* src, size_t bytes, bool dst_device, bool src_device) {
    if (!bytes) return CUDA_SUCCESS;
    if ((dst_device && !bge_emu::device_range(dst, bytes)) || (src_device && !bge_emu::device_range(src, bytes))) {
        std::fprintf(stderr, "pg_bge CUDA emulator: a %zu-byte copy outside a device buffer\n", bytes);
        return CUDA_ERROR_INVALID_VALUE;
    }
    std::memmove(dst, src, bytes);
    return CUDA_SUCCESS;
}

}  // namespace

// ---- emulator controls (kernels/emulator/src/lib.rs) -----------------------------------------

// 0: the lowest runnable thread runs first, 1: the highest. Per calling thread.
EXPORT void bge_emu_set_schedule(int schedule) {
    t_schedule = schedule ? bge_emu::DESCENDING : bge_emu::ASCENDING;
}
// Why the calling thread's last failed launch failed ("" after a successful one).
EXPORT const char* bge_emu_last_error() { return t_last_error.c_str(); }
// Kernel launches run so far in this process.
EXPORT unsigned long long bge_emu_launches() { return g_launches.load(); }
// For the fake cuBLAS: whether [ptr, ptr + bytes) is inside one device buffer.
EXPORT int bge_emu_device_range(const void* ptr, size_t bytes) { return bge_emu::device_range(ptr, bytes); }
// For the fake NVRTC: the hash of the kernel file `name` the emulator was built from.
EXPORT int bge_emu_source_hash(const char* name, unsigned long long* hash) {
    if (!std::strcmp(name, "bge_common.cuh")) {
        *hash = bge_emu::common_header_hash;
        return 1;
    }
    for (const bge_emu::KernelFile* const* f = bge_emu::kernel_files; *f; ++f)
        if (!std::strcmp((*f)->name, name)) {
            *hash = (*f)->source_hash;
            return 1;
        }
    return 0;
}
EXPORT unsigned long long bge_emu_fnv1a(const char* text, size_t len) { return bge_emu::fnv1a(text, len); }

// ---- device and context ----------------------------------------------------------------------

EXPORT CUresult cuInit(unsigned) { return CUDA_SUCCESS; }
EXPORT CUresult cuDriverGetVersion(int* v) { *v = 13000; return CUDA_SUCCESS; }
EXPORT CUresult cuDeviceGetCount(int* n) { *n = 1; return CUDA_SUCCESS; }
EXPORT CUresult cuDeviceGet(CUdevice* d, int ordinal) {
    if (ordinal != 0) return CUDA_ERROR_INVALID_DEVICE;
    *d = 0;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuDeviceGetName(char* name, int len, CUdevice) {
    if (len <= 0) return CUDA_ERROR_INVALID_VALUE;
    std::snprintf(name, (size_t)len, "%s", DEVICE_NAME);
    return CUDA_SUCCESS;
}
EXPORT CUresult cuDeviceGetAttribute(int* v, int attribute, CUdevice) {
    switch (attribute) {
        case 1: *v = 1024; break;    // MAX_THREADS_PER_BLOCK
        case 2: *v = 1024; break;    // MAX_BLOCK_DIM_X
        case 3: *v = 1024; break;    // MAX_BLOCK_DIM_Y
        case 4: *v = 64; break;      // MAX_BLOCK_DIM_Z
        case 5: *v = 0x7fffffff; break;  // MAX_GRID_DIM_X
        case 6: *v = 65535; break;   // MAX_GRID_DIM_Y
        case 7: *v = 65535; break;   // MAX_GRID_DIM_Z
        case 8: *v = 48 * 1024; break;  // MAX_SHARED_MEMORY_PER_BLOCK
        case 10: *v = 32; break;     // WARP_SIZE
        case 16: *v = 1; break;      // MULTIPROCESSOR_COUNT
        case 75: *v = 9; break;      // COMPUTE_CAPABILITY_MAJOR
        case 76: *v = 0; break;      // COMPUTE_CAPABILITY_MINOR
        case 115: *v = 0; break;     // MEMORY_POOLS_SUPPORTED: no cuMemAllocAsync
        default: *v = 0; break;
    }
    return CUDA_SUCCESS;
}
EXPORT CUresult cuDeviceTotalMem_v2(size_t* bytes, CUdevice) {
    *bytes = (size_t)64 << 30;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuMemGetInfo_v2(size_t* free, size_t* total) {
    *free = *total = (size_t)64 << 30;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuDevicePrimaryCtxRetain(CUcontext* c, CUdevice) {
    *c = CONTEXT;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuDevicePrimaryCtxRelease_v2(CUdevice) { return CUDA_SUCCESS; }
EXPORT CUresult cuCtxSetCurrent(CUcontext c) {
    t_current = c;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuCtxGetCurrent(CUcontext* c) {
    *c = t_current;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuCtxGetDevice(CUdevice* d) {
    *d = 0;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuCtxSynchronize() { return CUDA_SUCCESS; }

// ---- streams and events: all work is done by the time the call that queued it returns --------

EXPORT CUresult cuStreamCreate(CUstream* s, unsigned) {
    *s = &g_stream_tag;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuStreamCreateWithPriority(CUstream* s, unsigned, int) {
    *s = &g_stream_tag;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuStreamDestroy_v2(CUstream) { return CUDA_SUCCESS; }
EXPORT CUresult cuStreamSynchronize(CUstream) { return CUDA_SUCCESS; }
EXPORT CUresult cuStreamWaitEvent(CUstream, CUevent, unsigned) { return CUDA_SUCCESS; }
EXPORT CUresult cuEventCreate(CUevent* e, unsigned) {
    *e = &g_event_tag;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuEventRecord(CUevent, CUstream) { return CUDA_SUCCESS; }
EXPORT CUresult cuEventQuery(CUevent) { return CUDA_SUCCESS; }
EXPORT CUresult cuEventSynchronize(CUevent) { return CUDA_SUCCESS; }
EXPORT CUresult cuEventDestroy_v2(CUevent) { return CUDA_SUCCESS; }
EXPORT CUresult cuEventElapsedTime(float* ms, CUevent, CUevent) {
    *ms = 0.0f;
    return CUDA_SUCCESS;
}

// ---- memory ----------------------------------------------------------------------------------

EXPORT CUresult cuMemAlloc_v2(CUdeviceptr* p, size_t bytes) {
    if (!bytes) return CUDA_ERROR_INVALID_VALUE;
    void* m = bge_emu::device_alloc(bytes);
    if (!m) return CUDA_ERROR_OUT_OF_MEMORY;
    *p = (CUdeviceptr)m;
    return CUDA_SUCCESS;
}
EXPORT CUresult cuMemFree_v2(CUdeviceptr p) {
    return bge_emu::device_free((void*)p) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}
EXPORT CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void* src, size_t n) {
    return copy((void*)dst, src, n, true, false);
}
EXPORT CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void* src, size_t n, CUstream) {
    return copy((void*)dst, src, n, true, false);
}
EXPORT CUresult cuMemcpyDtoH_v2(void* dst, CUdeviceptr src, size_t n) {
    return copy(dst, (const void*)src, n, false, true);
}
EXPORT CUresult cuMemcpyDtoHAsync_v2(void* dst, CUdeviceptr src, size_t n, CUstream) {
    return copy(dst, (const void*)src, n, false, true);
}
EXPORT CUresult cuMemcpyDtoD_v2(CUdeviceptr dst, CUdeviceptr src, size_t n) {
    return copy((void*)dst, (const void*)src, n, true, true);
}
EXPORT CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t n, CUstream) {
    return copy((void*)dst, (const void*)src, n, true, true);
}
EXPORT CUresult cuMemsetD8_v2(CUdeviceptr dst, unsigned char v, size_t n) {
    if (n && !bge_emu::device_range((void*)dst, n)) return CUDA_ERROR_INVALID_VALUE;
    std::memset((void*)dst, v, n);
    return CUDA_SUCCESS;
}
EXPORT CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char v, size_t n, CUstream) {
    return cuMemsetD8_v2(dst, v, n);
}

// ---- modules and launches --------------------------------------------------------------------

EXPORT CUresult cuModuleLoadData(CUmodule* m, const void* image) {
    const char* text = (const char*)image;
    if (std::strncmp(text, IMAGE_PREFIX, sizeof IMAGE_PREFIX - 1) != 0) return CUDA_ERROR_INVALID_IMAGE;
    const char* name = text + sizeof IMAGE_PREFIX - 1;
    for (const bge_emu::KernelFile* const* f = bge_emu::kernel_files; *f; ++f)
        if (!std::strcmp((*f)->name, name)) {
            *m = (CUmodule)*f;
            return CUDA_SUCCESS;
        }
    return CUDA_ERROR_INVALID_IMAGE;
}
EXPORT CUresult cuModuleUnload(CUmodule) { return CUDA_SUCCESS; }
EXPORT CUresult cuModuleGetFunction(CUfunction* f, CUmodule m, const char* name) {
    if (!m) return CUDA_ERROR_INVALID_HANDLE;
    const bge_emu::KernelFile* file = (const bge_emu::KernelFile*)m;
    for (size_t i = 0; i < file->count; ++i)
        if (!std::strcmp(file->kernels[i].name, name)) {
            *f = (CUfunction)&file->kernels[i];
            return CUDA_SUCCESS;
        }
    return CUDA_ERROR_NOT_FOUND;
}
EXPORT CUresult cuLaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                               unsigned by, unsigned bz, unsigned shared_bytes, CUstream,
                               void** params, void** extra) {
    if (!f) return CUDA_ERROR_INVALID_HANDLE;
    if (extra) return CUDA_ERROR_NOT_SUPPORTED;  // arguments come as kernelParams only
    ++g_launches;
    t_last_error.clear();
    const int rc = bge_emu::launch(*(const bge_emu::Kernel*)f, dim3{gx, gy, gz}, dim3{bx, by, bz},
                                   shared_bytes, params, t_schedule, &t_last_error);
    if (rc) std::fprintf(stderr, "pg_bge CUDA emulator: %s\n", t_last_error.c_str());
    return rc;
}

// ---- errors ----------------------------------------------------------------------------------

EXPORT CUresult cuGetErrorName(CUresult e, const char** s) {
    switch (e) {
        case 0: *s = "CUDA_SUCCESS"; break;
        case 1: *s = "CUDA_ERROR_INVALID_VALUE"; break;
        case 2: *s = "CUDA_ERROR_OUT_OF_MEMORY"; break;
        case 200: *s = "CUDA_ERROR_INVALID_IMAGE"; break;
        case 400: *s = "CUDA_ERROR_INVALID_HANDLE"; break;
        case 500: *s = "CUDA_ERROR_NOT_FOUND"; break;
        case 700: *s = "CUDA_ERROR_ILLEGAL_ADDRESS"; break;
        case 715: *s = "CUDA_ERROR_ILLEGAL_INSTRUCTION"; break;
        case 719: *s = "CUDA_ERROR_LAUNCH_FAILED"; break;
        default: *s = "CUDA_ERROR_UNKNOWN"; break;
    }
    return CUDA_SUCCESS;
}
EXPORT CUresult cuGetErrorString(CUresult e, const char** s) { return cuGetErrorName(e, s); }
