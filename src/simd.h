/* simd — DV_CLONES: AVX2 clones of hot element-wise loops.
 *
 * The project builds for the baseline x86-64 ISA (SSE2) so one binary runs everywhere; a
 * function marked DV_CLONES is compiled twice (AVX2 and baseline) and the dynamic loader picks
 * one once per process (ifunc). Only loops whose per-element operations are the same in both
 * (no FMA: it would change the rounding; no reassociated reductions) get it, so the results are
 * bit-identical whichever clone runs. Elsewhere (other compilers, -O0) it is empty.
 */
#ifndef DV_SIMD_H
#define DV_SIMD_H

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__OPTIMIZE__) && \
    !defined(__SANITIZE_ADDRESS__)
#define DV_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define DV_CLONES
#endif

#endif
