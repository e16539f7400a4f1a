#!/bin/sh
# summary.sh [BUILDDIR] — one line over every TAP test point of the last `make check`:
# "N passed, N failed, N skipped" (XFAIL counts as passed, XPASS and ERROR as failed).
dir=${1:-.}
find "$dir/tests" -name '*.trs' 2>/dev/null | xargs cat 2>/dev/null |
awk '/^:test-result:/ { r = $2
        if (r == "PASS" || r == "XFAIL") p++
        else if (r == "SKIP") s++
        else f++ }
     END { printf "%d passed, %d failed, %d skipped\n", p, f, s }'
