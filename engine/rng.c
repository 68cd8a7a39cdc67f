/*
 * rng.c — counter-based Gaussian draws.  Philox4x32-10 (Salmon et al., SC'11) keyed by
 * the 64-bit seed, with the counter (dim / 4, sample low, sample high, obs); each call
 * yields four uniforms, turned into four normals by Box-Muller in double (with emath.h's
 * log and sin/cos of 2 pi u, so the draws are the same bits on every machine).  A draw
 * depends only on (seed, obs, sample, dim), so samples are identical whatever the
 * batching, tiling or thread count.
 */
#include <math.h>

#include "emath.h"
#include "engine.h"
#include "kern.h"

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

static inline __attribute__((always_inline)) void philox4x32_10(uint32_t ctr[4], uint32_t k0,
                                                                uint32_t k1)
{
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * ctr[0];
        uint64_t p1 = (uint64_t)PHILOX_M1 * ctr[2];
        uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
        uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
        uint32_t n0 = hi1 ^ ctr[1] ^ k0, n2 = hi0 ^ ctr[3] ^ k1;
        ctr[0] = n0, ctr[1] = lo1, ctr[2] = n2, ctr[3] = lo0;
        k0 += PHILOX_W0, k1 += PHILOX_W1;
    }
}

/* Uniform in (0, 1]: never 0, so log() is finite. */
static double u01(uint32_t v) { return ((double)v + 1.0) * (1.0 / 4294967296.0); }

/* Always inlined, so that each FMA clone of its callers gets its own vector-FMA copy (an
 * out-of-line one is built for the baseline target, where every fma is a libm call). */
static inline __attribute__((always_inline)) void block4(uint64_t seed, uint32_t obs,
                                                         uint64_t sample, uint32_t blk,
                                                         float out[4])
{
    uint32_t c[4] = {blk, (uint32_t)sample, (uint32_t)(sample >> 32), obs};
    philox4x32_10(c, (uint32_t)seed, (uint32_t)(seed >> 32));
    for (int k = 0; k < 4; k += 2) {
        double r = sqrt(-2.0 * em_log(u01(c[k]))), sn, cs;
        em_sincos_2pi(u01(c[k + 1]), &sn, &cs);
        out[k] = (float)(r * cs);
        out[k + 1] = (float)(r * sn);
    }
}

KERN_FMA_CLONES float eng_rng_normal(uint64_t seed, uint32_t obs, uint64_t sample, uint32_t dim)
{
    float v[4];
    block4(seed, obs, sample, dim / 4, v);
    return v[dim % 4];
}

KERN_FMA_CLONES void eng_rng_normal_row(uint64_t seed, uint32_t obs, uint64_t sample, int n, float *out)
{
    int d = 0;
    for (; d + 4 <= n; d += 4)
        block4(seed, obs, sample, (uint32_t)d / 4, out + d);
    if (d < n) {
        float v[4];
        block4(seed, obs, sample, (uint32_t)d / 4, v);
        for (int k = 0; d + k < n; k++)
            out[d + k] = v[k];
    }
}

uint32_t eng_rng_u32(uint64_t seed, uint32_t obs, uint64_t sample, uint32_t word)
{
    uint32_t c[4] = {word / 4, (uint32_t)sample, (uint32_t)(sample >> 32), obs};
    philox4x32_10(c, (uint32_t)seed, (uint32_t)(seed >> 32));
    return c[word % 4];
}
