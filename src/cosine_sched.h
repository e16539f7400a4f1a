/* cosine_sched — the official CosineScheduler (dinov2/utils/utils.py) evaluated by index, and the
 * five schedules of dinov2/train/train.py build_schedulers.
 *
 * CosineScheduler(base, final, total_iters, warmup_iters, start_warmup_value, freeze_iters) is the
 * array of total_iters values
 *   [0] · freeze_iters ++ linspace(start_warmup, base, warmup_iters) ++ cosine,
 *   cosine[i] = final + (0.5·(base − final))·(1 + cos(π·i / n)),  i = 0..n−1,
 *   n = total_iters − warmup_iters − freeze_iters (≥ 0; the last value is slightly above final),
 * with numpy's linspace: v_i = i·step + start, step = (base − start)/(warmup − 1), the last value
 * exactly base (when step == 0: (i/(warmup−1))·(base − start) + start; one point: start), and
 * schedule[it] = final for it ≥ total_iters. Values are computed on the fly in double with the
 * same operations as numpy (bit-identical, up to libm's cos against numpy's own cos, which may
 * differ in the last ulp). zero_prefix reproduces build_schedulers' in-place
 * `last_layer_lr_schedule.schedule[:freeze_last_layer_iters] = 0`: indices it < min(zero_prefix,
 * total_iters) read 0 (indices ≥ total_iters still read final, as in the array).
 *
 * build_schedulers (sched_init_official from the finalized config):
 *   lr            CosineScheduler(lr, min_lr, T, warmup_iters, 0)            lr = derived.lr
 *   wd            CosineScheduler(weight_decay, weight_decay_end, T)
 *   momentum      CosineScheduler(momentum_teacher, final_momentum_teacher, T)
 *   teacher_temp  CosineScheduler(teacher_temp, teacher_temp, Wt, Wt, warmup_teacher_temp)
 *                 (a pure linear ramp over Wt = warmup_teacher_temp_iters, then teacher_temp)
 *   last_layer_lr the lr schedule with the first freeze_last_layer_iters values set to 0
 *   T = epochs · OFFICIAL_EPOCH_LENGTH.
 *
 * Example:
 *   dv_schedules s; DV_TRY(sched_init_official(&s, &cfg));
 *   double lr = cosine_sched_at(&s.lr, it), tt = cosine_sched_at(&s.teacher_temp, it);
 */
#ifndef DV_COSINE_SCHED_H
#define DV_COSINE_SCHED_H

#include <stdint.h>

#include "config.h"

typedef struct {
    double base, final, start_warmup;
    int64_t total_iters, warmup_iters, freeze_iters;
    int64_t zero_prefix; /* schedule[:zero_prefix] = 0 applied after construction */
} dv_cosine_sched;

/* Fails (DV_ERR_ARG) where the official constructor's assert would: total < warmup + freeze, or a
 * negative count. */
int cosine_sched_init(dv_cosine_sched *s, double base, double final, int64_t total_iters,
                      int64_t warmup_iters, double start_warmup, int64_t freeze_iters);

/* schedule[it] (it ≥ 0). */
double cosine_sched_at(const dv_cosine_sched *s, int64_t it);

typedef struct {
    dv_cosine_sched lr, wd, momentum, teacher_temp, last_layer_lr;
} dv_schedules;

/* build_schedulers of the official train.py from a finalized config (c->derived). */
int sched_init_official(dv_schedules *s, const dv_config *c);

#endif
