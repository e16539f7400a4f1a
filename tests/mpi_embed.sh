#!/bin/sh
# dinov2-embed on 1, 2 and 3 ranks writes the same features file: every rank embeds a
# contiguous slice and all ranks write ONE file with collective parallel-HDF5 writes (three
# shards: raw RGB, raw gray, encoded PNG; batches cross shard and rank boundaries; 3 ranks get
# unequal slices and some ranks write empty blocks). Needs the dinov2-embed binary
# ($DINOV2_EMBED, else $top_builddir/dinov2-embed) and tests/test_embed (fixture and compare).
set -u
b=${top_builddir:-.}
embed=${DINOV2_EMBED:-$b/dinov2-embed}
helper=$b/tests/test_embed
run="${srcdir:-.}/tests/mpirun.sh"
if [ ! -x "$embed" ] || [ ! -x "$helper" ]; then
    echo "1..0 # SKIP $embed or $helper not built"
    exit 0
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mpi_embed.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM
n=0
fails=0
ok() { # ok STATUS DESCRIPTION
    n=$((n + 1))
    if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fails=$((fails + 1)); fi
}
echo "1..6"
"$helper" --fixture "$tmp"
ok $? "fixture: tiny backbone and 3 shards (7 RGB 16x12, 4 gray 20x14, 3 PNG 10x18)"
args="--weights $tmp/w.h5 --data $tmp/shards --image-size 8 --batch 3 --patch-tokens --reg-tokens --probe-features --no-progress"
for np in 1 2 3; do
    # shellcheck disable=SC2086
    sh "$run" $np "$embed" $args --output "$tmp/f$np.h5" > "$tmp/log$np" 2>&1
    rc=$?
    [ $rc -eq 0 ] || sed 's/^/# /' "$tmp/log$np"
    ok $(( rc != 0 )) "dinov2-embed on $np rank(s) exits 0"
done
left=$(find "$tmp" -name '*.tmp' | wc -l)
ok $(( left != 0 )) "no .tmp file left behind"
"$helper" --compare "$tmp/f1.h5" "$tmp/f2.h5" "$tmp/f3.h5"
ok $? "2-rank and 3-rank files equal the 1-rank file (ids, labels, every dataset within 1e-6)"
[ "$fails" -eq 0 ]
