/* rng — Philox 4x32-10 streams; see rng.h. */
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "rng.h"

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

static inline void mulhilo_(uint32_t a, uint32_t b, uint32_t *hi, uint32_t *lo) {
    uint64_t p = (uint64_t)a * b;
    *hi = (uint32_t)(p >> 32);
    *lo = (uint32_t)p;
}

void dv_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int round = 0; round < 10; round++) {
        uint32_t hi0, lo0, hi1, lo1;
        mulhilo_(PHILOX_M0, c0, &hi0, &lo0);
        mulhilo_(PHILOX_M1, c2, &hi1, &lo1);
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

void dv_rng_init(dv_rng *r, uint64_t seed, uint32_t purpose, uint64_t step, uint64_t index) {
    memset(r, 0, sizeof *r);
    r->key[0] = (uint32_t)seed;
    r->key[1] = (uint32_t)(seed >> 32) ^ purpose;
    r->ctr[0] = 0;
    r->ctr[1] = (uint32_t)step;
    r->ctr[2] = (uint32_t)index;
    r->ctr[3] = (uint32_t)(index >> 32);
    r->used = 4;
}

uint32_t dv_rng_u32(dv_rng *r) {
    if (r->used == 4) {
        dv_philox4x32_10(r->ctr, r->key, r->buf);
        r->ctr[0]++;
        r->used = 0;
    }
    return r->buf[r->used++];
}

uint64_t dv_rng_u64(dv_rng *r) {
    uint64_t hi = dv_rng_u32(r);
    return (hi << 32) | dv_rng_u32(r);
}

float dv_rng_uniform(dv_rng *r) { return (float)(dv_rng_u32(r) >> 8) * 0x1.0p-24f; }

double dv_rng_uniform_double(dv_rng *r) { return (double)(dv_rng_u64(r) >> 11) * 0x1.0p-53; }

double dv_rng_uniform_range(dv_rng *r, double lo, double hi) {
    return lo + (hi - lo) * dv_rng_uniform_double(r);
}

double dv_rng_normal(dv_rng *r) {
    if (r->has_normal) {
        r->has_normal = 0;
        return r->normal;
    }
    /* 1 - u lies in (0, 1], so the log is finite */
    double u1 = 1.0 - dv_rng_uniform_double(r);
    double u2 = dv_rng_uniform_double(r);
    double rad = sqrt(-2.0 * log(u1));
    double ang = 2.0 * 3.14159265358979323846 * u2;
    r->normal = rad * sin(ang);
    r->has_normal = 1;
    return rad * cos(ang);
}

float dv_rng_trunc_normal(dv_rng *r, double std, double a, double b) {
    for (;;) {
        const double v = dv_rng_normal(r) * std;
        if (v >= a && v <= b) return (float)v;
    }
}

int64_t dv_rng_int(dv_rng *r, int64_t lo, int64_t hi) {
    uint64_t span = (uint64_t)hi - (uint64_t)lo + 1u; /* 0 means the full 2^64 range */
    if (span == 0) return (int64_t)dv_rng_u64(r);
    /* rejection sampling: accept below the largest multiple of span */
    uint64_t limit = UINT64_MAX - (UINT64_MAX % span + 1u) % span;
    uint64_t x;
    do {
        x = dv_rng_u64(r);
    } while (x > limit);
    return lo + (int64_t)(x % span);
}

void dv_rng_permutation(dv_rng *r, int64_t *perm, int64_t n) {
    for (int64_t i = 0; i < n; i++) perm[i] = i;
    dv_rng_shuffle(r, perm, n, sizeof *perm);
}

void dv_rng_shuffle(dv_rng *r, void *base, int64_t n, size_t elem_size) {
    unsigned char *b = base;
    unsigned char tmp[64];
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = dv_rng_int(r, 0, i);
        if (j == i) continue;
        unsigned char *pi = b + (size_t)i * elem_size, *pj = b + (size_t)j * elem_size;
        for (size_t off = 0; off < elem_size; off += sizeof tmp) {
            size_t len = elem_size - off < sizeof tmp ? elem_size - off : sizeof tmp;
            memcpy(tmp, pi + off, len);
            memcpy(pi + off, pj + off, len);
            memcpy(pj + off, tmp, len);
        }
    }
}
