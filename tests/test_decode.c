/* decode + resize: JPEG and PNG made here in memory (TurboJPEG, libpng simplified API), decoded
 * and compared (PNG exact, JPEG within a small error at quality 95); grayscale, alpha, 16-bit
 * and CMYK conversions; the DCT scaling choice; corrupt, truncated, empty and non-image data;
 * the bicubic resize against Pillow's output (numbers below generated with Pillow 13's
 * Image.resize(..., BICUBIC) on the same pattern). */
#include <png.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>
#include <zlib.h>

#include "decode.h"
#include "err.h"
#include "resample.h"
#include "tap.h"

static const uint8_t gold_down_4x3[36] = {
    118, 136, 136, 130, 127, 151, 125, 127, 138, 129, 141, 132, 120, 165, 104, 125, 123, 105,
    121, 165, 117, 130, 131, 100, 127, 150, 112, 142, 127, 95,  127, 146, 122, 147, 122, 90,
};
static const uint8_t gold_up_11x7[231] = {
    0,   43,  96,  0,   50,  102, 13,  66,  118, 32,  85,  139, 48,  100, 166, 65,  118, 191,
    81,  144, 209, 98,  170, 225, 124, 192, 243, 151, 207, 255, 162, 214, 255, 23,  73,  137,
    28,  82,  145, 46,  106, 168, 68,  131, 178, 91,  155, 153, 114, 167, 132, 137, 146, 145,
    153, 121, 169, 141, 132, 191, 116, 156, 211, 105, 166, 217, 80,  132, 194, 89,  143, 207,
    110, 169, 242, 136, 197, 235, 161, 235, 131, 186, 239, 40,  222, 148, 45,  238, 44,  82,
    164, 38,  109, 57,  75,  131, 12,  88,  141, 147, 214, 110, 160, 193, 123, 193, 144, 154,
    203, 115, 166, 155, 145, 126, 116, 169, 94,  143, 132, 113, 175, 87,  148, 130, 87,  160,
    58,  104, 162, 28,  111, 163, 171, 248, 25,  187, 205, 38,  230, 103, 66,  228, 34,  96,
    130, 56,  122, 45,  98,  147, 57,  132, 177, 98,  160, 202, 102, 157, 202, 95,  139, 190,
    92,  131, 186, 64,  125, 82,  79,  120, 99,  115, 106, 140, 139, 107, 153, 129, 138, 103,
    117, 170, 55,  119, 193, 60,  128, 198, 67,  150, 146, 84,  175, 73,  104, 186, 43,  113,
    0,   48,  123, 12,  68,  142, 43,  110, 190, 83,  156, 192, 130, 193, 92,  166, 219, 0,
    163, 229, 0,   152, 216, 0,   181, 135, 11,  221, 32,  50,  238, 0,   68,
};
static const uint8_t gold_honly_7x9[189] = {
    17,  70,  123, 83,  136, 198, 161, 214, 182, 163, 78,  61,  27,  80,  146, 105, 158, 180, 171,
    224, 27,  114, 178, 213, 201, 156, 80,  79,  77,  137, 99,  158, 217, 138, 198, 196, 195, 119,
    74,  62,  97,  161, 203, 137, 60,  90,  103, 165, 104, 161, 222, 190, 110, 93,  192, 109, 77,
    80,  126, 188, 121, 174, 227, 53,  107, 153, 148, 203, 29,  213, 45,  50,  65,  53,  118, 74,
    139, 145, 168, 189, 15,  217, 21,  67,  155, 208, 125, 127, 180, 63,  37,  90,  155, 107, 160,
    224, 177, 230, 92,  87,  140, 88,  59,  112, 176, 118, 171, 94,  46,  99,  164, 146, 199, 39,
    196, 249, 29,  88,  141, 122, 67,  120, 151, 166, 219, 22,  84,  137, 184, 172, 227, 54,  226,
    59,  64,  67,  55,  120, 106, 171, 176, 188, 210, 36,  232, 35,  81,  143, 207, 123, 210, 166,
    49,  65,  63,  128, 85,  144, 208, 165, 225, 87,  199, 122, 71,  46,  81,  146, 113, 36,  89,
    58,  121, 176, 161, 222, 54,  241, 86,  74,  79,  47,  113, 86,  158, 170, 180, 103, 37,
};

static uint8_t *pattern(int h, int w, int c) {
    uint8_t *p = malloc((size_t)h * w * c);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int k = 0; k < c; k++)
                p[((size_t)y * w + x) * c + k] =
                    (uint8_t)((x * 37 + y * 91 + k * 53 + ((x * y) % 7) * 11) % 256);
    return p;
}

/* smooth content for JPEG (compresses with small error) */
static uint8_t *smooth(int h, int w, int c) {
    uint8_t *p = malloc((size_t)h * w * c);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int k = 0; k < c; k++)
                p[((size_t)y * w + x) * c + k] =
                    (uint8_t)(40 + (x * 150) / w + (y * 50) / h + k * 20);
    return p;
}

static unsigned char *jpeg_encode(const uint8_t *px, int h, int w, int pf, int samp,
                                  unsigned long *n) {
    tjhandle t = tjInitCompress();
    unsigned char *buf = NULL;
    *n = 0;
    if (tjCompress2(t, px, w, 0, h, pf, &buf, n, samp, 95, TJFLAG_ACCURATEDCT) != 0) {
        tap_diag("tjCompress2: %s", tjGetErrorStr2(t));
        buf = NULL;
    }
    tjDestroy(t);
    return buf;
}

static unsigned char *png_encode(const uint8_t *px, int h, int w, unsigned fmt, size_t *n) {
    png_image im;
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    im.width = (png_uint_32)w;
    im.height = (png_uint_32)h;
    im.format = fmt;
    png_alloc_size_t sz = 0;
    png_image_write_get_memory_size(im, sz, 0, px, 0, NULL);
    unsigned char *buf = malloc(sz);
    if (!png_image_write_to_memory(&im, buf, &sz, 0, px, 0, NULL)) {
        tap_diag("png write: %s", im.message);
        free(buf);
        return NULL;
    }
    *n = sz;
    return buf;
}

static void chunk(unsigned char **p, const char *type, const unsigned char *data, uint32_t len) {
    unsigned char *q = *p;
    q[0] = (unsigned char)(len >> 24);
    q[1] = (unsigned char)(len >> 16);
    q[2] = (unsigned char)(len >> 8);
    q[3] = (unsigned char)len;
    memcpy(q + 4, type, 4);
    if (len) memcpy(q + 8, data, len);
    uLong crc = crc32(0, q + 4, 4 + len);
    q[8 + len] = (unsigned char)(crc >> 24);
    q[9 + len] = (unsigned char)(crc >> 16);
    q[10 + len] = (unsigned char)(crc >> 8);
    q[11 + len] = (unsigned char)crc;
    *p = q + 12 + len;
}

/* A 16-bit RGB PNG without gAMA/sRGB chunks, built by hand: samples v[y][x][c]. */
static unsigned char *png16(const uint16_t *v, int h, int w, size_t *n) {
    size_t rowb = 1 + (size_t)w * 6, rawn = rowb * h;
    unsigned char *raw = malloc(rawn);
    for (int y = 0; y < h; y++) {
        raw[y * rowb] = 0; /* filter none */
        for (int i = 0; i < w * 3; i++) {
            raw[y * rowb + 1 + 2 * i] = (unsigned char)(v[y * w * 3 + i] >> 8);
            raw[y * rowb + 2 + 2 * i] = (unsigned char)(v[y * w * 3 + i] & 255);
        }
    }
    uLongf zn = compressBound(rawn);
    unsigned char *z = malloc(zn);
    compress(z, &zn, raw, rawn);
    unsigned char *buf = malloc(8 + 25 + 12 + zn + 12), *p = buf;
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a};
    memcpy(p, sig, 8);
    p += 8;
    unsigned char ihdr[13] = {0, 0, 0, (unsigned char)w, 0, 0, 0, (unsigned char)h, 16, 2, 0, 0, 0};
    chunk(&p, "IHDR", ihdr, 13);
    chunk(&p, "IDAT", z, (uint32_t)zn);
    chunk(&p, "IEND", NULL, 0);
    *n = (size_t)(p - buf);
    free(raw);
    free(z);
    return buf;
}

static double mean_abs(const uint8_t *a, const uint8_t *b, size_t n, int *maxd) {
    double s = 0;
    *maxd = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)a[i] - (int)b[i]);
        s += d;
        if (d > *maxd) *maxd = d;
    }
    return n ? s / n : 0;
}

static void test_png(dv_decoder *dec) {
    char msg[DV_DECODE_MSG];
    dv_image img = {0};
    const int h = 9, w = 13;
    uint8_t *rgb = pattern(h, w, 3);
    size_t n;
    unsigned char *png = png_encode(rgb, h, w, PNG_FORMAT_RGB, &n);
    tap_ok(dv_image_format(png, n) == DV_IMGFMT_PNG, "PNG detected by magic bytes");
    int s = dv_decode(dec, png, n, "rgb.png", NULL, &img, msg, sizeof msg);
    tap_ok(s == DV_OK && img.height == h && img.width == w && img.channels == 3 &&
               memcmp(img.pixels, rgb, (size_t)h * w * 3) == 0,
           "PNG RGB decodes exactly (%dx%dx%d)", img.height, img.width, img.channels);
    int hh, ww, cc;
    s = dv_decode_header(dec, png, n, "rgb.png", &hh, &ww, &cc, msg, sizeof msg);
    tap_ok(s == DV_OK && hh == h && ww == w && cc == 3, "PNG header: %dx%d, %d channels", hh, ww,
           cc);
    /* luma: PIL's L = (19595 R + 38470 G + 7471 B + 2^15) >> 16 */
    dv_decode_opts o1 = {.channels = 1};
    s = dv_decode(dec, png, n, "rgb.png", &o1, &img, msg, sizeof msg);
    int ok = s == DV_OK && img.channels == 1;
    for (int i = 0; ok && i < h * w; i++) {
        const uint8_t *p = rgb + 3 * i;
        ok = img.pixels[i] ==
             (uint8_t)((19595u * p[0] + 38470u * p[1] + 7471u * p[2] + 0x8000u) >> 16);
    }
    tap_ok(ok, "PNG RGB with channels=1 gives PIL's luma");
    free(png);

    /* gray -> replicated RGB; gray with channels=1 -> as stored */
    uint8_t *g = pattern(h, w, 1);
    png = png_encode(g, h, w, PNG_FORMAT_GRAY, &n);
    s = dv_decode(dec, png, n, "gray.png", NULL, &img, msg, sizeof msg);
    ok = s == DV_OK && img.channels == 3;
    for (int i = 0; ok && i < h * w; i++)
        ok = img.pixels[3 * i] == g[i] && img.pixels[3 * i + 1] == g[i] &&
             img.pixels[3 * i + 2] == g[i];
    tap_ok(ok, "PNG gray expands to R=G=B");
    s = dv_decode(dec, png, n, "gray.png", &o1, &img, msg, sizeof msg);
    tap_ok(s == DV_OK && img.channels == 1 && memcmp(img.pixels, g, (size_t)h * w) == 0,
           "PNG gray with channels=1 is exact");
    free(png);
    free(g);

    /* RGBA: alpha dropped, colour samples as stored (no compositing) */
    uint8_t *rgba = pattern(h, w, 4);
    for (int i = 0; i < h * w; i++)
        rgba[4 * i + 3] = (uint8_t)(i * 17);
    png = png_encode(rgba, h, w, PNG_FORMAT_RGBA, &n);
    s = dv_decode(dec, png, n, "rgba.png", NULL, &img, msg, sizeof msg);
    ok = s == DV_OK && img.channels == 3;
    for (int i = 0; ok && i < h * w; i++)
        ok = memcmp(img.pixels + 3 * i, rgba + 4 * i, 3) == 0;
    tap_ok(ok, "PNG RGBA: alpha dropped, RGB kept exactly");
    /* a corrupt PNG: damage the IDAT data (its CRC no longer matches) */
    size_t cut = n / 2;
    png[cut] ^= 0x5a;
    s = dv_decode(dec, png, n, "bad.png", NULL, &img, msg, sizeof msg);
    tap_ok(s == DV_ERR_FORMAT && strstr(msg, "bad.png: corrupt PNG"), "corrupt PNG: %s", msg);
    png[cut] ^= 0x5a;
    s = dv_decode(dec, png, n / 2, "half.png", NULL, &img, msg, sizeof msg);
    tap_ok(s == DV_ERR_FORMAT && strstr(msg, "half.png: corrupt PNG"), "truncated PNG: %s", msg);
    free(png);
    free(rgba);

    /* 16-bit RGB without gAMA: taken as sRGB, within 1 of the high byte */
    uint16_t v16[2 * 3 * 3];
    for (int i = 0; i < 18; i++)
        v16[i] = (uint16_t)(i * 3641 + 77);
    png = png16(v16, 2, 3, &n);
    s = dv_decode(dec, png, n, "deep.png", NULL, &img, msg, sizeof msg);
    ok = s == DV_OK && img.height == 2 && img.width == 3 && img.channels == 3;
    int worst = 0;
    for (int i = 0; ok && i < 18; i++) {
        int d = abs((int)img.pixels[i] - (int)(v16[i] >> 8));
        if (d > worst) worst = d;
    }
    tap_ok(ok && worst <= 1,
           "16-bit PNG reduces to 8 bits within 1 of the high byte (worst %d; %s)", worst, msg);
    free(png);

    /* the PNG encoder round trip */
    dv_image src = {.height = h, .width = w, .channels = 3, .pixels = rgb};
    unsigned char *enc = NULL;
    size_t en = 0;
    s = dv_encode_png(&src, &enc, &en);
    int s2 = s == DV_OK ? dv_decode(dec, enc, en, "enc.png", NULL, &img, msg, sizeof msg) : s;
    tap_ok(s2 == DV_OK && memcmp(img.pixels, rgb, (size_t)h * w * 3) == 0,
           "dv_encode_png is lossless");
    free(enc);
    free(rgb);
    dv_image_free(&img);
}

static void test_jpeg(dv_decoder *dec) {
    char msg[DV_DECODE_MSG];
    dv_image img = {0};
    const int h = 96, w = 128;
    uint8_t *rgb = smooth(h, w, 3);
    unsigned long n;
    unsigned char *jpg = jpeg_encode(rgb, h, w, TJPF_RGB, TJSAMP_444, &n);
    tap_ok(jpg && dv_image_format(jpg, n) == DV_IMGFMT_JPEG, "JPEG detected by magic bytes");
    int s = dv_decode(dec, jpg, n, "a.jpg", NULL, &img, msg, sizeof msg);
    int maxd = 0;
    double mae = s == DV_OK ? mean_abs(img.pixels, rgb, (size_t)h * w * 3, &maxd) : 99;
    tap_ok(s == DV_OK && img.height == h && img.width == w && img.channels == 3 && mae < 1.5 &&
               maxd <= 24 && msg[0] == 0,
           "JPEG q95 decodes close to the source (mean |d| %.3f, max %d)", mae, maxd);

    /* DCT scaling choice */
    int num, den, oh, ow;
    dv_jpeg_scale_pick(3000, 4000, 256, &num, &den, &oh, &ow);
    tap_ok(num == 1 && den == 8 && oh == 375 && ow == 500,
           "4000x3000, min 256 -> 1/8 (%d/%d, %dx%d)", num, den, ow, oh);
    dv_jpeg_scale_pick(480, 640, 256, &num, &den, &oh, &ow);
    tap_ok(num * 8 == den * 5 && oh == 300 && ow == 400, "640x480, min 256 -> 5/8 (%d/%d, %dx%d)",
           num, den, ow, oh);
    dv_jpeg_scale_pick(512, 512, 256, &num, &den, &oh, &ow);
    tap_ok(num * 2 == den && oh == 256 && ow == 256, "512x512, min 256 -> 1/2 (%d/%d)", num, den);
    dv_jpeg_scale_pick(100, 200, 256, &num, &den, &oh, &ow);
    tap_ok(num == den && oh == 100 && ow == 200, "smaller than the target -> 1/1 (%d/%d)", num,
           den);
    dv_decode_opts os = {.channels = 3, .min_size = 40};
    s = dv_decode(dec, jpg, n, "a.jpg", &os, &img, msg, sizeof msg);
    /* 128x96: 3/8 gives 48x36 (< 40), 1/2 gives 64x48 */
    int ok = s == DV_OK && img.height == 48 && img.width == 64;
    double err = 0;
    for (int y = 0; ok && y < 48; y++)
        for (int x = 0; x < 64; x++)
            for (int c = 0; c < 3; c++) {
                /* compare with the mean of the 2x2 source block */
                const uint8_t *s0 = rgb + ((size_t)(2 * y) * w + 2 * x) * 3 + c;
                double ref = (s0[0] + s0[3] + s0[w * 3] + s0[w * 3 + 3]) / 4.0;
                err += fabs(img.pixels[((size_t)y * 64 + x) * 3 + c] - ref);
            }
    err /= 48 * 64 * 3;
    tap_ok(ok && err < 2.0,
           "DCT-scaled decode: 128x96 with min 40 -> %dx%d, mean |d| %.3f vs 2x2 means", img.width,
           img.height, err);

    /* grayscale JPEG -> R = G = B */
    uint8_t *g = smooth(h, w, 1);
    unsigned long gn;
    unsigned char *gj = jpeg_encode(g, h, w, TJPF_GRAY, TJSAMP_GRAY, &gn);
    s = dv_decode(dec, gj, gn, "g.jpg", NULL, &img, msg, sizeof msg);
    ok = s == DV_OK && img.channels == 3;
    for (int i = 0; ok && i < h * w; i++)
        ok = img.pixels[3 * i] == img.pixels[3 * i + 1] &&
             img.pixels[3 * i] == img.pixels[3 * i + 2] &&
             abs((int)img.pixels[3 * i] - (int)g[i]) <= 8;
    tap_ok(ok, "grayscale JPEG expands to R=G=B close to the source");
    int hh, ww, cc;
    s = dv_decode_header(dec, gj, gn, "g.jpg", &hh, &ww, &cc, msg, sizeof msg);
    tap_ok(s == DV_OK && hh == h && ww == w && cc == 1, "JPEG header: %dx%d, %d channel", ww, hh,
           cc);
    dv_decode_opts o1 = {.channels = 1};
    s = dv_decode(dec, jpg, n, "a.jpg", &o1, &img, msg, sizeof msg);
    ok = s == DV_OK && img.channels == 1;
    int worst = 0;
    for (int i = 0; ok && i < h * w; i++) {
        const uint8_t *p = rgb + 3 * i;
        int l = (int)((19595u * p[0] + 38470u * p[1] + 7471u * p[2] + 0x8000u) >> 16);
        int d = abs(l - img.pixels[i]);
        if (d > worst) worst = d;
    }
    tap_ok(ok && worst <= 8, "colour JPEG with channels=1 gives luma (max |d| %d)", worst);
    free(gj);
    free(g);

    /* CMYK JPEG (YCCK): R = C K / 255 */
    uint8_t *cmyk = smooth(h, w, 4);
    unsigned long cn;
    unsigned char *cj = jpeg_encode(cmyk, h, w, TJPF_CMYK, TJSAMP_444, &cn);
    s = dv_decode(dec, cj, cn, "cmyk.jpg", NULL, &img, msg, sizeof msg);
    ok = s == DV_OK && img.channels == 3;
    worst = 0;
    for (int i = 0; ok && i < h * w; i++)
        for (int c = 0; c < 3; c++) {
            int want = (cmyk[4 * i + c] * cmyk[4 * i + 3] + 127) / 255;
            int d = abs(want - img.pixels[3 * i + c]);
            if (d > worst) worst = d;
        }
    tap_ok(ok && worst <= 10, "CMYK JPEG converts to RGB = C*K/255 (max |d| %d; %s)", worst, msg);
    free(cj);
    free(cmyk);

    /* corrupt: garbage after the SOI marker */
    unsigned char bad[600];
    bad[0] = 0xff, bad[1] = 0xd8, bad[2] = 0xff;
    for (int i = 3; i < 600; i++)
        bad[i] = (unsigned char)(i * 7 + 3);
    s = dv_decode(dec, bad, sizeof bad, "cat/bad.jpg", NULL, &img, msg, sizeof msg);
    tap_ok(s == DV_ERR_FORMAT && strstr(msg, "cat/bad.jpg: corrupt JPEG ("),
           "garbage after SOI: %s", msg);
    /* truncated: the first half of a valid file */
    s = dv_decode(dec, jpg, n / 2, "cat/half.jpg", NULL, &img, msg, sizeof msg);
    tap_ok(s == DV_ERR_FORMAT && strstr(msg, "cat/half.jpg: truncated JPEG"),
           "first half of a JPEG: %s", msg);
    dv_decode_opts st = {.channels = 3, .strict = 1};
    s = dv_decode(dec, jpg, n / 2, "cat/half.jpg", &st, &img, msg, sizeof msg);
    tap_ok(s == DV_ERR_FORMAT, "truncated JPEG is an error in strict mode too");
    s = dv_decode(dec, jpg, 3, "cat/three.jpg", NULL, &img, msg, sizeof msg);
    tap_ok(s == DV_ERR_FORMAT && strstr(msg, "corrupt JPEG"), "3-byte JPEG: %s", msg);
    /* a tolerated warning: junk bytes before the EOI marker */
    unsigned char *junk = malloc(n + 3);
    memcpy(junk, jpg, n - 2);
    junk[n - 2] = 0x11, junk[n - 1] = 0x22, junk[n] = 0x33;
    junk[n + 1] = 0xff, junk[n + 2] = 0xd9;
    s = dv_decode(dec, junk, n + 3, "junk.jpg", NULL, &img, msg, sizeof msg);
    mae = s == DV_OK ? mean_abs(img.pixels, rgb, (size_t)h * w * 3, &maxd) : 99;
    tap_ok(s == DV_OK && strstr(msg, "junk.jpg: JPEG data warning (") && mae < 1.5,
           "extraneous bytes: decoded, warning returned (%s)", msg);
    s = dv_decode(dec, junk, n + 3, "junk.jpg", &st, &img, msg, sizeof msg);
    tap_ok(s == DV_ERR_FORMAT && strstr(msg, "junk.jpg: corrupt JPEG (Corrupt JPEG data"),
           "extraneous bytes with strict: %s", msg);
    s = dv_decode(dec, jpg, n, "a.jpg", NULL, &img, msg, sizeof msg);
    tap_ok(s == DV_OK && msg[0] == 0, "the decoder is clean again after warnings");
    free(junk);
    free(jpg);
    free(rgb);
    dv_image_free(&img);
}

static void test_other(dv_decoder *dec) {
    char msg[DV_DECODE_MSG];
    dv_image img = {0};
    int s = dv_decode(dec, "", 0, "empty.jpg", NULL, &img, msg, sizeof msg);
    tap_ok(s == DV_ERR_FORMAT && strcmp(msg, "empty.jpg: empty file") == 0, "zero-size data: %s",
           msg);
    const char *text = "hello, this is not an image\n";
    s = dv_decode(dec, text, strlen(text), "notes.txt", NULL, &img, msg, sizeof msg);
    tap_ok(s == DV_ERR_FORMAT && strcmp(msg, "notes.txt: not a JPEG or PNG image") == 0,
           "text file: %s", msg);
    int hh, ww;
    s = dv_decode_header(dec, text, strlen(text), "notes.txt", &hh, &ww, NULL, msg, sizeof msg);
    tap_ok(s == DV_ERR_FORMAT, "header of a text file: DV_ERR_FORMAT");
    dv_image_free(&img);
}

static int cmp_gold(const uint8_t *got, const uint8_t *want, size_t n, const char *what) {
    int maxd = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)got[i] - (int)want[i]);
        if (d > maxd) maxd = d;
    }
    return tap_ok(maxd == 0, "resize %s equals Pillow's bicubic (max |d| %d)", what, maxd);
}

/* Pillow's bicubic through src/resample.h, on vectors computed with Pillow. */
static int resize_(const uint8_t *src, int h, int w, int c, uint8_t *dst, int oh, int ow) {
    dv_resample_ws ws = {0};
    int rc = dv_resample_bicubic(src, h, w, c, (size_t)w * c, dst, oh, ow, &ws);
    dv_resample_ws_free(&ws);
    return rc;
}

static void test_resize(void) {
    uint8_t *a = pattern(9, 13, 3), *b = pattern(4, 5, 3);
    uint8_t out[13 * 11 * 3];
    int s = resize_(a, 9, 13, 3, out, 3, 4);
    if (s == DV_OK)
        cmp_gold(out, gold_down_4x3, sizeof gold_down_4x3, "13x9 -> 4x3 (antialiased)");
    else
        tap_ok(0, "resize down");
    s = resize_(b, 4, 5, 3, out, 7, 11);
    if (s == DV_OK)
        cmp_gold(out, gold_up_11x7, sizeof gold_up_11x7, "5x4 -> 11x7 (upscale)");
    else
        tap_ok(0, "resize up");
    s = resize_(a, 9, 13, 3, out, 9, 7);
    if (s == DV_OK)
        cmp_gold(out, gold_honly_7x9, sizeof gold_honly_7x9, "13x9 -> 7x9 (one pass)");
    else
        tap_ok(0, "resize horizontal only");
    s = resize_(a, 9, 13, 3, out, 9, 13);
    tap_ok(s == DV_OK && memcmp(out, a, 9 * 13 * 3) == 0, "same size is a copy");
    uint8_t flat[40 * 30];
    memset(flat, 77, sizeof flat);
    uint8_t fo[7 * 9];
    s = resize_(flat, 30, 40, 1, fo, 7, 9);
    int ok = s == DV_OK;
    for (int i = 0; ok && i < 63; i++)
        ok = fo[i] == 77;
    tap_ok(ok, "a constant image stays constant");
    int oh, ow;
    dv_resize_short_size(375, 500, 256, &oh, &ow);
    tap_ok(oh == 256 && ow == 341, "Resize(256) of 500x375 -> %dx%d (torchvision: 341x256)", ow,
           oh);
    dv_resize_short_size(500, 333, 224, &oh, &ow);
    tap_ok(oh == 336 && ow == 224, "Resize(224) of 333x500 -> %dx%d (torchvision: 224x336)", ow,
           oh);
    int top, left;
    dv_center_crop_offsets(256, 341, 224, 224, &top, &left);
    tap_ok(top == 16 && left == 58, "CenterCrop(224) of 341x256: left %d top %d (58, 16)", left,
           top);
    dv_center_crop_offsets(5, 6, 4, 3, &top, &left);
    tap_ok(top == 0 && left == 2, "CenterCrop rounds half to even: top %d left %d (0, 2)", top,
           left);
    free(a);
    free(b);
}

int main(void) {
    tap_no_plan();
    dv_decoder *dec = NULL;
    if (!tap_ok(dv_decoder_create(&dec) == DV_OK, "decoder created")) return tap_exit();
    tap_ok(dv_image_format("GIF89a", 6) == DV_IMGFMT_UNKNOWN, "GIF is not JPEG/PNG");
    test_png(dec);
    test_jpeg(dec);
    test_other(dec);
    test_resize();
    dv_decoder_destroy(dec);
    return tap_exit();
}
