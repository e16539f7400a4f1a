/* comm — dinov2c's collectives over MPI (the CPU backend; gpu/nccl_comm is the CUDA one):
 * all-reduce, reduce-scatter, all-gather and broadcast for fp32, fp16, bf16 and fp64.
 *
 * Counts are ELEMENT counts (size_t), never bytes. Layouts:
 *   reduce_scatter: send (world · count), rank r receives the sum of block r: recv (count)
 *   allgather:      send (count), recv (world · count) with block r from rank r
 * fp16 / bf16 sums use a user-defined commutative MPI op on a 2-byte type that converts to
 * fp32, adds and rounds back to nearest even (MPI_SUM does not apply to 16-bit floats); so each
 * pairwise combination rounds once, as NCCL's half-precision sums do. Messages longer than
 * max_chunk elements (default 2^30) are split so no MPI count overflows an int.
 * Every call is collective over c->comm; errors come back as dv_status (the communicator's
 * error handler is MPI_ERRORS_RETURN when created by dv_ctx_init).
 *
 *   dv_comm comm;  DV_TRY(dv_comm_init(&comm, ctx->comm));
 *   DV_TRY(dv_comm_reduce_scatter_sum(&comm, grads16, shard16, shard_len, DV_F16));
 *   DV_TRY(dv_comm_allgather(&comm, shard16, full16, shard_len, DV_F16));
 *   dv_comm_free(&comm);
 */
#ifndef DV_COMM_H
#define DV_COMM_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { DV_F32 = 0, DV_F16 = 1, DV_BF16 = 2, DV_F64 = 3 } dv_dtype;

typedef struct {
    MPI_Comm comm;
    int rank, world;
    MPI_Datatype t16;        /* 2-byte float payload */
    MPI_Op op_f16, op_bf16;  /* fp32-accumulating sums */
    size_t max_chunk;        /* elements per MPI call */
    void *tmp;               /* staging for split reduce-scatter / all-gather */
    size_t tmp_bytes;
    uint64_t bytes_sent;     /* payload bytes this rank contributed (for benchmarks) */
    uint64_t wire_bytes;     /* bytes this rank sends with ring algorithms (nccl-tests' bus
                              * model): all-reduce 2(W-1)/W·n, reduce-scatter and all-gather
                              * (W-1)/W·n for n bytes of the whole vector; broadcast n (root) */
    double seconds;          /* wall time inside the collectives */
} dv_comm;

size_t dv_dtype_size(dv_dtype t);
const char *dv_dtype_name(dv_dtype t);

int dv_comm_init(dv_comm *c, MPI_Comm comm);
void dv_comm_free(dv_comm *c);

int dv_comm_allreduce_sum(dv_comm *c, void *buf, size_t count, dv_dtype t);     /* in place */
int dv_comm_allreduce_max(dv_comm *c, double *buf, size_t count);                /* in place */
int dv_comm_reduce_scatter_sum(dv_comm *c, const void *send, void *recv, size_t count, dv_dtype t);
int dv_comm_allgather(dv_comm *c, const void *send, void *recv, size_t count, dv_dtype t);
int dv_comm_bcast(dv_comm *c, void *buf, size_t count, dv_dtype t, int root);

/* Adapters for the reduction hooks of the losses and clipping (dv_allreduce_fn): ctx is a
 * dv_comm; in-place fp64 sum / max of count elements. */
int dv_comm_hook_sum(void *ctx, double *buf, int64_t count);
int dv_comm_hook_max(void *ctx, double *buf, int64_t count);

/* Element-wise conversions between fp32 and the 16-bit formats (OpenMP). */
void dv_convert_f32_to(void *dst, dv_dtype t, const float *src, size_t n);
void dv_convert_to_f32(float *dst, const void *src, dv_dtype t, size_t n);

#endif
