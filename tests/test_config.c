/* test_config — key table, official defaults and recipes, derived values, overrides, YAML
 * round trip, command line, and every error path (one line on stderr naming the key).
 * Fixtures: $srcdir/tests/configs (srcdir defaults to "."). */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "err.h"
#include "tap.h"

/* ---- helpers ---- */

static char g_dir[4096]; /* test-only state: the fixture directory */

static const char *fixture(const char *name, char *buf, size_t n) {
    snprintf(buf, n, "%s/%s", g_dir, name);
    return buf;
}

/* Redirect fd 2 to a temporary file around a call, to read what it printed. */
typedef struct {
    int saved;
    FILE *tmp;
    char text[8192];
} capture;

static void cap_begin(capture *cp) {
    fflush(stderr);
    cp->tmp = tmpfile();
    cp->saved = dup(2);
    if (!cp->tmp || cp->saved < 0 || dup2(fileno(cp->tmp), 2) < 0) {
        printf("Bail out! cannot capture stderr\n");
        exit(1);
    }
}

static const char *cap_end(capture *cp) {
    fflush(stderr);
    dup2(cp->saved, 2);
    close(cp->saved);
    rewind(cp->tmp);
    size_t n = fread(cp->text, 1, sizeof cp->text - 1, cp->tmp);
    cp->text[n] = '\0';
    fclose(cp->tmp);
    return cp->text;
}

static int one_line(const char *s) {
    size_t n = strlen(s);
    return n > 0 && s[n - 1] == '\n' && strchr(s, '\n') == s + n - 1;
}

/* One TAP test: status as wanted, exactly one "error: ..." line containing every needle. */
static void expect_error(const char *what, int rc, int want, const char *msg, const char *n1,
                         const char *n2, const char *n3) {
    int ok = rc == want && one_line(msg) && strstr(msg, "error: ") != NULL;
    const char *needles[3] = {n1, n2, n3};
    for (int i = 0; i < 3; i++)
        if (needles[i] && !strstr(msg, needles[i])) ok = 0;
    tap_ok(ok, "error: %s", what);
    if (!ok) tap_diag("rc %d (want %d), message: %s", rc, want, msg);
    else tap_diag("%.*s", (int)strcspn(msg, "\n"), msg);
}

static int load_error(dv_config *c, const char *file, capture *cp, const char **msg) {
    char path[4200];
    dv_config before = *c;
    cap_begin(cp);
    int rc = dv_config_load_file(c, fixture(file, path, sizeof path));
    *msg = cap_end(cp);
    if (!dv_config_equal(&before, c)) tap_diag("%s changed the config although it failed", file);
    return rc;
}

static int set_error(dv_config *c, const char *key, const char *val, capture *cp, const char **msg) {
    cap_begin(cp);
    int rc = dv_config_set(c, key, val, NULL);
    *msg = cap_end(cp);
    return rc;
}

static int quiet_set(dv_config *c, const char *key, const char *val) {
    int rc = dv_config_set(c, key, val, "test");
    if (rc) tap_diag("dv_config_set(%s, %s) failed", key, val);
    return rc;
}

static int write_and_reload(const dv_config *c, dv_config *out, const char *tag) {
    char path[4200];
    const char *tmpdir = getenv("TMPDIR");
    snprintf(path, sizeof path, "%s/test_config_XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
    int fd = mkstemp(path);
    if (fd < 0) return -1;
    FILE *f = fdopen(fd, "w");
    int rc = dv_config_write_yaml(c, f);
    fclose(f);
    dv_config_defaults(out);
    if (rc == DV_OK) rc = dv_config_load_file(out, path);
    if (rc != DV_OK || !dv_config_equal(c, out)) {
        tap_diag("%s: round trip differs at %s; printed file follows", tag,
                 rc ? "(load failed)" : dv_config_first_difference(c, out));
        FILE *g = fopen(path, "r");
        char line[512];
        while (g && fgets(line, sizeof line, g)) tap_diag("  %.*s", (int)strcspn(line, "\n"), line);
        if (g) fclose(g);
    }
    unlink(path);
    return rc;
}

/* ---- tests ---- */

static void test_table(void) {
    size_t n = dv_config_key_count();
    tap_ok(n >= 122, "key table has %zu keys", n);
    int unique = 1, documented = 1, contiguous = 1, types = 1;
    for (size_t i = 0; i < n; i++) {
        const dv_config_key *k = dv_config_key_at(i);
        if (dv_config_find_key(k->name) != k) unique = 0;
        if (!k->doc || !*k->doc || !k->def) documented = 0;
        if (k->type == DV_KEY_ENUM && !k->choices) types = 0;
        if (k->type == DV_KEY_DLIST && k->size != 2 * sizeof(double)) types = 0;
        /* a section, once left, never reappears: the YAML writer relies on it */
        for (const char *d = strchr(k->name, '.'); d && i > 0; d = strchr(d + 1, '.')) {
            size_t len = (size_t)(d - k->name) + 1;
            const char *prev = dv_config_key_at(i - 1)->name;
            if (!strncmp(prev, k->name, len)) continue;
            for (size_t j = 0; j + 1 < i; j++)
                if (!strncmp(dv_config_key_at(j)->name, k->name, len)) {
                    contiguous = 0;
                    tap_diag("section of %s is split", k->name);
                }
        }
    }
    tap_ok(unique, "key names are unique");
    tap_ok(documented, "every key has a default and a doc line");
    tap_ok(types, "enum keys have choices, list keys have 2 items");
    tap_ok(contiguous, "keys of one section are contiguous");
    tap_ok(dv_config_key_at(n) == NULL && dv_config_find_key("optim.nope") == NULL,
           "lookup past the end / of an unknown key gives NULL");

    /* The default text in the table is the canonical printed form of the default value. */
    dv_config *c = malloc(sizeof *c);
    dv_config_defaults(c);
    int canonical = 1;
    for (size_t i = 0; i < n; i++) {
        const dv_config_key *k = dv_config_key_at(i);
        char buf[DV_CONFIG_STR_MAX];
        dv_config_get_text(c, k->name, buf, sizeof buf);
        if (strcmp(buf, k->def)) {
            canonical = 0;
            tap_diag("%s: default '%s' prints as '%s'", k->name, k->def, buf);
        }
    }
    tap_ok(canonical, "every default prints back as its table text");
    free(c);
}

/* A mutable string, as argv entries are (string literals are not). */
#define S(x) ((char[]){x})

#define EQ(cond) tap_ok((cond), "%s", #cond)

static void test_defaults(void) {
    dv_config *c = malloc(sizeof *c);
    dv_config_defaults(c);
    EQ(strcmp(c->MODEL.WEIGHTS, "") == 0);
    EQ(c->compute_precision.grad_scaler == true);
    EQ(c->compute_precision.teacher.backbone.sharding_strategy == DV_CFG_SHARD_GRAD_OP);
    EQ(c->compute_precision.teacher.backbone.mixed_precision.param_dtype == DV_CFG_FP16);
    EQ(c->compute_precision.teacher.dino_head.mixed_precision.reduce_dtype == DV_CFG_FP16);
    EQ(c->compute_precision.teacher.ibot_head.mixed_precision.buffer_dtype == DV_CFG_FP32);
    EQ(c->compute_precision.student.backbone.mixed_precision.reduce_dtype == DV_CFG_FP16);
    EQ(c->compute_precision.student.dino_head.mixed_precision.reduce_dtype == DV_CFG_FP32);
    EQ(c->compute_precision.student.ibot_head.mixed_precision.reduce_dtype == DV_CFG_FP32);
    EQ(c->compute_precision.student.ibot_head.sharding_strategy == DV_CFG_SHARD_GRAD_OP);
    EQ(c->dino.loss_weight == 1.0);
    EQ(c->dino.head_n_prototypes == 65536);
    EQ(c->dino.head_bottleneck_dim == 256);
    EQ(c->dino.head_nlayers == 3);
    EQ(c->dino.head_hidden_dim == 2048);
    EQ(c->dino.koleo_loss_weight == 0.1);
    EQ(c->ibot.loss_weight == 1.0);
    EQ(c->ibot.mask_sample_probability == 0.5);
    EQ(c->ibot.mask_ratio_min_max[0] == 0.1 && c->ibot.mask_ratio_min_max[1] == 0.5);
    EQ(c->ibot.separate_head == false);
    EQ(c->ibot.head_n_prototypes == 65536 && c->ibot.head_bottleneck_dim == 256);
    EQ(c->ibot.head_nlayers == 3 && c->ibot.head_hidden_dim == 2048);
    EQ(c->train.batch_size_per_gpu == 64);
    EQ(c->train.global_batch_size == 0);
    EQ(strcmp(c->train.dataset_path, "ImageNet:split=TRAIN") == 0);
    EQ(strcmp(c->train.output_dir, ".") == 0);
    EQ(c->train.saveckp_freq == 20 && c->train.seed == 0 && c->train.num_workers == 10);
    EQ(c->train.OFFICIAL_EPOCH_LENGTH == 1250);
    EQ(c->train.cache_dataset == true);
    EQ(c->train.centering == DV_CFG_CENTERING_SOFTMAX);
    EQ(c->student.arch == DV_CFG_VIT_LARGE);
    EQ(c->student.patch_size == 16);
    EQ(c->student.drop_path_rate == 0.3);
    EQ(c->student.layerscale == 1.0e-05);
    EQ(c->student.drop_path_uniform == true);
    EQ(strcmp(c->student.pretrained_weights, "") == 0);
    EQ(c->student.ffn_layer == DV_CFG_FFN_MLP);
    EQ(c->student.block_chunks == 0);
    EQ(c->student.qkv_bias && c->student.proj_bias && c->student.ffn_bias);
    EQ(c->student.num_register_tokens == 0);
    EQ(c->student.interpolate_antialias == false);
    EQ(c->student.interpolate_offset == 0.1);
    EQ(c->teacher.momentum_teacher == 0.992);
    EQ(c->teacher.final_momentum_teacher == 1.0);
    EQ(c->teacher.warmup_teacher_temp == 0.04);
    EQ(c->teacher.teacher_temp == 0.07);
    EQ(c->teacher.warmup_teacher_temp_epochs == 30);
    EQ(c->optim.epochs == 100);
    EQ(c->optim.weight_decay == 0.04 && c->optim.weight_decay_end == 0.4);
    EQ(c->optim.base_lr == 0.004);
    EQ(c->optim.lr == 0.0);
    EQ(c->optim.warmup_epochs == 10);
    EQ(c->optim.min_lr == 1.0e-06);
    EQ(c->optim.clip_grad == 3.0);
    EQ(c->optim.freeze_last_layer_epochs == 1);
    EQ(c->optim.scaling_rule == DV_CFG_SCALING_SQRT_WRT_1024);
    EQ(c->optim.patch_embed_lr_mult == 0.2);
    EQ(c->optim.layerwise_decay == 0.9);
    EQ(c->optim.adamw_beta1 == 0.9 && c->optim.adamw_beta2 == 0.999);
    EQ(c->crops.global_crops_scale[0] == 0.32 && c->crops.global_crops_scale[1] == 1.0);
    EQ(c->crops.local_crops_number == 8);
    EQ(c->crops.local_crops_scale[0] == 0.05 && c->crops.local_crops_scale[1] == 0.32);
    EQ(c->crops.global_crops_size == 224 && c->crops.local_crops_size == 96);
    EQ(c->evaluation.eval_period_iterations == 12500);
    /* dinov2c sections */
    EQ(c->data.num_workers == 2 && c->data.prefetch == 2 && !c->data.blur_probabilities_intended);
    EQ(c->data.blur_sigma[0] == 0.1 && c->data.blur_sigma[1] == 2.0 &&
       c->data.color_jitter_probability == 0.8 && c->data.grayscale_probability == 0.2 &&
       c->data.solarize_probability == 0.2);
    EQ(c->checkpoint.period == 0 && c->checkpoint.keep == 3 && c->checkpoint.resume);
    EQ(c->compute.backend == DV_CFG_BACKEND_AUTO && c->compute.threads == 0);
    EQ(c->compute.max_steps == -1 && c->compute.max_minutes == 0.0);
    EQ(c->log.period == 10 && c->log.level == DV_CFG_LOG_INFO);
    EQ(strcmp(c->log.metrics_file, "training_metrics.json") == 0);
    EQ(c->highres.iterations == 10000 && c->distill.teacher_arch == DV_CFG_VIT_GIANT2);
    EQ(c->derived.finalized == 0);

    char buf[128];
    dv_config_get_text(c, "crops.global_crops_scale", buf, sizeof buf);
    tap_ok(!strcmp(buf, "[0.32, 1.0]"), "get_text of a list: %s", buf);
    dv_config_get_text(c, "compute_precision.student.dino_head.mixed_precision.reduce_dtype", buf,
                       sizeof buf);
    tap_ok(!strcmp(buf, "fp32"), "get_text of an enum: %s", buf);
    free(c);
}

/* A recipe file must equal defaults + exactly its keys. */
static void check_recipe(const char *file, const char *const *sets) {
    dv_config *got = malloc(sizeof *got), *want = malloc(sizeof *want);
    char path[4200];
    dv_config_defaults(got);
    dv_config_defaults(want);
    int rc = dv_config_load_file(got, fixture(file, path, sizeof path));
    tap_ok(rc == DV_OK, "load %s", file);
    for (int i = 0; sets[i]; i += 2) quiet_set(want, sets[i], sets[i + 1]);
    const char *d = dv_config_first_difference(got, want);
    tap_ok(d == NULL, "%s = defaults + its recipe keys (first difference: %s)", file, d ? d : "none");
    free(got);
    free(want);
}

static void test_recipes(void) {
    static const char *const l16s[] = {"train.dataset_path", "ImageNet:split=TRAIN",
                                       "train.batch_size_per_gpu", "64", "student.block_chunks", "4",
                                       NULL};
    static const char *const l14[] = {
        "dino.head_n_prototypes", "131072", "dino.head_bottleneck_dim", "384",
        "ibot.separate_head", "true", "ibot.head_n_prototypes", "131072",
        "train.batch_size_per_gpu", "32", "train.dataset_path", "ImageNet22k",
        "train.centering", "sinkhorn_knopp", "student.arch", "vit_large", "student.patch_size", "14",
        "student.drop_path_rate", "0.4", "student.ffn_layer", "swiglufused",
        "student.block_chunks", "4", "teacher.momentum_teacher", "0.994", "optim.epochs", "500",
        "optim.weight_decay_end", "0.2", "optim.base_lr", "2.0e-04", "optim.warmup_epochs", "80",
        "optim.layerwise_decay", "1.0", "crops.local_crops_size", "98", NULL};
    const char *g14[sizeof l14 / sizeof l14[0]];
    memcpy(g14, l14, sizeof l14);
    for (int i = 0; g14[i]; i += 2) {
        if (!strcmp(g14[i], "train.batch_size_per_gpu")) g14[i + 1] = "12";
        if (!strcmp(g14[i], "student.arch")) g14[i + 1] = "vit_giant2";
    }
    check_recipe("vitl16_short.yaml", l16s);
    check_recipe("vitl14.yaml", l14);
    check_recipe("vitg14.yaml", g14);

    /* explicit spot checks of what the recipes leave alone or change */
    dv_config *c = malloc(sizeof *c);
    char path[4200];
    dv_config_defaults(c);
    dv_config_load_file(c, fixture("vitl14.yaml", path, sizeof path));
    EQ(c->ibot.head_bottleneck_dim == 256 && c->dino.head_bottleneck_dim == 384);
    EQ(c->train.centering == DV_CFG_CENTERING_SINKHORN_KNOPP && c->student.ffn_layer == DV_CFG_FFN_SWIGLUFUSED);
    EQ(c->optim.base_lr == 2.0e-4 && c->crops.local_crops_size == 98 && c->student.patch_size == 14);
    free(c);
}

static void test_finalize(void) {
    dv_config *c = malloc(sizeof *c);
    char path[4200];

    dv_config_defaults(c);
    dv_config_load_file(c, fixture("vitl14.yaml", path, sizeof path));
    int rc = dv_config_finalize(c, 96);
    tap_ok(rc == DV_OK && c->derived.finalized, "finalize vitl14 on 96 ranks");
    EQ(c->derived.global_batch == 3072);
    tap_close(c->derived.lr, 2.0e-4 * sqrt(3.0), 1e-18, "vitl14 lr = 2e-4*sqrt(3)");
    EQ(c->optim.lr == c->derived.lr);
    EQ(c->derived.total_iters == 625000);
    EQ(c->derived.warmup_iters == 100000);
    EQ(c->derived.freeze_last_layer_iters == 1250);
    EQ(c->derived.warmup_teacher_temp_iters == 37500);
    EQ(c->derived.checkpoint_period == 3750);
    EQ(c->derived.global_grid == 16 && c->derived.local_grid == 7);
    EQ(c->derived.highres_image_size == 518 && c->derived.highres_grid == 37);
    tap_close(c->derived.highres_base_lr, 2.0e-5, 1e-19, "highres base lr = base_lr / 10");
    EQ(strcmp(c->derived.checkpoint_dir, "./checkpoints") == 0);
    EQ(strcmp(c->derived.metrics_path, "./training_metrics.json") == 0);
    double lr = c->optim.lr;
    tap_ok(dv_config_finalize(c, 96) == DV_OK && c->optim.lr == lr, "finalize is idempotent");

    dv_config_defaults(c);
    dv_config_load_file(c, fixture("vitl16_short.yaml", path, sizeof path));
    dv_config_finalize(c, 32);
    tap_close(c->derived.lr, 0.004 * sqrt(2.0), 1e-18, "vitl16_short on 32 ranks: lr = 0.004*sqrt(2)");
    EQ(c->derived.total_iters == 125000 && c->derived.warmup_iters == 12500);
    EQ(c->derived.global_grid == 14 && c->derived.local_grid == 6);
    EQ(c->derived.highres_image_size == 512);

    dv_config_defaults(c);
    dv_config_load_file(c, fixture("vitg14.yaml", path, sizeof path));
    dv_config_finalize(c, 256);
    EQ(c->derived.global_batch == 3072 && c->derived.total_iters == 625000);
    EQ(c->derived.embed_dim == 1536 && c->derived.depth == 40 && c->derived.num_heads == 24);
    quiet_set(c, "student.embed_dim", "96");
    quiet_set(c, "student.depth", "3");
    dv_config_finalize(c, 1);
    EQ(c->derived.embed_dim == 96 && c->derived.depth == 3 && c->derived.num_heads == 24);

    dv_config_defaults(c);
    quiet_set(c, "train.output_dir", "/scratch/run1/");
    quiet_set(c, "checkpoint.period", "100");
    quiet_set(c, "log.metrics_file", "/var/log/m.json");
    quiet_set(c, "highres.base_lr", "1.0e-05");
    dv_config_finalize(c, 1);
    tap_close(c->derived.lr, 0.001, 1e-18, "defaults on 1 rank: lr = 0.004*sqrt(64/1024)");
    EQ(strcmp(c->derived.checkpoint_dir, "/scratch/run1/checkpoints") == 0);
    EQ(strcmp(c->derived.metrics_path, "/var/log/m.json") == 0);
    EQ(c->derived.checkpoint_period == 100 && c->derived.highres_base_lr == 1.0e-05);

    /* train.global_batch_size: 0 = batch_size_per_gpu x ranks; else split over the ranks */
    dv_config_defaults(c);
    dv_config_finalize(c, 3);
    EQ(c->derived.global_batch == 192 && c->derived.batch_per_rank == 64);
    quiet_set(c, "train.global_batch_size", "12");
    for (int w = 1; w <= 3; w++) {
        int rc2 = dv_config_finalize(c, w);
        tap_ok(rc2 == DV_OK && c->derived.global_batch == 12 && c->derived.batch_per_rank == 12 / w,
               "global_batch_size 12 on %d rank(s): %lld per rank", w,
               (long long)c->derived.batch_per_rank);
        tap_close(c->derived.lr, 0.004 * sqrt(12.0 / 1024.0), 1e-18,
                  "global_batch_size 12: lr from the global batch 12");
    }
    free(c);
}

static void test_overrides(void) {
    dv_config *c = malloc(sizeof *c);
    dv_config_defaults(c);
    char *kv[] = {S("ibot.mask_ratio_min_max=[0.2,0.6]"), S("optim.base_lr=1e-3"), S("student.arch=vit_small"),
                  S("train.centering=sinkhorn_knopp"), S("student.layerscale=null"), S("MODEL.WEIGHTS=~"),
                  S("student.qkv_bias=false"), S("crops.local_crops_number=2"),
                  S("train.output_dir='/data/my run: 1'"), S("train.dataset_path=ImageNet:split=VAL"),
                  S("compute.max_steps=-1"), S("student.drop_path_uniform=no"), S("distill.teacher_arch=vit_large_memeff"),
                  S("crops.global_crops_scale=[ 0.4 , 1 ]"), S("log.metrics_file=")};
    int rc = dv_config_apply_overrides(c, (int)(sizeof kv / sizeof kv[0]), kv);
    tap_ok(rc == DV_OK, "apply %zu overrides", sizeof kv / sizeof kv[0]);
    EQ(c->ibot.mask_ratio_min_max[0] == 0.2 && c->ibot.mask_ratio_min_max[1] == 0.6);
    EQ(c->optim.base_lr == 1e-3);
    EQ(c->student.arch == DV_CFG_VIT_SMALL);
    EQ(c->train.centering == DV_CFG_CENTERING_SINKHORN_KNOPP);
    EQ(c->student.layerscale == 0.0);
    EQ(c->MODEL.WEIGHTS[0] == '\0' && c->log.metrics_file[0] == '\0');
    EQ(c->student.qkv_bias == false && c->student.drop_path_uniform == false);
    EQ(c->crops.local_crops_number == 2);
    EQ(strcmp(c->train.output_dir, "/data/my run: 1") == 0);
    EQ(strcmp(c->train.dataset_path, "ImageNet:split=VAL") == 0);
    EQ(c->distill.teacher_arch == DV_CFG_VIT_LARGE);
    EQ(c->crops.global_crops_scale[0] == 0.4 && c->crops.global_crops_scale[1] == 1.0);

    /* nulls and empty sections in a file */
    char path[4200];
    dv_config_defaults(c);
    int r1 = dv_config_load_file(c, fixture("good_nulls.yaml", path, sizeof path));
    tap_ok(r1 == DV_OK && c->student.layerscale == 0.0 && c->student.pretrained_weights[0] == '\0' &&
               c->MODEL.WEIGHTS[0] == '\0' && c->evaluation.eval_period_iterations == 12500,
           "file with null values and an empty section");
    dv_config *d = malloc(sizeof *d);
    dv_config_defaults(c);
    dv_config_defaults(d);
    tap_ok(dv_config_load_file(d, fixture("good_empty.yaml", path, sizeof path)) == DV_OK &&
               dv_config_equal(c, d),
           "a file of comments only loads and changes nothing");
    free(d);
    free(c);
}

static void test_round_trip(void) {
    dv_config *c = malloc(sizeof *c), *r = malloc(sizeof *r);
    char path[4200];
    dv_config_defaults(c);
    tap_ok(write_and_reload(c, r, "defaults") == DV_OK && dv_config_equal(c, r), "round trip: defaults");
    const char *recipes[] = {"vitl16_short.yaml", "vitl14.yaml", "vitg14.yaml"};
    for (int i = 0; i < 3; i++) {
        dv_config_defaults(c);
        dv_config_load_file(c, fixture(recipes[i], path, sizeof path));
        dv_config_finalize(c, 16);
        tap_ok(write_and_reload(c, r, recipes[i]) == DV_OK && dv_config_equal(c, r),
               "round trip: %s finalized (resolved optim.lr)", recipes[i]);
    }
    /* awkward values: strings YAML would read as other types, quotes, '#', unicode; doubles
     * without a short form, tiny and huge, negative zero */
    dv_config_defaults(c);
    quiet_set(c, "train.output_dir", "\"it's: a #path\"");
    quiet_set(c, "train.dataset_path", "'null'");
    quiet_set(c, "MODEL.WEIGHTS", "'true'");
    quiet_set(c, "data.train", "'8'");
    quiet_set(c, "data.val", "'/data/ünïcode/ ~ [x]'");
    quiet_set(c, "student.pretrained_weights", "\"tab\\there\"");
    quiet_set(c, "optim.base_lr", "0.30000000000000004");
    quiet_set(c, "optim.min_lr", "1e-300");
    quiet_set(c, "compute.max_minutes", "1.7976931348623157e308");
    quiet_set(c, "curate.dedup_threshold", "-0.0");
    quiet_set(c, "optim.weight_decay", "123456789.125");
    quiet_set(c, "ibot.mask_ratio_min_max", "[0.1, 0.1]");
    tap_ok(!strcmp(c->train.output_dir, "it's: a #path") && !strcmp(c->train.dataset_path, "null") &&
               !strcmp(c->student.pretrained_weights, "tab\there"),
           "quoted override values are unquoted");
    tap_ok(write_and_reload(c, r, "awkward") == DV_OK && dv_config_equal(c, r) &&
               signbit(r->curate.dedup_threshold),
           "round trip: awkward strings and doubles");
    free(c);
    free(r);
}

static void test_argv(void) {
    dv_config *c = malloc(sizeof *c);
    dv_cli cli;
    char file[4200], arg[4300];
    fixture("vitl14.yaml", file, sizeof file);
    char *argv[] = {S("dinov2-curate"), S("embed"), S("--config-file"), file, S("--foo=1"),
                    S("optim.base_lr=1e-3"), S("--output-dir"), S("/tmp/out"), S("--print-config"), S("--no-resume"),
                    S("--bar"), S("x"), S("train.output_dir=/elsewhere"), S("student.drop_path_rate=0.2"),
                    S("--"), S("a=b"), S("--config-file")};
    int argc = (int)(sizeof argv / sizeof argv[0]);
    dv_config_defaults(c);
    int rc = dv_config_from_argv(c, argc, argv, 8, &cli);
    tap_ok(rc == DV_OK, "from_argv parses a full command line");
    tap_ok(cli.nrest == 6 && !strcmp(cli.rest[0], "embed") && !strcmp(cli.rest[1], "--foo=1") &&
               !strcmp(cli.rest[2], "--bar") && !strcmp(cli.rest[3], "x") && !strcmp(cli.rest[4], "a=b") &&
               !strcmp(cli.rest[5], "--config-file"),
           "unknown flags, positionals and everything after -- come back in order (%d)", cli.nrest);
    tap_ok(cli.print_config == 1 && cli.n_config_files == 1 && cli.config_files[0] == file,
           "--print-config and --config-file are recorded");
    EQ(c->optim.base_lr == 1e-3 && c->student.patch_size == 14 && c->student.drop_path_rate == 0.2);
    EQ(strcmp(c->train.output_dir, "/tmp/out") == 0 && c->checkpoint.resume == false);
    EQ(c->derived.finalized && c->derived.world_size == 8 && c->derived.global_batch == 256);
    tap_close(c->optim.lr, 1e-3 * sqrt(256.0 / 1024.0), 1e-18, "from_argv finalizes: lr");

    snprintf(arg, sizeof arg, "--config=%s", file);
    char *argv2[] = {S("p"), arg, S("optim.epochs=1"), S("optim.warmup_epochs=0")};
    dv_config_defaults(c);
    rc = dv_config_from_argv(c, 4, argv2, 1, &cli);
    tap_ok(rc == DV_OK && cli.nrest == 0 && c->derived.total_iters == 1250 && c->student.patch_size == 14,
           "--config=FILE form");
    free(c);
}

static void test_errors(void) {
    dv_config *c = malloc(sizeof *c);
    capture cp;
    const char *m;
    int rc;
    dv_config_defaults(c);

    rc = load_error(c, "bad_unknown_key.yaml", &cp, &m);
    expect_error("unknown key with suggestion", rc, DV_ERR_CONFIG, m, "bad_unknown_key.yaml:3:",
                 "unknown key 'optim.base_lrr'", "(did you mean 'optim.base_lr'?)");
    rc = load_error(c, "bad_unknown_section.yaml", &cp, &m);
    expect_error("unknown section", rc, DV_ERR_CONFIG, m, "unknown key 'optimm'", "did you mean 'optim'", NULL);
    rc = load_error(c, "bad_wrong_section.yaml", &cp, &m);
    expect_error("key in the wrong section", rc, DV_ERR_CONFIG, m, "'student.head_n_prototypes'",
                 "did you mean 'dino.head_n_prototypes'", NULL);
    rc = load_error(c, "bad_type.yaml", &cp, &m);
    expect_error("wrong type", rc, DV_ERR_CONFIG, m,
                 "bad_type.yaml:3: optim.base_lr: expected a number, got 'fast'", NULL, NULL);
    rc = load_error(c, "bad_int.yaml", &cp, &m);
    expect_error("integer expected", rc, DV_ERR_CONFIG, m, "train.batch_size_per_gpu",
                 "expected an integer, got '6.5'", NULL);
    rc = load_error(c, "bad_bool.yaml", &cp, &m);
    expect_error("bool expected", rc, DV_ERR_CONFIG, m, "student.qkv_bias", "expected true or false",
                 "'maybe'");
    rc = load_error(c, "bad_null.yaml", &cp, &m);
    expect_error("null for a number", rc, DV_ERR_CONFIG, m, "optim.base_lr", "got null", NULL);
    rc = load_error(c, "bad_range.yaml", &cp, &m);
    expect_error("out of range", rc, DV_ERR_CONFIG, m, "ibot.mask_sample_probability: 1.5 is out of range",
                 "in [0, 1]", NULL);
    rc = load_error(c, "bad_enum.yaml", &cp, &m);
    expect_error("bad enum", rc, DV_ERR_CONFIG, m, "train.centering",
                 "expected one of centering, sinkhorn_knopp", "'softmax'");
    rc = load_error(c, "bad_malformed.yaml", &cp, &m);
    expect_error("malformed YAML", rc, DV_ERR_YAML, m, "bad_malformed.yaml:4:", "malformed YAML",
                 "did not find expected ',' or ']'");
    rc = load_error(c, "bad_list_length.yaml", &cp, &m);
    expect_error("list of wrong length", rc, DV_ERR_CONFIG, m, "ibot.mask_ratio_min_max",
                 "expected a list of 2 numbers like [0.1, 0.5]", "got a list of 3");
    rc = load_error(c, "bad_list_scalar.yaml", &cp, &m);
    expect_error("scalar for a list", rc, DV_ERR_CONFIG, m, "crops.global_crops_scale",
                 "expected a list of 2 numbers", "got '0.32'");
    rc = load_error(c, "bad_list_order.yaml", &cp, &m);
    expect_error("list out of order", rc, DV_ERR_CONFIG, m, "crops.local_crops_scale",
                 "must not decrease", NULL);
    rc = load_error(c, "bad_list_item.yaml", &cp, &m);
    expect_error("bad list item", rc, DV_ERR_CONFIG, m, "crops.local_crops_scale", "item 2",
                 "got 'big'");
    rc = load_error(c, "bad_scalar_section.yaml", &cp, &m);
    expect_error("scalar where a mapping is expected", rc, DV_ERR_CONFIG, m, "optim",
                 "expected a mapping", "'0.001'");
    rc = load_error(c, "bad_mapping_value.yaml", &cp, &m);
    expect_error("mapping where a scalar is expected", rc, DV_ERR_CONFIG, m, "optim.base_lr",
                 "expected a number, got a mapping", NULL);
    rc = load_error(c, "bad_duplicate.yaml", &cp, &m);
    expect_error("duplicate key", rc, DV_ERR_CONFIG, m, "bad_duplicate.yaml:4:",
                 "duplicate key 'optim.base_lr'", "first at line 2");
    rc = load_error(c, "bad_toplevel.yaml", &cp, &m);
    expect_error("top level not a mapping", rc, DV_ERR_CONFIG, m, "bad_toplevel.yaml:1:",
                 "expected a mapping", NULL);
    rc = load_error(c, "bad_two_documents.yaml", &cp, &m);
    expect_error("two documents", rc, DV_ERR_CONFIG, m, "bad_two_documents.yaml:3:", "second YAML document",
                 NULL);
    rc = load_error(c, "no_such_file.yaml", &cp, &m);
    expect_error("missing file", rc, DV_ERR_IO, m, "no_such_file.yaml", "No such file or directory", NULL);
    char dir[4200];
    cap_begin(&cp);
    rc = dv_config_load_file(c, fixture("", dir, sizeof dir));
    m = cap_end(&cp);
    expect_error("directory as config file", rc, DV_ERR_IO, m, "directory", NULL, NULL);

    dv_config *before = malloc(sizeof *before);
    dv_config_defaults(before);
    tap_ok(dv_config_equal(before, c), "failed loads left the config unchanged");

    /* command-line paths */
    char *kv1[] = {S("optim.base_lr=0.5"), S("optim.epochs")};
    cap_begin(&cp);
    rc = dv_config_apply_overrides(c, 2, kv1);
    m = cap_end(&cp);
    expect_error("override without '='", rc, DV_ERR_CONFIG, m, "'optim.epochs'", "key=value", NULL);
    tap_ok(dv_config_equal(before, c), "a failed override list changes nothing");
    char *kv2[] = {S("train.centring=centering")};
    cap_begin(&cp);
    rc = dv_config_apply_overrides(c, 1, kv2);
    m = cap_end(&cp);
    expect_error("unknown override key", rc, DV_ERR_CONFIG, m, "command line: unknown key 'train.centring'",
                 "did you mean 'train.centering'", NULL);
    rc = set_error(c, "model.weights", "x", &cp, &m);
    expect_error("key in the wrong case", rc, DV_ERR_CONFIG, m, "did you mean 'MODEL.WEIGHTS'", NULL, NULL);
    rc = set_error(c, "ibot.mask_ratio_min_max", "[0.1,", &cp, &m);
    expect_error("malformed override value", rc, DV_ERR_CONFIG, m, "ibot.mask_ratio_min_max",
                 "cannot read the value '[0.1,'", NULL);
    rc = set_error(c, "ibot.mask_ratio_min_max", "[0.1]", &cp, &m);
    expect_error("override list too short", rc, DV_ERR_CONFIG, m, "expected a list of 2 numbers",
                 "got a list of 1", NULL);
    rc = set_error(c, "student.arch", "vit_huge", &cp, &m);
    expect_error("override bad enum", rc, DV_ERR_CONFIG, m, "student.arch",
                 "one of vit_small, vit_base, vit_large, vit_giant2", "'vit_huge'");
    rc = set_error(c, "optim", "3", &cp, &m);
    expect_error("override of a section", rc, DV_ERR_CONFIG, m, "'optim' is a section", NULL, NULL);
    rc = set_error(c, "train.batch_size_per_gpu", "0", &cp, &m);
    expect_error("override out of range", rc, DV_ERR_CONFIG, m, "train.batch_size_per_gpu: 0 is out of range",
                 "in [1, 10000000]", NULL);
    rc = set_error(c, "teacher.teacher_temp", "0", &cp, &m);
    expect_error("open lower bound", rc, DV_ERR_CONFIG, m, "teacher.teacher_temp", "> 0", NULL);
    rc = set_error(c, "optim.epochs", "99999999999999999999", &cp, &m);
    expect_error("integer overflow", rc, DV_ERR_CONFIG, m, "optim.epochs", "out of range", NULL);
    rc = set_error(c, "optim.base_lr", ".inf", &cp, &m);
    expect_error("infinite number", rc, DV_ERR_CONFIG, m, "optim.base_lr", "expected a number", NULL);
    tap_ok(dv_config_equal(before, c), "failed sets changed nothing");

    /* cross-key checks */
    char path[4200];
    dv_config_load_file(c, fixture("bad_crop_multiple.yaml", path, sizeof path));
    cap_begin(&cp);
    rc = dv_config_finalize(c, 4);
    m = cap_end(&cp);
    expect_error("crop size not a multiple of the patch size", rc, DV_ERR_CONFIG, m,
                 "crops.local_crops_size = 96", "student.patch_size = 14", NULL);
    tap_ok(c->derived.finalized == 0, "a failed finalize leaves derived unset");
    dv_config_defaults(c);
    quiet_set(c, "optim.warmup_epochs", "200");
    cap_begin(&cp);
    rc = dv_config_finalize(c, 4);
    m = cap_end(&cp);
    expect_error("warmup longer than the run", rc, DV_ERR_CONFIG, m, "optim.warmup_epochs = 200",
                 "optim.epochs = 100", NULL);
    dv_config_defaults(c);
    cap_begin(&cp);
    rc = dv_config_finalize(c, 0);
    m = cap_end(&cp);
    expect_error("world size 0", rc, DV_ERR_CONFIG, m, "world size", NULL, NULL);
    dv_config_defaults(c);
    quiet_set(c, "train.global_batch_size", "12");
    cap_begin(&cp);
    rc = dv_config_finalize(c, 5);
    m = cap_end(&cp);
    expect_error("global batch not divisible by the rank count", rc, DV_ERR_CONFIG, m,
                 "train.global_batch_size = 12", "5 ranks", NULL);
    tap_ok(c->derived.finalized == 0, "an indivisible global batch leaves derived unset");
    dv_config_defaults(c);

    dv_cli cli;
    char *argv1[] = {S("p"), S("optim.base_lr=0.1"), S("--config-file")};
    cap_begin(&cp);
    rc = dv_config_from_argv(c, 3, argv1, 1, &cli);
    m = cap_end(&cp);
    expect_error("--config-file without a file", rc, DV_ERR_CONFIG, m, "--config-file needs a value", NULL,
                 NULL);
    char *argv2[] = {S("p"), S("--config-file"), path, S("optim.base_lrr=1")};
    fixture("vitl14.yaml", path, sizeof path);
    cap_begin(&cp);
    rc = dv_config_from_argv(c, 4, argv2, 1, &cli);
    m = cap_end(&cp);
    expect_error("from_argv with a bad override", rc, DV_ERR_CONFIG, m, "unknown key 'optim.base_lrr'", NULL,
                 NULL);
    tap_ok(dv_config_equal(before, c) && !c->derived.finalized, "a failed from_argv changes nothing");
    free(before);
    free(c);
}

int main(void) {
    const char *srcdir = getenv("srcdir");
    snprintf(g_dir, sizeof g_dir, "%s/tests/configs", srcdir && *srcdir ? srcdir : ".");
    tap_no_plan();
    test_table();
    test_defaults();
    test_recipes();
    test_finalize();
    test_overrides();
    test_round_trip();
    test_argv();
    test_errors();
    return tap_exit();
}
