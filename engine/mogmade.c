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
#include <string.h>

#include "emath.h"
#include "loader.h"
#include "model_impl.h"

#define LOG_2PI 1.8378770664093453
#define MM_MAX_BLOCKS 64
#define MM_MAX_HIDDEN 4096

struct mm_block {
    const float *w1, *b1, *w2, *b2, *wc, *bc; /* H x H masked, H, H x H masked, H, H x C, H */
};

struct mogmade {
    int D, F, K, H, C, nb;
    int tanh_act;          /* 0: relu, 1: tanh */
    double eps;
    const float *w0, *b0;  /* H x F masked, H (NULL: none) */
    const float *wc, *bc;  /* H x C, H */
    const struct mm_block *blk;
    const float *wf, *bf;  /* F*3K x H masked, F*3K */
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
 * (hidden rule, or the output rule when `final`); *w = weight * mask in the arena. */
static enum eng_status read_masked(struct ldr *L, const cJSON *obj, const char *field,
                                   const struct mogmade *g, int out, int in, bool first,
                                   bool final, const float **w_out, const float **b_out)
{
    const cJSON *lj;
    enum eng_status st = ldr_obj(L, obj, field, true, &lj);
    if (st != ENG_OK)
        return st;
    size_t mark = ldr_push(L, ".%s", field);
    const float *w, *m;
    int64_t shp[2] = {out, in}, bs[1] = {out};
    if ((st = ldr_tensor(L, lj, "weight", true, 2, shp, &w)) != ENG_OK ||
        (st = ldr_tensor(L, lj, "mask", true, 2, shp, &m)) != ENG_OK ||
        (st = ldr_tensor(L, lj, "bias", false, 1, bs, b_out)) != ENG_OK)
        goto out;
    for (int o = 0; o < out; o++)
        for (int i = 0; i < in; i++) {
            int dout = final ? o / (3 * g->K) + 1 : hid_deg(g->F, o);
            int din = first ? i + 1 : hid_deg(g->F, i);
            bool keep = final ? dout > din : dout >= din;
            float mv = m[(size_t)o * in + i];
            if (mv != (keep ? 1.0f : 0.0f)) {
                st = ldr_fail(L, ENG_ERR_TENSOR,
                              "tensor '%s' (field 'mask') is not the MADE mask of its degrees: "
                              "element [%d][%d] is %g, the degrees give %d (output degree %d, "
                              "input degree %d)", ldr_tensor_name(lj, "mask"), o, i, (double)mv,
                              keep ? 1 : 0, dout, din);
                goto out;
            }
        }
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

/* obj[field] = {"weight": out x in, "bias": out (optional)}. */
static enum eng_status read_lin(struct ldr *L, const cJSON *obj, const char *field, int out,
                                int in, const float **w, const float **b)
{
    const cJSON *lj;
    enum eng_status st = ldr_obj(L, obj, field, true, &lj);
    if (st != ENG_OK)
        return st;
    size_t mark = ldr_push(L, ".%s", field);
    int64_t shp[2] = {out, in}, bs[1] = {out};
    if ((st = ldr_tensor(L, lj, "weight", true, 2, shp, w)) == ENG_OK)
        st = ldr_tensor(L, lj, "bias", false, 1, bs, b);
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
    if ((st = read_masked(L, mj, "initial", g, g->H, g->F, true, false, &g->w0, &g->b0)) !=
            ENG_OK ||
        (st = read_lin(L, mj, "context", g->H, C, &g->wc, &g->bc)) != ENG_OK)
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
        if ((st = read_masked(L, b, "linear0", g, g->H, g->H, false, false, &blk[i].w1,
                              &blk[i].b1)) != ENG_OK ||
            (st = read_masked(L, b, "linear1", g, g->H, g->H, false, false, &blk[i].w2,
                              &blk[i].b2)) != ENG_OK ||
            (st = read_lin(L, b, "context", g->H, C, &blk[i].wc, &blk[i].bc)) != ENG_OK)
            return st;
        ldr_pop(L, mark);
    }
    g->blk = blk;
    if ((st = read_masked(L, mj, "final", g, g->F * 3 * K, g->H, false, true, &g->wf,
                          &g->bf)) != ENG_OK)
        return st;
    *out = g;
    return ENG_OK;
}

/* y[o] = (init ? init[o] : 0) + b[o] + sum_j w[o][j] x[j] in double, ascending j. */
static void lin(int out, int in, const float *w, const float *b, const double *init,
                const double *x, double *y)
{
    for (int o = 0; o < out; o++) {
        double s = (init ? init[o] : 0.0) + (b ? (double)b[o] : 0.0);
        const float *r = w + (size_t)o * in;
        for (int j = 0; j < in; j++)
            s += (double)r[j] * x[j];
        y[o] = s;
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
        for (int o = 0; o < H; o++) {
            double s = (b ? (double)b[o] : 0.0) + (b2 ? (double)b2[o] : 0.0);
            const float *r = w + (size_t)o * C;
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

/* The trunk at the inputs in par's input slot: t (H) after the last block. */
static void trunk(const struct mogmade *g, double *par, double **t_out)
{
    const int H = g->H;
    double *t = par + (size_t)(1 + g->nb) * H, *s = t + H, *v = s + H;
    double *inp = p_inp(g, par);
    lin(H, g->F, g->w0, NULL, par, inp, t); /* b0 is in the context term */
    for (int k = 0; k < g->nb; k++) {
        const struct mm_block *b = &g->blk[k];
        for (int o = 0; o < H; o++)
            s[o] = act(g, t[o]);
        lin(H, H, b->w1, NULL, par + (size_t)(k + 1) * H, s, v);
        for (int o = 0; o < H; o++)
            v[o] = act(g, v[o]);
        lin(H, H, b->w2, b->b2, NULL, v, s);
        for (int o = 0; o < H; o++)
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
    const int K = g->K, H = g->H;
    lin(3 * K, H, g->wf + (size_t)f * 3 * K * H, g->bf ? g->bf + (size_t)f * 3 * K : NULL, NULL,
        t, o);
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
    trunk(g, par, &t);
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
            if (l > mx) {
                s = (mx == -INFINITY ? 0.0 : s * em_exp(mx - l)) + 1.0;
                mx = l;
            } else if (l > -INFINITY) {
                s += em_exp(l - mx);
            }
        }
        total += mx == -INFINITY ? mx : mx + em_log(s);
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
        double *t, *m, *sd;
        trunk(g, par, &t);
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
