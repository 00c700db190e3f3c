// dtype casts between f32 and the 16-bit GEMM types: weights are uploaded as f32 and narrowed
// on the device; the widening casts let tests read 16-bit buffers back.
//
// Must match: half::f16::from_f32 / half::bf16::from_f32 (round to nearest even) and their
//   to_f32, which is what the engine's weights.rs uses for F16 / BF16 safetensors.
//
// Layout: in [n], out [n], contiguous.
// Launch: 1-D grid-stride loop over n; block 256, any grid (the host caps it).
#include "bge_common.cuh"

template <typename From, typename To>
__device__ __forceinline__ void cast(const From* in, To* out, unsigned long long n) {
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += stride)
        out[i] = from_float<To>(to_float(in[i]));
}

#define BGE_CAST(NAME, FROM, TO)                                                                  \
    extern "C" __global__ void NAME(const FROM* in, TO* out, unsigned long long n) {              \
        cast<FROM, TO>(in, out, n);                                                               \
    }

BGE_CAST(cast_f32_to_f16, float, f16)
BGE_CAST(cast_f32_to_bf16, float, bf16)
BGE_CAST(cast_f16_to_f32, f16, float)
BGE_CAST(cast_bf16_to_f32, bf16, float)
