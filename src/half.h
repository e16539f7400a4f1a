/* half — IEEE binary16 (fp16) and bfloat16 conversions in plain C, round to nearest even.
 * Values are carried as uint16_t bit patterns. fp16: overflow → ±inf, NaN stays NaN (quiet),
 * subnormals kept. bf16: the upper half of the fp32 pattern, rounded; NaN stays NaN. */
#ifndef DV_HALF_H
#define DV_HALF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline uint32_t dv_f32_bits_(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}
static inline float dv_bits_f32_(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint16_t dv_f32_to_f16(float f) {
    const uint32_t u = dv_f32_bits_(f), sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    if (a >= 0x7f800000u) return (uint16_t)(sign | (a > 0x7f800000u ? 0x7e00u : 0x7c00u));
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* rounds to inf */
    if (a < 0x38800000u) {                                   /* fp16 subnormal or zero */
        if (a < 0x33000000u) return (uint16_t)sign;           /* below half the smallest */
        const uint32_t mant = (a & 0x7fffffu) | 0x800000u;
        const int shift = 126 - (int)(a >> 23); /* 14..24 */
        uint32_t h = mant >> shift;
        const uint32_t rem = mant & ((1u << shift) - 1u), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1u))) h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = ((a >> 13) - (112u << 10));
    const uint32_t rem = a & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;
    return (uint16_t)(sign | h);
}

static inline float dv_f16_to_f32(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0) { /* zero or subnormal: m · 2^-24 */
        float v = (float)m * 0x1.0p-24f;
        return sign ? -v : v;
    }
    if (e == 31) return dv_bits_f32_(sign | 0x7f800000u | (m << 13));
    return dv_bits_f32_(sign | ((e + 112u) << 23) | (m << 13));
}

static inline uint16_t dv_f32_to_bf16(float f) {
    const uint32_t u = dv_f32_bits_(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* quiet NaN */
    const uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)((u + rounding) >> 16);
}

static inline float dv_bf16_to_f32(uint16_t h) { return dv_bits_f32_((uint32_t)h << 16); }

#endif
