/* backend — the compute interface the model, the losses and the training loop call: a table of
 * function pointers plus a context (doc/DESIGN.md §3.1). One table per backend; the CPU one
 * (dv_backend_cpu, src/backend_cpu.c) wraps the fp32 CPU ops of src/ops.h, adamw.h and ema.h,
 * which stay the oracle for every other backend's op.
 *
 * Calling convention (every entry):
 *   - the first argument is the backend's context, be->ctx (for the CUDA backend: device,
 *     stream, cuBLAS handles and workspaces; the CPU backend has none and passes NULL):
 *         DV_TRY(be->linear_forward(be->ctx, y, x, w, b, T, D, 3 * D));
 *   - the other arguments are those of the CPU op of the same name, in the same order, with the
 *     same shapes, layouts and accumulate/overwrite rules (see the op's header);
 *   - compute and memory entries return int (DV_OK or a dv_status) even where the CPU op
 *     returns void: a device op can fail at launch. The CPU adapters of void ops return DV_OK.
 *     Size queries return the size; free returns nothing;
 *   - pointers to data are in the backend's memory (host memory for the CPU backend). Only
 *     to_device / to_host cross between host and backend memory;
 *   - ops are queued in order on the backend's stream; sync waits for all of them (a no-op on
 *     the CPU, whose ops are synchronous).
 * Entries are never NULL in a complete table. A table is const: it holds no mutable state
 * (state lives behind ctx), so one table serves any number of models and threads.
 *
 * Shape helpers that do no compute (attention_max_length, pos_embed_is_identity,
 * adamw_ranges_clip, adamw_default_hparams) are not in the table: call them directly.
 *
 * Example:
 *   const dv_backend *be;
 *   DV_TRY(dv_backend_by_name(cfg->compute.backend == DV_CFG_BACKEND_CPU ? "cpu" : "auto", &be));
 *   dv_vit m;  DV_TRY(dv_vit_init(&m, &vc));  m.be = be;   // the default is dv_backend_cpu()
 */
#ifndef DV_BACKEND_H
#define DV_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "adamw.h"
#include "attention.h"

typedef struct dv_backend {
    const char *name; /* "cpu", "cuda" */
    void *ctx;        /* first argument of every entry */

    /* memory (bytes) */
    int (*alloc)(void *ctx, void **ptr, size_t bytes);
    void (*free)(void *ctx, void *ptr);
    int (*to_device)(void *ctx, void *dst, const void *host_src, size_t bytes);
    int (*to_host)(void *ctx, void *host_dst, const void *src, size_t bytes);
    int (*sync)(void *ctx);

    /* gemm.h */
    int (*gemm_f32)(void *ctx, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                    float alpha, const float *a, int64_t lda, const float *b, int64_t ldb,
                    float beta, float *c, int64_t ldc);
    int (*gemm_f32_strided_batched)(void *ctx, int trans_a, int trans_b, int64_t m, int64_t n,
                                    int64_t k, float alpha, const float *a, int64_t lda,
                                    int64_t stride_a, const float *b, int64_t ldb,
                                    int64_t stride_b, float beta, float *c, int64_t ldc,
                                    int64_t stride_c, int64_t batch);
    int (*linear_forward)(void *ctx, float *y, const float *x, const float *w, const float *b,
                          int64_t T, int64_t in, int64_t out);
    int (*linear_backward)(void *ctx, float *dx, float *dw, float *db, const float *dy,
                           const float *x, const float *w, int64_t T, int64_t in, int64_t out,
                           int dx_accumulate);
    int (*linear_bias_backward)(void *ctx, float *db, const float *dy, int64_t T, int64_t out,
                                int64_t ld_dy);

    /* layernorm.h */
    int (*layernorm_forward)(void *ctx, float *y, float *mean, float *rstd, const float *x,
                             const float *gamma, const float *beta, int64_t T, int64_t C,
                             float eps);
    int (*layernorm_backward)(void *ctx, float *dx, float *dgamma, float *dbeta, const float *dy,
                              const float *x, const float *mean, const float *rstd,
                              const float *gamma, int64_t T, int64_t C, int dx_accumulate);

    /* activations.h */
    int (*gelu_forward)(void *ctx, float *y, const float *x, int64_t n);
    int (*gelu_backward)(void *ctx, float *dx, const float *dy, const float *x, int64_t n);
    int (*swiglu_forward)(void *ctx, float *y, const float *x12, int64_t T, int64_t H);
    int (*swiglu_backward)(void *ctx, float *dx12, const float *dy, const float *x12, int64_t T,
                           int64_t H);

    /* softmax.h */
    int (*softmax_forward)(void *ctx, float *y, const float *x, int64_t R, int64_t N);
    int (*softmax_backward)(void *ctx, float *dx, const float *dy, const float *y, int64_t R,
                            int64_t N);
    int (*log_softmax_forward)(void *ctx, float *y, const float *x, int64_t R, int64_t N);
    int (*log_softmax_backward)(void *ctx, float *dx, const float *dy, const float *y, int64_t R,
                                int64_t N);

    /* attention.h (workspace in floats of backend memory; the CUDA kernel may need none) */
    size_t (*attention_workspace_floats)(void *ctx, int64_t max_len, int threads);
    int (*attention_forward)(void *ctx, float *out, float *lse, const float *qkv,
                             const attention_segment *seg, int64_t nseg, int64_t T, int64_t D,
                             int64_t NH, float *work, size_t work_floats);
    int (*attention_backward)(void *ctx, float *dqkv, const float *dout, const float *qkv,
                              const float *lse, const attention_segment *seg, int64_t nseg,
                              int64_t T, int64_t D, int64_t NH, float *work, size_t work_floats);

    /* layerscale.h */
    int (*layerscale_residual_forward)(void *ctx, float *x, const float *y, const float *gamma,
                                       int64_t T, int64_t C);
    int (*layerscale_residual_backward)(void *ctx, float *dy, float *dgamma, const float *dx,
                                        const float *y, const float *gamma, int64_t T, int64_t C);
    int (*layerscale_residual_subset_forward)(void *ctx, float *x, const float *y,
                                              const int64_t *rows, int64_t n, const float *gamma,
                                              float scale, int64_t C);
    int (*layerscale_residual_subset_backward)(void *ctx, float *dy, float *dgamma,
                                               const float *dx, const float *y,
                                               const int64_t *rows, int64_t n, const float *gamma,
                                               float scale, int64_t C);

    /* patch_embed.h */
    size_t (*patch_embed_workspace_floats)(void *ctx, int64_t N, int64_t C, int64_t H, int64_t W);
    int (*patch_embed_forward)(void *ctx, float *out, float *cols, const float *img,
                               const float *w, const float *b, int64_t N, int64_t C, int64_t H,
                               int64_t W, int64_t p, int64_t D, int64_t tok_stride);
    int (*patch_embed_backward)(void *ctx, float *dimg, float *dw, float *db, float *cols,
                                const float *dout, const float *img, const float *w, int64_t N,
                                int64_t C, int64_t H, int64_t W, int64_t p, int64_t D,
                                int64_t tok_stride);

    /* pos_embed.h (workspace in bytes of backend memory) */
    size_t (*pos_embed_workspace_size)(void *ctx, int64_t M, int64_t D, int64_t h0, int64_t w0,
                                       double offset, int antialias);
    int (*pos_embed_forward)(void *ctx, float *out, const float *pos, int64_t M, int64_t D,
                             int64_t h0, int64_t w0, double offset, int antialias, void *work,
                             size_t work_bytes);
    int (*pos_embed_backward)(void *ctx, float *dpos, const float *dout, int64_t M, int64_t D,
                              int64_t h0, int64_t w0, double offset, int antialias, void *work,
                              size_t work_bytes);

    /* adamw.h, ema.h (the optimizer state and the teacher live in backend memory) */
    int (*adamw_step)(void *ctx, float *param, float *exp_avg, float *exp_avg_sq,
                      const float *grad, const dv_adamw_range *ranges, int64_t n_ranges,
                      const dv_adamw_hparams *hp);
    int (*ema_update)(void *ctx, float *teacher, const float *student, int64_t n,
                      double momentum);
} dv_backend;

/* The CPU backend: a static const table of adapters around the CPU ops (ctx NULL). */
const dv_backend *dv_backend_cpu(void);

/* "cpu": the CPU table. "auto": the best backend built in and usable here (the CPU table until
 * the CUDA ops exist). "cuda": DV_ERR_UNSUPPORTED for now, with a message that says whether the
 * toolkit was found at build time. Anything else: DV_ERR_CONFIG. Messages go to stderr as
 * user errors; *out is NULL on failure. */
int dv_backend_by_name(const char *name, const dv_backend **out);

#endif
