/* test_embed — src/embed + io/featfile: a tiny random backbone over small shards.
 *
 *  - features file == a direct dv_vit_forward of each image alone on the same preprocessed
 *    pixels (CLS, patch, register, avgpool, last-4 CLS), across shard and batch boundaries,
 *    with labels and ids carried; the in-memory path == the file
 *  - eval transform (resize round(S·256/224), centre crop S) sizes and attributes; errors for
 *    sizes that are not patch multiples; mixed sizes grouped in one batch
 *  - encoded (PNG) shards == raw shards; --checkpoint teacher/backbone == --weights
 *  - shard sets: folder, glob, list file, comma list
 *  - golden: the official model's x_norm_clstoken (and patch tokens, intermediate CLS) of
 *    tests/golden/tiny_mlp.h5 reproduced through a shard, within 1e-4 x RMS
 *
 * Helper modes for tests/mpi_embed.sh:
 *   test_embed --fixture DIR        write DIR/w.h5 and three shards in DIR/shards
 *   test_embed --compare A B [C..]  exit 0 when every features file equals A ('#' lines)
 */
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "decode.h"
#include "embed.h"
#include "err.h"
#include "featfile.h"
#include "golden.h"
#include "h5images.h"
#include "h5util.h"
#include "rng.h"
#include "tap.h"
#include "weights.h"

static char g_dir[4096];

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        printf("Bail out! out of memory\n");
        exit(1);
    }
    return p;
}

/* ---- fixtures ---------------------------------------------------------------------------- */

/* patch 4, D 32, depth 5, 2 heads, 2 registers, pos-embed grid 4x4 */
static void tiny_model(dv_vit *m, float **w, uint64_t seed) {
    dv_vit_config c;
    dv_vit_config_defaults(&c);
    c.patch_size = 4;
    c.embed_dim = 32;
    c.depth = 5;
    c.num_heads = 2;
    c.num_register_tokens = 2;
    c.img_size = 16;
    c.layerscale = 0.5;
    c.drop_path_rate = 0.0;
    c.ffn_hidden = 0;
    if (dv_vit_init(m, &c) != DV_OK) {
        printf("Bail out! dv_vit_init\n");
        exit(1);
    }
    *w = xmalloc(m->params.numel * sizeof **w);
    dv_vit_init_weights(m, *w, seed);
    /* make the tokens (registers, cls) differ visibly */
    dv_rng r;
    dv_rng_init(&r, seed, DV_RNG_TEST, 1, 0);
    const dv_param *t = &m->params.t[m->register_tokens];
    for (size_t i = 0; i < t->numel; i++)
        (*w)[t->offset + i] = (float)dv_rng_normal(&r);
    t = &m->params.t[m->cls_token];
    for (size_t i = 0; i < t->numel; i++)
        (*w)[t->offset + i] = (float)dv_rng_normal(&r);
}

static uint8_t *rand_images(int64_t n, int h, int w, int c, uint64_t seed) {
    uint8_t *p = xmalloc((size_t)(n * h * w * c));
    dv_rng r;
    dv_rng_init(&r, seed, DV_RNG_TEST, 2, 0);
    for (int64_t i = 0; i < n * h * w * c; i++)
        p[i] = (uint8_t)(dv_rng_u32(&r) & 0xff);
    return p;
}

/* A raw shard of n images (h, w, c) with labels id0 % 3 and ids id0.. */
static int write_raw(const char *path, const uint8_t *img, int64_t n, int h, int w, int c,
                     uint64_t id0) {
    dv_h5img_spec sp = {
        .layout = DV_H5IMG_RAW, .height = h, .width = w, .channels = c, .num_classes = 3};
    dv_h5img_writer *wr;
    DV_TRY(dv_h5img_create(path, &sp, &wr));
    for (int64_t i = 0; i < n; i++) {
        int s =
            dv_h5img_append_raw(wr, img + i * h * w * c, (int32_t)((id0 + i) % 3), id0 + i, NULL);
        if (s != DV_OK) {
            dv_h5img_discard(wr);
            return s;
        }
    }
    return dv_h5img_commit(wr);
}

static int write_png(const char *path, const uint8_t *img, int64_t n, int h, int w, int c,
                     uint64_t id0) {
    dv_h5img_spec sp = {.layout = DV_H5IMG_ENCODED, .num_classes = 3};
    dv_h5img_writer *wr;
    DV_TRY(dv_h5img_create(path, &sp, &wr));
    int s = DV_OK;
    for (int64_t i = 0; i < n && s == DV_OK; i++) {
        dv_image im = {.height = h,
                       .width = w,
                       .channels = c,
                       .pixels = (unsigned char *)(img + i * h * w * c)};
        unsigned char *png = NULL;
        size_t sz = 0;
        s = dv_encode_png(&im, &png, &sz);
        if (s == DV_OK)
            s = dv_h5img_append_encoded(wr, png, sz, (int32_t)((id0 + i) % 3), id0 + i, NULL);
        free(png);
    }
    if (s != DV_OK) {
        dv_h5img_discard(wr);
        return s;
    }
    return dv_h5img_commit(wr);
}

static void path_in(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "%s/%s", g_dir, name);
}

/* ---- the direct reference ---------------------------------------------------------------- */

typedef struct {
    float *cls, *patch, *reg, *avg, *last; /* one image */
    int64_t P;
} ref_t;

static void ref_free(ref_t *r) {
    free(r->cls);
    free(r->patch);
    free(r->reg);
    free(r->avg);
    free(r->last);
}

/* One image alone through dv_vit_forward (img (3, H, W) preprocessed). */
static void direct(const dv_vit *m, const float *w, const float *img, int H, int W, ref_t *r) {
    const int64_t D = m->cfg.embed_dim, R = m->cfg.num_register_tokens, p = m->cfg.patch_size;
    const int64_t P = (H / p) * (W / p), L = 1 + R + P, depth = m->cfg.depth;
    const int64_t nl = depth < 4 ? depth : 4;
    dv_vit_acts *a;
    if (dv_vit_acts_create(m, L, 0, (int)nl, &a) != DV_OK) {
        printf("Bail out! acts\n");
        exit(1);
    }
    int64_t blocks[4];
    for (int64_t k = 0; k < nl; k++)
        blocks[k] = depth - nl + k;
    dv_vit_group g = {.n = 1, .H = H, .W = W, .images = img};
    dv_vit_fwd_opts o = {.training = 0, .n_inter = (int)nl, .inter_blocks = blocks};
    if (dv_vit_forward(m, w, a, &g, 1, &o) != DV_OK) {
        printf("Bail out! forward\n");
        exit(1);
    }
    r->P = P;
    r->cls = xmalloc((size_t)D * sizeof(float));
    r->reg = xmalloc((size_t)(R * D) * sizeof(float));
    r->patch = xmalloc((size_t)(P * D) * sizeof(float));
    r->avg = xmalloc((size_t)D * sizeof(float));
    r->last = xmalloc((size_t)(nl * D) * sizeof(float));
    memcpy(r->cls, a->x_norm, (size_t)D * sizeof(float));
    memcpy(r->reg, a->x_norm + D, (size_t)(R * D) * sizeof(float));
    memcpy(r->patch, a->x_norm + (1 + R) * D, (size_t)(P * D) * sizeof(float));
    for (int64_t d = 0; d < D; d++) {
        double s = 0;
        for (int64_t t = 0; t < P; t++)
            s += r->patch[t * D + d];
        r->avg[d] = (float)(s / (double)P);
    }
    for (int64_t k = 0; k < nl; k++)
        memcpy(r->last + k * D, a->inter_norm[k], (size_t)D * sizeof(float));
    dv_vit_acts_free(a);
}

static double maxdiff(const float *a, const float *b, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - (double)b[i]);
        if (!(e <= m))
            m = e;
    }
    return m;
}

/* Compare row i of f with the direct forward of img (preprocessed at H x W). */
typedef struct {
    double cls, patch, reg, avg, last;
} diffs_t;

static void diff_row(const dv_vit *m, const float *w, const dv_features *f, int64_t i,
                     const float *img, int H, int W, diffs_t *d) {
    ref_t r;
    direct(m, w, img, H, W, &r);
    const int64_t D = f->dim;
    double e = maxdiff(f->cls + i * D, r.cls, D);
    if (!(e <= d->cls))
        d->cls = e;
    if (f->patch) {
        e = maxdiff(f->patch + i * f->npatch * D, r.patch, r.P * D);
        if (!(e <= d->patch) || r.P != f->npatch)
            d->patch = r.P != f->npatch ? 1e9 : e;
    }
    if (f->reg) {
        e = maxdiff(f->reg + i * f->nreg * D, r.reg, f->nreg * D);
        if (!(e <= d->reg))
            d->reg = e;
    }
    if (f->avgpool) {
        e = maxdiff(f->avgpool + i * D, r.avg, D);
        if (!(e <= d->avg))
            d->avg = e;
    }
    if (f->cls_last) {
        e = maxdiff(f->cls_last + i * f->nlast * D, r.last, f->nlast * D);
        if (!(e <= d->last))
            d->last = e;
    }
    ref_free(&r);
}

/* Preprocess as the embedder documents it, independently of it: to tensor at size 0, or
 * dv_eval_transform at S. */
static float *prep(const uint8_t *img, int h, int w, int c, int S, int *H, int *W) {
    dv_augment_scratch *s;
    dv_augment_scratch_create(&s);
    float *out;
    if (S > 0) {
        out = xmalloc((size_t)(3 * S * S) * sizeof(float));
        if (dv_eval_transform(img, h, w, c, (int)lrint(S * 256.0 / 224.0), S, out, s) != DV_OK) {
            printf("Bail out! eval transform\n");
            exit(1);
        }
        *H = *W = S;
    } else {
        uint8_t *rgb = xmalloc((size_t)(h * w * 3));
        for (int i = 0; i < h * w; i++)
            for (int k = 0; k < 3; k++)
                rgb[3 * i + k] = img[i * c + (c == 3 ? k : 0)];
        out = xmalloc((size_t)(3 * h * w) * sizeof(float));
        dv_to_tensor_normalize(rgb, h, w, out);
        free(rgb);
        *H = h;
        *W = w;
    }
    dv_augment_scratch_free(s);
    return out;
}

static int64_t attr_i64(const char *path, const char *name) {
    int64_t v = -999;
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0)
        return v;
    hid_t a = H5Aopen(f, name, H5P_DEFAULT);
    if (a >= 0) {
        H5Aread(a, H5T_NATIVE_INT64, &v);
        H5Aclose(a);
    }
    H5Fclose(f);
    return v;
}

/* ---- tests ------------------------------------------------------------------------------- */

typedef struct {
    dv_vit m;
    float *w;
    char wpath[4200];
    /* shard a: 5 RGB 16x12; shard b: 4 gray 16x12 */
    uint8_t *ia, *ib;
} fix_t;

static void test_basic(fix_t *fx) {
    char shards[4200], out[4200];
    path_in(shards, sizeof shards, "s1");
    path_in(out, sizeof out, "f_basic.h5");
    dv_embed_opts o;
    dv_embed_opts_default(&o);
    o.weights = fx->wpath;
    o.data = shards;
    o.image_size = 0;
    o.batch = 3;
    o.patch_tokens = o.reg_tokens = o.probe_features = 1;
    o.progress = 0;
    dv_embed_stats st;
    int s = dv_embed_file(&o, out, MPI_COMM_NULL, &st);
    tap_ok(s == DV_OK && st.images == 9,
           "embed 2 raw shards (RGB + gray) at size 0, batch 3: %s, %lld images", dv_status_str(s),
           (long long)st.images);
    char tmp[4300];
    snprintf(tmp, sizeof tmp, "%s.tmp", out);
    tap_ok(access(out, F_OK) == 0 && access(tmp, F_OK) != 0,
           "file under its final name, no .tmp left");
    dv_features f;
    s = dv_features_read(out, DV_FEAT_CLS | DV_FEAT_PATCH | DV_FEAT_REG | DV_FEAT_PROBE, 0, -1, &f);
    tap_ok(s == DV_OK && f.n == 9 && f.dim == 32 && f.npatch == 12 && f.nreg == 2 && f.nlast == 4 &&
               f.patch && f.reg && f.avgpool && f.cls_last && f.has_avgpool,
           "read back: N 9, D 32, P 12, R 2, B 4, every part");
    if (s != DV_OK)
        return;
    int ids_ok = 1;
    for (int64_t i = 0; i < 9; i++) {
        uint64_t want = i < 5 ? 100 + (uint64_t)i : 200 + (uint64_t)(i - 5);
        if (f.ids[i] != want || f.labels[i] != (int32_t)(want % 3))
            ids_ok = 0;
    }
    tap_ok(ids_ok, "ids and labels carried in shard order");
    diffs_t d = {0};
    for (int64_t i = 0; i < 9; i++) {
        int H, W;
        const uint8_t *src = i < 5 ? fx->ia + i * 16 * 12 * 3 : fx->ib + (i - 5) * 16 * 12;
        float *img = prep(src, 16, 12, i < 5 ? 3 : 1, 0, &H, &W);
        diff_row(&fx->m, fx->w, &f, i, img, H, W, &d);
        free(img);
    }
    tap_diag("max |file - direct|: cls %.2e patch %.2e reg %.2e avgpool %.2e cls_last4 %.2e", d.cls,
             d.patch, d.reg, d.avg, d.last);
    tap_ok(d.cls <= 1e-6, "x_norm_clstoken == direct forward (%.2e)", d.cls);
    tap_ok(d.patch <= 1e-6, "x_norm_patchtokens == direct forward (%.2e)", d.patch);
    tap_ok(d.reg <= 1e-6, "x_norm_regtokens == direct forward (%.2e)", d.reg);
    tap_ok(d.avg <= 1e-6, "avgpool == mean of the normed patch tokens (%.2e)", d.avg);
    tap_ok(d.last <= 1e-6, "cls_last4 == normed CLS of blocks 1..4 (%.2e)", d.last);
    tap_ok(maxdiff(f.cls_last + 3 * 32, f.cls, 32) == 0.0,
           "last block of cls_last4 == x_norm_clstoken, bit for bit");
    tap_ok(attr_i64(out, "image_size") == 0 && attr_i64(out, "num_patches") == 12 &&
               attr_i64(out, "height") == 16 && attr_i64(out, "width") == 12 &&
               attr_i64(out, "patch_size") == 4 && attr_i64(out, "num_classes") == 3 &&
               attr_i64(out, "format_version") == 1 && attr_i64(out, "count") == 9,
           "attributes: image_size 0, num_patches 12, 16x12, patch 4, 3 classes, count 9");

    /* in memory, on the same set */
    dv_features mem;
    s = dv_embed_memory(&o, MPI_COMM_NULL, &mem, NULL);
    int same = s == DV_OK && mem.n == 9 && maxdiff(mem.cls, f.cls, 9 * 32) == 0.0 &&
               maxdiff(mem.patch, f.patch, 9 * 12 * 32) == 0.0 &&
               maxdiff(mem.reg, f.reg, 9 * 2 * 32) == 0.0 &&
               maxdiff(mem.avgpool, f.avgpool, 9 * 32) == 0.0 &&
               maxdiff(mem.cls_last, f.cls_last, 9 * 4 * 32) == 0.0 &&
               !memcmp(mem.ids, f.ids, 9 * sizeof *f.ids) &&
               !memcmp(mem.labels, f.labels, 9 * sizeof *f.labels);
    tap_ok(same, "in-memory embedding == the file, bit for bit");
    if (s == DV_OK)
        dv_features_free(&mem);

    /* a batch larger than the set, and batch 1: same numbers */
    o.batch = 64;
    s = dv_embed_memory(&o, MPI_COMM_NULL, &mem, NULL);
    double e64 = s == DV_OK ? maxdiff(mem.cls, f.cls, 9 * 32) : 1;
    if (s == DV_OK)
        dv_features_free(&mem);
    o.batch = 1;
    s = dv_embed_memory(&o, MPI_COMM_NULL, &mem, NULL);
    double e1 = s == DV_OK ? maxdiff(mem.cls_last, f.cls_last, 9 * 4 * 32) : 1;
    if (s == DV_OK)
        dv_features_free(&mem);
    tap_ok(e64 <= 1e-6 && e1 <= 1e-6, "batch 64 and batch 1 give the same features (%.1e, %.1e)",
           e64, e1);

    /* only CLS: no optional datasets */
    o.batch = 4;
    o.patch_tokens = o.reg_tokens = o.probe_features = 0;
    path_in(out, sizeof out, "f_cls.h5");
    s = dv_embed_file(&o, out, MPI_COMM_NULL, NULL);
    dv_features g;
    int s2 = s == DV_OK
                 ? dv_features_read(out, DV_FEAT_CLS | DV_FEAT_PATCH | DV_FEAT_PROBE, 0, -1, &g)
                 : s;
    tap_ok(s2 == DV_OK && !g.patch && !g.reg && !g.avgpool && !g.cls_last && g.npatch == 0 &&
               maxdiff(g.cls, f.cls, 9 * 32) <= 1e-6,
           "CLS only: no optional datasets, same CLS");
    if (s2 == DV_OK) {
        /* a row range */
        dv_features h;
        int s3 = dv_features_read(out, DV_FEAT_CLS, 4, 3, &h);
        tap_ok(s3 == DV_OK && h.n == 3 && h.total == 9 &&
                   maxdiff(h.cls, g.cls + 4 * 32, 3 * 32) == 0 && h.ids[0] == g.ids[4] &&
                   h.labels[2] == g.labels[6],
               "read rows [4, 7)");
        if (s3 == DV_OK)
            dv_features_free(&h);
        dv_features_free(&g);
    }
    /* avgpool computed from patch tokens when /avgpool is absent */
    o.patch_tokens = 1;
    path_in(out, sizeof out, "f_patch.h5");
    s = dv_embed_file(&o, out, MPI_COMM_NULL, NULL);
    s2 = s == DV_OK ? dv_features_read(out, DV_FEAT_CLS | DV_FEAT_AVGPOOL, 0, -1, &g) : s;
    tap_ok(s2 == DV_OK && g.avgpool && g.avgpool_computed && !g.patch &&
               maxdiff(g.avgpool, f.avgpool, 9 * 32) <= 1e-6,
           "reader computes avgpool from /x_norm_patchtokens when /avgpool is absent");
    if (s2 == DV_OK)
        dv_features_free(&g);
    dv_features_free(&f);
}

static void test_eval_transform(fix_t *fx) {
    /* 20x14 images (not patch multiples) at image size 8: resize 9, centre crop 8 */
    uint8_t *img = rand_images(3, 20, 14, 3, 7);
    char sdir[4200], sp[4300], out[4200];
    path_in(sdir, sizeof sdir, "s2");
    mkdir(sdir, 0755);
    snprintf(sp, sizeof sp, "%s/odd.h5", sdir);
    write_raw(sp, img, 3, 20, 14, 3, 0);
    path_in(out, sizeof out, "f_eval.h5");
    dv_embed_opts o;
    dv_embed_opts_default(&o);
    o.weights = fx->wpath;
    o.data = sp;
    o.image_size = 8;
    o.batch = 2;
    o.progress = 0;
    o.patch_tokens = o.probe_features = 1;
    tap_ok(dv_eval_resize_size(8) == 9 && dv_eval_resize_size(224) == 256 &&
               dv_eval_resize_size(518) == 592,
           "resize size round(S*256/224): 8 -> 9, 224 -> 256, 518 -> 592");
    int s = dv_embed_file(&o, out, MPI_COMM_NULL, NULL);
    dv_features f;
    int s2 = s == DV_OK
                 ? dv_features_read(out, DV_FEAT_CLS | DV_FEAT_PATCH | DV_FEAT_PROBE, 0, -1, &f)
                 : s;
    tap_ok(s2 == DV_OK && f.npatch == 4 && attr_i64(out, "image_size") == 8 &&
               attr_i64(out, "resize_size") == 9 && attr_i64(out, "height") == 8,
           "20x14 images at --image-size 8: 2x2 patches, resize_size 9");
    if (s2 == DV_OK) {
        diffs_t d = {0};
        for (int64_t i = 0; i < 3; i++) {
            int H, W;
            float *x = prep(img + i * 20 * 14 * 3, 20, 14, 3, 8, &H, &W);
            diff_row(&fx->m, fx->w, &f, i, x, H, W, &d);
            free(x);
        }
        tap_ok(d.cls <= 1e-6 && d.patch <= 1e-6 && d.avg <= 1e-6 && d.last <= 1e-6,
               "eval-transform features == direct forward of dv_eval_transform output (%.1e)",
               d.cls > d.patch ? d.cls : d.patch);
        dv_features_free(&f);
    }
    /* errors */
    o.image_size = 0;
    s = dv_embed_file(&o, out, MPI_COMM_NULL, NULL);
    tap_ok(s == DV_ERR_ARG, "20x14 images at size 0 (not multiples of 4): error (%s)",
           dv_status_str(s));
    o.image_size = 10;
    s = dv_embed_file(&o, out, MPI_COMM_NULL, NULL);
    tap_ok(s == DV_ERR_ARG, "--image-size 10 with patch 4: error (%s)", dv_status_str(s));
    /* mixed sizes at size 0: 16x12 shard + 8x8 shard; CLS works, patch tokens refused */
    uint8_t *small = rand_images(2, 8, 8, 3, 9);
    char s8[4300], set[9000];
    snprintf(s8, sizeof s8, "%s/small.h5", sdir);
    write_raw(s8, small, 2, 8, 8, 3, 50);
    char a[4200];
    path_in(a, sizeof a, "s1/a.h5");
    snprintf(set, sizeof set, "%s,%s", a, s8);
    o.data = set;
    o.image_size = 0;
    o.batch = 8;
    s = dv_embed_file(&o, out, MPI_COMM_NULL, NULL);
    tap_ok(s == DV_ERR_ARG, "patch tokens with two image sizes: error (%s)", dv_status_str(s));
    o.patch_tokens = 0;
    s = dv_embed_file(&o, out, MPI_COMM_NULL, NULL);
    s2 = s == DV_OK ? dv_features_read(out, DV_FEAT_CLS | DV_FEAT_PROBE, 0, -1, &f) : s;
    if (s2 == DV_OK) {
        diffs_t d = {0};
        for (int64_t i = 0; i < 7; i++) {
            int H, W;
            float *x = i < 5 ? prep(fx->ia + i * 16 * 12 * 3, 16, 12, 3, 0, &H, &W)
                             : prep(small + (i - 5) * 8 * 8 * 3, 8, 8, 3, 0, &H, &W);
            diff_row(&fx->m, fx->w, &f, i, x, H, W, &d);
            free(x);
        }
        tap_ok(f.n == 7 && d.cls <= 1e-6 && d.avg <= 1e-6 && d.last <= 1e-6 &&
                   attr_i64(out, "num_patches") == 0,
               "16x12 and 8x8 images in one batch (two crop groups) == direct (%.1e)", d.cls);
        dv_features_free(&f);
    } else {
        tap_ok(0, "mixed sizes in one batch: %s", dv_status_str(s2));
    }
    free(small);
    free(img);
}

static void test_encoded_and_checkpoint(fix_t *fx) {
    char sdir[4200], sp[4300], out[4200], ref[4200];
    path_in(sdir, sizeof sdir, "s3");
    mkdir(sdir, 0755);
    snprintf(sp, sizeof sp, "%s/png.h5", sdir);
    write_png(sp, fx->ia, 5, 16, 12, 3, 100);
    path_in(out, sizeof out, "f_png.h5");
    path_in(ref, sizeof ref, "f_basic.h5");
    dv_embed_opts o;
    dv_embed_opts_default(&o);
    o.weights = fx->wpath;
    o.data = sp;
    o.image_size = 0;
    o.batch = 2;
    o.progress = 0;
    o.probe_features = 1;
    int s = dv_embed_file(&o, out, MPI_COMM_NULL, NULL);
    dv_features f, r;
    int s2 = s == DV_OK ? dv_features_read(out, DV_FEAT_CLS | DV_FEAT_PROBE, 0, -1, &f) : s;
    int s3 = dv_features_read(ref, DV_FEAT_CLS | DV_FEAT_PROBE, 0, 5, &r);
    tap_ok(s2 == DV_OK && s3 == DV_OK && f.n == 5 && maxdiff(f.cls, r.cls, 5 * 32) <= 1e-6 &&
               maxdiff(f.cls_last, r.cls_last, 5 * 4 * 32) <= 1e-6 && f.ids[4] == 104,
           "encoded (PNG) shard at size 0 == the raw shard");
    if (s2 == DV_OK)
        dv_features_free(&f);
    /* encoded at a fixed size */
    o.image_size = 8;
    o.patch_tokens = 1;
    s = dv_embed_file(&o, out, MPI_COMM_NULL, NULL);
    tap_ok(s == DV_OK && attr_i64(out, "num_patches") == 4,
           "encoded shard at --image-size 8 with patch tokens");
    o.image_size = 0;
    s = dv_embed_file(&o, out, MPI_COMM_NULL, NULL);
    tap_ok(s == DV_ERR_ARG, "encoded shard at size 0 with patch tokens: error (%s)",
           dv_status_str(s));
    o.patch_tokens = 0;

    /* checkpoint: the backbone under teacher/backbone */
    char ck[4200];
    path_in(ck, sizeof ck, "ckpt.h5");
    hid_t h = H5Fcreate(ck, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    int ws = h >= 0 ? dv_weights_write(h, "teacher/backbone", &fx->m, fx->w) : DV_ERR_HDF5;
    if (h >= 0)
        H5Fclose(h);
    o.weights = NULL;
    o.checkpoint = ck;
    o.data = sp;
    s = ws == DV_OK ? dv_embed_file(&o, out, MPI_COMM_NULL, NULL) : ws;
    s2 = s == DV_OK ? dv_features_read(out, DV_FEAT_CLS | DV_FEAT_PROBE, 0, -1, &f) : s;
    tap_ok(s2 == DV_OK && s3 == DV_OK && maxdiff(f.cls, r.cls, 5 * 32) <= 1e-6,
           "--checkpoint (teacher/backbone) == --weights");
    if (s2 == DV_OK)
        dv_features_free(&f);
    o.group = "student/backbone";
    s = dv_embed_file(&o, out, MPI_COMM_NULL, NULL);
    tap_ok(s == DV_ERR_FORMAT, "checkpoint without the group: error (%s)", dv_status_str(s));
    o.group = NULL;
    o.weights = fx->wpath;
    s = dv_embed_file(&o, out, MPI_COMM_NULL, NULL);
    tap_ok(s == DV_ERR_ARG, "both --weights and --checkpoint: error (%s)", dv_status_str(s));
    if (s3 == DV_OK)
        dv_features_free(&r);
}

/* ---- golden ------------------------------------------------------------------------------ */

static void test_golden(void) {
    const char *srcdir = getenv("srcdir");
    char gpath[4200];
    snprintf(gpath, sizeof gpath, "%s/tests/golden/tiny_mlp.h5",
             srcdir && srcdir[0] ? srcdir : ".");
    if (access(gpath, R_OK) != 0) {
        tap_skip(4, "tests/golden/tiny_mlp.h5 not found");
        return;
    }
    golden_file = H5Fopen(gpath, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (golden_file < 0) {
        tap_ok(0, "open %s", gpath);
        return;
    }
    struct {
        const char *grp;
        int n, h, w;
    } sets[] = {{"golden", 3, 56, 56},
                {"golden/rect", 2, 42, 98},
                {"golden/hires", 2, 112, 112},
                {"golden/lowres", 2, 28, 28}};
    char sdir[4200], spec[4300];
    path_in(sdir, sizeof sdir, "golden");
    mkdir(sdir, 0755);
    for (int k = 0; k < 4; k++) {
        char name[256], sp[4400];
        snprintf(name, sizeof name, "%s/images_uint8", sets[k].grp);
        uint8_t *img =
            ds_read(name, H5T_NATIVE_UINT8, 1, (int64_t)sets[k].n * sets[k].h * sets[k].w * 3);
        snprintf(sp, sizeof sp, "%s/g%d.h5", sdir, k);
        write_raw(sp, img, sets[k].n, sets[k].h, sets[k].w, 3, (uint64_t)(10 * k));
        free(img);
    }
    snprintf(spec, sizeof spec, "%s", sdir);
    char out[4200];
    path_in(out, sizeof out, "f_golden.h5");
    dv_embed_opts o;
    dv_embed_opts_default(&o);
    o.weights = gpath;
    o.data = spec;
    o.image_size = 0;
    o.batch = 4; /* batches mix sizes */
    o.progress = 0;
    o.probe_features = 1;
    int s = dv_embed_file(&o, out, MPI_COMM_NULL, NULL);
    dv_features f;
    int s2 = s == DV_OK ? dv_features_read(out, DV_FEAT_CLS | DV_FEAT_PROBE, 0, -1, &f) : s;
    tap_ok(
        s2 == DV_OK && f.n == 9 && f.dim == 64 && f.nlast == 2,
        "golden images (56, 42x98, 112, 28 px) through shards at size 0: N 9, D 64, B = depth 2");
    if (s2 != DV_OK) {
        H5Fclose(golden_file);
        return;
    }
    int64_t row = 0;
    for (int k = 0; k < 4; k++) {
        char name[256];
        snprintf(name, sizeof name, "%s/x_norm_clstoken", sets[k].grp);
        float *ref = rd_f32(name, (int64_t)sets[k].n * 64);
        check_arr(name, f.cls + row * 64, ref, (int64_t)sets[k].n * 64);
        free(ref);
        row += sets[k].n;
    }
    /* intermediate CLS (blocks 0, 1) and avgpool of the 56 px images */
    float *b0 = rd_f32("golden/intermediate_norm/block0_clstoken", 3 * 64);
    float *b1 = rd_f32("golden/intermediate_norm/block1_clstoken", 3 * 64);
    float *pt = rd_f32("golden/x_norm_patchtokens", 3 * 16 * 64);
    float got0[3 * 64], got1[3 * 64], avg[3 * 64];
    for (int i = 0; i < 3; i++) {
        memcpy(got0 + i * 64, f.cls_last + (i * 2 + 0) * 64, 64 * sizeof(float));
        memcpy(got1 + i * 64, f.cls_last + (i * 2 + 1) * 64, 64 * sizeof(float));
        for (int d = 0; d < 64; d++) {
            double acc = 0;
            for (int t = 0; t < 16; t++)
                acc += pt[(i * 16 + t) * 64 + d];
            avg[i * 64 + d] = (float)(acc / 16.0);
        }
    }
    check_arr("cls_last4 block 0 vs intermediate_norm", got0, b0, 3 * 64);
    check_arr("cls_last4 block 1 vs intermediate_norm", got1, b1, 3 * 64);
    check_arr("avgpool vs mean of golden patch tokens", f.avgpool, avg, 3 * 64);
    free(b0);
    free(b1);
    dv_features_free(&f);
    /* patch tokens of the 56 px shard */
    char g0[4400];
    snprintf(g0, sizeof g0, "%s/g0.h5", sdir);
    o.data = g0;
    o.patch_tokens = 1;
    o.probe_features = 0;
    s = dv_embed_file(&o, out, MPI_COMM_NULL, NULL);
    s2 = s == DV_OK ? dv_features_read(out, DV_FEAT_CLS | DV_FEAT_PATCH, 0, -1, &f) : s;
    if (s2 == DV_OK && f.npatch == 16) {
        check_arr("golden/x_norm_patchtokens", f.patch, pt, 3 * 16 * 64);
        dv_features_free(&f);
    } else {
        tap_ok(0, "golden patch tokens: %s", dv_status_str(s2));
    }
    free(pt);
    H5Fclose(golden_file);
}

/* ---- helper modes for tests/mpi_embed.sh ------------------------------------------------- */

static int make_fixture(const char *dir, fix_t *fx) {
    snprintf(g_dir, sizeof g_dir, "%s", dir);
    mkdir(dir, 0755);
    tiny_model(&fx->m, &fx->w, 42);
    path_in(fx->wpath, sizeof fx->wpath, "w.h5");
    DV_TRY(dv_weights_save(fx->wpath, &fx->m, fx->w));
    char d[4200], p[4300];
    path_in(d, sizeof d, "shards");
    mkdir(d, 0755);
    fx->ia = rand_images(7, 16, 12, 3, 1);
    fx->ib = rand_images(4, 20, 14, 1, 2);
    uint8_t *ic = rand_images(3, 10, 18, 3, 3);
    snprintf(p, sizeof p, "%s/a.h5", d);
    DV_TRY(write_raw(p, fx->ia, 7, 16, 12, 3, 0));
    snprintf(p, sizeof p, "%s/b.h5", d);
    DV_TRY(write_raw(p, fx->ib, 4, 20, 14, 1, 7));
    snprintf(p, sizeof p, "%s/c.h5", d);
    DV_TRY(write_png(p, ic, 3, 10, 18, 3, 11));
    free(ic);
    return DV_OK;
}

static int compare_files(int n, char **paths) {
    const unsigned all = DV_FEAT_CLS | DV_FEAT_PATCH | DV_FEAT_REG | DV_FEAT_PROBE;
    dv_features a;
    if (dv_features_read(paths[0], all, 0, -1, &a) != DV_OK)
        return 1;
    int bad = 0;
    for (int k = 1; k < n; k++) {
        dv_features b;
        if (dv_features_read(paths[k], all, 0, -1, &b) != DV_OK)
            return 1;
        const int64_t N = a.n, D = a.dim;
        int shape = b.n == N && b.dim == D && b.npatch == a.npatch && b.nreg == a.nreg &&
                    b.nlast == a.nlast && !!b.avgpool == !!a.avgpool;
        double e = 1e9;
        int meta = 0;
        if (shape) {
            e = maxdiff(a.cls, b.cls, N * D);
            if (a.patch) {
                double x = maxdiff(a.patch, b.patch, N * a.npatch * D);
                if (x > e)
                    e = x;
            }
            if (a.reg) {
                double x = maxdiff(a.reg, b.reg, N * a.nreg * D);
                if (x > e)
                    e = x;
            }
            if (a.avgpool) {
                double x = maxdiff(a.avgpool, b.avgpool, N * D);
                if (x > e)
                    e = x;
            }
            if (a.cls_last) {
                double x = maxdiff(a.cls_last, b.cls_last, N * a.nlast * D);
                if (x > e)
                    e = x;
            }
            meta = !memcmp(a.ids, b.ids, (size_t)N * sizeof *a.ids) &&
                   !memcmp(a.labels, b.labels, (size_t)N * sizeof *a.labels);
        }
        printf("# %s vs %s: shapes %s, ids/labels %s, max |diff| %.3g%s\n", paths[k], paths[0],
               shape ? "equal" : "DIFFER", meta ? "equal" : "DIFFER", e,
               e == 0 ? " (bit for bit)" : "");
        if (!shape || !meta || e > 1e-6)
            bad = 1;
        dv_features_free(&b);
    }
    dv_features_free(&a);
    return bad;
}

int main(int argc, char **argv) {
    dv_h5_quiet();
    fix_t fx;
    memset(&fx, 0, sizeof fx);
    if (argc == 3 && !strcmp(argv[1], "--fixture")) {
        int s = make_fixture(argv[2], &fx);
        free(fx.ia);
        free(fx.ib);
        free(fx.w);
        dv_vit_free(&fx.m);
        return s == DV_OK ? 0 : 1;
    }
    if (argc >= 4 && !strcmp(argv[1], "--compare"))
        return compare_files(argc - 2, argv + 2);
    tap_no_plan();
    const char *tmpd = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(g_dir, sizeof g_dir, "%s/test_embed.XXXXXX", tmpd);
    if (!mkdtemp(g_dir)) {
        tap_ok(0, "mkdtemp");
        return tap_exit();
    }
    tiny_model(&fx.m, &fx.w, 42);
    path_in(fx.wpath, sizeof fx.wpath, "w.h5");
    tap_ok(dv_weights_save(fx.wpath, &fx.m, fx.w) == DV_OK,
           "tiny backbone saved (patch 4, D 32, depth 5, 2 registers)");
    char d[4200], p[4300];
    path_in(d, sizeof d, "s1");
    mkdir(d, 0755);
    fx.ia = rand_images(5, 16, 12, 3, 1);
    fx.ib = rand_images(4, 16, 12, 1, 2);
    snprintf(p, sizeof p, "%s/a.h5", d);
    int s = write_raw(p, fx.ia, 5, 16, 12, 3, 100);
    snprintf(p, sizeof p, "%s/b.h5", d);
    if (s == DV_OK)
        s = write_raw(p, fx.ib, 4, 16, 12, 1, 200);
    tap_ok(s == DV_OK, "shards: 5 RGB + 4 gray images of 16x12");
    test_basic(&fx);
    test_eval_transform(&fx);
    test_encoded_and_checkpoint(&fx);
    test_golden();
    char cmd[4300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0)
        tap_diag("could not remove %s", g_dir);
    free(fx.ia);
    free(fx.ib);
    free(fx.w);
    dv_vit_free(&fx.m);
    return tap_exit();
}
