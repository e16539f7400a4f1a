# fmnist_tiny.sh — sourced by the MPI pretraining tests (mpi_preempt.sh, mpi_resume_ranks.sh):
# TAP helpers, the Fashion-MNIST t10k images in shards of 200, and the tiny model of
# pipeline_e2e.sh. The caller sets b (build dir), srcdir, fm (dataset dir) and tmp.
n=0
fail=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
notok() { n=$((n + 1)); fail=1; echo "not ok $n - $1"; [ -f "${2:-}" ] && sed 's/^/# /' "$2" | tail -n 15; }
check() { # description, log to show on failure, shell condition
    if eval "$3"; then ok "$1"; else notok "$1" "$2"; fi
}
mpi="$srcdir/tests/mpirun.sh"
cfg="$srcdir/jobs/configs/fashion_mnist.yaml"
# the first 400 t10k images (two shards) and the tiny model: 2 epochs of train.OFFICIAL_EPOCH_LENGTH
# iterations (the caller adds it), no periodic checkpoint. Values have no spaces: expand unquoted.
tiny_train="$tmp/shards/t10k-00000.h5,$tmp/shards/t10k-00001.h5"
tiny_model="student.embed_dim=32 student.depth=2 student.num_heads=2 train.batch_size_per_gpu=8
    crops.local_crops_number=2 dino.head_n_prototypes=64 dino.head_hidden_dim=32
    dino.head_bottleneck_dim=16 optim.epochs=2 optim.warmup_epochs=1
    teacher.warmup_teacher_temp_epochs=1 checkpoint.period=1000 data.num_workers=1"

# pack t10k into $tmp/shards (shards of 200); on failure the test ends here
if "$b/dinov2-pack" --idx-images "$fm/t10k-images-idx3-ubyte.gz" --output "$tmp/shards" --prefix t10k \
    --shard-size 200 --quiet >"$tmp/pack.log" 2>&1; then
    ok "pack t10k into shards of 200"
else
    notok "pack t10k into shards of 200" "$tmp/pack.log"
    echo "1..$n"
    exit 1
fi
