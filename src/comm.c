/* comm — see comm.h. */
#include "comm.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "half.h"

size_t dv_dtype_size(dv_dtype t) { return t == DV_F64 ? 8 : t == DV_F32 ? 4 : 2; }
const char *dv_dtype_name(dv_dtype t) {
    return t == DV_F64 ? "fp64" : t == DV_F32 ? "fp32" : t == DV_F16 ? "fp16" : "bf16";
}

/* MPI user ops: inout[i] = in[i] + inout[i] in fp32, rounded to the 16-bit format. */
static void sum_f16_(void *in, void *inout, int *len, MPI_Datatype *dt) {
    (void)dt;
    const uint16_t *a = in;
    uint16_t *b = inout;
    for (int i = 0; i < *len; i++) b[i] = dv_f32_to_f16(dv_f16_to_f32(a[i]) + dv_f16_to_f32(b[i]));
}
static void sum_bf16_(void *in, void *inout, int *len, MPI_Datatype *dt) {
    (void)dt;
    const uint16_t *a = in;
    uint16_t *b = inout;
    for (int i = 0; i < *len; i++) b[i] = dv_f32_to_bf16(dv_bf16_to_f32(a[i]) + dv_bf16_to_f32(b[i]));
}

int dv_comm_init(dv_comm *c, MPI_Comm comm) {
    memset(c, 0, sizeof *c);
    c->comm = comm;
    c->max_chunk = (size_t)1 << 30;
    DV_CHECK_MPI(MPI_Comm_rank(comm, &c->rank));
    DV_CHECK_MPI(MPI_Comm_size(comm, &c->world));
    DV_CHECK_MPI(MPI_Type_contiguous(2, MPI_BYTE, &c->t16));
    DV_CHECK_MPI(MPI_Type_commit(&c->t16));
    DV_CHECK_MPI(MPI_Op_create(sum_f16_, 1, &c->op_f16));
    DV_CHECK_MPI(MPI_Op_create(sum_bf16_, 1, &c->op_bf16));
    return DV_OK;
}

void dv_comm_free(dv_comm *c) {
    if (c->op_f16 != MPI_OP_NULL && c->op_f16) MPI_Op_free(&c->op_f16);
    if (c->op_bf16 != MPI_OP_NULL && c->op_bf16) MPI_Op_free(&c->op_bf16);
    if (c->t16 != MPI_DATATYPE_NULL && c->t16) MPI_Type_free(&c->t16);
    free(c->tmp);
    memset(c, 0, sizeof *c);
}

static MPI_Datatype mpi_type_(const dv_comm *c, dv_dtype t) {
    return t == DV_F64 ? MPI_DOUBLE : t == DV_F32 ? MPI_FLOAT : c->t16;
}
static MPI_Op sum_op_(const dv_comm *c, dv_dtype t) {
    return t == DV_F16 ? c->op_f16 : t == DV_BF16 ? c->op_bf16 : MPI_SUM;
}

static int reserve_(dv_comm *c, size_t bytes) {
    if (bytes <= c->tmp_bytes) return DV_OK;
    void *p = realloc(c->tmp, bytes);
    if (!p) return DV_ERR(DV_ERR_NOMEM, "out of memory for a %zu-byte collective buffer", bytes);
    c->tmp = p;
    c->tmp_bytes = bytes;
    return DV_OK;
}

static size_t chunk_(const dv_comm *c) {
    size_t m = c->max_chunk ? c->max_chunk : 1;
    return m > (size_t)INT_MAX ? (size_t)INT_MAX : m;
}

int dv_comm_allreduce_sum(dv_comm *c, void *buf, size_t count, dv_dtype t) {
    const size_t es = dv_dtype_size(t), step = chunk_(c);
    const double t0 = MPI_Wtime();
    for (size_t off = 0; off < count; off += step) {
        const size_t n = count - off < step ? count - off : step;
        DV_CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, (char *)buf + off * es, (int)n, mpi_type_(c, t),
                                   sum_op_(c, t), c->comm));
    }
    c->bytes_sent += count * es;
    c->wire_bytes += 2 * (uint64_t)(c->world - 1) * count * es / (uint64_t)c->world;
    c->seconds += MPI_Wtime() - t0;
    return DV_OK;
}

int dv_comm_allreduce_max(dv_comm *c, double *buf, size_t count) {
    const size_t step = chunk_(c);
    const double t0 = MPI_Wtime();
    for (size_t off = 0; off < count; off += step) {
        const size_t n = count - off < step ? count - off : step;
        DV_CHECK_MPI(MPI_Allreduce(MPI_IN_PLACE, buf + off, (int)n, MPI_DOUBLE, MPI_MAX, c->comm));
    }
    c->wire_bytes += 2 * (uint64_t)(c->world - 1) * count * sizeof *buf / (uint64_t)c->world;
    c->seconds += MPI_Wtime() - t0;
    return DV_OK;
}

int dv_comm_reduce_scatter_sum(dv_comm *c, const void *send, void *recv, size_t count, dv_dtype t) {
    const size_t es = dv_dtype_size(t), step = chunk_(c), W = (size_t)c->world;
    const double t0 = MPI_Wtime();
    if (count <= step) {
        DV_CHECK_MPI(MPI_Reduce_scatter_block(send, recv, (int)count, mpi_type_(c, t),
                                              sum_op_(c, t), c->comm));
    } else { /* stage piece k of every rank's block contiguously, then scatter the sums */
        DV_TRY(reserve_(c, W * step * es));
        for (size_t off = 0; off < count; off += step) {
            const size_t n = count - off < step ? count - off : step;
            for (size_t r = 0; r < W; r++)
                memcpy((char *)c->tmp + r * n * es, (const char *)send + (r * count + off) * es, n * es);
            DV_CHECK_MPI(MPI_Reduce_scatter_block(MPI_IN_PLACE, c->tmp, (int)n, mpi_type_(c, t),
                                                  sum_op_(c, t), c->comm));
            memcpy((char *)recv + off * es, c->tmp, n * es);
        }
    }
    c->bytes_sent += W * count * es;
    c->wire_bytes += (uint64_t)(W - 1) * count * es;
    c->seconds += MPI_Wtime() - t0;
    return DV_OK;
}

int dv_comm_allgather(dv_comm *c, const void *send, void *recv, size_t count, dv_dtype t) {
    const size_t es = dv_dtype_size(t), step = chunk_(c), W = (size_t)c->world;
    const double t0 = MPI_Wtime();
    if (count <= step) {
        DV_CHECK_MPI(MPI_Allgather(send, (int)count, mpi_type_(c, t), recv, (int)count,
                                   mpi_type_(c, t), c->comm));
    } else {
        DV_TRY(reserve_(c, W * step * es));
        for (size_t off = 0; off < count; off += step) {
            const size_t n = count - off < step ? count - off : step;
            DV_CHECK_MPI(MPI_Allgather((const char *)send + off * es, (int)n, mpi_type_(c, t),
                                       c->tmp, (int)n, mpi_type_(c, t), c->comm));
            for (size_t r = 0; r < W; r++)
                memcpy((char *)recv + (r * count + off) * es, (char *)c->tmp + r * n * es, n * es);
        }
    }
    c->bytes_sent += count * es;
    c->wire_bytes += (uint64_t)(W - 1) * count * es;
    c->seconds += MPI_Wtime() - t0;
    return DV_OK;
}

int dv_comm_bcast(dv_comm *c, void *buf, size_t count, dv_dtype t, int root) {
    const size_t es = dv_dtype_size(t), step = chunk_(c);
    for (size_t off = 0; off < count; off += step) {
        const size_t n = count - off < step ? count - off : step;
        DV_CHECK_MPI(MPI_Bcast((char *)buf + off * es, (int)n, mpi_type_(c, t), root, c->comm));
    }
    if (c->rank == root) c->bytes_sent += count * es, c->wire_bytes += count * es;
    return DV_OK;
}

int dv_comm_hook_sum(void *ctx, double *buf, int64_t count) {
    return dv_comm_allreduce_sum(ctx, buf, (size_t)count, DV_F64);
}
int dv_comm_hook_max(void *ctx, double *buf, int64_t count) {
    return dv_comm_allreduce_max(ctx, buf, (size_t)count);
}

void dv_convert_f32_to(void *dst, dv_dtype t, const float *src, size_t n) {
    if (t == DV_F32) {
        memcpy(dst, src, n * sizeof *src);
        return;
    }
    if (t == DV_F64) {
        double *d = dst;
        for (size_t i = 0; i < n; i++) d[i] = src[i];
        return;
    }
    uint16_t *d = dst;
    if (t == DV_F16) {
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) d[i] = dv_f32_to_f16(src[i]);
    } else {
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) d[i] = dv_f32_to_bf16(src[i]);
    }
}

void dv_convert_to_f32(float *dst, const void *src, dv_dtype t, size_t n) {
    if (t == DV_F32) {
        memcpy(dst, src, n * sizeof *dst);
        return;
    }
    if (t == DV_F64) {
        const double *d = src;
        for (size_t i = 0; i < n; i++) dst[i] = (float)d[i];
        return;
    }
    const uint16_t *s = src;
    if (t == DV_F16) {
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) dst[i] = dv_f16_to_f32(s[i]);
    } else {
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) dst[i] = dv_bf16_to_f32(s[i]);
    }
}
