/* params — the parameter table of a module: every tensor named by its official PyTorch
 * state-dict key, with its shape and its place in ONE flat fp32 buffer.
 *
 * A module (ViT backbone, DINO head, iBOT head) builds a table once; the parameters, their
 * gradients, AdamW moments and the EMA teacher are flat buffers of tab.numel floats laid out by
 * it. The table drives weight decay, layer-wise lr decay, the patch-embed lr multiplier,
 * last-layer freezing, sharding and checkpoint I/O (io/weights.h) — no hand-written index lists.
 *
 * Conventions:
 *   offset, numel   in floats (elements), never bytes; tensors are contiguous and in insertion
 *                   order (the official state-dict order), offsets[i+1] = offsets[i] + numel[i]
 *   shape           up to 4 dims, row-major as PyTorch (e.g. qkv.weight (3D, D))
 *   layer_id        what official layer-wise lr decay computes (dinov2/utils/param_groups.py
 *                   get_vit_lr_decay_rate): backbone 0 = pos_embed / patch_embed / mask_token /
 *                   cls_token, i+1 = blocks.i.*, num_layers+1 = everything else (final norm —
 *                   and register_tokens, which the official rule does not list); heads
 *                   (num_layers = 0) have layer_id 1, i.e. lr multiplier 1
 *   flags           DV_PARAM_NO_WD: official wd_multiplier 0 (name ends with ".bias" or
 *                   contains "norm" or "gamma"; NOT pos_embed / tokens, which the official
 *                   code decays), DV_PARAM_PATCH_EMBED: name contains "patch_embed",
 *                   DV_PARAM_LAST_LAYER: name contains "last_layer"
 *
 * Example:
 *   dv_param_table tab;
 *   dv_params_init(&tab, depth);
 *   int64_t shp[2] = {3 * D, D};
 *   DV_TRY(dv_params_add(&tab, "blocks.0.attn.qkv.weight", 2, shp, -1, 0, &idx)); // official rules
 *   float *w = malloc(tab.numel * sizeof *w);  float *qkv = w + tab.t[idx].offset;
 *   dv_params_free(&tab);
 */
#ifndef DV_PARAMS_H
#define DV_PARAMS_H

#include <stddef.h>
#include <stdint.h>

#define DV_PARAM_NAME_MAX 128
#define DV_PARAM_MAX_DIMS 4

enum {
    DV_PARAM_NO_WD = 1u << 0,       /* weight-decay multiplier 0 */
    DV_PARAM_PATCH_EMBED = 1u << 1, /* lr multiplier x optim.patch_embed_lr_mult */
    DV_PARAM_LAST_LAYER = 1u << 2   /* frozen for freeze_last_layer_epochs */
};

typedef struct {
    char name[DV_PARAM_NAME_MAX]; /* official state-dict key */
    int ndim;
    int64_t shape[DV_PARAM_MAX_DIMS];
    size_t offset; /* floats into the flat buffer */
    size_t numel;
    int layer_id;
    unsigned flags; /* DV_PARAM_* */
} dv_param;

typedef struct {
    dv_param *t; /* n tensors */
    int n, cap;
    size_t numel;   /* floats of the flat buffer = Σ numel */
    int num_layers; /* blocks of the module for lr decay (0 for heads) */
} dv_param_table;

void dv_params_init(dv_param_table *tab, int num_layers);
void dv_params_free(dv_param_table *tab);

/* Append a tensor. layer_id < 0: the official rule (dv_param_official_layer_id); flags is
 * OR-ed with dv_param_official_flags(name). Fails (DV_ERR_ARG) on a duplicate name, a name too
 * long, ndim outside 1..4 or a dimension < 0. *index (may be NULL) receives its index. */
int dv_params_add(dv_param_table *tab, const char *name, int ndim, const int64_t *shape,
                  int layer_id, unsigned flags, int *index);

/* Index of a tensor by name, or -1. */
int dv_params_find(const dv_param_table *tab, const char *name);

/* Official name rules (param_groups.py). is_backbone selects the force_is_backbone branch. */
unsigned dv_param_official_flags(const char *name);
int dv_param_official_layer_id(const char *name, int num_layers, int is_backbone);

/* wd multiplier (0 or 1) and lr multiplier
 * layerwise_decay^(num_layers + 1 - layer_id) · (patch_embed ? patch_embed_lr_mult : 1). */
double dv_param_wd_mult(const dv_param *p);
double dv_param_lr_mult(const dv_param *p, int num_layers, double layerwise_decay,
                        double patch_embed_lr_mult);

/* "(192,64)" into buf; returns buf. */
char *dv_param_shape_str(const int64_t *shape, int ndim, char *buf, size_t len);

#endif
