/* Training checkpoints (io/ckpt.h) on a tiny SSL model.
 *
 * Serial (`test_ckpt`, one MPI rank): save after 2 steps, load into a scrambled model and compare
 * every buffer bit for bit (student, teacher, AdamW moments, centres with their pending update,
 * step, loader position); 2 more steps from the loaded state equal 2 more steps of the original;
 * keep-last-N and `latest`; a corrupted and a truncated newest checkpoint are reported and the
 * previous one is loaded; a different architecture is a clear error; failed writes (parent is a
 * file, .tmp name taken, file-size limit hit mid-write) leave the previous checkpoint intact;
 * export → dv_weights_load → the teacher forward is unchanged; verify / info; the dv-sum64
 * checksum's partition property.
 *
 * MPI stages (tests/mpi_ckpt.sh): `test_ckpt save DIR --tap-first N` on 2 ranks writes a
 * replicated and a sharded (each rank its own hyperslabs) checkpoint; `test_ckpt load DIR
 * --tap-first N` on 1 and 3 ranks loads them (replicated and sharded reads) and compares with a
 * reference computed in-process, and resumes bit-exactly. Stages print numbered TAP lines from
 * N on and no plan; the script adds the plan.
 */
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <math.h>
#include <mpi.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checksum.h"
#include "ckpt.h"
#include "config.h"
#include "ctx.h"
#include "err.h"
#include "h5util.h"
#include "masking.h"
#include "rng.h"
#include "ssl.h"
#include "tap.h"
#include "weights.h"

/* ---- tiny model and batches (as tests/test_ssl.c) ------------------------------------------- */

static dv_config *tiny_config(const char *extra1, const char *extra2) {
    dv_config *c = malloc(sizeof *c);
    dv_config_defaults(c);
    char *kv[] = {"student.embed_dim=16",
                  "student.depth=2",
                  "student.num_heads=2",
                  "student.patch_size=4",
                  "student.drop_path_rate=0.1",
                  "student.layerscale=0.5",
                  "student.num_register_tokens=1",
                  "crops.global_crops_size=16",
                  "crops.local_crops_size=8",
                  "crops.local_crops_number=2",
                  "dino.head_n_prototypes=32",
                  "dino.head_hidden_dim=24",
                  "dino.head_bottleneck_dim=8",
                  "ibot.head_n_prototypes=24",
                  "ibot.head_hidden_dim=20",
                  "ibot.head_bottleneck_dim=6",
                  "train.centering=centering",
                  "train.batch_size_per_gpu=4",
                  "train.OFFICIAL_EPOCH_LENGTH=10",
                  "optim.epochs=4",
                  "optim.warmup_epochs=1",
                  "optim.freeze_last_layer_epochs=0",
                  "teacher.warmup_teacher_temp_epochs=1",
                  "optim.base_lr=0.3",
                  "ibot.mask_sample_probability=0.5",
                  (char *)extra1,
                  (char *)extra2};
    int n = 25 + (extra1 != NULL) + (extra2 != NULL);
    if (dv_config_apply_overrides(c, n, kv) != DV_OK || dv_config_finalize(c, 1) != DV_OK) {
        printf("Bail out! tiny config\n");
        exit(1);
    }
    return c;
}

typedef struct {
    dv_batch b;
    dv_mask_batch mb;
} test_batch;

static void make_batch(test_batch *t, const dv_config *c, uint64_t seed) {
    dv_batch *b = &t->b;
    memset(b, 0, sizeof *b);
    b->B = c->train.batch_size_per_gpu;
    b->L = c->crops.local_crops_number;
    b->G = c->crops.global_crops_size;
    b->l = c->crops.local_crops_size;
    const int p = (int)c->student.patch_size, g = (int)(b->G / p);
    b->N = (int64_t)g * g;
    b->global_crops = malloc(sizeof(float) * (size_t)(2 * b->B * 3 * b->G * b->G));
    b->local_crops = malloc(sizeof(float) * (size_t)(b->L * b->B * 3 * b->l * b->l));
    dv_rng r;
    dv_rng_init(&r, seed, DV_RNG_TEST, 0, 0);
    for (int64_t i = 0; i < 2 * b->B * 3 * b->G * b->G; i++)
        b->global_crops[i] = (float)dv_rng_normal(&r);
    for (int64_t i = 0; i < b->L * b->B * 3 * b->l * b->l; i++)
        b->local_crops[i] = (float)dv_rng_normal(&r);
    dv_mask_gen mg;
    dv_mask_gen_init(&mg, g, g, dv_mask_max_num_patches((int)b->G, p));
    dv_mask_batch_alloc(&t->mb, (int)(2 * b->B), (int)b->N);
    dv_mask_collate(&mg, c->ibot.mask_ratio_min_max[0], c->ibot.mask_ratio_min_max[1],
                    c->ibot.mask_sample_probability, seed, 0, 0, &t->mb);
    b->masks = t->mb.masks;
    b->mask_indices = t->mb.indices;
    b->mask_weights = t->mb.weights;
    b->n_masked = t->mb.n_masked_patches;
    b->upperbound = t->mb.upperbound;
}

static void free_batch(test_batch *t) {
    free(t->b.global_crops);
    free(t->b.local_crops);
    dv_mask_batch_free(&t->mb);
}

/* Steps s->step .. until s->step == to, batch i seeded 100 + i (any rank count, same data). */
static int run_to(dv_ssl *s, int64_t to) {
    while (s->step < to) {
        test_batch tb;
        make_batch(&tb, s->cfg, 100 + (uint64_t)s->step);
        dv_ssl_stats st;
        int rc = dv_ssl_step(s, &tb.b, &st);
        free_batch(&tb);
        if (rc != DV_OK) return rc;
    }
    return DV_OK;
}

/* ---- snapshots of the whole state ---------------------------------------------------------- */

typedef struct {
    float *b[DV_MOD_COUNT][4];
    size_t n[DV_MOD_COUNT];
    int present[DV_MOD_COUNT];
    float *center[2];
    double *psum[2];
    double rows[2];
    int has[2];
    int64_t K[2];
    int64_t step;
} snap_t;

static float **mod_bufs(dv_ssl_module *m, float **out) {
    out[0] = m->student;
    out[1] = m->teacher;
    out[2] = m->exp_avg;
    out[3] = m->exp_avg_sq;
    return out;
}

static void snap_take(snap_t *p, dv_ssl *s) {
    memset(p, 0, sizeof *p);
    for (int m = 0; m < DV_MOD_COUNT; m++) {
        if (!(p->present[m] = s->mod[m].present)) continue;
        p->n[m] = s->mod[m].numel;
        float *bufs[4];
        mod_bufs(&s->mod[m], bufs);
        for (int k = 0; k < 4; k++) {
            p->b[m][k] = malloc(p->n[m] * sizeof(float));
            memcpy(p->b[m][k], bufs[k], p->n[m] * sizeof(float));
        }
    }
    dv_center *c[2] = {&s->center_dino, &s->center_ibot};
    for (int h = 0; h < 2; h++) {
        p->K[h] = c[h]->K;
        p->center[h] = malloc((size_t)p->K[h] * sizeof(float));
        memcpy(p->center[h], c[h]->center, (size_t)p->K[h] * sizeof(float));
        p->psum[h] = malloc((size_t)p->K[h] * sizeof(double));
        memcpy(p->psum[h], c[h]->pending_sum, (size_t)p->K[h] * sizeof(double));
        p->rows[h] = c[h]->pending_rows;
        p->has[h] = c[h]->has_pending;
    }
    p->step = s->step;
}

static void snap_free(snap_t *p) {
    for (int m = 0; m < DV_MOD_COUNT; m++)
        for (int k = 0; k < 4; k++) free(p->b[m][k]);
    for (int h = 0; h < 2; h++) {
        free(p->center[h]);
        free(p->psum[h]);
    }
}

static const char *const buf_names[4] = {"student", "teacher", "exp_avg", "exp_avg_sq"};

/* Bit-identical? Elements [lo[m], hi[m]) of each module only when lo/hi given (the buffers of s
 * then hold that range from index 0, as a sharded rank). what = the first difference. */
static int snap_equal(const snap_t *p, dv_ssl *s, const size_t *lo, const size_t *hi, char *what,
                      size_t len) {
    for (int m = 0; m < DV_MOD_COUNT; m++) {
        if (p->present[m] != s->mod[m].present) {
            snprintf(what, len, "%s presence", dv_module_names[m]);
            return 0;
        }
        if (!p->present[m]) continue;
        float *bufs[4];
        mod_bufs(&s->mod[m], bufs);
        size_t a = lo ? lo[m] : 0, b = hi ? (hi[m] < p->n[m] ? hi[m] : p->n[m]) : p->n[m];
        for (int k = 0; k < 4; k++)
            if (b > a && memcmp(p->b[m][k] + a, bufs[k], (b - a) * sizeof(float)) != 0) {
                snprintf(what, len, "%s %s", dv_module_names[m], buf_names[k]);
                return 0;
            }
    }
    dv_center *c[2] = {&s->center_dino, &s->center_ibot};
    for (int h = 0; h < 2; h++) {
        if (c[h]->K != p->K[h] ||
            memcmp(c[h]->center, p->center[h], (size_t)p->K[h] * sizeof(float)) != 0 ||
            memcmp(c[h]->pending_sum, p->psum[h], (size_t)p->K[h] * sizeof(double)) != 0 ||
            memcmp(&c[h]->pending_rows, &p->rows[h], sizeof(double)) != 0 ||
            c[h]->has_pending != p->has[h]) {
            snprintf(what, len, "%s centre", h ? "ibot" : "dino");
            return 0;
        }
    }
    if (s->step != p->step) {
        snprintf(what, len, "step %lld vs %lld", (long long)s->step, (long long)p->step);
        return 0;
    }
    snprintf(what, len, "none");
    return 1;
}

/* Overwrite every state buffer with junk so a load must restore all of it. */
static void scramble(dv_ssl *s) {
    for (int m = 0; m < DV_MOD_COUNT; m++) {
        if (!s->mod[m].present) continue;
        float *bufs[4];
        mod_bufs(&s->mod[m], bufs);
        for (int k = 0; k < 4; k++)
            for (size_t i = 0; i < s->mod[m].local_numel; i++) bufs[k][i] = (float)(i % 7) - 3.5f;
    }
    dv_center *c[2] = {&s->center_dino, &s->center_ibot};
    for (int h = 0; h < 2; h++) {
        for (int64_t i = 0; i < c[h]->K; i++) {
            c[h]->center[i] = 42.0f;
            c[h]->pending_sum[i] = -1.0;
        }
        c[h]->pending_rows = 3.0;
        c[h]->has_pending = !c[h]->has_pending;
    }
    s->step = 12345;
}

/* An even split of every module's flat buffer over the ranks, as a sharded engine would hold it:
 * view shares s's buffers, offset by lo. */
static void shard_view(dv_ssl *view, dv_ckpt_shards *sh, dv_ssl *s, int rank, int world) {
    *view = *s;
    memset(sh, 0, sizeof *sh);
    for (int m = 0; m < DV_MOD_COUNT; m++) {
        if (!s->mod[m].present) continue;
        const size_t n = s->mod[m].numel;
        /* a padded split as FSDP: ceil(n / world) per rank */
        const size_t per = (n + (size_t)world - 1) / (size_t)world;
        sh->lo[m] = per * (size_t)rank < n ? per * (size_t)rank : n;
        sh->hi[m] = per * (size_t)(rank + 1);
        dv_ssl_module *v = &view->mod[m];
        v->student += sh->lo[m];
        v->teacher += sh->lo[m];
        v->exp_avg += sh->lo[m];
        v->exp_avg_sq += sh->lo[m];
    }
}

/* ---- files --------------------------------------------------------------------------------- */

static char g_dir[1024];

static void rm_rf(const char *p) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", p);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", p);
}

static int file_exists(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0;
}

static void read_text(const char *p, char *buf, size_t len) {
    buf[0] = '\0';
    FILE *f = fopen(p, "r");
    if (!f) return;
    size_t n = fread(buf, 1, len - 1, f);
    buf[n] = '\0';
    fclose(f);
}

static int count_ckpts(const char *dir, char *list, size_t len) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "ls '%s' | tr '\\n' ' '", dir);
    list[0] = '\0';
    FILE *p = popen(cmd, "r");
    if (p) {
        size_t n = fread(list, 1, len - 1, p);
        list[n] = '\0';
        pclose(p);
    }
    int c = 0;
    for (const char *q = list; (q = strstr(q, "ckpt-")); q++) c++;
    return c;
}

static int same_bytes(const char *a, const char *b) {
    FILE *f = fopen(a, "rb"), *g = fopen(b, "rb");
    int same = f && g;
    while (same) {
        int x = fgetc(f), y = fgetc(g);
        if (x != y) same = 0;
        if (x == EOF || y == EOF) break;
    }
    if (f) fclose(f);
    if (g) fclose(g);
    return same;
}

/* stderr into a file while a call runs; the text comes back (and is echoed as diagnostics). */
static int cap_begin(const char *path) {
    fflush(stderr);
    int saved = dup(2), fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 2);
    close(fd);
    return saved;
}

static void cap_end(int saved, const char *path, char *text, size_t len) {
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    read_text(path, text, len);
    for (char *l = text; *l;) {
        char *nl = strchr(l, '\n');
        if (nl) *nl = '\0';
        if (*l) tap_diag("stderr: %s", l);
        if (!nl) break;
        *nl = '\n';
        l = nl + 1;
    }
}

/* Flip bytes in the middle of a dataset's data (contiguous layout). */
static int corrupt_dataset(const char *file, const char *dset) {
    hid_t f = H5Fopen(file, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return -1;
    hid_t d = H5Dopen2(f, dset, H5P_DEFAULT);
    haddr_t off = d >= 0 ? H5Dget_offset(d) : HADDR_UNDEF;
    hsize_t sz = d >= 0 ? H5Dget_storage_size(d) : 0;
    if (d >= 0) H5Dclose(d);
    H5Fclose(f);
    if (off == HADDR_UNDEF || sz < 8) return -1;
    int fd = open(file, O_RDWR);
    if (fd < 0) return -1;
    unsigned char b[4];
    off_t at = (off_t)(off + sz / 2);
    int ok = pread(fd, b, 4, at) == 4;
    for (int i = 0; i < 4; i++) b[i] ^= 0x5a;
    ok = ok && pwrite(fd, b, 4, at) == 4;
    close(fd);
    return ok ? 0 : -1;
}

/* SIGXFSZ: the write that crossed the limit fails with EFBIG; lift the limit again so that what
 * follows (HDF5 closing the discarded file) behaves as on a disk that removing the .tmp freed. */
static struct rlimit g_fsize_old;
static void lift_fsize_limit(int sig) {
    (void)sig;
    setrlimit(RLIMIT_FSIZE, &g_fsize_old);
}

/* ---- serial tests ------------------------------------------------------------------------ */

static void test_checksum(void) {
    float x[1000];
    for (int i = 0; i < 1000; i++) x[i] = (float)sin(i * 0.37) * 100.0f;
    uint64_t whole = dv_sum64_f32(x, 1000, 0);
    uint64_t parts =
        dv_sum64_f32(x, 1, 0) + dv_sum64_f32(x + 1, 332, 1) + dv_sum64_f32(x + 333, 667, 333);
    tap_ok(whole == parts, "dv-sum64: the sum of a partition's partial checksums is the whole's");
    tap_ok(whole == dv_sum64_bytes(x, sizeof x, 0),
           "dv-sum64: floats and their little-endian bytes agree");
    double y[5] = {1.5, -2, 1e300, 0, 7};
    tap_ok(dv_sum64_64(y, 5, 0) == dv_sum64_bytes(y, sizeof y, 0) &&
               dv_sum64_64(y, 5, 0) == dv_sum64_64(y, 2, 0) + dv_sum64_64(y + 2, 3, 2),
           "dv-sum64: 8-byte elements are two words each, and partition too");
    float z[1000];
    memcpy(z, x, sizeof z);
    unsigned char *zb = (unsigned char *)z;
    zb[2001] ^= 1;
    float w[1000];
    memcpy(w, x, sizeof w);
    w[10] = x[11];
    w[11] = x[10];
    tap_ok(dv_sum64_f32(z, 1000, 0) != whole && dv_sum64_f32(w, 1000, 0) != whole &&
               dv_sum64_f32(x, 1000, 1) != whole,
           "dv-sum64: a flipped bit, two swapped words or a shifted position change it");
}

static void serial_tests(dv_ctx *ctx) {
    char dir[1100], path[1300], text[8192], what[128], list[4096], errf[1200];
    snprintf(dir, sizeof dir, "%s/ck", g_dir);
    snprintf(errf, sizeof errf, "%s/stderr.txt", g_dir);
    int64_t at = -2;
    int rc, rc2, sv;

    /* separate heads, softmax centering (so the centres have a pending update) */
    dv_config *c = tiny_config("ibot.separate_head=true", NULL);
    dv_ssl s, s2;
    rc = dv_ssl_create(&s, c, c->train.batch_size_per_gpu);
    tap_ok(rc == DV_OK && s.mod[DV_MOD_IBOT_HEAD].present, "create the tiny separate-head model");
    rc = dv_ssl_create(&s2, c, c->train.batch_size_per_gpu);

    rc = dv_ckpt_load_latest(ctx, &s2, NULL, dir, &at);
    tap_ok(rc == DV_OK && at == -1 && s2.step == 0,
           "no checkpoint directory: step_loaded -1, nothing changed");

    rc = run_to(&s, 2);
    tap_ok(rc == DV_OK && s.center_dino.has_pending && s.center_ibot.has_pending,
           "2 steps; the centres have a pending update");
    snap_t ref2;
    snap_take(&ref2, &s);
    dv_ckpt_extra x = {3, 17}, x2 = {0, 0};
    rc = dv_ckpt_save(ctx, &s, &x, dir, 3);
    snprintf(path, sizeof path, "%s/ckpt-000000002.h5", dir);
    char latest[1300];
    snprintf(latest, sizeof latest, "%s/latest", dir);
    read_text(latest, text, sizeof text);
    tap_ok(rc == DV_OK && file_exists(path) && strcmp(text, "ckpt-000000002.h5\n") == 0,
           "save creates the directory, ckpt-000000002.h5 and latest");
    char why[DV_CKPT_WHY_MAX];
    rc = dv_ckpt_verify(path, why, sizeof why);
    tap_ok(rc == DV_OK, "verify: every checksum, shape and value (%s)", rc ? why : "ok");
    tap_ok(dv_ckpt_is_checkpoint(path) == 1, "dv_ckpt_is_checkpoint recognises it");
    { /* the config text sits in HDF5's global heap (no HDF5 checksum): ours catches it */
        char bad[1300];
        snprintf(bad, sizeof bad, "%s/cfgbad.h5", g_dir);
        FILE *in = fopen(path, "rb");
        size_t n = 0;
        char *bytes = malloc(1 << 22);
        if (in) {
            n = fread(bytes, 1, 1 << 22, in);
            fclose(in);
        }
        char *at_cfg = n ? memmem(bytes, n, "compute_precision", 17) : NULL;
        if (at_cfg) at_cfg[3] = 'X';
        FILE *o = fopen(bad, "wb");
        if (o) {
            fwrite(bytes, 1, n, o);
            fclose(o);
        }
        free(bytes);
        rc = dv_ckpt_verify(bad, why, sizeof why);
        tap_ok(at_cfg && rc == DV_ERR_FORMAT && strstr(why, "config attribute"),
               "a changed byte in the config text is caught: %s", why);
        unlink(bad);
    }
    dv_ckpt_info info;
    rc = dv_ckpt_read_info(path, &info, why, sizeof why);
    tap_ok(rc == DV_OK && info.step == 2 && info.world_size == 1 && info.loader_epoch == 3 &&
               info.loader_batch == 17 && info.adamw_step == 2 && info.has_ibot_head &&
               info.numel[0] == s.mod[0].numel && info.numel[2] == s.mod[2].numel &&
               info.backbone.embed_dim == 16 && strstr(info.config, "embed_dim: 16") != NULL,
           "info: step, world size, loader position, modules, architecture, config text");
    if (rc == DV_OK) dv_ckpt_info_free(&info);

    /* load into a scrambled model: every buffer back bit for bit */
    scramble(&s2);
    rc = dv_ckpt_load_latest(ctx, &s2, &x2, dir, &at);
    int same = rc == DV_OK && snap_equal(&ref2, &s2, NULL, NULL, what, sizeof what);
    tap_ok(same && at == 2 && x2.loader_epoch == 3 && x2.loader_batch == 17,
           "load restores student, teacher, moments, centres (pending too), step and loader "
           "position bit for bit (first difference: %s)",
           what);

    /* resume: 2 more steps from the loaded state equal 2 more steps of the original */
    rc = run_to(&s, 4) | run_to(&s2, 4);
    snap_t ref4;
    snap_take(&ref4, &s);
    tap_ok(
        rc == DV_OK && snap_equal(&ref4, &s2, NULL, NULL, what, sizeof what),
        "2 steps after loading equal 2 steps of the original, bit for bit (first difference: %s)",
        what);

    /* a different architecture: one clear error, no fallback */
    dv_config *c3 = tiny_config("ibot.separate_head=true", "student.embed_dim=24");
    dv_ssl s3;
    rc = dv_ssl_create(&s3, c3, c3->train.batch_size_per_gpu);
    sv = cap_begin(errf);
    rc2 = dv_ckpt_load_latest(ctx, &s3, NULL, dir, &at);
    cap_end(sv, errf, text, sizeof text);
    tap_ok(rc == DV_OK && rc2 == DV_ERR_CONFIG && at == -1 && strstr(text, "error: ") &&
               strstr(text, "embed_dim is 16 in the checkpoint, 24 in this run") &&
               !strstr(text, "warning") && strchr(text, '\n') == strrchr(text, '\n'),
           "a different architecture is one error naming the attribute");
    dv_ssl_free(&s3);
    free(c3);
    c3 = tiny_config(NULL, NULL); /* shared head: no ibot_head */
    rc = dv_ssl_create(&s3, c3, c3->train.batch_size_per_gpu);
    sv = cap_begin(errf);
    rc2 = dv_ckpt_load_latest(ctx, &s3, NULL, dir, &at);
    cap_end(sv, errf, text, sizeof text);
    tap_ok(rc2 == DV_ERR_CONFIG &&
               strstr(text, "ibot_head is present in the checkpoint, absent in this run"),
           "a missing separate iBOT head is named");

    /* keep-last-N and latest */
    rc = dv_ckpt_save(ctx, &s, &x, dir, 2);
    int n4 = count_ckpts(dir, list, sizeof list);
    rc |= run_to(&s, 5);
    snap_t ref5;
    snap_take(&ref5, &s);
    rc |= dv_ckpt_save(ctx, &s, &x, dir, 2);
    int n5 = count_ckpts(dir, list, sizeof list);
    read_text(latest, text, sizeof text);
    tap_ok(rc == DV_OK && n4 == 2 && n5 == 2 && strstr(list, "ckpt-000000004.h5") &&
               strstr(list, "ckpt-000000005.h5") && !strstr(list, "ckpt-000000002.h5") &&
               !strstr(list, ".tmp"),
           "keep 2: the oldest is deleted (now: %s)", list);
    tap_ok(strcmp(text, "ckpt-000000005.h5\n") == 0, "latest names the newest checkpoint");
    rc = dv_ckpt_save(ctx, &s, &x, dir, 3); /* same step again: replaced in place */
    tap_ok(rc == DV_OK && count_ckpts(dir, list, sizeof list) == 2,
           "saving the same step again replaces the file");

    /* corruption of the newest → warning, the previous one loads */
    snprintf(path, sizeof path, "%s/ckpt-000000005.h5", dir);
    rc = corrupt_dataset(path, "teacher/backbone/blocks.1.attn.qkv.weight");
    tap_ok(rc == 0, "flip bytes inside teacher/backbone/blocks.1.attn.qkv.weight of step 5");
    rc = dv_ckpt_verify(path, why, sizeof why);
    tap_ok(rc == DV_ERR_FORMAT &&
               strcmp(why, "checksum mismatch in teacher/backbone/blocks.1.attn.qkv.weight") == 0,
           "verify names the corrupt dataset: %s", why);
    scramble(&s2);
    sv = cap_begin(errf);
    rc = dv_ckpt_load_latest(ctx, &s2, &x2, dir, &at);
    cap_end(sv, errf, text, sizeof text);
    tap_ok(rc == DV_OK && at == 4 && snap_equal(&ref4, &s2, NULL, NULL, what, sizeof what),
           "a corrupt newest checkpoint: the previous one (step 4) loads exactly (diff: %s)", what);
    tap_ok(strstr(text, "warning: ") &&
               strstr(text, "ckpt-000000005.h5: checksum mismatch in "
                            "teacher/backbone/blocks.1.attn.qkv.weight; "
                            "trying the previous checkpoint") &&
               !strstr(text, "error"),
           "one warning line names the file and tensor and says it falls back");

    /* truncated newest (step 6) → open fails; 5 corrupt; 4 loads */
    rc = run_to(&s, 6) | dv_ckpt_save(ctx, &s, &x, dir, 5);
    snprintf(path, sizeof path, "%s/ckpt-000000006.h5", dir);
    struct stat sb;
    stat(path, &sb);
    rc |= truncate(path, sb.st_size / 2);
    scramble(&s2);
    sv = cap_begin(errf);
    rc2 = dv_ckpt_load_latest(ctx, &s2, &x2, dir, &at);
    cap_end(sv, errf, text, sizeof text);
    tap_ok(rc == DV_OK && rc2 == DV_OK && at == 4 &&
               snap_equal(&ref4, &s2, NULL, NULL, what, sizeof what),
           "a truncated newest and a corrupt second: step 4 loads (diff: %s)", what);
    tap_ok(strstr(text, "ckpt-000000006.h5: cannot open as HDF5") &&
               strstr(text, "ckpt-000000005.h5: checksum mismatch"),
           "both failures are reported");
    rc = dv_ckpt_verify(path, why, sizeof why);
    tap_ok(rc != DV_OK && strstr(why, "cannot open"), "verify on the truncated file: %s", why);

    /* `latest` missing: the newest valid file is found */
    unlink(latest);
    scramble(&s2);
    sv = cap_begin(errf);
    rc = dv_ckpt_load_latest(ctx, &s2, &x2, dir, &at);
    cap_end(sv, errf, text, sizeof text);
    tap_ok(rc == DV_OK && at == 4, "without `latest` the newest valid checkpoint loads (step %lld)",
           (long long)at);

    /* export the teacher backbone of step 4 and compare the forward */
    snprintf(path, sizeof path, "%s/ckpt-000000004.h5", dir);
    char out[1300];
    snprintf(out, sizeof out, "%s/teacher.h5", g_dir);
    rc = dv_ckpt_export_teacher(path, out);
    dv_vit m;
    float *w = NULL;
    rc2 = rc == DV_OK ? dv_weights_load(out, &m, &w) : rc;
    tap_ok(rc == DV_OK && rc2 == DV_OK && m.params.numel == s.mod[0].numel &&
               memcmp(w, ref4.b[0][1], m.params.numel * sizeof(float)) == 0,
           "export: dv_weights_load reads the teacher backbone, bit for bit");
    if (rc2 == DV_OK) {
        const int64_t G = c->crops.global_crops_size;
        float *img = malloc(sizeof(float) * (size_t)(2 * 3 * G * G));
        dv_rng r;
        dv_rng_init(&r, 5, DV_RNG_TEST, 7, 0);
        for (int64_t i = 0; i < 2 * 3 * G * G; i++) img[i] = (float)dv_rng_normal(&r);
        dv_vit_group grp = {.n = 2, .H = G, .W = G, .images = img, .masks = NULL};
        dv_vit_fwd_opts opts;
        memset(&opts, 0, sizeof opts);
        const int64_t T = dv_vit_tokens(&m, &grp, 1), D = m.cfg.embed_dim;
        dv_vit_acts *a1 = NULL, *a2 = NULL;
        int ok = dv_vit_acts_create(&m, T, 0, 0, &a1) == DV_OK &&
                 dv_vit_acts_create(&s.vit, T, 0, 0, &a2) == DV_OK &&
                 dv_vit_forward(&m, w, a1, &grp, 1, &opts) == DV_OK &&
                 dv_vit_forward(&s.vit, ref4.b[0][1], a2, &grp, 1, &opts) == DV_OK &&
                 memcmp(a1->x_norm, a2->x_norm, (size_t)(T * D) * sizeof(float)) == 0;
        tap_ok(ok, "export: the exported teacher's forward equals the original teacher's");
        dv_vit_acts_free(a1);
        dv_vit_acts_free(a2);
        free(img);
        free(w);
        dv_vit_free(&m);
    } else {
        tap_ok(0, "export: the exported teacher's forward equals the original teacher's");
    }

    /* the shared-head model round-trips (no ibot_head group; iBOT centre of the DINO size) */
    char dir3[1200];
    snprintf(dir3, sizeof dir3, "%s/shared", g_dir);
    rc = run_to(&s3, 1);
    snap_t ref_sh;
    snap_take(&ref_sh, &s3);
    rc |= dv_ckpt_save(ctx, &s3, NULL, dir3, 0);
    snprintf(path, sizeof path, "%s/ckpt-000000001.h5", dir3);
    rc |= dv_ckpt_verify(path, why, sizeof why);
    scramble(&s3);
    rc |= dv_ckpt_load_latest(ctx, &s3, NULL, dir3, &at);
    tap_ok(rc == DV_OK && at == 1 && snap_equal(&ref_sh, &s3, NULL, NULL, what, sizeof what),
           "shared-head (Sinkhorn-Knopp) model: save, verify, load bit for bit (diff: %s)", what);
    snap_free(&ref_sh);
    dv_ssl_free(&s3);
    free(c3);

    /* failed writes leave the previous checkpoint intact */
    snprintf(path, sizeof path, "%s/afile", g_dir);
    FILE *fp = fopen(path, "w");
    if (fp) fclose(fp);
    char bad[1300];
    snprintf(bad, sizeof bad, "%s/afile/sub", g_dir);
    sv = cap_begin(errf);
    rc = dv_ckpt_save(ctx, &s, &x, bad, 3);
    cap_end(sv, errf, text, sizeof text);
    tap_ok(rc == DV_ERR_IO && strstr(text, "afile/sub") && strstr(text, "not a directory"),
           "a directory under a regular file: one error naming the path");

    rc = dv_ckpt_save(ctx, &s, &x, dir, 5); /* step 6 again (repairs the truncated one) */
    char before[4096], latest_before[256];
    read_text(latest, latest_before, sizeof latest_before);
    rc |= run_to(&s, 7);
    char tmpd[1300];
    snprintf(tmpd, sizeof tmpd, "%s/ckpt-000000007.h5.tmp", dir);
    mkdir(tmpd, 0755);
    count_ckpts(dir, before, sizeof before);
    sv = cap_begin(errf);
    rc2 = dv_ckpt_save(ctx, &s, &x, dir, 1);
    cap_end(sv, errf, text, sizeof text);
    count_ckpts(dir, list, sizeof list);
    char lat_after[256];
    read_text(latest, lat_after, sizeof lat_after);
    tap_ok(rc == DV_OK && rc2 != DV_OK && strstr(text, "ckpt-000000007.h5") &&
               strcmp(before, list) == 0 && strcmp(latest_before, lat_after) == 0,
           "the .tmp name taken by a directory: error, files and latest unchanged (%s)", list);
    rmdir(tmpd);
    count_ckpts(dir, before, sizeof before);

    /* disk full mid-write: a file-size limit below the checkpoint's size */
    snprintf(path, sizeof path, "%s/ckpt-000000006.h5", dir);
    stat(path, &sb);
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = (rlim_t)(sb.st_size / 2);
    g_fsize_old = old;
    void (*oldsig)(int) = signal(SIGXFSZ, lift_fsize_limit);
    sv = cap_begin(errf);
    setrlimit(RLIMIT_FSIZE, &lim);
    rc2 = dv_ckpt_save(ctx, &s, &x, dir, 1);
    setrlimit(RLIMIT_FSIZE, &old);
    cap_end(sv, errf, text, sizeof text);
    signal(SIGXFSZ, oldsig);
    count_ckpts(dir, list, sizeof list);
    read_text(latest, lat_after, sizeof lat_after);
    tap_ok(rc2 != DV_OK && strcmp(before, list) == 0 && strcmp(latest_before, lat_after) == 0 &&
               strstr(text, "checkpoint not written") && strstr(text, "ckpt-000000007.h5"),
           "a write fails mid-file (file-size limit %lld bytes): error naming the path, no .tmp "
           "left, files and latest unchanged",
           (long long)lim.rlim_cur);
    scramble(&s2);
    rc = dv_ckpt_load_latest(ctx, &s2, &x2, dir, &at);
    tap_ok(rc == DV_OK && at == 6,
           "after the failed writes the previous checkpoint (step 6) loads");

    snap_free(&ref2);
    snap_free(&ref4);
    snap_free(&ref5);
    dv_ssl_free(&s);
    dv_ssl_free(&s2);
    free(c);
}

/* ---- MPI stages -------------------------------------------------------------------------------
 */

static int all_ok(const dv_ctx *ctx, int ok) {
    int all = 0;
    MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_MIN, ctx->comm);
    return all;
}

/* Rank 0 reports a result agreed over all ranks. */
#define TAP_ALL(ctx, cond, ...)                                                                    \
    do {                                                                                           \
        int all_ = all_ok(ctx, (cond));                                                            \
        if ((ctx)->rank == 0) tap_ok(all_, __VA_ARGS__);                                           \
    } while (0)

static void mpi_save(dv_ctx *ctx, const char *dir) {
    char rep[1200], shd[1200], path[1300], why[DV_CKPT_WHY_MAX];
    snprintf(rep, sizeof rep, "%s/rep", dir);
    snprintf(shd, sizeof shd, "%s/shard", dir);
    dv_config *c = tiny_config("ibot.separate_head=true", NULL);
    dv_ssl s, view;
    int rc = dv_ssl_create(&s, c, c->train.batch_size_per_gpu);
    rc |= run_to(&s, 2);
    dv_ckpt_extra x = {1, 7};
    rc |= dv_ckpt_save(ctx, &s, &x, rep, 0);
    TAP_ALL(ctx, rc == DV_OK, "%d ranks: replicated save at step 2 (rank 0 writes)", ctx->world);
    dv_ckpt_shards sh;
    shard_view(&view, &sh, &s, ctx->rank, ctx->world);
    /* the split must cut tensors inside a row somewhere, so that a rank's part of a tensor is a
     * union of hyperslabs (partial row, full rows, partial row), not one block */
    int mid_row = 0;
    for (int m = 0; m < DV_MOD_COUNT; m++) {
        if (!s.mod[m].present || ctx->rank == 0) continue;
        for (int i = 0; i < s.mod[m].tab->n; i++) {
            const dv_param *p = &s.mod[m].tab->t[i];
            if (sh.lo[m] > p->offset && sh.lo[m] < p->offset + p->numel && p->ndim >= 2 &&
                (sh.lo[m] - p->offset) % (size_t)p->shape[p->ndim - 1] != 0)
                mid_row++;
        }
    }
    int mid_all = 0;
    MPI_Allreduce(&mid_row, &mid_all, 1, MPI_INT, MPI_SUM, ctx->comm);
    if (ctx->rank == 0)
        tap_ok(mid_all > 0, "the even split cuts %d tensor%s inside a row", mid_all,
               mid_all == 1 ? "" : "s");
    rc = dv_ckpt_save_sharded(ctx, &view, &x, shd, 0, &sh);
    TAP_ALL(ctx, rc == DV_OK, "%d ranks: sharded save at step 2 (each rank its hyperslabs)",
            ctx->world);
    rc = run_to(&s, 4) | dv_ckpt_save(ctx, &s, &x, rep, 0);
    TAP_ALL(ctx, rc == DV_OK, "%d ranks: replicated save at step 4", ctx->world);
    if (ctx->rank == 0) {
        int ok = 1;
        const char *files[3] = {"rep/ckpt-000000002.h5", "rep/ckpt-000000004.h5",
                                "shard/ckpt-000000002.h5"};
        for (int i = 0; i < 3; i++) {
            snprintf(path, sizeof path, "%s/%s", dir, files[i]);
            if (dv_ckpt_verify(path, why, sizeof why) != DV_OK) {
                tap_diag("%s: %s", path, why);
                ok = 0;
            }
            dv_ckpt_info info;
            if (dv_ckpt_read_info(path, &info, why, sizeof why) == DV_OK) {
                ok &= info.world_size == ctx->world;
                dv_ckpt_info_free(&info);
            } else {
                ok = 0;
            }
        }
        tap_ok(ok,
               "every file verifies serially (checksums of the summed partial sums match the "
               "bytes where the hyperslabs put them) and records world_size %d",
               ctx->world);
        char a[1300], b[1300];
        snprintf(a, sizeof a, "%s/rep/ckpt-000000002.h5", dir);
        snprintf(b, sizeof b, "%s/shard/ckpt-000000002.h5", dir);
        tap_ok(same_bytes(a, b), "the sharded and the replicated writes give byte-identical files");
    }
    dv_ssl_free(&s);
    free(c);
}

static void mpi_load(dv_ctx *ctx, const char *dir) {
    char rep[1200], path[1300], what[128];
    snprintf(rep, sizeof rep, "%s/rep", dir);
    dv_config *c = tiny_config("ibot.separate_head=true", NULL);
    dv_ssl s, view;
    snap_t ref2, ref4;
    int rc = dv_ssl_create(&s, c, c->train.batch_size_per_gpu);
    rc |= run_to(&s, 2);
    snap_take(&ref2, &s);
    rc |= run_to(&s, 4);
    snap_take(&ref4, &s);
    dv_ssl_free(&s);
    TAP_ALL(ctx, rc == DV_OK, "%d ranks: the reference run (steps 2 and 4) in-process", ctx->world);

    dv_ckpt_extra x = {0, 0};
    int64_t at = -2;
    rc = dv_ssl_create(&s, c, c->train.batch_size_per_gpu);
    scramble(&s);
    rc |= dv_ckpt_load_latest(ctx, &s, &x, rep, &at);
    int ok = rc == DV_OK && at == 4 && snap_equal(&ref4, &s, NULL, NULL, what, sizeof what) &&
             x.loader_epoch == 1 && x.loader_batch == 7;
    TAP_ALL(ctx, ok,
            "%d ranks: load_latest of the 2-rank checkpoint equals the reference at step 4 "
            "on every rank (rank 0 diff: %s)",
            ctx->world, what);

    snprintf(path, sizeof path, "%s/shard/ckpt-000000002.h5", dir);
    scramble(&s);
    rc = dv_ckpt_load_file(ctx, &s, &x, path, NULL);
    ok = rc == DV_OK && snap_equal(&ref2, &s, NULL, NULL, what, sizeof what);
    TAP_ALL(ctx, ok,
            "%d ranks: the hyperslab-written checkpoint loads whole on every rank (diff: %s)",
            ctx->world, what);
    rc = run_to(&s, 4);
    ok = rc == DV_OK && snap_equal(&ref4, &s, NULL, NULL, what, sizeof what);
    TAP_ALL(ctx, ok,
            "%d ranks: resuming it for 2 steps equals the reference, bit for bit (diff: %s)",
            ctx->world, what);

    /* sharded read: each rank its own part (an even split over this world size) */
    dv_ckpt_shards sh;
    scramble(&s);
    shard_view(&view, &sh, &s, ctx->rank, ctx->world);
    rc = dv_ckpt_load_file(ctx, &view, &x, path, &sh);
    ok = rc == DV_OK && snap_equal(&ref2, &view, sh.lo, sh.hi, what, sizeof what);
    TAP_ALL(ctx, ok,
            "%d ranks: sharded load: each rank's slice of every buffer and the centres "
            "equal the reference (diff: %s)",
            ctx->world, what);
    dv_ssl_free(&s);
    snap_free(&ref2);
    snap_free(&ref4);
    free(c);
}

/* ---- FSDP (dv_ssl_set_comm) checkpoints ----------------------------------------------------- */

/* Every buffer's full values of every module (student, teacher, exp_avg, exp_avg_sq), concatenated. */
static float *full_state(dv_ssl *s, size_t *n) {
    size_t tot = 0;
    for (int m = 0; m < DV_MOD_COUNT; m++)
        if (s->mod[m].present) tot += 4 * s->mod[m].numel;
    float *f = malloc((tot ? tot : 1) * sizeof *f), *p = f;
    static const int which[4] = {0, 1, 3, 4};
    int rc = f ? DV_OK : DV_ERR_NOMEM;
    for (int m = 0; m < DV_MOD_COUNT && rc == DV_OK; m++) {
        if (!s->mod[m].present) continue;
        for (int k = 0; k < 4 && rc == DV_OK; k++, p += s->mod[m].numel)
            rc = dv_ssl_full_values(s, m, which[k], p);
    }
    if (rc != DV_OK) {
        free(f);
        return NULL;
    }
    *n = tot;
    return f;
}

static int same_floats(const float *a, const float *b, size_t n) {
    return a && b && memcmp(a, b, n * sizeof *a) == 0;
}

/* A sharded model on this job's ranks (FULL_SHARD, fp32 gathers: a resumed run must be exact). */
static int fsdp_model(dv_ssl *s, dv_comm *cm, const dv_ctx *ctx, dv_config **c) {
    *c = tiny_config("ibot.separate_head=true", "compute_precision.student.backbone.sharding_strategy=FULL_SHARD");
    DV_TRY(dv_comm_init(cm, ctx->comm));
    DV_TRY(dv_ssl_create(s, *c, (*c)->train.batch_size_per_gpu));
    return dv_ssl_set_comm(s, cm);
}

/* 2 ranks: train the sharded model, save at step 2 (each rank its unit slices), keep going to
 * step 4; a fresh sharded model loads step 2 and reaches the same step 4 bit for bit. */
static void mpi_fsdp_save(dv_ctx *ctx, const char *dir) {
    char d[1200], why[DV_CKPT_WHY_MAX], path[1300];
    snprintf(d, sizeof d, "%s/fsdp", dir);
    dv_config *c = NULL, *c2 = NULL;
    dv_ssl s, s2;
    dv_comm cm, cm2;
    int rc = fsdp_model(&s, &cm, ctx, &c);
    TAP_ALL(ctx, rc == DV_OK && s.sharded && s.mod[0].sharded && s.mod[0].local_numel < s.mod[0].numel,
            "%d ranks: the model is sharded (backbone: %zu of %zu elements on this rank, %d units)",
            ctx->world, s.mod[0].local_numel, s.mod[0].numel, s.mod[0].plan.nunits);
    rc = run_to(&s, 2);
    dv_ckpt_extra x = {1, 7};
    if (rc == DV_OK) rc = dv_ckpt_save(ctx, &s, &x, d, 0);
    TAP_ALL(ctx, rc == DV_OK, "%d ranks: FSDP save at step 2 (every rank writes its unit slices)", ctx->world);
    size_t n = 0;
    float *at2 = full_state(&s, &n);
    if (ctx->rank == 0) {
        snprintf(path, sizeof path, "%s/ckpt-000000002.h5", d);
        int ok = dv_ckpt_verify(path, why, sizeof why) == DV_OK;
        if (!ok) tap_diag("%s", why);
        tap_ok(ok, "the FSDP checkpoint verifies serially (official shapes, checksums of the summed parts)");
    }
    rc = run_to(&s, 4);
    float *at4 = full_state(&s, &n);
    /* the file as plain data: an unsharded model (no communicator) on every rank reads it whole */
    dv_config *cp = tiny_config("ibot.separate_head=true", NULL);
    dv_ssl plain;
    int rc2 = dv_ssl_create(&plain, cp, cp->train.batch_size_per_gpu);
    scramble(&plain);
    dv_ckpt_extra xp = {0, 0};
    snprintf(path, sizeof path, "%s/ckpt-000000002.h5", d);
    if (rc2 == DV_OK) rc2 = dv_ckpt_load_file(ctx, &plain, &xp, path, NULL);
    size_t np = 0;
    float *fp = rc2 == DV_OK ? full_state(&plain, &np) : NULL;
    TAP_ALL(ctx, rc2 == DV_OK && np == n && same_floats(fp, at2, n) && xp.loader_batch == 7,
            "%d ranks: the file holds exactly the gathered state of step 2", ctx->world);
    free(fp);
    dv_ssl_free(&plain);
    free(cp);

    int64_t step = -1;
    rc2 = fsdp_model(&s2, &cm2, ctx, &c2);
    scramble(&s2);
    if (rc2 == DV_OK) rc2 = dv_ckpt_load_latest(ctx, &s2, &x, d, &step);
    if (rc2 == DV_OK) rc2 = run_to(&s2, 4);
    size_t n2 = 0;
    float *r4 = rc2 == DV_OK ? full_state(&s2, &n2) : NULL;
    TAP_ALL(ctx, rc == DV_OK && rc2 == DV_OK && step == 2 && n2 == n && same_floats(r4, at4, n),
            "%d ranks: FSDP resume from step 2 on the same ranks reaches step 4 bit for bit", ctx->world);
    free(r4);
    free(at2);
    free(at4);
    dv_ssl_free(&s2);
    dv_comm_free(&cm2);
    dv_ssl_free(&s);
    dv_comm_free(&cm);
    free(c);
    free(c2);
}

/* 1 or 3 ranks: the 2-rank FSDP checkpoint loads (sharded over 3, whole on 1) to the file's
 * values, and training goes on from it. */
static void mpi_fsdp_load(dv_ctx *ctx, const char *dir) {
    char d[1200], path[1300];
    snprintf(d, sizeof d, "%s/fsdp", dir);
    snprintf(path, sizeof path, "%s/ckpt-000000002.h5", d);
    dv_config *cp = tiny_config("ibot.separate_head=true", NULL);
    dv_ssl plain;
    dv_ckpt_extra x = {0, 0};
    int rc = dv_ssl_create(&plain, cp, cp->train.batch_size_per_gpu);
    if (rc == DV_OK) rc = dv_ckpt_load_file(ctx, &plain, &x, path, NULL);
    size_t n = 0, n2 = 0;
    float *ref = rc == DV_OK ? full_state(&plain, &n) : NULL;
    dv_ssl_free(&plain);
    free(cp);

    dv_config *c = NULL;
    dv_ssl s;
    dv_comm cm;
    int64_t step = -1;
    int rc2 = fsdp_model(&s, &cm, ctx, &c);
    scramble(&s);
    if (rc2 == DV_OK) rc2 = dv_ckpt_load_latest(ctx, &s, &x, d, &step);
    float *got = rc2 == DV_OK ? full_state(&s, &n2) : NULL;
    TAP_ALL(ctx, rc == DV_OK && rc2 == DV_OK && step == 2 && s.sharded == (ctx->world > 1) &&
                     n2 == n && same_floats(got, ref, n) && x.loader_epoch == 1 && x.loader_batch == 7,
            "%d rank%s: the 2-rank FSDP checkpoint loads %s, every value equal to the file's",
            ctx->world, ctx->world > 1 ? "s" : "", ctx->world > 1 ? "into 3-way shards" : "whole");
    if (rc2 == DV_OK) rc2 = run_to(&s, 4);
    char d2[1300]; /* not into d: the next stage loads d's latest */
    snprintf(d2, sizeof d2, "%s/fsdp-on-%d", dir, ctx->world);
    if (rc2 == DV_OK) rc2 = dv_ckpt_save(ctx, &s, &x, d2, 0);
    TAP_ALL(ctx, rc2 == DV_OK && s.step == 4, "%d rank%s: training resumes from it and saves step 4",
            ctx->world, ctx->world > 1 ? "s" : "");
    free(ref);
    free(got);
    dv_ssl_free(&s);
    dv_comm_free(&cm);
    free(c);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    dv_ctx ctx;
    if (dv_ctx_from_comm(&ctx, MPI_COMM_WORLD, "test_ckpt") != DV_OK) return 1;
    dv_h5_quiet();
    const char *mode = NULL, *dir = NULL;
    int first = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--tap-first") && i + 1 < argc)
            first = atoi(argv[++i]);
        else if (!mode)
            mode = argv[i];
        else if (!dir)
            dir = argv[i];
    }
    int rc = 0;
    if (mode && dir && (!strcmp(mode, "save") || !strcmp(mode, "load") || !strcmp(mode, "fsdp-save") ||
                        !strcmp(mode, "fsdp-load"))) {
        tap_st_.run = first - 1; /* numbering continues across the script's stages */
        if (!strcmp(mode, "save"))
            mpi_save(&ctx, dir);
        else if (!strcmp(mode, "load"))
            mpi_load(&ctx, dir);
        else if (!strcmp(mode, "fsdp-save"))
            mpi_fsdp_save(&ctx, dir);
        else
            mpi_fsdp_load(&ctx, dir);
        rc = ctx.rank == 0 ? (tap_st_.failed ? 1 : 0) : 0;
    } else {
        tap_no_plan();
        if (ctx.world != 1) {
            if (ctx.rank == 0) printf("Bail out! run the serial part on one rank\n");
            MPI_Finalize();
            return 1;
        }
        const char *tmpd = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
        snprintf(g_dir, sizeof g_dir, "%s/test_ckpt.XXXXXX", tmpd);
        if (!mkdtemp(g_dir)) {
            tap_ok(0, "mkdtemp %s: %s", g_dir, strerror(errno));
        } else {
            test_checksum();
            serial_tests(&ctx);
            rm_rf(g_dir);
        }
        rc = tap_exit();
    }
    MPI_Finalize();
    return rc;
}
