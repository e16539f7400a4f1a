/* gemm — see gemm.h. */
#include "gemm.h"
#include "simd.h"

#include <assert.h>
#include <cblas.h>
#include <limits.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

/* Column block for deterministic row reductions (double accumulators on the stack). */
#define GEMM_COL_BLOCK_ 64

static int fits_int_(int64_t v) { return v >= 0 && v <= INT_MAX; }

void gemm_f32(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
              const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c,
              int64_t ldc) {
    if (m <= 0 || n <= 0) return;
    if (k <= 0) {
        for (int64_t i = 0; i < m; i++) {
            float *ci = c + i * ldc;
            if (beta == 0.0f) memset(ci, 0, (size_t)n * sizeof(float));
            else
                for (int64_t j = 0; j < n; j++) ci[j] *= beta;
        }
        return;
    }
    assert(fits_int_(m) && fits_int_(n) && fits_int_(k));
    assert(fits_int_(lda) && fits_int_(ldb) && fits_int_(ldc));
    assert(lda >= (trans_a ? m : k) && ldb >= (trans_b ? k : n) && ldc >= n);
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k, alpha, a, (int)lda,
                b, (int)ldb, beta, c, (int)ldc);
}

void gemm_f32_strided_batched(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                              float alpha, const float *a, int64_t lda, int64_t stride_a,
                              const float *b, int64_t ldb, int64_t stride_b, float beta, float *c,
                              int64_t ldc, int64_t stride_c, int64_t batch) {
    if (batch <= 0) return;
    if (batch == 1) {
        gemm_f32(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
    }
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t i = 0; i < batch; i++)
        gemm_f32(trans_a, trans_b, m, n, k, alpha, a + i * stride_a, lda, b + i * stride_b, ldb,
                 beta, c + i * stride_c, ldc);
}

void linear_forward(float *y, const float *x, const float *w, const float *b, int64_t T,
                    int64_t in, int64_t out) {
    if (T <= 0 || out <= 0) return;
    float beta = 0.0f;
    if (b) {
#pragma omp parallel for schedule(static)
        for (int64_t t = 0; t < T; t++) memcpy(y + t * out, b, (size_t)out * sizeof(float));
        beta = 1.0f;
    }
    gemm_f32(0, 1, T, out, in, 1.0f, x, in, w, in, beta, y, out);
}

/* acc[j] += Σ_t dy[t, j] for a block of columns: fp32 partial sums over 32 rows (8 lanes per AVX2
 * op), added into double; vertical sums in a fixed order, so any clone gives the same bits. */
#define COL_SUM_ROWS_ 32
DV_CLONES static void col_sums_(double *acc, const float *dy, int64_t T, int64_t cn, int64_t ld) {
    float part[GEMM_COL_BLOCK_];
    for (int64_t t0 = 0; t0 < T; t0 += COL_SUM_ROWS_) {
        const int64_t t1 = T - t0 < COL_SUM_ROWS_ ? T : t0 + COL_SUM_ROWS_;
        for (int64_t j = 0; j < cn; j++) part[j] = 0.0f;
        for (int64_t t = t0; t < t1; t++) {
            const float *row = dy + t * ld;
#pragma omp simd
            for (int64_t j = 0; j < cn; j++) part[j] += row[j];
        }
#pragma omp simd
        for (int64_t j = 0; j < cn; j++) acc[j] += part[j];
    }
}

void linear_bias_backward(float *db, const float *dy, int64_t T, int64_t out, int64_t ld_dy) {
    const int64_t nblk = (out + GEMM_COL_BLOCK_ - 1) / GEMM_COL_BLOCK_;
#pragma omp parallel for schedule(static)
    for (int64_t blk = 0; blk < nblk; blk++) {
        const int64_t c0 = blk * GEMM_COL_BLOCK_;
        const int64_t cn = out - c0 < GEMM_COL_BLOCK_ ? out - c0 : GEMM_COL_BLOCK_;
        double acc[GEMM_COL_BLOCK_] = {0};
        col_sums_(acc, dy + c0, T, cn, ld_dy);
        for (int64_t j = 0; j < cn; j++) db[c0 + j] += (float)acc[j];
    }
}

void linear_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                     const float *w, int64_t T, int64_t in, int64_t out, int dx_accumulate) {
    if (T <= 0) return;
    if (dx) gemm_f32(0, 0, T, in, out, 1.0f, dy, out, w, in, dx_accumulate ? 1.0f : 0.0f, dx, in);
    if (dw) gemm_f32(1, 0, out, in, T, 1.0f, dy, out, x, in, 1.0f, dw, in);
    if (db) linear_bias_backward(db, dy, T, out, out);
}
