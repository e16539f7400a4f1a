/* loader — see loader.h and doc/loader.md. */
#include "loader.h"

#include <dirent.h>
#include <errno.h>
#include <glob.h>
#include <hdf5.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "decode.h"
#include "err.h"
#include "h5images.h"
#include "h5util.h"
#include "masking.h"
#include "rng.h"

#define MSG_LEN 1024

/* The HDF5 library (Debian's parallel build is not thread-safe) is process-wide state, so its
 * lock is too: every loader's workers, and callers through dv_loader_hdf5_lock, share it. It is
 * recursive, so a caller holding it may still call dv_loader_next with num_workers = 0. */
static pthread_once_t h5_once_ = PTHREAD_ONCE_INIT;
static pthread_mutex_t h5_mu_;

static void h5_lock_init_(void) {
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&h5_mu_, &a);
    pthread_mutexattr_destroy(&a);
}

void dv_loader_hdf5_lock(void) {
    pthread_once(&h5_once_, h5_lock_init_);
    pthread_mutex_lock(&h5_mu_);
}

void dv_loader_hdf5_unlock(void) { pthread_mutex_unlock(&h5_mu_); }

/* ---------------------------------------------------------------------------------------- */
/* state                                                                                      */

typedef struct {
    char *path;
    int64_t start, count; /* dataset positions [start, start + count) */
    int layout;           /* dv_h5img_layout, as scanned at open */
    int has_labels;       /* 0: /labels missing, labels read as -1 */
    /* open state: touched only under the HDF5 lock */
    int open;
    dv_h5img r;
    uint64_t *ids;   /* (count) /ids, read at open */
    int32_t *labels; /* (count) /labels, or NULL */
    uint64_t last_use;
} shard_;

/* One batch buffer of the ring. */
typedef struct {
    dv_batch b;
    dv_mask_batch m;  /* (2B, N): b.masks, b.mask_indices, b.mask_weights live here */
    int64_t *gidx;    /* (B) dataset positions of the images */
    int64_t seq;      /* global batch counter held; -1 none */
    int done;         /* items finished (B images + 1 mask item) */
    int status;       /* first error of an item */
    char msg[MSG_LEN];
} slot_;

/* Per-thread working memory. */
typedef struct {
    dv_augment_scratch *aug;
    dv_decoder *dec;
    dv_image img;
    uint8_t *raw;
    size_t raw_cap;
    dv_crop_record rec[DV_AUGMENT_MAX_CROPS];
} scratch_;

typedef struct {
    dv_loader *l;
    scratch_ *s;
} worker_arg_;

struct dv_loader {
    dv_loader_opts o;
    char *train;
    int rank, world;
    int n_shards;
    shard_ *shards;
    int64_t N, B, Bg, bpe;
    int G, lsize, L, grid, ntok;
    size_t gsz, lsz; /* floats per global / local crop */
    int64_t upperbound;
    dv_mask_gen mg;

    /* open shards: touched only under the HDF5 lock */
    int max_open, n_open;
    uint64_t use_clock;

    /* global-batch masks: one scratch, under mmu */
    pthread_mutex_t mmu;
    dv_mask_batch gmask; /* (2·Bg, N) */

    /* ring, dispatch and sampler state: under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_done;
    int n_slots;
    slot_ *slots;
    int64_t *perm; /* (N) order of epoch perm_epoch */
    int64_t perm_epoch;
    int64_t next_seq;  /* batch the next dv_loader_next returns */
    int64_t fill_seq;  /* batch being handed out to workers */
    int fill_item;     /* next item of fill_seq: 0..B-1 images, B the masks */
    int started, stop, paused, failed, busy;

    int n_threads;
    pthread_t *threads;
    worker_arg_ *wargs;
    scratch_ *scr; /* n_threads, or 1 for the calling thread when num_workers = 0 */
    int n_scr;
    int sync_init;
};

/* ---------------------------------------------------------------------------------------- */
/* shard list                                                                                 */

typedef struct {
    char **v;
    int n, cap;
} strv_;

static int strv_push_(strv_ *s, const char *a, const char *b) {
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 16;
        char **v = realloc(s->v, (size_t)cap * sizeof *v);
        DV_CHECK_ALLOC(v);
        s->v = v;
        s->cap = cap;
    }
    size_t la = strlen(a), lb = b ? strlen(b) : 0;
    char *p = malloc(la + lb + 2);
    DV_CHECK_ALLOC(p);
    memcpy(p, a, la);
    if (b) {
        if (la && p[la - 1] != '/') p[la++] = '/';
        memcpy(p + la, b, lb);
        la += lb;
    }
    p[la] = 0;
    s->v[s->n++] = p;
    return DV_OK;
}

void dv_shards_free(char **paths, int n) {
    if (!paths) return;
    for (int i = 0; i < n; i++) free(paths[i]);
    free(paths);
}

static int cmp_str_(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int ends_with_(const char *s, const char *suf) {
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && strcmp(s + n - m, suf) == 0;
}

/* The HDF5 signature sits at offset 0 or at 512·2^k (user block). */
static int is_hdf5_(const char *path) {
    static const unsigned char sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    int yes = 0;
    for (long off = 0; !yes && off <= (1L << 30); off = off ? 2 * off : 512) {
        unsigned char b[8];
        if (fseek(f, off, SEEK_SET) != 0 || fread(b, 1, 8, f) != 8) break;
        yes = memcmp(b, sig, 8) == 0;
    }
    fclose(f);
    return yes;
}

static int list_dir_(const char *dir, strv_ *out, char *msg, size_t ml) {
    DIR *d = opendir(dir);
    if (!d) {
        snprintf(msg, ml, "data.train: '%s': cannot read directory (%s)", dir, strerror(errno));
        return DV_ERR_IO;
    }
    struct dirent *e;
    int s = DV_OK;
    while (s == DV_OK && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || !ends_with_(e->d_name, ".h5")) continue;
        s = strv_push_(out, dir, e->d_name);
        if (s != DV_OK) break;
        struct stat st;
        if (stat(out->v[out->n - 1], &st) != 0 || !S_ISREG(st.st_mode)) free(out->v[--out->n]);
    }
    closedir(d);
    if (s == DV_OK && out->n == 0) {
        snprintf(msg, ml, "data.train: no *.h5 shards in directory '%s'", dir);
        s = DV_ERR_IO;
    }
    return s;
}

static int list_glob_(const char *pattern, strv_ *out, char *msg, size_t ml) {
    glob_t g;
    memset(&g, 0, sizeof g);
    int rc = glob(pattern, GLOB_NOSORT, NULL, &g);
    int s = DV_OK;
    if (rc == GLOB_NOMATCH || (rc == 0 && g.gl_pathc == 0)) {
        snprintf(msg, ml, "data.train: '%s' matches no files", pattern);
        s = DV_ERR_IO;
    } else if (rc != 0) {
        snprintf(msg, ml, "data.train: '%s': glob failed (%s)", pattern,
                 rc == GLOB_NOSPACE ? "out of memory" : "read error");
        s = rc == GLOB_NOSPACE ? DV_ERR_NOMEM : DV_ERR_IO;
    }
    for (size_t i = 0; s == DV_OK && i < g.gl_pathc; i++) s = strv_push_(out, g.gl_pathv[i], NULL);
    globfree(&g);
    return s;
}

static int list_file_(const char *list, strv_ *out, char *msg, size_t ml) {
    FILE *f = fopen(list, "r");
    if (!f) {
        snprintf(msg, ml, "data.train: '%s': cannot open (%s)", list, strerror(errno));
        return DV_ERR_IO;
    }
    /* directory of the list file, for relative entries */
    char *dir = strdup(list);
    if (!dir) {
        fclose(f);
        return DV_ERR(DV_ERR_NOMEM, "out of memory");
    }
    char *slash = strrchr(dir, '/');
    if (slash)
        slash[slash == dir ? 1 : 0] = 0;
    else
        dir[0] = 0;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int s = DV_OK;
    while (s == DV_OK && (len = getline(&line, &cap, f)) >= 0) {
        char *p = line, *e = line + len;
        while (p < e && (*p == ' ' || *p == '\t')) p++;
        while (e > p && (e[-1] == '\n' || e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t')) e--;
        *e = 0;
        if (!*p || *p == '#') continue;
        s = (p[0] == '/' || !dir[0]) ? strv_push_(out, p, NULL) : strv_push_(out, dir, p);
    }
    free(line);
    free(dir);
    fclose(f);
    if (s == DV_OK && out->n == 0) {
        snprintf(msg, ml, "data.train: list file '%s' names no shards", list);
        s = DV_ERR_IO;
    }
    return s;
}

static int resolve_(const char *spec, char ***paths, int *n, char *msg, size_t ml) {
    strv_ v = {0};
    *paths = NULL;
    *n = 0;
    msg[0] = 0;
    int s;
    struct stat st;
    if (!spec || !spec[0]) {
        snprintf(msg, ml, "data.train is empty: set it to a directory of shards, a glob, a shard "
                          "or a list file");
        return DV_ERR_CONFIG;
    }
    /* a comma-separated list of items, each a directory, a shard, a list file or a glob */
    char *copy = strdup(spec), *save = NULL;
    if (!copy) return DV_ERR(DV_ERR_NOMEM, "out of memory");
    s = DV_OK;
    for (char *item = strtok_r(copy, ",", &save); item && s == DV_OK; item = strtok_r(NULL, ",", &save)) {
        while (*item == ' ' || *item == '\t') item++;
        size_t k = strlen(item);
        while (k && (item[k - 1] == ' ' || item[k - 1] == '\t')) item[--k] = 0;
        if (!k) continue;
        if (stat(item, &st) == 0 && S_ISDIR(st.st_mode)) {
            s = list_dir_(item, &v, msg, ml);
        } else if (stat(item, &st) == 0) {
            s = is_hdf5_(item) ? strv_push_(&v, item, NULL) : list_file_(item, &v, msg, ml);
        } else if (strpbrk(item, "*?[")) {
            s = list_glob_(item, &v, msg, ml);
        } else {
            snprintf(msg, ml, "data.train: '%s': %s", item, strerror(errno));
            s = DV_ERR_IO;
        }
    }
    free(copy);
    if (s == DV_OK && v.n == 0) {
        snprintf(msg, ml, "data.train: '%s' names no image shard", spec);
        s = DV_ERR_CONFIG;
    }
    if (s == DV_OK) {
        qsort(v.v, (size_t)v.n, sizeof *v.v, cmp_str_);
        for (int i = 1; i < v.n; i++)
            if (strcmp(v.v[i - 1], v.v[i]) == 0) {
                snprintf(msg, ml, "data.train: '%s' lists the shard '%s' twice", spec, v.v[i]);
                s = DV_ERR_CONFIG;
                break;
            }
    }
    if (s != DV_OK) {
        if (!msg[0]) snprintf(msg, ml, "data.train: '%s': %s", spec, dv_status_str(s));
        dv_shards_free(v.v, v.n);
        return s;
    }
    *paths = v.v;
    *n = v.n;
    return DV_OK;
}

int dv_shards_resolve(const char *spec, char ***paths, int *n) {
    char msg[MSG_LEN];
    int s = resolve_(spec, paths, n, msg, sizeof msg);
    if (s != DV_OK) dv_user_error("%s", msg);
    return s;
}

/* ---------------------------------------------------------------------------------------- */
/* shard opening (caller holds the HDF5 lock)                                                */

/* dv_h5img_probe refuses a shard without /labels; the loader reads such shards with labels -1. */
static int labels_missing_(const char *path) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) {
        H5Eclear2(H5E_DEFAULT);
        return 0;
    }
    int yes = H5Lexists(f, "labels", H5P_DEFAULT) == 0 && H5Lexists(f, "images", H5P_DEFAULT) > 0 &&
              H5Lexists(f, "ids", H5P_DEFAULT) > 0;
    H5Fclose(f);
    H5Eclear2(H5E_DEFAULT);
    return yes;
}

static int dims_(hid_t d, hsize_t *dims, H5T_class_t *cls, size_t *tsize) {
    hid_t sp = H5Dget_space(d), t = H5Dget_type(d);
    int rank = sp >= 0 ? H5Sget_simple_extent_ndims(sp) : -1;
    if (rank < 0 || rank > 4)
        rank = -1;
    else
        H5Sget_simple_extent_dims(sp, dims, NULL);
    if (cls) *cls = t >= 0 ? H5Tget_class(t) : H5T_NO_CLASS;
    if (tsize) *tsize = t >= 0 ? H5Tget_size(t) : 0;
    if (sp >= 0) H5Sclose(sp);
    if (t >= 0) H5Tclose(t);
    return rank;
}

static int open_nolabels_body_(const char *path, dv_h5img *r, char *why, size_t wl) {
    DV_CHECK_ALLOC(r->path = strdup(path));
    r->file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (r->file < 0) {
        snprintf(why, wl, "%s: cannot open HDF5 file", path);
        return DV_ERR_FORMAT;
    }
    char s[64];
    int present = 0;
    uint64_t v = 0;
    if (dv_h5img_get_attr_str(r, "format", s, sizeof s, &present) != DV_OK || !present ||
        strcmp(s, DV_H5IMG_FORMAT) != 0) {
        snprintf(why, wl, "%s: not a dinov2c image shard", path);
        return DV_ERR_FORMAT;
    }
    if (dv_h5img_get_attr_u64(r, "format_version", &v, &present) != DV_OK || !present || v < 1 ||
        v > DV_H5IMG_VERSION) {
        snprintf(why, wl, "%s: image shard format_version missing or not supported", path);
        return DV_ERR_FORMAT;
    }
    r->format_version = (int)v;
    if (dv_h5img_get_attr_str(r, "layout", s, sizeof s, &present) != DV_OK || !present ||
        (strcmp(s, "raw") != 0 && strcmp(s, "encoded") != 0)) {
        snprintf(why, wl, "%s: image shard layout attribute missing or not 'raw'/'encoded'", path);
        return DV_ERR_FORMAT;
    }
    r->layout = strcmp(s, "raw") == 0 ? DV_H5IMG_RAW : DV_H5IMG_ENCODED;
    if (dv_h5img_get_attr_u64(r, "num_classes", &v, &present) == DV_OK && present)
        r->num_classes = (int)v;
    r->images = H5Dopen2(r->file, "images", H5P_DEFAULT);
    r->ids = H5Dopen2(r->file, "ids", H5P_DEFAULT);
    if (r->images < 0 || r->ids < 0) {
        snprintf(why, wl, "%s: cannot open /images or /ids", path);
        return DV_ERR_FORMAT;
    }
    hsize_t di[4], dd[4];
    H5T_class_t cls;
    size_t tsize;
    int ri = dims_(r->images, di, &cls, &tsize), rd = dims_(r->ids, dd, NULL, NULL);
    if (r->layout == DV_H5IMG_RAW) {
        if (ri != 4 || cls != H5T_INTEGER || tsize != 1) {
            snprintf(why, wl, "%s: raw image shard: /images must be uint8 [N,H,W,C]", path);
            return DV_ERR_FORMAT;
        }
        r->height = (int)di[1];
        r->width = (int)di[2];
        r->channels = (int)di[3];
    } else if (ri != 1 || cls != H5T_VLEN) {
        snprintf(why, wl, "%s: encoded image shard: /images must be a 1-D vlen uint8 dataset",
                 path);
        return DV_ERR_FORMAT;
    }
    if (rd != 1 || dd[0] != di[0]) {
        snprintf(why, wl, "%s: image shard: /ids does not match /images", path);
        return DV_ERR_FORMAT;
    }
    r->count = (int64_t)di[0];
    r->has_paths = H5Lexists(r->file, "paths", H5P_DEFAULT) > 0;
    H5Eclear2(H5E_DEFAULT);
    return DV_OK;
}

/* Open a shard quietly: DV_OK, or a status with the one-line reason (naming the file) in why. */
static int shard_probe_(const char *path, dv_h5img *r, int *has_labels, char *why, size_t wl) {
    int s = dv_h5img_probe(path, r, why, wl);
    if (s == DV_OK) {
        *has_labels = 1;
        return DV_OK;
    }
    if (!labels_missing_(path)) return s;
    memset(r, 0, sizeof *r);
    r->file = r->images = r->labels = r->ids = H5I_INVALID_HID;
    s = open_nolabels_body_(path, r, why, wl);
    if (s != DV_OK) {
        dv_h5img_close(r);
        return s;
    }
    *has_labels = 0;
    return DV_OK;
}

static void shard_close_(dv_loader *l, shard_ *sh) {
    if (!sh->open) return;
    dv_h5img_close(&sh->r);
    free(sh->ids);
    free(sh->labels);
    sh->ids = NULL;
    sh->labels = NULL;
    sh->open = 0;
    l->n_open--;
}

/* Reopen a raw shard's /images without a chunk cache. The loader reads single images in random
 * order, so a cached chunk is rarely read twice; with the default cache (1 MiB) HDF5 reads and
 * caches the whole chunk (up to ~1 MiB, many images) for every image, and without one it reads
 * only the image's bytes from an unfiltered chunk. */
static int direct_reads_(dv_h5img *r) {
    hid_t dapl = H5Pcreate(H5P_DATASET_ACCESS);
    if (dapl < 0) return DV_ERR_HDF5;
    /* close first: a second open of an open dataset shares its cache and ignores dapl */
    H5Dclose(r->images);
    r->images = H5I_INVALID_HID;
    if (H5Pset_chunk_cache(dapl, 0, 0, 1.0) >= 0) r->images = H5Dopen2(r->file, "images", dapl);
    H5Pclose(dapl);
    if (r->images < 0) {
        H5Eclear2(H5E_DEFAULT);
        return DV_ERR_HDF5;
    }
    return DV_OK;
}

/* Make shard si readable (caller holds the HDF5 lock). */
static int shard_use_(dv_loader *l, int si, char *msg, size_t ml) {
    shard_ *sh = &l->shards[si];
    sh->last_use = ++l->use_clock;
    if (sh->open) return DV_OK;
    if (l->n_open >= l->max_open) { /* close the least recently used */
        int victim = -1;
        for (int i = 0; i < l->n_shards; i++)
            if (l->shards[i].open &&
                (victim < 0 || l->shards[i].last_use < l->shards[victim].last_use))
                victim = i;
        if (victim >= 0) shard_close_(l, &l->shards[victim]);
    }
    int has_labels = 0;
    int s = shard_probe_(sh->path, &sh->r, &has_labels, msg, ml);
    if (s != DV_OK) return s;
    if (sh->r.count != sh->count || (int)sh->r.layout != sh->layout) {
        snprintf(msg, ml,
                 "%s: shard changed since the loader opened it (%lld %s images, was %lld %s)",
                 sh->path, (long long)sh->r.count, dv_h5img_layout_name(sh->r.layout),
                 (long long)sh->count, dv_h5img_layout_name((dv_h5img_layout)sh->layout));
        dv_h5img_close(&sh->r);
        return DV_ERR_FORMAT;
    }
    if (sh->layout == DV_H5IMG_RAW && (s = direct_reads_(&sh->r)) != DV_OK) {
        snprintf(msg, ml, "%s: cannot reopen /images", sh->path);
        dv_h5img_close(&sh->r);
        return s;
    }
    size_t n = sh->count > 0 ? (size_t)sh->count : 1;
    sh->ids = malloc(n * sizeof *sh->ids);
    sh->labels = has_labels ? malloc(n * sizeof *sh->labels) : NULL;
    if (!sh->ids || (has_labels && !sh->labels)) {
        snprintf(msg, ml, "%s: out of memory for %lld ids", sh->path, (long long)sh->count);
        s = DV_ERR_NOMEM;
    }
    if (s == DV_OK && dv_h5img_read_ids(&sh->r, 0, sh->count, sh->ids) != DV_OK) {
        snprintf(msg, ml, "%s: cannot read /ids", sh->path);
        s = DV_ERR_HDF5;
    }
    if (s == DV_OK && has_labels &&
        dv_h5img_read_labels(&sh->r, 0, sh->count, sh->labels) != DV_OK) {
        snprintf(msg, ml, "%s: cannot read /labels", sh->path);
        s = DV_ERR_HDF5;
    }
    sh->open = 1;
    l->n_open++;
    if (s != DV_OK) shard_close_(l, sh);
    return s;
}

static int shard_of_(const dv_loader *l, int64_t g) {
    int lo = 0, hi = l->n_shards - 1; /* last shard with start <= g */
    while (lo < hi) {
        int mid = lo + (hi - lo + 1) / 2;
        if (l->shards[mid].start <= g)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

/* ---------------------------------------------------------------------------------------- */
/* work items                                                                                 */

/* Start batch t in slot s (caller holds mu or is the only thread). */
static void begin_batch_(dv_loader *l, slot_ *s, int64_t t) {
    const int64_t e = t / l->bpe, k = t % l->bpe;
    if (l->perm_epoch != e) {
        dv_rng r;
        dv_rng_init(&r, l->o.seed, DV_RNG_SHUFFLE, (uint64_t)e, 0);
        dv_rng_permutation(&r, l->perm, l->N);
        l->perm_epoch = e;
    }
    const int64_t base = k * l->Bg + (int64_t)l->rank * l->B;
    for (int64_t i = 0; i < l->B; i++) s->gidx[i] = l->perm[base + i];
    s->seq = t;
    s->done = 0;
    s->status = DV_OK;
    s->msg[0] = 0;
    s->b.epoch = e;
}

static int image_fail_(int status, char *msg, size_t ml, const char *why, int64_t g, int64_t row) {
    snprintf(msg, ml, "%.900s (data.train image %lld, shard row %lld)", why, (long long)g,
             (long long)row);
    return status;
}

/* Read, decode and augment image i of the batch in slot s into its rows. */
static int do_image_(dv_loader *l, scratch_ *sc, slot_ *s, int64_t i, char *msg, size_t ml) {
    dv_batch *b = &s->b;
    const int64_t g = s->gidx[i];
    const int si = shard_of_(l, g);
    shard_ *sh = &l->shards[si];
    const int64_t row = g - sh->start;
    char why[MSG_LEN];
    uint64_t id = 0;
    int32_t label = -1;
    int h = 0, w = 0, c = 0, encoded = sh->layout == DV_H5IMG_ENCODED;
    dv_h5img_blobs bl;
    memset(&bl, 0, sizeof bl);

    dv_loader_hdf5_lock();
    int st = shard_use_(l, si, why, sizeof why);
    if (st == DV_OK) {
        id = sh->ids[row];
        label = sh->labels ? sh->labels[row] : -1;
        if (!encoded) {
            h = sh->r.height;
            w = sh->r.width;
            c = sh->r.channels;
            size_t need = (size_t)h * (size_t)w * (size_t)c;
            if (need > sc->raw_cap) {
                uint8_t *p = realloc(sc->raw, need);
                if (!p) {
                    st = DV_ERR_NOMEM;
                    snprintf(why, sizeof why, "%s: out of memory", sh->path);
                } else {
                    sc->raw = p;
                    sc->raw_cap = need;
                }
            }
            if (st == DV_OK && (st = dv_h5img_read_raw(&sh->r, row, 1, sc->raw)) != DV_OK)
                snprintf(why, sizeof why, "%s: cannot read the image", sh->path);
        } else if ((st = dv_h5img_read_encoded(&sh->r, row, 1, &bl)) != DV_OK) {
            snprintf(why, sizeof why, "%s: cannot read the encoded image", sh->path);
        }
    }
    dv_loader_hdf5_unlock();
    if (st != DV_OK) return image_fail_(st, msg, ml, why, g, row);

    const int n_rec = 2 + l->L;
    const dv_augment_params *p = &l->o.aug;
    const uint64_t seed = l->o.seed, epoch = (uint64_t)b->epoch;
    const uint8_t *pix = sc->raw;
    int drawn = 0;
    if (encoded) {
        const uint8_t *data = bl.data;
        const size_t size = bl.offsets[1] - bl.offsets[0];
        char name[64], dmsg[DV_DECODE_MSG] = "";
        snprintf(name, sizeof name, "row %lld", (long long)row);
        dv_decode_opts dop = {.channels = 3};
        if (l->o.jpeg_dct_scaling && dv_image_format(data, size) == DV_IMGFMT_JPEG) {
            int hh = 0, ww = 0, cc = 0;
            st = dv_decode_header(sc->dec, data, size, name, &hh, &ww, &cc, dmsg, sizeof dmsg);
            for (int k = 0; st == DV_OK && k < n_rec; k++)
                st = dv_augment_draw(p, k, hh, ww, seed, epoch, id, &sc->rec[k]);
            if (st == DV_OK) {
                int num = dv_augment_decode_scale(sc->rec, n_rec, 8);
                int mn = hh < ww ? hh : ww;
                if (num < 8) dop.min_size = (int)(((int64_t)mn * num + 7) / 8);
                st = dv_decode(sc->dec, data, size, name, &dop, &sc->img, dmsg, sizeof dmsg);
            }
            if (st == DV_OK && (sc->img.height != hh || sc->img.width != ww))
                for (int k = 0; k < n_rec; k++) {
                    dv_crop_box box;
                    dv_crop_box_rescale(&sc->rec[k].box, hh, ww, sc->img.height, sc->img.width,
                                        &box);
                    sc->rec[k].box = box;
                }
            drawn = 1;
        } else {
            st = dv_decode(sc->dec, data, size, name, &dop, &sc->img, dmsg, sizeof dmsg);
        }
        dv_h5img_blobs_free(&bl);
        if (st != DV_OK) {
            snprintf(why, sizeof why, "%s: %s", sh->path, dmsg[0] ? dmsg : dv_status_str(st));
            return image_fail_(st, msg, ml, why, g, row);
        }
        h = sc->img.height;
        w = sc->img.width;
        c = sc->img.channels;
        pix = sc->img.pixels;
    }
    for (int k = 0; !drawn && k < n_rec; k++)
        if ((st = dv_augment_draw(p, k, h, w, seed, epoch, id, &sc->rec[k])) != DV_OK) break;
    for (int k = 0; st == DV_OK && k < n_rec; k++) {
        float *out = k < 2 ? b->global_crops + ((size_t)k * (size_t)l->B + (size_t)i) * l->gsz
                           : b->local_crops + ((size_t)(k - 2) * (size_t)l->B + (size_t)i) * l->lsz;
        st = dv_augment_render(&sc->rec[k], pix, h, w, c, out, sc->aug);
    }
    if (st != DV_OK) {
        snprintf(why, sizeof why, "%s: augmentation failed (%s, %dx%dx%d image)", sh->path,
                 dv_status_str(st), h, w, c);
        return image_fail_(st, msg, ml, why, g, row);
    }
    b->ids[i] = id;
    b->labels[i] = label;
    return DV_OK;
}

/* Masks of the global batch s->seq; this rank keeps rows c·Bg + r·B + i -> c·B + i. */
static int do_masks_(dv_loader *l, slot_ *s, char *msg, size_t ml) {
    const size_t N = (size_t)l->ntok;
    pthread_mutex_lock(&l->mmu);
    int st = dv_mask_collate(&l->mg, l->o.mask_ratio_min, l->o.mask_ratio_max,
                             l->o.mask_probability, l->o.seed, (uint64_t)s->seq, 0, &l->gmask);
    if (st == DV_OK)
        for (int64_t c = 0; c < 2; c++)
            memcpy(s->m.masks + (size_t)(c * l->B) * N,
                   l->gmask.masks + (size_t)(c * l->Bg + (int64_t)l->rank * l->B) * N,
                   (size_t)l->B * N);
    pthread_mutex_unlock(&l->mmu);
    if (st != DV_OK) {
        snprintf(msg, ml, "data loader: iBOT masks of batch %lld failed (%s)", (long long)s->seq,
                 dv_status_str(st));
        return st;
    }
    dv_mask_finalize(&s->m);
    s->b.n_masked = s->m.n_masked_patches;
    return DV_OK;
}

static int do_item_(dv_loader *l, scratch_ *sc, slot_ *s, int item, char *msg, size_t ml) {
    return item < l->B ? do_image_(l, sc, s, item, msg, ml) : do_masks_(l, s, msg, ml);
}

/* ---------------------------------------------------------------------------------------- */
/* workers                                                                                    */

/* Hand out the next item (caller holds mu). */
static int take_item_(dv_loader *l, slot_ **slot, int *item) {
    if (!l->started || l->paused || l->failed || l->stop) return 0;
    slot_ *s = &l->slots[l->fill_seq % l->n_slots];
    if (l->fill_item == 0) {
        if (l->fill_seq >= l->next_seq + l->o.prefetch) return 0;
        begin_batch_(l, s, l->fill_seq);
    }
    *slot = s;
    *item = l->fill_item++;
    if (l->fill_item > l->B) {
        l->fill_item = 0;
        l->fill_seq++;
    }
    l->busy++;
    return 1;
}

static void *worker_main_(void *arg) {
    worker_arg_ *wa = arg;
    dv_loader *l = wa->l;
    char msg[MSG_LEN];
    pthread_mutex_lock(&l->mu);
    for (;;) {
        slot_ *s = NULL;
        int item = 0;
        while (!l->stop && !take_item_(l, &s, &item)) pthread_cond_wait(&l->cv_work, &l->mu);
        if (l->stop) break;
        pthread_mutex_unlock(&l->mu);
        msg[0] = 0;
        int st = do_item_(l, wa->s, s, item, msg, sizeof msg);
        pthread_mutex_lock(&l->mu);
        l->busy--;
        if (st != DV_OK) {
            if (s->status == DV_OK) {
                s->status = st;
                snprintf(s->msg, sizeof s->msg, "%s", msg);
            }
            l->failed = 1;
        }
        s->done++;
        if (s->done == l->B + 1 || st != DV_OK || l->paused || l->busy == 0)
            pthread_cond_broadcast(&l->cv_done);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

/* ---------------------------------------------------------------------------------------- */
/* open / close                                                                               */

static int scratch_init_(scratch_ *s) {
    memset(s, 0, sizeof *s);
    DV_TRY(dv_augment_scratch_create(&s->aug));
    DV_TRY(dv_decoder_create(&s->dec));
    return DV_OK;
}

static void scratch_free_(scratch_ *s) {
    dv_augment_scratch_free(s->aug);
    if (s->dec) dv_decoder_destroy(s->dec);
    dv_image_free(&s->img);
    free(s->raw);
    memset(s, 0, sizeof *s);
}

void dv_loader_opts_from_config(dv_loader_opts *o, const dv_config *c) {
    memset(o, 0, sizeof *o);
    o->train = c->data.train;
    o->batch_per_rank = c->derived.finalized ? c->derived.batch_per_rank : c->train.batch_size_per_gpu;
    o->seed = (uint64_t)c->data.seed;
    dv_augment_params_default(&o->aug);
    o->aug.global_size = (int)c->crops.global_crops_size;
    o->aug.local_size = (int)c->crops.local_crops_size;
    o->aug.local_number = (int)c->crops.local_crops_number;
    o->aug.global_scale[0] = c->crops.global_crops_scale[0];
    o->aug.global_scale[1] = c->crops.global_crops_scale[1];
    o->aug.local_scale[0] = c->crops.local_crops_scale[0];
    o->aug.local_scale[1] = c->crops.local_crops_scale[1];
    o->aug.blur_intended = c->data.blur_probabilities_intended;
    o->aug.blur_sigma[0] = c->data.blur_sigma[0];
    o->aug.blur_sigma[1] = c->data.blur_sigma[1];
    o->aug.p_jitter = c->data.color_jitter_probability;
    o->aug.p_gray = c->data.grayscale_probability;
    o->aug.p_solarize = c->data.solarize_probability;
    o->patch_size = (int)c->student.patch_size;
    o->mask_ratio_min = c->ibot.mask_ratio_min_max[0];
    o->mask_ratio_max = c->ibot.mask_ratio_min_max[1];
    o->mask_probability = c->ibot.mask_sample_probability;
    o->num_workers = (int)c->data.num_workers;
    o->prefetch = (int)c->data.prefetch;
    o->jpeg_dct_scaling = 0;
}

static int cmp_i64_desc_(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x < y) - (x > y);
}

int64_t dv_loader_mask_bound(int64_t batch_per_rank, int world, int n_tokens, double ratio_min,
                             double ratio_max, double probability) {
    if (batch_per_rank < 1 || world < 1 || n_tokens < 1) return 0;
    const int64_t crops = 2 * batch_per_rank * world;
    if (crops > INT_MAX) return -1;
    int n = dv_mask_n_masked_crops((int)crops, probability);
    if (n > crops) n = (int)crops;
    if (n <= 0) return 0;
    float *edges = malloc((size_t)(n + 1) * sizeof *edges);
    int64_t *per = malloc((size_t)n * sizeof *per);
    if (!edges || !per) {
        free(edges);
        free(per);
        return -1;
    }
    dv_linspace_f32(ratio_min, ratio_max, n + 1, edges);
    for (int i = 0; i < n; i++) per[i] = (int64_t)((float)n_tokens * edges[i + 1]);
    qsort(per, (size_t)n, sizeof *per, cmp_i64_desc_);
    const int64_t take = 2 * batch_per_rank < n ? 2 * batch_per_rank : n;
    int64_t ub = 0;
    for (int64_t i = 0; i < take; i++) ub += per[i];
    free(edges);
    free(per);
    return ub;
}

static int check_opts_(const dv_loader_opts *o, char *msg, size_t ml) {
    const dv_augment_params *a = &o->aug;
    if (o->batch_per_rank < 1)
        snprintf(msg, ml, "data loader: batch size per rank %lld must be >= 1",
                 (long long)o->batch_per_rank);
    else if (o->patch_size < 1 || a->global_size % o->patch_size != 0)
        snprintf(msg, ml, "data loader: global crop size %d is not a multiple of patch size %d",
                 a->global_size, o->patch_size);
    else if (o->num_workers < 0 || o->prefetch < 1)
        snprintf(msg, ml, "data loader: num_workers %d must be >= 0 and prefetch %d >= 1",
                 o->num_workers, o->prefetch);
    else if (!(o->mask_ratio_min >= 0.0) || !(o->mask_ratio_min <= o->mask_ratio_max) ||
             !(o->mask_ratio_max <= 1.0) || !(o->mask_probability >= 0.0) ||
             !(o->mask_probability <= 1.0))
        snprintf(msg, ml, "data loader: bad mask ratios (%g, %g) or probability %g",
                 o->mask_ratio_min, o->mask_ratio_max, o->mask_probability);
    else
        return dv_augment_params_check(a);
    return DV_ERR_ARG;
}

/* Rank 0: resolve the spec and read every shard's size. */
typedef struct {
    int n;
    char **paths;
    int64_t *counts;
    int *layout, *has_labels;
} scan_t_;

static void scan_free_(scan_t_ *s) {
    dv_shards_free(s->paths, s->n);
    free(s->counts);
    free(s->layout);
    free(s->has_labels);
    memset(s, 0, sizeof *s);
}

static int scan_alloc_(scan_t_ *s, int n) {
    s->n = n;
    s->counts = calloc((size_t)n + 1, sizeof *s->counts);
    s->layout = calloc((size_t)n + 1, sizeof *s->layout);
    s->has_labels = calloc((size_t)n + 1, sizeof *s->has_labels);
    if (!s->counts || !s->layout || !s->has_labels) return DV_ERR_NOMEM;
    return DV_OK;
}

static int scan_shards_(const char *spec, scan_t_ *sc, char *msg, size_t ml) {
    memset(sc, 0, sizeof *sc);
    char **paths;
    int n;
    int s = resolve_(spec, &paths, &n, msg, ml);
    if (s != DV_OK) return s;
    s = scan_alloc_(sc, n);
    sc->paths = paths;
    if (s != DV_OK) {
        snprintf(msg, ml, "data loader: out of memory");
        return s;
    }
    for (int i = 0; i < n && s == DV_OK; i++) {
        dv_h5img r;
        s = shard_probe_(paths[i], &r, &sc->has_labels[i], msg, ml);
        if (s != DV_OK) break;
        sc->counts[i] = r.count;
        sc->layout[i] = (int)r.layout;
        dv_h5img_close(&r);
    }
    return s;
}

/* Bring rank 0's scan to every rank; status and message included. */
static int scan_bcast_(scan_t_ *sc, int *status, char *msg, int rank, MPI_Comm comm) {
    int64_t hdr[3] = {*status, sc->n, 0};
    char *buf = NULL;
    if (rank == 0 && *status == DV_OK) {
        for (int i = 0; i < sc->n; i++) hdr[2] += (int64_t)strlen(sc->paths[i]) + 1;
        if (hdr[2] > INT_MAX) {
            hdr[0] = DV_ERR_UNSUPPORTED;
            snprintf(msg, MSG_LEN, "data.train: the shard list is too long (%lld bytes)",
                     (long long)hdr[2]);
        }
    }
    DV_CHECK_MPI(MPI_Bcast(hdr, 3, MPI_INT64_T, 0, comm));
    DV_CHECK_MPI(MPI_Bcast(msg, MSG_LEN, MPI_CHAR, 0, comm));
    *status = (int)hdr[0];
    if (*status != DV_OK) return DV_OK;
    const int n = (int)hdr[1];
    int st = DV_OK;
    if (rank != 0) {
        memset(sc, 0, sizeof *sc);
        st = scan_alloc_(sc, n);
        if (st == DV_OK && !(sc->paths = calloc((size_t)n + 1, sizeof *sc->paths)))
            st = DV_ERR_NOMEM;
    }
    if (st == DV_OK && !(buf = malloc((size_t)hdr[2] + 1))) st = DV_ERR_NOMEM;
    /* agree before the data broadcasts, so that a rank short of memory does not leave the
     * others waiting in them */
    int st_all = st;
    DV_CHECK_MPI(MPI_Allreduce(&st, &st_all, 1, MPI_INT, MPI_MAX, comm));
    if (st_all != DV_OK) {
        free(buf);
        return st != DV_OK ? DV_ERR(st, "data loader: out of memory for the shard list")
                           : st_all;
    }
    if (rank == 0) {
        size_t o = 0;
        for (int i = 0; i < n; i++) {
            size_t len = strlen(sc->paths[i]) + 1;
            memcpy(buf + o, sc->paths[i], len);
            o += len;
        }
    }
    DV_CHECK_MPI(MPI_Bcast(buf, (int)hdr[2], MPI_CHAR, 0, comm));
    DV_CHECK_MPI(MPI_Bcast(sc->counts, n, MPI_INT64_T, 0, comm));
    DV_CHECK_MPI(MPI_Bcast(sc->layout, n, MPI_INT, 0, comm));
    DV_CHECK_MPI(MPI_Bcast(sc->has_labels, n, MPI_INT, 0, comm));
    if (rank != 0) {
        size_t o = 0;
        for (int i = 0; i < n && st == DV_OK; i++) {
            if (!(sc->paths[i] = strdup(buf + o))) st = DV_ERR_NOMEM;
            o += strlen(buf + o) + 1;
        }
    }
    free(buf);
    return st;
}

static int alloc_slot_(dv_loader *l, slot_ *s) {
    dv_batch *b = &s->b;
    const size_t B = (size_t)l->B;
    DV_TRY(dv_mask_batch_alloc(&s->m, (int)(2 * l->B), l->ntok));
    b->B = l->B;
    b->L = l->L;
    b->G = l->G;
    b->l = l->lsize;
    b->N = l->ntok;
    DV_CHECK_ALLOC(b->global_crops = malloc(2 * B * l->gsz * sizeof(float)));
    if (l->L > 0)
        DV_CHECK_ALLOC(b->local_crops = malloc((size_t)l->L * B * l->lsz * sizeof(float)));
    DV_CHECK_ALLOC(b->ids = calloc(B, sizeof *b->ids));
    DV_CHECK_ALLOC(b->labels = calloc(B, sizeof *b->labels));
    DV_CHECK_ALLOC(s->gidx = calloc(B, sizeof *s->gidx));
    b->masks = s->m.masks;
    b->mask_indices = s->m.indices;
    b->mask_weights = s->m.weights;
    b->upperbound = l->upperbound;
    s->seq = -1;
    return DV_OK;
}

static void free_slot_(slot_ *s) {
    free(s->b.global_crops);
    free(s->b.local_crops);
    free(s->b.ids);
    free(s->b.labels);
    free(s->gidx);
    dv_mask_batch_free(&s->m);
}

/* Everything after the scan that is local to this rank. */
static int setup_(dv_loader *l, scan_t_ *sc, char *msg, size_t ml) {
    l->n_shards = sc->n;
    DV_CHECK_ALLOC(l->shards = calloc((size_t)sc->n, sizeof *l->shards));
    int64_t N = 0;
    for (int i = 0; i < sc->n; i++) {
        shard_ *sh = &l->shards[i];
        sh->path = sc->paths[i];
        sc->paths[i] = NULL;
        sh->start = N;
        sh->count = sc->counts[i];
        sh->layout = sc->layout[i];
        sh->has_labels = sc->has_labels[i];
        sh->r.file = sh->r.images = sh->r.labels = sh->r.ids = H5I_INVALID_HID;
        N += sh->count;
    }
    l->N = N;
    l->Bg = l->B * l->world;
    if (N < l->Bg) {
        snprintf(msg, ml,
                 "data.train '%s': %lld images, fewer than one global batch of %lld "
                 "(%lld per rank x %d ranks)",
                 l->train, (long long)N, (long long)l->Bg, (long long)l->B, l->world);
        return DV_ERR_CONFIG;
    }
    if (2 * l->Bg > INT_MAX) {
        snprintf(msg, ml, "data loader: global batch %lld too large", (long long)l->Bg);
        return DV_ERR_ARG;
    }
    l->bpe = N / l->Bg;

    struct rlimit rl;
    l->max_open = 256;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        l->max_open = (int)(rl.rlim_cur / 2 > 4096 ? 4096 : rl.rlim_cur / 2);
    if (l->max_open < 4) l->max_open = 4;

    DV_CHECK_ALLOC(l->perm = malloc((size_t)N * sizeof *l->perm));
    l->perm_epoch = -1;
    DV_TRY(dv_mask_gen_init(&l->mg, l->grid, l->grid,
                            dv_mask_max_num_patches(l->G, l->o.patch_size)));
    DV_TRY(dv_mask_batch_alloc(&l->gmask, (int)(2 * l->Bg), l->ntok));
    l->upperbound = dv_loader_mask_bound(l->B, l->world, l->ntok, l->o.mask_ratio_min,
                                         l->o.mask_ratio_max, l->o.mask_probability);
    if (l->upperbound < 0) return DV_ERR(DV_ERR_NOMEM, "out of memory");

    l->n_slots = l->o.num_workers > 0 ? l->o.prefetch + 1 : 1;
    DV_CHECK_ALLOC(l->slots = calloc((size_t)l->n_slots, sizeof *l->slots));
    for (int i = 0; i < l->n_slots; i++) DV_TRY(alloc_slot_(l, &l->slots[i]));

    l->n_scr = l->o.num_workers > 0 ? l->o.num_workers : 1;
    DV_CHECK_ALLOC(l->scr = calloc((size_t)l->n_scr, sizeof *l->scr));
    for (int i = 0; i < l->n_scr; i++) DV_TRY(scratch_init_(&l->scr[i]));

    if (pthread_mutex_init(&l->mu, NULL) || pthread_mutex_init(&l->mmu, NULL) ||
        pthread_cond_init(&l->cv_work, NULL) ||
        pthread_cond_init(&l->cv_done, NULL))
        return DV_ERR(DV_ERR_NOMEM, "pthread mutex/condition init failed");
    l->sync_init = 1;

    if (l->o.num_workers > 0) {
        DV_CHECK_ALLOC(l->threads = calloc((size_t)l->o.num_workers, sizeof *l->threads));
        DV_CHECK_ALLOC(l->wargs = calloc((size_t)l->o.num_workers, sizeof *l->wargs));
        for (int i = 0; i < l->o.num_workers; i++) {
            l->wargs[i].l = l;
            l->wargs[i].s = &l->scr[i];
            int rc = pthread_create(&l->threads[i], NULL, worker_main_, &l->wargs[i]);
            if (rc != 0) {
                snprintf(msg, ml, "data loader: cannot start worker thread %d (%s)", i,
                         strerror(rc));
                return DV_ERR_NOMEM;
            }
            l->n_threads++;
        }
    }
    return DV_OK;
}

int dv_loader_open(dv_loader **out, const dv_loader_opts *o, MPI_Comm comm) {
    *out = NULL;
    char msg[MSG_LEN] = "";
    int rank = 0, world = 1;
    if (comm != MPI_COMM_NULL) {
        DV_CHECK_MPI(MPI_Comm_rank(comm, &rank));
        DV_CHECK_MPI(MPI_Comm_size(comm, &world));
    }
    /* same options everywhere: every rank fails alike without communicating */
    int s = check_opts_(o, msg, sizeof msg);
    if (s != DV_OK) {
        if (msg[0]) dv_user_error("%s", msg);
        return s;
    }
    /* HDF5 initialises itself (and registers with MPI) here, on the MPI thread */
    scan_t_ sc;
    memset(&sc, 0, sizeof sc);
    int scan_status = DV_OK, h5_status = DV_OK;
    dv_loader_hdf5_lock();
    if (H5open() < 0 || dv_h5_quiet() != DV_OK) {
        h5_status = DV_ERR(DV_ERR_HDF5, "data loader: cannot initialise HDF5");
        if (rank == 0) {
            scan_status = h5_status;
            snprintf(msg, sizeof msg, "data loader: cannot initialise HDF5");
        }
    } else if (rank == 0) {
        scan_status = scan_shards_(o->train, &sc, msg, sizeof msg);
    }
    dv_loader_hdf5_unlock();
    if (comm != MPI_COMM_NULL && world > 1) s = scan_bcast_(&sc, &scan_status, msg, rank, comm);
    if (s == DV_OK) s = h5_status; /* agreed on below */
    if (scan_status != DV_OK) {
        dv_user_error("%s", msg);
        scan_free_(&sc);
        return scan_status;
    }

    dv_loader *l = calloc(1, sizeof *l);
    msg[0] = 0;
    if (!l) s = DV_ERR_NOMEM;
    if (s == DV_OK) {
        l->o = *o;
        l->rank = rank;
        l->world = world;
        l->B = o->batch_per_rank;
        l->G = o->aug.global_size;
        l->lsize = o->aug.local_size;
        l->L = o->aug.local_number;
        l->grid = l->G / o->patch_size;
        l->ntok = l->grid * l->grid;
        l->gsz = (size_t)3 * (size_t)l->G * (size_t)l->G;
        l->lsz = (size_t)3 * (size_t)l->lsize * (size_t)l->lsize;
        l->train = strdup(o->train ? o->train : "");
        l->o.train = l->train;
        if (!l->train) s = DV_ERR_NOMEM;
    }
    if (s == DV_OK) s = setup_(l, &sc, msg, sizeof msg);
    scan_free_(&sc);
    if (s != DV_OK && msg[0]) dv_user_error("%s", msg);
    /* agree: a rank that failed makes every rank fail (no rank goes on to train alone) */
    if (comm != MPI_COMM_NULL && world > 1) {
        int all = s;
        int rc = MPI_Allreduce(&s, &all, 1, MPI_INT, MPI_MAX, comm);
        if (rc != MPI_SUCCESS) all = DV_ERR_MPI;
        if (all != DV_OK && s == DV_OK)
            dv_user_error("data loader: could not start on another rank (%s)",
                          dv_status_str(all));
        s = all;
    }
    if (s != DV_OK) {
        dv_loader_close(l);
        return s;
    }
    *out = l;
    return DV_OK;
}

void dv_loader_close(dv_loader *l) {
    if (!l) return;
    if (l->sync_init) {
        pthread_mutex_lock(&l->mu);
        l->stop = 1;
        pthread_cond_broadcast(&l->cv_work);
        pthread_mutex_unlock(&l->mu);
    }
    for (int i = 0; i < l->n_threads; i++) pthread_join(l->threads[i], NULL);
    dv_loader_hdf5_lock();
    for (int i = 0; i < l->n_shards; i++) {
        shard_close_(l, &l->shards[i]);
        free(l->shards[i].path);
    }
    dv_loader_hdf5_unlock();
    free(l->shards);
    for (int i = 0; l->slots && i < l->n_slots; i++) free_slot_(&l->slots[i]);
    free(l->slots);
    for (int i = 0; l->scr && i < l->n_scr; i++) scratch_free_(&l->scr[i]);
    free(l->scr);
    free(l->threads);
    free(l->wargs);
    free(l->perm);
    dv_mask_batch_free(&l->gmask);
    if (l->sync_init) {
        pthread_mutex_destroy(&l->mu);
        pthread_mutex_destroy(&l->mmu);
        pthread_cond_destroy(&l->cv_work);
        pthread_cond_destroy(&l->cv_done);
    }
    free(l->train);
    free(l);
}

/* ---------------------------------------------------------------------------------------- */
/* consumer                                                                                   */

static int next_sync_(dv_loader *l, dv_batch **batch) {
    slot_ *s = &l->slots[0];
    char msg[MSG_LEN];
    begin_batch_(l, s, l->next_seq);
    for (int item = 0; item <= l->B; item++) {
        msg[0] = 0;
        int st = do_item_(l, &l->scr[0], s, item, msg, sizeof msg);
        if (st != DV_OK) {
            s->seq = -1;
            dv_user_error("%s", msg[0] ? msg : dv_status_str(st));
            return st;
        }
    }
    l->next_seq++;
    *batch = &s->b;
    return DV_OK;
}

int dv_loader_next(dv_loader *l, dv_batch **batch) {
    *batch = NULL;
    if (l->o.num_workers == 0) return next_sync_(l, batch);
    pthread_mutex_lock(&l->mu);
    if (!l->started) {
        l->started = 1;
        pthread_cond_broadcast(&l->cv_work);
    }
    const int64_t t = l->next_seq;
    slot_ *s = &l->slots[t % l->n_slots];
    while (!(s->seq == t && (s->done == l->B + 1 || (s->status != DV_OK && l->busy == 0))))
        pthread_cond_wait(&l->cv_done, &l->mu);
    int st = s->status;
    if (st == DV_OK) {
        l->next_seq++;
        pthread_cond_broadcast(&l->cv_work); /* the window moved */
        *batch = &s->b;
        pthread_mutex_unlock(&l->mu);
        return DV_OK;
    }
    char msg[MSG_LEN];
    snprintf(msg, sizeof msg, "%s", s->msg);
    pthread_mutex_unlock(&l->mu);
    dv_user_error("%s", msg[0] ? msg : dv_status_str(st));
    return st;
}

void dv_loader_position(const dv_loader *l, int64_t *epoch, int64_t *batch_in_epoch) {
    /* next_seq changes only in the calling thread */
    if (epoch) *epoch = l->next_seq / l->bpe;
    if (batch_in_epoch) *batch_in_epoch = l->next_seq % l->bpe;
}

int dv_loader_seek(dv_loader *l, int64_t epoch, int64_t batch_in_epoch) {
    if (epoch < 0 || batch_in_epoch < 0 || batch_in_epoch >= l->bpe ||
        epoch > (INT64_MAX - batch_in_epoch) / l->bpe - 1) {
        dv_user_error("data loader: cannot seek to epoch %lld batch %lld (%lld batches per epoch)",
                      (long long)epoch, (long long)batch_in_epoch, (long long)l->bpe);
        return DV_ERR_ARG;
    }
    const int64_t t = epoch * l->bpe + batch_in_epoch;
    pthread_mutex_lock(&l->mu);
    l->paused = 1;
    while (l->busy > 0) pthread_cond_wait(&l->cv_done, &l->mu);
    for (int i = 0; i < l->n_slots; i++) {
        l->slots[i].seq = -1;
        l->slots[i].done = 0;
        l->slots[i].status = DV_OK;
        l->slots[i].msg[0] = 0;
    }
    l->next_seq = l->fill_seq = t;
    l->fill_item = 0;
    l->failed = 0;
    l->paused = 0;
    pthread_cond_broadcast(&l->cv_work);
    pthread_mutex_unlock(&l->mu);
    return DV_OK;
}

int64_t dv_loader_num_images(const dv_loader *l) { return l->N; }
int64_t dv_loader_batches_per_epoch(const dv_loader *l) { return l->bpe; }
int64_t dv_loader_mask_upperbound(const dv_loader *l) { return l->upperbound; }
