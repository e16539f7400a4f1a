/* nccl_boot — create an NCCL communicator over the ranks of an MPI communicator. */
#ifndef DV_NCCL_BOOT_H
#define DV_NCCL_BOOT_H

#include <mpi.h>

#include "nccl_comm.h"

int dv_nccl_create_mpi(dv_nccl **out, MPI_Comm comm, dv_gpu *gpu);

#endif
