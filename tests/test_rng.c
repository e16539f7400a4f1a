/* Philox 4x32-10 known answers (Random123's published vectors) and the draw helpers. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"
#include "tap.h"

static void kat(const uint32_t ctr[4], const uint32_t key[2], const uint32_t want[4], const char *name) {
    uint32_t got[4];
    dv_philox4x32_10(ctr, key, got);
    int ok = memcmp(got, want, sizeof got) == 0;
    if (!ok) tap_diag("got %08x %08x %08x %08x", got[0], got[1], got[2], got[3]);
    tap_ok(ok, "Philox4x32-10 known answer: %s", name);
}

int main(void) {
    tap_no_plan();
    {
        const uint32_t c0[4] = {0, 0, 0, 0}, k0[2] = {0, 0};
        const uint32_t w0[4] = {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8};
        kat(c0, k0, w0, "zero counter, zero key");
        const uint32_t c1[4] = {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff};
        const uint32_t k1[2] = {0xffffffff, 0xffffffff};
        const uint32_t w1[4] = {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd};
        kat(c1, k1, w1, "all-ones counter and key");
        const uint32_t c2[4] = {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344};
        const uint32_t k2[2] = {0xa4093822, 0x299f31d0};
        const uint32_t w2[4] = {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1};
        kat(c2, k2, w2, "pi digits");
    }

    /* The stream layout: key {lo(seed), hi(seed)^purpose}, ctr {block, step, index lo, hi}. */
    {
        dv_rng r;
        dv_rng_init(&r, 0x0000000500000007ull, 0x300, 9, 0x0000000b0000000cull);
        uint32_t ctr[4] = {1, 9, 0xc, 0xb}, key[2] = {7, 5 ^ 0x300}, want[4];
        dv_philox4x32_10(ctr, key, want);
        for (int i = 0; i < 4; i++) dv_rng_u32(&r); /* block 0 */
        int ok = 1;
        for (int i = 0; i < 4; i++) ok &= dv_rng_u32(&r) == want[i];
        tap_ok(ok, "stream block 1 is Philox(ctr={1,step,index}, key={seed,purpose})");
    }

    /* A stream is a pure function of (seed, purpose, step, index). */
    {
        dv_rng a, b;
        dv_rng_init(&a, 42, DV_RNG_AUGMENT, 3, 1000);
        dv_rng_init(&b, 42, DV_RNG_AUGMENT, 3, 1000);
        int same = 1;
        for (int i = 0; i < 1000; i++) same &= dv_rng_u32(&a) == dv_rng_u32(&b);
        tap_ok(same, "same key gives the same stream");
        const uint64_t keys[4][4] = {
            {43, DV_RNG_AUGMENT, 3, 1000}, {42, DV_RNG_MASK, 3, 1000},
            {42, DV_RNG_AUGMENT, 4, 1000}, {42, DV_RNG_AUGMENT, 3, 1001}};
        for (int k = 0; k < 4; k++) {
            dv_rng_init(&a, 42, DV_RNG_AUGMENT, 3, 1000);
            dv_rng_init(&b, keys[k][0], (uint32_t)keys[k][1], keys[k][2], keys[k][3]);
            int equal = 0;
            for (int i = 0; i < 64; i++) equal += dv_rng_u32(&a) == dv_rng_u32(&b);
            tap_ok(equal < 2, "changing key part %d changes the stream (%d/64 equal words)", k, equal);
        }
    }

    /* uniform: range and moments over 1e6 draws (mean 1/2, var 1/12; 6-sigma bounds). */
    {
        dv_rng r;
        dv_rng_init(&r, 1, DV_RNG_TEST, 0, 0);
        const int n = 1000000;
        double s = 0, s2 = 0;
        int in_range = 1;
        for (int i = 0; i < n; i++) {
            float u = dv_rng_uniform(&r);
            in_range &= u >= 0.0f && u < 1.0f;
            s += u;
            s2 += (double)u * u;
        }
        double mean = s / n, var = s2 / n - mean * mean;
        tap_ok(in_range, "uniform floats lie in [0, 1)");
        tap_close(mean, 0.5, 6 * sqrt(1.0 / 12 / n), "uniform mean");
        tap_close(var, 1.0 / 12, 0.002, "uniform variance");
        double d = 0;
        in_range = 1;
        for (int i = 0; i < 100000; i++) {
            d = dv_rng_uniform_double(&r);
            in_range &= d >= 0.0 && d < 1.0;
        }
        tap_ok(in_range, "uniform doubles lie in [0, 1)");
        in_range = 1;
        for (int i = 0; i < 100000; i++) {
            d = dv_rng_uniform_range(&r, -2.0, 3.0);
            in_range &= d >= -2.0 && d < 3.0;
        }
        tap_ok(in_range, "uniform_range(-2, 3) lies in [-2, 3)");
    }

    /* normal: mean 0, variance 1, 4th moment 3 over 1e6 draws. */
    {
        dv_rng r;
        dv_rng_init(&r, 2, DV_RNG_TEST, 0, 0);
        const int n = 1000000;
        double s = 0, s2 = 0, s4 = 0;
        for (int i = 0; i < n; i++) {
            double x = dv_rng_normal(&r);
            s += x;
            s2 += x * x;
            s4 += x * x * x * x;
        }
        tap_close(s / n, 0.0, 6.0 / sqrt(n), "normal mean");
        tap_close(s2 / n, 1.0, 6.0 * sqrt(2.0 / n), "normal variance");
        tap_close(s4 / n, 3.0, 0.05, "normal fourth moment");
    }

    /* integers: inclusive bounds, uniform over bins (chi-square, 9 dof, p < 1e-6 bound 43). */
    {
        dv_rng r;
        dv_rng_init(&r, 3, DV_RNG_TEST, 0, 0);
        long counts[10] = {0};
        int ok = 1;
        const int n = 200000;
        for (int i = 0; i < n; i++) {
            int64_t v = dv_rng_int(&r, -3, 6);
            if (v < -3 || v > 6) ok = 0;
            else counts[v + 3]++;
        }
        tap_ok(ok, "dv_rng_int(-3, 6) stays in [-3, 6]");
        double chi2 = 0, e = n / 10.0;
        for (int i = 0; i < 10; i++) chi2 += (counts[i] - e) * (counts[i] - e) / e;
        tap_ok(chi2 < 43.0, "dv_rng_int is uniform (chi2 %.2f, 9 dof)", chi2);
        int same = 1;
        for (int i = 0; i < 100; i++) same &= dv_rng_int(&r, 5, 5) == 5;
        tap_ok(same, "dv_rng_int(5, 5) is 5");
        int64_t big = dv_rng_int(&r, INT64_MIN, INT64_MAX);
        (void)big;
        tap_ok(1, "full 64-bit range does not hang");
    }

    /* permutations: valid, seed-dependent, uniform first position. */
    {
        dv_rng r;
        dv_rng_init(&r, 4, DV_RNG_SHUFFLE, 0, 0);
        const int64_t n = 1001;
        int64_t *p = malloc(sizeof *p * (size_t)n);
        char *seen = calloc((size_t)n, 1);
        dv_rng_permutation(&r, p, n);
        int ok = 1;
        for (int64_t i = 0; i < n; i++) {
            if (p[i] < 0 || p[i] >= n || seen[p[i]]) ok = 0;
            else seen[p[i]] = 1;
        }
        tap_ok(ok, "permutation of 1001 has every index once");
        int64_t fixed = 0;
        for (int64_t i = 0; i < n; i++) fixed += p[i] == i;
        tap_ok(fixed < 10, "permutation is not near the identity (%lld fixed points)", (long long)fixed);
        long first[4] = {0};
        int64_t q[4];
        for (int t = 0; t < 40000; t++) {
            dv_rng_init(&r, 5, DV_RNG_SHUFFLE, (uint64_t)t, 0);
            dv_rng_permutation(&r, q, 4);
            first[q[0]]++;
        }
        double chi2 = 0;
        for (int i = 0; i < 4; i++) chi2 += (first[i] - 10000.0) * (first[i] - 10000.0) / 10000.0;
        tap_ok(chi2 < 30.0, "first element of a 4-permutation is uniform (chi2 %.2f, 3 dof)", chi2);
        free(p);
        free(seen);
        double arr[5] = {1, 2, 3, 4, 5}, sum = 0;
        dv_rng_shuffle(&r, arr, 5, sizeof arr[0]);
        for (int i = 0; i < 5; i++) sum += arr[i];
        tap_ok(sum == 15.0, "shuffle of doubles keeps the elements");
    }
    return tap_exit();
}
