/* err — error reporting; see err.h. */
#include "err.h"

#include <mpi.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const char *const status_names[DV_ERR_COUNT_] = {
    [DV_OK] = "ok",
    [DV_ERR_ARG] = "invalid argument",
    [DV_ERR_NOMEM] = "out of memory",
    [DV_ERR_IO] = "I/O error",
    [DV_ERR_FORMAT] = "bad file format",
    [DV_ERR_CONFIG] = "configuration error",
    [DV_ERR_MPI] = "MPI error",
    [DV_ERR_HDF5] = "HDF5 error",
    [DV_ERR_CUDA] = "CUDA error",
    [DV_ERR_CUBLAS] = "cuBLAS error",
    [DV_ERR_NCCL] = "NCCL error",
    [DV_ERR_YAML] = "YAML error",
    [DV_ERR_NUMERIC] = "non-finite value",
    [DV_ERR_UNSUPPORTED] = "not supported",
    [DV_ERR_INTERRUPTED] = "interrupted",
};

const char *dv_status_str(int status) {
    if (status < 0 || status >= DV_ERR_COUNT_) return "unknown error";
    return status_names[status];
}

const char *dv_strerror_(int errnum) { return strerror(errnum); }

/* Rank and world size when MPI is up; -1 otherwise. Queried at print time: no globals. */
static void who_(int *rank, int *world) {
    int init = 0, fin = 0;
    *rank = -1;
    *world = 1;
    if (MPI_Initialized(&init) != MPI_SUCCESS || !init) return;
    if (MPI_Finalized(&fin) != MPI_SUCCESS || fin) return;
    int main_thread = 0; /* MPI_THREAD_FUNNELED: loader workers must not call MPI */
    if (MPI_Is_thread_main(&main_thread) != MPI_SUCCESS || !main_thread) return;
    MPI_Comm_rank(MPI_COMM_WORLD, rank);
    MPI_Comm_size(MPI_COMM_WORLD, world);
}

static void vreport_(const char *kind, const char *file, int line, const char *fmt, va_list ap) {
    char host[256] = "?";
    char msg[2048];
    int rank, world;
    who_(&rank, &world);
    gethostname(host, sizeof host - 1);
    vsnprintf(msg, sizeof msg, fmt, ap);
    /* one fprintf call so lines of different ranks do not interleave mid-line */
    if (file)
        fprintf(stderr, "%s: [rank %d@%s] %s:%d: %s\n", kind, rank < 0 ? 0 : rank, host, file,
                line, msg);
    else if (world > 1)
        fprintf(stderr, "%s: [rank %d] %s\n", kind, rank, msg);
    else
        fprintf(stderr, "%s: %s\n", kind, msg);
    fflush(stderr);
}

void dv_report(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vreport_("error", file, line, fmt, ap);
    va_end(ap);
}

void dv_user_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vreport_("error", NULL, 0, fmt, ap);
    va_end(ap);
}

void dv_user_warning(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vreport_("warning", NULL, 0, fmt, ap);
    va_end(ap);
}

void dv_report_mpi_(const char *file, int line, const char *call, int rc) {
    char text[MPI_MAX_ERROR_STRING] = "unknown MPI error";
    int len = 0;
    if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) snprintf(text, sizeof text, "code %d", rc);
    dv_report(file, line, "%s failed: %s", call, text);
}
