/*
 * test_lifecycle.c — the daemon's life: the repository (every broken checkpoint of the
 * corpus reported and skipped), SIGHUP reloads (a corrupted replacement keeps the old
 * version serving, a good one switches version and sha256, in-flight requests finish on
 * the version they started with), SIGTERM drains (readyz 503, new work 503 + Retry-After,
 * in-flight requests finish, exit 0; past --drain-timeout they are cancelled), slow
 * bodies are cut by --conn-timeout, configuration by INNSERVE_* variables, --help and
 * --check.
 */
#include "ckptw.h"
#include "e2eutil.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

static const cJSON *get(const cJSON *o, const char *k)
{
    return cJSON_GetObjectItemCaseSensitive(o, k);
}

static char *sha_of(struct e2e_daemon *d, const char *model, char *ver, size_t cap)
{
    char path[256];
    snprintf(path, sizeof path, "/v1/models/%s", model);
    struct e2e_resp r;
    e2e_get(d, path, &r);
    ck_assert_msg(r.status == 200, "%s: %s", path, r.body);
    char *s = strdup(get(r.json, "sha256")->valuestring);
    if (ver)
        snprintf(ver, cap, "%s", get(r.json, "version")->valuestring);
    e2e_resp_free(&r);
    return s;
}

/* Dangling symlinks, symlink loops and FIFOs named *.safetensors are models that fail to
 * load, listed UNAVAILABLE with the reason; a FIFO does not block the daemon. */
START_TEST(links_and_fifos_are_reported)
{
    char dir[256], p[400];
    e2e_mkdtemp(dir);
    e2e_copy_fixture(dir, "rnvp", "good.safetensors");
    snprintf(p, sizeof p, "%s/ghost.safetensors", dir);
    ck_assert_int_eq(symlink("/nonexistent/model.safetensors", p), 0);
    snprintf(p, sizeof p, "%s/loop.safetensors", dir);
    ck_assert_int_eq(symlink("loop.safetensors", p), 0);
    snprintf(p, sizeof p, "%s/pipe.safetensors", dir);
    ck_assert_int_eq(mkfifo(p, 0600), 0);
    struct e2e_daemon d;
    ck_assert(e2e_start(&d, dir, NULL));
    struct e2e_resp r;
    e2e_get(&d, "/v1/models", &r);
    ck_assert_int_eq(r.status, 200);
    static const char *const want[][2] = {{"ghost", "No such file or directory"},
                                          {"loop", "Too many levels of symbolic links"},
                                          {"pipe", "not a regular file"}};
    int seen = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, get(r.json, "models")) {
        const char *name = get(m, "name")->valuestring;
        if (!strcmp(name, "good")) {
            ck_assert_str_eq(get(m, "state")->valuestring, "READY");
            continue;
        }
        for (int i = 0; i < 3; i++)
            if (!strcmp(name, want[i][0])) {
                ck_assert_str_eq(get(m, "state")->valuestring, "UNAVAILABLE");
                ck_assert_msg(strstr(get(m, "reason")->valuestring, want[i][1]) != NULL,
                              "%s: reason '%s' lacks '%s'", name, get(m, "reason")->valuestring,
                              want[i][1]);
                seen++;
            }
    }
    ck_assert_int_eq(seen, 3);
    e2e_resp_free(&r);
    ck_assert_int_eq(e2e_stop(&d, SIGTERM, 30), 0);
}
END_TEST

START_TEST(corrupt_corpus_is_reported_and_skipped)
{
    char dir[256];
    e2e_mkdtemp(dir);
    const char *cdir = "tests/fixtures/corrupt";
    DIR *dd = opendir(cdir);
    ck_assert(dd != NULL);
    struct dirent *de;
    int n = 0;
    while ((de = readdir(dd))) {
        size_t l = strlen(de->d_name);
        if (l < 13 || strcmp(de->d_name + l - 12, ".safetensors"))
            continue;
        char src[600];
        snprintf(src, sizeof src, "%s/%s", cdir, de->d_name);
        size_t len;
        char *b = tu_slurp(src, &len);
        e2e_write_file(dir, de->d_name, b ? b : "", b ? len : 0);
        free(b);
        n++;
    }
    closedir(dd);
    ck_assert(n > 20);
    e2e_copy_fixture(dir, "rnvp", "good.safetensors");
    struct e2e_daemon d;
    ck_assert(e2e_start(&d, dir, NULL));
    struct e2e_resp r;
    e2e_get(&d, "/v1/models", &r);
    ck_assert_int_eq(r.status, 200);
    const cJSON *m;
    int unavailable = 0;
    cJSON_ArrayForEach(m, get(r.json, "models")) {
        const char *name = get(m, "name")->valuestring;
        const char *state = get(m, "state")->valuestring;
        if (!strcmp(name, "good") || !strcmp(name, "valid_base")) {
            ck_assert_str_eq(state, "READY");
            continue;
        }
        ck_assert_msg(!strcmp(state, "UNAVAILABLE"), "%s is %s", name, state);
        /* the reason holds the engine's message, which names what is wrong */
        char exp[600];
        snprintf(exp, sizeof exp, "%s/%s.expect", cdir, name);
        char *want = tu_slurp(exp, NULL);
        if (want) {
            size_t l = strlen(want);
            while (l && (want[l - 1] == '\n' || want[l - 1] == '\r'))
                want[--l] = 0;
            ck_assert_msg(strstr(get(m, "reason")->valuestring, want) != NULL,
                          "%s: reason '%s' lacks '%s'", name, get(m, "reason")->valuestring,
                          want);
            free(want);
        }
        unavailable++;
    }
    ck_assert_int_ge(unavailable, n - 1);
    e2e_resp_free(&r);
    e2e_post(&d, "/v1/models/good/forward", "{\"x\":[[1,2,3,4,5]]}", &r);
    ck_assert_int_eq(r.status, 200);
    e2e_resp_free(&r);
    e2e_post(&d, "/v1/models/empty/forward", "{\"x\":[[1,2,3]]}", &r);
    e2e_expect_error(&r, 503, "model_unavailable", "truncated");
    e2e_resp_free(&r);
    ck_assert_int_eq(e2e_stop(&d, SIGTERM, 30), 0);
}
END_TEST

START_TEST(not_ready_while_loading)
{
    char dir[256];
    e2e_mkdtemp(dir);
    /* 40 copies of a reference-size cINN (2.4 MB each, self-tested at load) */
    char one[300];
    snprintf(one, sizeof one, "%s.ref", dir);
    ckw_reference_cinn(one, 16, 8, 256, 8, 5);
    size_t len;
    char *m = tu_slurp(one, &len);
    ck_assert(m != NULL);
    unlink(one);
    for (int i = 0; i < 40; i++) {
        char rel[64];
        snprintf(rel, sizeof rel, "m%02d.safetensors", i);
        e2e_write_file(dir, rel, m, len);
    }
    free(m);
    struct e2e_daemon d;
    ck_assert(e2e_start_ex(&d, dir, NULL, false));
    /* the port is open before the models are loaded: live, not ready, models LOADING */
    struct e2e_resp r;
    e2e_get(&d, "/readyz", &r);
    long first = r.status;
    e2e_resp_free(&r);
    e2e_get(&d, "/healthz", &r);
    ck_assert_int_eq(r.status, 200);
    e2e_resp_free(&r);
    bool saw_loading = false;
    e2e_get(&d, "/v1/models", &r);
    const cJSON *e;
    cJSON_ArrayForEach(e, get(r.json, "models"))
        saw_loading |= !strcmp(get(e, "state")->valuestring, "LOADING");
    e2e_resp_free(&r);
    if (first == 503 || saw_loading) {
        e2e_post(&d, "/v1/models/m39/forward", "{\"x\":[[0]]}", &r);
        ck_assert(r.status == 503 || r.status == 400 || r.status == 200);
        e2e_resp_free(&r);
    } else {
        fprintf(stderr, "NOTE: the repository loaded before the first probe\n");
    }
    ck_assert(first == 503 || first == 200);
    double end = e2e_now_s() + 60;
    long s = 0;
    while (e2e_now_s() < end) {
        e2e_get(&d, "/readyz", &r);
        s = r.status;
        e2e_resp_free(&r);
        if (s == 200)
            break;
        usleep(5000);
    }
    ck_assert_int_eq(s, 200);
    e2e_get(&d, "/v1/models", &r);
    cJSON_ArrayForEach(e, get(r.json, "models"))
        ck_assert_str_eq(get(e, "state")->valuestring, "READY");
    ck_assert_int_eq(cJSON_GetArraySize(get(r.json, "models")), 40);
    e2e_resp_free(&r);
    /* signals that arrive while the main thread is busy (here: a reload of 40 models) are
     * not lost and do not kill the process, whichever thread the kernel hands them to */
    e2e_signal(&d, SIGHUP);
    usleep(2000);
    e2e_signal(&d, SIGHUP);
    usleep(2000);
    ck_assert_int_eq(e2e_stop(&d, SIGTERM, 60), 0);
    ck_assert_int_eq(e2e_log_count(&d, "\"event\":\"exit\""), 1);
    /* and a SIGTERM during the first load */
    ck_assert(e2e_start_ex(&d, dir, NULL, false));
    ck_assert_int_eq(e2e_stop(&d, SIGTERM, 60), 0);
}
END_TEST

struct bg {
    struct e2e_daemon *d;
    const char *path, *body;
    struct e2e_resp r;
};

static void *bg_main(void *arg)
{
    struct bg *b = arg;
    e2e_post(b->d, b->path, b->body, &b->r);
    return NULL;
}

START_TEST(sighup_reload)
{
    char dir[256];
    e2e_mkdtemp(dir);
    e2e_copy_fixture(dir, "rnvp", "m.safetensors");
    e2e_copy_fixture(dir, "glow_cond", "v/1/model.safetensors");
    struct e2e_daemon d;
    static const char *const args[] = {"--workers", "1", NULL};
    ck_assert(e2e_start(&d, dir, args));
    char ver[32];
    char *sha_a = sha_of(&d, "m", ver, sizeof ver);
    ck_assert_str_eq(ver, "1");

    /* a corrupted replacement: the old version keeps serving, the list says why */
    char src[512];
    size_t len;
    char *good = tu_slurp(e2e_fixture("nice", NULL, src, sizeof src), &len);
    ck_assert(good != NULL);
    e2e_write_file(dir, "m.safetensors", good, len / 2);
    e2e_reload(&d, 1);
    char *sha = sha_of(&d, "m", NULL, 0);
    ck_assert_str_eq(sha, sha_a);
    free(sha);
    struct e2e_resp r;
    e2e_post(&d, "/v1/models/m/forward", "{\"x\":[[1,2,3,4,5]]}", &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(get(r.json, "sha256")->valuestring, sha_a);
    e2e_resp_free(&r);
    e2e_get(&d, "/v1/models", &r);
    const cJSON *m = e2e_find_model(r.json, "m");
    ck_assert_str_eq(get(m, "state")->valuestring, "READY");
    ck_assert_msg(cJSON_IsString(get(m, "reload_error")) &&
                      strstr(get(m, "reload_error")->valuestring, "still serving"),
                  "no reload_error: %s", r.body);
    e2e_resp_free(&r);
    ck_assert(e2e_log_count(&d, "model_reload_failed") >= 1);

    /* a good replacement switches; a request in flight finishes on the old version */
    struct bg b = {&d, "/v1/models/m/sample",
                   "{\"num_samples\":600000,\"seed\":3,\"outputs\":[\"log_prob\"]}", {0}};
    pthread_t th;
    pthread_create(&th, NULL, bg_main, &b);
    usleep(30000);
    e2e_write_file(dir, "m.safetensors", good, len);
    e2e_reload(&d, 2);
    pthread_join(th, NULL);
    ck_assert_msg(b.r.status == 200, "%ld %s", b.r.status, b.r.body);
    ck_assert_str_eq(get(b.r.json, "sha256")->valuestring, sha_a);
    e2e_resp_free(&b.r);
    char *sha_b = sha_of(&d, "m", NULL, 0);
    ck_assert_str_ne(sha_b, sha_a);
    e2e_post(&d, "/v1/models/m/forward", "{\"x\":[[1,2,3,4,5]]}", &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(get(r.json, "sha256")->valuestring, sha_b);
    e2e_resp_free(&r);
    e2e_get(&d, "/v1/models", &r);
    ck_assert(get(e2e_find_model(r.json, "m"), "reload_error") == NULL);
    e2e_resp_free(&r);

    /* a new version directory is served; a broken newer one is not */
    e2e_copy_fixture(dir, "glow_sigmoid", "v/2/model.safetensors");
    e2e_reload(&d, 3);
    char *sha_v = sha_of(&d, "v", ver, sizeof ver);
    ck_assert_str_eq(ver, "2");
    e2e_write_file(dir, "v/10/model.safetensors", "garbage", 7);
    e2e_reload(&d, 4);
    char *sha_v2 = sha_of(&d, "v", ver, sizeof ver);
    ck_assert_str_eq(ver, "2");
    ck_assert_str_eq(sha_v, sha_v2);
    /* a model whose file disappears is gone */
    char p[300];
    snprintf(p, sizeof p, "%s/m.safetensors", dir);
    unlink(p);
    e2e_reload(&d, 5);
    e2e_get(&d, "/v1/models/m", &r);
    e2e_expect_error(&r, 404, "model_not_found", NULL);
    e2e_resp_free(&r);
    e2e_get(&d, "/metrics", &r);
    ck_assert(strstr(r.body, "innserve_reloads_total{result=\"ok\"}") != NULL);
    e2e_resp_free(&r);
    free(sha_v);
    free(sha_v2);
    free(sha_a);
    free(sha_b);
    free(good);
    ck_assert_int_eq(e2e_stop(&d, SIGTERM, 30), 0);
}
END_TEST

START_TEST(sigterm_drains)
{
    char dir[256];
    e2e_mkdtemp(dir);
    e2e_copy_fixture(dir, "glow_cond", "g.safetensors");
    struct e2e_daemon d;
    static const char *const args[] = {"--workers", "1", "--retry-after", "3", NULL};
    ck_assert(e2e_start(&d, dir, args));
    struct bg b = {&d, "/v1/models/g/sample",
                   "{\"y\":[[1,2,3]],\"num_samples\":800000,\"seed\":3,"
                   "\"outputs\":[\"log_prob\"]}", {0}};
    pthread_t th;
    pthread_create(&th, NULL, bg_main, &b);
    /* wait until the request is being computed */
    double end = e2e_now_s() + 10;
    for (;;) {
        struct e2e_resp m;
        e2e_get(&d, "/metrics", &m);
        bool busy = strstr(m.body, "innserve_jobs_active 1") != NULL;
        e2e_resp_free(&m);
        if (busy || e2e_now_s() > end)
            break;
        usleep(2000);
    }
    e2e_signal(&d, SIGTERM);
    end = e2e_now_s() + 10;
    struct e2e_resp r;
    for (;;) {
        e2e_get(&d, "/readyz", &r);
        long s = r.status;
        if (s == 503 || e2e_now_s() > end)
            break;
        e2e_resp_free(&r);
        usleep(1000);
    }
    e2e_expect_error(&r, 503, "draining", NULL);
    e2e_resp_free(&r);
    e2e_post(&d, "/v1/models/g/forward", "{\"x\":[[1,2,3,4,5,6]],\"y\":[[1,2,3]]}", &r);
    e2e_expect_error(&r, 503, "draining", NULL);
    char h[16];
    ck_assert_str_eq(e2e_header(&r, "Retry-After", h, sizeof h), "3");
    e2e_resp_free(&r);
    e2e_get(&d, "/healthz", &r);
    ck_assert_int_eq(r.status, 200);
    e2e_resp_free(&r);
    pthread_join(th, NULL);
    ck_assert_msg(b.r.status == 200, "in-flight request: %ld %s", b.r.status, b.r.body);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetArrayItem(get(b.r.json, "log_prob"), 0)),
                     800000);
    e2e_resp_free(&b.r);
    int st = e2e_stop(&d, 0, 30); /* signal 0: just wait */
    ck_assert_msg(st == 0, "exit status %d", st);
    ck_assert(e2e_log_count(&d, "\"event\":\"exit\"") == 1);
}
END_TEST

START_TEST(drain_timeout_cancels)
{
    char dir[256];
    e2e_mkdtemp(dir);
    e2e_copy_fixture(dir, "cinn_condnet", "c.safetensors");
    struct e2e_daemon d;
    static const char *const args[] = {"--workers", "1", "--drain-timeout", "100ms", NULL};
    ck_assert(e2e_start(&d, dir, args));
    struct bg b = {&d, "/v1/models/c/sample",
                   "{\"y\":[[1,2,3],[3,2,1],[0,0,0],[1,1,1]],\"num_samples\":250000,\"seed\":3,"
                   "\"outputs\":[\"log_prob\"]}", {0}};
    pthread_t th;
    pthread_create(&th, NULL, bg_main, &b);
    usleep(50000);
    double t0 = e2e_now_s();
    e2e_signal(&d, SIGTERM);
    pthread_join(th, NULL);
    if (b.r.status != 200) /* finished in time on a fast machine: nothing to cancel */
        e2e_expect_error(&b.r, 503, "draining", "shutting down");
    e2e_resp_free(&b.r);
    int st = e2e_stop(&d, 0, 30);
    ck_assert_int_eq(st, 0);
    ck_assert_msg(e2e_now_s() - t0 < 10, "drain took %.1f s", e2e_now_s() - t0);
}
END_TEST

START_TEST(slow_body_is_cut)
{
    char dir[256];
    e2e_mkdtemp(dir);
    e2e_copy_fixture(dir, "rnvp", "m.safetensors");
    struct e2e_daemon d;
    static const char *const args[] = {"--conn-timeout", "1", NULL};
    ck_assert(e2e_start(&d, dir, args));
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)d.port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert(connect(fd, (struct sockaddr *)&a, sizeof a) == 0);
    const char *req = "POST /v1/models/m/forward HTTP/1.1\r\nHost: x\r\nContent-Type: "
                      "application/json\r\nContent-Length: 100\r\n\r\n{\"x\":";
    ck_assert(write(fd, req, strlen(req)) == (ssize_t)strlen(req));
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    double t0 = e2e_now_s();
    char buf[256];
    ssize_t n = read(fd, buf, sizeof buf);
    double dt = e2e_now_s() - t0;
    ck_assert_msg(n <= 0, "expected the connection closed, got %zd bytes", n);
    ck_assert_msg(dt >= 0.5 && dt < 4.5, "closed after %.2f s", dt);
    close(fd);
    /* garbage on the wire does not hurt either */
    fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert(connect(fd, (struct sockaddr *)&a, sizeof a) == 0);
    const char *junk = "\x01\x02 NOT HTTP \xff\xfe\r\n\r\n";
    ck_assert(write(fd, junk, strlen(junk)) > 0);
    n = read(fd, buf, sizeof buf);
    close(fd);
    struct e2e_resp r;
    e2e_get(&d, "/healthz", &r);
    ck_assert_int_eq(r.status, 200);
    e2e_resp_free(&r);
    e2e_post(&d, "/v1/models/m/forward", "{\"x\":[[1,2,3,4,5]]}", &r);
    ck_assert_int_eq(r.status, 200);
    e2e_resp_free(&r);
    ck_assert_int_eq(e2e_stop(&d, SIGTERM, 30), 0);
}
END_TEST

START_TEST(environment_configures)
{
    char dir[256];
    e2e_mkdtemp(dir);
    e2e_copy_fixture(dir, "rnvp", "m.safetensors");
    struct e2e_daemon d;
    setenv("INNSERVE_MAX_BODY", "64", 1);
    setenv("INNSERVE_MAX_SAMPLES", "10", 1);
    setenv("INNSERVE_ACCESS_LOG", "off", 1);
    bool up = e2e_start(&d, dir, NULL);
    unsetenv("INNSERVE_MAX_BODY");
    unsetenv("INNSERVE_MAX_SAMPLES");
    unsetenv("INNSERVE_ACCESS_LOG");
    ck_assert(up);
    struct e2e_resp r;
    e2e_post(&d, "/v1/models/m/forward", "{\"x\":[[1,2,3,4,5]],          \"y\":null,          "
             "\"z\":1                  }", &r);
    e2e_expect_error(&r, 413, "body_too_large", "64");
    e2e_resp_free(&r);
    e2e_post(&d, "/v1/models/m/sample", "{\"num_samples\":11}", &r);
    e2e_expect_error(&r, 413, "too_large", "10");
    e2e_resp_free(&r);
    ck_assert_int_eq(e2e_log_count(&d, "\"event\":\"access\""), 0);
    ck_assert_int_eq(e2e_stop(&d, SIGINT, 30), 0);
}
END_TEST

/* The description of option `flag` in --help text, its wrapped lines joined by single
 * spaces (without the "env" line); "" when the option is not there. */
static void help_entry(const char *help, const char *flag, char *out, size_t cap)
{
    out[0] = 0;
    char key[64];
    snprintf(key, sizeof key, "\n  %s ", flag);
    const char *p = strstr(help, key);
    if (!p)
        return;
    p += 1; /* the line; its description starts at column 29 */
    if (strlen(p) < 29 || strchr(p, '\n') < p + 29)
        return;
    p += 29;
    size_t n = 0;
    for (;;) {
        while (*p == ' ')
            p++;
        const char *e = strchr(p, '\n');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (n && n + 1 < cap)
            out[n++] = ' ';
        for (size_t i = 0; i < len && n + 1 < cap; i++)
            out[n++] = p[i];
        out[n] = 0;
        if (!e)
            return;
        p = e + 1;
        /* a continuation line: 29 spaces then text that is not the env line */
        if (strncmp(p, "                             ", 29) != 0 || p[29] == ' ')
            return;
    }
}

START_TEST(help_and_check)
{
    const char *bin = getenv("INNSERVE_BIN") ? getenv("INNSERVE_BIN") : "build/innserve";
    char *out;
    const char *help[] = {bin, "--help", NULL};
    ck_assert_int_eq(e2e_run(help, NULL, &out), 0);
    static const char *const flags[] = {"--models", "--host", "--port", "--workers", "--queue",
                                        "--deadline-ms", "--max-body", "--max-samples",
                                        "--max-response", "--drain-timeout", "--log-level",
                                        "--conn-timeout", "--max-depth", "--max-elements",
                                        "INNSERVE_MODELS", "INNSERVE_MAX_BODY", "--check",
                                        "SIGHUP", NULL};
    for (int i = 0; flags[i]; i++)
        ck_assert_msg(strstr(out, flags[i]) != NULL, "--help does not mention %s", flags[i]);
    /* no line wider than 79 columns (UTF-8 continuation bytes take no column) */
    int col = 0, line = 1;
    for (const char *c = out; *c; c++) {
        if (*c == '\n') {
            col = 0;
            line++;
            continue;
        }
        if (((unsigned char)*c & 0xC0) != 0x80)
            col++;
        ck_assert_msg(col <= 79, "--help line %d is wider than 79 columns", line);
    }
    /* each option once, its default once */
    ck_assert_msg(strstr(out, "[on] [on]") == NULL, "--help repeats a default: %s", out);
    ck_assert_msg(strstr(out, "\n  --access-log on|off        one JSON line per request on "
                              "stderr [on]\n                               env "
                              "INNSERVE_ACCESS_LOG\n") != NULL, "--access-log entry: %s", out);
    ck_assert_msg(strstr(out, "\n  --allow-empty              an empty model repository is") !=
                  NULL, "--allow-empty takes no value: %s", out);
    /* long descriptions are wrapped whole, never cut: the joined lines are the sentence */
    static const char *const whole[][2] = {
        {"--drain-timeout", "SIGTERM/SIGINT: how long in-flight requests may take to finish "
                            "before they are cancelled (seconds, or 500ms) [30]"},
        {"--max-response", "bytes of one answer; larger ones are refused with 413 (ask for "
                           "fewer samples or application/x-npy) [64M]"},
        {"--kernels", "compute kernels: auto (the best this CPU runs), avx512, avx2 or "
                      "portable; every path gives the same bits [auto]"},
        {"--models", "model repository: NAME.safetensors or NAME/<version>/model.safetensors "
                     "(highest version served) [models]"},
        {"--allow-empty", "an empty model repository is intended: /readyz answers 200 with no "
                          "models (without it, not ready until a model is READY) [off]"},
        {"--inline-rows", "forward/log_prob requests with at most this many rows run on the "
                          "HTTP thread, skipping the queue; 0 turns it off [0]"},
        {"--access-log", "one JSON line per request on stderr [on]"},
        {"--check", "load one checkpoint offline, print its certificate and test-vector "
                    "verdict as JSON, exit 0 (ok) or 1"},
    };
    for (size_t i = 0; i < sizeof whole / sizeof whole[0]; i++) {
        char got[1024];
        help_entry(out, whole[i][0], got, sizeof got);
        ck_assert_msg(!strcmp(got, whole[i][1]), "%s in --help:\n got  '%s'\n want '%s'",
                      whole[i][0], got, whole[i][1]);
    }
    free(out);
    const char *bad[] = {bin, "--no-such-flag", NULL};
    ck_assert_int_eq(e2e_run(bad, NULL, &out), 2);
    ck_assert(strstr(out, "no-such-flag") != NULL);
    free(out);
    const char *badv[] = {bin, "--port", "99999", NULL};
    ck_assert_int_eq(e2e_run(badv, NULL, &out), 2);
    free(out);
    char p[512];
    const char *chk[] = {bin, "--check", e2e_fixture("inn_standardized", NULL, p, sizeof p), NULL};
    ck_assert_int_eq(e2e_run(chk, NULL, &out), 0);
    cJSON *j = cJSON_Parse(out);
    ck_assert_msg(j != NULL, "--check output is not JSON: %s", out);
    ck_assert(cJSON_IsTrue(get(j, "ok")));
    ck_assert_str_eq(get(j, "test_vectors")->valuestring, "pass");
    ck_assert(cJSON_IsTrue(get(get(j, "certificate"), "invertible")));
    ck_assert_str_eq(get(get(j, "model"), "kind")->valuestring, "inn");
    ck_assert_msg(get(get(j, "model"), "load_ms")->valuedouble > 0.0, "--check: load_ms %s",
                  out); /* the time the load took, as the daemon reports it */
    cJSON_Delete(j);
    free(out);
    const char *chk2[] = {bin, "--check", "tests/fixtures/corrupt/test_vector_mismatch.safetensors",
                          NULL};
    ck_assert_int_eq(e2e_run(chk2, NULL, &out), 1);
    j = cJSON_Parse(out);
    ck_assert(j != NULL);
    ck_assert(cJSON_IsFalse(get(j, "ok")));
    ck_assert_str_eq(get(j, "test_vectors")->valuestring, "fail");
    ck_assert(strstr(get(j, "error")->valuestring, "test vector") != NULL);
    cJSON_Delete(j);
    free(out);
    const char *chk3[] = {bin, "--check", "/nonexistent.safetensors", NULL};
    ck_assert_int_eq(e2e_run(chk3, NULL, &out), 1);
    free(out);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("lifecycle");
    TCase *t = tcase_create("lifecycle");
    tcase_set_timeout(t, 120);
    tcase_add_test(t, corrupt_corpus_is_reported_and_skipped);
    tcase_add_test(t, links_and_fifos_are_reported);
    tcase_add_test(t, not_ready_while_loading);
    tcase_add_test(t, sighup_reload);
    tcase_add_test(t, sigterm_drains);
    tcase_add_test(t, drain_timeout_cancels);
    tcase_add_test(t, slow_body_is_cut);
    tcase_add_test(t, environment_configures);
    tcase_add_test(t, help_and_check);
    suite_add_tcase(s, t);
    return s;
}

E2E_MAIN
