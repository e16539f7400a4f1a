#!/bin/sh
# The data loader over ranks: tests/test_loader on 2 and then on 3 ranks. Each run splits its
# ranks into sub-communicators of 1 .. NP ranks and checks that every image's ids, crops and
# masks are the same for every world size. The two TAP streams are merged into one: test points
# renumbered and tagged [np N], one plan at the end, and a failing point added for a run that
# exits nonzero or whose plan does not match the points it printed.
prog="${top_builddir:-.}/tests/test_loader"
tmp=$(mktemp "${TMPDIR:-/tmp}/mpi_loader.XXXXXX") || exit 1
trap 'rm -f "$tmp" "$tmp.n"' EXIT
n=0
fail=0
for np in 2 3; do
    sh "$srcdir/tests/mpirun.sh" "$np" "$prog" >"$tmp"
    st=$?
    awk -v base="$n" -v np="$np" -v st="$st" -v nfile="$tmp.n" '
        /^(not )?ok [0-9]+/ {
            k++
            bad = ($1 == "not")
            sub(/^(not )?ok [0-9]+/, "")
            printf "%s %d [np %s]%s\n", bad ? "not ok" : "ok", base + k, np, $0
            next
        }
        /^1\.\.[0-9]+/ { plan = substr($1, 4) + 0; seen = 1; next }
        { print }
        END {
            if (st != 0 || !seen || plan != k) {
                k++
                printf "not ok %d [np %s] - exit status %s, plan %s, %d points\n", base + k, np,
                       st, seen ? plan : "missing", k - 1
                fail = 1
            }
            print base + k, fail + 0 > nfile
        }' "$tmp"
    read -r n f <"$tmp.n"
    [ "$f" = 1 ] && fail=1
done
echo "1..$n"
exit "$fail"
