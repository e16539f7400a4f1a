#!/bin/sh
# mpirun.sh NP PROGRAM [ARGS...] — run an MPI test on NP ranks on this machine, as root too,
# with more ranks than cores (see doc/ and the platform notes): oversubscribe, yield when
# idle, shared-memory transport, one BLAS/OpenMP thread per rank.
np=$1
shift
: "${MPIRUN:=mpirun}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_mpi_yield_when_idle=1
export OMPI_MCA_btl="${OMPI_MCA_btl:-self,vader}"
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS="${DV_TEST_OMP_THREADS:-1}"
exec "$MPIRUN" -np "$np" --bind-to none "$@"
