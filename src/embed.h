/* embed — run a frozen backbone over a set of image shards and keep its features
 * (dinov2-embed; the in-memory path of dinov2-eval). Output layout: io/features.h.
 *
 * Per image (the official eval pipeline, dinov2/data/transforms.py
 * make_classification_eval_transform, with our Pillow-exact resize):
 *   image_size S > 0: Resize(round(S·256/224), bicubic, shorter side) -> CenterCrop(S)
 *                     -> ToTensor -> Normalize(ImageNet mean/std)          (dv_eval_transform)
 *   image_size 0:     ToTensor -> Normalize at the stored size; both sides must be multiples of
 *                     the patch size (an error says to pass an image size otherwise).
 * Gray images become RGB as PIL's convert("RGB"). Encoded shards are decoded at full size
 * (io/decode.h). Then one inference forward (src/vit.h) per batch; consecutive images of the
 * same size form one crop group, so a batch may mix sizes (CLS and probe features only; patch
 * tokens need one size). Outputs per image (official forward_features / get_intermediate_layers
 * with norm=True):
 *   cls       x_norm_clstoken (D)
 *   patch     x_norm_patchtokens (P, D)                          (opts.patch_tokens)
 *   reg       x_norm_regtokens (R, D)                            (opts.reg_tokens, R > 0)
 *   avgpool   mean of the last block's normed patch tokens (D)   (opts.probe_features)
 *   cls_last  normed CLS of blocks depth-B .. depth-1, B = min(4, depth) (B, D) (probe)
 * which are exactly the inputs of the official linear probe (create_linear_input).
 *
 * MPI: the images of the set, in shard order, are split into contiguous slices, one per rank
 * (rank r: [N·r/W, N·(r+1)/W)). Rank 0 lists and probes the shards and reads the backbone, and
 * broadcasts both. Every rank writes its rows into the ONE output file with collective
 * parallel-HDF5 writes; the file is "<output>.tmp" until every rank is done, then rank 0
 * renames it. The result does not depend on the rank count (same preprocessing, same forward
 * per image; only the batch composition differs). Errors are agreed between the ranks: every
 * rank returns the failing status (the rank at fault prints the one-line message).
 * Threads: preprocessing runs on OpenMP threads (one scratch and decoder each), the forward on
 * OpenBLAS/OpenMP.
 *
 *   dv_embed_opts o;  dv_embed_opts_default(&o);
 *   o.weights = "dinov2_vits14.h5"; o.data = "shards/val"; o.probe_features = 1;
 *   dv_embed_stats st;
 *   DV_TRY(dv_embed_file(&o, "val_features.h5", MPI_COMM_WORLD, &st));
 *
 * Shard sets are resolved by dv_shards_resolve (src/loader.h), as for training: a directory of
 * *.h5 shards, a glob, one shard, or a text file listing shards; sorted.
 */
#ifndef DV_EMBED_H
#define DV_EMBED_H

#include <mpi.h>
#include <stdint.h>

#include "augment.h"
#include "featfile.h"
#include "vit.h"

#define DV_EMBED_DEFAULT_GROUP "teacher/backbone"

typedef struct {
    const char *weights;    /* backbone weight file (io/weights.h), or NULL */
    const char *checkpoint; /* training checkpoint (its teacher backbone), or NULL */
    const char *group;      /* backbone group inside the checkpoint; NULL = teacher/backbone */
    const char *data;       /* the shard set */
    int image_size;         /* S > 0: official eval transform to S x S; 0: images as stored */
    int batch;              /* images per forward (>= 1) */
    int patch_tokens;       /* keep x_norm_patchtokens */
    int reg_tokens;         /* keep x_norm_regtokens (when the model has registers) */
    int probe_features;     /* keep avgpool and cls_last (linear probe) */
    int progress;           /* progress line on stderr: rank 0, and only when stderr is a TTY */
} dv_embed_opts;

/* weights/checkpoint/data NULL, image_size 224, batch 32, no optional parts, progress 1. */
void dv_embed_opts_default(dv_embed_opts *o);

typedef struct {
    int64_t images;   /* embedded over all ranks */
    double seconds;   /* wall time of the embedding loop (rank 0) */
    double img_per_s; /* images / seconds */
} dv_embed_stats;

/* The shard set as a malloc'd vector of *n malloc'd paths (free with dv_strv_free). An item
 * that matches nothing is an error naming it. Serial; no MPI. */

/* The backbone of o->weights (file root) or o->checkpoint (group o->group). comm: rank 0 reads
 * and broadcasts (MPI_COMM_NULL: read here). *w: malloc'd, m->params.numel floats. */
int dv_embed_load_backbone(const dv_embed_opts *o, MPI_Comm comm, dv_vit *m, float **w);

/* Preprocess one uint8 image (h, w, c HWC, c = 1 or 3) as described above into
 * out (3, H, W) with H = W = image_size, or H = h, W = w when image_size is 0. u8 is a scratch
 * of at least h·w·3 bytes (gray input at image_size 0 only; may be NULL otherwise). */
int dv_embed_preprocess(const uint8_t *img, int h, int w, int c, int image_size, float *out,
                        uint8_t *u8, dv_augment_scratch *s);

/* Outputs of one batch, each (n, ...) as in the header comment; NULL = not wanted. */
typedef struct {
    float *cls, *patch, *reg, *avgpool, *cls_last;
} dv_embed_out;

/* The forward of one packed batch (inference acts with max_inter >= B when cls_last is
 * wanted) and the outputs of its crops in crop order. patch needs every group at one size. */
int dv_embed_forward(const dv_vit *m, const float *w, dv_vit_acts *a, const dv_vit_group *groups,
                     int64_t ngroups, const dv_embed_out *out);
/* B = min(4, depth): the blocks of cls_last. */
int64_t dv_embed_nlast(const dv_vit *m);

/* Embed o->data into the features file `output` (collective over comm; MPI_COMM_NULL: serial). */
int dv_embed_file(const dv_embed_opts *o, const char *output, MPI_Comm comm, dv_embed_stats *st);

/* Embed o->data into memory: every rank receives all N rows in *out (free with
 * dv_features_free). out->image_size and num_classes are set as the file attributes would be. */
int dv_embed_memory(const dv_embed_opts *o, MPI_Comm comm, dv_features *out, dv_embed_stats *st);

#endif
