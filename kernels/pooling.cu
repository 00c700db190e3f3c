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
// Launch: grid (seqs), block 256 (a multiple of 32). Thread c walks the tokens of its columns,
//   so each token row is read coalesced; the norm is a block sum, and every thread rescales
//   only the values it wrote itself.
#include "bge_common.cuh"

extern "C" __global__ void pool_normalize(const float* hidden_states, const int* cu_seqlens,
                                          int hidden, int use_cls, int use_max, int use_mean,
                                          int use_mean_sqrt_len, int use_last, int normalize,
                                          float* out) {
    __shared__ float scratch[32];
    const int start = cu_seqlens[blockIdx.x];
    const int end = cu_seqlens[blockIdx.x + 1];
    const int modes = use_cls + use_max + use_mean + use_mean_sqrt_len + use_last;
    float* o = out + (size_t)blockIdx.x * modes * hidden;
    const float len = (float)(end - start);

    float squares = 0.0f;
    for (int c = threadIdx.x; c < hidden; c += blockDim.x) {
        float sum = 0.0f;
        float max = BGE_NEG_INF;
        for (int t = start; t < end; ++t) {
            const float v = hidden_states[(size_t)t * hidden + c];
            sum += v;
            max = fmaxf(max, v);
        }
        // An empty sequence never reaches here (the tokenizer adds [CLS] and [SEP]); write
        // zeros rather than read another sequence's row if one ever does.
        const bool empty = end <= start;
        int k = 0;
        if (use_cls) {
            const float v = empty ? 0.0f : hidden_states[(size_t)start * hidden + c];
            o[k++ * hidden + c] = v;
            squares += v * v;
        }
        if (use_max) {
            const float v = empty ? 0.0f : max;
            o[k++ * hidden + c] = v;
            squares += v * v;
        }
        if (use_mean) {
            const float v = empty ? 0.0f : sum / len;
            o[k++ * hidden + c] = v;
            squares += v * v;
        }
        if (use_mean_sqrt_len) {
            const float v = empty ? 0.0f : sum / sqrtf(len);
            o[k++ * hidden + c] = v;
            squares += v * v;
        }
        if (use_last) {
            const float v = empty ? 0.0f : hidden_states[(size_t)(end - 1) * hidden + c];
            o[k++ * hidden + c] = v;
            squares += v * v;
        }
    }
    if (!normalize) return;  // uniform across the block, so block_sum below is safe
    const float norm = fmaxf(sqrtf(block_sum(squares, scratch)), 1e-12f);
    for (int c = threadIdx.x; c < hidden; c += blockDim.x)
        for (int k = 0; k < modes; ++k) o[k * hidden + c] /= norm;
}
