/*
 * test_call_allocfail.c — allocation-failure injection for the daemon's call path
 * (server/call.c): every allocation of a call fails in turn (the 1st, then the 2nd, ...
 * until a call runs through without reaching the failing one), and each run must end with
 * either srv_call_new returning NULL with PROTO_E_NOMEM, or a response that is the
 * out-of-memory error (503 out_of_memory with Retry-After and a JSON error body naming
 * the code), never a crash, never a 200 whose bytes differ from the run without failure,
 * and with every block it allocated freed once the call is released.
 *
 * What runs under failure: srv_call_new (result buffers, the plan of server/plan.c), the
 * units on a fresh workspace (its allocations included), build() (the solver statistics,
 * the sample summary and resimulation error, the answer writer, srv_response_*), and
 * srv_call_unref.  Each operation the kind supports, on the models of models/ (one of
 * each kind: cinn, inn, mlp and a flow with a numeric inverse), with JSON answers, V2
 * answers, and CSV and NPY answers for samples; forward also with more rows than one tile
 * (several units).  Inline (srv_call_run_inline, as the HTTP thread runs small calls) and
 * through the worker pool (srv_call_submit, with dynamic batching on; a pool of its own
 * per run, so the workers' workspaces start empty and are freed before the leak check;
 * once also with a one-worker pool made under failure, so the worker may be without a
 * workspace: the call is answered 503 and the next call on that pool 200), and two
 * forward, log_prob or sample calls computed in one batch (srv_batch_rows, srv_batch_samples in server/units.c):
 * there a failed allocation of the batch may also end in both calls answered 200 with
 * their own bytes (the calls then run alone).  srv_pool_submit itself allocates nothing.
 *
 * How: linked with the allocator wrappers of tests/unit/allocwrap.c (Makefile, like
 * test_allocfail): every allocation of engine/, proto/, server/ and this file is counted.
 * The request is parsed and the workspace made with the failure held (the parsers and
 * eng_ws_new are test_allocfail's).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "../../proto/answer.h"
#include "../../proto/v2.h"
#include "../../server/call.h"
#include "../unit/allocwrap.h"
#include "../unit/opbodies.h"
#include "../unit/testutil.h"

static const char *const MODELS[] = {"models/ik_cinn.safetensors", "models/ik_inn.safetensors",
                                     "models/ik_mlp.safetensors",
                                     "models/iresnet_toy.safetensors"};
#define N_MODELS (int)(sizeof MODELS / sizeof MODELS[0])

#define WORKERS 2

/* ---- the daemon's state, as main.c makes it, without HTTP ------------------------------ */

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
    ck_assert(v->name && v->version && v->path);
    return v;
}

/* Waits (10 s at most) until *v >= want; false if it did not happen. */
static bool wait_ge(atomic_int *v, int want)
{
    for (int i = 0; i < 100000 && atomic_load(v) < want; i++) {
        struct timespec d = {0, 100000};
        nanosleep(&d, NULL);
    }
    return atomic_load(v) >= want;
}

/* A job of one unit per worker that holds every worker until all have started (and so
 * made their workspaces) and `closed` is cleared. */
struct hold {
    struct srv_job job; /* first */
    atomic_int started;
    atomic_int closed;
    atomic_int done;
};

static void hold_unit(struct srv_job *j, int idx, struct eng_ws *ws)
{
    struct hold *h = (struct hold *)j;
    atomic_fetch_add(&h->started, 1);
    for (int i = 0; i < 100000 && (atomic_load(&h->started) < j->n_units ||
                                   atomic_load(&h->closed)); i++) {
        struct timespec d = {0, 100000};
        nanosleep(&d, NULL);
    }
}

static void hold_done(struct srv_job *j) { atomic_store(&((struct hold *)j)->done, 1); }
static void hold_expired(struct srv_job *j) {}

static bool hold_submit(struct srv_pool *p, struct hold *h, bool closed)
{
    memset(h, 0, sizeof *h);
    h->job.unit = hold_unit;
    h->job.done = hold_done;
    h->job.expired = hold_expired;
    h->job.n_units = WORKERS;
    atomic_init(&h->job.skip_after, 1 << 30);
    atomic_init(&h->closed, closed);
    return srv_pool_submit(p, &h->job) && wait_ge(&h->started, WORKERS);
}

/* A pool with every worker started; NULL when that did not happen within 10 s. */
static struct srv_pool *pool_started(int64_t batch_delay_ns)
{
    struct srv_pool *p = srv_pool_new(WORKERS, 16, batch_delay_ns, ENG_TILE_ROWS);
    if (!p)
        return NULL;
    struct hold h;
    bool ok = hold_submit(p, &h, false) && wait_ge(&h.done, 1);
    if (!ok) {
        srv_pool_free(p); /* runs the job to its end first */
        return NULL;
    }
    return p;
}

static void fixture_init(struct fixture *fx, const char *path)
{
    memset(fx, 0, sizeof *fx);
    fx->cfg.retry_after_s = 2;
    fx->cfg.deadline_ms = 60000;
    fx->cfg.lim = proto_limits_default();
    fx->ctx.cfg = &fx->cfg;
    fx->ctx.lim = fx->cfg.lim;
    fx->ctx.metrics = srv_metrics_new();
    ck_assert_ptr_nonnull(fx->ctx.metrics);
    ck_assert(srv_metrics_model(fx->ctx.metrics, "m"));
    fx->ctx.pool = pool_started(0);
    ck_assert_ptr_nonnull(fx->ctx.pool);
    fx->ver = version_load(path);
}

static void fixture_free(struct fixture *fx)
{
    srv_pool_free(fx->ctx.pool);
    srv_metrics_free(fx->ctx.metrics);
    srv_version_unref(fx->ver);
}

/* ---- the requests ---------------------------------------------------------------------- */

/* CSV (samples and log_prob) and NPY (samples) answers of a sample request. */
static const char *sample_body_fmt(enum eng_kind k, enum proto_format fmt)
{
    if (fmt == PROTO_FMT_CSV)
        return k == ENG_KIND_FLOW ? "{\"num_samples\": 4, \"seed\": 5, \"outputs\": [\"samples\", "
                                    "\"log_prob\"], \"max_iter\": 30}"
                                  : "{\"y\": [[1.5, 0], [0.5, 1]], \"num_samples\": 4, \"seed\": 5, "
                                    "\"outputs\": [\"samples\", \"log_prob\"]}";
    return k == ENG_KIND_FLOW ? "{\"num_samples\": 4, \"seed\": 6, \"max_iter\": 30}"
                              : "{\"y\": [[1.5, 0]], \"num_samples\": 4, \"seed\": 6}";
}

/* A forward request of more rows than one tile: several units on WORKERS workers. */
static char *big_forward_body(const struct eng_info *info)
{
    int rows = ENG_TILE_ROWS + 44, dx = info->dims.x;
    size_t cap = (size_t)rows * (size_t)dx * 16 + 256, len = 0;
    char *s = malloc(cap);
    ck_assert_ptr_nonnull(s);
    len += (size_t)snprintf(s + len, cap - len, "{\"x\": [");
    for (int r = 0; r < rows; r++) {
        len += (size_t)snprintf(s + len, cap - len, "%s[", r ? ", " : "");
        for (int c = 0; c < dx; c++)
            len += (size_t)snprintf(s + len, cap - len, "%s%.3f", c ? ", " : "",
                                    (double)((r * 7 + c * 3) % 23) * 0.1 - 1.1);
        len += (size_t)snprintf(s + len, cap - len, "]");
    }
    snprintf(s + len, cap - len, "]%s}", info->kind == ENG_KIND_CINN ? ", \"y\": [1.5, 0]" : "");
    return s;
}

/* ---- one call under failure ------------------------------------------------------------ */

struct call_case {
    struct fixture *fx;
    const char *body;
    enum proto_op op;
    enum proto_format fmt;
    bool v2;
    bool pooled;              /* through a pool of its own instead of inline */
    bool cold;                /* the pool made under failure too, its workers not awaited:
                                 a worker may have no workspace */
    /* the answer of the run without failure */
    char *want;
    size_t want_len;
    const char *want_ctype;
};

static int parse(struct call_case *k, struct proto_request *q, char why[512])
{
    const struct srv_ctx *ctx = &k->fx->ctx;
    const struct eng_info *info = k->fx->ver->info;
    struct proto_error e;
    memset(&e, 0, sizeof e);
    size_t len = strlen(k->body);
    enum proto_code rc = k->v2 ? proto_v2_parse(k->body, len, info, &ctx->lim, q, &e)
                               : proto_request_parse(k->op, k->body, len, info, &ctx->lim, q, &e);
    if (rc == PROTO_OK &&
        (rc = proto_answer_check(&ctx->lim, info, q, k->fmt, k->v2, &e)) != PROTO_OK)
        proto_request_free(q);
    if (rc != PROTO_OK) {
        snprintf(why, 512, "the request fails: %s: %.400s", proto_code_str(rc), e.msg);
        return -1;
    }
    return 0;
}

/* The out-of-memory answer: 503 out_of_memory, Retry-After, and a JSON error body naming
 * the code (one allocation fails a run, so the error body's own allocations succeed). */
static int check_nomem(const struct srv_response *s, char why[512])
{
    if (s->status != proto_code_http(PROTO_E_NOMEM) || !s->code ||
        strcmp(s->code, proto_code_str(PROTO_E_NOMEM)) != 0 || s->retry_after <= 0 ||
        !s->ctype || strcmp(s->ctype, "application/json") != 0) {
        snprintf(why, 512, "status %d code %s retry_after %d ctype %s: %.300s", s->status,
                 s->code ? s->code : "(none)", s->retry_after, s->ctype ? s->ctype : "(none)",
                 s->body ? s->body : "(no body)");
        return -1;
    }
    if (!s->body) {
        snprintf(why, 512, "503 out_of_memory without a body");
        return -1;
    }
    af_hold();
    cJSON *j = cJSON_ParseWithLength(s->body, s->len);
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(j, "code");
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(j, "error");
    bool ok = cJSON_IsString(code) && strcmp(code->valuestring, "out_of_memory") == 0 &&
              cJSON_IsString(msg) && msg->valuestring[0];
    cJSON_Delete(j);
    af_release();
    if (!ok) {
        snprintf(why, 512, "503 without a JSON out_of_memory body: %.400s", s->body);
        return -1;
    }
    return 0;
}

/* Called by the call when its answer is ready (pooled runs). */
static pthread_mutex_t wake_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake_cv = PTHREAD_COND_INITIALIZER;

static void wake(struct srv_call *c)
{
    pthread_mutex_lock(&wake_mu);
    atomic_store(&c->wake_state, 1);
    pthread_cond_broadcast(&wake_cv);
    pthread_mutex_unlock(&wake_mu);
}

/* Waits (10 s at most) until the submitted call c is answered and the pool has dropped
 * its reference.  false when that did not happen. */
static bool wait_answer(struct srv_call *c)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 10;
    pthread_mutex_lock(&wake_mu);
    while (!atomic_load(&c->wake_state) && pthread_cond_timedwait(&wake_cv, &wake_mu, &ts) == 0)
        ;
    pthread_mutex_unlock(&wake_mu);
    for (int i = 0; i < 100000 && atomic_load(&c->refs) > 1; i++) {
        struct timespec d = {0, 100000};
        nanosleep(&d, NULL);
    }
    return atomic_load(&c->wake_state) && atomic_load(&c->refs) == 1;
}

static bool run_pooled(struct srv_call *c)
{
    c->wake = wake;
    return srv_call_submit(c, 0) && wait_answer(c);
}

/* 1: a 200 with the bytes of the run without failure; 0: the out-of-memory answer; -1:
 * anything else (in why). */
static int check_answer(const struct call_case *k, const struct srv_response *s, char why[512])
{
    if (s->status != 200)
        return check_nomem(s, why);
    if (s->len != k->want_len || !s->body || memcmp(s->body, k->want, s->len) != 0 ||
        s->ctype != k->want_ctype) {
        snprintf(why, 512, "200 with other bytes (%zu, want %zu): %.200s", s->len, k->want_len,
                 s->body ? s->body : "(no body)");
        return -1;
    }
    return 1;
}

/* After a failed allocation, the next call on the same pool (ctx->pool) without failure
 * must be answered 200 with its bytes: no failure leaves the pool broken. */
static bool next_call_answered(struct call_case *k, char why[512])
{
    struct proto_request q;
    struct proto_error e;
    if (parse(k, &q, why) < 0)
        return false;
    struct srv_call *c = srv_call_new(&k->fx->ctx, k->fx->ver, &q, k->fmt, k->v2, &e);
    proto_request_free(&q);
    if (!c || !run_pooled(c)) {
        snprintf(why, 512, "the next call was not answered");
        return false; /* a call left behind: the pool may still use it */
    }
    char why2[512] = "";
    bool ok = check_answer(k, &c->resp, why2) == 1;
    if (!ok)
        snprintf(why, 512, "the next call on the pool, without failure, answered %d %s %.300s",
                 c->resp.status, c->resp.code ? c->resp.code : "", why2);
    srv_call_unref(c);
    return ok;
}

static int op_call(void *p, char why[512])
{
    struct call_case *k = p;
    struct srv_ctx *ctx = &k->fx->ctx;
    struct srv_pool *shared = ctx->pool;
    struct proto_request q;
    memset(&q, 0, sizeof q);
    af_hold();
    int ret = parse(k, &q, why);
    struct eng_ws *ws = k->pooled ? NULL : eng_ws_new();
    struct srv_pool *own = k->pooled && !k->cold ? pool_started(1000000) : NULL;
    af_release();
    if (ret < 0)
        return -1;
    if (k->cold && !(own = srv_pool_new(1, 16, 1000000, ENG_TILE_ROWS))) {
        snprintf(why, 512, "srv_pool_new failed");
        proto_request_free(&q);
        return 0; /* the daemon does not start */
    }
    if (k->pooled ? !own : !ws) {
        snprintf(why, 512, "no %s", k->pooled ? "pool" : "workspace");
        proto_request_free(&q);
        eng_ws_free(ws);
        return -1;
    }
    if (own)
        ctx->pool = own;
    struct proto_error e;
    memset(&e, 0, sizeof e);
    struct srv_call *c = srv_call_new(ctx, k->fx->ver, &q, k->fmt, k->v2, &e);
    proto_request_free(&q);
    if (!c) {
        ret = 0;
        if (e.code != PROTO_E_NOMEM || !e.msg[0]) {
            snprintf(why, 512, "srv_call_new: %s: %.400s", proto_code_str(e.code), e.msg);
            ret = -1;
        }
    } else if (k->pooled && !run_pooled(c)) {
        snprintf(why, 512, "the pooled call was not answered within 10 s");
        ret = -1; /* the call is left behind: the pool may still use it */
        c = NULL;
    } else {
        if (!k->pooled)
            srv_call_run_inline(c, ws);
        ret = check_answer(k, &c->resp, why);
    }
    srv_call_unref(c);
    eng_ws_free(ws);
    if (own && k->cold && c && ret >= 0) {
        af_hold();
        ret = next_call_answered(k, why) ? ret : -1;
        af_release();
    }
    if (own) {
        af_hold();
        srv_pool_free(own);
        af_release();
        ctx->pool = shared;
    }
    return ret;
}

/* The answer of k's call run inline without failure, into k->want. */
static void reference(struct call_case *k, const char *what)
{
    struct srv_ctx *ctx = &k->fx->ctx;
    struct proto_request q;
    char why[512] = "";
    ck_assert_msg(parse(k, &q, why) == 0, "%s: %s", what, why);
    struct proto_error e;
    struct srv_call *c = srv_call_new(ctx, k->fx->ver, &q, k->fmt, k->v2, &e);
    proto_request_free(&q);
    ck_assert_msg(c != NULL, "%s: %s", what, e.msg);
    struct eng_ws *ws = eng_ws_new();
    ck_assert_ptr_nonnull(ws);
    srv_call_run_inline(c, ws);
    eng_ws_free(ws);
    ck_assert_msg(c->resp.status == 200 && c->resp.body && c->resp.len > 0, "%s: status %d: %.300s",
                  what, c->resp.status, c->resp.body ? c->resp.body : "(no body)");
    k->want = c->resp.body;
    k->want_len = c->resp.len;
    k->want_ctype = c->resp.ctype;
    c->resp.body = NULL;
    srv_call_unref(c);
}

/* The answer without failure, then the runs with each allocation failing. */
static void run_case(struct call_case *k, const char *what)
{
    reference(k, what);
    long n = af_run_failing(what, op_call, k);
    ck_assert_msg(n >= 4, "%s: only %ld allocations: is the wrapper linked?", what, n);
    free(k->want);
}

/* ---- two calls in one batch ------------------------------------------------------------ */

/* Two forward, log_prob or sample calls that the pool computes in one batch (srv_batch_rows,
 * srv_batch_samples): both are queued while every worker is held, so the second joins the
 * first's batch. */
struct batch_case {
    struct call_case k[2];
};

static int op_batch(void *p, char why[512])
{
    struct batch_case *b = p;
    struct srv_ctx *ctx = &b->k[0].fx->ctx;
    struct srv_pool *shared = ctx->pool;
    struct proto_request q[2];
    memset(q, 0, sizeof q);
    struct hold h;
    af_hold();
    int ret = parse(&b->k[0], &q[0], why);
    if (ret == 0 && (ret = parse(&b->k[1], &q[1], why)) < 0)
        proto_request_free(&q[0]);
    struct srv_pool *own = ret == 0 ? pool_started(1000000) : NULL;
    bool held = own && hold_submit(own, &h, true);
    af_release();
    if (ret < 0)
        return -1;
    if (!held) {
        snprintf(why, 512, "no pool with its workers held");
        ret = -1;
        goto out;
    }
    ctx->pool = own;
    struct srv_call *c[2] = {NULL, NULL};
    struct proto_error e;
    memset(&e, 0, sizeof e);
    for (int i = 0; i < 2 && ret == 0; i++) {
        c[i] = srv_call_new(ctx, b->k[i].fx->ver, &q[i], PROTO_FMT_JSON, false, &e);
        if (!c[i]) {
            ret = e.code == PROTO_E_NOMEM && e.msg[0] ? 1 : -1;
            snprintf(why, 512, "srv_call_new: %s: %.400s", proto_code_str(e.code), e.msg);
        }
    }
    if (ret == 0) {
        for (int i = 0; i < 2; i++) {
            c[i]->wake = wake;
            if (!srv_call_submit(c[i], 0)) {
                snprintf(why, 512, "the pool refused call %d", i);
                atomic_store(&h.closed, 0);
                return -1; /* the other call is left behind: the pool may still use it */
            }
        }
    }
    atomic_store(&h.closed, 0);
    if (ret == 0) {
        bool answered = true;
        for (int i = 0; i < 2; i++)
            answered = answered && wait_answer(c[i]);
        if (!answered) {
            snprintf(why, 512, "the batched calls were not answered within 10 s");
            return -1; /* the calls are left behind: the pool may still use them */
        }
        struct srv_batch_stats st;
        srv_pool_batch_stats(own, &st);
        if (st.batches != 1 || st.jobs_sum != 2) {
            snprintf(why, 512, "%llu batches of %llu calls in all, not one of 2",
                     (unsigned long long)st.batches, (unsigned long long)st.jobs_sum);
            ret = -1;
        }
        int ok = 0;
        for (int i = 0; i < 2 && ret == 0; i++) {
            int r = check_answer(&b->k[i], &c[i]->resp, why);
            if (r < 0)
                ret = -1;
            ok += r == 1;
        }
        /* both answers right after a failure: srv_batch_rows ran the calls alone instead */
        if (ret == 0)
            ret = ok == 2 ? 2 : 0;
    } else {
        ret = ret == 1 ? 0 : -1;
    }
    srv_call_unref(c[0]);
    srv_call_unref(c[1]);
out:
    proto_request_free(&q[0]);
    proto_request_free(&q[1]);
    af_hold();
    srv_pool_free(own);
    af_release();
    ctx->pool = shared;
    return ret;
}

/* A second request for a batch with the first: other rows, and for a cinn y per row
 * (the first broadcasts one); other samples (other seed, outputs). */
static const char *second_body(enum eng_kind k, enum proto_op op)
{
    if (op == PROTO_OP_SAMPLE)
        return sample_body_fmt(k, PROTO_FMT_CSV);
    if (op == PROTO_OP_FORWARD)
        return k == ENG_KIND_CINN ? "{\"x\": [[0.5, 0.1, -0.2, 0.3]], \"y\": [[0, 1]]}"
               : k == ENG_KIND_FLOW ? "{\"x\": [[0.3, -0.4], [0.2, 0.2], [-1, 1]]}"
                                    : "{\"x\": [[0.5, 0.1, -0.2, 0.3]]}";
    return k == ENG_KIND_FLOW ? "{\"x\": [[0.3, -0.4]]}"
                              : "{\"x\": [[0.5, 0.1, -0.2, 0.3], [1, 0, 0, 1]], \"y\": [[0, 1], "
                                "[1, 1]]}";
}

static void run_model(int model, bool pooled)
{
    af_hooks();
    struct fixture fx;
    fixture_init(&fx, MODELS[model]);
    const struct eng_info *info = fx.ver->info;
    char what[160];
    for (int op = 0; op < PROTO_OP_COUNT; op++) {
        if (!proto_op_supported((enum proto_op)op, info->kind))
            continue;
        struct call_case k = {.fx = &fx, .op = (enum proto_op)op, .pooled = pooled};
        k.body = ob_v1_body(info->kind, k.op);
        snprintf(what, sizeof what, "%s %s%s", MODELS[model], proto_op_str(k.op),
                 pooled ? " pooled" : "");
        run_case(&k, what);
        if (k.op == PROTO_OP_SAMPLE) {
            for (int f = PROTO_FMT_CSV; f <= PROTO_FMT_NPY; f++) {
                k.fmt = (enum proto_format)f;
                k.body = sample_body_fmt(info->kind, k.fmt);
                snprintf(what, sizeof what, "%s sample %s%s", MODELS[model],
                         f == PROTO_FMT_CSV ? "csv" : "npy", pooled ? " pooled" : "");
                run_case(&k, what);
            }
        }
        if (k.op == PROTO_OP_FORWARD) {
            char *big = big_forward_body(info);
            k.body = big;
            snprintf(what, sizeof what, "%s forward of %d rows%s", MODELS[model],
                     ENG_TILE_ROWS + 44, pooled ? " pooled" : "");
            run_case(&k, what);
            if (pooled) {
                k.cold = true;
                snprintf(what, sizeof what, "%s forward of %d rows, pool made under failure",
                         MODELS[model], ENG_TILE_ROWS + 44);
                run_case(&k, what);
                k.cold = false;
            }
            free(big);
        }
    }
    struct call_case k = {.fx = &fx, .v2 = true, .pooled = pooled, .body = ob_v2_body(info->kind)};
    snprintf(what, sizeof what, "%s v2%s", MODELS[model], pooled ? " pooled" : "");
    run_case(&k, what);
    fixture_free(&fx);
}

static void run_batches(int model)
{
    af_hooks();
    struct fixture fx;
    fixture_init(&fx, MODELS[model]);
    const struct eng_info *info = fx.ver->info;
    char what[160];
    for (int op = PROTO_OP_FORWARD; op < PROTO_OP_COUNT; op++) {
        if (op == PROTO_OP_INVERSE || op == PROTO_OP_PREIMAGE || op == PROTO_OP_CALIBRATION ||
            op == PROTO_OP_MMD || !proto_op_supported((enum proto_op)op, info->kind))
            continue;
        struct batch_case b;
        memset(&b, 0, sizeof b);
        for (int i = 0; i < 2; i++) {
            b.k[i] = (struct call_case){.fx = &fx, .op = (enum proto_op)op, .pooled = true};
            b.k[i].body = i ? second_body(info->kind, b.k[i].op) : ob_v1_body(info->kind, b.k[i].op);
            snprintf(what, sizeof what, "%s %s batched", MODELS[model], proto_op_str(b.k[i].op));
            reference(&b.k[i], what);
        }
        long n = af_run_failing(what, op_batch, &b);
        ck_assert_msg(n >= 4, "%s: only %ld allocations", what, n);
        free(b.k[0].want);
        free(b.k[1].want);
    }
    fixture_free(&fx);
}

START_TEST(batched_calls_survive_every_allocation_failing)
{
    run_batches(_i);
}
END_TEST

START_TEST(inline_call_survives_every_allocation_failing)
{
    run_model(_i, false);
}
END_TEST

START_TEST(pooled_call_survives_every_allocation_failing)
{
    run_model(_i, true);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("call_allocfail");
    TCase *tc = tcase_create("inline");
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, inline_call_survives_every_allocation_failing, 0, N_MODELS);
    suite_add_tcase(s, tc);
    tc = tcase_create("pooled");
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, pooled_call_survives_every_allocation_failing, 0, N_MODELS);
    tcase_add_loop_test(tc, batched_calls_survive_every_allocation_failing, 0, N_MODELS);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN
