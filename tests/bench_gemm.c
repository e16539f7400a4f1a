/* bench_gemm — the reference rates every other benchmark is compared with: which OpenBLAS
 * kernel runs and the float32 GEMM rate it reaches here (ViT-S-sized shapes). Prints
 * name=value lines. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>

#include "rng.h"
#include "timer.h"

static double sgemm_gflops(int M, int N, int K) {
    float *A = malloc(sizeof *A * (size_t)M * K), *B = malloc(sizeof *B * (size_t)K * N),
          *C = malloc(sizeof *C * (size_t)M * N);
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
    } while ((t = dv_now() - t0) < 1.0);
    free(A);
    free(B);
    free(C);
    return 2.0 * M * N * K * reps / t * 1e-9;
}

int main(void) {
    printf("openblas_core=%s\n", openblas_get_corename());
    printf("openblas_threads=%d\n", openblas_get_num_threads());
    /* (32 images x 257 tokens, 384) x (1536, 384)ᵀ: the ViT-S/14 MLP fc1 at batch 32 */
    printf("sgemm_vits_fc1_gflops=%.1f\n", sgemm_gflops(32 * 257, 1536, 384));
    printf("sgemm_1024_gflops=%.1f\n", sgemm_gflops(1024, 1024, 1024));
    return 0;
}
