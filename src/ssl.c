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
    m->numel = tab->numel;
    float **bufs[5] = {&m->student, &m->teacher, &m->grad, &m->exp_avg, &m->exp_avg_sq};
    for (int i = 0; i < 5; i++) DV_CHECK_ALLOC(*bufs[i] = calloc(m->numel ? m->numel : 1, sizeof(float)));
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
                     s->d_out, s->d_in, s->d_norm, s->koleo_grad, s->tmp_cls};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    memset(s, 0, sizeof *s);
}

static float *falloc_(int64_t n) { return malloc((size_t)(n > 0 ? n : 1) * sizeof(float)); }

static int create_(dv_ssl *s, const dv_config *c, int64_t B) {
    s->cfg = c;
    s->be = dv_backend_cpu();
    s->world = 1;
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

static int teacher_targets_(dv_ssl *s, const dv_batch *b, double temp) {
    const int64_t B = s->B, D = s->D, nm = b->n_masked;
    const dv_config *c = s->cfg;
    dv_vit_group g = {.n = 2 * B, .H = s->G, .W = s->G, .images = b->global_crops, .masks = NULL};
    dv_vit_fwd_opts o = {.training = 0};
    DV_TRY(dv_vit_forward(&s->vit, s->mod[DV_MOD_BACKBONE].teacher, s->ta, &g, 1, &o));
    /* CLS halves swapped: row i of student crop 1 is paired with teacher crop 2 and back */
    dv_vit_gather(s->tmp_cls, s->ta->x_norm, s->ta, 0, DV_VIT_CLS);
    memcpy(s->t_in, s->tmp_cls + B * D, (size_t)(B * D) * sizeof(float));
    memcpy(s->t_in + B * D, s->tmp_cls, (size_t)(B * D) * sizeof(float));
    gather_masked_(s->t_in + 2 * B * D, s->ta->x_norm, s->ta, b, D);

    const float *h_dino, *h_ibot;
    if (!s->separate) { /* one head over [CLS (2B); masked patches] */
        DV_TRY(dv_head_forward(&s->head[0], s->mod[DV_MOD_DINO_HEAD].teacher, &s->th[0], s->t_in,
                               2 * B + nm, s->t_out));
        h_dino = s->t_out;
        h_ibot = s->t_out + 2 * B * s->K[0];
    } else {
        DV_TRY(dv_head_forward(&s->head[0], s->mod[DV_MOD_DINO_HEAD].teacher, &s->th[0], s->t_in,
                               2 * B, s->t_out));
        float *out_ibot = s->t_out + 2 * B * s->K[0];
        if (nm > 0)
            DV_TRY(dv_head_forward(&s->head[1], s->mod[DV_MOD_IBOT_HEAD].teacher, &s->th[1],
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
    dv_vit_fwd_opts o = {.training = 1, .seed = (uint64_t)c->train.seed, .step = (uint64_t)it};
    const dv_ssl_module *bb = &s->mod[DV_MOD_BACKBONE];
    DV_TRY(dv_vit_forward(&s->vit, bb->student, s->sa, g, LB > 0 ? 2 : 1, &o));
    /* head inputs [local CLS (LB); global CLS (2B); masked patches (nm)] */
    if (LB > 0) dv_vit_gather(s->s_in, s->sa->x_norm, s->sa, 1, DV_VIT_CLS);
    dv_vit_gather(s->s_in + LB * D, s->sa->x_norm, s->sa, 0, DV_VIT_CLS);
    gather_masked_(s->s_in + (LB + 2 * B) * D, s->sa->x_norm, s->sa, b, D);

    const int64_t K0 = s->K[0], K1 = s->K[1];
    float *y_dino = s->s_out, *y_ibot, *dy_dino = s->d_out, *dy_ibot;
    if (!s->separate) {
        DV_TRY(dv_head_forward(&s->head[0], s->mod[DV_MOD_DINO_HEAD].student, &s->sh[0], s->s_in,
                               LB + 2 * B + nm, s->s_out));
        y_ibot = s->s_out + (LB + 2 * B) * K0;
        dy_ibot = s->d_out + (LB + 2 * B) * K0;
    } else {
        DV_TRY(dv_head_forward(&s->head[0], s->mod[DV_MOD_DINO_HEAD].student, &s->sh[0], s->s_in,
                               LB + 2 * B, s->s_out));
        y_ibot = s->s_out + (LB + 2 * B) * K0;
        dy_ibot = s->d_out + (LB + 2 * B) * K0;
        if (nm > 0)
            DV_TRY(dv_head_forward(&s->head[1], s->mod[DV_MOD_IBOT_HEAD].student, &s->sh[1],
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
    for (int i = 0; i < DV_MOD_COUNT; i++)
        if (s->mod[i].present) memset(s->mod[i].grad, 0, s->mod[i].numel * sizeof(float));
    if (!s->separate) {
        DV_TRY(dv_head_backward(&s->head[0], s->mod[DV_MOD_DINO_HEAD].student,
                                s->mod[DV_MOD_DINO_HEAD].grad, &s->sh[0], s->d_out,
                                LB + 2 * B + nm, s->d_in));
    } else {
        DV_TRY(dv_head_backward(&s->head[0], s->mod[DV_MOD_DINO_HEAD].student,
                                s->mod[DV_MOD_DINO_HEAD].grad, &s->sh[0], s->d_out, LB + 2 * B,
                                s->d_in));
        if (nm > 0)
            DV_TRY(dv_head_backward(&s->head[1], s->mod[DV_MOD_IBOT_HEAD].student,
                                    s->mod[DV_MOD_IBOT_HEAD].grad, &s->sh[1], dy_ibot, nm,
                                    s->d_in + (LB + 2 * B) * D));
    }
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
    dv_vit_grads_in gi = {.d_norm = s->d_norm};
    DV_TRY(dv_vit_backward(&s->vit, bb->student, bb->grad, s->sa, &gi, NULL));
    return DV_OK;
}

void dv_ssl_set_backend(dv_ssl *s, const dv_backend *be) {
    s->be = be ? be : dv_backend_cpu();
    s->vit.be = s->be;
    for (int h = 0; h < (s->separate ? 2 : 1); h++) s->head[h].be = s->be;
}

void dv_ssl_set_comm(dv_ssl *s, dv_comm *comm) {
    s->comm = comm;
    s->world = comm ? comm->world : 1;
    s->reduce = comm && comm->world > 1 ? dv_comm_hook_sum : NULL;
    s->reduce_ctx = comm;
}

/* Average gradients and the logged loss terms over the ranks. */
static int average_over_ranks_(dv_ssl *s, dv_ssl_stats *st) {
    if (!s->comm || s->comm->world < 2) return DV_OK;
    const float inv = 1.0f / (float)s->comm->world;
    for (int i = 0; i < DV_MOD_COUNT; i++) {
        dv_ssl_module *m = &s->mod[i];
        if (!m->present) continue;
        DV_TRY(dv_comm_allreduce_sum(s->comm, m->grad, m->numel, DV_F32));
        for (size_t k = 0; k < m->numel; k++) m->grad[k] *= inv;
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
    int rc = dv_ssl_forward_backward(s, b, it, st);
    /* a numeric failure on one rank must stop all of them at the same point */
    if (s->comm && s->comm->world > 1) {
        double bad = rc != DV_OK;
        DV_TRY(dv_comm_allreduce_max(s->comm, &bad, 1));
        if (bad != 0 && rc == DV_OK) rc = DV_ERR_NUMERIC;
    }
    DV_TRY(rc);
    DV_TRY(average_over_ranks_(s, st));
    const double clip = s->cfg->optim.clip_grad;
    dv_adamw_hparams hp = adamw_default_hparams();
    hp.lr = st->lr;
    hp.last_layer_lr = st->last_layer_lr;
    hp.weight_decay = st->wd;
    hp.beta1 = s->cfg->optim.adamw_beta1;
    hp.beta2 = s->cfg->optim.adamw_beta2;
    hp.step = it + 1;
    for (int i = 0; i < DV_MOD_COUNT; i++) {
        dv_ssl_module *m = &s->mod[i];
        if (!m->present) continue;
        /* the gradients are replicated after the all-reduce: the norm is local (the sharded
         * path of issue 7 passes the sum hook instead) */
        DV_TRY(clip_grad_norm(&st->grad_norm[i], m->grad, (int64_t)m->numel, clip, NULL, NULL));
        DV_TRY(finite_or_fail_(st->grad_norm[i], dv_module_names[i], it));
    }
    const dv_backend *be = s->be;
    for (int i = 0; i < DV_MOD_COUNT; i++) {
        dv_ssl_module *m = &s->mod[i];
        if (!m->present) continue;
        DV_TRY(be->adamw_step(be->ctx, m->student, m->exp_avg, m->exp_avg_sq, m->grad, m->ranges,
                              m->nranges, &hp));
        DV_TRY(be->ema_update(be->ctx, m->teacher, m->student, (int64_t)m->numel, st->momentum));
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
