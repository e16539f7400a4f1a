/* softmax — see softmax.h. */
#include "softmax.h"

#include <math.h>

static float row_max_(const float *x, int64_t n) {
    float m = -INFINITY;
#pragma omp simd reduction(max : m)
    for (int64_t i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}

void softmax_forward(float *y, const float *x, int64_t R, int64_t N) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < R; r++) {
        const float *xr = x + r * N;
        float *yr = y + r * N;
        const float m = row_max_(xr, N);
        double s = 0.0;
#pragma omp simd reduction(+ : s)
        for (int64_t i = 0; i < N; i++) {
            const float e = softmax_exp_f32(xr[i] - m);
            yr[i] = e;
            s += e;
        }
        const float inv = (float)(1.0 / s);
        for (int64_t i = 0; i < N; i++) yr[i] *= inv;
    }
}

void softmax_backward(float *dx, const float *dy, const float *y, int64_t R, int64_t N) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < R; r++) {
        const float *yr = y + r * N, *dyr = dy + r * N;
        float *dxr = dx + r * N;
        double s = 0.0;
#pragma omp simd reduction(+ : s)
        for (int64_t i = 0; i < N; i++) s += (double)yr[i] * dyr[i];
        const float sf = (float)s;
        for (int64_t i = 0; i < N; i++) dxr[i] = yr[i] * (dyr[i] - sf);
    }
}

void log_softmax_forward(float *y, const float *x, int64_t R, int64_t N) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < R; r++) {
        const float *xr = x + r * N;
        float *yr = y + r * N;
        const float m = row_max_(xr, N);
        double s = 0.0;
#pragma omp simd reduction(+ : s)
        for (int64_t i = 0; i < N; i++) s += softmax_exp_f32(xr[i] - m);
        const float lse = (float)log(s);
        for (int64_t i = 0; i < N; i++) yr[i] = (xr[i] - m) - lse;
    }
}

void log_softmax_backward(float *dx, const float *dy, const float *y, int64_t R, int64_t N) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < R; r++) {
        const float *yr = y + r * N, *dyr = dy + r * N;
        float *dxr = dx + r * N;
        double s = 0.0;
#pragma omp simd reduction(+ : s)
        for (int64_t i = 0; i < N; i++) s += dyr[i];
        const float sf = (float)s;
#pragma omp simd
        for (int64_t i = 0; i < N; i++) dxr[i] = dyr[i] - softmax_exp_f32(yr[i]) * sf;
    }
}
