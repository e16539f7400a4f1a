#!/bin/sh
# Data-parallel training on 1, 2 and 3 ranks gives the same step (sub-communicators of 3 ranks).
exec "$srcdir/tests/mpirun.sh" 3 "${top_builddir:-.}/tests/test_ssl_ranks"
