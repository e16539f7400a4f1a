/* nccl_boot — NCCL communicator bootstrap over MPI: rank 0 creates the unique id and MPI
 * broadcasts it, so no TCP store or environment variables are needed. */
#include <mpi.h>

#include "err.h"
#include "nccl_boot.h"

int dv_nccl_create_mpi(dv_nccl **out, MPI_Comm comm, dv_gpu *gpu) {
    int rank, world;
    unsigned char id[DV_NCCL_ID_BYTES] = {0};
    *out = NULL;
    DV_CHECK_MPI(MPI_Comm_rank(comm, &rank));
    DV_CHECK_MPI(MPI_Comm_size(comm, &world));
    int st = rank == 0 ? dv_nccl_make_id(id) : DV_OK;
    /* every rank learns whether rank 0 got an id, so none waits forever */
    DV_CHECK_MPI(MPI_Bcast(&st, 1, MPI_INT, 0, comm));
    if (st != DV_OK) return st;
    DV_CHECK_MPI(MPI_Bcast(id, DV_NCCL_ID_BYTES, MPI_BYTE, 0, comm));
    return dv_nccl_create(out, id, world, rank, gpu);
}
