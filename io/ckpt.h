/* ckpt — training checkpoints: the whole dv_ssl state (student, teacher, AdamW moments, centres,
 * step) plus the data-loader position in ONE HDF5 file per checkpoint, written collectively with
 * parallel HDF5 by every rank, loadable on any number of ranks (layout: doc/checkpoints.md).
 *
 *   dir/ckpt-000000200.h5   step 200 (iterations completed), "%09lld"
 *   dir/latest              one line: the file name of the newest complete checkpoint
 *
 *   /                      format="dinov2c-checkpoint" format_version=1 step world_size
 *                          config (resolved YAML) config_checksum checksum_algorithm=
 *                          "dv-sum64-v1" producer="dinov2c"  (HDF5 1.8 file format: the
 *                          library's metadata checksums cover the structure)
 *   /student/{backbone,dino_head,ibot_head}/<official key>   float32, official shape
 *   /teacher/{...}/<key>   same; backbone groups carry the architecture attributes of
 *                          io/weights.h, head groups in_dim out_dim nlayers hidden_dim
 *                          bottleneck_dim mlp_bias; ibot_head only with ibot.separate_head
 *   /optim/exp_avg/<module>/<key>, /optim/exp_avg_sq/<module>/<key>
 *   /state/  dino_center (K) f32, dino_center_pending_sum (K) f64, dino_center_pending_rows
 *            f64, dino_center_has_pending i64, ibot_center* (K_ibot) likewise, loader_epoch,
 *            loader_batch, adamw_step, scaler_growth_tracker i64, loss_scale f64 (scalars)
 *   every dataset: attribute checksum (uint64, dv-sum64 of its bytes; io/checksum.h)
 *
 * Writing (dv_ckpt_save*): collective over ctx->comm; creates dir when missing; writes
 * ckpt-<step>.h5.tmp through the MPI-IO driver with collective transfers, flushes (MPI_File_sync)
 * and fsyncs it, renames it into place and fsyncs dir; then replaces `latest` atomically
 * (latest.tmp, fsync, rename); then deletes the oldest checkpoints beyond `keep` (0 = keep all).
 * Any failure (disk full, I/O error, unwritable dir) removes the .tmp, leaves the previous
 * checkpoint and `latest` untouched, prints ONE line on rank 0 naming the path and returns the
 * status on every rank.
 *
 * Which rank writes what. A rank holds, per module, elements [lo, hi) of the module's flat
 * parameter layout (src/params.h) in s->mod[m].{student, teacher, exp_avg, exp_avg_sq}, at index
 * 0 .. hi − lo (dv_ckpt_shards). Each tensor is written as this rank's hyperslab of the tensor's
 * official-shape dataset (its elements [offset, offset + count) in row-major order, which is
 * the intersection of the tensor's flat range with [lo, hi)); ranks whose range misses the
 * tensor take part with an empty selection. shards = NULL is today's layout: every rank holds
 * every element and rank 0's data is written. Centres and scalars are replicated; rank 0
 * writes them. The checksum of a tensor is the sum of the ranks' partial checksums.
 *
 * Loading (dv_ckpt_load*): collective; checks the file's architecture against s (a mismatch is
 * a configuration error naming the first differing attribute: DV_ERR_CONFIG), then reads every
 * tensor (with shards = NULL every rank reads everything; each rank checksums a 1/world share
 * of every tensor and the shares are added) and compares every checksum. dv_ckpt_load_latest
 * tries the file `latest` names and, when it is missing, truncated or corrupt (fails to open,
 * bad format, shape mismatch, checksum mismatch), prints one warning line (here wrapped)
 *     warning: ckpt/ckpt-000000200.h5: checksum mismatch in
 *     teacher/backbone/blocks.3.attn.qkv.weight; trying the previous checkpoint
 * and falls back to the next-newest ckpt-*.h5 that verifies (only ones older than the failed
 * `latest` target; all of them, newest first, when `latest` itself is missing or unreadable).
 * A load that fails leaves s in an unspecified (but allocated) state.
 *
 * Statuses: DV_ERR_CONFIG architecture mismatch; DV_ERR_FORMAT no valid checkpoint / corrupt
 * file; DV_ERR_IO file system; DV_ERR_HDF5, DV_ERR_MPI, DV_ERR_NOMEM; DV_ERR_ARG bad arguments.
 * Every collective function returns the same status on every rank.
 *
 * Example (dinov2-pretrain):
 *   dv_ckpt_extra x = {0, 0};  int64_t at;
 *   DV_TRY(dv_ckpt_load_latest(&ctx, &s, &x, cfg->derived.checkpoint_dir, &at)); // -1: fresh
 *   ...  every checkpoint.period iterations:
 *   DV_TRY(dv_ckpt_save(&ctx, &s, &x, cfg->derived.checkpoint_dir, (int)cfg->checkpoint.keep));
 */
#ifndef DV_CKPT_H
#define DV_CKPT_H

#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

#include "ctx.h"
#include "ssl.h"

#define DV_CKPT_FORMAT         "dinov2c-checkpoint"
#define DV_CKPT_FORMAT_VERSION 1
#define DV_CKPT_WHY_MAX        512 /* reason strings (one line) */

/* Training state outside dv_ssl that a checkpoint carries. */
typedef struct {
    int64_t loader_epoch, loader_batch; /* the position of the NEXT batch */
} dv_ckpt_extra;

/* Per module, the elements [lo, hi) of its flat layout that this rank holds (see above). hi may
 * run past numel (padding, ignored). Over the ranks the ranges must cover [0, numel) exactly
 * once; a module that is not present is ignored. */
typedef struct {
    size_t lo[DV_MOD_COUNT], hi[DV_MOD_COUNT];
    /* or, when nrange[m] > 0, a list of flat ranges held at local indices (src/shard.h: what an
     * FSDP plan holds; each tensor meets at most one range of a rank) */
    const dv_shard_range *range[DV_MOD_COUNT];
    int nrange[DV_MOD_COUNT];
} dv_ckpt_shards;

/* The shards of a model sharded by dv_ssl_set_comm (NULL when it is not sharded); dv_ckpt_save
 * and dv_ckpt_load_latest use them by themselves. */
const dv_ckpt_shards *dv_ckpt_shards_of(const dv_ssl *s, dv_ckpt_shards *buf);

/* "ckpt-000000200.h5" into buf; returns buf. */
char *dv_ckpt_file_name(char *buf, size_t len, int64_t step);

/* Collective: write dir/ckpt-<s->step>.h5 and point `latest` at it, keep the newest `keep`
 * (<= 0: all). x may be NULL (position 0, 0). */
int dv_ckpt_save(const dv_ctx *ctx, const dv_ssl *s, const dv_ckpt_extra *x, const char *dir,
                 int keep);
int dv_ckpt_save_sharded(const dv_ctx *ctx, const dv_ssl *s, const dv_ckpt_extra *x,
                         const char *dir, int keep, const dv_ckpt_shards *shards);

/* Collective: load the newest valid checkpoint of dir into s (every tensor, centres, s->step)
 * and x (may be NULL). *step_loaded = the step, or -1 (and DV_OK, s untouched) when dir holds
 * no checkpoint (or does not exist). */
int dv_ckpt_load_latest(const dv_ctx *ctx, dv_ssl *s, dv_ckpt_extra *x, const char *dir,
                        int64_t *step_loaded);
int dv_ckpt_load_latest_sharded(const dv_ctx *ctx, dv_ssl *s, dv_ckpt_extra *x, const char *dir,
                                const dv_ckpt_shards *shards, int64_t *step_loaded);
/* Collective: load one named checkpoint file (no fallback); errors print one line on rank 0. */
int dv_ckpt_load_file(const dv_ctx *ctx, dv_ssl *s, dv_ckpt_extra *x, const char *path,
                      const dv_ckpt_shards *shards);

/* Serial (no MPI): format, architecture attributes, every expected dataset with its shape and
 * type, no unexpected dataset, every checksum, every float finite. DV_OK, or a status with the
 * first problem in why ("checksum mismatch in optim/exp_avg/backbone/norm.weight"). Prints
 * nothing (except HDF5-level failures of the architecture attributes, reported by weights.c). */
int dv_ckpt_verify(const char *path, char *why, size_t why_len);

/* Serial: the teacher backbone as a backbone weight file (io/weights.h layout, official keys),
 * checksums verified while reading. Errors: one line. */
int dv_ckpt_export_teacher(const char *ckpt_path, const char *out_path);

/* ---- inspection (serial) ---- */

/* 1 when path is an HDF5 file whose root attribute format is "dinov2c-checkpoint", else 0. */
int dv_ckpt_is_checkpoint(const char *path);

typedef struct {
    int64_t format_version, step, world_size;
    int64_t loader_epoch, loader_batch, adamw_step;
    dv_vit_config backbone; /* student/backbone attributes */
    dv_head_config head[2]; /* dino_head, ibot_head (ibot only when has_ibot_head) */
    int has_ibot_head;
    size_t numel[DV_MOD_COUNT]; /* parameters per module (0 when absent) */
    int ntensors[DV_MOD_COUNT];
    char *config; /* the resolved config YAML (malloc'd; checksum verified) */
} dv_ckpt_info;

/* Header, architecture and loader position of a checkpoint (no checksums). why as in verify. */
int dv_ckpt_read_info(const char *path, dv_ckpt_info *info, char *why, size_t why_len);
void dv_ckpt_info_free(dv_ckpt_info *info);

/* ---- building blocks (what the sharded engine of issue 7 plugs into) ---- */

/* Collective on a file opened with the MPI-IO driver: create the float32 dataset `path`
 * (parent groups must exist) of the given shape (ndim 0 = scalar), write this rank's elements
 * [offset, offset + count) of it in row-major order from src (count floats; count 0 = an empty
 * selection), add the ranks' partial dv-sum64 and store it as the attribute `checksum`. The
 * ranks' slices must partition the tensor. On failure every rank returns the status and the
 * failing rank's reason in why. */
int dv_ckpt_write_f32(const dv_ctx *ctx, hid_t file, const char *path, int ndim,
                      const int64_t *shape, const float *src, size_t offset, size_t count,
                      char *why, size_t why_len);
/* Collective: read elements [offset, offset + count) of the float32 dataset `path` (shape must
 * match) into dst; this rank adds the checksum terms of elements [sum_offset, sum_offset +
 * sum_count) (inside its slice; the ranks' sum ranges must partition the tensor) and the total
 * is compared with the stored attribute: DV_ERR_FORMAT "checksum mismatch in <path>". */
int dv_ckpt_read_f32(const dv_ctx *ctx, hid_t file, const char *path, int ndim,
                     const int64_t *shape, float *dst, size_t offset, size_t count,
                     size_t sum_offset, size_t sum_count, char *why, size_t why_len);

#endif
