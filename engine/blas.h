/*
 * blas.h — the engine's only door to OpenBLAS, kept as the benchmarks' reference: the
 * engine's float32 products run on its own kernels (kern.h), its double-precision algebra
 * in la.h, so no result depends on OpenBLAS or its OPENBLAS_* settings.
 */
#ifndef INNSERVE_BLAS_H
#define INNSERVE_BLAS_H

#include <stdbool.h>
#include <stddef.h>

/* The double-precision algebra (LU, norms, f64 kernels) lives in la.h. */
#include "la.h"

/* Peak single-thread sgemm GFLOP/s of this machine for an m=n=k=size product
 * (used by the benchmarks to report ratios). */
double blas_sgemm_gflops(int size, double seconds);

#endif
