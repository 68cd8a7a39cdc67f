/*
 * blas.c — the only file that calls OpenBLAS; also the small double-precision linear
 * algebra used at load time (LU, inverse, log|det|, spectral norm).
 * See blas.h for the shape contracts.
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

/* Y = X op(B) + beta Y with op(B) = B^T (B is out x in, a torch weight) or B (in x out). */
static void gemm_rows(int n, int out, int in, const float *X, int ldx, const float *B, int ldb,
                      bool b_is_weight, float beta, float *Y, int ldy)
{
    if (n <= 0 || out <= 0)
        return;
    if (in <= 0) {
        if (beta == 0.0f)
            for (int i = 0; i < n; i++)
                memset(Y + (size_t)i * ldy, 0, sizeof(float) * out);
        return;
    }
    if (n == 1) {
        /* one row: a gemv avoids sgemm's packing overhead */
        if (b_is_weight)
            cblas_sgemv(CblasRowMajor, CblasNoTrans, out, in, 1.0f, B, ldb, X, 1, beta, Y, 1);
        else
            cblas_sgemv(CblasRowMajor, CblasTrans, in, out, 1.0f, B, ldb, X, 1, beta, Y, 1);
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, b_is_weight ? CblasTrans : CblasNoTrans, n, out, in,
                1.0f, X, ldx, B, ldb, beta, Y, ldy);
}

void blas_linear(int n, int out, int in, const float *X, int ldx, const float *W, int ldw,
                 float beta, float *Y, int ldy)
{
    gemm_rows(n, out, in, X, ldx, W, ldw, true, beta, Y, ldy);
}

void blas_matmul(int n, int out, int in, const float *X, int ldx, const float *M, int ldm,
                 float beta, float *Y, int ldy)
{
    gemm_rows(n, out, in, X, ldx, M, ldm, false, beta, Y, ldy);
}

void blas_ref_linear(int n, int out, int in, const float *X, int ldx, const float *W, int ldw,
                     float beta, float *Y, int ldy)
{
    for (int i = 0; i < n; i++)
        for (int o = 0; o < out; o++) {
            double acc = beta != 0.0f ? (double)Y[(size_t)i * ldy + o] : 0.0;
            for (int k = 0; k < in; k++)
                acc += (double)X[(size_t)i * ldx + k] * (double)W[(size_t)o * ldw + k];
            Y[(size_t)i * ldy + o] = (float)acc;
        }
}

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
