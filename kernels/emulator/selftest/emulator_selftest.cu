// Kernels that exercise the emulator itself (tests/execution_model.rs): a barrier that is real,
// warp shuffles, divergence, out-of-bounds accesses and PTX rounding modes. They are compiled
// into the emulator with kernels/*.cu but are not part of pg_bge.
//
// Must match: the CUDA semantics each test states.
// Layout: per kernel, below.
// Launch: 1-D grids and blocks, sizes chosen by each test.
#include "bge_common.cuh"

// out[i] = in[i - 1] + in[i] + in[i + 1] within each block (wrapping), through shared memory:
// with use_barrier = 0 a thread reads neighbours that may not be written yet.
extern "C" __global__ void neighbour_sum(const float* in, float* out, int use_barrier) {
    __shared__ float tile[1024];
    const unsigned t = threadIdx.x, n = blockDim.x;
    const size_t i = (size_t)blockIdx.x * n + t;
    tile[t] = in[i];
    if (use_barrier) __syncthreads();
    out[i] = tile[(t + n - 1) % n] + tile[t] + tile[(t + 1) % n];
}

// out[block] = block_sum of in over the block (bge_common.cuh's warp shuffles and barriers).
extern "C" __global__ void block_sums(const float* in, float* out) {
    __shared__ float scratch[32];
    const float s = block_sum(in[(size_t)blockIdx.x * blockDim.x + threadIdx.x], scratch);
    if (threadIdx.x == 0) out[blockIdx.x] = s;
}

// Per thread t, lane l = t % 32, value v = in[t]: out[5t..5t+5) = xor(v, 5), down(v, 3),
// up(v, 3), idx(v, 7) over the full warp, and xor(v, 4) with width 8.
extern "C" __global__ void warp_shuffles(const int* in, int* out) {
    const unsigned t = blockIdx.x * blockDim.x + threadIdx.x;
    const int v = in[t];
    int* o = out + 5 * (size_t)t;
    o[0] = __shfl_xor_sync(0xffffffffu, v, 5);
    o[1] = __shfl_down_sync(0xffffffffu, v, 3);
    o[2] = __shfl_up_sync(0xffffffffu, v, 3);
    o[3] = __shfl_sync(0xffffffffu, v, 7);
    o[4] = __shfl_xor_sync(0xffffffffu, v, 4, 8);
}

// A barrier only the first `waiting` threads reach: the others exit.
extern "C" __global__ void barrier_some_threads_skip(int waiting) {
    if ((int)threadIdx.x < waiting) __syncthreads();
}

// Even and odd threads wait at two different barriers.
extern "C" __global__ void barriers_at_two_places() {
    if (threadIdx.x & 1) {
        __syncthreads();
    } else {
        __syncthreads();
    }
}

// A full-warp shuffle in a block that is not a multiple of 32 threads.
extern "C" __global__ void shuffle_in_partial_warp(float* out) {
    out[threadIdx.x] = warp_sum(1.0f);
}

// Every thread t writes out[t + offset]: with offset 1 the last one writes past the end.
extern "C" __global__ void write_shifted(float* out, int offset) {
    out[threadIdx.x + offset] = 1.0f;
}

// f32 -> f16 and bf16 in each PTX rounding mode: out[4 * i + m] for m = rn, rz, rm, rp.
extern "C" __global__ void cvt_rounding_modes(const float* in, unsigned short* f16_out,
                                              unsigned short* bf16_out, unsigned long long n) {
    const unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float x = in[i];
    unsigned short* h = f16_out + 4 * i;
    unsigned short* b = bf16_out + 4 * i;
    BGE_CVT("cvt.rn.f16.f32 %0, %1;", "=h", h[0], "f", x);
    BGE_CVT("cvt.rz.f16.f32 %0, %1;", "=h", h[1], "f", x);
    BGE_CVT("cvt.rm.f16.f32 %0, %1;", "=h", h[2], "f", x);
    BGE_CVT("cvt.rp.f16.f32 %0, %1;", "=h", h[3], "f", x);
    BGE_CVT("cvt.rn.bf16.f32 %0, %1;", "=h", b[0], "f", x);
    BGE_CVT("cvt.rz.bf16.f32 %0, %1;", "=h", b[1], "f", x);
    BGE_CVT("cvt.rm.bf16.f32 %0, %1;", "=h", b[2], "f", x);
    BGE_CVT("cvt.rp.bf16.f32 %0, %1;", "=h", b[3], "f", x);
}

// A conversion modifier the emulator does not implement (.ftz): the launch must fail.
extern "C" __global__ void unsupported_ptx(const float* in, unsigned short* out) {
    BGE_CVT("cvt.rn.ftz.f16.f32 %0, %1;", "=h", out[threadIdx.x], "f", in[threadIdx.x]);
}

// A kernel declared for blocks of at most 64 threads.
extern "C" __global__ void __launch_bounds__(64) bounded_to_64(float* out) {
    out[threadIdx.x] = 1.0f;
}

// Thread t writes tile[t + offset] of a 64-entry shared tile: offset 1 runs off its end.
extern "C" __global__ void shared_tile_shifted(float* out, int offset) {
    __shared__ float tile[64];
    tile[threadIdx.x + offset] = (float)threadIdx.x;
    __syncthreads();
    out[threadIdx.x] = tile[threadIdx.x];
}
