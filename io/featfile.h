/* featfile — features files (embeddings) written by dinov2-embed and read by dinov2-eval (DESIGN
 * §5, doc/formats.md "Features"). One HDF5 file, N images:
 *
 *   /x_norm_clstoken     float32 [N, D]     final-norm CLS token (always)
 *   /x_norm_patchtokens  float32 [N, P, D]  final-norm patch tokens        (optional)
 *   /x_norm_regtokens    float32 [N, R, D]  final-norm register tokens     (optional)
 *   /avgpool             float32 [N, D]     mean of the last block's normed patch tokens
 *                                           (linear probe, optional)
 *   /cls_last4           float32 [N, B, D]  normed CLS of the last B = min(4, depth) blocks,
 *                                           oldest first (linear probe, optional)
 *   /labels              int32   [N]        (-1 = unknown)
 *   /ids                 uint64  [N]        the shards' global sample ids
 *   root attributes: format = "dinov2c-features", format_version = 1, count, embed_dim and
 *     whatever the producer adds (dinov2-embed: patch_size, depth, num_heads,
 *     num_register_tokens, image_size, resize_size, height, width, num_patches, num_classes,
 *     cls_last4_blocks, source, source_group, data, ...).
 * Row i of every dataset is the same image. Datasets are chunked along N.
 *
 * Writing: serial (comm == MPI_COMM_NULL) or collective over a communicator with parallel HDF5
 * (H5Pset_fapl_mpio): every rank calls create, the attribute setters (same values), write (same
 * number of calls; count may be 0 on some ranks) and commit. The file is "<path>.tmp" until
 * commit, which closes it and lets rank 0 rename it to <path> after every rank is done; a
 * reader therefore never sees a partial file under the final name.
 *
 *   dv_features_spec sp = {.n = N, .dim = D, .npatch = 0, .nreg = 0, .nlast = 4, .avgpool = 1};
 *   dv_features_writer *w;
 *   DV_TRY(dv_features_create("train.h5", comm, &sp, &w));
 *   DV_TRY(dv_features_attr_i64(w, "image_size", 224));
 *   dv_features_rows r = {.cls = cls, .avgpool = ap, .cls_last = cl, .labels = y, .ids = id};
 *   DV_TRY(dv_features_write(w, start, count, &r));     // rows [start, start + count)
 *   DV_TRY(dv_features_commit(w));                      // frees w
 *
 * Reading is serial (every rank may read any rows of a file on a shared file system):
 *
 *   dv_features f;
 *   DV_TRY(dv_features_read("train.h5", DV_FEAT_CLS | DV_FEAT_PROBE, 0, -1, &f));
 *   ... f.cls (f.n, f.dim), f.avgpool or NULL, f.cls_last or NULL, f.labels ...
 *   dv_features_free(&f);
 *
 * Errors are one line naming the file ("error: x.h5: not a dinov2c features file (format
 * attribute missing)"); a failed collective call leaves the other ranks to the caller (a
 * program aborts the job).
 */
#ifndef DV_FEATFILE_H
#define DV_FEATFILE_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#define DV_FEATURES_FORMAT "dinov2c-features"
#define DV_FEATURES_VERSION 1

/* ---- writer ------------------------------------------------------------------------------ */

typedef struct {
    int64_t n;          /* images (>= 1) */
    int64_t dim;        /* D */
    int64_t npatch;     /* P: write /x_norm_patchtokens when > 0 */
    int64_t nreg;       /* R: write /x_norm_regtokens when > 0 */
    int64_t nlast;      /* B: write /cls_last4 when > 0 */
    int avgpool;        /* write /avgpool */
    int64_t chunk_rows; /* rows per chunk; 0 = about 1 MiB per chunk of each dataset */
} dv_features_spec;

/* One block of rows; pointers to the parts the spec has (others ignored). */
typedef struct {
    const float *cls;      /* (count, D) */
    const float *patch;    /* (count, P, D) */
    const float *reg;      /* (count, R, D) */
    const float *avgpool;  /* (count, D) */
    const float *cls_last; /* (count, B, D) */
    const int32_t *labels; /* (count) */
    const uint64_t *ids;   /* (count) */
} dv_features_rows;

typedef struct dv_features_writer dv_features_writer;

/* Create "<path>.tmp" (collective with comm; MPI_COMM_NULL = serial) with every dataset of
 * the spec and the format attributes. */
int dv_features_create(const char *path, MPI_Comm comm, const dv_features_spec *spec,
                       dv_features_writer **out);
/* Root attributes (collective: every rank, same value). */
int dv_features_attr_i64(dv_features_writer *w, const char *name, int64_t value);
int dv_features_attr_i64v(dv_features_writer *w, const char *name, const int64_t *v, int64_t n);
int dv_features_attr_str(dv_features_writer *w, const char *name, const char *value);
/* Rows [start, start + count) of every dataset (collective: every rank calls it the same
 * number of times; count = 0 contributes nothing). */
int dv_features_write(dv_features_writer *w, int64_t start, int64_t count,
                      const dv_features_rows *rows);
/* Close, then (after every rank closed) rank 0 renames the file to its final name; a barrier
 * follows. Frees w, also on error (the temporary file is then removed). */
int dv_features_commit(dv_features_writer *w);
/* Close and delete the temporary file (collective); frees w. */
void dv_features_discard(dv_features_writer *w);

/* ---- reader ------------------------------------------------------------------------------ */

enum {
    DV_FEAT_CLS = 1u << 0,
    DV_FEAT_PATCH = 1u << 1,
    DV_FEAT_REG = 1u << 2,
    DV_FEAT_AVGPOOL = 1u << 3,
    DV_FEAT_CLS_LAST = 1u << 4,
    DV_FEAT_PROBE = DV_FEAT_AVGPOOL | DV_FEAT_CLS_LAST
};

/* Features in memory (also what the embedder produces in memory, src/embed.h). Parts not
 * loaded or not in the file are NULL with their size 0; labels and ids are always loaded. */
typedef struct {
    int64_t n;       /* rows held */
    int64_t total;   /* rows in the file */
    int64_t dim;     /* D */
    int64_t npatch;  /* P of /x_norm_patchtokens in the file (0 = absent) */
    int64_t nreg;    /* R of /x_norm_regtokens in the file (0 = absent) */
    int64_t nlast;   /* B of /cls_last4 in the file (0 = absent) */
    int has_avgpool; /* /avgpool in the file */
    float *cls;      /* (n, D) */
    float *patch;    /* (n, P, D) */
    float *reg;      /* (n, R, D) */
    float *avgpool;  /* (n, D); with DV_FEAT_AVGPOOL and no /avgpool but patch tokens in the
                        file it is computed from them (avgpool_computed = 1) */
    int avgpool_computed;
    float *cls_last;     /* (n, B, D) */
    int32_t *labels;     /* (n) */
    uint64_t *ids;       /* (n) */
    int64_t num_classes; /* attribute num_classes (0 = unknown / absent) */
    int64_t image_size;  /* attribute image_size (-1 = absent) */
} dv_features;

/* Read rows [start, start + count) (count < 0: to the end) of the parts in `parts` that the
 * file has; the CLS tokens, labels and ids are always read. f is overwritten (call
 * dv_features_free on an earlier content first). */
int dv_features_read(const char *path, unsigned parts, int64_t start, int64_t count,
                     dv_features *f);
/* Only the shape fields, total and the attributes (no rows; n = 0). */
int dv_features_info(const char *path, dv_features *f);
void dv_features_free(dv_features *f);

/* Allocate zeroed parts for n rows (dim, npatch, nreg, nlast, has_avgpool set by the caller
 * first; parts with size 0 stay NULL). For in-memory producers. */
int dv_features_alloc(dv_features *f, int64_t n);

#endif
