/* config — key table, YAML loading/printing, overrides, finalize, command line.
 * See config.h for the conventions. No MPI here: every rank parses the same inputs. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>

#include "err.h"

/* ------------------------------------------------------------------------------------------ */
/* The key table                                                                              */
/* ------------------------------------------------------------------------------------------ */

static const char *const k_sharding[] = {"NO_SHARD", "SHARD_GRAD_OP", "FULL_SHARD", NULL};
static const char *const k_dtype[] = {"fp32", "fp16", "bf16", NULL};
static const char *const k_centering[] = {"centering", "sinkhorn_knopp", NULL};
static const char *const k_arch[] = {"vit_small", "vit_base", "vit_large", "vit_giant2", NULL};
static const char *const k_ffn[] = {"mlp", "swiglu", "swiglufused", "identity", NULL};
static const char *const k_scaling[] = {"sqrt_wrt_1024", NULL};
static const char *const k_backend[] = {"auto", "cpu", "cuda", NULL};
static const char *const k_level[] = {"debug", "info", "warn", NULL};

/* Enum fields are read and written as int through memcpy; that needs int-sized enums. */
_Static_assert(sizeof(dv_cfg_sharding) == sizeof(int) && sizeof(dv_cfg_dtype) == sizeof(int) &&
                   sizeof(dv_cfg_centering) == sizeof(int) && sizeof(dv_cfg_arch) == sizeof(int) &&
                   sizeof(dv_cfg_ffn) == sizeof(int) && sizeof(dv_cfg_scaling_rule) == sizeof(int) &&
                   sizeof(dv_cfg_backend) == sizeof(int) && sizeof(dv_cfg_log_level) == sizeof(int),
               "enum-valued keys are stored as int");

/* A field's type is checked at compile time: a mismatch makes a negative array size. */
#define FLD_(f) (((dv_config *)0)->f)
#define TYPE_OK_(f, T) (0 * sizeof(char[_Generic(FLD_(f), T: 1, default: -1)]))
#define ENUM_OK_(f) (0 * sizeof(char[sizeof(FLD_(f)) == sizeof(int) ? 1 : -1]))
#define AT_(f, check) offsetof(dv_config, f) + (check), sizeof(FLD_(f))

#define INF INFINITY
#define KB(name, f, def, doc) {name, DV_KEY_BOOL, AT_(f, TYPE_OK_(f, bool)), def, 0, 0, 0, NULL, doc}
#define KI(name, f, def, lo, hi, fl, doc)                                                          \
    {name, DV_KEY_INT, AT_(f, TYPE_OK_(f, int64_t)), def, lo, hi, fl, NULL, doc}
#define KD(name, f, def, lo, hi, fl, doc)                                                          \
    {name, DV_KEY_DOUBLE, AT_(f, TYPE_OK_(f, double)), def, lo, hi, fl, NULL, doc}
#define KS(name, f, def, doc) {name, DV_KEY_STRING, AT_(f, TYPE_OK_(f, char *)), def, 0, 0, 0, NULL, doc}
#define KE(name, f, def, ch, fl, doc) {name, DV_KEY_ENUM, AT_(f, ENUM_OK_(f)), def, 0, 0, fl, ch, doc}
#define KL(name, f, def, lo, hi, fl, doc)                                                          \
    {name, DV_KEY_DLIST, AT_(f, TYPE_OK_(f, double *)), def, lo, hi, fl, NULL, doc}

/* The four FSDP keys of one module (official compute_precision layout). */
#define FSDP_(W, M, RED)                                                                           \
    KE("compute_precision." #W "." #M ".sharding_strategy", compute_precision.W.M.sharding_strategy, \
       "SHARD_GRAD_OP", k_sharding, 0,                                                             \
       "how the " #W " " #M " is sharded over ranks: NO_SHARD (replicas), SHARD_GRAD_OP (gathered "  \
       "once per step) or FULL_SHARD (gathered again for the backward); doc/sharding.md"),                                                                           \
    KE("compute_precision." #W "." #M ".mixed_precision.param_dtype",                              \
       compute_precision.W.M.mixed_precision.param_dtype, "fp16", k_dtype, 0,                      \
       "dtype the " #W " " #M " parameters are gathered and computed in (masters stay fp32)"),     \
    KE("compute_precision." #W "." #M ".mixed_precision.reduce_dtype",                             \
       compute_precision.W.M.mixed_precision.reduce_dtype, RED, k_dtype, 0,                        \
       "dtype of the " #W " " #M " gradient reduce-scatter"),                                      \
    KE("compute_precision." #W "." #M ".mixed_precision.buffer_dtype",                             \
       compute_precision.W.M.mixed_precision.buffer_dtype, "fp32", k_dtype, 0,                     \
       "dtype of the " #W " " #M " buffers")

static const dv_config_key k_keys[] = {
    /* ---- official keys (ssl_default_config.yaml), in its order ---- */
    KS("MODEL.WEIGHTS", MODEL.WEIGHTS, "",
       "checkpoint to initialise from when there is none to resume ('' = none)"),
    KB("compute_precision.grad_scaler", compute_precision.grad_scaler, "true",
       "dynamic loss scaling of fp16 gradients (skip the step and lower the scale on inf/NaN)"),
    FSDP_(teacher, backbone, "fp16"),
    FSDP_(teacher, dino_head, "fp16"),
    FSDP_(teacher, ibot_head, "fp16"),
    FSDP_(student, backbone, "fp16"),
    FSDP_(student, dino_head, "fp32"),
    FSDP_(student, ibot_head, "fp32"),

    KD("dino.loss_weight", dino.loss_weight, "1.0", 0, INF, 0,
       "weight of the image-level DINO loss (0 = off, which also turns KoLeo off)"),
    KI("dino.head_n_prototypes", dino.head_n_prototypes, "65536", 1, 1e9, 0,
       "prototypes K of the DINO head"),
    KI("dino.head_bottleneck_dim", dino.head_bottleneck_dim, "256", 1, 1e9, 0,
       "bottleneck width of the DINO head"),
    KI("dino.head_nlayers", dino.head_nlayers, "3", 1, 100, 0, "MLP layers of the DINO head"),
    KI("dino.head_hidden_dim", dino.head_hidden_dim, "2048", 1, 1e9, 0,
       "hidden width of the DINO head MLP"),
    KD("dino.koleo_loss_weight", dino.koleo_loss_weight, "0.1", 0, INF, 0,
       "weight of the KoLeo regulariser on student global CLS tokens (0 = off)"),

    KD("ibot.loss_weight", ibot.loss_weight, "1.0", 0, INF, 0,
       "weight of the patch-level iBOT loss (0 = off)"),
    KD("ibot.mask_sample_probability", ibot.mask_sample_probability, "0.5", 0, 1, 0,
       "share of global crops that get a mask"),
    KL("ibot.mask_ratio_min_max", ibot.mask_ratio_min_max, "[0.1, 0.5]", 0, 1, DV_KEY_ORDERED,
       "range of per-crop mask ratios (stratified over the masked crops)"),
    KB("ibot.separate_head", ibot.separate_head, "false",
       "iBOT gets its own head (false = it shares the DINO head)"),
    KI("ibot.head_n_prototypes", ibot.head_n_prototypes, "65536", 1, 1e9, 0,
       "prototypes of the separate iBOT head"),
    KI("ibot.head_bottleneck_dim", ibot.head_bottleneck_dim, "256", 1, 1e9, 0,
       "bottleneck width of the separate iBOT head"),
    KI("ibot.head_nlayers", ibot.head_nlayers, "3", 1, 100, 0,
       "MLP layers of the separate iBOT head"),
    KI("ibot.head_hidden_dim", ibot.head_hidden_dim, "2048", 1, 1e9, 0,
       "hidden width of the separate iBOT head MLP"),

    KI("train.batch_size_per_gpu", train.batch_size_per_gpu, "64", 1, 1e7, 0,
       "images per rank per step (each gives 2 global + crops.local_crops_number local crops)"),
    KI("train.global_batch_size", train.global_batch_size, "0", 0, 1e12, 0,
       "dinov2c: images per step over all ranks (0 = batch_size_per_gpu x ranks); when set, "
       "each rank takes global_batch_size / ranks and the rank count must divide it"),
    KS("train.dataset_path", train.dataset_path, "ImageNet:split=TRAIN",
       "official dataset string; kept for compatibility, dinov2c reads data.train"),
    KS("train.output_dir", train.output_dir, ".",
       "directory for checkpoints, metrics and the resolved config (--output-dir sets it)"),
    KI("train.saveckp_freq", train.saveckp_freq, "20", 0, 1e9, 0,
       "unused (officially unused too); see checkpoint.period"),
    KI("train.seed", train.seed, "0", 0, 1e18, 0,
       "seed of parameter initialisation and stochastic depth"),
    KI("train.num_workers", train.num_workers, "10", 0, 1e6, 0,
       "official loader workers; kept for compatibility, dinov2c uses data.num_workers"),
    KI("train.OFFICIAL_EPOCH_LENGTH", train.OFFICIAL_EPOCH_LENGTH, "1250", 1, 1e9, 0,
       "iterations per 'epoch': multiplier of every *_epochs key, unrelated to dataset size"),
    KB("train.cache_dataset", train.cache_dataset, "true", "unused (officially unused too)"),
    KE("train.centering", train.centering, "centering", k_centering, 0,
       "teacher normalisation: centering (softmax, EMA centre) or sinkhorn_knopp"),

    KE("student.arch", student.arch, "vit_large", k_arch, DV_KEY_MEMEFF,
       "backbone: vit_small, vit_base, vit_large or vit_giant2 (a _memeff suffix is dropped)"),
    KI("student.embed_dim", student.embed_dim, "0", 0, 65536, 0,
       "dinov2c: embedding width; 0 = from student.arch (384/768/1024/1536)"),
    KI("student.depth", student.depth, "0", 0, 1024, 0,
       "dinov2c: number of blocks; 0 = from student.arch (12/12/24/40)"),
    KI("student.num_heads", student.num_heads, "0", 0, 1024, 0,
       "dinov2c: attention heads; 0 = from student.arch (6/12/16/24)"),
    KD("student.mlp_ratio", student.mlp_ratio, "4.0", 0, INF, DV_KEY_MIN_OPEN,
       "dinov2c: MLP hidden width / embed_dim (official: 4)"),
    KI("student.patch_size", student.patch_size, "16", 1, 1024, 0, "patch size in pixels"),
    KD("student.drop_path_rate", student.drop_path_rate, "0.3", 0, 1, DV_KEY_MAX_OPEN,
       "stochastic depth rate of the student (the teacher has none)"),
    KD("student.layerscale", student.layerscale, "1.0e-05", 0, INF, DV_KEY_NULLABLE,
       "LayerScale init value (0 or null = no LayerScale)"),
    KB("student.drop_path_uniform", student.drop_path_uniform, "true",
       "same drop-path rate in every block (false = linear 0..rate)"),
    KS("student.pretrained_weights", student.pretrained_weights, "",
       "backbone weights to start the student (and teacher) from ('' = random init)"),
    KE("student.ffn_layer", student.ffn_layer, "mlp", k_ffn, 0,
       "block MLP: mlp (GELU), swiglu / swiglufused (same layer) or identity"),
    KI("student.block_chunks", student.block_chunks, "0", 0, 1024, 0,
       "official FSDP block grouping; changes only the official checkpoint key layout"),
    KB("student.qkv_bias", student.qkv_bias, "true", "bias in the attention qkv projection"),
    KB("student.proj_bias", student.proj_bias, "true", "bias in the attention output projection"),
    KB("student.ffn_bias", student.ffn_bias, "true", "biases in the MLP"),
    KI("student.num_register_tokens", student.num_register_tokens, "0", 0, 1024, 0,
       "register tokens (released _reg models: 4)"),
    KB("student.interpolate_antialias", student.interpolate_antialias, "false",
       "antialias in bicubic positional-embedding interpolation (released _reg models: true)"),
    KD("student.interpolate_offset", student.interpolate_offset, "0.1", 0, INF, 0,
       "offset of the positional-embedding interpolation scale (released _reg models: 0.0)"),

    KD("teacher.momentum_teacher", teacher.momentum_teacher, "0.992", 0, 1, 0,
       "EMA momentum of the teacher at the start (cosine to final_momentum_teacher)"),
    KD("teacher.final_momentum_teacher", teacher.final_momentum_teacher, "1.0", 0, 1, 0,
       "EMA momentum of the teacher at the end"),
    KD("teacher.warmup_teacher_temp", teacher.warmup_teacher_temp, "0.04", 0, INF, DV_KEY_MIN_OPEN,
       "teacher temperature at the start of the warm-up"),
    KD("teacher.teacher_temp", teacher.teacher_temp, "0.07", 0, INF, DV_KEY_MIN_OPEN,
       "teacher temperature after the warm-up"),
    KI("teacher.warmup_teacher_temp_epochs", teacher.warmup_teacher_temp_epochs, "30", 0, 1e9, 0,
       "epochs of linear teacher-temperature warm-up"),

    KI("optim.epochs", optim.epochs, "100", 1, 1e9, 0,
       "run length in epochs of OFFICIAL_EPOCH_LENGTH iterations"),
    KD("optim.weight_decay", optim.weight_decay, "0.04", 0, INF, 0,
       "weight decay at the start (cosine to weight_decay_end)"),
    KD("optim.weight_decay_end", optim.weight_decay_end, "0.4", 0, INF, 0,
       "weight decay at the end"),
    KD("optim.base_lr", optim.base_lr, "0.004", 0, INF, 0,
       "peak learning rate for a global batch of 1024 (scaled by scaling_rule)"),
    KD("optim.lr", optim.lr, "0.0", 0, INF, 0,
       "resolved peak learning rate; recomputed from base_lr at finalize (set values are ignored)"),
    KI("optim.warmup_epochs", optim.warmup_epochs, "10", 0, 1e9, 0,
       "epochs of linear learning-rate warm-up from 0"),
    KD("optim.min_lr", optim.min_lr, "1.0e-06", 0, INF, 0, "learning rate at the end of the cosine"),
    KD("optim.clip_grad", optim.clip_grad, "3.0", 0, INF, 0,
       "max gradient norm, applied separately to backbone, DINO head and iBOT head (0 = off)"),
    KI("optim.freeze_last_layer_epochs", optim.freeze_last_layer_epochs, "1", 0, 1e9, 0,
       "epochs during which the heads' last layer has learning rate 0"),
    KE("optim.scaling_rule", optim.scaling_rule, "sqrt_wrt_1024", k_scaling, 0,
       "learning-rate scaling: lr = base_lr * sqrt(global batch / 1024) (the only rule)"),
    KD("optim.patch_embed_lr_mult", optim.patch_embed_lr_mult, "0.2", 0, INF, 0,
       "learning-rate multiplier of the patch embedding"),
    KD("optim.layerwise_decay", optim.layerwise_decay, "0.9", 0, 1, DV_KEY_MIN_OPEN,
       "layer-wise learning-rate decay (1.0 = none)"),
    KD("optim.adamw_beta1", optim.adamw_beta1, "0.9", 0, 1, DV_KEY_MAX_OPEN, "AdamW beta1"),
    KD("optim.adamw_beta2", optim.adamw_beta2, "0.999", 0, 1, DV_KEY_MAX_OPEN, "AdamW beta2"),

    KL("crops.global_crops_scale", crops.global_crops_scale, "[0.32, 1.0]", 0, 1,
       DV_KEY_MIN_OPEN | DV_KEY_ORDERED, "area range of the random resized global crops"),
    KI("crops.local_crops_number", crops.local_crops_number, "8", 0, 1024, 0,
       "local crops per image"),
    KL("crops.local_crops_scale", crops.local_crops_scale, "[0.05, 0.32]", 0, 1,
       DV_KEY_MIN_OPEN | DV_KEY_ORDERED, "area range of the random resized local crops"),
    KI("crops.global_crops_size", crops.global_crops_size, "224", 1, 16384, 0,
       "global crop side in pixels (also the positional-embedding grid); multiple of patch_size"),
    KI("crops.local_crops_size", crops.local_crops_size, "96", 1, 16384, 0,
       "local crop side in pixels; multiple of patch_size"),

    KI("evaluation.eval_period_iterations", evaluation.eval_period_iterations, "12500", 0, 1e18, 0,
       "export the teacher backbone every this many iterations (0 = never)"),

    /* ---- dinov2c sections ---- */
    KS("data.train", data.train, "", "training images: an HDF5 shard, a directory of shards or a glob"),
    KS("data.val", data.val, "", "evaluation images (same forms as data.train; '' = none)"),
    KS("data.index", data.index, "",
       "curated index (HDF5) selecting training samples from data.train ('' = all images)"),
    KI("data.num_workers", data.num_workers, "2", 0, 1024, 0,
       "decode/augment threads per rank (0 = in the training thread)"),
    KI("data.prefetch", data.prefetch, "2", 1, 1024, 0, "batches prepared ahead per rank"),
    KB("data.blur_probabilities_intended", data.blur_probabilities_intended, "false",
       "blur with the intended p 1.0/0.1/0.5 (false = the official effective 0/0.9/0.5)"),
    KL("data.blur_sigma", data.blur_sigma, "[0.1, 2.0]", 0, 1e6, DV_KEY_MIN_OPEN | DV_KEY_ORDERED,
       "Gaussian blur sigma range in output pixels (official 0.1-2.0, sized for 224 px crops)"),
    KD("data.color_jitter_probability", data.color_jitter_probability, "0.8", 0, 1, 0,
       "probability of ColorJitter(0.4, 0.4, 0.2, 0.1) per crop (official 0.8)"),
    KD("data.grayscale_probability", data.grayscale_probability, "0.2", 0, 1, 0,
       "probability of RandomGrayscale per crop (official 0.2)"),
    KD("data.solarize_probability", data.solarize_probability, "0.2", 0, 1, 0,
       "probability of solarizing the second global crop (official 0.2)"),
    KI("data.seed", data.seed, "0", 0, 1e18, 0, "seed of the data order, augmentations and masks"),

    KS("checkpoint.dir", checkpoint.dir, "", "checkpoint directory ('' = <train.output_dir>/checkpoints)"),
    KI("checkpoint.period", checkpoint.period, "0", 0, 1e18, 0,
       "iterations between checkpoints (0 = 3 * OFFICIAL_EPOCH_LENGTH, as officially)"),
    KI("checkpoint.keep", checkpoint.keep, "3", 0, 1e6, 0, "checkpoints kept (0 = all)"),
    KB("checkpoint.resume", checkpoint.resume, "true",
       "resume from the newest valid checkpoint (--no-resume sets false)"),

    KE("compute.backend", compute.backend, "auto", k_backend, 0,
       "auto (CUDA when built in and a GPU is present), cpu or cuda"),
    KI("compute.threads", compute.threads, "0", 0, 4096, 0, "CPU threads per rank (0 = automatic)"),
    KI("compute.max_steps", compute.max_steps, "-1", -1, 1e18, 0,
       "stop with a checkpoint at this iteration; schedules keep their length (-1 = run to the end)"),
    KD("compute.max_minutes", compute.max_minutes, "0.0", 0, INF, 0,
       "stop with a checkpoint after this many minutes of wall time (0 = no limit)"),

    KI("log.period", log.period, "10", 1, 1e9, 0, "iterations between log lines"),
    KS("log.metrics_file", log.metrics_file, "training_metrics.json",
       "JSON-lines metrics file, relative to train.output_dir ('' = none)"),
    KE("log.level", log.level, "info", k_level, 0, "debug, info or warn"),

    KS("highres.init_checkpoint", highres.init_checkpoint, "",
       "pretrain checkpoint to adapt ('' = newest in checkpoint.dir); filled as the stage lands"),
    KI("highres.image_size", highres.image_size, "0", 0, 16384, 0,
       "global crop side of the phase; multiple of patch_size (0 = the multiple nearest 518)"),
    KI("highres.iterations", highres.iterations, "10000", 1, 1e9, 0,
       "iterations of the phase; every schedule is compressed into them"),
    KD("highres.base_lr", highres.base_lr, "0.0", 0, INF, 0,
       "base learning rate of the phase (0 = optim.base_lr / 10)"),

    KS("distill.teacher_checkpoint", distill.teacher_checkpoint, "",
       "checkpoint of the frozen teacher (backbone and heads); filled as the stage lands"),
    KE("distill.teacher_arch", distill.teacher_arch, "vit_giant2", k_arch, DV_KEY_MEMEFF,
       "architecture of the frozen teacher"),
    KE("distill.teacher_ffn_layer", distill.teacher_ffn_layer, "swiglufused", k_ffn, 0,
       "block MLP of the frozen teacher"),
    KI("distill.teacher_num_register_tokens", distill.teacher_num_register_tokens, "0", 0, 1024, 0,
       "register tokens of the frozen teacher"),

    KS("curate.embed_checkpoint", curate.embed_checkpoint, "",
       "checkpoint whose CLS features drive retrieval; filled as the stage lands"),
    KI("curate.dedup_knn", curate.dedup_knn, "64", 1, 1e6, 0,
       "neighbours per image in the copy-detection graph"),
    KD("curate.dedup_threshold", curate.dedup_threshold, "0.6", -1, 1, 0,
       "cosine similarity above which two pool images are duplicates"),
    KD("curate.eval_dedup_threshold", curate.eval_dedup_threshold, "0.45", -1, 1, 0,
       "cosine similarity above which a pool image duplicates an evaluation image"),
    KI("curate.num_clusters", curate.num_clusters, "100000", 1, 1e12, 0, "k-means clusters of the pool"),
    KI("curate.kmeans_iterations", curate.kmeans_iterations, "20", 1, 1e6, 0, "k-means iterations"),
    KI("curate.retrieve_k", curate.retrieve_k, "4", 1, 1e6, 0,
       "pool neighbours retrieved per query image"),
    KI("curate.target_size", curate.target_size, "0", 0, 1e18, 0,
       "images in the curated set (0 = all retrieved)"),
};

#define N_KEYS (sizeof k_keys / sizeof k_keys[0])

size_t dv_config_key_count(void) { return N_KEYS; }

const dv_config_key *dv_config_key_at(size_t i) { return i < N_KEYS ? &k_keys[i] : NULL; }

const dv_config_key *dv_config_find_key(const char *name) {
    for (size_t i = 0; i < N_KEYS; i++)
        if (strcmp(k_keys[i].name, name) == 0) return &k_keys[i];
    return NULL;
}

/* A section is a proper prefix of some key ending at a '.'. */
static const dv_config_key *first_in_section(const char *path) {
    size_t n = strlen(path);
    for (size_t i = 0; i < N_KEYS; i++)
        if (strncmp(k_keys[i].name, path, n) == 0 && k_keys[i].name[n] == '.') return &k_keys[i];
    return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Small helpers                                                                              */
/* ------------------------------------------------------------------------------------------ */

static void *field(dv_config *c, const dv_config_key *k) { return (char *)c + k->offset; }
static const void *cfield(const dv_config *c, const dv_config_key *k) {
    return (const char *)c + k->offset;
}
static size_t list_len(const dv_config_key *k) { return k->size / sizeof(double); }

/* Shortest text that strtod reads back to the same double. */
static void fmt_shortest(double v, char *buf, size_t n) {
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, n, "%.*g", p, v);
        if (strtod(buf, NULL) == v) return;
    }
}

/* Shortest round-trip text, always with a '.' before any exponent, so YAML 1.1 readers
 * (PyYAML/OmegaConf) read a float, not a string or an int. */
static void fmt_double(double v, char *buf, size_t n) {
    char t[40];
    fmt_shortest(v, t, sizeof t);
    if (strchr(t, '.') || strchr(t, 'n') || strchr(t, 'N')) { /* has a dot, or inf/nan */
        snprintf(buf, n, "%s", t);
        return;
    }
    char *e = strchr(t, 'e');
    if (e) {
        *e = '\0';
        snprintf(buf, n, "%s.0e%s", t, e + 1);
    } else {
        snprintf(buf, n, "%s.0", t);
    }
}

static void fmt_bound(const dv_config_key *k, double v, char *buf, size_t n) {
    if (k->type == DV_KEY_INT) snprintf(buf, n, "%lld", (long long)v);
    else fmt_shortest(v, buf, n);
}

/* "in [0, 1]", "in (0, 1]", ">= 0", "> 0", "<= 5" */
static void range_text(const dv_config_key *k, char *buf, size_t n) {
    char lo[40], hi[40];
    fmt_bound(k, k->min, lo, sizeof lo);
    fmt_bound(k, k->max, hi, sizeof hi);
    int has_lo = isfinite(k->min), has_hi = isfinite(k->max);
    const char *lb = (k->flags & DV_KEY_MIN_OPEN) ? "(" : "[";
    const char *rb = (k->flags & DV_KEY_MAX_OPEN) ? ")" : "]";
    if (has_lo && has_hi) snprintf(buf, n, "in %s%s, %s%s", lb, lo, hi, rb);
    else if (has_lo) snprintf(buf, n, "%s %s", (k->flags & DV_KEY_MIN_OPEN) ? ">" : ">=", lo);
    else if (has_hi) snprintf(buf, n, "%s %s", (k->flags & DV_KEY_MAX_OPEN) ? "<" : "<=", hi);
    else snprintf(buf, n, "any number");
}

static int in_range(const dv_config_key *k, double v) {
    if (isfinite(k->min) && ((k->flags & DV_KEY_MIN_OPEN) ? !(v > k->min) : !(v >= k->min))) return 0;
    if (isfinite(k->max) && ((k->flags & DV_KEY_MAX_OPEN) ? !(v < k->max) : !(v <= k->max))) return 0;
    return 1;
}

/* What a key accepts, for messages: "a number", "one of a, b", "a list of 2 numbers like ..". */
static void expected_text(const dv_config_key *k, char *buf, size_t n) {
    switch (k->type) {
    case DV_KEY_BOOL: snprintf(buf, n, "true or false"); break;
    case DV_KEY_INT: snprintf(buf, n, "an integer"); break;
    case DV_KEY_DOUBLE: snprintf(buf, n, "a number"); break;
    case DV_KEY_STRING: snprintf(buf, n, "a string"); break;
    case DV_KEY_DLIST:
        snprintf(buf, n, "a list of %zu numbers like %s", list_len(k), k->def);
        break;
    case DV_KEY_ENUM: {
        size_t used = (size_t)snprintf(buf, n, "one of ");
        for (const char *const *ch = k->choices; *ch && used < n; ch++)
            used += (size_t)snprintf(buf + used, n - used, "%s%s", *ch, ch[1] ? ", " : "");
        break;
    }
    }
}

/* A value as shown in a message: quoted, cut at 60 characters. */
static void show_value(const char *s, size_t len, char *buf, size_t n) {
    if (len > 60) snprintf(buf, n, "'%.57s...'", s);
    else snprintf(buf, n, "'%.*s'", (int)len, s);
}

static int is_null_text(const char *s) {
    return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

/* YAML 1.1 booleans as OmegaConf reads them. */
static int parse_bool(const char *s, bool *out) {
    static const char *const t[] = {"true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON"};
    static const char *const f[] = {"false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF"};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        if (!strcmp(s, t[i])) return *out = true, 1;
        if (!strcmp(s, f[i])) return *out = false, 1;
    }
    return 0;
}

/* 1 ok, 0 not an integer, -1 outside int64 */
static int parse_int(const char *s, int64_t *out) {
    if (!*s || isspace((unsigned char)*s)) return 0;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end) return 0;
    if (errno == ERANGE) return -1;
    *out = (int64_t)v;
    return 1;
}

static int parse_double(const char *s, double *out) {
    if (!*s || isspace((unsigned char)*s)) return 0;
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !isfinite(v)) return 0;
    *out = v;
    return 1;
}

/* ------------------------------------------------------------------------------------------ */
/* Unknown keys: closest valid name                                                           */
/* ------------------------------------------------------------------------------------------ */

/* Case-insensitive Levenshtein distance; names longer than 127 are "far". */
static size_t edit_distance(const char *a, size_t la, const char *b, size_t lb) {
    if (la > 127 || lb > 127) return (size_t)-1 / 2;
    size_t row[128], prev;
    for (size_t j = 0; j <= lb; j++) row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        prev = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t cost = tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]);
            size_t best = prev + cost;
            if (row[j] + 1 < best) best = row[j] + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            prev = row[j];
            row[j] = best;
        }
    }
    return row[lb];
}

/* Distance of a candidate (len lc) to the unknown name: over the full dotted names, or over
 * the last components plus 2 when the sections differ (a key put in the wrong section). */
static size_t name_score(const char *name, const char *cand, size_t lc) {
    size_t ln = strlen(name);
    size_t d = edit_distance(name, ln, cand, lc);
    const char *dn = strrchr(name, '.');
    size_t sn = dn ? (size_t)(dn - name) : 0, lastn = dn ? ln - sn - 1 : ln;
    size_t sc = 0;
    for (size_t i = 0; i < lc; i++)
        if (cand[i] == '.') sc = i;
    const char *lastc = sc ? cand + sc + 1 : cand;
    size_t lenc = sc ? lc - sc - 1 : lc;
    size_t dl = edit_distance(dn ? dn + 1 : name, lastn, lastc, lenc);
    int same_section = sn == sc && edit_distance(name, sn, cand, sc) == 0;
    if (!same_section) dl += 2;
    return dl < d ? dl : d;
}

/* Closest key or section name into buf; 0 if nothing is close enough. */
static int suggest(const char *name, char *buf, size_t n) {
    size_t best = (size_t)-1;
    const char *last = strrchr(name, '.');
    size_t lastlen = strlen(last ? last + 1 : name);
    size_t limit = lastlen / 3 > 2 ? lastlen / 3 : 2;
    for (size_t i = 0; i < N_KEYS; i++) {
        const char *k = k_keys[i].name;
        /* every section prefix of k, then k itself */
        for (size_t j = 1;; j++) {
            if (k[j] == '.' || k[j] == '\0') {
                size_t s = name_score(name, k, j);
                if (s < best) {
                    best = s;
                    snprintf(buf, n, "%.*s", (int)j, k);
                }
                if (k[j] == '\0') break;
            }
        }
    }
    return best <= limit;
}

static int unknown_key(const char *where, const char *name) {
    char s[256];
    if (suggest(name, s, sizeof s))
        dv_user_error("%s: unknown key '%s' (did you mean '%s'?)", where, name, s);
    else dv_user_error("%s: unknown key '%s'", where, name);
    return DV_ERR_CONFIG;
}

/* ------------------------------------------------------------------------------------------ */
/* Setting one key from a YAML node                                                           */
/* ------------------------------------------------------------------------------------------ */

static int node_is_null(const yaml_node_t *nd) {
    return nd == NULL || (nd->type == YAML_SCALAR_NODE && nd->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
                          is_null_text((const char *)nd->data.scalar.value));
}

static const char *scalar_text(const yaml_node_t *nd) { return (const char *)nd->data.scalar.value; }

/* "'fast'", "null", "a list", "a mapping" */
static void node_desc(const yaml_node_t *nd, char *buf, size_t n) {
    if (node_is_null(nd)) snprintf(buf, n, "null");
    else if (nd->type == YAML_SEQUENCE_NODE) snprintf(buf, n, "a list");
    else if (nd->type == YAML_MAPPING_NODE) snprintf(buf, n, "a mapping");
    else show_value(scalar_text(nd), nd->data.scalar.length, buf, n);
}

static int bad_value(const dv_config_key *k, const char *where, const yaml_node_t *nd) {
    char exp[256], got[96];
    expected_text(k, exp, sizeof exp);
    node_desc(nd, got, sizeof got);
    dv_user_error("%s: %s: expected %s, got %s", where, k->name, exp, got);
    return DV_ERR_CONFIG;
}

static int out_of_range(const dv_config_key *k, const char *where, const char *item, const char *val) {
    char r[128];
    range_text(k, r, sizeof r);
    dv_user_error("%s: %s: %s%.60s is out of range (must be %s)", where, k->name, item, val, r);
    return DV_ERR_CONFIG;
}

/* Parse a number scalar for a numeric key; on success *out holds it. */
static int scalar_number(const dv_config_key *k, const char *where, const yaml_node_t *nd,
                         const char *item, double *out) {
    char got[96];
    if (nd == NULL || nd->type != YAML_SCALAR_NODE || node_is_null(nd)) {
        if (!*item) return bad_value(k, where, nd);
        node_desc(nd, got, sizeof got);
        dv_user_error("%s: %s: %sexpected a number, got %s", where, k->name, item, got);
        return DV_ERR_CONFIG;
    }
    const char *s = scalar_text(nd);
    if (!parse_double(s, out)) {
        if (!*item) return bad_value(k, where, nd);
        node_desc(nd, got, sizeof got);
        dv_user_error("%s: %s: %sexpected a number, got %s", where, k->name, item, got);
        return DV_ERR_CONFIG;
    }
    if (!in_range(k, *out)) return out_of_range(k, where, item, s);
    return DV_OK;
}

/* Validate the node fully, then store: a failed set leaves the field unchanged. */
static int set_from_node(dv_config *c, const dv_config_key *k, yaml_document_t *doc,
                         yaml_node_t *nd, const char *where) {
    void *dst = field(c, k);
    if (nd && nd->type == YAML_MAPPING_NODE) return bad_value(k, where, nd);
    if (nd && nd->type == YAML_SEQUENCE_NODE && k->type != DV_KEY_DLIST) return bad_value(k, where, nd);
    if (nd && nd->type == YAML_SCALAR_NODE && strlen(scalar_text(nd)) != nd->data.scalar.length) {
        dv_user_error("%s: %s: the value contains a NUL character", where, k->name);
        return DV_ERR_CONFIG;
    }

    switch (k->type) {
    case DV_KEY_BOOL: {
        bool b;
        if (node_is_null(nd) || !parse_bool(scalar_text(nd), &b)) return bad_value(k, where, nd);
        *(bool *)dst = b;
        return DV_OK;
    }
    case DV_KEY_INT: {
        int64_t v;
        if (node_is_null(nd)) return bad_value(k, where, nd);
        int r = parse_int(scalar_text(nd), &v);
        if (r == 0) return bad_value(k, where, nd);
        if (r < 0 || !in_range(k, (double)v)) return out_of_range(k, where, "", scalar_text(nd));
        *(int64_t *)dst = v;
        return DV_OK;
    }
    case DV_KEY_DOUBLE: {
        double v;
        if (node_is_null(nd) && (k->flags & DV_KEY_NULLABLE)) {
            *(double *)dst = 0.0;
            return DV_OK;
        }
        DV_TRY(scalar_number(k, where, nd, "", &v));
        *(double *)dst = v;
        return DV_OK;
    }
    case DV_KEY_STRING: {
        const char *s = node_is_null(nd) ? "" : scalar_text(nd);
        size_t len = strlen(s);
        if (len >= k->size) {
            dv_user_error("%s: %s: the value is too long (%zu characters, at most %zu)", where,
                          k->name, len, k->size - 1);
            return DV_ERR_CONFIG;
        }
        memcpy(dst, s, len + 1);
        return DV_OK;
    }
    case DV_KEY_ENUM: {
        if (node_is_null(nd)) return bad_value(k, where, nd);
        const char *s = scalar_text(nd);
        size_t len = strlen(s);
        static const char memeff[] = "_memeff";
        if ((k->flags & DV_KEY_MEMEFF) && len > sizeof memeff - 1 &&
            !strcmp(s + len - (sizeof memeff - 1), memeff))
            len -= sizeof memeff - 1;
        for (int i = 0; k->choices[i]; i++) {
            if (strlen(k->choices[i]) == len && !strncmp(s, k->choices[i], len)) {
                memcpy(dst, &i, sizeof i);
                return DV_OK;
            }
        }
        return bad_value(k, where, nd);
    }
    case DV_KEY_DLIST: {
        size_t n = list_len(k);
        double v[8];
        if (nd == NULL || nd->type != YAML_SEQUENCE_NODE) return bad_value(k, where, nd);
        size_t have = (size_t)(nd->data.sequence.items.top - nd->data.sequence.items.start);
        if (have != n) {
            char exp[256];
            expected_text(k, exp, sizeof exp);
            dv_user_error("%s: %s: expected %s, got a list of %zu", where, k->name, exp, have);
            return DV_ERR_CONFIG;
        }
        for (size_t i = 0; i < n; i++) {
            char item[32];
            snprintf(item, sizeof item, "item %zu: ", i + 1);
            yaml_node_t *it = yaml_document_get_node(doc, nd->data.sequence.items.start[i]);
            DV_TRY(scalar_number(k, where, it, item, &v[i]));
        }
        if (k->flags & DV_KEY_ORDERED) {
            for (size_t i = 1; i < n; i++) {
                if (v[i] < v[i - 1]) {
                    char a[40], b[40];
                    fmt_shortest(v[i - 1], a, sizeof a);
                    fmt_shortest(v[i], b, sizeof b);
                    dv_user_error("%s: %s: items must not decrease, got %s before %s", where,
                                  k->name, a, b);
                    return DV_ERR_CONFIG;
                }
            }
        }
        memcpy(dst, v, n * sizeof(double));
        return DV_OK;
    }
    }
    return DV_ERR_CONFIG;
}

/* Parse a value written as YAML flow text into a one-node document. */
static int set_from_text(dv_config *c, const dv_config_key *k, const char *text, const char *where) {
    yaml_parser_t p;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&p)) return DV_ERR(DV_ERR_NOMEM, "yaml_parser_initialize failed");
    yaml_parser_set_input_string(&p, (const unsigned char *)text, strlen(text));
    if (!yaml_parser_load(&p, &doc)) {
        char v[96];
        show_value(text, strlen(text), v, sizeof v);
        dv_user_error("%s: %s: cannot read the value %s: %s", where, k->name, v,
                      p.problem ? p.problem : "malformed YAML");
        yaml_parser_delete(&p);
        return DV_ERR_CONFIG;
    }
    int rc = set_from_node(c, k, &doc, yaml_document_get_root_node(&doc), where);
    yaml_document_delete(&doc);
    yaml_parser_delete(&p);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Public: defaults, set, overrides                                                           */
/* ------------------------------------------------------------------------------------------ */

void dv_config_defaults(dv_config *c) {
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < N_KEYS; i++) {
        /* The table's defaults are checked by the unit test; a failure here is a table bug. */
        if (set_from_text(c, &k_keys[i], k_keys[i].def, "built-in default") != DV_OK) abort();
    }
}

int dv_config_set(dv_config *c, const char *key, const char *value_text, const char *origin) {
    const char *where = origin ? origin : "command line";
    const dv_config_key *k = dv_config_find_key(key);
    if (!k) {
        const dv_config_key *s = first_in_section(key);
        if (s) {
            dv_user_error("%s: '%s' is a section; set its keys one by one, e.g. %s=%s", where, key,
                          s->name, s->def);
            return DV_ERR_CONFIG;
        }
        return unknown_key(where, key);
    }
    return set_from_text(c, k, value_text, where);
}

int dv_config_apply_overrides(dv_config *c, int n, char **kv) {
    if (n <= 0) return DV_OK;
    dv_config *t = malloc(sizeof *t);
    if (!t) return DV_ERR(DV_ERR_NOMEM, "out of memory for a config copy");
    *t = *c;
    int rc = DV_OK;
    for (int i = 0; i < n && rc == DV_OK; i++) {
        const char *eq = strchr(kv[i], '=');
        if (!eq || eq == kv[i]) {
            dv_user_error("command line: '%s' is not an override of the form key=value", kv[i]);
            rc = DV_ERR_CONFIG;
            break;
        }
        char key[256];
        if ((size_t)(eq - kv[i]) >= sizeof key) {
            dv_user_error("command line: unknown key '%.60s...'", kv[i]);
            rc = DV_ERR_CONFIG;
            break;
        }
        memcpy(key, kv[i], (size_t)(eq - kv[i]));
        key[eq - kv[i]] = '\0';
        rc = dv_config_set(t, key, eq + 1, "command line");
    }
    if (rc == DV_OK) *c = *t;
    free(t);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Loading a file                                                                             */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    const char *path;
    yaml_document_t *doc;
} load_ctx;

static void where_at(const load_ctx *x, const yaml_node_t *nd, char *buf, size_t n) {
    snprintf(buf, n, "%s:%zu", x->path, nd ? nd->start_mark.line + 1 : 1);
}

static int apply_mapping(dv_config *c, const load_ctx *x, yaml_node_t *map, const char *prefix) {
    char where[DV_CONFIG_STR_MAX + 32], path[512];
    for (yaml_node_pair_t *pr = map->data.mapping.pairs.start; pr < map->data.mapping.pairs.top; pr++) {
        yaml_node_t *kn = yaml_document_get_node(x->doc, pr->key);
        yaml_node_t *vn = yaml_document_get_node(x->doc, pr->value);
        where_at(x, kn, where, sizeof where);
        if (!kn || kn->type != YAML_SCALAR_NODE) {
            dv_user_error("%s: keys must be names, got %s in section '%s'", where,
                          kn && kn->type == YAML_SEQUENCE_NODE ? "a list" : "a mapping",
                          *prefix ? prefix : "(top level)");
            return DV_ERR_CONFIG;
        }
        const char *name = scalar_text(kn);
        /* Duplicates are errors: last-wins would hide a mistake, and OmegaConf rejects them. */
        for (yaml_node_pair_t *q = map->data.mapping.pairs.start; q < pr; q++) {
            yaml_node_t *qk = yaml_document_get_node(x->doc, q->key);
            if (qk && qk->type == YAML_SCALAR_NODE && !strcmp(scalar_text(qk), name)) {
                dv_user_error("%s: duplicate key '%s%s%s' (first at line %zu)", where, prefix,
                              *prefix ? "." : "", name, qk->start_mark.line + 1);
                return DV_ERR_CONFIG;
            }
        }
        int len = snprintf(path, sizeof path, "%s%s%s", prefix, *prefix ? "." : "", name);
        if (len < 0 || (size_t)len >= sizeof path) {
            dv_user_error("%s: unknown key '%.60s...'", where, path);
            return DV_ERR_CONFIG;
        }
        const dv_config_key *k = dv_config_find_key(path);
        if (k) {
            where_at(x, vn, where, sizeof where);
            DV_TRY(set_from_node(c, k, x->doc, vn, where));
        } else if (first_in_section(path)) {
            if (vn && vn->type == YAML_MAPPING_NODE) {
                DV_TRY(apply_mapping(c, x, vn, path));
            } else if (!node_is_null(vn)) { /* an empty section changes nothing */
                char got[96];
                node_desc(vn, got, sizeof got);
                where_at(x, vn, where, sizeof where);
                dv_user_error("%s: %s: expected a mapping of the section's keys, got %s", where,
                              path, got);
                return DV_ERR_CONFIG;
            }
        } else {
            return unknown_key(where, path);
        }
    }
    return DV_OK;
}

static int parse_error(const char *path, const yaml_parser_t *p) {
    if (p->error == YAML_MEMORY_ERROR) return DV_ERR(DV_ERR_NOMEM, "%s: out of memory reading YAML", path);
    const char *problem = p->problem ? p->problem : "malformed YAML";
    if (p->error == YAML_READER_ERROR) {
        dv_user_error("%s: malformed YAML at byte %zu: %s", path, p->problem_offset, problem);
    } else if (p->context) {
        dv_user_error("%s:%zu:%zu: malformed YAML: %s (%s at line %zu, column %zu)", path,
                      p->problem_mark.line + 1, p->problem_mark.column + 1, problem, p->context,
                      p->context_mark.line + 1, p->context_mark.column + 1);
    } else {
        dv_user_error("%s:%zu:%zu: malformed YAML: %s", path, p->problem_mark.line + 1,
                      p->problem_mark.column + 1, problem);
    }
    return DV_ERR_YAML;
}

static int load_document(dv_config *c, const char *path, yaml_parser_t *p) {
    yaml_document_t doc, next;
    if (!yaml_parser_load(p, &doc)) return parse_error(path, p);
    load_ctx x = {path, &doc};
    int rc = DV_OK;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root && root->type == YAML_MAPPING_NODE) {
        rc = apply_mapping(c, &x, root, "");
    } else if (!node_is_null(root)) { /* an empty file (or a lone null) changes nothing */
        char where[DV_CONFIG_STR_MAX + 32], got[96];
        where_at(&x, root, where, sizeof where);
        node_desc(root, got, sizeof got);
        dv_user_error("%s: expected a mapping of sections at the top level, got %s", where, got);
        rc = DV_ERR_CONFIG;
    }
    yaml_document_delete(&doc);
    if (rc != DV_OK) return rc;
    /* Read to the end so that errors after the first document are not silently dropped. */
    if (!yaml_parser_load(p, &next)) return parse_error(path, p);
    if (yaml_document_get_root_node(&next)) {
        dv_user_error("%s:%zu: a second YAML document; a config file holds one", path,
                      next.start_mark.line + 1);
        rc = DV_ERR_CONFIG;
    }
    yaml_document_delete(&next);
    return rc;
}

int dv_config_load_file(dv_config *c, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        int e = errno;
        dv_user_error("%s: cannot open the config file: %s", path, strerror(e));
        return DV_ERR_IO;
    }
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
        fclose(f);
        dv_user_error("%s: cannot read the config file: it is a directory", path);
        return DV_ERR_IO;
    }
    dv_config *t = malloc(sizeof *t);
    yaml_parser_t p;
    if (!t || !yaml_parser_initialize(&p)) {
        free(t);
        fclose(f);
        return DV_ERR(DV_ERR_NOMEM, "out of memory loading %s", path);
    }
    *t = *c;
    yaml_parser_set_input_file(&p, f);
    int rc = load_document(t, path, &p);
    if (rc == DV_OK) *c = *t;
    yaml_parser_delete(&p);
    fclose(f);
    free(t);
    return rc;
}

int dv_config_load_string(dv_config *c, const char *text, const char *origin) {
    dv_config *t = malloc(sizeof *t);
    yaml_parser_t p;
    if (!t || !yaml_parser_initialize(&p)) {
        free(t);
        return DV_ERR(DV_ERR_NOMEM, "out of memory loading %s", origin);
    }
    *t = *c;
    yaml_parser_set_input_string(&p, (const unsigned char *)text, strlen(text));
    int rc = load_document(t, origin, &p);
    if (rc == DV_OK) *c = *t;
    yaml_parser_delete(&p);
    free(t);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Finalize                                                                                   */
/* ------------------------------------------------------------------------------------------ */

static int join_path(char *dst, size_t n, const char *dir, const char *name, const char *what) {
    int len;
    if (name[0] == '/' || !*dir) len = snprintf(dst, n, "%s", name);
    else len = snprintf(dst, n, "%s%s%s", dir, dir[strlen(dir) - 1] == '/' ? "" : "/", name);
    if (len < 0 || (size_t)len >= n) {
        dv_user_error("%s: the path is longer than %zu characters", what, n - 1);
        return DV_ERR_CONFIG;
    }
    return DV_OK;
}

static int multiple_of_patch(const char *key, int64_t size, int64_t patch) {
    if (size % patch == 0) return DV_OK;
    dv_user_error("%s = %lld is not a multiple of student.patch_size = %lld", key, (long long)size,
                  (long long)patch);
    return DV_ERR_CONFIG;
}

static int not_longer(const char *key, int64_t epochs, const char *total_key, int64_t total) {
    if (epochs <= total) return DV_OK;
    dv_user_error("%s = %lld is longer than %s = %lld", key, (long long)epochs, total_key,
                  (long long)total);
    return DV_ERR_CONFIG;
}

int dv_config_finalize(dv_config *c, int64_t world_size) {
    if (world_size < 1 || world_size > (INT64_C(1) << 30)) { /* bound keeps products in int64 */
        dv_user_error("the world size must be in [1, 2^30], got %lld", (long long)world_size);
        return DV_ERR_CONFIG;
    }
    const int64_t ps = c->student.patch_size, oel = c->train.OFFICIAL_EPOCH_LENGTH;
    DV_TRY(multiple_of_patch("crops.global_crops_size", c->crops.global_crops_size, ps));
    DV_TRY(multiple_of_patch("crops.local_crops_size", c->crops.local_crops_size, ps));
    if (c->highres.image_size) DV_TRY(multiple_of_patch("highres.image_size", c->highres.image_size, ps));
    /* The official schedules are [freeze | warmup | cosine] arrays of total length. */
    DV_TRY(not_longer("optim.warmup_epochs", c->optim.warmup_epochs, "optim.epochs", c->optim.epochs));
    DV_TRY(not_longer("optim.freeze_last_layer_epochs", c->optim.freeze_last_layer_epochs,
                      "optim.epochs", c->optim.epochs));

    /* official presets (vit_small/base/large/giant2), overridden by explicit dimensions */
    static const int64_t preset[4][3] = {{384, 12, 6}, {768, 12, 12}, {1024, 24, 16}, {1536, 40, 24}};
    const int64_t *pr = preset[c->student.arch];
    int64_t dim = c->student.embed_dim ? c->student.embed_dim : pr[0];
    int64_t depth = c->student.depth ? c->student.depth : pr[1];
    int64_t heads = c->student.num_heads ? c->student.num_heads : pr[2];
    if (dim % heads != 0) {
        dv_user_error("the embedding width %lld (student.embed_dim) is not a multiple of the head "
                      "count %lld (student.num_heads)", (long long)dim, (long long)heads);
        return DV_ERR_CONFIG;
    }

    dv_config_derived *d = malloc(sizeof *d);
    if (!d) return DV_ERR(DV_ERR_NOMEM, "out of memory for derived config values");
    memset(d, 0, sizeof *d);
    d->world_size = world_size;
    if (c->train.global_batch_size > 0) {
        /* a fixed global batch keeps lr, schedules and the data order across rank counts */
        if (c->train.global_batch_size % world_size != 0) {
            free(d);
            dv_user_error("train.global_batch_size = %lld is not divisible by the %lld ranks of "
                          "this run (choose a multiple of the rank count, or 0 for "
                          "train.batch_size_per_gpu x ranks)",
                          (long long)c->train.global_batch_size, (long long)world_size);
            return DV_ERR_CONFIG;
        }
        d->global_batch = c->train.global_batch_size;
        d->batch_per_rank = c->train.global_batch_size / world_size;
    } else {
        d->global_batch = c->train.batch_size_per_gpu * world_size;
        d->batch_per_rank = c->train.batch_size_per_gpu;
    }
    /* sqrt_wrt_1024, the only official rule, written as the official expression */
    d->lr = c->optim.base_lr * sqrt((double)d->global_batch / 1024.0);
    d->total_iters = c->optim.epochs * oel;
    d->warmup_iters = c->optim.warmup_epochs * oel;
    d->freeze_last_layer_iters = c->optim.freeze_last_layer_epochs * oel;
    d->warmup_teacher_temp_iters = c->teacher.warmup_teacher_temp_epochs * oel;
    d->checkpoint_period = c->checkpoint.period ? c->checkpoint.period : 3 * oel;
    d->global_grid = c->crops.global_crops_size / ps;
    d->local_grid = c->crops.local_crops_size / ps;
    /* the paper's 518 px is 37 patches of 14; other patch sizes get the nearest grid */
    d->highres_grid = c->highres.image_size ? c->highres.image_size / ps : (518 + ps / 2) / ps;
    if (d->highres_grid < 1) d->highres_grid = 1;
    d->highres_image_size = d->highres_grid * ps;
    d->highres_base_lr = c->highres.base_lr > 0 ? c->highres.base_lr : c->optim.base_lr / 10.0;
    d->embed_dim = dim;
    d->depth = depth;
    d->num_heads = heads;
    int rc = DV_OK;
    if (c->checkpoint.dir[0]) memcpy(d->checkpoint_dir, c->checkpoint.dir, sizeof d->checkpoint_dir);
    else rc = join_path(d->checkpoint_dir, sizeof d->checkpoint_dir, c->train.output_dir,
                        "checkpoints", "checkpoint.dir");
    if (rc == DV_OK && c->log.metrics_file[0])
        rc = join_path(d->metrics_path, sizeof d->metrics_path, c->train.output_dir,
                       c->log.metrics_file, "log.metrics_file");
    if (rc == DV_OK) {
        d->finalized = 1;
        c->optim.lr = d->lr;
        c->derived = *d;
    }
    free(d);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Text and YAML output, comparison                                                           */
/* ------------------------------------------------------------------------------------------ */

static void value_text(const dv_config *c, const dv_config_key *k, char *buf, size_t n) {
    const void *src = cfield(c, k);
    switch (k->type) {
    case DV_KEY_BOOL: snprintf(buf, n, "%s", *(const bool *)src ? "true" : "false"); break;
    case DV_KEY_INT: snprintf(buf, n, "%lld", (long long)*(const int64_t *)src); break;
    case DV_KEY_DOUBLE: fmt_double(*(const double *)src, buf, n); break;
    case DV_KEY_STRING: snprintf(buf, n, "%s", (const char *)src); break;
    case DV_KEY_ENUM: {
        int v;
        memcpy(&v, src, sizeof v);
        snprintf(buf, n, "%s", k->choices[v]);
        break;
    }
    case DV_KEY_DLIST: {
        const double *v = src;
        size_t used = (size_t)snprintf(buf, n, "[");
        for (size_t i = 0; i < list_len(k) && used < n; i++) {
            char t[40];
            fmt_double(v[i], t, sizeof t);
            used += (size_t)snprintf(buf + used, n - used, "%s%s", i ? ", " : "", t);
        }
        if (used < n) snprintf(buf + used, n - used, "]");
        break;
    }
    }
}

int dv_config_get_text(const dv_config *c, const char *key, char *buf, size_t bufsize) {
    const dv_config_key *k = dv_config_find_key(key);
    if (!k) return DV_ERR(DV_ERR_ARG, "dv_config_get_text: unknown key '%s'", key);
    if (bufsize == 0) return DV_ERR(DV_ERR_ARG, "dv_config_get_text: empty buffer");
    value_text(c, k, buf, bufsize);
    return DV_OK;
}

const char *dv_config_first_difference(const dv_config *a, const dv_config *b) {
    for (size_t i = 0; i < N_KEYS; i++) {
        const dv_config_key *k = &k_keys[i];
        const void *x = cfield(a, k), *y = cfield(b, k);
        int same = k->type == DV_KEY_STRING ? strcmp(x, y) == 0 : memcmp(x, y, k->size) == 0;
        if (!same) return k->name;
    }
    return NULL;
}

int dv_config_equal(const dv_config *a, const dv_config *b) {
    return dv_config_first_difference(a, b) == NULL;
}

/* One libyaml event; the emitter owns (and frees) it afterwards. */
static int emit_scalar(yaml_emitter_t *e, char *s, yaml_scalar_style_t style) {
    yaml_event_t ev;
    if (!yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)s, (int)strlen(s), 1, 1, style))
        return 0;
    return yaml_emitter_emit(e, &ev);
}

static int emit_mapping_start(yaml_emitter_t *e) {
    yaml_event_t ev;
    if (!yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1, YAML_BLOCK_MAPPING_STYLE)) return 0;
    return yaml_emitter_emit(e, &ev);
}

static int emit_mapping_end(yaml_emitter_t *e) {
    yaml_event_t ev;
    if (!yaml_mapping_end_event_initialize(&ev)) return 0;
    return yaml_emitter_emit(e, &ev);
}

static int emit_value(yaml_emitter_t *e, const dv_config *c, const dv_config_key *k) {
    char buf[DV_CONFIG_STR_MAX + 64];
    if (k->type == DV_KEY_DLIST) {
        yaml_event_t ev;
        if (!yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1, YAML_FLOW_SEQUENCE_STYLE))
            return 0;
        if (!yaml_emitter_emit(e, &ev)) return 0;
        const double *v = cfield(c, k);
        for (size_t i = 0; i < list_len(k); i++) {
            fmt_double(v[i], buf, sizeof buf);
            if (!emit_scalar(e, buf, YAML_PLAIN_SCALAR_STYLE)) return 0;
        }
        if (!yaml_sequence_end_event_initialize(&ev)) return 0;
        return yaml_emitter_emit(e, &ev);
    }
    value_text(c, k, buf, sizeof buf);
    /* Strings are always quoted so that "null", "true" or "8" stay strings when read back;
     * libyaml switches to double quotes where single quotes cannot hold the text. */
    return emit_scalar(e, buf, k->type == DV_KEY_STRING ? YAML_SINGLE_QUOTED_SCALAR_STYLE
                                                        : YAML_PLAIN_SCALAR_STYLE);
}

/* Emit the stream; keys of one section are contiguous in the table (checked by the test). */
static int emit_all(yaml_emitter_t *e, const dv_config *c) {
    yaml_event_t ev;
    if (!yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING) || !yaml_emitter_emit(e, &ev))
        return 0;
    if (!yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, 1) || !yaml_emitter_emit(e, &ev))
        return 0;
    if (!emit_mapping_start(e)) return 0;
    enum { MAX_DEPTH = 8 };
    char open[MAX_DEPTH][64]; /* names of the open sections */
    int depth = 0;
    for (size_t i = 0; i < N_KEYS; i++) {
        const dv_config_key *k = &k_keys[i];
        char comp[MAX_DEPTH][64];
        int nc = 0;
        for (const char *s = k->name; nc < MAX_DEPTH;) {
            const char *dot = strchr(s, '.');
            size_t len = dot ? (size_t)(dot - s) : strlen(s);
            snprintf(comp[nc++], sizeof comp[0], "%.*s", (int)len, s);
            if (!dot) break;
            s = dot + 1;
        }
        int common = 0;
        while (common < depth && common < nc - 1 && !strcmp(open[common], comp[common])) common++;
        for (; depth > common; depth--)
            if (!emit_mapping_end(e)) return 0;
        for (; depth < nc - 1; depth++) {
            if (!emit_scalar(e, comp[depth], YAML_PLAIN_SCALAR_STYLE) || !emit_mapping_start(e))
                return 0;
            memcpy(open[depth], comp[depth], sizeof open[0]);
        }
        if (!emit_scalar(e, comp[nc - 1], YAML_PLAIN_SCALAR_STYLE) || !emit_value(e, c, k)) return 0;
    }
    for (; depth > 0; depth--)
        if (!emit_mapping_end(e)) return 0;
    if (!emit_mapping_end(e)) return 0;
    if (!yaml_document_end_event_initialize(&ev, 1) || !yaml_emitter_emit(e, &ev)) return 0;
    if (!yaml_stream_end_event_initialize(&ev) || !yaml_emitter_emit(e, &ev)) return 0;
    return yaml_emitter_flush(e);
}

int dv_config_write_yaml(const dv_config *c, FILE *f) {
    yaml_emitter_t e;
    if (!yaml_emitter_initialize(&e)) return DV_ERR(DV_ERR_NOMEM, "yaml_emitter_initialize failed");
    yaml_emitter_set_output_file(&e, f);
    yaml_emitter_set_indent(&e, 2);
    yaml_emitter_set_width(&e, -1);
    yaml_emitter_set_unicode(&e, 1);
    int ok = emit_all(&e, c);
    int rc = DV_OK;
    if (!ok) {
        rc = e.error == YAML_WRITER_ERROR
                 ? DV_ERR(DV_ERR_IO, "writing the config: %s", e.problem ? e.problem : "write error")
                 : DV_ERR(DV_ERR_YAML, "emitting the config: %s", e.problem ? e.problem : "error");
    } else if (fflush(f) != 0 || ferror(f)) {
        rc = DV_ERR(DV_ERR_IO, "writing the config: %s", strerror(errno));
    }
    yaml_emitter_delete(&e);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Command line                                                                               */
/* ------------------------------------------------------------------------------------------ */

/* "--name VALUE" or "--name=VALUE": 1 and *val set, 0 not this option, -1 value missing. */
static int option_value(const char *name, int argc, char **argv, int *i, const char **val) {
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n) != 0) return 0;
    if (a[n] == '=') *val = a + n + 1;
    else if (a[n] == '\0') {
        if (*i + 1 >= argc) *val = NULL;
        else *val = argv[++*i];
    } else return 0;
    if (!*val || !**val) {
        dv_user_error("command line: %s needs a value", name);
        return -1;
    }
    return 1;
}

int dv_config_from_argv(dv_config *c, int argc, char **argv, int64_t world_size, dv_cli *cli) {
    memset(cli, 0, sizeof *cli);
    const char *output_dir = NULL;
    int no_resume = 0, dashdash = 0, nov = 0;
    char **ov = malloc((size_t)(argc > 0 ? argc : 1) * sizeof *ov);
    dv_config *t = malloc(sizeof *t);
    if (!ov || !t) {
        free(ov);
        free(t);
        return DV_ERR(DV_ERR_NOMEM, "out of memory parsing the command line");
    }
    int rc = DV_OK;
    for (int i = 1; i < argc && rc == DV_OK; i++) {
        const char *a = argv[i], *val = NULL;
        int r;
        if (dashdash || (a[0] != '-' && !strchr(a, '='))) {
            if (cli->nrest >= DV_CLI_MAX_REST) {
                dv_user_error("command line: too many arguments (at most %d besides the config)",
                              DV_CLI_MAX_REST);
                rc = DV_ERR_CONFIG;
            } else cli->rest[cli->nrest++] = argv[i];
        } else if (a[0] != '-') {
            ov[nov++] = argv[i];
        } else if (!strcmp(a, "--")) {
            dashdash = 1;
        } else if ((r = option_value("--config-file", argc, argv, &i, &val)) != 0 ||
                   (r = option_value("--config", argc, argv, &i, &val)) != 0) {
            if (r < 0) rc = DV_ERR_CONFIG;
            else if (cli->n_config_files >= (int)(sizeof cli->config_files / sizeof cli->config_files[0])) {
                dv_user_error("command line: too many --config-file options (at most %zu)",
                              sizeof cli->config_files / sizeof cli->config_files[0]);
                rc = DV_ERR_CONFIG;
            } else cli->config_files[cli->n_config_files++] = val;
        } else if ((r = option_value("--output-dir", argc, argv, &i, &val)) != 0) {
            if (r < 0) rc = DV_ERR_CONFIG;
            else output_dir = val;
        } else if (!strcmp(a, "--print-config")) {
            cli->print_config = 1;
        } else if (!strcmp(a, "--no-resume")) {
            no_resume = 1;
        } else if (cli->nrest >= DV_CLI_MAX_REST) {
            dv_user_error("command line: too many arguments (at most %d besides the config)",
                          DV_CLI_MAX_REST);
            rc = DV_ERR_CONFIG;
        } else {
            cli->rest[cli->nrest++] = argv[i];
        }
    }
    *t = *c;
    for (int i = 0; i < cli->n_config_files && rc == DV_OK; i++)
        rc = dv_config_load_file(t, cli->config_files[i]);
    if (rc == DV_OK) rc = dv_config_apply_overrides(t, nov, ov);
    if (rc == DV_OK && output_dir) {
        /* taken verbatim (not as YAML), as a path should be */
        if (strlen(output_dir) >= sizeof t->train.output_dir) {
            dv_user_error("command line: --output-dir: the path is longer than %zu characters",
                          sizeof t->train.output_dir - 1);
            rc = DV_ERR_CONFIG;
        } else snprintf(t->train.output_dir, sizeof t->train.output_dir, "%s", output_dir);
    }
    if (rc == DV_OK && no_resume) t->checkpoint.resume = false;
    if (rc == DV_OK) rc = dv_config_finalize(t, world_size);
    if (rc == DV_OK) *c = *t;
    free(t);
    free(ov);
    return rc;
}

void dv_config_usage(FILE *f) {
    fputs("configuration options (all programs):\n"
          "  --config-file FILE   YAML config merged over the defaults (official layout; repeatable)\n"
          "  --output-dir DIR     sets train.output_dir\n"
          "  --no-resume          do not resume from a checkpoint (checkpoint.resume=false)\n"
          "  --print-config       print the resolved config as YAML and exit\n"
          "  key=value            override one key, e.g. optim.base_lr=1e-3 "
          "ibot.mask_ratio_min_max=[0.1,0.5]\n"
          "  keys, defaults and meanings: doc/config.md\n",
          f);
}
