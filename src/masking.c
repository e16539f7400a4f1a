/* masking — see masking.h. */
#include "masking.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

double dv_py_floordiv(double a, double b) {
    if (b == 0.0) return NAN; /* Python raises ZeroDivisionError */
    /* Python: remainder via fmod, quotient (a - mod) / b, adjusted so mod has b's sign, then
     * snapped to the nearest integer (the subtraction above makes it exact or nearly so). */
    double mod = fmod(a, b);
    double div = (a - mod) / b;
    if (mod != 0.0) {
        if ((b < 0) != (mod < 0)) div -= 1.0;
    }
    if (div != 0.0) {
        double fl = floor(div);
        if (div - fl > 0.5) fl += 1.0;
        return fl;
    }
    return copysign(0.0, a / b);
}

double dv_mask_max_num_patches(int img_size, int patch_size) {
    /* ((((0.5 * S) // p) * S) // p), all float after the first product */
    double v = 0.5 * (double)img_size;
    v = dv_py_floordiv(v, (double)patch_size);
    v = v * (double)img_size;
    return dv_py_floordiv(v, (double)patch_size);
}

int dv_mask_gen_init(dv_mask_gen *g, int height, int width, double max_num_patches) {
    if (!g || height < 1 || width < 1 || !(max_num_patches >= 0.0) || !isfinite(max_num_patches))
        return DV_ERR(DV_ERR_ARG, "mask generator: bad grid %dx%d or max_num_patches %g", height,
                      width, max_num_patches);
    g->height = height;
    g->width = width;
    g->min_num_patches = 4;
    g->max_num_patches = max_num_patches;
    const double min_aspect = 0.3, max_aspect = 1.0 / min_aspect;
    g->log_aspect[0] = log(min_aspect);
    g->log_aspect[1] = log(max_aspect);
    return DV_OK;
}

/* Python random.uniform(a, b) = a + (b - a) * random() */
static inline double py_uniform_(dv_rng *r, double a, double b) {
    return a + (b - a) * dv_rng_uniform_double(r);
}

/* One block: MaskingGenerator._mask. Returns the number of newly masked tokens. */
static int64_t block_(const dv_mask_gen *g, dv_rng *r, uint8_t *mask, double budget) {
    const int H = g->height, W = g->width;
    int64_t delta = 0;
    for (int attempt = 0; attempt < 10; attempt++) {
        double area = py_uniform_(r, (double)g->min_num_patches, budget);
        double aspect = exp(py_uniform_(r, g->log_aspect[0], g->log_aspect[1]));
        /* int(round(x)): Python rounds half to even, as rint in the default mode */
        int h = (int)rint(sqrt(area * aspect));
        int w = (int)rint(sqrt(area / aspect));
        if (w < W && h < H) {
            int top = (int)dv_rng_int(r, 0, H - h);
            int left = (int)dv_rng_int(r, 0, W - w);
            int64_t already = 0;
            for (int i = top; i < top + h; i++)
                for (int j = left; j < left + w; j++) already += mask[(size_t)i * W + j] != 0;
            int64_t fresh = (int64_t)h * w - already;
            if (fresh > 0 && (double)fresh <= budget) {
                for (int i = top; i < top + h; i++)
                    for (int j = left; j < left + w; j++)
                        if (!mask[(size_t)i * W + j]) {
                            mask[(size_t)i * W + j] = 1;
                            delta++;
                        }
            }
        }
        if (delta > 0) break;
    }
    return delta;
}

int dv_mask_generate(const dv_mask_gen *g, dv_rng *r, int64_t target, uint8_t *mask,
                     int64_t *count) {
    if (!g || !r || !mask || target < 0)
        return DV_ERR(DV_ERR_ARG, "mask generate: bad arguments (target %lld)", (long long)target);
    memset(mask, 0, (size_t)g->height * (size_t)g->width);
    int64_t n = 0;
    while (n < target) {
        double budget = (double)(target - n);
        if (g->max_num_patches < budget) budget = g->max_num_patches;
        int64_t delta = block_(g, r, mask, budget);
        if (delta == 0) break;
        n += delta;
    }
    if (count) *count = n;
    return DV_OK;
}

int dv_mask_batch_alloc(dv_mask_batch *b, int n_crops, int n_tokens) {
    if (!b) return DV_ERR(DV_ERR_ARG, "mask batch: NULL");
    memset(b, 0, sizeof *b);
    if (n_crops < 1 || n_tokens < 1)
        return DV_ERR(DV_ERR_ARG, "mask batch: bad shape (%d crops, %d tokens)", n_crops, n_tokens);
    size_t total = (size_t)n_crops * (size_t)n_tokens;
    b->n_crops = n_crops;
    b->n_tokens = n_tokens;
    b->masks = calloc(total, 1);
    b->work_ = calloc(total, 1);
    b->indices = malloc(total * sizeof *b->indices);
    b->weights = malloc(total * sizeof *b->weights);
    b->crop_counts = calloc((size_t)n_crops, sizeof *b->crop_counts);
    b->perm_ = malloc((size_t)n_crops * sizeof *b->perm_);
    if (!b->masks || !b->work_ || !b->indices || !b->weights || !b->crop_counts || !b->perm_) {
        dv_mask_batch_free(b);
        return DV_ERR(DV_ERR_NOMEM, "mask batch: out of memory (%d x %d)", n_crops, n_tokens);
    }
    return DV_OK;
}

void dv_mask_batch_free(dv_mask_batch *b) {
    if (!b) return;
    free(b->masks);
    free(b->work_);
    free(b->indices);
    free(b->weights);
    free(b->crop_counts);
    free(b->perm_);
    memset(b, 0, sizeof *b);
}

int dv_mask_n_masked_crops(int n_crops, double probability) {
    return (int)((double)n_crops * probability);
}

void dv_linspace_f32(double lo, double hi, int steps, float *edges) {
    if (steps <= 0) return;
    float start = (float)lo, end = (float)hi;
    if (steps == 1) {
        edges[0] = start;
        return;
    }
    float step = (end - start) / (float)(steps - 1);
    int halfway = steps / 2;
    for (int i = 0; i < steps; i++)
        edges[i] = i < halfway ? start + step * (float)i : end - step * (float)(steps - i - 1);
}

int64_t dv_mask_upperbound(int n_crops, int n_tokens, double ratio_min, double ratio_max,
                           double probability) {
    int n = dv_mask_n_masked_crops(n_crops, probability);
    if (n <= 0) return 0;
    float *edges = malloc((size_t)(n + 1) * sizeof *edges);
    if (!edges) return -1;
    dv_linspace_f32(ratio_min, ratio_max, n + 1, edges);
    int64_t ub = 0;
    for (int i = 0; i < n; i++) ub += (int64_t)((float)n_tokens * edges[i + 1]);
    free(edges);
    return ub;
}

void dv_mask_finalize(dv_mask_batch *b) {
    const int N = b->n_tokens;
    int64_t k = 0;
    for (int c = 0; c < b->n_crops; c++) {
        const uint8_t *m = b->masks + (size_t)c * N;
        int64_t cnt = 0;
        for (int t = 0; t < N; t++) cnt += m[t] != 0;
        b->crop_counts[c] = cnt;
        /* torch: 1 / masks.sum(-1).clamp(min=1.0), float32 */
        float wgt = 1.0f / (float)(cnt > 0 ? cnt : 1);
        for (int t = 0; t < N; t++)
            if (m[t]) {
                b->indices[k] = (int64_t)c * N + t;
                b->weights[k] = wgt;
                k++;
            }
    }
    b->n_masked_patches = k;
}

int dv_mask_collate(const dv_mask_gen *g, double ratio_min, double ratio_max, double probability,
                    uint64_t seed, uint64_t step, uint64_t key, dv_mask_batch *b) {
    if (!g || !b || !b->masks)
        return DV_ERR(DV_ERR_ARG, "mask collate: NULL generator or unallocated batch");
    const int N = g->height * g->width, B2 = b->n_crops;
    if (b->n_tokens != N)
        return DV_ERR(DV_ERR_ARG, "mask collate: batch has %d tokens per crop, grid %dx%d", b->n_tokens,
                      g->height, g->width);
    if (!(ratio_min >= 0.0) || !(ratio_min <= ratio_max) || !(ratio_max <= 1.0) ||
        !(probability >= 0.0) || !(probability <= 1.0))
        return DV_ERR(DV_ERR_ARG, "mask collate: bad ratio (%g, %g) or probability %g", ratio_min,
                      ratio_max, probability);
    int n = dv_mask_n_masked_crops(B2, probability);
    if (n > B2) n = B2;
    b->n_masked_crops = n;
    float edges_stack[257], *edges = edges_stack;
    if (n + 1 > 257) DV_CHECK_ALLOC(edges = malloc((size_t)(n + 1) * sizeof *edges));
    dv_linspace_f32(ratio_min, ratio_max, n + 1, edges);

    dv_rng r;
    dv_rng_init(&r, seed, DV_RNG_MASK, step, key);
    int64_t ub = 0;
    int status = DV_OK;
    for (int i = 0; i < n && status == DV_OK; i++) {
        float lo = edges[i], hi = edges[i + 1];
        /* random.uniform on 0-d float32 tensors, then int(N * t) — float32 throughout */
        float t = lo + (hi - lo) * (float)dv_rng_uniform_double(&r);
        int64_t target = (int64_t)((float)N * t);
        if (target < 0) target = 0;
        status = dv_mask_generate(g, &r, target, b->work_ + (size_t)i * N, NULL);
        ub += (int64_t)((float)N * hi);
    }
    if (edges != edges_stack) free(edges);
    if (status != DV_OK) return status;
    memset(b->work_ + (size_t)n * N, 0, (size_t)(B2 - n) * N);
    /* random.shuffle(masks_list) */
    for (int c = 0; c < B2; c++) b->perm_[c] = c;
    dv_rng_shuffle(&r, b->perm_, B2, sizeof *b->perm_);
    for (int c = 0; c < B2; c++)
        memcpy(b->masks + (size_t)c * N, b->work_ + (size_t)b->perm_[c] * N, (size_t)N);
    b->upperbound = ub;
    dv_mask_finalize(b);
    return DV_OK;
}
