/*
 * server_engine.c — the engine alone doing the work of one server request, for
 * `make bench-server` (bench/server.sh): posterior sampling of 1 observation x N samples
 * (eng_sample, as POST /v1/models/{m}/sample with outputs ["samples"]) and forward of
 * batch 1 (eng_forward, as POST /v1/models/{m}/forward).
 *
 *   server_engine MODEL SAMPLES THREADS SECONDS
 *
 * Prints one JSON line per operation: per-call latency on one thread (p50, p99 in us),
 * calls/s with THREADS threads each with its own workspace (the server's worker layout),
 * and the process CPU time per call in that phase (robust on a shared machine), OpenBLAS
 * single-threaded.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../engine/engine.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static double cpu_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

struct job {
    const struct eng_model *m;
    int op; /* 0 sample, 1 forward */
    int n;
    double seconds;
    long calls;
};

static float g_y[1024], g_x[1024];

static int call(const struct eng_model *m, struct eng_ws *ws, int op, int n, float *out,
                double *ld, uint64_t seed)
{
    char err[ENG_ERR_LEN];
    const struct eng_info *info = eng_model_info(m);
    if (op == 0)
        return eng_sample(m, ws, info->dims.y ? g_y : NULL, seed, 0, 0, n, 1.0f, out, NULL,
                          NULL, NULL, err) != ENG_OK;
    return eng_forward(m, ws, 1, g_x, info->dims.y ? g_y : NULL, info->dims.y ? 1 : 0, out,
                       out + 4096, ld, err) != ENG_OK;
}

static void *loop(void *arg)
{
    struct job *j = arg;
    struct eng_ws *ws = eng_ws_new();
    const struct eng_info *info = eng_model_info(j->m);
    float *out = malloc(sizeof(float) * ((size_t)j->n * info->dims.x + 8192));
    double ld[8];
    double end = now() + j->seconds;
    uint64_t seed = 1;
    while (now() < end) {
        for (int k = 0; k < 16; k++)
            if (call(j->m, ws, j->op, j->n, out, ld, seed++))
                abort();
        j->calls += 16;
    }
    free(out);
    eng_ws_free(ws);
    return NULL;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: %s MODEL SAMPLES THREADS SECONDS\n", argv[0]);
        return 2;
    }
    eng_blas_threads(1);
    struct eng_model *m;
    char err[ENG_ERR_LEN];
    if (eng_model_load(argv[1], &m, err) != ENG_OK) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    int n = atoi(argv[2]), threads = atoi(argv[3]);
    double secs = atof(argv[4]);
    const struct eng_info *info = eng_model_info(m);
    for (int i = 0; i < 1024; i++)
        g_y[i] = g_x[i] = (float)(0.1 * sin(i));
    static const char *const names[] = {"sample", "forward"};
    for (int op = 0; op < 2; op++) {
        int rows = op == 0 ? n : 1;
        /* latency on one thread */
        struct eng_ws *ws = eng_ws_new();
        float *out = malloc(sizeof(float) * ((size_t)rows * info->dims.x + 8192));
        double ld[8];
        int reps = 0;
        double *t = malloc(sizeof(double) * 200000);
        double end = now() + secs;
        while (now() < end && reps < 200000) {
            double t0 = now();
            if (call(m, ws, op, rows, out, ld, (uint64_t)reps))
                abort();
            t[reps++] = now() - t0;
        }
        qsort(t, (size_t)reps, sizeof *t, cmp);
        double p50 = t[reps / 2] * 1e6, p99 = t[(int)(reps * 0.99)] * 1e6;
        free(t);
        free(out);
        eng_ws_free(ws);
        /* throughput with `threads` threads */
        pthread_t th[64];
        struct job j[64];
        double c0 = cpu_now();
        for (int i = 0; i < threads && i < 64; i++) {
            j[i] = (struct job){m, op, rows, secs, 0};
            pthread_create(&th[i], NULL, loop, &j[i]);
        }
        long calls = 0;
        for (int i = 0; i < threads && i < 64; i++) {
            pthread_join(th[i], NULL);
            calls += j[i].calls;
        }
        double cpu = cpu_now() - c0;
        printf("{\"op\":\"%s\",\"rows\":%d,\"p50_us\":%.2f,\"p99_us\":%.2f,\"threads\":%d,"
               "\"calls_per_s\":%.1f,\"cpu_us_per_call\":%.2f}\n", names[op], rows, p50, p99,
               threads, (double)calls / secs, cpu * 1e6 / (double)(calls ? calls : 1));
        fflush(stdout);
    }
    eng_model_unref(m);
    return 0;
}
