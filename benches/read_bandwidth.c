/* Read bandwidth of this machine for the batch-1 floors in the README: sums a buffer of MB
 * megabytes with THREADS threads (each its own slice, 32-byte loads), 21 times; prints the median
 * and best GB/s. A buffer larger than the L3 measures DRAM; one that fits measures the L3.
 *
 *   gcc -O2 -mavx2 -pthread benches/read_bandwidth.c -o /tmp/read_bandwidth
 *   /tmp/read_bandwidth 256 1; /tmp/read_bandwidth 256 2; /tmp/read_bandwidth 8 1
 */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define ROUNDS 21
#define MAX_THREADS 64

struct slice {
    const float *p;
    size_t n;
    float sum;
};

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void *read_slice(void *arg) {
    struct slice *s = arg;
    /* Four independent sums, so the adds' latency never limits the loads. */
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    for (size_t i = 0; i + 32 <= s->n; i += 32) {
        s0 = _mm256_add_ps(s0, _mm256_load_ps(s->p + i));
        s1 = _mm256_add_ps(s1, _mm256_load_ps(s->p + i + 8));
        s2 = _mm256_add_ps(s2, _mm256_load_ps(s->p + i + 16));
        s3 = _mm256_add_ps(s3, _mm256_load_ps(s->p + i + 24));
    }
    float lanes[8];
    _mm256_storeu_ps(lanes, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    s->sum = lanes[0];
    return NULL;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s MB THREADS\n", argv[0]);
        return 2;
    }
    size_t mb = strtoul(argv[1], NULL, 10);
    int threads = atoi(argv[2]);
    if (mb == 0 || threads < 1 || threads > MAX_THREADS) {
        fprintf(stderr, "MB must be > 0 and THREADS 1..%d\n", MAX_THREADS);
        return 2;
    }
    size_t n = mb * 1024 * 1024 / sizeof(float);
    float *p = aligned_alloc(64, n * sizeof(float));
    if (!p) {
        perror("aligned_alloc");
        return 1;
    }
    for (size_t i = 0; i < n; i++)
        p[i] = 1.0f;
    size_t per = n / threads / 32 * 32;
    double secs[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        pthread_t t[MAX_THREADS];
        struct slice s[MAX_THREADS];
        double t0 = now();
        for (int j = 0; j < threads; j++) {
            s[j] = (struct slice){p + j * per, per, 0.0f};
            pthread_create(&t[j], NULL, read_slice, &s[j]);
        }
        for (int j = 0; j < threads; j++)
            pthread_join(t[j], NULL);
        secs[r] = now() - t0;
    }
    qsort(secs, ROUNDS, sizeof(double), by_value);
    double bytes = (double)per * threads * sizeof(float);
    printf("%zu MB, %d threads: median %.1f GB/s, best %.1f GB/s\n", mb, threads, bytes / secs[ROUNDS / 2] / 1e9, bytes / secs[0] / 1e9);
    free(p);
    return 0;
}
