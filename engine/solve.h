/*
 * solve.h — the root solvers behind numerical inverses (i-ResNet blocks): find x with
 *     r(x) = x + g(x) - y = 0
 * row by row, in double, for a batch of rows at once.  The solvers know nothing about
 * networks: g (and optionally its Jacobian) come in through callbacks, so they are
 * tested alone (tests/unit/test_iresnet.c) and reused by any block whose inverse is a
 * fixed point.  Not part of the public API; the method names are (engine.h).
 *
 * Methods (enum eng_solve_method), safeguarded: a newton or anderson step is accepted
 * only if it lowers ||r|| (broyden: see below); otherwise the next point is the
 * fixed-point step
 * x <- y - g(x_base) from the last accepted point, which never increases ||r|| when
 * Lip(g) = L < 1 (||r(G(x))|| <= L ||r(x)||).
 *   fixed_point  x <- y - g(x) (Behrmann et al. 2019).
 *   newton       x <- x - (I + J_g(x))^-1 r(x), exact Jacobian from the callback, LU in
 *                double.  I + J_g is well conditioned: its singular values lie in
 *                [1 - L, 1 + L].  A rejected step is halved along its direction down to
 *                SLV_NEWTON_MIN_STEP of the full step before the fixed-point fallback.
 *   anderson     type-II Anderson acceleration with memory m (default 5) on the map
 *                G(x) = y - g(x): least squares by modified Gram-Schmidt QR of the
 *                residual differences, dropping ill-conditioned columns.
 *   broyden      "good" Broyden on r from H = I: the inverse Jacobian H is kept dense
 *                (d x d) up to d = SLV_BROYDEN_DENSE_MAX, in low-rank form I + U V^T
 *                above (SLV_BROYDEN_MEM updates, then a restart from H = I).  Its
 *                residuals are not monotone before the superlinear phase, so its
 *                safeguard is looser: a step is kept while ||r|| stays below
 *                SLV_BROYDEN_SLACK times the best residual so far.
 *   auto         d <= SLV_NEWTON_MAX_D with a Jacobian: fixed-point steps while each
 *                shrinks ||r|| at least 4x (SLV_AUTO_SWITCH; benign blocks converge in
 *                a few cheap steps), newton from the first step that does not (a Jacobian
 *                costs about d evaluations of g, so it pays only when the contraction is
 *                slow).  Larger d: broyden (dense, its first step is a fixed-point step)
 *                up to SLV_BROYDEN_DENSE_MAX, else anderson.  Measured
 *                on adversarial linear contractions (docs/inversion.md): dense broyden
 *                needs 1.4-14x fewer evaluations than anderson(5) wherever it fits, and
 *                anderson stalls on rotation spectra (m < d); above the dense limit the
 *                low-rank broyden loses its memory and anderson is the safer choice.
 * Every accepted or rejected evaluation also feeds the secant memory of anderson and
 * broyden (a rejected point is still a valid secant pair).
 *
 * Stopping rule (Banach, a posteriori; iresnet.md §7).  With L < 1, x* the exact root
 * and x_b the evaluated point with the smallest computed residual r~ = fl(fl(x_b + g~) - y),
 * g~ the computed g(x_b) with its elementwise rounding bound e from the callback:
 *     ||x_ret - x*|| <= L/(1-L) * (||r~|| + rho) + eG,   x_ret = fl(y - g~),
 * where rho = ||e + u (|fl(x_b + g~)| + |r~|)|| bounds ||r(x_b) - r~|| (so ||r~|| + rho
 * bounds the exact residual of x_b) and eG = ||e + u |x_ret| || bounds ||x_ret - G(x_b)||,
 * G(x_b) = y - g(x_b) exactly; u = 2^-53, norms rounded upward (la_norm_up), and the
 * whole bound inflated by (1 + 16 u) for its own rounding.  A row stops, converged, when
 *     bound <= tol * max(||x_ret||, 1) / (1 + tol),
 * which guarantees ||x_ret - x*|| <= tol * max(||x*||, 1): relative to ||x*|| when it
 * is at least 1, absolute (tol) near the origin where a relative target is meaningless.
 * The returned point is x_ret (one free fixed-point step past the best point) and the
 * returned bound is the left side above.
 * When L >= 1 (no certificate) a row stops when ||r~|| + rho <= tol * max(||x_b||, 1); it
 * is then "converged" in the residual sense only, the bound is +inf and x_b itself is
 * returned.
 * A row also stops, not converged, when it has used max_iter evaluations of g, when
 * ||r~|| is down to the rounding floor 2 rho without meeting the rule ("accuracy floor"),
 * or when g returns non-finite values at a fixed-point step.  Nothing loops: every pass
 * costs each active row one evaluation of g.
 *
 * Counting: iterations = evaluations of g for that row (every candidate costs exactly
 * one, accepted or not).  Newton's Jacobians are counted separately (jacobians); one
 * Jacobian of a dense i-ResNet block costs about (sum of h_i h_{i-1} d) multiply-adds,
 * i.e. roughly d times one evaluation of g for a single row (docs/inversion.md).
 *
 * Memory: slv_solve allocates nothing; the caller passes slv_scratch(...) doubles.
 */
#ifndef INNSERVE_SOLVE_H
#define INNSERVE_SOLVE_H

#include <stdbool.h>
#include <stddef.h>

#include "engine.h"

#define SLV_NEWTON_MAX_D 64
#define SLV_AUTO_SWITCH 0.25
#define SLV_NEWTON_MIN_STEP (1.0 / 16)
#define SLV_ANDERSON_M 5
#define SLV_ANDERSON_MAX_M 32
#define SLV_BROYDEN_MEM 64
#define SLV_BROYDEN_DENSE_MAX 256
#define SLV_BROYDEN_SLACK 100.0

struct slv_fn {
    int d;
    void *ctx;
    /* gx = g(x) for `rows` rows (x, gx, gerr: rows x d, contiguous), and in gerr a bound
     * on |gx - g(x)| for every element (the rounding of the callee's evaluation; the
     * stopping rule and the returned bound are only as rigorous as this).  ids[k] is the
     * caller's index (0 .. n-1 of slv_solve) of row k, e.g. to pick its condition.  The
     * callee may keep what jac needs about these rows until its next call. */
    void (*g)(void *ctx, int rows, const int *ids, const double *x, double *gx, double *gerr);
    /* J (d x d, row-major, J[i*d + j] = dg_i/dx_j) at row `pos` (0 .. rows-1) of the most
     * recent g call.  NULL: no Jacobian (newton is then replaced by broyden). */
    void (*jac)(void *ctx, int pos, double *J);
    double lipschitz; /* certified bound L on Lip(g); >= 1 or non-finite: uncertified */
};

struct slv_opts {
    int method;   /* enum eng_solve_method */
    int max_iter; /* evaluations of g per row, >= 1 */
    double tol;   /* per-row target, see the stopping rule; > 0 */
    int memory;   /* anderson m (default SLV_ANDERSON_M, at most SLV_ANDERSON_MAX_M) or broyden
                     updates (default SLV_BROYDEN_MEM); 0 = default */
};

struct slv_row {
    int iterations;     /* evaluations of g */
    int jacobians;      /* Jacobian evaluations (newton) */
    double residual;    /* ||r~||, the computed residual of the best evaluated point (rounded up) */
    double error_bound; /* certified bound on ||x_returned - x*||; +inf when uncertified */
    bool converged;
};

/* The method that `method` (enum eng_solve_method) runs for width d. */
int slv_resolve(int method, int d, bool has_jac);
/* Doubles of scratch slv_solve needs for `rows` rows of width d with this method. */
size_t slv_scratch(int d, int rows, int method, int memory);
/* Solve x + g(x) = y for n rows.  y: n x d.  x: n x d, on entry the starting points
 * (y itself is the usual choice), on return the solutions.  out: n results.  opts are
 * used as given (the caller validates and caps them).  scratch: slv_scratch doubles. */
void slv_solve(const struct slv_fn *fn, const struct slv_opts *opts, int n, const double *y,
               double *x, struct slv_row *out, double *scratch);

#endif
