/* loader — the training data loader: HDF5 image shards -> shuffled global batches -> this rank's
 * slice, decoded, augmented (multi-crop) and masked (iBOT), as dv_batch (src/batch.h).
 *
 * Sampler (doc/loader.md): the dataset is the concatenation of all shards in sorted path order;
 * image g (0 <= g < N) is its position there. Epoch e is the permutation perm_e of [0, N) drawn
 * by Fisher-Yates from dv_rng(seed, DV_RNG_SHUFFLE, e, 0) (a function of (seed, e) only).
 * Global batch k of epoch e is perm_e[k·Bg, (k+1)·Bg) with Bg = B·world; the N mod Bg images
 * left at the end of an epoch are dropped (batches_per_epoch = N / Bg). Rank r takes
 * perm_e[k·Bg + r·B + i], i < B. The global batch counter t = e·batches_per_epoch + k keys the
 * masks; dv_loader_position / dv_loader_seek express it as (epoch, batch_in_epoch).
 *
 * Per image: pixels (raw shards: one hyperslab; encoded: the blob, decoded to RGB), then the
 * 2 + L crops of src/augment.h keyed by (seed, epoch, stored /ids value), written straight into
 * the crop-major rows: global crop c of image i -> row c·B + i, local crop j -> row j·B + i.
 * Masks: dv_mask_collate over the 2·Bg global crops of the global batch (crop-major, row
 * c·Bg + r·B + i), keyed (seed, t, 0); each rank keeps its 2B rows. Every image's crops and
 * masks are therefore the same whatever the rank count, thread count or worker count.
 *
 * Threads: num_workers pthreads fill a ring of prefetch batches ahead of the consumer (work
 * starts at the first dv_loader_next). HDF5 calls are serialised by one process-wide lock (the
 * Debian parallel HDF5 is not thread-safe); decode and augment run outside it. Only the
 * calling thread uses MPI (dv_loader_open). A main thread that uses HDF5 itself while a
 * loader has workers (checkpoints) must hold dv_loader_hdf5_lock around those calls.
 *
 *   dv_loader_opts o; dv_loader_opts_from_config(&o, cfg);
 *   dv_loader *l; DV_TRY(dv_loader_open(&l, &o, ctx.comm));        // collective
 *   if (resuming) DV_TRY(dv_loader_seek(l, epoch, batch_in_epoch));
 *   for (;;) { dv_batch *b; DV_TRY(dv_loader_next(l, &b)); ... step(b) ...
 *              dv_loader_position(l, &epoch, &batch_in_epoch); }   // store in the checkpoint
 *   dv_loader_close(l);
 */
#ifndef DV_LOADER_H
#define DV_LOADER_H

#include <mpi.h>
#include <stdint.h>

#include "augment.h"
#include "batch.h"
#include "config.h"

typedef struct {
    const char *train;      /* data.train: a directory of *.h5 shards, a glob, one shard, or a
                             * text file listing shard paths (one per line, # comments) */
    int64_t batch_per_rank; /* B = train.batch_size_per_gpu */
    uint64_t seed;          /* data.seed: order, augmentations and masks */
    dv_augment_params aug;  /* crops.* and data.blur_probabilities_intended */
    int patch_size;         /* student.patch_size: N = (global_size / patch_size)² */
    double mask_ratio_min, mask_ratio_max; /* ibot.mask_ratio_min_max */
    double mask_probability;               /* ibot.mask_sample_probability */
    int num_workers;        /* data.num_workers: 0 = work in dv_loader_next */
    int prefetch;           /* data.prefetch (>= 1): batches prepared ahead */
    int jpeg_dct_scaling;   /* 1: decode JPEGs with DCT scaling (not bit-exact; default 0) */
} dv_loader_opts;

typedef struct dv_loader dv_loader;

/* Everything from a config (dv_config_finalize'd or not). o->train points into c. */
void dv_loader_opts_from_config(dv_loader_opts *o, const dv_config *c);

/* Collective over comm: rank 0 resolves data.train and reads every shard's size, the others
 * receive the list. Errors (no shards, unreadable shard, fewer images than one global batch)
 * are one line on every rank and every rank returns the same status. */
int dv_loader_open(dv_loader **out, const dv_loader_opts *o, MPI_Comm comm);

/* This rank's next batch; *batch stays valid until the next call to dv_loader_next,
 * dv_loader_seek or dv_loader_close. On error (unreadable image or shard, named in the one-line
 * message) the position does not move and later calls return the error again until a seek. */
int dv_loader_next(dv_loader *l, dv_batch **batch);

/* Position of the batch the next dv_loader_next returns. */
void dv_loader_position(const dv_loader *l, int64_t *epoch, int64_t *batch_in_epoch);

/* Continue at (epoch, batch_in_epoch), 0 <= batch_in_epoch < batches_per_epoch: the next batch
 * is bit-identical to the one an uninterrupted run returned there (same data, seed, options and
 * global batch; any rank count, worker count). Drops prefetched work. */
int dv_loader_seek(dv_loader *l, int64_t epoch, int64_t batch_in_epoch);

int64_t dv_loader_num_images(const dv_loader *l);        /* N over all shards */
int64_t dv_loader_batches_per_epoch(const dv_loader *l); /* N / (B·world) */

/* The bound on batch->n_masked for this loader (= batch->upperbound); see dv_loader_mask_bound. */
int64_t dv_loader_mask_upperbound(const dv_loader *l);

/* A static bound on the masked tokens of one rank's 2B global crops when the masks are drawn for
 * the global batch of B·world images: the sum of the largest min(2B, n) per-crop bounds
 * int(N·edges[i+1]) of the global collate (n = int(2B·world·probability) masked crops). Equals
 * dv_mask_upperbound(2B, ...) (the official per-rank bound) for world = 1; larger otherwise,
 * because one rank may receive more than its share of the masked crops. Size buffers with it. */
int64_t dv_loader_mask_bound(int64_t batch_per_rank, int world, int n_tokens, double ratio_min,
                             double ratio_max, double probability);

/* The process-wide HDF5 lock that every loader's workers take around their HDF5 calls (the
 * HDF5 library is not thread-safe). Hold it around the caller's own HDF5 use (checkpoint
 * writes, feature files) while any loader with workers is open. Recursive. Never hold it
 * across dv_loader_next / seek / close of a loader with workers (they wait for the workers). */
void dv_loader_hdf5_lock(void);
void dv_loader_hdf5_unlock(void);

/* Stops and joins the workers (also after an error), closes the shards, frees everything.
 * Not collective. NULL is fine. */
void dv_loader_close(dv_loader *l);

/* The shard paths of a data.train spec (a comma-separated list of items), sorted by strcmp:
 * a directory -> its *.h5 files (not recursive); a spec with * ? [ -> glob(3) matches; an HDF5
 * file -> itself; any other file -> a list, one path per line (blank lines and lines starting
 * with # ignored, surrounding blanks trimmed, relative paths taken relative to the list's
 * directory). Duplicates and empty results are errors (one line, naming the spec). Free with
 * dv_shards_free. */
int dv_shards_resolve(const char *spec, char ***paths, int *n);
void dv_shards_free(char **paths, int n);

#endif
