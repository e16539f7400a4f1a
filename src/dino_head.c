/* dino_head — see dino_head.h. */
#include "dino_head.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "err.h"
#include "rng.h"

#define HEAD_NORM_EPS 1e-12 /* F.normalize eps for fp32 inputs */

static int64_t layer_out_(const dv_head_config *c, int i) {
    return i == c->nlayers - 1 ? c->bottleneck_dim : c->hidden_dim;
}
static int64_t layer_in_(const dv_head_config *c, int i) { return i == 0 ? c->in_dim : c->hidden_dim; }

int dv_head_init(dv_head *h, const dv_head_config *cfg) {
    memset(h, 0, sizeof *h);
    h->be = dv_backend_cpu();
    if (cfg->nlayers < 1 || cfg->nlayers > DV_HEAD_MAX_LAYERS || cfg->in_dim < 1 ||
        cfg->out_dim < 1 || cfg->bottleneck_dim < 1 || (cfg->nlayers > 1 && cfg->hidden_dim < 1))
        return DV_ERR(DV_ERR_ARG, "bad DINO head shape: in %lld, K %lld, layers %lld, hidden %lld, "
                      "bottleneck %lld", (long long)cfg->in_dim, (long long)cfg->out_dim,
                      (long long)cfg->nlayers, (long long)cfg->hidden_dim,
                      (long long)cfg->bottleneck_dim);
    h->cfg = *cfg;
    dv_params_init(&h->params, 0);
    int rc = DV_OK;
    for (int i = 0; i < DV_HEAD_MAX_LAYERS; i++) h->w_idx[i] = h->b_idx[i] = -1;
    for (int i = 0; i < cfg->nlayers && rc == DV_OK; i++) {
        char name[64];
        int64_t wshape[2] = {layer_out_(cfg, i), layer_in_(cfg, i)};
        snprintf(name, sizeof name, "mlp.%d.weight", 2 * i);
        rc = dv_params_add(&h->params, name, 2, wshape, -1, 0, &h->w_idx[i]);
        if (rc == DV_OK && cfg->mlp_bias) {
            snprintf(name, sizeof name, "mlp.%d.bias", 2 * i);
            rc = dv_params_add(&h->params, name, 1, wshape, -1, 0, &h->b_idx[i]);
        }
    }
    int64_t gshape[2] = {cfg->out_dim, 1}, vshape[2] = {cfg->out_dim, cfg->bottleneck_dim};
    if (rc == DV_OK) rc = dv_params_add(&h->params, "last_layer.weight_g", 2, gshape, -1, 0, &h->g_idx);
    if (rc == DV_OK) rc = dv_params_add(&h->params, "last_layer.weight_v", 2, vshape, -1, 0, &h->v_idx);
    if (rc != DV_OK) dv_params_free(&h->params);
    return rc;
}

void dv_head_free(dv_head *h) { dv_params_free(&h->params); }

int dv_head_init_weights(const dv_head *h, float *w, uint64_t seed, uint32_t purpose) {
    for (int i = 0; i < h->params.n; i++) {
        const dv_param *p = &h->params.t[i];
        float *x = w + p->offset;
        dv_rng r;
        dv_rng_init(&r, seed, purpose + (uint32_t)i, 0, 0);
        if (i == h->g_idx) {
            for (size_t k = 0; k < p->numel; k++) x[k] = 1.0f;
        } else if (strstr(p->name, ".bias")) {
            memset(x, 0, p->numel * sizeof *x);
        } else { /* mlp weights and last_layer.weight_v: trunc_normal(std 0.02, a=-2, b=2) */
            for (size_t k = 0; k < p->numel; k++) x[k] = dv_rng_trunc_normal(&r, 0.02, -2.0, 2.0);
        }
    }
    return DV_OK;
}

void dv_head_acts_free(dv_head_acts *a) {
    for (int i = 0; i < DV_HEAD_MAX_LAYERS; i++) {
        free(a->pre[i]);
        free(a->post[i]);
    }
    free(a->z);
    free(a->hnorm);
    free(a->W);
    free(a->vnorm);
    free(a->dW);
    free(a->tmp_a);
    free(a->tmp_b);
    memset(a, 0, sizeof *a);
}

int dv_head_acts_create(const dv_head *h, int64_t max_rows, dv_head_acts *a) {
    const dv_head_config *c = &h->cfg;
    memset(a, 0, sizeof *a);
    a->max_rows = max_rows;
    const size_t n = (size_t)(max_rows > 0 ? max_rows : 1);
    const size_t wide = (size_t)(c->hidden_dim > c->bottleneck_dim ? c->hidden_dim : c->bottleneck_dim);
    int ok = 1;
    for (int i = 0; i < c->nlayers; i++) {
        ok &= (a->pre[i] = malloc(n * (size_t)layer_out_(c, i) * sizeof(float))) != NULL;
        if (i < c->nlayers - 1) ok &= (a->post[i] = malloc(n * (size_t)c->hidden_dim * sizeof(float))) != NULL;
    }
    ok &= (a->z = malloc(n * (size_t)c->bottleneck_dim * sizeof(float))) != NULL;
    ok &= (a->hnorm = malloc(n * sizeof(float))) != NULL;
    ok &= (a->W = malloc((size_t)c->out_dim * (size_t)c->bottleneck_dim * sizeof(float))) != NULL;
    ok &= (a->vnorm = malloc((size_t)c->out_dim * sizeof(float))) != NULL;
    ok &= (a->dW = malloc((size_t)c->out_dim * (size_t)c->bottleneck_dim * sizeof(float))) != NULL;
    ok &= (a->tmp_a = malloc(n * wide * sizeof(float))) != NULL;
    ok &= (a->tmp_b = malloc(n * wide * sizeof(float))) != NULL;
    if (!ok) {
        dv_head_acts_free(a);
        return DV_ERR(DV_ERR_NOMEM, "out of memory for DINO head activations (%lld rows)",
                      (long long)max_rows);
    }
    return DV_OK;
}

static const float *param_(const dv_head *h, const float *w, int idx) {
    return idx < 0 ? NULL : w + h->params.t[idx].offset;
}
static float *grad_(const dv_head *h, float *g, int idx) {
    return idx < 0 ? NULL : g + h->params.t[idx].offset;
}
/* The head's compute backend (NULL: the CPU). */
static const dv_backend *be_(const dv_head *h) { return h->be ? h->be : dv_backend_cpu(); }

int dv_head_forward(const dv_head *h, const float *w, dv_head_acts *a, const float *x, int64_t n,
                    float *y) {
    const dv_head_config *c = &h->cfg;
    const dv_backend *be = be_(h);
    if (n > a->max_rows) return DV_ERR(DV_ERR_ARG, "DINO head: %lld rows > %lld allocated",
                                       (long long)n, (long long)a->max_rows);
    a->x = x;
    const float *in = x;
    for (int i = 0; i < c->nlayers; i++) {
        DV_TRY(be->linear_forward(be->ctx, a->pre[i], in, param_(h, w, h->w_idx[i]),
                                  param_(h, w, h->b_idx[i]), n, layer_in_(c, i),
                                  layer_out_(c, i)));
        if (i < c->nlayers - 1) {
            DV_TRY(be->gelu_forward(be->ctx, a->post[i], a->pre[i], n * c->hidden_dim));
            in = a->post[i];
        }
    }
    const int64_t BN = c->bottleneck_dim, K = c->out_dim;
    const float *hb = a->pre[c->nlayers - 1];
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < n; r++) {
        double s = 0;
        for (int64_t j = 0; j < BN; j++) s += (double)hb[r * BN + j] * hb[r * BN + j];
        double nrm = sqrt(s);
        if (nrm < HEAD_NORM_EPS) nrm = HEAD_NORM_EPS;
        a->hnorm[r] = (float)nrm;
        for (int64_t j = 0; j < BN; j++) a->z[r * BN + j] = (float)(hb[r * BN + j] / nrm);
    }
    /* weight_norm(dim=0): W_k = g_k · v_k / ||v_k|| */
    const float *g = param_(h, w, h->g_idx), *v = param_(h, w, h->v_idx);
#pragma omp parallel for schedule(static)
    for (int64_t k = 0; k < K; k++) {
        double s = 0;
        for (int64_t j = 0; j < BN; j++) s += (double)v[k * BN + j] * v[k * BN + j];
        double nv = sqrt(s);
        a->vnorm[k] = (float)nv;
        double scale = g[k] / nv;
        for (int64_t j = 0; j < BN; j++) a->W[k * BN + j] = (float)(v[k * BN + j] * scale);
    }
    return be->linear_forward(be->ctx, y, a->z, a->W, NULL, n, BN, K);
}

int dv_head_backward(const dv_head *h, const float *w, float *grad, dv_head_acts *a,
                     const float *dy, int64_t n, float *dx) {
    const dv_head_config *c = &h->cfg;
    const dv_backend *be = be_(h);
    const int64_t BN = c->bottleneck_dim, K = c->out_dim;
    if (n > a->max_rows || !a->x) return DV_ERR(DV_ERR_ARG, "DINO head backward without forward");
    /* last layer: dz = dy · W, dW = dyᵀ · z, then through the weight norm into g and v */
    float *dz = a->tmp_a;
    memset(a->dW, 0, (size_t)K * (size_t)BN * sizeof *a->dW);
    DV_TRY(be->linear_backward(be->ctx, dz, a->dW, NULL, dy, a->z, a->W, n, BN, K, 0));
    const float *g = param_(h, w, h->g_idx), *v = param_(h, w, h->v_idx);
    float *dg = grad_(h, grad, h->g_idx), *dv = grad_(h, grad, h->v_idx);
#pragma omp parallel for schedule(static)
    for (int64_t k = 0; k < K; k++) {
        const double nv = a->vnorm[k];
        double dot = 0; /* dW_k · v̂_k */
        for (int64_t j = 0; j < BN; j++) dot += (double)a->dW[k * BN + j] * v[k * BN + j];
        dot /= nv;
        dg[k] += (float)dot;
        const double s = g[k] / nv;
        for (int64_t j = 0; j < BN; j++)
            dv[k * BN + j] += (float)(s * (a->dW[k * BN + j] - dot * v[k * BN + j] / nv));
    }
    /* normalisation: z = h / max(||h||, eps); dh = (dz - z (z·dz)) / ||h|| (or dz/eps when clamped) */
    float *dh = a->tmp_b;
    const float *hb = a->pre[c->nlayers - 1];
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < n; r++) {
        const double nrm = a->hnorm[r];
        double raw = 0;
        for (int64_t j = 0; j < BN; j++) raw += (double)hb[r * BN + j] * hb[r * BN + j];
        raw = sqrt(raw);
        if (raw < HEAD_NORM_EPS) { /* the max picked eps: a constant denominator */
            for (int64_t j = 0; j < BN; j++) dh[r * BN + j] = (float)(dz[r * BN + j] / nrm);
            continue;
        }
        double dot = 0;
        for (int64_t j = 0; j < BN; j++) dot += (double)a->z[r * BN + j] * dz[r * BN + j];
        for (int64_t j = 0; j < BN; j++)
            dh[r * BN + j] = (float)((dz[r * BN + j] - a->z[r * BN + j] * dot) / nrm);
    }
    /* MLP, last layer first; d holds the gradient of the current layer's output */
    float *d = dh, *spare = a->tmp_a;
    for (int i = (int)c->nlayers - 1; i >= 0; i--) {
        const float *in = i == 0 ? a->x : a->post[i - 1];
        float *din = i == 0 ? dx : spare;
        DV_TRY(be->linear_backward(be->ctx, din, grad_(h, grad, h->w_idx[i]),
                                   grad_(h, grad, h->b_idx[i]), d, in, param_(h, w, h->w_idx[i]),
                                   n, layer_in_(c, i), layer_out_(c, i), 0));
        if (i > 0) {
            DV_TRY(be->gelu_backward(be->ctx, spare, spare, a->pre[i - 1], n * c->hidden_dim));
            float *t = d;
            d = spare;
            spare = t;
        }
    }
    return DV_OK;
}

double dv_head_forward_flops(const dv_head *h, int64_t n) {
    const dv_head_config *c = &h->cfg;
    double f = 0;
    for (int i = 0; i < c->nlayers; i++) f += 2.0 * n * layer_in_(c, i) * layer_out_(c, i);
    return f + 2.0 * n * c->bottleneck_dim * c->out_dim;
}
