/* layerscale — see layerscale.h. */
#include "layerscale.h"

#include <string.h>

#define LS_COL_BLOCK_ 64

void layerscale_residual_forward(float *x, const float *y, const float *gamma, int64_t T,
                                 int64_t C) {
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < T; t++) {
        float *xr = x + t * C;
        const float *yr = y + t * C;
        if (gamma)
            for (int64_t i = 0; i < C; i++) xr[i] += yr[i] * gamma[i];
        else
            for (int64_t i = 0; i < C; i++) xr[i] += yr[i];
    }
}

/* dgamma[c] += Σ_i scale · dx[row(i), c] · y[i, c], row(i) = rows ? rows[i] : i. */
static void dgamma_reduce_(float *dgamma, const float *dx, const float *y, const int64_t *rows,
                           int64_t n, float scale, int64_t C) {
    const int64_t nblk = (C + LS_COL_BLOCK_ - 1) / LS_COL_BLOCK_;
#pragma omp parallel for schedule(static)
    for (int64_t blk = 0; blk < nblk; blk++) {
        const int64_t c0 = blk * LS_COL_BLOCK_;
        const int64_t cn = C - c0 < LS_COL_BLOCK_ ? C - c0 : LS_COL_BLOCK_;
        double acc[LS_COL_BLOCK_] = {0};
        for (int64_t i = 0; i < n; i++) {
            const float *dxr = dx + (rows ? rows[i] : i) * C + c0, *yr = y + i * C + c0;
            for (int64_t j = 0; j < cn; j++) acc[j] += (double)(scale * dxr[j]) * yr[j];
        }
        for (int64_t j = 0; j < cn; j++) dgamma[c0 + j] += (float)acc[j];
    }
}

void layerscale_residual_backward(float *dy, float *dgamma, const float *dx, const float *y,
                                  const float *gamma, int64_t T, int64_t C) {
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < T; t++) {
        float *dyr = dy + t * C;
        const float *dxr = dx + t * C;
        if (gamma)
            for (int64_t i = 0; i < C; i++) dyr[i] = dxr[i] * gamma[i];
        else
            memcpy(dyr, dxr, (size_t)C * sizeof(float));
    }
    if (gamma && dgamma) dgamma_reduce_(dgamma, dx, y, NULL, T, 1.0f, C);
}

void layerscale_residual_subset_forward(float *x, const float *y, const int64_t *rows, int64_t n,
                                        const float *gamma, float scale, int64_t C) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float *xr = x + rows[i] * C;
        const float *yr = y + i * C;
        if (gamma)
            for (int64_t c = 0; c < C; c++) xr[c] += scale * (yr[c] * gamma[c]);
        else
            for (int64_t c = 0; c < C; c++) xr[c] += scale * yr[c];
    }
}

void layerscale_residual_subset_backward(float *dy, float *dgamma, const float *dx,
                                         const float *y, const int64_t *rows, int64_t n,
                                         const float *gamma, float scale, int64_t C) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float *dyr = dy + i * C;
        const float *dxr = dx + rows[i] * C;
        if (gamma)
            for (int64_t c = 0; c < C; c++) dyr[c] = (scale * dxr[c]) * gamma[c];
        else
            for (int64_t c = 0; c < C; c++) dyr[c] = scale * dxr[c];
    }
    if (gamma && dgamma) dgamma_reduce_(dgamma, dx, y, rows, n, scale, C);
}
