/* rng — counter-based random numbers (Philox 4x32-10, Salmon et al. SC'11).
 *
 * Every random draw in dinov2c comes from a stream keyed by
 *     (seed, purpose, step, index)
 * e.g. (train.seed, DV_RNG_AUGMENT + crop, epoch, global sample id). A stream is a pure
 * function of its key, so results do not depend on rank, thread or worker counts, and a
 * resumed run replays exactly. Layout of the 128-bit counter and 64-bit key:
 *     key = { lo32(seed), hi32(seed) ^ purpose }
 *     ctr = { block, lo32(step), lo32(index), hi32(index) }
 * `block` counts 4-word output blocks inside one stream (2^32 blocks = 2^34 draws).
 * Steps above 2^32 wrap; seeds only collide with purposes when seeds exceed 2^32.
 */
#ifndef DV_RNG_H
#define DV_RNG_H

#include <stddef.h>
#include <stdint.h>

/* Purposes (sub-streams are formed as purpose + small offset, e.g. DV_RNG_AUGMENT + crop). */
enum {
    DV_RNG_INIT = 0x100,      /* parameter initialisation: + tensor index */
    DV_RNG_SHUFFLE = 0x200,   /* sampler permutation per epoch */
    DV_RNG_AUGMENT = 0x300,   /* + crop index */
    DV_RNG_MASK = 0x400,      /* iBOT block masks */
    DV_RNG_DROPPATH = 0x500,  /* stochastic-depth subsets: + block index */
    DV_RNG_TEST = 0x600,      /* tests and benchmarks */
    DV_RNG_CURATE = 0x700,    /* k-means init, sampling */
    DV_RNG_EVAL = 0x800,      /* linear-probe split and init */
};

typedef struct {
    uint32_t key[2];
    uint32_t ctr[4];
    uint32_t buf[4];  /* current output block */
    int used;         /* words of buf consumed (4 = refill) */
    int has_normal;   /* Box-Muller keeps its second value */
    double normal;
} dv_rng;

/* The raw bijection: out = Philox4x32-10(ctr, key). */
void dv_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

void dv_rng_init(dv_rng *r, uint64_t seed, uint32_t purpose, uint64_t step, uint64_t index);

uint32_t dv_rng_u32(dv_rng *r);
uint64_t dv_rng_u64(dv_rng *r);
/* Uniform in [0, 1): 24 random bits (float) or 53 (double). */
float dv_rng_uniform(dv_rng *r);
double dv_rng_uniform_double(dv_rng *r);
/* Uniform in [lo, hi). */
double dv_rng_uniform_range(dv_rng *r, double lo, double hi);
/* Standard normal (Box-Muller on 53-bit uniforms). */
double dv_rng_normal(dv_rng *r);
/* torch.nn.init.trunc_normal_(mean 0, std, a, b): a normal restricted to [a, b] (absolute
 * bounds, as torch), drawn by rejection — the same distribution as torch's inverse-CDF method. */
float dv_rng_trunc_normal(dv_rng *r, double std, double a, double b);
/* Uniform integer in [lo, hi] (inclusive, hi >= lo), unbiased. */
int64_t dv_rng_int(dv_rng *r, int64_t lo, int64_t hi);
/* perm[0..n) = a uniformly random permutation of 0..n-1 (Fisher-Yates). */
void dv_rng_permutation(dv_rng *r, int64_t *perm, int64_t n);
/* Shuffle arbitrary elements in place. */
void dv_rng_shuffle(dv_rng *r, void *base, int64_t n, size_t elem_size);

#endif
