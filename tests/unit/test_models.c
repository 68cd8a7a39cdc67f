/*
 * test_models.c — the bundled demo models in models/: each loads (its embedded PyTorch
 * test vectors pass), and the i-ResNet demo, a chain of 8 residual blocks whose inverse
 * Lipschitz bounds multiply to ~1e5, still inverts every row to the default tolerance with
 * a certified bound (the residual blocks pass their state to each other in double).
 * eng_model_load_mem on a file's bytes gives the model the file gives.  Each keeps its first
 * test vectors (observation y and x) for GET /v1/models/{m}.  ik_mdn, a mixture density
 * network, has no forward map: its density stands in for it.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static const char *const demo[] = {"models/ik_cinn.safetensors", "models/ik_inn.safetensors",
                                   "models/ik_mlp.safetensors", "models/iresnet_toy.safetensors",
                                   "models/ik_mdn.safetensors", "models/ik_sbi_nsf.safetensors",
                                   "models/digits_cinn.safetensors", "models/digits_iresnet.safetensors"};

START_TEST(every_demo_model_loads)
{
    char err[ENG_ERR_LEN];
    struct eng_model *m = NULL;
    ck_assert_msg(eng_model_load(demo[_i], &m, err) == ENG_OK, "%s", err);
    eng_model_unref(m);
}
END_TEST

START_TEST(test_vectors_are_kept)
{
    /* the observation rows a user may pick and their x: 8 rows for every kind but the flow;
     * an inn's or mlp's y is what its forward gives for x; none after ENG_LOAD_NO_SELFTEST */
    char err[ENG_ERR_LEN];
    struct eng_model *m = NULL;
    ck_assert_msg(eng_model_load(demo[_i], &m, err) == ENG_OK, "%s", err);
    const struct eng_info *in = eng_model_info(m);
    if (in->kind == ENG_KIND_FLOW) {
        ck_assert_int_eq(in->n_test_vectors, 0);
        ck_assert_ptr_null(in->test_x);
        ck_assert_ptr_null(in->test_y);
    } else {
        ck_assert_int_eq(in->n_test_vectors, ENG_TEST_VECTORS_MAX);
        ck_assert_ptr_nonnull(in->test_x);
        ck_assert_ptr_nonnull(in->test_y);
        int n = in->n_test_vectors, dx = in->dims.x, dy = in->dims.y;
        for (int i = 0; i < n * dx; i++)
            ck_assert(isfinite(in->test_x[i]));
        if (in->kind != ENG_KIND_CINN && in->kind != ENG_KIND_MDN) {
            float *yo = malloc(sizeof(float) * (size_t)(n * dy));
            float *z = malloc(sizeof(float) * (size_t)(n * (in->dims.z ? in->dims.z : 1)));
            struct eng_ws *ws = eng_ws_new();
            ck_assert_int_eq(eng_forward(m, ws, n, in->test_x, NULL, 0, z, yo, NULL, err),
                             ENG_OK);
            for (int i = 0; i < n * dy; i++)
                ck_assert_msg(fabsf(yo[i] - in->test_y[i]) <= 1e-4f + 1e-4f * fabsf(yo[i]),
                              "%s: y[%d] %g vs %g", demo[_i], i, yo[i], in->test_y[i]);
            eng_ws_free(ws);
            free(yo);
            free(z);
        }
    }
    eng_model_unref(m);
    m = NULL;
    ck_assert_msg(eng_model_load_ex(demo[_i], ENG_LOAD_NO_SELFTEST, &m, err) == ENG_OK, "%s",
                  err);
    ck_assert_int_eq(eng_model_info(m)->n_test_vectors, 0);
    ck_assert_ptr_null(eng_model_info(m)->test_y);
    eng_model_unref(m);
}
END_TEST

START_TEST(load_mem_is_the_file_load)
{
    char err[ENG_ERR_LEN];
    size_t len = 0;
    char *bytes = tu_slurp(demo[_i], &len);
    ck_assert_ptr_nonnull(bytes);
    struct eng_model *a = NULL, *b = NULL;
    ck_assert_msg(eng_model_load(demo[_i], &a, err) == ENG_OK, "%s", err);
    ck_assert_msg(eng_model_load_mem(bytes, len, "mem", 0, &b, err) == ENG_OK, "%s", err);
    const struct eng_info *ia = eng_model_info(a), *ib = eng_model_info(b);
    ck_assert_str_eq(ia->sha256, ib->sha256);
    ck_assert_str_eq(ia->manifest_json, ib->manifest_json);
    ck_assert_int_eq(ia->kind, ib->kind);
    ck_assert_int_eq(ia->n_params, ib->n_params);
    /* the model keeps no pointer into the caller's bytes */
    memset(bytes, 0, len);
    free(bytes);
    int dx = ia->dims.x, dy = ia->dims.y ? ia->dims.y : 1, dz = ia->dims.z ? ia->dims.z : 1;
    float *x = malloc(sizeof(float) * 2 * (size_t)dx), *y = malloc(sizeof(float) * (size_t)dy);
    float *za = calloc(2 * (size_t)dz, sizeof(float)), *zb = calloc(2 * (size_t)dz, sizeof(float));
    float *ya = calloc(2 * (size_t)dy, sizeof(float)), *yb = calloc(2 * (size_t)dy, sizeof(float));
    for (int i = 0; i < 2 * dx; i++)
        x[i] = 0.1f * (float)(i % 8 + 1);
    for (int i = 0; i < dy; i++)
        y[i] = i == 0 ? 1.0f : 0.5f / (float)i;
    const float *yp = ia->kind == ENG_KIND_CINN || ia->kind == ENG_KIND_MDN ? y : NULL;
    struct eng_ws *ws = eng_ws_new();
    if (ia->kind == ENG_KIND_MDN) { /* no forward map: its density */
        double la[2], lb[2];
        ck_assert_int_eq(eng_log_prob(a, ws, 2, x, yp, 1, la, err), ENG_OK);
        ck_assert_int_eq(eng_log_prob(b, ws, 2, x, yp, 1, lb, err), ENG_OK);
        ck_assert_mem_eq(la, lb, sizeof la);
    } else {
        ck_assert_int_eq(eng_forward(a, ws, 2, x, yp, yp ? 1 : 0, za, ya, NULL, err), ENG_OK);
        ck_assert_int_eq(eng_forward(b, ws, 2, x, yp, yp ? 1 : 0, zb, yb, NULL, err), ENG_OK);
        ck_assert_mem_eq(za, zb, sizeof(float) * 2 * (size_t)ia->dims.z);
        if (ia->kind == ENG_KIND_INN || ia->kind == ENG_KIND_MLP) /* the kinds that output y */
            ck_assert_mem_eq(ya, yb, sizeof(float) * 2 * (size_t)ia->dims.y);
    }
    free(x), free(y), free(za), free(zb), free(ya), free(yb);
    eng_ws_free(ws);
    eng_model_unref(a);
    eng_model_unref(b);
}
END_TEST

START_TEST(load_mem_names_the_label)
{
    char err[ENG_ERR_LEN];
    struct eng_model *m = (struct eng_model *)1;
    ck_assert_int_eq(eng_model_load_mem("\x02\0\0\0\0\0\0\0{}", 10, "upload", 0, &m, err),
                     ENG_ERR_MANIFEST);
    ck_assert_ptr_null(m);
    ck_assert_msg(strncmp(err, "upload: ", 8) == 0, "%s", err);
    ck_assert_int_eq(eng_model_load_mem("abc", 3, NULL, 0, &m, err), ENG_ERR_FORMAT);
    ck_assert_msg(strstr(err, "<memory>: file is truncated") == err, "%s", err);
}
END_TEST

START_TEST(iresnet_demo_inverts_to_the_default_tolerance)
{
    char err[ENG_ERR_LEN];
    struct eng_model *m = NULL;
    ck_assert_msg(eng_model_load("models/iresnet_toy.safetensors", &m, err) == ENG_OK, "%s", err);
    ck_assert(eng_model_info(m)->numeric_inverse);
    enum { N = 64 };
    float x[N * 2], z[N * 2], x2[N * 2];
    tu_randn(x, N * 2, 1.0f, 5);
    struct eng_ws *ws = eng_ws_new();
    ck_assert_int_eq(eng_forward(m, ws, N, x, NULL, 0, z, NULL, NULL, err), ENG_OK);
    int it[N];
    double res[N], eb[N];
    bool conv[N];
    struct eng_solver_stats st = {it, res, eb, conv, false};
    struct eng_solver_opts o = {1e-6, 200, ENG_SOLVE_AUTO};
    ck_assert_int_eq(eng_inverse(m, ws, N, z, NULL, 0, x2, NULL, &o, &st, err), ENG_OK);
    ck_assert(st.certified);
    for (int i = 0; i < N; i++) {
        double e = hypot((double)x2[2 * i] - x[2 * i], (double)x2[2 * i + 1] - x[2 * i + 1]);
        double nx = hypot(x[2 * i], x[2 * i + 1]);
        ck_assert_msg(conv[i], "row %d not converged: bound %.3g", i, eb[i]);
        ck_assert_msg(eb[i] <= 1e-6 * fmax(1.0, nx), "row %d bound %.3g", i, eb[i]);
        /* x was float32 before the forward pass, so the true error includes the forward's
         * own float rounding; the bound covers the inverse */
        ck_assert_msg(e <= 1e-5 * fmax(1.0, nx), "row %d error %.3g", i, e);
    }
    eng_ws_free(ws);
    eng_model_unref(m);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("models");
    TCase *tc = tcase_create("demo");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, every_demo_model_loads, 0, (int)(sizeof demo / sizeof *demo));
    tcase_add_loop_test(tc, test_vectors_are_kept, 0, (int)(sizeof demo / sizeof *demo));
    tcase_add_loop_test(tc, load_mem_is_the_file_load, 0, (int)(sizeof demo / sizeof *demo));
    tcase_add_test(tc, load_mem_names_the_label);
    tcase_add_test(tc, iresnet_demo_inverts_to_the_default_tolerance);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN
