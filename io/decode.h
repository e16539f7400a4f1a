/* decode — JPEG (libjpeg-turbo, TurboJPEG API) and PNG (libpng simplified API) from memory to
 * uint8 pixels, row-major HWC: pixels[(y * width + x) * channels + c].
 *
 *   dv_decoder *dec;  DV_TRY(dv_decoder_create(&dec));       // one per thread
 *   dv_image img = {0};                                       // pixels reused across calls
 *   dv_decode_opts o = {.channels = 3};
 *   char msg[DV_DECODE_MSG];
 *   int s = dv_decode(dec, bytes, n, "cat/1.jpg", &o, &img, msg, sizeof msg);
 *   if (s == DV_ERR_FORMAT) dv_user_warning("%s; skipped", msg);  // "cat/1.jpg: corrupt JPEG
 * (...)"
 *   ...
 *   dv_image_free(&img); dv_decoder_destroy(dec);
 *
 * Conventions (they follow what PIL's Image.convert("RGB") gives the official DINOv2 code):
 * - The format is detected from magic bytes (JPEG FF D8 FF, PNG 89 'PNG' 0D 0A 1A 0A), never
 *   from the file name. Anything else is DV_ERR_FORMAT "not a JPEG or PNG image".
 * - channels = 3 (default): grayscale is replicated into R = G = B; channels = 1: colour is
 *   reduced to luma (JPEG: the decoder's Y channel; PNG: ITU-R 601 weights as PIL's "L").
 * - Alpha (PNG RGBA, gray+alpha, palette with tRNS) is dropped, not composited: the colour
 *   samples are kept as stored, as PIL's convert("RGB") does.
 * - 16-bit PNG samples are reduced to 8 bits by libpng; a 16-bit file without gAMA/sRGB chunk
 *   is taken as sRGB-encoded (PNG_IMAGE_FLAG_16BIT_sRGB), so the result is within 1 of the high
 *   byte (PIL's choice). Files with a gAMA chunk are converted to sRGB by libpng.
 * - CMYK / YCCK JPEGs (Adobe) are decoded to CMYK and converted with R = C*K/255 (Adobe's
 *   inverted convention, as libjpeg-turbo's own tools do).
 * - JPEG DCT-domain downscaling: with opts.min_size > 0 the decoder picks the smallest
 *   TurboJPEG scaling factor n/8 <= 1 that keeps both sides >= min_size (dv_jpeg_scale_pick),
 *   e.g. a 4000x3000 photo with min_size 256 decodes at 1/8 to 500x375. PNG ignores it.
 * - Errors never crash and never longjmp through our frames: corrupt or truncated data is
 *   DV_ERR_FORMAT with a message "<name>: corrupt JPEG (<decoder's text>)". A JPEG whose data
 *   ends early ("Premature end of JPEG file") is always an error ("truncated JPEG"); other
 *   libjpeg warnings (e.g. extraneous bytes before a marker) are errors with opts.strict and
 *   otherwise give DV_OK with the warning text in msg (msg[0] == 0 when clean).
 * - Messages go into msg (msglen bytes) when msg is not NULL; with msg == NULL errors are
 *   printed as one "error: ..." line.
 * - Images above DV_DECODE_MAX_PIXELS pixels are refused (DV_ERR_FORMAT, "image too large").
 */
#ifndef DV_DECODE_H
#define DV_DECODE_H

#include <stddef.h>
#include <stdint.h>

#define DV_DECODE_MSG 320
#define DV_DECODE_MAX_PIXELS ((int64_t)1 << 28)

typedef enum { DV_IMGFMT_UNKNOWN = 0, DV_IMGFMT_JPEG = 1, DV_IMGFMT_PNG = 2 } dv_imgfmt;

typedef struct {
    int height, width, channels; /* pixels: [height, width, channels] */
    unsigned char *pixels;
    size_t capacity; /* bytes allocated at pixels; reused by later decodes */
} dv_image;

typedef struct {
    int channels; /* 3 (RGB; also when 0) or 1 (luma) */
    int min_size; /* JPEG: allow DCT scaling keeping both sides >= min_size; 0 = full size */
    int strict;   /* 1: a libjpeg warning is an error too */
} dv_decode_opts;

typedef struct dv_decoder dv_decoder;

int dv_decoder_create(dv_decoder **out);
void dv_decoder_destroy(dv_decoder *dec);

dv_imgfmt dv_image_format(const void *data, size_t size);
const char *dv_imgfmt_name(dv_imgfmt fmt); /* "JPEG", "PNG", "unknown" */

/* Size without decoding the pixels (channels: 1 for grayscale sources, else 3). */
int dv_decode_header(dv_decoder *dec, const void *data, size_t size, const char *name, int *height,
                     int *width, int *channels, char *msg, size_t msglen);

/* Decode into img (its buffer grows as needed). opts may be NULL (RGB, full size). */
int dv_decode(dv_decoder *dec, const void *data, size_t size, const char *name,
              const dv_decode_opts *opts, dv_image *img, char *msg, size_t msglen);

/* The TurboJPEG scaling factor num/den (<= 1) that dv_decode uses for an image of
 * height x width and a target min_size (>= 1), and the resulting size. */
int dv_jpeg_scale_pick(int height, int width, int min_size, int *num, int *den, int *out_height,
                       int *out_width);

/* Make room for h x w x c pixels (sets the shape). */
int dv_image_reserve(dv_image *img, int height, int width, int channels);
void dv_image_free(dv_image *img);

/* Lossless PNG of img (8-bit gray or RGB) in a malloc'd buffer. */
int dv_encode_png(const dv_image *img, unsigned char **out, size_t *out_size);

#endif
