// Multi-head self-attention over a packed, padding-free batch, flash style on the tensor cores:
// a block takes 128 queries of one sequence and head and makes one pass over that sequence's
// keys with an online softmax, so no [len, len] score matrix is stored, and sequences
// (delimited by cu_seqlens) never see each other's tokens.
//
// Must match: reference::attention (softmax(q k^T / sqrt(D)) v per sequence and head), with
//   the QKV bias, which reference::linear adds, folded in here.
//
// Layout (row-major): qkv [tokens, 3 * hidden] f32 = x Wqkv^T without bias, columns q | k | v
//   as in the CPU backend, head h at columns h*D .. (h+1)*D of each third;
//   bias [3 * hidden] f32, same column order; cu_seqlens [seqs + 1] i32;
//   out [tokens, hidden] f16 or bf16 (the attention-output GEMM's input), head h at h*D.
//   hidden must be a multiple of 4 and qkv 16-byte aligned (key and value rows are read as
//   float4).
// Launch: grid (ceil(max_len / 128), heads, seqs), block 256 threads = 8 warps of 16 query rows
//   (each key/value tile read from qkv serves 128 queries);
//   a batch of more than 65,535 sequences (gridDim.z's limit) is launched in slices, each given
//   cu_seqlens from its first sequence on. Blocks past their sequence's end return at once.
//
// Precision: q (pre-scaled by log2(e) / sqrt(D), so exp2f applies), k, v and the
//   probabilities are rounded to the 16-bit type and multiplied by mma.sync m16n8k16 with f32
//   accumulation, as fp16/bf16 SDPA does; the softmax statistics and the output sums are f32.
//
// Per key tile of 64: keys go to shared memory as [key][d], values transposed as [d][key], so
//   both are read as the mma's B operand with one 32-bit load per register; rows are padded by
//   8 elements (16 bytes), which puts the 8 rows a warp's fragment load touches in distinct
//   banks. Each warp computes its 16 x 64 scores (S = Q K^T), updates the running row maxima
//   and sums, and adds P V, P taken straight from the score registers (the m16n8 accumulator
//   layout of two adjacent key groups is the m16k16 A layout). Keys past the sequence's end
//   are masked to -inf and their values zeroed (0 x garbage could be NaN).
// Head dims: instantiated for D = 32 (MiniLM, bge-small), 64 (bge-base, bge-large), 96, 128.
#include "bge_common.cuh"

#define ATTENTION_THREADS 256
#define Q_ROWS 128  // per block: 16 per warp
#define KV_TILE 64  // keys per shared-memory tile
#define PAD 8       // 16-bit elements of padding per shared row

// Two floats rounded to T and packed as one mma operand register, the first in the low half.
template <typename T>
__device__ __forceinline__ unsigned pack2(float lo, float hi) {
    return (unsigned)from_float<T>(lo).bits | ((unsigned)from_float<T>(hi).bits << 16);
}

template <int D, typename T>
__device__ __forceinline__ void attention(const float* __restrict__ qkv,
                                          const float* __restrict__ bias,
                                          const int* __restrict__ cu_seqlens, int heads,
                                          float scale_log2, T* __restrict__ out) {
    static_assert(D % 16 == 0, "head dimension must be a multiple of the mma's k (16)");
    constexpr int KSTEPS = D / 16;      // k-steps of Q K^T
    constexpr int DTILES = D / 8;       // n-tiles of P V
    constexpr int STILES = KV_TILE / 8; // n-tiles of Q K^T
    __shared__ bge_u16 keys[KV_TILE][D + PAD];
    __shared__ bge_u16 values_t[D][KV_TILE + PAD];

    const int seq = blockIdx.z;
    const int head = blockIdx.y;
    const int start = cu_seqlens[seq];
    const int len = cu_seqlens[seq + 1] - start;
    const int q_first = blockIdx.x * Q_ROWS;
    if (q_first >= len) return;  // uniform for the block: no barrier is skipped by some only

    const int hidden = heads * D;
    const size_t row_stride = 3 * (size_t)hidden;
    const int warp = threadIdx.x >> 5;
    const int lane = threadIdx.x & 31;
    const int g = lane >> 2;  // fragment row group
    const int t = lane & 3;   // thread in group: column pair
    const int r0 = q_first + warp * 16 + g;  // this thread's two query rows
    const int r1 = r0 + 8;
    // A warp whose 16 rows are all past the end only helps load the tiles (short sequences).
    const bool warp_has_rows = q_first + warp * 16 < len;

    // Q as A fragments, biased and scaled; rows past the end are zeros (their output is dropped).
    unsigned qa[KSTEPS][4];
    {
        const float* query_bias = bias + head * D;
        const float* row0 = qkv + (size_t)(start + r0) * row_stride + head * D;
        const float* row1 = qkv + (size_t)(start + r1) * row_stride + head * D;
#pragma unroll
        for (int s = 0; s < KSTEPS; ++s) {
#pragma unroll
            for (int half = 0; half < 2; ++half) {
                const int c = 16 * s + 8 * half + 2 * t;
                const float b0 = query_bias[c], b1 = query_bias[c + 1];
                qa[s][2 * half] = r0 < len ? pack2<T>((row0[c] + b0) * scale_log2, (row0[c + 1] + b1) * scale_log2) : 0u;
                qa[s][2 * half + 1] = r1 < len ? pack2<T>((row1[c] + b0) * scale_log2, (row1[c + 1] + b1) * scale_log2) : 0u;
            }
        }
    }

    float acc[DTILES][4];
#pragma unroll
    for (int n = 0; n < DTILES; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
    float max0 = BGE_NEG_INF, max1 = BGE_NEG_INF;  // running maxima of rows r0, r1
    float sum0 = 0.0f, sum1 = 0.0f;                // this thread's share of the running sums

    const float* key_bias = bias + hidden + head * D;
    const float* value_bias = bias + 2 * hidden + head * D;
    for (int k0 = 0; k0 < len; k0 += KV_TILE) {
        __syncthreads();  // every warp is done with the previous tile
        // Four columns per step, a fixed number of steps, unrolled: every thread's loads are
        // in flight before the first store.
        constexpr int STEPS = KV_TILE * (D / 4) / ATTENTION_THREADS;
        static_assert(KV_TILE * (D / 4) % ATTENTION_THREADS == 0, "tile load must divide evenly");
#pragma unroll
        for (int i = 0; i < STEPS; ++i) {
            const int e = threadIdx.x + i * ATTENTION_THREADS;
            const int r = e / (D / 4);
            const int c = 4 * (e % (D / 4));
            float4 k = {0.0f, 0.0f, 0.0f, 0.0f}, v = k;
            if (k0 + r < len) {
                const float* row = qkv + (size_t)(start + k0 + r) * row_stride + head * D;
                k = *reinterpret_cast<const float4*>(row + hidden + c);
                v = *reinterpret_cast<const float4*>(row + 2 * hidden + c);
            }
            bge_store_pair(&keys[r][c], pack2<T>(k.x + key_bias[c], k.y + key_bias[c + 1]));
            bge_store_pair(&keys[r][c + 2], pack2<T>(k.z + key_bias[c + 2], k.w + key_bias[c + 3]));
            values_t[c][r] = from_float<T>(v.x + value_bias[c]).bits;
            values_t[c + 1][r] = from_float<T>(v.y + value_bias[c + 1]).bits;
            values_t[c + 2][r] = from_float<T>(v.z + value_bias[c + 2]).bits;
            values_t[c + 3][r] = from_float<T>(v.w + value_bias[c + 3]).bits;
        }
        __syncthreads();
        if (!warp_has_rows) continue;

        // S = Q K^T for this warp's 16 rows and the tile's 64 keys.
        float s[STILES][4];
#pragma unroll
        for (int j = 0; j < STILES; ++j) {
            s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
            for (int k = 0; k < KSTEPS; ++k) {
                const unsigned b[2] = {bge_load_pair(&keys[8 * j + g][16 * k + 2 * t]), bge_load_pair(&keys[8 * j + g][16 * k + 8 + 2 * t])};
                bge_mma_16816(T(), s[j], qa[k], b);
            }
        }
        if (k0 + KV_TILE > len) {
#pragma unroll
            for (int j = 0; j < STILES; ++j) {
                const int key = k0 + 8 * j + 2 * t;
                if (key >= len) s[j][0] = s[j][2] = BGE_NEG_INF;
                if (key + 1 >= len) s[j][1] = s[j][3] = BGE_NEG_INF;
            }
        }

        // Online softmax. The four threads of a group hold one row between them.
        float m0 = max0, m1 = max1;
#pragma unroll
        for (int j = 0; j < STILES; ++j) {
            m0 = fmaxf(m0, fmaxf(s[j][0], s[j][1]));
            m1 = fmaxf(m1, fmaxf(s[j][2], s[j][3]));
        }
        m0 = fmaxf(m0, __shfl_xor_sync(0xffffffffu, m0, 1));
        m0 = fmaxf(m0, __shfl_xor_sync(0xffffffffu, m0, 2));
        m1 = fmaxf(m1, __shfl_xor_sync(0xffffffffu, m1, 1));
        m1 = fmaxf(m1, __shfl_xor_sync(0xffffffffu, m1, 2));
        // Every tile holds at least one key of the sequence, so m0 and m1 are finite; on the
        // first tile the correction is exp2(-inf) = 0 (acc and the sums are still 0).
        const float c0 = exp2f(max0 - m0), c1 = exp2f(max1 - m1);
        max0 = m0;
        max1 = m1;
        sum0 *= c0;
        sum1 *= c1;
#pragma unroll
        for (int n = 0; n < DTILES; ++n) {
            acc[n][0] *= c0;
            acc[n][1] *= c0;
            acc[n][2] *= c1;
            acc[n][3] *= c1;
        }
#pragma unroll
        for (int j = 0; j < STILES; ++j) {
            s[j][0] = exp2f(s[j][0] - m0);
            s[j][1] = exp2f(s[j][1] - m0);
            s[j][2] = exp2f(s[j][2] - m1);
            s[j][3] = exp2f(s[j][3] - m1);
            sum0 += s[j][0] + s[j][1];
            sum1 += s[j][2] + s[j][3];
        }

        // acc += P V, 16 keys per k-step.
#pragma unroll
        for (int k = 0; k < KV_TILE / 16; ++k) {
            const unsigned pa[4] = {pack2<T>(s[2 * k][0], s[2 * k][1]), pack2<T>(s[2 * k][2], s[2 * k][3]),
                                    pack2<T>(s[2 * k + 1][0], s[2 * k + 1][1]), pack2<T>(s[2 * k + 1][2], s[2 * k + 1][3])};
#pragma unroll
            for (int n = 0; n < DTILES; ++n) {
                const unsigned b[2] = {bge_load_pair(&values_t[8 * n + g][16 * k + 2 * t]), bge_load_pair(&values_t[8 * n + g][16 * k + 8 + 2 * t])};
                bge_mma_16816(T(), acc[n], pa, b);
            }
        }
    }

    if (!warp_has_rows) return;
    sum0 += __shfl_xor_sync(0xffffffffu, sum0, 1);
    sum0 += __shfl_xor_sync(0xffffffffu, sum0, 2);
    sum1 += __shfl_xor_sync(0xffffffffu, sum1, 1);
    sum1 += __shfl_xor_sync(0xffffffffu, sum1, 2);
    const float inv0 = 1.0f / sum0, inv1 = 1.0f / sum1;
    T* o0 = out + (size_t)(start + r0) * hidden + head * D + 2 * t;
    T* o1 = out + (size_t)(start + r1) * hidden + head * D + 2 * t;
#pragma unroll
    for (int n = 0; n < DTILES; ++n) {
        if (r0 < len) bge_store_pair(o0 + 8 * n, pack2<T>(acc[n][0] * inv0, acc[n][1] * inv0));
        if (r1 < len) bge_store_pair(o1 + 8 * n, pack2<T>(acc[n][2] * inv1, acc[n][3] * inv1));
    }
}

#define BGE_ATTENTION(D, SUFFIX, T)                                                                  \
    extern "C" __global__ void __launch_bounds__(ATTENTION_THREADS) attention_d##D##_##SUFFIX(       \
        const float* __restrict__ qkv, const float* __restrict__ bias,                              \
        const int* __restrict__ cu_seqlens, int heads, float scale_log2, T* __restrict__ out) {     \
        attention<D, T>(qkv, bias, cu_seqlens, heads, scale_log2, out);                              \
    }

BGE_ATTENTION(32, f16, f16)
BGE_ATTENTION(32, bf16, bf16)
BGE_ATTENTION(64, f16, f16)
BGE_ATTENTION(64, bf16, bf16)
BGE_ATTENTION(96, f16, f16)
BGE_ATTENTION(96, bf16, bf16)
BGE_ATTENTION(128, f16, f16)
BGE_ATTENTION(128, bf16, bf16)
