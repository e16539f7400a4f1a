/* ssl — the DINOv2 self-supervised meta-architecture (official SSLMetaArch) on one rank:
 * student and teacher {backbone, dino_head, [ibot_head]}, the DINO + iBOT + KoLeo objective,
 * teacher normalisation (softmax centering or Sinkhorn-Knopp), per-module gradient clipping,
 * AdamW with the official parameter groups and schedules, and the teacher EMA.
 *
 * One training iteration (dv_ssl_step), as the official train loop:
 *   1. schedule values at iteration `it` (lr, wd, momentum, teacher temperature, last-layer lr)
 *   2. teacher backbone (eval, no drop path) on the 2B global crops; CLS halves swapped; the
 *      masked patch tokens gathered; head(s); centering or Sinkhorn-Knopp → targets
 *   3. student backbone (training: efficient stochastic depth) on the packed [2B global (masked),
 *      L·B local] crops; head(s) on [local CLS; global CLS; masked patches]
 *   4. losses: DINO over the 2(1+L) cross-view pairs / Z, KoLeo (per rank, fp32) on the global
 *      CLS of each crop half, iBOT on the masked patches; backward through heads and backbone
 *   5. clip each student module (backbone, dino_head, ibot_head) at optim.clip_grad
 *   6. AdamW on every module, then teacher ← m·teacher + (1−m)·student
 * A non-finite loss term stops the step before any update (DV_ERR_NUMERIC, naming the term).
 *
 * Memory: every buffer is allocated once by dv_ssl_create for the batch shape (B images per
 * rank, L local crops, crop sizes and the static masked-token bound). Parameters of each
 * module are flat fp32 buffers laid out by its parameter table (student, teacher, grad, AdamW
 * moments). Collective sums (Sinkhorn-Knopp, centering, clipping norms) go through the
 * reduction hook; NULL = one rank.
 *
 * Backend: the backbone, the heads, AdamW and the EMA run on s->be (src/backend.h), the CPU
 * after dv_ssl_create; dv_ssl_set_backend changes it for all of them. The losses, centering,
 * Sinkhorn-Knopp, clipping and the buffers themselves are still host code and host memory.
 */
#ifndef DV_SSL_H
#define DV_SSL_H

#include <stdint.h>

#include "adamw.h"
#include "backend.h"
#include "batch.h"
#include "centering.h"
#include "comm.h"
#include "config.h"
#include "cosine_sched.h"
#include "dino_head.h"
#include "grad_scaler.h"
#include "shard.h"
#include "vit.h"

typedef enum { DV_MOD_BACKBONE = 0, DV_MOD_DINO_HEAD = 1, DV_MOD_IBOT_HEAD = 2, DV_MOD_COUNT = 3 } dv_module_id;

extern const char *const dv_module_names[DV_MOD_COUNT]; /* "backbone", "dino_head", "ibot_head" */

/* One module's state. Unsharded (one rank, or NO_SHARD): student, teacher, grad, exp_avg and
 * exp_avg_sq hold all numel elements and w_* alias them. Sharded (FSDP, dv_ssl_set_comm with
 * more than one rank): they hold this rank's slices (local_numel, src/shard.h layout) and w_student,
 * w_teacher, w_grad are the full-size compute buffers the units are gathered into (fp32 values of
 * what crossed the wire in param_dtype) and reduced from. */
typedef struct {
    int present;
    const dv_param_table *tab;
    size_t numel, local_numel;
    float *student, *teacher, *grad, *exp_avg, *exp_avg_sq; /* local_numel each */
    float *w_student, *w_teacher, *w_grad;                  /* numel each */
    dv_adamw_range *ranges;                                  /* one per tensor (local indices) */
    int64_t nranges;
    int sharded;
    dv_cfg_sharding strategy;        /* compute_precision.student.<module>.sharding_strategy */
    dv_dtype param_dtype, teacher_param_dtype, reduce_dtype;
    dv_shard_plan plan;              /* when sharded */
} dv_ssl_module;

typedef struct {
    double dino_local, dino_global; /* as they enter the total (× dino.loss_weight) */
    double koleo;                   /* × dino.koleo_loss_weight, both crop halves */
    double ibot;                    /* × ibot.loss_weight */
    double total;
    double lr, wd, momentum, teacher_temp, last_layer_lr;
    double grad_norm[DV_MOD_COUNT]; /* before clipping */
    int64_t n_masked;
    int skipped;       /* 1: inf/NaN gradients, AdamW skipped (dynamic loss scaling) */
    double loss_scale; /* the scale this step's gradients were reduced with (1 = none) */
} dv_ssl_stats;

typedef struct {
    const dv_config *cfg;
    const dv_backend *be; /* compute backend of vit, heads, AdamW and EMA (dv_ssl_set_backend) */
    dv_vit vit;
    dv_head head[2]; /* dino, ibot (ibot only when ibot.separate_head) */
    int separate;
    dv_ssl_module mod[DV_MOD_COUNT];
    dv_center center_dino, center_ibot;
    dv_schedules sched;
    int64_t B, L, G, l, N, D, K[2], max_masked;
    int64_t step;        /* the next iteration to run */
    int64_t adamw_steps; /* AdamW updates made (torch's optimizer step count: skips excluded) */
    int do_dino, do_koleo, do_ibot;
    dv_allreduce_fn reduce;
    void *reduce_ctx;
    int64_t world;
    dv_comm *comm; /* NULL: one rank */
    int sharded;   /* any module sharded */
    dv_grad_scaler scaler;
    float *nos_stage;  /* NO_SHARD over ranks: the 16-bit all-reduce staging */
    int64_t inject_inf_at; /* tests: this iteration's gradient gets an inf on rank 0 (-1: never) */
    /* buffers */
    dv_vit_acts *sa, *ta;
    dv_head_acts sh[2], th[2];
    float *t_in, *t_out, *p_dino, *p_ibot;
    float *s_in, *s_out, *d_out, *d_in;
    float *d_norm, *koleo_grad, *tmp_cls;
} dv_ssl;

/* The backbone architecture of a finalized config (student section, global crop size as the
 * pos-embed grid). */
int dv_ssl_vit_config(const dv_config *c, dv_vit_config *vc);

/* Build the model for batches of B images per rank (c finalized; the pointer is kept).
 * Parameters are initialised officially from train.seed; the teacher starts as the student. */
int dv_ssl_create(dv_ssl *s, const dv_config *c, int64_t B);
void dv_ssl_free(dv_ssl *s);

/* Teacher targets, student forward, losses and student gradients (zeroed first) for one
 * batch, with the schedule values of iteration `it`. No parameter update. */
int dv_ssl_forward_backward(dv_ssl *s, const dv_batch *b, int64_t it, dv_ssl_stats *st);
/* One whole iteration (forward_backward, clip, AdamW, EMA) at s->step; then s->step++. */
int dv_ssl_step(dv_ssl *s, const dv_batch *b, dv_ssl_stats *st);

/* Train data-parallel over comm's ranks (each holding B images of the global batch): the
 * Sinkhorn-Knopp and centering sums become all-reductions and the student gradients are
 * averaged before clipping, so N ranks compute the step of one rank with the whole global
 * batch, up to reduction order and 16-bit rounding — except KoLeo, which is per rank by
 * definition (official). Per module, compute_precision.student.<module>.sharding_strategy:
 *   NO_SHARD       replicas; gradients all-reduced in reduce_dtype
 *   SHARD_GRAD_OP  FSDP (src/shard.h): each unit all-gathered in param_dtype before its forward
 *                  (teacher: compute_precision.teacher.<module>.param_dtype) and kept for the
 *                  backward; its gradients reduce-scattered in reduce_dtype right after its
 *                  backward; AdamW, clipping (global norms) and the EMA run on the slices
 *   FULL_SHARD     the same, gathering each unit again before its backward
 * With one rank nothing is sharded and nothing is rounded. A 16-bit float reduction uses dynamic
 * loss scaling when compute_precision.grad_scaler (src/grad_scaler.h). Call it right after
 * dv_ssl_create, before loading a checkpoint; the current parameters are kept (sliced). */
int dv_ssl_set_comm(dv_ssl *s, dv_comm *comm);

/* Collective: the full fp32 values (numel) of a module's student master weights, teacher,
 * gradient, AdamW exp_avg or exp_avg_sq (which = 0 .. 4) into full — a copy when unsharded, an
 * exact all-gather otherwise. */
int dv_ssl_full_values(dv_ssl *s, int module, int which, float *full);

/* Run the backbone, the heads, AdamW and the EMA on be (NULL: the CPU). */
void dv_ssl_set_backend(dv_ssl *s, const dv_backend *be);

/* FLOPs (2 per multiply-add) of one iteration's GEMMs and attention (teacher forward,
 * student forward + backward, heads), for throughput reports. */
double dv_ssl_step_flops(const dv_ssl *s);

#endif
