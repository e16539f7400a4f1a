/* dino_loss — see dino_loss.h. */
#include "dino_loss.h"

#include <math.h>
#include <stdlib.h>

#include "err.h"
#include "softmax.h"

#define SOFTCE_BLOCK 512 /* floats of x = S/temp kept in L1 between the max and the exp sweep */

/* One row: returns Σ_g CE_g (unweighted); writes dS (scaled by gscale) when dS != NULL.
 * t1 may be NULL (one target). */
static double softce_row_(float *dS, const float *s, const float *t0, const float *t1, int64_t K,
                          float temp, float gscale) {
    float xb[SOFTCE_BLOCK];
    float m = -INFINITY;
    double sum = 0.0, dot0 = 0.0, mass0 = 0.0, dot1 = 0.0, mass1 = 0.0;
    for (int64_t k0 = 0; k0 < K; k0 += SOFTCE_BLOCK) {
        const int64_t nb = K - k0 < SOFTCE_BLOCK ? K - k0 : SOFTCE_BLOCK;
        float bm = -INFINITY;
#pragma omp simd reduction(max : bm)
        for (int64_t i = 0; i < nb; i++) {
            xb[i] = s[k0 + i] / temp;
            bm = xb[i] > bm ? xb[i] : bm;
        }
        if (bm > m) {
            if (sum != 0.0) sum *= exp((double)m - (double)bm);
            m = bm;
        }
        double bs = 0.0, d0 = 0.0, m0 = 0.0;
#pragma omp simd reduction(+ : bs, d0, m0)
        for (int64_t i = 0; i < nb; i++) {
            bs += softmax_exp_f32(xb[i] - m);
            d0 += (double)t0[k0 + i] * xb[i];
            m0 += t0[k0 + i];
        }
        sum += bs;
        dot0 += d0;
        mass0 += m0;
        if (t1) {
            double d1 = 0.0, m1 = 0.0;
#pragma omp simd reduction(+ : d1, m1)
            for (int64_t i = 0; i < nb; i++) {
                d1 += (double)t1[k0 + i] * xb[i];
                m1 += t1[k0 + i];
            }
            dot1 += d1;
            mass1 += m1;
        }
    }
    const double lse = (double)m + log(sum);
    const double mass = mass0 + mass1;
    if (dS) {
        const float inv = (float)(1.0 / sum), mf = (float)mass;
        if (t1) {
#pragma omp simd
            for (int64_t k = 0; k < K; k++) {
                const float p = softmax_exp_f32(s[k] / temp - m) * inv;
                dS[k] = gscale * (mf * p - (t0[k] + t1[k]));
            }
        } else {
#pragma omp simd
            for (int64_t k = 0; k < K; k++) {
                const float p = softmax_exp_f32(s[k] / temp - m) * inv;
                dS[k] = gscale * (mf * p - t0[k]);
            }
        }
    }
    return mass * lse - (dot0 + dot1);
}

int softce_fused(double *loss, float *dS, const float *S, int64_t n, int64_t K, const float *P,
                 int64_t np, int n_tgt, const float *row_w, double w, double temp, double dscale) {
    if (n < 0 || K <= 0 || np <= 0 || (n_tgt != 1 && n_tgt != 2) || !(temp > 0.0))
        return DV_ERR(DV_ERR_ARG, "softce_fused: bad sizes n=%lld K=%lld np=%lld n_tgt=%d temp=%g",
                      (long long)n, (long long)K, (long long)np, n_tgt, temp);
    if (n == 0) {
        if (loss) *loss = 0.0;
        return DV_OK;
    }
    if (!S || !P) return DV_ERR(DV_ERR_ARG, "softce_fused: NULL input");
    double *rl = malloc((size_t)n * sizeof *rl);
    DV_CHECK_ALLOC(rl);
    const float tf = (float)temp;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < n; r++) {
        const double wr = (row_w ? (double)row_w[r] : 1.0) * w;
        const float *t0 = P + (r % np) * K;
        const float *t1 = n_tgt == 2 ? P + (np + r % np) * K : NULL;
        const float gs = (float)(dscale * wr / temp);
        rl[r] = wr * softce_row_(dS ? dS + r * K : NULL, S + r * K, t0, t1, K, tf, gs);
    }
    double acc = 0.0;
    for (int64_t r = 0; r < n; r++) acc += rl[r];
    free(rl);
    if (loss) *loss = acc;
    return DV_OK;
}

int64_t dino_loss_num_terms(int64_t L) {
    const int64_t n_local_terms = 2 * L > 1 ? 2 * L : 1;
    const int64_t n_global_terms = (2 - 1) * 2;
    return n_global_terms + n_local_terms;
}

int dino_loss_forward_backward(dv_dino_loss_parts *out, float *d_global, float *d_local,
                               const float *s_global, const float *s_local, const float *t_probs,
                               int64_t B, int64_t L, int64_t K, double student_temp,
                               double dscale) {
    if (!out || !s_global || !t_probs || B <= 0 || L < 0 || K <= 0 || (L > 0 && !s_local))
        return DV_ERR(DV_ERR_ARG, "dino_loss: bad arguments (B=%lld L=%lld K=%lld)", (long long)B,
                      (long long)L, (long long)K);
    const double Z = (double)dino_loss_num_terms(L);
    out->local = 0.0;
    out->global = 0.0;
    if (L > 0) {
        /* Every local crop against both teacher halves: mean over B rows, summed over 2L pairs. */
        DV_TRY(softce_fused(&out->local, d_local, s_local, L * B, K, t_probs, B, 2, NULL,
                            1.0 / (double)B / Z, student_temp, dscale));
    }
    /* All 2B global rows against the swapped teacher matrix, mean over 2B, × loss_scales 2. */
    const double loss_scales = 2.0;
    DV_TRY(softce_fused(&out->global, d_global, s_global, 2 * B, K, t_probs, 2 * B, 1, NULL,
                        loss_scales / (double)(2 * B) / Z, student_temp, dscale));
    return DV_OK;
}
