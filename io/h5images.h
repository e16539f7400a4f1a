/* h5images — HDF5 image shards: the writer (dinov2-pack) and the hyperslab reader (data loader,
 * curation, embedding). Format (doc/formats.md, DESIGN §5), N images per shard:
 *
 *   /images   layout "raw":     uint8 [N, H, W, C], chunked by a few images
 *             layout "encoded": vlen uint8 [N], the original JPEG/PNG bytes (or PNG re-encodes)
 *   /labels   int32 [N]  (-1 = unknown)
 *   /ids      uint64 [N] (global, stable sample ids)
 *   /paths    vlen UTF-8 strings [N], optional (source paths)
 *   /class_names  vlen strings [num_classes], optional
 *   /skipped_ids, /skipped_paths, /skipped_reasons  optional: inputs of this shard left out
 *   root attributes: format = "dinov2c-images", format_version = 1, layout = "raw"|"encoded",
 *     height, width, channels (raw only), num_classes (0 = unknown), plus any the producer adds
 *     (dinov2-pack: id_begin, id_end, inputs_hash, ...).
 *
 * Writing (serial): the writer creates "<path>.tmp", buffers appended images and writes them in
 * whole chunks, and dv_h5img_commit flushes, fsyncs and renames the file to <path>. A file under
 * its final name is therefore always complete; a killed writer leaves only a ".tmp" file that
 * the next dv_h5img_create overwrites.
 *
 *   dv_h5img_spec sp = {.layout = DV_H5IMG_RAW, .height = 28, .width = 28, .channels = 3};
 *   dv_h5img_writer *w;
 *   DV_TRY(dv_h5img_create("out/images-00000.h5", &sp, &w));
 *   for (...) DV_TRY(dv_h5img_append_raw(w, pixels, label, id, NULL));  // on error: discard
 *   DV_TRY(dv_h5img_commit(w));
 *
 * Reading: serial (comm == MPI_COMM_NULL) or with parallel HDF5 over a communicator (the open
 * is then collective; the reads are independent hyperslabs, each rank reading only its slice):
 *
 *   dv_h5img r;
 *   DV_TRY(dv_h5img_open("out/images-00000.h5", MPI_COMM_NULL, &r));
 *   DV_TRY(dv_h5img_read_raw(&r, start, n, buf));          // buf: n * H * W * C bytes
 *   DV_TRY(dv_h5img_read_labels(&r, start, n, labels));
 *   dv_h5img_close(&r);
 *
 * A file that is not a shard is one clear line: "error: x.h5: not a dinov2c image shard
 * (format attribute missing)".
 */
#ifndef DV_H5IMAGES_H
#define DV_H5IMAGES_H

#include <hdf5.h>
#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#define DV_H5IMG_FORMAT "dinov2c-images"
#define DV_H5IMG_VERSION 1

typedef enum { DV_H5IMG_RAW = 0, DV_H5IMG_ENCODED = 1 } dv_h5img_layout;

const char *dv_h5img_layout_name(dv_h5img_layout layout); /* "raw", "encoded" */

/* ---- writer ------------------------------------------------------------------------------ */

typedef struct {
    dv_h5img_layout layout;
    int height, width, channels;    /* raw only */
    int num_classes;                /* 0 = unknown */
    const char *const *class_names; /* optional, num_class_names entries */
    int num_class_names;
    int with_paths;   /* write /paths */
    int chunk_images; /* raw: images per chunk; 0 = about 1 MiB per chunk */
    int deflate;      /* gzip level 0..9 for /images (0 = none) */
} dv_h5img_spec;

typedef struct dv_h5img_writer dv_h5img_writer;

int dv_h5img_create(const char *path, const dv_h5img_spec *spec, dv_h5img_writer **out);
/* pixels: [H, W, C] of the spec. path may be NULL (stored as ""). */
int dv_h5img_append_raw(dv_h5img_writer *w, const uint8_t *pixels, int32_t label, uint64_t id,
                        const char *path);
int dv_h5img_append_encoded(dv_h5img_writer *w, const void *bytes, size_t size, int32_t label,
                            uint64_t id, const char *path);
/* Record an input of this shard that was left out (written at commit). */
int dv_h5img_add_skipped(dv_h5img_writer *w, uint64_t id, const char *path, const char *reason);
int dv_h5img_set_attr_u64(dv_h5img_writer *w, const char *name, uint64_t value);
int dv_h5img_set_attr_str(dv_h5img_writer *w, const char *name, const char *value);
int64_t dv_h5img_writer_count(const dv_h5img_writer *w);
/* Flush, close, fsync and rename to the final name; frees w (also on error, removing the
 * temporary file). */
int dv_h5img_commit(dv_h5img_writer *w);
/* Close and delete the temporary file; frees w. */
void dv_h5img_discard(dv_h5img_writer *w);

/* ---- reader ------------------------------------------------------------------------------ */

typedef struct {
    char *path;
    hid_t file, images, labels, ids;
    dv_h5img_layout layout;
    int64_t count;               /* N */
    int height, width, channels; /* raw only (0 for encoded) */
    int num_classes;
    int format_version;
    int has_paths;
} dv_h5img;

/* comm == MPI_COMM_NULL: serial; otherwise collective open with the MPI-IO driver. Errors are
 * printed as one line (missing file, not HDF5, not a shard, inconsistent datasets). */
int dv_h5img_open(const char *path, MPI_Comm comm, dv_h5img *r);
/* Serial open that prints nothing: on failure *why (whylen bytes) says what is wrong. */
int dv_h5img_probe(const char *path, dv_h5img *r, char *why, size_t whylen);
int dv_h5img_close(dv_h5img *r);

/* Images [start, start + count): raw into dst (count * H * W * C bytes). */
int dv_h5img_read_raw(const dv_h5img *r, int64_t start, int64_t count, uint8_t *dst);

/* Encoded blobs [start, start + count): blob i is data[offsets[i] .. offsets[i + 1]). */
typedef struct {
    uint8_t *data;
    size_t *offsets; /* count + 1 entries */
    int64_t count;
} dv_h5img_blobs;
int dv_h5img_read_encoded(const dv_h5img *r, int64_t start, int64_t count, dv_h5img_blobs *out);
void dv_h5img_blobs_free(dv_h5img_blobs *b);

int dv_h5img_read_labels(const dv_h5img *r, int64_t start, int64_t count, int32_t *dst);
int dv_h5img_read_ids(const dv_h5img *r, int64_t start, int64_t count, uint64_t *dst);
/* dst[i] = malloc'd copies (free with dv_strv_free); DV_ERR_FORMAT without /paths. */
int dv_h5img_read_paths(const dv_h5img *r, int64_t start, int64_t count, char **dst);
/* *names = malloc'd vector of *n names; *n = 0 and *names = NULL when absent. */
int dv_h5img_read_class_names(const dv_h5img *r, char ***names, int *n);
/* The skipped-input records (all NULL / 0 when absent). */
int dv_h5img_read_skipped(const dv_h5img *r, int64_t *n, uint64_t **ids, char ***paths,
                          char ***reasons);
/* Root attributes; *present = 0 (and the value untouched) when absent. */
int dv_h5img_get_attr_u64(const dv_h5img *r, const char *name, uint64_t *value, int *present);
int dv_h5img_get_attr_str(const dv_h5img *r, const char *name, char *buf, size_t buflen,
                          int *present);

/* Free n malloc'd strings and the vector itself (when vec_too). */
void dv_strv_free(char **v, int64_t n, int vec_too);

#endif
