/* koleo — the KoLeo (Kozachenko-Leonenko) entropy regulariser of the official KoLeoLoss, in fp32
 * storage with double accumulation, forward and backward.
 *
 * Shapes: x (n, D) rows (student backbone x_norm_clstoken of one global crop on this rank).
 *   y_i  = x_i / max(||x_i||, 1e-8)                       (F.normalize, eps 1e-8)
 *   j(i) = argmax_{j} <y_i, y_j> with the diagonal set to −1 (first index on ties)
 *   d_i  = || y_i − y_{j(i)} + 1e-8 ||_2                   (nn.PairwiseDistance(2, eps=1e-8) adds
 *                                                           eps to the difference)
 *   loss = −(1/n) Σ_i log(d_i + 1e-8)
 * Backward treats j(i) as a constant (as autograd does through the argmax) and goes through the
 * distance and the normalisation (clamped rows, ||x|| < 1e-8, divide by the constant 1e-8).
 * A zero distance (duplicate rows) contributes no gradient, like torch's norm backward at 0.
 *
 * Meta-architecture form (koleo_ssl_forward_backward): x (R, D) are the 2B global CLS rows of a
 * rank, split like torch.chunk(2) (first ceil(R/2) rows, then the rest, i.e. crop 1 and crop 2);
 *   loss = weight · (koleo(chunk 1) + koleo(chunk 2)),  weight = dino.koleo_loss_weight (0.1)
 * per rank, never across ranks (the official per-GPU definition). SSLMetaArch logs loss / 2.
 *
 * Deviation: the official code computes in the input dtype (fp16 under FSDP mixed precision), where
 * 1e-8 underflows and duplicate rows give +inf; here everything is fp32/double, so a duplicate row
 * gives the finite −log(1e-8·(√D + 1)) bound. The nearest neighbour uses double dot products, so a
 * near tie can resolve differently from torch's fp32 matmul.
 *
 * dx (n, D) is overwritten with dscale · ∂loss/∂x (NULL skips it); nn_idx (n) receives j(i) (may be
 * NULL). Scratch O(n·D + n²) is allocated internally. Returns DV_OK or a dv_status.
 *
 * Example:
 *   DV_TRY(koleo_ssl_forward_backward(&kl, dcls, cls_global, 2 * B, D, 0.1, 1.0));
 */
#ifndef DV_KOLEO_H
#define DV_KOLEO_H

#include <stdint.h>

int koleo_forward_backward(double *loss, float *dx, int64_t *nn_idx, const float *x, int64_t n,
                           int64_t D, double dscale);

int koleo_ssl_forward_backward(double *loss, float *dx, const float *x, int64_t rows, int64_t D,
                               double weight, double dscale);

#endif
