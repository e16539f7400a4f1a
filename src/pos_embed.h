/* pos_embed — bicubic resampling of the positional-embedding table, as the official
 * DinoVisionTransformer.interpolate_pos_encoding (facebookresearch/dinov2), with its adjoint.
 *
 * Shapes:
 *   pos, dpos  (1 + M·M, D)     row 0 the CLS position (copied, never interpolated), then the
 *                               M×M grid row-major (grid row = image height direction)
 *   out, dout  (1 + h0·w0, D)   h0 = H / patch, w0 = W / patch (H, W of the NCHW image)
 *
 * Semantics (PyTorch F.interpolate(mode="bicubic", align_corners=False) on the (1, D, M, M)
 * grid, math in fp32 like the official code):
 *   offset != 0: scale_factor = ((h0 + offset)/M, (w0 + offset)/M) is given to F.interpolate,
 *     so the output size is floor(M · s) (must equal h0, w0: the official code asserts it,
 *     here DV_ERR_ARG) and the source coordinate uses the GIVEN factor, not the size ratio:
 *     src = (1/s) · (dst + 0.5) − 0.5 (recompute_scale_factor unset).
 *   offset == 0: explicit size (h0, w0); src = (M/h0) · (dst + 0.5) − 0.5.
 *   antialias == 0: cubic convolution a = −0.75 on the 4 taps floor(src)−1 .. floor(src)+2,
 *     indices clamped to the border (PyTorch upsample_bicubic2d).
 *   antialias != 0: PyTorch's separable antialiased bicubic (_upsample_bicubic2d_aa, PIL
 *     style): a = −0.5, support 2·max(scale, 1) around center = scale · (dst + 0.5), taps
 *     inside the input only, weights normalised to sum 1.
 *   Both are separable: a width pass into an (M, w0, D) buffer, then a height pass, summed in
 *   PyTorch's order (width taps inner).
 * Early return: the official code returns pos_embed unchanged when the patch count equals
 * M·M and the image is square (H == W); pos_embed_is_identity() tells when, and the caller
 * then uses pos itself (and adds dout into dpos). pos_embed_forward always resamples.
 *
 * Workspace: pos_embed_workspace_size(...) BYTES (tap tables + the (M, w0, D) buffer); pass
 * work = NULL to let the call allocate and free it (DV_ERR_NOMEM on failure).
 * Conventions as in gemm.h: row-major fp32, outputs first; dpos ACCUMULATES (+=). OpenMP over
 * grid rows. Returns DV_OK or DV_ERR_ARG / DV_ERR_NOMEM.
 *
 * Example (global crops 224 → 16×16 from a 37×37 table, official _reg settings):
 *   if (!pos_embed_is_identity(37, 224, 224, 14))
 *       DV_TRY(pos_embed_forward(pe, pos, 37, D, 16, 16, 0.0, 1, NULL, 0));
 */
#ifndef DV_POS_EMBED_H
#define DV_POS_EMBED_H

#include <stddef.h>
#include <stdint.h>

/* 1 when the official code returns pos_embed as is for an img_h × img_w image. */
int pos_embed_is_identity(int64_t M, int64_t img_h, int64_t img_w, int64_t patch);

/* Bytes of workspace for one forward or backward call with these arguments. */
size_t pos_embed_workspace_size(int64_t M, int64_t D, int64_t h0, int64_t w0, double offset,
                                int antialias);

/* out (1 + h0·w0, D) from pos (1 + M·M, D). work: NULL or >= the size above (work_bytes). */
int pos_embed_forward(float *out, const float *pos, int64_t M, int64_t D, int64_t h0, int64_t w0,
                      double offset, int antialias, void *work, size_t work_bytes);

/* dpos (1 + M·M, D) += adjointᵀ(dout (1 + h0·w0, D)). */
int pos_embed_backward(float *dpos, const float *dout, int64_t M, int64_t D, int64_t h0,
                       int64_t w0, double offset, int antialias, void *work, size_t work_bytes);

#endif
