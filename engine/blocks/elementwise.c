/*
 * elementwise.c — the blocks that act on each coordinate separately:
 *   ActNorm                    HEAD:  y = (x − loc)·e^{−log_scale}   log-det −Σ log_scale
 *                              0.2:   y = x·e^{scale} + bias         log-det  Σ scale
 *                              (one value per channel of an image or (C, L) row, repeated
 *                              over its positions, or one per coordinate)
 *   LearnedElementwiseScaling  y = x·e^{s}                           log-det  Σ s
 *                              (reverse log-det −Σ s: FrEIA returns +Σ s, a bug not copied)
 *   InvertibleSigmoid          y = σ(x)                              log-det  Σ log σ'(x)
 * Per-coordinate factors are precomputed at load; forward/inverse are one pass over the
 * tile with no scratch.  Math: the FrEIA reference (freia-modules.md §5).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../block.h"
#include "../emath.h"
#include "../kern.h"
#include "../loader.h"
#include "../safetensors.h"

/* Name of the tensor stored in string field `field` of the block object (for messages). */
/* True when the optional field is absent or JSON null. */
static bool field_absent(const cJSON *j, const char *field)
{
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(j, field);
    return f == NULL || cJSON_IsNull(f);
}

static size_t no_scratch(const struct blk *b, int rows)
{
    (void)b, (void)rows;
    return 0;
}

/* ==== ActNorm =========================================================================== */

/* Both formats as y = (x − pre)·mul + post, kept in each format's own evaluation order so
 * the float rounding matches FrEIA's:
 *   HEAD: pre = loc,  mul = e^{−log_scale}, post = 0       inverse x = y·e^{log_scale} + loc
 *   0.2:  pre = 0,    mul = e^{scale},      post = bias    inverse x = (y − bias)·e^{−scale} */
struct actnorm {
    bool legacy;
    const float *shift; /* d: loc (HEAD) or bias (0.2) */
    float *mul;         /* d: forward factor */
    float *div;         /* d: inverse factor (1/mul, computed as e^{−·}) */
    double logdet;      /* forward log-det */
    double max_mul, max_div; /* for the certificate */
};

static enum eng_status actnorm_load(struct blk *b, struct ldr *L, const cJSON *j)
{
    const int d = b->d;
    struct actnorm *p = ldr_alloc(L, sizeof(*p));
    if (!p)
        return ENG_ERR_NOMEM;
    const bool head = !field_absent(j, "log_scale") || !field_absent(j, "loc");
    const bool legacy = !field_absent(j, "scale") || !field_absent(j, "bias");
    if (head && legacy)
        return ldr_fail(L, ENG_ERR_MANIFEST,
                        "ActNorm has both HEAD fields (log_scale, loc) and PyPI-0.2 fields "
                        "(scale, bias); give one pair");
    if (!head && !legacy)
        return ldr_fail(L, ENG_ERR_MANIFEST,
                        "ActNorm needs fields log_scale and loc (FrEIA HEAD) or scale and "
                        "bias (PyPI 0.2)");
    p->legacy = legacy;

    /* is_initialized: FrEIA's 0-d bool buffer; an uninitialized ActNorm would initialize
     * itself from the first batch it sees, which a server cannot reproduce. */
    if (!field_absent(j, "is_initialized")) {
        const struct st_tensor *t;
        enum eng_status st = ldr_raw(L, j, "is_initialized", &t);
        if (st != ENG_OK)
            return st;
        if (t->numel != 1)
            return ldr_fail(L, ENG_ERR_TENSOR,
                            "tensor '%s' (field 'is_initialized') has %lld elements, expected 1",
                            ldr_tensor_name(j, "is_initialized"), (long long)t->numel);
        if (st_get(t, 0) == 0.0)
            return ldr_fail(L, ENG_ERR_TENSOR,
                            "tensor '%s' (field 'is_initialized') is false: this ActNorm was "
                            "never initialized by data (run one batch through it in PyTorch "
                            "before exporting)",
                            ldr_tensor_name(j, "is_initialized"));
    }

    const char *f_scale = legacy ? "scale" : "log_scale";
    const char *f_shift = legacy ? "bias" : "loc";
    const float *scale, *shift;
    enum eng_status st;
    /* FrEIA's (1, C[, 1...]): one value per channel, repeated over the S positions of a
     * (C, H, W) or (C, L) row; any shape with C elements (or d, one per coordinate). */
    const int C = b->shape[0], S = d / C;
    const struct st_tensor *raw;
    if ((st = ldr_raw(L, j, f_scale, &raw)) != ENG_OK)
        return st;
    const int per = raw->numel == C ? S : 1; /* coordinates per stored value */
    if ((st = ldr_tensor_numel(L, j, f_scale, true, d / per, &scale)) != ENG_OK ||
        (st = ldr_tensor_numel(L, j, f_shift, true, d / per, &shift)) != ENG_OK)
        return st;
    float *sh = ldr_alloc(L, sizeof(float) * d);
    p->mul = ldr_alloc(L, sizeof(float) * d);
    p->div = ldr_alloc(L, sizeof(float) * d);
    if (!p->mul || !p->div || !sh)
        return ENG_ERR_NOMEM;
    const float sign = legacy ? 1.0f : -1.0f; /* forward factor e^{sign·scale} */
    double sum = 0.0;
    for (int k = 0; k < d; k++) {
        const int v = k / per;
        p->mul[k] = em_expf(sign * scale[v]);
        p->div[k] = em_expf(-sign * scale[v]);
        sh[k] = shift[v];
        sum += (double)sign * (double)scale[v];
        p->max_mul = fmax(p->max_mul, (double)p->mul[k]);
        p->max_div = fmax(p->max_div, (double)p->div[k]);
    }
    p->shift = sh;
    p->logdet = sum;
    b->priv = p;
    return ENG_OK;
}

static void actnorm_forward(const struct blk *b, struct blk_io *io)
{
    const struct actnorm *p = b->priv;
    const int d = b->d;
    for (int i = 0; i < io->n; i++) {
        float *x = io->x + (size_t)i * d;
        if (p->legacy)
            for (int k = 0; k < d; k++)
                x[k] = x[k] * p->mul[k] + p->shift[k];
        else
            for (int k = 0; k < d; k++)
                x[k] = (x[k] - p->shift[k]) * p->mul[k];
        io->log_det[i] += p->logdet;
    }
}

static void actnorm_inverse(const struct blk *b, struct blk_io *io)
{
    const struct actnorm *p = b->priv;
    const int d = b->d;
    for (int i = 0; i < io->n; i++) {
        float *x = io->x + (size_t)i * d;
        if (p->legacy)
            for (int k = 0; k < d; k++)
                x[k] = (x[k] - p->shift[k]) * p->div[k];
        else
            for (int k = 0; k < d; k++)
                x[k] = x[k] * p->div[k] + p->shift[k];
        io->log_det[i] -= p->logdet;
    }
}

static void actnorm_certify(const struct blk *b, struct eng_block_cert *out)
{
    const struct actnorm *p = b->priv;
    out->lipschitz = p->max_mul;
    out->lipschitz_inverse = p->max_div;
    out->condition = p->max_mul * p->max_div;
    snprintf(out->reason, sizeof(out->reason), "elementwise affine map with positive scales "
             "(%s format)", p->legacy ? "PyPI 0.2" : "HEAD");
}

const struct blk_ops blk_actnorm_ops = {
    .type = "ActNorm",
    .load = actnorm_load,
    .scratch = no_scratch,
    .forward = actnorm_forward,
    .inverse = actnorm_inverse,
    .certify = actnorm_certify,
};

/* ==== LearnedElementwiseScaling ========================================================= */

struct elemscale {
    float *e_pos;  /* d: e^{s} */
    float *e_neg;  /* d: e^{−s} */
    double logdet; /* Σ s */
    double max_pos, max_neg; /* max e^{s}, max e^{−s} */
};

static enum eng_status elemscale_load(struct blk *b, struct ldr *L, const cJSON *j)
{
    const int d = b->d;
    struct elemscale *p = ldr_alloc(L, sizeof(*p));
    if (!p)
        return ENG_ERR_NOMEM;
    const float *s;
    enum eng_status st = ldr_tensor_numel(L, j, "s", true, d, &s); /* (1, d) in FrEIA */
    if (st != ENG_OK)
        return st;
    p->e_pos = ldr_alloc(L, sizeof(float) * d);
    p->e_neg = ldr_alloc(L, sizeof(float) * d);
    if (!p->e_pos || !p->e_neg)
        return ENG_ERR_NOMEM;
    double sum = 0.0;
    for (int k = 0; k < d; k++) {
        p->e_pos[k] = em_expf(s[k]);
        p->e_neg[k] = em_expf(-s[k]);
        sum += (double)s[k];
        p->max_pos = fmax(p->max_pos, (double)p->e_pos[k]);
        p->max_neg = fmax(p->max_neg, (double)p->e_neg[k]);
    }
    p->logdet = sum;
    b->priv = p;
    return ENG_OK;
}

static void elemscale_forward(const struct blk *b, struct blk_io *io)
{
    const struct elemscale *p = b->priv;
    const int d = b->d;
    for (int i = 0; i < io->n; i++) {
        float *x = io->x + (size_t)i * d;
        for (int k = 0; k < d; k++)
            x[k] *= p->e_pos[k];
        io->log_det[i] += p->logdet;
    }
}

static void elemscale_inverse(const struct blk *b, struct blk_io *io)
{
    const struct elemscale *p = b->priv;
    const int d = b->d;
    for (int i = 0; i < io->n; i++) {
        float *x = io->x + (size_t)i * d;
        for (int k = 0; k < d; k++)
            x[k] *= p->e_neg[k];
        io->log_det[i] -= p->logdet; /* −Σ s (FrEIA: +Σ s) */
    }
}

static void elemscale_certify(const struct blk *b, struct eng_block_cert *out)
{
    const struct elemscale *p = b->priv;
    out->lipschitz = p->max_pos;
    out->lipschitz_inverse = p->max_neg;
    out->condition = p->max_pos * p->max_neg;
    snprintf(out->reason, sizeof(out->reason), "elementwise scaling by e^s > 0");
}

const struct blk_ops blk_elemscale_ops = {
    .type = "LearnedElementwiseScaling",
    .load = elemscale_load,
    .scratch = no_scratch,
    .forward = elemscale_forward,
    .inverse = elemscale_inverse,
    .certify = elemscale_certify,
};

/* ==== InvertibleSigmoid ================================================================= */

static enum eng_status sigmoid_load(struct blk *b, struct ldr *L, const cJSON *j)
{
    (void)b, (void)L, (void)j;
    return ENG_OK;
}

/* y = σ(x); log σ'(x) = log σ(x) + log σ(−x) = −|x| − 2·log1p(e^{−|x|}), which stays finite
 * for any finite x (FrEIA's form reaches −inf at |x| ≈ 100 in float32).  In double. */
KERN_FMA_CLONES static void sigmoid_forward(const struct blk *b, struct blk_io *io)
{
    const int d = b->d;
    for (int i = 0; i < io->n; i++) {
        float *x = io->x + (size_t)i * d;
        double ld = 0.0;
        for (int k = 0; k < d; k++) {
            double v = x[k], a = fabs(v);
            double t = em_exp(-a); /* in (0, 1] */
            ld -= a + 2.0 * em_log1p(t);
            x[k] = (float)(v >= 0.0 ? 1.0 / (1.0 + t) : t / (1.0 + t));
        }
        io->log_det[i] += ld;
    }
}

/* x = log(y) − log1p(−y); log-det of the inverse = −log σ'(x) = −(log y + log1p(−y)).
 * y outside (0, 1) gives NaN/Inf, which the model layer reports as ENG_ERR_NUMERIC. */
KERN_FMA_CLONES static void sigmoid_inverse(const struct blk *b, struct blk_io *io)
{
    const int d = b->d;
    for (int i = 0; i < io->n; i++) {
        float *x = io->x + (size_t)i * d;
        double ld = 0.0;
        for (int k = 0; k < d; k++) {
            double y = x[k];
            double ly = em_log(y), l1y = em_log1p(-y);
            x[k] = (float)(ly - l1y);
            ld -= ly + l1y;
        }
        io->log_det[i] += ld;
    }
}

static void sigmoid_certify(const struct blk *b, struct eng_block_cert *out)
{
    (void)b;
    out->lipschitz = 0.25; /* max σ' */
    snprintf(out->reason, sizeof(out->reason),
             "strictly increasing sigmoid: inverse log(y) - log1p(-y) on (0, 1) only, with "
             "unbounded slope near 0 and 1");
}

const struct blk_ops blk_sigmoid_ops = {
    .type = "InvertibleSigmoid",
    .load = sigmoid_load,
    .scratch = no_scratch,
    .forward = sigmoid_forward,
    .inverse = sigmoid_inverse,
    .certify = sigmoid_certify,
};
