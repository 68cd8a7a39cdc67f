/*
 * blas.h — the engine's only door to OpenBLAS/LAPACK, plus the small dense linear algebra
 * (LU, inverse, log|det|, SVD-free spectral norm) done in double for load-time checks.
 *
 * Shapes follow torch: a Linear weight W is (out, in), row-major; a batch X is (n, in).
 * blas_linear computes Y = X W^T (+ beta Y): the kernel every subnet layer uses.
 * The naive reference versions (blas_ref_*) exist so tests can check the fast path.
 */
#ifndef INNSERVE_BLAS_H
#define INNSERVE_BLAS_H

#include <stdbool.h>
#include <stddef.h>

/* Y (n x out, row stride ldy) = X (n x in, stride ldx) * W^T (W: out x in, stride ldw)
 * + beta * Y.  beta is 0 or 1. */
void blas_linear(int n, int out, int in, const float *X, int ldx, const float *W, int ldw,
                 float beta, float *Y, int ldy);
/* Y (n x out) = X (n x in) * M (in x out, stride ldm) + beta * Y. */
void blas_matmul(int n, int out, int in, const float *X, int ldx, const float *M, int ldm,
                 float beta, float *Y, int ldy);
/* Same contracts, plain loops in double accumulation; for tests. */
void blas_ref_linear(int n, int out, int in, const float *X, int ldx, const float *W, int ldw,
                     float beta, float *Y, int ldy);

/* Double-precision helpers on small square matrices (row-major n x n).  Return 0 on
 * success, -1 if the matrix is singular to working precision.  No allocation beyond
 * what the caller passes: `work` must hold n*n doubles and `piv` n ints. */
int la_lu(int n, double *A, int *piv);                 /* in place, partial pivoting */
double la_lu_logabsdet(int n, const double *LU);       /* after la_lu */
void la_lu_solve(int n, const double *LU, const int *piv, double *b); /* b <- A^{-1} b */
int la_inverse(int n, const double *A, double *Ainv, double *work, int *piv);
/* Largest singular value of the (rows x cols) matrix A, by power iteration on A^T A in
 * double run to relative convergence 1e-12 (at most 10000 iterations); `work` holds
 * rows + cols doubles. */
double la_spectral_norm(int rows, int cols, const double *A, double *work);
/* Smallest singular value estimate is not needed; condition numbers use the inverse's
 * spectral norm. */

/* Double-precision twin of blas_linear (cblas_dgemm / dgemv): Y = X W^T + beta Y. */
void blas_linear_f64(int n, int out, int in, const double *X, int ldx, const double *W, int ldw,
                     double beta, double *Y, int ldy);
/* C (m x n, stride ldc) = A (m x k, stride lda) * B (k x n, stride ldb) + beta C, double. */
void blas_gemm_f64(int m, int n, int k, const double *A, int lda, const double *B, int ldb,
                   double beta, double *C, int ldc);

/* y = A x (trans false) or A^T x (trans true), A m x n (stride lda), double. */
void blas_gemv_f64(bool trans, int m, int n, const double *A, int lda, const double *x, double *y);
/* A (m x n, stride lda) += alpha x y^T, double. */
void blas_ger_f64(int m, int n, double alpha, const double *x, const double *y, double *A, int lda);

/* All singular values of A (rows x cols, row-major) in double by one-sided Jacobi
 * (Hestenes) rotations, in descending order into sv (min(rows, cols) entries).  High
 * relative accuracy (a few ulps times the width), no LAPACK needed.  `work` holds
 * rows * cols doubles.  Returns the number of sweeps, or -1 if 60 sweeps did not
 * converge or A is not finite (sv then holds the current column norms). */
int la_singular_values(int rows, int cols, const double *A, double *sv, double *work);
/* Guaranteed upper bound on ||A||_2 (up to the stated rounding margin): Jacobi singular
 * values when min(rows, cols) <= LA_JACOBI_MAX, otherwise the Gram iteration of
 * Delattre et al. (ICML 2023), ||A||_2 <= ||G_t||_F^(1/2^(t+1)) with G_0 = A^T A (smaller
 * side) and G_{t+1} = G_t^2 rescaled, run until the bound stops improving by 1e-13 (relative).  Both
 * results are inflated by (1 + 16 max(rows, cols) DBL_EPSILON).  `work` holds
 * la_norm2_upper_work(rows, cols) doubles. */
#define LA_JACOBI_MAX 160
size_t la_norm2_upper_work(int rows, int cols);
double la_norm2_upper(int rows, int cols, const double *A, double *work);

/* Peak single-thread sgemm GFLOP/s of this machine for an m=n=k=size product
 * (used by the benchmarks to report ratios). */
double blas_sgemm_gflops(int size, double seconds);

#endif
