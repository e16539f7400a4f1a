/* layernorm — see layernorm.h. */
#include "layernorm.h"

#include <math.h>

#include "simd.h"

#define LN_COL_BLOCK_ 64

/* One row. The double sums run as 4 interleaved partial sums (lane j takes elements i ≡ j mod
 * 4), combined in a fixed order: vectorisable without -ffast-math, and the same bits in either
 * clone. */
DV_CLONES static void layernorm_row_(float *yr, float *mean, float *rstd, const float *xr,
                                     const float *gamma, const float *beta, int64_t C, float eps) {
    double s4[4] = {0, 0, 0, 0}, v4[4] = {0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 4 <= C; i += 4)
#pragma omp simd
        for (int j = 0; j < 4; j++) s4[j] += xr[i + j];
    double s = (s4[0] + s4[1]) + (s4[2] + s4[3]);
    for (; i < C; i++) s += xr[i];
    const double m = s / (double)C;
    for (i = 0; i + 4 <= C; i += 4)
#pragma omp simd
        for (int j = 0; j < 4; j++) {
            const double d = xr[i + j] - m;
            v4[j] += d * d;
        }
    double v = (v4[0] + v4[1]) + (v4[2] + v4[3]);
    for (; i < C; i++) {
        const double d = xr[i] - m;
        v += d * d;
    }
    v /= (double)C;
    const float mf = (float)m;
    const float rs = (float)(1.0 / sqrt(v + (double)eps));
#pragma omp simd
    for (i = 0; i < C; i++) yr[i] = (xr[i] - mf) * rs * gamma[i] + beta[i];
    *mean = mf;
    *rstd = rs;
}

void layernorm_forward(float *y, float *mean, float *rstd, const float *x, const float *gamma,
                       const float *beta, int64_t T, int64_t C, float eps) {
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < T; t++) {
        float mf, rs;
        layernorm_row_(y + t * C, &mf, &rs, x + t * C, gamma, beta, C, eps);
        if (mean) mean[t] = mf;
        if (rstd) rstd[t] = rs;
    }
}

void layernorm_backward(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                        const float *mean, const float *rstd, const float *gamma, int64_t T,
                        int64_t C, int dx_accumulate) {
    if (dx) {
#pragma omp parallel for schedule(static)
        for (int64_t t = 0; t < T; t++) {
            const float *xr = x + t * C, *dyr = dy + t * C;
            float *dxr = dx + t * C;
            const float m = mean[t], rs = rstd[t];
            double sg = 0.0, sgx = 0.0;
            for (int64_t i = 0; i < C; i++) {
                const float xh = (xr[i] - m) * rs;
                const float g = dyr[i] * gamma[i];
                sg += g;
                sgx += (double)g * xh;
            }
            const float mg = (float)(sg / (double)C), mgx = (float)(sgx / (double)C);
            if (dx_accumulate) {
                for (int64_t i = 0; i < C; i++) {
                    const float xh = (xr[i] - m) * rs;
                    dxr[i] += rs * (dyr[i] * gamma[i] - mg - xh * mgx);
                }
            } else {
                for (int64_t i = 0; i < C; i++) {
                    const float xh = (xr[i] - m) * rs;
                    dxr[i] = rs * (dyr[i] * gamma[i] - mg - xh * mgx);
                }
            }
        }
    }
    if (!dgamma && !dbeta) return;
    const int64_t nblk = (C + LN_COL_BLOCK_ - 1) / LN_COL_BLOCK_;
#pragma omp parallel for schedule(static)
    for (int64_t blk = 0; blk < nblk; blk++) {
        const int64_t c0 = blk * LN_COL_BLOCK_;
        const int64_t cn = C - c0 < LN_COL_BLOCK_ ? C - c0 : LN_COL_BLOCK_;
        double ag[LN_COL_BLOCK_] = {0}, ab[LN_COL_BLOCK_] = {0};
        for (int64_t t = 0; t < T; t++) {
            const float *xr = x + t * C + c0, *dyr = dy + t * C + c0;
            const float m = mean[t], rs = rstd[t];
            for (int64_t j = 0; j < cn; j++) {
                ag[j] += (double)dyr[j] * ((xr[j] - m) * rs);
                ab[j] += dyr[j];
            }
        }
        for (int64_t j = 0; j < cn; j++) {
            if (dgamma) dgamma[c0 + j] += (float)ag[j];
            if (dbeta) dbeta[c0 + j] += (float)ab[j];
        }
    }
}
