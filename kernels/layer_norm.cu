// Bias + residual + LayerNorm: the norm after BERT's attention output and after its FFN.
//
// Must match: reference::linear's bias add followed by
//   reference::add_layer_norm(x, Some(residual), gamma, beta, eps), i.e. per row
//   out = LayerNorm((linear_out + bias) + residual) * gamma + beta.
//
// Layout (row-major): linear_out [rows, hidden] f32 (GEMM result without its bias);
//   bias, gamma, beta [hidden] f32; residual [rows, hidden] f32;
//   out32 [rows, hidden] f32, which may be the residual buffer itself (the residual stream is
//   updated in place: each element is read and written by the same thread, reads first);
//   out16 [rows, hidden] f16 or bf16: the same values as the next GEMM's input.
// Launch: grid (rows), block a multiple of 32 (128 for hidden <= 1024, else 256).
#include "bge_common.cuh"

#define LN_CACHED 8  // values per thread held in registers

template <typename T>
__device__ __forceinline__ void bias_residual_layer_norm(const float* linear_out, const float* bias,
                                                         const float* residual, const float* gamma,
                                                         const float* beta, int hidden, float eps,
                                                         float* out32, T* out16) {
    __shared__ float scratch[32];
    const size_t row = (size_t)blockIdx.x * hidden;
    const float* y = linear_out + row;
    const float* r = residual + row;

    // Rows of up to LN_CACHED * blockDim.x values (hidden <= 2,048 at the launch's block
    // sizes) are read once and kept in registers; longer ones are read three times.
    if (hidden <= LN_CACHED * (int)blockDim.x) {  // uniform across the block
        float v[LN_CACHED];
        float sum = 0.0f;
#pragma unroll
        for (int i = 0; i < LN_CACHED; ++i) {
            const int c = threadIdx.x + i * blockDim.x;
            v[i] = c < hidden ? (y[c] + bias[c]) + r[c] : 0.0f;
            sum += v[i];
        }
        const float mean = block_sum(sum, scratch) / hidden;
        float squares = 0.0f;
#pragma unroll
        for (int i = 0; i < LN_CACHED; ++i) {
            const int c = threadIdx.x + i * blockDim.x;
            const float d = v[i] - mean;
            if (c < hidden) squares += d * d;
        }
        const float inv_std = 1.0f / sqrtf(block_sum(squares, scratch) / hidden + eps);
#pragma unroll
        for (int i = 0; i < LN_CACHED; ++i) {
            const int c = threadIdx.x + i * blockDim.x;
            if (c >= hidden) break;
            const float out = (v[i] - mean) * inv_std * gamma[c] + beta[c];
            out32[row + c] = out;
            out16[row + c] = from_float<T>(out);
        }
        return;
    }

    float sum = 0.0f;
    for (int c = threadIdx.x; c < hidden; c += blockDim.x) sum += (y[c] + bias[c]) + r[c];
    const float mean = block_sum(sum, scratch) / hidden;

    float squares = 0.0f;
    for (int c = threadIdx.x; c < hidden; c += blockDim.x) {
        const float d = (y[c] + bias[c]) + r[c] - mean;
        squares += d * d;
    }
    const float inv_std = 1.0f / sqrtf(block_sum(squares, scratch) / hidden + eps);

    for (int c = threadIdx.x; c < hidden; c += blockDim.x) {
        const float v = ((y[c] + bias[c]) + r[c] - mean) * inv_std * gamma[c] + beta[c];
        out32[row + c] = v;
        out16[row + c] = from_float<T>(v);
    }
}

#define BGE_RESIDUAL_LN(SUFFIX, T)                                                                \
    extern "C" __global__ void bias_residual_layer_norm_##SUFFIX(                                 \
        const float* linear_out, const float* bias, const float* residual, const float* gamma,    \
        const float* beta, int hidden, float eps, float* out32, T* out16) {                       \
        bias_residual_layer_norm<T>(linear_out, bias, residual, gamma, beta, hidden, eps, out32,  \
                                    out16);                                                       \
    }

BGE_RESIDUAL_LN(f16, f16)
BGE_RESIDUAL_LN(bf16, bf16)
