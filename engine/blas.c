/*
 * blas.c — the engine's only reference to OpenBLAS: eng_blas_threads (engine.h).  The
 * engine computes with its own kernels (kern.h) and la.c and calls no BLAS routine; the
 * library is still linked, and this keeps its thread pool to the size the caller sets.
 */
#include "engine.h"

#include <cblas.h>

void eng_blas_threads(int n)
{
    openblas_set_num_threads(n < 1 ? 1 : n);
}
