/* bench_vit — ViT-S/14 backbone throughput on the CPU: forward and forward + backward img/s at
 * 224 px (batch 32, random init), achieved GFLOP/s (2 FLOPs per multiply-add, GEMMs and the
 * attention products, counted from the shapes by dv_vit_*_flops), the OpenBLAS kernel, the
 * sgemm rate measured in the same run on the ViT-S fc1 shape, and efficiency = achieved / that
 * rate. Prints name=value lines only.
 *
 * Environment: DV_BENCH_BATCH (default 32), DV_BENCH_REPS (timed forwards and forward +
 * backward steps, default 1) after one untimed forward. Both run on training activations
 * (what a training step pays), eval mode: no stochastic depth, no image gradient. The sgemm
 * rate is the best of five 0.4 s measurements before and after the model (the cores may be
 * shared). About 40 s at batch 32 on 2 busy cores.
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "err.h"
#include "rng.h"
#include "timer.h"
#include "vit.h"
#include "bench_sgemm.h"


static int64_t env_int(const char *name, int64_t def) {
    const char *s = getenv(name);
    return s && s[0] ? strtoll(s, NULL, 10) : def;
}

/* Best of `n` measurements of `seconds` each: the machine may be shared, the best is the rate
 * the cores deliver when this process has them. */

int main(void) {
    const int64_t B = env_int("DV_BENCH_BATCH", 32), reps = env_int("DV_BENCH_REPS", 1);
    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    printf("openblas_core=%s\n", openblas_get_corename());
    printf("openblas_threads=%d\n", openblas_get_num_threads());
    printf("omp_threads=%d\n", threads);
    const int M = (int)(B * 257);
    double sgemm = bench_sgemm_best(M, 3, 0.4);

    dv_vit_config cfg;
    dv_vit m;
    if (dv_vit_config_preset(&cfg, "vit_small", 14) != DV_OK) return 1;
    cfg.img_size = 224;
    cfg.drop_path_rate = 0.0;
    if (dv_vit_init(&m, &cfg) != DV_OK) return 1;
    float *w = malloc(m.params.numel * sizeof *w), *grad = calloc(m.params.numel, sizeof *grad);
    float *img = malloc((size_t)(B * 3 * 224 * 224) * sizeof *img);
    if (!w || !grad || !img) return 1;
    dv_vit_init_weights(&m, w, 0);
    dv_rng r;
    dv_rng_init(&r, 2, DV_RNG_TEST, 0, 0);
    for (int64_t i = 0; i < B * 3 * 224 * 224; i++) img[i] = 2.0f * dv_rng_uniform(&r) - 1.0f;
    dv_vit_group g = {.n = B, .H = 224, .W = 224, .images = img, .masks = NULL};
    const int64_t T = dv_vit_tokens(&m, &g, 1);
    const double ffl = dv_vit_forward_flops(&m, &g, 1), bfl = dv_vit_backward_flops(&m, &g, 1, 0);
    printf("model=vit_small/14\n");
    printf("img=224\n");
    printf("batch=%lld\n", (long long)B);
    printf("tokens=%lld\n", (long long)T);
    printf("params=%zu\n", m.params.numel);
    printf("fwd_gflop_per_img=%.3f\n", ffl / (double)B * 1e-9);
    printf("fwdbwd_gflop_per_img=%.3f\n", (ffl + bfl) / (double)B * 1e-9);

    dv_vit_acts *at = NULL;
    if (dv_vit_acts_create(&m, T, 1, 0, &at) != DV_OK) return 1;
    printf("acts_training_mib=%.1f\n", (double)at->bytes / 1048576.0);
    printf("acts_inference_mib=%.1f\n", (double)dv_vit_acts_bytes(&m, T, 0, 0) / 1048576.0);
    dv_vit_fwd_opts o = {0};
    /* warm-up: first touch of the activation memory, OpenBLAS buffers */
    if (dv_vit_forward(&m, w, at, &g, 1, &o) != DV_OK) return 1;
    double t0 = dv_now();
    for (int64_t k = 0; k < reps; k++)
        if (dv_vit_forward(&m, w, at, &g, 1, &o) != DV_OK) return 1;
    const double tf = (dv_now() - t0) / (double)reps;

    float *dout = malloc((size_t)(T * cfg.embed_dim) * sizeof *dout);
    if (!dout) return 1;
    for (int64_t i = 0; i < T * cfg.embed_dim; i++) dout[i] = 1e-3f * (dv_rng_uniform(&r) - 0.5f);
    dv_vit_grads_in gi = {.d_norm = dout};
    t0 = dv_now();
    for (int64_t k = 0; k < reps; k++) {
        if (dv_vit_forward(&m, w, at, &g, 1, &o) != DV_OK) return 1;
        if (dv_vit_backward(&m, w, grad, at, &gi, NULL) != DV_OK) return 1;
    }
    const double tb = (dv_now() - t0) / (double)reps;
    const double sgemm_after = bench_sgemm_best(M, 2, 0.4);
    if (sgemm_after > sgemm) sgemm = sgemm_after;
    printf("sgemm_shape=%dx1536x384\n", M);
    printf("sgemm_gflops=%.1f\n", sgemm);
    printf("fwd_seconds=%.3f\n", tf);
    printf("fwd_img_per_s=%.2f\n", (double)B / tf);
    printf("fwd_gflops=%.1f\n", ffl / tf * 1e-9);
    printf("fwd_efficiency=%.3f\n", ffl / tf * 1e-9 / sgemm);
    printf("fwdbwd_seconds=%.3f\n", tb);
    printf("fwdbwd_img_per_s=%.2f\n", (double)B / tb);
    printf("fwdbwd_gflops=%.1f\n", (ffl + bfl) / tb * 1e-9);
    printf("fwdbwd_efficiency=%.3f\n", (ffl + bfl) / tb * 1e-9 / sgemm);
    dv_vit_acts_free(at);
    free(dout);
    free(img);
    free(grad);
    free(w);
    dv_vit_free(&m);
    return 0;
}
