/* ops — convenience header: every CPU compute op of the ViT backbone (the fp32 oracle ops).
 *
 *   gemm.h         gemm_f32, gemm_f32_strided_batched, linear_forward/backward
 *   layernorm.h    layernorm_forward/backward
 *   activations.h  gelu_forward/backward, swiglu_forward/backward
 *   softmax.h      softmax_/log_softmax_ forward/backward
 *   attention.h    attention_forward/backward over packed segments
 *   layerscale.h   layerscale_residual_[subset_]forward/backward
 *   patch_embed.h  patch_embed_forward/backward (unfold + GEMM)
 *   pos_embed.h    pos_embed_forward/backward (official bicubic interpolate_pos_encoding)
 *
 * Shared conventions: row-major fp32; outputs first, then inputs, then sizes (int64_t); parameter
 * gradients accumulate (+=); input gradients are overwritten unless a function says otherwise;
 * OpenMP inside each call; no global state; workspaces come from the caller (size queries).
 */
#ifndef DV_OPS_H
#define DV_OPS_H

#include "activations.h"
#include "attention.h"
#include "gemm.h"
#include "layernorm.h"
#include "layerscale.h"
#include "patch_embed.h"
#include "pos_embed.h"
#include "softmax.h"

#endif
