/* gpu_check — error-check macros for the CUDA, cuBLAS and NCCL families (see src/err.h for
 * the convention): print one line with file, line, rank and host, then `return` the status. */
#ifndef DV_GPU_CHECK_H
#define DV_GPU_CHECK_H

#include "err.h"

#define DV_CHECK_CUDA(call)                                                                        \
    do {                                                                                           \
        cudaError_t dv_cu_rc_ = (call);                                                            \
        if (dv_cu_rc_ != cudaSuccess)                                                              \
            return DV_ERR(DV_ERR_CUDA, "%s failed: %s (%s)", #call, cudaGetErrorName(dv_cu_rc_),   \
                          cudaGetErrorString(dv_cu_rc_));                                          \
    } while (0)

#define DV_CHECK_CUBLAS(call)                                                                      \
    do {                                                                                           \
        cublasStatus_t dv_cb_rc_ = (call);                                                         \
        if (dv_cb_rc_ != CUBLAS_STATUS_SUCCESS)                                                    \
            return DV_ERR(DV_ERR_CUBLAS, "%s failed: %s", #call, cublasGetStatusString(dv_cb_rc_)); \
    } while (0)

#define DV_CHECK_NCCL(call)                                                                        \
    do {                                                                                           \
        ncclResult_t dv_nc_rc_ = (call);                                                           \
        if (dv_nc_rc_ != ncclSuccess)                                                              \
            return DV_ERR(DV_ERR_NCCL, "%s failed: %s", #call, ncclGetErrorString(dv_nc_rc_));     \
    } while (0)

#endif
