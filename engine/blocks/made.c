/*
 * made.c — MaskedAffineAutoregressive: nflows' MaskedAffineAutoregressiveTransform (MAF)
 * with its MADE conditioner, and the same block inverted (IAF, manifest "inverse": true);
 * MaskedRQSAutoregressive: nflows' MaskedPiecewiseRationalQuadraticAutoregressiveTransform
 * (sbi's maf_rqs), the same MADE with M = 3K - 1 outputs per feature (output j has degree
 * j / M + 1, feature k owns outputs kM .. kM + M - 1, read by rqs.h's nflows spline with
 * linear tails, widths and heights not divided: a MADE has no hidden_features).
 *
 * MADE (nflows.transforms.made, random_mask=False): inputs x_1..x_D have degrees 1..D,
 * hidden unit o of width H has degree o % max(1, D-1) + min(1, D-1), output j of the 2D
 * outputs has degree j/2 + 1 (torchutils.tile: [1, 1, 2, 2, ...]).  A hidden mask keeps
 * weight (o, i) iff deg_out(o) >= deg_in(i), the output mask iff deg_out > deg_in.  The
 * stored masks are compared with these at load (a different one is refused naming its
 * tensor) and multiplied into the weights, as MaskedLinear does on every call.
 *
 *   feed-forward MADE ("residual": false, sbi's maf):
 *     h = act(W0 x + b0 [+ act(Wc c + bc)]);  h = act(Wj h + bj) for each block;
 *   residual MADE ("residual": true, nflows' default):
 *     h = W0 x + b0 [+ act(Wc c + bc)];
 *     per block: t = act(W1 act(h) + b1 [+ Wc1 c + bc1]);  h = h + (W2 t + b2);
 *   p = Wf h + bf (2D outputs), read as p.view(D, 2): u_k = p[2k], shift_k = p[2k + 1].
 *
 * Affine map (nflows): scale = softplus(u) + min_scale (1e-3),
 *   MAF forward (density direction):  z = scale * x + shift,  log-det += sum log scale;
 *   MAF inverse (sampling direction): x_k = (z_k - shift_k) / scale_k, one degree at a
 *   time, log-det -= sum log scale.
 * With "inverse": true the block's forward is the MAF inverse and its inverse the MAF
 * forward (nflows' InverseTransform of the same transform: an IAF).
 *
 * Layout: at load the hidden units of every layer are reordered by degree (a stable sort),
 * so the units of degree g are one contiguous group and every unit of degree g reads a
 * prefix of the layer below (inputs 0..g-1, or the hidden units of degree <= g), and the
 * outputs of feature k read the hidden units of degree <= k.  The one-pass direction runs
 * each Linear as one product on the whole (block-triangular) weight.  The sequential
 * direction computes, at pass k, only the hidden units of degree k in every layer (their
 * inputs are final by then) and the two outputs of feature k: each weight of the network
 * is used once per row in total, as in the one-pass direction, instead of D times.
 * Every product goes through the model's kernels (kern.h), so results do not depend on
 * the kernel path, the tile or the rows beside; a condition shared by the tile is
 * computed once.  Scratch only (see made_scratch); nothing is allocated per call.
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
#include "coupling.h"
#include "rqs.h"

/* One masked Linear in degree-sorted hidden order. */
struct mlin {
    int out, in;
    const float *wp;        /* out x in, masked, packed (kern_pack_weight) */
    const float **gp;       /* [D]: rows of degree group g, their input prefix, packed; NULL
                               when the group is empty */
    const float *b;         /* out (zeros when the checkpoint has none) */
    int ctx;                /* index of its condition start values, -1 when none */
    enum act_type act;      /* activation after the product (relu fused into it) */
};

struct made {
    int D, H, nb;
    bool residual, inverse;
    enum act_type act;
    float min_scale;
    int M;                  /* outputs per feature: 2 (affine) or 3K - 1 (spline) */
    bool spline;            /* MaskedRQSAutoregressive: spl instead of the affine map */
    struct rqs_nflows spl;
    int *cols;              /* 0 .. D - 1 (the spline's column list) */
    int *goff, *gcnt;       /* [D]: degree group g = units [goff, goff + gcnt) */
    int *inpre;             /* [D]: inputs read by group g of the first layer (g) */
    int *hpre;              /* [D]: hidden units of degree <= g (goff + gcnt) */
    struct mlin first;      /* x -> h */
    struct mlin *lin;       /* feed-forward: nb; residual: 2 nb (W1, W2 of each block) */
    struct mlin fin;        /* h -> p (2D); gp[k]: rows 2k, 2k+1 with prefix hpre[k] */
    /* condition layers: ctx k gives the start values of one layer, b + f(Wc c + bc) */
    int nctx;
    const float **cwp;      /* [nctx]: H x cw packed */
    const float **cb;       /* [nctx]: H */
    enum act_type *cact;    /* [nctx]: act for the first layer's, none for residual blocks' */
    const float **lb;       /* [nctx]: the bias of the layer it starts */
};

/* ---- scratch layout ------------------------------------------------------------------------ */

/* Buffers per row: nctx start rows, the layer outputs (h0, then per block: h (ff) or
 * act(h), t, h (residual)), a temp and a staging row of H, p (2D), z (D), softplus temp
 * (D). */
static int n_bufs(const struct made *p)
{
    return 1 + (p->residual ? 3 * p->nb : p->nb);
}

static size_t made_scratch(const struct blk *b, int rows)
{
    const struct made *p = b->priv;
    size_t r = (size_t)rows, H = (size_t)p->H, D = (size_t)p->D;
    size_t wk = p->spline ? cpl_round(2 * rqs_nflows_rows_work(&p->spl) + 2) : 0;
    return cpl_round(r * H * (size_t)p->nctx) + cpl_round(r * H * (size_t)n_bufs(p)) +
           2 * cpl_round(r * H) + cpl_round(r * (size_t)p->M * D) + 2 * cpl_round(r * D) + wk;
}

struct ws {
    int n;
    int crow;               /* rows of condition start values: 1 (broadcast) or n */
    float *cst;             /* nctx x crow x H */
    float *buf;             /* n_bufs x n x H */
    float *tmp;             /* n x H */
    float *stage;           /* n x H: activations of a column group */
    float *par;             /* n x M D */
    float *z;               /* n x D */
    float *sp;              /* n x D */
    double *work;           /* spline work area (spline only) */
};

static struct ws carve(const struct made *p, const struct blk_io *io)
{
    size_t r = (size_t)io->n, H = (size_t)p->H, D = (size_t)p->D;
    struct ws w = {.n = io->n};
    float *s = io->scratch;
    w.cst = s, s += cpl_round(r * H * (size_t)p->nctx);
    w.buf = s, s += cpl_round(r * H * (size_t)n_bufs(p));
    w.tmp = s, s += cpl_round(r * H);
    w.stage = s, s += cpl_round(r * H);
    w.par = s, s += cpl_round(r * (size_t)p->M * D);
    w.z = s, s += cpl_round(r * D);
    w.sp = s, s += cpl_round(r * D);
    uintptr_t u = ((uintptr_t)s + 7u) & ~(uintptr_t)7u;
    w.work = (double *)(void *)u;
    return w;
}

static float *bufp(const struct made *p, const struct ws *w, int i)
{
    return w->buf + (size_t)i * (size_t)w->n * (size_t)p->H;
}

/* Condition start values: cst[k] = lb_k + f_k(Wc_k c + bc_k), one row per condition row. */
static void cond_starts(const struct made *p, const struct blk *b, const struct blk_io *io,
                        struct ws *w)
{
    w->crow = io->c_ld == 0 ? 1 : io->n;
    const int H = p->H;
    for (int k = 0; k < p->nctx; k++) {
        float *dst = w->cst + (size_t)k * (size_t)w->crow * H;
        struct kern_gemm g = {.m = w->crow, .n = H, .k = b->cw, .a = io->c,
                              .lda = io->c_ld ? io->c_ld : b->cw, .b = p->cwp[k],
                              .bmode = KERN_B_PACKED, .init = p->cb[k], .y = dst, .ldy = H,
                              .act = p->cact[k]};
        io->k->gemm(&g);
        for (int i = 0; i < w->crow; i++)
            for (int o = 0; o < H; o++)
                dst[(size_t)i * H + o] = p->lb[k][o] + dst[(size_t)i * H + o];
    }
}

/* dst[:, c0 .. c0+cols) = act(src[:, c0 .. c0+cols)) for the tile's rows (dst may be
 * src): one call on the contiguous block when the columns span the rows, else through the
 * staging buffer.  The same function per element either way, so the same bits. */
static void act_cols(const struct kern *k, enum act_type act, const struct ws *w,
                     const float *src, int lds, int c0, int cols, float *dst, int ldd)
{
    size_t n = (size_t)w->n, c = (size_t)cols;
    if (cols == lds && cols == ldd) {
        if (dst != src)
            memcpy(dst, src, sizeof(float) * n * c);
        k->act(act, 0, 0, dst, n * c);
        return;
    }
    float *st = w->stage;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < c; j++)
            st[i * c + j] = src[i * (size_t)lds + (size_t)c0 + j];
    k->act(act, 0, 0, st, n * c);
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < c; j++)
            dst[i * (size_t)ldd + (size_t)c0 + j] = st[i * c + j];
}

/* Y[:, c0 .. c0+cols) = act(start + A[:, 0..kk) W^T) for one Linear's rows c0.. (all of
 * them with the full packed weight, or one degree group with its packed prefix block). */
static void run_lin(const struct made *p, const struct mlin *l, const struct blk_io *io,
                    const struct ws *w, int c0, int cols, int kk, const float *wp,
                    const float *a, int lda, float *y, int ldy)
{
    if (cols <= 0)
        return;
    /* relu is fused into the product; other activations run afterwards on whole columns,
     * which vectorizes better than the kernel's per-row pass over a group: a group narrower
     * than the layer is computed into the staging buffer (contiguous), activated there and
     * scattered into its columns (the same operations per element, so the same bits) */
    const bool act_after = l->act != ACT_RELU && l->act != ACT_NONE;
    const bool staged = act_after && cols != ldy;
    float *out = staged ? w->stage : y + c0;
    const int ldo = staged ? cols : ldy;
    struct kern_gemm g = {.m = w->n, .n = cols, .k = kk, .a = a, .lda = lda, .b = wp,
                          .bmode = KERN_B_PACKED, .y = out, .ldy = ldo,
                          .act = l->act == ACT_RELU ? ACT_RELU : ACT_NONE};
    if (l->ctx >= 0) {
        const float *cs = w->cst + (size_t)l->ctx * (size_t)w->crow * p->H + c0;
        if (w->crow == 1) {
            g.init = cs;
        } else {
            for (int i = 0; i < w->n; i++)
                for (int j = 0; j < cols; j++)
                    out[(size_t)i * ldo + j] = cs[(size_t)i * p->H + j];
            g.accumulate = true;
        }
    } else {
        g.init = l->b + c0;
    }
    io->k->gemm(&g);
    if (!act_after)
        return;
    if (!staged) {
        act_cols(io->k, l->act, w, y, ldy, c0, cols, y, ldy);
        return;
    }
    const size_t n = (size_t)w->n, c = (size_t)cols;
    io->k->act(l->act, 0, 0, out, n * c);
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < c; j++)
            y[i * (size_t)ldy + (size_t)c0 + j] = out[i * c + j];
}

/* The hidden layers for columns [c0, c0 + cols) of every layer: all of them (g < 0, full
 * weights) or degree group g (prefix blocks).  x is the input (stride D). */
static void run_hidden(const struct made *p, const struct blk_io *io, struct ws *w,
                       const float *x, int g)
{
    const int H = p->H, n = w->n;
    int c0 = g < 0 ? 0 : p->goff[g], cols = g < 0 ? H : p->gcnt[g];
    if (cols == 0)
        return;
    const float *wp = g < 0 ? p->first.wp : p->first.gp[g];
    run_lin(p, &p->first, io, w, c0, cols, g < 0 ? p->D : p->inpre[g], wp, x, p->D,
            bufp(p, w, 0), H);
    int kk = g < 0 ? H : p->hpre[g];
    for (int j = 0; j < p->nb; j++) {
        if (!p->residual) {
            const struct mlin *l = &p->lin[j];
            run_lin(p, l, io, w, c0, cols, kk, g < 0 ? l->wp : l->gp[g], bufp(p, w, j), H,
                    bufp(p, w, j + 1), H);
            continue;
        }
        float *h = bufp(p, w, 3 * j), *a = bufp(p, w, 3 * j + 1), *t = bufp(p, w, 3 * j + 2),
              *h2 = bufp(p, w, 3 * j + 3);
        act_cols(io->k, p->act, w, h, H, c0, cols, a, H);
        const struct mlin *l1 = &p->lin[2 * j], *l2 = &p->lin[2 * j + 1];
        run_lin(p, l1, io, w, c0, cols, kk, g < 0 ? l1->wp : l1->gp[g], a, H, t, H);
        run_lin(p, l2, io, w, c0, cols, kk, g < 0 ? l2->wp : l2->gp[g], t, H, w->tmp, H);
        for (int i = 0; i < n; i++)
            for (int o = c0; o < c0 + cols; o++)
                h2[(size_t)i * H + o] = h[(size_t)i * H + o] + w->tmp[(size_t)i * H + o];
    }
}

static float *last_hidden(const struct made *p, const struct ws *w)
{
    return bufp(p, w, n_bufs(p) - 1);
}

/* MAF forward: one pass, z = scale x + shift. */
KERN_FMA_CLONES static void maf_forward(const struct blk *b, struct blk_io *io)
{
    const struct made *p = b->priv;
    const int D = p->D, n = io->n;
    struct ws w = carve(p, io);
    if (p->nctx)
        cond_starts(p, b, io, &w);
    run_hidden(p, io, &w, io->x, -1);
    const int M = p->M;
    run_lin(p, &p->fin, io, &w, 0, M * D, p->H, p->fin.wp, last_hidden(p, &w), p->H, w.par,
            M * D);
    if (p->spline) {
        rqs_nflows_rows(&p->spl, n, io->x, D, p->cols, D, w.par, M * D, false, io->log_det,
                        w.work);
        return;
    }
    for (size_t i = 0; i < (size_t)n * D; i++)
        w.sp[i] = w.par[2 * i];
    io->k->act(ACT_SOFTPLUS, 1.0f, 20.0f, w.sp, (size_t)n * D);
    for (int i = 0; i < n; i++) {
        float *x = io->x + (size_t)i * D;
        double ld = 0.0;
        for (int k = 0; k < D; k++) {
            float s = w.sp[(size_t)i * D + k] + p->min_scale;
            x[k] = s * x[k] + w.par[(size_t)i * 2 * D + 2 * k + 1];
            ld += em_log((double)s);
        }
        io->log_det[i] += ld;
    }
}

/* MAF inverse: D passes; pass k computes the hidden units of degree k and feature k. */
KERN_FMA_CLONES static void maf_inverse(const struct blk *b, struct blk_io *io)
{
    const struct made *p = b->priv;
    const int D = p->D, n = io->n;
    struct ws w = carve(p, io);
    if (p->nctx)
        cond_starts(p, b, io, &w);
    memcpy(w.z, io->x, sizeof(float) * (size_t)n * D);
    for (int k = 0; k < D; k++) {
        run_hidden(p, io, &w, io->x, k);
        /* the M outputs of feature k: rows Mk .. Mk + M - 1 of the final layer */
        const int M = p->M;
        struct kern_gemm g = {.m = n, .n = M, .k = p->hpre[k], .a = last_hidden(p, &w),
                              .lda = p->H, .b = p->fin.gp[k], .bmode = KERN_B_PACKED,
                              .init = p->fin.b + (size_t)M * k, .y = w.par, .ldy = M};
        io->k->gemm(&g);
        if (p->spline) {
            /* column k of x still holds z_k (passes only read the columns before k) */
            rqs_nflows_rows(&p->spl, n, io->x, D, p->cols + k, 1, w.par, M, true, io->log_det,
                            w.work);
            continue;
        }
        for (int i = 0; i < n; i++)
            w.sp[i] = w.par[2 * i];
        io->k->act(ACT_SOFTPLUS, 1.0f, 20.0f, w.sp, (size_t)n);
        for (int i = 0; i < n; i++) {
            float s = w.sp[i] + p->min_scale;
            io->x[(size_t)i * D + k] = (w.z[(size_t)i * D + k] - w.par[2 * i + 1]) / s;
            io->log_det[i] -= em_log((double)s);
        }
    }
}

static void made_forward(const struct blk *b, struct blk_io *io)
{
    const struct made *p = b->priv;
    if (p->inverse)
        maf_inverse(b, io);
    else
        maf_forward(b, io);
}

static void made_inverse(const struct blk *b, struct blk_io *io)
{
    const struct made *p = b->priv;
    if (p->inverse)
        maf_forward(b, io);
    else
        maf_inverse(b, io);
}

/* ---- load ----------------------------------------------------------------------------------- */

static bool absent(const cJSON *j, const char *field)
{
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(j, field);
    return f == NULL || cJSON_IsNull(f);
}

/* Degrees of the hidden units (nflows, random_mask=False). */
static int hid_deg(int D, int o)
{
    int mx = D - 1 > 1 ? D - 1 : 1, mn = D - 1 < 1 ? D - 1 : 1;
    return o % mx + mn;
}

/* Read obj[field] = {"weight", "bias", "mask"} of a masked Linear: weight out x in in the
 * checkpoint's unit order, mask checked against the degrees; returns W * mask and the
 * bias (NULL when absent).  din/dout: the degrees of inputs and outputs; strict: the
 * output rule (>) instead of the hidden one (>=). */
static enum eng_status read_masked(struct ldr *L, const cJSON *obj, const char *field, int out,
                                   int in, const int *dout, const int *din, bool strict,
                                   float **w_out, const float **b_out)
{
    const float *w, *m;
    enum eng_status st = ldr_made_linear(L, obj, field, out, in, dout, din, strict, &w, &m, b_out);
    if (st != ENG_OK)
        return st;
    size_t mark = ldr_push(L, ".%s", field);
    float *we = ldr_alloc(L, sizeof(float) * (size_t)out * (size_t)in + 1);
    if (!we) {
        st = ENG_ERR_NOMEM;
        goto out;
    }
    for (size_t k = 0; k < (size_t)out * in; k++)
        we[k] = w[k] * m[k];
    *w_out = we;
out:
    ldr_pop(L, mark);
    return st;
}

static float *pack(struct ldr *L, int n, int k, const float *w, int ldw)
{
    float *d = ldr_alloc(L, sizeof(float) * (kern_packed_size(n, k) + 1));
    if (d)
        kern_pack_weight(n, k, w, ldw, d);
    return d;
}

/* Reorder a masked Linear into sorted hidden order (rows by `rperm` when set, columns by
 * `cperm` when set), pack it whole and per degree group. */
static enum eng_status build_lin(struct ldr *L, struct made *p, struct mlin *l, const float *w,
                                 const float *bias, int out, int in, const int *rperm,
                                 const int *cperm, bool hidden_rows)
{
    float *ws = ldr_alloc(L, sizeof(float) * (size_t)out * in + 1);
    float *bs = ldr_alloc(L, sizeof(float) * (size_t)out + 1);
    l->gp = ldr_alloc(L, sizeof(*l->gp) * (size_t)p->D);
    if (!ws || !bs || !l->gp)
        return ENG_ERR_NOMEM;
    for (int o = 0; o < out; o++) {
        int ro = rperm ? rperm[o] : o;
        for (int i = 0; i < in; i++)
            ws[(size_t)o * in + i] = w[(size_t)ro * in + (cperm ? cperm[i] : i)];
        bs[o] = bias ? bias[ro] : 0.0f;
    }
    l->out = out, l->in = in, l->b = bs, l->ctx = -1;
    if (!(l->wp = pack(L, out, in, ws, in)))
        return ENG_ERR_NOMEM;
    for (int g = 0; g < p->D; g++) {
        int r0, rn, kk;
        if (hidden_rows) {
            r0 = p->goff[g], rn = p->gcnt[g];
            kk = in == p->D ? p->inpre[g] : p->hpre[g];
        } else { /* final layer: feature g */
            r0 = p->M * g, rn = p->M, kk = p->hpre[g];
        }
        if (rn == 0)
            continue;
        if (!(l->gp[g] = pack(L, rn, kk, ws + (size_t)r0 * in, in)))
            return ENG_ERR_NOMEM;
    }
    return ENG_OK;
}

static enum eng_status add_ctx(struct ldr *L, struct made *p, struct mlin *l, const cJSON *obj,
                               const char *field, int cw, const int *perm, enum act_type act)
{
    const float *w, *bias;
    enum eng_status st = ldr_linear(L, obj, field, p->H, cw, &w, &bias);
    if (st != ENG_OK)
        return st;
    float *ws = ldr_alloc(L, sizeof(float) * (size_t)p->H * cw + 1);
    float *bs = ldr_alloc(L, sizeof(float) * (size_t)p->H + 1);
    if (!ws || !bs)
        return ENG_ERR_NOMEM;
    for (int o = 0; o < p->H; o++) {
        memcpy(ws + (size_t)o * cw, w + (size_t)perm[o] * cw, sizeof(float) * (size_t)cw);
        bs[o] = bias ? bias[perm[o]] : 0.0f;
    }
    int k = p->nctx++;
    if (!(p->cwp[k] = pack(L, p->H, cw, ws, cw)))
        return ENG_ERR_NOMEM;
    p->cb[k] = bs, p->cact[k] = act, p->lb[k] = l->b;
    l->ctx = k;
    return ENG_OK;
}

/* Both block types: MaskedAffineAutoregressive (spline false) and MaskedRQSAutoregressive. */
static enum eng_status made_load_any(struct blk *b, struct ldr *L, const cJSON *j, bool spline)
{
    const int D = b->d, cw = b->cw;
    struct made *p = ldr_alloc(L, sizeof(*p));
    if (!p)
        return ENG_ERR_NOMEM;
    b->priv = p;
    p->D = D;
    p->M = 2;
    p->spline = spline;
    enum eng_status st;
    if ((st = ldr_bool(L, j, "inverse", false, false, &p->inverse)) != ENG_OK)
        return st;
    if (spline) {
        /* "spline": nflows' unconstrained spline (no division: a MADE has no
         * hidden_features attribute) */
        const cJSON *sj;
        if ((st = ldr_obj(L, j, "spline", true, &sj)) != ENG_OK)
            return st;
        size_t m = ldr_push(L, ".spline");
        st = rqs_nflows_load(L, sj, 0.0, &p->spl);
        ldr_pop(L, m);
        if (st != ENG_OK)
            return st;
        p->M = rqs_nflows_params(&p->spl);
        if (!(p->cols = ldr_alloc(L, sizeof(int) * (size_t)D)))
            return ENG_ERR_NOMEM;
        for (int k = 0; k < D; k++)
            p->cols[k] = k;
    }
    /* "scale": {"type": "nflows", "min_scale": 1e-3} */
    double min_scale = 1e-3;
    if (!spline && !absent(j, "scale")) {
        const cJSON *sj;
        if ((st = ldr_obj(L, j, "scale", true, &sj)) != ENG_OK)
            return st;
        size_t m = ldr_push(L, ".scale");
        static const char *const stypes[] = {"nflows"};
        int sty;
        if ((st = ldr_enum(L, sj, "type", true, 0, stypes, 1, &sty)) == ENG_OK &&
            (st = ldr_num(L, sj, "min_scale", false, 1e-3, &min_scale)) == ENG_OK &&
            !(min_scale > 0.0 && min_scale < 1e3))
            st = ldr_fail(L, ENG_ERR_MANIFEST, "field 'min_scale' must be in (0, 1000), got %g",
                          min_scale);
        ldr_pop(L, m);
        if (st != ENG_OK)
            return st;
    }
    p->min_scale = (float)min_scale;

    const cJSON *mj;
    if ((st = ldr_obj(L, j, "made", true, &mj)) != ENG_OK)
        return st;
    size_t mark = ldr_push(L, ".made");
    static const char *const acts[] = {"relu", "tanh"};
    int ai;
    long nb = 0;
    if ((st = ldr_enum(L, mj, "activation", true, 0, acts, 2, &ai)) != ENG_OK ||
        (st = ldr_bool(L, mj, "residual", true, false, &p->residual)) != ENG_OK)
        goto out;
    p->act = ai == 0 ? ACT_RELU : ACT_TANH;
    const cJSON *blocks = cJSON_GetObjectItemCaseSensitive(mj, "blocks");
    if (!cJSON_IsArray(blocks) || cJSON_GetArraySize(blocks) > 64) {
        st = ldr_fail(L, ENG_ERR_MANIFEST, "field 'blocks' must be a list (at most 64)");
        goto out;
    }
    nb = cJSON_GetArraySize(blocks);
    p->nb = (int)nb;
    if (cw > 0 && absent(mj, "context")) {
        st = ldr_fail(L, ENG_ERR_MANIFEST, "field 'context' is missing: the block reads a "
                      "condition (cond) and MADE's context layer takes it");
        goto out;
    }
    if (cw == 0 && !absent(mj, "context")) {
        st = ldr_fail(L, ENG_ERR_MANIFEST, "field 'context': the block reads no condition "
                      "(set cond)");
        goto out;
    }

    /* hidden width from the first layer */
    const cJSON *ij;
    if ((st = ldr_obj(L, mj, "initial", true, &ij)) != ENG_OK)
        goto out;
    const struct st_tensor *wt;
    {
        size_t m2 = ldr_push(L, ".initial");
        st = ldr_raw(L, ij, "weight", &wt);
        if (st == ENG_OK && (wt->ndim != 2 || wt->shape[0] <= 0 || wt->shape[0] > 65536))
            st = ldr_fail(L, ENG_ERR_TENSOR, "tensor '%s' (field 'weight') must be a matrix "
                          "(hidden, %d) with 0 < hidden <= 65536", wt->name, D);
        ldr_pop(L, m2);
        if (st != ENG_OK)
            goto out;
    }
    const int H = (int)wt->shape[0];
    p->H = H;

    /* degrees and the degree-sorted order of the hidden units */
    int *din = ldr_alloc(L, sizeof(int) * (size_t)D), *dh = ldr_alloc(L, sizeof(int) * (size_t)H);
    const int M = p->M;
    int *dout = ldr_alloc(L, sizeof(int) * (size_t)M * (size_t)D);
    int *perm = ldr_alloc(L, sizeof(int) * (size_t)H);
    p->goff = ldr_alloc(L, sizeof(int) * (size_t)D);
    p->gcnt = ldr_alloc(L, sizeof(int) * (size_t)D);
    p->inpre = ldr_alloc(L, sizeof(int) * (size_t)D);
    p->hpre = ldr_alloc(L, sizeof(int) * (size_t)D);
    int nctx_max = 1 + (int)nb;
    p->cwp = ldr_alloc(L, sizeof(*p->cwp) * (size_t)nctx_max);
    p->cb = ldr_alloc(L, sizeof(*p->cb) * (size_t)nctx_max);
    p->cact = ldr_alloc(L, sizeof(*p->cact) * (size_t)nctx_max);
    p->lb = ldr_alloc(L, sizeof(*p->lb) * (size_t)nctx_max);
    p->lin = ldr_alloc(L, sizeof(*p->lin) * (size_t)(2 * nb + 1));
    if (!din || !dh || !dout || !perm || !p->goff || !p->gcnt || !p->inpre || !p->hpre ||
        !p->cwp || !p->cb || !p->cact || !p->lb || !p->lin) {
        st = ENG_ERR_NOMEM;
        goto out;
    }
    for (int i = 0; i < D; i++)
        din[i] = i + 1;
    for (int o = 0; o < M * D; o++)
        dout[o] = o / M + 1;
    for (int o = 0; o < H; o++) {
        dh[o] = hid_deg(D, o);
        p->gcnt[dh[o]]++;   /* degrees lie in [0, D - 1] */
    }
    for (int g = 0, off = 0; g < D; g++) {
        p->goff[g] = off;
        off += p->gcnt[g];
        p->hpre[g] = off;
        p->inpre[g] = g;
    }
    for (int g = 0, pos = 0; g < D; g++) /* stable sort by degree */
        for (int o = 0; o < H; o++)
            if (dh[o] == g)
                perm[pos++] = o;

    float *w;
    const float *bias;
    if ((st = read_masked(L, mj, "initial", H, D, dh, din, false, &w, &bias)) != ENG_OK ||
        (st = build_lin(L, p, &p->first, w, bias, H, D, perm, NULL, true)) != ENG_OK)
        goto out;
    p->first.act = p->residual ? ACT_NONE : p->act;
    if (cw > 0 && (st = add_ctx(L, p, &p->first, mj, "context", cw, perm, p->act)) != ENG_OK)
        goto out;

    for (int k = 0; k < nb; k++) {
        const cJSON *bj = cJSON_GetArrayItem(blocks, k);
        size_t m2 = ldr_push(L, ".blocks[%d]", k);
        if (!p->residual) {
            struct mlin *l = &p->lin[k];
            if ((st = read_masked(L, bj, "linear", H, H, dh, dh, false, &w, &bias)) == ENG_OK &&
                (st = build_lin(L, p, l, w, bias, H, H, perm, perm, true)) == ENG_OK)
                l->act = p->act;
        } else {
            struct mlin *l1 = &p->lin[2 * k], *l2 = &p->lin[2 * k + 1];
            if ((st = read_masked(L, bj, "linear0", H, H, dh, dh, false, &w, &bias)) == ENG_OK &&
                (st = build_lin(L, p, l1, w, bias, H, H, perm, perm, true)) == ENG_OK &&
                (st = read_masked(L, bj, "linear1", H, H, dh, dh, false, &w, &bias)) == ENG_OK &&
                (st = build_lin(L, p, l2, w, bias, H, H, perm, perm, true)) == ENG_OK) {
                l1->act = p->act, l2->act = ACT_NONE;
                if (cw > 0 && absent(bj, "context"))
                    st = ldr_fail(L, ENG_ERR_MANIFEST, "field 'context' is missing: a residual "
                                  "block of a conditional MADE has its own context layer");
                else if (cw == 0 && !absent(bj, "context"))
                    st = ldr_fail(L, ENG_ERR_MANIFEST, "field 'context': the block reads no "
                                  "condition (set cond)");
                else if (cw > 0)
                    st = add_ctx(L, p, l1, bj, "context", cw, perm, ACT_NONE);
            }
        }
        ldr_pop(L, m2);
        if (st != ENG_OK)
            goto out;
    }
    if ((st = read_masked(L, mj, "final", M * D, H, dout, dh, true, &w, &bias)) != ENG_OK ||
        (st = build_lin(L, p, &p->fin, w, bias, M * D, H, NULL, perm, false)) != ENG_OK)
        goto out;
    p->fin.act = ACT_NONE;
out:
    ldr_pop(L, mark);
    return st;
}

static enum eng_status made_load(struct blk *b, struct ldr *L, const cJSON *j)
{
    return made_load_any(b, L, j, false);
}

static enum eng_status mrqs_load(struct blk *b, struct ldr *L, const cJSON *j)
{
    return made_load_any(b, L, j, true);
}

static void made_certify(const struct blk *b, struct eng_block_cert *out)
{
    const struct made *p = b->priv;
    out->invertible = true;
    out->guarantee = ENG_GUARANTEE_ANALYTIC;
    if (p->spline) {
        snprintf(out->reason, sizeof(out->reason),
                 "masked rational-quadratic spline autoregressive (%s, MADE %d x %d, %s%s, "
                 "%d bins, identity outside [-%g, %g]): closed-form inverse in %d sequential "
                 "passes; no global Lipschitz bound",
                 p->inverse ? "inverted" : "density direction one pass", p->nb, p->H,
                 p->residual ? "residual, " : "", p->act == ACT_TANH ? "tanh" : "relu",
                 p->spl.K, p->spl.B, p->spl.B, p->D);
        return;
    }
    snprintf(out->reason, sizeof(out->reason),
             "masked affine autoregressive (%s, MADE %d x %d, %s%s): closed-form inverse in %d "
             "sequential passes; every scale is softplus(u) + %g > 0; no global Lipschitz "
             "bound (the scale depends on the other features)",
             p->inverse ? "IAF" : "MAF", p->nb, p->H, p->residual ? "residual, " : "",
             p->act == ACT_TANH ? "tanh" : "relu", p->D, (double)p->min_scale);
}

const struct blk_ops blk_maf_ops = {
    .type = "MaskedAffineAutoregressive",
    .takes_cond = true,
    .load = made_load,
    .scratch = made_scratch,
    .forward = made_forward,
    .inverse = made_inverse,
    .certify = made_certify,
};

const struct blk_ops blk_mrqs_ops = {
    .type = "MaskedRQSAutoregressive",
    .takes_cond = true,
    .load = mrqs_load,
    .scratch = made_scratch,
    .forward = made_forward,
    .inverse = made_inverse,
    .certify = made_certify,
};
