/* timer — see timer.h. */
#include <time.h>

#include "timer.h"

double dv_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void dv_timer_reset(dv_timer *t) {
    t->started = -1.0;
    t->total = 0.0;
    t->count = 0;
}

void dv_timer_start(dv_timer *t) { t->started = dv_now(); }

double dv_timer_stop(dv_timer *t) {
    if (t->started < 0) return 0.0;
    double dt = dv_now() - t->started;
    t->total += dt;
    t->count++;
    t->started = -1.0;
    return dt;
}
