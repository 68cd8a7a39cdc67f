/*
 * bench_engine.c — engine throughput on a checkpoint: posterior sampling and log_prob
 * at batch 1, 64 and 4096 (samples/s and effective GFLOP/s), single-threaded, next to
 * this machine's single-thread sgemm peak measured in the same run.  Prints JSON.
 *
 *   bench_engine MODEL.safetensors [seconds-per-point]
 *
 * Effective FLOPs are 2 per parameter per row (a multiply and an add for every weight, as
 * PyTorch does them without precomputing the condition), so GFLOP/s compare directly.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../engine/blas.h"
#include "../engine/engine.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
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
    if (eng_model_load(argv[1], &m, err) != ENG_OK) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    const struct eng_info *info = eng_model_info(m);
    double peak = blas_sgemm_gflops(1024, secs);
    double flops = 2.0 * (double)info->n_params; /* ~ 2 FLOPs per weight per row */
    struct eng_ws *ws = eng_ws_new();
    const int batches[] = {1, 64, 4096};
    int dx = info->dims.x, dy = info->dims.y;
    float *y = calloc((size_t)(dy ? dy : 1) * 4096, sizeof(float));
    float *x = malloc(sizeof(float) * (size_t)dx * 4096);
    double *lp = malloc(sizeof(double) * 4096);
    for (int i = 0; i < 4096; i++)
        eng_rng_normal_row(3, 0, (uint64_t)i, dx, x + (size_t)i * dx);
    for (int i = 0; i < dy * 4096; i++)
        y[i] = (float)((i * 37) % 11) / 11.0f - 0.5f;
    printf("{\"model\": \"%s\", \"params\": %lld, \"flops_per_row\": %.0f, \"sgemm_peak_gflops\": %.2f",
           argv[1], info->n_params, flops, peak);
    for (int op = 0; op < 2; op++) {
        printf(", \"%s\": {", op == 0 ? "sample" : "log_prob");
        for (int bi = 0; bi < 3; bi++) {
            int b = batches[bi];
            uint64_t next = 0;
            long reps = 0;
            double t0 = now(), el;
            do {
                enum eng_status st;
                if (op == 0) {
                    st = eng_sample(m, ws, y, 1, 0, next, b, 1.0f, x, NULL, NULL, NULL, err);
                    next += (uint64_t)b;
                } else {
                    st = eng_log_prob(m, ws, b, x, y, 1, lp, err);
                }
                if (st != ENG_OK) {
                    fprintf(stderr, "%s\n", err);
                    return 1;
                }
                reps++;
                el = now() - t0;
            } while (el < secs);
            double rate = (double)b * (double)reps / el;
            printf("%s\"%d\": {\"per_s\": %.1f, \"gflops\": %.2f}", bi ? ", " : "", b, rate,
                   rate * flops / 1e9);
        }
        printf("}");
    }
    printf("}\n");
    eng_ws_free(ws);
    eng_model_unref(m);
    free(y), free(x), free(lp);
    return 0;
}
