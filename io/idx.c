/* idx — see idx.h. */
#include "idx.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "err.h"

void dv_idx_free(dv_idx *x) {
    if (!x) return;
    free(x->data);
    memset(x, 0, sizeof *x);
}

/* Read up to n bytes; returns bytes read, or -1 on a zlib error (message in *why). */
static int64_t read_all_(gzFile f, uint8_t *buf, size_t n, const char **why) {
    size_t got = 0;
    while (got < n) {
        size_t want = n - got;
        if (want > (1u << 30)) want = 1u << 30;
        int r = gzread(f, buf + got, (unsigned)want);
        if (r < 0) {
            int zerr = 0;
            *why = gzerror(f, &zerr);
            if (zerr == Z_ERRNO) *why = strerror(errno);
            return -1;
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    /* a gzip stream that ended early reports Z_BUF_ERROR only through gzerror */
    int zerr = 0;
    const char *msg = gzerror(f, &zerr);
    if (zerr != Z_OK && zerr != Z_STREAM_END && zerr != Z_BUF_ERROR) {
        *why = msg;
        return -1;
    }
    return (int64_t)got;
}

int dv_idx_read(const char *path, int want_ndim, dv_idx *out) {
    memset(out, 0, sizeof *out);
    gzFile f = gzopen(path, "rb");
    if (!f) {
        dv_user_error("%s: cannot open (%s)", path, errno ? strerror(errno) : "out of memory");
        return DV_ERR_IO;
    }
    int status = DV_OK;
    const char *why = NULL;
    uint8_t head[4 + 4 * DV_IDX_MAX_DIMS];
    int64_t got = read_all_(f, head, 4, &why);
    if (got < 0) {
        dv_user_error("%s: read error (%s)", path, why);
        status = DV_ERR_IO;
        goto done;
    }
    if (got < 4) {
        dv_user_error("%s: not an IDX file (%lld bytes, shorter than the 4-byte magic)", path,
                      (long long)got);
        status = DV_ERR_FORMAT;
        goto done;
    }
    const unsigned magic =
        (unsigned)head[0] << 24 | (unsigned)head[1] << 16 | (unsigned)head[2] << 8 | head[3];
    const int ndim = head[3];
    if (head[0] != 0 || head[1] != 0 || ndim < 1 || ndim > DV_IDX_MAX_DIMS) {
        dv_user_error("%s: not an IDX file (magic 0x%08x)", path, magic);
        status = DV_ERR_FORMAT;
        goto done;
    }
    if (head[2] != 0x08) {
        dv_user_error("%s: IDX element type 0x%02x is not supported (only 0x08, unsigned byte)",
                      path, head[2]);
        status = DV_ERR_FORMAT;
        goto done;
    }
    if (want_ndim && ndim != want_ndim) {
        dv_user_error("%s: IDX file has %d dimensions (magic 0x%08x), expected %d (magic 0x%08x)",
                      path, ndim, magic, want_ndim, 0x800u | (unsigned)want_ndim);
        status = DV_ERR_FORMAT;
        goto done;
    }
    got = read_all_(f, head + 4, 4 * (size_t)ndim, &why);
    if (got < 0 || got < 4 * ndim) {
        dv_user_error("%s: truncated IDX header (%s)", path, got < 0 ? why : "file too short");
        status = got < 0 ? DV_ERR_IO : DV_ERR_FORMAT;
        goto done;
    }
    uint64_t total = 1;
    out->ndim = ndim;
    for (int d = 0; d < ndim; d++) {
        const uint8_t *p = head + 4 + 4 * d;
        out->dims[d] = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
        total *= out->dims[d];
        if (total > ((uint64_t)1 << 40)) {
            dv_user_error("%s: IDX dimensions too large", path);
            status = DV_ERR_FORMAT;
            goto done;
        }
    }
    out->size = (size_t)total;
    out->data = malloc(total ? (size_t)total : 1);
    if (!out->data) {
        status =
            DV_ERR(DV_ERR_NOMEM, "out of memory: %s (%llu bytes)", path, (unsigned long long)total);
        goto done;
    }
    got = read_all_(f, out->data, (size_t)total, &why);
    if (got < 0) {
        dv_user_error("%s: read error (%s)", path, why);
        status = DV_ERR_IO;
        goto done;
    }
    if ((uint64_t)got < total) {
        dv_user_error("%s: truncated: expected %llu data bytes after the header, found %lld", path,
                      (unsigned long long)total, (long long)got);
        status = DV_ERR_FORMAT;
        goto done;
    }
    uint8_t extra;
    got = read_all_(f, &extra, 1, &why);
    if (got != 0) {
        dv_user_error("%s: trailing data after %llu data bytes (not an IDX file of this shape)",
                      path, (unsigned long long)total);
        status = DV_ERR_FORMAT;
        goto done;
    }
done:
    gzclose(f);
    if (status != DV_OK) dv_idx_free(out);
    return status;
}
