/* ckpt — see ckpt.h and doc/checkpoints.md. */
#include "ckpt.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checksum.h"
#include "err.h"
#include "h5util.h"
#include "weights.h"

#define PATH_MAX_     4096
#define ITEM_PATH_MAX (DV_PARAM_NAME_MAX + 64)

/* ---- reasons ------------------------------------------------------------------------------------
 */

static int fail_(char *why, size_t len, int st, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail_(char *why, size_t len, int st, const char *fmt, ...) {
    if (why && len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, len, fmt, ap);
        va_end(ap);
    }
    return st;
}

typedef struct {
    char text[256];
} h5walk_;

static herr_t h5walk_cb_(unsigned n, const H5E_error2_t *e, void *data) {
    h5walk_ *w = data;
    (void)n;
    snprintf(w->text, sizeof w->text, "%s", e->desc ? e->desc : "?");
    return 0;
}

/* The innermost message of HDF5's error stack (the cause), and clear the stack. */
static const char *h5msg_(h5walk_ *w) {
    snprintf(w->text, sizeof w->text, "HDF5 error");
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, h5walk_cb_, w);
    H5Eclear2(H5E_DEFAULT);
    return w->text;
}

static int fail_h5_(char *why, size_t len, const char *what, const char *path) {
    h5walk_ w;
    return fail_(why, len, DV_ERR_HDF5, "%s %s failed (%s)", what, path, h5msg_(&w));
}

static void close_id_(hid_t id) {
    if (id < 0) return;
    switch (H5Iget_type(id)) {
    case H5I_FILE: H5Fclose(id); break;
    case H5I_GROUP: H5Gclose(id); break;
    case H5I_DATASET: H5Dclose(id); break;
    case H5I_DATASPACE: H5Sclose(id); break;
    case H5I_DATATYPE: H5Tclose(id); break;
    case H5I_ATTR: H5Aclose(id); break;
    case H5I_GENPROP_LST: H5Pclose(id); break;
    default: break;
    }
}

static const char *shape_str_(const int64_t *shape, int ndim, char *buf, size_t len) {
    if (ndim == 0) {
        snprintf(buf, len, "() (scalar)");
        return buf;
    }
    return dv_param_shape_str(shape, ndim, buf, len);
}

/* ---- attributes -------------------------------------------------------------------------------
 */

static herr_t attr_write_(hid_t obj, const char *name, hid_t ftype, hid_t mtype, const void *v) {
    hid_t sp = H5Screate(H5S_SCALAR);
    if (sp < 0) return -1;
    hid_t a = H5Acreate2(obj, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT);
    herr_t r = a < 0 ? -1 : H5Awrite(a, mtype, v);
    if (a >= 0 && H5Aclose(a) < 0) r = -1;
    H5Sclose(sp);
    return r;
}

static herr_t attr_i64_(hid_t obj, const char *name, int64_t v) {
    return attr_write_(obj, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &v);
}

static herr_t attr_u64_(hid_t obj, const char *name, uint64_t v) {
    return attr_write_(obj, name, H5T_STD_U64LE, H5T_NATIVE_UINT64, &v);
}

/* Variable-length UTF-8 string (h5py reads a str). */
static herr_t attr_str_(hid_t obj, const char *name, const char *v) {
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t < 0) return -1;
    herr_t r = -1;
    if (H5Tset_size(t, H5T_VARIABLE) >= 0 && H5Tset_cset(t, H5T_CSET_UTF8) >= 0)
        r = attr_write_(obj, name, t, t, &v);
    H5Tclose(t);
    return r;
}

/* A scalar (or one-element) integer attribute; -1 when absent or not an integer. */
static herr_t attr_read_int_(hid_t obj, const char *name, hid_t mtype, void *v) {
    htri_t ex = H5Aexists(obj, name);
    if (ex <= 0) {
        H5Eclear2(H5E_DEFAULT);
        return -1;
    }
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) return -1;
    hid_t t = H5Aget_type(a), sp = H5Aget_space(a);
    herr_t r = -1;
    if (t >= 0 && sp >= 0 && H5Tget_class(t) == H5T_INTEGER &&
        H5Sget_simple_extent_npoints(sp) == 1)
        r = H5Aread(a, mtype, v);
    close_id_(t);
    close_id_(sp);
    H5Aclose(a);
    return r;
}

static herr_t attr_read_i64_(hid_t obj, const char *name, int64_t *v) {
    return attr_read_int_(obj, name, H5T_NATIVE_INT64, v);
}
static herr_t attr_read_u64_(hid_t obj, const char *name, uint64_t *v) {
    return attr_read_int_(obj, name, H5T_NATIVE_UINT64, v);
}

/* A string attribute (variable or fixed length) into a malloc'd copy; -1 when absent / not a
 * string. */
static herr_t attr_read_str_(hid_t obj, const char *name, char **out) {
    *out = NULL;
    htri_t ex = H5Aexists(obj, name);
    if (ex <= 0) {
        H5Eclear2(H5E_DEFAULT);
        return -1;
    }
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) return -1;
    hid_t ft = H5Aget_type(a), sp = H5Aget_space(a), mt = -1;
    herr_t r = -1;
    if (ft < 0 || sp < 0 || H5Tget_class(ft) != H5T_STRING || H5Sget_simple_extent_npoints(sp) != 1)
        goto done;
    mt = H5Tcopy(H5T_C_S1);
    if (mt < 0) goto done;
    if (H5Tis_variable_str(ft) > 0) {
        char *s = NULL;
        if (H5Tset_size(mt, H5T_VARIABLE) < 0 || H5Tset_cset(mt, H5Tget_cset(ft)) < 0 ||
            H5Aread(a, mt, &s) < 0)
            goto done;
        *out = strdup(s ? s : "");
        H5Dvlen_reclaim(mt, sp, H5P_DEFAULT, &s);
        r = *out ? 0 : -1;
    } else {
        size_t sz = H5Tget_size(ft);
        char *buf = calloc(sz + 1, 1);
        if (!buf || H5Tset_size(mt, sz + 1) < 0 || H5Aread(a, mt, buf) < 0) {
            free(buf);
            goto done;
        }
        *out = buf;
        r = 0;
    }
done:
    close_id_(mt);
    close_id_(sp);
    close_id_(ft);
    H5Aclose(a);
    return r;
}

/* ---- element types ------------------------------------------------------------------------------
 */

typedef enum { TY_F32 = 0, TY_F64 = 1, TY_I64 = 2 } ty_;
static const char *const ty_names_[] = {"float32", "float64", "int64"};

static hid_t ftype_(ty_ t) {
    return t == TY_F32 ? H5T_IEEE_F32LE : t == TY_F64 ? H5T_IEEE_F64LE : H5T_STD_I64LE;
}
static hid_t mtype_(ty_ t) {
    return t == TY_F32 ? H5T_NATIVE_FLOAT : t == TY_F64 ? H5T_NATIVE_DOUBLE : H5T_NATIVE_INT64;
}
static size_t tsize_(ty_ t) { return t == TY_F32 ? 4 : 8; }
static uint64_t tsum_(ty_ t, const void *p, size_t n, uint64_t first) {
    if (n == 0) return 0;
    return t == TY_F32 ? dv_sum64_f32(p, n, first) : dv_sum64_64(p, n, first);
}

/* Does the file type of a dataset match ty? */
static int type_matches_(hid_t ft, ty_ t) {
    H5T_class_t c = H5Tget_class(ft);
    size_t sz = H5Tget_size(ft);
    if (t == TY_I64) return c == H5T_INTEGER && sz == 8 && H5Tget_sign(ft) == H5T_SGN_2;
    return c == H5T_FLOAT && sz == tsize_(t);
}

/* ---- selections: elements [a, b) of a row-major array as a union of hyperslabs ------------- */

static herr_t sel_rec_(hid_t sp, int ndim, const hsize_t *dims, int d, hsize_t *start,
                       hsize_t *count, hsize_t a, hsize_t b, int *first) {
    if (a >= b) return 0;
    if (d == ndim - 1) {
        start[d] = a;
        count[d] = b - a;
        herr_t r = H5Sselect_hyperslab(sp, *first ? H5S_SELECT_SET : H5S_SELECT_OR, start, NULL,
                                       count, NULL);
        *first = 0;
        return r;
    }
    hsize_t inner = 1;
    for (int k = d + 1; k < ndim; k++) inner *= dims[k];
    hsize_t i0 = a / inner, r0 = a % inner, i1 = b / inner, r1 = b % inner;
    count[d] = 1;
    if (i0 == i1) {
        start[d] = i0;
        return sel_rec_(sp, ndim, dims, d + 1, start, count, r0, r1, first);
    }
    if (r0) {
        start[d] = i0;
        if (sel_rec_(sp, ndim, dims, d + 1, start, count, r0, inner, first) < 0) return -1;
        i0++;
    }
    if (i1 > i0) {
        start[d] = i0;
        count[d] = i1 - i0;
        for (int k = d + 1; k < ndim; k++) {
            start[k] = 0;
            count[k] = dims[k];
        }
        if (H5Sselect_hyperslab(sp, *first ? H5S_SELECT_SET : H5S_SELECT_OR, start, NULL, count,
                                NULL) < 0)
            return -1;
        *first = 0;
        count[d] = 1;
    }
    if (r1) {
        start[d] = i1;
        return sel_rec_(sp, ndim, dims, d + 1, start, count, 0, r1, first);
    }
    return 0;
}

/* Select elements [a, a + n) in row-major order of a dataspace (scalar: all or nothing). */
static herr_t select_flat_(hid_t sp, int ndim, const hsize_t *dims, hsize_t a, hsize_t n) {
    if (n == 0) return H5Sselect_none(sp);
    if (ndim == 0) return H5Sselect_all(sp);
    hsize_t start[DV_PARAM_MAX_DIMS], count[DV_PARAM_MAX_DIMS];
    int first = 1;
    return sel_rec_(sp, ndim, dims, 0, start, count, a, a + n, &first);
}

/* ---- the collective context --------------------------------------------------------------------
 */

typedef struct {
    MPI_Comm comm;
    int rank, world;
    hid_t xfer; /* collective transfer property list */
    char *why;
    size_t why_len;
} io_;

static int io_init_(io_ *io, const dv_ctx *ctx, char *why, size_t why_len) {
    io->comm = ctx->comm;
    io->rank = ctx->rank;
    io->world = ctx->world;
    io->why = why;
    io->why_len = why_len;
    if (why_len) why[0] = '\0';
    io->xfer = H5Pcreate(H5P_DATASET_XFER);
    if (io->xfer < 0 || H5Pset_dxpl_mpio(io->xfer, H5FD_MPIO_COLLECTIVE) < 0) {
        close_id_(io->xfer);
        io->xfer = -1;
        return fail_h5_(why, why_len, "setting up", "collective transfers");
    }
    return DV_OK;
}

static void io_free_(io_ *io) {
    close_id_(io->xfer);
    io->xfer = -1;
}

/* Collective: the status of the lowest failing rank, with its reason in every rank's why;
 * DV_OK when every rank passed DV_OK. */
static int agree_(io_ *io, int st) {
    int v = st != DV_OK ? io->world - io->rank : 0, m = 0;
    DV_CHECK_MPI(MPI_Allreduce(&v, &m, 1, MPI_INT, MPI_MAX, io->comm));
    if (m == 0) return DV_OK;
    const int root = io->world - m;
    DV_CHECK_MPI(MPI_Bcast(&st, 1, MPI_INT, root, io->comm));
    if (io->why_len) {
        int n = (int)io->why_len;
        DV_CHECK_MPI(MPI_Bcast(io->why, n, MPI_CHAR, root, io->comm));
        io->why[io->why_len - 1] = '\0';
    }
    return st;
}

/* Rank 0's status and reason on every rank. */
static int bcast0_(io_ *io, int st) {
    DV_CHECK_MPI(MPI_Bcast(&st, 1, MPI_INT, 0, io->comm));
    if (st != DV_OK && io->why_len) {
        DV_CHECK_MPI(MPI_Bcast(io->why, (int)io->why_len, MPI_CHAR, 0, io->comm));
        io->why[io->why_len - 1] = '\0';
    }
    return st;
}

static size_t numel_(int ndim, const int64_t *shape) {
    size_t n = 1;
    for (int k = 0; k < ndim; k++) n *= (size_t)shape[k];
    return n;
}

/* Collective write of one dataset: this rank writes elements [off, off + cnt) from src and adds
 * the checksum terms of elements [soff, soff + scnt) found at ssrc. */
static int tensor_write_(io_ *io, hid_t file, const char *path, ty_ ty, int ndim,
                         const int64_t *shape, const void *src, size_t off, size_t cnt,
                         const void *ssrc, size_t soff, size_t scnt) {
    int st = DV_OK;
    hid_t fs = -1, ms = -1, d = -1, dcpl = -1;
    hsize_t dims[DV_PARAM_MAX_DIMS];
    for (int k = 0; k < ndim; k++) dims[k] = (hsize_t)shape[k];
    const size_t n = numel_(ndim, shape);
    static const char dummy[8] = {0};
    if (off + cnt > n || soff + scnt > n)
        st = fail_(io->why, io->why_len, DV_ERR_ARG, "%s: slice outside the tensor of %zu elements",
                   path, n);
    if (st == DV_OK) {
        fs = ndim ? H5Screate_simple(ndim, dims, NULL) : H5Screate(H5S_SCALAR);
        dcpl = H5Pcreate(H5P_DATASET_CREATE);
        if (fs < 0 || dcpl < 0 || H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER) < 0 ||
            H5Pset_obj_track_times(dcpl, 0) < 0 ||
            (d = H5Dcreate2(file, path, ftype_(ty), fs, H5P_DEFAULT, dcpl, H5P_DEFAULT)) < 0)
            st = fail_h5_(io->why, io->why_len, "creating", path);
    }
    if ((st = agree_(io, st)) != DV_OK) goto done;
    {
        hsize_t mn = cnt ? (hsize_t)cnt : 1;
        ms = H5Screate_simple(1, &mn, NULL);
        if (ms < 0 || (cnt ? H5Sselect_all(ms) : H5Sselect_none(ms)) < 0 ||
            select_flat_(fs, ndim, dims, off, cnt) < 0 ||
            H5Dwrite(d, mtype_(ty), ms, fs, io->xfer, cnt ? src : (const void *)dummy) < 0)
            st = fail_h5_(io->why, io->why_len, "writing", path);
    }
    {
        uint64_t v[2] = {st != DV_OK, st != DV_OK ? 0 : tsum_(ty, ssrc, scnt, soff)};
        DV_CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, v, 2, MPI_UINT64_T, MPI_SUM, io->comm));
        if (v[0]) {
            st = agree_(io, st);
            goto done;
        }
        if (attr_u64_(d, "checksum", v[1]) < 0)
            st = fail_h5_(io->why, io->why_len, "writing the checksum of", path);
    }
    {
        herr_t r = H5Dclose(d);
        d = -1;
        if (r < 0 && st == DV_OK) st = fail_h5_(io->why, io->why_len, "closing", path);
    }
    st = agree_(io, st);
done:
    close_id_(d);
    close_id_(dcpl);
    close_id_(ms);
    close_id_(fs);
    return st;
}

/* Open a dataset and check its type and shape; *stored = its checksum attribute. Not collective.
 * Problems are DV_ERR_FORMAT with a reason naming path. */
static int dataset_check_(hid_t file, const char *path, ty_ ty, int ndim, const int64_t *shape,
                          hid_t *dset, uint64_t *stored, char *why, size_t len) {
    int st = DV_OK;
    hid_t d = -1, sp = -1, ft = -1;
    char want[96], got[96];
    htri_t ex = H5Lexists(file, path, H5P_DEFAULT);
    if (ex <= 0) {
        H5Eclear2(H5E_DEFAULT);
        return fail_(why, len, DV_ERR_FORMAT, "missing dataset %s", path);
    }
    d = H5Dopen2(file, path, H5P_DEFAULT);
    if (d < 0) {
        h5walk_ w;
        st = fail_(why, len, DV_ERR_FORMAT, "%s is not a readable dataset (%s)", path, h5msg_(&w));
        goto done;
    }
    if ((sp = H5Dget_space(d)) < 0 || (ft = H5Dget_type(d)) < 0) {
        st = fail_h5_(why, len, "inspecting", path);
        goto done;
    }
    if (!type_matches_(ft, ty)) {
        st = fail_(why, len, DV_ERR_FORMAT, "%s is not %s", path, ty_names_[ty]);
        goto done;
    }
    int nd = H5Sget_simple_extent_ndims(sp);
    hsize_t dims[32];
    if (nd < 0 || nd > 32 || (nd > 0 && H5Sget_simple_extent_dims(sp, dims, NULL) < 0)) {
        st = fail_h5_(why, len, "inspecting", path);
        goto done;
    }
    int same = nd == ndim;
    int64_t shp[32];
    for (int k = 0; k < nd; k++) {
        shp[k] = (int64_t)dims[k];
        if (same && shp[k] != shape[k]) same = 0;
    }
    if (!same) {
        st =
            fail_(why, len, DV_ERR_FORMAT, "%s has shape %s, expected %s", path,
                  shape_str_(shp, nd, got, sizeof got), shape_str_(shape, ndim, want, sizeof want));
        goto done;
    }
    if (attr_read_u64_(d, "checksum", stored) < 0) {
        H5Eclear2(H5E_DEFAULT);
        st = fail_(why, len, DV_ERR_FORMAT, "%s has no checksum attribute", path);
        goto done;
    }
done:
    close_id_(ft);
    close_id_(sp);
    if (st == DV_OK)
        *dset = d;
    else
        close_id_(d);
    return st;
}

/* Collective read of one dataset: elements [off, off + cnt) into dst; this rank adds the checksum
 * terms of elements [soff, soff + scnt) (inside its slice). */
static int tensor_read_(io_ *io, hid_t file, const char *path, ty_ ty, int ndim,
                        const int64_t *shape, void *dst, size_t off, size_t cnt, size_t soff,
                        size_t scnt) {
    int st = DV_OK;
    hid_t fs = -1, ms = -1, d = -1;
    uint64_t stored = 0;
    hsize_t dims[DV_PARAM_MAX_DIMS];
    for (int k = 0; k < ndim; k++) dims[k] = (hsize_t)shape[k];
    const size_t n = numel_(ndim, shape);
    char dummy[8];
    if (off + cnt > n || soff < off || soff + scnt > off + cnt)
        st = fail_(io->why, io->why_len, DV_ERR_ARG, "%s: bad slice of a tensor of %zu elements",
                   path, n);
    if (st == DV_OK)
        st = dataset_check_(file, path, ty, ndim, shape, &d, &stored, io->why, io->why_len);
    if ((st = agree_(io, st)) != DV_OK) goto done;
    {
        hsize_t mn = cnt ? (hsize_t)cnt : 1;
        ms = H5Screate_simple(1, &mn, NULL);
        fs = H5Dget_space(d);
        if (ms < 0 || fs < 0 || (cnt ? H5Sselect_all(ms) : H5Sselect_none(ms)) < 0 ||
            select_flat_(fs, ndim, dims, off, cnt) < 0 ||
            H5Dread(d, mtype_(ty), ms, fs, io->xfer, cnt ? dst : (void *)dummy) < 0)
            st = fail_h5_(io->why, io->why_len, "reading", path);
    }
    {
        const void *sp = (const char *)dst + (soff - off) * tsize_(ty);
        uint64_t v[2] = {st != DV_OK, st != DV_OK ? 0 : tsum_(ty, sp, scnt, soff)};
        DV_CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, v, 2, MPI_UINT64_T, MPI_SUM, io->comm));
        if (v[0]) {
            st = agree_(io, st);
            goto done;
        }
        if (v[1] != stored) /* identical on every rank */
            st = fail_(io->why, io->why_len, DV_ERR_FORMAT, "checksum mismatch in %s", path);
    }
done:
    close_id_(d);
    close_id_(ms);
    close_id_(fs);
    return st;
}

int dv_ckpt_write_f32(const dv_ctx *ctx, hid_t file, const char *path, int ndim,
                      const int64_t *shape, const float *src, size_t offset, size_t count,
                      char *why, size_t why_len) {
    io_ io;
    int st = io_init_(&io, ctx, why, why_len);
    st = agree_(&io, st);
    if (st == DV_OK)
        st = tensor_write_(&io, file, path, TY_F32, ndim, shape, src, offset, count, src, offset,
                           count);
    io_free_(&io);
    return st;
}

int dv_ckpt_read_f32(const dv_ctx *ctx, hid_t file, const char *path, int ndim,
                     const int64_t *shape, float *dst, size_t offset, size_t count,
                     size_t sum_offset, size_t sum_count, char *why, size_t why_len) {
    io_ io;
    int st = io_init_(&io, ctx, why, why_len);
    st = agree_(&io, st);
    if (st == DV_OK)
        st = tensor_read_(&io, file, path, TY_F32, ndim, shape, dst, offset, count, sum_offset,
                          sum_count);
    io_free_(&io);
    return st;
}

/* ---- the architecture -------------------------------------------------------------------------
 */

enum {
    BUF_STUDENT = 0,
    BUF_TEACHER,
    BUF_EXP_AVG,
    BUF_EXP_AVG_SQ,
    BUF_COUNT,
    BUF_STATE = BUF_COUNT
};
static const char *const buf_prefix_[BUF_COUNT] = {"student", "teacher", "optim/exp_avg",
                                                   "optim/exp_avg_sq"};

typedef struct {
    dv_vit_config vc;
    dv_head_config hc[2];
    int has_ibot;
    const dv_param_table *tab[DV_MOD_COUNT]; /* NULL = module absent */
    int64_t K[2];                            /* dino, ibot centre sizes */
    /* owned when read from a file */
    dv_vit vit;
    dv_head head[2];
    int own_vit, own_head[2];
} arch_;

static void arch_from_ssl_(arch_ *a, const dv_ssl *s) {
    memset(a, 0, sizeof *a);
    a->vc = s->vit.cfg;
    a->hc[0] = s->head[0].cfg;
    a->has_ibot = s->mod[DV_MOD_IBOT_HEAD].present;
    if (a->has_ibot) a->hc[1] = s->head[1].cfg;
    for (int m = 0; m < DV_MOD_COUNT; m++) a->tab[m] = s->mod[m].present ? s->mod[m].tab : NULL;
    a->K[0] = s->K[0];
    a->K[1] = s->K[1];
}

static void arch_free_(arch_ *a) {
    if (a->own_vit) dv_vit_free(&a->vit);
    for (int h = 0; h < 2; h++)
        if (a->own_head[h]) dv_head_free(&a->head[h]);
    a->own_vit = a->own_head[0] = a->own_head[1] = 0;
}

static const char *const head_attr_names_[6] = {"in_dim",     "out_dim",        "nlayers",
                                                "hidden_dim", "bottleneck_dim", "mlp_bias"};

static void head_vals_(const dv_head_config *c, int64_t v[6]) {
    v[0] = c->in_dim;
    v[1] = c->out_dim;
    v[2] = c->nlayers;
    v[3] = c->hidden_dim;
    v[4] = c->bottleneck_dim;
    v[5] = c->mlp_bias;
}

static herr_t head_attrs_write_(hid_t file, const char *group, const dv_head_config *c) {
    hid_t g = H5Gopen2(file, group, H5P_DEFAULT);
    if (g < 0) return -1;
    int64_t v[6];
    head_vals_(c, v);
    herr_t r = 0;
    for (int i = 0; i < 6 && r >= 0; i++) r = attr_i64_(g, head_attr_names_[i], v[i]);
    H5Gclose(g);
    return r;
}

static int head_attrs_read_(hid_t file, const char *group, dv_head_config *c, char *why,
                            size_t len) {
    hid_t g = H5Gopen2(file, group, H5P_DEFAULT);
    if (g < 0) {
        H5Eclear2(H5E_DEFAULT);
        return fail_(why, len, DV_ERR_FORMAT, "missing group %s", group);
    }
    int64_t v[6];
    for (int i = 0; i < 6; i++)
        if (attr_read_i64_(g, head_attr_names_[i], &v[i]) < 0) {
            H5Eclear2(H5E_DEFAULT);
            H5Gclose(g);
            return fail_(why, len, DV_ERR_FORMAT, "%s: missing or bad attribute %s", group,
                         head_attr_names_[i]);
        }
    H5Gclose(g);
    c->in_dim = v[0];
    c->out_dim = v[1];
    c->nlayers = v[2];
    c->hidden_dim = v[3];
    c->bottleneck_dim = v[4];
    c->mlp_bias = (int)v[5];
    return DV_OK;
}

static int group_exists_(hid_t file, const char *path) {
    htri_t ex = H5Lexists(file, path, H5P_DEFAULT);
    if (ex < 0) H5Eclear2(H5E_DEFAULT);
    return ex > 0;
}

/* The architecture recorded in a checkpoint (student groups). */
static int arch_from_file_(arch_ *a, hid_t f, const char *what, char *why, size_t len) {
    memset(a, 0, sizeof *a);
    if (!group_exists_(f, "student/backbone"))
        return fail_(why, len, DV_ERR_FORMAT, "missing group student/backbone");
    if (dv_vit_config_read_h5(f, "student/backbone", &a->vc, what) != DV_OK)
        return fail_(why, len, DV_ERR_FORMAT, "bad architecture attributes on student/backbone");
    if (dv_vit_init(&a->vit, &a->vc) != DV_OK)
        return fail_(why, len, DV_ERR_FORMAT, "unusable architecture on student/backbone");
    a->own_vit = 1;
    a->tab[DV_MOD_BACKBONE] = &a->vit.params;
    DV_TRY(head_attrs_read_(f, "student/dino_head", &a->hc[0], why, len));
    a->has_ibot = group_exists_(f, "student/ibot_head");
    if (a->has_ibot) DV_TRY(head_attrs_read_(f, "student/ibot_head", &a->hc[1], why, len));
    for (int h = 0; h < 1 + a->has_ibot; h++) {
        if (dv_head_init(&a->head[h], &a->hc[h]) != DV_OK)
            return fail_(why, len, DV_ERR_FORMAT, "unusable head attributes on student/%s",
                         dv_module_names[1 + h]);
        a->own_head[h] = 1;
        a->tab[1 + h] = &a->head[h].params;
    }
    a->K[0] = a->hc[0].out_dim;
    a->K[1] = a->has_ibot ? a->hc[1].out_dim : a->K[0];
    return DV_OK;
}

/* First difference between the checkpoint's architecture f and this run's r; 0 = same. */
static int arch_diff_(const arch_ *f, const arch_ *r, char *why, size_t len) {
    const char *pre = "architecture differs from this run:";
    const dv_vit_config *a = &f->vc, *b = &r->vc;
    struct {
        const char *name;
        int64_t x, y;
    } v[] = {
        {"patch_size", a->patch_size, b->patch_size},
        {"embed_dim", a->embed_dim, b->embed_dim},
        {"depth", a->depth, b->depth},
        {"num_heads", a->num_heads, b->num_heads},
        {"ffn_layer", a->ffn, b->ffn},
        {"ffn_hidden_dim", dv_vit_ffn_hidden(a), dv_vit_ffn_hidden(b)},
        {"num_register_tokens", a->num_register_tokens, b->num_register_tokens},
        {"img_size", a->img_size, b->img_size},
        {"layerscale (on/off)", a->layerscale > 0, b->layerscale > 0},
        {"qkv_bias", a->qkv_bias, b->qkv_bias},
        {"proj_bias", a->proj_bias, b->proj_bias},
        {"ffn_bias", a->ffn_bias, b->ffn_bias},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        if (v[i].x == v[i].y) continue;
        if (i == 4)
            fail_(why, len, 0,
                  "%s student/backbone ffn_layer is %s in the checkpoint, %s in this run", pre,
                  dv_vit_ffn_name(a->ffn), dv_vit_ffn_name(b->ffn));
        else
            fail_(why, len, 0, "%s student/backbone %s is %lld in the checkpoint, %lld in this run",
                  pre, v[i].name, (long long)v[i].x, (long long)v[i].y);
        return 1;
    }
    if (f->has_ibot != r->has_ibot) {
        fail_(why, len, 0,
              "%s ibot_head is %s in the checkpoint, %s in this run (ibot.separate_head)", pre,
              f->has_ibot ? "present" : "absent", r->has_ibot ? "present" : "absent");
        return 1;
    }
    for (int h = 0; h < 1 + f->has_ibot; h++) {
        int64_t x[6], y[6];
        head_vals_(&f->hc[h], x);
        head_vals_(&r->hc[h], y);
        for (int i = 0; i < 6; i++)
            if (x[i] != y[i]) {
                fail_(why, len, 0, "%s student/%s %s is %lld in the checkpoint, %lld in this run",
                      pre, dv_module_names[1 + h], head_attr_names_[i], (long long)x[i],
                      (long long)y[i]);
                return 1;
            }
    }
    for (int m = 0; m < DV_MOD_COUNT; m++) /* belt and braces: the tables themselves */
        if ((f->tab[m] == NULL) != (r->tab[m] == NULL) ||
            (f->tab[m] && (f->tab[m]->n != r->tab[m]->n || f->tab[m]->numel != r->tab[m]->numel))) {
            fail_(why, len, 0, "%s %s has a different parameter table", pre, dv_module_names[m]);
            return 1;
        }
    return 0;
}

/* ---- the list of datasets -------------------------------------------------------------------- */

enum {
    ST_DINO_CENTER,
    ST_DINO_SUM,
    ST_DINO_ROWS,
    ST_DINO_HAS,
    ST_IBOT_CENTER,
    ST_IBOT_SUM,
    ST_IBOT_ROWS,
    ST_IBOT_HAS,
    ST_LOADER_EPOCH,
    ST_LOADER_BATCH,
    ST_ADAMW_STEP,
    ST_LOSS_SCALE,
    ST_GROWTH,
    ST_COUNT
};

static const struct {
    const char *name;
    ty_ ty;
    int k; /* -1 scalar, else the centre index whose K is the length */
} state_def_[ST_COUNT] = {
    {"dino_center", TY_F32, 0},
    {"dino_center_pending_sum", TY_F64, 0},
    {"dino_center_pending_rows", TY_F64, -1},
    {"dino_center_has_pending", TY_I64, -1},
    {"ibot_center", TY_F32, 1},
    {"ibot_center_pending_sum", TY_F64, 1},
    {"ibot_center_pending_rows", TY_F64, -1},
    {"ibot_center_has_pending", TY_I64, -1},
    {"loader_epoch", TY_I64, -1},
    {"loader_batch", TY_I64, -1},
    {"adamw_step", TY_I64, -1},
    {"loss_scale", TY_F64, -1},
    {"scaler_growth_tracker", TY_I64, -1},
};

typedef struct {
    char path[ITEM_PATH_MAX];
    int buf;           /* BUF_* */
    int mod;           /* module, or the ST_* index for BUF_STATE */
    const dv_param *p; /* tensors */
    ty_ ty;
    int ndim;
    int64_t shape[DV_PARAM_MAX_DIMS];
} item_;

/* Every dataset of a checkpoint of this architecture, in file-writing order. */
static int items_build_(const arch_ *a, item_ **out, int *nout) {
    int n = ST_COUNT;
    for (int m = 0; m < DV_MOD_COUNT; m++)
        if (a->tab[m]) n += BUF_COUNT * a->tab[m]->n;
    item_ *it = calloc((size_t)n, sizeof *it);
    DV_CHECK_ALLOC(it);
    int k = 0;
    for (int b = 0; b < BUF_COUNT; b++)
        for (int m = 0; m < DV_MOD_COUNT; m++) {
            if (!a->tab[m]) continue;
            for (int i = 0; i < a->tab[m]->n; i++) {
                const dv_param *p = &a->tab[m]->t[i];
                item_ *x = &it[k++];
                snprintf(x->path, sizeof x->path, "%s/%s/%s", buf_prefix_[b], dv_module_names[m],
                         p->name);
                x->buf = b;
                x->mod = m;
                x->p = p;
                x->ty = TY_F32;
                x->ndim = p->ndim;
                memcpy(x->shape, p->shape, sizeof x->shape);
            }
        }
    for (int j = 0; j < ST_COUNT; j++) {
        item_ *x = &it[k++];
        snprintf(x->path, sizeof x->path, "state/%s", state_def_[j].name);
        x->buf = BUF_STATE;
        x->mod = j;
        x->ty = state_def_[j].ty;
        x->ndim = state_def_[j].k >= 0;
        if (x->ndim) x->shape[0] = a->K[state_def_[j].k];
    }
    *out = it;
    *nout = k;
    return DV_OK;
}

/* The scalars of state/ (and where the vectors live). */
typedef struct {
    double rows[2], loss_scale;
    int64_t has[2], epoch, batch, adamw_step, growth;
} scalars_;

static void *state_ptr_(int j, dv_center *c[2], scalars_ *v) {
    switch (j) {
    case ST_DINO_CENTER: return c[0]->center;
    case ST_DINO_SUM: return c[0]->pending_sum;
    case ST_DINO_ROWS: return &v->rows[0];
    case ST_DINO_HAS: return &v->has[0];
    case ST_IBOT_CENTER: return c[1]->center;
    case ST_IBOT_SUM: return c[1]->pending_sum;
    case ST_IBOT_ROWS: return &v->rows[1];
    case ST_IBOT_HAS: return &v->has[1];
    case ST_LOADER_EPOCH: return &v->epoch;
    case ST_LOADER_BATCH: return &v->batch;
    case ST_ADAMW_STEP: return &v->adamw_step;
    case ST_LOSS_SCALE: return &v->loss_scale;
    default: return &v->growth;
    }
}

static float *mod_buf_(const dv_ssl_module *m, int b) {
    return b == BUF_STUDENT   ? m->student
           : b == BUF_TEACHER ? m->teacher
           : b == BUF_EXP_AVG ? m->exp_avg
                              : m->exp_avg_sq;
}

/* This rank's part of tensor p of module m: file elements [off, off + cnt) at module-buffer
 * index loc; checksum share [soff, soff + scnt). */
typedef struct {
    size_t off, cnt, loc, soff, scnt;
} slice_;

static slice_ slice_of_(const io_ *io, const dv_ckpt_shards *sh, int writing, int m, size_t numel,
                        const dv_param *p) {
    slice_ s = {0, 0, 0, 0, 0};
    if (!sh) {
        s.loc = p->offset;
        s.soff = p->numel * (size_t)io->rank / (size_t)io->world;
        s.scnt = p->numel * (size_t)(io->rank + 1) / (size_t)io->world - s.soff;
        if (!writing || io->rank == 0) s.cnt = p->numel;
        return s;
    }
    /* a range list (FSDP units): a tensor meets at most one range of a rank */
    const int nr = sh->nrange[m] > 0 ? sh->nrange[m] : 1;
    for (int r = 0; r < nr; r++) {
        const size_t rlo = sh->nrange[m] > 0 ? sh->range[m][r].lo : sh->lo[m];
        const size_t rhi0 = sh->nrange[m] > 0 ? sh->range[m][r].hi : sh->hi[m];
        const size_t loc = sh->nrange[m] > 0 ? sh->range[m][r].loc : 0;
        const size_t hi = rhi0 < numel ? rhi0 : numel;
        const size_t a = rlo > p->offset ? rlo : p->offset;
        const size_t e = p->offset + p->numel, b = hi < e ? hi : e;
        if (a < b) {
            s.off = a - p->offset;
            s.cnt = b - a;
            s.loc = loc + (a - rlo);
            s.soff = s.off;
            s.scnt = s.cnt;
            break;
        }
    }
    return s;
}

/* Collective: the shards cover each present module exactly (by count). */
static int shards_check_(io_ *io, const dv_ssl *s, const dv_ckpt_shards *sh) {
    if (!sh) return DV_OK;
    uint64_t have[DV_MOD_COUNT] = {0}, bad = 0;
    for (int m = 0; m < DV_MOD_COUNT; m++) {
        if (!s->mod[m].present) continue;
        const size_t n = s->mod[m].numel;
        if (sh->nrange[m] > 0) {
            for (int r = 0; r < sh->nrange[m]; r++) {
                const dv_shard_range *g = &sh->range[m][r];
                if (g->lo > g->hi || g->hi > n) bad = 1;
                else have[m] += g->hi - g->lo;
            }
            continue;
        }
        const size_t lo = sh->lo[m], hi = sh->hi[m] < n ? sh->hi[m] : n;
        if (sh->lo[m] > sh->hi[m]) bad = 1;
        have[m] = hi > lo ? hi - lo : 0;
    }
    uint64_t v[DV_MOD_COUNT + 1];
    memcpy(v, have, sizeof have);
    v[DV_MOD_COUNT] = bad;
    DV_CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, v, DV_MOD_COUNT + 1, MPI_UINT64_T, MPI_SUM, io->comm));
    for (int m = 0; m < DV_MOD_COUNT; m++)
        if (s->mod[m].present && (v[m] != s->mod[m].numel || v[DV_MOD_COUNT])) {
            dv_user_error("checkpoint shards of %s hold %llu of its %zu elements (they must "
                          "partition the flat buffer)",
                          dv_module_names[m], (unsigned long long)v[m], s->mod[m].numel);
            return DV_ERR_ARG;
        }
    return DV_OK;
}

/* ---- root attributes ------------------------------------------------------------------------- */

static int check_root_(hid_t f, int64_t *step, int64_t *world, int64_t *version, char *why,
                       size_t len) {
    char *fmt = NULL;
    if (attr_read_str_(f, "format", &fmt) < 0) {
        H5Eclear2(H5E_DEFAULT);
        return fail_(why, len, DV_ERR_FORMAT, "not a dinov2c checkpoint (no format attribute)");
    }
    int ok = strcmp(fmt, DV_CKPT_FORMAT) == 0;
    if (!ok) {
        fail_(why, len, DV_ERR_FORMAT, "not a dinov2c checkpoint (format is '%.64s')", fmt);
        free(fmt);
        return DV_ERR_FORMAT;
    }
    free(fmt);
    int64_t v = 0, st = 0, w = 0;
    if (attr_read_i64_(f, "format_version", &v) < 0 || v < 1) {
        H5Eclear2(H5E_DEFAULT);
        return fail_(why, len, DV_ERR_FORMAT, "missing or bad format_version");
    }
    if (v > DV_CKPT_FORMAT_VERSION)
        return fail_(why, len, DV_ERR_FORMAT,
                     "format_version %lld is newer than this program reads (%d)", (long long)v,
                     DV_CKPT_FORMAT_VERSION);
    if (attr_read_i64_(f, "step", &st) < 0 || st < 0) {
        H5Eclear2(H5E_DEFAULT);
        return fail_(why, len, DV_ERR_FORMAT, "missing or bad step attribute");
    }
    if (attr_read_i64_(f, "world_size", &w) < 0 || w < 1) {
        H5Eclear2(H5E_DEFAULT);
        return fail_(why, len, DV_ERR_FORMAT, "missing or bad world_size attribute");
    }
    if (step) *step = st;
    if (world) *world = w;
    if (version) *version = v;
    return DV_OK;
}

/* The config text and its checksum; *text (may be NULL) receives a malloc'd copy. */
static int check_config_(hid_t f, char **text, char *why, size_t len) {
    char *t = NULL;
    uint64_t sum = 0;
    if (attr_read_str_(f, "config", &t) < 0 || attr_read_u64_(f, "config_checksum", &sum) < 0) {
        H5Eclear2(H5E_DEFAULT);
        free(t);
        return fail_(why, len, DV_ERR_FORMAT, "missing or bad config / config_checksum attribute");
    }
    if (dv_sum64_bytes(t, strlen(t), 0) != sum) {
        free(t);
        return fail_(why, len, DV_ERR_FORMAT, "checksum mismatch in the config attribute");
    }
    if (text)
        *text = t;
    else
        free(t);
    return DV_OK;
}

/* Read-only serial open without HDF5's file locking (flock), which parallel file systems often
 * refuse ("unable to lock file"); checkpoints are complete before they get their final name. */
static hid_t h5open_ro_(const char *path) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0) return -1;
#ifdef H5_VERSION_GE
#if H5_VERSION_GE(1, 10, 7)
    H5Pset_file_locking(fapl, 0, 1);
#endif
#endif
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
    return f;
}

/* Serial open of a checkpoint; a reason for a missing or unreadable file. */
static int open_serial_(const char *path, hid_t *f, char *why, size_t len) {
    struct stat sb;
    *f = -1;
    if (stat(path, &sb) != 0)
        return fail_(why, len, errno == ENOENT ? DV_ERR_FORMAT : DV_ERR_IO, "%s",
                     errno == ENOENT ? "missing" : strerror(errno));
    if (!S_ISREG(sb.st_mode)) return fail_(why, len, DV_ERR_FORMAT, "not a regular file");
    hid_t id = h5open_ro_(path);
    if (id < 0) {
        h5walk_ w;
        return fail_(why, len, DV_ERR_FORMAT, "cannot open as HDF5 (%s)", h5msg_(&w));
    }
    *f = id;
    return DV_OK;
}

/* ---- saving ------------------------------------------------------------------------------------
 */

char *dv_ckpt_file_name(char *buf, size_t len, int64_t step) {
    snprintf(buf, len, "ckpt-%09lld.h5", (long long)step);
    return buf;
}

static int join_(char *out, size_t len, const char *dir, const char *name) {
    int n = snprintf(out, len, "%s/%s", dir && dir[0] ? dir : ".", name);
    return n < 0 || (size_t)n >= len ? -1 : 0;
}

static int mkdir_p_(const char *dir, char *why, size_t len) {
    char p[PATH_MAX_];
    if (snprintf(p, sizeof p, "%s", dir) >= (int)sizeof p)
        return fail_(why, len, DV_ERR_ARG, "%s: path too long", dir);
    size_t n = strlen(p);
    for (size_t i = 1; i <= n; i++) {
        if (p[i] != '/' && p[i] != '\0') continue;
        char c = p[i];
        p[i] = '\0';
        if (mkdir(p, 0777) != 0 && errno != EEXIST)
            return fail_(why, len, DV_ERR_IO, "cannot create directory %s (%s)", p,
                         strerror(errno));
        struct stat sb;
        if (stat(p, &sb) != 0 || !S_ISDIR(sb.st_mode))
            return fail_(why, len, DV_ERR_IO, "cannot create directory %s (%s is not a directory)",
                         dir, p);
        p[i] = c;
    }
    return DV_OK;
}

static int fsync_path_(const char *path, int is_dir) {
    int fd = open(path, is_dir ? (O_RDONLY | O_DIRECTORY) : O_RDONLY);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}

static herr_t make_group_(hid_t f, const char *path) {
    if (group_exists_(f, path)) return 0;
    hid_t gcpl = H5Pcreate(H5P_GROUP_CREATE);
    if (gcpl < 0) return -1;
    hid_t g = -1;
    if (H5Pset_obj_track_times(gcpl, 0) >= 0)
        g = H5Gcreate2(f, path, H5P_DEFAULT, gcpl, H5P_DEFAULT);
    H5Pclose(gcpl);
    if (g < 0) return -1;
    return H5Gclose(g);
}

/* The resolved config as YAML text (malloc'd). */
static char *config_text_(const dv_config *c) {
    char *text = NULL;
    size_t n = 0;
    FILE *m = open_memstream(&text, &n);
    if (!m) return NULL;
    int rc = c ? dv_config_write_yaml(c, m) : DV_OK;
    if (fclose(m) != 0 || rc != DV_OK) {
        free(text);
        return NULL;
    }
    return text;
}

/* Collective: write the whole file at tmp. */
static int save_file_(io_ *io, const dv_ssl *s, const dv_ckpt_extra *x, const dv_ckpt_shards *sh,
                      const char *tmp) {
    int st = DV_OK;
    hid_t fapl = -1, f = -1;
    item_ *it = NULL;
    int nit = 0;
    char *cfg = NULL;
    arch_ a;
    arch_from_ssl_(&a, s);

    if (!(cfg = config_text_(s->cfg)))
        st = fail_(io->why, io->why_len, DV_ERR_NOMEM, "config text");
    if ((st = agree_(io, st)) != DV_OK) goto done;
    /* the 1.8 file format: superblock, object headers, link and attribute storage carry
     * HDF5's own metadata checksums, so corrupt metadata is detected as the data is by ours */
    fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0 || H5Pset_fapl_mpio(fapl, io->comm, MPI_INFO_NULL) < 0 ||
        H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_V18) < 0)
        st = fail_h5_(io->why, io->why_len, "setting up MPI-IO for", tmp);
    /* no modification times in the root group's header either: the same content gives the
     * same bytes whatever the clock (and whichever ranks wrote it) */
    hid_t fcpl = H5Pcreate(H5P_FILE_CREATE);
    if (fcpl < 0 || H5Pset_obj_track_times(fcpl, 0) < 0)
        st = fail_h5_(io->why, io->why_len, "setting up the file creation of", tmp);
    if (st == DV_OK && (f = H5Fcreate(tmp, H5F_ACC_TRUNC, fcpl, fapl)) < 0) {
        h5walk_ w;
        st = fail_(io->why, io->why_len, DV_ERR_IO, "cannot create %s (%s)", tmp, h5msg_(&w));
    }
    if (fcpl >= 0) H5Pclose(fcpl);
    if ((st = agree_(io, st)) != DV_OK) goto done;

    /* metadata: every rank makes the same calls with the same values */
    if (attr_str_(f, "format", DV_CKPT_FORMAT) < 0 ||
        attr_i64_(f, "format_version", DV_CKPT_FORMAT_VERSION) < 0 ||
        attr_i64_(f, "step", s->step) < 0 || attr_i64_(f, "world_size", io->world) < 0 ||
        attr_str_(f, "checksum_algorithm", DV_SUM64_NAME) < 0 ||
        attr_str_(f, "producer", "dinov2c") < 0 || attr_str_(f, "config", cfg) < 0 ||
        /* variable-length strings live in HDF5's global heap, which has no checksum */
        attr_u64_(f, "config_checksum", dv_sum64_bytes(cfg, strlen(cfg), 0)) < 0)
        st = fail_h5_(io->why, io->why_len, "writing the root attributes of", tmp);
    static const char *const groups[] = {"student",       "teacher",          "optim",
                                         "optim/exp_avg", "optim/exp_avg_sq", "state"};
    for (size_t i = 0; st == DV_OK && i < sizeof groups / sizeof groups[0]; i++)
        if (make_group_(f, groups[i]) < 0)
            st = fail_h5_(io->why, io->why_len, "creating group", groups[i]);
    for (int b = 0; b < BUF_COUNT && st == DV_OK; b++)
        for (int m = 0; m < DV_MOD_COUNT && st == DV_OK; m++) {
            if (!a.tab[m]) continue;
            char g[128];
            snprintf(g, sizeof g, "%s/%s", buf_prefix_[b], dv_module_names[m]);
            if (make_group_(f, g) < 0) {
                st = fail_h5_(io->why, io->why_len, "creating group", g);
            } else if (b <= BUF_TEACHER && m == DV_MOD_BACKBONE) {
                if (dv_vit_config_write_h5(f, g, &s->vit.cfg) != DV_OK)
                    st = fail_(io->why, io->why_len, DV_ERR_HDF5,
                               "writing the architecture attributes of %s failed", g);
            } else if (b <= BUF_TEACHER) {
                if (head_attrs_write_(f, g, &a.hc[m - 1]) < 0)
                    st = fail_h5_(io->why, io->why_len, "writing the head attributes of", g);
            }
        }
    if ((st = agree_(io, st)) != DV_OK) goto done;

    if ((st = items_build_(&a, &it, &nit)) != DV_OK) goto done;
    dv_center *c[2] = {(dv_center *)&s->center_dino, (dv_center *)&s->center_ibot};
    scalars_ v = {{s->center_dino.pending_rows, s->center_ibot.pending_rows},
                  s->scaler.scale,
                  {s->center_dino.has_pending, s->center_ibot.has_pending},
                  x ? x->loader_epoch : 0,
                  x ? x->loader_batch : 0,
                  s->adamw_steps,
                  s->scaler.growth_tracker};
    for (int i = 0; i < nit && st == DV_OK; i++) {
        const item_ *t = &it[i];
        if (t->buf == BUF_STATE) {
            const void *p = state_ptr_(t->mod, c, &v);
            const size_t n = numel_(t->ndim, t->shape);
            const size_t cnt = io->rank == 0 ? n : 0;
            st = tensor_write_(io, f, t->path, t->ty, t->ndim, t->shape, p, 0, cnt, p, 0, cnt);
        } else {
            const dv_ssl_module *mod = &s->mod[t->mod];
            const float *buf = mod_buf_(mod, t->buf);
            const slice_ sl = slice_of_(io, sh, 1, t->mod, mod->numel, t->p);
            /* replicated: rank 0 writes, every rank checksums its share of the tensor */
            const float *ssrc = sh ? buf + sl.loc : buf + t->p->offset + sl.soff;
            st = tensor_write_(io, f, t->path, TY_F32, t->ndim, t->shape, buf + sl.loc, sl.off,
                               sl.cnt, ssrc, sl.soff, sl.scnt);
        }
    }
    if (st != DV_OK) goto done;
    /* H5Fflush on the MPI-IO driver ends with MPI_File_sync on every rank */
    if (H5Fflush(f, H5F_SCOPE_GLOBAL) < 0) {
        h5walk_ w;
        st = fail_(io->why, io->why_len, DV_ERR_IO, "cannot flush %s (%s)", tmp, h5msg_(&w));
    }
    st = agree_(io, st);
done:
    if (f >= 0) {
        /* After a failure the file is discarded: free its data blocks first, so that the
         * metadata HDF5 still writes while closing fits on a full disk or quota (HDF5 1.10
         * leaves a broken file id behind when H5Fclose itself fails). */
        if (st != DV_OK && io->rank == 0) {
            int tr = truncate(tmp, 0);
            (void)tr;
        }
        int r = H5Fclose(f);
        if (r < 0 && st == DV_OK) {
            h5walk_ w;
            st = fail_(io->why, io->why_len, DV_ERR_IO, "cannot close %s (%s)", tmp, h5msg_(&w));
        }
        st = agree_(io, st);
    }
    close_id_(fapl);
    free(it);
    free(cfg);
    return st;
}

/* ---- the directory: names, `latest`, pruning --------------------------------------------------
 */

/* "ckpt-<at least 9 digits>.h5" → step; 0 when the name is something else. */
static int parse_name_(const char *name, int64_t *step) {
    size_t n = strlen(name);
    if (n < 5 + 9 + 3 || strncmp(name, "ckpt-", 5) != 0 || strcmp(name + n - 3, ".h5") != 0)
        return 0;
    int64_t v = 0;
    for (size_t i = 5; i < n - 3; i++) {
        if (name[i] < '0' || name[i] > '9' || v > (INT64_MAX - 9) / 10) return 0;
        v = v * 10 + (name[i] - '0');
    }
    *step = v;
    return 1;
}

static int cmp_desc_(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* Steps of the ckpt-*.h5 files of dir, newest first (a missing dir = none). */
static int list_steps_(const char *dir, int64_t **steps, size_t *n, char *why, size_t len) {
    *steps = NULL;
    *n = 0;
    DIR *d = opendir(dir && dir[0] ? dir : ".");
    if (!d) {
        if (errno == ENOENT || errno == ENOTDIR) return DV_OK;
        return fail_(why, len, DV_ERR_IO, "cannot list %s (%s)", dir, strerror(errno));
    }
    size_t cap = 0;
    int64_t *v = NULL;
    struct dirent *e;
    while ((e = readdir(d))) {
        int64_t s;
        if (!parse_name_(e->d_name, &s)) continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            int64_t *nv = realloc(v, cap * sizeof *nv);
            if (!nv) {
                free(v);
                closedir(d);
                return fail_(why, len, DV_ERR_NOMEM, "out of memory listing %s", dir);
            }
            v = nv;
        }
        v[(*n)++] = s;
    }
    closedir(d);
    if (*n) qsort(v, *n, sizeof *v, cmp_desc_);
    *steps = v;
    return DV_OK;
}

/* 1: `latest` names a checkpoint file (name into buf); 0: no `latest`; -1: unreadable or bad. */
static int read_latest_(const char *dir, char *buf, size_t len) {
    char p[PATH_MAX_];
    if (join_(p, sizeof p, dir, "latest") != 0) return -1;
    FILE *f = fopen(p, "r");
    if (!f) return errno == ENOENT ? 0 : -1;
    char line[256];
    int ok = fgets(line, sizeof line, f) != NULL;
    fclose(f);
    if (!ok) return -1;
    line[strcspn(line, "\r\n")] = '\0';
    int64_t s;
    if (!parse_name_(line, &s) || strlen(line) >= len) return -1;
    snprintf(buf, len, "%s", line);
    return 1;
}

static int write_latest_(const char *dir, const char *name, char *why, size_t len) {
    char p[PATH_MAX_], tmp[PATH_MAX_];
    if (join_(p, sizeof p, dir, "latest") != 0 || join_(tmp, sizeof tmp, dir, "latest.tmp") != 0)
        return fail_(why, len, DV_ERR_ARG, "%s: path too long", dir);
    FILE *f = fopen(tmp, "w");
    if (!f) return fail_(why, len, DV_ERR_IO, "cannot write %s (%s)", tmp, strerror(errno));
    int bad = fprintf(f, "%s\n", name) < 0;
    bad |= fflush(f) != 0;
    bad |= fsync(fileno(f)) != 0;
    int e = errno;
    bad |= fclose(f) != 0;
    if (bad) {
        unlink(tmp);
        return fail_(why, len, DV_ERR_IO, "cannot write %s (%s)", tmp, strerror(e));
    }
    if (rename(tmp, p) != 0) {
        e = errno;
        unlink(tmp);
        return fail_(why, len, DV_ERR_IO, "cannot rename %s to %s (%s)", tmp, p, strerror(e));
    }
    fsync_path_(dir && dir[0] ? dir : ".", 1);
    return DV_OK;
}

/* Rank 0 after a successful save at step: delete the oldest beyond keep (counting the new one),
 * and leftovers of interrupted writes. Newer files (an abandoned run) are left alone. */
static void prune_(const char *dir, int64_t step, int keep) {
    int64_t *steps = NULL;
    size_t n = 0;
    char why[DV_CKPT_WHY_MAX], name[64], p[PATH_MAX_];
    if (list_steps_(dir, &steps, &n, why, sizeof why) != DV_OK) {
        dv_user_warning("%s: %s; old checkpoints not pruned", dir, why);
        return;
    }
    int kept = 0, newer = 0;
    for (size_t i = 0; i < n; i++) {
        if (steps[i] > step) {
            newer++;
            continue;
        }
        if (keep <= 0 || ++kept <= keep) continue;
        dv_ckpt_file_name(name, sizeof name, steps[i]);
        if (join_(p, sizeof p, dir, name) == 0 && unlink(p) != 0 && errno != ENOENT)
            dv_user_warning("%s: cannot delete (%s)", p, strerror(errno));
    }
    if (newer)
        dv_user_warning("%s holds %d checkpoint%s newer than step %lld (an earlier run?); left in "
                        "place and ignored while `latest` names a valid checkpoint",
                        dir, newer, newer == 1 ? "" : "s", (long long)step);
    free(steps);
    /* leftovers of interrupted writes: ckpt-*.h5.tmp */
    DIR *d = opendir(dir && dir[0] ? dir : ".");
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        int64_t s;
        if (l < 8 || strcmp(e->d_name + l - 4, ".tmp") != 0 || l - 4 >= sizeof name) continue;
        memcpy(name, e->d_name, l - 4);
        name[l - 4] = '\0';
        if (parse_name_(name, &s) && join_(p, sizeof p, dir, e->d_name) == 0) unlink(p);
    }
    closedir(d);
}

const dv_ckpt_shards *dv_ckpt_shards_of(const dv_ssl *s, dv_ckpt_shards *buf) {
    if (!s->sharded) return NULL;
    memset(buf, 0, sizeof *buf);
    const int rank = s->comm ? s->comm->rank : 0;
    for (int m = 0; m < DV_MOD_COUNT; m++) {
        const dv_ssl_module *mod = &s->mod[m];
        if (!mod->present) continue;
        if (mod->sharded) {
            buf->range[m] = mod->plan.range;
            buf->nrange[m] = mod->plan.nrange;
        } else { /* replicated (NO_SHARD): rank 0 holds it */
            buf->lo[m] = 0;
            buf->hi[m] = rank == 0 ? mod->numel : 0;
        }
    }
    return buf;
}

int dv_ckpt_save_sharded(const dv_ctx *ctx, const dv_ssl *s, const dv_ckpt_extra *x,
                         const char *dir, int keep, const dv_ckpt_shards *sh) {
    dv_ckpt_shards own;
    if (!sh) sh = dv_ckpt_shards_of(s, &own);
    char why[DV_CKPT_WHY_MAX] = "", name[64], path[PATH_MAX_] = "", tmp[PATH_MAX_ + 8];
    const char *d = dir && dir[0] ? dir : ".";
    dv_h5_quiet();
    io_ io;
    int st = io_init_(&io, ctx, why, sizeof why);
    if ((st = agree_(&io, st)) != DV_OK) goto out;
    if ((st = shards_check_(&io, s, sh)) != DV_OK) {
        io_free_(&io);
        return st;
    }
    dv_ckpt_file_name(name, sizeof name, s->step);
    if (join_(path, sizeof path, d, name) != 0) {
        st = fail_(why, sizeof why, DV_ERR_ARG, "path too long");
        goto out;
    }
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    if (ctx->rank == 0) st = mkdir_p_(d, why, sizeof why);
    if ((st = bcast0_(&io, st)) != DV_OK) goto out;

    st = save_file_(&io, s, x, sh, tmp);

    if (ctx->rank == 0) {
        if (st == DV_OK && fsync_path_(tmp, 0) != 0)
            st = fail_(why, sizeof why, DV_ERR_IO, "cannot fsync %s (%s)", tmp, strerror(errno));
        if (st == DV_OK && rename(tmp, path) != 0)
            st = fail_(why, sizeof why, DV_ERR_IO, "cannot rename %s into place (%s)", tmp,
                       strerror(errno));
        if (st != DV_OK) {
            unlink(tmp); /* a file only: never a directory in the way */
        } else {
            fsync_path_(d, 1);
            st = write_latest_(d, name, why, sizeof why);
            if (st == DV_OK) prune_(d, s->step, keep);
        }
    }
    st = bcast0_(&io, st);
out:
    io_free_(&io);
    if (st != DV_OK && ctx->rank == 0)
        dv_user_error("%s: checkpoint not written: %s (the previous checkpoint and `latest` are "
                      "kept)",
                      path[0] ? path : d, why[0] ? why : dv_status_str(st));
    return st;
}

int dv_ckpt_save(const dv_ctx *ctx, const dv_ssl *s, const dv_ckpt_extra *x, const char *dir,
                 int keep) {
    return dv_ckpt_save_sharded(ctx, s, x, dir, keep, NULL);
}

/* ---- loading ----------------------------------------------------------------------------------
 */

/* Serial checks of a checkpoint against an architecture: datasets, shapes, types, checksum
 * attributes present. */
static int check_items_(hid_t f, const item_ *it, int n, char *why, size_t len) {
    for (int i = 0; i < n; i++) {
        hid_t d = -1;
        uint64_t c;
        DV_TRY(dataset_check_(f, it[i].path, it[i].ty, it[i].ndim, it[i].shape, &d, &c, why, len));
        H5Dclose(d);
    }
    return DV_OK;
}

/* Rank 0, serial: format, architecture against s (DV_ERR_CONFIG), structure (DV_ERR_FORMAT). */
static int precheck_(const char *path, const dv_ssl *s, char *why, size_t len) {
    hid_t f;
    DV_TRY(open_serial_(path, &f, why, len));
    arch_ fa, ra;
    item_ *it = NULL;
    int n = 0;
    memset(&fa, 0, sizeof fa);
    int st = check_root_(f, NULL, NULL, NULL, why, len);
    if (st == DV_OK) st = check_config_(f, NULL, why, len);
    if (st == DV_OK) st = arch_from_file_(&fa, f, path, why, len);
    if (st == DV_OK) {
        arch_from_ssl_(&ra, s);
        if (arch_diff_(&fa, &ra, why, len)) st = DV_ERR_CONFIG;
    }
    if (st == DV_OK) st = items_build_(&ra, &it, &n);
    if (st == DV_OK) st = check_items_(f, it, n, why, len);
    free(it);
    arch_free_(&fa);
    H5Fclose(f);
    return st;
}

/* Collective: one file into s and x. */
static int load_file_(io_ *io, dv_ssl *s, dv_ckpt_extra *x, const char *path,
                      const dv_ckpt_shards *sh) {
    int st = DV_OK;
    if (io->rank == 0) st = precheck_(path, s, io->why, io->why_len);
    if ((st = bcast0_(io, st)) != DV_OK) return st;

    hid_t fapl = -1, f = -1;
    item_ *it = NULL;
    int nit = 0;
    int64_t step = 0;
    arch_ a;
    arch_from_ssl_(&a, s);
    fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0 || H5Pset_fapl_mpio(fapl, io->comm, MPI_INFO_NULL) < 0)
        st = fail_h5_(io->why, io->why_len, "setting up MPI-IO for", path);
    if (st == DV_OK && (f = H5Fopen(path, H5F_ACC_RDONLY, fapl)) < 0) {
        h5walk_ w;
        st = fail_(io->why, io->why_len, DV_ERR_FORMAT, "cannot open as HDF5 (%s)", h5msg_(&w));
    }
    if (st == DV_OK) st = check_root_(f, &step, NULL, NULL, io->why, io->why_len);
    if (st == DV_OK) st = items_build_(&a, &it, &nit);
    if ((st = agree_(io, st)) != DV_OK) goto done;

    dv_center *c[2] = {&s->center_dino, &s->center_ibot};
    scalars_ v;
    memset(&v, 0, sizeof v);
    for (int i = 0; i < nit && st == DV_OK; i++) {
        const item_ *t = &it[i];
        if (t->buf == BUF_STATE) {
            void *p = state_ptr_(t->mod, c, &v);
            const size_t n = numel_(t->ndim, t->shape);
            st = tensor_read_(io, f, t->path, t->ty, t->ndim, t->shape, p, 0, n, 0,
                              io->rank == 0 ? n : 0);
        } else {
            dv_ssl_module *mod = &s->mod[t->mod];
            float *buf = mod_buf_(mod, t->buf);
            const slice_ sl = slice_of_(io, sh, 0, t->mod, mod->numel, t->p);
            st = tensor_read_(io, f, t->path, TY_F32, t->ndim, t->shape, buf + sl.loc, sl.off,
                              sl.cnt, sl.soff, sl.scnt);
        }
    }
    if (st == DV_OK) {
        for (int h = 0; h < 2; h++) {
            c[h]->pending_rows = v.rows[h];
            c[h]->has_pending = v.has[h] != 0;
        }
        s->step = step;
        s->adamw_steps = v.adamw_step;
        if (isfinite(v.loss_scale) && v.loss_scale > 0) s->scaler.scale = v.loss_scale;
        s->scaler.growth_tracker = v.growth;
        if (x) {
            x->loader_epoch = v.epoch;
            x->loader_batch = v.batch;
        }
    }
done:
    if (f >= 0) H5Fclose(f);
    close_id_(fapl);
    free(it);
    return st;
}

int dv_ckpt_load_file(const dv_ctx *ctx, dv_ssl *s, dv_ckpt_extra *x, const char *path,
                      const dv_ckpt_shards *sh) {
    dv_ckpt_shards own;
    if (!sh) sh = dv_ckpt_shards_of(s, &own);
    char why[DV_CKPT_WHY_MAX] = "";
    dv_h5_quiet();
    io_ io;
    int st = io_init_(&io, ctx, why, sizeof why);
    if ((st = agree_(&io, st)) == DV_OK && (st = shards_check_(&io, s, sh)) == DV_OK) {
        st = load_file_(&io, s, x, path, sh);
        if (st != DV_OK && ctx->rank == 0)
            dv_user_error("%s: %s", path, why[0] ? why : dv_status_str(st));
    }
    io_free_(&io);
    return st;
}

int dv_ckpt_load_latest_sharded(const dv_ctx *ctx, dv_ssl *s, dv_ckpt_extra *x, const char *dir,
                                const dv_ckpt_shards *sh, int64_t *step_loaded) {
    dv_ckpt_shards own;
    if (!sh) sh = dv_ckpt_shards_of(s, &own);
    char why[DV_CKPT_WHY_MAX] = "";
    const char *d = dir && dir[0] ? dir : ".";
    *step_loaded = -1;
    dv_h5_quiet();
    io_ io;
    int st = io_init_(&io, ctx, why, sizeof why);
    if ((st = agree_(&io, st)) != DV_OK) goto out;
    if ((st = shards_check_(&io, s, sh)) != DV_OK) goto out;

    /* rank 0 decides the candidates, newest first: `latest`'s file, then older ones */
    char *names = NULL; /* "name\n" per candidate */
    int len = 0;
    if (ctx->rank == 0) {
        int64_t *steps = NULL;
        size_t n = 0;
        char lname[64] = "";
        st = list_steps_(d, &steps, &n, why, sizeof why);
        const int lat = st == DV_OK ? read_latest_(d, lname, sizeof lname) : 0;
        int64_t lstep = INT64_MAX;
        if (lat == 1) parse_name_(lname, &lstep);
        if (lat < 0 && n)
            dv_user_warning("%s/latest: missing or unreadable; trying the newest checkpoint", d);
        names = malloc((n + 1) * 64 + 1);
        if (!names && st == DV_OK) st = fail_(why, sizeof why, DV_ERR_NOMEM, "out of memory");
        if (names) {
            names[0] = '\0';
            if (lat == 1) len += sprintf(names + len, "%s\n", lname);
            for (size_t i = 0; i < n; i++)
                if (steps[i] < lstep) {
                    char nm[64];
                    len += sprintf(names + len, "%s\n", dv_ckpt_file_name(nm, sizeof nm, steps[i]));
                }
        }
        free(steps);
        len = names ? len + 1 : 0;
    }
    if ((st = bcast0_(&io, st)) != DV_OK) {
        free(names);
        goto out;
    }
    if (MPI_Bcast(&len, 1, MPI_INT, 0, ctx->comm) != MPI_SUCCESS) {
        free(names);
        st = DV_ERR(DV_ERR_MPI, "MPI_Bcast failed");
        goto out;
    }
    if (ctx->rank != 0) names = malloc((size_t)(len ? len : 1));
    int have = names != NULL, all = 0;
    MPI_Allreduce(&have, &all, 1, MPI_INT, MPI_MIN, ctx->comm);
    if (!all) {
        free(names);
        st = DV_ERR(DV_ERR_NOMEM, "out of memory");
        goto out;
    }
    if (len) MPI_Bcast(names, len, MPI_CHAR, 0, ctx->comm);
    int tried = 0;
    st = DV_OK;
    int found = 0;
    for (char *p = names; len && *p;) {
        char *nl = strchr(p, '\n');
        *nl = '\0';
        char path[PATH_MAX_];
        join_(path, sizeof path, d, p);
        p = nl + 1;
        tried++;
        why[0] = '\0';
        st = load_file_(&io, s, x, path, sh);
        if (st == DV_OK) {
            *step_loaded = s->step;
            found = 1;
            break;
        }
        if (st == DV_ERR_CONFIG || st == DV_ERR_MPI || st == DV_ERR_NOMEM || st == DV_ERR_ARG) {
            if (ctx->rank == 0) dv_user_error("%s: %s", path, why[0] ? why : dv_status_str(st));
            break;
        }
        if (ctx->rank == 0)
            dv_user_warning("%s: %s; %s", path, why[0] ? why : dv_status_str(st),
                            *p ? "trying the previous checkpoint" : "no older checkpoint left");
        st = DV_OK;
    }
    free(names);
    if (st == DV_OK && !found && tried) {
        if (ctx->rank == 0)
            dv_user_error("%s: no valid checkpoint (%d tried; see the warnings above)", d, tried);
        st = DV_ERR_FORMAT;
    }
    io_free_(&io);
    return st;
out:
    io_free_(&io);
    if (st != DV_OK && ctx->rank == 0 && why[0]) dv_user_error("%s: %s", d, why);
    return st;
}

int dv_ckpt_load_latest(const dv_ctx *ctx, dv_ssl *s, dv_ckpt_extra *x, const char *dir,
                        int64_t *step_loaded) {
    return dv_ckpt_load_latest_sharded(ctx, s, x, dir, NULL, step_loaded);
}

/* ---- serial: verify, export, info ---------------------------------------------------------- */

typedef struct {
    char **paths;
    size_t n, cap;
    int nomem;
} visit_;

static herr_t visit_cb_(hid_t g, const char *name, const H5L_info_t *info, void *data) {
    visit_ *v = data;
    (void)info;
    hid_t o = H5Oopen(g, name, H5P_DEFAULT);
    if (o < 0) {
        H5Eclear2(H5E_DEFAULT);
        return 0;
    }
    int is_ds = H5Iget_type(o) == H5I_DATASET;
    H5Oclose(o);
    if (!is_ds) return 0;
    if (v->n == v->cap) {
        size_t cap = v->cap ? 2 * v->cap : 64;
        char **np = realloc(v->paths, cap * sizeof *np);
        if (!np) {
            v->nomem = 1;
            return -1;
        }
        v->paths = np;
        v->cap = cap;
    }
    if (!(v->paths[v->n] = strdup(name))) {
        v->nomem = 1;
        return -1;
    }
    v->n++;
    return 0;
}

static int cmp_item_(const void *a, const void *b) {
    return strcmp(((const item_ *)a)->path, ((const item_ *)b)->path);
}

/* Read a whole dataset's raw bytes (file type, no conversion); check its checksum and, for
 * floats, finiteness. */
static int verify_dataset_(hid_t f, const char *path, char *why, size_t len) {
    int st = DV_OK;
    hid_t d = -1, sp = -1, ft = -1;
    unsigned char *buf = NULL;
    uint64_t stored;
    if ((d = H5Dopen2(f, path, H5P_DEFAULT)) < 0 || (sp = H5Dget_space(d)) < 0 ||
        (ft = H5Dget_type(d)) < 0) {
        h5walk_ w;
        st = fail_(why, len, DV_ERR_FORMAT, "%s is not readable (%s)", path, h5msg_(&w));
        goto done;
    }
    if (attr_read_u64_(d, "checksum", &stored) < 0) {
        H5Eclear2(H5E_DEFAULT);
        st = fail_(why, len, DV_ERR_FORMAT, "%s has no checksum attribute", path);
        goto done;
    }
    hssize_t np = H5Sget_simple_extent_npoints(sp);
    size_t esz = H5Tget_size(ft);
    H5T_class_t cls = H5Tget_class(ft);
    if (np < 0 || esz == 0 || cls == H5T_VLEN || cls == H5T_STRING || H5Tis_variable_str(ft) > 0) {
        st = fail_(why, len, DV_ERR_FORMAT, "%s has an unexpected type", path);
        goto done;
    }
    const size_t nb = (size_t)np * esz;
    if (!(buf = malloc(nb ? nb : 1))) {
        st = fail_(why, len, DV_ERR_NOMEM, "out of memory reading %s (%zu bytes)", path, nb);
        goto done;
    }
    if (nb && H5Dread(d, ft, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
        h5walk_ w;
        st = fail_(why, len, DV_ERR_FORMAT, "cannot read %s (%s)", path, h5msg_(&w));
        goto done;
    }
    if (dv_sum64_bytes(buf, nb, 0) != stored) {
        st = fail_(why, len, DV_ERR_FORMAT, "checksum mismatch in %s", path);
        goto done;
    }
    if (cls == H5T_FLOAT && (esz == 4 || esz == 8)) {
        const H5T_order_t order = H5Tget_order(ft);
        for (size_t k = 0; k < (size_t)np; k++) {
            const unsigned char *e = buf + k * esz;
            uint64_t bits = 0;
            for (size_t j = 0; j < esz; j++)
                bits |= (uint64_t)e[order == H5T_ORDER_BE ? esz - 1 - j : j] << (8 * j);
            const int bad = esz == 4 ? (bits & 0x7f800000u) == 0x7f800000u
                                     : (bits & 0x7ff0000000000000ull) == 0x7ff0000000000000ull;
            if (bad) {
                st = fail_(why, len, DV_ERR_NUMERIC, "%s has a non-finite value at flat index %zu",
                           path, k);
                goto done;
            }
        }
    }
done:
    free(buf);
    close_id_(ft);
    close_id_(sp);
    close_id_(d);
    return st;
}

int dv_ckpt_verify(const char *path, char *why, size_t len) {
    char tmpwhy[DV_CKPT_WHY_MAX];
    if (!why || !len) {
        why = tmpwhy;
        len = sizeof tmpwhy;
    }
    why[0] = '\0';
    dv_h5_quiet();
    hid_t f;
    DV_TRY(open_serial_(path, &f, why, len));
    arch_ a, t;
    memset(&a, 0, sizeof a);
    item_ *it = NULL;
    int n = 0;
    visit_ v = {NULL, 0, 0, 0};
    int st = check_root_(f, NULL, NULL, NULL, why, len);
    if (st == DV_OK) st = check_config_(f, NULL, why, len);
    if (st == DV_OK) st = arch_from_file_(&a, f, path, why, len);
    if (st == DV_OK) { /* the teacher's architecture attributes must agree with the student's */
        dv_vit_config tc;
        if (dv_vit_config_read_h5(f, "teacher/backbone", &tc, path) != DV_OK) {
            st = fail_(why, len, DV_ERR_FORMAT, "bad architecture attributes on teacher/backbone");
        } else {
            t = a;
            t.vc = tc;
            for (int h = 0; h < 1 + a.has_ibot && st == DV_OK; h++) {
                char g[64];
                snprintf(g, sizeof g, "teacher/%s", dv_module_names[1 + h]);
                st = head_attrs_read_(f, g, &t.hc[h], why, len);
            }
            if (st == DV_OK && arch_diff_(&t, &a, why, len))
                st = fail_(why, len, DV_ERR_FORMAT, "teacher and student architectures differ");
        }
    }
    if (st == DV_OK) st = items_build_(&a, &it, &n);
    if (st == DV_OK) st = check_items_(f, it, n, why, len);
    if (st == DV_OK) {
        if (H5Lvisit(f, H5_INDEX_NAME, H5_ITER_INC, visit_cb_, &v) < 0 || v.nomem) {
            st = v.nomem ? fail_(why, len, DV_ERR_NOMEM, "out of memory")
                         : fail_h5_(why, len, "listing", "the datasets");
        }
    }
    if (st == DV_OK) {
        qsort(it, (size_t)n, sizeof *it, cmp_item_);
        for (size_t i = 0; i < v.n && st == DV_OK; i++) {
            item_ key;
            snprintf(key.path, sizeof key.path, "%s", v.paths[i]);
            if (!bsearch(&key, it, (size_t)n, sizeof *it, cmp_item_))
                st = fail_(why, len, DV_ERR_FORMAT, "unexpected dataset %s", v.paths[i]);
        }
        for (size_t i = 0; i < v.n && st == DV_OK; i++)
            st = verify_dataset_(f, v.paths[i], why, len);
    }
    for (size_t i = 0; i < v.n; i++) free(v.paths[i]);
    free(v.paths);
    free(it);
    arch_free_(&a);
    H5Fclose(f);
    return st;
}

/* Serial read of a whole dataset of a known type and shape, checksum verified. */
static int read_serial_(hid_t f, const char *path, ty_ ty, int ndim, const int64_t *shape,
                        void *dst, char *why, size_t len) {
    hid_t d = -1;
    uint64_t stored;
    DV_TRY(dataset_check_(f, path, ty, ndim, shape, &d, &stored, why, len));
    const size_t n = numel_(ndim, shape);
    int st = DV_OK;
    if (n && H5Dread(d, mtype_(ty), H5S_ALL, H5S_ALL, H5P_DEFAULT, dst) < 0) {
        h5walk_ w;
        st = fail_(why, len, DV_ERR_FORMAT, "cannot read %s (%s)", path, h5msg_(&w));
    } else if (tsum_(ty, dst, n, 0) != stored) {
        st = fail_(why, len, DV_ERR_FORMAT, "checksum mismatch in %s", path);
    }
    H5Dclose(d);
    return st;
}

int dv_ckpt_export_teacher(const char *ckpt_path, const char *out_path) {
    char why[DV_CKPT_WHY_MAX] = "";
    dv_h5_quiet();
    hid_t f;
    int st = open_serial_(ckpt_path, &f, why, sizeof why);
    if (st != DV_OK) {
        dv_user_error("%s: %s", ckpt_path, why);
        return st;
    }
    dv_vit m;
    memset(&m, 0, sizeof m);
    float *w = NULL;
    dv_vit_config vc;
    st = check_root_(f, NULL, NULL, NULL, why, sizeof why);
    if (st == DV_OK && dv_vit_config_read_h5(f, "teacher/backbone", &vc, ckpt_path) != DV_OK)
        st = fail_(why, sizeof why, DV_ERR_FORMAT,
                   "bad architecture attributes on teacher/backbone");
    if (st == DV_OK && dv_vit_init(&m, &vc) != DV_OK)
        st = fail_(why, sizeof why, DV_ERR_FORMAT, "unusable architecture on teacher/backbone");
    if (st == DV_OK && !(w = malloc((m.params.numel ? m.params.numel : 1) * sizeof *w)))
        st = fail_(why, sizeof why, DV_ERR_NOMEM, "out of memory (%zu floats)", m.params.numel);
    for (int i = 0; st == DV_OK && i < m.params.n; i++) {
        const dv_param *p = &m.params.t[i];
        char path[ITEM_PATH_MAX];
        snprintf(path, sizeof path, "teacher/backbone/%s", p->name);
        st = read_serial_(f, path, TY_F32, p->ndim, p->shape, w + p->offset, why, sizeof why);
        for (size_t k = 0; st == DV_OK && k < p->numel; k++)
            if (!isfinite(w[p->offset + k]))
                st = fail_(why, sizeof why, DV_ERR_NUMERIC,
                           "%s has a non-finite value at flat index %zu", path, k);
    }
    H5Fclose(f);
    if (st != DV_OK) {
        dv_user_error("%s: %s", ckpt_path, why);
    } else {
        st = dv_weights_save(out_path, &m, w); /* reports its own errors */
    }
    free(w);
    dv_vit_free(&m);
    return st;
}

int dv_ckpt_is_checkpoint(const char *path) {
    dv_h5_quiet();
    struct stat sb;
    if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) return 0;
    hid_t f = h5open_ro_(path);
    if (f < 0) {
        H5Eclear2(H5E_DEFAULT);
        return 0;
    }
    char *fmt = NULL;
    int yes = attr_read_str_(f, "format", &fmt) >= 0 && strcmp(fmt, DV_CKPT_FORMAT) == 0;
    H5Eclear2(H5E_DEFAULT);
    free(fmt);
    H5Fclose(f);
    return yes;
}

void dv_ckpt_info_free(dv_ckpt_info *info) {
    free(info->config);
    info->config = NULL;
}

int dv_ckpt_read_info(const char *path, dv_ckpt_info *info, char *why, size_t len) {
    char tmpwhy[DV_CKPT_WHY_MAX];
    if (!why || !len) {
        why = tmpwhy;
        len = sizeof tmpwhy;
    }
    why[0] = '\0';
    memset(info, 0, sizeof *info);
    dv_h5_quiet();
    hid_t f;
    DV_TRY(open_serial_(path, &f, why, len));
    arch_ a;
    memset(&a, 0, sizeof a);
    int st = check_root_(f, &info->step, &info->world_size, &info->format_version, why, len);
    if (st == DV_OK) st = arch_from_file_(&a, f, path, why, len);
    if (st == DV_OK) {
        info->backbone = a.vc;
        info->head[0] = a.hc[0];
        info->has_ibot_head = a.has_ibot;
        if (a.has_ibot) info->head[1] = a.hc[1];
        for (int m = 0; m < DV_MOD_COUNT; m++)
            if (a.tab[m]) {
                info->numel[m] = a.tab[m]->numel;
                info->ntensors[m] = a.tab[m]->n;
            }
        int64_t *dst[3] = {&info->loader_epoch, &info->loader_batch, &info->adamw_step};
        const char *nm[3] = {"state/loader_epoch", "state/loader_batch", "state/adamw_step"};
        for (int i = 0; i < 3 && st == DV_OK; i++)
            st = read_serial_(f, nm[i], TY_I64, 0, NULL, dst[i], why, len);
    }
    if (st == DV_OK) st = check_config_(f, &info->config, why, len);
    arch_free_(&a);
    H5Fclose(f);
    if (st != DV_OK) dv_ckpt_info_free(info);
    return st;
}
