#!/bin/sh
# Image shards read in parallel (MPI-IO hyperslabs) on 2 ranks.
exec "$srcdir/tests/mpirun.sh" 2 "${top_builddir:-.}/tests/test_h5images"
