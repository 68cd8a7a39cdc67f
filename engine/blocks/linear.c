/*
 * linear.c — the volume-preserving and fixed linear blocks of FrEIA:
 *   PermuteRandom         y_i = x_{perm[i]} over the channels (dim 0 of the row's shape)
 *                                                                         log-det 0
 *   FixedLinearTransform  y = x·M_buf + b   (M_buf is FrEIA's buffer = Mᵀ) log-det log|det M|
 *   OrthogonalTransform   y = (x·W + b) ⊙ e^{ls}, ls = clamp·0.636·atan(scaling/clamp)
 *                                                                         log-det Σ ls
 *   HouseholderPerm       y = x·W, W = H(v_0)·…·H(v_{n−1}), H(v) = I − 2vvᵀ/‖v‖²  log-det 0
 * Every matrix the inverse needs (M_buf⁻¹, W built from the reflections) is computed at load
 * in double and rounded to float once; forward/inverse are one gemm per tile plus an
 * elementwise pass, working in io->scratch (rows × d floats).
 * Math: the FrEIA reference (freia-modules.md §5); manifest fields: docs/checkpoint-format.md.
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
#include "../safetensors.h"

/* Name of the tensor stored in string field `field` of the block object (for messages). */
/* True when the optional field is absent or JSON null. */
static bool field_absent(const cJSON *j, const char *field)
{
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(j, field);
    return f == NULL || cJSON_IsNull(f);
}

/* Round n doubles to a new float array owned by the model. */
static float *to_f32(struct ldr *L, const double *src, size_t n)
{
    float *dst = ldr_alloc(L, sizeof(float) * (n ? n : 1));
    if (dst)
        for (size_t i = 0; i < n; i++)
            dst[i] = (float)src[i];
    return dst;
}

/* Rows stride d: x[i] = scratch[i] (+ b) for a tile of n rows. */
static void copy_add_bias(int n, int d, const float *src, const float *b, float *dst)
{
    size_t nd = (size_t)n * d;
    if (!b) {
        memcpy(dst, src, sizeof(float) * nd);
        return;
    }
    for (int i = 0; i < n; i++) {
        const float *s = src + (size_t)i * d;
        float *o = dst + (size_t)i * d;
        for (int k = 0; k < d; k++)
            o[k] = s[k] + b[k];
    }
}

/* Largest singular value of a (rows × cols) double matrix into *out (an upper bound, not
 * an estimate); ENG_ERR_NOMEM with a message when its scratch cannot be allocated. */
static enum eng_status spectral_norm(struct ldr *L, int rows, int cols, const double *a,
                                     double *out)
{
    double *work = malloc(sizeof(double) * la_norm2_upper_work(rows, cols));
    if (!work)
        return ldr_fail(L, ENG_ERR_NOMEM, "out of memory computing a spectral norm");
    *out = la_norm2_upper(rows, cols, a, work);
    free(work);
    return ENG_OK;
}

static size_t scratch_nd(const struct blk *b, int rows)
{
    return (size_t)rows * (size_t)b->d;
}

/* ==== PermuteRandom ===================================================================== */

struct permute {
    const int32_t *perm; /* d: y_i = x_{perm[i]} */
};

static enum eng_status permute_load(struct blk *b, struct ldr *L, const cJSON *j)
{
    struct permute *p = ldr_alloc(L, sizeof(*p));
    if (!p)
        return ENG_ERR_NOMEM;
    /* FrEIA permutes dim 1: the C channels of a (C, H, W) or (C, L) row, each moving its
     * S positions along; expanded here to a permutation of the d coordinates.  A perm of d
     * elements permutes the coordinates themselves. */
    const struct st_tensor *raw;
    enum eng_status st = ldr_raw(L, j, "perm", &raw);
    if (st != ENG_OK)
        return st;
    const int C = raw->numel == b->d ? b->d : b->shape[0], S = b->d / C;
    const int32_t *pc;
    if ((st = ldr_perm(L, j, "perm", C, &pc)) != ENG_OK)
        return st;
    if (S == 1) {
        p->perm = pc;
    } else {
        int32_t *full = ldr_alloc(L, sizeof(int32_t) * (size_t)b->d);
        if (!full)
            return ENG_ERR_NOMEM;
        for (int c = 0; c < C; c++)
            for (int s = 0; s < S; s++)
                full[(size_t)c * S + s] = (int32_t)((size_t)pc[c] * S + s);
        p->perm = full;
    }
    b->priv = p;
    return ENG_OK;
}

static size_t permute_scratch(const struct blk *b, int rows)
{
    (void)rows;
    return (size_t)b->d; /* one row */
}

static void permute_forward(const struct blk *b, struct blk_io *io)
{
    const struct permute *p = b->priv;
    const int d = b->d;
    float *row = io->scratch; /* d */
    for (int i = 0; i < io->n; i++) {
        float *x = io->x + (size_t)i * d;
        memcpy(row, x, sizeof(float) * d);
        for (int k = 0; k < d; k++)
            x[k] = row[p->perm[k]];
    }
}

static void permute_inverse(const struct blk *b, struct blk_io *io)
{
    const struct permute *p = b->priv;
    const int d = b->d;
    float *row = io->scratch; /* d */
    for (int i = 0; i < io->n; i++) {
        float *x = io->x + (size_t)i * d;
        memcpy(row, x, sizeof(float) * d);
        for (int k = 0; k < d; k++)
            x[p->perm[k]] = row[k];
    }
}

static void permute_certify(const struct blk *b, struct eng_block_cert *out)
{
    out->lipschitz = out->lipschitz_inverse = out->condition = 1.0;
    snprintf(out->reason, sizeof(out->reason), "permutation of the %d coordinates", b->d);
}

const struct blk_ops blk_permute_ops = {
    .type = "PermuteRandom",
    .load = permute_load,
    .scratch = permute_scratch,
    .forward = permute_forward,
    .inverse = permute_inverse,
    .certify = permute_certify,
};

/* ==== FixedLinearTransform ============================================================= */

struct fixedlinear {
    const float *m;     /* d × d: FrEIA's buffer M (= Mᵀ of the math), y = x·m + b */
    const float *m_inv; /* d × d: m⁻¹, x = (y − b)·m_inv */
    const float *b;     /* d, or NULL */
    double logdet;      /* log|det m| */
    double norm, norm_inv; /* spectral norms of m and m⁻¹ (for the certificate) */
};

static enum eng_status fixedlinear_load(struct blk *b, struct ldr *L, const cJSON *j)
{
    const int d = b->d;
    struct fixedlinear *p = ldr_alloc(L, sizeof(*p));
    if (!p)
        return ENG_ERR_NOMEM;
    const double *m64, *inv;
    double logdet;
    enum eng_status st = ldr_invertible(L, j, "M", d, &m64, &inv, &logdet);
    if (st != ENG_OK)
        return st;
    size_t dd = (size_t)d * d;
    p->logdet = logdet;
    if ((st = spectral_norm(L, d, d, m64, &p->norm)) != ENG_OK ||
        (st = spectral_norm(L, d, d, inv, &p->norm_inv)) != ENG_OK)
        return st;
    p->m = to_f32(L, m64, dd);
    p->m_inv = to_f32(L, inv, dd);
    if (!p->m || !p->m_inv)
        return ENG_ERR_NOMEM;

    /* b: d elements ((1, d) in FrEIA), or absent.  FrEIA HEAD stores a 0-d 0 when the
     * module was built with b=None; a 0-d b is broadcast to every coordinate. */
    if (!field_absent(j, "b")) {
        const struct st_tensor *raw;
        if ((st = ldr_raw(L, j, "b", &raw)) != ENG_OK)
            return st;
        if (raw->ndim == 0 && d != 1) {
            const float *b0;
            if ((st = ldr_tensor_numel(L, j, "b", true, 1, &b0)) != ENG_OK)
                return st;
            if (b0[0] != 0.0f) {
                float *bb = ldr_alloc(L, sizeof(float) * d);
                if (!bb)
                    return ENG_ERR_NOMEM;
                for (int k = 0; k < d; k++)
                    bb[k] = b0[0];
                p->b = bb;
            }
        } else if ((st = ldr_tensor_numel(L, j, "b", true, d, &p->b)) != ENG_OK) {
            return st;
        }
    }
    b->priv = p;
    return ENG_OK;
}

static void fixedlinear_forward(const struct blk *b, struct blk_io *io)
{
    const struct fixedlinear *p = b->priv;
    const int d = b->d, n = io->n;
    /* scratch (n × d) = x (n × d) · m (d × d); x = scratch + b */
    kern_matmul(io->k, n, d, d, io->x, d, p->m, d, io->scratch, d);
    copy_add_bias(n, d, io->scratch, p->b, io->x);
    for (int i = 0; i < n; i++)
        io->log_det[i] += p->logdet;
}

static void fixedlinear_inverse(const struct blk *b, struct blk_io *io)
{
    const struct fixedlinear *p = b->priv;
    const int d = b->d, n = io->n;
    /* scratch = y − b; x (n × d) = scratch · m_inv (d × d) */
    float *u = io->scratch;
    if (p->b) {
        for (int i = 0; i < n; i++) {
            const float *y = io->x + (size_t)i * d;
            float *o = u + (size_t)i * d;
            for (int k = 0; k < d; k++)
                o[k] = y[k] - p->b[k];
        }
    } else {
        memcpy(u, io->x, sizeof(float) * (size_t)n * d);
    }
    kern_matmul(io->k, n, d, d, u, d, p->m_inv, d, io->x, d);
    for (int i = 0; i < n; i++)
        io->log_det[i] -= p->logdet;
}

static void fixedlinear_certify(const struct blk *b, struct eng_block_cert *out)
{
    const struct fixedlinear *p = b->priv;
    out->lipschitz = p->norm;
    out->lipschitz_inverse = p->norm_inv;
    out->condition = p->norm * p->norm_inv;
    snprintf(out->reason, sizeof(out->reason),
             "full-rank M inverted at load in double (log|det M| = %.6g, condition number %.3g)",
             p->logdet, out->condition);
}

const struct blk_ops blk_fixedlinear_ops = {
    .type = "FixedLinearTransform",
    .load = fixedlinear_load,
    .scratch = scratch_nd,
    .forward = fixedlinear_forward,
    .inverse = fixedlinear_inverse,
    .certify = fixedlinear_certify,
};

/* ==== OrthogonalTransform =============================================================== */

struct orthogonal {
    const float *w;     /* d × d: y = (x·w + b) ⊙ e^{ls} */
    const float *bias;  /* d */
    float *e_pos;       /* d: e^{ls} */
    float *e_neg;       /* d: e^{−ls} */
    double logdet;      /* Σ ls */
    double norm;        /* ‖W‖₂ (the inverse uses Wᵀ, same norm) */
    double max_pos, max_neg; /* max e^{ls}, max e^{−ls} */
    double defect;      /* max |WᵀW − I|: how far W is from orthogonal */
};

static enum eng_status orthogonal_load(struct blk *b, struct ldr *L, const cJSON *j)
{
    const int d = b->d;
    struct orthogonal *p = ldr_alloc(L, sizeof(*p));
    if (!p)
        return ENG_ERR_NOMEM;
    const int64_t shape[2] = {d, d};
    const float *scaling;
    double clamp;
    enum eng_status st;
    if ((st = ldr_tensor(L, j, "weights", true, 2, shape, &p->w)) != ENG_OK ||
        (st = ldr_tensor_numel(L, j, "bias", true, d, &p->bias)) != ENG_OK ||
        (st = ldr_tensor_numel(L, j, "scaling", true, d, &scaling)) != ENG_OK ||
        (st = ldr_num(L, j, "clamp", false, 5.0, &clamp)) != ENG_OK)
        return st;
    if (!(clamp > 0.0) || !isfinite(clamp))
        return ldr_fail(L, ENG_ERR_MANIFEST, "field 'clamp' must be a finite number > 0, got %g",
                        clamp);
    p->e_pos = ldr_alloc(L, sizeof(float) * d);
    p->e_neg = ldr_alloc(L, sizeof(float) * d);
    if (!p->e_pos || !p->e_neg)
        return ENG_ERR_NOMEM;
    /* FrEIA: self.clamp * 0.636 * torch.atan(self.scaling / self.clamp), i.e. the Python
     * double clamp·0.636 rounded to float times a float32 atan of a float32 quotient. */
    const float fc = (float)clamp, k636 = (float)(clamp * 0.636);
    double sum = 0.0;
    for (int k = 0; k < d; k++) {
        float ls = k636 * em_atanf(scaling[k] / fc);
        p->e_pos[k] = em_expf(ls);
        p->e_neg[k] = em_expf(-ls);
        sum += (double)ls;
        p->max_pos = fmax(p->max_pos, (double)p->e_pos[k]);
        p->max_neg = fmax(p->max_neg, (double)p->e_neg[k]);
    }
    p->logdet = sum;

    /* For the certificate: ‖W‖₂ and the orthogonality defect max |WᵀW − I|, in double.
     * FrEIA re-orthogonalizes W only every 256 training steps, so a saved W may drift. */
    size_t dd = (size_t)d * d;
    double *w64 = malloc(sizeof(double) * dd);
    if (!w64)
        return ldr_fail(L, ENG_ERR_NOMEM, "out of memory checking tensor '%s'",
                        ldr_tensor_name(j, "weights"));
    for (size_t i = 0; i < dd; i++)
        w64[i] = p->w[i];
    if (spectral_norm(L, d, d, w64, &p->norm) != ENG_OK) {
        free(w64);
        return ENG_ERR_NOMEM;
    }
    for (int a = 0; a < d; a++)
        for (int c = a; c < d; c++) {
            double g = 0.0;
            for (int k = 0; k < d; k++)
                g += w64[(size_t)k * d + a] * w64[(size_t)k * d + c];
            p->defect = fmax(p->defect, fabs(g - (a == c ? 1.0 : 0.0)));
        }
    free(w64);
    b->priv = p;
    return ENG_OK;
}

static void orthogonal_forward(const struct blk *b, struct blk_io *io)
{
    const struct orthogonal *p = b->priv;
    const int d = b->d, n = io->n;
    /* scratch (n × d) = x · w; x = (scratch + bias) ⊙ e^{ls} */
    kern_matmul(io->k, n, d, d, io->x, d, p->w, d, io->scratch, d);
    for (int i = 0; i < n; i++) {
        const float *s = io->scratch + (size_t)i * d;
        float *x = io->x + (size_t)i * d;
        for (int k = 0; k < d; k++)
            x[k] = (s[k] + p->bias[k]) * p->e_pos[k];
        io->log_det[i] += p->logdet;
    }
}

static void orthogonal_inverse(const struct blk *b, struct blk_io *io)
{
    const struct orthogonal *p = b->priv;
    const int d = b->d, n = io->n;
    /* scratch = y ⊙ e^{−ls} − bias; x (n × d) = scratch · wᵀ */
    for (int i = 0; i < n; i++) {
        const float *y = io->x + (size_t)i * d;
        float *u = io->scratch + (size_t)i * d;
        for (int k = 0; k < d; k++)
            u[k] = y[k] * p->e_neg[k] - p->bias[k];
        io->log_det[i] -= p->logdet;
    }
    kern_linear_w(io->k, n, d, d, io->scratch, d, p->w, d, io->x, d);
}

static void orthogonal_certify(const struct blk *b, struct eng_block_cert *out)
{
    const struct orthogonal *p = b->priv;
    out->lipschitz = p->norm * p->max_pos;
    out->lipschitz_inverse = p->norm * p->max_neg;
    out->condition = out->lipschitz * out->lipschitz_inverse;
    if (p->defect <= 1e-4)
        snprintf(out->reason, sizeof(out->reason),
                 "orthogonal W (max |W^T W - I| = %.1e) and positive scaling: inverse "
                 "(y e^-ls - b) W^T", p->defect);
    else
        snprintf(out->reason, sizeof(out->reason),
                 "W is not orthogonal (max |W^T W - I| = %.2g): the inverse through W^T and "
                 "the log-det sum(ls), which assumes |det W| = 1, are approximate (as in FrEIA)",
                 p->defect);
}

const struct blk_ops blk_orthogonal_ops = {
    .type = "OrthogonalTransform",
    .load = orthogonal_load,
    .scratch = scratch_nd,
    .forward = orthogonal_forward,
    .inverse = orthogonal_inverse,
    .certify = orthogonal_certify,
};

/* ==== HouseholderPerm =================================================================== */

struct householder {
    const float *w; /* d × d: W = H(v_0)·…·H(v_{n−1}); y = x·W, x = y·Wᵀ */
    int n_refl;
};

static enum eng_status householder_load(struct blk *b, struct ldr *L, const cJSON *j)
{
    const int d = b->d;
    struct householder *p = ldr_alloc(L, sizeof(*p));
    if (!p)
        return ENG_ERR_NOMEM;
    /* Vs is (n, d) with any n >= 1: the loader checks the shape, the raw view gives n. */
    const int64_t shape[2] = {-1, d};
    const double *vs;
    const struct st_tensor *raw;
    enum eng_status st;
    if ((st = ldr_tensor_f64(L, j, "Vs", true, 2, shape, &vs)) != ENG_OK ||
        (st = ldr_raw(L, j, "Vs", &raw)) != ENG_OK)
        return st;
    if (raw->shape[0] < 1 || raw->shape[0] > 65536)
        return ldr_fail(L, ENG_ERR_TENSOR,
                        "tensor '%s' (field 'Vs') has %lld reflections, expected 1 to 65536",
                        ldr_tensor_name(j, "Vs"), (long long)raw->shape[0]);
    const int nr = (int)raw->shape[0];

    /* W ← I; for each k: W ← W·H(v_k) = W − (2/‖v‖²)(W v) vᵀ.  In double. */
    size_t dd = (size_t)d * d;
    double *w = malloc(sizeof(double) * (dd + (size_t)d));
    if (!w)
        return ldr_fail(L, ENG_ERR_NOMEM, "out of memory building W from tensor '%s'",
                        ldr_tensor_name(j, "Vs"));
    double *wv = w + dd;
    memset(w, 0, sizeof(double) * dd);
    for (int i = 0; i < d; i++)
        w[(size_t)i * d + i] = 1.0;
    for (int r = 0; r < nr; r++) {
        const double *v = vs + (size_t)r * d;
        double vv = 0.0;
        for (int k = 0; k < d; k++)
            vv += v[k] * v[k];
        if (!(vv > 0.0) || !isfinite(vv)) {
            free(w);
            return ldr_fail(L, ENG_ERR_TENSOR,
                            "tensor '%s' (field 'Vs'): reflection vector %d has zero norm",
                            ldr_tensor_name(j, "Vs"), r);
        }
        for (int i = 0; i < d; i++) {
            double s = 0.0;
            for (int k = 0; k < d; k++)
                s += w[(size_t)i * d + k] * v[k];
            wv[i] = 2.0 * s / vv;
        }
        for (int i = 0; i < d; i++)
            for (int k = 0; k < d; k++)
                w[(size_t)i * d + k] -= wv[i] * v[k];
    }
    p->w = to_f32(L, w, dd);
    p->n_refl = nr;
    free(w);
    if (!p->w)
        return ENG_ERR_NOMEM;
    b->priv = p;
    return ENG_OK;
}

static void householder_forward(const struct blk *b, struct blk_io *io)
{
    const struct householder *p = b->priv;
    const int d = b->d, n = io->n;
    /* scratch = x; x (n × d) = scratch · W (d × d); log-det 0 */
    memcpy(io->scratch, io->x, sizeof(float) * (size_t)n * d);
    kern_matmul(io->k, n, d, d, io->scratch, d, p->w, d, io->x, d);
}

static void householder_inverse(const struct blk *b, struct blk_io *io)
{
    const struct householder *p = b->priv;
    const int d = b->d, n = io->n;
    /* scratch = y; x (n × d) = scratch · Wᵀ */
    memcpy(io->scratch, io->x, sizeof(float) * (size_t)n * d);
    kern_linear_w(io->k, n, d, d, io->scratch, d, p->w, d, io->x, d);
}

static void householder_certify(const struct blk *b, struct eng_block_cert *out)
{
    const struct householder *p = b->priv;
    out->lipschitz = out->lipschitz_inverse = out->condition = 1.0;
    snprintf(out->reason, sizeof(out->reason),
             "product of %d Householder reflection%s: orthogonal, inverse W^T", p->n_refl,
             p->n_refl == 1 ? "" : "s");
}

const struct blk_ops blk_householder_ops = {
    .type = "HouseholderPerm",
    .load = householder_load,
    .scratch = scratch_nd,
    .forward = householder_forward,
    .inverse = householder_inverse,
    .certify = householder_certify,
};
