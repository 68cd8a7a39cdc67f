/*
 * kstest.h — Kolmogorov-Smirnov tests as SciPy computes them, so p-values agree with
 * scipy.stats.kstest (the test sbi's check_sbc and check_tarp call) to rounding.
 *
 *   kst_kolmogn: distribution of the two-sided one-sample statistic D_n (SciPy's
 *     scipy.stats._ksstats._kolmogn: Ruben-Gambino, Durbin's matrix (Marsaglia-Tsang-Wang),
 *     Pomeranz, Pelz-Good and 2 * smirnov, chosen per (n, x) as Simard & L'Ecuyer
 *     describe and as SciPy does);
 *   kst_smirnov_sf: the one-sided statistic's survival function (scipy.special.smirnov,
 *     the cephes code, in double-double arithmetic as there);
 *   kst_uniform: the one-sample test of values against U(0, scale) (kstest(x,
 *     uniform(0, scale).cdf), method "auto" = exact);
 *   kst_two_sample: the two-sided two-sample test of two samples of the same size
 *     (scipy.stats.ks_2samp, method "auto": exact for samples of at most 10000, else the
 *     asymptotic kstwo; the exact method for unequal sizes is not ported).
 *
 * Pure functions of their arguments.  kst_kolmogn may allocate one scratch matrix per call
 * (Durbin's method, at most about 120 x 120 doubles for n <= 100000) and returns NaN when
 * that allocation fails; nothing else allocates.  Thread safe.
 */
#ifndef INNSERVE_KSTEST_H
#define INNSERVE_KSTEST_H

#include <stdbool.h>

/* P(D_n <= x) when cdf, else P(D_n > x), clipped to [0, 1]; NaN when n < 1. */
double kst_kolmogn(int n, double x, bool cdf);

/* P(D_n^+ >= x) for the one-sided statistic (scipy.special.smirnov(n, x)); NaN when x is
 * outside [0, 1] or n < 1. */
double kst_smirnov_sf(int n, double x);

/* One-sample two-sided test of the n values v (sorted ascending) against U(0, scale):
 * *stat = D = max(D+, D-) with the cdf min(max(v / scale, 0), 1), *p = P(D_n >= D)
 * (kstwo.sf, clipped to [0, 1]).  n >= 1, scale > 0.  p is NaN when kst_kolmogn fails. */
void kst_uniform(int n, const double *v, double scale, double *stat, double *p);

/* Two-sample two-sided test of a against b, n >= 1 values each, both sorted ascending:
 * *stat = max |F_a - F_b| over the pooled values, *p its p-value as ks_2samp's. */
void kst_two_sample(int n, const double *a, const double *b, double *stat, double *p);

#endif
