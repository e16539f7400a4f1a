// gpu — CUDA device context, casts and SGEMM; see gpu.h.
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

#include "gpu.h"
#include "gpu_check.h"

struct dv_gpu {
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    cublasLtHandle_t blaslt;
};

extern "C" int dv_gpu_device_count(int *count) {
    int n = 0;
    cudaError_t rc = cudaGetDeviceCount(&n);
    // no driver (35) or no device (100) is a normal state on CPU machines
    if (rc == cudaErrorInsufficientDriver || rc == cudaErrorNoDevice) {
        (void)cudaGetLastError();
        *count = 0;
        return DV_OK;
    }
    DV_CHECK_CUDA(rc);
    *count = n;
    return DV_OK;
}

extern "C" int dv_gpu_create(dv_gpu **out, int device) {
    *out = NULL;
    dv_gpu *g = (dv_gpu *)calloc(1, sizeof *g);
    DV_CHECK_ALLOC(g);
    g->device = device;
    cudaError_t rc = cudaSetDevice(device);
    if (rc == cudaSuccess) rc = cudaStreamCreateWithFlags(&g->stream, cudaStreamNonBlocking);
    if (rc != cudaSuccess) {
        free(g);
        DV_CHECK_CUDA(rc);
    }
    cublasStatus_t st = cublasCreate(&g->blas);
    if (st == CUBLAS_STATUS_SUCCESS) st = cublasSetStream(g->blas, g->stream);
    if (st == CUBLAS_STATUS_SUCCESS) st = cublasLtCreate(&g->blaslt);
    if (st != CUBLAS_STATUS_SUCCESS) {
        dv_gpu_destroy(g);
        DV_CHECK_CUBLAS(st);
    }
    *out = g;
    return DV_OK;
}

extern "C" void dv_gpu_destroy(dv_gpu *g) {
    if (!g) return;
    if (g->blaslt) cublasLtDestroy(g->blaslt);
    if (g->blas) cublasDestroy(g->blas);
    if (g->stream) cudaStreamDestroy(g->stream);
    free(g);
}

extern "C" int dv_gpu_device(const dv_gpu *g) { return g->device; }
extern "C" void *dv_gpu_stream(const dv_gpu *g) { return (void *)g->stream; }

extern "C" int dv_gpu_describe(const dv_gpu *g, char *buf, size_t len) {
    cudaDeviceProp p;
    DV_CHECK_CUDA(cudaGetDeviceProperties(&p, g->device));
    snprintf(buf, len, "%s (sm_%d%d, %.0f GiB)", p.name, p.major, p.minor,
             (double)p.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
    return DV_OK;
}

extern "C" int dv_gpu_malloc(dv_gpu *g, void **ptr, size_t bytes) {
    (void)g;
    DV_CHECK_CUDA(cudaMalloc(ptr, bytes));
    return DV_OK;
}

extern "C" int dv_gpu_free(dv_gpu *g, void *ptr) {
    (void)g;
    DV_CHECK_CUDA(cudaFree(ptr));
    return DV_OK;
}

extern "C" int dv_gpu_to_device(dv_gpu *g, void *dst, const void *src, size_t bytes) {
    DV_CHECK_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, g->stream));
    DV_CHECK_CUDA(cudaStreamSynchronize(g->stream));
    return DV_OK;
}

extern "C" int dv_gpu_to_host(dv_gpu *g, void *dst, const void *src, size_t bytes) {
    DV_CHECK_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, g->stream));
    DV_CHECK_CUDA(cudaStreamSynchronize(g->stream));
    return DV_OK;
}

extern "C" int dv_gpu_sync(dv_gpu *g) {
    DV_CHECK_CUDA(cudaStreamSynchronize(g->stream));
    return DV_OK;
}

__global__ void cast_f32_to_f16_kernel(const float *x, __half *y, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        y[i] = __float2half_rn(x[i]);
}

__global__ void cast_f16_to_f32_kernel(const __half *x, float *y, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        y[i] = __half2float(x[i]);
}

static unsigned grid_for_(size_t n, unsigned block) {
    size_t g = (n + block - 1) / block;
    return (unsigned)(g > 65535u * 32u ? 65535u * 32u : (g ? g : 1));
}

extern "C" int dv_gpu_cast_f32_to_f16(dv_gpu *g, const float *x, uint16_t *y, size_t n) {
    cast_f32_to_f16_kernel<<<grid_for_(n, 256), 256, 0, g->stream>>>(x, (__half *)y, n);
    DV_CHECK_CUDA(cudaGetLastError());
    return DV_OK;
}

extern "C" int dv_gpu_cast_f16_to_f32(dv_gpu *g, const uint16_t *x, float *y, size_t n) {
    cast_f16_to_f32_kernel<<<grid_for_(n, 256), 256, 0, g->stream>>>((const __half *)x, y, n);
    DV_CHECK_CUDA(cudaGetLastError());
    return DV_OK;
}

extern "C" int dv_gpu_sgemm(dv_gpu *g, int trans_a, int trans_b, int64_t M, int64_t N, int64_t K,
                            float alpha, const float *A, int64_t lda, const float *B, int64_t ldb,
                            float beta, float *C, int64_t ldc) {
    // Row-major C = op(A)·op(B) is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ: swap the operands.
    DV_CHECK_CUBLAS(cublasSgemm_64(g->blas, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                                   trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha, B, ldb, A,
                                   lda, &beta, C, ldc));
    return DV_OK;
}
