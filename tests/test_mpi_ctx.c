/* The run context on several ranks: rank/world/local rank, rank-0-only logging, and an MPI
 * failure reported on the failing rank and returned (not aborted). Usage: test_mpi_ctx NP */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#include "ctx.h"
#include "err.h"
#include "tap.h"

static int bad_send(int world) {
    int x = 0;
    DV_CHECK_MPI(MPI_Send(&x, 1, MPI_INT, world, 0, MPI_COMM_WORLD)); /* rank == world: invalid */
    return DV_OK;
}

int main(int argc, char **argv) {
    dv_ctx ctx;
    if (dv_ctx_init(&ctx, &argc, &argv, "test_mpi_ctx") != DV_OK) return 1;
    int want = argc > 1 ? atoi(argv[1]) : 1;
    if (ctx.rank == 0) tap_plan(5);

    int *ranks = calloc((size_t)ctx.world, sizeof *ranks);
    MPI_Allgather(&ctx.rank, 1, MPI_INT, ranks, 1, MPI_INT, ctx.comm);
    int distinct = 1;
    for (int i = 0; i < ctx.world; i++) distinct &= ranks[i] == i;
    int local_ok = ctx.local_rank >= 0 && ctx.local_rank < ctx.local_world && ctx.local_world <= ctx.world;
    int all_local_ok = 0;
    MPI_Allreduce(&local_ok, &all_local_ok, 1, MPI_INT, MPI_MIN, ctx.comm);

    /* stderr of the failing call goes to /dev/null here; test_err checks the text */
    fflush(stderr);
    int saved = dup(2), devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, 2);
    int rc = bad_send(ctx.world);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    close(devnull);
    int all_failed = 0, mine = rc == DV_ERR_MPI;
    MPI_Allreduce(&mine, &all_failed, 1, MPI_INT, MPI_MIN, ctx.comm);

    /* only rank 0 prints log lines: count them through a pipe-free check of the policy */
    int printed = 0;
    if (ctx.rank != 0) {
        FILE *sink = tmpfile();
        ctx.log_out = sink;
        dv_log(&ctx, DV_LOG_INFO, "should not appear");
        printed = (int)ftell(sink);
        fclose(sink);
        ctx.log_out = stdout;
    }
    int any_printed = 0;
    MPI_Allreduce(&printed, &any_printed, 1, MPI_INT, MPI_MAX, ctx.comm);

    if (ctx.rank == 0) {
        tap_ok(ctx.world == want, "world size %d (expected %d)", ctx.world, want);
        tap_ok(distinct, "ranks are 0..world-1");
        tap_ok(all_local_ok, "local ranks are consistent");
        tap_ok(all_failed, "an invalid MPI call returns DV_ERR_MPI on every rank without aborting");
        tap_ok(any_printed == 0, "info logging is silent on ranks other than 0");
    }
    free(ranks);
    int st = ctx.rank == 0 ? tap_exit() : 0;
    MPI_Bcast(&st, 1, MPI_INT, 0, ctx.comm);
    dv_ctx_finish(&ctx);
    return st;
}
