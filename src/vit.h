/* vit — the DINOv2 ViT backbone (DinoVisionTransformer of facebookresearch/dinov2) on the CPU:
 * architecture config, parameter table, official initialisation, forward over a PACKED batch
 * of crops of mixed resolutions, backward to every parameter and the images.
 *
 * Shape vocabulary:
 *   D embed_dim, NH heads, HS = D / NH, p patch size, R register tokens, M = img_size / p
 *   (pos-embed grid), Hf FFN hidden (MLP: int(D·mlp_ratio); SwiGLU: H, w12 has 2H rows)
 *   group g: n_g crops of H_g × W_g pixels, grid h0 = H_g/p × w0 = W_g/p, P_g = h0·w0 patches,
 *            L_g = 1 + R + P_g tokens per crop laid out [cls, registers, patches]
 *   T = Σ_g n_g·L_g rows of the packed token matrix X (T, D); crop c of group g occupies rows
 *       row0_g + c·L_g … row0_g + (c+1)·L_g − 1 (groups in order, crops in order)
 *
 * Forward (official prepare_tokens_with_masks + blocks + norm): patch embed → masked patches
 * replaced by mask_token → cls prepended → + (bicubic-interpolated) pos_embed → registers
 * inserted after cls (no pos embed) → for each block x += ls1(attn(norm1(x))),
 * x += ls2(ffn(norm2(x))) with attention block-diagonal per crop → final norm. Every GEMM,
 * LayerNorm and FFN runs over all T rows at once.
 *
 * Outputs (packed, in the acts): x_norm (T, D) = norm(x) — its rows are x_norm_clstoken,
 * x_norm_regtokens, x_norm_patchtokens of each crop — and x_prenorm (T, D); dv_vit_gather()
 * copies a group's part out in the official (n, ·, D) layouts. Intermediate blocks
 * (get_intermediate_layers): inter_raw[k] = output of block inter_blocks[k], inter_norm[k] =
 * norm(inter_raw[k]) (same final norm), both (T, D).
 *
 * Stochastic depth (training only, rate per block from drop_path_rate / drop_path_uniform): a
 * branch runs on a subset of the crops of each group and is added back scaled, as official
 * drop_add_residual_stochastic_depth(_list): keep = max(int(b·(1−rate)), 1) of the b crops of
 * a group, the first `keep` of a random permutation drawn from dv_rng (seed,
 * DV_RNG_DROPPATH + 2·block + branch, step, group), scale b/keep (dv_vit_droppath_subset).
 * Rule (dv_vit_droppath_rule): DV_DROPPATH_LIST (default) = official NestedTensorBlock list path
 * that the student uses in training: the subset method for every rate > 0;
 * DV_DROPPATH_TENSOR = official Block.forward on one tensor: subset method when rate > 0.1,
 * per-sample DropPath (Bernoulli keep prob 1−rate from the same stream, kept crops scaled
 * 1/(1−rate)) when 0 < rate <= 0.1. Eval: no drop path. The draws are dv_rng's, not
 * torch.randperm's / bernoulli_'s: the same distribution and rule, other samples — and
 * independent of ranks and threads. Streams are distinct for depth <= 127.
 *
 * Memory: dv_vit_acts holds every activation the backward needs, allocated once for up to
 * max_tokens rows (no malloc per block; only the small attention / pos-embed workspaces grow
 * when a longer crop or larger grid first appears). Stored per block: x_in, qkv, lse, attention
 * output, proj output, x_mid, LN stats, FFN pre-activation, FFN output; LayerNorm outputs and
 * the GELU/SwiGLU output are recomputed in the backward. Inference acts (training = 0) keep
 * one set of block buffers and cannot run the backward.
 *
 * Masks: a nonzero mask entry replaces that patch embedding by mask_token before the positional
 * embedding is added (official torch.where(masks, mask_token, x)); the gradient of those rows
 * goes to mask_token, not to the patch embedding. get_intermediate_layers has no masks: pass
 * masks = NULL to reproduce it.
 *
 * One dv_vit_acts per concurrent forward; the model and the weights are only read.
 *
 * Backend: every compute op (Linear/GEMM, LayerNorm, GELU, SwiGLU, attention, LayerScale
 * residual, patch embed, pos-embed resampling) goes through the table m->be (src/backend.h).
 * dv_vit_init sets it to dv_backend_cpu(); a caller may set m->be to another backend after
 * dv_vit_init (NULL also means the CPU). Weights, gradients, images and activations must then
 * live in that backend's memory.
 *
 * Conventions: as the CPU ops (src/ops.h) — row-major fp32, parameters in one flat buffer laid
 * out by m->params (src/params.h), gradients ACCUMULATE (+=) into a flat buffer of the same
 * layout, image gradients are overwritten. Functions return DV_OK or a dv_status.
 *
 * Example:
 *   dv_vit_config cfg;  DV_TRY(dv_vit_config_preset(&cfg, "vit_small", 14));
 *   dv_vit m;           DV_TRY(dv_vit_init(&m, &cfg));
 *   float *w = calloc(m.params.numel, sizeof *w);  DV_TRY(dv_vit_init_weights(&m, w, seed));
 *   dv_vit_acts *a;     DV_TRY(dv_vit_acts_create(&m, 32 * 257, 1, 0, &a));
 *   dv_vit_group g = {.n = 32, .H = 224, .W = 224, .images = img, .masks = NULL};
 *   dv_vit_fwd_opts o = {.training = 1, .seed = 0, .step = it};
 *   DV_TRY(dv_vit_forward(&m, w, a, &g, 1, &o));
 *   dv_vit_gather(cls, a->x_norm, a, 0, DV_VIT_CLS);               // (32, D)
 *   ... dnorm (T, D) = dloss / d a->x_norm ...
 *   dv_vit_grads_in gi = {.d_norm = dnorm};
 *   DV_TRY(dv_vit_backward(&m, w, grad, a, &gi, NULL));
 */
#ifndef DV_VIT_H
#define DV_VIT_H

#include <stddef.h>
#include <stdint.h>

#include "attention.h"
#include "backend.h"
#include "params.h"

typedef enum { DV_FFN_MLP = 0, DV_FFN_SWIGLU = 1, DV_FFN_IDENTITY = 2 } dv_ffn_kind;

typedef struct {
    int64_t patch_size, embed_dim, depth, num_heads;
    dv_ffn_kind ffn;    /* "mlp" | "swiglu" (= official "swiglufused") | "identity" */
    double mlp_ratio;   /* 4 for every official arch */
    int64_t ffn_hidden; /* 0: derived by dv_vit_config_finalize (see dv_vit_ffn_hidden) */
    int64_t num_register_tokens;
    int64_t img_size;  /* pos-embed grid M = img_size / patch_size */
    double layerscale; /* LayerScale init value; 0 = no LayerScale (no ls*.gamma) */
    int qkv_bias, proj_bias, ffn_bias;
    double norm_eps; /* 1e-6 */
    double interpolate_offset;
    int interpolate_antialias;
    double drop_path_rate;
    int drop_path_uniform; /* 1: same rate in every block; 0: linspace(0, rate, depth) */
    float image_mean[3], image_std[3]; /* kept for the weight files; not used by the model */
} dv_vit_config;

/* The official defaults of the ssl config's student section (vit_large/16, layerscale 1e-5,
 * biases on, mlp, no registers, offset 0.1, no antialias, drop path 0.3 uniform, img 224)
 * with ImageNet mean/std. */
void dv_vit_config_defaults(dv_vit_config *c);
/* Defaults, then the dims of arch "vit_small" (384/12/6), "vit_base" (768/12/12), "vit_large"
 * (1024/24/16), "vit_giant2" (1536/40/24); a trailing "_memeff" is ignored. ffn stays as set by
 * the caller afterwards (official giant2 takes ffn_layer from the config too). */
int dv_vit_config_preset(dv_vit_config *c, const char *arch, int64_t patch_size);
/* Parse "mlp" | "swiglu" | "swiglufused" | "identity". */
int dv_vit_ffn_parse(const char *s, dv_ffn_kind *out);
const char *dv_vit_ffn_name(dv_ffn_kind k);
/* MLP: int(D·mlp_ratio); SwiGLU: (int(h·2/3) + 7) / 8 · 8 with h = int(D·mlp_ratio); identity 0. */
int64_t dv_vit_ffn_hidden(const dv_vit_config *c);
/* Validate (divisibility, ranges) and fill ffn_hidden when 0 (a nonzero value must match). */
int dv_vit_config_finalize(dv_vit_config *c);
/* Drop-path rate of block i (uniform, or torch.linspace(0, rate, depth) in float32). */
double dv_vit_drop_rate(const dv_vit_config *c, int64_t block);

/* Parameter indices into m->params for one block (-1 when the tensor does not exist). For
 * SwiGLU fc1 = mlp.w12, fc2 = mlp.w3. */
typedef struct {
    int norm1_w, norm1_b, qkv_w, qkv_b, proj_w, proj_b, ls1;
    int norm2_w, norm2_b, fc1_w, fc1_b, fc2_w, fc2_b, ls2;
} dv_vit_block_params;

typedef struct {
    dv_vit_config cfg;     /* finalized */
    dv_param_table params; /* official keys, official state-dict order */
    int cls_token, pos_embed, register_tokens, mask_token, pe_w, pe_b, norm_w, norm_b;
    dv_vit_block_params *blk; /* depth entries */
    int64_t grid;             /* M */
    const dv_backend *be;     /* compute backend: dv_backend_cpu() after dv_vit_init */
} dv_vit;

/* The table of a finalized copy of cfg, with m->be = dv_backend_cpu(). */
int dv_vit_init(dv_vit *m, const dv_vit_config *cfg);
void dv_vit_free(dv_vit *m);

/* Official initialisation into w (m->params.numel floats), each tensor from its own stream
 * dv_rng(seed, DV_RNG_INIT + tensor index, 0, 0) (independent of ranks and threads):
 * Linear weights (qkv, proj, fc1/fc2, w12/w3) trunc_normal(std 0.02, a = −2, b = 2 absolute,
 * i.e. torch.nn.init.trunc_normal_ defaults: rejection-sampled, truncation at ±100σ never
 * happens in practice), Linear biases 0, pos_embed trunc_normal 0.02, cls_token and
 * register_tokens normal(std 1e-6), mask_token 0, LayerScale gamma = cfg.layerscale,
 * LayerNorm weight 1 / bias 0, patch_embed.proj weight and bias U(−1/√fan_in, 1/√fan_in) with
 * fan_in = 3·p·p (PyTorch's Conv2d default, kaiming_uniform(a=√5); the official init_weights
 * leaves the conv alone). */
int dv_vit_init_weights(const dv_vit *m, float *w, uint64_t seed);

/* ---- packed batch ---- */

typedef struct {
    int64_t n;            /* crops in the group (>= 1) */
    int64_t H, W;         /* pixels, multiples of patch_size */
    const float *images;  /* (n, 3, H, W) normalised NCHW */
    const uint8_t *masks; /* (n, h0·w0), nonzero = masked (mask token); NULL = none */
} dv_vit_group;

typedef struct {
    int64_t n, H, W, h0, w0, P, L; /* crops, pixels, grid, patches, tokens per crop */
    int64_t row0;                  /* first row in X */
    int64_t crop0;                 /* index of its first crop among all crops */
    const float *images;
    const uint8_t *masks;
} dv_vit_group_layout;

typedef enum { DV_DROPPATH_LIST = 0, DV_DROPPATH_TENSOR = 1 } dv_vit_droppath_rule;

/* Shard-unit hook (FSDP, src/shard.h): unit 0 = embeddings + final norm, unit i + 1 = blocks.i.
 * Called with DV_VIT_UNIT_FWD before a unit's forward (unit 0 before the tokens), DV_VIT_UNIT_BWD
 * before a unit's backward (unit 0 before the final norm's), and DV_VIT_UNIT_GRAD_DONE once a
 * unit's parameter gradients are complete (blocks right after their backward, unit 0 last).
 * The hook may rewrite the unit's part of the weight buffer (gathering it); a non-OK status
 * stops the pass. NULL: no calls. */
typedef enum { DV_VIT_UNIT_FWD, DV_VIT_UNIT_BWD, DV_VIT_UNIT_GRAD_DONE } dv_vit_unit_phase;
typedef int (*dv_vit_unit_fn)(void *ctx, int64_t unit, dv_vit_unit_phase phase);

typedef struct {
    int training;        /* 1: stochastic depth (acts must be training acts) */
    uint64_t seed, step; /* drop-path stream keys */
    dv_vit_droppath_rule droppath_rule;
    int n_inter;                 /* intermediate blocks to output (<= acts max_inter) */
    const int64_t *inter_blocks; /* n_inter block indices */
    dv_vit_unit_fn unit_hook;    /* NULL: none (see above) */
    void *unit_ctx;
} dv_vit_fwd_opts;

/* One residual branch of one block: which rows ran it. */
typedef struct {
    int full;               /* 1: every row, scale 1 (no gather) */
    int64_t nrows;          /* rows that ran the branch (T when full) */
    int64_t *rows;          /* (T) row of X of gathered row i (subset only) */
    attention_segment *seg; /* (ncrops) segments of the gathered rows (subset only) */
    int64_t nseg;
    int64_t *grp_start; /* (ngroups + 1) gathered-row range of each group */
    float *grp_scale;   /* (ngroups) b/keep, or 1/keep_prob for per-sample DropPath */
} dv_vit_branch;

typedef struct {
    float *x_in;                /* (T, D) block input (training acts; aliases in inference) */
    float *ln1_mean, *ln1_rstd; /* (T) */
    float *qkv;                 /* (T, 3D) */
    float *lse;                 /* (T, NH) */
    float *att;                 /* (T, D) attention output before proj */
    float *y1;                  /* (T, D) attn.proj output (before ls1) */
    float *x_mid;               /* (T, D) x_in + ls1 branch */
    float *ln2_mean, *ln2_rstd; /* (T) */
    float *h_pre;               /* (T, Hf) fc1 output (MLP) or (T, 2H) w12 output (SwiGLU) */
    float *y2;                  /* (T, D) FFN output (before ls2) */
    dv_vit_branch br[2];        /* 0 attention, 1 FFN */
} dv_vit_block_acts;

typedef struct {
    /* capacity and model dims */
    int64_t max_tokens;
    int64_t D, R;
    int training;
    int max_inter;
    /* layout of the last forward */
    int64_t T, ncrops, ngroups;
    dv_vit_group_layout *grp; /* (max_tokens) */
    attention_segment *seg;   /* (max_tokens) one per crop */
    int n_inter;
    int64_t *inter_blocks; /* (max_inter) */
    int fwd_training;      /* training flag of the last forward */
    /* activations */
    float **xs;                       /* depth + 1: xs[i] = input of block i, xs[depth] = x_prenorm
                                         (inference acts: all the same buffer, updated in place) */
    float *x0;                        /* = xs[0]: tokens_in (training acts) */
    dv_vit_block_acts *blk;           /* depth (inference acts: all share one set of buffers) */
    float *x_prenorm;                 /* = xs[depth] (T, D) */
    float *x_norm;                    /* (T, D) */
    float *norm_mean, *norm_rstd;     /* (T) */
    float **inter_raw, **inter_norm;  /* max_inter × (T, D) */
    float **inter_mean, **inter_rstd; /* max_inter × (T) */
    /* scratch (forward and backward) */
    float *s_x;  /* (T, D) gathered branch input */
    float *s_ln; /* (T, D) LayerNorm output */
    float *s_h;  /* (T, Hf) activation output */
    float *cols; /* (T · 3p²) patch-embed unfold */
    float *pos;  /* (T, D) interpolated pos embed of one group */
    void *pos_work;
    size_t pos_work_bytes;
    float *att_work;
    size_t att_work_floats;
    int64_t *perm; /* (max_tokens) */
    /* backward scratch (training acts) */
    float *g_x;   /* (T, D) gradient of the residual stream */
    float *g_y;   /* (T, D) branch output gradient */
    float *g_att; /* (T, D) */
    float *g_ln;  /* (T, D) */
    float *g_sub; /* (T, D) LN input gradient of a subset branch */
    float *g_qkv; /* (T, 3D) */
    float *g_h;   /* (T, max(Hf, 2H)) */
    void *arena;  /* the one allocation every buffer above is carved from */
    size_t bytes; /* its size */
} dv_vit_acts;

/* Allocate acts for up to max_tokens rows (Σ n·(1+R+P) over the groups of one call).
 * training = 1 keeps per-block activations and backward scratch; max_inter = how many
 * intermediate outputs a forward may request. */
int dv_vit_acts_create(const dv_vit *m, int64_t max_tokens, int training, int max_inter,
                       dv_vit_acts **out);
void dv_vit_acts_free(dv_vit_acts *a);
/* Bytes dv_vit_acts_create would allocate (memory planning). */
size_t dv_vit_acts_bytes(const dv_vit *m, int64_t max_tokens, int training, int max_inter);
/* Rows a packed batch of these groups needs. */
int64_t dv_vit_tokens(const dv_vit *m, const dv_vit_group *groups, int64_t ngroups);

/* The kept crops of one group for one (block, branch): idx[0..*keep) ascending, *scale the
 * residual scale. rule as in dv_vit_fwd_opts; rate the block's rate (> 0). idx holds b. */
void dv_vit_droppath_subset(uint64_t seed, uint64_t step, int64_t block, int branch, int64_t group,
                            int64_t b, double rate, dv_vit_droppath_rule rule, int64_t *idx,
                            int64_t *keep, float *scale, int64_t *perm_scratch);

int dv_vit_forward(const dv_vit *m, const float *w, dv_vit_acts *a, const dv_vit_group *groups,
                   int64_t ngroups, const dv_vit_fwd_opts *opts);

/* Gradients of a loss with respect to the outputs of the last forward, each (T, D) packed
 * like the outputs, or NULL (zero). Rows a loss does not use must be 0. */
typedef struct {
    const float *d_norm;              /* w.r.t. a->x_norm */
    const float *d_prenorm;           /* w.r.t. a->x_prenorm */
    const float *const *d_inter_raw;  /* n_inter entries (entries may be NULL) or NULL */
    const float *const *d_inter_norm; /* likewise */
    dv_vit_unit_fn unit_hook;         /* NULL: none (see dv_vit_unit_fn) */
    void *unit_ctx;
} dv_vit_grads_in;

/* grad (m->params.numel) += dloss/dparams. dimages: NULL, or ngroups pointers (entries may be
 * NULL) to (n, 3, H, W) buffers that receive dloss/dimages (overwritten). Needs training acts
 * and the activations of the last forward (the acts' scratch is overwritten). */
int dv_vit_backward(const dv_vit *m, const float *w, float *grad, dv_vit_acts *a,
                    const dv_vit_grads_in *gin, float *const *dimages);

typedef enum { DV_VIT_CLS, DV_VIT_REG, DV_VIT_PATCH, DV_VIT_ALL } dv_vit_part;

/* dst = part of group g of a packed (T, D) matrix: CLS (n, D), REG (n, R, D),
 * PATCH (n, P, D), ALL (n, L, D). */
void dv_vit_gather(float *dst, const float *packed, const dv_vit_acts *a, int64_t g,
                   dv_vit_part part);
/* packed rows of that part += src (same shapes as dv_vit_gather). */
void dv_vit_scatter_add(float *packed, const float *src, const dv_vit_acts *a, int64_t g,
                        dv_vit_part part);

/* FLOPs (2 per multiply-add) of the GEMMs and attention products of one forward over these
 * groups, and of the backward (dX and dW products, attention backward with its recompute;
 * with_dimages adds the patch-embed input-gradient GEMM). */
double dv_vit_forward_flops(const dv_vit *m, const dv_vit_group *groups, int64_t ngroups);
double dv_vit_backward_flops(const dv_vit *m, const dv_vit_group *groups, int64_t ngroups,
                             int with_dimages);

#endif
