/* clip — see clip.h. */
#include "clip.h"

#include <math.h>

#include "err.h"

#define CLIP_BLOCK 65536

double grad_sq_sum(const float *g, int64_t n) {
    const int64_t nb = (n + CLIP_BLOCK - 1) / CLIP_BLOCK;
    double total = 0.0;
    /* per-block partial sums, added in block order: independent of the thread count */
    for (int64_t b0 = 0; b0 < nb; b0 += 64) {
        double part[64];
        const int64_t b1 = b0 + 64 < nb ? b0 + 64 : nb;
#pragma omp parallel for schedule(static)
        for (int64_t b = b0; b < b1; b++) {
            const int64_t i0 = b * CLIP_BLOCK, i1 = i0 + CLIP_BLOCK < n ? i0 + CLIP_BLOCK : n;
            double s = 0.0;
#pragma omp simd reduction(+ : s)
            for (int64_t i = i0; i < i1; i++) s += (double)g[i] * g[i];
            part[b - b0] = s;
        }
        for (int64_t b = b0; b < b1; b++) total += part[b - b0];
    }
    return total;
}

int clip_grad_norm(double *norm, float *g, int64_t n, double max_norm, dv_allreduce_fn reduce,
                   void *reduce_ctx) {
    if (n < 0 || (n > 0 && !g)) return DV_ERR(DV_ERR_ARG, "clip_grad_norm: bad arguments");
    double sq = n > 0 ? grad_sq_sum(g, n) : 0.0;
    if (reduce) DV_TRY(reduce(reduce_ctx, &sq, 1));
    const double total = sqrt(sq);
    if (norm) *norm = total;
    if (max_norm > 0.0 && isfinite(total)) {
        const double coef = max_norm / (total + 1e-6);
        if (coef < 1.0) {
            const float cf = (float)coef;
#pragma omp parallel for simd schedule(static)
            for (int64_t i = 0; i < n; i++) g[i] *= cf;
        }
    }
    return DV_OK;
}
