/*
 * rqs.h — the monotone rational-quadratic spline (Durkan et al. 2019, "Neural Spline
 * Flows") as nflows computes it, for the spline blocks of engine/blocks/ (nsf.c, made.c).
 * Implemented in rqs.c.  Internal to engine/blocks/.  Also the small pieces of FrEIA's
 * binned spline (spline.h, implemented in spline.c): softplus, the bin search over
 * cumulative sums and the rational quadratic's log-derivative (static inline below).
 *
 * Two layers, so that a spline with other constraints (zuko's) can reuse the bin math:
 *
 *   rqs_bin_forward / rqs_bin_inverse: one element through bin k of a spline given its
 *     knots x[0..K], y[0..K] and derivatives d[0..K] (strictly increasing knots, positive
 *     derivatives), with nflows' formulas and log|dy/dx|.  No search, no tails: pure math.
 *
 *   rqs_nflows_*: nflows' unconstrained_rational_quadratic_spline with linear tails:
 *     per element K + K + (K - 1) raw values [widths | heights | interior derivatives];
 *     widths and heights divided by `divisor` (sqrt(hidden_features) of the conditioner,
 *     1 when it has none), w = min_w + (1 - K min_w) softmax, knots
 *     x_k = 2B cumsum(w)_k - B with x_0 = -B and x_K = B set exactly (heights likewise),
 *     bin widths taken back as differences of the knots; derivatives min_d + softplus(raw)
 *     inside, exactly 1 - min_d + min_d (softplus of log(e^(1 - min_d) - 1)) at both ends;
 *     the bin is nflows' searchsorted: #{knots <= v} - 1 with 1e-6 added to the last knot.
 *     Outside [-B, B] (both ends inclusive inside) the identity with log-det 0.
 *
 * Everything is double but the softmax exponentials, which are em_expf_fast of the
 * argument rounded to float (float arithmetic, within 1 ulp: the float precision nflows
 * itself has there, at a fraction of a double exp's cost); per element, with no state: the
 * same bits whatever the rows beside it.  The caller supplies the work area (rqs_nflows_work doubles); nothing is
 * allocated.
 */
#ifndef INNSERVE_BLOCKS_RQS_H
#define INNSERVE_BLOCKS_RQS_H

#include <stdbool.h>
#include <stddef.h>
#include <cjson/cJSON.h>
#include "../emath.h"
#include "../engine.h"
#include "../loader.h"

#define RQS_MAX_BINS 512

/* y of x in bin k (x[k] <= v <= x[k+1]); *ld = log dy/dx at v. */
double rqs_bin_forward(const double *x, const double *y, const double *d, int k, double v,
                       double *ld);
/* x of y in bin k (y[k] <= v <= y[k+1]); *ld = log dx/dy (= -log dy/dx) at the result.  A
 * negative discriminant (rounding) counts as 0 and the bin coordinate is clamped to
 * [0, 1], so knots never give NaN. */
double rqs_bin_inverse(const double *x, const double *y, const double *d, int k, double v,
                       double *ld);

/* nflows' spline configuration (immutable after load). */
struct rqs_nflows {
    int K;                  /* bins */
    double B;               /* tail bound */
    double min_w, min_h, min_d;
    double divisor;         /* widths and heights divided by it (1: none) */
    double edge;            /* derivative at -B and B: min_d + softplus(log(e^(1-min_d)-1)) */
};

/* Raw parameters per element: 3K - 1. */
static inline int rqs_nflows_params(const struct rqs_nflows *s) { return 3 * s->K - 1; }
/* Doubles of work area rqs_nflows_elem needs. */
static inline int rqs_nflows_work(const struct rqs_nflows *s) { return 3 * (s->K + 1); }

/* Read "bins" (default 10), "tails" ("linear", the only one), "tail_bound" (default 3),
 * "min_bin_width", "min_bin_height", "min_derivative" (default 1e-3 each) from obj and
 * set divisor = sqrt(hidden) (hidden <= 0: 1).  Messages name the field. */
enum eng_status rqs_nflows_load(struct ldr *L, const cJSON *obj, double hidden,
                                struct rqs_nflows *out);

/* One element: v through the spline whose raw parameters are raw[0 .. 3K-1) (forward, or
 * the inverse when inv); *ld = log|d out / d v|.  work: rqs_nflows_work(s) doubles. */
double rqs_nflows_elem(const struct rqs_nflows *s, const float *raw, double v, bool inv,
                       double *ld, double *work);

/* The same for many elements: columns cols[0 .. nc) of n rows of x (row stride ldx), the
 * raw parameters of row i, column j at par + i ldp + j (3K - 1); log_det[i] += the sum of
 * row i's log-dets (in column order).  Each element gets exactly rqs_nflows_elem's value
 * (the functions run as flat loops over chunks of elements, which vectorize).  work:
 * rqs_nflows_rows_work(s) doubles, 8-byte aligned. */
size_t rqs_nflows_rows_work(const struct rqs_nflows *s);
void rqs_nflows_rows(const struct rqs_nflows *s, int n, float *x, int ldx, const int *cols, int nc,
                     const float *par, int ldp, bool inv, double *log_det, double *work);

/* ---- softplus (also rqs.c) and the pieces of FrEIA's binned spline (spline.c) ------- */

#define RQS_LOG_E_M1 0.54132485461291810 /* log(e - 1) */

/* torch.nn.functional.softplus (beta 1, threshold 20), in double. */
static inline __attribute__((always_inline)) double rqs_softplus(double u)
{
    return u > 20.0 ? u : em_log1p(em_exp(u));
}

/* log dy/dx of the rational quadratic at xi in bin (s, dk, dk1), FrEIA's formula. */
static inline double rqs_freia_logdet(double s, double dk, double dk1, double xi)
{
    double om = 1.0 - xi, xo = xi * om;
    double num = s * s * (dk1 * xi * xi + 2.0 * s * xo + dk * om * om);
    double den = s + (dk1 + dk - 2.0 * s) * xo;
    return em_log(num) - 2.0 * em_log(den);
}

/* Bin k (0..K-1) with e_k < v <= e_{k+1}, where e_0 = base and e_{k+1} = base +
 * cumsum(sz)[k], as torch.searchsorted on those knots; fills the bin's lower edge and size.
 * Requires e_0 < v <= e_K. */
static inline int rqs_find_bin(const double *sz, int K, double base, double v, double *lo,
                               double *len)
{
    double acc = 0.0;
    int k = 0;
    for (; k < K - 1; k++) {
        double next = acc + sz[k];
        if (v <= base + next)
            break;
        acc = next;
    }
    *lo = base + acc;
    *len = (base + (acc + sz[k])) - *lo;
    return k;
}

#endif
