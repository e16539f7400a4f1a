/* bench_gemm — the reference rates every other benchmark is compared with: which OpenBLAS
 * kernel runs and the float32 GEMM rate it reaches here (ViT-S-sized shapes). Prints
 * name=value lines. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>

#include "rng.h"
#include "timer.h"
#include "bench_sgemm.h"


int main(void) {
    printf("openblas_core=%s\n", openblas_get_corename());
    printf("openblas_threads=%d\n", openblas_get_num_threads());
    /* (32 images x 257 tokens, 384) x (1536, 384)ᵀ: the ViT-S/14 MLP fc1 at batch 32 */
    printf("sgemm_vits_fc1_gflops=%.1f\n", bench_sgemm_gflops(32 * 257, 1536, 384, 1.0));
    printf("sgemm_1024_gflops=%.1f\n", bench_sgemm_gflops(1024, 1024, 1024, 1.0));
    return 0;
}
