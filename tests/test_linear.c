/* test_linear — the linear probe of src/linear_probe.
 *
 *  - one SGD step by hand: W1 = W0 - lr · (softmax(X W0ᵀ) - onehot)ᵀ X / B, then a second step
 *    with momentum 0.9 and the cosine factor (1 + cos(π/2)) / 2 = 0.5
 *  - linearly separable features -> ~100 % test top-1, for CLS-only features (13 heads) and
 *    for probe features (52 heads: 1/4 blocks x avgpool x 13 lrs, official names and widths)
 *  - random labels -> near chance (25 % for 4 classes)
 *  - the same seed gives the same numbers; a head trained alone == the same head in a bank
 *    (what splitting the grid over MPI ranks relies on)
 *  - the held-out selection picks the learning rate that learns on a constructed case; with
 *    val_fraction 0 the selection is flagged as made on the test set
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "linear_probe.h"
#include "rng.h"
#include "tap.h"

typedef struct {
    int64_t n, D, nlast;
    float *cls, *last, *avg;
    int32_t *y;
} set_t;

static void set_free(set_t *s) {
    free(s->cls);
    free(s->last);
    free(s->avg);
    free(s->y);
}

/* Class c puts `sep` on feature c (of every part), plus unit-normal noise · noise.
 * random_labels: labels drawn independently of the features. */
static void make_set(set_t *s, int64_t n, int64_t D, int64_t C, double sep, double noise, int probe,
                     int random_labels, uint64_t seed) {
    memset(s, 0, sizeof *s);
    s->n = n;
    s->D = D;
    s->nlast = probe ? 4 : 0;
    s->cls = malloc((size_t)(n * D) * sizeof(float));
    s->y = malloc((size_t)n * sizeof(int32_t));
    if (probe) {
        s->last = malloc((size_t)(n * 4 * D) * sizeof(float));
        s->avg = malloc((size_t)(n * D) * sizeof(float));
    }
    dv_rng r;
    dv_rng_init(&r, seed, DV_RNG_TEST, 7, 0);
    for (int64_t i = 0; i < n; i++) {
        const int64_t c = dv_rng_int(&r, 0, C - 1);
        s->y[i] = (int32_t)(random_labels ? dv_rng_int(&r, 0, C - 1) : c);
        for (int64_t d = 0; d < D; d++) {
            s->cls[i * D + d] = (float)(noise * dv_rng_normal(&r) + (d == c ? sep : 0.0));
            if (probe) {
                for (int k = 0; k < 4; k++)
                    s->last[(i * 4 + k) * D + d] =
                        k == 3 ? s->cls[i * D + d]
                               : (float)(noise * dv_rng_normal(&r) + (d == c ? sep : 0.0));
                s->avg[i * D + d] = (float)(noise * dv_rng_normal(&r) + (d == c ? 0.5 * sep : 0.0));
            }
        }
    }
}

static dv_lin_data view(const set_t *s) {
    dv_lin_data d = {.n = s->n,
                     .dim = s->D,
                     .nlast = s->nlast,
                     .cls = s->cls,
                     .cls_last = s->last,
                     .avgpool = s->avg,
                     .labels = s->y};
    return d;
}

static void test_hand_step(void) {
    const int64_t N = 6, D = 3, C = 2;
    set_t s;
    make_set(&s, N, D, C, 1.0, 1.0, 0, 0, 3);
    dv_lin_data d = view(&s);
    int64_t rows[6] = {0, 1, 2, 3, 4, 5};
    dv_lin_opts o;
    dv_lin_opts_default(&o);
    o.batch = N; /* the whole set per step: the gradient does not depend on the order */
    o.iterations = 1;
    o.seed = 11;
    dv_lin_variant v = {1, 0};
    float W[6], b[2], W0[6];
    double lr = 0.3;
    int id = 5;
    /* W0: the initialisation (train with lr 0 for one step) */
    double zero = 0.0;
    dv_lin_train(&d, rows, N, C, v, &zero, &id, 1, &o, W0, b, NULL);
    int s1 = dv_lin_train(&d, rows, N, C, v, &lr, &id, 1, &o, W, b, NULL);
    /* by hand in double */
    double g[6] = {0}, gb[2] = {0};
    for (int64_t i = 0; i < N; i++) {
        double z[2], m, den = 0;
        for (int c = 0; c < 2; c++) {
            z[c] = 0;
            for (int k = 0; k < 3; k++)
                z[c] += (double)W0[c * 3 + k] * s.cls[i * 3 + k];
        }
        m = z[0] > z[1] ? z[0] : z[1];
        for (int c = 0; c < 2; c++)
            den += exp(z[c] - m);
        for (int c = 0; c < 2; c++) {
            const double p = exp(z[c] - m) / den - (c == s.y[i]);
            for (int k = 0; k < 3; k++)
                g[c * 3 + k] += p * s.cls[i * 3 + k] / N;
            gb[c] += p / N;
        }
    }
    double e = 0, eb = 0;
    for (int j = 0; j < 6; j++)
        e = fmax(e, fabs(W[j] - (W0[j] - lr * g[j])));
    for (int c = 0; c < 2; c++)
        eb = fmax(eb, fabs(b[c] - (-lr * gb[c])));
    tap_ok(s1 == DV_OK && e < 1e-6 && eb < 1e-6,
           "one step: W1 = W0 - lr (p - onehot)^T X / B (err %.1e, bias %.1e)", e, eb);
    double w00 = 0.0;
    for (int j = 0; j < 6; j++)
        w00 += W0[j] * W0[j];
    tap_ok(sqrt(w00 / 6) > 0.002 && sqrt(w00 / 6) < 0.03, "init N(0, 0.01): RMS %.4f",
           sqrt(w00 / 6));
    /* two steps: lr_1 = lr (1 + cos(pi/2)) / 2 = lr / 2, buffer = 0.9 g0 + g1 */
    o.iterations = 2;
    float W2[6], b2[2];
    dv_lin_train(&d, rows, N, C, v, &lr, &id, 1, &o, W2, b2, NULL);
    double g1[6] = {0};
    for (int64_t i = 0; i < N; i++) {
        double z[2], m, den = 0;
        for (int c = 0; c < 2; c++) {
            z[c] = b[c];
            for (int k = 0; k < 3; k++)
                z[c] += (double)W[c * 3 + k] * s.cls[i * 3 + k];
        }
        m = z[0] > z[1] ? z[0] : z[1];
        for (int c = 0; c < 2; c++)
            den += exp(z[c] - m);
        for (int c = 0; c < 2; c++) {
            const double p = exp(z[c] - m) / den - (c == s.y[i]);
            for (int k = 0; k < 3; k++)
                g1[c * 3 + k] += p * s.cls[i * 3 + k] / N;
        }
    }
    e = 0;
    for (int j = 0; j < 6; j++)
        e = fmax(e, fabs(W2[j] - (W[j] - 0.5 * lr * (0.9 * g[j] + g1[j]))));
    tap_ok(e < 1e-6, "two steps: momentum 0.9 and cosine lr (1 + cos(pi t/T)) / 2 (err %.1e)", e);
    set_free(&s);
}

static void test_separable(void) {
    set_t tr, te;
    make_set(&tr, 400, 8, 4, 3.0, 0.3, 0, 0, 1);
    make_set(&te, 200, 8, 4, 3.0, 0.3, 0, 0, 2);
    dv_lin_data a = view(&tr), b = view(&te);
    dv_lin_opts o;
    dv_lin_opts_default(&o);
    o.iterations = 200;
    o.batch = 32;
    dv_lin_result r;
    int s = dv_lin_run(&a, &b, &o, MPI_COMM_NULL, &r);
    tap_ok(s == DV_OK && r.n == 13 && r.grid[0].dim == 8,
           "CLS-only features: 13 heads of width D (%d)", r.n);
    if (s != DV_OK)
        return;
    tap_diag("separable, CLS only: best %s val %.2f test %.2f (retrained %d), nval %lld",
             r.grid[r.best].name, r.grid[r.best].val_top1, r.test_top1, r.retrained,
             (long long)r.nval);
    tap_ok(r.test_top1 >= 99.0 && r.retrained && r.nval == 40 && r.ntrain == 400 && r.C == 4,
           "linearly separable: test top-1 %.1f %% >= 99, retrained on all 400, 40 held out",
           r.test_top1);
    tap_ok(!strcmp(r.grid[0].name, "classifier_1_blocks_avgpool_False_lr_1_25e-06") &&
               !strcmp(r.grid[12].name, "classifier_1_blocks_avgpool_False_lr_0_0125"),
           "official names, lr scaled by 32/256 (%s, %s)", r.grid[0].name, r.grid[12].name);
    /* the same again: deterministic */
    dv_lin_result r2;
    s = dv_lin_run(&a, &b, &o, MPI_COMM_NULL, &r2);
    int same = s == DV_OK && r2.best == r.best && r2.test_top1 == r.test_top1;
    for (int e = 0; same && e < r.n; e++)
        same = r2.grid[e].val_top1 == r.grid[e].val_top1 && r2.grid[e].loss == r.grid[e].loss &&
               r2.grid[e].test_top1 == r.grid[e].test_top1;
    tap_ok(same, "same seed: identical grid (losses bit for bit)");
    if (s == DV_OK)
        dv_lin_result_free(&r2);
    o.seed = 1;
    s = dv_lin_run(&a, &b, &o, MPI_COMM_NULL, &r2);
    tap_ok(s == DV_OK && r2.grid[5].loss != r.grid[5].loss, "another seed: other numbers");
    if (s == DV_OK)
        dv_lin_result_free(&r2);
    dv_lin_result_free(&r);

    /* probe features: 52 heads */
    set_free(&tr);
    set_free(&te);
    make_set(&tr, 400, 8, 4, 3.0, 0.3, 1, 0, 1);
    make_set(&te, 200, 8, 4, 3.0, 0.3, 1, 0, 2);
    a = view(&tr);
    b = view(&te);
    o.seed = 0;
    o.iterations = 100;
    s = dv_lin_run(&a, &b, &o, MPI_COMM_NULL, &r);
    tap_ok(s == DV_OK && r.n == 52, "probe features: 52 heads (%d)", s == DV_OK ? r.n : -1);
    if (s == DV_OK) {
        tap_ok(r.grid[0].dim == 8 && r.grid[13].dim == 16 && r.grid[26].dim == 32 &&
                   r.grid[39].dim == 40 && r.grid[13].v.avgpool && r.grid[26].v.n_blocks == 4 &&
                   !r.grid[26].v.avgpool &&
                   !strncmp(r.grid[39].name, "classifier_4_blocks_avgpool_True_lr_", 36),
               "grid order 1/noavg, 1/avg, 4/noavg, 4/avg with widths D, 2D, 4D, 5D");
        tap_ok(r.test_top1 >= 97.0, "probe features separable: test top-1 %.1f %%", r.test_top1);
        dv_lin_result_free(&r);
    }
    /* a head alone == the same head in a bank of 13 */
    int64_t *rows = malloc(400 * sizeof *rows);
    for (int i = 0; i < 400; i++)
        rows[i] = i;
    int nl;
    const double *lrs = dv_lin_official_lrs(&nl);
    double lr13[13];
    int ids[13];
    for (int h = 0; h < 13; h++) {
        lr13[h] = lrs[h] * 32 / 256.0;
        ids[h] = 26 + h;
    }
    dv_lin_variant v = {4, 1};
    float *Wb = malloc(13 * 4 * 40 * sizeof *Wb), bb[13 * 4], W1[4 * 40], b1[4];
    o.iterations = 50;
    dv_lin_train(&a, rows, 400, 4, v, lr13, ids, 13, &o, Wb, bb, NULL);
    dv_lin_train(&a, rows, 400, 4, v, lr13 + 9, ids + 9, 1, &o, W1, b1, NULL);
    double e = 0;
    for (int j = 0; j < 160; j++)
        e = fmax(e, fabs(W1[j] - Wb[9 * 160 + j]));
    tap_ok(e == 0.0, "head 9 trained alone == head 9 of a bank of 13, bit for bit (max diff %.1e)",
           e);
    free(Wb);
    free(rows);
    set_free(&tr);
    set_free(&te);
}

static void test_random_labels(void) {
    set_t tr, te;
    make_set(&tr, 400, 8, 4, 3.0, 0.3, 0, 1, 4);
    make_set(&te, 400, 8, 4, 3.0, 0.3, 0, 1, 5);
    dv_lin_data a = view(&tr), b = view(&te);
    dv_lin_opts o;
    dv_lin_opts_default(&o);
    o.iterations = 200;
    o.batch = 32;
    dv_lin_result r;
    int s = dv_lin_run(&a, &b, &o, MPI_COMM_NULL, &r);
    tap_ok(s == DV_OK && r.test_top1 > 15.0 && r.test_top1 < 35.0,
           "random labels: test top-1 %.1f %% near chance (25 %%)",
           s == DV_OK ? r.test_top1 : -1.0);
    if (s == DV_OK)
        dv_lin_result_free(&r);
    set_free(&tr);
    set_free(&te);
}

static void test_selection(void) {
    /* separable data, two learning rates: 1e-7 barely moves the N(0, 0.01) init (near chance),
     * 4 learns; the held-out part must pick 4 */
    set_t tr, te;
    make_set(&tr, 300, 8, 4, 3.0, 0.3, 0, 0, 6);
    make_set(&te, 100, 8, 4, 3.0, 0.3, 0, 0, 7);
    dv_lin_data a = view(&tr), b = view(&te);
    double lrs[2] = {1e-7, 4.0};
    dv_lin_opts o;
    dv_lin_opts_default(&o);
    o.lrs = lrs;
    o.nlr = 2;
    o.iterations = 60;
    o.batch = 64;
    o.val_fraction = 0.2;
    dv_lin_result r;
    int s = dv_lin_run(&a, &b, &o, MPI_COMM_NULL, &r);
    if (s != DV_OK) {
        tap_ok(0, "selection run: %s", dv_status_str(s));
        return;
    }
    tap_diag("selection: lr 1e-7 val %.1f test %.1f; lr 4 val %.1f test %.1f", r.grid[0].val_top1,
             r.grid[0].test_top1, r.grid[1].val_top1, r.grid[1].test_top1);
    tap_ok(r.n == 2 && r.best == 1 && r.grid[1].val_top1 > r.grid[0].val_top1 + 20 && r.nval == 60,
           "held-out 20 %% (60 rows) picks the learning rate that learns");
    tap_ok(!r.selected_on_test && r.retrained, "selected on held-out data, retrained");
    dv_lin_result_free(&r);
    /* reversed grid order: the same choice */
    double rev[2] = {4.0, 1e-7};
    o.lrs = rev;
    s = dv_lin_run(&a, &b, &o, MPI_COMM_NULL, &r);
    tap_ok(s == DV_OK && r.best == 0, "grid order does not change the choice");
    if (s == DV_OK)
        dv_lin_result_free(&r);
    o.val_fraction = 0.0;
    s = dv_lin_run(&a, &b, &o, MPI_COMM_NULL, &r);
    tap_ok(s == DV_OK && r.selected_on_test && r.nval == 0 && !r.retrained &&
               r.test_top1 == r.grid[r.best].test_top1,
           "val_fraction 0: selected on the test set (flagged), the grid head is reported");
    if (s == DV_OK)
        dv_lin_result_free(&r);
    /* unlabelled rows are left out */
    tr.y[0] = -1;
    tr.y[1] = -1;
    o.val_fraction = 0.1;
    s = dv_lin_run(&a, &b, &o, MPI_COMM_NULL, &r);
    tap_ok(s == DV_OK && r.ntrain == 298 && r.nval == 30,
           "rows with label -1 are left out (298 train, 30 held out)");
    if (s == DV_OK)
        dv_lin_result_free(&r);
    set_free(&tr);
    set_free(&te);
}

int main(void) {
    tap_no_plan();
    test_hand_step();
    test_separable();
    test_random_labels();
    test_selection();
    return tap_exit();
}
