/* augment — DINOv2's multi-crop augmentation (DataAugmentationDINO) and the eval transform,
 * in pure C over one decoded image (uint8 HWC, RGB or gray). No file I/O.
 *
 * Per image: 2 global crops (crop 0, 1) of size G and L local crops (crops 2..L+1) of size l.
 * Every crop, in the official order (torchvision on PIL images; doc/augment.md):
 *   RandomResizedCrop(size, scale, ratio 3/4..4/3, bicubic)  -> RandomHorizontalFlip(0.5)
 *   -> RandomApply(ColorJitter(0.4, 0.4, 0.2, 0.1), p 0.8)  (factors and a random order)
 *   -> RandomGrayscale(0.2) -> GaussianBlur(kernel 9, sigma U(0.1, 2)) with probability
 *      official 0 / 0.9 / 0.5 (global 0 / global 1 / local; the inverted flag of the official
 *      code) or intended 1.0 / 0.1 / 0.5 (params.blur_intended = data.blur_probabilities_intended)
 *   -> RandomSolarize(128, p 0.2) on global crop 1 only -> ToTensor + Normalize(ImageNet).
 * The colour operations reproduce Pillow on uint8 exactly (blend + truncation/clip, L =
 * (19595 R + 38470 G + 7471 B + 2^15) >> 16, Pillow's HSV); the resize is Pillow's bicubic
 * (src/resample.h). Output is fp32 CHW, crop-contiguous: global (2, 3, G, G), local (L, 3, l, l).
 *
 * Randomness: crop k draws from its own stream dv_rng(seed, DV_RNG_AUGMENT + k, epoch,
 * sample_id) in torchvision's order (doc/augment.md lists it), so a crop depends only on
 * (seed, epoch, global sample id, k) — never on rank, thread, worker or the order crops are
 * computed in. Draw (parameters only) and render (pixels) are separate, so a loader can draw
 * the boxes first, pick a JPEG DCT scale (dv_augment_decode_scale), decode smaller and render.
 *
 *   dv_augment_params p; dv_augment_params_default(&p);   // then fill from the config
 *   dv_augment_scratch *s; DV_TRY(dv_augment_scratch_create(&s));
 *   DV_TRY(dv_augment_image(&p, img, h, w, 3, seed, epoch, id, g_out, l_out, NULL, s));
 *   dv_augment_scratch_free(s);
 *
 * Thread safety: all functions are reentrant; a scratch belongs to one thread at a time.
 */
#ifndef DV_AUGMENT_H
#define DV_AUGMENT_H

#include <stddef.h>
#include <stdint.h>

#include "rng.h"

/* Crops per image are limited by the purpose spacing of the RNG (DV_RNG_AUGMENT + crop). */
#define DV_AUGMENT_MAX_CROPS 256

typedef struct {
    int global_size;        /* crops.global_crops_size (224) */
    int local_size;         /* crops.local_crops_size (96) */
    int local_number;       /* crops.local_crops_number (8); 0 allowed */
    double global_scale[2]; /* crops.global_crops_scale (0.32, 1.0) */
    double local_scale[2];  /* crops.local_crops_scale (0.05, 0.32) */
    double ratio[2];        /* RandomResizedCrop ratio, fixed (3/4, 4/3) officially */
    int blur_intended;      /* data.blur_probabilities_intended: 0 official 0/0.9/0.5, 1: 1/0.1/0.5 */
    /* Strengths the official code fixes; dinov2c keys for small or grayscale images, where a
     * 9-tap blur of sigma up to 2 px or solarization erase most of a 28 px crop. */
    double blur_sigma[2];   /* data.blur_sigma: GaussianBlur sigma range (0.1, 2.0) */
    double p_jitter;        /* data.color_jitter_probability (0.8) */
    double p_gray;          /* data.grayscale_probability (0.2) */
    double p_solarize;      /* data.solarize_probability, global crop 1 only (0.2) */
} dv_augment_params;

/* The official defaults (ssl_default_config.yaml), official blur probabilities. */
void dv_augment_params_default(dv_augment_params *p);
/* DV_OK or DV_ERR_ARG naming the bad field. */
int dv_augment_params_check(const dv_augment_params *p);
/* Probability that crop `crop` (0, 1 global; >= 2 local) is blurred under p. */
double dv_augment_blur_probability(const dv_augment_params *p, int crop);

/* A crop box in source pixels, torchvision's (i, j, h, w): rows [top, top+height). */
typedef struct {
    int top, left, height, width;
} dv_crop_box;

/* Everything drawn for one crop (for tests, debugging and the render step). */
typedef struct {
    int crop;               /* 0, 1 global; 2.. local */
    int out_size;           /* output side in pixels */
    dv_crop_box box;        /* in the coordinates of the image it was drawn for */
    int box_attempt;        /* 0..9: RandomResizedCrop attempt that succeeded; -1: fallback */
    int flip;               /* horizontal flip */
    int jitter;             /* colour jitter applied */
    int jitter_order[4];    /* op ids in application order: 0 bright, 1 contrast, 2 sat, 3 hue */
    float brightness, contrast, saturation, hue; /* drawn factors (valid when jitter) */
    int gray;               /* RandomGrayscale fired */
    int blur;               /* Gaussian blur applied */
    float blur_sigma;       /* its sigma (valid when blur) */
    int solarize;           /* solarized (global crop 1 only) */
} dv_crop_record;

typedef struct dv_augment_scratch dv_augment_scratch;

/* Scratch buffers grow to the largest image seen and are then reused (no steady-state malloc). */
int dv_augment_scratch_create(dv_augment_scratch **out);
void dv_augment_scratch_free(dv_augment_scratch *s);

/* ---- whole image ---------------------------------------------------------------------- */

/* img (h, w, c) uint8, c = 1 (gray, converted as PIL convert("RGB")) or 3 (RGB), rows packed.
 * global_out (2, 3, G, G), local_out (L, 3, l, l) fp32 (local_out may be NULL when L = 0);
 * rec (2 + L) may be NULL. */
int dv_augment_image(const dv_augment_params *p, const uint8_t *img, int h, int w, int c,
                     uint64_t seed, uint64_t epoch, uint64_t sample_id, float *global_out,
                     float *local_out, dv_crop_record *rec, dv_augment_scratch *s);

/* ---- split API: draw parameters, then render ----------------------------------------- */

/* Draw all parameters of crop `crop` for an image of h x w pixels (no pixels needed). */
int dv_augment_draw(const dv_augment_params *p, int crop, int img_h, int img_w, uint64_t seed,
                    uint64_t epoch, uint64_t sample_id, dv_crop_record *rec);

/* Render a drawn crop from img (h, w, c): out (3, S, S) fp32, S = rec->out_size. The box must
 * lie inside the image (rescale it with dv_crop_box_rescale after a scaled decode). */
int dv_augment_render(const dv_crop_record *rec, const uint8_t *img, int h, int w, int c,
                      float *out, dv_augment_scratch *s);

/* Same as render but stops before ToTensor: out (S, S, 3) uint8, the PIL image the official
 * pipeline would hand to ToTensor. For tests and for fp16/uint8 transport. */
int dv_augment_render_u8(const dv_crop_record *rec, const uint8_t *img, int h, int w, int c,
                         uint8_t *out, dv_augment_scratch *s);

/* torchvision RandomResizedCrop.get_params on an h x w image: 10 attempts with area fraction
 * U(scale) and log-uniform aspect ratio (w/h) in ratio, accepted when 0 < w <= W and
 * 0 < h <= H, position uniform; else the central-crop fallback. *attempt as in the record. */
int dv_rrc_draw_box(dv_rng *r, int img_h, int img_w, const double scale[2], const double ratio[2],
                    dv_crop_box *box, int *attempt);

/* ---- decode-scale hook for the loader -------------------------------------------------- */

/* Smallest numerator n in 1..denom such that the box scaled by n/denom is still at least
 * out_h x out_w (so resampling only downscales, as from the full image). */
int dv_decode_scale_num(const dv_crop_box *box, int out_h, int out_w, int denom);
/* The largest of dv_decode_scale_num over n_rec records (all crops of one image). */
int dv_augment_decode_scale(const dv_crop_record *rec, int n_rec, int denom);
/* Map a box drawn on an img_h x img_w image onto the same image decoded at scaled_h x
 * scaled_w (outer rounding: floor of the start, ceil of the end, clamped). */
void dv_crop_box_rescale(const dv_crop_box *in, int img_h, int img_w, int scaled_h, int scaled_w,
                         dv_crop_box *out);

/* ---- eval transform --------------------------------------------------------------------- */

/* round(crop * 256 / 224): the official Resize(256) -> CenterCrop(224) ratio (256 for 224). */
int dv_eval_resize_size(int crop_size);
/* Resize(resize_size, bicubic, shorter side) -> CenterCrop(crop_size) -> ToTensor -> Normalize.
 * out (3, crop, crop) fp32. Requires resize_size >= crop_size. */
int dv_eval_transform(const uint8_t *img, int h, int w, int c, int resize_size, int crop_size,
                      float *out, dv_augment_scratch *s);

/* ---- the individual operations on uint8 (n pixels, interleaved RGB), Pillow semantics ---- */

void dv_pil_brightness(uint8_t *rgb, size_t n, float factor);
void dv_pil_contrast(uint8_t *rgb, size_t n, float factor);
void dv_pil_saturation(uint8_t *rgb, size_t n, float factor);
void dv_pil_hue(uint8_t *rgb, size_t n, float hue_factor); /* hue_factor in [-0.5, 0.5] */
void dv_pil_grayscale(uint8_t *rgb, size_t n);               /* L replicated to 3 channels */
void dv_pil_solarize(uint8_t *rgb, size_t n, int threshold);
uint8_t dv_pil_luma(uint8_t r, uint8_t g, uint8_t b);        /* PIL convert("L") */
/* torchvision GaussianBlur on a PIL image: kernel k (odd), reflect padding, rounded back to
 * uint8. tmp holds (h + 2) * (w + ksize) * 3 floats. */
int dv_gaussian_blur(uint8_t *rgb, int h, int w, int ksize, float sigma, float *tmp);
/* ToTensor + Normalize(ImageNet mean/std): (h, w, 3) uint8 -> (3, h, w) fp32. */
void dv_to_tensor_normalize(const uint8_t *rgb, int h, int w, float *out);

#endif
