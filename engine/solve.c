/*
 * solve.c — safeguarded fixed-point / Newton / Anderson / Broyden solvers for
 * x + g(x) = y, batched over rows, in double.  The contract, the stopping rule and the
 * counting are in solve.h; the maths in docs/inversion.md.
 *
 * Design notes
 *  1. Every row carries a base point (the last accepted one), the best point so far
 *     (smallest ||r||, the one that is returned) and one pending candidate.  Each pass
 *     gathers the candidates of the active rows, evaluates g on them in one call (the
 *     block batches that into GEMMs), then for each row: accept or reject the candidate,
 *     update the secant memory, test the stopping rule, and propose the next candidate.
 *  2. Rows that stop leave the active list, so later passes evaluate g on fewer rows.
 *  3. A fixed-point candidate (or the starting point) is always accepted: with L < 1 it
 *     cannot raise ||r||, and with L >= 1 refusing it could stall the row forever.
 *  4. The scratch is carved in slv_solve; nothing is allocated.
 *  5. Broyden keeps non-monotone steps (within SLV_BROYDEN_SLACK of the best residual):
 *     with the strict rule its early steps were rejected so often that at L = 0.99 it
 *     needed more evaluations than plain fixed point (2135 vs 1463 per row, d = 8,
 *     rotation spectrum); with the slack, 15-17.
 *  6. Newton backtracks (halves a rejected step) before falling back to a fixed-point
 *     step; see propose().
 */
#include <float.h>
#include <math.h>
#include <string.h>

#include "engine.h"
#include "la.h"
#include "solve.h"

/* The method names, in enum eng_solve_method order: the only copy (proto/ uses these two
 * functions). */
static const char *const SOLVE_NAMES[] = {"auto", "newton", "anderson", "broyden",
                                          "fixed_point"};
_Static_assert(sizeof SOLVE_NAMES / sizeof SOLVE_NAMES[0] == ENG_SOLVE_COUNT,
               "solver names out of step with enum eng_solve_method");

const char *eng_solve_method_str(int method)
{
    return method >= 0 && method < ENG_SOLVE_COUNT ? SOLVE_NAMES[method] : NULL;
}

bool eng_solve_method_parse(const char *name, enum eng_solve_method *out)
{
    if (!name)
        return false;
    for (int i = 0; i < ENG_SOLVE_COUNT; i++)
        if (strcmp(name, SOLVE_NAMES[i]) == 0) {
            *out = (enum eng_solve_method)i;
            return true;
        }
    return false;
}

int slv_resolve(int method, int d, bool has_jac)
{
    switch (method) {
    case ENG_SOLVE_NEWTON:
        return has_jac ? ENG_SOLVE_NEWTON : ENG_SOLVE_BROYDEN;
    case ENG_SOLVE_ANDERSON:
    case ENG_SOLVE_BROYDEN:
    case ENG_SOLVE_FIXED_POINT:
        return method;
    default:
        if (has_jac && d <= SLV_NEWTON_MAX_D)
            return ENG_SOLVE_NEWTON;
        return d <= SLV_BROYDEN_DENSE_MAX ? ENG_SOLVE_BROYDEN : ENG_SOLVE_ANDERSON;
    }
}

enum cand { CAND_START, CAND_FP, CAND_STEP };

struct rowst {
    int id;       /* caller's row index */
    int evals, jacs;
    int cand;     /* enum cand of the pending candidate */
    int hn, hpos; /* secant memory: pairs stored, next slot (ring) */
    int newton_on; /* auto: newton steps enabled (after a slow fixed-point step) */
    double alpha;  /* newton: length of the pending step as a fraction of the full step */
    double nb;    /* ||r~(base)|| (computed residual, norm rounded up) */
    double nbest; /* ||r~(best)|| */
    double rho;   /* best: bound on ||r(best) - r~(best)|| (rounding of g and of r) */
    double eG;    /* best: bound on ||fl(y - g~(best)) - (y - g(best))|| */
};

#define ROWST_DOUBLES ((sizeof(struct rowst) + sizeof(double) - 1) / sizeof(double))

static int mem_of(int method, int memory)
{
    if (method == ENG_SOLVE_ANDERSON) {
        int m = memory > 0 ? memory : SLV_ANDERSON_M;
        return m > SLV_ANDERSON_MAX_M ? SLV_ANDERSON_MAX_M : m;
    }
    if (method == ENG_SOLVE_BROYDEN)
        return memory > 0 ? memory : SLV_BROYDEN_MEM;
    return 0;
}

static bool broyden_dense(int method, int d)
{
    return method == ENG_SOLVE_BROYDEN && d <= SLV_BROYDEN_DENSE_MAX;
}

/* Doubles per row: state + 6 vectors + secant memory (a dense d x d inverse Jacobian for
 * broyden at small d, else 2 * mem vectors). */
static size_t per_row(int d, int method, int mem)
{
    size_t sec = broyden_dense(method, d) ? (size_t)d * d : 2 * (size_t)mem * d;
    return ROWST_DOUBLES + 6 * (size_t)d + sec;
}

static size_t shared(int d, int mem)
{
    return (size_t)d * d + 6 * (size_t)d + (size_t)mem * d + (size_t)mem * mem + 4 * (size_t)mem + 8;
}

size_t slv_scratch(int d, int rows, int method, int memory)
{
    size_t best = 0;
    for (int j = 0; j < 2; j++) { /* newton becomes broyden without a Jacobian */
        int meth = slv_resolve(method, d, j == 0);
        int m = mem_of(meth, memory);
        /* rows of state, the batch x / g / g-error buffers, the ids and active lists (as
         * doubles) */
        size_t sz = (size_t)rows * (per_row(d, meth, m) + 3 * (size_t)d + 2) + shared(d, m);
        if (sz > best)
            best = sz;
    }
    return best;
}

static double nrm(int d, const double *v)
{
    double s = 0.0;
    for (int i = 0; i < d; i++)
        s += v[i] * v[i];
    return sqrt(s);
}

static double dot(int d, const double *a, const double *b)
{
    double s = 0.0;
    for (int i = 0; i < d; i++)
        s += a[i] * b[i];
    return s;
}

struct ctx {
    int d, mem, method;
    bool dense;    /* broyden with a dense inverse Jacobian */
    bool adaptive; /* auto at small d: fixed point until it contracts slowly, then newton */
    double L, tol;
    int max_iter;
    const double *y;
    double *rows_base; /* per-row blocks */
    size_t stride;
    /* shared */
    double *J, *tmp, *tmp2, *rc, *dx, *dr, *Q, *R, *gam;
    int *piv, *keep;
};

struct rowv {
    struct rowst *s;
    double *xb, *gb, *rb, *xbest, *gbest, *xc, *DX, *DF;
};

static struct rowv rowv(const struct ctx *c, int slot)
{
    struct rowv v;
    double *p = c->rows_base + (size_t)slot * c->stride;
    v.s = (struct rowst *)(void *)p;
    p += ROWST_DOUBLES;
    const int d = c->d;
    v.xb = p, v.gb = p + d, v.rb = p + 2 * d, v.xbest = p + 3 * d, v.gbest = p + 4 * d;
    v.xc = p + 5 * d;
    v.DX = p + 6 * d;
    v.DF = v.DX + (size_t)c->mem * d;
    return v;
}

/* ---- secant memory ----------------------------------------------------------------------- */

/* Anderson: store the pair (dx, df) with f = -r, in a ring of c->mem slots. */
static void anderson_push(const struct ctx *c, struct rowv *v, const double *dx, const double *dr)
{
    const int d = c->d;
    double *X = v->DX + (size_t)v->s->hpos * d, *F = v->DF + (size_t)v->s->hpos * d;
    for (int i = 0; i < d; i++) {
        X[i] = dx[i];
        F[i] = -dr[i];
    }
    v->s->hpos = (v->s->hpos + 1) % c->mem;
    if (v->s->hn < c->mem)
        v->s->hn++;
}

/* Anderson step from the base: minimise ||f - DF gamma|| (f = -r_b) by modified
 * Gram-Schmidt on the columns of DF, dropping columns that are (nearly) dependent, then
 * x = x_b + f - (DX + DF) gamma.  Returns 0, or -1 when no usable column exists. */
static int anderson_step(const struct ctx *c, struct rowv *v)
{
    const int d = c->d, n = v->s->hn;
    if (n == 0)
        return -1;
    double *Q = c->Q, *R = c->R, *g = c->gam;
    int *keep = c->keep, k = 0;
    for (int j = 0; j < n; j++) {
        const double *f = v->DF + (size_t)j * d;
        double *q = Q + (size_t)k * d;
        memcpy(q, f, sizeof(double) * (size_t)d);
        double n0 = nrm(d, q);
        if (!(n0 > 0.0) || !isfinite(n0))
            continue;
        for (int i = 0; i < k; i++) {
            double rij = dot(d, Q + (size_t)i * d, q);
            R[i * n + k] = rij;
            for (int t = 0; t < d; t++)
                q[t] -= rij * Q[(size_t)i * d + t];
        }
        double n1 = nrm(d, q);
        if (n1 <= 1e-10 * n0) /* ill-conditioned: this secant adds no new direction */
            continue;
        R[k * n + k] = n1;
        for (int t = 0; t < d; t++)
            q[t] /= n1;
        keep[k++] = j;
    }
    if (k == 0)
        return -1;
    /* gamma = R^-1 Q^T f, f = -r_b */
    for (int i = 0; i < k; i++)
        g[i] = -dot(d, Q + (size_t)i * d, v->rb);
    for (int i = k - 1; i >= 0; i--) {
        double s = g[i];
        for (int j = i + 1; j < k; j++)
            s -= R[i * n + j] * g[j];
        g[i] = s / R[i * n + i];
    }
    for (int t = 0; t < d; t++)
        v->xc[t] = v->xb[t] - v->rb[t];
    for (int i = 0; i < k; i++) {
        const double *X = v->DX + (size_t)keep[i] * d, *F = v->DF + (size_t)keep[i] * d;
        for (int t = 0; t < d; t++)
            v->xc[t] -= g[i] * (X[t] + F[t]);
    }
    return 0;
}

/* Broyden: H dense (DX holds d x d) or H = I + sum_j u_j v_j^T (DX holds u, DF holds v).
 * h = H a. */
static void broyden_apply(const struct ctx *c, const struct rowv *v, const double *a, double *h)
{
    const int d = c->d;
    if (c->dense) {
        la_gemv_f64(false, d, d, v->DX, d, a, h);
        return;
    }
    memcpy(h, a, sizeof(double) * (size_t)d);
    for (int j = 0; j < v->s->hn; j++) {
        const double *u = v->DX + (size_t)j * d, *w = v->DF + (size_t)j * d;
        double s = dot(d, w, a);
        for (int t = 0; t < d; t++)
            h[t] += s * u[t];
    }
}

/* "Good" Broyden update of the inverse: H += (dx - H dr)(dx^T H) / (dx^T H dr). */
static void broyden_push(const struct ctx *c, struct rowv *v, const double *dx, const double *dr)
{
    const int d = c->d;
    double *h = c->tmp, *w = c->tmp2;
    broyden_apply(c, v, dr, h); /* h = H dr */
    /* w = H^T dx */
    if (c->dense) {
        la_gemv_f64(true, d, d, v->DX, d, dx, w);
    } else {
        memcpy(w, dx, sizeof(double) * (size_t)d); /* dx + sum_j v_j (u_j . dx) */
        for (int j = 0; j < v->s->hn; j++) {
            const double *u = v->DX + (size_t)j * d, *vv = v->DF + (size_t)j * d;
            double s = dot(d, u, dx);
            for (int t = 0; t < d; t++)
                w[t] += s * vv[t];
        }
    }
    double den = dot(d, dx, h);
    if (!(fabs(den) > 1e-300) || fabs(den) <= 1e-12 * nrm(d, dx) * nrm(d, h) || !isfinite(den))
        return;
    if (c->dense) { /* H += (dx - h) w^T / den */
        for (int i = 0; i < d; i++)
            h[i] = dx[i] - h[i];
        la_ger_f64(d, d, 1.0 / den, h, w, v->DX, d);
        return;
    }
    if (v->s->hn == c->mem) /* memory full: restart from H = I */
        v->s->hn = 0;
    double *u = v->DX + (size_t)v->s->hn * d, *vv = v->DF + (size_t)v->s->hn * d;
    for (int t = 0; t < d; t++) {
        u[t] = (dx[t] - h[t]) / den;
        vv[t] = w[t];
    }
    v->s->hn++;
}

/* ---- the solver ---------------------------------------------------------------------------- */

/* Stopping test on the best point; fills out and returns true when the row stops. */
static bool stop_test(const struct ctx *c, struct rowv v, struct slv_row *o, double *xout,
                      bool at_cap)
{
    const int d = c->d;
    const double *y = c->y + (size_t)v.s->id * d;
    const bool cert = c->L < 1.0;
    double nx = nrm(d, v.xbest);
    double rho = v.s->rho;
    double res = v.s->nbest;
    bool conv, stop;
    double bound = INFINITY;
    double nG = 0.0;
    if (cert) {
        for (int t = 0; t < d; t++) {
            double gt = y[t] - v.gbest[t];
            nG += gt * gt;
        }
        nG = sqrt(nG);
        /* (1 + 16 u) covers the rounding of L / (1 - L) and of this expression */
        bound = (c->L / (1.0 - c->L) * (res + rho) + v.s->eG) * (1.0 + 16.0 * LA_U);
        conv = bound <= c->tol * fmax(nG, 1.0) / (1.0 + c->tol);
    } else {
        conv = res + rho <= c->tol * fmax(nx, 1.0);
    }
    bool at_floor = res <= 2.0 * rho;
    stop = conv || at_floor || at_cap || !isfinite(res);
    if (!stop)
        return false;
    o->iterations = v.s->evals;
    o->jacobians = v.s->jacs;
    o->residual = res;
    o->error_bound = cert && isfinite(bound) ? bound : INFINITY;
    o->converged = conv && isfinite(res);
    if (cert)
        for (int t = 0; t < d; t++)
            xout[t] = y[t] - v.gbest[t];
    else
        memcpy(xout, v.xbest, sizeof(double) * (size_t)d);
    return true;
}

/* Next candidate from the base by the method (accepted == the last candidate became the
 * base; pos = its row in the last g call, for the Jacobian). */
static void propose(const struct ctx *c, const struct slv_fn *fn, struct rowv *v, bool accepted,
                    int pos)
{
    const int d = c->d;
    const double *y = c->y + (size_t)v->s->id * d;
    int m = c->method;
    /* A rejected newton step is halved (backtracking along the same direction, x_c moves
     * halfway back to x_b) down to 1/16 of the full step, then the row falls back to a
     * fixed-point step: far from x* the full step can overshoot into a region where the
     * linearization is wrong (measured: ELU blocks at L = 0.99, design note 6). */
    if (!accepted && m == ENG_SOLVE_NEWTON && v->s->cand == CAND_STEP &&
        v->s->alpha > SLV_NEWTON_MIN_STEP) {
        v->s->alpha *= 0.5;
        for (int t = 0; t < d; t++)
            v->xc[t] = 0.5 * (v->xc[t] + v->xb[t]);
        return; /* still CAND_STEP */
    }
    if (!accepted || m == ENG_SOLVE_FIXED_POINT)
        goto fp;
    if (m == ENG_SOLVE_NEWTON && c->adaptive && !v->s->newton_on)
        goto fp;
    if (m == ENG_SOLVE_NEWTON) {
        fn->jac(fn->ctx, pos, c->J);
        v->s->jacs++;
        for (int i = 0; i < d; i++)
            c->J[(size_t)i * d + i] += 1.0;
        if (la_lu(d, c->J, c->piv) != 0)
            goto fp;
        for (int t = 0; t < d; t++)
            c->tmp[t] = v->rb[t];
        la_lu_solve(d, c->J, c->piv, c->tmp);
        for (int t = 0; t < d; t++)
            v->xc[t] = v->xb[t] - c->tmp[t];
        v->s->alpha = 1.0;
    } else if (m == ENG_SOLVE_ANDERSON) {
        if (anderson_step(c, v) != 0)
            goto fp;
    } else { /* broyden */
        broyden_apply(c, v, v->rb, c->tmp);
        for (int t = 0; t < d; t++)
            v->xc[t] = v->xb[t] - c->tmp[t];
    }
    for (int t = 0; t < d; t++)
        if (!isfinite(v->xc[t]))
            goto fp;
    v->s->cand = CAND_STEP;
    return;
fp:
    for (int t = 0; t < d; t++)
        v->xc[t] = y[t] - v->gb[t];
    v->s->cand = CAND_FP;
}

void slv_solve(const struct slv_fn *fn, const struct slv_opts *opts, int n, const double *y,
               double *x, struct slv_row *out, double *scratch)
{
    const int d = fn->d;
    struct ctx c;
    c.d = d;
    c.method = slv_resolve(opts->method, d, fn->jac != NULL);
    c.mem = mem_of(c.method, opts->memory);
    c.dense = broyden_dense(c.method, d);
    c.adaptive = opts->method == ENG_SOLVE_AUTO && c.method == ENG_SOLVE_NEWTON;
    c.L = isfinite(fn->lipschitz) ? fn->lipschitz : INFINITY;
    c.tol = opts->tol;
    c.max_iter = opts->max_iter > 0 ? opts->max_iter : 1;
    c.y = y;
    c.stride = per_row(d, c.method, c.mem);
    c.rows_base = scratch;
    double *p = scratch + (size_t)n * c.stride;
    double *xbatch = p;
    double *gbatch = xbatch + (size_t)n * d;
    double *ebatch = gbatch + (size_t)n * d;
    int *ids = (int *)(void *)(ebatch + (size_t)n * d); /* n ints in n doubles */
    int *act = ids + n;                                  /* n ints (the other half) */
    p = ebatch + (size_t)n * d + 2 * (size_t)n;
    c.J = p;
    p += (size_t)d * d;
    c.tmp = p, c.tmp2 = p + d, c.rc = p + 2 * d, c.dx = p + 3 * d, c.dr = p + 4 * d;
    c.piv = (int *)(void *)(p + 5 * d); /* d ints in d doubles */
    p += 6 * (size_t)d;
    c.Q = p;
    p += (size_t)c.mem * d;
    c.R = p;
    p += (size_t)c.mem * c.mem;
    c.gam = p;
    c.keep = (int *)(void *)(p + c.mem);

    int na = 0;
    for (int i = 0; i < n; i++) {
        struct rowv v = rowv(&c, i);
        memset(v.s, 0, sizeof(*v.s));
        v.s->id = i;
        v.s->cand = CAND_START;
        v.s->nb = v.s->nbest = INFINITY;
        memcpy(v.xc, x + (size_t)i * d, sizeof(double) * (size_t)d);
        if (c.dense) { /* H = I */
            memset(v.DX, 0, sizeof(double) * (size_t)d * d);
            for (int t = 0; t < d; t++)
                v.DX[(size_t)t * d + t] = 1.0;
        }
        act[na++] = i;
    }
    while (na > 0) {
        for (int k = 0; k < na; k++) {
            struct rowv v = rowv(&c, act[k]);
            memcpy(xbatch + (size_t)k * d, v.xc, sizeof(double) * (size_t)d);
            ids[k] = act[k];
        }
        fn->g(fn->ctx, na, ids, xbatch, gbatch, ebatch);
        int keep = 0;
        for (int k = 0; k < na; k++) {
            struct rowv v = rowv(&c, act[k]);
            struct rowst *s = v.s;
            const double *yr = y + (size_t)s->id * d;
            const double *gc = gbatch + (size_t)k * d, *ec = ebatch + (size_t)k * d;
            s->evals++;
            /* computed residual of the candidate (rc) and the bound on its rounding (tmp2):
             * |r - rc| <= e + u |fl(x + g~)| + u |rc| per element, u (1 + 2u) taken for u
             * to cover |exact| <= |computed| / (1 - u) */
            double *rc = c.rc, *er = c.tmp2;
            for (int t = 0; t < d; t++) {
                double xg = v.xc[t] + gc[t];
                rc[t] = xg - yr[t];
                er[t] = ec[t] + LA_U * (1.0 + 2.0 * LA_U) * (fabs(xg) + fabs(rc[t]));
            }
            double nc = la_norm_up(d, rc), rho_c = la_norm_up(d, er); /* tmp2 is reused below */
            bool finite = isfinite(nc);
            /* auto: a fixed-point step that shrank ||r|| by less than 1/SLV_AUTO_SWITCH
             * turns newton on for this row */
            if (c.adaptive && s->cand == CAND_FP && !(nc <= SLV_AUTO_SWITCH * s->nb))
                s->newton_on = 1;
            /* secant pair relative to the base (accepted or not) */
            if (finite && s->cand != CAND_START && (c.method == ENG_SOLVE_ANDERSON ||
                                                    c.method == ENG_SOLVE_BROYDEN)) {
                double *dx = c.dx, *dr = c.dr;
                for (int t = 0; t < d; t++) {
                    dx[t] = v.xc[t] - v.xb[t];
                    dr[t] = rc[t] - v.rb[t];
                }
                if (c.method == ENG_SOLVE_ANDERSON)
                    anderson_push(&c, &v, dx, dr);
                else
                    broyden_push(&c, &v, dx, dr);
            }
            if (finite && nc < s->nbest) {
                memcpy(v.xbest, v.xc, sizeof(double) * (size_t)d);
                memcpy(v.gbest, gc, sizeof(double) * (size_t)d);
                s->nbest = nc;
                s->rho = rho_c;
                /* x_ret = fl(y - g~): |x_ret - (y - g)| <= e + u |x_ret| */
                for (int t = 0; t < d; t++)
                    er[t] = ec[t] + LA_U * (1.0 + 2.0 * LA_U) * fabs(yr[t] - gc[t]);
                s->eG = la_norm_up(d, er);
            }
            /* monotone for newton and anderson; broyden's residuals are not monotone on
             * the way to its superlinear phase, so it keeps any step within a factor
             * SLV_BROYDEN_SLACK of the best residual (design note 5) */
            bool accepted = finite && (s->cand != CAND_STEP || nc < s->nb ||
                                       (c.method == ENG_SOLVE_BROYDEN &&
                                        nc < SLV_BROYDEN_SLACK * s->nbest));
            if (accepted) {
                memcpy(v.xb, v.xc, sizeof(double) * (size_t)d);
                memcpy(v.gb, gc, sizeof(double) * (size_t)d);
                memcpy(v.rb, rc, sizeof(double) * (size_t)d);
                s->nb = nc;
            }
            bool dead = !finite && s->cand != CAND_STEP; /* g blew up at a safe point */
            if (dead && !isfinite(s->nbest)) {
                /* nothing finite was ever seen: report the start, not converged */
                struct slv_row *o = &out[s->id];
                o->iterations = s->evals, o->jacobians = s->jacs;
                o->residual = INFINITY, o->error_bound = INFINITY, o->converged = false;
                continue;
            }
            if (stop_test(&c, v, &out[s->id], x + (size_t)s->id * d,
                          dead || s->evals >= c.max_iter))
                continue;
            propose(&c, fn, &v, accepted, k);
            act[keep++] = act[k];
        }
        na = keep;
    }
}
