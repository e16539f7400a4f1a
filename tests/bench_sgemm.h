/* bench_sgemm — the float32 GEMM rate every benchmark reports efficiency against, measured in
 * the same run with the same OpenBLAS kernel (platform notes: report the share of it).
 * Header-only (static functions) for the bench programs, each a single translation unit. */
#ifndef DV_BENCH_SGEMM_H
#define DV_BENCH_SGEMM_H

#include <cblas.h>
#include <stdlib.h>

#include "rng.h"
#include "timer.h"

/* GFLOP/s of C (M,N) = A (M,K) · B (N,K)ᵀ repeated for about `seconds`; 0 on allocation failure. */
static __attribute__((unused)) double bench_sgemm_gflops(int M, int N, int K, double seconds) {
    float *A = malloc(sizeof *A * (size_t)M * K), *B = malloc(sizeof *B * (size_t)K * N),
          *C = malloc(sizeof *C * (size_t)M * N);
    if (!A || !B || !C) {
        free(A);
        free(B);
        free(C);
        return 0.0;
    }
    dv_rng r;
    dv_rng_init(&r, 1, DV_RNG_TEST, 0, 0);
    for (size_t i = 0; i < (size_t)M * K; i++) A[i] = dv_rng_uniform(&r) - 0.5f;
    for (size_t i = 0; i < (size_t)K * N; i++) B[i] = dv_rng_uniform(&r) - 0.5f;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.f, A, K, B, K, 0.f, C, N);
    int reps = 0;
    double t0 = dv_now(), t;
    do {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.f, A, K, B, K, 0.f, C, N);
        reps++;
    } while ((t = dv_now() - t0) < seconds);
    free(A);
    free(B);
    free(C);
    return 2.0 * M * N * K * reps / t * 1e-9;
}

/* Best of n short measurements on the ViT MLP shape (M, 1536) x 384: robust to other load. */
static __attribute__((unused)) double bench_sgemm_best(int M, int n, double seconds) {
    double best = 0.0;
    for (int k = 0; k < n; k++) {
        const double g = bench_sgemm_gflops(M, 1536, 384, seconds);
        if (g > best) best = g;
    }
    return best;
}

#endif
