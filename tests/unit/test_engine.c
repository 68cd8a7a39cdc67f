/*
 * test_engine.c — the engine's core: Philox Gaussian draws, SHA-256, dense algebra,
 * subnets against a naive reference, the manifest loader's messages, and the batch /
 * tile invariance of sampling.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../engine/la.h"
#include "../../engine/sha256.h"
#include "testutil.h"

START_TEST(rng_is_a_pure_function_of_its_indices)
{
    float row[10];
    eng_rng_normal_row(42, 3, 1000, 10, row);
    for (int d = 0; d < 10; d++)
        ck_assert_float_eq(row[d], eng_rng_normal(42, 3, 1000, (uint32_t)d));
    ck_assert_float_ne(eng_rng_normal(42, 3, 1000, 0), eng_rng_normal(43, 3, 1000, 0));
    ck_assert_float_ne(eng_rng_normal(42, 3, 1000, 0), eng_rng_normal(42, 4, 1000, 0));
    ck_assert_float_ne(eng_rng_normal(42, 3, 1000, 0), eng_rng_normal(42, 3, 1001, 0));
    ck_assert_float_ne(eng_rng_normal(42, 3, 1000, 0), eng_rng_normal(42, 3, 1000ull << 32, 0));
}
END_TEST

START_TEST(rng_moments_are_standard_normal)
{
    double s = 0, s2 = 0, s4 = 0;
    const int n = 200000;
    for (int i = 0; i < n; i++) {
        double v = eng_rng_normal(7, 0, (uint64_t)i / 5, (uint32_t)(i % 5));
        s += v, s2 += v * v, s4 += v * v * v * v;
    }
    double mean = s / n, var = s2 / n - mean * mean;
    ck_assert_double_le(fabs(mean), 0.01);
    ck_assert_double_le(fabs(var - 1.0), 0.015);
    ck_assert_double_le(fabs(s4 / n - 3.0), 0.08);
}
END_TEST

START_TEST(sha256_matches_known_digests)
{
    char out[65];
    sha256_hex((const uint8_t *)"abc", 3, out);
    ck_assert_str_eq(out, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    sha256_hex((const uint8_t *)"", 0, out);
    ck_assert_str_eq(out, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}
END_TEST

START_TEST(lu_inverse_and_logdet)
{
    double A[9] = {4, 1, 2, 0, 3, 1, 1, 0, 2}, Ai[9], w[9];
    int piv[3];
    ck_assert_int_eq(la_inverse(3, A, Ai, w, piv), 0);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            double s = 0;
            for (int k = 0; k < 3; k++)
                s += A[i * 3 + k] * Ai[k * 3 + j];
            ck_assert_double_eq_tol(s, i == j ? 1.0 : 0.0, 1e-12);
        }
    memcpy(w, A, sizeof(A));
    ck_assert_int_eq(la_lu(3, w, piv), 0);
    ck_assert_double_eq_tol(la_lu_logabsdet(3, w), log(19.0), 1e-12); /* det = 19 */
    double S[4] = {1, 2, 2, 4};
    ck_assert_int_eq(la_lu(2, S, piv), -1);
    double D[6] = {3, 0, 0, 0, 2, 0}, work[5];
    ck_assert_double_eq_tol(la_spectral_norm(2, 3, D, work), 3.0, 1e-9);
}
END_TEST

/* A 1-block cinn built in C, for loader and sampling tests. */
static struct tu_ckpt *small_cinn(char **manifest, const char *extra)
{
    struct tu_ckpt *c = tu_ckpt_new();
    char *sub = tu_add_subnet(c, "b0.sub", 3 + 2, 8, 1, 2 * 2, "{\"type\":\"tanh\"}", 1.0f, 5);
    char *sub2 = tu_add_subnet(c, "b1.sub", 2 + 2, 8, 1, 2 * 3, "{\"type\":\"relu\"}", 1.0f, 6);
    tu_add_perm(c, "b0.perm", 5, 1);
    size_t cap = 8192;
    *manifest = malloc(cap);
    snprintf(*manifest, cap,
             "{\"format\":\"innserve-manifest\",\"version\":1,\"kind\":\"cinn\","
             "\"dims\":{\"x\":5,\"y\":2},\"conditions\":[{\"net\":null}],%s"
             "\"blocks\":[{\"type\":\"GLOWCouplingBlock\",\"cond\":0,\"subnet1\":%s,"
             "\"subnet2\":%s},{\"type\":\"PermuteRandom\",\"perm\":\"b0.perm\"}]}",
             extra, sub2, sub);
    free(sub);
    free(sub2);
    return c;
}

START_TEST(sampling_is_identical_whatever_the_split)
{
    char *man;
    struct tu_ckpt *c = small_cinn(&man, "");
    struct eng_model *m = tu_load(c, man, ENG_LOAD_NO_SELFTEST);
    const int N = 600; /* more than two tiles */
    float y[2] = {0.3f, -1.2f};
    float *a = malloc(sizeof(float) * N * 5), *b = malloc(sizeof(float) * N * 5);
    double *la = malloc(sizeof(double) * N), *lb = malloc(sizeof(double) * N);
    struct eng_ws *ws = eng_ws_new();
    char err[ENG_ERR_LEN];
    ck_assert_int_eq(eng_sample(m, ws, y, 99, 2, 0, N, 1.0f, a, la, NULL, NULL, err), ENG_OK);
    int pos = 0, sizes[] = {256, 512, 256, 512, 256}; /* aligned splits */
    for (int k = 0; pos < N; k++) {
        int cnt = sizes[k % 5] < N - pos ? sizes[k % 5] : N - pos;
        ck_assert_int_eq(eng_sample(m, ws, y, 99, 2, (uint64_t)pos, cnt, 1.0f, b + pos * 5,
                                    lb + pos, NULL, NULL, err), ENG_OK);
        pos += cnt;
    }
    ck_assert_int_eq(memcmp(a, b, sizeof(float) * N * 5), 0);
    ck_assert_int_eq(memcmp(la, lb, sizeof(double) * N), 0);
    /* log_prob of the samples equals eng_log_prob of them */
    double *lp = malloc(sizeof(double) * N);
    ck_assert_int_eq(eng_log_prob(m, ws, N, a, y, 1, lp, err), ENG_OK);
    for (int i = 0; i < N; i++)
        ck_assert_double_eq_tol(lp[i], la[i], 1e-3 * (1 + fabs(la[i])));
    /* temperature 0 gives the image of z = 0 for every sample */
    ck_assert_int_eq(eng_sample(m, ws, y, 1, 0, 0, 3, 0.0f, a, NULL, NULL, NULL, err), ENG_OK);
    for (int j = 0; j < 5; j++)
        ck_assert_float_eq(a[j], a[5 + j]);
    eng_ws_free(ws);
    eng_model_unref(m);
    tu_ckpt_free(c);
    free(man), free(a), free(b), free(la), free(lb), free(lp);
}
END_TEST

START_TEST(a_set_cancel_flag_stops_every_operation)
{
    char *man;
    struct tu_ckpt *c = small_cinn(&man, "");
    struct eng_model *m = tu_load(c, man, ENG_LOAD_NO_SELFTEST);
    struct eng_ws *ws = eng_ws_new();
    char err[ENG_ERR_LEN];
    enum { N = 600 };
    float *x = calloc(N * 5, sizeof(float)), *z = calloc(N * 5, sizeof(float));
    double *ld = calloc(N, sizeof(double));
    float y[2] = {0.5f, -0.5f};
    atomic_bool flag;
    atomic_init(&flag, true);
    eng_ws_set_cancel(ws, &flag);
    ck_assert_int_eq(eng_forward(m, ws, N, x, y, 1, z, NULL, ld, err), ENG_ERR_CANCELLED);
    ck_assert_str_eq(err, "cancelled after 0 of 600 rows");
    ck_assert_int_eq(eng_inverse(m, ws, N, z, y, 1, x, ld, NULL, NULL, err), ENG_ERR_CANCELLED);
    ck_assert_int_eq(eng_log_prob(m, ws, N, x, y, 1, ld, err), ENG_ERR_CANCELLED);
    ck_assert_int_eq(eng_sample(m, ws, y, 1, 0, 0, N, 1.0f, x, ld, NULL, NULL, err),
                     ENG_ERR_CANCELLED);
    ck_assert_str_eq(err, "cancelled after 0 of 600 samples");
    ck_assert_str_eq(eng_status_str(ENG_ERR_CANCELLED), "cancelled");
    /* a cleared flag, and a workspace without one, run to the end */
    atomic_store(&flag, false);
    ck_assert_int_eq(eng_sample(m, ws, y, 1, 0, 0, N, 1.0f, x, ld, NULL, NULL, err), ENG_OK);
    eng_ws_set_cancel(ws, NULL);
    atomic_store(&flag, true);
    ck_assert_int_eq(eng_forward(m, ws, N, x, y, 1, z, NULL, ld, err), ENG_OK);
    eng_ws_free(ws);
    eng_model_unref(m);
    tu_ckpt_free(c);
    free(man), free(x), free(z), free(ld);
}
END_TEST

START_TEST(bad_calls_return_status)
{
    char *man;
    struct tu_ckpt *c = small_cinn(&man, "");
    struct eng_model *m = tu_load(c, man, ENG_LOAD_NO_SELFTEST);
    struct eng_ws *ws = eng_ws_new();
    char err[ENG_ERR_LEN];
    float x[10] = {0}, z[10], y[4] = {0};
    x[7] = NAN;
    ck_assert_int_eq(eng_forward(m, ws, 2, x, y, 2, z, NULL, NULL, err), ENG_ERR_NONFINITE);
    ck_assert_str_eq(err, "x[1][2] is not finite");
    x[7] = 0;
    ck_assert_int_eq(eng_forward(m, ws, 2, x, NULL, 0, z, NULL, NULL, err), ENG_ERR_SHAPE);
    ck_assert_int_eq(eng_forward(m, ws, 2, x, y, 3, z, NULL, NULL, err), ENG_ERR_SHAPE);
    y[1] = INFINITY;
    ck_assert_int_eq(eng_sample(m, ws, y, 1, 0, 0, 3, 1.0f, z, NULL, NULL, NULL, err),
                     ENG_ERR_NONFINITE);
    y[1] = 0;
    ck_assert_int_eq(eng_sample(m, ws, y, 1, 0, 0, 1, NAN, z, NULL, NULL, NULL, err), ENG_ERR_ARG);
    ck_assert_int_eq(eng_sample(m, ws, y, 1, 0, 0, -1, 1.0f, z, NULL, NULL, NULL, err), ENG_ERR_ARG);
    eng_ws_free(ws);
    eng_model_unref(m);
    tu_ckpt_free(c);
    free(man);
}
END_TEST

struct bad_manifest {
    const char *manifest;
    const char *expect;
};

START_TEST(manifest_errors_name_the_field)
{
    static const struct bad_manifest cases[] = {
        {"[1,2]", "__metadata__.manifest is not a JSON object"},
        {"{\"format\":\"x\"}", "'format'"},
        {"{\"format\":\"innserve-manifest\",\"version\":2,\"kind\":\"flow\"}", "version 2"},
        {"{\"format\":\"innserve-manifest\",\"version\":1,\"kind\":\"vae\"}", "'kind'"},
        {"{\"format\":\"innserve-manifest\",\"version\":1,\"kind\":\"flow\"}", "'dims'"},
        {"{\"format\":\"innserve-manifest\",\"version\":1,\"kind\":\"flow\",\"dims\":{\"x\":0}}",
         "dims: field 'x'"},
        {"{\"format\":\"innserve-manifest\",\"version\":1,\"kind\":\"flow\",\"dims\":{\"x\":5},"
         "\"blocks\":[{\"type\":\"Nope\"}]}",
         "blocks[0]: unknown block type \"Nope\""},
        {"{\"format\":\"innserve-manifest\",\"version\":1,\"kind\":\"flow\",\"dims\":{\"x\":5},"
         "\"blocks\":[{\"type\":\"PermuteRandom\",\"perm\":\"missing\"}]}",
         "tensor 'missing' is not in the file"},
        {"{\"format\":\"innserve-manifest\",\"version\":1,\"kind\":\"flow\",\"dims\":{\"x\":5},"
         "\"blocks\":[{\"type\":\"PermuteRandom\",\"perm\":\"b0.perm\",\"cond\":0}]}",
         "no conditions"},
        {"{\"format\":\"innserve-manifest\",\"version\":1,\"kind\":\"flow\",\"dims\":{\"x\":5},"
         "\"blocks\":[{\"type\":\"PermuteRandom\",\"perm\":\"b0.perm\"}]}",
         "'tests' (test vectors) is missing"},
        {"{\"format\":\"innserve-manifest\",\"version\":1,\"kind\":\"inn\",\"dims\":{\"x\":3,"
         "\"y\":2,\"z\":2,\"pad_x\":1,\"pad_y\":1},\"blocks\":[]}",
         "x + pad_x = 4 must equal z + pad_y + y = 5"},
        {"{\"format\":\"innserve-manifest\",\"version\":1,\"kind\":\"flow\",\"dims\":{\"x\":5},"
         "\"names\":{\"x\":[\"a\"]},\"blocks\":[]}",
         "names.x must be a list of 5 strings"},
        {"{\"format\":\"innserve-manifest\",\"version\":1,\"kind\":\"flow\",\"dims\":{\"x\":5},"
         "\"shape\":{\"x\":[2,2]},\"blocks\":[]}",
         "shape.x has 4 elements, dims.x is 5"},
        {"{\"format\":\"innserve-manifest\",\"version\":1,\"kind\":\"flow\",\"dims\":{\"x\":5},"
         "\"shape\":{\"x\":[5,1,1,1]},\"blocks\":[]}",
         "field 'shape' must be {\"x\": [C, H, W]}"},
        {"{\"format\":\"innserve-manifest\",\"version\":1,\"kind\":\"flow\",\"dims\":{\"x\":5},"
         "\"shape\":{\"x\":[5,0.5]},\"blocks\":[]}",
         "shape.x[1] must be a positive integer"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct tu_ckpt *c = tu_ckpt_new();
        tu_add_perm(c, "b0.perm", 5, 1);
        char err[ENG_ERR_LEN];
        tu_load_fail(c, cases[i].manifest, 0, err);
        ck_assert_msg(strstr(err, cases[i].expect) != NULL, "case %zu: '%s' lacks '%s'", i, err,
                      cases[i].expect);
        ck_assert_msg(strncmp(err, "/tmp/innserve-test-", 19) == 0, "message names the file: %s",
                      err);
        tu_ckpt_free(c);
    }
}
END_TEST

/* "shape": x's per-row shape reaches eng_info and every block; without it, the vector
 * shape. */
START_TEST(shape_reaches_info)
{
    struct tu_ckpt *c = tu_ckpt_new();
    tu_add_perm(c, "b0.perm", 12, 1);
    const char *fmt = "{\"format\":\"innserve-manifest\",\"version\":1,\"kind\":\"flow\","
                      "\"dims\":{\"x\":12},%s\"blocks\":[{\"type\":\"PermuteRandom\","
                      "\"perm\":\"b0.perm\"}]}";
    char man[512];
    snprintf(man, sizeof man, fmt, "\"shape\":{\"x\":[3,2,2]},");
    struct eng_model *m = tu_load(c, man, ENG_LOAD_NO_SELFTEST);
    const struct eng_info *in = eng_model_info(m);
    ck_assert_int_eq(in->x_rank, 3);
    ck_assert_int_eq(in->x_shape[0], 3);
    ck_assert_int_eq(in->x_shape[1], 2);
    ck_assert_int_eq(in->x_shape[2], 2);
    ck_assert_int_eq(in->z_rank, 3);
    ck_assert_int_eq(in->z_shape[0] * in->z_shape[1] * in->z_shape[2], 12);
    eng_model_unref(m);
    snprintf(man, sizeof man, fmt, "");
    m = tu_load(c, man, ENG_LOAD_NO_SELFTEST);
    in = eng_model_info(m);
    ck_assert_int_eq(in->x_rank, 1);
    ck_assert_int_eq(in->x_shape[0], 12);
    ck_assert_int_eq(in->z_rank, 1);
    eng_model_unref(m);
    tu_ckpt_free(c);
}
END_TEST

/* conditions[k].broadcast: a y (a, b) spread over 3 positions is exactly the model of
 * width-6 y given (a, a, a, b, b, b): the same bits. */
START_TEST(broadcast_condition_repeats_the_vector)
{
    enum { D = 2, V = 2, P = 3, N = 5 };
    struct tu_ckpt *c = tu_ckpt_new();
    char *sub = tu_add_subnet(c, "cat", V * P, 8, 1, 2 * D, "{\"type\":\"tanh\"}", 0.5f, 7);
    char block[4096];
    snprintf(block, sizeof block,
             "{\"type\":\"ConditionalAffineTransform\",\"cond\":0,\"subnet\":%s}", sub);
    char *wide = tu_manifest_one_block(D, V * P, block);
    char *narrow = tu_manifest_one_block(D, V, block);
    char *at = strstr(narrow, "{\"net\":null}");
    ck_assert_ptr_nonnull(at);
    char *man = malloc(strlen(narrow) + 64);
    sprintf(man, "%.*s{\"net\":null,\"broadcast\":[%d]}%s", (int)(at - narrow), narrow, P,
            at + strlen("{\"net\":null}"));
    struct eng_model *mw = tu_load(c, wide, ENG_LOAD_NO_SELFTEST);
    struct eng_model *mb = tu_load(c, man, ENG_LOAD_NO_SELFTEST);
    struct eng_ws *ws = eng_ws_new();
    float x[N * D], y1[N * V], y3[N * V * P], zb[N * D], zw[N * D];
    double lb[N], lw[N];
    tu_randn(x, N * D, 1.0f, 3);
    tu_randn(y1, N * V, 1.0f, 4);
    for (int i = 0; i < N; i++) /* channel-major: (ch, p) at ch * P + p */
        for (int ch = 0; ch < V; ch++)
            for (int p = 0; p < P; p++)
                y3[(i * V + ch) * P + p] = y1[i * V + ch];
    char err[ENG_ERR_LEN];
    ck_assert_int_eq(eng_forward(mb, ws, N, x, y1, N, zb, NULL, lb, err), ENG_OK);
    ck_assert_int_eq(eng_forward(mw, ws, N, x, y3, N, zw, NULL, lw, err), ENG_OK);
    ck_assert_int_eq(memcmp(zb, zw, sizeof zb), 0);
    ck_assert_int_eq(memcmp(lb, lw, sizeof lb), 0);
    /* one broadcast observation */
    ck_assert_int_eq(eng_forward(mb, ws, N, x, y1, 1, zb, NULL, lb, err), ENG_OK);
    ck_assert_int_eq(eng_forward(mw, ws, N, x, y3, 1, zw, NULL, lw, err), ENG_OK);
    ck_assert_int_eq(memcmp(zb, zw, sizeof zb), 0);
    eng_ws_free(ws);
    eng_model_unref(mw);
    eng_model_unref(mb);
    free(man);
    free(wide);
    free(narrow);
    free(sub);
    tu_ckpt_free(c);
}
END_TEST

START_TEST(standardization_is_applied_with_its_log_det)
{
    char *man;
    struct tu_ckpt *c = small_cinn(&man, "\"standardize\":{\"x\":{\"mean\":\"mx\",\"std\":\"sx\"},"
                                         "\"y\":{\"mean\":\"my\",\"std\":\"sy\"}},");
    float mx[5] = {1, 2, 3, 4, 5}, sx[5] = {2, 2, 0.5f, 1, 4}, my[2] = {10, -10}, sy[2] = {3, 5};
    int64_t s5[1] = {5}, s2[1] = {2};
    tu_add_f32(c, "mx", 1, s5, mx);
    tu_add_f32(c, "sx", 1, s5, sx);
    tu_add_f32(c, "my", 1, s2, my);
    tu_add_f32(c, "sy", 1, s2, sy);
    struct eng_model *ms = tu_load(c, man, ENG_LOAD_NO_SELFTEST);
    char *man0;
    struct tu_ckpt *c0 = small_cinn(&man0, "");
    struct eng_model *m0 = tu_load(c0, man0, ENG_LOAD_NO_SELFTEST);
    /* model with standardization at physical (x, y) == plain model at standardized values */
    float x[5] = {3, 0, 3.5f, 4, 1}, y[2] = {13, -20}, xs[5], ys[2], z1[5], z0[5];
    for (int j = 0; j < 5; j++)
        xs[j] = (x[j] - mx[j]) / sx[j];
    for (int j = 0; j < 2; j++)
        ys[j] = (y[j] - my[j]) / sy[j];
    double l1, l0;
    struct eng_ws *ws = eng_ws_new();
    char err[ENG_ERR_LEN];
    ck_assert_int_eq(eng_forward(ms, ws, 1, x, y, 1, z1, NULL, &l1, err), ENG_OK);
    ck_assert_int_eq(eng_forward(m0, ws, 1, xs, ys, 1, z0, NULL, &l0, err), ENG_OK);
    for (int j = 0; j < 5; j++)
        ck_assert_float_eq_tol(z1[j], z0[j], 1e-5f);
    ck_assert_double_eq_tol(l1, l0 - log(2.0 * 2 * 0.5 * 1 * 4), 1e-5);
    eng_ws_free(ws);
    eng_model_unref(ms);
    eng_model_unref(m0);
    tu_ckpt_free(c);
    tu_ckpt_free(c0);
    free(man), free(man0);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("engine");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, rng_is_a_pure_function_of_its_indices);
    tcase_add_test(tc, rng_moments_are_standard_normal);
    tcase_add_test(tc, sha256_matches_known_digests);
    tcase_add_test(tc, lu_inverse_and_logdet);
    tcase_add_test(tc, sampling_is_identical_whatever_the_split);
    tcase_add_test(tc, bad_calls_return_status);
    tcase_add_test(tc, a_set_cancel_flag_stops_every_operation);
    tcase_add_test(tc, manifest_errors_name_the_field);
    tcase_add_test(tc, standardization_is_applied_with_its_log_det);
    tcase_add_test(tc, shape_reaches_info);
    tcase_add_test(tc, broadcast_condition_repeats_the_vector);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN
