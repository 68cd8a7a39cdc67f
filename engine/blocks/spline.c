/*
 * spline.c — FrEIA's RationalQuadraticSpline coupling block (reference: freia-modules.md
 * section 4; Durkan et al. 2019, "Neural Spline Flows").
 *
 * Coupling structure as GLOWCouplingBlock, x1 = x[0, l1), x2 = x[l1, d):
 *     forward:  y1 = S(x1; subnet1([x2, c])),  y2 = S(x2; subnet2([y1, c]))
 *     inverse:  x2 = S^-1(y2; subnet2([y1, c])), x1 = S^-1(y1; subnet1([x2, c]))
 * subnet1: l2 + cw -> l1 * P, subnet2: l1 + cw -> l2 * P, channel-major (channel j owns
 * entries j*P .. j*P + P - 1), with K bins and per channel
 *     affine tails   (P = 3K+1): widths K | heights K | bottom 1 | left 1 | deltas K-1
 *     identity tails (P = 3K):   widths K | heights K | total_width 1 | deltas K-1
 *
 * Constraints (all per element, in double):
 *   affine:   w_k = min_w + rqs_softplus(raw_w_k + log(e^(w0 - min_w) - 1)), w0 = (r - l)/K,
 *             h_k likewise, left = raw_left + l, bottom = raw_bottom + b; with
 *             domain_clamping D the widths and left scale by D tanh(W/D)/W (W = sum w),
 *             heights and bottom by the same ratio of H = sum h.
 *   identity: tw = (r - l) rqs_softplus(raw_tw + log(e - 1)) [-> D tanh(tw/D)],
 *             left = bottom = -tw/2, w = tw softmax(raw_w), h = tw softmax(raw_h).
 *   scale = sum h / sum w (the tail slope), shift = bottom - scale * left;
 *   derivatives d_0 = d_K = scale, interior d_k = rqs_softplus(raw_delta + log(e - 1)).
 *   knots x_0 = left, x_k = left + cumsum(w); y_k likewise.
 *
 * Inside (x_0, x_K] the rational-quadratic map of the bin k with x_k < x <= x_k+1; outside,
 * the affine tail y = scale x + shift (log-det log scale).  The inverse solves the
 * quadratic with the numerically stable root xi = 2C / (-B - sqrt(B^2 - 4AC)); a
 * discriminant below 0 (rounding) is taken as 0 and xi is clamped to [0, 1], so bin
 * edges never give NaN.
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

#define SPL_MAX_BINS 1024

struct spl_priv {
    int l1, l2, K, P;
    int HW;                     /* positions per channel (1 on vectors) */
    bool identity;              /* identity tails */
    double dom[4];              /* default_domain: left, right, bottom, top */
    double min_w, min_h;
    double clampD;              /* domain_clamping, 0 = none */
    double xshift, yshift;      /* log(e^(w0 - min_w) - 1), same for heights */
    double dwidth;              /* right - left */
    const struct subnet *net1;  /* [x2, c] -> l1 * P: parameters of x1 */
    const struct subnet *net2;  /* [x1, c] -> l2 * P: parameters of x2 */
};

/* Per-element knots: widths and heights (K each, in `work`), left, bottom, scale. */
struct knots {
    const double *w, *h;
    double W, H;                /* sum w, sum h (after any domain clamping) */
    double left, bottom, scale, shift;
    const float *rd;            /* raw interior derivatives (K - 1) */
};

static void constrain(const struct spl_priv *p, const float *raw, double *work, struct knots *kn)
{
    int K = p->K;
    double *w = work, *h = work + K;
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
        /* softmax with the max subtracted */
        double mw = raw[0], mh = raw[K];
        for (int k = 1; k < K; k++) {
            if (raw[k] > mw)
                mw = raw[k];
            if (raw[K + k] > mh)
                mh = raw[K + k];
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
    kn->w = w;
    kn->h = h;
    kn->W = W;
    kn->H = H;
    kn->scale = H / W;
    kn->shift = kn->bottom - kn->scale * kn->left;
}

/* Derivative at knot k (0..K). */
static inline double knot_deriv(const struct spl_priv *p, const struct knots *kn, int k)
{
    if (k == 0 || k == p->K)
        return kn->scale;
    return rqs_softplus((double)kn->rd[k - 1] + RQS_LOG_E_M1);
}

/* y (or x when inv) and the log-det contribution of one element. */
static double spline_elem(const struct spl_priv *p, const float *raw, double *work, double v,
                          bool inv, double *ld)
{
    struct knots kn;
    constrain(p, raw, work, &kn);
    int K = p->K;
    /* Outer knots, as FrEIA's left + cumsum(widths)[-1] (the sums run in the same order). */
    double xK = kn.left + kn.W, yK = kn.bottom + kn.H;
    if (!inv) {
        if (!(v > kn.left && v <= xK)) {
            *ld = log(kn.scale);
            return kn.scale * v + kn.shift;
        }
        double xk, dx;
        int k = rqs_find_bin(kn.w, K, kn.left, v, &xk, &dx);
        /* y_k from the same cumulative sum. */
        double acc = 0.0;
        for (int i = 0; i < k; i++)
            acc += kn.h[i];
        double yk = kn.bottom + acc;
        double dy = (kn.bottom + (acc + kn.h[k])) - yk;
        double s = dy / dx;
        double dk = knot_deriv(p, &kn, k), dk1 = knot_deriv(p, &kn, k + 1);
        double xi = (v - xk) / dx;
        if (xi < 0.0)
            xi = 0.0;
        if (xi > 1.0)
            xi = 1.0;
        double xo = xi * (1.0 - xi);
        double numer = dy * (s * xi * xi + dk * xo);
        double denom = s + (dk1 + dk - 2.0 * s) * xo;
        *ld = rqs_freia_logdet(s, dk, dk1, xi);
        return yk + numer / denom;
    }
    if (!(v > kn.bottom && v <= yK)) {
        *ld = -log(kn.scale);
        return (v - kn.shift) / kn.scale;
    }
    double yk, dy;
    int k = rqs_find_bin(kn.h, K, kn.bottom, v, &yk, &dy);
    double acc = 0.0;
    for (int i = 0; i < k; i++)
        acc += kn.w[i];
    double xk = kn.left + acc;
    double dx = (kn.left + (acc + kn.w[k])) - xk;
    double s = dy / dx;
    double dk = knot_deriv(p, &kn, k), dk1 = knot_deriv(p, &kn, k + 1);
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

/* Transform columns [off, off + l) of the tile with parameters a (n x l*P).  On image rows
 * (HW positions per channel) the subnet's output channel ch*P + k holds parameter k of
 * channel ch at every position (FrEIA moves the channel axis last and reshapes it to
 * (channels, P)); a flat element ch*HW + q gathers its P parameters into `raw`. */
KERN_FMA_CLONES static void spline_cols(const struct spl_priv *p, struct blk_io *io, int d, int off, int l,
                        const float *a, double *work, float *raw, bool inv)
{
    int P = p->P, HW = p->HW;
    for (int i = 0; i < io->n; i++) {
        float *xi = io->x + (size_t)i * d + off;
        const float *ai = a + (size_t)i * l * P;
        double sum = 0.0;
        for (int j = 0; j < l; j++) {
            double ld = 0.0;
            const float *pj = ai + (size_t)j * P;
            if (HW > 1) {
                int ch = j / HW, q = j % HW;
                for (int k = 0; k < P; k++)
                    raw[k] = ai[((size_t)ch * P + k) * HW + q];
                pj = raw;
            }
            xi[j] = (float)spline_elem(p, pj, work, (double)xi[j], inv, &ld);
            sum += ld;
        }
        io->log_det[i] += sum;
    }
}

/* ---- scratch: params (rows x max(l1, l2) * P) | work (2K doubles) | subnet ------------ */

/* Floats reserved for the work area: 2K doubles plus slack to align them, then P floats
 * for the gathered raw parameters of one element (image rows). */
static size_t work_floats(const struct spl_priv *p)
{
    return cpl_round(4 * (size_t)p->K + 2) + cpl_round((size_t)p->P);
}

static float *raw_at(const struct spl_priv *p, float *wa)
{
    return wa + cpl_round(4 * (size_t)p->K + 2);
}

/* The 8-byte-aligned start of the work area (the workspace is 64-byte aligned and the
 * segments are multiples of 64 bytes, so this is normally `at` itself). */
static double *work_at(float *at)
{
    uintptr_t u = (uintptr_t)at;
    u = (u + 7u) & ~(uintptr_t)7u;
    return (double *)(void *)u;
}

static size_t spl_scratch(const struct blk *b, int rows)
{
    const struct spl_priv *p = b->priv;
    int lm = p->l1 > p->l2 ? p->l1 : p->l2;
    size_t s1 = subnet_scratch(p->net1, rows), s2 = subnet_scratch(p->net2, rows);
    return cpl_round((size_t)rows * lm * p->P) + work_floats(p) + cpl_round(s1 > s2 ? s1 : s2);
}

static void spl_forward(const struct blk *b, struct blk_io *io)
{
    const struct spl_priv *p = b->priv;
    int n = io->n, d = b->d, lm = p->l1 > p->l2 ? p->l1 : p->l2;
    float *a = io->scratch;
    float *wa = a + cpl_round((size_t)n * lm * p->P);
    double *work = work_at(wa);
    float *sub = wa + work_floats(p);

    subnet_forward(p->net1, n, io->x + p->l1, d, io->c, io->c_ld, a, p->l1 * p->P, sub);
    spline_cols(p, io, d, 0, p->l1, a, work, raw_at(p, wa), false);
    subnet_forward(p->net2, n, io->x, d, io->c, io->c_ld, a, p->l2 * p->P, sub);
    spline_cols(p, io, d, p->l1, p->l2, a, work, raw_at(p, wa), false);
}

static void spl_inverse(const struct blk *b, struct blk_io *io)
{
    const struct spl_priv *p = b->priv;
    int n = io->n, d = b->d, lm = p->l1 > p->l2 ? p->l1 : p->l2;
    float *a = io->scratch;
    float *wa = a + cpl_round((size_t)n * lm * p->P);
    double *work = work_at(wa);
    float *sub = wa + work_floats(p);

    subnet_forward(p->net2, n, io->x, d, io->c, io->c_ld, a, p->l2 * p->P, sub);
    spline_cols(p, io, d, p->l1, p->l2, a, work, raw_at(p, wa), true);
    subnet_forward(p->net1, n, io->x + p->l1, d, io->c, io->c_ld, a, p->l1 * p->P, sub);
    spline_cols(p, io, d, 0, p->l1, a, work, raw_at(p, wa), true);
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

static enum eng_status spl_load(struct blk *b, struct ldr *L, const cJSON *j)
{
    static const char *const tails[] = {"affine", "identity"};
    static const double def_dom[4] = {-3.0, 3.0, -3.0, 3.0};
    static const double def_min[2] = {0.1, 0.1};
    int d = b->d;
    enum eng_status st;
    struct spl_priv *p = ldr_alloc(L, sizeof(*p));
    if (!p)
        return ENG_ERR_NOMEM;
    b->priv = p;

    if ((st = cpl_load_split(L, j, b, 1, cpl_channels(b) - 1, &p->l1)) != ENG_OK)
        return st;
    p->HW = d / cpl_channels(b);
    p->l2 = d - p->l1;
    long K = 10;
    if ((st = ldr_int(L, j, "bins", false, 10, 1, SPL_MAX_BINS, &K)) != ENG_OK)
        return st;
    p->K = (int)K;
    int tl = 0;
    if ((st = ldr_enum(L, j, "tails", false, 0, tails, 2, &tl)) != ENG_OK)
        return st;
    p->identity = tl == 1;
    p->P = p->identity ? 3 * p->K : 3 * p->K + 1;

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
                        "default_domain: needs left < right and bottom < top (got [%g, %g, %g, %g])",
                        p->dom[0], p->dom[1], p->dom[2], p->dom[3]);
    /* FrEIA asserts this for both kinds of tails. */
    if (p->dom[1] - p->dom[0] < p->min_w * p->K || p->dom[3] - p->dom[2] < p->min_h * p->K)
        return ldr_fail(L, ENG_ERR_MANIFEST,
                        "min_bin_sizes: %ld bins of size [%g, %g] do not fit default_domain "
                        "[%g, %g, %g, %g]", K, p->min_w, p->min_h, p->dom[0], p->dom[1],
                        p->dom[2], p->dom[3]);
    p->dwidth = p->dom[1] - p->dom[0];
    /* log(e^(w0 - min) - 1); -inf when the bins are exactly at their minimum size, which
     * makes softplus 0 as in torch. */
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

    if ((st = cpl_subnet(L, b, j, "subnet1", p->l2, p->l1 * p->P, &p->net1)) != ENG_OK ||
        (st = cpl_subnet(L, b, j, "subnet2", p->l1, p->l2 * p->P, &p->net2)) != ENG_OK)
        return st;
    return ENG_OK;
}

/* Closed-form inverse: each element goes through a strictly increasing rational-
 * quadratic spline (positive widths, heights and derivatives by construction) inverted
 * by the stable quadratic root; the tails are affine or the identity. */
static void spl_certify(const struct blk *b, struct eng_block_cert *out)
{
    const struct spl_priv *p = b->priv;
    out->invertible = true;
    out->guarantee = ENG_GUARANTEE_ANALYTIC;
    snprintf(out->reason, sizeof(out->reason),
             "monotone rational-quadratic spline coupling (%d bins, %s tails): closed-form "
             "inverse by the quadratic root; slopes bounded only per input (no global bound)",
             p->K, p->identity ? "identity" : "affine");
}

const struct blk_ops blk_spline_ops = {
    .type = "RationalQuadraticSpline",
    .takes_cond = true,
    .needs_cond = false,
    .load = spl_load,
    .scratch = spl_scratch,
    .forward = spl_forward,
    .inverse = spl_inverse,
    .certify = spl_certify,
};
