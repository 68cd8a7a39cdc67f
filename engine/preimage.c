/*
 * preimage.c — preimage search: given a target t, find distinct x with f(x) ~= t, where
 * f is the model's forward map (engine.h, eng_preimage).  Meant for `mlp` surrogates,
 * which are not invertible; defined for every kind.  Maths and parameters:
 * docs/inversion.md; the literature: network-inversion.md.
 *
 * Coordinates.  The search runs in standardized input units u, x = mean_x + std_x * u
 * (u = x when the model stores no standardization), and on the scaled residual
 * R(u) = (f(x) - t) / std_y (std_y = 1 without standardization, and for z outputs).  The
 * search box is [low, high] mapped to u; the default box is u in [-3, 3]^n, i.e. mean +-
 * 3 std.  The residual reported per solution is ||f(x) - t||_2 in physical units,
 * recomputed with eng_forward on the float solution.
 *
 * Methods per kind
 *  mlp, gradient (Linden-Kindermann / WLK inversion): P = clamp(4 S, 32, 512) starts (S
 *    = num_solutions): uniform in the box when the user gives one, else half uniform in
 *    the default box and half Gaussian N(0, I) in u, clipped.  Adam (lr 0.02 * mean box
 *    width, cosine decay, beta 0.9 / 0.999) on 0.5 |R|^2 + 0.5 w |u|^2 (w = prior_weight)
 *    for max_steps steps with the exact gradient J^T R + w u from one back-propagation
 *    (subnet_backward_input), every iterate projected onto the box.
 *  mlp, evolutionary (Jensen et al. 1999, boundary marking): N = clamp(8 S, 64, 512)
 *    points uniform in the box; each of max_steps generations sorts by fitness |R|^2 +
 *    w |u|^2, deletes the worst N/4 and replaces each by a Gaussian perturbation of a
 *    survivor drawn from the N/5 least crowded (largest mean distance to their 4 nearest
 *    survivors); the mutation scale decays geometrically from 0.1 to 0.005 of the box
 *    width.  The population spreads along the preimage set instead of collapsing.
 *  Both then polish every point with up to PRE_POLISH_STEPS Levenberg-Marquardt steps
 *    s = -J^T (J J^T + lambda I)^-1 R (the minimum-norm step when outputs <= inputs, so a
 *    point moves onto the preimage set without sliding along it; otherwise
 *    -(J^T J + lambda I)^-1 J^T R), the Jacobian exact by back-propagation (one pass per
 *    output).  A step is kept only if it lowers |R|.
 *  flow, cinn: f is a bijection x -> z, so the preimage of z is unique: it is the model's
 *    inverse (numeric or analytic), returned as the single solution.
 *  inn: f(x) = the y part of F([x, 0]); preimages are approximately {inverse([z, 0, t])}
 *    over z.  P latent draws z ~ N(0, I) from the seed give the starts (gradient) or the
 *    initial population (evolutionary), which are then polished as above with a
 *    central finite-difference Jacobian in u (step 1e-3), since blocks have no backward.
 * Then: sort by residual, keep a candidate only if its distance in u to every kept one is
 * above 1e-2 times the box diagonal, return the first S, best first.
 *
 * Determinism: every draw is eng_rng_normal(seed, PRE_STREAM + purpose, index, dim); no
 * global state, no threads of its own.  Bounded time: max_steps, PRE_POLISH_STEPS and
 * time_limit_s and the workspace's cancel flag (checked every step; when the time passes or
 * the flag is set, the search stops and returns what it has).  Memory: one allocation per call, freed before returning.
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "la.h"
#include "emath.h"
#include "model_impl.h"
#include "subnet.h"

#define PRE_MAX_SOLUTIONS 1024
#define PRE_MAX_POP 512
#define PRE_POLISH_STEPS 30
#define PRE_MAX_STEPS 1000000
#define PRE_STREAM 0x50524530u /* "PRE0": Philox observation index of the first stream */
#define PRE_JAC_DOUBLES (1u << 22)

enum stream { S_UNIFORM = 0, S_GAUSS, S_MUTATE, S_PARENT, S_LATENT };

struct pre {
    const struct eng_model *m;
    struct eng_ws *ws;
    const struct eng_info *info;
    struct model_view mv;
    const struct eng_preimage_opts *o;
    int n, k, P;
    const float *t;     /* target (k) */
    double *ts;         /* mlp: target in standardized y units */
    double *xm, *xs;    /* n */
    double *ys;         /* k: residual scale */
    double *lo, *hi;    /* box in u */
    bool clamp;
    int chunk;          /* rows per Jacobian chunk */
    /* rows x n / rows x k doubles */
    double *U, *R, *Un, *Rn, *Up, *Rp, *G, *Ma, *Va;
    double *J;          /* chunk x k x n */
    double *A;          /* max(k, n)^2 */
    double *rhs, *lam;
    int *piv;
    /* floats */
    float *fx, *fo, *fz, *tape, *scr, *fg, *fgx;
    double t0;
    char *err;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static bool out_of_time(const struct pre *p)
{
    return (p->o->time_limit_s > 0 && now_s() - p->t0 > p->o->time_limit_s) ||
           ws_cancelled(p->ws);
}

static double gauss(const struct pre *p, enum stream s, uint64_t i, uint32_t j)
{
    return eng_rng_normal(p->o->seed, PRE_STREAM + (uint32_t)s, i, j);
}

/* Uniform in (0, 1) from a normal draw through its CDF. */
static double unif(const struct pre *p, enum stream s, uint64_t i, uint32_t j)
{
    double u = 0.5 * erfc(-gauss(p, s, i, j) / sqrt(2.0));
    return fmin(fmax(u, 1e-12), 1.0 - 1e-12);
}

static void clamp_row(const struct pre *p, double *u)
{
    if (!p->clamp)
        return;
    for (int j = 0; j < p->n; j++)
        u[j] = fmin(fmax(u[j], p->lo[j]), p->hi[j]);
}

static double sq(int n, const double *v)
{
    double s = 0.0;
    for (int i = 0; i < n; i++)
        s += v[i] * v[i];
    return s;
}

/* ---- the objective ---------------------------------------------------------------------- */

/* R (rows x k) = scaled residual at U (rows x n).  For an mlp the activations are kept
 * on the tape for a following back-propagation.  Non-finite rows get a huge residual. */
static enum eng_status eval(struct pre *p, int rows, const double *U, double *R)
{
    const int n = p->n, k = p->k;
    if (rows <= 0)
        return ENG_OK;
    if (p->mv.mlp) {
        for (size_t i = 0; i < (size_t)rows * n; i++)
            p->fx[i] = (float)U[i];
        subnet_forward_tape(p->mv.mlp, rows, p->fx, n, p->fo, k, p->tape, p->scr);
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < k; j++)
                R[(size_t)r * k + j] = (double)p->fo[(size_t)r * k + j] - p->ts[j];
    } else { /* inn: y part of the forward map */
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < n; j++)
                p->fx[(size_t)r * n + j] = (float)(p->xm[j] + p->xs[j] * U[(size_t)r * n + j]);
        enum eng_status st = eng_forward(p->m, p->ws, rows, p->fx, NULL, 0, p->fz, p->fo, NULL,
                                         p->err);
        if (st != ENG_OK && st != ENG_ERR_NUMERIC)
            return st;
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < k; j++)
                R[(size_t)r * k + j] = st == ENG_OK ? ((double)p->fo[(size_t)r * k + j] - p->t[j]) / p->ys[j]
                                                    : NAN;
        if (st == ENG_ERR_NUMERIC) /* some row left the model's range: find which */
            for (int r = 0; r < rows; r++) {
                st = eng_forward(p->m, p->ws, 1, p->fx + (size_t)r * n, NULL, 0, p->fz, p->fo,
                                 NULL, p->err);
                for (int j = 0; j < k; j++)
                    R[(size_t)r * k + j] = st == ENG_OK ? ((double)p->fo[j] - p->t[j]) / p->ys[j] : NAN;
            }
    }
    for (int r = 0; r < rows; r++) {
        double *rr = R + (size_t)r * k;
        if (!isfinite(sq(k, rr)))
            for (int j = 0; j < k; j++)
                rr[j] = 1e150;
    }
    return ENG_OK;
}

/* mlp: G (rows x n) = J^T R for the rows of the last eval. */
static void grad_mlp(struct pre *p, int rows, const double *R, double *G)
{
    for (size_t i = 0; i < (size_t)rows * p->k; i++)
        p->fg[i] = (float)R[i];
    subnet_backward_input(p->mv.mlp, rows, p->tape, p->fg, p->k, p->fgx, p->n, p->scr);
    for (size_t i = 0; i < (size_t)rows * p->n; i++)
        G[i] = p->fgx[i];
}

/* J (rows x k x n) = dR/du at U: back-propagation of each unit output (mlp) or central
 * differences (inn).  Uses Up / Rp / Rn as scratch. */
static enum eng_status jacobian(struct pre *p, int rows, const double *U, double *J)
{
    const int n = p->n, k = p->k;
    enum eng_status st;
    if (p->mv.mlp) {
        if ((st = eval(p, rows, U, p->Rp)) != ENG_OK)
            return st;
        for (int i = 0; i < k; i++) {
            memset(p->fg, 0, sizeof(float) * (size_t)rows * k);
            for (int r = 0; r < rows; r++)
                p->fg[(size_t)r * k + i] = 1.0f;
            subnet_backward_input(p->mv.mlp, rows, p->tape, p->fg, k, p->fgx, n, p->scr);
            for (int r = 0; r < rows; r++)
                for (int j = 0; j < n; j++)
                    J[((size_t)r * k + i) * n + j] = p->fgx[(size_t)r * n + j];
        }
        return ENG_OK;
    }
    const double h = 1e-3;
    for (int j = 0; j < n; j++) {
        memcpy(p->Up, U, sizeof(double) * (size_t)rows * n);
        for (int r = 0; r < rows; r++)
            p->Up[(size_t)r * n + j] += h;
        if ((st = eval(p, rows, p->Up, p->Rp)) != ENG_OK)
            return st;
        for (int r = 0; r < rows; r++)
            p->Up[(size_t)r * n + j] -= 2 * h;
        if ((st = eval(p, rows, p->Up, p->Rn)) != ENG_OK)
            return st;
        for (int r = 0; r < rows; r++)
            for (int i = 0; i < k; i++)
                J[((size_t)r * k + i) * n + j] =
                    (p->Rp[(size_t)r * k + i] - p->Rn[(size_t)r * k + i]) / (2 * h);
    }
    return ENG_OK;
}

/* One Levenberg-Marquardt step for row r: s = -J^T (J J^T + lam I)^-1 R (k <= n) or
 * -(J^T J + lam I)^-1 J^T R, lam relative to the mean diagonal.  Writes U + s to un. */
static void lm_step(struct pre *p, const double *J, const double *R, const double *U, double lam,
                    double *un)
{
    const int n = p->n, k = p->k;
    const bool wide = k <= n;
    const int q = wide ? k : n;
    double *A = p->A, *b = p->rhs;
    for (int a = 0; a < q; a++)
        for (int c = 0; c < q; c++) {
            double s = 0.0;
            if (wide)
                for (int j = 0; j < n; j++)
                    s += J[(size_t)a * n + j] * J[(size_t)c * n + j];
            else
                for (int i = 0; i < k; i++)
                    s += J[(size_t)i * n + a] * J[(size_t)i * n + c];
            A[a * q + c] = s;
        }
    double tr = 0.0;
    for (int a = 0; a < q; a++)
        tr += A[a * q + a];
    double reg = lam * (tr / q + 1e-300) + 1e-30;
    for (int a = 0; a < q; a++)
        A[a * q + a] += reg;
    if (wide) {
        memcpy(b, R, sizeof(double) * (size_t)k);
    } else {
        for (int a = 0; a < n; a++) {
            double s = 0.0;
            for (int i = 0; i < k; i++)
                s += J[(size_t)i * n + a] * R[i];
            b[a] = s;
        }
    }
    memcpy(un, U, sizeof(double) * (size_t)n);
    if (la_lu(q, A, p->piv) != 0)
        return;
    la_lu_solve(q, A, p->piv, b);
    if (wide) {
        for (int j = 0; j < n; j++) {
            double s = 0.0;
            for (int i = 0; i < k; i++)
                s += J[(size_t)i * n + j] * b[i];
            un[j] -= s;
        }
    } else {
        for (int j = 0; j < n; j++)
            un[j] -= b[j];
    }
    clamp_row(p, un);
}

/* Polish rows [0, P) of U / R in chunks: up to `steps` LM steps each. */
static enum eng_status polish(struct pre *p, int steps)
{
    const int n = p->n, k = p->k;
    enum eng_status st;
    for (int r0 = 0; r0 < p->P; r0 += p->chunk) {
        int rows = p->P - r0 < p->chunk ? p->P - r0 : p->chunk;
        double *U = p->U + (size_t)r0 * n, *R = p->R + (size_t)r0 * k;
        if ((st = eval(p, rows, U, R)) != ENG_OK)
            return st;
        for (int r = 0; r < rows; r++)
            p->lam[r] = 1e-6;
        for (int it = 0; it < steps && !out_of_time(p); it++) {
            if ((st = jacobian(p, rows, U, p->J)) != ENG_OK)
                return st;
            for (int r = 0; r < rows; r++)
                lm_step(p, p->J + (size_t)r * k * n, R + (size_t)r * k, U + (size_t)r * n,
                        p->lam[r], p->Un + (size_t)r * n);
            if ((st = eval(p, rows, p->Un, p->Rn)) != ENG_OK)
                return st;
            int moved = 0;
            for (int r = 0; r < rows; r++) {
                double before = sq(k, R + (size_t)r * k), after = sq(k, p->Rn + (size_t)r * k);
                if (after < before) {
                    memcpy(U + (size_t)r * n, p->Un + (size_t)r * n, sizeof(double) * (size_t)n);
                    memcpy(R + (size_t)r * k, p->Rn + (size_t)r * k, sizeof(double) * (size_t)k);
                    p->lam[r] = fmax(p->lam[r] * 0.25, 1e-12);
                    moved += after < before * (1 - 1e-6);
                } else {
                    p->lam[r] = fmin(p->lam[r] * 8.0, 1e12);
                    moved += p->lam[r] < 1e12;
                }
            }
            if (!moved)
                break;
        }
    }
    return ENG_OK;
}

/* ---- searches ------------------------------------------------------------------------------ */

static void start_points(struct pre *p, bool given_box)
{
    const int n = p->n;
    for (int r = 0; r < p->P; r++) {
        double *u = p->U + (size_t)r * n;
        bool gauss_start = !given_box && r % 2 == 1;
        for (int j = 0; j < n; j++)
            u[j] = gauss_start ? gauss(p, S_GAUSS, (uint64_t)r, (uint32_t)j)
                               : p->lo[j] + (p->hi[j] - p->lo[j]) * unif(p, S_UNIFORM, (uint64_t)r,
                                                                         (uint32_t)j);
        clamp_row(p, u);
    }
}

/* inn: starts x = inverse([z, 0, t]) for z ~ N(0, I). */
static enum eng_status latent_starts(struct pre *p)
{
    const int n = p->n, dz = p->info->dims.z;
    float *z = p->fz; /* P x dz (sized in alloc) */
    for (int r = 0; r < p->P; r++)
        for (int j = 0; j < dz; j++)
            z[(size_t)r * dz + j] = (float)gauss(p, S_LATENT, (uint64_t)r, (uint32_t)j);
    enum eng_status st = eng_inverse(p->m, p->ws, p->P, z, p->t, 1, p->fx, NULL, NULL, NULL, p->err);
    if (st != ENG_OK)
        return st;
    for (int r = 0; r < p->P; r++) {
        double *u = p->U + (size_t)r * n;
        for (int j = 0; j < n; j++)
            u[j] = ((double)p->fx[(size_t)r * n + j] - p->xm[j]) / p->xs[j];
        clamp_row(p, u);
    }
    return ENG_OK;
}

static enum eng_status run_adam(struct pre *p)
{
    const int n = p->n, k = p->k, T = p->o->max_steps;
    double width = 0.0;
    for (int j = 0; j < n; j++)
        width += (p->hi[j] - p->lo[j]) / n;
    const double lr0 = 0.02 * width, b1 = 0.9, b2 = 0.999, w = p->o->prior_weight;
    memset(p->Ma, 0, sizeof(double) * (size_t)p->P * n);
    memset(p->Va, 0, sizeof(double) * (size_t)p->P * n);
    double b1t = 1.0, b2t = 1.0;
    enum eng_status st;
    for (int t = 0; t < T && !out_of_time(p); t++) {
        if ((st = eval(p, p->P, p->U, p->R)) != ENG_OK)
            return st;
        grad_mlp(p, p->P, p->R, p->G);
        double sn, cs;
        em_sincos_2pi(0.5 * (double)t / (double)T, &sn, &cs); /* cos(pi t / T) */
        double lr = lr0 * 0.5 * (1.0 + cs);
        b1t *= b1, b2t *= b2;
        for (int r = 0; r < p->P; r++) {
            double *u = p->U + (size_t)r * n;
            if (!(sq(k, p->R + (size_t)r * k) < 1e299))
                continue; /* left the model's range: keep it, it ranks last */
            for (int j = 0; j < n; j++) {
                size_t i = (size_t)r * n + j;
                double g = p->G[i] + w * u[j];
                p->Ma[i] = b1 * p->Ma[i] + (1 - b1) * g;
                p->Va[i] = b2 * p->Va[i] + (1 - b2) * g * g;
                u[j] -= lr * (p->Ma[i] / (1 - b1t)) / (sqrt(p->Va[i] / (1 - b2t)) + 1e-12);
            }
            clamp_row(p, u);
        }
    }
    return ENG_OK;
}

struct keyed {
    double key;
    int idx;
};

static int by_key(const void *a, const void *b)
{
    const struct keyed *x = a, *y = b;
    if (x->key < y->key)
        return -1;
    if (x->key > y->key)
        return 1;
    return x->idx - y->idx;
}

static enum eng_status run_evolution(struct pre *p, struct keyed *ord, struct keyed *crowd)
{
    const int n = p->n, k = p->k, N = p->P, G = p->o->max_steps;
    const int M = N / 4, S = N - M, pool = N / 5 > 0 ? N / 5 : 1, nn = S - 1 < 4 ? S - 1 : 4;
    const double w = p->o->prior_weight;
    double *D = p->G; /* per survivor: nn smallest distances (S x 4 <= N x n? sized below) */
    enum eng_status st;
    for (int g = 0; g < G && !out_of_time(p); g++) {
        if ((st = eval(p, N, p->U, p->R)) != ENG_OK)
            return st;
        for (int r = 0; r < N; r++) {
            ord[r].key = sq(k, p->R + (size_t)r * k) + w * sq(n, p->U + (size_t)r * n);
            ord[r].idx = r;
        }
        qsort(ord, (size_t)N, sizeof(*ord), by_key);
        if (g == G - 1)
            break;
        /* crowding of each survivor: mean distance to its nn nearest survivors */
        for (int a = 0; a < S; a++) {
            double *best = D + (size_t)a * 4;
            for (int q = 0; q < 4; q++)
                best[q] = INFINITY;
            const double *ua = p->U + (size_t)ord[a].idx * n;
            for (int b = 0; b < S; b++) {
                if (b == a)
                    continue;
                const double *ub = p->U + (size_t)ord[b].idx * n;
                double d2 = 0.0;
                for (int j = 0; j < n; j++)
                    d2 += (ua[j] - ub[j]) * (ua[j] - ub[j]);
                for (int q = 0; q < nn; q++)
                    if (d2 < best[q]) {
                        for (int z = nn - 1; z > q; z--)
                            best[z] = best[z - 1];
                        best[q] = d2;
                        break;
                    }
            }
            double m = 0.0;
            for (int q = 0; q < nn; q++)
                m += sqrt(best[q]);
            crowd[a].key = -(nn ? m / nn : 0.0); /* least crowded first */
            crowd[a].idx = ord[a].idx;
        }
        qsort(crowd, (size_t)S, sizeof(*crowd), by_key);
        double frac = G > 1 ? (double)g / (G - 1) : 1.0;
        double sig = 0.1 * em_exp(frac * em_log(0.05)); /* 0.1 -> 0.005 of the box width */
        for (int q = 0; q < M; q++) {
            int dead = ord[S + q].idx;
            uint64_t id = (uint64_t)g * (uint64_t)N + (uint64_t)q;
            int par = crowd[(int)(unif(p, S_PARENT, id, 0) * pool) % pool].idx;
            double *ud = p->U + (size_t)dead * n;
            const double *up = p->U + (size_t)par * n;
            for (int j = 0; j < n; j++) {
                double width = p->clamp ? p->hi[j] - p->lo[j] : 6.0;
                ud[j] = up[j] + sig * width * gauss(p, S_MUTATE, id, (uint32_t)j);
            }
            clamp_row(p, ud);
        }
    }
    return ENG_OK;
}

/* Physical residuals of all P rows, sort, dedupe, write the first S. */
static enum eng_status finish(struct pre *p, float *x_out, double *res_out, int *n_found,
                              struct keyed *ord)
{
    const int n = p->n, k = p->k, S = p->o->num_solutions;
    for (int r = 0; r < p->P; r++)
        for (int j = 0; j < n; j++)
            p->fx[(size_t)r * n + j] = (float)(p->xm[j] + p->xs[j] * p->U[(size_t)r * n + j]);
    for (int r = 0; r < p->P; r++) {
        float *fo = p->fo + (size_t)r * k;
        enum eng_status st = eng_forward(p->m, p->ws, 1, p->fx + (size_t)r * n, NULL, 0, p->fz,
                                         fo, NULL, p->err);
        double s = 0.0;
        for (int j = 0; j < k && st == ENG_OK; j++)
            s += ((double)fo[j] - p->t[j]) * ((double)fo[j] - p->t[j]);
        ord[r].key = st == ENG_OK && isfinite(s) ? sqrt(s) : INFINITY;
        ord[r].idx = r;
        if (st != ENG_OK && st != ENG_ERR_NUMERIC)
            return st;
    }
    qsort(ord, (size_t)p->P, sizeof(*ord), by_key);
    double diag = 0.0;
    for (int j = 0; j < n; j++)
        diag += (p->hi[j] - p->lo[j]) * (p->hi[j] - p->lo[j]);
    const double delta = 1e-2 * sqrt(diag);
    int found = 0;
    int *kept = (int *)(void *)p->rhs; /* reuse: S ints fit in max(k, n, S) doubles */
    for (int a = 0; a < p->P && found < S; a++) {
        if (!isfinite(ord[a].key))
            break;
        const double *ua = p->U + (size_t)ord[a].idx * n;
        bool distinct = true;
        for (int b = 0; b < found && distinct; b++) {
            const double *ub = p->U + (size_t)kept[b] * n;
            double d2 = 0.0;
            for (int j = 0; j < n; j++)
                d2 += (ua[j] - ub[j]) * (ua[j] - ub[j]);
            distinct = sqrt(d2) > delta;
        }
        if (!distinct)
            continue;
        kept[found] = ord[a].idx;
        memcpy(x_out + (size_t)found * n, p->fx + (size_t)ord[a].idx * n, sizeof(float) * (size_t)n);
        res_out[found] = ord[a].key;
        found++;
    }
    *n_found = found;
    return ENG_OK;
}

/* ---- entry point --------------------------------------------------------------------------- */

static enum eng_status perr(char *err, enum eng_status st, const char *msg)
{
    if (err)
        snprintf(err, ENG_ERR_LEN, "%s", msg);
    return st;
}

/* flow, cinn: the unique preimage. */
static enum eng_status bijective(struct pre *p, const float *y, float *x_out, double *res_out,
                                 int *n_found)
{
    const int n = p->n, dz = p->info->dims.z;
    bool cinn = p->info->kind == ENG_KIND_CINN;
    enum eng_status st = eng_inverse(p->m, p->ws, 1, p->t, cinn ? y : NULL, cinn ? 1 : 0, x_out,
                                     NULL, NULL, NULL, p->err);
    if (st != ENG_OK)
        return st;
    if ((st = eng_forward(p->m, p->ws, 1, x_out, cinn ? y : NULL, cinn ? 1 : 0, p->fz, NULL, NULL,
                          p->err)) != ENG_OK)
        return st;
    double s = 0.0;
    for (int j = 0; j < dz; j++)
        s += ((double)p->fz[j] - p->t[j]) * ((double)p->fz[j] - p->t[j]);
    res_out[0] = sqrt(s);
    (void)n;
    *n_found = 1;
    return ENG_OK;
}

enum eng_status eng_preimage(const struct eng_model *m, struct eng_ws *ws, const float *target,
                             const float *y, const struct eng_preimage_opts *opts, float *x_out,
                             double *residual_out, int *n_found, char err[ENG_ERR_LEN])
{
    if (n_found)
        *n_found = 0;
    if (!m || !ws || !target || !opts || !x_out || !residual_out || !n_found)
        return perr(err, ENG_ERR_ARG, "preimage: a required argument is NULL");
    const struct eng_info *info = eng_model_info(m);
    const enum eng_kind kind = info->kind;
    const int n = info->dims.x;
    const int k = kind == ENG_KIND_MLP || kind == ENG_KIND_INN ? info->dims.y : info->dims.z;
    if (kind == ENG_KIND_MDN)
        return perr(err, ENG_ERR_UNSUPPORTED, "preimage is not defined for an mdn model (a "
                    "mixture density network has no forward map to invert)");
    if (opts->method != ENG_PREIMAGE_GRADIENT && opts->method != ENG_PREIMAGE_EVOLUTIONARY)
        return perr(err, ENG_ERR_ARG, "preimage: method must be gradient or evolutionary");
    if (opts->num_solutions < 1 || opts->num_solutions > PRE_MAX_SOLUTIONS)
        return perr(err, ENG_ERR_ARG, "preimage: num_solutions must be in [1, 1024]");
    if (opts->max_steps < 1 || opts->max_steps > PRE_MAX_STEPS)
        return perr(err, ENG_ERR_ARG, "preimage: max_steps must be in [1, 1000000]");
    if (!isfinite(opts->prior_weight) || opts->prior_weight < 0)
        return perr(err, ENG_ERR_ARG, "preimage: prior_weight must be a finite number >= 0");
    if (isnan(opts->time_limit_s))
        return perr(err, ENG_ERR_ARG, "preimage: time_limit_s is not a number");
    for (int j = 0; j < k; j++)
        if (!isfinite(target[j])) {
            if (err)
                snprintf(err, ENG_ERR_LEN, "target[%d] is not finite", j);
            return ENG_ERR_NONFINITE;
        }
    if (kind == ENG_KIND_CINN) {
        if (!y)
            return perr(err, ENG_ERR_SHAPE, "preimage: a cinn needs its condition y (1 row)");
        for (int j = 0; j < info->dims.y; j++)
            if (!isfinite(y[j]))
                return perr(err, ENG_ERR_NONFINITE, "preimage: y is not finite");
    }
    for (int j = 0; j < n; j++) {
        double lo = opts->low ? opts->low[j] : -1.0, hi = opts->high ? opts->high[j] : 1.0;
        if (!isfinite(lo) || !isfinite(hi) || !(lo < hi)) {
            if (err)
                snprintf(err, ENG_ERR_LEN, "preimage: box bound %d must be finite with low < "
                         "high", j);
            return ENG_ERR_ARG;
        }
    }

    struct pre p;
    memset(&p, 0, sizeof(p));
    p.m = m, p.ws = ws, p.info = info, p.o = opts, p.n = n, p.k = k, p.t = target, p.err = err;
    p.t0 = now_s();
    model_view(m, &p.mv);
    if (p.mv.mlp && p.mv.mlp->general)
        return perr(err, ENG_ERR_ARG, "preimage: not available for mlp networks with "
                    "convolutional layers (no back-propagation through them)");
    const int S = opts->num_solutions;
    if (kind == ENG_KIND_FLOW || kind == ENG_KIND_CINN)
        p.P = 1;
    else if (opts->method == ENG_PREIMAGE_EVOLUTIONARY)
        p.P = 8 * S < 64 ? 64 : (8 * S > PRE_MAX_POP ? PRE_MAX_POP : 8 * S);
    else
        p.P = 4 * S < 32 ? 32 : (4 * S > PRE_MAX_POP ? PRE_MAX_POP : 4 * S);
    if (p.P < S)
        p.P = S;
    const int P = p.P;
    size_t jac_rows = PRE_JAC_DOUBLES / ((size_t)k * n + 1);
    p.chunk = (int)(jac_rows < 1 ? 1 : (jac_rows > (size_t)P ? (size_t)P : jac_rows));
    const int q = (k > n ? k : n) > S ? (k > n ? k : n) : S;
    const int dz = info->dims.z > 0 ? info->dims.z : 1;
    size_t tape = p.mv.mlp ? subnet_tape(p.mv.mlp, P) : 1;
    size_t scr = p.mv.mlp ? subnet_scratch(p.mv.mlp, P) : 1;
    size_t nd = (size_t)P * n * 6 + (size_t)P * k * 4 + (size_t)P * 4 /* D: 4 per row */ +
                (size_t)p.chunk * k * n + (size_t)q * q + (size_t)q + (size_t)P + (size_t)n * 5 +
                (size_t)k * 2 + (size_t)q + 64;
    size_t nf = (size_t)P * n * 2 + (size_t)P * k * 2 + (size_t)P * dz + tape + scr + 64;
    double *dm = calloc(nd, sizeof(double));
    float *fm = calloc(nf, sizeof(float));
    struct keyed *ord = calloc((size_t)P * 2, sizeof(struct keyed));
    if (!dm || !fm || !ord) {
        free(dm), free(fm), free(ord);
        return perr(err, ENG_ERR_NOMEM, "preimage: out of memory");
    }
    double *d = dm;
    p.U = d, d += (size_t)P * n;
    p.Un = d, d += (size_t)P * n;
    p.Up = d, d += (size_t)P * n;
    p.Ma = d, d += (size_t)P * n;
    p.Va = d, d += (size_t)P * n;
    p.G = d, d += (size_t)P * n + (size_t)P * 4; /* also the crowding distances (P x 4) */
    p.R = d, d += (size_t)P * k;
    p.Rn = d, d += (size_t)P * k;
    p.Rp = d, d += (size_t)P * k;
    d += (size_t)P * k;
    p.J = d, d += (size_t)p.chunk * k * n;
    p.A = d, d += (size_t)q * q;
    p.rhs = d, d += (size_t)q + (size_t)q;
    p.lam = d, d += (size_t)P;
    p.xm = d, d += n;
    p.xs = d, d += n;
    p.lo = d, d += n;
    p.hi = d, d += n;
    p.piv = (int *)(void *)d, d += n > k ? n : k;
    p.ts = d, d += k;
    p.ys = d, d += k;
    float *f = fm;
    p.fx = f, f += (size_t)P * n;
    p.fgx = f, f += (size_t)P * n;
    p.fo = f, f += (size_t)P * k;
    p.fg = f, f += (size_t)P * k;
    p.fz = f, f += (size_t)P * dz;
    p.tape = f, f += tape;
    p.scr = f;

    for (int j = 0; j < n; j++) {
        p.xm[j] = p.mv.x_mean ? p.mv.x_mean[j] : 0.0;
        p.xs[j] = p.mv.x_std ? p.mv.x_std[j] : 1.0;
        p.lo[j] = opts->low ? ((double)opts->low[j] - p.xm[j]) / p.xs[j] : -3.0;
        p.hi[j] = opts->high ? ((double)opts->high[j] - p.xm[j]) / p.xs[j] : 3.0;
    }
    bool yscaled = kind == ENG_KIND_MLP || kind == ENG_KIND_INN;
    for (int j = 0; j < k; j++) {
        double mj = yscaled && p.mv.y_mean ? p.mv.y_mean[j] : 0.0;
        p.ys[j] = yscaled && p.mv.y_std ? p.mv.y_std[j] : 1.0;
        p.ts[j] = ((double)target[j] - mj) / p.ys[j];
    }
    bool given_box = opts->low || opts->high;
    p.clamp = kind == ENG_KIND_MLP || given_box;

    enum eng_status st;
    if (kind == ENG_KIND_FLOW || kind == ENG_KIND_CINN) {
        st = bijective(&p, y, x_out, residual_out, n_found);
    } else {
        if (kind == ENG_KIND_INN)
            st = latent_starts(&p);
        else {
            start_points(&p, given_box);
            st = ENG_OK;
        }
        if (st == ENG_OK && opts->method == ENG_PREIMAGE_EVOLUTIONARY)
            st = run_evolution(&p, ord, ord + P);
        else if (st == ENG_OK && kind == ENG_KIND_MLP)
            st = run_adam(&p);
        int steps = PRE_POLISH_STEPS;
        if (kind == ENG_KIND_INN && opts->method == ENG_PREIMAGE_GRADIENT)
            steps = opts->max_steps < 50 ? opts->max_steps : 50; /* the polish is the search */
        if (st == ENG_OK)
            st = polish(&p, steps);
        if (st == ENG_OK)
            st = finish(&p, x_out, residual_out, n_found, ord);
    }
    free(dm), free(fm), free(ord);
    return st;
}
