/* ctx — see ctx.h. */
#include "ctx.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "timer.h"

int dv_log_level_parse(const char *text, dv_log_level *out) {
    static const char *const names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++)
        if (strcasecmp(text, names[i]) == 0) {
            *out = (dv_log_level)i;
            return DV_OK;
        }
    return DV_ERR_ARG;
}

int dv_ctx_from_comm(dv_ctx *ctx, MPI_Comm comm, const char *program) {
    memset(ctx, 0, sizeof *ctx);
    ctx->program = program;
    ctx->comm = comm;
    ctx->log_out = stdout;
    ctx->log_level = DV_LOG_INFO;
    ctx->t_start = dv_now();
    DV_CHECK_MPI(MPI_Comm_rank(comm, &ctx->rank));
    DV_CHECK_MPI(MPI_Comm_size(comm, &ctx->world));
    MPI_Comm node;
    DV_CHECK_MPI(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, ctx->rank, MPI_INFO_NULL, &node));
    DV_CHECK_MPI(MPI_Comm_rank(node, &ctx->local_rank));
    DV_CHECK_MPI(MPI_Comm_size(node, &ctx->local_world));
    DV_CHECK_MPI(MPI_Comm_free(&node));
    if (gethostname(ctx->host, sizeof ctx->host - 1) != 0) strcpy(ctx->host, "?");
    const char *lvl = getenv("DV_LOG_LEVEL");
    if (lvl && dv_log_level_parse(lvl, &ctx->log_level) != DV_OK)
        dv_user_warning("DV_LOG_LEVEL=%s is not one of debug, info, warn, error; using info", lvl);
    return DV_OK;
}

int dv_ctx_init(dv_ctx *ctx, int *argc, char ***argv, const char *program) {
    int init = 0, provided = 0, owns = 0;
    DV_CHECK_MPI(MPI_Initialized(&init));
    if (!init) {
        DV_CHECK_MPI(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided));
        owns = 1;
    }
    /* errors come back as return codes, so they are reported where they happen */
    DV_CHECK_MPI(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    DV_TRY(dv_ctx_from_comm(ctx, MPI_COMM_WORLD, program));
    ctx->owns_mpi = owns;
    return DV_OK;
}

int dv_ctx_finish(dv_ctx *ctx) {
    if (ctx->log_out) fflush(ctx->log_out);
    if (ctx->owns_mpi) {
        ctx->owns_mpi = 0;
        DV_CHECK_MPI(MPI_Finalize());
    }
    return DV_OK;
}

void dv_ctx_abort(dv_ctx *ctx, int code) {
    fflush(stdout);
    fflush(stderr);
    MPI_Abort(ctx->comm, code);
}

static void vlog_(const dv_ctx *ctx, FILE *out, const char *fmt, va_list ap) {
    char stamp[32], msg[4096];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S", &tm);
    vsnprintf(msg, sizeof msg, fmt, ap);
    double el = dv_now() - ctx->t_start;
    if (ctx->world > 1)
        fprintf(out, "[%s +%.1fs r%d] %s\n", stamp, el, ctx->rank, msg);
    else
        fprintf(out, "[%s +%.1fs] %s\n", stamp, el, msg);
    fflush(out);
}

void dv_log(const dv_ctx *ctx, dv_log_level level, const char *fmt, ...) {
    if (level < ctx->log_level) return;
    if (level < DV_LOG_ERROR && ctx->rank != 0) return;
    va_list ap;
    va_start(ap, fmt);
    vlog_(ctx, level >= DV_LOG_WARN ? stderr : (ctx->log_out ? ctx->log_out : stdout), fmt, ap);
    va_end(ap);
}

void dv_log_all(const dv_ctx *ctx, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vlog_(ctx, ctx->log_out ? ctx->log_out : stdout, fmt, ap);
    va_end(ap);
}
