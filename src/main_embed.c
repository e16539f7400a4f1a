/* dinov2-embed — features of a frozen backbone for a set of image shards (src/embed.h,
 * doc/eval.md, man dinov2-embed(1)).
 *
 *   dinov2-embed (--weights FILE.h5 | --checkpoint CKPT.h5 [--group G]) --data SHARDS
 *                --output FEATURES.h5 [--image-size S] [--batch N] [--patch-tokens]
 *                [--reg-tokens] [--probe-features] [--no-progress]
 *                [--config-file FILE] [key=value ...] [--print-config]
 *
 * MPI or serial: every rank embeds a contiguous slice of the images and all ranks write one
 * features file collectively. Exit status 0 ok, 1 error, 2 usage.
 */
#include <errno.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "ctx.h"
#include "embed.h"
#include "err.h"

static void usage(FILE *f) {
    fprintf(
        f, "usage: dinov2-embed (--weights FILE.h5 | --checkpoint CKPT.h5 [--group G])\n"
           "                    --data SHARDS --output FEATURES.h5 [options] [key=value ...]\n"
           "Embed image shards with a frozen DINOv2 backbone into one HDF5 features file.\n"
           "\n"
           "  --weights FILE      backbone weight file (dinov2-ckpt / doc/weights.md layout);\n"
           "                      default: MODEL.WEIGHTS of the configuration\n"
           "  --checkpoint FILE   training checkpoint: embed with its teacher backbone\n"
           "  --group G           backbone group inside the checkpoint (default teacher/backbone)\n"
           "  --data SHARDS       image shards: a shard, a folder of *.h5 shards, a glob, a text\n"
           "                      file listing them, or a comma-separated list of those\n"
           "  --output FILE       features file to write (written as FILE.tmp, then renamed)\n"
           "  --image-size S      official eval transform: resize the shorter side to\n"
           "                      round(S*256/224) (bicubic), center crop S, ImageNet\n"
           "                      normalisation (default 224); 0 = images as stored (their sides\n"
           "                      must be multiples of the patch size)\n"
           "  --batch N           images per forward pass (default 32)\n"
           "  --patch-tokens      also write /x_norm_patchtokens [N, P, D]\n"
           "  --reg-tokens        also write /x_norm_regtokens [N, R, D] (models with registers)\n"
           "  --probe-features    also write /avgpool [N, D] and /cls_last4 [N, 4, D], the inputs\n"
           "                      of the linear probe (dinov2-eval linear)\n"
           "  --no-progress       no progress line (it is only shown when stderr is a terminal)\n"
           "  -h, --help          this text\n"
           "\n"
           "Configuration (keys used: compute.threads, MODEL.WEIGHTS, log.level):\n");
    dv_config_usage(f);
    fprintf(f, "\nRun on N ranks with mpirun -np N; the result does not depend on N.\n");
}

/* "--name VALUE" or "--name=VALUE": 0 when rest[*i] is not the option, 1 with *val set (and
 * *i advanced past a separate value), -1 when the value is missing. */
static int opt_value(char *const *rest, int n, int *i, const char *name, const char **val) {
    const char *a = rest[*i];
    size_t k = strlen(name);
    if (strncmp(a, name, k) != 0 || (a[k] != 0 && a[k] != '='))
        return 0;
    if (a[k] == '=') {
        *val = a + k + 1;
        return 1;
    }
    if (*i + 1 >= n)
        return -1;
    *val = rest[++*i];
    return 1;
}

static int parse_int(const char *name, const char *text, int lo, int *out) {
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || end == text || *end || v < lo || v > 1 << 30) {
        dv_user_error("%s: expected an integer >= %d, got '%s'", name, lo, text);
        return DV_ERR_ARG;
    }
    *out = (int)v;
    return DV_OK;
}

/* The program's own flags from cli->rest. */
static int parse_args(const dv_cli *cli, dv_embed_opts *o, const char **output) {
    struct {
        const char *name;
        const char **dst;
    } sopt[] = {{"--weights", &o->weights},
                {"--checkpoint", &o->checkpoint},
                {"--group", &o->group},
                {"--data", &o->data},
                {"--output", output}};
    struct {
        const char *name;
        int *dst, lo;
    } iopt[] = {{"--image-size", &o->image_size, 0}, {"--batch", &o->batch, 1}};
    struct {
        const char *name;
        int *dst, val;
    } flag[] = {{"--patch-tokens", &o->patch_tokens, 1},
                {"--reg-tokens", &o->reg_tokens, 1},
                {"--probe-features", &o->probe_features, 1},
                {"--no-progress", &o->progress, 0}};
    for (int i = 0; i < cli->nrest; i++) {
        const char *a = cli->rest[i], *v = NULL;
        int done = 0, m = 0;
        for (size_t k = 0; k < sizeof flag / sizeof flag[0] && !done; k++)
            if (!strcmp(a, flag[k].name)) {
                *flag[k].dst = flag[k].val;
                done = 1;
            }
        for (size_t k = 0; k < sizeof sopt / sizeof sopt[0] && !done; k++)
            if ((m = opt_value(cli->rest, cli->nrest, &i, sopt[k].name, &v)) != 0) {
                if (m < 0)
                    break;
                *sopt[k].dst = v;
                done = 1;
            }
        for (size_t k = 0; k < sizeof iopt / sizeof iopt[0] && !done && m >= 0; k++)
            if ((m = opt_value(cli->rest, cli->nrest, &i, iopt[k].name, &v)) != 0) {
                if (m < 0)
                    break;
                DV_TRY(parse_int(iopt[k].name, v, iopt[k].lo, iopt[k].dst));
                done = 1;
            }
        if (m < 0) {
            dv_user_error("%s needs a value", a);
            return DV_ERR_ARG;
        }
        if (!done) {
            dv_user_error("unknown argument '%s' (see dinov2-embed --help)", a);
            return DV_ERR_ARG;
        }
    }
    return DV_OK;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--"))
            break;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        }
    }
    dv_ctx ctx;
    if (dv_ctx_init(&ctx, &argc, &argv, "dinov2-embed") != DV_OK)
        return 1;
    int rc = 1;
    dv_config *c = malloc(sizeof *c);
    if (!c) {
        dv_user_error("out of memory");
        goto done;
    }
    dv_config_defaults(c);
    dv_cli cli;
    if (dv_config_from_argv(c, argc, argv, ctx.world, &cli) != DV_OK)
        goto done;
    dv_embed_opts o;
    dv_embed_opts_default(&o);
    const char *output = NULL;
    if (parse_args(&cli, &o, &output) != DV_OK) {
        rc = 2;
        goto done;
    }
    if (cli.print_config) {
        if (ctx.rank == 0)
            dv_config_write_yaml(c, stdout);
        rc = 0;
        goto done;
    }
    if (!o.weights && !o.checkpoint && c->MODEL.WEIGHTS[0])
        o.weights = c->MODEL.WEIGHTS;
    if (!o.data || !output || (!o.weights && !o.checkpoint)) {
        if (ctx.rank == 0) {
            dv_user_error("missing %s (see dinov2-embed --help)",
                          !o.weights && !o.checkpoint ? "--weights FILE or --checkpoint FILE"
                          : !o.data                   ? "--data SHARDS"
                                                      : "--output FILE");
        }
        rc = 2;
        goto done;
    }
    if (c->compute.threads > 0)
        omp_set_num_threads((int)c->compute.threads);
    dv_log(&ctx, DV_LOG_INFO,
           "dinov2-embed: %s %s, data %s, image size %d%s, batch %d, %d rank%s x %d thread%s",
           o.checkpoint ? "checkpoint" : "weights", o.checkpoint ? o.checkpoint : o.weights, o.data,
           o.image_size, o.image_size ? "" : " (as stored)", o.batch, ctx.world,
           ctx.world == 1 ? "" : "s", omp_get_max_threads(), omp_get_max_threads() == 1 ? "" : "s");
    dv_embed_stats st;
    if (dv_embed_file(&o, output, ctx.world > 1 ? ctx.comm : MPI_COMM_NULL, &st) != DV_OK)
        goto done;
    dv_log(&ctx, DV_LOG_INFO, "wrote %lld images to %s in %.2f s (%.1f img/s)",
           (long long)st.images, output, st.seconds, st.img_per_s);
    rc = 0;
done:
    free(c);
    dv_ctx_finish(&ctx);
    return rc;
}
