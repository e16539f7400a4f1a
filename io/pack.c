/* pack — see pack.h and doc/pack.md. */
#include "pack.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "decode.h"
#include "err.h"
#include "h5images.h"
#include "idx.h"
#include "resample.h"
#include "timer.h"

#define PACK_VERSION_ 1
#define MAX_FILE_BYTES_ ((int64_t)1 << 30)
#define MAX_DEPTH_ 64

const char *dv_pack_layout_name(dv_pack_layout layout) {
    switch (layout) {
    case DV_PACK_FOLDER: return "folder";
    case DV_PACK_FLAT: return "flat";
    case DV_PACK_LIST: return "list";
    case DV_PACK_IDX: return "idx";
    default: return "auto";
    }
}

void dv_pack_opts_init(dv_pack_opts *o) {
    memset(o, 0, sizeof *o);
    o->layout = DV_PACK_AUTO;
    o->prefix = "images";
    o->shard_size = 10000;
    o->channels = 3;
    o->num_tasks = 1;
    o->progress = -1;
    o->cache_bytes = (int64_t)1 << 30;
}

/* ---- command line ------------------------------------------------------------------------ */

void dv_pack_usage(FILE *out) {
    fputs("usage: dinov2-pack --input DIR|LIST --output DIR [options]\n"
          "       dinov2-pack --idx-images FILE [--idx-labels FILE] --output DIR [options]\n"
          "\n"
          "Pack images into HDF5 image shards (<prefix>-00000.h5, ...) for dinov2c.\n"
          "\n"
          "input:\n"
          "  --input PATH         image folder (class subfolders or flat) or a text list\n"
          "  --layout KIND        auto (default), folder, flat, list or idx\n"
          "                       auto: list if PATH is a file; folder if a subfolder of PATH\n"
          "                       holds files (labels = sorted class-folder index); else flat\n"
          "                       (label -1). A list has one 'path [label]' per line; relative\n"
          "                       paths are relative to the list's folder; '#' starts a comment.\n"
          "  --idx-images FILE    MNIST-style IDX images (.gz or plain)\n"
          "  --idx-labels FILE    matching IDX labels (optional)\n"
          "output:\n"
          "  --output DIR         output folder (created if missing)\n"
          "  --prefix NAME        shard name prefix (default images)\n"
          "  --shard-size N       inputs per shard (default 10000)\n"
          "  --channels 3|1       RGB (default; gray is replicated) or luma\n"
          "  --encoded            store the original JPEG/PNG bytes even when sizes agree\n"
          "  --resize-short S     resize the shorter side to S (bicubic, antialiased as PIL)\n"
          "  --center-crop C      after --resize-short, keep the central C x C pixels\n"
          "  --deflate L          gzip level 0-9 for raw pixels (default 0: none)\n"
          "  --strict             skip JPEGs with decoder warnings too (default: keep them)\n"
          "  --cache-mb M         decoded pixels kept between the two passes (default 1024)\n"
          "array jobs:\n"
          "  --task-id T          this task (default: SLURM_ARRAY_TASK_ID minus\n"
          "                       SLURM_ARRAY_TASK_MIN, or 0)\n"
          "  --num-tasks N        number of tasks (default: SLURM_ARRAY_TASK_COUNT, or 1)\n"
          "other:\n"
          "  --progress / --no-progress   progress line on stderr (default: when it is a TTY)\n"
          "  --quiet              no info lines (warnings and errors still print)\n"
          "  --help               this text\n"
          "\n"
          "A shard holds raw uint8 pixels [N,H,W,C] when all of its images share one size (after\n"
          "resizing), else the encoded bytes. Shard k holds ids [k*S, (k+1)*S) for shard size S,\n"
          "whatever the number of tasks. Bad files are skipped with one warning each and listed\n"
          "in the shard and in <prefix>-manifest-<task>.json. A rerun keeps complete shards.\n"
          "See doc/pack.md.\n",
          out);
}

static int parse_i64_(const char *flag, const char *s, int64_t lo, int64_t hi, int64_t *out) {
    char *end = NULL;
    errno = 0;
    long long v = s ? strtoll(s, &end, 10) : 0;
    if (!s || !*s || *end || errno || v < lo || v > hi) {
        dv_user_error("%s: '%s' is not an integer in [%lld, %lld]", flag, s ? s : "", (long long)lo,
                      (long long)hi);
        return DV_ERR_ARG;
    }
    *out = v;
    return DV_OK;
}

static int parse_int_(const char *flag, const char *s, int lo, int hi, int *out) {
    int64_t v;
    DV_TRY(parse_i64_(flag, s, lo, hi, &v));
    *out = (int)v;
    return DV_OK;
}

int dv_pack_parse_args(int argc, char **argv, dv_pack_opts *o, int *help) {
    dv_pack_opts_init(o);
    *help = 0;
    int have_task = 0, have_ntasks = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        char flag[64];
        const char *val = NULL;
        const char *eq = strncmp(a, "--", 2) == 0 ? strchr(a, '=') : NULL;
        if (eq && (size_t)(eq - a) < sizeof flag) {
            memcpy(flag, a, (size_t)(eq - a));
            flag[eq - a] = 0;
            val = eq + 1;
        } else {
            snprintf(flag, sizeof flag, "%s", a);
        }
        /* flags without a value */
        if (!strcmp(flag, "--help") || !strcmp(flag, "-h")) {
            *help = 1;
            return DV_OK;
        }
        if (!strcmp(flag, "--encoded")) {
            o->encoded = 1;
            continue;
        }
        if (!strcmp(flag, "--strict")) {
            o->strict = 1;
            continue;
        }
        if (!strcmp(flag, "--quiet")) {
            o->quiet = 1;
            continue;
        }
        if (!strcmp(flag, "--progress")) {
            o->progress = 1;
            continue;
        }
        if (!strcmp(flag, "--no-progress")) {
            o->progress = 0;
            continue;
        }
        static const char *const with_value[] = {
            "--input",   "--layout",     "--idx-images", "--idx-labels",   "--output",
            "--prefix",  "--shard-size", "--channels",   "--resize-short", "--center-crop",
            "--deflate", "--task-id",    "--num-tasks",  "--cache-mb",     NULL};
        int known = 0;
        for (int k = 0; with_value[k]; k++)
            known |= !strcmp(flag, with_value[k]);
        if (!known) {
            dv_user_error("unknown option '%s' (see dinov2-pack --help)", a);
            return DV_ERR_ARG;
        }
        if (!val) {
            if (i + 1 >= argc) {
                dv_user_error("%s needs a value (see dinov2-pack --help)", flag);
                return DV_ERR_ARG;
            }
            val = argv[++i];
        }
        if (!strcmp(flag, "--input"))
            o->input = val;
        else if (!strcmp(flag, "--idx-images"))
            o->idx_images = val;
        else if (!strcmp(flag, "--idx-labels"))
            o->idx_labels = val;
        else if (!strcmp(flag, "--output"))
            o->output = val;
        else if (!strcmp(flag, "--prefix"))
            o->prefix = val;
        else if (!strcmp(flag, "--layout")) {
            dv_pack_layout l;
            for (l = DV_PACK_AUTO; l <= DV_PACK_IDX; l++)
                if (!strcmp(val, dv_pack_layout_name(l))) break;
            if (l > DV_PACK_IDX) {
                dv_user_error("--layout: '%s' is not one of auto, folder, flat, list, idx", val);
                return DV_ERR_ARG;
            }
            o->layout = l;
        } else if (!strcmp(flag, "--shard-size")) {
            DV_TRY(parse_i64_(flag, val, 1, INT64_C(1) << 40, &o->shard_size));
        } else if (!strcmp(flag, "--channels")) {
            DV_TRY(parse_int_(flag, val, 1, 3, &o->channels));
            if (o->channels == 2) {
                dv_user_error("--channels: must be 3 or 1, not 2");
                return DV_ERR_ARG;
            }
        } else if (!strcmp(flag, "--resize-short")) {
            DV_TRY(parse_int_(flag, val, 1, 1 << 15, &o->resize_short));
        } else if (!strcmp(flag, "--center-crop")) {
            DV_TRY(parse_int_(flag, val, 1, 1 << 15, &o->center_crop));
        } else if (!strcmp(flag, "--deflate")) {
            DV_TRY(parse_int_(flag, val, 0, 9, &o->deflate));
        } else if (!strcmp(flag, "--task-id")) {
            DV_TRY(parse_int_(flag, val, 0, INT_MAX - 1, &o->task_id));
            have_task = 1;
        } else if (!strcmp(flag, "--num-tasks")) {
            DV_TRY(parse_int_(flag, val, 1, INT_MAX, &o->num_tasks));
            have_ntasks = 1;
        } else if (!strcmp(flag, "--cache-mb")) {
            int64_t mb;
            DV_TRY(parse_i64_(flag, val, 0, INT64_C(1) << 30, &mb));
            o->cache_bytes = mb << 20;
        }
    }
    /* Slurm array defaults */
    const char *sid = getenv("SLURM_ARRAY_TASK_ID"), *scount = getenv("SLURM_ARRAY_TASK_COUNT");
    const char *smin = getenv("SLURM_ARRAY_TASK_MIN");
    if (!have_task && sid && *sid) {
        int64_t id, mn = 0;
        DV_TRY(parse_i64_("SLURM_ARRAY_TASK_ID", sid, 0, INT_MAX, &id));
        if (smin && *smin) DV_TRY(parse_i64_("SLURM_ARRAY_TASK_MIN", smin, 0, INT_MAX, &mn));
        o->task_id = (int)(id - mn);
        if (!have_ntasks) {
            if (!scount || !*scount) {
                dv_user_error("SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not; "
                              "give --task-id and --num-tasks");
                return DV_ERR_ARG;
            }
            DV_TRY(parse_int_("SLURM_ARRAY_TASK_COUNT", scount, 1, INT_MAX, &o->num_tasks));
            have_ntasks = 1;
        }
    } else if (!have_ntasks && have_task && scount && *scount) {
        DV_TRY(parse_int_("SLURM_ARRAY_TASK_COUNT", scount, 1, INT_MAX, &o->num_tasks));
    }
    if (o->task_id < 0 || o->task_id >= o->num_tasks) {
        dv_user_error("task %d is outside 0..%d (--task-id/--num-tasks; a Slurm array must be "
                      "contiguous, e.g. --array=0-%d)",
                      o->task_id, o->num_tasks - 1, o->num_tasks - 1);
        return DV_ERR_ARG;
    }
    return DV_OK;
}

/* ---- small helpers ----------------------------------------------------------------------- */

typedef struct {
    char **v;
    int64_t n, cap;
} strvec_;

static int strvec_push_(strvec_ *s, char *owned) {
    if (!owned) return DV_ERR(DV_ERR_NOMEM, "out of memory: path list");
    if (s->n == s->cap) {
        int64_t cap = s->cap ? 2 * s->cap : 256;
        char **v = realloc(s->v, (size_t)cap * sizeof *v);
        if (!v) {
            free(owned);
            return DV_ERR(DV_ERR_NOMEM, "out of memory: path list of %lld", (long long)cap);
        }
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = owned;
    return DV_OK;
}

static void strvec_free_(strvec_ *s) {
    dv_strv_free(s->v, s->n, 1);
    memset(s, 0, sizeof *s);
}

static char *join_(const char *a, const char *b) {
    if (!a || !*a || b[0] == '/') return strdup(b);
    size_t la = strlen(a), lb = strlen(b);
    int slash = a[la - 1] != '/';
    char *s = malloc(la + lb + 2);
    if (!s) return NULL;
    memcpy(s, a, la);
    if (slash) s[la] = '/';
    memcpy(s + la + slash, b, lb + 1);
    return s;
}

static int cmp_str_(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Order of sorted(os.walk(...)) then sorted(files): by folder part, then by name. */
static int cmp_walk_(const void *pa, const void *pb) {
    const char *a = *(char *const *)pa, *b = *(char *const *)pb;
    const char *sa = strrchr(a, '/'), *sb = strrchr(b, '/');
    size_t da = sa ? (size_t)(sa - a) : 0, db = sb ? (size_t)(sb - b) : 0;
    size_t m = da < db ? da : db;
    int c = memcmp(a, b, m);
    if (c) return c;
    if (da != db) return da < db ? -1 : 1;
    return strcmp(sa ? sa + 1 : a, sb ? sb + 1 : b);
}

static uint64_t fnv_(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= UINT64_C(0x100000001b3);
    }
    return h;
}

static void sort_(strvec_ *s, int (*cmp)(const void *, const void *)) {
    if (s->n > 1) qsort(s->v, (size_t)s->n, sizeof *s->v, cmp);
}

/* ---- inputs ------------------------------------------------------------------------------ */

typedef struct {
    dv_pack_layout layout;
    const char *base; /* folder to resolve rel paths against ("" = as is) */
    strvec_ rel;      /* per input: path relative to base (empty for idx) */
    int32_t *labels;
    int64_t n;
    strvec_ classes;
    int num_classes;
    dv_idx im, lb;
    dev_t skip_dev; /* the output folder, never walked as input */
    ino_t skip_ino;
    int have_skip;
} inputs_;

static void inputs_free_(inputs_ *in) {
    strvec_free_(&in->rel);
    strvec_free_(&in->classes);
    free(in->labels);
    dv_idx_free(&in->im);
    dv_idx_free(&in->lb);
}

/* Regular files under root/sub (recursively when recurse), as paths relative to root. */
static int walk_(inputs_ *in, const char *root, const char *sub, int recurse, int depth,
                 strvec_ *files, strvec_ *dirs) {
    char *dirpath = sub[0] ? join_(root, sub) : strdup(root);
    DV_CHECK_ALLOC(dirpath);
    DIR *d = opendir(dirpath);
    if (!d) {
        int e = errno;
        if (depth == 0) {
            dv_user_error("%s: cannot read folder (%s)", dirpath, strerror(e));
            free(dirpath);
            return DV_ERR_IO;
        }
        dv_user_warning("%s: cannot read folder (%s); skipped", dirpath, strerror(e));
        free(dirpath);
        return DV_OK;
    }
    int status = DV_OK;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue; /* ., .., hidden files and folders */
        char *rel = sub[0] ? join_(sub, e->d_name) : strdup(e->d_name);
        char *full = join_(root, rel ? rel : "");
        if (!rel || !full) {
            free(rel);
            free(full);
            status = DV_ERR(DV_ERR_NOMEM, "out of memory: walking %s", dirpath);
            break;
        }
        struct stat st;
        int ok = stat(full, &st) == 0;
        free(full);
        if (ok && S_ISDIR(st.st_mode)) {
            if (in->have_skip && st.st_dev == in->skip_dev && st.st_ino == in->skip_ino) {
                free(rel);
                continue;
            }
            if (dirs) {
                status = strvec_push_(dirs, rel);
            } else if (recurse && depth < MAX_DEPTH_) {
                status = walk_(in, root, rel, 1, depth + 1, files, NULL);
                free(rel);
            } else {
                free(rel);
            }
        } else if (!ok || S_ISREG(st.st_mode)) {
            /* broken links stay inputs: they are reported as unreadable */
            status = strvec_push_(files, rel);
        } else {
            free(rel); /* fifos, sockets, devices */
        }
        if (status != DV_OK) break;
    }
    closedir(d);
    free(dirpath);
    return status;
}

static int add_input_(inputs_ *in, char *rel, int32_t label, int64_t *cap) {
    DV_TRY(strvec_push_(&in->rel, rel));
    if (in->n == *cap) {
        int64_t c = *cap ? 2 * *cap : 256;
        int32_t *l = realloc(in->labels, (size_t)c * sizeof *l);
        DV_CHECK_ALLOC(l);
        in->labels = l;
        *cap = c;
    }
    in->labels[in->n++] = label;
    return DV_OK;
}

static int inputs_dir_(inputs_ *in, const char *dir, dv_pack_layout want) {
    strvec_ top = {0}, dirs = {0};
    int status = walk_(in, dir, "", 0, 0, &top, &dirs);
    strvec_ *per = NULL;
    int64_t cap = 0, nfiles = 0, nper = 0;
    if (status != DV_OK) goto out;
    sort_(&dirs, cmp_str_);
    if (want != DV_PACK_FLAT) {
        per = calloc((size_t)(dirs.n ? dirs.n : 1), sizeof *per);
        if (!per) {
            status = DV_ERR(DV_ERR_NOMEM, "out of memory: class folders");
            goto out;
        }
        nper = dirs.n;
        for (int64_t c = 0; c < dirs.n && status == DV_OK; c++) {
            status = walk_(in, dir, dirs.v[c], 1, 1, &per[c], NULL);
            nfiles += per[c].n;
        }
        if (status != DV_OK) goto out;
    }
    in->layout = want != DV_PACK_AUTO ? want : (nfiles > 0 ? DV_PACK_FOLDER : DV_PACK_FLAT);
    if (in->layout == DV_PACK_FOLDER) {
        if (dirs.n == 0) {
            dv_user_error("%s: no class folders (use --layout flat for a folder of images)", dir);
            status = DV_ERR_ARG;
            goto out;
        }
        if (top.n > 0)
            dv_user_warning("%s: %lld file(s) directly in the folder are not in a class folder; "
                            "ignored",
                            dir, (long long)top.n);
        for (int64_t c = 0; c < dirs.n && status == DV_OK; c++) {
            if (per[c].n == 0) dv_user_warning("%s/%s: class folder without files", dir, dirs.v[c]);
            sort_(&per[c], cmp_walk_);
            for (int64_t i = 0; i < per[c].n && status == DV_OK; i++) {
                status = add_input_(in, per[c].v[i], (int32_t)c, &cap); /* "class/.../name" */
                per[c].v[i] = NULL;
            }
        }
        if (status != DV_OK) goto out;
        in->num_classes = (int)dirs.n;
        in->classes = dirs;
        memset(&dirs, 0, sizeof dirs);
    } else {
        sort_(&top, cmp_str_);
        for (int64_t i = 0; i < top.n && status == DV_OK; i++) {
            status = add_input_(in, top.v[i], -1, &cap);
            top.v[i] = NULL;
        }
    }
out:
    for (int64_t c = 0; c < nper; c++)
        strvec_free_(&per[c]);
    free(per);
    strvec_free_(&top);
    strvec_free_(&dirs);
    return status;
}

static int inputs_list_(inputs_ *in, const char *list, char **base_out) {
    FILE *f = fopen(list, "r");
    if (!f) {
        dv_user_error("%s: cannot open list (%s)", list, strerror(errno));
        return DV_ERR_IO;
    }
    char *copy = strdup(list);
    if (!copy) {
        fclose(f);
        return DV_ERR(DV_ERR_NOMEM, "out of memory");
    }
    char *slash = strrchr(copy, '/');
    if (slash)
        *(slash == copy ? slash + 1 : slash) = 0;
    else
        strcpy(copy, "");
    *base_out = copy;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t len;
    int64_t lineno = 0, cap = 0;
    int status = DV_OK, maxl = -1;
    while (status == DV_OK && (len = getline(&line, &lcap, f)) >= 0) {
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r' || line[len - 1] == ' ' ||
                           line[len - 1] == '\t'))
            line[--len] = 0;
        char *p = line;
        while (*p == ' ' || *p == '\t')
            p++;
        if (!*p || *p == '#') continue;
        int32_t label = -1;
        char *ws = NULL;
        for (char *q = p; *q; q++)
            if (*q == ' ' || *q == '\t') ws = q;
        if (ws) {
            char *end = NULL;
            errno = 0;
            long v = strtol(ws + 1, &end, 10);
            if (ws[1] && !*end && !errno) {
                if (v < -1 || v > INT32_MAX) {
                    dv_user_error("%s:%lld: label %ld out of range (-1 or 0..2^31-1)", list,
                                  (long long)lineno, v);
                    status = DV_ERR_FORMAT;
                    break;
                }
                label = (int32_t)v;
                char *e2 = ws;
                while (e2 > p && (e2[-1] == ' ' || e2[-1] == '\t'))
                    e2--;
                *e2 = 0;
                if (label > maxl) maxl = label;
            }
        }
        status = add_input_(in, strdup(p), label, &cap);
    }
    if (status == DV_OK && ferror(f)) {
        dv_user_error("%s: read error (%s)", list, strerror(errno));
        status = DV_ERR_IO;
    }
    free(line);
    fclose(f);
    in->layout = DV_PACK_LIST;
    in->num_classes = maxl + 1;
    return status;
}

static int inputs_idx_(inputs_ *in, const dv_pack_opts *o) {
    DV_TRY(dv_idx_read(o->idx_images, 3, &in->im));
    if (o->idx_labels) {
        DV_TRY(dv_idx_read(o->idx_labels, 1, &in->lb));
        if (in->lb.dims[0] != in->im.dims[0]) {
            dv_user_error("%s has %u labels but %s has %u images", o->idx_labels, in->lb.dims[0],
                          o->idx_images, in->im.dims[0]);
            return DV_ERR_FORMAT;
        }
    }
    if (in->im.dims[1] == 0 || in->im.dims[2] == 0) {
        dv_user_error("%s: images of size %ux%u", o->idx_images, in->im.dims[1], in->im.dims[2]);
        return DV_ERR_FORMAT;
    }
    in->layout = DV_PACK_IDX;
    in->n = in->im.dims[0];
    DV_CHECK_ALLOC(in->labels = malloc((size_t)(in->n ? in->n : 1) * sizeof *in->labels));
    int maxl = -1;
    for (int64_t i = 0; i < in->n; i++) {
        in->labels[i] = in->lb.data ? in->lb.data[i] : -1;
        if (in->labels[i] > maxl) maxl = in->labels[i];
    }
    in->num_classes = maxl + 1;
    return DV_OK;
}

/* ---- the packer -------------------------------------------------------------------------- */

typedef struct {
    int64_t index, id_begin, id_end, images, skipped;
    int kept; /* 1: complete from an earlier run */
    dv_h5img_layout layout;
    int height, width, channels;
} shard_rec_;

typedef struct {
    uint64_t id;
    char *path, *reason;
} skip_rec_;

typedef struct {
    const dv_pack_opts *o;
    inputs_ in;
    char *list_base;
    dv_decoder *dec;
    dv_image img, tmp;
    uint8_t *file;
    size_t file_cap, file_len;
    int processed; /* pixels differ from the source bytes (resize/crop, or idx) */
    uint64_t opts_hash;
    /* per shard, pass 1 */
    int64_t slots;
    unsigned char *ok;
    int *hh, *ww;
    uint8_t **cache;
    int64_t cache_used;
    int cache_on;
    /* manifest */
    shard_rec_ *shards;
    int64_t nshards;
    skip_rec_ *skips;
    int64_t nskips, skips_cap;
    dv_pack_result *res;
    /* progress */
    int progress;
    double t0, t_last;
    int64_t done_inputs, task_inputs;
    FILE *log;
} packer_;

static void progress_clear_(packer_ *p) {
    if (p->progress) {
        fputs("\r\033[K", stderr);
        fflush(stderr);
    }
}

static void progress_(packer_ *p, int64_t shard_i, int64_t shard_n, int force) {
    if (!p->progress) return;
    double now = dv_now();
    if (!force && now - p->t_last < 0.2) return;
    p->t_last = now;
    double el = now - p->t0;
    fprintf(stderr,
            "\r\033[Kdinov2-pack: shard %lld/%lld  inputs %lld/%lld  skipped %lld  %.0f img/s",
            (long long)shard_i, (long long)shard_n, (long long)p->done_inputs,
            (long long)p->task_inputs, (long long)p->res->skipped,
            el > 0 ? (double)p->done_inputs / el : 0.0);
    fflush(stderr);
}

static void info_(packer_ *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void info_(packer_ *p, const char *fmt, ...) {
    if (p->o->quiet) return;
    progress_clear_(p);
    va_list ap;
    va_start(ap, fmt);
    fputs("dinov2-pack: ", p->log);
    vfprintf(p->log, fmt, ap);
    fputc('\n', p->log);
    fflush(p->log);
    va_end(ap);
}

/* Path to open for input id (malloc'd), and the name shown in messages and stored. */
static char *open_path_(packer_ *p, int64_t id) { return join_(p->in.base, p->in.rel.v[id]); }

static int record_skip_(packer_ *p, uint64_t id, const char *path, const char *reason) {
    if (p->nskips == p->skips_cap) {
        int64_t cap = p->skips_cap ? 2 * p->skips_cap : 64;
        skip_rec_ *s = realloc(p->skips, (size_t)cap * sizeof *s);
        DV_CHECK_ALLOC(s);
        p->skips = s;
        p->skips_cap = cap;
    }
    skip_rec_ *r = &p->skips[p->nskips];
    r->id = id;
    r->path = strdup(path ? path : "");
    r->reason = strdup(reason ? reason : "");
    if (!r->path || !r->reason) {
        free(r->path);
        free(r->reason);
        return DV_ERR(DV_ERR_NOMEM, "out of memory: skipped list");
    }
    p->nskips++;
    return DV_OK;
}

/* Read a whole file into p->file. *reason set (and DV_OK returned) when unreadable. */
static int read_file_(packer_ *p, const char *path, char *reason, size_t rlen) {
    reason[0] = 0;
    p->file_len = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        snprintf(reason, rlen, "cannot read (%s)", strerror(errno));
        return DV_OK;
    }
    struct stat st;
    int status = DV_OK;
    if (fstat(fd, &st) != 0) {
        snprintf(reason, rlen, "cannot read (%s)", strerror(errno));
    } else if (!S_ISREG(st.st_mode)) {
        snprintf(reason, rlen, "not a regular file");
    } else if (st.st_size == 0) {
        snprintf(reason, rlen, "empty file");
    } else if (st.st_size > MAX_FILE_BYTES_) {
        snprintf(reason, rlen, "file too large (%lld bytes)", (long long)st.st_size);
    } else {
        size_t n = (size_t)st.st_size;
        if (n > p->file_cap) {
            uint8_t *b = realloc(p->file, n);
            if (!b) {
                close(fd);
                return DV_ERR(DV_ERR_NOMEM, "out of memory: %s (%zu bytes)", path, n);
            }
            p->file = b;
            p->file_cap = n;
        }
        size_t got = 0;
        int rerr = 0;
        while (got < n) {
            ssize_t r = read(fd, p->file + got, n - got);
            if (r < 0 && errno == EINTR) continue;
            if (r < 0) rerr = errno;
            if (r <= 0) break;
            got += (size_t)r;
        }
        if (got < n)
            snprintf(reason, rlen, "read error (%s)",
                     rerr ? strerror(rerr) : "file shrank while reading");
        else
            p->file_len = n;
    }
    close(fd);
    return status;
}

/* Resize / crop p->img in place according to the options. */
static int postprocess_(packer_ *p) {
    const dv_pack_opts *o = p->o;
    if (o->resize_short > 0) {
        int oh, ow;
        dv_resize_short_size(p->img.height, p->img.width, o->resize_short, &oh, &ow);
        if (oh < 1) oh = 1;
        if (ow < 1) ow = 1;
        if (oh != p->img.height || ow != p->img.width) {
            DV_TRY(dv_image_reserve(&p->tmp, oh, ow, p->img.channels));
            dv_resample_ws ws = {0};
            int rc = dv_resample_bicubic(p->img.pixels, p->img.height, p->img.width,
                                         p->img.channels, (size_t)p->img.width * p->img.channels,
                                         p->tmp.pixels, oh, ow, &ws);
            dv_resample_ws_free(&ws);
            DV_TRY(rc);
            dv_image t = p->img;
            p->img = p->tmp;
            p->tmp = t;
        }
    }
    if (o->center_crop > 0) {
        const int c = o->center_crop, ch = p->img.channels;
        if (p->img.height < c || p->img.width < c)
            return DV_ERR(DV_ERR_ARG, "center crop %d larger than the resized image %dx%d", c,
                          p->img.height, p->img.width);
        int top, left;
        dv_center_crop_offsets(p->img.height, p->img.width, c, c, &top, &left);
        DV_TRY(dv_image_reserve(&p->tmp, c, c, ch));
        for (int y = 0; y < c; y++)
            memcpy(p->tmp.pixels + (size_t)y * c * ch,
                   p->img.pixels + ((size_t)(top + y) * p->img.width + left) * ch, (size_t)c * ch);
        dv_image t = p->img;
        p->img = p->tmp;
        p->tmp = t;
    }
    return DV_OK;
}

/* Load input id into p->img (decoded, converted, resized). *ok = 0 with reason when it is
 * skipped; the warning line is printed here. Only internal failures return an error. */
static int load_(packer_ *p, int64_t id, int *ok, char *reason, size_t rlen, int announce) {
    *ok = 0;
    reason[0] = 0;
    if (p->in.layout == DV_PACK_IDX) {
        const int h = (int)p->in.im.dims[1], w = (int)p->in.im.dims[2], c = p->o->channels;
        DV_TRY(dv_image_reserve(&p->img, h, w, c));
        const uint8_t *src = p->in.im.data + (size_t)id * h * w;
        if (c == 1)
            memcpy(p->img.pixels, src, (size_t)h * w);
        else
            for (size_t i = 0; i < (size_t)h * w; i++)
                p->img.pixels[3 * i] = p->img.pixels[3 * i + 1] = p->img.pixels[3 * i + 2] = src[i];
        DV_TRY(postprocess_(p));
        *ok = 1;
        return DV_OK;
    }
    char *path = open_path_(p, id);
    DV_CHECK_ALLOC(path);
    int status = read_file_(p, path, reason, rlen);
    if (status == DV_OK && !reason[0]) {
        dv_decode_opts dopt = {.channels = p->o->channels, .strict = p->o->strict};
        char msg[DV_DECODE_MSG];
        status = dv_decode(p->dec, p->file, p->file_len, path, &dopt, &p->img, msg, sizeof msg);
        size_t pl = strlen(path);
        const char *text = strncmp(msg, path, pl) == 0 && msg[pl] == ':' ? msg + pl + 2 : msg;
        if (status == DV_ERR_FORMAT) {
            snprintf(reason, rlen, "%s", text);
            status = DV_OK;
        } else if (status == DV_OK && msg[0] && announce) {
            progress_clear_(p);
            dv_user_warning("%s; kept", msg);
            p->res->warnings++;
        }
    }
    if (status == DV_OK && !reason[0]) {
        status = postprocess_(p);
        if (status == DV_OK) *ok = 1;
    }
    if (status == DV_OK && !*ok && announce) {
        progress_clear_(p);
        dv_user_warning("%s: %s; skipped", path, reason);
    }
    free(path);
    return status;
}

static uint64_t shard_hash_(packer_ *p, int64_t id0, int64_t id1) {
    uint64_t h = fnv_(UINT64_C(0xcbf29ce484222325), &p->opts_hash, sizeof p->opts_hash);
    for (int64_t id = id0; id < id1; id++) {
        int32_t l = p->in.labels[id];
        if (p->in.layout == DV_PACK_IDX) {
            h = fnv_(h, &id, sizeof id);
        } else {
            const char *r = p->in.rel.v[id];
            h = fnv_(h, r, strlen(r) + 1);
        }
        h = fnv_(h, &l, sizeof l);
    }
    return h;
}

/* A complete shard from an earlier run? Fills rec and the manifest's skipped list. */
static int try_keep_(packer_ *p, const char *path, int64_t k, int64_t id0, int64_t id1,
                     uint64_t hash, shard_rec_ *rec, int *kept) {
    *kept = 0;
    if (access(path, F_OK) != 0) return DV_OK;
    dv_h5img r;
    char why[512];
    if (dv_h5img_probe(path, &r, why, sizeof why) != DV_OK) {
        progress_clear_(p);
        dv_user_warning("%s; rewriting it", why);
        return DV_OK;
    }
    uint64_t b = 0, e = 0, hh = 0;
    int pb = 0, pe = 0, ph = 0;
    int64_t ns = 0;
    uint64_t *sids = NULL;
    char **spaths = NULL, **sreasons = NULL;
    int status = dv_h5img_get_attr_u64(&r, "id_begin", &b, &pb);
    if (status == DV_OK) status = dv_h5img_get_attr_u64(&r, "id_end", &e, &pe);
    if (status == DV_OK) status = dv_h5img_get_attr_u64(&r, "inputs_hash", &hh, &ph);
    if (status == DV_OK) status = dv_h5img_read_skipped(&r, &ns, &sids, &spaths, &sreasons);
    int match = status == DV_OK && pb && pe && ph && b == (uint64_t)id0 && e == (uint64_t)id1 &&
                hh == hash && r.count + ns == id1 - id0;
    if (match) {
        rec->index = k;
        rec->id_begin = id0;
        rec->id_end = id1;
        rec->images = r.count;
        rec->skipped = ns;
        rec->kept = 1;
        rec->layout = r.layout;
        rec->height = r.height;
        rec->width = r.width;
        rec->channels = r.channels;
        for (int64_t i = 0; i < ns && status == DV_OK; i++)
            status = record_skip_(p, sids[i], spaths[i], sreasons[i]);
        *kept = status == DV_OK;
    } else {
        progress_clear_(p);
        dv_user_warning("%s: does not match this pack (other inputs, options or shard size); "
                        "rewriting it",
                        path);
    }
    free(sids);
    dv_strv_free(spaths, ns, 1);
    dv_strv_free(sreasons, ns, 1);
    dv_h5img_close(&r);
    return status;
}

static int ensure_slots_(packer_ *p, int64_t n) {
    if (n <= p->slots) return DV_OK;
    unsigned char *ok = realloc(p->ok, (size_t)n);
    DV_CHECK_ALLOC(ok);
    p->ok = ok;
    int *hh = realloc(p->hh, (size_t)n * sizeof *hh);
    DV_CHECK_ALLOC(hh);
    p->hh = hh;
    int *ww = realloc(p->ww, (size_t)n * sizeof *ww);
    DV_CHECK_ALLOC(ww);
    p->ww = ww;
    uint8_t **c = realloc(p->cache, (size_t)n * sizeof *c);
    DV_CHECK_ALLOC(c);
    for (int64_t i = p->slots; i < n; i++)
        c[i] = NULL;
    p->cache = c;
    p->slots = n;
    return DV_OK;
}

static void cache_drop_(packer_ *p, int64_t n) {
    for (int64_t i = 0; i < n && i < p->slots; i++) {
        free(p->cache[i]);
        p->cache[i] = NULL;
    }
    p->cache_used = 0;
}

static int write_shard_(packer_ *p, const char *path, int64_t k, int64_t id0, int64_t id1,
                        uint64_t hash, int64_t nshards, shard_rec_ *rec) {
    const dv_pack_opts *o = p->o;
    const int64_t n = id1 - id0;
    char reason[DV_DECODE_MSG + 64];
    DV_TRY(ensure_slots_(p, n));
    /* pass 1: validate every input, learn the sizes, keep pixels while the budget allows */
    p->cache_on = o->cache_bytes > 0;
    p->cache_used = 0;
    int uniform = 1, h0 = -1, w0 = -1;
    int64_t nok = 0;
    int status = DV_OK;
    for (int64_t i = 0; i < n && status == DV_OK; i++) {
        int ok;
        status = load_(p, id0 + i, &ok, reason, sizeof reason, 1);
        if (status != DV_OK) break;
        p->ok[i] = (unsigned char)ok;
        p->done_inputs++;
        if (!ok) {
            p->res->skipped++;
            char *op = p->in.layout == DV_PACK_IDX ? NULL : p->in.rel.v[id0 + i];
            status = record_skip_(p, (uint64_t)(id0 + i), op, reason);
            progress_(p, k + 1, nshards, 0);
            continue;
        }
        nok++;
        p->hh[i] = p->img.height;
        p->ww[i] = p->img.width;
        if (h0 < 0) {
            h0 = p->img.height;
            w0 = p->img.width;
        } else if (h0 != p->img.height || w0 != p->img.width) {
            uniform = 0;
        }
        if (!uniform && !p->processed && p->cache_on) { /* original bytes will be stored */
            cache_drop_(p, i);
            p->cache_on = 0;
        }
        const size_t bytes = (size_t)p->img.height * p->img.width * p->img.channels;
        if (p->cache_on && p->cache_used + (int64_t)bytes <= o->cache_bytes) {
            p->cache[i] = malloc(bytes ? bytes : 1);
            if (p->cache[i]) {
                memcpy(p->cache[i], p->img.pixels, bytes);
                p->cache_used += (int64_t)bytes;
            }
        } else if (p->cache_on) {
            cache_drop_(p, i);
            p->cache_on = 0;
        }
        progress_(p, k + 1, nshards, 0);
    }
    if (status != DV_OK) {
        cache_drop_(p, n);
        return status;
    }
    /* pass 2: write */
    const int raw = !o->encoded && uniform && nok > 0;
    dv_h5img_spec sp = {0};
    sp.layout = raw ? DV_H5IMG_RAW : DV_H5IMG_ENCODED;
    sp.height = raw ? h0 : 0;
    sp.width = raw ? w0 : 0;
    sp.channels = raw ? o->channels : 0;
    sp.num_classes = p->in.num_classes;
    sp.class_names = (const char *const *)p->in.classes.v;
    sp.num_class_names = (int)p->in.classes.n;
    sp.with_paths = p->in.layout != DV_PACK_IDX;
    sp.deflate = o->deflate;
    dv_h5img_writer *w = NULL;
    status = dv_h5img_create(path, &sp, &w);
    if (status != DV_OK) {
        cache_drop_(p, n);
        return status;
    }
    int64_t written = 0, skipped = 0;
    for (int64_t i = 0; i < n && status == DV_OK; i++) {
        const int64_t id = id0 + i;
        const char *rel = p->in.layout == DV_PACK_IDX ? NULL : p->in.rel.v[id];
        if (!p->ok[i]) {
            /* the reason was recorded in pass 1: find it in the manifest list */
            const char *why = "";
            for (int64_t s = p->nskips - 1; s >= 0; s--)
                if (p->skips[s].id == (uint64_t)id) {
                    why = p->skips[s].reason;
                    break;
                }
            status = dv_h5img_add_skipped(w, (uint64_t)id, rel, why);
            skipped++;
            continue;
        }
        const int32_t label = p->in.labels[id];
        const uint8_t *pix = p->cache[i];
        const int need_pixels = raw || p->processed;
        if (need_pixels && !pix) {
            int ok;
            status = load_(p, id, &ok, reason, sizeof reason, 0);
            if (status != DV_OK) break;
            if (!ok || p->img.height != p->hh[i] || p->img.width != p->ww[i]) {
                char *op = p->in.layout == DV_PACK_IDX ? NULL : open_path_(p, id);
                progress_clear_(p);
                dv_user_warning("%s: changed while packing (%s); skipped", op ? op : "?",
                                ok ? "size differs" : reason);
                free(op);
                p->res->skipped++;
                status = record_skip_(p, (uint64_t)id, rel, "changed while packing");
                if (status == DV_OK)
                    status = dv_h5img_add_skipped(w, (uint64_t)id, rel, "changed while packing");
                skipped++;
                continue;
            }
            pix = p->img.pixels;
        }
        if (raw) {
            status = dv_h5img_append_raw(w, pix, label, (uint64_t)id, rel);
        } else if (p->processed) {
            dv_image view = {.height = p->hh[i],
                             .width = p->ww[i],
                             .channels = o->channels,
                             .pixels = (unsigned char *)pix};
            unsigned char *png = NULL;
            size_t pn = 0;
            status = dv_encode_png(&view, &png, &pn);
            if (status == DV_OK)
                status = dv_h5img_append_encoded(w, png, pn, label, (uint64_t)id, rel);
            free(png);
        } else {
            char *op = open_path_(p, id);
            if (!op) {
                status = DV_ERR(DV_ERR_NOMEM, "out of memory");
                break;
            }
            status = read_file_(p, op, reason, sizeof reason);
            if (status == DV_OK && reason[0]) {
                progress_clear_(p);
                dv_user_warning("%s: changed while packing (%s); skipped", op, reason);
                p->res->skipped++;
                status = record_skip_(p, (uint64_t)id, rel, "changed while packing");
                if (status == DV_OK)
                    status = dv_h5img_add_skipped(w, (uint64_t)id, rel, "changed while packing");
                skipped++;
            } else if (status == DV_OK) {
                status = dv_h5img_append_encoded(w, p->file, p->file_len, label, (uint64_t)id, rel);
            }
            free(op);
            if (reason[0]) continue;
        }
        if (status == DV_OK) written++;
    }
    cache_drop_(p, n);
    if (status == DV_OK) status = dv_h5img_set_attr_u64(w, "id_begin", (uint64_t)id0);
    if (status == DV_OK) status = dv_h5img_set_attr_u64(w, "id_end", (uint64_t)id1);
    if (status == DV_OK) status = dv_h5img_set_attr_u64(w, "shard_index", (uint64_t)k);
    if (status == DV_OK) status = dv_h5img_set_attr_u64(w, "num_shards", (uint64_t)nshards);
    if (status == DV_OK) status = dv_h5img_set_attr_u64(w, "num_inputs", (uint64_t)p->in.n);
    if (status == DV_OK) status = dv_h5img_set_attr_u64(w, "inputs_hash", hash);
    if (status == DV_OK)
        status = dv_h5img_set_attr_str(w, "input_layout", dv_pack_layout_name(p->in.layout));
    if (status == DV_OK) status = dv_h5img_set_attr_str(w, "producer", "dinov2-pack");
    if (status != DV_OK) {
        dv_h5img_discard(w);
        return status;
    }
    DV_TRY(dv_h5img_commit(w));
    rec->index = k;
    rec->id_begin = id0;
    rec->id_end = id1;
    rec->images = written;
    rec->skipped = skipped;
    rec->kept = 0;
    rec->layout = sp.layout;
    rec->height = sp.height;
    rec->width = sp.width;
    rec->channels = sp.channels;
    return DV_OK;
}

/* ---- manifest ---------------------------------------------------------------------------- */

static void json_str_(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p == '\n')
            fputs("\\n", f);
        else if (*p == '\t')
            fputs("\\t", f);
        else if (*p < 0x20)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

static const char *base_name_(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

static int write_manifest_(packer_ *p) {
    const dv_pack_opts *o = p->o;
    char path[4096], tmp[4200];
    DV_TRY(dv_pack_manifest_path(o, o->task_id, path, sizeof path));
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    DV_CHECK_IO(f != NULL, tmp);
    const dv_pack_result *r = p->res;
    fprintf(f, "{\n  \"format\": \"dinov2c-pack-manifest\",\n  \"format_version\": %d,\n",
            PACK_VERSION_);
    fprintf(f, "  \"program\": \"dinov2-pack\",\n  \"task_id\": %d,\n  \"num_tasks\": %d,\n",
            o->task_id, o->num_tasks);
    fprintf(f, "  \"input\": {\"layout\": \"%s\", \"path\": ", dv_pack_layout_name(p->in.layout));
    json_str_(f, p->in.layout == DV_PACK_IDX ? o->idx_images : o->input);
    if (p->in.layout == DV_PACK_IDX) {
        fputs(", \"labels\": ", f);
        if (o->idx_labels)
            json_str_(f, o->idx_labels);
        else
            fputs("null", f);
    }
    fprintf(f, ", \"num_inputs\": %lld, \"num_classes\": %d, \"class_names\": [",
            (long long)p->in.n, p->in.num_classes);
    for (int64_t c = 0; c < p->in.classes.n; c++) {
        if (c) fputs(", ", f);
        json_str_(f, p->in.classes.v[c]);
    }
    fputs("]},\n  \"options\": {\"output\": ", f);
    json_str_(f, o->output);
    fputs(", \"prefix\": ", f);
    json_str_(f, o->prefix);
    fprintf(f,
            ", \"shard_size\": %lld, \"channels\": %d, \"encoded\": %s, \"resize_short\": %d, "
            "\"center_crop\": %d, \"deflate\": %d, \"strict\": %s},\n",
            (long long)o->shard_size, o->channels, o->encoded ? "true" : "false", o->resize_short,
            o->center_crop, o->deflate, o->strict ? "true" : "false");
    fprintf(f,
            "  \"num_shards\": %lld,\n  \"shard_begin\": %lld,\n  \"shard_end\": %lld,\n"
            "  \"counts\": {\"inputs\": %lld, \"images\": %lld, \"skipped\": %lld, "
            "\"warnings\": %lld, \"shards_written\": %lld, \"shards_kept\": %lld},\n",
            (long long)r->num_shards, (long long)r->shard_begin, (long long)r->shard_end,
            (long long)p->task_inputs, (long long)r->images, (long long)r->skipped,
            (long long)r->warnings, (long long)r->shards_written, (long long)r->shards_kept);
    fputs("  \"shards\": [", f);
    for (int64_t i = 0; i < p->nshards; i++) {
        const shard_rec_ *s = &p->shards[i];
        char sp[4096];
        dv_pack_shard_path(o, s->index, sp, sizeof sp);
        fprintf(f, "%s\n    {\"index\": %lld, \"file\": ", i ? "," : "", (long long)s->index);
        json_str_(f, base_name_(sp));
        fprintf(f,
                ", \"id_begin\": %lld, \"id_end\": %lld, \"images\": %lld, \"skipped\": %lld, "
                "\"layout\": \"%s\"",
                (long long)s->id_begin, (long long)s->id_end, (long long)s->images,
                (long long)s->skipped, dv_h5img_layout_name(s->layout));
        if (s->layout == DV_H5IMG_RAW)
            fprintf(f, ", \"shape\": [%lld, %d, %d, %d]", (long long)s->images, s->height, s->width,
                    s->channels);
        fprintf(f, ", \"status\": \"%s\"}", s->kept ? "kept" : "written");
    }
    fputs(p->nshards ? "\n  ],\n" : "],\n", f);
    fputs("  \"skipped\": [", f);
    for (int64_t i = 0; i < p->nskips; i++) {
        fprintf(f, "%s\n    {\"id\": %" PRIu64 ", \"path\": ", i ? "," : "", p->skips[i].id);
        json_str_(f, p->skips[i].path);
        fputs(", \"reason\": ", f);
        json_str_(f, p->skips[i].reason);
        fputc('}', f);
    }
    fputs(p->nskips ? "\n  ],\n" : "],\n", f);
    fputs("  \"complete\": true\n}\n", f);
    int bad = ferror(f);
    bad |= fflush(f) != 0;
    bad |= fsync(fileno(f)) != 0;
    bad |= fclose(f) != 0;
    if (bad) {
        unlink(tmp);
        DV_CHECK_IO(0, tmp);
    }
    DV_CHECK_IO(rename(tmp, path) == 0, path);
    return DV_OK;
}

/* ---- driver ------------------------------------------------------------------------------ */

int dv_pack_shard_path(const dv_pack_opts *o, int64_t index, char *buf, size_t buflen) {
    int n = snprintf(buf, buflen, "%s/%s-%05lld.h5", o->output, o->prefix, (long long)index);
    if (n < 0 || (size_t)n >= buflen) return DV_ERR(DV_ERR_ARG, "output path too long");
    return DV_OK;
}

int dv_pack_manifest_path(const dv_pack_opts *o, int task, char *buf, size_t buflen) {
    int n = snprintf(buf, buflen, "%s/%s-manifest-%d.json", o->output, o->prefix, task);
    if (n < 0 || (size_t)n >= buflen) return DV_ERR(DV_ERR_ARG, "output path too long");
    return DV_OK;
}

static int mkdir_p_(const char *dir) {
    char *d = strdup(dir);
    DV_CHECK_ALLOC(d);
    size_t len = strlen(d);
    while (len > 1 && d[len - 1] == '/')
        d[--len] = 0;
    for (char *q = d + 1;; q++) {
        if (*q == '/' || *q == 0) {
            char c = *q;
            *q = 0;
            struct stat st;
            if (stat(d, &st) != 0) {
                if (mkdir(d, 0777) != 0 && errno != EEXIST) {
                    dv_user_error("--output %s: cannot create folder %s (%s)", dir, d,
                                  strerror(errno));
                    free(d);
                    return DV_ERR_IO;
                }
            } else if (!S_ISDIR(st.st_mode)) {
                dv_user_error("--output %s: %s is not a folder", dir, d);
                free(d);
                return DV_ERR_IO;
            }
            *q = c;
            if (!c) break;
        }
    }
    free(d);
    return DV_OK;
}

static int check_output_(const char *dir) {
    DV_TRY(mkdir_p_(dir));
    char probe[4200];
    snprintf(probe, sizeof probe, "%s/.dinov2-pack-probe-%ld", dir, (long)getpid());
    int fd = open(probe, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        dv_user_error("--output %s: folder is not writable (%s)", dir, strerror(errno));
        return DV_ERR_IO;
    }
    close(fd);
    unlink(probe);
    return DV_OK;
}

static int check_opts_(const dv_pack_opts *o) {
    if (!o->output || !*o->output) {
        dv_user_error("--output DIR is required (see dinov2-pack --help)");
        return DV_ERR_ARG;
    }
    if (o->idx_images && o->input) {
        dv_user_error("give either --input or --idx-images, not both");
        return DV_ERR_ARG;
    }
    if (!o->idx_images && !o->input) {
        dv_user_error("an input is required: --input DIR|LIST or --idx-images FILE");
        return DV_ERR_ARG;
    }
    if (o->layout == DV_PACK_IDX && !o->idx_images) {
        dv_user_error("--layout idx needs --idx-images FILE");
        return DV_ERR_ARG;
    }
    if (o->idx_images && o->layout != DV_PACK_AUTO && o->layout != DV_PACK_IDX) {
        dv_user_error("--idx-images goes with --layout idx, not %s",
                      dv_pack_layout_name(o->layout));
        return DV_ERR_ARG;
    }
    if (o->idx_labels && !o->idx_images) {
        dv_user_error("--idx-labels needs --idx-images");
        return DV_ERR_ARG;
    }
    if (o->shard_size < 1) {
        dv_user_error("--shard-size must be at least 1");
        return DV_ERR_ARG;
    }
    if (o->channels != 1 && o->channels != 3) {
        dv_user_error("--channels must be 3 or 1");
        return DV_ERR_ARG;
    }
    if (o->center_crop > 0 && (o->resize_short <= 0 || o->center_crop > o->resize_short)) {
        dv_user_error("--center-crop C needs --resize-short S with C <= S");
        return DV_ERR_ARG;
    }
    if (o->deflate < 0 || o->deflate > 9) {
        dv_user_error("--deflate must be in 0..9");
        return DV_ERR_ARG;
    }
    if (o->num_tasks < 1 || o->task_id < 0 || o->task_id >= o->num_tasks) {
        dv_user_error("task %d is outside 0..%d", o->task_id, o->num_tasks - 1);
        return DV_ERR_ARG;
    }
    if (!o->prefix || !*o->prefix || strchr(o->prefix, '/')) {
        dv_user_error("--prefix must be a non-empty name without '/'");
        return DV_ERR_ARG;
    }
    return DV_OK;
}

static int load_inputs_(packer_ *p) {
    const dv_pack_opts *o = p->o;
    if (o->idx_images) return inputs_idx_(&p->in, o);
    struct stat st;
    if (stat(o->input, &st) != 0) {
        dv_user_error("--input %s: %s", o->input, strerror(errno));
        return DV_ERR_IO;
    }
    const int is_dir = S_ISDIR(st.st_mode);
    dv_pack_layout l = o->layout;
    if (l == DV_PACK_AUTO && !is_dir) l = DV_PACK_LIST;
    if (l == DV_PACK_LIST) {
        if (is_dir) {
            dv_user_error("--input %s: is a folder, but --layout list needs a text file", o->input);
            return DV_ERR_ARG;
        }
        DV_TRY(inputs_list_(&p->in, o->input, &p->list_base));
        p->in.base = p->list_base;
        return DV_OK;
    }
    if (!is_dir) {
        dv_user_error("--input %s: not a folder (--layout %s)", o->input, dv_pack_layout_name(l));
        return DV_ERR_ARG;
    }
    struct stat os;
    if (stat(o->output, &os) == 0) {
        p->in.skip_dev = os.st_dev;
        p->in.skip_ino = os.st_ino;
        p->in.have_skip = 1;
    }
    DV_TRY(inputs_dir_(&p->in, o->input, l));
    p->in.base = o->input;
    return DV_OK;
}

static void packer_free_(packer_ *p) {
    inputs_free_(&p->in);
    free(p->list_base);
    dv_decoder_destroy(p->dec);
    dv_image_free(&p->img);
    dv_image_free(&p->tmp);
    free(p->file);
    if (p->cache) cache_drop_(p, p->slots);
    free(p->cache);
    free(p->ok);
    free(p->hh);
    free(p->ww);
    free(p->shards);
    for (int64_t i = 0; i < p->nskips; i++) {
        free(p->skips[i].path);
        free(p->skips[i].reason);
    }
    free(p->skips);
}

static int run_(packer_ *p) {
    const dv_pack_opts *o = p->o;
    dv_pack_result *res = p->res;
    DV_TRY(check_opts_(o));
    DV_TRY(load_inputs_(p));
    DV_TRY(check_output_(o->output));
    DV_TRY(dv_decoder_create(&p->dec));
    p->processed = o->resize_short > 0 || o->center_crop > 0 || p->in.layout == DV_PACK_IDX;
    {
        char buf[256];
        int n = snprintf(buf, sizeof buf,
                         "dinov2-pack/%d layout=%s channels=%d encoded=%d "
                         "resize_short=%d center_crop=%d strict=%d",
                         PACK_VERSION_, dv_pack_layout_name(p->in.layout), o->channels, o->encoded,
                         o->resize_short, o->center_crop, o->strict);
        p->opts_hash = fnv_(UINT64_C(0xcbf29ce484222325), buf, (size_t)n);
    }
    const int64_t N = p->in.n, S = o->shard_size;
    const int64_t ns = (N + S - 1) / S;
    const int64_t k0 = ns * o->task_id / o->num_tasks, k1 = ns * (o->task_id + 1) / o->num_tasks;
    res->inputs = N;
    res->num_shards = ns;
    res->shard_begin = k0;
    res->shard_end = k1;
    res->num_classes = p->in.num_classes;
    p->task_inputs = (k1 * S < N ? k1 * S : N) - k0 * S;
    if (p->task_inputs < 0) p->task_inputs = 0;
    if (N == 0) dv_user_warning("%s: no input files found", o->input ? o->input : o->idx_images);
    info_(p,
          "%lld inputs (%s layout, %d classes) -> %lld shards of %lld; task %d of %d: shards "
          "[%lld, %lld)",
          (long long)N, dv_pack_layout_name(p->in.layout), p->in.num_classes, (long long)ns,
          (long long)S, o->task_id, o->num_tasks, (long long)k0, (long long)k1);
    DV_CHECK_ALLOC(p->shards = calloc((size_t)(k1 > k0 ? k1 - k0 : 1), sizeof *p->shards));
    p->t0 = dv_now();
    for (int64_t k = k0; k < k1; k++) {
        const int64_t id0 = k * S, id1 = (k + 1) * S < N ? (k + 1) * S : N;
        char path[4096];
        DV_TRY(dv_pack_shard_path(o, k, path, sizeof path));
        const uint64_t hash = shard_hash_(p, id0, id1);
        shard_rec_ *rec = &p->shards[p->nshards];
        int kept = 0;
        DV_TRY(try_keep_(p, path, k, id0, id1, hash, rec, &kept));
        if (kept) {
            res->shards_kept++;
            res->skipped += rec->skipped;
            p->done_inputs += id1 - id0;
            info_(p, "%s: complete from an earlier run (%lld images, %lld skipped); kept",
                  base_name_(path), (long long)rec->images, (long long)rec->skipped);
        } else {
            DV_TRY(write_shard_(p, path, k, id0, id1, hash, ns, rec));
            res->shards_written++;
            if (rec->layout == DV_H5IMG_RAW)
                info_(p, "%s: %lld images, raw %dx%dx%d, %lld skipped", base_name_(path),
                      (long long)rec->images, rec->height, rec->width, rec->channels,
                      (long long)rec->skipped);
            else
                info_(p, "%s: %lld images, encoded, %lld skipped", base_name_(path),
                      (long long)rec->images, (long long)rec->skipped);
        }
        res->images += rec->images;
        p->nshards++;
        progress_(p, k + 1, ns, 1);
    }
    progress_clear_(p);
    DV_TRY(write_manifest_(p));
    char mpath[4096];
    dv_pack_manifest_path(o, o->task_id, mpath, sizeof mpath);
    info_(p, "task %d: %lld shards (%lld written, %lld kept), %lld images, %lld skipped; %s",
          o->task_id, (long long)(k1 - k0), (long long)res->shards_written,
          (long long)res->shards_kept, (long long)res->images, (long long)res->skipped, mpath);
    return DV_OK;
}

int dv_pack_run(const dv_pack_opts *o, dv_pack_result *res) {
    packer_ p;
    memset(&p, 0, sizeof p);
    memset(res, 0, sizeof *res);
    p.o = o;
    p.res = res;
    p.log = o->log ? o->log : stdout;
    p.progress = o->progress > 0 || (o->progress < 0 && isatty(STDERR_FILENO));
    int s = run_(&p);
    if (s != DV_OK) progress_clear_(&p);
    packer_free_(&p);
    return s;
}
