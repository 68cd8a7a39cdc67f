/*
 * test_calib.c — engine/calib.h and engine/kstest.h against sbi and SciPy: every number in
 * tests/fixtures/calibration/sbi_reference.json (written by gen_sbi.py there, which runs
 * sbi's _run_sbc / _run_tarp / check_tarp and SciPy's kstest / ks_2samp / binom.ppf on the
 * same float32 samples and float64 log-densities) is recomputed here.  Ranks, histograms,
 * coverage ECDFs and band quantiles must be equal; KS statistics, TARP curves and p-values
 * equal to within the stated relative tolerances (the p-values of SciPy's Durbin and
 * Pomeranz methods sum matrix products in BLAS order, so they agree to rounding, not bit
 * for bit).  TARP: where torch binned a value sitting on an inner edge one bin lower (its
 * edges are rounded doubles; cal_tarp_curve decides in exact arithmetic), the fixture holds
 * the exact curve too, and sbi's own curve is reproduced here from an emulation of torch's
 * edges.  Also: properties of the MMD permutation test and of the permutations.
 * Prints the largest relative differences seen.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../engine/calib.h"
#include "../../engine/kstest.h"
#include "testutil.h"

#define FIXTURE "tests/fixtures/calibration/sbi_reference.json"

/* Tolerances (relative, with an absolute floor for values near 0). */
#define TOL_KS_P 1e-10   /* one-sample p-values: rounding of 1 - cdf near 1 */
#define TOL_EXACT 1e-13  /* statistics, TARP curves and two-sample p-values */

static cJSON *g_doc;
static double g_worst_p, g_worst_tarp;

static cJSON *doc(void)
{
    if (!g_doc) {
        char *text = tu_slurp(FIXTURE, NULL);
        ck_assert_msg(text != NULL, "cannot read %s", FIXTURE);
        g_doc = cJSON_Parse(text);
        free(text);
        ck_assert_msg(g_doc != NULL, "%s is not JSON", FIXTURE);
    }
    return g_doc;
}

static const cJSON *get(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    ck_assert_msg(v != NULL, "fixture lacks '%s'", k);
    return v;
}

static double num(const cJSON *o, const char *k) { return get(o, k)->valuedouble; }

/* array -> new buffers */
static double *dvec(const cJSON *a, int *n)
{
    int len = cJSON_GetArraySize(a), i = 0;
    double *v = malloc(sizeof(double) * (size_t)(len ? len : 1));
    for (const cJSON *c = a->child; c; c = c->next)
        v[i++] = c->valuedouble;
    if (n)
        *n = len;
    return v;
}

static float *fvec(const cJSON *a)
{
    int n;
    double *d = dvec(a, &n);
    float *f = malloc(sizeof(float) * (size_t)(n ? n : 1));
    for (int i = 0; i < n; i++)
        f[i] = (float)d[i];
    free(d);
    return f;
}

static double rel(double a, double b)
{
    if (a == b)
        return 0.0;
    return fabs(a - b) / fmax(fabs(b), 1e-300);
}

static void near(double got, double want, double tol, const char *what, int i, double *worst)
{
    double r = rel(got, want);
    if (fabs(got - want) <= 1e-300)
        r = 0.0;
    if (worst && r > *worst)
        *worst = r;
    ck_assert_msg(r <= tol, "%s[%d]: got %.17g, want %.17g (rel %.3g > %.3g)", what, i, got,
                  want, r, tol);
}

START_TEST(kolmogn_matches_scipy_on_every_method)
{
    const cJSON *rows = get(doc(), "kolmogn");
    int i = 0;
    double worst = 0.0;
    for (const cJSON *r = rows->child; r; r = r->next, i++) {
        int n = cJSON_GetArrayItem(r, 0)->valueint;
        double x = cJSON_GetArrayItem(r, 1)->valuedouble;
        bool cdf = cJSON_IsTrue(cJSON_GetArrayItem(r, 2));
        double want = cJSON_GetArrayItem(r, 3)->valuedouble;
        double got = kst_kolmogn(n, x, cdf);
        /* an sf below 1e-300 may be a subnormal rounded differently */
        if (want < 1e-290 && got < 1e-290)
            continue;
        near(got, want, TOL_KS_P, "kolmogn", i, &worst);
    }
    ck_assert_int_ge(i, 400);
    printf("kolmogn: %d values, largest relative difference from SciPy %.3g\n", i, worst);
}
END_TEST

START_TEST(ks_uniform_matches_scipy_kstest)
{
    const cJSON *rows = get(doc(), "ks_uniform");
    int k = 0;
    for (const cJSON *r = rows->child; r; r = r->next, k++) {
        int n;
        double *v = dvec(get(r, "ranks"), &n);
        double *s = malloc(sizeof(double) * (size_t)n);
        memcpy(s, v, sizeof(double) * (size_t)n);
        /* sort as cal_rank_ks does, through it with D = 1 */
        int *ri = malloc(sizeof(int) * (size_t)n);
        for (int i = 0; i < n; i++)
            ri[i] = (int)v[i];
        double stat, p;
        cal_rank_ks(n, 1, ri, 0, (int)num(r, "L"), s, &stat, &p);
        near(stat, num(r, "statistic"), TOL_EXACT, "ks statistic", k, NULL);
        near(p, num(r, "pvalue"), TOL_KS_P, "ks pvalue", k, &g_worst_p);
        free(v);
        free(s);
        free(ri);
    }
    ck_assert_int_ge(k, 8);
}
END_TEST

START_TEST(ks_two_sample_matches_scipy)
{
    const cJSON *rows = get(doc(), "ks_two_sample");
    int k = 0;
    for (const cJSON *r = rows->child; r; r = r->next, k++) {
        int n, n2;
        double *a = dvec(get(r, "a"), &n), *b = dvec(get(r, "b"), &n2);
        ck_assert_int_eq(n, n2);
        double stat, p;
        kst_two_sample(n, a, b, &stat, &p);
        near(stat, num(r, "statistic"), TOL_EXACT, "ks2 statistic", k, NULL);
        near(p, num(r, "pvalue"), TOL_EXACT, "ks2 pvalue", k, NULL);
        free(a);
        free(b);
    }
    ck_assert_int_ge(k, 4);
}
END_TEST

START_TEST(binomial_quantiles_match_scipy)
{
    const cJSON *rows = get(doc(), "binom_ppf");
    int k = 0;
    for (const cJSON *r = rows->child; r; r = r->next, k++) {
        double q = cJSON_GetArrayItem(r, 0)->valuedouble;
        int n = cJSON_GetArrayItem(r, 1)->valueint;
        double p = cJSON_GetArrayItem(r, 2)->valuedouble;
        int want = (int)cJSON_GetArrayItem(r, 3)->valuedouble;
        ck_assert_msg(cal_binom_ppf(q, n, p) == want, "binom.ppf(%g, %d, %g): got %d, want %d",
                      q, n, p, cal_binom_ppf(q, n, p), want);
    }
    ck_assert_int_ge(k, 100);
}
END_TEST

/* torch.linspace(lo, hi, n) in float64 as torch 1.13's AVX2 CPU kernel computes it
 * (compiled with multiply-adds contracted): chunks of 4 values base + k * step, two chunks at
 * a time while 8 values remain, the rest one by one; base = fma(step, i, lo) in the first
 * half, fma(-step, n - 1 - i, hi) in the second.  Checked against torch.linspace on random
 * grids when this test was written; used only to show that sbi's TARP curve differs from
 * cal_tarp_curve's exactly where a value sits on an inner edge that torch rounded. */
static void torch_linspace(double lo, double hi, int n, double *out)
{
    double step = (hi - lo) / (n - 1);
    int half = n / 2, i = 0;
    while (i + 8 <= n)
        for (int c = 0; c < 2; c++, i += 4) {
            double b = i < half ? fma(step, i, lo) : fma(-step, n - 1 - i, hi);
            for (int k = 0; k < 4; k++)
                out[i + k] = k ? b + k * step : b;
        }
    for (; i < n; i++)
        out[i] = i < half ? fma(step, i, lo) : fma(-step, n - 1 - i, hi);
}

/* sbi's TARP curve: f binned against torch's edges (the last bin closed), cumulative
 * fractions. */
static void sbi_tarp_curve(int N, const int *counts, int L, int B, double *ecp)
{
    double lo = INFINITY, hi = -INFINITY;
    for (int i = 0; i < N; i++) {
        lo = fmin(lo, (double)counts[i] / L);
        hi = fmax(hi, (double)counts[i] / L);
    }
    if (lo == hi) {
        lo -= 0.5;
        hi += 0.5;
    }
    double *e = malloc(sizeof(double) * (size_t)(B + 1));
    long *h = calloc((size_t)B, sizeof(long));
    torch_linspace(lo, hi, B + 1, e);
    for (int i = 0; i < N; i++) {
        double f = (double)counts[i] / L;
        int b = B - 1;
        while (b > 0 && f < e[b])
            b--;
        h[b]++;
    }
    long cum = 0;
    ecp[0] = 0.0;
    for (int b = 0; b < B; b++) {
        cum += h[b];
        ecp[b + 1] = (double)cum / N;
    }
    free(e);
    free(h);
}

/* Everything of one calibration case, computed the way the server does: per pair, then
 * the reductions. */
static void check_case(const cJSON *c)
{
    const char *name = get(c, "name")->valuestring;
    int N = (int)num(c, "N"), L = (int)num(c, "L"), D = (int)num(c, "D");
    const cJSON *ex = get(c, "expect");
    float *theta = fvec(get(c, "theta"));
    float *samples = fvec(get(c, "samples_pair_major"));
    double *lps = dvec(get(c, "lp_samples"), NULL);
    double *lpt = dvec(get(c, "lp_theta"), NULL);
    double *refs = dvec(get(c, "references"), NULL);
    int *ranks = malloc(sizeof(int) * (size_t)N * D);
    int *hpd = malloc(sizeof(int) * (size_t)N);
    int *counts = malloc(sizeof(int) * (size_t)N);
    double lo[8], span[8];
    bool z = cJSON_IsTrue(get(c, "z_score"));
    cal_tarp_scale(N, D, theta, lo, span);
    for (int i = 0; i < N; i++) {
        const float *s = samples + (size_t)i * L * D;
        cal_sbc_ranks(L, D, s, theta + (size_t)i * D, ranks + (size_t)i * D);
        hpd[i] = cal_hpd_rank(L, lps + (size_t)i * L, lpt[i]);
        counts[i] = cal_tarp_count(L, D, s, theta + (size_t)i * D, refs + (size_t)i * D,
                                   z ? lo : NULL, z ? span : NULL);
    }
    /* ranks: sbi's _run_sbc */
    int k = 0;
    for (const cJSON *r = get(ex, "ranks")->child; r; r = r->next, k++)
        ck_assert_msg(ranks[k] == r->valueint, "%s: rank %d: got %d, sbi %d", name, k,
                      ranks[k], r->valueint);
    ck_assert_int_eq(k, N * D);
    k = 0;
    for (const cJSON *r = get(ex, "hpd_ranks")->child; r; r = r->next, k++)
        ck_assert_msg(hpd[k] == r->valueint, "%s: hpd rank %d: got %d, sbi %d", name, k, hpd[k],
                      r->valueint);
    /* KS of every dimension: scipy.stats.kstest (sbi's check_sbc), and sbi's float32 */
    double *scratch = malloc(sizeof(double) * (size_t)(N + 2 * N + 64));
    const cJSON *ks_s = get(ex, "ks_statistic"), *ks_p = get(ex, "ks_pvalue"),
                *ks_f = get(ex, "sbi_ks_pvals_float32");
    for (int j = 0; j < D; j++) {
        double stat, p;
        cal_rank_ks(N, D, ranks, j, L, scratch, &stat, &p);
        near(stat, cJSON_GetArrayItem(ks_s, j)->valuedouble, TOL_EXACT, "ks_statistic", j,
             NULL);
        near(p, cJSON_GetArrayItem(ks_p, j)->valuedouble, TOL_KS_P, "ks_pvalue", j,
             &g_worst_p);
        ck_assert_msg((float)p == (float)cJSON_GetArrayItem(ks_f, j)->valuedouble,
                      "%s: ks p %g is not sbi's float32 %g", name, p,
                      cJSON_GetArrayItem(ks_f, j)->valuedouble);
    }
    /* histogram */
    int B = (int)num(ex, "hist_bins");
    double *edges = malloc(sizeof(double) * (size_t)(B + 1));
    long *hc = malloc(sizeof(long) * (size_t)B);
    const cJSON *hw = get(ex, "hist_counts")->child;
    for (int j = 0; j < D; j++) {
        cal_rank_histogram(N, D, ranks, j, L, B, edges, hc);
        ck_assert(edges[0] == 0.0 && edges[B] == L);
        for (int b = 0; b < B; b++, hw = hw->next)
            ck_assert_msg(hc[b] == hw->valueint, "%s: histogram dim %d bin %d: %ld vs %d",
                          name, j, b, hc[b], hw->valueint);
    }
    /* coverage and band */
    int K = (int)num(ex, "coverage_points");
    double *lev = malloc(sizeof(double) * (size_t)(K + 1) * 4);
    double *low = lev + K + 1, *up = low + K + 1, *emp = up + K + 1;
    cal_band(N, L, K, 0.95, lev, low, up);
    cal_coverage(N, hpd, 1, L, K, emp);
    for (int i = 0; i <= K; i++) {
        ck_assert(lev[i] == cJSON_GetArrayItem(get(ex, "levels"), i)->valuedouble);
        ck_assert_msg(low[i] == cJSON_GetArrayItem(get(ex, "band_lower"), i)->valuedouble,
                      "%s: band lower %d: %g", name, i, low[i]);
        ck_assert_msg(up[i] == cJSON_GetArrayItem(get(ex, "band_upper"), i)->valuedouble,
                      "%s: band upper %d: %g", name, i, up[i]);
        ck_assert(emp[i] == cJSON_GetArrayItem(get(ex, "hpd_empirical"), i)->valuedouble);
    }
    int *cr = malloc(sizeof(int) * (size_t)N);
    for (int j = 0; j < D; j++) {
        cal_central_ranks(N, D, ranks, j, L, cr);
        cal_coverage(N, cr, 1, L, K, emp);
        for (int i = 0; i <= K; i++)
            ck_assert(emp[i] == cJSON_GetArrayItem(get(ex, "central_empirical"),
                                                   j * (K + 1) + i)->valuedouble);
    }
    /* TARP: sbi's _run_tarp and check_tarp */
    int TB = (int)num(c, "tarp_bins");
    double *alpha = malloc(sizeof(double) * (size_t)(TB + 1) * 2);
    double *ecp = alpha + TB + 1, atc, tp;
    double *ts = malloc(sizeof(double) * (size_t)(2 * (TB + 1)));
    long *tl = malloc(sizeof(long) * (size_t)TB);
    cal_tarp_curve(N, counts, L, TB, alpha, ecp, tl);
    /* where torch put a value sitting on an inner edge one bin lower, the fixture holds
     * the exact curve too (and sbi's check_tarp of it) */
    const cJSON *exact = cJSON_GetObjectItemCaseSensitive(ex, "tarp_ecp_exact");
    const cJSON *want_ecp = exact ? exact : get(ex, "tarp_ecp");
    if (exact)
        printf("%s: %d TARP values on inner bin edges, compared with the exact curve\n", name,
               (int)num(ex, "tarp_values_on_inner_edges"));
    for (int i = 0; i <= TB; i++) {
        near(alpha[i], cJSON_GetArrayItem(get(ex, "tarp_alpha"), i)->valuedouble, TOL_EXACT,
             "tarp alpha", i, &g_worst_tarp);
        near(ecp[i], cJSON_GetArrayItem(want_ecp, i)->valuedouble, TOL_EXACT, "tarp ecp", i,
             &g_worst_tarp);
    }
    /* and sbi's own curve, bin for bin, from torch's rounded edges */
    double *tecp = malloc(sizeof(double) * (size_t)(TB + 1));
    sbi_tarp_curve(N, counts, L, TB, tecp);
    for (int i = 0; i <= TB; i++)
        near(tecp[i], cJSON_GetArrayItem(get(ex, "tarp_ecp"), i)->valuedouble, TOL_EXACT,
             "sbi's tarp ecp from torch's edges", i, NULL);
    free(tecp);
    cal_tarp_check(TB, alpha, ecp, ts, &atc, &tp);
    double want_atc = num(ex, exact ? "tarp_atc_exact" : "tarp_atc");
    ck_assert_msg(fabs(atc - want_atc) <= 1e-13 * fmax(1.0, fabs(want_atc)),
                  "%s: atc %.17g vs sbi %.17g", name, atc, want_atc);
    near(tp, num(ex, exact ? "tarp_ks_pvalue_exact" : "tarp_ks_pvalue"), TOL_EXACT,
         "tarp ks pvalue", 0, &g_worst_tarp);
    free(theta);
    free(samples);
    free(lps);
    free(lpt);
    free(refs);
    free(ranks);
    free(hpd);
    free(counts);
    free(scratch);
    free(edges);
    free(hc);
    free(lev);
    free(cr);
    free(alpha);
    free(ts);
    free(tl);
}

START_TEST(calibration_cases_match_sbi)
{
    int n = 0;
    for (const cJSON *c = get(doc(), "cases")->child; c; c = c->next, n++)
        check_case(c);
    ck_assert_int_ge(n, 4);
    printf("calibration: %d cases; largest relative difference of KS p-values %.3g, of TARP "
           "values %.3g\n", n, g_worst_p, g_worst_tarp);
}
END_TEST

START_TEST(mmd_matches_numpy_and_permutations_behave)
{
    const cJSON *m = get(doc(), "mmd");
    int nx = (int)num(m, "nx"), ny = (int)num(m, "ny"), D = (int)num(m, "dim"), nz = nx + ny;
    float *x = fvec(get(m, "x")), *y = fvec(get(m, "y"));
    float *z = malloc(sizeof(float) * (size_t)nz * D);
    memcpy(z, x, sizeof(float) * (size_t)nx * D);
    memcpy(z + (size_t)nx * D, y, sizeof(float) * (size_t)ny * D);
    int ns;
    double *h = dvec(get(m, "scales"), &ns);
    double *K = malloc(sizeof(double) * (size_t)nz * nz);
    cal_imq_matrix(nz, D, z, ns, h, K);
    double b = cal_mmd2(nz, nx, K, NULL, false), u = cal_mmd2(nz, nx, K, NULL, true);
    near(b, num(m, "biased"), 1e-12, "mmd biased", 0, NULL);
    near(u, num(m, "unbiased"), 1e-12, "mmd unbiased", 0, NULL);
    /* permutations: each is a permutation, deterministic, and they differ */
    int *p1 = malloc(sizeof(int) * (size_t)nz), *p2 = malloc(sizeof(int) * (size_t)nz);
    unsigned char *seen = calloc((size_t)nz, 1);
    cal_permutation(7, 3, nz, p1);
    for (int i = 0; i < nz; i++) {
        ck_assert(p1[i] >= 0 && p1[i] < nz && !seen[p1[i]]);
        seen[p1[i]] = 1;
    }
    cal_permutation(7, 3, nz, p2);
    ck_assert(memcmp(p1, p2, sizeof(int) * (size_t)nz) == 0);
    cal_permutation(7, 4, nz, p2);
    ck_assert(memcmp(p1, p2, sizeof(int) * (size_t)nz) != 0);
    /* the identity order gives the observed statistic */
    for (int i = 0; i < nz; i++)
        p2[i] = i;
    ck_assert(cal_mmd2(nz, nx, K, p2, true) == u);
    /* p-value: in (0, 1], (1 + k) / (1 + P), same for the same seed */
    double pv = cal_mmd_pvalue(nz, nx, K, true, u, 11, 99, p1);
    ck_assert(pv > 0 && pv <= 1);
    double k = pv * 100 - 1;
    ck_assert(fabs(k - nearbyint(k)) < 1e-9);
    ck_assert(cal_mmd_pvalue(nz, nx, K, true, u, 11, 99, p1) == pv);
    /* two samples of one distribution: not rejected; far apart: the smallest p-value */
    float *w = malloc(sizeof(float) * (size_t)nz * D);
    tu_randn(w, nz * D, 1.0f, 5);
    cal_imq_matrix(nz, D, w, ns, h, K);
    double same = cal_mmd_pvalue(nz, nx, K, true, cal_mmd2(nz, nx, K, NULL, true), 1, 99, p1);
    ck_assert_msg(same > 0.05, "same distribution rejected: p = %g", same);
    for (int i = nx * D; i < nz * D; i++)
        w[i] += 3.0f;
    cal_imq_matrix(nz, D, w, ns, h, K);
    double far = cal_mmd_pvalue(nz, nx, K, false, cal_mmd2(nz, nx, K, NULL, false), 1, 99, p1);
    ck_assert_msg(far == 1.0 / 100, "shifted sample: p = %g", far);
    free(x);
    free(y);
    free(z);
    free(h);
    free(K);
    free(p1);
    free(p2);
    free(seen);
    free(w);
}
END_TEST

START_TEST(tarp_references_lie_in_the_box_and_are_reproducible)
{
    float theta[3 * 2] = {0.f, -1.f, 2.f, 4.f, 1.f, 0.f};
    double a[6], b[6];
    cal_tarp_references(42, 3, 2, theta, a);
    cal_tarp_references(42, 3, 2, theta, b);
    ck_assert(memcmp(a, b, sizeof a) == 0);
    for (int i = 0; i < 3; i++) {
        ck_assert(a[i * 2] >= 0.0 && a[i * 2] < 2.0);
        ck_assert(a[i * 2 + 1] >= -1.0 && a[i * 2 + 1] < 4.0);
    }
    cal_tarp_references(43, 3, 2, theta, b);
    ck_assert(memcmp(a, b, sizeof a) != 0);
}
END_TEST

START_TEST(ranks_count_strictly_smaller_samples)
{
    float s[4 * 2] = {1, 5, 2, 5, 3, 5, 4, 5};
    float t[2] = {3, 5};
    int r[2];
    cal_sbc_ranks(4, 2, s, t, r);
    ck_assert_int_eq(r[0], 2); /* 1 and 2 < 3; ties do not count */
    ck_assert_int_eq(r[1], 0);
    double lp[4] = {-1, -2, -3, -2};
    ck_assert_int_eq(cal_hpd_rank(4, lp, -2), 1);
    int c[3] = {0, 4, 2};
    int central[3];
    int rk[3] = {0, 4, 2};
    cal_central_ranks(3, 1, rk, 0, 4, central);
    ck_assert_int_eq(central[0], 4);
    ck_assert_int_eq(central[1], 4);
    ck_assert_int_eq(central[2], 0);
    double e[3];
    cal_coverage(3, c, 1, 4, 2, e); /* levels 0, 0.5, 1: ranks <= 0, <= 2, <= 4 */
    ck_assert(e[0] == 1.0 / 3 && e[1] == 2.0 / 3 && e[2] == 1.0);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("calib");
    TCase *tc = tcase_create("calib");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, kolmogn_matches_scipy_on_every_method);
    tcase_add_test(tc, ks_uniform_matches_scipy_kstest);
    tcase_add_test(tc, ks_two_sample_matches_scipy);
    tcase_add_test(tc, binomial_quantiles_match_scipy);
    tcase_add_test(tc, calibration_cases_match_sbi);
    tcase_add_test(tc, mmd_matches_numpy_and_permutations_behave);
    tcase_add_test(tc, tarp_references_lie_in_the_box_and_are_reproducible);
    tcase_add_test(tc, ranks_count_strictly_smaller_samples);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN
