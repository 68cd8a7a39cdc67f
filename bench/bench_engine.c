/*
 * bench_engine.c — engine throughput on a checkpoint: posterior sampling and log_prob at
 * batch 1, 64 and 4096 (rows/s and effective GFLOP/s) on one thread, then at batch 64 and
 * 4096 on 2 threads (each with its own workspace, both calling the engine at once on
 * independent batches; rows/s in total).  Prints JSON.  The machine's peaks come from
 * bench_sgemm.c.
 *
 *   bench_engine MODEL.safetensors [seconds-per-point] [--batches B1,B2,B3] [--threads 1|2]
 *                [--check FILE [--check-only]]
 *
 * --batches replaces 1,64,4096 (three sizes, at most 4096); --threads 1 leaves out the
 * two-thread runs.  --check FILE (written by bench/torch_img.py, layout in its
 * write_check_bin) holds latents z, observations y, PyTorch's reverse pass of z, points x
 * and PyTorch's log_prob of x: the engine's inverse and log_prob of the same inputs are
 * compared first (max abs diffs under "check"), then the timings use the file's
 * observation y_time and its x rows (repeated) as log_prob input; --check-only stops after
 * the comparison.
 *
 * Batch 1 is one call per row (the server's cost for a 1-row request).  Effective FLOPs are
 * 2 per parameter per row (a multiply and an add for every weight, as PyTorch does them
 * without precomputing the condition), so GFLOP/s compare directly.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../engine/engine.h"

#define MAXB 4096
#define THREADS 2

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* One timing loop: calls of op (0 sample, 1 log_prob) at batch b for `secs` seconds. */
struct job {
    const struct eng_model *m;
    int op, b, stream;
    double secs;
    const float *y;
    float *x;       /* MAXB x dx: log_prob input, sample output */
    double *lp;
    pthread_barrier_t *start;
    long rows;      /* out */
    double elapsed; /* out */
    int failed;     /* out */
};

static void *run_job(void *arg)
{
    struct job *j = arg;
    struct eng_ws *ws = eng_ws_new();
    char err[ENG_ERR_LEN];
    uint64_t next = 0;
    if (j->start)
        pthread_barrier_wait(j->start);
    double t0 = now();
    do {
        enum eng_status st;
        if (j->op == 0) {
            st = eng_sample(j->m, ws, j->y, 1, (uint32_t)j->stream, next, j->b, 1.0f, j->x,
                            NULL, NULL, NULL, err);
            next += (uint64_t)j->b;
        } else {
            st = eng_log_prob(j->m, ws, j->b, j->x, j->y, 1, j->lp, err);
        }
        if (st != ENG_OK) {
            fprintf(stderr, "%s\n", err);
            j->failed = 1;
            break;
        }
        j->rows += j->b;
        j->elapsed = now() - t0;
    } while (j->elapsed < j->secs);
    eng_ws_free(ws);
    return NULL;
}

/* Rows/s of `nt` threads running op at batch b at once (total), or -1 on failure. */
static double rate(const struct eng_model *m, int op, int b, int nt, double secs, float *const *x,
                   double *const *lp, const float *y)
{
    struct job jobs[THREADS];
    pthread_t th[THREADS];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)nt);
    for (int t = 0; t < nt; t++) {
        jobs[t] = (struct job){.m = m, .op = op, .b = b, .stream = t, .secs = secs, .y = y,
                               .x = x[t], .lp = lp[t], .start = nt > 1 ? &start : NULL};
        if (nt > 1)
            pthread_create(&th[t], NULL, run_job, &jobs[t]);
        else
            run_job(&jobs[t]);
    }
    double rows = 0, el = 0;
    for (int t = 0; t < nt; t++) {
        if (nt > 1)
            pthread_join(th[t], NULL);
        if (jobs[t].failed)
            return -1;
        rows += (double)jobs[t].rows;
        el = jobs[t].elapsed > el ? jobs[t].elapsed : el;
    }
    pthread_barrier_destroy(&start);
    return rows / el;
}

/* The --check file: n rows of z, y, PyTorch's x = inverse(z, y), x_lp and log_prob(x_lp, y),
 * then the timing observation y_time.  Heap arrays owned by the struct (check_free). */
struct check {
    int n, dx, dy;
    float *z, *y, *x, *x_lp, *y_time;
    double *lp;
};

static void check_free(struct check *c)
{
    free(c->z), free(c->y), free(c->x), free(c->x_lp), free(c->y_time), free(c->lp);
}

static int read_floats(FILE *f, size_t n, float **out)
{
    *out = malloc(sizeof(float) * (n ? n : 1));
    return *out && fread(*out, sizeof(float), n, f) == n ? 0 : -1;
}

static int check_read(const char *path, struct check *c)
{
    FILE *f = fopen(path, "rb");
    int32_t h[3];
    *c = (struct check){0};
    if (!f)
        return -1;
    int rc = fread(h, sizeof h, 1, f) == 1 && h[0] > 0 && h[1] > 0 && h[2] >= 0 ? 0 : -1;
    if (rc == 0) {
        c->n = h[0], c->dx = h[1], c->dy = h[2];
        size_t nx = (size_t)c->n * (size_t)c->dx, ny = (size_t)c->n * (size_t)c->dy;
        rc = read_floats(f, nx, &c->z) || read_floats(f, ny, &c->y) ||
             read_floats(f, nx, &c->x) || read_floats(f, nx, &c->x_lp) ? -1 : 0;
        c->lp = rc ? NULL : malloc(sizeof(double) * (size_t)c->n);
        if (rc == 0 && (!c->lp || fread(c->lp, sizeof(double), (size_t)c->n, f) != (size_t)c->n ||
                        read_floats(f, (size_t)c->dy, &c->y_time)))
            rc = -1;
    }
    fclose(f);
    return rc;
}

static double max_abs_diff(size_t n, const float *a, const float *b)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        m = d > m || d != d ? d : m;
    }
    return m;
}

/* Max abs differences of the engine's inverse and log_prob from the file's (PyTorch's)
 * outputs on the same inputs, and of eng_sample (the timed call) from eng_inverse of the
 * latents it draws (eng_rng_normal_row); -1 on failure.  The latent is as wide as x. */
static int check_run(const struct eng_model *m, const struct check *c, double *d_sample,
                     double *d_lp, double *d_draw)
{
    struct eng_ws *ws = eng_ws_new();
    char err[ENG_ERR_LEN];
    size_t nx = (size_t)c->n * (size_t)c->dx;
    float *x = malloc(sizeof(float) * nx), *xs = malloc(sizeof(float) * nx);
    float *z = malloc(sizeof(float) * nx);
    double *lp = malloc(sizeof(double) * (size_t)c->n);
    int rc = -1;
    if (!ws || !x || !xs || !z || !lp)
        goto out;
    for (int i = 0; i < c->n; i++)
        eng_rng_normal_row(1, 0, (uint64_t)i, c->dx, z + (size_t)i * c->dx);
    if (eng_sample(m, ws, c->y_time, 1, 0, 0, c->n, 1.0f, xs, NULL, NULL, NULL, err) != ENG_OK ||
        eng_inverse(m, ws, c->n, z, c->y_time, 1, x, NULL, NULL, NULL, err) != ENG_OK) {
        fprintf(stderr, "%s\n", err);
        goto out;
    }
    *d_draw = max_abs_diff(nx, xs, x);
    if (eng_inverse(m, ws, c->n, c->z, c->y, c->n, x, NULL, NULL, NULL, err) != ENG_OK ||
        eng_log_prob(m, ws, c->n, c->x_lp, c->y, c->n, lp, err) != ENG_OK) {
        fprintf(stderr, "%s\n", err);
        goto out;
    }
    *d_sample = *d_lp = 0;
    *d_sample = max_abs_diff(nx, x, c->x);
    for (int i = 0; i < c->n; i++) {
        double d = fabs(lp[i] - c->lp[i]);
        *d_lp = d > *d_lp || d != d ? d : *d_lp;
    }
    rc = 0;
out:
    free(x), free(xs), free(z), free(lp);
    eng_ws_free(ws);
    return rc;
}

int main(int argc, char **argv)
{
    const char *model = NULL, *check_path = NULL;
    double secs = 1.0;
    int batches[3] = {1, 64, MAXB}, max_threads = THREADS, npos = 0, check_only = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--batches") && i + 1 < argc) {
            if (sscanf(argv[++i], "%d,%d,%d", &batches[0], &batches[1], &batches[2]) != 3)
                batches[0] = 0;
        } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            max_threads = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--check") && i + 1 < argc) {
            check_path = argv[++i];
        } else if (!strcmp(argv[i], "--check-only")) {
            check_only = 1;
        } else if (npos == 0) {
            model = argv[i], npos++;
        } else if (npos == 1) {
            secs = atof(argv[i]), npos++;
        } else {
            model = NULL;
            break;
        }
    }
    int bad_batch = 0;
    for (int i = 0; i < 3; i++)
        bad_batch |= batches[i] < 1 || batches[i] > MAXB;
    if (!model || bad_batch || max_threads < 1 || max_threads > THREADS ||
        (check_only && !check_path)) {
        fprintf(stderr, "usage: %s MODEL.safetensors [seconds] [--batches B1,B2,B3 (<= %d)] "
                        "[--threads 1|2] [--check FILE [--check-only]]\n", argv[0], MAXB);
        return 2;
    }
    eng_blas_threads(1);
    char err[ENG_ERR_LEN];
    struct eng_model *m;
    if (eng_model_load(model, &m, err) != ENG_OK) { /* checks the exporter's test vectors */
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    const struct eng_info *info = eng_model_info(m);
    double flops = 2.0 * (double)info->n_params; /* ~ 2 FLOPs per weight per row */
    int dx = info->dims.x, dy = info->dims.y;
    struct check chk = {0};
    double d_sample = 0, d_lp = 0, d_draw = 0;
    if (check_path) {
        if (check_read(check_path, &chk) != 0) {
            fprintf(stderr, "%s: cannot read a check file\n", check_path);
            return 1;
        }
        if (chk.dx != dx || chk.dy != dy) {
            fprintf(stderr, "%s: rows of %d and %d values, the model has %d and %d\n",
                    check_path, chk.dx, chk.dy, dx, dy);
            return 1;
        }
        if (check_run(m, &chk, &d_sample, &d_lp, &d_draw) != 0)
            return 1;
        if (check_only) {
            printf("{\"model\": \"%s\", \"check\": {\"rows\": %d, \"sample\": %.3g, "
                   "\"log_prob\": %.3g, \"draw\": %.3g}}\n", model, chk.n, d_sample, d_lp,
                   d_draw);
            check_free(&chk);
            eng_model_unref(m);
            return 0;
        }
    }
    float *y = calloc((size_t)(dy ? dy : 1), sizeof(float)), *x[THREADS];
    double *lp[THREADS];
    for (int i = 0; i < dy; i++)
        y[i] = check_path ? chk.y_time[i] : (float)((i * 37) % 11) / 11.0f - 0.5f;
    for (int t = 0; t < THREADS; t++) {
        x[t] = malloc(sizeof(float) * (size_t)dx * MAXB);
        lp[t] = malloc(sizeof(double) * MAXB);
        for (int i = 0; i < MAXB; i++) {
            if (check_path)
                memcpy(x[t] + (size_t)i * dx, chk.x_lp + (size_t)(i % chk.n) * dx,
                       sizeof(float) * (size_t)dx);
            else
                eng_rng_normal_row(3, (uint64_t)t, (uint64_t)i, dx, x[t] + (size_t)i * dx);
        }
    }
    printf("{\"model\": \"%s\", \"params\": %lld, \"flops_per_row\": %.0f", model,
           info->n_params, flops);
    if (check_path)
        printf(", \"check\": {\"rows\": %d, \"sample\": %.3g, \"log_prob\": %.3g, "
               "\"draw\": %.3g}", chk.n, d_sample, d_lp, d_draw);
    static const char *const ops[] = {"sample", "log_prob"};
    for (int nt = 1; nt <= max_threads; nt++) {
        printf(", \"threads%d\": {", nt);
        for (int op = 0; op < 2; op++) {
            printf("%s\"%s\": {", op ? ", " : "", ops[op]);
            int b0 = nt > 1 ? 1 : 0; /* several threads: batch 64 and 4096 only */
            for (int bi = b0; bi < 3; bi++) {
                double r = rate(m, op, batches[bi], nt, secs, x, lp, y);
                if (r < 0)
                    return 1;
                printf("%s\"%d\": {\"per_s\": %.1f, \"gflops\": %.2f}", bi > b0 ? ", " : "",
                       batches[bi], r, r * flops / 1e9);
            }
            printf("}");
        }
        printf("}");
    }
    printf("}\n");
    eng_model_unref(m);
    for (int t = 0; t < THREADS; t++)
        free(x[t]), free(lp[t]);
    free(y);
    check_free(&chk);
    return 0;
}
