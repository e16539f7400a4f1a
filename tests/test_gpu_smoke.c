/* CUDA backend smoke test (exits 77 = skip without a CUDA device): the fp16 cast kernels
 * against the CPU conversion, cuBLAS SGEMM against a CPU triple loop on odd shapes, and an
 * NCCL all-reduce over the MPI ranks. An MPI program linking CUDA, cuBLAS and NCCL. */
#include <math.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "ctx.h"
#include "dv_build.h"
#include "err.h"
#include "gpu.h"
#include "half.h"
#include "rng.h"
#include "tap.h"
#if DV_HAVE_NCCL
#include "nccl_boot.h"
#endif

int main(int argc, char **argv) {
    int ndev = 0;
    if (dv_gpu_device_count(&ndev) != DV_OK || ndev == 0) return 77;
    dv_ctx ctx;
    if (dv_ctx_init(&ctx, &argc, &argv, "test_gpu_smoke") != DV_OK) return 1;
    dv_gpu *g;
    if (dv_gpu_create(&g, ctx.local_rank % ndev) != DV_OK) return 1;
    char desc[256];
    dv_gpu_describe(g, desc, sizeof desc);
    tap_no_plan();
    tap_diag("device: %s", desc);
    dv_rng r;
    dv_rng_init(&r, 7, DV_RNG_TEST, 0, (uint64_t)ctx.rank);

    /* casts */
    const size_t n = 100003;
    float *x = malloc(n * sizeof *x), *back = malloc(n * sizeof *back);
    uint16_t *h = malloc(n * sizeof *h);
    for (size_t i = 0; i < n; i++) x[i] = (float)(dv_rng_normal(&r) * pow(10.0, (double)(i % 9) - 5.0));
    float *dx, *dback;
    uint16_t *dh;
    dv_gpu_malloc(g, (void **)&dx, n * sizeof *x);
    dv_gpu_malloc(g, (void **)&dh, n * sizeof *h);
    dv_gpu_malloc(g, (void **)&dback, n * sizeof *back);
    dv_gpu_to_device(g, dx, x, n * sizeof *x);
    int st = dv_gpu_cast_f32_to_f16(g, dx, dh, n);
    st |= dv_gpu_cast_f16_to_f32(g, dh, dback, n);
    dv_gpu_to_host(g, h, dh, n * sizeof *h);
    dv_gpu_to_host(g, back, dback, n * sizeof *back);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += h[i] != dv_f32_to_f16(x[i]);
    tap_ok(st == DV_OK && bad == 0, "fp32->fp16 kernel equals CPU round-to-nearest-even (%zu differ)", bad);
    double maxrel = 0;
    for (size_t i = 0; i < n; i++)
        if (fabsf(x[i]) > 1e-4f && fabsf(x[i]) < 6e4f) {
            double rel = fabs((double)back[i] - x[i]) / fabs(x[i]);
            if (rel > maxrel) maxrel = rel;
        }
    tap_ok(maxrel <= 0.0005, "fp16 round trip relative error %.2e <= 2^-11", maxrel);

    /* SGEMM, all transpose combinations, odd shapes */
    const int64_t M = 37, N = 53, K = 29;
    float *A = malloc(sizeof *A * M * K), *B = malloc(sizeof *B * K * N), *C = malloc(sizeof *C * M * N),
          *ref = malloc(sizeof *ref * M * N);
    float *dA, *dB, *dC;
    dv_gpu_malloc(g, (void **)&dA, sizeof *A * M * K);
    dv_gpu_malloc(g, (void **)&dB, sizeof *B * K * N);
    dv_gpu_malloc(g, (void **)&dC, sizeof *C * M * N);
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            for (int64_t i = 0; i < M * K; i++) A[i] = (float)dv_rng_normal(&r);
            for (int64_t i = 0; i < K * N; i++) B[i] = (float)dv_rng_normal(&r);
            for (int64_t i = 0; i < M; i++)
                for (int64_t j = 0; j < N; j++) {
                    double s = 0;
                    for (int64_t k = 0; k < K; k++)
                        s += (double)(ta ? A[k * M + i] : A[i * K + k]) * (tb ? B[j * K + k] : B[k * N + j]);
                    ref[i * N + j] = (float)s;
                }
            dv_gpu_to_device(g, dA, A, sizeof *A * M * K);
            dv_gpu_to_device(g, dB, B, sizeof *B * K * N);
            st = dv_gpu_sgemm(g, ta, tb, M, N, K, 1.0f, dA, ta ? M : K, dB, tb ? K : N, 0.0f, dC, N);
            dv_gpu_to_host(g, C, dC, sizeof *C * M * N);
            double err = 0;
            for (int64_t i = 0; i < M * N; i++) err = fmax(err, fabs((double)C[i] - ref[i]));
            /* TF32 is not enabled: fp32 accumulation error for K=29 is ~1e-5 */
            tap_ok(st == DV_OK && err < 1e-3, "cuBLAS sgemm trans_a=%d trans_b=%d max err %.2e", ta, tb, err);
        }

#if DV_HAVE_NCCL
    dv_nccl *comm;
    st = dv_nccl_create_mpi(&comm, ctx.comm, g);
    tap_ok(st == DV_OK, "NCCL communicator over %d MPI rank(s)", ctx.world);
    if (st == DV_OK) {
        for (size_t i = 0; i < 1000; i++) x[i] = (float)(ctx.rank + 1) * (float)i;
        dv_gpu_to_device(g, dx, x, 1000 * sizeof *x);
        st = dv_nccl_allreduce_sum(comm, dx, dback, 1000, DV_NCCL_F32);
        dv_gpu_to_host(g, back, dback, 1000 * sizeof *back);
        double tri = ctx.world * (ctx.world + 1) / 2.0;
        bad = 0;
        for (size_t i = 0; i < 1000; i++) bad += back[i] != (float)(tri * (double)i);
        tap_ok(st == DV_OK && bad == 0, "NCCL fp32 all-reduce sum is exact (%zu differ)", bad);
        dv_nccl_destroy(comm);
    }
#endif
    dv_gpu_free(g, dx);
    dv_gpu_free(g, dh);
    dv_gpu_free(g, dback);
    dv_gpu_free(g, dA);
    dv_gpu_free(g, dB);
    dv_gpu_free(g, dC);
    dv_gpu_destroy(g);
    free(x); free(back); free(h); free(A); free(B); free(C); free(ref);
    int rc = tap_exit();
    dv_ctx_finish(&ctx);
    return rc;
}
