/*
 * binned.c — FrEIA's splines module (splines/binned.py, linear.py, rational_quadratic.py)
 * beyond the RationalQuadraticSpline coupling (spline.c):
 *
 *   ElementwiseRationalQuadraticSpline  every coordinate through its own rational-quadratic
 *       spline; the raw parameters are a free tensor `spline_parameters` (C·P, *spatial)
 *       without a condition, or a subnet of the condition alone (cw -> C·P; on image rows a
 *       convolutional subnet of an image condition, C·P output channels)
 *   LinearSpline  two-sided coupling as GLOWCouplingBlock with a piecewise-linear spline:
 *       y1 = S(x1; subnet1([x2, c])), y2 = S(x2; subnet2([y1, c])); inverse in reverse; the
 *       split is along channels, with convolutional subnets on image rows (coupling.h)
 *
 * FrEIA's BinnedSplineBase parameters, per coordinate, K bins, in this order:
 *     affine tails   widths K | heights K | bottom 1 | left 1            (+ deltas K − 1)
 *     identity tails widths K | heights K | total_width 1               (+ deltas K − 1)
 * (deltas for the rational-quadratic spline only), so P = 2K + 2 or 2K + 1 (+ K − 1).
 * A parameter tensor of C·P channels over S positions (S = H·W, L or 1) gives coordinate
 * (c, s) its parameter p at (c·P + p)·S + s, as FrEIA's movedim(1, −1) + reshape does.
 *
 * Constraints (double, per coordinate):
 *   affine:   w_k = min_w + rqs_softplus(raw_w_k + log(e^(w0 − min_w) − 1)), w0 = (r − l)/K,
 *             h_k likewise, left = raw_left + l, bottom = raw_bottom + b; with
 *             domain_clamping D the widths and left scale by D tanh(W/D)/W (W = Σ w),
 *             heights and bottom by the same ratio of H = Σ h.
 *   identity: tw = (r − l) rqs_softplus(raw_tw + log(e − 1)) [-> D tanh(tw/D)],
 *             left = bottom = −tw/2, w = tw softmax(raw_w), h = tw softmax(raw_h).
 *   scale = Σh/Σw (tail slope), shift = bottom − scale·left; rational-quadratic
 *   derivatives d_0 = d_K = scale, interior rqs_softplus(raw_delta + log(e − 1)).
 * Inside (x_0, x_K] (inverse (y_0, y_K]) the bin k with x_k < x <= x_{k+1}:
 *   linear:     y = s_k x + (y_k − s_k x_k), s_k = Δy/Δx, log-det log Δy − log Δx
 *   rational-quadratic: Durkan et al.'s map (as spline.c), the inverse by the stable root
 * outside, the affine tail y = scale·x + shift (log-det log scale).
 *
 * Scratch: parameters (rows × the widest half's P·l floats) | work (one coordinate's
 * P floats and 2K doubles) | subnet.  Nothing is allocated per call.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "coupling.h"
#include "rqs.h"
#include "../block.h"
#include "../emath.h"
#include "../kern.h"
#include "../loader.h"
#include "../subnet.h"

#define BS_MAX_BINS 1024

/* The spline's configuration (immutable after load). */
struct bspl {
    int K, P;
    bool identity;              /* identity tails */
    bool rq;                    /* rational-quadratic (else linear) */
    double dom[4];              /* default_domain: left, right, bottom, top */
    double min_w, min_h;
    double clampD;              /* domain_clamping, 0 = none */
    double xshift, yshift;      /* log(e^(w0 − min_w) − 1), same for heights */
    double dwidth;              /* right − left */
};

/* Knots of one coordinate: widths and heights in `w`, `h` (K each). */
struct knots {
    double W, H, left, bottom, scale, shift;
    const float *rd;            /* raw interior derivatives (K − 1) */
};

static void constrain(const struct bspl *p, const float *raw, double *w, double *h,
                      struct knots *kn)
{
    const int K = p->K;
    double W = 0.0, H = 0.0;
    if (!p->identity) {
        for (int k = 0; k < K; k++) {
            w[k] = p->min_w + rqs_softplus((double)raw[k] + p->xshift);
            h[k] = p->min_h + rqs_softplus((double)raw[K + k] + p->yshift);
            W += w[k];
            H += h[k];
        }
        double left = (double)raw[2 * K + 1] + p->dom[0];
        double bottom = (double)raw[2 * K] + p->dom[2];
        if (p->clampD > 0.0) {
            double wr = p->clampD * em_tanh(W / p->clampD) / W;
            double hr = p->clampD * em_tanh(H / p->clampD) / H;
            W = H = 0.0;
            for (int k = 0; k < K; k++) {
                w[k] *= wr;
                h[k] *= hr;
                W += w[k];
                H += h[k];
            }
            left *= wr;
            bottom *= hr;
        }
        kn->left = left;
        kn->bottom = bottom;
        kn->rd = raw + 2 * K + 2;
    } else {
        double tw = p->dwidth * rqs_softplus((double)raw[2 * K] + RQS_LOG_E_M1);
        if (p->clampD > 0.0)
            tw = p->clampD * em_tanh(tw / p->clampD);
        double mw = raw[0], mh = raw[K];
        for (int k = 1; k < K; k++) {
            mw = raw[k] > mw ? raw[k] : mw;
            mh = raw[K + k] > mh ? raw[K + k] : mh;
        }
        double sw = 0.0, sh = 0.0;
        for (int k = 0; k < K; k++) {
            w[k] = em_exp((double)raw[k] - mw);
            h[k] = em_exp((double)raw[K + k] - mh);
            sw += w[k];
            sh += h[k];
        }
        for (int k = 0; k < K; k++) {
            w[k] = tw * (w[k] / sw);
            h[k] = tw * (h[k] / sh);
            W += w[k];
            H += h[k];
        }
        kn->left = kn->bottom = -tw / 2.0;
        kn->rd = raw + 2 * K + 1;
    }
    kn->W = W;
    kn->H = H;
    kn->scale = H / W;
    kn->shift = kn->bottom - kn->scale * kn->left;
}

static inline double knot_deriv(const struct bspl *p, const struct knots *kn, int k)
{
    if (k == 0 || k == p->K)
        return kn->scale;
    return rqs_softplus((double)kn->rd[k - 1] + RQS_LOG_E_M1);
}

/* The lower edge and size of bin k on the other axis (same cumulative sums). */
static void bin_edge(const double *sz, int k, double base, double *lo, double *len)
{
    double acc = 0.0;
    for (int i = 0; i < k; i++)
        acc += sz[i];
    *lo = base + acc;
    *len = (base + (acc + sz[k])) - *lo;
}

/* v through the spline whose raw parameters are raw[0..P) (the inverse when inv);
 * *ld = log|d out / d v|.  w, h: K doubles each. */
static double bspl_elem(const struct bspl *p, const float *raw, double *w, double *h, double v,
                        bool inv, double *ld)
{
    struct knots kn;
    constrain(p, raw, w, h, &kn);
    const int K = p->K;
    const double xK = kn.left + kn.W, yK = kn.bottom + kn.H;
    double xk, dx, yk, dy;
    int k;
    if (!inv) {
        if (!(v > kn.left && v <= xK)) {
            *ld = log(kn.scale);
            return kn.scale * v + kn.shift;
        }
        k = rqs_find_bin(w, K, kn.left, v, &xk, &dx);
        bin_edge(h, k, kn.bottom, &yk, &dy);
    } else {
        if (!(v > kn.bottom && v <= yK)) {
            *ld = -log(kn.scale);
            return (v - kn.shift) / kn.scale;
        }
        k = rqs_find_bin(h, K, kn.bottom, v, &yk, &dy);
        bin_edge(w, k, kn.left, &xk, &dx);
    }
    const double s = dy / dx;
    if (!p->rq) {
        /* FrEIA's linear_spline: scale·x + shift, log-det log(dy) − log(dx) */
        const double shift = yk - s * xk;
        const double l = em_log(dy) - em_log(dx);
        *ld = inv ? -l : l;
        return inv ? (v - shift) / s : s * v + shift;
    }
    const double dk = knot_deriv(p, &kn, k), dk1 = knot_deriv(p, &kn, k + 1);
    if (!inv) {
        double xi = (v - xk) / dx;
        xi = xi < 0.0 ? 0.0 : xi > 1.0 ? 1.0 : xi;
        double xo = xi * (1.0 - xi);
        double numer = dy * (s * xi * xi + dk * xo);
        double denom = s + (dk1 + dk - 2.0 * s) * xo;
        *ld = rqs_freia_logdet(s, dk, dk1, xi);
        return yk + numer / denom;
    }
    double delta = v - yk, e = dk1 + dk - 2.0 * s;
    double A = dy * (s - dk) + delta * e;
    double B = dy * dk - delta * e;
    double C = -s * delta;
    double disc = B * B - 4.0 * A * C;
    if (!(disc > 0.0))
        disc = 0.0;
    double den = -B - sqrt(disc);
    double xi = den != 0.0 ? 2.0 * C / den : 0.0;
    if (!(xi >= 0.0))
        xi = 0.0;
    if (xi > 1.0)
        xi = 1.0;
    *ld = -rqs_freia_logdet(s, dk, dk1, xi);
    return xk + xi * dx;
}

/* Work area: one coordinate's gathered raw parameters and 2K doubles. */
static size_t work_floats(const struct bspl *p)
{
    return cpl_round((size_t)p->P) + cpl_round(4 * (size_t)p->K + 2);
}

static double *work_doubles(float *at, const struct bspl *p)
{
    uintptr_t u = (uintptr_t)(at + cpl_round((size_t)p->P));
    u = (u + 7u) & ~(uintptr_t)7u;
    return (double *)(void *)u;
}

/* Transform coordinates [off, off + l) of each row of the tile.  Coordinate j (0..l) is
 * channel j / S, position j % S; its parameters come from a (row stride lda, 0 for one
 * shared row) at (c·P + p)·S + s. */
KERN_FMA_CLONES static void bspl_cols(const struct bspl *p, struct blk_io *io, int d, int off,
                                      int l, int S, const float *a, size_t lda, float *work,
                                      bool inv)
{
    const int P = p->P;
    float *raw = work;
    double *w = work_doubles(work, p), *h = w + p->K;
    for (int i = 0; i < io->n; i++) {
        float *xi = io->x + (size_t)i * d + off;
        const float *ai = a + (size_t)i * lda;
        double sum = 0.0;
        for (int j = 0; j < l; j++) {
            const int c = j / S, s = j % S;
            const float *src = ai + (size_t)c * P * S + s;
            for (int q = 0; q < P; q++)
                raw[q] = src[(size_t)q * S];
            double ld = 0.0;
            xi[j] = (float)bspl_elem(p, raw, w, h, (double)xi[j], inv, &ld);
            sum += ld;
        }
        io->log_det[i] += sum;
    }
}

/* ---- load ------------------------------------------------------------------------------ */

/* A list of n finite numbers in j[field], default def when absent or null. */
static enum eng_status num_list(struct ldr *L, const cJSON *j, const char *field, int n,
                                const double *def, double *out)
{
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(j, field);
    if (!f || cJSON_IsNull(f)) {
        memcpy(out, def, sizeof(double) * (size_t)n);
        return ENG_OK;
    }
    if (!cJSON_IsArray(f) || cJSON_GetArraySize(f) != n)
        return ldr_fail(L, ENG_ERR_MANIFEST, "%s: must be a list of %d numbers", field, n);
    for (int i = 0; i < n; i++) {
        const cJSON *e = cJSON_GetArrayItem(f, i);
        if (!cJSON_IsNumber(e) || !isfinite(e->valuedouble))
            return ldr_fail(L, ENG_ERR_MANIFEST, "%s[%d]: must be a finite number", field, i);
        out[i] = e->valuedouble;
    }
    return ENG_OK;
}

/* bins, tails, default_domain, min_bin_sizes, domain_clamping (FrEIA's defaults). */
static enum eng_status bspl_load(struct ldr *L, const cJSON *j, bool rq, struct bspl *p)
{
    static const char *const tails[] = {"affine", "identity"};
    static const double def_dom[4] = {-3.0, 3.0, -3.0, 3.0};
    static const double def_min[2] = {0.1, 0.1};
    enum eng_status st;
    long K = 10;
    if ((st = ldr_int(L, j, "bins", false, 10, 1, BS_MAX_BINS, &K)) != ENG_OK)
        return st;
    p->K = (int)K;
    p->rq = rq;
    int tl = 0;
    if ((st = ldr_enum(L, j, "tails", false, 0, tails, 2, &tl)) != ENG_OK)
        return st;
    p->identity = tl == 1;
    p->P = (p->identity ? 2 * p->K + 1 : 2 * p->K + 2) + (rq ? p->K - 1 : 0);
    double mins[2];
    if ((st = num_list(L, j, "default_domain", 4, def_dom, p->dom)) != ENG_OK ||
        (st = num_list(L, j, "min_bin_sizes", 2, def_min, mins)) != ENG_OK)
        return st;
    p->min_w = mins[0];
    p->min_h = mins[1];
    if (p->min_w < 0.0 || p->min_h < 0.0)
        return ldr_fail(L, ENG_ERR_MANIFEST, "min_bin_sizes: sizes must be >= 0 (got [%g, %g])",
                        p->min_w, p->min_h);
    if (!(p->dom[1] > p->dom[0]) || !(p->dom[3] > p->dom[2]))
        return ldr_fail(L, ENG_ERR_MANIFEST,
                        "default_domain: needs left < right and bottom < top (got [%g, %g, %g, "
                        "%g])", p->dom[0], p->dom[1], p->dom[2], p->dom[3]);
    if (p->dom[1] - p->dom[0] < p->min_w * p->K || p->dom[3] - p->dom[2] < p->min_h * p->K)
        return ldr_fail(L, ENG_ERR_MANIFEST,
                        "min_bin_sizes: %ld bins of size [%g, %g] do not fit default_domain "
                        "[%g, %g, %g, %g]", K, p->min_w, p->min_h, p->dom[0], p->dom[1],
                        p->dom[2], p->dom[3]);
    p->dwidth = p->dom[1] - p->dom[0];
    double gw = (p->dom[1] - p->dom[0]) / p->K - p->min_w;
    double gh = (p->dom[3] - p->dom[2]) / p->K - p->min_h;
    p->xshift = gw > 0.0 ? em_log(em_expm1(gw)) : -INFINITY;
    p->yshift = gh > 0.0 ? em_log(em_expm1(gh)) : -INFINITY;
    const cJSON *dc = cJSON_GetObjectItemCaseSensitive(j, "domain_clamping");
    p->clampD = 0.0;
    if (dc && !cJSON_IsNull(dc)) {
        double D = 0.0;
        if ((st = ldr_num(L, j, "domain_clamping", true, 0.0, &D)) != ENG_OK)
            return st;
        if (!(D > 0.0) || !isfinite(D))
            return ldr_fail(L, ENG_ERR_MANIFEST,
                            "domain_clamping: must be null or a positive number (got %g)", D);
        p->clampD = D;
    }
    return ENG_OK;
}

/* Positions per channel of the block's input shape (1 for a vector). */
static int positions(const struct blk *b)
{
    return b->d / b->shape[0];
}

/* ==== ElementwiseRationalQuadraticSpline ================================================ */

struct erqs {
    struct bspl s;
    int S;                      /* positions per channel */
    const float *params;        /* C·P·S (no condition), or NULL */
    const struct subnet *net;   /* c -> C·P·S (with a condition), or NULL */
};

static enum eng_status erqs_load(struct blk *b, struct ldr *L, const cJSON *j)
{
    struct erqs *p = ldr_alloc(L, sizeof(*p));
    if (!p)
        return ENG_ERR_NOMEM;
    enum eng_status st;
    if ((st = bspl_load(L, j, true, &p->s)) != ENG_OK)
        return st;
    p->S = positions(b);
    const long long np = (long long)b->d * p->s.P;
    if (np > (1LL << 30))
        return ldr_fail(L, ENG_ERR_MANIFEST, "too many spline parameters (%lld)", np);
    if (b->cond >= 0) {
        /* FrEIA: subnet(cat(c)) with C·P output channels (a convolutional subnet of an
         * image condition on image rows) */
        if ((st = cpl_subnet(L, b, j, "subnet", 0, (int)np, &p->net)) != ENG_OK)
            return st;
    } else if ((st = ldr_tensor_numel(L, j, "spline_parameters", true, np, &p->params)) !=
               ENG_OK) {
        return st;
    }
    b->priv = p;
    return ENG_OK;
}

static size_t erqs_scratch(const struct blk *b, int rows)
{
    const struct erqs *p = b->priv;
    size_t s = work_floats(&p->s);
    if (p->net)
        s += cpl_round((size_t)rows * b->d * p->s.P) + subnet_scratch(p->net, rows);
    return s;
}

static void erqs_run(const struct blk *b, struct blk_io *io, bool inv)
{
    const struct erqs *p = b->priv;
    float *work = io->scratch;
    if (!p->net) {
        bspl_cols(&p->s, io, b->d, 0, b->d, p->S, p->params, 0, work, inv);
        return;
    }
    const size_t np = (size_t)b->d * p->s.P;
    float *a = work + work_floats(&p->s);
    float *sub = a + cpl_round((size_t)io->n * np);
    subnet_forward(p->net, io->n, NULL, 0, io->c, io->c_ld, a, (int)np, sub);
    bspl_cols(&p->s, io, b->d, 0, b->d, p->S, a, np, work, inv);
}

static void erqs_forward(const struct blk *b, struct blk_io *io)
{
    erqs_run(b, io, false);
}

static void erqs_inverse(const struct blk *b, struct blk_io *io)
{
    erqs_run(b, io, true);
}

static void erqs_certify(const struct blk *b, struct eng_block_cert *out)
{
    const struct erqs *p = b->priv;
    out->invertible = true;
    out->guarantee = ENG_GUARANTEE_ANALYTIC;
    snprintf(out->reason, sizeof(out->reason),
             "elementwise monotone rational-quadratic splines (%d bins, %s tails, parameters "
             "%s): closed-form inverse by the quadratic root", p->s.K,
             p->s.identity ? "identity" : "affine", p->net ? "from the condition" : "fixed");
}

const struct blk_ops blk_erqs_ops = {
    .type = "ElementwiseRationalQuadraticSpline",
    .takes_cond = true,
    .load = erqs_load,
    .scratch = erqs_scratch,
    .forward = erqs_forward,
    .inverse = erqs_inverse,
    .certify = erqs_certify,
};

/* ==== LinearSpline (coupling) =========================================================== */

struct lspl {
    struct bspl s;
    int l1, l2;                 /* coordinates of the halves (channels × S) */
    int S;
    const struct subnet *net1;  /* [x2, c] -> l1·P: parameters of x1 */
    const struct subnet *net2;  /* [x1, c] -> l2·P: parameters of x2 */
};

static enum eng_status lspl_load(struct blk *b, struct ldr *L, const cJSON *j)
{
    struct lspl *p = ldr_alloc(L, sizeof(*p));
    if (!p)
        return ENG_ERR_NOMEM;
    enum eng_status st;
    if ((st = bspl_load(L, j, false, &p->s)) != ENG_OK)
        return st;
    p->S = positions(b);
    /* split in coordinates, a whole number of channels (FrEIA splits channels) */
    if ((st = cpl_load_split(L, j, b, 1, cpl_channels(b) - 1, &p->l1)) != ENG_OK)
        return st;
    p->l2 = b->d - p->l1;
    /* on image rows convolutional subnets with an image condition (cpl_subnet) */
    if ((st = cpl_subnet(L, b, j, "subnet1", p->l2, p->l1 * p->s.P, &p->net1)) != ENG_OK ||
        (st = cpl_subnet(L, b, j, "subnet2", p->l1, p->l2 * p->s.P, &p->net2)) != ENG_OK)
        return st;
    b->priv = p;
    return ENG_OK;
}

static size_t lspl_scratch(const struct blk *b, int rows)
{
    const struct lspl *p = b->priv;
    int lm = p->l1 > p->l2 ? p->l1 : p->l2;
    size_t s1 = subnet_scratch(p->net1, rows), s2 = subnet_scratch(p->net2, rows);
    return cpl_round((size_t)rows * lm * p->s.P) + work_floats(&p->s) + (s1 > s2 ? s1 : s2);
}

static void lspl_forward(const struct blk *b, struct blk_io *io)
{
    const struct lspl *p = b->priv;
    const int n = io->n, d = b->d, lm = p->l1 > p->l2 ? p->l1 : p->l2, P = p->s.P;
    float *a = io->scratch;
    float *work = a + cpl_round((size_t)n * lm * P);
    float *sub = work + work_floats(&p->s);
    subnet_forward(p->net1, n, io->x + p->l1, d, io->c, io->c_ld, a, p->l1 * P, sub);
    bspl_cols(&p->s, io, d, 0, p->l1, p->S, a, (size_t)p->l1 * P, work, false);
    subnet_forward(p->net2, n, io->x, d, io->c, io->c_ld, a, p->l2 * P, sub);
    bspl_cols(&p->s, io, d, p->l1, p->l2, p->S, a, (size_t)p->l2 * P, work, false);
}

static void lspl_inverse(const struct blk *b, struct blk_io *io)
{
    const struct lspl *p = b->priv;
    const int n = io->n, d = b->d, lm = p->l1 > p->l2 ? p->l1 : p->l2, P = p->s.P;
    float *a = io->scratch;
    float *work = a + cpl_round((size_t)n * lm * P);
    float *sub = work + work_floats(&p->s);
    subnet_forward(p->net2, n, io->x, d, io->c, io->c_ld, a, p->l2 * P, sub);
    bspl_cols(&p->s, io, d, p->l1, p->l2, p->S, a, (size_t)p->l2 * P, work, true);
    subnet_forward(p->net1, n, io->x + p->l1, d, io->c, io->c_ld, a, p->l1 * P, sub);
    bspl_cols(&p->s, io, d, 0, p->l1, p->S, a, (size_t)p->l1 * P, work, true);
}

static void lspl_certify(const struct blk *b, struct eng_block_cert *out)
{
    const struct lspl *p = b->priv;
    out->invertible = true;
    out->guarantee = ENG_GUARANTEE_ANALYTIC;
    snprintf(out->reason, sizeof(out->reason),
             "monotone piecewise-linear spline coupling (%d bins, %s tails): closed-form "
             "inverse; slopes bounded only per input (no global bound)", p->s.K,
             p->s.identity ? "identity" : "affine");
}

const struct blk_ops blk_linspline_ops = {
    .type = "LinearSpline",
    .takes_cond = true,
    .load = lspl_load,
    .scratch = lspl_scratch,
    .forward = lspl_forward,
    .inverse = lspl_inverse,
    .certify = lspl_certify,
};
