/* knn — the official weighted k-NN classifier on frozen features (dinov2/eval/knn.py;
 * DINOv1's protocol), on the CPU with BLAS, in memory-bounded blocks.
 *
 * Shapes: Ntr train rows, Nte test rows, D features, C classes, K = max of the k list.
 * Protocol:
 *   1. features L2-normalised (x / max(||x||, 1e-12), torch.nn.functional.normalize)
 *   2. similarity = cosine = dot product of normalised rows
 *   3. the K most similar train rows of each test row, most similar first; equal similarities
 *      are ordered by train row (lower first) — a deterministic version of torch.topk
 *   4. neighbour j gets weight exp(s_j / T); the official code normalises these over the K
 *      neighbours (softmax(top-K sims / T)) — the same positive factor for every class of a test
 *      row, so the ranking is unchanged; here w_j = exp((s_j - s_0) / T) (s_0 the largest), never
 *      overflowing
 *   5. for each k: class score = Σ_{j<k} w_j [label_j = c]; classes ranked by score, ties by
 *      lower class index (also among zero scores); top-1 correct when the true class ranks
 *      first, top-5 when it ranks among the first min(5, C)
 *   6. accuracy = correct / test rows with a label >= 0 (micro, "top-1"/"top-5"); also the mean
 *      over the classes present in the test labels of the per-class accuracy ("mean-class",
 *      torchmetrics' average="macro" that the official knn main uses — it differs only in
 *      that torchmetrics also averages classes that are predicted but absent from the test set)
 * When Ntr < K every train row is a neighbour (k is clipped to Ntr).
 *
 * Work: blocks of `test_chunk` test rows × `train_chunk` train rows (one GEMM each), a running
 * top-K per test row; memory O(test_chunk · (train_chunk + K)) besides the features. OpenMP
 * over test rows for the selection and the votes. BLAS may round a similarity differently for
 * another block shape, and on real data near-equal similarities are common (duplicates), so
 * the block decomposition is fixed: block b is always test rows [b·chunk, (b+1)·chunk).
 *
 * MPI: each rank takes whole blocks of the test rows (dv_knn_slice; every rank holds all train
 * rows), counts them with dv_knn_count, then dv_knn_counts_reduce. Every block is computed as
 * on one rank and the counts are integers: the result is the 1-rank result exactly (for a
 * given test_chunk and BLAS thread count).
 *
 *   dv_knn_l2_normalize(train, ntr, D);  dv_knn_l2_normalize(test, nte, D);
 *   int64_t ks[] = {10, 20, 100, 200};
 *   dv_knn_opts o = {.ks = ks, .nk = 4, .temperature = 0.07, .num_classes = C};
 *   dv_knn_counts *cnt;  DV_TRY(dv_knn_counts_create(4, C, &cnt));
 *   DV_TRY(dv_knn_count(train, ytr, ntr, test, yte, nte, D, &o, cnt));
 *   DV_TRY(dv_knn_counts_reduce(cnt, comm));
 *   dv_knn_acc acc;  dv_knn_accuracy(cnt, 0, &acc);          // k = 10
 *   dv_knn_counts_free(cnt);
 */
#ifndef DV_KNN_H
#define DV_KNN_H

#include <mpi.h>
#include <stdint.h>

typedef struct {
    const int64_t *ks; /* nk values of k (each >= 1), any order */
    int nk;
    double temperature;  /* T > 0 (official 0.07) */
    int64_t num_classes; /* C: every train label in [0, C) */
    int64_t test_chunk;  /* test rows per block (0 = 256) */
    int64_t train_chunk; /* train rows per block (0 = 16384) */
} dv_knn_opts;

/* Integer counts, one contiguous int64 buffer (data) so that one MPI_Allreduce sums them. */
typedef struct {
    int nk;
    int64_t C;
    int64_t *k;             /* (nk) */
    int64_t *n;             /* (1) test rows counted (label >= 0) */
    int64_t *correct;       /* (nk, 2) top-1, top-5 correct */
    int64_t *class_n;       /* (C) test rows per class */
    int64_t *class_correct; /* (nk, C, 2) */
    int64_t *data;          /* everything above after k */
    int64_t ndata;
} dv_knn_counts;

int dv_knn_counts_create(int nk, int64_t C, dv_knn_counts **out);
void dv_knn_counts_free(dv_knn_counts *c);
/* Sum over the ranks of comm (MPI_COMM_NULL: nothing). */
int dv_knn_counts_reduce(dv_knn_counts *c, MPI_Comm comm);

typedef struct {
    int64_t k, n;
    double top1, top5;           /* percent, micro */
    double mean_top1, mean_top5; /* percent, mean over classes present in the test labels */
} dv_knn_acc;
void dv_knn_accuracy(const dv_knn_counts *c, int ik, dv_knn_acc *out);

/* The test rows [*lo, *hi) of rank `rank` of `world`: whole blocks of `chunk` rows (0 = 256),
 * blocks split as evenly as possible. */
void dv_knn_slice(int64_t n, int64_t chunk, int rank, int world, int64_t *lo, int64_t *hi);

/* Rows to unit L2 norm in place (official eps 1e-12). */
void dv_knn_l2_normalize(float *x, int64_t n, int64_t d);

/* The K most similar train rows of each of m test rows (all normalised): sims (m, K) and
 * idx (m, K), most similar first (ties: lower train row first). K <= ntr. */
int dv_knn_neighbors(const float *train, int64_t ntr, const float *test, int64_t m, int64_t d,
                     int64_t K, int64_t train_chunk, float *sims, int64_t *idx);

/* Class scores (C) of one test row for its first k neighbours (sims, idx from
 * dv_knn_neighbors, K >= k), weights exp((s_j - s_0)/T). */
void dv_knn_scores(const float *sims, const int64_t *idx, const int32_t *train_labels, int64_t k,
                   double temperature, int64_t C, double *scores);

/* Rank of class y under scores (0 = first): classes with a higher score, plus classes with an
 * equal score and a lower index. */
int64_t dv_knn_rank(const double *scores, int64_t C, int64_t y);

/* Add the counts of the test rows (labels < 0 are skipped) to cnt (created with o->nk, C).
 * train and test must be L2-normalised; train labels must lie in [0, C). */
int dv_knn_count(const float *train, const int32_t *train_labels, int64_t ntr, const float *test,
                 const int32_t *test_labels, int64_t nte, int64_t d, const dv_knn_opts *o,
                 dv_knn_counts *cnt);

#endif
