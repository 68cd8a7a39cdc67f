/*
 * mixture.c — the mdn kind: a mixture density network (sbi's MultivariateGaussianMDN inside
 * its MixtureDensityEstimator).  A network of the standardized observation y_s gives hidden
 * features h; Linear heads give K mixture logits, K means and K upper-triangular precision
 * factors A_k (diagonal softplus(d), strictly upper entries u in numpy's triu_indices(D, 1)
 * order).  The density of standardized x is sbi's MoG.log_prob:
 *
 *   log q(x_s) = logsumexp_k [ log w_k - D/2 log 2 pi + sum_i log A_k,ii
 *                              - 1/2 (|A_k (x_s - mu_k)|^2 + eps |x_s - mu_k|^2) ]
 *
 * (sbi adds eps to the precision's diagonal but takes the log-det from A alone), and a
 * draw is sbi's MoG.sample: a component from the weights, then mu_k + A_k^-1 e.  The
 * heads, the log-sum-exp and the triangular solve run in double in a fixed order, so the
 * same bits come out on every kernel path.  model.c runs these per observation; loading
 * is mdn_load, called by manifest.c.
 *
 * A mixture of "type" "made" (sbi's `made`: a MixtureOfGaussiansMADE) is run by
 * mogmade.c behind the same functions: its optional "net" maps y_s to the MADE's context
 * (without one the context is y_s), and the per-observation part of `par` holds the
 * context's contributions to the MADE's layers.
 *
 * Ownership: struct mdn and its arrays live in the model's arena (immutable after load);
 * the per-observation mixture is caller scratch (the workspace).
 */
#include <math.h>
#include <string.h>

#include "emath.h"
#include "loader.h"
#include "model_impl.h"
#include "subnet.h"

#define LOG_2PI 1.8378770664093453
/* Bounds on what one observation's mixture may take (doubles) and on its sizes. */
#define MDN_MAX_COMPONENTS 4096
#define MDN_MAX_DIM 256
#define MDN_MAX_PAR_DOUBLES (1u << 20)

struct mdn_head {
    const float *w, *b; /* out x H, out (b may be NULL) */
    int out;
};

struct mdn {
    int K, D, H, U;   /* components, dims.x, hidden width, D (D - 1) / 2 upper entries */
    int P;            /* head outputs: K logits, K D means, K D diagonals, K U upper entries */
    double eps;       /* added to the precision's diagonal in the quadratic form */
    const struct subnet *net;
    const float *wt;  /* the heads' weights side by side, transposed: H x P (row j: input j) */
    const double *b;  /* their biases (P; 0 where a head has none) */
    const int *ur, *uc; /* U row / column indices of the upper entries */
    const struct mogmade *made; /* type "made": the MADE mixture (mogmade.c), else NULL */
};

/* Layout of one observation's mixture in par. */
static inline double *p_logw(const struct mdn *q, double *p) { (void)q; return p; }
static inline double *p_cum(const struct mdn *q, double *p) { return p + q->K; }
static inline double *p_ldet(const struct mdn *q, double *p) { return p + 2 * (size_t)q->K; }
static inline double *p_mu(const struct mdn *q, double *p) { return p + 3 * (size_t)q->K; }
static inline double *p_A(const struct mdn *q, double *p)
{
    return p + 3 * (size_t)q->K + (size_t)q->K * q->D;
}

size_t mdn_par_doubles(const struct mdn *q)
{
    if (q->made)
        return mogmade_par_doubles(q->made);
    return (size_t)q->K * (3 + (size_t)q->D + (size_t)q->D * q->D) + (size_t)q->P;
}

static enum eng_status load_head(struct ldr *L, const cJSON *mj, const char *field, int out,
                                 int H, struct mdn_head *h)
{
    h->out = out;
    return ldr_linear(L, mj, field, out, H, &h->w, &h->b);
}

/* The rest of mdn_load for a mixture of type "made". */
static enum eng_status made_load(struct ldr *L, struct eng_model *m, const cJSON *mj,
                                 struct mdn *q, int K, int *hidden, size_t *scratch,
                                 size_t mark)
{
    const int D = m->info.dims.x, dy = m->info.dims.y;
    enum eng_status st;
    if (D > MDN_MAX_DIM)
        return ldr_fail(L, ENG_ERR_MANIFEST, "dims.x = %d is over %d, the widest mixture this "
                        "engine serves", D, MDN_MAX_DIM);
    q->K = K, q->D = D;
    if ((st = ldr_num(L, mj, "epsilon", false, 1e-2, &q->eps)) != ENG_OK)
        return st;
    if (!(q->eps > 0 && q->eps < 1e3))
        return ldr_fail(L, ENG_ERR_MANIFEST, "field 'epsilon' (added to every std) must be "
                        "in (0, 1000)");
    const cJSON *nj = cJSON_GetObjectItemCaseSensitive(mj, "net");
    if (nj && !cJSON_IsNull(nj)) {
        if ((st = ldr_subnet(L, mj, "net", 0, dy, -1, &q->net)) != ENG_OK)
            return st;
        q->H = q->net->dout;
    } else {
        q->H = dy;
    }
    if ((st = mogmade_load(L, mj, D, K, q->H, q->eps, &q->made)) != ENG_OK)
        return st;
    if (mogmade_par_doubles(q->made) > MDN_MAX_PAR_DOUBLES)
        return ldr_fail(L, ENG_ERR_MANIFEST, "the MADE takes %zu doubles per observation, "
                        "over %u", mogmade_par_doubles(q->made), MDN_MAX_PAR_DOUBLES);
    ldr_pop(L, mark);
    m->mdn = q;
    *hidden = q->H;
    *scratch = q->net ? subnet_scratch(q->net, ENG_TILE_ROWS) : 0;
    return ENG_OK;
}

enum eng_status mdn_load(struct ldr *L, struct eng_model *m, const cJSON *mj, int *hidden,
                         size_t *scratch)
{
    const int D = m->info.dims.x, dy = m->info.dims.y;
    if (!cJSON_IsObject(mj))
        return ldr_fail(L, ENG_ERR_MANIFEST, "field 'mixture' (the mdn's network and heads) "
                        "must be an object");
    struct mdn *q = ldr_alloc(L, sizeof(*q));
    if (!q)
        return ENG_ERR_NOMEM;
    memset(q, 0, sizeof(*q));
    size_t mark = ldr_push(L, "mixture");
    static const char *const types[] = {"gaussian", "made"};
    int type;
    enum eng_status st = ldr_enum(L, mj, "type", false, 0, types, 2, &type);
    if (st != ENG_OK)
        return st;
    for (const cJSON *f = mj->child; f; f = f->next) {
        static const char *const known[] = {"type", "components", "epsilon", "net", "logits",
                                            "means", "diagonal", "upper", "diagonal_map"};
        static const char *const known_made[] = {"type", "components", "epsilon", "net",
                                                 "activation", "hidden", "initial", "context",
                                                 "blocks", "final"};
        bool ok = false;
        if (type == 1)
            for (size_t i = 0; i < sizeof known_made / sizeof *known_made; i++)
                ok |= strcmp(f->string, known_made[i]) == 0;
        else
            for (size_t i = 0; i < sizeof known / sizeof *known; i++)
                ok |= strcmp(f->string, known[i]) == 0;
        if (!ok)
            return ldr_fail(L, ENG_ERR_MANIFEST, "unknown field '%.64s' (%s)", f->string,
                            type == 1 ? "a made mixture has type, components, epsilon, net, "
                            "activation, hidden, initial, context, blocks, final" :
                            "an mdn's mixture has type, components, epsilon, net, logits, "
                            "means, diagonal, upper, diagonal_map");
    }
    long K;
    if ((st = ldr_int(L, mj, "components", true, 0, 1, MDN_MAX_COMPONENTS, &K)) != ENG_OK)
        return st;
    if (type == 1)
        return made_load(L, m, mj, q, (int)K, hidden, scratch, mark);
    if (D > MDN_MAX_DIM)
        return ldr_fail(L, ENG_ERR_MANIFEST, "dims.x = %d is over %d, the widest mixture this "
                        "engine serves", D, MDN_MAX_DIM);
    q->K = (int)K, q->D = D, q->U = D * (D - 1) / 2;
    q->P = q->K * (1 + 2 * D + q->U);
    if (mdn_par_doubles(q) > MDN_MAX_PAR_DOUBLES)
        return ldr_fail(L, ENG_ERR_MANIFEST, "%ld components of %d dimensions take %zu doubles "
                        "per observation, over %u", K, D, mdn_par_doubles(q),
                        MDN_MAX_PAR_DOUBLES);
    if ((st = ldr_num(L, mj, "epsilon", false, 1e-4, &q->eps)) != ENG_OK)
        return st;
    if (!(q->eps >= 0 && q->eps < 1e3))
        return ldr_fail(L, ENG_ERR_MANIFEST, "field 'epsilon' must be in [0, 1000)");
    static const char *const dmaps[] = {"softplus"};
    int dm;
    if ((st = ldr_enum(L, mj, "diagonal_map", false, 0, dmaps, 1, &dm)) != ENG_OK)
        return st;
    if ((st = ldr_subnet(L, mj, "net", 0, dy, -1, &q->net)) != ENG_OK)
        return st;
    q->H = q->net->dout;
    struct mdn_head hs[4] = {{0}}; /* logits, means, diagonal, upper */
    if ((st = load_head(L, mj, "logits", q->K, q->H, &hs[0])) != ENG_OK ||
        (st = load_head(L, mj, "means", q->K * D, q->H, &hs[1])) != ENG_OK ||
        (st = load_head(L, mj, "diagonal", q->K * D, q->H, &hs[2])) != ENG_OK)
        return st;
    const cJSON *uj = cJSON_GetObjectItemCaseSensitive(mj, "upper");
    if (q->U > 0) {
        if ((st = load_head(L, mj, "upper", q->K * q->U, q->H, &hs[3])) != ENG_OK)
            return st;
        int *ur = ldr_alloc(L, sizeof(int) * 2 * (size_t)q->U);
        if (!ur)
            return ENG_ERR_NOMEM;
        int k = 0;
        for (int r = 0; r < D; r++)
            for (int c = r + 1; c < D; c++, k++)
                ur[k] = r, ur[q->U + k] = c;
        q->ur = ur, q->uc = ur + q->U;
    } else if (uj && !cJSON_IsNull(uj)) {
        return ldr_fail(L, ENG_ERR_MANIFEST, "field 'upper': a one-dimensional mixture has no "
                        "off-diagonal precision entries");
    }
    /* pack the heads: column o of wt is head output o (logits, means, diagonal, upper) */
    float *wt = ldr_alloc(L, sizeof(float) * (size_t)q->H * q->P);
    double *b = ldr_alloc(L, sizeof(double) * (size_t)q->P);
    if (!wt || !b)
        return ENG_ERR_NOMEM;
    for (int k = 0, o0 = 0; k < 4; o0 += hs[k].out, k++)
        for (int o = 0; o < hs[k].out; o++) {
            b[o0 + o] = hs[k].b ? (double)hs[k].b[o] : 0.0;
            for (int j = 0; j < q->H; j++)
                wt[(size_t)j * q->P + o0 + o] = hs[k].w[(size_t)o * q->H + j];
        }
    q->wt = wt, q->b = b;
    ldr_pop(L, mark);
    m->mdn = q;
    *hidden = q->H;
    *scratch = subnet_scratch(q->net, ENG_TILE_ROWS);
    return ENG_OK;
}

void mdn_hidden(const struct mdn *q, int rows, const float *ys, int ldy, float *h, int ldh,
                float *scratch)
{
    if (!q->net) { /* a made mixture without an embedding: the context is y_s */
        for (int r = 0; r < rows; r++)
            memcpy(h + (size_t)r * ldh, ys + (size_t)r * ldy, sizeof(float) * (size_t)q->H);
        return;
    }
    subnet_forward(q->net, rows, NULL, 0, ys, ldy, h, ldh, scratch);
}

int mdn_uniforms(const struct mdn *q)
{
    return q->made ? q->D : 1;
}

/* out[o] = b[o] + sum_j w[o][j] h[j] for every head output o, in double, each sum in
 * ascending j (the loop over o is independent per output, so it vectorizes without
 * changing any sum's order). */
static void heads(const struct mdn *q, const float *h, double *out)
{
    const int P = q->P;
    for (int o = 0; o < P; o++)
        out[o] = q->b[o];
    for (int j = 0; j < q->H; j++) {
        const double hj = h[j];
        const float *w = q->wt + (size_t)j * P;
        for (int o = 0; o < P; o++)
            out[o] += (double)w[o] * hj;
    }
}

/* torch.nn.functional.softplus (beta 1, threshold 20) in double. */
static inline double softplus(double v)
{
    return v > 20.0 ? v : em_log1p(em_exp(v));
}

bool mdn_mixture(const struct mdn *q, const float *h, double *par)
{
    if (q->made)
        return mogmade_context(q->made, h, par);
    const int K = q->K, D = q->D;
    double *logw = p_logw(q, par), *cum = p_cum(q, par), *ldet = p_ldet(q, par);
    double *mu = p_mu(q, par), *A = p_A(q, par);
    double *raw = A + (size_t)K * D * D; /* P head outputs */
    heads(q, h, raw);
    const double *r_mu = raw + K, *r_diag = r_mu + (size_t)K * D, *r_up = r_diag + (size_t)K * D;
    double mx = -INFINITY;
    for (int k = 0; k < K; k++) {
        logw[k] = raw[k];
        if (logw[k] > mx)
            mx = logw[k];
    }
    double s = 0.0;
    for (int k = 0; k < K; k++)
        s += em_exp(logw[k] - mx);
    double lse = mx + em_log(s), c = 0.0;
    for (int k = 0; k < K; k++) {
        logw[k] -= lse;
        c += em_exp(logw[k]);
        cum[k] = c;
    }
    for (int o = 0; o < K * D; o++)
        mu[o] = r_mu[o];
    memset(A, 0, sizeof(double) * (size_t)K * D * D);
    for (int k = 0; k < K; k++) {
        double *Ak = A + (size_t)k * D * D, ld = 0.0;
        for (int i = 0; i < D; i++) {
            double a = softplus(r_diag[k * D + i]);
            Ak[(size_t)i * D + i] = a;
            ld += em_log(a);
        }
        ldet[k] = ld;
        for (int u = 0; u < q->U; u++)
            Ak[(size_t)q->ur[u] * D + q->uc[u]] = r_up[(size_t)k * q->U + u];
    }
    double chk = lse;
    for (size_t i = 0, n = (size_t)K * D * (1 + (size_t)D); i < n; i++)
        chk += mu[i] * 0.0; /* mu and A are adjacent: NaN or Inf anywhere makes chk NaN */
    for (int k = 0; k < K; k++)
        chk += ldet[k] * 0.0;
    return isfinite(chk);
}

double mdn_log_density(const struct mdn *q, double *par, const double *xs)
{
    if (q->made)
        return mogmade_log_density(q->made, par, xs);
    const int K = q->K, D = q->D;
    const double *logw = par, *ldet = par + 2 * (size_t)K, *mu = par + 3 * (size_t)K;
    const double *A = mu + (size_t)K * D;
    /* log-sum-exp in one pass: s = sum_k exp(l_k - mx) for the running maximum mx */
    double mx = -INFINITY, s = 0.0;
    for (int k = 0; k < K; k++) {
        const double *m = mu + (size_t)k * D, *Ak = A + (size_t)k * D * D;
        double quad = 0.0, d2 = 0.0;
        for (int r = 0; r < D; r++) {
            double v = 0.0;
            for (int c = r; c < D; c++)
                v += Ak[(size_t)r * D + c] * (xs[c] - m[c]);
            quad += v * v;
            double dr = xs[r] - m[r];
            d2 += dr * dr;
        }
        double l = logw[k] - 0.5 * D * LOG_2PI + ldet[k] - 0.5 * (quad + q->eps * d2);
        if (isnan(l))
            return l;
        em_lse_add(&mx, &s, l);
    }
    return em_lse_end(mx, s);
}

void mdn_draw(const struct mdn *q, double *par, const double *u, const float *e, double *xs)
{
    if (q->made) {
        mogmade_draw(q->made, par, u, e, xs);
        return;
    }
    const int K = q->K, D = q->D;
    const double *cum = par + K, *mu = par + 3 * (size_t)K, *A = mu + (size_t)K * D;
    double t = u[0] * cum[K - 1];
    int k = 0;
    while (k < K - 1 && !(t < cum[k]))
        k++;
    const double *m = mu + (size_t)k * D, *Ak = A + (size_t)k * D * D;
    /* back substitution: A v = e, A upper triangular */
    for (int r = D - 1; r >= 0; r--) {
        double v = e[r];
        for (int cc = r + 1; cc < D; cc++)
            v -= Ak[(size_t)r * D + cc] * xs[cc];
        xs[r] = v / Ak[(size_t)r * D + r];
    }
    for (int r = 0; r < D; r++)
        xs[r] += m[r];
}
