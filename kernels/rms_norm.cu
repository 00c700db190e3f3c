// RMSNorm and the plain residual add: the decoders' normalisation (Gemma2, Mistral, Qwen3).
//
// Must match: reference::rms_norm(x, gain, eps, out, accumulate), i.e. per row
//   v = (x * (mean(x^2) + eps)^-1/2) * gain       (gain = 1 + w for Gemma, w otherwise)
//   out32 = accumulate ? out32 + v : v  (when out32 is not null)
//   out16 = v in 16 bits                (when out16 is not null: the next GEMM's input)
// and, for the decoders without sandwich norms, x += y (residual_add).
//
// Layout (row-major): x [rows, hidden] f32; gain [hidden] f32; out32 [rows, hidden] f32, which
//   may be x itself (each element is read and written by the same thread, the write after the
//   block's reduction); out16 [rows, hidden] f16 or bf16.
// Launch: rms_norm_*: grid (rows), block a multiple of 32 (128 for hidden <= 1024, else 256).
//   residual_add: 1-D grid-stride loop over n; block 256, any grid.
#include "bge_common.cuh"

template <typename T>
__device__ __forceinline__ void rms_norm(const float* x, const float* gain, int hidden, float eps,
                                         int accumulate, float* out32, T* out16) {
    __shared__ float scratch[32];
    const size_t row = (size_t)blockIdx.x * hidden;
    float squares = 0.0f;
    for (int c = threadIdx.x; c < hidden; c += blockDim.x) squares += x[row + c] * x[row + c];
    const float inv = 1.0f / sqrtf(block_sum(squares, scratch) / hidden + eps);
    for (int c = threadIdx.x; c < hidden; c += blockDim.x) {
        const float v = __fmul_rn(__fmul_rn(x[row + c], inv), gain[c]);
        if (out32) out32[row + c] = accumulate ? out32[row + c] + v : v;
        if (out16) out16[row + c] = from_float<T>(v);
    }
}

#define BGE_RMS_NORM(SUFFIX, T)                                                                   \
    extern "C" __global__ void rms_norm_##SUFFIX(const float* x, const float* gain, int hidden,   \
                                                 float eps, int accumulate, float* out32,         \
                                                 T* out16) {                                      \
        rms_norm<T>(x, gain, hidden, eps, accumulate, out32, out16);                              \
    }

BGE_RMS_NORM(f16, f16)
BGE_RMS_NORM(bf16, bf16)

extern "C" __global__ void residual_add(const float* y, unsigned long long n, float* x) {
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += stride)
        x[i] += y[i];
}
