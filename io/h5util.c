/* h5util — see h5util.h. */
#include "h5util.h"

#include <stdio.h>
#include <string.h>

int dv_h5_quiet(void) {
    DV_CHECK_H5(H5Eset_auto2(H5E_DEFAULT, NULL, NULL));
    return DV_OK;
}

typedef struct {
    char text[512];
} walk_state;

/* Walking downward, the last entry visited is the innermost cause. */
static herr_t walk_(unsigned n, const H5E_error2_t *e, void *data) {
    walk_state *w = data;
    (void)n;
    snprintf(w->text, sizeof w->text, "%s (in %s)", e->desc ? e->desc : "?",
             e->func_name ? e->func_name : "?");
    return 0;
}

void dv_h5_report_(const char *file, int line, const char *call) {
    walk_state w;
    strcpy(w.text, "no HDF5 error message");
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, walk_, &w);
    H5Eclear2(H5E_DEFAULT);
    dv_report(file, line, "%s failed: %s", call, w.text);
}
