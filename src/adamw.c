/* adamw — see adamw.h. */
#include "adamw.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

dv_adamw_hparams adamw_default_hparams(void) {
    dv_adamw_hparams hp = {
        /* .lr = */ 0.0,
        /* .last_layer_lr = */ 0.0,
        /* .weight_decay = */ 0.0,
        /* .beta1 = */ 0.9,
        /* .beta2 = */ 0.999,
        /* .eps = */ 1e-8,
        /* .step = */ 1,
    };
    return hp;
}

int adamw_step(float *param, float *exp_avg, float *exp_avg_sq, const float *grad,
               const dv_adamw_range *ranges, int64_t n_ranges, const dv_adamw_hparams *hp) {
    if (!hp || hp->step < 1 || n_ranges < 0 || (n_ranges > 0 && !ranges))
        return DV_ERR(DV_ERR_ARG, "adamw_step: bad arguments");
    if (n_ranges > 0 && (!param || !exp_avg || !exp_avg_sq || !grad))
        return DV_ERR(DV_ERR_ARG, "adamw_step: NULL buffer");
    const double t = (double)hp->step;
    const double bc1 = 1.0 - pow(hp->beta1, t);
    const double bc2_sqrt = sqrt(1.0 - pow(hp->beta2, t));
    const float w1 = (float)(1.0 - hp->beta1);
    const float b2 = (float)hp->beta2, one_b2 = (float)(1.0 - hp->beta2);
    const float bc2s = (float)bc2_sqrt, epsf = (float)hp->eps;
    for (int64_t r = 0; r < n_ranges; r++) {
        const dv_adamw_range *rg = &ranges[r];
        if (rg->offset < 0 || rg->numel < 0)
            return DV_ERR(DV_ERR_ARG, "adamw_step: bad range %lld", (long long)r);
        const double lr = (rg->is_last_layer ? hp->last_layer_lr : hp->lr) * rg->lr_mult;
        const double wd = hp->weight_decay * rg->wd_mult;
        const float decay = (float)(1.0 - lr * wd);
        const float neg_step = (float)(-(lr / bc1));
        float *p = param + rg->offset, *m = exp_avg + rg->offset, *v = exp_avg_sq + rg->offset;
        const float *g = grad + rg->offset;
        const int64_t n = rg->numel;
#pragma omp parallel for simd schedule(static)
        for (int64_t i = 0; i < n; i++) {
            const float gi = g[i];
            const float pi = p[i] * decay;
            const float mi = m[i] + w1 * (gi - m[i]); /* torch lerp, weight < 0.5 */
            const float vi = v[i] * b2 + one_b2 * gi * gi;
            const float denom = sqrtf(vi) / bc2s + epsf;
            p[i] = pi + neg_step * mi / denom;
            m[i] = mi;
            v[i] = vi;
        }
    }
    return DV_OK;
}

int64_t adamw_ranges_clip(dv_adamw_range *out, const dv_adamw_range *in, int64_t n_ranges,
                          int64_t lo, int64_t hi) {
    int64_t k = 0;
    for (int64_t r = 0; r < n_ranges; r++) {
        const int64_t a = in[r].offset > lo ? in[r].offset : lo;
        const int64_t e = in[r].offset + in[r].numel;
        const int64_t b = e < hi ? e : hi;
        if (b <= a) continue;
        out[k] = in[r];
        out[k].offset = a - lo;
        out[k].numel = b - a;
        k++;
    }
    return k;
}

