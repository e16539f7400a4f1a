/* patch_embed — the ViT patch embedding: Conv2d(C, D, kernel = stride = p) as unfold + GEMM.
 *
 * Shapes:
 *   img   (N, C, H, W)       NCHW fp32 images as PyTorch; H and W multiples of p
 *   GH = H / p, GW = W / p,  P = GH · GW patches per image, K = C · p · p
 *   cols  (N · P, K)         unfolded patches (workspace); column c·p·p + ky·p + kx, i.e. the
 *                            flattening order of the weight
 *   w     (D, C, p, p)       patch_embed.proj.weight, used as (D, K); b (D) proj.bias (may be NULL)
 *   out   rows of D          patch (gy, gx) of image n is row n·tok_stride + gy·GW + gx, the
 *                            token order of PatchEmbed (flatten(2).transpose(1, 2));
 *                            tok_stride >= P lets the rows land directly in a packed token
 *                            matrix (e.g. tok_stride = 1 + R + P with out pointing at the first
 *                            patch token of the first segment). Other rows are not touched.
 *
 * Workspace: patch_embed_workspace_floats(N, C, H, W) floats (= N·C·H·W) for cols.
 * Conventions as in gemm.h: row-major fp32, outputs first; dw, db ACCUMULATE (+=); dimg is
 * overwritten (patches do not overlap). OpenMP over patch rows; GEMMs on OpenBLAS.
 *
 * Example (N crops of 224², patch 14, packed with a CLS token and R registers):
 *   patch_embed_forward(X + (off0 + 1 + R) * D, cols, img, pw, pb, N, 3, 224, 224, 14, D,
 *                       1 + R + 256);
 */
#ifndef DV_PATCH_EMBED_H
#define DV_PATCH_EMBED_H

#include <stddef.h>
#include <stdint.h>

size_t patch_embed_workspace_floats(int64_t N, int64_t C, int64_t H, int64_t W);

/* cols (N·P, K) from img (N, C, H, W). */
void patch_embed_unfold(float *cols, const float *img, int64_t N, int64_t C, int64_t H,
                        int64_t W, int64_t p);

/* out rows = unfold(img) · wᵀ + b; cols is the workspace (holds the unfolded patches after). */
void patch_embed_forward(float *out, float *cols, const float *img, const float *w,
                         const float *b, int64_t N, int64_t C, int64_t H, int64_t W, int64_t p,
                         int64_t D, int64_t tok_stride);

/* From dout (same row layout as out): dw (D, K) += doutᵀ · unfold(img) (may be NULL),
 * db (D) += Σ rows of dout (may be NULL), dimg (N, C, H, W) = fold(dout · w) (may be NULL).
 * img is the forward input (unfolded again into cols); cols is the workspace. */
void patch_embed_backward(float *dimg, float *dw, float *db, float *cols, const float *dout,
                          const float *img, const float *w, int64_t N, int64_t C, int64_t H,
                          int64_t W, int64_t p, int64_t D, int64_t tok_stride);

#endif
