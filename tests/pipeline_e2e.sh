#!/bin/sh
# End to end on a few hundred Fashion-MNIST images with the real programs: pack, pretrain a
# tiny ViT (4 iterations straight, and 2 + 2 with a resume in between: the checkpoints must be
# bit-identical), verify and export the checkpoint, embed with the teacher, k-NN and linear
# evaluation. Skips (77) without Debian's dataset-fashion-mnist.
b=${top_builddir:-.}
fm=${FMNIST:-/usr/share/datasets/fashion-mnist}
[ -f "$fm/t10k-images-idx3-ubyte.gz" ] || exit 77
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
n=0
fail=0
step() { # description, command...
    d=$1
    shift
    n=$((n + 1))
    if "$@" >"$tmp/out" 2>&1; then
        echo "ok $n - $d"
    else
        fail=1
        echo "not ok $n - $d"
        sed 's/^/# /' "$tmp/out" | tail -n 15
    fi
}

step "pack t10k into shards of 200" \
    "$b/dinov2-pack" --idx-images "$fm/t10k-images-idx3-ubyte.gz" --idx-labels "$fm/t10k-labels-idx1-ubyte.gz" \
    --output "$tmp/shards" --prefix t10k --shard-size 200 --quiet
train="$tmp/shards/t10k-00000.h5,$tmp/shards/t10k-00001.h5"
test="$tmp/shards/t10k-00002.h5"
set -- --config-file "${srcdir:-.}/jobs/configs/fashion_mnist.yaml" data.train="$train" \
    student.embed_dim=32 student.depth=2 student.num_heads=2 train.batch_size_per_gpu=8 \
    crops.local_crops_number=2 dino.head_n_prototypes=64 dino.head_hidden_dim=32 \
    dino.head_bottleneck_dim=16 train.OFFICIAL_EPOCH_LENGTH=2 optim.epochs=2 optim.warmup_epochs=1 \
    teacher.warmup_teacher_temp_epochs=1 checkpoint.period=100 log.period=1 data.num_workers=1
step "pretrain 4 iterations in one run" "$b/dinov2-pretrain" "$@" --output-dir "$tmp/a"
step "pretrain 2 iterations, stop" "$b/dinov2-pretrain" "$@" --output-dir "$tmp/b" --max-steps 2
step "resume and finish the 4 iterations" "$b/dinov2-pretrain" "$@" --output-dir "$tmp/b"
grep -q "resumed from iteration 2" "$tmp/out" && echo "ok $((n = n + 1)) - the second run resumed at iteration 2" ||
    { fail=1; echo "not ok $((n = n + 1)) - the second run did not resume at iteration 2"; }
a="$tmp/a/checkpoints/ckpt-000000004.h5"
c="$tmp/b/checkpoints/ckpt-000000004.h5"
for g in student teacher optim state; do
    step "resumed run equals the uninterrupted one bit for bit: /$g" h5diff -q "$a" "$c" "/$g" "/$g"
done
step "metrics JSONL has 4 lines" sh -c "[ \$(wc -l <'$tmp/a/training_metrics.json') -eq 4 ]"
step "dinov2-ckpt verify" "$b/dinov2-ckpt" verify "$a"
step "dinov2-ckpt export the teacher" "$b/dinov2-ckpt" export "$a" "$tmp/teacher.h5"
step "embed the train split with the exported teacher" \
    "$b/dinov2-embed" --weights "$tmp/teacher.h5" --data "$train" --output "$tmp/train.h5" --image-size 0 --no-progress
step "embed the test split with the checkpoint's teacher" \
    "$b/dinov2-embed" --checkpoint "$a" --data "$test" --output "$tmp/test.h5" --image-size 0 --no-progress --probe-features
step "k-NN evaluation" "$b/dinov2-eval" knn --train "$tmp/train.h5" --test "$tmp/test.h5" --k 10,20 --json "$tmp/knn.json"
step "k-NN JSON has top-1 for k=10" grep -q top1 "$tmp/knn.json"
step "linear probe" "$b/dinov2-eval" linear --train "$tmp/test.h5" --test "$tmp/test.h5" --iterations 50 --json "$tmp/lin.json"
echo "1..$n"
exit $fail
