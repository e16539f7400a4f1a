/* koleo — see koleo.h. */
#include "koleo.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

#define KOLEO_EPS 1e-8

int koleo_forward_backward(double *loss, float *dx, int64_t *nn_idx, const float *x, int64_t n,
                           int64_t D, double dscale) {
    if (!loss || !x || n < 1 || D < 1)
        return DV_ERR(DV_ERR_ARG, "koleo: bad arguments (n=%lld D=%lld)", (long long)n,
                      (long long)D);
    double *y = malloc((size_t)(n * D) * sizeof *y);
    double *u = malloc((size_t)(n * D) * sizeof *u);
    double *nrm = malloc((size_t)n * sizeof *nrm);
    double *dist = malloc((size_t)n * sizeof *dist);
    int64_t *nn = malloc((size_t)n * sizeof *nn);
    if (!y || !u || !nrm || !dist || !nn) {
        free(y), free(u), free(nrm), free(dist), free(nn);
        return DV_ERR(DV_ERR_NOMEM, "koleo: out of memory (n=%lld D=%lld)", (long long)n,
                      (long long)D);
    }
    /* normalise */
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        double s = 0.0;
        for (int64_t k = 0; k < D; k++) s += (double)x[i * D + k] * x[i * D + k];
        nrm[i] = sqrt(s);
        const double den = nrm[i] > KOLEO_EPS ? nrm[i] : KOLEO_EPS;
        for (int64_t k = 0; k < D; k++) y[i * D + k] = x[i * D + k] / den;
    }
    /* nearest neighbour by max inner product, diagonal = −1; distance with eps on the difference */
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        double best = -INFINITY;
        int64_t bj = 0;
        for (int64_t j = 0; j < n; j++) {
            double dot = -1.0;
            if (j != i) {
                dot = 0.0;
                for (int64_t k = 0; k < D; k++) dot += y[i * D + k] * y[j * D + k];
            }
            if (dot > best) best = dot, bj = j;
        }
        nn[i] = bj;
        double s = 0.0;
        for (int64_t k = 0; k < D; k++) {
            const double v = y[i * D + k] - y[bj * D + k] + KOLEO_EPS;
            u[i * D + k] = v;
            s += v * v;
        }
        dist[i] = sqrt(s);
    }
    double acc = 0.0;
    for (int64_t i = 0; i < n; i++) acc += log(dist[i] + KOLEO_EPS);
    *loss = -acc / (double)n;
    if (nn_idx) memcpy(nn_idx, nn, (size_t)n * sizeof *nn);

    if (dx) {
        /* ∂/∂y_i += a_i u_i, ∂/∂y_j(i) −= a_i u_i, a_i = −dscale/(n (d_i+eps) d_i) */
        double *gy = calloc((size_t)(n * D), sizeof *gy);
        if (!gy) {
            free(y), free(u), free(nrm), free(dist), free(nn);
            return DV_ERR(DV_ERR_NOMEM, "koleo: out of memory for the gradient");
        }
        for (int64_t i = 0; i < n; i++) {
            if (!(dist[i] > 0.0)) continue;
            const double a = -dscale / ((double)n * (dist[i] + KOLEO_EPS) * dist[i]);
            const int64_t j = nn[i];
            for (int64_t k = 0; k < D; k++) {
                gy[i * D + k] += a * u[i * D + k];
                gy[j * D + k] -= a * u[i * D + k];
            }
        }
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < n; i++) {
            const double *g = gy + i * D, *yi = y + i * D;
            if (nrm[i] > KOLEO_EPS) {
                double yg = 0.0;
                for (int64_t k = 0; k < D; k++) yg += yi[k] * g[k];
                for (int64_t k = 0; k < D; k++)
                    dx[i * D + k] = (float)((g[k] - yi[k] * yg) / nrm[i]);
            } else {
                for (int64_t k = 0; k < D; k++) dx[i * D + k] = (float)(g[k] / KOLEO_EPS);
            }
        }
        free(gy);
    }
    free(y), free(u), free(nrm), free(dist), free(nn);
    return DV_OK;
}

int koleo_ssl_forward_backward(double *loss, float *dx, const float *x, int64_t rows, int64_t D,
                               double weight, double dscale) {
    if (!loss || !x || rows < 1 || D < 1)
        return DV_ERR(DV_ERR_ARG, "koleo_ssl: bad arguments (rows=%lld D=%lld)", (long long)rows,
                      (long long)D);
    /* torch.chunk(2): chunks of ceil(rows/2) rows; one chunk when rows == 1 */
    const int64_t c = (rows + 1) / 2;
    double l1 = 0.0, l2 = 0.0;
    DV_TRY(koleo_forward_backward(&l1, dx, NULL, x, c, D, dscale * weight));
    if (rows > c)
        DV_TRY(koleo_forward_backward(&l2, dx ? dx + c * D : NULL, NULL, x + c * D, rows - c, D,
                                      dscale * weight));
    *loss = weight * (l1 + l2);
    return DV_OK;
}
