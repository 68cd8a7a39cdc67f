/*
 * test_blocks_coupling.c — the coupling-family blocks (blocks/allinone.c, coupling.c,
 * spline.c): AllInOneBlock (every global_affine_type, hard / PyPI-0.2 one-hot / soft /
 * householder permutations, reverse_permutation, gin_block, "head" and "legacy" clamp),
 * NICE, RNVP, GLOW, GIN, AffineCouplingOneSided, ConditionalAffineTransform and
 * RationalQuadraticSpline (affine and identity tails, domain clamping, custom domains).
 *
 * Every variant is loaded as a single-block flow (no condition) and cinn (condition width
 * 3) at widths 3, 5 and 6 and checked three ways: forward values and log-det against an
 * independent double-precision reference written here from freia-modules.md sections 2-4
 * (catches transposes, split and ordering conventions a round trip cannot see), the round
 * trip inverse(forward(x)) with the log-det sign, and the log-det against a
 * finite-difference Jacobian.  Then special cases (torch's softplus threshold, spline bin
 * edges, broadcast conditions, tiles over 256 rows, default splits) and the load-time
 * refusals, each of which must name the field or tensor at fault.
 */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#define HID 8        /* hidden width of the test subnets */
#define MAXIN 32
#define MAXOUT 512
#define MAXD 8

int coupling_default_split(int d); /* engine/blocks/coupling_util.c */

/* ---- a small subnet Linear(in, 8) - tanh - Linear(8, out), kept for the reference ---- */

struct rnet {
    int in, out;
    float w1[HID * MAXIN], b1[HID], w2[MAXOUT * HID], b2[MAXOUT];
};

static struct rnet *rnet_new(int in, int out, float scale, uint64_t seed)
{
    ck_assert(in >= 1 && in <= MAXIN && out >= 1 && out <= MAXOUT);
    struct rnet *r = calloc(1, sizeof(*r));
    ck_assert_ptr_nonnull(r);
    r->in = in, r->out = out;
    tu_randn(r->w1, HID * in, scale / sqrtf((float)in), seed * 7 + 1);
    tu_randn(r->b1, HID, 0.1f * scale, seed * 7 + 2);
    tu_randn(r->w2, out * HID, scale / sqrtf((float)HID), seed * 7 + 3);
    tu_randn(r->b2, out, 0.1f * scale, seed * 7 + 4);
    return r;
}

/* Add the net's tensors as "<prefix>.0.weight" ... and return its subnet JSON (malloc'd). */
static char *rnet_add(struct tu_ckpt *c, const struct rnet *r, const char *prefix)
{
    char n0[96], n1[96], n2[96], n3[96];
    snprintf(n0, sizeof(n0), "%s.0.weight", prefix);
    snprintf(n1, sizeof(n1), "%s.0.bias", prefix);
    snprintf(n2, sizeof(n2), "%s.2.weight", prefix);
    snprintf(n3, sizeof(n3), "%s.2.bias", prefix);
    int64_t s0[2] = {HID, r->in}, s1[1] = {HID}, s2[2] = {r->out, HID}, s3[1] = {r->out};
    tu_add_f32(c, n0, 2, s0, r->w1);
    tu_add_f32(c, n1, 1, s1, r->b1);
    tu_add_f32(c, n2, 2, s2, r->w2);
    tu_add_f32(c, n3, 1, s3, r->b2);
    char *js = malloc(1024);
    ck_assert_ptr_nonnull(js);
    snprintf(js, 1024,
             "{\"layers\":[{\"type\":\"linear\",\"weight\":\"%s\",\"bias\":\"%s\"},"
             "{\"type\":\"tanh\"},{\"type\":\"linear\",\"weight\":\"%s\",\"bias\":\"%s\"}]}",
             n0, n1, n2, n3);
    return js;
}

static void rnet_eval(const struct rnet *r, const double *in, double *out)
{
    double h[HID];
    for (int k = 0; k < HID; k++) {
        double a = r->b1[k];
        for (int i = 0; i < r->in; i++)
            a += (double)r->w1[k * r->in + i] * in[i];
        h[k] = tanh(a);
    }
    for (int o = 0; o < r->out; o++) {
        double a = r->b2[o];
        for (int k = 0; k < HID; k++)
            a += (double)r->w2[o * HID + k] * h[k];
        out[o] = a;
    }
}

/* ---- reference model description ------------------------------------------------------ */

enum { P_HARD, P_ONEHOT, P_SOFT, P_HOUSE };
enum { G_SOFTPLUS, G_SIGMOID, G_EXP };
enum { C_ATAN, C_TANH, C_SIGMOID };

struct ref {
    char type[40];
    int d, cw, l1, l2;
    struct rnet *net[4];
    /* coupling */
    double clamp;
    int act;
    /* AllInOneBlock */
    int ptype, gtype;
    bool gin, rev, legacy;
    double alpha;
    int perm[MAXD];
    double W[MAXD * MAXD], Wi[MAXD * MAXD]; /* y = W v; P^-1: v = Wi y */
    float gs[MAXD], off[MAXD];
    /* spline */
    int K;
    bool idt;
    double dom[4], minw, minh, D;
};

static void ref_free(struct ref *R)
{
    for (int k = 0; k < 4; k++)
        free(R->net[k]);
}

static double fclamp(const struct ref *R, double u)
{
    switch (R->act) {
    case C_TANH: return R->clamp * tanh(u);
    case C_SIGMOID: return R->clamp * 2.0 * (1.0 / (1.0 + exp(-u)) - 0.5);
    default: return R->clamp * 0.636 * atan(u);
    }
}

static double sp(double u) { return u > 20.0 ? u : log1p(exp(u)); }

static double psi(int gtype, double a)
{
    switch (gtype) {
    case G_SIGMOID: return 10.0 / (1.0 + exp(-(a - 2.0)));
    case G_EXP: return exp(a);
    default: return 0.5 * a > 20.0 ? 0.1 * a : 0.1 * 2.0 * log1p(exp(0.5 * a));
    }
}

/* in = [v (nv), c (cw)] */
static void cat(double *in, const double *v, int nv, const double *c, int cw)
{
    memcpy(in, v, sizeof(double) * (size_t)nv);
    if (cw)
        memcpy(in + nv, c, sizeof(double) * (size_t)cw);
}

/* One affine half in place: x (l) <- x e^s + t with s = clamp f(a[:l]) (GIN: centred),
 * t = a[l:] (or from a separate t net output when tseparate). Returns sum s. */
static double ref_affine(const struct ref *R, double *x, int l, const double *sraw,
                         const double *t, bool gin)
{
    double s[MAXD], sum = 0.0, mean = 0.0;
    for (int j = 0; j < l; j++) {
        s[j] = fclamp(R, sraw[j]);
        mean += s[j] / l;
    }
    for (int j = 0; j < l; j++) {
        if (gin)
            s[j] -= mean;
        x[j] = x[j] * exp(s[j]) + t[j];
        sum += s[j];
    }
    return gin ? 0.0 : sum;
}

/* FrEIA's rational-quadratic spline of one element, written the way binned.py does it:
 * knot arrays, a left-side searchsorted, then the Durkan formulas. */
static double ref_spline(const struct ref *R, const double *p, double x, double *ld)
{
    int K = R->K;
    double w[64], h[64], kx[65], ky[65], dd[65], left, bottom;
    const double *rd;
    if (!R->idt) {
        double w0 = (R->dom[1] - R->dom[0]) / K, h0 = (R->dom[3] - R->dom[2]) / K;
        double xs = log(exp(w0 - R->minw) - 1.0), ys = log(exp(h0 - R->minh) - 1.0);
        double W = 0, Hs = 0;
        for (int k = 0; k < K; k++) {
            w[k] = R->minw + sp(p[k] + xs);
            h[k] = R->minh + sp(p[K + k] + ys);
            W += w[k], Hs += h[k];
        }
        left = p[2 * K + 1] + R->dom[0];
        bottom = p[2 * K] + R->dom[2];
        if (R->D > 0) {
            double wr = R->D * tanh(W / R->D) / W, hr = R->D * tanh(Hs / R->D) / Hs;
            for (int k = 0; k < K; k++)
                w[k] *= wr, h[k] *= hr;
            left *= wr, bottom *= hr;
        }
        rd = p + 2 * K + 2;
    } else {
        double tw = (R->dom[1] - R->dom[0]) * sp(p[2 * K] + log(M_E - 1.0));
        if (R->D > 0)
            tw = R->D * tanh(tw / R->D);
        double zw = 0, zh = 0;
        for (int k = 0; k < K; k++)
            zw += exp(p[k]), zh += exp(p[K + k]);
        for (int k = 0; k < K; k++)
            w[k] = tw * exp(p[k]) / zw, h[k] = tw * exp(p[K + k]) / zh;
        left = bottom = -tw / 2;
        rd = p + 2 * K + 1;
    }
    double cw = 0, ch = 0;
    kx[0] = left, ky[0] = bottom;
    for (int k = 0; k < K; k++) {
        cw += w[k], ch += h[k];
        kx[k + 1] = left + cw, ky[k + 1] = bottom + ch;
    }
    double scale = ch / cw, shift = bottom - scale * left;
    dd[0] = dd[K] = scale;
    for (int k = 1; k < K; k++)
        dd[k] = sp(rd[k - 1] + log(M_E - 1.0));
    if (!(kx[0] < x && x <= kx[K])) {
        *ld = log(scale);
        return scale * x + shift;
    }
    int up = 0;
    while (kx[up] < x)
        up++;
    int k = up - 1;
    double dx = kx[k + 1] - kx[k], dy = ky[k + 1] - ky[k], s = dy / dx;
    double xi = (x - kx[k]) / dx;
    double num = dy * (s * xi * xi + dd[k] * xi * (1 - xi));
    double den = s + (dd[k + 1] + dd[k] - 2 * s) * xi * (1 - xi);
    *ld = log(s * s * (dd[k + 1] * xi * xi + 2 * s * xi * (1 - xi) + dd[k] * (1 - xi) * (1 - xi))) -
          2.0 * log(den);
    return ky[k] + num / den;
}

/* Forward of one row in double: x (d) -> y (d), returns the log-det. */
static double ref_forward(const struct ref *R, const double *xin, const double *c, double *y)
{
    int d = R->d, cw = R->cw, l1 = R->l1, l2 = R->l2;
    double x[MAXD], in[MAXIN], a[MAXOUT], b[MAXOUT], ld = 0.0;
    memcpy(x, xin, sizeof(double) * (size_t)d);
    const char *t = R->type;
    if (!strcmp(t, "AllInOneBlock")) {
        double v[MAXD];
        if (R->rev) { /* x <- P^-1 x: v_k = x[perm_inv[k]], or v = Wi x */
            for (int k = 0; k < d; k++) {
                if (R->ptype == P_HARD || R->ptype == P_ONEHOT) {
                    int pinv = 0;
                    while (R->perm[pinv] != k)
                        pinv++;
                    v[k] = x[pinv];
                } else {
                    double acc = 0;
                    for (int j = 0; j < d; j++)
                        acc += R->Wi[k * d + j] * x[j];
                    v[k] = acc;
                }
            }
            memcpy(x, v, sizeof(double) * (size_t)d);
        }
        int n1 = l1, n2 = l2;
        cat(in, x, n1, c, cw);
        rnet_eval(R->net[0], in, a);
        double s[MAXD], mean = 0;
        for (int j = 0; j < n2; j++) {
            double aj = 0.1 * a[j];
            s[j] = R->legacy ? R->alpha * tanh(aj) : R->alpha * tanh(aj / R->alpha);
            mean += s[j] / n2;
        }
        for (int j = 0; j < n2; j++) {
            if (R->gin)
                s[j] -= mean;
            x[n1 + j] = x[n1 + j] * exp(s[j]) + 0.1 * a[n2 + j];
            ld += s[j];
        }
        for (int k = 0; k < d; k++) {
            double g = R->gin ? 1.0 : psi(R->gtype, R->gs[k]);
            v[k] = x[k] * g + R->off[k];
            if (!R->gin)
                ld += log(g);
        }
        for (int i = 0; i < d; i++) {
            if (R->ptype == P_HARD || R->ptype == P_ONEHOT) {
                y[i] = v[R->perm[i]];
            } else {
                double acc = 0;
                for (int j = 0; j < d; j++)
                    acc += R->W[i * d + j] * v[j];
                y[i] = acc;
            }
        }
        return ld;
    }
    if (!strcmp(t, "ConditionalAffineTransform")) {
        rnet_eval(R->net[0], c, a);
        ld = ref_affine(R, x, d, a, a + d, false);
        memcpy(y, x, sizeof(double) * (size_t)d);
        return ld;
    }
    if (!strcmp(t, "AffineCouplingOneSided")) {
        cat(in, x, l1, c, cw);
        rnet_eval(R->net[0], in, a);
        ld = ref_affine(R, x + l1, l2, a, a + l2, false);
        memcpy(y, x, sizeof(double) * (size_t)d);
        return ld;
    }
    if (!strcmp(t, "RationalQuadraticSpline")) {
        int P = R->idt ? 3 * R->K : 3 * R->K + 1;
        double l;
        cat(in, x + l1, l2, c, cw);
        rnet_eval(R->net[0], in, a); /* subnet1: [x2, c] -> l1 P */
        for (int j = 0; j < l1; j++)
            x[j] = ref_spline(R, a + j * P, x[j], &l), ld += l;
        cat(in, x, l1, c, cw);
        rnet_eval(R->net[1], in, a); /* subnet2: [y1, c] -> l2 P */
        for (int j = 0; j < l2; j++)
            x[l1 + j] = ref_spline(R, a + j * P, x[l1 + j], &l), ld += l;
        memcpy(y, x, sizeof(double) * (size_t)d);
        return ld;
    }
    /* two-sided: y1 = C1(x1 | [x2, c]), y2 = C2(x2 | [y1, c]) */
    bool gin = !strcmp(t, "GINCouplingBlock");
    cat(in, x + l1, l2, c, cw);
    if (!strcmp(t, "NICECouplingBlock")) {
        rnet_eval(R->net[0], in, a); /* F */
        for (int j = 0; j < l1; j++)
            x[j] += a[j];
        cat(in, x, l1, c, cw);
        rnet_eval(R->net[1], in, a); /* G */
        for (int j = 0; j < l2; j++)
            x[l1 + j] += a[j];
    } else if (!strcmp(t, "RNVPCouplingBlock")) {
        /* net: 0 s1, 1 t1, 2 s2, 3 t2 */
        rnet_eval(R->net[2], in, a);
        rnet_eval(R->net[3], in, b);
        ld += ref_affine(R, x, l1, a, b, false);
        cat(in, x, l1, c, cw);
        rnet_eval(R->net[0], in, a);
        rnet_eval(R->net[1], in, b);
        ld += ref_affine(R, x + l1, l2, a, b, false);
    } else { /* GLOW, GIN: net 0 = subnet1 (x1 -> 2 l2), 1 = subnet2 (x2 -> 2 l1) */
        rnet_eval(R->net[1], in, a);
        ld += ref_affine(R, x, l1, a, a + l1, gin);
        cat(in, x, l1, c, cw);
        rnet_eval(R->net[0], in, a);
        ld += ref_affine(R, x + l1, l2, a, a + l2, gin);
    }
    memcpy(y, x, sizeof(double) * (size_t)d);
    return ld;
}

/* ---- building single-block checkpoints ------------------------------------------------- */

/* A random orthogonal d x d matrix (Gram-Schmidt in double, rounded to float). */
static void rand_orth(int d, uint64_t seed, float *Q)
{
    float g[MAXD * MAXD];
    double q[MAXD * MAXD];
    tu_randn(g, d * d, 1.0f, seed);
    for (int i = 0; i < d; i++) {
        for (int j = 0; j < d; j++)
            q[i * d + j] = g[i * d + j];
        for (int k = 0; k < i; k++) {
            double dot = 0;
            for (int j = 0; j < d; j++)
                dot += q[i * d + j] * q[k * d + j];
            for (int j = 0; j < d; j++)
                q[i * d + j] -= dot * q[k * d + j];
        }
        double nn = 0;
        for (int j = 0; j < d; j++)
            nn += q[i * d + j] * q[i * d + j];
        for (int j = 0; j < d; j++)
            q[i * d + j] /= sqrt(nn);
    }
    for (int i = 0; i < d * d; i++)
        Q[i] = (float)q[i];
}

static const char *const ACT_NAMES[] = {"ATAN", "TANH", "SIGMOID"};
static const char *const G_NAMES[] = {"SOFTPLUS", "SIGMOID", "EXP"};

/* Values of global_scale exercising each Psi, torch's softplus threshold branch included
 * (200 -> 20 exactly; e^100 would overflow a float without it). */
static const float GS_VALUES[3][8] = {
    {9.986479f, 200.0f, 41.0f, -3.0f, 5.0f, 12.5f, 0.0f, 39.5f},
    {2.0f, -1.0f, 3.5f, 0.0f, 1.0f, 4.0f, -2.5f, 2.7f},
    {0.0f, 0.3f, -0.4f, 0.8f, -0.9f, 0.15f, 0.5f, -0.2f},
};

/* AllInOneBlock variants: {ptype, gtype, gin, rev, legacy, alpha*10, householder K} */
static const int AIO_VARIANTS[][7] = {
    {P_HARD, G_SOFTPLUS, 0, 0, 0, 20, 0}, {P_ONEHOT, G_SIGMOID, 0, 0, 1, 15, 0},
    {P_SOFT, G_EXP, 0, 1, 0, 20, 0},      {P_HOUSE, G_SOFTPLUS, 0, 1, 0, 7, 3},
    {P_HARD, G_SOFTPLUS, 1, 1, 0, 20, 0}, {P_SOFT, G_SIGMOID, 1, 0, 1, 20, 0},
    {P_HOUSE, G_SIGMOID, 0, 0, 1, 30, 1}, {P_HARD, G_EXP, 0, 1, 1, 10, 0},
};

static char *build_allinone(struct tu_ckpt *ck, struct ref *R, int variant, uint64_t seed)
{
    const int *v = AIO_VARIANTS[variant];
    int d = R->d, cw = R->cw;
    R->ptype = v[0], R->gtype = v[1], R->gin = v[2], R->rev = v[3], R->legacy = v[4];
    R->alpha = v[5] / 10.0;
    R->l1 = d - d / 2, R->l2 = d / 2;
    R->net[0] = rnet_new(R->l1 + cw, 2 * R->l2, 3.0f, seed); /* x10 for the 0.1 factor */
    char *sub = rnet_add(ck, R->net[0], "aio.subnet");
    int64_t s1[2] = {1, d};
    for (int k = 0; k < d; k++)
        R->gs[k] = GS_VALUES[R->gtype][(k + variant) % 8];
    tu_randn(R->off, d, 0.3f, seed + 5);
    tu_add_f32(ck, "aio.global_scale", 2, s1, R->gs);
    tu_add_f32(ck, "aio.global_offset", 2, s1, R->off);

    char perm_js[256];
    for (int i = 0; i < d; i++)
        R->perm[i] = (i * 2 + 1 + variant) % d; /* a bijection unless gcd(2, d) > 1 */
    if (d % 2 == 0) /* even d: a rotation instead */
        for (int i = 0; i < d; i++)
            R->perm[i] = (i + 1 + variant) % d;
    if (R->ptype == P_HARD) {
        int64_t p64[MAXD], sh[1] = {d};
        for (int i = 0; i < d; i++)
            p64[i] = R->perm[i];
        tu_add(ck, "aio.w_perm", "I64", 1, sh, p64);
        snprintf(perm_js, sizeof(perm_js), "{\"type\":\"hard\",\"perm\":\"aio.w_perm\"}");
    } else if (R->ptype == P_ONEHOT) {
        float m[MAXD * MAXD] = {0};
        int64_t sh[2] = {d, d};
        for (int i = 0; i < d; i++)
            m[i * d + R->perm[i]] = 1.0f;
        tu_add_f32(ck, "aio.w_perm", 2, sh, m);
        snprintf(perm_js, sizeof(perm_js), "{\"type\":\"hard\",\"perm\":\"aio.w_perm\"}");
    } else if (R->ptype == P_SOFT) {
        float W[MAXD * MAXD], Wt[MAXD * MAXD];
        int64_t sh[2] = {d, d};
        rand_orth(d, seed + 9, W);
        for (int i = 0; i < d; i++)
            for (int j = 0; j < d; j++)
                Wt[j * d + i] = W[i * d + j];
        for (int i = 0; i < d * d; i++)
            R->W[i] = W[i], R->Wi[i] = Wt[i];
        tu_add_f32(ck, "aio.w_perm", 2, sh, W);
        tu_add_f32(ck, "aio.w_perm_inv", 2, sh, Wt);
        snprintf(perm_js, sizeof(perm_js),
                 "{\"type\":\"soft\",\"w\":\"aio.w_perm\",\"w_inv\":\"aio.w_perm_inv\"}");
    } else {
        int K = v[6];
        float W0[MAXD * MAXD], V[4 * MAXD];
        int64_t sh[2] = {d, d}, shv[2] = {K, d};
        rand_orth(d, seed + 9, W0);
        tu_randn(V, K * d, 0.2f, seed + 10);
        tu_add_f32(ck, "aio.w_0", 2, sh, W0);
        tu_add_f32(ck, "aio.vk_householder", 2, shv, V);
        /* W = W0 * prod_k (I - 2 v v^T / |v|^2), left to right */
        for (int i = 0; i < d * d; i++)
            R->W[i] = W0[i];
        for (int k = 0; k < K; k++) {
            double Hm[MAXD * MAXD], T[MAXD * MAXD], nn = 0;
            for (int i = 0; i < d; i++)
                nn += (double)V[k * d + i] * V[k * d + i];
            for (int i = 0; i < d; i++)
                for (int j = 0; j < d; j++)
                    Hm[i * d + j] = (i == j) - 2.0 * V[k * d + i] * V[k * d + j] / nn;
            for (int i = 0; i < d; i++)
                for (int j = 0; j < d; j++) {
                    double acc = 0;
                    for (int m = 0; m < d; m++)
                        acc += R->W[i * d + m] * Hm[m * d + j];
                    T[i * d + j] = acc;
                }
            memcpy(R->W, T, sizeof(T));
        }
        for (int i = 0; i < d; i++)
            for (int j = 0; j < d; j++)
                R->Wi[j * d + i] = R->W[i * d + j];
        snprintf(perm_js, sizeof(perm_js),
                 "{\"type\":\"householder\",\"w0\":\"aio.w_0\",\"v\":\"aio.vk_householder\"}");
    }
    char *js = malloc(4096);
    ck_assert_ptr_nonnull(js);
    snprintf(js, 4096,
             "{\"type\":\"AllInOneBlock\"%s,\"affine_clamping\":%g,\"clamp_formula\":\"%s\","
             "\"gin_block\":%s,\"global_affine_type\":\"%s\",\"global_scale\":\"aio.global_scale\","
             "\"global_offset\":\"aio.global_offset\",\"permutation\":%s,"
             "\"reverse_permutation\":%s,\"subnet\":%s}",
             cw ? ",\"cond\":0" : "", R->alpha, R->legacy ? "legacy" : "head",
             R->gin ? "true" : "false", G_NAMES[R->gtype], perm_js, R->rev ? "true" : "false",
             sub);
    free(sub);
    return js;
}

/* Coupling variants: {clamp_activation, clamp*10, split mode (0 default, 1 -> 1,
 * 2 -> d-1, 3 -> 0 when conditioned)} */
static const int CPL_VARIANTS[][3] = {
    {C_ATAN, 20, 0}, {C_TANH, 15, 1}, {C_SIGMOID, 12, 2}, {C_ATAN, 30, 3},
};

static int pick_split(int mode, int d, int cw)
{
    switch (mode) {
    case 1: return 1;
    case 2: return d - 1;
    case 3: return cw ? 0 : 1;
    default: return coupling_default_split(d);
    }
}

static char *build_coupling(struct tu_ckpt *ck, struct ref *R, int variant, uint64_t seed)
{
    const int *v = CPL_VARIANTS[variant];
    int d = R->d, cw = R->cw;
    R->act = v[0], R->clamp = v[1] / 10.0;
    R->l1 = pick_split(v[2], d, cw), R->l2 = d - R->l1;
    int l1 = R->l1, l2 = R->l2;
    char head[256];
    int k = snprintf(head, sizeof(head), "{\"type\":\"%s\"%s", R->type, cw ? ",\"cond\":0" : "");
    if (v[2] != 0)
        k += snprintf(head + k, sizeof(head) - (size_t)k, ",\"split\":%d", l1);
    if (strcmp(R->type, "NICECouplingBlock"))
        snprintf(head + k, sizeof(head) - (size_t)k, ",\"clamp\":%g,\"clamp_activation\":\"%s\"",
                 R->clamp, ACT_NAMES[R->act]);
    char *js = malloc(8192), *sub[4] = {0};
    ck_assert_ptr_nonnull(js);
    const char *t = R->type;
    if (!strcmp(t, "NICECouplingBlock")) {
        R->net[0] = rnet_new(l2 + cw, l1, 1.0f, seed);
        R->net[1] = rnet_new(l1 + cw, l2, 1.0f, seed + 1);
        sub[0] = rnet_add(ck, R->net[0], "F");
        sub[1] = rnet_add(ck, R->net[1], "G");
        snprintf(js, 8192, "%s,\"F\":%s,\"G\":%s}", head, sub[0], sub[1]);
    } else if (!strcmp(t, "RNVPCouplingBlock")) {
        R->net[0] = rnet_new(l1 + cw, l2, 1.0f, seed);
        R->net[1] = rnet_new(l1 + cw, l2, 1.0f, seed + 1);
        R->net[2] = rnet_new(l2 + cw, l1, 1.0f, seed + 2);
        R->net[3] = rnet_new(l2 + cw, l1, 1.0f, seed + 3);
        sub[0] = rnet_add(ck, R->net[0], "s1");
        sub[1] = rnet_add(ck, R->net[1], "t1");
        sub[2] = rnet_add(ck, R->net[2], "s2");
        sub[3] = rnet_add(ck, R->net[3], "t2");
        snprintf(js, 8192, "%s,\"s1\":%s,\"t1\":%s,\"s2\":%s,\"t2\":%s}", head, sub[0], sub[1],
                 sub[2], sub[3]);
    } else if (!strcmp(t, "GLOWCouplingBlock") || !strcmp(t, "GINCouplingBlock")) {
        R->net[0] = rnet_new(l1 + cw, 2 * l2, 1.0f, seed);
        R->net[1] = rnet_new(l2 + cw, 2 * l1, 1.0f, seed + 1);
        sub[0] = rnet_add(ck, R->net[0], "subnet1");
        sub[1] = rnet_add(ck, R->net[1], "subnet2");
        snprintf(js, 8192, "%s,\"subnet1\":%s,\"subnet2\":%s}", head, sub[0], sub[1]);
    } else if (!strcmp(t, "AffineCouplingOneSided")) {
        R->net[0] = rnet_new(l1 + cw, 2 * l2, 1.0f, seed);
        sub[0] = rnet_add(ck, R->net[0], "subnet");
        snprintf(js, 8192, "%s,\"subnet\":%s}", head, sub[0]);
    } else { /* ConditionalAffineTransform: no split */
        R->l1 = 0, R->l2 = d;
        R->net[0] = rnet_new(cw, 2 * d, 1.0f, seed);
        sub[0] = rnet_add(ck, R->net[0], "subnet");
        snprintf(js, 8192,
                 "{\"type\":\"%s\",\"cond\":0,\"clamp\":%g,\"clamp_activation\":\"%s\","
                 "\"subnet\":%s}",
                 t, R->clamp, ACT_NAMES[R->act], sub[0]);
    }
    for (int i = 0; i < 4; i++)
        free(sub[i]);
    return js;
}

/* Spline variants: {identity tails, bins, domain set, domain_clamping*10, split mode} */
static const int SPL_VARIANTS[][5] = {
    {0, 10, 0, 0, 0}, {1, 10, 0, 0, 0}, {0, 5, 1, 25, 1}, {1, 3, 1, 15, 2}, {0, 1, 0, 0, 0},
};

static char *build_spline(struct tu_ckpt *ck, struct ref *R, int variant, uint64_t seed)
{
    const int *v = SPL_VARIANTS[variant];
    int d = R->d, cw = R->cw;
    R->idt = v[0], R->K = v[1];
    R->D = v[3] / 10.0;
    if (v[2]) {
        const double dom[4] = {-2.0, 2.5, -1.5, 3.0};
        memcpy(R->dom, dom, sizeof(dom));
        R->minw = 0.05, R->minh = 0.2;
    } else {
        const double dom[4] = {-3.0, 3.0, -3.0, 3.0};
        memcpy(R->dom, dom, sizeof(dom));
        R->minw = R->minh = 0.1;
    }
    R->l1 = pick_split(v[4], d, 0), R->l2 = d - R->l1;
    int P = R->idt ? 3 * R->K : 3 * R->K + 1;
    R->net[0] = rnet_new(R->l2 + cw, R->l1 * P, 1.0f, seed);
    R->net[1] = rnet_new(R->l1 + cw, R->l2 * P, 1.0f, seed + 1);
    char *s1 = rnet_add(ck, R->net[0], "spline.subnet1");
    char *s2 = rnet_add(ck, R->net[1], "spline.subnet2");
    char *js = malloc(8192);
    ck_assert_ptr_nonnull(js);
    char extra[256] = "";
    if (v[2])
        snprintf(extra, sizeof(extra),
                 ",\"default_domain\":[-2,2.5,-1.5,3],\"min_bin_sizes\":[0.05,0.2]");
    char split[32] = "";
    if (v[4])
        snprintf(split, sizeof(split), ",\"split\":%d", R->l1);
    char dc[48] = ",\"domain_clamping\":null";
    if (R->D > 0)
        snprintf(dc, sizeof(dc), ",\"domain_clamping\":%g", R->D);
    snprintf(js, 8192,
             "{\"type\":\"RationalQuadraticSpline\"%s%s,\"bins\":%d,\"tails\":\"%s\"%s%s,"
             "\"subnet1\":%s,\"subnet2\":%s}",
             cw ? ",\"cond\":0" : "", split, R->K, R->idt ? "identity" : "affine", extra, dc, s1,
             s2);
    free(s1);
    free(s2);
    return js;
}

/* Build the checkpoint of (type, variant) at width d and condition width cw, load it, and
 * fill the reference R. */
static struct eng_model *build(struct ref *R, const char *type, int variant, int d, int cw)
{
    memset(R, 0, sizeof(*R));
    snprintf(R->type, sizeof(R->type), "%s", type);
    R->d = d, R->cw = cw;
    uint64_t seed = 1000 + (uint64_t)variant * 37 + (uint64_t)d * 5 + (uint64_t)cw;
    struct tu_ckpt *ck = tu_ckpt_new();
    char *js;
    if (!strcmp(type, "AllInOneBlock"))
        js = build_allinone(ck, R, variant, seed);
    else if (!strcmp(type, "RationalQuadraticSpline"))
        js = build_spline(ck, R, variant, seed);
    else
        js = build_coupling(ck, R, variant, seed);
    char *man = tu_manifest_one_block(d, cw, js);
    struct eng_model *m = tu_load(ck, man, ENG_LOAD_NO_SELFTEST);
    free(man);
    free(js);
    tu_ckpt_free(ck);
    ck_assert_ptr_nonnull(m);
    return m;
}

/* Engine forward vs the double reference on n random rows. */
static void check_values(const struct eng_model *m, const struct ref *R, int n, float xscale,
                         double tol)
{
    int d = R->d, cw = R->cw;
    float x[64 * MAXD], y[64 * 4], z[64 * MAXD];
    double ld[64];
    ck_assert(n <= 64 && cw <= 4);
    tu_randn(x, n * d, xscale, 77 + (uint64_t)d);
    tu_randn(y, n * (cw ? cw : 1), 1.0f, 78);
    char err[ENG_ERR_LEN];
    struct eng_ws *ws = eng_ws_new();
    enum eng_status st = eng_forward(m, ws, n, x, cw ? y : NULL, cw ? n : 0, z, NULL, ld, err);
    ck_assert_msg(st == ENG_OK, "forward: %s", err);
    double moved = 0.0;
    for (int i = 0; i < n; i++) {
        double xd[MAXD], cd[4], zr[MAXD];
        for (int j = 0; j < d; j++)
            xd[j] = x[i * d + j];
        for (int j = 0; j < cw; j++)
            cd[j] = y[i * cw + j];
        double ldr = ref_forward(R, xd, cd, zr);
        for (int j = 0; j < d; j++) {
            ck_assert_msg(fabs(z[i * d + j] - zr[j]) <= tol * (1.0 + fabs(zr[j])),
                          "%s d=%d cw=%d row %d col %d: engine %.9g, reference %.9g", R->type, d,
                          cw, i, j, z[i * d + j], zr[j]);
            moved += fabs(zr[j] - xd[j]);
        }
        ck_assert_msg(fabs(ld[i] - ldr) <= tol * (1.0 + fabs(ldr)),
                      "%s d=%d cw=%d row %d: log-det engine %.9g, reference %.9g", R->type, d, cw,
                      i, ld[i], ldr);
    }
    ck_assert_msg(moved > 1e-3 * n, "%s: the test block is (nearly) the identity", R->type);
    eng_ws_free(ws);
}

/* ---- the variant sweep ------------------------------------------------------------------ */

struct vcase {
    const char *type;
    int variant;
    float xscale;
};

static const struct vcase VCASES[] = {
    {"AllInOneBlock", 0, 1.5f},
    {"AllInOneBlock", 1, 1.5f},
    {"AllInOneBlock", 2, 1.5f},
    {"AllInOneBlock", 3, 1.5f},
    {"AllInOneBlock", 4, 1.5f},
    {"AllInOneBlock", 5, 1.5f},
    {"AllInOneBlock", 6, 1.5f},
    {"AllInOneBlock", 7, 1.5f},
    {"NICECouplingBlock", 0, 1.5f},
    {"NICECouplingBlock", 1, 1.5f},
    {"RNVPCouplingBlock", 0, 1.5f},
    {"RNVPCouplingBlock", 1, 1.5f},
    {"RNVPCouplingBlock", 2, 1.5f},
    {"GLOWCouplingBlock", 0, 1.5f},
    {"GLOWCouplingBlock", 1, 1.5f},
    {"GLOWCouplingBlock", 2, 1.5f},
    {"GINCouplingBlock", 0, 1.5f},
    {"GINCouplingBlock", 1, 1.5f},
    {"GINCouplingBlock", 2, 1.5f},
    {"AffineCouplingOneSided", 0, 1.5f},
    {"AffineCouplingOneSided", 1, 1.5f},
    {"AffineCouplingOneSided", 3, 1.5f},
    {"ConditionalAffineTransform", 0, 1.5f},
    {"ConditionalAffineTransform", 2, 1.5f},
    {"RationalQuadraticSpline", 0, 2.0f},
    {"RationalQuadraticSpline", 1, 2.0f},
    {"RationalQuadraticSpline", 2, 2.0f},
    {"RationalQuadraticSpline", 3, 2.0f},
    {"RationalQuadraticSpline", 4, 2.0f},
};
#define N_VCASES ((int)(sizeof(VCASES) / sizeof(VCASES[0])))
static const int WIDTHS[] = {3, 5, 6};

/* _i = case * 6 + width * 2 + conditioned */
START_TEST(test_variant)
{
    const struct vcase *vc = &VCASES[_i / 6];
    int d = WIDTHS[(_i % 6) / 2];
    int cw = (_i % 2) ? 3 : 0;
    if (!strcmp(vc->type, "ConditionalAffineTransform"))
        cw = (_i % 2) ? 3 : 1;
    struct ref R;
    struct eng_model *m = build(&R, vc->type, vc->variant, d, cw);
    check_values(m, &R, 9, vc->xscale, 5e-5);
    tu_check_roundtrip(m, 37, vc->xscale, 1e-4);
    /* Central differences of a float map: rounding noise ~ eps |z| / h against truncation
     * ~ h^2 |f'''| (the splines' bins are narrow, so their steps are smaller and the
     * tolerance wider; the value check above already pins the log-det to 5e-5). */
    bool spline = !strcmp(vc->type, "RationalQuadraticSpline");
    tu_check_logdet_fd(m, 3, vc->xscale, spline ? 4e-3 : 5e-3, spline ? 1.5e-2 : 5e-3);
    eng_model_unref(m);
    ref_free(&R);
}
END_TEST

/* ---- special cases ------------------------------------------------------------------------ */

START_TEST(test_default_split)
{
    /* Python round(d/2), half to even: the table of freia-modules.md section 3.1. */
    const int d[] = {1, 2, 3, 4, 5, 6, 7, 9, 11}, want[] = {0, 1, 2, 2, 2, 3, 4, 4, 6};
    for (int i = 0; i < (int)(sizeof(d) / sizeof(d[0])); i++)
        ck_assert_int_eq(coupling_default_split(d[i]), want[i]);
}
END_TEST

/* Tiles over ENG_TILE_ROWS rows, a broadcast condition, and both directions agree with the
 * reference row by row. */
START_TEST(test_many_rows_and_broadcast)
{
    const char *types[] = {"AllInOneBlock", "GLOWCouplingBlock", "ConditionalAffineTransform",
                           "RationalQuadraticSpline", "RNVPCouplingBlock"};
    for (int t = 0; t < 5; t++) {
        struct ref R;
        int d = 5, cw = 3;
        struct eng_model *m = build(&R, types[t], 0, d, cw);
        tu_check_roundtrip(m, 600, 1.5f, 1e-4);
        /* broadcast one condition row == the same row repeated */
        int n = 300;
        float *x = malloc(sizeof(float) * n * d), *yrep = malloc(sizeof(float) * n * cw);
        float *z1 = malloc(sizeof(float) * n * d), *z2 = malloc(sizeof(float) * n * d);
        float *x1 = malloc(sizeof(float) * n * d), *x2 = malloc(sizeof(float) * n * d);
        double *l1 = malloc(sizeof(double) * n), *l2 = malloc(sizeof(double) * n);
        float y1[3] = {0.3f, -1.2f, 0.7f};
        tu_randn(x, n * d, 1.5f, 5);
        for (int i = 0; i < n; i++)
            memcpy(yrep + i * cw, y1, sizeof(y1));
        char err[ENG_ERR_LEN];
        struct eng_ws *ws = eng_ws_new();
        ck_assert(eng_forward(m, ws, n, x, y1, 1, z1, NULL, l1, err) == ENG_OK);
        ck_assert(eng_forward(m, ws, n, x, yrep, n, z2, NULL, l2, err) == ENG_OK);
        for (int i = 0; i < n * d; i++)
            ck_assert_msg(fabsf(z1[i] - z2[i]) <= 1e-5f * (1.0f + fabsf(z2[i])),
                          "%s: broadcast %g vs repeated %g at %d", types[t], z1[i], z2[i], i);
        for (int i = 0; i < n; i++)
            ck_assert(fabs(l1[i] - l2[i]) <= 1e-5 * (1.0 + fabs(l2[i])));
        ck_assert(eng_inverse(m, ws, n, z1, y1, 1, x1, l1, NULL, NULL, err) == ENG_OK);
        ck_assert(eng_inverse(m, ws, n, z1, yrep, n, x2, l2, NULL, NULL, err) == ENG_OK);
        for (int i = 0; i < n * d; i++) {
            ck_assert(fabsf(x1[i] - x2[i]) <= 1e-5f * (1.0f + fabsf(x2[i])));
            ck_assert(fabsf(x1[i] - x[i]) <= 1e-4f * (1.0f + fabsf(x[i])));
        }
        /* the reference at the broadcast condition, a few rows across the tile boundary */
        for (int i = 250; i < 262; i++) {
            double xd[MAXD], cd[3] = {y1[0], y1[1], y1[2]}, zr[MAXD];
            for (int j = 0; j < d; j++)
                xd[j] = x[i * d + j];
            double ldr = ref_forward(&R, xd, cd, zr);
            for (int j = 0; j < d; j++)
                ck_assert_msg(fabs(z1[i * d + j] - zr[j]) <= 5e-5 * (1.0 + fabs(zr[j])),
                              "%s row %d col %d: %.9g vs %.9g", types[t], i, j, z1[i * d + j],
                              zr[j]);
            ck_assert(fabs(l1[i] + ldr) <= 5e-5 * (1.0 + fabs(ldr))); /* l1: inverse log-det */
        }
        eng_ws_free(ws);
        free(x), free(yrep), free(z1), free(z2), free(x1), free(x2), free(l1), free(l2);
        eng_model_unref(m);
        ref_free(&R);
    }
}
END_TEST

/* With a zero subnet the AllInOneBlock is y = P(x * Psi(global_scale) + offset): the global
 * affine activations exactly, the softplus threshold branch (a = 200 gives 20, where the
 * unthresholded formula overflows a float) and the log-det sum log g. */
START_TEST(test_allinone_global_affine)
{
    for (int gt = 0; gt < 3; gt++) {
        int d = 8;
        struct tu_ckpt *ck = tu_ckpt_new();
        struct rnet *net = rnet_new(d - d / 2, 2 * (d / 2), 1.0f, 3);
        memset(net->w1, 0, sizeof(net->w1));
        memset(net->b1, 0, sizeof(net->b1));
        memset(net->w2, 0, sizeof(net->w2));
        memset(net->b2, 0, sizeof(net->b2));
        char *sub = rnet_add(ck, net, "s");
        float gs[8], off[8] = {0.5f, -1, 0, 2, 0, 0, 0.25f, -0.125f};
        memcpy(gs, GS_VALUES[gt], sizeof(gs));
        int64_t s1[2] = {1, d}, sp1[1] = {d};
        tu_add_f32(ck, "gs", 2, s1, gs);
        tu_add_f32(ck, "go", 1, sp1, off); /* (d,) works as well as (1, d) */
        int64_t perm[8] = {0, 1, 2, 3, 4, 5, 6, 7};
        tu_add(ck, "perm", "I64", 1, sp1, perm);
        char js[2048];
        snprintf(js, sizeof(js),
                 "{\"type\":\"AllInOneBlock\",\"global_affine_type\":\"%s\",\"global_scale\":"
                 "\"gs\",\"global_offset\":\"go\",\"permutation\":{\"type\":\"hard\",\"perm\":"
                 "\"perm\"},\"subnet\":%s}",
                 G_NAMES[gt], sub);
        char *man = tu_manifest_one_block(d, 0, js);
        struct eng_model *m = tu_load(ck, man, ENG_LOAD_NO_SELFTEST);
        float x[8] = {1, -2, 0.5f, 3, -1, 0.25f, 2, -0.75f}, z[8];
        double ld, want_ld = 0;
        char err[ENG_ERR_LEN];
        struct eng_ws *ws = eng_ws_new();
        ck_assert(eng_forward(m, ws, 1, x, NULL, 0, z, NULL, &ld, err) == ENG_OK);
        for (int k = 0; k < d; k++) {
            double g = psi(gt, gs[k]);
            want_ld += log(g);
            ck_assert_msg(fabs(z[k] - (x[k] * g + off[k])) <= 1e-6 * (1 + fabs(x[k] * g)),
                          "%s: z[%d] = %.9g, want %.9g", G_NAMES[gt], k, z[k], x[k] * g + off[k]);
        }
        if (gt == G_SOFTPLUS) {
            ck_assert_float_eq(z[1], -2.0f * 20.0f - 1.0f); /* a = 200: 0.1 * 200 exactly */
            ck_assert_float_eq_tol(z[2], 0.5f * 4.1f, 1e-6f);
        }
        ck_assert_msg(fabs(ld - want_ld) <= 1e-5, "log-det %.9g, want %.9g", ld, want_ld);
        eng_ws_free(ws);
        eng_model_unref(m);
        free(man);
        free(sub);
        free(net);
        tu_ckpt_free(ck);
    }
}
END_TEST

/* The PyPI-0.2 one-hot w_perm and the int64 vector give the same block. */
START_TEST(test_allinone_onehot_equals_vector)
{
    int d = 5;
    struct ref R1, R2;
    struct eng_model *m1 = build(&R1, "AllInOneBlock", 0, d, 0);   /* hard vector */
    struct tu_ckpt *ck = tu_ckpt_new();
    memset(&R2, 0, sizeof(R2));
    snprintf(R2.type, sizeof(R2.type), "AllInOneBlock");
    R2.d = d;
    /* rebuild variant 0 with a one-hot matrix: same seed, same tensors otherwise */
    char *js = build_allinone(ck, &R2, 0, 1000 + 5 * 5);
    ck_assert_int_eq(R2.ptype, P_HARD);
    tu_ckpt_free(ck);
    free(js);
    ck = tu_ckpt_new();
    R2.ptype = P_ONEHOT;
    char *sub = rnet_add(ck, R2.net[0], "aio.subnet");
    int64_t s1[2] = {1, d}, sh[2] = {d, d};
    tu_add_f32(ck, "aio.global_scale", 2, s1, R2.gs);
    tu_add_f32(ck, "aio.global_offset", 2, s1, R2.off);
    float oh[25] = {0};
    for (int i = 0; i < d; i++)
        oh[i * d + R2.perm[i]] = 1.0f;
    tu_add_f32(ck, "aio.w_perm", 2, sh, oh);
    char blk[4096];
    snprintf(blk, sizeof(blk),
             "{\"type\":\"AllInOneBlock\",\"global_scale\":\"aio.global_scale\","
             "\"global_offset\":\"aio.global_offset\",\"permutation\":{\"type\":\"hard\","
             "\"perm\":\"aio.w_perm\"},\"subnet\":%s}", sub);
    char *man = tu_manifest_one_block(d, 0, blk);
    struct eng_model *m2 = tu_load(ck, man, ENG_LOAD_NO_SELFTEST);
    float x[4 * 5], z1[20], z2[20];
    double l1[4], l2[4];
    tu_randn(x, 20, 1.0f, 3);
    char err[ENG_ERR_LEN];
    struct eng_ws *ws = eng_ws_new();
    ck_assert(eng_forward(m1, ws, 4, x, NULL, 0, z1, NULL, l1, err) == ENG_OK);
    ck_assert(eng_forward(m2, ws, 4, x, NULL, 0, z2, NULL, l2, err) == ENG_OK);
    for (int i = 0; i < 20; i++)
        ck_assert_float_eq(z1[i], z2[i]);
    eng_ws_free(ws);
    eng_model_unref(m1);
    eng_model_unref(m2);
    free(man);
    free(sub);
    tu_ckpt_free(ck);
    ref_free(&R1);
    ref_free(&R2);
}
END_TEST

/* A spline whose subnets output only biases: zero raw parameters make the identity; a
 * raw "bottom" b shifts everything by b (inside: a linear spline with slope 1; outside:
 * the tail y = x + b). */
static struct eng_model *bias_spline(int d, bool idt, int K, const float *bias_ch, float dom_lo,
                                     float dom_hi)
{
    struct tu_ckpt *ck = tu_ckpt_new();
    int l1 = coupling_default_split(d), l2 = d - l1, P = idt ? 3 * K : 3 * K + 1;
    struct rnet *a = rnet_new(l2, l1 * P, 1.0f, 1), *b = rnet_new(l1, l2 * P, 1.0f, 2);
    memset(a->w2, 0, sizeof(a->w2));
    memset(b->w2, 0, sizeof(b->w2));
    for (int j = 0; j < l1; j++)
        memcpy(a->b2 + j * P, bias_ch, sizeof(float) * (size_t)P);
    for (int j = 0; j < l2; j++)
        memcpy(b->b2 + j * P, bias_ch, sizeof(float) * (size_t)P);
    char *s1 = rnet_add(ck, a, "a"), *s2 = rnet_add(ck, b, "b");
    char js[4096];
    snprintf(js, sizeof(js),
             "{\"type\":\"RationalQuadraticSpline\",\"bins\":%d,\"tails\":\"%s\","
             "\"default_domain\":[%g,%g,%g,%g],\"subnet1\":%s,\"subnet2\":%s}",
             K, idt ? "identity" : "affine", dom_lo, dom_hi, dom_lo, dom_hi, s1, s2);
    char *man = tu_manifest_one_block(d, 0, js);
    struct eng_model *m = tu_load(ck, man, ENG_LOAD_NO_SELFTEST);
    free(man), free(s1), free(s2), free(a), free(b);
    tu_ckpt_free(ck);
    return m;
}

START_TEST(test_spline_identity_and_shift)
{
    int d = 4, K = 6;
    float bias[64] = {0};
    struct eng_ws *ws = eng_ws_new();
    char err[ENG_ERR_LEN];
    float x[40], z[40], xb[40];
    double ld[10], ldb[10];
    tu_randn(x, 40, 3.0f, 9); /* many points in the tails too */
    x[0] = -3.0f, x[1] = 3.0f, x[2] = 0.0f, x[3] = -1.0f; /* knots of the default domain */
    for (int idt = 0; idt < 2; idt++) {
        struct eng_model *m = bias_spline(d, idt, K, bias, -3, 3);
        ck_assert(eng_forward(m, ws, 10, x, NULL, 0, z, NULL, ld, err) == ENG_OK);
        for (int i = 0; i < 40; i++)
            ck_assert_msg(fabsf(z[i] - x[i]) <= 1e-5f * (1 + fabsf(x[i])), "identity: %g -> %g",
                          x[i], z[i]);
        for (int i = 0; i < 10; i++)
            ck_assert(fabs(ld[i]) < 1e-5);
        eng_model_unref(m);
    }
    /* bottom raw = 0.7 (affine tails: entry 2K) */
    bias[2 * K] = 0.7f;
    struct eng_model *m = bias_spline(d, false, K, bias, -3, 3);
    ck_assert(eng_forward(m, ws, 10, x, NULL, 0, z, NULL, ld, err) == ENG_OK);
    /* y1 = x1 + 0.7 everywhere; y2 = x2 + 0.7 too (its parameters ignore y1) */
    for (int i = 0; i < 40; i++)
        ck_assert_msg(fabsf(z[i] - (x[i] + 0.7f)) <= 1e-5f * (1 + fabsf(x[i])), "shift: %g -> %g",
                      x[i], z[i]);
    ck_assert(eng_inverse(m, ws, 10, z, NULL, 0, xb, ldb, NULL, NULL, err) == ENG_OK);
    for (int i = 0; i < 40; i++)
        ck_assert(fabsf(xb[i] - x[i]) <= 1e-5f * (1 + fabsf(x[i])));
    eng_model_unref(m);
    eng_ws_free(ws);
}
END_TEST

/* Exactly on and next to the knots, forward and inverse stay finite, monotone and
 * invert each other (domain [-2, 2], 4 bins: knots -2, -1, 0, 1, 2 up to rounding). */
START_TEST(test_spline_bin_edges)
{
    int d = 2, K = 4;
    float bias[64] = {0};
    for (int k = 0; k < K; k++)
        bias[K + k] = 0.4f * (float)k - 0.5f; /* uneven heights */
    for (int k = 0; k < K - 1; k++)
        bias[2 * K + 2 + k] = 1.5f - (float)k;    /* interior derivatives != 1 */
    struct eng_model *m = bias_spline(d, false, K, bias, -2, 2);
    struct eng_ws *ws = eng_ws_new();
    char err[ENG_ERR_LEN];
    enum { N = 45 };
    float x[2 * N], z[2 * N], xb[2 * N];
    double ld[N], ldb[N];
    const float knots[5] = {-2, -1, 0, 1, 2};
    for (int k = 0, i = 0; k < 5; k++)
        for (int e = -4; e <= 4; e++, i++) {
            float v = knots[k];
            for (int s = 0; s < (e < 0 ? -e : e); s++)
                v = nextafterf(v, e < 0 ? -INFINITY : INFINITY);
            x[2 * i] = x[2 * i + 1] = v;
        }
    ck_assert(eng_forward(m, ws, N, x, NULL, 0, z, NULL, ld, err) == ENG_OK);
    for (int i = 0; i < N; i++) {
        ck_assert_msg(isfinite(z[2 * i]) && isfinite(z[2 * i + 1]) && isfinite(ld[i]),
                      "non-finite at x = %.9g", x[2 * i]);
        if (i > 0)
            ck_assert_msg(z[2 * i] >= z[2 * i - 2], "not monotone at x = %.9g", x[2 * i]);
    }
    ck_assert(eng_inverse(m, ws, N, z, NULL, 0, xb, ldb, NULL, NULL, err) == ENG_OK);
    for (int i = 0; i < 2 * N; i++)
        ck_assert_msg(isfinite(xb[i]) && fabsf(xb[i] - x[i]) <= 2e-6f,
                      "round trip at the knot: %.9g -> %.9g -> %.9g", x[i], z[i], xb[i]);
    for (int i = 0; i < N; i++)
        ck_assert(isfinite(ldb[i]) && fabs(ld[i] + ldb[i]) < 1e-5);
    /* and the inverse evaluated exactly at the output knots */
    float y[2 * 5], xo[2 * 5];
    double ly[5];
    for (int k = 0; k < 5; k++)
        y[2 * k] = y[2 * k + 1] = z[2 * (k * 9 + 4)];
    ck_assert(eng_inverse(m, ws, 5, y, NULL, 0, xo, ly, NULL, NULL, err) == ENG_OK);
    for (int i = 0; i < 10; i++)
        ck_assert(isfinite(xo[i]) && fabsf(xo[i] - knots[i / 2]) <= 2e-6f);
    eng_ws_free(ws);
    eng_model_unref(m);
}
END_TEST

/* ---- load-time refusals ------------------------------------------------------------------ */

static void expect_refused(struct tu_ckpt *ck, int d, int cw, const char *js,
                           enum eng_status want, const char *const *needles)
{
    char *man = tu_manifest_one_block(d, cw, js);
    char err[ENG_ERR_LEN] = "";
    enum eng_status st = tu_load_fail(ck, man, ENG_LOAD_NO_SELFTEST, err);
    free(man);
    ck_assert_msg(st == want, "status %s, want %s; message: %s", eng_status_str(st),
                  eng_status_str(want), err);
    for (int i = 0; needles[i]; i++)
        ck_assert_msg(strstr(err, needles[i]) != NULL, "message lacks \"%s\": %s", needles[i],
                      err);
}

#define NEEDLES(...) ((const char *const[]){__VA_ARGS__, NULL})

START_TEST(test_refuse_coupling)
{
    struct tu_ckpt *ck = tu_ckpt_new();
    int d = 5; /* l1 = 2, l2 = 3 */
    struct rnet *n1 = rnet_new(2, 6, 1, 1), *n2 = rnet_new(3, 4, 1, 2), *bad = rnet_new(2, 5, 1, 3);
    struct rnet *c4 = rnet_new(3, 10, 1, 4), *r23 = rnet_new(2, 3, 1, 5), *r32 = rnet_new(3, 2, 1, 6);
    char *s1 = rnet_add(ck, n1, "g1"), *s2 = rnet_add(ck, n2, "g2"), *sb = rnet_add(ck, bad, "bad");
    char *sc = rnet_add(ck, c4, "ca"), *s23 = rnet_add(ck, r23, "r23"), *s32 = rnet_add(ck, r32, "r32");
    char js[8192];

    /* subnet1 output 5 instead of 2*l2 = 6: names the subnet and the widths */
    snprintf(js, sizeof(js), "{\"type\":\"GLOWCouplingBlock\",\"subnet1\":%s,\"subnet2\":%s}", sb,
             s2);
    expect_refused(ck, d, 0, js, ENG_ERR_TENSOR, NEEDLES("subnet1", "5", "6"));
    /* subnet input width: swapping the two nets */
    snprintf(js, sizeof(js), "{\"type\":\"GLOWCouplingBlock\",\"subnet1\":%s,\"subnet2\":%s}", s2,
             s1);
    expect_refused(ck, d, 0, js, ENG_ERR_TENSOR, NEEDLES("subnet1", "g2.0.weight"));
    /* unknown clamp activation */
    snprintf(js, sizeof(js),
             "{\"type\":\"GLOWCouplingBlock\",\"clamp_activation\":\"RELU\",\"subnet1\":%s,"
             "\"subnet2\":%s}", s1, s2);
    expect_refused(ck, d, 0, js, ENG_ERR_MANIFEST, NEEDLES("clamp_activation", "RELU"));
    /* non-numeric clamp */
    snprintf(js, sizeof(js),
             "{\"type\":\"GINCouplingBlock\",\"clamp\":\"big\",\"subnet1\":%s,\"subnet2\":%s}", s1,
             s2);
    expect_refused(ck, d, 0, js, ENG_ERR_MANIFEST, NEEDLES("clamp"));
    /* split out of range, and a split that does not match the subnets */
    snprintf(js, sizeof(js),
             "{\"type\":\"GLOWCouplingBlock\",\"split\":5,\"subnet1\":%s,\"subnet2\":%s}", s1, s2);
    expect_refused(ck, d, 0, js, ENG_ERR_MANIFEST, NEEDLES("split", "5"));
    snprintf(js, sizeof(js),
             "{\"type\":\"GLOWCouplingBlock\",\"split\":0,\"subnet1\":%s,\"subnet2\":%s}", s1, s2);
    expect_refused(ck, d, 0, js, ENG_ERR_MANIFEST, NEEDLES("split"));
    snprintf(js, sizeof(js),
             "{\"type\":\"GLOWCouplingBlock\",\"split\":2.5,\"subnet1\":%s,\"subnet2\":%s}", s1, s2);
    expect_refused(ck, d, 0, js, ENG_ERR_MANIFEST, NEEDLES("split"));
    snprintf(js, sizeof(js),
             "{\"type\":\"GLOWCouplingBlock\",\"split\":3,\"subnet1\":%s,\"subnet2\":%s}", s1, s2);
    expect_refused(ck, d, 0, js, ENG_ERR_TENSOR, NEEDLES("subnet1"));
    /* width 1: the default split leaves x1 empty */
    snprintf(js, sizeof(js), "{\"type\":\"GLOWCouplingBlock\",\"subnet1\":%s,\"subnet2\":%s}", s1,
             s2);
    expect_refused(ck, 1, 0, js, ENG_ERR_MANIFEST, NEEDLES("split"));
    /* RNVP without t2 */
    snprintf(js, sizeof(js), "{\"type\":\"RNVPCouplingBlock\",\"s1\":%s,\"t1\":%s,\"s2\":%s}", s23,
             s23, s32);
    expect_refused(ck, d, 0, js, ENG_ERR_MANIFEST, NEEDLES("t2"));
    /* NICE with a subnet that is not an object */
    snprintf(js, sizeof(js), "{\"type\":\"NICECouplingBlock\",\"F\":3,\"G\":%s}", s2);
    expect_refused(ck, d, 0, js, ENG_ERR_MANIFEST, NEEDLES("F"));
    /* ConditionalAffineTransform without a condition */
    snprintf(js, sizeof(js), "{\"type\":\"ConditionalAffineTransform\",\"subnet\":%s}", sc);
    expect_refused(ck, d, 0, js, ENG_ERR_MANIFEST, NEEDLES("cond"));
    expect_refused(ck, d, 3, js, ENG_ERR_MANIFEST, NEEDLES("cond", "ConditionalAffineTransform"));
    /* one-sided with split 0 needs a condition */
    snprintf(js, sizeof(js),
             "{\"type\":\"AffineCouplingOneSided\",\"split\":0,\"subnet\":%s}", s1);
    expect_refused(ck, d, 0, js, ENG_ERR_MANIFEST, NEEDLES("split"));
    free(s1), free(s2), free(sb), free(sc), free(s23), free(s32);
    free(n1), free(n2), free(bad), free(c4), free(r23), free(r32);
    tu_ckpt_free(ck);
}
END_TEST

START_TEST(test_refuse_allinone)
{
    struct tu_ckpt *ck = tu_ckpt_new();
    int d = 4;
    struct rnet *n = rnet_new(2, 4, 1, 1), *nb = rnet_new(2, 3, 1, 2);
    char *sub = rnet_add(ck, n, "s"), *subbad = rnet_add(ck, nb, "sb");
    int64_t s1[2] = {1, d}, sh[2] = {d, d}, sv[1] = {d}, shv[2] = {2, d};
    float ones[4] = {1, 1, 1, 1}, zeros[4] = {0}, big[4] = {0, 100, 0, 0};
    tu_add_f32(ck, "gs", 2, s1, ones);
    tu_add_f32(ck, "big", 2, s1, big);
    tu_add_f32(ck, "go", 2, s1, zeros);
    tu_add_f32(ck, "go5", 1, (int64_t[]){5}, (float[]){0, 0, 0, 0, 0});
    int64_t pbad[4] = {0, 1, 1, 3}, pok[4] = {3, 2, 1, 0};
    tu_add(ck, "pbad", "I64", 1, sv, pbad);
    tu_add(ck, "pok", "I64", 1, sv, pok);
    float notorth[16] = {1, 0, 0, 0, 0, 2, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1};
    float eye[16] = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1};
    float swap[16] = {0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1};
    float vz[8] = {0.1f, 0.2f, 0, 0, 0, 0, 0, 0};
    tu_add_f32(ck, "notorth", 2, sh, notorth);
    tu_add_f32(ck, "eye", 2, sh, eye);
    tu_add_f32(ck, "swap", 2, sh, swap);
    tu_add_f32(ck, "vz", 2, shv, vz);
    tu_add_f32(ck, "v1d", 1, sv, vz);
    char js[8192];
#define AIO(extra, perm)                                                                     \
    snprintf(js, sizeof(js),                                                                 \
             "{\"type\":\"AllInOneBlock\",\"global_scale\":\"gs\",\"global_offset\":\"go\","  \
             "\"permutation\":%s,\"subnet\":%s%s}", perm, sub, extra)
    const char *hard = "{\"type\":\"hard\",\"perm\":\"pok\"}";

    /* sanity: the base manifest loads */
    AIO("", hard);
    char *man = tu_manifest_one_block(d, 0, js);
    eng_model_unref(tu_load(ck, man, ENG_LOAD_NO_SELFTEST));
    free(man);

    AIO(",\"global_affine_type\":\"RELU\"", hard);
    expect_refused(ck, d, 0, js, ENG_ERR_MANIFEST, NEEDLES("global_affine_type", "RELU"));
    AIO(",\"clamp_formula\":\"new\"", hard);
    expect_refused(ck, d, 0, js, ENG_ERR_MANIFEST, NEEDLES("clamp_formula"));
    AIO(",\"affine_clamping\":0", hard);
    expect_refused(ck, d, 0, js, ENG_ERR_MANIFEST, NEEDLES("affine_clamping"));
    AIO(",\"gin_block\":1", hard);
    expect_refused(ck, d, 0, js, ENG_ERR_MANIFEST, NEEDLES("gin_block"));
    /* EXP of 100 overflows: the scale is refused, naming the tensor field */
    snprintf(js, sizeof(js),
             "{\"type\":\"AllInOneBlock\",\"global_affine_type\":\"EXP\",\"global_scale\":\"big\","
             "\"global_offset\":\"go\",\"permutation\":%s,\"subnet\":%s}", hard, sub);
    expect_refused(ck, d, 0, js, ENG_ERR_TENSOR, NEEDLES("global_scale", "entry 1"));
    /* ... but SOFTPLUS of 100 is 10 (threshold branch) and loads */
    snprintf(js, sizeof(js),
             "{\"type\":\"AllInOneBlock\",\"global_scale\":\"big\","
             "\"global_offset\":\"go\",\"permutation\":%s,\"subnet\":%s}", hard, sub);
    man = tu_manifest_one_block(d, 0, js);
    eng_model_unref(tu_load(ck, man, ENG_LOAD_NO_SELFTEST));
    free(man);
    /* wrong global_offset size */
    snprintf(js, sizeof(js),
             "{\"type\":\"AllInOneBlock\",\"global_scale\":\"gs\",\"global_offset\":\"go5\","
             "\"permutation\":%s,\"subnet\":%s}", hard, sub);
    expect_refused(ck, d, 0, js, ENG_ERR_TENSOR, NEEDLES("global_offset", "go5"));
    /* permutations */
    AIO("", "{\"type\":\"hard\",\"perm\":\"pbad\"}");
    expect_refused(ck, d, 0, js, ENG_ERR_TENSOR, NEEDLES("permutation", "pbad"));
    AIO("", "{\"type\":\"wild\",\"perm\":\"pok\"}");
    expect_refused(ck, d, 0, js, ENG_ERR_MANIFEST, NEEDLES("permutation", "type", "wild"));
    AIO("", "{\"type\":\"soft\",\"w\":\"notorth\",\"w_inv\":\"notorth\"}");
    expect_refused(ck, d, 0, js, ENG_ERR_TENSOR, NEEDLES("permutation", "w", "orthogonal"));
    AIO("", "{\"type\":\"soft\",\"w\":\"swap\",\"w_inv\":\"eye\"}");
    expect_refused(ck, d, 0, js, ENG_ERR_TENSOR, NEEDLES("permutation", "w_inv"));
    AIO("", "{\"type\":\"soft\",\"w\":\"swap\"}");
    expect_refused(ck, d, 0, js, ENG_ERR_MANIFEST, NEEDLES("permutation", "w_inv"));
    AIO("", "{\"type\":\"householder\",\"w0\":\"eye\",\"v\":\"vz\"}");
    expect_refused(ck, d, 0, js, ENG_ERR_TENSOR, NEEDLES("permutation", "v", "vector 1"));
    AIO("", "{\"type\":\"householder\",\"w0\":\"eye\",\"v\":\"v1d\"}");
    expect_refused(ck, d, 0, js, ENG_ERR_TENSOR, NEEDLES("permutation", "v1d"));
    AIO("", "{\"type\":\"householder\",\"w0\":\"notorth\",\"v\":\"vz\"}");
    expect_refused(ck, d, 0, js, ENG_ERR_TENSOR, NEEDLES("w0", "orthogonal"));
    /* no permutation at all */
    snprintf(js, sizeof(js),
             "{\"type\":\"AllInOneBlock\",\"global_scale\":\"gs\",\"global_offset\":\"go\","
             "\"subnet\":%s}", sub);
    expect_refused(ck, d, 0, js, ENG_ERR_MANIFEST, NEEDLES("permutation"));
    /* subnet of the wrong output width (needs 2 * 2 = 4) */
    snprintf(js, sizeof(js),
             "{\"type\":\"AllInOneBlock\",\"global_scale\":\"gs\",\"global_offset\":\"go\","
             "\"permutation\":%s,\"subnet\":%s}", hard, subbad);
    expect_refused(ck, d, 0, js, ENG_ERR_TENSOR, NEEDLES("subnet", "3", "4"));
#undef AIO
    free(sub), free(subbad);
    free(n), free(nb);
    tu_ckpt_free(ck);
}
END_TEST

START_TEST(test_refuse_spline)
{
    struct tu_ckpt *ck = tu_ckpt_new();
    int d = 4, K = 10, P = 3 * K + 1;
    struct rnet *a = rnet_new(2, 2 * P, 1, 1), *b = rnet_new(2, 2 * P, 1, 2);
    char *s1 = rnet_add(ck, a, "a"), *s2 = rnet_add(ck, b, "b");
    char js[8192];
#define SPL(extra)                                                                            \
    snprintf(js, sizeof(js),                                                                  \
             "{\"type\":\"RationalQuadraticSpline\",\"subnet1\":%s,\"subnet2\":%s%s}", s1, s2, \
             extra)
    SPL("");
    char *man = tu_manifest_one_block(d, 0, js);
    eng_model_unref(tu_load(ck, man, ENG_LOAD_NO_SELFTEST));
    free(man);

    SPL(",\"bins\":0");
    expect_refused(ck, d, 0, js, ENG_ERR_MANIFEST, NEEDLES("bins"));
    SPL(",\"bins\":5");  /* subnets sized for 10 bins */
    expect_refused(ck, d, 0, js, ENG_ERR_TENSOR, NEEDLES("subnet1"));
    SPL(",\"tails\":\"identity\"");  /* P = 30, not 31 */
    expect_refused(ck, d, 0, js, ENG_ERR_TENSOR, NEEDLES("subnet1"));
    SPL(",\"tails\":\"linear\"");
    expect_refused(ck, d, 0, js, ENG_ERR_MANIFEST, NEEDLES("tails", "linear"));
    SPL(",\"default_domain\":[-3,3,-3]");
    expect_refused(ck, d, 0, js, ENG_ERR_MANIFEST, NEEDLES("default_domain"));
    SPL(",\"default_domain\":[3,-3,-3,3]");
    expect_refused(ck, d, 0, js, ENG_ERR_MANIFEST, NEEDLES("default_domain"));
    SPL(",\"default_domain\":[-3,3,\"a\",3]");
    expect_refused(ck, d, 0, js, ENG_ERR_MANIFEST, NEEDLES("default_domain[2]"));
    SPL(",\"min_bin_sizes\":[0.7,0.1]");
    expect_refused(ck, d, 0, js, ENG_ERR_MANIFEST, NEEDLES("min_bin_sizes"));
    SPL(",\"min_bin_sizes\":[-0.1,0.1]");
    expect_refused(ck, d, 0, js, ENG_ERR_MANIFEST, NEEDLES("min_bin_sizes"));
    SPL(",\"domain_clamping\":-1");
    expect_refused(ck, d, 0, js, ENG_ERR_MANIFEST, NEEDLES("domain_clamping"));
    SPL(",\"domain_clamping\":\"x\"");
    expect_refused(ck, d, 0, js, ENG_ERR_MANIFEST, NEEDLES("domain_clamping"));
    SPL(",\"split\":4");
    expect_refused(ck, d, 0, js, ENG_ERR_MANIFEST, NEEDLES("split"));
    /* min sizes exactly filling the domain are accepted (FrEIA asserts >=) */
    SPL(",\"min_bin_sizes\":[0.6,0.6]");
    man = tu_manifest_one_block(d, 0, js);
    struct eng_model *m = tu_load(ck, man, ENG_LOAD_NO_SELFTEST);
    tu_check_roundtrip(m, 20, 2.0f, 1e-4);
    eng_model_unref(m);
    free(man);
#undef SPL
    free(s1), free(s2), free(a), free(b);
    tu_ckpt_free(ck);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("blocks_coupling");
    TCase *tc = tcase_create("variants");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_variant, 0, N_VCASES * 6);
    suite_add_tcase(s, tc);
    TCase *sp = tcase_create("special");
    tcase_set_timeout(sp, 60);
    tcase_add_test(sp, test_default_split);
    tcase_add_test(sp, test_many_rows_and_broadcast);
    tcase_add_test(sp, test_allinone_global_affine);
    tcase_add_test(sp, test_allinone_onehot_equals_vector);
    tcase_add_test(sp, test_spline_identity_and_shift);
    tcase_add_test(sp, test_spline_bin_edges);
    suite_add_tcase(s, sp);
    TCase *rf = tcase_create("refusals");
    tcase_set_timeout(rf, 60);
    tcase_add_test(rf, test_refuse_coupling);
    tcase_add_test(rf, test_refuse_allinone);
    tcase_add_test(rf, test_refuse_spline);
    suite_add_tcase(s, rf);
    return s;
}

TU_MAIN
