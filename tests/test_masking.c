/* iBOT block masking: the official max_num_patches expression, the generator's invariants,
 * the collate policy (stratified targets, upperbound, shuffle, indices, weights), determinism,
 * odd shapes, and the invariants of the official collate output in tests/golden/losses.h5
 * (group ibot/: 8x8 grid, B = 4, ratio 0.1-0.5, probability 0.5).
 * Files are read from "$srcdir/tests/golden" (srcdir defaults to "."). */
#include <hdf5.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "h5util.h"
#include "masking.h"
#include "tap.h"

static int cmp_i64_(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Invariants every collate output must satisfy (ours and the official golden one). Returns a
 * bitmask of failures: 1 shape/indices, 2 weights, 4 strata, 8 n_masked, 16 upperbound. */
static int batch_invariants_(const dv_mask_batch *b, double rmin, double rmax, double prob,
                             int64_t upperbound, char *why, size_t whylen) {
    const int C = b->n_crops, N = b->n_tokens;
    int fail = 0;
    why[0] = 0;
    /* indices: ascending, each a true entry, all true entries listed */
    int64_t total = 0;
    for (int64_t i = 0; i < (int64_t)C * N; i++) total += b->masks[i] != 0;
    if (total != b->n_masked_patches) fail |= 1;
    for (int64_t k = 0; k < b->n_masked_patches; k++) {
        int64_t idx = b->indices[k];
        if (idx < 0 || idx >= (int64_t)C * N || !b->masks[idx]) fail |= 1;
        if (k > 0 && idx <= b->indices[k - 1]) fail |= 1;
    }
    /* weights: 1/count of the crop; they sum to the number of non-empty crops */
    double wsum = 0.0;
    int nonempty = 0;
    for (int c = 0; c < C; c++) {
        int64_t cnt = 0;
        for (int t = 0; t < N; t++) cnt += b->masks[(size_t)c * N + t] != 0;
        nonempty += cnt > 0;
    }
    for (int64_t k = 0; k < b->n_masked_patches; k++) {
        int64_t c = b->indices[k] / N, cnt = 0;
        for (int t = 0; t < N; t++) cnt += b->masks[(size_t)c * N + t] != 0;
        if (b->weights[k] != 1.0f / (float)cnt) fail |= 2;
        wsum += b->weights[k];
    }
    if (fabs(wsum - nonempty) > 1e-4) fail |= 2;
    /* strata: the k-th smallest count <= int(N * edges[k+1]) of the k-th masked crop */
    int n = dv_mask_n_masked_crops(C, prob);
    if (nonempty > n) fail |= 8;
    int64_t *counts = malloc((size_t)C * sizeof *counts);
    float *edges = malloc((size_t)(n + 1) * sizeof *edges);
    if (!counts || !edges) {
        free(counts);
        free(edges);
        return 255;
    }
    for (int c = 0; c < C; c++) {
        counts[c] = 0;
        for (int t = 0; t < N; t++) counts[c] += b->masks[(size_t)c * N + t] != 0;
    }
    qsort(counts, (size_t)C, sizeof *counts, cmp_i64_);
    dv_linspace_f32(rmin, rmax, n + 1, edges);
    /* the n largest counts belong to the masked crops (the others are empty) */
    for (int i = 0; i < n; i++) {
        int64_t ub = (int64_t)((float)N * edges[i + 1]);
        if (counts[C - n + i] > ub) fail |= 4;
    }
    if (b->n_masked_patches > upperbound) fail |= 16;
    snprintf(why, whylen, "fail mask %d (masked %lld, non-empty crops %d of %d, upperbound %lld)",
             fail, (long long)b->n_masked_patches, nonempty, n, (long long)upperbound);
    free(counts);
    free(edges);
    return fail;
}

static void test_expression_(void) {
    tap_ok(dv_mask_max_num_patches(224, 14) == 128.0, "max_num_patches 224/14 = %g (0.5*N = 128)",
           dv_mask_max_num_patches(224, 14));
    tap_ok(dv_mask_max_num_patches(224, 16) == 98.0, "max_num_patches 224/16 = %g (0.5*N = 98)",
           dv_mask_max_num_patches(224, 16));
    tap_ok(dv_mask_max_num_patches(518, 14) == 666.0,
           "max_num_patches 518/14 = %g (not 0.5*N = 684.5)", dv_mask_max_num_patches(518, 14));
    tap_ok(dv_mask_max_num_patches(56, 14) == 8.0 && dv_mask_max_num_patches(98, 14) == 21.0,
           "max_num_patches 56/14 = %g, 98/14 = %g (Python: 8.0, 21.0)",
           dv_mask_max_num_patches(56, 14), dv_mask_max_num_patches(98, 14));
    tap_ok(dv_py_floordiv(7.5, 2) == 3.0 && dv_py_floordiv(-7.5, 2) == -4.0 &&
               dv_py_floordiv(7, -2) == -4.0 && dv_py_floordiv(-7, -2) == 3.0 &&
               dv_py_floordiv(6, 3) == 2.0 && dv_py_floordiv(0.0, 5) == 0.0 &&
               isnan(dv_py_floordiv(1, 0)),
           "Python float // semantics (floor, sign of divisor)");
    float e[5];
    dv_linspace_f32(0.1, 0.5, 5, e);
    tap_ok(e[0] == 0.1f && e[4] == 0.5f && e[2] == 0.1f + 0.1f * 2.0f && e[3] == 0.5f - 0.1f,
           "float32 linspace(0.1, 0.5, 5): %.9g %.9g %.9g %.9g %.9g", e[0], e[1], e[2], e[3],
           e[4]);
    tap_ok(dv_mask_upperbound(8, 64, 0.1, 0.5, 0.5) == 88,
           "upperbound 2B=8, N=64 = 12+19+25+32 = %lld (golden 88)",
           (long long)dv_mask_upperbound(8, 64, 0.1, 0.5, 0.5));
    tap_ok(dv_mask_n_masked_crops(128, 0.5) == 64 && dv_mask_n_masked_crops(2, 0.5) == 1 &&
               dv_mask_n_masked_crops(6, 0.3) == 1 && dv_mask_n_masked_crops(7, 1.0) == 7,
           "n_masked = int(2B * p) (128*0.5=64, 2*0.5=1, 6*0.3=1.7999->1, 7*1.0=7)");
}

static void test_generator_(void) {
    const int grids[][2] = {{16, 16}, {14, 14}, {7, 7}, {6, 10}, {11, 5}, {2, 3}, {1, 1}};
    int over = 0, bad_count = 0, runs = 0;
    double short_sum = 0.0;
    int64_t short_n = 0;
    uint8_t mask[256];
    for (size_t gi = 0; gi < sizeof grids / sizeof grids[0]; gi++) {
        int H = grids[gi][0], W = grids[gi][1], N = H * W;
        dv_mask_gen g;
        if (dv_mask_gen_init(&g, H, W, 0.5 * N) != DV_OK) {
            over++;
            continue;
        }
        for (int t = 0; t <= N; t++) {
            for (int rep = 0; rep < 6; rep++) {
                dv_rng r;
                dv_rng_init(&r, 5, DV_RNG_MASK, (uint64_t)t, (uint64_t)(gi * 100 + rep));
                int64_t cnt = -1;
                if (dv_mask_generate(&g, &r, t, mask, &cnt) != DV_OK) {
                    bad_count++;
                    continue;
                }
                int64_t s = 0;
                for (int i = 0; i < N; i++) s += mask[i];
                if (s != cnt) bad_count++;
                if (cnt > t) over++;
                if (H == 16 && t >= 26 && t <= 128) {
                    short_sum += (double)cnt / t;
                    short_n++;
                }
                runs++;
            }
        }
    }
    tap_ok(over == 0, "generated masks never exceed their target (%d runs over 7 grids incl. 6x10, "
           "11x5, 1x1)", runs);
    tap_ok(bad_count == 0, "returned count equals the number of masked tokens");
    double mean_fill = short_n ? short_sum / short_n : 0.0;
    tap_ok(mean_fill > 0.9 && mean_fill <= 1.0,
           "16x16, targets 26..128: mean count/target %.4f (> 0.9; the 10-attempt rule loses "
           "little)", mean_fill);
    /* target 0 gives an empty mask and draws nothing */
    dv_mask_gen g;
    dv_mask_gen_init(&g, 4, 4, 8.0);
    dv_rng a, b;
    dv_rng_init(&a, 1, DV_RNG_MASK, 0, 0);
    dv_rng_init(&b, 1, DV_RNG_MASK, 0, 0);
    int64_t cnt = -1;
    dv_mask_generate(&g, &a, 0, mask, &cnt);
    int empty = cnt == 0;
    for (int i = 0; i < 16; i++) empty &= mask[i] == 0;
    tap_ok(empty && dv_rng_u32(&a) == dv_rng_u32(&b), "target 0: empty mask, no draws consumed");
    /* a block never spans the full width or height (strict w < W, h < H) */
    int full_row = 0;
    dv_mask_gen_init(&g, 5, 5, 1000.0);
    for (int rep = 0; rep < 300; rep++) {
        dv_rng r;
        dv_rng_init(&r, 9, DV_RNG_MASK, 1, (uint64_t)rep);
        uint8_t m[25];
        /* one block only: target <= min block that can exist; use budget-limited single call */
        dv_mask_generate(&g, &r, 4, m, &cnt);
        for (int y = 0; y < 5; y++) {
            int s = 0;
            for (int x = 0; x < 5; x++) s += m[y * 5 + x];
            full_row |= s == 5;
        }
    }
    tap_ok(!full_row, "5x5 grid, target 4: no block covers a whole row (w < W is strict)");
}

static void test_collate_(void) {
    const int H = 16, W = 16, N = H * W, B = 32;
    dv_mask_gen g;
    dv_mask_gen_init(&g, H, W, dv_mask_max_num_patches(224, 14));
    dv_mask_batch b, c;
    int rc = dv_mask_batch_alloc(&b, 2 * B, N) | dv_mask_batch_alloc(&c, 2 * B, N);
    tap_ok(rc == DV_OK, "batch alloc (2B=%d, N=%d)", 2 * B, N);
    int64_t ub = dv_mask_upperbound(2 * B, N, 0.1, 0.5, 0.5);
    int fails = 0, nm_ok = 1, ub_ok = 1;
    double ratio_sum = 0.0;
    int ratio_n = 0;
    char why[256] = "";
    for (int step = 0; step < 40; step++) {
        rc = dv_mask_collate(&g, 0.1, 0.5, 0.5, 7, (uint64_t)step, 3, &b);
        if (rc != DV_OK) {
            fails++;
            continue;
        }
        if (batch_invariants_(&b, 0.1, 0.5, 0.5, ub, why, sizeof why)) fails++;
        nm_ok &= b.n_masked_crops == B;
        ub_ok &= b.upperbound == ub;
        for (int k = 0; k < 2 * B; k++)
            if (b.crop_counts[k] > 0) {
                ratio_sum += (double)b.crop_counts[k] / N;
                ratio_n++;
            }
    }
    tap_ok(fails == 0, "40 collates (2B=64, 16x16): indices, weights, strata, upperbound hold %s",
           fails ? why : "");
    tap_ok(nm_ok, "n_masked_crops = B = %d for probability 0.5", B);
    tap_ok(ub_ok, "upperbound = sum int(N * edges[i+1]) = %lld every step", (long long)ub);
    double mean_ratio = ratio_n ? ratio_sum / ratio_n : 0;
    tap_ok(mean_ratio >= 0.1 && mean_ratio <= 0.5 && ratio_n <= 40 * B,
           "mean masked ratio of masked crops %.4f in [0.1, 0.5] (%d masked crops)", mean_ratio,
           ratio_n);
    /* shuffled: masked crops are not always the first B rows */
    int first_half_only = 1;
    for (int step = 0; step < 5; step++) {
        dv_mask_collate(&g, 0.1, 0.5, 0.5, 7, (uint64_t)step, 3, &b);
        for (int k = B; k < 2 * B; k++) first_half_only &= b.crop_counts[k] == 0;
    }
    tap_ok(!first_half_only, "masks are shuffled over the 2B crops");
    /* determinism per key */
    dv_mask_collate(&g, 0.1, 0.5, 0.5, 7, 11, 3, &b);
    dv_mask_collate(&g, 0.1, 0.5, 0.5, 7, 11, 3, &c);
    int same = memcmp(b.masks, c.masks, (size_t)2 * B * N) == 0 &&
               b.n_masked_patches == c.n_masked_patches &&
               memcmp(b.indices, c.indices, (size_t)b.n_masked_patches * sizeof *b.indices) == 0 &&
               memcmp(b.weights, c.weights, (size_t)b.n_masked_patches * sizeof *b.weights) == 0;
    tap_ok(same, "same (seed, step, key): identical masks, indices and weights");
    int differ = 1;
    const uint64_t other[3][3] = {{8, 11, 3}, {7, 12, 3}, {7, 11, 4}};
    for (int k = 0; k < 3; k++) {
        dv_mask_collate(&g, 0.1, 0.5, 0.5, other[k][0], other[k][1], other[k][2], &c);
        differ &= memcmp(b.masks, c.masks, (size_t)2 * B * N) != 0;
    }
    tap_ok(differ, "a different seed, step or key gives different masks");
    dv_mask_batch_free(&b);
    dv_mask_batch_free(&c);

    /* shapes: B = 1, odd and rectangular grids, probability 1 and 0 */
    const int shapes[][3] = {{1, 7, 7}, {1, 6, 10}, {3, 9, 5}, {5, 37, 37}};
    int shape_fail = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int Bs = shapes[s][0], Hs = shapes[s][1], Ws = shapes[s][2], Ns = Hs * Ws;
        const double probs[] = {0.5, 1.0, 0.0, 0.3};
        for (int pi = 0; pi < 4; pi++) {
            dv_mask_gen gs;
            dv_mask_batch bs;
            if (dv_mask_gen_init(&gs, Hs, Ws, 0.5 * Ns) != DV_OK ||
                dv_mask_batch_alloc(&bs, 2 * Bs, Ns) != DV_OK) {
                shape_fail++;
                continue;
            }
            int64_t ubs = dv_mask_upperbound(2 * Bs, Ns, 0.1, 0.5, probs[pi]);
            if (dv_mask_collate(&gs, 0.1, 0.5, probs[pi], 1, 2, 3, &bs) != DV_OK ||
                batch_invariants_(&bs, 0.1, 0.5, probs[pi], ubs, why, sizeof why) ||
                bs.n_masked_crops != dv_mask_n_masked_crops(2 * Bs, probs[pi]) ||
                bs.upperbound != ubs) {
                tap_diag("shape B=%d %dx%d p=%g: %s", Bs, Hs, Ws, probs[pi], why);
                shape_fail++;
            }
            if (probs[pi] == 0.0 && (bs.n_masked_patches != 0 || bs.upperbound != 0)) shape_fail++;
            dv_mask_batch_free(&bs);
        }
    }
    tap_ok(shape_fail == 0, "B=1 (7x7, 6x10), B=3 (9x5), B=5 (37x37) with p 0.5/1/0/0.3: "
           "invariants hold");
    /* argument errors */
    dv_mask_batch_alloc(&b, 4, 64);
    int e1 = dv_mask_collate(&g, 0.1, 0.5, 0.5, 1, 1, 1, &b); /* grid 256 != 64 */
    int e2 = dv_mask_gen_init(&g, 0, 3, 1.0);
    dv_mask_batch_free(&b);
    tap_ok(e1 == DV_ERR_ARG && e2 == DV_ERR_ARG, "shape mismatch and empty grid are DV_ERR_ARG");
}

/* ---- golden: official collate output ---------------------------------------------------- */

static int read_golden_(const char *path, dv_mask_batch *b, int64_t **idx, float **wgt,
                        int64_t *n_idx, int64_t *ub, int64_t *nmp) {
    hid_t f, d, s, a;
    hsize_t dims[2];
    DV_CHECK_H5(f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT));
    DV_CHECK_H5(d = H5Dopen2(f, "/ibot/masks", H5P_DEFAULT));
    DV_CHECK_H5(s = H5Dget_space(d));
    if (H5Sget_simple_extent_ndims(s) != 2) return DV_ERR(DV_ERR_FORMAT, "masks: not 2-D");
    DV_CHECK_H5(H5Sget_simple_extent_dims(s, dims, NULL));
    H5Sclose(s);
    DV_TRY(dv_mask_batch_alloc(b, (int)dims[0], (int)dims[1]));
    DV_CHECK_H5(H5Dread(d, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, b->masks));
    H5Dclose(d);
    DV_CHECK_H5(d = H5Dopen2(f, "/ibot/mask_indices_list", H5P_DEFAULT));
    DV_CHECK_H5(s = H5Dget_space(d));
    DV_CHECK_H5(H5Sget_simple_extent_dims(s, dims, NULL));
    H5Sclose(s);
    *n_idx = (int64_t)dims[0];
    DV_CHECK_ALLOC(*idx = malloc((size_t)dims[0] * sizeof **idx));
    DV_CHECK_ALLOC(*wgt = malloc((size_t)dims[0] * sizeof **wgt));
    DV_CHECK_H5(H5Dread(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, *idx));
    H5Dclose(d);
    DV_CHECK_H5(d = H5Dopen2(f, "/ibot/masks_weight", H5P_DEFAULT));
    DV_CHECK_H5(H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, *wgt));
    H5Dclose(d);
    DV_CHECK_H5(a = H5Aopen_by_name(f, "/ibot", "upperbound", H5P_DEFAULT, H5P_DEFAULT));
    DV_CHECK_H5(H5Aread(a, H5T_NATIVE_INT64, ub));
    H5Aclose(a);
    DV_CHECK_H5(a = H5Aopen_by_name(f, "/ibot", "n_masked_patches", H5P_DEFAULT, H5P_DEFAULT));
    DV_CHECK_H5(H5Aread(a, H5T_NATIVE_INT64, nmp));
    H5Aclose(a);
    H5Fclose(f);
    return DV_OK;
}

static void test_golden_(void) {
    const char *dir = getenv("srcdir");
    if (!dir || !*dir) dir = ".";
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/golden/losses.h5", dir);
    dv_mask_batch b;
    memset(&b, 0, sizeof b);
    int64_t *gidx = NULL, n_idx = 0, ub = 0, nmp = 0;
    float *gw = NULL;
    if (read_golden_(path, &b, &gidx, &gw, &n_idx, &ub, &nmp) != DV_OK) {
        tap_skip(4, "tests/golden/losses.h5 (ibot/) not readable");
        dv_mask_batch_free(&b);
        free(gidx);
        free(gw);
        return;
    }
    dv_mask_finalize(&b);
    int same_idx = b.n_masked_patches == n_idx && n_idx == nmp &&
                   memcmp(b.indices, gidx, (size_t)n_idx * sizeof *gidx) == 0;
    tap_ok(same_idx, "golden: our indices from the official masks equal mask_indices_list (%lld)",
           (long long)n_idx);
    tap_ok(same_idx && memcmp(b.weights, gw, (size_t)n_idx * sizeof *gw) == 0,
           "golden: our weights equal masks_weight bit for bit (1/count in float32)");
    tap_ok(ub == dv_mask_upperbound(b.n_crops, b.n_tokens, 0.1, 0.5, 0.5),
           "golden: upperbound %lld equals our formula for 2B=%d, N=%d", (long long)ub, b.n_crops,
           b.n_tokens);
    char why[256];
    int fail = batch_invariants_(&b, 0.1, 0.5, 0.5, ub, why, sizeof why);
    int nonempty = 0;
    for (int c = 0; c < b.n_crops; c++) nonempty += b.crop_counts[c] > 0;
    tap_ok(!fail && nonempty == dv_mask_n_masked_crops(b.n_crops, 0.5),
           "golden: the official output satisfies our invariants (%d masked crops, %s)", nonempty,
           why);
    dv_mask_batch_free(&b);
    free(gidx);
    free(gw);
}

int main(void) {
    dv_h5_quiet();
    tap_no_plan();
    test_expression_();
    test_generator_();
    test_collate_();
    test_golden_();
    return tap_exit();
}
