/* batch — one rank's training batch as the loader produces it and the SSL step consumes it
 * (the official collate_data_and_cast output, in fp32).
 *
 * Shapes (B images on this rank, L local crops per image, G / l global / local crop size,
 * N = (G/p)² patches per global crop):
 *   global_crops (2B, 3, G, G)  crop-major: rows [img0..imgB-1 of crop 1, img0..imgB-1 of crop 2]
 *   local_crops  (L·B, 3, l, l) crop-major: block j = local crop j of every image
 *   masks        (2B, N)        nonzero = masked patch (iBOT), shuffled over the global crops
 *   mask_indices (n_masked)     flat indices into (2B·N) of the masked patches, ascending
 *   mask_weights (n_masked)     1 / (masked patches of that token's crop)
 *   upperbound                  the official static bound on n_masked for this batch shape
 *   ids, labels  (B)            global sample ids and labels (-1 unknown) of the images
 */
#ifndef DV_BATCH_H
#define DV_BATCH_H

#include <stdint.h>

typedef struct {
    int64_t B, L;             /* images, local crops per image */
    int64_t G, l;             /* global / local crop sizes in pixels */
    int64_t N;                /* patches per global crop */
    float *global_crops;
    float *local_crops;
    uint8_t *masks;
    int64_t *mask_indices;
    float *mask_weights;
    int64_t n_masked, upperbound;
    uint64_t *ids;
    int32_t *labels;
    int64_t epoch;            /* sampler epoch of the first image */
} dv_batch;

#endif
