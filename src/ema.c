/* ema — see ema.h. */
#include "ema.h"

void ema_update(float *teacher, const float *student, int64_t n, double momentum) {
    const float m = (float)momentum, a = (float)(1.0 - momentum);
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; i++) {
        const float t = teacher[i] * m;
        teacher[i] = t + a * student[i];
    }
}
