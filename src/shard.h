/* shard — FSDP-style sharding of one module's flat parameter buffer (src/params.h layout) over the
 * ranks of a dv_comm (DESIGN §3.4).
 *
 * Shard units: the backbone has depth + 1 of them — unit 0 is "embeddings + final norm" (every
 * tensor outside the blocks: cls_token, pos_embed, register_tokens, mask_token, patch_embed.*,
 * norm.*; two segments of the flat layout), unit i + 1 is blocks.i.*. A head is one unit.
 * A unit's elements (its segments concatenated, len of them) are padded to world · S with
 * S = ceil(len / world); rank r owns unit elements [r·S, (r+1)·S) at local index local0 .. local0
 * + S. The rank's local buffers (student master weights, teacher, AdamW moments, gradient shard)
 * hold local_numel = Σ S floats; padding is zero and stays zero (zero weight, zero gradient).
 *
 *   gather          local slices (fp32) → dtype → all-gather → fp32 → the unit's segments of a
 *                   full-size buffer (the rest of it untouched)
 *   reduce_scatter  the unit's segments of a full-size gradient × pre → dtype → reduce-scatter
 *                   sum → fp32 × post → the local gradient slice
 * dtype is what crosses between ranks (compute_precision.*.param_dtype / reduce_dtype); the CPU
 * computes in fp32. One rank does not round: with world 1 both are exact copies (× pre·post).
 * Staging is allocated once per plan: 3 · world · max S floats, the gathered unit's working set.
 *
 * For checkpoints a plan lists the flat ranges a rank holds (ranges, padding excluded): a tensor
 * meets at most one of them, because units hold whole tensors and a slice crosses at most one
 * segment boundary of its unit.
 *
 *   dv_shard_plan p;
 *   DV_TRY(dv_shard_plan_init(&p, &vit.params, 1, comm->rank, comm->world));
 *   dv_shard_take(&p, master, full_init);                 // this rank's slice of the init
 *   DV_TRY(dv_shard_gather(&p, comm, u, master, w_full, DV_F16));     // before unit u's forward
 *   DV_TRY(dv_shard_reduce_scatter(&p, comm, u, g_full, g_local, DV_F16, scale, 1 / (scale·world)));
 */
#ifndef DV_SHARD_H
#define DV_SHARD_H

#include <stddef.h>
#include <stdint.h>

#include "adamw.h"
#include "comm.h"
#include "params.h"

#define DV_SHARD_MAX_SEGS 4

typedef struct {
    size_t off, len; /* floats of the module's flat buffer */
} dv_shard_seg;

typedef struct {
    dv_shard_seg seg[DV_SHARD_MAX_SEGS];
    int nseg;
    size_t len;    /* Σ seg len */
    size_t S;      /* elements per rank: ceil(len / world) */
    size_t local0; /* where this unit's slice starts in the local buffers */
} dv_shard_unit;

/* Flat elements [lo, hi) of the module, held at local index loc .. loc + hi − lo. */
typedef struct {
    size_t lo, hi, loc;
} dv_shard_range;

typedef struct {
    int rank, world;
    int nunits;
    dv_shard_unit *unit;
    size_t numel;       /* the module's flat size */
    size_t local_numel; /* Σ S: this rank's local buffers */
    dv_shard_range *range; /* ascending lo; padding excluded */
    int nrange;
    size_t max_S;
    float *stage;     /* world · max_S: unit elements in fp32 */
    void *send, *recv; /* world · max_S elements of up to 4 bytes each */
} dv_shard_plan;

/* Units from the parameter table (is_backbone: blocks by layer_id; else one unit). */
int dv_shard_plan_init(dv_shard_plan *p, const dv_param_table *tab, int is_backbone, int rank,
                       int world);
void dv_shard_plan_free(dv_shard_plan *p);

/* local (local_numel) ← this rank's slices of full (numel); padding zeroed. */
void dv_shard_take(const dv_shard_plan *p, float *local, const float *full);

/* Collective: see above. unit in [0, nunits). */
int dv_shard_gather(dv_shard_plan *p, dv_comm *c, int unit, const float *local, float *full,
                    dv_dtype t);
int dv_shard_reduce_scatter(dv_shard_plan *p, dv_comm *c, int unit, const float *full_grad,
                            float *local_grad, dv_dtype t, float pre, float post);

/* AdamW ranges of the local buffers: the module's per-tensor ranges (flat offsets) intersected
 * with this rank's ranges and rebased to local indices. out holds n + nrange entries; returns
 * how many were written. */
int64_t dv_shard_adamw_ranges(const dv_shard_plan *p, const dv_adamw_range *in, int64_t n,
                              dv_adamw_range *out);

#endif
