/* gpu — the CUDA device context of the CUDA backend, callable from C: device choice, one
 * compute stream, cuBLAS and cuBLASLt handles, memory, and the first kernels (fp32 <-> fp16
 * casts used by the float16 collectives) plus a row-major SGEMM.
 *
 *   int n; dv_gpu_device_count(&n);            // 0 without a driver or device: not an error
 *   dv_gpu *g; dv_gpu_create(&g, local_rank % n);
 *   dv_gpu_sgemm(g, 0, 1, M, N, K, 1.f, A, K, B, K, 0.f, C, N);   // C (M,N) = A (M,K) · B(N,K)ᵀ
 *   dv_gpu_destroy(g);
 *
 * Conventions: pointers passed to kernels are device pointers; matrices are row-major like the
 * CPU ops (the cuBLAS column-major call is formed inside); every function returns a dv_status.
 * fp16 values are carried as uint16_t bit patterns in C.
 */
#ifndef DV_GPU_H
#define DV_GPU_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dv_gpu dv_gpu;

int dv_gpu_device_count(int *count);
int dv_gpu_create(dv_gpu **out, int device);
void dv_gpu_destroy(dv_gpu *g);
int dv_gpu_device(const dv_gpu *g);
void *dv_gpu_stream(const dv_gpu *g); /* cudaStream_t */
int dv_gpu_describe(const dv_gpu *g, char *buf, size_t len); /* "NVIDIA H100 (sm_90, 79 GiB)" */

int dv_gpu_malloc(dv_gpu *g, void **ptr, size_t bytes);
int dv_gpu_free(dv_gpu *g, void *ptr);
int dv_gpu_to_device(dv_gpu *g, void *dst, const void *src, size_t bytes);
int dv_gpu_to_host(dv_gpu *g, void *dst, const void *src, size_t bytes);
int dv_gpu_sync(dv_gpu *g);

/* y[i] = fp16(x[i]) with round-to-nearest-even; and back. n elements. */
int dv_gpu_cast_f32_to_f16(dv_gpu *g, const float *x, uint16_t *y, size_t n);
int dv_gpu_cast_f16_to_f32(dv_gpu *g, const uint16_t *x, float *y, size_t n);

/* Row-major C (M,N) = alpha · op(A) · op(B) + beta · C, op = transpose when trans_* != 0.
 * A is (M,K) or, transposed, (K,M); B is (K,N) or, transposed, (N,K). */
int dv_gpu_sgemm(dv_gpu *g, int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                 const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                 int64_t ldc);

#ifdef __cplusplus
}
#endif
#endif
