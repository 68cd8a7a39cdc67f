/*
 * test_mogmade.c — the made mixture of the mdn kind (engine/mogmade.c, sbi's `made`
 * estimator: a MixtureOfGaussiansMADE behind sbi's leading zero input).  A MADE built here
 * in C with known weights and the nflows masks: log_prob against a float64 reference
 * computed in this file (one pass, log-sum-exp per dimension); every sample against the
 * reference's sequential draw given the same Philox uniforms and normals (so the sampling
 * semantics, component choice and reproducibility are checked at once); split ranges,
 * eng_sample_rows and y broadcast give the same bits; the prior box (-inf outside,
 * rejection); a wrong mask refused naming its tensor; the refused operations and
 * non-finite y.  And parity with the real sbi: tests/fixtures/sbi/sbi_made (exported from
 * a trained posterior_nn("made") by gen_sbi.py): log_prob against sbi's within 1e-5
 * relative, and the moments of the engine's samples (prior rejection) against draws from
 * the same density made with the real MADE's forward.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#define DX 3
#define FE (DX + 1)
#define DY 2
#define C 4
#define K 2
#define H 6
#define NB 2
#define OUT (FE * 3 * K)
#define EPS 1e-2

struct net {
    float we[C * DY], be[C];                 /* embedding: tanh(We ys + be) */
    float w0[H * FE], m0[H * FE], b0[H], wc[H * C], bc[H];
    float w1[NB][H * H], m1[H * H], b1[NB][H], w2[NB][H * H], b2[NB][H];
    float wcb[NB][H * C], bcb[NB][H];
    float wf[OUT * H], mf[OUT * H], bf[OUT];
    float xm[DX], xs[DX], ym[DY], ys[DY];
};

static int hid_deg(int o) { return o % (FE - 1) + 1; }

static void make_net(struct net *n)
{
    tu_randn(n->we, C * DY, 0.8f, 1);
    tu_randn(n->be, C, 0.2f, 2);
    tu_randn(n->w0, H * FE, 0.7f, 3);
    tu_randn(n->b0, H, 0.2f, 4);
    tu_randn(n->wc, H * C, 0.5f, 5);
    tu_randn(n->bc, H, 0.2f, 6);
    for (int b = 0; b < NB; b++) {
        tu_randn(n->w1[b], H * H, 0.5f, 10 + b);
        tu_randn(n->b1[b], H, 0.2f, 20 + b);
        tu_randn(n->w2[b], H * H, 0.5f, 30 + b);
        tu_randn(n->b2[b], H, 0.2f, 40 + b);
        tu_randn(n->wcb[b], H * C, 0.5f, 50 + b);
        tu_randn(n->bcb[b], H, 0.2f, 60 + b);
    }
    tu_randn(n->wf, OUT * H, 0.6f, 7);
    tu_randn(n->bf, OUT, 0.5f, 8);
    for (int o = 0; o < H; o++)
        for (int i = 0; i < FE; i++)
            n->m0[o * FE + i] = hid_deg(o) >= i + 1;
    for (int o = 0; o < H; o++)
        for (int i = 0; i < H; i++)
            n->m1[o * H + i] = hid_deg(o) >= hid_deg(i);
    for (int o = 0; o < OUT; o++)
        for (int i = 0; i < H; i++)
            n->mf[o * H + i] = o / (3 * K) + 1 > hid_deg(i);
    tu_mix_std_init(n->xm, n->xs, n->ym, n->ys);
}

/* The tensors; bad_mask: one element of blocks.1.linear1.mask flipped. */
static void add_tensors(struct tu_ckpt *c, const struct net *n, bool bad_mask)
{
    tu_add_mat(c, "emb.weight", C, DY, n->we);
    tu_add_mat(c, "emb.bias", C, 0, n->be);
    tu_add_mat(c, "initial.weight", H, FE, n->w0);
    tu_add_mat(c, "initial.mask", H, FE, n->m0);
    tu_add_mat(c, "initial.bias", H, 0, n->b0);
    tu_add_mat(c, "context.weight", H, C, n->wc);
    tu_add_mat(c, "context.bias", H, 0, n->bc);
    char nm[64];
    for (int b = 0; b < NB; b++) {
        snprintf(nm, sizeof nm, "blocks.%d.linear0.weight", b), tu_add_mat(c, nm, H, H, n->w1[b]);
        snprintf(nm, sizeof nm, "blocks.%d.linear0.mask", b), tu_add_mat(c, nm, H, H, n->m1);
        snprintf(nm, sizeof nm, "blocks.%d.linear0.bias", b), tu_add_mat(c, nm, H, 0, n->b1[b]);
        snprintf(nm, sizeof nm, "blocks.%d.linear1.weight", b), tu_add_mat(c, nm, H, H, n->w2[b]);
        float m1[H * H];
        memcpy(m1, n->m1, sizeof m1);
        if (bad_mask && b == 1)
            m1[0 * H + 1] = 1.0f; /* unit 0 (degree 1) reading unit 1 (degree 2) */
        snprintf(nm, sizeof nm, "blocks.%d.linear1.mask", b), tu_add_mat(c, nm, H, H, m1);
        snprintf(nm, sizeof nm, "blocks.%d.linear1.bias", b), tu_add_mat(c, nm, H, 0, n->b2[b]);
        snprintf(nm, sizeof nm, "blocks.%d.context.weight", b), tu_add_mat(c, nm, H, C, n->wcb[b]);
        snprintf(nm, sizeof nm, "blocks.%d.context.bias", b), tu_add_mat(c, nm, H, 0, n->bcb[b]);
    }
    tu_add_mat(c, "final.weight", OUT, H, n->wf);
    tu_add_mat(c, "final.mask", OUT, H, n->mf);
    tu_add_mat(c, "final.bias", OUT, 0, n->bf);
    tu_mix_std_add(c, n->xm, n->xs, n->ym, n->ys);
}

#define LIN(p) "{\"weight\":\"" p ".weight\",\"mask\":\"" p ".mask\",\"bias\":\"" p ".bias\"}"
#define CTX(p) "{\"weight\":\"" p ".weight\",\"bias\":\"" p ".bias\"}"
#define BLOCK(i) "{\"linear0\":" LIN("blocks." #i ".linear0") ",\"linear1\":" \
    LIN("blocks." #i ".linear1") ",\"context\":" CTX("blocks." #i ".context") "}"

static char *manifest(const char *extra)
{
    size_t cap = 8192;
    char *m = malloc(cap);
    snprintf(m, cap,
             TU_MIX_MANIFEST_HEAD
             "\"mixture\":{\"type\":\"made\",\"components\":2,\"epsilon\":0.01,"
             "\"activation\":\"relu\",\"hidden\":6,"
             "\"net\":{\"layers\":[{\"type\":\"linear\",\"weight\":\"emb.weight\",\"bias\":"
             "\"emb.bias\"},{\"type\":\"tanh\"}]},"
             "\"initial\":" LIN("initial") ",\"context\":" CTX("context") ","
             "\"blocks\":[" BLOCK(0) "," BLOCK(1) "],\"final\":" LIN("final") "}%s%s}",
             *extra ? "," : "", extra);
    return m;
}

/* The test network in n, the model loaded from it (the manifest members `extra`) and a
 * workspace: what most tests start from. */
static struct tu_fix fix_open(struct net *n, const char *extra)
{
    make_net(n);
    struct tu_ckpt *c = tu_ckpt_new();
    add_tensors(c, n, false);
    return tu_fix_load(c, manifest(extra));
}

/* ---- the float64 reference ---------------------------------------------------------- */

static const float Y0[DY] = {0.4f, -0.9f};

static void lin(int out, int in, const float *w, const float *mask, const float *b,
                const double *x, double *y)
{
    for (int o = 0; o < out; o++) {
        double s = b ? b[o] : 0.0;
        for (int i = 0; i < in; i++)
            s += (double)w[o * in + i] * (mask ? mask[o * in + i] : 1.0f) * x[i];
        y[o] = s;
    }
}

static void ref_context(const struct net *n, const float *y, double *c)
{
    double ys[DY];
    for (int j = 0; j < DY; j++)
        ys[j] = ((double)y[j] - n->ym[j]) / n->ys[j];
    lin(C, DY, n->we, NULL, n->be, ys, c);
    for (int j = 0; j < C; j++)
        c[j] = tanh(c[j]);
}

/* The MADE's F * 3K outputs at inputs u (F) and context c. */
static void ref_forward(const struct net *n, const double *u, const double *c, double *out)
{
    double t[H], a[H], v[H], w[H];
    lin(H, FE, n->w0, n->m0, n->b0, u, t);
    lin(H, C, n->wc, NULL, n->bc, c, a);
    for (int o = 0; o < H; o++)
        t[o] += a[o];
    for (int b = 0; b < NB; b++) {
        for (int o = 0; o < H; o++)
            a[o] = fmax(t[o], 0.0);
        lin(H, H, n->w1[b], n->m1, n->b1[b], a, v);
        lin(H, C, n->wcb[b], NULL, n->bcb[b], c, w);
        for (int o = 0; o < H; o++)
            v[o] = fmax(v[o] + w[o], 0.0);
        lin(H, H, n->w2[b], n->m1, n->b2[b], v, w);
        for (int o = 0; o < H; o++)
            t[o] += w[o];
    }
    lin(OUT, H, n->wf, n->mf, n->bf, t, out);
}

/* Feature f's log weights, means, stds. */
static void ref_feature(const double *out, int f, double *lw, double *mu, double *sd)
{
    const double *o = out + f * 3 * K;
    double mx = -INFINITY, s = 0;
    for (int k = 0; k < K; k++)
        mx = fmax(mx, o[3 * k]);
    for (int k = 0; k < K; k++)
        s += exp(o[3 * k] - mx);
    for (int k = 0; k < K; k++) {
        lw[k] = o[3 * k] - mx - log(s);
        mu[k] = o[3 * k + 1];
        double u = o[3 * k + 2];
        sd[k] = (u > 20 ? u : log1p(exp(u))) + EPS;
    }
}

/* log q(x | y) in physical units (the tu_ref_log_prob_fn of testutil.h; ctx: the net). */
static double ref_log_prob(const void *ctx, const float *y, const float *x)
{
    const struct net *n = ctx;
    double c[C], u[FE] = {0}, out[OUT], lp = 0;
    ref_context(n, y, c);
    for (int j = 0; j < DX; j++) {
        u[j + 1] = ((double)x[j] - n->xm[j]) / n->xs[j];
        lp -= log(n->xs[j]);
    }
    ref_forward(n, u, c, out);
    for (int d = 0; d < DX; d++) {
        double lw[K], mu[K], sd[K], l[K], mx = -INFINITY, s = 0;
        ref_feature(out, d + 1, lw, mu, sd);
        for (int k = 0; k < K; k++) {
            double z = (u[d + 1] - mu[k]) / sd[k];
            l[k] = lw[k] - 0.5 * (log(2 * M_PI) + 2 * log(sd[k]) + z * z);
            mx = fmax(mx, l[k]);
        }
        for (int k = 0; k < K; k++)
            s += exp(l[k] - mx);
        lp += mx + log(s);
    }
    return lp;
}

/* The draw of sample `idx` of (seed, obs) at temperature T, from the engine's documented
 * stream: normals eng_rng_normal_row, the uniform of dimension d from words 4 + 2d and
 * 4 + 2d + 1 (53 bits). */
static void ref_draw(const struct net *n, const float *y, uint64_t seed, uint32_t obs,
                     uint64_t idx, float T, double *x)
{
    float e[DX];
    eng_rng_normal_row(seed, obs, idx, DX, e);
    double c[C], u[FE] = {0}, out[OUT];
    ref_context(n, y, c);
    for (int d = 0; d < DX; d++) {
        uint32_t w0 = eng_rng_u32(seed, obs, idx, 4 + 2 * d);
        uint32_t w1 = eng_rng_u32(seed, obs, idx, 4 + 2 * d + 1);
        double un = ((double)(w0 >> 5) * 67108864.0 + (double)(w1 >> 6)) / 9007199254740992.0;
        ref_forward(n, u, c, out);
        double lw[K], mu[K], sd[K], tot = 0, cum = 0;
        ref_feature(out, d + 1, lw, mu, sd);
        for (int k = 0; k < K; k++)
            tot += exp(lw[k]);
        int k = 0;
        for (; k < K - 1; k++) {
            cum += exp(lw[k]);
            if (un * tot < cum)
                break;
        }
        u[d + 1] = mu[k] + sd[k] * (double)(e[d] * T);
    }
    for (int j = 0; j < DX; j++)
        x[j] = u[j + 1] * n->xs[j] + n->xm[j];
}

/* ---- tests ------------------------------------------------------------------------------ */

START_TEST(log_prob_matches_reference)
{
    struct net n;
    struct tu_fix f = fix_open(&n, "");
    tu_check_mix_log_prob(f.m, f.ws, ref_log_prob, &n, 5e-6, Y0);
    tu_fix_close(&f);
}
END_TEST

START_TEST(samples_are_the_reference_draws)
{
    struct net n;
    struct tu_fix f = fix_open(&n, "");
    enum { N = 700 };
    float *x = malloc(sizeof(float) * N * DX);
    double *lp = malloc(sizeof(double) * N), *lp2 = malloc(sizeof(double) * N);
    char err[ENG_ERR_LEN];
    const float temps[2] = {1.0f, 0.6f};
    for (int ti = 0; ti < 2; ti++) {
        ck_assert_int_eq(eng_sample(f.m, f.ws, Y0, 9, 2, 100, N, temps[ti], x, lp, NULL, NULL, err),
                         ENG_OK);
        int k_seen[2] = {0};
        for (int i = 0; i < N; i++) {
            double want[DX];
            ref_draw(&n, Y0, 9, 2, 100 + (uint64_t)i, temps[ti], want);
            for (int j = 0; j < DX; j++)
                ck_assert_msg(fabs(x[i * DX + j] - want[j]) <= 1e-5 * (1 + fabs(want[j])),
                              "T %g sample %d dim %d: engine %.8g, reference %.8g", temps[ti],
                              i, j, x[i * DX + j], want[j]);
            k_seen[x[i * DX] > n.xm[0]]++;
        }
        ck_assert_int_gt(k_seen[0], 0);
        ck_assert_int_gt(k_seen[1], 0);
        /* the density returned with the samples is log_prob's, bit for bit */
        ck_assert_int_eq(eng_log_prob(f.m, f.ws, N, x, Y0, 1, lp2, err), ENG_OK);
        ck_assert_mem_eq(lp, lp2, sizeof(double) * N);
    }
    free(x), free(lp), free(lp2);
    tu_fix_close(&f);
}
END_TEST

START_TEST(sampling_reproducible)
{
    struct net n;
    struct tu_fix f = fix_open(&n, "");
    tu_check_sample_reproducible(f.m, f.ws, Y0);
    tu_fix_close(&f);
}
END_TEST

START_TEST(prior_box)
{
    struct net n;
    struct tu_fix f = fix_open(&n, TU_MIX_PRIOR_BOX);
    tu_check_mix_prior_box(f.m, f.ws, Y0, 400, 1000000, ref_log_prob, &n);
    tu_fix_close(&f);
}
END_TEST

START_TEST(refused)
{
    struct net n;
    struct tu_fix f = fix_open(&n, "");
    /* a mask that does not follow the degrees, named by tensor */
    struct tu_ckpt *c = tu_ckpt_new();
    add_tensors(c, &n, true);
    char *man = manifest("");
    char err[ENG_ERR_LEN];
    ck_assert_int_eq(tu_load_fail(c, man, ENG_LOAD_NO_SELFTEST, err), ENG_ERR_TENSOR);
    ck_assert_msg(strstr(err, "tensor 'blocks.1.linear1.mask'") &&
                  strstr(err, "element [0][1]"), "%s", err);
    free(man);
    tu_ckpt_free(c);
    /* a field of the other mixture type */
    c = tu_ckpt_new();
    add_tensors(c, &n, false);
    man = manifest("");
    char *p = strstr(man, "\"hidden\":6");
    memcpy(p, "\"upper\":6 ", 10);
    ck_assert_int_ne(tu_load_fail(c, man, ENG_LOAD_NO_SELFTEST, err), ENG_OK);
    ck_assert_msg(strstr(err, "unknown field 'upper'"), "%s", err);
    free(man);
    tu_ckpt_free(c);
    /* forward, inverse, non-finite inputs */
    tu_check_mix_refused(f.m, f.ws, Y0);
    tu_fix_close(&f);
}
END_TEST

/* ---- parity with sbi --------------------------------------------------------------------- */

/* The fixture's moments come from draws of the same density made with the real MADE's forward
 * (prior rejection in both), hence "reference" in the messages. */
START_TEST(sbi_parity)
{
    tu_check_sbi_parity("sbi_made", "reference");
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("mogmade");
    TCase *tc = tcase_create("mogmade");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, log_prob_matches_reference);
    tcase_add_test(tc, samples_are_the_reference_draws);
    tcase_add_test(tc, sampling_reproducible);
    tcase_add_test(tc, prior_box);
    tcase_add_test(tc, refused);
    tcase_add_test(tc, sbi_parity);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN
