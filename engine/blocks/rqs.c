/*
 * rqs.c — the rational-quadratic spline of rqs.h: the bin formulas of nflows'
 * rational_quadratic_spline and its unconstrained (linear-tails) wrapper, in double.
 */
#include <math.h>
#include "rqs.h"
#include "../emath.h"
#include "../kern.h"

/* torch.nn.functional.softplus (beta 1, threshold 20), in double. */
static inline __attribute__((always_inline)) double softplus(double u)
{
    return u > 20.0 ? u : em_log1p(em_exp(u));
}

/* The bin [xk, xk1] x [yk, yk1] with end derivatives dk, dk1: forward. */
static inline __attribute__((always_inline)) double bin_fwd(double xk, double xk1, double yk,
                                                            double yk1, double dk, double dk1,
                                                            double v, double *ld)
{
    double w = xk1 - xk, h = yk1 - yk;
    double s = h / w;
    double th = (v - xk) / w;
    double tt = th * (1.0 - th);
    double num = h * (s * th * th + dk * tt);
    double den = s + (dk + dk1 - 2.0 * s) * tt;
    double dnum = s * s * (dk1 * th * th + 2.0 * s * tt + dk * (1.0 - th) * (1.0 - th));
    *ld = em_log(dnum) - 2.0 * em_log(den);
    return yk + num / den;
}

static inline __attribute__((always_inline)) double bin_inv(double xk, double xk1, double yk,
                                                            double yk1, double dk, double dk1,
                                                            double v, double *ld)
{
    double w = xk1 - xk, h = yk1 - yk;
    double s = h / w;
    double dy = v - yk, e = dk + dk1 - 2.0 * s;
    double a = dy * e + h * (s - dk);
    double b = h * dk - dy * e;
    double c = -s * dy;
    double disc = b * b - 4.0 * a * c;
    if (!(disc > 0.0))
        disc = 0.0;
    double q = -b - sqrt(disc);
    double r = q != 0.0 ? (2.0 * c) / q : 0.0;
    if (!(r >= 0.0))
        r = 0.0;
    if (r > 1.0)
        r = 1.0;
    double tt = r * (1.0 - r);
    double den = s + e * tt;
    double dnum = s * s * (dk1 * r * r + 2.0 * s * tt + dk * (1.0 - r) * (1.0 - r));
    *ld = -(em_log(dnum) - 2.0 * em_log(den));
    return r * w + xk;
}

double rqs_bin_forward(const double *x, const double *y, const double *d, int k, double v,
                       double *ld)
{
    return bin_fwd(x[k], x[k + 1], y[k], y[k + 1], d[k], d[k + 1], v, ld);
}

double rqs_bin_inverse(const double *x, const double *y, const double *d, int k, double v,
                       double *ld)
{
    return bin_inv(x[k], x[k + 1], y[k], y[k + 1], d[k], d[k + 1], v, ld);
}

enum eng_status rqs_nflows_load(struct ldr *L, const cJSON *obj, double hidden,
                                struct rqs_nflows *out)
{
    static const char *const tails[] = {"linear"};
    long K = 10;
    int tl = 0;
    enum eng_status st;
    if ((st = ldr_int(L, obj, "bins", false, 10, 1, RQS_MAX_BINS, &K)) != ENG_OK ||
        (st = ldr_enum(L, obj, "tails", false, 0, tails, 1, &tl)) != ENG_OK ||
        (st = ldr_num(L, obj, "tail_bound", false, 3.0, &out->B)) != ENG_OK ||
        (st = ldr_num(L, obj, "min_bin_width", false, 1e-3, &out->min_w)) != ENG_OK ||
        (st = ldr_num(L, obj, "min_bin_height", false, 1e-3, &out->min_h)) != ENG_OK ||
        (st = ldr_num(L, obj, "min_derivative", false, 1e-3, &out->min_d)) != ENG_OK)
        return st;
    out->K = (int)K;
    if (!(out->B > 0.0) || !isfinite(out->B))
        return ldr_fail(L, ENG_ERR_MANIFEST, "field 'tail_bound' must be a positive number, "
                        "got %g", out->B);
    if (!(out->min_w >= 0.0) || !(out->min_h >= 0.0) || out->min_w * (double)K > 1.0 ||
        out->min_h * (double)K > 1.0)
        return ldr_fail(L, ENG_ERR_MANIFEST, "fields 'min_bin_width' (%g) and "
                        "'min_bin_height' (%g) must be >= 0 and at most 1/bins (bins %ld)",
                        out->min_w, out->min_h, K);
    if (!(out->min_d > 0.0) || !(out->min_d < 1.0))
        return ldr_fail(L, ENG_ERR_MANIFEST, "field 'min_derivative' must be in (0, 1), got %g",
                        out->min_d);
    out->divisor = hidden > 0.0 ? sqrt(hidden) : 1.0;
    out->edge = out->min_d + softplus(log(exp(1.0 - out->min_d) - 1.0));
    return ENG_OK;
}

/* Knots (K + 1) of a softmax-constrained axis: lo + 2B cumsum(mn + (1 - K mn) softmax). */
static inline __attribute__((always_inline)) void knots(const float *raw, int K, double div, double mn, double B, double *kn)
{
    double mx = (double)raw[0] / div;
    for (int k = 1; k < K; k++) {
        double u = (double)raw[k] / div;
        if (u > mx)
            mx = u;
    }
    double sum = 0.0;
    for (int k = 0; k < K; k++) {
        kn[k + 1] = em_exp((double)raw[k] / div - mx);
        sum += kn[k + 1];
    }
    double acc = 0.0;
    for (int k = 0; k < K; k++) {
        acc += mn + (1.0 - mn * K) * (kn[k + 1] / sum);
        kn[k + 1] = 2.0 * B * acc - B;
    }
    kn[0] = -B;
    kn[K] = B;
}

/* nflows' searchsorted: #{k : v >= kn[k]} - 1 with kn[K] + 1e-6, for -B <= v <= B. */
static inline __attribute__((always_inline)) int find_bin(const double *kn, int K, double v)
{
    int c = 0;
    for (int k = 0; k < K; k++)
        c += v >= kn[k];
    c += v >= kn[K] + 1e-6;
    c -= 1;
    return c < 0 ? 0 : c > K - 1 ? K - 1 : c;
}

/* Only the two derivatives of the bin are computed (the others are not needed). */
KERN_FMA_CLONES double rqs_nflows_elem(const struct rqs_nflows *s, const float *raw, double v,
                                       bool inv, double *ld, double *work)
{
    if (!(v >= -s->B && v <= s->B)) {
        *ld = 0.0;
        return v;
    }
    const int K = s->K;
    double *x = work, *y = work + (K + 1);
    knots(raw, K, s->divisor, s->min_w, s->B, x);
    knots(raw + K, K, s->divisor, s->min_h, s->B, y);
    int k = find_bin(inv ? y : x, K, v);
    double dk = k == 0 ? s->edge : s->min_d + softplus((double)raw[2 * K + k - 1]);
    double dk1 = k + 1 == K ? s->edge : s->min_d + softplus((double)raw[2 * K + k]);
    if (!inv)
        return bin_fwd(x[k], x[k + 1], y[k], y[k + 1], dk, dk1, v, ld);
    return bin_inv(x[k], x[k + 1], y[k], y[k + 1], dk, dk1, v, ld);
}
