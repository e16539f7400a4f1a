/* grad_scaler — dynamic loss scaling for float16 gradient reductions, with the update rule of
 * PyTorch's (Sharded)GradScaler (torch._amp_update_scale_):
 *   found_inf:  scale ← scale · backoff_factor, growth_tracker ← 0       (the step is skipped)
 *   otherwise:  growth_tracker + 1 == growth_interval ? scale ← scale · growth_factor (when
 *               finite), growth_tracker ← 0 : growth_tracker ← growth_tracker + 1
 * Defaults as torch: init_scale 2^16, growth_factor 2, backoff_factor 0.5, growth_interval 2000.
 *
 * Where it applies in dinov2c: the CPU computes in fp32 and rounds only what crosses between
 * ranks, so the scale multiplies the gradients as they are cast to float16 for the reduce-scatter
 * (not the loss): mathematically the same place the official scaled loss reaches them, and
 * exactly where an fp16 overflow turns into inf. Unscaling (× 1/scale, a power of two: exact)
 * follows the reduction. The step is skipped on every rank when any rank's gradient shard holds
 * an inf or NaN; the teacher EMA still runs (as the official loop, which calls update_teacher
 * after fp16_scaler.step either way). The state (scale, growth_tracker) is checkpointed.
 *
 *   dv_grad_scaler g;  dv_grad_scaler_init(&g, enabled);
 *   ... grads × g.scale → fp16 → reduce-scatter → × 1 / (g.scale · world)
 *   if (!found_inf) optimizer step;   dv_grad_scaler_update(&g, found_inf);
 */
#ifndef DV_GRAD_SCALER_H
#define DV_GRAD_SCALER_H

#include <stdint.h>

typedef struct {
    int enabled;            /* 0: scale stays 1, updates do nothing */
    double scale;           /* current loss scale */
    int64_t growth_tracker; /* successful steps since the last change */
    double growth_factor, backoff_factor;
    int64_t growth_interval;
    int64_t skipped;        /* steps skipped so far (this process) */
} dv_grad_scaler;

void dv_grad_scaler_init(dv_grad_scaler *g, int enabled);
/* After a step; returns 1 when the scale changed. */
int dv_grad_scaler_update(dv_grad_scaler *g, int found_inf);

#endif
