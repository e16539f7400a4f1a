#!/bin/sh
# The run context and MPI error path on 3 ranks (more ranks than cores).
exec "$srcdir/tests/mpirun.sh" 3 "${top_builddir:-.}/tests/test_mpi_ctx" 3
