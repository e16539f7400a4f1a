/* tap — a tiny TAP (Test Anything Protocol) producer for the C unit tests.
 *
 *   tap_plan(3);                        // or tap_no_plan() and tap_done() at the end
 *   tap_ok(x == 1, "x is one");
 *   tap_close(err, 0.0, 1e-6, "err");   // |a - b| <= tol
 *   tap_skip(1, "needs a GPU");
 *   return tap_exit();                  // 0 when every test passed, 1 otherwise
 *
 * Diagnostics go to stdout as "# ..." lines (tap_diag), which automake's TAP driver keeps in
 * the .log file. Header-only with static functions and one static state struct per test
 * program; a test program is a single translation unit.
 */
#ifndef DV_TAP_H
#define DV_TAP_H

#include <math.h>
#include <stdarg.h>
#include <stdio.h>

typedef struct {
    int planned, run, failed;
} tap_state;

static tap_state tap_st_;

static __attribute__((unused)) void tap_plan(int n) {
    tap_st_.planned = n;
    printf("1..%d\n", n);
    fflush(stdout);
}
static __attribute__((unused)) void tap_no_plan(void) { tap_st_.planned = -1; }

static void tap_diag(const char *fmt, ...) __attribute__((format(printf, 1, 2), unused));
static void tap_diag(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("# ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
}

static int tap_ok(int cond, const char *fmt, ...) __attribute__((format(printf, 2, 3), unused));
static int tap_ok(int cond, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    tap_st_.run++;
    if (!cond) tap_st_.failed++;
    printf("%s %d - ", cond ? "ok" : "not ok", tap_st_.run);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
    return cond;
}

/* |got - want| <= tol; prints both values on failure. NaN never passes. */
static int tap_close(double got, double want, double tol, const char *what) __attribute__((unused));
static int tap_close(double got, double want, double tol, const char *what) {
    int ok = fabs(got - want) <= tol;
    tap_ok(ok, "%s: %.9g vs %.9g (tol %.3g)", what, got, want, tol);
    return ok;
}

static void tap_skip(int n, const char *why) __attribute__((unused));
static void tap_skip(int n, const char *why) {
    for (int i = 0; i < n; i++) {
        tap_st_.run++;
        printf("ok %d # SKIP %s\n", tap_st_.run, why);
    }
    fflush(stdout);
}

/* Whole program skipped (e.g. no GPU): prints the TAP skip plan; return its value from main. */
static int tap_skip_all(const char *why) __attribute__((unused));
static int tap_skip_all(const char *why) {
    printf("1..0 # SKIP %s\n", why);
    fflush(stdout);
    return 0;
}

static __attribute__((unused)) int tap_exit(void) {
    if (tap_st_.planned < 0) printf("1..%d\n", tap_st_.run);
    else if (tap_st_.planned != tap_st_.run) {
        printf("# planned %d tests but ran %d\n", tap_st_.planned, tap_st_.run);
        return 1;
    }
    fflush(stdout);
    return tap_st_.failed ? 1 : 0;
}

#endif
