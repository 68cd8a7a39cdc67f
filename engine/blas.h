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

/* The double-precision algebra (LU, norms, f64 kernels) lives in la.h. */
#include "la.h"

/* Peak single-thread sgemm GFLOP/s of this machine for an m=n=k=size product
 * (used by the benchmarks to report ratios). */
double blas_sgemm_gflops(int size, double seconds);

#endif
