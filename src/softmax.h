/* softmax — numerically stable row softmax and log-softmax, forward and backward.
 *
 * Shapes: x, y, dx, dy  (R, N)   R rows, each normalised over its N entries.
 *   softmax:      y = exp(x - max) / Σ exp(x - max)
 *   log_softmax:  y = x - max - log Σ exp(x - max)
 * Temperatures (DINO/iBOT heads) are applied by the caller (x / temp) before the call.
 *
 * Conventions as in gemm.h: row-major fp32, outputs first, row sums in double. No parameters;
 * input gradients are overwritten; y may alias x and dx may alias dy. OpenMP over rows.
 *
 * Example:
 *   softmax_forward(p, logits, B, K);  ...  softmax_backward(dlogits, dp, p, B, K);
 */
#ifndef DV_SOFTMAX_H
#define DV_SOFTMAX_H

#include <stdint.h>

/* exp(x) in fp32 written so that GCC vectorizes it at -O2 without fast-math (no libm call, no
 * floating-point compare or branch): x is clamped to [-88, 88] on order-preserving integer
 * keys, x = n·ln2 + r (Cephes constants), e^r by a degree-6 polynomial, 2^n from the exponent
 * bits. Error < 1 ulp against exp in double over all floats in [-87.3, 88] (checked
 * exhaustively; tests/test_ops_grad samples it). Below about -87.7 the result flushes to +0
 * (so exp(-inf) = 0); for x >= 88 it saturates at exp(88) ≈ 1.65e38; NaN stays NaN. Softmax
 * only ever evaluates it at x <= 0. */
typedef union {
    float f;
    int32_t i;
} softmax_fi_;
static inline int32_t softmax_key_(int32_t b) { return b ^ ((b >> 31) & 0x7fffffff); }
static inline float softmax_exp_f32(float x) {
    const int32_t key_lo = -1118830593; /* softmax_key_(bits of -88.0f) */
    const int32_t key_hi = 0x42B00000;  /* softmax_key_(bits of 88.0f) */
    softmax_fi_ u = {x}, c, s, y;
    int32_t k = softmax_key_(u.i);
    k = k < key_lo ? key_lo : k;
    k = k > key_hi ? key_hi : k;
    c.i = softmax_key_(k);
    const float xc = c.f;
    const float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* rint */
    const float r = (xc - n * 0.693359375f) + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    s.i = ((int32_t)n + 127) << 23; /* n = -127 gives +0.0f */
    y.f = p * s.f;
    const int32_t nan = (0x7f800000 - (u.i & 0x7fffffff)) >> 31; /* -1 for NaN, else 0 */
    y.i = (y.i & ~nan) | (u.i & nan);
    return y.f;
}

void softmax_forward(float *y, const float *x, int64_t R, int64_t N);
/* dx = y ⊙ (dy − Σ_j y_j dy_j), from the forward output y. */
void softmax_backward(float *dx, const float *dy, const float *y, int64_t R, int64_t N);

void log_softmax_forward(float *y, const float *x, int64_t R, int64_t N);
/* dx = dy − exp(y) · Σ_j dy_j, from the forward output y (log-probabilities). */
void log_softmax_backward(float *dx, const float *dy, const float *y, int64_t R, int64_t N);

#endif
