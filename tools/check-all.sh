#!/bin/sh
# check-all.sh — build and run the whole test suite twice, as CI does:
#   build-ci/    ./configure --enable-werror                      (warnings are errors)
#   build-asan/  ./configure --enable-werror --enable-sanitizers  (ASan + UBSan)
# Ends with one line "N passed, N failed, N skipped" over both builds; exits non-zero on any
# failure. Options go to both configure runs (e.g. --with-cuda=no).
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top" || exit 1
jobs=$(nproc 2>/dev/null || echo 2)
autoreconf -fi >/dev/null 2>&1 || { autoreconf -fi; exit 1; }
status=0
summaries=""
for variant in ci asan; do
    dir="$top/build-$variant"
    flags="--enable-werror"
    [ "$variant" = asan ] && flags="$flags --enable-sanitizers"
    mkdir -p "$dir"
    echo "== $variant build: configure $flags $*"
    if ! (cd "$dir" && "$top/configure" $flags "$@" >configure.out 2>&1); then
        tail -n 20 "$dir/configure.out"
        echo "configure failed ($variant build)"
        status=1
        continue
    fi
    sed -n '/^dinov2c .* configuration/,$p' "$dir/configure.out"
    if ! (cd "$dir" && make -j"$jobs" >make.out 2>&1); then
        grep -E 'error|warning' "$dir/make.out" | head -n 40
        echo "build failed ($variant build)"
        status=1
        continue
    fi
    (cd "$dir" && make -j"$jobs" test) || status=1
    summaries="$summaries$(sh "$top/tests/summary.sh" "$dir")
"
done
echo "$summaries" | awk 'NF { p += $1; f += $3; s += $5 }
    END { printf "%d passed, %d failed, %d skipped\n", p, f, s }'
exit $status
