/*
 * test_ui.c — the web page's files as the daemon serves them (GET /, /ui/app.js,
 * /ui/style.css): the bytes of ui/ exactly, their Content-Type, Content-Security-Policy,
 * Cache-Control and ETag (304 on If-None-Match, 200 on another tag), HEAD, 405 for POST;
 * served without the bearer token under --auth-token-file while the API still needs it.
 * The page's behaviour in a browser is tests/ui/test_ui.mjs.
 */
#include "e2eutil.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static struct e2e_daemon D;
static char g_dir[256];

static void setup(void)
{
    e2e_mkdtemp(g_dir);
    e2e_copy_fixture(g_dir, "rnvp", "rnvp.safetensors");
    ck_assert(e2e_start(&D, g_dir, NULL));
}

static void teardown(void)
{
    e2e_stop_checked(&D, "ui", 10);
}

static const struct {
    const char *path, *file, *ctype;
} FILES[] = {
    {"/", "ui/index.html", "text/html; charset=utf-8"},
    {"/ui/app.js", "ui/app.js", "text/javascript; charset=utf-8"},
    {"/ui/style.css", "ui/style.css", "text/css; charset=utf-8"},
};

static const char *const CSP =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

START_TEST(files_and_headers)
{
    for (size_t i = 0; i < sizeof FILES / sizeof FILES[0]; i++) {
        size_t n = 0;
        char *want = tu_slurp(FILES[i].file, &n);
        ck_assert_msg(want != NULL, "%s not found (run from the repository root)", FILES[i].file);
        struct e2e_resp r;
        e2e_get(&D, FILES[i].path, &r);
        ck_assert_msg(r.status == 200, "%s: %ld", FILES[i].path, r.status);
        ck_assert_msg(r.len == n && !memcmp(r.body, want, n), "%s is not %s byte for byte",
                      FILES[i].path, FILES[i].file);
        char h[512], etag[64];
        ck_assert_str_eq(e2e_header(&r, "Content-Type", h, sizeof h), FILES[i].ctype);
        ck_assert_str_eq(e2e_header(&r, "Content-Security-Policy", h, sizeof h), CSP);
        ck_assert_str_eq(e2e_header(&r, "Cache-Control", h, sizeof h), "no-cache");
        ck_assert_str_eq(e2e_header(&r, "X-Content-Type-Options", h, sizeof h), "nosniff");
        ck_assert_str_eq(e2e_header(&r, "X-Frame-Options", h, sizeof h), "DENY");
        ck_assert(e2e_header(&r, "ETag", etag, sizeof etag));
        ck_assert_msg(strlen(etag) == 18 && etag[0] == '"' && etag[17] == '"', "ETag %s", etag);
        e2e_resp_free(&r);

        /* the current tag: 304 without a body; another: the file again */
        char inm[100];
        snprintf(inm, sizeof inm, "If-None-Match: %s", etag);
        const char *hdr[] = {inm, NULL};
        e2e_request(&D, "GET", FILES[i].path, NULL, 0, hdr, &r);
        ck_assert_int_eq(r.status, 304);
        ck_assert_uint_eq(r.len, 0);
        ck_assert_str_eq(e2e_header(&r, "ETag", h, sizeof h), etag);
        e2e_resp_free(&r);
        const char *other[] = {"If-None-Match: \"0000000000000000\"", NULL};
        e2e_request(&D, "GET", FILES[i].path, NULL, 0, other, &r);
        ck_assert_int_eq(r.status, 200);
        ck_assert_uint_eq(r.len, n);
        e2e_resp_free(&r);

        e2e_request(&D, "HEAD", FILES[i].path, NULL, 0, NULL, &r);
        ck_assert_int_eq(r.status, 200);
        ck_assert_str_eq(e2e_header(&r, "Content-Type", h, sizeof h), FILES[i].ctype);
        e2e_resp_free(&r);

        e2e_post(&D, FILES[i].path, "{}", &r);
        e2e_expect_error(&r, 405, "method_not_allowed", NULL);
        e2e_resp_free(&r);
        free(want);
    }
    /* the page's script is referenced, no inline one */
    struct e2e_resp r;
    e2e_get(&D, "/", &r);
    ck_assert(strstr(r.body, "<script src=\"/ui/app.js\" defer></script>") != NULL);
    ck_assert(strstr(r.body, "href=\"/ui/style.css\"") != NULL);
    e2e_resp_free(&r);
    /* other paths under /ui/ are not served */
    e2e_get(&D, "/ui/other.js", &r);
    e2e_expect_error(&r, 404, "not_found", NULL);
    e2e_resp_free(&r);
    e2e_get(&D, "/index.html", &r);
    e2e_expect_error(&r, 404, "not_found", NULL);
    e2e_resp_free(&r);
}
END_TEST

/* --auth-token-file: the page's three files answer without the token; the API does not. */
START_TEST(open_under_token)
{
    char dir[256], sec[256], tok[300];
    e2e_mkdtemp(dir);
    e2e_mkdtemp(sec);
    e2e_copy_fixture(dir, "rnvp", "rnvp.safetensors");
    e2e_write_file(sec, "token", "ui-token\n", 9);
    snprintf(tok, sizeof tok, "%s/token", sec);
    ck_assert(chmod(tok, 0600) == 0);
    const char *args[] = {"--auth-token-file", tok, NULL};
    struct e2e_daemon d;
    ck_assert(e2e_start(&d, dir, args));
    struct e2e_resp r;
    for (size_t i = 0; i < sizeof FILES / sizeof FILES[0]; i++) {
        e2e_get(&d, FILES[i].path, &r);
        ck_assert_msg(r.status == 200, "%s under a token: %ld", FILES[i].path, r.status);
        e2e_resp_free(&r);
    }
    e2e_get(&d, "/v1/models", &r);
    ck_assert_int_eq(r.status, 401);
    e2e_resp_free(&r);
    e2e_get(&d, "/ui/other.js", &r);
    ck_assert_int_eq(r.status, 401); /* unknown paths still tell nothing without the token */
    e2e_resp_free(&r);
    const char *auth[] = {"Authorization: Bearer ui-token", NULL};
    e2e_request(&d, "GET", "/v1/models", NULL, 0, auth, &r);
    ck_assert_int_eq(r.status, 200);
    e2e_resp_free(&r);
    ck_assert_int_eq(e2e_stop(&d, SIGTERM, 10), 0);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("ui");
    TCase *t = tcase_create("files");
    tcase_add_unchecked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 60);
    tcase_add_test(t, files_and_headers);
    suite_add_tcase(s, t);
    TCase *a = tcase_create("auth");
    tcase_set_timeout(a, 60);
    tcase_add_test(a, open_under_token);
    suite_add_tcase(s, a);
    return s;
}

E2E_MAIN
