/*
 * gmm.c — FrEIA's GaussianMixtureModel with the mixture component given per row:
 *     forward  z = U_i (x − μ_i)          log-det  Σ_k u_{i,k}        (k < d)
 *     inverse  x = μ_i + U_i⁻¹ z          log-det −Σ_k u_{i,k}
 * U_i is upper triangular with diagonal e^{u_{i,k}} (k < d) and, above the diagonal, the
 * entries u_{i,d..} in row-major order (torch's masked assignment order); it is the
 * Cholesky factor of component i's precision matrix.
 *
 * FrEIA takes the parameters as its conditions c = [w, mu, U, i]; here they are one
 * condition row, concatenated in that order (what a graph node with those four
 * conditions receives):
 *     w (K) | mu (K·d) | U (K·d(d+1)/2) | i (1: the component index, an integer 0..K−1)
 * so the condition width must be K + K·d + K·d(d+1)/2 + 1.  w is not used by the map
 * (FrEIA uses it only to draw i and in its losses).  A row whose i is not an integer in
 * 0..K−1 gives NaN, which the model reports as a numerical error.
 * FrEIA's other two modes are not bijections of one row and are not served: i = None maps
 * K copies of x at once with a per-component log-det, and an integer seed draws i with
 * torch's generator.
 * The inverse solves the triangular system by back substitution in double (FrEIA
 * multiplies by torch.inverse(U)).  No scratch.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../block.h"
#include "../emath.h"
#include "../loader.h"

struct gmm {
    int K, d;
    int off_mu, off_u, off_i; /* offsets in the condition row */
    int nu;                   /* d(d+1)/2 */
};

static enum eng_status gmm_load(struct blk *b, struct ldr *L, const cJSON *j)
{
    if (b->rank != 1)
        return ldr_fail(L, ENG_ERR_MANIFEST, "GaussianMixtureModel works on flat (1-D) rows, "
                        "but its input has rank %d", b->rank);
    if (b->c_rank != 1)
        return ldr_fail(L, ENG_ERR_MANIFEST, "GaussianMixtureModel needs a plain (not "
                        "broadcast) condition");
    struct gmm *p = ldr_alloc(L, sizeof(*p));
    if (!p)
        return ENG_ERR_NOMEM;
    long K;
    enum eng_status st;
    if ((st = ldr_int(L, j, "components", true, 0, 1, 1 << 20, &K)) != ENG_OK)
        return st;
    if (b->d > 1024)
        return ldr_fail(L, ENG_ERR_MANIFEST, "GaussianMixtureModel supports at most 1024 "
                        "dimensions, its input has %d", b->d);
    const long long d = b->d, nu = d * (d + 1) / 2;
    const long long want = K + K * d + K * nu + 1;
    if (want != b->cw)
        return ldr_fail(L, ENG_ERR_MANIFEST,
                        "GaussianMixtureModel with %ld components of dimension %lld needs a "
                        "condition of width %lld (w %ld | mu %lld | U %lld | i 1), got %d", K, d,
                        want, K, K * d, K * nu, b->cw);
    p->K = (int)K, p->d = (int)d, p->nu = (int)nu;
    p->off_mu = p->K;
    p->off_u = p->off_mu + p->K * p->d;
    p->off_i = p->off_u + p->K * p->nu;
    b->priv = p;
    return ENG_OK;
}

static size_t gmm_scratch(const struct blk *b, int rows)
{
    (void)b, (void)rows;
    return 0;
}

/* Component index of a condition row, or -1 when it is not an integer in 0..K−1. */
static int gmm_index(const struct gmm *p, const float *c)
{
    float v = c[p->off_i];
    if (!(v >= 0.0f && v < (float)p->K) || v != floorf(v))
        return -1;
    return (int)v;
}

static void gmm_run(const struct blk *b, struct blk_io *io, bool inv)
{
    const struct gmm *p = b->priv;
    const int d = p->d;
    double v[1024];   /* one row in double; d <= 1024 (checked at load) */
    for (int r = 0; r < io->n; r++) {
        float *x = io->x + (size_t)r * d;
        const float *c = io->c + (size_t)r * io->c_ld;
        int i = gmm_index(p, c);
        if (i < 0) {
            for (int k = 0; k < d; k++)
                x[k] = NAN;
            io->log_det[r] = NAN;
            continue;
        }
        const float *mu = c + p->off_mu + (size_t)i * d;
        const float *u = c + p->off_u + (size_t)i * p->nu;  /* log-diag d | strict upper */
        double ld = 0.0;
        for (int k = 0; k < d; k++)
            ld += (double)u[k];
        /* Strict upper entry (row a, column c > a) in row-major order. */
#define UP(a, cc) ((double)u[d + (a) * (2 * d - (a) - 1) / 2 + ((cc) - (a) - 1)])
        if (!inv) {
            for (int k = 0; k < d; k++)
                v[k] = (double)x[k] - (double)mu[k];
            for (int a = 0; a < d; a++) {
                double s = em_exp((double)u[a]) * v[a];
                for (int cc = a + 1; cc < d; cc++)
                    s += UP(a, cc) * v[cc];
                x[a] = (float)s;
            }
            io->log_det[r] += ld;
        } else {
            for (int a = d - 1; a >= 0; a--) {
                double s = (double)x[a];
                for (int cc = a + 1; cc < d; cc++)
                    s -= UP(a, cc) * v[cc];
                v[a] = s * em_exp(-(double)u[a]);
            }
            for (int k = 0; k < d; k++)
                x[k] = (float)(v[k] + (double)mu[k]);
            io->log_det[r] -= ld;
        }
#undef UP
    }
}

static void gmm_forward(const struct blk *b, struct blk_io *io)
{
    gmm_run(b, io, false);
}

static void gmm_inverse(const struct blk *b, struct blk_io *io)
{
    gmm_run(b, io, true);
}

static void gmm_certify(const struct blk *b, struct eng_block_cert *out)
{
    const struct gmm *p = b->priv;
    snprintf(out->reason, sizeof(out->reason),
             "Gaussian mixture component i (of %d) given by the condition: triangular affine "
             "map with positive diagonal, inverse by back substitution; bounds depend on the "
             "condition", p->K);
}

const struct blk_ops blk_gmm_ops = {
    .type = "GaussianMixtureModel",
    .takes_cond = true,
    .needs_cond = true,
    .load = gmm_load,
    .scratch = gmm_scratch,
    .forward = gmm_forward,
    .inverse = gmm_inverse,
    .certify = gmm_certify,
};
