/* ibot_loss — the iBOT masked-patch loss of the official iBOTPatchLoss.forward_masked, forward
 * and backward w.r.t. the student logits of the masked tokens, and the collate's masks_weight.
 *
 * Shapes: n = masked tokens on this rank (rows in mask_indices_list order), K prototypes,
 *   S (n, K) student head logits of the masked tokens, P (n, K) teacher targets (softmax-centred
 *   with the iBOT centre, or Sinkhorn-Knopp with the global masked count), masks_weight (n) =
 *   1 / (masked tokens in that token's crop), n_crops = 2B (all global crops of the rank,
 *   masked or not: the official student_masks_flat.shape[0]).
 *
 *   ℓ_u = Σ_k P[u,k] · log_softmax(S_u / student_temp)_k
 *   loss = −Σ_u ℓ_u · masks_weight_u / n_crops
 * i.e. the mean over the masked tokens of each crop, then the mean over all 2B global crops
 * (unmasked crops count as zero). SSLMetaArch multiplies this by loss_scales (2) and
 * ibot_loss_scale (1/2), a factor 1, then by ibot.loss_weight: pass that as dscale.
 * dS (n, K) = dscale · ∂loss/∂S, overwritten (NULL skips it). Runs on softce_fused (dino_loss.h).
 *
 * Example:
 *   DV_TRY(ibot_masks_weight(w, masks, 2 * B, N, &n_masked));
 *   DV_TRY(ibot_loss_forward_backward(&loss, dS, S, P, w, n_masked, 2 * B, K, 0.1, 1.0));
 */
#ifndef DV_IBOT_LOSS_H
#define DV_IBOT_LOSS_H

#include <stdint.h>

int ibot_loss_forward_backward(double *loss, float *dS, const float *S, const float *P,
                               const float *masks_weight, int64_t n, int64_t n_crops, int64_t K,
                               double student_temp, double dscale);

/* The collate's masks_weight: for masks (n_crops, N) (nonzero = masked), in row-major order of the
 * masked entries (= mask_indices_list order), w = 1 / max(Σ masks[crop], 1) in fp32. w holds at
 * least the number of masked entries; *n_masked (may be NULL) receives that number. */
int ibot_masks_weight(float *w, const uint8_t *masks, int64_t n_crops, int64_t N,
                      int64_t *n_masked);

#endif
