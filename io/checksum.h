/* checksum — dv-sum64, the 64-bit checksum stored with every checkpoint dataset
 * (doc/checkpoints.md), designed so that ranks holding different slices of a tensor can each
 * checksum their own part and add the results.
 *
 * Definition. View the dataset's bytes in file order as 32-bit little-endian words
 * w_0, w_1, ... (a trailing partial word is padded with zero bytes). Then
 *
 *   dv_sum64 = Σ_i  fmix64( ((i mod 2^32) << 32 | w_i)  ^  K0  ^  (i >> 32) · K1 )   (mod 2^64)
 *
 * with fmix64 the MurmurHash3 64-bit finaliser (a bijection), K0 = 0x243F6A8885A308D3,
 * K1 = 0x9E3779B97F4A7C15. Each term depends on the word AND its position, so a changed,
 * swapped, zeroed or shifted word changes the sum (a random change goes unnoticed with
 * probability about 2^-64). Because the sum is over independent terms, the checksum of a
 * tensor is the sum (mod 2^64) of the checksums of any partition of its words, each computed
 * with its own first word index: MPI_Allreduce(MPI_UINT64_T, MPI_SUM) combines the ranks'
 * slices. The order of summation does not matter, so OpenMP loops give the same value.
 *
 * Element views: a float32 element k is word k (its IEEE bits); a 64-bit element k (float64,
 * int64) is words 2k (low half) and 2k+1 (high half) — the little-endian file layout on any
 * host.
 *
 * Example (a rank holding elements [lo, hi) of a float32 tensor):
 *   uint64_t part = dv_sum64_f32(x + lo, hi - lo, lo), total;
 *   MPI_Allreduce(&part, &total, 1, MPI_UINT64_T, MPI_SUM, comm);
 */
#ifndef DV_CHECKSUM_H
#define DV_CHECKSUM_H

#include <stddef.h>
#include <stdint.h>

/* The name stored in the checkpoint root attribute `checksum_algorithm`. */
#define DV_SUM64_NAME "dv-sum64-v1"

/* The term of word value w at word index i. */
uint64_t dv_sum64_term(uint64_t i, uint32_t w);

/* Partial sums. first = the index (in words or elements, as named) of the first item given. */
uint64_t dv_sum64_words(const uint32_t *w, size_t n, uint64_t first_word);
uint64_t dv_sum64_f32(const float *x, size_t n, uint64_t first_elem);
uint64_t dv_sum64_64(const void *x64, size_t n, uint64_t first_elem); /* 8-byte elements */
/* Raw little-endian bytes (file order); nbytes need not be a multiple of 4 (zero padded).
 * first_byte must be a multiple of 4. */
uint64_t dv_sum64_bytes(const void *p, size_t nbytes, uint64_t first_byte);

#endif
