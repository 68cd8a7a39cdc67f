/*
 * test_blocks_made.c — MaskedAffineAutoregressive (nflows MAF / IAF with its MADE) beyond
 * the golden parity fixtures: round trip and finite-difference log-det for every variant
 * (d = 1, 2, 3, 5; feed-forward and residual MADE; with and without a condition; MAF and
 * IAF; a hidden width below d - 1, so some degrees have no unit); the autoregressive structure (output k does not move when a later input does, bit
 * for bit); stored masks that differ from the degrees' masks refused naming the tensor;
 * manifests whose context layers do not match the condition refused; and the nflows
 * fixtures giving the same bytes on every kernel path, for any split of a sample and for a
 * broadcast or per-row observation.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

/* nflows' sequential degrees (random_mask=False). */
static int hid_deg(int d, int o)
{
    int mx = d - 1 > 1 ? d - 1 : 1, mn = d - 1 < 1 ? d - 1 : 1;
    return o % mx + mn;
}

struct spec {
    int d, h, cw, nb;
    bool residual, inverse;
    const char *act;
};

/* Add a masked Linear "<name>.weight|bias|mask" (out x in, the mask from the degrees
 * dout/din) and append its JSON object to json. */
static void add_masked(struct tu_ckpt *c, char *json, size_t cap, const char *name, int out,
                       int in, const int *dout, const int *din, bool strict, float scale,
                       uint64_t seed)
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
    size_t l = strlen(json);
    snprintf(json + l, cap - l, "{\"weight\":\"%s.weight\",\"bias\":\"%s.bias\",\"mask\":\"%s.mask\"}",
             name, name, name);
}

static void add_ctx(struct tu_ckpt *c, char *json, size_t cap, const char *name, int out, int in,
                    uint64_t seed)
{
    char buf[128];
    snprintf(buf, sizeof(buf), "%s.weight", name);
    tu_add_randn(c, buf, 2, (const int64_t[]){out, in}, 0.5f, 0.0f, seed);
    snprintf(buf, sizeof(buf), "%s.bias", name);
    tu_add_randn(c, buf, 1, (const int64_t[]){out}, 0.2f, 0.0f, seed + 1);
    size_t l = strlen(json);
    snprintf(json + l, cap - l, "{\"weight\":\"%s.weight\",\"bias\":\"%s.bias\"}", name, name);
}

#define APPEND(...) snprintf(json + strlen(json), cap - strlen(json), __VA_ARGS__)

/* The tensors of a MADE under prefix "m." and the block's JSON (malloc'd). */
static char *add_made(struct tu_ckpt *c, const struct spec *s, uint64_t seed)
{
    const size_t cap = 16384;
    char *json = calloc(cap, 1);
    int din[8], dh[64], dout[16];
    for (int i = 0; i < s->d; i++)
        din[i] = i + 1;
    for (int o = 0; o < s->h; o++)
        dh[o] = hid_deg(s->d, o);
    for (int o = 0; o < 2 * s->d; o++)
        dout[o] = o / 2 + 1;
    APPEND("{\"type\":\"MaskedAffineAutoregressive\",%s\"inverse\":%s,\"made\":{"
           "\"activation\":\"%s\",\"residual\":%s,\"initial\":",
           s->cw ? "\"cond\":0," : "", s->inverse ? "true" : "false", s->act,
           s->residual ? "true" : "false");
    add_masked(c, json, cap, "m.initial", s->h, s->d, dh, din, false, 1.0f, seed);
    if (s->cw) {
        APPEND(",\"context\":");
        add_ctx(c, json, cap, "m.context", s->h, s->cw, seed + 2);
    }
    APPEND(",\"blocks\":[");
    for (int j = 0; j < s->nb; j++) {
        char name[64];
        APPEND("%s{", j ? "," : "");
        if (s->residual) {
            snprintf(name, sizeof(name), "m.blocks.%d.linear0", j);
            APPEND("\"linear0\":");
            add_masked(c, json, cap, name, s->h, s->h, dh, dh, false, 1.0f, seed + 10 + 7 * j);
            snprintf(name, sizeof(name), "m.blocks.%d.linear1", j);
            APPEND(",\"linear1\":");
            add_masked(c, json, cap, name, s->h, s->h, dh, dh, false, 0.5f, seed + 13 + 7 * j);
            if (s->cw) {
                snprintf(name, sizeof(name), "m.blocks.%d.context", j);
                APPEND(",\"context\":");
                add_ctx(c, json, cap, name, s->h, s->cw, seed + 16 + 7 * j);
            }
        } else {
            snprintf(name, sizeof(name), "m.blocks.%d.linear", j);
            APPEND("\"linear\":");
            add_masked(c, json, cap, name, s->h, s->h, dh, dh, false, 1.0f, seed + 10 + 7 * j);
        }
        APPEND("}");
    }
    APPEND("],\"final\":");
    add_masked(c, json, cap, "m.final", 2 * s->d, s->h, dout, dh, true, 0.7f, seed + 99);
    APPEND("}}");
    return json;
}

static struct eng_model *load_made(const struct spec *s, uint64_t seed)
{
    struct tu_ckpt *c = tu_ckpt_new();
    char *block = add_made(c, s, seed);
    char *man = tu_manifest_one_block(s->d, s->cw, block);
    struct eng_model *m = tu_load(c, man, ENG_LOAD_NO_SELFTEST);
    free(block), free(man);
    tu_ckpt_free(c);
    return m;
}

static const struct spec variants[] = {
    {1, 6, 2, 2, false, false, "tanh"}, {1, 6, 0, 1, true, false, "relu"},
    {2, 7, 0, 2, false, false, "relu"}, {2, 7, 3, 2, true, true, "tanh"},
    {3, 9, 2, 2, false, true, "tanh"},  {3, 9, 0, 0, false, false, "relu"},
    {5, 50, 3, 2, false, false, "tanh"}, {5, 13, 2, 2, true, false, "relu"},
    {5, 11, 0, 1, true, true, "relu"},
    {5, 3, 2, 2, false, false, "tanh"}, /* H < d - 1: degree 4 has no hidden unit */
};
enum { N_VARIANTS = sizeof(variants) / sizeof(variants[0]) };

START_TEST(roundtrip_and_logdet_of_every_variant)
{
    const struct spec *s = &variants[_i];
    struct eng_model *m = load_made(s, 1000 + (uint64_t)_i * 50);
    tu_check_roundtrip(m, 600, 1.5f, 2e-5);
    tu_check_logdet_fd(m, 6, 1.0f, 1e-3, 2e-3);
    eng_model_unref(m);
}
END_TEST

/* z_k (MAF forward) depends on x_1..x_k only: moving x_j leaves z_1..z_{j-1} unchanged, bit
 * for bit, and moves z_j. */
START_TEST(outputs_depend_only_on_earlier_inputs)
{
    const struct spec s = {5, 13, 0, 2, _i == 1, false, "tanh"};
    struct eng_model *m = load_made(&s, 77);
    struct eng_ws *ws = eng_ws_new();
    char err[ENG_ERR_LEN];
    float x[5], x2[5], z[5], z2[5];
    double ld;
    tu_randn(x, 5, 1.0f, 5);
    ck_assert_int_eq(eng_forward(m, ws, 1, x, NULL, 0, z, NULL, &ld, err), ENG_OK);
    for (int j = 0; j < 5; j++) {
        memcpy(x2, x, sizeof(x));
        x2[j] += 0.75f;
        ck_assert_int_eq(eng_forward(m, ws, 1, x2, NULL, 0, z2, NULL, &ld, err), ENG_OK);
        for (int k = 0; k < j; k++)
            ck_assert_msg(memcmp(&z[k], &z2[k], sizeof(float)) == 0,
                          "z_%d moved with x_%d: %.9g -> %.9g", k, j, z[k], z2[k]);
        ck_assert_msg(z[j] != z2[j], "z_%d did not move with x_%d", j, j);
    }
    eng_ws_free(ws);
    eng_model_unref(m);
}
END_TEST

/* Rewrite the named tensor of a fresh MADE checkpoint and expect the load to fail with a
 * message containing every needle. */
static void refuse(const struct spec *s, const char *tensor, int elem, float value,
                   const char *block_override, const char *const *needles)
{
    struct tu_ckpt *c = tu_ckpt_new();
    char *block = add_made(c, s, 5);
    if (tensor) {
        /* add a copy of the tensor with one element changed and point the block at it */
        int out = 0, in = 0;
        if (strcmp(tensor, "m.initial.mask") == 0)
            out = s->h, in = s->d;
        else if (strcmp(tensor, "m.final.mask") == 0)
            out = 2 * s->d, in = s->h;
        else
            out = s->h, in = s->h;
        int din[8], dh[64], dout[16];
        for (int i = 0; i < s->d; i++)
            din[i] = i + 1;
        for (int o = 0; o < s->h; o++)
            dh[o] = hid_deg(s->d, o);
        for (int o = 0; o < 2 * s->d; o++)
            dout[o] = o / 2 + 1;
        const int *dO = strcmp(tensor, "m.final.mask") == 0 ? dout : dh;
        const int *dI = strcmp(tensor, "m.initial.mask") == 0 ? din : dh;
        bool strict = strcmp(tensor, "m.final.mask") == 0;
        float *mk = malloc(sizeof(float) * (size_t)out * (size_t)in);
        for (int o = 0; o < out; o++)
            for (int i = 0; i < in; i++)
                mk[o * in + i] = (strict ? dO[o] > dI[i] : dO[o] >= dI[i]) ? 1.0f : 0.0f;
        mk[elem] = value;
        char alias[96];
        snprintf(alias, sizeof(alias), "%s.bad", tensor);
        tu_add_f32(c, alias, 2, (const int64_t[]){out, in}, mk);
        free(mk);
        char from[128], to[128];
        snprintf(from, sizeof(from), "\"%s\"", tensor);
        snprintf(to, sizeof(to), "\"%s\"", alias);
        char *p = strstr(block, from);
        ck_assert_ptr_nonnull(p);
        size_t nb = strlen(block) + strlen(to) + 1;
        char *nbk = malloc(nb);
        snprintf(nbk, nb, "%.*s%s%s", (int)(p - block), block, to, p + strlen(from));
        free(block);
        block = nbk;
    }
    char *man = tu_manifest_one_block(s->d, s->cw, block_override ? block_override : block);
    char err[ENG_ERR_LEN] = "";
    enum eng_status st = tu_load_fail(c, man, ENG_LOAD_NO_SELFTEST, err);
    ck_assert_msg(st != ENG_OK, "accepted");
    for (int i = 0; needles[i]; i++)
        ck_assert_msg(strstr(err, needles[i]) != NULL, "message lacks \"%s\": %s", needles[i], err);
    free(man), free(block);
    tu_ckpt_free(c);
}

START_TEST(a_wrong_mask_is_refused_with_its_tensor)
{
    const struct spec ff = {3, 8, 2, 2, false, false, "tanh"};
    const struct spec res = {3, 8, 2, 2, true, false, "relu"};
    /* initial: unit 0 has degree 1, input 1 degree 2 -> must be 0 */
    refuse(&ff, "m.initial.mask", 0 * 3 + 1, 1.0f, NULL,
           (const char *const[]){"'m.initial.mask.bad'", "is not the MADE mask",
                                 "element [0][1]", NULL});
    /* a hidden layer: a 1 that must be there removed (unit 1, degree 2, reads unit 0) */
    refuse(&ff, "m.blocks.1.linear.mask", 1 * 8 + 0, 0.0f, NULL,
           (const char *const[]){"'m.blocks.1.linear.mask.bad'", "element [1][0]", NULL});
    /* final: output 2 (feature 2, degree 2) must not read unit 1 (degree 2) */
    refuse(&ff, "m.final.mask", 2 * 8 + 1, 1.0f, NULL,
           (const char *const[]){"'m.final.mask.bad'", "element [2][1]", NULL});
    refuse(&res, "m.blocks.0.linear1.mask", 0 * 8 + 1, 1.0f, NULL,
           (const char *const[]){"'m.blocks.0.linear1.mask.bad'", "blocks[0]", NULL});
    /* not 0/1 */
    refuse(&ff, "m.final.mask", 2 * 8 + 0, 0.5f, NULL,
           (const char *const[]){"'m.final.mask.bad'", "is 0.5", NULL});
}
END_TEST

START_TEST(context_layers_must_match_the_condition)
{
    const struct spec cond = {2, 4, 2, 1, false, false, "tanh"};
    refuse(&cond, NULL, 0, 0, "{\"type\":\"MaskedAffineAutoregressive\",\"cond\":0,\"made\":{"
           "\"activation\":\"tanh\",\"residual\":false,\"initial\":{\"weight\":\"m.initial.weight\","
           "\"mask\":\"m.initial.mask\"},\"blocks\":[],\"final\":{\"weight\":\"m.final.weight\","
           "\"mask\":\"m.final.mask\"}}}",
           (const char *const[]){"field 'context' is missing", NULL});
    const struct spec res = {2, 4, 2, 1, true, false, "relu"};
    refuse(&res, NULL, 0, 0, "{\"type\":\"MaskedAffineAutoregressive\",\"cond\":0,\"made\":{"
           "\"activation\":\"relu\",\"residual\":true,\"initial\":{\"weight\":\"m.initial.weight\","
           "\"mask\":\"m.initial.mask\"},\"context\":{\"weight\":\"m.context.weight\"},"
           "\"blocks\":[{\"linear0\":{\"weight\":\"m.blocks.0.linear0.weight\",\"mask\":"
           "\"m.blocks.0.linear0.mask\"},\"linear1\":{\"weight\":\"m.blocks.0.linear1.weight\","
           "\"mask\":\"m.blocks.0.linear1.mask\"}}],\"final\":{\"weight\":\"m.final.weight\","
           "\"mask\":\"m.final.mask\"}}}",
           (const char *const[]){"blocks[0]", "own context layer", NULL});
    const struct spec plain = {2, 4, 0, 0, false, false, "tanh"};
    refuse(&plain, NULL, 0, 0, "{\"type\":\"MaskedAffineAutoregressive\",\"made\":{"
           "\"activation\":\"tanh\",\"residual\":false,\"initial\":{\"weight\":\"m.initial.weight\","
           "\"mask\":\"m.initial.mask\"},\"context\":{\"weight\":\"m.initial.weight\"},"
           "\"blocks\":[],\"final\":{\"weight\":\"m.final.weight\",\"mask\":\"m.final.mask\"}}}",
           (const char *const[]){"field 'context': the block reads no condition", NULL});
    refuse(&plain, NULL, 0, 0, "{\"type\":\"MaskedAffineAutoregressive\",\"made\":{"
           "\"activation\":\"gelu\",\"residual\":false,\"initial\":{\"weight\":\"m.initial.weight\","
           "\"mask\":\"m.initial.mask\"},\"blocks\":[],\"final\":{\"weight\":\"m.final.weight\","
           "\"mask\":\"m.final.mask\"}}}",
           (const char *const[]){"activation", NULL});
    refuse(&plain, NULL, 0, 0, "{\"type\":\"MaskedAffineAutoregressive\",\"made\":{"
           "\"activation\":\"tanh\",\"residual\":false,\"initial\":{\"weight\":\"m.initial.weight\","
           "\"mask\":\"m.initial.mask\"},\"blocks\":[],\"final\":{\"weight\":\"m.final.weight\","
           "\"mask\":\"m.final.mask\"}},\"scale\":{\"type\":\"nflows\",\"min_scale\":0}}",
           (const char *const[]){"min_scale", NULL});
}
END_TEST

/* The nflows fixtures (MAF, IAF, NSF, maf_rqs): samples and densities are the same bytes on every kernel path, for
 * any split of the draws, and with the observation broadcast or given per row. */
START_TEST(nflows_fixtures_give_the_same_bytes_on_every_path_and_split)
{
    const char *names[] = {"maf_d5_sbi_chain", "iaf_d2_cond", "maf_d5_residual",
                           "nsf_d5_sbi_chain", "nsf_d1_sbi", "mrqs_d5_sbi_chain", "nsf_d2"};
    tu_check_fixture_paths_and_splits(names, (int)(sizeof(names) / sizeof(names[0])));
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("blocks_made");
    TCase *tc = tcase_create("made");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, roundtrip_and_logdet_of_every_variant, 0, N_VARIANTS);
    tcase_add_loop_test(tc, outputs_depend_only_on_earlier_inputs, 0, 2);
    tcase_add_test(tc, a_wrong_mask_is_refused_with_its_tensor);
    tcase_add_test(tc, context_layers_must_match_the_condition);
    tcase_add_test(tc, nflows_fixtures_give_the_same_bytes_on_every_path_and_split);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN
