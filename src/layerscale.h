/* layerscale — residual add of a LayerScale'd branch, over all rows or a subset of rows.
 *
 * The ViT block is x = x + ls1(attn(norm1(x))); x = x + ls2(mlp(norm2(x))), ls(y) = gamma ⊙ y.
 * Efficient stochastic depth (official drop_add_residual_stochastic_depth) runs a branch on a
 * subset of the rows only and adds it back with index_add(…, alpha = b / keep):
 *   x[rows[i]] += scale · (gamma ⊙ y[i]).
 *
 * Shapes:
 *   x, dx    (T, C)   the residual stream and its gradient
 *   y, dy    (T, C)   the branch output (all rows), or (n, C) for the subset form
 *   rows     (n)      row indices into x of the subset form; must be distinct
 *   gamma, dgamma (C) LayerScale weight; gamma == NULL means no LayerScale (identity, as the
 *                     official code with layerscale = None) and dgamma is then ignored
 *
 * Conventions as in gemm.h: row-major fp32, outputs first. The residual gradient passes
 * through unchanged (the caller keeps dx); the branch gradient dy is overwritten; dgamma
 * ACCUMULATES (+=) with a deterministic double reduction over rows. OpenMP over rows.
 *
 * Example:
 *   layerscale_residual_forward(x, att_proj, ls1_g, T, D);
 *   layerscale_residual_backward(datt_proj, dls1_g, dx, att_proj, ls1_g, T, D);
 */
#ifndef DV_LAYERSCALE_H
#define DV_LAYERSCALE_H

#include <stdint.h>

/* x (T, C) += gamma ⊙ y (T, C). */
void layerscale_residual_forward(float *x, const float *y, const float *gamma, int64_t T,
                                 int64_t C);

/* dy = gamma ⊙ dx (overwritten); dgamma += Σ_t dx[t] ⊙ y[t] (may be NULL). */
void layerscale_residual_backward(float *dy, float *dgamma, const float *dx, const float *y,
                                  const float *gamma, int64_t T, int64_t C);

/* x[rows[i]] += scale · (gamma ⊙ y[i]) for i < n; y is (n, C). */
void layerscale_residual_subset_forward(float *x, const float *y, const int64_t *rows, int64_t n,
                                        const float *gamma, float scale, int64_t C);

/* dy[i] = (scale · dx[rows[i]]) ⊙ gamma (overwritten, (n, C));
 * dgamma += Σ_i (scale · dx[rows[i]]) ⊙ y[i] (may be NULL). */
void layerscale_residual_subset_backward(float *dy, float *dgamma, const float *dx,
                                         const float *y, const int64_t *rows, int64_t n,
                                         const float *gamma, float scale, int64_t C);

#endif
