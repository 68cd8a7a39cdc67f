/*
 * test_security.c — what a client or a file must not be able to do to the daemon, and the
 * protections an operator turns on:
 *   - model names in URLs cannot grow /metrics (only models the repository knows get a
 *     model label; every other name counts under model="")
 *   - /v1/models, error answers and /metrics name files relative to the models directory
 *     and never show bytes of a file a symbolic link leads to
 *   - --auth-token-file: 401 without the right bearer token (probes open or protected),
 *     rotation on SIGHUP; --tls-cert/--tls-key: HTTPS only; innctl --token-file/--cacert
 */
#include "e2eutil.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- helpers --------------------------------------------------------------------------- */

static size_t discard(char *p, size_t s, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return s * n;
}

/* The label sets of every `metric{...}` line of a /metrics body but readyz's and
 * metrics', each
 * "{...} value", sorted, joined with '\n' (malloc'd). */
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
    qsort(lines, (size_t)n, sizeof *lines, e2e_cmp_str);
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
    double end = e2e_now_s() + 20;
    for (;;) {
        e2e_get(&d, "/metrics", &r);
        ck_assert_int_eq(r.status, 200);
        if (strstr(r.body, "status=\"415\"} 501\n") || e2e_now_s() > end)
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
    e2e_reload(&d, 1);
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

/* ---- bearer tokens and TLS -------------------------------------------------------------- */

/* Runs argv (NULL-terminated) without the client variables of this environment, then with
 * env applied; *out gets stdout and stderr together.  Returns the exit status. */
static int run(const char *const *argv, const char *const *env, char **out)
{
    const char *all[16] = {"INNSERVE_TOKEN_FILE", "INNSERVE_CACERT", "INNSERVE_URL"};
    size_t n = 3;
    for (int i = 0; env && env[i]; i++) {
        ck_assert_uint_lt(n, sizeof all / sizeof all[0] - 1);
        all[n++] = env[i];
    }
    all[n] = NULL;
    return e2e_run(argv, all, out);
}

static const char *innserve_bin(void)
{
    const char *b = getenv("INNSERVE_BIN");
    return b && *b ? b : "build/innserve";
}

static const char *innctl_bin(void)
{
    const char *b = getenv("INNCTL_BIN");
    return b && *b ? b : "build/innctl";
}

/* One request to url.  token: sent as "Authorization: <auth>" when not NULL; cacert:
 * CURLOPT_CAINFO when not NULL; body: POSTed as JSON when not NULL.  out->status is the
 * HTTP status, or -CURLcode when no answer came. */
static void call(const char *url, const char *auth, const char *cacert, const char *body,
                 struct e2e_resp *out)
{
    memset(out, 0, sizeof *out);
    CURL *c = curl_easy_init();
    struct curl_slist *hl = curl_slist_append(NULL, "Expect:");
    char h[5000];
    if (auth) {
        snprintf(h, sizeof h, "Authorization: %s", auth);
        hl = curl_slist_append(hl, h);
    }
    if (body) {
        hl = curl_slist_append(hl, "Content-Type: application/json");
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    }
    FILE *bf = open_memstream(&out->body, &out->len);
    size_t hlen;
    FILE *hf = open_memstream(&out->headers, &hlen);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, bf);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, hf);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    if (cacert)
        curl_easy_setopt(c, CURLOPT_CAINFO, cacert);
    CURLcode rc = curl_easy_perform(c);
    if (rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
    else
        out->status = -(long)rc;
    curl_slist_free_all(hl);
    curl_easy_cleanup(c);
    fclose(bf);
    fclose(hf);
    out->json = cJSON_ParseWithLength(out->body, out->len);
}

static void url_of(char *out, size_t cap, const char *scheme, const char *host, int port,
                   const char *path)
{
    snprintf(out, cap, "%s://%s:%d%s", scheme, host, port, path);
}

/* Polls url (with auth and cacert) until it answers 200, for up to 20 s. */
static void wait_200(const char *url, const char *auth, const char *cacert)
{
    double end = e2e_now_s() + 20;
    struct e2e_resp r;
    for (;;) {
        call(url, auth, cacert, NULL, &r);
        long st = r.status;
        e2e_resp_free(&r);
        if (st == 200)
            return;
        ck_assert_msg(e2e_now_s() < end, "%s never answered 200 (last: %ld)", url, st);
        usleep(10000);
    }
}

static void write_token(const char *dir, const char *token, mode_t mode)
{
    e2e_write_file(dir, "token", token, strlen(token));
    char p[400];
    snprintf(p, sizeof p, "%s/token", dir);
    ck_assert(chmod(p, mode) == 0);
}

static const char *const MISSING_BODY =
    "{\"error\":\"this server requires a bearer token: send the header 'Authorization: "
    "Bearer <token>'\",\"code\":\"unauthorized\"}\n";
static const char *const INVALID_BODY =
    "{\"error\":\"the bearer token is not valid (send 'Authorization: Bearer <token>' with "
    "the server's current token)\",\"code\":\"unauthorized\"}\n";

static void expect_401(const struct e2e_resp *r, bool missing)
{
    ck_assert_msg(r->status == 401, "status %ld: %s", r->status, r->body);
    ck_assert_str_eq(r->body, missing ? MISSING_BODY : INVALID_BODY);
    char h[200];
    ck_assert(e2e_header(r, "WWW-Authenticate", h, sizeof h));
    ck_assert_str_eq(h, missing ? "Bearer realm=\"innserve\""
                                : "Bearer realm=\"innserve\", error=\"invalid_token\"");
    /* answered before the body is read: the connection cannot be used again */
    ck_assert(e2e_header(r, "Connection", h, sizeof h));
    ck_assert_str_eq(h, "close");
}

/* No token, a wrong one, another scheme: 401 with WWW-Authenticate and the documented
 * body; the right one: 200.  The health probes answer without it, /metrics does not.  A
 * rewritten token file takes effect on SIGHUP (the old token then fails); an empty one is
 * refused and the token in force stays. */
START_TEST(bearer_token)
{
    char dir[256], sec[256], tok[300], u[512];
    e2e_mkdtemp(dir);
    e2e_mkdtemp(sec);
    e2e_copy_fixture(dir, "rnvp", "rnvp.safetensors");
    write_token(sec, "tok-one\n", 0600);
    snprintf(tok, sizeof tok, "%s/token", sec);
    struct e2e_daemon d;
    const char *args[] = {"--auth-token-file", tok, NULL};
    ck_assert(e2e_start(&d, dir, args)); /* waits on /readyz: open without the token */
    struct e2e_resp r;
    url_of(u, sizeof u, "http", "127.0.0.1", d.port, "/v1/models");
    call(u, NULL, NULL, NULL, &r);
    expect_401(&r, true);
    e2e_resp_free(&r);
    call(u, "Bearer tok-two", NULL, NULL, &r);
    expect_401(&r, false);
    e2e_resp_free(&r);
    call(u, "Bearer tok-one-and-more", NULL, NULL, &r);
    expect_401(&r, false);
    e2e_resp_free(&r);
    call(u, "Basic dG9rLW9uZQ==", NULL, NULL, &r);
    expect_401(&r, false);
    e2e_resp_free(&r);
    call(u, "Bearer tok-one", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert(strstr(r.body, "\"name\":\"rnvp\""));
    e2e_resp_free(&r);
    call(u, "bearer   tok-one", NULL, NULL, &r); /* the scheme is case-insensitive */
    ck_assert_int_eq(r.status, 200);
    e2e_resp_free(&r);
    /* a model operation: refused before its body is read, answered with the token */
    url_of(u, sizeof u, "http", "127.0.0.1", d.port, "/v1/models/rnvp/forward");
    call(u, NULL, NULL, "{\"x\":[[1,2,3,4,5]]}", &r);
    expect_401(&r, true);
    e2e_resp_free(&r);
    call(u, "Bearer tok-one", NULL, "{\"x\":[[1,2,3,4,5]]}", &r);
    ck_assert_msg(r.status == 200, "%s", r.body);
    e2e_resp_free(&r);
    /* an unknown path says nothing about the routes to a client without the token */
    url_of(u, sizeof u, "http", "127.0.0.1", d.port, "/nope");
    call(u, NULL, NULL, NULL, &r);
    expect_401(&r, true);
    e2e_resp_free(&r);
    /* probes are open, /metrics is not */
    static const char *const probes[] = {"/healthz", "/readyz", "/v2/health/live",
                                         "/v2/health/ready", NULL};
    for (int i = 0; probes[i]; i++) {
        url_of(u, sizeof u, "http", "127.0.0.1", d.port, probes[i]);
        call(u, NULL, NULL, NULL, &r);
        ck_assert_msg(r.status == 200, "%s: %ld", probes[i], r.status);
        e2e_resp_free(&r);
    }
    url_of(u, sizeof u, "http", "127.0.0.1", d.port, "/metrics");
    call(u, NULL, NULL, NULL, &r);
    expect_401(&r, true);
    e2e_resp_free(&r);
    call(u, "Bearer tok-one", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert(strstr(r.body, "status=\"401\"} "));
    e2e_resp_free(&r);
    ck_assert_int_eq(e2e_log_count(&d, "auth_token_file_readable"), 0);

    /* rotation: the new token works after SIGHUP, the old one no longer does */
    write_token(sec, "tok-two\r\n", 0600);
    e2e_reload(&d, 1);
    ck_assert_int_eq(e2e_log_count(&d, "\"event\":\"auth_token_reloaded\""), 1);
    url_of(u, sizeof u, "http", "127.0.0.1", d.port, "/v1/models");
    call(u, "Bearer tok-two", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    e2e_resp_free(&r);
    call(u, "Bearer tok-one", NULL, NULL, &r);
    expect_401(&r, false);
    e2e_resp_free(&r);
    /* an empty file is refused: the token in force stays */
    write_token(sec, "\n", 0600);
    e2e_reload(&d, 2);
    ck_assert_int_eq(e2e_log_count(&d, "\"event\":\"auth_token_reload_failed\""), 1);
    ck_assert_int_eq(e2e_log_count(&d, "the file is empty"), 1);
    call(u, "Bearer tok-two", NULL, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    e2e_resp_free(&r);
    /* the token never reaches the log */
    ck_assert_int_eq(e2e_log_count(&d, "tok-one"), 0);
    ck_assert_int_eq(e2e_log_count(&d, "tok-two"), 0);
    ck_assert_int_eq(e2e_stop(&d, SIGTERM, 20), 0);
}
END_TEST

/* --auth-probes protected: the probes need the token too.  A token file every user can
 * read is served with a warning. */
START_TEST(protected_probes)
{
    char dir[256], sec[256], tok[300], u[512];
    e2e_mkdtemp(dir);
    e2e_mkdtemp(sec);
    e2e_copy_fixture(dir, "rnvp", "rnvp.safetensors");
    write_token(sec, "probe-token", 0644);
    snprintf(tok, sizeof tok, "%s/token", sec);
    struct e2e_daemon d;
    const char *args[] = {"--auth-token-file", tok, "--auth-probes", "protected", NULL};
    ck_assert(e2e_start_ex(&d, dir, args, false));
    url_of(u, sizeof u, "http", "127.0.0.1", d.port, "/readyz");
    wait_200(u, "Bearer probe-token", NULL);
    static const char *const probes[] = {"/healthz", "/readyz", "/v2/health/live",
                                         "/v2/health/ready", NULL};
    struct e2e_resp r;
    for (int i = 0; probes[i]; i++) {
        url_of(u, sizeof u, "http", "127.0.0.1", d.port, probes[i]);
        call(u, NULL, NULL, NULL, &r);
        expect_401(&r, true);
        e2e_resp_free(&r);
        call(u, "Bearer probe-token", NULL, NULL, &r);
        ck_assert_msg(r.status == 200, "%s: %ld", probes[i], r.status);
        e2e_resp_free(&r);
    }
    ck_assert_int_eq(e2e_log_count(&d, "\"event\":\"auth_token_file_readable\""), 1);
    ck_assert_int_eq(e2e_stop(&d, SIGTERM, 20), 0);
}
END_TEST

/* Start-up refuses a missing or empty token file, a token with a space, a bad
 * --auth-probes, naming the file or flag; --help documents the options. */
START_TEST(auth_config_errors)
{
    char dir[256], sec[256], tok[300];
    e2e_mkdtemp(dir);
    e2e_mkdtemp(sec);
    snprintf(tok, sizeof tok, "%s/token", sec);
    char *out;
    const char *argv[] = {innserve_bin(), "--models", dir, "--port", "0",
                          "--auth-token-file", tok, NULL};
    ck_assert_int_eq(run(argv, NULL, &out), 1);
    ck_assert_msg(strstr(out, "cannot open: No such file or directory") && strstr(out, tok),
                  "%s", out);
    free(out);
    write_token(sec, "\r\n", 0600);
    ck_assert_int_eq(run(argv, NULL, &out), 1);
    ck_assert_msg(strstr(out, "the file is empty; it must hold the token on one line"), "%s",
                  out);
    free(out);
    write_token(sec, "two words\n", 0600);
    ck_assert_int_eq(run(argv, NULL, &out), 1);
    ck_assert_msg(strstr(out, "byte 4 of the token is a space"), "%s", out);
    free(out);
    const char *help[] = {innserve_bin(), "--help", NULL};
    ck_assert_int_eq(run(help, NULL, &out), 0);
    static const char *const flags[] = {"--auth-token-file FILE", "--auth-probes MODE",
                                        "--tls-cert FILE", "--tls-key FILE",
                                        "INNSERVE_AUTH_TOKEN_FILE", "INNSERVE_AUTH_PROBES",
                                        "INNSERVE_TLS_CERT", "INNSERVE_TLS_KEY",
                                        "re-reads --auth-token-file", NULL};
    for (int i = 0; flags[i]; i++)
        ck_assert_msg(strstr(out, flags[i]), "--help does not mention %s", flags[i]);
    free(out);
    const char *bad[] = {innserve_bin(), "--models", dir, "--auth-probes", "closed", NULL};
    ck_assert_int_eq(run(bad, NULL, &out), 2);
    ck_assert_msg(strstr(out, "--auth-probes: 'closed' is not open or protected"), "%s", out);
    free(out);
}
END_TEST

/* Generates a self-signed certificate for localhost/127.0.0.1 into dir. */
static void make_cert(const char *dir)
{
    char *out;
    const char *argv[] = {"/bin/sh", "tests/e2e/make-cert.sh", dir, NULL};
    int st = run(argv, NULL, &out);
    ck_assert_msg(st == 0, "tests/e2e/make-cert.sh failed (%d): %s", st, out);
    free(out);
}

/* HTTPS with a bearer token: a real handshake verified against the test's CA, no answer
 * over plain HTTP on the same port (and the daemon keeps serving), curl refusing an
 * unknown CA, a silent connection cut at --header-timeout with nothing written to it;
 * innctl with --cacert and --token-file (or INNSERVE_TOKEN_FILE). */
START_TEST(tls_with_token)
{
    char dir[256], sec[256], tok[300], cert[300], key[300], u[512];
    e2e_mkdtemp(dir);
    e2e_mkdtemp(sec);
    e2e_copy_fixture(dir, "rnvp", "rnvp.safetensors");
    make_cert(sec);
    write_token(sec, "tls-token\n", 0600);
    snprintf(tok, sizeof tok, "%s/token", sec);
    snprintf(cert, sizeof cert, "%s/cert.pem", sec);
    snprintf(key, sizeof key, "%s/key.pem", sec);
    struct e2e_daemon d;
    const char *args[] = {"--tls-cert", cert, "--tls-key", key, "--auth-token-file", tok,
                          "--header-timeout", "1", NULL};
    ck_assert(e2e_start_ex(&d, dir, args, false));
    ck_assert_int_eq(e2e_log_count(&d, "\"tls\":true"), 1);
    url_of(u, sizeof u, "https", "localhost", d.port, "/readyz");
    wait_200(u, NULL, cert);
    struct e2e_resp r;
    url_of(u, sizeof u, "https", "localhost", d.port, "/v1/models/rnvp/forward");
    call(u, "Bearer tls-token", cert, "{\"x\":[[1,2,3,4,5]]}", &r);
    ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
    ck_assert(strstr(r.body, "\"model\":\"rnvp\""));
    e2e_resp_free(&r);
    call(u, NULL, cert, "{\"x\":[[1,2,3,4,5]]}", &r);
    expect_401(&r, true);
    e2e_resp_free(&r);
    /* by IP address too (the certificate names 127.0.0.1) */
    url_of(u, sizeof u, "https", "127.0.0.1", d.port, "/healthz");
    call(u, NULL, cert, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    e2e_resp_free(&r);
    /* a client that does not trust the certificate gets no answer */
    call(u, NULL, NULL, NULL, &r);
    ck_assert_msg(r.status == -(long)CURLE_PEER_FAILED_VERIFICATION, "%ld", r.status);
    e2e_resp_free(&r);
    /* plain HTTP to the TLS port: no HTTP answer, the connection just closes */
    url_of(u, sizeof u, "http", "127.0.0.1", d.port, "/healthz");
    call(u, NULL, NULL, NULL, &r);
    ck_assert_msg(r.status == -(long)CURLE_GOT_NOTHING || r.status == -(long)CURLE_RECV_ERROR,
                  "plain HTTP to the TLS port: %ld %s", r.status, r.body);
    e2e_resp_free(&r);
    url_of(u, sizeof u, "https", "localhost", d.port, "/healthz");
    call(u, NULL, cert, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    e2e_resp_free(&r);

    /* a connection that never starts its handshake is cut at --header-timeout without the
     * plain-HTTP 408 (it would be garbage inside TLS): nothing is written to it */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)d.port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert(fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char buf[64];
    ssize_t got = recv(fd, buf, sizeof buf, 0);
    close(fd);
    ck_assert_msg(got == 0, "the cut TLS connection got %zd bytes (or timed out)", got);

    /* innctl */
    char base[128], *out;
    snprintf(base, sizeof base, "https://localhost:%d", d.port);
    const char *ok[] = {innctl_bin(), "--url", base, "--cacert", cert, "--token-file", tok,
                        "models", NULL};
    ck_assert_int_eq(run(ok, NULL, &out), 0);
    ck_assert_msg(strstr(out, "rnvp") && strstr(out, "READY"), "%s", out);
    free(out);
    char envtok[400], envca[400];
    snprintf(envtok, sizeof envtok, "INNSERVE_TOKEN_FILE=%s", tok);
    snprintf(envca, sizeof envca, "INNSERVE_CACERT=%s", cert);
    const char *env[] = {envtok, envca, NULL};
    const char *byenv[] = {innctl_bin(), "--url", base, "info", "rnvp", "--json", NULL};
    ck_assert_int_eq(run(byenv, env, &out), 0);
    ck_assert_msg(strstr(out, "\"sha256\":") && strstr(out, "\"rnvp\""), "%s", out);
    free(out);
    const char *notok[] = {innctl_bin(), "--url", base, "--cacert", cert, "models", NULL};
    ck_assert_int_eq(run(notok, NULL, &out), 2);
    ck_assert_msg(strstr(out, "innctl: HTTP 401 unauthorized: this server requires a bearer "
                          "token"), "%s", out);
    free(out);
    const char *noca[] = {innctl_bin(), "--url", base, "--token-file", tok, "models", NULL};
    ck_assert_int_eq(run(noca, NULL, &out), 3);
    ck_assert_msg(strstr(out, "cannot reach the daemon"), "%s", out);
    free(out);
    char missing[400];
    snprintf(missing, sizeof missing, "%s/none", sec);
    const char *badtok[] = {innctl_bin(), "--url", base, "--token-file", missing, "models",
                            NULL};
    ck_assert_int_eq(run(badtok, NULL, &out), 1);
    ck_assert_msg(strstr(out, "--token-file") && strstr(out, "cannot open"), "%s", out);
    free(out);
    ck_assert_int_eq(e2e_stop(&d, SIGTERM, 20), 0);
}
END_TEST

/* Start-up refuses a certificate without its key, a key given as the certificate, a key
 * that does not belong to the certificate, an unreadable file, with what is wrong. */
START_TEST(tls_config_errors)
{
    char dir[256], a[256], b[256], cert[300], key[300], key2[300], none[300];
    e2e_mkdtemp(dir);
    e2e_mkdtemp(a);
    e2e_mkdtemp(b);
    make_cert(a);
    make_cert(b);
    snprintf(cert, sizeof cert, "%s/cert.pem", a);
    snprintf(key, sizeof key, "%s/key.pem", a);
    snprintf(key2, sizeof key2, "%s/key.pem", b);
    snprintf(none, sizeof none, "%s/none.pem", a);
    char *out;
    const char *only[] = {innserve_bin(), "--models", dir, "--port", "0", "--tls-cert", cert,
                          NULL};
    ck_assert_int_eq(run(only, NULL, &out), 2);
    ck_assert_msg(strstr(out, "--tls-cert is given without --tls-key"), "%s", out);
    free(out);
    const char *swapped[] = {innserve_bin(), "--models", dir, "--port", "0", "--tls-cert", key,
                             "--tls-key", key, NULL};
    ck_assert_int_eq(run(swapped, NULL, &out), 1);
    ck_assert_msg(strstr(out, "no '-----BEGIN CERTIFICATE-----' block: not a PEM certificate"),
                  "%s", out);
    free(out);
    const char *mismatch[] = {innserve_bin(), "--models", dir, "--port", "0", "--tls-cert",
                              cert, "--tls-key", key2, NULL};
    ck_assert_int_eq(run(mismatch, NULL, &out), 1);
    ck_assert_msg(strstr(out, "cannot start HTTPS") && strstr(out, "do not match"), "%s", out);
    free(out);
    const char *missing[] = {innserve_bin(), "--models", dir, "--port", "0", "--tls-cert",
                             cert, "--tls-key", none, NULL};
    ck_assert_int_eq(run(missing, NULL, &out), 1);
    ck_assert_msg(strstr(out, "--tls-key") && strstr(out, "cannot open: No such file"), "%s",
                  out);
    free(out);
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
    t = tcase_create("auth");
    tcase_set_timeout(t, 60);
    tcase_add_test(t, bearer_token);
    tcase_add_test(t, protected_probes);
    tcase_add_test(t, auth_config_errors);
    suite_add_tcase(s, t);
    t = tcase_create("tls");
    tcase_set_timeout(t, 60);
    tcase_add_test(t, tls_with_token);
    tcase_add_test(t, tls_config_errors);
    suite_add_tcase(s, t);
    return s;
}

E2E_MAIN
