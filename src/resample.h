/* resample — Pillow's Image.resize(..., Image.BICUBIC) on uint8 HWC images, bit-exact.
 *
 * What: the separable, antialiased convolution resampler of Pillow (libImaging/Resample.c):
 *  - filter: Keys cubic with a = -0.5, support 2; when downscaling by s = in/out > 1 the kernel
 *    is stretched by s (support 2s, argument scaled by 1/s), i.e. antialiased;
 *  - per output pixel x: centre = (x + 0.5)·s; taps from (int)(centre - support + 0.5) to
 *    (int)(centre + support + 0.5) clamped to the image (the kernel is truncated at the border
 *    and renormalised: no padding); double weights normalised to sum 1, then rounded to
 *    fixed point with 22 fractional bits ((int)(w·2^22 ± 0.5));
 *  - horizontal pass first into a uint8 intermediate (rows the vertical pass needs only),
 *    then the vertical pass; each pass accumulates in int32 from 2^21 (round half up),
 *    shifts by 22 and clips to [0, 255]; a pass whose size does not change is skipped
 *    (Pillow then copies), so an unchanged image is returned exactly.
 * torchvision's Resize / RandomResizedCrop(interpolation=BICUBIC) on a PIL image call exactly
 * this (after an integer crop, which becomes the image the kernel is truncated at).
 *
 * Shapes: images are (H, W, C) uint8, C in 1..4, channels resampled independently; a source
 * may be a sub-rectangle of a larger image (src_stride = bytes per source row), which is
 * PIL's img.crop(box) without a copy. Destinations are packed (row stride = w·C).
 *
 * Window: dv_resample_bicubic_window computes only the rectangle [top, top+h) × [left,
 * left+w) of the full full_h × full_w result (e.g. Resize then CenterCrop) with exactly the
 * values the full resize would have there.
 *
 * Workspace: coefficient tables and the intermediate image live in a dv_resample_ws that
 * grows on demand and is reused, so steady-state calls do not allocate. One per thread.
 *
 *   dv_resample_ws ws = {0};
 *   DV_TRY(dv_resample_bicubic(img + (top * W + left) * 3, box_h, box_w, 3, (size_t)W * 3,
 *                              out, 224, 224, &ws));
 *   dv_resample_ws_free(&ws);
 */
#ifndef DV_RESAMPLE_H
#define DV_RESAMPLE_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    void *buf;  /* one allocation: coefficients, bounds, intermediate rows */
    size_t cap; /* bytes */
} dv_resample_ws;

void dv_resample_ws_free(dv_resample_ws *ws);

/* dst (dst_h, dst_w, c) = Pillow resize of src (src_h, src_w, c) with BICUBIC. */
int dv_resample_bicubic(const uint8_t *src, int src_h, int src_w, int c, size_t src_stride,
                        uint8_t *dst, int dst_h, int dst_w, dv_resample_ws *ws);

/* dst (win_h, win_w, c) = rows [win_top, win_top+win_h) and columns [win_left, win_left+win_w)
 * of the Pillow BICUBIC resize of src to (full_h, full_w). */
int dv_resample_bicubic_window(const uint8_t *src, int src_h, int src_w, int c, size_t src_stride,
                               int full_h, int full_w, int win_top, int win_left, int win_h,
                               int win_w, uint8_t *dst, dv_resample_ws *ws);

/* The normalised double weights Pillow computes for output index `out_index` of a resize
 * from in_size to out_size (before the fixed-point rounding). Writes up to `cap` weights,
 * returns the number of taps (or -1 on bad arguments); *first = first source index. For
 * tests and documentation. */
int dv_resample_bicubic_weights(int in_size, int out_size, int out_index, int *first,
                                double *weights, int cap);

/* torchvision Resize(short_side) output size: the shorter side becomes short_side, the longer
 * one int(short_side * long / short) (truncated). */
void dv_resize_short_size(int height, int width, int short_side, int *out_height, int *out_width);
/* torchvision CenterCrop offsets: top = round((height - crop_h) / 2), round half to even. */
void dv_center_crop_offsets(int height, int width, int crop_h, int crop_w, int *top, int *left);

#endif
