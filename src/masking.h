/* masking — iBOT block-wise masks: the official MaskingGenerator (BEiT style) and the collate
 * policy of collate_data_and_cast, for one rank's batch of 2B global crops.
 *
 * Generator (dinov2/data/masking.py): grid H x W tokens, min_num_patches 4, aspect ratio
 * log-uniform in [0.3, 1/0.3], max_num_patches as the official train.py expression
 * `0.5 * S // p * S // p` in Python float arithmetic (dv_mask_max_num_patches: 128 for
 * 224/14, 98 for 224/16, 666 (not 684.5) for 518/14). A mask with target T: repeat
 *   budget = min(T - count, max_num_patches); up to 10 attempts: area ~ U(4, budget),
 *   aspect = exp(U(log 0.3, log 1/0.3)), h = round(sqrt(area·aspect)), w = round(sqrt(area/
 *   aspect)) (half to even); if w < W and h < H: top ~ U{0..H-h}, left ~ U{0..W-w}; mark the
 *   rectangle if 0 < new tokens <= budget and stop attempting;
 * until count >= T or a round added nothing. Never overshoots T.
 *
 * Collate policy (per rank, 2B crops, N = H·W): n = int(2B · probability) masked crops;
 * edges = torch.linspace(min, max, n + 1) in float32; crop i < n gets target
 * int(N · U(edges[i], edges[i+1])) and upperbound += int(N · edges[i+1]) (float32, as torch);
 * crops n..2B-1 are empty; the 2B masks are shuffled (Fisher-Yates from the end, as Python's
 * random.shuffle). Outputs: masks (2B, N) uint8, flat indices of true entries in ascending
 * order over (2B·N), per-masked-token weight 1/max(count of its crop, 1) (float32),
 * n_masked_patches, upperbound.
 *
 * Randomness: one stream dv_rng(seed, DV_RNG_MASK, step, key); the caller picks key (e.g. the
 * global index of this rank's batch within the step) so masks do not depend on threads or on
 * call order. Draw order = Python's: per masked crop, its target uniform, then the generator's
 * draws (uniform area, uniform log-aspect, then randint top, randint left when the size fits),
 * then the shuffle. Distributions match Python's random; bit equality with its Mersenne
 * Twister is not attempted.
 *
 *   dv_mask_gen g; DV_TRY(dv_mask_gen_init(&g, 16, 16, dv_mask_max_num_patches(224, 14)));
 *   dv_mask_batch b; DV_TRY(dv_mask_batch_alloc(&b, 2 * B, 16 * 16));
 *   DV_TRY(dv_mask_collate(&g, 0.1, 0.5, 0.5, seed, step, key, &b));
 *   ... b.masks, b.indices[0..b.n_masked_patches), b.weights, b.upperbound ...
 *   dv_mask_batch_free(&b);
 */
#ifndef DV_MASKING_H
#define DV_MASKING_H

#include <stddef.h> /* rng.h uses size_t without including it */
#include <stdint.h>

#include "rng.h"

typedef struct {
    int height, width;      /* token grid H x W */
    int min_num_patches;    /* 4 */
    double max_num_patches; /* per block; official: dv_mask_max_num_patches(S, p) */
    double log_aspect[2];   /* log(0.3), log(1/0.3) */
} dv_mask_gen;

/* Python's float floor division a // b (floor of the exact quotient, Python's rounding). */
double dv_py_floordiv(double a, double b);
/* The official train.py value `0.5 * img_size // patch_size * img_size // patch_size`,
 * evaluated left to right with Python float semantics. */
double dv_mask_max_num_patches(int img_size, int patch_size);

/* min_num_patches 4, aspect 0.3 .. 1/0.3 (the official defaults). */
int dv_mask_gen_init(dv_mask_gen *g, int height, int width, double max_num_patches);

/* One mask with target `target` tokens: mask (H·W) uint8 is cleared and filled; *count gets
 * the number of masked tokens (<= target). */
int dv_mask_generate(const dv_mask_gen *g, dv_rng *r, int64_t target, uint8_t *mask,
                     int64_t *count);

typedef struct {
    int n_crops;              /* 2B */
    int n_tokens;             /* N = H·W */
    uint8_t *masks;           /* (2B, N) */
    int64_t *indices;         /* (n_masked_patches) flat indices into (2B·N), ascending */
    float *weights;           /* (n_masked_patches) 1 / max(count of the token's crop, 1) */
    int64_t *crop_counts;     /* (2B) masked tokens per crop */
    int64_t n_masked_patches; /* total masked tokens */
    int64_t upperbound;       /* static bound for buffer sizes (official formula) */
    int n_masked_crops;       /* int(2B · probability) */
    uint8_t *work_;           /* (2B, N) generation order before the shuffle */
    int64_t *perm_;           /* (2B) */
} dv_mask_batch;

int dv_mask_batch_alloc(dv_mask_batch *b, int n_crops, int n_tokens);
void dv_mask_batch_free(dv_mask_batch *b);

/* n_masked_crops = int(n_crops · probability), computed as Python does (double product). */
int dv_mask_n_masked_crops(int n_crops, double probability);
/* The official upperbound: sum over i < n of int(N · edges[i+1]) with float32 linspace edges. */
int64_t dv_mask_upperbound(int n_crops, int n_tokens, double ratio_min, double ratio_max,
                           double probability);
/* torch.linspace(lo, hi, steps) in float32 (CPU kernel formula); edges has `steps` entries. */
void dv_linspace_f32(double lo, double hi, int steps, float *edges);

/* The collate policy for b->n_crops crops (b allocated for that many crops and H·W tokens). */
int dv_mask_collate(const dv_mask_gen *g, double ratio_min, double ratio_max, double probability,
                    uint64_t seed, uint64_t step, uint64_t key, dv_mask_batch *b);

/* Recompute indices, weights, crop_counts and n_masked_patches from b->masks (called by
 * collate; public so externally produced masks — e.g. the golden file — can be checked). */
void dv_mask_finalize(dv_mask_batch *b);

#endif
