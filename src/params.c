/* params — see params.h. */
#include "params.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

void dv_params_init(dv_param_table *tab, int num_layers) {
    memset(tab, 0, sizeof *tab);
    tab->num_layers = num_layers;
}

void dv_params_free(dv_param_table *tab) {
    free(tab->t);
    memset(tab, 0, sizeof *tab);
}

static int ends_with_(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

unsigned dv_param_official_flags(const char *name) {
    unsigned f = 0;
    if (ends_with_(name, ".bias") || strstr(name, "norm") || strstr(name, "gamma"))
        f |= DV_PARAM_NO_WD;
    if (strstr(name, "patch_embed")) f |= DV_PARAM_PATCH_EMBED;
    if (strstr(name, "last_layer")) f |= DV_PARAM_LAST_LAYER;
    return f;
}

/* get_vit_lr_decay_rate's layer_id, for names without the "backbone." prefix (the official
 * code calls it per student submodule with force_is_backbone = n_blocks > 0). */
int dv_param_official_layer_id(const char *name, int num_layers, int is_backbone) {
    if (!is_backbone) return num_layers + 1;
    if (strstr(name, "pos_embed") || strstr(name, "patch_embed") || strstr(name, "mask_token") ||
        strstr(name, "cls_token"))
        return 0;
    const char *b = strstr(name, "blocks.");
    if (b && !strstr(name, "residual.")) {
        /* blocks.{i}.… (block_chunks = 0) or blocks.{chunk}.{i}.… (chunked): the LAST integer
         * component right after "blocks." chains is the global block index */
        const char *p = b + 7;
        long idx = -1;
        while (*p >= '0' && *p <= '9') {
            char *end;
            idx = strtol(p, &end, 10);
            if (*end != '.') break;
            p = end + 1;
        }
        if (idx >= 0) return (int)idx + 1;
    }
    return num_layers + 1;
}

int dv_params_find(const dv_param_table *tab, const char *name) {
    for (int i = 0; i < tab->n; i++)
        if (strcmp(tab->t[i].name, name) == 0) return i;
    return -1;
}

int dv_params_add(dv_param_table *tab, const char *name, int ndim, const int64_t *shape,
                  int layer_id, unsigned flags, int *index) {
    if (strlen(name) >= DV_PARAM_NAME_MAX)
        return DV_ERR(DV_ERR_ARG, "parameter name too long: %s", name);
    if (ndim < 1 || ndim > DV_PARAM_MAX_DIMS)
        return DV_ERR(DV_ERR_ARG, "parameter %s: ndim %d outside 1..%d", name, ndim,
                      DV_PARAM_MAX_DIMS);
    if (dv_params_find(tab, name) >= 0)
        return DV_ERR(DV_ERR_ARG, "duplicate parameter name %s", name);
    size_t numel = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0) return DV_ERR(DV_ERR_ARG, "parameter %s: negative dimension", name);
        numel *= (size_t)shape[d];
    }
    if (tab->n == tab->cap) {
        int cap = tab->cap ? 2 * tab->cap : 64;
        dv_param *t = realloc(tab->t, (size_t)cap * sizeof *t);
        DV_CHECK_ALLOC(t);
        tab->t = t;
        tab->cap = cap;
    }
    dv_param *p = &tab->t[tab->n];
    memset(p, 0, sizeof *p);
    strcpy(p->name, name);
    p->ndim = ndim;
    for (int d = 0; d < ndim; d++) p->shape[d] = shape[d];
    p->offset = tab->numel;
    p->numel = numel;
    p->layer_id = layer_id >= 0
                      ? layer_id
                      : dv_param_official_layer_id(name, tab->num_layers, tab->num_layers > 0);
    p->flags = flags | dv_param_official_flags(name);
    if (index) *index = tab->n;
    tab->n++;
    tab->numel += numel;
    return DV_OK;
}

double dv_param_wd_mult(const dv_param *p) { return (p->flags & DV_PARAM_NO_WD) ? 0.0 : 1.0; }

double dv_param_lr_mult(const dv_param *p, int num_layers, double layerwise_decay,
                        double patch_embed_lr_mult) {
    double m = pow(layerwise_decay, (double)(num_layers + 1 - p->layer_id));
    if (p->flags & DV_PARAM_PATCH_EMBED) m *= patch_embed_lr_mult;
    return m;
}

char *dv_param_shape_str(const int64_t *shape, int ndim, char *buf, size_t len) {
    size_t k = 0;
    if (len == 0) return buf;
    buf[0] = '\0';
    k += (size_t)snprintf(buf + k, len - k, "(");
    for (int d = 0; d < ndim && k < len; d++)
        k += (size_t)snprintf(buf + k, len - k, d ? ",%lld" : "%lld", (long long)shape[d]);
    if (k < len) snprintf(buf + k, len - k, ")");
    return buf;
}
