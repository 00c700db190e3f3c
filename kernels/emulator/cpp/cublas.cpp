// libcublas.so of the emulated device: cublasGemmEx as pg_bge calls it (engine/src/backend/
// cuda/gemm.rs), computed on the CPU with the same precision contract: 16-bit (f16 or bf16)
// inputs widened exactly, products summed in f32, f32 output. cuBLAS's own summation order and
// algorithms are not reproduced; only its arithmetic precision and its argument conventions
// (column-major, transposes, leading dimensions) are, and the operands are checked to lie inside
// device buffers.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#define EXPORT extern "C" __attribute__((visibility("default")))

typedef int cublasStatus_t;
enum : cublasStatus_t {
    CUBLAS_STATUS_SUCCESS = 0,
    CUBLAS_STATUS_NOT_INITIALIZED = 1,
    CUBLAS_STATUS_INVALID_VALUE = 7,
    CUBLAS_STATUS_NOT_SUPPORTED = 15,
};
enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 };
enum { CUDA_R_32F = 0, CUDA_R_16F = 2, CUDA_R_16BF = 14 };
enum { CUBLAS_COMPUTE_32F = 68 };

// From libcuda.so (driver.cpp), which this library is linked against.
extern "C" int bge_emu_device_range(const void* ptr, size_t bytes);

namespace {
int g_handle_tag;

float widen(uint16_t h, int type) {
    uint32_t u;
    if (type == CUDA_R_16BF) {
        u = (uint32_t)h << 16;
    } else {
        const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 31, frac = h & 1023;
        if (exp == 31) {
            u = sign | 0x7f800000u | (frac << 13);
        } else if (exp == 0) {
            float v = (float)frac * (1.0f / 16777216.0f);  // frac * 2^-24, exact
            std::memcpy(&u, &v, 4);
            u |= sign;
        } else {
            u = sign | ((exp + 112) << 23) | (frac << 13);
        }
    }
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

// op(M) as a row-major [rows, k] f32 matrix: element (r, p) of op(M).
std::vector<float> widen_op(const uint16_t* m, int type, int op, int rows, int k, int ld) {
    std::vector<float> out((size_t)rows * k);
    for (int r = 0; r < rows; ++r)
        for (int p = 0; p < k; ++p)
            out[(size_t)r * k + p] = widen(op == CUBLAS_OP_N ? m[r + (size_t)p * ld] : m[p + (size_t)r * ld], type);
    return out;
}

// f32 dot product in eight interleaved partial sums (what a vector unit accumulates).
__attribute__((target_clones("avx2", "default"))) float dot(const float* a, const float* b, int k) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int p = 0;
    for (; p + 8 <= k; p += 8)
        for (int l = 0; l < 8; ++l) acc[l] += a[p + l] * b[p + l];
    for (; p < k; ++p) acc[p & 7] += a[p] * b[p];
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}
}  // namespace

EXPORT cublasStatus_t cublasCreate_v2(void** handle) {
    *handle = &g_handle_tag;
    return CUBLAS_STATUS_SUCCESS;
}
EXPORT cublasStatus_t cublasDestroy_v2(void*) { return CUBLAS_STATUS_SUCCESS; }
EXPORT cublasStatus_t cublasSetStream_v2(void* handle, void*) {
    return handle ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_NOT_INITIALIZED;
}

// C[m, n] = alpha op(A)[m, k] op(B)[k, n] + beta C, column-major, alpha and beta host f32.
EXPORT cublasStatus_t cublasGemmEx(void* handle, int transa, int transb, int m, int n, int k,
                                   const void* alpha, const void* A, int a_type, int lda,
                                   const void* B, int b_type, int ldb, const void* beta, void* C,
                                   int c_type, int ldc, int compute_type, int) {
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    const bool sixteen = (a_type == CUDA_R_16F || a_type == CUDA_R_16BF) && b_type == a_type;
    if (!sixteen || c_type != CUDA_R_32F || compute_type != CUBLAS_COMPUTE_32F) {
        std::fprintf(stderr, "pg_bge CUDA emulator: cublasGemmEx types %d x %d -> %d (compute %d) are not emulated\n",
                     a_type, b_type, c_type, compute_type);
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    if ((transa != CUBLAS_OP_N && transa != CUBLAS_OP_T) || (transb != CUBLAS_OP_N && transb != CUBLAS_OP_T))
        return CUBLAS_STATUS_INVALID_VALUE;
    if (m < 0 || n < 0 || k < 0) return CUBLAS_STATUS_INVALID_VALUE;
    // cuBLAS's own argument rules: each leading dimension covers its stored rows.
    const int a_rows = transa == CUBLAS_OP_N ? m : k, a_cols = transa == CUBLAS_OP_N ? k : m;
    const int b_rows = transb == CUBLAS_OP_N ? k : n, b_cols = transb == CUBLAS_OP_N ? n : k;
    if (lda < (a_rows > 1 ? a_rows : 1) || ldb < (b_rows > 1 ? b_rows : 1) || ldc < (m > 1 ? m : 1))
        return CUBLAS_STATUS_INVALID_VALUE;
    if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
    auto extent = [](int rows, int cols, int ld) { return cols ? ((size_t)(cols - 1) * ld + rows) : 0; };
    if ((k && (!bge_emu_device_range(A, extent(a_rows, a_cols, lda) * 2) ||
               !bge_emu_device_range(B, extent(b_rows, b_cols, ldb) * 2))) ||
        !bge_emu_device_range(C, extent(m, n, ldc) * 4)) {
        std::fprintf(stderr, "pg_bge CUDA emulator: cublasGemmEx operands reach outside their device buffers\n");
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    const float al = *(const float*)alpha, be = *(const float*)beta;
    const std::vector<float> a = widen_op((const uint16_t*)A, a_type, transa, m, k, lda);
    // op(B) is [k, n]; held as its transpose [n, k] so that both operands are read along k.
    const std::vector<float> bt = widen_op((const uint16_t*)B, b_type, transb == CUBLAS_OP_N ? CUBLAS_OP_T : CUBLAS_OP_N, n, k, ldb);
    float* c = (float*)C;
    for (int j = 0; j < n; ++j)
        for (int i = 0; i < m; ++i) {
            const float sum = dot(&a[(size_t)i * k], &bt[(size_t)j * k], k);
            float& out = c[i + (size_t)j * ldc];
            out = be == 0.0f ? al * sum : al * sum + be * out;  // beta 0: C is not read
        }
    return CUBLAS_STATUS_SUCCESS;
}
