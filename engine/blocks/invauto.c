/*
 * invauto.c — FrEIA's invertible-autoencoder layers (Teng et al. 2018, "Invertible
 * Autoencoder for domain adaptation"; FrEIA's inv_auto_layers.py):
 *   InvAutoFC           y = x·Wᵀ + b;  "inverse" x = (y − b)·W            log-det 0
 *   InvAutoConv2D       y = conv2d(x, W, padding p) + b (per channel);
 *                       "inverse" x = conv_transpose2d(y − b, W, padding p)  log-det 0
 *   InvAutoAct          y = x·e^{α_c·sign(x)}                            log-det Σ α_c·sign(x)
 *   InvAutoActTwoSided  y = x·e^{ℓ}, ℓ = α⁺_c + ½(α⁻_c − α⁺_c)(1 − sign x)  log-det Σ ℓ
 * α is one value per channel (dim 0 of the row's shape), repeated over its positions.
 *
 * The two linear layers are FrEIA's as written: their inverse is the transpose, which
 * inverts the forward map only when W is orthogonal (the training objective drives it
 * there), and FrEIA reports a log-det of 0 in both directions; the engine does the same
 * and says so in the certificate (InvAutoFC measures max |WᵀW − I| at load).  The two
 * activations are exact bijections with exact log-dets (sign(y) = sign(x), so the inverse
 * picks the same slope).
 * Scratch: InvAutoFC one tile (rows × d); InvAutoConv2D one row's im2col matrix plus one
 * row.  Nothing is allocated per call.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../block.h"
#include "../emath.h"
#include "../kern.h"
#include "../loader.h"
#include "../safetensors.h"

static size_t no_scratch(const struct blk *b, int rows)
{
    (void)b, (void)rows;
    return 0;
}

/* ==== InvAutoFC ========================================================================= */

struct invfc {
    const float *w;     /* d × d, torch Linear layout (out × in) */
    const float *bias;  /* d */
    double defect;      /* max |WᵀW − I| */
};

static enum eng_status invfc_load(struct blk *b, struct ldr *L, const cJSON *j)
{
    const int d = b->d;
    if (b->rank != 1)
        return ldr_fail(L, ENG_ERR_MANIFEST,
                        "InvAutoFC works on flat (1-D) rows, but its input has rank %d "
                        "(FrEIA refuses it too; flatten first)", b->rank);
    struct invfc *p = ldr_alloc(L, sizeof(*p));
    if (!p)
        return ENG_ERR_NOMEM;
    const int64_t shape[2] = {d, d};
    enum eng_status st;
    /* dims_out != d is not a bijection of R^d: the (d_out, d) weight is refused by shape. */
    if ((st = ldr_tensor(L, j, "weights", true, 2, shape, &p->w)) != ENG_OK ||
        (st = ldr_tensor_numel(L, j, "bias", true, d, &p->bias)) != ENG_OK)
        return st;
    for (int a = 0; a < d; a++)
        for (int c = a; c < d; c++) {
            double g = 0.0;
            for (int k = 0; k < d; k++)
                g += (double)p->w[(size_t)k * d + a] * (double)p->w[(size_t)k * d + c];
            p->defect = fmax(p->defect, fabs(g - (a == c ? 1.0 : 0.0)));
        }
    b->priv = p;
    return ENG_OK;
}

static size_t invfc_scratch(const struct blk *b, int rows)
{
    return (size_t)rows * (size_t)b->d;
}

static void invfc_forward(const struct blk *b, struct blk_io *io)
{
    const struct invfc *p = b->priv;
    const int d = b->d, n = io->n;
    /* scratch = x Wᵀ; x = scratch + b */
    kern_linear_w(io->k, n, d, d, io->x, d, p->w, d, io->scratch, d);
    for (int i = 0; i < n; i++) {
        const float *s = io->scratch + (size_t)i * d;
        float *x = io->x + (size_t)i * d;
        for (int k = 0; k < d; k++)
            x[k] = s[k] + p->bias[k];
    }
}

static void invfc_inverse(const struct blk *b, struct blk_io *io)
{
    const struct invfc *p = b->priv;
    const int d = b->d, n = io->n;
    /* scratch = y − b; x = scratch · W */
    for (int i = 0; i < n; i++) {
        const float *y = io->x + (size_t)i * d;
        float *u = io->scratch + (size_t)i * d;
        for (int k = 0; k < d; k++)
            u[k] = y[k] - p->bias[k];
    }
    kern_matmul(io->k, n, d, d, io->scratch, d, p->w, d, io->x, d);
}

/* Shared by the two linear layers: exact only for an orthogonal operator. */
static void invauto_linear_cert(struct eng_block_cert *out, const char *what, double defect)
{
    out->invertible = defect <= 1e-4;
    out->guarantee = out->invertible ? ENG_GUARANTEE_ANALYTIC : ENG_GUARANTEE_NONE;
    if (isnan(defect))
        snprintf(out->reason, sizeof(out->reason),
                 "%s: the inverse is the transposed map, exact only for an orthogonal "
                 "operator (not checked), and the log-det is reported as 0 (as FrEIA)", what);
    else
        snprintf(out->reason, sizeof(out->reason),
                 "%s: the inverse is W^T, exact only for an orthogonal W (max |W^T W - I| = "
                 "%.2g), and the log-det is reported as 0 (as FrEIA)", what, defect);
}

static void invfc_certify(const struct blk *b, struct eng_block_cert *out)
{
    const struct invfc *p = b->priv;
    invauto_linear_cert(out, "invertible-autoencoder layer", p->defect);
}

const struct blk_ops blk_invautofc_ops = {
    .type = "InvAutoFC",
    .load = invfc_load,
    .scratch = invfc_scratch,
    .forward = invfc_forward,
    .inverse = invfc_inverse,
    .certify = invfc_certify,
};

/* ==== InvAutoConv2D ===================================================================== */

struct invconv {
    int ci, co;         /* channels in, out */
    int h, w;           /* input size */
    int ho, wo;         /* output size */
    int kh, kw, ph, pw; /* kernel, padding */
    int K;              /* ci·kh·kw */
    const float *wt;    /* co × K: the kernel (torch layout co, ci, kh, kw) */
    float *wtt;         /* K × co: its transpose, for the transposed convolution */
    const float *bias;  /* co */
};

static enum eng_status invconv_load(struct blk *b, struct ldr *L, const cJSON *j)
{
    enum eng_status st;
    if (b->rank != 3)
        return ldr_fail(L, ENG_ERR_MANIFEST,
                        "InvAutoConv2D needs an image input of shape (C, H, W), but its input "
                        "has rank %d", b->rank);
    struct invconv *p = ldr_alloc(L, sizeof(*p));
    if (!p)
        return ENG_ERR_NOMEM;
    p->ci = b->shape[0], p->h = b->shape[1], p->w = b->shape[2];
    const struct st_tensor *raw;
    if ((st = ldr_raw(L, j, "weight", &raw)) != ENG_OK)
        return st;
    if (raw->ndim != 4 || raw->shape[1] != p->ci || raw->shape[0] < 1 || raw->shape[2] < 1 ||
        raw->shape[3] < 1 || raw->shape[0] > 65536 || raw->shape[2] > 64 || raw->shape[3] > 64)
        return ldr_fail(L, ENG_ERR_TENSOR,
                        "tensor '%s' (field 'weight') must be (C_out, %d, kh, kw), the "
                        "convolution kernel for %d input channels", ldr_tensor_name(j, "weight"),
                        p->ci, p->ci);
    p->co = (int)raw->shape[0], p->kh = (int)raw->shape[2], p->kw = (int)raw->shape[3];
    /* padding: an integer or [ph, pw] (FrEIA's default 1) */
    const cJSON *pj = cJSON_GetObjectItemCaseSensitive(j, "padding");
    p->ph = p->pw = 1;
    if (pj && !cJSON_IsNull(pj)) {
        if (cJSON_IsNumber(pj) && pj->valuedouble == (int)pj->valuedouble && pj->valuedouble >= 0 &&
            pj->valuedouble <= 64) {
            p->ph = p->pw = (int)pj->valuedouble;
        } else if (cJSON_IsArray(pj) && cJSON_GetArraySize(pj) == 2 &&
                   cJSON_IsNumber(cJSON_GetArrayItem(pj, 0)) &&
                   cJSON_IsNumber(cJSON_GetArrayItem(pj, 1))) {
            double a = cJSON_GetArrayItem(pj, 0)->valuedouble;
            double c = cJSON_GetArrayItem(pj, 1)->valuedouble;
            if (a != (int)a || c != (int)c || a < 0 || c < 0 || a > 64 || c > 64)
                return ldr_fail(L, ENG_ERR_MANIFEST,
                                "field 'padding' must be an integer or [ph, pw] in 0..64");
            p->ph = (int)a, p->pw = (int)c;
        } else {
            return ldr_fail(L, ENG_ERR_MANIFEST,
                            "field 'padding' must be an integer or [ph, pw] in 0..64");
        }
    }
    p->ho = p->h + 2 * p->ph - p->kh + 1;
    p->wo = p->w + 2 * p->pw - p->kw + 1;
    if (p->ho < 1 || p->wo < 1 || (long long)p->co * p->ho * p->wo != b->d)
        return ldr_fail(L, ENG_ERR_MANIFEST,
                        "InvAutoConv2D maps its input (%d, %d, %d) to (%d, %d, %d) with kernel "
                        "%d x %d and padding (%d, %d): the output must have the same number of "
                        "elements (%d) to be served as a bijection", p->ci, p->h, p->w, p->co,
                        p->ho, p->wo, p->kh, p->kw, p->ph, p->pw, b->d);
    p->K = p->ci * p->kh * p->kw;
    const int64_t wshape[4] = {p->co, p->ci, p->kh, p->kw};
    if ((st = ldr_tensor(L, j, "weight", true, 4, wshape, &p->wt)) != ENG_OK ||
        (st = ldr_tensor_numel(L, j, "bias", true, p->co, &p->bias)) != ENG_OK)
        return st;
    p->wtt = ldr_alloc(L, sizeof(float) * (size_t)p->K * p->co);
    if (!p->wtt)
        return ENG_ERR_NOMEM;
    for (int o = 0; o < p->co; o++)
        for (int k = 0; k < p->K; k++)
            p->wtt[(size_t)k * p->co + o] = p->wt[(size_t)o * p->K + k];
    b->out_rank = 3;
    b->out_shape[0] = p->co, b->out_shape[1] = p->ho, b->out_shape[2] = p->wo;
    b->priv = p;
    return ENG_OK;
}

static size_t invconv_scratch(const struct blk *b, int rows)
{
    const struct invconv *p = b->priv;
    (void)rows;
    return (size_t)p->K * p->ho * p->wo + (size_t)b->d;
}

static void invconv_forward(const struct blk *b, struct blk_io *io)
{
    const struct invconv *p = b->priv;
    const int So = p->ho * p->wo;
    float *cols = io->scratch, *tmp = cols + (size_t)p->K * So;
    for (int r = 0; r < io->n; r++) {
        float *x = io->x + (size_t)r * b->d;
        /* im2col: cols[(c, ky, kx), (oy, ox)] = x[c, oy + ky − ph, ox + kx − pw] or 0 */
        for (int c = 0; c < p->ci; c++)
            for (int ky = 0; ky < p->kh; ky++)
                for (int kx = 0; kx < p->kw; kx++) {
                    float *row = cols + ((size_t)(c * p->kh + ky) * p->kw + kx) * So;
                    for (int oy = 0; oy < p->ho; oy++) {
                        int y = oy + ky - p->ph;
                        for (int ox = 0; ox < p->wo; ox++) {
                            int xx = ox + kx - p->pw;
                            row[oy * p->wo + ox] = (y >= 0 && y < p->h && xx >= 0 && xx < p->w)
                                                       ? x[((size_t)c * p->h + y) * p->w + xx]
                                                       : 0.0f;
                        }
                    }
                }
        kern_matmul(io->k, p->co, So, p->K, p->wt, p->K, cols, So, tmp, So);
        for (int o = 0; o < p->co; o++)
            for (int s = 0; s < So; s++)
                x[(size_t)o * So + s] = tmp[(size_t)o * So + s] + p->bias[o];
    }
}

static void invconv_inverse(const struct blk *b, struct blk_io *io)
{
    const struct invconv *p = b->priv;
    const int So = p->ho * p->wo;
    float *cols = io->scratch, *tmp = cols + (size_t)p->K * So;
    for (int r = 0; r < io->n; r++) {
        float *x = io->x + (size_t)r * b->d;
        for (int o = 0; o < p->co; o++)
            for (int s = 0; s < So; s++)
                tmp[(size_t)o * So + s] = x[(size_t)o * So + s] - p->bias[o];
        /* cols (K × So) = Wᵀ (K × co) · (y − b) (co × So), then col2im into x */
        kern_matmul(io->k, p->K, So, p->co, p->wtt, p->co, tmp, So, cols, So);
        memset(x, 0, sizeof(float) * (size_t)b->d);
        for (int c = 0; c < p->ci; c++)
            for (int ky = 0; ky < p->kh; ky++)
                for (int kx = 0; kx < p->kw; kx++) {
                    const float *row = cols + ((size_t)(c * p->kh + ky) * p->kw + kx) * So;
                    for (int oy = 0; oy < p->ho; oy++) {
                        int y = oy + ky - p->ph;
                        if (y < 0 || y >= p->h)
                            continue;
                        for (int ox = 0; ox < p->wo; ox++) {
                            int xx = ox + kx - p->pw;
                            if (xx >= 0 && xx < p->w)
                                x[((size_t)c * p->h + y) * p->w + xx] += row[oy * p->wo + ox];
                        }
                    }
                }
    }
}

static void invconv_certify(const struct blk *b, struct eng_block_cert *out)
{
    (void)b;
    invauto_linear_cert(out, "convolutional invertible-autoencoder layer", NAN);
}

const struct blk_ops blk_invautoconv_ops = {
    .type = "InvAutoConv2D",
    .load = invconv_load,
    .scratch = invconv_scratch,
    .forward = invconv_forward,
    .inverse = invconv_inverse,
    .certify = invconv_certify,
};

/* ==== InvAutoAct / InvAutoActTwoSided =================================================== */

/* Per coordinate (channel values repeated over positions): slopes and log-slopes for
 * x > 0, x < 0 and x = 0. */
struct invact {
    float *pos, *neg;       /* d: e^{ℓ+}, e^{ℓ−} */
    float *ipos, *ineg;     /* d: e^{−ℓ+}, e^{−ℓ−} */
    double *lpos, *lneg, *lzero; /* d: ℓ+, ℓ−, ℓ at 0 */
    double max_slope, min_slope;
    bool two_sided;
};

/* One value per channel (FrEIA's (1, C[, 1, 1])) expanded to the d coordinates. */
static enum eng_status per_channel(struct blk *b, struct ldr *L, const cJSON *j,
                                   const char *field, const float **out)
{
    const int C = b->shape[0];
    return ldr_tensor_numel(L, j, field, true, C, out);
}

static enum eng_status invact_load_common(struct blk *b, struct ldr *L, const cJSON *j,
                                          bool two_sided)
{
    const int d = b->d, C = b->shape[0], S = d / C;
    struct invact *p = ldr_alloc(L, sizeof(*p));
    if (!p)
        return ENG_ERR_NOMEM;
    p->two_sided = two_sided;
    const float *ap, *an;
    enum eng_status st;
    if (two_sided) {
        if ((st = per_channel(b, L, j, "alpha_pos", &ap)) != ENG_OK ||
            (st = per_channel(b, L, j, "alpha_neg", &an)) != ENG_OK)
            return st;
    } else {
        if ((st = per_channel(b, L, j, "alpha", &ap)) != ENG_OK)
            return st;
        an = NULL;
    }
    size_t nd = (size_t)d;
    p->pos = ldr_alloc(L, sizeof(float) * nd), p->neg = ldr_alloc(L, sizeof(float) * nd);
    p->ipos = ldr_alloc(L, sizeof(float) * nd), p->ineg = ldr_alloc(L, sizeof(float) * nd);
    p->lpos = ldr_alloc(L, sizeof(double) * nd), p->lneg = ldr_alloc(L, sizeof(double) * nd);
    p->lzero = ldr_alloc(L, sizeof(double) * nd);
    if (!p->pos || !p->neg || !p->ipos || !p->ineg || !p->lpos || !p->lneg || !p->lzero)
        return ENG_ERR_NOMEM;
    p->max_slope = 0.0, p->min_slope = INFINITY;
    for (int c = 0; c < C; c++) {
        /* FrEIA: one-sided ℓ = α·sign(x); two-sided ℓ = α⁺ + 0.5·(α⁻ − α⁺)·(1 − sign(x)),
         * in float: at x > 0 exactly α⁺, at x < 0 α⁺ + (α⁻ − α⁺), at 0 the midpoint. */
        float lp = ap[c];
        float ln = two_sided ? ap[c] + 0.5f * (an[c] - ap[c]) * 2.0f : -ap[c];
        float lz = two_sided ? ap[c] + 0.5f * (an[c] - ap[c]) * 1.0f : 0.0f;
        for (int s = 0; s < S; s++) {
            size_t k = (size_t)c * S + s;
            p->pos[k] = em_expf(lp), p->neg[k] = em_expf(ln);
            p->ipos[k] = em_expf(-lp), p->ineg[k] = em_expf(-ln);
            p->lpos[k] = lp, p->lneg[k] = ln, p->lzero[k] = lz;
        }
        p->max_slope = fmax(p->max_slope, fmax(em_exp(lp), em_exp(ln)));
        p->min_slope = fmin(p->min_slope, fmin(em_exp(lp), em_exp(ln)));
    }
    b->priv = p;
    return ENG_OK;
}

static enum eng_status invact_load(struct blk *b, struct ldr *L, const cJSON *j)
{
    return invact_load_common(b, L, j, false);
}

static enum eng_status invact2_load(struct blk *b, struct ldr *L, const cJSON *j)
{
    return invact_load_common(b, L, j, true);
}

/* sign(y) = sign(x), so both directions choose the slope from the sign of their input. */
static void invact_run(const struct blk *b, struct blk_io *io, bool inv)
{
    const struct invact *p = b->priv;
    const int d = b->d;
    const float *fp = inv ? p->ipos : p->pos, *fn = inv ? p->ineg : p->neg;
    const double sg = inv ? -1.0 : 1.0;
    for (int i = 0; i < io->n; i++) {
        float *x = io->x + (size_t)i * d;
        double ld = 0.0;
        for (int k = 0; k < d; k++) {
            if (x[k] > 0.0f) {
                x[k] *= fp[k];
                ld += p->lpos[k];
            } else if (x[k] < 0.0f) {
                x[k] *= fn[k];
                ld += p->lneg[k];
            } else {
                ld += p->lzero[k];
            }
        }
        io->log_det[i] += sg * ld;
    }
}

static void invact_forward(const struct blk *b, struct blk_io *io)
{
    invact_run(b, io, false);
}

static void invact_inverse(const struct blk *b, struct blk_io *io)
{
    invact_run(b, io, true);
}

static void invact_certify(const struct blk *b, struct eng_block_cert *out)
{
    const struct invact *p = b->priv;
    out->lipschitz = p->max_slope;
    out->lipschitz_inverse = 1.0 / p->min_slope;
    out->condition = p->max_slope / p->min_slope;
    snprintf(out->reason, sizeof(out->reason),
             "%s leaky activation with positive slopes in [%.3g, %.3g]: sign-preserving, "
             "inverse by the reciprocal slopes",
             p->two_sided ? "two-sided" : "symmetric", p->min_slope, p->max_slope);
}

const struct blk_ops blk_invautoact_ops = {
    .type = "InvAutoAct",
    .load = invact_load,
    .scratch = no_scratch,
    .forward = invact_forward,
    .inverse = invact_inverse,
    .certify = invact_certify,
};

const struct blk_ops blk_invautoact2_ops = {
    .type = "InvAutoActTwoSided",
    .load = invact2_load,
    .scratch = no_scratch,
    .forward = invact_forward,
    .inverse = invact_inverse,
    .certify = invact_certify,
};
