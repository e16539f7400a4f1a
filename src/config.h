/* config — the typed configuration of every dinov2c program.
 *
 * What: one struct (dv_config) with a nested sub-struct per YAML section, and ONE key table
 * (dv_config_key) that names every key by its dotted path, its type, its place in the struct,
 * its default (as YAML text), its valid range or choices and a one-line doc. Loading, setting,
 * printing, comparing and the reference in doc/config.md are all driven by that table.
 *
 * Keys and defaults: the official DINOv2 ssl_default_config.yaml keys with their official
 * defaults, so an official config file loads unchanged, plus dinov2c sections (data.*,
 * checkpoint.*, compute.*, log.*, highres.*, distill.*, curate.*) for what the official code
 * does not have. Key names are case-sensitive, as in the official files (MODEL.WEIGHTS,
 * train.OFFICIAL_EPOCH_LENGTH).
 *
 * Resolution order (as the official code): defaults < config file(s) < key=value overrides
 * < --output-dir; then dv_config_finalize checks cross-key rules and fills c->derived
 * (resolved learning rate, iteration counts, paths) for a given world size.
 *
 * Conventions:
 *  - dv_config is plain data (fixed char buffers, no pointers): copy it with `=`, nothing to
 *    free. It is large (~60 KiB): keep it on the heap or in a long-lived frame.
 *  - Functions return DV_OK or a dv_status. User mistakes print exactly one line through
 *    dv_user_error ("error: conf.yaml:12: optim.base_lr: expected a number, got 'fast'") and
 *    return DV_ERR_CONFIG (bad key/value/combination), DV_ERR_YAML (malformed YAML) or
 *    DV_ERR_IO (file cannot be opened). Nothing here exits or calls MPI.
 *  - Every mutating call is all-or-nothing: on error the config is unchanged.
 *  - Enum-valued keys are stored as C enums whose value is the index of the YAML name in
 *    the key's choices list.
 *  - c->derived is not a key: it is never loaded or printed and dv_config_equal ignores it;
 *    it is valid only after dv_config_finalize (derived.finalized != 0).
 */
#ifndef DV_CONFIG_H
#define DV_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Size of every string buffer (paths, dataset strings), terminating NUL included. */
#define DV_CONFIG_STR_MAX 4096
/* Most arguments dv_config_from_argv hands back to the program (cli->rest). */
#define DV_CLI_MAX_REST 64

/* ---- enum-valued keys (value = index into the key's choices) ---- */
typedef enum { DV_CFG_NO_SHARD, DV_CFG_SHARD_GRAD_OP, DV_CFG_FULL_SHARD } dv_cfg_sharding;
typedef enum { DV_CFG_FP32, DV_CFG_FP16, DV_CFG_BF16 } dv_cfg_dtype;
/* YAML "centering" (softmax centering with an EMA centre) | "sinkhorn_knopp" */
typedef enum { DV_CFG_CENTERING_SOFTMAX, DV_CFG_CENTERING_SINKHORN_KNOPP } dv_cfg_centering;
typedef enum { DV_CFG_VIT_SMALL, DV_CFG_VIT_BASE, DV_CFG_VIT_LARGE, DV_CFG_VIT_GIANT2 } dv_cfg_arch;
/* "swiglu" and "swiglufused" are the same layer officially; both kept so files round-trip. */
typedef enum { DV_CFG_FFN_MLP, DV_CFG_FFN_SWIGLU, DV_CFG_FFN_SWIGLUFUSED, DV_CFG_FFN_IDENTITY } dv_cfg_ffn;
typedef enum { DV_CFG_SCALING_SQRT_WRT_1024 } dv_cfg_scaling_rule;
typedef enum { DV_CFG_BACKEND_AUTO, DV_CFG_BACKEND_CPU, DV_CFG_BACKEND_CUDA } dv_cfg_backend;
typedef enum { DV_CFG_LOG_DEBUG, DV_CFG_LOG_INFO, DV_CFG_LOG_WARN } dv_cfg_log_level;

/* compute_precision.{teacher,student}.{backbone,dino_head,ibot_head} */
typedef struct {
    dv_cfg_sharding sharding_strategy;
    struct {
        dv_cfg_dtype param_dtype, reduce_dtype, buffer_dtype;
    } mixed_precision;
} dv_cfg_fsdp;

typedef struct {
    dv_cfg_fsdp backbone, dino_head, ibot_head;
} dv_cfg_precision_model;

/* Values computed by dv_config_finalize; not keys. */
typedef struct {
    int finalized;                  /* 1 once dv_config_finalize succeeded */
    int64_t world_size;             /* ranks the values below were computed for */
    int64_t global_batch;           /* train.global_batch_size, or batch_size_per_gpu * ranks */
    int64_t batch_per_rank;         /* images per rank per step: global_batch / world_size */
    double lr;                      /* base_lr * sqrt(global_batch / 1024) (also in optim.lr) */
    int64_t total_iters;            /* optim.epochs * OFFICIAL_EPOCH_LENGTH */
    int64_t warmup_iters;           /* optim.warmup_epochs * OFFICIAL_EPOCH_LENGTH */
    int64_t freeze_last_layer_iters; /* optim.freeze_last_layer_epochs * OFFICIAL_EPOCH_LENGTH */
    int64_t warmup_teacher_temp_iters; /* teacher.warmup_teacher_temp_epochs * OFFICIAL_EPOCH_LENGTH */
    int64_t checkpoint_period;      /* checkpoint.period, or 3 * OFFICIAL_EPOCH_LENGTH when 0 */
    int64_t global_grid, local_grid; /* patches per side of a global / local crop */
    int64_t highres_image_size;
    int64_t embed_dim, depth, num_heads; /* the backbone's dimensions: preset of student.arch
                                          * unless student.embed_dim/depth/num_heads are set */     /* highres.image_size, or the patch multiple nearest 518 */
    int64_t highres_grid;           /* patches per side at highres_image_size */
    double highres_base_lr;         /* highres.base_lr, or optim.base_lr / 10 when 0 */
    char checkpoint_dir[DV_CONFIG_STR_MAX]; /* checkpoint.dir or <output_dir>/checkpoints */
    char metrics_path[DV_CONFIG_STR_MAX];   /* log.metrics_file under output_dir; "" = off */
} dv_config_derived;

typedef struct {
    struct {
        char WEIGHTS[DV_CONFIG_STR_MAX];
    } MODEL;
    struct {
        bool grad_scaler;
        dv_cfg_precision_model teacher, student;
    } compute_precision;
    struct {
        double loss_weight;
        int64_t head_n_prototypes, head_bottleneck_dim, head_nlayers, head_hidden_dim;
        double koleo_loss_weight;
    } dino;
    struct {
        double loss_weight, mask_sample_probability;
        double mask_ratio_min_max[2];
        bool separate_head;
        int64_t head_n_prototypes, head_bottleneck_dim, head_nlayers, head_hidden_dim;
    } ibot;
    struct {
        int64_t batch_size_per_gpu;
        int64_t global_batch_size; /* dinov2c: > 0 fixes the global batch over rank counts */
        char dataset_path[DV_CONFIG_STR_MAX];
        char output_dir[DV_CONFIG_STR_MAX];
        int64_t saveckp_freq, seed, num_workers, OFFICIAL_EPOCH_LENGTH;
        bool cache_dataset;
        dv_cfg_centering centering;
    } train;
    struct {
        dv_cfg_arch arch;
        int64_t embed_dim, depth, num_heads; /* dinov2c: nonzero overrides the arch preset */
        double mlp_ratio;
        int64_t patch_size;
        double drop_path_rate, layerscale;
        bool drop_path_uniform;
        char pretrained_weights[DV_CONFIG_STR_MAX];
        dv_cfg_ffn ffn_layer;
        int64_t block_chunks;
        bool qkv_bias, proj_bias, ffn_bias;
        int64_t num_register_tokens;
        bool interpolate_antialias;
        double interpolate_offset;
    } student;
    struct {
        double momentum_teacher, final_momentum_teacher, warmup_teacher_temp, teacher_temp;
        int64_t warmup_teacher_temp_epochs;
    } teacher;
    struct {
        int64_t epochs;
        double weight_decay, weight_decay_end, base_lr, lr;
        int64_t warmup_epochs;
        double min_lr, clip_grad;
        int64_t freeze_last_layer_epochs;
        dv_cfg_scaling_rule scaling_rule;
        double patch_embed_lr_mult, layerwise_decay, adamw_beta1, adamw_beta2;
    } optim;
    struct {
        double global_crops_scale[2];
        int64_t local_crops_number;
        double local_crops_scale[2];
        int64_t global_crops_size, local_crops_size;
    } crops;
    struct {
        int64_t eval_period_iterations;
    } evaluation;
    /* ---- dinov2c sections ---- */
    struct {
        char train[DV_CONFIG_STR_MAX], val[DV_CONFIG_STR_MAX], index[DV_CONFIG_STR_MAX];
        int64_t num_workers, prefetch;
        bool blur_probabilities_intended;
        double blur_sigma[2];
        double color_jitter_probability, grayscale_probability, solarize_probability;
        int64_t seed;
    } data;
    struct {
        char dir[DV_CONFIG_STR_MAX];
        int64_t period, keep;
        bool resume;
    } checkpoint;
    struct {
        dv_cfg_backend backend;
        int64_t threads, max_steps;
        double max_minutes;
    } compute;
    struct {
        int64_t period;
        char metrics_file[DV_CONFIG_STR_MAX];
        dv_cfg_log_level level;
    } log;
    struct {
        char init_checkpoint[DV_CONFIG_STR_MAX];
        int64_t image_size, iterations;
        double base_lr;
    } highres;
    struct {
        char teacher_checkpoint[DV_CONFIG_STR_MAX];
        dv_cfg_arch teacher_arch;
        dv_cfg_ffn teacher_ffn_layer;
        int64_t teacher_num_register_tokens;
    } distill;
    struct {
        char embed_checkpoint[DV_CONFIG_STR_MAX];
        int64_t dedup_knn;
        double dedup_threshold, eval_dedup_threshold;
        int64_t num_clusters, kmeans_iterations, retrieve_k, target_size;
    } curate;

    dv_config_derived derived;
} dv_config;

/* ---- the key table ---- */
typedef enum {
    DV_KEY_BOOL,   /* bool */
    DV_KEY_INT,    /* int64_t */
    DV_KEY_DOUBLE, /* double */
    DV_KEY_STRING, /* char[size] */
    DV_KEY_ENUM,   /* C enum, value = index into choices */
    DV_KEY_DLIST   /* double[size / sizeof(double)], fixed length */
} dv_key_type;

enum {
    DV_KEY_MIN_OPEN = 1u << 0, /* value > min instead of >= */
    DV_KEY_MAX_OPEN = 1u << 1, /* value < max instead of <= */
    DV_KEY_NULLABLE = 1u << 2, /* YAML null allowed for a number: stored as 0 */
    DV_KEY_ORDERED = 1u << 3,  /* list items must be non-decreasing */
    DV_KEY_MEMEFF = 1u << 4    /* enum: a trailing "_memeff" is dropped, as officially */
};

typedef struct {
    const char *name;           /* dotted path, e.g. "optim.base_lr" */
    dv_key_type type;
    size_t offset;              /* offsetof(dv_config, field) */
    size_t size;                /* sizeof the field */
    const char *def;            /* default as YAML flow text, in printed (canonical) form */
    double min, max;            /* numeric bounds (list: per item); +-INFINITY = none */
    unsigned flags;             /* DV_KEY_* */
    const char *const *choices; /* enum names, NULL-terminated */
    const char *doc;            /* one line */
} dv_config_key;

size_t dv_config_key_count(void);
const dv_config_key *dv_config_key_at(size_t i);          /* NULL past the end */
const dv_config_key *dv_config_find_key(const char *name); /* NULL if unknown */

/* ---- API ---- */

/* Every key to its default; derived zeroed. */
void dv_config_defaults(dv_config *c);

/* Merge a YAML file (nested mappings, official layout) over c. `null`/`~` gives "" for
 * string keys and 0 for student.layerscale; an empty or null section changes nothing.
 * A key given twice in one mapping is an error. */
int dv_config_load_file(dv_config *c, const char *path);

/* Merge a YAML document held in memory (e.g. the config a checkpoint carries) over c, as
 * dv_config_load_file does; origin names it in messages. */
int dv_config_load_string(dv_config *c, const char *text, const char *origin);

/* Set one key from YAML flow text: "0.1", "true", "[0.1, 0.5]", "vit_small", "null".
 * origin names the source in messages; NULL means "command line". */
int dv_config_set(dv_config *c, const char *key, const char *value_text, const char *origin);

/* Apply official-style "key=value" overrides in order (split at the first '='). */
int dv_config_apply_overrides(dv_config *c, int n, char **kv);

/* Cross-key checks and c->derived for world_size ranks; sets optim.lr to the resolved lr
 * (as the official code writes it). Idempotent. */
int dv_config_finalize(dv_config *c, int64_t world_size);

/* Emit every key as nested YAML; loading the output over defaults gives an equal config
 * (doubles print in shortest round-trip form, always with a '.' so YAML 1.1 reads floats). */
int dv_config_write_yaml(const dv_config *c, FILE *f);

/* Format one key's value as YAML flow text (what dv_config_set accepts). */
int dv_config_get_text(const dv_config *c, const char *key, char *buf, size_t bufsize);

/* 1 if every key is equal (doubles bit for bit), else 0. derived is not compared. */
int dv_config_equal(const dv_config *a, const dv_config *b);
/* Name of the first key that differs, or NULL. */
const char *dv_config_first_difference(const dv_config *a, const dv_config *b);

/* The command line shared by all programs. Understood:
 *   --config-file FILE | --config FILE (also =FILE; repeatable, merged in order)
 *   --output-dir DIR (sets train.output_dir, after all overrides, as officially)
 *   --no-resume      (checkpoint.resume=false, the official flag)
 *   --print-config   (sets cli->print_config; the caller prints, on rank 0)
 *   key=value        (an argument not starting with '-' that contains '=')
 * Everything else (other --flags, -x, positional words, all after "--") is handed back in
 * order in cli->rest for the program; so a program's own flags take values as --flag=value
 * or as the following word. c must hold defaults (or a program preset) on entry; on success
 * it holds the finalized config. No MPI: call it on every rank before any collective. */
typedef struct {
    const char *config_files[8]; /* as given, pointers into argv */
    int n_config_files;
    int print_config;
    int nrest;
    char *rest[DV_CLI_MAX_REST]; /* pointers into argv */
} dv_cli;

int dv_config_from_argv(dv_config *c, int argc, char **argv, int64_t world_size, dv_cli *cli);

/* Usage lines for the options above, for a program's --help. */
void dv_config_usage(FILE *f);

#endif
