/* cosine_sched — see cosine_sched.h. */
#include "cosine_sched.h"

#include <math.h>

#include "err.h"

int cosine_sched_init(dv_cosine_sched *s, double base, double final, int64_t total_iters,
                      int64_t warmup_iters, double start_warmup, int64_t freeze_iters) {
    if (!s || total_iters < 0 || warmup_iters < 0 || freeze_iters < 0 ||
        total_iters - warmup_iters - freeze_iters < 0)
        return DV_ERR(DV_ERR_ARG,
                      "cosine schedule: total_iters %lld < warmup %lld + freeze %lld (or negative)",
                      (long long)total_iters, (long long)warmup_iters, (long long)freeze_iters);
    s->base = base;
    s->final = final;
    s->start_warmup = start_warmup;
    s->total_iters = total_iters;
    s->warmup_iters = warmup_iters;
    s->freeze_iters = freeze_iters;
    s->zero_prefix = 0;
    return DV_OK;
}

/* numpy.linspace(start, stop, num)[i], endpoint=True, float64 */
static double linspace_at_(double start, double stop, int64_t num, int64_t i) {
    const int64_t div = num - 1;
    const double delta = stop - start;
    double y;
    if (div > 0) {
        const double step = delta / (double)div;
        if (step == 0.0)
            y = ((double)i / (double)div) * delta;
        else
            y = (double)i * step;
    } else {
        y = (double)i * delta;
    }
    y += start;
    if (num > 1 && i == num - 1) y = stop;
    return y;
}

double cosine_sched_at(const dv_cosine_sched *s, int64_t it) {
    if (it >= s->total_iters) return s->final;
    if (it < s->zero_prefix) return 0.0;
    if (it < s->freeze_iters) return 0.0;
    it -= s->freeze_iters;
    if (it < s->warmup_iters) return linspace_at_(s->start_warmup, s->base, s->warmup_iters, it);
    it -= s->warmup_iters;
    const int64_t n = s->total_iters - s->warmup_iters - s->freeze_iters;
    const double pi = 3.141592653589793; /* np.pi */
    return s->final + 0.5 * (s->base - s->final) * (1.0 + cos(pi * (double)it / (double)n));
}

int sched_init_official(dv_schedules *s, const dv_config *c) {
    if (!s || !c || !c->derived.finalized)
        return DV_ERR(DV_ERR_ARG, "sched_init_official: the config is not finalized");
    const dv_config_derived *d = &c->derived;
    DV_TRY(
        cosine_sched_init(&s->lr, d->lr, c->optim.min_lr, d->total_iters, d->warmup_iters, 0.0, 0));
    DV_TRY(cosine_sched_init(&s->wd, c->optim.weight_decay, c->optim.weight_decay_end,
                             d->total_iters, 0, 0.0, 0));
    DV_TRY(cosine_sched_init(&s->momentum, c->teacher.momentum_teacher,
                             c->teacher.final_momentum_teacher, d->total_iters, 0, 0.0, 0));
    DV_TRY(cosine_sched_init(&s->teacher_temp, c->teacher.teacher_temp, c->teacher.teacher_temp,
                             d->warmup_teacher_temp_iters, d->warmup_teacher_temp_iters,
                             c->teacher.warmup_teacher_temp, 0));
    s->last_layer_lr = s->lr;
    s->last_layer_lr.zero_prefix = d->freeze_last_layer_iters;
    return DV_OK;
}
