/* grad_scaler — see grad_scaler.h. */
#include "grad_scaler.h"

#include <math.h>

void dv_grad_scaler_init(dv_grad_scaler *g, int enabled) {
    g->enabled = enabled != 0;
    g->scale = enabled ? 65536.0 : 1.0;
    g->growth_tracker = 0;
    g->growth_factor = 2.0;
    g->backoff_factor = 0.5;
    g->growth_interval = 2000;
    g->skipped = 0;
}

int dv_grad_scaler_update(dv_grad_scaler *g, int found_inf) {
    if (!g->enabled) return 0;
    if (found_inf) {
        g->scale *= g->backoff_factor;
        g->growth_tracker = 0;
        g->skipped++;
        return 1;
    }
    if (g->growth_tracker + 1 == g->growth_interval) {
        g->growth_tracker = 0;
        const double s = g->scale * g->growth_factor;
        if (isfinite(s)) {
            g->scale = s;
            return 1;
        }
        return 0;
    }
    g->growth_tracker++;
    return 0;
}
