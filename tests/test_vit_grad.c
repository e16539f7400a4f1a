/* test_vit_grad — the ViT backbone's backward by finite differences, stochastic depth, the
 * parameter table, the official initialisation and the weight files.
 *
 * Gradient checks: a tiny random model (D = 16, 2 heads, depth 2, patch 4, pos-embed grid 4,
 * 2 registers, LayerScale, MLP and SwiGLU) on a packed batch of two resolutions (2 crops of
 * 12x12 → interpolated pos embed; 3 crops of 16x16 → the table as is) with masked patches.
 * loss = Σ R1·x_norm + Σ R2·x_prenorm + Σ R3·inter_norm(block 0) + Σ R4·inter_raw(block 0),
 * accumulated in double from the fp32 forward. For every parameter tensor (and each group's
 * images) a sample of elements (first, last, two random) is checked against central
 * differences: num = (L(θ+ε) − L(θ−ε)) / (2ε) with ε = 2e-3 (the step actually taken after fp32
 * rounding). Error per tensor: max |analytic − num| / max(max |num|, 1e-2) over its sample;
 * tolerance 2e-2 (fp32 rounding noise of the loss, ~1e-6, divided by 2ε, plus O(ε²)
 * truncation: about 1e-3 of typical gradients here).
 *
 * Stochastic depth: the kept subset is a pure function of (seed, step, block, branch, group),
 * keep = max(int(b·(1−rate)), 1), scale b/keep; a training forward at rate 0.5 equals an
 * explicit per-crop computation on those subsets; its gradient passes the same FD check; the
 * per-sample DropPath rule (tensor path, rate 0.05) likewise.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"
#include "h5util.h"
#include "ops.h"
#include "params.h"
#include "rng.h"
#include "tap.h"
#include "vit.h"
#include "weights.h"

#define FD_EPS 2e-3f
#define FD_TOL 2e-2

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(99);
    }
    return p;
}

static float urand(dv_rng *r, float lo, float hi) { return lo + (hi - lo) * dv_rng_uniform(r); }

/* ---- the tiny model and batch ---------------------------------------------------------------- */

typedef struct {
    dv_vit m;
    float *w;
    dv_vit_acts *a;
    dv_vit_group gs[2];
    float *img[2];
    uint8_t *mask[2];
    dv_vit_fwd_opts o;
    int64_t T, D;
    float *R[4]; /* (T, D) each: x_norm, x_prenorm, inter_norm[0], inter_raw[0] */
} model_t;

/* variant 0: as described above; 1: no biases, no LayerScale, no registers; 2: identity FFN */
static int make_model_v(model_t *t, dv_ffn_kind ffn, double offset, int aa, double drop,
                        uint64_t seed, int variant) {
    memset(t, 0, sizeof *t);
    dv_vit_config c;
    dv_vit_config_defaults(&c);
    c.patch_size = 4;
    c.embed_dim = 16;
    c.depth = 2;
    c.num_heads = 2;
    c.ffn = ffn;
    c.num_register_tokens = 2;
    c.img_size = 16;
    c.layerscale = 1e-5;
    c.interpolate_offset = offset;
    c.interpolate_antialias = aa;
    c.drop_path_rate = drop;
    c.drop_path_uniform = 1;
    if (variant == 1) {
        c.qkv_bias = c.proj_bias = c.ffn_bias = 0;
        c.layerscale = 0.0;
        c.num_register_tokens = 0;
    } else if (variant == 2) {
        c.ffn = DV_FFN_IDENTITY;
    }
    DV_TRY(dv_vit_init(&t->m, &c));
    t->D = c.embed_dim;
    t->w = xmalloc(t->m.params.numel * sizeof *t->w);
    DV_TRY(dv_vit_init_weights(&t->m, t->w, seed));
    /* random values everywhere, so biases, LayerScale and tokens all matter */
    dv_rng r;
    dv_rng_init(&r, seed, DV_RNG_TEST, 1, 0);
    for (int i = 0; i < t->m.params.n; i++) {
        const dv_param *p = &t->m.params.t[i];
        float *x = t->w + p->offset;
        const size_t len = strlen(p->name);
        const int is_gamma = strstr(p->name, ".gamma") != NULL;
        const int is_normw = strstr(p->name, "norm") && strcmp(p->name + len - 7, ".weight") == 0;
        const float a = p->ndim == 2 && strstr(p->name, "blocks.")
                            ? 1.0f / sqrtf((float)p->shape[1])
                        : strcmp(p->name, "patch_embed.proj.weight") == 0 ? 0.15f
                                                                          : 0.5f;
        for (size_t k = 0; k < p->numel; k++)
            x[k] = is_gamma   ? urand(&r, 0.3f, 0.8f)
                   : is_normw ? 1.0f + urand(&r, -0.2f, 0.2f)
                              : urand(&r, -a, a);
    }
    /* batch: 2 crops 12x12 (3x3 patches, interpolated pos embed), 3 crops 16x16 (4x4, table) */
    const int64_t n[2] = {2, 3}, S[2] = {12, 16}, P[2] = {9, 16};
    for (int g = 0; g < 2; g++) {
        const int64_t cnt = n[g] * 3 * S[g] * S[g];
        t->img[g] = xmalloc((size_t)cnt * sizeof(float));
        for (int64_t k = 0; k < cnt; k++) t->img[g][k] = urand(&r, -1.0f, 1.0f);
        t->mask[g] = calloc((size_t)(n[g] * P[g]), 1);
        t->gs[g] = (dv_vit_group){
            .n = n[g], .H = S[g], .W = S[g], .images = t->img[g], .masks = t->mask[g]};
    }
    t->mask[0][1] = t->mask[0][4] = 1;                                 /* crop 0 of group 0 */
    t->mask[1][16 + 0] = t->mask[1][16 + 5] = t->mask[1][16 + 15] = 1; /* crop 1 of group 1 */
    t->T = dv_vit_tokens(&t->m, t->gs, 2);
    DV_TRY(dv_vit_acts_create(&t->m, t->T, 1, 1, &t->a));
    static const int64_t inter0[1] = {0};
    t->o = (dv_vit_fwd_opts){
        .training = 0, .seed = 7, .step = 3, .n_inter = 1, .inter_blocks = inter0};
    for (int k = 0; k < 4; k++) {
        t->R[k] = xmalloc((size_t)(t->T * t->D) * sizeof(float));
        for (int64_t i = 0; i < t->T * t->D; i++) t->R[k][i] = urand(&r, -1.0f, 1.0f);
    }
    return DV_OK;
}

static int make_model(model_t *t, dv_ffn_kind ffn, double offset, int aa, double drop,
                      uint64_t seed) {
    return make_model_v(t, ffn, offset, aa, drop, seed, 0);
}

static void free_model(model_t *t) {
    for (int g = 0; g < 2; g++) {
        free(t->img[g]);
        free(t->mask[g]);
    }
    for (int k = 0; k < 4; k++) free(t->R[k]);
    dv_vit_acts_free(t->a);
    free(t->w);
    dv_vit_free(&t->m);
}

static double dotd(const float *a, const float *b, int64_t n) {
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

static double loss_of(model_t *t) {
    if (dv_vit_forward(&t->m, t->w, t->a, t->gs, 2, &t->o) != DV_OK) return NAN;
    const int64_t n = t->T * t->D;
    return dotd(t->R[0], t->a->x_norm, n) + dotd(t->R[1], t->a->x_prenorm, n) +
           dotd(t->R[2], t->a->inter_norm[0], n) + dotd(t->R[3], t->a->inter_raw[0], n);
}

/* Analytic gradients of loss_of into grad (params) and dimg[g]. */
static int analytic(model_t *t, float *grad, float **dimg) {
    DV_TRY(dv_vit_forward(&t->m, t->w, t->a, t->gs, 2, &t->o));
    const float *dn[1] = {t->R[2]}, *dr[1] = {t->R[3]};
    dv_vit_grads_in gi = {
        .d_norm = t->R[0], .d_prenorm = t->R[1], .d_inter_raw = dr, .d_inter_norm = dn};
    memset(grad, 0, t->m.params.numel * sizeof *grad);
    return dv_vit_backward(&t->m, t->w, grad, t->a, &gi, dimg);
}

/* FD error of a sample of x[0..n) against ana[0..n). */
static double fd_err(model_t *t, float *x, const float *ana, int64_t n, dv_rng *r, int nsamp,
                     double *maxnum_out) {
    int64_t idx[8];
    int k = 0;
    idx[k++] = 0;
    if (n > 1) idx[k++] = n - 1;
    while (k < nsamp && k < n) idx[k++] = dv_rng_int(r, 0, n - 1);
    double maxdiff = 0.0, maxnum = 0.0;
    for (int s = 0; s < k; s++) {
        const int64_t i = idx[s];
        const float v = x[i], vp = v + FD_EPS, vm = v - FD_EPS;
        x[i] = vp;
        const double lp = loss_of(t);
        x[i] = vm;
        const double lm = loss_of(t);
        x[i] = v;
        const double num = (lp - lm) / ((double)vp - (double)vm);
        const double d = fabs(num - (double)ana[i]);
        if (!(d <= maxdiff)) maxdiff = d;
        if (fabs(num) > maxnum) maxnum = fabs(num);
    }
    if (maxnum_out) *maxnum_out = maxnum;
    return maxdiff / (maxnum > 1e-2 ? maxnum : 1e-2);
}

static void fd_check_all(model_t *t, const char *label) {
    float *grad = xmalloc(t->m.params.numel * sizeof *grad);
    float *dimg[2];
    for (int g = 0; g < 2; g++)
        dimg[g] = xmalloc((size_t)(t->gs[g].n * 3 * t->gs[g].H * t->gs[g].W) * sizeof(float));
    int st = analytic(t, grad, dimg);
    if (!tap_ok(st == DV_OK, "%s: forward + backward", label)) goto done;
    dv_rng r;
    dv_rng_init(&r, 11, DV_RNG_TEST, 2, 0);
    double worst = 0.0;
    const char *worst_name = "";
    int nbad = 0;
    for (int i = 0; i < t->m.params.n; i++) {
        const dv_param *p = &t->m.params.t[i];
        double mx;
        const double e =
            fd_err(t, t->w + p->offset, grad + p->offset, (int64_t)p->numel, &r, 4, &mx);
        if (!(e <= worst)) {
            worst = e;
            worst_name = p->name;
        }
        if (!(e <= FD_TOL)) {
            nbad++;
            tap_diag("%s: %s FD error %.3g (max |num| %.3g)", label, p->name, e, mx);
        }
    }
    tap_diag("%s: worst parameter FD error %.3g (%s) over %d tensors", label, worst, worst_name,
             t->m.params.n);
    tap_ok(nbad == 0, "%s: FD of every parameter tensor (%d tensors, worst %.2g <= %.0e)", label,
           t->m.params.n, worst, FD_TOL);
    for (int g = 0; g < 2; g++) {
        double mx;
        float *img = (float *)t->gs[g].images;
        const int64_t n = t->gs[g].n * 3 * t->gs[g].H * t->gs[g].W;
        const double e = fd_err(t, img, dimg[g], n, &r, 8, &mx);
        tap_diag("%s: images of group %d FD error %.3g (max |num| %.3g)", label, g, e, mx);
        tap_ok(e <= FD_TOL, "%s: FD of the input images, group %d", label, g);
    }
done:
    free(grad);
    free(dimg[0]);
    free(dimg[1]);
}

/* ---- explicit stochastic-depth reference ------------------------------------------------------
 */

static const float *PW(const model_t *t, int idx) {
    return idx >= 0 ? t->w + t->m.params.t[idx].offset : NULL;
}

/* Block i on one crop's tokens x (L, D), in place; branch b runs when on[b], scaled s[b]. */
static void ref_block(const model_t *t, int64_t i, float *x, int64_t L, const int on[2],
                      const float s[2]) {
    const dv_vit_config *c = &t->m.cfg;
    const dv_vit_block_params *bp = &t->m.blk[i];
    const int64_t D = c->embed_dim, Hf = c->ffn_hidden;
    float *ln = xmalloc((size_t)(L * D) * sizeof(float)),
          *y = xmalloc((size_t)(L * D) * sizeof(float));
    float *qkv = xmalloc((size_t)(L * 3 * D) * sizeof(float)),
          *att = xmalloc((size_t)(L * D) * sizeof(float));
    float *h = xmalloc((size_t)(L * 2 * Hf) * sizeof(float)),
          *ha = xmalloc((size_t)(L * Hf) * sizeof(float));
    size_t nw = attention_workspace_floats(L, 1);
    float *work = xmalloc(nw * sizeof(float));
    attention_segment seg = {0, L};
    if (on[0]) {
        layernorm_forward(ln, NULL, NULL, x, PW(t, bp->norm1_w), PW(t, bp->norm1_b), L, D, 1e-6f);
        linear_forward(qkv, ln, PW(t, bp->qkv_w), PW(t, bp->qkv_b), L, D, 3 * D);
        attention_forward(att, NULL, qkv, &seg, 1, L, D, c->num_heads, work, nw);
        linear_forward(y, att, PW(t, bp->proj_w), PW(t, bp->proj_b), L, D, D);
        const float *gm = PW(t, bp->ls1);
        for (int64_t k = 0; k < L * D; k++) x[k] += s[0] * (y[k] * gm[k % D]);
    }
    if (on[1]) {
        layernorm_forward(ln, NULL, NULL, x, PW(t, bp->norm2_w), PW(t, bp->norm2_b), L, D, 1e-6f);
        if (c->ffn == DV_FFN_MLP) {
            linear_forward(h, ln, PW(t, bp->fc1_w), PW(t, bp->fc1_b), L, D, Hf);
            gelu_forward(ha, h, L * Hf);
        } else {
            linear_forward(h, ln, PW(t, bp->fc1_w), PW(t, bp->fc1_b), L, D, 2 * Hf);
            swiglu_forward(ha, h, L, Hf);
        }
        linear_forward(y, ha, PW(t, bp->fc2_w), PW(t, bp->fc2_b), L, Hf, D);
        const float *gm = PW(t, bp->ls2);
        for (int64_t k = 0; k < L * D; k++) x[k] += s[1] * (y[k] * gm[k % D]);
    }
    free(ln);
    free(y);
    free(qkv);
    free(att);
    free(h);
    free(ha);
    free(work);
}

/* Training forward vs the explicit per-crop computation on the subsets of
 * dv_vit_droppath_subset. Returns max |err| / RMS. */
static double sd_reference_err(model_t *t, dv_vit_droppath_rule rule, int64_t *rows_ran) {
    t->o.training = 1;
    t->o.droppath_rule = rule;
    if (dv_vit_forward(&t->m, t->w, t->a, t->gs, 2, &t->o) != DV_OK) return INFINITY;
    const dv_vit_acts *a = t->a;
    const int64_t D = t->D, depth = t->m.cfg.depth;
    double maxerr = 0.0, ss = 0.0;
    *rows_ran = 0;
    for (int64_t i = 0; i < depth; i++)
        for (int b = 0; b < 2; b++) *rows_ran += a->blk[i].br[b].nrows;
    for (int64_t g = 0; g < a->ngroups; g++) {
        const dv_vit_group_layout *gl = &a->grp[g];
        int on[8][2][16];
        float sc[8][2];
        for (int64_t i = 0; i < depth; i++)
            for (int b = 0; b < 2; b++) {
                int64_t idx[16], perm[16], keep;
                dv_vit_droppath_subset(t->o.seed, t->o.step, i, b, g, gl->n,
                                       dv_vit_drop_rate(&t->m.cfg, i), rule, idx, &keep, &sc[i][b],
                                       perm);
                memset(on[i][b], 0, sizeof on[i][b]);
                for (int64_t k = 0; k < keep; k++) on[i][b][idx[k]] = 1;
            }
        float *x = xmalloc((size_t)(gl->L * D) * sizeof(float));
        float *xn = xmalloc((size_t)(gl->L * D) * sizeof(float));
        for (int64_t ci = 0; ci < gl->n; ci++) {
            memcpy(x, a->x0 + (gl->row0 + ci * gl->L) * D, (size_t)(gl->L * D) * sizeof(float));
            for (int64_t i = 0; i < depth; i++) {
                const int o2[2] = {on[i][0][ci], on[i][1][ci]};
                ref_block(t, i, x, gl->L, o2, sc[i]);
            }
            layernorm_forward(xn, NULL, NULL, x, PW(t, t->m.norm_w), PW(t, t->m.norm_b), gl->L, D,
                              1e-6f);
            const float *got = a->x_norm + (gl->row0 + ci * gl->L) * D;
            for (int64_t k = 0; k < gl->L * D; k++) {
                const double e = fabs((double)got[k] - xn[k]);
                if (!(e <= maxerr)) maxerr = e;
                ss += (double)xn[k] * xn[k];
            }
        }
        free(x);
        free(xn);
    }
    return maxerr / sqrt(ss / (double)(a->T * D));
}

static void test_stochastic_depth(void) {
    /* the subset function */
    int ok_keep = 1, ok_det = 1, ok_sorted = 1;
    const double rates[3] = {0.5, 0.4, 0.9};
    for (int ri = 0; ri < 3; ri++)
        for (int64_t b = 1; b <= 12; b++) {
            int64_t idx[12], idx2[12], perm[12], keep, keep2;
            float sc, sc2;
            dv_vit_droppath_subset(5, 9, 3, 1, 2, b, rates[ri], DV_DROPPATH_LIST, idx, &keep, &sc,
                                   perm);
            dv_vit_droppath_subset(5, 9, 3, 1, 2, b, rates[ri], DV_DROPPATH_LIST, idx2, &keep2,
                                   &sc2, perm);
            int64_t want = (int64_t)((double)b * (1.0 - rates[ri]));
            if (want < 1) want = 1;
            if (keep != want || sc != (float)((double)b / (double)want)) ok_keep = 0;
            if (keep2 != keep || memcmp(idx, idx2, (size_t)keep * sizeof *idx) != 0 || sc != sc2)
                ok_det = 0;
            for (int64_t k = 0; k < keep; k++)
                if (idx[k] < 0 || idx[k] >= b || (k && idx[k] <= idx[k - 1])) ok_sorted = 0;
        }
    tap_ok(ok_keep,
           "drop path: keep = max(int(b(1-rate)), 1), scale b/keep (b 1..12, rates .5 .4 .9)");
    tap_ok(ok_det, "drop path: the subset is a pure function of its key");
    tap_ok(ok_sorted, "drop path: kept indices distinct, ascending, in range");
    /* different steps / blocks / branches / groups give different subsets */
    int distinct = 0, ndraw = 0;
    int64_t first[5], perm[10], keep;
    float sc;
    dv_vit_droppath_subset(5, 0, 0, 0, 0, 10, 0.5, DV_DROPPATH_LIST, first, &keep, &sc, perm);
    for (uint64_t step = 1; step < 20; step++)
        for (int br = 0; br < 2; br++) {
            int64_t idx[10];
            dv_vit_droppath_subset(5, step, 1, br, 1, 10, 0.5, DV_DROPPATH_LIST, idx, &keep, &sc,
                                   perm);
            distinct += memcmp(idx, first, 5 * sizeof *idx) != 0;
            ndraw++;
        }
    tap_ok(distinct >= ndraw - 2, "drop path: other keys give other subsets (%d of %d differ)",
           distinct, ndraw);
    /* per-sample DropPath rule (tensor path, rate <= 0.1) */
    int64_t kept_total = 0;
    for (uint64_t step = 0; step < 200; step++) {
        int64_t idx[10];
        dv_vit_droppath_subset(5, step, 0, 0, 0, 10, 0.1, DV_DROPPATH_TENSOR, idx, &keep, &sc,
                               perm);
        kept_total += keep;
    }
    tap_ok(sc == 1.0f / 0.9f && kept_total > 1700 && kept_total < 1900,
           "drop path (tensor rule, rate 0.1): Bernoulli keep 0.9 (kept %lld of 2000), scale 1/0.9",
           (long long)kept_total);
    int64_t idx[10];
    dv_vit_droppath_subset(5, 0, 0, 0, 0, 10, 0.11, DV_DROPPATH_TENSOR, idx, &keep, &sc, perm);
    tap_ok(keep == 8, "drop path (tensor rule, rate 0.11 > 0.1): subset method, keep %lld == 8",
           (long long)keep);

    /* drop rates */
    dv_vit_config c;
    dv_vit_config_defaults(&c);
    c.depth = 4;
    c.drop_path_rate = 0.3;
    c.drop_path_uniform = 0;
    const double r0 = dv_vit_drop_rate(&c, 0), r1 = dv_vit_drop_rate(&c, 1),
                 r3 = dv_vit_drop_rate(&c, 3);
    tap_ok(r0 == 0.0 && fabs(r1 - 0.1) < 1e-7 && r3 == (double)0.3f,
           "drop rates linspace(0, 0.3, 4) in float32: %.9g %.9g %.9g", r0, r1, r3);
    c.drop_path_uniform = 1;
    tap_ok(dv_vit_drop_rate(&c, 0) == 0.3, "drop rate uniform");

    for (int f = 0; f < 2; f++) {
        model_t t;
        const char *label = f ? "swiglu rate 0.5" : "mlp rate 0.5";
        if (!tap_ok(make_model(&t, f ? DV_FFN_SWIGLU : DV_FFN_MLP, 0.1, 0, 0.5, 21) == DV_OK,
                    "%s: model", label))
            continue;
        int64_t ran = 0;
        const double e = sd_reference_err(&t, DV_DROPPATH_LIST, &ran);
        tap_diag("%s: training forward vs explicit subsets: max_err/rms %.3g; rows computed "
                 "%lld of %lld",
                 label, e, (long long)ran, (long long)(4 * t.T));
        tap_ok(e <= 1e-5, "%s: training forward equals the explicit per-crop computation", label);
        tap_ok(ran < 4 * t.T, "%s: branches ran on fewer rows than the batch", label);
        /* determinism and dependence on the step */
        float *y1 = xmalloc((size_t)(t.T * t.D) * sizeof(float));
        memcpy(y1, t.a->x_norm, (size_t)(t.T * t.D) * sizeof(float));
        dv_vit_forward(&t.m, t.w, t.a, t.gs, 2, &t.o);
        tap_ok(memcmp(y1, t.a->x_norm, (size_t)(t.T * t.D) * sizeof(float)) == 0,
               "%s: same (seed, step) → bit-identical output", label);
        t.o.step = 4;
        dv_vit_forward(&t.m, t.w, t.a, t.gs, 2, &t.o);
        tap_ok(memcmp(y1, t.a->x_norm, (size_t)(t.T * t.D) * sizeof(float)) != 0,
               "%s: another step → another output", label);
        free(y1);
        fd_check_all(&t, label);
        /* eval mode: no drop path */
        t.o.training = 0;
        const double le = loss_of(&t);
        t.o.training = 1;
        t.m.cfg.drop_path_rate = 0.0;
        const double lt = loss_of(&t);
        tap_ok(le == lt, "%s: eval forward == training forward at rate 0", label);
        t.m.cfg.drop_path_rate = 0.5;
        free_model(&t);
    }
    {
        model_t t;
        if (tap_ok(make_model(&t, DV_FFN_MLP, 0.0, 1, 0.05, 23) == DV_OK, "tensor rule: model")) {
            int64_t ran = 0;
            const double e = sd_reference_err(&t, DV_DROPPATH_TENSOR, &ran);
            tap_diag("tensor rule rate 0.05: vs explicit per-sample DropPath: %.3g", e);
            tap_ok(e <= 1e-5, "tensor rule rate 0.05: per-sample DropPath equals the explicit "
                              "computation");
            t.o.training = 1;
            t.o.droppath_rule = DV_DROPPATH_TENSOR;
            t.o.step = 1; /* a step where some crop is dropped */
            for (uint64_t s = 1; s < 50; s++) {
                t.o.step = s;
                dv_vit_forward(&t.m, t.w, t.a, t.gs, 2, &t.o);
                int dropped = 0;
                for (int b = 0; b < 2; b++)
                    for (int64_t i = 0; i < 2; i++) dropped |= t.a->blk[i].br[b].nrows < t.T;
                if (dropped) break;
            }
            tap_diag("tensor rule: step %llu drops a crop", (unsigned long long)t.o.step);
            fd_check_all(&t, "tensor rule rate 0.05");
            free_model(&t);
        }
    }
}

/* ---- parameter table ---------------------------------------------------------------------------
 */

static int64_t count_params(const char *arch, int R, dv_ffn_kind ffn, int64_t img) {
    dv_vit_config c;
    if (dv_vit_config_preset(&c, arch, 14) != DV_OK) return -1;
    c.num_register_tokens = R;
    c.ffn = ffn;
    c.img_size = img;
    dv_vit m;
    if (dv_vit_init(&m, &c) != DV_OK) return -1;
    int64_t n = (int64_t)m.params.numel;
    dv_vit_free(&m);
    return n;
}

static void test_param_table(void) {
    /* the official parameter counts of the hub models (518 px, incl. mask_token) */
    const struct {
        const char *arch;
        int R;
        dv_ffn_kind ffn;
        int64_t want;
    } hub[] = {
        {"vit_small", 0, DV_FFN_MLP, 22056576},       {"vit_small", 4, DV_FFN_MLP, 22058112},
        {"vit_base", 0, DV_FFN_MLP, 86580480},        {"vit_base", 4, DV_FFN_MLP, 86583552},
        {"vit_large", 0, DV_FFN_MLP, 304368640},      {"vit_large", 4, DV_FFN_MLP, 304372736},
        {"vit_giant2", 0, DV_FFN_SWIGLU, 1136480768}, {"vit_giant2", 4, DV_FFN_SWIGLU, 1136486912}};
    for (size_t k = 0; k < sizeof hub / sizeof hub[0]; k++) {
        const int64_t n = count_params(hub[k].arch, hub[k].R, hub[k].ffn, 518);
        tap_ok(n == hub[k].want, "%s%s /14 at 518: %lld parameters (official %lld)", hub[k].arch,
               hub[k].R ? "_reg4" : "", (long long)n, (long long)hub[k].want);
    }
    dv_vit_config c;
    dv_vit_config_preset(&c, "vit_giant2", 14);
    c.ffn = DV_FFN_SWIGLU;
    tap_ok(dv_vit_ffn_hidden(&c) == 4096, "giant2 SwiGLU hidden 4096");
    dv_vit_config_preset(&c, "vit_large", 14);
    c.ffn = DV_FFN_SWIGLU;
    tap_ok(dv_vit_ffn_hidden(&c) == 2736, "large SwiGLU hidden 2736");

    dv_vit_config_preset(&c, "vit_large_memeff", 16);
    c.num_register_tokens = 4;
    dv_vit m;
    if (!tap_ok(dv_vit_init(&m, &c) == DV_OK, "vit_large/16 with 4 registers")) return;
    const dv_param_table *tab = &m.params;
    int uniq = 1, contig = 1, flags_ok = 1, layers_ok = 1;
    size_t off = 0;
    for (int i = 0; i < tab->n; i++) {
        const dv_param *p = &tab->t[i];
        for (int j = 0; j < i; j++)
            if (strcmp(p->name, tab->t[j].name) == 0) uniq = 0;
        if (p->offset != off) contig = 0;
        off += p->numel;
        const size_t len = strlen(p->name);
        const int no_wd = (len > 5 && strcmp(p->name + len - 5, ".bias") == 0) ||
                          strstr(p->name, "norm") || strstr(p->name, "gamma");
        if (!!(p->flags & DV_PARAM_NO_WD) != no_wd) {
            flags_ok = 0;
            tap_diag("wd flag of %s", p->name);
        }
        if (!!(p->flags & DV_PARAM_PATCH_EMBED) != (strncmp(p->name, "patch_embed.", 12) == 0))
            flags_ok = 0;
        if (p->flags & DV_PARAM_LAST_LAYER) flags_ok = 0;
        int want;
        long bi;
        if (!strcmp(p->name, "cls_token") || !strcmp(p->name, "pos_embed") ||
            !strcmp(p->name, "mask_token") || !strncmp(p->name, "patch_embed.", 12))
            want = 0;
        else if (sscanf(p->name, "blocks.%ld.", &bi) == 1)
            want = (int)bi + 1;
        else
            want = 25; /* norm.*, and register_tokens (the official rule does not list it) */
        if (p->layer_id != want) {
            layers_ok = 0;
            tap_diag("layer id of %s: %d, want %d", p->name, p->layer_id, want);
        }
    }
    tap_ok(uniq, "table: names unique (%d tensors)", tab->n);
    tap_ok(contig && off == tab->numel, "table: offsets contiguous, total %zu", tab->numel);
    tap_ok(flags_ok, "table: no weight decay exactly for .bias / norm / gamma (official; "
                     "pos_embed, tokens decayed), patch_embed flagged");
    tap_ok(layers_ok, "table: layer ids 0 embeddings, i+1 blocks, depth+1 final norm");
    const int i_cls = dv_params_find(tab, "cls_token"),
              i_q = dv_params_find(tab, "blocks.0.attn.qkv.weight"),
              i_pe = dv_params_find(tab, "patch_embed.proj.weight"),
              i_n = dv_params_find(tab, "norm.weight"),
              i_23 = dv_params_find(tab, "blocks.23.ls2.gamma");
    tap_ok(i_cls == 0 && i_q >= 0 && dv_params_find(tab, "nope") == -1 &&
               tab->t[i_q].shape[0] == 3072 && tab->t[i_q].shape[1] == 1024,
           "table: lookup by name, qkv shape (3072,1024)");
    /* official lr multipliers of vitl16_short (layerwise decay 0.9, patch_embed 0.2) */
    tap_close(dv_param_lr_mult(&tab->t[i_q], 24, 0.9, 0.2), pow(0.9, 24), 1e-12,
              "lr mult block 0 = 0.9^24");
    tap_close(dv_param_lr_mult(&tab->t[i_23], 24, 0.9, 0.2), 0.9, 1e-12, "lr mult block 23 = 0.9");
    tap_close(dv_param_lr_mult(&tab->t[i_n], 24, 0.9, 0.2), 1.0, 1e-12, "lr mult final norm = 1");
    tap_close(dv_param_lr_mult(&tab->t[i_cls], 24, 0.9, 0.2), pow(0.9, 25), 1e-12,
              "lr mult cls = 0.9^25");
    tap_close(dv_param_lr_mult(&tab->t[i_pe], 24, 0.9, 0.2), 0.2 * pow(0.9, 25), 1e-12,
              "lr mult patch_embed = 0.2 * 0.9^25");
    tap_ok(dv_param_wd_mult(&tab->t[i_cls]) == 1.0 && dv_param_wd_mult(&tab->t[i_n]) == 0.0,
           "wd mult cls_token 1, norm 0");
    /* heads and chunked names through the generic rules */
    tap_ok(dv_param_official_layer_id("blocks.1.7.attn.qkv.weight", 24, 1) == 8,
           "chunked key blocks.1.7 → layer 8");
    tap_ok(dv_param_official_flags("last_layer.weight_g") == DV_PARAM_LAST_LAYER &&
               dv_param_official_layer_id("mlp.0.weight", 0, 0) == 1,
           "head names: last_layer flagged, layer id 1");
    int dup_idx;
    int64_t shp[1] = {4};
    dv_param_table t2;
    dv_params_init(&t2, 0);
    dv_params_add(&t2, "a.bias", 1, shp, -1, 0, &dup_idx);
    fprintf(stderr, "(an error line about a duplicate name is expected next)\n");
    tap_ok(dv_params_add(&t2, "a.bias", 1, shp, -1, 0, NULL) == DV_ERR_ARG,
           "duplicate name refused");
    dv_params_free(&t2);
    dv_vit_free(&m);
}

/* ---- initialisation ----------------------------------------------------------------------------
 */

static void stats(const float *x, size_t n, double *mean, double *std, double *amax) {
    double s = 0, ss = 0, mx = 0;
    for (size_t i = 0; i < n; i++) {
        s += x[i];
        ss += (double)x[i] * x[i];
        if (fabs(x[i]) > mx) mx = fabs(x[i]);
    }
    *mean = s / (double)n;
    *std = sqrt(ss / (double)n - *mean * *mean);
    *amax = mx;
}

static void test_init(void) {
    dv_vit_config c;
    dv_vit_config_preset(&c, "vit_small", 14);
    c.embed_dim = 192;
    c.num_heads = 3;
    c.depth = 2;
    c.num_register_tokens = 4;
    c.layerscale = 1e-5;
    dv_vit m, m3;
    if (!tap_ok(dv_vit_init(&m, &c) == DV_OK, "init model D=192 depth 2")) return;
    float *w = xmalloc(m.params.numel * sizeof *w), *w2 = xmalloc(m.params.numel * sizeof *w2);
    dv_vit_init_weights(&m, w, 42);
    dv_vit_init_weights(&m, w2, 42);
    tap_ok(memcmp(w, w2, m.params.numel * sizeof *w) == 0, "init: same seed, same bits");
    dv_vit_init_weights(&m, w2, 43);
    tap_ok(memcmp(w, w2, m.params.numel * sizeof *w) != 0, "init: another seed, other values");
    /* each tensor from its own stream: a deeper model shares the leading tensors exactly */
    c.depth = 3;
    dv_vit_init(&m3, &c);
    float *w3 = xmalloc(m3.params.numel * sizeof *w3);
    dv_vit_init_weights(&m3, w3, 42);
    const int iq = dv_params_find(&m.params, "blocks.1.mlp.fc2.weight");
    const int iq3 = dv_params_find(&m3.params, "blocks.1.mlp.fc2.weight");
    tap_ok(memcmp(w + m.params.t[iq].offset, w3 + m3.params.t[iq3].offset,
                  m.params.t[iq].numel * sizeof *w) == 0,
           "init: tensor streams keyed by tensor index (depth 2 and 3 models agree on block 1)");
    free(w3);
    dv_vit_free(&m3);
    double mean, std, amax;
    int all_ok = 1;
    for (int i = 0; i < m.params.n; i++) {
        const dv_param *p = &m.params.t[i];
        const float *x = w + p->offset;
        stats(x, p->numel, &mean, &std, &amax);
        const size_t len = strlen(p->name);
        int ok;
        const char *rule;
        if (!strcmp(p->name, "cls_token") || !strcmp(p->name, "register_tokens")) {
            ok = std > 0.7e-6 && std < 1.3e-6 && amax < 6e-6;
            rule = "normal(std 1e-6)";
        } else if (!strcmp(p->name, "pos_embed") ||
                   (strstr(p->name, "blocks.") && !strcmp(p->name + len - 7, ".weight") &&
                    !strstr(p->name, "norm"))) {
            ok = fabs(std - 0.02) < 0.02 * 0.03 && fabs(mean) < 1e-3 && amax <= 2.0 && amax < 0.2;
            rule = "trunc_normal(std 0.02, [-2, 2])";
        } else if (!strcmp(p->name, "mask_token") ||
                   (!strcmp(p->name + len - 5, ".bias") && strncmp(p->name, "patch_embed", 11))) {
            ok = amax == 0.0;
            rule = "zeros";
        } else if (strstr(p->name, "gamma")) {
            ok = amax == (float)1e-5 && std < 1e-12;
            rule = "layerscale init";
        } else if (strstr(p->name, "norm")) {
            ok = !strcmp(p->name + len - 7, ".weight") ? (mean == 1.0 && std == 0.0) : amax == 0.0;
            rule = "LayerNorm (1, 0)";
        } else { /* patch_embed.proj.weight / bias: U(±1/sqrt(3·14·14)) */
            const double bound = 1.0 / sqrt(3.0 * 14 * 14);
            ok = amax <= bound && amax > 0.9 * bound &&
                 (p->numel < 1000 || fabs(std - bound / sqrt(3.0)) < 0.03 * bound / sqrt(3.0));
            rule = "U(-1/sqrt(fan_in), 1/sqrt(fan_in))";
        }
        if (!ok) all_ok = 0;
        if (!ok || i < 8 || strstr(p->name, "blocks.0.attn.qkv"))
            tap_diag("init %s: %s mean %.3g std %.4g max|x| %.4g%s", p->name, rule, mean, std, amax,
                     ok ? "" : "  <-- FAIL");
    }
    tap_ok(all_ok, "init: every tensor follows the official rule (see diagnostics)");
    free(w);
    free(w2);
    dv_vit_free(&m);
}

/* ---- weight files --------------------------------------------------------------------------- */

typedef struct {
    int saved;
    FILE *tmp;
} capture_t;

static void capture_begin(capture_t *c) {
    fflush(stderr);
    c->tmp = tmpfile();
    c->saved = dup(2);
    if (c->tmp) dup2(fileno(c->tmp), 2);
}

static void capture_end(capture_t *c, char *buf, size_t len) {
    fflush(stderr);
    dup2(c->saved, 2);
    close(c->saved);
    buf[0] = '\0';
    if (!c->tmp) return;
    rewind(c->tmp);
    size_t n = fread(buf, 1, len - 1, c->tmp);
    buf[n] = '\0';
    fclose(c->tmp);
}

static void test_weights(const char *tmpdir) {
    model_t t;
    if (!tap_ok(make_model(&t, DV_FFN_SWIGLU, 0.0, 1, 0.2, 31) == DV_OK, "weights: model")) return;
    char path[4096], msg[4096];
    snprintf(path, sizeof path, "%s/w.h5", tmpdir);
    tap_ok(dv_weights_save(path, &t.m, t.w) == DV_OK, "weights: save");
    dv_vit m2;
    float *w2 = NULL;
    int st = dv_weights_load(path, &m2, &w2);
    if (tap_ok(st == DV_OK, "weights: load")) {
        tap_ok(m2.params.numel == t.m.params.numel &&
                   memcmp(w2, t.w, t.m.params.numel * sizeof *w2) == 0,
               "weights: round trip bit-exact");
        const dv_vit_config *a = &t.m.cfg, *b = &m2.cfg;
        tap_ok(a->patch_size == b->patch_size && a->embed_dim == b->embed_dim &&
                   a->depth == b->depth && a->num_heads == b->num_heads && a->ffn == b->ffn &&
                   a->ffn_hidden == b->ffn_hidden &&
                   a->num_register_tokens == b->num_register_tokens && a->img_size == b->img_size &&
                   a->layerscale == b->layerscale && a->qkv_bias == b->qkv_bias &&
                   a->proj_bias == b->proj_bias && a->ffn_bias == b->ffn_bias &&
                   a->norm_eps == b->norm_eps && a->interpolate_offset == b->interpolate_offset &&
                   a->interpolate_antialias == b->interpolate_antialias &&
                   a->drop_path_rate == b->drop_path_rate && a->image_std[2] == b->image_std[2],
               "weights: architecture attributes round trip");
        free(w2);
        dv_vit_free(&m2);
    }
    /* under a group prefix, beside other content */
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    st = dv_weights_write(f, "teacher/backbone", &t.m, t.w);
    float *w3 = calloc(t.m.params.numel, sizeof *w3);
    dv_vit_config c3;
    int st2 = dv_vit_config_read_h5(f, "teacher/backbone", &c3, path);
    int st3 = dv_weights_read(f, "teacher/backbone", &t.m, w3, path, DV_WEIGHTS_CHECK_FINITE);
    tap_ok(st == DV_OK && st2 == DV_OK && st3 == DV_OK && c3.embed_dim == 16 &&
               memcmp(w3, t.w, t.m.params.numel * sizeof *w3) == 0,
           "weights: write/read under prefix teacher/backbone");
    /* root read with the group present: groups are not tensors */
    tap_ok(dv_weights_read(f, "", &t.m, w3, path, 0) == DV_OK, "weights: sub-groups are ignored");
    /* first mismatch by name */
    H5Ldelete(f, "blocks.1.attn.qkv.weight", H5P_DEFAULT);
    hsize_t dims[2] = {48, 8};
    hid_t s = H5Screate_simple(2, dims, NULL);
    hid_t d = H5Dcreate2(f, "blocks.1.attn.qkv.weight", H5T_IEEE_F32LE, s, H5P_DEFAULT, H5P_DEFAULT,
                         H5P_DEFAULT);
    H5Dclose(d);
    H5Sclose(s);
    H5Ldelete(f, "norm.bias", H5P_DEFAULT);
    capture_t cap;
    capture_begin(&cap);
    st = dv_weights_read(f, "", &t.m, w3, "w.h5", 0);
    capture_end(&cap, msg, sizeof msg);
    tap_diag("message: %s", msg);
    tap_ok(st == DV_ERR_FORMAT &&
               strcmp(msg, "error: w.h5: blocks.1.attn.qkv.weight has shape (48,8), expected "
                           "(48,16)\n") == 0,
           "weights: first mismatch reported by name and shapes");
    /* fix it; the missing tensor is next */
    H5Ldelete(f, "blocks.1.attn.qkv.weight", H5P_DEFAULT);
    dims[1] = 16;
    s = H5Screate_simple(2, dims, NULL);
    d = H5Dcreate2(f, "blocks.1.attn.qkv.weight", H5T_IEEE_F32LE, s, H5P_DEFAULT, H5P_DEFAULT,
                   H5P_DEFAULT);
    H5Dclose(d);
    H5Sclose(s);
    capture_begin(&cap);
    st = dv_weights_read(f, "", &t.m, w3, "w.h5", 0);
    capture_end(&cap, msg, sizeof msg);
    tap_diag("message: %s", msg);
    tap_ok(st == DV_ERR_FORMAT &&
               strcmp(msg, "error: w.h5: missing tensor norm.bias (expected shape (16))\n") == 0,
           "weights: missing tensor named");
    /* put it back; add an extra tensor */
    dims[0] = 16;
    s = H5Screate_simple(1, dims, NULL);
    d = H5Dcreate2(f, "norm.bias", H5T_IEEE_F32LE, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dclose(d);
    d = H5Dcreate2(f, "blocks.7.mlp.fc1.weight", H5T_IEEE_F32LE, s, H5P_DEFAULT, H5P_DEFAULT,
                   H5P_DEFAULT);
    H5Dclose(d);
    H5Sclose(s);
    capture_begin(&cap);
    st = dv_weights_read(f, "", &t.m, w3, "w.h5", 0);
    capture_end(&cap, msg, sizeof msg);
    tap_diag("message: %s", msg);
    tap_ok(st == DV_ERR_FORMAT && strstr(msg, "unexpected tensor blocks.7.mlp.fc1.weight (16)"),
           "weights: unexpected extra tensor named");
    tap_ok(dv_weights_read(f, "", &t.m, w3, "w.h5", DV_WEIGHTS_ALLOW_EXTRA) == DV_OK,
           "weights: extra tensors allowed on request");
    /* non-finite values */
    const int iq = dv_params_find(&t.m.params, "blocks.0.ls2.gamma");
    t.w[t.m.params.t[iq].offset + 3] = NAN;
    dv_weights_write(f, "teacher/backbone", &t.m, t.w);
    capture_begin(&cap);
    st = dv_weights_read(f, "teacher/backbone", &t.m, w3, "w.h5", DV_WEIGHTS_CHECK_FINITE);
    capture_end(&cap, msg, sizeof msg);
    tap_diag("message: %s", msg);
    tap_ok(st == DV_ERR_FORMAT && strstr(msg, "teacher/backbone/blocks.0.ls2.gamma has 1 "
                                              "non-finite value (first at flat index 3: nan)"),
           "weights: non-finite value named");
    H5Fclose(f);
    /* a file of another architecture: the first tensor whose shape differs */
    dv_vit_config cw = t.m.cfg;
    cw.embed_dim = 32;
    cw.ffn_hidden = 0;
    dv_vit mw;
    dv_vit_init(&mw, &cw);
    float *ww = calloc(mw.params.numel, sizeof *ww);
    snprintf(path, sizeof path, "%s/w32.h5", tmpdir);
    dv_weights_save(path, &mw, ww);
    f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    capture_begin(&cap);
    st = dv_weights_read(f, "", &t.m, w3, "w32.h5", 0);
    capture_end(&cap, msg, sizeof msg);
    H5Fclose(f);
    tap_diag("message: %s", msg);
    tap_ok(st == DV_ERR_FORMAT &&
               strcmp(msg, "error: w32.h5: cls_token has shape (1,1,32), expected (1,1,16)\n") == 0,
           "weights: another width fails at the first tensor");
    remove(path);
    snprintf(path, sizeof path, "%s/w.h5", tmpdir);
    remove(path);
    free(ww);
    dv_vit_free(&mw);
    free(w3);
    free_model(&t);
}

static void test_golden_attrs(void) {
    const char *srcdir = getenv("srcdir");
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/golden/tiny_reg4.h5", srcdir && srcdir[0] ? srcdir : ".");
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    dv_vit_config c;
    int st = f >= 0 ? dv_vit_config_read_h5(f, "", &c, path) : DV_ERR_IO;
    if (f >= 0) H5Fclose(f);
    tap_ok(st == DV_OK && c.patch_size == 14 && c.embed_dim == 64 && c.depth == 2 &&
               c.num_heads == 2 && c.ffn == DV_FFN_MLP && c.ffn_hidden == 256 &&
               c.num_register_tokens == 4 && c.img_size == 56 && c.layerscale == 1e-5 &&
               c.qkv_bias && c.proj_bias && c.ffn_bias && c.norm_eps == 1e-6 &&
               c.interpolate_offset == 0.0 && c.interpolate_antialias == 1 &&
               fabsf(c.image_std[0] - 0.229f) < 1e-7f,
           "golden tiny_reg4.h5 attributes read (bool layerscale → 1e-5, antialias true)");
}

int main(void) {
    tap_no_plan();
    dv_h5_quiet();
    const char *td = getenv("TMPDIR");
    char tmpl[4096];
    snprintf(tmpl, sizeof tmpl, "%s/test_vit_grad.XXXXXX", td && td[0] ? td : "/tmp");
    char *tmpdir = mkdtemp(tmpl);

    test_param_table();
    test_init();
    for (int f = 0; f < 2; f++) {
        model_t t;
        const char *label = f ? "swiglu (offset 0, antialias)" : "mlp (offset 0.1)";
        const int st =
            make_model(&t, f ? DV_FFN_SWIGLU : DV_FFN_MLP, f ? 0.0 : 0.1, f, 0.0, 17 + f);
        if (tap_ok(st == DV_OK, "%s: model (%zu parameters, %lld tokens)", label,
                   st == DV_OK ? t.m.params.numel : 0, st == DV_OK ? (long long)t.T : 0LL)) {
            fd_check_all(&t, label);
            free_model(&t);
        }
    }
    for (int v = 1; v <= 2; v++) {
        model_t t;
        const char *label = v == 1 ? "mlp without biases, LayerScale, registers" : "identity FFN";
        const int st = make_model_v(&t, DV_FFN_MLP, 0.1, 0, 0.5, 19 + v, v);
        if (tap_ok(st == DV_OK, "%s: model (%d tensors)", label, st == DV_OK ? t.m.params.n : 0)) {
            t.o.training = v == 1; /* variant 1 also runs the subset branches without gamma */
            fd_check_all(&t, label);
            free_model(&t);
        }
    }
    test_stochastic_depth();
    if (tap_ok(tmpdir != NULL, "temporary directory")) {
        test_weights(tmpdir);
        rmdir(tmpdir);
    }
    test_golden_attrs();
    return tap_exit();
}
