/*
 * e2eutil.c — daemon start/stop, HTTP with libcurl and JSON comparisons for the
 * end-to-end tests (e2eutil.h).
 */
#include "e2eutil.h"

#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int g_failures;

void e2e_note_failure(const char *what)
{
    fprintf(stderr, "E2E FAILURE: %s\n", what);
    g_failures++;
}

int e2e_failures(void)
{
    return g_failures;
}

void e2e_global_init(void)
{
    curl_global_init(CURL_GLOBAL_ALL);
    signal(SIGPIPE, SIG_IGN);
}

double e2e_now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

void e2e_mkdtemp(char *out)
{
    const char *t = getenv("TMPDIR");
    snprintf(out, 256, "%s/innserve-e2e-XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(out)) {
        perror("mkdtemp");
        abort();
    }
}

static const char *fixture_dir(void)
{
    const char *d = getenv("INNSERVE_FIXTURES");
    return d && *d ? d : "tests/fixtures/golden";
}

const char *e2e_fixture(const char *name, const char *ext, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/%s%s", fixture_dir(), name, ext ? ext : ".safetensors");
    return buf;
}

static void mkdirs(const char *path)
{
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = 0;
            mkdir(tmp, 0755);
            *p = '/';
        }
    }
}

void e2e_write_file(const char *dir, const char *rel, const void *data, size_t n)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    mkdirs(path);
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp%d", path, (int)getpid());
    /* write aside and rename, as a deployment would (and so the inode changes) */
    FILE *f = fopen(tmp, "wb");
    ck_assert_msg(f != NULL, "cannot write %s", tmp);
    ck_assert(fwrite(data, 1, n, f) == n);
    fclose(f);
    ck_assert_msg(rename(tmp, path) == 0, "rename %s: %s", path, strerror(errno));
}

void e2e_copy_fixture(const char *dir, const char *name, const char *rel)
{
    char src[512];
    size_t n;
    char *b = tu_slurp(e2e_fixture(name, NULL, src, sizeof src), &n);
    ck_assert_msg(b != NULL, "fixture %s is missing", src);
    e2e_write_file(dir, rel, b, n);
    free(b);
}

int e2e_cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

char **e2e_fixture_names(int *n)
{
    DIR *d = opendir(fixture_dir());
    int cap = 16, k = 0;
    char **v = calloc((size_t)cap + 1, sizeof *v);
    struct dirent *de;
    while (d && (de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (l > 12 && !strcmp(de->d_name + l - 12, ".expect.json")) {
            if (k == cap) {
                cap *= 2;
                v = realloc(v, sizeof *v * ((size_t)cap + 1));
            }
            v[k] = strndup(de->d_name, l - 12);
            k++;
        }
    }
    if (d)
        closedir(d);
    qsort(v, (size_t)k, sizeof *v, e2e_cmp_str);
    v[k] = NULL;
    *n = k;
    return v;
}

/* ---- daemon ------------------------------------------------------------------------------ */

static int parse_port(const char *log)
{
    const char *p = strstr(log, "\"event\":\"listening\"");
    if (!p)
        return 0;
    const char *q = strstr(p, "\"port\":");
    return q ? atoi(q + 7) : 0;
}

bool e2e_start(struct e2e_daemon *d, const char *dir, const char *const *args)
{
    return e2e_start_ex(d, dir, args, true);
}

static bool start(struct e2e_daemon *d, const char *dir, const char *const *args,
                  const char *const *env, bool wait_ready);

bool e2e_start_ex(struct e2e_daemon *d, const char *dir, const char *const *args,
                  bool wait_ready)
{
    return start(d, dir, args, NULL, wait_ready);
}

/* In a child: "NAME=value" sets NAME, "NAME" unsets it (env NULL-terminated, may be NULL). */
static void apply_env(const char *const *env)
{
    for (int i = 0; env && env[i]; i++) {
        const char *eq = strchr(env[i], '=');
        if (eq) {
            char name[128];
            snprintf(name, sizeof name, "%.*s", (int)(eq - env[i]), env[i]);
            setenv(name, eq + 1, 1);
        } else {
            unsetenv(env[i]);
        }
    }
}

int e2e_run(const char *const *argv, const char *const *env, char **out)
{
    int pipefd[2];
    ck_assert(pipe(pipefd) == 0);
    pid_t pid = fork();
    ck_assert(pid >= 0);
    if (pid == 0) {
        dup2(pipefd[1], 1);
        dup2(pipefd[1], 2);
        close(pipefd[0]);
        apply_env(env);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(pipefd[1]);
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    ck_assert_ptr_nonnull(b);
    ssize_t k;
    while ((k = read(pipefd[0], b + n, cap - n - 1)) > 0) {
        n += (size_t)k;
        if (n + 1 >= cap) {
            b = realloc(b, cap *= 2);
            ck_assert_ptr_nonnull(b);
        }
    }
    b[n] = 0;
    close(pipefd[0]);
    int st;
    waitpid(pid, &st, 0);
    *out = b;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

bool e2e_start_env(struct e2e_daemon *d, const char *dir, const char *const *args,
                   const char *const *env)
{
    return start(d, dir, args, env, true);
}

static bool start(struct e2e_daemon *d, const char *dir, const char *const *args,
                  const char *const *env, bool wait_ready)
{
    memset(d, 0, sizeof *d);
    snprintf(d->dir, sizeof d->dir, "%s", dir);
    snprintf(d->log, sizeof d->log, "%s.log", dir);
    const char *bin = getenv("INNSERVE_BIN");
    if (!bin || !*bin)
        bin = "build/innserve";
    const char *argv[64];
    int a = 0;
    argv[a++] = bin;
    argv[a++] = "--models";
    argv[a++] = dir;
    argv[a++] = "--host";
    argv[a++] = "127.0.0.1";
    argv[a++] = "--port";
    argv[a++] = "0";
    for (int i = 0; args && args[i] && a < 62; i++)
        argv[a++] = args[i];
    argv[a] = NULL;
    unlink(d->log); /* never read a previous daemon's "listening" line */
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return false;
    }
    if (pid == 0) {
        int fd = open(d->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            close(fd);
        }
        int nul = open("/dev/null", O_RDWR);
        if (nul >= 0) {
            dup2(nul, 0);
            dup2(nul, 1);
            close(nul);
        }
        apply_env(env);
        execv(bin, (char *const *)argv);
        fprintf(stderr, "exec %s: %s\n", bin, strerror(errno));
        _exit(127);
    }
    d->pid = pid;
    /* 20 s to come up, times CK_TIMEOUT_MULTIPLIER (Check's own scale for its test timeouts,
     * which make test-san sets: a sanitized daemon loads the demo i-ResNet image flow in
     * ~30 s) */
    const char *mul = getenv("CK_TIMEOUT_MULTIPLIER");
    double scale = mul ? atof(mul) : 1.0;
    double end = e2e_now_s() + 20.0 * (scale > 1.0 && scale <= 100.0 ? scale : 1.0);
    while (e2e_now_s() < end) {
        char *log = tu_slurp(d->log, NULL);
        if (log) {
            d->port = parse_port(log);
            free(log);
        }
        if (d->port)
            break;
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            d->pid = 0;
            break;
        }
        usleep(5000);
    }
    if (d->port && !wait_ready)
        return true;
    /* up: /readyz answers 200, or the first repository pass ended not ready (a repository
     * with no READY model, which some tests serve on purpose: "not_ready" in the log) */
    while (d->port && e2e_now_s() < end) {
        struct e2e_resp r;
        e2e_get(d, "/readyz", &r);
        long s = r.status;
        e2e_resp_free(&r);
        if (s == 200 || e2e_log_count(d, "\"event\":\"not_ready\"") > 0)
            return true;
        usleep(5000);
    }
    char *log = tu_slurp(d->log, NULL);
    fprintf(stderr, "innserve did not come up; its log:\n%s\n", log ? log : "(none)");
    free(log);
    if (d->pid)
        e2e_stop(d, SIGKILL, 5);
    return false;
}

int e2e_stop(struct e2e_daemon *d, int sig, double timeout_s)
{
    if (d->pid <= 0)
        return -1; /* never kill(0, ...) or kill(-1, ...) */
    kill(d->pid, sig);
    double end = e2e_now_s() + timeout_s;
    int st = 0;
    for (;;) {
        pid_t w = waitpid(d->pid, &st, WNOHANG);
        if (w == d->pid)
            break;
        if (e2e_now_s() > end) {
            kill(d->pid, SIGKILL);
            waitpid(d->pid, &st, 0);
            d->pid = 0;
            return -1;
        }
        usleep(2000);
    }
    d->pid = 0;
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    return 128 + WTERMSIG(st);
}

void e2e_signal(const struct e2e_daemon *d, int sig)
{
    ck_assert_msg(d->pid > 0, "no daemon to signal");
    kill(d->pid, sig);
}

void e2e_stop_checked(struct e2e_daemon *d, const char *name, double timeout_s)
{
    int st = e2e_stop(d, SIGTERM, timeout_s);
    if (st == 0)
        return;
    char msg[700];
    snprintf(msg, sizeof msg, "%s daemon exit status %d (log %s)", name, st, d->log);
    e2e_note_failure(msg);
    char *log = tu_slurp(d->log, NULL);
    if (log && strlen(log) > 4000)
        fprintf(stderr, "...%s\n", log + strlen(log) - 4000);
    else if (log)
        fprintf(stderr, "%s\n", log);
    free(log);
}

void e2e_reload(struct e2e_daemon *d, int n)
{
    static const char ev[] = "\"event\":\"reloaded\"";
    int before = e2e_log_count(d, ev);
    ck_assert_msg(before == n - 1, "reload %d asked for after %d reloads", n, before);
    e2e_signal(d, SIGHUP);
    double end = e2e_now_s() + E2E_RELOAD_TIMEOUT_S;
    while (e2e_log_count(d, ev) < n && e2e_now_s() < end)
        usleep(5000);
    int after = e2e_log_count(d, ev);
    ck_assert_msg(after == n, "reload %d: %d \"reloaded\" log lines after %d s (log %s)", n,
                  after, E2E_RELOAD_TIMEOUT_S, d->log);
}

int e2e_log_count(const struct e2e_daemon *d, const char *needle)
{
    char *log = tu_slurp(d->log, NULL);
    int n = 0;
    for (const char *p = log; p && (p = strstr(p, needle)); p++)
        n++;
    free(log);
    return n;
}

/* ---- HTTP --------------------------------------------------------------------------------- */

struct sink {
    char *p;
    size_t n;
};

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct sink *s = ud;
    size_t k = size * nmemb;
    char *q = realloc(s->p, s->n + k + 1);
    if (!q)
        return 0;
    memcpy(q + s->n, ptr, k);
    s->n += k;
    q[s->n] = 0;
    s->p = q;
    return k;
}

void e2e_request(const struct e2e_daemon *d, const char *method, const char *path,
                 const char *body, size_t body_len, const char *const *headers,
                 struct e2e_resp *out)
{
    memset(out, 0, sizeof *out);
    CURL *c = curl_easy_init();
    char url[512];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", d->port, path);
    struct sink b = {0}, h = {0};
    struct curl_slist *hl = NULL;
    bool ctype = false;
    for (int i = 0; headers && headers[i]; i++) {
        hl = curl_slist_append(hl, headers[i]);
        ctype |= strncasecmp(headers[i], "Content-Type:", 13) == 0;
    }
    if (body && !ctype)
        hl = curl_slist_append(hl, "Content-Type: application/json");
    hl = curl_slist_append(hl, "Expect:");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (!strcmp(method, "HEAD"))
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &h);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, (long)E2E_CLIENT_TIMEOUT_S);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    double t0 = e2e_now_s();
    CURLcode rc = curl_easy_perform(c);
    out->seconds = e2e_now_s() - t0;
    if (rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
    else
        out->status = -(long)rc;
    curl_slist_free_all(hl);
    curl_easy_cleanup(c);
    out->body = b.p ? b.p : strdup("");
    out->len = b.n;
    out->headers = h.p ? h.p : strdup("");
    out->json = cJSON_ParseWithLength(out->body, out->len);
}

void e2e_get(const struct e2e_daemon *d, const char *path, struct e2e_resp *out)
{
    e2e_request(d, "GET", path, NULL, 0, NULL, out);
}

void e2e_post(const struct e2e_daemon *d, const char *path, const char *body,
              struct e2e_resp *out)
{
    e2e_request(d, "POST", path, body, strlen(body), NULL, out);
}

void e2e_resp_free(struct e2e_resp *r)
{
    free(r->body);
    free(r->headers);
    cJSON_Delete(r->json);
    memset(r, 0, sizeof *r);
}

const char *e2e_header(const struct e2e_resp *r, const char *name, char *buf, size_t cap)
{
    size_t n = strlen(name);
    for (const char *p = r->headers; p && *p;) {
        const char *eol = strstr(p, "\r\n");
        size_t l = eol ? (size_t)(eol - p) : strlen(p);
        if (l > n && p[n] == ':' && !strncasecmp(p, name, n)) {
            const char *v = p + n + 1;
            while (*v == ' ')
                v++;
            size_t vl = l - (size_t)(v - p);
            snprintf(buf, cap, "%.*s", (int)vl, v);
            return buf;
        }
        p = eol ? eol + 2 : p + l;
    }
    return NULL;
}

void e2e_expect_error(const struct e2e_resp *r, long status, const char *code,
                      const char *needle)
{
    ck_assert_msg(r->status == status, "expected status %ld, got %ld: %s", status, r->status,
                  r->body);
    if (!code)
        return;
    ck_assert_msg(r->json != NULL, "error body is not JSON: %s", r->body);
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(r->json, "code");
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(r->json, "error");
    ck_assert_msg(cJSON_IsString(c) && !strcmp(c->valuestring, code),
                  "expected code %s: %s", code, r->body);
    ck_assert_msg(cJSON_IsString(e) && e->valuestring[0], "no error message: %s", r->body);
    if (needle)
        ck_assert_msg(strstr(e->valuestring, needle) != NULL, "error '%s' does not mention "
                      "'%s'", e->valuestring, needle);
}

static void close_rec(const cJSON *g, const cJSON *w, double rtol, double atol, const char *what,
                      char *path, size_t plen)
{
    if (cJSON_IsArray(w)) {
        ck_assert_msg(cJSON_IsArray(g), "%s%s: expected an array", what, path);
        int n = cJSON_GetArraySize(w);
        ck_assert_msg(cJSON_GetArraySize(g) == n, "%s%s: %d entries, expected %d", what, path,
                      cJSON_GetArraySize(g), n);
        const cJSON *a = g->child, *b = w->child;
        for (int i = 0; i < n; i++, a = a->next, b = b->next) {
            size_t l = strlen(path);
            snprintf(path + l, plen - l, "[%d]", i);
            close_rec(a, b, rtol, atol, what, path, plen);
            path[l] = 0;
        }
        return;
    }
    ck_assert_msg(cJSON_IsNumber(g) && cJSON_IsNumber(w), "%s%s: not numbers", what, path);
    double x = g->valuedouble, y = w->valuedouble;
    ck_assert_msg(fabs(x - y) <= atol + rtol * fabs(y), "%s%s = %.9g, expected %.9g", what,
                  path, x, y);
}

void e2e_expect_close(const cJSON *got, const cJSON *want, double rtol, double atol,
                      const char *what)
{
    char path[128] = "";
    close_rec(got, want, rtol, atol, what, path, sizeof path);
}

char *e2e_print(const cJSON *v)
{
    return cJSON_PrintUnformatted(v);
}

const cJSON *e2e_find_model(const cJSON *list, const char *name)
{
    const cJSON *m;
    cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(list, "models")) {
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(m, "name");
        if (cJSON_IsString(nm) && !strcmp(nm->valuestring, name))
            return m;
    }
    return NULL;
}
