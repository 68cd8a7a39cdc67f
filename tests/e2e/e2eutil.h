/*
 * e2eutil.h — helpers for the end-to-end tests: start the real innserve binary
 * ($INNSERVE_BIN, default build/innserve) on an ephemeral loopback port with a temporary
 * model directory built from tests/fixtures/golden, talk to it with libcurl, parse answers
 * with cJSON, and compare numbers with fixture expectations.
 *
 * Each tests/e2e/test_*.c is its own Check runner ending with E2E_MAIN; daemons started by
 * unchecked fixtures are stopped in their teardown, and a daemon that does not exit 0 on
 * SIGTERM (crash, sanitizer report, leak) fails the run.
 */
#ifndef INNSERVE_E2EUTIL_H
#define INNSERVE_E2EUTIL_H

#include <check.h>

#include "../unit/testutil.h" /* tu_slurp and the other shared test helpers */
#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* How long a request may take before the client gives up (seconds).  Sanitizer builds run
 * the engine 10-20x slower, and the largest requests of the suites (1000 i-ResNet samples,
 * each a fixed-point solve) take about 1.5 s in a release build, so those builds wait longer. */
#if defined(__SANITIZE_ADDRESS__)
#define E2E_CLIENT_TIMEOUT_S 300
#else
#define E2E_CLIENT_TIMEOUT_S 60
#endif
/* How long e2e_reload waits for the daemon's "reloaded" log line (seconds). */
#define E2E_RELOAD_TIMEOUT_S 20
#define E2E_STR_(x) #x
#define E2E_STR(x) E2E_STR_(x)

struct e2e_daemon {
    pid_t pid;
    int port;
    char dir[256];   /* models directory */
    char log[300];   /* stderr of the daemon */
};

/* A fresh temporary directory (mkdtemp under $TMPDIR or /tmp); static storage per call
 * is not shared: the path is copied into out (>= 256 bytes). */
void e2e_mkdtemp(char *out);
/* Path of tests/fixtures/golden/NAME.safetensors (or .expect.json with ext). */
const char *e2e_fixture(const char *name, const char *ext, char *buf, size_t cap);
/* Copies fixture NAME into dir/rel (creating parent directories). */
void e2e_copy_fixture(const char *dir, const char *name, const char *rel);
/* Writes bytes to dir/rel (creating parents). */
void e2e_write_file(const char *dir, const char *rel, const void *data, size_t n);
/* Seconds on CLOCK_MONOTONIC (for deadlines and durations; the origin means nothing). */
double e2e_now_s(void);
/* qsort comparator for an array of char * (strcmp order). */
int e2e_cmp_str(const void *a, const void *b);
/* Every golden fixture name (from index.json or the directory), NULL-terminated array. */
char **e2e_fixture_names(int *n);

/* Starts innserve --models dir --host 127.0.0.1 --port 0 [args...] (NULL-terminated),
 * reads the port from the "listening" log line and waits until /readyz is 200 or the
 * first repository pass has ended not ready (a "not_ready" log line: no model READY).
 * Returns false (with the log printed) when it does not come up in 20 s. */
bool e2e_start(struct e2e_daemon *d, const char *dir, const char *const *args);
/* Same, but returns as soon as the port is known (wait_ready false), before the models
 * are loaded. */
bool e2e_start_ex(struct e2e_daemon *d, const char *dir, const char *const *args,
                  bool wait_ready);
/* e2e_start with the daemon's environment changed: env is NULL-terminated, "NAME=value"
 * sets NAME and "NAME" unsets it, in the daemon only (this process keeps its own). */
bool e2e_start_env(struct e2e_daemon *d, const char *dir, const char *const *args,
                   const char *const *env);
/* Runs argv (NULL-terminated, argv[0] a path) to its end with env applied as e2e_start_env
 * does (NULL: unchanged); *out (malloc'd, the caller frees) gets stdout and stderr together.
 * Returns the exit status, 128 + signal when killed. */
int e2e_run(const char *const *argv, const char *const *env, char **out);
/* Sends sig and waits up to timeout_s; returns the exit status (0..255), 128+signal when
 * killed, -1 when it did not exit (it is then killed). */
int e2e_stop(struct e2e_daemon *d, int sig, double timeout_s);
/* Sends sig to the daemon (ck_assert that it has a pid: never kill(0) or kill(-1)). */
void e2e_signal(const struct e2e_daemon *d, int sig);
/* For fixture teardowns: e2e_stop(d, SIGTERM, timeout_s); an exit status other than 0
 * (crash, sanitizer report, leak, no exit in time) is recorded with e2e_note_failure as
 * "NAME daemon exit status S (log PATH)" and the last 4000 bytes of the log go to stderr.
 * Does not ck_assert (teardowns run outside a test). */
void e2e_stop_checked(struct e2e_daemon *d, const char *name, double timeout_s);
/* SIGHUP reload number n (1 for the first since e2e_start): ck_asserts that the log holds
 * n - 1 "reloaded" lines before (the daemon reloads only on SIGHUP, so a wrong n fails
 * instead of returning at once), sends SIGHUP, waits up to E2E_RELOAD_TIMEOUT_S for line n
 * (the repository pass is over then: its models are swapped or marked unavailable) and
 * ck_asserts that there are exactly n. */
void e2e_reload(struct e2e_daemon *d, int n);
/* Counts lines of the daemon's log containing needle. */
int e2e_log_count(const struct e2e_daemon *d, const char *needle);
/* Global: daemons stopped in fixtures that failed to exit 0 (E2E_MAIN fails on it). */
void e2e_note_failure(const char *what);
int e2e_failures(void);

struct e2e_resp {
    long status;
    char *body;
    size_t len;
    char *headers;   /* raw header block */
    cJSON *json;     /* parsed body or NULL */
    double seconds;
};

/* Any method; body may be NULL; headers NULL-terminated "Name: value" strings or NULL.
 * Content-Type: application/json is added to bodies unless a Content-Type is given. */
void e2e_request(const struct e2e_daemon *d, const char *method, const char *path,
                 const char *body, size_t body_len, const char *const *headers,
                 struct e2e_resp *out);
void e2e_get(const struct e2e_daemon *d, const char *path, struct e2e_resp *out);
void e2e_post(const struct e2e_daemon *d, const char *path, const char *body,
              struct e2e_resp *out);
void e2e_resp_free(struct e2e_resp *r);
/* Header value (case-insensitive name) copied into buf; NULL when absent. */
const char *e2e_header(const struct e2e_resp *r, const char *name, char *buf, size_t cap);

/* ck_assert that r has this status and, when code != NULL, {"code": code} and an
 * "error" string containing `needle` (may be NULL). */
void e2e_expect_error(const struct e2e_resp *r, long status, const char *code,
                      const char *needle);

/* Element-wise comparison of nested JSON arrays of numbers: |a-b| <= atol + rtol*|b|. */
void e2e_expect_close(const cJSON *got, const cJSON *want, double rtol, double atol,
                      const char *what);
/* cJSON item printed unformatted (malloc'd). */
char *e2e_print(const cJSON *v);
/* The member of list's "models" array (a /v1/models answer) whose "name" is name; NULL
 * when there is none. Points into list. */
const cJSON *e2e_find_model(const cJSON *list, const char *name);

#define E2E_MAIN                                                            \
    int main(void)                                                          \
    {                                                                       \
        e2e_global_init();                                                  \
        SRunner *sr = srunner_create(make_suite());                         \
        srunner_run_all(sr, CK_NORMAL);                                     \
        int nf = srunner_ntests_failed(sr);                                 \
        srunner_free(sr);                                                   \
        return nf == 0 && e2e_failures() == 0 ? 0 : 1;                      \
    }

void e2e_global_init(void);
Suite *make_suite(void);

#endif
