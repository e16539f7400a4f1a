#!/bin/sh
# dinov2-config end to end: the resolved config printed by a program loads back into the same
# config, and every bad-config case prints exactly one "error:" line and exits non-zero.
prog="${top_builddir:-.}/dinov2-config"
cfg="${srcdir:-.}/tests/configs"
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
n=0
fail=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
notok() { n=$((n + 1)); fail=1; echo "not ok $n - $1"; }

# round trips: defaults, official recipes, overrides with lists
for args in "" "--config-file $cfg/vitl16_short.yaml" "--config-file $cfg/vitl14.yaml" \
            "--config-file $cfg/vitg14.yaml student.arch=vit_small ibot.mask_ratio_min_max=[0.2,0.4] optim.base_lr=1e-3" \
            "--config-file ${srcdir:-.}/jobs/configs/fashion_mnist.yaml" "--config-file ${srcdir:-.}/jobs/configs/fmnist-parity.yaml" \
            "--config-file ${srcdir:-.}/jobs/configs/fmnist-vit-tiny.yaml"; do
    if $prog $args --world-size 8 >"$tmp/a.yaml" 2>"$tmp/err" &&
       $prog --config-file "$tmp/a.yaml" --world-size 8 >"$tmp/b.yaml" 2>>"$tmp/err" &&
       cmp -s "$tmp/a.yaml" "$tmp/b.yaml"; then
        ok "print-config round trip: ${args:-defaults}"
    else
        notok "print-config round trip: ${args:-defaults}"; sed 's/^/# /' "$tmp/err"
    fi
done

# the override really lands, and the lr scaling rule: 2e-4 * sqrt(32*96/1024) for vitl14 at 96 ranks
$prog --config-file "$cfg/vitl14.yaml" --world-size 96 >"$tmp/l14.yaml" 2>/dev/null
if grep -q "lr: 0.000346410161513775" "$tmp/l14.yaml"; then ok "vitl14 lr at 96 ranks is 2e-4*sqrt(3)"
else notok "vitl14 lr at 96 ranks"; grep -E '^\s+lr:' "$tmp/l14.yaml" | sed 's/^/# /'; fi

# bad cases: exit non-zero, one line on stderr, naming the key or file
check_bad() { # description, needle, args...
    desc=$1; needle=$2; shift 2
    if $prog "$@" >/dev/null 2>"$tmp/err"; then
        notok "$desc: exit status 0"
        return
    fi
    lines=$(wc -l <"$tmp/err")
    if [ "$lines" -eq 1 ] && grep -q '^error: ' "$tmp/err" && grep -qF -- "$needle" "$tmp/err"; then
        ok "$desc: $(cat "$tmp/err")"
    else
        notok "$desc"; sed 's/^/# /' "$tmp/err"
    fi
}
check_bad "unknown key in a file" "did you mean 'optim.base_lr'" --config-file "$cfg/bad_unknown_key.yaml"
check_bad "unknown key override" "did you mean 'optim.base_lr'" optim.base_lrr=0.1
check_bad "wrong type" "optim.base_lr" optim.base_lr=fast
check_bad "out of range" "ibot.mask_sample_probability" ibot.mask_sample_probability=1.5
check_bad "bad enum" "train.centering" train.centering=kmeans
check_bad "list of wrong length" "ibot.mask_ratio_min_max" "ibot.mask_ratio_min_max=[0.1,0.2,0.3]"
check_bad "malformed YAML" "bad_malformed.yaml" --config-file "$cfg/bad_malformed.yaml"
check_bad "missing file" "no-such-file.yaml" --config-file "$tmp/no-such-file.yaml"
check_bad "override without =" "student.arch" --config-file "$cfg/vitl14.yaml" student.arch
check_bad "crop size not a multiple of the patch" "crops.local_crops_size" crops.local_crops_size=97 student.patch_size=14
check_bad "bad world size" "--world-size" --world-size 0
check_bad "width not a multiple of the heads" "student.num_heads" student.embed_dim=100 student.num_heads=3
echo "1..$n"
exit $fail
