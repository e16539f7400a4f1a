/* idx — reader of MNIST-style IDX files (LeCun's format), plain or gzip-compressed.
 *
 *   dv_idx im, lb;
 *   DV_TRY(dv_idx_read("t10k-images-idx3-ubyte.gz", 3, &im));  // dims {N, rows, cols}
 *   DV_TRY(dv_idx_read("t10k-labels-idx1-ubyte.gz", 1, &lb));  // dims {N}
 *   uint8_t *image_i = im.data + i * im.dims[1] * im.dims[2];
 *   dv_idx_free(&im); dv_idx_free(&lb);
 *
 * Format: a 4-byte magic 00 00 TYPE NDIM, NDIM big-endian uint32 sizes, then the elements in
 * row-major order. Only TYPE 0x08 (unsigned byte) is supported, which covers MNIST and
 * Fashion-MNIST (images 0x00000803, labels 0x00000801). The file length must be exactly header
 * plus data: a short file is "truncated", a longer one has "trailing data" (both
 * DV_ERR_FORMAT with the path and byte counts). zlib's gzopen/gzread read gzip and plain files
 * alike (the gzip magic decides, not the name).
 */
#ifndef DV_IDX_H
#define DV_IDX_H

#include <stddef.h>
#include <stdint.h>

#define DV_IDX_MAX_DIMS 4

typedef struct {
    int ndim;
    uint32_t dims[DV_IDX_MAX_DIMS];
    uint8_t *data; /* prod(dims) bytes */
    size_t size;
} dv_idx;

/* want_ndim: required number of dimensions (0 = any, up to DV_IDX_MAX_DIMS). */
int dv_idx_read(const char *path, int want_ndim, dv_idx *out);
void dv_idx_free(dv_idx *x);

#endif
