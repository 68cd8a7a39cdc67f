/*
 * fma_avx2.c — the theoretical float32 ceiling of one core with AVX2 + FMA: a register-only
 * loop of independent fused multiply-adds (no memory traffic).  Built with -mavx2 -mfma and
 * called only when __builtin_cpu_supports("avx2") and ("fma") (bench_sgemm.c).
 */
#include <immintrin.h>

#include "fma_peak.h"

double fma_peak_avx2(double seconds)
{
    __m256 acc[FMA_CHAINS];
    const __m256 a = _mm256_set1_ps(0.9999999f), b = _mm256_set1_ps(1e-7f);
    for (int i = 0; i < FMA_CHAINS; i++)
        acc[i] = _mm256_set1_ps((float)i);
    /* The best chunk: a chunk the scheduler did not interrupt runs at the core's peak. */
    double best = 0, start = fma_now(), t0 = start, t1;
    do {
        for (int r = 0; r < FMA_INNER; r++)
            for (int i = 0; i < FMA_CHAINS; i++)
                acc[i] = _mm256_fmadd_ps(acc[i], a, b);
        t1 = fma_now();
        if (best == 0 || t1 - t0 < best)
            best = t1 - t0;
        t0 = t1;
    } while (t1 - start < seconds);
    __m256 s = acc[0];
    for (int i = 1; i < FMA_CHAINS; i++)
        s = _mm256_add_ps(s, acc[i]);
    float v[8];
    _mm256_storeu_ps(v, s);
    fma_sink = v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
    return 2.0 * 8 * FMA_CHAINS * FMA_INNER / best / 1e9;
}
