// Multi-head self-attention over a packed, padding-free batch, flash style: each query makes
// one pass over its sequence's keys with an online softmax, so no [len, len] score matrix is
// stored, and sequences (delimited by cu_seqlens) never see each other's tokens.
//
// Must match: reference::attention (softmax(q k^T / sqrt(D)) v per sequence and head), with
//   the QKV bias, which reference::linear adds, folded in here.
//
// Layout (row-major): qkv [tokens, 3 * hidden] f32 = x Wqkv^T without bias, columns q | k | v
//   as in the CPU backend, head h at columns h*D .. (h+1)*D of each third;
//   bias [3 * hidden] f32, same column order; cu_seqlens [seqs + 1] i32;
//   out [tokens, hidden] f16 or bf16 (the attention-output GEMM's input), head h at h*D.
// Launch: grid (ceil(max_len / 64), heads, seqs), block 64 threads = one query row each; a
//   batch of more than 65,535 sequences (gridDim.z's limit) is launched in slices, each given
//   cu_seqlens from its first sequence on.
//   Blocks past their sequence's end return at once. Keys and values are staged through
//   shared memory in tiles of KV_TILE rows (64 for D <= 64, else 32: 32 KiB either way) and
//   every thread reads the same key at the same time, so shared-memory reads are broadcasts.
//   Scores are taken in log2 units (q is pre-scaled by log2(e) / sqrt(D)) so exp2f applies.
//   The key loop is deliberately not unrolled: unrolled chunks of keys made NVRTC take minutes.
// Head dims: instantiated for D = 32 (MiniLM, bge-small), 64 (bge-base, bge-large), 96, 128.
#include "bge_common.cuh"

#define Q_TILE 64

template <int D, typename T>
__device__ __forceinline__ void attention(const float* __restrict__ qkv,
                                          const float* __restrict__ bias,
                                          const int* __restrict__ cu_seqlens, int heads,
                                          float scale_log2, T* __restrict__ out) {
    constexpr int KV_TILE = D <= 64 ? 64 : 32;
    __shared__ float keys[KV_TILE][D];
    __shared__ float values[KV_TILE][D];

    const int seq = blockIdx.z;
    const int head = blockIdx.y;
    const int start = cu_seqlens[seq];
    const int len = cu_seqlens[seq + 1] - start;
    const int q_first = blockIdx.x * Q_TILE;
    if (q_first >= len) return;  // uniform for the block: no barrier is skipped by some only

    const int hidden = heads * D;
    const size_t row_stride = 3 * (size_t)hidden;
    const int qi = q_first + threadIdx.x;
    const bool active = qi < len;
    const float* key_bias = bias + hidden + head * D;
    const float* value_bias = bias + 2 * hidden + head * D;

    float q[D];
    float acc[D];
#pragma unroll
    for (int c = 0; c < D; ++c) acc[c] = 0.0f;
    if (active) {
        const float* row = qkv + (size_t)(start + qi) * row_stride + head * D;
        const float* query_bias = bias + head * D;
#pragma unroll
        for (int c = 0; c < D; ++c) q[c] = (row[c] + query_bias[c]) * scale_log2;
    } else {
#pragma unroll
        for (int c = 0; c < D; ++c) q[c] = 0.0f;
    }
    float running_max = BGE_NEG_INF;
    float running_sum = 0.0f;

    for (int k0 = 0; k0 < len; k0 += KV_TILE) {
        const int n = min(KV_TILE, len - k0);
        __syncthreads();  // every thread is done with the previous tile
        for (int e = threadIdx.x; e < n * D; e += Q_TILE) {
            const int r = e / D;
            const int c = e % D;
            const float* row = qkv + (size_t)(start + k0 + r) * row_stride + head * D;
            keys[r][c] = row[hidden + c] + key_bias[c];
            values[r][c] = row[2 * hidden + c] + value_bias[c];
        }
        __syncthreads();
        if (!active) continue;

#pragma unroll 1
        for (int j = 0; j < n; ++j) {
            float score = 0.0f;
#pragma unroll
            for (int c = 0; c < D; ++c) score = fmaf(q[c], keys[j][c], score);
            // Online softmax: rescale what has been summed only when the maximum grows, which
            // after the first few keys is rare. On the first key running_max is -inf and the
            // correction is exp2(-inf) = 0 (acc and sum are still 0).
            if (score > running_max) {
                const float correction = exp2f(running_max - score);
                running_sum *= correction;
#pragma unroll
                for (int c = 0; c < D; ++c) acc[c] *= correction;
                running_max = score;
            }
            const float p = exp2f(score - running_max);
            running_sum += p;
#pragma unroll
            for (int c = 0; c < D; ++c) acc[c] = fmaf(p, values[j][c], acc[c]);
        }
    }

    if (!active) return;
    const float inv_sum = 1.0f / running_sum;
    T* o = out + (size_t)(start + qi) * hidden + head * D;
#pragma unroll
    for (int c = 0; c < D; ++c) o[c] = from_float<T>(acc[c] * inv_sum);
}

#define BGE_ATTENTION(D, SUFFIX, T)                                                               \
    extern "C" __global__ void __launch_bounds__(Q_TILE) attention_d##D##_##SUFFIX(               \
        const float* __restrict__ qkv, const float* __restrict__ bias,                           \
        const int* __restrict__ cu_seqlens, int heads, float scale_log2, T* __restrict__ out) {  \
        attention<D, T>(qkv, bias, cu_seqlens, heads, scale_log2, out);                           \
    }

BGE_ATTENTION(32, f16, f16)
BGE_ATTENTION(32, bf16, bf16)
BGE_ATTENTION(64, f16, f16)
BGE_ATTENTION(64, bf16, bf16)
BGE_ATTENTION(96, f16, f16)
BGE_ATTENTION(96, bf16, bf16)
BGE_ATTENTION(128, f16, f16)
BGE_ATTENTION(128, bf16, bf16)
