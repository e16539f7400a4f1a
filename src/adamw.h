/* adamw — torch.optim.AdamW (the official optimiser: betas 0.9/0.999, eps 1e-8, decoupled weight
 * decay) over a flat fp32 parameter buffer, and the official parameter groups (layer-wise lr
 * decay, patch-embed lr multiplier, no weight decay on biases/norms/LayerScale, last layer).
 *
 * Per element of a range with group lr = (is_last_layer ? last_layer_lr : lr) · lr_mult and
 * group wd = weight_decay · wd_mult (double, as apply_optim_scheduler), step t ≥ 1:
 *   p   ← p · (1 − lr·wd)                      decoupled decay, BEFORE the moments (as torch)
 *   m   ← lerp(m, g, 1 − β1)                   torch's lerp: m + w(g − m)   (w < 0.5)
 *   v   ← v · β2 + (1 − β2) · g · g
 *   p   ← p − (lr / (1 − β1^t)) · m / (sqrt(v) / sqrt(1 − β2^t) + eps)
 * Scalars are computed in double and applied in fp32, in torch's order of operations. Ranges
 * select tensors of the buffer (offset, numel in elements), so the same call works on a ZeRO
 * shard (see adamw_ranges_clip). A freezing lr of 0 leaves p unchanged while m and v still
 * accumulate (as officially). OpenMP over elements; the result does not depend on threads.
 *
 * Parameter groups (dinov2/utils/param_groups.py): per tensor
 *   lr_mult = layerwise_decay^(num_layers + 1 − layer_id) · (patch_embed ? patch_embed_lr_mult : 1)
 *   wd_mult = no_wd ? 0 : 1
 * with, for a backbone of num_layers = depth blocks: layer_id 0 for names containing pos_embed,
 * patch_embed, mask_token, cls_token; i + 1 for "blocks.i."; depth + 1 for everything else
 * (final norm, and register_tokens, which the official rule does not list). For heads num_layers
 * = 0 and layer_id = 1 (multiplier 1). no_wd: name ends with ".bias" or contains "norm" or
 * "gamma". is_last_layer: name contains "last_layer". The parameter table (src/params.h)
 * implements these rules on the official names; the trainer builds the ranges from it.
 *
 * Example:
 *   dv_adamw_hparams hp = adamw_default_hparams();
 *   hp.lr = lr; hp.last_layer_lr = llr; hp.weight_decay = wd; hp.step = it + 1;
 *   DV_TRY(adamw_step(p, m, v, g, ranges, n_ranges, &hp));
 */
#ifndef DV_ADAMW_H
#define DV_ADAMW_H

#include <stdint.h>

typedef struct {
    int64_t offset, numel; /* elements of the flat buffers */
    double lr_mult;        /* param-group lr multiplier */
    double wd_mult;        /* param-group weight-decay multiplier */
    int is_last_layer;     /* uses last_layer_lr instead of lr */
} dv_adamw_range;

typedef struct {
    double lr, last_layer_lr, weight_decay; /* schedule values of this iteration */
    double beta1, beta2, eps;               /* 0.9, 0.999, 1e-8 */
    int64_t step;                           /* t ≥ 1: the step count after this update */
} dv_adamw_hparams;

dv_adamw_hparams adamw_default_hparams(void);

/* One AdamW step on every range of the flat buffers param, exp_avg, exp_avg_sq (updated) given
 * grad. Ranges must not overlap. */
int adamw_step(float *param, float *exp_avg, float *exp_avg_sq, const float *grad,
               const dv_adamw_range *ranges, int64_t n_ranges, const dv_adamw_hparams *hp);

/* Intersect ranges with the shard [lo, hi) of the flat buffer and rebase offsets to lo; writes at
 * most n_ranges entries to out (may not alias in) and returns how many (empty ones dropped). */
int64_t adamw_ranges_clip(dv_adamw_range *out, const dv_adamw_range *in, int64_t n_ranges,
                          int64_t lo, int64_t hi);

#endif
