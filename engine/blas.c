/*
 * blas.c — the only file that calls OpenBLAS.  The engine computes with its own kernels
 * (kern.h) and la.c; OpenBLAS is here as the benchmarks' reference sgemm.
 */
#include "blas.h"
#include "engine.h"

#include <cblas.h>
#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>
#include <stdlib.h>

double blas_sgemm_gflops(int size, double seconds)
{
    size_t nn = (size_t)size * size;
    float *a = malloc(sizeof(float) * nn), *b = malloc(sizeof(float) * nn),
          *c = malloc(sizeof(float) * nn);
    if (!a || !b || !c) {
        free(a), free(b), free(c);
        return 0.0;
    }
    for (size_t i = 0; i < nn; i++) {
        a[i] = (float)((i * 7) % 13) * 0.01f;
        b[i] = (float)((i * 5) % 11) * 0.01f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, size, size, size, 1.0f, a, size, b,
                size, 0.0f, c, size);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    long reps = 0;
    double el = 0.0;
    do {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, size, size, size, 1.0f, a, size, b,
                    size, 0.0f, c, size);
        reps++;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        el = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    } while (el < seconds);
    free(a), free(b), free(c);
    return 2.0 * (double)size * size * size * (double)reps / el / 1e9;
}

void eng_blas_threads(int n)
{
    openblas_set_num_threads(n < 1 ? 1 : n);
}
