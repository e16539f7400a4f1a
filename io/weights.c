/* weights — see weights.h. */
#include "weights.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "h5util.h"

/* HDF5 check that jumps to the function's cleanup label instead of returning (handles are
 * closed there). Needs `int st` and a `done:` label. */
#define H5_GO(call)                                                                                \
    do {                                                                                           \
        if ((call) < 0) {                                                                          \
            dv_h5_report_(__FILE__, __LINE__, #call);                                              \
            st = DV_ERR_HDF5;                                                                      \
            goto done;                                                                             \
        }                                                                                          \
    } while (0)

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

static const char *pfx_(const char *prefix) { return prefix && prefix[0] ? prefix : "."; }

/* "prefix/name" or "name" for messages and paths. */
static void join_(char *buf, size_t len, const char *prefix, const char *name) {
    int n;
    if (prefix && prefix[0])
        n = snprintf(buf, len, "%s/%s", prefix, name);
    else
        n = snprintf(buf, len, "%s", name);
    if (n < 0 || (size_t)n >= len) buf[len - 1] = '\0'; /* truncated: only for messages */
}

/* Open prefix as a group, creating it (and its parents) when `create`. */
static int open_group_(hid_t loc, const char *prefix, int create, hid_t *out) {
    int st = DV_OK;
    hid_t lcpl = -1;
    *out = -1;
    const char *p = pfx_(prefix);
    htri_t ex = strcmp(p, ".") == 0 ? 1 : H5Lexists(loc, p, H5P_DEFAULT);
    if (ex < 0 && create) ex = 0; /* a missing parent makes H5Lexists fail */
    if (ex > 0) {
        H5_GO(*out = H5Gopen2(loc, p, H5P_DEFAULT));
    } else if (create) {
        H5_GO(lcpl = H5Pcreate(H5P_LINK_CREATE));
        H5_GO(H5Pset_create_intermediate_group(lcpl, 1));
        H5_GO(*out = H5Gcreate2(loc, p, lcpl, H5P_DEFAULT, H5P_DEFAULT));
    } else {
        st = DV_ERR_FORMAT;
    }
done:
    close_id_(lcpl);
    return st;
}

/* ---- attributes ---------------------------------------------------------------------------- */

static int attr_replace_(hid_t obj, const char *name, hid_t type, hid_t space, const void *buf) {
    int st = DV_OK;
    hid_t a = -1;
    htri_t ex;
    H5_GO(ex = H5Aexists(obj, name));
    if (ex > 0) H5_GO(H5Adelete(obj, name));
    H5_GO(a = H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT));
    H5_GO(H5Awrite(a, type, buf));
done:
    close_id_(a);
    return st;
}

static int attr_scalar_(hid_t obj, const char *name, hid_t type, const void *buf) {
    int st = DV_OK;
    hid_t s = -1;
    H5_GO(s = H5Screate(H5S_SCALAR));
    st = attr_replace_(obj, name, type, s, buf);
done:
    close_id_(s);
    return st;
}

static int attr_i64_(hid_t obj, const char *name, int64_t v) {
    return attr_scalar_(obj, name, H5T_STD_I64LE, &v);
}
static int attr_f64_(hid_t obj, const char *name, double v) {
    return attr_scalar_(obj, name, H5T_IEEE_F64LE, &v);
}

/* h5py's bool: an enum over int8 with FALSE = 0, TRUE = 1. */
static int attr_bool_(hid_t obj, const char *name, int v) {
    int st = DV_OK;
    hid_t t = -1;
    int8_t f = 0, tr = 1, val = v ? 1 : 0;
    H5_GO(t = H5Tenum_create(H5T_STD_I8LE));
    H5_GO(H5Tenum_insert(t, "FALSE", &f));
    H5_GO(H5Tenum_insert(t, "TRUE", &tr));
    st = attr_scalar_(obj, name, t, &val);
done:
    close_id_(t);
    return st;
}

/* Variable-length UTF-8 string, as h5py writes a str. */
static int attr_str_(hid_t obj, const char *name, const char *v) {
    int st = DV_OK;
    hid_t t = -1;
    H5_GO(t = H5Tcopy(H5T_C_S1));
    H5_GO(H5Tset_size(t, H5T_VARIABLE));
    H5_GO(H5Tset_cset(t, H5T_CSET_UTF8));
    st = attr_scalar_(obj, name, t, &v);
done:
    close_id_(t);
    return st;
}

static int attr_f32v_(hid_t obj, const char *name, const float *v, hsize_t n) {
    int st = DV_OK;
    hid_t s = -1;
    H5_GO(s = H5Screate_simple(1, &n, NULL));
    st = attr_replace_(obj, name, H5T_IEEE_F32LE, s, v);
done:
    close_id_(s);
    return st;
}

typedef enum { ATTR_ABSENT, ATTR_INT, ATTR_FLOAT, ATTR_BOOL, ATTR_STRING, ATTR_OTHER } attr_kind_;

typedef struct {
    attr_kind_ kind;
    int64_t i;   /* ATTR_INT, ATTR_BOOL */
    double f;    /* ATTR_FLOAT (and ATTR_INT / ATTR_BOOL converted) */
    char s[256]; /* ATTR_STRING */
    int64_t n;   /* elements */
    double v[8]; /* first elements of a numeric array */
} attr_val_;

/* Read any scalar / small numeric array / string attribute into a tagged value. */
static int attr_get_(hid_t obj, const char *name, attr_val_ *out) {
    int st = DV_OK;
    hid_t a = -1, ft = -1, sp = -1, mt = -1, nt = -1;
    memset(out, 0, sizeof *out);
    htri_t ex;
    H5_GO(ex = H5Aexists(obj, name));
    if (ex == 0) {
        out->kind = ATTR_ABSENT;
        return DV_OK;
    }
    H5_GO(a = H5Aopen(obj, name, H5P_DEFAULT));
    H5_GO(ft = H5Aget_type(a));
    H5_GO(sp = H5Aget_space(a));
    hssize_t n;
    H5_GO(n = H5Sget_simple_extent_npoints(sp));
    out->n = (int64_t)n;
    H5T_class_t cls = H5Tget_class(ft);
    if (cls == H5T_STRING) {
        out->kind = ATTR_STRING;
        if (n != 1) {
            out->kind = ATTR_OTHER;
            goto done;
        }
        htri_t vl;
        H5_GO(vl = H5Tis_variable_str(ft));
        H5_GO(mt = H5Tcopy(H5T_C_S1));
        if (vl > 0) {
            char *str = NULL;
            H5_GO(H5Tset_size(mt, H5T_VARIABLE));
            H5_GO(H5Tset_cset(mt, H5Tget_cset(ft)));
            H5_GO(H5Aread(a, mt, &str));
            snprintf(out->s, sizeof out->s, "%s", str ? str : "");
            H5_GO(H5Dvlen_reclaim(mt, sp, H5P_DEFAULT, &str));
        } else {
            size_t sz = H5Tget_size(ft);
            char *buf = calloc(sz + 1, 1);
            if (!buf) {
                st = DV_ERR(DV_ERR_NOMEM, "out of memory");
                goto done;
            }
            if (H5Tset_size(mt, sz + 1) < 0 || H5Aread(a, mt, buf) < 0) {
                free(buf);
                dv_h5_report_(__FILE__, __LINE__, "H5Aread(string)");
                st = DV_ERR_HDF5;
                goto done;
            }
            snprintf(out->s, sizeof out->s, "%s", buf);
            free(buf);
        }
    } else if (cls == H5T_INTEGER || cls == H5T_FLOAT || cls == H5T_ENUM) {
        if (n < 1) {
            out->kind = ATTR_OTHER;
            goto done;
        }
        double *buf = malloc((size_t)n * sizeof *buf);
        if (!buf) {
            st = DV_ERR(DV_ERR_NOMEM, "out of memory");
            goto done;
        }
        if (cls == H5T_ENUM) {
            /* enum → integer has no HDF5 conversion: read the native enum and decode its bytes */
            hid_t sup = H5Tget_super(ft);
            nt = H5Tget_native_type(ft, H5T_DIR_ASCEND);
            size_t sz = H5Tget_size(ft);
            int sgn = sup >= 0 ? H5Tget_sign(sup) == H5T_SGN_2 : 1;
            close_id_(sup);
            unsigned char *raw = malloc((size_t)n * sz);
            if (nt < 0 || !raw || sz > 8 || H5Aread(a, nt, raw) < 0) {
                free(raw);
                free(buf);
                dv_h5_report_(__FILE__, __LINE__, "H5Aread(enum)");
                st = DV_ERR_HDF5;
                goto done;
            }
            for (hssize_t k = 0; k < n; k++) {
                int64_t v = 0;
                const unsigned char *e = raw + (size_t)k * sz;
                if (sz == 1)
                    v = sgn ? (int64_t)(int8_t)e[0] : (int64_t)e[0];
                else if (sz == 2) {
                    int16_t x;
                    memcpy(&x, e, 2);
                    v = sgn ? (int64_t)x : (int64_t)(uint16_t)x;
                } else if (sz == 4) {
                    int32_t x;
                    memcpy(&x, e, 4);
                    v = sgn ? (int64_t)x : (int64_t)(uint32_t)x;
                } else {
                    memcpy(&v, e, 8);
                }
                buf[k] = (double)v;
            }
            free(raw);
            out->kind = ATTR_BOOL;
        } else if (cls == H5T_INTEGER) {
            int64_t *ib = malloc((size_t)n * sizeof *ib);
            if (!ib || H5Aread(a, H5T_NATIVE_INT64, ib) < 0) {
                free(ib);
                free(buf);
                dv_h5_report_(__FILE__, __LINE__, "H5Aread(int)");
                st = DV_ERR_HDF5;
                goto done;
            }
            for (hssize_t k = 0; k < n; k++) buf[k] = (double)ib[k];
            out->i = ib[0];
            free(ib);
            out->kind = ATTR_INT;
        } else {
            if (H5Aread(a, H5T_NATIVE_DOUBLE, buf) < 0) {
                free(buf);
                dv_h5_report_(__FILE__, __LINE__, "H5Aread(float)");
                st = DV_ERR_HDF5;
                goto done;
            }
            out->kind = ATTR_FLOAT;
        }
        out->f = buf[0];
        if (out->kind == ATTR_BOOL) out->i = (int64_t)buf[0];
        for (hssize_t k = 0; k < n && k < 8; k++) out->v[k] = buf[k];
        free(buf);
    } else {
        out->kind = ATTR_OTHER;
    }
done:
    close_id_(nt);
    close_id_(mt);
    close_id_(sp);
    close_id_(ft);
    close_id_(a);
    return st;
}

/* Typed getters: missing (when required) or mistyped attributes are user errors naming them. */
static int get_int_(hid_t obj, const char *what, const char *name, int required, int64_t *v) {
    attr_val_ x;
    DV_TRY(attr_get_(obj, name, &x));
    if (x.kind == ATTR_ABSENT) {
        if (!required) return DV_OK;
        dv_user_error("%s: missing attribute %s", what, name);
        return DV_ERR_FORMAT;
    }
    if ((x.kind == ATTR_INT || x.kind == ATTR_BOOL) && x.n == 1)
        *v = x.i;
    else if (x.kind == ATTR_FLOAT && x.n == 1 && x.f == floor(x.f) && fabs(x.f) < 9e15)
        *v = (int64_t)x.f;
    else {
        dv_user_error("%s: attribute %s is not an integer", what, name);
        return DV_ERR_FORMAT;
    }
    return DV_OK;
}

static int get_double_(hid_t obj, const char *what, const char *name, int required, double *v) {
    attr_val_ x;
    DV_TRY(attr_get_(obj, name, &x));
    if (x.kind == ATTR_ABSENT) {
        if (!required) return DV_OK;
        dv_user_error("%s: missing attribute %s", what, name);
        return DV_ERR_FORMAT;
    }
    if ((x.kind == ATTR_INT || x.kind == ATTR_BOOL || x.kind == ATTR_FLOAT) && x.n == 1)
        *v = x.f;
    else {
        dv_user_error("%s: attribute %s is not a number", what, name);
        return DV_ERR_FORMAT;
    }
    return DV_OK;
}

static int get_bool_(hid_t obj, const char *what, const char *name, int required, int *v) {
    int64_t i = *v;
    DV_TRY(get_int_(obj, what, name, required, &i));
    *v = i != 0;
    return DV_OK;
}

/* ---- tensors ----------------------------------------------------------------------------------
 */

int dv_params_write_h5(hid_t loc, const char *prefix, const dv_param_table *tab, const float *buf) {
    int st = DV_OK;
    hid_t g = -1, s = -1, d = -1;
    DV_TRY(open_group_(loc, prefix, 1, &g));
    for (int i = 0; i < tab->n; i++) {
        const dv_param *p = &tab->t[i];
        hsize_t dims[DV_PARAM_MAX_DIMS];
        for (int k = 0; k < p->ndim; k++) dims[k] = (hsize_t)p->shape[k];
        htri_t ex;
        H5_GO(ex = H5Lexists(g, p->name, H5P_DEFAULT));
        if (ex > 0) H5_GO(H5Ldelete(g, p->name, H5P_DEFAULT));
        H5_GO(s = H5Screate_simple(p->ndim, dims, NULL));
        H5_GO(d = H5Dcreate2(g, p->name, H5T_IEEE_F32LE, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
        if (p->numel > 0)
            H5_GO(H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf + p->offset));
        close_id_(d);
        d = -1;
        close_id_(s);
        s = -1;
    }
done:
    close_id_(d);
    close_id_(s);
    close_id_(g);
    return st;
}

typedef struct {
    const dv_param_table *tab;
    char first[DV_PARAM_NAME_MAX * 2];
    int64_t shape[32];
    int ndim;
    int found;
} extra_scan_;

static herr_t extra_cb_(hid_t g, const char *name, const H5L_info_t *info, void *data) {
    extra_scan_ *e = data;
    (void)info;
    if (e->found || dv_params_find(e->tab, name) >= 0) return 0;
    hid_t o = H5Oopen(g, name, H5P_DEFAULT);
    if (o < 0) {
        H5Eclear2(H5E_DEFAULT);
        return 0; /* dangling link: not a tensor */
    }
    if (H5Iget_type(o) == H5I_DATASET) {
        e->found = 1;
        snprintf(e->first, sizeof e->first, "%s", name);
        hid_t sp = H5Dget_space(o);
        int nd = sp >= 0 ? H5Sget_simple_extent_ndims(sp) : 0;
        hsize_t dims[32];
        if (nd > 32) nd = 32;
        if (nd > 0) H5Sget_simple_extent_dims(sp, dims, NULL);
        e->ndim = nd > 0 ? nd : 0;
        for (int k = 0; k < e->ndim; k++) e->shape[k] = (int64_t)dims[k];
        if (sp >= 0) H5Sclose(sp);
    }
    H5Oclose(o);
    return 0;
}

int dv_params_read_h5(hid_t loc, const char *prefix, const dv_param_table *tab, float *buf,
                      const char *what, unsigned flags) {
    int st = DV_OK;
    hid_t g = -1, d = -1, s = -1, t = -1;
    char path[1024], want[128], got[128];
    if (open_group_(loc, prefix, 0, &g) != DV_OK) {
        H5Eclear2(H5E_DEFAULT);
        dv_user_error("%s: no group %s", what, pfx_(prefix));
        return DV_ERR_FORMAT;
    }
    for (int i = 0; i < tab->n; i++) {
        const dv_param *p = &tab->t[i];
        join_(path, sizeof path, prefix, p->name);
        dv_param_shape_str(p->shape, p->ndim, want, sizeof want);
        htri_t ex = H5Lexists(g, p->name, H5P_DEFAULT);
        if (ex <= 0 || H5Oexists_by_name(g, p->name, H5P_DEFAULT) <= 0) {
            H5Eclear2(H5E_DEFAULT);
            dv_user_error("%s: missing tensor %s (expected shape %s)", what, path, want);
            st = DV_ERR_FORMAT;
            goto done;
        }
        d = H5Dopen2(g, p->name, H5P_DEFAULT);
        if (d < 0) {
            H5Eclear2(H5E_DEFAULT);
            dv_user_error("%s: %s is not a dataset", what, path);
            st = DV_ERR_FORMAT;
            goto done;
        }
        H5_GO(s = H5Dget_space(d));
        H5_GO(t = H5Dget_type(d));
        int nd;
        H5_GO(nd = H5Sget_simple_extent_ndims(s));
        hsize_t dims[32];
        if (nd > 32) nd = 32;
        if (nd > 0) H5_GO(H5Sget_simple_extent_dims(s, dims, NULL));
        int64_t shp[32];
        int same = nd == p->ndim;
        for (int k = 0; k < nd; k++) {
            shp[k] = (int64_t)dims[k];
            if (same && shp[k] != p->shape[k]) same = 0;
        }
        if (!same) {
            dv_param_shape_str(shp, nd, got, sizeof got);
            dv_user_error("%s: %s has shape %s, expected %s", what, path, got, want);
            st = DV_ERR_FORMAT;
            goto done;
        }
        if (H5Tget_class(t) != H5T_FLOAT) {
            dv_user_error("%s: %s is not floating point", what, path);
            st = DV_ERR_FORMAT;
            goto done;
        }
        if (p->numel > 0)
            H5_GO(H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf + p->offset));
        if (flags & DV_WEIGHTS_CHECK_FINITE) {
            const float *x = buf + p->offset;
            size_t bad = 0, first = 0;
            for (size_t k = 0; k < p->numel; k++)
                if (!isfinite(x[k]) && bad++ == 0) first = k;
            if (bad) {
                dv_user_error("%s: %s has %zu non-finite value%s (first at flat index %zu: %g)",
                              what, path, bad, bad == 1 ? "" : "s", first, (double)x[first]);
                st = DV_ERR_FORMAT;
                goto done;
            }
        }
        close_id_(t);
        t = -1;
        close_id_(s);
        s = -1;
        close_id_(d);
        d = -1;
    }
    if (!(flags & DV_WEIGHTS_ALLOW_EXTRA)) {
        extra_scan_ e;
        memset(&e, 0, sizeof e);
        e.tab = tab;
        hsize_t idx = 0;
        H5_GO(H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, &idx, extra_cb_, &e));
        if (e.found) {
            join_(path, sizeof path, prefix, e.first);
            dv_param_shape_str(e.shape, e.ndim, got, sizeof got);
            dv_user_error("%s: unexpected tensor %s %s (not part of this architecture)", what, path,
                          got);
            st = DV_ERR_FORMAT;
            goto done;
        }
    }
done:
    close_id_(t);
    close_id_(s);
    close_id_(d);
    close_id_(g);
    return st;
}

/* ---- architecture attributes -------------------------------------------------------------------
 */

int dv_vit_config_write_h5(hid_t loc, const char *prefix, const dv_vit_config *c) {
    hid_t g = -1;
    int st;
    DV_TRY(open_group_(loc, prefix, 1, &g));
    if ((st = attr_str_(g, "format", DV_WEIGHTS_FORMAT)) ||
        (st = attr_i64_(g, "format_version", DV_WEIGHTS_FORMAT_VERSION)) ||
        (st = attr_i64_(g, "patch_size", c->patch_size)) ||
        (st = attr_i64_(g, "embed_dim", c->embed_dim)) || (st = attr_i64_(g, "depth", c->depth)) ||
        (st = attr_i64_(g, "num_heads", c->num_heads)) ||
        (st = attr_i64_(g, "head_dim", c->embed_dim / c->num_heads)) ||
        (st = attr_f64_(g, "mlp_ratio", c->mlp_ratio)) ||
        (st = attr_str_(g, "ffn_layer", dv_vit_ffn_name(c->ffn))) ||
        (st = attr_i64_(g, "ffn_hidden_dim", dv_vit_ffn_hidden(c))) ||
        (st = attr_i64_(g, "num_register_tokens", c->num_register_tokens)) ||
        (st = attr_i64_(g, "img_size", c->img_size)) ||
        (st = attr_i64_(g, "pos_embed_grid", c->img_size / c->patch_size)) ||
        (st = attr_f64_(g, "layerscale", c->layerscale)) ||
        (st = attr_bool_(g, "qkv_bias", c->qkv_bias)) ||
        (st = attr_bool_(g, "proj_bias", c->proj_bias)) ||
        (st = attr_bool_(g, "ffn_bias", c->ffn_bias)) ||
        (st = attr_f64_(g, "norm_eps", c->norm_eps)) ||
        (st = attr_f64_(g, "interpolate_offset", c->interpolate_offset)) ||
        (st = attr_bool_(g, "interpolate_antialias", c->interpolate_antialias)) ||
        (st = attr_f64_(g, "drop_path_rate", c->drop_path_rate)) ||
        (st = attr_bool_(g, "drop_path_uniform", c->drop_path_uniform)) ||
        (st = attr_i64_(g, "block_chunks", 0)) ||
        (st = attr_f32v_(g, "image_mean", c->image_mean, 3)) ||
        (st = attr_f32v_(g, "image_std", c->image_std, 3))) {
        close_id_(g);
        return st;
    }
    close_id_(g);
    return DV_OK;
}

int dv_vit_config_read_h5(hid_t loc, const char *prefix, dv_vit_config *cfg, const char *what) {
    hid_t g = -1;
    if (open_group_(loc, prefix, 0, &g) != DV_OK) {
        H5Eclear2(H5E_DEFAULT);
        dv_user_error("%s: no group %s", what, pfx_(prefix));
        return DV_ERR_FORMAT;
    }
    int st = DV_OK;
    dv_vit_config c;
    dv_vit_config_defaults(&c);
    c.drop_path_rate = 0.0; /* a training setting: absent means none */
    attr_val_ x;
    int64_t version = 0, chunks = 0;
#define TRYG(expr)                                                                                 \
    do {                                                                                           \
        if ((st = (expr)) != DV_OK) goto done;                                                     \
    } while (0)
    TRYG(attr_get_(g, "format", &x));
    if (x.kind != ATTR_ABSENT && (x.kind != ATTR_STRING || strcmp(x.s, DV_WEIGHTS_FORMAT) != 0)) {
        dv_user_error("%s: attribute format is '%s', expected '%s'", what,
                      x.kind == ATTR_STRING ? x.s : "?", DV_WEIGHTS_FORMAT);
        st = DV_ERR_FORMAT;
        goto done;
    }
    TRYG(get_int_(g, what, "format_version", 0, &version));
    if (version > DV_WEIGHTS_FORMAT_VERSION) {
        dv_user_error("%s: format_version %lld is newer than this program reads (%d)", what,
                      (long long)version, DV_WEIGHTS_FORMAT_VERSION);
        st = DV_ERR_FORMAT;
        goto done;
    }
    TRYG(get_int_(g, what, "block_chunks", 0, &chunks));
    if (chunks != 0) {
        dv_user_error("%s: block_chunks = %lld: flatten the \"blocks.<chunk>.<i>\" keys to "
                      "\"blocks.<i>\" first (doc/weights.md)",
                      what, (long long)chunks);
        st = DV_ERR_FORMAT;
        goto done;
    }
    TRYG(get_int_(g, what, "patch_size", 1, &c.patch_size));
    TRYG(get_int_(g, what, "embed_dim", 1, &c.embed_dim));
    TRYG(get_int_(g, what, "depth", 1, &c.depth));
    TRYG(get_int_(g, what, "num_heads", 1, &c.num_heads));
    TRYG(get_double_(g, what, "mlp_ratio", 1, &c.mlp_ratio));
    TRYG(attr_get_(g, "ffn_layer", &x));
    if (x.kind != ATTR_STRING) {
        dv_user_error("%s: %s attribute ffn_layer", what,
                      x.kind == ATTR_ABSENT ? "missing" : "non-string");
        st = DV_ERR_FORMAT;
        goto done;
    }
    if (dv_vit_ffn_parse(x.s, &c.ffn) != DV_OK) {
        dv_user_error("%s: bad attribute ffn_layer", what);
        st = DV_ERR_FORMAT;
        goto done;
    }
    c.ffn_hidden = 0;
    TRYG(get_int_(g, what, "ffn_hidden_dim", 0, &c.ffn_hidden));
    TRYG(get_int_(g, what, "num_register_tokens", 1, &c.num_register_tokens));
    TRYG(get_int_(g, what, "img_size", 1, &c.img_size));
    TRYG(attr_get_(g, "layerscale", &x));
    if (x.kind == ATTR_ABSENT) {
        dv_user_error("%s: missing attribute layerscale", what);
        st = DV_ERR_FORMAT;
        goto done;
    } else if (x.kind == ATTR_BOOL && x.n == 1) {
        c.layerscale = x.i ? 1e-5 : 0.0; /* presence only; the init value is not recorded */
    } else if ((x.kind == ATTR_FLOAT || x.kind == ATTR_INT) && x.n == 1) {
        c.layerscale = x.f;
    } else {
        dv_user_error("%s: attribute layerscale is not a number or bool", what);
        st = DV_ERR_FORMAT;
        goto done;
    }
    TRYG(get_bool_(g, what, "qkv_bias", 1, &c.qkv_bias));
    TRYG(get_bool_(g, what, "proj_bias", 1, &c.proj_bias));
    TRYG(get_bool_(g, what, "ffn_bias", 1, &c.ffn_bias));
    TRYG(get_double_(g, what, "norm_eps", 1, &c.norm_eps));
    TRYG(get_double_(g, what, "interpolate_offset", 1, &c.interpolate_offset));
    TRYG(get_bool_(g, what, "interpolate_antialias", 1, &c.interpolate_antialias));
    TRYG(get_double_(g, what, "drop_path_rate", 0, &c.drop_path_rate));
    TRYG(get_bool_(g, what, "drop_path_uniform", 0, &c.drop_path_uniform));
    for (int k = 0; k < 2; k++) {
        const char *nm = k ? "image_std" : "image_mean";
        TRYG(attr_get_(g, nm, &x));
        if (x.kind == ATTR_ABSENT) continue;
        if (x.kind == ATTR_STRING || x.kind == ATTR_OTHER || x.n != 3) {
            dv_user_error("%s: attribute %s is not 3 numbers", what, nm);
            st = DV_ERR_FORMAT;
            goto done;
        }
        for (int j = 0; j < 3; j++) (k ? c.image_std : c.image_mean)[j] = (float)x.v[j];
    }
#undef TRYG
    if (dv_vit_config_finalize(&c) != DV_OK) {
        dv_user_error("%s: inconsistent architecture attributes", what);
        st = DV_ERR_FORMAT;
        goto done;
    }
    *cfg = c;
done:
    close_id_(g);
    return st;
}

/* ---- backbone ---------------------------------------------------------------------------------
 */

int dv_weights_write(hid_t loc, const char *prefix, const dv_vit *m, const float *w) {
    DV_TRY(dv_vit_config_write_h5(loc, prefix, &m->cfg));
    return dv_params_write_h5(loc, prefix, &m->params, w);
}

int dv_weights_read(hid_t loc, const char *prefix, const dv_vit *m, float *w, const char *what,
                    unsigned flags) {
    return dv_params_read_h5(loc, prefix, &m->params, w, what, flags);
}

int dv_weights_save(const char *path, const dv_vit *m, const float *w) {
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return DV_ERR(DV_ERR_ARG, "path too long: %s", path);
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) {
        H5Eclear2(H5E_DEFAULT);
        dv_user_error("%s: cannot create file", tmp);
        return DV_ERR_IO;
    }
    int st = dv_weights_write(f, "", m, w);
    if (H5Fclose(f) < 0 && st == DV_OK) {
        dv_h5_report_(__FILE__, __LINE__, "H5Fclose");
        st = DV_ERR_HDF5;
    }
    if (st == DV_OK && rename(tmp, path) != 0) {
        dv_user_error("%s: cannot rename %s into place", path, tmp);
        st = DV_ERR_IO;
    }
    if (st != DV_OK) remove(tmp);
    return st;
}

int dv_weights_load(const char *path, dv_vit *m, float **w) {
    *w = NULL;
    memset(m, 0, sizeof *m);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) {
        H5Eclear2(H5E_DEFAULT);
        dv_user_error("%s: cannot open as HDF5", path);
        return DV_ERR_IO;
    }
    dv_vit_config cfg;
    float *buf = NULL;
    int st = dv_vit_config_read_h5(f, "", &cfg, path);
    if (st == DV_OK) st = dv_vit_init(m, &cfg);
    if (st == DV_OK) {
        buf = malloc((m->params.numel ? m->params.numel : 1) * sizeof *buf);
        if (!buf) st = DV_ERR(DV_ERR_NOMEM, "out of memory (%zu floats)", m->params.numel);
    }
    if (st == DV_OK) st = dv_weights_read(f, "", m, buf, path, 0);
    H5Fclose(f);
    if (st != DV_OK) {
        free(buf);
        dv_vit_free(m);
        return st;
    }
    *w = buf;
    return DV_OK;
}
