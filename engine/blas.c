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

void blas_linear_f64(int n, int out, int in, const double *X, int ldx, const double *W, int ldw,
                     double beta, double *Y, int ldy)
{
    if (n <= 0 || out <= 0)
        return;
    if (in <= 0) {
        if (beta == 0.0)
            for (int i = 0; i < n; i++)
                memset(Y + (size_t)i * ldy, 0, sizeof(double) * out);
        return;
    }
    if (n == 1) {
        cblas_dgemv(CblasRowMajor, CblasNoTrans, out, in, 1.0, W, ldw, X, 1, beta, Y, 1);
        return;
    }
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.0, X, ldx, W, ldw, beta, Y,
                ldy);
}

void blas_gemm_f64(int m, int n, int k, const double *A, int lda, const double *B, int ldb,
                   double beta, double *C, int ldc)
{
    if (m <= 0 || n <= 0)
        return;
    if (k <= 0) {
        if (beta == 0.0)
            for (int i = 0; i < m; i++)
                memset(C + (size_t)i * ldc, 0, sizeof(double) * n);
        return;
    }
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0, A, lda, B, ldb, beta, C,
                ldc);
}

void blas_gemv_f64(bool trans, int m, int n, const double *A, int lda, const double *x, double *y)
{
    if (m <= 0 || n <= 0)
        return;
    cblas_dgemv(CblasRowMajor, trans ? CblasTrans : CblasNoTrans, m, n, 1.0, A, lda, x, 1, 0.0, y,
                1);
}

void blas_ger_f64(int m, int n, double alpha, const double *x, const double *y, double *A, int lda)
{
    if (m <= 0 || n <= 0)
        return;
    cblas_dger(CblasRowMajor, m, n, alpha, x, 1, y, 1, A, lda);
}

/* ---- singular values -------------------------------------------------------------------- */

int la_singular_values(int rows, int cols, const double *A, double *sv, double *work)
{
    /* Work on B with n = min(rows, cols) columns of length m = max(rows, cols), stored
     * column by column (B = A if rows >= cols, else A^T): its singular values are A's. */
    const bool tr = rows < cols;
    const int m = tr ? cols : rows, n = tr ? rows : cols;
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++)
            work[(size_t)j * m + i] = tr ? A[(size_t)j * cols + i] : A[(size_t)i * cols + j];
    int sweeps = -1;
    for (int sweep = 1; sweep <= 60; sweep++) {
        int rotated = 0;
        for (int p = 0; p < n - 1; p++)
            for (int q = p + 1; q < n; q++) {
                double *bp = work + (size_t)p * m, *bq = work + (size_t)q * m;
                double al = 0.0, be = 0.0, ga = 0.0;
                for (int i = 0; i < m; i++) {
                    al += bp[i] * bp[i];
                    be += bq[i] * bq[i];
                    ga += bp[i] * bq[i];
                }
                if (!isfinite(al + be + ga))
                    goto done;
                if (fabs(ga) <= 4.0 * DBL_EPSILON * sqrt(al * be) || ga == 0.0)
                    continue;
                rotated = 1;
                double zeta = (be - al) / (2.0 * ga);
                double t = (zeta >= 0 ? 1.0 : -1.0) / (fabs(zeta) + sqrt(1.0 + zeta * zeta));
                double c = 1.0 / sqrt(1.0 + t * t), s = c * t;
                for (int i = 0; i < m; i++) {
                    double u = bp[i], v = bq[i];
                    bp[i] = c * u - s * v;
                    bq[i] = s * u + c * v;
                }
            }
        if (!rotated) {
            sweeps = sweep;
            break;
        }
    }
done:
    for (int j = 0; j < n; j++) {
        double s2 = 0.0;
        for (int i = 0; i < m; i++)
            s2 += work[(size_t)j * m + i] * work[(size_t)j * m + i];
        sv[j] = sqrt(s2);
    }
    for (int i = 1; i < n; i++) /* insertion sort, descending */
        for (int j = i; j > 0 && sv[j] > sv[j - 1]; j--) {
            double t = sv[j];
            sv[j] = sv[j - 1];
            sv[j - 1] = t;
        }
    return sweeps;
}

size_t la_norm2_upper_work(int rows, int cols)
{
    size_t n = (size_t)(rows < cols ? rows : cols);
    size_t jac = (size_t)rows * cols + n;
    size_t gram = 2 * n * n;
    return (jac > gram ? jac : gram) + 1;
}

static double frob(size_t n, const double *a)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += a[i] * a[i];
    return sqrt(s);
}

double la_norm2_upper(int rows, int cols, const double *A, double *work)
{
    const int n = rows < cols ? rows : cols;
    const double margin = 1.0 + 16.0 * (double)(rows > cols ? rows : cols) * DBL_EPSILON;
    if (n <= 0)
        return 0.0;
    for (size_t i = 0; i < (size_t)rows * cols; i++)
        if (!isfinite(A[i]))
            return INFINITY;
    if (n <= LA_JACOBI_MAX) {
        double *sv = work + (size_t)rows * cols;
        if (la_singular_values(rows, cols, A, sv, work) < 0)
            return INFINITY;
        return sv[0] * margin;
    }
    /* Gram iteration on the smaller side.  G_0 = A^T A (or A A^T), scaled to unit
     * Frobenius norm with log-scale bookkeeping: ||A||_2^(2^(t+1)) <= ||G_t||_F. */
    double *G = work, *H = work + (size_t)n * n;
    if (rows >= cols)
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, n, rows, 1.0, A, cols, A, cols,
                    0.0, G, n);
    else
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, cols, 1.0, A, cols, A, cols,
                    0.0, G, n);
    double logscale = 0.0; /* log of the factor divided out of G_t so far, weighted */
    double f = frob((size_t)n * n, G);
    if (!(f > 0.0))
        return 0.0;
    /* log ||A||_2 <= (log ||G_t||_F + L_t) / 2^(t+1), with L_t the accumulated scales. */
    double best = 0.5 * log(f);
    for (int t = 1; t <= 40; t++) {
        double fn = frob((size_t)n * n, G);
        for (size_t i = 0; i < (size_t)n * n; i++)
            G[i] /= fn;
        logscale = 2.0 * (logscale + log(fn)); /* G_{t} = (G_{t-1}/fn)^2: scales square */
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0, G, n, G, n, 0.0, H,
                    n);
        double *tmp = G;
        G = H, H = tmp;
        double fnew = frob((size_t)n * n, G);
        double bound = (log(fnew) + logscale) / ldexp(1.0, t + 1);
        if (!isfinite(bound) || bound >= best - 1e-13) {
            if (isfinite(bound) && bound < best)
                best = bound;
            break;
        }
        best = bound;
    }
    return exp(best) * margin;
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
