/* centering — see centering.h. */
#include "centering.h"

#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "softmax.h"

int center_init(dv_center *c, int64_t K) {
    if (!c || K <= 0) return DV_ERR(DV_ERR_ARG, "center_init: bad K=%lld", (long long)K);
    memset(c, 0, sizeof *c);
    c->center = calloc((size_t)K, sizeof *c->center);
    c->pending_sum = calloc((size_t)K, sizeof *c->pending_sum);
    if (!c->center || !c->pending_sum) {
        center_free(c);
        return DV_ERR(DV_ERR_NOMEM, "center_init: out of memory (K=%lld)", (long long)K);
    }
    c->K = K;
    c->momentum = 0.9;
    return DV_OK;
}

void center_free(dv_center *c) {
    if (!c) return;
    free(c->center);
    free(c->pending_sum);
    c->center = NULL;
    c->pending_sum = NULL;
    c->K = 0;
    c->has_pending = 0;
}

int center_apply_pending(dv_center *c) {
    if (!c || !c->center) return DV_ERR(DV_ERR_ARG, "center_apply_pending: uninitialised centre");
    if (!c->has_pending) return DV_OK;
    if (!(c->pending_rows > 0.0))
        return DV_ERR(DV_ERR_ARG, "center_apply_pending: bad divisor %g", c->pending_rows);
    const float m = (float)c->momentum, one_m = (float)(1.0 - c->momentum);
    for (int64_t k = 0; k < c->K; k++) {
        const float t = (float)(c->pending_sum[k] / c->pending_rows);
        c->center[k] = c->center[k] * m + t * one_m;
    }
    c->has_pending = 0;
    return DV_OK;
}

int center_softmax_teacher(float *P, dv_center *c, const float *h, int64_t n, double teacher_temp) {
    if (!P || !h || n < 0 || !(teacher_temp > 0.0))
        return DV_ERR(DV_ERR_ARG, "center_softmax_teacher: bad arguments");
    DV_TRY(center_apply_pending(c));
    const int64_t K = c->K;
    const float tt = (float)teacher_temp;
    const float *ct = c->center;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < n; r++)
        for (int64_t k = 0; k < K; k++) P[r * K + k] = (h[r * K + k] - ct[k]) / tt;
    softmax_forward(P, P, n, K);
    return DV_OK;
}

int center_update(dv_center *c, const float *h, int64_t n, dv_center_stat stat, int64_t world_size,
                  dv_allreduce_fn reduce, void *reduce_ctx) {
    if (!c || !c->center || n < 0 || (n > 0 && !h) || world_size < 1 ||
        (stat != DV_CENTER_ROW_SUM && stat != DV_CENTER_ROW_MEAN))
        return DV_ERR(DV_ERR_ARG, "center_update: bad arguments (n=%lld W=%lld)", (long long)n,
                      (long long)world_size);
    const int64_t K = c->K;
    double *s = c->pending_sum;
    /* column sums over rows, deterministic: each thread owns a block of prototypes */
#pragma omp parallel for schedule(static)
    for (int64_t k = 0; k < K; k++) s[k] = 0.0;
#pragma omp parallel for schedule(static)
    for (int64_t k0 = 0; k0 < K; k0 += 256) {
        const int64_t k1 = k0 + 256 < K ? k0 + 256 : K;
        for (int64_t r = 0; r < n; r++)
            for (int64_t k = k0; k < k1; k++) s[k] += h[r * K + k];
    }
    if (stat == DV_CENTER_ROW_MEAN && n > 0)
        for (int64_t k = 0; k < K; k++) s[k] /= (double)n;
    if (reduce) DV_TRY(reduce(reduce_ctx, s, K));
    c->pending_rows = (stat == DV_CENTER_ROW_SUM ? (double)n : 1.0) * (double)world_size;
    c->has_pending = 1;
    return DV_OK;
}
