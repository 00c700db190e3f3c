// Causal grouped-query attention for decoders over a packed, padding-free batch: scores
// q.k * scale, soft-capped as cap * tanh(s / cap) when cap > 0, each query seeing the keys
// j <= i with i - j < window (window 0: all j <= i), online softmax, times the values.
//
// Must match: reference::causal_attention (query head h reads kv head h / (heads / kv_heads)).
//
// Layout (row-major): qkv [tokens, (heads + 2*kv_heads) * d] f32 (the q | k | v GEMM output with
//   RoPE applied by rope.cu), query head h at column h*d, kv head g's key at (heads + g)*d and
//   value at (heads + kv_heads + g)*d; cu_seqlens [seqs + 1] i32; out [tokens, heads * d] f16 or
//   bf16 (the output projection's input).
// Launch: grid (ceil(max_len / 4), heads, seqs), block 128 = 4 warps, one query row per warp; a
//   batch of more than 65,535 sequences is launched in slices, each given cu_seqlens from its
//   first sequence on. Lane l holds channels l, l+32, ... of the query and of the accumulator
//   (d <= 256: at most 8 each), a score is a warp sum, and a warp walks only the keys its query
//   sees, so a sliding-window layer costs O(window) per query. No block barrier: warps past
//   their sequence's end return at once.
#include "bge_common.cuh"

#define ROWS_PER_BLOCK 4
#define BLOCK_THREADS 128  // 32 * ROWS_PER_BLOCK
#define MAX_CHUNKS 8  // head_dim <= 32 * MAX_CHUNKS

template <typename T>
__device__ __forceinline__ void causal_attention(const float* __restrict__ qkv,
                                                 const int* __restrict__ cu_seqlens, int heads,
                                                 int kv_heads, int head_dim, float scale,
                                                 float softcap, int window, T* __restrict__ out) {
    const int lane = threadIdx.x & 31;
    const int seq = blockIdx.z;
    const int head = blockIdx.y;
    const int start = cu_seqlens[seq];
    const int len = cu_seqlens[seq + 1] - start;
    const int qi = blockIdx.x * ROWS_PER_BLOCK + (threadIdx.x >> 5);
    if (qi >= len) return;  // uniform for the warp

    const int d = head_dim;
    const int kv = head / (heads / kv_heads);
    const size_t width = (size_t)(heads + 2 * kv_heads) * d;
    const float* q_row = qkv + (size_t)(start + qi) * width + (size_t)head * d;
    const size_t key_col = (size_t)(heads + kv) * d;
    const size_t value_col = (size_t)(heads + kv_heads + kv) * d;

    float q[MAX_CHUNKS];
    float acc[MAX_CHUNKS];
#pragma unroll
    for (int k = 0; k < MAX_CHUNKS; ++k) {
        const int c = lane + 32 * k;
        q[k] = c < d ? q_row[c] : 0.0f;
        acc[k] = 0.0f;
    }
    float running_max = BGE_NEG_INF;
    float running_sum = 0.0f;
    const int first = window > 0 ? max(0, qi - window + 1) : 0;

#pragma unroll 1
    for (int j = first; j <= qi; ++j) {
        const float* row = qkv + (size_t)(start + j) * width;
        float partial = 0.0f;
#pragma unroll
        for (int k = 0; k < MAX_CHUNKS; ++k) {
            const int c = lane + 32 * k;
            if (c < d) partial = fmaf(q[k], row[key_col + c], partial);
        }
        float score = warp_sum(partial) * scale;
        if (softcap > 0.0f) score = softcap * tanhf(score / softcap);
        // Online softmax: rescale what has been summed when the maximum grows (on the first
        // key the correction is exp(-inf) = 0 and acc, sum are still 0).
        if (score > running_max) {
            const float correction = expf(running_max - score);
            running_sum *= correction;
#pragma unroll
            for (int k = 0; k < MAX_CHUNKS; ++k) acc[k] *= correction;
            running_max = score;
        }
        const float p = expf(score - running_max);
        running_sum += p;
#pragma unroll
        for (int k = 0; k < MAX_CHUNKS; ++k) {
            const int c = lane + 32 * k;
            if (c < d) acc[k] = fmaf(p, row[value_col + c], acc[k]);
        }
    }

    const float inv_sum = 1.0f / running_sum;
    T* o = out + (size_t)(start + qi) * heads * d + (size_t)head * d;
#pragma unroll
    for (int k = 0; k < MAX_CHUNKS; ++k) {
        const int c = lane + 32 * k;
        if (c < d) o[c] = from_float<T>(acc[k] * inv_sum);
    }
}

#define BGE_CAUSAL_ATTENTION(SUFFIX, T)                                                           \
    extern "C" __global__ void __launch_bounds__(BLOCK_THREADS) causal_attention_##SUFFIX(  \
        const float* __restrict__ qkv, const int* __restrict__ cu_seqlens, int heads,             \
        int kv_heads, int head_dim, float scale, float softcap, int window,                      \
        T* __restrict__ out) {                                                                    \
        causal_attention<T>(qkv, cu_seqlens, heads, kv_heads, head_dim, scale, softcap, window,  \
                            out);                                                                 \
    }

BGE_CAUSAL_ATTENTION(f16, f16)
BGE_CAUSAL_ATTENTION(bf16, bf16)
