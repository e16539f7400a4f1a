/* bench_loader — augmented samples per second through the real training data loader
 * (src/loader.h: HDF5 shards -> decode -> the official multi-crop augmentation -> iBOT masks),
 * with the official crops for patch-14 ViTs: 2 global crops of 224 (scale 0.32..1) and 8 local
 * crops of 98 (scale 0.05..0.32), masks on the 16 x 16 patch grid. Prints name=value lines.
 *
 * Two datasets, both written into a mkdtemp folder that is removed at the end:
 *   fmnist  the Fashion-MNIST test images (28 x 28 gray, $FMNIST/t10k-images-idx3-ubyte.gz,
 *           FMNIST as in jobs/pipeline.sh, default /usr/share/datasets/fashion-mnist) packed
 *           with io/pack.h as dinov2-pack does (raw shard, 3 channels); fmnist_skipped=1 when
 *           the IDX file is missing
 *   jpeg    DV_BENCH_JPEGS (default 200) synthetic 500 x 375 photos (smooth random colour
 *           fields plus a little noise), TurboJPEG quality 90, 4:2:0, in one encoded shard —
 *           ImageNet-like sizes, full-size decode (data.* defaults: no DCT scaling)
 * Each is read with data.num_workers 0 (everything on the calling thread: one core) and with
 * 2 worker threads (the calling thread only waits). A measurement runs dv_loader_next for
 * DV_BENCH_SECONDS (default 5) seconds of wall time, at least 3 batches of
 * DV_BENCH_BATCH (default 8) images, from the first call (workers start there; the batches
 * left prefetched at the end are not counted, so the 2-worker rate errs low).
 * loader_jpeg_img_per_s_per_core is the one-core (num_workers 0) rate. The goal is
 * >= 50 augmented JPEG images per second per core. The cores may be shared with other work:
 * *_img_per_cpu_s_* divide by the process's CPU time instead of wall time (all threads), and
 * loadavg_1min is the machine's load when the run started.
 *
 * Where the time goes (one core, outside the loader): loader_jpeg_decode_ms_per_img is one
 * full-size decode, loader_augment_ms_per_img_jpeg / _fmnist one image's 10 crops
 * (dv_augment_image, decode excluded).
 *
 * Environment: DV_BENCH_SECONDS, DV_BENCH_BATCH, DV_BENCH_JPEGS, FMNIST; TMPDIR for the temp
 * folder.
 * About 30 s. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
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
#include "pack.h"
#include "rng.h"
#include "timer.h"

#define FMNIST_DIR "/usr/share/datasets/fashion-mnist"
#define JPEG_W 500
#define JPEG_H 375

static int64_t env_int(const char *name, int64_t def) {
    const char *s = getenv(name);
    return s && s[0] ? strtoll(s, NULL, 10) : def;
}

static double env_double(const char *name, double def) {
    const char *s = getenv(name);
    return s && s[0] ? strtod(s, NULL) : def;
}

static void rm_rf(const char *p) {
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", p);
    if (system(cmd) != 0) fprintf(stderr, "bench_loader: could not remove %s\n", p);
}

static uint8_t clamp_u8(double v) { return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : lrint(v)); }

/* A smooth random colour image: per channel a base level plus four low-frequency waves with
 * random directions and phases (separable: sin(ax + by + c) = sin(ax)cos(by + c) +
 * cos(ax)sin(by + c)), plus uniform noise of +-8 (so the entropy coder has photo-like work). */
static void synth_image(uint8_t *px, int h, int w, uint64_t seed) {
    dv_rng r;
    dv_rng_init(&r, seed, DV_RNG_TEST, 7, 0);
    double base[3], amp[3][4];
    static double sx[3][4][JPEG_W], cx[3][4][JPEG_W], sy[3][4][JPEG_H], cy[3][4][JPEG_H];
    for (int c = 0; c < 3; c++) {
        base[c] = dv_rng_uniform_range(&r, 60, 190);
        for (int k = 0; k < 4; k++) {
            amp[c][k] = dv_rng_uniform_range(&r, 10, 35);
            const double fx = dv_rng_uniform_range(&r, -6, 6) * 2 * M_PI / w;
            const double fy = dv_rng_uniform_range(&r, -6, 6) * 2 * M_PI / h;
            const double ph = dv_rng_uniform_range(&r, 0, 2 * M_PI);
            for (int x = 0; x < w; x++) {
                sx[c][k][x] = sin(fx * x);
                cx[c][k][x] = cos(fx * x);
            }
            for (int y = 0; y < h; y++) {
                sy[c][k][y] = sin(fy * y + ph);
                cy[c][k][y] = cos(fy * y + ph);
            }
        }
    }
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++) {
                double v = base[c];
                for (int k = 0; k < 4; k++)
                    v += amp[c][k] * (sx[c][k][x] * cy[c][k][y] + cx[c][k][x] * sy[c][k][y]);
                v += 16.0 * (dv_rng_uniform(&r) - 0.5f);
                px[((size_t)y * w + x) * 3 + c] = clamp_u8(v);
            }
}

/* n JPEGs into one encoded shard dir/jpeg.h5; *mean_kib gets the mean file size. */
static int make_jpeg_shard(const char *dir, int n, double *mean_kib) {
    if (mkdir(dir, 0755) != 0) return 0;
    char p[700];
    snprintf(p, sizeof p, "%s/jpeg-00000.h5", dir);
    dv_h5img_spec sp = {.layout = DV_H5IMG_ENCODED};
    dv_h5img_writer *w;
    if (dv_h5img_create(p, &sp, &w) != DV_OK) return 0;
    tjhandle tj = tjInitCompress();
    uint8_t *px = malloc((size_t)JPEG_W * JPEG_H * 3);
    int ok = tj != NULL && px != NULL;
    double bytes = 0;
    for (int i = 0; ok && i < n; i++) {
        synth_image(px, JPEG_H, JPEG_W, (uint64_t)i);
        unsigned char *out = NULL;
        unsigned long jn = 0;
        ok = tjCompress2(tj, px, JPEG_W, 0, JPEG_H, TJPF_RGB, &out, &jn, TJSAMP_420, 90, 0) == 0;
        if (ok) ok = dv_h5img_append_encoded(w, out, jn, -1, (uint64_t)i, NULL) == DV_OK;
        bytes += (double)jn;
        tjFree(out);
    }
    free(px);
    if (tj) tjDestroy(tj);
    if (!ok) {
        dv_h5img_discard(w);
        return 0;
    }
    *mean_kib = bytes / n / 1024.0;
    return dv_h5img_commit(w) == DV_OK;
}

static int make_fmnist_shard(const char *idx, const char *dir) {
    dv_pack_opts o;
    dv_pack_opts_init(&o);
    o.idx_images = idx;
    o.output = dir;
    o.prefix = "fmnist";
    o.progress = 0;
    o.quiet = 1;
    dv_pack_result res;
    return dv_pack_run(&o, &res) == DV_OK && res.images > 0;
}

/* The official crops for patch 14 from a config, as dinov2-pretrain builds them. */
static int loader_config(dv_config *c, const char *train, int64_t B, int workers) {
    char kb[64], kw[64], kt[700];
    snprintf(kb, sizeof kb, "train.batch_size_per_gpu=%lld", (long long)B);
    snprintf(kw, sizeof kw, "data.num_workers=%d", workers);
    snprintf(kt, sizeof kt, "data.train=%s", train);
    char *kv[] = {"student.arch=vit_small", "student.patch_size=14", "crops.global_crops_size=224",
                  "crops.local_crops_size=98", "crops.local_crops_number=8",
                  "crops.global_crops_scale=[0.32, 1.0]", "crops.local_crops_scale=[0.05, 0.32]",
                  kb, kw, kt};
    dv_config_defaults(c);
    if (dv_config_apply_overrides(c, (int)(sizeof kv / sizeof *kv), kv) != DV_OK) return 0;
    return dv_config_finalize(c, 1) == DV_OK;
}

static double cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           1e-6 * (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

/* 1-minute load average (the cores may be shared with other work); -1 when unknown. */
static double loadavg1(void) {
    double l = -1;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &l) != 1) l = -1;
        fclose(f);
    }
    return l;
}

/* img/s of the loader on `train` with `workers` threads (wall time) and *per_cpu_s the images
 * per CPU-second of the process (all threads); < 0 on error. */
static double measure(const char *train, int64_t B, int workers, double seconds, double *per_cpu_s) {
    dv_config *c = malloc(sizeof *c);
    if (!c || !loader_config(c, train, B, workers)) {
        free(c);
        return -1;
    }
    dv_loader_opts o;
    dv_loader_opts_from_config(&o, c);
    dv_loader *l;
    if (dv_loader_open(&l, &o, MPI_COMM_SELF) != DV_OK) {
        free(c);
        return -1;
    }
    int64_t batches = 0;
    const double c0 = cpu_s();
    double t0 = dv_now(), t;
    do {
        dv_batch *b;
        if (dv_loader_next(l, &b) != DV_OK) {
            dv_loader_close(l);
            free(c);
            return -1;
        }
        batches++;
    } while ((t = dv_now() - t0) < seconds || batches < 3);
    const double cpu = cpu_s() - c0;
    dv_loader_close(l);
    free(c);
    *per_cpu_s = cpu > 0 ? (double)(batches * B) / cpu : 0.0;
    return (double)(batches * B) / t;
}

/* Outside the loader, one core: mean ms of a full-size decode and of one image's 10 crops. */
static int breakdown(const char *shard, const char *fmnist_shard, double *dec_ms, double *aug_jpeg_ms,
                     double *aug_fmnist_ms) {
    dv_h5img r;
    if (dv_h5img_open(shard, MPI_COMM_NULL, &r) != DV_OK) return 0;
    const int64_t n = r.count < 40 ? r.count : 40;
    dv_h5img_blobs bl = {0};
    int ok = dv_h5img_read_encoded(&r, 0, n, &bl) == DV_OK;
    dv_h5img_close(&r);
    dv_decoder *dec = NULL;
    dv_augment_scratch *s = NULL;
    dv_image img = {0};
    dv_augment_params p;
    dv_augment_params_default(&p);
    p.global_size = 224;
    p.local_size = 98;
    p.local_number = 8;
    float *g = malloc(sizeof *g * 2 * 3 * 224 * 224), *lc = malloc(sizeof *lc * 8 * 3 * 98 * 98);
    ok = ok && g && lc && dv_decoder_create(&dec) == DV_OK && dv_augment_scratch_create(&s) == DV_OK;
    dv_decode_opts dopt = {.channels = 3};
    double td = 0, ta = 0;
    for (int64_t i = 0; ok && i < n; i++) {
        double t0 = dv_now();
        ok = dv_decode(dec, bl.data + bl.offsets[i], bl.offsets[i + 1] - bl.offsets[i], "bench",
                       &dopt, &img, NULL, 0) == DV_OK;
        double t1 = dv_now();
        ok = ok && dv_augment_image(&p, img.pixels, img.height, img.width, img.channels, 0, 0,
                                    (uint64_t)i, g, lc, NULL, s) == DV_OK;
        ta += dv_now() - t1;
        td += t1 - t0;
    }
    *dec_ms = 1e3 * td / (double)n;
    *aug_jpeg_ms = 1e3 * ta / (double)n;
    *aug_fmnist_ms = -1;
    if (ok && fmnist_shard && dv_h5img_open(fmnist_shard, MPI_COMM_NULL, &r) == DV_OK) {
        const int64_t m = 40;
        uint8_t *raw = malloc((size_t)m * r.height * r.width * r.channels);
        if (raw && dv_h5img_read_raw(&r, 0, m, raw) == DV_OK) {
            const size_t sz = (size_t)r.height * r.width * r.channels;
            double t0 = dv_now();
            int good = 1;
            for (int64_t i = 0; good && i < m; i++)
                good = dv_augment_image(&p, raw + (size_t)i * sz, r.height, r.width, r.channels, 0,
                                        0, (uint64_t)i, g, lc, NULL, s) == DV_OK;
            if (good) *aug_fmnist_ms = 1e3 * (dv_now() - t0) / (double)m;
        }
        free(raw);
        dv_h5img_close(&r);
    }
    dv_image_free(&img);
    if (dec) dv_decoder_destroy(dec);
    dv_augment_scratch_free(s);
    dv_h5img_blobs_free(&bl);
    free(g);
    free(lc);
    return ok;
}

int main(int argc, char **argv) {
    dv_ctx ctx;
    if (dv_ctx_init(&ctx, &argc, &argv, "bench_loader") != DV_OK) return 1;
    dv_h5_quiet();
    const double seconds = env_double("DV_BENCH_SECONDS", 5.0);
    const int64_t B = env_int("DV_BENCH_BATCH", 8);
    const int njpeg = (int)env_int("DV_BENCH_JPEGS", 200);
    char dir[512], sub[600], shard[700], fshard[700];
    const char *tmpd = getenv("TMPDIR") && getenv("TMPDIR")[0] ? getenv("TMPDIR") : "/tmp";
    snprintf(dir, sizeof dir, "%s/bench_loader.XXXXXX", tmpd);
    if (!mkdtemp(dir)) {
        fprintf(stderr, "bench_loader: mkdtemp %s failed\n", dir);
        return 1;
    }
    int rc = 0;
    printf("loader_crops=2x224+8x98\n");
    printf("loader_batch=%lld\n", (long long)B);
    printf("loadavg_1min=%.2f\n", loadavg1());

    /* (a) Fashion-MNIST */
    char idx[600];
    const char *fm = getenv("FMNIST") && getenv("FMNIST")[0] ? getenv("FMNIST") : FMNIST_DIR;
    snprintf(idx, sizeof idx, "%s/t10k-images-idx3-ubyte.gz", fm);
    int have_fmnist = access(idx, R_OK) == 0;
    snprintf(sub, sizeof sub, "%s/fmnist", dir);
    snprintf(fshard, sizeof fshard, "%s/fmnist-00000.h5", sub);
    if (!have_fmnist) {
        printf("fmnist_skipped=1\n");
    } else {
        double t0 = dv_now();
        if (!make_fmnist_shard(idx, sub)) {
            fprintf(stderr, "bench_loader: packing %s failed\n", idx);
            rc = 1;
            goto out;
        }
        printf("loader_fmnist_pack_s=%.2f\n", dv_now() - t0);
        double p1, p2;
        const double r1 = measure(sub, B, 0, seconds, &p1), r2 = measure(sub, B, 2, seconds, &p2);
        if (r1 < 0 || r2 < 0) {
            rc = 1;
            goto out;
        }
        printf("loader_fmnist_img_per_s_1core=%.1f\n", r1);
        printf("loader_fmnist_img_per_s_2workers=%.1f\n", r2);
        printf("loader_fmnist_img_per_cpu_s_1core=%.1f\n", p1);
        printf("loader_fmnist_img_per_cpu_s_2workers=%.1f\n", p2);
    }

    /* (b) JPEG */
    {
        double kib = 0, t0 = dv_now();
        snprintf(sub, sizeof sub, "%s/jpeg", dir);
        snprintf(shard, sizeof shard, "%s/jpeg-00000.h5", sub);
        if (!make_jpeg_shard(sub, njpeg, &kib)) {
            fprintf(stderr, "bench_loader: writing the JPEG shard failed\n");
            rc = 1;
            goto out;
        }
        printf("loader_jpeg_images=%d\n", njpeg);
        printf("loader_jpeg_size=%dx%d\n", JPEG_W, JPEG_H);
        printf("loader_jpeg_mean_kib=%.1f\n", kib);
        printf("loader_jpeg_make_s=%.2f\n", dv_now() - t0);
        double p1, p2;
        const double r1 = measure(sub, B, 0, seconds, &p1), r2 = measure(sub, B, 2, seconds, &p2);
        if (r1 < 0 || r2 < 0) {
            rc = 1;
            goto out;
        }
        printf("loader_jpeg_img_per_s_1core=%.1f\n", r1);
        printf("loader_jpeg_img_per_s_2workers=%.1f\n", r2);
        printf("loader_jpeg_img_per_cpu_s_1core=%.1f\n", p1);
        printf("loader_jpeg_img_per_cpu_s_2workers=%.1f\n", p2);
        printf("loader_jpeg_img_per_s_per_core=%.1f\n", r1);
        printf("loader_jpeg_2workers_speedup=%.2f\n", r2 / r1);
        double dms, ajm, afm;
        if (breakdown(shard, have_fmnist ? fshard : NULL, &dms, &ajm, &afm)) {
            printf("loader_jpeg_decode_ms_per_img=%.2f\n", dms);
            printf("loader_augment_ms_per_img_jpeg=%.2f\n", ajm);
            if (afm >= 0) printf("loader_augment_ms_per_img_fmnist=%.2f\n", afm);
        }
    }
out:
    rm_rf(dir);
    fflush(stdout);
    dv_ctx_finish(&ctx);
    return rc;
}
