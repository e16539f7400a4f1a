/* loader: shard resolution (directory, glob, list file, single shard, errors); the sampler
 * (every image once per epoch, the documented permutation, epochs differ, tail dropped); batch
 * shapes and crop-major rows (each crop equals dv_augment_draw + render of that image keyed by
 * its stored id); iBOT masks (invariants, equal to the official per-rank collate on one rank);
 * determinism bit for bit; independence from num_workers and prefetch; seek / position resume;
 * PNG-encoded shards identical to raw ones; JPEG shards with DCT scaling; too small a dataset,
 * a shard removed after open and a shard without /labels; options from a config.
 *
 * Run plainly it tests one rank. Under mpirun (tests/mpi_loader.sh runs 2 and then 3 ranks) it
 * runs only the MPI part: for every world size w = 1 .. ranks (sub-communicators) the same
 * global batch of 6 images is split over w ranks, and rank 0 checks that the ids, the crops and
 * the masks of every global position are identical for every w; plus the small-dataset error on
 * every rank. Files live in a mkdtemp folder. */
#include <hdf5.h>
#include <math.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <turbojpeg.h>
#include <unistd.h>

#include "augment.h"
#include "config.h"
#include "ctx.h"
#include "decode.h"
#include "err.h"
#include "h5images.h"
#include "h5util.h"
#include "loader.h"
#include "masking.h"
#include "rng.h"
#include "tap.h"

static char g_dir[256];

static void path_in(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "%s/%s", g_dir, name);
}

/* ---- the synthetic dataset ------------------------------------------------------------------ */

/* 21 images over 3 raw shards: a.h5 pos 0..6 (20x24 RGB), b.h5 pos 7..11 (18x18 RGB),
 * c.h5 pos 12..20 (22x16 gray). Stored ids are not positions. */
enum { NPOS = 21 };
static const int SH_BEGIN[4] = {0, 7, 12, 21};
static const int SH_H[3] = {20, 18, 22}, SH_W[3] = {24, 18, 16}, SH_C[3] = {3, 3, 1};
static const char *SH_NAME[3] = {"a.h5", "b.h5", "c.h5"};

static uint64_t id_of(int pos) { return 1000 + 3 * (uint64_t)pos; }
static int32_t label_of(int pos) { return pos % 10; }
static int shard_of_pos(int pos) { return pos < 7 ? 0 : pos < 12 ? 1 : 2; }
static int pos_of_id(uint64_t id) { return (int)((id - 1000) / 3); }

static void fill_pixels(int pos, uint8_t *buf) {
    int s = shard_of_pos(pos), h = SH_H[s], w = SH_W[s], c = SH_C[s];
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int k = 0; k < c; k++)
                buf[(y * w + x) * c + k] =
                    (uint8_t)(pos * 37 + y * 11 + x * 5 + k * 71 + ((x * y) % 13) * 9);
}

/* layout: raw, PNG-encoded, or shards a/b only when `only2` */
static int make_dataset(const char *sub, int encoded, int only2) {
    char dir[512];
    path_in(dir, sizeof dir, sub);
    if (mkdir(dir, 0755) != 0) return 0;
    for (int s = 0; s < (only2 ? 2 : 3); s++) {
        char p[600];
        snprintf(p, sizeof p, "%s/%s", dir, SH_NAME[s]);
        dv_h5img_spec sp = {.layout = encoded ? DV_H5IMG_ENCODED : DV_H5IMG_RAW,
                            .height = SH_H[s], .width = SH_W[s], .channels = SH_C[s],
                            .num_classes = 10};
        dv_h5img_writer *w;
        if (dv_h5img_create(p, &sp, &w) != DV_OK) return 0;
        uint8_t buf[64 * 64 * 3];
        for (int pos = SH_BEGIN[s]; pos < SH_BEGIN[s + 1]; pos++) {
            fill_pixels(pos, buf);
            int st;
            if (!encoded) {
                st = dv_h5img_append_raw(w, buf, label_of(pos), id_of(pos), NULL);
            } else {
                dv_image im = {.height = SH_H[s], .width = SH_W[s], .channels = SH_C[s],
                               .pixels = buf};
                unsigned char *png = NULL;
                size_t n = 0;
                st = dv_encode_png(&im, &png, &n);
                if (st == DV_OK)
                    st = dv_h5img_append_encoded(w, png, n, label_of(pos), id_of(pos), NULL);
                free(png);
            }
            if (st != DV_OK) {
                dv_h5img_discard(w);
                return 0;
            }
        }
        if (dv_h5img_commit(w) != DV_OK) return 0;
    }
    return 1;
}

/* Encoded shard of JPEGs (64x80 and 50x40) and PNGs of several sizes. */
static int make_mixed(const char *sub) {
    char dir[512], p[600];
    path_in(dir, sizeof dir, sub);
    if (mkdir(dir, 0755) != 0) return 0;
    snprintf(p, sizeof p, "%s/m.h5", dir);
    dv_h5img_spec sp = {.layout = DV_H5IMG_ENCODED};
    dv_h5img_writer *w;
    if (dv_h5img_create(p, &sp, &w) != DV_OK) return 0;
    tjhandle tj = tjInitCompress();
    int ok = tj != NULL;
    for (int i = 0; ok && i < 8; i++) {
        int h = 30 + 7 * i, wd = 80 - 5 * i;
        uint8_t *px = malloc((size_t)h * wd * 3);
        for (int k = 0; k < h * wd * 3; k++) px[k] = (uint8_t)(k * 7 + i * 31 + (k / 97) * 3);
        unsigned char *out = NULL;
        size_t n = 0;
        unsigned long jn = 0;
        if (i % 2 == 0) {
            ok = tjCompress2(tj, px, wd, 0, h, TJPF_RGB, &out, &jn, TJSAMP_420, 90, 0) == 0;
            n = jn;
            if (ok) ok = dv_h5img_append_encoded(w, out, n, i, 500 + i, NULL) == DV_OK;
            tjFree(out);
        } else {
            dv_image im = {.height = h, .width = wd, .channels = 3, .pixels = px};
            ok = dv_encode_png(&im, &out, &n) == DV_OK &&
                 dv_h5img_append_encoded(w, out, n, i, 500 + i, NULL) == DV_OK;
            free(out);
        }
        free(px);
    }
    if (tj) tjDestroy(tj);
    if (!ok) {
        dv_h5img_discard(w);
        return 0;
    }
    return dv_h5img_commit(w) == DV_OK;
}

static int delete_labels(const char *path) {
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    if (f < 0) return 0;
    int ok = H5Ldelete(f, "labels", H5P_DEFAULT) >= 0;
    return H5Fclose(f) >= 0 && ok;
}

static void rm_rf(const char *p) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", p);
    if (system(cmd) != 0) tap_diag("could not remove %s", p);
}

/* stderr of fn(arg) into buf (one line kept tidy) */
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
    for (size_t i = 0; i < n; i++)
        if (buf[i] == '\n') buf[i] = ' ';
    fclose(tmp);
    return rc;
}

/* ---- helpers --------------------------------------------------------------------------------- */

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 1099511628211ull;
    }
    return h;
}

static uint64_t batch_digest(const dv_batch *b) {
    uint64_t h = 1469598103934665603ull;
    h = fnv(h, b->global_crops, (size_t)(2 * b->B * 3 * b->G * b->G) * sizeof(float));
    if (b->L) h = fnv(h, b->local_crops, (size_t)(b->L * b->B * 3 * b->l * b->l) * sizeof(float));
    h = fnv(h, b->masks, (size_t)(2 * b->B * b->N));
    h = fnv(h, b->mask_indices, (size_t)b->n_masked * sizeof(int64_t));
    h = fnv(h, b->mask_weights, (size_t)b->n_masked * sizeof(float));
    h = fnv(h, b->ids, (size_t)b->B * sizeof(uint64_t));
    h = fnv(h, b->labels, (size_t)b->B * sizeof(int32_t));
    h = fnv(h, &b->n_masked, sizeof b->n_masked);
    h = fnv(h, &b->upperbound, sizeof b->upperbound);
    h = fnv(h, &b->epoch, sizeof b->epoch);
    return h;
}

/* digest of image i's crops (2 global + L local rows) and of its two mask rows */
static uint64_t image_crop_digest(const dv_batch *b, int64_t i) {
    uint64_t h = 1469598103934665603ull;
    size_t gsz = (size_t)(3 * b->G * b->G), lsz = (size_t)(3 * b->l * b->l);
    for (int64_t c = 0; c < 2; c++)
        h = fnv(h, b->global_crops + (size_t)(c * b->B + i) * gsz, gsz * sizeof(float));
    for (int64_t j = 0; j < b->L; j++)
        h = fnv(h, b->local_crops + (size_t)(j * b->B + i) * lsz, lsz * sizeof(float));
    return h;
}
static uint64_t image_mask_digest(const dv_batch *b, int64_t i) {
    uint64_t h = 1469598103934665603ull;
    for (int64_t c = 0; c < 2; c++)
        h = fnv(h, b->masks + (size_t)(c * b->B + i) * b->N, (size_t)b->N);
    return h;
}

static void base_opts(dv_loader_opts *o, const char *train, int64_t B) {
    memset(o, 0, sizeof *o);
    o->train = train;
    o->batch_per_rank = B;
    o->seed = 7;
    dv_augment_params_default(&o->aug);
    o->aug.global_size = 16;
    o->aug.local_size = 8;
    o->aug.local_number = 2;
    o->patch_size = 4;
    o->mask_ratio_min = 0.1;
    o->mask_ratio_max = 0.5;
    o->mask_probability = 0.5;
    o->num_workers = 0;
    o->prefetch = 2;
}

/* digests of the first n batches; 0 on error */
static int run_digests(const dv_loader_opts *o, int n, uint64_t *out) {
    dv_loader *l;
    if (dv_loader_open(&l, o, MPI_COMM_SELF) != DV_OK) return 0;
    int ok = 1;
    for (int t = 0; t < n && ok; t++) {
        dv_batch *b;
        ok = dv_loader_next(l, &b) == DV_OK;
        if (ok) out[t] = batch_digest(b);
    }
    dv_loader_close(l);
    return ok;
}

/* ---- single-rank tests ---------------------------------------------------------------------- */

static void test_resolve(void) {
    char raw[512], spec[600], list[600];
    path_in(raw, sizeof raw, "raw");
    char **p = NULL;
    int n = 0;
    int ok = dv_shards_resolve(raw, &p, &n) == DV_OK && n == 3;
    for (int i = 0; ok && i < 3; i++) {
        char want[600];
        snprintf(want, sizeof want, "%s/%s", raw, SH_NAME[i]);
        ok = strcmp(p[i], want) == 0;
    }
    tap_ok(ok, "resolve: a directory gives its *.h5 files sorted");
    dv_shards_free(p, n);

    snprintf(spec, sizeof spec, "%s/[cab].h5", raw);
    ok = dv_shards_resolve(spec, &p, &n) == DV_OK && n == 3 && strstr(p[0], "/a.h5") &&
         strstr(p[2], "/c.h5");
    tap_ok(ok, "resolve: a glob gives the matches sorted");
    dv_shards_free(p, n);

    /* list with comments, blanks, a relative and an absolute path, out of order */
    path_in(list, sizeof list, "shards.txt");
    FILE *f = fopen(list, "w");
    fprintf(f, "# training shards\n\n  raw/c.h5  \nraw/a.h5\n%s/b.h5\n", raw);
    fclose(f);
    ok = dv_shards_resolve(list, &p, &n) == DV_OK && n == 3;
    for (int i = 0; ok && i < 3; i++) {
        char want[600];
        snprintf(want, sizeof want, "%s/%s", raw, SH_NAME[i]);
        ok = strcmp(p[i], want) == 0;
    }
    tap_ok(ok, "resolve: a list file (comments, blanks, relative paths) gives sorted paths");
    dv_shards_free(p, n);

    snprintf(spec, sizeof spec, "%s/b.h5", raw);
    ok = dv_shards_resolve(spec, &p, &n) == DV_OK && n == 1 && strcmp(p[0], spec) == 0;
    tap_ok(ok, "resolve: one shard file gives itself");
    dv_shards_free(p, n);

    char err[1024], empty[600], dupl[600];
    path_in(spec, sizeof spec, "nonexistent");
    fflush(stderr);
    FILE *tmp = tmpfile();
    int saved = dup(2);
    dup2(fileno(tmp), 2);
    int s1 = dv_shards_resolve(spec, &p, &n);
    path_in(empty, sizeof empty, "emptydir");
    mkdir(empty, 0755);
    int s2 = dv_shards_resolve(empty, &p, &n);
    snprintf(dupl, sizeof dupl, "%s/dup.txt", g_dir);
    f = fopen(dupl, "w");
    fprintf(f, "raw/a.h5\nraw/a.h5\n");
    fclose(f);
    int s3 = dv_shards_resolve(dupl, &p, &n);
    char gl[600];
    snprintf(gl, sizeof gl, "%s/*.none", raw);
    int s4 = dv_shards_resolve(gl, &p, &n);
    int s5 = dv_shards_resolve("", &p, &n);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    rewind(tmp);
    size_t m = fread(err, 1, sizeof err - 1, tmp);
    err[m] = 0;
    fclose(tmp);
    int lines = 0;
    for (size_t i = 0; i < m; i++) lines += err[i] == '\n';
    tap_ok(s1 != DV_OK && s2 != DV_OK && s3 != DV_OK && s4 != DV_OK && s5 != DV_OK && lines == 5 &&
               strstr(err, "nonexistent") && strstr(err, "no *.h5 shards") &&
               strstr(err, "twice") && strstr(err, "matches no files") &&
               strstr(err, "data.train is empty"),
           "resolve: missing path, empty directory, duplicate, empty glob, empty spec: one line "
           "each");
    if (lines != 5) tap_diag("stderr: %s", err);
}

static int shapes_and_rows(const char *raw) {
    dv_loader_opts o;
    base_opts(&o, raw, 6);
    dv_loader *l;
    int ok = dv_loader_open(&l, &o, MPI_COMM_SELF) == DV_OK;
    tap_ok(ok, "open a 3-shard raw dataset (RGB and gray, different sizes)");
    if (!ok) return 0;
    tap_ok(dv_loader_num_images(l) == NPOS && dv_loader_batches_per_epoch(l) == 3,
           "21 images, 3 batches of 6 per epoch (tail of 3 dropped)");
    int64_t e = -1, k = -1;
    dv_loader_position(l, &e, &k);
    tap_ok(e == 0 && k == 0, "position at open is (0, 0)");
    dv_augment_scratch *as;
    dv_augment_scratch_create(&as);
    dv_mask_gen g;
    dv_mask_gen_init(&g, 4, 4, dv_mask_max_num_patches(16, 4));
    dv_mask_batch mb;
    dv_mask_batch_alloc(&mb, 12, 16);
    int shape_ok = 1, rows_ok = 1, mask_ok = 1, collate_ok = 1, label_ok = 1, epoch_ok = 1;
    float *want = malloc(3 * 16 * 16 * sizeof(float));
    uint8_t px[64 * 64 * 3];
    for (int t = 0; t < 4; t++) {
        dv_batch *b;
        if (dv_loader_next(l, &b) != DV_OK) {
            shape_ok = 0;
            break;
        }
        shape_ok &= b->B == 6 && b->L == 2 && b->G == 16 && b->l == 8 && b->N == 16;
        epoch_ok &= b->epoch == t / 3;
        /* every crop row = augment of that image keyed by (seed, epoch, stored id) */
        for (int i = 0; i < 6; i++) {
            int pos = pos_of_id(b->ids[i]), s = shard_of_pos(pos);
            label_ok &= b->labels[i] == label_of(pos) && b->ids[i] == id_of(pos);
            fill_pixels(pos, px);
            for (int c = 0; c < 4; c++) {
                dv_crop_record r;
                dv_augment_draw(&o.aug, c, SH_H[s], SH_W[s], o.seed, (uint64_t)b->epoch,
                                b->ids[i], &r);
                dv_augment_render(&r, px, SH_H[s], SH_W[s], SH_C[s], want, as);
                const float *got = c < 2 ? b->global_crops + (size_t)(c * 6 + i) * 3 * 16 * 16
                                         : b->local_crops + (size_t)((c - 2) * 6 + i) * 3 * 8 * 8;
                size_t n = c < 2 ? 3 * 16 * 16 : 3 * 8 * 8;
                rows_ok &= memcmp(got, want, n * sizeof(float)) == 0;
            }
        }
        /* mask invariants */
        int64_t cnt = 0, prev = -1;
        for (int64_t j = 0; j < 12 * 16; j++) cnt += b->masks[j] != 0;
        mask_ok &= cnt == b->n_masked && b->n_masked <= b->upperbound;
        for (int64_t j = 0; j < b->n_masked; j++) {
            int64_t x = b->mask_indices[j];
            mask_ok &= x > prev && x < 12 * 16 && b->masks[x] != 0;
            int64_t crop = x / 16, cc = 0;
            for (int q = 0; q < 16; q++) cc += b->masks[crop * 16 + q] != 0;
            mask_ok &= b->mask_weights[j] == 1.0f / (float)cc;
            prev = x;
        }
        /* one rank: exactly the official per-rank collate keyed (seed, t, 0) */
        dv_mask_collate(&g, 0.1, 0.5, 0.5, o.seed, (uint64_t)t, 0, &mb);
        collate_ok &= memcmp(mb.masks, b->masks, 12 * 16) == 0 &&
                      mb.n_masked_patches == b->n_masked && mb.upperbound == b->upperbound &&
                      mb.n_masked_crops == 6;
    }
    free(want);
    dv_mask_batch_free(&mb);
    dv_augment_scratch_free(as);
    tap_ok(shape_ok && epoch_ok, "batch shapes B 6, L 2, G 16, l 8, N 16; epoch field");
    tap_ok(rows_ok, "global crop c of image i at row c*B+i, local j at j*B+i: equal to augment "
                    "draw+render keyed by (seed, epoch, stored id)");
    tap_ok(label_ok, "ids and labels are the stored ones");
    tap_ok(mask_ok, "masks: indices ascending and masked, weights 1/count of the crop, "
                    "n_masked = mask count <= upperbound");
    tap_ok(collate_ok, "one rank: masks, n_masked and upperbound equal dv_mask_collate(2B, "
                       "seed, step t, key 0)");
    dv_loader_position(l, &e, &k);
    tap_ok(e == 1 && k == 1, "position after 4 batches is (1, 1)");
    dv_loader_close(l);
    return 1;
}

static void test_sampler(const char *raw) {
    dv_loader_opts o;
    base_opts(&o, raw, 7); /* 3 batches of 7 cover all 21 images */
    dv_loader *l;
    if (dv_loader_open(&l, &o, MPI_COMM_SELF) != DV_OK) {
        tap_ok(0, "open for the sampler test");
        return;
    }
    int cover = 1, documented = 1;
    uint64_t order[3][NPOS];
    for (int e = 0; e < 3; e++) {
        int seen[NPOS] = {0};
        for (int k = 0; k < 3; k++) {
            dv_batch *b;
            if (dv_loader_next(l, &b) != DV_OK) {
                cover = 0;
                break;
            }
            for (int i = 0; i < 7; i++) {
                int pos = pos_of_id(b->ids[i]);
                if (pos >= 0 && pos < NPOS) seen[pos]++;
                order[e][k * 7 + i] = b->ids[i];
            }
        }
        for (int i = 0; i < NPOS; i++) cover &= seen[i] == 1;
        int64_t perm[NPOS];
        dv_rng r;
        dv_rng_init(&r, 7, DV_RNG_SHUFFLE, (uint64_t)e, 0);
        dv_rng_permutation(&r, perm, NPOS);
        for (int i = 0; i < NPOS; i++) documented &= order[e][i] == id_of((int)perm[i]);
    }
    tap_ok(cover, "every image exactly once in each of 3 epochs");
    tap_ok(memcmp(order[0], order[1], sizeof order[0]) != 0 &&
               memcmp(order[1], order[2], sizeof order[0]) != 0,
           "the order differs between epochs");
    tap_ok(documented, "epoch e's order is dv_rng_permutation(seed, DV_RNG_SHUFFLE, e, 0)");
    dv_loader_close(l);
}

static void test_determinism(const char *raw) {
    dv_loader_opts o;
    base_opts(&o, raw, 6);
    dv_loader *a, *b;
    int ok = dv_loader_open(&a, &o, MPI_COMM_SELF) == DV_OK;
    o.num_workers = 2;
    ok = ok && dv_loader_open(&b, &o, MPI_COMM_SELF) == DV_OK;
    int same = ok;
    for (int t = 0; same && t < 5; t++) {
        dv_batch *x, *y;
        same = dv_loader_next(a, &x) == DV_OK && dv_loader_next(b, &y) == DV_OK;
        size_t gs = 12 * 3 * 16 * 16 * sizeof(float), ls = 12 * 3 * 8 * 8 * sizeof(float);
        same = same && memcmp(x->global_crops, y->global_crops, gs) == 0 &&
               memcmp(x->local_crops, y->local_crops, ls) == 0 &&
               memcmp(x->masks, y->masks, 12 * 16) == 0 && x->n_masked == y->n_masked &&
               memcmp(x->mask_indices, y->mask_indices, (size_t)x->n_masked * 8) == 0 &&
               memcmp(x->mask_weights, y->mask_weights, (size_t)x->n_masked * 4) == 0 &&
               memcmp(x->ids, y->ids, 6 * 8) == 0 && memcmp(x->labels, y->labels, 6 * 4) == 0;
    }
    tap_ok(same, "two loaders with the same seed: 5 batches identical bit for bit");
    if (ok) {
        dv_loader_close(a);
        dv_loader_close(b);
    }
    uint64_t d1[3], d2[3];
    base_opts(&o, raw, 6);
    int r1 = run_digests(&o, 3, d1);
    o.seed = 8;
    int r2 = run_digests(&o, 3, d2);
    tap_ok(r1 && r2 && d1[0] != d2[0] && d1[1] != d2[1], "another seed gives other batches");
}

static void test_workers(const char *raw) {
    dv_loader_opts o;
    base_opts(&o, raw, 6);
    uint64_t ref[8], got[8];
    int ok = run_digests(&o, 8, ref);
    const int cfg[][2] = {{1, 1}, {3, 2}, {2, 5}, {3, 1}};
    for (int c = 0; c < 4; c++) {
        o.num_workers = cfg[c][0];
        o.prefetch = cfg[c][1];
        int r = run_digests(&o, 8, got);
        tap_ok(ok && r && memcmp(ref, got, sizeof ref) == 0,
               "num_workers %d prefetch %d: 8 batches equal num_workers 0", cfg[c][0], cfg[c][1]);
    }
}

static void test_seek(const char *raw) {
    dv_loader_opts o;
    base_opts(&o, raw, 6);
    uint64_t ref[8];
    int ok = run_digests(&o, 8, ref);
    for (int workers = 0; workers <= 2; workers += 2) {
        o.num_workers = workers;
        dv_loader *l;
        if (dv_loader_open(&l, &o, MPI_COMM_SELF) != DV_OK) {
            tap_ok(0, "open for seek");
            continue;
        }
        dv_batch *b;
        int64_t e, k;
        int s = dv_loader_seek(l, 1, 2) == DV_OK;
        dv_loader_position(l, &e, &k);
        s &= e == 1 && k == 2;
        s &= dv_loader_next(l, &b) == DV_OK && batch_digest(b) == ref[5];
        s &= dv_loader_next(l, &b) == DV_OK && batch_digest(b) == ref[6];
        dv_loader_position(l, &e, &k);
        s &= e == 2 && k == 1;
        tap_ok(ok && s, "workers %d: seek(1, 2) then 2 batches equal batches 5, 6 of an "
                        "uninterrupted run; position (2, 1)", workers);
        /* back in time, with prefetched work in flight */
        s = dv_loader_seek(l, 0, 1) == DV_OK;
        for (int t = 1; t < 4 && s; t++)
            s &= dv_loader_next(l, &b) == DV_OK && batch_digest(b) == ref[t];
        tap_ok(ok && s, "workers %d: seek back to (0, 1) replays batches 1..3", workers);
        char err[512];
        fflush(stderr);
        FILE *tmp = tmpfile();
        int saved = dup(2);
        dup2(fileno(tmp), 2);
        int bad = dv_loader_seek(l, 0, 3);
        fflush(stderr);
        dup2(saved, 2);
        close(saved);
        rewind(tmp);
        size_t m = fread(err, 1, sizeof err - 1, tmp);
        err[m] = 0;
        fclose(tmp);
        tap_ok(bad == DV_ERR_ARG && strstr(err, "3 batches per epoch"),
               "workers %d: seek past the epoch's last batch is a clear error", workers);
        dv_loader_close(l);
    }
}

static void test_encoded(const char *raw) {
    char enc[512];
    path_in(enc, sizeof enc, "enc");
    dv_loader_opts o;
    base_opts(&o, raw, 6);
    uint64_t a[4], b[4];
    int r1 = run_digests(&o, 4, a);
    o.train = enc;
    o.num_workers = 2;
    int r2 = run_digests(&o, 4, b);
    tap_ok(r1 && r2 && memcmp(a, b, sizeof a) == 0,
           "PNG-encoded shards with the same ids give batches identical to the raw shards");

    char mix[512];
    path_in(mix, sizeof mix, "mixed");
    base_opts(&o, mix, 4);
    o.aug.global_size = 16;
    uint64_t c[4], d[4], e[4];
    int ok = run_digests(&o, 4, c);
    o.num_workers = 3;
    ok = ok && run_digests(&o, 4, d);
    tap_ok(ok && memcmp(c, d, sizeof c) == 0, "JPEG and PNG images of several sizes: decoded "
                                              "and augmented, same with 0 and 3 workers");
    o.jpeg_dct_scaling = 1;
    o.num_workers = 0;
    dv_loader *l;
    int fin = dv_loader_open(&l, &o, MPI_COMM_SELF) == DV_OK;
    int differs = 0;
    for (int t = 0; fin && t < 4; t++) {
        dv_batch *bb;
        fin = dv_loader_next(l, &bb) == DV_OK;
        for (size_t i = 0; fin && i < 8 * 3 * 16 * 16; i++) fin = isfinite(bb->global_crops[i]);
        if (fin) e[t] = batch_digest(bb);
        differs |= fin && e[t] != c[t];
    }
    if (fin) dv_loader_close(l);
    o.num_workers = 2;
    uint64_t f2[4];
    int r3 = run_digests(&o, 4, f2);
    tap_ok(fin && differs && r3 && memcmp(e, f2, sizeof e) == 0,
           "jpeg_dct_scaling: JPEGs decoded at a DCT scale (finite, different from full "
           "decode, same with 0 and 2 workers)");
}

struct open_args {
    dv_loader_opts *o;
    dv_loader **l;
};
static int open_call(void *arg) {
    struct open_args *a = arg;
    return dv_loader_open(a->l, a->o, MPI_COMM_SELF);
}
struct drain_args {
    dv_loader *l;
    int batches, status, again;
};
static int drain_call(void *arg) {
    struct drain_args *a = arg;
    dv_batch *b;
    a->batches = 0;
    for (int t = 0; t < 3; t++) {
        a->status = dv_loader_next(a->l, &b);
        if (a->status != DV_OK) break;
        a->batches++;
    }
    if (a->status != DV_OK) a->again = dv_loader_next(a->l, &b);
    return a->status;
}

static void test_errors(void) {
    char small[512], err[2048];
    path_in(small, sizeof small, "small");
    dv_loader_opts o;
    base_opts(&o, small, 13); /* small/ holds a.h5 and b.h5: 12 images */
    dv_loader *l = NULL;
    struct open_args oa = {&o, &l};
    int s = capture_stderr(open_call, &oa, err, sizeof err);
    tap_ok(s != DV_OK && l == NULL && strstr(err, small) && strstr(err, "12 images") &&
               strstr(err, "13"),
           "a dataset smaller than the global batch: one clear line (path, both numbers)");
    tap_diag("%s", err);

    for (int workers = 0; workers <= 2; workers += 2) {
        char rm[512], victim[600];
        path_in(rm, sizeof rm, workers ? "rm2" : "rm0");
        snprintf(victim, sizeof victim, "%s/b.h5", rm);
        base_opts(&o, rm, 6);
        o.num_workers = workers;
        l = NULL;
        int ok = dv_loader_open(&l, &o, MPI_COMM_SELF) == DV_OK;
        ok = ok && unlink(victim) == 0;
        struct drain_args da = {l, 0, 0, 0};
        if (ok) capture_stderr(drain_call, &da, err, sizeof err);
        tap_ok(ok && da.status != DV_OK && da.again == da.status && strstr(err, victim),
               "workers %d: a shard removed after open: error naming the file (after %d good "
               "batches), repeated by the next call",
               workers, da.batches);
        tap_diag("%s", err);
        dv_loader_close(l); /* joins the workers after the error */
    }
}

static void test_nolabels(void) {
    char dir[512], x[600];
    path_in(dir, sizeof dir, "nolab");
    snprintf(x, sizeof x, "%s/a.h5", dir);
    int ok = delete_labels(x);
    dv_loader_opts o;
    base_opts(&o, dir, 4);
    o.num_workers = 1;
    dv_loader *l;
    ok = ok && dv_loader_open(&l, &o, MPI_COMM_SELF) == DV_OK;
    int good = ok, seen_a = 0, seen_b = 0;
    for (int t = 0; ok && t < 3; t++) {
        dv_batch *b;
        if (dv_loader_next(l, &b) != DV_OK) {
            good = 0;
            break;
        }
        for (int i = 0; i < 4; i++) {
            int pos = pos_of_id(b->ids[i]);
            if (pos < 7) {
                seen_a++;
                good &= b->labels[i] == -1;
            } else {
                seen_b++;
                good &= b->labels[i] == label_of(pos);
            }
        }
    }
    if (ok) dv_loader_close(l);
    tap_ok(good && seen_a && seen_b, "a shard without /labels: its images get label -1 (%d), "
                                     "the other shard's keep theirs (%d)", seen_a, seen_b);
}

static void test_config(void) {
    dv_config *c = malloc(sizeof *c);
    dv_config_defaults(c);
    dv_config_set(c, "data.train", "/data/shards", "test");
    dv_config_set(c, "data.seed", "42", "test");
    dv_config_set(c, "data.num_workers", "3", "test");
    dv_config_set(c, "crops.local_crops_number", "4", "test");
    dv_config_set(c, "train.batch_size_per_gpu", "16", "test");
    dv_config_set(c, "data.blur_probabilities_intended", "true", "test");
    dv_config_set(c, "data.blur_sigma", "[0.05, 0.5]", "test");
    dv_config_set(c, "data.solarize_probability", "0", "test");
    dv_config_set(c, "data.grayscale_probability", "0.1", "test");
    dv_loader_opts o;
    dv_loader_opts_from_config(&o, c);
    tap_ok(strcmp(o.train, "/data/shards") == 0 && o.batch_per_rank == 16 && o.seed == 42 &&
               o.aug.global_size == 224 && o.aug.local_size == 96 && o.aug.local_number == 4 &&
               o.aug.global_scale[0] == 0.32 && o.aug.local_scale[1] == 0.32 &&
               o.aug.blur_intended == 1 && o.patch_size == 16 && o.mask_ratio_min == 0.1 &&
               o.mask_ratio_max == 0.5 && o.mask_probability == 0.5 && o.num_workers == 3 &&
               o.prefetch == 2 && o.jpeg_dct_scaling == 0 && o.aug.blur_sigma[0] == 0.05 &&
               o.aug.blur_sigma[1] == 0.5 && o.aug.p_solarize == 0.0 && o.aug.p_gray == 0.1 &&
               o.aug.p_jitter == 0.8,
           "dv_loader_opts_from_config fills every field from the config");
    free(c);
    int same = 1;
    for (int B = 1; B <= 64; B *= 2)
        same &= dv_loader_mask_bound(B, 1, 256, 0.1, 0.5, 0.5) ==
                dv_mask_upperbound((int)(2 * B), 256, 0.1, 0.5, 0.5);
    int64_t b1 = dv_loader_mask_bound(2, 1, 16, 0.1, 0.5, 0.5),
            b3 = dv_loader_mask_bound(2, 3, 16, 0.1, 0.5, 0.5);
    tap_ok(same && b3 >= b1 && b3 <= 4 * 8, "mask bound: the official per-rank bound on one "
                                            "rank; larger but <= 2B*N/2 for 3 ranks (%lld, %lld)",
           (long long)b1, (long long)b3);
}

static void test_hdf5_lock(const char *raw) {
    dv_loader_opts o;
    base_opts(&o, raw, 6);
    o.num_workers = 2;
    dv_loader *l;
    int ok = dv_loader_open(&l, &o, MPI_COMM_SELF) == DV_OK;
    dv_batch *b;
    for (int t = 0; ok && t < 4; t++) {
        ok = dv_loader_next(l, &b) == DV_OK;
        /* the caller's own HDF5 use while workers prefetch */
        char p[600];
        snprintf(p, sizeof p, "%s/a.h5", raw);
        dv_loader_hdf5_lock();
        dv_h5img r;
        ok = ok && dv_h5img_open(p, MPI_COMM_NULL, &r) == DV_OK;
        if (ok) ok = r.count == 7 && dv_h5img_close(&r) == DV_OK;
        dv_loader_hdf5_unlock();
    }
    if (l) dv_loader_close(l);
    tap_ok(ok, "HDF5 use by the caller under dv_loader_hdf5_lock while workers prefetch");
}

/* ---- MPI part ------------------------------------------------------------------------------- */

typedef struct {
    uint64_t t, gi, id, hc, hm;
} irec;

static int cmp_irec(const void *a, const void *b) {
    const irec *x = a, *y = b;
    if (x->t != y->t) return x->t < y->t ? -1 : 1;
    return x->gi < y->gi ? -1 : x->gi > y->gi;
}

enum { T_MPI = 5, BG = 6 };

static void mpi_part(int rank, int world) {
    char raw[512];
    path_in(raw, sizeof raw, "raw");
    irec *ref = NULL;
    int nref = 0;
    for (int w = 1; w <= world; w++) {
        MPI_Comm sub;
        MPI_Comm_split(MPI_COMM_WORLD, rank < w ? 0 : MPI_UNDEFINED, rank, &sub);
        irec *mine = NULL;
        int nmine = 0, ok = 1, seek_ok = 1, bound_ok = 1;
        if (sub != MPI_COMM_NULL) {
            const int64_t B = BG / w;
            dv_loader_opts o;
            base_opts(&o, raw, B);
            o.num_workers = rank; /* differs per rank on purpose */
            dv_loader *l;
            ok = dv_loader_open(&l, &o, sub) == DV_OK;
            mine = calloc((size_t)(T_MPI * B), sizeof *mine);
            uint64_t dig[T_MPI] = {0};
            for (int t = 0; ok && t < T_MPI; t++) {
                dv_batch *b;
                ok = dv_loader_next(l, &b) == DV_OK;
                if (!ok) break;
                dig[t] = batch_digest(b);
                bound_ok &= b->n_masked <= b->upperbound &&
                            b->upperbound == dv_loader_mask_bound(B, w, 16, 0.1, 0.5, 0.5);
                for (int64_t i = 0; i < B; i++) {
                    irec *r = &mine[nmine++];
                    r->t = (uint64_t)t;
                    r->gi = (uint64_t)(rank * B + i);
                    r->id = b->ids[i];
                    r->hc = image_crop_digest(b, i);
                    r->hm = image_mask_digest(b, i);
                }
            }
            if (ok) {
                dv_batch *b;
                seek_ok = dv_loader_seek(l, 1, 0) == DV_OK && dv_loader_next(l, &b) == DV_OK &&
                          batch_digest(b) == dig[3];
                dv_loader_close(l);
            }
            MPI_Comm_free(&sub);
        }
        int flags[3] = {ok, seek_ok, bound_ok}, all[3];
        MPI_Allreduce(flags, all, 3, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
        int cnt = nmine * 5, *counts = NULL, *displs = NULL, total = 0;
        if (rank == 0) {
            counts = calloc((size_t)world, sizeof *counts);
            displs = calloc((size_t)world, sizeof *displs);
        }
        MPI_Gather(&cnt, 1, MPI_INT, counts, 1, MPI_INT, 0, MPI_COMM_WORLD);
        if (rank == 0)
            for (int r = 0; r < world; r++) {
                displs[r] = total;
                total += counts[r];
            }
        irec *got = rank == 0 ? calloc((size_t)total / 5 + 1, sizeof *got) : NULL;
        MPI_Gatherv(mine, cnt, MPI_UINT64_T, got, counts, displs, MPI_UINT64_T, 0, MPI_COMM_WORLD);
        free(mine);
        if (rank == 0) {
            int n = total / 5;
            qsort(got, (size_t)n, sizeof *got, cmp_irec);
            tap_ok(all[0] && n == T_MPI * BG, "%d rank(s) of %lld images: %d batches read on every "
                                              "rank", w, (long long)(BG / w), T_MPI);
            tap_ok(all[1], "%d rank(s): seek(1, 0) replays batch 3 on every rank", w);
            tap_ok(all[2], "%d rank(s): n_masked <= upperbound = dv_loader_mask_bound(B, %d)", w,
                   w);
            if (w == 1) {
                ref = got;
                nref = n;
                got = NULL;
            } else {
                int ids = n == nref, crops = n == nref, masks = n == nref;
                for (int i = 0; i < n && i < nref; i++) {
                    ids &= got[i].t == ref[i].t && got[i].gi == ref[i].gi && got[i].id == ref[i].id;
                    crops &= got[i].hc == ref[i].hc;
                    masks &= got[i].hm == ref[i].hm;
                }
                tap_ok(ids, "%d ranks: the union of the ranks' images is the 1-rank global batch, "
                            "position by position", w);
                tap_ok(crops, "%d ranks: every image's crops equal the 1-rank run's bit for bit",
                       w);
                tap_ok(masks, "%d ranks: every image's two mask rows equal the 1-rank run's", w);
            }
            free(got);
            free(counts);
            free(displs);
        }
    }
    free(ref);

    /* a dataset smaller than the global batch: every rank fails, nobody hangs */
    dv_loader_opts o;
    base_opts(&o, raw, 11); /* 11 x world >= 22 > 21 images */
    dv_loader *l = NULL;
    int s = dv_loader_open(&l, &o, MPI_COMM_WORLD);
    int mine_ok = s == DV_ERR_CONFIG && l == NULL, all_ok = 0;
    MPI_Allreduce(&mine_ok, &all_ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (rank == 0)
        tap_ok(all_ok, "%d ranks: 21 images < global batch %d: every rank returns the error",
               world, 11 * world);
    /* a missing data.train: every rank fails alike */
    char missing[600];
    path_in(missing, sizeof missing, "does-not-exist");
    o.train = missing;
    s = dv_loader_open(&l, &o, MPI_COMM_WORLD);
    mine_ok = s != DV_OK && l == NULL;
    MPI_Allreduce(&mine_ok, &all_ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (rank == 0) tap_ok(all_ok, "%d ranks: a missing data.train fails on every rank", world);
}

int main(int argc, char **argv) {
    dv_ctx ctx;
    if (dv_ctx_init(&ctx, &argc, &argv, "test_loader") != DV_OK) return 1;
    const int rank = ctx.rank, world = ctx.world;
    dv_h5_quiet();
    tap_no_plan();
    int made = 1;
    if (rank == 0) {
        const char *tmpd = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
        snprintf(g_dir, sizeof g_dir, "%s/test_loader.XXXXXX", tmpd);
        made = mkdtemp(g_dir) != NULL;
        made = made && make_dataset("raw", 0, 0);
        if (world == 1)
            made = made && make_dataset("enc", 1, 0) && make_dataset("small", 0, 1) &&
                   make_dataset("rm0", 0, 0) && make_dataset("rm2", 0, 0) &&
                   make_dataset("nolab", 0, 1) && make_mixed("mixed");
        if (!made) tap_ok(0, "make test shards under %s", g_dir);
    }
    MPI_Bcast(&made, 1, MPI_INT, 0, ctx.comm);
    MPI_Bcast(g_dir, sizeof g_dir, MPI_CHAR, 0, ctx.comm);
    if (made) {
        char raw[512];
        path_in(raw, sizeof raw, "raw");
        if (world == 1) {
            test_resolve();
            shapes_and_rows(raw);
            test_sampler(raw);
            test_determinism(raw);
            test_workers(raw);
            test_seek(raw);
            test_encoded(raw);
            test_errors();
            test_nolabels();
            test_config();
            test_hdf5_lock(raw);
            tap_skip(1, "rank slicing over world sizes: run tests/mpi_loader.sh");
        } else {
            mpi_part(rank, world);
        }
        MPI_Barrier(ctx.comm);
        if (rank == 0) rm_rf(g_dir);
    }
    int rc = rank == 0 ? tap_exit() : 0;
    MPI_Bcast(&rc, 1, MPI_INT, 0, ctx.comm);
    dv_ctx_finish(&ctx);
    return rc;
}
