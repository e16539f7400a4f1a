/* attention — see attention.h. */
#include "attention.h"

#include <math.h>

#include "err.h"
#include "gemm.h"
#include "softmax.h"

#ifdef _OPENMP
#include <omp.h>
#endif

static int max_threads_(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static int thread_id_(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

int64_t attention_max_length(const attention_segment *seg, int64_t nseg) {
    int64_t m = 0;
    for (int64_t s = 0; s < nseg; s++)
        if (seg[s].length > m) m = seg[s].length;
    return m;
}

size_t attention_workspace_floats(int64_t max_len, int threads) {
    if (threads <= 0) threads = max_threads_();
    if (max_len < 1) max_len = 1;
    return (size_t)threads * 2u * (size_t)max_len * (size_t)max_len;
}

/* Validates shapes, the segment table and the workspace; sets the thread count the workspace
 * allows and the longest segment. */
static int check_args_(const attention_segment *seg, int64_t nseg, int64_t T, int64_t D,
                       int64_t NH, const float *work, size_t work_floats, int *nthreads,
                       int64_t *max_len) {
    if (T < 0 || D <= 0 || NH <= 0 || D % NH != 0 || nseg < 0)
        return DV_ERR(DV_ERR_ARG, "attention: bad shape T=%lld D=%lld NH=%lld nseg=%lld",
                      (long long)T, (long long)D, (long long)NH, (long long)nseg);
    for (int64_t s = 0; s < nseg; s++)
        if (seg[s].length < 1 || seg[s].offset < 0 || seg[s].offset + seg[s].length > T)
            return DV_ERR(DV_ERR_ARG,
                          "attention: segment %lld (offset %lld, length %lld) outside T=%lld",
                          (long long)s, (long long)seg[s].offset, (long long)seg[s].length,
                          (long long)T);
    *max_len = attention_max_length(seg, nseg);
    *nthreads = 1;
    if (nseg == 0) return DV_OK; /* nothing to do; the workspace may be empty */
    const size_t per = attention_workspace_floats(*max_len, 1);
    if (work == NULL || work_floats < per)
        return DV_ERR(DV_ERR_ARG, "attention: workspace of %zu floats < %zu needed for length %lld",
                      work_floats, per, (long long)*max_len);
    const size_t nt = work_floats / per;
    const int mt = max_threads_();
    *nthreads = nt < (size_t)mt ? (int)nt : mt;
    return DV_OK;
}

int attention_forward(float *out, float *lse, const float *qkv, const attention_segment *seg,
                      int64_t nseg, int64_t T, int64_t D, int64_t NH, float *work,
                      size_t work_floats) {
    int64_t max_len = 0;
    int nt = 1;
    DV_TRY(check_args_(seg, nseg, T, D, NH, work, work_floats, &nt, &max_len));
    const int64_t HS = D / NH, ld = 3 * D;
    const float scale = (float)(1.0 / sqrt((double)HS));
    const size_t per = attention_workspace_floats(max_len, 1);
    const int64_t npairs = nseg * NH;

#pragma omp parallel num_threads(nt)
    {
        float *S = work + (size_t)thread_id_() * per; /* (L, L) scores, then probabilities */
#pragma omp for schedule(dynamic, 1)
        for (int64_t p = 0; p < npairs; p++) {
            const int64_t s = p / NH, h = p % NH;
            const int64_t off = seg[s].offset, L = seg[s].length;
            const float *q = qkv + off * ld + h * HS, *k = q + D, *v = q + 2 * D;
            gemm_f32(0, 1, L, L, HS, scale, q, ld, k, ld, 0.0f, S, L);
            for (int64_t i = 0; i < L; i++) {
                float *row = S + i * L;
                float m = -INFINITY;
#pragma omp simd reduction(max : m)
                for (int64_t j = 0; j < L; j++) m = row[j] > m ? row[j] : m;
                double sum = 0.0;
#pragma omp simd reduction(+ : sum)
                for (int64_t j = 0; j < L; j++) {
                    const float e = softmax_exp_f32(row[j] - m);
                    row[j] = e;
                    sum += e;
                }
                const float inv = (float)(1.0 / sum);
#pragma omp simd
                for (int64_t j = 0; j < L; j++) row[j] *= inv;
                if (lse) lse[(off + i) * NH + h] = m + (float)log(sum);
            }
            gemm_f32(0, 0, L, HS, L, 1.0f, S, L, v, ld, 0.0f, out + off * D + h * HS, D);
        }
    }
    return DV_OK;
}

int attention_backward(float *dqkv, const float *dout, const float *qkv, const float *lse,
                       const attention_segment *seg, int64_t nseg, int64_t T, int64_t D,
                       int64_t NH, float *work, size_t work_floats) {
    int64_t max_len = 0;
    int nt = 1;
    DV_TRY(check_args_(seg, nseg, T, D, NH, work, work_floats, &nt, &max_len));
    const int64_t HS = D / NH, ld = 3 * D;
    const float scale = (float)(1.0 / sqrt((double)HS));
    const size_t per = attention_workspace_floats(max_len, 1);
    const int64_t npairs = nseg * NH;

#pragma omp parallel num_threads(nt)
    {
        float *P = work + (size_t)thread_id_() * per;         /* (L, L) probabilities */
        float *dP = P + (size_t)max_len * (size_t)max_len;   /* (L, L) then dS */
#pragma omp for schedule(dynamic, 1)
        for (int64_t p = 0; p < npairs; p++) {
            const int64_t s = p / NH, h = p % NH;
            const int64_t off = seg[s].offset, L = seg[s].length;
            const float *q = qkv + off * ld + h * HS, *k = q + D, *v = q + 2 * D;
            const float *dO = dout + off * D + h * HS;
            float *dq = dqkv + off * ld + h * HS, *dk = dq + D, *dv = dq + 2 * D;
            /* P = exp(scale · Q Kᵀ − lse) */
            gemm_f32(0, 1, L, L, HS, scale, q, ld, k, ld, 0.0f, P, L);
            for (int64_t i = 0; i < L; i++) {
                const float l = lse[(off + i) * NH + h];
                float *row = P + i * L;
#pragma omp simd
                for (int64_t j = 0; j < L; j++) row[j] = softmax_exp_f32(row[j] - l);
            }
            /* dV = Pᵀ dO;  dP = dO Vᵀ */
            gemm_f32(1, 0, L, HS, L, 1.0f, P, L, dO, D, 0.0f, dv, ld);
            gemm_f32(0, 1, L, L, HS, 1.0f, dO, D, v, ld, 0.0f, dP, L);
            /* dS = P ⊙ (dP − rowsum(P ⊙ dP)) */
            for (int64_t i = 0; i < L; i++) {
                const float *pr = P + i * L;
                float *dr = dP + i * L;
                double acc = 0.0;
#pragma omp simd reduction(+ : acc)
                for (int64_t j = 0; j < L; j++) acc += (double)pr[j] * dr[j];
                const float di = (float)acc;
#pragma omp simd
                for (int64_t j = 0; j < L; j++) dr[j] = pr[j] * (dr[j] - di);
            }
            /* dQ = scale · dS K;  dK = scale · dSᵀ Q */
            gemm_f32(0, 0, L, HS, L, scale, dP, L, k, ld, 0.0f, dq, ld);
            gemm_f32(1, 0, L, HS, L, scale, dP, L, q, ld, 0.0f, dk, ld);
        }
    }
    return DV_OK;
}
