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

/* ---- many elements at once --------------------------------------------------------------- */

/* Elements per chunk of rqs_nflows_rows: the transcendental functions run as flat loops over
 * a chunk (vectorized in the FMA clone), every element through the same operations as
 * rqs_nflows_elem's, so a value does not depend on the chunk or the rows beside it. */
#define RQS_CHUNK 16

size_t rqs_nflows_rows_work(const struct rqs_nflows *s)
{
    size_t K = (size_t)s->K;
    return RQS_CHUNK * (2 * K + 2 * (K + 1) + 12);
}

KERN_FMA_CLONES void rqs_nflows_rows(const struct rqs_nflows *s, int n, float *x, int ldx,
                                     const int *cols, int nc, const float *par, int ldp,
                                     bool inv, double *log_det, double *work)
{
    const int K = s->K, P = rqs_nflows_params(s);
    const double div = s->divisor, B = s->B;
    double *U = work;                             /* CH x 2K: exp arguments, then values */
    double *X = U + RQS_CHUNK * 2 * K;            /* CH x (K + 1) */
    double *Y = X + RQS_CHUNK * (K + 1);          /* CH x (K + 1) */
    double *V = Y + RQS_CHUNK * (K + 1);          /* CH: input */
    double *D0 = V + RQS_CHUNK, *D1 = D0 + RQS_CHUNK;  /* CH: raw, then derivatives */
    double *NUM = D1 + RQS_CHUNK, *DEN = NUM + RQS_CHUNK, *OUT = DEN + RQS_CHUNK;
    double *LD = OUT + RQS_CHUNK;
    int *BIN = (int *)(void *)(LD + RQS_CHUNK);   /* CH ints (2 CH doubles reserved) */
    const long total = (long)n * nc;
    double rowsum = 0.0;
    for (long e0 = 0; e0 < total; e0 += RQS_CHUNK) {
        const int ce = total - e0 < RQS_CHUNK ? (int)(total - e0) : RQS_CHUNK;
        /* exp arguments raw / div - max, per element and axis */
        for (int e = 0; e < ce; e++) {
            long g = e0 + e;
            int i = (int)(g / nc), j = (int)(g % nc);
            const float *raw = par + (size_t)i * ldp + (size_t)j * P;
            double v = (double)x[(size_t)i * ldx + cols[j]];
            V[e] = v;
            for (int a = 0; a < 2; a++) {
                const float *r = raw + a * K;
                double *u = U + ((size_t)e * 2 + a) * K;
                double mx = (double)r[0] / div;
                for (int k = 1; k < K; k++) {
                    double t = (double)r[k] / div;
                    if (t > mx)
                        mx = t;
                }
                for (int k = 0; k < K; k++)
                    u[k] = (double)r[k] / div - mx;
            }
        }
        for (int t = 0; t < ce * 2 * K; t++)
            U[t] = em_exp(U[t]);
        /* knots, bin, raw derivatives of the bin */
        for (int e = 0; e < ce; e++) {
            long g = e0 + e;
            int i = (int)(g / nc), j = (int)(g % nc);
            const float *raw = par + (size_t)i * ldp + (size_t)j * P;
            double *kx = X + (size_t)e * (K + 1), *ky = Y + (size_t)e * (K + 1);
            for (int a = 0; a < 2; a++) {
                const double *u = U + ((size_t)e * 2 + a) * K;
                double *kn = a ? ky : kx, mn = a ? s->min_h : s->min_w;
                double sum = 0.0;
                for (int k = 0; k < K; k++)
                    sum += u[k];
                double acc = 0.0;
                for (int k = 0; k < K; k++) {
                    acc += mn + (1.0 - mn * K) * (u[k] / sum);
                    kn[k + 1] = 2.0 * B * acc - B;
                }
                kn[0] = -B;
                kn[K] = B;
            }
            double v = V[e];
            bool in = v >= -B && v <= B;
            int k = in ? find_bin(inv ? ky : kx, K, v) : 0;
            BIN[e] = k;
            D0[e] = k == 0 ? 0.0 : (double)raw[2 * K + k - 1];
            D1[e] = k + 1 == K ? 0.0 : (double)raw[2 * K + k];
        }
        for (int e = 0; e < ce; e++) {
            double u = D0[e];
            double t = em_log1p(em_exp(u));
            D0[e] = u > 20.0 ? u : t;
        }
        for (int e = 0; e < ce; e++) {
            double u = D1[e];
            double t = em_log1p(em_exp(u));
            D1[e] = u > 20.0 ? u : t;
        }
        /* the bin's map, up to the logs */
        for (int e = 0; e < ce; e++) {
            int k = BIN[e];
            const double *kx = X + (size_t)e * (K + 1), *ky = Y + (size_t)e * (K + 1);
            double dk = k == 0 ? s->edge : s->min_d + D0[e];
            double dk1 = k + 1 == K ? s->edge : s->min_d + D1[e];
            double xk = kx[k], yk = ky[k], w = kx[k + 1] - xk, h = ky[k + 1] - yk;
            double sl = h / w, v = V[e];
            if (!inv) {
                double th = (v - xk) / w;
                double tt = th * (1.0 - th);
                double num = h * (sl * th * th + dk * tt);
                double den = sl + (dk + dk1 - 2.0 * sl) * tt;
                OUT[e] = yk + num / den;
                NUM[e] = sl * sl * (dk1 * th * th + 2.0 * sl * tt + dk * (1.0 - th) * (1.0 - th));
                DEN[e] = den;
            } else {
                double dy = v - yk, ee = dk + dk1 - 2.0 * sl;
                double a = dy * ee + h * (sl - dk);
                double b = h * dk - dy * ee;
                double c = -sl * dy;
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
                OUT[e] = r * w + xk;
                NUM[e] = sl * sl * (dk1 * r * r + 2.0 * sl * tt + dk * (1.0 - r) * (1.0 - r));
                DEN[e] = sl + ee * tt;
            }
        }
        for (int e = 0; e < ce; e++)
            LD[e] = em_log(NUM[e]) - 2.0 * em_log(DEN[e]);
        /* write back; log-dets summed per row in feature order */
        for (int e = 0; e < ce; e++) {
            long g = e0 + e;
            int i = (int)(g / nc), j = (int)(g % nc);
            double v = V[e];
            bool in = v >= -B && v <= B;
            if (in)
                x[(size_t)i * ldx + cols[j]] = (float)OUT[e];
            rowsum += in ? (inv ? -LD[e] : LD[e]) : 0.0;
            if (j == nc - 1) {
                log_det[i] += rowsum;
                rowsum = 0.0;
            }
        }
    }
}
