/* knn — see knn.h. */
#include "knn.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "gemm.h"

int dv_knn_counts_create(int nk, int64_t C, dv_knn_counts **out) {
    *out = NULL;
    if (nk < 1 || C < 1)
        return DV_ERR(DV_ERR_ARG, "knn counts: nk %d, C %lld", nk, (long long)C);
    dv_knn_counts *c = calloc(1, sizeof *c);
    DV_CHECK_ALLOC(c);
    c->nk = nk;
    c->C = C;
    c->ndata = 1 + 2 * (int64_t)nk + C + 2 * (int64_t)nk * C;
    c->k = calloc((size_t)nk, sizeof *c->k);
    c->data = calloc((size_t)c->ndata, sizeof *c->data);
    if (!c->k || !c->data) {
        dv_knn_counts_free(c);
        return DV_ERR(DV_ERR_NOMEM, "out of memory (knn counts)");
    }
    c->n = c->data;
    c->correct = c->n + 1;
    c->class_n = c->correct + 2 * nk;
    c->class_correct = c->class_n + C;
    *out = c;
    return DV_OK;
}

void dv_knn_counts_free(dv_knn_counts *c) {
    if (!c)
        return;
    free(c->k);
    free(c->data);
    free(c);
}

int dv_knn_counts_reduce(dv_knn_counts *c, MPI_Comm comm) {
    if (comm == MPI_COMM_NULL)
        return DV_OK;
    const int64_t step = (int64_t)1 << 28;
    for (int64_t off = 0; off < c->ndata; off += step) {
        const int64_t n = c->ndata - off < step ? c->ndata - off : step;
        DV_CHECK_MPI(
            MPI_Allreduce(MPI_IN_PLACE, c->data + off, (int)n, MPI_INT64_T, MPI_SUM, comm));
    }
    return DV_OK;
}

void dv_knn_accuracy(const dv_knn_counts *c, int ik, dv_knn_acc *out) {
    memset(out, 0, sizeof *out);
    out->k = c->k[ik];
    out->n = *c->n;
    if (*c->n > 0) {
        out->top1 = 100.0 * (double)c->correct[2 * ik] / (double)*c->n;
        out->top5 = 100.0 * (double)c->correct[2 * ik + 1] / (double)*c->n;
    }
    double s1 = 0, s5 = 0;
    int64_t present = 0;
    for (int64_t y = 0; y < c->C; y++) {
        if (c->class_n[y] == 0)
            continue;
        present++;
        const int64_t *cc = c->class_correct + (ik * c->C + y) * 2;
        s1 += (double)cc[0] / (double)c->class_n[y];
        s5 += (double)cc[1] / (double)c->class_n[y];
    }
    if (present) {
        out->mean_top1 = 100.0 * s1 / (double)present;
        out->mean_top5 = 100.0 * s5 / (double)present;
    }
}

void dv_knn_slice(int64_t n, int64_t chunk, int rank, int world, int64_t *lo, int64_t *hi) {
    if (chunk <= 0)
        chunk = 256;
    const int64_t nb = (n + chunk - 1) / chunk;
    const int64_t b0 = nb * rank / world, b1 = nb * (rank + 1) / world;
    *lo = b0 * chunk < n ? b0 * chunk : n;
    *hi = b1 * chunk < n ? b1 * chunk : n;
}

void dv_knn_l2_normalize(float *x, int64_t n, int64_t d) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float *r = x + i * d;
        double s = 0.0;
        for (int64_t j = 0; j < d; j++)
            s += (double)r[j] * r[j];
        double nrm = sqrt(s);
        if (nrm < 1e-12)
            nrm = 1e-12;
        const float inv = (float)(1.0 / nrm);
        for (int64_t j = 0; j < d; j++)
            r[j] *= inv;
    }
}

/* (s, i) is worse than (t, j): lower similarity, or equal similarity and a later train row */
static inline int worse_(float s, int64_t i, float t, int64_t j) {
    return s < t || (s == t && i > j);
}

/* min-heap on "worse": root = worst of the kept neighbours */
static void sift_down_(float *s, int64_t *ix, int64_t n, int64_t p) {
    for (;;) {
        int64_t l = 2 * p + 1, r = l + 1, w = p;
        if (l < n && worse_(s[l], ix[l], s[w], ix[w]))
            w = l;
        if (r < n && worse_(s[r], ix[r], s[w], ix[w]))
            w = r;
        if (w == p)
            return;
        float ts = s[p];
        s[p] = s[w];
        s[w] = ts;
        int64_t ti = ix[p];
        ix[p] = ix[w];
        ix[w] = ti;
        p = w;
    }
}

static void sift_up_(float *s, int64_t *ix, int64_t c) {
    while (c > 0) {
        int64_t p = (c - 1) / 2;
        if (!worse_(s[c], ix[c], s[p], ix[p]))
            return;
        float ts = s[p];
        s[p] = s[c];
        s[c] = ts;
        int64_t ti = ix[p];
        ix[p] = ix[c];
        ix[c] = ti;
        c = p;
    }
}

int dv_knn_neighbors(const float *train, int64_t ntr, const float *test, int64_t m, int64_t d,
                     int64_t K, int64_t train_chunk, float *sims, int64_t *idx) {
    if (K < 1 || K > ntr || m < 0 || d < 1)
        return DV_ERR(DV_ERR_ARG, "knn: K %lld with %lld train rows", (long long)K, (long long)ntr);
    if (m == 0)
        return DV_OK;
    int64_t tc = train_chunk > 0 ? train_chunk : 16384;
    if (tc > ntr)
        tc = ntr;
    float *S = malloc((size_t)(m * tc) * sizeof *S);
    int64_t *fill = calloc((size_t)m, sizeof *fill);
    if (!S || !fill) {
        free(S);
        free(fill);
        return DV_ERR(DV_ERR_NOMEM, "out of memory (knn block %lld x %lld)", (long long)m,
                      (long long)tc);
    }
    for (int64_t t0 = 0; t0 < ntr; t0 += tc) {
        const int64_t nt = ntr - t0 < tc ? ntr - t0 : tc;
        gemm_f32(0, 1, m, nt, d, 1.0f, test, d, train + t0 * d, d, 0.0f, S, nt);
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < m; i++) {
            float *hs = sims + i * K;
            int64_t *hi = idx + i * K;
            const float *row = S + i * nt;
            int64_t f = fill[i];
            for (int64_t j = 0; j < nt; j++) {
                float s = row[j];
                if (s != s)
                    s = -INFINITY; /* NaN never wins */
                const int64_t g = t0 + j;
                if (f < K) {
                    hs[f] = s;
                    hi[f] = g;
                    sift_up_(hs, hi, f);
                    f++;
                } else if (worse_(hs[0], hi[0], s, g)) {
                    hs[0] = s;
                    hi[0] = g;
                    sift_down_(hs, hi, K, 0);
                }
            }
            fill[i] = f;
        }
    }
    /* heap sort: pop the worst to the back -> best first */
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < m; i++) {
        float *hs = sims + i * K;
        int64_t *hi = idx + i * K;
        for (int64_t n = K; n > 1; n--) {
            float ts = hs[0];
            hs[0] = hs[n - 1];
            hs[n - 1] = ts;
            int64_t ti = hi[0];
            hi[0] = hi[n - 1];
            hi[n - 1] = ti;
            sift_down_(hs, hi, n - 1, 0);
        }
    }
    free(S);
    free(fill);
    return DV_OK;
}

void dv_knn_scores(const float *sims, const int64_t *idx, const int32_t *train_labels, int64_t k,
                   double temperature, int64_t C, double *scores) {
    for (int64_t c = 0; c < C; c++)
        scores[c] = 0.0;
    for (int64_t j = 0; j < k; j++)
        scores[train_labels[idx[j]]] += exp(((double)sims[j] - (double)sims[0]) / temperature);
}

int64_t dv_knn_rank(const double *scores, int64_t C, int64_t y) {
    const double sy = scores[y];
    int64_t r = 0;
    for (int64_t c = 0; c < C; c++)
        if (scores[c] > sy || (scores[c] == sy && c < y))
            r++;
    return r;
}

static int cmp_k_(const void *a, const void *b, void *ks) {
    const int64_t *k = ks;
    const int x = *(const int *)a, y = *(const int *)b;
    return k[x] < k[y] ? -1 : k[x] > k[y] ? 1 : x - y;
}

int dv_knn_count(const float *train, const int32_t *train_labels, int64_t ntr, const float *test,
                 const int32_t *test_labels, int64_t nte, int64_t d, const dv_knn_opts *o,
                 dv_knn_counts *cnt) {
    const int64_t C = o->num_classes;
    const int nk = o->nk;
    if (nk < 1 || nk != cnt->nk || C != cnt->C || !(o->temperature > 0) || ntr < 1)
        return DV_ERR(DV_ERR_ARG, "knn: bad options (nk %d, C %lld, T %g, %lld train rows)", nk,
                      (long long)C, o->temperature, (long long)ntr);
    int64_t K = 0;
    for (int q = 0; q < nk; q++) {
        if (o->ks[q] < 1)
            return DV_ERR(DV_ERR_ARG, "knn: k = %lld", (long long)o->ks[q]);
        cnt->k[q] = o->ks[q];
        if (o->ks[q] > K)
            K = o->ks[q];
    }
    if (K > ntr)
        K = ntr;
    for (int64_t i = 0; i < ntr; i++)
        if (train_labels[i] < 0 || train_labels[i] >= C)
            return DV_ERR(DV_ERR_ARG, "knn: train label %d of row %lld outside [0, %lld)",
                          train_labels[i], (long long)i, (long long)C);
    for (int64_t i = 0; i < nte; i++)
        if (test_labels[i] >= C)
            return DV_ERR(DV_ERR_ARG, "knn: test label %d of row %lld outside [0, %lld)",
                          test_labels[i], (long long)i, (long long)C);
    /* k values in increasing order, for the incremental votes */
    int order[64];
    if (nk > 64)
        return DV_ERR(DV_ERR_ARG, "knn: at most 64 values of k");
    for (int q = 0; q < nk; q++)
        order[q] = q;
    qsort_r(order, (size_t)nk, sizeof *order, cmp_k_, (void *)o->ks);
    const int64_t tchunk = o->test_chunk > 0 ? o->test_chunk : 256;
    const int64_t mmax = tchunk < nte ? tchunk : nte;
    const int nthr = omp_get_max_threads();
    float *sims = malloc((size_t)((mmax ? mmax : 1) * K) * sizeof *sims);
    int64_t *idx = malloc((size_t)((mmax ? mmax : 1) * K) * sizeof *idx);
    double *scores = malloc((size_t)(nthr * C) * sizeof *scores);
    int64_t *local = calloc((size_t)(nthr * cnt->ndata), sizeof *local);
    int status = DV_OK;
    if (!sims || !idx || !scores || !local)
        status = DV_ERR(DV_ERR_NOMEM, "out of memory (knn)");
    for (int64_t r0 = 0; r0 < nte && status == DV_OK; r0 += tchunk) {
        const int64_t m = nte - r0 < tchunk ? nte - r0 : tchunk;
        status = dv_knn_neighbors(train, ntr, test + r0 * d, m, d, K, o->train_chunk, sims, idx);
        if (status != DV_OK)
            break;
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < m; i++) {
            const int32_t y = test_labels[r0 + i];
            if (y < 0)
                continue;
            const int t = omp_get_thread_num();
            double *sc = scores + (int64_t)t * C;
            int64_t *L = local + (int64_t)t * cnt->ndata; /* same layout as cnt->data */
            int64_t *Ln = L, *Lcorrect = L + 1, *Lclass_n = Lcorrect + 2 * nk,
                    *Lclass_correct = Lclass_n + C;
            const float *s = sims + i * K;
            const int64_t *ix = idx + i * K;
            for (int64_t c = 0; c < C; c++)
                sc[c] = 0.0;
            (*Ln)++;
            Lclass_n[y]++;
            int64_t done = 0;
            for (int q = 0; q < nk; q++) {
                const int iq = order[q];
                int64_t k = o->ks[iq] < K ? o->ks[iq] : K;
                for (; done < k; done++)
                    sc[train_labels[ix[done]]] +=
                        exp(((double)s[done] - (double)s[0]) / o->temperature);
                const int64_t rank = dv_knn_rank(sc, C, y);
                if (rank == 0) {
                    Lcorrect[2 * iq]++;
                    Lclass_correct[(iq * C + y) * 2]++;
                }
                if (rank < 5) {
                    Lcorrect[2 * iq + 1]++;
                    Lclass_correct[(iq * C + y) * 2 + 1]++;
                }
            }
        }
    }
    if (status == DV_OK)
        for (int t = 0; t < nthr; t++)
            for (int64_t e = 0; e < cnt->ndata; e++)
                cnt->data[e] += local[(int64_t)t * cnt->ndata + e];
    free(sims);
    free(idx);
    free(scores);
    free(local);
    return status;
}
