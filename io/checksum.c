/* checksum — see checksum.h. */
#include "checksum.h"

#include <string.h>

#define K0      0x243F6A8885A308D3ull
#define K1      0x9E3779B97F4A7C15ull
#define PAR_MIN 65536 /* words below which a loop stays serial */

static inline uint64_t fmix64_(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ull;
    k ^= k >> 33;
    return k;
}

static inline uint64_t term_(uint64_t i, uint32_t w) {
    return fmix64_((((i & 0xffffffffull) << 32) | (uint64_t)w) ^ K0 ^ ((i >> 32) * K1));
}

uint64_t dv_sum64_term(uint64_t i, uint32_t w) { return term_(i, w); }

uint64_t dv_sum64_words(const uint32_t *w, size_t n, uint64_t first) {
    uint64_t s = 0;
#pragma omp parallel for reduction(+ : s) schedule(static) if (n >= PAR_MIN)
    for (size_t k = 0; k < n; k++) s += term_(first + k, w[k]);
    return s;
}

uint64_t dv_sum64_f32(const float *x, size_t n, uint64_t first) {
    uint64_t s = 0;
#pragma omp parallel for reduction(+ : s) schedule(static) if (n >= PAR_MIN)
    for (size_t k = 0; k < n; k++) {
        uint32_t w;
        memcpy(&w, x + k, 4);
        s += term_(first + k, w);
    }
    return s;
}

uint64_t dv_sum64_64(const void *x64, size_t n, uint64_t first) {
    const unsigned char *p = x64;
    uint64_t s = 0;
#pragma omp parallel for reduction(+ : s) schedule(static) if (n >= PAR_MIN)
    for (size_t k = 0; k < n; k++) {
        uint64_t v;
        memcpy(&v, p + 8 * k, 8);
        const uint64_t i = 2 * (first + k);
        s += term_(i, (uint32_t)v) + term_(i + 1, (uint32_t)(v >> 32));
    }
    return s;
}

uint64_t dv_sum64_bytes(const void *p, size_t nbytes, uint64_t first_byte) {
    const unsigned char *b = p;
    const uint64_t first = first_byte / 4;
    const size_t n = nbytes / 4;
    uint64_t s = 0;
#pragma omp parallel for reduction(+ : s) schedule(static) if (n >= PAR_MIN)
    for (size_t k = 0; k < n; k++) {
        const unsigned char *q = b + 4 * k;
        const uint32_t w =
            (uint32_t)q[0] | (uint32_t)q[1] << 8 | (uint32_t)q[2] << 16 | (uint32_t)q[3] << 24;
        s += term_(first + k, w);
    }
    if (nbytes % 4) {
        uint32_t w = 0;
        for (size_t j = 0; j < nbytes % 4; j++) w |= (uint32_t)b[4 * n + j] << (8 * j);
        s += term_(first + n, w);
    }
    return s;
}
