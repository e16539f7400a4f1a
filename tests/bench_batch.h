/* bench_batch — one training batch of random normalised crops with the official iBOT masks, for
 * the training benchmarks (bench_train, bench_fsdp): the loader is measured by bench_loader, so
 * only the step is timed. Header-only; bench programs include it once. */
#ifndef DV_BENCH_BATCH_H
#define DV_BENCH_BATCH_H

#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "config.h"
#include "err.h"
#include "masking.h"
#include "rng.h"

/* b: B images per rank of c's crop recipe; crops drawn from N(0, 1) keyed by (seed, stream). */
static int bench_batch_make(dv_batch *b, dv_mask_batch *mb, const dv_config *c, int64_t B,
                            uint64_t seed, uint64_t stream) {
    memset(b, 0, sizeof *b);
    b->B = B;
    b->L = c->crops.local_crops_number;
    b->G = c->crops.global_crops_size;
    b->l = c->crops.local_crops_size;
    const int p = (int)c->student.patch_size, grid = (int)(b->G / p);
    b->N = (int64_t)grid * grid;
    const size_t ng = (size_t)(2 * b->B * 3 * b->G * b->G), nl = (size_t)(b->L * b->B * 3 * b->l * b->l);
    b->global_crops = malloc(sizeof(float) * ng);
    b->local_crops = malloc(sizeof(float) * (nl ? nl : 1));
    if (!b->global_crops || !b->local_crops) return DV_ERR_NOMEM;
    dv_rng r;
    dv_rng_init(&r, seed, DV_RNG_TEST, stream, 0);
    for (size_t i = 0; i < ng; i++) b->global_crops[i] = (float)dv_rng_normal(&r);
    for (size_t i = 0; i < nl; i++) b->local_crops[i] = (float)dv_rng_normal(&r);
    dv_mask_gen mg;
    DV_TRY(dv_mask_gen_init(&mg, grid, grid, dv_mask_max_num_patches((int)b->G, p)));
    DV_TRY(dv_mask_batch_alloc(mb, (int)(2 * b->B), (int)b->N));
    DV_TRY(dv_mask_collate(&mg, c->ibot.mask_ratio_min_max[0], c->ibot.mask_ratio_min_max[1],
                           c->ibot.mask_sample_probability, seed, 0, 0, mb));
    b->masks = mb->masks;
    b->mask_indices = mb->indices;
    b->mask_weights = mb->weights;
    b->n_masked = mb->n_masked_patches;
    b->upperbound = mb->upperbound;
    return DV_OK;
}

static void bench_batch_free(dv_batch *b, dv_mask_batch *mb) {
    free(b->global_crops);
    free(b->local_crops);
    dv_mask_batch_free(mb);
}

#endif
