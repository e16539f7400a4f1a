/* resample — see resample.h. Semantics follow Pillow's libImaging/Resample.c (precompute
 * coefficients in double, normalise, round to 22-bit fixed point, horizontal pass then
 * vertical pass with uint8 rounding in between). */
#include "resample.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

#define PRECISION_BITS 22 /* 32 - 8 - 2, as Pillow */
#define BICUBIC_SUPPORT 2.0

void dv_resample_ws_free(dv_resample_ws *ws) {
    if (!ws) return;
    free(ws->buf);
    ws->buf = NULL;
    ws->cap = 0;
}

static int ws_reserve_(dv_resample_ws *ws, size_t bytes) {
    if (ws->cap >= bytes) return DV_OK;
    size_t want = bytes + bytes / 4 + 4096;
    void *p = realloc(ws->buf, want);
    if (!p) return DV_ERR(DV_ERR_NOMEM, "resample workspace: out of memory (%zu bytes)", want);
    ws->buf = p;
    ws->cap = want;
    return DV_OK;
}

/* Keys cubic convolution kernel, a = -0.5 (Pillow's bicubic_filter). */
static inline double bicubic_(double x) {
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

typedef struct {
    double scale, filterscale, support;
    int ksize;
} geom_;

static geom_ geom_of_(int in_size, int out_size) {
    geom_ g;
    /* Pillow passes the box edges as float; in1 - in0 = in_size is exact below 2^24 */
    g.scale = g.filterscale = (double)(float)in_size / out_size;
    if (g.filterscale < 1.0) g.filterscale = 1.0;
    g.support = BICUBIC_SUPPORT * g.filterscale;
    g.ksize = (int)ceil(g.support) * 2 + 1;
    return g;
}

/* Double weights of output index xx; returns the tap count, *xmin the first source index. */
static int weights_(const geom_ *g, int in_size, int xx, double *k, int *xmin_out) {
    double center = (xx + 0.5) * g->scale;
    double ss = 1.0 / g->filterscale, ww = 0.0;
    int xmin = (int)(center - g->support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = (int)(center + g->support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    for (int x = 0; x < xmax; x++) {
        double w = bicubic_((x + xmin - center + 0.5) * ss);
        k[x] = w;
        ww += w;
    }
    for (int x = 0; x < xmax; x++)
        if (ww != 0.0) k[x] /= ww;
    *xmin_out = xmin;
    return xmax;
}

/* Fixed-point coefficient table for outputs [first, first + n): kk (n, ksize), bounds (n, 2). */
static void coeffs_(const geom_ *g, int in_size, int first, int n, double *tmp, int32_t *kk,
                    int *bounds) {
    for (int i = 0; i < n; i++) {
        int xmin, len = weights_(g, in_size, first + i, tmp, &xmin);
        int32_t *k = kk + (size_t)i * g->ksize;
        for (int x = 0; x < g->ksize; x++) {
            double w = x < len ? tmp[x] : 0.0;
            k[x] = w < 0 ? (int32_t)(-0.5 + w * (1 << PRECISION_BITS))
                         : (int32_t)(0.5 + w * (1 << PRECISION_BITS));
        }
        bounds[2 * i] = xmin;
        bounds[2 * i + 1] = len;
    }
}

static inline uint8_t clip8_(int32_t v) {
    v >>= PRECISION_BITS; /* arithmetic shift: floor, as Pillow's lookup index */
    return v < 0 ? 0 : v > 255 ? 255 : (uint8_t)v;
}

/* Horizontal pass over n_rows source rows: dst (n_rows, n_out, c). */
static inline __attribute__((always_inline)) void hpass_(const uint8_t *src, size_t src_stride,
                                                         int n_rows, uint8_t *dst, int n_out,
                                                         const int32_t *kk, const int *bounds,
                                                         int ksize, int c) {
    for (int y = 0; y < n_rows; y++) {
        const uint8_t *row = src + (size_t)y * src_stride;
        uint8_t *out = dst + (size_t)y * n_out * c;
        for (int xx = 0; xx < n_out; xx++) {
            const int32_t *k = kk + (size_t)xx * ksize;
            const uint8_t *p = row + (size_t)bounds[2 * xx] * c;
            int len = bounds[2 * xx + 1];
            int32_t ss[4] = {1 << (PRECISION_BITS - 1), 1 << (PRECISION_BITS - 1),
                             1 << (PRECISION_BITS - 1), 1 << (PRECISION_BITS - 1)};
            for (int x = 0; x < len; x++)
                for (int ch = 0; ch < c; ch++) ss[ch] += (int32_t)p[x * c + ch] * k[x];
            for (int ch = 0; ch < c; ch++) out[xx * c + ch] = clip8_(ss[ch]);
        }
    }
}

static void hpass_any_(const uint8_t *src, size_t src_stride, int n_rows, uint8_t *dst, int n_out,
                       const int32_t *kk, const int *bounds, int ksize, int c) {
    switch (c) {
    case 1: hpass_(src, src_stride, n_rows, dst, n_out, kk, bounds, ksize, 1); break;
    case 3: hpass_(src, src_stride, n_rows, dst, n_out, kk, bounds, ksize, 3); break;
    default: hpass_(src, src_stride, n_rows, dst, n_out, kk, bounds, ksize, c); break;
    }
}

/* Vertical pass: dst row yy = sum_k in[bounds[2yy] + k] * kk[yy][k]; rows of `elems` bytes. */
static void vpass_(const uint8_t *in, size_t in_stride, uint8_t *dst, int n_out, size_t elems,
                   const int32_t *kk, const int *bounds, int ksize, int32_t *acc) {
    for (int yy = 0; yy < n_out; yy++) {
        const int32_t *k = kk + (size_t)yy * ksize;
        int ymin = bounds[2 * yy], len = bounds[2 * yy + 1];
        for (size_t e = 0; e < elems; e++) acc[e] = 1 << (PRECISION_BITS - 1);
        for (int y = 0; y < len; y++) {
            const uint8_t *row = in + (size_t)(ymin + y) * in_stride;
            int32_t w = k[y];
            for (size_t e = 0; e < elems; e++) acc[e] += (int32_t)row[e] * w;
        }
        uint8_t *out = dst + (size_t)yy * elems;
        for (size_t e = 0; e < elems; e++) out[e] = clip8_(acc[e]);
    }
}

static size_t align8_(size_t n) { return (n + 7) & ~(size_t)7; }

int dv_resample_bicubic_window(const uint8_t *src, int src_h, int src_w, int c, size_t src_stride,
                               int full_h, int full_w, int win_top, int win_left, int win_h,
                               int win_w, uint8_t *dst, dv_resample_ws *ws) {
    if (!src || !dst || !ws || c < 1 || c > 4 || src_h < 1 || src_w < 1 || full_h < 1 ||
        full_w < 1 || win_h < 1 || win_w < 1 || win_top < 0 || win_left < 0 ||
        win_top > full_h - win_h || win_left > full_w - win_w ||
        src_stride < (size_t)src_w * (size_t)c)
        return DV_ERR(DV_ERR_ARG,
                      "resample: bad arguments (src %dx%dx%d stride %zu, full %dx%d, window "
                      "%d,%d %dx%d)",
                      src_h, src_w, c, src_stride, full_h, full_w, win_top, win_left, win_h,
                      win_w);
    const int need_h = full_w != src_w, need_v = full_h != src_h;
    geom_ gh = geom_of_(src_w, full_w), gv = geom_of_(src_h, full_h);
    if (gh.ksize < 1 || gv.ksize < 1 || gh.ksize > INT_MAX / 8 || gv.ksize > INT_MAX / 8)
        return DV_ERR(DV_ERR_ARG, "resample: kernel too large (%dx%d -> %dx%d)", src_h, src_w,
                      full_h, full_w);

    /* Source rows the window needs: from the vertical bounds, or the window rows themselves. */
    size_t kmax = (size_t)(gh.ksize > gv.ksize ? gh.ksize : gv.ksize);
    size_t off_tmp = 0;
    size_t off_kh = align8_(off_tmp + kmax * sizeof(double));
    size_t off_bh = align8_(off_kh + (need_h ? (size_t)win_w * gh.ksize * sizeof(int32_t) : 0));
    size_t off_kv = align8_(off_bh + (need_h ? (size_t)win_w * 2 * sizeof(int) : 0));
    size_t off_bv = align8_(off_kv + (need_v ? (size_t)win_h * gv.ksize * sizeof(int32_t) : 0));
    size_t off_acc = align8_(off_bv + (need_v ? (size_t)win_h * 2 * sizeof(int) : 0));
    size_t elems = (size_t)win_w * (size_t)c;
    size_t off_mid = align8_(off_acc + (need_v ? elems * sizeof(int32_t) : 0));
    /* rows of the intermediate: bounded by the source height */
    size_t mid_rows = need_h ? (size_t)src_h : 0;
    DV_TRY(ws_reserve_(ws, off_mid + mid_rows * elems));
    char *base = ws->buf;
    double *tmp = (double *)(base + off_tmp);
    int32_t *kh = (int32_t *)(base + off_kh), *kv = (int32_t *)(base + off_kv);
    int *bh = (int *)(base + off_bh), *bv = (int *)(base + off_bv);
    int32_t *acc = (int32_t *)(base + off_acc);
    uint8_t *mid = (uint8_t *)(base + off_mid);

    int row0, row1; /* source rows [row0, row1) used */
    if (need_v) {
        coeffs_(&gv, src_h, win_top, win_h, tmp, kv, bv);
        row0 = bv[0];
        row1 = bv[2 * (win_h - 1)] + bv[2 * (win_h - 1) + 1];
        for (int i = 0; i < win_h; i++) bv[2 * i] -= row0;
    } else {
        row0 = win_top;
        row1 = win_top + win_h;
    }

    const uint8_t *in;
    size_t in_stride;
    if (need_h) {
        coeffs_(&gh, src_w, win_left, win_w, tmp, kh, bh);
        hpass_any_(src + (size_t)row0 * src_stride, src_stride, row1 - row0, mid, win_w, kh, bh,
                   gh.ksize, c);
        in = mid;
        in_stride = elems;
    } else {
        in = src + (size_t)row0 * src_stride + (size_t)win_left * c;
        in_stride = src_stride;
    }

    if (need_v) {
        vpass_(in, in_stride, dst, win_h, elems, kv, bv, gv.ksize, acc);
    } else {
        for (int y = 0; y < win_h; y++) memcpy(dst + (size_t)y * elems, in + (size_t)y * in_stride, elems);
    }
    return DV_OK;
}

int dv_resample_bicubic(const uint8_t *src, int src_h, int src_w, int c, size_t src_stride,
                        uint8_t *dst, int dst_h, int dst_w, dv_resample_ws *ws) {
    return dv_resample_bicubic_window(src, src_h, src_w, c, src_stride, dst_h, dst_w, 0, 0, dst_h,
                                      dst_w, dst, ws);
}

int dv_resample_bicubic_weights(int in_size, int out_size, int out_index, int *first,
                                double *weights, int cap) {
    if (in_size < 1 || out_size < 1 || out_index < 0 || out_index >= out_size || !first ||
        !weights)
        return -1;
    geom_ g = geom_of_(in_size, out_size);
    double *k = malloc((size_t)g.ksize * sizeof *k);
    if (!k) return -1;
    int len = weights_(&g, in_size, out_index, k, first);
    for (int i = 0; i < len && i < cap; i++) weights[i] = k[i];
    free(k);
    return len;
}

void dv_resize_short_size(int height, int width, int short_side, int *out_height, int *out_width) {
    if (width <= height) {
        *out_width = short_side;
        *out_height = (int)((int64_t)short_side * height / width);
    } else {
        *out_height = short_side;
        *out_width = (int)((int64_t)short_side * width / height);
    }
}

void dv_center_crop_offsets(int height, int width, int crop_h, int crop_w, int *top, int *left) {
    *top = (int)nearbyint((height - crop_h) / 2.0);
    *left = (int)nearbyint((width - crop_w) / 2.0);
}
