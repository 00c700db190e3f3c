// Rotary position embedding (half-split: rotate_half), in place on the query and key heads of
// the fused q | k | v GEMM output; for Qwen3 each head is RMS-normalised first (q_norm, k_norm).
//
// Must match: reference::rope(qkv, positions, heads, kv_heads, d, theta, qk_norm), i.e. for
//   every query and key head and pair i < d/2, with angle = (float)position * inv_freq[i]
//   (an f32 product, as transformers takes it) and (c, s) = (cosf, sinf) of it:
//     lo' = lo*c - hi*s,  hi' = hi*c + lo*s   (lo = x[i], hi = x[i + d/2]; products rounded
//   before the sum, as transformers computes q*cos + rotate_half(q)*sin).
//   With q_gain/k_gain not null, the head first becomes (x * (mean(x^2) + eps)^-1/2) * gain.
//
// Layout (row-major): qkv [tokens, (heads + 2*kv_heads) * d] f32, query heads first, then key
//   heads, then value heads (untouched); positions [tokens] u32; inv_freq [d/2] f32 from the
//   host (reference::rope_inv_freq); q_gain, k_gain [d] f32 or null.
// Launch: grid (tokens), block 128 = 4 warps; warp w takes heads w, w+4, ...; lane l takes the
//   pairs i = l, l+32, ... of a head, so it owns both elements of each of its pairs and the
//   head's norm is a warp sum. Any even d.
#include "bge_common.cuh"

extern "C" __global__ void __launch_bounds__(128)
rope_qk(float* qkv, const unsigned* positions, const float* inv_freq, int heads, int kv_heads,
        int head_dim, const float* q_gain, const float* k_gain, float eps) {
    const int warp = threadIdx.x >> 5;
    const int lane = threadIdx.x & 31;
    const int half = head_dim / 2;
    const size_t width = (size_t)(heads + 2 * kv_heads) * head_dim;
    const float position = (float)positions[blockIdx.x];
    float* row = qkv + (size_t)blockIdx.x * width;
    for (int h = warp; h < heads + kv_heads; h += 4) {
        float* x = row + (size_t)h * head_dim;
        const float* gain = h < heads ? q_gain : k_gain;
        float inv = 1.0f;
        if (gain) {  // uniform across the warp: every lane reaches warp_sum
            float squares = 0.0f;
            for (int i = lane; i < half; i += 32) squares += x[i] * x[i] + x[i + half] * x[i + half];
            inv = 1.0f / sqrtf(warp_sum(squares) / head_dim + eps);
        }
        for (int i = lane; i < half; i += 32) {
            float lo = x[i];
            float hi = x[i + half];
            if (gain) {
                lo = __fmul_rn(__fmul_rn(lo, inv), gain[i]);
                hi = __fmul_rn(__fmul_rn(hi, inv), gain[i + half]);
            }
            const float angle = __fmul_rn(position, inv_freq[i]);
            const float c = cosf(angle);
            const float s = sinf(angle);
            x[i] = __fmul_rn(lo, c) - __fmul_rn(hi, s);
            x[i + half] = __fmul_rn(hi, c) + __fmul_rn(lo, s);
        }
    }
}
