/* patch_embed — see patch_embed.h. */
#include "patch_embed.h"

#include <string.h>

#include "gemm.h"

size_t patch_embed_workspace_floats(int64_t N, int64_t C, int64_t H, int64_t W) {
    return (size_t)N * (size_t)C * (size_t)H * (size_t)W;
}

void patch_embed_unfold(float *cols, const float *img, int64_t N, int64_t C, int64_t H,
                        int64_t W, int64_t p) {
    const int64_t GH = H / p, GW = W / p, K = C * p * p;
    /* one task per (image, patch row): reads p image rows per channel, writes GW cols rows */
#pragma omp parallel for schedule(static)
    for (int64_t ng = 0; ng < N * GH; ng++) {
        const int64_t n = ng / GH, gy = ng % GH;
        float *crow0 = cols + (n * GH + gy) * GW * K;
        for (int64_t c = 0; c < C; c++)
            for (int64_t ky = 0; ky < p; ky++) {
                const float *src = img + ((n * C + c) * H + gy * p + ky) * W;
                for (int64_t gx = 0; gx < GW; gx++)
                    memcpy(crow0 + gx * K + (c * p + ky) * p, src + gx * p,
                           (size_t)p * sizeof(float));
            }
    }
}

/* dimg = fold(dcols): the adjoint of patch_embed_unfold (patches do not overlap). */
static void fold_(float *img, const float *cols, int64_t N, int64_t C, int64_t H, int64_t W,
                  int64_t p) {
    const int64_t GH = H / p, GW = W / p, K = C * p * p;
#pragma omp parallel for schedule(static)
    for (int64_t ng = 0; ng < N * GH; ng++) {
        const int64_t n = ng / GH, gy = ng % GH;
        const float *crow0 = cols + (n * GH + gy) * GW * K;
        for (int64_t c = 0; c < C; c++)
            for (int64_t ky = 0; ky < p; ky++) {
                float *dst = img + ((n * C + c) * H + gy * p + ky) * W;
                for (int64_t gx = 0; gx < GW; gx++)
                    memcpy(dst + gx * p, crow0 + gx * K + (c * p + ky) * p,
                           (size_t)p * sizeof(float));
            }
    }
}

void patch_embed_forward(float *out, float *cols, const float *img, const float *w,
                         const float *b, int64_t N, int64_t C, int64_t H, int64_t W, int64_t p,
                         int64_t D, int64_t tok_stride) {
    const int64_t P = (H / p) * (W / p), K = C * p * p;
    if (N <= 0 || P <= 0) return;
    patch_embed_unfold(cols, img, N, C, H, W, p);
    if (tok_stride == P) {
        linear_forward(out, cols, w, b, N * P, K, D);
        return;
    }
    for (int64_t n = 0; n < N; n++)
        linear_forward(out + n * tok_stride * D, cols + n * P * K, w, b, P, K, D);
}

void patch_embed_backward(float *dimg, float *dw, float *db, float *cols, const float *dout,
                          const float *img, const float *w, int64_t N, int64_t C, int64_t H,
                          int64_t W, int64_t p, int64_t D, int64_t tok_stride) {
    const int64_t P = (H / p) * (W / p), K = C * p * p;
    if (N <= 0 || P <= 0) return;
    const int dense = tok_stride == P;
    if (dw) {
        patch_embed_unfold(cols, img, N, C, H, W, p);
        if (dense) gemm_f32(1, 0, D, K, N * P, 1.0f, dout, D, cols, K, 1.0f, dw, K);
        else
            for (int64_t n = 0; n < N; n++)
                gemm_f32(1, 0, D, K, P, 1.0f, dout + n * tok_stride * D, D, cols + n * P * K, K,
                         1.0f, dw, K);
    }
    if (db) {
        if (dense) linear_bias_backward(db, dout, N * P, D, D);
        else
            for (int64_t n = 0; n < N; n++)
                linear_bias_backward(db, dout + n * tok_stride * D, P, D, D);
    }
    if (dimg) {
        /* dcols = dout · w, written over cols (no longer needed) */
        if (dense) gemm_f32(0, 0, N * P, K, D, 1.0f, dout, D, w, K, 0.0f, cols, K);
        else
            for (int64_t n = 0; n < N; n++)
                gemm_f32(0, 0, P, K, D, 1.0f, dout + n * tok_stride * D, D, w, K, 0.0f,
                         cols + n * P * K, K);
        fold_(dimg, cols, N, C, H, W, p);
    }
}
