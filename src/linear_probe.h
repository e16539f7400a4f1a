/* linear_probe — the official linear evaluation (dinov2/eval/linear.py) on frozen features:
 * a grid of linear classifiers trained at once on the same mini-batches, the best chosen on
 * held-out data, its test accuracy reported.
 *
 * Shapes: N rows, D features, B = nlast blocks of CLS tokens (min(4, depth)), C classes,
 * F input width of a variant, H heads of one variant (the learning rates).
 * Inputs per row (official create_linear_input; features as the backbone gives them, not
 * normalised): variant (n_blocks, avgpool) =
 *   n_blocks 1: the last block's normed CLS (= x_norm_clstoken)            F = D
 *   n_blocks B: the normed CLS of the last B blocks, oldest first           F = B·D
 *   avgpool:    + the mean of the last block's normed patch tokens          F += D
 * Grid (official order): n_blocks in {1, B} x avgpool in {no, yes} x the learning rates
 * {1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1}, each scaled
 * by batch / 256 (official: batch_per_gpu · world / 256). Variants whose features are missing
 * (no cls_last / no avgpool) are left out, so CLS-only features give the 13 heads of (1, no).
 * Each head: Linear(F, C), weight N(0, 0.01) from dv_rng(seed, DV_RNG_EVAL + 2, grid index, 0),
 * bias 0; loss = mean cross-entropy over the batch (softmax over C); SGD momentum 0.9
 * (PyTorch's buffer rule), weight decay 0, lr_t = lr · (1 + cos(π t / iterations)) / 2
 * (CosineAnnealingLR to 0). Mini-batches: the concatenation of per-epoch permutations
 * (dv_rng(seed, DV_RNG_EVAL + 1, epoch, 0)) of the training rows cut into consecutive batches
 * (an infinite sampler, as official); every head sees the same batches.
 * Selection: top-1 on a held-out part of the training rows (val_fraction, default 10 %, drawn
 * with dv_rng(seed, DV_RNG_EVAL, 0, 0)); the first best in grid order wins. Then (retrain) the
 * best configuration is trained again on all training rows and evaluated on the test rows.
 * val_fraction 0: selection on the test rows (what the official code does when no separate
 * validation set is given — optimistic; flagged in the result).
 * Metrics: top-1 / top-5 (micro) and mean per-class top-1 over the classes present in the
 * test labels (the official linear default metric, torchmetrics' macro mean accuracy).
 * Ties between logits rank the lower class first. Rows with label < 0 are left out.
 *
 * Deviation from the official recipe, by design: features are computed once (eval transform),
 * not from a RandomResizedCrop + flip of every training image at every iteration; and the
 * default is 1250 iterations instead of 12,500 (CPU budget; o.iterations sets it).
 *
 * MPI: the grid's heads are split over the ranks (contiguous blocks of the grid order), each
 * rank trains its heads (all ranks hold all features); results are summed. Heads of one
 * variant share the gathered inputs but each has its own GEMMs of a fixed shape, so a head's
 * numbers do not depend on which heads share its bank: the result is the same for any rank
 * count (at a given BLAS thread count). Deterministic for a seed.
 *
 *   dv_lin_opts o;  dv_lin_opts_default(&o);
 *   dv_lin_data tr = {.n = N, .dim = D, .nlast = 4, .cls = cls, .cls_last = last,
 *                     .avgpool = avg, .labels = y};
 *   dv_lin_result r;
 *   DV_TRY(dv_lin_run(&tr, &te, &o, comm, &r));
 *   ... r.grid[r.best].name, r.test_top1 ...
 *   dv_lin_result_free(&r);
 */
#ifndef DV_LINEAR_PROBE_H
#define DV_LINEAR_PROBE_H

#include <mpi.h>
#include <stdint.h>

#define DV_LIN_MAX_LRS 64

typedef struct {
    int64_t n, dim, nlast;
    const float *cls;      /* (n, D) */
    const float *cls_last; /* (n, nlast, D) or NULL */
    const float *avgpool;  /* (n, D) or NULL */
    const int32_t *labels; /* (n) */
} dv_lin_data;

typedef struct {
    int n_blocks; /* 1 or nlast */
    int avgpool;
} dv_lin_variant;

typedef struct {
    const double *lrs; /* nlr grid values before scaling; NULL = the official 13 */
    int nlr;
    int64_t batch;       /* rows per mini-batch (128) */
    int64_t iterations;  /* SGD steps (1250; official 12,500) */
    double momentum;     /* 0.9 */
    double weight_decay; /* 0 (official) */
    double val_fraction; /* held-out share of the training rows (0.1); 0 = select on test */
    uint64_t seed;       /* 0 */
    int retrain;         /* 1: retrain the best on all training rows */
    int64_t eval_chunk;  /* rows per evaluation block (0 = 1024) */
} dv_lin_opts;

void dv_lin_opts_default(dv_lin_opts *o);
/* The official learning rates (13). */
const double *dv_lin_official_lrs(int *n);

typedef struct {
    char name[96]; /* official pattern "classifier_4_blocks_avgpool_True_lr_0_0005" with the
                      scaled lr as %.6g ('.' -> '_'; official %.5f names collide below 1e-5) */
    dv_lin_variant v;
    int64_t dim;      /* F */
    double lr;        /* grid value */
    double lr_scaled; /* lr · batch / 256 */
    double loss;      /* mean training loss over the last 10 % of the iterations */
    double val_top1;  /* selection metric (held-out part, or test when none) */
    double test_top1, test_top5, test_mean_top1; /* this head (trained without the held-out part) */
} dv_lin_entry;

typedef struct {
    int n;              /* grid entries */
    dv_lin_entry *grid; /* (n), official order */
    int best;           /* index into grid */
    int64_t C, ntrain, nval, ntest;
    int selected_on_test;
    int retrained;
    double test_top1, test_top5, test_mean_top1; /* the reported numbers of the best */
} dv_lin_result;

/* Input width of a variant (0 when the data lacks its parts). */
int64_t dv_lin_dim(const dv_lin_data *d, dv_lin_variant v);
/* dst (m, F) = the inputs of rows[0..m). */
void dv_lin_gather(float *dst, const dv_lin_data *d, dv_lin_variant v, const int64_t *rows,
                   int64_t m);

/* Train H heads of variant v at once on rows[0..nrows) (labels in [0, C)): lr_scaled (H),
 * head_ids (H) key the initialisation; W (H, C, F) and b (H, C) are initialised here.
 * loss (H) may be NULL. */
int dv_lin_train(const dv_lin_data *d, const int64_t *rows, int64_t nrows, int64_t C,
                 dv_lin_variant v, const double *lr_scaled, const int *head_ids, int H,
                 const dv_lin_opts *o, float *W, float *b, double *loss);

/* Evaluate H heads on rows[0..nrows) (rows with label < 0 must not be given): correct1 and
 * correct5 (H) are set; class_n (C) and class_correct1 (H, C) are set when not NULL. */
int dv_lin_eval(const dv_lin_data *d, const int64_t *rows, int64_t nrows, int64_t C,
                dv_lin_variant v, const float *W, const float *b, int H, const dv_lin_opts *o,
                int64_t *correct1, int64_t *correct5, int64_t *class_n, int64_t *class_correct1);

/* The whole protocol (collective over comm; MPI_COMM_NULL: serial). */
int dv_lin_run(const dv_lin_data *train, const dv_lin_data *test, const dv_lin_opts *o,
               MPI_Comm comm, dv_lin_result *res);
void dv_lin_result_free(dv_lin_result *r);

#endif
