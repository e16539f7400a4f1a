/* test_knn — the weighted k-NN classifier of src/knn.
 *
 * Hand example (D 3, 2 classes, 6 train rows, 5 test rows, k = 1, 2, 3):
 *   train  t0 (1,0,0) c1   t1 (3,1,0) c0   t2 (3,-1,0) c0   t3 (0,1,0) c1   t4 (-1,0,0) c0
 *          t5 (-3,1,0) c1                               (rows are L2-normalised first)
 *   test   q0 (1,0,0) y1: sims t0 1, t1 = t2 = 3/sqrt(10) = 0.94868 (equal: t1 before t2)
 *              k=1: c1.  k=2: c1 1 vs c0 e^{-0.05132/T}.  k=3: c1 1 vs c0 2 e^{-0.05132/T}
 *              T 0.07: 1 > 0.9608 -> c1 (weighted vote beats the 2:1 majority);
 *              T 0.1:  1 < 1.1972 -> c0
 *          q1 (-1,0,0) y0: t4 1, t5 0.94868, t3 0 -> c0 for every k
 *          q2 (0,0,1) y0: every similarity 0: neighbours in row order t0 (c1), t1 (c0), t2 (c0),
 *              weights 1: k=1 c1 (wrong); k=2 tie 1:1 -> lower class c0 (right); k=3 c0 2:1
 *          q3 (0,1,0) y1: t3 1, then t1 = t5 = 0.31623 -> c1 for every k
 *          q4 = q2 with y1: k=1 right, k=2 tie -> c0 (wrong), k=3 wrong
 *   T 0.07 top-1: k=1 4/5, k=2 4/5, k=3 4/5; mean-class k=1 (1/2 + 3/3) / 2 = 75 %
 *   T 0.1  top-1: k=3 3/5 (q0 flips)
 * Then a random example (7 classes, so top-5 is not trivial) against a brute-force reference
 * (double similarities, full sort with the tie rule, the official softmax(top-K / T) weights),
 * independence of the block sizes, and splitting the test rows (what MPI ranks do).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "knn.h"
#include "rng.h"
#include "tap.h"

static const float k_train[6][3] = {{1, 0, 0}, {3, 1, 0},  {3, -1, 0},
                                    {0, 1, 0}, {-1, 0, 0}, {-3, 1, 0}};
static const int32_t k_ytr[6] = {1, 0, 0, 1, 0, 1};
static const float k_test[5][3] = {{1, 0, 0}, {-1, 0, 0}, {0, 0, 1}, {0, 1, 0}, {0, 0, 1}};
static const int32_t k_yte[5] = {1, 0, 0, 1, 1};

static int run_hand(double T, dv_knn_counts **out) {
    float tr[18], te[15];
    memcpy(tr, k_train, sizeof tr);
    memcpy(te, k_test, sizeof te);
    dv_knn_l2_normalize(tr, 6, 3);
    dv_knn_l2_normalize(te, 5, 3);
    int64_t ks[] = {3, 1, 2}; /* any order */
    dv_knn_opts o = {
        .ks = ks, .nk = 3, .temperature = T, .num_classes = 2, .test_chunk = 2, .train_chunk = 4};
    DV_TRY(dv_knn_counts_create(3, 2, out));
    return dv_knn_count(tr, k_ytr, 6, te, k_yte, 5, 3, &o, *out);
}

static void test_hand(void) {
    float tr[18], te[15];
    memcpy(tr, k_train, sizeof tr);
    memcpy(te, k_test, sizeof te);
    dv_knn_l2_normalize(tr, 6, 3);
    dv_knn_l2_normalize(te, 5, 3);
    tap_close(tr[3], 3.0 / sqrt(10.0), 1e-7, "normalised t1[0] = 3/sqrt(10)");
    float sims[5 * 6];
    int64_t idx[5 * 6];
    int s = dv_knn_neighbors(tr, 6, te, 5, 3, 6, 4, sims, idx);
    tap_ok(s == DV_OK && idx[0] == 0 && idx[1] == 1 && idx[2] == 2 && idx[3] == 3,
           "q0 neighbours t0, t1, t2 (equal similarities: lower row first), t3");
    tap_ok(idx[6] == 4 && idx[7] == 5 && idx[8] == 3, "q1 neighbours t4, t5, t3");
    tap_ok(idx[12] == 0 && idx[13] == 1 && idx[14] == 2 && sims[12] == 0.0f && sims[14] == 0.0f,
           "q2 (orthogonal to everything): all similarities 0, neighbours in row order");
    tap_ok(idx[18] == 3 && idx[19] == 1 && idx[20] == 5 && sims[19] == sims[20],
           "q3 neighbours t3, then t1 = t5 (tie, row order)");
    /* the exact weighted vote of q0 at k = 3 */
    double sc[2];
    dv_knn_scores(sims, idx, k_ytr, 3, 0.07, 2, sc);
    const double w1 = exp(((double)sims[1] - 1.0) / 0.07);
    tap_close(sc[1], 1.0, 1e-12, "q0 k=3 T=0.07: score of c1 = e^0 = 1");
    tap_close(sc[0], 2.0 * w1, 1e-12, "q0 k=3 T=0.07: score of c0 = 2 e^{(s1-1)/T}");
    tap_close(sc[0], 0.9608, 1e-4, "... = 0.9608 (< 1: c1 predicted)");
    tap_ok(dv_knn_rank(sc, 2, 1) == 0 && dv_knn_rank(sc, 2, 0) == 1, "q0: c1 ranks first");
    dv_knn_scores(sims, idx, k_ytr, 3, 0.1, 2, sc);
    tap_close(sc[0], 2.0 * exp(((double)sims[1] - 1.0) / 0.1), 1e-12,
              "q0 k=3 T=0.1: c0 = 2 e^{(s1-1)/0.1} = 1.197");
    tap_ok(dv_knn_rank(sc, 2, 0) == 0, "q0 T=0.1: c0 ranks first (the temperature matters)");
    double tie[3] = {1.0, 1.0, 0.5};
    tap_ok(dv_knn_rank(tie, 3, 0) == 0 && dv_knn_rank(tie, 3, 1) == 1 &&
               dv_knn_rank(tie, 3, 2) == 2,
           "equal class scores: the lower class index ranks first");

    dv_knn_counts *c = NULL;
    s = run_hand(0.07, &c);
    if (s != DV_OK) {
        tap_ok(0, "dv_knn_count: %s", dv_status_str(s));
        return;
    }
    dv_knn_acc a[3];
    for (int q = 0; q < 3; q++)
        dv_knn_accuracy(c, q, &a[q]);
    /* ks were {3, 1, 2} */
    tap_ok(*c->n == 5 && c->correct[2 * 1] == 4 && c->correct[2 * 2] == 4 && c->correct[0] == 4,
           "T 0.07 top-1 correct: k=1 4, k=2 4, k=3 4 of 5 (%lld %lld %lld)",
           (long long)c->correct[2], (long long)c->correct[4], (long long)c->correct[0]);
    /* which ones: k=1 misses q2 (class 0), k=2 and k=3 miss q4 (class 1) */
    tap_ok(c->class_correct[(1 * 2 + 0) * 2] == 1 && c->class_correct[(1 * 2 + 1) * 2] == 3 &&
               c->class_correct[(2 * 2 + 0) * 2] == 2 && c->class_correct[(2 * 2 + 1) * 2] == 2,
           "per class: k=1 c0 1/2 c1 3/3; k=2 c0 2/2 c1 2/3");
    tap_close(a[1].top1, 80.0, 1e-9, "k=1 top-1 80 %");
    tap_close(a[1].mean_top1, 75.0, 1e-9, "k=1 mean-class top-1 (50 + 100) / 2 = 75 %");
    tap_close(a[0].top5, 100.0, 1e-9, "top-5 with 2 classes is 100 %");
    tap_ok(a[0].k == 3 && a[1].k == 1 && a[2].k == 2, "results in the order of the k list");
    dv_knn_counts_free(c);
    s = run_hand(0.1, &c);
    tap_ok(s == DV_OK && c->correct[0] == 3 && c->correct[2] == 4,
           "T 0.1: k=3 top-1 3/5 (q0 flips to c0), k=1 unchanged 4/5");
    dv_knn_counts_free(c);
}

/* ---- random example against a brute-force reference -------------------------------------- */

typedef struct {
    double s;
    int64_t i;
} pair_t;

static int cmp_pair(const void *a, const void *b) {
    const pair_t *x = a, *y = b;
    if (x->s != y->s)
        return x->s > y->s ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

/* brute force: float similarities as the GEMM gives them are not reproducible bit for bit in
 * double, so neighbours are compared by set and the votes use the official softmax weights on
 * the library's own (sims, idx) to check the ranking rule and weighting. */
static void test_random(void) {
    const int64_t ntr = 300, nte = 97, D = 16, C = 7;
    float *tr = malloc((size_t)(ntr * D) * sizeof *tr),
          *te = malloc((size_t)(nte * D) * sizeof *te);
    int32_t *ytr = malloc((size_t)ntr * sizeof *ytr), *yte = malloc((size_t)nte * sizeof *yte);
    dv_rng r;
    dv_rng_init(&r, 5, DV_RNG_TEST, 0, 0);
    /* class-dependent means so that the classifier is better than chance */
    for (int64_t i = 0; i < ntr; i++) {
        ytr[i] = (int32_t)dv_rng_int(&r, 0, C - 1);
        for (int64_t d = 0; d < D; d++)
            tr[i * D + d] = (float)(dv_rng_normal(&r) + (d == ytr[i] ? 1.5 : 0));
    }
    for (int64_t i = 0; i < nte; i++) {
        yte[i] = (int32_t)dv_rng_int(&r, -1, C - 1); /* some -1: unlabelled, skipped */
        int64_t c = yte[i] < 0 ? 0 : yte[i];
        for (int64_t d = 0; d < D; d++)
            te[i * D + d] = (float)(dv_rng_normal(&r) + (d == c ? 1.5 : 0));
    }
    dv_knn_l2_normalize(tr, ntr, D);
    dv_knn_l2_normalize(te, nte, D);
    const int64_t K = 20;
    float *sims = malloc((size_t)(nte * K) * sizeof *sims);
    int64_t *idx = malloc((size_t)(nte * K) * sizeof *idx);
    int s = dv_knn_neighbors(tr, ntr, te, nte, D, K, 37, sims, idx);
    /* brute force in double */
    pair_t *all = malloc((size_t)ntr * sizeof *all);
    int64_t nbr_ok = 1, order_ok = 1;
    double worst_sim = 0;
    for (int64_t i = 0; i < nte && s == DV_OK; i++) {
        for (int64_t j = 0; j < ntr; j++) {
            double acc = 0;
            for (int64_t d = 0; d < D; d++)
                acc += (double)te[i * D + d] * tr[j * D + d];
            all[j].s = acc;
            all[j].i = j;
        }
        qsort(all, (size_t)ntr, sizeof *all, cmp_pair);
        for (int64_t q = 0; q < K; q++) {
            double e = fabs((double)sims[i * K + q] - all[q].s);
            if (e > worst_sim)
                worst_sim = e;
            /* the same neighbours unless two similarities are within float rounding */
            if (idx[i * K + q] != all[q].i && fabs(all[q].s - all[q + 1].s) > 1e-6 &&
                (q == 0 || fabs(all[q].s - all[q - 1].s) > 1e-6))
                nbr_ok = 0;
            if (q > 0 &&
                (sims[i * K + q] > sims[i * K + q - 1] ||
                 (sims[i * K + q] == sims[i * K + q - 1] && idx[i * K + q] < idx[i * K + q - 1])))
                order_ok = 0;
        }
    }
    tap_ok(s == DV_OK && nbr_ok, "random: top-20 neighbours == brute force (max |sim err| %.1e)",
           worst_sim);
    tap_ok(order_ok, "random: neighbours sorted by similarity, ties by row");

    /* counts against the official formula on the same neighbours */
    int64_t ks[] = {10, 20, 1, 5};
    dv_knn_opts o = {.ks = ks,
                     .nk = 4,
                     .temperature = 0.07,
                     .num_classes = C,
                     .test_chunk = 1000,
                     .train_chunk = 100000};
    dv_knn_counts *c1 = NULL, *c2 = NULL, *c3 = NULL;
    dv_knn_counts_create(4, C, &c1);
    dv_knn_counts_create(4, C, &c2);
    dv_knn_counts_create(4, C, &c3);
    s = dv_knn_count(tr, ytr, ntr, te, yte, nte, D, &o, c1);
    int64_t want[4][2] = {{0}}, nlab = 0, scale_ok = 1;
    for (int64_t i = 0; i < nte; i++) {
        if (yte[i] < 0)
            continue;
        nlab++;
        /* official: p = softmax(top-K sims / T), probas_k[c] = sum_{j<k} p_j [label = c] */
        double p[20], z = 0;
        for (int64_t j = 0; j < K; j++)
            z += exp((double)sims[i * K + j] / 0.07);
        for (int64_t j = 0; j < K; j++)
            p[j] = exp((double)sims[i * K + j] / 0.07) / z;
        for (int q = 0; q < 4; q++) {
            double prob[7] = {0}, ours[7];
            for (int64_t j = 0; j < ks[q]; j++)
                prob[ytr[idx[i * K + j]]] += p[j];
            dv_knn_scores(sims + i * K, idx + i * K, ytr, ks[q], 0.07, C, ours);
            /* ours = probas * z / exp(s0 / T): one positive factor per test row */
            const double f = z / exp((double)sims[i * K] / 0.07);
            for (int64_t cc = 0; cc < C; cc++)
                if (fabs(ours[cc] - prob[cc] * f) > 1e-9 * (1 + ours[cc]))
                    scale_ok = 0;
            int64_t rank = dv_knn_rank(prob, C, yte[i]);
            if (rank == 0)
                want[q][0]++;
            if (rank < 5)
                want[q][1]++;
        }
    }
    tap_ok(scale_ok, "scores = official softmax(top-K/T) class sums x one positive factor per row");
    int same = s == DV_OK && *c1->n == nlab;
    for (int q = 0; q < 4; q++)
        same &= c1->correct[2 * q] == want[q][0] && c1->correct[2 * q + 1] == want[q][1];
    tap_ok(
        same,
        "random: top-1/top-5 counts == official weighting on the same neighbours (%lld labelled)",
        (long long)nlab);
    dv_knn_acc a;
    dv_knn_accuracy(c1, 0, &a);
    tap_diag("random 7 classes, k=10: top-1 %.2f %% top-5 %.2f %% mean-class %.2f %%", a.top1,
             a.top5, a.mean_top1);
    tap_ok(a.top1 > 100.0 / 7 + 10 && a.top5 > a.top1,
           "better than chance, top-5 > top-1 (non-trivial with 7 classes)");

    /* block sizes: tiny blocks give the same counts */
    o.test_chunk = 5;
    o.train_chunk = 17;
    s = dv_knn_count(tr, ytr, ntr, te, yte, nte, D, &o, c2);
    tap_ok(s == DV_OK && !memcmp(c1->data, c2->data, (size_t)c1->ndata * sizeof *c1->data),
           "test blocks of 5 x train blocks of 17 == one block: identical counts");
    float *sims2 = malloc((size_t)(nte * K) * sizeof *sims2);
    int64_t *idx2 = malloc((size_t)(nte * K) * sizeof *idx2);
    s = dv_knn_neighbors(tr, ntr, te, nte, D, K, 1, sims2, idx2);
    tap_ok(s == DV_OK && !memcmp(idx, idx2, (size_t)(nte * K) * sizeof *idx),
           "train blocks of 1 row: identical neighbours");
    /* the test rows split in two parts, counts added (what the MPI ranks do) */
    s = dv_knn_count(tr, ytr, ntr, te, yte, 40, D, &o, c3);
    if (s == DV_OK)
        s = dv_knn_count(tr, ytr, ntr, te + 40 * D, yte + 40, nte - 40, D, &o, c3);
    tap_ok(s == DV_OK && !memcmp(c1->data, c3->data, (size_t)c1->ndata * sizeof *c1->data),
           "test rows split 40 + 57 and summed == all at once");
    /* k larger than the train set: clipped */
    int64_t kbig[] = {1000};
    dv_knn_opts ob = {.ks = kbig, .nk = 1, .temperature = 0.07, .num_classes = C};
    dv_knn_counts *cb = NULL;
    dv_knn_counts_create(1, C, &cb);
    s = dv_knn_count(tr, ytr, 30, te, yte, nte, D, &ob, cb);
    tap_ok(s == DV_OK && *cb->n == nlab, "k 1000 > 30 train rows: every train row votes");
    dv_knn_counts_free(cb);
    /* bad labels */
    ytr[3] = 7;
    s = dv_knn_count(tr, ytr, ntr, te, yte, nte, D, &o, c3);
    tap_ok(s == DV_ERR_ARG, "a train label >= C is an error");
    dv_knn_counts_free(c1);
    dv_knn_counts_free(c2);
    dv_knn_counts_free(c3);
    free(all);
    free(sims);
    free(idx);
    free(sims2);
    free(idx2);
    free(tr);
    free(te);
    free(ytr);
    free(yte);
}

int main(void) {
    tap_no_plan();
    test_hand();
    test_random();
    return tap_exit();
}
