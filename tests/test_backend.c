/* test_backend — the backend interface (src/backend.h) and its CPU table.
 *
 *   The CPU table: name "cpu", ctx NULL, no NULL entry, the same table on every call.
 *   Every compute entry gives bit for bit the result of the CPU op it wraps (memcmp), on odd
 *   shapes with nonzero initial outputs (so accumulate-vs-overwrite is covered), including the
 *   size queries; memory: aligned alloc, to_device / to_host round trip, sync.
 *   dv_backend_by_name: "cpu" and "auto" give the CPU table; "cuda" is DV_ERR_UNSUPPORTED (the
 *   CUDA ops are not written yet); an unknown name is DV_ERR_CONFIG; *out is NULL on failure.
 *   Routing: a counting backend (the CPU entries behind a context that counts calls) set in
 *   dv_vit.be / dv_head.be is the one the model calls, with the expected number of calls per
 *   op and bit-identical outputs; a failing attention entry's status comes back out of
 *   dv_vit_forward.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "dino_head.h"
#include "ema.h"
#include "err.h"
#include "ops.h"
#include "rng.h"
#include "tap.h"
#include "vit.h"

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        printf("Bail out! out of memory\n");
        exit(99);
    }
    return p;
}

/* n random floats in [-1, 1) from stream `seed` */
static float *rnd(int64_t n, uint64_t seed) {
    float *x = xmalloc((size_t)n * sizeof *x);
    dv_rng r;
    dv_rng_init(&r, seed, DV_RNG_TEST, 0, 0);
    for (int64_t i = 0; i < n; i++) x[i] = 2.0f * dv_rng_uniform(&r) - 1.0f;
    return x;
}
static float *dup(const float *x, int64_t n) {
    float *y = xmalloc((size_t)n * sizeof *y);
    memcpy(y, x, (size_t)n * sizeof *y);
    return y;
}
static int same(const float *a, const float *b, int64_t n) {
    return memcmp(a, b, (size_t)n * sizeof *a) == 0;
}

/* ---- the table ------------------------------------------------------------------------------- */

static void test_table(void) {
    const dv_backend *be = dv_backend_cpu();
    tap_ok(be != NULL && strcmp(be->name, "cpu") == 0 && be->ctx == NULL, "cpu table: name, ctx");
    tap_ok(dv_backend_cpu() == be, "cpu table: one static table");
    const void *entries[] = {
        (const void *)be->alloc, (const void *)be->free, (const void *)be->to_device,
        (const void *)be->to_host, (const void *)be->sync, (const void *)be->gemm_f32,
        (const void *)be->gemm_f32_strided_batched, (const void *)be->linear_forward,
        (const void *)be->linear_backward, (const void *)be->linear_bias_backward,
        (const void *)be->layernorm_forward, (const void *)be->layernorm_backward,
        (const void *)be->gelu_forward, (const void *)be->gelu_backward,
        (const void *)be->swiglu_forward, (const void *)be->swiglu_backward,
        (const void *)be->softmax_forward, (const void *)be->softmax_backward,
        (const void *)be->log_softmax_forward, (const void *)be->log_softmax_backward,
        (const void *)be->attention_workspace_floats, (const void *)be->attention_forward,
        (const void *)be->attention_backward, (const void *)be->layerscale_residual_forward,
        (const void *)be->layerscale_residual_backward,
        (const void *)be->layerscale_residual_subset_forward,
        (const void *)be->layerscale_residual_subset_backward,
        (const void *)be->patch_embed_workspace_floats, (const void *)be->patch_embed_forward,
        (const void *)be->patch_embed_backward, (const void *)be->pos_embed_workspace_size,
        (const void *)be->pos_embed_forward, (const void *)be->pos_embed_backward,
        (const void *)be->adamw_step, (const void *)be->ema_update};
    const size_t n = sizeof entries / sizeof entries[0];
    size_t nulls = 0;
    for (size_t i = 0; i < n; i++) nulls += entries[i] == NULL;
    /* every function-pointer member is listed above: the struct is name, ctx and the entries */
    tap_ok(nulls == 0 && sizeof(dv_backend) == 2 * sizeof(void *) + n * sizeof(void (*)(void)),
           "cpu table: all %zu entries set (and listed here)", n);
}

static void test_memory(void) {
    const dv_backend *be = dv_backend_cpu();
    float *src = rnd(1001, 1), *back = xmalloc(1001 * sizeof *back);
    void *dev = NULL;
    int rc = be->alloc(be->ctx, &dev, 1001 * sizeof(float));
    tap_ok(rc == DV_OK && dev && (uintptr_t)dev % 64 == 0, "alloc: 64-byte aligned");
    rc = be->to_device(be->ctx, dev, src, 1001 * sizeof(float));
    rc |= be->to_host(be->ctx, back, dev, 1001 * sizeof(float));
    rc |= be->sync(be->ctx);
    tap_ok(rc == DV_OK && same(src, back, 1001), "to_device / to_host round trip, sync");
    be->free(be->ctx, dev);
    void *empty = NULL;
    tap_ok(be->alloc(be->ctx, &empty, 0) == DV_OK && empty, "alloc of 0 bytes");
    be->free(be->ctx, empty);
    be->free(be->ctx, NULL);
    free(src);
    free(back);
}

/* ---- every compute entry against its CPU op -------------------------------------------------- */

static void test_gemm(void) {
    const dv_backend *be = dv_backend_cpu();
    const int64_t T = 37, IN = 19, OUT = 23;
    float *x = rnd(T * IN, 2), *w = rnd(OUT * IN, 3), *b = rnd(OUT, 4), *dy = rnd(T * OUT, 5);
    float *y0 = rnd(T * OUT, 6), *y1 = dup(y0, T * OUT);
    int rc = be->gemm_f32(be->ctx, 0, 1, T, OUT, IN, 0.5f, x, IN, w, IN, 0.25f, y0, OUT);
    gemm_f32(0, 1, T, OUT, IN, 0.5f, x, IN, w, IN, 0.25f, y1, OUT);
    tap_ok(rc == DV_OK && same(y0, y1, T * OUT), "gemm_f32");
    /* 3 products of (5, 4) · (4, 6)ᵀ-stored with a broadcast B */
    float *A = rnd(3 * 5 * 4, 7), *Bm = rnd(6 * 4, 8), *C0 = rnd(3 * 5 * 6, 9);
    float *C1 = dup(C0, 3 * 5 * 6);
    rc = be->gemm_f32_strided_batched(be->ctx, 0, 1, 5, 6, 4, 1.0f, A, 4, 20, Bm, 4, 0, 1.0f, C0,
                                      6, 30, 3);
    gemm_f32_strided_batched(0, 1, 5, 6, 4, 1.0f, A, 4, 20, Bm, 4, 0, 1.0f, C1, 6, 30, 3);
    tap_ok(rc == DV_OK && same(C0, C1, 90), "gemm_f32_strided_batched");
    rc = be->linear_forward(be->ctx, y0, x, w, b, T, IN, OUT);
    linear_forward(y1, x, w, b, T, IN, OUT);
    tap_ok(rc == DV_OK && same(y0, y1, T * OUT), "linear_forward");
    float *dx0 = rnd(T * IN, 10), *dw0 = rnd(OUT * IN, 11), *db0 = rnd(OUT, 12);
    float *dx1 = dup(dx0, T * IN), *dw1 = dup(dw0, OUT * IN), *db1 = dup(db0, OUT);
    rc = be->linear_backward(be->ctx, dx0, dw0, db0, dy, x, w, T, IN, OUT, 1);
    linear_backward(dx1, dw1, db1, dy, x, w, T, IN, OUT, 1);
    tap_ok(rc == DV_OK && same(dx0, dx1, T * IN) && same(dw0, dw1, OUT * IN) &&
               same(db0, db1, OUT),
           "linear_backward (dx accumulated, dw and db accumulated)");
    rc = be->linear_bias_backward(be->ctx, db0, dy, T / 2, OUT - 3, OUT);
    linear_bias_backward(db1, dy, T / 2, OUT - 3, OUT);
    tap_ok(rc == DV_OK && same(db0, db1, OUT), "linear_bias_backward (strided rows)");
    float *all[] = {x, w, b, dy, y0, y1, A, Bm, C0, C1, dx0, dw0, db0, dx1, dw1, db1};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i]);
}

static void test_norm_act_softmax(void) {
    const dv_backend *be = dv_backend_cpu();
    const int64_t T = 29, C = 70, H = 13;
    float *x = rnd(T * C, 20), *g = rnd(C, 21), *bt = rnd(C, 22), *dy = rnd(T * C, 23);
    float *y0 = xmalloc(T * C * 4), *y1 = xmalloc(T * C * 4);
    float *mu0 = xmalloc(T * 4), *mu1 = xmalloc(T * 4);
    float *rs0 = xmalloc(T * 4), *rs1 = xmalloc(T * 4);
    int rc = be->layernorm_forward(be->ctx, y0, mu0, rs0, x, g, bt, T, C, 1e-6f);
    layernorm_forward(y1, mu1, rs1, x, g, bt, T, C, 1e-6f);
    tap_ok(rc == DV_OK && same(y0, y1, T * C) && same(mu0, mu1, T) && same(rs0, rs1, T),
           "layernorm_forward");
    float *dx0 = rnd(T * C, 24), *dg0 = rnd(C, 25), *db0 = rnd(C, 26);
    float *dx1 = dup(dx0, T * C), *dg1 = dup(dg0, C), *db1 = dup(db0, C);
    rc = be->layernorm_backward(be->ctx, dx0, dg0, db0, dy, x, mu0, rs0, g, T, C, 1);
    layernorm_backward(dx1, dg1, db1, dy, x, mu1, rs1, g, T, C, 1);
    tap_ok(rc == DV_OK && same(dx0, dx1, T * C) && same(dg0, dg1, C) && same(db0, db1, C),
           "layernorm_backward");

    rc = be->gelu_forward(be->ctx, y0, x, T * C);
    gelu_forward(y1, x, T * C);
    tap_ok(rc == DV_OK && same(y0, y1, T * C), "gelu_forward");
    rc = be->gelu_backward(be->ctx, dx0, dy, x, T * C);
    gelu_backward(dx1, dy, x, T * C);
    tap_ok(rc == DV_OK && same(dx0, dx1, T * C), "gelu_backward");
    rc = be->swiglu_forward(be->ctx, y0, x, T, H); /* x as (T, 2H) */
    swiglu_forward(y1, x, T, H);
    tap_ok(rc == DV_OK && same(y0, y1, T * H), "swiglu_forward");
    rc = be->swiglu_backward(be->ctx, dx0, dy, x, T, H);
    swiglu_backward(dx1, dy, x, T, H);
    tap_ok(rc == DV_OK && same(dx0, dx1, T * 2 * H), "swiglu_backward");

    rc = be->softmax_forward(be->ctx, y0, x, T, C);
    softmax_forward(y1, x, T, C);
    tap_ok(rc == DV_OK && same(y0, y1, T * C), "softmax_forward");
    rc = be->softmax_backward(be->ctx, dx0, dy, y0, T, C);
    softmax_backward(dx1, dy, y1, T, C);
    tap_ok(rc == DV_OK && same(dx0, dx1, T * C), "softmax_backward");
    rc = be->log_softmax_forward(be->ctx, y0, x, T, C);
    log_softmax_forward(y1, x, T, C);
    tap_ok(rc == DV_OK && same(y0, y1, T * C), "log_softmax_forward");
    rc = be->log_softmax_backward(be->ctx, dx0, dy, y0, T, C);
    log_softmax_backward(dx1, dy, y1, T, C);
    tap_ok(rc == DV_OK && same(dx0, dx1, T * C), "log_softmax_backward");
    float *all[] = {x, g, bt, dy, y0, y1, mu0, mu1, rs0, rs1, dx0, dg0, db0, dx1, dg1, db1};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i]);
}

static void test_attention_layerscale(void) {
    const dv_backend *be = dv_backend_cpu();
    const int64_t T = 15, D = 8, NH = 2; /* rows 12..14 belong to no segment */
    const attention_segment seg[2] = {{0, 5}, {5, 7}};
    const size_t nw = attention_workspace_floats(7, 0);
    const size_t nw3 = attention_workspace_floats(300, 3);
    tap_ok(be->attention_workspace_floats(be->ctx, 7, 0) == nw &&
               be->attention_workspace_floats(be->ctx, 300, 3) == nw3,
           "attention_workspace_floats");
    float *qkv = rnd(T * 3 * D, 30), *dout = rnd(T * D, 31), *work = xmalloc(nw * 4);
    float *o0 = rnd(T * D, 32), *o1 = dup(o0, T * D), *l0 = rnd(T * NH, 33), *l1 = dup(l0, T * NH);
    int rc0 = be->attention_forward(be->ctx, o0, l0, qkv, seg, 2, T, D, NH, work, nw);
    int rc1 = attention_forward(o1, l1, qkv, seg, 2, T, D, NH, work, nw);
    tap_ok(rc0 == DV_OK && rc1 == DV_OK && same(o0, o1, T * D) && same(l0, l1, T * NH),
           "attention_forward");
    float *dq0 = rnd(T * 3 * D, 34), *dq1 = dup(dq0, T * 3 * D);
    rc0 = be->attention_backward(be->ctx, dq0, dout, qkv, l0, seg, 2, T, D, NH, work, nw);
    rc1 = attention_backward(dq1, dout, qkv, l1, seg, 2, T, D, NH, work, nw);
    tap_ok(rc0 == DV_OK && rc1 == DV_OK && same(dq0, dq1, T * 3 * D), "attention_backward");
    rc0 = be->attention_forward(be->ctx, o0, l0, qkv, seg, 2, T, D, NH, work, 1);
    tap_ok(rc0 == DV_ERR_ARG, "attention_forward: its status comes through the table");

    const int64_t C = D;
    const int64_t rows[4] = {14, 2, 9, 5};
    float *g = rnd(C, 35), *y = rnd(T * C, 36), *dx = rnd(T * C, 37);
    float *x0 = rnd(T * C, 38), *x1 = dup(x0, T * C);
    int rc = be->layerscale_residual_forward(be->ctx, x0, y, g, T, C);
    layerscale_residual_forward(x1, y, g, T, C);
    tap_ok(rc == DV_OK && same(x0, x1, T * C), "layerscale_residual_forward");
    float *dy0 = rnd(T * C, 39), *dy1 = dup(dy0, T * C), *dg0 = rnd(C, 40), *dg1 = dup(dg0, C);
    rc = be->layerscale_residual_backward(be->ctx, dy0, dg0, dx, y, g, T, C);
    layerscale_residual_backward(dy1, dg1, dx, y, g, T, C);
    tap_ok(rc == DV_OK && same(dy0, dy1, T * C) && same(dg0, dg1, C),
           "layerscale_residual_backward");
    rc = be->layerscale_residual_subset_forward(be->ctx, x0, y, rows, 4, g, 1.75f, C);
    layerscale_residual_subset_forward(x1, y, rows, 4, g, 1.75f, C);
    tap_ok(rc == DV_OK && same(x0, x1, T * C), "layerscale_residual_subset_forward");
    rc = be->layerscale_residual_subset_backward(be->ctx, dy0, dg0, dx, y, rows, 4, NULL, 1.75f, C);
    layerscale_residual_subset_backward(dy1, dg1, dx, y, rows, 4, NULL, 1.75f, C);
    tap_ok(rc == DV_OK && same(dy0, dy1, T * C) && same(dg0, dg1, C),
           "layerscale_residual_subset_backward (no LayerScale)");
    float *all[] = {qkv, dout, work, o0, o1, l0, l1, dq0, dq1,
                    g, y, dx, x0, x1, dy0, dy1, dg0, dg1};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i]);
}

static void test_embed_optim(void) {
    const dv_backend *be = dv_backend_cpu();
    /* patch embed: 2 images 3x8x12, patch 4 → 2x3 patches, D 6, 2 extra rows per image */
    const int64_t N = 2, C = 3, H = 8, W = 12, p = 4, D = 6, P = 6, ts = P + 2, K = C * p * p;
    const size_t nc = patch_embed_workspace_floats(N, C, H, W);
    tap_ok(be->patch_embed_workspace_floats(be->ctx, N, C, H, W) == nc,
           "patch_embed_workspace_floats");
    float *img = rnd(N * C * H * W, 50), *w = rnd(D * K, 51), *b = rnd(D, 52);
    float *cols = xmalloc(nc * 4), *dout = rnd(N * ts * D, 53);
    float *o0 = rnd(N * ts * D, 54), *o1 = dup(o0, N * ts * D);
    int rc = be->patch_embed_forward(be->ctx, o0, cols, img, w, b, N, C, H, W, p, D, ts);
    patch_embed_forward(o1, cols, img, w, b, N, C, H, W, p, D, ts);
    tap_ok(rc == DV_OK && same(o0, o1, N * ts * D), "patch_embed_forward");
    float *di0 = rnd(N * C * H * W, 55), *di1 = dup(di0, N * C * H * W);
    float *dw0 = rnd(D * K, 56), *dw1 = dup(dw0, D * K), *db0 = rnd(D, 57), *db1 = dup(db0, D);
    rc = be->patch_embed_backward(be->ctx, di0, dw0, db0, cols, dout, img, w, N, C, H, W, p, D, ts);
    patch_embed_backward(di1, dw1, db1, cols, dout, img, w, N, C, H, W, p, D, ts);
    tap_ok(rc == DV_OK && same(di0, di1, N * C * H * W) && same(dw0, dw1, D * K) &&
               same(db0, db1, D),
           "patch_embed_backward");

    /* pos embed: 4x4 table → 3x5 (offset 0.1, bicubic) and → 6x2 (size, antialias) */
    const int64_t M = 4, E = 5;
    float *pos = rnd((1 + M * M) * E, 58);
    const struct {
        int64_t h0, w0;
        double off;
        int aa;
    } cs[2] = {{3, 5, 0.1, 0}, {6, 2, 0.0, 1}};
    for (int k = 0; k < 2; k++) {
        const int64_t n = (1 + cs[k].h0 * cs[k].w0) * E;
        const size_t ws = pos_embed_workspace_size(M, E, cs[k].h0, cs[k].w0, cs[k].off, cs[k].aa);
        void *work = xmalloc(ws);
        float *q0 = rnd(n, 59), *q1 = dup(q0, n), *dq = rnd(n, 60);
        float *dp0 = rnd((1 + M * M) * E, 61), *dp1 = dup(dp0, (1 + M * M) * E);
        int ok = be->pos_embed_workspace_size(be->ctx, M, E, cs[k].h0, cs[k].w0, cs[k].off,
                                              cs[k].aa) == ws;
        ok &= be->pos_embed_forward(be->ctx, q0, pos, M, E, cs[k].h0, cs[k].w0, cs[k].off,
                                    cs[k].aa, work, ws) == DV_OK;
        ok &= pos_embed_forward(q1, pos, M, E, cs[k].h0, cs[k].w0, cs[k].off, cs[k].aa, NULL,
                                0) == DV_OK;
        ok &= be->pos_embed_backward(be->ctx, dp0, dq, M, E, cs[k].h0, cs[k].w0, cs[k].off,
                                     cs[k].aa, NULL, 0) == DV_OK;
        ok &= pos_embed_backward(dp1, dq, M, E, cs[k].h0, cs[k].w0, cs[k].off, cs[k].aa, work,
                                 ws) == DV_OK;
        tap_ok(ok && same(q0, q1, n) && same(dp0, dp1, (1 + M * M) * E),
               "pos_embed_workspace_size/forward/backward to %lldx%lld (offset %g, antialias %d)",
               (long long)cs[k].h0, (long long)cs[k].w0, cs[k].off, cs[k].aa);
        free(work);
        free(q0);
        free(q1);
        free(dq);
        free(dp0);
        free(dp1);
    }
    tap_ok(be->pos_embed_forward(be->ctx, o0, pos, M, E, 0, 3, 0.1, 0, NULL, 0) == DV_ERR_ARG,
           "pos_embed_forward: its status (bad shape) comes through the table");

    /* AdamW on two ranges (a decayed weight, a frozen last layer), then the EMA */
    const int64_t n = 77;
    const dv_adamw_range ranges[2] = {{0, 50, 0.81, 1.0, 0}, {50, 27, 1.0, 0.0, 1}};
    dv_adamw_hparams hp = adamw_default_hparams();
    hp.lr = 1e-2;
    hp.last_layer_lr = 0.0;
    hp.weight_decay = 0.04;
    float *gr = rnd(n, 62), *p0 = rnd(n, 63), *p1 = dup(p0, n), *m0 = rnd(n, 64), *m1 = dup(m0, n);
    float *v0 = rnd(n, 65), *v1;
    for (int64_t i = 0; i < n; i++) v0[i] *= v0[i];
    v1 = dup(v0, n);
    int ok = 1;
    for (int64_t step = 1; step <= 3; step++) {
        hp.step = step;
        ok &= be->adamw_step(be->ctx, p0, m0, v0, gr, ranges, 2, &hp) == DV_OK;
        ok &= adamw_step(p1, m1, v1, gr, ranges, 2, &hp) == DV_OK;
    }
    tap_ok(ok && same(p0, p1, n) && same(m0, m1, n) && same(v0, v1, n), "adamw_step (3 steps)");
    float *t0 = rnd(n, 66), *t1 = dup(t0, n);
    rc = be->ema_update(be->ctx, t0, p0, n, 0.996);
    ema_update(t1, p1, n, 0.996);
    tap_ok(rc == DV_OK && same(t0, t1, n), "ema_update");
    float *all[] = {img, w, b, cols, dout, o0, o1, di0, di1, dw0, dw1, db0, db1, pos,
                    gr, p0, p1, m0, m1, v0, v1, t0, t1};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i]);
}

/* ---- selection by name ----------------------------------------------------------------------- */

static void test_by_name(void) {
    const dv_backend *be = NULL;
    tap_ok(dv_backend_by_name("cpu", &be) == DV_OK && be == dv_backend_cpu(), "by name: cpu");
    be = NULL;
    tap_ok(dv_backend_by_name("auto", &be) == DV_OK && be == dv_backend_cpu(),
           "by name: auto is the CPU while the CUDA ops are not written");
    be = dv_backend_cpu();
    tap_ok(dv_backend_by_name("cuda", &be) == DV_ERR_UNSUPPORTED && be == NULL,
           "by name: cuda is DV_ERR_UNSUPPORTED");
    be = dv_backend_cpu();
    tap_ok(dv_backend_by_name("tpu", &be) == DV_ERR_CONFIG && be == NULL,
           "by name: unknown name is DV_ERR_CONFIG");
    be = dv_backend_cpu();
    tap_ok(dv_backend_by_name(NULL, &be) == DV_ERR_CONFIG && be == NULL, "by name: NULL name");
}

/* ---- routing: a counting backend ------------------------------------------------------------- */

typedef struct {
    int linear_fwd, linear_bwd, ln_fwd, ln_bwd, att_fwd, att_bwd, gelu_fwd, gelu_bwd;
    int ls_fwd, ls_bwd, pe_fwd, pe_bwd, pos_fwd, pos_bwd, bias_bwd;
    int fail_attention; /* attention_forward returns DV_ERR_CUDA */
} counts;

#define CPU_ dv_backend_cpu()
static int c_linear_forward(void *ctx, float *y, const float *x, const float *w, const float *b,
                            int64_t T, int64_t in, int64_t out) {
    ((counts *)ctx)->linear_fwd++;
    return CPU_->linear_forward(NULL, y, x, w, b, T, in, out);
}
static int c_linear_backward(void *ctx, float *dx, float *dw, float *db, const float *dy,
                             const float *x, const float *w, int64_t T, int64_t in, int64_t out,
                             int acc) {
    ((counts *)ctx)->linear_bwd++;
    return CPU_->linear_backward(NULL, dx, dw, db, dy, x, w, T, in, out, acc);
}
static int c_linear_bias_backward(void *ctx, float *db, const float *dy, int64_t T, int64_t out,
                                  int64_t ld) {
    ((counts *)ctx)->bias_bwd++;
    return CPU_->linear_bias_backward(NULL, db, dy, T, out, ld);
}
static int c_layernorm_forward(void *ctx, float *y, float *mean, float *rstd, const float *x,
                               const float *g, const float *b, int64_t T, int64_t C, float eps) {
    ((counts *)ctx)->ln_fwd++;
    return CPU_->layernorm_forward(NULL, y, mean, rstd, x, g, b, T, C, eps);
}
static int c_layernorm_backward(void *ctx, float *dx, float *dg, float *db, const float *dy,
                                const float *x, const float *mean, const float *rstd,
                                const float *g, int64_t T, int64_t C, int acc) {
    ((counts *)ctx)->ln_bwd++;
    return CPU_->layernorm_backward(NULL, dx, dg, db, dy, x, mean, rstd, g, T, C, acc);
}
static int c_gelu_forward(void *ctx, float *y, const float *x, int64_t n) {
    ((counts *)ctx)->gelu_fwd++;
    return CPU_->gelu_forward(NULL, y, x, n);
}
static int c_gelu_backward(void *ctx, float *dx, const float *dy, const float *x, int64_t n) {
    ((counts *)ctx)->gelu_bwd++;
    return CPU_->gelu_backward(NULL, dx, dy, x, n);
}
static int c_attention_forward(void *ctx, float *out, float *lse, const float *qkv,
                               const attention_segment *seg, int64_t nseg, int64_t T, int64_t D,
                               int64_t NH, float *work, size_t nw) {
    counts *c = ctx;
    c->att_fwd++;
    if (c->fail_attention) return DV_ERR_CUDA;
    return CPU_->attention_forward(NULL, out, lse, qkv, seg, nseg, T, D, NH, work, nw);
}
static int c_attention_backward(void *ctx, float *dqkv, const float *dout, const float *qkv,
                                const float *lse, const attention_segment *seg, int64_t nseg,
                                int64_t T, int64_t D, int64_t NH, float *work, size_t nw) {
    ((counts *)ctx)->att_bwd++;
    return CPU_->attention_backward(NULL, dqkv, dout, qkv, lse, seg, nseg, T, D, NH, work, nw);
}
static int c_layerscale_residual_forward(void *ctx, float *x, const float *y, const float *g,
                                         int64_t T, int64_t C) {
    ((counts *)ctx)->ls_fwd++;
    return CPU_->layerscale_residual_forward(NULL, x, y, g, T, C);
}
static int c_layerscale_residual_backward(void *ctx, float *dy, float *dg, const float *dx,
                                          const float *y, const float *g, int64_t T, int64_t C) {
    ((counts *)ctx)->ls_bwd++;
    return CPU_->layerscale_residual_backward(NULL, dy, dg, dx, y, g, T, C);
}
static int c_patch_embed_forward(void *ctx, float *out, float *cols, const float *img,
                                 const float *w, const float *b, int64_t N, int64_t C, int64_t H,
                                 int64_t W, int64_t p, int64_t D, int64_t ts) {
    ((counts *)ctx)->pe_fwd++;
    return CPU_->patch_embed_forward(NULL, out, cols, img, w, b, N, C, H, W, p, D, ts);
}
static int c_patch_embed_backward(void *ctx, float *dimg, float *dw, float *db, float *cols,
                                  const float *dout, const float *img, const float *w, int64_t N,
                                  int64_t C, int64_t H, int64_t W, int64_t p, int64_t D,
                                  int64_t ts) {
    ((counts *)ctx)->pe_bwd++;
    return CPU_->patch_embed_backward(NULL, dimg, dw, db, cols, dout, img, w, N, C, H, W, p, D,
                                      ts);
}
static int c_pos_embed_forward(void *ctx, float *out, const float *pos, int64_t M, int64_t D,
                               int64_t h0, int64_t w0, double off, int aa, void *work,
                               size_t wb) {
    ((counts *)ctx)->pos_fwd++;
    return CPU_->pos_embed_forward(NULL, out, pos, M, D, h0, w0, off, aa, work, wb);
}
static int c_pos_embed_backward(void *ctx, float *dpos, const float *dout, int64_t M, int64_t D,
                                int64_t h0, int64_t w0, double off, int aa, void *work,
                                size_t wb) {
    ((counts *)ctx)->pos_bwd++;
    return CPU_->pos_embed_backward(NULL, dpos, dout, M, D, h0, w0, off, aa, work, wb);
}

static dv_backend counting_backend(counts *c) {
    dv_backend be = *dv_backend_cpu();
    be.name = "counting";
    be.ctx = c;
    be.linear_forward = c_linear_forward;
    be.linear_backward = c_linear_backward;
    be.linear_bias_backward = c_linear_bias_backward;
    be.layernorm_forward = c_layernorm_forward;
    be.layernorm_backward = c_layernorm_backward;
    be.gelu_forward = c_gelu_forward;
    be.gelu_backward = c_gelu_backward;
    be.attention_forward = c_attention_forward;
    be.attention_backward = c_attention_backward;
    be.layerscale_residual_forward = c_layerscale_residual_forward;
    be.layerscale_residual_backward = c_layerscale_residual_backward;
    be.patch_embed_forward = c_patch_embed_forward;
    be.patch_embed_backward = c_patch_embed_backward;
    be.pos_embed_forward = c_pos_embed_forward;
    be.pos_embed_backward = c_pos_embed_backward;
    return be;
}

/* forward + backward of a tiny ViT (MLP, LayerScale, 1 register, no drop path) on two groups
 * (16x16: the pos-embed table as is; 8x12: resampled); outputs x_norm and the gradient */
static int run_vit(const dv_vit *m, const float *w, float *x_norm, float *grad) {
    const int64_t D = m->cfg.embed_dim;
    float *img0 = rnd(2 * 3 * 16 * 16, 70), *img1 = rnd(3 * 3 * 8 * 12, 71);
    dv_vit_group gr[2] = {{.n = 2, .H = 16, .W = 16, .images = img0, .masks = NULL},
                          {.n = 3, .H = 8, .W = 12, .images = img1, .masks = NULL}};
    const int64_t T = dv_vit_tokens(m, gr, 2);
    dv_vit_acts *a = NULL;
    int rc = dv_vit_acts_create(m, T, 1, 0, &a);
    dv_vit_fwd_opts o = {.training = 1};
    if (rc == DV_OK) rc = dv_vit_forward(m, w, a, gr, 2, &o);
    float *dn = rnd(T * D, 72);
    dv_vit_grads_in gi = {.d_norm = dn};
    if (rc == DV_OK) {
        memcpy(x_norm, a->x_norm, (size_t)(T * D) * sizeof *x_norm);
        memset(grad, 0, m->params.numel * sizeof *grad);
        rc = dv_vit_backward(m, w, grad, a, &gi, NULL);
    }
    dv_vit_acts_free(a);
    free(img0);
    free(img1);
    free(dn);
    return rc;
}

static void test_routing(void) {
    dv_vit_config cfg;
    dv_vit_config_preset(&cfg, "vit_small", 4);
    cfg.embed_dim = 16;
    cfg.depth = 2;
    cfg.num_heads = 2;
    cfg.num_register_tokens = 1;
    cfg.img_size = 16;
    cfg.layerscale = 0.5;
    cfg.drop_path_rate = 0.0;
    dv_vit m;
    if (!tap_ok(dv_vit_init(&m, &cfg) == DV_OK && m.be == dv_backend_cpu(),
                "dv_vit_init sets the CPU backend"))
        return;
    const int64_t T = 2 * (1 + 1 + 16) + 3 * (1 + 1 + 6), D = 16, d = cfg.depth;
    float *w = xmalloc(m.params.numel * 4), *g0 = xmalloc(m.params.numel * 4);
    float *g1 = xmalloc(m.params.numel * 4), *x0 = xmalloc(T * D * 4), *x1 = xmalloc(T * D * 4);
    dv_vit_init_weights(&m, w, 5);
    int rc0 = run_vit(&m, w, x0, g0);
    counts c;
    memset(&c, 0, sizeof c);
    const dv_backend cb = counting_backend(&c);
    m.be = &cb;
    int rc1 = run_vit(&m, w, x1, g1);
    tap_ok(rc0 == DV_OK && rc1 == DV_OK && same(x0, x1, T * D) && same(g0, g1, m.params.numel),
           "ViT through a counting backend: x_norm and gradient bit-identical");
    /* per block: 4 Linear, 2 LayerNorm (+2 recomputed in the backward), attention, GELU (+1
     * recomputed), 2 LayerScale residuals; plus the final norm, 2 patch embeds, 1 resample */
    tap_ok(c.linear_fwd == 4 * d && c.linear_bwd == 4 * d && c.att_fwd == d && c.att_bwd == d &&
               c.ln_fwd == 4 * d + 1 && c.ln_bwd == 2 * d + 1 && c.gelu_fwd == 2 * d &&
               c.gelu_bwd == d && c.ls_fwd == 2 * d && c.ls_bwd == 2 * d && c.pe_fwd == 2 &&
               c.pe_bwd == 2 && c.pos_fwd == 1 && c.pos_bwd == 1 && c.bias_bwd == 2 * (2 + 1),
           "ViT calls: linear %d/%d, attention %d/%d, layernorm %d/%d, gelu %d/%d, layerscale "
           "%d/%d, patch embed %d/%d, pos embed %d/%d, bias %d",
           c.linear_fwd, c.linear_bwd, c.att_fwd, c.att_bwd, c.ln_fwd, c.ln_bwd, c.gelu_fwd,
           c.gelu_bwd, c.ls_fwd, c.ls_bwd, c.pe_fwd, c.pe_bwd, c.pos_fwd, c.pos_bwd, c.bias_bwd);
    c.fail_attention = 1;
    tap_ok(run_vit(&m, w, x1, g1) == DV_ERR_CUDA, "a failing backend op stops dv_vit_forward");
    dv_vit_free(&m);

    /* DINO head: 3 Linear + 2 GELU forward, last layer + 3 Linear + 2 GELU backward */
    dv_head_config hc = {16, 40, 3, 24, 8, 1};
    dv_head h;
    if (!tap_ok(dv_head_init(&h, &hc) == DV_OK && h.be == dv_backend_cpu(),
                "dv_head_init sets the CPU backend"))
        return;
    const int64_t n = 9;
    float *hw = xmalloc(h.params.numel * 4), *hg0 = calloc(h.params.numel, 4);
    float *hg1 = calloc(h.params.numel, 4), *hx = rnd(n * 16, 80), *hdy = rnd(n * 40, 81);
    float *y0 = xmalloc(n * 40 * 4), *y1 = xmalloc(n * 40 * 4);
    float *dx0 = xmalloc(n * 16 * 4), *dx1 = xmalloc(n * 16 * 4);
    dv_head_init_weights(&h, hw, 3, 0x100);
    dv_head_acts ha;
    int ok = dv_head_acts_create(&h, n, &ha) == DV_OK;
    ok = ok && dv_head_forward(&h, hw, &ha, hx, n, y0) == DV_OK;
    ok = ok && dv_head_backward(&h, hw, hg0, &ha, hdy, n, dx0) == DV_OK;
    memset(&c, 0, sizeof c);
    h.be = &cb;
    ok = ok && dv_head_forward(&h, hw, &ha, hx, n, y1) == DV_OK;
    ok = ok && dv_head_backward(&h, hw, hg1, &ha, hdy, n, dx1) == DV_OK;
    tap_ok(ok && same(y0, y1, n * 40) && same(dx0, dx1, n * 16) &&
               same(hg0, hg1, h.params.numel),
           "DINO head through a counting backend: bit-identical");
    tap_ok(c.linear_fwd == 4 && c.gelu_fwd == 2 && c.linear_bwd == 4 && c.gelu_bwd == 2,
           "head calls: linear %d/%d, gelu %d/%d", c.linear_fwd, c.linear_bwd, c.gelu_fwd,
           c.gelu_bwd);
    dv_head_acts_free(&ha);
    dv_head_free(&h);
    float *all[] = {w, g0, g1, x0, x1, hw, hg0, hg1, hx, hdy, y0, y1, dx0, dx1};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i]);
}

int main(void) {
    tap_no_plan();
    tap_diag("the error lines on stderr are expected (bad arguments, unknown or unbuilt backends)");
    test_table();
    test_memory();
    test_gemm();
    test_norm_act_softmax();
    test_attention_layerscale();
    test_embed_optim();
    test_by_name();
    test_routing();
    return tap_exit();
}
