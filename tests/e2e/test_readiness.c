/*
 * test_readiness.c — /readyz (and /v2/health/ready) tell the truth about the repository:
 * 503 with the reasons while no model is READY (a missing directory, an empty one, one
 * whose only model fails to load), 200 once a model is READY, and 200 with no models when
 * --allow-empty (or INNSERVE_ALLOW_EMPTY) says an empty repository is intended.  Exact
 * status codes, bodies and log events.
 */
#include "e2eutil.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* GET path and compare status and the whole body (the body ends with one '\n'). */
static void expect(const struct e2e_daemon *d, const char *path, long status, const char *body)
{
    struct e2e_resp r;
    e2e_get(d, path, &r);
    ck_assert_msg(r.status == status, "%s: status %ld, expected %ld: %s", path, r.status, status,
                  r.body);
    char want[4096];
    snprintf(want, sizeof want, "%s\n", body);
    ck_assert_msg(r.body && !strcmp(r.body, want), "%s:\n got  %s\n want %s", path, r.body,
                  want);
    if (status == 503)
        ck_assert_msg(r.headers && strstr(r.headers, "Retry-After: 1"), "%s: no Retry-After",
                      path);
    e2e_resp_free(&r);
}

/* The 503 body of /readyz for a message given once as "error" and once as the only reason. */
static void not_ready_body(char *out, size_t cap, const char *msg, int unavailable)
{
    snprintf(out, cap, "{\"error\":\"%s\",\"code\":\"model_unavailable\",\"ready\":false,"
             "\"models\":{\"ready\":0,\"loading\":0,\"unavailable\":%d},\"reasons\":[\"%s\"]}",
             msg, unavailable, msg);
}

static void healthz_ok(const struct e2e_daemon *d)
{
    expect(d, "/healthz", 200, "{\"status\":\"ok\"}");
    expect(d, "/v2/health/live", 200, "{\"live\":true}");
}

START_TEST(missing_directory_is_not_ready)
{
    char dir[256], missing[300], msg[600], body[2048];
    e2e_mkdtemp(dir);
    snprintf(missing, sizeof missing, "%s/no-such-dir", dir);
    struct e2e_daemon d;
    ck_assert(e2e_start(&d, missing, NULL));
    snprintf(msg, sizeof msg, "the models directory '%s' cannot be read: No such file or "
             "directory (--models, INNSERVE_MODELS)", missing);
    not_ready_body(body, sizeof body, msg, 0);
    expect(&d, "/readyz", 503, body);
    expect(&d, "/v2/health/ready", 503, body);
    healthz_ok(&d);
    ck_assert_int_eq(e2e_log_count(&d, "\"event\":\"repository_unreadable\""), 1);
    ck_assert_int_eq(e2e_log_count(&d, "\"event\":\"not_ready\""), 1);
    ck_assert_int_eq(e2e_log_count(&d, "\"event\":\"ready\""), 0);
    ck_assert_int_eq(e2e_stop(&d, SIGTERM, 30), 0);
    /* --allow-empty does not excuse a directory that is not there */
    const char *args[] = {"--allow-empty", NULL};
    ck_assert(e2e_start(&d, missing, args));
    expect(&d, "/readyz", 503, body);
    ck_assert_int_eq(e2e_stop(&d, SIGTERM, 30), 0);
}
END_TEST

START_TEST(empty_directory_is_not_ready)
{
    char dir[256], msg[600], body[2048];
    e2e_mkdtemp(dir);
    /* files that are not models do not count */
    e2e_write_file(dir, "README.txt", "notes\n", 6);
    e2e_write_file(dir, "train/train.py", "pass\n", 5);
    struct e2e_daemon d;
    ck_assert(e2e_start(&d, dir, NULL));
    snprintf(msg, sizeof msg, "the models directory '%s' holds no models (NAME.safetensors or "
             "NAME/<version>/model.safetensors); --allow-empty says an empty repository is "
             "intended", dir);
    not_ready_body(body, sizeof body, msg, 0);
    expect(&d, "/readyz", 503, body);
    expect(&d, "/v2/health/ready", 503, body);
    healthz_ok(&d);
    expect(&d, "/v1/models", 200, "{\"models\":[]}");
    ck_assert_int_eq(e2e_log_count(&d, "\"event\":\"not_ready\""), 1);
    ck_assert_int_eq(e2e_log_count(&d, "\"event\":\"repository_unreadable\""), 0);
    ck_assert_int_eq(e2e_stop(&d, SIGTERM, 30), 0);
}
END_TEST

START_TEST(only_a_broken_model_is_not_ready)
{
    char dir[256], body[2048];
    e2e_mkdtemp(dir);
    e2e_write_file(dir, "bad.safetensors", "junk\n", 5);
    struct e2e_daemon d;
    ck_assert(e2e_start(&d, dir, NULL));
    snprintf(body, sizeof body, "{\"error\":\"no model is READY: 1 model is unavailable "
             "(reasons names each with its cause)\",\"code\":\"model_unavailable\","
             "\"ready\":false,\"models\":{\"ready\":0,\"loading\":0,\"unavailable\":1},"
             "\"reasons\":[\"model 'bad' version 1: bad.safetensors: file is truncated: 5 "
             "bytes, shorter than the 8-byte header length\"]}");
    expect(&d, "/readyz", 503, body);
    expect(&d, "/v2/health/ready", 503, body);
    ck_assert_int_eq(e2e_log_count(&d, "\"event\":\"model_failed\""), 1);
    ck_assert_int_eq(e2e_log_count(&d, "\"event\":\"not_ready\""), 1);
    ck_assert_int_eq(e2e_stop(&d, SIGTERM, 30), 0);
    /* --allow-empty: a repository with a broken model is not an empty one */
    const char *args[] = {"--allow-empty", NULL};
    ck_assert(e2e_start(&d, dir, args));
    expect(&d, "/readyz", 503, body);
    ck_assert_int_eq(e2e_stop(&d, SIGTERM, 30), 0);
}
END_TEST

START_TEST(allow_empty_is_ready_with_no_models)
{
    char dir[256];
    e2e_mkdtemp(dir);
    const char *forms[][3] = {{"--allow-empty", NULL, NULL},
                              {"--allow-empty=on", NULL, NULL}};
    struct e2e_daemon d;
    for (int i = 0; i < 2; i++) {
        ck_assert(e2e_start(&d, dir, forms[i]));
        expect(&d, "/readyz", 200, "{\"ready\":true,\"models\":{\"ready\":0,\"loading\":0,"
               "\"unavailable\":0}}");
        expect(&d, "/v2/health/ready", 200, "{\"ready\":true}");
        ck_assert_int_eq(e2e_log_count(&d, "\"event\":\"ready\""), 1);
        ck_assert_int_eq(e2e_log_count(&d, "\"event\":\"not_ready\""), 0);
        ck_assert_int_eq(e2e_stop(&d, SIGTERM, 30), 0);
    }
    const char *env[] = {"INNSERVE_ALLOW_EMPTY=on", NULL};
    ck_assert(e2e_start_env(&d, dir, NULL, env));
    expect(&d, "/readyz", 200, "{\"ready\":true,\"models\":{\"ready\":0,\"loading\":0,"
           "\"unavailable\":0}}");
    ck_assert_int_eq(e2e_stop(&d, SIGTERM, 30), 0);
    /* the flag wins over the variable */
    const char *off[] = {"--allow-empty=off", NULL};
    ck_assert(e2e_start_env(&d, dir, off, env));
    {
        struct e2e_resp r;
        e2e_get(&d, "/readyz", &r);
        e2e_expect_error(&r, 503, "model_unavailable", "holds no models");
        e2e_resp_free(&r);
    }
    ck_assert_int_eq(e2e_stop(&d, SIGTERM, 30), 0);
}
END_TEST

START_TEST(ready_with_a_model_and_after_reloads)
{
    char dir[256], path[400];
    e2e_mkdtemp(dir);
    e2e_write_file(dir, "bad.safetensors", "junk\n", 5);
    e2e_copy_fixture(dir, "rnvp", "good.safetensors");
    struct e2e_daemon d;
    ck_assert(e2e_start(&d, dir, NULL));
    /* one READY model is enough, whatever else fails */
    expect(&d, "/readyz", 200, "{\"ready\":true,\"models\":{\"ready\":1,\"loading\":0,"
           "\"unavailable\":1}}");
    expect(&d, "/v2/health/ready", 200, "{\"ready\":true}");
    ck_assert_int_eq(e2e_log_count(&d, "\"event\":\"ready\""), 1);
    ck_assert_int_eq(e2e_log_count(&d, "\"event\":\"not_ready\""), 0);
    /* the good model goes away: not ready after the reload, with the broken one's reason */
    snprintf(path, sizeof path, "%s/good.safetensors", dir);
    ck_assert_int_eq(unlink(path), 0);
    e2e_reload(&d, 1);
    struct e2e_resp r;
    e2e_get(&d, "/readyz", &r);
    e2e_expect_error(&r, 503, "model_unavailable", "no model is READY");
    char want[600];
    snprintf(want, sizeof want, "model 'bad' version 1: bad.safetensors: file is truncated: "
             "5 bytes, shorter than the 8-byte header length");
    const cJSON *reasons = cJSON_GetObjectItemCaseSensitive(r.json, "reasons");
    ck_assert_int_eq(cJSON_GetArraySize(reasons), 1);
    ck_assert_str_eq(cJSON_GetArrayItem(reasons, 0)->valuestring, want);
    e2e_resp_free(&r);
    ck_assert_int_eq(e2e_log_count(&d, "\"event\":\"not_ready\""), 1);
    /* and a model put back makes it ready again */
    e2e_copy_fixture(dir, "rnvp", "again.safetensors");
    e2e_reload(&d, 2);
    expect(&d, "/readyz", 200, "{\"ready\":true,\"models\":{\"ready\":1,\"loading\":0,"
           "\"unavailable\":1}}");
    ck_assert_int_eq(e2e_log_count(&d, "\"event\":\"not_ready\""), 1);
    ck_assert_int_eq(e2e_stop(&d, SIGTERM, 30), 0);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("readiness");
    TCase *t = tcase_create("readiness");
    tcase_set_timeout(t, 120);
    tcase_add_test(t, missing_directory_is_not_ready);
    tcase_add_test(t, empty_directory_is_not_ready);
    tcase_add_test(t, only_a_broken_model_is_not_ready);
    tcase_add_test(t, allow_empty_is_ready_with_no_models);
    tcase_add_test(t, ready_with_a_model_and_after_reloads);
    suite_add_tcase(s, t);
    return s;
}

E2E_MAIN
