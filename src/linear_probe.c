/* linear_probe — see linear_probe.h. */
#include "linear_probe.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "gemm.h"
#include "rng.h"

static const double k_official_lrs[13] = {1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3,
                                          2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1};

const double *dv_lin_official_lrs(int *n) {
    *n = 13;
    return k_official_lrs;
}

void dv_lin_opts_default(dv_lin_opts *o) {
    memset(o, 0, sizeof *o);
    o->lrs = NULL;
    o->nlr = 0;
    o->batch = 128;
    o->iterations = 1250;
    o->momentum = 0.9;
    o->weight_decay = 0.0;
    o->val_fraction = 0.1;
    o->seed = 0;
    o->retrain = 1;
    o->eval_chunk = 0;
}

int64_t dv_lin_dim(const dv_lin_data *d, dv_lin_variant v) {
    if (v.n_blocks < 1)
        return 0;
    int64_t F = 0;
    if (v.n_blocks == 1)
        F = d->dim;
    else if (d->cls_last && v.n_blocks <= d->nlast)
        F = (int64_t)v.n_blocks * d->dim;
    else
        return 0;
    if (v.avgpool) {
        if (!d->avgpool)
            return 0;
        F += d->dim;
    }
    return F;
}

void dv_lin_gather(float *dst, const dv_lin_data *d, dv_lin_variant v, const int64_t *rows,
                   int64_t m) {
    const int64_t D = d->dim, F = dv_lin_dim(d, v);
    for (int64_t i = 0; i < m; i++) {
        const int64_t r = rows[i];
        float *o = dst + i * F;
        if (v.n_blocks == 1) {
            memcpy(o, d->cls + r * D, (size_t)D * sizeof(float));
            o += D;
        } else {
            const int64_t nb = v.n_blocks;
            memcpy(o, d->cls_last + (r * d->nlast + (d->nlast - nb)) * D,
                   (size_t)(nb * D) * sizeof(float));
            o += nb * D;
        }
        if (v.avgpool)
            memcpy(o, d->avgpool + r * D, (size_t)D * sizeof(float));
    }
}

/* ---- training ----------------------------------------------------------------------------- */

typedef struct {
    const int64_t *rows;
    int64_t n;
    uint64_t seed;
    int64_t epoch;
    int64_t *perm;
} sampler_;

/* Rows of batch t: positions [tB, (t+1)B) of the concatenated epoch permutations. */
static void batch_rows_(sampler_ *s, int64_t t, int64_t B, int64_t *out) {
    for (int64_t i = 0; i < B; i++) {
        const int64_t pos = t * B + i, e = pos / s->n, k = pos % s->n;
        if (e != s->epoch) {
            dv_rng r;
            dv_rng_init(&r, s->seed, DV_RNG_EVAL + 1, (uint64_t)e, 0);
            dv_rng_permutation(&r, s->perm, s->n);
            s->epoch = e;
        }
        out[i] = s->rows[s->perm[k]];
    }
}

int dv_lin_train(const dv_lin_data *d, const int64_t *rows, int64_t nrows, int64_t C,
                 dv_lin_variant v, const double *lr_scaled, const int *head_ids, int H,
                 const dv_lin_opts *o, float *W, float *b, double *loss) {
    const int64_t F = dv_lin_dim(d, v), B = o->batch, T = o->iterations, HC = (int64_t)H * C;
    if (F < 1 || H < 1 || C < 1 || nrows < 1 || B < 1 || T < 1)
        return DV_ERR(DV_ERR_ARG, "linear: bad training setup (F %lld, H %d, C %lld, rows %lld)",
                      (long long)F, H, (long long)C, (long long)nrows);
    for (int64_t i = 0; i < nrows; i++) {
        const int32_t y = d->labels[rows[i]];
        if (y < 0 || y >= C)
            return DV_ERR(DV_ERR_ARG, "linear: label %d of row %lld outside [0, %lld)", y,
                          (long long)rows[i], (long long)C);
    }
    /* official init: weight N(0, 0.01), bias 0 */
    for (int h = 0; h < H; h++) {
        dv_rng r;
        dv_rng_init(&r, o->seed, DV_RNG_EVAL + 2, (uint64_t)head_ids[h], 0);
        float *w = W + (int64_t)h * C * F;
        for (int64_t i = 0; i < C * F; i++)
            w[i] = (float)(0.01 * dv_rng_normal(&r));
    }
    memset(b, 0, (size_t)HC * sizeof *b);
    float *mW = calloc((size_t)(HC * F), sizeof *mW), *mb = calloc((size_t)HC, sizeof *mb);
    float *X = malloc((size_t)(B * F) * sizeof *X), *Z = malloc((size_t)(B * HC) * sizeof *Z);
    float *gW = malloc((size_t)(HC * F) * sizeof *gW), *gb = malloc((size_t)HC * sizeof *gb);
    double *lossrow = calloc((size_t)(B * H), sizeof *lossrow);
    double *lacc = calloc((size_t)H, sizeof *lacc);
    int64_t *brow = malloc((size_t)B * sizeof *brow), *perm = malloc((size_t)nrows * sizeof *perm);
    int status = DV_OK;
    if (!mW || !mb || !X || !Z || !gW || !gb || !lossrow || !lacc || !brow || !perm) {
        status = DV_ERR(DV_ERR_NOMEM, "out of memory (linear heads: %d x %lld x %lld)", H,
                        (long long)C, (long long)F);
        goto out;
    }
    sampler_ smp = {.rows = rows, .n = nrows, .seed = o->seed, .epoch = -1, .perm = perm};
    const int64_t tail = T / 10 > 0 ? T / 10 : 1;
    const float mu = (float)o->momentum, wd = (float)o->weight_decay;
    const double pi = 3.14159265358979323846;
    for (int64_t t = 0; t < T; t++) {
        batch_rows_(&smp, t, B, brow);
        dv_lin_gather(X, d, v, brow, B);
        /* one GEMM per head: a head's numbers do not depend on the other heads of the bank */
        for (int h = 0; h < H; h++)
            gemm_f32(0, 1, B, C, F, 1.0f, X, F, W + (int64_t)h * C * F, F, 0.0f, Z + (int64_t)h * C,
                     HC);
            /* softmax cross-entropy per (row, head): G = (softmax - onehot) / B, in place in Z */
#pragma omp parallel for schedule(static) if (B * HC >= 32768)
        for (int64_t i = 0; i < B; i++) {
            const int32_t y = d->labels[brow[i]];
            for (int h = 0; h < H; h++) {
                float *z = Z + i * HC + (int64_t)h * C;
                const float *bb = b + (int64_t)h * C;
                float mx = -INFINITY;
                for (int64_t c = 0; c < C; c++) {
                    z[c] += bb[c];
                    if (z[c] > mx)
                        mx = z[c];
                }
                double s = 0.0;
                for (int64_t c = 0; c < C; c++)
                    s += exp((double)z[c] - mx);
                lossrow[i * H + h] = log(s) + mx - z[y];
                const double inv = 1.0 / (s * (double)B);
                for (int64_t c = 0; c < C; c++)
                    z[c] = (float)(exp((double)z[c] - mx) * inv);
                z[y] -= (float)(1.0 / (double)B);
            }
        }
        for (int h = 0; h < H; h++)
            gemm_f32(1, 0, C, F, B, 1.0f, Z + (int64_t)h * C, HC, X, F, 0.0f,
                     gW + (int64_t)h * C * F, F);
        for (int64_t j = 0; j < HC; j++) {
            double s = 0.0;
            for (int64_t i = 0; i < B; i++)
                s += Z[i * HC + j];
            gb[j] = (float)s;
        }
        const double f = 0.5 * (1.0 + cos(pi * (double)t / (double)T));
        /* SGD with momentum (PyTorch: buf = mu buf + g; p -= lr buf) */
#pragma omp parallel for schedule(static) if (HC * F >= 32768)
        for (int64_t j = 0; j < HC; j++) {
            const float lr = (float)(lr_scaled[j / C] * f);
            float *w = W + j * F, *m = mW + j * F;
            const float *g = gW + j * F;
            for (int64_t k = 0; k < F; k++) {
                const float gk = g[k] + wd * w[k];
                m[k] = mu * m[k] + gk;
                w[k] -= lr * m[k];
            }
            const float gbj = gb[j] + wd * b[j];
            mb[j] = mu * mb[j] + gbj;
            b[j] -= lr * mb[j];
        }
        if (t >= T - tail)
            for (int h = 0; h < H; h++) {
                double s = 0.0;
                for (int64_t i = 0; i < B; i++)
                    s += lossrow[i * H + h];
                lacc[h] += s / (double)B;
            }
    }
    if (loss)
        for (int h = 0; h < H; h++)
            loss[h] = lacc[h] / (double)tail;
out:
    free(mW);
    free(mb);
    free(X);
    free(Z);
    free(gW);
    free(gb);
    free(lossrow);
    free(lacc);
    free(brow);
    free(perm);
    return status;
}

int dv_lin_eval(const dv_lin_data *d, const int64_t *rows, int64_t nrows, int64_t C,
                dv_lin_variant v, const float *W, const float *b, int H, const dv_lin_opts *o,
                int64_t *correct1, int64_t *correct5, int64_t *class_n, int64_t *class_correct1) {
    const int64_t F = dv_lin_dim(d, v), HC = (int64_t)H * C;
    const int64_t chunk = o->eval_chunk > 0 ? o->eval_chunk : 1024;
    memset(correct1, 0, (size_t)H * sizeof *correct1);
    memset(correct5, 0, (size_t)H * sizeof *correct5);
    if (class_n)
        memset(class_n, 0, (size_t)C * sizeof *class_n);
    if (class_correct1)
        memset(class_correct1, 0, (size_t)HC * sizeof *class_correct1);
    if (nrows == 0)
        return DV_OK;
    const int64_t m0 = chunk < nrows ? chunk : nrows;
    float *X = malloc((size_t)(m0 * F) * sizeof *X), *Z = malloc((size_t)(m0 * HC) * sizeof *Z);
    int64_t *rank = malloc((size_t)(m0 * H) * sizeof *rank);
    if (!X || !Z || !rank) {
        free(X);
        free(Z);
        free(rank);
        return DV_ERR(DV_ERR_NOMEM, "out of memory (linear evaluation)");
    }
    for (int64_t r0 = 0; r0 < nrows; r0 += chunk) {
        const int64_t m = nrows - r0 < chunk ? nrows - r0 : chunk;
        dv_lin_gather(X, d, v, rows + r0, m);
        for (int h = 0; h < H; h++)
            gemm_f32(0, 1, m, C, F, 1.0f, X, F, W + (int64_t)h * C * F, F, 0.0f, Z + (int64_t)h * C,
                     HC);
#pragma omp parallel for schedule(static) if (m * HC >= 32768)
        for (int64_t i = 0; i < m; i++) {
            const int32_t y = d->labels[rows[r0 + i]];
            for (int h = 0; h < H; h++) {
                const float *z = Z + i * HC + (int64_t)h * C, *bb = b + (int64_t)h * C;
                int64_t rk = 0;
                if (y < 0 || y >= C) {
                    rk = C; /* a class no head was trained on: never right */
                } else {
                    const float zy = z[y] + bb[y];
                    for (int64_t c = 0; c < C; c++) {
                        const float zc = z[c] + bb[c];
                        if (zc > zy || (zc == zy && c < y))
                            rk++;
                    }
                }
                rank[i * H + h] = rk;
            }
        }
        for (int64_t i = 0; i < m; i++) {
            const int32_t y = d->labels[rows[r0 + i]];
            if (class_n && y >= 0 && y < C)
                class_n[y]++;
            for (int h = 0; h < H; h++) {
                const int64_t rk = rank[i * H + h];
                if (rk == 0) {
                    correct1[h]++;
                    if (class_correct1)
                        class_correct1[(int64_t)h * C + y]++;
                }
                if (rk < 5)
                    correct5[h]++;
            }
        }
    }
    free(X);
    free(Z);
    free(rank);
    return DV_OK;
}

/* ---- the protocol ------------------------------------------------------------------------- */

void dv_lin_result_free(dv_lin_result *r) {
    if (!r)
        return;
    free(r->grid);
    memset(r, 0, sizeof *r);
}

static int64_t *labelled_rows_(const dv_lin_data *d, int64_t *n) {
    int64_t *rows = malloc((size_t)(d->n > 0 ? d->n : 1) * sizeof *rows);
    *n = 0;
    if (!rows)
        return NULL;
    for (int64_t i = 0; i < d->n; i++)
        if (d->labels[i] >= 0)
            rows[(*n)++] = i;
    return rows;
}

static int cmp_i64_(const void *a, const void *b) {
    const int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* Evaluate H heads of one variant on rows: percent top-1, top-5, mean-class top-1 per head. */
static int eval_heads_(const dv_lin_data *d, const int64_t *rows, int64_t n, int64_t C,
                       dv_lin_variant v, const float *W, const float *b, int H,
                       const dv_lin_opts *o, double *top1, double *top5, double *mean1) {
    int64_t *c1 = calloc((size_t)H, sizeof *c1), *c5 = calloc((size_t)H, sizeof *c5);
    int64_t *cn = calloc((size_t)C, sizeof *cn), *cc = calloc((size_t)(H * C), sizeof *cc);
    int st = DV_OK;
    if (!c1 || !c5 || !cn || !cc)
        st = DV_ERR(DV_ERR_NOMEM, "out of memory");
    else
        st = dv_lin_eval(d, rows, n, C, v, W, b, H, o, c1, c5, cn, cc);
    for (int h = 0; h < H && st == DV_OK; h++) {
        top1[h] = n ? 100.0 * (double)c1[h] / (double)n : 0.0;
        if (top5)
            top5[h] = n ? 100.0 * (double)c5[h] / (double)n : 0.0;
        if (mean1) {
            double s = 0;
            int64_t present = 0;
            for (int64_t y = 0; y < C; y++)
                if (cn[y]) {
                    present++;
                    s += (double)cc[(int64_t)h * C + y] / (double)cn[y];
                }
            mean1[h] = present ? 100.0 * s / (double)present : 0.0;
        }
    }
    free(c1);
    free(c5);
    free(cn);
    free(cc);
    return st;
}

/* Train and evaluate grid entries [e0, e1) (one variant) into the result rows vals (5 each:
 * val_top1, test_top1, test_top5, test_mean_top1, loss). */
static int run_bank_(const dv_lin_data *tr, const dv_lin_data *te, const int64_t *fit, int64_t nfit,
                     const int64_t *val, int64_t nval, const int64_t *test, int64_t ntest,
                     int64_t C, const dv_lin_opts *o, const dv_lin_entry *grid, int e0, int e1,
                     double *vals) {
    const int H = e1 - e0;
    const dv_lin_variant v = grid[e0].v;
    const int64_t F = grid[e0].dim;
    float *W = malloc((size_t)((int64_t)H * C * F) * sizeof *W);
    float *b = malloc((size_t)((int64_t)H * C) * sizeof *b);
    double *lr = malloc((size_t)H * sizeof *lr), *loss = malloc((size_t)H * sizeof *loss);
    double *a1 = malloc((size_t)H * sizeof *a1), *t1 = malloc((size_t)H * sizeof *t1);
    double *t5 = malloc((size_t)H * sizeof *t5), *m1 = malloc((size_t)H * sizeof *m1);
    int *ids = malloc((size_t)H * sizeof *ids);
    int st = DV_OK;
    if (!W || !b || !lr || !loss || !a1 || !t1 || !t5 || !m1 || !ids) {
        st = DV_ERR(DV_ERR_NOMEM, "out of memory (linear heads %d x %lld x %lld)", H, (long long)C,
                    (long long)F);
        goto out;
    }
    for (int h = 0; h < H; h++) {
        lr[h] = grid[e0 + h].lr_scaled;
        ids[h] = e0 + h;
    }
    st = dv_lin_train(tr, fit, nfit, C, v, lr, ids, H, o, W, b, loss);
    if (st == DV_OK)
        st = eval_heads_(te, test, ntest, C, v, W, b, H, o, t1, t5, m1);
    if (st == DV_OK && nval > 0)
        st = eval_heads_(tr, val, nval, C, v, W, b, H, o, a1, NULL, NULL);
    for (int h = 0; h < H && st == DV_OK; h++) {
        double *r = vals + (int64_t)(e0 + h) * 5;
        r[0] = nval > 0 ? a1[h] : t1[h];
        r[1] = t1[h];
        r[2] = t5[h];
        r[3] = m1[h];
        r[4] = loss[h];
    }
out:
    free(W);
    free(b);
    free(lr);
    free(loss);
    free(a1);
    free(t1);
    free(t5);
    free(m1);
    free(ids);
    return st;
}

int dv_lin_run(const dv_lin_data *train, const dv_lin_data *test, const dv_lin_opts *o,
               MPI_Comm comm, dv_lin_result *res) {
    memset(res, 0, sizeof *res);
    int rank = 0, world = 1;
    if (comm != MPI_COMM_NULL) {
        MPI_Comm_rank(comm, &rank);
        MPI_Comm_size(comm, &world);
    }
    if (train->dim != test->dim || train->dim < 1)
        return DV_ERR(DV_ERR_ARG, "linear: train and test features differ in width (%lld, %lld)",
                      (long long)train->dim, (long long)test->dim);
    if (o->batch < 1 || o->iterations < 1 || !(o->val_fraction >= 0 && o->val_fraction < 1))
        return DV_ERR(DV_ERR_ARG, "linear: bad options (batch %lld, iterations %lld, val %g)",
                      (long long)o->batch, (long long)o->iterations, o->val_fraction);
    int nlr = o->nlr;
    const double *lrs = o->lrs;
    if (!lrs || nlr < 1)
        lrs = dv_lin_official_lrs(&nlr);
    if (nlr > DV_LIN_MAX_LRS)
        return DV_ERR(DV_ERR_ARG, "linear: at most %d learning rates", DV_LIN_MAX_LRS);
    /* variants present in both sets, official order */
    const int64_t nb = train->nlast < test->nlast ? train->nlast : test->nlast;
    dv_lin_variant vars[4];
    int nv = 0;
    const int blocks[2] = {1, (int)nb};
    for (int i = 0; i < 2; i++) {
        if (i == 1 && (nb < 2 || !train->cls_last || !test->cls_last))
            continue;
        for (int ap = 0; ap < 2; ap++) {
            dv_lin_variant v = {.n_blocks = blocks[i], .avgpool = ap};
            if (dv_lin_dim(train, v) > 0 && dv_lin_dim(test, v) > 0)
                vars[nv++] = v;
        }
    }
    int64_t ntr = 0, nte = 0;
    int64_t *trows = labelled_rows_(train, &ntr), *erows = labelled_rows_(test, &nte);
    int64_t *fit = NULL, *val = NULL;
    double *vals = NULL;
    int st = DV_OK;
    if (!trows || !erows) {
        st = DV_ERR(DV_ERR_NOMEM, "out of memory");
        goto out;
    }
    if (ntr < 2 || nte < 1) {
        dv_user_error("linear: need labelled rows: %lld train, %lld test", (long long)ntr,
                      (long long)nte);
        st = DV_ERR_ARG;
        goto out;
    }
    int64_t C = 0;
    for (int64_t i = 0; i < ntr; i++)
        if (train->labels[trows[i]] + 1 > C)
            C = train->labels[trows[i]] + 1;
    /* held-out split of the labelled training rows */
    int64_t nval = o->val_fraction > 0 ? (int64_t)llround(o->val_fraction * (double)ntr) : 0;
    if (o->val_fraction > 0 && nval < 1)
        nval = 1;
    if (nval > ntr - 1)
        nval = ntr - 1;
    const int64_t nfit = ntr - nval;
    fit = malloc((size_t)ntr * sizeof *fit);
    val = malloc((size_t)(nval > 0 ? nval : 1) * sizeof *val);
    if (!fit || !val) {
        st = DV_ERR(DV_ERR_NOMEM, "out of memory");
        goto out;
    }
    {
        int64_t *perm = malloc((size_t)ntr * sizeof *perm);
        if (!perm) {
            st = DV_ERR(DV_ERR_NOMEM, "out of memory");
            goto out;
        }
        dv_rng r;
        dv_rng_init(&r, o->seed, DV_RNG_EVAL, 0, 0);
        dv_rng_permutation(&r, perm, ntr);
        for (int64_t i = 0; i < nval; i++)
            val[i] = trows[perm[i]];
        for (int64_t i = nval; i < ntr; i++)
            fit[i - nval] = trows[perm[i]];
        free(perm);
        qsort(val, (size_t)nval, sizeof *val, cmp_i64_);
        qsort(fit, (size_t)nfit, sizeof *fit, cmp_i64_);
    }
    /* the grid */
    res->n = nv * nlr;
    res->grid = calloc((size_t)res->n, sizeof *res->grid);
    vals = calloc((size_t)res->n * 5, sizeof *vals);
    if (!res->grid || !vals) {
        st = DV_ERR(DV_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (int i = 0; i < nv; i++)
        for (int k = 0; k < nlr; k++) {
            dv_lin_entry *e = &res->grid[i * nlr + k];
            e->v = vars[i];
            e->dim = dv_lin_dim(train, vars[i]);
            e->lr = lrs[k];
            e->lr_scaled = lrs[k] * (double)o->batch / 256.0;
            char lrtxt[32];
            snprintf(lrtxt, sizeof lrtxt, "%.6g", e->lr_scaled);
            for (char *p = lrtxt; *p; p++)
                if (*p == '.')
                    *p = '_';
            snprintf(e->name, sizeof e->name, "classifier_%d_blocks_avgpool_%s_lr_%s",
                     vars[i].n_blocks, vars[i].avgpool ? "True" : "False", lrtxt);
        }
    res->C = C;
    res->ntrain = ntr;
    res->nval = nval;
    res->ntest = nte;
    res->selected_on_test = nval == 0;
    /* this rank's heads: a contiguous block of the grid, trained one variant at a time */
    {
        const int g0 = (int)((int64_t)res->n * rank / world),
                  g1 = (int)((int64_t)res->n * (rank + 1) / world);
        for (int e0 = g0; e0 < g1 && st == DV_OK;) {
            int e1 = e0 + 1;
            while (e1 < g1 && res->grid[e1].v.n_blocks == res->grid[e0].v.n_blocks &&
                   res->grid[e1].v.avgpool == res->grid[e0].v.avgpool)
                e1++;
            st = run_bank_(train, test, fit, nfit, val, nval, erows, nte, C, o, res->grid, e0, e1,
                           vals);
            e0 = e1;
        }
    }
    if (comm != MPI_COMM_NULL) {
        int all = st;
        if (MPI_Allreduce(&st, &all, 1, MPI_INT, MPI_MAX, comm) != MPI_SUCCESS)
            all = DV_ERR_MPI;
        st = all;
        if (st == DV_OK &&
            MPI_Allreduce(MPI_IN_PLACE, vals, res->n * 5, MPI_DOUBLE, MPI_SUM, comm) != MPI_SUCCESS)
            st = DV_ERR(DV_ERR_MPI, "MPI_Allreduce of the linear results failed");
    }
    if (st != DV_OK)
        goto out;
    res->best = 0;
    for (int e = 0; e < res->n; e++) {
        dv_lin_entry *g = &res->grid[e];
        g->val_top1 = vals[e * 5 + 0];
        g->test_top1 = vals[e * 5 + 1];
        g->test_top5 = vals[e * 5 + 2];
        g->test_mean_top1 = vals[e * 5 + 3];
        g->loss = vals[e * 5 + 4];
        if (g->val_top1 > res->grid[res->best].val_top1)
            res->best = e;
    }
    const dv_lin_entry *best = &res->grid[res->best];
    if (o->retrain && nval > 0) {
        /* the best configuration again on every labelled training row (every rank: same numbers) */
        float *W = malloc((size_t)(C * best->dim) * sizeof *W), *b = malloc((size_t)C * sizeof *b);
        if (!W || !b) {
            free(W);
            free(b);
            st = DV_ERR(DV_ERR_NOMEM, "out of memory");
            goto out;
        }
        int id = res->best;
        double lr = best->lr_scaled;
        qsort(trows, (size_t)ntr, sizeof *trows, cmp_i64_);
        st = dv_lin_train(train, trows, ntr, C, best->v, &lr, &id, 1, o, W, b, NULL);
        if (st == DV_OK)
            st = eval_heads_(test, erows, nte, C, best->v, W, b, 1, o, &res->test_top1,
                             &res->test_top5, &res->test_mean_top1);
        free(W);
        free(b);
        res->retrained = 1;
    } else {
        res->test_top1 = best->test_top1;
        res->test_top5 = best->test_top5;
        res->test_mean_top1 = best->test_mean_top1;
    }
out:
    free(trows);
    free(erows);
    free(fit);
    free(val);
    free(vals);
    if (st != DV_OK)
        dv_lin_result_free(res);
    return st;
}
