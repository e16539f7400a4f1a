/* Collectives of src/comm against serial references, for fp32, fp16, bf16 and fp64, odd sizes
 * (0, 1, 7, 1000), and the split path for long messages (max_chunk forced small); plus the
 * fp16/bf16 conversions against exhaustive and hand-checked values. Run on 1, 2 and 3 ranks
 * (tests/mpi_comm.sh). Every rank's data comes from a Philox stream keyed by its rank, so each
 * rank can build the reference for all ranks itself. */
#include <math.h>
#include <mpi.h>
#include <stdlib.h>
#include <string.h>

#include "comm.h"
#include "ctx.h"
#include "err.h"
#include "half.h"
#include "rng.h"
#include "tap.h"

static int rank_, world_;

/* The value rank r contributes at element i (exactly representable in every format). */
static float val(int r, size_t i, uint64_t tag) {
    dv_rng g;
    dv_rng_init(&g, tag, DV_RNG_TEST, (uint64_t)r, i);
    return (float)(dv_rng_int(&g, -64, 64)) / 8.0f; /* multiples of 1/8 in [-8, 8] */
}

static void fill(void *buf, dv_dtype t, int r, size_t off, size_t n, uint64_t tag) {
    for (size_t i = 0; i < n; i++) {
        float v = val(r, off + i, tag);
        if (t == DV_F32) ((float *)buf)[i] = v;
        else if (t == DV_F64) ((double *)buf)[i] = v;
        else if (t == DV_F16) ((uint16_t *)buf)[i] = dv_f32_to_f16(v);
        else ((uint16_t *)buf)[i] = dv_f32_to_bf16(v);
    }
}

static double get(const void *buf, dv_dtype t, size_t i) {
    if (t == DV_F32) return ((const float *)buf)[i];
    if (t == DV_F64) return ((const double *)buf)[i];
    if (t == DV_F16) return dv_f16_to_f32(((const uint16_t *)buf)[i]);
    return dv_bf16_to_f32(((const uint16_t *)buf)[i]);
}

/* sums of multiples of 1/8 up to 3 ranks x 8 are exact in every format (bf16: 8 bits of
 * mantissa hold |sum| <= 24 in steps of 1/8 only up to 32 -> exact) */
static int check_sum(const void *got, dv_dtype t, size_t off, size_t n, uint64_t tag) {
    for (size_t i = 0; i < n; i++) {
        double want = 0;
        for (int r = 0; r < world_; r++) want += val(r, off + i, tag);
        if (get(got, t, i) != want) return 0;
    }
    return 1;
}

static void run_type(dv_comm *c, dv_dtype t, size_t n, const char *mode) {
    const size_t es = dv_dtype_size(t), W = (size_t)world_;
    char *buf = malloc((W * n + 1) * es), *out = malloc((W * n + 1) * es);
    int ok;
    /* all-reduce */
    fill(buf, t, rank_, 0, n, 1);
    ok = dv_comm_allreduce_sum(c, buf, n, t) == DV_OK && check_sum(buf, t, 0, n, 1);
    int all;
    MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_MIN, c->comm);
    if (rank_ == 0) tap_ok(all, "allreduce %s n=%zu %s", dv_dtype_name(t), n, mode);
    /* reduce-scatter: block b of rank r holds val(r, b*n + i) */
    fill(buf, t, rank_, 0, W * n, 2);
    ok = dv_comm_reduce_scatter_sum(c, buf, out, n, t) == DV_OK &&
         check_sum(out, t, (size_t)rank_ * n, n, 2);
    MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_MIN, c->comm);
    if (rank_ == 0) tap_ok(all, "reduce_scatter %s n=%zu %s", dv_dtype_name(t), n, mode);
    /* all-gather: block r of the result is rank r's data */
    fill(buf, t, rank_, 0, n, 3);
    ok = dv_comm_allgather(c, buf, out, n, t) == DV_OK;
    for (int r = 0; ok && r < world_; r++) {
        char *want = malloc((n + 1) * es);
        fill(want, t, r, 0, n, 3);
        ok = memcmp(out + (size_t)r * n * es, want, n * es) == 0;
        free(want);
    }
    MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_MIN, c->comm);
    if (rank_ == 0) tap_ok(all, "allgather %s n=%zu %s", dv_dtype_name(t), n, mode);
    /* broadcast from the last rank */
    fill(buf, t, world_ - 1, 0, n, 4);
    if (rank_ != world_ - 1) memset(buf, 0, n * es);
    ok = dv_comm_bcast(c, buf, n, t, world_ - 1) == DV_OK;
    if (ok) {
        fill(out, t, world_ - 1, 0, n, 4);
        ok = memcmp(buf, out, n * es) == 0;
    }
    MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_MIN, c->comm);
    if (rank_ == 0) tap_ok(all, "bcast %s n=%zu %s", dv_dtype_name(t), n, mode);
    free(buf);
    free(out);
}

static void test_half(void) {
    /* every fp16 pattern survives f16 -> f32 -> f16 (NaNs stay NaN) */
    int ok = 1;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = dv_f16_to_f32((uint16_t)h);
        uint16_t back = dv_f32_to_f16(f);
        if (isnan(f)) ok &= (back & 0x7c00u) == 0x7c00u && (back & 0x3ffu);
        else ok &= back == h;
    }
    tap_ok(ok, "fp16: all 65536 patterns round-trip through fp32");
    ok = dv_f32_to_f16(1.0f) == 0x3c00 && dv_f32_to_f16(65504.0f) == 0x7bff &&
         dv_f32_to_f16(65520.0f) == 0x7c00 && dv_f32_to_f16(-2.0f) == 0xc000 &&
         dv_f32_to_f16(0x1.0p-24f) == 0x0001 && dv_f32_to_f16(0x1.0p-25f) == 0x0000 &&
         dv_f32_to_f16(0x1.8p-25f) == 0x0001 && dv_f32_to_f16(1.0f + 0x1.0p-11f) == 0x3c00 &&
         dv_f32_to_f16(1.0f + 0x1.8p-11f) == 0x3c01 &&
         dv_f32_to_f16(1.0f + 0x1.8p-10f) == 0x3c02;
    tap_ok(ok, "fp16: known values, overflow to inf, subnormals, ties to even");
    ok = dv_f32_to_bf16(1.0f) == 0x3f80 && dv_f32_to_bf16(1.0f + 0x1.0p-8f) == 0x3f80 &&
         dv_f32_to_bf16(1.0f + 0x1.8p-8f) == 0x3f81 &&
         dv_f32_to_bf16(1.0f + 0x1.8p-7f) == 0x3f82 && dv_bf16_to_f32(0x4049) == 3.140625f &&
         isnan(dv_bf16_to_f32(dv_f32_to_bf16(NAN)));
    for (uint32_t h = 0; h < 65536; h++) {
        float f = dv_bf16_to_f32((uint16_t)h);
        if (!isnan(f)) ok &= dv_f32_to_bf16(f) == h;
    }
    tap_ok(ok, "bf16: known values, ties to even, all patterns round-trip");
}

int main(int argc, char **argv) {
    dv_ctx ctx;
    if (dv_ctx_init(&ctx, &argc, &argv, "test_comm") != DV_OK) return 1;
    rank_ = ctx.rank;
    world_ = ctx.world;
    if (rank_ == 0) tap_no_plan();
    if (rank_ == 0) tap_diag("%d rank(s)", world_);
    if (rank_ == 0) test_half();
    dv_comm c;
    if (dv_comm_init(&c, ctx.comm) != DV_OK) return 1;
    const size_t sizes[] = {0, 1, 7, 1000};
    for (int t = 0; t < 4; t++)
        for (size_t k = 0; k < 4; k++) run_type(&c, (dv_dtype)t, sizes[k], "");
    c.max_chunk = 3; /* force the split path: 1000 elements in pieces of 3 */
    for (int t = 0; t < 4; t++) run_type(&c, (dv_dtype)t, 1000, "(split in 3-element pieces)");
    /* fp16 rounding on sums that are not exact: each combination rounds once, so the result
     * is within world-1 half-ulps of the fp32 sum */
    {
        float x = 1.0f + (float)rank_ * 0x1.0p-12f;
        uint16_t h = dv_f32_to_f16(x);
        int rc = dv_comm_allreduce_sum(&c, &h, 1, DV_F16);
        double exact = 0;
        for (int r = 0; r < world_; r++) exact += dv_f16_to_f32(dv_f32_to_f16(1.0f + (float)r * 0x1.0p-12f));
        double err = fabs(dv_f16_to_f32(h) - exact), ulp = 0x1.0p-10 * (exact >= 2 ? 2 : 1);
        if (rank_ == 0) tap_ok(rc == DV_OK && err <= 0.5 * ulp * world_, "fp16 sum rounds per combination (err %.3g ulp)", err / ulp);
    }
    double d[3] = {1.0 * rank_, 2.0 * rank_, -1.0};
    int rc = dv_comm_hook_sum(&c, d, 3);
    double tri = world_ * (world_ - 1) / 2.0;
    if (rank_ == 0) tap_ok(rc == DV_OK && d[0] == tri && d[1] == 2 * tri && d[2] == -world_, "loss reduction hook: fp64 in-place sum");
    d[0] = rank_;
    rc = dv_comm_hook_max(&c, d, 1);
    if (rank_ == 0) tap_ok(rc == DV_OK && d[0] == world_ - 1, "max hook");
    dv_comm_free(&c);
    int st = rank_ == 0 ? tap_exit() : 0;
    MPI_Bcast(&st, 1, MPI_INT, 0, ctx.comm);
    dv_ctx_finish(&ctx);
    return st;
}
