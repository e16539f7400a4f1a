/* dinov2-pretrain — DINOv2 self-supervised pretraining (DINO + iBOT + KoLeo, teacher EMA).
 *
 *   mpirun -np N dinov2-pretrain --config-file FILE [key=value ...] [--output-dir DIR]
 *                                [--max-steps N] [--max-minutes M] [--no-resume]
 *
 * Reads image shards (data.train), trains student and teacher, logs one line every
 * log.period iterations and a JSON line per logged iteration (log.metrics_file), writes a
 * checkpoint every checkpoint.period iterations and at the end, and resumes from the newest
 * valid checkpoint in the output directory unless told not to. Exit status: 0 done (or the
 * step/time budget reached, checkpointed), 1 error.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend.h"
#include "ckpt.h"
#include "config.h"
#include "ctx.h"
#include "dv_build.h"
#include "err.h"
#include "loader.h"
#include "ssl.h"
#include "timer.h"

typedef struct {
    int64_t max_steps; /* -1: no limit */
    double max_minutes; /* 0: no limit */
} run_limits;

static void usage(FILE *f) {
    fprintf(f, "usage: dinov2-pretrain --config-file FILE [key=value ...] [options]\n"
               "DINOv2 self-supervised pretraining on image shards (data.train).\n\n");
    dv_config_usage(f);
    fprintf(f, "  --max-steps N         stop after N iterations of this run (checkpointed)\n"
               "  --max-minutes M       stop after M minutes of this run (checkpointed)\n");
}

/* mkdir -p */
static int make_dirs(const char *path) {
    char buf[DV_CONFIG_STR_MAX];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0775) != 0 && errno != EEXIST) {
            dv_user_error("%s: cannot create directory: %s", buf, strerror(errno));
            return DV_ERR_IO;
        }
        *p = '/';
    }
    if (mkdir(buf, 0775) != 0 && errno != EEXIST) {
        dv_user_error("%s: cannot create directory: %s", buf, strerror(errno));
        return DV_ERR_IO;
    }
    return DV_OK;
}

/* Every rank parses the same command line; only rank 0 prints what is wrong with it. */
static int parse_config(dv_ctx *ctx, dv_config *c, int argc, char **argv, dv_cli *cli,
                        run_limits *lim) {
    int saved = -1;
    if (ctx->rank != 0) {
        fflush(stderr);
        saved = dup(2);
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0) {
            dup2(devnull, 2);
            close(devnull);
        }
    }
    dv_config_defaults(c);
    int rc = dv_config_from_argv(c, argc, argv, ctx->world, cli);
    lim->max_steps = c->compute.max_steps;
    lim->max_minutes = c->compute.max_minutes;
    for (int i = 0; rc == DV_OK && i < cli->nrest; i++) {
        const char *a = cli->rest[i], *v = NULL;
        int is_steps = !strncmp(a, "--max-steps", 11), is_min = !strncmp(a, "--max-minutes", 13);
        if (is_steps || is_min) {
            const char *eq = strchr(a, '=');
            if (eq) v = eq + 1;
            else if (i + 1 < cli->nrest) v = cli->rest[++i];
            char *end = NULL;
            double x = v ? strtod(v, &end) : NAN;
            if (!v || end == v || *end || !(x >= 0)) {
                dv_user_error("%s: expected a non-negative number, got '%s'", is_steps ? "--max-steps" : "--max-minutes", v ? v : "");
                rc = DV_ERR_CONFIG;
            } else if (is_steps) lim->max_steps = (int64_t)x;
            else lim->max_minutes = x;
        } else {
            dv_user_error("unknown argument '%s' (see dinov2-pretrain --help)", a);
            rc = DV_ERR_CONFIG;
        }
    }
    if (rc == DV_OK && !c->data.train[0]) {
        dv_user_error("data.train is not set: give the image shards to train on (a directory "
                      "of dinov2-pack output), e.g. data.train=out/shards/train");
        rc = DV_ERR_CONFIG;
    }
    if (rc == DV_OK) { /* fails with one line for a backend this build cannot run */
        static const char *const names[] = {"auto", "cpu", "cuda"};
        const dv_backend *be = NULL;
        rc = dv_backend_by_name(names[c->compute.backend], &be);
    }
    if (saved >= 0) {
        fflush(stderr);
        dup2(saved, 2);
        close(saved);
    }
    return rc;
}

static void run_card(const dv_ctx *ctx, const dv_config *c, const dv_ssl *s, const dv_loader *ld,
                     const run_limits *lim) {
    if (ctx->rank != 0) return;
    const dv_vit_config *v = &s->vit.cfg;
    size_t params = 0;
    for (int i = 0; i < DV_MOD_COUNT; i++) params += s->mod[i].numel;
    const double gib = 1024.0 * 1024.0 * 1024.0;
    double state_bytes = (double)params * sizeof(float) * 5; /* student, teacher, grad, m, v */
    double acts = (double)s->sa->bytes + (double)s->ta->bytes;
    printf("+--------------------------------------------------------------------------+\n");
    printf("| dinov2-pretrain %-8s  ranks %-4d  threads/rank %-3d  backend cpu (fp32, DDP)|\n",
           PACKAGE_VERSION, ctx->world, omp_get_max_threads());
    printf("+--------------------------------------------------------------------------+\n");
    printf("  backbone     %s/%lld: dim %lld, depth %lld, heads %lld, ffn %s, registers %lld, "
           "%zu params\n", c->student.arch == DV_CFG_VIT_SMALL ? "vit_small" :
           c->student.arch == DV_CFG_VIT_BASE ? "vit_base" : c->student.arch == DV_CFG_VIT_LARGE ?
           "vit_large" : "vit_giant2", (long long)v->patch_size, (long long)v->embed_dim,
           (long long)v->depth, (long long)v->num_heads, dv_vit_ffn_name(v->ffn),
           (long long)v->num_register_tokens, s->mod[DV_MOD_BACKBONE].numel);
    printf("  heads        dino K=%lld (%zu params)%s\n", (long long)s->K[0],
           s->mod[DV_MOD_DINO_HEAD].numel, s->separate ? ", separate ibot head" : ", shared with ibot");
    printf("  crops        2 x %lld px + %lld x %lld px, global batch %lld (%lld per rank)\n",
           (long long)s->G, (long long)s->L, (long long)s->l, (long long)c->derived.global_batch,
           (long long)s->B);
    printf("  data         %s: %lld images, %lld batches per epoch\n", c->data.train,
           (long long)dv_loader_num_images(ld), (long long)dv_loader_batches_per_epoch(ld));
    printf("  schedule     %lld iterations (warmup %lld), lr %.4g (base %.4g x sqrt(%lld/1024)), "
           "wd %.3g->%.3g, momentum %.4g->%.4g, %s\n", (long long)c->derived.total_iters,
           (long long)c->derived.warmup_iters, c->derived.lr, c->optim.base_lr,
           (long long)c->derived.global_batch, c->optim.weight_decay, c->optim.weight_decay_end,
           c->teacher.momentum_teacher, c->teacher.final_momentum_teacher,
           c->train.centering == DV_CFG_CENTERING_SINKHORN_KNOPP ? "sinkhorn_knopp" : "centering");
    printf("  memory/rank  parameters+optimizer %.2f GiB, activations %.2f GiB\n",
           state_bytes / gib, acts / gib);
    printf("  output       %s (checkpoints every %lld iterations in %s, keep %lld)\n",
           c->train.output_dir, (long long)c->derived.checkpoint_period, c->derived.checkpoint_dir,
           (long long)c->checkpoint.keep);
    if (lim->max_steps >= 0) printf("  this run     at most %lld iterations\n", (long long)lim->max_steps);
    if (lim->max_minutes > 0) printf("  this run     at most %.1f minutes\n", lim->max_minutes);
    fflush(stdout);
}

static void fmt_eta(char *buf, size_t n, double secs) {
    if (!isfinite(secs) || secs < 0) secs = 0;
    long s = (long)secs;
    snprintf(buf, n, "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
}

/* The loader's workers read shards through the same (not thread-safe) HDF5 library: hold its
 * lock while the checkpoint is written. */
static int save_(const dv_ctx *ctx, const dv_ssl *s, const dv_ckpt_extra *x, const dv_config *c) {
    dv_loader_hdf5_lock();
    int rc = dv_ckpt_save(ctx, s, x, c->derived.checkpoint_dir, (int)c->checkpoint.keep);
    dv_loader_hdf5_unlock();
    return rc;
}

static int train(dv_ctx *ctx, const dv_config *c, const run_limits *lim) {
    dv_ssl s;
    dv_comm comm;
    DV_TRY(dv_comm_init(&comm, ctx->comm));
    int rc = dv_ssl_create(&s, c, c->train.batch_size_per_gpu);
    if (rc != DV_OK) {
        dv_comm_free(&comm);
        return rc;
    }
    dv_ssl_set_comm(&s, &comm);
    dv_loader *ld = NULL;
    FILE *metrics = NULL;
    dv_loader_opts lo;
    dv_loader_opts_from_config(&lo, c);
    rc = dv_loader_open(&ld, &lo, ctx->comm);
    if (rc == DV_OK && c->checkpoint.resume) {
        dv_ckpt_extra x = {0, 0};
        int64_t loaded = -1;
        dv_loader_hdf5_lock();
        rc = dv_ckpt_load_latest(ctx, &s, &x, c->derived.checkpoint_dir, &loaded);
        dv_loader_hdf5_unlock();
        if (rc == DV_OK && loaded >= 0) {
            rc = dv_loader_seek(ld, x.loader_epoch, x.loader_batch);
            dv_log(ctx, DV_LOG_INFO, "resumed from iteration %lld (data epoch %lld, batch %lld)",
                   (long long)loaded, (long long)x.loader_epoch, (long long)x.loader_batch);
        }
    }
    if (rc == DV_OK) run_card(ctx, c, &s, ld, lim);
    if (rc == DV_OK && ctx->rank == 0 && c->derived.metrics_path[0]) {
        metrics = fopen(c->derived.metrics_path, "a");
        if (!metrics) {
            dv_user_error("%s: cannot open the metrics file: %s", c->derived.metrics_path, strerror(errno));
            rc = DV_ERR_IO;
        }
    }
    const int64_t total = c->derived.total_iters, start = s.step;
    const double flops = dv_ssl_step_flops(&s);
    double t_run = dv_now(), t_log = t_run;
    int64_t last_saved = s.step, it_log = s.step;
    dv_ssl_stats st;
    while (rc == DV_OK && s.step < total) {
        if (lim->max_steps >= 0 && s.step - start >= lim->max_steps) break;
        if (lim->max_minutes > 0 && (dv_now() - t_run) / 60.0 >= lim->max_minutes) break;
        dv_batch *b = NULL;
        rc = dv_loader_next(ld, &b);
        if (rc != DV_OK) break;
        rc = dv_ssl_step(&s, b, &st);
        if (rc != DV_OK) break;
        const int64_t it = s.step; /* iterations completed */
        if (it % c->log.period == 0 || it == total) {
            const double now = dv_now(), dt = now - t_log;
            const double ips = (double)(it - it_log) * (double)c->derived.global_batch / dt;
            const double gflops = (double)(it - it_log) * flops * ctx->world / dt * 1e-9;
            char eta[32];
            fmt_eta(eta, sizeof eta, (double)(total - it) * dt / (double)(it - it_log));
            dv_log(ctx, DV_LOG_INFO,
                   "it %lld/%lld | dino_local %.4f dino_global %.4f koleo %.4f ibot %.4f total %.4f"
                   " | lr %.3g wd %.3g mom %.5f tt %.4f | gnorm bb %.3g dh %.3g%s | %.1f img/s "
                   "%.1f GFLOP/s | eta %s",
                   (long long)it, (long long)total, st.dino_local, st.dino_global, st.koleo,
                   st.ibot, st.total, st.lr, st.wd, st.momentum, st.teacher_temp,
                   st.grad_norm[DV_MOD_BACKBONE], st.grad_norm[DV_MOD_DINO_HEAD],
                   s.separate ? " ih" : "", ips, gflops, eta);
            if (metrics) {
                fprintf(metrics,
                        "{\"iteration\": %lld, \"dino_local_crops_loss\": %.8g, "
                        "\"dino_global_crops_loss\": %.8g, \"koleo_loss\": %.8g, \"ibot_loss\": "
                        "%.8g, \"total_loss\": %.8g, \"lr\": %.8g, \"last_layer_lr\": %.8g, \"wd\": "
                        "%.8g, \"mom\": %.8g, \"teacher_temp\": %.8g, \"grad_norm_backbone\": %.6g, "
                        "\"grad_norm_dino_head\": %.6g, \"grad_norm_ibot_head\": %.6g, "
                        "\"n_masked\": %lld, \"images_per_s\": %.4g, \"gflops\": %.4g, "
                        "\"elapsed_s\": %.3f}\n",
                        (long long)it, st.dino_local, st.dino_global, st.koleo, st.ibot, st.total,
                        st.lr, st.last_layer_lr, st.wd, st.momentum, st.teacher_temp,
                        st.grad_norm[0], st.grad_norm[1], st.grad_norm[2], (long long)st.n_masked,
                        ips, gflops, now - t_run);
                fflush(metrics);
            }
            t_log = now;
            it_log = it;
        }
        if (it % c->derived.checkpoint_period == 0) {
            dv_ckpt_extra x;
            dv_loader_position(ld, &x.loader_epoch, &x.loader_batch);
            rc = save_(ctx, &s, &x, c);
            last_saved = it;
        }
    }
    if (rc == DV_OK && s.step != last_saved) { /* the end of the run or of its budget */
        dv_ckpt_extra x;
        dv_loader_position(ld, &x.loader_epoch, &x.loader_batch);
        rc = save_(ctx, &s, &x, c);
    }
    if (rc == DV_OK)
        dv_log(ctx, DV_LOG_INFO, "%s at iteration %lld/%lld after %.1f s; checkpoints in %s",
               s.step >= total ? "training done" : "stopping (budget of this run reached)",
               (long long)s.step, (long long)total, dv_now() - t_run, c->derived.checkpoint_dir);
    if (metrics) fclose(metrics);
    dv_loader_close(ld);
    dv_ssl_free(&s);
    dv_comm_free(&comm);
    return rc;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        }
    dv_ctx ctx;
    if (dv_ctx_init(&ctx, &argc, &argv, "dinov2-pretrain") != DV_OK) return 1;
    dv_config *c = malloc(sizeof *c);
    dv_cli cli;
    run_limits lim = {-1, 0.0};
    int rc = c ? parse_config(&ctx, c, argc, argv, &cli, &lim) : DV_ERR_NOMEM;
    if (rc == DV_OK && cli.print_config) {
        if (ctx.rank == 0) dv_config_write_yaml(c, stdout);
        free(c);
        dv_ctx_finish(&ctx);
        return 0;
    }
    if (rc == DV_OK && c->compute.threads > 0) omp_set_num_threads((int)c->compute.threads);
    if (rc == DV_OK && ctx.rank == 0) {
        rc = make_dirs(c->train.output_dir);
        if (rc == DV_OK) rc = make_dirs(c->derived.checkpoint_dir);
        if (rc == DV_OK) { /* the resolved config beside the results, as the official code */
            char path[DV_CONFIG_STR_MAX + 32];
            snprintf(path, sizeof path, "%s/config.yaml", c->train.output_dir);
            FILE *f = fopen(path, "w");
            if (!f || dv_config_write_yaml(c, f) != DV_OK || fclose(f) != 0) {
                dv_user_error("%s: cannot write the resolved config", path);
                rc = DV_ERR_IO;
            }
        }
    }
    /* every rank learns whether setup worked before training starts any collective */
    int ok = rc == DV_OK, all_ok = 0;
    MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, ctx.comm);
    if (all_ok) {
        rc = train(&ctx, c, &lim);
        /* a rank that failed during training takes the job down: the others may wait in a
         * collective forever otherwise */
        if (rc != DV_OK && ctx.world > 1) dv_ctx_abort(&ctx, 1);
    } else if (rc == DV_OK) {
        rc = DV_ERR_CONFIG; /* another rank failed setup and said why */
    }
    free(c);
    dv_ctx_finish(&ctx);
    return rc == DV_OK ? 0 : 1;
}
