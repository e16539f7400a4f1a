/* shard — see shard.h. */
#include "shard.h"

#include <stdlib.h>
#include <string.h>

#include "err.h"

static int unit_of_(const dv_param *t, const dv_param_table *tab, int is_backbone) {
    if (!is_backbone) return 0;
    return t->layer_id >= 1 && t->layer_id <= tab->num_layers ? t->layer_id : 0;
}

static int add_range_(dv_shard_plan *p, size_t lo, size_t hi, size_t loc) {
    if (lo >= hi) return DV_OK;
    dv_shard_range *r = realloc(p->range, (size_t)(p->nrange + 1) * sizeof *r);
    DV_CHECK_ALLOC(r);
    p->range = r;
    p->range[p->nrange++] = (dv_shard_range){lo, hi, loc};
    return DV_OK;
}

static int cmp_range_(const void *a, const void *b) {
    const dv_shard_range *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* Walk unit elements [e0, e1) as flat pieces: fn(flat_off, unit_off, n, arg). */
typedef void (*piece_fn_)(size_t flat, size_t uoff, size_t n, void *arg);
static void for_pieces_(const dv_shard_unit *u, size_t e0, size_t e1, piece_fn_ fn, void *arg) {
    size_t base = 0;
    for (int k = 0; k < u->nseg && e0 < e1; k++) {
        const dv_shard_seg *s = &u->seg[k];
        const size_t a = e0 > base ? e0 : base, b = e1 < base + s->len ? e1 : base + s->len;
        if (a < b) fn(s->off + (a - base), a, b - a, arg);
        base += s->len;
    }
}

int dv_shard_plan_init(dv_shard_plan *p, const dv_param_table *tab, int is_backbone, int rank,
                       int world) {
    memset(p, 0, sizeof *p);
    if (world < 1 || rank < 0 || rank >= world)
        return DV_ERR(DV_ERR_ARG, "shard plan: rank %d of %d", rank, world);
    p->rank = rank;
    p->world = world;
    p->numel = tab->numel;
    p->nunits = is_backbone ? tab->num_layers + 1 : 1;
    DV_CHECK_ALLOC(p->unit = calloc((size_t)p->nunits, sizeof *p->unit));
    for (int i = 0; i < tab->n; i++) {
        const dv_param *t = &tab->t[i];
        dv_shard_unit *u = &p->unit[unit_of_(t, tab, is_backbone)];
        dv_shard_seg *last = u->nseg ? &u->seg[u->nseg - 1] : NULL;
        if (last && last->off + last->len == t->offset) {
            last->len += t->numel;
        } else {
            if (u->nseg == DV_SHARD_MAX_SEGS) {
                dv_shard_plan_free(p);
                return DV_ERR(DV_ERR_ARG, "shard plan: %s splits its unit into more than %d pieces",
                              t->name, DV_SHARD_MAX_SEGS);
            }
            u->seg[u->nseg++] = (dv_shard_seg){t->offset, t->numel};
        }
        u->len += t->numel;
    }
    size_t local = 0;
    for (int k = 0; k < p->nunits; k++) {
        dv_shard_unit *u = &p->unit[k];
        u->S = (u->len + (size_t)world - 1) / (size_t)world;
        u->local0 = local;
        local += u->S;
        if (u->S > p->max_S) p->max_S = u->S;
        /* this rank's unit elements as flat ranges */
        const size_t e0 = (size_t)rank * u->S, e1 = e0 + u->S < u->len ? e0 + u->S : u->len;
        size_t base = 0;
        for (int s = 0; s < u->nseg && e0 < e1; s++) {
            const dv_shard_seg *g = &u->seg[s];
            const size_t a = e0 > base ? e0 : base, b = e1 < base + g->len ? e1 : base + g->len;
            if (a < b) {
                int rc = add_range_(p, g->off + (a - base), g->off + (b - base), u->local0 + (a - e0));
                if (rc != DV_OK) {
                    dv_shard_plan_free(p);
                    return rc;
                }
            }
            base += g->len;
        }
    }
    p->local_numel = local;
    if (p->nrange > 1) qsort(p->range, (size_t)p->nrange, sizeof *p->range, cmp_range_);
    const size_t n = (size_t)world * (p->max_S ? p->max_S : 1);
    p->stage = malloc(n * sizeof(float));
    p->send = malloc(n * sizeof(float));
    p->recv = malloc(n * sizeof(float));
    if (!p->stage || !p->send || !p->recv) {
        dv_shard_plan_free(p);
        return DV_ERR(DV_ERR_NOMEM, "out of memory (shard staging, 3 x %zu floats)", n);
    }
    return DV_OK;
}

void dv_shard_plan_free(dv_shard_plan *p) {
    free(p->unit);
    free(p->range);
    free(p->stage);
    free(p->send);
    free(p->recv);
    memset(p, 0, sizeof *p);
}

void dv_shard_take(const dv_shard_plan *p, float *local, const float *full) {
    memset(local, 0, (p->local_numel ? p->local_numel : 1) * sizeof *local);
    for (int i = 0; i < p->nrange; i++)
        memcpy(local + p->range[i].loc, full + p->range[i].lo,
               (p->range[i].hi - p->range[i].lo) * sizeof *local);
}

typedef struct {
    float *full;
    const float *src; /* unit-ordered */
    const float *cfull;
    float *dst;
    float scale;
} copy_arg_;

static void unit_to_full_(size_t flat, size_t uoff, size_t n, void *arg) {
    copy_arg_ *a = arg;
    memcpy(a->full + flat, a->src + uoff, n * sizeof(float));
}

static void full_to_unit_(size_t flat, size_t uoff, size_t n, void *arg) {
    copy_arg_ *a = arg;
    const float *s = a->cfull + flat;
    float *d = a->dst + uoff;
    const float f = a->scale;
    if (f == 1.0f) {
        memcpy(d, s, n * sizeof *d);
        return;
    }
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) d[i] = s[i] * f;
}

int dv_shard_gather(dv_shard_plan *p, dv_comm *c, int unit, const float *local, float *full,
                    dv_dtype t) {
    if (unit < 0 || unit >= p->nunits) return DV_ERR(DV_ERR_ARG, "shard unit %d of %d", unit, p->nunits);
    const dv_shard_unit *u = &p->unit[unit];
    const size_t S = u->S, W = (size_t)p->world;
    if (W == 1) { /* nothing crosses a wire: exact */
        copy_arg_ a = {.full = full, .src = local + u->local0};
        for_pieces_(u, 0, u->len, unit_to_full_, &a);
        return DV_OK;
    }
    if (t == DV_F32) {
        DV_TRY(dv_comm_allgather(c, local + u->local0, p->stage, S, DV_F32));
    } else {
        dv_convert_f32_to(p->send, t, local + u->local0, S);
        DV_TRY(dv_comm_allgather(c, p->send, p->recv, S, t));
        dv_convert_to_f32(p->stage, p->recv, t, W * S);
    }
    copy_arg_ a = {.full = full, .src = p->stage};
    for_pieces_(u, 0, u->len, unit_to_full_, &a);
    return DV_OK;
}

int dv_shard_reduce_scatter(dv_shard_plan *p, dv_comm *c, int unit, const float *full_grad,
                            float *local_grad, dv_dtype t, float pre, float post) {
    if (unit < 0 || unit >= p->nunits) return DV_ERR(DV_ERR_ARG, "shard unit %d of %d", unit, p->nunits);
    const dv_shard_unit *u = &p->unit[unit];
    const size_t S = u->S, W = (size_t)p->world;
    float *dst = local_grad + u->local0;
    if (W == 1) {
        copy_arg_ a = {.cfull = full_grad, .dst = dst, .scale = pre * post};
        for_pieces_(u, 0, u->len, full_to_unit_, &a);
        return DV_OK;
    }
    copy_arg_ a = {.cfull = full_grad, .dst = p->stage, .scale = pre};
    for_pieces_(u, 0, u->len, full_to_unit_, &a);
    memset(p->stage + u->len, 0, (W * S - u->len) * sizeof(float)); /* padding */
    if (t == DV_F32) {
        DV_TRY(dv_comm_reduce_scatter_sum(c, p->stage, dst, S, DV_F32));
    } else {
        dv_convert_f32_to(p->send, t, p->stage, W * S);
        DV_TRY(dv_comm_reduce_scatter_sum(c, p->send, p->recv, S, t));
        dv_convert_to_f32(dst, p->recv, t, S);
    }
    if (post != 1.0f)
        for (size_t i = 0; i < S; i++) dst[i] *= post;
    /* the padding of this rank's slice summed zeros: it stays exactly zero */
    return DV_OK;
}

int64_t dv_shard_adamw_ranges(const dv_shard_plan *p, const dv_adamw_range *in, int64_t n,
                              dv_adamw_range *out) {
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++) {
        const size_t t0 = (size_t)in[i].offset, t1 = t0 + (size_t)in[i].numel;
        for (int r = 0; r < p->nrange; r++) {
            const dv_shard_range *g = &p->range[r];
            const size_t a = t0 > g->lo ? t0 : g->lo, b = t1 < g->hi ? t1 : g->hi;
            if (a >= b) continue;
            out[k] = in[i];
            out[k].offset = (int64_t)(g->loc + (a - g->lo));
            out[k].numel = (int64_t)(b - a);
            k++;
        }
    }
    return k;
}
