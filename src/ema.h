/* ema — the teacher EMA of SSLMetaArch.update_teacher over a flat buffer (a whole module or this
 * rank's shard of it):
 *   teacher ← teacher · m;   teacher ← teacher + (1 − m) · student
 * (torch._foreach_mul_ then torch._foreach_add_(alpha = 1 − m), in fp32 with m and 1 − m rounded to
 * fp32 once, as torch does with Python scalars), m = momentum_schedule[it]. OpenMP over elements.
 *
 * Example:
 *   ema_update(teacher_shard, student_shard, shard_numel, cosine_sched_at(&s.momentum, it));
 */
#ifndef DV_EMA_H
#define DV_EMA_H

#include <stdint.h>

void ema_update(float *teacher, const float *student, int64_t n, double momentum);

#endif
