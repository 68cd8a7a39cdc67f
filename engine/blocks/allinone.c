/*
 * allinone.c — FrEIA's AllInOneBlock (reference: freia-modules.md section 2): an affine
 * coupling with a soft clamp, a global affine scaling ("ActNorm") and a permutation, in
 * one block.
 *
 * Row x (d) splits into the passive x1 = x[0, n1) and the active x2 = x[n1, d), with
 * n1 = d - floor(d/2) (FrEIA's ceiling split; "split" may override it).  Forward:
 *     [reverse_permutation] x <- P^-1 x
 *     a  = 0.1 * subnet([x1, c])                         (n x 2 n2; the fixed 0.1 factor)
 *     s  = alpha * tanh(a[:, :n2] / alpha)   ("head", FrEIA >= 2023-08)
 *        | alpha * tanh(a[:, :n2])           ("legacy", PyPI 0.2)
 *     [gin_block] s <- s - mean(s)
 *     t  = a[:, n2:]
 *     u  = [x1, x2 * exp(s) + t]
 *     v  = u * g + offset,  g = Psi(global_scale)       (g = 1 with gin_block)
 *     y  = P v
 *     log-det = sum s + sum log g                       (sum s only with gin_block)
 * and the inverse undoes the steps in reverse order (v = P^-1 y, u = (v - offset) / g,
 * x2 = (u2 - t) exp(-s), [reverse_permutation] x = P x).
 *
 * P is a hard permutation (y_i = v_perm[i], P^-1: v_i = y_perm_inv[i]) or a matrix
 * (soft: y = W v with FrEIA's w_perm, P^-1 applied with the stored w_perm_inv ~ W^T;
 * householder: W = w_0 * prod_k (I - 2 v_k v_k^T / |v_k|^2), built at load in double,
 * P^-1 = W^T).  In row-major tiles "y = W v per sample" is Y = V W^T: kern_linear_w.
 *
 * On (C, H, W) / (C, L) rows everything is per channel, as FrEIA does it for images: the
 * split is n1 = C - floor(C/2) channels (n1 * positions flat values), global_scale and
 * global_offset are (1, C, 1, 1) (one value per channel, spread over its positions), the
 * hard permutation permutes channels and a permutation matrix is C x C, applied at every
 * position (FrEIA's 1x1 convolution); the log-det of the global scale counts every
 * position.  The subnet is convolutional (coupling.h, cpl_subnet).
 *
 * Psi: SOFTPLUS 0.1 * softplus_{beta 0.5}(a) with torch's threshold (0.5 a > 20 -> the
 * softplus returns a, so Psi = 0.1 a exactly); SIGMOID 10 sigmoid(a - 2); EXP e^a.
 * Computed once at load in float, as torch does; sum log g in double.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "coupling.h"
#include "../la.h"
#include "../block.h"
#include "../emath.h"
#include "../kern.h"
#include "../loader.h"
#include "../safetensors.h"
#include "../subnet.h"

enum aio_perm { PERM_HARD = 0, PERM_SOFT, PERM_HOUSEHOLDER };
enum aio_gtype { G_SOFTPLUS = 0, G_SIGMOID, G_EXP };

struct aio_priv {
    int n1, n2;                 /* passive and active widths, n1 + n2 = d */
    int C, P;                   /* channels and positions per channel (P = 1, C = d on
                                   vectors); permutation matrices are C x C */
    float alpha;                /* affine_clamping */
    float a_div;                /* alpha ("head") or 1 ("legacy"): s = alpha tanh(a / a_div) */
    bool gin, rev_pre;
    bool matrix;                /* P is a matrix (soft, householder) */
    const int32_t *perm;        /* d: y_i = v_perm[i]  (hard) */
    int32_t *perm_inv;          /* d: v_i = y_perm_inv[i] */
    const float *wf;            /* d x d: y = v W^T  per row  (matrix P) */
    const float *wi;            /* d x d: v = y Wi^T per row  (matrix P^-1) */
    float *g;                   /* d: global scale Psi(global_scale); all 1 with gin */
    const float *off;           /* d: global offset */
    float *g_perm, *off_perm;   /* d: g[perm[i]], off[perm[i]] (hard, fused gather) */
    double log_g;               /* sum log g (0 with gin) */
    double cond;                /* condition number of wf (matrix P), for the certificate */
    const struct subnet *net;   /* [x1 (n1), c (cw)] -> 2 n2 */
};

/* ---- scratch layout: a (rows x 2 n2) | tmp (rows x d) | subnet scratch ------------------ */

static size_t aio_scratch(const struct blk *b, int rows)
{
    const struct aio_priv *p = b->priv;
    return cpl_round((size_t)rows * 2 * p->n2) + cpl_round((size_t)rows * b->d) +
           cpl_round(subnet_scratch(p->net, rows));
}

/* a (n x 2 n2) <- subnet([x1, c]) scaled: s = alpha tanh(0.1 a / a_div), t = 0.1 a;
 * with gin_block s is centred per row. */
static void coefficients(const struct aio_priv *p, int d, struct blk_io *io, float *a,
                         float *sub)
{
    int n = io->n, n2 = p->n2, lda = 2 * n2;
    subnet_forward(p->net, n, io->x, d, io->c, io->c_ld, a, lda, sub);
    const float alpha = p->alpha, a_div = p->a_div;
    for (int i = 0; i < n; i++) {
        float *s = a + (size_t)i * lda;
        float *t = s + n2;
        for (int j = 0; j < n2; j++)
            s[j] = (s[j] * 0.1f) / a_div;
        for (int j = 0; j < n2; j++)
            t[j] = t[j] * 0.1f;
    }
    cpl_map_cols(io->k, KF_TANH, a, n, n2, lda);
    for (int i = 0; i < n; i++) {
        float *s = a + (size_t)i * lda;
        for (int j = 0; j < n2; j++)
            s[j] = alpha * s[j];
    }
    if (p->gin)
        cpl_center_cols(a, n, n2, lda);
}

/* y (C x P) = M x, M (C x C) row-major, x (C x P) one image row: a 1x1 convolution. */
static void kern_matmul_left(const struct kern *kn, int C, int P, const float *M,
                             const float *x, float *y)
{
    struct kern_gemm g = {.m = C, .n = P, .k = C, .a = M, .lda = C, .b = x, .ldb = P,
                          .bmode = KERN_B_ROWMAJOR, .y = y, .ldy = P};
    kn->gemm(&g);
}

/* Y (n x d) = the channel matrix M (C x C) applied to every row: y = v M^T on vectors, and
 * at every position on image rows (FrEIA's 1x1 convolution with M): per row the (C x P)
 * product M X. */
static void chan_matrix(const struct kern *kn, const struct aio_priv *p, int n, int d,
                        const float *M, const float *x, float *y)
{
    if (p->P == 1) {
        kern_linear_w(kn, n, d, d, x, d, M, d, y, d);
        return;
    }
    for (int i = 0; i < n; i++)
        kern_matmul_left(kn, p->C, p->P, M, x + (size_t)i * d, y + (size_t)i * d);
}

/* x (n x d) <- P x  (y = W v, or y_i = v_perm[i]); tmp: n x d. */
static void perm_apply(const struct kern *kn, const struct aio_priv *p, int n, int d, float *x,
                       float *tmp)
{
    if (p->matrix) {
        chan_matrix(kn, p, n, d, p->wf, x, tmp);
    } else {
        const int32_t *pm = p->perm;
        for (int i = 0; i < n; i++) {
            const float *xi = x + (size_t)i * d;
            float *ti = tmp + (size_t)i * d;
            for (int k = 0; k < d; k++)
                ti[k] = xi[pm[k]];
        }
    }
    memcpy(x, tmp, sizeof(float) * (size_t)n * d);
}

/* x (n x d) <- P^-1 x  (v = Wi y, or v_i = y_perm_inv[i]); tmp: n x d. */
static void perm_apply_inv(const struct kern *kn, const struct aio_priv *p, int n, int d, float *x,
                           float *tmp)
{
    if (p->matrix) {
        chan_matrix(kn, p, n, d, p->wi, x, tmp);
    } else {
        const int32_t *pi = p->perm_inv;
        for (int i = 0; i < n; i++) {
            const float *xi = x + (size_t)i * d;
            float *ti = tmp + (size_t)i * d;
            for (int k = 0; k < d; k++)
                ti[k] = xi[pi[k]];
        }
    }
    memcpy(x, tmp, sizeof(float) * (size_t)n * d);
}

static void aio_forward(const struct blk *b, struct blk_io *io)
{
    const struct aio_priv *p = b->priv;
    int n = io->n, d = b->d, n1 = p->n1, n2 = p->n2;
    float *a = io->scratch;
    float *tmp = a + cpl_round((size_t)n * 2 * n2);
    float *sub = tmp + cpl_round((size_t)n * d);
    float *x = io->x;

    if (p->rev_pre)
        perm_apply_inv(io->k, p, n, d, x, tmp);

    coefficients(p, d, io, a, sub);
    cpl_affine_fwd(io->k, x + n1, d, a, 2 * n2, n, n2, io->log_det);

    if (p->matrix) {
        /* v = u * g + offset, then y = W v. */
        const float *g = p->g, *off = p->off;
        for (int i = 0; i < n; i++) {
            float *xi = x + (size_t)i * d;
            for (int k = 0; k < d; k++)
                xi[k] = xi[k] * g[k] + off[k];
        }
        perm_apply(io->k, p, n, d, x, tmp);
    } else {
        /* Fused: y_k = u[perm[k]] * g[perm[k]] + off[perm[k]]. */
        const int32_t *pm = p->perm;
        const float *gp = p->g_perm, *op = p->off_perm;
        for (int i = 0; i < n; i++) {
            const float *xi = x + (size_t)i * d;
            float *ti = tmp + (size_t)i * d;
            for (int k = 0; k < d; k++)
                ti[k] = xi[pm[k]] * gp[k] + op[k];
        }
        memcpy(x, tmp, sizeof(float) * (size_t)n * d);
    }
    if (p->log_g != 0.0)
        for (int i = 0; i < n; i++)
            io->log_det[i] += p->log_g;
}

static void aio_inverse(const struct blk *b, struct blk_io *io)
{
    const struct aio_priv *p = b->priv;
    int n = io->n, d = b->d, n1 = p->n1, n2 = p->n2;
    float *a = io->scratch;
    float *tmp = a + cpl_round((size_t)n * 2 * n2);
    float *sub = tmp + cpl_round((size_t)n * d);
    float *x = io->x;
    const float *g = p->g, *off = p->off;

    if (p->matrix) {
        /* v = Wi y, then u = (v - offset) / g. */
        chan_matrix(io->k, p, n, d, p->wi, x, tmp);
        for (int i = 0; i < n; i++) {
            const float *ti = tmp + (size_t)i * d;
            float *xi = x + (size_t)i * d;
            for (int k = 0; k < d; k++)
                xi[k] = (ti[k] - off[k]) / g[k];
        }
    } else {
        /* Fused: u_k = (y[perm_inv[k]] - off[k]) / g[k]. */
        const int32_t *pi = p->perm_inv;
        for (int i = 0; i < n; i++) {
            const float *xi = x + (size_t)i * d;
            float *ti = tmp + (size_t)i * d;
            for (int k = 0; k < d; k++)
                ti[k] = (xi[pi[k]] - off[k]) / g[k];
        }
        memcpy(x, tmp, sizeof(float) * (size_t)n * d);
    }

    coefficients(p, d, io, a, sub);
    cpl_affine_inv(io->k, x + n1, d, a, 2 * n2, n, n2, io->log_det);

    if (p->rev_pre)
        perm_apply(io->k, p, n, d, x, tmp);
    if (p->log_g != 0.0)
        for (int i = 0; i < n; i++)
            io->log_det[i] -= p->log_g;
}

/* ---- load ------------------------------------------------------------------------------ */

/* Psi(a) in float, as torch computes it. */
static float psi(enum aio_gtype t, float a)
{
    switch (t) {
    case G_SIGMOID:
        return 10.0f * (1.0f / (1.0f + em_expf(-(a - 2.0f))));
    case G_EXP:
        return em_expf(a);
    case G_SOFTPLUS:
    default: {
        /* torch.nn.Softplus(beta=0.5, threshold=20): beta*a > 20 returns a itself. */
        float ba = 0.5f * a;
        float sp = ba > 20.0f ? a : em_log1pf(em_expf(ba)) / 0.5f;
        return 0.1f * sp;
    }
    }
}

/* Largest |(A B^T)_ij - I_ij| for d x d row-major A, B (double). */
static double orth_err(int d, const double *A, const double *B)
{
    double worst = 0.0;
    for (int i = 0; i < d; i++)
        for (int j = 0; j < d; j++) {
            double acc = 0.0;
            for (int k = 0; k < d; k++)
                acc += A[(size_t)i * d + k] * B[(size_t)j * d + k];
            double e = fabs(acc - (i == j ? 1.0 : 0.0));
            if (e > worst)
                worst = e;
        }
    return worst;
}

/* Orthogonality tolerance for stored float32 matrices: float rounding of an exactly
 * orthogonal matrix leaves ~1e-7 per entry; anything near 1e-3 is not a rotation. */
#define AIO_ORTH_TOL 1e-3

static enum eng_status load_perm_soft(struct aio_priv *p, int d, int rank, struct ldr *L,
                                      const cJSON *po)
{
    /* (d, d), or FrEIA's image form (d, d, 1, 1) / (d, d, 1) (a 1x1 convolution weight) */
    const int64_t shp[4] = {d, d, 1, 1};
    const int nd = rank > 1 ? 1 + rank : 2;
    const struct st_tensor *raw = NULL;
    enum eng_status st = ldr_raw(L, po, "w", &raw);
    if (st != ENG_OK)
        return st;
    int ndim = raw->ndim == 2 ? 2 : nd;
    const double *w = NULL, *wi = NULL;
    const float *wf = NULL, *wif = NULL;
    if ((st = ldr_tensor_f64(L, po, "w", true, ndim, shp, &w)) != ENG_OK ||
        (st = ldr_tensor_f64(L, po, "w_inv", true, ndim, shp, &wi)) != ENG_OK ||
        (st = ldr_tensor(L, po, "w", true, ndim, shp, &wf)) != ENG_OK ||
        (st = ldr_tensor(L, po, "w_inv", true, ndim, shp, &wif)) != ENG_OK)
        return st;
    double e = orth_err(d, w, w);
    if (!(e <= AIO_ORTH_TOL))
        return ldr_fail(L, ENG_ERR_TENSOR,
                        "w: soft permutation matrix is not orthogonal (max |W W^T - I| = %.3g)",
                        e);
    /* w_inv must be the inverse of w: w_inv w^T^T = w_inv W = I, i.e. w_inv ~ W^T. */
    double worst = 0.0;
    for (int i = 0; i < d; i++)
        for (int j = 0; j < d; j++) {
            double diff = fabs(wi[(size_t)i * d + j] - w[(size_t)j * d + i]);
            if (diff > worst)
                worst = diff;
        }
    if (!(worst <= AIO_ORTH_TOL))
        return ldr_fail(L, ENG_ERR_TENSOR,
                        "w_inv: is not the transpose (inverse) of w (max difference %.3g)", worst);
    p->matrix = true;
    p->wf = wf;
    p->wi = wif;
    return ENG_OK;
}

static enum eng_status load_perm_householder(struct aio_priv *p, int d, struct ldr *L,
                                             const cJSON *po)
{
    const struct st_tensor *raw = NULL;
    enum eng_status st = ldr_raw(L, po, "v", &raw);
    if (st != ENG_OK)
        return st;
    if (raw->ndim != 2 || raw->shape[0] < 1 || raw->shape[0] > 4096 || raw->shape[1] != d)
        return ldr_fail(L, ENG_ERR_TENSOR,
                        "v: tensor '%s' must have shape (K, %d) with 1 <= K <= 4096 "
                        "(FrEIA's vk_householder)", raw->name, d);
    int K = (int)raw->shape[0];
    const int64_t shw[2] = {d, d}, shv[2] = {K, d};
    const double *w0 = NULL, *v = NULL;
    if ((st = ldr_tensor_f64(L, po, "w0", true, 2, shw, &w0)) != ENG_OK ||
        (st = ldr_tensor_f64(L, po, "v", true, 2, shv, &v)) != ENG_OK)
        return st;
    double e = orth_err(d, w0, w0);
    if (!(e <= AIO_ORTH_TOL))
        return ldr_fail(L, ENG_ERR_TENSOR,
                        "w0: householder base matrix is not orthogonal (max |W W^T - I| = %.3g)",
                        e);
    /* W = w0 * H(v_1) * ... * H(v_K), H(v) = I - 2 v v^T / |v|^2, left to right:
     * W <- W - (2/|v|^2) (W v) v^T.  Built in a model-owned double buffer. */
    double *W = ldr_alloc(L, sizeof(double) * (size_t)d * d);
    double *Wv = ldr_alloc(L, sizeof(double) * (size_t)d);
    float *wf = ldr_alloc(L, sizeof(float) * (size_t)d * d);
    float *wi = ldr_alloc(L, sizeof(float) * (size_t)d * d);
    if (!W || !Wv || !wf || !wi)
        return ENG_ERR_NOMEM;
    memcpy(W, w0, sizeof(double) * (size_t)d * d);
    for (int k = 0; k < K; k++) {
        const double *vk = v + (size_t)k * d;
        double nn = 0.0;
        for (int i = 0; i < d; i++)
            nn += vk[i] * vk[i];
        if (!(nn > 1e-30) || !isfinite(nn))
            return ldr_fail(L, ENG_ERR_TENSOR,
                            "v: householder vector %d has zero norm (the reflection is undefined)",
                            k);
        for (int i = 0; i < d; i++) {
            double acc = 0.0;
            for (int m = 0; m < d; m++)
                acc += W[(size_t)i * d + m] * vk[m];
            Wv[i] = acc;
        }
        double f = 2.0 / nn;
        for (int i = 0; i < d; i++)
            for (int m = 0; m < d; m++)
                W[(size_t)i * d + m] -= f * Wv[i] * vk[m];
    }
    for (int i = 0; i < d; i++)
        for (int m = 0; m < d; m++) {
            wf[(size_t)i * d + m] = (float)W[(size_t)i * d + m];
            wi[(size_t)m * d + i] = (float)W[(size_t)i * d + m];
        }
    p->matrix = true;
    p->wf = wf;
    p->wi = wi;
    return ENG_OK;
}

static enum eng_status aio_load(struct blk *b, struct ldr *L, const cJSON *j)
{
    static const char *const formulas[] = {"head", "legacy"};
    static const char *const gtypes[] = {"SOFTPLUS", "SIGMOID", "EXP"};
    static const char *const ptypes[] = {"hard", "soft", "householder"};
    int d = b->d;
    enum eng_status st;

    struct aio_priv *p = ldr_alloc(L, sizeof(*p));
    if (!p)
        return ENG_ERR_NOMEM;
    b->priv = p;

    const int C = cpl_channels(b), P = d / C;
    p->C = C, p->P = P;
    if (C < 2)
        return ldr_fail(L, ENG_ERR_MANIFEST,
                        "AllInOneBlock needs %s >= 2 (got %d): its active half would be "
                        "empty", P > 1 ? "C channels" : "width d", C);
    long split = (long)(C - C / 2) * P;
    if ((st = ldr_int(L, j, "split", false, split, P, (long)(C - 1) * P, &split)) != ENG_OK)
        return st;
    if (split % P != 0)
        return ldr_fail(L, ENG_ERR_MANIFEST, "split: %ld is not a whole number of channels (a "
                        "multiple of the %d positions per channel)", split, P);
    p->n1 = (int)split;
    p->n2 = d - p->n1;

    double alpha = 2.0;
    if ((st = ldr_num(L, j, "affine_clamping", false, 2.0, &alpha)) != ENG_OK)
        return st;
    if (!(alpha > 0.0) || !isfinite(alpha) || alpha > 1e6)
        return ldr_fail(L, ENG_ERR_MANIFEST, "affine_clamping: must be > 0 and finite (got %g)",
                        alpha);
    int formula = 0;
    if ((st = ldr_enum(L, j, "clamp_formula", false, 0, formulas, 2, &formula)) != ENG_OK)
        return st;
    p->alpha = (float)alpha;
    p->a_div = formula == 0 ? (float)alpha : 1.0f;

    if ((st = ldr_bool(L, j, "gin_block", false, false, &p->gin)) != ENG_OK ||
        (st = ldr_bool(L, j, "reverse_permutation", false, false, &p->rev_pre)) != ENG_OK)
        return st;
    int gt = G_SOFTPLUS;
    if ((st = ldr_enum(L, j, "global_affine_type", false, G_SOFTPLUS, gtypes, 3, &gt)) != ENG_OK)
        return st;

    /* Global affine: g = Psi(global_scale) (ignored with gin_block), offset; on image rows
     * one per channel (FrEIA's (1, C, 1, 1)), spread over the positions. */
    const float *gs = NULL, *offc = NULL;
    if ((st = ldr_tensor_numel(L, j, "global_scale", !p->gin, C, &gs)) != ENG_OK ||
        (st = ldr_tensor_numel(L, j, "global_offset", true, C, &offc)) != ENG_OK)
        return st;
    float *off = ldr_alloc(L, sizeof(float) * (size_t)d);
    float *gsf = ldr_alloc(L, sizeof(float) * (size_t)d);
    if (!off || !gsf)
        return ENG_ERR_NOMEM;
    for (int k = 0; k < d; k++) {
        off[k] = offc[k / P];
        gsf[k] = gs ? gs[k / P] : 0.0f;
    }
    p->off = off;
    if (gs)
        gs = gsf;
    p->g = ldr_alloc(L, sizeof(float) * (size_t)d);
    p->g_perm = ldr_alloc(L, sizeof(float) * (size_t)d);
    p->off_perm = ldr_alloc(L, sizeof(float) * (size_t)d);
    p->perm_inv = ldr_alloc(L, sizeof(int32_t) * (size_t)d);
    if (!p->g || !p->g_perm || !p->off_perm || !p->perm_inv)
        return ENG_ERR_NOMEM;
    p->log_g = 0.0;
    for (int k = 0; k < d; k++) {
        if (p->gin) {
            p->g[k] = 1.0f;
            continue;
        }
        float g = psi((enum aio_gtype)gt, gs[k]);
        if (!(g > 0.0f) || !isfinite(g))
            return ldr_fail(L, ENG_ERR_TENSOR,
                            "global_scale: entry %d (%g) gives the global scale %g under %s; it "
                            "must be positive and finite", k / P, (double)gs[k], (double)g,
                            gtypes[gt]);
        p->g[k] = g;
        p->log_g += em_log((double)g);
    }

    /* Permutation. */
    const cJSON *po = NULL;
    if ((st = ldr_obj(L, j, "permutation", true, &po)) != ENG_OK)
        return st;
    size_t mark = ldr_push(L, ".permutation");
    int pt = PERM_HARD;
    st = ldr_enum(L, po, "type", true, PERM_HARD, ptypes, 3, &pt);
    if (st == ENG_OK) {
        switch (pt) {
        case PERM_HARD:
            st = ldr_perm(L, po, "perm", C, &p->perm);
            if (st == ENG_OK && P > 1) { /* channel c*P + q <- perm[c]*P + q */
                int32_t *pf = ldr_alloc(L, sizeof(int32_t) * (size_t)d);
                if (!pf) {
                    st = ENG_ERR_NOMEM;
                    break;
                }
                for (int k = 0; k < d; k++)
                    pf[k] = p->perm[k / P] * P + k % P;
                p->perm = pf;
            }
            break;
        case PERM_SOFT:
            st = load_perm_soft(p, C, b->rank, L, po);
            break;
        case PERM_HOUSEHOLDER:
            st = load_perm_householder(p, C, L, po);
            break;
        }
    }
    ldr_pop(L, mark);
    if (st != ENG_OK)
        return st;
    if (!p->matrix) {
        for (int k = 0; k < d; k++)
            p->perm_inv[p->perm[k]] = k;
        for (int k = 0; k < d; k++) {
            p->g_perm[k] = p->g[p->perm[k]];
            p->off_perm[k] = p->off[p->perm[k]];
        }
    }

    if (p->matrix) {
        /* the certificate's condition number: exact singular values in double */
        size_t dd = (size_t)C * C;
        double *a = malloc(sizeof(double) * (2 * dd + (size_t)C));
        if (!a)
            return ldr_fail(L, ENG_ERR_NOMEM, "out of memory for the singular values of the "
                            "permutation matrix");
        for (size_t i = 0; i < dd; i++)
            a[i] = p->wf[i];
        double *sv = a + 2 * dd;
        int ok = la_singular_values(C, C, a, sv, a + dd);
        p->cond = ok >= 0 && sv[C - 1] > 0 ? sv[0] / sv[C - 1] : INFINITY;
        free(a);
    }

    if ((st = cpl_subnet(L, b, j, "subnet", p->n1, 2 * p->n2, &p->net)) != ENG_OK)
        return st;
    return ENG_OK;
}

/* Closed-form inverse.  Bounds stated: the soft clamp keeps every coupling scale in
 * (e^-alpha, e^alpha) (centred: e^+-2 alpha with gin_block), the global scale in
 * [min g, max g], and a matrix permutation has the condition number of its stored
 * matrix (exact singular values in double).  No global Lipschitz bound: the coupling's
 * scale depends on the passive half. */
static void aio_certify(const struct blk *b, struct eng_block_cert *out)
{
    const struct aio_priv *p = b->priv;
    const int d = b->d;
    double gmin = INFINITY, gmax = 0.0;
    for (int k = 0; k < d; k++)
        gmin = fmin(gmin, (double)p->g[k]), gmax = fmax(gmax, (double)p->g[k]);
    double smax = (p->gin ? 2.0 : 1.0) * (double)p->alpha;
    char perm[80];
    out->invertible = true;
    out->guarantee = ENG_GUARANTEE_ANALYTIC;
    if (!p->matrix) {
        snprintf(perm, sizeof(perm), "hard permutation");
    } else {
        out->condition = p->cond;
        snprintf(perm, sizeof(perm), "permutation matrix with condition number %.4g",
                 out->condition);
    }
    snprintf(out->reason, sizeof(out->reason),
             "affine coupling with soft clamp: closed-form inverse; coupling scales in "
             "(e^-%.3g, e^%.3g), global scale in [%.3g, %.3g], %s; no global Lipschitz bound",
             smax, smax, gmin, gmax, perm);
}

const struct blk_ops blk_allinone_ops = {
    .type = "AllInOneBlock",
    .takes_cond = true,
    .needs_cond = false,
    .load = aio_load,
    .scratch = aio_scratch,
    .forward = aio_forward,
    .inverse = aio_inverse,
    .certify = aio_certify,
};
