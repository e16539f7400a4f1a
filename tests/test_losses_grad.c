/* test_losses_grad — finite-difference checks of every loss backward (fused soft-target CE, DINO,
 * iBOT, KoLeo), the fused CE on 131072-wide rows against a naive log_softmax reference, and the
 * reduction hook of centering and Sinkhorn-Knopp (a fake 2-rank hook that doubles every sum must
 * give the result of a doubled batch on one rank, and is called with element counts).
 *
 * Finite differences: loss(p ± eps) in double (the forward is the fp32 code under test), central
 * differences divided by the float-rounded step actually taken; error per gradient tensor
 * max_i |analytic_i − numeric_i| / max_i |numeric_i| <= 1e-2 (fp32 forward noise / eps ≈ 1e-4
 * of the gradient scale, truncation O(eps²) with the 1/τs = 10 curvature); eps = 1e-3.
 * Shapes are small and odd; the CE also runs with K = 1100 (three blocks of the streaming pass).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "centering.h"
#include "dino_loss.h"
#include "err.h"
#include "ibot_loss.h"
#include "koleo.h"
#include "sinkhorn.h"
#include "softmax.h"
#include "tap.h"

#define TOL 1e-2
#define EPS 1e-3f

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
static float *fmalloc(int64_t n) {
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    if (!p) {
        printf("Bail out! out of memory\n");
        exit(99);
    }
    return p;
}
static void fill(float *x, int64_t n, rng_t *r, float scale) {
    for (int64_t i = 0; i < n; i++) x[i] = scale * urand(r);
}
/* rows of random probabilities (softmax of random logits at temperature 0.3) */
static void fill_probs(float *p, int64_t n, int64_t K, rng_t *r) {
    fill(p, n * K, r, 1.0f);
    for (int64_t i = 0; i < n * K; i++) p[i] /= 0.3f;
    softmax_forward(p, p, n, K);
}

typedef double (*loss_fn)(void *ctx);

/* max |ana − num| / max |num| over the entries idx (n of them; idx NULL = 0..n−1). */
static double grad_err(float *p, const float *ana, int64_t n, const int64_t *idx, float eps,
                       loss_fn f, void *ctx) {
    double maxdiff = 0.0, maxnum = 0.0;
    for (int64_t t = 0; t < n; t++) {
        const int64_t i = idx ? idx[t] : t;
        const float v = p[i], vp = v + eps, vm = v - eps;
        p[i] = vp;
        const double lp = f(ctx);
        p[i] = vm;
        const double lm = f(ctx);
        p[i] = v;
        const double num = (lp - lm) / ((double)vp - (double)vm);
        const double diff = fabs((double)ana[i] - num);
        if (!(diff <= maxdiff)) maxdiff = diff;
        if (fabs(num) > maxnum) maxnum = fabs(num);
    }
    return maxdiff / (maxnum > 1e-12 ? maxnum : 1e-12);
}
static void check_grad(const char *name, float *p, const float *ana, int64_t n, const int64_t *idx,
                       loss_fn f, void *ctx) {
    const double e = grad_err(p, ana, n, idx, EPS, f, ctx);
    tap_ok(e <= TOL, "%s: max rel err %.3g (eps %g, tol %g)", name, e, (double)EPS, TOL);
}

/* ---- fused soft-target CE --------------------------------------------------------------- */

typedef struct {
    int64_t n, K, np;
    int n_tgt;
    float *S, *P, *rw;
    double w, temp;
} ce_ctx;

static double ce_loss(void *c_) {
    ce_ctx *c = c_;
    double l = NAN;
    if (softce_fused(&l, NULL, c->S, c->n, c->K, c->P, c->np, c->n_tgt, c->rw, c->w, c->temp,
                     1.0) != DV_OK)
        return NAN;
    return l;
}

static void test_ce(rng_t *r, int64_t K, int n_tgt, int weighted) {
    ce_ctx c = {.n = 5, .K = K, .np = 3, .n_tgt = n_tgt, .w = 0.37, .temp = 0.1};
    c.S = fmalloc(c.n * K), c.P = fmalloc(n_tgt * c.np * K), c.rw = weighted ? fmalloc(c.n) : NULL;
    fill(c.S, c.n * K, r, 1.0f);
    fill_probs(c.P, n_tgt * c.np, K, r);
    if (c.rw)
        for (int64_t i = 0; i < c.n; i++) c.rw[i] = 0.5f + 0.5f * urand(r);
    float *dS = fmalloc(c.n * K);
    const double dscale = 1.7;
    double l = NAN;
    const int rc = softce_fused(&l, dS, c.S, c.n, K, c.P, c.np, n_tgt, c.rw, c.w, c.temp, dscale);
    for (int64_t i = 0; i < c.n * K; i++) dS[i] /= (float)dscale;
    /* at most 400 checked entries, spread over the rows and blocks */
    int64_t idx[400], m = 0;
    const int64_t stride = c.n * K / 400 + 1;
    for (int64_t i = 0; i < c.n * K && m < 400; i += stride) idx[m++] = i;
    char name[128];
    snprintf(name, sizeof name, "softce K=%lld, %d target(s)%s, dscale", (long long)K, n_tgt,
             weighted ? ", row weights" : "");
    tap_ok(rc == DV_OK && isfinite(l), "%s: runs, loss %.6g", name, l);
    check_grad(name, c.S, dS, m, idx, ce_loss, &c);
    free(c.S), free(c.P), free(c.rw), free(dS);
}

/* 131072-wide rows against log_softmax_forward + explicit sums */
static void test_ce_wide(rng_t *r) {
    const int64_t n = 3, K = 131072;
    const double temp = 0.1;
    float *S = fmalloc(n * K), *P = fmalloc(n * K), *x = fmalloc(n * K), *dS = fmalloc(n * K);
    fill(S, n * K, r, 2.0f);
    fill_probs(P, n, K, r);
    double l = NAN;
    const int rc = softce_fused(&l, dS, S, n, K, P, n, 1, NULL, 1.0, temp, 1.0);
    for (int64_t i = 0; i < n * K; i++) x[i] = S[i] / (float)temp;
    log_softmax_forward(x, x, n, K);
    double ref = 0.0, maxe = 0.0, maxg = 0.0;
    for (int64_t rr = 0; rr < n; rr++) {
        double mass = 0.0;
        for (int64_t k = 0; k < K; k++) {
            ref -= (double)P[rr * K + k] * x[rr * K + k];
            mass += P[rr * K + k];
        }
        for (int64_t k = 0; k < K; k++) {
            const double g = (mass * exp((double)x[rr * K + k]) - P[rr * K + k]) / temp;
            maxe = fmax(maxe, fabs(g - dS[rr * K + k]));
            maxg = fmax(maxg, fabs(g));
        }
    }
    tap_diag("K=131072: loss %.9g vs naive %.9g, grad max err %.3g (max |g| %.3g)", l, ref, maxe,
             maxg);
    tap_ok(rc == DV_OK && fabs(l - ref) <= 1e-5 * fabs(ref) && maxe <= 1e-5 * maxg,
           "softce K=131072 matches log_softmax reference (loss 1e-5 rel, grad 1e-5 of max)");
    free(S), free(P), free(x), free(dS);
}

/* ---- DINO --------------------------------------------------------------------------------- */

typedef struct {
    int64_t B, L, K;
    float *sg, *sl, *tp;
} dino_ctx;

static double dino_total(void *c_) {
    dino_ctx *c = c_;
    dv_dino_loss_parts p;
    if (dino_loss_forward_backward(&p, NULL, NULL, c->sg, c->sl, c->tp, c->B, c->L, c->K, 0.1,
                                   1.0) != DV_OK)
        return NAN;
    return p.local + p.global;
}

static void test_dino(rng_t *r, int64_t L) {
    dino_ctx c = {.B = 3, .L = L, .K = 23};
    const int64_t B = c.B, K = c.K;
    c.sg = fmalloc(2 * B * K), c.sl = L ? fmalloc(L * B * K) : NULL, c.tp = fmalloc(2 * B * K);
    fill(c.sg, 2 * B * K, r, 1.0f);
    if (L) fill(c.sl, L * B * K, r, 1.0f);
    fill_probs(c.tp, 2 * B, K, r);
    float *dg = fmalloc(2 * B * K), *dl = L ? fmalloc(L * B * K) : NULL;
    dv_dino_loss_parts p;
    const int rc = dino_loss_forward_backward(&p, dg, dl, c.sg, c.sl, c.tp, B, L, K, 0.1, 1.0);
    tap_ok(rc == DV_OK && dino_loss_num_terms(L) == 2 + (2 * L > 1 ? 2 * L : 1),
           "dino L=%lld: runs (local %.5g, global %.5g, Z %lld)", (long long)L, p.local, p.global,
           (long long)dino_loss_num_terms(L));
    char name[64];
    snprintf(name, sizeof name, "dino L=%lld d/d student_global", (long long)L);
    check_grad(name, c.sg, dg, 2 * B * K, NULL, dino_total, &c);
    if (L) {
        snprintf(name, sizeof name, "dino L=%lld d/d student_local", (long long)L);
        check_grad(name, c.sl, dl, L * B * K, NULL, dino_total, &c);
    }
    free(c.sg), free(c.sl), free(c.tp), free(dg), free(dl);
}

/* ---- iBOT --------------------------------------------------------------------------------- */

typedef struct {
    int64_t n, n_crops, K;
    float *S, *P, *w;
} ibot_ctx;

static double ibot_l(void *c_) {
    ibot_ctx *c = c_;
    double l = NAN;
    if (ibot_loss_forward_backward(&l, NULL, c->S, c->P, c->w, c->n, c->n_crops, c->K, 0.1, 1.0) !=
        DV_OK)
        return NAN;
    return l;
}

static void test_ibot(rng_t *r) {
    /* masks of 4 crops × 6 tokens: counts 3, 0, 1, 3 → 7 masked tokens */
    const uint8_t masks[24] = {1, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0,
                               0, 0, 0, 1, 0, 0, 1, 1, 0, 1, 0, 0};
    ibot_ctx c = {.n = 7, .n_crops = 4, .K = 19};
    c.S = fmalloc(c.n * c.K), c.P = fmalloc(c.n * c.K), c.w = fmalloc(24);
    int64_t nm = 0;
    int rc = ibot_masks_weight(c.w, masks, 4, 6, &nm);
    tap_ok(rc == DV_OK && nm == 7 && c.w[0] == 1.0f / 3 && c.w[3] == 1.0f && c.w[6] == 1.0f / 3,
           "ibot_masks_weight: 1/count per masked token in flat order");
    fill(c.S, c.n * c.K, r, 1.0f);
    fill_probs(c.P, c.n, c.K, r);
    float *dS = fmalloc(c.n * c.K);
    double l;
    rc = ibot_loss_forward_backward(&l, dS, c.S, c.P, c.w, c.n, c.n_crops, c.K, 0.1, 1.0);
    tap_ok(rc == DV_OK, "ibot: runs (loss %.5g)", l);
    check_grad("ibot d/d student", c.S, dS, c.n * c.K, NULL, ibot_l, &c);
    free(c.S), free(c.P), free(c.w), free(dS);
}

/* ---- KoLeo -------------------------------------------------------------------------------- */

typedef struct {
    int64_t n, D;
    int ssl;
    float *x;
} koleo_ctx;

static double koleo_l(void *c_) {
    koleo_ctx *c = c_;
    double l = NAN;
    const int rc = c->ssl ? koleo_ssl_forward_backward(&l, NULL, c->x, c->n, c->D, 0.1, 1.0)
                          : koleo_forward_backward(&l, NULL, NULL, c->x, c->n, c->D, 1.0);
    return rc == DV_OK ? l : NAN;
}

static void test_koleo(rng_t *r) {
    for (int ssl = 0; ssl < 2; ssl++) {
        koleo_ctx c = {.n = ssl ? 10 : 6, .D = 5, .ssl = ssl};
        c.x = fmalloc(c.n * c.D);
        fill(c.x, c.n * c.D, r, 2.0f);
        float *dx = fmalloc(c.n * c.D);
        double l;
        const int rc = ssl ? koleo_ssl_forward_backward(&l, dx, c.x, c.n, c.D, 0.1, 1.0)
                           : koleo_forward_backward(&l, dx, NULL, c.x, c.n, c.D, 1.0);
        tap_ok(rc == DV_OK, "koleo%s: runs (loss %.5g)", ssl ? " meta-arch form" : "", l);
        check_grad(ssl ? "koleo meta-arch d/dx" : "koleo d/dx", c.x, dx, c.n * c.D, NULL, koleo_l,
                   &c);
        free(c.x), free(dx);
    }
    /* duplicate rows: finite loss −log(1e-8·(√D+1)), zero-distance rows get no gradient */
    float x[3 * 4] = {1, 2, 3, 4, 1, 2, 3, 4, -1, 0, 2, 0};
    float dx[12];
    double l;
    const int rc = koleo_forward_backward(&l, dx, NULL, x, 3, 4, 1.0);
    int finite = 1;
    for (int i = 0; i < 12; i++) finite &= isfinite(dx[i]);
    tap_ok(rc == DV_OK && isfinite(l) && finite, "koleo with duplicate rows is finite (%.5g)", l);
}

/* ---- reduction hook: fake 2 ranks --------------------------------------------------------- */

typedef struct {
    int calls;
    int64_t counts[64];
    double factor;
} fake_comm;

static int fake_sum(void *ctx, double *buf, int64_t count) {
    fake_comm *c = ctx;
    if (c->calls < 64) c->counts[c->calls] = count;
    c->calls++;
    for (int64_t i = 0; i < count; i++) buf[i] *= c->factor;
    return DV_OK;
}
static int fake_max(void *ctx, double *buf, int64_t count) { /* both ranks hold the same data */
    (void)ctx, (void)buf, (void)count;
    return DV_OK;
}

static double max_abs_diff(const float *a, const float *b, int64_t n) {
    double m = 0.0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - b[i]));
    return m;
}

static void test_hooks(rng_t *r) {
    const int64_t n = 5, K = 300;
    float *h = fmalloc(n * K), *h2 = fmalloc(2 * n * K), *P = fmalloc(n * K),
          *P2 = fmalloc(2 * n * K);
    fill(h, n * K, r, 0.2f);
    memcpy(h2, h, (size_t)(n * K) * sizeof *h);
    memcpy(h2 + n * K, h, (size_t)(n * K) * sizeof *h);
    fake_comm fc = {.factor = 2.0};

    for (int safe = 0; safe < 2; safe++) {
        /* DINO Sinkhorn: 2 ranks × n rows == 1 rank × 2n rows */
        dv_sinkhorn_opts o2 = sinkhorn_default_opts(2, fake_sum, &fc),
                         o1 = sinkhorn_default_opts(1, NULL, NULL);
        o2.safe = o1.safe = safe;
        o2.reduce_max = fake_max;
        fc.calls = 0;
        int rc = sinkhorn_knopp_dino(P, h, n, K, 0.04, &o2);
        const int calls = fc.calls;
        const int64_t c0 = fc.counts[0], c1 = fc.counts[1];
        rc |= sinkhorn_knopp_dino(P2, h2, 2 * n, K, 0.04, &o1);
        double e = max_abs_diff(P, P2, n * K);
        tap_ok(rc == DV_OK && e <= 1e-6 && calls == 4 && c0 == 1 && c1 == K,
               "sinkhorn dino%s with a doubling 2-rank hook == doubled batch (err %.2g; %d sum "
               "calls, counts %lld then %lld)",
               safe ? " (safe)" : "", e, calls, (long long)c0, (long long)c1);
        /* iBOT Sinkhorn: B_tot = all-reduced masked count */
        fc.calls = 0;
        rc = sinkhorn_knopp_ibot(P, h, n, K, 0.04, &o2);
        const int calls_i = fc.calls;
        rc |= sinkhorn_knopp_ibot(P2, h2, 2 * n, K, 0.04, &o1);
        e = max_abs_diff(P, P2, n * K);
        tap_ok(rc == DV_OK && e <= 1e-6 && calls_i == 5 && fc.counts[0] == 1,
               "sinkhorn ibot%s with a doubling 2-rank hook == doubled batch (err %.2g)",
               safe ? " (safe)" : "", e);
    }
    {
        dv_sinkhorn_opts o = sinkhorn_default_opts(2, fake_sum, &fc);
        o.safe = 1;
        tap_ok(sinkhorn_knopp_dino(P, h, n, K, 0.04, &o) == DV_ERR_ARG,
               "sinkhorn safe mode on 2 ranks without reduce_max is refused");
    }
    /* safe mode equals the official form when prototypes are shifted but nothing overflows */
    {
        float *hb = fmalloc(n * K);
        for (int64_t i = 0; i < n * K; i++) hb[i] = 10.0f * h[i] + 1.3f; /* h/τ in [-17.5, 82.5] */
        dv_sinkhorn_opts o = sinkhorn_default_opts(1, NULL, NULL);
        int rc = sinkhorn_knopp_dino(P, hb, n, K, 0.04, &o);
        o.safe = 1;
        rc |= sinkhorn_knopp_dino(P2, hb, n, K, 0.04, &o);
        /* absolute error against the largest target: entries near 1e-30 lose relative precision
         * in the official form itself (its intermediate Q / ΣQ / K / B_tot nears denormals) */
        double e = 0.0, pmax = 0.0;
        for (int64_t i = 0; i < n * K; i++) {
            e = fmax(e, fabs((double)P[i] - P2[i]));
            pmax = fmax(pmax, fabs((double)P[i]));
        }
        tap_ok(rc == DV_OK && e <= 1e-5 * pmax,
               "sinkhorn safe mode (shifted prototypes) == official form (max err %.2g, max %.2g)",
               e, pmax);
        free(hb);
    }
    /* DINO centre: Σ rows over 2 ranks / (rows·W) == 1 rank with the doubled batch */
    {
        dv_center a, b;
        int rc = center_init(&a, K) | center_init(&b, K);
        fc.calls = 0;
        rc |= center_update(&a, h, n, DV_CENTER_ROW_SUM, 2, fake_sum, &fc);
        const int calls = fc.calls;
        const int64_t cnt = fc.counts[0];
        rc |= center_update(&b, h2, 2 * n, DV_CENTER_ROW_SUM, 1, NULL, NULL);
        rc |= center_apply_pending(&a) | center_apply_pending(&b);
        double e = max_abs_diff(a.center, b.center, K);
        tap_ok(rc == DV_OK && e <= 1e-7 && calls == 1 && cnt == K,
               "dino centre with a doubling 2-rank hook == doubled batch (err %.2g, count %lld)", e,
               (long long)cnt);
        /* iBOT centre: Σ_ranks mean / W == mean of the doubled batch */
        rc = center_update(&a, h, n, DV_CENTER_ROW_MEAN, 2, fake_sum, &fc);
        rc |= center_update(&b, h2, 2 * n, DV_CENTER_ROW_MEAN, 1, NULL, NULL);
        rc |= center_apply_pending(&a) | center_apply_pending(&b);
        e = max_abs_diff(a.center, b.center, K);
        tap_ok(rc == DV_OK && e <= 1e-7, "ibot centre with a doubling 2-rank hook (err %.2g)", e);
        /* one-step-late: the centre used at step t excludes step t's batch */
        float *Pa = fmalloc(n * K), *Pb = fmalloc(n * K);
        const float c_before = a.center[0];
        rc = center_update(&a, h, n, DV_CENTER_ROW_SUM, 1, NULL, NULL);
        const int unchanged = a.center[0] == c_before && a.has_pending;
        rc |= center_softmax_teacher(Pa, &a, h, n, 0.07);
        const int applied = !a.has_pending && a.center[0] != c_before;
        tap_ok(rc == DV_OK && unchanged && applied,
               "centre update is applied lazily at the next center_softmax_teacher");
        free(Pa), free(Pb);
        center_free(&a), center_free(&b);
    }
    free(h), free(h2), free(P), free(P2);
}

int main(void) {
    rng_t r = {12345};
    tap_no_plan();
    test_ce(&r, 37, 1, 0);
    test_ce(&r, 37, 2, 1);
    test_ce(&r, 1100, 2, 1);
    test_ce_wide(&r);
    test_dino(&r, 2);
    test_dino(&r, 0);
    test_ibot(&r);
    test_koleo(&r);
    test_hooks(&r);
    return tap_exit();
}
