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

/* Peak single-thread sgemm GFLOP/s of this machine for an m=n=k=size product
 * (used by the benchmarks to report ratios). */
double blas_sgemm_gflops(int size, double seconds);

#endif
