// Bias + GELU: the activation after BERT's FFN input layer; and the decoders' gated MLP middle.
//
// Must match: reference::linear(..., act = Some(Gelu | GeluTanh)), i.e. the bias add then
//   reference::gelu (exact: 0.5 x (1 + erf(x / sqrt 2)), config "gelu") or
//   reference::gelu_tanh (0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), "gelu_new" and
//   "gelu_pytorch_tanh"), computed in f32 where the reference uses f64.
//
// Layout (row-major): linear_out [rows, cols] f32 (GEMM result without its bias);
//   bias [cols] f32; out [rows, cols] f16 or bf16, the next GEMM's input.
// Launch: bias_gelu_*: grid-stride loop over rows, one block per row at a time; block 256,
//   any grid (the host caps it).
//
// Gated (gated_gelu_tanh_*, gated_silu_*): must match reference::gated_activation, i.e.
//   out[r, c] = act(gate_up[r, c]) * gate_up[r, inter + c] with act gelu_tanh (Gemma2) or
//   silu = x / (1 + e^-x) (Mistral, Qwen3). Layout: gate_up [rows, 2 * inter] f32 (the fused
//   gate | up GEMM output), out [rows, inter] f16 or bf16. Launch: 1-D grid-stride loop over
//   rows * inter; block 256, any grid.
#include "bge_common.cuh"

__device__ __forceinline__ float gelu_erf(float x) {
    return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
}

__device__ __forceinline__ float gelu_tanh(float x) {
    const float k = 0.79788456080286536f;  // sqrt(2 / pi)
    return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
}

// Rows go to blocks and a row's columns to threads, so no index is divided (a 64-bit modulo
// per element made this kernel compute-bound).
template <typename T, bool TANH>
__device__ __forceinline__ void bias_gelu(const float* linear_out, const float* bias,
                                          unsigned long long rows, int cols, T* out) {
    for (unsigned long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* y = linear_out + r * cols;
        T* o = out + r * cols;
#pragma unroll 4
        for (int c = threadIdx.x; c < cols; c += blockDim.x) {
            const float x = y[c] + bias[c];
            o[c] = from_float<T>(TANH ? gelu_tanh(x) : gelu_erf(x));
        }
    }
}

#define BGE_BIAS_GELU(NAME, T, TANH)                                                              \
    extern "C" __global__ void NAME(const float* linear_out, const float* bias,                   \
                                    unsigned long long rows, int cols, T* out) {                  \
        bias_gelu<T, TANH>(linear_out, bias, rows, cols, out);                                    \
    }

BGE_BIAS_GELU(bias_gelu_erf_f16, f16, false)
BGE_BIAS_GELU(bias_gelu_erf_bf16, bf16, false)
BGE_BIAS_GELU(bias_gelu_tanh_f16, f16, true)
BGE_BIAS_GELU(bias_gelu_tanh_bf16, bf16, true)

__device__ __forceinline__ float silu(float x) { return x / (1.0f + expf(-x)); }

template <typename T, bool SILU>
__device__ __forceinline__ void gated(const float* gate_up, unsigned long long rows, int inter,
                                      T* out) {
    const unsigned long long n = rows * (unsigned long long)inter;
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += stride) {
        const unsigned long long r = i / inter;
        const unsigned long long c = i % inter;
        const float g = gate_up[r * 2 * inter + c];
        const float u = gate_up[r * 2 * inter + inter + c];
        out[i] = from_float<T>((SILU ? silu(g) : gelu_tanh(g)) * u);
    }
}

#define BGE_GATED(NAME, T, SILU)                                                                  \
    extern "C" __global__ void NAME(const float* gate_up, unsigned long long rows, int inter,     \
                                    T* out) {                                                     \
        gated<T, SILU>(gate_up, rows, inter, out);                                                \
    }

BGE_GATED(gated_gelu_tanh_f16, f16, false)
BGE_GATED(gated_gelu_tanh_bf16, bf16, false)
BGE_GATED(gated_silu_f16, f16, true)
BGE_GATED(gated_silu_bf16, bf16, true)
