/* attention — multi-head self-attention core over packed variable-length segments.
 *
 * All crops of a step are one token matrix; a segment table says which rows belong together.
 * Each segment attends only to itself (block-diagonal, non-causal). This is the core between
 * the qkv Linear and the proj Linear of the official Attention module.
 *
 * Shapes:
 *   T            rows of the packed token matrix (T_total)
 *   D            embedding width, NH heads, HS = D / NH head size
 *   qkv  (T, 3*D)   per row [q | k | v], heads contiguous inside each (head h of q is
 *                   columns h*HS .. h*HS+HS-1, of k D + h*HS ..., of v 2*D + h*HS ...),
 *                   i.e. the official qkv Linear output before reshape(B, N, 3, NH, HS)
 *   out  (T, D)     heads concatenated: out[t, h*HS + j] (the input of proj)
 *   lse  (T, NH)    per row and head: log Σ_j exp(scale · q·k_j), saved for the backward
 *   seg  (nseg)     {offset, length}: rows offset .. offset+length-1 form one sequence;
 *                   segments must not overlap; rows outside every segment are not touched.
 *
 *   out_h = softmax(scale · Q_h K_hᵀ) V_h per segment and head, scale = 1/sqrt(HS).
 *
 * The backward recomputes the probabilities from qkv and lse (one extra GEMM per segment and
 * head) instead of storing (L, L) matrices. Work is spread with OpenMP over (segment, head)
 * pairs; each pair runs cblas_sgemm on strided views (single-threaded inside the parallel
 * region). Workspace: attention_workspace_floats(max segment length, threads) floats; the call
 * uses min(omp_get_max_threads(), work_floats / per-thread need) threads and fails with
 * DV_ERR_ARG when the workspace does not hold one thread's need.
 *
 * Conventions as in gemm.h: row-major fp32, outputs first; dqkv is overwritten on every row
 * covered by a segment. No parameters.
 *
 * Example:
 *   size_t nw = attention_workspace_floats(257, 0);   float *work = malloc(nw * sizeof *work);
 *   DV_TRY(attention_forward(att, lse, qkv, seg, nseg, T, D, NH, work, nw));
 *   DV_TRY(attention_backward(dqkv, datt, qkv, lse, seg, nseg, T, D, NH, work, nw));
 */
#ifndef DV_ATTENTION_H
#define DV_ATTENTION_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int64_t offset; /* first row in the packed token matrix */
    int64_t length; /* number of rows (tokens), >= 1 */
} attention_segment;

/* Longest segment of a table (0 for an empty table). */
int64_t attention_max_length(const attention_segment *seg, int64_t nseg);

/* Floats of workspace that forward and backward need for segments up to max_len tokens with
 * `threads` threads (threads <= 0: omp_get_max_threads()). Per thread: 2 · max_len². */
size_t attention_workspace_floats(int64_t max_len, int threads);

/* out (T, D) rows of every segment, lse (T, NH) likewise (lse may be NULL for inference).
 * Returns DV_OK, or DV_ERR_ARG for bad shapes / a too small workspace. */
int attention_forward(float *out, float *lse, const float *qkv, const attention_segment *seg,
                      int64_t nseg, int64_t T, int64_t D, int64_t NH, float *work,
                      size_t work_floats);

/* dqkv (T, 3*D) from dout (T, D), the forward input qkv and its lse. */
int attention_backward(float *dqkv, const float *dout, const float *qkv, const float *lse,
                       const attention_segment *seg, int64_t nseg, int64_t T, int64_t D,
                       int64_t NH, float *work, size_t work_floats);

#endif
