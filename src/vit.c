/* vit — see vit.h. */
#include "vit.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attention.h"
#include "backend.h"
#include "err.h"
#include "pos_embed.h"
#include "rng.h"

/* ---- config ---------------------------------------------------------------------------------- */

void dv_vit_config_defaults(dv_vit_config *c) {
    memset(c, 0, sizeof *c);
    c->patch_size = 16;
    c->embed_dim = 1024;
    c->depth = 24;
    c->num_heads = 16;
    c->ffn = DV_FFN_MLP;
    c->mlp_ratio = 4.0;
    c->ffn_hidden = 0;
    c->num_register_tokens = 0;
    c->img_size = 224;
    c->layerscale = 1e-5;
    c->qkv_bias = c->proj_bias = c->ffn_bias = 1;
    c->norm_eps = 1e-6;
    c->interpolate_offset = 0.1;
    c->interpolate_antialias = 0;
    c->drop_path_rate = 0.3;
    c->drop_path_uniform = 1;
    const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    memcpy(c->image_mean, mean, sizeof mean);
    memcpy(c->image_std, std, sizeof std);
}

int dv_vit_config_preset(dv_vit_config *c, const char *arch, int64_t patch_size) {
    static const struct {
        const char *name;
        int64_t dim, depth, heads;
    } presets[] = {{"vit_small", 384, 12, 6},
                   {"vit_base", 768, 12, 12},
                   {"vit_large", 1024, 24, 16},
                   {"vit_giant2", 1536, 40, 24}};
    char name[64];
    snprintf(name, sizeof name, "%s", arch);
    size_t n = strlen(name);
    if (n > 7 && strcmp(name + n - 7, "_memeff") == 0) name[n - 7] = '\0';
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++)
        if (strcmp(name, presets[i].name) == 0) {
            dv_vit_config_defaults(c);
            c->patch_size = patch_size;
            c->embed_dim = presets[i].dim;
            c->depth = presets[i].depth;
            c->num_heads = presets[i].heads;
            return DV_OK;
        }
    dv_user_error("unknown ViT architecture '%s' (vit_small, vit_base, vit_large, vit_giant2)",
                  arch);
    return DV_ERR_CONFIG;
}

int dv_vit_ffn_parse(const char *s, dv_ffn_kind *out) {
    if (strcmp(s, "mlp") == 0)
        *out = DV_FFN_MLP;
    else if (strcmp(s, "swiglu") == 0 || strcmp(s, "swiglufused") == 0)
        *out = DV_FFN_SWIGLU;
    else if (strcmp(s, "identity") == 0)
        *out = DV_FFN_IDENTITY;
    else {
        dv_user_error("unknown ffn_layer '%s' (mlp, swiglu, swiglufused, identity)", s);
        return DV_ERR_CONFIG;
    }
    return DV_OK;
}

const char *dv_vit_ffn_name(dv_ffn_kind k) {
    switch (k) {
    case DV_FFN_MLP: return "mlp";
    case DV_FFN_SWIGLU: return "swiglufused";
    case DV_FFN_IDENTITY: return "identity";
    }
    return "?";
}

int64_t dv_vit_ffn_hidden(const dv_vit_config *c) {
    /* Block: mlp_hidden_dim = int(dim * mlp_ratio); SwiGLUFFNFused:
     * hidden = (int(hidden * 2 / 3) + 7) // 8 * 8 (true division, then truncation) */
    const int64_t h = (int64_t)((double)c->embed_dim * c->mlp_ratio);
    switch (c->ffn) {
    case DV_FFN_MLP: return h;
    case DV_FFN_SWIGLU: return ((int64_t)((double)(h * 2) / 3.0) + 7) / 8 * 8;
    case DV_FFN_IDENTITY: return 0;
    }
    return 0;
}

int dv_vit_config_finalize(dv_vit_config *c) {
    if (c->patch_size < 1 || c->embed_dim < 1 || c->depth < 1 || c->num_heads < 1 ||
        c->embed_dim % c->num_heads != 0) {
        dv_user_error("ViT: bad dims (patch %lld, embed_dim %lld, depth %lld, heads %lld; "
                      "embed_dim must be a multiple of heads)",
                      (long long)c->patch_size, (long long)c->embed_dim, (long long)c->depth,
                      (long long)c->num_heads);
        return DV_ERR_CONFIG;
    }
    if (c->img_size < c->patch_size || c->num_register_tokens < 0 || !(c->mlp_ratio > 0.0) ||
        !(c->norm_eps > 0.0) || !(c->layerscale >= 0.0) || !(c->drop_path_rate >= 0.0) ||
        !(c->drop_path_rate < 1.0) || !(c->interpolate_offset >= 0.0)) {
        dv_user_error("ViT: bad value (img_size %lld >= patch, registers >= 0, mlp_ratio > 0, "
                      "norm_eps > 0, layerscale >= 0, 0 <= drop_path_rate < 1, "
                      "interpolate_offset >= 0)",
                      (long long)c->img_size);
        return DV_ERR_CONFIG;
    }
    const int64_t h = dv_vit_ffn_hidden(c);
    if (c->ffn_hidden == 0)
        c->ffn_hidden = h;
    else if (c->ffn_hidden != h) {
        dv_user_error("ViT: ffn_hidden_dim %lld does not match %s with embed_dim %lld and "
                      "mlp_ratio %g (expected %lld)",
                      (long long)c->ffn_hidden, dv_vit_ffn_name(c->ffn), (long long)c->embed_dim,
                      c->mlp_ratio, (long long)h);
        return DV_ERR_CONFIG;
    }
    return DV_OK;
}

double dv_vit_drop_rate(const dv_vit_config *c, int64_t block) {
    if (c->drop_path_uniform) return c->drop_path_rate;
    /* [x.item() for x in torch.linspace(0, rate, depth)]: float32, torch's CPU formula
     * (start + step·i below halfway, end − step·(steps − 1 − i) from there) */
    const int64_t steps = c->depth;
    if (steps <= 1) return 0.0;
    const float end = (float)c->drop_path_rate;
    const float step = end / (float)(steps - 1);
    const float v =
        block < steps / 2 ? step * (float)block : end - step * (float)(steps - 1 - block);
    return (double)v;
}

/* ---- model and parameter table -----------------------------------------------------------------
 */

static int add_(dv_vit *m, const char *name, int ndim, int64_t d0, int64_t d1, int64_t d2,
                int64_t d3, int *idx) {
    const int64_t shp[4] = {d0, d1, d2, d3};
    return dv_params_add(&m->params, name, ndim, shp, -1, 0, idx);
}

int dv_vit_init(dv_vit *m, const dv_vit_config *cfg) {
    memset(m, 0, sizeof *m);
    m->be = dv_backend_cpu();
    m->cfg = *cfg;
    DV_TRY(dv_vit_config_finalize(&m->cfg));
    const dv_vit_config *c = &m->cfg;
    const int64_t D = c->embed_dim, p = c->patch_size, R = c->num_register_tokens;
    const int64_t M = c->img_size / p, Hf = c->ffn_hidden;
    m->grid = M;
    dv_params_init(&m->params, (int)c->depth);
    m->blk = calloc((size_t)c->depth, sizeof *m->blk);
    if (!m->blk) return DV_ERR(DV_ERR_NOMEM, "out of memory");
    m->register_tokens = -1;
    int st = DV_OK;
#define ADD(...)                                                                                   \
    do {                                                                                           \
        if ((st = add_(m, __VA_ARGS__)) != DV_OK) goto fail;                                       \
    } while (0)
    ADD("cls_token", 3, 1, 1, D, 0, &m->cls_token);
    ADD("pos_embed", 3, 1, 1 + M * M, D, 0, &m->pos_embed);
    if (R > 0) ADD("register_tokens", 3, 1, R, D, 0, &m->register_tokens);
    ADD("mask_token", 2, 1, D, 0, 0, &m->mask_token);
    ADD("patch_embed.proj.weight", 4, D, 3, p, p, &m->pe_w);
    ADD("patch_embed.proj.bias", 1, D, 0, 0, 0, &m->pe_b);
    char nm[DV_PARAM_NAME_MAX];
    for (int64_t i = 0; i < c->depth; i++) {
        dv_vit_block_params *b = &m->blk[i];
        b->qkv_b = b->proj_b = b->ls1 = b->fc1_w = b->fc1_b = b->fc2_w = b->fc2_b = b->ls2 = -1;
#define NM(suffix) (snprintf(nm, sizeof nm, "blocks.%lld." suffix, (long long)i), nm)
        ADD(NM("norm1.weight"), 1, D, 0, 0, 0, &b->norm1_w);
        ADD(NM("norm1.bias"), 1, D, 0, 0, 0, &b->norm1_b);
        ADD(NM("attn.qkv.weight"), 2, 3 * D, D, 0, 0, &b->qkv_w);
        if (c->qkv_bias) ADD(NM("attn.qkv.bias"), 1, 3 * D, 0, 0, 0, &b->qkv_b);
        ADD(NM("attn.proj.weight"), 2, D, D, 0, 0, &b->proj_w);
        if (c->proj_bias) ADD(NM("attn.proj.bias"), 1, D, 0, 0, 0, &b->proj_b);
        if (c->layerscale > 0.0) ADD(NM("ls1.gamma"), 1, D, 0, 0, 0, &b->ls1);
        ADD(NM("norm2.weight"), 1, D, 0, 0, 0, &b->norm2_w);
        ADD(NM("norm2.bias"), 1, D, 0, 0, 0, &b->norm2_b);
        if (c->ffn == DV_FFN_MLP) {
            ADD(NM("mlp.fc1.weight"), 2, Hf, D, 0, 0, &b->fc1_w);
            if (c->ffn_bias) ADD(NM("mlp.fc1.bias"), 1, Hf, 0, 0, 0, &b->fc1_b);
            ADD(NM("mlp.fc2.weight"), 2, D, Hf, 0, 0, &b->fc2_w);
            if (c->ffn_bias) ADD(NM("mlp.fc2.bias"), 1, D, 0, 0, 0, &b->fc2_b);
        } else if (c->ffn == DV_FFN_SWIGLU) {
            ADD(NM("mlp.w12.weight"), 2, 2 * Hf, D, 0, 0, &b->fc1_w);
            if (c->ffn_bias) ADD(NM("mlp.w12.bias"), 1, 2 * Hf, 0, 0, 0, &b->fc1_b);
            ADD(NM("mlp.w3.weight"), 2, D, Hf, 0, 0, &b->fc2_w);
            if (c->ffn_bias) ADD(NM("mlp.w3.bias"), 1, D, 0, 0, 0, &b->fc2_b);
        }
        if (c->layerscale > 0.0) ADD(NM("ls2.gamma"), 1, D, 0, 0, 0, &b->ls2);
#undef NM
    }
    ADD("norm.weight", 1, D, 0, 0, 0, &m->norm_w);
    ADD("norm.bias", 1, D, 0, 0, 0, &m->norm_b);
#undef ADD
    return DV_OK;
fail:
    dv_vit_free(m);
    return st;
}

void dv_vit_free(dv_vit *m) {
    dv_params_free(&m->params);
    free(m->blk);
    m->blk = NULL;
}

static int ends_with_(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

int dv_vit_init_weights(const dv_vit *m, float *w, uint64_t seed) {
    const dv_param_table *tab = &m->params;
    const double fan_in = 3.0 * (double)m->cfg.patch_size * (double)m->cfg.patch_size;
    const double conv_bound = 1.0 / sqrt(fan_in);
#pragma omp parallel for schedule(dynamic, 1)
    for (int i = 0; i < tab->n; i++) {
        const dv_param *p = &tab->t[i];
        float *x = w + p->offset;
        const size_t n = p->numel;
        dv_rng r;
        dv_rng_init(&r, seed, (uint32_t)(DV_RNG_INIT + i), 0, 0);
        if (strcmp(p->name, "cls_token") == 0 || strcmp(p->name, "register_tokens") == 0) {
            for (size_t k = 0; k < n; k++) x[k] = (float)(dv_rng_normal(&r) * 1e-6);
        } else if (strcmp(p->name, "pos_embed") == 0) {
            for (size_t k = 0; k < n; k++) x[k] = dv_rng_trunc_normal(&r, 0.02, -2.0, 2.0);
        } else if (strcmp(p->name, "mask_token") == 0) {
            memset(x, 0, n * sizeof *x);
        } else if (strncmp(p->name, "patch_embed.", 12) == 0) {
            /* Conv2d.reset_parameters: kaiming_uniform_(a=√5) → U(±1/√fan_in); bias U(±1/√fan_in)
             */
            for (size_t k = 0; k < n; k++)
                x[k] = (float)dv_rng_uniform_range(&r, -conv_bound, conv_bound);
        } else if (ends_with_(p->name, ".gamma")) {
            for (size_t k = 0; k < n; k++) x[k] = (float)m->cfg.layerscale;
        } else if (strstr(p->name, "norm")) { /* norm1, norm2, norm: LayerNorm (1, 0) */
            const float v = ends_with_(p->name, ".weight") ? 1.0f : 0.0f;
            for (size_t k = 0; k < n; k++) x[k] = v;
        } else if (ends_with_(p->name, ".weight")) { /* nn.Linear: init_weights_vit_timm */
            for (size_t k = 0; k < n; k++) x[k] = dv_rng_trunc_normal(&r, 0.02, -2.0, 2.0);
        } else { /* nn.Linear bias */
            memset(x, 0, n * sizeof *x);
        }
    }
    return DV_OK;
}

/* ---- activations ---------------------------------------------------------------------------- */

/* Width of the stored FFN pre-activation (fc1 / w12 output) and of its activation output. */
static int64_t ffn_pre_width_(const dv_vit_config *c) {
    return c->ffn == DV_FFN_MLP ? c->ffn_hidden : c->ffn == DV_FFN_SWIGLU ? 2 * c->ffn_hidden : 0;
}
static int64_t ffn_act_width_(const dv_vit_config *c) {
    return c->ffn == DV_FFN_IDENTITY ? 0 : c->ffn_hidden;
}

/* Bump allocator over one arena: a first pass with base == NULL measures. */
typedef struct {
    char *base;
    size_t off;
} arena_;

static void *carve_(arena_ *ar, size_t bytes) {
    const size_t align = 64;
    ar->off = (ar->off + align - 1) / align * align;
    void *p = ar->base ? ar->base + ar->off : NULL;
    ar->off += bytes > 0 ? bytes : 1;
    return p;
}
#define CARVE_F(ar, n) ((float *)carve_((ar), (size_t)(n) * sizeof(float)))

static void layout_acts_(arena_ *ar, dv_vit_acts *a, const dv_vit *m) {
    const dv_vit_config *c = &m->cfg;
    const int64_t T = a->max_tokens, D = c->embed_dim, NH = c->num_heads, depth = c->depth;
    const int64_t Hpre = ffn_pre_width_(c), Hact = ffn_act_width_(c);
    const int64_t K = 3 * c->patch_size * c->patch_size;
    const int train = a->training;
    a->grp = carve_(ar, (size_t)T * sizeof *a->grp);
    a->seg = carve_(ar, (size_t)T * sizeof *a->seg);
    a->inter_blocks = carve_(ar, (size_t)(a->max_inter + 1) * sizeof *a->inter_blocks);
    a->perm = carve_(ar, (size_t)T * sizeof *a->perm);
    a->xs = carve_(ar, (size_t)(depth + 1) * sizeof *a->xs);
    a->blk = carve_(ar, (size_t)depth * sizeof *a->blk);
    if (ar->base) memset(a->blk, 0, (size_t)depth * sizeof *a->blk);
    float *stream = NULL;
    for (int64_t i = 0; i <= depth; i++) {
        float *x = (train || i == 0) ? CARVE_F(ar, T * D) : stream;
        if (i == 0) stream = x;
        if (ar->base) a->xs[i] = x;
    }
    const int64_t nsets = train ? depth : 1;
    for (int64_t i = 0; i < nsets; i++) {
        dv_vit_block_acts b;
        memset(&b, 0, sizeof b);
        b.ln1_mean = CARVE_F(ar, T);
        b.ln1_rstd = CARVE_F(ar, T);
        b.qkv = CARVE_F(ar, T * 3 * D);
        b.lse = CARVE_F(ar, T * NH);
        b.att = CARVE_F(ar, T * D);
        b.y1 = CARVE_F(ar, T * D);
        b.x_mid = train ? CARVE_F(ar, T * D) : NULL;
        b.ln2_mean = CARVE_F(ar, T);
        b.ln2_rstd = CARVE_F(ar, T);
        b.h_pre = CARVE_F(ar, T * Hpre);
        b.y2 = CARVE_F(ar, T * D);
        for (int k = 0; k < 2; k++) {
            b.br[k].rows = carve_(ar, (size_t)T * sizeof(int64_t));
            b.br[k].seg = carve_(ar, (size_t)T * sizeof(attention_segment));
            b.br[k].grp_start = carve_(ar, (size_t)(T + 1) * sizeof(int64_t));
            b.br[k].grp_scale = CARVE_F(ar, T);
        }
        if (ar->base) a->blk[i] = b;
    }
    if (ar->base) {
        for (int64_t i = 0; i < depth; i++) {
            if (!train) a->blk[i] = a->blk[0];
            a->blk[i].x_in = a->xs[i];
            if (!train) a->blk[i].x_mid = a->xs[i]; /* in place */
        }
        a->x0 = a->xs[0];
        a->x_prenorm = a->xs[depth];
    }
    a->x_norm = CARVE_F(ar, T * D);
    a->norm_mean = CARVE_F(ar, T);
    a->norm_rstd = CARVE_F(ar, T);
    const int ni = a->max_inter;
    a->inter_raw = carve_(ar, (size_t)(ni + 1) * sizeof(float *));
    a->inter_norm = carve_(ar, (size_t)(ni + 1) * sizeof(float *));
    a->inter_mean = carve_(ar, (size_t)(ni + 1) * sizeof(float *));
    a->inter_rstd = carve_(ar, (size_t)(ni + 1) * sizeof(float *));
    for (int k = 0; k < ni; k++) {
        float *r = CARVE_F(ar, T * D), *n = CARVE_F(ar, T * D);
        float *mu = CARVE_F(ar, T), *rs = CARVE_F(ar, T);
        if (ar->base) {
            a->inter_raw[k] = r;
            a->inter_norm[k] = n;
            a->inter_mean[k] = mu;
            a->inter_rstd[k] = rs;
        }
    }
    a->s_x = CARVE_F(ar, T * D);
    a->s_ln = CARVE_F(ar, T * D);
    a->s_h = CARVE_F(ar, T * Hact);
    a->cols = CARVE_F(ar, T * K);
    a->pos = CARVE_F(ar, T * D);
    if (train) {
        a->g_x = CARVE_F(ar, T * D);
        a->g_y = CARVE_F(ar, T * D);
        a->g_att = CARVE_F(ar, T * D);
        a->g_ln = CARVE_F(ar, T * D);
        a->g_sub = CARVE_F(ar, T * D);
        a->g_qkv = CARVE_F(ar, T * 3 * D);
        a->g_h = CARVE_F(ar, T * (Hpre > 0 ? Hpre : 1));
    }
}

size_t dv_vit_acts_bytes(const dv_vit *m, int64_t max_tokens, int training, int max_inter) {
    dv_vit_acts a;
    memset(&a, 0, sizeof a);
    a.max_tokens = max_tokens;
    a.training = training;
    a.max_inter = max_inter;
    arena_ ar = {NULL, 0};
    layout_acts_(&ar, &a, m);
    return ar.off + 64;
}

int dv_vit_acts_create(const dv_vit *m, int64_t max_tokens, int training, int max_inter,
                       dv_vit_acts **out) {
    *out = NULL;
    if (max_tokens < 1 || max_inter < 0)
        return DV_ERR(DV_ERR_ARG, "dv_vit_acts_create: max_tokens %lld, max_inter %d",
                      (long long)max_tokens, max_inter);
    dv_vit_acts *a = calloc(1, sizeof *a);
    DV_CHECK_ALLOC(a);
    a->max_tokens = max_tokens;
    a->training = training ? 1 : 0;
    a->max_inter = max_inter;
    a->D = m->cfg.embed_dim;
    a->R = m->cfg.num_register_tokens;
    arena_ ar = {NULL, 0};
    layout_acts_(&ar, a, m);
    const size_t bytes = (ar.off + 63) / 64 * 64;
    char *base = aligned_alloc(64, bytes);
    if (!base) {
        free(a);
        return DV_ERR(DV_ERR_NOMEM, "out of memory: ViT activations for %lld tokens (%.1f MiB)",
                      (long long)max_tokens, (double)bytes / 1048576.0);
    }
    ar.base = base;
    ar.off = 0;
    layout_acts_(&ar, a, m);
    a->arena = base;
    a->bytes = bytes;
    *out = a;
    return DV_OK;
}

void dv_vit_acts_free(dv_vit_acts *a) {
    if (!a) return;
    free(a->arena);
    free(a->pos_work);
    free(a->att_work);
    free(a);
}

int64_t dv_vit_tokens(const dv_vit *m, const dv_vit_group *groups, int64_t ngroups) {
    const int64_t p = m->cfg.patch_size, R = m->cfg.num_register_tokens;
    int64_t T = 0;
    for (int64_t g = 0; g < ngroups; g++)
        T += groups[g].n * (1 + R + (groups[g].H / p) * (groups[g].W / p));
    return T;
}

/* ---- small helpers ----------------------------------------------------------------------------
 */

static void copy_(float *dst, const float *src, int64_t n) {
    if (dst == src || n <= 0) return;
    const int64_t chunk = 1 << 16;
    const int64_t nchunk = (n + chunk - 1) / chunk;
#pragma omp parallel for schedule(static)
    for (int64_t k = 0; k < nchunk; k++) {
        const int64_t s = k * chunk, e = s + chunk < n ? s + chunk : n;
        memcpy(dst + s, src + s, (size_t)(e - s) * sizeof *dst);
    }
}

static void zero_(float *dst, int64_t n) {
    const int64_t chunk = 1 << 16;
    const int64_t nchunk = (n + chunk - 1) / chunk;
#pragma omp parallel for schedule(static)
    for (int64_t k = 0; k < nchunk; k++) {
        const int64_t s = k * chunk, e = s + chunk < n ? s + chunk : n;
        memset(dst + s, 0, (size_t)(e - s) * sizeof *dst);
    }
}

static void add_into_(float *dst, const float *src, int64_t n) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) dst[i] += src[i];
}

/* dst (nrows, D) = rows of src; the rows come in crop-contiguous runs. */
static void gather_rows_(float *dst, const float *src, const int64_t *rows, int64_t nrows,
                         int64_t D) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < nrows; i++)
        memcpy(dst + i * D, src + rows[i] * D, (size_t)D * sizeof *dst);
}

/* dst[rows[i]] += src[i] (distinct rows). */
static void scatter_add_rows_(float *dst, const float *src, const int64_t *rows, int64_t nrows,
                              int64_t D) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < nrows; i++) {
        float *d = dst + rows[i] * D;
        const float *s = src + i * D;
        for (int64_t j = 0; j < D; j++) d[j] += s[j];
    }
}

static int grow_(void **buf, size_t *have, size_t need) {
    if (need <= *have) return DV_OK;
    void *p = realloc(*buf, need);
    if (!p) return DV_ERR(DV_ERR_NOMEM, "out of memory (%zu bytes of workspace)", need);
    *buf = p;
    *have = need;
    return DV_OK;
}

static const float *P_(const dv_vit *m, const float *w, int idx) {
    return idx >= 0 ? w + m->params.t[idx].offset : NULL;
}
static float *G_(const dv_vit *m, float *g, int idx) {
    return idx >= 0 ? g + m->params.t[idx].offset : NULL;
}
/* The model's compute backend (NULL: the CPU). */
static const dv_backend *BE_(const dv_vit *m) { return m->be ? m->be : dv_backend_cpu(); }

/* ---- stochastic depth ------------------------------------------------------------------------ */

static int cmp_i64_(const void *x, const void *y) {
    const int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;
    return (a > b) - (a < b);
}

void dv_vit_droppath_subset(uint64_t seed, uint64_t step, int64_t block, int branch, int64_t group,
                            int64_t b, double rate, dv_vit_droppath_rule rule, int64_t *idx,
                            int64_t *keep, float *scale, int64_t *perm_scratch) {
    dv_rng r;
    dv_rng_init(&r, seed, (uint32_t)(DV_RNG_DROPPATH + 2 * block + branch), step, (uint64_t)group);
    if (rule == DV_DROPPATH_TENSOR && rate <= 0.1) {
        /* DropPath: per-sample Bernoulli(keep_prob), kept samples divided by keep_prob */
        const double keep_prob = 1.0 - rate;
        int64_t k = 0;
        for (int64_t c = 0; c < b; c++)
            if (dv_rng_uniform_double(&r) < keep_prob) idx[k++] = c;
        *keep = k;
        *scale = 1.0f / (float)keep_prob;
        return;
    }
    /* drop_add_residual_stochastic_depth: keep = max(int(b·(1 − rate)), 1), first `keep` of a
     * random permutation, residual scale b / keep */
    int64_t k = (int64_t)((double)b * (1.0 - rate));
    if (k < 1) k = 1;
    dv_rng_permutation(&r, perm_scratch, b);
    memcpy(idx, perm_scratch, (size_t)k * sizeof *idx);
    qsort(idx, (size_t)k, sizeof *idx, cmp_i64_);
    *keep = k;
    *scale = (float)((double)b / (double)k);
}

/* Fill a branch record for block i: full, or the kept crops of every group. */
static void select_branch_(dv_vit_acts *a, const dv_vit *m, const dv_vit_fwd_opts *o, int64_t block,
                           int branch, dv_vit_branch *br) {
    const double rate = dv_vit_drop_rate(&m->cfg, block);
    br->full = 1;
    br->nrows = a->T;
    br->nseg = 0;
    if (!o || !o->training || !(rate > 0.0)) return;
    int64_t nrows = 0, nseg = 0, all = 1;
    int64_t *idx = a->perm + 0; /* keep list and permutation share a->perm (size >= 2·b) */
    for (int64_t g = 0; g < a->ngroups; g++) {
        const dv_vit_group_layout *gl = &a->grp[g];
        int64_t keep = 0;
        float scale = 1.0f;
        /* a->perm holds max_tokens >= 2·n entries (every crop has >= 2 tokens) */
        dv_vit_droppath_subset(o->seed, o->step, block, branch, g, gl->n, rate, o->droppath_rule,
                               idx, &keep, &scale, a->perm + gl->n);
        br->grp_start[g] = nrows;
        br->grp_scale[g] = scale;
        if (keep != gl->n || scale != 1.0f) all = 0;
        for (int64_t k = 0; k < keep; k++) {
            const int64_t row = gl->row0 + idx[k] * gl->L;
            br->seg[nseg].offset = nrows;
            br->seg[nseg].length = gl->L;
            nseg++;
            for (int64_t t = 0; t < gl->L; t++) br->rows[nrows + t] = row + t;
            nrows += gl->L;
        }
    }
    br->grp_start[a->ngroups] = nrows;
    if (all) return;
    br->full = 0;
    br->nrows = nrows;
    br->nseg = nseg;
}

/* x += branch output y (scaled, LayerScale'd) over the branch's rows. */
static int branch_add_(const dv_backend *be, float *x, const float *y, const float *gamma,
                       const dv_vit_branch *br, int64_t T, int64_t D, int64_t ngroups) {
    if (br->full) return be->layerscale_residual_forward(be->ctx, x, y, gamma, T, D);
    for (int64_t g = 0; g < ngroups; g++) {
        const int64_t s = br->grp_start[g], n = br->grp_start[g + 1] - s;
        if (n > 0)
            DV_TRY(be->layerscale_residual_subset_forward(be->ctx, x, y + s * D, br->rows + s, n,
                                                          gamma, br->grp_scale[g], D));
    }
    return DV_OK;
}

/* dy (rows of the branch, D) from dx; dgamma accumulates. */
static int branch_add_backward_(const dv_backend *be, float *dy, float *dgamma, const float *dx,
                                const float *y, const float *gamma, const dv_vit_branch *br,
                                int64_t T, int64_t D, int64_t ngroups) {
    if (br->full) return be->layerscale_residual_backward(be->ctx, dy, dgamma, dx, y, gamma, T, D);
    for (int64_t g = 0; g < ngroups; g++) {
        const int64_t s = br->grp_start[g], n = br->grp_start[g + 1] - s;
        if (n > 0)
            DV_TRY(be->layerscale_residual_subset_backward(be->ctx, dy + s * D, dgamma, dx,
                                                           y + s * D, br->rows + s, n, gamma,
                                                           br->grp_scale[g], D));
    }
    return DV_OK;
}

/* ---- forward --------------------------------------------------------------------------------- */

static int prepare_tokens_(const dv_vit *m, const float *w, dv_vit_acts *a) {
    const dv_vit_config *c = &m->cfg;
    const int64_t D = c->embed_dim, R = c->num_register_tokens, p = c->patch_size, M = m->grid;
    const float *cls = P_(m, w, m->cls_token), *pos = P_(m, w, m->pos_embed);
    const float *reg = P_(m, w, m->register_tokens), *mtok = P_(m, w, m->mask_token);
    const dv_backend *be = BE_(m);
    for (int64_t g = 0; g < a->ngroups; g++) {
        const dv_vit_group_layout *gl = &a->grp[g];
        const int64_t L = gl->L, P = gl->P, n = gl->n;
        float *X = a->x0 + gl->row0 * D;
        DV_TRY(be->patch_embed_forward(be->ctx, X + (1 + R) * D, a->cols, gl->images,
                                       P_(m, w, m->pe_w), P_(m, w, m->pe_b), n, 3, gl->H, gl->W,
                                       p, D, L));
        const float *pe = pos;
        if (!pos_embed_is_identity(M, gl->H, gl->W, p)) {
            const size_t need = be->pos_embed_workspace_size(
                be->ctx, M, D, gl->h0, gl->w0, c->interpolate_offset, c->interpolate_antialias);
            DV_TRY(grow_(&a->pos_work, &a->pos_work_bytes, need));
            DV_TRY(be->pos_embed_forward(be->ctx, a->pos, pos, M, D, gl->h0, gl->w0,
                                         c->interpolate_offset, c->interpolate_antialias,
                                         a->pos_work, a->pos_work_bytes));
            pe = a->pos;
        }
        const uint8_t *masks = gl->masks;
#pragma omp parallel for schedule(static)
        for (int64_t t = 0; t < n * L; t++) {
            const int64_t ci = t / L, j = t % L;
            float *row = X + t * D;
            if (j == 0) {
                for (int64_t d = 0; d < D; d++) row[d] = cls[d] + pe[d];
            } else if (j <= R) {
                memcpy(row, reg + (j - 1) * D, (size_t)D * sizeof *row);
            } else {
                const int64_t q = j - 1 - R; /* patch index */
                const float *pr = pe + (1 + q) * D;
                if (masks && masks[ci * P + q]) memcpy(row, mtok, (size_t)D * sizeof *row);
                for (int64_t d = 0; d < D; d++) row[d] += pr[d];
            }
        }
    }
    return DV_OK;
}

static int block_forward_(const dv_vit *m, const float *w, dv_vit_acts *a, int64_t i,
                          const dv_vit_fwd_opts *o) {
    const dv_vit_config *c = &m->cfg;
    const dv_vit_block_params *bp = &m->blk[i];
    dv_vit_block_acts *b = &a->blk[i];
    const dv_backend *be = BE_(m);
    void *ctx = be->ctx;
    const int64_t T = a->T, D = c->embed_dim, NH = c->num_heads, Hf = c->ffn_hidden;
    const float eps = (float)c->norm_eps;
    float *x_in = a->xs[i], *x_mid = b->x_mid, *x_out = a->xs[i + 1];

    /* attention branch */
    dv_vit_branch *br = &b->br[0];
    select_branch_(a, m, o, i, 0, br);
    int64_t Ts = br->nrows;
    if (Ts > 0) {
        const float *src = x_in;
        const attention_segment *seg = a->seg;
        int64_t nseg = a->ncrops;
        if (!br->full) {
            gather_rows_(a->s_x, x_in, br->rows, Ts, D);
            src = a->s_x;
            seg = br->seg;
            nseg = br->nseg;
        }
        DV_TRY(be->layernorm_forward(ctx, a->s_ln, b->ln1_mean, b->ln1_rstd, src,
                                     P_(m, w, bp->norm1_w), P_(m, w, bp->norm1_b), Ts, D, eps));
        DV_TRY(be->linear_forward(ctx, b->qkv, a->s_ln, P_(m, w, bp->qkv_w), P_(m, w, bp->qkv_b),
                                  Ts, D, 3 * D));
        DV_TRY(be->attention_forward(ctx, b->att, b->lse, b->qkv, seg, nseg, Ts, D, NH,
                                     a->att_work, a->att_work_floats));
        DV_TRY(be->linear_forward(ctx, b->y1, b->att, P_(m, w, bp->proj_w), P_(m, w, bp->proj_b),
                                  Ts, D, D));
    }
    copy_(x_mid, x_in, T * D);
    if (Ts > 0) DV_TRY(branch_add_(be, x_mid, b->y1, P_(m, w, bp->ls1), br, T, D, a->ngroups));

    /* FFN branch */
    br = &b->br[1];
    select_branch_(a, m, o, i, 1, br);
    Ts = br->nrows;
    if (Ts > 0) {
        const float *src = x_mid;
        if (!br->full) {
            gather_rows_(a->s_x, x_mid, br->rows, Ts, D);
            src = a->s_x;
        }
        DV_TRY(be->layernorm_forward(ctx, a->s_ln, b->ln2_mean, b->ln2_rstd, src,
                                     P_(m, w, bp->norm2_w), P_(m, w, bp->norm2_b), Ts, D, eps));
        switch (c->ffn) {
        case DV_FFN_MLP:
            DV_TRY(be->linear_forward(ctx, b->h_pre, a->s_ln, P_(m, w, bp->fc1_w),
                                      P_(m, w, bp->fc1_b), Ts, D, Hf));
            DV_TRY(be->gelu_forward(ctx, a->s_h, b->h_pre, Ts * Hf));
            DV_TRY(be->linear_forward(ctx, b->y2, a->s_h, P_(m, w, bp->fc2_w),
                                      P_(m, w, bp->fc2_b), Ts, Hf, D));
            break;
        case DV_FFN_SWIGLU:
            DV_TRY(be->linear_forward(ctx, b->h_pre, a->s_ln, P_(m, w, bp->fc1_w),
                                      P_(m, w, bp->fc1_b), Ts, D, 2 * Hf));
            DV_TRY(be->swiglu_forward(ctx, a->s_h, b->h_pre, Ts, Hf));
            DV_TRY(be->linear_forward(ctx, b->y2, a->s_h, P_(m, w, bp->fc2_w),
                                      P_(m, w, bp->fc2_b), Ts, Hf, D));
            break;
        case DV_FFN_IDENTITY: copy_(b->y2, a->s_ln, Ts * D); break;
        }
    }
    copy_(x_out, x_mid, T * D);
    if (Ts > 0) DV_TRY(branch_add_(be, x_out, b->y2, P_(m, w, bp->ls2), br, T, D, a->ngroups));
    return DV_OK;
}

int dv_vit_forward(const dv_vit *m, const float *w, dv_vit_acts *a, const dv_vit_group *groups,
                   int64_t ngroups, const dv_vit_fwd_opts *opts) {
    const dv_vit_config *c = &m->cfg;
    const dv_backend *be = BE_(m);
    const int64_t D = c->embed_dim, R = c->num_register_tokens, p = c->patch_size;
    if (ngroups < 1) return DV_ERR(DV_ERR_ARG, "dv_vit_forward: no crop groups");
    if (a->D != D || a->R != R)
        return DV_ERR(DV_ERR_ARG, "dv_vit_forward: activations were created for another model");
    int64_t T = 0, ncrops = 0, Lmax = 0;
    for (int64_t g = 0; g < ngroups; g++) {
        const dv_vit_group *gr = &groups[g];
        if (gr->n < 1 || gr->H < p || gr->W < p || gr->H % p || gr->W % p || !gr->images)
            return DV_ERR(DV_ERR_ARG,
                          "dv_vit_forward: group %lld: %lld crops of %lldx%lld (need >= 1 crop, "
                          "sides positive multiples of patch %lld, images)",
                          (long long)g, (long long)gr->n, (long long)gr->H, (long long)gr->W,
                          (long long)p);
        const int64_t L = 1 + R + (gr->H / p) * (gr->W / p);
        T += gr->n * L;
        ncrops += gr->n;
        if (L > Lmax) Lmax = L;
    }
    if (T > a->max_tokens)
        return DV_ERR(DV_ERR_ARG,
                      "dv_vit_forward: %lld tokens exceed the %lld the activations hold",
                      (long long)T, (long long)a->max_tokens);
    const int n_inter = opts ? opts->n_inter : 0;
    if (n_inter < 0 || n_inter > a->max_inter)
        return DV_ERR(DV_ERR_ARG, "dv_vit_forward: %d intermediate outputs requested, acts hold %d",
                      n_inter, a->max_inter);
    for (int k = 0; k < n_inter; k++)
        if (opts->inter_blocks[k] < 0 || opts->inter_blocks[k] >= c->depth)
            return DV_ERR(DV_ERR_ARG, "dv_vit_forward: intermediate block %lld outside 0..%lld",
                          (long long)opts->inter_blocks[k], (long long)c->depth - 1);
    /* layout */
    a->T = T;
    a->ncrops = ncrops;
    a->ngroups = ngroups;
    a->fwd_training = opts ? opts->training : 0;
    int64_t row = 0, crop = 0;
    for (int64_t g = 0; g < ngroups; g++) {
        const dv_vit_group *gr = &groups[g];
        dv_vit_group_layout *gl = &a->grp[g];
        gl->n = gr->n;
        gl->H = gr->H;
        gl->W = gr->W;
        gl->h0 = gr->H / p;
        gl->w0 = gr->W / p;
        gl->P = gl->h0 * gl->w0;
        gl->L = 1 + R + gl->P;
        gl->row0 = row;
        gl->crop0 = crop;
        gl->images = gr->images;
        gl->masks = gr->masks;
        for (int64_t k = 0; k < gr->n; k++) {
            a->seg[crop + k].offset = row + k * gl->L;
            a->seg[crop + k].length = gl->L;
        }
        row += gr->n * gl->L;
        crop += gr->n;
    }
    a->n_inter = n_inter;
    for (int k = 0; k < n_inter; k++) a->inter_blocks[k] = opts->inter_blocks[k];
    const size_t need = be->attention_workspace_floats(be->ctx, Lmax, 0);
    if (need > a->att_work_floats) {
        float *aw = realloc(a->att_work, need * sizeof *aw);
        if (!aw)
            return DV_ERR(DV_ERR_NOMEM, "out of memory (attention workspace, %zu floats)", need);
        a->att_work = aw;
        a->att_work_floats = need;
    }

    const dv_vit_unit_fn hook = opts ? opts->unit_hook : NULL;
    void *hctx = opts ? opts->unit_ctx : NULL;
    if (hook) DV_TRY(hook(hctx, 0, DV_VIT_UNIT_FWD));
    DV_TRY(prepare_tokens_(m, w, a));
    for (int64_t i = 0; i < c->depth; i++) {
        if (hook) DV_TRY(hook(hctx, i + 1, DV_VIT_UNIT_FWD));
        DV_TRY(block_forward_(m, w, a, i, opts));
        for (int k = 0; k < n_inter; k++)
            if (a->inter_blocks[k] == i) {
                copy_(a->inter_raw[k], a->xs[i + 1], T * D);
                DV_TRY(be->layernorm_forward(be->ctx, a->inter_norm[k], a->inter_mean[k],
                                             a->inter_rstd[k], a->xs[i + 1], P_(m, w, m->norm_w),
                                             P_(m, w, m->norm_b), T, D, (float)c->norm_eps));
            }
    }
    return be->layernorm_forward(be->ctx, a->x_norm, a->norm_mean, a->norm_rstd, a->x_prenorm,
                                 P_(m, w, m->norm_w), P_(m, w, m->norm_b), T, D,
                                 (float)c->norm_eps);
}

/* ---- backward -------------------------------------------------------------------------------- */

/* LayerNorm backward of a branch input: straight into g_x (full) or via g_sub and a scatter. */
static int branch_ln_backward_(const dv_backend *be, dv_vit_acts *a, const dv_vit_branch *br,
                               const float *dln, const float *x_full, const float *x_sub,
                               const float *mean, const float *rstd, const float *gamma,
                               float *dgamma, float *dbeta, int64_t D) {
    if (br->full)
        return be->layernorm_backward(be->ctx, a->g_x, dgamma, dbeta, dln, x_full, mean, rstd,
                                      gamma, a->T, D, 1);
    DV_TRY(be->layernorm_backward(be->ctx, a->g_sub, dgamma, dbeta, dln, x_sub, mean, rstd, gamma,
                                  br->nrows, D, 0));
    scatter_add_rows_(a->g_x, a->g_sub, br->rows, br->nrows, D);
    return DV_OK;
}

static int block_backward_(const dv_vit *m, const float *w, float *grad, dv_vit_acts *a,
                           int64_t i) {
    const dv_vit_config *c = &m->cfg;
    const dv_vit_block_params *bp = &m->blk[i];
    dv_vit_block_acts *b = &a->blk[i];
    const dv_backend *be = BE_(m);
    void *ctx = be->ctx;
    const int64_t T = a->T, D = c->embed_dim, NH = c->num_heads, Hf = c->ffn_hidden;
    const float eps = (float)c->norm_eps;
    const float *x_in = a->xs[i], *x_mid = b->x_mid;

    /* FFN branch: g_x holds dloss/dx_out */
    const dv_vit_branch *br = &b->br[1];
    int64_t Ts = br->nrows;
    if (Ts > 0) {
        DV_TRY(branch_add_backward_(be, a->g_y, G_(m, grad, bp->ls2), a->g_x, b->y2,
                                    P_(m, w, bp->ls2), br, T, D, a->ngroups));
        const float *src = x_mid;
        if (!br->full) {
            gather_rows_(a->s_x, x_mid, br->rows, Ts, D);
            src = a->s_x;
        }
        /* LayerNorm output recomputed: the same rows give the same statistics, bit for bit */
        DV_TRY(be->layernorm_forward(ctx, a->s_ln, NULL, NULL, src, P_(m, w, bp->norm2_w),
                                     P_(m, w, bp->norm2_b), Ts, D, eps));
        const float *dln = a->g_ln;
        switch (c->ffn) {
        case DV_FFN_MLP:
            DV_TRY(be->gelu_forward(ctx, a->s_h, b->h_pre, Ts * Hf));
            DV_TRY(be->linear_backward(ctx, a->g_h, G_(m, grad, bp->fc2_w),
                                       G_(m, grad, bp->fc2_b), a->g_y, a->s_h,
                                       P_(m, w, bp->fc2_w), Ts, Hf, D, 0));
            DV_TRY(be->gelu_backward(ctx, a->g_h, a->g_h, b->h_pre, Ts * Hf));
            DV_TRY(be->linear_backward(ctx, a->g_ln, G_(m, grad, bp->fc1_w),
                                       G_(m, grad, bp->fc1_b), a->g_h, a->s_ln,
                                       P_(m, w, bp->fc1_w), Ts, D, Hf, 0));
            break;
        case DV_FFN_SWIGLU:
            DV_TRY(be->swiglu_forward(ctx, a->s_h, b->h_pre, Ts, Hf));
            /* dW3 from the hidden activations first, then dhidden over them (no aliasing) */
            DV_TRY(be->linear_backward(ctx, NULL, G_(m, grad, bp->fc2_w), G_(m, grad, bp->fc2_b),
                                       a->g_y, a->s_h, P_(m, w, bp->fc2_w), Ts, Hf, D, 0));
            DV_TRY(be->gemm_f32(ctx, 0, 0, Ts, Hf, D, 1.0f, a->g_y, D, P_(m, w, bp->fc2_w), Hf,
                                0.0f, a->s_h, Hf));
            DV_TRY(be->swiglu_backward(ctx, a->g_h, a->s_h, b->h_pre, Ts, Hf));
            DV_TRY(be->linear_backward(ctx, a->g_ln, G_(m, grad, bp->fc1_w),
                                       G_(m, grad, bp->fc1_b), a->g_h, a->s_ln,
                                       P_(m, w, bp->fc1_w), Ts, D, 2 * Hf, 0));
            break;
        case DV_FFN_IDENTITY: dln = a->g_y; break;
        }
        DV_TRY(branch_ln_backward_(be, a, br, dln, x_mid, a->s_x, b->ln2_mean, b->ln2_rstd,
                                   P_(m, w, bp->norm2_w), G_(m, grad, bp->norm2_w),
                                   G_(m, grad, bp->norm2_b), D));
    }

    /* attention branch: g_x holds dloss/dx_mid */
    br = &b->br[0];
    Ts = br->nrows;
    if (Ts > 0) {
        DV_TRY(branch_add_backward_(be, a->g_y, G_(m, grad, bp->ls1), a->g_x, b->y1,
                                    P_(m, w, bp->ls1), br, T, D, a->ngroups));
        const float *src = x_in;
        const attention_segment *seg = a->seg;
        int64_t nseg = a->ncrops;
        if (!br->full) {
            gather_rows_(a->s_x, x_in, br->rows, Ts, D);
            src = a->s_x;
            seg = br->seg;
            nseg = br->nseg;
        }
        DV_TRY(be->linear_backward(ctx, a->g_att, G_(m, grad, bp->proj_w),
                                   G_(m, grad, bp->proj_b), a->g_y, b->att, P_(m, w, bp->proj_w),
                                   Ts, D, D, 0));
        DV_TRY(be->attention_backward(ctx, a->g_qkv, a->g_att, b->qkv, b->lse, seg, nseg, Ts, D,
                                      NH, a->att_work, a->att_work_floats));
        DV_TRY(be->layernorm_forward(ctx, a->s_ln, NULL, NULL, src, P_(m, w, bp->norm1_w),
                                     P_(m, w, bp->norm1_b), Ts, D, eps));
        DV_TRY(be->linear_backward(ctx, a->g_ln, G_(m, grad, bp->qkv_w), G_(m, grad, bp->qkv_b),
                                   a->g_qkv, a->s_ln, P_(m, w, bp->qkv_w), Ts, D, 3 * D, 0));
        DV_TRY(branch_ln_backward_(be, a, br, a->g_ln, x_in, a->s_x, b->ln1_mean, b->ln1_rstd,
                                   P_(m, w, bp->norm1_w), G_(m, grad, bp->norm1_w),
                                   G_(m, grad, bp->norm1_b), D));
    }
    return DV_OK;
}

static int tokens_backward_(const dv_vit *m, const float *w, float *grad, dv_vit_acts *a,
                            float *const *dimages) {
    const dv_vit_config *c = &m->cfg;
    const int64_t D = c->embed_dim, R = c->num_register_tokens, p = c->patch_size, M = m->grid;
    float *gcls = G_(m, grad, m->cls_token), *gpos = G_(m, grad, m->pos_embed);
    float *greg = G_(m, grad, m->register_tokens), *gmask = G_(m, grad, m->mask_token);
    const dv_backend *be = BE_(m);
    void *ctx = be->ctx;
    for (int64_t g = 0; g < a->ngroups; g++) {
        const dv_vit_group_layout *gl = &a->grp[g];
        const int64_t L = gl->L, P = gl->P, n = gl->n;
        float *G = a->g_x + gl->row0 * D;
        /* positional embedding of the group: Σ over crops of the cls and patch rows */
        float *dpe = a->pos; /* (1 + P, D) */
        zero_(dpe, (1 + P) * D);
        DV_TRY(be->linear_bias_backward(ctx, dpe, G, n, D, L * D));
        DV_TRY(be->linear_bias_backward(ctx, dpe + D, G + (1 + R) * D, n, P * D, L * D));
        add_into_(gcls, dpe, D);
        if (pos_embed_is_identity(M, gl->H, gl->W, p)) {
            add_into_(gpos, dpe, (1 + P) * D);
        } else {
            const size_t need = be->pos_embed_workspace_size(
                ctx, M, D, gl->h0, gl->w0, c->interpolate_offset, c->interpolate_antialias);
            DV_TRY(grow_(&a->pos_work, &a->pos_work_bytes, need));
            DV_TRY(be->pos_embed_backward(ctx, gpos, dpe, M, D, gl->h0, gl->w0,
                                          c->interpolate_offset, c->interpolate_antialias,
                                          a->pos_work, a->pos_work_bytes));
        }
        for (int64_t r = 0; r < R; r++)
            DV_TRY(be->linear_bias_backward(ctx, greg + r * D, G + (1 + r) * D, n, D, L * D));
        /* masked patches: their gradient goes to mask_token, not to the patch embedding */
        if (gl->masks) {
            for (int64_t ci = 0; ci < n; ci++)
                for (int64_t q = 0; q < P; q++)
                    if (gl->masks[ci * P + q]) {
                        float *row = G + (ci * L + 1 + R + q) * D;
                        for (int64_t d = 0; d < D; d++) gmask[d] += row[d];
                        memset(row, 0, (size_t)D * sizeof *row);
                    }
        }
        DV_TRY(be->patch_embed_backward(ctx, dimages ? dimages[g] : NULL, G_(m, grad, m->pe_w),
                                        G_(m, grad, m->pe_b), a->cols, G + (1 + R) * D,
                                        gl->images, P_(m, w, m->pe_w), n, 3, gl->H, gl->W, p, D,
                                        L));
    }
    return DV_OK;
}

int dv_vit_backward(const dv_vit *m, const float *w, float *grad, dv_vit_acts *a,
                    const dv_vit_grads_in *gin, float *const *dimages) {
    const dv_vit_config *c = &m->cfg;
    const dv_backend *be = BE_(m);
    const int64_t T = a->T, D = c->embed_dim;
    if (!a->training)
        return DV_ERR(DV_ERR_ARG, "dv_vit_backward: activations were created for inference");
    if (T <= 0) return DV_ERR(DV_ERR_ARG, "dv_vit_backward: no forward to differentiate");
    static const dv_vit_grads_in none = {NULL, NULL, NULL, NULL, NULL, NULL};
    if (!gin) gin = &none;
    const dv_vit_unit_fn hook = gin->unit_hook;
    if (hook) DV_TRY(hook(gin->unit_ctx, 0, DV_VIT_UNIT_BWD));
    if (gin->d_prenorm)
        copy_(a->g_x, gin->d_prenorm, T * D);
    else
        zero_(a->g_x, T * D);
    if (gin->d_norm)
        DV_TRY(be->layernorm_backward(be->ctx, a->g_x, G_(m, grad, m->norm_w),
                                      G_(m, grad, m->norm_b), gin->d_norm, a->x_prenorm,
                                      a->norm_mean, a->norm_rstd, P_(m, w, m->norm_w), T, D, 1));
    for (int64_t i = c->depth - 1; i >= 0; i--) {
        for (int k = 0; k < a->n_inter; k++) {
            if (a->inter_blocks[k] != i) continue;
            if (gin->d_inter_raw && gin->d_inter_raw[k])
                add_into_(a->g_x, gin->d_inter_raw[k], T * D);
            if (gin->d_inter_norm && gin->d_inter_norm[k])
                DV_TRY(be->layernorm_backward(be->ctx, a->g_x, G_(m, grad, m->norm_w),
                                              G_(m, grad, m->norm_b), gin->d_inter_norm[k],
                                              a->xs[i + 1], a->inter_mean[k], a->inter_rstd[k],
                                              P_(m, w, m->norm_w), T, D, 1));
        }
        if (hook) DV_TRY(hook(gin->unit_ctx, i + 1, DV_VIT_UNIT_BWD));
        DV_TRY(block_backward_(m, w, grad, a, i));
        if (hook) DV_TRY(hook(gin->unit_ctx, i + 1, DV_VIT_UNIT_GRAD_DONE));
    }
    DV_TRY(tokens_backward_(m, w, grad, a, dimages));
    return hook ? hook(gin->unit_ctx, 0, DV_VIT_UNIT_GRAD_DONE) : DV_OK;
}

/* ---- packed outputs ----------------------------------------------------------------------------
 */

static void part_range_(const dv_vit_acts *a, int64_t g, dv_vit_part part, int64_t *off,
                        int64_t *cnt) {
    const dv_vit_group_layout *gl = &a->grp[g];
    switch (part) {
    case DV_VIT_CLS: *off = 0, *cnt = 1; break;
    case DV_VIT_REG: *off = 1, *cnt = a->R; break;
    case DV_VIT_PATCH: *off = 1 + a->R, *cnt = gl->P; break;
    default: *off = 0, *cnt = gl->L; break;
    }
}

void dv_vit_gather(float *dst, const float *packed, const dv_vit_acts *a, int64_t g,
                   dv_vit_part part) {
    const dv_vit_group_layout *gl = &a->grp[g];
    int64_t off, cnt;
    part_range_(a, g, part, &off, &cnt);
    const int64_t D = a->D;
    for (int64_t ci = 0; ci < gl->n; ci++)
        memcpy(dst + ci * cnt * D, packed + (gl->row0 + ci * gl->L + off) * D,
               (size_t)(cnt * D) * sizeof *dst);
}

void dv_vit_scatter_add(float *packed, const float *src, const dv_vit_acts *a, int64_t g,
                        dv_vit_part part) {
    const dv_vit_group_layout *gl = &a->grp[g];
    int64_t off, cnt;
    part_range_(a, g, part, &off, &cnt);
    const int64_t D = a->D;
    for (int64_t ci = 0; ci < gl->n; ci++) {
        float *d = packed + (gl->row0 + ci * gl->L + off) * D;
        const float *s = src + ci * cnt * D;
        for (int64_t k = 0; k < cnt * D; k++) d[k] += s[k];
    }
}

/* ---- FLOP counts ------------------------------------------------------------------------------
 */

double dv_vit_forward_flops(const dv_vit *m, const dv_vit_group *groups, int64_t ngroups) {
    const dv_vit_config *c = &m->cfg;
    const double D = (double)c->embed_dim, Hf = (double)c->ffn_hidden;
    const double K = 3.0 * (double)(c->patch_size * c->patch_size);
    const int64_t p = c->patch_size, R = c->num_register_tokens;
    double f = 0.0;
    for (int64_t g = 0; g < ngroups; g++) {
        const double n = (double)groups[g].n;
        const double P = (double)((groups[g].H / p) * (groups[g].W / p)), L = 1.0 + (double)R + P;
        double blk = 2.0 * n * L * D * (3.0 * D) /* qkv */ + 4.0 * n * L * L * D /* QKᵀ, PV */ +
                     2.0 * n * L * D * D /* proj */;
        if (c->ffn == DV_FFN_MLP)
            blk += 4.0 * n * L * D * Hf;
        else if (c->ffn == DV_FFN_SWIGLU)
            blk += 6.0 * n * L * D * Hf;
        f += 2.0 * n * P * K * D + (double)c->depth * blk;
    }
    return f;
}

double dv_vit_backward_flops(const dv_vit *m, const dv_vit_group *groups, int64_t ngroups,
                             int with_dimages) {
    const dv_vit_config *c = &m->cfg;
    const double D = (double)c->embed_dim, Hf = (double)c->ffn_hidden;
    const double K = 3.0 * (double)(c->patch_size * c->patch_size);
    const int64_t p = c->patch_size, R = c->num_register_tokens;
    double f = 0.0;
    for (int64_t g = 0; g < ngroups; g++) {
        const double n = (double)groups[g].n;
        const double P = (double)((groups[g].H / p) * (groups[g].W / p)), L = 1.0 + (double)R + P;
        double lin = 2.0 * n * L * D * (3.0 * D) + 2.0 * n * L * D * D;
        if (c->ffn == DV_FFN_MLP)
            lin += 4.0 * n * L * D * Hf;
        else if (c->ffn == DV_FFN_SWIGLU)
            lin += 6.0 * n * L * D * Hf;
        /* dX and dW of every Linear; attention: QKᵀ recompute, dV, dP, dQ, dK */
        const double blk = 2.0 * lin + 10.0 * n * L * L * D;
        f += (with_dimages ? 2.0 : 1.0) * 2.0 * n * P * K * D + (double)c->depth * blk;
    }
    return f;
}
