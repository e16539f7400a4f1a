/* dinov2-ckpt — inspect and check backbone weight files (doc/weights.md).
 *
 *   dinov2-ckpt info FILE [--tensors] [--prefix GROUP]
 *       architecture attributes, parameter count; --tensors adds the per-tensor table
 *       (name, shape, elements, layer id, weight decay, patch-embed / last-layer flags)
 *   dinov2-ckpt verify FILE [--prefix GROUP]
 *       every tensor the architecture needs is present with its shape, no unexpected tensor,
 *       every value finite; exits 1 naming the first bad tensor
 *
 * Serial: no MPI start-up. Exit status 0 ok, 1 bad file, 2 usage.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "h5util.h"
#include "params.h"
#include "vit.h"
#include "weights.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: dinov2-ckpt info FILE [--tensors] [--prefix GROUP]\n"
            "       dinov2-ckpt verify FILE [--prefix GROUP]\n"
            "\n"
            "  info    print the architecture attributes and the parameter count of a backbone\n"
            "          weight file (--tensors: one line per tensor)\n"
            "  verify  check that every expected tensor exists with the right shape, that no\n"
            "          other tensor is present and that all values are finite; exits 1 naming\n"
            "          the first bad tensor\n"
            "  --prefix GROUP   the backbone sits in GROUP (e.g. teacher/backbone) instead of /\n"
            "\n"
            "File layout and conversion from official .pth files: doc/weights.md\n");
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

static void print_info(const char *path, const char *prefix, const dv_vit *m, int tensors) {
    const dv_vit_config *c = &m->cfg;
    char b1[32], shp[96];
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
    if (!tensors) return;
    printf("\n%-4s %-36s %-20s %12s %5s %3s %s\n", "#", "name", "shape", "elements", "layer", "wd",
           "flags");
    for (int i = 0; i < m->params.n; i++) {
        const dv_param *p = &m->params.t[i];
        dv_param_shape_str(p->shape, p->ndim, shp, sizeof shp);
        printf("%-4d %-36s %-20s %12zu %5d %3s %s%s\n", i, p->name, shp, p->numel, p->layer_id,
               (p->flags & DV_PARAM_NO_WD) ? "0" : "1",
               (p->flags & DV_PARAM_PATCH_EMBED) ? "patch_embed " : "",
               (p->flags & DV_PARAM_LAST_LAYER) ? "last_layer" : "");
    }
}

int main(int argc, char **argv) {
    const char *cmd = NULL, *path = NULL, *prefix = "";
    int tensors = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--tensors")) {
            tensors = 1;
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
        } else {
            dv_user_error("unexpected argument %s (see dinov2-ckpt --help)", argv[i]);
            return 2;
        }
    }
    if (!cmd || !path || (strcmp(cmd, "info") && strcmp(cmd, "verify"))) {
        usage(stderr);
        return 2;
    }
    if (tensors && strcmp(cmd, "info")) {
        dv_user_error("--tensors belongs to info");
        return 2;
    }
    dv_h5_quiet();
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) {
        dv_user_error("%s: cannot open as an HDF5 file", path);
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
