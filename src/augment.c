/* augment — see augment.h and doc/augment.md.
 *
 * Floating-point note: the Pillow expressions below mirror Pillow's C types (float vs double
 * intermediates) so that the uint8 results are bit-identical; build without -ffast-math and
 * without FMA contraction (-std=c11 implies -ffp-contract=off in GCC). */
#include "augment.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "resample.h"

static const double IMAGENET_MEAN[3] = {0.485, 0.456, 0.406};
static const double IMAGENET_STD[3] = {0.229, 0.224, 0.225};

/* ColorJitter(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1) ranges. */
#define JIT_B_LO (1.0 - 0.4)
#define JIT_B_HI (1.0 + 0.4)
#define JIT_C_LO (1.0 - 0.4)
#define JIT_C_HI (1.0 + 0.4)
#define JIT_S_LO (1.0 - 0.2)
#define JIT_S_HI (1.0 + 0.2)
#define JIT_H_LO (-0.1)
#define JIT_H_HI 0.1
#define P_FLIP 0.5
#define SOLARIZE_THRESHOLD 128
#define BLUR_KSIZE 9

struct dv_augment_scratch {
    dv_resample_ws rs;
    uint8_t *u8; /* (S, S, 3) work image */
    size_t u8_cap;
    float *f32; /* (S, S, 3) blur intermediate */
    size_t f32_cap;
};

/* ------------------------------------------------------------------------------------------ */
/* parameters                                                                                 */

void dv_augment_params_default(dv_augment_params *p) {
    memset(p, 0, sizeof *p);
    p->global_size = 224;
    p->local_size = 96;
    p->local_number = 8;
    p->global_scale[0] = 0.32;
    p->global_scale[1] = 1.0;
    p->local_scale[0] = 0.05;
    p->local_scale[1] = 0.32;
    p->ratio[0] = 3.0 / 4.0;
    p->ratio[1] = 4.0 / 3.0;
    p->blur_intended = 0;
    p->blur_sigma[0] = 0.1;
    p->blur_sigma[1] = 2.0;
    p->p_jitter = 0.8;
    p->p_gray = 0.2;
    p->p_solarize = 0.2;
}

int dv_augment_params_check(const dv_augment_params *p) {
    if (!p) return DV_ERR(DV_ERR_ARG, "augment: NULL parameters");
    if (p->global_size < 1 || p->global_size > 65535)
        return DV_ERR(DV_ERR_ARG, "augment: global crop size %d out of range", p->global_size);
    if (p->local_number < 0 || p->local_number > DV_AUGMENT_MAX_CROPS - 2)
        return DV_ERR(DV_ERR_ARG, "augment: local crop number %d out of range [0, %d]",
                      p->local_number, DV_AUGMENT_MAX_CROPS - 2);
    if (p->local_number > 0 && (p->local_size < 1 || p->local_size > 65535))
        return DV_ERR(DV_ERR_ARG, "augment: local crop size %d out of range", p->local_size);
    const double *sc[2] = {p->global_scale, p->local_scale};
    for (int i = 0; i < 2; i++)
        if (!(sc[i][0] > 0.0) || !(sc[i][0] <= sc[i][1]) || !isfinite(sc[i][1]))
            return DV_ERR(DV_ERR_ARG, "augment: %s crop scale (%g, %g) must satisfy 0 < min <= max",
                          i ? "local" : "global", sc[i][0], sc[i][1]);
    if (!(p->ratio[0] > 0.0) || !(p->ratio[0] <= p->ratio[1]) || !isfinite(p->ratio[1]))
        return DV_ERR(DV_ERR_ARG, "augment: ratio (%g, %g) must satisfy 0 < min <= max",
                      p->ratio[0], p->ratio[1]);
    if (!(p->blur_sigma[0] > 0.0) || !(p->blur_sigma[0] <= p->blur_sigma[1]) ||
        !isfinite(p->blur_sigma[1]))
        return DV_ERR(DV_ERR_ARG, "augment: blur sigma (%g, %g) must satisfy 0 < min <= max",
                      p->blur_sigma[0], p->blur_sigma[1]);
    const double prob[3] = {p->p_jitter, p->p_gray, p->p_solarize};
    const char *prob_name[3] = {"colour jitter", "grayscale", "solarize"};
    for (int i = 0; i < 3; i++)
        if (!(prob[i] >= 0.0 && prob[i] <= 1.0))
            return DV_ERR(DV_ERR_ARG, "augment: %s probability %g outside [0, 1]", prob_name[i],
                          prob[i]);
    return DV_OK;
}

double dv_augment_blur_probability(const dv_augment_params *p, int crop) {
    /* The official GaussianBlur(p) wraps RandomApply(p = 1 - p): nominal 1.0 / 0.1 / 0.5. */
    double nominal = crop == 0 ? 1.0 : crop == 1 ? 0.1 : 0.5;
    return p->blur_intended ? nominal : 1.0 - nominal;
}

/* ------------------------------------------------------------------------------------------ */
/* scratch                                                                                    */

int dv_augment_scratch_create(dv_augment_scratch **out) {
    if (!out) return DV_ERR(DV_ERR_ARG, "augment: NULL scratch pointer");
    dv_augment_scratch *s;
    DV_CHECK_ALLOC(s = calloc(1, sizeof *s));
    *out = s;
    return DV_OK;
}

void dv_augment_scratch_free(dv_augment_scratch *s) {
    if (!s) return;
    dv_resample_ws_free(&s->rs);
    free(s->u8);
    free(s->f32);
    free(s);
}

static int reserve_u8_(dv_augment_scratch *s, size_t n) {
    if (s->u8_cap >= n) return DV_OK;
    uint8_t *p = realloc(s->u8, n);
    if (!p) return DV_ERR(DV_ERR_NOMEM, "augment scratch: out of memory (%zu bytes)", n);
    s->u8 = p;
    s->u8_cap = n;
    return DV_OK;
}

static int reserve_f32_(dv_augment_scratch *s, size_t n) {
    if (s->f32_cap >= n) return DV_OK;
    float *p = realloc(s->f32, n * sizeof *p);
    if (!p) return DV_ERR(DV_ERR_NOMEM, "augment scratch: out of memory (%zu floats)", n);
    s->f32 = p;
    s->f32_cap = n;
    return DV_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Pillow colour operations on interleaved RGB uint8                                          */

uint8_t dv_pil_luma(uint8_t r, uint8_t g, uint8_t b) {
    /* Pillow's L24: ITU-R 601-2 luma in 16-bit fixed point, rounded */
    return (uint8_t)(((uint32_t)r * 19595u + (uint32_t)g * 38470u + (uint32_t)b * 7471u + 0x8000u) >> 16);
}

/* Image.blend(degenerate, image, alpha) for one value (libImaging/Blend.c). */
static inline uint8_t blend_(uint8_t d, uint8_t x, float alpha) {
    if (alpha == 0.0f) return d;
    if (alpha == 1.0f) return x;
    float v = (float)(int)d + alpha * (float)((int)x - (int)d);
    if (alpha >= 0.0f && alpha <= 1.0f) return (uint8_t)(v < 0.0f ? 0.0f : v); /* truncation */
    if (v <= 0.0f) return 0;
    if (v >= 255.0f) return 255;
    return (uint8_t)v;
}

void dv_pil_brightness(uint8_t *rgb, size_t n, float factor) {
    if (factor == 1.0f) return;
    for (size_t i = 0; i < 3 * n; i++) rgb[i] = blend_(0, rgb[i], factor);
}

void dv_pil_contrast(uint8_t *rgb, size_t n, float factor) {
    if (factor == 1.0f || n == 0) return;
    /* ImageStat mean of convert("L"), then int(mean + 0.5) */
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++) sum += dv_pil_luma(rgb[3 * i], rgb[3 * i + 1], rgb[3 * i + 2]);
    double mean = (double)sum / (double)n;
    uint8_t m = (uint8_t)(int)(mean + 0.5);
    for (size_t i = 0; i < 3 * n; i++) rgb[i] = blend_(m, rgb[i], factor);
}

void dv_pil_saturation(uint8_t *rgb, size_t n, float factor) {
    if (factor == 1.0f) return;
    for (size_t i = 0; i < n; i++) {
        uint8_t *p = rgb + 3 * i;
        uint8_t l = dv_pil_luma(p[0], p[1], p[2]);
        p[0] = blend_(l, p[0], factor);
        p[1] = blend_(l, p[1], factor);
        p[2] = blend_(l, p[2], factor);
    }
}

static inline uint8_t clip8i_(int v) { return v <= 0 ? 0 : v < 256 ? (uint8_t)v : 255; }

/* Pillow rgb2hsv_row (libImaging/Convert.c), types mirrored. */
static inline void rgb2hsv_(const uint8_t *in, uint8_t *h_out, uint8_t *s_out, uint8_t *v_out) {
    uint8_t r = in[0], g = in[1], b = in[2];
    uint8_t maxc = r > g ? r : g;
    maxc = maxc > b ? maxc : b;
    uint8_t minc = r < g ? r : g;
    minc = minc < b ? minc : b;
    *v_out = maxc;
    if (minc == maxc) {
        *h_out = 0;
        *s_out = 0;
        return;
    }
    float cr = (float)(maxc - minc);
    float s = cr / (float)maxc;
    float rc = ((float)(maxc - r)) / cr;
    float gc = ((float)(maxc - g)) / cr;
    float bc = ((float)(maxc - b)) / cr;
    float h;
    if (r == maxc) h = bc - gc;
    else if (g == maxc) h = (float)(2.0 + (double)rc - (double)bc);
    else h = (float)(4.0 + (double)gc - (double)rc);
    /* fmod(x, 1.0) with x = h/6 + 1 in [5/6, 11/6]: x or x - 1, both exact */
    double x = (double)h / 6.0 + 1.0;
    h = (float)(x >= 1.0 ? x - 1.0 : x);
    *h_out = clip8i_((int)((double)h * 255.0));
    *s_out = clip8i_((int)((double)s * 255.0));
}

/* C round() (half away from zero) for 0 <= x < 2^31, without a libm call. */
static inline int round_nonneg_(double x) {
    int r = (int)x; /* truncation = floor for x >= 0 */
    return x - (double)r >= 0.5 ? r + 1 : r;
}

/* Pillow hsv2rgb (libImaging/Convert.c), types mirrored. */
static inline void hsv2rgb_(uint8_t h, uint8_t s, uint8_t v, uint8_t *out) {
    if (s == 0) {
        out[0] = out[1] = out[2] = v;
        return;
    }
    int i = (int)((double)(float)h * 6.0 / 255.0); /* floor of a value >= 0 */
    float f = (float)((double)(float)h * 6.0 / 255.0 - (double)(float)i);
    float fs = (float)((double)(float)s / 255.0);
    /* all three arguments are >= 0 (0 <= fs <= 1, 0 <= f < 1) */
    int p = round_nonneg_((double)(float)v * (1.0 - (double)fs));
    int q = round_nonneg_((double)(float)v * (1.0 - (double)(fs * f)));
    int t = round_nonneg_((double)(float)v * (1.0 - (double)fs * (1.0 - (double)f)));
    uint8_t up = clip8i_(p), uq = clip8i_(q), ut = clip8i_(t);
    switch (i % 6) {
    case 0: out[0] = v; out[1] = ut; out[2] = up; break;
    case 1: out[0] = uq; out[1] = v; out[2] = up; break;
    case 2: out[0] = up; out[1] = v; out[2] = ut; break;
    case 3: out[0] = up; out[1] = uq; out[2] = v; break;
    case 4: out[0] = ut; out[1] = up; out[2] = v; break;
    default: out[0] = v; out[1] = up; out[2] = uq; break;
    }
}

void dv_pil_hue(uint8_t *rgb, size_t n, float hue_factor) {
    /* torchvision: np_h += np.uint8(hue_factor * 255) — a C cast of the double through int
     * (x86), i.e. truncation toward zero, then uint8 wrap-around. No shortcut for 0: the
     * HSV round trip itself quantises (as the official pipeline does). */
    int shift_i = (int)((double)hue_factor * 255.0);
    uint8_t shift = (uint8_t)((unsigned)shift_i & 0xffu);
    for (size_t i = 0; i < n; i++) {
        uint8_t *p = rgb + 3 * i, h, s, v;
        rgb2hsv_(p, &h, &s, &v);
        h = (uint8_t)(h + shift);
        hsv2rgb_(h, s, v, p);
    }
}

void dv_pil_grayscale(uint8_t *rgb, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint8_t *p = rgb + 3 * i;
        p[0] = p[1] = p[2] = dv_pil_luma(p[0], p[1], p[2]);
    }
}

void dv_pil_solarize(uint8_t *rgb, size_t n, int threshold) {
    for (size_t i = 0; i < 3 * n; i++)
        if (rgb[i] >= threshold) rgb[i] = (uint8_t)(255 - rgb[i]);
}

/* torch "reflect" padding index (edge not repeated), extended periodically for tiny sizes. */
static inline int reflect_(int i, int n) {
    if (n == 1) return 0;
    int period = 2 * (n - 1);
    i %= period;
    if (i < 0) i += period;
    return i < n ? i : period - i;
}

int dv_gaussian_blur(uint8_t *rgb, int h, int w, int ksize, float sigma, float *tmp) {
    if (!rgb || !tmp || h < 1 || w < 1 || ksize < 1 || ksize % 2 == 0 || ksize > 63 ||
        !(sigma > 0.0f))
        return DV_ERR(DV_ERR_ARG, "gaussian blur: bad arguments (%dx%d, k %d, sigma %g)", h, w,
                      ksize, (double)sigma);
    /* torchvision _get_gaussian_kernel1d in float32: x = linspace(-(k-1)/2, (k-1)/2, k),
     * pdf = exp(-0.5 (x/sigma)^2), normalised by its sum; the 2-D kernel is the outer product,
     * applied here separably (equal up to float summation order). */
    float k1[63], sum = 0.0f;
    int half = ksize / 2;
    for (int i = 0; i < ksize; i++) {
        float x = (float)(i - half) / sigma;
        k1[i] = expf(-0.5f * (x * x));
        sum += k1[i];
    }
    for (int i = 0; i < ksize; i++) k1[i] /= sum;
    /* horizontal: tmp (h, w, 3); each source row is first widened to a reflect-padded float
     * row (after the accumulator row), then the taps are summed in order */
    size_t rowlen = (size_t)w * 3;
    float *acc = tmp + (size_t)h * rowlen;
    float *pad = acc + rowlen;
    for (int y = 0; y < h; y++) {
        const uint8_t *row = rgb + (size_t)y * rowlen;
        for (int x = -half; x < w + half; x++) {
            const uint8_t *p = row + (size_t)reflect_(x, w) * 3;
            float *q = pad + (size_t)(x + half) * 3;
            q[0] = (float)p[0];
            q[1] = (float)p[1];
            q[2] = (float)p[2];
        }
        float *restrict out = tmp + (size_t)y * rowlen;
        for (size_t e = 0; e < rowlen; e++) out[e] = 0.0f;
        for (int j = 0; j < ksize; j++) {
            const float k = k1[j], *restrict src = pad + (size_t)j * 3;
            for (size_t e = 0; e < rowlen; e++) out[e] += k * src[e];
        }
    }
    /* vertical, rounded half to even (torch.round) and clamped back to uint8; the extra row
     * of tmp accumulates one output row (taps in order, as the horizontal pass) */
    for (int y = 0; y < h; y++) {
        float *restrict a = acc;
        for (size_t e = 0; e < rowlen; e++) a[e] = 0.0f;
        for (int i = 0; i < ksize; i++) {
            const float *restrict src = tmp + (size_t)reflect_(y + i - half, h) * rowlen;
            const float k = k1[i];
            for (size_t e = 0; e < rowlen; e++) a[e] += k * src[e];
        }
        uint8_t *out = rgb + (size_t)y * rowlen;
        for (size_t e = 0; e < rowlen; e++) {
            /* round half to even: for 0 < v < 2^23, (v + 2^23) - 2^23 in round-to-nearest */
            float v = a[e], r = v <= 0.0f ? 0.0f : (v + 0x1.0p23f) - 0x1.0p23f;
            out[e] = r >= 255.0f ? 255 : (uint8_t)r;
        }
    }
    return DV_OK;
}

static void normalize_lut_(float lut[3][256]) {
    for (int c = 0; c < 3; c++) {
        float mean = (float)IMAGENET_MEAN[c], std = (float)IMAGENET_STD[c];
        for (int v = 0; v < 256; v++) lut[c][v] = ((float)v / 255.0f - mean) / std;
    }
}

void dv_to_tensor_normalize(const uint8_t *rgb, int h, int w, float *out) {
    float lut[3][256];
    normalize_lut_(lut);
    size_t n = (size_t)h * (size_t)w;
    for (int c = 0; c < 3; c++) {
        float *o = out + (size_t)c * n;
        const float *l = lut[c];
        for (size_t i = 0; i < n; i++) o[i] = l[rgb[3 * i + c]];
    }
}

/* ------------------------------------------------------------------------------------------ */
/* drawing                                                                                    */

/* torch.empty(1).uniform_(lo, hi) on float32: lo + (hi - lo) * u in float. */
static inline float uniform_f_(dv_rng *r, double lo, double hi) {
    float u = dv_rng_uniform(r);
    return u * ((float)hi - (float)lo) + (float)lo;
}

int dv_rrc_draw_box(dv_rng *r, int img_h, int img_w, const double scale[2], const double ratio[2],
                    dv_crop_box *box, int *attempt) {
    if (!r || !box || img_h < 1 || img_w < 1 || !scale || !ratio)
        return DV_ERR(DV_ERR_ARG, "RandomResizedCrop: bad arguments (image %dx%d)", img_h, img_w);
    double area = (double)img_h * (double)img_w;
    float log_r0 = logf((float)ratio[0]), log_r1 = logf((float)ratio[1]);
    for (int a = 0; a < 10; a++) {
        double target_area = area * (double)uniform_f_(r, scale[0], scale[1]);
        float u = dv_rng_uniform(r);
        double aspect = (double)expf(u * (log_r1 - log_r0) + log_r0);
        double wd = rint(sqrt(target_area * aspect)), hd = rint(sqrt(target_area / aspect));
        if (wd > 0 && wd <= img_w && hd > 0 && hd <= img_h) {
            int w = (int)wd, h = (int)hd;
            box->top = (int)dv_rng_int(r, 0, img_h - h);
            box->left = (int)dv_rng_int(r, 0, img_w - w);
            box->height = h;
            box->width = w;
            if (attempt) *attempt = a;
            return DV_OK;
        }
    }
    /* fallback: central crop at the nearest allowed aspect ratio */
    double in_ratio = (double)img_w / (double)img_h;
    int w, h;
    if (in_ratio < ratio[0]) {
        w = img_w;
        h = (int)rint(w / ratio[0]);
    } else if (in_ratio > ratio[1]) {
        h = img_h;
        w = (int)rint(h * ratio[1]);
    } else {
        w = img_w;
        h = img_h;
    }
    if (h < 1) h = 1;
    if (w < 1) w = 1;
    if (h > img_h) h = img_h;
    if (w > img_w) w = img_w;
    box->top = (img_h - h) / 2;
    box->left = (img_w - w) / 2;
    box->height = h;
    box->width = w;
    if (attempt) *attempt = -1;
    return DV_OK;
}

int dv_augment_draw(const dv_augment_params *p, int crop, int img_h, int img_w, uint64_t seed,
                    uint64_t epoch, uint64_t sample_id, dv_crop_record *rec) {
    DV_TRY(dv_augment_params_check(p));
    if (!rec || crop < 0 || crop >= 2 + p->local_number || img_h < 1 || img_w < 1)
        return DV_ERR(DV_ERR_ARG, "augment draw: bad crop %d or image %dx%d", crop, img_h, img_w);
    memset(rec, 0, sizeof *rec);
    dv_rng r;
    dv_rng_init(&r, seed, (uint32_t)(DV_RNG_AUGMENT + crop), epoch, sample_id);
    const int global = crop < 2;
    rec->crop = crop;
    rec->out_size = global ? p->global_size : p->local_size;
    /* 1. RandomResizedCrop */
    DV_TRY(dv_rrc_draw_box(&r, img_h, img_w, global ? p->global_scale : p->local_scale, p->ratio,
                           &rec->box, &rec->box_attempt));
    /* 2. RandomHorizontalFlip: torch.rand(1) < p */
    rec->flip = dv_rng_uniform(&r) < (float)P_FLIP;
    /* 3. RandomApply(ColorJitter): applied unless p < rand; then randperm(4), b, c, s, h */
    rec->jitter = !((float)p->p_jitter < dv_rng_uniform(&r));
    for (int i = 0; i < 4; i++) rec->jitter_order[i] = i;
    if (rec->jitter) {
        int64_t perm[4];
        dv_rng_permutation(&r, perm, 4);
        for (int i = 0; i < 4; i++) rec->jitter_order[i] = (int)perm[i];
        rec->brightness = uniform_f_(&r, JIT_B_LO, JIT_B_HI);
        rec->contrast = uniform_f_(&r, JIT_C_LO, JIT_C_HI);
        rec->saturation = uniform_f_(&r, JIT_S_LO, JIT_S_HI);
        rec->hue = uniform_f_(&r, JIT_H_LO, JIT_H_HI);
    }
    /* 4. RandomGrayscale: torch.rand(1) < p */
    rec->gray = dv_rng_uniform(&r) < (float)p->p_gray;
    /* 5. GaussianBlur = RandomApply(p_eff): applied unless p_eff < rand; then sigma */
    float p_blur = (float)dv_augment_blur_probability(p, crop);
    rec->blur = !(p_blur < dv_rng_uniform(&r));
    if (rec->blur) rec->blur_sigma = uniform_f_(&r, p->blur_sigma[0], p->blur_sigma[1]);
    /* 6. RandomSolarize on the second global crop: torch.rand(1).item() < p */
    if (crop == 1) rec->solarize = (double)dv_rng_uniform(&r) < p->p_solarize;
    return DV_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* rendering                                                                                  */

static int check_image_(const uint8_t *img, int h, int w, int c) {
    if (!img || h < 1 || w < 1 || (c != 1 && c != 3))
        return DV_ERR(DV_ERR_ARG, "augment: bad image (%dx%d, %d channels; need 1 or 3)", h, w, c);
    return DV_OK;
}

/* Gray (n) to RGB (n, 3) in place, from the end. */
static void gray_to_rgb_(uint8_t *buf, size_t n) {
    for (size_t i = n; i-- > 0;) buf[3 * i] = buf[3 * i + 1] = buf[3 * i + 2] = buf[i];
}

static void hflip_(uint8_t *rgb, int h, int w) {
    for (int y = 0; y < h; y++) {
        uint8_t *row = rgb + (size_t)y * w * 3;
        for (int a = 0, b = w - 1; a < b; a++, b--) {
            uint8_t t0 = row[3 * a], t1 = row[3 * a + 1], t2 = row[3 * a + 2];
            row[3 * a] = row[3 * b];
            row[3 * a + 1] = row[3 * b + 1];
            row[3 * a + 2] = row[3 * b + 2];
            row[3 * b] = t0;
            row[3 * b + 1] = t1;
            row[3 * b + 2] = t2;
        }
    }
}

int dv_augment_render_u8(const dv_crop_record *rec, const uint8_t *img, int h, int w, int c,
                         uint8_t *out, dv_augment_scratch *s) {
    DV_TRY(check_image_(img, h, w, c));
    if (!rec || !out || !s) return DV_ERR(DV_ERR_ARG, "augment render: NULL argument");
    const dv_crop_box *b = &rec->box;
    int S = rec->out_size;
    if (S < 1 || b->height < 1 || b->width < 1 || b->top < 0 || b->left < 0 ||
        b->top > h - b->height || b->left > w - b->width)
        return DV_ERR(DV_ERR_ARG, "augment render: box (%d,%d %dx%d) outside the %dx%d image",
                      b->top, b->left, b->height, b->width, h, w);
    size_t n = (size_t)S * (size_t)S;
    /* RandomResizedCrop: crop (a view) then Pillow bicubic resize */
    DV_TRY(dv_resample_bicubic(img + ((size_t)b->top * w + b->left) * c, b->height, b->width, c,
                               (size_t)w * c, out, S, S, &s->rs));
    if (c == 1) gray_to_rgb_(out, n);
    if (rec->flip) hflip_(out, S, S);
    if (rec->jitter) {
        for (int i = 0; i < 4; i++) {
            switch (rec->jitter_order[i]) {
            case 0: dv_pil_brightness(out, n, rec->brightness); break;
            case 1: dv_pil_contrast(out, n, rec->contrast); break;
            case 2: dv_pil_saturation(out, n, rec->saturation); break;
            case 3: dv_pil_hue(out, n, rec->hue); break;
            default: return DV_ERR(DV_ERR_ARG, "augment render: bad jitter op %d", rec->jitter_order[i]);
            }
        }
    }
    if (rec->gray) dv_pil_grayscale(out, n);
    if (rec->blur) {
        DV_TRY(reserve_f32_(s, ((size_t)S + 2) * ((size_t)S + BLUR_KSIZE) * 3));
        DV_TRY(dv_gaussian_blur(out, S, S, BLUR_KSIZE, rec->blur_sigma, s->f32));
    }
    if (rec->solarize) dv_pil_solarize(out, n, SOLARIZE_THRESHOLD);
    return DV_OK;
}

int dv_augment_render(const dv_crop_record *rec, const uint8_t *img, int h, int w, int c,
                      float *out, dv_augment_scratch *s) {
    if (!rec || !out || !s) return DV_ERR(DV_ERR_ARG, "augment render: NULL argument");
    int S = rec->out_size;
    if (S < 1) return DV_ERR(DV_ERR_ARG, "augment render: output size %d", S);
    DV_TRY(reserve_u8_(s, (size_t)S * S * 3));
    DV_TRY(dv_augment_render_u8(rec, img, h, w, c, s->u8, s));
    dv_to_tensor_normalize(s->u8, S, S, out);
    return DV_OK;
}

int dv_augment_image(const dv_augment_params *p, const uint8_t *img, int h, int w, int c,
                     uint64_t seed, uint64_t epoch, uint64_t sample_id, float *global_out,
                     float *local_out, dv_crop_record *rec, dv_augment_scratch *s) {
    DV_TRY(dv_augment_params_check(p));
    DV_TRY(check_image_(img, h, w, c));
    if (!global_out || !s || (p->local_number > 0 && !local_out))
        return DV_ERR(DV_ERR_ARG, "augment: NULL output or scratch");
    size_t gsz = (size_t)3 * p->global_size * p->global_size;
    size_t lsz = (size_t)3 * p->local_size * p->local_size;
    for (int k = 0; k < 2 + p->local_number; k++) {
        dv_crop_record r;
        DV_TRY(dv_augment_draw(p, k, h, w, seed, epoch, sample_id, &r));
        float *out = k < 2 ? global_out + (size_t)k * gsz : local_out + (size_t)(k - 2) * lsz;
        DV_TRY(dv_augment_render(&r, img, h, w, c, out, s));
        if (rec) rec[k] = r;
    }
    return DV_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* decode-scale hook                                                                          */

int dv_decode_scale_num(const dv_crop_box *box, int out_h, int out_w, int denom) {
    if (!box || denom < 1) return 1;
    for (int n = 1; n < denom; n++)
        if ((int64_t)box->width * n >= (int64_t)out_w * denom &&
            (int64_t)box->height * n >= (int64_t)out_h * denom)
            return n;
    return denom;
}

int dv_augment_decode_scale(const dv_crop_record *rec, int n_rec, int denom) {
    int n = 1;
    if (denom < 1) return 1;
    for (int i = 0; i < n_rec; i++) {
        int k = dv_decode_scale_num(&rec[i].box, rec[i].out_size, rec[i].out_size, denom);
        if (k > n) n = k;
    }
    return n;
}

void dv_crop_box_rescale(const dv_crop_box *in, int img_h, int img_w, int scaled_h, int scaled_w,
                         dv_crop_box *out) {
    if (img_h < 1 || img_w < 1 || scaled_h < 1 || scaled_w < 1) {
        *out = *in;
        return;
    }
    int64_t t0 = (int64_t)in->top * scaled_h / img_h;
    int64_t t1 = ((int64_t)(in->top + in->height) * scaled_h + img_h - 1) / img_h;
    int64_t l0 = (int64_t)in->left * scaled_w / img_w;
    int64_t l1 = ((int64_t)(in->left + in->width) * scaled_w + img_w - 1) / img_w;
    if (t1 > scaled_h) t1 = scaled_h;
    if (l1 > scaled_w) l1 = scaled_w;
    if (t1 <= t0) t1 = t0 + 1;
    if (l1 <= l0) l1 = l0 + 1;
    if (t1 > scaled_h) { t1 = scaled_h; t0 = t1 - 1; }
    if (l1 > scaled_w) { l1 = scaled_w; l0 = l1 - 1; }
    out->top = (int)t0;
    out->height = (int)(t1 - t0);
    out->left = (int)l0;
    out->width = (int)(l1 - l0);
}

/* ------------------------------------------------------------------------------------------ */
/* eval transform                                                                             */

int dv_eval_resize_size(int crop_size) { return (int)lrint((double)crop_size * 256.0 / 224.0); }

int dv_eval_transform(const uint8_t *img, int h, int w, int c, int resize_size, int crop_size,
                      float *out, dv_augment_scratch *s) {
    DV_TRY(check_image_(img, h, w, c));
    if (!out || !s || crop_size < 1 || resize_size < crop_size)
        return DV_ERR(DV_ERR_ARG, "eval transform: need 1 <= crop (%d) <= resize (%d)", crop_size,
                      resize_size);
    /* torchvision Resize(int): shorter side -> size, longer -> int(size * long / short) */
    int shorter = w <= h ? w : h, longer = w <= h ? h : w;
    int new_short = resize_size;
    double nl = (double)((int64_t)resize_size * longer) / (double)shorter;
    if (nl > 1e9) return DV_ERR(DV_ERR_ARG, "eval transform: image %dx%d too elongated", h, w);
    int new_long = (int)nl;
    int new_w = w <= h ? new_short : new_long, new_h = w <= h ? new_long : new_short;
    /* CenterCrop: int(round((H - crop) / 2.0)), Python's round half to even */
    int top = (int)rint((new_h - crop_size) / 2.0), left = (int)rint((new_w - crop_size) / 2.0);
    size_t n = (size_t)crop_size * crop_size;
    DV_TRY(reserve_u8_(s, 3 * n));
    DV_TRY(dv_resample_bicubic_window(img, h, w, c, (size_t)w * c, new_h, new_w, top, left,
                                      crop_size, crop_size, s->u8, &s->rs));
    if (c == 1) gray_to_rgb_(s->u8, n);
    dv_to_tensor_normalize(s->u8, crop_size, crop_size, out);
    return DV_OK;
}
