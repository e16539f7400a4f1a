/* err — status codes and the error-check macros, one per API family.
 *
 * Convention: every library function returns int (DV_OK = 0, else a dv_status) and passes
 * errors upward; only a program's main() exits. The check macros print one line to stderr,
 *   error: [rank R@host] file.c:123: MPI_Allreduce(...) failed: <library's message>
 * and `return` the matching status from the enclosing function. Families that need their
 * own headers have their macros beside them: DV_CHECK_H5 in io/h5util.h, DV_CHECK_CUDA,
 * DV_CHECK_CUBLAS, DV_CHECK_NCCL in gpu/gpu_check.h. User-facing errors (bad config key,
 * corrupt file) use dv_user_error: one line without source location.
 *
 * No global state: rank and host are looked up when an error is printed.
 */
#ifndef DV_ERR_H
#define DV_ERR_H

#include <errno.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    DV_OK = 0,
    DV_ERR_ARG,         /* bad argument, shape or usage */
    DV_ERR_NOMEM,       /* allocation failed */
    DV_ERR_IO,          /* stdio / POSIX file error */
    DV_ERR_FORMAT,      /* file content is not what it should be */
    DV_ERR_CONFIG,      /* bad configuration key or value */
    DV_ERR_MPI,
    DV_ERR_HDF5,
    DV_ERR_CUDA,
    DV_ERR_CUBLAS,
    DV_ERR_NCCL,
    DV_ERR_YAML,
    DV_ERR_NUMERIC,     /* NaN/inf where none may be */
    DV_ERR_UNSUPPORTED, /* not built in / not available here */
    DV_ERR_INTERRUPTED, /* stopped by a signal after checkpointing */
    DV_ERR_COUNT_
} dv_status;

const char *dv_status_str(int status);

/* Print "error: [rank R@host] file:line: <msg>" to stderr. Returns nothing; the macros below
 * return the status. Rank is shown when MPI is initialised. */
void dv_report(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Print "error: <msg>" (plus "[rank R]" when more than one rank runs) to stderr. */
void dv_user_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void dv_user_warning(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Report and evaluate to `code`, for `return DV_ERR(DV_ERR_ARG, "bad dim %d", d);` */
#define DV_ERR(code, ...) (dv_report(__FILE__, __LINE__, __VA_ARGS__), (code))

/* Propagate a non-OK status from a dv_* call. */
#define DV_TRY(expr)                                                                               \
    do {                                                                                           \
        int dv_try_s_ = (expr);                                                                    \
        if (dv_try_s_ != DV_OK) return dv_try_s_;                                                  \
    } while (0)

/* malloc family: `DV_CHECK_ALLOC(p = malloc(n));` */
#define DV_CHECK_ALLOC(expr)                                                                       \
    do {                                                                                           \
        if ((expr) == NULL) return DV_ERR(DV_ERR_NOMEM, "out of memory: %s", #expr);              \
    } while (0)

/* stdio / POSIX family: cond is the success condition; `what` names the file. */
#define DV_CHECK_IO(cond, what)                                                                    \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            int dv_errno_ = errno;                                                                 \
            return DV_ERR(DV_ERR_IO, "%s: %s (%s)", (what), dv_strerror_(dv_errno_), #cond);       \
        }                                                                                          \
    } while (0)

/* MPI family. Needs <mpi.h> in the including file. */
#define DV_CHECK_MPI(call)                                                                         \
    do {                                                                                           \
        int dv_mpi_rc_ = (call);                                                                   \
        if (dv_mpi_rc_ != 0 /* MPI_SUCCESS */) {                                                   \
            dv_report_mpi_(__FILE__, __LINE__, #call, dv_mpi_rc_);                                 \
            return DV_ERR_MPI;                                                                     \
        }                                                                                          \
    } while (0)

/* libyaml family: its calls return 1 on success, 0 on failure. */
#define DV_CHECK_YAML(call)                                                                        \
    do {                                                                                           \
        if (!(call)) return DV_ERR(DV_ERR_YAML, "%s failed", #call);                               \
    } while (0)

const char *dv_strerror_(int errnum);
void dv_report_mpi_(const char *file, int line, const char *call, int rc);

#ifdef __cplusplus
}
#endif
#endif
