/* test_losses_golden — the DINO, iBOT and KoLeo losses, softmax centering and Sinkhorn-Knopp
 * against the official PyTorch code (tests/golden/losses.h5, see /work/shared/golden/README.md;
 * every group's `note` attribute states the formula; world size 1).
 *
 *   dino/{softmax_center,sinkhorn}: teacher_probs from teacher_logits (the swapped order), the
 *       local and global loss parts, gradients w.r.t. the global and local student logits;
 *       center_after_update (one-step-late EMA update of dino/center).
 *   ibot/: masks_weight and mask_indices_list from masks, {softmax_center,sinkhorn} teacher_probs,
 *       loss (× loss_scales 2 × ibot_loss_scale 1/2 = × 1), gradient; center_after_update.
 *   koleo/: loss on 8 rows, nearest-neighbour indices, the meta-architecture form
 *       0.1·(koleo(rows 0-3) + koleo(rows 4-7)), gradients.
 *   dino_head/{official_init,random_bias}: DINOHead 64 -> 96 -> 96 -> 32 -> 128 forward, every
 *       parameter gradient and the input gradient of sum(R * y).
 *   chain/: CLS tokens -> DINOHead -> Sinkhorn teacher probs, DINO local/global, KoLeo, total,
 *       and every gradient of the total (head parameters, local and global CLS tokens).
 *
 * Tolerance: max |error| <= 1e-4 x RMS(reference) per output (the README's suggestion; torch's
 * own fp32-vs-fp64 error is about 1e-6 of the RMS). Scalars: RMS = |value|. nn indices: exact.
 * Files are read from "$srcdir/tests/golden" (srcdir defaults to ".").
 */
#include <hdf5.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "centering.h"
#include "dino_head.h"
#include "dino_loss.h"
#include "err.h"
#include "ibot_loss.h"
#include "koleo.h"
#include "sinkhorn.h"
#include "golden.h"
#include "tap.h"

/* ---- dino ---- */

static void test_dino(void) {
    const int64_t B = (int64_t)attr_d("dino", "B"), K = (int64_t)attr_d("dino", "K");
    const int64_t L = (int64_t)attr_d("dino", "n_local_crops");
    const double tt = attr_d("dino", "teacher_temp"), ts = attr_d("dino", "student_temp");
    const double cm = attr_d("dino", "center_momentum");
    const int64_t Z = dino_loss_num_terms(L);
    tap_ok(attr_d("dino", "sinkhorn_iterations") == 3.0 && Z == 2 + 2 * L,
           "dino: 3 Sinkhorn iterations, Z = %lld", (long long)Z);
    float *tl = rd_f32("dino/teacher_logits", 2 * B * K);
    float *sg = rd_f32("dino/student_global", 2 * B * K);
    float *sl = rd_f32("dino/student_local", L * B * K);
    float *P = malloc((size_t)(2 * B * K) * sizeof *P);
    float *dg = malloc((size_t)(2 * B * K) * sizeof *dg);
    float *dl = malloc((size_t)(L * B * K) * sizeof *dl);
    char name[256];

    for (int variant = 0; variant < 2; variant++) {
        const char *v = variant == 0 ? "softmax_center" : "sinkhorn";
        int rc;
        dv_center c = {0};
        if (variant == 0) {
            rc = center_init(&c, K);
            float *c0 = rd_f32("dino/center", K);
            if (rc == DV_OK) {
                memcpy(c.center, c0, (size_t)K * sizeof(float));
                c.momentum = cm;
                rc = center_softmax_teacher(P, &c, tl, 2 * B, tt);
            }
            free(c0);
        } else {
            dv_sinkhorn_opts o = sinkhorn_default_opts(1, NULL, NULL);
            rc = sinkhorn_knopp_dino(P, tl, 2 * B, K, tt, &o);
        }
        tap_ok(rc == DV_OK, "dino/%s: teacher normalisation runs", v);
        snprintf(name, sizeof name, "dino/%s/teacher_probs", v);
        float *ref = rd_f32(name, 2 * B * K);
        snprintf(name, sizeof name, "dino/%s teacher_probs", v);
        check_arr(name, P, ref, 2 * B * K);
        free(ref);

        if (variant == 0) {
            rc = center_update(&c, tl, 2 * B, DV_CENTER_ROW_SUM, 1, NULL, NULL);
            float *c0 = malloc((size_t)K * sizeof *c0);
            memcpy(c0, c.center, (size_t)K * sizeof *c0);
            int same = 1;
            for (int64_t k = 0; k < K; k++) same &= c0[k] == c.center[k];
            tap_ok(rc == DV_OK && c.has_pending && same,
                   "dino: center update is pending, the centre is unchanged until the next call");
            if (rc == DV_OK) rc = center_apply_pending(&c);
            ref = rd_f32("dino/center_after_update", K);
            check_arr("dino center_after_update", c.center, ref, K);
            tap_ok(rc == DV_OK && !c.has_pending, "dino: pending update applied once");
            free(ref);
            free(c0);
            center_free(&c);
        }

        dv_dino_loss_parts parts = {0, 0};
        rc = dino_loss_forward_backward(&parts, dg, dl, sg, sl, P, B, L, K, ts, 1.0);
        tap_ok(rc == DV_OK, "dino/%s: loss runs", v);
        snprintf(name, sizeof name, "dino/%s/local_loss", v);
        const double ref_local = rd_scalar(name);
        snprintf(name, sizeof name, "dino/%s/global_loss", v);
        const double ref_global = rd_scalar(name);
        snprintf(name, sizeof name, "dino/%s/raw_forward_global_single_pair", v);
        const double ref_raw = rd_scalar(name);
        snprintf(name, sizeof name, "dino/%s local_loss", v);
        check_scalar(name, parts.local, ref_local);
        snprintf(name, sizeof name, "dino/%s global_loss", v);
        check_scalar(name, parts.global, ref_global);
        snprintf(name, sizeof name, "dino/%s raw global (x Z/2)", v);
        check_scalar(name, parts.global * (double)Z / 2.0, ref_raw);
        snprintf(name, sizeof name, "dino/%s/grad_student_global", v);
        ref = rd_f32(name, 2 * B * K);
        snprintf(name, sizeof name, "dino/%s grad_student_global", v);
        check_arr(name, dg, ref, 2 * B * K);
        free(ref);
        snprintf(name, sizeof name, "dino/%s/grad_student_local", v);
        ref = rd_f32(name, L * B * K);
        snprintf(name, sizeof name, "dino/%s grad_student_local", v);
        check_arr(name, dl, ref, L * B * K);
        free(ref);
    }

    /* Sinkhorn safe mode gives the official targets (per-prototype shifts cancel). */
    {
        dv_sinkhorn_opts o = sinkhorn_default_opts(1, NULL, NULL);
        o.safe = 1;
        const int rc = sinkhorn_knopp_dino(P, tl, 2 * B, K, tt, &o);
        float *ref = rd_f32("dino/sinkhorn/teacher_probs", 2 * B * K);
        tap_ok(rc == DV_OK, "dino/sinkhorn safe mode runs");
        check_arr("dino/sinkhorn teacher_probs (safe mode)", P, ref, 2 * B * K);
        /* with teacher logits scaled ×40 the official form overflows; safe mode does not */
        float *big = malloc((size_t)(2 * B * K) * sizeof *big);
        for (int64_t i = 0; i < 2 * B * K; i++) big[i] = 40.0f * tl[i];
        o.safe = 0;
        const int rc0 = sinkhorn_knopp_dino(P, big, 2 * B, K, tt, &o);
        o.safe = 1;
        const int rc1 = sinkhorn_knopp_dino(P, big, 2 * B, K, tt, &o);
        int finite = 1;
        for (int64_t r = 0; r < 2 * B; r++) {
            double s = 0.0;
            for (int64_t k = 0; k < K; k++) s += P[r * K + k];
            finite &= isfinite(s) && fabs(s - 1.0) < 1e-5;
        }
        tap_ok(rc0 == DV_ERR_NUMERIC && rc1 == DV_OK && finite,
               "Sinkhorn overflow: official form reports DV_ERR_NUMERIC, safe mode gives rows "
               "summing to 1");
        free(big);
        free(ref);
    }
    free(tl), free(sg), free(sl), free(P), free(dg), free(dl);
}

/* ---- ibot ---- */

static void test_ibot(void) {
    const int64_t B = (int64_t)attr_d("ibot", "B"), K = (int64_t)attr_d("ibot", "K");
    const int64_t N = (int64_t)attr_d("ibot", "n_tokens");
    const int64_t n = (int64_t)attr_d("ibot", "n_masked_patches");
    const double tt = attr_d("ibot", "teacher_temp"), ts = attr_d("ibot", "student_temp");
    const double cm = attr_d("ibot", "center_momentum");
    uint8_t *masks = ds_read("ibot/masks", H5T_NATIVE_UINT8, 1, 2 * B * N);
    int64_t *idx = ds_read("ibot/mask_indices_list", H5T_NATIVE_INT64, sizeof(int64_t), n);
    float *mw_ref = rd_f32("ibot/masks_weight", n);
    float *tl = rd_f32("ibot/teacher_logits", n * K);
    float *sl = rd_f32("ibot/student_logits", n * K);
    float *P = malloc((size_t)(n * K) * sizeof *P);
    float *dS = malloc((size_t)(n * K) * sizeof *dS);
    float *mw = malloc((size_t)(2 * B * N) * sizeof *mw);
    char name[256];

    /* collate's masks_weight and mask_indices_list from the masks */
    int64_t nm = -1;
    int rc = ibot_masks_weight(mw, masks, 2 * B, N, &nm);
    int idx_ok = nm == n;
    for (int64_t i = 0, j = 0; idx_ok && i < 2 * B * N; i++)
        if (masks[i]) idx_ok &= j < n && idx[j++] == i;
    tap_ok(rc == DV_OK && idx_ok, "ibot: %lld masked tokens, mask_indices_list = flat nonzero",
           (long long)nm);
    check_arr("ibot masks_weight", mw, mw_ref, n);

    for (int variant = 0; variant < 2; variant++) {
        const char *v = variant == 0 ? "softmax_center" : "sinkhorn";
        dv_center c = {0};
        if (variant == 0) {
            rc = center_init(&c, K);
            float *c0 = rd_f32("ibot/center", K);
            if (rc == DV_OK) {
                memcpy(c.center, c0, (size_t)K * sizeof(float));
                c.momentum = cm;
                rc = center_softmax_teacher(P, &c, tl, n, tt);
            }
            free(c0);
        } else {
            dv_sinkhorn_opts o = sinkhorn_default_opts(1, NULL, NULL);
            rc = sinkhorn_knopp_ibot(P, tl, n, K, tt, &o);
        }
        tap_ok(rc == DV_OK, "ibot/%s: teacher normalisation runs", v);
        snprintf(name, sizeof name, "ibot/%s/teacher_probs", v);
        float *ref = rd_f32(name, n * K);
        snprintf(name, sizeof name, "ibot/%s teacher_probs", v);
        check_arr(name, P, ref, n * K);
        free(ref);
        if (variant == 0) {
            rc = center_update(&c, tl, n, DV_CENTER_ROW_MEAN, 1, NULL, NULL);
            if (rc == DV_OK) rc = center_apply_pending(&c);
            tap_ok(rc == DV_OK, "ibot: center update runs");
            ref = rd_f32("ibot/center_after_update", K);
            check_arr("ibot center_after_update", c.center, ref, K);
            free(ref);
            center_free(&c);
        }
        double loss = NAN;
        rc = ibot_loss_forward_backward(&loss, dS, sl, P, mw, n, 2 * B, K, ts, 1.0);
        tap_ok(rc == DV_OK, "ibot/%s: loss runs", v);
        snprintf(name, sizeof name, "ibot/%s/loss", v);
        const double ref_loss = rd_scalar(name);
        snprintf(name, sizeof name, "ibot/%s loss", v);
        check_scalar(name, loss, ref_loss);
        snprintf(name, sizeof name, "ibot/%s/grad_student", v);
        ref = rd_f32(name, n * K);
        snprintf(name, sizeof name, "ibot/%s grad_student", v);
        check_arr(name, dS, ref, n * K);
        free(ref);
    }
    free(masks), free(idx), free(mw_ref), free(tl), free(sl), free(P), free(dS), free(mw);
}

/* ---- koleo ---- */

static void test_koleo(void) {
    const int64_t n = 8, D = 64;
    float *x = rd_f32("koleo/x", n * D);
    float *dx = malloc((size_t)(n * D) * sizeof *dx);
    int64_t *nn_ref = ds_read("koleo/nn_index_single", H5T_NATIVE_INT64, sizeof(int64_t), n);
    int64_t nn[8];
    double loss = NAN;
    int rc = koleo_forward_backward(&loss, dx, nn, x, n, D, 1.0);
    tap_ok(rc == DV_OK, "koleo: runs on %lld rows", (long long)n);
    check_scalar("koleo loss_single", loss, rd_scalar("koleo/loss_single"));
    float *ref = rd_f32("koleo/grad_single", n * D);
    check_arr("koleo grad_single", dx, ref, n * D);
    free(ref);
    int same = 1;
    for (int64_t i = 0; i < n; i++) same &= nn[i] == nn_ref[i];
    tap_ok(same, "koleo nn_index_single identical");
    rc = koleo_ssl_forward_backward(&loss, dx, x, n, D, 0.1, 1.0);
    tap_ok(rc == DV_OK, "koleo meta-arch form runs");
    check_scalar("koleo loss_ssl", loss, rd_scalar("koleo/loss_ssl"));
    ref = rd_f32("koleo/grad_ssl", n * D);
    check_arr("koleo grad_ssl", dx, ref, n * D);
    free(ref), free(x), free(dx), free(nn_ref);
}

/* ---- chain (losses only) ---- */

/* A DINOHead built from a golden group's attributes with its param/<key> datasets loaded. */
static float *load_head(dv_head *h, const char *group) {
    dv_head_config cfg = {
        .in_dim = (int64_t)attr_d(group, "in_dim"),
        .out_dim = (int64_t)attr_d(group, H5Aexists_by_name(golden_file, group, "K", H5P_DEFAULT) > 0
                                                  ? "K" : "out_dim"),
        .nlayers = 3,
        .hidden_dim = (int64_t)attr_d(group, "hidden_dim"),
        .bottleneck_dim = (int64_t)attr_d(group, "bottleneck_dim"),
        .mlp_bias = 1,
    };
    if (H5Aexists_by_name(golden_file, group, "nlayers", H5P_DEFAULT) > 0)
        cfg.nlayers = (int64_t)attr_d(group, "nlayers");
    if (dv_head_init(h, &cfg) != DV_OK) {
        printf("Bail out! cannot build the head of %s\n", group);
        exit(1);
    }
    float *w = malloc(h->params.numel * sizeof *w);
    for (int i = 0; i < h->params.n; i++) {
        char name[256];
        snprintf(name, sizeof name, "%s/param/%s", group, h->params.t[i].name);
        float *t = rd_f32(name, (int64_t)h->params.t[i].numel);
        memcpy(w + h->params.t[i].offset, t, h->params.t[i].numel * sizeof *t);
        free(t);
    }
    return w;
}

static void check_head_grads(const char *group, const dv_head *h, const float *grad) {
    for (int i = 0; i < h->params.n; i++) {
        char name[256], what[256];
        snprintf(name, sizeof name, "%s/grad/%s", group, h->params.t[i].name);
        snprintf(what, sizeof what, "%s grad %s", group, h->params.t[i].name);
        float *ref = rd_f32(name, (int64_t)h->params.t[i].numel);
        check_arr(what, grad + h->params.t[i].offset, ref, (int64_t)h->params.t[i].numel);
        free(ref);
    }
}

static void test_dino_head(const char *group) {
    dv_head h;
    float *w = load_head(&h, group);
    const int64_t K = h.cfg.out_dim, D = h.cfg.in_dim, BN = h.cfg.bottleneck_dim;
    const int64_t n = ds_numel(strcat(strcpy((char[256]){0}, group), "/x")) / D;
    char name[256];
    float *x = rd_f32(strcat(strcpy(name, group), "/x"), n * D);
    float *R = rd_f32(strcat(strcpy(name, group), "/R"), n * K);
    float *y = malloc((size_t)(n * K) * sizeof *y), *dx = malloc((size_t)(n * D) * sizeof *dx);
    float *grad = calloc(h.params.numel, sizeof *grad);
    dv_head_acts a;
    int rc = dv_head_acts_create(&h, n, &a);
    if (rc == DV_OK) rc = dv_head_forward(&h, w, &a, x, n, y);
    if (rc == DV_OK) rc = dv_head_backward(&h, w, grad, &a, R, n, dx);
    tap_ok(rc == DV_OK, "%s: head forward and backward run", group);
    char what[256];
    float *ref = rd_f32(strcat(strcpy(name, group), "/y"), n * K);
    check_arr(strcat(strcpy(what, group), " y"), y, ref, n * K);
    free(ref);
    /* last_layer_weight_effective is not compared: it equals param/last_layer.weight_v
     * exactly (rows not unit-norm), i.e. torch's cached .weight from before the weight_norm
     * pre-hook ran, while y (which matches) was computed with g·v/||v||. */
    (void)BN;
    ref = rd_f32(strcat(strcpy(name, group), "/grad_x"), n * D);
    check_arr(strcat(strcpy(what, group), " grad_x"), dx, ref, n * D);
    free(ref);
    check_head_grads(group, &h, grad);
    dv_head_acts_free(&a);
    dv_head_free(&h);
    free(w), free(x), free(R), free(y), free(dx), free(grad);
}

static void test_chain(void) {
    const int64_t B = (int64_t)attr_d("chain", "B"), K = (int64_t)attr_d("chain", "K");
    const int64_t L = (int64_t)attr_d("chain", "n_local_crops");
    const int64_t D = (int64_t)attr_d("chain", "in_dim");
    const double tt = attr_d("chain", "teacher_temp"), ts = attr_d("chain", "student_temp");
    const double kw = attr_d("chain", "koleo_weight");
    float *tl = rd_f32("chain/teacher_logits", 2 * B * K);
    float *hg = rd_f32("chain/head_out_global", 2 * B * K);
    float *hl = rd_f32("chain/head_out_local", L * B * K);
    float *cls = rd_f32("chain/cls_global", 2 * B * D);
    float *P = malloc((size_t)(2 * B * K) * sizeof *P);
    dv_sinkhorn_opts o = sinkhorn_default_opts(1, NULL, NULL);
    int rc = sinkhorn_knopp_dino(P, tl, 2 * B, K, tt, &o);
    float *ref = rd_f32("chain/teacher_probs", 2 * B * K);
    check_arr("chain teacher_probs", P, ref, 2 * B * K);
    dv_dino_loss_parts parts = {0, 0};
    if (rc == DV_OK)
        rc = dino_loss_forward_backward(&parts, NULL, NULL, hg, hl, P, B, L, K, ts, 1.0);
    double kl = NAN;
    if (rc == DV_OK) rc = koleo_ssl_forward_backward(&kl, NULL, cls, 2 * B, D, kw, 1.0);
    tap_ok(rc == DV_OK, "chain: losses run");
    check_scalar("chain dino_local_loss", parts.local, rd_scalar("chain/dino_local_loss"));
    check_scalar("chain dino_global_loss", parts.global, rd_scalar("chain/dino_global_loss"));
    check_scalar("chain koleo_loss", kl, rd_scalar("chain/koleo_loss"));
    check_scalar("chain total_loss", parts.local + parts.global + kl,
                 rd_scalar("chain/total_loss"));

    /* the same through the head: cat(cls_local, cls_global) -> head -> losses, all gradients */
    dv_head h;
    float *w = load_head(&h, "chain");
    float *cls_l = rd_f32("chain/cls_local", L * B * D);
    const int64_t n = (L + 2) * B;
    float *x = malloc((size_t)(n * D) * sizeof *x), *y = malloc((size_t)(n * K) * sizeof *y);
    float *dy = malloc((size_t)(n * K) * sizeof *dy), *dx = malloc((size_t)(n * D) * sizeof *dx);
    float *dk = malloc((size_t)(2 * B * D) * sizeof *dk);
    float *grad = calloc(h.params.numel, sizeof *grad);
    memcpy(x, cls_l, (size_t)(L * B * D) * sizeof *x);
    memcpy(x + L * B * D, cls, (size_t)(2 * B * D) * sizeof *x);
    dv_head_acts a;
    rc = dv_head_acts_create(&h, n, &a);
    if (rc == DV_OK) rc = dv_head_forward(&h, w, &a, x, n, y);
    float *yref = rd_f32("chain/head_out_local", L * B * K);
    check_arr("chain head_out_local", y, yref, L * B * K);
    free(yref);
    yref = rd_f32("chain/head_out_global", 2 * B * K);
    check_arr("chain head_out_global", y + L * B * K, yref, 2 * B * K);
    free(yref);
    if (rc == DV_OK)
        rc = dino_loss_forward_backward(&parts, dy + L * B * K, dy, y + L * B * K, y, P, B, L, K, ts, 1.0);
    if (rc == DV_OK) rc = dv_head_backward(&h, w, grad, &a, dy, n, dx);
    if (rc == DV_OK) rc = koleo_ssl_forward_backward(&kl, dk, cls, 2 * B, D, kw, 1.0);
    for (int64_t i = 0; i < 2 * B * D; i++) dx[L * B * D + i] += dk[i];
    tap_ok(rc == DV_OK, "chain: head + losses forward and backward run");
    check_scalar("chain total_loss through the head", parts.local + parts.global + kl,
                 rd_scalar("chain/total_loss"));
    yref = rd_f32("chain/grad_cls_local", L * B * D);
    check_arr("chain grad_cls_local", dx, yref, L * B * D);
    free(yref);
    yref = rd_f32("chain/grad_cls_global", 2 * B * D);
    check_arr("chain grad_cls_global", dx + L * B * D, yref, 2 * B * D);
    free(yref);
    check_head_grads("chain", &h, grad);
    dv_head_acts_free(&a);
    dv_head_free(&h);
    free(w), free(cls_l), free(x), free(y), free(dy), free(dx), free(dk), free(grad);
    free(ref), free(tl), free(hg), free(hl), free(cls), free(P);
}

int main(void) {
    const char *dir = getenv("srcdir");
    if (!dir || !*dir) dir = ".";
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/golden/losses.h5", dir);
    golden_file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (golden_file < 0) {
        tap_no_plan();
        tap_ok(0, "cannot open %s", path);
        return tap_exit();
    }
    tap_no_plan();
    test_dino();
    test_ibot();
    test_koleo();
    test_dino_head("dino_head/official_init");
    test_dino_head("dino_head/random_bias");
    test_chain();
    H5Fclose(golden_file);
    return tap_exit();
}
