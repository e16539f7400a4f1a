/* pos_embed — see pos_embed.h.
 *
 * The float/double mix below follows PyTorch's CPU kernels of the version the golden data
 * was made with (1.13): source coordinates and antialias filter arguments are formed in double
 * and rounded to float, everything else is float. */
#include "pos_embed.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

/* Per axis: for each output index o, cnt[o] taps (idx, w) into the input axis. */
typedef struct {
    int64_t in, out, K; /* K: tap slots per output */
    int64_t *idx;       /* (out, K) */
    float *w;           /* (out, K) */
    int *cnt;           /* (out) */
} axis_taps_;

typedef struct {
    float scale_h, scale_w;
    int64_t kh, kw;
} plan_;

#define ALIGN_UP_(n) (((n) + (size_t)63) & ~(size_t)63)

int pos_embed_is_identity(int64_t M, int64_t img_h, int64_t img_w, int64_t patch) {
    return (img_h / patch) * (img_w / patch) == M * M && img_h == img_w;
}

static int64_t aa_slots_(float scale) {
    const float support = scale >= 1.0f ? (float)(2.0 * scale) : 2.0f;
    return (int64_t)ceilf(support) * 2 + 1;
}

/* Scale (input step per output step) of one axis, as PyTorch's area_pixel_compute_scale with
 * align_corners = False; sets *ok = 0 when the scale factor does not give `out` outputs. */
static float axis_scale_(int64_t in, int64_t out, double offset, int *ok) {
    if (offset != 0.0) {
        const double s = ((double)out + offset) / (double)in; /* the official scale_factor */
        if (!(s > 0.0) || (int64_t)floor((double)in * s) != out) *ok = 0;
        return (float)(1.0 / s);
    }
    return (float)in / (float)out;
}

static int make_plan_(plan_ *pl, int64_t M, int64_t D, int64_t h0, int64_t w0, double offset,
                      int antialias) {
    if (M < 1 || D < 1 || h0 < 1 || w0 < 1 || !isfinite(offset))
        return DV_ERR(DV_ERR_ARG, "pos_embed: bad shape M=%lld D=%lld h0=%lld w0=%lld",
                      (long long)M, (long long)D, (long long)h0, (long long)w0);
    int ok = 1;
    pl->scale_h = axis_scale_(M, h0, offset, &ok);
    pl->scale_w = axis_scale_(M, w0, offset, &ok);
    if (!ok)
        return DV_ERR(DV_ERR_ARG,
                      "pos_embed: interpolate_offset %g does not give a %lldx%lld grid from %lld",
                      offset, (long long)h0, (long long)w0, (long long)M);
    pl->kh = antialias ? aa_slots_(pl->scale_h) : 4;
    pl->kw = antialias ? aa_slots_(pl->scale_w) : 4;
    return DV_OK;
}

static size_t taps_bytes_(int64_t out, int64_t K) {
    return ALIGN_UP_((size_t)(out * K) * sizeof(int64_t)) +
           ALIGN_UP_((size_t)(out * K) * sizeof(float)) + ALIGN_UP_((size_t)out * sizeof(int));
}

static size_t plan_bytes_(const plan_ *pl, int64_t M, int64_t D, int64_t h0, int64_t w0) {
    return taps_bytes_(h0, pl->kh) + taps_bytes_(w0, pl->kw) +
           (size_t)M * (size_t)w0 * (size_t)D * sizeof(float);
}

size_t pos_embed_workspace_size(int64_t M, int64_t D, int64_t h0, int64_t w0, double offset,
                                int antialias) {
    plan_ pl;
    if (M < 1 || D < 1 || h0 < 1 || w0 < 1) return 0;
    int ok = 1;
    pl.scale_h = axis_scale_(M, h0, offset, &ok);
    pl.scale_w = axis_scale_(M, w0, offset, &ok);
    pl.kh = antialias ? aa_slots_(pl.scale_h) : 4;
    pl.kw = antialias ? aa_slots_(pl.scale_w) : 4;
    return plan_bytes_(&pl, M, D, h0, w0);
}

static char *carve_taps_(axis_taps_ *t, char *p, int64_t in, int64_t out, int64_t K) {
    t->in = in;
    t->out = out;
    t->K = K;
    t->idx = (int64_t *)(void *)p;
    p += ALIGN_UP_((size_t)(out * K) * sizeof(int64_t));
    t->w = (float *)(void *)p;
    p += ALIGN_UP_((size_t)(out * K) * sizeof(float));
    t->cnt = (int *)(void *)p;
    p += ALIGN_UP_((size_t)out * sizeof(int));
    return p;
}

/* Cubic convolution kernel pieces, a = -0.75 (PyTorch cubic_convolution1/2). */
static float cc1_(float x, float A) { return ((A + 2) * x - (A + 3)) * x * x + 1; }
static float cc2_(float x, float A) { return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A; }

static void cubic_taps_(axis_taps_ *t, float scale) {
    const float A = -0.75f;
    for (int64_t o = 0; o < t->out; o++) {
        const float real = (float)(scale * (o + 0.5) - 0.5);
        const int64_t i0 = (int64_t)floorf(real);
        const float x1 = real - (float)i0;
        const float x2 = 1.0f - x1;
        const float c[4] = {cc2_(x1 + 1.0f, A), cc1_(x1, A), cc1_(x2, A), cc2_(x2 + 1.0f, A)};
        for (int j = 0; j < 4; j++) {
            int64_t ix = i0 - 1 + j;
            if (ix > t->in - 1) ix = t->in - 1;
            if (ix < 0) ix = 0;
            t->idx[o * 4 + j] = ix;
            t->w[o * 4 + j] = c[j];
        }
        t->cnt[o] = 4;
    }
}

/* PIL / PyTorch antialias bicubic filter, a = -0.5 (evaluated in double, returned as float). */
static float aa_filter_(float x) {
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return (float)(((a + 2.0) * x - (a + 3.0)) * x * x + 1);
    if (x < 2.0) return (float)((((x - 5) * x + 8) * x - 4) * a);
    return 0.0f;
}

static void aa_taps_(axis_taps_ *t, float scale) {
    const float support = scale >= 1.0f ? (float)(2.0 * scale) : 2.0f;
    const float invscale = scale >= 1.0f ? (float)(1.0 / scale) : 1.0f;
    for (int64_t o = 0; o < t->out; o++) {
        const float center = (float)(scale * (o + 0.5));
        int64_t xmin = (int64_t)((center - support) + 0.5);
        if (xmin < 0) xmin = 0;
        int64_t xend = (int64_t)((center + support) + 0.5);
        if (xend > t->in) xend = t->in;
        int64_t xsize = xend - xmin;
        if (xsize < 0) xsize = 0;
        if (xsize > t->K) xsize = t->K;
        float *w = t->w + o * t->K;
        float total = 0.0f;
        for (int64_t j = 0; j < xsize; j++) {
            w[j] = aa_filter_((float)(((float)(j + xmin) - center + 0.5) * invscale));
            total += w[j];
        }
        for (int64_t j = 0; j < t->K; j++) {
            if (j < xsize) {
                if (total != 0.0f) w[j] /= total;
            } else {
                w[j] = 0.0f;
            }
            t->idx[o * t->K + j] = j < xsize ? xmin + j : xmin;
        }
        t->cnt[o] = (int)xsize;
    }
}

/* Sets up the tap tables and the (M, w0, D) buffer inside `mem`. */
static float *setup_(axis_taps_ *th, axis_taps_ *tw, const plan_ *pl, void *mem, int64_t M,
                     int64_t h0, int64_t w0, int antialias) {
    char *p = mem;
    p = carve_taps_(th, p, M, h0, pl->kh);
    p = carve_taps_(tw, p, M, w0, pl->kw);
    if (antialias) {
        aa_taps_(th, pl->scale_h);
        aa_taps_(tw, pl->scale_w);
    } else {
        cubic_taps_(th, pl->scale_h);
        cubic_taps_(tw, pl->scale_w);
    }
    return (float *)(void *)p;
}

static int get_work_(void **mem, int *owned, void *work, size_t work_bytes, size_t need) {
    *owned = 0;
    if (work) {
        if (work_bytes < need)
            return DV_ERR(DV_ERR_ARG, "pos_embed: workspace of %zu bytes < %zu needed",
                          work_bytes, need);
        *mem = work;
        return DV_OK;
    }
    *mem = malloc(need);
    if (!*mem) return DV_ERR(DV_ERR_NOMEM, "pos_embed: out of memory (%zu bytes)", need);
    *owned = 1;
    return DV_OK;
}

int pos_embed_forward(float *out, const float *pos, int64_t M, int64_t D, int64_t h0, int64_t w0,
                      double offset, int antialias, void *work, size_t work_bytes) {
    plan_ pl;
    DV_TRY(make_plan_(&pl, M, D, h0, w0, offset, antialias));
    void *mem;
    int owned;
    DV_TRY(get_work_(&mem, &owned, work, work_bytes, plan_bytes_(&pl, M, D, h0, w0)));
    axis_taps_ th, tw;
    float *tmp = setup_(&th, &tw, &pl, mem, M, h0, w0, antialias); /* (M, w0, D) */
    const float *grid = pos + D;

    memcpy(out, pos, (size_t)D * sizeof(float)); /* CLS position */
    /* width pass: tmp[i, x] = Σ_k ww[x, k] · grid[i, iw[x, k]] */
#pragma omp parallel for schedule(static)
    for (int64_t ix = 0; ix < M * w0; ix++) {
        const int64_t i = ix / w0, x = ix % w0;
        float *dst = tmp + ix * D;
        const int64_t *id = tw.idx + x * tw.K;
        const float *wt = tw.w + x * tw.K;
        const float *src = grid + (i * M + id[0]) * D;
        for (int64_t d = 0; d < D; d++) dst[d] = src[d] * wt[0];
        for (int k = 1; k < tw.cnt[x]; k++) {
            src = grid + (i * M + id[k]) * D;
            for (int64_t d = 0; d < D; d++) dst[d] += src[d] * wt[k];
        }
    }
    /* height pass: out[y, x] = Σ_k wh[y, k] · tmp[ih[y, k], x] */
#pragma omp parallel for schedule(static)
    for (int64_t yx = 0; yx < h0 * w0; yx++) {
        const int64_t y = yx / w0, x = yx % w0;
        float *dst = out + (1 + yx) * D;
        const int64_t *id = th.idx + y * th.K;
        const float *wt = th.w + y * th.K;
        const float *src = tmp + (id[0] * w0 + x) * D;
        for (int64_t d = 0; d < D; d++) dst[d] = src[d] * wt[0];
        for (int k = 1; k < th.cnt[y]; k++) {
            src = tmp + (id[k] * w0 + x) * D;
            for (int64_t d = 0; d < D; d++) dst[d] += src[d] * wt[k];
        }
    }
    if (owned) free(mem);
    return DV_OK;
}

int pos_embed_backward(float *dpos, const float *dout, int64_t M, int64_t D, int64_t h0,
                       int64_t w0, double offset, int antialias, void *work, size_t work_bytes) {
    plan_ pl;
    DV_TRY(make_plan_(&pl, M, D, h0, w0, offset, antialias));
    void *mem;
    int owned;
    DV_TRY(get_work_(&mem, &owned, work, work_bytes, plan_bytes_(&pl, M, D, h0, w0)));
    axis_taps_ th, tw;
    float *dtmp = setup_(&th, &tw, &pl, mem, M, h0, w0, antialias); /* (M, w0, D) */
    float *dgrid = dpos + D;

    for (int64_t d = 0; d < D; d++) dpos[d] += dout[d]; /* CLS position */
    /* adjoint of the height pass, one output column x per task (no write conflicts) */
    memset(dtmp, 0, (size_t)M * (size_t)w0 * (size_t)D * sizeof(float));
#pragma omp parallel for schedule(static)
    for (int64_t x = 0; x < w0; x++) {
        for (int64_t y = 0; y < h0; y++) {
            const float *g = dout + (1 + y * w0 + x) * D;
            for (int k = 0; k < th.cnt[y]; k++) {
                const float wt = th.w[y * th.K + k];
                float *dst = dtmp + (th.idx[y * th.K + k] * w0 + x) * D;
                for (int64_t d = 0; d < D; d++) dst[d] += g[d] * wt;
            }
        }
    }
    /* adjoint of the width pass, one grid row i per task */
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < M; i++) {
        for (int64_t x = 0; x < w0; x++) {
            const float *g = dtmp + (i * w0 + x) * D;
            for (int k = 0; k < tw.cnt[x]; k++) {
                const float wt = tw.w[x * tw.K + k];
                float *dst = dgrid + (i * M + tw.idx[x * tw.K + k]) * D;
                for (int64_t d = 0; d < D; d++) dst[d] += g[d] * wt;
            }
        }
    }
    if (owned) free(mem);
    return DV_OK;
}
