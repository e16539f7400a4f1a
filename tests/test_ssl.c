/* The SSL meta-architecture on a tiny model: the whole objective's gradient (teacher fixed)
 * against finite differences for parameters of the backbone and both heads; one step's AdamW +
 * EMA relation; training on a fixed batch lowers the loss; separate heads with softmax
 * centering; a non-finite loss stops the step before any update. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "err.h"
#include "masking.h"
#include "rng.h"
#include "ssl.h"
#include "tap.h"

static dv_config *tiny_config(const char *extra1, const char *extra2) {
    dv_config *c = malloc(sizeof *c);
    dv_config_defaults(c);
    char *kv[] = {"student.embed_dim=16", "student.depth=2", "student.num_heads=2",
                  "student.patch_size=4", "student.drop_path_rate=0.0", "student.layerscale=0.5",
                  "student.num_register_tokens=1", "crops.global_crops_size=16",
                  "crops.local_crops_size=8", "crops.local_crops_number=2",
                  "dino.head_n_prototypes=32", "dino.head_hidden_dim=24",
                  "dino.head_bottleneck_dim=8", "ibot.head_n_prototypes=24",
                  "ibot.head_hidden_dim=20", "ibot.head_bottleneck_dim=6",
                  "train.centering=sinkhorn_knopp", "train.batch_size_per_gpu=4",
                  "train.OFFICIAL_EPOCH_LENGTH=10", "optim.epochs=4", "optim.warmup_epochs=0",
                  "optim.freeze_last_layer_epochs=0", "teacher.warmup_teacher_temp_epochs=0",
                  "optim.base_lr=0.3", "ibot.mask_sample_probability=0.5",
                  (char *)extra1, (char *)extra2};
    int n = 25 + (extra1 != NULL) + (extra2 != NULL);
    if (dv_config_apply_overrides(c, n, kv) != DV_OK || dv_config_finalize(c, 1) != DV_OK) {
        printf("Bail out! tiny config\n");
        exit(1);
    }
    return c;
}

typedef struct {
    dv_batch b;
    dv_mask_batch mb;
} test_batch;

static void make_batch(test_batch *t, const dv_config *c, uint64_t seed) {
    dv_batch *b = &t->b;
    memset(b, 0, sizeof *b);
    b->B = c->train.batch_size_per_gpu;
    b->L = c->crops.local_crops_number;
    b->G = c->crops.global_crops_size;
    b->l = c->crops.local_crops_size;
    const int p = (int)c->student.patch_size, g = (int)(b->G / p);
    b->N = (int64_t)g * g;
    b->global_crops = malloc(sizeof(float) * (size_t)(2 * b->B * 3 * b->G * b->G));
    b->local_crops = malloc(sizeof(float) * (size_t)(b->L * b->B * 3 * b->l * b->l));
    dv_rng r;
    dv_rng_init(&r, seed, DV_RNG_TEST, 0, 0);
    for (int64_t i = 0; i < 2 * b->B * 3 * b->G * b->G; i++) b->global_crops[i] = (float)dv_rng_normal(&r);
    for (int64_t i = 0; i < b->L * b->B * 3 * b->l * b->l; i++) b->local_crops[i] = (float)dv_rng_normal(&r);
    dv_mask_gen mg;
    dv_mask_gen_init(&mg, g, g, dv_mask_max_num_patches((int)b->G, p));
    dv_mask_batch_alloc(&t->mb, (int)(2 * b->B), (int)b->N);
    dv_mask_collate(&mg, c->ibot.mask_ratio_min_max[0], c->ibot.mask_ratio_min_max[1],
                    c->ibot.mask_sample_probability, seed, 0, 0, &t->mb);
    b->masks = t->mb.masks;
    b->mask_indices = t->mb.indices;
    b->mask_weights = t->mb.weights;
    b->n_masked = t->mb.n_masked_patches;
    b->upperbound = t->mb.upperbound;
}

static void free_batch(test_batch *t) {
    free(t->b.global_crops);
    free(t->b.local_crops);
    dv_mask_batch_free(&t->mb);
}

/* The official init makes the heads' bottleneck tiny (weights 0.02), where the L2 normalisation
 * is so curved that central differences need eps < 1e-4, below fp32 resolution. Give the FD
 * check a well-conditioned point instead: heads' MLP weights ×15, tokens N(0, 0.5). */
static void condition_weights(dv_ssl *s) {
    dv_rng r;
    dv_rng_init(&r, 99, DV_RNG_TEST, 1, 0);
    for (int mi = 0; mi < DV_MOD_COUNT; mi++) {
        dv_ssl_module *m = &s->mod[mi];
        if (!m->present) continue;
        for (int ti = 0; ti < m->tab->n; ti++) {
            const dv_param *p = &m->tab->t[ti];
            float *w = m->student + p->offset;
            if (mi != DV_MOD_BACKBONE && strncmp(p->name, "mlp.", 4) == 0 && strstr(p->name, ".weight"))
                for (size_t k = 0; k < p->numel; k++) w[k] *= 15.0f;
            if (strstr(p->name, "_token"))
                for (size_t k = 0; k < p->numel; k++) w[k] = (float)(0.5 * dv_rng_normal(&r));
        }
        memcpy(m->teacher, m->student, m->numel * sizeof(float));
    }
}

/* FD of the total loss w.r.t. a few parameters of every module (teacher fixed, no drop path). */
static void check_gradients(dv_ssl *s, const dv_batch *b, const char *label) {
    dv_ssl_stats st;
    condition_weights(s);
    int rc = dv_ssl_forward_backward(s, b, 5, &st);
    tap_ok(rc == DV_OK && isfinite(st.total), "%s: forward/backward runs (total %.6f, %lld masked)",
           label, st.total, (long long)st.n_masked);
    for (int mi = 0; mi < DV_MOD_COUNT; mi++) {
        dv_ssl_module *m = &s->mod[mi];
        if (!m->present) continue;
        float *grad = malloc(m->numel * sizeof *grad);
        memcpy(grad, m->grad, m->numel * sizeof *grad);
        double worst = 0, gmax = 0;
        for (int ti = 0; ti < m->tab->n; ti++) { /* one element of every tensor */
            const dv_param *p = &m->tab->t[ti];
            const size_t k = p->offset + (p->numel * 7 / 11);
            const float keep = m->student[k];
            const double eps = 1e-3 * fmax(1.0, fabs(keep));
            dv_ssl_stats sp, sm;
            m->student[k] = (float)(keep + eps);
            dv_ssl_forward_backward(s, b, 5, &sp);
            m->student[k] = (float)(keep - eps);
            dv_ssl_forward_backward(s, b, 5, &sm);
            m->student[k] = keep;
            const double num = (sp.total - sm.total) / (2 * eps);
            worst = fmax(worst, fabs(num - grad[k]));
            if (fabs(num - grad[k]) > 2e-2 * fabs(num) + 1e-3)
                tap_diag("%s %s: numeric %.6g analytic %.6g", dv_module_names[mi], p->name, num, grad[k]);
            gmax = fmax(gmax, fabs(num));
        }
        /* fp32 forward, eps 1e-3: absolute error bounded by 2e-2 of the largest gradient + 1e-3 */
        tap_ok(worst <= 2e-2 * gmax + 1e-3, "%s: %s gradient vs finite differences (max err %.2e, "
               "max |grad| %.2e)", label, dv_module_names[mi], worst, gmax);
        free(grad);
    }
}

int main(void) {
    tap_no_plan();
    /* shared head, Sinkhorn-Knopp */
    dv_config *c = tiny_config(NULL, NULL);
    dv_ssl s;
    int rc = dv_ssl_create(&s, c, c->train.batch_size_per_gpu);
    tap_ok(rc == DV_OK, "create the tiny shared-head model");
    test_batch tb;
    make_batch(&tb, c, 11);
    tap_ok(tb.b.n_masked > 0 && tb.b.n_masked <= s.max_masked, "masked tokens %lld <= bound %lld",
           (long long)tb.b.n_masked, (long long)s.max_masked);
    check_gradients(&s, &tb.b, "shared head");

    /* one step: AdamW then EMA with the momentum of iteration 0 */
    dv_ssl_module *bb = &s.mod[DV_MOD_BACKBONE];
    float *t_before = malloc(bb->numel * sizeof *t_before);
    memcpy(t_before, bb->teacher, bb->numel * sizeof *t_before);
    dv_ssl_stats st0, st;
    rc = dv_ssl_step(&s, &tb.b, &st0);
    double err = 0;
    for (size_t i = 0; i < bb->numel; i++) {
        double want = st0.momentum * t_before[i] + (1 - st0.momentum) * bb->student[i];
        err = fmax(err, fabs(want - bb->teacher[i]));
    }
    tap_ok(rc == DV_OK && s.step == 1 && err < 1e-6, "step: teacher = m*teacher + (1-m)*student "
           "(m %.4f, max err %.1e)", st0.momentum, err);
    tap_ok(st0.lr > 0 && st0.grad_norm[0] > 0 && st0.grad_norm[1] > 0,
           "step reports lr %.4g and grad norms %.3g / %.3g", st0.lr, st0.grad_norm[0], st0.grad_norm[1]);
    for (int i = 0; i < 29; i++) rc |= dv_ssl_step(&s, &tb.b, &st);
    tap_ok(rc == DV_OK && st.total < st0.total, "30 steps on one batch lower the loss: %.4f -> %.4f",
           st0.total, st.total);
    free(t_before);
    dv_ssl_free(&s);
    free_batch(&tb);
    free(c);

    /* separate heads, softmax centering with the one-step-late centre */
    c = tiny_config("ibot.separate_head=true", "train.centering=centering");
    rc = dv_ssl_create(&s, c, c->train.batch_size_per_gpu);
    tap_ok(rc == DV_OK && s.mod[DV_MOD_IBOT_HEAD].present, "create the separate-head model");
    make_batch(&tb, c, 12);
    rc = dv_ssl_step(&s, &tb.b, &st);
    tap_ok(rc == DV_OK && s.center_dino.has_pending && s.center_ibot.has_pending,
           "softmax centering leaves a pending centre update after a step");
    float c0 = s.center_dino.center[0];
    rc = dv_ssl_step(&s, &tb.b, &st);
    tap_ok(rc == DV_OK && s.center_dino.center[0] != c0, "the centre moves one step late");
    /* the centre update is part of the teacher: freeze it for the FD check by using one more
     * forward_backward per evaluation (Sinkhorn has no state; centering has) — check only the
     * step runs and gradients exist for all three modules */
    tap_ok(st.grad_norm[DV_MOD_IBOT_HEAD] > 0, "the iBOT head gets gradients (norm %.3g)",
           st.grad_norm[DV_MOD_IBOT_HEAD]);
    dv_ssl_free(&s);
    free_batch(&tb);
    free(c);

    c = tiny_config("ibot.separate_head=true", NULL);
    dv_ssl_create(&s, c, c->train.batch_size_per_gpu);
    make_batch(&tb, c, 13);
    check_gradients(&s, &tb.b, "separate heads");

    /* a NaN weight: the step stops with DV_ERR_NUMERIC and changes nothing */
    memcpy(s.mod[DV_MOD_DINO_HEAD].student, s.mod[DV_MOD_DINO_HEAD].teacher,
           s.mod[DV_MOD_DINO_HEAD].numel * sizeof(float));
    s.mod[DV_MOD_DINO_HEAD].student[0] = NAN;
    bb = &s.mod[DV_MOD_BACKBONE];
    float *keep = malloc(bb->numel * sizeof *keep);
    memcpy(keep, bb->student, bb->numel * sizeof *keep);
    fflush(stderr);
    rc = dv_ssl_step(&s, &tb.b, &st);
    tap_ok(rc == DV_ERR_NUMERIC && s.step == 0 &&
           memcmp(keep, bb->student, bb->numel * sizeof *keep) == 0,
           "a NaN loss stops the step before any update");
    free(keep);
    dv_ssl_free(&s);
    free_batch(&tb);
    free(c);
    return tap_exit();
}
