/*
 * test_blocks_zuko.c — ZukoMaskedAutoregressive (zuko's MaskedAutoregressiveTransform and
 * ElementWiseTransform) beyond the golden parity fixtures: round trip and finite-difference
 * log-det for every variant (affine and rqs; d = 1 element-wise with and without a
 * condition, d = 1 masked with a condition as zuko 1.0 builds it, d = 2, 3, 5; orders that
 * are not the identity; hidden layers of different widths, one narrower than the number of
 * ranks); the autoregressive structure under a permuted order (z_i does not move, bit for
 * bit, when a feature of higher rank does); stored masks that differ from zuko's refused
 * naming the tensor; malformed manifests (no slope, no order, phi beside hyper, an order
 * that is not a permutation) refused naming the field; and the zuko fixtures giving the same
 * bytes on every kernel path, for any split of a sample and for a broadcast or per-row
 * observation.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

struct spec {
    int d, cw;
    int nl, width[4];
    bool rqs;
    int bins;
    double slope;
    int order[8];           /* rank of feature i; order[0] < 0: element-wise (no order) */
    const char *act;
};

#define APPEND(...) snprintf(json + strlen(json), cap - strlen(json), __VA_ARGS__)

static int params(const struct spec *s)
{
    return s->rqs ? 3 * s->bins - 1 : 2;
}

static int unit_rank(const struct spec *s, int o)
{
    if (s->order[0] < 0)
        return 0;
    int r0 = s->cw ? 0 : 1;
    return r0 + o % (s->d - r0);
}

/* zuko's mask entry of layer l (0 = first, nl = output) at [o][i]. */
static float mask_at(const struct spec *s, int l, int o, int i)
{
    if (l == 0)
        return (i >= s->d || s->order[i] < unit_rank(s, o)) ? 1.0f : 0.0f;
    int ro = l == s->nl ? s->order[o / params(s)] : unit_rank(s, o);
    return unit_rank(s, i) <= ro ? 1.0f : 0.0f;
}

/* Tensors under "t." and the block's JSON (malloc'd); bad_l >= 0: layer bad_l's mask gets
 * element bad_e set to bad_v. */
static char *add_block(struct tu_ckpt *c, const struct spec *s, uint64_t seed, int bad_l,
                       int bad_e, float bad_v)
{
    const size_t cap = 8192;
    char *json = calloc(cap, 1);
    bool ew = s->order[0] < 0;
    const int P = params(s);
    APPEND("{\"type\":\"ZukoMaskedAutoregressive\",%s", s->cw ? "\"cond\":0," : "");
    if (s->rqs)
        APPEND("\"transform\":{\"type\":\"rqs\",\"bins\":%d,\"slope\":%g}", s->bins, s->slope);
    else
        APPEND("\"transform\":{\"type\":\"affine\",\"slope\":%g}", s->slope);
    if (!ew) {
        int64_t ord[8];
        for (int i = 0; i < s->d; i++)
            ord[i] = s->order[i];
        tu_add(c, "t.order", "I64", 1, (const int64_t[]){s->d}, ord);
        APPEND(",\"order\":\"t.order\"");
    }
    if (ew && s->cw == 0) {
        APPEND(",\"phi\":{");
        const int64_t n[3] = {s->rqs ? s->bins : 1, s->rqs ? s->bins : 1, s->bins - 1};
        const char *const key[2][3] = {{"shift", "scale"}, {"widths", "heights", "derivatives"}};
        for (int t = 0; t < (s->rqs ? 3 : 2); t++) {
            char name[32];
            snprintf(name, sizeof(name), "t.phi.%d", t);
            tu_add_randn(c, name, 2, (const int64_t[]){1, n[t]}, 0.8f, 0.0f, seed + (uint64_t)t);
            APPEND("%s\"%s\":\"%s\"", t ? "," : "", key[s->rqs][t], name);
        }
        APPEND("}}");
        return json;
    }
    APPEND(",\"activation\":\"%s\",\"hyper\":[", s->act);
    for (int l = 0; l <= s->nl; l++) {
        int out = l < s->nl ? s->width[l] : s->d * P;
        int in = l == 0 ? (ew ? 0 : s->d) + s->cw : s->width[l - 1];
        char name[64];
        snprintf(name, sizeof(name), "t.hyper.%d.weight", 2 * l);
        tu_add_randn(c, name, 2, (const int64_t[]){out, in}, (l == s->nl ? 0.8f : 1.2f) /
                     sqrtf((float)in), 0.0f, seed + 10 * (uint64_t)l);
        snprintf(name, sizeof(name), "t.hyper.%d.bias", 2 * l);
        tu_add_randn(c, name, 1, (const int64_t[]){out}, 0.3f, 0.0f, seed + 10 * (uint64_t)l + 1);
        APPEND("%s{\"weight\":\"t.hyper.%d.weight\",\"bias\":\"t.hyper.%d.bias\"", l ? "," : "",
               2 * l, 2 * l);
        if (!ew) {
            float *m = malloc(sizeof(float) * (size_t)out * (size_t)in);
            for (int o = 0; o < out; o++)
                for (int i = 0; i < in; i++)
                    m[o * in + i] = mask_at(s, l, o, i);
            if (l == bad_l)
                m[bad_e] = bad_v;
            snprintf(name, sizeof(name), "t.hyper.%d.mask", 2 * l);
            tu_add_f32(c, name, 2, (const int64_t[]){out, in}, m);
            free(m);
            APPEND(",\"mask\":\"t.hyper.%d.mask\"", 2 * l);
        }
        APPEND("}");
    }
    APPEND("]}");
    return json;
}

static struct eng_model *load_spec(const struct spec *s, uint64_t seed)
{
    struct tu_ckpt *c = tu_ckpt_new();
    char *block = add_block(c, s, seed, -1, 0, 0);
    char *man = tu_manifest_one_block(s->d, s->cw, block);
    struct eng_model *m = tu_load(c, man, ENG_LOAD_NO_SELFTEST);
    free(block), free(man);
    tu_ckpt_free(c);
    return m;
}

static const struct spec variants[] = {
    {1, 2, 2, {8, 8}, false, 0, 1e-3, {-1}, "relu"},          /* element-wise, MLP of c */
    {1, 0, 0, {0}, false, 0, 1e-3, {-1}, "relu"},             /* element-wise, phi */
    {1, 0, 0, {0}, true, 6, 1e-3, {-1}, "relu"},              /* element-wise rqs, phi */
    {1, 3, 1, {6}, true, 5, 1e-4, {-1}, "tanh"},              /* element-wise rqs, MLP */
    {1, 2, 2, {5, 5}, false, 0, 1e-3, {0}, "relu"},           /* zuko 1.0: masked, d = 1 */
    {2, 0, 2, {6, 6}, false, 0, 1e-3, {1, 0}, "relu"},
    {2, 2, 1, {4}, true, 8, 1e-3, {0, 1}, "relu"},
    {3, 2, 2, {9, 7}, true, 6, 1e-4, {2, 0, 1}, "tanh"},
    {5, 3, 2, {12, 7}, false, 0, 1e-3, {4, 3, 2, 1, 0}, "relu"},
    {5, 0, 3, {3, 9, 50}, true, 8, 1e-3, {3, 0, 4, 1, 2}, "relu"}, /* 3 units, 4 ranks */
    {5, 1, 2, {10, 10}, false, 0, 1e-4, {1, 4, 0, 3, 2}, "elu"},
};
enum { N_VARIANTS = sizeof(variants) / sizeof(variants[0]) };

START_TEST(roundtrip_and_logdet_of_every_variant)
{
    const struct spec *s = &variants[_i];
    struct eng_model *m = load_spec(s, 3000 + (uint64_t)_i * 100);
    /* float round trips through steep spline bins amplify z's rounding: the worst row here
     * (variant 6, row 15) loses 2.8e-5 with the float exponentials of the spline maps */
    tu_check_roundtrip(m, 600, 1.5f, 4e-5);
    tu_check_roundtrip(m, 50, 4.0f, 4e-5); /* rqs: some values outside [-5, 5] */
    tu_check_logdet_fd(m, 6, 1.0f, 1e-3, 2e-3);
    eng_model_unref(m);
}
END_TEST

/* z_i depends on x_i and the features of lower rank only: moving x_j leaves every z_i of
 * rank below x_j's unchanged, bit for bit, and moves z_j. */
START_TEST(outputs_depend_only_on_lower_ranks)
{
    const struct spec s = {5, 0, 2, {11, 11}, _i == 1, 6, 1e-3, {3, 0, 4, 1, 2}, "relu"};
    struct eng_model *m = load_spec(&s, 77);
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
        int moved = 0;
        for (int i = 0; i < 5; i++) {
            if (s.order[i] < s.order[j])
                ck_assert_msg(memcmp(&z[i], &z2[i], sizeof(float)) == 0,
                              "z_%d (rank %d) moved with x_%d (rank %d)", i, s.order[i], j,
                              s.order[j]);
            else if (z[i] != z2[i])
                moved++;
        }
        ck_assert_msg(z[j] != z2[j], "z_%d did not move with x_%d", j, j);
        ck_assert_int_ge(moved, 1);
    }
    eng_ws_free(ws);
    eng_model_unref(m);
}
END_TEST

/* Load a spec with one mask element (or the whole block JSON) replaced and expect the
 * message to contain every needle. */
static void refuse(const struct spec *s, int bad_l, int bad_e, float bad_v, const char *block,
                   const char *const *needles)
{
    struct tu_ckpt *c = tu_ckpt_new();
    char *own = add_block(c, s, 5, bad_l, bad_e, bad_v);
    char *man = tu_manifest_one_block(s->d, s->cw, block ? block : own);
    char err[ENG_ERR_LEN] = "";
    enum eng_status st = tu_load_fail(c, man, ENG_LOAD_NO_SELFTEST, err);
    ck_assert_msg(st != ENG_OK, "accepted");
    for (int i = 0; needles[i]; i++)
        ck_assert_msg(strstr(err, needles[i]) != NULL, "message lacks \"%s\": %s", needles[i], err);
    free(man), free(own);
    tu_ckpt_free(c);
}

START_TEST(a_wrong_mask_is_refused_with_its_tensor)
{
    /* d = 3, no context: ranks of hidden units 1, 2, 1, 2, ...; order [2, 0, 1] */
    const struct spec s = {3, 0, 2, {6, 6}, false, 0, 1e-3, {2, 0, 1}, "relu"};
    /* first layer: unit 0 (rank 1) must not read feature 0 (rank 2) */
    refuse(&s, 0, 0 * 3 + 0, 1.0f, NULL,
           (const char *const[]){"'t.hyper.0.mask'", "not zuko's MaskedMLP mask",
                                 "element [0][0]", NULL});
    /* hidden: unit 1 (rank 2) reads unit 0 (rank 1): removing it is refused */
    refuse(&s, 1, 1 * 6 + 0, 0.0f, NULL,
           (const char *const[]){"'t.hyper.2.mask'", "hyper[1]", "element [1][0]", NULL});
    /* output 2 (feature 1, rank 0) reads nothing */
    refuse(&s, 2, 2 * 6 + 0, 1.0f, NULL,
           (const char *const[]){"'t.hyper.4.mask'", "element [2][0]", NULL});
    refuse(&s, 2, 0, 0.5f, NULL, (const char *const[]){"is 0.5", NULL});
    /* with a context every unit reads every context column */
    const struct spec sc = {2, 2, 1, {4}, false, 0, 1e-3, {0, 1}, "relu"};
    refuse(&sc, 0, 0 * 4 + 3, 0.0f, NULL,
           (const char *const[]){"'t.hyper.0.mask'", "element [0][3]", NULL});
}
END_TEST

START_TEST(malformed_manifests_are_refused_naming_the_field)
{
    const struct spec s = {2, 0, 1, {4}, false, 0, 1e-3, {0, 1}, "relu"};
    const char *H = "\"hyper\":[{\"weight\":\"t.hyper.0.weight\",\"mask\":\"t.hyper.0.mask\"},"
                    "{\"weight\":\"t.hyper.2.weight\",\"mask\":\"t.hyper.2.mask\"}]";
    char b[1024];
    snprintf(b, sizeof(b), "{\"type\":\"ZukoMaskedAutoregressive\",\"transform\":{\"type\":"
             "\"affine\"},\"order\":\"t.order\",%s}", H);
    refuse(&s, -1, 0, 0, b, (const char *const[]){"slope", NULL});
    snprintf(b, sizeof(b), "{\"type\":\"ZukoMaskedAutoregressive\",\"transform\":{\"type\":"
             "\"affine\",\"slope\":0.001},%s}", H);
    refuse(&s, -1, 0, 0, b, (const char *const[]){"field 'order' is missing", NULL});
    snprintf(b, sizeof(b), "{\"type\":\"ZukoMaskedAutoregressive\",\"transform\":{\"type\":"
             "\"affine\",\"slope\":0.001,\"bins\":8},\"order\":\"t.order\",%s}", H);
    refuse(&s, -1, 0, 0, b, (const char *const[]){"'bins'", NULL});
    snprintf(b, sizeof(b), "{\"type\":\"ZukoMaskedAutoregressive\",\"transform\":{\"type\":"
             "\"rqs\",\"slope\":2},\"order\":\"t.order\",%s}", H);
    refuse(&s, -1, 0, 0, b, (const char *const[]){"'slope' must be in (0, 1)", NULL});
    snprintf(b, sizeof(b), "{\"type\":\"ZukoMaskedAutoregressive\",\"transform\":{\"type\":"
             "\"affine\",\"slope\":0.001},\"order\":\"t.order\",\"phi\":{\"shift\":\"t.order\"},%s}", H);
    refuse(&s, -1, 0, 0, b, (const char *const[]){"field 'phi'", NULL});
    snprintf(b, sizeof(b), "{\"type\":\"ZukoMaskedAutoregressive\",\"transform\":{\"type\":"
             "\"affine\",\"slope\":0.001},\"order\":\"t.order\",\"hyper\":[{\"weight\":"
             "\"t.hyper.0.weight\",\"mask\":\"t.hyper.0.mask\"}]}");
    refuse(&s, -1, 0, 0, b, (const char *const[]){"field 'hyper'", "at least one hidden", NULL});
    /* the output layer must have d P rows */
    const struct spec s3 = {3, 0, 1, {4}, false, 0, 1e-3, {0, 1, 2}, "relu"};
    struct tu_ckpt *c = tu_ckpt_new();
    char *own = add_block(c, &s3, 5, -1, 0, 0);
    char *man = tu_manifest_one_block(2, 0, own);   /* a width-2 model reading d = 3 tensors */
    char err[ENG_ERR_LEN] = "";
    ck_assert_int_ne(tu_load_fail(c, man, ENG_LOAD_NO_SELFTEST, err), ENG_OK);
    ck_assert_msg(strstr(err, "order") != NULL || strstr(err, "t.hyper.0") != NULL, "%s", err);
    free(man), free(own);
    tu_ckpt_free(c);
    /* an order that is not a permutation (zuko with passes < d) */
    struct tu_ckpt *c2 = tu_ckpt_new();
    own = add_block(c2, &s, 5, -1, 0, 0);
    tu_add(c2, "t.order2", "I64", 1, (const int64_t[]){2}, (const int64_t[]){0, 0});
    char *p = strstr(own, "\"t.order\"");
    ck_assert_ptr_nonnull(p);
    snprintf(b, sizeof(b), "%.*s\"t.order2\"%s", (int)(p - own), own, p + strlen("\"t.order\""));
    man = tu_manifest_one_block(2, 0, b);
    ck_assert_int_ne(tu_load_fail(c2, man, ENG_LOAD_NO_SELFTEST, err), ENG_OK);
    ck_assert_msg(strstr(err, "t.order2") != NULL, "%s", err);
    free(man), free(own);
    tu_ckpt_free(c2);
}
END_TEST

/* The zuko fixtures: samples and densities are the same bytes on every kernel path, for
 * any split of the draws, and with the observation broadcast or given per row. */
START_TEST(zuko_fixtures_give_the_same_bytes_on_every_path_and_split)
{
    const char *names[] = {"zuko_maf_d5_sbi", "zuko_nsf_d5_cond_slope1e4", "zuko_maf_d1_cond",
                           "zuko_nsf_d2"};
    tu_check_fixture_paths_and_splits(names, (int)(sizeof(names) / sizeof(names[0])));
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("blocks_zuko");
    TCase *tc = tcase_create("zuko");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, roundtrip_and_logdet_of_every_variant, 0, N_VARIANTS);
    tcase_add_loop_test(tc, outputs_depend_only_on_lower_ranks, 0, 2);
    tcase_add_test(tc, a_wrong_mask_is_refused_with_its_tensor);
    tcase_add_test(tc, malformed_manifests_are_refused_naming_the_field);
    tcase_add_test(tc, zuko_fixtures_give_the_same_bytes_on_every_path_and_split);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN
