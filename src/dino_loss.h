/* dino_loss — fused soft-target cross-entropy over wide rows, and the DINO image-level loss
 * of the official SSLMetaArch (forward and backward w.r.t. the student logits).
 *
 * Shapes (K = prototypes, up to 131072; B = images per rank; L = local crops per image):
 *   s_global (2B, K)   student DINO-head logits of the global crops, crop-major as the official
 *                      collate: rows [img0..imgB-1 of crop 1, img0..imgB-1 of crop 2]
 *   s_local  (L·B, K)  student logits of the local crops, crop-major (block j = local crop j)
 *   t_probs  (2B, K)   teacher targets (softmax-centred or Sinkhorn-Knopp) computed from the
 *                      SWAPPED teacher logits [crop 2 rows; crop 1 rows], so t_probs row r is
 *                      the target of s_global row r
 *
 * Fused soft-target cross-entropy (softce_fused), per student row r with targets T_{r,g}:
 *   x_r = S_r / temp,   CE_{r,g} = −Σ_k T_{r,g,k} · log_softmax(x_r)_k
 *   loss = Σ_r w_r · Σ_g CE_{r,g}
 *   dS_r = dscale · w_r / temp · (M_r · softmax(x_r) − Σ_g T_{r,g}),  M_r = Σ_g Σ_k T_{r,g,k}
 * (the exact autograd gradient, which does not assume the targets sum to 1). One streaming pass
 * per row computes the running max, the rescaled Σ exp and the dots with the targets (blocks of
 * 512 stay in L1); a second pass writes dS. No probability matrix is stored. Row sums are in
 * double; OpenMP over rows; the loss is summed in row order, so it does not depend on the thread
 * count.
 *
 * DINO loss (dino_loss_forward_backward), exactly as SSLMetaArch.forward_backward:
 *   Z      = n_global_terms + n_local_terms = 2 + max(2L, 1)          (18 for L = 8)
 *   local  = Σ_{j<L} Σ_{g<2} mean_b CE(t_probs[g·B + b], s_local[j·B + b]) / Z   (0 when L = 0)
 *   global = mean_{r<2B} CE(t_probs[r], s_global[r]) · 2 / Z   (the ×2 is the official loss_scales)
 * d_global, d_local: ∂(local + global)/∂logits · dscale (dscale = dino.loss_weight × any loss
 * scale). Returned losses are not multiplied by dscale.
 *
 * Conventions: row-major fp32; outputs first; gradients are overwritten (each student row belongs
 * to one loss); a NULL gradient pointer skips that gradient. Returns DV_OK or a dv_status
 * (DV_ERR_ARG, DV_ERR_NOMEM for the O(rows) scratch it allocates).
 *
 * Example (one rank, B images, L local crops):
 *   dv_dino_loss_parts parts;
 *   DV_TRY(dino_loss_forward_backward(&parts, dsg, dsl, sg, sl, tp, B, L, K, 0.1, 1.0));
 */
#ifndef DV_DINO_LOSS_H
#define DV_DINO_LOSS_H

#include <stdint.h>

/* Soft-target cross-entropy, fused forward + backward (see above).
 *   S      (n, K) student logits
 *   P      (n_tgt·np, K) targets: row r uses P[g·np + (r mod np)] for g < n_tgt (n_tgt 1 or 2)
 *   row_w  (n) per-row weights or NULL; w_r = (row_w ? row_w[r] : 1) · w
 *   loss   Σ_r w_r Σ_g CE_{r,g} (double), may be NULL
 *   dS     (n, K) overwritten with dscale · ∂loss/∂S, may be NULL */
int softce_fused(double *loss, float *dS, const float *S, int64_t n, int64_t K, const float *P,
                 int64_t np, int n_tgt, const float *row_w, double w, double temp, double dscale);

typedef struct {
    double local;  /* dino_local_crops_loss  (already / Z) */
    double global; /* dino_global_crops_loss (already × 2 / Z) */
} dv_dino_loss_parts;

/* The DINO image-level loss over the 2·(1 + L) cross-view pairs (see above). s_local and
 * d_local may be NULL when L = 0; d_global/d_local may be NULL to skip the backward. */
int dino_loss_forward_backward(dv_dino_loss_parts *out, float *d_global, float *d_local,
                               const float *s_global, const float *s_local, const float *t_probs,
                               int64_t B, int64_t L, int64_t K, double student_temp, double dscale);

/* Z = 2 + max(2L, 1): the official n_global_crops_loss_terms + n_local_crops_loss_terms. */
int64_t dino_loss_num_terms(int64_t L);

#endif
