/*
 * test_blocks_nsf.c — nflows' spline blocks beyond the golden parity fixtures:
 * RQSCoupling (ResidualNet with and without context gates, mlp conditioner), LULinear and
 * MaskedRQSAutoregressive: round trip and finite-difference log-det with many points in
 * the identity tails; the tails are the identity bit for bit with log-det 0 and the tail
 * bound maps to itself; manifests with a wrong mask, missing context layers, impossible
 * spline constants or mis-shaped tensors refused with a message naming the field or tensor.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../engine/blocks/rqs.h"
#include "testutil.h"

#define CAP 16384
#define APPEND(...) snprintf(json + strlen(json), CAP - strlen(json), __VA_ARGS__)

static void add_lin(struct tu_ckpt *c, char *json, const char *name, int out, int in,
                    float scale, uint64_t seed)
{
    char buf[128];
    snprintf(buf, sizeof(buf), "%s.weight", name);
    tu_add_randn(c, buf, 2, (const int64_t[]){out, in}, scale / sqrtf((float)in), 0.0f, seed);
    snprintf(buf, sizeof(buf), "%s.bias", name);
    tu_add_randn(c, buf, 1, (const int64_t[]){out}, 0.3f, 0.0f, seed + 1);
    APPEND("{\"weight\":\"%s.weight\",\"bias\":\"%s.bias\"}", name, name);
}

struct cspec {
    int d, cw, H, nb, K;
    const char *mask;       /* JSON list */
    int nid, ntf;
    double B;
    bool mlp, tanh;
};

/* An RQSCoupling block (tensors under "c."), malloc'd JSON. */
static char *add_coupling(struct tu_ckpt *c, const struct cspec *s, uint64_t seed)
{
    char *json = calloc(CAP, 1);
    int P = 3 * s->K - 1, out = s->ntf * P;
    APPEND("{\"type\":\"RQSCoupling\",%s\"mask\":%s,\"bins\":%d,\"tail_bound\":%g,"
           "\"hidden_features\":%d,\"conditioner\":", s->cw ? "\"cond\":0," : "", s->mask, s->K,
           s->B, s->H);
    if (s->mlp) {
        char *sub = tu_add_subnet(c, "c.mlp", s->nid + s->cw, s->H, 1, out, "{\"type\":\"relu\"}",
                                  1.0f, seed);
        /* {"layers": [...]} -> {"type": "mlp", "layers": [...]} */
        APPEND("{\"type\":\"mlp\",%s}", sub + 1);
        json[strlen(json) - 2] = '}', json[strlen(json) - 1] = '\0';
        free(sub);
    } else {
        APPEND("{\"type\":\"ResidualNet\",\"activation\":\"%s\",\"initial\":",
               s->tanh ? "tanh" : "relu");
        add_lin(c, json, "c.init", s->H, s->nid + s->cw, 1.0f, seed);
        APPEND(",\"blocks\":[");
        for (int k = 0; k < s->nb; k++) {
            char nm[64];
            APPEND("%s{\"linear0\":", k ? "," : "");
            snprintf(nm, sizeof(nm), "c.b%d.l0", k);
            add_lin(c, json, nm, s->H, s->H, 1.0f, seed + 10 + 10 * k);
            APPEND(",\"linear1\":");
            snprintf(nm, sizeof(nm), "c.b%d.l1", k);
            add_lin(c, json, nm, s->H, s->H, 1.0f, seed + 12 + 10 * k);
            if (s->cw) {
                APPEND(",\"context\":");
                snprintf(nm, sizeof(nm), "c.b%d.ctx", k);
                add_lin(c, json, nm, s->H, s->cw, 1.0f, seed + 14 + 10 * k);
            }
            APPEND("}");
        }
        APPEND("],\"final\":");
        add_lin(c, json, "c.final", out, s->H, 0.6f, seed + 5);
        APPEND("}");
    }
    APPEND("}");
    return json;
}

static char *add_lu(struct tu_ckpt *c, int d, uint64_t seed)
{
    char *json = calloc(CAP, 1);
    int64_t nt = (int64_t)d * (d - 1) / 2;
    if (nt > 0) {
        tu_add_randn(c, "lu.lower", 1, (const int64_t[]){nt}, 0.4f, 0.0f, seed);
        tu_add_randn(c, "lu.upper", 1, (const int64_t[]){nt}, 0.4f, 0.0f, seed + 1);
    }
    tu_add_randn(c, "lu.diag", 1, (const int64_t[]){d}, 0.3f, 0.54f, seed + 2);
    tu_add_randn(c, "lu.bias", 1, (const int64_t[]){d}, 0.3f, 0.0f, seed + 3);
    APPEND("{\"type\":\"LULinear\",");
    if (nt > 0)
        APPEND("\"lower_entries\":\"lu.lower\",\"upper_entries\":\"lu.upper\",");
    APPEND("\"unconstrained_upper_diag\":\"lu.diag\",\"bias\":\"lu.bias\",\"eps\":0.001}");
    return json;
}

/* nflows' sequential degrees. */
static int hid_deg(int d, int o)
{
    int mx = d - 1 > 1 ? d - 1 : 1, mn = d - 1 < 1 ? d - 1 : 1;
    return o % mx + mn;
}

static void add_masked(struct tu_ckpt *c, char *json, const char *name, int out, int in,
                       const int *dout, const int *din, bool strict, float scale, uint64_t seed)
{
    char buf[128];
    snprintf(buf, sizeof(buf), "%s.weight", name);
    tu_add_randn(c, buf, 2, (const int64_t[]){out, in}, scale / sqrtf((float)in), 0.0f, seed);
    snprintf(buf, sizeof(buf), "%s.bias", name);
    tu_add_randn(c, buf, 1, (const int64_t[]){out}, 0.3f, 0.0f, seed + 1);
    float *m = malloc(sizeof(float) * (size_t)out * (size_t)in);
    for (int o = 0; o < out; o++)
        for (int i = 0; i < in; i++)
            m[o * in + i] = (strict ? dout[o] > din[i] : dout[o] >= din[i]) ? 1.0f : 0.0f;
    snprintf(buf, sizeof(buf), "%s.mask", name);
    tu_add_f32(c, buf, 2, (const int64_t[]){out, in}, m);
    free(m);
    APPEND("{\"weight\":\"%s.weight\",\"bias\":\"%s.bias\",\"mask\":\"%s.mask\"}", name, name,
           name);
}

/* A MaskedRQSAutoregressive block with M outputs per feature in its final layer (M = 3K - 1
 * for a valid one). */
static char *add_mrqs(struct tu_ckpt *c, int d, int H, int cw, bool residual, int K, int M,
                      double B, uint64_t seed)
{
    char *json = calloc(CAP, 1);
    int din[8], dh[64], dout[512];
    for (int i = 0; i < d; i++)
        din[i] = i + 1;
    for (int o = 0; o < H; o++)
        dh[o] = hid_deg(d, o);
    for (int o = 0; o < M * d; o++)
        dout[o] = o / M + 1;
    APPEND("{\"type\":\"MaskedRQSAutoregressive\",%s\"spline\":{\"bins\":%d,\"tail_bound\":%g},"
           "\"made\":{\"activation\":\"%s\",\"residual\":%s,\"initial\":", cw ? "\"cond\":0," : "",
           K, B, residual ? "relu" : "tanh", residual ? "true" : "false");
    add_masked(c, json, "m.init", H, d, dh, din, false, 1.0f, seed);
    if (cw) {
        APPEND(",\"context\":");
        add_lin(c, json, "m.ctx", H, cw, 1.0f, seed + 2);
    }
    APPEND(",\"blocks\":[");
    for (int k = 0; k < 2; k++) {
        char nm[64];
        if (residual) {
            APPEND("%s{\"linear0\":", k ? "," : "");
            snprintf(nm, sizeof(nm), "m.b%d.l0", k);
            add_masked(c, json, nm, H, H, dh, dh, false, 1.0f, seed + 10 + 10 * k);
            APPEND(",\"linear1\":");
            snprintf(nm, sizeof(nm), "m.b%d.l1", k);
            add_masked(c, json, nm, H, H, dh, dh, false, 1.0f, seed + 12 + 10 * k);
            if (cw) {
                APPEND(",\"context\":");
                snprintf(nm, sizeof(nm), "m.b%d.ctx", k);
                add_lin(c, json, nm, H, cw, 1.0f, seed + 14 + 10 * k);
            }
        } else {
            APPEND("%s{\"linear\":", k ? "," : "");
            snprintf(nm, sizeof(nm), "m.b%d.lin", k);
            add_masked(c, json, nm, H, H, dh, dh, false, 1.0f, seed + 10 + 10 * k);
        }
        APPEND("}");
    }
    APPEND("],\"final\":");
    add_masked(c, json, "m.final", M * d, H, dout, dh, true, 0.3f, seed + 5);
    APPEND("}}");
    return json;
}

static struct eng_model *load_one(struct tu_ckpt *c, int d, int cw, char *block)
{
    char *man = tu_manifest_one_block(d, cw, block);
    struct eng_model *m = tu_load(c, man, ENG_LOAD_NO_SELFTEST);
    free(man), free(block);
    return m;
}

static void check(struct eng_model *m, float xscale)
{
    tu_check_roundtrip(m, 64, xscale, 2e-5);
    tu_check_logdet_fd(m, 24, xscale, 1e-3, 2e-2);
}

static const struct cspec CVARS[] = {
    {2, 0, 8, 2, 10, "[1,0]", 1, 1, 3.0, false, false},
    {2, 0, 8, 2, 10, "[0,1]", 1, 1, 1.0, false, true},
    {5, 3, 12, 2, 6, "[1,0,1,0,1]", 2, 3, 1.5, false, false},
    {4, 2, 10, 1, 4, "[1,1,0,0]", 2, 2, 2.0, false, true},
    {1, 2, 9, 0, 10, "[1]", 0, 1, 3.0, true, false},
    {3, 1, 7, 2, 3, "[0,1,1]", 1, 2, 0.5, true, false},
};
enum { N_CVARS = sizeof(CVARS) / sizeof(CVARS[0]) };

START_TEST(coupling_round_trip_and_logdet)
{
    const struct cspec *s = &CVARS[_i];
    struct tu_ckpt *c = tu_ckpt_new();
    struct eng_model *m = load_one(c, s->d, s->cw, add_coupling(c, s, 100 + (uint64_t)_i));
    check(m, (float)(1.5 * s->B));
    eng_model_unref(m);
    tu_ckpt_free(c);
}
END_TEST

START_TEST(lulinear_round_trip_and_logdet)
{
    const int ds[] = {1, 2, 3, 5, 8};
    struct tu_ckpt *c = tu_ckpt_new();
    struct eng_model *m = load_one(c, ds[_i], 0, add_lu(c, ds[_i], 7));
    check(m, 2.0f);
    eng_model_unref(m);
    tu_ckpt_free(c);
}
END_TEST

START_TEST(mrqs_round_trip_and_logdet)
{
    /* d, H, cw, residual, K, B */
    const int v[][5] = {{1, 6, 2, 0, 10}, {2, 8, 0, 1, 8}, {3, 9, 2, 1, 5}, {4, 10, 3, 0, 6},
                        {5, 3, 0, 0, 4}};
    const double B[] = {3.0, 2.0, 1.0, 1.5, 2.5};
    struct tu_ckpt *c = tu_ckpt_new();
    int K = v[_i][4];
    struct eng_model *m = load_one(c, v[_i][0], v[_i][2],
                                   add_mrqs(c, v[_i][0], v[_i][1], v[_i][2], v[_i][3], K,
                                            3 * K - 1, B[_i], 40 + (uint64_t)_i));
    check(m, (float)(1.5 * B[_i]));
    eng_model_unref(m);
    tu_ckpt_free(c);
}
END_TEST

/* Outside [-B, B] the transformed feature is untouched, bit for bit, with log-det 0; at
 * +-B it stays +-B (the outer knots are set exactly). */
START_TEST(tails_are_the_identity)
{
    const struct cspec s = {2, 0, 8, 2, 10, "[0,1]", 1, 1, 1.0, false, false};
    struct tu_ckpt *c = tu_ckpt_new();
    struct eng_model *m = load_one(c, 2, 0, add_coupling(c, &s, 9));
    float x[] = {0.3f, 1.0000001f, -2.0f, -7.5f, 1.0f, 1e6f, 0.1f, -1.0f, 0.7f, 1.0f};
    const int n = 5;
    float z[10], xb[10];
    double ld[5], lb[5];
    char err[ENG_ERR_LEN];
    struct eng_ws *ws = eng_ws_new();
    ck_assert_int_eq(eng_forward(m, ws, n, x, NULL, 0, z, NULL, ld, err), ENG_OK);
    for (int i = 0; i < 3; i++) {
        ck_assert_msg(z[2 * i + 1] == x[2 * i + 1], "row %d: %.9g -> %.9g", i, x[2 * i + 1],
                      z[2 * i + 1]);
        ck_assert_msg(ld[i] == 0.0, "row %d: log-det %g", i, ld[i]);
        ck_assert(z[2 * i] == x[2 * i]);
    }
    ck_assert_msg(fabsf(z[7] + 1.0f) <= 1e-6f && fabsf(z[9] - 1.0f) <= 1e-6f, "%.9g %.9g", z[7],
                  z[9]);
    ck_assert_int_eq(eng_inverse(m, ws, n, z, NULL, 0, xb, lb, NULL, NULL, err), ENG_OK);
    for (int i = 0; i < 2 * n; i++)
        ck_assert_msg(fabsf(xb[i] - x[i]) <= 1e-6f * (1.0f + fabsf(x[i])), "%d: %.9g vs %.9g", i,
                      xb[i], x[i]);
    eng_ws_free(ws);
    eng_model_unref(m);
    tu_ckpt_free(c);
}
END_TEST

/* Replace the first `from` in block by `to` (malloc'd result; block freed). */
static char *subst(char *block, const char *from, const char *to)
{
    char *p = strstr(block, from);
    ck_assert_msg(p != NULL, "'%s' not in the block", from);
    size_t n = strlen(block) + strlen(to) + 1;
    char *out = malloc(n);
    snprintf(out, n, "%.*s%s%s", (int)(p - block), block, to, p + strlen(from));
    free(block);
    return out;
}

/* Load expecting a refusal whose message holds needle; frees block and the checkpoint and
 * leaves *c a fresh one. */
static void refused(struct tu_ckpt **c, int d, int cw, char *block, const char *needle)
{
    char *man = tu_manifest_one_block(d, cw, block);
    char err[ENG_ERR_LEN] = "";
    ck_assert_msg(tu_load_fail(*c, man, ENG_LOAD_NO_SELFTEST, err) != ENG_OK, "accepted: %s",
                  block);
    ck_assert_msg(strstr(err, needle) != NULL, "message lacks \"%s\": %s", needle, err);
    free(man), free(block);
    tu_ckpt_free(*c);
    *c = tu_ckpt_new();
}

START_TEST(bad_manifests_are_refused)
{
    const struct cspec s = {5, 3, 12, 2, 6, "[1,0,1,0,1]", 2, 3, 1.5, false, false};
    struct tu_ckpt *c = tu_ckpt_new();
    refused(&c, 5, 3, subst(add_coupling(c, &s, 1), "[1,0,1,0,1]", "[1,0,2,0,1]"),
            "field 'mask': element 2 must be 0 or 1");
    refused(&c, 5, 3, subst(add_coupling(c, &s, 1), "[1,0,1,0,1]", "[1,0,1,0]"),
            "field 'mask' must be a list of 5 numbers");
    refused(&c, 5, 3, subst(add_coupling(c, &s, 1), "[1,0,1,0,1]", "[0,0,0,0,0]"),
            "no feature is transformed");
    refused(&c, 5, 3, subst(add_coupling(c, &s, 1), "\"tail_bound\":1.5", "\"tail_bound\":0"),
            "tail_bound");
    refused(&c, 5, 3, subst(add_coupling(c, &s, 1), "\"bins\":6", "\"bins\":6,\"min_bin_width\":0.2"),
            "min_bin_width");
    refused(&c, 5, 3, subst(add_coupling(c, &s, 1), "\"bins\":6", "\"bins\":6,\"tails\":\"identity\""),
            "tails");
    refused(&c, 5, 3, subst(add_coupling(c, &s, 1), ",\"context\":{\"weight\":\"c.b1.ctx.weight\",\"bias\":\"c.b1.ctx.bias\"}", ""),
            "field 'context' is missing");
    /* a mask with another split: the first layer no longer fits */
    refused(&c, 5, 3, subst(add_coupling(c, &s, 1), "[1,0,1,0,1]", "[1,1,1,0,1]"), "c.init.weight");
    /* 7 bins need 3 x 20 outputs: the final layer has 3 x 17 */
    refused(&c, 5, 3, subst(add_coupling(c, &s, 1), "\"bins\":6", "\"bins\":7"), "c.final.weight");
    /* a conditional ResidualNet without its context (no cond) */
    refused(&c, 5, 0, subst(add_coupling(c, &s, 1), "\"cond\":0,", ""), "c.init.weight");
    /* LULinear: upper_entries of the wrong length */
    char *lu = add_lu(c, 3, 2);
    tu_add_randn(c, "lu.short", 1, (const int64_t[]){2}, 0.4f, 0.0f, 3);
    refused(&c, 3, 0, subst(lu, "\"lu.upper\"", "\"lu.short\""), "lu.short");
    refused(&c, 3, 0, subst(add_lu(c, 3, 2), "\"eps\":0.001", "\"eps\":0"), "eps");
    /* MaskedRQSAutoregressive with an affine-sized (2 per feature) final layer */
    refused(&c, 3, 0, add_mrqs(c, 3, 6, 0, false, 4, 2, 2.0, 5), "m.final");
    /* and without its spline object */
    refused(&c, 3, 0, subst(add_mrqs(c, 3, 6, 0, false, 4, 11, 2.0, 5), "\"spline\":", "\"spl\":"),
            "spline");
    tu_ckpt_free(c);
}
END_TEST

/* rqs_nflows_rows (chunked, vectorized) gives rqs_nflows_elem's bits for every element, in
 * both directions, inside, outside and at the tail bound, for any number of rows. */
START_TEST(rows_give_the_element_function_bits)
{
    const struct rqs_nflows s = {.K = 7, .B = 2.0, .min_w = 1e-3, .min_h = 1e-3, .min_d = 1e-3,
                                 .divisor = 3.0, .edge = 1e-3 + log1p(exp(log(exp(1.0 - 1e-3) - 1.0)))};
    enum { N = 37, NC = 3, P = 20 };
    float par[N * NC * P], x[N * 4], x0[N * 4];
    tu_randn(par, N * NC * P, 2.0f, 21);
    tu_randn(x, N * 4, 2.0f, 22);
    x[1] = 2.0f, x[5] = -2.0f, x[9] = 2.0000002f, x[13] = 1e30f;
    memcpy(x0, x, sizeof(x));
    const int cols[NC] = {1, 3, 0};
    double *work = malloc(sizeof(double) * (rqs_nflows_rows_work(&s) + (size_t)s.K * 3 + 8));
    const int rows[] = {1, 2, 5, N};     /* 3, 6, 15 and 111 elements: scalar, padded lanes */
    for (int t = 0; t < 8; t++) {
        const int inv = t & 1, nr = rows[t / 2];
        double ld[N] = {0};
        memcpy(x, x0, sizeof(x));
        rqs_nflows_rows(&s, nr, x, 4, cols, NC, par, NC * P, inv, ld, work);
        for (int i = 0; i < nr; i++) {
            double sum = 0.0;
            for (int j = 0; j < NC; j++) {
                double l;
                float want = (float)rqs_nflows_elem(&s, par + (i * NC + j) * P,
                                                    (double)x0[i * 4 + cols[j]], inv, &l, work);
                sum += l;
                ck_assert_msg(memcmp(&want, &x[i * 4 + cols[j]], sizeof(float)) == 0,
                              "inv %d row %d col %d: %.9g vs %.9g", inv, i, cols[j], x[i * 4 + cols[j]],
                              want);
            }
            ck_assert_msg(memcmp(&sum, &ld[i], sizeof(double)) == 0, "inv %d row %d log-det", inv, i);
        }
        ck_assert(x[2] == x0[2]);   /* column 2 is not transformed */
    }
    free(work);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("blocks_nsf");
    TCase *tc = tcase_create("nsf");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, coupling_round_trip_and_logdet, 0, N_CVARS);
    tcase_add_loop_test(tc, lulinear_round_trip_and_logdet, 0, 5);
    tcase_add_loop_test(tc, mrqs_round_trip_and_logdet, 0, 5);
    tcase_add_test(tc, tails_are_the_identity);
    tcase_add_test(tc, rows_give_the_element_function_bits);
    tcase_add_test(tc, bad_manifests_are_refused);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN
