/* sinkhorn — see sinkhorn.h. */
#include "sinkhorn.h"

#include <math.h>
#include <stdlib.h>

#include "err.h"

#define SK_SAFE_LIMIT 40.0 /* |max h/τt| beyond which safe mode shifts a prototype */
#define SK_COL_BLOCK 256

dv_sinkhorn_opts sinkhorn_default_opts(int64_t world_size, dv_allreduce_fn reduce, void *ctx) {
    dv_sinkhorn_opts o = {
        /* .n_iterations = */ 3,
        /* .safe = */ 0,
        /* .world_size = */ world_size,
        /* .reduce = */ reduce,
        /* .reduce_max = */ NULL,
        /* .reduce_ctx = */ ctx,
    };
    return o;
}

/* s[k] = Σ_r Q[r,k] in double; a thread owns a block of prototypes (thread-count independent). */
static void col_sums_(double *s, const float *Q, int64_t n, int64_t K) {
#pragma omp parallel for schedule(static)
    for (int64_t k0 = 0; k0 < K; k0 += SK_COL_BLOCK) {
        const int64_t k1 = k0 + SK_COL_BLOCK < K ? k0 + SK_COL_BLOCK : K;
        for (int64_t k = k0; k < k1; k++) s[k] = 0.0;
        for (int64_t r = 0; r < n; r++)
            for (int64_t k = k0; k < k1; k++) s[k] += Q[r * K + k];
    }
}

static int reduce_(const dv_sinkhorn_opts *o, double *buf, int64_t count) {
    return o->reduce ? o->reduce(o->reduce_ctx, buf, count) : DV_OK;
}

int sinkhorn_knopp(float *P, const float *h, int64_t n, int64_t K, double teacher_temp,
                   double b_total, const dv_sinkhorn_opts *o) {
    if (!o || n < 0 || K <= 0 || (n > 0 && (!P || !h)) || !(teacher_temp > 0.0) ||
        o->world_size < 1 || o->n_iterations < 0 || !(b_total > 0.0))
        return DV_ERR(DV_ERR_ARG, "sinkhorn_knopp: bad arguments (n=%lld K=%lld temp=%g B_tot=%g)",
                      (long long)n, (long long)K, teacher_temp, b_total);
    if (o->safe && o->world_size > 1 && !o->reduce_max)
        return DV_ERR(DV_ERR_ARG, "sinkhorn_knopp: safe mode on %lld ranks needs reduce_max",
                      (long long)o->world_size);
    double *cs = malloc((size_t)K * sizeof *cs);
    float *csf = malloc((size_t)K * sizeof *csf);
    if (!cs || !csf) {
        free(cs), free(csf);
        return DV_ERR(DV_ERR_NOMEM, "sinkhorn_knopp: out of memory (K=%lld)", (long long)K);
    }
    int rc = DV_OK;
    const float tt = (float)teacher_temp, Kf = (float)K, Bf = (float)b_total;

    /* Q = exp(h/τt), optionally shifted per prototype (safe mode) */
    if (o->safe) {
#pragma omp parallel for schedule(static)
        for (int64_t k = 0; k < K; k++) {
            double m = -INFINITY;
            for (int64_t r = 0; r < n; r++) {
                const double x = h[r * K + k] / tt;
                m = x > m ? x : m;
            }
            cs[k] = m;
        }
        if (o->reduce_max && (rc = o->reduce_max(o->reduce_ctx, cs, K)) != DV_OK) goto out;
        for (int64_t k = 0; k < K; k++)
            cs[k] = (isfinite(cs[k]) && fabs(cs[k]) > SK_SAFE_LIMIT) ? cs[k] : 0.0;
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < n; r++)
            for (int64_t k = 0; k < K; k++) P[r * K + k] = expf(h[r * K + k] / tt - (float)cs[k]);
    } else {
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < n * K; i++) P[i] = expf(h[i] / tt);
    }

    /* Q /= all_reduce(Σ Q) */
    {
        double tot = 0.0;
        col_sums_(cs, P, n, K);
        for (int64_t k = 0; k < K; k++) tot += cs[k];
        if ((rc = reduce_(o, &tot, 1)) != DV_OK) goto out;
        const float totf = (float)tot;
        if (!(isfinite(totf) && totf > 0.0f)) {
            rc = DV_ERR(DV_ERR_NUMERIC,
                        "Sinkhorn-Knopp: sum of exp(h/teacher_temp) = %g is not a finite positive "
                        "fp32 number (the official code has no max subtraction); use safe mode",
                        tot);
            goto out;
        }
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < n * K; i++) P[i] /= totf;
    }

    int bad_row = 0;
    for (int it = 0; it < o->n_iterations; it++) {
        /* prototypes (official rows): global mass 1/K each */
        col_sums_(cs, P, n, K);
        if ((rc = reduce_(o, cs, K)) != DV_OK) goto out;
        for (int64_t k = 0; k < K; k++) {
            const float v = csf[k] = (float)cs[k];
            if (!(isfinite(v) && v > 0.0f)) {
                rc = DV_ERR(DV_ERR_NUMERIC,
                            "Sinkhorn-Knopp: prototype %lld has mass %g (fp32 under/overflow of "
                            "exp(h/teacher_temp)); use safe mode",
                            (long long)k, cs[k]);
                goto out;
            }
        }
        /* samples (official columns, local): mass 1/B_tot each */
#pragma omp parallel for schedule(static) reduction(| : bad_row)
        for (int64_t r = 0; r < n; r++) {
            float *q = P + r * K;
            double rs = 0.0;
#pragma omp simd reduction(+ : rs)
            for (int64_t k = 0; k < K; k++) {
                q[k] /= csf[k];
                q[k] /= Kf;
                rs += q[k];
            }
            const float rsf = (float)rs;
            bad_row |= !(isfinite(rsf) && rsf > 0.0f);
#pragma omp simd
            for (int64_t k = 0; k < K; k++) {
                q[k] /= rsf;
                q[k] /= Bf;
            }
        }
    }
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n * K; i++) P[i] *= Bf;
    if (bad_row)
        rc = DV_ERR(DV_ERR_NUMERIC, "Sinkhorn-Knopp: a sample row has zero or non-finite mass "
                                    "(fp32 underflow of exp(h/teacher_temp)); use safe mode");
out:
    free(cs);
    free(csf);
    return rc;
}

int sinkhorn_knopp_dino(float *P, const float *h, int64_t n, int64_t K, double teacher_temp,
                        const dv_sinkhorn_opts *o) {
    if (!o) return DV_ERR(DV_ERR_ARG, "sinkhorn_knopp_dino: NULL options");
    return sinkhorn_knopp(P, h, n, K, teacher_temp, (double)n * (double)o->world_size, o);
}

int sinkhorn_knopp_ibot(float *P, const float *h, int64_t n_masked, int64_t K, double teacher_temp,
                        const dv_sinkhorn_opts *o) {
    if (!o) return DV_ERR(DV_ERR_ARG, "sinkhorn_knopp_ibot: NULL options");
    double b = (double)n_masked;
    DV_TRY(reduce_(o, &b, 1));
    return sinkhorn_knopp(P, h, n_masked, K, teacher_temp, b, o);
}
