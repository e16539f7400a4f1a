/* embed — see embed.h. */
#include "embed.h"
#include "loader.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <glob.h>
#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "decode.h"
#include "err.h"
#include "h5images.h"
#include "h5util.h"
#include "timer.h"
#include "weights.h"

void dv_embed_opts_default(dv_embed_opts *o) {
    memset(o, 0, sizeof *o);
    o->image_size = 224;
    o->batch = 32;
    o->progress = 1;
}

/* ---- backbone ----------------------------------------------------------------------------- */

static int load_local_(const dv_embed_opts *o, dv_vit *m, float **w) {
    if ((o->weights && *o->weights) == (o->checkpoint && *o->checkpoint)) {
        dv_user_error("give the backbone as exactly one of --weights FILE or --checkpoint FILE");
        return DV_ERR_ARG;
    }
    if (o->weights && *o->weights) {
        if (access(o->weights, R_OK) != 0) {
            int e = errno;
            dv_user_error("%s: %s", o->weights, strerror(e));
            return DV_ERR_IO;
        }
        return dv_weights_load(o->weights, m, w);
    }
    const char *path = o->checkpoint;
    const char *grp = o->group && *o->group ? o->group : DV_EMBED_DEFAULT_GROUP;
    if (access(path, R_OK) != 0) {
        int e = errno;
        dv_user_error("%s: %s", path, strerror(e));
        return DV_ERR_IO;
    }
    DV_TRY(dv_h5_quiet());
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) {
        H5Eclear2(H5E_DEFAULT);
        dv_user_error("%s: cannot open as HDF5", path);
        return DV_ERR_IO;
    }
    int st = DV_OK;
    htri_t ex = H5Lexists(f, grp, H5P_DEFAULT);
    if (ex <= 0) {
        /* H5Lexists fails on a missing intermediate group: check the first component too */
        H5Eclear2(H5E_DEFAULT);
        dv_user_error("%s: no group %s (not a dinov2c checkpoint, or the backbone sits elsewhere: "
                      "--group)",
                      path, grp);
        H5Fclose(f);
        return DV_ERR_FORMAT;
    }
    dv_vit_config cfg;
    memset(m, 0, sizeof *m);
    float *buf = NULL;
    st = dv_vit_config_read_h5(f, grp, &cfg, path);
    if (st == DV_OK)
        st = dv_vit_init(m, &cfg);
    if (st == DV_OK) {
        buf = malloc((m->params.numel ? m->params.numel : 1) * sizeof *buf);
        if (!buf)
            st = DV_ERR(DV_ERR_NOMEM, "out of memory (%zu floats)", m->params.numel);
    }
    if (st == DV_OK)
        st = dv_weights_read(f, grp, m, buf, path, 0);
    H5Fclose(f);
    if (st != DV_OK) {
        free(buf);
        dv_vit_free(m);
        return st;
    }
    *w = buf;
    return DV_OK;
}

/* Broadcast the status of rank 0 (serial: s). */
static int bcast_status_(MPI_Comm comm, int s) {
    if (comm == MPI_COMM_NULL)
        return s;
    if (MPI_Bcast(&s, 1, MPI_INT, 0, comm) != MPI_SUCCESS)
        return DV_ERR_MPI;
    return s;
}

/* The worst status over the ranks (serial: s). */
static int agree_(MPI_Comm comm, int s) {
    if (comm == MPI_COMM_NULL)
        return s;
    int all = s;
    if (MPI_Allreduce(&s, &all, 1, MPI_INT, MPI_MAX, comm) != MPI_SUCCESS)
        return DV_ERR_MPI;
    return all;
}

static int comm_rank_(MPI_Comm comm) {
    int r = 0;
    if (comm != MPI_COMM_NULL)
        MPI_Comm_rank(comm, &r);
    return r;
}

int dv_embed_load_backbone(const dv_embed_opts *o, MPI_Comm comm, dv_vit *m, float **w) {
    memset(m, 0, sizeof *m);
    *w = NULL;
    const int rank = comm_rank_(comm);
    int st = DV_OK;
    if (rank == 0)
        st = load_local_(o, m, w);
    st = bcast_status_(comm, st);
    if (st != DV_OK || comm == MPI_COMM_NULL)
        return st;
    dv_vit_config cfg;
    if (rank == 0)
        cfg = m->cfg;
    DV_CHECK_MPI(MPI_Bcast(&cfg, (int)sizeof cfg, MPI_BYTE, 0, comm));
    if (rank != 0) {
        st = dv_vit_init(m, &cfg);
        if (st == DV_OK) {
            *w = malloc((m->params.numel ? m->params.numel : 1) * sizeof **w);
            if (!*w)
                st = DV_ERR(DV_ERR_NOMEM, "out of memory (%zu floats)", m->params.numel);
        }
    }
    st = agree_(comm, st);
    if (st != DV_OK) {
        free(*w);
        *w = NULL;
        dv_vit_free(m);
        return st;
    }
    const size_t chunk = (size_t)1 << 28;
    for (size_t off = 0; off < m->params.numel; off += chunk) {
        size_t n = m->params.numel - off < chunk ? m->params.numel - off : chunk;
        DV_CHECK_MPI(MPI_Bcast(*w + off, (int)n, MPI_FLOAT, 0, comm));
    }
    return DV_OK;
}

/* ---- one image, one batch ----------------------------------------------------------------- */

int dv_embed_preprocess(const uint8_t *img, int h, int w, int c, int image_size, float *out,
                        uint8_t *u8, dv_augment_scratch *s) {
    if (c != 1 && c != 3)
        return DV_ERR(DV_ERR_ARG, "embed: %d channels (need 1 or 3)", c);
    if (image_size > 0)
        return dv_eval_transform(img, h, w, c, dv_eval_resize_size(image_size), image_size, out, s);
    if (c == 3) {
        dv_to_tensor_normalize(img, h, w, out);
        return DV_OK;
    }
    if (!u8)
        return DV_ERR(DV_ERR_ARG, "embed: gray image needs a scratch buffer");
    const size_t n = (size_t)h * (size_t)w;
    for (size_t i = 0; i < n; i++)
        u8[3 * i] = u8[3 * i + 1] = u8[3 * i + 2] = img[i];
    dv_to_tensor_normalize(u8, h, w, out);
    return DV_OK;
}

int64_t dv_embed_nlast(const dv_vit *m) {
    return m->cfg.depth < 4 ? m->cfg.depth : 4;
}

int dv_embed_forward(const dv_vit *m, const float *w, dv_vit_acts *a, const dv_vit_group *groups,
                     int64_t ngroups, const dv_embed_out *out) {
    const int64_t D = m->cfg.embed_dim, R = m->cfg.num_register_tokens, p = m->cfg.patch_size;
    const int64_t depth = m->cfg.depth;
    const int64_t nlast = out->cls_last ? dv_embed_nlast(m) : 0;
    if (out->patch)
        for (int64_t g = 1; g < ngroups; g++)
            if (groups[g].H / p * (groups[g].W / p) != groups[0].H / p * (groups[0].W / p))
                return DV_ERR(DV_ERR_ARG, "embed: patch tokens need one image size per batch");
    int64_t blocks[4];
    for (int64_t k = 0; k < nlast; k++)
        blocks[k] = depth - nlast + k;
    dv_vit_fwd_opts fo;
    memset(&fo, 0, sizeof fo);
    fo.n_inter = (int)nlast;
    fo.inter_blocks = blocks;
    DV_TRY(dv_vit_forward(m, w, a, groups, ngroups, &fo));
    for (int64_t g = 0; g < ngroups; g++) {
        const dv_vit_group_layout *gl = &a->grp[g];
        const int64_t c0 = gl->crop0, n = gl->n, P = gl->P, L = gl->L;
        if (out->cls)
            dv_vit_gather(out->cls + c0 * D, a->x_norm, a, g, DV_VIT_CLS);
        if (out->patch)
            dv_vit_gather(out->patch + c0 * P * D, a->x_norm, a, g, DV_VIT_PATCH);
        if (out->reg && R > 0)
            dv_vit_gather(out->reg + c0 * R * D, a->x_norm, a, g, DV_VIT_REG);
        if (out->avgpool) {
#pragma omp parallel for schedule(static)
            for (int64_t i = 0; i < n; i++) {
                const float *x = a->x_norm + (gl->row0 + i * L + 1 + R) * D;
                float *dst = out->avgpool + (c0 + i) * D;
                for (int64_t d = 0; d < D; d++) {
                    double acc = 0.0;
                    for (int64_t t = 0; t < P; t++)
                        acc += x[t * D + d];
                    dst[d] = (float)(acc / (double)P);
                }
            }
        }
        for (int64_t k = 0; k < nlast; k++)
            for (int64_t i = 0; i < n; i++)
                memcpy(out->cls_last + ((c0 + i) * nlast + k) * D,
                       a->inter_norm[k] + (gl->row0 + i * L) * D, (size_t)D * sizeof(float));
    }
    return DV_OK;
}

/* ---- the job ------------------------------------------------------------------------------ */

typedef struct {
    char *path;
    int64_t count, first; /* images, global index of the first */
    int64_t layout, h, w, c, num_classes;
} shard_;

typedef struct {
    MPI_Comm comm;
    int rank, world;
    const dv_embed_opts *o;
    dv_vit m;
    float *w;
    shard_ *sh;
    int64_t nsh, N;
    int64_t lo, hi;         /* this rank's slice */
    int64_t D, R, p, nlast; /* nlast: 0 without probe features */
    int64_t H, W, P;        /* uniform output size (0 when it varies) */
    int64_t max_pixels;     /* largest H·W of a preprocessed image known in advance (0: unknown) */
    int64_t num_classes;
    int any_encoded;
} job_;

/* A user error every rank detects identically: printed once, by rank 0. */
static int job_error_(const job_ *j, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int job_error_(const job_ *j, int status, const char *fmt, ...) {
    if (j->rank == 0) {
        char text[1024];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(text, sizeof text, fmt, ap);
        va_end(ap);
        dv_user_error("%s", text);
    }
    return status;
}

static void job_free_(job_ *j) {
    for (int64_t i = 0; i < j->nsh; i++)
        free(j->sh[i].path);
    free(j->sh);
    free(j->w);
    dv_vit_free(&j->m);
    memset(j, 0, sizeof *j);
}

/* Rank 0 lists and probes the shards; the table is broadcast. */
static int probe_shards_(job_ *j) {
    int st = DV_OK;
    char **paths = NULL;
    int n = 0;
    if (j->rank == 0) {
        st = dv_shards_resolve(j->o->data, &paths, &n);
        if (st == DV_OK) {
            j->sh = calloc((size_t)n, sizeof *j->sh);
            if (!j->sh)
                st = DV_ERR(DV_ERR_NOMEM, "out of memory");
        }
        for (int64_t i = 0; i < n && st == DV_OK; i++) {
            dv_h5img r;
            st = dv_h5img_open(paths[i], MPI_COMM_NULL, &r);
            if (st != DV_OK)
                break;
            shard_ *s = &j->sh[i];
            s->path = paths[i];
            paths[i] = NULL;
            s->count = r.count;
            s->layout = r.layout;
            s->h = r.height;
            s->w = r.width;
            s->c = r.channels;
            s->num_classes = r.num_classes;
            dv_h5img_close(&r);
            j->nsh = i + 1;
        }
        dv_shards_free(paths, n);
    }
    st = bcast_status_(j->comm, st);
    if (st != DV_OK || j->comm == MPI_COMM_NULL)
        return st;
    /* serialise: nsh, then per shard 7 int64 + path bytes */
    int64_t bytes = 0;
    char *buf = NULL;
    if (j->rank == 0) {
        bytes = 8;
        for (int64_t i = 0; i < j->nsh; i++)
            bytes += 7 * 8 + (int64_t)strlen(j->sh[i].path) + 1;
    }
    DV_CHECK_MPI(MPI_Bcast(&bytes, 1, MPI_INT64_T, 0, j->comm));
    if (bytes > 0x7fffffff)
        return DV_ERR(DV_ERR_ARG, "shard table too large");
    DV_CHECK_ALLOC(buf = malloc((size_t)bytes));
    if (j->rank == 0) {
        char *q = buf;
        memcpy(q, &j->nsh, 8);
        q += 8;
        for (int64_t i = 0; i < j->nsh; i++) {
            const shard_ *s = &j->sh[i];
            int64_t v[7] = {
                s->count, s->layout, s->h, s->w, s->c, s->num_classes, (int64_t)strlen(s->path)};
            memcpy(q, v, sizeof v);
            q += sizeof v;
            memcpy(q, s->path, (size_t)v[6] + 1);
            q += v[6] + 1;
        }
    }
    st = MPI_Bcast(buf, (int)bytes, MPI_BYTE, 0, j->comm) == MPI_SUCCESS ? DV_OK : DV_ERR_MPI;
    if (st == DV_OK && j->rank != 0) {
        const char *q = buf;
        memcpy(&j->nsh, q, 8);
        q += 8;
        j->sh = calloc((size_t)(j->nsh ? j->nsh : 1), sizeof *j->sh);
        if (!j->sh)
            st = DV_ERR(DV_ERR_NOMEM, "out of memory");
        for (int64_t i = 0; i < j->nsh && st == DV_OK; i++) {
            int64_t v[7];
            memcpy(v, q, sizeof v);
            q += sizeof v;
            shard_ *s = &j->sh[i];
            s->count = v[0];
            s->layout = v[1];
            s->h = v[2];
            s->w = v[3];
            s->c = v[4];
            s->num_classes = v[5];
            s->path = strdup(q);
            if (!s->path)
                st = DV_ERR(DV_ERR_NOMEM, "out of memory");
            q += v[6] + 1;
        }
    }
    free(buf);
    return agree_(j->comm, st);
}

static int job_setup_(job_ *j, const dv_embed_opts *o, MPI_Comm comm) {
    memset(j, 0, sizeof *j);
    j->comm = comm;
    j->o = o;
    j->world = 1;
    if (comm != MPI_COMM_NULL) {
        MPI_Comm_rank(comm, &j->rank);
        MPI_Comm_size(comm, &j->world);
    }
    if (o->batch < 1)
        return job_error_(j, DV_ERR_ARG, "--batch must be at least 1 (got %d)", o->batch);
    if (o->image_size < 0)
        return job_error_(j, DV_ERR_ARG, "--image-size must be 0 or positive (got %d)",
                          o->image_size);
    DV_TRY(probe_shards_(j));
    DV_TRY(dv_embed_load_backbone(o, comm, &j->m, &j->w));
    const dv_vit_config *c = &j->m.cfg;
    j->D = c->embed_dim;
    j->R = c->num_register_tokens;
    j->p = c->patch_size;
    j->nlast = o->probe_features ? dv_embed_nlast(&j->m) : 0;
    const int64_t p = j->p;
    int64_t N = 0;
    for (int64_t i = 0; i < j->nsh; i++) {
        shard_ *s = &j->sh[i];
        s->first = N;
        N += s->count;
        if (s->num_classes > j->num_classes)
            j->num_classes = s->num_classes;
        if (s->layout == DV_H5IMG_ENCODED)
            j->any_encoded = 1;
        if (s->layout == DV_H5IMG_RAW && s->count > 0) {
            if (s->c != 1 && s->c != 3)
                return job_error_(j, DV_ERR_FORMAT, "%s: images with %lld channels (need 1 or 3)",
                                  s->path, (long long)s->c);
        }
    }
    j->N = N;
    if (N < 1)
        return job_error_(j, DV_ERR_ARG, "%s: the shards hold no image", o->data);
    if (o->image_size > 0) {
        if (o->image_size % p) {
            int64_t near = (o->image_size + p / 2) / p * p;
            return job_error_(
                j, DV_ERR_ARG,
                "--image-size %d is not a multiple of the patch size %lld (e.g. %lld)",
                o->image_size, (long long)p, (long long)(near > 0 ? near : p));
        }
        j->H = j->W = o->image_size;
        j->max_pixels = (int64_t)o->image_size * o->image_size;
    } else {
        int uniform = 1;
        for (int64_t i = 0; i < j->nsh; i++) {
            const shard_ *s = &j->sh[i];
            if (s->count == 0)
                continue;
            if (s->layout == DV_H5IMG_ENCODED) {
                uniform = 0;
                continue;
            }
            if (s->h % p || s->w % p)
                return job_error_(
                    j, DV_ERR_ARG,
                    "%s: images are %lldx%lld pixels, not multiples of the patch size "
                    "%lld; pass an image size (--image-size S, a multiple of %lld)",
                    s->path, (long long)s->h, (long long)s->w, (long long)p, (long long)p);
            if (s->h * s->w > j->max_pixels)
                j->max_pixels = s->h * s->w;
            if (j->H == 0) {
                j->H = s->h;
                j->W = s->w;
            } else if (j->H != s->h || j->W != s->w) {
                uniform = 0;
            }
        }
        if (j->any_encoded)
            j->max_pixels = 0; /* unknown until decoded */
        if (!uniform)
            j->H = j->W = 0;
    }
    j->P = j->H > 0 ? (j->H / p) * (j->W / p) : 0;
    if (o->patch_tokens && j->P == 0)
        return job_error_(j, DV_ERR_ARG,
                          "--patch-tokens needs every image at one size, and the shards hold %s: "
                          "pass --image-size S",
                          j->any_encoded ? "encoded images of unknown sizes" : "several sizes");
    j->lo = N * j->rank / j->world;
    j->hi = N * (j->rank + 1) / j->world;
    return DV_OK;
}

/* ---- the batch loop ----------------------------------------------------------------------- */

typedef struct {
    const uint8_t *src; /* raw pixels, or encoded bytes */
    size_t size;        /* encoded bytes */
    int h, w, c;        /* raw: stored size */
    int encoded;
    int64_t shard, index; /* for messages */
    int H, W;             /* preprocessed size */
    size_t off;           /* float offset in the image buffer */
} item_;

typedef int (*sink_fn_)(void *ctx, int64_t start, int64_t count, const dv_features_rows *rows);

typedef struct {
    /* the shard open for reading (the slice is contiguous: shards come in order) */
    int64_t open_shard;
    dv_h5img rd;
    /* batch buffers */
    uint8_t *raw;
    size_t raw_cap;
    dv_h5img_blobs *blobs; /* one per shard segment of a batch */
    int64_t nblobs;
    float *img;
    size_t img_cap;
    item_ *items;
    dv_vit_group *groups;
    dv_vit_acts *acts;
    float *cls, *patch, *reg, *avg, *last;
    int32_t *labels;
    uint64_t *ids;
    /* per thread */
    int nthr;
    dv_augment_scratch **scr;
    dv_decoder **dec;
    dv_image *dimg;
    uint8_t **u8;
    size_t *u8_cap;
    int *err;
    char (*msg)[DV_DECODE_MSG];
} loop_;

static void loop_free_(loop_ *L) {
    if (L->open_shard >= 0)
        dv_h5img_close(&L->rd);
    free(L->raw);
    for (int64_t i = 0; i < L->nblobs; i++)
        dv_h5img_blobs_free(&L->blobs[i]);
    free(L->blobs);
    free(L->img);
    free(L->items);
    free(L->groups);
    dv_vit_acts_free(L->acts);
    free(L->cls);
    free(L->patch);
    free(L->reg);
    free(L->avg);
    free(L->last);
    free(L->labels);
    free(L->ids);
    for (int t = 0; t < L->nthr; t++) {
        if (L->scr)
            dv_augment_scratch_free(L->scr[t]);
        if (L->dec && L->dec[t])
            dv_decoder_destroy(L->dec[t]);
        if (L->dimg)
            dv_image_free(&L->dimg[t]);
        if (L->u8)
            free(L->u8[t]);
    }
    free(L->scr);
    free(L->dec);
    free(L->dimg);
    free(L->u8);
    free(L->u8_cap);
    free(L->err);
    free(L->msg);
}

static int grow_(void **p, size_t *cap, size_t need) {
    if (need <= *cap)
        return DV_OK;
    size_t n = need + need / 4;
    void *q = realloc(*p, n);
    DV_CHECK_ALLOC(q);
    *p = q;
    *cap = n;
    return DV_OK;
}

static int loop_init_(loop_ *L, const job_ *j) {
    memset(L, 0, sizeof *L);
    L->open_shard = -1;
    const int64_t B = j->o->batch, D = j->D;
    L->nthr = omp_get_max_threads();
    DV_CHECK_ALLOC(L->items = calloc((size_t)B, sizeof *L->items));
    DV_CHECK_ALLOC(L->groups = calloc((size_t)B, sizeof *L->groups));
    DV_CHECK_ALLOC(L->blobs = calloc((size_t)(B < j->nsh ? B : j->nsh) + 1, sizeof *L->blobs));
    DV_CHECK_ALLOC(L->cls = malloc((size_t)(B * D) * sizeof(float)));
    DV_CHECK_ALLOC(L->labels = malloc((size_t)B * sizeof(int32_t)));
    DV_CHECK_ALLOC(L->ids = malloc((size_t)B * sizeof(uint64_t)));
    if (j->o->patch_tokens)
        DV_CHECK_ALLOC(L->patch = malloc((size_t)(B * j->P * D) * sizeof(float)));
    if (j->o->reg_tokens && j->R > 0)
        DV_CHECK_ALLOC(L->reg = malloc((size_t)(B * j->R * D) * sizeof(float)));
    if (j->nlast > 0) {
        DV_CHECK_ALLOC(L->avg = malloc((size_t)(B * D) * sizeof(float)));
        DV_CHECK_ALLOC(L->last = malloc((size_t)(B * j->nlast * D) * sizeof(float)));
    }
    const int nt = L->nthr;
    DV_CHECK_ALLOC(L->scr = calloc((size_t)nt, sizeof *L->scr));
    DV_CHECK_ALLOC(L->dec = calloc((size_t)nt, sizeof *L->dec));
    DV_CHECK_ALLOC(L->dimg = calloc((size_t)nt, sizeof *L->dimg));
    DV_CHECK_ALLOC(L->u8 = calloc((size_t)nt, sizeof *L->u8));
    DV_CHECK_ALLOC(L->u8_cap = calloc((size_t)nt, sizeof *L->u8_cap));
    DV_CHECK_ALLOC(L->err = calloc((size_t)nt, sizeof *L->err));
    DV_CHECK_ALLOC(L->msg = calloc((size_t)nt, sizeof *L->msg));
    for (int t = 0; t < nt; t++) {
        DV_TRY(dv_augment_scratch_create(&L->scr[t]));
        if (j->any_encoded)
            DV_TRY(dv_decoder_create(&L->dec[t]));
    }
    if (j->max_pixels > 0) {
        const int64_t Lmax = 1 + j->R + j->max_pixels / (j->p * j->p);
        DV_TRY(dv_vit_acts_create(&j->m, B * Lmax, 0, (int)j->nlast, &L->acts));
        DV_TRY(
            grow_((void **)&L->img, &L->img_cap, (size_t)(B * 3 * j->max_pixels) * sizeof(float)));
    }
    return DV_OK;
}

static int open_shard_(loop_ *L, const job_ *j, int64_t s) {
    if (L->open_shard == s)
        return DV_OK;
    if (L->open_shard >= 0)
        dv_h5img_close(&L->rd);
    L->open_shard = -1;
    DV_TRY(dv_h5img_open(j->sh[s].path, MPI_COMM_NULL, &L->rd));
    if (L->rd.count != j->sh[s].count || (int64_t)L->rd.layout != j->sh[s].layout)
        return DV_ERR(DV_ERR_FORMAT, "%s changed while embedding", j->sh[s].path);
    L->open_shard = s;
    return DV_OK;
}

/* Read images [g0, g0 + n) (global indices) with labels and ids into the loop buffers. */
static int load_batch_(loop_ *L, const job_ *j, int64_t g0, int64_t n) {
    for (int64_t i = 0; i < L->nblobs; i++)
        dv_h5img_blobs_free(&L->blobs[i]);
    L->nblobs = 0;
    /* raw bytes needed */
    int64_t s = 0;
    while (s < j->nsh && j->sh[s].first + j->sh[s].count <= g0)
        s++;
    size_t raw_bytes = 0;
    {
        int64_t g = g0, ss = s;
        while (g < g0 + n) {
            const shard_ *sh = &j->sh[ss];
            int64_t take = sh->first + sh->count - g;
            if (take > g0 + n - g)
                take = g0 + n - g;
            if (sh->layout == DV_H5IMG_RAW)
                raw_bytes += (size_t)(take * sh->h * sh->w * sh->c);
            g += take;
            ss++;
        }
    }
    if (raw_bytes)
        DV_TRY(grow_((void **)&L->raw, &L->raw_cap, raw_bytes));
    size_t roff = 0;
    int64_t g = g0;
    while (g < g0 + n) {
        while (j->sh[s].first + j->sh[s].count <= g)
            s++;
        const shard_ *sh = &j->sh[s];
        const int64_t local = g - sh->first;
        int64_t take = sh->count - local;
        if (take > g0 + n - g)
            take = g0 + n - g;
        DV_TRY(open_shard_(L, j, s));
        const int64_t b = g - g0;
        DV_TRY(dv_h5img_read_labels(&L->rd, local, take, L->labels + b));
        DV_TRY(dv_h5img_read_ids(&L->rd, local, take, L->ids + b));
        if (sh->layout == DV_H5IMG_RAW) {
            DV_TRY(dv_h5img_read_raw(&L->rd, local, take, L->raw + roff));
            const size_t per = (size_t)(sh->h * sh->w * sh->c);
            for (int64_t i = 0; i < take; i++) {
                item_ *it = &L->items[b + i];
                memset(it, 0, sizeof *it);
                it->src = L->raw + roff + (size_t)i * per;
                it->h = (int)sh->h;
                it->w = (int)sh->w;
                it->c = (int)sh->c;
                it->shard = s;
                it->index = local + i;
            }
            roff += (size_t)take * per;
        } else {
            dv_h5img_blobs *bl = &L->blobs[L->nblobs];
            DV_TRY(dv_h5img_read_encoded(&L->rd, local, take, bl));
            L->nblobs++;
            for (int64_t i = 0; i < take; i++) {
                item_ *it = &L->items[b + i];
                memset(it, 0, sizeof *it);
                it->src = bl->data + bl->offsets[i];
                it->size = bl->offsets[i + 1] - bl->offsets[i];
                it->encoded = 1;
                it->shard = s;
                it->index = local + i;
            }
        }
        g += take;
    }
    return DV_OK;
}

/* The first failing thread's status (its message printed once). */
static int thread_errors_(loop_ *L) {
    for (int t = 0; t < L->nthr; t++)
        if (L->err[t] != DV_OK) {
            if (L->msg[t][0])
                dv_user_error("%s", L->msg[t]);
            return L->err[t];
        }
    return DV_OK;
}

static void set_err_(loop_ *L, int t, int status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void set_err_(loop_ *L, int t, int status, const char *fmt, ...) {
    if (L->err[t] != DV_OK)
        return;
    L->err[t] = status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(L->msg[t], sizeof L->msg[t], fmt, ap);
    va_end(ap);
}

static int thread_u8_(loop_ *L, int t, size_t need) {
    return grow_((void **)&L->u8[t], &L->u8_cap[t], need);
}

/* Preprocess the n loaded images into L->img, filling each item's H, W and offset. */
static int preprocess_batch_(loop_ *L, const job_ *j, int64_t n) {
    const int S = j->o->image_size;
    const int64_t p = j->p;
    for (int t = 0; t < L->nthr; t++) {
        L->err[t] = DV_OK;
        L->msg[t][0] = 0;
    }
    /* output sizes: fixed, stored, or (encoded at size 0) from the headers */
    int need_headers = 0;
    for (int64_t i = 0; i < n; i++) {
        item_ *it = &L->items[i];
        if (S > 0) {
            it->H = it->W = S;
        } else if (!it->encoded) {
            it->H = it->h;
            it->W = it->w;
        } else {
            need_headers = 1;
        }
    }
    if (need_headers) {
#pragma omp parallel for schedule(dynamic, 1)
        for (int64_t i = 0; i < n; i++) {
            const int t = omp_get_thread_num();
            item_ *it = &L->items[i];
            if (!it->encoded)
                continue;
            int hh = 0, ww = 0, cc = 0;
            char msg[DV_DECODE_MSG];
            int st = dv_decode_header(L->dec[t], it->src, it->size, j->sh[it->shard].path, &hh, &ww,
                                      &cc, msg, sizeof msg);
            if (st != DV_OK) {
                set_err_(L, t, st, "%s[%lld]: %s", j->sh[it->shard].path, (long long)it->index,
                         msg);
                continue;
            }
            if (hh % p || ww % p) {
                set_err_(L, t, DV_ERR_ARG,
                         "%s[%lld]: image is %dx%d pixels, not multiples of the patch size %lld; "
                         "pass an image size (--image-size S)",
                         j->sh[it->shard].path, (long long)it->index, hh, ww, (long long)p);
                continue;
            }
            it->H = hh;
            it->W = ww;
        }
        DV_TRY(thread_errors_(L));
    }
    size_t off = 0;
    for (int64_t i = 0; i < n; i++) {
        L->items[i].off = off;
        off += (size_t)3 * (size_t)L->items[i].H * (size_t)L->items[i].W;
    }
    DV_TRY(grow_((void **)&L->img, &L->img_cap, off * sizeof(float)));
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t i = 0; i < n; i++) {
        const int t = omp_get_thread_num();
        item_ *it = &L->items[i];
        const uint8_t *px = it->src;
        int h = it->h, w = it->w, c = it->c;
        const char *path = j->sh[it->shard].path;
        if (it->encoded) {
            char msg[DV_DECODE_MSG];
            dv_decode_opts dop = {.channels = 3, .min_size = 0, .strict = 0};
            int st =
                dv_decode(L->dec[t], it->src, it->size, path, &dop, &L->dimg[t], msg, sizeof msg);
            if (st != DV_OK) {
                set_err_(L, t, st, "%s[%lld]: %s", path, (long long)it->index, msg);
                continue;
            }
            px = L->dimg[t].pixels;
            h = L->dimg[t].height;
            w = L->dimg[t].width;
            c = L->dimg[t].channels;
            if (S == 0 && (h != it->H || w != it->W)) {
                set_err_(L, t, DV_ERR_FORMAT,
                         "%s[%lld]: decoded size %dx%d differs from its header", path,
                         (long long)it->index, h, w);
                continue;
            }
        }
        uint8_t *u8 = NULL;
        if (S == 0 && c == 1) {
            if (thread_u8_(L, t, (size_t)h * (size_t)w * 3) != DV_OK) {
                set_err_(L, t, DV_ERR_NOMEM, "out of memory");
                continue;
            }
            u8 = L->u8[t];
        }
        int st = dv_embed_preprocess(px, h, w, c, S, L->img + it->off, u8, L->scr[t]);
        if (st != DV_OK)
            set_err_(L, t, st, "%s[%lld]: preprocessing failed", path, (long long)it->index);
    }
    return thread_errors_(L);
}

static int forward_batch_(loop_ *L, const job_ *j, int64_t n) {
    int64_t ng = 0;
    for (int64_t i = 0; i < n; i++) {
        const item_ *it = &L->items[i];
        if (ng > 0 && L->groups[ng - 1].H == it->H && L->groups[ng - 1].W == it->W) {
            L->groups[ng - 1].n++;
            continue;
        }
        dv_vit_group *g = &L->groups[ng++];
        g->n = 1;
        g->H = it->H;
        g->W = it->W;
        g->images = L->img + it->off;
        g->masks = NULL;
    }
    const int64_t T = dv_vit_tokens(&j->m, L->groups, ng);
    if (!L->acts || L->acts->max_tokens < T) {
        dv_vit_acts_free(L->acts);
        L->acts = NULL;
        DV_TRY(dv_vit_acts_create(&j->m, T + T / 4, 0, (int)j->nlast, &L->acts));
    }
    dv_embed_out out = {
        .cls = L->cls, .patch = L->patch, .reg = L->reg, .avgpool = L->avg, .cls_last = L->last};
    return dv_embed_forward(&j->m, j->w, L->acts, L->groups, ng, &out);
}

static void fmt_secs_(double s, char *buf, size_t n) {
    if (!(s >= 0) || s > 1e8) {
        snprintf(buf, n, "?");
        return;
    }
    long v = (long)(s + 0.5);
    if (v >= 3600)
        snprintf(buf, n, "%ldh%02ldm", v / 3600, v / 60 % 60);
    else if (v >= 60)
        snprintf(buf, n, "%ldm%02lds", v / 60, v % 60);
    else
        snprintf(buf, n, "%lds", v);
}

static int run_loop_(const job_ *j, sink_fn_ sink, void *ctx, dv_embed_stats *stats) {
    loop_ L;
    int st = loop_init_(&L, j);
    st = agree_(j->comm, st);
    if (st != DV_OK) {
        loop_free_(&L);
        return st;
    }
    const int64_t B = j->o->batch;
    const int64_t max_local = (j->N + j->world - 1) / j->world;
    const int64_t rounds = (max_local + B - 1) / B;
    const int tty = j->rank == 0 && j->o->progress && isatty(STDERR_FILENO);
    const double t0 = dv_now();
    double last_print = t0;
    for (int64_t r = 0; r < rounds && st == DV_OK; r++) {
        int64_t b0 = j->lo + r * B, b1 = b0 + B;
        if (b1 > j->hi)
            b1 = j->hi;
        const int64_t n = b1 > b0 ? b1 - b0 : 0;
        if (n > 0) {
            st = load_batch_(&L, j, b0, n);
            if (st == DV_OK)
                st = preprocess_batch_(&L, j, n);
            if (st == DV_OK)
                st = forward_batch_(&L, j, n);
        }
        st = agree_(j->comm, st);
        if (st != DV_OK)
            break;
        dv_features_rows rows = {.cls = L.cls,
                                 .patch = L.patch,
                                 .reg = L.reg,
                                 .avgpool = L.avg,
                                 .cls_last = L.last,
                                 .labels = L.labels,
                                 .ids = L.ids};
        st = sink(ctx, n > 0 ? b0 : 0, n, &rows);
        st = agree_(j->comm, st);
        if (tty) {
            const double now = dv_now();
            if (now - last_print >= 0.5 || r + 1 == rounds) {
                last_print = now;
                int64_t done = (n > 0 ? b1 : j->hi) - j->lo;
                done = done * j->world;
                if (done > j->N || r + 1 == rounds)
                    done = j->N;
                const double rate = done / (now - t0 > 1e-9 ? now - t0 : 1e-9);
                char eta[32];
                fmt_secs_((double)(j->N - done) / (rate > 0 ? rate : 1), eta, sizeof eta);
                fprintf(stderr, "\rembed: %lld/%lld images  %.1f img/s  ETA %s   ", (long long)done,
                        (long long)j->N, rate, eta);
                fflush(stderr);
            }
        }
    }
    if (tty)
        fprintf(stderr, "\n");
    double secs = dv_now() - t0;
    if (j->comm != MPI_COMM_NULL) {
        double mx = secs;
        if (MPI_Allreduce(&secs, &mx, 1, MPI_DOUBLE, MPI_MAX, j->comm) == MPI_SUCCESS)
            secs = mx;
    }
    if (stats) {
        stats->images = j->N;
        stats->seconds = secs;
        stats->img_per_s = secs > 0 ? (double)j->N / secs : 0.0;
    }
    loop_free_(&L);
    return st;
}

/* ---- outputs ------------------------------------------------------------------------------ */

static int file_sink_(void *ctx, int64_t start, int64_t count, const dv_features_rows *rows) {
    return dv_features_write(ctx, start, count, rows);
}

static int write_attrs_(dv_features_writer *w, const job_ *j) {
    const dv_embed_opts *o = j->o;
    const dv_vit_config *c = &j->m.cfg;
    DV_TRY(dv_features_attr_i64(w, "patch_size", c->patch_size));
    DV_TRY(dv_features_attr_i64(w, "depth", c->depth));
    DV_TRY(dv_features_attr_i64(w, "num_heads", c->num_heads));
    DV_TRY(dv_features_attr_i64(w, "num_register_tokens", c->num_register_tokens));
    DV_TRY(dv_features_attr_str(w, "ffn_layer", dv_vit_ffn_name(c->ffn)));
    DV_TRY(dv_features_attr_i64(w, "image_size", o->image_size));
    DV_TRY(dv_features_attr_i64(w, "resize_size",
                                o->image_size > 0 ? dv_eval_resize_size(o->image_size) : 0));
    DV_TRY(dv_features_attr_str(w, "transform",
                                o->image_size > 0
                                    ? "Resize(round(S*256/224), bicubic) CenterCrop(S) Normalize"
                                    : "Normalize (as stored)"));
    DV_TRY(dv_features_attr_i64(w, "height", j->H));
    DV_TRY(dv_features_attr_i64(w, "width", j->W));
    DV_TRY(dv_features_attr_i64(w, "num_patches", j->P));
    DV_TRY(dv_features_attr_i64(w, "num_classes", j->num_classes));
    if (j->nlast > 0) {
        int64_t b[4];
        for (int64_t k = 0; k < j->nlast; k++)
            b[k] = c->depth - j->nlast + k;
        DV_TRY(dv_features_attr_i64v(w, "cls_last4_blocks", b, j->nlast));
    }
    const int ck = o->checkpoint && *o->checkpoint;
    DV_TRY(dv_features_attr_str(w, "source", ck ? o->checkpoint : o->weights));
    DV_TRY(dv_features_attr_str(
        w, "source_group", ck ? (o->group && *o->group ? o->group : DV_EMBED_DEFAULT_GROUP) : "/"));
    DV_TRY(dv_features_attr_str(w, "data", o->data));
    DV_TRY(dv_features_attr_str(w, "producer", "dinov2-embed"));
    return DV_OK;
}

int dv_embed_file(const dv_embed_opts *o, const char *output, MPI_Comm comm, dv_embed_stats *st) {
    if (st)
        memset(st, 0, sizeof *st);
    job_ j;
    int s = job_setup_(&j, o, comm);
    if (s == DV_OK && (!output || !*output))
        s = job_error_(&j, DV_ERR_ARG, "no --output file given");
    if (s != DV_OK) {
        job_free_(&j);
        return s;
    }
    dv_features_spec sp = {.n = j.N,
                           .dim = j.D,
                           .npatch = o->patch_tokens ? j.P : 0,
                           .nreg = o->reg_tokens ? j.R : 0,
                           .nlast = j.nlast,
                           .avgpool = j.nlast > 0,
                           .chunk_rows = 0};
    dv_features_writer *w = NULL;
    s = dv_features_create(output, comm, &sp, &w);
    if (s == DV_OK) {
        s = agree_(comm, write_attrs_(w, &j));
        if (s == DV_OK)
            s = run_loop_(&j, file_sink_, w, st);
        if (s == DV_OK)
            s = dv_features_commit(w);
        else
            dv_features_discard(w);
    }
    job_free_(&j);
    return s;
}

/* rows go to their global place in full-size arrays (gathered afterwards) */
static int mem_sink_fn_(void *ctx, int64_t start, int64_t count, const dv_features_rows *rows) {
    dv_features *f = ctx;
    if (count == 0)
        return DV_OK;
    const int64_t D = f->dim;
    memcpy(f->cls + start * D, rows->cls, (size_t)(count * D) * sizeof(float));
    memcpy(f->labels + start, rows->labels, (size_t)count * sizeof(int32_t));
    memcpy(f->ids + start, rows->ids, (size_t)count * sizeof(uint64_t));
    if (f->patch)
        memcpy(f->patch + start * f->npatch * D, rows->patch,
               (size_t)(count * f->npatch * D) * sizeof(float));
    if (f->reg)
        memcpy(f->reg + start * f->nreg * D, rows->reg,
               (size_t)(count * f->nreg * D) * sizeof(float));
    if (f->avgpool)
        memcpy(f->avgpool + start * D, rows->avgpool, (size_t)(count * D) * sizeof(float));
    if (f->cls_last)
        memcpy(f->cls_last + start * f->nlast * D, rows->cls_last,
               (size_t)(count * f->nlast * D) * sizeof(float));
    return DV_OK;
}

/* In-place allgather of rows [lo_r, hi_r) of every rank; a row is `row` elements of `type`. */
static int allgather_rows_(void *buf, int64_t row, MPI_Datatype type, const job_ *j) {
    if (!buf || j->comm == MPI_COMM_NULL || j->world == 1)
        return DV_OK;
    int *counts = malloc((size_t)j->world * sizeof *counts);
    int *displs = malloc((size_t)j->world * sizeof *displs);
    if (!counts || !displs) {
        free(counts);
        free(displs);
        return DV_ERR(DV_ERR_NOMEM, "out of memory");
    }
    for (int r = 0; r < j->world; r++) {
        const int64_t lo = j->N * r / j->world, hi = j->N * (r + 1) / j->world;
        counts[r] = (int)(hi - lo);
        displs[r] = (int)lo;
    }
    MPI_Datatype rt;
    int st = DV_OK;
    if (MPI_Type_contiguous((int)row, type, &rt) != MPI_SUCCESS ||
        MPI_Type_commit(&rt) != MPI_SUCCESS) {
        st = DV_ERR(DV_ERR_MPI, "MPI_Type_contiguous failed");
    } else {
        if (MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, counts, displs, rt, j->comm) !=
            MPI_SUCCESS)
            st = DV_ERR(DV_ERR_MPI, "MPI_Allgatherv of features failed");
        MPI_Type_free(&rt);
    }
    free(counts);
    free(displs);
    return st;
}

int dv_embed_memory(const dv_embed_opts *o, MPI_Comm comm, dv_features *out, dv_embed_stats *st) {
    memset(out, 0, sizeof *out);
    if (st)
        memset(st, 0, sizeof *st);
    job_ j;
    int s = job_setup_(&j, o, comm);
    if (s == DV_OK && j.N > 0x7fffffff)
        s = job_error_(&j, DV_ERR_ARG, "too many images for memory");
    if (s != DV_OK) {
        job_free_(&j);
        return s;
    }
    out->dim = j.D;
    out->npatch = o->patch_tokens ? j.P : 0;
    out->nreg = o->reg_tokens ? j.R : 0;
    out->nlast = j.nlast;
    out->has_avgpool = j.nlast > 0;
    s = agree_(comm, dv_features_alloc(out, j.N));
    if (s == DV_OK) {
        out->total = j.N;
        out->num_classes = j.num_classes;
        out->image_size = o->image_size;
        s = run_loop_(&j, mem_sink_fn_, out, st);
    }
    if (s == DV_OK) {
        const int64_t D = j.D;
        s = allgather_rows_(out->cls, D, MPI_FLOAT, &j);
        if (s == DV_OK)
            s = allgather_rows_(out->labels, 1, MPI_INT32_T, &j);
        if (s == DV_OK)
            s = allgather_rows_(out->ids, 1, MPI_UINT64_T, &j);
        if (s == DV_OK)
            s = allgather_rows_(out->patch, out->npatch * D, MPI_FLOAT, &j);
        if (s == DV_OK)
            s = allgather_rows_(out->reg, out->nreg * D, MPI_FLOAT, &j);
        if (s == DV_OK)
            s = allgather_rows_(out->avgpool, D, MPI_FLOAT, &j);
        if (s == DV_OK)
            s = allgather_rows_(out->cls_last, out->nlast * D, MPI_FLOAT, &j);
        s = agree_(comm, s);
    }
    if (s != DV_OK)
        dv_features_free(out);
    job_free_(&j);
    return s;
}
