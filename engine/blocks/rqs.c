/*
 * rqs.c — the rational-quadratic spline of rqs.h: the bin formulas of nflows'
 * rational_quadratic_spline and its unconstrained (linear-tails) wrapper, in double.
 */
#include <math.h>
#include "rqs.h"
#include "../emath.h"
#include "../kern.h"

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
    out->edge = out->min_d + rqs_softplus(log(exp(1.0 - out->min_d) - 1.0));
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
        kn[k + 1] = (double)em_expf_fast((float)((double)raw[k] / div - mx));
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
    double dk = k == 0 ? s->edge : s->min_d + rqs_softplus((double)raw[2 * K + k - 1]);
    double dk1 = k + 1 == K ? s->edge : s->min_d + rqs_softplus((double)raw[2 * K + k]);
    if (!inv)
        return bin_fwd(x[k], x[k + 1], y[k], y[k + 1], dk, dk1, v, ld);
    return bin_inv(x[k], x[k + 1], y[k], y[k + 1], dk, dk1, v, ld);
}

/* ---- many elements at once --------------------------------------------------------------- */

/* Elements per chunk of rqs_nflows_rows: chunk arrays are laid out [k][element], so every
 * step (max, exp, sums, knots, bin search, softplus, logs) is a loop across the chunk's
 * elements that vectorizes in the FMA clone, while each element goes through exactly the
 * operations of rqs_nflows_elem, in the same order: a value depends neither on the chunk
 * nor on the rows beside it. */
#define RQS_CHUNK 16

size_t rqs_nflows_rows_work(const struct rqs_nflows *s)
{
    size_t K = (size_t)s->K;
    return RQS_CHUNK * (2 * K + 2 * (K + 1) + 16);
}

KERN_FMA_CLONES void rqs_nflows_rows(const struct rqs_nflows *s, int n, float *x, int ldx,
                                     const int *cols, int nc, const float *par, int ldp,
                                     bool inv, double *log_det, double *work)
{
    enum { C = RQS_CHUNK };
    const int K = s->K, P = rqs_nflows_params(s);
    const double div = s->divisor, B = s->B;
    double *U = work;                           /* [2][K][C]: exp arguments, then values */
    double *KN = U + (size_t)2 * K * C;         /* [2][K + 1][C]: x knots, y knots */
    double *V = KN + (size_t)2 * (K + 1) * C;   /* [C] each below */
    double *MX = V + C, *SUM = MX + C, *ACC = SUM + C, *D0 = ACC + C, *D1 = D0 + C;
    double *NUM = D1 + C, *DEN = NUM + C, *OUT = DEN + C, *LD = OUT + C;
    double *XK = LD + C, *XK1 = XK + C, *YK = XK1 + C, *YK1 = YK + C;
    int *BIN = (int *)(void *)(YK1 + C);        /* [C] ints (C doubles reserved) */
    const float *RAW[C];
    const long total = (long)n * nc;
    double rowsum = 0.0;
    if (total < 4) {    /* fewer than one vector of elements: one at a time (same bits) */
        for (int i = 0; i < n; i++) {
            for (int j = 0; j < nc; j++) {
                double l;
                float *xv = x + (size_t)i * ldx + cols[j];
                *xv = (float)rqs_nflows_elem(s, par + (size_t)i * ldp + (size_t)j * P,
                                             (double)*xv, inv, &l, work);
                rowsum += l;
            }
            log_det[i] += rowsum;
            rowsum = 0.0;
        }
        return;
    }
    for (long e0 = 0; e0 < total; e0 += C) {
        const int ce = total - e0 < C ? (int)(total - e0) : C;
        const int cv = (ce + 3) & ~3;           /* lanes computed: ce rounded up to 4 */
        for (int e = 0; e < cv; e++) {           /* lanes past ce repeat the last element */
            long g = e0 + (e < ce ? e : ce - 1);
            int i = (int)(g / nc), j = (int)(g % nc);
            RAW[e] = par + (size_t)i * ldp + (size_t)j * P;
            V[e] = (double)x[(size_t)i * ldx + cols[j]];
        }
        for (int a = 0; a < 2; a++) {
            double *u = U + (size_t)a * K * C;
            /* v / 1 is v exactly: no division when there is no divisor (MADE) */
            if (div == 1.0)
                for (int k = 0; k < K; k++)
                    for (int e = 0; e < cv; e++)
                        u[(size_t)k * C + e] = (double)RAW[e][a * K + k];
            else
                for (int k = 0; k < K; k++)
                    for (int e = 0; e < cv; e++)
                        u[(size_t)k * C + e] = (double)RAW[e][a * K + k] / div;
            for (int e = 0; e < cv; e++)
                MX[e] = u[e];
            for (int k = 1; k < K; k++)
                for (int e = 0; e < cv; e++)
                    MX[e] = u[(size_t)k * C + e] > MX[e] ? u[(size_t)k * C + e] : MX[e];
            for (int k = 0; k < K; k++)
                for (int e = 0; e < cv; e++)
                    u[(size_t)k * C + e] -= MX[e];
        }
        for (int a = 0; a < 2 * K; a++)
            for (int e = 0; e < cv; e++)
                U[(size_t)a * C + e] = (double)em_expf_fast((float)U[(size_t)a * C + e]);
        for (int a = 0; a < 2; a++) {
            const double *u = U + (size_t)a * K * C;
            double *kn = KN + (size_t)a * (K + 1) * C;
            const double mn = a ? s->min_h : s->min_w, f = 1.0 - mn * K;
            for (int e = 0; e < cv; e++)
                SUM[e] = 0.0, ACC[e] = 0.0;
            for (int k = 0; k < K; k++)
                for (int e = 0; e < cv; e++)
                    SUM[e] += u[(size_t)k * C + e];
            for (int k = 0; k < K; k++)
                for (int e = 0; e < cv; e++) {
                    ACC[e] += mn + f * (u[(size_t)k * C + e] / SUM[e]);
                    kn[(size_t)(k + 1) * C + e] = 2.0 * B * ACC[e] - B;
                }
            for (int e = 0; e < cv; e++) {
                kn[e] = -B;
                kn[(size_t)K * C + e] = B;
            }
        }
        /* the bin: #{k : v >= knot_k} - 1, 1e-6 added to the last knot */
        const double *sk = KN + (inv ? (size_t)(K + 1) * C : 0);
        for (int e = 0; e < cv; e++)
            BIN[e] = -1;
        for (int k = 0; k < K; k++)
            for (int e = 0; e < cv; e++)
                BIN[e] += V[e] >= sk[(size_t)k * C + e];
        for (int e = 0; e < cv; e++) {
            BIN[e] += V[e] >= sk[(size_t)K * C + e] + 1e-6;
            BIN[e] = BIN[e] < 0 ? 0 : BIN[e] > K - 1 ? K - 1 : BIN[e];
        }
        const double *kx = KN, *ky = KN + (size_t)(K + 1) * C;
        for (int e = 0; e < cv; e++) {
            int k = BIN[e];
            XK[e] = kx[(size_t)k * C + e], XK1[e] = kx[(size_t)(k + 1) * C + e];
            YK[e] = ky[(size_t)k * C + e], YK1[e] = ky[(size_t)(k + 1) * C + e];
            D0[e] = k == 0 ? 0.0 : (double)RAW[e][2 * K + k - 1];
            D1[e] = k + 1 == K ? 0.0 : (double)RAW[e][2 * K + k];
        }
        for (int e = 0; e < cv; e++) {
            double u = D0[e], t = em_log1p(em_exp(u));
            D0[e] = BIN[e] == 0 ? s->edge : s->min_d + (u > 20.0 ? u : t);
        }
        for (int e = 0; e < cv; e++) {
            double u = D1[e], t = em_log1p(em_exp(u));
            D1[e] = BIN[e] + 1 == K ? s->edge : s->min_d + (u > 20.0 ? u : t);
        }
        /* the bin's map, up to the logs */
        for (int e = 0; e < cv; e++) {
            double dk = D0[e], dk1 = D1[e], xk = XK[e], yk = YK[e];
            double w = XK1[e] - xk, h = YK1[e] - yk;
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
                disc = disc > 0.0 ? disc : 0.0;
                double q = -b - sqrt(disc);
                double r = q != 0.0 ? (2.0 * c) / q : 0.0;
                r = r >= 0.0 ? r : 0.0;
                r = r > 1.0 ? 1.0 : r;
                double tt = r * (1.0 - r);
                OUT[e] = r * w + xk;
                NUM[e] = sl * sl * (dk1 * r * r + 2.0 * sl * tt + dk * (1.0 - r) * (1.0 - r));
                DEN[e] = sl + ee * tt;
            }
        }
        for (int e = 0; e < cv; e++)
            LD[e] = em_log(NUM[e]) - 2.0 * em_log(DEN[e]);
        /* write back; log-dets summed per row in column order */
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
