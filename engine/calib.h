/*
 * calib.h — calibration and sample-quality statistics of a posterior estimator: SBC ranks
 * and their KS test, expected coverage (HPD and central) with its binomial band, TARP, and
 * MMD^2 with an inverse-multiquadric kernel and a permutation p-value.  Definitions are
 * sbi's (sbi.diagnostics.sbc run_sbc / check_sbc, sbi.diagnostics.tarp _run_tarp /
 * check_tarp), so numbers can be compared with sbi on the same samples.
 *
 * Pure functions on caller-owned arrays: nothing here allocates except the KS p-values
 * (see kstest.h), nothing keeps state, every function is thread safe.  Per-pair functions
 * (ranks, TARP counts) run inside the workers' units; the reductions (KS, histogram,
 * coverage, band, TARP curve, MMD) after the last unit.
 *
 * Shapes: samples of one pair are L x D floats, row-major (what eng_sample writes); a
 * ranks matrix is N x D ints, row-major, so column j of pair i is ranks[i * D + j].
 *
 * Definitions (L samples theta_l of pair i, ground truth theta*_i):
 *   SBC rank       r_ij = #{l : theta_lj < theta*_ij}                      (0 .. L)
 *   HPD rank       h_i  = #{l : log q(theta_l) > log q(theta*_i)}  (run_sbc with
 *                  reduce_fn = -log q: #{l : -log q(theta_l) < -log q(theta*)})
 *   central rank   c_ij = |2 r_ij - L|: theta*_ij lies in the central interval holding
 *                  a fraction alpha of the marginal samples when c_ij <= alpha L
 *   coverage       empirical(alpha_k) = #{i : rank_i <= alpha_k L} / N at alpha_k = k / K
 *                  (the ECDF of rank / L; HPD ranks and central ranks alike)
 *   band           [binom.ppf((1 - c) / 2, N, p_k), binom.ppf((1 + c) / 2, N, p_k)] / N with
 *                  p_k = (floor(alpha_k L) + 1) / (L + 1): where the ECDF of N uniform
 *                  ranks on {0..L} lies with probability c at each level
 *   TARP           sbi's _run_tarp (l2 distance, optional z-scoring by the min and max of
 *                  theta*, torch.histogram's bins over [min f, max f], see
 *                  cal_tarp_curve) and check_tarp.
 *   MMD^2          k(a, b) = sum_h h^2 / (h^2 + |a - b|^2); biased: the V-statistic over
 *                  all pairs; unbiased: without the i = j terms.
 */
#ifndef INNSERVE_CALIB_H
#define INNSERVE_CALIB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- per pair ----------------------------------------------------------------------- */

/* SBC ranks of one pair: ranks[j] = #{l : samples[l, j] < theta[j]}, j < D. */
void cal_sbc_ranks(int L, int D, const float *samples, const float *theta, int *ranks);

/* HPD rank of one pair: #{l : lp[l] > lp_theta}. */
int cal_hpd_rank(int L, const double *lp, double lp_theta);

/* Per-dimension z-scoring of TARP: lo[j] = min_i theta[i, j], span[j] = max - min + 1e-10
 * (sbi's z_score_theta), over N rows of D. */
void cal_tarp_scale(int N, int D, const float *theta, double *lo, double *span);

/* TARP count of one pair: #{l : d(ref, sample_l) < d(ref, theta)} with d the l2 distance
 * after z-scoring every point as (v - lo) / span when lo and span are given (NULL: raw). */
int cal_tarp_count(int L, int D, const float *samples, const float *theta, const double *ref,
                   const double *lo, const double *span);

/* Default TARP references: ref[i, j] = min_j + u (max_j - min_j) with u uniform in [0, 1)
 * from the engine's counter-based generator (stream = seed, observation 0xFFFFFFFD,
 * sample i, word j), min/max over the N rows of theta: sbi's get_tarp_references drawn
 * reproducibly. */
void cal_tarp_references(uint64_t seed, int N, int D, const float *theta, double *ref);

/* ---- reductions --------------------------------------------------------------------- */

/* KS test of column j of an N x D ranks matrix against U(0, L) (check_sbc's kstest):
 * scratch holds N doubles.  p is NaN when out of memory (kstest.h). */
void cal_rank_ks(int N, int D, const int *ranks, int j, int L, double *scratch, double *stat,
                 double *p);

/* Rank histogram of column j: B bins of [0, L], edges[b] = b L / B (B + 1 values), bin b
 * holding the ranks r with b L <= r B < (b + 1) L, the last bin closed. */
void cal_rank_histogram(int N, int D, const int *ranks, int j, int L, int B, double *edges,
                        long *counts);

/* empirical[k] = #{i : ranks[i * stride] <= k L / K} / N for k = 0..K (exact in integers). */
void cal_coverage(int N, const int *ranks, int stride, int L, int K, double *empirical);

/* Central ranks of column j into out (N values, stride 1): |2 r - L|. */
void cal_central_ranks(int N, int D, const int *ranks, int j, int L, int *out);

/* Smallest k in 0..n with P(Binomial(n, p) <= k) >= q, 0 < q < 1, 0 <= p <= 1. */
int cal_binom_ppf(double q, int n, double p);

/* Levels alpha_k = k / K and the band of the coverage ECDF at confidence c (see top). */
void cal_band(int N, int L, int K, double c, double *levels, double *lower, double *upper);

/* TARP curve from the N per-pair counts (f_i = count_i / L), B bins of equal width over
 * [min f, max f] (widened by 0.5 each side when all f are equal), as torch.histogram bins
 * them for _run_tarp: alpha = the B + 1 edges, ecp[0] = 0 and ecp[b + 1] = the fraction
 * of f in bins 0..b.  A value on an inner edge belongs to the bin above it, decided in
 * exact integer arithmetic (torch compares with edges rounded to double, which can put
 * such a value one bin lower).  scratch holds B longs. */
void cal_tarp_curve(int N, const int *counts, int L, int B, double *alpha, double *ecp,
                    long *scratch);

/* check_tarp: atc = sum_{k >= (B+1)/2} (ecp_k - alpha_k)(alpha_1 - alpha_0) and the
 * two-sample KS p-value of ecp against alpha.  scratch holds 2 (B + 1) doubles. */
void cal_tarp_check(int B, const double *alpha, const double *ecp, double *scratch,
                    double *atc, double *ks_p);

/* ---- MMD ---------------------------------------------------------------------------- */

/* The IMQ kernel matrix of n points z (n x D floats): K[a * n + b] = sum_s h_s^2 /
 * (h_s^2 + |z_a - z_b|^2), n_scales widths h. */
void cal_imq_matrix(int n, int D, const float *z, int n_scales, const double *h, double *K);

/* MMD^2 between the first nx points and the other nz - nx of the pooled points, the points
 * taken in the order idx (NULL: 0, 1, ...), K the pooled nz x nz kernel matrix.  unbiased
 * needs nx >= 2 and nz - nx >= 2. */
double cal_mmd2(int nz, int nx, const double *K, const int *idx, bool unbiased);

/* Permutation number p (p >= 0) of 0..n-1 into perm: Fisher-Yates driven by the engine's
 * counter-based generator (seed, observation 0xFFFFFFFE, sample p).  Deterministic. */
void cal_permutation(uint64_t seed, uint64_t p, int n, int *perm);

/* Permutation p-value: (1 + #{permutations whose MMD^2 >= the observed}) / (1 + P), with
 * the points permuted by cal_permutation(seed, 0..P-1).  idx: nz ints of scratch. */
double cal_mmd_pvalue(int nz, int nx, const double *K, bool unbiased, double observed,
                      uint64_t seed, int P, int *idx);

#endif
