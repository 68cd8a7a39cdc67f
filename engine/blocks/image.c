/*
 * image.c — FrEIA's fixed blocks that need the per-row image shape (C, H, W):
 *   Fixed1x1Conv          y = M_buf·x at every pixel (M_buf is FrEIA's buffer `M` = Mᵀ of
 *                         the matrix the user gave), log-det H·W·log|det M_buf|
 *   HaarDownsampling      each channel's 2×2 patches [a b; c d] become four channels
 *                         f·(a+b+c+d), f·(a−b+c−d), f·(a+b−c−d), f·(a−b−c+d) of half the
 *                         size, f = rebalance/2; log-det d·(log 16 + 4 log f)/4 per row
 *   HaarUpsampling        the inverse map of HaarDownsampling (FrEIA runs it reversed)
 *   IRevNetDownsampling   the 2×2 patches of each channel become four channels (a
 *                         permutation of the coordinates), log-det 0
 *   IRevNetUpsampling     its inverse
 * A row is the flat row-major (c, h, w) layout; the downsampling blocks change the shape
 * (C, H, W) to (4C, H/2, W/2) and set b->out_shape, the upsampling blocks the reverse.
 * Output channel order:
 *   Haar, order_by_wavelet false: 4c + k (channel c's four wavelets together); true: k·C + c
 *   IRevNet, legacy_backend false: 4c + k; true: k·C + c; k = 2·(row parity) + column parity
 * Fixed1x1Conv's inverse and log|det| are computed at load in double.  Each block works in
 * io->scratch (one row, or one row for the gemm of Fixed1x1Conv).
 * Math: FrEIA's fixed_transforms.py and reshapes.py (freia-modules.md §5).
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

static size_t scratch_row(const struct blk *b, int rows)
{
    (void)rows;
    return (size_t)b->d;
}

/* "(3, 5, 4)" for messages. */
static const char *shape_str(int rank, const int *shape, char *buf, size_t cap)
{
    if (rank == 1)
        snprintf(buf, cap, "(%d)", shape[0]);
    else if (rank == 2)
        snprintf(buf, cap, "(%d, %d)", shape[0], shape[1]);
    else
        snprintf(buf, cap, "(%d, %d, %d)", shape[0], shape[1], shape[2]);
    return buf;
}

/* The block's input must be an image (C, H, W); the message names the block and shape. */
static enum eng_status need_image(struct blk *b, struct ldr *L, const char *what)
{
    if (b->rank == 3)
        return ENG_OK;
    char s[64];
    return ldr_fail(L, ENG_ERR_MANIFEST,
                    "%s needs an image input of shape (C, H, W), but its input shape is %s "
                    "(set the model's \"shape\": {\"x\": [C, H, W]})",
                    what, shape_str(b->rank, b->shape, s, sizeof(s)));
}

/* ==== Fixed1x1Conv ====================================================================== */

struct conv1x1 {
    int C, S;           /* channels, pixels */
    const float *m;     /* C × C: y[:, s] = m · x[:, s] (FrEIA's buffer M) */
    const float *m_inv; /* C × C: m⁻¹ */
    double logdet;      /* S · log|det m| */
    double norm, norm_inv;
};

/* Spectral norm upper bound (la.h) of a C × C double matrix; +inf on OOM. */
static double norm2_upper(int n, const double *a)
{
    double *work = malloc(sizeof(double) * la_norm2_upper_work(n, n));
    if (!work)
        return INFINITY;
    double r = la_norm2_upper(n, n, a, work);
    free(work);
    return r;
}

static enum eng_status conv1x1_load(struct blk *b, struct ldr *L, const cJSON *j)
{
    enum eng_status st;
    if ((st = need_image(b, L, "Fixed1x1Conv")) != ENG_OK)
        return st;
    struct conv1x1 *p = ldr_alloc(L, sizeof(*p));
    if (!p)
        return ENG_ERR_NOMEM;
    const int C = b->shape[0];
    p->C = C, p->S = b->shape[1] * b->shape[2];
    /* FrEIA stores M as (C, C, 1, 1); a (C, C) tensor is accepted too. */
    const struct st_tensor *raw;
    if ((st = ldr_raw(L, j, "M", &raw)) != ENG_OK)
        return st;
    const double *m;
    const int64_t shape4[4] = {C, C, 1, 1};
    if ((st = ldr_tensor_f64(L, j, "M", true, raw->ndim == 2 ? 2 : 4, shape4, &m)) != ENG_OK)
        return st;
    size_t cc = (size_t)C * C;
    double *lu = malloc(sizeof(double) * cc * 3);
    int *piv = malloc(sizeof(int) * (size_t)C);
    if (!lu || !piv) {
        free(lu), free(piv);
        return ldr_fail(L, ENG_ERR_NOMEM, "out of memory inverting tensor '%s'",
                        ldr_tensor_name(j, "M"));
    }
    double *inv = lu + cc, *work = lu + 2 * cc;
    memcpy(lu, m, sizeof(double) * cc);
    int bad = la_lu(C, lu, piv) != 0;
    double ld = bad ? 0.0 : la_lu_logabsdet(C, lu);
    bad = bad || !isfinite(ld) || la_inverse(C, m, inv, work, piv) != 0;
    for (size_t i = 0; !bad && i < cc; i++)
        bad = !isfinite(inv[i]) || fabs(inv[i]) > 3e38;
    float *mf = ldr_alloc(L, sizeof(float) * cc), *mi = ldr_alloc(L, sizeof(float) * cc);
    if (!bad && mf && mi) {
        for (size_t i = 0; i < cc; i++)
            mf[i] = (float)m[i], mi[i] = (float)inv[i];
        p->norm = norm2_upper(C, m);
        p->norm_inv = norm2_upper(C, inv);
    }
    free(lu), free(piv);
    if (bad)
        return ldr_fail(L, ENG_ERR_TENSOR, "tensor '%s' (field 'M', %d x %d) is singular",
                        ldr_tensor_name(j, "M"), C, C);
    if (!mf || !mi)
        return ENG_ERR_NOMEM;
    p->m = mf, p->m_inv = mi;
    p->logdet = ld * (double)p->S;
    b->priv = p;
    return ENG_OK;
}

static size_t conv1x1_scratch(const struct blk *b, int rows)
{
    (void)rows;
    return (size_t)b->d;
}

/* x (C × S) <- a (C × C) · x, through one row of scratch. */
static void conv1x1_apply(const struct conv1x1 *p, const struct kern *k, const float *a,
                          float *x, float *tmp)
{
    kern_matmul(k, p->C, p->S, p->C, a, p->C, x, p->S, tmp, p->S);
    memcpy(x, tmp, sizeof(float) * (size_t)p->C * p->S);
}

static void conv1x1_forward(const struct blk *b, struct blk_io *io)
{
    const struct conv1x1 *p = b->priv;
    for (int i = 0; i < io->n; i++) {
        conv1x1_apply(p, io->k, p->m, io->x + (size_t)i * b->d, io->scratch);
        io->log_det[i] += p->logdet;
    }
}

static void conv1x1_inverse(const struct blk *b, struct blk_io *io)
{
    const struct conv1x1 *p = b->priv;
    for (int i = 0; i < io->n; i++) {
        conv1x1_apply(p, io->k, p->m_inv, io->x + (size_t)i * b->d, io->scratch);
        io->log_det[i] -= p->logdet;
    }
}

static void conv1x1_certify(const struct blk *b, struct eng_block_cert *out)
{
    const struct conv1x1 *p = b->priv;
    out->lipschitz = p->norm;
    out->lipschitz_inverse = p->norm_inv;
    out->condition = p->norm * p->norm_inv;
    snprintf(out->reason, sizeof(out->reason),
             "1x1 convolution by a full-rank %d x %d matrix inverted at load in double "
             "(log|det M| = %.6g per pixel, condition number %.3g)", p->C, p->C,
             p->logdet / p->S, out->condition);
}

const struct blk_ops blk_conv1x1_ops = {
    .type = "Fixed1x1Conv",
    .load = conv1x1_load,
    .scratch = conv1x1_scratch,
    .forward = conv1x1_forward,
    .inverse = conv1x1_inverse,
    .certify = conv1x1_certify,
};

/* ==== 2×2 squeezes: shapes ============================================================== */

/* The fine (C, H, W) and coarse (4C, H/2, W/2) shapes of a squeeze block: downsampling
 * blocks go fine -> coarse, upsampling blocks coarse -> fine.  Sets b->out_shape. */
struct squeeze {
    int C, H, W;        /* fine shape */
    bool up;            /* forward is coarse -> fine */
};

static enum eng_status squeeze_shapes(struct blk *b, struct ldr *L, const char *what, bool up,
                                      struct squeeze *q)
{
    enum eng_status st;
    if ((st = need_image(b, L, what)) != ENG_OK)
        return st;
    char s[64];
    int c = b->shape[0], h = b->shape[1], w = b->shape[2];
    q->up = up;
    if (!up) {
        if (h % 2 || w % 2)
            return ldr_fail(L, ENG_ERR_MANIFEST,
                            "%s needs an even height and width, but its input shape is %s",
                            what, shape_str(3, b->shape, s, sizeof(s)));
        q->C = c, q->H = h, q->W = w;
        b->out_rank = 3;
        b->out_shape[0] = 4 * c, b->out_shape[1] = h / 2, b->out_shape[2] = w / 2;
    } else {
        if (c % 4)
            return ldr_fail(L, ENG_ERR_MANIFEST,
                            "%s needs a channel count divisible by 4, but its input shape is %s",
                            what, shape_str(3, b->shape, s, sizeof(s)));
        q->C = c / 4, q->H = 2 * h, q->W = 2 * w;
        b->out_rank = 3;
        b->out_shape[0] = c / 4, b->out_shape[1] = 2 * h, b->out_shape[2] = 2 * w;
    }
    return ENG_OK;
}

/* ==== HaarDownsampling / HaarUpsampling ================================================= */

struct haar {
    struct squeeze q;
    bool by_wavelet;    /* order_by_wavelet */
    float fac_fwd;      /* 0.5·rebalance: the coarse side's factor */
    float fac_rev;      /* 0.5/rebalance */
    double ld_down;     /* log-det of fine -> coarse for one row */
    double rebalance;
};

/* Coarse channel of wavelet k of fine channel c. */
static inline int haar_ch(const struct haar *p, int c, int k)
{
    return p->by_wavelet ? k * p->q.C + c : 4 * c + k;
}

/* fine (C, H, W) at src -> coarse at dst. */
static void haar_down(const struct haar *p, const float *src, float *dst)
{
    const int C = p->q.C, H = p->q.H, W = p->q.W, h2 = H / 2, w2 = W / 2;
    const size_t S2 = (size_t)h2 * w2;
    const float f = p->fac_fwd;
    for (int c = 0; c < C; c++) {
        const float *xc = src + (size_t)c * H * W;
        float *o0 = dst + (size_t)haar_ch(p, c, 0) * S2, *o1 = dst + (size_t)haar_ch(p, c, 1) * S2;
        float *o2 = dst + (size_t)haar_ch(p, c, 2) * S2, *o3 = dst + (size_t)haar_ch(p, c, 3) * S2;
        for (int i = 0; i < h2; i++)
            for (int j = 0; j < w2; j++) {
                const float *r0 = xc + (size_t)(2 * i) * W + 2 * j, *r1 = r0 + W;
                float a = r0[0], bb = r0[1], cc = r1[0], dd = r1[1];
                size_t o = (size_t)i * w2 + j;
                o0[o] = (a + bb + cc + dd) * f;
                o1[o] = (a - bb + cc - dd) * f;
                o2[o] = (a + bb - cc - dd) * f;
                o3[o] = (a - bb - cc + dd) * f;
            }
    }
}

/* coarse at src -> fine (C, H, W) at dst (FrEIA: scale by fac_rev, transposed conv). */
static void haar_up(const struct haar *p, const float *src, float *dst)
{
    const int C = p->q.C, H = p->q.H, W = p->q.W, h2 = H / 2, w2 = W / 2;
    const size_t S2 = (size_t)h2 * w2;
    const float f = p->fac_rev;
    for (int c = 0; c < C; c++) {
        float *xc = dst + (size_t)c * H * W;
        const float *u0 = src + (size_t)haar_ch(p, c, 0) * S2;
        const float *u1 = src + (size_t)haar_ch(p, c, 1) * S2;
        const float *u2 = src + (size_t)haar_ch(p, c, 2) * S2;
        const float *u3 = src + (size_t)haar_ch(p, c, 3) * S2;
        for (int i = 0; i < h2; i++)
            for (int j = 0; j < w2; j++) {
                size_t o = (size_t)i * w2 + j;
                float a = u0[o] * f, v = u1[o] * f, h = u2[o] * f, g = u3[o] * f;
                float *r0 = xc + (size_t)(2 * i) * W + 2 * j, *r1 = r0 + W;
                r0[0] = a + v + h + g;
                r0[1] = a - v + h - g;
                r1[0] = a + v - h - g;
                r1[1] = a - v - h + g;
            }
    }
}

static enum eng_status haar_load_common(struct blk *b, struct ldr *L, const cJSON *j, bool up)
{
    struct haar *p = ldr_alloc(L, sizeof(*p));
    if (!p)
        return ENG_ERR_NOMEM;
    enum eng_status st;
    if ((st = squeeze_shapes(b, L, up ? "HaarUpsampling" : "HaarDownsampling", up, &p->q)) !=
            ENG_OK ||
        (st = ldr_bool(L, j, "order_by_wavelet", false, false, &p->by_wavelet)) != ENG_OK ||
        (st = ldr_num(L, j, "rebalance", false, 1.0, &p->rebalance)) != ENG_OK)
        return st;
    if (!(p->rebalance != 0.0) || !isfinite(p->rebalance))
        return ldr_fail(L, ENG_ERR_MANIFEST, "field 'rebalance' must be a finite number != 0, "
                        "got %g", p->rebalance);
    /* FrEIA: fac = 0.5·rebalance (Python doubles, rounded to the tensor's float when
     * multiplied); jac = (log 16 + 4 log fac)/4 per element.  A negative rebalance makes
     * FrEIA's log NaN; the map is still invertible with log-det d·log|rebalance|. */
    double ff = 0.5 * p->rebalance, fr = 0.5 / p->rebalance;
    p->fac_fwd = (float)ff, p->fac_rev = (float)fr;
    p->ld_down = (double)b->d * ((em_log(16.0) + 4.0 * em_log(fabs(ff))) / 4.0);
    b->priv = p;
    return ENG_OK;
}

static enum eng_status haar_down_load(struct blk *b, struct ldr *L, const cJSON *j)
{
    return haar_load_common(b, L, j, false);
}

static enum eng_status haar_up_load(struct blk *b, struct ldr *L, const cJSON *j)
{
    return haar_load_common(b, L, j, true);
}

/* One direction over the tile: fine -> coarse when `down`. */
static void haar_run(const struct blk *b, struct blk_io *io, bool down)
{
    const struct haar *p = b->priv;
    const size_t d = (size_t)b->d;
    for (int i = 0; i < io->n; i++) {
        float *x = io->x + i * d;
        memcpy(io->scratch, x, sizeof(float) * d);
        if (down)
            haar_down(p, io->scratch, x);
        else
            haar_up(p, io->scratch, x);
        io->log_det[i] += down ? p->ld_down : -p->ld_down;
    }
}

static void haar_forward(const struct blk *b, struct blk_io *io)
{
    const struct haar *p = b->priv;
    haar_run(b, io, !p->q.up);
}

static void haar_inverse(const struct blk *b, struct blk_io *io)
{
    const struct haar *p = b->priv;
    haar_run(b, io, p->q.up);
}

static void haar_certify(const struct blk *b, struct eng_block_cert *out)
{
    const struct haar *p = b->priv;
    /* fine -> coarse is 2·fac_fwd times an orthogonal map: |rebalance|. */
    double r = fabs(p->rebalance);
    out->lipschitz = p->q.up ? 1.0 / r : r;
    out->lipschitz_inverse = p->q.up ? r : 1.0 / r;
    out->condition = 1.0;
    snprintf(out->reason, sizeof(out->reason),
             "Haar wavelet %s: |rebalance| = %g times an orthogonal map",
             p->q.up ? "upsampling" : "downsampling", r);
}

const struct blk_ops blk_haar_down_ops = {
    .type = "HaarDownsampling",
    .load = haar_down_load,
    .scratch = scratch_row,
    .forward = haar_forward,
    .inverse = haar_inverse,
    .certify = haar_certify,
};

const struct blk_ops blk_haar_up_ops = {
    .type = "HaarUpsampling",
    .load = haar_up_load,
    .scratch = scratch_row,
    .forward = haar_forward,
    .inverse = haar_inverse,
    .certify = haar_certify,
};

/* ==== IRevNetDownsampling / IRevNetUpsampling =========================================== */

struct irevnet {
    struct squeeze q;
    bool legacy;        /* legacy_backend */
    int32_t *src;       /* d: coarse[i] = fine[src[i]] */
};

static enum eng_status irevnet_load_common(struct blk *b, struct ldr *L, const cJSON *j, bool up)
{
    struct irevnet *p = ldr_alloc(L, sizeof(*p));
    if (!p)
        return ENG_ERR_NOMEM;
    enum eng_status st;
    if ((st = squeeze_shapes(b, L, up ? "IRevNetUpsampling" : "IRevNetDownsampling", up,
                             &p->q)) != ENG_OK ||
        (st = ldr_bool(L, j, "legacy_backend", false, false, &p->legacy)) != ENG_OK)
        return st;
    p->src = ldr_alloc(L, sizeof(int32_t) * (size_t)b->d);
    if (!p->src)
        return ENG_ERR_NOMEM;
    const int C = p->q.C, H = p->q.H, W = p->q.W, h2 = H / 2, w2 = W / 2;
    for (int c = 0; c < C; c++)
        for (int k = 0; k < 4; k++) {
            int oc = p->legacy ? k * C + c : 4 * c + k;
            int dy = k / 2, dx = k % 2;
            for (int i = 0; i < h2; i++)
                for (int jj = 0; jj < w2; jj++)
                    p->src[((size_t)oc * h2 + i) * w2 + jj] =
                        (int32_t)(((size_t)c * H + 2 * i + dy) * W + 2 * jj + dx);
        }
    b->priv = p;
    return ENG_OK;
}

static enum eng_status irevnet_down_load(struct blk *b, struct ldr *L, const cJSON *j)
{
    return irevnet_load_common(b, L, j, false);
}

static enum eng_status irevnet_up_load(struct blk *b, struct ldr *L, const cJSON *j)
{
    return irevnet_load_common(b, L, j, true);
}

static void irevnet_run(const struct blk *b, struct blk_io *io, bool down)
{
    const struct irevnet *p = b->priv;
    const int d = b->d;
    for (int i = 0; i < io->n; i++) {
        float *x = io->x + (size_t)i * d;
        memcpy(io->scratch, x, sizeof(float) * (size_t)d);
        if (down)
            for (int k = 0; k < d; k++)
                x[k] = io->scratch[p->src[k]];
        else
            for (int k = 0; k < d; k++)
                x[p->src[k]] = io->scratch[k];
    }
}

static void irevnet_forward(const struct blk *b, struct blk_io *io)
{
    const struct irevnet *p = b->priv;
    irevnet_run(b, io, !p->q.up);
}

static void irevnet_inverse(const struct blk *b, struct blk_io *io)
{
    const struct irevnet *p = b->priv;
    irevnet_run(b, io, p->q.up);
}

static void irevnet_certify(const struct blk *b, struct eng_block_cert *out)
{
    const struct irevnet *p = b->priv;
    out->lipschitz = out->lipschitz_inverse = out->condition = 1.0;
    snprintf(out->reason, sizeof(out->reason), "i-RevNet %s: a permutation of the %d coordinates",
             p->q.up ? "upsampling" : "downsampling", b->d);
}

const struct blk_ops blk_irevnet_down_ops = {
    .type = "IRevNetDownsampling",
    .load = irevnet_down_load,
    .scratch = scratch_row,
    .forward = irevnet_forward,
    .inverse = irevnet_inverse,
    .certify = irevnet_certify,
};

const struct blk_ops blk_irevnet_up_ops = {
    .type = "IRevNetUpsampling",
    .load = irevnet_up_load,
    .scratch = scratch_row,
    .forward = irevnet_forward,
    .inverse = irevnet_inverse,
    .certify = irevnet_certify,
};
