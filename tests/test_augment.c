/* Multi-crop augmentation, the Pillow colour operations, the bicubic resampler and the eval
 * transform. Hand-computed cases follow Pillow's integer/float semantics (derivations in the
 * comments; the values were also confirmed against Pillow 10.4). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "augment.h"
#include "err.h"
#include "resample.h"
#include "tap.h"

/* A deterministic test image with texture and colour: (h, w, c). */
static uint8_t *make_image_(int h, int w, int c, uint32_t seed) {
    uint8_t *img = malloc((size_t)h * w * c);
    if (!img) return NULL;
    dv_rng r;
    dv_rng_init(&r, seed, DV_RNG_TEST, 0, 0);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int k = 0; k < c; k++) {
                int v = (x * (3 + k) + y * (5 - k) + 40 * k) % 256;
                v = (v + (int)(dv_rng_u32(&r) % 32)) % 256;
                img[((size_t)y * w + x) * c + k] = (uint8_t)v;
            }
    return img;
}

static int all_finite_in_(const float *x, size_t n, float lo, float hi) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]) || x[i] < lo || x[i] > hi) return 0;
    return 1;
}

static int records_equal_(const dv_crop_record *a, const dv_crop_record *b) {
    return memcmp(a, b, sizeof *a) == 0;
}

/* ---- Pillow colour operations --------------------------------------------------------- */

static void test_pil_ops_(void) {
    /* 2x2 image; brightness blends with black: (uint8)(f * v), clipped when f > 1 */
    const uint8_t img[12] = {100, 200, 10, 0, 255, 170, 1, 2, 3, 50, 60, 70};
    uint8_t a[12];
    memcpy(a, img, 12);
    dv_pil_brightness(a, 4, 1.5f);
    const uint8_t b15[12] = {150, 255, 15, 0, 255, 255, 1, 3, 4, 75, 90, 105};
    tap_ok(memcmp(a, b15, 12) == 0, "brightness 1.5: 1.5*v truncated, clipped at 255 (2x2 case)");
    memcpy(a, img, 12);
    dv_pil_brightness(a, 4, 0.5f);
    const uint8_t b05[12] = {50, 100, 5, 0, 127, 85, 0, 1, 1, 25, 30, 35};
    tap_ok(memcmp(a, b05, 12) == 0, "brightness 0.5: 127.5 -> 127, 1.5 -> 1 (truncation)");

    /* contrast: degenerate = int(mean(L) + 0.5); gray 10,20,30,41 -> mean 25.25 -> 25 */
    const uint8_t gray4[12] = {10, 10, 10, 20, 20, 20, 30, 30, 30, 41, 41, 41};
    memcpy(a, gray4, 12);
    dv_pil_contrast(a, 4, 2.0f);
    int ok = a[0] == 0 && a[3] == 15 && a[6] == 35 && a[9] == 57;
    memcpy(a, gray4, 12);
    dv_pil_contrast(a, 4, 0.5f);
    ok &= a[0] == 17 && a[3] == 22 && a[6] == 27 && a[9] == 33;
    tap_ok(ok, "contrast 2.0 -> 0,15,35,57 and 0.5 -> 17,22,27,33 around PIL's mean 25");

    /* saturation 0 = L replicated; L(red, green, blue) = 76, 150, 29 */
    uint8_t rgb[9] = {255, 0, 0, 0, 255, 0, 0, 0, 255};
    dv_pil_saturation(rgb, 3, 0.0f);
    const uint8_t sat0[9] = {76, 76, 76, 150, 150, 150, 29, 29, 29};
    tap_ok(memcmp(rgb, sat0, 9) == 0, "saturation 0: pure R, G, B -> L 76, 150, 29");

    /* hue: red + 1/3 -> shift 85 -> h=85 -> i=2, f=0 -> (0, 255, 0) */
    uint8_t red[3] = {255, 0, 0};
    dv_pil_hue(red, 1, (float)(1.0 / 3.0));
    tap_ok(red[0] == 0 && red[1] == 255 && red[2] == 0, "hue +1/3 on pure red -> (0,255,0)");
    /* red - 1/3 -> shift (uint8)(-85) = 171 -> i=4, f=0.0235 -> (round(255 f), 0, 255) */
    uint8_t red2[3] = {255, 0, 0};
    dv_pil_hue(red2, 1, (float)(-1.0 / 3.0));
    tap_ok(red2[0] == 6 && red2[1] == 0 && red2[2] == 255,
           "hue -1/3 on pure red -> (6,0,255) (shift wraps to 171): got (%d,%d,%d)", red2[0],
           red2[1], red2[2]);

    /* identities: factor 1 is Image.blend's copy shortcut; hue 0 still round-trips via HSV */
    uint8_t *big = make_image_(17, 23, 3, 4), *ref = make_image_(17, 23, 3, 4);
    size_t n = 17 * 23;
    dv_pil_brightness(big, n, 1.0f);
    dv_pil_contrast(big, n, 1.0f);
    dv_pil_saturation(big, n, 1.0f);
    tap_ok(memcmp(big, ref, n * 3) == 0, "brightness 1, contrast 1, saturation 1 are identities");
    uint8_t prim[18] = {255, 0, 0, 0, 255, 0, 0, 0, 255, 200, 200, 200, 0, 0, 0, 255, 255, 255};
    uint8_t prim0[18];
    memcpy(prim0, prim, 18);
    dv_pil_hue(prim, 6, 0.0f);
    tap_ok(memcmp(prim, prim0, 18) == 0, "hue 0 is the identity on primaries, grays, black, white");
    uint8_t orange[3] = {255, 128, 0};
    dv_pil_hue(orange, 1, 0.0f);
    tap_ok(orange[0] == 255 && orange[1] == 126 && orange[2] == 0,
           "hue 0 on (255,128,0) -> (255,126,0): Pillow's 8-bit HSV round trip (as official)");
    free(big);
    free(ref);

    /* grayscale = Pillow L24 = (19595 R + 38470 G + 7471 B + 32768) >> 16 */
    int gray_ok = dv_pil_luma(255, 0, 0) == 76 && dv_pil_luma(0, 255, 0) == 150 &&
                  dv_pil_luma(0, 0, 255) == 29 && dv_pil_luma(255, 255, 255) == 255 &&
                  dv_pil_luma(0, 0, 0) == 0;
    dv_rng r;
    dv_rng_init(&r, 1, DV_RNG_TEST, 1, 0);
    int differs_1000 = 0;
    for (int i = 0; i < 20000; i++) {
        uint32_t u = dv_rng_u32(&r);
        uint8_t p[3] = {(uint8_t)u, (uint8_t)(u >> 8), (uint8_t)(u >> 16)};
        uint32_t want = (19595u * p[0] + 38470u * p[1] + 7471u * p[2] + 32768u) >> 16;
        uint8_t q[3] = {p[0], p[1], p[2]};
        dv_pil_grayscale(q, 1);
        gray_ok &= q[0] == want && q[1] == want && q[2] == want;
        differs_1000 += want != (299u * p[0] + 587u * p[1] + 114u * p[2] + 500u) / 1000u;
    }
    tap_ok(gray_ok, "grayscale: 3 equal channels = PIL L24 luma (76/150/29 for R/G/B)");
    tap_diag("L24 differs from (299R+587G+114B+500)/1000 on %d of 20000 random pixels",
             differs_1000);

    uint8_t sol[6] = {0, 127, 128, 200, 255, 64};
    dv_pil_solarize(sol, 2, 128);
    tap_ok(sol[0] == 0 && sol[1] == 127 && sol[2] == 127 && sol[3] == 55 && sol[4] == 0 &&
               sol[5] == 64,
           "solarize(128) inverts values >= 128 only");
}

static void test_blur_(void) {
    uint8_t *img = make_image_(31, 29, 3, 7), *ref = make_image_(31, 29, 3, 7);
    float *tmp = malloc(33 * 38 * 3 * sizeof *tmp);
    int rc = dv_gaussian_blur(img, 31, 29, 9, 0.1f, tmp);
    tap_ok(rc == DV_OK && memcmp(img, ref, 31 * 29 * 3) == 0,
           "blur sigma 0.1 (kernel side weights ~e^-50) is the identity");
    uint8_t con[31 * 29 * 3];
    memset(con, 173, sizeof con);
    int const_ok = 1;
    for (float s = 0.1f; s <= 2.0f; s += 0.3f) {
        dv_gaussian_blur(con, 31, 29, 9, s, tmp);
        for (size_t i = 0; i < sizeof con; i++) const_ok &= con[i] == 173;
    }
    tap_ok(const_ok, "blur preserves a constant image (reflect padding, normalised kernel)");
    /* impulse: symmetric response, mass ~ preserved */
    uint8_t imp[21 * 21 * 3];
    memset(imp, 0, sizeof imp);
    imp[(10 * 21 + 10) * 3 + 1] = 255;
    dv_gaussian_blur(imp, 21, 21, 9, 1.0f, tmp);
    int sym = 1, mass = 0;
    for (int y = 0; y < 21; y++)
        for (int x = 0; x < 21; x++) {
            int v = imp[(y * 21 + x) * 3 + 1];
            mass += v;
            sym &= v == imp[(x * 21 + y) * 3 + 1] && v == imp[((20 - y) * 21 + (20 - x)) * 3 + 1];
            sym &= imp[(y * 21 + x) * 3] == 0 && imp[(y * 21 + x) * 3 + 2] == 0;
        }
    /* centre weight 1/sum(exp(-x^2/2), x=-4..4) = 0.39894; 255 * 0.39894^2 = 40.58 -> 41 */
    tap_ok(sym && mass > 230 && mass < 280 && imp[(10 * 21 + 10) * 3 + 1] == 41,
           "blur sigma 1 of an impulse 255: symmetric, centre %d (255*0.3989^2 = 40.6), mass %d",
           imp[(10 * 21 + 10) * 3 + 1], mass);
    /* tiny image: reflection of index -k beyond the size folds back (torch needs size > 4) */
    uint8_t small[2 * 3 * 3] = {0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 130, 140, 150, 160, 170};
    rc = dv_gaussian_blur(small, 2, 3, 9, 1.5f, tmp);
    tap_ok(rc == DV_OK, "blur of a 2x3 image runs (periodic reflection)");
    free(img);
    free(ref);
    free(tmp);
}

static void test_normalize_(void) {
    uint8_t px[6] = {0, 255, 128, 255, 0, 64};
    float out[6];
    dv_to_tensor_normalize(px, 1, 2, out); /* CHW: R0 R1 G0 G1 B0 B1 */
    int ok = out[0] == (0.0f / 255.0f - 0.485f) / 0.229f &&
             out[1] == (255.0f / 255.0f - 0.485f) / 0.229f &&
             out[2] == (255.0f / 255.0f - 0.456f) / 0.224f &&
             out[3] == (0.0f / 255.0f - 0.456f) / 0.224f &&
             out[4] == (128.0f / 255.0f - 0.406f) / 0.225f &&
             out[5] == (64.0f / 255.0f - 0.406f) / 0.225f;
    tap_ok(ok, "ToTensor+Normalize: (v/255 - mean)/std in float32, CHW order");
    tap_close(out[0], -2.1179039, 1e-6, "normalize R=0 -> -0.485/0.229");
    tap_close(out[1], 2.2489083, 1e-6, "normalize R=255 -> 0.515/0.229");
}

/* ---- resampler ------------------------------------------------------------------------ */

static void test_resample_(void) {
    dv_resample_ws ws = {0};
    /* Pillow weights for 4 -> 2 (scale 2, support 4): taps at (x - 0.5)/2 = -0.25, 0.25, 0.75,
     * 1.25: cubic(0.25) = 0.8671875, cubic(0.75) = 0.2265625, cubic(1.25) = -0.0703125; sum
     * 1.890625 -> 0.458678, 0.458678, 0.119835, -0.037190 */
    double w[16];
    int first = -1, len = dv_resample_bicubic_weights(4, 2, 0, &first, w, 16);
    const double s = 1.890625;
    int ok = len == 4 && first == 0 && fabs(w[0] - 0.8671875 / s) < 1e-15 &&
             fabs(w[1] - 0.8671875 / s) < 1e-15 && fabs(w[2] - 0.2265625 / s) < 1e-15 &&
             fabs(w[3] + 0.0703125 / s) < 1e-15;
    len = dv_resample_bicubic_weights(4, 2, 1, &first, w, 16);
    ok &= len == 4 && first == 0 && fabs(w[0] + 0.0703125 / s) < 1e-15 &&
          fabs(w[3] - 0.8671875 / s) < 1e-15;
    tap_ok(ok, "4->2 bicubic weights (a=-0.5, support stretched to 4, renormalised at the border)");
    /* [10,20,30,40] -> 15.868 -> 16 and 34.132 -> 34 */
    const uint8_t row[4] = {10, 20, 30, 40};
    uint8_t o2[2];
    dv_resample_bicubic(row, 1, 4, 1, 4, o2, 1, 2, &ws);
    tap_ok(o2[0] == 16 && o2[1] == 34, "[10,20,30,40] 4->2: %d %d (hand: 15.87->16, 34.13->34)",
           o2[0], o2[1]);

    /* constant images stay constant, up and down, RGB and gray */
    uint8_t con[40 * 30 * 3], out[97 * 61 * 3];
    memset(con, 77, sizeof con);
    const int sizes[][2] = {{97, 61}, {7, 5}, {40, 30}, {1, 1}, {40, 3}, {2, 30}};
    int const_ok = 1;
    for (int i = 0; i < 6; i++)
        for (int c = 1; c <= 3; c += 2) {
            int oh = sizes[i][0], ow = sizes[i][1];
            if (dv_resample_bicubic(con, 40, 30, c, (size_t)30 * c, out, oh, ow, &ws) != DV_OK)
                const_ok = 0;
            for (int k = 0; k < oh * ow * c; k++) const_ok &= out[k] == 77;
        }
    tap_ok(const_ok, "constant image stays constant (40x30 -> 97x61, 7x5, 1x1, 40x3, 2x30)");

    /* a linear ramp stays monotone (non-decreasing) along x after up/down sampling */
    uint8_t ramp[8 * 200];
    for (int y = 0; y < 8; y++)
        for (int x = 0; x < 200; x++) ramp[y * 200 + x] = (uint8_t)(x * 255 / 199);
    int mono = 1;
    const int ows[] = {37, 150, 413};
    uint8_t rout[8 * 413];
    for (int i = 0; i < 3; i++) {
        dv_resample_bicubic(ramp, 8, 200, 1, 200, rout, 8, ows[i], &ws);
        for (int y = 0; y < 8; y++)
            for (int x = 1; x < ows[i]; x++) mono &= rout[y * ows[i] + x] >= rout[y * ows[i] + x - 1];
    }
    tap_ok(mono, "a linear ramp stays monotone (200 -> 37, 150, 413)");

    /* unchanged size: exact copy; window == sub-rectangle of the full result */
    uint8_t *img = make_image_(50, 70, 3, 11);
    uint8_t *full = malloc(123 * 45 * 3), *win = malloc(60 * 20 * 3);
    dv_resample_bicubic(img, 50, 70, 3, 70 * 3, full, 50, 70, &ws);
    tap_ok(memcmp(full, img, 50 * 70 * 3) == 0, "same size: exact copy (Pillow skips both passes)");
    dv_resample_bicubic(img, 50, 70, 3, 70 * 3, full, 123, 45, &ws);
    dv_resample_bicubic_window(img, 50, 70, 3, 70 * 3, 123, 45, 31, 17, 60, 20, win, &ws);
    int wok = 1;
    for (int y = 0; y < 60; y++)
        wok &= memcmp(win + (size_t)y * 20 * 3, full + ((size_t)(31 + y) * 45 + 17) * 3, 20 * 3) == 0;
    tap_ok(wok, "window (31,17 60x20) equals that part of the full 123x45 resize");
    /* a sub-image via stride equals resampling a copied crop */
    uint8_t crop[20 * 30 * 3];
    for (int y = 0; y < 20; y++) memcpy(crop + y * 30 * 3, img + ((size_t)(5 + y) * 70 + 9) * 3, 30 * 3);
    uint8_t o1[13 * 11 * 3], o2b[13 * 11 * 3];
    dv_resample_bicubic(crop, 20, 30, 3, 30 * 3, o1, 13, 11, &ws);
    dv_resample_bicubic(img + ((size_t)5 * 70 + 9) * 3, 20, 30, 3, 70 * 3, o2b, 13, 11, &ws);
    tap_ok(memcmp(o1, o2b, sizeof o1) == 0, "strided sub-image = resize of the copied crop");
    tap_ok(dv_resample_bicubic(img, 50, 70, 3, 10, full, 5, 5, &ws) == DV_ERR_ARG,
           "bad stride is DV_ERR_ARG");
    free(img);
    free(full);
    free(win);
    dv_resample_ws_free(&ws);
}

/* ---- RandomResizedCrop ---------------------------------------------------------------- */

static void test_rrc_(void) {
    const double scales[2][2] = {{0.32, 1.0}, {0.05, 0.32}};
    const double ratio[2] = {3.0 / 4.0, 4.0 / 3.0};
    int bad_area = 0, bad_ratio = 0, bad_in = 0, sampled = 0, fallback = 0;
    dv_rng sr;
    dv_rng_init(&sr, 3, DV_RNG_TEST, 0, 0);
    for (int i = 0; i < 20000; i++) {
        int H = 16 + (int)(dv_rng_u32(&sr) % 600), W = 16 + (int)(dv_rng_u32(&sr) % 600);
        const double *sc = scales[i & 1];
        dv_rng r;
        dv_rng_init(&r, 3, DV_RNG_AUGMENT, 0, (uint64_t)i);
        dv_crop_box b;
        int attempt;
        dv_rrc_draw_box(&r, H, W, sc, ratio, &b, &attempt);
        if (b.top < 0 || b.left < 0 || b.height < 1 || b.width < 1 || b.top + b.height > H ||
            b.left + b.width > W)
            bad_in++;
        if (attempt < 0) {
            fallback++;
            continue;
        }
        sampled++;
        double A = (double)H * W, h = b.height, w = b.width;
        /* w, h are round(sqrt(..)): the unrounded box lies within +-0.5 (float32 draws: 1e-6) */
        if ((w + 0.5) * (h + 0.5) < sc[0] * A * (1 - 1e-6) || (w - 0.5) * (h - 0.5) > sc[1] * A * (1 + 1e-6))
            bad_area++;
        if ((w + 0.5) / (h - 0.5) < ratio[0] * (1 - 1e-6) || (w - 0.5) / (h + 0.5) > ratio[1] * (1 + 1e-6))
            bad_ratio++;
    }
    tap_ok(bad_in == 0, "20000 boxes lie inside their images");
    tap_ok(bad_area == 0, "sampled boxes: area fraction within scale (%d sampled, %d fallbacks)",
           sampled, fallback);
    tap_ok(bad_ratio == 0, "sampled boxes: aspect w/h within [3/4, 4/3]");

    /* extreme images always fall back to the central crop at the nearest allowed ratio */
    int fb_ok = 1;
    for (int i = 0; i < 200; i++) {
        dv_rng r;
        dv_rng_init(&r, 4, DV_RNG_AUGMENT, 0, (uint64_t)i);
        dv_crop_box b;
        int attempt;
        dv_rrc_draw_box(&r, 10, 1000, scales[i & 1], ratio, &b, &attempt);
        /* H=10, W=1000: in_ratio 100 > 4/3: h = 10, w = round(13.33) = 13, left = 987/2 = 493 */
        fb_ok &= attempt == -1 && b.top == 0 && b.height == 10 && b.width == 13 && b.left == 493;
        dv_rrc_draw_box(&r, 1000, 10, scales[i & 1], ratio, &b, &attempt);
        /* H=1000, W=10: in_ratio 0.01 < 3/4: w = 10, h = round(13.33) = 13, top = 493 */
        fb_ok &= attempt == -1 && b.left == 0 && b.width == 10 && b.height == 13 && b.top == 493;
    }
    tap_ok(fb_ok, "1000x10 and 10x1000 images: fallback boxes (0,493 10x13) and (493,0 13x10)");
}

/* ---- the whole pipeline --------------------------------------------------------------- */

static void test_pipeline_(void) {
    dv_augment_params p;
    dv_augment_params_default(&p);
    tap_ok(dv_augment_params_check(&p) == DV_OK && p.global_size == 224 && p.local_size == 96 &&
               p.local_number == 8,
           "default parameters (224, 96, 8 locals, scales 0.32-1 / 0.05-0.32)");
    tap_ok(dv_augment_blur_probability(&p, 0) == 0.0 && fabs(dv_augment_blur_probability(&p, 1) - 0.9) < 1e-12 &&
               dv_augment_blur_probability(&p, 2) == 0.5 && dv_augment_blur_probability(&p, 9) == 0.5,
           "official blur probabilities 0 / 0.9 / 0.5 (the inverted flag)");
    dv_augment_params pi = p;
    pi.blur_intended = 1;
    tap_ok(dv_augment_blur_probability(&pi, 0) == 1.0 && dv_augment_blur_probability(&pi, 1) == 0.1 &&
               dv_augment_blur_probability(&pi, 2) == 0.5,
           "intended blur probabilities 1 / 0.1 / 0.5 with blur_intended");

    /* small crop sizes keep the test fast; the code path is the same */
    p.global_size = 64;
    p.local_size = 32;
    p.local_number = 6;
    const int H = 120, W = 90, L = p.local_number, G = p.global_size, l = p.local_size;
    const size_t gsz = (size_t)2 * 3 * G * G, lsz = (size_t)L * 3 * l * l;
    uint8_t *img = make_image_(H, W, 3, 21);
    float *g1 = malloc(gsz * 4), *l1 = malloc(lsz * 4), *g2 = malloc(gsz * 4), *l2 = malloc(lsz * 4);
    dv_crop_record rec1[8], rec2[8];
    dv_augment_scratch *s;
    dv_augment_scratch_create(&s);
    int rc = dv_augment_image(&p, img, H, W, 3, 42, 3, 1000, g1, l1, rec1, s);
    const float lo = (0.0f - 0.485f) / 0.229f, hi = (1.0f - 0.406f) / 0.225f;
    tap_ok(rc == DV_OK && all_finite_in_(g1, gsz, lo, hi) && all_finite_in_(l1, lsz, lo, hi),
           "image %dx%d -> globals (2,3,%d,%d), locals (%d,3,%d,%d), values in the normalised range",
           H, W, G, G, L, l, l);
    int shape_ok = 1;
    for (int k = 0; k < 2 + L; k++)
        shape_ok &= rec1[k].crop == k && rec1[k].out_size == (k < 2 ? G : l) &&
                    (k == 1 || rec1[k].solarize == 0);
    tap_ok(shape_ok, "records: crop index and output size per crop, solarize only on crop 1");

    rc = dv_augment_image(&p, img, H, W, 3, 42, 3, 1000, g2, l2, rec2, s);
    int same = rc == DV_OK && memcmp(g1, g2, gsz * 4) == 0 && memcmp(l1, l2, lsz * 4) == 0;
    for (int k = 0; k < 2 + L; k++) same &= records_equal_(&rec1[k], &rec2[k]);
    tap_ok(same, "same (seed, epoch, sample id): bit-identical crops and records");

    dv_augment_image(&p, img, H, W, 3, 42, 3, 1001, g2, l2, rec2, s);
    int diff_id = memcmp(g1, g2, gsz * 4) != 0 && memcmp(l1, l2, lsz * 4) != 0;
    dv_augment_image(&p, img, H, W, 3, 42, 4, 1000, g2, l2, rec2, s);
    int diff_ep = memcmp(g1, g2, gsz * 4) != 0 && memcmp(l1, l2, lsz * 4) != 0;
    dv_augment_image(&p, img, H, W, 3, 43, 3, 1000, g2, l2, rec2, s);
    int diff_seed = memcmp(g1, g2, gsz * 4) != 0;
    int diff_crop = 1;
    for (int k = 2; k < 2 + L; k++)
        for (int j = k + 1; j < 2 + L; j++) diff_crop &= memcmp(&rec1[k].box, &rec1[j].box, sizeof rec1[k].box) != 0;
    tap_ok(diff_id && diff_ep && diff_seed && diff_crop,
           "a different sample id, epoch or seed changes the crops; local crops differ from each other");

    /* order independence: crops rendered in reverse order and from OpenMP threads */
    float *g3 = calloc(gsz, 4), *l3 = calloc(lsz, 4);
    for (int k = 1 + L; k >= 0; k--) {
        dv_crop_record r;
        dv_augment_draw(&p, k, H, W, 42, 3, 1000, &r);
        float *o = k < 2 ? g3 + (size_t)k * 3 * G * G : l3 + (size_t)(k - 2) * 3 * l * l;
        dv_augment_render(&r, img, H, W, 3, o, s);
    }
    tap_ok(memcmp(g1, g3, gsz * 4) == 0 && memcmp(l1, l3, lsz * 4) == 0,
           "crops drawn and rendered in reverse order are identical");
    memset(g3, 0, gsz * 4);
    memset(l3, 0, lsz * 4);
    int nt = 1;
#ifdef _OPENMP
    nt = omp_get_max_threads();
#endif
    dv_augment_scratch **ts = calloc((size_t)nt, sizeof *ts);
    for (int t = 0; t < nt; t++) dv_augment_scratch_create(&ts[t]);
    int omp_err = 0;
#pragma omp parallel for schedule(dynamic, 1) reduction(+ : omp_err)
    for (int k = 0; k < 2 + L; k++) {
        int t = 0;
#ifdef _OPENMP
        t = omp_get_thread_num();
#endif
        dv_crop_record r;
        float *o = k < 2 ? g3 + (size_t)k * 3 * G * G : l3 + (size_t)(k - 2) * 3 * l * l;
        omp_err += dv_augment_draw(&p, k, H, W, 42, 3, 1000, &r) != DV_OK;
        omp_err += dv_augment_render(&r, img, H, W, 3, o, ts[t]) != DV_OK;
    }
    tap_ok(omp_err == 0 && memcmp(g1, g3, gsz * 4) == 0 && memcmp(l1, l3, lsz * 4) == 0,
           "crops computed by %d OpenMP threads (own scratch each) are identical", nt);
    for (int t = 0; t < nt; t++) dv_augment_scratch_free(ts[t]);
    free(ts);

    /* gray input == its RGB replication (PIL convert("RGB")) */
    uint8_t *gimg = make_image_(H, W, 1, 5), *grgb = malloc((size_t)H * W * 3);
    for (int i = 0; i < H * W; i++) grgb[3 * i] = grgb[3 * i + 1] = grgb[3 * i + 2] = gimg[i];
    dv_augment_image(&p, gimg, H, W, 1, 9, 0, 77, g2, l2, NULL, s);
    dv_augment_image(&p, grgb, H, W, 3, 9, 0, 77, g3, l3, NULL, s);
    tap_ok(memcmp(g2, g3, gsz * 4) == 0 && memcmp(l2, l3, lsz * 4) == 0,
           "a 1-channel image gives exactly the crops of its RGB replication");

    /* render_u8 followed by normalize equals render */
    dv_crop_record r0;
    dv_augment_draw(&p, 1, H, W, 42, 3, 1000, &r0);
    uint8_t *u8 = malloc((size_t)G * G * 3);
    float *fo = malloc((size_t)3 * G * G * 4);
    dv_augment_render_u8(&r0, img, H, W, 3, u8, s);
    dv_to_tensor_normalize(u8, G, G, fo);
    tap_ok(memcmp(fo, g1 + (size_t)3 * G * G, (size_t)3 * G * G * 4) == 0,
           "render_u8 + to_tensor_normalize == render");

    /* an extreme image renders (fallback box) */
    uint8_t *thin = make_image_(10, 1000, 3, 8);
    rc = dv_augment_image(&p, thin, 10, 1000, 3, 1, 1, 1, g2, l2, rec2, s);
    tap_ok(rc == DV_OK && rec2[0].box_attempt == -1 && all_finite_in_(g2, gsz, lo, hi),
           "a 10x1000 image augments via the fallback box");

    /* errors */
    dv_augment_params bad = p;
    bad.global_scale[0] = 0.0;
    int e1 = dv_augment_params_check(&bad);
    bad = p;
    bad.local_number = 300;
    int e2 = dv_augment_params_check(&bad);
    int e3 = dv_augment_image(&p, img, H, W, 4, 1, 1, 1, g2, l2, NULL, s);
    dv_crop_record rb = r0;
    rb.box.left = W - 5;
    rb.box.width = 10;
    int e4 = dv_augment_render(&rb, img, H, W, 3, fo, s);
    tap_ok(e1 == DV_ERR_ARG && e2 == DV_ERR_ARG && e3 == DV_ERR_ARG && e4 == DV_ERR_ARG,
           "bad scale, too many crops, 4 channels, box outside the image: DV_ERR_ARG");

    free(thin);
    free(u8);
    free(fo);
    free(gimg);
    free(grgb);
    free(g1);
    free(g2);
    free(g3);
    free(l1);
    free(l2);
    free(l3);
    free(img);
    dv_augment_scratch_free(s);
}

/* binomial check: |k - n p| <= 5 sqrt(n p (1-p)) (+1 for p in {0,1}) */
static int binom_ok_(int k, int n, double p) {
    return fabs(k - n * p) <= 5.0 * sqrt(n * p * (1 - p)) + 1.0;
}

static void test_probabilities_(void) {
    dv_augment_params p;
    dv_augment_params_default(&p);
    const int n = 2000;
    for (int intended = 0; intended <= 1; intended++) {
        p.blur_intended = intended;
        int blur[3] = {0, 0, 0}, sig_ok = 1;
        for (int i = 0; i < n; i++)
            for (int kind = 0; kind < 3; kind++) {
                dv_crop_record r;
                dv_augment_draw(&p, kind == 2 ? 2 + i % 8 : kind, 480, 640, 17, 0, (uint64_t)i, &r);
                blur[kind] += r.blur;
                if (r.blur) sig_ok &= r.blur_sigma >= 0.1f && r.blur_sigma <= 2.0f;
            }
        double want[3];
        for (int k = 0; k < 3; k++) want[k] = dv_augment_blur_probability(&p, k < 2 ? k : 2);
        tap_ok(binom_ok_(blur[0], n, want[0]) && binom_ok_(blur[1], n, want[1]) &&
                   binom_ok_(blur[2], n, want[2]) && sig_ok,
               "%s blur rates over %d draws: global0 %d, global1 %d, local %d (want %.1f/%.1f/%.1f), "
               "sigma in [0.1, 2]",
               intended ? "intended" : "official", n, blur[0], blur[1], blur[2], want[0], want[1],
               want[2]);
        if (!intended) tap_ok(blur[0] == 0, "official: global crop 0 is never blurred");
        else tap_ok(blur[0] == n, "intended: global crop 0 is always blurred");
    }
    /* the other coins */
    p.blur_intended = 0;
    int flip = 0, jit = 0, gray = 0, sol1 = 0, sol_other = 0, perm_ok = 1, fac_ok = 1;
    for (int i = 0; i < n; i++) {
        dv_crop_record r;
        int k = i % 10;
        dv_augment_draw(&p, k, 480, 640, 18, 2, (uint64_t)i, &r);
        flip += r.flip;
        jit += r.jitter;
        gray += r.gray;
        if (k == 1) sol1 += r.solarize;
        else sol_other += r.solarize;
        int seen = 0;
        for (int j = 0; j < 4; j++) seen |= 1 << r.jitter_order[j];
        perm_ok &= seen == 15;
        if (r.jitter)
            fac_ok &= r.brightness >= 0.6f && r.brightness <= 1.4f && r.contrast >= 0.6f &&
                      r.contrast <= 1.4f && r.saturation >= 0.8f && r.saturation <= 1.2f &&
                      r.hue >= -0.1f && r.hue <= 0.1f;
    }
    tap_ok(binom_ok_(flip, n, 0.5) && binom_ok_(jit, n, 0.8) && binom_ok_(gray, n, 0.2),
           "flip %d (0.5), jitter %d (0.8), grayscale %d (0.2) of %d", flip, jit, gray, n);
    tap_ok(binom_ok_(sol1, n / 10, 0.2) && sol_other == 0,
           "solarize: %d of %d on global crop 1 (0.2), never on other crops", sol1, n / 10);
    tap_ok(perm_ok && fac_ok, "jitter order is a permutation of the 4 ops; factors in range");

    /* dinov2c strength keys: other probabilities and sigma range, same coins otherwise */
    dv_augment_params q = p;
    q.p_jitter = 0.3;
    q.p_gray = 0.0;
    q.p_solarize = 1.0;
    q.blur_sigma[0] = 0.2;
    q.blur_sigma[1] = 0.5;
    int qjit = 0, qgray = 0, qsol = 0, qblur = 0, qsig_ok = 1, flips_same = 1, boxes_same = 1;
    for (int i = 0; i < n; i++) {
        dv_crop_record a, b;
        int k = i % 10;
        dv_augment_draw(&p, k, 480, 640, 18, 2, (uint64_t)i, &a);
        dv_augment_draw(&q, k, 480, 640, 18, 2, (uint64_t)i, &b);
        qjit += b.jitter;
        qgray += b.gray;
        if (k == 1) qsol += b.solarize;
        if (b.blur) qblur++, qsig_ok &= b.blur_sigma >= 0.2f && b.blur_sigma <= 0.5f;
        flips_same &= a.flip == b.flip;
        boxes_same &= memcmp(&a.box, &b.box, sizeof a.box) == 0;
    }
    tap_ok(binom_ok_(qjit, n, 0.3) && qgray == 0 && qsol == n / 10 && qblur > 0 && qsig_ok,
           "jitter p 0.3: %d of %d; grayscale p 0: %d; solarize p 1: %d of %d; %d blur sigmas "
           "in [0.2, 0.5]", qjit, n, qgray, qsol, n / 10, qblur);
    tap_ok(flips_same && boxes_same, "changing the strengths keeps the boxes and flips drawn");
    dv_augment_params bad = p;
    bad.p_solarize = 1.5;
    int e1 = dv_augment_params_check(&bad);
    bad = p;
    bad.blur_sigma[0] = 0.0;
    int e2 = dv_augment_params_check(&bad);
    bad = p;
    bad.blur_sigma[0] = 3.0;
    int e3 = dv_augment_params_check(&bad);
    tap_ok(e1 == DV_ERR_ARG && e2 == DV_ERR_ARG && e3 == DV_ERR_ARG,
           "solarize p 1.5, sigma min 0, sigma min > max: DV_ERR_ARG");
}

static void test_eval_and_decode_(void) {
    tap_ok(dv_eval_resize_size(224) == 256 && dv_eval_resize_size(518) == 592 &&
               dv_eval_resize_size(98) == 112,
           "eval resize size round(crop*256/224): 224->256, 518->592, 98->112");
    dv_augment_scratch *s;
    dv_augment_scratch_create(&s);
    /* short side already 40 = resize: no resampling, plain centre crop (top = round(13/2) = 6
     * (half to even), left = round((60-27)/2) = round(16.5) = 16) */
    uint8_t *img = make_image_(40, 60, 3, 2);
    float out[3 * 27 * 27], ref[3 * 27 * 27];
    int rc = dv_eval_transform(img, 40, 60, 3, 40, 27, out, s);
    uint8_t crop[27 * 27 * 3];
    for (int y = 0; y < 27; y++) memcpy(crop + y * 27 * 3, img + ((size_t)(7 + y) * 60 + 16) * 3, 27 * 3);
    dv_to_tensor_normalize(crop, 27, 27, ref);
    int match7 = memcmp(out, ref, sizeof out) == 0;
    for (int y = 0; y < 27; y++) memcpy(crop + y * 27 * 3, img + ((size_t)(6 + y) * 60 + 16) * 3, 27 * 3);
    dv_to_tensor_normalize(crop, 27, 27, ref);
    int match6 = memcmp(out, ref, sizeof out) == 0;
    tap_ok(rc == DV_OK && match6 && !match7,
           "eval: no resize when the short side matches; centre crop offsets round half to even");
    float *o2 = malloc((size_t)3 * 224 * 224 * 4);
    uint8_t *big = make_image_(300, 451, 3, 3);
    rc = dv_eval_transform(big, 300, 451, 3, 256, 224, o2, s);
    tap_ok(rc == DV_OK && all_finite_in_(o2, (size_t)3 * 224 * 224, -2.2f, 2.7f),
           "eval 300x451 -> Resize(256) -> CenterCrop(224): (3,224,224)");
    tap_ok(dv_eval_transform(big, 300, 451, 3, 200, 224, o2, s) == DV_ERR_ARG,
           "eval: resize smaller than crop is DV_ERR_ARG");

    /* decode-scale hook */
    dv_crop_box b = {10, 20, 448, 500};
    int n448 = dv_decode_scale_num(&b, 224, 224, 8);
    dv_crop_box b2 = {0, 0, 224, 300};
    int n224 = dv_decode_scale_num(&b2, 224, 224, 8);
    dv_crop_box b3 = {0, 0, 100, 100};
    int nup = dv_decode_scale_num(&b3, 224, 224, 8);
    tap_ok(n448 == 4 && n224 == 8 && nup == 8, "decode scale: 448-box -> 4/8, 224-box -> 8/8, "
           "upscaled box -> 8/8 (%d %d %d)", n448, n224, nup);
    dv_augment_params p;
    dv_augment_params_default(&p);
    int cover = 1, smaller = 0;
    for (int i = 0; i < 300; i++) {
        dv_crop_record r[10];
        for (int k = 0; k < 10; k++) dv_augment_draw(&p, k, 1200, 1600, 5, 0, (uint64_t)i, &r[k]);
        int num = dv_augment_decode_scale(r, 10, 8);
        int sh = (1200 * num + 7) / 8, sw = (1600 * num + 7) / 8; /* libjpeg: ceil */
        smaller += num < 8;
        for (int k = 0; k < 10; k++) {
            dv_crop_box sb;
            dv_crop_box_rescale(&r[k].box, 1200, 1600, sh, sw, &sb);
            cover &= sb.top >= 0 && sb.left >= 0 && sb.top + sb.height <= sh &&
                     sb.left + sb.width <= sw && sb.height >= r[k].out_size &&
                     sb.width >= r[k].out_size;
        }
    }
    tap_ok(cover && smaller > 0,
           "1200x1600 images: rescaled boxes stay inside and >= output size (%d/300 decode smaller)",
           smaller);
    free(o2);
    free(big);
    free(img);
    dv_augment_scratch_free(s);
}

int main(void) {
    tap_no_plan();
    test_pil_ops_();
    test_blur_();
    test_normalize_();
    test_resample_();
    test_rrc_();
    test_pipeline_();
    test_probabilities_();
    test_eval_and_decode_();
    return tap_exit();
}
