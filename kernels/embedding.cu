// Embedding gather + LayerNorm: the BERT encoder's first op; and the decoders' scaled gather.
//
// Must match: Encoder::embed_tokens (word row + (position row + token-type row), rows picked
// by the packed batch) followed by reference::add_layer_norm(x, None, gamma, beta, eps).
//
// Layout (row-major): ids, positions, type_ids [tokens] u32, already bound-checked on the host;
//   word [vocab, hidden], position [max_positions, hidden], token_type [type_vocab, hidden],
//   gamma, beta [hidden], all f32;
//   out32 [tokens, hidden] f32: the residual stream;
//   out16 [tokens, hidden] f16 or bf16: the same values as the next GEMM's input.
// Launch: grid (tokens), block a multiple of 32 (128 for hidden <= 1024, else 256); one block
//   per token. Mean and variance are two passes over the row (it stays in L1), so any hidden
//   size works.
#include "bge_common.cuh"

template <typename T>
__device__ __forceinline__ void embed_layer_norm(const unsigned* ids, const unsigned* positions,
                                                 const unsigned* type_ids, const float* word,
                                                 const float* position, const float* token_type,
                                                 const float* gamma, const float* beta, int hidden,
                                                 float eps, float* out32, T* out16) {
    __shared__ float scratch[32];
    const size_t t = blockIdx.x;
    const float* w = word + (size_t)ids[t] * hidden;
    const float* p = position + (size_t)positions[t] * hidden;
    const float* ty = token_type + (size_t)type_ids[t] * hidden;

    float sum = 0.0f;
    for (int c = threadIdx.x; c < hidden; c += blockDim.x) sum += w[c] + (p[c] + ty[c]);
    const float mean = block_sum(sum, scratch) / hidden;

    float squares = 0.0f;
    for (int c = threadIdx.x; c < hidden; c += blockDim.x) {
        const float d = w[c] + (p[c] + ty[c]) - mean;
        squares += d * d;
    }
    const float inv_std = 1.0f / sqrtf(block_sum(squares, scratch) / hidden + eps);

    for (int c = threadIdx.x; c < hidden; c += blockDim.x) {
        const float v = (w[c] + (p[c] + ty[c]) - mean) * inv_std * gamma[c] + beta[c];
        out32[t * hidden + c] = v;
        out16[t * hidden + c] = from_float<T>(v);
    }
}

#define BGE_EMBED(SUFFIX, T)                                                                      \
    extern "C" __global__ void embed_layer_norm_##SUFFIX(                                         \
        const unsigned* ids, const unsigned* positions, const unsigned* type_ids,                 \
        const float* word, const float* position, const float* token_type, const float* gamma,    \
        const float* beta, int hidden, float eps, float* out32, T* out16) {                       \
        embed_layer_norm<T>(ids, positions, type_ids, word, position, token_type, gamma, beta,   \
                            hidden, eps, out32, out16);                                           \
    }

BGE_EMBED(f16, f16)
BGE_EMBED(bf16, bf16)

// Decoders: out32[t] = word[ids[t]] * scale (Gemma's sqrt(hidden_size) rounded to f32, 1 for
// the others). Must match Decoder::embed_tokens. Layout: ids [tokens] u32 (bound-checked on
// the host), word [vocab, hidden] f32, out32 [tokens, hidden] f32. Launch: grid (tokens), block
// 128.
extern "C" __global__ void embed_scaled(const unsigned* ids, const float* word, int hidden,
                                        float scale, float* out32) {
    const size_t t = blockIdx.x;
    const float* w = word + (size_t)ids[t] * hidden;
    for (int c = threadIdx.x; c < hidden; c += blockDim.x) out32[t * hidden + c] = w[c] * scale;
}
