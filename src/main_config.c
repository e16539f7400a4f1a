/* dinov2-config — check a configuration and print it resolved, before submitting a job.
 *
 *   dinov2-config [--config-file FILE]... [key=value]... [--world-size N] [--derived]
 *
 * Loads the official defaults, the given files and overrides exactly as every dinov2c program
 * does, finalises for N ranks (default 1) and prints the resolved YAML on stdout; that output
 * loads back into the same config. Any bad key or value: one line on stderr, exit status 1.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "err.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: dinov2-config [--config-file FILE]... [key=value]... [--world-size N] [--derived]\n"
            "Check a dinov2c configuration and print it resolved as YAML.\n\n");
    dv_config_usage(f);
    fprintf(f,
            "  --world-size N        resolve lr and batch for N ranks (default 1)\n"
            "  --derived             also print the derived values as YAML comments\n");
}

static int parse_i64(const char *text, int64_t *out) {
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno || end == text || *end || v < 1) return DV_ERR_ARG;
    *out = v;
    return DV_OK;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        }
    /* the world size must be known before finalising: scan for it first */
    int64_t world = 1;
    int derived = 0;
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        if (!strncmp(argv[i], "--world-size=", 13)) v = argv[i] + 13;
        else if (!strcmp(argv[i], "--world-size") && i + 1 < argc) v = argv[i + 1];
        if (v && parse_i64(v, &world) != DV_OK) {
            dv_user_error("--world-size: expected a positive integer, got '%s'", v);
            return 1;
        }
    }
    dv_config *c = malloc(sizeof *c);
    if (!c) {
        dv_user_error("out of memory");
        return 1;
    }
    dv_config_defaults(c);
    dv_cli cli;
    if (dv_config_from_argv(c, argc, argv, world, &cli) != DV_OK) {
        free(c);
        return 1;
    }
    for (int i = 0; i < cli.nrest; i++) {
        const char *a = cli.rest[i];
        if (!strcmp(a, "--derived")) derived = 1;
        else if (!strncmp(a, "--world-size=", 13)) continue;
        else if (!strcmp(a, "--world-size")) i++;
        else {
            dv_user_error("unknown argument '%s' (see dinov2-config --help)", a);
            free(c);
            return 1;
        }
    }
    int st = dv_config_write_yaml(c, stdout);
    if (st == DV_OK && derived) {
        const dv_config_derived *d = &c->derived;
        printf("# derived for world_size=%" PRId64 ": global_batch=%" PRId64 " lr=%.6g"
               " total_iters=%" PRId64 " warmup_iters=%" PRId64 " checkpoint_period=%" PRId64 "\n",
               d->world_size, d->global_batch, d->lr, d->total_iters, d->warmup_iters,
               d->checkpoint_period);
    }
    free(c);
    if (fflush(stdout) != 0 || st != DV_OK) {
        dv_user_error("writing the configuration to stdout failed");
        return 1;
    }
    return 0;
}
