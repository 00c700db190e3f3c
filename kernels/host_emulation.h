// Host emulation of the CUDA execution model, for tests only: kernels/emulator compiles every
// kernels/*.cu as C++ with the system compiler and BGE_HOST_EMULATION defined, which makes
// bge_common.cuh include this header. NVRTC never sees it.
//
// What it gives the kernels:
// - qualifiers (__global__, __device__, __forceinline__, __launch_bounds__) as plain C++;
// - __shared__ arrays as `static thread_local`: the emulator runs the threads of one block as
//   fibers on one OS thread, and blocks one after another, so that storage is per block;
// - threadIdx, blockIdx, blockDim, gridDim of the fiber that is running;
// - __syncthreads as a real barrier over every thread of the block, and warp shuffles as an
//   exchange that waits for every lane the mask names (kernels/emulator/cpp/runtime.cpp);
// - the PTX conversions (BGE_CVT) executed in software from the instruction text itself, so a
//   wrong rounding modifier in bge_common.cuh changes what the tests see;
// - bit casts and the few math intrinsics the kernels use.
// A kernel that needs more (atomics, dynamic shared memory, other PTX) fails to build here, or
// fails its launch with a message: never a silent approximation.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

// ---- qualifiers ------------------------------------------------------------------------------
#ifdef BGE_EMU_LIST_KERNELS
// kernels/emulator/build.rs preprocesses each kernel file with this defined and reads the
// entry points' names (and launch bounds, which the emulator enforces) after the markers.
#define __global__ bge_emu_kernel_entry_point
#define __launch_bounds__(...) bge_emu_launch_bounds(__VA_ARGS__)
#else
#define __global__
#define __launch_bounds__(...)
#endif
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __shared__ static thread_local

// ---- built-in variables ----------------------------------------------------------------------
struct uint3 { unsigned x, y, z; };
struct alignas(16) float4 { float x, y, z, w; };
struct dim3 { unsigned x, y, z; };

namespace bge_emu {
// Set by the runtime for the fiber that is about to run (threadIdx) and for the block (the rest).
extern thread_local uint3 thread_idx;
extern thread_local uint3 block_idx;
extern thread_local dim3 block_dim;
extern thread_local dim3 grid_dim;

// Runtime entry points (kernels/emulator/cpp/runtime.cpp).
void syncthreads(const char* file, int line);
enum WarpOp { SHFL_XOR, SHFL_DOWN, SHFL_UP, SHFL_IDX, SYNC_WARP };
unsigned long long warp_op(WarpOp op, unsigned mask, unsigned long long value, int arg, int width);
[[noreturn]] void fail(const char* message);
}  // namespace bge_emu

#define threadIdx (bge_emu::thread_idx)
#define blockIdx (bge_emu::block_idx)
#define blockDim (bge_emu::block_dim)
#define gridDim (bge_emu::grid_dim)
#define warpSize 32

// The empty asm statements keep the compiler from moving memory accesses across the barrier.
#define __syncthreads()                                     \
    do {                                                    \
        asm volatile("" ::: "memory");                      \
        bge_emu::syncthreads(__FILE__, __LINE__);           \
        asm volatile("" ::: "memory");                      \
    } while (0)

// ---- warp shuffles ---------------------------------------------------------------------------
template <typename T>
inline T bge_emu_warp_op(bge_emu::WarpOp op, unsigned mask, T v, int arg, int width) {
    static_assert(sizeof(T) <= 8, "warp shuffles move at most 8 bytes");
    unsigned long long bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    asm volatile("" ::: "memory");
    bits = bge_emu::warp_op(op, mask, bits, arg, width);
    asm volatile("" ::: "memory");
    T out;
    std::memcpy(&out, &bits, sizeof(T));
    return out;
}

template <typename T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    return bge_emu_warp_op(bge_emu::SHFL_XOR, mask, v, lane_mask, width);
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    return bge_emu_warp_op(bge_emu::SHFL_DOWN, mask, v, (int)delta, width);
}
template <typename T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    return bge_emu_warp_op(bge_emu::SHFL_UP, mask, v, (int)delta, width);
}
template <typename T>
inline T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32) {
    return bge_emu_warp_op(bge_emu::SHFL_IDX, mask, v, src_lane, width);
}
inline void __syncwarp(unsigned mask = 0xffffffffu) {
    asm volatile("" ::: "memory");
    bge_emu::warp_op(bge_emu::SYNC_WARP, mask, 0, 0, 32);
    asm volatile("" ::: "memory");
}

// ---- bit casts and math ----------------------------------------------------------------------
// Templates so that a literal such as 0xff800000 converts without a narrowing warning.
template <typename I> inline float __int_as_float(I i) {
    const int32_t v = (int32_t)i;
    float f;
    std::memcpy(&f, &v, 4);
    return f;
}
template <typename I> inline float __uint_as_float(I i) {
    const uint32_t v = (uint32_t)i;
    float f;
    std::memcpy(&f, &v, 4);
    return f;
}
inline unsigned __float_as_uint(float f) {
    uint32_t v;
    std::memcpy(&v, &f, 4);
    return v;
}
inline int __float_as_int(float f) {
    int32_t v;
    std::memcpy(&v, &f, 4);
    return v;
}

inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
// CUDA's approximate intrinsics, here exact: the emulation proves indexing and
// synchronisation, not last-bit agreement with the GPU's math.
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float __expf(float x) { return expf(x); }
// Multiplications NVRTC must not contract into a fused multiply-add; C++17 never contracts.
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __logf(float x) { return logf(x); }
inline float __fdividef(float a, float b) { return a / b; }

// ---- PTX conversions -------------------------------------------------------------------------
// bge_common.cuh writes each conversion as BGE_CVT("cvt... %0, %1;", "=h", out, "f", in); on
// the GPU that is the asm statement, here the same instruction text is interpreted: cvt with
// a rounding modifier (.rn .rz .rm .rp, required when narrowing, refused when widening)
// between .f32 and .f16 / .bf16. Anything else fails the launch with the text.
namespace bge_emu {
unsigned short ptx_cvt_to_16(const char* instruction, const char* out_constraint,
                             const char* in_constraint, float in);
float ptx_cvt_to_32(const char* instruction, const char* out_constraint,
                    const char* in_constraint, unsigned short in);
// A 16-bit value (f16, or bf16 when `bf16`) widened exactly, as the PTX widening cvt does.
float widen_16(unsigned short bits, bool bf16);
}  // namespace bge_emu

inline void bge_emu_cvt(const char* insn, const char* oc, const char* ic, unsigned short* out,
                        float in) {
    *out = bge_emu::ptx_cvt_to_16(insn, oc, ic, in);
}
inline void bge_emu_cvt(const char* insn, const char* oc, const char* ic, float* out,
                        unsigned short in) {
    *out = bge_emu::ptx_cvt_to_32(insn, oc, ic, in);
}
#define BGE_CVT(INSTRUCTION, OUT_CONSTRAINT, OUT, IN_CONSTRAINT, IN) \
    bge_emu_cvt(INSTRUCTION, OUT_CONSTRAINT, IN_CONSTRAINT, &(OUT), (IN))

// ---- tensor-core mma ---------------------------------------------------------------------------
// bge_common.cuh's bge_mma_16816 (mma.sync m16n8k16, f32 accumulate) for one warp: the lanes
// post their fragments to a per-warp exchange (block-local, like shared memory) and wait for
// the whole warp; lane 0 rebuilds A (16 x 16) and B (16 x 8) in the PTX ISA's fragment layout
// and multiplies; after a second wait each lane adds its four outputs. The next call's first
// wait keeps lane 0 from overwriting the product before every lane has read it. The inputs are
// f16, or bf16 when `bf16`.
inline void bge_emu_mma_16816(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2], bool bf16) {
    const auto widen = [bf16](unsigned short bits) { return bge_emu::widen_16(bits, bf16); };
    static thread_local unsigned fragments[32][32][6];  // [warp][lane][a0..a3, b0, b1]
    static thread_local float product[32][16][8];       // [warp][row][column]
    const unsigned tid = bge_emu::thread_idx.x;
    const unsigned warp = tid >> 5, lane = tid & 31u;
    if (warp >= 32) bge_emu::fail("bge_mma_16816: more than 32 warps in a block");
    for (int i = 0; i < 4; ++i) fragments[warp][lane][i] = a[i];
    for (int i = 0; i < 2; ++i) fragments[warp][lane][4 + i] = b[i];
    __syncwarp();
    if (lane == 0) {
        float A[16][16], B[16][8];
        for (int src = 0; src < 32; ++src) {
            const unsigned* r = fragments[warp][src];
            const int g = src >> 2, t = src & 3;
            for (int i = 0; i < 2; ++i) {
                const int shift = 16 * i;
                A[g][2 * t + i] = widen((unsigned short)(r[0] >> shift));
                A[g + 8][2 * t + i] = widen((unsigned short)(r[1] >> shift));
                A[g][8 + 2 * t + i] = widen((unsigned short)(r[2] >> shift));
                A[g + 8][8 + 2 * t + i] = widen((unsigned short)(r[3] >> shift));
                B[2 * t + i][g] = widen((unsigned short)(r[4] >> shift));
                B[8 + 2 * t + i][g] = widen((unsigned short)(r[5] >> shift));
            }
        }
        for (int row = 0; row < 16; ++row) {
            for (int col = 0; col < 8; ++col) {
                float sum = 0.0f;
                for (int k = 0; k < 16; ++k) sum += A[row][k] * B[k][col];
                product[warp][row][col] = sum;
            }
        }
    }
    __syncwarp();
    const int g = (int)lane >> 2, t = (int)lane & 3;
    for (int i = 0; i < 2; ++i) {
        d[i] += product[warp][g][2 * t + i];
        d[2 + i] += product[warp][g + 8][2 * t + i];
    }
}
