/* dinov2-eval — the official evaluation protocols on frozen features (doc/eval.md, man
 * dinov2-eval(1)):
 *
 *   dinov2-eval knn    --train F.h5 --test F.h5 [--k 10,20,100,200] [--temperature 0.07]
 *   dinov2-eval linear --train F.h5 --test F.h5 [--iterations N] [--batch-size B] [--lrs ...]
 *                      [--val-fraction 0.1] [--seed S] [--no-retrain]
 *   both: [--json OUT.json], or instead of feature files
 *         --train-data SHARDS --test-data SHARDS (--weights W.h5 | --checkpoint C.h5) ...
 *         to embed on the fly (src/embed.h) and evaluate in one command.
 *
 * MPI or serial: k-NN splits the test rows between the ranks and sums the counts; the linear
 * probe splits its grid of classifiers. Results (rank 0): a table on stdout and, with --json,
 * a JSON file. Exit status 0 ok, 1 error, 2 usage.
 */
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "ctx.h"
#include "embed.h"
#include "err.h"
#include "featfile.h"
#include "knn.h"
#include "linear_probe.h"

#define MAX_LIST 64

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: dinov2-eval knn    --train FEATURES.h5 --test FEATURES.h5 [options]\n"
        "       dinov2-eval linear --train FEATURES.h5 --test FEATURES.h5 [options]\n"
        "Evaluate frozen DINOv2 features with the official k-NN or linear-probe protocol.\n"
        "\n"
        "Inputs (feature files from dinov2-embed, or images embedded on the fly):\n"
        "  --train FILE          training features (labels from the shards)\n"
        "  --test FILE           test features\n"
        "  --train-data SHARDS   embed these image shards instead (default: data.train)\n"
        "  --test-data SHARDS    embed these image shards instead (default: data.val)\n"
        "  --weights FILE | --checkpoint FILE [--group G]   backbone for --*-data\n"
        "                        (default --weights: MODEL.WEIGHTS)\n"
        "  --image-size S        eval transform size for --*-data (default 224; 0 = as stored)\n"
        "  --embed-batch N       images per forward pass when embedding (default 32)\n"
        "  --json FILE           also write the results as JSON\n"
        "\n"
        "knn (dinov2/eval/knn.py): cosine similarity of L2-normalised CLS features, the k most\n"
        "similar training rows vote with weight exp(sim / T); top-1, top-5 and mean per-class\n"
        "accuracy for every k\n"
        "  --k LIST              neighbour counts (default 10,20,100,200)\n"
        "  --temperature T       vote temperature (default 0.07)\n"
        "  --chunk N             test rows per similarity block (default 256; memory bound)\n"
        "\n"
        "linear (dinov2/eval/linear.py): linear classifiers on {last block CLS, last 4 blocks'\n"
        "CLS} x {without, with average-pooled patch tokens} x learning rates, SGD momentum 0.9,\n"
        "cosine schedule, weight decay 0; the best on a held-out part of the training rows is\n"
        "retrained on all of them and tested. Feature files need --probe-features (else only\n"
        "the CLS classifiers run).\n"
        "  --iterations N        SGD steps (default 1250; official 12500)\n"
        "  --batch-size B        rows per step (default 128; lr scaled by B/256)\n"
        "  --lrs LIST            learning rates before scaling (default the official 13:\n"
        "                        1e-5,2e-5,5e-5,1e-4,2e-4,5e-4,1e-3,2e-3,5e-3,1e-2,2e-2,5e-2,0.1)\n"
        "  --val-fraction F      held-out share of the training rows for the choice (default\n"
        "                        0.1; 0 = choose on the test set, as official without a val set)\n"
        "  --seed S              held-out split, sample order, initialisation (default 0)\n"
        "  --no-retrain          report the chosen classifier as trained without the held-out "
        "rows\n"
        "  -h, --help            this text\n"
        "\n"
        "Configuration (keys used: compute.threads, MODEL.WEIGHTS, data.train, data.val):\n");
    dv_config_usage(f);
}

typedef struct {
    const char *cmd;
    const char *train, *test, *train_data, *test_data, *json;
    dv_embed_opts eo;
    int64_t ks[MAX_LIST];
    int nk;
    double temperature;
    int chunk;
    dv_lin_opts lo;
    double lrs[MAX_LIST];
} args_t;

/* "--name VALUE" or "--name=VALUE": 0 no match, 1 value set, -1 value missing. */
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

static int parse_int(const char *name, const char *text, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || end == text || *end || v < lo || v > hi) {
        dv_user_error("%s: expected an integer in [%ld, %ld], got '%s'", name, lo, hi, text);
        return DV_ERR_ARG;
    }
    *out = v;
    return DV_OK;
}

static int parse_double(const char *name, const char *text, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || *end || !(v >= lo && v <= hi)) {
        dv_user_error("%s: expected a number in [%g, %g], got '%s'", name, lo, hi, text);
        return DV_ERR_ARG;
    }
    *out = v;
    return DV_OK;
}

/* "a,b,c" -> up to MAX_LIST numbers (ints when ints != NULL) */
static int parse_list(const char *name, const char *text, int64_t *ints, double *dbls, int *n) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", text);
    *n = 0;
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (*n == MAX_LIST) {
            dv_user_error("%s: at most %d values", name, MAX_LIST);
            return DV_ERR_ARG;
        }
        if (ints) {
            long v;
            DV_TRY(parse_int(name, t, 1, 1L << 30, &v));
            ints[(*n)++] = v;
        } else {
            double v;
            DV_TRY(parse_double(name, t, 0, 1e6, &v));
            dbls[(*n)++] = v;
        }
    }
    if (*n == 0) {
        dv_user_error("%s: empty list", name);
        return DV_ERR_ARG;
    }
    return DV_OK;
}

static int parse_args(const dv_cli *cli, args_t *a) {
    int knn = !strcmp(a->cmd, "knn");
    for (int i = 1; i < cli->nrest; i++) {
        const char *s = cli->rest[i], *v = NULL;
        int m = 0;
        long iv;
        double dv;
#define OPT(nm) ((m = opt_value(cli->rest, cli->nrest, &i, (nm), &v)) > 0)
        if (!strcmp(s, "--no-retrain") && !knn)
            a->lo.retrain = 0;
        else if (OPT("--train"))
            a->train = v;
        else if (m == 0 && OPT("--test"))
            a->test = v;
        else if (m == 0 && OPT("--train-data"))
            a->train_data = v;
        else if (m == 0 && OPT("--test-data"))
            a->test_data = v;
        else if (m == 0 && OPT("--weights"))
            a->eo.weights = v;
        else if (m == 0 && OPT("--checkpoint"))
            a->eo.checkpoint = v;
        else if (m == 0 && OPT("--group"))
            a->eo.group = v;
        else if (m == 0 && OPT("--json"))
            a->json = v;
        else if (m == 0 && OPT("--image-size")) {
            DV_TRY(parse_int("--image-size", v, 0, 1 << 20, &iv));
            a->eo.image_size = (int)iv;
        } else if (m == 0 && OPT("--embed-batch")) {
            DV_TRY(parse_int("--embed-batch", v, 1, 1 << 20, &iv));
            a->eo.batch = (int)iv;
        } else if (m == 0 && knn && OPT("--k")) {
            DV_TRY(parse_list("--k", v, a->ks, NULL, &a->nk));
        } else if (m == 0 && knn && OPT("--temperature")) {
            DV_TRY(parse_double("--temperature", v, 1e-6, 1e6, &a->temperature));
        } else if (m == 0 && knn && OPT("--chunk")) {
            DV_TRY(parse_int("--chunk", v, 1, 1 << 24, &iv));
            a->chunk = (int)iv;
        } else if (m == 0 && !knn && OPT("--iterations")) {
            DV_TRY(parse_int("--iterations", v, 1, 1L << 40, &iv));
            a->lo.iterations = iv;
        } else if (m == 0 && !knn && OPT("--batch-size")) {
            DV_TRY(parse_int("--batch-size", v, 1, 1 << 24, &iv));
            a->lo.batch = iv;
        } else if (m == 0 && !knn && OPT("--lrs")) {
            DV_TRY(parse_list("--lrs", v, NULL, a->lrs, &a->lo.nlr));
            a->lo.lrs = a->lrs;
        } else if (m == 0 && !knn && OPT("--val-fraction")) {
            DV_TRY(parse_double("--val-fraction", v, 0, 0.9, &dv));
            a->lo.val_fraction = dv;
        } else if (m == 0 && !knn && OPT("--seed")) {
            DV_TRY(parse_int("--seed", v, 0, 1L << 62, &iv));
            a->lo.seed = (uint64_t)iv;
        } else if (m < 0) {
            dv_user_error("%s needs a value", s);
            return DV_ERR_ARG;
        } else {
            dv_user_error("unknown argument '%s' for dinov2-eval %s (see dinov2-eval --help)", s,
                          a->cmd);
            return DV_ERR_ARG;
        }
#undef OPT
    }
    return DV_OK;
}

/* ---- inputs ------------------------------------------------------------------------------ */

static int agree(const dv_ctx *ctx, int s) {
    int all = s;
    if (ctx->world > 1 && MPI_Allreduce(&s, &all, 1, MPI_INT, MPI_MAX, ctx->comm) != MPI_SUCCESS)
        return DV_ERR_MPI;
    return all;
}

/* One set: a features file (rows [start, start + count), count < 0 = all) or the shards
 * embedded in memory (all rows on every rank). *desc names it. */
static int load_set(const dv_ctx *ctx, const args_t *a, int test, unsigned parts, int64_t start,
                    int64_t count, dv_features *f, const char **desc, int *from_file) {
    const char *file = test ? a->test : a->train, *data = test ? a->test_data : a->train_data;
    *from_file = file != NULL;
    if (file) {
        *desc = file;
        /* rank 0 checks the file first, so that a bad file is one error line, not one per rank */
        int s = DV_OK;
        if (ctx->rank == 0) {
            dv_features info;
            s = dv_features_info(file, &info);
        }
        if (ctx->world > 1 && MPI_Bcast(&s, 1, MPI_INT, 0, ctx->comm) != MPI_SUCCESS)
            s = DV_ERR_MPI;
        if (s != DV_OK)
            return s;
        return agree(ctx, dv_features_read(file, parts, start, count, f));
    }
    *desc = data;
    dv_embed_opts eo = a->eo;
    eo.data = data;
    eo.probe_features = (parts & DV_FEAT_PROBE) != 0;
    eo.progress = 1;
    dv_embed_stats st;
    dv_log(ctx, DV_LOG_INFO, "embedding %s ...", data);
    DV_TRY(dv_embed_memory(&eo, ctx->world > 1 ? ctx->comm : MPI_COMM_NULL, f, &st));
    dv_log(ctx, DV_LOG_INFO, "embedded %lld images of %s in %.1f s (%.1f img/s)",
           (long long)st.images, data, st.seconds, st.img_per_s);
    return DV_OK;
}

/* ---- JSON -------------------------------------------------------------------------------- */

static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

static FILE *json_open(const char *path, char *tmp, size_t n) {
    snprintf(tmp, n, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        dv_user_error("%s: cannot write (%s)", tmp, strerror(errno));
    return f;
}

static int json_close(FILE *f, const char *tmp, const char *path) {
    int bad = ferror(f);
    if (fclose(f) != 0)
        bad = 1;
    if (bad || rename(tmp, path) != 0) {
        dv_user_error("%s: writing the JSON results failed (%s)", path, strerror(errno));
        remove(tmp);
        return DV_ERR_IO;
    }
    return DV_OK;
}

/* ---- knn --------------------------------------------------------------------------------- */

static int run_knn(const dv_ctx *ctx, args_t *a) {
    dv_features tr, te;
    memset(&tr, 0, sizeof tr);
    memset(&te, 0, sizeof te);
    const char *dtr = NULL, *dte = NULL;
    int ftr = 0, fte = 0, st;
    dv_knn_counts *cnt = NULL;
    st = load_set(ctx, a, 0, DV_FEAT_CLS, 0, -1, &tr, &dtr, &ftr);
    if (st != DV_OK)
        return st;
    /* test rows: a slice per rank */
    int64_t total = 0, lo, hi, off = 0;
    if (a->test) {
        dv_features info;
        if (ctx->rank == 0)
            st = dv_features_info(a->test, &info);
        if (ctx->world > 1 && MPI_Bcast(&st, 1, MPI_INT, 0, ctx->comm) != MPI_SUCCESS)
            st = DV_ERR_MPI;
        if (st == DV_OK)
            st = agree(ctx, dv_features_info(a->test, &info));
        if (st != DV_OK)
            goto out;
        total = info.total;
        dv_knn_slice(total, a->chunk, ctx->rank, ctx->world, &lo, &hi);
        st = load_set(ctx, a, 1, DV_FEAT_CLS, lo, hi - lo, &te, &dte, &fte);
    } else {
        st = load_set(ctx, a, 1, DV_FEAT_CLS, 0, -1, &te, &dte, &fte);
        total = te.n;
        dv_knn_slice(total, a->chunk, ctx->rank, ctx->world, &lo, &hi);
        off = lo;
    }
    if (st != DV_OK)
        goto out;
    if (tr.dim != te.dim) {
        if (ctx->rank == 0)
            dv_user_error("%s has %lld-dimensional features, %s %lld", dtr, (long long)tr.dim, dte,
                          (long long)te.dim);
        st = DV_ERR_ARG;
        goto out;
    }
    /* unlabelled training rows cannot vote: drop them */
    const int64_t D = tr.dim;
    int64_t ntr = 0, maxl = -1;
    for (int64_t i = 0; i < tr.n; i++) {
        if (tr.labels[i] < 0)
            continue;
        if (ntr != i)
            memmove(tr.cls + ntr * D, tr.cls + i * D, (size_t)D * sizeof(float));
        tr.labels[ntr++] = tr.labels[i];
        if (tr.labels[i] > maxl)
            maxl = tr.labels[i];
    }
    if (ntr < tr.n)
        dv_log(ctx, DV_LOG_WARN, "%lld training rows without a label (-1) left out",
               (long long)(tr.n - ntr));
    const int64_t nte = hi - lo;
    for (int64_t i = 0; i < nte; i++)
        if (te.labels[off + i] > maxl)
            maxl = te.labels[off + i];
    if (ctx->world > 1)
        MPI_Allreduce(MPI_IN_PLACE, &maxl, 1, MPI_INT64_T, MPI_MAX, ctx->comm);
    if (ntr < 1 || maxl < 0) {
        if (ctx->rank == 0)
            dv_user_error("%s: no labelled training rows", dtr);
        st = DV_ERR_ARG;
        goto out;
    }
    const int64_t C = maxl + 1;
    dv_knn_l2_normalize(tr.cls, ntr, D);
    dv_knn_l2_normalize(te.cls + off * D, nte, D);
    dv_knn_opts o = {.ks = a->ks,
                     .nk = a->nk,
                     .temperature = a->temperature,
                     .num_classes = C,
                     .test_chunk = a->chunk,
                     .train_chunk = 0};
    st = dv_knn_counts_create(a->nk, C, &cnt);
    if (st == DV_OK)
        st = dv_knn_count(tr.cls, tr.labels, ntr, te.cls + off * D, te.labels + off, nte, D, &o,
                          cnt);
    st = agree(ctx, st);
    if (st == DV_OK)
        st = dv_knn_counts_reduce(cnt, ctx->world > 1 ? ctx->comm : MPI_COMM_NULL);
    if (st != DV_OK || ctx->rank != 0)
        goto out;
    printf("k-NN: %lld train x %lld test (%lld labelled), D %lld, %lld classes, T %g\n",
           (long long)ntr, (long long)total, (long long)*cnt->n, (long long)D, (long long)C,
           a->temperature);
    printf("%6s %8s %8s %18s %18s\n", "k", "top-1", "top-5", "mean-class top-1",
           "mean-class top-5");
    for (int q = 0; q < a->nk; q++) {
        dv_knn_acc r;
        dv_knn_accuracy(cnt, q, &r);
        printf("%6lld %8.2f %8.2f %18.2f %18.2f\n", (long long)r.k, r.top1, r.top5, r.mean_top1,
               r.mean_top5);
    }
    fflush(stdout);
    if (a->json) {
        char tmp[4200];
        FILE *f = json_open(a->json, tmp, sizeof tmp);
        if (!f) {
            st = DV_ERR_IO;
            goto out;
        }
        fprintf(f, "{\n  \"protocol\": \"knn\",\n  \"train\": ");
        json_str(f, dtr);
        fprintf(f, ",\n  \"test\": ");
        json_str(f, dte);
        fprintf(f,
                ",\n  \"n_train\": %lld,\n  \"n_test\": %lld,\n  \"n_test_labelled\": %lld,\n"
                "  \"dim\": %lld,\n  \"num_classes\": %lld,\n  \"temperature\": %.17g,\n"
                "  \"results\": [\n",
                (long long)ntr, (long long)total, (long long)*cnt->n, (long long)D, (long long)C,
                a->temperature);
        for (int q = 0; q < a->nk; q++) {
            dv_knn_acc r;
            dv_knn_accuracy(cnt, q, &r);
            fprintf(f,
                    "    {\"k\": %lld, \"top1\": %.6f, \"top5\": %.6f, \"mean_class_top1\": %.6f, "
                    "\"mean_class_top5\": %.6f}%s\n",
                    (long long)r.k, r.top1, r.top5, r.mean_top1, r.mean_top5,
                    q + 1 < a->nk ? "," : "");
        }
        fprintf(f, "  ]\n}\n");
        st = json_close(f, tmp, a->json);
    }
out:
    dv_knn_counts_free(cnt);
    dv_features_free(&tr);
    dv_features_free(&te);
    return st;
}

/* ---- linear ------------------------------------------------------------------------------ */

static void json_entry(FILE *f, const dv_lin_entry *e) {
    fprintf(f,
            "{\"name\": \"%s\", \"n_blocks\": %d, \"avgpool\": %s, \"dim\": %lld, \"lr\": %.9g, "
            "\"lr_scaled\": %.9g, \"train_loss\": %.6g, \"val_top1\": %.6f, \"test_top1\": %.6f, "
            "\"test_top5\": %.6f, \"test_mean_class_top1\": %.6f}",
            e->name, e->v.n_blocks, e->v.avgpool ? "true" : "false", (long long)e->dim, e->lr,
            e->lr_scaled, e->loss, e->val_top1, e->test_top1, e->test_top5, e->test_mean_top1);
}

static int run_linear(const dv_ctx *ctx, args_t *a) {
    dv_features tr, te;
    memset(&tr, 0, sizeof tr);
    memset(&te, 0, sizeof te);
    const char *dtr = NULL, *dte = NULL;
    int ftr = 0, fte = 0;
    dv_lin_result res;
    memset(&res, 0, sizeof res);
    const unsigned parts = DV_FEAT_CLS | DV_FEAT_PROBE;
    int st = load_set(ctx, a, 0, parts, 0, -1, &tr, &dtr, &ftr);
    if (st == DV_OK)
        st = load_set(ctx, a, 1, parts, 0, -1, &te, &dte, &fte);
    if (st != DV_OK)
        goto out;
    if (tr.dim != te.dim) {
        if (ctx->rank == 0)
            dv_user_error("%s has %lld-dimensional features, %s %lld", dtr, (long long)tr.dim, dte,
                          (long long)te.dim);
        st = DV_ERR_ARG;
        goto out;
    }
    if ((!tr.cls_last || !tr.avgpool || !te.cls_last || !te.avgpool))
        dv_log(ctx, DV_LOG_WARN,
               "%s: no probe features (/cls_last4, /avgpool): only the classifiers of the parts "
               "present run (embed with --probe-features for the full official grid)",
               !tr.cls_last || !tr.avgpool ? dtr : dte);
    dv_lin_data dtrain = {.n = tr.n,
                          .dim = tr.dim,
                          .nlast = tr.nlast,
                          .cls = tr.cls,
                          .cls_last = tr.cls_last,
                          .avgpool = tr.avgpool,
                          .labels = tr.labels};
    dv_lin_data dtest = {.n = te.n,
                         .dim = te.dim,
                         .nlast = te.nlast,
                         .cls = te.cls,
                         .cls_last = te.cls_last,
                         .avgpool = te.avgpool,
                         .labels = te.labels};
    int nlr = a->lo.nlr;
    if (!a->lo.lrs)
        dv_lin_official_lrs(&nlr);
    dv_log(ctx, DV_LOG_INFO,
           "linear probe: %lld train, %lld test rows, D %lld, %d learning rates, "
           "%lld iterations of batch %lld, %d rank%s",
           (long long)tr.n, (long long)te.n, (long long)tr.dim, nlr, (long long)a->lo.iterations,
           (long long)a->lo.batch, ctx->world, ctx->world == 1 ? "" : "s");
    st = agree(
        ctx, dv_lin_run(&dtrain, &dtest, &a->lo, ctx->world > 1 ? ctx->comm : MPI_COMM_NULL, &res));
    if (st != DV_OK || ctx->rank != 0)
        goto out;
    const dv_lin_entry *b = &res.grid[res.best];
    printf("linear probe: %lld classes, %lld train rows (%lld held out), %lld test rows, %d "
           "classifiers, %lld iterations, batch %lld\n",
           (long long)res.C, (long long)res.ntrain, (long long)res.nval, (long long)res.ntest,
           res.n, (long long)a->lo.iterations, (long long)a->lo.batch);
    printf("%-48s %9s %8s %8s %8s %10s\n", "classifier", "loss",
           res.selected_on_test ? "test" : "val", "test-1", "test-5", "test-mean");
    for (int e = 0; e < res.n; e++) {
        const dv_lin_entry *g = &res.grid[e];
        printf("%-48s %9.4f %8.2f %8.2f %8.2f %10.2f%s\n", g->name, g->loss, g->val_top1,
               g->test_top1, g->test_top5, g->test_mean_top1, e == res.best ? "  <- best" : "");
    }
    printf("best: %s (%s top-1 %.2f)%s\n", b->name, res.selected_on_test ? "test" : "held-out",
           b->val_top1, res.selected_on_test ? "  [chosen on the test set: optimistic]" : "");
    printf("test top-1 %.2f  top-5 %.2f  mean-class top-1 %.2f%s\n", res.test_top1, res.test_top5,
           res.test_mean_top1, res.retrained ? "  (retrained on all training rows)" : "");
    fflush(stdout);
    if (a->json) {
        char tmp[4200];
        FILE *f = json_open(a->json, tmp, sizeof tmp);
        if (!f) {
            st = DV_ERR_IO;
            goto out;
        }
        fprintf(f, "{\n  \"protocol\": \"linear\",\n  \"train\": ");
        json_str(f, dtr);
        fprintf(f, ",\n  \"test\": ");
        json_str(f, dte);
        fprintf(f,
                ",\n  \"num_classes\": %lld,\n  \"n_train\": %lld,\n  \"n_val\": %lld,\n"
                "  \"n_test\": %lld,\n  \"dim\": %lld,\n  \"iterations\": %lld,\n"
                "  \"batch_size\": %lld,\n  \"val_fraction\": %.17g,\n  \"seed\": %llu,\n"
                "  \"selected_on\": \"%s\",\n  \"retrained\": %s,\n",
                (long long)res.C, (long long)res.ntrain, (long long)res.nval, (long long)res.ntest,
                (long long)tr.dim, (long long)a->lo.iterations, (long long)a->lo.batch,
                a->lo.val_fraction, (unsigned long long)a->lo.seed,
                res.selected_on_test ? "test" : "held-out", res.retrained ? "true" : "false");
        fprintf(
            f,
            "  \"test_top1\": %.6f,\n  \"test_top5\": %.6f,\n  \"test_mean_class_top1\": %.6f,\n",
            res.test_top1, res.test_top5, res.test_mean_top1);
        fprintf(f, "  \"best\": ");
        json_entry(f, b);
        fprintf(f, ",\n  \"grid\": [\n");
        for (int e = 0; e < res.n; e++) {
            fprintf(f, "    ");
            json_entry(f, &res.grid[e]);
            fprintf(f, "%s\n", e + 1 < res.n ? "," : "");
        }
        fprintf(f, "  ]\n}\n");
        st = json_close(f, tmp, a->json);
    }
out:
    dv_lin_result_free(&res);
    dv_features_free(&tr);
    dv_features_free(&te);
    return st;
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
    if (dv_ctx_init(&ctx, &argc, &argv, "dinov2-eval") != DV_OK)
        return 1;
    int rc = 1;
    dv_config *c = malloc(sizeof *c);
    args_t *a = calloc(1, sizeof *a);
    if (!c || !a) {
        dv_user_error("out of memory");
        goto done;
    }
    dv_config_defaults(c);
    dv_cli cli;
    if (dv_config_from_argv(c, argc, argv, ctx.world, &cli) != DV_OK)
        goto done;
    if (cli.print_config) {
        if (ctx.rank == 0)
            dv_config_write_yaml(c, stdout);
        rc = 0;
        goto done;
    }
    if (cli.nrest < 1 || (strcmp(cli.rest[0], "knn") && strcmp(cli.rest[0], "linear"))) {
        if (ctx.rank == 0) {
            if (cli.nrest >= 1)
                dv_user_error("unknown command '%s'", cli.rest[0]);
            usage(stderr);
        }
        rc = 2;
        goto done;
    }
    a->cmd = cli.rest[0];
    dv_embed_opts_default(&a->eo);
    a->ks[0] = 10;
    a->ks[1] = 20;
    a->ks[2] = 100;
    a->ks[3] = 200;
    a->nk = 4;
    a->temperature = 0.07;
    a->chunk = 256;
    dv_lin_opts_default(&a->lo);
    if (parse_args(&cli, a) != DV_OK) {
        rc = 2;
        goto done;
    }
    if (!a->train && !a->train_data && c->data.train[0])
        a->train_data = c->data.train;
    if (!a->test && !a->test_data && c->data.val[0])
        a->test_data = c->data.val;
    if (!a->eo.weights && !a->eo.checkpoint && c->MODEL.WEIGHTS[0])
        a->eo.weights = c->MODEL.WEIGHTS;
    const char *missing = NULL;
    if (!a->train && !a->train_data)
        missing = "--train FEATURES.h5 (or --train-data SHARDS)";
    else if (!a->test && !a->test_data)
        missing = "--test FEATURES.h5 (or --test-data SHARDS)";
    else if ((a->train && a->train_data) || (a->test && a->test_data))
        missing = "";
    else if ((!a->train || !a->test) && !a->eo.weights && !a->eo.checkpoint)
        missing = "--weights FILE or --checkpoint FILE (to embed --train-data / --test-data)";
    if (missing) {
        if (ctx.rank == 0) {
            if (*missing)
                dv_user_error("dinov2-eval %s: missing %s", a->cmd, missing);
            else
                dv_user_error(
                    "dinov2-eval %s: give a set either as features (--train/--test) or as "
                    "images (--train-data/--test-data), not both",
                    a->cmd);
        }
        rc = 2;
        goto done;
    }
    if (c->compute.threads > 0)
        omp_set_num_threads((int)c->compute.threads);
    int st = !strcmp(a->cmd, "knn") ? run_knn(&ctx, a) : run_linear(&ctx, a);
    rc = st == DV_OK ? 0 : 1;
done:
    free(a);
    free(c);
    dv_ctx_finish(&ctx);
    return rc;
}
