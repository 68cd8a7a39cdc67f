/*
 * kern_impl.h — the body of one kernel path, included once by each of kern_avx512.c,
 * kern_avx2.c and kern_portable.c after they define:
 *
 *     KERN_ISA    2 (AVX-512F), 1 (AVX2 + FMA) or 0 (portable C with fmaf)
 *     KERN_TABLE  the name of the struct kern to define
 *
 * The product is blocked as: k in chunks of KC (the accumulator goes through Y between
 * chunks, which keeps each element's fma order), columns in groups of NP panels of 16,
 * rows in blocks of MR; a microkernel keeps an MR x (NP*16) block of accumulators in
 * registers for the whole chunk.  Panels that are not pre-packed are copied (and
 * transposed) into a stack buffer per group and chunk.  See kern.h for the contract.
 */
#include <stdint.h>
#include <string.h>

#include "emath.h"
#include "kern.h"

#if KERN_ISA > 0
#include <immintrin.h>
#endif

#define KC 256 /* k per chunk */

#if KERN_ISA == 2
#define MR 8   /* rows per microkernel */
#define NP 2   /* panels (of 16 columns) per microkernel */
#define NP1 2  /* panels per microkernel when m == 1 (matrix-vector): one superpanel */
#elif KERN_ISA == 1
#define MR 6
#define NP 1
#define NP1 2
#else
#define MR 4
#define NP 1
#define NP1 1
#endif

enum { INIT_ZERO, INIT_ROW, INIT_Y };

#define INLINE static inline __attribute__((always_inline))

/* ---- microkernels ----------------------------------------------------------------------- */

#if KERN_ISA == 2

INLINE void ukr(const int mr, const int np, int kc, const float *A, int lda, const float *B,
                size_t kstride, float *Y, int ldy, int ncols, int imode, const float *init,
                bool relu)
{
    __m512 c[MR][NP1];
    __mmask16 mk[NP1];
#pragma GCC unroll 8
    for (int p = 0; p < np; p++) {
        int cp = ncols - 16 * p;
        mk[p] = cp >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (cp > 0 ? cp : 0)) - 1u);
    }
#pragma GCC unroll 8
    for (int r = 0; r < mr; r++)
#pragma GCC unroll 8
        for (int p = 0; p < np; p++)
            c[r][p] = imode == INIT_ZERO  ? _mm512_setzero_ps()
                      : imode == INIT_ROW ? _mm512_maskz_loadu_ps(mk[p], init + 16 * p)
                                          : _mm512_maskz_loadu_ps(mk[p], Y + (size_t)r * ldy + 16 * p);
    for (int kk = 0; kk < kc; kk++) {
        __m512 b[NP1];
#pragma GCC unroll 8
        for (int p = 0; p < np; p++)
            b[p] = _mm512_loadu_ps(B + 16 * p + (size_t)kk * kstride);
#pragma GCC unroll 8
        for (int r = 0; r < mr; r++) {
            __m512 a = _mm512_set1_ps(A[(size_t)r * lda + kk]);
#pragma GCC unroll 8
            for (int p = 0; p < np; p++)
                c[r][p] = _mm512_fmadd_ps(a, b[p], c[r][p]);
        }
    }
    /* ReLU in registers: max(v, 0) returns 0 for v <= 0, -0 and NaN, as v > 0 ? v : 0 */
    if (relu)
#pragma GCC unroll 8
        for (int r = 0; r < mr; r++)
#pragma GCC unroll 8
            for (int p = 0; p < np; p++)
                c[r][p] = _mm512_max_ps(c[r][p], _mm512_setzero_ps());
#pragma GCC unroll 8
    for (int r = 0; r < mr; r++)
#pragma GCC unroll 8
        for (int p = 0; p < np; p++)
            _mm512_mask_storeu_ps(Y + (size_t)r * ldy + 16 * p, mk[p], c[r][p]);
}

#elif KERN_ISA == 1

/* One panel of 16 columns is two ymm vectors ("halves"). */
INLINE __m256i half_mask(int cols)
{
    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(cols), iota);
}

INLINE void ukr(const int mr, const int np, int kc, const float *A, int lda, const float *B,
                size_t kstride, float *Y, int ldy, int ncols, int imode, const float *init,
                bool relu)
{
    __m256 c[MR][2 * NP1];
    __m256i mk[2 * NP1];
#pragma GCC unroll 8
    for (int h = 0; h < 2 * np; h++)
        mk[h] = half_mask(ncols - 8 * h);
    /* masked moves are slow on some CPUs (AMD): only the last, partial group uses them */
    const bool full = ncols >= 16 * np;
#pragma GCC unroll 8
    for (int r = 0; r < mr; r++)
#pragma GCC unroll 8
        for (int h = 0; h < 2 * np; h++) {
            const float *src = imode == INIT_ROW ? init + 8 * h : Y + (size_t)r * ldy + 8 * h;
            c[r][h] = imode == INIT_ZERO ? _mm256_setzero_ps()
                      : full             ? _mm256_loadu_ps(src)
                                         : _mm256_maskload_ps(src, mk[h]);
        }
    for (int kk = 0; kk < kc; kk++) {
        __m256 b[2 * NP1];
#pragma GCC unroll 8
        for (int h = 0; h < 2 * np; h++)
            b[h] = _mm256_loadu_ps(B + 8 * h + (size_t)kk * kstride);
#pragma GCC unroll 8
        for (int r = 0; r < mr; r++) {
            __m256 a = _mm256_broadcast_ss(A + (size_t)r * lda + kk);
#pragma GCC unroll 8
            for (int h = 0; h < 2 * np; h++)
                c[r][h] = _mm256_fmadd_ps(a, b[h], c[r][h]);
        }
    }
    if (relu)
#pragma GCC unroll 8
        for (int r = 0; r < mr; r++)
#pragma GCC unroll 8
            for (int h = 0; h < 2 * np; h++)
                c[r][h] = _mm256_max_ps(c[r][h], _mm256_setzero_ps());
#pragma GCC unroll 8
    for (int r = 0; r < mr; r++)
#pragma GCC unroll 8
        for (int h = 0; h < 2 * np; h++) {
            if (full)
                _mm256_storeu_ps(Y + (size_t)r * ldy + 8 * h, c[r][h]);
            else
                _mm256_maskstore_ps(Y + (size_t)r * ldy + 8 * h, mk[h], c[r][h]);
        }
}

#else

INLINE void ukr(const int mr, const int np, int kc, const float *A, int lda, const float *B,
                size_t kstride, float *Y, int ldy, int ncols, int imode, const float *init,
                bool relu)
{
    (void)np;
    const int nc = ncols < 16 ? ncols : 16;
    for (int r = 0; r < mr; r++) {
        float c[16];
        float *y = Y + (size_t)r * ldy;
        const float *a = A + (size_t)r * lda;
        for (int j = 0; j < 16; j++)
            c[j] = j >= nc || imode == INIT_ZERO ? 0.0f : imode == INIT_ROW ? init[j] : y[j];
        for (int kk = 0; kk < kc; kk++) {
            const float av = a[kk];
            const float *b = B + (size_t)kk * kstride;
            for (int j = 0; j < 16; j++)
                c[j] = __builtin_fmaf(av, b[j], c[j]);
        }
        for (int j = 0; j < nc; j++)
            y[j] = relu ? (c[j] > 0.0f ? c[j] : 0.0f) : c[j];
    }
}

#endif

/* ---- elementwise -------------------------------------------------------------------------- */

static void k_act(enum act_type t, float p1, float p2, float *v, size_t n)
{
    switch (t) {
    case ACT_NONE:
    case ACT_COUNT:
        break;
    case ACT_RELU:
        for (size_t i = 0; i < n; i++)
            v[i] = v[i] > 0.0f ? v[i] : 0.0f;
        break;
    case ACT_LEAKY_RELU:
        for (size_t i = 0; i < n; i++)
            v[i] = v[i] >= 0.0f ? v[i] : p1 * v[i];
        break;
    case ACT_ELU:
        for (size_t i = 0; i < n; i++)
            v[i] = v[i] > 0.0f ? v[i] : p1 * em_expm1f(v[i]);
        break;
    case ACT_TANH: /* float arithmetic (a few ulp); KF_TANH, the soft clamps' tanh, is exact */
        for (size_t i = 0; i < n; i++)
            v[i] = em_tanhf_fast(v[i]);
        break;
    case ACT_SIGMOID:
        for (size_t i = 0; i < n; i++)
            v[i] = em_sigmoidf(v[i]);
        break;
    case ACT_SOFTPLUS:
        for (size_t i = 0; i < n; i++)
            v[i] = em_softplusf(v[i], p1, p2);
        break;
    case ACT_GELU:
        for (size_t i = 0; i < n; i++)
            v[i] = 0.5f * v[i] * (1.0f + em_erff(v[i] * 0.70710678118654752f));
        break;
    case ACT_GELU_TANH:
        for (size_t i = 0; i < n; i++) {
            float u = v[i];
            v[i] = 0.5f * u * (1.0f + em_tanhf(0.79788456080286536f * (u + 0.044715f * u * u * u)));
        }
        break;
    case ACT_SILU:
        for (size_t i = 0; i < n; i++)
            v[i] = v[i] * em_sigmoidf(v[i]);
        break;
    case ACT_LIPSWISH:
        for (size_t i = 0; i < n; i++)
            v[i] = v[i] * em_sigmoidf(v[i]) / 1.1f;
        break;
    }
}

static void k_map(enum kern_fn f, float *v, size_t n)
{
    switch (f) {
    case KF_EXP:
        for (size_t i = 0; i < n; i++)
            v[i] = em_expf(v[i]);
        break;
    case KF_EXP_FAST:
        for (size_t i = 0; i < n; i++)
            v[i] = em_expf_fast(v[i]);
        break;
    case KF_TANH:
        for (size_t i = 0; i < n; i++)
            v[i] = em_tanhf(v[i]);
        break;
    case KF_ATAN:
        for (size_t i = 0; i < n; i++)
            v[i] = em_atanf(v[i]);
        break;
    case KF_SIGMOID:
        for (size_t i = 0; i < n; i++)
            v[i] = em_sigmoidf(v[i]);
        break;
    }
}

/* ---- driver --------------------------------------------------------------------------------- */

/* Copy columns j0 .. j0+np*16 of B, rows k0 .. k0+kc, into kc rows of np*16 (zero
 * padded): the packed layout of one group. */
static void pack_group(const struct kern_gemm *g, int j0, int np, int k0, int kc, float *dst)
{
    const int w = np * 16;
    for (int p = 0; p < np; p++) {
        float *d = dst + (size_t)p * 16;
        for (int jj = 0; jj < 16; jj++) {
            int j = j0 + 16 * p + jj;
            if (j >= g->n) {
                for (int kk = 0; kk < kc; kk++)
                    d[(size_t)kk * w + jj] = 0.0f;
            } else if (g->bmode == KERN_B_WEIGHT) {
                const float *wr = g->b + (size_t)j * g->ldb + k0;
                for (int kk = 0; kk < kc; kk++)
                    d[(size_t)kk * w + jj] = wr[kk];
            } else {
                const float *wr = g->b + (size_t)k0 * g->ldb + j;
                for (int kk = 0; kk < kc; kk++)
                    d[(size_t)kk * w + jj] = wr[(size_t)kk * g->ldb];
            }
        }
    }
}

/* One microkernel call with compile-time (mr, np) so it unrolls into registers. */
#define UKR(MRC, NPC)                                                                             \
    ukr(MRC, NPC, kc, kc ? A + (size_t)i0 * g->lda : A, g->lda, B, kstride,                      \
        Y + (size_t)i0 * g->ldy,                                                                  \
        g->ldy, ncols, imode, init, relu)

/* NP1 is at most 2 (one superpanel) */
#if NP1 >= 2
#define UKR_NP(MRC)                                                                               \
    switch (np) {                                                                                 \
    case 2: UKR(MRC, 2); break;                                                                   \
    default: UKR(MRC, 1); break;                                                                  \
    }
#else
#define UKR_NP(MRC) UKR(MRC, 1)
#endif

/* All rows of one column group of np panels (np <= NP, or np <= NP1 when m == 1). */
static void group_rows(const struct kern_gemm *g, int np, int kc, const float *A,
                       const float *B, size_t kstride, float *Y, int ncols, int imode,
                       const float *init, bool relu)
{
    int i0 = 0;
    if (g->m == 1) {
        UKR_NP(1);
        return;
    }
    for (; i0 + MR <= g->m; i0 += MR) {
        if (np >= NP)
            UKR(MR, NP);
        else
            UKR(MR, 1);
    }
    switch (g->m - i0) {
#if MR > 7
    case 7: if (np >= NP) UKR(7, NP); else UKR(7, 1); break;
    case 6: if (np >= NP) UKR(6, NP); else UKR(6, 1); break;
#endif
#if MR > 5
    case 5: if (np >= NP) UKR(5, NP); else UKR(5, 1); break;
    case 4: if (np >= NP) UKR(4, NP); else UKR(4, 1); break;
#endif
#if MR > 3
    case 3: if (np >= NP) UKR(3, NP); else UKR(3, 1); break;
    case 2: if (np >= NP) UKR(2, NP); else UKR(2, 1); break;
    case 1: if (np >= NP) UKR(1, NP); else UKR(1, 1); break;
#endif
    default: break;
    }
}

static void k_gemm(const struct kern_gemm *g)
{
    if (g->m <= 0 || g->n <= 0)
        return;
    const int K = g->k > 0 ? g->k : 0;
    const bool packed = g->bmode == KERN_B_PACKED;
    /* one-row products on packed B take a whole superpanel per group (one weight stream) */
    const int npg = g->m == 1 && packed ? NP1 : NP;
    float buf[NP * 16 * KC];
    /* groups of a packed B never straddle a superpanel: 16 or 32 columns from a multiple of
     * their width */
    int k0 = 0;
    do {
        const int kc = K - k0 < KC ? K - k0 : KC;
        const bool first = k0 == 0, last = k0 + kc >= K;
        const int imode = !first || (g->accumulate && !g->init) ? INIT_Y
                          : g->init                             ? INIT_ROW
                                                                : INIT_ZERO;
        for (int j0 = 0; j0 < g->n; j0 += npg * 16) {
            const int ncols = g->n - j0 < npg * 16 ? g->n - j0 : npg * 16;
            const int np = (ncols + 15) / 16;
            const float *B;
            size_t kstride;
            if (kc == 0) {
                /* K == 0 (a layer without inputs, e.g. a subnet that reads only the
                 * condition): y = init and the activation; A and B may be NULL */
                B = NULL;
                kstride = 0;
            } else if (packed) {
                B = kern_packed_at(g->b, g->n, K, j0, &kstride) + (size_t)k0 * kstride;
            } else {
                pack_group(g, j0, np, k0, kc, buf);
                B = buf;
                kstride = (size_t)np * 16;
            }
            const float *init = g->init ? g->init + j0 : NULL;
            float *Y = g->y + j0;
            const bool relu = last && g->act == ACT_RELU; /* fused in the microkernel */
            group_rows(g, np, kc, kc ? g->a + k0 : NULL, B, kstride, Y, ncols, imode, init,
                       relu);
            if (last && g->act != ACT_NONE && !relu)
                for (int i = 0; i < g->m; i++)
                    k_act(g->act, g->p1, g->p2, Y + (size_t)i * g->ldy, (size_t)ncols);
        }
        k0 += kc;
    } while (k0 < K);
}

const struct kern KERN_TABLE = {
#if KERN_ISA == 2
    .name = "avx512",
#elif KERN_ISA == 1
    .name = "avx2",
#else
    .name = "portable",
#endif
    .gemm = k_gemm,
    .act = k_act,
    .map = k_map,
};
