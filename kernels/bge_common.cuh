// Helpers every pg_bge kernel includes: 16-bit storage types, their conversions, block sums.
//
// The kernels include no CUDA toolkit header (not even cuda_fp16.h), so a server needs only
// libnvrtc to build them, not a toolkit install. The module cache hands this file to NVRTC as
// an in-memory header named "bge_common.cuh".
//
// Under BGE_HOST_EMULATION (tests only: kernels/emulator) the same sources compile as C++ on the
// CPU with host_emulation.h supplying the CUDA built-ins; NVRTC never defines it.
#pragma once

#ifdef BGE_HOST_EMULATION
#include "host_emulation.h"
#else
// Inline PTX: the conversions, written once so that the host emulation executes the very
// instruction text NVRTC assembles, and the tensor-core mma (bge_mma_16816, below).
#define BGE_CVT(INSTRUCTION, OUT_CONSTRAINT, OUT, IN_CONSTRAINT, IN) \
    asm(INSTRUCTION : OUT_CONSTRAINT(OUT) : IN_CONSTRAINT(IN))
#endif

typedef unsigned short bge_u16;

// IEEE binary16, stored as its raw bits (GEMM inputs in fp16 precision).
struct f16 { bge_u16 bits; };
// bfloat16, stored as its raw bits (GEMM inputs in bf16 precision).
struct bf16 { bge_u16 bits; };

// D += A B on the tensor cores, for one warp: mma.sync m16n8k16, A row-major 16 x 16, B
// column-major 16 x 8, 16-bit inputs, f32 accumulators, in the fragment layout the PTX ISA
// gives (lane = 4 g + t: A {(g, 2t..2t+1), (g+8, 2t..), (g, 8+2t..), (g+8, 8+2t..)}, B
// {(2t.., g), (8+2t.., g)}, D {(g, 2t..), (g+8, 2t..)}). Needs sm_80. The host emulation
// gathers the fragments of the warp and multiplies in f32 (host_emulation.h).
#ifdef BGE_HOST_EMULATION
__device__ __forceinline__ void bge_mma_16816(f16, float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
    bge_emu_mma_16816(d, a, b, false);
}
__device__ __forceinline__ void bge_mma_16816(bf16, float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
    bge_emu_mma_16816(d, a, b, true);
}
#else
__device__ __forceinline__ void bge_mma_16816(f16, float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
__device__ __forceinline__ void bge_mma_16816(bf16, float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
#endif

// Two adjacent 16-bit elements (4-byte aligned) as one 32-bit word, the unit of an mma
// operand register. The host emulation copies bytes: its C++ compiler may assume that 16-bit
// storage is never accessed as unsigned (strict aliasing); NVRTC's accesses stay plain words.
#ifdef BGE_HOST_EMULATION
__device__ __forceinline__ unsigned bge_load_pair(const void* p) {
    unsigned v;
    std::memcpy(&v, p, 4);
    return v;
}
__device__ __forceinline__ void bge_store_pair(void* p, unsigned v) { std::memcpy(p, &v, 4); }
#else
__device__ __forceinline__ unsigned bge_load_pair(const void* p) { return *reinterpret_cast<const unsigned*>(p); }
__device__ __forceinline__ void bge_store_pair(void* p, unsigned v) { *reinterpret_cast<unsigned*>(p) = v; }
#endif

#define BGE_NEG_INF __int_as_float(0xff800000)

__device__ __forceinline__ float to_float(float x) { return x; }

__device__ __forceinline__ float to_float(f16 x) {
    float r;
    BGE_CVT("cvt.f32.f16 %0, %1;", "=f", r, "h", x.bits);
    return r;
}

__device__ __forceinline__ float to_float(bf16 x) {
    return __uint_as_float(((unsigned)x.bits) << 16);
}

template <typename T> __device__ __forceinline__ T from_float(float x);

template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }

// Round to nearest even, as torch's .half() does.
template <> __device__ __forceinline__ f16 from_float<f16>(float x) {
    f16 r;
    BGE_CVT("cvt.rn.f16.f32 %0, %1;", "=h", r.bits, "f", x);
    return r;
}

// Round to nearest even with integer operations (cvt.rn.bf16.f32 needs sm_80; this works on
// every architecture). NaN stays a quiet NaN.
template <> __device__ __forceinline__ bf16 from_float<bf16>(float x) {
    unsigned u = __float_as_uint(x);
    bf16 r;
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        r.bits = (bge_u16)((u >> 16) | 0x0040u);
        return r;
    }
    u += 0x7fffu + ((u >> 16) & 1u);
    r.bits = (bge_u16)(u >> 16);
    return r;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

// Sum of `v` over the whole block, returned to every thread. blockDim.x must be a multiple of
// 32 and every thread must call it; `scratch` is 32 floats of shared memory, reusable right
// after the call returns (the leading barrier protects the previous call's readers).
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int warps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : 0.0f;
    return warp_sum(v);
}
