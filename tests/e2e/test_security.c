/*
 * test_security.c — what a client or a file must not be able to do to the daemon, and the
 * protections an operator turns on:
 *   - model names in URLs cannot grow /metrics (only models the repository knows get a
 *     model label; every other name counts under model="")
 *   - /v1/models, error answers and /metrics name files relative to the models directory
 *     and never show bytes of a file a symbolic link leads to
 */
#include "e2eutil.h"

#include <curl/curl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- helpers --------------------------------------------------------------------------- */

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static size_t discard(char *p, size_t s, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return s * n;
}

/* The label sets of every `metric{...}` line of a /metrics body but readyz's and
 * metrics', each
 * "{...} value", sorted, joined with '\n' (malloc'd). */
static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *series(const char *body, const char *metric)
{
    char *lines[256];
    int n = 0;
    size_t ml = strlen(metric);
    for (const char *p = body; p && *p;) {
        const char *eol = strchr(p, '\n');
        size_t l = eol ? (size_t)(eol - p) : strlen(p);
        /* readyz: e2e_start polls it until the models are loaded (503s, then a 200);
         * metrics: polled until the last request is counted */
        if (l > ml && !strncmp(p, metric, ml) && p[ml] == '{' &&
            !memmem(p, l, "operation=\"readyz\"", 18) &&
            !memmem(p, l, "operation=\"metrics\"", 19)) {
            ck_assert_msg(n < 256, "more than 256 series of %s", metric);
            lines[n++] = strndup(p + ml, l - ml);
        }
        p = eol ? eol + 1 : NULL;
    }
    qsort(lines, (size_t)n, sizeof *lines, cmp_str);
    size_t total = 1;
    for (int i = 0; i < n; i++)
        total += strlen(lines[i]) + 1;
    char *out = calloc(1, total);
    for (int i = 0; i < n; i++) {
        strcat(out, lines[i]);
        strcat(out, "\n");
        free(lines[i]);
    }
    return out;
}

/* ---- metric labels --------------------------------------------------------------------- */

/* n requests to random model names, in turn answered 404, 405, 413 (with --max-body 1K)
 * and 415. */
static void unknown_model_requests(const struct e2e_daemon *d, int n, unsigned seed)
{
    CURL *c = curl_easy_init();
    char big[2048];
    memset(big, ' ', sizeof big);
    big[0] = '{';
    big[sizeof big - 1] = '}';
    srand(seed);
    long want_status[4] = {404, 405, 413, 415};
    for (int i = 0; i < n; i++) {
        char url[256], name[40];
        snprintf(name, sizeof name, "m%08x%08x", (unsigned)rand(), (unsigned)i);
        snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/models/%s/forward", d->port, name);
        struct curl_slist *hl = curl_slist_append(NULL, "Expect:");
        curl_easy_reset(c);
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
        switch (i % 4) {
        case 0: /* 404: valid request, unknown model */
            hl = curl_slist_append(hl, "Content-Type: application/json");
            curl_easy_setopt(c, CURLOPT_POSTFIELDS, "{\"x\":[[1,2,3,4,5]]}");
            break;
        case 1: /* 405 */
            curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "DELETE");
            break;
        case 2: /* 413: body over --max-body */
            hl = curl_slist_append(hl, "Content-Type: application/json");
            curl_easy_setopt(c, CURLOPT_POSTFIELDS, big);
            curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)sizeof big);
            break;
        default: /* 415 */
            hl = curl_slist_append(hl, "Content-Type: text/plain");
            curl_easy_setopt(c, CURLOPT_POSTFIELDS, "{}");
            break;
        }
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
        ck_assert_int_eq(curl_easy_perform(c), CURLE_OK);
        long code = 0;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
        ck_assert_msg(code == want_status[i % 4], "%s: %ld", url, code);
        curl_slist_free_all(hl);
    }
    curl_easy_cleanup(c);
}

/* 2,000 requests to random model names, answered 404, 405, 413 and 415, leave /metrics the
 * same size (give or take digits) and its label set exactly as the known model's requests
 * make it. */
START_TEST(unknown_models_get_no_metric_labels)
{
    char dir[256];
    e2e_mkdtemp(dir);
    e2e_copy_fixture(dir, "rnvp", "rnvp.safetensors");
    struct e2e_daemon d;
    const char *args[] = {"--max-body", "1K", NULL};
    ck_assert(e2e_start(&d, dir, args));
    struct e2e_resp r;
    e2e_request(&d, "DELETE", "/v1/models/rnvp/forward", NULL, 0, NULL, &r);
    e2e_expect_error(&r, 405, "method_not_allowed", NULL);
    e2e_resp_free(&r);
    e2e_get(&d, "/v1/models/rnvp", &r);
    ck_assert_int_eq(r.status, 200);
    e2e_resp_free(&r);
    /* every kind of series exists before "before": 4 warm-up requests, two /metrics */
    unknown_model_requests(&d, 4, 1);
    for (int i = 0; i < 2; i++) {
        e2e_get(&d, "/metrics", &r);
        ck_assert_int_eq(r.status, 200);
        e2e_resp_free(&r);
    }
    e2e_get(&d, "/metrics", &r);
    size_t before = r.len;
    e2e_resp_free(&r);
    unknown_model_requests(&d, 2000, 2);
    /* a request is counted when its connection's answer has gone out: the last one may
     * not be yet when the client has it */
    double end = now_s() + 20;
    for (;;) {
        e2e_get(&d, "/metrics", &r);
        ck_assert_int_eq(r.status, 200);
        if (strstr(r.body, "status=\"415\"} 501\n") || now_s() > end)
            break;
        e2e_resp_free(&r);
        usleep(10000);
    }
    /* only the counters' digits grow (each name as a label would add ~70 bytes) */
    ck_assert_msg(r.len < before + 1000, "/metrics grew from %zu to %zu bytes", before, r.len);
    char *got = series(r.body, "innserve_requests_total");
    const char *want =
        "{model=\"\",operation=\"forward\",status=\"404\"} 501\n"
        "{model=\"\",operation=\"forward\",status=\"405\"} 501\n"
        "{model=\"\",operation=\"forward\",status=\"413\"} 501\n"
        "{model=\"\",operation=\"forward\",status=\"415\"} 501\n"
        "{model=\"rnvp\",operation=\"forward\",status=\"405\"} 1\n"
        "{model=\"rnvp\",operation=\"metadata\",status=\"200\"} 1\n";
    ck_assert_str_eq(got, want);
    free(got);
    e2e_resp_free(&r);
    ck_assert_int_eq(e2e_stop(&d, SIGTERM, 20), 0);
}
END_TEST

/* ---- what the repository shows ---------------------------------------------------------- */

/* SIGHUP and wait for the n-th "reloaded" log line. */
static void reload(struct e2e_daemon *d, int n)
{
    e2e_signal(d, SIGHUP);
    double end = now_s() + 20;
    while (e2e_log_count(d, "\"event\":\"reloaded\"") < n && now_s() < end)
        usleep(5000);
    ck_assert_msg(e2e_log_count(d, "\"event\":\"reloaded\"") >= n, "no reload happened");
}

static void expect_in(const char *body, const char *want)
{
    ck_assert_msg(strstr(body, want) != NULL, "missing %s in %s", want, body);
}

/* Reasons name files relative to the models directory; a symbolic link to a file that is
 * not a checkpoint shows none of that file's bytes (its first 8 bytes were once printed
 * as a "header length"). */
START_TEST(paths_are_relative_and_nothing_leaks)
{
    char dir[256], other[256], p[600], q[600];
    e2e_mkdtemp(dir);
    e2e_mkdtemp(other);
    /* a file outside the repository: 8 bytes that read as a number, then a secret */
    e2e_write_file(other, "secret.txt", "SECRET-PASSWORD-1234\n", 21);
    snprintf(p, sizeof p, "%s/secret.txt", other);
    snprintf(q, sizeof q, "%s/leak.safetensors", dir);
    ck_assert(symlink(p, q) == 0);
    /* header length 16, 2 bytes follow */
    e2e_write_file(dir, "short/2/model.safetensors", "\x10\0\0\0\0\0\0\0{}", 10);
    e2e_write_file(dir, "nov/1/README", "no model here\n", 14);
    e2e_copy_fixture(dir, "rnvp", "m/1/model.safetensors");

    struct e2e_daemon d;
    ck_assert(e2e_start(&d, dir, NULL));
    struct e2e_resp r;
    e2e_get(&d, "/v1/models", &r);
    ck_assert_int_eq(r.status, 200);
    expect_in(r.body, "{\"name\":\"leak\",\"version\":\"1\",\"kind\":null,\"dims\":null,"
              "\"state\":\"UNAVAILABLE\",\"reason\":\"leak.safetensors: header length (the "
              "first 8 bytes) is over the limit of 67108864 bytes: not a safetensors "
              "file?\"}");
    expect_in(r.body, "{\"name\":\"nov\",\"version\":\"\",\"kind\":null,\"dims\":null,"
              "\"state\":\"UNAVAILABLE\",\"reason\":\"no version directory with a model "
              "file (expected nov/<version>/model.safetensors)\"}");
    expect_in(r.body, "{\"name\":\"short\",\"version\":\"2\",\"kind\":null,\"dims\":null,"
              "\"state\":\"UNAVAILABLE\",\"reason\":\"short/2/model.safetensors: file is "
              "truncated: its header length is larger than the 2 bytes that follow\"}");
    /* "SECRET-P" as a little-endian u64, as the old message printed it */
    ck_assert(!strstr(r.body, "5777366553695831379") && !strstr(r.body, "SECRET"));
    ck_assert_msg(!strstr(r.body, dir), "%s", r.body);
    e2e_resp_free(&r);

    e2e_post(&d, "/v1/models/leak/forward", "{\"x\":[[1]]}", &r);
    ck_assert_int_eq(r.status, 503);
    ck_assert_str_eq(r.body, "{\"error\":\"model 'leak' is unavailable: leak.safetensors: "
                     "header length (the first 8 bytes) is over the limit of 67108864 bytes: "
                     "not a safetensors file?\",\"code\":\"model_unavailable\"}\n");
    e2e_resp_free(&r);

    /* a failed new version: the reload error names both files relative to the directory */
    e2e_write_file(dir, "m/2/model.safetensors", "0123456789abcdef", 16);
    reload(&d, 1);
    e2e_get(&d, "/v1/models", &r);
    expect_in(r.body, "\"state\":\"READY\",\"reload_error\":\"version 2 "
              "(m/2/model.safetensors) failed to load, still serving version 1: "
              "m/2/model.safetensors: header length (the first 8 bytes) is over the limit "
              "of 67108864 bytes: not a safetensors file?\"}");
    ck_assert_msg(!strstr(r.body, dir), "%s", r.body);
    e2e_resp_free(&r);
    e2e_get(&d, "/metrics", &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_msg(!strstr(r.body, dir) && !strstr(r.body, other) && !strstr(r.body, "SECRET"),
                  "%s", r.body);
    e2e_resp_free(&r);
    /* the operator's log keeps the full path */
    snprintf(p, sizeof p, "%s/leak.safetensors", dir);
    ck_assert_int_ge(e2e_log_count(&d, p), 1);
    ck_assert_int_eq(e2e_stop(&d, SIGTERM, 20), 0);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("security");
    TCase *t = tcase_create("metrics");
    tcase_set_timeout(t, 120);
    tcase_add_test(t, unknown_models_get_no_metric_labels);
    suite_add_tcase(s, t);
    t = tcase_create("repository");
    tcase_set_timeout(t, 60);
    tcase_add_test(t, paths_are_relative_and_nothing_leaks);
    suite_add_tcase(s, t);
    return s;
}

E2E_MAIN
