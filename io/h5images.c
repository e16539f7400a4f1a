/* h5images — see h5images.h. */
#include "h5images.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"
#include "h5util.h"

#if H5_VERSION_GE(1, 12, 0)
#define DV_H5_RECLAIM_(type, space, buf) H5Treclaim((type), (space), H5P_DEFAULT, (buf))
#else
#define DV_H5_RECLAIM_(type, space, buf) H5Dvlen_reclaim((type), (space), H5P_DEFAULT, (buf))
#endif

/* HDF5 call inside a function with `status` and an `out:` cleanup label. */
#define H5GO_(call)                                                                                \
    do {                                                                                           \
        if ((call) < 0) {                                                                          \
            dv_h5_report_(__FILE__, __LINE__, #call);                                              \
            status = DV_ERR_HDF5;                                                                  \
            goto out;                                                                              \
        }                                                                                          \
    } while (0)

/* dv_* call inside such a function */
#define TRYGO_(expr)                                                                               \
    do {                                                                                           \
        if ((status = (expr)) != DV_OK) goto out;                                                  \
    } while (0)

#define CLOSE_(kind, id)                                                                           \
    do {                                                                                           \
        if ((id) >= 0) kind(id);                                                                   \
        (id) = H5I_INVALID_HID;                                                                    \
    } while (0)

const char *dv_h5img_layout_name(dv_h5img_layout layout) {
    return layout == DV_H5IMG_RAW ? "raw" : "encoded";
}

void dv_strv_free(char **v, int64_t n, int vec_too) {
    if (!v) return;
    for (int64_t i = 0; i < n; i++)
        free(v[i]);
    if (vec_too) free(v);
}

static char *xstrdup_(const char *s) { return strdup(s ? s : ""); }

static hid_t vlen_str_type_(void) {
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t < 0) return t;
    if (H5Tset_size(t, H5T_VARIABLE) < 0 || H5Tset_cset(t, H5T_CSET_UTF8) < 0) {
        H5Tclose(t);
        return -1;
    }
    return t;
}

/* ---- attributes -------------------------------------------------------------------------- */

static int attr_write_(hid_t loc, const char *name, hid_t ftype, hid_t mtype, const void *value) {
    int status = DV_OK;
    hid_t sp = H5I_INVALID_HID, a = H5I_INVALID_HID;
    htri_t ex;
    H5GO_(ex = H5Aexists(loc, name));
    if (ex > 0) H5GO_(H5Adelete(loc, name));
    H5GO_(sp = H5Screate(H5S_SCALAR));
    H5GO_(a = H5Acreate2(loc, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT));
    H5GO_(H5Awrite(a, mtype, value));
out:
    CLOSE_(H5Aclose, a);
    CLOSE_(H5Sclose, sp);
    return status;
}

static int attr_int_(hid_t loc, const char *name, int v) {
    int32_t x = v;
    return attr_write_(loc, name, H5T_STD_I32LE, H5T_NATIVE_INT32, &x);
}

static int attr_u64_(hid_t loc, const char *name, uint64_t v) {
    return attr_write_(loc, name, H5T_STD_U64LE, H5T_NATIVE_UINT64, &v);
}

static int attr_str_(hid_t loc, const char *name, const char *v) {
    hid_t t = vlen_str_type_();
    if (t < 0) {
        dv_h5_report_(__FILE__, __LINE__, "vlen_str_type_()");
        return DV_ERR_HDF5;
    }
    const char *p = v ? v : "";
    int s = attr_write_(loc, name, t, t, &p);
    H5Tclose(t);
    return s;
}

/* Read a root attribute as int64 (any integer type) or string. present = 0 when absent.
 * Quiet: failures are reported through the return value only. */
static int attr_read_i64_(hid_t loc, const char *name, int64_t *v, int *present) {
    *present = 0;
    htri_t ex = H5Aexists(loc, name);
    if (ex < 0) return DV_ERR_HDF5;
    if (ex == 0) return DV_OK;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) return DV_ERR_HDF5;
    hid_t t = H5Aget_type(a);
    int status = DV_OK;
    if (t < 0 || H5Tget_class(t) != H5T_INTEGER)
        status = DV_ERR_FORMAT;
    else if (H5Aread(a, H5T_NATIVE_INT64, v) < 0)
        status = DV_ERR_HDF5;
    else
        *present = 1;
    if (t >= 0) H5Tclose(t);
    H5Aclose(a);
    return status;
}

static int attr_read_str_(hid_t loc, const char *name, char *buf, size_t buflen, int *present) {
    *present = 0;
    htri_t ex = H5Aexists(loc, name);
    if (ex < 0) return DV_ERR_HDF5;
    if (ex == 0) return DV_OK;
    int status = DV_OK;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) return DV_ERR_HDF5;
    hid_t t = H5Aget_type(a), sp = H5Aget_space(a);
    if (t < 0 || sp < 0 || H5Tget_class(t) != H5T_STRING || H5Sget_simple_extent_npoints(sp) != 1) {
        status = DV_ERR_FORMAT;
    } else if (H5Tis_variable_str(t) > 0) {
        hid_t mt = vlen_str_type_();
        char *s = NULL;
        if (mt < 0 || H5Aread(a, mt, &s) < 0)
            status = DV_ERR_HDF5;
        else {
            snprintf(buf, buflen, "%s", s ? s : "");
            *present = 1;
            DV_H5_RECLAIM_(mt, sp, &s);
        }
        if (mt >= 0) H5Tclose(mt);
    } else {
        size_t n = H5Tget_size(t);
        char *s = calloc(n + 1, 1);
        hid_t mt = H5Tcopy(t);
        if (!s || mt < 0 || H5Aread(a, mt, s) < 0)
            status = DV_ERR_HDF5;
        else {
            snprintf(buf, buflen, "%s", s);
            *present = 1;
        }
        if (mt >= 0) H5Tclose(mt);
        free(s);
    }
    if (t >= 0) H5Tclose(t);
    if (sp >= 0) H5Sclose(sp);
    H5Aclose(a);
    return status;
}

/* ---- writer ------------------------------------------------------------------------------ */

struct dv_h5img_writer {
    char *final_path, *tmp_path;
    dv_h5img_spec spec; /* class names are not kept */
    hid_t file, d_images, d_labels, d_ids, d_paths;
    hid_t t_blob, t_str;
    size_t image_bytes; /* raw: H * W * C */
    int64_t count;      /* rows written to the file */
    int batch_cap, nb;  /* rows buffered */
    uint8_t *raw;       /* raw: batch_cap * image_bytes */
    uint8_t *arena;     /* encoded: concatenated blobs */
    size_t arena_len, arena_cap;
    size_t *blob_off, *blob_len;
    int32_t *labels;
    uint64_t *ids;
    char **paths;
    int64_t nskip, skip_cap;
    uint64_t *skip_ids;
    char **skip_paths, **skip_reasons;
};

static void writer_free_(dv_h5img_writer *w, int remove_tmp) {
    if (!w) return;
    CLOSE_(H5Dclose, w->d_images);
    CLOSE_(H5Dclose, w->d_labels);
    CLOSE_(H5Dclose, w->d_ids);
    CLOSE_(H5Dclose, w->d_paths);
    CLOSE_(H5Tclose, w->t_blob);
    CLOSE_(H5Tclose, w->t_str);
    CLOSE_(H5Fclose, w->file);
    if (remove_tmp && w->tmp_path) unlink(w->tmp_path);
    free(w->final_path);
    free(w->tmp_path);
    free(w->raw);
    free(w->arena);
    free(w->blob_off);
    free(w->blob_len);
    free(w->labels);
    free(w->ids);
    dv_strv_free(w->paths, w->nb, 1);
    free(w->skip_ids);
    dv_strv_free(w->skip_paths, w->nskip, 1);
    dv_strv_free(w->skip_reasons, w->nskip, 1);
    free(w);
}

/* A 1-D or N-D dataset growing along dim 0 from 0 rows. */
static int create_ext_(hid_t file, const char *name, hid_t type, int rank, const hsize_t *tail,
                       hsize_t chunk_rows, int deflate, hid_t *out) {
    int status = DV_OK;
    hid_t sp = H5I_INVALID_HID, dcpl = H5I_INVALID_HID;
    hsize_t dims[4] = {0}, maxd[4] = {H5S_UNLIMITED}, chunk[4] = {chunk_rows};
    for (int i = 1; i < rank; i++)
        dims[i] = maxd[i] = chunk[i] = tail[i - 1];
    H5GO_(sp = H5Screate_simple(rank, dims, maxd));
    H5GO_(dcpl = H5Pcreate(H5P_DATASET_CREATE));
    H5GO_(H5Pset_chunk(dcpl, rank, chunk));
    H5GO_(H5Pset_obj_track_times(dcpl, 0)); /* byte-identical files for identical content */
    if (deflate > 0) H5GO_(H5Pset_deflate(dcpl, (unsigned)deflate));
    H5GO_(*out = H5Dcreate2(file, name, type, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT));
out:
    CLOSE_(H5Pclose, dcpl);
    CLOSE_(H5Sclose, sp);
    return status;
}

/* A fixed 1-D dataset of n rows written at once. */
static int write_fixed_(hid_t file, const char *name, hid_t ftype, hid_t mtype, hsize_t n,
                        const void *buf) {
    int status = DV_OK;
    hid_t sp = H5I_INVALID_HID, dcpl = H5I_INVALID_HID, d = H5I_INVALID_HID;
    H5GO_(sp = H5Screate_simple(1, &n, NULL));
    H5GO_(dcpl = H5Pcreate(H5P_DATASET_CREATE));
    H5GO_(H5Pset_obj_track_times(dcpl, 0));
    H5GO_(d = H5Dcreate2(file, name, ftype, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT));
    if (n) H5GO_(H5Dwrite(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf));
out:
    CLOSE_(H5Dclose, d);
    CLOSE_(H5Pclose, dcpl);
    CLOSE_(H5Sclose, sp);
    return status;
}

/* Extend d along dim 0 to start + n rows and write rows [start, start + n) from buf. */
static int append_rows_(hid_t d, hid_t mtype, hsize_t start, hsize_t n, const void *buf) {
    int status = DV_OK;
    hid_t fs = H5I_INVALID_HID, ms = H5I_INVALID_HID;
    hsize_t dims[4], off[4] = {start, 0, 0, 0}, cnt[4];
    H5GO_(fs = H5Dget_space(d));
    int rank;
    H5GO_(rank = H5Sget_simple_extent_dims(fs, dims, NULL));
    CLOSE_(H5Sclose, fs);
    dims[0] = start + n;
    H5GO_(H5Dset_extent(d, dims));
    H5GO_(fs = H5Dget_space(d));
    cnt[0] = n;
    for (int i = 1; i < rank; i++)
        cnt[i] = dims[i];
    H5GO_(H5Sselect_hyperslab(fs, H5S_SELECT_SET, off, NULL, cnt, NULL));
    H5GO_(ms = H5Screate_simple(rank, cnt, NULL));
    H5GO_(H5Dwrite(d, mtype, ms, fs, H5P_DEFAULT, buf));
out:
    CLOSE_(H5Sclose, ms);
    CLOSE_(H5Sclose, fs);
    return status;
}

static int create_body_(dv_h5img_writer *w, const dv_h5img_spec *sp) {
    int status = DV_OK;
    hid_t fcpl = H5I_INVALID_HID;
    H5GO_(fcpl = H5Pcreate(H5P_FILE_CREATE));
    H5GO_(w->file = H5Fcreate(w->tmp_path, H5F_ACC_TRUNC, fcpl, H5P_DEFAULT));
    H5GO_(w->t_str = vlen_str_type_());
    const int raw = sp->layout == DV_H5IMG_RAW;
    if (raw) {
        hsize_t tail[3] = {(hsize_t)sp->height, (hsize_t)sp->width, (hsize_t)sp->channels};
        TRYGO_(create_ext_(w->file, "images", H5T_STD_U8LE, 4, tail, (hsize_t)w->batch_cap,
                           sp->deflate, &w->d_images));
    } else {
        H5GO_(w->t_blob = H5Tvlen_create(H5T_NATIVE_UINT8));
        TRYGO_(create_ext_(w->file, "images", w->t_blob, 1, NULL, (hsize_t)w->batch_cap, 0,
                           &w->d_images));
    }
    TRYGO_(create_ext_(w->file, "labels", H5T_STD_I32LE, 1, NULL, 4096, 0, &w->d_labels));
    TRYGO_(create_ext_(w->file, "ids", H5T_STD_U64LE, 1, NULL, 4096, 0, &w->d_ids));
    if (sp->with_paths)
        TRYGO_(create_ext_(w->file, "paths", w->t_str, 1, NULL, 1024, 0, &w->d_paths));
    if (sp->class_names && sp->num_class_names > 0)
        TRYGO_(write_fixed_(w->file, "class_names", w->t_str, w->t_str,
                            (hsize_t)sp->num_class_names, sp->class_names));
    TRYGO_(attr_str_(w->file, "format", DV_H5IMG_FORMAT));
    TRYGO_(attr_int_(w->file, "format_version", DV_H5IMG_VERSION));
    TRYGO_(attr_str_(w->file, "layout", dv_h5img_layout_name(sp->layout)));
    if (raw) {
        TRYGO_(attr_int_(w->file, "height", sp->height));
        TRYGO_(attr_int_(w->file, "width", sp->width));
        TRYGO_(attr_int_(w->file, "channels", sp->channels));
    }
    TRYGO_(attr_int_(w->file, "num_classes", sp->num_classes));
out:
    CLOSE_(H5Pclose, fcpl);
    return status;
}

int dv_h5img_create(const char *path, const dv_h5img_spec *spec, dv_h5img_writer **out) {
    *out = NULL;
    if (spec->layout != DV_H5IMG_RAW && spec->layout != DV_H5IMG_ENCODED)
        return DV_ERR(DV_ERR_ARG, "%s: bad layout %d", path, (int)spec->layout);
    if (spec->layout == DV_H5IMG_RAW &&
        (spec->height <= 0 || spec->width <= 0 || spec->channels <= 0))
        return DV_ERR(DV_ERR_ARG, "%s: raw layout needs a shape, got %dx%dx%d", path, spec->height,
                      spec->width, spec->channels);
    if (spec->deflate < 0 || spec->deflate > 9)
        return DV_ERR(DV_ERR_ARG, "%s: deflate level %d outside 0..9", path, spec->deflate);
    DV_TRY(dv_h5_quiet());
    dv_h5img_writer *w = calloc(1, sizeof *w);
    DV_CHECK_ALLOC(w);
    w->file = w->d_images = w->d_labels = w->d_ids = w->d_paths = H5I_INVALID_HID;
    w->t_blob = w->t_str = H5I_INVALID_HID;
    w->spec = *spec;
    w->spec.class_names = NULL;
    w->spec.num_class_names = 0;
    int status = DV_OK;
    size_t plen = strlen(path);
    w->final_path = strdup(path);
    w->tmp_path = malloc(plen + 5);
    if (!w->final_path || !w->tmp_path) {
        writer_free_(w, 0);
        return DV_ERR(DV_ERR_NOMEM, "out of memory: shard writer %s", path);
    }
    snprintf(w->tmp_path, plen + 5, "%s.tmp", path);
    if (spec->layout == DV_H5IMG_RAW) {
        w->image_bytes = (size_t)spec->height * spec->width * spec->channels;
        int k = spec->chunk_images;
        if (k <= 0) {
            size_t per = ((size_t)1 << 20) / w->image_bytes;
            k = per < 1 ? 1 : per > 256 ? 256 : (int)per;
        }
        w->batch_cap = k;
        w->raw = malloc((size_t)k * w->image_bytes);
        if (!w->raw) {
            writer_free_(w, 0);
            return DV_ERR(DV_ERR_NOMEM, "out of memory: shard batch %d x %zu bytes", k,
                          w->image_bytes);
        }
    } else {
        w->batch_cap = 256;
        w->blob_off = malloc((size_t)w->batch_cap * sizeof *w->blob_off);
        w->blob_len = malloc((size_t)w->batch_cap * sizeof *w->blob_len);
    }
    w->labels = malloc((size_t)w->batch_cap * sizeof *w->labels);
    w->ids = malloc((size_t)w->batch_cap * sizeof *w->ids);
    w->paths = calloc((size_t)w->batch_cap, sizeof *w->paths);
    if (!w->labels || !w->ids || !w->paths ||
        (spec->layout == DV_H5IMG_ENCODED && (!w->blob_off || !w->blob_len))) {
        writer_free_(w, 0);
        return DV_ERR(DV_ERR_NOMEM, "out of memory: shard writer %s", path);
    }
    status = create_body_(w, spec);
    if (status != DV_OK) {
        dv_user_error("%s: cannot create shard (%s)", w->tmp_path, dv_status_str(status));
        writer_free_(w, 1);
        return status;
    }
    *out = w;
    return DV_OK;
}

static int flush_(dv_h5img_writer *w) {
    if (w->nb == 0) return DV_OK;
    const hsize_t start = (hsize_t)w->count, n = (hsize_t)w->nb;
    int status = DV_OK;
    if (w->spec.layout == DV_H5IMG_RAW) {
        DV_TRY(append_rows_(w->d_images, H5T_NATIVE_UINT8, start, n, w->raw));
    } else {
        hvl_t *v = malloc((size_t)w->nb * sizeof *v);
        DV_CHECK_ALLOC(v);
        for (int i = 0; i < w->nb; i++) {
            v[i].len = w->blob_len[i];
            v[i].p = w->arena + w->blob_off[i];
        }
        status = append_rows_(w->d_images, w->t_blob, start, n, v);
        free(v);
        DV_TRY(status);
        w->arena_len = 0;
    }
    DV_TRY(append_rows_(w->d_labels, H5T_NATIVE_INT32, start, n, w->labels));
    DV_TRY(append_rows_(w->d_ids, H5T_NATIVE_UINT64, start, n, w->ids));
    if (w->d_paths >= 0) DV_TRY(append_rows_(w->d_paths, w->t_str, start, n, w->paths));
    dv_strv_free(w->paths, w->nb, 0);
    memset(w->paths, 0, (size_t)w->batch_cap * sizeof *w->paths);
    w->count += w->nb;
    w->nb = 0;
    return DV_OK;
}

static int push_meta_(dv_h5img_writer *w, int32_t label, uint64_t id, const char *path) {
    w->labels[w->nb] = label;
    w->ids[w->nb] = id;
    if (w->d_paths >= 0) DV_CHECK_ALLOC(w->paths[w->nb] = xstrdup_(path));
    w->nb++;
    if (w->nb == w->batch_cap) DV_TRY(flush_(w));
    return DV_OK;
}

int dv_h5img_append_raw(dv_h5img_writer *w, const uint8_t *pixels, int32_t label, uint64_t id,
                        const char *path) {
    if (w->spec.layout != DV_H5IMG_RAW)
        return DV_ERR(DV_ERR_ARG, "%s: append_raw on an encoded shard", w->final_path);
    memcpy(w->raw + (size_t)w->nb * w->image_bytes, pixels, w->image_bytes);
    return push_meta_(w, label, id, path);
}

int dv_h5img_append_encoded(dv_h5img_writer *w, const void *bytes, size_t size, int32_t label,
                            uint64_t id, const char *path) {
    if (w->spec.layout != DV_H5IMG_ENCODED)
        return DV_ERR(DV_ERR_ARG, "%s: append_encoded on a raw shard", w->final_path);
    if (w->arena_len + size > ((size_t)64 << 20) && w->nb > 0) DV_TRY(flush_(w));
    if (w->arena_len + size > w->arena_cap) {
        size_t cap = w->arena_cap ? w->arena_cap : ((size_t)1 << 20);
        while (cap < w->arena_len + size)
            cap *= 2;
        uint8_t *p = realloc(w->arena, cap);
        DV_CHECK_ALLOC(p);
        w->arena = p;
        w->arena_cap = cap;
    }
    if (size) memcpy(w->arena + w->arena_len, bytes, size);
    w->blob_off[w->nb] = w->arena_len;
    w->blob_len[w->nb] = size;
    w->arena_len += size;
    return push_meta_(w, label, id, path);
}

int dv_h5img_add_skipped(dv_h5img_writer *w, uint64_t id, const char *path, const char *reason) {
    if (w->nskip == w->skip_cap) {
        int64_t cap = w->skip_cap ? 2 * w->skip_cap : 16;
        uint64_t *ids = realloc(w->skip_ids, (size_t)cap * sizeof *ids);
        DV_CHECK_ALLOC(ids);
        w->skip_ids = ids;
        char **p = realloc(w->skip_paths, (size_t)cap * sizeof *p);
        DV_CHECK_ALLOC(p);
        w->skip_paths = p;
        char **r = realloc(w->skip_reasons, (size_t)cap * sizeof *r);
        DV_CHECK_ALLOC(r);
        w->skip_reasons = r;
        w->skip_cap = cap;
    }
    char *p = xstrdup_(path), *r = xstrdup_(reason);
    if (!p || !r) {
        free(p);
        free(r);
        return DV_ERR(DV_ERR_NOMEM, "out of memory: skipped record");
    }
    w->skip_ids[w->nskip] = id;
    w->skip_paths[w->nskip] = p;
    w->skip_reasons[w->nskip] = r;
    w->nskip++;
    return DV_OK;
}

int dv_h5img_set_attr_u64(dv_h5img_writer *w, const char *name, uint64_t value) {
    return attr_u64_(w->file, name, value);
}

int dv_h5img_set_attr_str(dv_h5img_writer *w, const char *name, const char *value) {
    return attr_str_(w->file, name, value);
}

int64_t dv_h5img_writer_count(const dv_h5img_writer *w) { return w->count + w->nb; }

static int fsync_path_(const char *path, int dir) {
    int fd = open(path, dir ? O_RDONLY | O_DIRECTORY : O_RDONLY);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

static int commit_body_(dv_h5img_writer *w) {
    DV_TRY(flush_(w));
    if (w->nskip > 0) {
        DV_TRY(write_fixed_(w->file, "skipped_ids", H5T_STD_U64LE, H5T_NATIVE_UINT64,
                            (hsize_t)w->nskip, w->skip_ids));
        DV_TRY(write_fixed_(w->file, "skipped_paths", w->t_str, w->t_str, (hsize_t)w->nskip,
                            w->skip_paths));
        DV_TRY(write_fixed_(w->file, "skipped_reasons", w->t_str, w->t_str, (hsize_t)w->nskip,
                            w->skip_reasons));
    }
    DV_CHECK_H5(H5Dclose(w->d_images));
    w->d_images = H5I_INVALID_HID;
    DV_CHECK_H5(H5Dclose(w->d_labels));
    w->d_labels = H5I_INVALID_HID;
    DV_CHECK_H5(H5Dclose(w->d_ids));
    w->d_ids = H5I_INVALID_HID;
    if (w->d_paths >= 0) {
        DV_CHECK_H5(H5Dclose(w->d_paths));
        w->d_paths = H5I_INVALID_HID;
    }
    DV_CHECK_H5(H5Fflush(w->file, H5F_SCOPE_GLOBAL));
    hid_t f = w->file;
    w->file = H5I_INVALID_HID;
    DV_CHECK_H5(H5Fclose(f));
    DV_CHECK_IO(fsync_path_(w->tmp_path, 0) == 0, w->tmp_path);
    DV_CHECK_IO(rename(w->tmp_path, w->final_path) == 0, w->final_path);
    /* make the rename durable: fsync the directory (best effort) */
    char *dir = strdup(w->final_path);
    if (dir) {
        char *slash = strrchr(dir, '/');
        if (slash) {
            *(slash == dir ? slash + 1 : slash) = 0;
            fsync_path_(dir, 1);
        } else {
            fsync_path_(".", 1);
        }
        free(dir);
    }
    return DV_OK;
}

int dv_h5img_commit(dv_h5img_writer *w) {
    int s = commit_body_(w);
    if (s != DV_OK) dv_user_error("%s: shard not written (%s)", w->final_path, dv_status_str(s));
    writer_free_(w, s != DV_OK);
    return s;
}

void dv_h5img_discard(dv_h5img_writer *w) { writer_free_(w, 1); }

/* ---- reader ------------------------------------------------------------------------------ */

typedef struct {
    char text[256];
} h5msg_;

static herr_t h5msg_walk_(unsigned n, const H5E_error2_t *e, void *data) {
    h5msg_ *m = data;
    (void)n;
    snprintf(m->text, sizeof m->text, "%s", e->desc ? e->desc : "?");
    return 0;
}

/* The innermost message of the HDF5 error stack (and clear it). */
static void h5_last_error_(char *buf, size_t n) {
    h5msg_ m;
    snprintf(m.text, sizeof m.text, "unknown HDF5 error");
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, h5msg_walk_, &m);
    H5Eclear2(H5E_DEFAULT);
    snprintf(buf, n, "%s", m.text);
}

static int why_(char *why, size_t whylen, int status, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int why_(char *why, size_t whylen, int status, const char *path, const char *fmt, ...) {
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    if (why)
        snprintf(why, whylen, "%s: %s", path, text);
    else
        dv_user_error("%s: %s", path, text);
    return status;
}

static void reader_reset_(dv_h5img *r) {
    memset(r, 0, sizeof *r);
    r->file = r->images = r->labels = r->ids = H5I_INVALID_HID;
}

int dv_h5img_close(dv_h5img *r) {
    CLOSE_(H5Dclose, r->images);
    CLOSE_(H5Dclose, r->labels);
    CLOSE_(H5Dclose, r->ids);
    int status = DV_OK;
    if (r->file >= 0 && H5Fclose(r->file) < 0) {
        dv_h5_report_(__FILE__, __LINE__, "H5Fclose(r->file)");
        status = DV_ERR_HDF5;
    }
    r->file = H5I_INVALID_HID;
    free(r->path);
    r->path = NULL;
    return status;
}

/* dims of a dataset; returns rank or -1 */
static int ds_dims_(hid_t d, hsize_t *dims) {
    hid_t sp = H5Dget_space(d);
    if (sp < 0) return -1;
    int rank = H5Sget_simple_extent_ndims(sp);
    if (rank >= 0 && rank <= 4)
        H5Sget_simple_extent_dims(sp, dims, NULL);
    else
        rank = -1;
    H5Sclose(sp);
    return rank;
}

static int open_ds_(dv_h5img *r, const char *name, hid_t *out, char *why, size_t whylen) {
    htri_t ex = H5Lexists(r->file, name, H5P_DEFAULT);
    if (ex <= 0) {
        H5Eclear2(H5E_DEFAULT);
        return why_(why, whylen, DV_ERR_FORMAT, r->path,
                    "not a valid image shard (dataset /%s missing)", name);
    }
    *out = H5Dopen2(r->file, name, H5P_DEFAULT);
    if (*out < 0) {
        char m[256];
        h5_last_error_(m, sizeof m);
        return why_(why, whylen, DV_ERR_FORMAT, r->path, "cannot open dataset /%s (%s)", name, m);
    }
    return DV_OK;
}

static int open_body_(const char *path, MPI_Comm comm, dv_h5img *r, char *why, size_t whylen) {
    char m[256];
    DV_TRY(dv_h5_quiet());
    DV_CHECK_ALLOC(r->path = strdup(path));
    if (access(path, R_OK) != 0)
        return why_(why, whylen, DV_ERR_IO, path, "cannot open (%s)", strerror(errno));
    htri_t is = H5Fis_hdf5(path);
    if (is <= 0) {
        H5Eclear2(H5E_DEFAULT);
        return why_(why, whylen, DV_ERR_FORMAT, path, "not an HDF5 file");
    }
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0) {
        h5_last_error_(m, sizeof m);
        return why_(why, whylen, DV_ERR_HDF5, path, "H5Pcreate failed (%s)", m);
    }
    if (comm != MPI_COMM_NULL && H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL) < 0) {
        h5_last_error_(m, sizeof m);
        H5Pclose(fapl);
        return why_(why, whylen, DV_ERR_HDF5, path, "cannot use MPI-IO (%s)", m);
    }
    r->file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    if (r->file < 0) h5_last_error_(m, sizeof m); /* before any other call clears the stack */
    H5Pclose(fapl);
    if (r->file < 0) {
        return why_(why, whylen, DV_ERR_FORMAT, path, "cannot open HDF5 file (%s)", m);
    }
    char s[64];
    int present = 0;
    int st = attr_read_str_(r->file, "format", s, sizeof s, &present);
    H5Eclear2(H5E_DEFAULT);
    if (st != DV_OK || !present)
        return why_(why, whylen, DV_ERR_FORMAT, path,
                    "not a dinov2c image shard (format attribute %s)",
                    st != DV_OK ? "unreadable" : "missing");
    if (strcmp(s, DV_H5IMG_FORMAT) != 0)
        return why_(why, whylen, DV_ERR_FORMAT, path,
                    "not a dinov2c image shard (format is '%s', expected '%s')", s,
                    DV_H5IMG_FORMAT);
    int64_t v;
    st = attr_read_i64_(r->file, "format_version", &v, &present);
    if (st != DV_OK || !present)
        return why_(why, whylen, DV_ERR_FORMAT, path, "image shard without a format_version");
    if (v < 1 || v > DV_H5IMG_VERSION)
        return why_(why, whylen, DV_ERR_FORMAT, path,
                    "image shard format_version %lld is not supported (this program reads %d)",
                    (long long)v, DV_H5IMG_VERSION);
    r->format_version = (int)v;
    st = attr_read_str_(r->file, "layout", s, sizeof s, &present);
    if (st != DV_OK || !present || (strcmp(s, "raw") != 0 && strcmp(s, "encoded") != 0))
        return why_(why, whylen, DV_ERR_FORMAT, path,
                    "image shard layout attribute missing or not 'raw'/'encoded'");
    r->layout = strcmp(s, "raw") == 0 ? DV_H5IMG_RAW : DV_H5IMG_ENCODED;
    st = attr_read_i64_(r->file, "num_classes", &v, &present);
    r->num_classes = (st == DV_OK && present) ? (int)v : 0;

    DV_TRY(open_ds_(r, "images", &r->images, why, whylen));
    DV_TRY(open_ds_(r, "labels", &r->labels, why, whylen));
    DV_TRY(open_ds_(r, "ids", &r->ids, why, whylen));
    htri_t hp = H5Lexists(r->file, "paths", H5P_DEFAULT);
    r->has_paths = hp > 0;
    hsize_t di[4], dl[4], dd[4];
    int ri = ds_dims_(r->images, di), rl = ds_dims_(r->labels, dl), rd = ds_dims_(r->ids, dd);
    hid_t t = H5Dget_type(r->images);
    H5T_class_t cls = t >= 0 ? H5Tget_class(t) : H5T_NO_CLASS;
    size_t tsize = t >= 0 ? H5Tget_size(t) : 0;
    if (t >= 0) H5Tclose(t);
    if (r->layout == DV_H5IMG_RAW) {
        if (ri != 4 || cls != H5T_INTEGER || tsize != 1)
            return why_(why, whylen, DV_ERR_FORMAT, path,
                        "raw image shard: /images must be uint8 [N,H,W,C] (rank %d)", ri);
        int64_t hh = 0, ww = 0, cc = 0;
        int p1, p2, p3;
        attr_read_i64_(r->file, "height", &hh, &p1);
        attr_read_i64_(r->file, "width", &ww, &p2);
        attr_read_i64_(r->file, "channels", &cc, &p3);
        if (!p1 || !p2 || !p3 || (hsize_t)hh != di[1] || (hsize_t)ww != di[2] ||
            (hsize_t)cc != di[3])
            return why_(why, whylen, DV_ERR_FORMAT, path,
                        "raw image shard: height/width/channels attributes do not match /images "
                        "[%llu,%llu,%llu,%llu]",
                        (unsigned long long)di[0], (unsigned long long)di[1],
                        (unsigned long long)di[2], (unsigned long long)di[3]);
        r->height = (int)hh;
        r->width = (int)ww;
        r->channels = (int)cc;
    } else if (ri != 1 || cls != H5T_VLEN) {
        return why_(why, whylen, DV_ERR_FORMAT, path,
                    "encoded image shard: /images must be a 1-D vlen uint8 dataset");
    }
    if (rl != 1 || rd != 1 || dl[0] != di[0] || dd[0] != di[0])
        return why_(why, whylen, DV_ERR_FORMAT, path,
                    "image shard: /images has %llu rows but /labels %llu and /ids %llu",
                    (unsigned long long)di[0], rl == 1 ? (unsigned long long)dl[0] : 0ull,
                    rd == 1 ? (unsigned long long)dd[0] : 0ull);
    r->count = (int64_t)di[0];
    H5Eclear2(H5E_DEFAULT);
    return DV_OK;
}

int dv_h5img_open(const char *path, MPI_Comm comm, dv_h5img *r) {
    reader_reset_(r);
    int s = open_body_(path, comm, r, NULL, 0);
    if (s != DV_OK) dv_h5img_close(r);
    return s;
}

int dv_h5img_probe(const char *path, dv_h5img *r, char *why, size_t whylen) {
    reader_reset_(r);
    char local[8];
    if (!why || !whylen) {
        why = local;
        whylen = sizeof local;
    }
    why[0] = 0;
    int s = open_body_(path, MPI_COMM_NULL, r, why, whylen);
    if (s != DV_OK) dv_h5img_close(r);
    return s;
}

static int check_range_(const dv_h5img *r, int64_t start, int64_t count) {
    if (start < 0 || count < 0 || start + count > r->count)
        return DV_ERR(DV_ERR_ARG, "%s: rows [%lld, %lld) outside [0, %lld)", r->path,
                      (long long)start, (long long)(start + count), (long long)r->count);
    return DV_OK;
}

/* Read rows [start, start + count) of a dataset (any rank) into buf as mtype. */
static int read_rows_(hid_t d, hid_t mtype, int64_t start, int64_t count, void *buf) {
    int status = DV_OK;
    hid_t fs = H5I_INVALID_HID, ms = H5I_INVALID_HID;
    hsize_t dims[4], off[4] = {(hsize_t)start, 0, 0, 0}, cnt[4];
    int rank;
    H5GO_(fs = H5Dget_space(d));
    H5GO_(rank = H5Sget_simple_extent_dims(fs, dims, NULL));
    cnt[0] = (hsize_t)count;
    for (int i = 1; i < rank; i++)
        cnt[i] = dims[i];
    H5GO_(H5Sselect_hyperslab(fs, H5S_SELECT_SET, off, NULL, cnt, NULL));
    H5GO_(ms = H5Screate_simple(rank, cnt, NULL));
    H5GO_(H5Dread(d, mtype, ms, fs, H5P_DEFAULT, buf));
out:
    CLOSE_(H5Sclose, ms);
    CLOSE_(H5Sclose, fs);
    return status;
}

int dv_h5img_read_raw(const dv_h5img *r, int64_t start, int64_t count, uint8_t *dst) {
    if (r->layout != DV_H5IMG_RAW)
        return DV_ERR(DV_ERR_ARG, "%s: read_raw on an encoded shard", r->path);
    DV_TRY(check_range_(r, start, count));
    if (count == 0) return DV_OK;
    return read_rows_(r->images, H5T_NATIVE_UINT8, start, count, dst);
}

void dv_h5img_blobs_free(dv_h5img_blobs *b) {
    if (!b) return;
    free(b->data);
    free(b->offsets);
    memset(b, 0, sizeof *b);
}

/* Read vlen rows [start, start + count) into hvl_t / char* buf; reclaim with the same spaces. */
static int read_vlen_(hid_t d, hid_t mtype, int64_t start, int64_t count, void *buf,
                      int (*consume)(void *buf, int64_t count, void *arg), void *arg) {
    int status = DV_OK, read_ok = 0;
    hid_t fs = H5I_INVALID_HID, ms = H5I_INVALID_HID;
    hsize_t off = (hsize_t)start, cnt = (hsize_t)count;
    H5GO_(fs = H5Dget_space(d));
    H5GO_(H5Sselect_hyperslab(fs, H5S_SELECT_SET, &off, NULL, &cnt, NULL));
    H5GO_(ms = H5Screate_simple(1, &cnt, NULL));
    H5GO_(H5Dread(d, mtype, ms, fs, H5P_DEFAULT, buf));
    read_ok = 1;
    status = consume(buf, count, arg);
out:
    if (read_ok) DV_H5_RECLAIM_(mtype, ms, buf);
    CLOSE_(H5Sclose, ms);
    CLOSE_(H5Sclose, fs);
    return status;
}

static int blobs_consume_(void *buf, int64_t count, void *arg) {
    const hvl_t *v = buf;
    dv_h5img_blobs *b = arg;
    size_t total = 0;
    for (int64_t i = 0; i < count; i++)
        total += v[i].len;
    DV_CHECK_ALLOC(b->offsets = malloc((size_t)(count + 1) * sizeof *b->offsets));
    DV_CHECK_ALLOC(b->data = malloc(total ? total : 1));
    size_t o = 0;
    for (int64_t i = 0; i < count; i++) {
        b->offsets[i] = o;
        if (v[i].len) memcpy(b->data + o, v[i].p, v[i].len);
        o += v[i].len;
    }
    b->offsets[count] = o;
    b->count = count;
    return DV_OK;
}

int dv_h5img_read_encoded(const dv_h5img *r, int64_t start, int64_t count, dv_h5img_blobs *out) {
    memset(out, 0, sizeof *out);
    if (r->layout != DV_H5IMG_ENCODED)
        return DV_ERR(DV_ERR_ARG, "%s: read_encoded on a raw shard", r->path);
    DV_TRY(check_range_(r, start, count));
    if (count == 0) {
        DV_CHECK_ALLOC(out->offsets = calloc(1, sizeof *out->offsets));
        return DV_OK;
    }
    hvl_t *v = calloc((size_t)count, sizeof *v);
    DV_CHECK_ALLOC(v);
    hid_t mt = H5Tvlen_create(H5T_NATIVE_UINT8);
    if (mt < 0) {
        free(v);
        dv_h5_report_(__FILE__, __LINE__, "H5Tvlen_create(H5T_NATIVE_UINT8)");
        return DV_ERR_HDF5;
    }
    int s = read_vlen_(r->images, mt, start, count, v, blobs_consume_, out);
    H5Tclose(mt);
    free(v);
    if (s != DV_OK) dv_h5img_blobs_free(out);
    return s;
}

int dv_h5img_read_labels(const dv_h5img *r, int64_t start, int64_t count, int32_t *dst) {
    DV_TRY(check_range_(r, start, count));
    if (count == 0) return DV_OK;
    return read_rows_(r->labels, H5T_NATIVE_INT32, start, count, dst);
}

int dv_h5img_read_ids(const dv_h5img *r, int64_t start, int64_t count, uint64_t *dst) {
    DV_TRY(check_range_(r, start, count));
    if (count == 0) return DV_OK;
    return read_rows_(r->ids, H5T_NATIVE_UINT64, start, count, dst);
}

static int strs_consume_(void *buf, int64_t count, void *arg) {
    char **src = buf, **dst = arg;
    for (int64_t i = 0; i < count; i++) {
        dst[i] = xstrdup_(src[i]);
        if (!dst[i]) {
            dv_strv_free(dst, i, 0);
            return DV_ERR(DV_ERR_NOMEM, "out of memory: strings");
        }
    }
    return DV_OK;
}

/* Strings [start, start + count) of a 1-D vlen-string dataset by name. */
static int read_strings_(const dv_h5img *r, const char *name, int64_t start, int64_t count,
                         char **dst) {
    if (count == 0) return DV_OK;
    int status = DV_OK;
    hid_t d = H5I_INVALID_HID, mt = H5I_INVALID_HID, ft = H5I_INVALID_HID;
    char **tmp = calloc((size_t)count, sizeof *tmp);
    DV_CHECK_ALLOC(tmp);
    H5GO_(d = H5Dopen2(r->file, name, H5P_DEFAULT));
    H5GO_(ft = H5Dget_type(d));
    if (H5Tis_variable_str(ft) <= 0) {
        status = DV_ERR_FORMAT;
        dv_user_error("%s: /%s is not a variable-length string dataset", r->path, name);
        goto out;
    }
    H5GO_(mt = vlen_str_type_());
    status = read_vlen_(d, mt, start, count, tmp, strs_consume_, dst);
out:
    CLOSE_(H5Tclose, mt);
    CLOSE_(H5Tclose, ft);
    CLOSE_(H5Dclose, d);
    free(tmp);
    return status;
}

int dv_h5img_read_paths(const dv_h5img *r, int64_t start, int64_t count, char **dst) {
    if (!r->has_paths) {
        dv_user_error("%s: shard has no /paths", r->path);
        return DV_ERR_FORMAT;
    }
    DV_TRY(check_range_(r, start, count));
    return read_strings_(r, "paths", start, count, dst);
}

/* Rows of an optional 1-D dataset; -1 when absent. */
static int64_t optional_rows_(const dv_h5img *r, const char *name) {
    if (H5Lexists(r->file, name, H5P_DEFAULT) <= 0) {
        H5Eclear2(H5E_DEFAULT);
        return -1;
    }
    hid_t d = H5Dopen2(r->file, name, H5P_DEFAULT);
    if (d < 0) return -1;
    hsize_t dims[4];
    int rank = ds_dims_(d, dims);
    H5Dclose(d);
    return rank == 1 ? (int64_t)dims[0] : -1;
}

int dv_h5img_read_class_names(const dv_h5img *r, char ***names, int *n) {
    *names = NULL;
    *n = 0;
    int64_t k = optional_rows_(r, "class_names");
    if (k <= 0) return DV_OK;
    char **v = calloc((size_t)k, sizeof *v);
    DV_CHECK_ALLOC(v);
    int s = read_strings_(r, "class_names", 0, k, v);
    if (s != DV_OK) {
        free(v);
        return s;
    }
    *names = v;
    *n = (int)k;
    return DV_OK;
}

int dv_h5img_read_skipped(const dv_h5img *r, int64_t *n, uint64_t **ids, char ***paths,
                          char ***reasons) {
    *n = 0;
    *ids = NULL;
    *paths = *reasons = NULL;
    int64_t k = optional_rows_(r, "skipped_ids");
    if (k <= 0) return DV_OK;
    if (optional_rows_(r, "skipped_paths") != k || optional_rows_(r, "skipped_reasons") != k) {
        dv_user_error("%s: skipped_* datasets differ in length", r->path);
        return DV_ERR_FORMAT;
    }
    uint64_t *vi = malloc((size_t)k * sizeof *vi);
    char **vp = calloc((size_t)k, sizeof *vp), **vr = calloc((size_t)k, sizeof *vr);
    int status = DV_OK;
    hid_t d = H5I_INVALID_HID;
    if (!vi || !vp || !vr) {
        status = DV_ERR(DV_ERR_NOMEM, "out of memory: skipped records");
        goto out;
    }
    H5GO_(d = H5Dopen2(r->file, "skipped_ids", H5P_DEFAULT));
    H5GO_(H5Dread(d, H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, vi));
    status = read_strings_(r, "skipped_paths", 0, k, vp);
    if (status == DV_OK) status = read_strings_(r, "skipped_reasons", 0, k, vr);
out:
    CLOSE_(H5Dclose, d);
    if (status != DV_OK) {
        free(vi);
        dv_strv_free(vp, k, 1);
        dv_strv_free(vr, k, 1);
        return status;
    }
    *n = k;
    *ids = vi;
    *paths = vp;
    *reasons = vr;
    return DV_OK;
}

int dv_h5img_get_attr_u64(const dv_h5img *r, const char *name, uint64_t *value, int *present) {
    *present = 0;
    htri_t ex = H5Aexists(r->file, name);
    if (ex == 0) return DV_OK;
    int status = DV_OK;
    hid_t a = ex > 0 ? H5Aopen(r->file, name, H5P_DEFAULT) : H5I_INVALID_HID;
    hid_t t = a >= 0 ? H5Aget_type(a) : H5I_INVALID_HID;
    if (t < 0 || H5Tget_class(t) != H5T_INTEGER) {
        status = DV_ERR_FORMAT;
    } else if (H5Tget_sign(t) == H5T_SGN_NONE) {
        if (H5Aread(a, H5T_NATIVE_UINT64, value) < 0) status = DV_ERR_HDF5;
    } else {
        int64_t v;
        if (H5Aread(a, H5T_NATIVE_INT64, &v) < 0 || v < 0)
            status = DV_ERR_FORMAT;
        else
            *value = (uint64_t)v;
    }
    if (t >= 0) H5Tclose(t);
    if (a >= 0) H5Aclose(a);
    if (status != DV_OK) {
        H5Eclear2(H5E_DEFAULT);
        dv_user_error("%s: attribute %s is not a non-negative integer", r->path, name);
        return status;
    }
    *present = 1;
    return DV_OK;
}

int dv_h5img_get_attr_str(const dv_h5img *r, const char *name, char *buf, size_t buflen,
                          int *present) {
    int s = attr_read_str_(r->file, name, buf, buflen, present);
    if (s != DV_OK) {
        H5Eclear2(H5E_DEFAULT);
        dv_user_error("%s: attribute %s is not a string", r->path, name);
    }
    return s;
}
