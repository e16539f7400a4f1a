/* Error-check macros (one per family), rank-aware logging and timers. Each macro must print
 * exactly one line naming file, line, rank and host, and return its status upward. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

#include "ctx.h"
#include "err.h"
#include "h5util.h"
#include "tap.h"
#include "timer.h"

/* Run fn with stderr (or stdout) captured into buf. */
typedef int (*call_fn)(void *);
static int capture(int fd, call_fn fn, void *arg, char *buf, size_t len) {
    fflush(fd == 2 ? stderr : stdout);
    FILE *tmp = tmpfile();
    int saved = dup(fd);
    dup2(fileno(tmp), fd);
    int rc = fn(arg);
    fflush(fd == 2 ? stderr : stdout);
    dup2(saved, fd);
    close(saved);
    rewind(tmp);
    size_t n = fread(buf, 1, len - 1, tmp);
    buf[n] = 0;
    fclose(tmp);
    return rc;
}

static int count_lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

static int f_io(void *arg) {
    (void)arg;
    const char *path = "/nonexistent-dir/dinov2c-test.txt";
    FILE *f = fopen(path, "rb");
    DV_CHECK_IO(f != NULL, path);
    fclose(f);
    return DV_OK;
}

static int f_alloc(void *arg) {
    (void)arg;
    void *p;
    DV_CHECK_ALLOC(p = NULL); /* simulate a failed malloc */
    return DV_OK;
}

static int f_mpi(void *arg) {
    int world = *(int *)arg, x = 1;
    DV_CHECK_MPI(MPI_Send(&x, 1, MPI_INT, world + 5, 0, MPI_COMM_WORLD)); /* invalid rank */
    return DV_OK;
}

static int f_h5(void *arg) {
    (void)arg;
    hid_t f;
    DV_CHECK_H5(f = H5Fopen("/nonexistent-dir/x.h5", H5F_ACC_RDONLY, H5P_DEFAULT));
    H5Fclose(f);
    return DV_OK;
}

static int f_yaml(void *arg) {
    (void)arg;
    yaml_parser_t parser;
    yaml_event_t ev;
    DV_CHECK_YAML(yaml_parser_initialize(&parser));
    const unsigned char bad[] = "a: [1, 2\n";
    yaml_parser_set_input_string(&parser, bad, sizeof bad - 1);
    int st = DV_OK;
    for (;;) {
        if (!yaml_parser_parse(&parser, &ev)) {
            st = DV_ERR(DV_ERR_YAML, "yaml_parser_parse failed: %s", parser.problem);
            break;
        }
        int end = ev.type == YAML_STREAM_END_EVENT;
        yaml_event_delete(&ev);
        if (end) break;
    }
    yaml_parser_delete(&parser);
    return st;
}

static int try_inner(int code) { return code ? DV_ERR(code, "inner failed with %d", code) : DV_OK; }
static int f_try(void *arg) {
    DV_TRY(try_inner(*(int *)arg));
    return 12345;
}

static int f_log(void *arg) {
    dv_ctx *ctx = arg;
    dv_log(ctx, DV_LOG_INFO, "hello %d", 7);
    dv_log(ctx, DV_LOG_DEBUG, "hidden debug line");
    return DV_OK;
}

static int f_user(void *arg) {
    (void)arg;
    dv_user_error("conf.yaml: unknown key '%s'", "optim.lrr");
    return DV_OK;
}

int main(int argc, char **argv) {
    dv_ctx ctx;
    if (dv_ctx_init(&ctx, &argc, &argv, "test_err") != DV_OK) return 1;
    dv_h5_quiet();
    char buf[8192], host[256] = "";
    gethostname(host, sizeof host - 1);
    char tag[300];
    snprintf(tag, sizeof tag, "[rank 0@%s]", host);
    tap_no_plan();

    tap_ok(strcmp(dv_status_str(DV_OK), "ok") == 0, "dv_status_str(DV_OK)");
    tap_ok(strcmp(dv_status_str(DV_ERR_HDF5), "HDF5 error") == 0, "dv_status_str(DV_ERR_HDF5)");
    tap_ok(strcmp(dv_status_str(999), "unknown error") == 0, "dv_status_str of an unknown code");

    struct {
        const char *name;
        call_fn fn;
        void *arg;
        int want;
        const char *needle;
    } cases[] = {
        {"stdio", f_io, NULL, DV_ERR_IO, "/nonexistent-dir/dinov2c-test.txt: No such file"},
        {"malloc", f_alloc, NULL, DV_ERR_NOMEM, "out of memory"},
        {"MPI", f_mpi, &ctx.world, DV_ERR_MPI, "MPI_Send(&x, 1, MPI_INT, world + 5"},
        {"HDF5", f_h5, NULL, DV_ERR_HDF5, "H5Fopen"},
        {"libyaml", f_yaml, NULL, DV_ERR_YAML, "did not find expected"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = capture(2, cases[i].fn, cases[i].arg, buf, sizeof buf);
        tap_ok(rc == cases[i].want, "%s check returns %s (got %d)", cases[i].name,
               dv_status_str(cases[i].want), rc);
        int ok = count_lines(buf) == 1 && strstr(buf, "error: ") == buf && strstr(buf, tag) &&
                 strstr(buf, "test_err.c:") && strstr(buf, cases[i].needle);
        if (!ok) tap_diag("stderr was: %s", buf);
        tap_ok(ok, "%s check prints one line with rank, host, file:line and the cause", cases[i].name);
    }

    int code = DV_ERR_FORMAT;
    tap_ok(capture(2, f_try, &code, buf, sizeof buf) == DV_ERR_FORMAT, "DV_TRY propagates a failure");
    code = DV_OK;
    tap_ok(capture(2, f_try, &code, buf, sizeof buf) == 12345, "DV_TRY continues on success");

    capture(2, f_user, NULL, buf, sizeof buf);
    tap_ok(strcmp(buf, "error: conf.yaml: unknown key 'optim.lrr'\n") == 0,
           "user errors are one plain line on a single rank: %s", buf);

    capture(1, f_log, &ctx, buf, sizeof buf);
    tap_ok(count_lines(buf) == 1 && buf[0] == '[' && strstr(buf, "] hello 7\n"),
           "log lines carry a timestamp; debug is filtered at info level");
    ctx.log_level = DV_LOG_DEBUG;
    capture(1, f_log, &ctx, buf, sizeof buf);
    tap_ok(count_lines(buf) == 2, "debug level shows the debug line");
    dv_log_level lv;
    tap_ok(dv_log_level_parse("WARN", &lv) == DV_OK && lv == DV_LOG_WARN, "log level parse");
    tap_ok(dv_log_level_parse("loud", &lv) == DV_ERR_ARG, "bad log level rejected");

    double t0 = dv_now();
    dv_timer t;
    dv_timer_reset(&t);
    dv_timer_start(&t);
    usleep(20000);
    double dt = dv_timer_stop(&t);
    dv_timer_start(&t);
    usleep(10000);
    dv_timer_stop(&t);
    tap_ok(dt >= 0.019 && dt < 1.0, "timer measures a 20 ms sleep (%.4f s)", dt);
    tap_ok(t.count == 2 && t.total >= 0.029 && dv_now() - t0 >= t.total, "timer accumulates");

    int rc = tap_exit();
    dv_ctx_finish(&ctx);
    return rc;
}
