/*
 * coupling.c — FrEIA's coupling family (reference: freia-modules.md section 3):
 * NICECouplingBlock, RNVPCouplingBlock, GLOWCouplingBlock, GINCouplingBlock,
 * AffineCouplingOneSided and ConditionalAffineTransform.
 *
 * A row x (d) splits into x1 = x[0, l1) and x2 = x[l1, d), l1 = "split" (default FrEIA's
 * round-half-to-even of d/2, l2 = d - l1).  The two-sided blocks run
 *     forward:  y1 = C1(x1 | [x2, c]),  then  y2 = C2(x2 | [y1, c])
 *     inverse:  x2 = C2^-1(y2 | [y1, c]), then x1 = C1^-1(y1 | [x2, c])
 * where a "half" Ck is, with u the passive half (and condition) fed to its subnet(s):
 *     NICE  y = x + F(u)                                    log-det 0
 *     RNVP  s = clamp*f(net_s(u)), t = net_t(u); y = x e^s + t   log-det sum s
 *     GLOW  a = net(u) = [s_raw | t]; s = clamp*f(s_raw); same affine map
 *     GIN   as GLOW with s <- s - mean(s) over the half's channels (at each position on
 *           image rows, FrEIA's mean over dim 1); log-det 0
 * AffineCouplingOneSided is C2 alone (u = [x1, c]); ConditionalAffineTransform is one
 * affine map of the whole row whose s, t come from the condition only.
 *
 * Subnet names in the manifest: NICE "F" (l2 + cw -> l1) and "G" (l1 + cw -> l2);
 * RNVP "s1", "t1" (l1 + cw -> l2), "s2", "t2" (l2 + cw -> l1); GLOW/GIN "subnet1"
 * (l1 + cw -> 2 l2) and "subnet2" (l2 + cw -> 2 l1); one-sided "subnet" (l1 + cw -> 2 l2);
 * conditional affine "subnet" (cw -> 2 d).
 *
 * On (C, H, W) / (C, L) rows the split is along channels (l1 = c1 * positions, default
 * round(C/2) channels) and the subnets are convolutional ones on the half's channels
 * with the condition image concatenated (coupling.h, cpl_subnet); [s | t] is the subnet's
 * output channels split in two, which is the same flat [s | t] split.
 *
 * Subnets run once per tile on all n rows, reading the passive half in place (stride d)
 * and writing [s | t] rows into scratch.  When ConditionalAffineTransform gets one
 * broadcast condition row (c_ld == 0), s and t are computed once for the whole tile.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "coupling.h"
#include "../block.h"
#include "../emath.h"
#include "../loader.h"
#include "../subnet.h"

enum cpl_kind { K_NICE, K_RNVP, K_GLOW, K_GIN, K_ONESIDED, K_CONDAFFINE };

/* One half-coupling: the subnet(s) that transform one half, as (na, nb):
 * NICE (F or G, NULL), RNVP (net_s, net_t), GLOW/GIN/one-sided/cond-affine (net, NULL). */
struct half {
    int act_off, act_len;   /* the transformed columns [act_off, act_off + act_len) */
    int pas_off, pas_len;   /* the passive columns fed to the subnet (len 0: none) */
    const struct subnet *na, *nb;
};

struct cpl_priv {
    enum cpl_kind kind;
    int l1, l2;
    float clamp;
    enum clamp_act act;
    bool has_h1;            /* C1 exists (two-sided blocks) */
    struct half h1, h2;     /* h1 transforms x1, h2 transforms x2 (or the whole row) */
    int coef_w;             /* floats per row of the coefficient buffer: 2 * max width */
    int P;                  /* positions per channel (1 on vectors, H*W or L on images) */
};

/* ---- forward / inverse ---------------------------------------------------------------- */

static size_t sub_scratch(const struct subnet *s, int rows)
{
    return s ? subnet_scratch(s, rows) : 0;
}

static size_t cpl_scratch(const struct blk *b, int rows)
{
    const struct cpl_priv *p = b->priv;
    size_t sub = 0;
    const struct subnet *nets[4] = {p->h1.na, p->h1.nb, p->h2.na, p->h2.nb};
    for (int k = 0; k < 4; k++) {
        size_t s = sub_scratch(nets[k], rows);
        if (s > sub)
            sub = s;
    }
    return cpl_round((size_t)rows * p->coef_w) + cpl_round(sub);
}

/* Apply half h to the tile (inverse when inv).  Coefficients go to scratch rows of
 * stride 2*act_len ([s | t]) or act_len (NICE). */
static void run_half(const struct cpl_priv *p, const struct half *h, int d, struct blk_io *io,
                     bool inv)
{
    int n = io->n, la = h->act_len;
    float *a = io->scratch;
    float *sub = io->scratch + cpl_round((size_t)n * p->coef_w);
    const float *u = h->pas_len > 0 ? io->x + h->pas_off : NULL;
    float *x = io->x + h->act_off;

    /* A subnet that sees only a broadcast condition row gives the same output for every
     * row: compute it once (rows = 1) and broadcast it (coefficient stride 0). */
    int rows = (h->pas_len == 0 && io->c_ld == 0) ? 1 : n;

    if (p->kind == K_NICE) {
        subnet_forward(h->na, rows, u, d, io->c, io->c_ld, a, la, sub);
        cpl_add(x, d, a, la, n, la, inv ? -1.0f : 1.0f);
        return;
    }
    int lda = 2 * la;
    subnet_forward(h->na, rows, u, d, io->c, io->c_ld, a, lda, sub);
    if (h->nb)  /* RNVP: t from its own subnet, next to s */
        subnet_forward(h->nb, rows, u, d, io->c, io->c_ld, a + la, lda, sub);
    cpl_clamp_cols(io->k, p->act, p->clamp, a, rows, la, lda);
    double *ld = io->log_det;
    if (p->kind == K_GIN) {
        cpl_center_channels(a, rows, la / p->P, p->P, lda);
        ld = NULL;  /* volume preserving: FrEIA returns 0 */
    }
    int ldc = rows == 1 && n > 1 ? 0 : lda;
    if (inv)
        cpl_affine_inv(io->k, x, d, a, ldc, n, la, ld);
    else
        cpl_affine_fwd(io->k, x, d, a, ldc, n, la, ld);
}

static void cpl_forward(const struct blk *b, struct blk_io *io)
{
    const struct cpl_priv *p = b->priv;
    if (p->has_h1)
        run_half(p, &p->h1, b->d, io, false);
    run_half(p, &p->h2, b->d, io, false);
}

static void cpl_inverse(const struct blk *b, struct blk_io *io)
{
    const struct cpl_priv *p = b->priv;
    run_half(p, &p->h2, b->d, io, true);
    if (p->has_h1)
        run_half(p, &p->h1, b->d, io, true);
}

/* ---- load ------------------------------------------------------------------------------ */

static enum eng_status load_common(struct blk *b, struct ldr *L, const cJSON *j,
                                   enum cpl_kind kind)
{
    struct cpl_priv *p = ldr_alloc(L, sizeof(*p));
    if (!p)
        return ENG_ERR_NOMEM;
    b->priv = p;
    p->kind = kind;
    p->P = b->d / cpl_channels(b);
    int d = b->d, cw = b->cw;
    enum eng_status st;

    if (kind == K_CONDAFFINE) {
        if (cw <= 0)
            return ldr_fail(L, ENG_ERR_MANIFEST,
                            "cond: ConditionalAffineTransform requires a condition");
        p->l1 = 0;
        p->l2 = d;
    } else {
        /* Two-sided blocks need both halves non-empty; the one-sided block may leave x1
         * empty when a condition feeds its subnet. */
        int lo = (kind == K_ONESIDED && cw > 0) ? 0 : 1;
        st = cpl_load_split(L, j, b, lo, cpl_channels(b) - 1, &p->l1);
        if (st != ENG_OK)
            return st;
        p->l2 = d - p->l1;
    }
    if (kind != K_NICE) {
        st = cpl_load_clamp(L, j, &p->clamp, &p->act);
        if (st != ENG_OK)
            return st;
    }
    int l1 = p->l1, l2 = p->l2;
    /* h1 transforms x1 from u = [x2, c]; h2 transforms x2 from u = [x1 (or y1), c]. */
    p->h1 = (struct half){.act_off = 0, .act_len = l1, .pas_off = l1, .pas_len = l2};
    p->h2 = (struct half){.act_off = l1, .act_len = l2, .pas_off = 0, .pas_len = l1};
    p->has_h1 = true;

    switch (kind) {
    case K_NICE:
        if ((st = cpl_subnet(L, b, j, "F", l2, l1, &p->h1.na)) != ENG_OK ||
            (st = cpl_subnet(L, b, j, "G", l1, l2, &p->h2.na)) != ENG_OK)
            return st;
        break;
    case K_RNVP:
        if ((st = cpl_subnet(L, b, j, "s1", l1, l2, &p->h2.na)) != ENG_OK ||
            (st = cpl_subnet(L, b, j, "t1", l1, l2, &p->h2.nb)) != ENG_OK ||
            (st = cpl_subnet(L, b, j, "s2", l2, l1, &p->h1.na)) != ENG_OK ||
            (st = cpl_subnet(L, b, j, "t2", l2, l1, &p->h1.nb)) != ENG_OK)
            return st;
        break;
    case K_GLOW:
    case K_GIN:
        if ((st = cpl_subnet(L, b, j, "subnet1", l1, 2 * l2, &p->h2.na)) != ENG_OK ||
            (st = cpl_subnet(L, b, j, "subnet2", l2, 2 * l1, &p->h1.na)) != ENG_OK)
            return st;
        break;
    case K_ONESIDED:
        p->has_h1 = false;
        if ((st = cpl_subnet(L, b, j, "subnet", l1, 2 * l2, &p->h2.na)) != ENG_OK)
            return st;
        break;
    case K_CONDAFFINE:
        p->has_h1 = false;
        if ((st = cpl_subnet(L, b, j, "subnet", 0, 2 * d, &p->h2.na)) != ENG_OK)
            return st;
        break;
    }
    int wmax = l1 > l2 ? l1 : l2;
    p->coef_w = 2 * wmax;
    return ENG_OK;
}

static enum eng_status load_nice(struct blk *b, struct ldr *L, const cJSON *j)
{
    return load_common(b, L, j, K_NICE);
}
static enum eng_status load_rnvp(struct blk *b, struct ldr *L, const cJSON *j)
{
    return load_common(b, L, j, K_RNVP);
}
static enum eng_status load_glow(struct blk *b, struct ldr *L, const cJSON *j)
{
    return load_common(b, L, j, K_GLOW);
}
static enum eng_status load_gin(struct blk *b, struct ldr *L, const cJSON *j)
{
    return load_common(b, L, j, K_GIN);
}
static enum eng_status load_onesided(struct blk *b, struct ldr *L, const cJSON *j)
{
    return load_common(b, L, j, K_ONESIDED);
}
static enum eng_status load_condaffine(struct blk *b, struct ldr *L, const cJSON *j)
{
    return load_common(b, L, j, K_CONDAFFINE);
}

/* ---- certificate ----------------------------------------------------------------------- */

/* sup |f| of the clamp activation: 0.636 * pi/2 (ATAN), 1 (TANH, SIGMOID). */
static double clamp_sup(enum clamp_act a)
{
    return a == CLAMP_ATAN ? 0.636 * 1.5707963267948966 : 1.0;
}

/* Norm of [[1, L], [0, 1]]: the Lipschitz constant of (a, b) -> (a + F(b), b), Lip F = L. */
static double shear_norm(double L) { return 0.5 * (L + sqrt(L * L + 4.0)); }

/* Closed-form inverse always.  Bounds: NICE, from the subnets' certified Lipschitz
 * constants; ConditionalAffineTransform, from the clamp (s, t depend on the condition
 * only); the x-dependent affine couplings have no global Lipschitz bound (d y / d x_passive
 * grows with |x_active|), so only the range of the per-element scale is stated. */
static void cpl_certify(const struct blk *b, struct eng_block_cert *out)
{
    const struct cpl_priv *p = b->priv;
    static const char *const actn[] = {"ATAN", "TANH", "SIGMOID"};
    double smax = p->kind == K_NICE ? 0.0 : (double)p->clamp * clamp_sup(p->act);
    out->invertible = true;
    out->guarantee = ENG_GUARANTEE_ANALYTIC;
    switch (p->kind) {
    case K_NICE: {
        double lf = subnet_lipschitz(p->h1.na), lg = subnet_lipschitz(p->h2.na);
        out->lipschitz = out->lipschitz_inverse = shear_norm(lf) * shear_norm(lg);
        snprintf(out->reason, sizeof(out->reason),
                 "additive coupling: closed-form inverse, volume preserving; Lip(F) <= %.4g, "
                 "Lip(G) <= %.4g (%s), so Lip(f) and Lip(f^-1) <= %.4g", lf, lg,
                 p->h1.na->general ? "certified norm bounds of their layers, convolutions "
                                     "included" : "exact spectral norms", out->lipschitz);
        break;
    }
    case K_CONDAFFINE:
        out->lipschitz = out->lipschitz_inverse = em_exp(smax);
        snprintf(out->reason, sizeof(out->reason),
                 "affine map of x with scale and shift from the condition only: closed-form "
                 "inverse; every scale e^s lies in [e^-%.4g, e^%.4g] (clamp %g, %s)", smax, smax,
                 (double)p->clamp, actn[p->act]);
        break;
    case K_GIN:
        snprintf(out->reason, sizeof(out->reason),
                 "volume-preserving affine coupling (GIN): closed-form inverse; per-element "
                 "scales in [e^-%.4g, e^%.4g] (centred clamp %g, %s); no global Lipschitz bound",
                 2 * smax, 2 * smax, (double)p->clamp, actn[p->act]);
        break;
    default:
        snprintf(out->reason, sizeof(out->reason),
                 "affine coupling: closed-form inverse; every scale e^s lies in [e^-%.4g, "
                 "e^%.4g] (clamp %g, %s); no global Lipschitz bound (the scale depends on the "
                 "other half)", smax, smax, (double)p->clamp, actn[p->act]);
        break;
    }
}

#define CPL_OPS(name, type_str, loadfn, needs)                                            \
    const struct blk_ops name = {                                                         \
        .type = type_str,                                                                 \
        .takes_cond = true,                                                               \
        .needs_cond = needs,                                                              \
        .load = loadfn,                                                                   \
        .scratch = cpl_scratch,                                                           \
        .forward = cpl_forward,                                                           \
        .inverse = cpl_inverse,                                                           \
        .certify = cpl_certify,                                                           \
    }

CPL_OPS(blk_nice_ops, "NICECouplingBlock", load_nice, false);
CPL_OPS(blk_rnvp_ops, "RNVPCouplingBlock", load_rnvp, false);
CPL_OPS(blk_glow_ops, "GLOWCouplingBlock", load_glow, false);
CPL_OPS(blk_gin_ops, "GINCouplingBlock", load_gin, false);
CPL_OPS(blk_onesided_ops, "AffineCouplingOneSided", load_onesided, false);
CPL_OPS(blk_condaffine_ops, "ConditionalAffineTransform", load_condaffine, true);
