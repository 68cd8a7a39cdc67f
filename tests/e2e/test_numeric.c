/*
 * test_numeric.c — models with a numeric inverse (i-ResNet blocks, written by ckptw.h
 * with engine-computed test vectors): the solver object of inverse and sample
 * (method / tol / max_iter passed through, per-row statistics, rows that did not converge
 * flagged), the certificate's contraction guarantee, and seed-reproducible samples across
 * worker counts.
 */
#include "ckptw.h"
#include "e2eutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct e2e_daemon A, B;

static void setup(void)
{
    char da[256], db[256], p[400];
    e2e_mkdtemp(da);
    e2e_mkdtemp(db);
    snprintf(p, sizeof p, "%s/ires.safetensors", da);
    ckw_iresnet_flow(p, 4, 8, 0.5, 1);
    snprintf(p, sizeof p, "%s/ires.safetensors", db);
    ckw_iresnet_flow(p, 4, 8, 0.5, 1);
    static const char *const one[] = {"--workers", "1", NULL};
    static const char *const three[] = {"--workers", "3", NULL};
    ck_assert(e2e_start(&A, da, one));
    ck_assert(e2e_start(&B, db, three));
}

static void teardown(void)
{
    e2e_stop_checked(&A, "numeric workers=1", 30);
    e2e_stop_checked(&B, "numeric workers=3", 30);
}

static const cJSON *get(const cJSON *o, const char *k)
{
    return cJSON_GetObjectItemCaseSensitive(o, k);
}

START_TEST(metadata_and_certificate)
{
    struct e2e_resp r;
    e2e_get(&A, "/v1/models/ires", &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert(cJSON_IsTrue(get(r.json, "numeric_inverse")));
    ck_assert_str_eq(get(get(r.json, "certificate"), "guarantee")->valuestring, "contraction");
    e2e_resp_free(&r);
    e2e_get(&A, "/v1/models/ires/certificate", &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert(cJSON_IsTrue(get(r.json, "certified")));
    const cJSON *b0 = cJSON_GetArrayItem(get(r.json, "blocks"), 0);
    ck_assert_str_eq(get(b0, "type")->valuestring, "IResNetBlock");
    ck_assert(get(b0, "lipschitz")->valuedouble < 1.0);
    ck_assert(cJSON_IsNumber(get(b0, "iterations_for_1e-6")));
    e2e_resp_free(&r);
}
END_TEST

START_TEST(inverse_solver_object)
{
    struct e2e_resp r, f;
    e2e_post(&A, "/v1/models/ires/inverse",
             "{\"z\":[[0.1,0.2,0.3,0.4],[1,-2,0.5,0.25],[0,0,0,0]],\"tol\":1e-5,"
             "\"method\":\"anderson\",\"max_iter\":500}", &r);
    ck_assert_msg(r.status == 200, "%s", r.body);
    const cJSON *s = get(r.json, "solver");
    ck_assert_msg(cJSON_IsObject(s), "no solver object: %s", r.body);
    ck_assert_str_eq(get(s, "method")->valuestring, "anderson");
    ck_assert(cJSON_IsTrue(get(s, "certified")));
    ck_assert_int_eq(get(s, "unconverged")->valueint, 0);
    static const char *const arrays[] = {"iterations", "residual", "error_bound", "converged"};
    for (int k = 0; k < 4; k++)
        ck_assert_int_eq(cJSON_GetArraySize(get(s, arrays[k])), 3);
    for (int i = 0; i < 3; i++) {
        ck_assert(cJSON_IsTrue(cJSON_GetArrayItem(get(s, "converged"), i)));
        ck_assert(cJSON_GetArrayItem(get(s, "iterations"), i)->valueint > 0);
        ck_assert(cJSON_GetArrayItem(get(s, "error_bound"), i)->valuedouble < 1e-5);
    }
    /* forward(inverse(z)) = z */
    char *xs = e2e_print(get(r.json, "x"));
    char body[2048];
    snprintf(body, sizeof body, "{\"x\":%s}", xs);
    free(xs);
    e2e_post(&A, "/v1/models/ires/forward", body, &f);
    ck_assert_int_eq(f.status, 200);
    cJSON *want = cJSON_Parse("[[0.1,0.2,0.3,0.4],[1,-2,0.5,0.25],[0,0,0,0]]");
    e2e_expect_close(get(f.json, "z"), want, 1e-5, 1e-5, "forward(inverse(z))");
    /* the inverse log-det is minus the forward one */
    for (int i = 0; i < 3; i++)
        ck_assert(fabs(cJSON_GetArrayItem(get(f.json, "log_det"), i)->valuedouble +
                       cJSON_GetArrayItem(get(r.json, "log_det"), i)->valuedouble) < 1e-4);
    cJSON_Delete(want);
    e2e_resp_free(&f);
    e2e_resp_free(&r);
    /* one iteration cannot reach 1e-12: every row is flagged, never silently returned */
    e2e_post(&A, "/v1/models/ires/inverse",
             "{\"z\":[[0.1,0.2,0.3,0.4],[1,-2,0.5,0.25]],\"tol\":1e-12,\"max_iter\":1,"
             "\"method\":\"fixed_point\"}", &r);
    ck_assert_msg(r.status == 200, "%s", r.body);
    s = get(r.json, "solver");
    ck_assert_str_eq(get(s, "method")->valuestring, "fixed_point");
    ck_assert_int_eq(get(s, "unconverged")->valueint, 2);
    ck_assert(cJSON_IsFalse(cJSON_GetArrayItem(get(s, "converged"), 0)));
    e2e_resp_free(&r);
    e2e_post(&A, "/v1/models/ires/inverse", "{\"z\":[[1,2,3,4]],\"method\":\"bisection\"}", &r);
    e2e_expect_error(&r, 400, "invalid_field", "method");
    e2e_resp_free(&r);
    e2e_post(&A, "/v1/models/ires/inverse", "{\"z\":[[1,2,3,4]],\"tol\":-1}", &r);
    e2e_expect_error(&r, 400, "invalid_field", "tol");
    e2e_resp_free(&r);
}
END_TEST

START_TEST(sample_solver_object_and_reproducibility)
{
    const char *q = "{\"num_samples\":600,\"seed\":11,\"outputs\":[\"samples\",\"log_prob\"],"
                    "\"method\":\"newton\"}";
    struct e2e_resp a, b;
    e2e_post(&A, "/v1/models/ires/sample", q, &a);
    e2e_post(&B, "/v1/models/ires/sample", q, &b);
    ck_assert_msg(a.status == 200, "%s", a.body);
    ck_assert_msg(a.len == b.len && !memcmp(a.body, b.body, a.len),
                  "numeric samples differ between 1 and 3 workers");
    const cJSON *s = get(a.json, "solver");
    ck_assert_str_eq(get(s, "method")->valuestring, "newton");
    const cJSON *it = get(s, "iterations");
    ck_assert_int_eq(cJSON_GetArraySize(it), 1);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetArrayItem(it, 0)), 600);
    ck_assert_int_eq(get(s, "unconverged")->valueint, 0);
    e2e_resp_free(&a);
    e2e_resp_free(&b);
    static const char *const csv[] = {"Accept: text/csv", NULL};
    e2e_request(&A, "POST", "/v1/models/ires/sample", q, strlen(q), csv, &a);
    ck_assert_int_eq(a.status, 200);
    char h[32];
    ck_assert_str_eq(e2e_header(&a, "X-Solver-Unconverged", h, sizeof h), "0");
    e2e_resp_free(&a);
    /* V2 reports the solver summary in its parameters */
    e2e_post(&A, "/v2/models/ires/infer",
             "{\"inputs\":[{\"name\":\"z\",\"shape\":[1,4],\"datatype\":\"FP32\","
             "\"data\":[0.5,0.5,0.5,0.5]}],\"parameters\":{\"operation\":\"inverse\","
             "\"tol\":1e-5}}", &a);
    ck_assert_msg(a.status == 200, "%s", a.body);
    ck_assert_int_eq(get(get(a.json, "parameters"), "solver_unconverged")->valueint, 0);
    e2e_resp_free(&a);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("numeric");
    TCase *t = tcase_create("iresnet");
    tcase_add_unchecked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 60);
    tcase_add_test(t, metadata_and_certificate);
    tcase_add_test(t, inverse_solver_object);
    tcase_add_test(t, sample_solver_object_and_reproducibility);
    suite_add_tcase(s, t);
    return s;
}

E2E_MAIN
