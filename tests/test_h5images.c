/* h5images: raw and encoded shards written and read back through hyperslabs of arbitrary
 * slices (serially and through the MPI-IO driver on a 1-rank communicator), labels, ids,
 * paths, class names, skipped records and attributes; atomic publish (.tmp then rename, stale
 * .tmp overwritten, discard); clear errors for a non-shard HDF5 file, a text file, a missing
 * file, a truncated shard and a newer format version. Files live in a mkdtemp folder. */
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"
#include "h5images.h"
#include "h5util.h"
#include "tap.h"

static char g_dir[256];

static void path_in(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "%s/%s", g_dir, name);
}

static int exists(const char *p) { return access(p, F_OK) == 0; }

/* stderr of fn(arg) into buf */
typedef int (*call_fn)(void *);
static int capture_stderr(call_fn fn, void *arg, char *buf, size_t len) {
    fflush(stderr);
    FILE *tmp = tmpfile();
    int saved = dup(2);
    dup2(fileno(tmp), 2);
    int rc = fn(arg);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    rewind(tmp);
    size_t n = fread(buf, 1, len - 1, tmp);
    buf[n] = 0;
    if (n && buf[n - 1] == '\n') buf[n - 1] = 0; /* one line: keep TAP output tidy */
    fclose(tmp);
    return rc;
}

static int open_serial(void *arg) {
    dv_h5img r;
    int s = dv_h5img_open((const char *)arg, MPI_COMM_NULL, &r);
    if (s == DV_OK) dv_h5img_close(&r);
    return s;
}

struct create_args {
    const char *path;
    dv_h5img_spec *spec;
    dv_h5img_writer **w;
};
static int create_call(void *arg) {
    struct create_args *a = arg;
    return dv_h5img_create(a->path, a->spec, a->w);
}
struct paths_args {
    dv_h5img *r;
};
static int paths_call(void *arg) {
    char *p[1];
    return dv_h5img_read_paths(((struct paths_args *)arg)->r, 0, 1, p);
}
static int past_end_call(void *arg) {
    uint8_t buf[4 * 5 * 7 * 3];
    return dv_h5img_read_raw(arg, 20, 4, buf);
}

static uint8_t pix(int i, int y, int x, int c) {
    return (uint8_t)(i * 31 + y * 7 + x * 3 + c * 101);
}

enum { N_RAW = 23, H = 5, W = 7, C = 3 };

static void test_raw(void) {
    char final[512], tmp[600];
    path_in(final, sizeof final, "raw.h5");
    snprintf(tmp, sizeof tmp, "%s.tmp", final);
    /* a stale temporary file from a "killed" run */
    FILE *f = fopen(tmp, "w");
    fputs("garbage from a killed writer", f);
    fclose(f);
    const char *classes[] = {"cat", "dog", "emu", "fox"};
    dv_h5img_spec sp = {.layout = DV_H5IMG_RAW,
                        .height = H,
                        .width = W,
                        .channels = C,
                        .num_classes = 4,
                        .class_names = classes,
                        .num_class_names = 4,
                        .with_paths = 1,
                        .chunk_images = 4};
    dv_h5img_writer *w = NULL;
    int s = dv_h5img_create(final, &sp, &w);
    tap_ok(s == DV_OK, "raw writer created over a stale .tmp");
    uint8_t img[H * W * C];
    for (int i = 0; i < N_RAW && s == DV_OK; i++) {
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++)
                for (int c = 0; c < C; c++)
                    img[(y * W + x) * C + c] = pix(i, y, x, c);
        char p[32];
        snprintf(p, sizeof p, "cls/%02d.png", i);
        s = dv_h5img_append_raw(w, img, i % 5 - 1, 1000 + 3 * (uint64_t)i, p);
    }
    if (s == DV_OK) s = dv_h5img_add_skipped(w, 1069, "cls/bad.jpg", "corrupt JPEG (x)");
    if (s == DV_OK) s = dv_h5img_set_attr_u64(w, "id_begin", 1000);
    if (s == DV_OK) s = dv_h5img_set_attr_u64(w, "big", UINT64_C(0xfedcba9876543210));
    if (s == DV_OK) s = dv_h5img_set_attr_str(w, "producer", "test_h5images");
    tap_ok(s == DV_OK && dv_h5img_writer_count(w) == N_RAW, "appended %d raw images", N_RAW);
    tap_ok(exists(tmp) && !exists(final), "while writing only the .tmp file exists");
    s = dv_h5img_commit(w);
    tap_ok(s == DV_OK && exists(final) && !exists(tmp), "commit renames .tmp to the final name");

    dv_h5img r;
    s = dv_h5img_open(final, MPI_COMM_NULL, &r);
    tap_ok(s == DV_OK && r.layout == DV_H5IMG_RAW && r.count == N_RAW && r.height == H &&
               r.width == W && r.channels == C && r.num_classes == 4 && r.has_paths &&
               r.format_version == 1,
           "raw shard opens: N=%lld %dx%dx%d, %d classes", (long long)r.count, r.height, r.width,
           r.channels, r.num_classes);
    if (s != DV_OK) return;
    const int64_t slices[][2] = {{0, N_RAW}, {3, 6}, {22, 1}, {4, 4}, {7, 0}, {1, 17}};
    for (size_t k = 0; k < sizeof slices / sizeof slices[0]; k++) {
        const int64_t st = slices[k][0], n = slices[k][1];
        uint8_t *buf = malloc((size_t)(n ? n : 1) * H * W * C);
        int32_t lab[N_RAW];
        uint64_t ids[N_RAW];
        char *paths[N_RAW];
        int ok = dv_h5img_read_raw(&r, st, n, buf) == DV_OK &&
                 dv_h5img_read_labels(&r, st, n, lab) == DV_OK &&
                 dv_h5img_read_ids(&r, st, n, ids) == DV_OK &&
                 dv_h5img_read_paths(&r, st, n, paths) == DV_OK;
        for (int64_t i = 0; ok && i < n; i++) {
            const int gi = (int)(st + i);
            char want[32];
            snprintf(want, sizeof want, "cls/%02d.png", gi);
            ok = lab[i] == gi % 5 - 1 && ids[i] == 1000 + 3 * (uint64_t)gi &&
                 !strcmp(paths[i], want);
            for (int y = 0; ok && y < H; y++)
                for (int x = 0; ok && x < W; x++)
                    for (int c = 0; ok && c < C; c++)
                        ok = buf[((i * H + y) * W + x) * C + c] == pix(gi, y, x, c);
        }
        if (ok) dv_strv_free(paths, n, 0);
        tap_ok(ok, "raw rows [%lld, %lld): pixels, labels, ids, paths", (long long)st,
               (long long)(st + n));
        free(buf);
    }
    char **names;
    int nn;
    s = dv_h5img_read_class_names(&r, &names, &nn);
    tap_ok(s == DV_OK && nn == 4 && !strcmp(names[0], "cat") && !strcmp(names[3], "fox"),
           "class names read back (%d)", nn);
    if (s == DV_OK) dv_strv_free(names, nn, 1);
    int64_t ns;
    uint64_t *sids;
    char **sp_, **sr;
    s = dv_h5img_read_skipped(&r, &ns, &sids, &sp_, &sr);
    tap_ok(s == DV_OK && ns == 1 && sids[0] == 1069 && !strcmp(sp_[0], "cls/bad.jpg") &&
               !strcmp(sr[0], "corrupt JPEG (x)"),
           "skipped record read back");
    if (s == DV_OK) {
        free(sids);
        dv_strv_free(sp_, ns, 1);
        dv_strv_free(sr, ns, 1);
    }
    uint64_t v = 0, big = 0;
    int p1 = 0, p2 = 0, p3 = 0, p4 = 1;
    char str[64];
    dv_h5img_get_attr_u64(&r, "id_begin", &v, &p1);
    dv_h5img_get_attr_u64(&r, "big", &big, &p2);
    dv_h5img_get_attr_str(&r, "producer", str, sizeof str, &p3);
    dv_h5img_get_attr_u64(&r, "nonexistent", &v, &p4);
    tap_ok(p1 && v == 1000 && p2 && big == UINT64_C(0xfedcba9876543210) && p3 &&
               !strcmp(str, "test_h5images") && !p4,
           "attributes: u64 (also above 2^63), string, absent");
    char fmt[64];
    dv_h5img_get_attr_str(&r, "format", fmt, sizeof fmt, &p1);
    tap_ok(p1 && !strcmp(fmt, "dinov2c-images"), "format attribute is '%s'", fmt);
    char err[512];
    s = capture_stderr(past_end_call, &r, err, sizeof err);
    tap_ok(s == DV_ERR_ARG && strstr(err, "rows [20, 24) outside [0, 23)"),
           "a slice past the end is DV_ERR_ARG");
    dv_h5img_close(&r);
}

static void test_encoded(void) {
    char final[512];
    path_in(final, sizeof final, "enc.h5");
    dv_h5img_spec sp = {.layout = DV_H5IMG_ENCODED, .num_classes = 0};
    dv_h5img_writer *w = NULL;
    int s = dv_h5img_create(final, &sp, &w);
    const int n = 300; /* more than one internal batch */
    uint8_t blob[700];
    for (int i = 0; i < n && s == DV_OK; i++) {
        const size_t len = (size_t)((i * 37) % 700); /* includes an empty blob (i = 0) */
        for (size_t j = 0; j < len; j++)
            blob[j] = (uint8_t)(i + j * 5);
        s = dv_h5img_append_encoded(w, blob, len, -1, (uint64_t)i * 2, NULL);
    }
    s = s == DV_OK ? dv_h5img_commit(w) : s;
    tap_ok(s == DV_OK, "encoded shard of %d blobs written", n);
    dv_h5img r;
    s = dv_h5img_open(final, MPI_COMM_NULL, &r);
    tap_ok(s == DV_OK && r.layout == DV_H5IMG_ENCODED && r.count == n && !r.has_paths &&
               r.height == 0,
           "encoded shard opens: N=%lld, no paths", (long long)r.count);
    if (s != DV_OK) return;
    const int64_t slices[][2] = {{0, 300}, {250, 13}, {299, 1}, {100, 0}};
    for (size_t k = 0; k < 4; k++) {
        dv_h5img_blobs b;
        const int64_t st = slices[k][0], cnt = slices[k][1];
        int ok = dv_h5img_read_encoded(&r, st, cnt, &b) == DV_OK && b.count == cnt;
        int32_t lab[300];
        ok = ok && dv_h5img_read_labels(&r, st, cnt, lab) == DV_OK;
        for (int64_t i = 0; ok && i < cnt; i++) {
            const int gi = (int)(st + i);
            const size_t len = (size_t)((gi * 37) % 700);
            ok = b.offsets[i + 1] - b.offsets[i] == len && lab[i] == -1;
            for (size_t j = 0; ok && j < len; j++)
                ok = b.data[b.offsets[i] + j] == (uint8_t)(gi + j * 5);
        }
        tap_ok(ok, "encoded rows [%lld, %lld): bytes and lengths", (long long)st,
               (long long)(st + cnt));
        dv_h5img_blobs_free(&b);
    }
    struct paths_args pa = {&r};
    char err[512];
    s = capture_stderr(paths_call, &pa, err, sizeof err);
    tap_ok(s == DV_ERR_FORMAT && strstr(err, "shard has no /paths"),
           "read_paths without /paths: %s", err);
    dv_h5img_close(&r);

    /* discard removes the temporary file and leaves no final file */
    char d[512], dt[600];
    path_in(d, sizeof d, "discarded.h5");
    snprintf(dt, sizeof dt, "%s.tmp", d);
    s = dv_h5img_create(d, &sp, &w);
    if (s == DV_OK) {
        dv_h5img_append_encoded(w, "abc", 3, 0, 0, NULL);
        dv_h5img_discard(w);
    }
    tap_ok(s == DV_OK && !exists(d) && !exists(dt), "discard leaves neither file");

    /* an empty shard is valid */
    path_in(d, sizeof d, "empty.h5");
    s = dv_h5img_create(d, &sp, &w);
    s = s == DV_OK ? dv_h5img_commit(w) : s;
    int ok = s == DV_OK && dv_h5img_open(d, MPI_COMM_NULL, &r) == DV_OK;
    if (ok) {
        dv_h5img_blobs b;
        ok = r.count == 0 && dv_h5img_read_encoded(&r, 0, 0, &b) == DV_OK && b.offsets[0] == 0;
        dv_h5img_blobs_free(&b);
        dv_h5img_close(&r);
    }
    tap_ok(ok, "an empty encoded shard opens with N=0");
}

static void test_errors(void) {
    char p[512], err[2048];
    /* an HDF5 file that is not a shard */
    path_in(p, sizeof p, "other.h5");
    hid_t f = H5Fcreate(p, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t d = 4;
    hid_t sp = H5Screate_simple(1, &d, NULL);
    hid_t ds = H5Dcreate2(f, "x", H5T_NATIVE_INT, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dclose(ds);
    H5Sclose(sp);
    H5Fclose(f);
    int s = capture_stderr(open_serial, p, err, sizeof err);
    char want[700];
    snprintf(want, sizeof want, "%s: not a dinov2c image shard (format attribute missing)", p);
    /* "error: <want>" (with "[rank 0] " after "error: " when several ranks run) */
    const size_t el = strlen(err), wl = strlen(want);
    tap_ok(s == DV_ERR_FORMAT && !strncmp(err, "error: ", 7) && el >= wl &&
               !strcmp(err + el - wl, want) && !strchr(err, '\n'),
           "non-shard HDF5 file: %s", err);
    dv_h5img r;
    char why[512];
    s = dv_h5img_probe(p, &r, why, sizeof why);
    tap_ok(s == DV_ERR_FORMAT && strstr(why, "format attribute missing"),
           "probe is quiet and says why");

    /* a text file */
    path_in(p, sizeof p, "notes.txt");
    FILE *t = fopen(p, "w");
    fputs("not hdf5\n", t);
    fclose(t);
    s = capture_stderr(open_serial, p, err, sizeof err);
    tap_ok(s == DV_ERR_FORMAT && strstr(err, "notes.txt: not an HDF5 file"), "text file: %s", err);
    /* a missing file */
    path_in(p, sizeof p, "missing.h5");
    s = capture_stderr(open_serial, p, err, sizeof err);
    tap_ok(s == DV_ERR_IO && strstr(err, "missing.h5: cannot open (No such file or directory)"),
           "missing file: %s", err);

    /* a truncated shard: the first half of raw.h5 */
    char src[512];
    path_in(src, sizeof src, "raw.h5");
    path_in(p, sizeof p, "cut.h5");
    FILE *in = fopen(src, "rb"), *out = fopen(p, "wb");
    fseek(in, 0, SEEK_END);
    long len = ftell(in);
    rewind(in);
    char *buf = malloc((size_t)len);
    size_t got = fread(buf, 1, (size_t)len, in);
    fwrite(buf, 1, got / 2, out);
    fclose(in);
    fclose(out);
    free(buf);
    s = capture_stderr(open_serial, p, err, sizeof err);
    tap_ok(s == DV_ERR_FORMAT && !strchr(err, '\n') && strstr(err, "cut.h5: cannot open HDF5 file"),
           "truncated shard, one line: %s", err);

    /* a newer format version */
    path_in(p, sizeof p, "v2.h5");
    dv_h5img_spec es = {.layout = DV_H5IMG_ENCODED};
    dv_h5img_writer *w;
    s = dv_h5img_create(p, &es, &w);
    if (s == DV_OK) {
        dv_h5img_set_attr_u64(w, "format_version", 2);
        s = dv_h5img_commit(w);
    }
    s = capture_stderr(open_serial, p, err, sizeof err);
    tap_ok(s == DV_ERR_FORMAT && strstr(err, "format_version 2 is not supported"), "version 2: %s",
           err);

    /* bad writer arguments */
    dv_h5img_spec bad = {.layout = DV_H5IMG_RAW};
    path_in(p, sizeof p, "bad.h5");
    struct create_args ca = {p, &bad, &w};
    s = capture_stderr(create_call, &ca, err, sizeof err);
    tap_ok(s == DV_ERR_ARG && !exists(p) && strstr(err, "raw layout needs a shape"),
           "raw layout without a shape is DV_ERR_ARG");
}

static int rm_rf(const char *dir) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd);
}

/* Every rank opens the shards collectively (H5Pset_fapl_mpio) and reads only its own slice
 * with independent hyperslab reads, raw and vlen. */
static int parallel_reads(int rank, int world) {
    char raw[512], enc[512];
    path_in(raw, sizeof raw, "raw.h5");
    path_in(enc, sizeof enc, "enc.h5");
    dv_h5img r;
    int ok = dv_h5img_open(raw, MPI_COMM_WORLD, &r) == DV_OK;
    if (ok) {
        const int64_t b = r.count * rank / world, e = r.count * (rank + 1) / world;
        uint8_t *buf = malloc((size_t)(e - b + 1) * H * W * C);
        uint64_t ids[N_RAW];
        ok = r.count == N_RAW && dv_h5img_read_raw(&r, b, e - b, buf) == DV_OK &&
             dv_h5img_read_ids(&r, b, e - b, ids) == DV_OK;
        for (int64_t i = 0; ok && i < e - b; i++)
            ok = ids[i] == 1000 + 3 * (uint64_t)(b + i) &&
                 buf[(size_t)i * H * W * C + 4] == pix((int)(b + i), 0, 1, 1);
        free(buf);
        ok &= dv_h5img_close(&r) == DV_OK;
    }
    int ok2 = dv_h5img_open(enc, MPI_COMM_WORLD, &r) == DV_OK;
    if (ok2) {
        const int64_t b = r.count * rank / world, e = r.count * (rank + 1) / world;
        dv_h5img_blobs bl;
        ok2 = dv_h5img_read_encoded(&r, b, e - b, &bl) == DV_OK;
        for (int64_t i = 0; ok2 && i < e - b; i++) {
            const int gi = (int)(b + i);
            const size_t len = (size_t)((gi * 37) % 700);
            ok2 = bl.offsets[i + 1] - bl.offsets[i] == len &&
                  (len == 0 || bl.data[bl.offsets[i] + len - 1] == (uint8_t)(gi + (len - 1) * 5));
        }
        dv_h5img_blobs_free(&bl);
        ok2 &= dv_h5img_close(&r) == DV_OK;
    }
    return ok && ok2;
}

/* Serial by default; started by an MPI launcher (tests/mpirun.sh NP tests/test_h5images) rank 0
 * runs the serial checks and then every rank reads its slice through parallel HDF5. The
 * launcher is detected from its environment so that a plain run does not initialise MPI. */
int main(int argc, char **argv) {
    const int launched =
        getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_RANK");
    int rank = 0, world = 1;
    if (launched) {
        MPI_Init(&argc, &argv);
        MPI_Comm_rank(MPI_COMM_WORLD, &rank);
        MPI_Comm_size(MPI_COMM_WORLD, &world);
    }
    dv_h5_quiet();
    int made = 1;
    if (rank == 0) {
        tap_no_plan();
        const char *tmpd = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
        snprintf(g_dir, sizeof g_dir, "%s/test_h5images.XXXXXX", tmpd);
        made = mkdtemp(g_dir) != NULL;
        if (!made) tap_ok(0, "mkdtemp %s", g_dir);
    }
    if (launched) {
        MPI_Bcast(&made, 1, MPI_INT, 0, MPI_COMM_WORLD);
        MPI_Bcast(g_dir, sizeof g_dir, MPI_CHAR, 0, MPI_COMM_WORLD);
    }
    if (made) {
        if (rank == 0) {
            test_raw();
            test_encoded();
            test_errors();
        }
        if (launched) {
            MPI_Barrier(MPI_COMM_WORLD);
            int ok = parallel_reads(rank, world), all = 0;
            MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
            if (rank == 0)
                tap_ok(all,
                       "parallel HDF5 on %d ranks: each rank reads its slice of the raw and "
                       "encoded shards",
                       world);
            MPI_Barrier(MPI_COMM_WORLD);
        } else {
            tap_skip(1, "parallel read: run under mpirun (tests/mpirun.sh 2 tests/test_h5images)");
        }
        if (rank == 0) rm_rf(g_dir);
    }
    int rc = rank == 0 ? tap_exit() : 0;
    if (launched) MPI_Finalize();
    return rc;
}
