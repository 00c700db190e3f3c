// Pooling + L2 normalisation: the sentence-transformers Pooling and Normalize modules.
//
// Must match: pooling::pool (modes concatenated in the order cls, max, mean, mean_sqrt_len,
//   last token;
//   mean = sum / len, mean_sqrt_len = sum / sqrt(len)) followed, when `normalize` is set, by
//   pooling::l2_normalize (x / max(||x||, 1e-12)).
//
// Layout: hidden_states [tokens, hidden] f32 (the encoder's last residual stream, packed);
//   cu_seqlens [seqs + 1] i32, sequence s = tokens cu_seqlens[s] .. cu_seqlens[s + 1];
//   out [seqs, modes * hidden] f32.
// Launch: two kernels, one after the other:
// - pool: grid (seqs, ceil(hidden / 32)), block 256 = 8 warps. A block pools 32 columns of one
//   sequence, one per lane, so every token row is read in coalesced 128-byte pieces; its warps
//   split the sequence's tokens and meet in shared memory, where warp 0 combines them in a
//   fixed order and writes the pooled values (unnormalised).
// - l2_normalize_rows: grid (seqs), block 256: each row of `out` divided by its norm, a block
//   sum over the row's modes * hidden values. Not launched when `normalize` is off.
#include "bge_common.cuh"

#define POOL_THREADS 256
#define POOL_WARPS (POOL_THREADS / 32)

extern "C" __global__ void __launch_bounds__(POOL_THREADS) pool(
    const float* hidden_states, const int* cu_seqlens, int hidden, int use_cls, int use_max,
    int use_mean, int use_mean_sqrt_len, int use_last, float* out) {
    __shared__ float part_sum[POOL_WARPS][32];
    __shared__ float part_max[POOL_WARPS][32];
    const int start = cu_seqlens[blockIdx.x];
    const int end = cu_seqlens[blockIdx.x + 1];
    const int modes = use_cls + use_max + use_mean + use_mean_sqrt_len + use_last;
    float* o = out + (size_t)blockIdx.x * modes * hidden;
    const float len = (float)(end - start);
    const int warp = threadIdx.x >> 5;
    const int lane = threadIdx.x & 31;
    const int c = blockIdx.y * 32 + lane;

    float sum = 0.0f;
    float max = BGE_NEG_INF;
    if (c < hidden) {
        for (int t = start + warp; t < end; t += POOL_WARPS) {
            const float v = hidden_states[(size_t)t * hidden + c];
            sum += v;
            max = fmaxf(max, v);
        }
    }
    part_sum[warp][lane] = sum;
    part_max[warp][lane] = max;
    __syncthreads();
    if (warp != 0 || c >= hidden) return;
    for (int w = 1; w < POOL_WARPS; ++w) {
        sum += part_sum[w][lane];
        max = fmaxf(max, part_max[w][lane]);
    }
    // An empty sequence never reaches here (the tokenizer adds [CLS] and [SEP]); write zeros
    // rather than read another sequence's row if one ever does.
    const bool empty = end <= start;
    int k = 0;
    if (use_cls) o[k++ * hidden + c] = empty ? 0.0f : hidden_states[(size_t)start * hidden + c];
    if (use_max) o[k++ * hidden + c] = empty ? 0.0f : max;
    if (use_mean) o[k++ * hidden + c] = empty ? 0.0f : sum / len;
    if (use_mean_sqrt_len) o[k++ * hidden + c] = empty ? 0.0f : sum / sqrtf(len);
    if (use_last) o[k++ * hidden + c] = empty ? 0.0f : hidden_states[(size_t)(end - 1) * hidden + c];
}

extern "C" __global__ void __launch_bounds__(POOL_THREADS) l2_normalize_rows(int width, float* out) {
    __shared__ float scratch[32];
    float* o = out + (size_t)blockIdx.x * width;
    float squares = 0.0f;
    for (int c = threadIdx.x; c < width; c += blockDim.x) squares += o[c] * o[c];
    const float norm = fmaxf(sqrtf(block_sum(squares, scratch)), 1e-12f);
    for (int c = threadIdx.x; c < width; c += blockDim.x) o[c] /= norm;
}
