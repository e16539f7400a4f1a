/* bench_fsdp — what FSDP-style sharding (src/shard.h) costs and saves per rank, for ViT-S/14
 * with the official crop recipe (2 × 224 + 8 × 98 crops, separate DINO and iBOT heads of 4096
 * prototypes, hidden 2048, bottleneck 256, Sinkhorn-Knopp, KoLeo, masks), through the real
 * training step (dv_ssl_step) on however many ranks it is launched with (make bench runs it on
 * 1, 2 and 3). Prints name=value lines (rank 0), prefix fsdp_.
 *
 *   fsdp_wire_bytes_per_step    bytes this rank sends per step in collectives with ring
 *                               algorithms (dv_comm.wire_bytes: gathers, reduce-scatters and
 *                               the small all-reduces of Sinkhorn-Knopp, norms, losses)
 *   fsdp_dp_fp32_wire_bytes     what fp32 all-reduce data parallelism sends for the same model:
 *                               2 (W-1)/W × 4 bytes × parameters
 *   fsdp_wire_ratio             the two divided (goal of issue 7: <= 0.5)
 *   fsdp_collective_s_per_step  wall time inside the collectives (dv_comm.seconds), and its
 *   fsdp_collective_share       share of the step
 *   fsdp_state_mib_per_rank     parameters + optimizer state this rank keeps: student master,
 *                               teacher, gradient, AdamW m and v (its slices when sharded)
 *   fsdp_working_mib_per_rank   the gathered compute buffers (full-size student and teacher
 *                               weights and gradients: this CPU engine gathers units into
 *                               model-size buffers) + the shard staging (3 × W × the largest
 *                               unit slice)
 * Each rank takes DV_BENCH_BATCH images per step (default 1: communication does not depend on
 * it); DV_BENCH_STRATEGY (default SHARD_GRAD_OP) sets every module's sharding strategy;
 * DV_BENCH_REPS (default 2) timed steps after one untimed.
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm.h"
#include "config.h"
#include "ctx.h"
#include "err.h"
#include "masking.h"
#include "rng.h"
#include "ssl.h"
#include "timer.h"
#include "bench_batch.h"

static int64_t env_int(const char *name, int64_t def) {
    const char *v = getenv(name);
    return v && *v ? strtoll(v, NULL, 10) : def;
}

int main(int argc, char **argv) {
    dv_ctx ctx;
    if (dv_ctx_init(&ctx, &argc, &argv, "bench_fsdp") != DV_OK) return 1;
    const int64_t B = env_int("DV_BENCH_BATCH", 1), reps = env_int("DV_BENCH_REPS", 2);
    const char *strategy = getenv("DV_BENCH_STRATEGY") ? getenv("DV_BENCH_STRATEGY") : "SHARD_GRAD_OP";
    dv_config *c = malloc(sizeof *c);
    if (!c) return 1;
    dv_config_defaults(c);
    char bs[64];
    snprintf(bs, sizeof bs, "train.batch_size_per_gpu=%lld", (long long)B);
    char *kv[] = {"student.arch=vit_small", "student.patch_size=14",
                  "crops.global_crops_size=224", "crops.local_crops_size=98",
                  "crops.local_crops_number=8", bs,
                  "ibot.separate_head=true", "dino.head_n_prototypes=4096",
                  "ibot.head_n_prototypes=4096", "dino.head_hidden_dim=2048",
                  "dino.head_bottleneck_dim=256", "ibot.head_hidden_dim=2048",
                  "ibot.head_bottleneck_dim=256", "train.centering=sinkhorn_knopp",
                  "dino.koleo_loss_weight=0.1"};
    int rc = dv_config_apply_overrides(c, (int)(sizeof kv / sizeof *kv), kv);
    static const char *const who[] = {"student", "teacher"}, *const mod[] = {"backbone", "dino_head", "ibot_head"};
    for (int w = 0; w < 2 && rc == DV_OK; w++)
        for (int m = 0; m < 3 && rc == DV_OK; m++) {
            char a[160];
            snprintf(a, sizeof a, "compute_precision.%s.%s.sharding_strategy=%s", who[w], mod[m], strategy);
            char *pa[1] = {a};
            rc = dv_config_apply_overrides(c, 1, pa);
        }
    if (rc == DV_OK) rc = dv_config_finalize(c, ctx.world);
    if (rc != DV_OK) return 1;

    dv_batch b;
    dv_mask_batch mb;
    if (bench_batch_make(&b, &mb, c, B, 3, (uint64_t)ctx.rank) != DV_OK) return 1;

    dv_comm cm;
    dv_ssl s;
    if (dv_comm_init(&cm, ctx.comm) != DV_OK || dv_ssl_create(&s, c, B) != DV_OK ||
        dv_ssl_set_comm(&s, &cm) != DV_OK)
        return 1;
    dv_ssl_stats st;
    if (dv_ssl_step(&s, &b, &st) != DV_OK) return 1; /* untimed: first touch */
    const uint64_t w0 = cm.wire_bytes;
    const double c0 = cm.seconds;
    MPI_Barrier(ctx.comm);
    const double t0 = dv_now();
    for (int64_t i = 0; i < reps; i++)
        if (dv_ssl_step(&s, &b, &st) != DV_OK) return 1;
    const double step_s = (dv_now() - t0) / (double)reps;
    const double wire = (double)(cm.wire_bytes - w0) / (double)reps;
    const double coll = (cm.seconds - c0) / (double)reps;

    size_t params = 0;
    double state = 0, working = 0;
    for (int m = 0; m < DV_MOD_COUNT; m++) {
        const dv_ssl_module *md = &s.mod[m];
        if (!md->present) continue;
        params += md->numel;
        state += 5.0 * 4.0 * (double)md->local_numel;
        if (md->sharded)
            working += 3.0 * 4.0 * (double)md->numel +
                       3.0 * 4.0 * (double)ctx.world * (double)md->plan.max_S;
    }
    const double W = ctx.world, dp = 2.0 * (W - 1.0) / W * 4.0 * (double)params;
    double mx[3] = {state, working, coll}, out[3];
    MPI_Reduce(mx, out, 3, MPI_DOUBLE, MPI_MAX, 0, ctx.comm);
    if (ctx.rank == 0) {
        const double mib = 1024.0 * 1024.0;
        printf("fsdp_ranks=%d\n", ctx.world);
        printf("fsdp_strategy=%s\n", ctx.world > 1 ? strategy : "none (1 rank)");
        printf("fsdp_params=%zu\n", params);
        printf("fsdp_batch_per_rank=%lld\n", (long long)B);
        printf("fsdp_step_s=%.3f\n", step_s);
        printf("fsdp_wire_bytes_per_step=%.0f\n", wire);
        printf("fsdp_dp_fp32_wire_bytes=%.0f\n", dp);
        printf("fsdp_wire_ratio=%.3f\n", dp > 0 ? wire / dp : 0.0);
        printf("fsdp_collective_s_per_step=%.3f\n", out[2]);
        printf("fsdp_collective_share=%.3f\n", out[2] / step_s);
        printf("fsdp_state_mib_per_rank=%.1f\n", out[0] / mib);
        printf("fsdp_working_mib_per_rank=%.1f\n", out[1] / mib);
        printf("fsdp_loss_scale=%g\n", st.loss_scale);
    }
    dv_ssl_free(&s);
    dv_comm_free(&cm);
    bench_batch_free(&b, &mb);
    free(c);
    dv_ctx_finish(&ctx);
    return 0;
}
