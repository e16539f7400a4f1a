/* ibot_loss — see ibot_loss.h. */
#include "ibot_loss.h"

#include "dino_loss.h"
#include "err.h"

int ibot_loss_forward_backward(double *loss, float *dS, const float *S, const float *P,
                               const float *masks_weight, int64_t n, int64_t n_crops, int64_t K,
                               double student_temp, double dscale) {
    if (n < 0 || n_crops <= 0 || K <= 0 || (n > 0 && !masks_weight))
        return DV_ERR(DV_ERR_ARG, "ibot_loss: bad arguments (n=%lld n_crops=%lld K=%lld)",
                      (long long)n, (long long)n_crops, (long long)K);
    /* loss = Σ_u w_u · CE_u / n_crops, CE_u = −ℓ_u */
    return softce_fused(loss, dS, S, n, K, P, n > 0 ? n : 1, 1, masks_weight, 1.0 / (double)n_crops,
                        student_temp, dscale);
}

int ibot_masks_weight(float *w, const uint8_t *masks, int64_t n_crops, int64_t N,
                      int64_t *n_masked) {
    if (!w || !masks || n_crops < 0 || N < 0)
        return DV_ERR(DV_ERR_ARG, "ibot_masks_weight: bad arguments");
    int64_t j = 0;
    for (int64_t c = 0; c < n_crops; c++) {
        int64_t cnt = 0;
        for (int64_t i = 0; i < N; i++) cnt += masks[c * N + i] != 0;
        const float wc = 1.0f / (float)(cnt > 1 ? cnt : 1);
        for (int64_t i = 0; i < cnt; i++) w[j++] = wc;
    }
    if (n_masked) *n_masked = j;
    return DV_OK;
}
