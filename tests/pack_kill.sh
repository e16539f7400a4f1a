#!/bin/sh
# dinov2-pack as a program: --help, one-line errors with exit status 1, and a run killed with
# SIGKILL part-way and then rerun, which must give exactly the shards of an uninterrupted run
# (complete shards kept, the killed shard's .tmp replaced, no .tmp left). The kill lands
# wherever it lands; the checks hold for any moment. Needs the dinov2-pack binary
# ($DINOV2_PACK, else $top_builddir/dinov2-pack) and, for the kill part, Debian's
# dataset-fashion-mnist (skipped without it).
set -u
pack=${DINOV2_PACK:-${top_builddir:-.}/dinov2-pack}
fm=/usr/share/datasets/fashion-mnist
if [ ! -x "$pack" ]; then
    echo "1..0 # SKIP $pack not built"
    exit 0
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/pack_kill.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM
n=0
fails=0
ok() { # ok COND-STATUS DESCRIPTION
    n=$((n + 1))
    if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fails=$((fails + 1)); fi
}

echo "1..7"
"$pack" --help > "$tmp/help" 2>&1
rc=$?
grep -q '^usage: dinov2-pack' "$tmp/help"
ok $(( rc != 0 || $? != 0 )) "--help prints the usage and exits 0"

"$pack" --input "$tmp/no/such/dir" --output "$tmp/o" > "$tmp/out" 2> "$tmp/err"
rc=$?
lines=$(wc -l < "$tmp/err")
grep -q '^error: --input .*no/such/dir: No such file or directory$' "$tmp/err"
ok $(( rc != 1 || lines != 1 || $? != 0 )) "missing input: exit 1, one error line"

: > "$tmp/afile"
"$pack" --input "$tmp" --layout flat --output "$tmp/afile/out" > "$tmp/out" 2> "$tmp/err"
rc=$?
lines=$(wc -l < "$tmp/err")
grep -q '^error: --output .*afile.* is not a folder$' "$tmp/err"
ok $(( rc != 1 || lines != 1 || $? != 0 )) "output folder that cannot be created: exit 1, one error line"

if [ ! -r "$fm/t10k-images-idx3-ubyte.gz" ] || [ ! -r "$fm/t10k-labels-idx1-ubyte.gz" ]; then
    for i in 4 5 6 7; do echo "ok $i # SKIP Fashion-MNIST not installed"; done
    exit 0
fi
args="--idx-images $fm/t10k-images-idx3-ubyte.gz --idx-labels $fm/t10k-labels-idx1-ubyte.gz
      --shard-size 500 --resize-short 40 --no-progress"
# shellcheck disable=SC2086
"$pack" $args --quiet --output "$tmp/ref"
ok $? "reference run: 20 shards"

# shellcheck disable=SC2086
"$pack" $args --quiet --output "$tmp/run" &
pid=$!
sleep 0.2
kill -9 "$pid" 2> /dev/null
wait "$pid" 2> /dev/null
before=$(ls "$tmp/run" 2> /dev/null | grep -c '\.h5$')
tmps=$(ls "$tmp/run" 2> /dev/null | grep -c '\.tmp$')
echo "# killed with $before complete shards and $tmps temporary file(s)"
# shellcheck disable=SC2086
"$pack" $args --output "$tmp/run" > "$tmp/out" 2> "$tmp/err"
rc=$?
kept=$(grep -c 'complete from an earlier run' "$tmp/out")
ok $(( rc != 0 || kept != before )) "rerun exits 0 and keeps the $before complete shards ($kept)"

left=$(ls "$tmp/run" | grep -c '\.tmp$')
ok $(( left != 0 )) "no temporary files left"

same=0
for f in "$tmp/ref"/images-*.h5; do
    cmp -s "$f" "$tmp/run/$(basename "$f")" || same=1
done
count=$(ls "$tmp/run" | grep -c '^images-[0-9]*\.h5$')
ok $(( same != 0 || count != 20 )) "after the rerun all 20 shards equal the uninterrupted run's"
[ "$fails" -eq 0 ]
