/* dino_head — the official DINOHead (dinov2/layers/dino_head.py): an MLP with GELU, an
 * L2-normalised bottleneck and weight-normalised prototypes.
 *
 *   h = mlp(x)                       mlp.0 Linear(in, hidden), GELU, [mlp.2 Linear(hidden, hidden),
 *                                    GELU]..., mlp.{2(n-1)} Linear(hidden, bottleneck)
 *                                    (nlayers = 1: a single Linear(in, bottleneck))
 *   z = h / max(||h||, 1e-12)        F.normalize in fp32
 *   y = z · Wᵀ,  W_k = g_k · v_k / ||v_k||   last_layer (weight_norm, no bias)
 *
 * Shapes: x (n, IN), y (n, K), h and z (n, BN), W and last_layer.weight_v (K, BN),
 * last_layer.weight_g (K, 1), hidden activations (n, HID).
 * Parameters live in one flat buffer laid out by the head's table (src/params.h) with the
 * official state-dict keys mlp.{0,2,4}.{weight,bias}, last_layer.weight_g, last_layer.weight_v.
 * Official init: trunc-normal(0.02) Linear weights, zero biases, weight_g = 1 (the weight_norm
 * of a Linear(BN, K) whose weight is trunc-normal(0.02): v keeps those values, g is then
 * filled with 1).
 *
 * Conventions (as the CPU ops): outputs first; parameter gradients ACCUMULATE into the flat
 * grad buffer; dx (optional) is overwritten. The forward keeps what the backward needs in a
 * dv_head_acts sized for max_rows; x must stay valid between forward and backward.
 * The Linear layers and GELUs run on the backend h->be (src/backend.h): dv_head_init sets
 * dv_backend_cpu(), a caller may set another after it (NULL also means the CPU). The L2
 * normalisation and the weight norm are still host loops here.
 *
 *   dv_head head;  DV_TRY(dv_head_init(&head, &cfg));
 *   dv_head_acts a; DV_TRY(dv_head_acts_create(&head, max_rows, &a));
 *   DV_TRY(dv_head_forward(&head, w, &a, x, n, y));
 *   DV_TRY(dv_head_backward(&head, w, grad, &a, dy, n, dx));
 */
#ifndef DV_DINO_HEAD_H
#define DV_DINO_HEAD_H

#include <stdint.h>

#include "backend.h"
#include "params.h"

#define DV_HEAD_MAX_LAYERS 8

typedef struct {
    int64_t in_dim, out_dim; /* IN, K (prototypes) */
    int64_t nlayers;         /* Linear layers in the MLP (official 3) */
    int64_t hidden_dim, bottleneck_dim;
    int mlp_bias;            /* official true */
} dv_head_config;

typedef struct {
    dv_head_config cfg;
    dv_param_table params;
    int w_idx[DV_HEAD_MAX_LAYERS], b_idx[DV_HEAD_MAX_LAYERS]; /* mlp.{2i}.weight / .bias (-1: none) */
    int g_idx, v_idx;                                          /* last_layer.weight_g / _v */
    const dv_backend *be; /* compute backend: dv_backend_cpu() after dv_head_init */
} dv_head;

typedef struct {
    int64_t max_rows;
    const float *x;                   /* the forward input (not owned) */
    float *pre[DV_HEAD_MAX_LAYERS];   /* (n, out of layer i): Linear outputs before GELU */
    float *post[DV_HEAD_MAX_LAYERS];  /* (n, HID): GELU outputs of the hidden layers */
    float *z;                         /* (n, BN) normalised bottleneck */
    float *hnorm;                     /* (n) max(||h||, eps) */
    float *W;                         /* (K, BN) effective last-layer weight */
    float *vnorm;                     /* (K) ||v_k|| */
    float *dW;                        /* (K, BN) scratch of the backward */
    float *tmp_a, *tmp_b;             /* (n, max(HID, BN)) scratch of the backward */
} dv_head_acts;

int dv_head_init(dv_head *h, const dv_head_config *cfg);
void dv_head_free(dv_head *h);
/* Official init drawn from (seed, purpose + tensor index); purpose keeps heads apart. */
int dv_head_init_weights(const dv_head *h, float *w, uint64_t seed, uint32_t purpose);

int dv_head_acts_create(const dv_head *h, int64_t max_rows, dv_head_acts *a);
void dv_head_acts_free(dv_head_acts *a);

/* y (n, K) from x (n, IN); n <= a->max_rows. */
int dv_head_forward(const dv_head *h, const float *w, dv_head_acts *a, const float *x, int64_t n,
                    float *y);
/* grad += ∂/∂w of Σ dy ⊙ y; dx (n, IN) = ∂/∂x (may be NULL). Needs the forward's acts. */
int dv_head_backward(const dv_head *h, const float *w, float *grad, dv_head_acts *a,
                     const float *dy, int64_t n, float *dx);

/* Multiply-adds ×2 of a forward over n rows (for throughput reports). */
double dv_head_forward_flops(const dv_head *h, int64_t n);

#endif
