#!/bin/sh
# Preemption of dinov2-pretrain on 2 ranks (tiny ViT, a few hundred Fashion-MNIST images):
#  a) 60 iterations straight;
#  b) the same run, SIGUSR1 to mpirun (which forwards it to the ranks) once 2 iterations are
#     logged: exit 75 with a checkpoint at an iteration j < 60 and the "preempted" line;
#  c) the rerun resumes at j and finishes: its final checkpoint equals a)'s bit for bit;
#  d) kill -9 of one rank: mpirun exits non-zero within the timeout (no hang), no rank is left;
#  e) SIGTERM to one rank only (Slurm sends SIGTERM to the tasks): every rank stops at the same
#     iteration, exit 75; SIGTERM to mpirun itself kills the job (exit non-zero, no hang);
#  f) jobs/pretrain.sbatch on this machine forwards SIGUSR1 to the job and exits 75.
# Skips (77) without Debian's dataset-fashion-mnist.
b=${top_builddir:-.}
: "${srcdir:=.}"
fm=${FMNIST:-/usr/share/datasets/fashion-mnist}
[ -f "$fm/t10k-images-idx3-ubyte.gz" ] || exit 77
command -v h5diff >/dev/null 2>&1 || exit 77
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mpi_preempt.XXXXXX") || { echo "Bail out! mktemp"; exit 1; }
bg=""
# leave nothing behind: the background job of an aborted test, then the files
trap '[ -n "$bg" ] && kill -9 $bg 2>/dev/null; rm -rf "$tmp"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# "$mpi" 2 PROG ... & : mpirun.sh execs mpirun, so $! is mpirun's pid (a shell function would
# put a subshell in between)
# wait_lines FILE N PID: until FILE has N lines (the metrics JSONL, one per iteration) or PID ends
wait_lines() {
    i=0
    while [ "$i" -lt 1200 ] && kill -0 "$3" 2>/dev/null; do
        [ -f "$1" ] && [ "$(wc -l <"$1")" -ge "$2" ] && return 0
        sleep 0.1
        i=$((i + 1))
    done
    return 1
}
# finish PID LIMIT: wait for the background job PID, at most LIMIT seconds (then kill -9 it);
# sets rc (124 on timeout) and secs
finish() {
    t0=$(date +%s)
    ( sleep "$2"; kill -9 "$1" 2>/dev/null ) &
    dog=$!
    wait "$1"
    rc=$?
    secs=$(($(date +%s) - t0))
    if kill "$dog" 2>/dev/null; then :; else rc=124; fi
    wait "$dog" 2>/dev/null
    bg=""
}
# children PID: the pids whose parent is PID (from /proc: procps may not be installed)
children() {
    for d in /proc/[0-9]*; do
        st=$(cat "$d/stat" 2>/dev/null) || continue
        st=${st##*) } # the fields after "pid (comm) ": state ppid ...
        [ "$(echo "$st" | cut -d' ' -f2)" = "$1" ] && echo "${d#/proc/}"
    done
}
# no process of this test's output directory DIR is left (ranks orphaned by a dead mpirun)
none_left() {
    sleep 1
    left=""
    for d in /proc/[0-9]*; do
        tr '\0' ' ' <"$d/cmdline" 2>/dev/null | grep -q -- "--output-dir $1 " && left="$left ${d#/proc/}"
    done
    [ -z "$left" ] && return 0
    echo "# left running:$left"
    kill -9 $left 2>/dev/null
    return 1
}

. "$srcdir/tests/fmnist_tiny.sh"
# the tiny model of pipeline_e2e.sh; 60 iterations (2 epochs of 30), no periodic checkpoint
set -- data.train="$tiny_train" $tiny_model train.OFFICIAL_EPOCH_LENGTH=30 log.period=1

# a) uninterrupted
"$mpi" 2 "$b/dinov2-pretrain" --config-file "$cfg" "$@" --output-dir "$tmp/a" >"$tmp/a.log" 2>&1
rc=$?
check "a) 2 ranks, 60 iterations uninterrupted: exit 0" "$tmp/a.log" '[ "$rc" -eq 0 ]'
check "a) final checkpoint ckpt-000000060.h5" "$tmp/a.log" '[ -f "$tmp/a/checkpoints/ckpt-000000060.h5" ]'

# b) SIGUSR1 to mpirun after 2 logged iterations
"$mpi" 2 "$b/dinov2-pretrain" --config-file "$cfg" "$@" --output-dir "$tmp/b" >"$tmp/b.log" 2>&1 &
bg=$!
wait_lines "$tmp/b/training_metrics.json" 2 "$bg" && kill -USR1 "$bg"
finish "$bg" 120
check "b) SIGUSR1 to mpirun: exit 75 (got $rc after ${secs}s)" "$tmp/b.log" '[ "$rc" -eq 75 ]'
j=$(sed -n 's/.*preempted by SIGUSR1 at iteration \([0-9]*\): checkpoint written, exit 75 = requeue me$/\1/p' "$tmp/b.log")
check "b) one line 'preempted by SIGUSR1 at iteration ${j:-?}: checkpoint written, exit 75 = requeue me', 2 <= j < 60" \
    "$tmp/b.log" '[ -n "$j" ] && [ "$j" -ge 2 ] && [ "$j" -lt 60 ] && [ "$(grep -c "preempted by" "$tmp/b.log")" -eq 1 ]'
jj=$(printf '%09d' "${j:-0}")
check "b) checkpoint ckpt-$jj.h5 written, latest names it" "$tmp/b.log" \
    'grep -qx "ckpt-$jj.h5" "$tmp/b/checkpoints/latest"'
check "b) no final checkpoint yet" "$tmp/b.log" '[ ! -f "$tmp/b/checkpoints/ckpt-000000060.h5" ]'

# c) rerun: resumes at j, finishes, equals a)
"$mpi" 2 "$b/dinov2-pretrain" --config-file "$cfg" "$@" --output-dir "$tmp/b" >"$tmp/c.log" 2>&1
rc=$?
check "c) rerun: exit 0" "$tmp/c.log" '[ "$rc" -eq 0 ]'
check "c) the rerun resumed from iteration ${j:-?}" "$tmp/c.log" 'grep -q "resumed from iteration $j " "$tmp/c.log"'
for g in student teacher optim state; do
    check "c) preempted + resumed equals uninterrupted bit for bit: /$g" "$tmp/c.log" \
        'h5diff -q "$tmp/a/checkpoints/ckpt-000000060.h5" "$tmp/b/checkpoints/ckpt-000000060.h5" "/$g" "/$g"'
done

# d) kill -9 of one rank takes the job down (a long run: 1200 iterations)
"$mpi" 2 "$b/dinov2-pretrain" --config-file "$cfg" "$@" optim.epochs=40 --output-dir "$tmp/d" >"$tmp/d.log" 2>&1 &
bg=$!
rank=""
if wait_lines "$tmp/d/training_metrics.json" 2 "$bg"; then
    rank=$(children "$bg" | tail -n 1) # mpirun's children are the ranks
    [ -n "$rank" ] && kill -9 "$rank"
fi
finish "$bg" 120
check "d) kill -9 of a rank (pid ${rank:-?}): mpirun exits non-zero, no hang (status $rc after ${secs}s)" \
    "$tmp/d.log" '[ -n "$rank" ] && [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ]'
check "d) no rank left running" "$tmp/d.log" 'none_left "$tmp/d"'

# e) SIGTERM to one rank only: every rank stops after the same iteration, checkpoint, exit 75
"$mpi" 2 "$b/dinov2-pretrain" --config-file "$cfg" "$@" optim.epochs=40 --output-dir "$tmp/e" >"$tmp/e.log" 2>&1 &
bg=$!
rank=""
if wait_lines "$tmp/e/training_metrics.json" 2 "$bg"; then
    rank=$(children "$bg" | tail -n 1)
    [ -n "$rank" ] && kill -TERM "$rank"
fi
finish "$bg" 120
check "e) SIGTERM to one rank (pid ${rank:-?}): exit 75 (got $rc after ${secs}s)" "$tmp/e.log" '[ "$rc" -eq 75 ]'
j=$(sed -n 's/.*preempted by SIGTERM at iteration \([0-9]*\):.*/\1/p' "$tmp/e.log")
ck="$tmp/e/checkpoints/$(printf 'ckpt-%09d.h5' "${j:-0}")"
check "e) 'preempted by SIGTERM at iteration ${j:-?}', and that checkpoint verifies" "$tmp/e.log" \
    '[ -n "$j" ] && "$b/dinov2-ckpt" verify "$ck" >/dev/null 2>&1'

# e) SIGTERM to mpirun: Open MPI kills the ranks (SIGTERM, SIGKILL a second later): not a
# checkpointing path (doc/checkpoints.md); checked for "the job ends, non-zero, nothing left"
"$mpi" 2 "$b/dinov2-pretrain" --config-file "$cfg" "$@" optim.epochs=40 --output-dir "$tmp/t" >"$tmp/t.log" 2>&1 &
bg=$!
wait_lines "$tmp/t/training_metrics.json" 2 "$bg" && kill -TERM "$bg"
finish "$bg" 120
check "e) SIGTERM to mpirun: the job ends with status $rc (non-zero) after ${secs}s" "$tmp/t.log" \
    '[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ]'
check "e) no rank left running" "$tmp/t.log" 'none_left "$tmp/t"'

# f) the job script on one machine: SIGUSR1 to its shell is forwarded to mpirun, exit 75
DV_BIN="$b" DV_RANKS=2 OMP_NUM_THREADS=1 bash "$srcdir/jobs/pretrain.sbatch" "$cfg" "$tmp/f" "$@" \
    optim.epochs=40 >"$tmp/f.log" 2>&1 &
bg=$!
wait_lines "$tmp/f/training_metrics.json" 2 "$bg" && kill -USR1 "$bg"
finish "$bg" 120
check "f) jobs/pretrain.sbatch forwards SIGUSR1 to the job: exit 75 (got $rc after ${secs}s)" "$tmp/f.log" \
    '[ "$rc" -eq 75 ] && grep -q "preempted by SIGUSR1" "$tmp/f.log"'
check "f) outside Slurm it says to requeue by hand" "$tmp/f.log" 'grep -q "not under Slurm" "$tmp/f.log"'
echo "1..$n"
exit $fail
