/*
 * mogmade.c — the MADE mixture of the mdn kind (mixture "type": "made"): sbi's `made`
 * density estimator, nflows' MixtureOfGaussiansMADE inside sbi's MADEMoGWrapper.
 *
 * The network sees F = D + 1 inputs u = (0, x_s1, ..., x_sD) (the wrapper's leading zero
 * input) and a context c (the standardized observation, or the embedding net's output):
 *
 *   t = W0 u + b0 + Wc c + bc                     (initial masked layer + context layer)
 *   per residual block: t += W2 act(W1 act(t) + b1 + Wc_b c + bc_b) + b2
 *   o = Wf t + bf                                 (F * 3K outputs, no activation before)
 *
 * Output f * 3K + 3k + j of feature f (0-based) is the logit (j = 0), mean (1) or
 * unconstrained std (2) of component k.  Features 1..D are x's dimensions; feature 0's
 * outputs are unused.  The density is
 *
 *   log q(x_s) = sum_{d=1..D} logsumexp_k [ log softmax(logits)_k
 *                 - 1/2 (log 2 pi + 2 log s_k + ((x_sd - m_k) / s_k)^2) ],
 *   s_k = softplus(unconstrained_k) + epsilon,
 *
 * computed with one pass of the network.  A draw takes D passes: pass d sets
 * u = (0, x_s1..x_s(d-1), 0, ...), picks a component of feature d from the softmax with the
 * uniform u_d and sets x_sd = m_k + s_k e_d.  (sbi's own sampler draws feature 0 as well
 * and feeds it back, so its samples do not follow the density it evaluates; this engine
 * keeps the leading input at 0 in both directions.)
 *
 * Masks (nflows MaskedLinear, random_mask=False): input i has degree i + 1, hidden unit o
 * degree o % max(1, F - 1) + min(1, F - 1), output o degree o / (3K) + 1; hidden masks keep
 * (o, i) iff deg_out >= deg_in, the final mask iff deg_out > deg_in.  The stored masks are
 * compared with these at load; a different one is refused naming its tensor.
 *
 * Everything after the float32 weights runs in double in a fixed order.
 *
 * Ownership: struct mogmade and its arrays live in the model's arena (immutable after
 * load); the per-observation context terms and the pass scratch are caller scratch (`par`).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "emath.h"
#include "loader.h"
#include "model_impl.h"

#define LOG_2PI 1.8378770664093453
#define MM_MAX_BLOCKS 64
#define MM_MAX_HIDDEN 4096

/* Hidden units are kept in degree-sorted order (a stable sort; perm[k] is the stored index
 * of sorted unit k): the units of degree <= g are the prefix [0, hpre[g]), a unit of degree
 * g reads the hidden units of degree <= g (a prefix) and feeds those of degree >= g (a
 * suffix), and feature f's outputs read the prefix of degree <= f.  Masked weights are held
 * transposed (in x out: row j holds input j's weights) in that order. */
struct mm_block {
    const float *w1, *b1, *w2, *b2; /* H x H, H (sorted), H x H, H */
    const float *wc, *bc;           /* the block's context layer as stored: H x C, H */
};

struct mogmade {
    int D, F, K, H, C, nb;
    int tanh_act;          /* 0: relu, 1: tanh */
    double eps;
    const float *w0, *b0;  /* F x H masked, transposed; H (sorted; NULL: none) */
    const float *wc, *bc;  /* H x C, H as stored */
    const struct mm_block *blk;
    const float *wf, *bf;  /* H x F*3K masked, transposed; F*3K */
    const int *perm;       /* H: stored index of sorted unit k */
    const int *hpre;       /* D + 1: hidden units of degree <= g */
    const int *lo_in;      /* F: the first sorted unit input i feeds (hpre[i]) */
    const int *lo_h;       /* H: the first sorted unit sorted unit j feeds */
};

/* par: (1 + nb) H context terms (the biases of the initial layer and of each block's
 * first layer folded in), then the scratch of a pass: t, s, v (H each), the 3K outputs of
 * one feature, its K log weights and K stds, and the F inputs. */
size_t mogmade_par_doubles(const struct mogmade *g)
{
    return (size_t)(4 + g->nb) * g->H + 5 * (size_t)g->K + (size_t)g->F;
}

static inline double *p_out(const struct mogmade *g, double *par)
{
    return par + (size_t)(4 + g->nb) * g->H;
}

static inline double *p_inp(const struct mogmade *g, double *par)
{
    return par + mogmade_par_doubles(g) - g->F;
}

static int hid_deg(int F, int o)
{
    int mx = F - 1 > 1 ? F - 1 : 1, mn = F - 1 < 1 ? F - 1 : 1;
    return o % mx + mn;
}

/* obj[field] = {"weight", "mask", "bias"?}: out x in, the mask checked against the degrees
 * (hidden rule, or the output rule when `final`) in the stored order; *w = (weight * mask)
 * transposed (in x out) with the outputs in g->perm's order when pout and the inputs when
 * pin, the bias in the outputs' order; both in the arena. */
static enum eng_status read_masked(struct ldr *L, const cJSON *obj, const char *field,
                                   const struct mogmade *g, int out, int in, bool first,
                                   bool final, bool pout, bool pin, const float **w_out,
                                   const float **b_out)
{
    /* the degrees of outputs and inputs (load-time scratch, freed here) */
    size_t bytes = sizeof(int) * (size_t)(out + in);
    int *dout = malloc(bytes);
    if (!dout)
        return ldr_fail(L, ENG_ERR_NOMEM, "out of memory (%zu bytes)", bytes);
    int *din = dout + out;
    for (int o = 0; o < out; o++)
        dout[o] = final ? o / (3 * g->K) + 1 : hid_deg(g->F, o);
    for (int i = 0; i < in; i++)
        din[i] = first ? i + 1 : hid_deg(g->F, i);
    const float *w, *m;
    enum eng_status st = ldr_made_linear(L, obj, field, out, in, dout, din, final, &w, &m, b_out);
    free(dout);
    if (st != ENG_OK)
        return st;
    size_t mark = ldr_push(L, ".%s", field);
    float *we = ldr_alloc(L, sizeof(float) * (size_t)out * (size_t)in + 1);
    if (!we) {
        st = ENG_ERR_NOMEM;
        goto out;
    }
    for (int o = 0; o < out; o++)
        for (int i = 0; i < in; i++) {
            size_t src = (size_t)(pout ? g->perm[o] : o) * in + (size_t)(pin ? g->perm[i] : i);
            we[(size_t)i * out + o] = w[src] * m[src];
        }
    *w_out = we;
    if (*b_out && pout) {
        float *bp = ldr_alloc(L, sizeof(float) * (size_t)out);
        if (!bp) {
            st = ENG_ERR_NOMEM;
            goto out;
        }
        for (int o = 0; o < out; o++)
            bp[o] = (*b_out)[g->perm[o]];
        *b_out = bp;
    }
out:
    ldr_pop(L, mark);
    return st;
}

enum eng_status mogmade_load(struct ldr *L, const cJSON *mj, int D, int K, int C, double eps,
                             const struct mogmade **out)
{
    struct mogmade *g = ldr_alloc(L, sizeof(*g));
    if (!g)
        return ENG_ERR_NOMEM;
    memset(g, 0, sizeof(*g));
    g->D = D, g->F = D + 1, g->K = K, g->C = C, g->eps = eps;
    static const char *const acts[] = {"relu", "tanh"};
    enum eng_status st = ldr_enum(L, mj, "activation", false, 0, acts, 2, &g->tanh_act);
    if (st != ENG_OK)
        return st;
    long H;
    if ((st = ldr_int(L, mj, "hidden", true, 0, 1, MM_MAX_HIDDEN, &H)) != ENG_OK)
        return st;
    g->H = (int)H;
    if ((size_t)g->F * 3 * (size_t)K > (1u << 20))
        return ldr_fail(L, ENG_ERR_MANIFEST, "%d features of %d components are too many "
                        "outputs", g->F, K);
    /* the degree-sorted order of the hidden units */
    const int H_ = g->H;
    int *perm = ldr_alloc(L, sizeof(int) * (2 * (size_t)H_ + 2 * (size_t)g->F));
    if (!perm)
        return ENG_ERR_NOMEM;
    int *hpre = perm + H_, *lo_in = hpre + g->F, *lo_h = lo_in + g->F;
    for (int d = 0, k = 0; d <= D; d++) {
        for (int o = 0; o < H_; o++)
            if (hid_deg(g->F, o) == d)
                perm[k++] = o;
        hpre[d] = k;
    }
    for (int i = 0; i < g->F; i++)
        lo_in[i] = i <= D ? hpre[i] : H_;
    for (int k = 0; k < H_; k++)
        lo_h[k] = hpre[hid_deg(g->F, perm[k]) - 1];
    g->perm = perm, g->hpre = hpre, g->lo_in = lo_in, g->lo_h = lo_h;
    if ((st = read_masked(L, mj, "initial", g, g->H, g->F, true, false, true, false, &g->w0,
                          &g->b0)) != ENG_OK ||
        (st = ldr_linear(L, mj, "context", g->H, C, &g->wc, &g->bc)) != ENG_OK)
        return st;
    const cJSON *bj = cJSON_GetObjectItemCaseSensitive(mj, "blocks");
    if (!cJSON_IsArray(bj) || cJSON_GetArraySize(bj) > MM_MAX_BLOCKS)
        return ldr_fail(L, ENG_ERR_MANIFEST, "field 'blocks' (the residual blocks) must be a "
                        "list of at most %d", MM_MAX_BLOCKS);
    g->nb = cJSON_GetArraySize(bj);
    struct mm_block *blk = ldr_alloc(L, sizeof(*blk) * (size_t)(g->nb ? g->nb : 1));
    if (!blk)
        return ENG_ERR_NOMEM;
    memset(blk, 0, sizeof(*blk) * (size_t)(g->nb ? g->nb : 1));
    int i = 0;
    for (const cJSON *b = bj->child; b; b = b->next, i++) {
        size_t mark = ldr_push(L, ".blocks[%d]", i);
        if (!cJSON_IsObject(b))
            return ldr_fail(L, ENG_ERR_MANIFEST, "a residual block must be an object");
        if ((st = read_masked(L, b, "linear0", g, g->H, g->H, false, false, true, true,
                              &blk[i].w1, &blk[i].b1)) != ENG_OK ||
            (st = read_masked(L, b, "linear1", g, g->H, g->H, false, false, true, true,
                              &blk[i].w2, &blk[i].b2)) != ENG_OK ||
            (st = ldr_linear(L, b, "context", g->H, C, &blk[i].wc, &blk[i].bc)) != ENG_OK)
            return st;
        ldr_pop(L, mark);
    }
    g->blk = blk;
    if ((st = read_masked(L, mj, "final", g, g->F * 3 * K, g->H, false, true, false, true,
                          &g->wf, &g->bf)) != ENG_OK)
        return st;
    *out = g;
    return ENG_OK;
}

/* y[o] = (init ? init[o] : 0) + b[o] + sum_j wt[j][o] x[j] for o < out in double (wt: in
 * rows of stride ldw), each sum in ascending j.  Input j feeds outputs [lo[j], out) only
 * (lo NULL: all; the weights before lo[j] are masked to 0), and inputs that are exactly 0
 * (relu's) are skipped: neither changes a sum.  The loop over o is independent per output,
 * so it vectorizes without changing any sum's order. */
static void lin(int out, int in, const float *wt, int ldw, const float *b, const double *init,
                const int *lo, const double *x, double *y)
{
    for (int o = 0; o < out; o++)
        y[o] = (init ? init[o] : 0.0) + (b ? (double)b[o] : 0.0);
    for (int j = 0; j < in; j++) {
        const double xj = x[j];
        if (xj == 0.0)
            continue;
        const float *r = wt + (size_t)j * ldw;
        for (int o = lo ? lo[j] : 0; o < out; o++)
            y[o] += (double)r[o] * xj;
    }
}

bool mogmade_context(const struct mogmade *g, const float *c, double *par)
{
    const int H = g->H, C = g->C;
    double chk = 0.0;
    for (int k = 0; k <= g->nb; k++) {
        const float *w = k ? g->blk[k - 1].wc : g->wc, *b = k ? g->blk[k - 1].bc : g->bc;
        const float *b2 = k ? g->blk[k - 1].b1 : g->b0;
        double *t = par + (size_t)k * H;
        for (int o = 0; o < H; o++) { /* sorted unit o: stored row perm[o] */
            const int po = g->perm[o];
            double s = (b ? (double)b[po] : 0.0) + (b2 ? (double)b2[o] : 0.0);
            const float *r = w + (size_t)po * C;
            for (int j = 0; j < C; j++)
                s += (double)r[j] * (double)c[j];
            t[o] = s;
            chk += s * 0.0;
        }
    }
    return isfinite(chk);
}

static inline double act(const struct mogmade *g, double v)
{
    return g->tanh_act ? em_tanh(v) : (v > 0.0 ? v : 0.0);
}

/* The trunk at the inputs in par's input slot: t after the last block, its first nh
 * sorted units only (those of degree <= g for nh = hpre[g]: they read nothing else). */
static void trunk(const struct mogmade *g, double *par, int nh, double **t_out)
{
    const int H = g->H;
    double *t = par + (size_t)(1 + g->nb) * H, *s = t + H, *v = s + H;
    double *inp = p_inp(g, par);
    lin(nh, g->F, g->w0, H, NULL, par, g->lo_in, inp, t); /* b0 is in the context term */
    for (int k = 0; k < g->nb; k++) {
        const struct mm_block *b = &g->blk[k];
        for (int o = 0; o < nh; o++)
            s[o] = act(g, t[o]);
        lin(nh, nh, b->w1, H, NULL, par + (size_t)(k + 1) * H, g->lo_h, s, v);
        for (int o = 0; o < nh; o++)
            v[o] = act(g, v[o]);
        lin(nh, nh, b->w2, H, b->b2, NULL, g->lo_h, v, s);
        for (int o = 0; o < nh; o++)
            t[o] += s[o];
    }
    *t_out = t;
}

/* torch.nn.functional.softplus (beta 1, threshold 20) in double. */
static inline double softplus(double v)
{
    return v > 20.0 ? v : em_log1p(em_exp(v));
}

/* Feature f's mixture from the trunk t: its 3K outputs into o, then the log weights into
 * lw[0, K), the stds into lw[K, 2K) (*sd) and the means into o[0, K) (*m). */
static void feature(const struct mogmade *g, const double *t, int f, double *o, double *lw,
                    double **m, double **sd)
{
    const int K = g->K;
    lin(3 * K, g->hpre[f], g->wf + (size_t)f * 3 * K, g->F * 3 * K,
        g->bf ? g->bf + (size_t)f * 3 * K : NULL, NULL, NULL, t, o);
    double mx = -INFINITY;
    for (int k = 0; k < K; k++)
        if (o[3 * k] > mx || isnan(o[3 * k]))
            mx = o[3 * k];
    double s = 0.0;
    for (int k = 0; k < K; k++)
        s += em_exp(o[3 * k] - mx);
    double lse = mx + em_log(s);
    for (int k = 0; k < K; k++)
        lw[k] = o[3 * k] - lse;
    for (int k = 0; k < K; k++) {
        double mean = o[3 * k + 1], u = o[3 * k + 2];
        o[k] = mean;
        lw[K + k] = softplus(u) + g->eps;
    }
    *m = o;
    *sd = lw + K;
}

double mogmade_log_density(const struct mogmade *g, double *par, const double *xs)
{
    const int K = g->K, D = g->D;
    double *inp = p_inp(g, par), *o = p_out(g, par), *lw = o + 3 * (size_t)K;
    inp[0] = 0.0;
    for (int d = 0; d < D; d++)
        inp[d + 1] = xs[d];
    double *t;
    trunk(g, par, g->H, &t);
    double total = 0.0;
    for (int d = 0; d < D; d++) {
        double *m, *sd;
        feature(g, t, d + 1, o, lw, &m, &sd);
        double mx = -INFINITY, s = 0.0;
        for (int k = 0; k < K; k++) {
            double z = (xs[d] - m[k]) / sd[k];
            double l = lw[k] - 0.5 * (LOG_2PI + 2.0 * em_log(sd[k]) + z * z);
            if (isnan(l))
                return l;
            em_lse_add(&mx, &s, l);
        }
        total += em_lse_end(mx, s);
    }
    return total;
}

void mogmade_draw(const struct mogmade *g, double *par, const double *u, const float *e,
                  double *xs)
{
    const int K = g->K, D = g->D;
    double *inp = p_inp(g, par), *o = p_out(g, par), *lw = o + 3 * (size_t)K;
    for (int i = 0; i < g->F; i++)
        inp[i] = 0.0;
    for (int d = 0; d < D; d++) {
        double *t, *m, *sd; /* feature d + 1 reads the hidden units of degree <= d + 1 */
        trunk(g, par, g->hpre[d + 1], &t);
        feature(g, t, d + 1, o, lw, &m, &sd);
        double c = 0.0;
        for (int k = 0; k < K; k++)
            c += em_exp(lw[k]);
        double tu = u[d] * c, cum = 0.0;
        int k = 0;
        for (; k < K - 1; k++) {
            cum += em_exp(lw[k]);
            if (tu < cum)
                break;
        }
        xs[d] = m[k] + sd[k] * (double)e[d];
        inp[d + 1] = xs[d];
    }
}
