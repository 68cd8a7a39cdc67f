/*
 * nsf.c — the blocks of nflows' neural spline flow as sbi builds it (build_nsf):
 * RQSCoupling (nflows' PiecewiseRationalQuadraticCouplingTransform with linear tails and
 * a ResidualNet or plain MLP conditioner) and LULinear (nflows' LULinear).
 *
 * RQSCoupling.  "mask" (list of d 0/1): features with mask 1 are transformed, the others
 * (identity features) pass unchanged; both kept in ascending index order, as nflows'
 * masked_select.  The conditioner maps [x_id, c] to ntf * (3K - 1) parameters, read as
 * reshape(ntf, 3K - 1): transform feature j owns [widths K | heights K | derivatives K-1]
 * at j (3K - 1); the spline is rqs.h's nflows spline (linear tails = identity outside
 * [-B, B]), widths and heights divided by sqrt(hidden_features) when the manifest gives
 * hidden_features (nflows does so whenever the conditioner has that attribute).
 *   ResidualNet (nflows.nn.nets.ResidualNet):
 *     h = W0 [x_id, c] + b0;
 *     per block: t = W2 act(W1 act(h) + b1) + b2;  with a condition t = t * sigmoid(Wc c + bc)
 *     (F.glu of [t, context_layer(c)]);  h = h + t;
 *     params = Wf h + bf.
 *   mlp: the engine's subnet of [x_id, c] (sbi's ContextSplineMap for d = 1, where there
 *     are no identity features, is an mlp of c).
 * Forward and inverse both evaluate the conditioner once on the untouched identity
 * features, then run the spline (or its inverse) on each transform feature; log-det is the
 * sum of the splines'.  Products run through the model's kernels (row by row identical
 * whatever the tile); the spline is double per element.  Scratch only.
 *
 * LULinear.  W = L U with L unit lower triangular (lower_entries fill tril(k = -1) row by
 * row), U upper triangular (upper_entries fill triu(k = 1) row by row, diagonal
 * softplus(unconstrained_upper_diag) + eps):
 *   forward  y = L (U x) + bias,              log-det  sum log diag(U);
 *   inverse  x = U^-1 L^-1 (y - bias)  (two triangular solves), log-det -sum log diag(U).
 * Computed per row in double (d^2 operations, as the product would), rounded to float at
 * the end.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "../block.h"
#include "../emath.h"
#include "../kern.h"
#include "../loader.h"
#include "../safetensors.h"
#include "../subnet.h"
#include "coupling.h"
#include "rqs.h"

/* ---- RQSCoupling ---------------------------------------------------------------------- */

struct rnblk {
    const float *w1p, *b1, *w2p, *b2;   /* H x H packed, H */
    const float *wcp, *bc;              /* H x cw packed, H; NULL without a condition */
};

struct rqsc {
    int d, nid, ntf, P, nin;            /* P = 3K - 1 params per feature, nin = nid + cw */
    int *id, *tf;                       /* identity and transform feature indices */
    struct rqs_nflows spl;
    bool resnet;
    const struct subnet *mlp;           /* mlp conditioner */
    int H, nb;                          /* ResidualNet */
    enum act_type act;
    const float *w0p, *b0;              /* H x nin packed */
    struct rnblk *blk;
    const float *wfp, *bf;              /* ntf P x H packed */
};

static bool absent(const cJSON *j, const char *field)
{
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(j, field);
    return f == NULL || cJSON_IsNull(f);
}

/* Scratch: in (n x nin) | h | a | t (n x H each) | gate (n x H) | params (n x ntf P) |
 * work (doubles) | mlp scratch. */
static size_t rqsc_scratch(const struct blk *b, int rows)
{
    const struct rqsc *p = b->priv;
    size_t r = (size_t)rows, H = (size_t)p->H;
    size_t s = cpl_round(r * (size_t)p->nin) + 4 * cpl_round(r * H) +
               cpl_round(r * (size_t)p->ntf * p->P) + cpl_round(2 * rqs_nflows_rows_work(&p->spl) + 2);
    if (p->mlp)
        s += cpl_round(subnet_scratch(p->mlp, rows));
    return s;
}

static double *dwork(float *at)
{
    uintptr_t u = ((uintptr_t)at + 7u) & ~(uintptr_t)7u;
    return (double *)(void *)u;
}

static void gemm(const struct blk_io *io, int m, int n, int k, const float *a, int lda,
                 const float *wp, const float *bias, float *y, int ldy, enum act_type act)
{
    struct kern_gemm g = {.m = m, .n = n, .k = k, .a = a, .lda = lda, .b = wp,
                          .bmode = KERN_B_PACKED, .init = bias, .y = y, .ldy = ldy, .act = act};
    io->k->gemm(&g);
}

/* params (n x ntf P) of the tile's identity features (and condition). */
static void rqsc_params(const struct blk *b, const struct blk_io *io, float *s, float **par,
                        double **work)
{
    const struct rqsc *p = b->priv;
    const int n = io->n, d = p->d, H = p->H, cw = b->cw, nin = p->nin;
    size_t r = (size_t)n;
    float *in = s;
    s += cpl_round(r * (size_t)nin);
    float *h = s, *a = s + cpl_round(r * H), *t = a + cpl_round(r * H), *g = t + cpl_round(r * H);
    s = g + cpl_round(r * H);
    *par = s;
    s += cpl_round(r * (size_t)p->ntf * p->P);
    *work = dwork(s);
    s += cpl_round(2 * rqs_nflows_rows_work(&p->spl) + 2);
    for (int i = 0; i < n; i++) {
        const float *xr = io->x + (size_t)i * d;
        float *ir = in + (size_t)i * nin;
        for (int j = 0; j < p->nid; j++)
            ir[j] = xr[p->id[j]];
        if (cw)
            memcpy(ir + p->nid, io->c + (size_t)(io->c_ld ? i : 0) * (io->c_ld ? io->c_ld : cw),
                   sizeof(float) * (size_t)cw);
    }
    const int ldp = p->ntf * p->P;
    if (!p->resnet) {
        subnet_forward(p->mlp, n, in, nin, cw ? in + p->nid : NULL, nin, *par, ldp, s);
        return;
    }
    gemm(io, n, H, nin, in, nin, p->w0p, p->b0, h, H, ACT_NONE);
    for (int k = 0; k < p->nb; k++) {
        const struct rnblk *bk = &p->blk[k];
        memcpy(a, h, sizeof(float) * r * H);
        io->k->act(p->act, 0.0f, 0.0f, a, r * H);
        gemm(io, n, H, H, a, H, bk->w1p, bk->b1, t, H, p->act == ACT_RELU ? ACT_RELU : ACT_NONE);
        if (p->act != ACT_RELU)
            io->k->act(p->act, 0.0f, 0.0f, t, r * H);
        gemm(io, n, H, H, t, H, bk->w2p, bk->b2, a, H, ACT_NONE);
        if (bk->wcp && io->c_ld == 0) {
            /* one condition for the tile: its gate once */
            gemm(io, 1, H, cw, in + p->nid, nin, bk->wcp, bk->bc, g, H, ACT_SIGMOID);
            for (size_t i = 0; i < r; i++)
                for (int o = 0; o < H; o++)
                    a[i * H + o] *= g[o];
        } else if (bk->wcp) {
            /* the gates from the condition columns of `in` */
            gemm(io, n, H, cw, in + p->nid, nin, bk->wcp, bk->bc, g, H, ACT_SIGMOID);
            for (size_t e = 0; e < r * H; e++)
                a[e] *= g[e];
        }
        for (size_t e = 0; e < r * H; e++)
            h[e] += a[e];
    }
    gemm(io, n, ldp, H, h, H, p->wfp, p->bf, *par, ldp, ACT_NONE);
}

static void rqsc_run(const struct blk *b, struct blk_io *io, bool inv)
{
    const struct rqsc *p = b->priv;
    float *par;
    double *work;
    rqsc_params(b, io, io->scratch, &par, &work);
    rqs_nflows_rows(&p->spl, io->n, io->x, p->d, p->tf, p->ntf, par, p->ntf * p->P, inv,
                    io->log_det, work);
}

static void rqsc_forward(const struct blk *b, struct blk_io *io)
{
    rqsc_run(b, io, false);
}

static void rqsc_inverse(const struct blk *b, struct blk_io *io)
{
    rqsc_run(b, io, true);
}

static float *pack(struct ldr *L, int n, int k, const float *w)
{
    float *d = ldr_alloc(L, sizeof(float) * (kern_packed_size(n, k) + 1));
    if (d)
        kern_pack_weight(n, k, w, k, d);
    return d;
}

/* obj[field] = {"weight": out x in, "bias": out (optional)} (ldr_linear), packed. */
static enum eng_status read_lin(struct ldr *L, const cJSON *obj, const char *field, int out,
                                int in, const float **wp, const float **bias)
{
    const float *w;
    enum eng_status st = ldr_linear(L, obj, field, out, in, &w, bias);
    if (st != ENG_OK)
        return st;
    size_t mark = ldr_push(L, ".%s", field);
    if (!(*wp = pack(L, out, in, w)))
        st = ENG_ERR_NOMEM;
    ldr_pop(L, mark);
    return st;
}

static enum eng_status load_resnet(struct blk *b, struct ldr *L, struct rqsc *p, const cJSON *cj)
{
    const int cw = b->cw;
    static const char *const acts[] = {"relu", "tanh"};
    int ai = 0;
    enum eng_status st;
    if ((st = ldr_enum(L, cj, "activation", false, 0, acts, 2, &ai)) != ENG_OK)
        return st;
    p->act = ai == 0 ? ACT_RELU : ACT_TANH;
    const cJSON *blocks = cJSON_GetObjectItemCaseSensitive(cj, "blocks");
    if (!cJSON_IsArray(blocks) || cJSON_GetArraySize(blocks) > 64)
        return ldr_fail(L, ENG_ERR_MANIFEST, "field 'blocks' must be a list (at most 64)");
    p->nb = cJSON_GetArraySize(blocks);
    const cJSON *ij;
    const struct st_tensor *wt;
    if ((st = ldr_obj(L, cj, "initial", true, &ij)) != ENG_OK)
        return st;
    size_t m = ldr_push(L, ".initial");
    st = ldr_raw(L, ij, "weight", &wt);
    if (st == ENG_OK && (wt->ndim != 2 || wt->shape[0] <= 0 || wt->shape[0] > 65536))
        st = ldr_fail(L, ENG_ERR_TENSOR, "tensor '%s' (field 'weight') must be a matrix "
                      "(hidden, %d) with 0 < hidden <= 65536", wt->name, p->nin);
    ldr_pop(L, m);
    if (st != ENG_OK)
        return st;
    const int H = p->H = (int)wt->shape[0];
    if ((st = read_lin(L, cj, "initial", H, p->nin, &p->w0p, &p->b0)) != ENG_OK)
        return st;
    p->blk = ldr_alloc(L, sizeof(*p->blk) * (size_t)(p->nb + 1));
    if (!p->blk)
        return ENG_ERR_NOMEM;
    for (int k = 0; k < p->nb; k++) {
        const cJSON *bj = cJSON_GetArrayItem(blocks, k);
        struct rnblk *bk = &p->blk[k];
        size_t m2 = ldr_push(L, ".blocks[%d]", k);
        if ((st = read_lin(L, bj, "linear0", H, H, &bk->w1p, &bk->b1)) == ENG_OK &&
            (st = read_lin(L, bj, "linear1", H, H, &bk->w2p, &bk->b2)) == ENG_OK) {
            if (cw > 0 && absent(bj, "context"))
                st = ldr_fail(L, ENG_ERR_MANIFEST, "field 'context' is missing: every block of "
                              "a conditional ResidualNet gates by its context layer");
            else if (cw == 0 && !absent(bj, "context"))
                st = ldr_fail(L, ENG_ERR_MANIFEST, "field 'context': the block reads no "
                              "condition (set cond)");
            else if (cw > 0)
                st = read_lin(L, bj, "context", H, cw, &bk->wcp, &bk->bc);
        }
        ldr_pop(L, m2);
        if (st != ENG_OK)
            return st;
    }
    return read_lin(L, cj, "final", p->ntf * p->P, H, &p->wfp, &p->bf);
}

static enum eng_status rqsc_load(struct blk *b, struct ldr *L, const cJSON *j)
{
    const int d = b->d, cw = b->cw;
    struct rqsc *p = ldr_alloc(L, sizeof(*p));
    if (!p)
        return ENG_ERR_NOMEM;
    b->priv = p;
    p->d = d;
    p->id = ldr_alloc(L, sizeof(int) * (size_t)d);
    p->tf = ldr_alloc(L, sizeof(int) * (size_t)d);
    if (!p->id || !p->tf)
        return ENG_ERR_NOMEM;
    const cJSON *mk = cJSON_GetObjectItemCaseSensitive(j, "mask");
    if (!cJSON_IsArray(mk) || cJSON_GetArraySize(mk) != d)
        return ldr_fail(L, ENG_ERR_MANIFEST, "field 'mask' must be a list of %d numbers (1: "
                        "transformed, 0: identity feature)", d);
    for (int i = 0; i < d; i++) {
        const cJSON *e = cJSON_GetArrayItem(mk, i);
        if (!cJSON_IsNumber(e) || (e->valuedouble != 0.0 && e->valuedouble != 1.0))
            return ldr_fail(L, ENG_ERR_MANIFEST, "field 'mask': element %d must be 0 or 1", i);
        if (e->valuedouble == 1.0)
            p->tf[p->ntf++] = i;
        else
            p->id[p->nid++] = i;
    }
    if (p->ntf == 0)
        return ldr_fail(L, ENG_ERR_MANIFEST, "field 'mask': no feature is transformed");
    double hidden = 0.0;
    enum eng_status st;
    if (!absent(j, "hidden_features")) {
        if ((st = ldr_num(L, j, "hidden_features", true, 0.0, &hidden)) != ENG_OK)
            return st;
        if (!(hidden >= 1.0) || !isfinite(hidden))
            return ldr_fail(L, ENG_ERR_MANIFEST, "field 'hidden_features' must be >= 1 (or "
                            "absent: no division), got %g", hidden);
    }
    if ((st = rqs_nflows_load(L, j, hidden, &p->spl)) != ENG_OK)
        return st;
    p->P = rqs_nflows_params(&p->spl);
    p->nin = p->nid + cw;
    if (p->nin == 0)
        return ldr_fail(L, ENG_ERR_MANIFEST, "the conditioner has no input: every feature is "
                        "transformed and the block reads no condition");
    const cJSON *cj;
    if ((st = ldr_obj(L, j, "conditioner", true, &cj)) != ENG_OK)
        return st;
    static const char *const types[] = {"ResidualNet", "mlp"};
    int ty;
    size_t m = ldr_push(L, ".conditioner");
    st = ldr_enum(L, cj, "type", true, 0, types, 2, &ty);
    ldr_pop(L, m);
    if (st != ENG_OK)
        return st;
    if (ty == 1) {
        p->resnet = false;
        return ldr_subnet(L, j, "conditioner", p->nid, cw, p->ntf * p->P, &p->mlp);
    }
    p->resnet = true;
    m = ldr_push(L, ".conditioner");
    st = load_resnet(b, L, p, cj);
    ldr_pop(L, m);
    return st;
}

static void rqsc_certify(const struct blk *b, struct eng_block_cert *out)
{
    const struct rqsc *p = b->priv;
    out->invertible = true;
    out->guarantee = ENG_GUARANTEE_ANALYTIC;
    snprintf(out->reason, sizeof(out->reason),
             "nflows rational-quadratic spline coupling (%d bins, identity outside [-%g, %g], "
             "%d of %d features transformed): closed-form inverse by the quadratic root",
             p->spl.K, p->spl.B, p->spl.B, p->ntf, p->d);
}

const struct blk_ops blk_rqscoupling_ops = {
    .type = "RQSCoupling",
    .takes_cond = true,
    .load = rqsc_load,
    .scratch = rqsc_scratch,
    .forward = rqsc_forward,
    .inverse = rqsc_inverse,
    .certify = rqsc_certify,
};

/* ---- LULinear ------------------------------------------------------------------------- */

struct lulin {
    int d;
    double *Lm, *Um;        /* d x d, row-major: L unit lower, U upper with its diagonal */
    const double *bias;     /* d */
    double logdet;
};

static size_t lu_scratch(const struct blk *b, int rows)
{
    (void)rows;
    return cpl_round(2 * (size_t)b->d + 2);
}

static void lu_forward(const struct blk *b, struct blk_io *io)
{
    const struct lulin *p = b->priv;
    const int d = p->d;
    double *t = dwork(io->scratch);
    for (int r = 0; r < io->n; r++) {
        float *x = io->x + (size_t)r * d;
        for (int i = 0; i < d; i++) {
            double s = 0.0;
            for (int j = i; j < d; j++)
                s += p->Um[(size_t)i * d + j] * (double)x[j];
            t[i] = s;
        }
        for (int i = 0; i < d; i++) {
            double s = 0.0;
            for (int j = 0; j < i; j++)
                s += p->Lm[(size_t)i * d + j] * t[j];
            x[i] = (float)(s + t[i] + p->bias[i]);
        }
        io->log_det[r] += p->logdet;
    }
}

static void lu_inverse(const struct blk *b, struct blk_io *io)
{
    const struct lulin *p = b->priv;
    const int d = p->d;
    double *t = dwork(io->scratch);
    for (int r = 0; r < io->n; r++) {
        float *x = io->x + (size_t)r * d;
        for (int i = 0; i < d; i++) {
            double s = (double)x[i] - p->bias[i];
            for (int j = 0; j < i; j++)
                s -= p->Lm[(size_t)i * d + j] * t[j];
            t[i] = s;
        }
        for (int i = d - 1; i >= 0; i--) {
            double s = t[i];
            for (int j = i + 1; j < d; j++)
                s -= p->Um[(size_t)i * d + j] * t[j];
            t[i] = s / p->Um[(size_t)i * d + i];
        }
        for (int i = 0; i < d; i++)
            x[i] = (float)t[i];
        io->log_det[r] -= p->logdet;
    }
}

static enum eng_status lu_load(struct blk *b, struct ldr *L, const cJSON *j)
{
    const int d = b->d;
    struct lulin *p = ldr_alloc(L, sizeof(*p));
    if (!p)
        return ENG_ERR_NOMEM;
    b->priv = p;
    p->d = d;
    int64_t nt[1] = {(int64_t)d * (d - 1) / 2}, nd[1] = {d};
    const double *lo = NULL, *up = NULL, *ud, *bias = NULL;
    double eps;
    enum eng_status st;
    if ((nt[0] > 0 && ((st = ldr_tensor_f64(L, j, "lower_entries", true, 1, nt, &lo)) != ENG_OK ||
                       (st = ldr_tensor_f64(L, j, "upper_entries", true, 1, nt, &up)) != ENG_OK)) ||
        (st = ldr_tensor_f64(L, j, "unconstrained_upper_diag", true, 1, nd, &ud)) != ENG_OK ||
        (st = ldr_tensor_f64(L, j, "bias", false, 1, nd, &bias)) != ENG_OK ||
        (st = ldr_num(L, j, "eps", false, 1e-3, &eps)) != ENG_OK)
        return st;
    if (!(eps > 0.0) || !(eps < 1e3))
        return ldr_fail(L, ENG_ERR_MANIFEST, "field 'eps' must be in (0, 1000), got %g", eps);
    p->Lm = ldr_alloc(L, sizeof(double) * (size_t)d * d);
    p->Um = ldr_alloc(L, sizeof(double) * (size_t)d * d);
    double *bz = ldr_alloc(L, sizeof(double) * (size_t)d);
    if (!p->Lm || !p->Um || !bz)
        return ENG_ERR_NOMEM;
    memset(p->Lm, 0, sizeof(double) * (size_t)d * d);
    memset(p->Um, 0, sizeof(double) * (size_t)d * d);
    size_t e = 0;
    for (int i = 1; i < d; i++)     /* tril_indices(k = -1): row by row */
        for (int jj = 0; jj < i; jj++)
            p->Lm[(size_t)i * d + jj] = lo[e++];
    e = 0;
    for (int i = 0; i < d; i++)     /* triu_indices(k = 1) */
        for (int jj = i + 1; jj < d; jj++)
            p->Um[(size_t)i * d + jj] = up[e++];
    p->logdet = 0.0;
    for (int i = 0; i < d; i++) {
        double u = ud[i];
        double sp = u > 20.0 ? u : em_log1p(em_exp(u));
        p->Lm[(size_t)i * d + i] = 1.0;
        p->Um[(size_t)i * d + i] = sp + eps;
        p->logdet += em_log(sp + eps);
        bz[i] = bias ? bias[i] : 0.0;
    }
    p->bias = bz;
    b->n_params = 2 * nt[0] + 2 * (long long)d;
    return ENG_OK;
}

static void lu_certify(const struct blk *b, struct eng_block_cert *out)
{
    const struct lulin *p = b->priv;
    out->invertible = true;
    out->guarantee = ENG_GUARANTEE_ANALYTIC;
    snprintf(out->reason, sizeof(out->reason),
             "LU-parameterized linear map (unit lower L, upper U with diagonal softplus + eps "
             "> 0): inverse by two triangular solves, log|det| %.6g", p->logdet);
}

const struct blk_ops blk_lulinear_ops = {
    .type = "LULinear",
    .load = lu_load,
    .scratch = lu_scratch,
    .forward = lu_forward,
    .inverse = lu_inverse,
    .certify = lu_certify,
};
