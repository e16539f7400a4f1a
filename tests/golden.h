/* golden — reading the official-implementation reference files (tests/golden/NAME.h5) and
 * comparing with them, for the golden tests. One open file per test program (golden_file);
 * a missing dataset or a wrong element count is a "Bail out!" (the TAP way to abort).
 *
 *   golden_file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
 *   float *ref = rd_f32("dino_head/official_init/y", n * K);
 *   check_arr("head y", got, ref, n * K);      // max|err| <= 1e-4 x RMS(ref)
 *
 * Header-only with static functions: include it from exactly one test source.
 */
#ifndef DV_TESTS_GOLDEN_H
#define DV_TESTS_GOLDEN_H

#include <hdf5.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "tap.h"

#define REL_TOL 1e-4

static hid_t golden_file; /* the open golden file (one per test program) */

static __attribute__((unused)) int64_t ds_numel(const char *name) {
    hid_t d = H5Dopen2(golden_file, name, H5P_DEFAULT);
    if (d < 0) return -1;
    hid_t s = H5Dget_space(d);
    const hssize_t n = H5Sget_simple_extent_npoints(s);
    H5Sclose(s);
    H5Dclose(d);
    return (int64_t)n;
}

/* Whole dataset of `want` elements (checked) in memory type mtype; exits on failure. */
static __attribute__((unused)) void *ds_read(const char *name, hid_t mtype, size_t esize, int64_t want) {
    const int64_t n = ds_numel(name);
    if (n != want) {
        printf("Bail out! %s: %lld elements, expected %lld\n", name, (long long)n, (long long)want);
        exit(1);
    }
    void *buf = malloc((size_t)(n > 0 ? n : 1) * esize);
    hid_t d = H5Dopen2(golden_file, name, H5P_DEFAULT);
    if (!buf || d < 0 || H5Dread(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
        printf("Bail out! cannot read %s\n", name);
        exit(1);
    }
    H5Dclose(d);
    return buf;
}
static __attribute__((unused)) float *rd_f32(const char *name, int64_t n) {
    return ds_read(name, H5T_NATIVE_FLOAT, sizeof(float), n);
}
static __attribute__((unused)) double rd_scalar(const char *name) {
    double *p = ds_read(name, H5T_NATIVE_DOUBLE, sizeof(double), 1);
    const double v = *p;
    free(p);
    return v;
}
static __attribute__((unused)) double attr_d(const char *obj, const char *name) {
    double v = NAN;
    hid_t a = H5Aopen_by_name(golden_file, obj, name, H5P_DEFAULT, H5P_DEFAULT);
    if (a < 0 || H5Aread(a, H5T_NATIVE_DOUBLE, &v) < 0) {
        printf("Bail out! attribute %s of %s\n", name, obj);
        exit(1);
    }
    H5Aclose(a);
    return v;
}

static __attribute__((unused)) void check_arr(const char *what, const float *got, const float *ref, int64_t n) {
    double ss = 0.0, maxe = 0.0;
    for (int64_t i = 0; i < n; i++) {
        ss += (double)ref[i] * ref[i];
        const double e = fabs((double)got[i] - (double)ref[i]);
        if (!(e <= maxe)) maxe = e; /* NaN sticks */
    }
    const double rms = sqrt(ss / (double)(n > 0 ? n : 1));
    tap_diag("%-38s max|err| %.3e  RMS(ref) %.3e  err/RMS %.2e", what, maxe, rms, maxe / rms);
    tap_ok(maxe <= REL_TOL * rms, "%s within 1e-4 x RMS", what);
}
static __attribute__((unused)) void check_scalar(const char *what, double got, double ref) {
    const double e = fabs(got - ref);
    tap_diag("%-38s got %.9g ref %.9g  err/|ref| %.2e", what, got, ref, e / fabs(ref));
    tap_ok(e <= REL_TOL * fabs(ref), "%s within 1e-4 x |ref|", what);
}


/* "$srcdir/tests/golden/<name>" into buf. */
static __attribute__((unused)) const char *golden_path(char *buf, size_t len, const char *name) {
    const char *dir = getenv("srcdir");
    snprintf(buf, len, "%s/tests/golden/%s", dir && *dir ? dir : ".", name);
    return buf;
}

#endif
