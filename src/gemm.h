/* gemm — fp32 matrix products on OpenBLAS (cblas_sgemm), and the Linear layer of PyTorch.
 *
 * Shapes (vocabulary shared by the CPU ops):
 *   T     rows (tokens of the packed token matrix)
 *   IN    input features, OUT output features
 *   x  (T, IN)      input rows
 *   w  (OUT, IN)    weight, laid out as PyTorch's nn.Linear.weight
 *   b  (OUT)        bias (may be NULL)
 *   y  (T, OUT)     y = x · wᵀ + b
 *
 * Conventions (all CPU ops): row-major fp32, outputs first in argument lists, then inputs,
 * then sizes. Parameter gradients (dw, db) ACCUMULATE (+=), so several crops, micro-batches or
 * stochastic-depth subsets add up; one memset zeroes them. Input gradients (dx) are overwritten
 * unless a `dx_accumulate` flag says otherwise. Column reductions (db) run over fixed column
 * blocks with double accumulators: the result does not depend on the thread count.
 *
 * Preconditions: every BLAS dimension and leading dimension fits in a C int (OpenBLAS's
 * 32-bit blasint), pointers are non-NULL unless documented, outputs do not alias inputs.
 * Threading: the GEMMs use OpenBLAS's threads (Debian's OpenMP build shares our OpenMP
 * runtime); called inside an OpenMP parallel region OpenBLAS runs single-threaded.
 *
 * Example (fc1 of a ViT MLP, D -> 4D):
 *   linear_forward(h, x, fc1_w, fc1_b, T, D, 4 * D);
 *   ...
 *   linear_backward(dx, dfc1_w, dfc1_b, dh, x, fc1_w, T, D, 4 * D, 1);
 */
#ifndef DV_GEMM_H
#define DV_GEMM_H

#include <stdint.h>

/* C = alpha · op(A) · op(B) + beta · C, row-major; op(A) is (m, k), op(B) is (k, n), C (m, n).
 * trans_a / trans_b nonzero: A is stored (k, m) / B is stored (n, k). lda/ldb/ldc are row
 * strides in elements. k == 0 scales C by beta. */
void gemm_f32(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
              const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c,
              int64_t ldc);

/* `batch` independent products C_i = alpha · op(A_i) · op(B_i) + beta · C_i with
 * A_i = a + i·stride_a, B_i = b + i·stride_b, C_i = c + i·stride_c (strides in elements; a
 * stride of 0 broadcasts). OpenMP over the batch; the C_i must not overlap. */
void gemm_f32_strided_batched(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                              float alpha, const float *a, int64_t lda, int64_t stride_a,
                              const float *b, int64_t ldb, int64_t stride_b, float beta, float *c,
                              int64_t ldc, int64_t stride_c, int64_t batch);

/* y (T, OUT) = x (T, IN) · wᵀ + b. b may be NULL. */
void linear_forward(float *y, const float *x, const float *w, const float *b, int64_t T,
                    int64_t in, int64_t out);

/* Backward of linear_forward given dy (T, OUT):
 *   dx (T, IN)   = dy · w        overwritten, or added when dx_accumulate != 0; may be NULL
 *   dw (OUT, IN) += dyᵀ · x      may be NULL
 *   db (OUT)     += Σ_t dy[t]    may be NULL */
void linear_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                     const float *w, int64_t T, int64_t in, int64_t out, int dx_accumulate);

/* db (OUT) += Σ_t dy[t, :] over rows of dy (T, OUT), row stride ld_dy (>= OUT). Double
 * accumulation per column block, deterministic. */
void linear_bias_backward(float *db, const float *dy, int64_t T, int64_t out, int64_t ld_dy);

#endif
