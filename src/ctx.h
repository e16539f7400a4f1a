/* ctx — the run context passed explicitly to everything (no hidden globals): MPI rank and
 * world, host, logging policy, start time. Programs create one in main():
 *
 *   dv_ctx ctx;
 *   if (dv_ctx_init(&ctx, &argc, &argv, "dinov2-pretrain") != DV_OK) return 1;
 *   dv_log(&ctx, DV_LOG_INFO, "ranks %d", ctx.world);
 *   ...
 *   dv_ctx_finish(&ctx);
 *
 * Logging: INFO/DEBUG/WARN lines print on rank 0 only; ERROR lines print on every rank;
 * dv_log_all prints on every rank. Each line starts with a timestamp and, with more than one
 * rank, the rank: "[2026-11-25 00:10:02 +12.3s r0] message".
 */
#ifndef DV_CTX_H
#define DV_CTX_H

#include <mpi.h>
#include <stdio.h>

typedef enum { DV_LOG_DEBUG = 0, DV_LOG_INFO = 1, DV_LOG_WARN = 2, DV_LOG_ERROR = 3 } dv_log_level;

typedef struct {
    const char *program;  /* e.g. "dinov2-pretrain" */
    MPI_Comm comm;        /* the job's communicator (MPI_COMM_WORLD) */
    int rank, world;
    int local_rank, local_world; /* within the node: device choice on GPUs */
    char host[256];
    dv_log_level log_level;
    FILE *log_out;        /* stdout by default */
    double t_start;       /* dv_now() at init */
    int owns_mpi;         /* MPI was initialised by dv_ctx_init */
} dv_ctx;

/* Initialise MPI (thread level FUNNELED: only the main thread calls MPI) unless it already
 * is, and fill the context. Reads DV_LOG_LEVEL=debug|info|warn|error from the environment. */
int dv_ctx_init(dv_ctx *ctx, int *argc, char ***argv, const char *program);
/* Fill a context for an already-initialised communicator (tests, sub-communicators). */
int dv_ctx_from_comm(dv_ctx *ctx, MPI_Comm comm, const char *program);
/* Finalise MPI if dv_ctx_init started it. */
int dv_ctx_finish(dv_ctx *ctx);
/* Bring every rank down after a fatal error on one (no hang): MPI_Abort with the code. */
void dv_ctx_abort(dv_ctx *ctx, int code);

int dv_log_level_parse(const char *text, dv_log_level *out);

void dv_log(const dv_ctx *ctx, dv_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void dv_log_all(const dv_ctx *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
