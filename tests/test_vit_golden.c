/* test_vit_golden — the ViT backbone against the official PyTorch implementation.
 *
 * For each golden backbone (tests/golden/tiny_mlp.h5, tiny_reg4.h5, tiny_swiglu.h5; see
 * /work/shared/golden/README.md — written by facebookresearch/dinov2 b8931f7, float32 CPU):
 *   - the weights load from the file as it is (io/weights: root datasets + attributes);
 *   - eval-mode forward_features of golden/ (native), hires, lowres, rect and masked:
 *     x_norm_clstoken, x_norm_regtokens, x_norm_patchtokens, x_prenorm;
 *   - get_intermediate_layers(n = min(4, depth), return_class_token, norm = True / False);
 *   - golden/debug: tokens_in, every block-0 submodule output, block{i}_out;
 *   - golden/backward: loss = Σ R_cls·cls + Σ R_patch·patch (+ Σ R_reg·reg) on a masked input,
 *     the loss, grad_images and grad/<key> of every parameter;
 *   - packing: native + lowres crops as ONE packed forward equal the separate forwards (to
 *     1e-5 · RMS: OpenBLAS picks different kernels for different row counts, so the results
 *     may differ in the last bits; whether they are bit-identical is printed);
 *   - the inference activations (shared block buffers, in-place stream) give the same outputs.
 * Tolerance per output: max |err| <= 1e-4 · RMS(reference) (torch's own fp32 error is ~1e-6 of
 * the RMS). Every comparison prints max err and RMS. Files are read from
 * "$srcdir/tests/golden" (srcdir defaults to ".").
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "h5util.h"
#include "ops.h"
#include "tap.h"
#include "vit.h"
#include "weights.h"

#define TOL_REL 1e-4

/* worst max_err / rms per output family, over all files */
enum {
    FAM_FWD,
    FAM_MASKED,
    FAM_RES,
    FAM_INTER,
    FAM_DEBUG,
    FAM_LOSS,
    FAM_GIMG,
    FAM_GPARAM,
    FAM_PACK,
    FAM_N
};
static const char *fam_name[FAM_N] = {"forward (native)",
                                      "forward (masked)",
                                      "forward (hires/lowres/rect)",
                                      "intermediate layers",
                                      "debug (tokens, block-0 submodules, block outputs)",
                                      "backward loss",
                                      "backward grad_images",
                                      "backward parameter grads",
                                      "packed vs separate"};
static double fam_worst[FAM_N];

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(99);
    }
    return p;
}

/* Read a float dataset (any shape) into a new buffer; NULL when absent. */
static float *read_f32(hid_t f, const char *path, int64_t *numel) {
    if (H5Lexists(f, path, H5P_DEFAULT) <= 0) {
        H5Eclear2(H5E_DEFAULT);
        return NULL;
    }
    hid_t d = H5Dopen2(f, path, H5P_DEFAULT);
    if (d < 0) return NULL;
    hid_t s = H5Dget_space(d);
    hssize_t n = H5Sget_simple_extent_npoints(s);
    float *buf = xmalloc((size_t)n * sizeof *buf);
    if (H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
        free(buf);
        buf = NULL;
    }
    H5Sclose(s);
    H5Dclose(d);
    if (numel) *numel = (int64_t)n;
    return buf;
}

static uint8_t *read_u8(hid_t f, const char *path) {
    hid_t d = H5Dopen2(f, path, H5P_DEFAULT);
    if (d < 0) return NULL;
    hid_t s = H5Dget_space(d);
    hssize_t n = H5Sget_simple_extent_npoints(s);
    uint8_t *buf = xmalloc((size_t)n);
    H5Dread(d, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
    H5Sclose(s);
    H5Dclose(d);
    return buf;
}

static int64_t attr_i64(hid_t f, const char *obj, const char *name) {
    int64_t v = -1;
    hid_t a = H5Aopen_by_name(f, obj, name, H5P_DEFAULT, H5P_DEFAULT);
    if (a >= 0) {
        H5Aread(a, H5T_NATIVE_INT64, &v);
        H5Aclose(a);
    }
    return v;
}

/* max |got − ref| <= TOL_REL · RMS(ref); logs both. */
static int compare(int fam, const char *file, const char *what, const float *got, const float *ref,
                   int64_t n) {
    double maxerr = 0.0, ss = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const double e = fabs((double)got[i] - (double)ref[i]);
        if (!(e <= maxerr)) maxerr = e; /* NaN sticks */
        ss += (double)ref[i] * ref[i];
    }
    const double rms = n > 0 ? sqrt(ss / (double)n) : 0.0;
    const double ratio = rms > 0 ? maxerr / rms : maxerr;
    if (!(ratio <= fam_worst[fam])) fam_worst[fam] = ratio;
    tap_diag("%s %s: max_err %.3g rms %.3g (max_err/rms %.2g)", file, what, maxerr, rms, ratio);
    return tap_ok(maxerr <= TOL_REL * rms, "%s %s (n=%lld)", file, what, (long long)n);
}

typedef struct {
    const char *file; /* short name */
    hid_t f;
    dv_vit m;
    float *w;
    dv_vit_acts *a;
    int64_t D, R, depth;
} ctx_t;

/* Forward of one group of crops in eval mode. */
static int fwd_one(ctx_t *c, dv_vit_acts *a, const float *img, const uint8_t *masks, int64_t n,
                   int64_t H, int64_t W, int n_inter, const int64_t *inter) {
    dv_vit_group g = {.n = n, .H = H, .W = W, .images = img, .masks = masks};
    dv_vit_fwd_opts o = {.training = 0, .n_inter = n_inter, .inter_blocks = inter};
    return dv_vit_forward(&c->m, c->w, a, &g, 1, &o);
}

/* Compare the four forward_features outputs of group g with golden group `grp`. */
static void check_outputs(ctx_t *c, dv_vit_acts *a, int64_t g, const char *grp, int fam) {
    static const struct {
        const char *name;
        dv_vit_part part;
        int prenorm;
    } outs[] = {{"x_norm_clstoken", DV_VIT_CLS, 0},
                {"x_norm_regtokens", DV_VIT_REG, 0},
                {"x_norm_patchtokens", DV_VIT_PATCH, 0},
                {"x_prenorm", DV_VIT_ALL, 1}};
    for (size_t k = 0; k < 4; k++) {
        char path[256], what[256];
        snprintf(path, sizeof path, "%s/%s", grp, outs[k].name);
        if (outs[k].part == DV_VIT_REG && c->R == 0) continue;
        int64_t n = 0;
        float *ref = read_f32(c->f, path, &n);
        if (!ref) {
            tap_ok(0, "%s %s present", c->file, path);
            continue;
        }
        float *got = xmalloc((size_t)n * sizeof *got);
        dv_vit_gather(got, outs[k].prenorm ? a->x_prenorm : a->x_norm, a, g, outs[k].part);
        snprintf(what, sizeof what, "%s", path);
        compare(fam, c->file, what, got, ref, n);
        free(got);
        free(ref);
    }
}

static void test_resolution(ctx_t *c, const char *grp, int fam) {
    char path[256];
    snprintf(path, sizeof path, "%s/images", grp);
    int64_t n = attr_i64(c->f, grp, "N"), H = attr_i64(c->f, grp, "H"),
            W = attr_i64(c->f, grp, "W");
    float *img = read_f32(c->f, path, NULL);
    if (!img || n < 1) {
        tap_ok(0, "%s %s: images and N/H/W attributes", c->file, grp);
        free(img);
        return;
    }
    int st = fwd_one(c, c->a, img, NULL, n, H, W, 0, NULL);
    if (tap_ok(st == DV_OK, "%s %s: forward %lldx%lldx%lld", c->file, grp, (long long)n,
               (long long)H, (long long)W))
        check_outputs(c, c->a, 0, grp, fam);
    free(img);
}

static void test_masked(ctx_t *c, const float *img, int64_t n, int64_t H, int64_t W) {
    uint8_t *masks = read_u8(c->f, "golden/masked/masks");
    int st = fwd_one(c, c->a, img, masks, n, H, W, 0, NULL);
    if (tap_ok(st == DV_OK && masks, "%s masked forward", c->file))
        check_outputs(c, c->a, 0, "golden/masked", FAM_MASKED);
    free(masks);
}

static void test_intermediate(ctx_t *c, const float *img, int64_t n, int64_t H, int64_t W) {
    const int64_t nl = c->depth < 4 ? c->depth : 4;
    int64_t inter[4];
    for (int64_t k = 0; k < nl; k++) inter[k] = c->depth - nl + k;
    int st = fwd_one(c, c->a, img, NULL, n, H, W, (int)nl, inter);
    if (!tap_ok(st == DV_OK, "%s forward with %lld intermediate blocks", c->file, (long long)nl))
        return;
    for (int norm = 0; norm < 2; norm++)
        for (int64_t k = 0; k < nl; k++)
            for (int cls = 0; cls < 2; cls++) {
                char path[256];
                snprintf(path, sizeof path, "golden/intermediate_%s/block%lld_%s",
                         norm ? "norm" : "raw", (long long)inter[k],
                         cls ? "clstoken" : "patchtokens");
                int64_t cnt = 0;
                float *ref = read_f32(c->f, path, &cnt);
                if (!ref) {
                    tap_ok(0, "%s %s present", c->file, path);
                    continue;
                }
                float *got = xmalloc((size_t)cnt * sizeof *got);
                dv_vit_gather(got, norm ? c->a->inter_norm[k] : c->a->inter_raw[k], c->a, 0,
                              cls ? DV_VIT_CLS : DV_VIT_PATCH);
                compare(FAM_INTER, c->file, path, got, ref, cnt);
                free(got);
                free(ref);
            }
}

typedef struct {
    ctx_t *c;
    int nbad;
    int count;
} debug_iter_t;

static herr_t debug_cb(hid_t g, const char *name, const H5L_info_t *info, void *data) {
    (void)g;
    (void)info;
    debug_iter_t *it = data;
    ctx_t *c = it->c;
    dv_vit_acts *a = c->a;
    const dv_vit *m = &c->m;
    const int64_t T = a->T, D = c->D;
    const dv_vit_block_acts *b0 = &a->blk[0];
    const dv_vit_block_params *bp = &m->blk[0];
    const float *w = c->w;
    char path[256];
    snprintf(path, sizeof path, "golden/debug/%s", name);
    int64_t n = 0;
    float *ref = read_f32(c->f, path, &n);
    float *tmp = NULL;
    const float *got = NULL;
    char *end = NULL;
    const long bi = strncmp(name, "block", 5) == 0 && name[5] >= '0' && name[5] <= '9'
                        ? strtol(name + 5, &end, 10)
                        : -1;
    if (strcmp(name, "tokens_in") == 0)
        got = a->x0;
    else if (bi >= 0 && bi < c->depth && strcmp(end, "_out") == 0)
        got = a->xs[bi + 1];
    else if (strcmp(name, "blocks.0.attn.qkv") == 0)
        got = b0->qkv;
    else if (strcmp(name, "blocks.0.attn.proj") == 0 || strcmp(name, "blocks.0.attn") == 0)
        got = b0->y1;
    else if (strcmp(name, "blocks.0.mlp.fc1") == 0 || strcmp(name, "blocks.0.mlp.w12") == 0)
        got = b0->h_pre;
    else if (strcmp(name, "blocks.0.mlp.fc2") == 0 || strcmp(name, "blocks.0.mlp.w3") == 0 ||
             strcmp(name, "blocks.0.mlp") == 0)
        got = b0->y2;
    else {
        tmp = xmalloc((size_t)n * sizeof *tmp);
        got = tmp;
        if (strcmp(name, "blocks.0.norm1") == 0)
            layernorm_forward(tmp, NULL, NULL, a->x0, w + m->params.t[bp->norm1_w].offset,
                              w + m->params.t[bp->norm1_b].offset, T, D, 1e-6f);
        else if (strcmp(name, "blocks.0.norm2") == 0)
            layernorm_forward(tmp, NULL, NULL, b0->x_mid, w + m->params.t[bp->norm2_w].offset,
                              w + m->params.t[bp->norm2_b].offset, T, D, 1e-6f);
        else if (strcmp(name, "blocks.0.mlp.act") == 0)
            gelu_forward(tmp, b0->h_pre, n);
        else if (strcmp(name, "blocks.0.ls1") == 0 || strcmp(name, "blocks.0.ls2") == 0) {
            const float *y = name[11] == '1' ? b0->y1 : b0->y2;
            const float *gm = w + m->params.t[name[11] == '1' ? bp->ls1 : bp->ls2].offset;
            for (int64_t i = 0; i < n; i++) tmp[i] = y[i] * gm[i % D];
        } else
            got = NULL;
    }
    if (!ref || !got)
        tap_ok(0, "%s golden/debug/%s understood and readable", c->file, name);
    else
        compare(FAM_DEBUG, c->file, path, got, ref, n);
    it->count++;
    free(tmp);
    free(ref);
    return 0;
}

static void test_debug(ctx_t *c, const float *img, int64_t n, int64_t H, int64_t W) {
    int st = fwd_one(c, c->a, img, NULL, n, H, W, 0, NULL);
    if (!tap_ok(st == DV_OK, "%s debug forward", c->file)) return;
    hid_t g = H5Gopen2(c->f, "golden/debug", H5P_DEFAULT);
    debug_iter_t it = {c, 0, 0};
    hsize_t idx = 0;
    H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, &idx, debug_cb, &it);
    H5Gclose(g);
    tap_diag("%s: %d debug outputs compared", c->file, it.count);
}

static void test_backward(ctx_t *c, const float *img, int64_t n, int64_t H, int64_t W) {
    uint8_t *masks = read_u8(c->f, "golden/masked/masks");
    int st = fwd_one(c, c->a, img, masks, n, H, W, 0, NULL);
    if (!tap_ok(st == DV_OK, "%s backward: masked forward", c->file)) {
        free(masks);
        return;
    }
    dv_vit_acts *a = c->a;
    const int64_t T = a->T, D = c->D;
    float *dnorm = calloc((size_t)(T * D), sizeof *dnorm);
    int64_t ncls = 0, npatch = 0, nreg = 0;
    float *Rc = read_f32(c->f, "golden/backward/R_cls", &ncls);
    float *Rp = read_f32(c->f, "golden/backward/R_patch", &npatch);
    float *Rr = c->R ? read_f32(c->f, "golden/backward/R_reg", &nreg) : NULL;
    float *out = xmalloc((size_t)(T * D) * sizeof *out);
    double loss = 0.0;
    const struct {
        float *r;
        int64_t cnt;
        dv_vit_part part;
    } terms[3] = {{Rc, ncls, DV_VIT_CLS}, {Rp, npatch, DV_VIT_PATCH}, {Rr, nreg, DV_VIT_REG}};
    for (int k = 0; k < 3; k++) {
        if (!terms[k].r) continue;
        dv_vit_gather(out, a->x_norm, a, 0, terms[k].part);
        for (int64_t i = 0; i < terms[k].cnt; i++) loss += (double)terms[k].r[i] * out[i];
        dv_vit_scatter_add(dnorm, terms[k].r, a, 0, terms[k].part);
    }
    float *ref_loss = read_f32(c->f, "golden/backward/loss", NULL);
    float lossf = (float)loss;
    if (ref_loss)
        compare(FAM_LOSS, c->file, "golden/backward/loss", &lossf, ref_loss, 1);
    else
        tap_ok(0, "%s golden/backward/loss present", c->file);

    float *grad = calloc(c->m.params.numel, sizeof *grad);
    float *dimg = xmalloc((size_t)(n * 3 * H * W) * sizeof *dimg);
    float *dimgs[1] = {dimg};
    dv_vit_grads_in gi = {.d_norm = dnorm};
    st = dv_vit_backward(&c->m, c->w, grad, a, &gi, dimgs);
    if (tap_ok(st == DV_OK, "%s backward runs", c->file)) {
        int64_t cnt = 0;
        float *ref = read_f32(c->f, "golden/backward/grad_images", &cnt);
        if (ref && cnt == n * 3 * H * W)
            compare(FAM_GIMG, c->file, "golden/backward/grad_images", dimg, ref, cnt);
        else
            tap_ok(0, "%s golden/backward/grad_images present", c->file);
        free(ref);
        int nfound = 0;
        for (int i = 0; i < c->m.params.n; i++) {
            const dv_param *p = &c->m.params.t[i];
            char path[256];
            snprintf(path, sizeof path, "golden/backward/grad/%s", p->name);
            ref = read_f32(c->f, path, &cnt);
            if (!ref || cnt != (int64_t)p->numel) {
                tap_ok(0, "%s %s present with %zu values", c->file, path, p->numel);
                free(ref);
                continue;
            }
            nfound++;
            compare(FAM_GPARAM, c->file, path, grad + p->offset, ref, cnt);
            free(ref);
        }
        /* every golden gradient is one of ours */
        hid_t g = H5Gopen2(c->f, "golden/backward/grad", H5P_DEFAULT);
        H5G_info_t gi5;
        H5Gget_info(g, &gi5);
        H5Gclose(g);
        tap_ok((int64_t)gi5.nlinks == c->m.params.n && nfound == c->m.params.n,
               "%s: golden has %llu parameter grads, the table %d", c->file,
               (unsigned long long)gi5.nlinks, c->m.params.n);
    }
    free(grad);
    free(dimg);
    free(ref_loss);
    free(out);
    free(Rc);
    free(Rp);
    free(Rr);
    free(dnorm);
    free(masks);
}

/* native + lowres in ONE packed forward vs the two separate forwards (and the golden data). */
static void test_packed(ctx_t *c, const float *img, int64_t n, int64_t H, int64_t W) {
    int64_t n2 = attr_i64(c->f, "golden/lowres", "N"), H2 = attr_i64(c->f, "golden/lowres", "H"),
            W2 = attr_i64(c->f, "golden/lowres", "W");
    float *img2 = read_f32(c->f, "golden/lowres/images", NULL);
    const int64_t D = c->D;
    dv_vit_group gs[2] = {{.n = n, .H = H, .W = W, .images = img, .masks = NULL},
                          {.n = n2, .H = H2, .W = W2, .images = img2, .masks = NULL}};
    float *sep[2][2];
    int64_t cnt[2];
    int ok = img2 != NULL;
    for (int g = 0; g < 2 && ok; g++) {
        ok = fwd_one(c, c->a, gs[g].images, NULL, gs[g].n, gs[g].H, gs[g].W, 0, NULL) == DV_OK;
        cnt[g] = c->a->T * D;
        sep[g][0] = xmalloc((size_t)cnt[g] * sizeof(float));
        sep[g][1] = xmalloc((size_t)cnt[g] * sizeof(float));
        dv_vit_gather(sep[g][0], c->a->x_norm, c->a, 0, DV_VIT_ALL);
        dv_vit_gather(sep[g][1], c->a->x_prenorm, c->a, 0, DV_VIT_ALL);
    }
    dv_vit_fwd_opts o = {0};
    ok = ok && dv_vit_forward(&c->m, c->w, c->a, gs, 2, &o) == DV_OK;
    if (tap_ok(ok, "%s packed forward native(%lld x %lldx%lld) + lowres(%lld x %lldx%lld)", c->file,
               (long long)n, (long long)H, (long long)W, (long long)n2, (long long)H2,
               (long long)W2)) {
        int exact = 1;
        for (int g = 0; g < 2; g++)
            for (int k = 0; k < 2; k++) {
                float *got = xmalloc((size_t)cnt[g] * sizeof *got);
                dv_vit_gather(got, k ? c->a->x_prenorm : c->a->x_norm, c->a, g, DV_VIT_ALL);
                exact &= memcmp(got, sep[g][k], (size_t)cnt[g] * sizeof *got) == 0;
                char what[128];
                snprintf(what, sizeof what, "packed group %d %s == separate", g,
                         k ? "x_prenorm" : "x_norm");
                double maxerr = 0, ss = 0;
                for (int64_t i = 0; i < cnt[g]; i++) {
                    double e = fabs((double)got[i] - sep[g][k][i]);
                    if (!(e <= maxerr)) maxerr = e;
                    ss += (double)sep[g][k][i] * sep[g][k][i];
                }
                const double rms = sqrt(ss / (double)cnt[g]);
                if (!(maxerr / rms <= fam_worst[FAM_PACK])) fam_worst[FAM_PACK] = maxerr / rms;
                tap_diag("%s %s: max_err %.3g rms %.3g", c->file, what, maxerr, rms);
                tap_ok(maxerr <= 1e-5 * rms, "%s %s", c->file, what);
                free(got);
            }
        tap_diag("%s packed results bit-identical to separate runs: %s", c->file,
                 exact ? "yes" : "no");
        check_outputs(c, c->a, 0, "golden", FAM_PACK);
        check_outputs(c, c->a, 1, "golden/lowres", FAM_PACK);
    }
    for (int g = 0; g < 2; g++)
        if (ok || g == 0) {
            free(sep[g][0]);
            free(sep[g][1]);
        }
    free(img2);
}

/* Inference activations (one shared set of block buffers, in-place residual stream). */
static void test_inference_acts(ctx_t *c, const float *img, int64_t n, int64_t H, int64_t W) {
    dv_vit_acts *ai = NULL;
    int st = dv_vit_acts_create(&c->m, c->a->max_tokens, 0, 4, &ai);
    if (!tap_ok(st == DV_OK, "%s inference acts (%.2f MiB vs %.2f MiB training)", c->file,
                st == DV_OK ? (double)ai->bytes / 1048576.0 : 0.0, (double)c->a->bytes / 1048576.0))
        return;
    const int64_t nl = c->depth < 4 ? c->depth : 4;
    int64_t inter[4];
    for (int64_t k = 0; k < nl; k++) inter[k] = c->depth - nl + k;
    st = fwd_one(c, ai, img, NULL, n, H, W, (int)nl, inter);
    if (tap_ok(st == DV_OK, "%s inference forward", c->file)) {
        check_outputs(c, ai, 0, "golden", FAM_FWD);
        char path[128];
        snprintf(path, sizeof path, "golden/intermediate_norm/block%lld_patchtokens",
                 (long long)inter[0]);
        int64_t cnt = 0;
        float *ref = read_f32(c->f, path, &cnt);
        float *got = xmalloc((size_t)cnt * sizeof *got);
        dv_vit_gather(got, ai->inter_norm[0], ai, 0, DV_VIT_PATCH);
        if (ref)
            compare(FAM_INTER, c->file, "inference acts: intermediate", got, ref, cnt);
        else
            tap_ok(0, "%s %s present", c->file, path);
        free(got);
        free(ref);
        /* backward is refused on inference acts */
        float g1 = 0;
        tap_ok(dv_vit_backward(&c->m, c->w, &g1, ai, NULL, NULL) == DV_ERR_ARG,
               "%s backward refused on inference acts", c->file);
    }
    dv_vit_acts_free(ai);
}

static void run_file(const char *dir, const char *name) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.h5", dir, name);
    ctx_t c;
    memset(&c, 0, sizeof c);
    c.file = name;
    int st = dv_weights_load(path, &c.m, &c.w);
    if (!tap_ok(st == DV_OK, "%s: weights load from the golden layout (%zu parameters)", name,
                st == DV_OK ? c.m.params.numel : (size_t)0))
        return;
    c.f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    c.D = c.m.cfg.embed_dim;
    c.R = c.m.cfg.num_register_tokens;
    c.depth = c.m.cfg.depth;
    tap_diag("%s: D %lld depth %lld heads %lld ffn %s hidden %lld R %lld offset %g antialias %d",
             name, (long long)c.D, (long long)c.depth, (long long)c.m.cfg.num_heads,
             dv_vit_ffn_name(c.m.cfg.ffn), (long long)c.m.cfg.ffn_hidden, (long long)c.R,
             c.m.cfg.interpolate_offset, c.m.cfg.interpolate_antialias);
    const int64_t n = attr_i64(c.f, "golden", "N"), H = attr_i64(c.f, "golden", "H"),
                  W = attr_i64(c.f, "golden", "W");
    float *img = read_f32(c.f, "golden/images", NULL);
    /* the largest batch here: hires (2 crops of 8x8 patches) or native + lowres packed */
    const int64_t maxT = 512;
    st = dv_vit_acts_create(&c.m, maxT, 1, 4, &c.a);
    if (tap_ok(st == DV_OK && img && n > 0, "%s: acts (%lld tokens, %.2f MiB) and golden/images",
               name, (long long)maxT, st == DV_OK ? (double)c.a->bytes / 1048576.0 : 0.0)) {
        int fs = fwd_one(&c, c.a, img, NULL, n, H, W, 0, NULL);
        if (tap_ok(fs == DV_OK, "%s native forward", name))
            check_outputs(&c, c.a, 0, "golden", FAM_FWD);
        test_resolution(&c, "golden/hires", FAM_RES);
        test_resolution(&c, "golden/lowres", FAM_RES);
        test_resolution(&c, "golden/rect", FAM_RES);
        test_masked(&c, img, n, H, W);
        test_intermediate(&c, img, n, H, W);
        test_debug(&c, img, n, H, W);
        test_backward(&c, img, n, H, W);
        test_packed(&c, img, n, H, W);
        test_inference_acts(&c, img, n, H, W);
    }
    free(img);
    dv_vit_acts_free(c.a);
    H5Fclose(c.f);
    free(c.w);
    dv_vit_free(&c.m);
}

int main(void) {
    tap_no_plan();
    dv_h5_quiet();
    const char *srcdir = getenv("srcdir");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/tests/golden", srcdir && srcdir[0] ? srcdir : ".");
    run_file(dir, "tiny_mlp");
    run_file(dir, "tiny_reg4");
    run_file(dir, "tiny_swiglu");
    for (int k = 0; k < FAM_N; k++)
        tap_diag("worst max_err/rms, %s: %.3g", fam_name[k], fam_worst[k]);
    return tap_exit();
}
