/* ssl — see ssl.h. */
#include "ssl.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clip.h"
#include "dino_loss.h"
#include "err.h"
#include "ibot_loss.h"
#include "koleo.h"
#include "loader.h"
#include "rng.h"
#include "sinkhorn.h"

#define STUDENT_TEMP 0.1 /* hard-coded in the official DINO and iBOT losses */

const char *const dv_module_names[DV_MOD_COUNT] = {"backbone", "dino_head", "ibot_head"};

int dv_ssl_vit_config(const dv_config *c, dv_vit_config *vc) {
    static const char *const arch[] = {"vit_small", "vit_base", "vit_large", "vit_giant2"};
    DV_TRY(dv_vit_config_preset(vc, arch[c->student.arch], c->student.patch_size));
    vc->embed_dim = c->derived.embed_dim;
    vc->depth = c->derived.depth;
    vc->num_heads = c->derived.num_heads;
    vc->mlp_ratio = c->student.mlp_ratio;
    vc->ffn = c->student.ffn_layer == DV_CFG_FFN_MLP        ? DV_FFN_MLP
              : c->student.ffn_layer == DV_CFG_FFN_IDENTITY ? DV_FFN_IDENTITY
                                                            : DV_FFN_SWIGLU;
    vc->ffn_hidden = 0;
    vc->num_register_tokens = c->student.num_register_tokens;
    vc->img_size = c->crops.global_crops_size;
    vc->layerscale = c->student.layerscale;
    vc->qkv_bias = c->student.qkv_bias;
    vc->proj_bias = c->student.proj_bias;
    vc->ffn_bias = c->student.ffn_bias;
    vc->interpolate_offset = c->student.interpolate_offset;
    vc->interpolate_antialias = c->student.interpolate_antialias;
    vc->drop_path_rate = c->student.drop_path_rate;
    vc->drop_path_uniform = c->student.drop_path_uniform;
    return dv_vit_config_finalize(vc);
}

/* ---- allocation ------------------------------------------------------------------------------ */

static int module_alloc_(dv_ssl_module *m, const dv_param_table *tab, const dv_config *c,
                         int num_layers) {
    m->present = 1;
    m->tab = tab;
    m->numel = m->local_numel = tab->numel;
    float **bufs[5] = {&m->student, &m->teacher, &m->grad, &m->exp_avg, &m->exp_avg_sq};
    for (int i = 0; i < 5; i++) DV_CHECK_ALLOC(*bufs[i] = calloc(m->numel ? m->numel : 1, sizeof(float)));
    m->w_student = m->student;
    m->w_teacher = m->teacher;
    m->w_grad = m->grad;
    DV_CHECK_ALLOC(m->ranges = calloc((size_t)tab->n, sizeof *m->ranges));
    m->nranges = tab->n;
    for (int i = 0; i < tab->n; i++) {
        const dv_param *p = &tab->t[i];
        m->ranges[i].offset = (int64_t)p->offset;
        m->ranges[i].numel = (int64_t)p->numel;
        m->ranges[i].lr_mult = dv_param_lr_mult(p, num_layers, c->optim.layerwise_decay,
                                                c->optim.patch_embed_lr_mult);
        m->ranges[i].wd_mult = dv_param_wd_mult(p);
        m->ranges[i].is_last_layer = (p->flags & DV_PARAM_LAST_LAYER) != 0;
    }
    return DV_OK;
}

static void module_free_(dv_ssl_module *m) {
    if (m->sharded) {
        free(m->w_student);
        free(m->w_teacher);
        free(m->w_grad);
        dv_shard_plan_free(&m->plan);
    }
    free(m->student);
    free(m->teacher);
    free(m->grad);
    free(m->exp_avg);
    free(m->exp_avg_sq);
    free(m->ranges);
    memset(m, 0, sizeof *m);
}

void dv_ssl_free(dv_ssl *s) {
    for (int i = 0; i < DV_MOD_COUNT; i++) module_free_(&s->mod[i]);
    for (int h = 0; h < 2; h++) {
        dv_head_acts_free(&s->sh[h]);
        dv_head_acts_free(&s->th[h]);
        if (h == 0 || s->separate) dv_head_free(&s->head[h]);
    }
    dv_vit_acts_free(s->sa);
    dv_vit_acts_free(s->ta);
    dv_vit_free(&s->vit);
    center_free(&s->center_dino);
    center_free(&s->center_ibot);
    float *bufs[] = {s->t_in, s->t_out, s->p_dino, s->p_ibot, s->s_in, s->s_out,
                     s->d_out, s->d_in, s->d_norm, s->koleo_grad, s->tmp_cls, s->nos_stage};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    memset(s, 0, sizeof *s);
}

static float *falloc_(int64_t n) { return malloc((size_t)(n > 0 ? n : 1) * sizeof(float)); }

static int create_(dv_ssl *s, const dv_config *c, int64_t B) {
    s->cfg = c;
    s->be = dv_backend_cpu();
    s->world = 1;
    s->inject_inf_at = -1;
    dv_grad_scaler_init(&s->scaler, 0);
    s->B = B;
    s->L = c->crops.local_crops_number;
    s->G = c->crops.global_crops_size;
    s->l = c->crops.local_crops_size;
    const int64_t p = c->student.patch_size;
    s->N = (s->G / p) * (s->G / p);
    s->separate = c->ibot.separate_head;
    s->do_dino = c->dino.loss_weight > 0;
    s->do_koleo = s->do_dino && c->dino.koleo_loss_weight > 0;
    s->do_ibot = c->ibot.loss_weight > 0;

    dv_vit_config vc;
    DV_TRY(dv_ssl_vit_config(c, &vc));
    DV_TRY(dv_vit_init(&s->vit, &vc));
    s->D = vc.embed_dim;
    dv_head_config hc = {s->D, c->dino.head_n_prototypes, c->dino.head_nlayers,
                         c->dino.head_hidden_dim, c->dino.head_bottleneck_dim, 1};
    DV_TRY(dv_head_init(&s->head[0], &hc));
    s->K[0] = s->K[1] = hc.out_dim;
    if (s->separate) {
        dv_head_config ic = {s->D, c->ibot.head_n_prototypes, c->ibot.head_nlayers,
                             c->ibot.head_hidden_dim, c->ibot.head_bottleneck_dim, 1};
        DV_TRY(dv_head_init(&s->head[1], &ic));
        s->K[1] = ic.out_dim;
    }
    DV_TRY(module_alloc_(&s->mod[DV_MOD_BACKBONE], &s->vit.params, c, (int)vc.depth));
    DV_TRY(module_alloc_(&s->mod[DV_MOD_DINO_HEAD], &s->head[0].params, c, 0));
    if (s->separate) DV_TRY(module_alloc_(&s->mod[DV_MOD_IBOT_HEAD], &s->head[1].params, c, 0));

    /* official init, teacher = student */
    DV_TRY(dv_vit_init_weights(&s->vit, s->mod[DV_MOD_BACKBONE].student, (uint64_t)c->train.seed));
    DV_TRY(dv_head_init_weights(&s->head[0], s->mod[DV_MOD_DINO_HEAD].student,
                                (uint64_t)c->train.seed, DV_RNG_INIT + 0x1000));
    if (s->separate)
        DV_TRY(dv_head_init_weights(&s->head[1], s->mod[DV_MOD_IBOT_HEAD].student,
                                    (uint64_t)c->train.seed, DV_RNG_INIT + 0x2000));
    for (int i = 0; i < DV_MOD_COUNT; i++)
        if (s->mod[i].present)
            memcpy(s->mod[i].teacher, s->mod[i].student, s->mod[i].numel * sizeof(float));

    DV_TRY(center_init(&s->center_dino, s->K[0]));
    DV_TRY(center_init(&s->center_ibot, s->K[1]));
    DV_TRY(sched_init_official(&s->sched, c));

    /* the static bound of the official collate on the masked tokens of one rank's batch */
    /* (masks are drawn for the global batch, so one rank may get more than its share: the
     * loader's bound; it equals the official per-rank bound on one rank) */
    s->max_masked = dv_loader_mask_bound(B, (int)c->derived.world_size, (int)s->N,
                                         c->ibot.mask_ratio_min_max[0],
                                         c->ibot.mask_ratio_min_max[1],
                                         c->ibot.mask_sample_probability);

    const int64_t R = vc.num_register_tokens, gl = s->l / p;
    const int64_t t_tokens = 2 * B * (1 + R + s->N);
    const int64_t s_tokens = t_tokens + s->L * B * (1 + R + gl * gl);
    DV_TRY(dv_vit_acts_create(&s->vit, s_tokens, 1, 0, &s->sa));
    DV_TRY(dv_vit_acts_create(&s->vit, t_tokens, 0, 0, &s->ta));
    const int64_t LB = s->L * B, Kmax = s->K[0] > s->K[1] ? s->K[0] : s->K[1];
    const int64_t t_rows = 2 * B + s->max_masked, s_rows = LB + 2 * B + s->max_masked;
    for (int h = 0; h < (s->separate ? 2 : 1); h++) {
        DV_TRY(dv_head_acts_create(&s->head[h], s->separate ? (h ? s->max_masked : LB + 2 * B) : s_rows, &s->sh[h]));
        DV_TRY(dv_head_acts_create(&s->head[h], s->separate ? (h ? s->max_masked : 2 * B) : t_rows, &s->th[h]));
    }
    DV_CHECK_ALLOC(s->t_in = falloc_(t_rows * s->D));
    DV_CHECK_ALLOC(s->t_out = falloc_(t_rows * Kmax));
    DV_CHECK_ALLOC(s->p_dino = falloc_(2 * B * s->K[0]));
    DV_CHECK_ALLOC(s->p_ibot = falloc_(s->max_masked * s->K[1]));
    DV_CHECK_ALLOC(s->s_in = falloc_(s_rows * s->D));
    DV_CHECK_ALLOC(s->s_out = falloc_(s_rows * Kmax));
    DV_CHECK_ALLOC(s->d_out = falloc_(s_rows * Kmax));
    DV_CHECK_ALLOC(s->d_in = falloc_(s_rows * s->D));
    DV_CHECK_ALLOC(s->d_norm = falloc_(s_tokens * s->D));
    DV_CHECK_ALLOC(s->koleo_grad = falloc_(2 * B * s->D));
    DV_CHECK_ALLOC(s->tmp_cls = falloc_(2 * B * s->D));
    return DV_OK;
}

int dv_ssl_create(dv_ssl *s, const dv_config *c, int64_t B) {
    memset(s, 0, sizeof *s);
    if (!c->derived.finalized) return DV_ERR(DV_ERR_ARG, "dv_ssl_create needs a finalized config");
    if (B < 1) return DV_ERR(DV_ERR_ARG, "batch of %lld images", (long long)B);
    int rc = create_(s, c, B);
    if (rc != DV_OK) dv_ssl_free(s);
    return rc;
}

/* ---- helpers ------------------------------------------------------------------------------------ */

/* Row of X holding masked patch u (flat index into (2B·N)) of group 0 (the global crops). */
static int64_t masked_row_(const dv_vit_acts *a, int64_t N, int64_t u) {
    const dv_vit_group_layout *g = &a->grp[0];
    return g->row0 + (u / N) * g->L + 1 + a->R + (u % N);
}

static void gather_masked_(float *dst, const float *packed, const dv_vit_acts *a, const dv_batch *b,
                           int64_t D) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < b->n_masked; i++)
        memcpy(dst + i * D, packed + masked_row_(a, b->N, b->mask_indices[i]) * D,
               (size_t)D * sizeof *dst);
}

static int finite_or_fail_(double v, const char *term, int64_t it) {
    if (isfinite(v)) return DV_OK;
    dv_user_error("iteration %lld: the %s loss is %s; stopping before the update "
                  "(lower optim.base_lr or check the data)", (long long)it, term,
                  isnan(v) ? "NaN" : "infinite");
    return DV_ERR_NUMERIC;
}

/* ---- teacher ------------------------------------------------------------------------------------ */

/* ---- FSDP units (src/shard.h) ------------------------------------------------------------------ */

static int gather_unit_(dv_ssl *s, dv_ssl_module *m, int64_t unit, int teacher) {
    if (!m->sharded) return DV_OK;
    return dv_shard_gather(&m->plan, s->comm, (int)unit, teacher ? m->teacher : m->student,
                           teacher ? m->w_teacher : m->w_student,
                           teacher ? m->teacher_param_dtype : m->param_dtype);
}

/* The loss scale a module's gradients cross the wire with (16-bit float reductions only). */
static float grad_pre_(const dv_ssl *s, const dv_ssl_module *m) {
    return s->scaler.enabled && m->reduce_dtype == DV_F16 ? (float)s->scaler.scale : 1.0f;
}

static int reduce_unit_(dv_ssl *s, dv_ssl_module *m, int64_t unit) {
    if (!m->sharded) return DV_OK;
    const float pre = grad_pre_(s, m);
    return dv_shard_reduce_scatter(&m->plan, s->comm, (int)unit, m->w_grad, m->grad,
                                   m->reduce_dtype, pre, 1.0f / (pre * (float)s->world));
}

typedef struct {
    dv_ssl *s;
    int teacher;
} unit_hook_;

static int backbone_unit_(void *ctx, int64_t unit, dv_vit_unit_phase phase) {
    unit_hook_ *h = ctx;
    dv_ssl *s = h->s;
    dv_ssl_module *m = &s->mod[DV_MOD_BACKBONE];
    switch (phase) {
    case DV_VIT_UNIT_FWD: return gather_unit_(s, m, unit, h->teacher);
    case DV_VIT_UNIT_BWD:
        return m->strategy == DV_CFG_FULL_SHARD ? gather_unit_(s, m, unit, 0) : DV_OK;
    case DV_VIT_UNIT_GRAD_DONE:
        if (unit == 0 && s->inject_inf_at == s->step && (!s->comm || s->comm->rank == 0))
            m->w_grad[0] = INFINITY; /* tests: an overflow on one rank before the reduction */
        return reduce_unit_(s, m, unit);
    }
    return DV_OK;
}

/* ---- teacher ------------------------------------------------------------------------------------ */

static int teacher_targets_(dv_ssl *s, const dv_batch *b, double temp) {
    const int64_t B = s->B, D = s->D, nm = b->n_masked;
    const dv_config *c = s->cfg;
    dv_vit_group g = {.n = 2 * B, .H = s->G, .W = s->G, .images = b->global_crops, .masks = NULL};
    unit_hook_ hk = {s, 1};
    dv_vit_fwd_opts o = {.training = 0, .unit_hook = backbone_unit_, .unit_ctx = &hk};
    DV_TRY(dv_vit_forward(&s->vit, s->mod[DV_MOD_BACKBONE].w_teacher, s->ta, &g, 1, &o));
    for (int i = DV_MOD_DINO_HEAD; i < DV_MOD_COUNT; i++)
        if (s->mod[i].present) DV_TRY(gather_unit_(s, &s->mod[i], 0, 1));
    /* CLS halves swapped: row i of student crop 1 is paired with teacher crop 2 and back */
    dv_vit_gather(s->tmp_cls, s->ta->x_norm, s->ta, 0, DV_VIT_CLS);
    memcpy(s->t_in, s->tmp_cls + B * D, (size_t)(B * D) * sizeof(float));
    memcpy(s->t_in + B * D, s->tmp_cls, (size_t)(B * D) * sizeof(float));
    gather_masked_(s->t_in + 2 * B * D, s->ta->x_norm, s->ta, b, D);

    const float *h_dino, *h_ibot;
    if (!s->separate) { /* one head over [CLS (2B); masked patches] */
        DV_TRY(dv_head_forward(&s->head[0], s->mod[DV_MOD_DINO_HEAD].w_teacher, &s->th[0], s->t_in,
                               2 * B + nm, s->t_out));
        h_dino = s->t_out;
        h_ibot = s->t_out + 2 * B * s->K[0];
    } else {
        DV_TRY(dv_head_forward(&s->head[0], s->mod[DV_MOD_DINO_HEAD].w_teacher, &s->th[0], s->t_in,
                               2 * B, s->t_out));
        float *out_ibot = s->t_out + 2 * B * s->K[0];
        if (nm > 0)
            DV_TRY(dv_head_forward(&s->head[1], s->mod[DV_MOD_IBOT_HEAD].w_teacher, &s->th[1],
                                   s->t_in + 2 * B * D, nm, out_ibot));
        h_dino = s->t_out;
        h_ibot = out_ibot;
    }
    if (c->train.centering == DV_CFG_CENTERING_SINKHORN_KNOPP) {
        dv_sinkhorn_opts so = sinkhorn_default_opts(s->world, s->reduce, s->reduce_ctx);
        if (s->do_dino) DV_TRY(sinkhorn_knopp_dino(s->p_dino, h_dino, 2 * B, s->K[0], temp, &so));
        if (s->do_ibot) DV_TRY(sinkhorn_knopp_ibot(s->p_ibot, h_ibot, nm, s->K[1], temp, &so));
    } else {
        if (s->do_dino) {
            DV_TRY(center_softmax_teacher(s->p_dino, &s->center_dino, h_dino, 2 * B, temp));
            DV_TRY(center_update(&s->center_dino, h_dino, 2 * B, DV_CENTER_ROW_SUM, s->world,
                                 s->reduce, s->reduce_ctx));
        }
        if (s->do_ibot) {
            DV_TRY(center_softmax_teacher(s->p_ibot, &s->center_ibot, h_ibot, nm, temp));
            DV_TRY(center_update(&s->center_ibot, h_ibot, nm, DV_CENTER_ROW_MEAN, s->world,
                                 s->reduce, s->reduce_ctx));
        }
    }
    return DV_OK;
}

/* ---- student ------------------------------------------------------------------------------------ */

int dv_ssl_forward_backward(dv_ssl *s, const dv_batch *b, int64_t it, dv_ssl_stats *st) {
    const dv_config *c = s->cfg;
    const int64_t B = s->B, L = s->L, LB = L * B, D = s->D, nm = b->n_masked;
    if (b->B != B || b->L != L || b->G != s->G || b->l != s->l || nm > s->max_masked || nm < 0)
        return DV_ERR(DV_ERR_ARG, "batch shape (B %lld, L %lld, %lld/%lld px, %lld masked) does "
                      "not match the model (B %lld, L %lld, %lld/%lld px, <= %lld masked)",
                      (long long)b->B, (long long)b->L, (long long)b->G, (long long)b->l,
                      (long long)nm, (long long)B, (long long)L, (long long)s->G, (long long)s->l,
                      (long long)s->max_masked);
    memset(st, 0, sizeof *st);
    st->lr = cosine_sched_at(&s->sched.lr, it);
    st->wd = cosine_sched_at(&s->sched.wd, it);
    st->momentum = cosine_sched_at(&s->sched.momentum, it);
    st->teacher_temp = cosine_sched_at(&s->sched.teacher_temp, it);
    st->last_layer_lr = cosine_sched_at(&s->sched.last_layer_lr, it);
    st->n_masked = nm;

    DV_TRY(teacher_targets_(s, b, st->teacher_temp));

    /* student backbone on the packed [global (masked); local] crops */
    dv_vit_group g[2] = {
        {.n = 2 * B, .H = s->G, .W = s->G, .images = b->global_crops, .masks = b->masks},
        {.n = LB, .H = s->l, .W = s->l, .images = b->local_crops, .masks = NULL},
    };
    unit_hook_ hk = {s, 0};
    dv_vit_fwd_opts o = {.training = 1, .seed = (uint64_t)c->train.seed, .step = (uint64_t)it,
                         .unit_hook = backbone_unit_, .unit_ctx = &hk};
    dv_ssl_module *bb = &s->mod[DV_MOD_BACKBONE];
    DV_TRY(dv_vit_forward(&s->vit, bb->w_student, s->sa, g, LB > 0 ? 2 : 1, &o));
    for (int i = DV_MOD_DINO_HEAD; i < DV_MOD_COUNT; i++)
        if (s->mod[i].present) DV_TRY(gather_unit_(s, &s->mod[i], 0, 0));
    /* head inputs [local CLS (LB); global CLS (2B); masked patches (nm)] */
    if (LB > 0) dv_vit_gather(s->s_in, s->sa->x_norm, s->sa, 1, DV_VIT_CLS);
    dv_vit_gather(s->s_in + LB * D, s->sa->x_norm, s->sa, 0, DV_VIT_CLS);
    gather_masked_(s->s_in + (LB + 2 * B) * D, s->sa->x_norm, s->sa, b, D);

    const int64_t K0 = s->K[0], K1 = s->K[1];
    float *y_dino = s->s_out, *y_ibot, *dy_dino = s->d_out, *dy_ibot;
    if (!s->separate) {
        DV_TRY(dv_head_forward(&s->head[0], s->mod[DV_MOD_DINO_HEAD].w_student, &s->sh[0], s->s_in,
                               LB + 2 * B + nm, s->s_out));
        y_ibot = s->s_out + (LB + 2 * B) * K0;
        dy_ibot = s->d_out + (LB + 2 * B) * K0;
    } else {
        DV_TRY(dv_head_forward(&s->head[0], s->mod[DV_MOD_DINO_HEAD].w_student, &s->sh[0], s->s_in,
                               LB + 2 * B, s->s_out));
        y_ibot = s->s_out + (LB + 2 * B) * K0;
        dy_ibot = s->d_out + (LB + 2 * B) * K0;
        if (nm > 0)
            DV_TRY(dv_head_forward(&s->head[1], s->mod[DV_MOD_IBOT_HEAD].w_student, &s->sh[1],
                                   s->s_in + (LB + 2 * B) * D, nm, y_ibot));
    }

    /* losses and their gradients w.r.t. the head outputs */
    if (s->do_dino) {
        dv_dino_loss_parts parts;
        DV_TRY(dino_loss_forward_backward(&parts, dy_dino + LB * K0, LB > 0 ? dy_dino : NULL,
                                          y_dino + LB * K0, LB > 0 ? y_dino : NULL, s->p_dino, B,
                                          L, K0, STUDENT_TEMP, c->dino.loss_weight));
        st->dino_local = c->dino.loss_weight * parts.local;
        st->dino_global = c->dino.loss_weight * parts.global;
    } else {
        memset(dy_dino, 0, (size_t)((LB + 2 * B) * K0) * sizeof(float));
    }
    if (s->do_ibot && nm > 0) {
        double li = 0;
        DV_TRY(ibot_loss_forward_backward(&li, dy_ibot, y_ibot, s->p_ibot, b->mask_weights, nm,
                                          2 * B, K1, STUDENT_TEMP, c->ibot.loss_weight));
        st->ibot = c->ibot.loss_weight * li;
    } else if (nm > 0) {
        memset(dy_ibot, 0, (size_t)(nm * K1) * sizeof(float));
    }
    if (s->do_koleo) {
        /* KoLeo on the student backbone's global CLS, per crop half (s_in rows LB..LB+2B) */
        DV_TRY(koleo_ssl_forward_backward(&st->koleo, s->koleo_grad, s->s_in + LB * D, 2 * B, D,
                                          c->dino.koleo_loss_weight, 1.0));
    }
    DV_TRY(finite_or_fail_(st->dino_local, "dino_local_crops", it));
    DV_TRY(finite_or_fail_(st->dino_global, "dino_global_crops", it));
    DV_TRY(finite_or_fail_(st->koleo, "koleo", it));
    DV_TRY(finite_or_fail_(st->ibot, "ibot", it));
    st->total = st->dino_local + st->dino_global + st->koleo + st->ibot;

    /* backward: heads, then the backbone from d(x_norm) */
    for (int i = 0; i < DV_MOD_COUNT; i++) {
        dv_ssl_module *m = &s->mod[i];
        if (!m->present) continue;
        memset(m->w_grad, 0, m->numel * sizeof(float));
        if (i != DV_MOD_BACKBONE && m->strategy == DV_CFG_FULL_SHARD)
            DV_TRY(gather_unit_(s, m, 0, 0));
    }
    dv_ssl_module *hd = &s->mod[DV_MOD_DINO_HEAD], *hi = &s->mod[DV_MOD_IBOT_HEAD];
    if (!s->separate) {
        DV_TRY(dv_head_backward(&s->head[0], hd->w_student, hd->w_grad, &s->sh[0], s->d_out,
                                LB + 2 * B + nm, s->d_in));
    } else {
        DV_TRY(dv_head_backward(&s->head[0], hd->w_student, hd->w_grad, &s->sh[0], s->d_out,
                                LB + 2 * B, s->d_in));
        if (nm > 0)
            DV_TRY(dv_head_backward(&s->head[1], hi->w_student, hi->w_grad, &s->sh[1], dy_ibot, nm,
                                    s->d_in + (LB + 2 * B) * D));
    }
    for (int i = DV_MOD_DINO_HEAD; i < DV_MOD_COUNT; i++)
        if (s->mod[i].present) DV_TRY(reduce_unit_(s, &s->mod[i], 0));
    if (s->do_koleo)
        for (int64_t i = 0; i < 2 * B * D; i++) s->d_in[LB * D + i] += s->koleo_grad[i];
    const dv_vit_acts *a = s->sa;
    memset(s->d_norm, 0, (size_t)(a->T * D) * sizeof(float));
    if (LB > 0) dv_vit_scatter_add(s->d_norm, s->d_in, a, 1, DV_VIT_CLS);
    dv_vit_scatter_add(s->d_norm, s->d_in + LB * D, a, 0, DV_VIT_CLS);
    const float *dm = s->d_in + (LB + 2 * B) * D;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < nm; i++) { /* distinct rows: no race */
        float *row = s->d_norm + masked_row_(a, b->N, b->mask_indices[i]) * D;
        for (int64_t j = 0; j < D; j++) row[j] += dm[i * D + j];
    }
    dv_vit_grads_in gi = {.d_norm = s->d_norm, .unit_hook = backbone_unit_, .unit_ctx = &hk};
    DV_TRY(dv_vit_backward(&s->vit, bb->w_student, bb->w_grad, s->sa, &gi, NULL));
    return DV_OK;
}

void dv_ssl_set_backend(dv_ssl *s, const dv_backend *be) {
    s->be = be ? be : dv_backend_cpu();
    s->vit.be = s->be;
    for (int h = 0; h < (s->separate ? 2 : 1); h++) s->head[h].be = s->be;
}

static dv_dtype dtype_of_(dv_cfg_dtype d) {
    return d == DV_CFG_FP16 ? DV_F16 : d == DV_CFG_BF16 ? DV_BF16 : DV_F32;
}

static const dv_cfg_fsdp *fsdp_of_(const dv_cfg_precision_model *p, int module) {
    return module == DV_MOD_BACKBONE ? &p->backbone : module == DV_MOD_DINO_HEAD ? &p->dino_head
                                                                                : &p->ibot_head;
}

/* Replace a module's full buffers by this rank's slices (the full student, teacher and grad
 * buffers stay as the compute buffers). */
static int shard_module_(dv_ssl *s, dv_ssl_module *m, int is_backbone) {
    DV_TRY(dv_shard_plan_init(&m->plan, m->tab, is_backbone, s->comm->rank, s->comm->world));
    const size_t n = m->plan.local_numel ? m->plan.local_numel : 1;
    float *loc[5] = {NULL};
    dv_adamw_range *r = malloc((size_t)(m->nranges + m->plan.nrange) * sizeof *r + 1);
    int ok = r != NULL;
    for (int i = 0; i < 5; i++) ok = (loc[i] = calloc(n, sizeof(float))) != NULL && ok;
    if (!ok) {
        for (int i = 0; i < 5; i++) free(loc[i]);
        free(r);
        dv_shard_plan_free(&m->plan);
        return DV_ERR(DV_ERR_NOMEM, "out of memory (shards of %zu floats)", n);
    }
    dv_shard_take(&m->plan, loc[0], m->student);
    dv_shard_take(&m->plan, loc[1], m->teacher);
    dv_shard_take(&m->plan, loc[3], m->exp_avg);
    dv_shard_take(&m->plan, loc[4], m->exp_avg_sq);
    m->nranges = dv_shard_adamw_ranges(&m->plan, m->ranges, m->nranges, r);
    free(m->ranges);
    m->ranges = r;
    free(m->exp_avg);
    free(m->exp_avg_sq);
    m->w_student = m->student;
    m->w_teacher = m->teacher;
    m->w_grad = m->grad;
    m->student = loc[0];
    m->teacher = loc[1];
    m->grad = loc[2];
    m->exp_avg = loc[3];
    m->exp_avg_sq = loc[4];
    m->local_numel = m->plan.local_numel;
    m->sharded = 1;
    return DV_OK;
}

int dv_ssl_set_comm(dv_ssl *s, dv_comm *comm) {
    if (s->sharded || s->nos_stage)
        return DV_ERR(DV_ERR_ARG, "dv_ssl_set_comm: the model already has a communicator");
    s->comm = comm;
    s->world = comm ? comm->world : 1;
    s->reduce = comm && comm->world > 1 ? dv_comm_hook_sum : NULL;
    s->reduce_ctx = comm;
    const dv_config *c = s->cfg;
    int any16 = 0;
    size_t stage = 0;
    for (int i = 0; i < DV_MOD_COUNT; i++) {
        dv_ssl_module *m = &s->mod[i];
        if (!m->present) continue;
        const dv_cfg_fsdp *st = fsdp_of_(&c->compute_precision.student, i);
        const dv_cfg_fsdp *te = fsdp_of_(&c->compute_precision.teacher, i);
        m->strategy = st->sharding_strategy;
        m->param_dtype = dtype_of_(st->mixed_precision.param_dtype);
        m->teacher_param_dtype = dtype_of_(te->mixed_precision.param_dtype);
        m->reduce_dtype = dtype_of_(st->mixed_precision.reduce_dtype);
        if (s->world < 2) continue;
        if (m->reduce_dtype == DV_F16) any16 = 1;
        if (m->strategy != DV_CFG_NO_SHARD) {
            DV_TRY(shard_module_(s, m, i == DV_MOD_BACKBONE));
            s->sharded = 1;
        } else if (m->reduce_dtype != DV_F32 && m->numel > stage) {
            stage = m->numel;
        }
    }
    if (stage) DV_CHECK_ALLOC(s->nos_stage = malloc(stage * sizeof(uint16_t)));
    const double scale = s->scaler.scale;
    const int64_t tracker = s->scaler.growth_tracker;
    dv_grad_scaler_init(&s->scaler, c->compute_precision.grad_scaler && any16);
    if (s->step > 0) { /* keep a loaded scaler state */
        s->scaler.scale = scale;
        s->scaler.growth_tracker = tracker;
    }
    return DV_OK;
}

int dv_ssl_full_values(dv_ssl *s, int module, int which, float *full) {
    if (module < 0 || module >= DV_MOD_COUNT || !s->mod[module].present || which < 0 || which > 4)
        return DV_ERR(DV_ERR_ARG, "dv_ssl_full_values: module %d, buffer %d", module, which);
    dv_ssl_module *m = &s->mod[module];
    const float *const bufs[5] = {m->student, m->teacher, m->grad, m->exp_avg, m->exp_avg_sq};
    const float *src = bufs[which];
    if (!m->sharded) {
        memcpy(full, src, m->numel * sizeof *full);
        return DV_OK;
    }
    for (int u = 0; u < m->plan.nunits; u++)
        DV_TRY(dv_shard_gather(&m->plan, s->comm, u, src, full, DV_F32));
    return DV_OK;
}

/* Average the unsharded modules' gradients (NO_SHARD: all-reduce in reduce_dtype, loss-scaled
 * when 16-bit) and the logged loss terms over the ranks. */
static int average_over_ranks_(dv_ssl *s, dv_ssl_stats *st) {
    if (!s->comm || s->comm->world < 2) return DV_OK;
    for (int i = 0; i < DV_MOD_COUNT; i++) {
        dv_ssl_module *m = &s->mod[i];
        if (!m->present || m->sharded) continue;
        const float pre = grad_pre_(s, m), post = 1.0f / (pre * (float)s->comm->world);
        if (m->reduce_dtype == DV_F32) {
            DV_TRY(dv_comm_allreduce_sum(s->comm, m->grad, m->numel, DV_F32));
        } else {
            if (pre != 1.0f)
                for (size_t k = 0; k < m->numel; k++) m->grad[k] *= pre;
            dv_convert_f32_to(s->nos_stage, m->reduce_dtype, m->grad, m->numel);
            DV_TRY(dv_comm_allreduce_sum(s->comm, s->nos_stage, m->numel, m->reduce_dtype));
            dv_convert_to_f32(m->grad, s->nos_stage, m->reduce_dtype, m->numel);
        }
        for (size_t k = 0; k < m->numel; k++) m->grad[k] *= post;
    }
    double terms[6] = {st->dino_local, st->dino_global, st->koleo, st->ibot, st->total,
                       (double)st->n_masked};
    DV_TRY(dv_comm_allreduce_sum(s->comm, terms, 6, DV_F64));
    st->dino_local = terms[0] / s->comm->world;
    st->dino_global = terms[1] / s->comm->world;
    st->koleo = terms[2] / s->comm->world;
    st->ibot = terms[3] / s->comm->world;
    st->total = terms[4] / s->comm->world;
    st->n_masked = (int64_t)terms[5];
    return DV_OK;
}

int dv_ssl_step(dv_ssl *s, const dv_batch *b, dv_ssl_stats *st) {
    const int64_t it = s->step;
    const double scale = s->scaler.enabled ? s->scaler.scale : 1.0;
    int rc = dv_ssl_forward_backward(s, b, it, st);
    /* a numeric failure on one rank must stop all of them at the same point */
    if (s->comm && s->comm->world > 1) {
        double bad = rc != DV_OK;
        DV_TRY(dv_comm_allreduce_max(s->comm, &bad, 1));
        if (bad != 0 && rc == DV_OK) rc = DV_ERR_NUMERIC;
    }
    DV_TRY(rc);
    DV_TRY(average_over_ranks_(s, st));
    st->loss_scale = scale;
    const double clip = s->cfg->optim.clip_grad;
    /* per-module norms of the unscaled gradients (official: unscale_, then clip); sharded
     * modules sum their slices over the ranks, replicated ones are the same everywhere */
    int found_inf = 0;
    for (int i = 0; i < DV_MOD_COUNT; i++) {
        dv_ssl_module *m = &s->mod[i];
        if (!m->present) continue;
        DV_TRY(clip_grad_norm(&st->grad_norm[i], m->grad, (int64_t)m->local_numel, clip,
                              m->sharded ? dv_comm_hook_sum : NULL, s->comm));
        if (!isfinite(st->grad_norm[i])) {
            if (!s->scaler.enabled) DV_TRY(finite_or_fail_(st->grad_norm[i], dv_module_names[i], it));
            found_inf = 1;
        }
    }
    /* inf/NaN with loss scaling: no AdamW update, a lower scale (torch's GradScaler.step) */
    dv_grad_scaler_update(&s->scaler, found_inf);
    st->skipped = found_inf;
    const dv_backend *be = s->be;
    if (!found_inf) {
        dv_adamw_hparams hp = adamw_default_hparams();
        hp.lr = st->lr;
        hp.last_layer_lr = st->last_layer_lr;
        hp.weight_decay = st->wd;
        hp.beta1 = s->cfg->optim.adamw_beta1;
        hp.beta2 = s->cfg->optim.adamw_beta2;
        hp.step = s->adamw_steps + 1;
        for (int i = 0; i < DV_MOD_COUNT; i++) {
            dv_ssl_module *m = &s->mod[i];
            if (!m->present) continue;
            DV_TRY(be->adamw_step(be->ctx, m->student, m->exp_avg, m->exp_avg_sq, m->grad,
                                  m->ranges, m->nranges, &hp));
        }
        s->adamw_steps++;
    }
    /* the official loop updates the teacher whether or not the scaler skipped the step */
    for (int i = 0; i < DV_MOD_COUNT; i++) {
        dv_ssl_module *m = &s->mod[i];
        if (m->present)
            DV_TRY(be->ema_update(be->ctx, m->teacher, m->student, (int64_t)m->local_numel,
                                  st->momentum));
    }
    s->step = it + 1;
    return DV_OK;
}

double dv_ssl_step_flops(const dv_ssl *s) {
    const int64_t B = s->B, LB = s->L * s->B;
    dv_vit_group g[2] = {{.n = 2 * B, .H = s->G, .W = s->G}, {.n = LB, .H = s->l, .W = s->l}};
    double f = dv_vit_forward_flops(&s->vit, g, 1);                       /* teacher */
    f += dv_vit_forward_flops(&s->vit, g, LB > 0 ? 2 : 1);                /* student */
    f += dv_vit_backward_flops(&s->vit, g, LB > 0 ? 2 : 1, 0);
    const double head = dv_head_forward_flops(&s->head[0], 1);
    f += head * (double)(2 * B + s->max_masked / 2);                    /* teacher heads */
    f += 3.0 * head * (double)(LB + 2 * B + s->max_masked / 2);          /* student fwd + bwd */
    return f;
}
