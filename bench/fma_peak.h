/*
 * fma_peak.h — register-only FMA loops that measure a core's theoretical float32 peak
 * (fma_avx512.c, fma_avx2.c: each built with its own -m flags; bench_sgemm.c picks one
 * with __builtin_cpu_supports).  They return the GFLOP/s (an FMA is 2 FLOPs) of the
 * fastest ~0.1 ms chunk, the one the scheduler did not interrupt.
 */
#ifndef INNSERVE_FMA_PEAK_H
#define INNSERVE_FMA_PEAK_H

#include <time.h>

/* Independent accumulator chains (more than FMA latency x FMA ports on current cores). */
#define FMA_CHAINS 12
#define FMA_INNER 16384 /* iterations per timed chunk (~0.1 ms) */

double fma_peak_avx512(double seconds);
double fma_peak_avx2(double seconds);

static inline double fma_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Keeps the result alive so the loop cannot be removed (defined in bench_sgemm.c). */
extern volatile float fma_sink;

#endif
