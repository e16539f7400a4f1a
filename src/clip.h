/* clip — gradient norm and clipping of one module's gradients, as torch.nn.utils.clip_grad_norm_
 * / FSDP's clip_grad_norm_ (the official per-module clipping of the student backbone, dino_head and
 * ibot_head, each with its own norm):
 *   norm = sqrt(Σ_ranks Σ_i g_i²)            (L2, accumulated in double, one all-reduce of 1 value)
 *   coef = max_norm / (norm + 1e-6);  if coef < 1: g ← g · coef   (fp32 multiply)
 * The grads of one module are one flat buffer (its shard on this rank; padding must hold zeros).
 * max_norm ≤ 0 (optim.clip_grad = 0) only computes the norm (for logging). A non-finite norm
 * leaves the gradients untouched and returns DV_OK with the norm, so the caller (loss scaler)
 * can skip the step; torch would scale by 0 (inf) or NaN.
 * The hook is the shared in-place sum over ranks (see centering.h), called with count 1;
 * NULL = single rank. Collective: every rank calls it, also with n = 0.
 *
 * Example:
 *   double gn;
 *   DV_TRY(clip_grad_norm(&gn, grads_backbone, shard_numel, cfg.optim.clip_grad, hook, comm));
 */
#ifndef DV_CLIP_H
#define DV_CLIP_H

#include <stdint.h>

#ifndef DV_ALLREDUCE_FN_DEFINED
#define DV_ALLREDUCE_FN_DEFINED
/* In-place sum over all ranks of count doubles; NULL = single rank. */
typedef int (*dv_allreduce_fn)(void *ctx, double *buf, int64_t count);
#endif

/* Σ g² of a local buffer in double (fixed blocks, thread-count independent). */
double grad_sq_sum(const float *g, int64_t n);

/* Total norm (returned in *norm, may be NULL) and clipping of g (n) in place. */
int clip_grad_norm(double *norm, float *g, int64_t n, double max_norm, dv_allreduce_fn reduce,
                   void *reduce_ctx);

#endif
