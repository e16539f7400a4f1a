/* test_pos_embed — pos_embed_forward against the official DINOv2 interpolate_pos_encoding.
 *
 * Golden data (tests/golden, written by the official PyTorch code, see its README):
 *   tiny_mlp.h5   interpolate_offset 0.1, antialias false (scale_factor path, a = -0.75)
 *   tiny_reg4.h5  interpolate_offset 0.0, antialias true  (size path, antialiased a = -0.5)
 * Source grid: root dataset `pos_embed` (1, 1 + M·M, D); for each of golden/hires,
 * golden/lowres, golden/rect the image size comes from `images` (N, 3, H, W) and the
 * reference is `pos_embed_interpolated` (1, 1 + h0·w0, D), h0 = H / patch, w0 = W / patch.
 * Tolerance: max |error| <= 1e-4 · RMS(reference) per output (golden/README.md).
 * Files are read from "$srcdir/tests/golden" (srcdir defaults to ".").
 */
#include <hdf5.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "err.h"
#include "pos_embed.h"
#include "tap.h"

#define REL_TOL 1e-4

/* Dimensions of a dataset (up to 4); returns rank or -1. */
static int ds_dims(hid_t f, const char *name, hsize_t dims[4]) {
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    if (d < 0) return -1;
    hid_t s = H5Dget_space(d);
    int rank = H5Sget_simple_extent_ndims(s);
    if (rank < 0 || rank > 4) rank = -1;
    else H5Sget_simple_extent_dims(s, dims, NULL);
    H5Sclose(s);
    H5Dclose(d);
    return rank;
}

/* Whole float dataset into a new buffer of *n elements; NULL on failure. */
static float *ds_read_f32(hid_t f, const char *name, int64_t *n) {
    hsize_t dims[4];
    const int rank = ds_dims(f, name, dims);
    if (rank < 0) return NULL;
    int64_t cnt = 1;
    for (int i = 0; i < rank; i++) cnt *= (int64_t)dims[i];
    float *buf = malloc((size_t)cnt * sizeof(float));
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    if (!buf || d < 0 || H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
        free(buf);
        buf = NULL;
    }
    if (d >= 0) H5Dclose(d);
    *n = cnt;
    return buf;
}

/* Root attribute read with the given memory type (for the enum: its native version). */
static int attr_read(hid_t f, const char *name, hid_t mtype, void *out) {
    hid_t a = H5Aopen(f, name, H5P_DEFAULT);
    if (a < 0) return -1;
    int rc = 0;
    if (mtype < 0) { /* enum (h5py bool): read with the attribute's own native type */
        hid_t ft = H5Aget_type(a);
        hid_t nt = H5Tget_native_type(ft, H5T_DIR_ASCEND);
        rc = (H5Tget_size(nt) == 1 && H5Aread(a, nt, out) >= 0) ? 0 : -1;
        H5Tclose(nt);
        H5Tclose(ft);
    } else {
        rc = H5Aread(a, mtype, out) >= 0 ? 0 : -1;
    }
    H5Aclose(a);
    return rc;
}

static void check_file(const char *dir, const char *file, double want_offset, int want_aa) {
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/golden/%s", dir, file);
    const char *groups[3] = {"hires", "lowres", "rect"};
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) {
        tap_ok(0, "%s: cannot open %s", file, path);
        tap_skip(4, "golden file missing");
        return;
    }
    double offset = -1.0;
    int64_t patch = 0;
    signed char aa = -1;
    const int attrs_ok = attr_read(f, "interpolate_offset", H5T_NATIVE_DOUBLE, &offset) == 0 &&
                         attr_read(f, "interpolate_antialias", -1, &aa) == 0 &&
                         attr_read(f, "patch_size", H5T_NATIVE_INT64, &patch) == 0;
    tap_ok(attrs_ok && offset == want_offset && aa == want_aa && patch > 0,
           "%s: interpolate_offset %g, interpolate_antialias %d, patch %lld", file, offset, aa,
           (long long)patch);
    hsize_t pd[4];
    int64_t npos = 0;
    float *pos = ds_read_f32(f, "pos_embed", &npos);
    const int prank = ds_dims(f, "pos_embed", pd);
    int64_t D = 0, M = 0;
    if (pos && prank == 3) {
        D = (int64_t)pd[2];
        M = (int64_t)llround(sqrt((double)(pd[1] - 1)));
        if (M * M != (int64_t)pd[1] - 1) M = 0;
    }
    hsize_t id[4];
    const int base_ok = ds_dims(f, "golden/images", id) == 4;
    tap_ok(M > 0 && D > 0 && patch > 0 && base_ok &&
               pos_embed_is_identity(M, (int64_t)id[2], (int64_t)id[3], patch),
           "%s: %lldx%lld table, base images %llux%llu need no interpolation (official early "
           "return)", file, (long long)M, (long long)M, base_ok ? (unsigned long long)id[2] : 0ull,
           base_ok ? (unsigned long long)id[3] : 0ull);

    for (int g = 0; g < 3; g++) {
        char name[256];
        hsize_t im[4];
        snprintf(name, sizeof name, "golden/%s/images", groups[g]);
        if (M == 0 || patch <= 0 || ds_dims(f, name, im) != 4) {
            tap_ok(0, "%s %s: cannot read shapes", file, groups[g]);
            continue;
        }
        const int64_t H = (int64_t)im[2], W = (int64_t)im[3];
        const int64_t h0 = H / patch, w0 = W / patch;
        snprintf(name, sizeof name, "golden/%s/pos_embed_interpolated", groups[g]);
        int64_t nref = 0;
        float *ref = ds_read_f32(f, name, &nref);
        const int64_t nout = (1 + h0 * w0) * D;
        if (!ref || nref != nout) {
            tap_ok(0, "%s %s: reference has %lld values, expected %lld", file, groups[g],
                   (long long)nref, (long long)nout);
            free(ref);
            continue;
        }
        float *out = malloc((size_t)nout * sizeof(float));
        const size_t wb = pos_embed_workspace_size(M, D, h0, w0, offset, aa);
        void *work = malloc(wb);
        const int rc = pos_embed_forward(out, pos, M, D, h0, w0, offset, aa, work, wb);
        double maxerr = 0.0, ss = 0.0;
        for (int64_t i = 0; i < nout; i++) {
            ss += (double)ref[i] * ref[i];
            const double e = fabs((double)out[i] - ref[i]);
            if (!(e <= maxerr)) maxerr = e;
        }
        const double rms = sqrt(ss / (double)nout);
        tap_ok(rc == DV_OK && !pos_embed_is_identity(M, H, W, patch) && maxerr <= REL_TOL * rms,
               "%s %s: %lldx%lld -> %lldx%lld (image %lldx%lld): max|err| %.3g = %.3g x RMS "
               "(tol %.0e)", file, groups[g], (long long)M, (long long)M, (long long)h0,
               (long long)w0, (long long)H, (long long)W, maxerr, maxerr / rms, REL_TOL);
        free(work);
        free(out);
        free(ref);
    }
    free(pos);
    H5Fclose(f);
}

int main(void) {
    const char *dir = getenv("srcdir");
    if (!dir || !*dir) dir = ".";
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* failures are reported as TAP lines */
    tap_plan(10);
    check_file(dir, "tiny_mlp.h5", 0.1, 0);
    check_file(dir, "tiny_reg4.h5", 0.0, 1);
    return tap_exit();
}
