/*
 * fma_avx512.c — the theoretical float32 ceiling of one core with AVX-512F: a register-only
 * loop of independent fused multiply-adds (no memory traffic).  Built with -mavx512f and
 * called only when __builtin_cpu_supports("avx512f") (bench_sgemm.c).
 */
#include <immintrin.h>

#include "fma_peak.h"

double fma_peak_avx512(double seconds)
{
    __m512 acc[FMA_CHAINS];
    const __m512 a = _mm512_set1_ps(0.9999999f), b = _mm512_set1_ps(1e-7f);
    for (int i = 0; i < FMA_CHAINS; i++)
        acc[i] = _mm512_set1_ps((float)i);
    /* The best chunk: a chunk the scheduler did not interrupt runs at the core's peak. */
    double best = 0, start = fma_now(), t0 = start, t1;
    do {
        for (int r = 0; r < FMA_INNER; r++)
            for (int i = 0; i < FMA_CHAINS; i++)
                acc[i] = _mm512_fmadd_ps(acc[i], a, b);
        t1 = fma_now();
        if (best == 0 || t1 - t0 < best)
            best = t1 - t0;
        t0 = t1;
    } while (t1 - start < seconds);
    __m512 s = acc[0];
    for (int i = 1; i < FMA_CHAINS; i++)
        s = _mm512_add_ps(s, acc[i]);
    fma_sink = _mm512_reduce_add_ps(s);
    return 2.0 * 16 * FMA_CHAINS * FMA_INNER / best / 1e9;
}
