#!/bin/sh
# Resuming dinov2-pretrain on another rank count (tiny ViT, 400 Fashion-MNIST images, 20
# iterations):
#  a) 2 ranks x 8 images (global batch 16) stop after 5 iterations (--max-steps); the checkpoint
#     resumes on 3 ranks (global batch 24) and on 1 rank (8): the loader position is converted
#     (80 images consumed -> batch 4 of 24, batch 10 of 8), one log line names both rank counts
#     and global batches, and each run finishes the 20 iterations;
#  b) with train.global_batch_size=12 the global batch is the same on 2, 3 and 1 ranks: the
#     position is kept as it is (no conversion);
#  c) a rank count that does not divide train.global_batch_size is a one-line config error.
# Skips (77) without Debian's dataset-fashion-mnist.
b=${top_builddir:-.}
: "${srcdir:=.}"
fm=${FMNIST:-/usr/share/datasets/fashion-mnist}
[ -f "$fm/t10k-images-idx3-ubyte.gz" ] || exit 77
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mpi_resume_ranks.XXXXXX") || { echo "Bail out! mktemp"; exit 1; }
trap 'rm -rf "$tmp"' EXIT
# step_of CKPT: the step attribute, as dinov2-ckpt info prints it
step_of() { "$b/dinov2-ckpt" info "$1" 2>/dev/null | sed -n 's/^step  *\([0-9]*\).*/\1/p'; }

. "$srcdir/tests/fmnist_tiny.sh"
# the tiny model of pipeline_e2e.sh; 20 iterations (2 epochs of 10), no periodic checkpoint
set -- data.train="$tiny_train" $tiny_model train.OFFICIAL_EPOCH_LENGTH=10 log.period=5

# resume NP FROM_DIR TO_DIR LOG [key=value ...]: copy FROM's checkpoints to TO and finish there
resume() {
    np=$1 from=$2 to=$3 log=$4
    shift 4
    mkdir -p "$to" && cp -r "$from/checkpoints" "$to/" &&
        "$mpi" "$np" "$b/dinov2-pretrain" --config-file "$cfg" "$@" --output-dir "$to" >"$log" 2>&1
}

# a) global batch = 8 x ranks
"$mpi" 2 "$b/dinov2-pretrain" --config-file "$cfg" "$@" --output-dir "$tmp/a2" --max-steps 5 >"$tmp/a2.log" 2>&1
rc=$?
check "a) 2 ranks, stop after 5 iterations: exit 0, checkpoint at 5" "$tmp/a2.log" \
    '[ "$rc" -eq 0 ] && [ "$(step_of "$tmp/a2/checkpoints/ckpt-000000005.h5")" = 5 ]'
for r in "3 24 4 16" "1 8 10 0"; do
    np=${r%% *} rest=${r#* }
    g=${rest%% *} rest=${rest#* }
    nb=${rest%% *} skip=${rest#* }
    resume "$np" "$tmp/a2" "$tmp/a$np" "$tmp/a$np.log" "$@"
    rc=$?
    log="$tmp/a$np.log"
    check "a) resume the 2-rank checkpoint on $np rank(s): exit 0" "$log" '[ "$rc" -eq 0 ]'
    check "a) $np rank(s): 'resumed from iteration 5 (data epoch 0, batch $nb)'" "$log" \
        'grep -q "resumed from iteration 5 (data epoch 0, batch $nb)" "$log"'
    check "a) $np rank(s): one conversion line, 2 ranks / global batch 16 -> $np ranks / global batch $g" "$log" \
        '[ "$(grep -c "loader position converted: checkpoint written by 2 ranks with global batch 16, this run $np ranks with global batch $g: epoch 0 batch 5 (80 images consumed) -> epoch 0 batch $nb ($skip images skipped by rounding)" "$log")" -eq 1 ]'
    check "a) $np rank(s): finished, final checkpoint at step 20" "$log" \
        '[ "$(step_of "$tmp/a$np/checkpoints/ckpt-000000020.h5")" = 20 ] && grep -q "training done at iteration 20/20" "$log"'
done

# b) train.global_batch_size=12: 6 per rank on 2 ranks, 4 on 3, 12 on 1; nothing to convert
"$mpi" 2 "$b/dinov2-pretrain" --config-file "$cfg" "$@" train.global_batch_size=12 --output-dir "$tmp/b2" \
    --max-steps 5 >"$tmp/b2.log" 2>&1
rc=$?
check "b) global batch 12 on 2 ranks (6 each), stop after 5: exit 0" "$tmp/b2.log" \
    '[ "$rc" -eq 0 ] && grep -q "global batch 12 (6 per rank)" "$tmp/b2.log"'
for np in 3 1; do
    resume "$np" "$tmp/b2" "$tmp/b$np" "$tmp/b$np.log" "$@" train.global_batch_size=12
    rc=$?
    log="$tmp/b$np.log"
    check "b) resume on $np rank(s) ($((12 / np)) each): exit 0, final step 20" "$log" \
        '[ "$rc" -eq 0 ] && grep -q "global batch 12 ($((12 / np)) per rank)" "$log" && [ "$(step_of "$tmp/b$np/checkpoints/ckpt-000000020.h5")" = 20 ]'
    check "b) $np rank(s): position kept (epoch 0, batch 5), no conversion" "$log" \
        'grep -q "resumed from iteration 5 (data epoch 0, batch 5)" "$log" && grep -q "global batch 12 in both, loader position kept (no conversion)" "$log" && ! grep -q "loader position converted" "$log"'
done

# c) 12 images over 5 ranks: a config error naming the key, the value and the rank count
"$b/dinov2-config" --config-file "$cfg" "$@" train.global_batch_size=12 --world-size 5 >/dev/null 2>"$tmp/c.err"
rc=$?
check "c) global_batch_size 12 on 5 ranks: one error line naming key, value and ranks: $(head -n 1 "$tmp/c.err")" "$tmp/c.err" \
    '[ "$rc" -ne 0 ] && [ "$(wc -l <"$tmp/c.err")" -eq 1 ] && grep -q "^error: train.global_batch_size = 12 is not divisible by the 5 ranks" "$tmp/c.err"'
"$mpi" 2 "$b/dinov2-pretrain" --config-file "$cfg" "$@" train.global_batch_size=13 --output-dir "$tmp/c" >"$tmp/c.log" 2>&1
rc=$?
check "c) dinov2-pretrain on 2 ranks with global_batch_size 13: exit 1, one error line" "$tmp/c.log" \
    '[ "$rc" -eq 1 ] && [ "$(grep -c "^error: .*train.global_batch_size = 13 is not divisible by the 2 ranks" "$tmp/c.log")" -eq 1 ]'
echo "1..$n"
exit $fail
