/* centering — softmax centering of the teacher outputs with the official EMA centre that is
 * updated one step late (DINOLoss / iBOTPatchLoss .softmax_center_teacher, .update_center,
 * .apply_center_update), and the reduction hook shared by the loss and optimiser modules.
 *
 * Shapes: h (n, K) teacher head logits on this rank; P (n, K) teacher targets; centre (K).
 *
 * One iteration (as SSLMetaArch with train.centering = "centering"):
 *   center_softmax_teacher(P, c, h, n, τt)   applies the pending update, then
 *                                             P = softmax((h − c) / τt)
 *   center_update(c, h, n, stat, W, hook)     computes this step's statistic, all-reduces it and
 *                                             keeps it PENDING (the official async all-reduce);
 *                                             it is applied at the next center_softmax_teacher
 *                                             (or center_apply_pending):
 *                                             c ← c·0.9 + (pending_sum / pending_rows)·(1 − 0.9)
 *   stat DV_CENTER_ROW_SUM  (DINO CLS): pending_sum = Σ_ranks Σ_rows h,  pending_rows = n · W
 *   stat DV_CENTER_ROW_MEAN (iBOT patches): pending_sum = Σ_ranks mean_rows h,  pending_rows = W
 *        (each rank's mean of its masked-patch logits weighs 1/W, whatever its masked count;
 *        a rank with no masked patch contributes zeros where torch would give NaN)
 * The centre arithmetic is fp32 as the official buffer; the sums are double.
 *
 * The struct is the checkpointable state: center, pending_sum (already all-reduced, so equal on
 * every rank), pending_rows and has_pending. (The official checkpoint holds only `center`, so a
 * resumed official run drops the pending update; restoring has_pending = 0 reproduces that.)
 *
 * Reduction hook: every global sum goes through a caller-provided
 *   int hook(void *ctx, double *buf, int64_t count)
 * that replaces buf[0..count) in place by its sum over all ranks (MPI_Allreduce(MPI_IN_PLACE,
 * buf, count, MPI_DOUBLE, MPI_SUM) on CPUs) and returns DV_OK or a dv_status. count is in
 * ELEMENTS, never bytes. A NULL hook means a single rank. Every rank must make the same calls.
 *
 * Example:
 *   dv_center c; DV_TRY(center_init(&c, K));
 *   DV_TRY(center_softmax_teacher(P, &c, h, 2 * B, teacher_temp));
 *   DV_TRY(center_update(&c, h, 2 * B, DV_CENTER_ROW_SUM, W, hook, comm));
 *   ...
 *   center_free(&c);
 */
#ifndef DV_CENTERING_H
#define DV_CENTERING_H

#include <stdint.h>

#ifndef DV_ALLREDUCE_FN_DEFINED
#define DV_ALLREDUCE_FN_DEFINED
/* In-place sum over all ranks of count doubles; NULL = single rank. */
typedef int (*dv_allreduce_fn)(void *ctx, double *buf, int64_t count);
#endif

typedef enum {
    DV_CENTER_ROW_SUM = 0, /* DINOLoss: Σ rows, divided by rows·W */
    DV_CENTER_ROW_MEAN = 1 /* iBOTPatchLoss: mean over rows, divided by 1·W */
} dv_center_stat;

typedef struct {
    int64_t K;
    float *center;       /* (K) the official fp32 buffer (DINOLoss.center (1,K), iBOT (1,1,K)) */
    double *pending_sum; /* (K) all-reduced statistic awaiting apply */
    double pending_rows; /* the official divisor len(teacher_output) · world_size */
    int has_pending;     /* the official `updated is False` */
    double momentum;     /* center_momentum, 0.9 */
} dv_center;

/* Centre zeros, nothing pending, momentum 0.9. */
int center_init(dv_center *c, int64_t K);
void center_free(dv_center *c);

/* c ← c·m + (pending_sum/pending_rows)·(1 − m) if an update is pending; then nothing pending. */
int center_apply_pending(dv_center *c);

/* Apply any pending update, then P (n,K) = softmax((h − c)/teacher_temp) by rows; P may alias h. */
int center_softmax_teacher(float *P, dv_center *c, const float *h, int64_t n, double teacher_temp);

/* Compute, all-reduce and keep pending this step's statistic (replaces an unapplied one, as the
 * official code does). world_size ≥ 1. Collective: call on every rank, even with n = 0. */
int center_update(dv_center *c, const float *h, int64_t n, dv_center_stat stat, int64_t world_size,
                  dv_allreduce_fn reduce, void *reduce_ctx);

#endif
