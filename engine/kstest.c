/*
 * kstest.c — Kolmogorov-Smirnov distributions and tests (kstest.h), a port of SciPy 1.10's
 * scipy/stats/_ksstats.py (kolmogn and its methods), scipy/special/cephes/kolmogorov.c
 * (smirnov, with the double-double helpers of cephes' dd_real) and the statistic parts of
 * scipy.stats.ks_1samp / ks_2samp.  The structure, branch points and constants follow
 * SciPy line by line so the same (n, x) takes the same method; where NumPy switches an
 * intermediate to long double (scaling by 2^128 with a long double constant), so does this
 * code.  Sums of several terms may be added in another order than NumPy's, so results
 * agree with SciPy to a few units in the last place, not bit for bit.
 */
#include "kstest.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>

#define KS_E128 128
#define KS_EP128 0x1p128L
#define KS_EM128 0x1p-128L
#define KS_MIN_LOG (-708)
#define KS_MINLOG (-7.451332191019412076235E2) /* cephes MINLOG: log(2^-1075) */
#define KS_SMIRNOV_MAX_COMPUTE_N 1000000
#define KS_SM_UPPER_MAX_TERMS 3
#define KS_SM_UPPERSUM_MIN_N 10
#define KS_MAX_EXPONENT 960

static double clip01(double p) { return p < 0.0 ? 0.0 : p > 1.0 ? 1.0 : p; }
static long double clip01l(long double p) { return p < 0.0L ? 0.0L : p > 1.0L ? 1.0L : p; }

/* ---- double-double arithmetic (cephes dd_real) ------------------------------------ */

struct dd {
    double hi, lo;
};

static struct dd dd_make(double hi, double lo) { return (struct dd){hi, lo}; }

static double quick_two_sum(double a, double b, double *err)
{
    double s = a + b;
    double c = s - a;
    *err = b - c;
    return s;
}

static double two_sum(double a, double b, double *err)
{
    double s = a + b;
    double c = s - a;
    double d = b - c;
    double e = s - c;
    *err = (a - e) + d;
    return s;
}

/* Exact product error by fma (the same value as Dekker's split in cephes). */
static double two_prod(double a, double b, double *err)
{
    double p = a * b;
    *err = fma(a, b, -p);
    return p;
}

static bool dd_zero(struct dd a) { return a.hi == 0.0; }

static struct dd dd_neg(struct dd a) { return dd_make(-a.hi, -a.lo); }

static struct dd dd_add_d_d(double a, double b)
{
    double e, s = two_sum(a, b, &e);
    return dd_make(s, e);
}

static struct dd dd_add_dd_d(struct dd a, double b)
{
    double s2, s1 = two_sum(a.hi, b, &s2);
    s2 += a.lo;
    s1 = quick_two_sum(s1, s2, &s2);
    return dd_make(s1, s2);
}

static struct dd dd_add(struct dd a, struct dd b)
{
    double s2, t2;
    double s1 = two_sum(a.hi, b.hi, &s2);
    double t1 = two_sum(a.lo, b.lo, &t2);
    s2 += t1;
    s1 = quick_two_sum(s1, s2, &s2);
    s2 += t2;
    s1 = quick_two_sum(s1, s2, &s2);
    return dd_make(s1, s2);
}

static struct dd dd_sub(struct dd a, struct dd b) { return dd_add(a, dd_neg(b)); }

static struct dd dd_sub_dd_d(struct dd a, double b)
{
    double s2, s1 = two_sum(a.hi, -b, &s2);
    s2 += a.lo;
    s1 = quick_two_sum(s1, s2, &s2);
    return dd_make(s1, s2);
}

static struct dd dd_mul(struct dd a, struct dd b)
{
    double p2, p1 = two_prod(a.hi, b.hi, &p2);
    p2 += (a.hi * b.lo + a.lo * b.hi);
    p1 = quick_two_sum(p1, p2, &p2);
    return dd_make(p1, p2);
}

static struct dd dd_mul_dd_d(struct dd a, double b)
{
    double e1, e2;
    double p1 = two_prod(a.hi, b, &e1);
    double p2 = two_prod(a.lo, b, &e2);
    p1 = quick_two_sum(p1, e2 + p2 + e1, &e1);
    return dd_make(p1, e1);
}

static struct dd dd_mul_d_dd(double a, struct dd b) { return dd_mul_dd_d(b, a); }

static struct dd dd_div(struct dd a, struct dd b)
{
    double q1 = a.hi / b.hi;
    struct dd r = dd_sub(a, dd_mul_dd_d(b, q1));
    double q2 = r.hi / b.hi;
    r = dd_sub(r, dd_mul_dd_d(b, q2));
    double q3 = r.hi / b.hi;
    q1 = quick_two_sum(q1, q2, &q2);
    return dd_add_dd_d(dd_make(q1, q2), q3);
}

static struct dd dd_div_d_d(double a, double b) { return dd_div(dd_make(a, 0), dd_make(b, 0)); }
static struct dd dd_div_dd_d(struct dd a, double b) { return dd_div(a, dd_make(b, 0)); }
static struct dd dd_inv(struct dd a) { return dd_div(dd_make(1.0, 0.0), a); }

static struct dd dd_floor(struct dd a)
{
    double hi = floor(a.hi), lo = 0.0;
    if (hi == a.hi) {
        lo = floor(a.lo);
        hi = quick_two_sum(hi, lo, &lo);
    }
    return dd_make(hi, lo);
}

static struct dd dd_ldexp(struct dd a, int e) { return dd_make(ldexp(a.hi, e), ldexp(a.lo, e)); }

static struct dd dd_frexp(struct dd a, int *expt)
{
    int e;
    double man = frexp(a.hi, &e);
    double b1 = ldexp(a.lo, -e);
    if (fabs(man) == 0.5 && man * b1 < 0) {
        man *= 2;
        b1 *= 2;
        e -= 1;
    }
    *expt = e;
    return dd_make(man, b1);
}

/* ---- smirnov (cephes kolmogorov.c) ------------------------------------------------- */

static double next_power_of_2(double x)
{
    double q = ldexp(x, 1 - DBL_MANT_DIG);
    double L = fabs(q + x);
    if (L == 0) {
        L = fabs(x);
    } else {
        int li = (int)L;
        if (li == L)
            L = li;
    }
    return L;
}

static double mod_nx(int n, double x, int *nx_floor, double *nx_out)
{
    /* cephes: mul_dd(n, x), the exact product of two doubles */
    double e, p = two_prod((double)n, x, &e);
    struct dd nxd = dd_make(p, e);
    struct dd fl = dd_floor(nxd);
    struct dd al = dd_sub(nxd, fl);
    double alpha = al.hi;
    int nxf = (int)fl.hi;
    if (alpha == 1) {
        nxf += 1;
        alpha = 0;
    }
    *nx_out = nxd.hi;
    *nx_floor = nxf;
    return alpha;
}

static void update_binomial(struct dd *cman, int *cexpt, int n, int j)
{
    int expt;
    struct dd rat = dd_div_d_d(n - j, j + 1.0);
    struct dd man2 = dd_mul(*cman, rat);
    man2 = dd_frexp(man2, &expt);
    *cexpt += expt;
    *cman = man2;
}

static struct dd pow_d(struct dd a, int m)
{
    if (m <= 0) {
        if (m == 0)
            return dd_make(1.0, 0.0);
        return dd_inv(pow_d(a, -m));
    }
    if (dd_zero(a))
        return dd_make(0.0, 0.0);
    double ans = pow(a.hi, m);
    double r = a.lo / a.hi;
    double adj = m * r;
    if (fabs(adj) > 1e-8) {
        if (fabs(adj) < 1e-4)
            adj += (m * r) * ((m - 1) / 2.0 * r);
        else
            adj = expm1(m * log1p(r));
    }
    return dd_add_d_d(ans, ans * adj);
}

static double pow2(double a, double b, int m) { return pow_d(dd_add_d_d(a, b), m).hi; }

static struct dd pow2_scaled(struct dd a, int m, int *pexp)
{
    struct dd ans, y;
    int ans_e, y_e, max_expt = KS_MAX_EXPONENT;
    if (m <= 0) {
        int e1, e2;
        if (m == 0) {
            *pexp = 0;
            return dd_make(1.0, 0.0);
        }
        ans = pow2_scaled(a, -m, &e1);
        ans = dd_frexp(dd_inv(ans), &e2);
        *pexp = -e1 + e2;
        return ans;
    }
    y = dd_frexp(a, &y_e);
    if (m == 1) {
        *pexp = y_e;
        return y;
    }
    if (m * (y.hi - 1) / y.hi < -KS_MAX_EXPONENT * M_LN2) {
        double lg2y = log(y.hi) / M_LN2;
        double lg_ans = m * lg2y;
        if (lg_ans <= -KS_MAX_EXPONENT)
            max_expt = (int)(next_power_of_2(-KS_MAX_EXPONENT / lg2y + 1) / 2);
    }
    if (m <= max_expt) {
        struct dd a1 = pow_d(y, m);
        ans = dd_frexp(a1, &ans_e);
        ans_e += m * y_e;
        *pexp = ans_e;
        return ans;
    }
    int q = m / max_expt, r = m % max_expt, y2r_e, y2m_e, y2mq_e;
    struct dd y2r = pow2_scaled(y, r, &y2r_e);
    struct dd y2m = pow2_scaled(y, max_expt, &y2m_e);
    struct dd y2mq = pow2_scaled(y2m, q, &y2mq_e);
    ans = dd_frexp(dd_mul(y2r, y2mq), &ans_e);
    y2mq_e += y2m_e * q;
    ans_e += y2mq_e + y2r_e;
    ans_e += m * y_e;
    *pexp = ans_e;
    return ans;
}

/* ((a + b) / (c + d))^m in double-double. */
static struct dd pow4_d(double a, double b, double c, double d, int m)
{
    if (m <= 0) {
        if (m == 0)
            return dd_make(1.0, 0.0);
        return pow4_d(c, d, a, b, -m);
    }
    struct dd A = dd_add_d_d(a, b), C = dd_add_d_d(c, d);
    if (dd_zero(A))
        return dd_zero(C) ? dd_make(NAN, NAN) : dd_make(0.0, 0.0);
    if (dd_zero(C))
        return A.hi < 0 ? dd_make(-INFINITY, -INFINITY) : dd_make(INFINITY, INFINITY);
    return pow_d(dd_div(A, C), m);
}

/* A_v(n, x) = C(n, v) (1 - x - v/n)^(n-v) (x + v/n)^(v-1), C(n, v) = cman 2^cexpt. */
static struct dd compute_av(int n, double x, int v, struct dd cman, int cexpt)
{
    int t1e, t2e;
    struct dd t2x = dd_sub_dd_d(dd_div_d_d(n - v, n), x);
    struct dd t2 = pow2_scaled(t2x, n - v, &t2e);
    struct dd t1x = dd_add_dd_d(dd_div_d_d(v, n), x);
    struct dd t1 = pow2_scaled(t1x, v - 1, &t1e);
    struct dd ans = dd_mul(dd_mul(t1, t2), cman);
    return dd_ldexp(ans, cexpt + t1e + t2e);
}

double kst_smirnov_sf(int n, double x)
{
    if (isnan(x) || !(n > 0 && x >= 0.0 && x <= 1.0))
        return NAN;
    if (n == 1)
        return 1 - x;
    if (x == 0.0)
        return 1.0;
    if (x == 1.0)
        return 0.0;
    double nx, sf;
    int nxfl;
    double alpha = mod_nx(n, x, &nxfl, &nx);
    int n1mxfl = n - nxfl - (alpha == 0 ? 0 : 1);
    int n1mxceil = n - nxfl;
    if (alpha == 0) {
        n1mxfl -= 1;
        n1mxceil += 1;
    }
    if (nxfl == 0 || (nxfl == 1 && alpha == 0)) {
        double t = pow2(1, x, n - 1);
        return 1 - x * t;
    }
    if (-2 * n * x * x < KS_MINLOG)
        return 0;
    if (nxfl >= n - 1)
        return pow2(1, -x, n);
    if (n > KS_SMIRNOV_MAX_COMPUTE_N) {
        double logp = -pow(6.0 * n * x + 1, 2) / 18.0 / n;
        if (logp < -M_LN2)
            return exp(logp);
        return 1 - (-expm1(logp));
    }
    int n_upper = n - n1mxceil + 1;
    bool upper = (n_upper <= 1 && x < 0.5);
    upper = upper || ((n >= KS_SM_UPPERSUM_MIN_N) && (n_upper <= KS_SM_UPPER_MAX_TERMS) &&
                      (x <= 0.5 / sqrt(n)));
    int start = 0, step = 1, n_terms = n1mxfl + 1, vmid = n / 2, cexpt = 0;
    struct dd cman = dd_make(1.0, 0.0), aj, sum = dd_make(0.0, 0.0);
    if (upper) {
        start = n;
        step = -1;
        n_terms = n - n1mxceil + 1;
        aj = pow4_d(1, x, 1, 0, n - 1);
    } else {
        struct dd t2 = pow4_d(1, -x, 1, 0, n);
        aj = dd_div_dd_d(t2, x);
    }
    sum = dd_add(sum, aj);
    update_binomial(&cman, &cexpt, n, 0);
    for (int j = 1; j < n_terms; j++) {
        int v = start + j * step;
        aj = compute_av(n, x, v, cman, cexpt);
        if (isfinite(aj.hi) && !dd_zero(aj))
            sum = dd_add(sum, aj);
        if (!dd_zero(aj)) {
            if ((4 * (n_terms - j) * fabs(aj.hi) < DBL_EPSILON * sum.hi) && (j != n_terms - 1))
                break;
        } else if (j > vmid) {
            break;
        }
        update_binomial(&cman, &cexpt, n, j);
    }
    double prob = dd_mul_d_dd(x, sum).hi;
    sf = step < 0 ? 1 - prob : prob;
    return clip01(sf);
}

/* ---- kolmogn (scipy/stats/_ksstats.py) --------------------------------------------- */

static const double STIRLING[8] = {
    -2.955065359477124183e-2, 6.4102564102564102564e-3, -1.9175269175269175269e-3,
    8.4175084175084175084e-4, -5.952380952380952381e-4, 7.9365079365079365079e-4,
    -2.7777777777777777778e-3, 8.3333333333333333333e-2};

static double log_nfact_div_n_pow_n(int n)
{
    double rn = 1.0 / n, x = rn / n, pv = 0.0;
    for (int i = 0; i < 8; i++)
        pv = pv * x + STIRLING[i];
    return log((double)n) / 2 - n + log(2 * M_PI) / 2 + rn * pv;
}

static long double select_clip(long double cdfp, long double sfp, bool cdf)
{
    return clip01l(cdf ? cdfp : sfp);
}

/* c = a (m x m) @ b, row-major. */
static void matmul(int m, const double *a, const double *b, double *c)
{
    for (int i = 0; i < m; i++)
        for (int j = 0; j < m; j++) {
            double s = 0.0;
            for (int k = 0; k < m; k++)
                s += a[i * m + k] * b[k * m + j];
            c[i * m + j] = s;
        }
}

/* P(D_n <= d) by Durbin's matrix (Marsaglia-Tsang-Wang); NaN when out of memory. */
static long double kolmogn_dmtw(int n, double d)
{
    if (d >= 1.0)
        return 1.0L;
    double nd = n * d;
    if (nd <= 0.5)
        return 0.0L;
    int k = (int)ceil(nd);
    double h = k - nd;
    int m = 2 * k - 1;
    size_t mm = (size_t)m * (size_t)m;
    double *buf = malloc(sizeof(double) * (4 * mm + 2 * (size_t)m));
    if (!buf)
        return NAN;
    double *H = buf, *P = H + mm, *T = P + mm, *T2 = T + mm, *v = T2 + mm, *w = v + m;
    double fac = 1.0;
    for (int j = 1; j <= m; j++) {
        v[j - 1] = 1.0 - pow(h, j);
        w[j - 1] = fac;
        fac /= j;
        v[j - 1] *= fac;
    }
    double tt = pow(fmax(2 * h - 1.0, 0), m) - 2 * pow(h, m);
    v[m - 1] = (1.0 + tt) * fac;
    for (size_t i = 0; i < mm; i++)
        H[i] = 0.0;
    for (int i = 1; i < m; i++)
        for (int r = i - 1; r < m; r++)
            H[r * m + i] = w[r - (i - 1)];
    for (int r = 0; r < m; r++)
        H[r * m] = v[r];
    for (int c = 0; c < m; c++)
        H[(m - 1) * m + c] = v[m - 1 - c];
    for (int i = 0; i < m; i++)
        for (int j = 0; j < m; j++)
            P[i * m + j] = i == j;
    int nn = n, expnt = 0, hexpnt = 0;
    while (nn > 0) {
        if (nn % 2) {
            matmul(m, P, H, T);
            for (size_t i = 0; i < mm; i++)
                P[i] = T[i];
            expnt += hexpnt;
        }
        matmul(m, H, H, T2);
        for (size_t i = 0; i < mm; i++)
            H[i] = T2[i];
        hexpnt *= 2;
        if ((long double)fabs(H[(k - 1) * m + (k - 1)]) > KS_EP128) {
            for (size_t i = 0; i < mm; i++)
                H[i] = (double)(H[i] / KS_EP128);
            hexpnt += KS_E128;
        }
        nn /= 2;
    }
    double p = P[(k - 1) * m + (k - 1)];
    free(buf);
    /* NumPy: p stays float64 until the first rescale by the long double 2^128 */
    long double pl = 0.0L;
    bool wide = false;
    for (int i = 1; i <= n; i++) {
        if (!wide) {
            p = i * p / n;
            if (fabs(p) < (double)KS_EM128) {
                pl = (long double)p * KS_EP128;
                expnt -= KS_E128;
                wide = true;
            }
        } else {
            pl = i * pl / n;
            if (fabsl(pl) < KS_EM128) {
                pl *= KS_EP128;
                expnt -= KS_E128;
            }
        }
    }
    if (!wide)
        pl = p;
    if (expnt != 0)
        pl = ldexpl(pl, expnt);
    return clip01l(pl);
}

/* full convolution of a (la) and v (lv) into c (la + lv - 1) */
static void convolve(const double *a, int la, const double *v, int lv, double *c)
{
    for (int k = 0; k < la + lv - 1; k++) {
        double s = 0.0;
        for (int j = 0; j < la; j++)
            if (k - j >= 0 && k - j < lv)
                s += a[j] * v[k - j];
        c[k] = s;
    }
}

static void pomeranz_j1j2(int i, int n, int ll, int ceilf, int roundf, int *j1o, int *j2o)
{
    int j1, j2;
    if (i == 0) {
        j1 = -ll - ceilf - 1;
        j2 = ll + ceilf - 1;
    } else {
        int d2 = (i + 1) / 2, m2 = (i + 1) % 2;
        if (m2 == 0) {
            if (d2 == n + 1) {
                j1 = n - ll - ceilf - 1;
                j2 = n + ll + ceilf - 1;
            } else {
                j1 = d2 - 1 - ll - roundf - 1;
                j2 = d2 + ll - 1 + ceilf - 1;
            }
        } else {
            j1 = d2 - 1 - ll - 1;
            j2 = d2 + ll + roundf - 1;
        }
    }
    *j1o = j1 + 2 > 0 ? j1 + 2 : 0;
    *j2o = j2 < n ? j2 : n;
}

/* Largest number of powers Pomeranz needs: n <= 140 and n x^2 <= 4 give floor(n x) <= 23. */
#define KS_POM_MAX 64

/* P(D_n <= x) by the Pomeranz recursion (n <= 140, n x^2 <= 4 here). */
static long double kolmogn_pomeranz(int n, double x)
{
    double t = n * x;
    int ll = (int)floor(t);
    double f = 1.0 * (t - ll);
    double g = fmin(f, 1.0 - f);
    int ceilf = f > 0 ? 1 : 0, roundf = f > 0.5 ? 1 : 0;
    int npwrs = 2 * (ll + 1);
    if (npwrs > KS_POM_MAX)
        return NAN;
    double gp[KS_POM_MAX], tgp[KS_POM_MAX], omp[KS_POM_MAX];
    double V0[KS_POM_MAX] = {0}, V1[KS_POM_MAX] = {0}, conv[2 * KS_POM_MAX];
    gp[0] = tgp[0] = omp[0] = 1.0;
    int expnt = 0;
    double gn = g / n, tgn = 2 * g / n, omn = (1 - 2 * g) / n;
    for (int m = 1; m < npwrs; m++) {
        gp[m] = gp[m - 1] * gn / m;
        tgp[m] = tgp[m - 1] * tgn / m;
        omp[m] = omp[m - 1] * omn / m;
    }
    V1[0] = 1;
    int v0s = 0, v1s = 0, j1, j2;
    pomeranz_j1j2(0, n, ll, ceilf, roundf, &j1, &j2);
    for (int i = 1; i < 2 * n + 2; i++) {
        int k1 = j1;
        for (int q = 0; q < npwrs; q++) {
            double tmp = V0[q];
            V0[q] = V1[q];
            V1[q] = tmp;
        }
        int ts = v0s;
        v0s = v1s;
        v1s = ts;
        for (int q = 0; q < npwrs; q++)
            V1[q] = 0.0;
        pomeranz_j1j2(i, n, ll, ceilf, roundf, &j1, &j2);
        const double *pw = (i == 1 || i == 2 * n + 1) ? gp : (i % 2 ? tgp : omp);
        int ln2 = j2 - k1 + 1;
        if (ln2 > 0) {
            int off = k1 - v0s;
            int la = npwrs - off < ln2 ? npwrs - off : ln2;
            if (off < 0 || la <= 0)
                return NAN;
            convolve(V0 + off, la, pw, ln2, conv);
            int cs = j1 - k1, cl = j2 - j1 + 1;
            for (int q = 0; q < cl; q++)
                V1[q] = conv[cs + q];
            double mx = V1[0];
            for (int q = 1; q < npwrs; q++)
                mx = V1[q] > mx ? V1[q] : mx;
            if (0 < mx && (long double)mx < KS_EM128) {
                for (int q = 0; q < npwrs; q++)
                    V1[q] = (double)(V1[q] * KS_EP128);
                expnt -= KS_E128;
            }
            v1s = v0s + j1 - k1;
        }
    }
    double ans = V1[n - v1s];
    long double al = 0.0L;
    bool wide = false;
    for (int m = 1; m <= n; m++) {
        if (!wide) {
            if ((long double)fabs(ans) > KS_EP128) {
                al = (long double)ans * KS_EM128;
                expnt += KS_E128;
                wide = true;
                al *= m;
            } else {
                ans *= m;
            }
        } else {
            if (fabsl(al) > KS_EP128) {
                al *= KS_EM128;
                expnt += KS_E128;
            }
            al *= m;
        }
    }
    if (!wide)
        al = ans;
    if (expnt != 0)
        al = ldexpl(al, expnt);
    return clip01l(al);
}

static double kolmogn_pelzgood(int n, double x)
{
    if (x <= 0.0)
        return 0.0;
    if (x >= 1.0)
        return 1.0;
    const double PI2 = M_PI * M_PI, PI4 = PI2 * PI2, PI6 = PI4 * PI2;
    const double SQRT2PI = sqrt(2 * M_PI), SQRT3 = sqrt(3.0);
    double z = sqrt((double)n) * x;
    double z2 = pow(z, 2), z3 = pow(z, 3), z4 = pow(z, 4), z6 = pow(z, 6);
    double qlog = -PI2 / 8 / z2;
    if (qlog < KS_MIN_LOG)
        return 0.0;
    double q = exp(qlog);
    double k1a = -z2, k1b = PI2 / 4;
    double k2a = 6 * z6 + 2 * z4, k2b = (2 * z4 - 5 * z2) * PI2 / 4,
           k2c = PI4 * (1 - 2 * z2) / 16;
    double k3d = PI6 * (5 - 30 * z2) / 64, k3c = PI4 * (-60 * z2 + 212 * z4) / 16,
           k3b = PI2 * (135 * z4 - 96 * z6) / 4, k3a = -30 * z6 - 90 * pow(z, 8);
    double K[4] = {0, 0, 0, 0};
    int maxk = (int)ceil(16 * z / M_PI);
    for (int k = maxk; k > 0; k--) {
        double m = 2 * k - 1, m2 = m * m, m4 = m2 * m2, m6 = m4 * m2;
        double qp = pow(q, 8 * k);
        double c[4] = {1.0, k1a + k1b * m2, k2a + k2b * m2 + k2c * m4,
                       k3a + k3b * m2 + k3c * m4 + k3d * m6};
        for (int i = 0; i < 4; i++)
            K[i] = K[i] * qp + c[i];
    }
    double den[4] = {z, 6 * z4, 72 * pow(z, 7), 6480 * pow(z, 10)};
    for (int i = 0; i < 4; i++)
        K[i] = K[i] * q * SQRT2PI / den[i];
    q = exp(-PI2 / 2 / z2);
    double k2x = 0.0, k3x = 0.0, s3z = SQRT3 * z;
    for (int k = maxk; k > 0; k--) {
        double ks = (double)k * k, qpw = pow(q, ks), kspi = M_PI * k;
        k2x += ks * qpw;
        k3x += (s3z + kspi) * (s3z - kspi) * ks * qpw;
    }
    K[2] += k2x * (PI2 * SQRT2PI / (-36 * z3));
    K[3] += k3x * (PI2 * SQRT2PI / (216 * z6));
    for (int i = 0; i < 4; i++)
        K[i] /= pow(n * 1.0, i / 2.0);
    return K[0] + K[1] + K[2] + K[3];
}

double kst_kolmogn(int n, double x, bool cdf)
{
    if (n <= 0 || isnan(x))
        return NAN;
    if (x >= 1.0)
        return cdf ? 1.0 : 0.0;
    if (x <= 0.0)
        return cdf ? 0.0 : 1.0;
    double t = n * x;
    if (t <= 1.0) {
        if (t <= 0.5)
            return cdf ? 0.0 : 1.0;
        double prob;
        if (n <= 140) {
            prob = 1.0;
            for (int i = 1; i <= n; i++)
                prob *= i * (1.0 / n) * (2 * t - 1);
        } else {
            prob = exp(log_nfact_div_n_pow_n(n) + n * log(2 * t - 1));
        }
        return (double)select_clip(prob, 1.0 - prob, cdf);
    }
    if (t >= n - 1) {
        double prob = 2 * pow(1.0 - x, n);
        return (double)select_clip(1 - prob, prob, cdf);
    }
    if (x >= 0.5) {
        double prob = 2 * kst_smirnov_sf(n, x);
        return (double)select_clip(1.0 - prob, prob, cdf);
    }
    double nxsq = t * x;
    if (n <= 140) {
        long double prob;
        if (nxsq <= 0.754693) {
            prob = kolmogn_dmtw(n, x);
            return (double)select_clip(prob, 1.0L - prob, cdf);
        }
        if (nxsq <= 4) {
            prob = kolmogn_pomeranz(n, x);
            return (double)select_clip(prob, 1.0L - prob, cdf);
        }
        double p2 = 2 * kst_smirnov_sf(n, x);
        return (double)select_clip(1.0 - p2, p2, cdf);
    }
    if (!cdf) {
        if (nxsq >= 370.0)
            return 0.0;
        if (nxsq >= 2.2)
            return clip01(2 * kst_smirnov_sf(n, x));
    }
    long double cdfprob;
    if (nxsq >= 18.0)
        cdfprob = 1.0L;
    else if (n <= 100000 && n * pow(x, 1.5) <= 1.4)
        cdfprob = kolmogn_dmtw(n, x);
    else
        cdfprob = kolmogn_pelzgood(n, x);
    return (double)select_clip(cdfprob, 1.0L - cdfprob, cdf);
}

/* ---- tests ------------------------------------------------------------------------- */

void kst_uniform(int n, const double *v, double scale, double *stat, double *p)
{
    double dplus = -INFINITY, dminus = -INFINITY;
    for (int i = 0; i < n; i++) {
        double x = v[i] / scale;
        double c = x > 0 ? (x < 1 ? x : 1.0) : 0.0;
        double a = (double)(i + 1) / n - c, b = c - (double)i / n;
        if (a > dplus)
            dplus = a;
        if (b > dminus)
            dminus = b;
    }
    double d = dplus > dminus ? dplus : dminus;
    *stat = d;
    *p = clip01(kst_kolmogn(n, d, false));
}

/* values of s[0..n) that are <= x (s sorted ascending): searchsorted(s, x, 'right') */
static int count_le(const double *s, int n, double x)
{
    int lo = 0, hi = n;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (s[mid] <= x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Pr(D_{n,n} >= h/n) (scipy.stats._stats_py._compute_prob_outside_square) */
static double prob_outside_square(int n, int h)
{
    double P = 0.0;
    int k = (int)floor((double)n / h);
    while (k >= 0) {
        double p1 = 1.0;
        for (int j = 0; j < h; j++)
            p1 = (double)(n - k * h - j) * p1 / (double)(n + k * h + j + 1);
        P = p1 * (1.0 - P);
        k -= 1;
    }
    return 2 * P;
}

void kst_two_sample(int n, const double *a, const double *b, double *stat, double *p)
{
    double mn = INFINITY, mx = -INFINITY;
    for (int s = 0; s < 2; s++) {
        const double *src = s ? b : a;
        for (int i = 0; i < n; i++) {
            double d = (double)count_le(a, n, src[i]) / n - (double)count_le(b, n, src[i]) / n;
            if (d > mx)
                mx = d;
            if (d < mn)
                mn = d;
        }
    }
    double mins = -mn;
    mins = mins < 0 ? 0 : mins > 1 ? 1 : mins;
    double d = mins > mx ? mins : mx;
    double prob = NAN;
    if (n <= 10000) {
        /* exact: g = n, lcm = n */
        int h = (int)nearbyint(d * n);
        d = h * 1.0 / n;
        if (h == 0) {
            *stat = d;
            *p = 1.0;
            return;
        }
        prob = prob_outside_square(n, h);
    }
    if (!(prob >= 0 && prob <= 1)) {
        double en = nearbyint((double)n * n / (n + n));
        prob = kst_kolmogn((int)en, d, false);
    }
    *stat = d;
    *p = clip01(prob);
}
