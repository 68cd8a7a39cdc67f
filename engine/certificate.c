/*
 * certificate.c — is this network invertible, and why: one verdict per block (from the
 * block's certify op) and the model's verdict, the weakest of its blocks.  For an mlp the
 * layers are examined one by one.  Computed once at load; read by
 * eng_model_certificate.  The rules and what each verdict proves: docs/inversion.md.
 *
 * Blocks (flow, cinn, inn): a block without a certify op has a closed-form inverse and
 * no stated bounds ("analytic").  Numeric blocks (i-ResNet) are "contraction" when their
 * certified Lipschitz bound L < 1, otherwise "none" and the model is not certified.
 *
 * mlp: for input width n and each layer,
 *   Linear (out x in): exact singular values in double (Jacobi; Gaussian elimination
 *     for the rank and a norm bound above LA_JACOBI_MAX).  out < in, or rank < in, is not
 *     injective as a layer; out > in with full column rank is injective (inverse on its
 *     image); square and full rank is invertible with condition sigma_max / sigma_min.
 *   Activations: leaky_relu (slope > 0), elu (alpha > 0), tanh, sigmoid, softplus are
 *     strictly increasing (injective, inverse on their range); relu is not injective
 *     (all negatives give 0); gelu, silu, lipswish are not monotone (minimum near
 *     u = -0.75 / -1.28), so two inputs share each value near the minimum.
 * The model verdict distinguishes what is proved from what is merely not guaranteed:
 *   proved not injective: fewer outputs than inputs, a layer narrower than the input
 *     (no continuous injection R^n -> R^w with w < n), or a rank-deficient first layer
 *     (x and x + v, v in its null space, collide);
 *   no guarantee: some later layer is not injective (the network may still be injective,
 *     but it cannot be inverted layer by layer);
 *   invertible layer by layer (analytic): every layer injective and the widths equal.
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block.h"
#include "la.h"
#include "model_impl.h"
#include "subnet.h"

const char *eng_guarantee_str(enum eng_guarantee g)
{
    static const char *const n[] = {"analytic", "contraction", "none"};
    return (unsigned)g < 3 ? n[g] : "?";
}

static void cert_default(struct eng_block_cert *c)
{
    c->invertible = true;
    c->guarantee = ENG_GUARANTEE_ANALYTIC;
    c->lipschitz = NAN;
    c->lipschitz_inverse = NAN;
    c->condition = NAN;
    c->iterations_for_1e6 = -1;
    snprintf(c->reason, sizeof(c->reason), "closed-form inverse");
}

/* Rank of an (r x c) double matrix by Gaussian elimination with partial pivoting;
 * `work` holds r*c doubles; pivots below tol * max|a| count as zero. */
static int matrix_rank(int r, int c, const double *a, double *work, double tol)
{
    double scale = 0;
    for (int i = 0; i < r * c; i++) {
        work[i] = a[i];
        scale = fmax(scale, fabs(work[i]));
    }
    int rank = 0;
    for (int col = 0; col < c && rank < r; col++) {
        int p = rank;
        for (int i = rank + 1; i < r; i++)
            if (fabs(work[(size_t)i * c + col]) > fabs(work[(size_t)p * c + col]))
                p = i;
        if (fabs(work[(size_t)p * c + col]) <= tol * scale)
            continue;
        for (int j = 0; j < c; j++) {
            double t = work[(size_t)p * c + j];
            work[(size_t)p * c + j] = work[(size_t)rank * c + j];
            work[(size_t)rank * c + j] = t;
        }
        for (int i = rank + 1; i < r; i++) {
            double f = work[(size_t)i * c + col] / work[(size_t)rank * c + col];
            for (int j = col; j < c; j++)
                work[(size_t)i * c + j] -= f * work[(size_t)rank * c + j];
        }
        rank++;
    }
    return rank;
}

/* Linear layer: rank, sigma_max, sigma_min (of the in columns; 0 when rank < in). */
static enum eng_status linear_svals(struct ldr *L, int out, int in, const float *w, int *rank,
                                    double *smax, double *smin)
{
    size_t n = (size_t)out * in;
    size_t need = 2 * n + (size_t)(out < in ? out : in) + la_norm2_upper_work(out, in);
    double *a = malloc(sizeof(double) * need);
    if (!a)
        return ldr_fail(L, ENG_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++)
        a[i] = w[i];
    double *work = a + n;
    int k = out < in ? out : in;
    /* weights are float: singular values below this are indistinguishable from 0 */
    if (k <= LA_JACOBI_MAX) {
        double *sv = work + n;
        la_singular_values(out, in, a, sv, work);
        double tol = sv[0] * (double)(out > in ? out : in) * FLT_EPSILON;
        int r = 0;
        while (r < k && sv[r] > tol)
            r++;
        *rank = r;
        *smax = sv[0];
        *smin = r == in ? sv[in - 1] : 0.0;
    } else {
        *rank = matrix_rank(out, in, a, work, (double)(out > in ? out : in) * FLT_EPSILON);
        *smax = la_norm2_upper(out, in, a, work + n);
        *smin = NAN; /* not computed for wide layers */
    }
    free(a);
    return ENG_OK;
}

static bool act_injective(const struct subnet_layer *l)
{
    switch (l->act) {
    case ACT_LEAKY_RELU:
    case ACT_ELU:
        return l->p1 > 0;
    case ACT_TANH:
    case ACT_SIGMOID:
    case ACT_SOFTPLUS:
        return true;
    default: /* relu, gelu, silu, lipswish */
        return false;
    }
}

static void act_reason(const struct subnet_layer *l, char *r, size_t n)
{
    const char *nm = act_name(l->act);
    switch (l->act) {
    case ACT_RELU:
        snprintf(r, n, "relu is not injective: every negative input maps to 0");
        break;
    case ACT_GELU:
    case ACT_GELU_TANH:
        snprintf(r, n, "gelu is not monotone (minimum near u = -0.75): two inputs share each "
                 "value just above the minimum");
        break;
    case ACT_SILU:
    case ACT_LIPSWISH:
        snprintf(r, n, "%s is not monotone (minimum near u = -1.28): two inputs share each "
                 "value just above the minimum", nm);
        break;
    case ACT_LEAKY_RELU:
    case ACT_ELU:
        if (!(l->p1 > 0)) {
            snprintf(r, n, "%s with parameter %g <= 0 is not injective", nm, (double)l->p1);
            break;
        }
        snprintf(r, n, "%s is strictly increasing: invertible on its range", nm);
        break;
    default:
        snprintf(r, n, "%s is strictly increasing: invertible on its range", nm);
        break;
    }
}

static enum eng_status cert_mlp(struct ldr *L, const struct subnet *s, struct eng_certificate *out)
{
    struct eng_block_cert *bc = ldr_alloc(L, sizeof(*bc) * (size_t)s->n_layers);
    if (!bc)
        return ENG_ERR_NOMEM;
    const int n_in = s->dx, n_out = s->dout;
    int narrow = -1, first_rank = -1, first_bad = -1, widen = 0;
    int narrow_w = 0;
    bool all_inj = true;
    for (int i = 0; i < s->n_layers; i++) {
        const struct subnet_layer *l = &s->layers[i];
        struct eng_block_cert *c = &bc[i];
        cert_default(c);
        c->index = i;
        if (l->is_linear) {
            c->type = "linear";
            int rank = 0;
            double smax = NAN, smin = NAN;
            enum eng_status st = linear_svals(L, l->out, l->in, l->w, &rank, &smax, &smin);
            if (st != ENG_OK)
                return st;
            c->lipschitz = smax;
            if (l->out < n_in && narrow < 0)
                narrow = i, narrow_w = l->out;
            if (l->out < l->in) {
                c->invertible = false;
                snprintf(c->reason, sizeof(c->reason), "not injective: narrows %d inputs to %d "
                         "outputs (rank %d)", l->in, l->out, rank);
            } else if (rank < l->in) {
                c->invertible = false;
                snprintf(c->reason, sizeof(c->reason), "rank-deficient: rank %d < input width "
                         "%d, so inputs differing by a null vector collide", rank, l->in);
                if (i == 0)
                    first_rank = rank;
            } else {
                c->lipschitz_inverse = smin > 0 ? 1.0 / smin : NAN;
                c->condition = smin > 0 ? smax / smin : NAN;
                if (l->out > l->in) {
                    widen = 1;
                    snprintf(c->reason, sizeof(c->reason), "injective (full column rank %d, "
                             "condition %.3g) but widens %d -> %d: inverse only on its image",
                             rank, c->condition, l->in, l->out);
                } else {
                    snprintf(c->reason, sizeof(c->reason), "square and full rank (condition "
                             "number %.4g)", c->condition);
                }
            }
        } else {
            c->type = act_name(l->act);
            c->invertible = act_injective(l);
            c->lipschitz = act_lipschitz(l->act, l->p1, l->p2);
            act_reason(l, c->reason, sizeof(c->reason));
        }
        if (!c->invertible) {
            c->guarantee = ENG_GUARANTEE_NONE;
            all_inj = false;
            if (first_bad < 0)
                first_bad = i;
        }
    }
    out->certified = false;
    out->n_blocks = s->n_layers;
    out->blocks = bc;
    out->invertible = false;
    out->guarantee = ENG_GUARANTEE_NONE;
    if (n_out < n_in) {
        snprintf(out->reason, sizeof(out->reason),
                 "not injective: maps %d inputs to %d outputs, and no continuous map from R^%d "
                 "to R^%d is injective; every target has a set of preimages (use preimage "
                 "search)", n_in, n_out, n_in, n_out);
    } else if (narrow >= 0) {
        snprintf(out->reason, sizeof(out->reason),
                 "not injective: layer %d squeezes the %d inputs through %d units (no "
                 "continuous injection into fewer dimensions); use preimage search",
                 narrow, n_in, narrow_w);
    } else if (first_rank >= 0) {
        snprintf(out->reason, sizeof(out->reason),
                 "not injective: the first layer has rank %d < %d inputs, so inputs that "
                 "differ by a null vector give the same output; use preimage search",
                 first_rank, n_in);
    } else if (!all_inj) {
        snprintf(out->reason, sizeof(out->reason),
                 "no invertibility guarantee: layer %d (%s) is not injective, so the network "
                 "cannot be inverted layer by layer (it may still be injective); use preimage "
                 "search", first_bad, bc[first_bad].type);
    } else if (widen || n_out > n_in) {
        out->invertible = true;
        snprintf(out->reason, sizeof(out->reason),
                 "injective layer by layer (full column rank, strictly increasing "
                 "activations), but maps R^%d into a %d-dimensional space: invertible on its "
                 "image only (preimage search finds the inverse of reachable targets)",
                 n_in, n_out);
    } else {
        out->invertible = true;
        out->guarantee = ENG_GUARANTEE_ANALYTIC;
        snprintf(out->reason, sizeof(out->reason),
                 "invertible layer by layer: square full-rank Linear layers and strictly "
                 "increasing activations (the inverse exists on the range of the activations; "
                 "the engine serves it through preimage search)");
    }
    return ENG_OK;
}

enum eng_status cert_build(struct ldr *L, const struct blk *blocks, int n_blocks,
                           const struct subnet *mlp, struct eng_certificate *out)
{
    if (mlp)
        return cert_mlp(L, mlp, out);
    struct eng_block_cert *bc = ldr_alloc(L, sizeof(*bc) * (size_t)(n_blocks ? n_blocks : 1));
    if (!bc)
        return ENG_ERR_NOMEM;
    out->invertible = true;
    out->guarantee = ENG_GUARANTEE_ANALYTIC;
    out->certified = true;
    int n_numeric = 0, worst = -1, bad = -1;
    double Lmax = 0.0, amp = 1.0;
    for (int i = 0; i < n_blocks; i++) {
        const struct blk *b = &blocks[i];
        cert_default(&bc[i]);
        if (b->ops->certify)
            b->ops->certify(b, &bc[i]);
        bc[i].index = i;
        bc[i].type = b->ops->type;
        if (!bc[i].invertible) {
            out->invertible = false;
            if (bad < 0)
                bad = i;
        }
        if (bc[i].guarantee > out->guarantee)
            out->guarantee = bc[i].guarantee;
        if (b->numeric) {
            n_numeric++;
            if (bc[i].guarantee != ENG_GUARANTEE_CONTRACTION)
                out->certified = false;
            if (!(bc[i].lipschitz <= Lmax)) {
                Lmax = bc[i].lipschitz;
                worst = i;
            }
            amp *= bc[i].lipschitz_inverse;
        }
    }
    if (!out->invertible)
        out->guarantee = ENG_GUARANTEE_NONE;
    out->n_blocks = n_blocks;
    out->blocks = bc;
    if (bad >= 0)
        snprintf(out->reason, sizeof(out->reason),
                 "not certified: block %d (%s) has no invertibility guarantee: %.160s", bad,
                 bc[bad].type, bc[bad].reason);
    else if (n_numeric == 0)
        snprintf(out->reason, sizeof(out->reason),
                 "invertible: all %d blocks have closed-form inverses", n_blocks);
    else
        snprintf(out->reason, sizeof(out->reason),
                 "invertible: %d closed-form blocks and %d certified contractions (largest "
                 "L = %.4g, block %d); their inverses are iterated to a certified error "
                 "bound, which they amplify by at most %.3g", n_blocks - n_numeric, n_numeric,
                 Lmax, worst, amp);
    return ENG_OK;
}
