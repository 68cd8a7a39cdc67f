/*
 * calib.c — SBC, expected coverage, TARP and MMD statistics (calib.h).  Each loop is a
 * plain sequential sum in a fixed order, so results depend only on the inputs.
 */
#include "calib.h"

#include <math.h>
#include <stdlib.h>

#include "engine.h"
#include "kstest.h"

/* Generator streams of this module (observation numbers no request reaches: observations
 * are at most 2^31 - 1 rows). */
#define CAL_OBS_PERMUTATION 0xFFFFFFFEu
#define CAL_OBS_TARP_REF 0xFFFFFFFDu

void cal_sbc_ranks(int L, int D, const float *samples, const float *theta, int *ranks)
{
    for (int j = 0; j < D; j++)
        ranks[j] = 0;
    for (int l = 0; l < L; l++) {
        const float *s = samples + (size_t)l * D;
        for (int j = 0; j < D; j++)
            ranks[j] += s[j] < theta[j];
    }
}

int cal_hpd_rank(int L, const double *lp, double lp_theta)
{
    int r = 0;
    for (int l = 0; l < L; l++)
        r += lp[l] > lp_theta;
    return r;
}

void cal_tarp_scale(int N, int D, const float *theta, double *lo, double *span)
{
    for (int j = 0; j < D; j++) {
        double mn = theta[j], mx = theta[j];
        for (int i = 1; i < N; i++) {
            double v = theta[(size_t)i * D + j];
            mn = v < mn ? v : mn;
            mx = v > mx ? v : mx;
        }
        lo[j] = mn;
        span[j] = mx - mn + 1e-10;
    }
}

/* l2 distance of ref and the point p after z-scoring p (and ref) when lo is given:
 * sqrt(sum_j (ref_j - p_j)^2), as sbi.utils.metrics.l2 on the z-scored tensors. */
static double tarp_dist(int D, const double *ref, const float *p, const double *lo,
                        const double *span)
{
    double s = 0.0;
    for (int j = 0; j < D; j++) {
        double r = ref[j], v = p[j];
        if (lo) {
            r = (r - lo[j]) / span[j];
            v = (v - lo[j]) / span[j];
        }
        double d = r - v;
        s += d * d;
    }
    return sqrt(s);
}

int cal_tarp_count(int L, int D, const float *samples, const float *theta, const double *ref,
                   const double *lo, const double *span)
{
    double dt = tarp_dist(D, ref, theta, lo, span);
    int c = 0;
    for (int l = 0; l < L; l++)
        c += tarp_dist(D, ref, samples + (size_t)l * D, lo, span) < dt;
    return c;
}

void cal_tarp_references(uint64_t seed, int N, int D, const float *theta, double *ref)
{
    for (int j = 0; j < D; j++) {
        double mn = theta[j], mx = theta[j];
        for (int i = 1; i < N; i++) {
            double v = theta[(size_t)i * D + j];
            mn = v < mn ? v : mn;
            mx = v > mx ? v : mx;
        }
        for (int i = 0; i < N; i++) {
            double u = eng_rng_u32(seed, CAL_OBS_TARP_REF, (uint64_t)i, (uint32_t)j) *
                       (1.0 / 4294967296.0);
            ref[(size_t)i * D + j] = mn + u * (mx - mn);
        }
    }
}

/* ---- reductions ------------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void cal_rank_ks(int N, int D, const int *ranks, int j, int L, double *scratch, double *stat,
                 double *p)
{
    for (int i = 0; i < N; i++)
        scratch[i] = ranks[(size_t)i * D + j];
    qsort(scratch, (size_t)N, sizeof(double), cmp_double);
    kst_uniform(N, scratch, (double)L, stat, p);
}

void cal_rank_histogram(int N, int D, const int *ranks, int j, int L, int B, double *edges,
                        long *counts)
{
    for (int b = 0; b <= B; b++)
        edges[b] = (double)((long long)b * L) / B;
    for (int b = 0; b < B; b++)
        counts[b] = 0;
    for (int i = 0; i < N; i++) {
        long long r = ranks[(size_t)i * D + j];
        long long b = L > 0 ? r * B / L : 0;
        if (b >= B)
            b = B - 1;
        if (b < 0)
            b = 0;
        counts[b]++;
    }
}

void cal_coverage(int N, const int *ranks, int stride, int L, int K, double *empirical)
{
    for (int k = 0; k <= K; k++) {
        long n = 0;
        for (int i = 0; i < N; i++)
            n += (long long)ranks[(size_t)i * stride] * K <= (long long)k * L;
        empirical[k] = (double)n / N;
    }
}

void cal_central_ranks(int N, int D, const int *ranks, int j, int L, int *out)
{
    for (int i = 0; i < N; i++) {
        int c = 2 * ranks[(size_t)i * D + j] - L;
        out[i] = c < 0 ? -c : c;
    }
}

/* n KL(k/n || p) for k < n p: the Chernoff bound P(X <= k) <= exp(-that). */
static double chernoff_lower(int n, double p, double k)
{
    double a = k / n;
    double t1 = a > 0 ? a * log(a / p) : 0.0;
    double t2 = a < 1 ? (1 - a) * log((1 - a) / (1 - p)) : 0.0;
    return n * (t1 + t2);
}

/* The smallest k with P(Binomial(n, p) <= k) >= qlo into *klo, and the same for qhi >= qlo
 * into *khi, in one walk up the probabilities.  The walk starts at the largest k0 whose
 * lower tail P(X < k0) is below e^-80 (Chernoff), so the mass it leaves out is far below
 * any q a request can give (the band's q >= 1e-16). */
static void binom_ppf2(double qlo, double qhi, int n, double p, int *klo, int *khi)
{
    if (p <= 0.0) {
        *klo = *khi = 0;
        return;
    }
    if (p >= 1.0) {
        *klo = *khi = n;
        return;
    }
    int lo = 0, hi = (int)floor(n * p);
    if (chernoff_lower(n, p, 0) < 80.0) {
        hi = 0;
    } else {
        while (hi - lo > 1) { /* chernoff(lo) >= 80 > chernoff(hi) */
            int mid = lo + (hi - lo) / 2;
            if (chernoff_lower(n, p, mid) >= 80.0)
                lo = mid;
            else
                hi = mid;
        }
        hi = lo;
    }
    int k0 = hi;
    long double lp = lgammal((long double)n + 1) - lgammal((long double)k0 + 1) -
                     lgammal((long double)(n - k0) + 1) + k0 * logl((long double)p) +
                     (n - k0) * log1pl(-(long double)p);
    long double lodds = logl((long double)p) - log1pl(-(long double)p);
    long double cdf = 0.0L;
    bool have_lo = false;
    for (int k = k0; k < n; k++) {
        cdf += expl(lp);
        if (!have_lo && cdf >= (long double)qlo) {
            *klo = k;
            have_lo = true;
        }
        if (cdf >= (long double)qhi) {
            *khi = k;
            return;
        }
        lp += logl((long double)(n - k) / (long double)(k + 1)) + lodds;
    }
    if (!have_lo)
        *klo = n;
    *khi = n;
}

int cal_binom_ppf(double q, int n, double p)
{
    int k, unused;
    binom_ppf2(q, q, n, p, &k, &unused);
    return k;
}

void cal_band(int N, int L, int K, double c, double *levels, double *lower, double *upper)
{
    double qlo = (1.0 - c) / 2, qhi = (1.0 + c) / 2, prev = -1.0;
    int klo = 0, khi = 0;
    for (int k = 0; k <= K; k++) {
        long long fl = (long long)k * L / K;
        double p = (double)(fl + 1) / ((double)L + 1);
        levels[k] = (double)k / K;
        if (p != prev) /* levels between the same two ranks share their quantiles */
            binom_ppf2(qlo, qhi, N, p, &klo, &khi);
        prev = p;
        lower[k] = (double)klo / N;
        upper[k] = (double)khi / N;
    }
}

void cal_tarp_curve(int N, const int *counts, int L, int B, double *alpha, double *ecp,
                    long *scratch)
{
    long long cmin = counts[0], cmax = counts[0];
    for (int i = 1; i < N; i++) {
        cmin = counts[i] < cmin ? counts[i] : cmin;
        cmax = counts[i] > cmax ? counts[i] : cmax;
    }
    long long w = cmax - cmin;
    /* edge b = lo + (hi - lo) b / B over [lo, hi] = [cmin / L, cmax / L], or [f - 0.5,
     * f + 0.5] when every f is the same: one rounding of an exact integer ratio */
    for (int b = 0; b <= B; b++) {
        if (w > 0)
            alpha[b] = (double)(cmin * B + w * b) / ((double)B * L);
        else
            alpha[b] = (double)(2 * cmin * B - (long long)B * L + 2LL * b * L) /
                       (2.0 * B * L);
    }
    long *h = scratch;
    for (int b = 0; b < B; b++)
        h[b] = 0;
    for (int i = 0; i < N; i++) {
        long long b = w > 0 ? (counts[i] - cmin) * B / w : B / 2;
        h[b < B ? b : B - 1]++;
    }
    long cum = 0;
    ecp[0] = 0.0;
    for (int b = 0; b < B; b++) {
        cum += h[b];
        ecp[b + 1] = (double)cum / N;
    }
}

void cal_tarp_check(int B, const double *alpha, const double *ecp, double *scratch,
                    double *atc, double *ks_p)
{
    int n = B + 1, mid = n / 2;
    double da = alpha[1] - alpha[0], s = 0.0;
    for (int k = mid; k < n; k++)
        s += (ecp[k] - alpha[k]) * da;
    *atc = s;
    double *a = scratch, *b = scratch + n, stat;
    for (int k = 0; k < n; k++) {
        a[k] = ecp[k];
        b[k] = alpha[k];
    }
    qsort(a, (size_t)n, sizeof(double), cmp_double);
    qsort(b, (size_t)n, sizeof(double), cmp_double);
    kst_two_sample(n, a, b, &stat, ks_p);
}

/* ---- MMD -------------------------------------------------------------------------- */

void cal_imq_matrix(int n, int D, const float *z, int n_scales, const double *h, double *K)
{
    for (int a = 0; a < n; a++) {
        const float *za = z + (size_t)a * D;
        for (int b = a; b < n; b++) {
            const float *zb = z + (size_t)b * D;
            double d2 = 0.0;
            for (int j = 0; j < D; j++) {
                double d = (double)za[j] - (double)zb[j];
                d2 += d * d;
            }
            double k = 0.0;
            for (int s = 0; s < n_scales; s++) {
                double h2 = h[s] * h[s];
                k += h2 / (h2 + d2);
            }
            K[(size_t)a * n + b] = k;
            K[(size_t)b * n + a] = k;
        }
    }
}

/* sum of K over rows idx[r0..r1) x columns idx[c0..c1) */
static double block_sum(int nz, const double *K, const int *idx, int r0, int r1, int c0, int c1,
                        double *diag)
{
    double s = 0.0, d = 0.0;
    for (int a = r0; a < r1; a++) {
        const double *row = K + (size_t)(idx ? idx[a] : a) * nz;
        for (int b = c0; b < c1; b++)
            s += row[idx ? idx[b] : b];
        if (diag)
            d += row[idx ? idx[a] : a];
    }
    if (diag)
        *diag = d;
    return s;
}

double cal_mmd2(int nz, int nx, const double *K, const int *idx, bool unbiased)
{
    int ny = nz - nx;
    double dx, dy;
    double sxx = block_sum(nz, K, idx, 0, nx, 0, nx, &dx);
    double syy = block_sum(nz, K, idx, nx, nz, nx, nz, &dy);
    double sxy = block_sum(nz, K, idx, 0, nx, nx, nz, NULL);
    double fx = nx, fy = ny;
    if (unbiased)
        return (sxx - dx) / (fx * (fx - 1)) + (syy - dy) / (fy * (fy - 1)) -
               2.0 * sxy / (fx * fy);
    return sxx / (fx * fx) + syy / (fy * fy) - 2.0 * sxy / (fx * fy);
}

void cal_permutation(uint64_t seed, uint64_t p, int n, int *perm)
{
    for (int i = 0; i < n; i++)
        perm[i] = i;
    for (int i = n - 1; i > 0; i--) {
        uint64_t u = eng_rng_u32(seed, CAL_OBS_PERMUTATION, p, (uint32_t)i);
        int j = (int)((u * (uint64_t)(i + 1)) >> 32);
        int t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

double cal_mmd_pvalue(int nz, int nx, const double *K, bool unbiased, double observed,
                      uint64_t seed, int P, int *idx)
{
    long ge = 0;
    for (int p = 0; p < P; p++) {
        cal_permutation(seed, (uint64_t)p, nz, idx);
        ge += cal_mmd2(nz, nx, K, idx, unbiased) >= observed;
    }
    return (1.0 + (double)ge) / (1.0 + (double)P);
}
