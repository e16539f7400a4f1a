/* layernorm — LayerNorm over the last dimension (PyTorch nn.LayerNorm, biased variance).
 *
 * Shapes:
 *   x, y, dx, dy  (T, C)   T rows (tokens), C channels
 *   gamma, beta   (C)      weight and bias; dgamma, dbeta likewise
 *   mean, rstd    (T)      per-row statistics saved by the forward for the backward
 *
 *   y = (x - mean) · rstd · gamma + beta,  rstd = 1 / sqrt(var + eps)
 *
 * eps is passed in (the ViT uses 1e-6). Row statistics are computed in double and stored as
 * float. Conventions as in gemm.h: row-major fp32, outputs first; dgamma/dbeta ACCUMULATE (+=);
 * dx is overwritten, or added to when dx_accumulate != 0 (the pre-norm block adds the norm's
 * input gradient into the residual-stream gradient). Reductions over rows run per column
 * block in double, so results do not depend on the thread count. OpenMP over rows.
 *
 * Example:
 *   layernorm_forward(xn, mean, rstd, x, n1_w, n1_b, T, D, 1e-6f);
 *   layernorm_backward(dx, dn1_w, dn1_b, dxn, x, mean, rstd, n1_w, T, D, 1);
 */
#ifndef DV_LAYERNORM_H
#define DV_LAYERNORM_H

#include <stdint.h>

/* mean and rstd may be NULL (inference). y must not alias x. */
void layernorm_forward(float *y, float *mean, float *rstd, const float *x, const float *gamma,
                       const float *beta, int64_t T, int64_t C, float eps);

/* dx (may be NULL), dgamma (may be NULL), dbeta (may be NULL) from dy, the forward input x and
 * its saved mean/rstd. dx must not alias dy or x. */
void layernorm_backward(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x,
                        const float *mean, const float *rstd, const float *gamma, int64_t T,
                        int64_t C, int dx_accumulate);

#endif
