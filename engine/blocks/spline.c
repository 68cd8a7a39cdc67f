/*
 * spline.c — FrEIA's binned spline and spline coupling (spline.h: constraints, bin search,
 * the rational-quadratic or linear map with affine or identity tails, and the two-sided
 * coupling through them; shared with binned.c) and FrEIA's RationalQuadraticSpline
 * coupling block (reference: freia-modules.md section 4; Durkan et al. 2019, "Neural
 * Spline Flows").
 *
 * RationalQuadraticSpline is spline.h's coupling with the rational-quadratic spline: K
 * bins, P = 3K + 1 (affine tails) or 3K (identity tails) raw parameters per coordinate.
 * subnet1: l2 + cw -> l1 * P, subnet2: l1 + cw -> l2 * P, channel-major (channel j owns
 * entries j*P .. j*P + P - 1); on image rows the subnet's output channel ch*P + k holds
 * parameter k of channel ch at every position (FrEIA moves the channel axis last and
 * reshapes it to (channels, P)).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "coupling.h"
#include "rqs.h"
#include "spline.h"
#include "../block.h"
#include "../emath.h"
#include "../kern.h"
#include "../loader.h"
#include "../subnet.h"

/* ==== the binned spline (spline.h) ===================================================== */

/* Knots of one coordinate: widths and heights in `w`, `h` (K each). */
struct knots {
    double W, H;                /* sum w, sum h (after any domain clamping) */
    double left, bottom, scale, shift;
    const float *rd;            /* raw interior derivatives (K - 1) */
};

static void constrain(const struct spl_cfg *p, const float *raw, double *w, double *h,
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
    kn->W = W;
    kn->H = H;
    kn->scale = H / W;
    kn->shift = kn->bottom - kn->scale * kn->left;
}

/* Derivative at knot k (0..K). */
static inline double knot_deriv(const struct spl_cfg *p, const struct knots *kn, int k)
{
    if (k == 0 || k == p->K)
        return kn->scale;
    return rqs_softplus((double)kn->rd[k - 1] + RQS_LOG_E_M1);
}

/* The lower edge and size of bin k on the other axis (the same cumulative sums as
 * rqs_find_bin). */
static inline void bin_edge(const double *sz, int k, double base, double *lo, double *len)
{
    double acc = 0.0;
    for (int i = 0; i < k; i++)
        acc += sz[i];
    *lo = base + acc;
    *len = (base + (acc + sz[k])) - *lo;
}

/* v through the spline whose raw parameters are raw[0..P) (the inverse when inv);
 * *ld = log|d out / d v|.  w, h: K doubles each. */
static double spline_elem(const struct spl_cfg *p, const float *raw, double *w, double *h,
                          double v, bool inv, double *ld)
{
    struct knots kn;
    constrain(p, raw, w, h, &kn);
    const int K = p->K;
    /* Outer knots, as FrEIA's left + cumsum(widths)[-1] (the sums run in the same order). */
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
        /* FrEIA's linear_spline: scale x + shift, log-det log(dy) - log(dx) */
        const double shift = yk - s * xk;
        const double l = em_log(dy) - em_log(dx);
        *ld = inv ? -l : l;
        return inv ? (v - shift) / s : s * v + shift;
    }
    const double dk = knot_deriv(p, &kn, k), dk1 = knot_deriv(p, &kn, k + 1);
    if (!inv) {
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

/* Work area: one coordinate's gathered raw parameters (P floats), then 2K doubles from the
 * next 8-byte boundary (the workspace is 64-byte aligned and the segments are multiples of
 * 64 bytes, so that is normally the boundary itself). */
size_t spl_work_floats(const struct spl_cfg *p)
{
    return cpl_round((size_t)p->P) + cpl_round(4 * (size_t)p->K + 2);
}

static double *work_doubles(float *at, const struct spl_cfg *p)
{
    uintptr_t u = (uintptr_t)(at + cpl_round((size_t)p->P));
    u = (u + 7u) & ~(uintptr_t)7u;
    return (double *)(void *)u;
}

KERN_FMA_CLONES void spl_cols(const struct spl_cfg *p, struct blk_io *io, int d, int off,
                              int l, int S, const float *a, size_t lda, float *work, bool inv)
{
    const int P = p->P;
    float *raw = work;
    double *w = work_doubles(work, p), *h = w + p->K;
    for (int i = 0; i < io->n; i++) {
        float *xi = io->x + (size_t)i * d + off;
        const float *ai = a + (size_t)i * lda;
        double sum = 0.0;
        for (int j = 0; j < l; j++) {
            /* one position per channel: the P parameters are contiguous, read in place */
            const float *pj = ai + (size_t)j * P;
            if (S > 1) {
                const int c = j / S, s = j % S;
                const float *src = ai + (size_t)c * P * S + s;
                for (int q = 0; q < P; q++)
                    raw[q] = src[(size_t)q * S];
                pj = raw;
            }
            double ld = 0.0;
            xi[j] = (float)spline_elem(p, pj, w, h, (double)xi[j], inv, &ld);
            sum += ld;
        }
        io->log_det[i] += sum;
    }
}

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

enum eng_status spl_cfg_load(struct ldr *L, const cJSON *j, bool rq, struct spl_cfg *p)
{
    static const char *const tails[] = {"affine", "identity"};
    static const double def_dom[4] = {-3.0, 3.0, -3.0, 3.0};
    static const double def_min[2] = {0.1, 0.1};
    enum eng_status st;
    long K = 10;
    if ((st = ldr_int(L, j, "bins", false, 10, 1, SPL_MAX_BINS, &K)) != ENG_OK)
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
    return ENG_OK;
}

/* ==== the two-sided coupling (spline.h) ================================================= */

enum eng_status spl_coupling_load(struct blk *b, struct ldr *L, const cJSON *j, bool rq)
{
    enum eng_status st;
    struct spl_coupling *p = ldr_alloc(L, sizeof(*p));
    if (!p)
        return ENG_ERR_NOMEM;
    b->priv = p;
    /* split in coordinates, a whole number of channels (FrEIA splits channels) */
    if ((st = cpl_load_split(L, j, b, 1, cpl_channels(b) - 1, &p->l1)) != ENG_OK)
        return st;
    p->S = b->d / cpl_channels(b);
    p->l2 = b->d - p->l1;
    if ((st = spl_cfg_load(L, j, rq, &p->s)) != ENG_OK)
        return st;
    /* on image rows convolutional subnets with an image condition (cpl_subnet) */
    if ((st = cpl_subnet(L, b, j, "subnet1", p->l2, p->l1 * p->s.P, &p->net1)) != ENG_OK ||
        (st = cpl_subnet(L, b, j, "subnet2", p->l1, p->l2 * p->s.P, &p->net2)) != ENG_OK)
        return st;
    return ENG_OK;
}

size_t spl_coupling_scratch(const struct blk *b, int rows)
{
    const struct spl_coupling *p = b->priv;
    int lm = p->l1 > p->l2 ? p->l1 : p->l2;
    size_t s1 = subnet_scratch(p->net1, rows), s2 = subnet_scratch(p->net2, rows);
    return cpl_round((size_t)rows * lm * p->s.P) + spl_work_floats(&p->s) +
           cpl_round(s1 > s2 ? s1 : s2);
}

static void coupling_run(const struct blk *b, struct blk_io *io, bool inv)
{
    const struct spl_coupling *p = b->priv;
    const int n = io->n, d = b->d, lm = p->l1 > p->l2 ? p->l1 : p->l2, P = p->s.P;
    float *a = io->scratch;
    float *work = a + cpl_round((size_t)n * lm * P);
    float *sub = work + spl_work_floats(&p->s);
    if (!inv) {
        subnet_forward(p->net1, n, io->x + p->l1, d, io->c, io->c_ld, a, p->l1 * P, sub);
        spl_cols(&p->s, io, d, 0, p->l1, p->S, a, (size_t)p->l1 * P, work, false);
        subnet_forward(p->net2, n, io->x, d, io->c, io->c_ld, a, p->l2 * P, sub);
        spl_cols(&p->s, io, d, p->l1, p->l2, p->S, a, (size_t)p->l2 * P, work, false);
        return;
    }
    subnet_forward(p->net2, n, io->x, d, io->c, io->c_ld, a, p->l2 * P, sub);
    spl_cols(&p->s, io, d, p->l1, p->l2, p->S, a, (size_t)p->l2 * P, work, true);
    subnet_forward(p->net1, n, io->x + p->l1, d, io->c, io->c_ld, a, p->l1 * P, sub);
    spl_cols(&p->s, io, d, 0, p->l1, p->S, a, (size_t)p->l1 * P, work, true);
}

void spl_coupling_forward(const struct blk *b, struct blk_io *io)
{
    coupling_run(b, io, false);
}

void spl_coupling_inverse(const struct blk *b, struct blk_io *io)
{
    coupling_run(b, io, true);
}

/* ==== RationalQuadraticSpline ============================================================ */

static enum eng_status spl_load(struct blk *b, struct ldr *L, const cJSON *j)
{
    return spl_coupling_load(b, L, j, true);
}

/* Closed-form inverse: each element goes through a strictly increasing rational-
 * quadratic spline (positive widths, heights and derivatives by construction) inverted
 * by the stable quadratic root; the tails are affine or the identity. */
static void spl_certify(const struct blk *b, struct eng_block_cert *out)
{
    const struct spl_coupling *p = b->priv;
    out->invertible = true;
    out->guarantee = ENG_GUARANTEE_ANALYTIC;
    snprintf(out->reason, sizeof(out->reason),
             "monotone rational-quadratic spline coupling (%d bins, %s tails): closed-form "
             "inverse by the quadratic root; slopes bounded only per input (no global bound)",
             p->s.K, p->s.identity ? "identity" : "affine");
}

const struct blk_ops blk_spline_ops = {
    .type = "RationalQuadraticSpline",
    .takes_cond = true,
    .needs_cond = false,
    .load = spl_load,
    .scratch = spl_coupling_scratch,
    .forward = spl_coupling_forward,
    .inverse = spl_coupling_inverse,
    .certify = spl_certify,
};
