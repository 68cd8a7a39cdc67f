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
 * The spline itself (FrEIA's BinnedSplineBase parameters, constraints, bin search, the
 * linear and rational-quadratic maps with affine or identity tails) and the two-sided
 * coupling are spline.h's, implemented in spline.c; this file holds the blocks' own parts.
 * A parameter tensor of C·P channels over S positions (S = H·W, L or 1) gives coordinate
 * (c, s) its parameter p at (c·P + p)·S + s, as FrEIA's movedim(1, −1) + reshape does.
 *
 * Scratch: work (spl_work_floats) | parameters (rows × C·P·S floats, with a condition) |
 * subnet; LinearSpline as spl_coupling_scratch.  Nothing is allocated per call.
 */
#include <stdio.h>
#include "coupling.h"
#include "spline.h"
#include "../block.h"
#include "../loader.h"
#include "../subnet.h"

/* Positions per channel of the block's input shape (1 for a vector). */
static int positions(const struct blk *b)
{
    return b->d / b->shape[0];
}

/* ==== ElementwiseRationalQuadraticSpline ================================================ */

struct erqs {
    struct spl_cfg s;           /* rational-quadratic */
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
    if ((st = spl_cfg_load(L, j, true, &p->s)) != ENG_OK)
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
    size_t s = spl_work_floats(&p->s);
    if (p->net)
        s += cpl_round((size_t)rows * b->d * p->s.P) + subnet_scratch(p->net, rows);
    return s;
}

static void erqs_run(const struct blk *b, struct blk_io *io, bool inv)
{
    const struct erqs *p = b->priv;
    float *work = io->scratch;
    if (!p->net) {
        spl_cols(&p->s, io, b->d, 0, b->d, p->S, p->params, 0, work, inv);
        return;
    }
    const size_t np = (size_t)b->d * p->s.P;
    float *a = work + spl_work_floats(&p->s);
    float *sub = a + cpl_round((size_t)io->n * np);
    subnet_forward(p->net, io->n, NULL, 0, io->c, io->c_ld, a, (int)np, sub);
    spl_cols(&p->s, io, b->d, 0, b->d, p->S, a, np, work, inv);
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

static enum eng_status lspl_load(struct blk *b, struct ldr *L, const cJSON *j)
{
    return spl_coupling_load(b, L, j, false);
}

static void lspl_certify(const struct blk *b, struct eng_block_cert *out)
{
    const struct spl_coupling *p = b->priv;
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
    .scratch = spl_coupling_scratch,
    .forward = spl_coupling_forward,
    .inverse = spl_coupling_inverse,
    .certify = lspl_certify,
};
