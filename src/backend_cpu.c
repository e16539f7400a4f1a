/* backend_cpu — the CPU backend: adapters from the dv_backend calling convention (context first,
 * int status) to the fp32 CPU ops. The adapters only drop the context and return DV_OK for the
 * ops that return void: no arithmetic, so a model run through the table is bit-identical to one
 * calling the ops directly. Also dv_backend_by_name. */
#include "backend.h"

#include <stdlib.h>
#include <string.h>

#include "dv_build.h"
#include "ema.h"
#include "err.h"
#include "ops.h"

/* ---- memory: host memory, 64-byte aligned like the ViT activations ------------------------- */

static int cpu_alloc_(void *ctx, void **ptr, size_t bytes) {
    (void)ctx;
    const size_t align = 64, n = (bytes + align - 1) / align * align;
    *ptr = aligned_alloc(align, n > 0 ? n : align);
    if (!*ptr) return DV_ERR(DV_ERR_NOMEM, "out of memory (%zu bytes)", bytes);
    return DV_OK;
}

static void cpu_free_(void *ctx, void *ptr) {
    (void)ctx;
    free(ptr);
}

static int cpu_copy_(void *ctx, void *dst, const void *src, size_t bytes) {
    (void)ctx;
    if (bytes > 0 && dst != src) memcpy(dst, src, bytes);
    return DV_OK;
}

static int cpu_sync_(void *ctx) {
    (void)ctx;
    return DV_OK;
}

/* ---- gemm.h ---------------------------------------------------------------------------------- */

static int cpu_gemm_f32_(void *ctx, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                         float alpha, const float *a, int64_t lda, const float *b, int64_t ldb,
                         float beta, float *c, int64_t ldc) {
    (void)ctx;
    gemm_f32(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return DV_OK;
}

static int cpu_gemm_f32_strided_batched_(void *ctx, int trans_a, int trans_b, int64_t m,
                                         int64_t n, int64_t k, float alpha, const float *a,
                                         int64_t lda, int64_t stride_a, const float *b,
                                         int64_t ldb, int64_t stride_b, float beta, float *c,
                                         int64_t ldc, int64_t stride_c, int64_t batch) {
    (void)ctx;
    gemm_f32_strided_batched(trans_a, trans_b, m, n, k, alpha, a, lda, stride_a, b, ldb,
                             stride_b, beta, c, ldc, stride_c, batch);
    return DV_OK;
}

static int cpu_linear_forward_(void *ctx, float *y, const float *x, const float *w,
                               const float *b, int64_t T, int64_t in, int64_t out) {
    (void)ctx;
    linear_forward(y, x, w, b, T, in, out);
    return DV_OK;
}

static int cpu_linear_backward_(void *ctx, float *dx, float *dw, float *db, const float *dy,
                                const float *x, const float *w, int64_t T, int64_t in,
                                int64_t out, int dx_accumulate) {
    (void)ctx;
    linear_backward(dx, dw, db, dy, x, w, T, in, out, dx_accumulate);
    return DV_OK;
}

static int cpu_linear_bias_backward_(void *ctx, float *db, const float *dy, int64_t T,
                                     int64_t out, int64_t ld_dy) {
    (void)ctx;
    linear_bias_backward(db, dy, T, out, ld_dy);
    return DV_OK;
}

/* ---- layernorm.h ----------------------------------------------------------------------------- */

static int cpu_layernorm_forward_(void *ctx, float *y, float *mean, float *rstd, const float *x,
                                  const float *gamma, const float *beta, int64_t T, int64_t C,
                                  float eps) {
    (void)ctx;
    layernorm_forward(y, mean, rstd, x, gamma, beta, T, C, eps);
    return DV_OK;
}

static int cpu_layernorm_backward_(void *ctx, float *dx, float *dgamma, float *dbeta,
                                   const float *dy, const float *x, const float *mean,
                                   const float *rstd, const float *gamma, int64_t T, int64_t C,
                                   int dx_accumulate) {
    (void)ctx;
    layernorm_backward(dx, dgamma, dbeta, dy, x, mean, rstd, gamma, T, C, dx_accumulate);
    return DV_OK;
}

/* ---- activations.h --------------------------------------------------------------------------- */

static int cpu_gelu_forward_(void *ctx, float *y, const float *x, int64_t n) {
    (void)ctx;
    gelu_forward(y, x, n);
    return DV_OK;
}

static int cpu_gelu_backward_(void *ctx, float *dx, const float *dy, const float *x, int64_t n) {
    (void)ctx;
    gelu_backward(dx, dy, x, n);
    return DV_OK;
}

static int cpu_swiglu_forward_(void *ctx, float *y, const float *x12, int64_t T, int64_t H) {
    (void)ctx;
    swiglu_forward(y, x12, T, H);
    return DV_OK;
}

static int cpu_swiglu_backward_(void *ctx, float *dx12, const float *dy, const float *x12,
                                int64_t T, int64_t H) {
    (void)ctx;
    swiglu_backward(dx12, dy, x12, T, H);
    return DV_OK;
}

/* ---- softmax.h ------------------------------------------------------------------------------- */

static int cpu_softmax_forward_(void *ctx, float *y, const float *x, int64_t R, int64_t N) {
    (void)ctx;
    softmax_forward(y, x, R, N);
    return DV_OK;
}

static int cpu_softmax_backward_(void *ctx, float *dx, const float *dy, const float *y, int64_t R,
                                 int64_t N) {
    (void)ctx;
    softmax_backward(dx, dy, y, R, N);
    return DV_OK;
}

static int cpu_log_softmax_forward_(void *ctx, float *y, const float *x, int64_t R, int64_t N) {
    (void)ctx;
    log_softmax_forward(y, x, R, N);
    return DV_OK;
}

static int cpu_log_softmax_backward_(void *ctx, float *dx, const float *dy, const float *y,
                                     int64_t R, int64_t N) {
    (void)ctx;
    log_softmax_backward(dx, dy, y, R, N);
    return DV_OK;
}

/* ---- attention.h ----------------------------------------------------------------------------- */

static size_t cpu_attention_workspace_floats_(void *ctx, int64_t max_len, int threads) {
    (void)ctx;
    return attention_workspace_floats(max_len, threads);
}

static int cpu_attention_forward_(void *ctx, float *out, float *lse, const float *qkv,
                                  const attention_segment *seg, int64_t nseg, int64_t T,
                                  int64_t D, int64_t NH, float *work, size_t work_floats) {
    (void)ctx;
    return attention_forward(out, lse, qkv, seg, nseg, T, D, NH, work, work_floats);
}

static int cpu_attention_backward_(void *ctx, float *dqkv, const float *dout, const float *qkv,
                                   const float *lse, const attention_segment *seg, int64_t nseg,
                                   int64_t T, int64_t D, int64_t NH, float *work,
                                   size_t work_floats) {
    (void)ctx;
    return attention_backward(dqkv, dout, qkv, lse, seg, nseg, T, D, NH, work, work_floats);
}

/* ---- layerscale.h ---------------------------------------------------------------------------- */

static int cpu_layerscale_residual_forward_(void *ctx, float *x, const float *y,
                                            const float *gamma, int64_t T, int64_t C) {
    (void)ctx;
    layerscale_residual_forward(x, y, gamma, T, C);
    return DV_OK;
}

static int cpu_layerscale_residual_backward_(void *ctx, float *dy, float *dgamma, const float *dx,
                                             const float *y, const float *gamma, int64_t T,
                                             int64_t C) {
    (void)ctx;
    layerscale_residual_backward(dy, dgamma, dx, y, gamma, T, C);
    return DV_OK;
}

static int cpu_layerscale_residual_subset_forward_(void *ctx, float *x, const float *y,
                                                   const int64_t *rows, int64_t n,
                                                   const float *gamma, float scale, int64_t C) {
    (void)ctx;
    layerscale_residual_subset_forward(x, y, rows, n, gamma, scale, C);
    return DV_OK;
}

static int cpu_layerscale_residual_subset_backward_(void *ctx, float *dy, float *dgamma,
                                                    const float *dx, const float *y,
                                                    const int64_t *rows, int64_t n,
                                                    const float *gamma, float scale, int64_t C) {
    (void)ctx;
    layerscale_residual_subset_backward(dy, dgamma, dx, y, rows, n, gamma, scale, C);
    return DV_OK;
}

/* ---- patch_embed.h --------------------------------------------------------------------------- */

static size_t cpu_patch_embed_workspace_floats_(void *ctx, int64_t N, int64_t C, int64_t H,
                                                int64_t W) {
    (void)ctx;
    return patch_embed_workspace_floats(N, C, H, W);
}

static int cpu_patch_embed_forward_(void *ctx, float *out, float *cols, const float *img,
                                    const float *w, const float *b, int64_t N, int64_t C,
                                    int64_t H, int64_t W, int64_t p, int64_t D,
                                    int64_t tok_stride) {
    (void)ctx;
    patch_embed_forward(out, cols, img, w, b, N, C, H, W, p, D, tok_stride);
    return DV_OK;
}

static int cpu_patch_embed_backward_(void *ctx, float *dimg, float *dw, float *db, float *cols,
                                     const float *dout, const float *img, const float *w,
                                     int64_t N, int64_t C, int64_t H, int64_t W, int64_t p,
                                     int64_t D, int64_t tok_stride) {
    (void)ctx;
    patch_embed_backward(dimg, dw, db, cols, dout, img, w, N, C, H, W, p, D, tok_stride);
    return DV_OK;
}

/* ---- pos_embed.h ----------------------------------------------------------------------------- */

static size_t cpu_pos_embed_workspace_size_(void *ctx, int64_t M, int64_t D, int64_t h0,
                                            int64_t w0, double offset, int antialias) {
    (void)ctx;
    return pos_embed_workspace_size(M, D, h0, w0, offset, antialias);
}

static int cpu_pos_embed_forward_(void *ctx, float *out, const float *pos, int64_t M, int64_t D,
                                  int64_t h0, int64_t w0, double offset, int antialias,
                                  void *work, size_t work_bytes) {
    (void)ctx;
    return pos_embed_forward(out, pos, M, D, h0, w0, offset, antialias, work, work_bytes);
}

static int cpu_pos_embed_backward_(void *ctx, float *dpos, const float *dout, int64_t M,
                                   int64_t D, int64_t h0, int64_t w0, double offset,
                                   int antialias, void *work, size_t work_bytes) {
    (void)ctx;
    return pos_embed_backward(dpos, dout, M, D, h0, w0, offset, antialias, work, work_bytes);
}

/* ---- adamw.h, ema.h -------------------------------------------------------------------------- */

static int cpu_adamw_step_(void *ctx, float *param, float *exp_avg, float *exp_avg_sq,
                           const float *grad, const dv_adamw_range *ranges, int64_t n_ranges,
                           const dv_adamw_hparams *hp) {
    (void)ctx;
    return adamw_step(param, exp_avg, exp_avg_sq, grad, ranges, n_ranges, hp);
}

static int cpu_ema_update_(void *ctx, float *teacher, const float *student, int64_t n,
                           double momentum) {
    (void)ctx;
    ema_update(teacher, student, n, momentum);
    return DV_OK;
}

/* ---- the table ------------------------------------------------------------------------------- */

static const dv_backend cpu_backend_ = {
    /* .name = */ "cpu",
    /* .ctx = */ NULL,
    /* .alloc = */ cpu_alloc_,
    /* .free = */ cpu_free_,
    /* .to_device = */ cpu_copy_,
    /* .to_host = */ cpu_copy_,
    /* .sync = */ cpu_sync_,
    /* .gemm_f32 = */ cpu_gemm_f32_,
    /* .gemm_f32_strided_batched = */ cpu_gemm_f32_strided_batched_,
    /* .linear_forward = */ cpu_linear_forward_,
    /* .linear_backward = */ cpu_linear_backward_,
    /* .linear_bias_backward = */ cpu_linear_bias_backward_,
    /* .layernorm_forward = */ cpu_layernorm_forward_,
    /* .layernorm_backward = */ cpu_layernorm_backward_,
    /* .gelu_forward = */ cpu_gelu_forward_,
    /* .gelu_backward = */ cpu_gelu_backward_,
    /* .swiglu_forward = */ cpu_swiglu_forward_,
    /* .swiglu_backward = */ cpu_swiglu_backward_,
    /* .softmax_forward = */ cpu_softmax_forward_,
    /* .softmax_backward = */ cpu_softmax_backward_,
    /* .log_softmax_forward = */ cpu_log_softmax_forward_,
    /* .log_softmax_backward = */ cpu_log_softmax_backward_,
    /* .attention_workspace_floats = */ cpu_attention_workspace_floats_,
    /* .attention_forward = */ cpu_attention_forward_,
    /* .attention_backward = */ cpu_attention_backward_,
    /* .layerscale_residual_forward = */ cpu_layerscale_residual_forward_,
    /* .layerscale_residual_backward = */ cpu_layerscale_residual_backward_,
    /* .layerscale_residual_subset_forward = */ cpu_layerscale_residual_subset_forward_,
    /* .layerscale_residual_subset_backward = */ cpu_layerscale_residual_subset_backward_,
    /* .patch_embed_workspace_floats = */ cpu_patch_embed_workspace_floats_,
    /* .patch_embed_forward = */ cpu_patch_embed_forward_,
    /* .patch_embed_backward = */ cpu_patch_embed_backward_,
    /* .pos_embed_workspace_size = */ cpu_pos_embed_workspace_size_,
    /* .pos_embed_forward = */ cpu_pos_embed_forward_,
    /* .pos_embed_backward = */ cpu_pos_embed_backward_,
    /* .adamw_step = */ cpu_adamw_step_,
    /* .ema_update = */ cpu_ema_update_,
};

const dv_backend *dv_backend_cpu(void) { return &cpu_backend_; }

/* ---- selection by name ----------------------------------------------------------------------- */

int dv_backend_by_name(const char *name, const dv_backend **out) {
    *out = NULL;
    if (name && (strcmp(name, "cpu") == 0 || strcmp(name, "auto") == 0)) {
        /* auto: the CUDA ops are not written yet, so the CPU is the only usable backend */
        *out = dv_backend_cpu();
        return DV_OK;
    }
    if (name && strcmp(name, "cuda") == 0) {
#ifdef DV_HAVE_CUDA
        dv_user_error("backend 'cuda': this build found the CUDA toolkit, but the CUDA training "
                      "ops are not written yet; use backend 'cpu' (or 'auto')");
#else
        dv_user_error("backend 'cuda': this build has no CUDA (configure did not find the "
                      "toolkit; see --with-cuda); use backend 'cpu' (or 'auto')");
#endif
        return DV_ERR_UNSUPPORTED;
    }
    dv_user_error("unknown backend '%s' (cpu, cuda, auto)", name ? name : "(null)");
    return DV_ERR_CONFIG;
}
