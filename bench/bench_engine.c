/*
 * bench_engine.c — engine throughput on a checkpoint: posterior sampling and log_prob at
 * batch 1, 64 and 4096 (rows/s and effective GFLOP/s) on one thread, then at batch 64 and
 * 4096 on 2 threads (each with its own workspace, both calling the engine at once on
 * independent batches; rows/s in total).  Prints JSON.  The machine's peaks come from
 * bench_sgemm.c.
 *
 *   bench_engine MODEL.safetensors [seconds-per-point]
 *
 * Batch 1 is one call per row (the server's cost for a 1-row request).  Effective FLOPs are
 * 2 per parameter per row (a multiply and an add for every weight, as PyTorch does them
 * without precomputing the condition), so GFLOP/s compare directly.
 */
#include <pthread.h>
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

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.safetensors [seconds]\n", argv[0]);
        return 2;
    }
    double secs = argc > 2 ? atof(argv[2]) : 1.0;
    eng_blas_threads(1);
    char err[ENG_ERR_LEN];
    struct eng_model *m;
    if (eng_model_load(argv[1], &m, err) != ENG_OK) { /* checks the exporter's test vectors */
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    const struct eng_info *info = eng_model_info(m);
    double flops = 2.0 * (double)info->n_params; /* ~ 2 FLOPs per weight per row */
    int dx = info->dims.x, dy = info->dims.y;
    float *y = calloc((size_t)(dy ? dy : 1), sizeof(float)), *x[THREADS];
    double *lp[THREADS];
    for (int i = 0; i < dy; i++)
        y[i] = (float)((i * 37) % 11) / 11.0f - 0.5f;
    for (int t = 0; t < THREADS; t++) {
        x[t] = malloc(sizeof(float) * (size_t)dx * MAXB);
        lp[t] = malloc(sizeof(double) * MAXB);
        for (int i = 0; i < MAXB; i++)
            eng_rng_normal_row(3, (uint64_t)t, (uint64_t)i, dx, x[t] + (size_t)i * dx);
    }
    printf("{\"model\": \"%s\", \"params\": %lld, \"flops_per_row\": %.0f", argv[1],
           info->n_params, flops);
    static const char *const ops[] = {"sample", "log_prob"};
    static const int batches[] = {1, 64, MAXB};
    for (int nt = 1; nt <= THREADS; nt++) {
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
    return 0;
}
