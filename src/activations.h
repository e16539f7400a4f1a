/* activations — exact-erf GELU and the SwiGLU gate of the ViT feed-forward blocks.
 *
 * Shapes:
 *   GELU:   x, y, dx, dy  (n)        any contiguous array of n elements (e.g. (T, 4*D))
 *           y = 0.5 · x · (1 + erf(x / √2))          (PyTorch nn.GELU(), approximate='none';
 *           erf to 2e-7 absolute by a vectorisable fit: see activations.c)
 *   SwiGLU: x12, dx12     (T, 2*H)   the w12 Linear output, per row [x1 (H) | x2 (H)]
 *           y, dy         (T, H)     y = silu(x1) · x2,  silu(a) = a / (1 + exp(-a))
 *           (official SwiGLUFFN: x1, x2 = w12(x).chunk(2, dim=-1); w3(silu(x1) * x2))
 *
 * Conventions as in gemm.h: row-major fp32, outputs first. No parameters here; input
 * gradients are overwritten. OpenMP over elements / rows.
 *
 * Example:
 *   gelu_forward(h, h_pre, T * 4 * D);          gelu_backward(dh_pre, dh, h_pre, T * 4 * D);
 *   swiglu_forward(hid, x12, T, H);             swiglu_backward(dx12, dhid, x12, T, H);
 */
#ifndef DV_ACTIVATIONS_H
#define DV_ACTIVATIONS_H

#include <stdint.h>

/* y may alias x. */
void gelu_forward(float *y, const float *x, int64_t n);
/* dx = dy · (Φ(x) + x·φ(x)); dx may alias dy (not x). */
void gelu_backward(float *dx, const float *dy, const float *x, int64_t n);

/* y (T, H) from x12 (T, 2H); y must not alias x12. */
void swiglu_forward(float *y, const float *x12, int64_t T, int64_t H);
/* dx12 (T, 2H) overwritten from dy (T, H) and the forward input x12; no aliasing. */
void swiglu_backward(float *dx12, const float *dy, const float *x12, int64_t T, int64_t H);

#endif
