/*
 * zuko.c — ZukoMaskedAutoregressive: zuko's MaskedAutoregressiveTransform (the transforms
 * of zuko.flows.MAF and zuko.flows.NSF, which sbi builds for "zuko_maf" and "zuko_nsf")
 * with its MaskedMLP hypernetwork, and zuko's ElementWiseTransform (what zuko >= 1.1
 * builds instead when there is a single feature).
 *
 * Hypernetwork (zuko.nn.MaskedMLP, fully autoregressive: passes = features): its input is
 * cat(x, c) (the context after the features), its layers are MaskedLinear (y = x (W * A)^T
 * + b) with the activation after every hidden layer, and its output holds P parameters per
 * feature, feature i at outputs [i P, (i + 1) P) (torch's unflatten(-1, (-1, P))).  The
 * feature order is the `order` buffer: feature i has rank order[i], a permutation of
 * 0..D-1, and depends on the features of lower rank.  zuko builds the masks from the unique
 * rows of the adjacency matrix, which sorted are the ranks 0..D-1; rank 0 reads nothing
 * and is dropped unless there is a context, so with r0 = (context ? 0 : 1) hidden unit o
 * of every layer has rank r0 + o % (D - r0).  Masks: a first-layer unit of rank r reads
 * the features of rank < r and every context column; a hidden unit of rank r reads the
 * units of rank <= r below it; the P outputs of a feature of rank r read the last hidden
 * units of rank <= r.  The stored masks are compared with these at load (a different one
 * is refused naming its tensor) and multiplied into the weights.
 *
 * Univariate maps (zuko.transforms; `slope` is not in the state dict: 1e-3 in zuko 1.0.0
 * and >= 1.5.0, 1e-4 in 1.1.0 to 1.4.x, so the manifest records it), computed in double:
 *   affine (MonotonicAffineTransform(shift, a), P = 2):
 *     log s = a / (1 + |a / ln slope|),  y = x e^{log s} + shift,  ladj = log s;
 *   rqs (MonotonicRQSTransform(w, h, d), P = 3K - 1, bound B):
 *     w <- w / (1 + |2 w / ln slope|), same for h, d <- d / (1 + |d / ln slope|);
 *     knots X_j = B (2 cumsum(softmax w)_j - 1) with X_0 = -B, Y likewise from h,
 *     derivatives 1, e^{d_1} .. e^{d_{K-1}}, 1; bin k = #{X_j < x} - 1 (Y for the
 *     inverse); outside 0 <= k < K the map is the identity with ladj 0; inside, Durkan
 *     et al.'s rational-quadratic segment and its quadratic-root inverse.
 *
 * Layout and speed: at load the units of every hidden layer are sorted by rank (stably), so
 * rank group g is one contiguous range reading a prefix of the layer below (inputs: the
 * features of rank < g, in rank order; hidden: the units of rank <= g), and the output rows
 * are put in rank order; each group's rows are packed with their prefix.  The rank-sorted
 * weights are block triangular, so both directions run group by group and skip the masked
 * blocks: the density direction (one pass) computes groups 0..D-1 of every layer and the
 * parameters of every feature; the sampling direction (D passes) computes at pass k the
 * rank-k groups and the rank-k feature only, so the whole network is evaluated once in total,
 * not D times.  The context part of the first layer (b0 + W_c c) is one product per tile,
 * once when the condition is shared.  The spline's exponentials go through the kernels'
 * vector exp, the rest of each univariate map is scalar double code; products go through
 * the model's kernels: results do not depend on the kernel path, the tile or the rows
 * beside.  Scratch only (zk_scratch); nothing is allocated per call.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../block.h"
#include "../emath.h"
#include "../kern.h"
#include "../loader.h"
#include "../safetensors.h"
#include "coupling.h"

enum ztr { ZT_AFFINE = 0, ZT_RQS };

/* One Linear in rank-sorted order. */
struct zlin {
    int out, in;
    const float **gp;       /* [D]: the rows of rank group g, their input prefix, packed;
                               NULL when the group is empty */
    const float *b;         /* out */
};

struct zuko {
    int D, cw, nl, P, K;
    enum ztr tr;
    double bound, ln_slope;
    double slope;
    enum act_type act;
    bool elementwise;       /* ElementWiseTransform: no feature columns, all units rank 0 */
    int xin;                /* feature columns of the first layer: D, or 0 (element-wise) */
    int *feat;              /* [D]: the feature of rank k */
    int *rank;              /* [D]: the rank of feature i (zuko's order) */
    int *width;             /* [nl] */
    int wmax;
    int **goff, **gcnt, **hpre;     /* [nl][D]: rank group g of layer l, units of rank <= g */
    struct zlin *lin;       /* [nl] hidden layers (the first one's feature columns only) */
    const float *cwp;       /* first layer's context columns, packed (width[0] x cw) */
    struct zlin fin;        /* last hidden -> D P, rows in rank order; gp[k]: rank k's P rows */
    const float *phi;       /* element-wise without context: the D P constant parameters */
};

/* ---- univariate maps ------------------------------------------------------------------- */

#define ZK_INLINE static inline __attribute__((always_inline))

ZK_INLINE double squash(double v, double c)
{
    return v / (1.0 + fabs(v / c));
}

/* rqs: e[j] = exp(squash(p[j])) for the P raw parameters of each of nf consecutive features
 * (widths and heights with ln slope / 2, derivatives with ln slope), in float: the squash
 * in one loop, the exponentials through the kernels' vector em_expf_fast (float arithmetic,
 * within 1 ulp; the same bits on every path).  The exponents are bounded by |ln slope|, so softmax needs no max subtraction. */
static void rqs_exps(const struct zuko *z, const struct kern *k, const float *p, float *e,
                     int nf)
{
    const int K = z->K, P = z->P;
    const float c2 = (float)(z->ln_slope / 2.0), c1 = (float)z->ln_slope;
    for (int f = 0; f < nf; f++) {
        const float *q = p + (size_t)f * P;
        float *o = e + (size_t)f * P;
        for (int j = 0; j < 2 * K; j++)
            o[j] = q[j] / (1.0f + fabsf(q[j] / c2));
        for (int j = 2 * K; j < P; j++)
            o[j] = q[j] / (1.0f + fabsf(q[j] / c1));
    }
    k->map(KF_EXP_FAST, e, (size_t)nf * (size_t)P);
}

/* Knots of one feature from its exponentials e (3K - 1): T (K + 1) from e[off .. off + K). */
ZK_INLINE void rqs_knots(const struct zuko *z, const float *e, double *T)
{
    const int K = z->K;
    const double B = z->bound;
    double s = 0.0;
    for (int j = 0; j < K; j++)
        s += e[j];
    double cum = 0.0, inv = 1.0 / s;
    T[0] = -B;
    for (int j = 0; j < K; j++) {
        cum += e[j];
        T[j + 1] = B * (2.0 * (cum * inv) - 1.0);
    }
}

/* Bin of v among the knots T (K + 1): #{T_j < v} - 1. */
ZK_INLINE int rqs_bin(const double *T, int K, double v)
{
    int c = 0;
    for (int j = 0; j <= K; j++)
        c += T[j] < v;
    return c - 1;
}

/* log f' of bin k at relative position t (the segment's s, d0, d1). */
ZK_INLINE double rqs_ladj(double s, double d0, double d1, double t)
{
    double u = t * (1.0 - t), den = s + (d0 + d1 - 2.0 * s) * u;
    return em_log(s * s * (2.0 * s * u + d0 * (1.0 - t) * (1.0 - t) + d1 * t * t) / (den * den));
}

/* y = f(x) (inv false) or x = f^-1(y) (inv true) for one feature with exponentials e;
 * *ladj = log f' at x. */
ZK_INLINE double rqs_map(const struct zuko *z, const float *e, double v, bool inv, double *ladj)
{
    const int K = z->K;
    double X[65], Y[65];
    rqs_knots(z, e, X);
    rqs_knots(z, e + K, Y);
    int k = rqs_bin(inv ? Y : X, K, v);
    if (k < 0 || k >= K) {
        *ladj = 0.0;
        return v;
    }
    double x0 = X[k], x1 = X[k + 1], y0 = Y[k], y1 = Y[k + 1];
    double d0 = k > 0 ? e[2 * K + k - 1] : 1.0, d1 = k < K - 1 ? e[2 * K + k] : 1.0;
    double s = (y1 - y0) / (x1 - x0), eps = d0 + d1 - 2.0 * s;
    if (!inv) {
        double t = (v - x0) / (x1 - x0), u = t * (1.0 - t);
        *ladj = rqs_ladj(s, d0, d1, t);
        return y0 + (y1 - y0) * (s * t * t + d0 * u) / (s + eps * u);
    }
    double yy = v - y0;
    double a = (y1 - y0) * (s - d0) + yy * eps, b = (y1 - y0) * d0 - yy * eps, c = -s * yy;
    double disc = b * b - 4.0 * a * c;
    double t = 2.0 * c / (-b - sqrt(disc > 0.0 ? disc : 0.0));
    *ladj = rqs_ladj(s, d0, d1, t);
    return x0 + t * (x1 - x0);
}

/* ---- scratch ------------------------------------------------------------------------------ */

static size_t zk_scratch(const struct blk *b, int rows)
{
    const struct zuko *p = b->priv;
    size_t r = (size_t)rows, s = 0;
    if (p->cw > 0 && p->nl > 0)
        s += cpl_round(r * (size_t)p->width[0]);
    for (int l = 0; l < p->nl; l++)
        s += cpl_round(r * (size_t)p->width[l]);
    s += cpl_round(r * (size_t)p->wmax);                  /* staging */
    s += cpl_round(r * (size_t)p->D * (size_t)p->P);      /* parameters */
    s += 2 * cpl_round(r * (size_t)p->D);                 /* x in rank order, z */
    if (p->tr == ZT_RQS)                                   /* exponentials */
        s += cpl_round(r * (size_t)p->D * (size_t)p->P);
    return s;
}

struct ws {
    int n, crow;
    float *cst;             /* crow x width[0]: b0 + W_c c */
    float *h[64];           /* n x width[l] */
    float *stage;           /* n x wmax */
    float *par;             /* n x D P, rank order */
    float *xr;              /* n x D, rank order */
    float *z;               /* n x D */
    float *ex;              /* rqs: n x D P, exp(squash(par)) */
};

static struct ws carve(const struct zuko *p, const struct blk_io *io)
{
    size_t r = (size_t)io->n;
    struct ws w = {.n = io->n};
    float *s = io->scratch;
    if (p->cw > 0 && p->nl > 0)
        w.cst = s, s += cpl_round(r * (size_t)p->width[0]);
    for (int l = 0; l < p->nl; l++)
        w.h[l] = s, s += cpl_round(r * (size_t)p->width[l]);
    w.stage = s, s += cpl_round(r * (size_t)p->wmax);
    w.par = s, s += cpl_round(r * (size_t)p->D * (size_t)p->P);
    w.xr = s, s += cpl_round(r * (size_t)p->D);
    w.z = s, s += cpl_round(r * (size_t)p->D);
    if (p->tr == ZT_RQS)
        w.ex = s;
    return w;
}

/* dst[:, c0 .. c0+cols) = act(dst[:, c0 .. c0+cols)) through the staging buffer (one call on
 * the whole block when the columns span the rows). */
static void act_cols(const struct kern *k, enum act_type act, const struct ws *w, float *y,
                     int ld, int c0, int cols)
{
    size_t n = (size_t)w->n, c = (size_t)cols;
    if (cols == ld) {
        k->act(act, 0, 0, y, n * c);
        return;
    }
    float *st = w->stage;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < c; j++)
            st[i * c + j] = y[i * (size_t)ld + (size_t)c0 + j];
    k->act(act, 0, 0, st, n * c);
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < c; j++)
            y[i * (size_t)ld + (size_t)c0 + j] = st[i * c + j];
}

/* The condition part of the first layer: cst = b0 + W_c c, one row per condition row. */
static void cond_start(const struct zuko *p, const struct blk_io *io, struct ws *w)
{
    w->crow = io->c_ld == 0 ? 1 : io->n;
    struct kern_gemm g = {.m = w->crow, .n = p->width[0], .k = p->cw, .a = io->c,
                          .lda = io->c_ld ? io->c_ld : p->cw, .b = p->cwp,
                          .bmode = KERN_B_PACKED, .init = p->lin[0].b, .y = w->cst,
                          .ldy = p->width[0]};
    io->k->gemm(&g);
}

/* Layer l, columns [c0, c0 + cols), reading the first kk columns of a (stride lda). */
static void run_layer(const struct zuko *p, const struct blk_io *io, const struct ws *w, int l,
                      int c0, int cols, int kk, const float *wp, const float *a, int lda)
{
    if (cols <= 0)
        return;
    const int W = p->width[l];
    float *y = w->h[l];
    struct kern_gemm g = {.m = w->n, .n = cols, .k = kk, .a = a, .lda = lda, .b = wp,
                          .bmode = KERN_B_PACKED, .y = y + c0, .ldy = W,
                          .act = p->act == ACT_RELU ? ACT_RELU : ACT_NONE};
    if (l == 0 && p->cw > 0) {
        const float *cs = w->cst + c0;
        if (w->crow == 1) {
            g.init = cs;
        } else {
            for (int i = 0; i < w->n; i++)
                memcpy(y + (size_t)i * W + c0, cs + (size_t)i * W, sizeof(float) * (size_t)cols);
            g.accumulate = true;
        }
    } else {
        g.init = p->lin[l].b + c0;
    }
    io->k->gemm(&g);
    if (p->act != ACT_RELU && p->act != ACT_NONE)
        act_cols(io->k, p->act, w, y, W, c0, cols);
}

/* Rank group g of every hidden layer (the groups below g of every layer are done). */
static void run_hidden(const struct zuko *p, const struct blk_io *io, const struct ws *w, int g)
{
    for (int l = 0; l < p->nl; l++) {
        if (l == 0)
            run_layer(p, io, w, 0, p->goff[0][g], p->gcnt[0][g], p->elementwise ? 0 : g,
                      p->lin[0].gp[g], w->xr, p->D);
        else
            run_layer(p, io, w, l, p->goff[l][g], p->gcnt[l][g], p->hpre[l - 1][g],
                      p->lin[l].gp[g], w->h[l - 1], p->width[l - 1]);
    }
}

/* The element-wise constants, or the P parameters of the rank-g feature into y (n rows,
 * stride ldy). */
static void run_params(const struct zuko *p, const struct blk_io *io, const struct ws *w, int g,
                       float *y, int ldy)
{
    const int n = w->n, last = p->nl - 1;
    if (p->phi) {
        for (int i = 0; i < n; i++)
            memcpy(y + (size_t)i * ldy, p->phi + (size_t)g * p->P, sizeof(float) * (size_t)p->P);
        return;
    }
    struct kern_gemm gm = {.m = n, .n = p->P, .k = p->hpre[last][g], .a = w->h[last],
                           .lda = p->width[last], .b = p->fin.gp[g], .bmode = KERN_B_PACKED,
                           .init = p->fin.b + (size_t)g * p->P, .y = y, .ldy = ldy};
    io->k->gemm(&gm);
}

/* One feature: y = f(x) or f^-1(x) with the raw parameters q (affine) or the exponentials e
 * (rqs); *ladj = log f' at the input (forward) or at the result (inverse). */
ZK_INLINE double univariate(const struct zuko *p, const float *q, const float *e, double v,
                            bool inv, double *ladj)
{
    if (p->tr == ZT_RQS)
        return rqs_map(p, e, v, inv, ladj);
    double ls = squash((double)q[1], p->ln_slope), s = em_exp(ls);
    *ladj = ls;
    return inv ? ((v - (double)q[0]) / s) : (v * s + (double)q[0]);
}

/* Density direction: one pass. */
KERN_FMA_CLONES static void zk_forward(const struct blk *b, struct blk_io *io)
{
    const struct zuko *p = b->priv;
    const int D = p->D, P = p->P, n = io->n;
    struct ws w = carve(p, io);
    if (p->cw > 0 && p->nl > 0)
        cond_start(p, io, &w);
    for (int i = 0; i < n; i++)
        for (int k = 0; k < D; k++)
            w.xr[(size_t)i * D + k] = io->x[(size_t)i * D + p->feat[k]];
    /* rank group by rank group: the rank-sorted weights are block triangular */
    for (int g = 0; g < D; g++) {
        run_hidden(p, io, &w, g);
        run_params(p, io, &w, g, w.par + (size_t)g * P, D * P);
    }
    if (p->tr == ZT_RQS)
        rqs_exps(p, io->k, w.par, w.ex, n * D);
    for (int i = 0; i < n; i++) {
        float *x = io->x + (size_t)i * D;
        double ld = 0.0;
        for (int k = 0; k < D; k++) {
            double la;
            int f = p->feat[k];
            size_t o = (size_t)i * D * P + (size_t)k * P;
            x[f] = (float)univariate(p, w.par + o, w.ex ? w.ex + o : NULL, (double)x[f], false,
                                    &la);
            ld += la;
        }
        io->log_det[i] += ld;
    }
}

/* Sampling direction: D passes; pass k computes rank group k and the rank-k feature. */
KERN_FMA_CLONES static void zk_inverse(const struct blk *b, struct blk_io *io)
{
    const struct zuko *p = b->priv;
    const int D = p->D, P = p->P, n = io->n;
    struct ws w = carve(p, io);
    if (p->cw > 0 && p->nl > 0)
        cond_start(p, io, &w);
    memcpy(w.z, io->x, sizeof(float) * (size_t)n * D);
    if (p->phi && p->tr == ZT_RQS)
        rqs_exps(p, io->k, p->phi, w.ex, D);
    for (int k = 0; k < D; k++) {
        /* the rank-k feature's parameters: row i's at q + i * qs (e + i * qs for rqs) */
        const float *q = p->phi ? p->phi + (size_t)k * P : w.par;
        const float *e = p->phi && w.ex ? w.ex + (size_t)k * P : w.ex; /* NULL for affine */
        const size_t qs = p->phi ? 0 : (size_t)P;
        if (!p->phi) {
            run_hidden(p, io, &w, k);
            run_params(p, io, &w, k, w.par, P);
            if (p->tr == ZT_RQS)
                rqs_exps(p, io->k, w.par, w.ex, n);
        }
        const int f = p->feat[k];
        for (int i = 0; i < n; i++) {
            double la;
            float v = (float)univariate(p, q + i * qs, e ? e + i * qs : NULL,
                                        (double)w.z[(size_t)i * D + f], true, &la);
            io->x[(size_t)i * D + f] = v;
            w.xr[(size_t)i * D + k] = v;
            io->log_det[i] -= la;
        }
    }
}

/* ---- load --------------------------------------------------------------------------------- */

static bool absent(const cJSON *j, const char *field)
{
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(j, field);
    return f == NULL || cJSON_IsNull(f);
}

static float *pack(struct ldr *L, int n, int k, const float *w, int ldw)
{
    float *d = ldr_alloc(L, sizeof(float) * (kern_packed_size(n, k) + 1));
    if (d)
        kern_pack_weight(n, k, w, ldw, d);
    return d;
}

/* Rank of hidden unit o (every layer). */
static int unit_rank(const struct zuko *p, int o)
{
    if (p->elementwise)
        return 0;
    int r0 = p->cw > 0 ? 0 : 1;
    return r0 + o % (p->D - r0);
}

/* Read hyper[l] {"weight", "bias", "mask"} (out x in); the mask (absent for element-wise
 * layers) must be zuko's: first layer (l = 0) unit of rank r reads the features of rank < r
 * and all context columns, hidden unit of rank r the units of rank <= r, output of a feature
 * of rank r (l = nl) the units of rank <= r.  Returns weight * mask and the bias (zeros
 * when absent), in the checkpoint's order. */
static enum eng_status read_layer(struct ldr *L, const struct zuko *p, const cJSON *lj, int l,
                                  int out, int in, float **w_out, float **b_out)
{
    size_t mark = ldr_push(L, ".hyper[%d]", l);
    enum eng_status st;
    const float *w, *m = NULL, *bias = NULL;
    int64_t shp[2] = {out, in}, bs[1] = {out};
    if (!cJSON_IsObject(lj)) {
        st = ldr_fail(L, ENG_ERR_MANIFEST, "must be an object {\"weight\", \"bias\", \"mask\"}");
        goto out;
    }
    if ((st = ldr_tensor(L, lj, "weight", true, 2, shp, &w)) != ENG_OK ||
        (st = ldr_tensor(L, lj, "bias", false, 1, bs, &bias)) != ENG_OK)
        goto out;
    if (p->elementwise && !absent(lj, "mask")) {
        st = ldr_fail(L, ENG_ERR_MANIFEST, "field 'mask': an element-wise transform (no "
                      "'order') has plain Linear layers");
        goto out;
    }
    if (!p->elementwise && (st = ldr_tensor(L, lj, "mask", true, 2, shp, &m)) != ENG_OK)
        goto out;
    for (int o = 0; m && o < out; o++) {
        int ro = l == p->nl ? p->rank[o / p->P] : unit_rank(p, o);
        for (int i = 0; i < in; i++) {
            bool keep;
            if (l == 0)
                keep = i >= p->D || p->rank[i] < ro;
            else
                keep = unit_rank(p, i) <= ro;
            float mv = m[(size_t)o * in + i];
            if (mv != (keep ? 1.0f : 0.0f)) {
                st = ldr_fail(L, ENG_ERR_TENSOR,
                              "tensor '%s' (field 'mask') is not zuko's MaskedMLP mask for this "
                              "order: element [%d][%d] is %g, expected %d",
                              ldr_tensor_name(lj, "mask"), o, i, (double)mv, keep ? 1 : 0);
                goto out;
            }
        }
    }
    float *we = ldr_alloc(L, sizeof(float) * (size_t)out * in + 1);
    float *be = ldr_alloc(L, sizeof(float) * (size_t)out + 1);
    if (!we || !be) {
        st = ENG_ERR_NOMEM;
        goto out;
    }
    for (size_t k = 0; k < (size_t)out * in; k++)
        we[k] = m ? w[k] * m[k] : w[k];
    for (int o = 0; o < out; o++)
        be[o] = bias ? bias[o] : 0.0f;
    *w_out = we, *b_out = be;
out:
    ldr_pop(L, mark);
    return st;
}

/* Output rows of hyper[l]: width[l] for hidden layers (read from the weight), D P last. */
static enum eng_status layer_rows(struct ldr *L, const cJSON *lj, int l, int *rows)
{
    size_t mark = ldr_push(L, ".hyper[%d]", l);
    const struct st_tensor *t;
    enum eng_status st = cJSON_IsObject(lj) ? ldr_raw(L, lj, "weight", &t)
                                            : ldr_fail(L, ENG_ERR_MANIFEST, "must be an object "
                                                       "{\"weight\", \"bias\", \"mask\"}");
    if (st == ENG_OK && (t->ndim != 2 || t->shape[0] <= 0 || t->shape[0] > 65536))
        st = ldr_fail(L, ENG_ERR_TENSOR, "tensor '%s' (field 'weight') must be a matrix "
                      "(out, in) with 0 < out <= 65536", t->name);
    if (st == ENG_OK)
        *rows = (int)t->shape[0];
    ldr_pop(L, mark);
    return st;
}

/* Rank groups of a layer of width W: goff, gcnt, hpre ([D] each) and the stable rank sort
 * perm (W). */
static enum eng_status groups(struct ldr *L, struct zuko *p, int W, int **goff, int **gcnt,
                              int **hpre, int **perm)
{
    const int D = p->D;
    *goff = ldr_alloc(L, sizeof(int) * (size_t)D);
    *gcnt = ldr_alloc(L, sizeof(int) * (size_t)D);
    *hpre = ldr_alloc(L, sizeof(int) * (size_t)D);
    *perm = ldr_alloc(L, sizeof(int) * (size_t)W);
    if (!*goff || !*gcnt || !*hpre || !*perm)
        return ENG_ERR_NOMEM;
    for (int o = 0; o < W; o++)
        (*gcnt)[unit_rank(p, o)]++;
    for (int g = 0, off = 0; g < D; g++) {
        (*goff)[g] = off;
        off += (*gcnt)[g];
        (*hpre)[g] = off;
    }
    for (int g = 0, pos = 0; g < D; g++)
        for (int o = 0; o < W; o++)
            if (unit_rank(p, o) == g)
                (*perm)[pos++] = o;
    return ENG_OK;
}

/* A Linear in sorted order: rows ro(o), columns col(i) (i < kin) of the checkpoint's
 * w (stride ldw); packed per rank group (rows goff[g] + [0, gcnt[g]), the first
 * pre[g] columns).  row_of/col_of NULL: identity. */
static enum eng_status build_lin(struct ldr *L, struct zuko *p, struct zlin *l, const float *w,
                                 int ldw, const float *bias, int out, int kin,
                                 const int *row_of, const int *col_of, const int *goff,
                                 const int *gcnt, const int *pre)
{
    float *ws = ldr_alloc(L, sizeof(float) * (size_t)out * kin + 1);
    float *bs = ldr_alloc(L, sizeof(float) * (size_t)out + 1);
    l->gp = ldr_alloc(L, sizeof(*l->gp) * (size_t)p->D);
    if (!ws || !bs || !l->gp)
        return ENG_ERR_NOMEM;
    for (int o = 0; o < out; o++) {
        int ro = row_of ? row_of[o] : o;
        for (int i = 0; i < kin; i++)
            ws[(size_t)o * kin + i] = w[(size_t)ro * ldw + (col_of ? col_of[i] : i)];
        bs[o] = bias[ro];
    }
    l->out = out, l->in = kin, l->b = bs;
    for (int g = 0; g < p->D; g++) {
        if (gcnt[g] == 0)
            continue;
        if (!(l->gp[g] = pack(L, gcnt[g], pre[g], ws + (size_t)goff[g] * kin, kin)))
            return ENG_ERR_NOMEM;
    }
    return ENG_OK;
}

/* "transform": {"type": "affine" | "rqs", "slope": s, "bins": K, "bound": B}. */
static enum eng_status load_transform(struct ldr *L, struct zuko *p, const cJSON *j)
{
    const cJSON *tj;
    enum eng_status st = ldr_obj(L, j, "transform", true, &tj);
    if (st != ENG_OK)
        return st;
    size_t m = ldr_push(L, ".transform");
    static const char *const types[] = {"affine", "rqs"};
    int ty;
    long K = 0;
    double bound = 5.0, slope = 0.0;
    if ((st = ldr_enum(L, tj, "type", true, 0, types, 2, &ty)) != ENG_OK ||
        (st = ldr_num(L, tj, "slope", true, 0.0, &slope)) != ENG_OK)
        goto out;
    if (!(slope > 0.0 && slope < 1.0)) {
        st = ldr_fail(L, ENG_ERR_MANIFEST, "field 'slope' must be in (0, 1), got %g", slope);
        goto out;
    }
    p->tr = ty == 0 ? ZT_AFFINE : ZT_RQS;
    p->slope = slope;
    p->ln_slope = log(slope);
    if (p->tr == ZT_RQS) {
        if ((st = ldr_int(L, tj, "bins", true, 8, 2, 64, &K)) != ENG_OK ||
            (st = ldr_num(L, tj, "bound", false, 5.0, &bound)) != ENG_OK)
            goto out;
        if (!(bound > 0.0 && bound < 1e30)) {
            st = ldr_fail(L, ENG_ERR_MANIFEST, "field 'bound' must be positive, got %g", bound);
            goto out;
        }
        p->K = (int)K, p->P = 3 * (int)K - 1, p->bound = bound;
    } else {
        if (!absent(tj, "bins") || !absent(tj, "bound")) {
            st = ldr_fail(L, ENG_ERR_MANIFEST, "fields 'bins' and 'bound' belong to the "
                          "\"rqs\" transform");
            goto out;
        }
        p->P = 2;
    }
out:
    ldr_pop(L, m);
    return st;
}

/* Element-wise transform without context: "phi", its constant parameters named as zuko's
 * maps name them: {"shift", "scale"} (zuko's phi.0, phi.1: 1 element each) or {"widths",
 * "heights", "derivatives"} (K, K, K - 1 elements). */
static enum eng_status load_phi(struct ldr *L, struct zuko *p, const cJSON *j)
{
    static const char *const aff[] = {"shift", "scale"}, *const rqs[] = {"widths", "heights",
                                                                          "derivatives"};
    const char *const *names = p->tr == ZT_RQS ? rqs : aff;
    const int nt = p->tr == ZT_RQS ? 3 : 2;
    const cJSON *pj;
    enum eng_status st = ldr_obj(L, j, "phi", true, &pj);
    if (st != ENG_OK)
        return st;
    float *phi = ldr_alloc(L, sizeof(float) * (size_t)p->P + 1);
    if (!phi)
        return ENG_ERR_NOMEM;
    size_t m = ldr_push(L, ".phi");
    for (int t = 0, at = 0; t < nt && st == ENG_OK; t++) {
        int64_t numel = p->tr == ZT_AFFINE ? 1 : (t < 2 ? p->K : p->K - 1);
        const float *v;
        if ((st = ldr_tensor_numel(L, pj, names[t], true, numel, &v)) == ENG_OK)
            memcpy(phi + at, v, sizeof(float) * (size_t)numel);
        at += (int)numel;
    }
    ldr_pop(L, m);
    p->phi = phi;
    return st;
}

static enum eng_status zk_load(struct blk *b, struct ldr *L, const cJSON *j)
{
    const int D = b->d, cw = b->cw;
    struct zuko *p = ldr_alloc(L, sizeof(*p));
    if (!p)
        return ENG_ERR_NOMEM;
    b->priv = p;
    p->D = D, p->cw = cw;
    enum eng_status st;
    if ((st = load_transform(L, p, j)) != ENG_OK)
        return st;
    static const char *const acts[] = {"relu", "tanh", "elu", "sigmoid", "silu"};
    static const enum act_type actv[] = {ACT_RELU, ACT_TANH, ACT_ELU, ACT_SIGMOID, ACT_SILU};
    int ai;
    if ((st = ldr_enum(L, j, "activation", false, 0, acts, 5, &ai)) != ENG_OK)
        return st;
    p->act = actv[ai];

    p->feat = ldr_alloc(L, sizeof(int) * (size_t)D);
    p->rank = ldr_alloc(L, sizeof(int) * (size_t)D);
    if (!p->feat || !p->rank)
        return ENG_ERR_NOMEM;
    p->elementwise = absent(j, "order");
    if (p->elementwise) {
        if (D != 1)
            return ldr_fail(L, ENG_ERR_MANIFEST, "field 'order' is missing: only a "
                            "single-feature block (zuko's ElementWiseTransform) has none");
        p->feat[0] = p->rank[0] = 0;
        p->xin = 0;
    } else {
        const int32_t *ord;
        if ((st = ldr_perm(L, j, "order", D, &ord)) != ENG_OK)
            return st;
        for (int i = 0; i < D; i++)
            p->rank[i] = ord[i], p->feat[ord[i]] = i;
        if (D == 1 && cw == 0)
            return ldr_fail(L, ENG_ERR_MANIFEST, "a single feature without context has no "
                            "masked hypernetwork (zuko builds an element-wise transform: "
                            "omit 'order', give 'phi')");
        p->xin = D;
    }

    if (p->elementwise && cw == 0) {
        if (!absent(j, "hyper"))
            return ldr_fail(L, ENG_ERR_MANIFEST, "field 'hyper': an element-wise transform "
                            "without context has constant parameters ('phi')");
        return load_phi(L, p, j);
    }
    if (!absent(j, "phi"))
        return ldr_fail(L, ENG_ERR_MANIFEST, "field 'phi' belongs to an element-wise "
                        "transform without context");
    const cJSON *hj = cJSON_GetObjectItemCaseSensitive(j, "hyper");
    if (!cJSON_IsArray(hj) || cJSON_GetArraySize(hj) < 2 || cJSON_GetArraySize(hj) > 65)
        return ldr_fail(L, ENG_ERR_MANIFEST, "field 'hyper' must be the list of the "
                        "hypernetwork's Linear layers (2 to 65: at least one hidden layer)");
    p->nl = cJSON_GetArraySize(hj) - 1;
    p->width = ldr_alloc(L, sizeof(int) * (size_t)p->nl);
    p->goff = ldr_alloc(L, sizeof(int *) * (size_t)p->nl);
    p->gcnt = ldr_alloc(L, sizeof(int *) * (size_t)p->nl);
    p->hpre = ldr_alloc(L, sizeof(int *) * (size_t)p->nl);
    p->lin = ldr_alloc(L, sizeof(*p->lin) * (size_t)p->nl);
    int **perm = ldr_alloc(L, sizeof(int *) * (size_t)p->nl);
    int *inpre = ldr_alloc(L, sizeof(int) * (size_t)D);
    if (!p->width || !p->goff || !p->gcnt || !p->hpre || !p->lin || !perm || !inpre)
        return ENG_ERR_NOMEM;
    for (int g = 0; g < D; g++)
        inpre[g] = p->elementwise ? 0 : g;
    for (int l = 0; l < p->nl; l++) {
        if ((st = layer_rows(L, cJSON_GetArrayItem(hj, l), l, &p->width[l])) != ENG_OK)
            return st;
        if (p->width[l] > p->wmax)
            p->wmax = p->width[l];
        if ((st = groups(L, p, p->width[l], &p->goff[l], &p->gcnt[l], &p->hpre[l],
                         &perm[l])) != ENG_OK)
            return st;
    }
    for (int l = 0; l <= p->nl; l++) {
        int out = l < p->nl ? p->width[l] : D * p->P;
        int in = l == 0 ? p->xin + cw : p->width[l - 1];
        float *w = NULL, *bias = NULL;
        if ((st = read_layer(L, p, cJSON_GetArrayItem(hj, l), l, out, in, &w, &bias)) != ENG_OK)
            return st;
        if (l == 0) {
            if ((st = build_lin(L, p, &p->lin[0], w, in, bias, out, p->xin, perm[0],
                                p->elementwise ? NULL : p->feat, p->goff[0], p->gcnt[0],
                                inpre)) != ENG_OK)
                return st;
            if (cw > 0) {
                float *wc = ldr_alloc(L, sizeof(float) * (size_t)out * cw + 1);
                if (!wc)
                    return ENG_ERR_NOMEM;
                for (int o = 0; o < out; o++)
                    memcpy(wc + (size_t)o * cw, w + (size_t)perm[0][o] * in + p->xin,
                           sizeof(float) * (size_t)cw);
                if (!(p->cwp = pack(L, out, cw, wc, cw)))
                    return ENG_ERR_NOMEM;
            }
        } else if (l < p->nl) {
            if ((st = build_lin(L, p, &p->lin[l], w, in, bias, out, in, perm[l], perm[l - 1],
                                p->goff[l], p->gcnt[l], p->hpre[l - 1])) != ENG_OK)
                return st;
        } else {
            /* rows in rank order: rank k's P rows are feature feat[k]'s */
            int *rows = ldr_alloc(L, sizeof(int) * (size_t)out);
            int *foff = ldr_alloc(L, sizeof(int) * (size_t)D);
            int *fcnt = ldr_alloc(L, sizeof(int) * (size_t)D);
            if (!rows || !foff || !fcnt)
                return ENG_ERR_NOMEM;
            for (int k = 0; k < D; k++) {
                for (int q = 0; q < p->P; q++)
                    rows[k * p->P + q] = p->feat[k] * p->P + q;
                foff[k] = k * p->P, fcnt[k] = p->P;
            }
            if ((st = build_lin(L, p, &p->fin, w, in, bias, out, in, rows, perm[l - 1], foff,
                                fcnt, p->hpre[l - 1])) != ENG_OK)
                return st;
        }
    }
    return ENG_OK;
}

static void zk_certify(const struct blk *b, struct eng_block_cert *out)
{
    const struct zuko *p = b->priv;
    out->invertible = true;
    out->guarantee = ENG_GUARANTEE_ANALYTIC;
    char what[96];
    if (p->tr == ZT_RQS)
        snprintf(what, sizeof(what), "monotonic rational-quadratic spline, %d bins on "
                 "[-%g, %g]", p->K, p->bound, p->bound);
    else
        snprintf(what, sizeof(what), "monotonic affine");
    snprintf(out->reason, sizeof(out->reason),
             "zuko %s (%s, slope %g): closed-form inverse in %d sequential passes; "
             "increasing univariate maps; no global Lipschitz bound",
             p->elementwise ? "element-wise transform" : "masked autoregressive transform", what,
             p->slope, p->elementwise ? 1 : p->D);
}

const struct blk_ops blk_zuko_ops = {
    .type = "ZukoMaskedAutoregressive",
    .takes_cond = true,
    .load = zk_load,
    .scratch = zk_scratch,
    .forward = zk_forward,
    .inverse = zk_inverse,
    .certify = zk_certify,
};
