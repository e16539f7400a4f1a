// nccl_comm — see nccl_comm.h.
#include <cuda_runtime.h>
#include <nccl.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_check.h"
#include "nccl_comm.h"

static_assert(sizeof(ncclUniqueId) == DV_NCCL_ID_BYTES, "ncclUniqueId size changed");

struct dv_nccl {
    ncclComm_t comm;
    dv_gpu *gpu;
};

static ncclDataType_t nccl_type_(dv_nccl_type t) {
    return t == DV_NCCL_F16 ? ncclFloat16 : t == DV_NCCL_BF16 ? ncclBfloat16 : ncclFloat32;
}

extern "C" int dv_nccl_version(int *version) {
    DV_CHECK_NCCL(ncclGetVersion(version));
    return DV_OK;
}

extern "C" int dv_nccl_make_id(unsigned char id[DV_NCCL_ID_BYTES]) {
    ncclUniqueId u;
    DV_CHECK_NCCL(ncclGetUniqueId(&u));
    memcpy(id, &u, sizeof u);
    return DV_OK;
}

extern "C" int dv_nccl_create(dv_nccl **out, const unsigned char id[DV_NCCL_ID_BYTES], int nranks,
                              int rank, dv_gpu *gpu) {
    *out = NULL;
    dv_nccl *c = (dv_nccl *)calloc(1, sizeof *c);
    DV_CHECK_ALLOC(c);
    ncclUniqueId u;
    memcpy(&u, id, sizeof u);
    c->gpu = gpu;
    cudaError_t crc = cudaSetDevice(dv_gpu_device(gpu));
    if (crc != cudaSuccess) {
        free(c);
        DV_CHECK_CUDA(crc);
    }
    ncclResult_t rc = ncclCommInitRank(&c->comm, nranks, u, rank);
    if (rc != ncclSuccess) {
        free(c);
        DV_CHECK_NCCL(rc);
    }
    *out = c;
    return DV_OK;
}

extern "C" void dv_nccl_destroy(dv_nccl *c) {
    if (!c) return;
    ncclCommDestroy(c->comm);
    free(c);
}

extern "C" int dv_nccl_allreduce_sum(dv_nccl *c, const void *send, void *recv, size_t count,
                                     dv_nccl_type type) {
    DV_CHECK_NCCL(ncclAllReduce(send, recv, count, nccl_type_(type), ncclSum, c->comm,
                                (cudaStream_t)dv_gpu_stream(c->gpu)));
    return DV_OK;
}
