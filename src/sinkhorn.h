/* sinkhorn — Sinkhorn-Knopp teacher normalisation as implemented in the official
 * DINOLoss.sinkhorn_knopp_teacher and iBOTPatchLoss.sinkhorn_knopp_teacher (fp32).
 *
 * Shapes: h (n, K) teacher head logits on this rank (n = 2B CLS rows, or this rank's masked
 * patch rows); P (n, K) output targets, each row sums to 1. The official code works on
 * Q = exp(h/τt)ᵀ (K × n); here Q is stored (n, K) like h, so the official "rows" (one per
 * prototype, reduced across ranks) are our columns and its "columns" (one per sample, local)
 * are our rows. Algorithm (official order of fp32 operations):
 *   Q = exp(h / τt)                         NO max subtraction (official)
 *   Q /= all_reduce(Σ Q)
 *   repeat n_iterations (3):
 *       Q[:,k] /= all_reduce(Σ_rows Q[:,k]);  Q /= K       (each prototype has mass 1/K)
 *       Q[r,:] /= Σ_k Q[r,k];                 Q /= B_tot   (each sample has mass 1/B_tot)
 *   Q *= B_tot                               (rows sum to 1)
 *   B_tot = n · W for the DINO CLS rows (assumes equal rows per rank);
 *   B_tot = all_reduce(n_masked) for iBOT (the official all-reduce of n_masked_patches).
 * Sums are accumulated in double, the hook reduces doubles (element counts, see centering.h);
 * the divisions are fp32 in the official order.
 *
 * Overflow: without max subtraction exp(h/τt) overflows fp32 once h/τt > 88.72, i.e. h > 3.55 at
 * τt = 0.04 or h > 6.2 at 0.07, and Σ Q overflows fp32 earlier for wide K. DINOHead logits are
 * bounded by the weight-norm gain |g_k| (1 at init, trainable), so this is unlikely but possible;
 * a prototype whose logits all lie below −103·τt underflows to 0 and gives 0/0. The official
 * code then silently produces NaN targets (and aborts later on the NaN loss).
 *   safe = 0 (default): the official computation; a non-finite or zero global sum or prototype
 *     sum (identical on every rank, so every rank returns it) gives DV_ERR_NUMERIC.
 *   safe = 1: prototype k is divided by exp(c_k) with c_k = M_k if |M_k| > 40, else 0, where
 *     M_k = max over all rows of all ranks of h[:,k]/τt (needs reduce_max when W > 1). A
 *     per-prototype factor cancels exactly at the first prototype normalisation, so the targets
 *     are the official ones up to fp32 rounding, and bit-identical whenever every |M_k| ≤ 40.
 *
 * Example:
 *   dv_sinkhorn_opts o = sinkhorn_default_opts(W, hook, comm);
 *   DV_TRY(sinkhorn_knopp_dino(P, h, 2 * B, K, teacher_temp, &o));
 *   DV_TRY(sinkhorn_knopp_ibot(Pp, hp, n_masked, K, teacher_temp, &o));
 */
#ifndef DV_SINKHORN_H
#define DV_SINKHORN_H

#include <stdint.h>

#ifndef DV_ALLREDUCE_FN_DEFINED
#define DV_ALLREDUCE_FN_DEFINED
/* In-place sum over all ranks of count doubles; NULL = single rank. */
typedef int (*dv_allreduce_fn)(void *ctx, double *buf, int64_t count);
#endif

typedef struct {
    int n_iterations;           /* 3 (official) */
    int safe;                   /* 0: official exp(h/τt); 1: per-prototype shift (see above) */
    int64_t world_size;         /* W ≥ 1 */
    dv_allreduce_fn reduce;     /* in-place SUM over ranks; NULL: single rank */
    dv_allreduce_fn reduce_max; /* in-place MAX over ranks, used only by safe mode; NULL: single
                                 * rank (safe mode with W > 1 then refuses: DV_ERR_ARG) */
    void *reduce_ctx;           /* passed to both hooks */
} dv_sinkhorn_opts;

dv_sinkhorn_opts sinkhorn_default_opts(int64_t world_size, dv_allreduce_fn reduce, void *ctx);

/* The algorithm with an explicit B_tot. P may alias h. Collective (all ranks, even n = 0). */
int sinkhorn_knopp(float *P, const float *h, int64_t n, int64_t K, double teacher_temp,
                   double b_total, const dv_sinkhorn_opts *o);

/* DINO CLS rows: B_tot = n · W. */
int sinkhorn_knopp_dino(float *P, const float *h, int64_t n, int64_t K, double teacher_temp,
                        const dv_sinkhorn_opts *o);

/* iBOT masked patches: B_tot = all-reduced n_masked (the masked count of every rank). */
int sinkhorn_knopp_ibot(float *P, const float *h, int64_t n_masked, int64_t K, double teacher_temp,
                        const dv_sinkhorn_opts *o);

#endif
