#!/bin/bash
# pipeline.sh — the whole dinov2c pipeline on Fashion-MNIST (Debian's dataset-fashion-mnist),
# on this machine. Runs every stage that exists and says which stages are still to come.
#
#   bash jobs/pipeline.sh [OUTDIR]        (default: ./out/fashion-mnist)
#
# Environment: DV_BIN (where the dinov2-* programs are), DV_RANKS (MPI ranks, default 2),
# FMNIST (the dataset directory, default /usr/share/datasets/fashion-mnist).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
BIN=$(dv_find_bin)
OUT=${1:-out/fashion-mnist}
FMNIST=${FMNIST:-/usr/share/datasets/fashion-mnist}
CONFIG="$here/configs/fashion_mnist.yaml"
mkdir -p "$OUT"
echo "dinov2c pipeline: programs in $BIN, output in $OUT"

dv_stage "config: check and resolve $CONFIG"
"$BIN/dinov2-config" --config-file "$CONFIG" --output-dir "$OUT" >"$OUT/config.yaml"
echo "resolved config written to $OUT/config.yaml"

todo=()
if [ -x "$BIN/dinov2-pack" ]; then
    dv_stage "pack: Fashion-MNIST IDX files -> HDF5 image shards"
    for split in train t10k; do
        "$BIN/dinov2-pack" --idx-images "$FMNIST/$split-images-idx3-ubyte.gz" \
            --idx-labels "$FMNIST/$split-labels-idx1-ubyte.gz" \
            --output "$OUT/shards/$split" --prefix "$split" --shard-size 10000
    done
else
    todo+=("pack (dinov2-pack, issue 5)")
fi
for stage in "pretrain:dinov2-pretrain:issue 6" "eval:dinov2-eval:issue 6" \
             "curate:dinov2-curate:to come" "highres:dinov2-highres:to come" \
             "distill:dinov2-distill:to come"; do
    IFS=: read -r name prog issue <<<"$stage"
    if [ ! -x "$BIN/$prog" ]; then todo+=("$name ($prog, $issue)"); fi
done

dv_stage "done"
if [ ${#todo[@]} -gt 0 ]; then
    echo "stages still to come in this version of dinov2c:"
    printf '  - %s\n' "${todo[@]}"
fi
