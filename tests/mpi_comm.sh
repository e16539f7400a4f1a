#!/bin/sh
# Collectives on 1, 2 and 3 ranks; one TAP stream (the plans of the three runs are merged).
out=$(mktemp) || exit 1
trap 'rm -f "$out"' EXIT
status=0
for np in 1 2 3; do
    "$srcdir/tests/mpirun.sh" $np "${top_builddir:-.}/tests/test_comm" >>"$out" || status=1
done
# renumber: drop the per-run plans, number the test lines, print one plan at the end
awk '/^1\.\.[0-9]+$/ { next }
     /^(not )?ok [0-9]+/ { n++; sub(/ok [0-9]+/, "ok " n); print; next }
     { print }
     END { print "1.." n }' "$out"
exit $status
