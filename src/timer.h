/* timer — wall-clock timing (CLOCK_MONOTONIC), for logs and benchmarks.
 *   double t0 = dv_now();  ...  double secs = dv_now() - t0;
 *   dv_timer t = {0}; dv_timer_start(&t); ... dv_timer_stop(&t);  // t.total, t.count accumulate
 */
#ifndef DV_TIMER_H
#define DV_TIMER_H

#include <stdint.h>

double dv_now(void); /* seconds, monotonic */

typedef struct {
    double started; /* < 0 when not running */
    double total;   /* seconds accumulated over start/stop pairs */
    int64_t count;  /* number of stops */
} dv_timer;

void dv_timer_reset(dv_timer *t);
void dv_timer_start(dv_timer *t);
double dv_timer_stop(dv_timer *t); /* returns this interval's seconds */

#endif
