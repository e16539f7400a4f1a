/* test_ops_grad — finite-difference gradient checks of every CPU op backward, plus forward
 * checks of attention (naive per-segment reference, segment isolation), the strided-batched
 * GEMM, layernorm, GELU, softmax and the patch embedding, the accuracy of the vectorized exp,
 * and that results do not depend on the OpenMP thread count.
 *
 * Method: loss = Σ R ⊙ out with a random R, out computed by the fp32 forward; numerical
 * gradient by double-precision central differences (x ± eps, divided by the float-rounded
 * step actually taken). eps = 1e-2 for ops linear in the checked input (FD is then exact up to
 * rounding) and 1e-3 for nonlinear ones (truncation O(eps²) ~ 1e-6 relative).
 * Error measure per gradient tensor: max_i |analytic_i − numeric_i| / max_i |numeric_i|.
 * Tolerance: 1e-2 (fp32 forward rounding noise is ~1e-4 of the gradient scale at these eps).
 * Parameter gradients are pre-filled with PRE to check that backward accumulates (+=); input
 * gradients documented as overwritten are pre-filled with NaN.
 * Shapes are small and odd (T = 7 or 9, C = 10, segment lengths 1, 3, 5, 2 heads).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "err.h"
#include "ops.h"
#include "tap.h"

#define TOL 1e-2
#define EPS_LIN 1e-2f
#define EPS_NONLIN 1e-3f
#define PRE 0.25f

/* ---- helpers ---------------------------------------------------------------------------- */

typedef struct {
    uint64_t s;
} rng_t;

static uint32_t rng_u32(rng_t *r) { /* splitmix64 */
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return (uint32_t)((z ^ (z >> 31)) >> 32);
}
static float urand(rng_t *r) { return (float)(rng_u32(r) / 4294967296.0 * 2.0 - 1.0); }
static void fill(float *x, int64_t n, rng_t *r, float scale, float shift) {
    for (int64_t i = 0; i < n; i++) x[i] = shift + scale * urand(r);
}
static void fill_const(float *x, int64_t n, float v) {
    for (int64_t i = 0; i < n; i++) x[i] = v;
}
static float *fmalloc(int64_t n) {
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(99);
    }
    return p;
}
static double dot_d(const float *a, const float *b, int64_t n) {
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}
static void sub_const(float *x, int64_t n, float v) {
    for (int64_t i = 0; i < n; i++) x[i] -= v;
}

typedef double (*loss_fn)(void *ctx);

/* max |ana - num| / max |num| against central differences of f w.r.t. p[0..n). */
static double grad_err(float *p, const float *ana, int64_t n, float eps, loss_fn f, void *ctx) {
    double maxdiff = 0.0, maxnum = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const float v = p[i];
        const float vp = v + eps, vm = v - eps;
        p[i] = vp;
        const double lp = f(ctx);
        p[i] = vm;
        const double lm = f(ctx);
        p[i] = v;
        const double num = (lp - lm) / ((double)vp - (double)vm);
        const double diff = fabs((double)ana[i] - num);
        if (!(diff <= maxdiff)) maxdiff = diff; /* NaN propagates */
        if (fabs(num) > maxnum) maxnum = fabs(num);
    }
    return maxdiff / (maxnum > 1e-12 ? maxnum : 1e-12);
}

static void check_grad(const char *name, float *p, const float *ana, int64_t n, float eps,
                       loss_fn f, void *ctx) {
    const double e = grad_err(p, ana, n, eps, f, ctx);
    tap_ok(e <= TOL, "%s: max rel err %.3g (eps %g, tol %g)", name, e, (double)eps, TOL);
}

/* ---- linear ----------------------------------------------------------------------------- */

typedef struct {
    int64_t T, IN, OUT;
    float *x, *w, *b, *y, *R;
} lin_ctx;

static double lin_loss(void *c_) {
    lin_ctx *c = c_;
    linear_forward(c->y, c->x, c->w, c->b, c->T, c->IN, c->OUT);
    return dot_d(c->y, c->R, c->T * c->OUT);
}

static void test_linear(rng_t *r) {
    lin_ctx c = {.T = 7, .IN = 10, .OUT = 6};
    c.x = fmalloc(c.T * c.IN), c.w = fmalloc(c.OUT * c.IN), c.b = fmalloc(c.OUT);
    c.y = fmalloc(c.T * c.OUT), c.R = fmalloc(c.T * c.OUT);
    fill(c.x, c.T * c.IN, r, 1, 0), fill(c.w, c.OUT * c.IN, r, 0.5f, 0), fill(c.b, c.OUT, r, 1, 0);
    fill(c.R, c.T * c.OUT, r, 1, 0);
    float *dx = fmalloc(c.T * c.IN), *dw = fmalloc(c.OUT * c.IN), *db = fmalloc(c.OUT);
    fill_const(dx, c.T * c.IN, NAN), fill_const(dw, c.OUT * c.IN, PRE), fill_const(db, c.OUT, PRE);
    linear_backward(dx, dw, db, c.R, c.x, c.w, c.T, c.IN, c.OUT, 0);
    sub_const(dw, c.OUT * c.IN, PRE), sub_const(db, c.OUT, PRE);
    check_grad("linear dx", c.x, dx, c.T * c.IN, EPS_LIN, lin_loss, &c);
    check_grad("linear dW (accumulated)", c.w, dw, c.OUT * c.IN, EPS_LIN, lin_loss, &c);
    check_grad("linear db (accumulated)", c.b, db, c.OUT, EPS_LIN, lin_loss, &c);
    fill_const(dx, c.T * c.IN, PRE);
    linear_backward(dx, NULL, NULL, c.R, c.x, c.w, c.T, c.IN, c.OUT, 1);
    sub_const(dx, c.T * c.IN, PRE);
    check_grad("linear dx (dx_accumulate)", c.x, dx, c.T * c.IN, EPS_LIN, lin_loss, &c);
    free(dx), free(dw), free(db);
    free(c.x), free(c.w), free(c.b), free(c.y), free(c.R);
}

/* ---- strided batched GEMM (forward only) ------------------------------------------------ */

static void test_gemm_batched(rng_t *r) {
    const int64_t m = 4, n = 5, k = 6, batch = 3;
    float *a = fmalloc(batch * m * k), *b = fmalloc(batch * k * n), *c = fmalloc(batch * m * n);
    fill(a, batch * m * k, r, 1, 0), fill(b, batch * k * n, r, 1, 0);
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            const int64_t lda = ta ? m : k, ldb = tb ? k : n;
            fill_const(c, batch * m * n, 1.0f);
            gemm_f32_strided_batched(ta, tb, m, n, k, 0.5f, a, lda, m * k, b, ldb, k * n, 2.0f, c,
                                     n, m * n, batch);
            double maxerr = 0.0;
            for (int64_t z = 0; z < batch; z++)
                for (int64_t i = 0; i < m; i++)
                    for (int64_t j = 0; j < n; j++) {
                        double s = 0.0;
                        for (int64_t l = 0; l < k; l++) {
                            const double av = ta ? a[z * m * k + l * lda + i]
                                                 : a[z * m * k + i * lda + l];
                            const double bv = tb ? b[z * k * n + j * ldb + l]
                                                 : b[z * k * n + l * ldb + j];
                            s += av * bv;
                        }
                        const double ref = 0.5 * s + 2.0;
                        const double e = fabs(ref - c[z * m * n + i * n + j]);
                        if (e > maxerr) maxerr = e;
                    }
            tap_ok(maxerr <= 1e-5, "gemm_f32_strided_batched ta=%d tb=%d: max abs err %.3g", ta,
                   tb, maxerr);
        }
    free(a), free(b), free(c);
}

/* ---- layernorm -------------------------------------------------------------------------- */

typedef struct {
    int64_t T, C;
    float *x, *g, *b, *y, *mean, *rstd, *R;
} ln_ctx;

static double ln_loss(void *c_) {
    ln_ctx *c = c_;
    layernorm_forward(c->y, c->mean, c->rstd, c->x, c->g, c->b, c->T, c->C, 1e-6f);
    return dot_d(c->y, c->R, c->T * c->C);
}

static void test_layernorm(rng_t *r) {
    ln_ctx c = {.T = 7, .C = 10};
    const int64_t n = c.T * c.C;
    c.x = fmalloc(n), c.g = fmalloc(c.C), c.b = fmalloc(c.C), c.y = fmalloc(n);
    c.mean = fmalloc(c.T), c.rstd = fmalloc(c.T), c.R = fmalloc(n);
    fill(c.x, n, r, 1.5f, 0.3f), fill(c.g, c.C, r, 0.5f, 1.0f), fill(c.b, c.C, r, 0.5f, 0);
    fill(c.R, n, r, 1, 0);
    /* forward: each output row has mean(beta)-centred normalised values */
    ln_loss(&c);
    double maxerr = 0.0;
    for (int64_t t = 0; t < c.T; t++) {
        double m = 0, v = 0;
        for (int64_t i = 0; i < c.C; i++) m += c.x[t * c.C + i];
        m /= c.C;
        for (int64_t i = 0; i < c.C; i++) v += (c.x[t * c.C + i] - m) * (c.x[t * c.C + i] - m);
        v /= c.C;
        for (int64_t i = 0; i < c.C; i++) {
            const double ref = (c.x[t * c.C + i] - m) / sqrt(v + 1e-6) * c.g[i] + c.b[i];
            const double e = fabs(ref - c.y[t * c.C + i]);
            if (e > maxerr) maxerr = e;
        }
    }
    tap_ok(maxerr <= 1e-5, "layernorm forward vs double reference: max abs err %.3g", maxerr);
    float *dx = fmalloc(n), *dg = fmalloc(c.C), *db = fmalloc(c.C);
    fill_const(dx, n, NAN), fill_const(dg, c.C, PRE), fill_const(db, c.C, PRE);
    layernorm_backward(dx, dg, db, c.R, c.x, c.mean, c.rstd, c.g, c.T, c.C, 0);
    sub_const(dg, c.C, PRE), sub_const(db, c.C, PRE);
    check_grad("layernorm dx", c.x, dx, n, EPS_NONLIN, ln_loss, &c);
    check_grad("layernorm dgamma (accumulated)", c.g, dg, c.C, EPS_LIN, ln_loss, &c);
    check_grad("layernorm dbeta (accumulated)", c.b, db, c.C, EPS_LIN, ln_loss, &c);
    ln_loss(&c); /* restore mean/rstd of the unperturbed x */
    fill_const(dx, n, PRE);
    layernorm_backward(dx, NULL, NULL, c.R, c.x, c.mean, c.rstd, c.g, c.T, c.C, 1);
    sub_const(dx, n, PRE);
    check_grad("layernorm dx (dx_accumulate)", c.x, dx, n, EPS_NONLIN, ln_loss, &c);
    free(dx), free(dg), free(db);
    free(c.x), free(c.g), free(c.b), free(c.y), free(c.mean), free(c.rstd), free(c.R);
}

/* ---- GELU, SwiGLU ----------------------------------------------------------------------- */

typedef struct {
    int64_t n, T, H;
    float *x, *y, *R;
} act_ctx;

static double gelu_loss(void *c_) {
    act_ctx *c = c_;
    gelu_forward(c->y, c->x, c->n);
    return dot_d(c->y, c->R, c->n);
}
static double swiglu_loss(void *c_) {
    act_ctx *c = c_;
    swiglu_forward(c->y, c->x, c->T, c->H);
    return dot_d(c->y, c->R, c->T * c->H);
}

static void test_activations(rng_t *r) {
    act_ctx c = {.n = 70, .T = 7, .H = 5};
    c.x = fmalloc(c.n), c.y = fmalloc(c.n), c.R = fmalloc(c.n);
    fill(c.x, c.n, r, 3.0f, 0), fill(c.R, c.n, r, 1, 0);
    gelu_loss(&c);
    double maxerr = 0.0;
    for (int64_t i = 0; i < c.n; i++) {
        const double ref = 0.5 * c.x[i] * (1.0 + erf(c.x[i] / sqrt(2.0)));
        if (fabs(ref - c.y[i]) > maxerr) maxerr = fabs(ref - c.y[i]);
    }
    tap_ok(maxerr <= 1e-6, "gelu forward vs double erf: max abs err %.3g", maxerr);
    float *dx = fmalloc(c.n);
    fill_const(dx, c.n, NAN);
    gelu_backward(dx, c.R, c.x, c.n);
    check_grad("gelu dx", c.x, dx, c.n, EPS_NONLIN, gelu_loss, &c);
    /* SwiGLU: x (T, 2H) */
    fill_const(dx, c.n, NAN);
    swiglu_backward(dx, c.R, c.x, c.T, c.H);
    check_grad("swiglu dx12", c.x, dx, c.T * 2 * c.H, EPS_NONLIN, swiglu_loss, &c);
    free(dx), free(c.x), free(c.y), free(c.R);
}

/* ---- softmax, log-softmax --------------------------------------------------------------- */

typedef struct {
    int64_t R_, N;
    float *x, *y, *R;
    int log;
} sm_ctx;

static double sm_loss(void *c_) {
    sm_ctx *c = c_;
    if (c->log) log_softmax_forward(c->y, c->x, c->R_, c->N);
    else softmax_forward(c->y, c->x, c->R_, c->N);
    return dot_d(c->y, c->R, c->R_ * c->N);
}

static void test_softmax(rng_t *r) {
    sm_ctx c = {.R_ = 7, .N = 10};
    const int64_t n = c.R_ * c.N;
    c.x = fmalloc(n), c.y = fmalloc(n), c.R = fmalloc(n);
    fill(c.x, n, r, 3.0f, 50.0f), fill(c.R, n, r, 1, 0); /* shift checks stability */
    float *dx = fmalloc(n);
    for (int lg = 0; lg < 2; lg++) {
        c.log = lg;
        sm_loss(&c);
        double maxerr = 0.0;
        for (int64_t i = 0; i < c.R_; i++) {
            double m = -1e300, s = 0;
            for (int64_t j = 0; j < c.N; j++) m = fmax(m, c.x[i * c.N + j]);
            for (int64_t j = 0; j < c.N; j++) s += exp(c.x[i * c.N + j] - m);
            for (int64_t j = 0; j < c.N; j++) {
                const double lp = c.x[i * c.N + j] - m - log(s);
                const double ref = lg ? lp : exp(lp);
                maxerr = fmax(maxerr, fabs(ref - c.y[i * c.N + j]));
            }
        }
        tap_ok(maxerr <= 1e-5, "%s forward vs double reference: max abs err %.3g",
               lg ? "log_softmax" : "softmax", maxerr);
        fill_const(dx, n, NAN);
        if (lg) log_softmax_backward(dx, c.R, c.y, c.R_, c.N);
        else softmax_backward(dx, c.R, c.y, c.R_, c.N);
        check_grad(lg ? "log_softmax dx" : "softmax dx", c.x, dx, n, EPS_NONLIN, sm_loss, &c);
    }
    free(dx), free(c.x), free(c.y), free(c.R);
}

/* ---- attention -------------------------------------------------------------------------- */

typedef struct {
    int64_t T, D, NH, nseg;
    const attention_segment *seg;
    float *qkv, *out, *lse, *R, *work;
    size_t nwork;
} att_ctx;

static double att_loss(void *c_) {
    att_ctx *c = c_;
    int rc = attention_forward(c->out, c->lse, c->qkv, c->seg, c->nseg, c->T, c->D, c->NH,
                               c->work, c->nwork);
    if (rc != DV_OK) return NAN;
    return dot_d(c->out, c->R, c->T * c->D);
}

/* Naive double-precision reference of one segment table; rows outside segments untouched. */
static void att_naive(double *out, double *lse, const float *qkv, const attention_segment *seg,
                      int64_t nseg, int64_t D, int64_t NH) {
    const int64_t HS = D / NH, ld = 3 * D;
    const double scale = 1.0 / sqrt((double)HS);
    for (int64_t s = 0; s < nseg; s++) {
        const int64_t o = seg[s].offset, L = seg[s].length;
        double *p = malloc((size_t)L * sizeof(double));
        for (int64_t h = 0; h < NH; h++)
            for (int64_t i = 0; i < L; i++) {
                double m = -1e300;
                for (int64_t j = 0; j < L; j++) {
                    double sc = 0;
                    for (int64_t e = 0; e < HS; e++)
                        sc += (double)qkv[(o + i) * ld + h * HS + e] *
                              qkv[(o + j) * ld + D + h * HS + e];
                    p[j] = sc * scale;
                    m = fmax(m, p[j]);
                }
                double z = 0;
                for (int64_t j = 0; j < L; j++) z += exp(p[j] - m);
                lse[(o + i) * NH + h] = m + log(z);
                for (int64_t e = 0; e < HS; e++) {
                    double acc = 0;
                    for (int64_t j = 0; j < L; j++)
                        acc += exp(p[j] - m) / z * qkv[(o + j) * ld + 2 * D + h * HS + e];
                    out[(o + i) * D + h * HS + e] = acc;
                }
            }
        free(p);
    }
}

static double att_forward_err(att_ctx *c, double *lse_err) {
    double *ref = malloc((size_t)(c->T * c->D) * sizeof(double));
    double *lref = malloc((size_t)(c->T * c->NH) * sizeof(double));
    att_naive(ref, lref, c->qkv, c->seg, c->nseg, c->D, c->NH);
    att_loss(c);
    double e = 0.0, el = 0.0;
    for (int64_t s = 0; s < c->nseg; s++)
        for (int64_t t = c->seg[s].offset; t < c->seg[s].offset + c->seg[s].length; t++) {
            for (int64_t j = 0; j < c->D; j++)
                e = fmax(e, fabs(ref[t * c->D + j] - c->out[t * c->D + j]));
            for (int64_t h = 0; h < c->NH; h++)
                el = fmax(el, fabs(lref[t * c->NH + h] - c->lse[t * c->NH + h]));
        }
    free(ref), free(lref);
    *lse_err = el;
    return e;
}

static void test_attention(rng_t *r) {
    /* segments of length 1, 3, 5 in a non-sorted order */
    const attention_segment seg[3] = {{4, 5}, {0, 1}, {1, 3}};
    att_ctx c = {.T = 9, .D = 10, .NH = 2, .nseg = 3, .seg = seg};
    const int64_t n3 = c.T * 3 * c.D, n = c.T * c.D;
    c.qkv = fmalloc(n3), c.out = fmalloc(n), c.lse = fmalloc(c.T * c.NH), c.R = fmalloc(n);
    fill(c.qkv, n3, r, 1.5f, 0), fill(c.R, n, r, 1, 0);
    c.nwork = attention_workspace_floats(attention_max_length(seg, 3), 0);
    c.work = fmalloc((int64_t)c.nwork);
    double lse_err;
    double e = att_forward_err(&c, &lse_err);
    tap_ok(e <= 1e-5, "attention forward vs naive per-segment reference: max abs err %.3g", e);
    tap_ok(lse_err <= 1e-5, "attention lse vs naive: max abs err %.3g", lse_err);

    /* segment isolation: perturbing segment {1,3} leaves the other rows bit-identical */
    float *out0 = fmalloc(n);
    att_loss(&c);
    memcpy(out0, c.out, (size_t)n * sizeof(float));
    float *save = fmalloc(3 * 3 * c.D);
    memcpy(save, c.qkv + 1 * 3 * c.D, (size_t)(3 * 3 * c.D) * sizeof(float));
    for (int64_t i = 0; i < 3 * 3 * c.D; i++) c.qkv[1 * 3 * c.D + i] += 0.5f * urand(r);
    att_loss(&c);
    int iso = 1, changed = 0;
    for (int64_t t = 0; t < c.T; t++)
        for (int64_t j = 0; j < c.D; j++) {
            const int same = c.out[t * c.D + j] == out0[t * c.D + j];
            if (t >= 1 && t < 4) changed |= !same;
            else iso &= same;
        }
    tap_ok(iso && changed, "attention: tokens of one segment do not affect another (%s)",
           changed ? "own segment changed" : "own segment did NOT change");
    memcpy(c.qkv + 1 * 3 * c.D, save, (size_t)(3 * 3 * c.D) * sizeof(float));
    free(save), free(out0);

    /* gradient */
    att_loss(&c);
    float *dqkv = fmalloc(n3);
    fill_const(dqkv, n3, NAN);
    int rc = attention_backward(dqkv, c.R, c.qkv, c.lse, seg, 3, c.T, c.D, c.NH, c.work, c.nwork);
    tap_ok(rc == DV_OK, "attention_backward returns DV_OK");
    check_grad("attention dqkv", c.qkv, dqkv, n3, EPS_NONLIN, att_loss, &c);

    /* rows outside every segment are not touched; one-thread workspace still works */
    const attention_segment gap[2] = {{0, 3}, {5, 4}};
    att_ctx g = c;
    g.seg = gap, g.nseg = 2;
    g.nwork = attention_workspace_floats(4, 1);
    fill_const(g.out, n, 7.0f);
    att_loss(&g);
    fill_const(dqkv, n3, 7.0f);
    attention_backward(dqkv, g.R, g.qkv, g.lse, gap, 2, g.T, g.D, g.NH, g.work, g.nwork);
    int untouched = 1;
    for (int64_t t = 3; t < 5; t++) {
        for (int64_t j = 0; j < c.D; j++) untouched &= g.out[t * c.D + j] == 7.0f;
        for (int64_t j = 0; j < 3 * c.D; j++) untouched &= dqkv[t * 3 * c.D + j] == 7.0f;
    }
    double lerr;
    e = att_forward_err(&g, &lerr);
    tap_ok(untouched && e <= 1e-5,
           "attention: rows between segments untouched, forward err %.3g with 1-thread workspace",
           e);
    fill_const(dqkv, n3, 0.0f);
    attention_backward(dqkv, g.R, g.qkv, g.lse, gap, 2, g.T, g.D, g.NH, g.work, g.nwork);
    check_grad("attention dqkv (segments with a gap)", g.qkv, dqkv, n3, EPS_NONLIN, att_loss, &g);

    /* too small a workspace is an error, not a crash */
    rc = attention_forward(c.out, c.lse, c.qkv, seg, 3, c.T, c.D, c.NH, c.work, 10);
    tap_ok(rc == DV_ERR_ARG, "attention_forward with a too small workspace returns DV_ERR_ARG");
    free(dqkv), free(c.qkv), free(c.out), free(c.lse), free(c.R), free(c.work);

    /* larger packed batch: many (segment, head) pairs across threads, lengths up to 40 */
    {
        attention_segment big[6];
        const int64_t lens[6] = {17, 40, 1, 33, 5, 26};
        int64_t T = 0;
        for (int s = 0; s < 6; s++) big[s].offset = T, big[s].length = lens[s], T += lens[s];
        att_ctx b = {.T = T, .D = 48, .NH = 3, .nseg = 6, .seg = big};
        b.qkv = fmalloc(T * 3 * b.D), b.out = fmalloc(T * b.D), b.lse = fmalloc(T * b.NH);
        b.R = fmalloc(T * b.D);
        fill(b.qkv, T * 3 * b.D, r, 1.0f, 0), fill(b.R, T * b.D, r, 1, 0);
        b.nwork = attention_workspace_floats(40, 0);
        b.work = fmalloc((int64_t)b.nwork);
        e = att_forward_err(&b, &lerr);
        tap_ok(e <= 1e-5 && lerr <= 1e-5,
               "attention forward, 6 segments x 3 heads (T=%lld): max abs err %.3g, lse %.3g",
               (long long)T, e, lerr);
        free(b.qkv), free(b.out), free(b.lse), free(b.R), free(b.work);
    }
}

/* ---- layerscale residual ---------------------------------------------------------------- */

typedef struct {
    int64_t T, C, n;
    const int64_t *rows;
    float scale;
    float *x0, *x, *y, *g, *R;
} ls_ctx;

static double ls_loss(void *c_) {
    ls_ctx *c = c_;
    memcpy(c->x, c->x0, (size_t)(c->T * c->C) * sizeof(float));
    if (c->rows)
        layerscale_residual_subset_forward(c->x, c->y, c->rows, c->n, c->g, c->scale, c->C);
    else layerscale_residual_forward(c->x, c->y, c->g, c->T, c->C);
    return dot_d(c->x, c->R, c->T * c->C);
}

static void test_layerscale(rng_t *r) {
    ls_ctx c = {.T = 7, .C = 10};
    const int64_t n = c.T * c.C;
    c.x0 = fmalloc(n), c.x = fmalloc(n), c.y = fmalloc(n), c.g = fmalloc(c.C), c.R = fmalloc(n);
    fill(c.x0, n, r, 1, 0), fill(c.y, n, r, 1, 0), fill(c.g, c.C, r, 0.5f, 0.2f);
    fill(c.R, n, r, 1, 0);
    float *dy = fmalloc(n), *dg = fmalloc(c.C);
    fill_const(dy, n, NAN), fill_const(dg, c.C, PRE);
    layerscale_residual_backward(dy, dg, c.R, c.y, c.g, c.T, c.C);
    sub_const(dg, c.C, PRE);
    check_grad("layerscale residual dy", c.y, dy, n, EPS_LIN, ls_loss, &c);
    check_grad("layerscale residual dgamma (accumulated)", c.g, dg, c.C, EPS_LIN, ls_loss, &c);
    /* no LayerScale (gamma NULL): plain residual add, dy = dx */
    memcpy(c.x, c.x0, (size_t)n * sizeof(float));
    layerscale_residual_forward(c.x, c.y, NULL, c.T, c.C);
    layerscale_residual_backward(dy, NULL, c.R, c.y, NULL, c.T, c.C);
    int ok = 1;
    for (int64_t i = 0; i < n; i++) ok &= c.x[i] == c.x0[i] + c.y[i] && dy[i] == c.R[i];
    tap_ok(ok, "layerscale with gamma = NULL is the plain residual add");

    /* subset form: rows {5, 1, 3}, scale = T / n (drop-path b / keep) */
    const int64_t rows[3] = {5, 1, 3};
    c.rows = rows, c.n = 3, c.scale = 7.0f / 3.0f;
    fill_const(dy, 3 * c.C, NAN), fill_const(dg, c.C, PRE);
    layerscale_residual_subset_backward(dy, dg, c.R, c.y, rows, 3, c.g, c.scale, c.C);
    sub_const(dg, c.C, PRE);
    check_grad("layerscale subset dy", c.y, dy, 3 * c.C, EPS_LIN, ls_loss, &c);
    check_grad("layerscale subset dgamma (accumulated)", c.g, dg, c.C, EPS_LIN, ls_loss, &c);
    ls_loss(&c);
    ok = 1;
    for (int64_t t = 0; t < c.T; t++)
        if (t != 5 && t != 1 && t != 3)
            for (int64_t i = 0; i < c.C; i++) ok &= c.x[t * c.C + i] == c.x0[t * c.C + i];
    tap_ok(ok, "layerscale subset leaves the other rows unchanged");
    free(dy), free(dg), free(c.x0), free(c.x), free(c.y), free(c.g), free(c.R);
}

/* ---- patch embed ------------------------------------------------------------------------ */

typedef struct {
    int64_t N, C, H, W, p, D, stride, rows_out;
    float *img, *w, *b, *out, *cols, *R;
} pe_ctx;

static double pe_loss(void *c_) {
    pe_ctx *c = c_;
    fill_const(c->out, c->rows_out * c->D, 0.0f);
    patch_embed_forward(c->out + c->D, c->cols, c->img, c->w, c->b, c->N, c->C, c->H, c->W, c->p,
                        c->D, c->stride);
    return dot_d(c->out, c->R, c->rows_out * c->D);
}

static void test_patch_embed(rng_t *r, int64_t extra) {
    pe_ctx c = {.N = 2, .C = 3, .H = 6, .W = 9, .p = 3, .D = 5};
    const int64_t P = (c.H / c.p) * (c.W / c.p), K = c.C * c.p * c.p;
    const int64_t nimg = c.N * c.C * c.H * c.W;
    c.stride = P + extra;
    c.rows_out = 1 + c.N * c.stride; /* row 0 and the `extra` rows per image stay zero */
    c.img = fmalloc(nimg), c.w = fmalloc(c.D * K), c.b = fmalloc(c.D);
    c.out = fmalloc(c.rows_out * c.D), c.R = fmalloc(c.rows_out * c.D);
    c.cols = fmalloc((int64_t)patch_embed_workspace_floats(c.N, c.C, c.H, c.W));
    fill(c.img, nimg, r, 1, 0), fill(c.w, c.D * K, r, 0.3f, 0), fill(c.b, c.D, r, 1, 0);
    fill(c.R, c.rows_out * c.D, r, 1, 0);
    /* forward vs direct convolution */
    pe_loss(&c);
    double maxerr = 0.0;
    int others_zero = 1;
    for (int64_t nn = 0; nn < c.N; nn++)
        for (int64_t gy = 0; gy < c.H / c.p; gy++)
            for (int64_t gx = 0; gx < c.W / c.p; gx++)
                for (int64_t d = 0; d < c.D; d++) {
                    double s = c.b[d];
                    for (int64_t ch = 0; ch < c.C; ch++)
                        for (int64_t ky = 0; ky < c.p; ky++)
                            for (int64_t kx = 0; kx < c.p; kx++)
                                s += (double)c.w[((d * c.C + ch) * c.p + ky) * c.p + kx] *
                                     c.img[((nn * c.C + ch) * c.H + gy * c.p + ky) * c.W +
                                           gx * c.p + kx];
                    const int64_t row = 1 + nn * c.stride + gy * (c.W / c.p) + gx;
                    maxerr = fmax(maxerr, fabs(s - c.out[row * c.D + d]));
                }
    for (int64_t nn = 0; nn < c.N; nn++)
        for (int64_t e = 0; e < extra; e++)
            for (int64_t d = 0; d < c.D; d++)
                others_zero &= c.out[(1 + nn * c.stride + P + e) * c.D + d] == 0.0f;
    tap_ok(maxerr <= 1e-5 && others_zero,
           "patch_embed forward (tok_stride = P + %lld) vs direct conv: max abs err %.3g",
           (long long)extra, maxerr);
    float *dimg = fmalloc(nimg), *dw = fmalloc(c.D * K), *db = fmalloc(c.D);
    fill_const(dimg, nimg, NAN), fill_const(dw, c.D * K, PRE), fill_const(db, c.D, PRE);
    patch_embed_backward(dimg, dw, db, c.cols, c.R + c.D, c.img, c.w, c.N, c.C, c.H, c.W, c.p,
                         c.D, c.stride);
    sub_const(dw, c.D * K, PRE), sub_const(db, c.D, PRE);
    char name[96];
    snprintf(name, sizeof name, "patch_embed dW (accumulated, tok_stride P+%lld)",
             (long long)extra);
    check_grad(name, c.w, dw, c.D * K, EPS_LIN, pe_loss, &c);
    snprintf(name, sizeof name, "patch_embed db (accumulated, tok_stride P+%lld)",
             (long long)extra);
    check_grad(name, c.b, db, c.D, EPS_LIN, pe_loss, &c);
    snprintf(name, sizeof name, "patch_embed dimages (tok_stride P+%lld)", (long long)extra);
    check_grad(name, c.img, dimg, nimg, EPS_LIN, pe_loss, &c);
    free(dimg), free(dw), free(db);
    free(c.img), free(c.w), free(c.b), free(c.out), free(c.R), free(c.cols);
}

/* ---- positional embedding --------------------------------------------------------------- */

typedef struct {
    int64_t M, D, h0, w0;
    double offset;
    int aa;
    float *pos, *out, *R;
} pos_ctx;

static double pos_loss(void *c_) {
    pos_ctx *c = c_;
    if (pos_embed_forward(c->out, c->pos, c->M, c->D, c->h0, c->w0, c->offset, c->aa, NULL, 0))
        return NAN;
    return dot_d(c->out, c->R, (1 + c->h0 * c->w0) * c->D);
}

static void test_pos_embed_grad(rng_t *r, int64_t M, int64_t h0, int64_t w0, double offset,
                                int aa) {
    pos_ctx c = {.M = M, .D = 3, .h0 = h0, .w0 = w0, .offset = offset, .aa = aa};
    const int64_t np = (1 + M * M) * c.D, no = (1 + h0 * w0) * c.D;
    c.pos = fmalloc(np), c.out = fmalloc(no), c.R = fmalloc(no);
    fill(c.pos, np, r, 1, 0), fill(c.R, no, r, 1, 0);
    const size_t wb = pos_embed_workspace_size(M, c.D, h0, w0, offset, aa);
    void *work = malloc(wb);
    float *dpos = fmalloc(np);
    fill_const(dpos, np, PRE);
    const int rc = pos_embed_backward(dpos, c.R, M, c.D, h0, w0, offset, aa, work, wb);
    sub_const(dpos, np, PRE);
    char name[128];
    snprintf(name, sizeof name, "pos_embed dpos (accumulated) M=%lld -> %lldx%lld offset %g %s",
             (long long)M, (long long)h0, (long long)w0, offset, aa ? "antialias" : "bicubic");
    if (rc != DV_OK) tap_ok(0, "%s: backward returned %d", name, rc);
    else check_grad(name, c.pos, dpos, np, EPS_LIN, pos_loss, &c);
    /* caller workspace and internal allocation give identical outputs; constants preserved */
    float *out2 = fmalloc(no);
    pos_embed_forward(out2, c.pos, M, c.D, h0, w0, offset, aa, work, wb);
    pos_loss(&c);
    int same = memcmp(out2, c.out, (size_t)no * sizeof(float)) == 0;
    float *ones = fmalloc(np);
    fill_const(ones, np, 1.0f);
    pos_embed_forward(out2, ones, M, c.D, h0, w0, offset, aa, work, wb);
    double dev = 0.0;
    for (int64_t i = 0; i < no; i++) dev = fmax(dev, fabs(out2[i] - 1.0));
    tap_ok(same && dev <= 1e-6, "pos_embed forward %lldx%lld %s: workspace == malloc, "
           "constant grid preserved (max dev %.3g)", (long long)h0, (long long)w0,
           aa ? "antialias" : "bicubic", dev);
    free(out2), free(ones), free(work), free(dpos), free(c.pos), free(c.out), free(c.R);
}

static void test_pos_embed_misc(void) {
    tap_ok(pos_embed_is_identity(16, 224, 224, 14) && !pos_embed_is_identity(16, 98, 98, 14) &&
               !pos_embed_is_identity(4, 56, 60, 14) && !pos_embed_is_identity(4, 28, 112, 14),
           "pos_embed_is_identity follows the official early return (npatch == N and w == h)");
    float pos[17 * 2] = {0}, out[17 * 2];
    /* offset -0.5 gives floor(4 * 3.5/4) = 3 != 4: the official code asserts, we return an error */
    const int rc = pos_embed_forward(out, pos, 4, 2, 4, 4, -0.5, 0, NULL, 0);
    tap_ok(rc == DV_ERR_ARG, "pos_embed_forward rejects an offset that changes the grid size");
}

/* ---- softmax_exp_f32 accuracy ---------------------------------------------------------- */

static void test_exp(void) {
    /* 2^21 evenly spaced points of [-87.3, 88) (an exhaustive sweep of all floats gives 0.98) */
    double maxulp = 0.0;
    float at = 0.0f;
    const int64_t cnt = (int64_t)1 << 21;
    for (int64_t k = 0; k < cnt; k++) {
        const float x = (float)(-87.3 + (88.0 + 87.3) * (double)k / (double)cnt);
        const double ref = exp((double)x);
        const double ulp = ldexp(1.0, ilogb(ref) - 23);
        const double u = fabs((double)softmax_exp_f32(x) - ref) / ulp;
        if (u > maxulp) maxulp = u, at = x;
    }
    tap_ok(maxulp < 1.0, "softmax_exp_f32: max error %.3f ulp (at %g) over %lld samples", maxulp,
           (double)at, (long long)cnt);
    tap_ok(softmax_exp_f32(-INFINITY) == 0.0f && softmax_exp_f32(-1000.0f) == 0.0f &&
               isnan(softmax_exp_f32(NAN)) && softmax_exp_f32(0.0f) == 1.0f &&
               isfinite(softmax_exp_f32(INFINITY)),
           "softmax_exp_f32 special values: exp(-inf) = 0, exp(0) = 1, NaN stays NaN");
}

/* ---- results do not depend on the thread count ------------------------------------------ */

static void set_threads(int n) {
#ifdef _OPENMP
    omp_set_num_threads(n);
#else
    (void)n;
#endif
}

static void test_thread_determinism(rng_t *r) {
    const int64_t T = 301, C = 70, NH = 5;
    const attention_segment seg[4] = {{0, 120}, {120, 1}, {121, 37}, {158, 143}};
    float *x = fmalloc(T * C), *dy = fmalloc(T * C), *g = fmalloc(C), *mean = fmalloc(T),
          *rstd = fmalloc(T), *y = fmalloc(T * C);
    float *qkv = fmalloc(T * 3 * C), *att = fmalloc(T * C), *lse = fmalloc(T * NH);
    fill(x, T * C, r, 1, 0), fill(dy, T * C, r, 1, 0), fill(g, C, r, 0.5f, 1.0f);
    fill(qkv, T * 3 * C, r, 1, 0);
    const size_t nw = attention_workspace_floats(143, 4);
    float *work = fmalloc((int64_t)nw);
    float *res[2];
    const int64_t nres = 3 * C + T * C + T * 3 * C + 4 * 4 * 4 * 3;
    for (int v = 0; v < 2; v++) {
        set_threads(v == 0 ? 1 : 3);
        float *o = res[v] = fmalloc(nres);
        memset(o, 0, (size_t)nres * sizeof(float));
        layernorm_forward(y, mean, rstd, x, g, g, T, C, 1e-6f);
        layernorm_backward(o + 3 * C, o, o + C, dy, x, mean, rstd, g, T, C, 0);
        linear_bias_backward(o + 2 * C, dy, T, C, C);
        attention_forward(att, lse, qkv, seg, 4, T, C, NH, work, nw);
        attention_backward(o + 3 * C + T * C, dy, qkv, lse, seg, 4, T, C, NH, work, nw);
        pos_embed_backward(o + 3 * C + T * C + T * 3 * C, dy, 4, 3, 9, 7, 0.0, 1, NULL, 0);
    }
    set_threads(2);
    tap_ok(memcmp(res[0], res[1], (size_t)nres * sizeof(float)) == 0,
           "1 and 3 threads give bit-identical layernorm/bias/attention/pos_embed gradients");
    free(res[0]), free(res[1]), free(work);
    free(x), free(dy), free(g), free(mean), free(rstd), free(y), free(qkv), free(att), free(lse);
}

int main(void) {
    rng_t r = {12345};
    tap_plan(62);
    test_linear(&r);
    test_gemm_batched(&r);
    test_layernorm(&r);
    test_activations(&r);
    test_softmax(&r);
    test_attention(&r);
    test_layerscale(&r);
    test_patch_embed(&r, 0);
    test_patch_embed(&r, 2);
    /* official non-reg settings (offset 0.1, a = -0.75) and _reg settings (offset 0, antialias) */
    test_pos_embed_grad(&r, 4, 8, 8, 0.1, 0);
    test_pos_embed_grad(&r, 4, 2, 2, 0.1, 0);
    test_pos_embed_grad(&r, 4, 3, 7, 0.1, 0);
    test_pos_embed_grad(&r, 4, 8, 8, 0.0, 1);
    test_pos_embed_grad(&r, 5, 2, 3, 0.0, 1);
    test_pos_embed_grad(&r, 4, 3, 7, 0.0, 1);
    test_pos_embed_grad(&r, 5, 7, 3, 0.0, 0);
    test_pos_embed_misc();
    test_exp();
    test_thread_determinism(&r);
    return tap_exit();
}
