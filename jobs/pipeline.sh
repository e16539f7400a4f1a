#!/bin/bash
# pipeline.sh — the whole dinov2c pipeline on Fashion-MNIST (Debian's dataset-fashion-mnist),
# on this machine: pack the IDX files into HDF5 shards, pretrain a small ViT with DINOv2
# (DINO + iBOT + KoLeo) with the best Fashion-MNIST recipe (jobs/configs/fmnist-vit-tiny.yaml),
# for its first 450 iterations by default (about 5 minutes on 2 cores; DV_MAX_STEPS=0 runs the
# whole 60-minute recipe), embed the train and test splits with the teacher, and evaluate them
# with the official k-NN protocol and a linear probe. Runs every stage that exists and says
# which stages are still to come. Rerunning resumes: shards are kept, training continues from
# its newest checkpoint.
#
#   bash jobs/pipeline.sh [OUTDIR] [key=value ...]     (default OUTDIR: ./out/fashion-mnist)
#
# Environment: DV_BIN (where the dinov2-* programs are), DV_RANKS (MPI ranks, default 1),
# OMP_NUM_THREADS, FMNIST (the dataset directory, default /usr/share/datasets/fashion-mnist),
# DV_TRAIN_IMAGES (use only the first N training images, e.g. for a quick check), DV_MAX_STEPS
# (iterations per invocation, default 450; 0 = to the end of the schedule), DV_CONFIG (another
# recipe, e.g. jobs/configs/fmnist-parity.yaml).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
BIN=$(dv_find_bin)
OUT=out/fashion-mnist
if [ $# -gt 0 ] && [[ "$1" != *=* ]]; then OUT=$1; shift; fi
FMNIST=${FMNIST:-/usr/share/datasets/fashion-mnist}
CONFIG=${DV_CONFIG:-$here/configs/fmnist-vit-tiny.yaml}
MAX_STEPS=${DV_MAX_STEPS:-450}
RANKS=${DV_RANKS:-1}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
mkdir -p "$OUT"
echo "dinov2c pipeline: programs in $BIN, output in $OUT, $RANKS rank(s)"
t0=$(date +%s)

dv_stage "config: check and resolve $CONFIG"
"$BIN/dinov2-config" --config-file "$CONFIG" --output-dir "$OUT/pretrain" \
    --world-size "$RANKS" "$@" >"$OUT/config.yaml"
echo "resolved config written to $OUT/config.yaml"

dv_stage "pack: Fashion-MNIST IDX files -> HDF5 image shards"
if [ ! -f "$FMNIST/train-images-idx3-ubyte.gz" ]; then
    echo "error: $FMNIST/train-images-idx3-ubyte.gz not found (apt-get install dataset-fashion-mnist, or set FMNIST)" >&2
    exit 1
fi
for split in train t10k; do
    "$BIN/dinov2-pack" --idx-images "$FMNIST/$split-images-idx3-ubyte.gz" \
        --idx-labels "$FMNIST/$split-labels-idx1-ubyte.gz" \
        --output "$OUT/shards/$split" --prefix "$split" --shard-size 10000 --quiet
done
train_data="$OUT/shards/train"
if [ -n "${DV_TRAIN_IMAGES:-}" ]; then
    # a quick run on the first shards only (the shard size is 10000 images)
    n=$(( (DV_TRAIN_IMAGES + 9999) / 10000 ))
    train_data=$(ls "$OUT"/shards/train/train-*.h5 | head -n "$n" | paste -sd, -)
fi
echo "shards: $(ls "$OUT"/shards/train/*.h5 | wc -l) train, $(ls "$OUT"/shards/t10k/*.h5 | wc -l) test"

dv_stage "pretrain: DINOv2 on the training images (labels unused)"
limit=()
if [ "$MAX_STEPS" -gt 0 ]; then limit=(--max-steps "$MAX_STEPS"); fi
dv_launch "$RANKS" "$BIN/dinov2-pretrain" --config-file "$CONFIG" --output-dir "$OUT/pretrain" \
    data.train="$train_data" "${limit[@]}" "$@"
ckpt="$OUT/pretrain/checkpoints/$(cat "$OUT/pretrain/checkpoints/latest")"

dv_stage "embed: teacher CLS features of the train and test images"
mkdir -p "$OUT/features"
for split in train t10k; do
    dv_launch "$RANKS" "$BIN/dinov2-embed" --checkpoint "$ckpt" --data "$OUT/shards/$split" \
        --output "$OUT/features/$split.h5" --image-size 0 --probe-features --no-progress
done

dv_stage "eval: k-NN (official protocol) and linear probe on the frozen features"
"$BIN/dinov2-eval" knn --train "$OUT/features/train.h5" --test "$OUT/features/t10k.h5" \
    --json "$OUT/knn.json"
"$BIN/dinov2-eval" linear --train "$OUT/features/train.h5" --test "$OUT/features/t10k.h5" \
    --json "$OUT/linear.json"

dv_stage "done in $(( $(date +%s) - t0 )) s: results in $OUT (knn.json, linear.json)"
echo "stages still to come in this version of dinov2c:"
for stage in "curate:dinov2-curate" "highres:dinov2-highres" "distill:dinov2-distill"; do
    IFS=: read -r name prog <<<"$stage"
    if [ ! -x "$BIN/$prog" ]; then echo "  - $name ($prog)"; fi
done
