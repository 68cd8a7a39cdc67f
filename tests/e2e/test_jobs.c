/*
 * test_jobs.c — end-to-end tests of jobs (async requests) against the real daemon:
 * "async": true and Prefer: respond-async answer 202 with Location; polling reaches
 * "done" and the result is byte for byte the synchronous answer (JSON, CSV, NPY, and
 * errors); progress grows to its total; DELETE stops a long job at once and frees the
 * worker; a job runs behind synchronous requests; the limits (--max-jobs with Retry-After,
 * --job-ttl expiry, --max-job-bytes, --job-timeout, not --deadline-ms); unknown and bad
 * ids, methods; metrics; the shutdown cancels and logs unfinished jobs; the bearer token.
 */
#include "ckptw.h"
#include "e2eutil.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Sanitizer builds run the engine 10-20x slower: time bounds scale with it (this runner
 * built with ASan, or a daemon built with TSan: make test-tsan sets INNSERVE_BIN). */
static int slowdown(void)
{
#if defined(__SANITIZE_ADDRESS__)
    return 10;
#else
    const char *bin = getenv("INNSERVE_BIN");
    return bin && strstr(bin, "tsan") ? 10 : 1;
#endif
}
#define SLOWDOWN slowdown()

/* What "promptly" means for the bounds below: the job's remaining work is more than 40 s of
 * one worker (a unit of 1024 samples is about 0.8 s), so a request that waited for it would
 * take longer than this, while one served between units or after a cancel takes about a
 * unit's time.  Generous, because the machine running the tests may be busy. */
#define BUSY_BOUND_S 20.0

static const cJSON *get(const cJSON *o, const char *k)
{
    return cJSON_GetObjectItemCaseSensitive(o, k);
}

static const char *str(const cJSON *o, const char *k)
{
    const cJSON *v = get(o, k);
    ck_assert_msg(cJSON_IsString(v), "field %s is not a string", k);
    return v->valuestring;
}

static void models(char *dir)
{
    e2e_mkdtemp(dir);
    e2e_copy_fixture(dir, "glow_cond", "glow_cond.safetensors");
    e2e_copy_fixture(dir, "rnvp", "rnvp.safetensors");
}

/* A directory with the fast models and `slow`: an i-ResNet flow inverted to tol 1e-12
 * (about 0.2 s per 256-sample tile, as in test_concurrency.c). */
static void slow_models(char *dir)
{
    models(dir);
    char path[320];
    snprintf(path, sizeof path, "%s/slow.safetensors", dir);
    ckw_iresnet_flow(path, 16, 64, 0.99, 7);
}

static const char SLOW_X[] = "{\"x\":[[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]]}";

/* Submits body to path with headers (NULL-terminated extra headers, or NULL); checks the
 * 202 answer and copies the job id into id (33 bytes). */
static void submit(const struct e2e_daemon *d, const char *path, const char *body,
                   const char *const *headers, char *id)
{
    struct e2e_resp r;
    e2e_request(d, "POST", path, body, strlen(body), headers, &r);
    ck_assert_msg(r.status == 202, "POST %s: %ld %s", path, r.status, r.body);
    ck_assert(r.json);
    const char *jid = str(r.json, "id");
    ck_assert_uint_eq(strlen(jid), 32);
    ck_assert_uint_eq(strspn(jid, "0123456789abcdef"), 32);
    snprintf(id, 33, "%s", jid);
    char h[128], want[128];
    snprintf(want, sizeof want, "/v1/jobs/%s", id);
    ck_assert_str_eq(e2e_header(&r, "Location", h, sizeof h), want);
    ck_assert_str_eq(str(r.json, "url"), want);
    ck_assert_str_eq(str(r.json, "state"), "queued");
    e2e_resp_free(&r);
}

/* Polls GET /v1/jobs/ID until its state is not queued/running (at most timeout_s); the last
 * answer stays in *r. */
static void wait_job(const struct e2e_daemon *d, const char *id, double timeout_s,
                     struct e2e_resp *r)
{
    char path[96];
    snprintf(path, sizeof path, "/v1/jobs/%s", id);
    double end = e2e_now_s() + timeout_s;
    for (;;) {
        e2e_get(d, path, r);
        ck_assert_msg(r->status == 200, "GET %s: %ld %s", path, r->status, r->body);
        const char *st = str(r->json, "state");
        if (strcmp(st, "queued") && strcmp(st, "running"))
            return;
        ck_assert_msg(e2e_now_s() < end, "job %s still %s after %.0f s", id, st, timeout_s);
        e2e_resp_free(r);
        usleep(10000);
    }
}

static void result_of(const struct e2e_daemon *d, const char *id, struct e2e_resp *r)
{
    char path[96];
    snprintf(path, sizeof path, "/v1/jobs/%s/result", id);
    e2e_get(d, path, r);
}

/* The job's result equals the synchronous answer: status, Content-Type, bytes. */
static void expect_same(const struct e2e_resp *sync, const struct e2e_resp *res)
{
    ck_assert_int_eq(res->status, sync->status);
    char a[128], b[128];
    ck_assert_str_eq(e2e_header(res, "Content-Type", a, sizeof a),
                     e2e_header(sync, "Content-Type", b, sizeof b));
    ck_assert_uint_eq(res->len, sync->len);
    ck_assert_msg(memcmp(res->body, sync->body, sync->len) == 0, "result bytes differ");
}

START_TEST(async_sample_json_matches_sync)
{
    char dir[256];
    models(dir);
    struct e2e_daemon d;
    ck_assert(e2e_start(&d, dir, NULL));
    static const char body[] = "{\"y\":[[0.5,-1,0.25],[1,2,3]],\"num_samples\":700,\"seed\":9,"
                               "\"outputs\":[\"samples\",\"log_prob\",\"summary\"]}";
    static const char abody[] = "{\"y\":[[0.5,-1,0.25],[1,2,3]],\"num_samples\":700,\"seed\":9,"
                                "\"outputs\":[\"samples\",\"log_prob\",\"summary\"],"
                                "\"async\":true}";
    struct e2e_resp sync, job, res;
    e2e_post(&d, "/v1/models/glow_cond/sample", body, &sync);
    ck_assert_int_eq(sync.status, 200);
    char id[33];
    submit(&d, "/v1/models/glow_cond/sample", abody, NULL, id);
    wait_job(&d, id, 60, &job);
    const cJSON *j = job.json;
    ck_assert_str_eq(str(j, "state"), "done");
    ck_assert_str_eq(str(j, "id"), id);
    ck_assert_str_eq(str(j, "operation"), "sample");
    ck_assert_str_eq(str(j, "model"), "glow_cond");
    ck_assert_str_eq(str(j, "version"), str(sync.json, "version"));
    ck_assert_str_eq(str(j, "sha256"), str(sync.json, "sha256"));
    const cJSON *p = get(j, "progress");
    ck_assert_int_eq((long)get(p, "done")->valuedouble, 1400);
    ck_assert_int_eq((long)get(p, "total")->valuedouble, 1400);
    ck_assert_str_eq(str(p, "unit"), "samples");
    ck_assert(cJSON_IsNumber(get(p, "rate")));
    ck_assert_int_eq((int)get(p, "eta_s")->valuedouble, 0);
    ck_assert_uint_eq(strlen(str(j, "created")), 24); /* 2026-01-02T03:04:05.678Z */
    ck_assert(str(j, "created")[23] == 'Z');
    ck_assert(cJSON_IsString(get(j, "started")) && cJSON_IsString(get(j, "finished")));
    char want[96];
    snprintf(want, sizeof want, "/v1/jobs/%s/result", id);
    ck_assert_str_eq(str(j, "result_url"), want);
    ck_assert(get(j, "error") == NULL);
    /* "result" is the synchronous answer */
    char *a = e2e_print(get(j, "result")), *b = e2e_print(sync.json);
    ck_assert_str_eq(a, b);
    free(a);
    free(b);
    result_of(&d, id, &res);
    expect_same(&sync, &res);
    char h[64];
    ck_assert_str_eq(e2e_header(&res, "X-Seed", h, sizeof h), "9");
    e2e_resp_free(&res);
    /* the result can be fetched again */
    result_of(&d, id, &res);
    expect_same(&sync, &res);
    e2e_resp_free(&res);
    e2e_resp_free(&job);
    e2e_resp_free(&sync);
    ck_assert_int_eq(e2e_log_count(&d, "\"event\":\"job_submitted\""), 1);
    ck_assert_int_eq(e2e_log_count(&d, "\"event\":\"job_finished\""), 1);
    ck_assert_int_eq(e2e_stop(&d, SIGTERM, 30), 0);
}
END_TEST

START_TEST(async_csv_and_npy_match_sync)
{
    char dir[256];
    models(dir);
    struct e2e_daemon d;
    ck_assert(e2e_start(&d, dir, NULL));
    static const char body[] = "{\"num_samples\":1000,\"seed\":3,\"temperature\":0.7}";
    static const char *const accept[] = {"Accept: text/csv", "Accept: application/x-npy"};
    for (int f = 0; f < 2; f++) {
        const char *hs[] = {accept[f], NULL};
        const char *hp[] = {accept[f], "Prefer: wait=5, respond-async", NULL};
        struct e2e_resp sync, job, res;
        e2e_request(&d, "POST", "/v1/models/rnvp/sample", body, strlen(body), hs, &sync);
        ck_assert_int_eq(sync.status, 200);
        char id[33];
        /* Prefer: respond-async instead of "async" in the body */
        struct e2e_resp r;
        e2e_request(&d, "POST", "/v1/models/rnvp/sample", body, strlen(body), hp, &r);
        ck_assert_int_eq(r.status, 202);
        char h[64];
        ck_assert_str_eq(e2e_header(&r, "Preference-Applied", h, sizeof h), "respond-async");
        snprintf(id, sizeof id, "%s", str(r.json, "id"));
        e2e_resp_free(&r);
        wait_job(&d, id, 60, &job);
        ck_assert_str_eq(str(job.json, "state"), "done");
        ck_assert(get(job.json, "result") == NULL); /* not JSON: only at /result */
        result_of(&d, id, &res);
        expect_same(&sync, &res);
        e2e_resp_free(&res);
        e2e_resp_free(&job);
        e2e_resp_free(&sync);
    }
    ck_assert_int_eq(e2e_stop(&d, SIGTERM, 30), 0);
}
END_TEST

/* A request refused before any compute is answered at once, job or not; a preimage job's
 * result is the synchronous answer, whatever it is (an answer or an error: then the job is
 * failed and its "error" carries the status). */
START_TEST(preimage_job_and_early_refusal)
{
    char dir[256];
    models(dir);
    struct e2e_daemon d;
    static const char *const args[] = {"--max-response", "2K", NULL};
    ck_assert(e2e_start(&d, dir, args));
    static const char body[] = "{\"num_samples\":5000,\"seed\":1,\"async\":true}";
    char id[33];
    /* too large for --max-response: refused before any compute, synchronously */
    struct e2e_resp r, job;
    e2e_post(&d, "/v1/models/rnvp/sample", body, &r);
    e2e_expect_error(&r, 413, "result_too_large", "--max-response");
    e2e_resp_free(&r);
    /* a preimage that fails in the engine is a failed job */
    submit(&d, "/v1/models/rnvp/preimage",
           "{\"target\":[[1,2,3,4,5]],\"num_solutions\":1,\"max_steps\":5,\"seed\":1,"
           "\"async\":true}", NULL, id);
    wait_job(&d, id, 60, &job);
    const char *st = str(job.json, "state");
    struct e2e_resp sync, res;
    e2e_post(&d, "/v1/models/rnvp/preimage",
             "{\"target\":[[1,2,3,4,5]],\"num_solutions\":1,\"max_steps\":5,\"seed\":1}", &sync);
    result_of(&d, id, &res);
    expect_same(&sync, &res);
    if (sync.status == 200) {
        ck_assert_str_eq(st, "done");
        ck_assert_str_eq(str(get(job.json, "progress"), "unit"), "targets");
    } else {
        ck_assert_str_eq(st, "failed");
        const cJSON *e = get(job.json, "error");
        ck_assert_int_eq((long)get(e, "status")->valuedouble, sync.status);
        ck_assert_str_eq(str(e, "code"), str(sync.json, "code"));
    }
    e2e_resp_free(&sync);
    e2e_resp_free(&res);
    e2e_resp_free(&job);
    ck_assert_int_eq(e2e_stop(&d, SIGTERM, 30), 0);
}
END_TEST

/* Progress grows while a long job runs; a synchronous request is served between its units;
 * DELETE stops it and frees the worker at once. */
START_TEST(progress_then_delete_stops_the_work)
{
    char dir[256];
    slow_models(dir);
    struct e2e_daemon d;
    static const char *const args[] = {"--workers", "1", "--max-samples", "1000000", NULL};
    ck_assert(e2e_start(&d, dir, args));
    char id[33], path[96];
    submit(&d, "/v1/models/slow/sample", "{\"num_samples\":65536,\"seed\":1,\"tol\":1e-12,"
           "\"outputs\":[\"log_prob\"],\"async\":true}", NULL, id);
    snprintf(path, sizeof path, "/v1/jobs/%s", id);
    long last = -1;
    bool mid = false;
    double end = e2e_now_s() + 60;
    struct e2e_resp r;
    while (!mid) {
        ck_assert_msg(e2e_now_s() < end, "no progress in 60 s");
        e2e_get(&d, path, &r);
        ck_assert_int_eq(r.status, 200);
        const cJSON *p = get(r.json, "progress");
        long done = (long)get(p, "done")->valuedouble;
        ck_assert_int_eq((long)get(p, "total")->valuedouble, 65536);
        ck_assert_msg(done >= last, "progress went back from %ld to %ld", last, done);
        last = done;
        if (done > 0) {
            ck_assert_str_eq(str(r.json, "state"), "running");
            ck_assert(get(p, "rate")->valuedouble > 0);
            ck_assert(cJSON_IsNumber(get(p, "eta_s")) && get(p, "eta_s")->valuedouble > 0);
            ck_assert(cJSON_IsString(get(r.json, "started")));
            ck_assert(cJSON_IsNull(get(r.json, "finished")));
            mid = done < 65536;
        }
        e2e_resp_free(&r);
        usleep(50000);
    }
    /* no result yet */
    result_of(&d, id, &r);
    e2e_expect_error(&r, 409, "job_not_done", "running");
    e2e_resp_free(&r);
    /* the one worker serves a synchronous request between the job's units (1024 samples,
     * about 0.8 s here), not after the job (more than 50 s) */
    e2e_post(&d, "/v1/models/slow/forward", SLOW_X, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_msg(r.seconds < BUSY_BOUND_S * SLOWDOWN, "a request behind the job took %.2f s",
                  r.seconds);
    e2e_resp_free(&r);
    /* DELETE: cancelled at once; the worker is free after at most one tile */
    e2e_request(&d, "DELETE", path, NULL, 0, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(str(r.json, "state"), "cancelled");
    ck_assert(cJSON_IsString(get(r.json, "finished")));
    e2e_resp_free(&r);
    e2e_post(&d, "/v1/models/slow/forward", SLOW_X, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_msg(r.seconds < BUSY_BOUND_S * SLOWDOWN, "the request after DELETE took %.2f s",
                  r.seconds);
    e2e_resp_free(&r);
    e2e_get(&d, path, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(str(r.json, "state"), "cancelled");
    ck_assert(get(r.json, "result") == NULL && get(r.json, "error") == NULL);
    e2e_resp_free(&r);
    result_of(&d, id, &r);
    e2e_expect_error(&r, 409, "job_cancelled", "DELETE");
    e2e_resp_free(&r);
    char needle[128];
    snprintf(needle, sizeof needle, "\"event\":\"job_cancelled\",\"id\":\"%s\"", id);
    ck_assert_int_eq(e2e_log_count(&d, needle), 1);
    ck_assert_int_eq(e2e_log_count(&d, "\"reason\":\"DELETE\""), 1);
    /* a second DELETE removes the cancelled job */
    e2e_request(&d, "DELETE", path, NULL, 0, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(str(r.json, "state"), "cancelled");
    e2e_resp_free(&r);
    e2e_get(&d, path, &r);
    e2e_expect_error(&r, 404, "job_not_found", "--job-ttl");
    e2e_resp_free(&r);
    ck_assert_int_eq(e2e_stop(&d, SIGTERM, 30), 0);
}
END_TEST

START_TEST(list_ids_and_methods)
{
    char dir[256];
    models(dir);
    struct e2e_daemon d;
    ck_assert(e2e_start(&d, dir, NULL));
    struct e2e_resp r;
    e2e_get(&d, "/v1/jobs", &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(r.body, "{\"jobs\":[]}\n");
    e2e_resp_free(&r);
    char id1[33], id2[33];
    submit(&d, "/v1/models/rnvp/sample", "{\"num_samples\":10,\"seed\":1,\"async\":true}", NULL,
           id1);
    submit(&d, "/v1/models/glow_cond/sample", "{\"y\":[1,2,3],\"num_samples\":10,\"seed\":1,"
           "\"async\":true}", NULL, id2);
    ck_assert_str_ne(id1, id2);
    wait_job(&d, id1, 30, &r);
    e2e_resp_free(&r);
    wait_job(&d, id2, 30, &r);
    e2e_resp_free(&r);
    e2e_get(&d, "/v1/jobs", &r);
    ck_assert_int_eq(r.status, 200);
    const cJSON *jobs = get(r.json, "jobs");
    ck_assert_int_eq(cJSON_GetArraySize(jobs), 2);
    ck_assert_str_eq(str(cJSON_GetArrayItem(jobs, 0), "id"), id1);
    ck_assert_str_eq(str(cJSON_GetArrayItem(jobs, 1), "id"), id2);
    ck_assert_str_eq(str(cJSON_GetArrayItem(jobs, 1), "model"), "glow_cond");
    ck_assert(get(cJSON_GetArrayItem(jobs, 0), "result") == NULL);
    e2e_resp_free(&r);
    /* unknown and malformed ids */
    e2e_get(&d, "/v1/jobs/0123456789abcdef0123456789abcdef", &r);
    ck_assert_int_eq(r.status, 404);
    ck_assert_str_eq(r.body, "{\"error\":\"no job 0123456789abcdef0123456789abcdef: jobs live "
                     "in this server's memory only (they do not survive a restart), and a "
                     "finished job is kept for 600 s (--job-ttl) or until DELETE removes "
                     "it\",\"code\":\"job_not_found\"}\n");
    e2e_resp_free(&r);
    static const char *const bad[] = {"/v1/jobs/xyz", "/v1/jobs/0123456789ABCDEF0123456789abcdef",
                                      "/v1/jobs/0123456789abcdef0123456789abcdef0",
                                      "/v1/jobs/..%2F..%2Fetc/result"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        e2e_get(&d, bad[i], &r);
        e2e_expect_error(&r, 404, "job_not_found", "is not a job id");
        e2e_resp_free(&r);
    }
    e2e_request(&d, "DELETE", "/v1/jobs/xyz", NULL, 0, NULL, &r);
    e2e_expect_error(&r, 404, "job_not_found", "is not a job id");
    e2e_resp_free(&r);
    /* methods */
    char h[64], p[96];
    snprintf(p, sizeof p, "/v1/jobs/%s", id1);
    e2e_request(&d, "PUT", p, "{}", 2, NULL, &r);
    ck_assert_int_eq(r.status, 405);
    ck_assert_str_eq(e2e_header(&r, "Allow", h, sizeof h), "GET, HEAD, DELETE");
    e2e_resp_free(&r);
    e2e_post(&d, "/v1/jobs", "{}", &r);
    e2e_expect_error(&r, 405, "method_not_allowed", "POST");
    ck_assert_str_eq(e2e_header(&r, "Allow", h, sizeof h), "GET, HEAD");
    e2e_resp_free(&r);
    snprintf(p, sizeof p, "/v1/jobs/%s/result", id1);
    e2e_request(&d, "DELETE", p, NULL, 0, NULL, &r);
    ck_assert_int_eq(r.status, 405);
    ck_assert_str_eq(e2e_header(&r, "Allow", h, sizeof h), "GET, HEAD");
    e2e_resp_free(&r);
    e2e_request(&d, "DELETE", "/v1/models/rnvp/sample", NULL, 0, NULL, &r);
    ck_assert_int_eq(r.status, 405);
    ck_assert_str_eq(e2e_header(&r, "Allow", h, sizeof h), "POST");
    e2e_resp_free(&r);
    /* "async" is validated, and only the operations that run as jobs take it */
    e2e_post(&d, "/v1/models/rnvp/sample", "{\"num_samples\":1,\"async\":1}", &r);
    e2e_expect_error(&r, 400, "invalid_field", "async must be true or false");
    e2e_resp_free(&r);
    e2e_post(&d, "/v1/models/rnvp/forward", "{\"x\":[[1,2,3,4,5]],\"async\":true}", &r);
    e2e_expect_error(&r, 400, "unknown_field", "async");
    e2e_resp_free(&r);
    /* Prefer: respond-async on an operation that does not run as a job: answered at once */
    static const char *const pref[] = {"Prefer: respond-async", NULL};
    static const char fwd[] = "{\"x\":[[1,2,3,4,5]]}";
    e2e_request(&d, "POST", "/v1/models/rnvp/forward", fwd, strlen(fwd), pref, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert(e2e_header(&r, "Preference-Applied", h, sizeof h) == NULL);
    e2e_resp_free(&r);
    /* "async": false is the synchronous answer */
    e2e_post(&d, "/v1/models/rnvp/sample", "{\"num_samples\":1,\"seed\":1,\"async\":false}", &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert(get(r.json, "samples") != NULL);
    e2e_resp_free(&r);
    /* metrics */
    e2e_get(&d, "/metrics", &r);
    ck_assert(strstr(r.body, "innserve_jobs{state=\"done\"} 2\n") != NULL);
    ck_assert(strstr(r.body, "innserve_jobs{state=\"running\"} 0\n") != NULL);
    ck_assert(strstr(r.body, "innserve_jobs_total 2\n") != NULL);
    e2e_resp_free(&r);
    /* DELETE of a finished job removes it */
    snprintf(p, sizeof p, "/v1/jobs/%s", id1);
    e2e_request(&d, "DELETE", p, NULL, 0, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(str(r.json, "state"), "done");
    e2e_resp_free(&r);
    e2e_get(&d, p, &r);
    e2e_expect_error(&r, 404, "job_not_found", "--job-ttl");
    e2e_resp_free(&r);
    e2e_get(&d, "/metrics", &r);
    ck_assert(strstr(r.body, "innserve_jobs{state=\"done\"} 1\n") != NULL);
    ck_assert(strstr(r.body, "innserve_jobs_total 2\n") != NULL);
    e2e_resp_free(&r);
    ck_assert_int_eq(e2e_stop(&d, SIGTERM, 30), 0);
}
END_TEST

/* --max-jobs counts unfinished and kept jobs: past it 503 too_many_jobs with Retry-After
 * (until the first kept one expires); after --job-ttl a finished job is gone (404) and
 * there is room again. */
START_TEST(max_jobs_and_ttl)
{
    char dir[256];
    models(dir);
    struct e2e_daemon d;
    static const char *const args[] = {"--max-jobs", "2", "--job-ttl", "2", NULL};
    ck_assert(e2e_start(&d, dir, args));
    static const char body[] = "{\"num_samples\":10,\"seed\":1,\"async\":true}";
    char id1[33], id2[33], id3[33];
    submit(&d, "/v1/models/rnvp/sample", body, NULL, id1);
    submit(&d, "/v1/models/rnvp/sample", body, NULL, id2);
    struct e2e_resp r;
    wait_job(&d, id1, 30, &r);
    e2e_resp_free(&r);
    wait_job(&d, id2, 30, &r);
    e2e_resp_free(&r);
    e2e_post(&d, "/v1/models/rnvp/sample", body, &r);
    ck_assert_int_eq(r.status, 503);
    ck_assert_str_eq(r.body, "{\"error\":\"2 jobs are unfinished or kept, the most this server "
                     "holds (--max-jobs 2); finished jobs are removed by DELETE /v1/jobs/ID or "
                     "2 s after they finish (--job-ttl)\",\"code\":\"too_many_jobs\"}\n");
    char h[32];
    ck_assert(e2e_header(&r, "Retry-After", h, sizeof h) != NULL);
    int retry = atoi(h);
    ck_assert_msg(retry >= 1 && retry <= 2, "Retry-After %s", h);
    e2e_resp_free(&r);
    /* synchronous requests are not limited by the job table */
    e2e_post(&d, "/v1/models/rnvp/sample", "{\"num_samples\":10,\"seed\":1}", &r);
    ck_assert_int_eq(r.status, 200);
    e2e_resp_free(&r);
    usleep(2300000);
    char p[96];
    snprintf(p, sizeof p, "/v1/jobs/%s", id1);
    e2e_get(&d, p, &r);
    e2e_expect_error(&r, 404, "job_not_found", "--job-ttl");
    e2e_resp_free(&r);
    submit(&d, "/v1/models/rnvp/sample", body, NULL, id3);
    e2e_get(&d, "/v1/jobs", &r);
    ck_assert_int_eq(cJSON_GetArraySize(get(r.json, "jobs")), 1);
    e2e_resp_free(&r);
    ck_assert_int_eq(e2e_stop(&d, SIGTERM, 30), 0);
}
END_TEST

/* --max-job-bytes: a result that does not fit in what the kept results leave fails the job
 * (413, the error kept as its result); a smaller one is kept. */
START_TEST(max_job_bytes)
{
    char dir[256];
    models(dir);
    struct e2e_daemon d;
    static const char *const args[] = {"--max-job-bytes", "4K", NULL};
    ck_assert(e2e_start(&d, dir, args));
    char id[33];
    struct e2e_resp r, res;
    submit(&d, "/v1/models/rnvp/sample", "{\"num_samples\":400,\"seed\":1,\"async\":true}", NULL,
           id);
    wait_job(&d, id, 30, &r);
    ck_assert_str_eq(str(r.json, "state"), "failed");
    const cJSON *e = get(r.json, "error");
    ck_assert_str_eq(str(e, "code"), "result_too_large");
    ck_assert_int_eq((long)get(e, "status")->valuedouble, 413);
    ck_assert(strstr(str(e, "error"), "--max-job-bytes") != NULL);
    e2e_resp_free(&r);
    result_of(&d, id, &res);
    e2e_expect_error(&res, 413, "result_too_large", "--max-job-bytes");
    e2e_resp_free(&res);
    /* a small result fits */
    char id2[33];
    submit(&d, "/v1/models/rnvp/sample", "{\"num_samples\":30,\"seed\":1,\"async\":true}", NULL,
           id2);
    wait_job(&d, id2, 30, &r);
    ck_assert_str_eq(str(r.json, "state"), "done");
    e2e_resp_free(&r);
    ck_assert_int_eq(e2e_stop(&d, SIGTERM, 30), 0);
}
END_TEST

/* A job is not bound by --deadline-ms (that is for synchronous requests) ... */
START_TEST(jobs_are_not_bound_by_deadline_ms)
{
    char dir[256];
    slow_models(dir);
    struct e2e_daemon d;
    static const char *const args[] = {"--workers", "1", "--deadline-ms", "300", NULL};
    ck_assert(e2e_start(&d, dir, args));
    struct e2e_resp r;
    /* 8192 samples, a few seconds of work: 504 synchronously, done as a job */
    static const char body[] = "{\"num_samples\":8192,\"seed\":1,\"tol\":1e-12,"
                               "\"outputs\":[\"log_prob\"]%s}";
    char b[160];
    snprintf(b, sizeof b, body, "");
    e2e_post(&d, "/v1/models/slow/sample", b, &r);
    e2e_expect_error(&r, 504, "deadline_exceeded", "--deadline-ms");
    e2e_resp_free(&r);
    char id[33];
    snprintf(b, sizeof b, body, ",\"async\":true");
    submit(&d, "/v1/models/slow/sample", b, NULL, id);
    wait_job(&d, id, 60.0 * SLOWDOWN, &r);
    ck_assert_str_eq(str(r.json, "state"), "done");
    ck_assert_int_eq((long)get(get(r.json, "progress"), "done")->valuedouble, 8192);
    e2e_resp_free(&r);
    ck_assert_int_eq(e2e_stop(&d, SIGTERM, 30), 0);
}
END_TEST

/* ... but by --job-timeout from its submission: past it the job fails with 504. */
START_TEST(job_timeout_fails_the_job)
{
    char dir[256];
    slow_models(dir);
    struct e2e_daemon d;
    static const char *const args[] = {"--workers", "1", "--job-timeout", "1",
                                       "--max-samples", "1000000", NULL};
    ck_assert(e2e_start(&d, dir, args));
    struct e2e_resp r;
    char id[33];
    /* minutes of work */
    submit(&d, "/v1/models/slow/sample", "{\"num_samples\":1000000,\"seed\":1,\"tol\":1e-12,"
           "\"outputs\":[\"log_prob\"],\"async\":true}", NULL, id);
    double t0 = e2e_now_s();
    wait_job(&d, id, 30.0 * SLOWDOWN, &r);
    ck_assert_msg(e2e_now_s() - t0 >= 0.9, "failed after %.2f s", e2e_now_s() - t0);
    ck_assert_str_eq(str(r.json, "state"), "failed");
    const cJSON *e = get(r.json, "error");
    ck_assert_str_eq(str(e, "code"), "deadline_exceeded");
    ck_assert_int_eq((long)get(e, "status")->valuedouble, 504);
    ck_assert_str_eq(str(e, "error"), "the job did not finish within 1 s of its submission "
                     "(--job-timeout); ask for less work");
    e2e_resp_free(&r);
    result_of(&d, id, &r);
    e2e_expect_error(&r, 504, "deadline_exceeded", "--job-timeout");
    e2e_resp_free(&r);
    ck_assert_int_eq(e2e_stop(&d, SIGTERM, 30), 0);
}
END_TEST

/* SIGTERM cancels unfinished jobs at once and logs each; the daemon exits 0 promptly. */
START_TEST(shutdown_cancels_and_logs_jobs)
{
    char dir[256];
    slow_models(dir);
    struct e2e_daemon d;
    static const char *const args[] = {"--workers", "1", NULL};
    ck_assert(e2e_start(&d, dir, args));
    char id1[33], id2[33];
    static const char body[] = "{\"num_samples\":65536,\"seed\":1,\"tol\":1e-12,"
                               "\"outputs\":[\"log_prob\"],\"async\":true}";
    submit(&d, "/v1/models/slow/sample", body, NULL, id1);
    submit(&d, "/v1/models/slow/sample", body, NULL, id2);
    usleep(300000);
    double t0 = e2e_now_s();
    ck_assert_int_eq(e2e_stop(&d, SIGTERM, 30), 0);
    ck_assert_msg(e2e_now_s() - t0 < BUSY_BOUND_S * SLOWDOWN, "shutdown took %.2f s",
                  e2e_now_s() - t0);
    char needle[128];
    snprintf(needle, sizeof needle, "\"event\":\"job_cancelled\",\"id\":\"%s\"", id1);
    ck_assert_int_eq(e2e_log_count(&d, needle), 1);
    snprintf(needle, sizeof needle, "\"event\":\"job_cancelled\",\"id\":\"%s\"", id2);
    ck_assert_int_eq(e2e_log_count(&d, needle), 1);
    ck_assert_int_eq(e2e_log_count(&d, "\"reason\":\"shutdown\""), 2);
}
END_TEST

START_TEST(jobs_need_the_bearer_token)
{
    char dir[256], tok[300];
    models(dir);
    snprintf(tok, sizeof tok, "%s/token", dir);
    e2e_write_file(dir, "token", "s3cret-token-for-jobs\n", 22);
    struct e2e_daemon d;
    const char *args[] = {"--auth-token-file", tok, NULL};
    ck_assert(e2e_start(&d, dir, args));
    struct e2e_resp r;
    e2e_get(&d, "/v1/jobs", &r);
    e2e_expect_error(&r, 401, "unauthorized", "bearer token");
    e2e_resp_free(&r);
    e2e_get(&d, "/v1/jobs/0123456789abcdef0123456789abcdef/result", &r);
    ck_assert_int_eq(r.status, 401);
    e2e_resp_free(&r);
    static const char *const auth[] = {"Authorization: Bearer s3cret-token-for-jobs", NULL};
    e2e_request(&d, "GET", "/v1/jobs", NULL, 0, auth, &r);
    ck_assert_int_eq(r.status, 200);
    e2e_resp_free(&r);
    ck_assert_int_eq(e2e_stop(&d, SIGTERM, 30), 0);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("jobs");
    TCase *t = tcase_create("jobs");
    tcase_set_timeout(t, 600);
    tcase_add_test(t, async_sample_json_matches_sync);
    tcase_add_test(t, async_csv_and_npy_match_sync);
    tcase_add_test(t, preimage_job_and_early_refusal);
    tcase_add_test(t, progress_then_delete_stops_the_work);
    tcase_add_test(t, list_ids_and_methods);
    tcase_add_test(t, max_jobs_and_ttl);
    tcase_add_test(t, max_job_bytes);
    tcase_add_test(t, jobs_are_not_bound_by_deadline_ms);
    tcase_add_test(t, job_timeout_fails_the_job);
    tcase_add_test(t, shutdown_cancels_and_logs_jobs);
    tcase_add_test(t, jobs_need_the_bearer_token);
    suite_add_tcase(s, t);
    return s;
}

E2E_MAIN
