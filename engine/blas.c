/*
 * blas.c — the only file that calls OpenBLAS; also the small double-precision linear
 * algebra used at load time (LU, inverse, log|det|, spectral norm).
 * See blas.h for the shape contracts.
 */
#include "blas.h"
#include "engine.h"

#include <cblas.h>
#include <math.h>
#include <string.h>
#include <time.h>
#include <stdlib.h>

void blas_linear(int n, int out, int in, const float *X, int ldx, const float *W, int ldw,
                 float beta, float *Y, int ldy)
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
        /* y = W x (+ beta y): a gemv avoids sgemm's packing overhead for one row. */
        cblas_sgemv(CblasRowMajor, CblasNoTrans, out, in, 1.0f, W, ldw, X, 1, beta, Y, 1);
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.0f, X, ldx, W, ldw, beta,
                Y, ldy);
}

void blas_matmul(int n, int out, int in, const float *X, int ldx, const float *M, int ldm,
                 float beta, float *Y, int ldy)
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
        cblas_sgemv(CblasRowMajor, CblasTrans, in, out, 1.0f, M, ldm, X, 1, beta, Y, 1);
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, out, in, 1.0f, X, ldx, M, ldm, beta,
                Y, ldy);
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

/* ---- double-precision dense algebra ---------------------------------------------------- */

int la_lu(int n, double *A, int *piv)
{
    double scale = 0.0;
    for (int i = 0; i < n * n; i++)
        scale = fmax(scale, fabs(A[i]));
    if (!(scale > 0.0) || !isfinite(scale))
        return -1;
    for (int k = 0; k < n; k++) {
        int p = k;
        double best = fabs(A[(size_t)k * n + k]);
        for (int i = k + 1; i < n; i++) {
            double v = fabs(A[(size_t)i * n + k]);
            if (v > best) {
                best = v;
                p = i;
            }
        }
        piv[k] = p;
        if (best <= scale * 1e-13)
            return -1;
        if (p != k)
            for (int j = 0; j < n; j++) {
                double t = A[(size_t)k * n + j];
                A[(size_t)k * n + j] = A[(size_t)p * n + j];
                A[(size_t)p * n + j] = t;
            }
        double inv = 1.0 / A[(size_t)k * n + k];
        for (int i = k + 1; i < n; i++) {
            double f = A[(size_t)i * n + k] * inv;
            A[(size_t)i * n + k] = f;
            if (f != 0.0)
                for (int j = k + 1; j < n; j++)
                    A[(size_t)i * n + j] -= f * A[(size_t)k * n + j];
        }
    }
    return 0;
}

double la_lu_logabsdet(int n, const double *LU)
{
    double s = 0.0;
    for (int k = 0; k < n; k++)
        s += log(fabs(LU[(size_t)k * n + k]));
    return s;
}

void la_lu_solve(int n, const double *LU, const int *piv, double *b)
{
    for (int k = 0; k < n; k++)
        if (piv[k] != k) {
            double t = b[k];
            b[k] = b[piv[k]];
            b[piv[k]] = t;
        }
    for (int i = 1; i < n; i++) {
        double s = b[i];
        for (int j = 0; j < i; j++)
            s -= LU[(size_t)i * n + j] * b[j];
        b[i] = s;
    }
    for (int i = n - 1; i >= 0; i--) {
        double s = b[i];
        for (int j = i + 1; j < n; j++)
            s -= LU[(size_t)i * n + j] * b[j];
        b[i] = s / LU[(size_t)i * n + i];
    }
}

int la_inverse(int n, const double *A, double *Ainv, double *work, int *piv)
{
    memcpy(work, A, sizeof(double) * (size_t)n * n);
    if (la_lu(n, work, piv) != 0)
        return -1;
    /* Solve column by column: column j of A^{-1} = A^{-1} e_j. */
    for (int j = 0; j < n; j++) {
        double *b = Ainv + (size_t)j * n; /* row j of Ainv temporarily holds column j */
        for (int i = 0; i < n; i++)
            b[i] = (i == j) ? 1.0 : 0.0;
        la_lu_solve(n, work, piv, b);
    }
    /* Rows now hold columns: transpose in place. */
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) {
            double t = Ainv[(size_t)i * n + j];
            Ainv[(size_t)i * n + j] = Ainv[(size_t)j * n + i];
            Ainv[(size_t)j * n + i] = t;
        }
    return 0;
}

double la_spectral_norm(int rows, int cols, const double *A, double *work)
{
    double *v = work;          /* cols */
    double *u = work + cols;   /* rows */
    /* Deterministic start: all ones plus a small ramp so it is not orthogonal to the top
     * singular vector by accident. */
    for (int j = 0; j < cols; j++)
        v[j] = 1.0 + 0.01 * j;
    double sigma = 0.0;
    for (int it = 0; it < 10000; it++) {
        double nv = 0.0;
        for (int j = 0; j < cols; j++)
            nv += v[j] * v[j];
        nv = sqrt(nv);
        if (nv == 0.0)
            return 0.0;
        for (int j = 0; j < cols; j++)
            v[j] /= nv;
        for (int i = 0; i < rows; i++) {
            double s = 0.0;
            for (int j = 0; j < cols; j++)
                s += A[(size_t)i * cols + j] * v[j];
            u[i] = s;
        }
        for (int j = 0; j < cols; j++) {
            double s = 0.0;
            for (int i = 0; i < rows; i++)
                s += A[(size_t)i * cols + j] * u[i];
            v[j] = s;
        }
        double nu = 0.0;
        for (int j = 0; j < cols; j++)
            nu += v[j] * v[j];
        double next = sqrt(sqrt(nu)); /* ||A^T A v|| = sigma^2 */
        if (it > 2 && fabs(next - sigma) <= 1e-12 * next) {
            sigma = next;
            break;
        }
        sigma = next;
    }
    return sigma;
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
