/* activations — see activations.h. */
#include "activations.h"

#include <math.h>

#define SQRT1_2_F 0.70710678118654752440f
/* 1 / sqrt(2π) */
#define INV_SQRT_2PI_F 0.39894228040143267794f

void gelu_forward(float *y, const float *x, int64_t n) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        const float v = x[i];
        y[i] = v * 0.5f * (1.0f + erff(v * SQRT1_2_F));
    }
}

void gelu_backward(float *dx, const float *dy, const float *x, int64_t n) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        const float v = x[i];
        const float cdf = 0.5f * (1.0f + erff(v * SQRT1_2_F));
        const float pdf = INV_SQRT_2PI_F * expf(-0.5f * v * v);
        dx[i] = dy[i] * (cdf + v * pdf);
    }
}

void swiglu_forward(float *y, const float *x12, int64_t T, int64_t H) {
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < T; t++) {
        const float *a = x12 + t * 2 * H, *b = a + H;
        float *yr = y + t * H;
        for (int64_t i = 0; i < H; i++) yr[i] = a[i] / (1.0f + expf(-a[i])) * b[i];
    }
}

void swiglu_backward(float *dx12, const float *dy, const float *x12, int64_t T, int64_t H) {
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < T; t++) {
        const float *a = x12 + t * 2 * H, *b = a + H, *dyr = dy + t * H;
        float *da = dx12 + t * 2 * H, *db = da + H;
        for (int64_t i = 0; i < H; i++) {
            const float s = 1.0f / (1.0f + expf(-a[i]));
            const float silu = a[i] * s;
            db[i] = dyr[i] * silu;
            da[i] = dyr[i] * b[i] * (s * (1.0f + a[i] * (1.0f - s)));
        }
    }
}
