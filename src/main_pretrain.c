/* dinov2-pretrain — DINOv2 self-supervised pretraining (DINO + iBOT + KoLeo, teacher EMA).
 *
 *   mpirun -np N dinov2-pretrain --config-file FILE [key=value ...] [--output-dir DIR]
 *                                [--max-steps N] [--max-minutes M] [--no-resume]
 *
 * Reads image shards (data.train), trains student and teacher, logs one line every
 * log.period iterations and a JSON line per logged iteration (log.metrics_file), writes a
 * checkpoint every checkpoint.period iterations and at the end, and resumes from the newest
 * valid checkpoint in the output directory unless told not to; a checkpoint written on another
 * rank count continues at the same place in the data (the position is converted when the global
 * batch differs). SIGUSR1 or SIGTERM (preemption) stops every rank after the same iteration
 * with a checkpoint.
 *
 * Exit status (doc/checkpoints.md): 0 done, or the step/time budget of this run reached
 * (checkpointed); 75 (EX_TEMPFAIL) stopped by SIGUSR1/SIGTERM, checkpointed: requeue me;
 * 1 error (with more than one rank, MPI_Abort takes the job down).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <omp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sysexits.h>
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

/* Exit statuses: the contract with job scripts (jobs/pretrain.sbatch requeues on 75). */
enum { EXIT_DONE = 0, EXIT_FAILED = 1, EXIT_REQUEUE = EX_TEMPFAIL };

/* The signal that asked this rank to stop (0: none). The program's only global: a signal
 * handler can reach nothing else. Read once per iteration; the ranks agree on it. */
static volatile sig_atomic_t g_stop_signal;

static void on_stop_signal(int sig) { g_stop_signal = sig; }

/* SIGUSR1 (mpirun forwards it to every rank; Slurm's --signal) and SIGTERM (Slurm at the time
 * limit or on preemption, to every task): finish the iteration, checkpoint, exit 75. */
static int install_stop_handlers(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART; /* the loader's and HDF5's blocking calls just continue */
    if (sigaction(SIGUSR1, &sa, NULL) != 0 || sigaction(SIGTERM, &sa, NULL) != 0)
        return DV_ERR(DV_ERR_IO, "sigaction(SIGUSR1/SIGTERM): %s", strerror(errno));
    return DV_OK;
}

static const char *signal_name(int sig) {
    return sig == SIGUSR1 ? "SIGUSR1" : sig == SIGTERM ? "SIGTERM" : "a signal";
}

typedef struct {
    int64_t max_steps; /* -1: no limit */
    double max_minutes; /* 0: no limit */
} run_limits;

static void usage(FILE *f) {
    fprintf(f, "usage: dinov2-pretrain --config-file FILE [key=value ...] [options]\n"
               "DINOv2 self-supervised pretraining on image shards (data.train).\n\n");
    dv_config_usage(f);
    fprintf(f, "  --max-steps N         stop after N iterations of this run (checkpointed)\n"
               "  --max-minutes M       stop after M minutes of this run (checkpointed)\n\n"
               "Resumes from the newest valid checkpoint of checkpoint.dir, on any rank count.\n"
               "SIGUSR1 or SIGTERM to any rank stops all ranks after the current iteration\n"
               "with a checkpoint (mpirun forwards SIGUSR1 to the ranks; a SIGTERM to mpirun\n"
               "kills them).\n\n"
               "exit status:\n"
               "  0   training done, or the step/time budget of this run reached (checkpointed)\n"
               "  75  stopped by SIGUSR1/SIGTERM, checkpoint written: requeue me (EX_TEMPFAIL)\n"
               "  1   error (bad config or data, I/O, ...); a failing rank aborts the whole job\n");
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
    /* this rank's state: student, teacher, grad, m, v (slices when sharded), plus the gathered
     * full-size compute buffers of sharded modules */
    double state_bytes = 0, gathered_bytes = 0;
    for (int i = 0; i < DV_MOD_COUNT; i++) {
        state_bytes += 5.0 * sizeof(float) * (double)s->mod[i].local_numel;
        if (s->mod[i].sharded) gathered_bytes += 3.0 * sizeof(float) * (double)s->mod[i].numel;
    }
    const double gib = 1024.0 * 1024.0 * 1024.0;
    double acts = (double)s->sa->bytes + (double)s->ta->bytes;
    static const char *const strat[] = {"NO_SHARD", "SHARD_GRAD_OP", "FULL_SHARD"};
    static const char *const dt[] = {"fp32", "fp16", "bf16", "fp64"};
    const dv_ssl_module *bb = &s->mod[DV_MOD_BACKBONE];
    char par[96];
    if (ctx->world < 2)
        snprintf(par, sizeof par, "1 rank, fp32");
    else
        snprintf(par, sizeof par, "%s, %s gathers, %s grads%s", strat[bb->strategy],
                 dt[bb->param_dtype], dt[bb->reduce_dtype], s->scaler.enabled ? ", loss scaling" : "");
    printf("+--------------------------------------------------------------------------+\n");
    printf("  dinov2-pretrain %s  ranks %d  threads/rank %d  backend cpu  (%s)\n",
           PACKAGE_VERSION, ctx->world, omp_get_max_threads(), par);
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
    printf("  memory/rank  parameters+optimizer %.2f GiB%s, gathered weights+grads %.2f GiB, "
           "activations %.2f GiB\n", state_bytes / gib, s->sharded ? " (this rank's shards)" : "",
           gathered_bytes / gib, acts / gib);
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

/* The loader position of a checkpoint counts global batches of the run that wrote it. When this
 * run's global batch differs (another rank count with train.global_batch_size unset, or other
 * batch keys), continue at the first of our global batches that starts at or after the images
 * the old run consumed in that epoch: none is repeated, fewer than one global batch is skipped.
 * Collective: rank 0 reads the checkpoint's header (world size, config) and tells the others. */
static int convert_position(const dv_ctx *ctx, const dv_config *c, const dv_loader *ld,
                            int64_t step, int64_t *epoch, int64_t *batch) {
    int64_t old[2] = {-1, 0}; /* global batch and world size of the writer; -1: unreadable */
    if (ctx->rank == 0) {
        char name[64], path[DV_CONFIG_STR_MAX + 64], why[DV_CKPT_WHY_MAX] = "";
        snprintf(path, sizeof path, "%s/%s", c->derived.checkpoint_dir,
                 dv_ckpt_file_name(name, sizeof name, step));
        dv_ckpt_info info;
        memset(&info, 0, sizeof info);
        dv_loader_hdf5_lock();
        int r = dv_ckpt_read_info(path, &info, why, sizeof why);
        dv_loader_hdf5_unlock();
        if (r != DV_OK || !info.config || info.world_size < 1) {
            dv_user_error("%s: cannot read the rank count and config it was written with: %s",
                          path, why[0] ? why : "no config attribute");
        } else {
            dv_config *oc = malloc(sizeof *oc);
            if (oc) {
                dv_config_defaults(oc);
                char origin[sizeof path + 16];
                snprintf(origin, sizeof origin, "%s: config", path);
                /* checkpoints older than train.global_batch_size lack it: 0, the default */
                if (dv_config_load_string(oc, info.config, origin) == DV_OK) {
                    old[0] = oc->train.global_batch_size > 0
                                 ? oc->train.global_batch_size
                                 : oc->train.batch_size_per_gpu * info.world_size;
                    old[1] = info.world_size;
                }
                free(oc);
            } else dv_user_error("out of memory reading the config of %s", path);
        }
        dv_ckpt_info_free(&info);
    }
    DV_CHECK_MPI(MPI_Bcast(old, 2, MPI_INT64_T, 0, ctx->comm));
    if (old[0] < 0) return DV_ERR_FORMAT;
    const int64_t new_g = c->derived.global_batch;
    if (old[0] == new_g) {
        if (old[1] != ctx->world)
            dv_log(ctx, DV_LOG_INFO, "resuming on %d ranks a checkpoint written by %lld: global "
                   "batch %lld in both, loader position kept (no conversion)", ctx->world,
                   (long long)old[1], (long long)new_g);
        return DV_OK;
    }
    const int64_t consumed = *batch * old[0];
    int64_t e = *epoch, b = (consumed + new_g - 1) / new_g;
    const int64_t skipped = b * new_g - consumed;
    if (b >= dv_loader_batches_per_epoch(ld)) { /* the rest of the epoch is its dropped tail */
        e++;
        b = 0;
    }
    dv_log(ctx, DV_LOG_INFO, "loader position converted: checkpoint written by %lld ranks with "
           "global batch %lld, this run %d ranks with global batch %lld: epoch %lld batch %lld "
           "(%lld images consumed) -> epoch %lld batch %lld (%lld images skipped by rounding)",
           (long long)old[1], (long long)old[0], ctx->world, (long long)new_g, (long long)*epoch,
           (long long)*batch, (long long)consumed, (long long)e, (long long)b, (long long)skipped);
    *epoch = e;
    *batch = b;
    return DV_OK;
}

/* Every rank stops before the same iteration: a signal on any rank, or the time budget on any
 * rank (clocks differ), ends the run everywhere; one small all-reduce per iteration. */
static int agree_stop(const dv_ctx *ctx, int time_up, int *stop_signal, int *stop_time) {
    int local[2] = {(int)g_stop_signal, time_up}, all[2];
    DV_CHECK_MPI(MPI_Allreduce(local, all, 2, MPI_INT, MPI_MAX, ctx->comm));
    *stop_signal = all[0];
    *stop_time = all[1];
    return DV_OK;
}

static int train(dv_ctx *ctx, const dv_config *c, const run_limits *lim) {
    dv_ssl s;
    dv_comm comm;
    DV_TRY(dv_comm_init(&comm, ctx->comm));
    int rc = dv_ssl_create(&s, c, c->derived.batch_per_rank);
    if (rc != DV_OK) {
        dv_comm_free(&comm);
        return rc;
    }
    rc = dv_ssl_set_comm(&s, &comm);
    dv_loader *ld = NULL;
    FILE *metrics = NULL;
    dv_loader_opts lo;
    dv_loader_opts_from_config(&lo, c);
    if (rc == DV_OK) rc = dv_loader_open(&ld, &lo, ctx->comm);
    int have_ckpt = 0; /* a checkpoint at s.step exists */
    if (rc == DV_OK && c->checkpoint.resume) {
        dv_ckpt_extra x = {0, 0};
        int64_t loaded = -1;
        dv_loader_hdf5_lock();
        rc = dv_ckpt_load_latest(ctx, &s, &x, c->derived.checkpoint_dir, &loaded);
        dv_loader_hdf5_unlock();
        if (rc == DV_OK && loaded >= 0) {
            have_ckpt = 1;
            rc = convert_position(ctx, c, ld, loaded, &x.loader_epoch, &x.loader_batch);
            if (rc == DV_OK) rc = dv_loader_seek(ld, x.loader_epoch, x.loader_batch);
            if (rc == DV_OK)
                dv_log(ctx, DV_LOG_INFO, "resumed from iteration %lld (data epoch %lld, batch "
                       "%lld)", (long long)loaded, (long long)x.loader_epoch,
                       (long long)x.loader_batch);
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
    int stop_signal = 0, stop_time = 0;
    dv_ssl_stats st;
    while (rc == DV_OK && s.step < total) {
        if (lim->max_steps >= 0 && s.step - start >= lim->max_steps) break;
        rc = agree_stop(ctx, lim->max_minutes > 0 && (dv_now() - t_run) / 60.0 >= lim->max_minutes,
                        &stop_signal, &stop_time);
        if (rc != DV_OK || stop_signal || stop_time) break;
        dv_batch *b = NULL;
        rc = dv_loader_next(ld, &b);
        if (rc != DV_OK) break;
        rc = dv_ssl_step(&s, b, &st);
        if (rc != DV_OK) break;
        const int64_t it = s.step; /* iterations completed */
        if (st.skipped)
            dv_log(ctx, DV_LOG_WARN, "iteration %lld skipped: inf/NaN gradients at loss scale %g "
                   "(dynamic loss scaling; the scale is now %g)", (long long)it - 1, st.loss_scale,
                   s.scaler.scale);
        if (it % c->log.period == 0 || it == total) {
            const double now = dv_now(), dt = now - t_log;
            const double ips = (double)(it - it_log) * (double)c->derived.global_batch / dt;
            const double gflops = (double)(it - it_log) * flops * ctx->world / dt * 1e-9;
            char eta[32], ih[32] = "";
            fmt_eta(eta, sizeof eta, (double)(total - it) * dt / (double)(it - it_log));
            if (s.separate) snprintf(ih, sizeof ih, " ih %.3g", st.grad_norm[DV_MOD_IBOT_HEAD]);
            dv_log(ctx, DV_LOG_INFO,
                   "it %lld/%lld | dino_local %.4f dino_global %.4f koleo %.4f ibot %.4f total %.4f"
                   " | lr %.3g wd %.3g mom %.5f tt %.4f | gnorm bb %.3g dh %.3g%s | %.1f img/s "
                   "%.1f GFLOP/s | eta %s",
                   (long long)it, (long long)total, st.dino_local, st.dino_global, st.koleo,
                   st.ibot, st.total, st.lr, st.wd, st.momentum, st.teacher_temp,
                   st.grad_norm[DV_MOD_BACKBONE], st.grad_norm[DV_MOD_DINO_HEAD],
                   ih, ips, gflops, eta);
            if (metrics) {
                fprintf(metrics,
                        "{\"iteration\": %lld, \"dino_local_crops_loss\": %.8g, "
                        "\"dino_global_crops_loss\": %.8g, \"koleo_loss\": %.8g, \"ibot_loss\": "
                        "%.8g, \"total_loss\": %.8g, \"lr\": %.8g, \"last_layer_lr\": %.8g, \"wd\": "
                        "%.8g, \"mom\": %.8g, \"teacher_temp\": %.8g, \"grad_norm_backbone\": %.6g, "
                        "\"grad_norm_dino_head\": %.6g, \"grad_norm_ibot_head\": %.6g, "
                        "\"n_masked\": %lld, \"images_per_s\": %.4g, \"gflops\": %.4g, "
                        "\"elapsed_s\": %.3f, \"loss_scale\": %g}\n",
                        (long long)it, st.dino_local, st.dino_global, st.koleo, st.ibot, st.total,
                        st.lr, st.last_layer_lr, st.wd, st.momentum, st.teacher_temp,
                        st.grad_norm[0], st.grad_norm[1], st.grad_norm[2], (long long)st.n_masked,
                        ips, gflops, now - t_run, st.loss_scale);
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
            have_ckpt = rc == DV_OK;
        }
    }
    /* the end of the run, of its budget or a preemption (which promises a checkpoint even
     * before the first iteration of a fresh run) */
    if (rc == DV_OK && (s.step != last_saved || (stop_signal && !have_ckpt))) {
        dv_ckpt_extra x;
        dv_loader_position(ld, &x.loader_epoch, &x.loader_batch);
        rc = save_(ctx, &s, &x, c);
    }
    if (rc == DV_OK && stop_signal) {
        dv_log(ctx, DV_LOG_INFO, "preempted by %s at iteration %lld: checkpoint written, exit %d "
               "= requeue me", signal_name(stop_signal), (long long)s.step, EXIT_REQUEUE);
        rc = DV_ERR_INTERRUPTED;
    } else if (rc == DV_OK)
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
    if (dv_ctx_init(&ctx, &argc, &argv, "dinov2-pretrain") != DV_OK) return EXIT_FAILED;
    /* after MPI_Init: the MPI library installs handlers of its own there */
    int rc = install_stop_handlers();
    dv_config *c = malloc(sizeof *c);
    dv_cli cli;
    run_limits lim = {-1, 0.0};
    if (rc == DV_OK) rc = c ? parse_config(&ctx, c, argc, argv, &cli, &lim) : DV_ERR_NOMEM;
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
         * collective forever otherwise (a preemption stops every rank together) */
        if (rc != DV_OK && rc != DV_ERR_INTERRUPTED && ctx.world > 1)
            dv_ctx_abort(&ctx, EXIT_FAILED);
    } else if (rc == DV_OK) {
        rc = DV_ERR_CONFIG; /* another rank failed setup and said why */
    }
    free(c);
    dv_ctx_finish(&ctx);
    return rc == DV_OK ? EXIT_DONE : rc == DV_ERR_INTERRUPTED ? EXIT_REQUEUE : EXIT_FAILED;
}
