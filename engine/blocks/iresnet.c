/*
 * iresnet.c — the invertible residual block of Behrmann et al. (2019):
 *     y = x + g(x | c),   g = Linear -> act -> ... -> Linear  (d [+ cw] -> d)
 * invertible when L = Lip(g) < 1 (Banach).  Manifest type "IResNetBlock"; fields in
 * docs/checkpoint-format.md, the maths in docs/inversion.md and iresnet.md.
 *
 * On (C, H, W) / (C, L) rows g is a convolutional subnet (image to image, a condition
 * image concatenated along channels); each convolution runs here as its exact dense
 * matrix on the flat rows (load_general), and its norm in the certificate is
 * conv_norm2_upper's bound on the convolution (conv.h; docs/inversion.md).
 *
 * What this file does
 *  - Load: the subnet (ldr_subnet), double copies of its weights and of their absolute
 *    values (for the rounding bounds), and the certified bound
 *      L = prod_i ||W_i||_2 * prod_j Lip(act_j)
 *    with every ||W_i||_2 an upper bound from la_norm2_upper (Jacobi SVD or Gram
 *    iteration, never the power iteration, which only bounds from below; the exporter's
 *    stored sigma is not trusted).  For a conditional block only the x columns of the
 *    first Linear count: the condition is constant during an inversion.  L >= 1 loads,
 *    but the block (and the model) is not certified.
 *  - Forward, in double: y = x + g(x) and log det(I + J_g(x)) per row, exactly (the
 *    Jacobian by the chain rule W_k D_{k-1} ... D_1 W_1 and an LU), or with manifest
 *    "logdet": "series" the truncated series sum_{k<=n} (-1)^{k+1} tr(J_g^k)/k with exact
 *    traces, whose error is at most d L^{n+1} / ((n+1)(1-L)).
 *  - Inverse, in double: the solvers of solve.c on x + g(x) = y, batched over the rows
 *    still iterating; then one forward pass at the returned point x for its log-det and
 *    its residual, so the reported bound is
 *      min(solver bound, (||r~(x)|| + rho(x))/(1-L)) + ||fl32(x) - x||,
 *    the last term (the rounding of the returned float values) only where the float32
 *    value is what is read next.  Every evaluation of g carries an elementwise bound on
 *    its own rounding (g_eval), from which rho bounds the rounding of the residual, so
 *    the bound holds for the computed values, not only in exact arithmetic
 *    (docs/inversion.md, "what is certified").
 *  - Determinism: the weights are widened to double once at load and g runs on the
 *    fixed-order fma kernels of la.c, never OpenBLAS: bit-identical results everywhere.
 *
 * Memory: rows are processed in chunks of p->chunk rows whose double buffers (solver
 * state, activations, tape of pre-activations for Jacobians) come from io->scratch;
 * the scratch op reports the size for a chunk.  Nothing is allocated after load.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coupling.h"
#include "../block.h"
#include "../conv.h"
#include "../la.h"
#include "../loader.h"
#include "../solve.h"
#include "../subnet.h"

/* Rows per chunk are capped so that the chunk's doubles stay under this many. */
#define IRES_CHUNK_DOUBLES (1u << 20)
/* A convolution runs here as its exact dense matrix: at most this many entries each. */
#define IRES_DENSE_MAX ((size_t)1 << 22)

struct dlayer {
    int lin;        /* Linear (else activation) */
    int in, out;    /* layer 0: in = d (x part only) */
    const double *w; /* out x in */
    const double *wabs; /* |w| (rounding bounds) */
    const double *b; /* out, or NULL */
    enum act_type act;
    float p1, p2;
    double lip;     /* activations: Lipschitz constant (propagates input errors) */
    size_t tape_off; /* activations: offset of its pre-activations in the tape, per row */
    /* a convolution's certified norm bound and power-iteration witness (conv_norm2_upper),
     * 0 for a Linear (then la_norm2_upper of w) */
    double norm_up, norm_lo;
};

struct iresnet {
    const struct subnet *net;
    int nl;
    struct dlayer *l;
    const double *w1c;  /* H1 x cw: the condition columns of the first Linear */
    const double *w1c_abs; /* |w1c| */
    int h1;             /* width of the first Linear's output */
    int max_w;          /* widest of d and every layer */
    size_t tape_w;      /* doubles of pre-activations per row */
    int last_lin;
    int n_lin;
    double *norms;      /* n_lin certified upper bounds on ||W_i||_2 */
    double act_lip;     /* product of the activations' Lipschitz constants */
    double L;           /* certified bound on Lip(g) (x direction) */
    double L_lower;     /* product of power-iteration norms (a lower bracket of the product) */
    int n_conv;         /* convolutions among the Linear layers */
    const char *conv_method; /* how their norms were bounded (conv_norm2_upper), or NULL */
    bool series;
    int series_terms;
    double series_bound; /* bound on |exact - series| per row */
    int chunk;
};

/* ---- scratch layout ---------------------------------------------------------------------- */

struct bufs {
    double *y, *x, *gx, *ge;  /* R x d (ge: rounding bounds of gx) */
    double *cc;               /* R x cw: the condition rows in double */
    double *cb, *cbe;         /* R x h1: first-layer bias + condition contribution, its bound */
    double *b0, *b1;          /* R x max_w */
    double *e0, *e1;          /* R x max_w: rounding bounds of b0, b1 */
    double *tape;             /* R x tape_w (layer-major: tape_off * R) */
    double *j0, *j1;          /* max_w x d */
    double *A;                /* d x d (+ d x d for the series) */
    double *A2;
    int *piv;                 /* d */
    struct slv_row *rows;     /* R */
    double *solver;           /* slv scratch */
};

static size_t solver_doubles(int d, int R)
{
    size_t m = 0;
    for (int meth = 0; meth < ENG_SOLVE_COUNT; meth++) {
        size_t s = slv_scratch(d, R, meth, 0);
        if (s > m)
            m = s;
    }
    return m;
}

static size_t chunk_doubles(const struct blk *b, const struct iresnet *p, int R)
{
    const size_t d = (size_t)b->d;
    size_t per_row = 4 * d + (size_t)b->cw + 2 * (size_t)p->h1 + 4 * (size_t)p->max_w + p->tape_w +
                     (sizeof(struct slv_row) + 7) / 8;
    size_t fixed = 2 * (size_t)p->max_w * d + 2 * d * d + d + 16;
    return (size_t)R * per_row + fixed + solver_doubles(b->d, R);
}

static struct bufs carve(const struct blk *b, const struct iresnet *p, float *scratch, int R)
{
    /* align to 64 bytes */
    uintptr_t a = ((uintptr_t)scratch + 63) & ~(uintptr_t)63;
    double *q = (double *)a;
    const size_t d = (size_t)b->d;
    struct bufs s;
    s.y = q, q += (size_t)R * d;
    s.x = q, q += (size_t)R * d;
    s.gx = q, q += (size_t)R * d;
    s.ge = q, q += (size_t)R * d;
    s.cc = q, q += (size_t)R * b->cw;
    s.cb = q, q += (size_t)R * p->h1;
    s.cbe = q, q += (size_t)R * p->h1;
    s.b0 = q, q += (size_t)R * p->max_w;
    s.b1 = q, q += (size_t)R * p->max_w;
    s.e0 = q, q += (size_t)R * p->max_w;
    s.e1 = q, q += (size_t)R * p->max_w;
    s.tape = q, q += (size_t)R * p->tape_w;
    s.rows = (struct slv_row *)(void *)q, q += (size_t)R * ((sizeof(struct slv_row) + 7) / 8);
    s.j0 = q, q += (size_t)p->max_w * d;
    s.j1 = q, q += (size_t)p->max_w * d;
    s.A = q, q += d * d;
    s.A2 = q, q += d * d;
    s.piv = (int *)(void *)q, q += d;
    s.solver = q;
    return s;
}

static size_t iresnet_scratch(const struct blk *b, int rows)
{
    const struct iresnet *p = b->priv;
    int R = rows < p->chunk ? rows : p->chunk;
    if (R < 1)
        R = 1;
    return 2 * chunk_doubles(b, p, R) + 64; /* floats; + alignment slack */
}

/* ---- g in double ------------------------------------------------------------------------- */

struct gctx {
    const struct blk *b;
    const struct iresnet *p;
    struct bufs *s;
    int R;        /* rows capacity of the chunk (tape stride) */
    int cb_ld;    /* 0: one condition row for all; 1: per row; -1: no condition */
};

/* Rounding of one computed activation value v = phi~(u) (docs/inversion.md): relu and
 * the identity branches (u > 0 for elu, u >= 0 for leaky_relu) are exact, leaky_relu's
 * slope is one multiplication; every other formula is bounded by IRES_ACT_ULPS u (|u| +
 * |v|): its elementary functions (exp, expm1, log1p, tanh, erf) are accurate to within
 * 2 ulps and each formula adds at most a handful of roundings, with cancellation only
 * against |u| (gelu's 1 + erf, silu's u / (1 + e^-u)). */
#define IRES_ACT_ULPS 16.0

static double act_round(enum act_type t, double u, double v)
{
    switch (t) {
    case ACT_RELU:
        return 0.0;
    case ACT_LEAKY_RELU:
        return u >= 0.0 ? 0.0 : LA_U * fabs(v);
    case ACT_ELU:
        return u > 0.0 ? 0.0 : IRES_ACT_ULPS * LA_U * fabs(v);
    default:
        return IRES_ACT_ULPS * LA_U * (fabs(u) + fabs(v));
    }
}

/* gx (rows x d) = g(x) for rows whose condition rows are ids[k] (NULL: k).  Records the
 * pre-activations in the tape (row k of the call).  With ge != NULL also a bound on
 * |gx - g(x)| per element: la_linear_err_f64 for every Linear (its fma chain and the
 * errors of its input), and for an activation |phi~(u~) - phi(u)| <= Lip(phi) |u~ - u| +
 * act_round(u~, phi~(u~)).  The values are bit-identical with and without ge; every sum
 * is a fixed-order fma chain (la.c). */
static void g_eval(const struct gctx *c, int rows, const int *ids, const double *x, double *gx,
                   double *ge)
{
    const struct iresnet *p = c->p;
    const int d = c->b->d;
    const struct dlayer *l0 = &p->l[0];
    double *cur = p->last_lin == 0 ? gx : c->s->b0;
    double *ecur = p->last_lin == 0 ? ge : c->s->e0;
    int ldcur = p->last_lin == 0 ? d : l0->out;
    for (int k = 0; k < rows; k++) {
        double *row = cur + (size_t)k * ldcur, *erow = ge ? ecur + (size_t)k * ldcur : NULL;
        const double *src = NULL, *esrc = NULL;
        if (c->cb_ld == 0) {
            src = c->s->cb, esrc = c->s->cbe;
        } else if (c->cb_ld > 0) {
            size_t r = (size_t)(ids ? ids[k] : k) * p->h1;
            src = c->s->cb + r, esrc = c->s->cbe + r;
        } else {
            src = l0->b; /* exact (or NULL: zero) */
        }
        if (src)
            memcpy(row, src, sizeof(double) * (size_t)l0->out);
        else
            memset(row, 0, sizeof(double) * (size_t)l0->out);
        if (erow) {
            if (esrc)
                memcpy(erow, esrc, sizeof(double) * (size_t)l0->out);
            else
                memset(erow, 0, sizeof(double) * (size_t)l0->out);
        }
    }
    if (ge)
        la_linear_err_f64(rows, l0->out, d, x, d, NULL, 0, l0->w, l0->wabs, d, cur, ldcur, ecur,
                          ldcur);
    else
        la_linear_f64(rows, l0->out, d, x, d, l0->w, d, 1.0, cur, ldcur);
    int which = 0;
    for (int i = 1; i < p->nl; i++) {
        const struct dlayer *l = &p->l[i];
        if (!l->lin) {
            double *t = c->s->tape + l->tape_off * (size_t)c->R;
            for (int k = 0; k < rows; k++) {
                double *v = cur + (size_t)k * ldcur;
                const double *u = t + (size_t)k * l->out;
                memcpy(t + (size_t)k * l->out, v, sizeof(double) * (size_t)l->out);
                act_apply_f64(l->act, l->p1, l->p2, v, (size_t)l->out);
                if (ge) {
                    double *e = ecur + (size_t)k * ldcur;
                    for (int j = 0; j < l->out; j++)
                        e[j] = (l->lip * e[j] + act_round(l->act, u[j], v[j])) *
                                   (1.0 + 4.0 * LA_U) + 0x1p-1070;
                }
            }
            continue;
        }
        double *dst = i == p->last_lin ? gx : (which ? c->s->b0 : c->s->b1);
        double *edst = i == p->last_lin ? ge : (which ? c->s->e0 : c->s->e1);
        int lddst = i == p->last_lin ? d : l->out;
        for (int k = 0; k < rows; k++) {
            double *row = dst + (size_t)k * lddst;
            if (l->b)
                memcpy(row, l->b, sizeof(double) * (size_t)l->out);
            else
                memset(row, 0, sizeof(double) * (size_t)l->out);
            if (ge)
                memset(edst + (size_t)k * lddst, 0, sizeof(double) * (size_t)l->out);
        }
        if (ge)
            la_linear_err_f64(rows, l->out, l->in, cur, ldcur, ecur, ldcur, l->w, l->wabs, l->in,
                              dst, lddst, edst, lddst);
        else
            la_linear_f64(rows, l->out, l->in, cur, ldcur, l->w, l->in, 1.0, dst, lddst);
        cur = dst, ecur = edst, ldcur = lddst;
        which ^= 1;
    }
}

/* J (d x d) = dg/dx at row `pos` of the last g_eval: W_k D_{k-1} ... D_1 W_1x by forward
 * accumulation, one (out x in) * (in x d) product per Linear. */
static void g_jac(const struct gctx *c, int pos, double *J)
{
    const struct iresnet *p = c->p;
    const int d = c->b->d;
    double *M = p->last_lin == 0 ? J : c->s->j0;
    memcpy(M, p->l[0].w, sizeof(double) * (size_t)p->l[0].out * d);
    int which = 0;
    for (int i = 1; i < p->nl; i++) {
        const struct dlayer *l = &p->l[i];
        if (!l->lin) {
            const double *u = c->s->tape + l->tape_off * (size_t)c->R + (size_t)pos * l->out;
            for (int r = 0; r < l->out; r++) {
                double dr = act_deriv(l->act, l->p1, l->p2, u[r]);
                double *row = M + (size_t)r * d;
                for (int j = 0; j < d; j++)
                    row[j] *= dr;
            }
            continue;
        }
        double *dst = i == p->last_lin ? J : (which ? c->s->j0 : c->s->j1);
        la_gemm_f64(l->out, d, l->in, l->w, l->in, M, d, 0.0, dst, d);
        M = dst;
        which ^= 1;
    }
}

static void cb_g(void *ctx, int rows, const int *ids, const double *x, double *gx, double *ge)
{
    g_eval(ctx, rows, ids, x, gx, ge);
}

static void cb_jac(void *ctx, int pos, double *J) { g_jac(ctx, pos, J); }

/* log|det(I + J_g)| at row pos of the last g_eval (exact, or the series). */
static double row_logdet(const struct gctx *c, int pos)
{
    const struct iresnet *p = c->p;
    const int d = c->b->d;
    double *J = c->s->A;
    g_jac(c, pos, J);
    if (p->series) {
        /* sum_{k=1}^{n} (-1)^{k+1} tr(J^k) / k, with P = J^k formed exactly */
        double *P = c->s->A2, *T = c->s->j0; /* j0 holds max_w x d >= d x d */
        memcpy(P, J, sizeof(double) * (size_t)d * d);
        double s = 0.0;
        for (int k = 1; k <= p->series_terms; k++) {
            double tr = 0.0;
            for (int i = 0; i < d; i++)
                tr += P[(size_t)i * d + i];
            s += (k % 2 ? tr : -tr) / k;
            if (k < p->series_terms) {
                la_gemm_f64(d, d, d, P, d, J, d, 0.0, T, d);
                memcpy(P, T, sizeof(double) * (size_t)d * d);
            }
        }
        return s;
    }
    for (int i = 0; i < d; i++)
        J[(size_t)i * d + i] += 1.0;
    if (la_lu(d, J, c->s->piv) != 0)
        return -INFINITY; /* singular: only possible when L >= 1 */
    return la_lu_logabsdet(d, J);
}

/* Condition contributions for rows [r0, r0 + R) of the tile: cb = b1 + W1c c. */
static int prep_cond(const struct blk *b, const struct iresnet *p, const struct blk_io *io,
                     struct bufs *s, int r0, int R)
{
    if (b->cw == 0 || !io->c)
        return -1;
    const struct dlayer *l0 = &p->l[0];
    int rows = io->c_ld == 0 ? 1 : R;
    for (int k = 0; k < rows; k++) {
        const float *cr = io->c + (size_t)(io->c_ld == 0 ? 0 : r0 + k) * io->c_ld;
        for (int j = 0; j < b->cw; j++)
            s->cc[(size_t)k * b->cw + j] = cr[j];
        if (l0->b)
            memcpy(s->cb + (size_t)k * p->h1, l0->b, sizeof(double) * (size_t)p->h1);
        else
            memset(s->cb + (size_t)k * p->h1, 0, sizeof(double) * (size_t)p->h1);
        memset(s->cbe + (size_t)k * p->h1, 0, sizeof(double) * (size_t)p->h1);
    }
    /* the condition rows are exact (float inputs); cbe bounds the rounding of cb */
    la_linear_err_f64(rows, p->h1, b->cw, s->cc, b->cw, NULL, 0, p->w1c, p->w1c_abs, b->cw, s->cb,
                      p->h1, s->cbe, p->h1);
    return io->c_ld == 0 ? 0 : 1;
}

/* ---- block ops ----------------------------------------------------------------------------- */

static void iresnet_forward(const struct blk *b, struct blk_io *io)
{
    const struct iresnet *p = b->priv;
    const int d = b->d;
    int R = io->n < p->chunk ? io->n : p->chunk;
    if (R < 1)
        return;
    struct bufs s = carve(b, p, io->scratch, R);
    struct gctx c = {b, p, &s, R, -1};
    for (int r0 = 0; r0 < io->n; r0 += R) {
        int rows = io->n - r0 < R ? io->n - r0 : R;
        c.cb_ld = prep_cond(b, p, io, &s, r0, rows);
        float *xt = io->x + (size_t)r0 * d;
        for (size_t i = 0; i < (size_t)rows * d; i++)
            s.x[i] = xt[i];
        g_eval(&c, rows, NULL, s.x, s.gx, NULL);
        for (size_t i = 0; i < (size_t)rows * d; i++)
            xt[i] = (float)(s.x[i] + s.gx[i]);
        for (int k = 0; k < rows; k++)
            io->log_det[r0 + k] += row_logdet(&c, k);
    }
}

static void iresnet_inverse(const struct blk *b, struct blk_io *io)
{
    const struct iresnet *p = b->priv;
    const int d = b->d;
    int R = io->n < p->chunk ? io->n : p->chunk;
    if (R < 1)
        return;
    struct bufs s = carve(b, p, io->scratch, R);
    struct gctx c = {b, p, &s, R, -1};
    static const struct eng_solver_opts defaults = {ENG_SOLVER_DEFAULT_TOL,
                                                    ENG_SOLVER_DEFAULT_MAX_ITER, ENG_SOLVE_AUTO};
    const struct eng_solver_opts *o = io->opts ? io->opts : &defaults;
    struct slv_opts so;
    so.method = o->method >= 0 && o->method < ENG_SOLVE_COUNT ? o->method : ENG_SOLVE_AUTO;
    so.max_iter = o->max_iter > 0 ? o->max_iter : ENG_SOLVER_DEFAULT_MAX_ITER;
    so.tol = io->tol > 0 ? io->tol : (o->tol > 0 ? o->tol : ENG_SOLVER_DEFAULT_TOL);
    /* when the float32 values are what is read next, leave room for rounding the result
     * to float (<= 2^-24 |x|), so the returned values meet the target too */
    if (!io->xd || io->rounds_out)
        so.tol = so.tol > 0x1p-23 ? so.tol - 0x1p-24 : 0.5 * so.tol;
    so.memory = 0;
    struct slv_fn fn = {d, &c, cb_g, cb_jac, p->L};
    const bool cert = p->L < 1.0;
    const double amp = io->err_scale > 0 ? io->err_scale : 1.0;
    for (int r0 = 0; r0 < io->n; r0 += R) {
        int rows = io->n - r0 < R ? io->n - r0 : R;
        c.cb_ld = prep_cond(b, p, io, &s, r0, rows);
        float *xt = io->x + (size_t)r0 * d;
        double *xdt = io->xd ? io->xd + (size_t)r0 * d : NULL;
        for (size_t i = 0; i < (size_t)rows * d; i++)
            s.y[i] = s.x[i] = xdt ? xdt[i] : (double)xt[i];
        slv_solve(&fn, &so, rows, s.y, s.x, s.rows, s.solver);
        /* One more pass at the returned points: their log-det, residual and a second
         * bound, ||x - x*|| <= ||r(x)|| / (1 - L), with ||r(x)|| bounded as in the solver. */
        g_eval(&c, rows, NULL, s.x, s.gx, s.ge);
        for (int k = 0; k < rows; k++) {
            const double *xr = s.x + (size_t)k * d, *gr = s.gx + (size_t)k * d;
            const double *yr = s.y + (size_t)k * d, *er = s.ge + (size_t)k * d;
            double *rv = s.b0, *ev = s.b1; /* d doubles each; free after g_eval */
            float *out = xt + (size_t)k * d;
            double r2 = 0.0;
            for (int t = 0; t < d; t++) {
                double xg = xr[t] + gr[t];
                rv[t] = xg - yr[t];
                ev[t] = er[t] + LA_U * (1.0 + 2.0 * LA_U) * (fabs(xg) + fabs(rv[t]));
                r2 += rv[t] * rv[t];
            }
            double res = sqrt(r2), res_up = la_norm_up(d, rv), rho = la_norm_up(d, ev);
            /* rounding to float32: out - x is exact (Sterbenz), its norm rounded up */
            for (int t = 0; t < d; t++) {
                out[t] = (float)xr[t];
                if (xdt)
                    xdt[(size_t)k * d + t] = xr[t];
                rv[t] = (double)out[t] - xr[t];
            }
            double e32 = la_norm_up(d, rv);
            if (xdt && !io->rounds_out)
                e32 = 0.0; /* the next block reads the exact double result */
            double bound = INFINITY;
            if (cert && isfinite(res_up) && isfinite(rho)) {
                double at_x = (res_up + rho) / (1.0 - p->L) * (1.0 + 16.0 * LA_U);
                bound = (fmin(s.rows[k].error_bound, at_x) + e32) * (1.0 + 4.0 * LA_U);
            }
            io->log_det[r0 + k] -= row_logdet(&c, k);
            int i = r0 + k;
            if (io->iterations)
                io->iterations[i] += s.rows[k].iterations;
            if (io->residual && !(io->residual[i] >= res))
                io->residual[i] = res; /* max; NaN propagates */
            /* 1 + 2^-44 covers the rounding of amp * bound and of the sum over the blocks
             * (up to 2^9 of them) */
            if (io->error_bound)
                io->error_bound[i] += isfinite(bound) ? amp * bound * (1.0 + 0x1p-44) : INFINITY;
            if (io->converged)
                io->converged[i] = io->converged[i] && s.rows[k].converged;
        }
    }
}

/* ---- load ---------------------------------------------------------------------------------- */

/* The float weights widened to double (exactly), once at load; `absolute`: |w|. */
static double *to_f64(struct ldr *L, const float *w, size_t n, bool absolute)
{
    double *o = ldr_alloc(L, sizeof(double) * (n ? n : 1));
    if (o)
        for (size_t i = 0; i < n; i++)
            o[i] = absolute ? fabs((double)w[i]) : (double)w[i];
    return o;
}

/* An activation layer (shared by both subnet forms): its Lipschitz constant and tape slot. */
static enum eng_status act_layer(struct ldr *L, struct iresnet *p, const struct subnet_layer *sl,
                                 struct dlayer *l, int i, size_t *tape)
{
    l->in = sl->in;
    l->act = sl->act;
    l->p1 = sl->p1, l->p2 = sl->p2;
    double k = act_lipschitz(sl->act, sl->p1, sl->p2);
    if (!isfinite(k))
        return ldr_fail(L, ENG_ERR_MANIFEST, "subnet.layers[%d]: activation '%s' has no "
                        "Lipschitz bound; an IResNetBlock needs one", i, act_name(sl->act));
    p->act_lip *= k;
    l->lip = k;
    l->tape_off = *tape;
    *tape += (size_t)l->out;
    return ENG_OK;
}

/* The MLP subnet's layers in double. */
static enum eng_status load_mlp(struct blk *b, struct ldr *L, struct iresnet *p)
{
    const int d = b->d, cw = b->cw;
    const struct subnet *net = p->net;
    p->nl = net->n_layers;
    p->l = ldr_alloc(L, sizeof(*p->l) * (size_t)p->nl);
    if (!p->l)
        return ENG_ERR_NOMEM;
    size_t tape = 0;
    for (int i = 0; i < p->nl; i++) {
        const struct subnet_layer *sl = &net->layers[i];
        struct dlayer *l = &p->l[i];
        l->lin = sl->is_linear;
        l->out = sl->out;
        if (sl->out > p->max_w)
            p->max_w = sl->out;
        if (l->lin) {
            p->last_lin = i;
            p->n_lin++;
            l->in = i == 0 ? d : sl->in;
            l->w = to_f64(L, i == 0 ? net->w1x : sl->w, (size_t)l->out * l->in, false);
            l->wabs = to_f64(L, i == 0 ? net->w1x : sl->w, (size_t)l->out * l->in, true);
            l->b = sl->b ? to_f64(L, sl->b, (size_t)l->out, false) : NULL;
            if (!l->w || !l->wabs || (sl->b && !l->b))
                return ENG_ERR_NOMEM;
        } else {
            enum eng_status st = act_layer(L, p, sl, l, i, &tape);
            if (st != ENG_OK)
                return st;
        }
    }
    p->tape_w = tape;
    p->h1 = p->l[0].out;
    if (cw > 0 && (!(p->w1c = to_f64(L, net->w1c, (size_t)p->h1 * cw, false)) ||
                   !(p->w1c_abs = to_f64(L, net->w1c, (size_t)p->h1 * cw, true))))
        return ENG_ERR_NOMEM;
    return ENG_OK;
}

/* A convolutional subnet's layers in double: every convolution becomes its exact dense
 * (out x in) matrix on the flat channel-major rows (entries no tap reaches are zeros, so
 * g, its rounding bounds and its Jacobian are those of the convolution), its bias spread
 * over the positions; flatten and unflatten vanish.  The norm of each convolution is
 * bounded by conv_norm2_upper on the convolution itself (conv.h). */
static enum eng_status load_general(struct blk *b, struct ldr *L, struct iresnet *p)
{
    const int d = b->d, cw = b->cw;
    const struct subnet *net = p->net;
    int n = 0;
    for (int i = 0; i < net->n_layers; i++)
        if (net->layers[i].kind != SUB_FLATTEN && net->layers[i].kind != SUB_UNFLATTEN)
            n++;
    p->nl = n;
    p->l = ldr_alloc(L, sizeof(*p->l) * (size_t)n);
    if (!p->l)
        return ENG_ERR_NOMEM;
    size_t tape = 0;
    for (int i = 0, k = 0; i < net->n_layers; i++) {
        const struct subnet_layer *sl = &net->layers[i];
        if (sl->kind == SUB_FLATTEN || sl->kind == SUB_UNFLATTEN)
            continue;
        struct dlayer *l = &p->l[k];
        l->out = sl->out;
        if (sl->out > p->max_w)
            p->max_w = sl->out;
        if (sl->kind == SUB_ACT) {
            if (k == 0)
                return ldr_fail(L, ENG_ERR_MANIFEST, "subnet.layers[%d]: a convolutional "
                                "residual branch must start with a convolution or linear "
                                "layer", i);
            enum eng_status st = act_layer(L, p, sl, l, k, &tape);
            if (st != ENG_OK)
                return st;
            k++;
            continue;
        }
        const int in_all = sl->in, out = sl->out;
        if ((size_t)in_all * (size_t)out > IRES_DENSE_MAX)
            return ldr_fail(L, ENG_ERR_TENSOR, "subnet.layers[%d]: tensor '%s': the layer maps "
                            "%d to %d values, over the %zu-entry dense matrix an IResNetBlock "
                            "computes exactly in double", i, sl->wname, in_all, out,
                            IRES_DENSE_MAX);
        double *M = ldr_alloc(L, sizeof(double) * (size_t)in_all * out);
        double *bias = ldr_alloc(L, sizeof(double) * (size_t)out);
        if (!M || !bias)
            return ENG_ERR_NOMEM;
        bool has_bias = false;
        if (sl->kind == SUB_LINEAR) {
            for (size_t t = 0; t < (size_t)in_all * out; t++)
                M[t] = sl->w[t];
            if (sl->b)
                for (int o = 0; o < out; o++)
                    bias[o] = sl->b[o];
            has_bias = sl->b != NULL;
        } else {
            const struct conv_geom *g = &sl->g;
            const size_t nw = (size_t)g->cout * g->kg, P = (size_t)g->oh * g->ow;
            double *wd = malloc(sizeof(double) * nw);
            if (!wd)
                return ldr_fail(L, ENG_ERR_NOMEM, "out of memory for a convolution's matrix");
            for (size_t t = 0; t < nw; t++)
                wd[t] = sl->cw[t];
            conv_dense_f64(g, wd, g->cin, M);
            free(wd);
            if (sl->cb)
                for (int o = 0; o < out; o++)
                    bias[o] = sl->cb[(size_t)o / P];
            has_bias = sl->cb != NULL;
            const char *method;
            l->norm_up = conv_norm2_upper(g, sl->cw, k == 0 ? net->cx : g->cin, &l->norm_lo,
                                          &method);
            p->n_conv++;
            p->conv_method = method;
        }
        l->lin = 1;
        p->last_lin = k;
        p->n_lin++;
        l->b = has_bias ? bias : NULL;
        if (k == 0) {   /* x columns [0, d), condition columns [d, d + cw) */
            double *wx = ldr_alloc(L, sizeof(double) * (size_t)out * d);
            double *wxa = ldr_alloc(L, sizeof(double) * (size_t)out * d);
            double *wc = ldr_alloc(L, sizeof(double) * (size_t)out * (cw ? cw : 1));
            double *wca = ldr_alloc(L, sizeof(double) * (size_t)out * (cw ? cw : 1));
            if (!wx || !wxa || !wc || !wca)
                return ENG_ERR_NOMEM;
            for (int o = 0; o < out; o++)
                for (int jj = 0; jj < in_all; jj++) {
                    double v = M[(size_t)o * in_all + jj];
                    if (jj < d)
                        wx[(size_t)o * d + jj] = v, wxa[(size_t)o * d + jj] = fabs(v);
                    else
                        wc[(size_t)o * cw + (jj - d)] = v, wca[(size_t)o * cw + (jj - d)] = fabs(v);
                }
            l->in = d;
            l->w = wx, l->wabs = wxa;
            p->w1c = wc, p->w1c_abs = wca;
        } else {
            double *wa = ldr_alloc(L, sizeof(double) * (size_t)in_all * out);
            if (!wa)
                return ENG_ERR_NOMEM;
            for (size_t t = 0; t < (size_t)in_all * out; t++)
                wa[t] = fabs(M[t]);
            l->in = in_all;
            l->w = M, l->wabs = wa;
        }
        k++;
    }
    p->tape_w = tape;
    p->h1 = p->l[0].out;
    return ENG_OK;
}

static enum eng_status iresnet_load(struct blk *b, struct ldr *L, const cJSON *j)
{
    const int d = b->d;
    struct iresnet *p = ldr_alloc(L, sizeof(*p));
    if (!p)
        return ENG_ERR_NOMEM;
    /* on (C, H, W) / (C, L) rows g maps images to images (cpl_subnet: a condition image is
     * concatenated along channels) */
    enum eng_status st = cpl_subnet(L, b, j, "subnet", d, d, &p->net);
    if (st != ENG_OK)
        return st;
    p->max_w = d;
    p->act_lip = 1.0;
    st = p->net->general ? load_general(b, L, p) : load_mlp(b, L, p);
    if (st != ENG_OK)
        return st;

    /* Certified norms (upper bounds) and the power-iteration bracket (lower bounds). */
    p->norms = ldr_alloc(L, sizeof(double) * (size_t)p->n_lin);
    size_t wk = 0;
    for (int i = 0; i < p->nl; i++)
        if (p->l[i].lin && !(p->l[i].norm_up > 0)) {
            size_t w = la_norm2_upper_work(p->l[i].out, p->l[i].in);
            size_t w2 = (size_t)p->l[i].out + (size_t)p->l[i].in;
            wk = w > wk ? w : wk;
            wk = w2 > wk ? w2 : wk;
        }
    double *work = ldr_alloc(L, sizeof(double) * (wk ? wk : 1));
    if (!p->norms || !work)
        return ENG_ERR_NOMEM;
    p->L = p->act_lip;
    p->L_lower = p->act_lip;
    for (int i = 0, k = 0; i < p->nl; i++) {
        const struct dlayer *l = &p->l[i];
        if (!l->lin)
            continue;
        double up = l->norm_up > 0 ? l->norm_up : la_norm2_upper(l->out, l->in, l->w, work);
        double lo = l->norm_up > 0 ? l->norm_lo : la_spectral_norm(l->out, l->in, l->w, work);
        /* The upper bound must dominate the lower one; if rounding ever says otherwise,
         * keep the larger (the certificate stays conservative). */
        p->norms[k++] = fmax(up, lo);
        p->L *= fmax(up, lo);
        p->L_lower *= lo;
    }
    /* the product of upper bounds, rounded: inflate by one ulp per factor */
    p->L *= 1.0 + 2.0 * (double)(p->nl + 1) * LA_U;
    if (!isfinite(p->L))
        p->L = INFINITY;

    static const char *const modes[] = {"exact", "series"};
    int mode;
    long terms;
    if ((st = ldr_enum(L, j, "logdet", false, 0, modes, 2, &mode)) != ENG_OK)
        return st;
    if ((st = ldr_int(L, j, "series_terms", false, 10, 1, 1000, &terms)) != ENG_OK)
        return st;
    p->series = mode == 1;
    p->series_terms = (int)terms;
    if (p->series) {
        if (!(p->L < 1.0))
            return ldr_fail(L, ENG_ERR_MANIFEST, "field 'logdet': \"series\" needs a "
                            "contraction, but the certified Lipschitz bound of g is L = %.6g >= 1 "
                            "(use \"exact\")", p->L);
        p->series_bound = (double)d * pow(p->L, (double)terms + 1.0) /
                          (((double)terms + 1.0) * (1.0 - p->L));
    }
    b->numeric = true;
    b->priv = p;
    /* chunk: as many rows as fit the budget, at most a tile */
    size_t one = chunk_doubles(b, p, 1), two = chunk_doubles(b, p, 2);
    size_t per = two - one, fixed = one - per;
    size_t R = per ? (IRES_CHUNK_DOUBLES > fixed ? (IRES_CHUNK_DOUBLES - fixed) / per : 1) : 1;
    if (R < 1)
        R = 1;
    if (R > ENG_TILE_ROWS)
        R = ENG_TILE_ROWS;
    p->chunk = (int)R;
    return ENG_OK;
}

/* ---- certificate --------------------------------------------------------------------------- */

static void iresnet_certify(const struct blk *b, struct eng_block_cert *out)
{
    const struct iresnet *p = b->priv;
    const double Lb = p->L;
    char ld[64];
    if (p->series)
        snprintf(ld, sizeof(ld), "%d-term series log-det, error <= %.2e", p->series_terms,
                 p->series_bound);
    else
        snprintf(ld, sizeof(ld), "exact log-det");
    out->lipschitz = Lb;
    if (Lb < 1.0) {
        out->invertible = true;
        out->guarantee = ENG_GUARANTEE_CONTRACTION;
        out->lipschitz_inverse = 1.0 / (1.0 - Lb);
        out->condition = (1.0 + Lb) / (1.0 - Lb);
        /* a-priori fixed-point iterations: L^n / (1 - L) <= 1e-6 */
        out->iterations_for_1e6 = Lb <= 0.0 ? 1 : (int)ceil(log(1e-6 * (1.0 - Lb)) / log(Lb));
        if (out->iterations_for_1e6 < 1)
            out->iterations_for_1e6 = 1;
        if (p->n_conv > 0)
            snprintf(out->reason, sizeof(out->reason),
                     "contraction: Lip(g) <= L = %.6g < 1 (norm bounds of %d layers, convolutions "
                     "by %.48s): x + g(x) is a bijection, Lip(inverse) <= %.4g; %.40s", Lb,
                     p->n_lin, p->conv_method, out->lipschitz_inverse, ld);
        else
            snprintf(out->reason, sizeof(out->reason),
                     "contraction: Lip(g) <= L = %.6g < 1 (exact spectral norms of %d layers "
                     "times activation bounds): x + g(x) is a bijection, Lip(inverse) <= %.4g; "
                     "%.63s", Lb, p->n_lin, out->lipschitz_inverse, ld);
    } else {
        out->invertible = false;
        out->guarantee = ENG_GUARANTEE_NONE;
        out->lipschitz_inverse = NAN;
        out->condition = NAN;
        out->iterations_for_1e6 = -1;
        snprintf(out->reason, sizeof(out->reason),
                 "not certified: the Lipschitz bound of g is L = %.6g >= 1, invertibility is not "
                 "guaranteed; inverses are iterated anyway and carry an infinite error bound; "
                 "%.63s", Lb, ld);
    }
}

const struct blk_ops blk_iresnet_ops = {
    .type = "IResNetBlock",
    .takes_cond = true,
    .load = iresnet_load,
    .scratch = iresnet_scratch,
    .forward = iresnet_forward,
    .inverse = iresnet_inverse,
    .certify = iresnet_certify,
};
