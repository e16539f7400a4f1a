/* nccl_comm — NCCL communicator for the CUDA backend (issue 7 builds the full dv_comm layer
 * on it). Collectives run on the gpu's stream; counts are element counts, never bytes.
 *
 *   dv_nccl *c; dv_nccl_create_mpi(&c, MPI_COMM_WORLD, gpu);   // rank 0 makes the id, MPI bcasts it
 *   dv_nccl_allreduce_sum(c, send, recv, count, DV_NCCL_F32);
 */
#ifndef DV_NCCL_COMM_H
#define DV_NCCL_COMM_H

#include <stddef.h>

#include "gpu.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dv_nccl dv_nccl;
typedef enum { DV_NCCL_F32 = 0, DV_NCCL_F16 = 1, DV_NCCL_BF16 = 2 } dv_nccl_type;

enum { DV_NCCL_ID_BYTES = 128 }; /* sizeof(ncclUniqueId) */

int dv_nccl_version(int *version);
int dv_nccl_make_id(unsigned char id[DV_NCCL_ID_BYTES]);
int dv_nccl_create(dv_nccl **out, const unsigned char id[DV_NCCL_ID_BYTES], int nranks, int rank,
                   dv_gpu *gpu);
void dv_nccl_destroy(dv_nccl *c);
int dv_nccl_allreduce_sum(dv_nccl *c, const void *send, void *recv, size_t count, dv_nccl_type type);

#ifdef __cplusplus
}
#endif
#endif
