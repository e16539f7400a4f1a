/* pack — the ingest step behind `dinov2-pack`: image folders, file lists or IDX files into
 * HDF5 image shards (io/h5images.h), as a library so tests call it directly.
 *
 *   dv_pack_opts o;
 *   dv_pack_opts_init(&o);
 *   o.input = "data/train"; o.output = "shards"; o.prefix = "train";
 *   dv_pack_result res;
 *   DV_TRY(dv_pack_run(&o, &res));
 *
 * Inputs (o.layout, DV_PACK_AUTO picks one; doc/pack.md):
 *   folder  ImageFolder tree DIR/<class>/...: label = index of the class folder in sorted order
 *   flat    the files directly in DIR, label -1
 *   list    a text file, one "path [label]" per line, relative paths against the list's folder
 *   idx     --idx-images FILE [--idx-labels FILE] (MNIST-style, gzip or plain)
 * Auto: idx when idx_images is set; list when input is a regular file; folder when a
 * non-hidden subfolder of DIR holds at least one file (at any depth); flat otherwise.
 *
 * Ids and shards: every input gets an id = its index in the input order (folder: classes in
 * sorted order, files sorted by (folder, name) as torchvision's ImageFolder; flat: sorted
 * names; list: line order; idx: record order). Shard k always covers ids [k S, (k+1) S) for
 * shard size S and is named <prefix>-<k as %05d>.h5, so shard contents never depend on the task
 * count. A skipped input (unreadable, empty, corrupt, truncated, not an image) keeps its id: it
 * leaves a gap in /ids and is listed in the shard's /skipped_* datasets and the manifest.
 *
 * Array jobs: task t of T writes shards [t n / T, (t+1) n / T) of n; defaults from
 * SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN and SLURM_ARRAY_TASK_COUNT, else 0 of 1. Each task
 * writes <prefix>-manifest-<t>.json. A rerun keeps every shard that exists under its final name
 * with the same id range, input hash (paths, labels, options) and a consistent count, and
 * rewrites the others (a stale .tmp from a killed run is overwritten).
 */
#ifndef DV_PACK_H
#define DV_PACK_H

#include <stdint.h>
#include <stdio.h>

typedef enum {
    DV_PACK_AUTO = 0,
    DV_PACK_FOLDER,
    DV_PACK_FLAT,
    DV_PACK_LIST,
    DV_PACK_IDX
} dv_pack_layout;

const char *dv_pack_layout_name(dv_pack_layout layout);

typedef struct {
    const char *input;      /* --input DIR | LIST */
    const char *idx_images; /* --idx-images FILE */
    const char *idx_labels; /* --idx-labels FILE (optional) */
    dv_pack_layout layout;  /* --layout auto|folder|flat|list|idx */
    const char *output;     /* --output DIR (created when missing) */
    const char *prefix;     /* --prefix (default "images") */
    int64_t shard_size;     /* --shard-size (default 10000) */
    int channels;           /* --channels 3|1 (default 3) */
    int encoded;            /* --encoded: always store the encoded bytes */
    int resize_short;       /* --resize-short S: shorter side to S (bicubic, antialiased) */
    int center_crop;        /* --center-crop C: then the central C x C (needs resize_short) */
    int deflate;            /* --deflate 0..9: gzip level for raw /images (default 0) */
    int strict;             /* --strict: a JPEG with decoder warnings is skipped */
    int task_id, num_tasks; /* --task-id / --num-tasks */
    int progress;           /* -1: on when stderr is a TTY (default), 0 off, 1 on */
    int quiet;              /* --quiet: no info lines */
    int64_t cache_bytes;    /* --cache-mb: decoded pixels kept between the two passes */
    FILE *log;              /* info lines (NULL = stdout) */
} dv_pack_opts;

typedef struct {
    int64_t inputs;                 /* all inputs, ids [0, inputs) */
    int64_t num_shards;             /* all shards of all tasks */
    int64_t shard_begin, shard_end; /* this task's shards */
    int64_t shards_written, shards_kept;
    int64_t images, skipped; /* in this task's shards (kept ones included) */
    int64_t warnings;        /* images kept despite decoder warnings */
    int num_classes;
} dv_pack_result;

void dv_pack_opts_init(dv_pack_opts *o);
/* Parse argv (argv[0] is the program). *help = 1 for --help (nothing else checked). Task
 * defaults come from the SLURM_ARRAY_* environment. Errors: one line, DV_ERR_ARG. The strings
 * in o point into argv. */
int dv_pack_parse_args(int argc, char **argv, dv_pack_opts *o, int *help);
void dv_pack_usage(FILE *out);
int dv_pack_run(const dv_pack_opts *o, dv_pack_result *res);

/* "<output>/<prefix>-<index %05d>.h5" and "<output>/<prefix>-manifest-<task>.json" */
int dv_pack_shard_path(const dv_pack_opts *o, int64_t index, char *buf, size_t buflen);
int dv_pack_manifest_path(const dv_pack_opts *o, int task, char *buf, size_t buflen);

#endif
