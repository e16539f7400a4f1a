/* test_optim — AdamW, the official schedules, parameter groups (layer-wise lr decay), the teacher
 * EMA and per-module gradient clipping.
 *
 *   AdamW: 6 steps on 4 tensors (different lr/wd multipliers, a last layer frozen for 2 steps)
 *     against a double-precision reference of torch.optim.AdamW's formula; tolerance max |err| <=
 *     1e-5 x max |ref| per buffer (fp32 vs double over 6 steps); a sharded update
 *     (adamw_ranges_clip on two shards) is bit-identical to the whole-buffer update.
 *   Schedules for the official default config (dv_config_defaults, finalized for 16 ranks of
 *     64 images: lr = 0.004, T = 125000, warmup 12500, freeze last layer 1250, teacher-temp
 *     warmup 37500): key indices against closed forms (1e-12 relative), exact values where
 *     numpy's linspace makes them exact (warmup end = base).
 *   Parameter groups of a 12-block ViT (names of the official state dict) and of a head.
 *   EMA against t·m + (1−m)·s; clipping against a double reference; the reduction hook with a
 *   fake 2-rank hook that doubles every sum.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adamw.h"
#include "params.h"
#include "clip.h"
#include "config.h"
#include "cosine_sched.h"
#include "ema.h"
#include "err.h"
#include "tap.h"

typedef struct {
    uint64_t s;
} rng_t;

static uint32_t rng_u32(rng_t *r) { /* splitmix64 */
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return (uint32_t)((z ^ (z >> 31)) >> 32);
}
static float urand(rng_t *r) { return (float)(rng_u32(r) / 4294967296.0 * 2.0 - 1.0); }
static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        printf("Bail out! out of memory\n");
        exit(99);
    }
    return p;
}
static int close_rel(double got, double want, double rel) {
    return fabs(got - want) <= rel * fmax(fabs(want), 1e-300);
}

/* ---- AdamW -------------------------------------------------------------------------------- */

static void test_adamw(rng_t *r) {
    enum { N = 103, STEPS = 6 };
    const dv_adamw_range ranges[4] = {
        {0, 40, 0.9 * 0.9, 1.0, 0},   /* a decayed weight of an early layer */
        {40, 13, 1.0, 0.0, 0},        /* a bias: no weight decay */
        {53, 30, 0.2 * 0.81, 1.0, 0}, /* patch_embed-like multiplier */
        {83, 20, 1.0, 1.0, 1},        /* last layer */
    };
    float *p = xmalloc(N * 4), *m = xmalloc(N * 4), *v = xmalloc(N * 4), *g = xmalloc(N * 4);
    float *ps = xmalloc(N * 4), *ms = xmalloc(N * 4), *vs = xmalloc(N * 4);
    double *pd = xmalloc(N * 8), *md = xmalloc(N * 8), *vd = xmalloc(N * 8);
    for (int i = 0; i < N; i++) {
        p[i] = ps[i] = urand(r);
        pd[i] = p[i];
        m[i] = v[i] = ms[i] = vs[i] = 0.0f;
        md[i] = vd[i] = 0.0;
    }
    double p_last = pd[90];
    int frozen_ok = 1, shard_ok = 1, rc = DV_OK;
    for (int t = 1; t <= STEPS; t++) {
        for (int i = 0; i < N; i++) g[i] = urand(r) * (1.0f + (float)t);
        dv_adamw_hparams hp = adamw_default_hparams();
        hp.lr = 1e-2 * t;
        hp.last_layer_lr = t <= 2 ? 0.0 : 5e-3;
        hp.weight_decay = 0.04 + 0.01 * t;
        hp.step = t;
        rc |= adamw_step(p, m, v, g, ranges, 4, &hp);
        /* the same update on two shards [0, 50) and [50, N) */
        for (int s = 0; s < 2; s++) {
            const int64_t lo = s ? 50 : 0, hi = s ? N : 50;
            dv_adamw_range sr[4];
            const int64_t ns = adamw_ranges_clip(sr, ranges, 4, lo, hi);
            rc |= adamw_step(ps + lo, ms + lo, vs + lo, g + lo, sr, ns, &hp);
        }
        /* double reference of torch.optim.AdamW */
        for (int k = 0; k < 4; k++) {
            const dv_adamw_range *rg = &ranges[k];
            const double lr = (rg->is_last_layer ? hp.last_layer_lr : hp.lr) * rg->lr_mult;
            const double wd = hp.weight_decay * rg->wd_mult;
            const double bc1 = 1.0 - pow(0.9, t), bc2 = 1.0 - pow(0.999, t);
            for (int64_t i = rg->offset; i < rg->offset + rg->numel; i++) {
                pd[i] *= 1.0 - lr * wd;
                md[i] = 0.9 * md[i] + 0.1 * g[i];
                vd[i] = 0.999 * vd[i] + 0.001 * (double)g[i] * g[i];
                pd[i] -= lr / bc1 * md[i] / (sqrt(vd[i]) / sqrt(bc2) + 1e-8);
            }
        }
        if (t <= 2) frozen_ok &= p[90] == (float)p_last && m[90] != 0.0f && v[90] != 0.0f;
        for (int i = 0; i < N; i++) shard_ok &= p[i] == ps[i] && m[i] == ms[i] && v[i] == vs[i];
    }
    /* max |err| / max |ref| per buffer */
    double ep = 0.0, em = 0.0, ev = 0.0, sp = 0.0, sm = 0.0, sv = 0.0;
    for (int i = 0; i < N; i++) {
        ep = fmax(ep, fabs(p[i] - pd[i])), sp = fmax(sp, fabs(pd[i]));
        em = fmax(em, fabs(m[i] - md[i])), sm = fmax(sm, fabs(md[i]));
        ev = fmax(ev, fabs(v[i] - vd[i])), sv = fmax(sv, fabs(vd[i]));
    }
    ep /= sp, em /= sm, ev /= sv;
    tap_diag("adamw after %d steps: max err / max ref: param %.2e, exp_avg %.2e, exp_avg_sq %.2e",
             STEPS, ep, em, ev);
    tap_ok(rc == DV_OK && ep <= 1e-5 && em <= 1e-5 && ev <= 1e-5,
           "adamw (decoupled wd, bias corrections, lr/wd multipliers) matches the double "
           "reference");
    tap_ok(frozen_ok, "adamw: last layer with lr 0 is unchanged while its moments accumulate");
    tap_ok(shard_ok, "adamw on two shards (adamw_ranges_clip) is bit-identical to the whole");
    dv_adamw_range out[4];
    const int64_t nc = adamw_ranges_clip(out, ranges, 4, 45, 60);
    tap_ok(nc == 2 && out[0].offset == 0 && out[0].numel == 8 && out[1].offset == 8 &&
               out[1].numel == 7 && out[1].lr_mult == ranges[2].lr_mult,
           "adamw_ranges_clip rebases and trims ranges to a shard");
    free(p), free(m), free(v), free(g), free(ps), free(ms), free(vs), free(pd), free(md), free(vd);
}

/* ---- schedules ---------------------------------------------------------------------------- */

static void test_sched(void) {
    dv_config c;
    dv_config_defaults(&c);
    int rc = dv_config_finalize(&c, 16);
    dv_schedules s;
    if (rc == DV_OK) rc = sched_init_official(&s, &c);
    const int64_t T = c.derived.total_iters, Wu = c.derived.warmup_iters;
    const int64_t F = c.derived.freeze_last_layer_iters, Wt = c.derived.warmup_teacher_temp_iters;
    const double lr = c.derived.lr, min_lr = c.optim.min_lr;
    tap_ok(rc == DV_OK && T == 125000 && Wu == 12500 && F == 1250 && Wt == 37500 && lr == 0.004,
           "default config on 16x64: T %lld, warmup %lld, freeze %lld, teacher warmup %lld, "
           "lr %g",
           (long long)T, (long long)Wu, (long long)F, (long long)Wt, lr);
    if (rc != DV_OK) {
        tap_skip(9, "no schedules");
        return;
    }
    const double pi = 3.141592653589793;
    const int64_t n = T - Wu;
    /* lr: linear warmup 0 → lr over Wu points (numpy linspace includes both ends) */
    int ok =
        cosine_sched_at(&s.lr, 0) == 0.0 && cosine_sched_at(&s.lr, Wu - 1) == lr &&
        close_rel(cosine_sched_at(&s.lr, 1000), 1000.0 * lr / (double)(Wu - 1), 1e-12) &&
        close_rel(cosine_sched_at(&s.lr, Wu), lr, 1e-12) &&
        close_rel(cosine_sched_at(&s.lr, Wu + n / 2),
                  min_lr + 0.5 * (lr - min_lr) * (1.0 + cos(pi * (double)(n / 2) / n)), 1e-12) &&
        close_rel(cosine_sched_at(&s.lr, Wu + n / 2), (lr + min_lr) / 2, 1e-9) &&
        close_rel(cosine_sched_at(&s.lr, T - 1),
                  min_lr + 0.5 * (lr - min_lr) * (1.0 + cos(pi * (double)(n - 1) / n)), 1e-12) &&
        cosine_sched_at(&s.lr, T - 1) > min_lr && cosine_sched_at(&s.lr, T) == min_lr &&
        cosine_sched_at(&s.lr, T + 99) == min_lr;
    tap_diag("lr: [0] %g [1000] %.12g [%lld] %.12g [%lld] %.12g [%lld] %.12g [%lld] %g", 0.0,
             cosine_sched_at(&s.lr, 1000), (long long)(Wu - 1), cosine_sched_at(&s.lr, Wu - 1),
             (long long)(Wu + n / 2), cosine_sched_at(&s.lr, Wu + n / 2), (long long)(T - 1),
             cosine_sched_at(&s.lr, T - 1), (long long)T, cosine_sched_at(&s.lr, T));
    tap_ok(ok, "lr schedule: 0 at 0, linear warmup ending exactly at lr, cosine to min_lr");
    /* wd: cosine 0.04 → 0.4 over T, no warmup */
    ok = cosine_sched_at(&s.wd, 0) == 0.4 + 0.5 * (0.04 - 0.4) * 2.0 && /* not exactly 0.04 */
         close_rel(cosine_sched_at(&s.wd, 0), 0.04, 1e-12) &&
         close_rel(cosine_sched_at(&s.wd, T / 2), 0.22, 1e-12) &&
         close_rel(cosine_sched_at(&s.wd, 31250),
                   0.4 + 0.5 * (0.04 - 0.4) * (1.0 + cos(pi * 31250.0 / (double)T)), 1e-12) &&
         cosine_sched_at(&s.wd, T) == 0.4;
    tap_ok(ok, "wd schedule: cosine 0.04 -> 0.4 (mid %.12g)", cosine_sched_at(&s.wd, T / 2));
    ok = close_rel(cosine_sched_at(&s.momentum, 0), 0.992, 1e-15) &&
         close_rel(cosine_sched_at(&s.momentum, T / 2), 0.996, 1e-12) &&
         cosine_sched_at(&s.momentum, T - 1) < 1.0 && cosine_sched_at(&s.momentum, T) == 1.0;
    tap_ok(ok, "momentum schedule: cosine 0.992 -> 1");
    /* teacher temp: linspace(0.04, 0.07, Wt) then 0.07 */
    ok = cosine_sched_at(&s.teacher_temp, 0) == 0.04 &&
         cosine_sched_at(&s.teacher_temp, Wt - 1) == 0.07 &&
         cosine_sched_at(&s.teacher_temp, 100) ==
             100.0 * ((0.07 - 0.04) / (double)(Wt - 1)) + 0.04 &&
         close_rel(cosine_sched_at(&s.teacher_temp, (Wt - 1) / 2),
                   0.04 + 0.03 * (double)((Wt - 1) / 2) / (double)(Wt - 1), 1e-12) &&
         cosine_sched_at(&s.teacher_temp, Wt) == 0.07 &&
         cosine_sched_at(&s.teacher_temp, T) == 0.07;
    tap_ok(ok, "teacher temp: linear 0.04 -> 0.07 over %lld iterations, then 0.07", (long long)Wt);
    /* last-layer lr: the lr schedule with [0, F) zeroed */
    ok = 1;
    for (int64_t it = 0; it < F; it++) ok &= cosine_sched_at(&s.last_layer_lr, it) == 0.0;
    ok &= cosine_sched_at(&s.lr, F - 1) > 0.0;
    for (int64_t it = F; it < T + 2; it += 997)
        ok &= cosine_sched_at(&s.last_layer_lr, it) == cosine_sched_at(&s.lr, it);
    ok &= cosine_sched_at(&s.last_layer_lr, F) == cosine_sched_at(&s.lr, F) &&
          cosine_sched_at(&s.last_layer_lr, T) == min_lr;
    tap_ok(ok, "last-layer lr: 0 for the first %lld iterations, then the lr schedule",
           (long long)F);

    /* generic CosineScheduler: freeze prefix, constant linspace (step 0), one-point warmup */
    dv_cosine_sched cs;
    rc = cosine_sched_init(&cs, 1.0, 0.5, 10, 3, 0.25, 2);
    ok = rc == DV_OK && cosine_sched_at(&cs, 0) == 0.0 && cosine_sched_at(&cs, 1) == 0.0 &&
         cosine_sched_at(&cs, 2) == 0.25 && cosine_sched_at(&cs, 3) == 0.625 &&
         cosine_sched_at(&cs, 4) == 1.0 && cosine_sched_at(&cs, 5) == 1.0 &&
         close_rel(cosine_sched_at(&cs, 9), 0.5 + 0.25 * (1.0 + cos(pi * 4.0 / 5.0)), 1e-15) &&
         cosine_sched_at(&cs, 10) == 0.5;
    rc = cosine_sched_init(&cs, 0.3, 0.3, 4, 4, 0.3, 0);
    ok &= rc == DV_OK && cosine_sched_at(&cs, 2) == 0.3 && cosine_sched_at(&cs, 7) == 0.3;
    rc = cosine_sched_init(&cs, 2.0, 1.0, 5, 1, 0.5, 0);
    ok &= rc == DV_OK && cosine_sched_at(&cs, 0) == 0.5 && cosine_sched_at(&cs, 1) == 2.0;
    tap_ok(ok, "CosineScheduler: freeze zeros, linspace ends, constant and one-point warmups");
    tap_ok(cosine_sched_init(&cs, 1.0, 0.0, 5, 4, 0.0, 2) == DV_ERR_ARG,
           "CosineScheduler: total < warmup + freeze is refused (the official assert)");
}

/* ---- parameter groups --------------------------------------------------------------------- */

static void test_param_groups(void) {
    const char *names[] = {"cls_token",
                           "pos_embed",
                           "mask_token",
                           "register_tokens",
                           "patch_embed.proj.weight",
                           "patch_embed.proj.bias",
                           "blocks.0.norm1.weight",
                           "blocks.0.attn.qkv.weight",
                           "blocks.0.attn.qkv.bias",
                           "blocks.0.ls1.gamma",
                           "blocks.5.mlp.fc1.weight",
                           "blocks.11.mlp.fc2.weight",
                           "norm.weight",
                           "norm.bias"};
    const double d = 0.9;
    const double want_lr[] = {
        pow(d, 13),       pow(d, 13), pow(d, 13), 1.0,        0.2 * pow(d, 13),
        0.2 * pow(d, 13), pow(d, 12), pow(d, 12), pow(d, 12), pow(d, 12),
        pow(d, 7),        d,          1.0,        1.0};
    const double want_wd[] = {1, 1, 1, 1, 1, 0, 0, 1, 0, 0, 1, 1, 0, 0};
    enum { NB = 14 };
    /* the groups come from the parameter table (src/params.h), as the trainer builds them */
    dv_param_table tab;
    dv_params_init(&tab, 12);
    double lm[NB], wm[NB];
    int rc = DV_OK, ok = 1;
    for (int i = 0; i < NB; i++) {
        const int64_t one = 1;
        rc |= dv_params_add(&tab, names[i], 1, &one, -1, 0, NULL);
    }
    for (int i = 0; rc == DV_OK && i < NB; i++) {
        lm[i] = dv_param_lr_mult(&tab.t[i], 12, d, 0.2);
        wm[i] = dv_param_wd_mult(&tab.t[i]);
        const int good = close_rel(lm[i], want_lr[i], 1e-15) && wm[i] == want_wd[i] &&
                         !(tab.t[i].flags & DV_PARAM_LAST_LAYER);
        if (!good)
            tap_diag("%s: lr_mult %.15g (want %.15g), wd_mult %g (want %g)", names[i], lm[i],
                     want_lr[i], wm[i], want_wd[i]);
        ok &= good;
    }
    dv_params_free(&tab);
    tap_diag("12 blocks, decay 0.9: block 0 %.6g, block 11 %.6g, cls/pos %.6g, patch_embed %.6g",
             lm[6], lm[11], lm[0], lm[4]);
    tap_ok(rc == DV_OK && ok, "LLRD of a 12-block ViT: 0.9^(13 - layer_id), patch_embed x0.2, no "
                              "wd on bias/norm/gamma (register_tokens: layer 13 as the official rule)");
    const char *head[] = {"mlp.0.weight", "mlp.0.bias", "last_layer.weight_g",
                          "last_layer.weight_v"};
    dv_params_init(&tab, 0);
    rc = DV_OK;
    for (int i = 0; i < 4; i++) {
        const int64_t one = 1;
        rc |= dv_params_add(&tab, head[i], 1, &one, -1, 0, NULL);
    }
    for (int i = 0; rc == DV_OK && i < 4; i++) {
        lm[i] = dv_param_lr_mult(&tab.t[i], 0, d, 0.2);
        wm[i] = dv_param_wd_mult(&tab.t[i]);
    }
    ok = rc == DV_OK && lm[0] == 1.0 && lm[1] == 1.0 && lm[2] == 1.0 && lm[3] == 1.0 &&
         wm[0] == 1.0 && wm[1] == 0.0 && wm[2] == 1.0 && wm[3] == 1.0 &&
         !(tab.t[0].flags & DV_PARAM_LAST_LAYER) && (tab.t[2].flags & DV_PARAM_LAST_LAYER) &&
         (tab.t[3].flags & DV_PARAM_LAST_LAYER);
    dv_params_free(&tab);
    tap_ok(ok, "head groups: lr_mult 1, last_layer.weight_g/v are last-layer and decayed");
}

/* ---- EMA ---------------------------------------------------------------------------------- */

static void test_ema(rng_t *r) {
    enum { N = 1001 };
    float *t = xmalloc(N * 4), *s = xmalloc(N * 4), *t0 = xmalloc(N * 4);
    for (int i = 0; i < N; i++) t[i] = t0[i] = urand(r), s[i] = urand(r);
    const double m = 0.9965;
    ema_update(t, s, N, m);
    double e = 0.0;
    for (int i = 0; i < N; i++) e = fmax(e, fabs(t[i] - (m * t0[i] + (1 - m) * s[i])));
    tap_ok(e <= 2e-7, "ema: teacher = m*teacher + (1-m)*student (max err %.2g)", e);
    memcpy(t, t0, N * 4);
    ema_update(t, s, N, 1.0);
    int same = !memcmp(t, t0, N * 4);
    ema_update(t, s, N, 0.0);
    same &= !memcmp(t, s, N * 4);
    tap_ok(same, "ema: m = 1 keeps the teacher, m = 0 copies the student (bit-exact)");
    free(t), free(s), free(t0);
}

/* ---- clipping and the reduction hook -------------------------------------------------------- */

typedef struct {
    int calls;
    int64_t last_count;
} fake_comm;

static int fake_sum(void *ctx, double *buf, int64_t count) { /* 2 ranks holding the same data */
    fake_comm *c = ctx;
    c->calls++;
    c->last_count = count;
    for (int64_t i = 0; i < count; i++) buf[i] *= 2.0;
    return DV_OK;
}

static void test_clip(rng_t *r) {
    enum { N = 70001 };
    float *g = xmalloc(N * 4), *g0 = xmalloc(N * 4), *gg = xmalloc(2 * N * 4);
    for (int i = 0; i < N; i++) g[i] = g0[i] = 0.05f * urand(r);
    double ref = 0.0;
    for (int i = 0; i < N; i++) ref += (double)g0[i] * g0[i];
    ref = sqrt(ref);
    double norm = 0.0;
    int rc = clip_grad_norm(&norm, g, N, 3.0, NULL, NULL);
    double e = 0.0, after = 0.0;
    const double coef = 3.0 / (ref + 1e-6);
    for (int i = 0; i < N; i++) {
        e = fmax(e, fabs(g[i] - g0[i] * coef));
        after += (double)g[i] * g[i];
    }
    tap_diag("clip: norm %.9g (ref %.9g), after clipping %.9g", norm, ref, sqrt(after));
    tap_ok(rc == DV_OK && close_rel(norm, ref, 1e-12) && ref > 3.0 && e <= 1e-7 &&
               close_rel(sqrt(after), 3.0, 1e-5),
           "clip_grad_norm: norm, scaled by 3/(norm+1e-6) when above 3");
    memcpy(g, g0, N * 4);
    rc = clip_grad_norm(&norm, g, N, 100.0, NULL, NULL);
    tap_ok(rc == DV_OK && !memcmp(g, g0, N * 4) && close_rel(norm, ref, 1e-12),
           "clip_grad_norm: no scaling below the threshold");
    rc = clip_grad_norm(&norm, g, N, 0.0, NULL, NULL);
    tap_ok(rc == DV_OK && !memcmp(g, g0, N * 4) && close_rel(norm, ref, 1e-12),
           "clip_grad_norm: max_norm 0 only computes the norm");
    /* fake 2 ranks (each with g0) == one rank with [g0; g0] */
    fake_comm fc = {0, 0};
    double n2 = 0.0, n1 = 0.0;
    rc = clip_grad_norm(&n2, g, N, 3.0, fake_sum, &fc);
    memcpy(gg, g0, N * 4);
    memcpy(gg + N, g0, N * 4);
    rc |= clip_grad_norm(&n1, gg, 2 * N, 3.0, NULL, NULL);
    tap_ok(rc == DV_OK && close_rel(n2, n1, 1e-12) && close_rel(n2, sqrt(2.0) * ref, 1e-12) &&
               !memcmp(g, gg, N * 4) && fc.calls == 1 && fc.last_count == 1,
           "clip_grad_norm with a doubling 2-rank hook == doubled batch (one call, count 1)");
    free(g), free(g0), free(gg);
}

int main(void) {
    rng_t r = {2024};
    tap_no_plan();
    test_adamw(&r);
    test_sched();
    test_param_groups();
    test_ema(&r);
    test_clip(&r);
    return tap_exit();
}
