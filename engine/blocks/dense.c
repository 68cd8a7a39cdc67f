/*
 * dense.c — InvertibleDense: a full-rank linear layer followed by an invertible leaky ReLU,
 *   u = x·Wᵀ + b          (W: d × d in torch's (out, in) layout, b: d or absent)
 *   y = leaky(u)          = u where u ≥ 0, slope·u where u < 0, slope ∈ (0, 1]
 *   log-det = log|det W| + Σ_i [u_i < 0]·log(slope)
 *   ([u_i < 0] is read as the sign bit, so −0 counts the same way in both directions.)
 * Inverse: u = leaky⁻¹(y) (y < 0 exactly where u < 0), x = (u − b)·W⁻ᵀ.  W⁻¹ and log|det W|
 * are computed at load in double (a singular W is refused naming the tensor).
 * Forward and inverse are one gemm per tile plus an elementwise pass in io->scratch
 * (rows × d floats).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../la.h"
#include "../block.h"
#include "../emath.h"
#include "../kern.h"
#include "../loader.h"

/* Name of the tensor stored in string field `field` of the block object (for messages). */
/* True when the optional field is absent or JSON null. */
static bool field_absent(const cJSON *j, const char *field)
{
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(j, field);
    return f == NULL || cJSON_IsNull(f);
}

struct invdense {
    const float *w;     /* d × d (out, in): u = x·wᵀ + b */
    float *w_inv;       /* d × d: W⁻¹, x = (u − b)·w_invᵀ */
    const float *b;     /* d, or NULL */
    float slope;        /* negative slope in (0, 1] */
    double logdet_w;    /* log|det W| */
    double log_slope;   /* log(slope) ≤ 0 */
    double norm, norm_inv; /* ‖W‖₂, ‖W⁻¹‖₂ (for the certificate) */
};

static enum eng_status invdense_load(struct blk *b, struct ldr *L, const cJSON *j)
{
    const int d = b->d;
    struct invdense *p = ldr_alloc(L, sizeof(*p));
    if (!p)
        return ENG_ERR_NOMEM;
    double slope;
    enum eng_status st = ldr_num(L, j, "negative_slope", false, 0.01, &slope);
    if (st != ENG_OK)
        return st;
    if (!(slope > 0.0 && slope <= 1.0) || (float)slope <= 0.0f)
        return ldr_fail(L, ENG_ERR_MANIFEST,
                        "field 'negative_slope' must be in (0, 1] for the block to be "
                        "invertible, got %g",
                        slope);
    p->slope = (float)slope;
    p->log_slope = em_log((double)p->slope);

    const double *w64, *inv;
    double logdet;
    if ((st = ldr_invertible(L, j, "weight", d, &w64, &inv, &logdet)) != ENG_OK)
        return st;
    size_t dd = (size_t)d * d;
    p->logdet_w = logdet;
    double *sv_work = malloc(sizeof(double) * la_norm2_upper_work(d, d));
    if (!sv_work)
        return ldr_fail(L, ENG_ERR_NOMEM, "out of memory for the norms of tensor '%s'",
                        ldr_tensor_name(j, "weight"));
    /* upper bounds (exact singular values), not estimates */
    p->norm = la_norm2_upper(d, d, w64, sv_work);
    p->norm_inv = la_norm2_upper(d, d, inv, sv_work);
    free(sv_work);
    p->w_inv = ldr_alloc(L, sizeof(float) * dd);
    float *w32 = ldr_alloc(L, sizeof(float) * dd);
    if (!p->w_inv || !w32)
        return ENG_ERR_NOMEM;
    for (size_t i = 0; i < dd; i++) {
        p->w_inv[i] = (float)inv[i];
        w32[i] = (float)w64[i];
    }
    p->w = w32;

    if (!field_absent(j, "bias") &&
        (st = ldr_tensor_numel(L, j, "bias", true, d, &p->b)) != ENG_OK)
        return st;
    b->priv = p;
    return ENG_OK;
}

static size_t invdense_scratch(const struct blk *b, int rows)
{
    return (size_t)rows * (size_t)b->d;
}

static void invdense_forward(const struct blk *b, struct blk_io *io)
{
    const struct invdense *p = b->priv;
    const int d = b->d, n = io->n;
    /* scratch (n × d) = x · Wᵀ; u = scratch + b; x = leaky(u) */
    kern_linear_w(io->k, n, d, d, io->x, d, p->w, d, io->scratch, d);
    for (int i = 0; i < n; i++) {
        const float *s = io->scratch + (size_t)i * d;
        float *x = io->x + (size_t)i * d;
        int neg = 0;
        for (int k = 0; k < d; k++) {
            float u = p->b ? s[k] + p->b[k] : s[k];
            if (signbit(u)) {
                neg++;
                u *= p->slope;
            }
            x[k] = u;
        }
        io->log_det[i] += p->logdet_w + (double)neg * p->log_slope;
    }
}

static void invdense_inverse(const struct blk *b, struct blk_io *io)
{
    const struct invdense *p = b->priv;
    const int d = b->d, n = io->n;
    /* scratch = leaky⁻¹(y) − b; x (n × d) = scratch · W⁻ᵀ */
    for (int i = 0; i < n; i++) {
        const float *y = io->x + (size_t)i * d;
        float *u = io->scratch + (size_t)i * d;
        int neg = 0;
        for (int k = 0; k < d; k++) {
            float v = y[k];
            if (signbit(v)) { /* sign survives u·slope, even when it underflows to −0 */
                neg++;
                v /= p->slope;
            }
            u[k] = p->b ? v - p->b[k] : v;
        }
        io->log_det[i] -= p->logdet_w + (double)neg * p->log_slope;
    }
    kern_linear_w(io->k, n, d, d, io->scratch, d, p->w_inv, d, io->x, d);
}

static void invdense_certify(const struct blk *b, struct eng_block_cert *out)
{
    const struct invdense *p = b->priv;
    out->lipschitz = p->norm; /* leaky slope ≤ 1 */
    out->lipschitz_inverse = p->norm_inv / (double)p->slope;
    out->condition = p->norm * p->norm_inv;
    snprintf(out->reason, sizeof(out->reason),
             "full-rank W inverted at load (condition number %.3g) and leaky ReLU with slope "
             "%g > 0",
             out->condition, (double)p->slope);
}

const struct blk_ops blk_invdense_ops = {
    .type = "InvertibleDense",
    .load = invdense_load,
    .scratch = invdense_scratch,
    .forward = invdense_forward,
    .inverse = invdense_inverse,
    .certify = invdense_certify,
};
