/* decode — see decode.h. */
#include "decode.h"

#include <png.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>

#include "err.h"

enum { JMSG_TEXT_ = 200 };

struct dv_decoder {
    tjhandle tj;
    unsigned char *scratch; /* CMYK or alpha-carrying pixels before conversion */
    size_t scratch_cap;
};

int dv_decoder_create(dv_decoder **out) {
    dv_decoder *d;
    *out = NULL;
    DV_CHECK_ALLOC(d = calloc(1, sizeof *d));
    d->tj = tjInitDecompress();
    if (!d->tj) {
        free(d);
        return DV_ERR(DV_ERR_NOMEM, "tjInitDecompress failed: %s", tjGetErrorStr2(NULL));
    }
    *out = d;
    return DV_OK;
}

void dv_decoder_destroy(dv_decoder *dec) {
    if (!dec) return;
    if (dec->tj) tjDestroy(dec->tj);
    free(dec->scratch);
    free(dec);
}

dv_imgfmt dv_image_format(const void *data, size_t size) {
    const unsigned char *p = data;
    static const unsigned char png_sig[8] = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a};
    if (size >= 3 && p[0] == 0xff && p[1] == 0xd8 && p[2] == 0xff) return DV_IMGFMT_JPEG;
    if (size >= 8 && memcmp(p, png_sig, 8) == 0) return DV_IMGFMT_PNG;
    return DV_IMGFMT_UNKNOWN;
}

const char *dv_imgfmt_name(dv_imgfmt fmt) {
    switch (fmt) {
    case DV_IMGFMT_JPEG: return "JPEG";
    case DV_IMGFMT_PNG: return "PNG";
    default: return "unknown";
    }
}

/* Put "<name>: <text>" into msg, or print it as an error line when msg is NULL. */
static int fail_(int status, char *msg, size_t msglen, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int fail_(int status, char *msg, size_t msglen, const char *name, const char *fmt, ...) {
    char text[DV_DECODE_MSG];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    if (msg && msglen)
        snprintf(msg, msglen, "%s: %s", name ? name : "image", text);
    else
        dv_user_error("%s: %s", name ? name : "image", text);
    return status;
}

int dv_image_reserve(dv_image *img, int height, int width, int channels) {
    if (height < 0 || width < 0 || channels < 1 || channels > 4)
        return DV_ERR(DV_ERR_ARG, "bad image shape %dx%dx%d", height, width, channels);
    size_t need = (size_t)height * (size_t)width * (size_t)channels;
    if (need > img->capacity || !img->pixels) {
        size_t cap = need ? need : 1;
        unsigned char *p = realloc(img->pixels, cap);
        DV_CHECK_ALLOC(p);
        img->pixels = p;
        img->capacity = cap;
    }
    img->height = height;
    img->width = width;
    img->channels = channels;
    return DV_OK;
}

void dv_image_free(dv_image *img) {
    if (!img) return;
    free(img->pixels);
    memset(img, 0, sizeof *img);
}

static int scratch_(dv_decoder *d, size_t n) {
    if (n <= d->scratch_cap && d->scratch) return DV_OK;
    unsigned char *p = realloc(d->scratch, n ? n : 1);
    DV_CHECK_ALLOC(p);
    d->scratch = p;
    d->scratch_cap = n ? n : 1;
    return DV_OK;
}

/* PIL's "L": L = (19595 R + 38470 G + 7471 B + 2^15) >> 16 (ITU-R 601-2 luma). */
static unsigned char luma_(const unsigned char *p) {
    return (unsigned char)((19595u * p[0] + 38470u * p[1] + 7471u * p[2] + 0x8000u) >> 16);
}

/* ---- JPEG -------------------------------------------------------------------------------- */

int dv_jpeg_scale_pick(int height, int width, int min_size, int *num, int *den, int *out_height,
                       int *out_width) {
    int n = 0;
    tjscalingfactor *sf = tjGetScalingFactors(&n);
    int bn = 1, bd = 1;
    if (sf && min_size > 0) {
        for (int i = 0; i < n; i++) {
            if (sf[i].num > sf[i].denom) continue; /* no upscaling */
            /* smaller factor than the best so far: num/denom < bn/bd */
            if ((long)sf[i].num * bd >= (long)bn * sf[i].denom) continue;
            if (TJSCALED(width, sf[i]) >= min_size && TJSCALED(height, sf[i]) >= min_size) {
                bn = sf[i].num;
                bd = sf[i].denom;
            }
        }
    }
    tjscalingfactor best = {bn, bd};
    if (num) *num = bn;
    if (den) *den = bd;
    if (out_height) *out_height = TJSCALED(height, best);
    if (out_width) *out_width = TJSCALED(width, best);
    return DV_OK;
}

/* libjpeg reports only the first warning of a decompressor's life (its warning counter is
 * never reset), so after any failure the TurboJPEG handle is replaced: the next image's first
 * warning is then the one reported. Failures are rare; a handle costs microseconds. */
static int tj_failed_(dv_decoder *d, char *text, size_t n, int *fatal) {
    snprintf(text, n, "%s", tjGetErrorStr2(d->tj));
    if (fatal) *fatal = tjGetErrorCode(d->tj) == TJERR_FATAL;
    tjDestroy(d->tj);
    d->tj = tjInitDecompress();
    if (!d->tj) return DV_ERR(DV_ERR_NOMEM, "tjInitDecompress failed: %s", tjGetErrorStr2(NULL));
    return DV_OK;
}

/* The EOI marker FF D9 cannot occur inside entropy-coded data (0xFF there is followed by 0x00
 * or a restart marker), so a file whose headers parsed but whose decoding failed, and that has
 * no EOI anywhere, was cut short. */
static int jpeg_has_eoi_(const unsigned char *data, size_t size) {
    for (size_t i = size; i >= 2; i--)
        if (data[i - 2] == 0xff && data[i - 1] == 0xd9) return 1;
    return 0;
}

static int jpeg_fail_(const unsigned char *data, size_t size, const char *name, const char *text,
                      char *msg, size_t msglen) {
    if (!jpeg_has_eoi_(data, size))
        return fail_(DV_ERR_FORMAT, msg, msglen, name,
                     "truncated JPEG (no end-of-image marker; %s)", text);
    return fail_(DV_ERR_FORMAT, msg, msglen, name, "corrupt JPEG (%s)", text);
}

static int jpeg_header_(dv_decoder *d, const unsigned char *data, size_t size, const char *name,
                        int *h, int *w, int *subsamp, int *cs, char *msg, size_t msglen) {
    *w = *h = 0;
    if (tjDecompressHeader3(d->tj, data, (unsigned long)size, w, h, subsamp, cs) != 0) {
        char text[JMSG_TEXT_];
        DV_TRY(tj_failed_(d, text, sizeof text, NULL));
        return fail_(DV_ERR_FORMAT, msg, msglen, name, "corrupt JPEG (%s)", text);
    }
    if (*w <= 0 || *h <= 0) { /* e.g. data ending inside the headers ("tables only") */
        char text[JMSG_TEXT_];
        DV_TRY(tj_failed_(d, text, sizeof text, NULL));
        return fail_(DV_ERR_FORMAT, msg, msglen, name, "corrupt JPEG (no image in the data)");
    }
    if ((int64_t)*w * *h > DV_DECODE_MAX_PIXELS)
        return fail_(DV_ERR_FORMAT, msg, msglen, name, "image too large (%dx%d pixels)", *w, *h);
    return DV_OK;
}

/* One tjDecompress2 call; classifies a failure. Returns DV_OK, DV_ERR_FORMAT (message set), or
 * -1 for "a non-fatal warning under STOPONWARNING" (text copied into warn). */
static int jpeg_run_(dv_decoder *d, const unsigned char *data, size_t size, unsigned char *dst,
                     int w, int h, int pf, int flags, const char *name, char *msg, size_t msglen,
                     char *warn, size_t warnlen) {
    if (tjDecompress2(d->tj, data, (unsigned long)size, dst, w, 0, h, pf, flags) == 0) return DV_OK;
    char text[JMSG_TEXT_];
    int fatal = 1;
    DV_TRY(tj_failed_(d, text, sizeof text, &fatal));
    if (fatal) return jpeg_fail_(data, size, name, text, msg, msglen);
    if (strstr(text, "Premature end of JPEG file"))
        return fail_(DV_ERR_FORMAT, msg, msglen, name, "truncated JPEG (%s)", text);
    snprintf(warn, warnlen, "%s", text);
    return -1;
}

static int decode_jpeg_(dv_decoder *d, const unsigned char *data, size_t size, const char *name,
                        const dv_decode_opts *o, dv_image *img, char *msg, size_t msglen) {
    int h, w, subsamp, cs;
    DV_TRY(jpeg_header_(d, data, size, name, &h, &w, &subsamp, &cs, msg, msglen));
    int sh = h, sw = w;
    if (o->min_size > 0) dv_jpeg_scale_pick(h, w, o->min_size, NULL, NULL, &sh, &sw);
    const int want_c = o->channels == 1 ? 1 : 3;
    const int cmyk = cs == TJCS_CMYK || cs == TJCS_YCCK;
    const int pf = cmyk ? TJPF_CMYK : (want_c == 1 ? TJPF_GRAY : TJPF_RGB);
    DV_TRY(dv_image_reserve(img, sh, sw, want_c));
    unsigned char *dst = img->pixels;
    const size_t npix = (size_t)sh * (size_t)sw;
    if (cmyk) {
        DV_TRY(scratch_(d, npix * 4));
        dst = d->scratch;
    }
    const int flags = TJFLAG_ACCURATEDCT | TJFLAG_LIMITSCANS;
    char warn[DV_DECODE_MSG] = "";
    int s = jpeg_run_(d, data, size, dst, sw, sh, pf, flags | TJFLAG_STOPONWARNING, name, msg,
                      msglen, warn, sizeof warn);
    if (s > 0) return s;
    if (s < 0) {
        if (o->strict) return fail_(DV_ERR_FORMAT, msg, msglen, name, "corrupt JPEG (%s)", warn);
        /* tolerated warning: decode again to the end, report the warning to the caller */
        char warn2[DV_DECODE_MSG];
        s = jpeg_run_(d, data, size, dst, sw, sh, pf, flags, name, msg, msglen, warn2,
                      sizeof warn2);
        if (s > 0) return s;
        if (msg && msglen) snprintf(msg, msglen, "%s: JPEG data warning (%s)", name, warn);
    } else if (msg && msglen) {
        msg[0] = 0;
    }
    if (cmyk) {
        const unsigned char *p = d->scratch;
        unsigned char *q = img->pixels;
        for (size_t i = 0; i < npix; i++, p += 4) {
            unsigned char rgb[3];
            for (int c = 0; c < 3; c++)
                rgb[c] = (unsigned char)((p[c] * p[3] + 127) / 255);
            if (want_c == 3) {
                memcpy(q, rgb, 3);
                q += 3;
            } else {
                *q++ = luma_(rgb);
            }
        }
    }
    return DV_OK;
}

/* ---- PNG --------------------------------------------------------------------------------- */

static int png_begin_(png_image *im, const void *data, size_t size, const char *name, char *msg,
                      size_t msglen) {
    memset(im, 0, sizeof *im);
    im->version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_memory(im, data, size)) {
        int s = fail_(DV_ERR_FORMAT, msg, msglen, name, "corrupt PNG (%s)", im->message);
        png_image_free(im);
        return s;
    }
    if (im->width == 0 || im->height == 0 ||
        (int64_t)im->width * (int64_t)im->height > DV_DECODE_MAX_PIXELS) {
        int s = fail_(DV_ERR_FORMAT, msg, msglen, name, "image too large or empty (%ux%u pixels)",
                      (unsigned)im->width, (unsigned)im->height);
        png_image_free(im);
        return s;
    }
    return DV_OK;
}

static int decode_png_(dv_decoder *d, const unsigned char *data, size_t size, const char *name,
                       const dv_decode_opts *o, dv_image *img, char *msg, size_t msglen) {
    png_image im;
    DV_TRY(png_begin_(&im, data, size, name, msg, msglen));
    const int want_c = o->channels == 1 ? 1 : 3;
    const int src_color = (im.format & PNG_FORMAT_FLAG_COLOR) != 0;
    const int src_alpha = (im.format & PNG_FORMAT_FLAG_ALPHA) != 0;
    /* read colour when colour is wanted or the source has it (our luma, not libpng's linear
     * one); keep alpha if present so nothing is composited, then drop it below */
    const int read_color = want_c == 3 || src_color;
    const int read_c = (read_color ? 3 : 1) + (src_alpha ? 1 : 0);
    im.format = (read_color ? PNG_FORMAT_FLAG_COLOR : 0) | (src_alpha ? PNG_FORMAT_FLAG_ALPHA : 0);
    im.flags |= PNG_IMAGE_FLAG_16BIT_sRGB;
    const int h = (int)im.height, w = (int)im.width;
    int s = dv_image_reserve(img, h, w, want_c);
    if (s != DV_OK) {
        png_image_free(&im);
        return s;
    }
    const size_t npix = (size_t)h * (size_t)w;
    const int direct = read_c == want_c;
    unsigned char *dst = img->pixels;
    if (!direct) {
        s = scratch_(d, npix * (size_t)read_c);
        if (s != DV_OK) {
            png_image_free(&im);
            return s;
        }
        dst = d->scratch;
    }
    if (!png_image_finish_read(&im, NULL, dst, 0, NULL)) {
        s = fail_(DV_ERR_FORMAT, msg, msglen, name, "corrupt PNG (%s)", im.message);
        png_image_free(&im);
        return s;
    }
    if (msg && msglen) {
        if (im.warning_or_error & PNG_IMAGE_WARNING)
            snprintf(msg, msglen, "%s: PNG warning (%s)", name, im.message);
        else
            msg[0] = 0;
    }
    png_image_free(&im);
    if (!direct) {
        const unsigned char *p = d->scratch;
        unsigned char *q = img->pixels;
        const int src_c3 = read_color;
        for (size_t i = 0; i < npix; i++, p += read_c) {
            if (want_c == 3) { /* RGBA -> RGB (gray sources were read as colour) */
                q[0] = p[0];
                q[1] = p[1];
                q[2] = p[2];
                q += 3;
            } else {
                *q++ = src_c3 ? luma_(p) : p[0];
            }
        }
    }
    return DV_OK;
}

/* ---- public ------------------------------------------------------------------------------ */

static int check_input_(const void *data, size_t size, const char *name, dv_imgfmt *fmt, char *msg,
                        size_t msglen) {
    if (size == 0) return fail_(DV_ERR_FORMAT, msg, msglen, name, "empty file");
    *fmt = dv_image_format(data, size);
    if (*fmt == DV_IMGFMT_UNKNOWN)
        return fail_(DV_ERR_FORMAT, msg, msglen, name, "not a JPEG or PNG image");
    return DV_OK;
}

int dv_decode_header(dv_decoder *dec, const void *data, size_t size, const char *name, int *height,
                     int *width, int *channels, char *msg, size_t msglen) {
    dv_imgfmt fmt;
    if (msg && msglen) msg[0] = 0;
    DV_TRY(check_input_(data, size, name, &fmt, msg, msglen));
    if (fmt == DV_IMGFMT_JPEG) {
        int subsamp, cs;
        DV_TRY(jpeg_header_(dec, data, size, name, height, width, &subsamp, &cs, msg, msglen));
        if (channels) *channels = cs == TJCS_GRAY ? 1 : 3;
        return DV_OK;
    }
    png_image im;
    DV_TRY(png_begin_(&im, data, size, name, msg, msglen));
    *height = (int)im.height;
    *width = (int)im.width;
    if (channels) *channels = (im.format & PNG_FORMAT_FLAG_COLOR) ? 3 : 1;
    png_image_free(&im);
    return DV_OK;
}

int dv_decode(dv_decoder *dec, const void *data, size_t size, const char *name,
              const dv_decode_opts *opts, dv_image *img, char *msg, size_t msglen) {
    dv_decode_opts o = {.channels = 3};
    if (opts) o = *opts;
    if (o.channels != 1 && o.channels != 3 && o.channels != 0)
        return DV_ERR(DV_ERR_ARG, "decode: channels must be 1 or 3, not %d", o.channels);
    if (msg && msglen) msg[0] = 0;
    dv_imgfmt fmt;
    DV_TRY(check_input_(data, size, name, &fmt, msg, msglen));
    if (fmt == DV_IMGFMT_JPEG) return decode_jpeg_(dec, data, size, name, &o, img, msg, msglen);
    return decode_png_(dec, data, size, name, &o, img, msg, msglen);
}

int dv_encode_png(const dv_image *img, unsigned char **out, size_t *out_size) {
    *out = NULL;
    *out_size = 0;
    if (img->channels != 1 && img->channels != 3)
        return DV_ERR(DV_ERR_ARG, "PNG encode: %d channels (need 1 or 3)", img->channels);
    png_image im;
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    im.width = (png_uint_32)img->width;
    im.height = (png_uint_32)img->height;
    im.format = img->channels == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
    png_alloc_size_t n = 0;
    if (!png_image_write_get_memory_size(im, n, 0, img->pixels, 0, NULL)) {
        int s = DV_ERR(DV_ERR_FORMAT, "PNG encode failed: %s", im.message);
        png_image_free(&im);
        return s;
    }
    unsigned char *buf = malloc(n ? n : 1);
    DV_CHECK_ALLOC(buf);
    if (!png_image_write_to_memory(&im, buf, &n, 0, img->pixels, 0, NULL)) {
        int s = DV_ERR(DV_ERR_FORMAT, "PNG encode failed: %s", im.message);
        png_image_free(&im);
        free(buf);
        return s;
    }
    png_image_free(&im);
    *out = buf;
    *out_size = n;
    return DV_OK;
}
