/* dinov2-pack (io/pack) and the IDX reader, on data made here in a mkdtemp folder:
 * an ImageFolder tree with a corrupt JPEG, a truncated JPEG, an empty file and a text file
 * (counts, labels, class names, gaps in ids, skipped lists in shards and manifest, one warning
 * line per bad file); a flat folder; a text list; IDX input (gzip and plain); mixed sizes ->
 * encoded layout; --resize-short / --center-crop; 1 task == 2 tasks == 3 tasks byte for byte;
 * rerun keeps complete shards (inode and mtime unchanged), replaces a leftover .tmp and a
 * damaged shard; command-line and environment parsing; clear errors. With
 * /usr/share/datasets/fashion-mnist present, the real t10k set is packed too. */
#include <png.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <turbojpeg.h>
#include <unistd.h>
#include <zlib.h>

#include "decode.h"
#include "err.h"
#include "h5images.h"
#include "h5util.h"
#include "idx.h"
#include "pack.h"
#include "resample.h"
#include "tap.h"

static int resample_(const uint8_t *src, int h, int w, int c, uint8_t *dst, int oh, int ow) {
    dv_resample_ws ws = {0};
    int rc = dv_resample_bicubic(src, h, w, c, (size_t)w * c, dst, oh, ow, &ws);
    dv_resample_ws_free(&ws);
    return rc;
}

static char g_dir[256];

static void P(char *buf, size_t n, const char *rel) { snprintf(buf, n, "%s/%s", g_dir, rel); }

static void mkdirs(const char *rel) {
    char p[512], cmd[600];
    P(p, sizeof p, rel);
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", p);
    if (system(cmd) != 0) tap_diag("mkdir -p %s failed", p);
}

static void write_bytes(const char *rel, const void *data, size_t n) {
    char p[512];
    P(p, sizeof p, rel);
    FILE *f = fopen(p, "wb");
    if (n) fwrite(data, 1, n, f);
    fclose(f);
}

static uint8_t *read_bytes(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    rewind(f);
    uint8_t *b = malloc(len ? (size_t)len : 1);
    *n = fread(b, 1, (size_t)len, f);
    fclose(f);
    return b;
}

static uint8_t *image(int h, int w, int c, int seed) {
    uint8_t *p = malloc((size_t)h * w * c);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int k = 0; k < c; k++)
                p[((size_t)y * w + x) * c + k] = (uint8_t)(seed * 40 + x * 5 + y * 3 + k * 30);
    return p;
}

static void put_jpeg(const char *rel, int h, int w, int seed,
                     size_t drop /* bytes cut off the end */) {
    uint8_t *px = image(h, w, 3, seed);
    tjhandle t = tjInitCompress();
    unsigned char *buf = NULL;
    unsigned long n = 0;
    tjCompress2(t, px, w, 0, h, TJPF_RGB, &buf, &n, TJSAMP_420, 90, 0);
    write_bytes(rel, buf, n - drop);
    tjFree(buf);
    tjDestroy(t);
    free(px);
}

static void put_png(const char *rel, int h, int w, int c, int seed) {
    uint8_t *px = image(h, w, c, seed);
    png_image im;
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    im.width = (png_uint_32)w;
    im.height = (png_uint_32)h;
    im.format = c == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
    png_alloc_size_t sz = 0;
    png_image_write_get_memory_size(im, sz, 0, px, 0, NULL);
    unsigned char *buf = malloc(sz);
    png_image_write_to_memory(&im, buf, &sz, 0, px, 0, NULL);
    write_bytes(rel, buf, sz);
    free(buf);
    free(px);
}

/* stderr of a dv_pack_run into buf */
static int pack_capture(const dv_pack_opts *o, dv_pack_result *r, char *buf, size_t len) {
    fflush(stderr);
    FILE *tmp = tmpfile();
    int saved = dup(2);
    dup2(fileno(tmp), 2);
    int rc = dv_pack_run(o, r);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    rewind(tmp);
    size_t n = fread(buf, 1, len - 1, tmp);
    buf[n] = 0;
    if (n && buf[n - 1] == '\n') buf[n - 1] = 0;
    fclose(tmp);
    return rc;
}

static int count_lines(const char *s, const char *needle) {
    int n = 0;
    for (const char *l = s; l && *l;) {
        const char *e = strchr(l, '\n');
        size_t len = e ? (size_t)(e - l) : strlen(l);
        char line[2048];
        snprintf(line, sizeof line, "%.*s", (int)len, l);
        if (strstr(line, needle)) n++;
        l = e ? e + 1 : NULL;
    }
    return n;
}

static void opts(dv_pack_opts *o, const char *in, const char *out) {
    static char ib[8][512], ob[8][512];
    static int k;
    k = (k + 1) % 8;
    dv_pack_opts_init(o);
    if (in) {
        P(ib[k], sizeof ib[k], in);
        o->input = ib[k];
    }
    P(ob[k], sizeof ob[k], out);
    o->output = ob[k];
    o->quiet = 1;
    o->progress = 0;
}

static int open_shard(const dv_pack_opts *o, int64_t k, dv_h5img *r) {
    char p[1024];
    dv_pack_shard_path(o, k, p, sizeof p);
    return dv_h5img_open(p, MPI_COMM_NULL, r);
}

/* ---- ImageFolder tree with bad files ------------------------------------------------------ */

static void make_tree(void) {
    mkdirs("tree/cat/sub");
    mkdirs("tree/dog");
    mkdirs("tree/.hidden");
    put_jpeg("tree/cat/a.jpg", 24, 32, 1, 0);
    put_png("tree/cat/b.png", 24, 32, 3, 2);
    unsigned char bad[300] = {0xff, 0xd8, 0xff};
    for (int i = 3; i < 300; i++)
        bad[i] = (unsigned char)(i * 13 + 1);
    write_bytes("tree/cat/bad.jpg", bad, sizeof bad);
    put_jpeg("tree/cat/half.jpg", 24, 32, 3, 200); /* cut inside the scan data */
    put_jpeg("tree/cat/sub/c.jpg", 24, 32, 4, 0);
    put_png("tree/dog/d.png", 24, 32, 1, 5); /* grayscale */
    put_jpeg("tree/dog/e.jpg", 24, 32, 6, 0);
    write_bytes("tree/dog/empty.jpg", "", 0);
    write_bytes("tree/dog/notes.txt", "a text file\n", 12);
    put_jpeg("tree/.hidden/x.jpg", 24, 32, 7, 0);
    write_bytes("tree/README", "top-level file\n", 15);
}

static void test_tree(void) {
    make_tree();
    dv_pack_opts o;
    opts(&o, "tree", "out_tree");
    o.shard_size = 4;
    o.prefix = "train";
    dv_pack_result r;
    char err[8192];
    int s = pack_capture(&o, &r, err, sizeof err);
    tap_ok(
        s == DV_OK && r.inputs == 9 && r.num_shards == 3 && r.images == 5 && r.skipped == 4 &&
            r.num_classes == 2 && r.shards_written == 3,
        "folder: 9 inputs, 3 shards, 5 images, 4 skipped, 2 classes (%lld, %lld, %lld, %lld, %d)",
        (long long)r.inputs, (long long)r.num_shards, (long long)r.images, (long long)r.skipped,
        r.num_classes);
    char want[1024];
    snprintf(want, sizeof want, "warning: %s/cat/bad.jpg: corrupt JPEG (", o.input);
    tap_ok(strstr(err, want) != NULL, "one warning line for the corrupt JPEG");
    tap_ok(count_lines(err, "; skipped") == 4 &&
               count_lines(err, "half.jpg: truncated JPEG (") == 1 &&
               count_lines(err, "empty.jpg: empty file; skipped") == 1 &&
               count_lines(err, "notes.txt: not a JPEG or PNG image; skipped") == 1,
           "exactly one warning line per skipped file");
    tap_ok(count_lines(err, "not in a class folder; ignored") == 1 &&
               count_lines(err, "x.jpg") == 0,
           "top-level file reported once, hidden folder ignored");
    if (s != DV_OK) {
        tap_diag("stderr: %s", err);
        return;
    }
    dv_h5img h;
    /* shard 0: ids 0 a.jpg, 1 b.png (raw, same size), 2 bad.jpg, 3 half.jpg skipped */
    s = open_shard(&o, 0, &h);
    int ok = s == DV_OK && h.layout == DV_H5IMG_RAW && h.count == 2 && h.height == 24 &&
             h.width == 32 && h.channels == 3 && h.num_classes == 2;
    int32_t lab[4];
    uint64_t ids[4];
    char *paths[4];
    ok = ok && dv_h5img_read_labels(&h, 0, 2, lab) == DV_OK &&
         dv_h5img_read_ids(&h, 0, 2, ids) == DV_OK && dv_h5img_read_paths(&h, 0, 2, paths) == DV_OK;
    ok = ok && lab[0] == 0 && lab[1] == 0 && ids[0] == 0 && ids[1] == 1 &&
         !strcmp(paths[0], "cat/a.jpg") && !strcmp(paths[1], "cat/b.png");
    if (ok) dv_strv_free(paths, 2, 0);
    tap_ok(ok, "shard 0: raw [2,24,32,3], ids 0 1, labels 0 0, paths cat/a.jpg cat/b.png");
    if (s == DV_OK) {
        char **names;
        int nn;
        int64_t ns = 0;
        uint64_t *sids = NULL;
        char **sp = NULL, **sr = NULL;
        ok = dv_h5img_read_class_names(&h, &names, &nn) == DV_OK && nn == 2 &&
             !strcmp(names[0], "cat") && !strcmp(names[1], "dog");
        if (nn) dv_strv_free(names, nn, 1);
        tap_ok(ok, "class names cat, dog");
        ok = dv_h5img_read_skipped(&h, &ns, &sids, &sp, &sr) == DV_OK && ns == 2 && sids[0] == 2 &&
             sids[1] == 3 && !strcmp(sp[0], "cat/bad.jpg") &&
             !strncmp(sr[0], "corrupt JPEG (", 14) && !strncmp(sr[1], "truncated JPEG (", 16);
        tap_ok(ok, "shard 0 lists skipped ids 2 (%s), 3 (%s)", ns > 0 ? sr[0] : "-",
               ns > 1 ? sr[1] : "-");
        free(sids);
        dv_strv_free(sp, ns, 1);
        dv_strv_free(sr, ns, 1);
        /* pixels equal a direct decode */
        char ap[600];
        snprintf(ap, sizeof ap, "%s/cat/a.jpg", o.input);
        size_t n;
        uint8_t *bytes = read_bytes(ap, &n);
        dv_decoder *dec;
        dv_decoder_create(&dec);
        dv_image img = {0};
        uint8_t *px = malloc(24 * 32 * 3);
        ok = dv_decode(dec, bytes, n, "a.jpg", NULL, &img, NULL, 0) == DV_OK &&
             dv_h5img_read_raw(&h, 0, 1, px) == DV_OK && memcmp(px, img.pixels, 24 * 32 * 3) == 0;
        tap_ok(ok, "stored pixels equal the decoded JPEG");
        free(px);
        free(bytes);
        dv_image_free(&img);
        dv_decoder_destroy(dec);
        dv_h5img_close(&h);
    }
    /* shard 1: 4 sub/c.jpg (cat), 5 d.png (gray -> RGB), 6 e.jpg; 7 empty.jpg skipped */
    s = open_shard(&o, 1, &h);
    ok = s == DV_OK && h.layout == DV_H5IMG_RAW && h.count == 3 &&
         dv_h5img_read_labels(&h, 0, 3, lab) == DV_OK &&
         dv_h5img_read_ids(&h, 0, 3, ids) == DV_OK && lab[0] == 0 && lab[1] == 1 && lab[2] == 1 &&
         ids[0] == 4 && ids[1] == 5 && ids[2] == 6;
    if (ok) {
        uint8_t px[24 * 32 * 3];
        ok = dv_h5img_read_raw(&h, 1, 1, px) == DV_OK && px[0] == px[1] && px[1] == px[2] &&
             px[3] == px[4];
    }
    tap_ok(ok, "shard 1: ids 4 5 6 with labels 0 1 1 (class order), gray PNG as R=G=B");
    if (s == DV_OK) dv_h5img_close(&h);
    /* shard 2: only notes.txt -> an empty shard that records the skip */
    s = open_shard(&o, 2, &h);
    ok = s == DV_OK && h.count == 0;
    if (ok) {
        int64_t ns;
        uint64_t *sids;
        char **sp, **sr;
        ok = dv_h5img_read_skipped(&h, &ns, &sids, &sp, &sr) == DV_OK && ns == 1 && sids[0] == 8 &&
             !strcmp(sp[0], "dog/notes.txt");
        if (ns) {
            free(sids);
            dv_strv_free(sp, ns, 1);
            dv_strv_free(sr, ns, 1);
        }
        dv_h5img_close(&h);
    }
    tap_ok(ok, "shard 2: no images, id 8 (dog/notes.txt) recorded as skipped");
    char mp[1024];
    dv_pack_manifest_path(&o, 0, mp, sizeof mp);
    size_t mn = 0;
    char *m = (char *)read_bytes(mp, &mn);
    ok = m != NULL;
    if (ok) {
        m = realloc(m, mn + 1);
        m[mn] = 0;
        ok = strstr(m, "\"format\": \"dinov2c-pack-manifest\"") &&
             strstr(m, "\"class_names\": [\"cat\", \"dog\"]") &&
             strstr(m, "\"counts\": {\"inputs\": 9, \"images\": 5, \"skipped\": 4") &&
             strstr(m, "{\"id\": 2, \"path\": \"cat/bad.jpg\", \"reason\": \"corrupt JPEG (") &&
             strstr(m, "{\"id\": 7, \"path\": \"dog/empty.jpg\", \"reason\": \"empty file\"}") &&
             strstr(m, "\"file\": \"train-00002.h5\"") && strstr(m, "\"complete\": true");
        if (!ok) tap_diag("manifest:\n%s", m);
    }
    tap_ok(ok, "manifest %s: classes, counts, skipped list with reasons, shards",
           strrchr(mp, '/') + 1);
    free(m);
}

/* ---- flat folder, mixed sizes, list ------------------------------------------------------- */

static void test_flat_mixed_list(void) {
    mkdirs("flat");
    put_png("flat/3.png", 10, 20, 3, 3);
    put_png("flat/1.png", 10, 20, 3, 1);
    put_jpeg("flat/2.jpg", 10, 20, 2, 0);
    dv_pack_opts o;
    opts(&o, "flat", "out_flat");
    dv_pack_result r;
    int s = dv_pack_run(&o, &r);
    dv_h5img h;
    int ok = s == DV_OK && r.inputs == 3 && r.images == 3 && r.num_classes == 0 &&
             open_shard(&o, 0, &h) == DV_OK;
    if (ok) {
        int32_t lab[3];
        char *p[3];
        ok = h.layout == DV_H5IMG_RAW && h.count == 3 && h.num_classes == 0 &&
             dv_h5img_read_labels(&h, 0, 3, lab) == DV_OK && lab[0] == -1 && lab[2] == -1 &&
             dv_h5img_read_paths(&h, 0, 3, p) == DV_OK && !strcmp(p[0], "1.png") &&
             !strcmp(p[1], "2.jpg") && !strcmp(p[2], "3.png");
        if (ok) dv_strv_free(p, 3, 0);
        dv_h5img_close(&h);
    }
    tap_ok(ok, "flat folder (auto): sorted names, labels -1, raw");

    /* --resize-short 8: 20x10 -> 16x8; with --center-crop 8 -> 8x8 */
    opts(&o, "flat", "out_resize");
    o.resize_short = 8;
    s = dv_pack_run(&o, &r);
    ok = s == DV_OK && open_shard(&o, 0, &h) == DV_OK;
    if (ok) {
        ok = h.layout == DV_H5IMG_RAW && h.height == 8 && h.width == 16 && h.count == 3;
        uint8_t got[8 * 16 * 3], want[8 * 16 * 3];
        uint8_t *src = image(10, 20, 3, 1); /* 1.png, lossless */
        ok = ok && dv_h5img_read_raw(&h, 0, 1, got) == DV_OK &&
             resample_(src, 10, 20, 3, want, 8, 16) == DV_OK &&
             !memcmp(got, want, sizeof got);
        free(src);
        dv_h5img_close(&h);
    }
    tap_ok(ok, "--resize-short 8: raw [3,8,16,3], pixels = bicubic of the source");
    opts(&o, "flat", "out_crop");
    o.resize_short = 8;
    o.center_crop = 8;
    o.channels = 1;
    s = dv_pack_run(&o, &r);
    ok = s == DV_OK && open_shard(&o, 0, &h) == DV_OK;
    if (ok) {
        ok = h.height == 8 && h.width == 8 && h.channels == 1;
        dv_h5img_close(&h);
    }
    tap_ok(ok, "--resize-short 8 --center-crop 8 --channels 1: raw [3,8,8,1]");

    /* mixed sizes -> encoded original bytes */
    mkdirs("mixed");
    put_png("mixed/x.png", 10, 20, 3, 1);
    put_jpeg("mixed/y.jpg", 16, 16, 2, 0);
    opts(&o, "mixed", "out_mixed");
    s = dv_pack_run(&o, &r);
    ok = s == DV_OK && open_shard(&o, 0, &h) == DV_OK;
    if (ok) {
        dv_h5img_blobs b;
        char yp[600];
        snprintf(yp, sizeof yp, "%s/y.jpg", o.input);
        size_t n;
        uint8_t *y = read_bytes(yp, &n);
        ok = h.layout == DV_H5IMG_ENCODED && h.count == 2 &&
             dv_h5img_read_encoded(&h, 1, 1, &b) == DV_OK && b.offsets[1] == n &&
             !memcmp(b.data, y, n);
        free(y);
        dv_h5img_blobs_free(&b);
        dv_h5img_close(&h);
    }
    tap_ok(ok, "mixed sizes: encoded layout holding the original file bytes");
    /* mixed + resize with different aspect: encoded as lossless PNG of the resized pixels */
    opts(&o, "mixed", "out_mixed_resized");
    o.resize_short = 8;
    s = dv_pack_run(&o, &r);
    ok = s == DV_OK && open_shard(&o, 0, &h) == DV_OK;
    if (ok) {
        dv_h5img_blobs b;
        dv_decoder *dec;
        dv_decoder_create(&dec);
        dv_image img = {0};
        ok = h.layout == DV_H5IMG_ENCODED && dv_h5img_read_encoded(&h, 0, 2, &b) == DV_OK &&
             dv_decode(dec, b.data, b.offsets[1], "0", NULL, &img, NULL, 0) == DV_OK &&
             img.height == 8 && img.width == 16 &&
             dv_decode(dec, b.data + b.offsets[1], b.offsets[2] - b.offsets[1], "1", NULL, &img,
                       NULL, 0) == DV_OK &&
             img.height == 8 && img.width == 8;
        dv_image_free(&img);
        dv_decoder_destroy(dec);
        dv_h5img_blobs_free(&b);
        dv_h5img_close(&h);
    }
    tap_ok(ok, "mixed aspect + --resize-short: encoded PNGs of 16x8 and 8x8");
    /* --encoded forces encoded even for one size */
    opts(&o, "flat", "out_forced");
    o.encoded = 1;
    s = dv_pack_run(&o, &r);
    ok = s == DV_OK && open_shard(&o, 0, &h) == DV_OK;
    if (ok) {
        ok = h.layout == DV_H5IMG_ENCODED && h.count == 3;
        dv_h5img_close(&h);
    }
    tap_ok(ok, "--encoded: encoded layout although sizes agree");

    /* text list: relative to the list's folder, absolute paths, comments, missing files */
    char abs_b[600];
    P(abs_b, sizeof abs_b, "tree/cat/b.png");
    char list[2048];
    snprintf(list, sizeof list,
             "# a comment\n"
             "tree/cat/a.jpg 3\n"
             "\n"
             "tree/dog/d.png\r\n"
             "%s\t1\n"
             "  missing.jpg 2\n",
             abs_b);
    write_bytes("list.txt", list, strlen(list));
    opts(&o, "list.txt", "out_list");
    char err[4096];
    s = pack_capture(&o, &r, err, sizeof err);
    ok = s == DV_OK && r.inputs == 4 && r.images == 3 && r.skipped == 1 && r.num_classes == 4 &&
         count_lines(err, "missing.jpg: cannot read (No such file or directory); skipped") == 1 &&
         open_shard(&o, 0, &h) == DV_OK;
    if (ok) {
        int32_t lab[3];
        uint64_t ids[3];
        char *p[3];
        ok = h.layout == DV_H5IMG_RAW && h.count == 3 &&
             dv_h5img_read_labels(&h, 0, 3, lab) == DV_OK &&
             dv_h5img_read_ids(&h, 0, 3, ids) == DV_OK &&
             dv_h5img_read_paths(&h, 0, 3, p) == DV_OK && lab[0] == 3 && lab[1] == -1 &&
             lab[2] == 1 && ids[0] == 0 && ids[2] == 2 && !strcmp(p[0], "tree/cat/a.jpg") &&
             !strcmp(p[2], abs_b);
        if (ok) dv_strv_free(p, 3, 0);
        dv_h5img_close(&h);
    }
    tap_ok(ok, "text list: 4 lines -> labels 3 -1 1, line order ids, missing file skipped");
}

/* ---- IDX ---------------------------------------------------------------------------------- */

static void idx_bytes(uint8_t *buf, size_t *n, int ndim, const uint32_t *dims, int fill_seed) {
    buf[0] = 0, buf[1] = 0, buf[2] = 8, buf[3] = (uint8_t)ndim;
    size_t o = 4, total = 1;
    for (int d = 0; d < ndim; d++) {
        buf[o++] = (uint8_t)(dims[d] >> 24);
        buf[o++] = (uint8_t)(dims[d] >> 16);
        buf[o++] = (uint8_t)(dims[d] >> 8);
        buf[o++] = (uint8_t)dims[d];
        total *= dims[d];
    }
    for (size_t i = 0; i < total; i++)
        buf[o++] = (uint8_t)(i * 7 + (size_t)fill_seed);
    *n = o;
}

static void write_gz(const char *rel, const void *data, size_t n) {
    char p[512];
    P(p, sizeof p, rel);
    gzFile f = gzopen(p, "wb");
    gzwrite(f, data, (unsigned)n);
    gzclose(f);
}

static int idx_read_quiet(const char *rel, int nd, dv_idx *x, char *err, size_t len) {
    char p[512];
    P(p, sizeof p, rel);
    fflush(stderr);
    FILE *tmp = tmpfile();
    int saved = dup(2);
    dup2(fileno(tmp), 2);
    int rc = dv_idx_read(p, nd, x);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    rewind(tmp);
    size_t n = fread(err, 1, len - 1, tmp);
    err[n] = 0;
    if (n && err[n - 1] == '\n') err[n - 1] = 0;
    fclose(tmp);
    return rc;
}

static void test_idx(void) {
    uint8_t im[4 + 12 + 5 * 4 * 3 + 8], lb[4 + 4 + 5 + 8];
    size_t imn, lbn;
    const uint32_t idims[3] = {5, 4, 3}, ldims[1] = {5};
    idx_bytes(im, &imn, 3, idims, 11);
    idx_bytes(lb, &lbn, 1, ldims, 0);
    for (int i = 0; i < 5; i++)
        lb[8 + i] = (uint8_t)(i * 2 % 7); /* 0 2 4 6 1 */
    write_gz("i.idx3.gz", im, imn);
    write_bytes("i.idx3", im, imn);
    write_bytes("l.idx1", lb, lbn);
    dv_idx a, b;
    char err[1024];
    int s1 = idx_read_quiet("i.idx3.gz", 3, &a, err, sizeof err);
    int s2 = idx_read_quiet("i.idx3", 3, &b, err, sizeof err);
    tap_ok(s1 == DV_OK && s2 == DV_OK && a.ndim == 3 && a.dims[0] == 5 && a.dims[1] == 4 &&
               a.dims[2] == 3 && a.size == 60 && b.size == 60 && !memcmp(a.data, b.data, 60) &&
               !memcmp(a.data, im + 16, 60),
           "IDX read back, gzip and plain identical");
    if (s1 == DV_OK) dv_idx_free(&a);
    if (s2 == DV_OK) dv_idx_free(&b);
    int s = idx_read_quiet("l.idx1", 3, &a, err, sizeof err);
    tap_ok(s == DV_ERR_FORMAT &&
               strstr(err, "has 1 dimensions (magic 0x00000801), expected 3 (magic 0x00000803)"),
           "labels where images are expected: %s", err);
    uint8_t bad[64];
    memcpy(bad, im, 64);
    bad[0] = 0x1f, bad[2] = 0x09;
    write_bytes("bad.idx", bad, 64);
    s = idx_read_quiet("bad.idx", 3, &a, err, sizeof err);
    tap_ok(s == DV_ERR_FORMAT && strstr(err, "bad.idx: not an IDX file (magic 0x1f000903)"),
           "bad magic: %s", err);
    bad[0] = 0;
    write_bytes("type.idx", bad, 64);
    s = idx_read_quiet("type.idx", 3, &a, err, sizeof err);
    tap_ok(s == DV_ERR_FORMAT && strstr(err, "element type 0x09 is not supported"),
           "signed bytes: %s", err);
    write_bytes("short.idx", im, imn - 7);
    s = idx_read_quiet("short.idx", 3, &a, err, sizeof err);
    tap_ok(
        s == DV_ERR_FORMAT &&
            strstr(err, "short.idx: truncated: expected 60 data bytes after the header, found 53"),
        "short file: %s", err);
    write_gz("short.idx.gz", im, imn - 7);
    s = idx_read_quiet("short.idx.gz", 3, &a, err, sizeof err);
    tap_ok(s == DV_ERR_FORMAT && strstr(err, "truncated"), "short gzip file: %s", err);
    uint8_t longer[128];
    memcpy(longer, im, imn);
    longer[imn] = 1;
    write_bytes("long.idx", longer, imn + 1);
    s = idx_read_quiet("long.idx", 3, &a, err, sizeof err);
    tap_ok(s == DV_ERR_FORMAT && strstr(err, "trailing data"), "longer file: %s", err);
    write_bytes("tiny.idx", im, 2);
    s = idx_read_quiet("tiny.idx", 0, &a, err, sizeof err);
    tap_ok(s == DV_ERR_FORMAT && strstr(err, "not an IDX file"), "2-byte file: %s", err);
    s = idx_read_quiet("nonexistent.idx", 0, &a, err, sizeof err);
    tap_ok(s == DV_ERR_IO && strstr(err, "cannot open"), "missing file: %s", err);

    /* pack: IDX -> raw [5,4,3,3] with labels; --channels 1 keeps the bytes */
    char ip[512], lp[512];
    P(ip, sizeof ip, "i.idx3.gz");
    P(lp, sizeof lp, "l.idx1");
    dv_pack_opts o;
    opts(&o, NULL, "out_idx");
    o.idx_images = ip;
    o.idx_labels = lp;
    o.shard_size = 3;
    dv_pack_result r;
    s = dv_pack_run(&o, &r);
    dv_h5img h;
    int ok = s == DV_OK && r.inputs == 5 && r.num_shards == 2 && r.num_classes == 7 &&
             open_shard(&o, 1, &h) == DV_OK;
    if (ok) {
        uint8_t px[2 * 4 * 3 * 3];
        int32_t l[2];
        ok = h.layout == DV_H5IMG_RAW && h.count == 2 && h.height == 4 && h.width == 3 &&
             h.channels == 3 && !h.has_paths && dv_h5img_read_raw(&h, 0, 2, px) == DV_OK &&
             dv_h5img_read_labels(&h, 0, 2, l) == DV_OK && l[0] == 6 && l[1] == 1 &&
             px[0] == im[16 + 36] && px[1] == im[16 + 36] && px[2] == im[16 + 36] &&
             px[3 * 12 + 3] == im[16 + 48 + 1];
        dv_h5img_close(&h);
    }
    tap_ok(ok, "IDX pack: shard 1 = images 3, 4 as raw [2,4,3,3], labels 6 1");
    opts(&o, NULL, "out_idx1");
    o.idx_images = ip;
    o.channels = 1;
    s = dv_pack_run(&o, &r);
    ok = s == DV_OK && open_shard(&o, 0, &h) == DV_OK;
    if (ok) {
        uint8_t px[60];
        int32_t l[5];
        ok = h.channels == 1 && h.count == 5 && dv_h5img_read_raw(&h, 0, 5, px) == DV_OK &&
             !memcmp(px, im + 16, 60) && dv_h5img_read_labels(&h, 0, 5, l) == DV_OK && l[4] == -1;
        dv_h5img_close(&h);
    }
    tap_ok(ok, "IDX pack without labels, --channels 1: bytes as stored, labels -1");
    /* label count mismatch */
    const uint32_t l4[1] = {4};
    idx_bytes(lb, &lbn, 1, l4, 0);
    write_bytes("l4.idx1", lb, lbn);
    P(lp, sizeof lp, "l4.idx1");
    opts(&o, NULL, "out_idx_bad");
    o.idx_images = ip;
    o.idx_labels = lp;
    s = pack_capture(&o, &r, err, sizeof err);
    tap_ok(s == DV_ERR_FORMAT && strstr(err, "has 4 labels but"),
           "label/image count mismatch is an error");
}

/* ---- task split and rerun ----------------------------------------------------------------- */

static int same_file(const char *a, const char *b) {
    size_t na, nb;
    uint8_t *x = read_bytes(a, &na), *y = read_bytes(b, &nb);
    int same = x && y && na == nb && !memcmp(x, y, na);
    free(x);
    free(y);
    return same;
}

static void test_tasks_rerun(void) {
    dv_pack_opts o1, o2;
    dv_pack_result r;
    char err[8192];
    opts(&o1, "tree", "out_t1");
    o1.shard_size = 2;
    int s = pack_capture(&o1, &r, err, sizeof err);
    int ok = s == DV_OK && r.num_shards == 5;
    int64_t written = 0;
    for (int t = 0; t < 2 && ok; t++) {
        opts(&o2, "tree", "out_t2");
        o2.shard_size = 2;
        o2.task_id = t;
        o2.num_tasks = 2;
        s = pack_capture(&o2, &r, err, sizeof err);
        ok = s == DV_OK && r.shard_begin == (t ? 2 : 0) && r.shard_end == (t ? 5 : 2);
        written += r.shards_written;
    }
    for (int k = 0; k < 5 && ok; k++) {
        char a[1024], b[1024];
        dv_pack_shard_path(&o1, k, a, sizeof a);
        dv_pack_shard_path(&o2, k, b, sizeof b);
        ok = same_file(a, b);
    }
    tap_ok(ok && written == 5, "2 tasks write the same 5 shards as 1 task, byte for byte");
    ok = 1;
    for (int t = 0; t < 3 && ok; t++) {
        opts(&o2, "tree", "out_t3");
        o2.shard_size = 2;
        o2.task_id = t;
        o2.num_tasks = 3;
        ok = pack_capture(&o2, &r, err, sizeof err) == DV_OK;
    }
    for (int k = 0; k < 5 && ok; k++) {
        char a[1024], b[1024];
        dv_pack_shard_path(&o1, k, a, sizeof a);
        dv_pack_shard_path(&o2, k, b, sizeof b);
        ok = same_file(a, b);
    }
    char m2[1024];
    dv_pack_manifest_path(&o2, 2, m2, sizeof m2);
    tap_ok(ok && access(m2, F_OK) == 0, "3 tasks: same shards; one manifest per task");

    /* rerun: complete shards are kept untouched, a missing one (with a leftover .tmp) and a
     * damaged one are written again */
    struct stat before[5], after[5];
    char paths[5][1024];
    for (int k = 0; k < 5; k++) {
        dv_pack_shard_path(&o1, k, paths[k], sizeof paths[k]);
        stat(paths[k], &before[k]);
    }
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", paths[3]);
    rename(paths[3], tmp); /* as if killed before the rename */
    FILE *f = fopen(tmp, "r+b");
    fseek(f, 100, SEEK_SET);
    fputs("damage", f);
    fclose(f);
    truncate(paths[1], 500); /* a damaged final file */
    s = pack_capture(&o1, &r, err, sizeof err);
    ok = s == DV_OK && r.shards_kept == 3 && r.shards_written == 2 && r.images == 5 &&
         r.skipped == 4 && access(tmp, F_OK) != 0;
    for (int k = 0; k < 5; k++)
        stat(paths[k], &after[k]);
    for (int k = 0; k < 5 && ok; k++) {
        if (k == 1 || k == 3) continue;
        ok = before[k].st_ino == after[k].st_ino &&
             before[k].st_mtim.tv_sec == after[k].st_mtim.tv_sec &&
             before[k].st_mtim.tv_nsec == after[k].st_mtim.tv_nsec;
    }
    tap_ok(ok,
           "rerun keeps shards 0 2 4 (same inode and mtime), rewrites 1 and 3, removes the .tmp");
    if (count_lines(err, "rewriting it") != 1 || count_lines(err, "; skipped") != 3)
        tap_diag("stderr: %s", err);
    tap_ok(count_lines(err, "rewriting it") == 1 && count_lines(err, "; skipped") == 3,
           "rerun warns once about the damaged shard; only the rewritten shards warn about their "
           "bad files");
    ok = 1;
    for (int k = 0; k < 5 && ok; k++) {
        char b[1024];
        dv_pack_shard_path(&o2, k, b, sizeof b);
        ok = same_file(paths[k], b);
    }
    tap_ok(ok, "rewritten shards are identical to the first run's");
    char mp[1024];
    dv_pack_manifest_path(&o1, 0, mp, sizeof mp);
    size_t mn = 0;
    char *m = (char *)read_bytes(mp, &mn);
    ok = m != NULL;
    if (ok) {
        m = realloc(m, mn + 1);
        m[mn] = 0;
        ok = strstr(m, "\"shards_written\": 2, \"shards_kept\": 3") &&
             strstr(m, "\"status\": \"kept\"") &&
             strstr(m, "{\"id\": 2, \"path\": \"cat/bad.jpg\"") &&
             strstr(m, "{\"id\": 8, \"path\": \"dog/notes.txt\"");
    }
    tap_ok(ok, "rerun manifest lists kept shards and all skipped files");
    free(m);
    /* other options -> the shards no longer match and are rewritten */
    o1.channels = 1;
    s = pack_capture(&o1, &r, err, sizeof err);
    tap_ok(s == DV_OK && r.shards_written == 5 && count_lines(err, "does not match this pack") == 5,
           "changing --channels rewrites every shard");
}

/* ---- command line, errors ----------------------------------------------------------------- */

static int parse(int argc, const char **argv, dv_pack_opts *o, int *help, char *err, size_t len) {
    fflush(stderr);
    FILE *tmp = tmpfile();
    int saved = dup(2);
    dup2(fileno(tmp), 2);
    int rc = dv_pack_parse_args(argc, (char **)argv, o, help);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    rewind(tmp);
    size_t n = fread(err, 1, len - 1, tmp);
    err[n] = 0;
    if (n && err[n - 1] == '\n') err[n - 1] = 0;
    fclose(tmp);
    return rc;
}

static void test_cli(void) {
    dv_pack_opts o;
    int help;
    char err[1024];
    const char *a1[] = {"dinov2-pack",
                        "--input",
                        "in",
                        "--output=out",
                        "--shard-size",
                        "7",
                        "--channels",
                        "1",
                        "--resize-short=256",
                        "--center-crop",
                        "224",
                        "--encoded",
                        "--layout",
                        "flat",
                        "--task-id",
                        "2",
                        "--num-tasks",
                        "5",
                        "--prefix",
                        "val"};
    int s = parse(20, a1, &o, &help, err, sizeof err);
    tap_ok(s == DV_OK && !help && !strcmp(o.input, "in") && !strcmp(o.output, "out") &&
               o.shard_size == 7 && o.channels == 1 && o.resize_short == 256 &&
               o.center_crop == 224 && o.encoded && o.layout == DV_PACK_FLAT && o.task_id == 2 &&
               o.num_tasks == 5 && !strcmp(o.prefix, "val"),
           "options parse (--x v and --x=v)");
    const char *a2[] = {"dinov2-pack", "--output", "o", "--help"};
    s = parse(4, a2, &o, &help, err, sizeof err);
    tap_ok(s == DV_OK && help, "--help");
    const char *a3[] = {"dinov2-pack", "--channels", "2"};
    s = parse(3, a3, &o, &help, err, sizeof err);
    tap_ok(s == DV_ERR_ARG && !strcmp(err, "error: --channels: must be 3 or 1, not 2"), "%s", err);
    const char *a4[] = {"dinov2-pack", "--bogus"};
    s = parse(2, a4, &o, &help, err, sizeof err);
    tap_ok(s == DV_ERR_ARG && strstr(err, "unknown option '--bogus'"), "%s", err);
    const char *a5[] = {"dinov2-pack", "--shard-size", "0"};
    s = parse(3, a5, &o, &help, err, sizeof err);
    tap_ok(s == DV_ERR_ARG && strstr(err, "--shard-size: '0' is not an integer in [1,"), "%s", err);
    setenv("SLURM_ARRAY_TASK_ID", "5", 1);
    setenv("SLURM_ARRAY_TASK_MIN", "4", 1);
    setenv("SLURM_ARRAY_TASK_COUNT", "3", 1);
    const char *a6[] = {"dinov2-pack", "--input", "i", "--output", "o"};
    s = parse(5, a6, &o, &help, err, sizeof err);
    tap_ok(s == DV_OK && o.task_id == 1 && o.num_tasks == 3,
           "Slurm array defaults: task %d of %d (1 of 3)", o.task_id, o.num_tasks);
    setenv("SLURM_ARRAY_TASK_ID", "9", 1);
    s = parse(5, a6, &o, &help, err, sizeof err);
    tap_ok(s == DV_ERR_ARG && strstr(err, "task 5 is outside 0..2"), "%s", err);
    unsetenv("SLURM_ARRAY_TASK_ID");
    unsetenv("SLURM_ARRAY_TASK_MIN");
    unsetenv("SLURM_ARRAY_TASK_COUNT");

    dv_pack_result r;
    opts(&o, "no/such/dir", "out_err");
    s = pack_capture(&o, &r, err, sizeof err);
    tap_ok(s == DV_ERR_IO && strstr(err, "no/such/dir: No such file or directory") &&
               count_lines(err, "error:") == 1 && count_lines(err, "") == 1,
           "missing input: one line");
    write_bytes("a_file", "x", 1);
    opts(&o, "flat", "a_file/out");
    s = pack_capture(&o, &r, err, sizeof err);
    tap_ok(s == DV_ERR_IO && count_lines(err, "error: --output") == 1 && strstr(err, "a_file"),
           "output under a regular file: %s", err);
    opts(&o, "flat", "out_x");
    o.center_crop = 9;
    s = pack_capture(&o, &r, err, sizeof err);
    tap_ok(s == DV_ERR_ARG && strstr(err, "--center-crop C needs --resize-short S"),
           "crop without resize");
    opts(&o, "list.txt", "out_x");
    o.layout = DV_PACK_FOLDER;
    s = pack_capture(&o, &r, err, sizeof err);
    tap_ok(s == DV_ERR_ARG && strstr(err, "not a folder"), "a file with --layout folder: %s", err);
}

/* ---- Fashion-MNIST ------------------------------------------------------------------------ */

static void test_fashion(void) {
    const char *dir = "/usr/share/datasets/fashion-mnist";
    char ip[512], lp[512];
    snprintf(ip, sizeof ip, "%s/t10k-images-idx3-ubyte.gz", dir);
    snprintf(lp, sizeof lp, "%s/t10k-labels-idx1-ubyte.gz", dir);
    if (access(ip, R_OK) != 0 || access(lp, R_OK) != 0) {
        tap_skip(3, "Fashion-MNIST not installed (Debian package dataset-fashion-mnist)");
        return;
    }
    dv_idx im, lb;
    int ok = dv_idx_read(ip, 3, &im) == DV_OK && dv_idx_read(lp, 1, &lb) == DV_OK;
    tap_ok(ok && im.dims[0] == 10000 && im.dims[1] == 28 && im.dims[2] == 28 && lb.dims[0] == 10000,
           "t10k IDX: [10000,28,28] images and 10000 labels");
    if (!ok) return;
    dv_pack_opts o;
    dv_pack_result r;
    for (int ch = 3; ch >= 1; ch -= 2) {
        opts(&o, NULL, ch == 3 ? "out_fm3" : "out_fm1");
        o.idx_images = ip;
        o.idx_labels = lp;
        o.channels = ch;
        int s = dv_pack_run(&o, &r);
        dv_h5img h;
        ok = s == DV_OK && r.num_shards == 1 && r.images == 10000 && r.skipped == 0 &&
             open_shard(&o, 0, &h) == DV_OK;
        if (ok) {
            int32_t l[2];
            uint8_t px[2 * 28 * 28 * 3];
            ok = h.layout == DV_H5IMG_RAW && h.count == 10000 && h.height == 28 && h.width == 28 &&
                 h.channels == ch && h.num_classes == 10 &&
                 dv_h5img_read_labels(&h, 9998, 2, l) == DV_OK &&
                 dv_h5img_read_raw(&h, 9998, 2, px) == DV_OK && l[1] == lb.data[9999] &&
                 px[(28 * 28 + 28 * 14 + 14) * ch] == im.data[9999 * 784 + 28 * 14 + 14];
            int32_t l0;
            ok = ok && dv_h5img_read_labels(&h, 0, 1, &l0) == DV_OK && l0 == lb.data[0];
            dv_h5img_close(&h);
        }
        tap_ok(ok,
               "Fashion-MNIST t10k -> 1 shard [10000,28,28,%d], labels and pixels as in the IDX",
               ch);
    }
    dv_idx_free(&im);
    dv_idx_free(&lb);
}

int main(void) {
    tap_no_plan();
    unsetenv("SLURM_ARRAY_TASK_ID");
    unsetenv("SLURM_ARRAY_TASK_COUNT");
    unsetenv("SLURM_ARRAY_TASK_MIN");
    const char *tmpd = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(g_dir, sizeof g_dir, "%s/test_pack.XXXXXX", tmpd);
    if (!mkdtemp(g_dir)) {
        tap_ok(0, "mkdtemp %s", g_dir);
        return tap_exit();
    }
    dv_h5_quiet();
    test_tree();
    test_flat_mixed_list();
    test_idx();
    test_tasks_rerun();
    test_cli();
    test_fashion();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) tap_diag("could not remove %s", g_dir);
    return tap_exit();
}
