/*
 * la.h — the engine's double-precision dense linear algebra: LU, inverse, log|det|,
 * singular values and certified spectral-norm bounds (load-time checks), and the double
 * GEMM / GEMV / rank-1 kernels of the numerical inverses (i-ResNet blocks, solve.c).
 *
 * Every kernel here is plain C in a fixed evaluation order, with fma() for each
 * multiply-add: an output element starts from its initial value (the bias, beta * C, or
 * 0) and accumulates fma(a_k, b_k, acc) for k = 0, 1, ..., in order.  No OpenBLAS call,
 * no threads, no reassociation, so results are bit-identical on every machine and under
 * any OPENBLAS_* setting (fma() is correctly rounded in IEEE double everywhere; the build
 * is ISO C, where the compiler does not contract a * b + c on its own).  On x86-64 the
 * GEMM / GEMV / rank-1 / Linear kernels are compiled twice, plain (a libm call per fma) and
 * for AVX2+FMA (the fused instruction; the GEMM also for AVX-512), and cpuid picks one per
 * call: the same bits.
 *
 * Shapes follow torch: a Linear weight W is (out, in), row-major; a batch X is (n, in).
 *
 * Rounding bounds (la_linear_err_f64): u = 2^-53, gamma_n = n u / (1 - n u).  An fma chain
 * acc_0 = b, acc_k = fl(w_k x_k + acc_{k-1}) makes one rounding per step, of at most
 * u |acc_k| (round to nearest: |fl(z) - z| <= u |fl(z)|), so |fl(s) - s| <= u sum_k |acc_k|,
 * plus at most 2^-1074 per step when a step underflows: Wilkinson's running error bound
 * (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., section 3.3), never
 * larger than the a-priori gamma_n (|b| + sum_k |w_k x_k|) and usually several times
 * smaller.
 */
#ifndef INNSERVE_LA_H
#define INNSERVE_LA_H

#include <stdbool.h>
#include <stddef.h>

/* Unit roundoff of double (round to nearest). */
#define LA_U 0x1p-53

/* Upper bound on gamma_n = n u / (1 - n u) (for n u < 1/2; +inf beyond). */
double la_gamma(int n);
/* Upper bound on the exact 2-norm of v (d entries), from values computed in double:
 * sqrt(sum v^2) * (1 + (d + 4) u). */
double la_norm_up(int d, const double *v);

/* Small square matrices (row-major n x n).  Return 0 on success, -1 if the matrix is
 * singular to working precision.  No allocation: `work` holds n*n doubles, `piv` n ints. */
int la_lu(int n, double *A, int *piv);                 /* in place, partial pivoting */
double la_lu_logabsdet(int n, const double *LU);       /* after la_lu */
void la_lu_solve(int n, const double *LU, const int *piv, double *b); /* b <- A^{-1} b */
int la_inverse(int n, const double *A, double *Ainv, double *work, int *piv);
/* Largest singular value of the (rows x cols) matrix A, by power iteration on A^T A run
 * to relative convergence 1e-12 (at most 10000 iterations): a LOWER bound (a sanity
 * bracket beside la_norm2_upper); `work` holds rows + cols doubles. */
double la_spectral_norm(int rows, int cols, const double *A, double *work);

/* Y (n x out, row stride ldy) = X (n x in, stride ldx) * W^T (W: out x in, stride ldw)
 * + beta * Y; beta is 0 or 1.  Y[i][o] starts from beta * Y[i][o] (so a caller that
 * prefills Y with the bias gets bias + X W^T) and takes fma(X[i][k], W[o][k], .) for
 * k = 0 .. in-1. */
void la_linear_f64(int n, int out, int in, const double *X, int ldx, const double *W, int ldw,
                     double beta, double *Y, int ldy);
/* The same with beta = 1 (Y holds the bias rows on entry) and a rounding bound: EY (n x out,
 * stride ldey) holds on entry a bound on the error of the bias in Y and on return a bound
 * on |Y_computed - Y_exact| for every element, where Y_exact is the exact bias + X_true W^T
 * and X_true differs from X by at most EX elementwise (EX: n x in, stride ldex; NULL when X
 * is exact).  Wabs holds |W| (same layout as W).  Y is bit-identical to la_linear_f64. */
void la_linear_err_f64(int n, int out, int in, const double *X, int ldx, const double *EX,
                       int ldex, const double *W, const double *Wabs, int ldw, double *Y, int ldy,
                       double *EY, int ldey);
/* C (m x n, stride ldc) = A (m x k, stride lda) * B (k x n, stride ldb) + beta C (beta 0
 * or 1); C[i][j] takes fma(A[i][p], B[p][j], .) for p = 0 .. k-1. */
void la_gemm_f64(int m, int n, int k, const double *A, int lda, const double *B, int ldb,
                   double beta, double *C, int ldc);
/* y = A x (trans false) or A^T x (trans true), A m x n (stride lda); y must not alias x. */
void la_gemv_f64(bool trans, int m, int n, const double *A, int lda, const double *x, double *y);
/* A (m x n, stride lda) += alpha x y^T: A[i][j] = fma(alpha * x[i], y[j], A[i][j]). */
void la_ger_f64(int m, int n, double alpha, const double *x, const double *y, double *A, int lda);

/* All singular values of A (rows x cols, row-major) by one-sided Jacobi (Hestenes)
 * rotations, in descending order into sv (min(rows, cols) entries).  High relative
 * accuracy (a few ulps times the width), no LAPACK needed.  `work` holds rows * cols
 * doubles.  Returns the number of sweeps, or -1 if 60 sweeps did not converge or A is not
 * finite (sv then holds the current column norms). */
int la_singular_values(int rows, int cols, const double *A, double *sv, double *work);
/* Guaranteed upper bound on ||A||_2 (up to the stated rounding margin): Jacobi singular
 * values when min(rows, cols) <= LA_JACOBI_MAX, otherwise the Gram iteration of
 * Delattre et al. (ICML 2023), ||A||_2 <= ||G_t||_F^(1/2^(t+1)) with G_0 = A^T A (smaller
 * side) and G_{t+1} = G_t^2 rescaled, run until the bound stops improving by 1e-13
 * (relative).  Both results are inflated by (1 + 16 max(rows, cols) DBL_EPSILON).  `work`
 * holds la_norm2_upper_work(rows, cols) doubles. */
#define LA_JACOBI_MAX 160
size_t la_norm2_upper_work(int rows, int cols);
double la_norm2_upper(int rows, int cols, const double *A, double *work);
/* The same bound, but the Gram iteration stops as soon as its (inflated) bound is at most
 * `enough` (> 0): every iterate is a rigorous upper bound, so stopping early only loosens
 * it, to at most `enough`; Jacobi is unaffected.  enough <= 0 is la_norm2_upper. */
double la_norm2_upper_until(int rows, int cols, const double *A, double *work, double enough);

#endif
