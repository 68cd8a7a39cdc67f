/*
 * test_blocks_conv.c — convolutional subnets (engine/subnet.c, engine/conv.c) and the
 * coupling family on (C, H, W) and (C, L) rows (coupling.c, allinone.c, spline.c).
 *
 * 1. GLOW and GIN couplings with convolutional subnets of every kind of layer (stride,
 *    padding as ints / pairs / 'same' with an even kernel / circular, dilation, groups,
 *    bias or none, 1x1, transposed convolutions with output_padding, conv1d, flatten ->
 *    linear -> unflatten) against an independent double-precision reference written here
 *    (direct convolution sums; transposed convolutions by scattering), unconditional and
 *    with an image condition and a broadcast vector condition, at odd channel counts.
 * 2. Every coupling block on images: round trip and forward log-det against a
 *    finite-difference Jacobian, conditional and not.
 * 3. Bit-identical results on every kernel path this CPU has, and for the golden conv
 *    fixtures also for any split of the rows into calls (which changes the rows a
 *    convolutional subnet runs together).
 * 4. Load-time refusals, each naming the tensor or field at fault.
 * 5. The certified spectral norm of convolutions (conv_norm2_upper) against the explicit
 *    matrix's singular values, and the DFT bound against the power-iteration witness.
 */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "../../engine/conv.h"
#include "../../engine/kern.h"
#include "../../engine/la.h"

/* ---- a reference network ----------------------------------------------------------------- */

enum rk { R_CONV, R_CONVT, R_TANH, R_RELU, R_FLAT_LIN, R_CONV1 };

struct rl {
    enum rk kind;
    int cout, k0, k1, s0, s1, d0, d1, g;
    int pt, pb, pl, pr, op0, op1;
    bool circ, nobias;
    const char *padjson; /* NULL: [pt, pl] */
    /* filled by rnet_build */
    int cin, ih, iw, oh, ow;
    float *w, *b;
};

struct rnet {
    int n;
    struct rl l[8];
    float ws;   /* weight scale times 1/sqrt(fan in) (0: 0.7) */
};

static float *rnd(int n, float scale, uint64_t seed)
{
    float *v = malloc(sizeof(float) * (size_t)(n ? n : 1));
    ck_assert_ptr_nonnull(v);
    tu_randn(v, n, scale, seed);
    return v;
}

/* Shapes, weights and tensors of net (input cin x ih x iw); returns the subnet JSON. */
static char *rnet_build(struct tu_ckpt *c, struct rnet *r, const char *prefix, int cin, int ih,
                        int iw, bool one_d, uint64_t seed)
{
    char *js = malloc(8192);
    ck_assert_ptr_nonnull(js);
    size_t k = (size_t)snprintf(js, 8192, "{\"layers\":[");
    int C = cin, H = ih, W = iw;
    for (int i = 0; i < r->n; i++) {
        struct rl *l = &r->l[i];
        l->cin = C, l->ih = H, l->iw = W;
        char wn[64], bn[64];
        snprintf(wn, sizeof(wn), "%s.%d.weight", prefix, i);
        snprintf(bn, sizeof(bn), "%s.%d.bias", prefix, i);
        if (i)
            k += (size_t)snprintf(js + k, 8192 - k, ",");
        if (l->kind == R_TANH || l->kind == R_RELU) {
            k += (size_t)snprintf(js + k, 8192 - k, "{\"type\":\"%s\"}",
                                  l->kind == R_TANH ? "tanh" : "relu");
            l->oh = H, l->ow = W;
            continue;
        }
        if (l->kind == R_FLAT_LIN) { /* flatten, linear (C*H*W -> cout*H*W), unflatten */
            int in = C * H * W, out = l->cout * H * W;
            l->w = rnd(out * in, 0.6f / sqrtf((float)in), seed * 31 + (uint64_t)i);
            l->b = rnd(out, 0.1f, seed * 37 + (uint64_t)i);
            int64_t ws[2] = {out, in}, bs[1] = {out};
            tu_add_f32(c, wn, 2, ws, l->w);
            tu_add_f32(c, bn, 1, bs, l->b);
            k += (size_t)snprintf(js + k, 8192 - k,
                                  "{\"type\":\"flatten\"},{\"type\":\"linear\",\"weight\":\"%s\","
                                  "\"bias\":\"%s\"},{\"type\":\"unflatten\",\"shape\":[%d,%d,%d]}",
                                  wn, bn, l->cout, H, W);
            if (one_d)
                k -= (size_t)snprintf(NULL, 0, "%d,%d]}", H, W),
                k += (size_t)snprintf(js + k, 8192 - k, "%d]}", W);
            l->oh = H, l->ow = W;
            C = l->cout;
            continue;
        }
        bool t = l->kind == R_CONVT;
        int cin_g = C / l->g, cout_g = l->cout / l->g;
        int nw = t ? C * cout_g * l->k0 * l->k1 : l->cout * cin_g * l->k0 * l->k1;
        int fan = cin_g * l->k0 * l->k1;
        l->w = rnd(nw, (r->ws > 0 ? r->ws : 0.7f) / sqrtf((float)fan), seed * 41 + (uint64_t)i);
        l->b = l->nobias ? NULL : rnd(l->cout, 0.1f, seed * 43 + (uint64_t)i);
        if (one_d) {
            int64_t ws[3] = {t ? C : l->cout, t ? cout_g : cin_g, l->k1};
            tu_add_f32(c, wn, 3, ws, l->w);
        } else {
            int64_t ws[4] = {t ? C : l->cout, t ? cout_g : cin_g, l->k0, l->k1};
            tu_add_f32(c, wn, 4, ws, l->w);
        }
        if (l->b) {
            int64_t bs[1] = {l->cout};
            tu_add_f32(c, bn, 1, bs, l->b);
        }
        char pad[64];
        if (l->padjson)
            snprintf(pad, sizeof(pad), "%s", l->padjson);
        else if (one_d)
            snprintf(pad, sizeof(pad), "%d", l->pl);
        else
            snprintf(pad, sizeof(pad), "[%d,%d]", l->pt, l->pl);
        char geo[256];
        if (one_d)
            snprintf(geo, sizeof(geo), "\"stride\":%d,\"padding\":%s,\"dilation\":[%d]", l->s1,
                     pad, l->d1);
        else if (l->d0 != l->d1)
            snprintf(geo, sizeof(geo), "\"stride\":[%d,%d],\"padding\":%s,\"dilation\":[%d,%d]",
                     l->s0, l->s1, pad, l->d0, l->d1);
        else
            snprintf(geo, sizeof(geo), "\"stride\":[%d,%d],\"padding\":%s,\"dilation\":%d",
                     l->s0, l->s1, pad, l->d0);
        char bias[96] = "";
        if (l->b)
            snprintf(bias, sizeof(bias), ",\"bias\":\"%s\"", bn);
        char opad[64] = "";
        if (t)
            snprintf(opad, sizeof(opad), ",\"output_padding\":[%d,%d]", l->op0, l->op1);
        k += (size_t)snprintf(js + k, 8192 - k,
                              "{\"type\":\"%s\",\"weight\":\"%s\"%s,%s,\"groups\":%d%s%s}",
                              t ? "conv_transpose2d" : (one_d ? "conv1d" : "conv2d"), wn, bias,
                              geo, l->g, opad,
                              l->circ ? ",\"padding_mode\":\"circular\"" : "");
        if (t) {
            l->oh = (H - 1) * l->s0 - 2 * l->pt + l->d0 * (l->k0 - 1) + l->op0 + 1;
            l->ow = (W - 1) * l->s1 - 2 * l->pl + l->d1 * (l->k1 - 1) + l->op1 + 1;
        } else {
            l->oh = (H + l->pt + l->pb - l->d0 * (l->k0 - 1) - 1) / l->s0 + 1;
            l->ow = (W + l->pl + l->pr - l->d1 * (l->k1 - 1) - 1) / l->s1 + 1;
        }
        C = l->cout, H = l->oh, W = l->ow;
    }
    snprintf(js + k, 8192 - k, "]}");
    return js;
}

static void rnet_free(struct rnet *r)
{
    for (int i = 0; i < r->n; i++) {
        free(r->l[i].w);
        free(r->l[i].b);
        r->l[i].w = r->l[i].b = NULL;
    }
}

static int md(int i, int n) { return ((i % n) + n) % n; }

/* out = net(in) in double; buffers of at most 4096 values. */
static void rnet_eval(const struct rnet *r, const double *in, double *out)
{
    double a[4096], b[4096];
    const double *cur = in;
    int C = r->l[0].cin, H = r->l[0].ih, W = r->l[0].iw;
    for (int i = 0; i < r->n; i++) {
        const struct rl *l = &r->l[i];
        double *dst = (cur == a) ? b : a;
        int n = C * H * W;
        if (l->kind == R_TANH || l->kind == R_RELU) {
            for (int j = 0; j < n; j++)
                dst[j] = l->kind == R_TANH ? tanh(cur[j]) : (cur[j] > 0 ? cur[j] : 0.0);
        } else if (l->kind == R_FLAT_LIN) {
            int on = l->cout * H * W;
            for (int o = 0; o < on; o++) {
                double s = l->b[o];
                for (int j = 0; j < n; j++)
                    s += (double)l->w[(size_t)o * n + j] * cur[j];
                dst[o] = s;
            }
            C = l->cout;
        } else if (l->kind == R_CONV || l->kind == R_CONV1) {
            int cin_g = C / l->g, cout_g = l->cout / l->g;
            for (int co = 0; co < l->cout; co++)
                for (int y = 0; y < l->oh; y++)
                    for (int x = 0; x < l->ow; x++) {
                        double s = l->b ? l->b[co] : 0.0;
                        int gr = co / cout_g;
                        for (int cl = 0; cl < cin_g; cl++)
                            for (int p = 0; p < l->k0; p++)
                                for (int q = 0; q < l->k1; q++) {
                                    int hh = y * l->s0 - l->pt + p * l->d0;
                                    int ww = x * l->s1 - l->pl + q * l->d1;
                                    if (l->circ)
                                        hh = md(hh, H), ww = md(ww, W);
                                    if (hh < 0 || hh >= H || ww < 0 || ww >= W)
                                        continue;
                                    s += (double)l->w[((co * cin_g + cl) * l->k0 + p) * l->k1 + q] *
                                         cur[((gr * cin_g + cl) * H + hh) * W + ww];
                                }
                        dst[(co * l->oh + y) * l->ow + x] = s;
                    }
            C = l->cout, H = l->oh, W = l->ow;
        } else { /* transposed: scatter every input through every tap */
            int cin_g = C / l->g, cout_g = l->cout / l->g;
            int on = l->cout * l->oh * l->ow;
            for (int o = 0; o < on; o++)
                dst[o] = l->b ? l->b[o / (l->oh * l->ow)] : 0.0;
            for (int ci = 0; ci < C; ci++)
                for (int y = 0; y < H; y++)
                    for (int x = 0; x < W; x++)
                        for (int cl = 0; cl < cout_g; cl++)
                            for (int p = 0; p < l->k0; p++)
                                for (int q = 0; q < l->k1; q++) {
                                    int oy = y * l->s0 - l->pt + p * l->d0;
                                    int ox = x * l->s1 - l->pl + q * l->d1;
                                    if (oy < 0 || oy >= l->oh || ox < 0 || ox >= l->ow)
                                        continue;
                                    int co = (ci / cin_g) * cout_g + cl;
                                    dst[(co * l->oh + oy) * l->ow + ox] +=
                                        (double)l->w[((ci * cout_g + cl) * l->k0 + p) * l->k1 + q] *
                                        cur[(ci * H + y) * W + x];
                                }
            C = l->cout, H = l->oh, W = l->ow;
        }
        cur = dst;
    }
    memcpy(out, cur, sizeof(double) * (size_t)(C * H * W));
}

/* ---- GLOW / GIN on images against the reference ------------------------------------------- */

enum cond_kind { C_NONE, C_IMAGE, C_VECTOR };

struct glow_case {
    const char *name;
    int C, H, W;          /* H = 1 with one_d */
    bool one_d, gin;
    enum cond_kind cond;
    int cc;               /* condition channels (image) or vector width */
    struct rnet n1, n2;   /* layer templates: cin filled in; the last layer's cout is set */
};

static int freia_split(int C)
{
    int k = C / 2;
    if (C % 2 == 0)
        return k;
    return k % 2 == 0 ? k : k + 1;
}

/* s = clamp * 0.636 atan(raw) (FrEIA's default ATAN clamp, clamp 2) */
static double sclamp(double u) { return 2.0 * 0.636 * atan(u); }

/* GLOW/GIN forward on one row (flat x, condition image cimg of cc*HW or NULL). */
static double glow_ref(const struct glow_case *gc, const double *x, const double *cimg,
                       double *z)
{
    int HW = gc->H * gc->W, C = gc->C;
    int c1 = freia_split(C);
    int c2 = C - c1, cc = gc->cond == C_NONE ? 0 : gc->cc;
    double u[4096], a[4096], ld = 0.0;
    memcpy(z, x, sizeof(double) * (size_t)C * HW);
    /* y1 = x1 * e^s2 + t2, (s2, t2) = subnet2([x2, c]) */
    for (int pass = 0; pass < 2; pass++) {
        int ca = pass == 0 ? c1 : c2, cp = pass == 0 ? c2 : c1;
        double *act = pass == 0 ? z : z + (size_t)c1 * HW;
        const double *pas = pass == 0 ? z + (size_t)c1 * HW : z;
        memcpy(u, pas, sizeof(double) * (size_t)cp * HW);
        if (cc)
            memcpy(u + (size_t)cp * HW, cimg, sizeof(double) * (size_t)cc * HW);
        rnet_eval(pass == 0 ? &gc->n2 : &gc->n1, u, a);
        for (int j = 0; j < ca * HW; j++)
            a[j] = sclamp(a[j]);
        if (gc->gin)
            for (int q = 0; q < HW; q++) {
                double m = 0.0;
                for (int ch = 0; ch < ca; ch++)
                    m += a[ch * HW + q];
                m /= ca;
                for (int ch = 0; ch < ca; ch++)
                    a[ch * HW + q] -= m;
            }
        for (int j = 0; j < ca * HW; j++) {
            act[j] = act[j] * exp(a[j]) + a[ca * HW + j];
            ld += a[j];
        }
    }
    return gc->gin ? 0.0 : ld;
}

static void run_glow_case(struct glow_case *gc)
{
    int C = gc->C, H = gc->H, W = gc->W, HW = H * W, D = C * HW;
    int c1 = freia_split(C), c2 = C - c1;
    int cc_img = gc->cond == C_NONE ? 0 : gc->cc;
    struct tu_ckpt *ck = tu_ckpt_new();
    gc->n1.l[gc->n1.n - 1].cout = 2 * c2;
    gc->n2.l[gc->n2.n - 1].cout = 2 * c1;
    char *j1 = rnet_build(ck, &gc->n1, "m.subnet1", c1 + cc_img, H, W, gc->one_d, 5);
    char *j2 = rnet_build(ck, &gc->n2, "m.subnet2", c2 + cc_img, H, W, gc->one_d, 9);
    char shape[64], cond[160] = "", dims[64];
    if (gc->one_d)
        snprintf(shape, sizeof(shape), "[%d,%d]", C, W);
    else
        snprintf(shape, sizeof(shape), "[%d,%d,%d]", C, H, W);
    int dy = gc->cond == C_IMAGE ? gc->cc * HW : gc->cc;
    if (gc->cond == C_IMAGE && gc->one_d)
        snprintf(cond, sizeof(cond), ",\"conditions\":[{\"net\":null,\"shape\":[%d,%d]}]",
                 gc->cc, W);
    else if (gc->cond == C_IMAGE)
        snprintf(cond, sizeof(cond), ",\"conditions\":[{\"net\":null,\"shape\":[%d,%d,%d]}]",
                 gc->cc, H, W);
    if (gc->cond == C_VECTOR) {
        if (gc->one_d)
            snprintf(cond, sizeof(cond), ",\"conditions\":[{\"net\":null,\"broadcast\":[%d]}]", W);
        else
            snprintf(cond, sizeof(cond), ",\"conditions\":[{\"net\":null,\"broadcast\":[%d,%d]}]",
                     H, W);
    }
    if (gc->cond == C_NONE)
        snprintf(dims, sizeof(dims), "{\"x\":%d}", D);
    else
        snprintf(dims, sizeof(dims), "{\"x\":%d,\"y\":%d}", D, dy);
    size_t cap = strlen(j1) + strlen(j2) + 1024;
    char *man = malloc(cap);
    snprintf(man, cap,
             "{\"format\":\"innserve-manifest\",\"version\":1,\"kind\":\"%s\",\"dims\":%s,"
             "\"shape\":{\"x\":%s}%s,\"blocks\":[{\"type\":\"%s\",\"split\":%d%s,"
             "\"subnet1\":%s,\"subnet2\":%s}]}",
             gc->cond == C_NONE ? "flow" : "cinn", dims, shape, cond,
             gc->gin ? "GINCouplingBlock" : "GLOWCouplingBlock", c1 * HW,
             gc->cond == C_NONE ? "" : ",\"cond\":0", j1, j2);
    struct eng_model *m = tu_load(ck, man, ENG_LOAD_NO_SELFTEST);
    const int n = 3;
    float *x = rnd(n * D, 1.0f, 77), *y = rnd(n * (dy ? dy : 1), 1.0f, 78);
    float *z = malloc(sizeof(float) * (size_t)n * D);
    double ld[3];
    struct eng_ws *ws = eng_ws_new();
    char err[ENG_ERR_LEN];
    enum eng_status st = eng_forward(m, ws, n, x, dy ? y : NULL, dy ? n : 0, z, NULL, ld, err);
    ck_assert_msg(st == ENG_OK, "%s: forward: %s", gc->name, err);
    for (int r = 0; r < n; r++) {
        double xd[4096], cimg[4096], zr[4096];
        for (int j = 0; j < D; j++)
            xd[j] = x[r * D + j];
        if (gc->cond == C_IMAGE)
            for (int j = 0; j < dy; j++)
                cimg[j] = y[r * dy + j];
        if (gc->cond == C_VECTOR)
            for (int ch = 0; ch < gc->cc; ch++)
                for (int q = 0; q < HW; q++)
                    cimg[ch * HW + q] = y[r * dy + ch];
        double lr = glow_ref(gc, xd, gc->cond == C_NONE ? NULL : cimg, zr);
        double worst = 0.0;
        for (int j = 0; j < D; j++)
            worst = fmax(worst, fabs(zr[j] - z[r * D + j]) / (1.0 + fabs(zr[j])));
        ck_assert_msg(worst < 2e-5, "%s: row %d: z differs from the reference by %g", gc->name,
                      r, worst);
        ck_assert_msg(fabs(lr - ld[r]) < 1e-4 * (1.0 + fabs(lr)),
                      "%s: row %d: log-det %.9g, reference %.9g", gc->name, r, ld[r], lr);
    }
    tu_check_roundtrip(m, 5, 1.0f, 1e-4);
    eng_ws_free(ws);
    eng_model_unref(m);
    free(x), free(y), free(z), free(man), free(j1), free(j2);
    rnet_free(&gc->n1);
    rnet_free(&gc->n2);
    tu_ckpt_free(ck);
}

#define CONV(co, k0_, k1_, s, p, dl, gr) \
    {.kind = R_CONV, .cout = co, .k0 = k0_, .k1 = k1_, .s0 = s, .s1 = s, .d0 = dl, .d1 = dl, \
     .g = gr, .pt = p, .pb = p, .pl = p, .pr = p}
#define TANH {.kind = R_TANH}
#define RELU {.kind = R_RELU}

START_TEST(test_glow_reference)
{
    /* 3x3 pad 1 -> relu -> 1x1 */
    struct glow_case a = {.name = "3x3-relu-1x1", .C = 5, .H = 6, .W = 5,
                          .n1 = {3, {CONV(4, 3, 3, 1, 1, 1, 1), RELU, CONV(0, 1, 1, 1, 0, 1, 1)}},
                          .n2 = {3, {CONV(4, 3, 3, 1, 1, 1, 1), RELU, CONV(0, 1, 1, 1, 0, 1, 1)}}};
    run_glow_case(&a);
    /* stride 2 down, transposed stride 2 up with output_padding (1, 0), no bias */
    struct rl down = CONV(4, 3, 3, 2, 1, 1, 1);
    struct rl up = {.kind = R_CONVT, .cout = 0, .k0 = 3, .k1 = 3, .s0 = 2, .s1 = 2, .d0 = 1,
                    .d1 = 1, .g = 1, .pt = 1, .pb = 1, .pl = 1, .pr = 1, .op0 = 1, .op1 = 0};
    struct rl down_nb = down;
    down_nb.nobias = true;
    struct glow_case b = {.name = "stride2-transposed", .C = 5, .H = 6, .W = 5,
                          .n1 = {3, {down_nb, TANH, up}}, .n2 = {3, {down, TANH, up}}};
    run_glow_case(&b);
    /* groups 2 with dilation 2; asymmetric stride and dilation pairs */
    struct rl gd = CONV(4, 3, 3, 1, 2, 2, 2);
    struct rl pair = {.kind = R_CONV, .cout = 0, .k0 = 3, .k1 = 2, .s0 = 1, .s1 = 1, .d0 = 1,
                      .d1 = 2, .g = 1, .pt = 1, .pb = 1, .pl = 1, .pr = 1};
    struct glow_case c = {.name = "groups-dilation", .C = 5, .H = 6, .W = 5,
                          .n1 = {5, {CONV(4, 3, 3, 1, 1, 1, 1), TANH, gd, TANH, pair}},
                          .n2 = {5, {CONV(4, 3, 3, 1, 1, 1, 1), TANH, gd, TANH, pair}}};
    run_glow_case(&c);
    /* 'same' with an even kernel (torch pads one less on the top/left), circular padding,
     * and a transposed convolution with groups */
    struct rl same = {.kind = R_CONV, .cout = 4, .k0 = 4, .k1 = 2, .s0 = 1, .s1 = 1, .d0 = 1,
                      .d1 = 1, .g = 1, .pt = 1, .pb = 2, .pl = 0, .pr = 1,
                      .padjson = "\"same\""};
    struct rl circ = CONV(4, 3, 3, 1, 1, 1, 1);
    circ.circ = true;
    struct rl tg = {.kind = R_CONVT, .cout = 4, .k0 = 3, .k1 = 3, .s0 = 1, .s1 = 1, .d0 = 1,
                    .d1 = 1, .g = 2, .pt = 1, .pb = 1, .pl = 1, .pr = 1};
    struct glow_case d = {.name = "same-circular", .C = 5, .H = 6, .W = 5,
                          .n1 = {6, {same, TANH, circ, tg, TANH, CONV(0, 1, 1, 1, 0, 1, 1)}},
                          .n2 = {6, {same, TANH, circ, tg, TANH, CONV(0, 1, 1, 1, 0, 1, 1)}}};
    run_glow_case(&d);
    /* flatten -> linear -> unflatten, then a convolution */
    struct rl fl = {.kind = R_FLAT_LIN, .cout = 3};
    struct glow_case e = {.name = "flatten-linear", .C = 3, .H = 3, .W = 4,
                          .n1 = {3, {fl, TANH, CONV(0, 3, 3, 1, 1, 1, 1)}},
                          .n2 = {3, {fl, TANH, CONV(0, 3, 3, 1, 1, 1, 1)}}};
    run_glow_case(&e);
}
END_TEST

START_TEST(test_glow_reference_cond)
{
    /* image condition (2 channels), GLOW */
    struct glow_case a = {.name = "image-cond", .C = 3, .H = 4, .W = 5, .cond = C_IMAGE,
                          .cc = 2,
                          .n1 = {3, {CONV(4, 3, 3, 1, 1, 1, 1), TANH, CONV(0, 3, 3, 1, 1, 1, 1)}},
                          .n2 = {3, {CONV(4, 3, 3, 1, 1, 1, 1), TANH, CONV(0, 3, 3, 1, 1, 1, 1)}}};
    run_glow_case(&a);
    /* broadcast vector condition (3 values), GIN (per-position centring) */
    struct glow_case b = {.name = "vector-cond-gin", .C = 5, .H = 4, .W = 3, .cond = C_VECTOR,
                          .cc = 3, .gin = true,
                          .n1 = {3, {CONV(4, 3, 3, 1, 1, 1, 1), TANH, CONV(0, 1, 1, 1, 0, 1, 1)}},
                          .n2 = {3, {CONV(4, 3, 3, 1, 1, 1, 1), TANH, CONV(0, 1, 1, 1, 0, 1, 1)}}};
    run_glow_case(&b);
    /* (C, L) rows with conv1d, a broadcast condition, stride and dilation */
    struct rl c1a = {.kind = R_CONV1, .cout = 4, .k0 = 1, .k1 = 3, .s0 = 1, .s1 = 1, .d0 = 1,
                     .d1 = 2, .g = 1, .pl = 2, .pr = 2};
    struct rl c1b = {.kind = R_CONV1, .cout = 0, .k0 = 1, .k1 = 3, .s0 = 1, .s1 = 1, .d0 = 1,
                     .d1 = 1, .g = 1, .pl = 1, .pr = 1};
    struct glow_case c = {.name = "conv1d", .C = 3, .H = 1, .W = 9, .one_d = true,
                          .cond = C_VECTOR, .cc = 2,
                          .n1 = {3, {c1a, RELU, c1b}}, .n2 = {3, {c1a, RELU, c1b}}};
    run_glow_case(&c);
    /* GIN unconditional, odd channels */
    struct glow_case d = {.name = "gin", .C = 7, .H = 3, .W = 3, .gin = true,
                          .n1 = {3, {CONV(5, 3, 3, 1, 1, 1, 1), TANH, CONV(0, 3, 3, 1, 1, 1, 1)}},
                          .n2 = {3, {CONV(5, 3, 3, 1, 1, 1, 1), TANH, CONV(0, 3, 3, 1, 1, 1, 1)}}};
    run_glow_case(&d);
}
END_TEST

/* ---- every coupling block on images: round trip and finite-difference log-det ------------- */

/* A subnet conv3x3(cin -> 6) - tanh - conv3x3(6 -> cout) added under prefix. */
static char *csub(struct tu_ckpt *c, const char *prefix, int cin, int cout, bool one_d,
                  uint64_t seed, float scale)
{
    char w0[80], b0[80], w1[80], b1[80];
    snprintf(w0, sizeof(w0), "%s.0.weight", prefix);
    snprintf(b0, sizeof(b0), "%s.0.bias", prefix);
    snprintf(w1, sizeof(w1), "%s.2.weight", prefix);
    snprintf(b1, sizeof(b1), "%s.2.bias", prefix);
    if (one_d) {
        int64_t s0[3] = {6, cin, 3}, s1[3] = {cout, 6, 3};
        tu_add_randn(c, w0, 3, s0, scale / sqrtf(3.0f * cin), 0.0f, seed);
        tu_add_randn(c, w1, 3, s1, scale / sqrtf(18.0f), 0.0f, seed + 1);
    } else {
        int64_t s0[4] = {6, cin, 3, 3}, s1[4] = {cout, 6, 3, 3};
        tu_add_randn(c, w0, 4, s0, scale / sqrtf(9.0f * cin), 0.0f, seed);
        tu_add_randn(c, w1, 4, s1, scale / sqrtf(54.0f), 0.0f, seed + 1);
    }
    int64_t sb0[1] = {6}, sb1[1] = {cout};
    tu_add_randn(c, b0, 1, sb0, 0.1f, 0.0f, seed + 2);
    tu_add_randn(c, b1, 1, sb1, 0.1f, 0.0f, seed + 3);
    const char *ty = one_d ? "conv1d" : "conv2d";
    char *js = malloc(1024);
    snprintf(js, 1024,
             "{\"layers\":[{\"type\":\"%s\",\"weight\":\"%s\",\"bias\":\"%s\",\"padding\":1},"
             "{\"type\":\"tanh\"},{\"type\":\"%s\",\"weight\":\"%s\",\"bias\":\"%s\","
             "\"padding\":1}]}",
             ty, w0, b0, ty, w1, b1);
    return js;
}

struct blk_case {
    const char *type;
    int nsub;               /* subnets: names and (in, out) channel counts below */
    const char *names[4];
    int in[4], out[4];      /* in: -1 = c1, -2 = c2, 0 = none; out: multiples of c1 / c2 */
};

static void run_block_on_image(const char *type, int C, int H, int W, bool one_d, int cond)
{
    int HW = H * W, D = C * HW;
    struct tu_ckpt *ck = tu_ckpt_new();
    int c1 = freia_split(C), c2 = C - c1, cc = cond;
    int K = 4, P = 3 * K + 1;
    char block[16384];
    char *s[4] = {NULL, NULL, NULL, NULL};
    size_t k = 0;
    const char *mtype = strcmp(type, "AllInOneBlock-soft") ? type : "AllInOneBlock";
    k += (size_t)snprintf(block + k, sizeof(block) - k, "{\"type\":\"%s\"%s", mtype,
                          cond ? ",\"cond\":0" : "");
    if (!strcmp(type, "NICECouplingBlock")) {
        s[0] = csub(ck, "F", c2 + cc, c1, one_d, 11, 0.8f);
        s[1] = csub(ck, "G", c1 + cc, c2, one_d, 15, 0.8f);
        k += (size_t)snprintf(block + k, sizeof(block) - k, ",\"F\":%s,\"G\":%s", s[0], s[1]);
    } else if (!strcmp(type, "RNVPCouplingBlock")) {
        s[0] = csub(ck, "s1", c1 + cc, c2, one_d, 11, 0.5f);
        s[1] = csub(ck, "t1", c1 + cc, c2, one_d, 15, 0.5f);
        s[2] = csub(ck, "s2", c2 + cc, c1, one_d, 19, 0.5f);
        s[3] = csub(ck, "t2", c2 + cc, c1, one_d, 23, 0.5f);
        k += (size_t)snprintf(block + k, sizeof(block) - k,
                              ",\"s1\":%s,\"t1\":%s,\"s2\":%s,\"t2\":%s", s[0], s[1], s[2], s[3]);
    } else if (!strcmp(type, "AffineCouplingOneSided")) {
        s[0] = csub(ck, "sub", c1 + cc, 2 * c2, one_d, 11, 0.5f);
        k += (size_t)snprintf(block + k, sizeof(block) - k, ",\"subnet\":%s", s[0]);
    } else if (!strcmp(type, "ConditionalAffineTransform")) {
        s[0] = csub(ck, "sub", cc, 2 * C, one_d, 11, 0.5f);
        k += (size_t)snprintf(block + k, sizeof(block) - k, ",\"subnet\":%s", s[0]);
    } else if (!strcmp(type, "RationalQuadraticSpline")) {
        s[0] = csub(ck, "sub1", c2 + cc, c1 * P, one_d, 11, 0.5f);
        s[1] = csub(ck, "sub2", c1 + cc, c2 * P, one_d, 15, 0.5f);
        k += (size_t)snprintf(block + k, sizeof(block) - k, ",\"bins\":%d,\"subnet1\":%s,"
                              "\"subnet2\":%s", K, s[0], s[1]);
    } else if (!strcmp(type, "AllInOneBlock")) {
        int n1 = C - C / 2, n2 = C / 2;
        s[0] = csub(ck, "sub", n1 + cc, 2 * n2, one_d, 11, 1.0f);
        int64_t gs[4] = {1, C, 1, 1};
        tu_add_randn(ck, "gs", one_d ? 3 : 4, gs, 0.3f, 1.0f, 31);
        tu_add_randn(ck, "go", one_d ? 3 : 4, gs, 0.3f, 0.0f, 32);
        tu_add_perm(ck, "perm", C, 33);
        k += (size_t)snprintf(block + k, sizeof(block) - k,
                              ",\"global_affine_type\":\"EXP\",\"global_scale\":\"gs\","
                              "\"global_offset\":\"go\",\"reverse_permutation\":true,"
                              "\"permutation\":{\"type\":\"hard\",\"perm\":\"perm\"},"
                              "\"subnet\":%s", s[0]);
    } else if (!strcmp(type, "AllInOneBlock-soft")) {
        int n1 = C - C / 2, n2 = C / 2;
        s[0] = csub(ck, "sub", n1 + cc, 2 * n2, one_d, 11, 1.0f);
        int64_t gs[4] = {1, C, 1, 1};
        tu_add_randn(ck, "gs", one_d ? 3 : 4, gs, 0.3f, 1.0f, 31);
        tu_add_randn(ck, "go", one_d ? 3 : 4, gs, 0.3f, 0.0f, 32);
        /* a rotation: Givens in the (0, 1) and (1, 2) planes */
        float w[64] = {0}, wi[64];
        for (int i = 0; i < C; i++)
            w[i * C + i] = 1.0f;
        double th = 0.7;
        float cth = (float)cos(th), sth = (float)sin(th);
        w[0] = cth, w[1] = -sth, w[C] = sth, w[C + 1] = cth;
        for (int i = 0; i < C; i++)
            for (int j = 0; j < C; j++)
                wi[i * C + j] = w[j * C + i];
        int64_t ws[2] = {C, C};
        tu_add_f32(ck, "w", 2, ws, w);
        tu_add_f32(ck, "wi", 2, ws, wi);
        k += (size_t)snprintf(block + k, sizeof(block) - k,
                              ",\"global_affine_type\":\"SOFTPLUS\",\"global_scale\":\"gs\","
                              "\"global_offset\":\"go\",\"permutation\":{\"type\":\"soft\","
                              "\"w\":\"w\",\"w_inv\":\"wi\"},\"subnet\":%s", s[0]);
    } else { /* GLOW, GIN */
        s[0] = csub(ck, "sub1", c1 + cc, 2 * c2, one_d, 11, 0.5f);
        s[1] = csub(ck, "sub2", c2 + cc, 2 * c1, one_d, 15, 0.5f);
        k = strlen(block);
        k += (size_t)snprintf(block + k, sizeof(block) - k, ",\"subnet1\":%s,\"subnet2\":%s",
                              s[0], s[1]);
    }
    k = strlen(block);
    snprintf(block + k, sizeof(block) - k, "}");
    char shape[48], cnd[128] = "", dims[64];
    if (one_d)
        snprintf(shape, sizeof(shape), "[%d,%d]", C, W);
    else
        snprintf(shape, sizeof(shape), "[%d,%d,%d]", C, H, W);
    if (cond) {
        if (one_d)
            snprintf(cnd, sizeof(cnd), ",\"conditions\":[{\"net\":null,\"broadcast\":[%d]}]", W);
        else
            snprintf(cnd, sizeof(cnd), ",\"conditions\":[{\"net\":null,\"broadcast\":[%d,%d]}]",
                     H, W);
        snprintf(dims, sizeof(dims), "{\"x\":%d,\"y\":%d}", D, cc);
    } else {
        snprintf(dims, sizeof(dims), "{\"x\":%d}", D);
    }
    size_t cap = strlen(block) + 512;
    char *man = malloc(cap);
    snprintf(man, cap,
             "{\"format\":\"innserve-manifest\",\"version\":1,\"kind\":\"%s\",\"dims\":%s,"
             "\"shape\":{\"x\":%s}%s,\"blocks\":[%s]}",
             cond ? "cinn" : "flow", dims, shape, cnd, block);
    struct eng_model *m = tu_load(ck, man, ENG_LOAD_NO_SELFTEST);
    tu_check_roundtrip(m, 7, 1.0f, 1e-4);
    bool spline = strstr(type, "Spline") != NULL;
    tu_check_logdet_fd(m, 2, 1.0f, spline ? 4e-3 : 5e-3, spline ? 3e-2 : 1e-2);
    eng_model_unref(m);
    for (int i = 0; i < 4; i++)
        free(s[i]);
    free(man);
    tu_ckpt_free(ck);
}

static const char *const all_types[] = {
    "GLOWCouplingBlock", "GINCouplingBlock", "RNVPCouplingBlock", "NICECouplingBlock",
    "AffineCouplingOneSided", "RationalQuadraticSpline", "AllInOneBlock", "AllInOneBlock-soft"};

START_TEST(test_blocks_roundtrip_fd)
{
    const char *t = all_types[_i];
    run_block_on_image(t, 5, 4, 3, false, 0);
    run_block_on_image(t, 5, 4, 3, false, 2);
    run_block_on_image(t, 3, 1, 7, true, 0);
    run_block_on_image(t, 3, 1, 7, true, 2);
}
END_TEST

START_TEST(test_condaffine)
{
    run_block_on_image("ConditionalAffineTransform", 5, 4, 3, false, 2);
    run_block_on_image("ConditionalAffineTransform", 3, 1, 7, true, 3);
}
END_TEST

/* ---- kernel paths --------------------------------------------------------------------------- */

START_TEST(test_kernel_paths_bits)
{
    const char *const *paths = kern_available();
    int C = 5, H = 6, W = 5, D = C * H * W, n = 9;
    float *ref = NULL;
    double ldref[9];
    float *x = rnd(n * D, 1.0f, 5), *y = rnd(n * 2, 1.0f, 6);
    for (int p = 0; paths[p]; p++) {
        setenv("INNSERVE_KERNELS", paths[p], 1);
        struct tu_ckpt *ck = tu_ckpt_new();
        char *s1 = csub(ck, "a", 2 + 2, 6, false, 3, 0.7f);
        char *s2 = csub(ck, "b", 3 + 2, 4, false, 4, 0.7f);
        char man[8192];
        snprintf(man, sizeof(man),
                 "{\"format\":\"innserve-manifest\",\"version\":1,\"kind\":\"cinn\","
                 "\"dims\":{\"x\":%d,\"y\":2},\"shape\":{\"x\":[%d,%d,%d]},"
                 "\"conditions\":[{\"net\":null,\"broadcast\":[%d,%d]}],\"blocks\":["
                 "{\"type\":\"GLOWCouplingBlock\",\"cond\":0,\"subnet1\":%s,\"subnet2\":%s}]}",
                 D, C, H, W, H, W, s1, s2);
        struct eng_model *m = tu_load(ck, man, ENG_LOAD_NO_SELFTEST);
        ck_assert_str_eq(eng_model_info(m)->kernels, paths[p]);
        float *z = malloc(sizeof(float) * (size_t)n * D);
        double ld[9];
        struct eng_ws *ws = eng_ws_new();
        char err[ENG_ERR_LEN];
        ck_assert_int_eq(eng_forward(m, ws, n, x, y, n, z, NULL, ld, err), ENG_OK);
        if (!ref) {
            ref = z;
            memcpy(ldref, ld, sizeof(ld));
        } else {
            ck_assert_msg(memcmp(ref, z, sizeof(float) * (size_t)n * D) == 0,
                          "kernel path %s gives other bits than %s", paths[p], paths[0]);
            ck_assert(memcmp(ldref, ld, sizeof(ld)) == 0);
            free(z);
        }
        /* one broadcast observation gives the bits of the same row repeated */
        float *zb = malloc(sizeof(float) * (size_t)n * D), *yr = malloc(sizeof(float) * 2 * n);
        for (int r = 0; r < n; r++)
            yr[2 * r] = y[0], yr[2 * r + 1] = y[1];
        float *z1 = malloc(sizeof(float) * (size_t)n * D);
        ck_assert_int_eq(eng_forward(m, ws, n, x, y, 1, zb, NULL, ld, err), ENG_OK);
        ck_assert_int_eq(eng_forward(m, ws, n, x, yr, n, z1, NULL, ld, err), ENG_OK);
        ck_assert(memcmp(zb, z1, sizeof(float) * (size_t)n * D) == 0);
        free(zb), free(z1), free(yr);
        eng_ws_free(ws);
        eng_model_unref(m);
        free(s1), free(s2);
        tu_ckpt_free(ck);
    }
    unsetenv("INNSERVE_KERNELS");
    free(ref), free(x), free(y);
}
END_TEST

/* ---- refusals ------------------------------------------------------------------------------- */

static void expect_fail(const char *layers1, const char *extra_block, const char *cond,
                        const char *want)
{
    struct tu_ckpt *ck = tu_ckpt_new();
    int64_t w33[4] = {6, 2, 3, 3}, wbad[4] = {6, 3, 3, 3}, w4[4] = {4, 3, 3, 3};
    int64_t wlin[2] = {4, 36};
    tu_add_randn(ck, "w33", 4, w33, 0.1f, 0.0f, 1);
    tu_add_randn(ck, "wbad", 4, wbad, 0.1f, 0.0f, 2);
    tu_add_randn(ck, "w4", 4, w4, 0.1f, 0.0f, 3);
    tu_add_randn(ck, "wlin", 2, wlin, 0.1f, 0.0f, 4);
    char man[4096];
    snprintf(man, sizeof(man),
             "{\"format\":\"innserve-manifest\",\"version\":1,\"kind\":\"%s\","
             "\"dims\":{\"x\":60%s},\"shape\":{\"x\":[5,4,3]}%s,\"blocks\":["
             "{\"type\":\"GLOWCouplingBlock\"%s%s,\"subnet1\":{\"layers\":[%s]},"
             "\"subnet2\":{\"layers\":[{\"type\":\"conv2d\",\"weight\":\"w4\",\"padding\":1}]}}]}",
             cond ? "cinn" : "flow", cond ? ",\"y\":3" : "", cond ? cond : "",
             cond ? ",\"cond\":0" : "", extra_block, layers1);
    char err[ENG_ERR_LEN];
    enum eng_status st = tu_load_fail(ck, man, ENG_LOAD_NO_SELFTEST, err);
    ck_assert_int_ne(st, ENG_OK);
    ck_assert_msg(strstr(err, want) != NULL, "expected '%s' in: %s", want, err);
    tu_ckpt_free(ck);
}

START_TEST(test_refusals)
{
    /* subnet1 maps c1 = 2 channels to 2*c2 = 6 */
    expect_fail("{\"type\":\"conv2d\",\"weight\":\"wbad\",\"padding\":1}", "", NULL, "wbad");
    expect_fail("{\"type\":\"conv2d\",\"weight\":\"wbad\",\"padding\":1}", "", NULL,
                "expected (*, 2, 3, 3)");
    expect_fail("{\"type\":\"conv2d\",\"weight\":\"w33\"}", "", NULL,
                "subnet output is (6, 2, 1) (tensor 'w33'), the block needs (6, 4, 3)");
    expect_fail("{\"type\":\"conv2d\",\"weight\":\"w33\",\"padding\":1,"
                "\"padding_mode\":\"reflect\"}", "", NULL, "padding_mode: 'reflect'");
    expect_fail("{\"type\":\"conv2d\",\"weight\":\"w33\",\"padding\":\"same\",\"stride\":2}",
                "", NULL, "'same' needs stride 1");
    expect_fail("{\"type\":\"conv1d\",\"weight\":\"w33\"}", "", NULL, "conv1d needs a (C, L) input");
    expect_fail("{\"type\":\"linear\",\"weight\":\"wlin\"}", "", NULL, "add a 'flatten' layer");
    expect_fail("{\"type\":\"conv2d\",\"weight\":\"w33\",\"padding\":1}", ",\"split\":13", NULL,
                "split: 13 is not a whole number of channels");
    expect_fail("{\"type\":\"conv2d\",\"weight\":\"w33\",\"padding\":1}", "",
                ",\"conditions\":[{\"net\":null}]", "cond: the condition is a vector of 3");
    expect_fail("{\"type\":\"conv2d\",\"weight\":\"w33\",\"padding\":1,\"groups\":4}", "", NULL,
                "groups: 4 does not divide the 2 input channels");
    expect_fail("{\"type\":\"conv2d\",\"weight\":\"w33\",\"dilation\":3}", "", NULL,
                "the output would be empty");
}
END_TEST

/* ---- spectral norms ------------------------------------------------------------------------- */

static double explicit_norm(const struct conv_geom *g, const float *w)
{
    int nin = g->cin * g->ih * g->iw, nout = g->cout * g->oh * g->ow;
    double *wd = malloc(sizeof(double) * (size_t)g->cout * g->kg);
    double *M = malloc(sizeof(double) * (size_t)nin * nout), *e = calloc((size_t)nin, 8);
    double *col = malloc(sizeof(double) * (size_t)nout);
    double *sv = malloc(sizeof(double) * (size_t)(nin < nout ? nin : nout));
    double *work = malloc(sizeof(double) * (size_t)nin * nout);
    for (int i = 0; i < g->cout * g->kg; i++)
        wd[i] = w[i];
    for (int j = 0; j < nin; j++) {
        e[j] = 1.0;
        conv_apply_f64(g, wd, e, col);
        e[j] = 0.0;
        for (int i = 0; i < nout; i++)
            M[(size_t)i * nin + j] = col[i];
    }
    ck_assert_int_ge(la_singular_values(nout, nin, M, sv, work), 0);
    double s = sv[0];
    free(wd), free(M), free(e), free(col), free(sv), free(work);
    return s;
}

/* conv_dense_f64 (filled by index) is, bit for bit, the matrix whose column j is
 * conv_apply_f64 of the j-th unit vector and whose row o is conv_adjoint_f64 of the o-th:
 * zero padding with strides, dilations, asymmetric padding and groups (apply's range path),
 * transposed and circular convolutions (its index path; a 2-pixel circular grid under a
 * 3x3 kernel makes several taps land on one entry), and input channels restricted to cx. */
START_TEST(test_dense_matrix_bits)
{
    struct conv_geom gs[] = {
        {.cin = 4, .cout = 6, .groups = 1, .ih = 4, .iw = 4, .kh = 3, .kw = 3, .sh = 1, .sw = 1,
         .dh = 1, .dw = 1, .pt = 1, .pb = 1, .pl = 1, .pr = 1},
        {.cin = 4, .cout = 6, .groups = 2, .ih = 7, .iw = 6, .kh = 3, .kw = 2, .sh = 2, .sw = 1,
         .dh = 2, .dw = 1, .pt = 2, .pb = 0, .pl = 1, .pr = 2},
        {.cin = 3, .cout = 2, .groups = 1, .ih = 5, .iw = 9, .kh = 2, .kw = 4, .sh = 3, .sw = 2,
         .dh = 1, .dw = 3, .pt = 0, .pb = 1, .pl = 3, .pr = 0},
        {.cin = 4, .cout = 2, .groups = 2, .ih = 3, .iw = 4, .kh = 3, .kw = 3, .sh = 2, .sw = 2,
         .dh = 1, .dw = 1, .pt = 1, .pb = 1, .pl = 1, .pr = 1, .transposed = true},
        {.cin = 2, .cout = 3, .groups = 1, .ih = 2, .iw = 3, .kh = 3, .kw = 3, .sh = 1, .sw = 1,
         .dh = 1, .dw = 1, .pt = 1, .pb = 1, .pl = 1, .pr = 1, .circular = true},
    };
    for (size_t t = 0; t < sizeof gs / sizeof gs[0]; t++) {
        struct conv_geom g = gs[t];
        ck_assert(conv_geom_finish(&g, 0, 0));
        const int nw = g.cout * g.kg, HW = g.ih * g.iw;
        const int nin = g.cin * HW, nout = g.cout * g.oh * g.ow;
        for (int cx = g.cin; cx >= 1; cx -= g.cin - 1 > 0 ? g.cin - 1 : 1) {
            const int nx = cx * HW;
            float *w = rnd(nw, 0.5f, 40 + t);
            w[1] = 0.0f; /* a zero tap is skipped */
            double *wd = malloc(sizeof(double) * (size_t)nw);
            double *M = malloc(sizeof(double) * (size_t)nout * nx);
            double *e = calloc((size_t)(nin > nout ? nin : nout), sizeof(double));
            double *v = malloc(sizeof(double) * (size_t)(nin > nout ? nin : nout));
            ck_assert(wd && M && e && v);
            for (int i = 0; i < nw; i++)
                wd[i] = w[i];
            conv_dense_f64(&g, wd, cx, M);
            int nonzero = 0;
            for (int j = 0; j < nx; j++) {
                e[j] = 1.0;
                conv_apply_f64(&g, wd, e, v);
                e[j] = 0.0;
                for (int o = 0; o < nout; o++) {
                    ck_assert_msg(memcmp(&M[(size_t)o * nx + j], &v[o], sizeof(double)) == 0,
                                  "geometry %zu cx %d: entry (%d, %d) %.17g, A e_j %.17g", t, cx,
                                  o, j, M[(size_t)o * nx + j], v[o]);
                    nonzero += v[o] != 0.0;
                }
            }
            ck_assert_int_gt(nonzero, 0);
            for (int o = 0; o < nout; o++) {
                e[o] = 1.0;
                conv_adjoint_f64(&g, wd, e, v);
                e[o] = 0.0;
                for (int j = 0; j < nx; j++)
                    ck_assert_msg(memcmp(&M[(size_t)o * nx + j], &v[j], sizeof(double)) == 0,
                                  "geometry %zu cx %d: entry (%d, %d) %.17g, A^T e_o %.17g", t,
                                  cx, o, j, M[(size_t)o * nx + j], v[j]);
            }
            free(w), free(wd), free(M), free(e), free(v);
            if (cx == 1)
                break;
        }
    }
}
END_TEST

/* conv_norm2_upper's power-iteration witness, which runs its own channels-innermost copy
 * of the operator on plain zero-padded convolutions, is bit for bit the power iteration
 * written here with conv_apply_f64 / conv_adjoint_f64 (same start, steps and stopping). */
static double ref_power(const struct conv_geom *g, const float *w, int cx)
{
    const size_t nin = (size_t)g->cin * g->ih * g->iw, nout = (size_t)g->cout * g->oh * g->ow;
    const size_t nx = (size_t)cx * g->ih * g->iw;
    double *wd = malloc(sizeof(double) * (size_t)g->cout * g->kg);
    double *v = malloc(sizeof(double) * nin), *u = malloc(sizeof(double) * nout);
    for (int co = 0; co < g->cout; co++)
        for (int k = 0; k < g->kg; k++)
            wd[(size_t)co * g->kg + k] =
                k / (g->kh * g->kw) < cx ? (double)w[(size_t)co * g->kg + k] : 0.0;
    for (size_t i = 0; i < nin; i++)
        v[i] = i < nx ? 1.0 + 0.01 * (double)((i * 7919u) % 97u) : 0.0;
    double sig = 0.0;
    for (int it = 0; it < 300; it++) {
        double nv = 0.0, s = 0.0;
        for (size_t i = 0; i < nin; i++)
            nv += v[i] * v[i];
        nv = sqrt(nv);
        for (size_t i = 0; i < nin; i++)
            v[i] /= nv;
        conv_apply_f64(g, wd, v, u);
        for (size_t i = 0; i < nout; i++)
            s += u[i] * u[i];
        s = sqrt(s);
        conv_adjoint_f64(g, wd, u, v);
        for (size_t i = nx; i < nin; i++)
            v[i] = 0.0;
        if (it > 10 && fabs(s - sig) <= 1e-13 * s) {
            sig = s;
            break;
        }
        sig = s;
    }
    free(wd), free(v), free(u);
    return sig;
}

START_TEST(test_witness_bits)
{
    struct conv_geom gs[] = {
        {.cin = 6, .cout = 8, .groups = 1, .ih = 4, .iw = 4, .kh = 3, .kw = 3, .sh = 1, .sw = 1,
         .dh = 1, .dw = 1, .pt = 1, .pb = 1, .pl = 1, .pr = 1},
        {.cin = 3, .cout = 5, .groups = 1, .ih = 7, .iw = 6, .kh = 3, .kw = 2, .sh = 2, .sw = 1,
         .dh = 2, .dw = 1, .pt = 2, .pb = 0, .pl = 1, .pr = 2},
        {.cin = 20, .cout = 24, .groups = 1, .ih = 5, .iw = 5, .kh = 3, .kw = 3, .sh = 1,
         .sw = 1, .dh = 1, .dw = 1, .pt = 1, .pb = 1, .pl = 1, .pr = 1},
    };
    for (size_t t = 0; t < sizeof gs / sizeof gs[0]; t++) {
        struct conv_geom g = gs[t];
        ck_assert(conv_geom_finish(&g, 0, 0));
        float *w = rnd(g.cout * g.kg, 0.4f, 60 + t);
        w[2] = 0.0f;
        for (int cx = g.cin; cx >= 1; cx = cx == g.cin ? g.cin / 2 : 0) {
            double lo;
            const char *how;
            double ub = conv_norm2_upper(&g, w, cx, &lo, &how);
            double ref = ref_power(&g, w, cx);
            ck_assert_msg(memcmp(&lo, &ref, sizeof lo) == 0, "geometry %zu cx %d: %.17g vs %.17g",
                          t, cx, lo, ref);
            ck_assert_msg(lo > 0.0 && lo <= ub, "%.17g %.17g", lo, ub);
        }
        free(w);
    }
}
END_TEST

START_TEST(test_spectral_norm)
{
    /* small: the explicit-matrix path equals the exact singular value */
    struct conv_geom g = {.cin = 2, .cout = 3, .groups = 1, .ih = 5, .iw = 4, .kh = 3, .kw = 3,
                          .sh = 1, .sw = 1, .dh = 1, .dw = 1, .pt = 1, .pb = 1, .pl = 1, .pr = 1};
    ck_assert(conv_geom_finish(&g, 0, 0));
    float *w = rnd(g.cout * g.kg, 0.5f, 9);
    double lo;
    const char *how;
    double ub = conv_norm2_upper(&g, w, g.cin, &lo, &how);
    double ex = explicit_norm(&g, w);
    ck_assert_str_eq(how, "explicit matrix");
    ck_assert_msg(ub >= ex && ub <= ex * (1 + 1e-9), "bound %.17g, exact %.17g", ub, ex);
    ck_assert_msg(lo <= ex * (1 + 1e-12) && lo >= ex * (1 - 1e-6), "witness %.17g, exact %.17g",
                  lo, ex);
    free(w);

    /* circular padding, stride 1, 'same' size, above the dense limit: the 2-D DFT gives the
     * exact norm; the power-iteration witness is below it */
    struct conv_geom c = {.cin = 3, .cout = 4, .groups = 1, .ih = 12, .iw = 12, .kh = 3,
                          .kw = 3, .sh = 1, .sw = 1, .dh = 1, .dw = 1, .pt = 1, .pb = 1,
                          .pl = 1, .pr = 1, .circular = true};
    ck_assert(conv_geom_finish(&c, 0, 0));
    w = rnd(c.cout * c.kg, 0.5f, 10);
    ub = conv_norm2_upper(&c, w, c.cin, &lo, &how);
    ex = explicit_norm(&c, w);
    ck_assert_msg(strstr(how, "circular") != NULL, "%s", how);
    ck_assert_msg(ub >= ex && ub <= ex * (1 + 1e-9), "DFT %.17g, exact %.17g", ub, ex);
    ck_assert_msg(lo <= ex * (1 + 1e-12), "witness %.17g, exact %.17g", lo, ex);

    /* zero padding, same weights: the bound from the zero-extended grid is more than 1%
     * above the witness on this 12 x 12 grid, so the explicit matrix's Gram iteration
     * refines it to within CONV_REFINE_TOL of the witness, still above the exact norm */
    struct conv_geom z = c;
    z.circular = false;
    ub = conv_norm2_upper(&z, w, z.cin, &lo, &how);
    ex = explicit_norm(&z, w);
    ck_assert_msg(strstr(how, "Gram iteration") != NULL, "%s", how);
    ck_assert_msg(ub >= ex && lo <= ex * (1 + 1e-12) && ub <= lo * (1 + CONV_REFINE_TOL),
                  "bound %.17g, exact %.17g, witness %.17g", ub, ex, lo);
    /* the x channels only (a first layer with a condition) */
    double ub1 = conv_norm2_upper(&z, w, 1, &lo, &how);
    ck_assert(ub1 <= ub && ub1 > 0);
    free(w);

    /* a transposed convolution with stride 2 has the norm of its adjoint: the bound holds */
    struct conv_geom t = {.transposed = true, .cin = 2, .cout = 3, .groups = 1, .ih = 3,
                          .iw = 3, .kh = 3, .kw = 3, .sh = 2, .sw = 2, .dh = 1, .dw = 1,
                          .pt = 1, .pb = 1, .pl = 1, .pr = 1};
    ck_assert(conv_geom_finish(&t, 1, 1));
    ck_assert_int_eq(t.oh, 6);
    w = rnd(t.cout * t.kg, 0.5f, 12);
    ub = conv_norm2_upper(&t, w, t.cin, &lo, &how);
    ex = explicit_norm(&t, w);
    ck_assert_msg(ub >= ex && lo <= ex * (1 + 1e-12), "bound %g exact %g witness %g", ub, ex, lo);
    free(w);

    /* circular, fewer output than input channels (the complex Jacobi on K^H), with groups
     * and a dilation: still the exact norm */
    struct conv_geom h = {.cin = 6, .cout = 4, .groups = 2, .ih = 10, .iw = 12, .kh = 3,
                          .kw = 3, .sh = 1, .sw = 1, .dh = 2, .dw = 1, .pt = 2, .pb = 2,
                          .pl = 1, .pr = 1, .circular = true};
    ck_assert(conv_geom_finish(&h, 0, 0));
    w = rnd(h.cout * h.kg, 0.5f, 13);
    ub = conv_norm2_upper(&h, w, h.cin, &lo, &how);
    ex = explicit_norm(&h, w);
    ck_assert_msg(strstr(how, "circular") != NULL, "%s", how);
    ck_assert_msg(ub >= ex && ub <= ex * (1 + 1e-9), "DFT %.17g, exact %.17g", ub, ex);
    free(w);
}
END_TEST

/* ---- convolutional i-ResNet --------------------------------------------------------------- */

/* x + g(x) with g = conv3x3 (C -> hid) - tanh - conv3x3 (hid -> C), zero or circular padding,
 * an image condition of cc channels concatenated after x when cc > 0.  Checks the forward
 * against the double reference, the exact log-det against finite differences, the round
 * trip with converged certified solves, and the certificate's L against the product of the
 * convolutions' exact norms (their explicit matrices' singular values). */
static void run_iresnet(int C, int H, int W, int hid, int cc, bool circ, const char *method)
{
    int HW = H * W, D = C * HW;
    struct tu_ckpt *ck = tu_ckpt_new();
    struct rl a = CONV(hid, 3, 3, 1, 1, 1, 1), t = TANH, b2 = CONV(C, 3, 3, 1, 1, 1, 1);
    a.circ = b2.circ = circ;
    struct rnet net = {3, {a, t, b2}, 0.25f};
    char *js = rnet_build(ck, &net, "g", C + cc, H, W, false, 21);
    /* scale the weights down so that g is a contraction (stored values are what load) */
    char man[16384], cond[160] = "", dims[64];
    if (cc) {
        snprintf(cond, sizeof(cond), ",\"conditions\":[{\"net\":null,\"shape\":[%d,%d,%d]}]", cc,
                 H, W);
        snprintf(dims, sizeof(dims), "{\"x\":%d,\"y\":%d}", D, cc * HW);
    } else {
        snprintf(dims, sizeof(dims), "{\"x\":%d}", D);
    }
    snprintf(man, sizeof(man),
             "{\"format\":\"innserve-manifest\",\"version\":1,\"kind\":\"%s\",\"dims\":%s,"
             "\"shape\":{\"x\":[%d,%d,%d]}%s,\"blocks\":[{\"type\":\"IResNetBlock\"%s,"
             "\"subnet\":%s}]}",
             cc ? "cinn" : "flow", dims, C, H, W, cond, cc ? ",\"cond\":0" : "", js);
    struct eng_model *m = tu_load(ck, man, ENG_LOAD_NO_SELFTEST);
    const struct eng_certificate *cert = eng_model_certificate(m);
    /* the exact norms of the two convolutions (the first on its x channels only) */
    struct conv_geom g1 = {.cin = C + cc, .cout = hid, .groups = 1, .ih = H, .iw = W, .kh = 3,
                           .kw = 3, .sh = 1, .sw = 1, .dh = 1, .dw = 1, .pt = 1, .pb = 1,
                           .pl = 1, .pr = 1, .circular = circ};
    struct conv_geom g2 = g1;
    g2.cin = hid, g2.cout = C;
    ck_assert(conv_geom_finish(&g1, 0, 0) && conv_geom_finish(&g2, 0, 0));
    float *w1x = malloc(sizeof(float) * (size_t)hid * g1.kg);
    for (int o = 0; o < hid; o++)
        for (int k = 0; k < g1.kg; k++)
            w1x[o * g1.kg + k] = k / 9 < C ? net.l[0].w[o * g1.kg + k] : 0.0f;
    double n1 = explicit_norm(&g1, w1x), n2 = explicit_norm(&g2, net.l[2].w);
    double L = cert->blocks[0].lipschitz;
    ck_assert_msg(L >= n1 * n2 && L <= 1.3 * n1 * n2, "certificate L %.17g, exact norms %.17g",
                  L, n1 * n2);
    ck_assert_msg(L < 1.0 && cert->blocks[0].invertible && cert->certified, "L = %g", L);
    ck_assert_msg(strstr(cert->blocks[0].reason, method) != NULL, "%s", cert->blocks[0].reason);

    /* forward against the double reference */
    const int n = 3;
    int dy = cc * HW;
    float *x = rnd(n * D, 1.0f, 31), *y = rnd(n * (dy ? dy : 1), 1.0f, 32);
    float *z = malloc(sizeof(float) * (size_t)n * D);
    double ld[3];
    struct eng_ws *ws = eng_ws_new();
    char err[ENG_ERR_LEN];
    ck_assert_int_eq(eng_forward(m, ws, n, x, dy ? y : NULL, dy ? n : 0, z, NULL, ld, err), ENG_OK);
    for (int r = 0; r < n; r++) {
        double u[4096], gx[4096];
        for (int j = 0; j < D; j++)
            u[j] = x[r * D + j];
        for (int j = 0; j < dy; j++)
            u[D + j] = y[r * dy + j];
        rnet_eval(&net, u, gx);
        for (int j = 0; j < D; j++)
            ck_assert_msg(fabs(z[r * D + j] - (u[j] + gx[j])) < 1e-5 * (1 + fabs(u[j])),
                          "row %d z[%d] %.9g, reference %.9g", r, j, z[r * D + j], u[j] + gx[j]);
    }
    /* inverse: converged, certified, back to x */
    float *xb = malloc(sizeof(float) * (size_t)n * D);
    double lb[3], eb[3], res[3];
    int it[3];
    bool conv[3];
    struct eng_solver_stats stats = {.iterations = it, .residual = res, .error_bound = eb,
                                     .converged = conv};
    ck_assert_int_eq(eng_inverse(m, ws, n, z, dy ? y : NULL, dy ? n : 0, xb, lb, NULL, &stats,
                                 err), ENG_OK);
    for (int r = 0; r < n; r++) {
        ck_assert(conv[r] && isfinite(eb[r]) && eb[r] < 1e-4);
        ck_assert(fabs(lb[r] + ld[r]) < 1e-6 * (1 + fabs(ld[r])));
        for (int j = 0; j < D; j++)
            ck_assert(fabs(xb[r * D + j] - x[r * D + j]) < 1e-5 * (1 + fabs(x[r * D + j])));
    }
    if (D <= 64) /* the exact log-det is an LU of the D x D Jacobian per evaluation */
        tu_check_logdet_fd(m, 1, 1.0f, 1e-3, 2e-3);
    eng_ws_free(ws);
    eng_model_unref(m);
    free(x), free(y), free(z), free(xb), free(w1x), free(js);
    rnet_free(&net);
    tu_ckpt_free(ck);
}

START_TEST(test_iresnet_conv)
{
    run_iresnet(2, 4, 4, 4, 0, false, "explicit matrix");        /* small: dense SVD */
    run_iresnet(2, 4, 3, 4, 1, false, "explicit matrix");        /* image condition */
    run_iresnet(4, 10, 10, 4, 0, false, "Gram iteration");       /* 400: DFT bound, refined */
    run_iresnet(4, 10, 10, 4, 0, true, "circular padding");      /* exact DFT norm */
}
END_TEST

/* The golden conv fixtures (real FrEIA) sample and score with the same bytes on every
 * kernel path, for any split of the draws and with y broadcast or per row. */
START_TEST(test_fixture_paths_and_splits)
{
    static const char *const names[] = {"conv_glow_c5", "conv_glow_vector_cond_updown",
                                        "conv_allinone_hard_vector_cond",
                                        "conv1d_glow_vector_cond", "conv_spline",
                                        "conv_onesided_same_dilation", "conv_flatten_linear"};
    tu_check_fixture_paths_and_splits(names, (int)(sizeof(names) / sizeof(names[0])));
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("blocks_conv");
    TCase *tc = tcase_create("conv");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_glow_reference);
    tcase_add_test(tc, test_glow_reference_cond);
    tcase_add_loop_test(tc, test_blocks_roundtrip_fd, 0, (int)(sizeof(all_types) / sizeof(all_types[0])));
    tcase_add_test(tc, test_condaffine);
    tcase_add_test(tc, test_kernel_paths_bits);
    tcase_add_test(tc, test_refusals);
    tcase_add_test(tc, test_dense_matrix_bits);
    tcase_add_test(tc, test_witness_bits);
    tcase_add_test(tc, test_spectral_norm);
    tcase_add_test(tc, test_iresnet_conv);
    tcase_add_test(tc, test_fixture_paths_and_splits);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN
