/*
 * sbi_engine.c — the engine's side of bench/sbi_bench.py (make bench-sbi): for one sbi
 * posterior checkpoint (written by that script, with a prior box), the work sbi's
 * DirectPosterior and density estimator do, timed on one thread, printed as JSON:
 *
 *   sample          eng_sample_prior: 1 observation x N accepted samples (rejection
 *                   outside the prior box, as sbi's reject_outside_prior)
 *   sample_batched  eng_sample_prior for each of B observations x N samples
 *   log_prob        eng_log_prob of M rows under one observation (broadcast)
 *
 *   sbi_engine MODEL.safetensors INPUT.bin SECONDS
 *
 * INPUT.bin is little-endian: int32 N, B, M, dy, dx; then float32 y_o (dy), the B
 * observations (B x dy), the M log_prob rows (M x dx); then float64 the M log_probs sbi
 * computed for them (the largest difference is printed, so the timed work is the same).
 * Each point is repeated for SECONDS (at least once); the mean time per call is printed.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../engine/engine.h"

#define SEED 12345u

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int read_all(FILE *f, void *p, size_t size, size_t n)
{
    return fread(p, size, n, f) == n ? 0 : -1;
}

struct input {
    int n, b, m, dy, dx;
    float *y0, *ys, *rows;
    double *lp_ref;
};

static int load_input(const char *path, struct input *in)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    int32_t h[5];
    int rc = read_all(f, h, sizeof(int32_t), 5);
    if (rc == 0) {
        in->n = h[0], in->b = h[1], in->m = h[2], in->dy = h[3], in->dx = h[4];
        in->y0 = malloc(sizeof(float) * (size_t)in->dy);
        in->ys = malloc(sizeof(float) * (size_t)in->b * (size_t)in->dy);
        in->rows = malloc(sizeof(float) * (size_t)in->m * (size_t)in->dx);
        in->lp_ref = malloc(sizeof(double) * (size_t)in->m);
        rc = (!in->y0 || !in->ys || !in->rows || !in->lp_ref) ? -1
             : read_all(f, in->y0, sizeof(float), (size_t)in->dy) ||
                       read_all(f, in->ys, sizeof(float), (size_t)in->b * (size_t)in->dy) ||
                       read_all(f, in->rows, sizeof(float), (size_t)in->m * (size_t)in->dx) ||
                       read_all(f, in->lp_ref, sizeof(double), (size_t)in->m)
                   ? -1 : 0;
    }
    fclose(f);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s MODEL.safetensors INPUT.bin SECONDS\n", argv[0]);
        return 2;
    }
    double secs = atof(argv[3]);
    eng_blas_threads(1);
    char err[ENG_ERR_LEN];
    struct eng_model *m;
    if (eng_model_load(argv[1], &m, err) != ENG_OK) { /* checks sbi's test vectors */
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    struct input in;
    if (load_input(argv[2], &in) != 0) {
        fprintf(stderr, "%s: cannot read the input file\n", argv[2]);
        return 1;
    }
    const struct eng_info *info = eng_model_info(m);
    if (info->dims.x != in.dx || info->dims.y != in.dy) {
        fprintf(stderr, "dims of the model and the input differ\n");
        return 1;
    }
    struct eng_ws *ws = eng_ws_new();
    float *x = malloc(sizeof(float) * (size_t)in.n * (size_t)in.dx);
    double *lp = malloc(sizeof(double) * (size_t)(in.m > in.n ? in.m : in.n));
    if (!ws || !x || !lp || eng_ws_reserve(ws, m) != ENG_OK) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    const uint64_t max_draws = 1000000;

    /* sample: 1 x N */
    struct eng_accept acc = {0}, tot = {0};
    long calls = 0;
    double t0 = now(), el;
    do {
        if (eng_sample_prior(m, ws, in.y0, SEED, (uint32_t)calls, in.n, 1.0f, max_draws, x, NULL,
                             NULL, NULL, &acc, err) != ENG_OK || acc.accepted != (uint64_t)in.n) {
            fprintf(stderr, "sample: %s\n", acc.accepted != (uint64_t)in.n ? "short run" : err);
            return 1;
        }
        tot.drawn += acc.drawn, tot.accepted += acc.accepted;
        calls++;
        el = now() - t0;
    } while (el < secs);
    double t_sample = el / (double)calls;
    double acc_sample = (double)tot.accepted / (double)tot.drawn;

    /* sample_batched: B observations x N */
    tot = (struct eng_accept){0};
    calls = 0;
    t0 = now();
    do {
        for (int i = 0; i < in.b; i++) {
            if (eng_sample_prior(m, ws, in.ys + (size_t)i * (size_t)in.dy, SEED, (uint32_t)i, in.n,
                                 1.0f, max_draws, x, NULL, NULL, NULL, &acc, err) != ENG_OK ||
                acc.accepted != (uint64_t)in.n) {
                fprintf(stderr, "sample_batched: %s\n",
                        acc.accepted != (uint64_t)in.n ? "short run" : err);
                return 1;
            }
            tot.drawn += acc.drawn, tot.accepted += acc.accepted;
        }
        calls++;
        el = now() - t0;
    } while (el < secs);
    double t_batched = el / (double)calls;
    double acc_batched = (double)tot.accepted / (double)tot.drawn;

    /* log_prob: M rows, one observation */
    calls = 0;
    t0 = now();
    do {
        if (eng_log_prob(m, ws, in.m, in.rows, in.y0, 1, lp, err) != ENG_OK) {
            fprintf(stderr, "log_prob: %s\n", err);
            return 1;
        }
        calls++;
        el = now() - t0;
    } while (el < secs);
    double t_lp = el / (double)calls;
    double maxdiff = 0;
    for (int i = 0; i < in.m; i++) {
        double d = fabs(lp[i] - in.lp_ref[i]);
        maxdiff = d > maxdiff || isnan(d) ? d : maxdiff;
    }

    printf("{\"kernels\": \"%s\", \"params\": %lld, \"sample_s\": %.9f, \"sample_acceptance\": %.6f, "
           "\"batched_s\": %.9f, \"batched_acceptance\": %.6f, \"log_prob_s\": %.9f, "
           "\"log_prob_max_abs_diff\": %.3g}\n",
           info->kernels, info->n_params, t_sample, acc_sample, t_batched, acc_batched, t_lp,
           maxdiff);
    eng_ws_free(ws);
    eng_model_unref(m);
    free(x), free(lp), free(in.y0), free(in.ys), free(in.rows), free(in.lp_ref);
    return 0;
}
