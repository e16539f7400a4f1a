/* featfile — see featfile.h. */
#include "featfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"
#include "h5util.h"

/* HDF5 call inside a function with `status` and an `out:` cleanup label. */
#define H5GO_(call)                                                                                \
    do {                                                                                           \
        if ((call) < 0) {                                                                          \
            dv_h5_report_(__FILE__, __LINE__, #call);                                              \
            status = DV_ERR_HDF5;                                                                  \
            goto out;                                                                              \
        }                                                                                          \
    } while (0)

#define TRYGO_(expr)                                                                               \
    do {                                                                                           \
        if ((status = (expr)) != DV_OK)                                                            \
            goto out;                                                                              \
    } while (0)

#define CLOSE_(kind, id)                                                                           \
    do {                                                                                           \
        if ((id) >= 0)                                                                             \
            kind(id);                                                                              \
        (id) = H5I_INVALID_HID;                                                                    \
    } while (0)

/* The datasets, in the order of the writer's table. */
enum { DS_CLS, DS_PATCH, DS_REG, DS_AVG, DS_LAST, DS_LABELS, DS_IDS, DS_COUNT_ };
static const char *const k_names[DS_COUNT_] = {"x_norm_clstoken",
                                               "x_norm_patchtokens",
                                               "x_norm_regtokens",
                                               "avgpool",
                                               "cls_last4",
                                               "labels",
                                               "ids"};

struct dv_features_writer {
    char *path, *tmp;
    MPI_Comm comm; /* MPI_COMM_NULL: serial */
    int rank;
    dv_features_spec spec;
    hid_t file, dxpl;
    hid_t ds[DS_COUNT_];
    int ndim[DS_COUNT_];
    hsize_t tail[DS_COUNT_][2]; /* dims after N */
};

/* ---- attributes -------------------------------------------------------------------------- */

static int attr_write_(hid_t loc, const char *name, hid_t ftype, hid_t mtype, hsize_t n,
                       const void *value) {
    int status = DV_OK;
    hid_t sp = H5I_INVALID_HID, a = H5I_INVALID_HID;
    htri_t ex;
    H5GO_(ex = H5Aexists(loc, name));
    if (ex > 0)
        H5GO_(H5Adelete(loc, name));
    if (n == 0)
        H5GO_(sp = H5Screate(H5S_SCALAR));
    else
        H5GO_(sp = H5Screate_simple(1, &n, NULL));
    H5GO_(a = H5Acreate2(loc, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT));
    H5GO_(H5Awrite(a, mtype, value));
out:
    CLOSE_(H5Aclose, a);
    CLOSE_(H5Sclose, sp);
    return status;
}

static int attr_str_(hid_t loc, const char *name, const char *v) {
    int status = DV_OK;
    const char *s = v ? v : "";
    hid_t t = H5I_INVALID_HID;
    H5GO_(t = H5Tcopy(H5T_C_S1));
    H5GO_(H5Tset_size(t, strlen(s) + 1));
    H5GO_(H5Tset_strpad(t, H5T_STR_NULLTERM));
    H5GO_(H5Tset_cset(t, H5T_CSET_UTF8));
    status = attr_write_(loc, name, t, t, 0, s);
out:
    CLOSE_(H5Tclose, t);
    return status;
}

/* Quiet readers: *present = 0 when absent. */
static int attr_read_i64_(hid_t loc, const char *name, int64_t *v, int *present) {
    *present = 0;
    htri_t ex = H5Aexists(loc, name);
    if (ex < 0)
        return DV_ERR_HDF5;
    if (ex == 0)
        return DV_OK;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0)
        return DV_ERR_HDF5;
    hid_t t = H5Aget_type(a), sp = H5Aget_space(a);
    int status = DV_OK;
    if (t < 0 || sp < 0 || H5Tget_class(t) != H5T_INTEGER || H5Sget_simple_extent_npoints(sp) != 1)
        status = DV_ERR_FORMAT;
    else if (H5Aread(a, H5T_NATIVE_INT64, v) < 0)
        status = DV_ERR_HDF5;
    else
        *present = 1;
    if (sp >= 0)
        H5Sclose(sp);
    if (t >= 0)
        H5Tclose(t);
    H5Aclose(a);
    return status;
}

static int attr_read_str_(hid_t loc, const char *name, char *buf, size_t buflen, int *present) {
    *present = 0;
    htri_t ex = H5Aexists(loc, name);
    if (ex < 0)
        return DV_ERR_HDF5;
    if (ex == 0)
        return DV_OK;
    int status = DV_OK;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0)
        return DV_ERR_HDF5;
    hid_t t = H5Aget_type(a), sp = H5Aget_space(a);
    if (t < 0 || sp < 0 || H5Tget_class(t) != H5T_STRING || H5Sget_simple_extent_npoints(sp) != 1) {
        status = DV_ERR_FORMAT;
    } else if (H5Tis_variable_str(t) > 0) {
        hid_t mt = H5Tcopy(H5T_C_S1);
        char *s = NULL;
        if (mt < 0 || H5Tset_size(mt, H5T_VARIABLE) < 0 || H5Aread(a, mt, &s) < 0) {
            status = DV_ERR_HDF5;
        } else {
            snprintf(buf, buflen, "%s", s ? s : "");
            *present = 1;
            H5free_memory(s);
        }
        if (mt >= 0)
            H5Tclose(mt);
    } else {
        size_t n = H5Tget_size(t);
        char *s = calloc(n + 1, 1);
        hid_t mt = H5Tcopy(t);
        if (!s || mt < 0 || H5Aread(a, mt, s) < 0) {
            status = DV_ERR_HDF5;
        } else {
            snprintf(buf, buflen, "%s", s);
            *present = 1;
        }
        if (mt >= 0)
            H5Tclose(mt);
        free(s);
    }
    if (sp >= 0)
        H5Sclose(sp);
    if (t >= 0)
        H5Tclose(t);
    H5Aclose(a);
    return status;
}

/* ---- writer ------------------------------------------------------------------------------ */

static void writer_free_(dv_features_writer *w) {
    if (!w)
        return;
    for (int i = 0; i < DS_COUNT_; i++)
        CLOSE_(H5Dclose, w->ds[i]);
    CLOSE_(H5Pclose, w->dxpl);
    CLOSE_(H5Fclose, w->file);
    free(w->path);
    free(w->tmp);
    free(w);
}

/* Collective agreement: the worst status over the ranks (serial: s itself). */
static int agree_(MPI_Comm comm, int s) {
    if (comm == MPI_COMM_NULL)
        return s;
    int all = s;
    if (MPI_Allreduce(&s, &all, 1, MPI_INT, MPI_MAX, comm) != MPI_SUCCESS)
        return DV_ERR_MPI;
    return all;
}

static int create_ds_(dv_features_writer *w, int k, hid_t ftype, int ndim, const hsize_t *tail) {
    int status = DV_OK;
    hid_t sp = H5I_INVALID_HID, dcpl = H5I_INVALID_HID;
    hsize_t dims[3], chunk[3];
    dims[0] = (hsize_t)w->spec.n;
    size_t row_bytes = H5Tget_size(ftype);
    for (int i = 1; i < ndim; i++) {
        dims[i] = chunk[i] = tail[i - 1];
        row_bytes *= (size_t)tail[i - 1];
        w->tail[k][i - 1] = tail[i - 1];
    }
    int64_t cr = w->spec.chunk_rows;
    if (cr <= 0)
        cr = (int64_t)((1u << 20) / (row_bytes ? row_bytes : 1));
    if (cr < 1)
        cr = 1;
    if (cr > w->spec.n)
        cr = w->spec.n;
    chunk[0] = (hsize_t)cr;
    w->ndim[k] = ndim;
    H5GO_(sp = H5Screate_simple(ndim, dims, NULL));
    H5GO_(dcpl = H5Pcreate(H5P_DATASET_CREATE));
    H5GO_(H5Pset_chunk(dcpl, ndim, chunk));
    H5GO_(H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER));
    if (w->comm != MPI_COMM_NULL)
        H5GO_(H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_EARLY));
    H5GO_(w->ds[k] = H5Dcreate2(w->file, k_names[k], ftype, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT));
out:
    CLOSE_(H5Pclose, dcpl);
    CLOSE_(H5Sclose, sp);
    return status;
}

static int create_body_(dv_features_writer *w) {
    int status = DV_OK;
    hid_t fapl = H5I_INVALID_HID;
    const dv_features_spec *s = &w->spec;
    H5GO_(fapl = H5Pcreate(H5P_FILE_ACCESS));
    if (w->comm != MPI_COMM_NULL)
        H5GO_(H5Pset_fapl_mpio(fapl, w->comm, MPI_INFO_NULL));
    w->file = H5Fcreate(w->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    if (w->file < 0) {
        H5Eclear2(H5E_DEFAULT);
        dv_user_error("%s: cannot create the features file (%s)", w->path,
                      access(w->tmp, F_OK) == 0 || errno != ENOENT
                          ? "check the folder's permissions"
                          : "does its folder exist?");
        status = DV_ERR_IO;
        goto out;
    }
    H5GO_(w->dxpl = H5Pcreate(H5P_DATASET_XFER));
    if (w->comm != MPI_COMM_NULL)
        H5GO_(H5Pset_dxpl_mpio(w->dxpl, H5FD_MPIO_COLLECTIVE));
    hsize_t t[2];
    t[0] = (hsize_t)s->dim;
    TRYGO_(create_ds_(w, DS_CLS, H5T_IEEE_F32LE, 2, t));
    if (s->npatch > 0) {
        t[0] = (hsize_t)s->npatch;
        t[1] = (hsize_t)s->dim;
        TRYGO_(create_ds_(w, DS_PATCH, H5T_IEEE_F32LE, 3, t));
    }
    if (s->nreg > 0) {
        t[0] = (hsize_t)s->nreg;
        t[1] = (hsize_t)s->dim;
        TRYGO_(create_ds_(w, DS_REG, H5T_IEEE_F32LE, 3, t));
    }
    if (s->avgpool) {
        t[0] = (hsize_t)s->dim;
        TRYGO_(create_ds_(w, DS_AVG, H5T_IEEE_F32LE, 2, t));
    }
    if (s->nlast > 0) {
        t[0] = (hsize_t)s->nlast;
        t[1] = (hsize_t)s->dim;
        TRYGO_(create_ds_(w, DS_LAST, H5T_IEEE_F32LE, 3, t));
    }
    TRYGO_(create_ds_(w, DS_LABELS, H5T_STD_I32LE, 1, t));
    TRYGO_(create_ds_(w, DS_IDS, H5T_STD_U64LE, 1, t));
    TRYGO_(attr_str_(w->file, "format", DV_FEATURES_FORMAT));
    int64_t v = DV_FEATURES_VERSION;
    TRYGO_(attr_write_(w->file, "format_version", H5T_STD_I64LE, H5T_NATIVE_INT64, 0, &v));
    TRYGO_(attr_write_(w->file, "count", H5T_STD_I64LE, H5T_NATIVE_INT64, 0, &s->n));
    TRYGO_(attr_write_(w->file, "embed_dim", H5T_STD_I64LE, H5T_NATIVE_INT64, 0, &s->dim));
out:
    CLOSE_(H5Pclose, fapl);
    return status;
}

int dv_features_create(const char *path, MPI_Comm comm, const dv_features_spec *spec,
                       dv_features_writer **out) {
    *out = NULL;
    if (!path || !spec || spec->n < 1 || spec->dim < 1 || spec->npatch < 0 || spec->nreg < 0 ||
        spec->nlast < 0)
        return DV_ERR(DV_ERR_ARG, "dv_features_create: bad spec (n %lld, dim %lld)",
                      spec ? (long long)spec->n : 0LL, spec ? (long long)spec->dim : 0LL);
    DV_TRY(dv_h5_quiet());
    dv_features_writer *w = calloc(1, sizeof *w);
    DV_CHECK_ALLOC(w);
    w->file = w->dxpl = H5I_INVALID_HID;
    for (int i = 0; i < DS_COUNT_; i++)
        w->ds[i] = H5I_INVALID_HID;
    w->comm = comm;
    w->spec = *spec;
    if (comm != MPI_COMM_NULL)
        MPI_Comm_rank(comm, &w->rank);
    size_t n = strlen(path);
    w->path = strdup(path);
    w->tmp = malloc(n + 5);
    int status = DV_OK;
    if (!w->path || !w->tmp) {
        status = DV_ERR(DV_ERR_NOMEM, "out of memory");
    } else {
        memcpy(w->tmp, path, n);
        memcpy(w->tmp + n, ".tmp", 5);
        status = create_body_(w);
    }
    status = agree_(comm, status);
    if (status != DV_OK) {
        dv_features_discard(w);
        return status;
    }
    *out = w;
    return DV_OK;
}

int dv_features_attr_i64(dv_features_writer *w, const char *name, int64_t value) {
    return attr_write_(w->file, name, H5T_STD_I64LE, H5T_NATIVE_INT64, 0, &value);
}

int dv_features_attr_i64v(dv_features_writer *w, const char *name, const int64_t *v, int64_t n) {
    if (n < 1)
        return DV_ERR(DV_ERR_ARG, "dv_features_attr_i64v: empty vector for %s", name);
    return attr_write_(w->file, name, H5T_STD_I64LE, H5T_NATIVE_INT64, (hsize_t)n, v);
}

int dv_features_attr_str(dv_features_writer *w, const char *name, const char *value) {
    return attr_str_(w->file, name, value);
}

static int write_ds_(dv_features_writer *w, int k, hid_t mtype, int64_t start, int64_t count,
                     const void *buf) {
    int status = DV_OK;
    hid_t fs = H5I_INVALID_HID, ms = H5I_INVALID_HID;
    const int nd = w->ndim[k];
    hsize_t off[3] = {(hsize_t)start, 0, 0}, cnt[3] = {(hsize_t)count, 0, 0};
    for (int i = 1; i < nd; i++)
        cnt[i] = w->tail[k][i - 1];
    H5GO_(fs = H5Dget_space(w->ds[k]));
    if (count > 0) {
        H5GO_(H5Sselect_hyperslab(fs, H5S_SELECT_SET, off, NULL, cnt, NULL));
        H5GO_(ms = H5Screate_simple(nd, cnt, NULL));
    } else {
        /* a rank with nothing to write still takes part in the collective write */
        hsize_t one = 1;
        H5GO_(H5Sselect_none(fs));
        H5GO_(ms = H5Screate_simple(1, &one, NULL));
        H5GO_(H5Sselect_none(ms));
    }
    static const uint64_t dummy = 0;
    H5GO_(H5Dwrite(w->ds[k], mtype, ms, fs, w->dxpl, count > 0 ? buf : (const void *)&dummy));
out:
    CLOSE_(H5Sclose, ms);
    CLOSE_(H5Sclose, fs);
    return status;
}

int dv_features_write(dv_features_writer *w, int64_t start, int64_t count,
                      const dv_features_rows *rows) {
    if (count < 0 || start < 0 || start + count > w->spec.n)
        return DV_ERR(DV_ERR_ARG, "%s: rows [%lld, %lld) outside [0, %lld)", w->tmp,
                      (long long)start, (long long)(start + count), (long long)w->spec.n);
    const void *bufs[DS_COUNT_] = {rows->cls,      rows->patch,  rows->reg, rows->avgpool,
                                   rows->cls_last, rows->labels, rows->ids};
    for (int k = 0; k < DS_COUNT_; k++) {
        if (w->ds[k] < 0)
            continue;
        if (count > 0 && !bufs[k])
            return DV_ERR(DV_ERR_ARG, "%s: no data for /%s", w->tmp, k_names[k]);
        hid_t mt = k == DS_LABELS ? H5T_NATIVE_INT32
                   : k == DS_IDS  ? H5T_NATIVE_UINT64
                                  : H5T_NATIVE_FLOAT;
        DV_TRY(write_ds_(w, k, mt, start, count, bufs[k]));
    }
    return DV_OK;
}

static int close_all_(dv_features_writer *w) {
    int status = DV_OK;
    for (int i = 0; i < DS_COUNT_; i++)
        if (w->ds[i] >= 0 && H5Dclose(w->ds[i]) < 0)
            status = DV_ERR_HDF5;
    for (int i = 0; i < DS_COUNT_; i++)
        w->ds[i] = H5I_INVALID_HID;
    if (w->dxpl >= 0)
        H5Pclose(w->dxpl);
    w->dxpl = H5I_INVALID_HID;
    if (w->file >= 0 && H5Fclose(w->file) < 0) {
        dv_h5_report_(__FILE__, __LINE__, "H5Fclose(features file)");
        status = DV_ERR_HDF5;
    }
    w->file = H5I_INVALID_HID;
    return status;
}

int dv_features_commit(dv_features_writer *w) {
    int status = agree_(w->comm, close_all_(w));
    if (status == DV_OK && w->rank == 0) {
        int fd = open(w->tmp, O_RDONLY);
        if (fd >= 0) {
            (void)fsync(fd);
            close(fd);
        }
        if (rename(w->tmp, w->path) != 0) {
            int e = errno;
            status = DV_ERR(DV_ERR_IO, "rename %s -> %s: %s", w->tmp, w->path, strerror(e));
        }
    }
    status = agree_(w->comm, status);
    if (status != DV_OK && w->rank == 0)
        unlink(w->tmp);
    writer_free_(w);
    return status;
}

void dv_features_discard(dv_features_writer *w) {
    if (!w)
        return;
    (void)close_all_(w);
    if (w->comm != MPI_COMM_NULL)
        MPI_Barrier(w->comm);
    if (w->rank == 0 && w->tmp)
        unlink(w->tmp);
    writer_free_(w);
}

/* ---- reader ------------------------------------------------------------------------------ */

void dv_features_free(dv_features *f) {
    if (!f)
        return;
    free(f->cls);
    free(f->patch);
    free(f->reg);
    free(f->avgpool);
    free(f->cls_last);
    free(f->labels);
    free(f->ids);
    memset(f, 0, sizeof *f);
}

static void *xcalloc_(int64_t n, size_t esize) {
    return calloc((size_t)(n > 0 ? n : 1), esize);
}

int dv_features_alloc(dv_features *f, int64_t n) {
    const int64_t D = f->dim;
    f->n = n;
    f->cls = xcalloc_(n * D, sizeof(float));
    f->labels = xcalloc_(n, sizeof(int32_t));
    f->ids = xcalloc_(n, sizeof(uint64_t));
    if (f->npatch > 0)
        f->patch = xcalloc_(n * f->npatch * D, sizeof(float));
    if (f->nreg > 0)
        f->reg = xcalloc_(n * f->nreg * D, sizeof(float));
    if (f->has_avgpool)
        f->avgpool = xcalloc_(n * D, sizeof(float));
    if (f->nlast > 0)
        f->cls_last = xcalloc_(n * f->nlast * D, sizeof(float));
    if (!f->cls || !f->labels || !f->ids || (f->npatch > 0 && !f->patch) ||
        (f->nreg > 0 && !f->reg) || (f->has_avgpool && !f->avgpool) ||
        (f->nlast > 0 && !f->cls_last)) {
        dv_features_free(f);
        return DV_ERR(DV_ERR_NOMEM, "out of memory for %lld feature rows", (long long)n);
    }
    return DV_OK;
}

/* dims of dataset name; rank 0 when absent. */
static int ds_shape_(hid_t file, const char *name, int *rank, hsize_t *dims) {
    *rank = 0;
    htri_t ex = H5Lexists(file, name, H5P_DEFAULT);
    if (ex < 0)
        return DV_ERR_HDF5;
    if (ex == 0)
        return DV_OK;
    hid_t d = H5Dopen2(file, name, H5P_DEFAULT);
    if (d < 0)
        return DV_ERR_HDF5;
    hid_t s = H5Dget_space(d);
    int r = s >= 0 ? H5Sget_simple_extent_ndims(s) : -1;
    if (r > 0 && r <= 3)
        H5Sget_simple_extent_dims(s, dims, NULL);
    if (s >= 0)
        H5Sclose(s);
    H5Dclose(d);
    if (r < 1 || r > 3)
        return DV_ERR_FORMAT;
    *rank = r;
    return DV_OK;
}

static int read_rows_(hid_t file, const char *name, hid_t mtype, int64_t start, int64_t count,
                      void *buf) {
    int status = DV_OK;
    hid_t d = H5I_INVALID_HID, fs = H5I_INVALID_HID, ms = H5I_INVALID_HID;
    hsize_t dims[3], off[3] = {(hsize_t)start, 0, 0}, cnt[3];
    int r;
    H5GO_(d = H5Dopen2(file, name, H5P_DEFAULT));
    H5GO_(fs = H5Dget_space(d));
    H5GO_(r = H5Sget_simple_extent_dims(fs, dims, NULL));
    cnt[0] = (hsize_t)count;
    for (int i = 1; i < r; i++)
        cnt[i] = dims[i];
    if (count == 0)
        goto out;
    H5GO_(H5Sselect_hyperslab(fs, H5S_SELECT_SET, off, NULL, cnt, NULL));
    H5GO_(ms = H5Screate_simple(r, cnt, NULL));
    H5GO_(H5Dread(d, mtype, ms, fs, H5P_DEFAULT, buf));
out:
    CLOSE_(H5Sclose, ms);
    CLOSE_(H5Sclose, fs);
    CLOSE_(H5Dclose, d);
    return status;
}

/* Open, check the format, fill the shape fields and attributes of f. */
static int open_(const char *path, hid_t *out, dv_features *f) {
    *out = H5I_INVALID_HID;
    DV_TRY(dv_h5_quiet());
    if (access(path, R_OK) != 0) {
        int e = errno;
        dv_user_error("%s: cannot open (%s)", path, strerror(e));
        return DV_ERR_IO;
    }
    if (H5Fis_hdf5(path) <= 0) {
        H5Eclear2(H5E_DEFAULT);
        dv_user_error("%s: not an HDF5 file", path);
        return DV_ERR_FORMAT;
    }
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file < 0) {
        H5Eclear2(H5E_DEFAULT);
        dv_user_error("%s: cannot open the HDF5 file", path);
        return DV_ERR_FORMAT;
    }
    int status = DV_OK, present = 0;
    char s[64];
    int64_t v = 0;
    if (attr_read_str_(file, "format", s, sizeof s, &present) != DV_OK || !present) {
        dv_user_error("%s: not a dinov2c features file (format attribute missing)", path);
        status = DV_ERR_FORMAT;
        goto out;
    }
    if (strcmp(s, DV_FEATURES_FORMAT) != 0) {
        dv_user_error("%s: not a dinov2c features file (format is '%s', expected '%s')", path, s,
                      DV_FEATURES_FORMAT);
        status = DV_ERR_FORMAT;
        goto out;
    }
    if (attr_read_i64_(file, "format_version", &v, &present) != DV_OK || !present || v < 1 ||
        v > DV_FEATURES_VERSION) {
        dv_user_error("%s: features format_version %lld is not supported (this program reads %d)",
                      path, present ? (long long)v : -1LL, DV_FEATURES_VERSION);
        status = DV_ERR_FORMAT;
        goto out;
    }
    hsize_t dims[3];
    int r;
    if (ds_shape_(file, "x_norm_clstoken", &r, dims) != DV_OK || r != 2 || dims[0] < 1 ||
        dims[1] < 1) {
        dv_user_error("%s: /x_norm_clstoken must be a float32 [N, D] dataset", path);
        status = DV_ERR_FORMAT;
        goto out;
    }
    f->total = (int64_t)dims[0];
    f->dim = (int64_t)dims[1];
    const int64_t N = f->total, D = f->dim;
    struct {
        const char *name;
        int want_rank;
        int64_t *size; /* middle dim, or NULL */
        int *flag;
    } parts[] = {{"x_norm_patchtokens", 3, &f->npatch, NULL},
                 {"x_norm_regtokens", 3, &f->nreg, NULL},
                 {"cls_last4", 3, &f->nlast, NULL},
                 {"avgpool", 2, NULL, &f->has_avgpool},
                 {"labels", 1, NULL, NULL},
                 {"ids", 1, NULL, NULL}};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        if (ds_shape_(file, parts[i].name, &r, dims) != DV_OK)
            r = -1;
        if (r == 0 && parts[i].want_rank == 1) {
            dv_user_error("%s: /%s missing", path, parts[i].name);
            status = DV_ERR_FORMAT;
            goto out;
        }
        if (r == 0)
            continue;
        int ok = r == parts[i].want_rank && (int64_t)dims[0] == N;
        if (ok && r >= 2)
            ok = (int64_t)dims[r - 1] == D;
        if (!ok) {
            dv_user_error("%s: /%s does not match /x_norm_clstoken [%lld, %lld]", path,
                          parts[i].name, (long long)N, (long long)D);
            status = DV_ERR_FORMAT;
            goto out;
        }
        if (parts[i].size)
            *parts[i].size = (int64_t)dims[1];
        if (parts[i].flag)
            *parts[i].flag = 1;
    }
    f->num_classes = 0;
    if (attr_read_i64_(file, "num_classes", &v, &present) == DV_OK && present)
        f->num_classes = v;
    f->image_size = -1;
    if (attr_read_i64_(file, "image_size", &v, &present) == DV_OK && present)
        f->image_size = v;
    H5Eclear2(H5E_DEFAULT);
out:
    if (status != DV_OK) {
        H5Fclose(file);
        return status;
    }
    *out = file;
    return DV_OK;
}

int dv_features_info(const char *path, dv_features *f) {
    memset(f, 0, sizeof *f);
    hid_t file;
    DV_TRY(open_(path, &file, f));
    H5Fclose(file);
    return DV_OK;
}

/* avgpool[i] = mean over P of patch tokens, rows [start, start + count), in blocks. */
static int avgpool_from_patches_(hid_t file, const dv_features *f, int64_t start, int64_t count,
                                 float *avg) {
    const int64_t P = f->npatch, D = f->dim;
    int64_t blk = (int64_t)((64u << 20) / (size_t)(P * D * (int64_t)sizeof(float)));
    if (blk < 1)
        blk = 1;
    float *buf = malloc((size_t)(blk < count ? blk : count) * (size_t)(P * D) * sizeof(float));
    DV_CHECK_ALLOC(buf);
    double *acc = malloc((size_t)D * sizeof *acc);
    if (!acc) {
        free(buf);
        return DV_ERR(DV_ERR_NOMEM, "out of memory");
    }
    int status = DV_OK;
    for (int64_t r0 = 0; r0 < count && status == DV_OK; r0 += blk) {
        const int64_t nb = count - r0 < blk ? count - r0 : blk;
        status = read_rows_(file, "x_norm_patchtokens", H5T_NATIVE_FLOAT, start + r0, nb, buf);
        for (int64_t i = 0; i < nb && status == DV_OK; i++) {
            for (int64_t d = 0; d < D; d++)
                acc[d] = 0.0;
            const float *x = buf + i * P * D;
            for (int64_t p = 0; p < P; p++)
                for (int64_t d = 0; d < D; d++)
                    acc[d] += x[p * D + d];
            for (int64_t d = 0; d < D; d++)
                avg[(r0 + i) * D + d] = (float)(acc[d] / (double)P);
        }
    }
    free(acc);
    free(buf);
    return status;
}

int dv_features_read(const char *path, unsigned parts, int64_t start, int64_t count,
                     dv_features *f) {
    memset(f, 0, sizeof *f);
    hid_t file;
    DV_TRY(open_(path, &file, f));
    int status = DV_OK;
    if (count < 0)
        count = f->total - start;
    if (start < 0 || count < 0 || start + count > f->total) {
        dv_user_error("%s: rows [%lld, %lld) outside the file's [0, %lld)", path, (long long)start,
                      (long long)(start + count), (long long)f->total);
        status = DV_ERR_ARG;
        goto out;
    }
    /* shapes of what is loaded */
    const int64_t file_patch = f->npatch;
    dv_features want = *f;
    if (!(parts & DV_FEAT_PATCH))
        want.npatch = 0;
    if (!(parts & DV_FEAT_REG))
        want.nreg = 0;
    if (!(parts & DV_FEAT_CLS_LAST))
        want.nlast = 0;
    int compute_avg = 0;
    if (!(parts & DV_FEAT_AVGPOOL)) {
        want.has_avgpool = 0;
    } else if (!f->has_avgpool && file_patch > 0) {
        want.has_avgpool = 1;
        compute_avg = 1;
    }
    TRYGO_(dv_features_alloc(&want, count));
    /* keep the file's shape fields; the pointers tell what is loaded */
    want.npatch = f->npatch;
    want.nreg = f->nreg;
    want.nlast = f->nlast;
    want.has_avgpool = f->has_avgpool;
    *f = want;
    TRYGO_(read_rows_(file, "x_norm_clstoken", H5T_NATIVE_FLOAT, start, count, f->cls));
    TRYGO_(read_rows_(file, "labels", H5T_NATIVE_INT32, start, count, f->labels));
    TRYGO_(read_rows_(file, "ids", H5T_NATIVE_UINT64, start, count, f->ids));
    if (f->patch)
        TRYGO_(read_rows_(file, "x_norm_patchtokens", H5T_NATIVE_FLOAT, start, count, f->patch));
    if (f->reg)
        TRYGO_(read_rows_(file, "x_norm_regtokens", H5T_NATIVE_FLOAT, start, count, f->reg));
    if (f->cls_last)
        TRYGO_(read_rows_(file, "cls_last4", H5T_NATIVE_FLOAT, start, count, f->cls_last));
    if (f->avgpool && !compute_avg)
        TRYGO_(read_rows_(file, "avgpool", H5T_NATIVE_FLOAT, start, count, f->avgpool));
    if (f->avgpool && compute_avg) {
        TRYGO_(avgpool_from_patches_(file, f, start, count, f->avgpool));
        f->avgpool_computed = 1;
    }
out:
    H5Fclose(file);
    if (status != DV_OK)
        dv_features_free(f);
    return status;
}
