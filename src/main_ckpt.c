/* dinov2-ckpt — inspect, check and export training checkpoints (doc/checkpoints.md) and
 * backbone weight files (doc/weights.md).
 *
 *   dinov2-ckpt info FILE [--tensors] [--config] [--prefix GROUP]
 *       checkpoint: step, world size at save, loader position, modules with parameter counts,
 *       architecture, a summary of the resolved config (--config: all of it);
 *       backbone file (or --prefix GROUP): architecture attributes, parameter count; --tensors
 *       adds the per-tensor table (name, shape, elements, layer id, weight decay, flags)
 *   dinov2-ckpt verify FILE [--prefix GROUP]
 *       checkpoint: every dataset present with its shape, every checksum, every value finite;
 *       backbone file: every tensor present with its shape, none unexpected, all finite;
 *       exits 1 naming the first problem
 *   dinov2-ckpt export CKPT OUT.h5
 *       the teacher backbone of a checkpoint as a backbone weight file (official keys)
 *
 * Serial: no MPI start-up. Exit status 0 ok, 1 bad file, 2 usage.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckpt.h"
#include "config.h"
#include "err.h"
#include "h5util.h"
#include "params.h"
#include "vit.h"
#include "weights.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: dinov2-ckpt info FILE [--tensors] [--config] [--prefix GROUP]\n"
            "       dinov2-ckpt verify FILE [--prefix GROUP]\n"
            "       dinov2-ckpt export CKPT OUT.h5\n"
            "\n"
            "FILE is a training checkpoint (ckpt-*.h5) or a backbone weight file.\n"
            "  info    checkpoint: step, world size at save, loader position, modules and their\n"
            "          parameter counts, architecture, config summary (--config: the whole\n"
            "          resolved config); backbone: architecture attributes and parameter count\n"
            "          (--tensors: one line per tensor)\n"
            "  verify  check that every expected tensor exists with the right shape, that no\n"
            "          other is present, every checksum (checkpoints) and that all values are\n"
            "          finite; exits 1 naming the first problem\n"
            "  export  write the teacher backbone of checkpoint CKPT to OUT.h5 in the official\n"
            "          key layout (loads with h5py + torch; doc/weights.md)\n"
            "  --prefix GROUP   treat GROUP (e.g. teacher/backbone) as a backbone file's root\n"
            "\n"
            "Layouts: doc/checkpoints.md (checkpoints), doc/weights.md (backbone files)\n");
}

/* 22056576 → "22,056,576" */
static const char *grouped(size_t v, char *buf, size_t len) {
    char tmp[32];
    snprintf(tmp, sizeof tmp, "%zu", v);
    size_t n = strlen(tmp), k = 0;
    for (size_t i = 0; i < n && k + 2 < len; i++) {
        if (i && (n - i) % 3 == 0) buf[k++] = ',';
        buf[k++] = tmp[i];
    }
    buf[k] = '\0';
    return buf;
}

/* One line per tensor of a parameter table; title (may be NULL) above it. */
static void print_table(const dv_param_table *t, const char *title) {
    char shp[96];
    printf("\n");
    if (title) printf("%s\n", title);
    printf("%-4s %-36s %-20s %12s %5s %3s %s\n", "#", "name", "shape", "elements", "layer", "wd",
           "flags");
    for (int i = 0; i < t->n; i++) {
        const dv_param *p = &t->t[i];
        dv_param_shape_str(p->shape, p->ndim, shp, sizeof shp);
        printf("%-4d %-36s %-20s %12zu %5d %3s %s%s\n", i, p->name, shp, p->numel, p->layer_id,
               (p->flags & DV_PARAM_NO_WD) ? "0" : "1",
               (p->flags & DV_PARAM_PATCH_EMBED) ? "patch_embed " : "",
               (p->flags & DV_PARAM_LAST_LAYER) ? "last_layer" : "");
    }
}

static void print_info(const char *path, const char *prefix, const dv_vit *m, int tensors) {
    const dv_vit_config *c = &m->cfg;
    char b1[32];
    printf("file                  %s\n", path);
    printf("group                 %s\n", prefix && prefix[0] ? prefix : "/");
    printf("patch_size            %lld\n", (long long)c->patch_size);
    printf("embed_dim             %lld\n", (long long)c->embed_dim);
    printf("depth                 %lld\n", (long long)c->depth);
    printf("num_heads             %lld (head_dim %lld)\n", (long long)c->num_heads,
           (long long)(c->embed_dim / c->num_heads));
    printf("mlp_ratio             %g\n", c->mlp_ratio);
    printf("ffn_layer             %s\n", dv_vit_ffn_name(c->ffn));
    printf("ffn_hidden_dim        %lld\n", (long long)c->ffn_hidden);
    printf("num_register_tokens   %lld\n", (long long)c->num_register_tokens);
    printf("img_size              %lld (pos_embed grid %lldx%lld)\n", (long long)c->img_size,
           (long long)m->grid, (long long)m->grid);
    printf("layerscale            %g%s\n", c->layerscale, c->layerscale > 0 ? "" : " (none)");
    printf("qkv_bias              %s\n", c->qkv_bias ? "true" : "false");
    printf("proj_bias             %s\n", c->proj_bias ? "true" : "false");
    printf("ffn_bias              %s\n", c->ffn_bias ? "true" : "false");
    printf("norm_eps              %g\n", c->norm_eps);
    printf("interpolate_offset    %g\n", c->interpolate_offset);
    printf("interpolate_antialias %s\n", c->interpolate_antialias ? "true" : "false");
    printf("drop_path_rate        %g (%s)\n", c->drop_path_rate,
           c->drop_path_uniform ? "uniform" : "linear");
    printf("image_mean            %g %g %g\n", c->image_mean[0], c->image_mean[1],
           c->image_mean[2]);
    printf("image_std             %g %g %g\n", c->image_std[0], c->image_std[1], c->image_std[2]);
    printf("parameters            %s in %d tensors (%.1f MiB as float32)\n",
           grouped(m->params.numel, b1, sizeof b1), m->params.n,
           (double)m->params.numel * 4.0 / 1048576.0);
    if (tensors) print_table(&m->params, NULL);
}

/* H5Ewalk2 callback: the innermost message of HDF5's error stack (the cause). */
static herr_t innermost_(unsigned n, const H5E_error2_t *e, void *data) {
    (void)n;
    snprintf((char *)data, 256, "%s", e->desc ? e->desc : "");
    return 0;
}

/* The config summary of a checkpoint: the YAML text parsed back through the config module. */
static void print_config_summary(const char *text) {
    static const char *const keys[] = {"student.arch",
                                       "student.patch_size",
                                       "student.embed_dim",
                                       "student.depth",
                                       "student.ffn_layer",
                                       "student.num_register_tokens",
                                       "crops.global_crops_size",
                                       "crops.local_crops_size",
                                       "crops.local_crops_number",
                                       "train.batch_size_per_gpu",
                                       "train.OFFICIAL_EPOCH_LENGTH",
                                       "optim.epochs",
                                       "optim.base_lr",
                                       "optim.lr",
                                       "train.centering",
                                       "ibot.separate_head",
                                       "dino.head_n_prototypes",
                                       "train.seed",
                                       "data.train",
                                       "compute.backend"};
    const char *tmpd = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char path[4096];
    snprintf(path, sizeof path, "%s/dinov2-ckpt.XXXXXX", tmpd);
    int fd = mkstemp(path);
    dv_config *c = malloc(sizeof *c);
    int ok = fd >= 0 && c != NULL;
    if (ok) {
        size_t n = strlen(text);
        ok = write(fd, text, n) == (ssize_t)n;
    }
    if (fd >= 0) close(fd);
    if (ok) { /* quietly: a config this build cannot read is not an error of the checkpoint */
        fflush(stderr);
        int saved = dup(2), null = open("/dev/null", O_WRONLY);
        if (saved >= 0 && null >= 0) dup2(null, 2);
        dv_config_defaults(c);
        ok = dv_config_load_file(c, path) == DV_OK;
        fflush(stderr);
        if (saved >= 0 && null >= 0) dup2(saved, 2);
        if (saved >= 0) close(saved);
        if (null >= 0) close(null);
    }
    if (fd >= 0) unlink(path);
    if (!ok) {
        printf("config                (%zu bytes of YAML that this program cannot read back; "
               "--config prints them)\n",
               strlen(text));
        free(c);
        return;
    }
    printf("config                (summary; --config prints all of it)\n");
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        char v[512];
        if (dv_config_get_text(c, keys[i], v, sizeof v) == DV_OK)
            printf("  %-28s %s\n", keys[i], v[0] ? v : "''");
    }
    free(c);
}

static void print_ckpt_info(const char *path, const dv_ckpt_info *in, int config) {
    char b1[32];
    const dv_vit_config *c = &in->backbone;
    printf("file                  %s\n", path);
    printf("format                %s, version %lld\n", DV_CKPT_FORMAT,
           (long long)in->format_version);
    printf("step                  %lld (iterations completed)\n", (long long)in->step);
    printf("world_size            %lld (ranks at save; loads on any number)\n",
           (long long)in->world_size);
    printf("loader                epoch %lld, next batch %lld\n", (long long)in->loader_epoch,
           (long long)in->loader_batch);
    printf("adamw_step            %lld\n", (long long)in->adamw_step);
    size_t total = 0;
    printf("modules               (student, teacher, exp_avg, exp_avg_sq each)\n");
    for (int m = 0; m < DV_MOD_COUNT; m++) {
        if (!in->numel[m]) {
            printf("  %-19s absent (ibot.separate_head = false: the DINO head serves iBOT)\n",
                   dv_module_names[m]);
            continue;
        }
        total += in->numel[m];
        printf("  %-19s %s parameters in %d tensors\n", dv_module_names[m],
               grouped(in->numel[m], b1, sizeof b1), in->ntensors[m]);
    }
    printf("  %-19s %s parameters (%.1f MiB of state as float32)\n", "total",
           grouped(total, b1, sizeof b1), (double)total * 16.0 / 1048576.0);
    printf("backbone              patch %lld, embed_dim %lld, depth %lld, heads %lld, %s (hidden "
           "%lld), registers %lld, img_size %lld, layerscale %g\n",
           (long long)c->patch_size, (long long)c->embed_dim, (long long)c->depth,
           (long long)c->num_heads, dv_vit_ffn_name(c->ffn), (long long)dv_vit_ffn_hidden(c),
           (long long)c->num_register_tokens, (long long)c->img_size, c->layerscale);
    for (int h = 0; h < 1 + in->has_ibot_head; h++) {
        const dv_head_config *hc = &in->head[h];
        printf("%-21s in %lld, prototypes %lld, layers %lld, hidden %lld, bottleneck %lld\n",
               dv_module_names[1 + h], (long long)hc->in_dim, (long long)hc->out_dim,
               (long long)hc->nlayers, (long long)hc->hidden_dim, (long long)hc->bottleneck_dim);
    }
    if (config)
        printf("config                (resolved, as saved)\n%s", in->config);
    else
        print_config_summary(in->config);
}

static int ckpt_main(const char *cmd, const char *path, const char *out, int tensors, int config) {
    char why[DV_CKPT_WHY_MAX] = "";
    dv_ckpt_info info;
    if (!strcmp(cmd, "export")) {
        if (dv_ckpt_read_info(path, &info, why, sizeof why) != DV_OK) {
            dv_user_error("%s: %s", path, why);
            return 1;
        }
        int rc = dv_ckpt_export_teacher(path, out);
        if (rc == DV_OK) {
            char b1[32];
            printf("wrote %s: the teacher backbone of %s (step %lld, %s parameters)\n", out, path,
                   (long long)info.step, grouped(info.numel[DV_MOD_BACKBONE], b1, sizeof b1));
        }
        dv_ckpt_info_free(&info);
        return rc == DV_OK ? 0 : 1;
    }
    if (!strcmp(cmd, "verify")) {
        int rc = dv_ckpt_verify(path, why, sizeof why);
        if (rc != DV_OK) {
            dv_user_error("%s: %s", path, why);
            return 1;
        }
        if (dv_ckpt_read_info(path, &info, why, sizeof why) == DV_OK) {
            printf("ok: %s: checkpoint at step %lld (saved by %lld ranks): every dataset present "
                   "with its shape, checksums match, all values finite\n",
                   path, (long long)info.step, (long long)info.world_size);
            dv_ckpt_info_free(&info);
        } else {
            printf("ok: %s\n", path);
        }
        return 0;
    }
    if (dv_ckpt_read_info(path, &info, why, sizeof why) != DV_OK) {
        dv_user_error("%s: %s", path, why);
        return 1;
    }
    print_ckpt_info(path, &info, config);
    if (tensors) { /* the tables the checkpoint's datasets follow, in every buffer group */
        dv_vit m;
        if (dv_vit_init(&m, &info.backbone) == DV_OK) {
            print_table(&m.params, "backbone (student/backbone, teacher/backbone, "
                                   "optim/exp_avg/backbone, optim/exp_avg_sq/backbone)");
            dv_vit_free(&m);
        }
        for (int h = 0; h < 1 + info.has_ibot_head; h++) {
            dv_head hd;
            char title[128];
            snprintf(title, sizeof title, "%s (student/%s, teacher/%s, optim/.../%s)",
                     dv_module_names[1 + h], dv_module_names[1 + h], dv_module_names[1 + h],
                     dv_module_names[1 + h]);
            if (dv_head_init(&hd, &info.head[h]) == DV_OK) {
                print_table(&hd.params, title);
                dv_head_free(&hd);
            }
        }
    }
    dv_ckpt_info_free(&info);
    return 0;
}

int main(int argc, char **argv) {
    const char *cmd = NULL, *path = NULL, *out = NULL, *prefix = NULL;
    int tensors = 0, config = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--tensors")) {
            tensors = 1;
        } else if (!strcmp(argv[i], "--config")) {
            config = 1;
        } else if (!strcmp(argv[i], "--prefix") && i + 1 < argc) {
            prefix = argv[++i];
        } else if (!strncmp(argv[i], "--prefix=", 9)) {
            prefix = argv[i] + 9;
        } else if (argv[i][0] == '-') {
            dv_user_error("unknown option %s (see dinov2-ckpt --help)", argv[i]);
            return 2;
        } else if (!cmd) {
            cmd = argv[i];
        } else if (!path) {
            path = argv[i];
        } else if (!out && cmd && !strcmp(cmd, "export")) {
            out = argv[i];
        } else {
            dv_user_error("unexpected argument %s (see dinov2-ckpt --help)", argv[i]);
            return 2;
        }
    }
    if (!cmd || !path || (strcmp(cmd, "info") && strcmp(cmd, "verify") && strcmp(cmd, "export"))) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(cmd, "export") && (!out || prefix)) {
        dv_user_error(out ? "export takes no --prefix"
                          : "export needs CKPT and OUT.h5 (see dinov2-ckpt --help)");
        return 2;
    }
    if ((tensors || config) && strcmp(cmd, "info")) {
        dv_user_error("%s belongs to info", tensors ? "--tensors" : "--config");
        return 2;
    }
    dv_h5_quiet();
    if (access(path, R_OK) != 0) {
        dv_user_error("%s: %s", path, dv_strerror_(errno));
        return 1;
    }
    if (!prefix && dv_ckpt_is_checkpoint(path)) return ckpt_main(cmd, path, out, tensors, config);
    if (!strcmp(cmd, "export")) {
        dv_user_error("%s: not a dinov2c checkpoint (export reads ckpt-*.h5 files)", path);
        return 1;
    }
    if (config) {
        dv_user_error("%s: --config needs a checkpoint (a backbone file holds no config)", path);
        return 2;
    }
    if (!prefix) prefix = "";
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) {
        char cause[256] = "";
        H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, innermost_, cause);
        H5Eclear2(H5E_DEFAULT);
        dv_user_error("%s: cannot open as an HDF5 file%s%s%s", path, cause[0] ? " (" : "", cause,
                      cause[0] ? ")" : "");
        return 1;
    }
    int rc = 1;
    dv_vit_config cfg;
    dv_vit m;
    memset(&m, 0, sizeof m);
    float *w = NULL;
    if (dv_vit_config_read_h5(f, prefix, &cfg, path) != DV_OK) goto done;
    if (dv_vit_init(&m, &cfg) != DV_OK) goto done;
    if (!strcmp(cmd, "info")) {
        print_info(path, prefix, &m, tensors);
        rc = 0;
    } else {
        w = malloc((m.params.numel ? m.params.numel : 1) * sizeof *w);
        if (!w) {
            dv_user_error("out of memory reading %zu parameters", m.params.numel);
            goto done;
        }
        if (dv_weights_read(f, prefix, &m, w, path, DV_WEIGHTS_CHECK_FINITE) != DV_OK) goto done;
        char b1[32];
        printf("ok: %s: %d tensors, %s parameters, shapes match the architecture, all finite\n",
               path, m.params.n, grouped(m.params.numel, b1, sizeof b1));
        rc = 0;
    }
done:
    free(w);
    dv_vit_free(&m);
    H5Fclose(f);
    return rc;
}
