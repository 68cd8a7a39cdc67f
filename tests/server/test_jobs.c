/*
 * test_jobs.c — server/jobs.c without HTTP: jobs submitted to a real pool with a real model
 * (models/ik_cinn): ids are 32 distinct lowercase hex digits found again among many jobs;
 * the 202 answer and its Location; a finished job's result is the bytes srv_call_run_inline
 * gives the same request; --max-jobs refuses (503 too_many_jobs, Retry-After) and --job-ttl
 * frees the room; srv_jobs_cancel_all cancels what is unfinished; counts by state.
 * Waits are bounded (10 s) so a broken table fails instead of hanging.
 */
#include <check.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../../server/call.h"
#include "../../server/jobs.h"
#include "../../server/log.h"
#include "../unit/testutil.h"

struct fixture {
    struct srv_config cfg;
    struct srv_ctx ctx;
    struct srv_version *ver;
};

static struct srv_version *version_load(const char *path)
{
    struct srv_version *v = calloc(1, sizeof *v);
    ck_assert_ptr_nonnull(v);
    char err[ENG_ERR_LEN] = "";
    ck_assert_msg(eng_model_load(path, &v->model, err) == ENG_OK, "%s: %s", path, err);
    v->info = eng_model_info(v->model);
    v->name = strdup("m");
    v->version = strdup("1");
    v->path = strdup(path);
    v->refs = 1;
    return v;
}

static void fixture_init(struct fixture *fx, int max_jobs, double ttl_s)
{
    memset(fx, 0, sizeof *fx);
    srv_log_init(SRV_LOG_ERROR, false);
    fx->cfg.retry_after_s = 3;
    fx->cfg.deadline_ms = 60000;
    fx->cfg.max_jobs = max_jobs;
    fx->cfg.job_ttl_s = ttl_s;
    fx->cfg.job_timeout_s = 60;
    fx->cfg.max_job_bytes = (size_t)64 << 20;
    fx->cfg.lim = proto_limits_default();
    fx->ctx.cfg = &fx->cfg;
    fx->ctx.lim = fx->cfg.lim;
    fx->ctx.pool = srv_pool_new(2, 1000, 0, ENG_TILE_ROWS);
    ck_assert_ptr_nonnull(fx->ctx.pool);
    fx->ctx.jobs = srv_jobs_new(&fx->ctx);
    ck_assert_ptr_nonnull(fx->ctx.jobs);
    fx->ver = version_load("models/ik_cinn.safetensors");
}

static void fixture_free(struct fixture *fx)
{
    srv_pool_free(fx->ctx.pool);
    srv_jobs_free(fx->ctx.jobs);
    srv_version_unref(fx->ver);
}

/* A sample call of the body, async or not (NULL on a parse failure: ck_assert'ed). */
static struct srv_call *call_of(struct fixture *fx, const char *body, bool async)
{
    struct proto_request q;
    struct proto_error e;
    ck_assert_int_eq(proto_request_parse(PROTO_OP_SAMPLE, body, strlen(body), fx->ver->info,
                                         &fx->ctx.lim, &q, &e), PROTO_OK);
    q.async = async;
    struct srv_call *c = srv_call_new(&fx->ctx, fx->ver, &q, PROTO_FMT_JSON, false, &e);
    proto_request_free(&q);
    ck_assert_ptr_nonnull(c);
    return c;
}

/* Submits body as a job; the id (33 bytes) from the 202's Location. */
static void submit(struct fixture *fx, const char *body, char *id)
{
    struct srv_response r;
    srv_response_init(&r);
    srv_jobs_submit(fx->ctx.jobs, call_of(fx, body, true), false, &r);
    ck_assert_msg(r.status == 202, "status %d: %.*s", r.status, (int)r.len, r.body);
    ck_assert(!strncmp(r.location, "/v1/jobs/", 9));
    ck_assert_uint_eq(strlen(r.location + 9), 32);
    memcpy(id, r.location + 9, 33);
    ck_assert_uint_eq(strspn(id, "0123456789abcdef"), 32);
    char want[200];
    snprintf(want, sizeof want, "{\"id\":\"%.32s\",\"url\":\"/v1/jobs/%.32s\",\"state\":\"queued\","
             "\"operation\":\"sample\",\"model\":\"m\",\"version\":\"1\",\"sha256\":\"", id, id);
    ck_assert(r.len > strlen(want) && !strncmp(r.body, want, strlen(want)));
    srv_response_free(&r);
}

/* Waits until the job is no longer queued or running; its GET answer in *r. */
static void wait_done(struct fixture *fx, const char *id, struct srv_response *r)
{
    for (int i = 0; i < 1000; i++) {
        srv_response_init(r);
        srv_jobs_get(fx->ctx.jobs, id, r);
        ck_assert_int_eq(r->status, 200);
        if (!strstr(r->body, "\"state\":\"queued\"") && !strstr(r->body, "\"state\":\"running\""))
            return;
        srv_response_free(r);
        usleep(10000);
    }
    ck_abort_msg("job %s did not finish in 10 s", id);
}

START_TEST(result_is_the_synchronous_answer)
{
    struct fixture fx;
    fixture_init(&fx, 16, 600);
    static const char body[] = "{\"y\":[[1.5,0.0],[0.5,1]],\"num_samples\":700,\"seed\":3,"
                               "\"outputs\":[\"samples\",\"log_prob\",\"summary\"]}";
    char id[33];
    submit(&fx, body, id);
    struct srv_response g, res;
    wait_done(&fx, id, &g);
    ck_assert(strstr(g.body, "\"state\":\"done\",\"progress\":{\"done\":1400,\"total\":1400,"
                     "\"unit\":\"samples\"") != NULL);
    srv_response_init(&res);
    srv_jobs_result(fx.ctx.jobs, id, &res);
    struct srv_call *c = call_of(&fx, body, false);
    struct eng_ws *ws = eng_ws_new();
    srv_call_run_inline(c, ws);
    ck_assert_int_eq(res.status, 200);
    ck_assert_int_eq(c->resp.status, 200);
    ck_assert_str_eq(res.ctype, c->resp.ctype);
    ck_assert_str_eq(res.seed, "3");
    ck_assert_uint_eq(res.len, c->resp.len);
    ck_assert(memcmp(res.body, c->resp.body, res.len) == 0);
    /* the job object inlines the same JSON (without its newline) */
    const char *inl = strstr(g.body, ",\"result\":");
    ck_assert_ptr_nonnull(inl);
    ck_assert(!strncmp(inl + 10, c->resp.body, c->resp.len - 1));
    eng_ws_free(ws);
    srv_call_unref(c);
    srv_response_free(&res);
    srv_response_free(&g);
    fixture_free(&fx);
}
END_TEST

START_TEST(many_ids_are_distinct_and_found)
{
    struct fixture fx;
    fixture_init(&fx, 300, 600);
    enum { N = 200 };
    static char ids[N][33];
    for (int i = 0; i < N; i++) {
        submit(&fx, "{\"y\":[1,2],\"num_samples\":1,\"seed\":1}", ids[i]);
        for (int k = 0; k < i; k++)
            ck_assert_str_ne(ids[i], ids[k]);
    }
    for (int i = 0; i < N; i++) {
        struct srv_response r;
        wait_done(&fx, ids[i], &r);
        char want[64] = "{\"id\":\"";
        strcat(want, ids[i]);
        ck_assert(!strncmp(r.body, want, strlen(want)));
        srv_response_free(&r);
    }
    uint64_t by[SRV_TASK_NSTATES], total;
    srv_jobs_counts(fx.ctx.jobs, by, &total);
    ck_assert_uint_eq(by[SRV_TASK_DONE], N);
    ck_assert_uint_eq(total, N);
    /* an id one digit off is not found */
    char other[33];
    memcpy(other, ids[0], sizeof other);
    other[31] = other[31] == '0' ? '1' : '0';
    struct srv_response r;
    srv_response_init(&r);
    srv_jobs_get(fx.ctx.jobs, other, &r);
    ck_assert_int_eq(r.status, 404);
    ck_assert_str_eq(r.code, "job_not_found");
    srv_response_free(&r);
    fixture_free(&fx);
}
END_TEST

START_TEST(max_jobs_refuses_and_ttl_frees)
{
    struct fixture fx;
    fixture_init(&fx, 2, 0.3);
    char a[33], b[33], c[33];
    submit(&fx, "{\"y\":[1,2],\"num_samples\":5,\"seed\":1}", a);
    submit(&fx, "{\"y\":[1,2],\"num_samples\":5,\"seed\":2}", b);
    struct srv_response r;
    wait_done(&fx, a, &r);
    srv_response_free(&r);
    wait_done(&fx, b, &r);
    srv_response_free(&r);
    srv_response_init(&r);
    srv_jobs_submit(fx.ctx.jobs, call_of(&fx, "{\"y\":[1,2],\"num_samples\":5}", true), false,
                    &r);
    ck_assert_int_eq(r.status, 503);
    ck_assert_str_eq(r.code, "too_many_jobs");
    ck_assert_int_eq(r.retry_after, 1); /* the first kept job expires within 0.3 s */
    srv_response_free(&r);
    usleep(400000);
    srv_response_init(&r);
    srv_jobs_get(fx.ctx.jobs, a, &r);
    ck_assert_int_eq(r.status, 404);
    srv_response_free(&r);
    submit(&fx, "{\"y\":[1,2],\"num_samples\":5,\"seed\":3}", c);
    fixture_free(&fx);
}
END_TEST

START_TEST(cancel_all_cancels_the_unfinished)
{
    struct fixture fx;
    fixture_init(&fx, 16, 600);
    char a[33], b[33];
    /* about a million samples each: still running when cancelled */
    submit(&fx, "{\"y\":[1,2],\"num_samples\":1000000,\"seed\":1,\"outputs\":[\"log_prob\"]}",
           a);
    submit(&fx, "{\"y\":[1,2],\"num_samples\":1000000,\"seed\":2,\"outputs\":[\"log_prob\"]}",
           b);
    ck_assert_int_eq(srv_jobs_cancel_all(fx.ctx.jobs), 2);
    ck_assert_int_eq(srv_jobs_cancel_all(fx.ctx.jobs), 0);
    struct srv_response r;
    srv_response_init(&r);
    srv_jobs_get(fx.ctx.jobs, a, &r);
    ck_assert(strstr(r.body, "\"state\":\"cancelled\"") != NULL);
    srv_response_free(&r);
    srv_response_init(&r);
    srv_jobs_result(fx.ctx.jobs, b, &r);
    ck_assert_int_eq(r.status, 409);
    ck_assert_str_eq(r.code, "job_cancelled");
    ck_assert(strstr(r.body, "cancelled (shutdown)") != NULL);
    srv_response_free(&r);
    uint64_t by[SRV_TASK_NSTATES], total;
    srv_jobs_counts(fx.ctx.jobs, by, &total);
    ck_assert_uint_eq(by[SRV_TASK_CANCELLED], 2);
    ck_assert_uint_eq(by[SRV_TASK_QUEUED] + by[SRV_TASK_RUNNING], 0);
    fixture_free(&fx);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("server_jobs");
    TCase *tc = tcase_create("jobs");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, result_is_the_synchronous_answer);
    tcase_add_test(tc, many_ids_are_distinct_and_found);
    tcase_add_test(tc, max_jobs_refuses_and_ttl_frees);
    tcase_add_test(tc, cancel_all_cancels_the_unfinished);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN
