/*
 * http.c — libmicrohttpd glue, routing and the operational endpoints (http.h).
 *
 * Per request (struct req, in *req_cls):
 *   request line    (uri_log) the request is allocated and counted in-flight; the raw
 *                   target is checked (length, NUL and control bytes) before libmicrohttpd
 *                   decodes it (unescape: %2F stays literal)
 *   first call      the HTTP message: header size, header names, framing (one
 *                   Content-Length, no Transfer-Encoding beside it, only chunked) — a
 *                   failure is answered at once with Connection: close; then the bearer
 *                   token (--auth-token-file: a request without it is answered 401 at once,
 *                   before any body is read, with Connection: close); then route, method,
 *                   media type and declared length checks (errors are remembered, not
 *                   queued)
 *   body calls      append to the body buffer up to --max-body; beyond it, discard (and
 *                   drop the connection past PROTO_DISCARD_MAX_BYTES)
 *   final call      answer: inline endpoints at once; model operations parse, validate,
 *                   then run inline (tiny forward/log_prob with --inline-rows) or submit a
 *                   call to the pool
 *   next final call the call's answer if ready, else suspend until wake (await_call)
 *   resumed call    queue the call's response
 *   completed       access log, metrics, release the call and the request
 *
 * Per connection (struct conn, libmicrohttpd's socket context): the phase the connection
 * is in and since when — HEAD (waiting for a request line and headers), BODY (reading a
 * body), BUSY (answering).  A sweeper thread walks the connections every SWEEP_NS and cuts
 * those past --header-timeout (a 408 is written first: nothing else is writing then) or
 * --body-timeout, with shutdown(2); libmicrohttpd then reads EOF and closes the connection
 * itself.  Trickling a byte at a time resets --conn-timeout but not these deadlines.  The
 * accept policy closes connections past --max-connections at once, so they are refused
 * rather than queued in the listen backlog behind slow ones.
 */
#include "http.h"
#include "call.h"
#include "jobs.h"
#include "log.h"
#include "ui.h"
#include "../proto/answer.h"
#include "../proto/route.h"
#include "../proto/v2.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdatomic.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>

/* Bytes of an oversized body read and dropped before the connection is closed instead. */
#define PROTO_DISCARD_MAX_BYTES (64u << 20)
/* libmicrohttpd's memory per connection (request line, headers, read buffer, response
 * headers).  Requests larger than this get libmicrohttpd's own 414/431 page; the JSON
 * limits PROTO_MAX_URI_BYTES and PROTO_MAX_HEADER_BYTES sit well below it. */
#define SRV_CONN_MEMORY ((size_t)32 * 1024)

/* The sweeper's period: deadlines are enforced to within this much. */
#define SWEEP_NS (100 * 1000000LL)
/* Connections libmicrohttpd may hold beyond --max-connections, so that it keeps accepting
 * (and the accept policy refuses) instead of leaving new connections in the backlog. */
#define CONN_HEADROOM(max) ((max) / 4 + 64)
/* Listen backlog: connections are accepted (or refused) at once, so a short one suffices. */
#define LISTEN_BACKLOG 256u

enum conn_phase { CONN_HEAD, CONN_BODY, CONN_BUSY, CONN_CUT };

/* One TCP connection, on the list the sweeper walks (under srv_http.mu). */
struct conn {
    struct conn *prev, *next;
    int fd;
    atomic_int phase;        /* enum conn_phase; CONN_CUT is final */
    _Atomic int64_t since;   /* the phase's deadline counts from here (srv_now_ns) */
};

struct srv_http {
    struct MHD_Daemon *d;
    struct srv_ctx *ctx;
    int port;
    int max_conns;
    int64_t header_ns, body_ns; /* 0: no deadline */
    atomic_int open;            /* connections open */
    pthread_mutex_t mu;         /* guards conns */
    struct conn *conns;
    char *timeout_resp;         /* the raw 408 answer written before a header cut */
    size_t timeout_len;
    pthread_t sweeper;
    bool sweeper_on;
    pthread_mutex_t stop_mu;
    pthread_cond_t stop_cv;
    bool stop;
    char *cert, *key;           /* --tls-cert / --tls-key contents (PEM), NULL without TLS */
    atomic_bool starting;       /* MHD_start_daemon running: keep its first error message */
    char start_err[512];
};

struct req {
    struct srv_ctx *ctx;
    struct MHD_Connection *conn;
    struct conn *cn;            /* its connection's deadlines (NULL: none) */
    bool busy;                  /* cn is in CONN_BUSY */
    int64_t t0;
    bool started;               /* the access handler has seen it (first_call ran) */
    bool early;                 /* `early_e` is answered at the first call, then close */
    struct proto_error early_e;
    char method[16];
    char path[256];
    struct proto_match match;
    const char *operation;
    bool have_route;
    bool pending;               /* resp holds an answer decided before the body ended */
    struct srv_response resp;
    struct proto_buf body;
    size_t seen;
    bool too_large;
    struct srv_call *call;
    bool counted;               /* in ctx->calls_active */
    int status;                 /* sent */
    size_t bytes;
    const char *code;
};

/* ---- workspaces for inline calls ------------------------------------------------------- */

static pthread_key_t g_ws_key;
static pthread_once_t g_ws_once = PTHREAD_ONCE_INIT;

static void ws_destroy(void *p)
{
    eng_ws_free(p);
}

static void ws_key_init(void)
{
    pthread_key_create(&g_ws_key, ws_destroy);
}

static struct eng_ws *thread_ws(void)
{
    pthread_once(&g_ws_once, ws_key_init);
    struct eng_ws *ws = pthread_getspecific(g_ws_key);
    if (!ws) {
        ws = eng_ws_new();
        if (ws)
            pthread_setspecific(g_ws_key, ws);
    }
    return ws;
}

/* ---- responses ------------------------------------------------------------------------- */

static enum MHD_Result queue(struct req *r, struct srv_response *s)
{
    struct MHD_Response *mr = MHD_create_response_from_buffer(s->len, s->body ? s->body : "",
                                                              s->body ? MHD_RESPMEM_MUST_FREE
                                                                      : MHD_RESPMEM_PERSISTENT);
    if (!mr)
        return MHD_NO;
    s->body = NULL; /* MHD frees it */
    if (s->ctype)
        MHD_add_response_header(mr, MHD_HTTP_HEADER_CONTENT_TYPE, s->ctype);
    char tmp[32];
    if (s->retry_after > 0) {
        snprintf(tmp, sizeof tmp, "%d", s->retry_after);
        MHD_add_response_header(mr, MHD_HTTP_HEADER_RETRY_AFTER, tmp);
    }
    if (s->allow[0])
        MHD_add_response_header(mr, MHD_HTTP_HEADER_ALLOW, s->allow);
    if (s->www_authenticate)
        MHD_add_response_header(mr, MHD_HTTP_HEADER_WWW_AUTHENTICATE, s->www_authenticate);
    if (s->model[0]) {
        MHD_add_response_header(mr, "X-Model", s->model);
        MHD_add_response_header(mr, "X-Model-Version", s->version);
        MHD_add_response_header(mr, "X-Model-Sha256", s->sha256);
    }
    if (s->seed[0])
        MHD_add_response_header(mr, "X-Seed", s->seed);
    if (s->unconverged >= 0) {
        snprintf(tmp, sizeof tmp, "%ld", s->unconverged);
        MHD_add_response_header(mr, "X-Solver-Unconverged", tmp);
    }
    if (s->location[0])
        MHD_add_response_header(mr, MHD_HTTP_HEADER_LOCATION, s->location);
    if (s->pref_applied)
        MHD_add_response_header(mr, "Preference-Applied", "respond-async");
    if (s->close)
        MHD_add_response_header(mr, MHD_HTTP_HEADER_CONNECTION, "close");
    r->status = s->status;
    r->bytes = s->len;
    r->code = s->code;
    enum MHD_Result rc = MHD_queue_response(r->conn, (unsigned)s->status, mr);
    MHD_destroy_response(mr);
    return rc;
}

static enum MHD_Result answer_error(struct req *r, const struct proto_error *e)
{
    struct srv_response s;
    srv_response_init(&s);
    srv_response_error(&s, r->ctx, e);
    if (e->code == PROTO_E_METHOD)
        snprintf(s.allow, sizeof s.allow, "%s", r->match.allow);
    return queue(r, &s);
}

/* An error about the HTTP message itself: answered now, before any body is read, and the
 * connection closed after it (what follows cannot be trusted to be a request). */
static enum MHD_Result answer_close(struct req *r, const struct proto_error *e)
{
    struct srv_response s;
    srv_response_init(&s);
    srv_response_error(&s, r->ctx, e);
    s.close = true;
    return queue(r, &s);
}

static enum MHD_Result answer_buf(struct req *r, int status, const char *ctype,
                                  struct proto_buf *b)
{
    if (proto_buf_failed(b)) {
        proto_buf_free(b);
        struct proto_error e;
        proto_errorf(&e, PROTO_E_NOMEM, "out of memory writing the answer");
        return answer_error(r, &e);
    }
    struct srv_response s;
    srv_response_init(&s);
    srv_response_take(&s, status, ctype, b);
    return queue(r, &s);
}

static enum MHD_Result answer_text(struct req *r, int status, const char *json)
{
    struct proto_buf b;
    proto_buf_init(&b, 0);
    proto_buf_puts(&b, json);
    return answer_buf(r, status, "application/json", &b);
}

/* ---- operational endpoints ------------------------------------------------------------- */

/* GET /readyz and /v2/health/ready: 200 while not draining, once the first repository pass
 * has completed, with at least one model READY (or, with --allow-empty, a readable
 * repository that holds no models).  Otherwise 503 with the error envelope plus
 * "ready": false, the model counts and "reasons" (srv_repo_ready). */
static enum MHD_Result do_readyz(struct req *r, bool v2)
{
    struct srv_ctx *ctx = r->ctx;
    int ready, loading, unav;
    srv_repo_counts(ctx->repo, &ready, &loading, &unav);
    struct proto_buf reasons;
    proto_buf_init(&reasons, 0);
    char msg[1024];
    enum proto_code code = PROTO_E_UNAVAILABLE;
    bool ok;
    if (atomic_load(&ctx->draining)) {
        ok = false;
        code = PROTO_E_DRAINING;
        snprintf(msg, sizeof msg, "the server is shutting down");
        proto_buf_puts(&reasons, "[\"the server is shutting down (SIGTERM or SIGINT): "
                                 "draining\"]");
    } else {
        ok = srv_repo_ready(ctx->repo, ctx->cfg && ctx->cfg->allow_empty, msg, sizeof msg,
                            &reasons);
    }
    struct proto_buf b;
    proto_buf_init(&b, 0);
    if (ok) {
        proto_buf_free(&reasons);
        if (v2)
            proto_buf_puts(&b, "{\"ready\":true}\n");
        else
            proto_buf_printf(&b, "{\"ready\":true,\"models\":{\"ready\":%d,\"loading\":%d,"
                             "\"unavailable\":%d}}\n", ready, loading, unav);
        return answer_buf(r, 200, "application/json", &b);
    }
    proto_buf_puts(&b, "{\"error\":");
    proto_buf_json_str(&b, msg);
    proto_buf_printf(&b, ",\"code\":\"%s\",\"ready\":false,\"models\":{\"ready\":%d,"
                     "\"loading\":%d,\"unavailable\":%d},\"reasons\":", proto_code_str(code),
                     ready, loading, unav);
    if (proto_buf_failed(&reasons))
        b.state = PROTO_BUF_NOMEM;
    else if (reasons.len)
        proto_buf_put(&b, reasons.p, reasons.len);
    proto_buf_puts(&b, "}\n");
    proto_buf_free(&reasons);
    if (proto_buf_failed(&b)) {
        proto_buf_free(&b);
        struct proto_error e;
        proto_errorf(&e, code, "%s", msg);
        return answer_error(r, &e);
    }
    struct srv_response s;
    srv_response_init(&s);
    srv_response_take(&s, 503, "application/json", &b);
    s.code = proto_code_str(code);
    s.retry_after = ctx->cfg && ctx->cfg->retry_after_s > 0 ? ctx->cfg->retry_after_s : 1;
    return queue(r, &s);
}

static enum MHD_Result do_metrics(struct req *r)
{
    struct srv_ctx *ctx = r->ctx;
    struct proto_buf b;
    proto_buf_init(&b, 0);
    srv_metrics_render(ctx->metrics, &b);
    srv_repo_write_metrics(ctx->repo, &b);
    struct srv_batch_stats bs;
    srv_pool_batch_stats(ctx->pool, &bs);
    srv_metrics_render_batches(&b, &bs);
    uint64_t by_state[SRV_TASK_NSTATES], jobs_total;
    const char *names[SRV_TASK_NSTATES];
    for (int i = 0; i < SRV_TASK_NSTATES; i++)
        names[i] = srv_task_state_str((enum srv_task_state)i);
    srv_jobs_counts(ctx->jobs, by_state, &jobs_total);
    srv_metrics_render_jobs(&b, names, by_state, SRV_TASK_NSTATES, jobs_total);
    proto_buf_printf(&b, "# HELP innserve_queue_depth Jobs waiting for a worker.\n"
                     "# TYPE innserve_queue_depth gauge\ninnserve_queue_depth %d\n"
                     "# HELP innserve_jobs_active Jobs submitted and not yet done.\n"
                     "# TYPE innserve_jobs_active gauge\ninnserve_jobs_active %d\n"
                     "# HELP innserve_workers Compute threads.\n"
                     "# TYPE innserve_workers gauge\ninnserve_workers %d\n"
                     "# HELP innserve_draining 1 while shutting down.\n"
                     "# TYPE innserve_draining gauge\ninnserve_draining %d\n",
                     srv_pool_depth(ctx->pool), srv_pool_active(ctx->pool),
                     srv_pool_workers(ctx->pool), atomic_load(&ctx->draining) ? 1 : 0);
    return answer_buf(r, 200, "text/plain; version=0.0.4; charset=utf-8", &b);
}

static enum MHD_Result do_model_get(struct req *r, enum proto_route_id id)
{
    struct srv_version *v;
    struct proto_error e;
    const char *ver = r->match.version[0] ? r->match.version : NULL;
    if (id == PROTO_R_V2_MODEL_READY || id == PROTO_R_V2_VMODEL_READY) {
        enum proto_code rc = srv_repo_get(r->ctx->repo, r->match.model, ver, &v, &e);
        if (rc == PROTO_E_MODEL)
            return answer_error(r, &e);
        struct proto_buf b;
        proto_buf_init(&b, 0);
        proto_buf_puts(&b, "{\"name\":");
        proto_buf_json_str(&b, r->match.model);
        if (rc == PROTO_OK) {
            proto_buf_puts(&b, ",\"ready\":true}\n");
            srv_version_unref(v);
            return answer_buf(r, 200, "application/json", &b);
        }
        proto_buf_puts(&b, ",\"ready\":false,\"error\":");
        proto_buf_json_str(&b, e.msg);
        proto_buf_puts(&b, ",\"code\":\"model_unavailable\"}\n");
        return answer_buf(r, 503, "application/json", &b);
    }
    if (srv_repo_get(r->ctx->repo, r->match.model, ver, &v, &e) != PROTO_OK)
        return answer_error(r, &e);
    struct proto_model_id mid = {v->name, v->version, v->info->sha256};
    struct proto_buf b;
    proto_buf_init(&b, 0);
    if (id == PROTO_R_MODEL)
        proto_write_metadata(&b, &mid, v->info, eng_model_certificate(v->model), v->load_ms);
    else if (id == PROTO_R_CERTIFICATE)
        proto_write_certificate(&b, &mid, eng_model_certificate(v->model));
    else
        proto_v2_write_metadata(&b, &mid, v->info);
    srv_version_unref(v);
    return answer_buf(r, 200, "application/json", &b);
}

/* ---- the web page ---------------------------------------------------------------------- */

/* GET /, /ui/app.js, /ui/style.css: the embedded files (ui.h) with their type, ETag and a
 * strict Content-Security-Policy; 304 when If-None-Match names the current ETag. */
static enum MHD_Result do_ui(struct req *r)
{
    const struct srv_ui_asset *a = srv_ui_find(r->match.route->pattern);
    if (!a) {
        struct proto_error e;
        proto_errorf(&e, PROTO_E_ROUTE, "no such endpoint: GET %.200s", r->path);
        return answer_error(r, &e);
    }
    const char *inm = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                                  MHD_HTTP_HEADER_IF_NONE_MATCH);
    bool fresh = inm && strstr(inm, a->etag) != NULL;
    struct MHD_Response *mr = MHD_create_response_from_buffer(
        fresh ? 0 : a->len, fresh ? (void *)"" : (void *)a->data, MHD_RESPMEM_PERSISTENT);
    if (!mr)
        return MHD_NO;
    if (!fresh)
        MHD_add_response_header(mr, MHD_HTTP_HEADER_CONTENT_TYPE, a->ctype);
    MHD_add_response_header(mr, MHD_HTTP_HEADER_ETAG, a->etag);
    MHD_add_response_header(mr, MHD_HTTP_HEADER_CACHE_CONTROL, SRV_UI_CACHE);
    MHD_add_response_header(mr, "Content-Security-Policy", SRV_UI_CSP);
    MHD_add_response_header(mr, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(mr, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(mr, "X-Frame-Options", "DENY");
    r->status = fresh ? 304 : 200;
    r->bytes = fresh ? 0 : a->len;
    r->code = NULL;
    enum MHD_Result rc = MHD_queue_response(r->conn, (unsigned)r->status, mr);
    MHD_destroy_response(mr);
    return rc;
}

/* ---- model operations ------------------------------------------------------------------ */

/* Waiting for the pool.  The call is submitted at the first final call, and the connection
 * suspended at the next one (libmicrohttpd calls the handler again at once while no answer
 * is queued), not in the same pass: libmicrohttpd 0.9.75 does not update a connection's
 * poll interest while it is suspended, and a connection suspended in the pass that read its
 * request still wants to read when resumed.  It then reads before calling the handler, and
 * an EOF there (a client that sent its pipelined requests and shut down its sending side)
 * aborts the request unanswered, with the requests behind it.  Suspended one pass later,
 * the connection waits for nothing but the answer.  wake_state settles who resumes:
 * the HTTP thread moves it NONE -> SUSPENDED after suspending, wake NONE -> WOKEN (then the
 * HTTP thread, not yet suspended, finds the call done) or resumes a SUSPENDED connection;
 * completed() sets GONE (the connection is closing: wake leaves it alone). */
enum { WAKE_NONE, WAKE_SUSPENDED, WAKE_WOKEN, WAKE_GONE };

static void wake(struct srv_call *c)
{
    int exp = WAKE_NONE;
    if (!atomic_compare_exchange_strong(&c->wake_state, &exp, WAKE_WOKEN) &&
        exp == WAKE_SUSPENDED)
        MHD_resume_connection(c->wake_arg);
}

/* The final call of a submitted call whose answer is not ready: suspend until wake. */
static enum MHD_Result await_call(struct req *r)
{
    MHD_suspend_connection(r->conn);
    int exp = WAKE_NONE;
    if (!atomic_compare_exchange_strong(&r->call->wake_state, &exp, WAKE_SUSPENDED))
        MHD_resume_connection(r->conn); /* done meanwhile: the resumed call answers */
    return MHD_YES;
}

static uint64_t random_seed(void)
{
    uint64_t s = 0;
    if (getrandom(&s, sizeof s, 0) != (ssize_t)sizeof s)
        s = (uint64_t)srv_now_ns() * 0x9E3779B97F4A7C15ull;
    return s & ((1ull << 53) - 1);
}

/* The header Prefer (RFC 7240) names the preference respond-async. */
static bool prefer_async(struct MHD_Connection *conn)
{
    const char *p = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Prefer");
    while (p && *p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        size_t n = strcspn(p, ",; \t");
        if (n == 13 && !strncasecmp(p, "respond-async", 13))
            return true;
        p += strcspn(p, ",");
    }
    return false;
}

static enum MHD_Result query_item(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value)
{
    struct proto_query *q = cls;
    if (q->n < PROTO_MAX_QUERY_PARAMS) {
        q->key[q->n] = key ? key : "";
        q->val[q->n] = value ? value : "";
    }
    q->n++;
    return MHD_YES;
}

/* The request's query parameters (borrowed from libmicrohttpd for the request's life);
 * more than PROTO_MAX_QUERY_PARAMS is a 400. */
static enum proto_code read_query(struct MHD_Connection *conn, struct proto_query *q,
                                  struct proto_error *e)
{
    q->n = 0;
    MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, query_item, q);
    if (q->n > PROTO_MAX_QUERY_PARAMS)
        return proto_errorf(e, PROTO_E_FIELD, "the query has %d parameters, more than the "
                            "server reads (%d)", q->n, PROTO_MAX_QUERY_PARAMS);
    return PROTO_OK;
}

static enum MHD_Result do_model_op(struct req *r, enum proto_route_id id)
{
    struct srv_ctx *ctx = r->ctx;
    struct proto_error e;
    /* counted before the draining check: drain waits for every counted call */
    atomic_fetch_add(&ctx->calls_active, 1);
    r->counted = true;
    if (atomic_load(&ctx->draining)) {
        proto_errorf(&e, PROTO_E_DRAINING, "the server is shutting down and takes no new "
                     "work; retry elsewhere");
        return answer_error(r, &e);
    }
    bool v2 = id == PROTO_R_V2_INFER || id == PROTO_R_V2_VINFER;
    struct srv_version *v;
    if (srv_repo_get(ctx->repo, r->match.model, r->match.version, &v, &e) != PROTO_OK)
        return answer_error(r, &e);
    struct proto_request q;
    struct proto_query query;
    enum proto_code rc;
    enum proto_op op = r->match.route->op;
    const char *body = r->body.p ? r->body.p : "";
    if (read_query(r->conn, &query, &e) != PROTO_OK) {
        srv_version_unref(v);
        return answer_error(r, &e);
    }
    if (v2)
        rc = proto_v2_parse(body, r->body.len, v->info, &ctx->lim, &q, &e);
    else if (proto_content_type_npy(MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                                                MHD_HTTP_HEADER_CONTENT_TYPE)))
        rc = proto_request_parse_npy(op, body, r->body.len, &query, v->info, &ctx->lim, &q, &e);
    else
        rc = proto_request_parse(op, body, r->body.len, v->info, &ctx->lim, &q, &e);
    if (rc != PROTO_OK) {
        srv_version_unref(v);
        return answer_error(r, &e);
    }
    enum proto_format fmt = PROTO_FMT_JSON;
    if (!v2 &&
        proto_answer_format(&query, MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                                                MHD_HTTP_HEADER_ACCEPT),
                            v->info, &q, &fmt, &e) != PROTO_OK) {
        proto_request_free(&q);
        srv_version_unref(v);
        return answer_error(r, &e);
    }
    if (proto_answer_check(&ctx->lim, v->info, &q, fmt, v2, &e) != PROTO_OK) {
        proto_request_free(&q);
        srv_version_unref(v);
        return answer_error(r, &e);
    }
    if (!q.seed_given && (q.op == PROTO_OP_SAMPLE || q.op == PROTO_OP_PREIMAGE ||
                          q.op == PROTO_OP_CALIBRATION || q.op == PROTO_OP_MMD))
        q.seed = random_seed();
    /* a job: "async": true in the body or Prefer: respond-async (ignored by the operations
     * that cannot run as jobs, and by V2) */
    bool pref = !v2 && proto_op_async(q.op) && prefer_async(r->conn);
    if (pref)
        q.async = true;
    struct srv_call *c = srv_call_new(ctx, v, &q, fmt, v2, &e);
    srv_version_unref(v);
    proto_request_free(&q);
    if (!c)
        return answer_error(r, &e);
    if (c->req.async) {
        /* a job: 202 now, the work on the pool (jobs.h) */
        struct srv_response s;
        srv_response_init(&s);
        srv_jobs_submit(ctx->jobs, c, pref, &s);
        return queue(r, &s);
    }
    r->call = c;
    long rows = c->req.op == PROTO_OP_FORWARD || c->req.op == PROTO_OP_LOG_PROB
                    ? c->req.x.rows : -1;
    if (rows >= 0 && rows <= ctx->cfg->inline_rows) {
        struct eng_ws *ws = thread_ws();
        if (ws) {
            srv_call_run_inline(c, ws);
            return queue(r, &c->resp);
        }
    }
    c->wake = wake;
    c->wake_arg = r->conn;
    int64_t deadline = r->t0 + (int64_t)ctx->cfg->deadline_ms * 1000000LL;
    if (!srv_call_submit(c, deadline)) {
        /* the queue is full: complete the call here (the next final call answers) */
        proto_errorf(&e, PROTO_E_OVERLOADED, "the server is busy (%d jobs queued, --queue); "
                     "retry after the Retry-After delay", srv_pool_depth(ctx->pool));
        srv_call_fail(c, &e);
    }
    return MHD_YES;
}

/* ---- the access handler ---------------------------------------------------------------- */

static enum MHD_Result dispatch(struct req *r)
{
    enum proto_route_id id = r->match.route->id;
    struct proto_buf b;
    switch (id) {
    case PROTO_R_HEALTHZ:
        return answer_text(r, 200, "{\"status\":\"ok\"}\n");
    case PROTO_R_V2_LIVE:
        return answer_text(r, 200, "{\"live\":true}\n");
    case PROTO_R_READYZ:
        return do_readyz(r, false);
    case PROTO_R_V2_READY:
        return do_readyz(r, true);
    case PROTO_R_METRICS:
        return do_metrics(r);
    case PROTO_R_MODELS:
        proto_buf_init(&b, 0);
        srv_repo_write_list(r->ctx->repo, &b);
        return answer_buf(r, 200, "application/json", &b);
    case PROTO_R_V2_SERVER:
        proto_buf_init(&b, 0);
        proto_v2_write_server(&b, SRV_VERSION);
        return answer_buf(r, 200, "application/json", &b);
    case PROTO_R_JOBS:
    case PROTO_R_JOB:
    case PROTO_R_JOB_RESULT: {
        struct srv_response s;
        srv_response_init(&s);
        if (id == PROTO_R_JOBS)
            srv_jobs_list(r->ctx->jobs, &s);
        else if (id == PROTO_R_JOB_RESULT)
            srv_jobs_result(r->ctx->jobs, r->match.job, &s);
        else if (!strcmp(r->method, "DELETE"))
            srv_jobs_delete(r->ctx->jobs, r->match.job, &s);
        else
            srv_jobs_get(r->ctx->jobs, r->match.job, &s);
        return queue(r, &s);
    }
    case PROTO_R_MODEL:
    case PROTO_R_CERTIFICATE:
    case PROTO_R_V2_MODEL:
    case PROTO_R_V2_VMODEL:
    case PROTO_R_V2_MODEL_READY:
    case PROTO_R_V2_VMODEL_READY:
        return do_model_get(r, id);
    case PROTO_R_UI_PAGE:
    case PROTO_R_UI_JS:
    case PROTO_R_UI_CSS:
        return do_ui(r);
    default:
        return do_model_op(r, id);
    }
}

/* Bounded string copy (always NUL-terminated). */
static void copy(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = 0;
}

static void remember(struct req *r, const struct proto_error *e)
{
    if (r->pending)
        return;
    r->pending = true;
    srv_response_error(&r->resp, r->ctx, e);
    if (e->code == PROTO_E_METHOD)
        snprintf(r->resp.allow, sizeof r->resp.allow, "%s", r->match.allow);
}

/* Moves c into phase p counting from `since`; false when the sweeper has cut it. */
static bool conn_enter(struct conn *c, int p, int64_t since)
{
    if (!c)
        return true;
    int cur = atomic_load(&c->phase);
    atomic_store(&c->since, since);
    do {
        if (cur == CONN_CUT)
            return false;
    } while (!atomic_compare_exchange_weak(&c->phase, &cur, p));
    return true;
}

/* A request, counted in flight; NULL when out of memory. */
static struct req *req_new(struct srv_ctx *ctx, struct MHD_Connection *conn)
{
    struct req *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->ctx = ctx;
    r->conn = conn;
    r->t0 = srv_now_ns();
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    r->cn = ci ? ci->socket_context : NULL;
    srv_response_init(&r->resp);
    proto_buf_init(&r->body, ctx->lim.max_body_bytes);
    r->operation = "none";
    srv_metrics_in_flight(ctx->metrics, 1);
    return r;
}

/* ---- the HTTP message ------------------------------------------------------------------ */

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : (tolower((unsigned char)c) - 'a' + 10);
}

/* URL decoding for libmicrohttpd (path and query): %XX becomes its byte, except %2F, which
 * stays literal (an encoded slash belongs to its path segment and never separates
 * segments), and %00, which stays literal (uri_log refuses such a path first).  Malformed
 * escapes stay as they are. */
static size_t unescape(void *cls, struct MHD_Connection *conn, char *s)
{
    char *w = s;
    const char *p = s;
    while (*p) {
        if (p[0] == '%' && isxdigit((unsigned char)p[1]) && isxdigit((unsigned char)p[2])) {
            int v = hexval(p[1]) * 16 + hexval(p[2]);
            if (v != '/' && v != 0) {
                *w++ = (char)v;
                p += 3;
                continue;
            }
        }
        *w++ = *p++;
    }
    *w = 0;
    return (size_t)(w - s);
}

/* Called with the raw request target as soon as the request line is read: allocates the
 * request (libmicrohttpd hands it to every later callback) and checks the target before
 * it is decoded.  A failure is answered at the first call of the access handler. */
static void *uri_log(void *cls, const char *uri, struct MHD_Connection *conn)
{
    struct req *r = req_new(cls, conn);
    if (!r || !uri)
        return r;
    size_t n = strlen(uri);
    if (n > PROTO_MAX_URI_BYTES) {
        r->early = true;
        proto_errorf(&r->early_e, PROTO_E_URI_TOO_LONG, "the request target is %zu bytes, "
                     "more than the server accepts (%d)", n, PROTO_MAX_URI_BYTES);
        return r;
    }
    for (const char *p = uri; *p && *p != '?'; p++) {
        unsigned char c = (unsigned char)*p;
        if (c < 0x20 || c == 0x7f) {
            r->early = true;
            proto_errorf(&r->early_e, PROTO_E_BAD_REQUEST, "the path contains the control "
                         "byte 0x%02x", c);
            return r;
        }
        if (c == '%' && p[1] == '0' && p[2] == '0') {
            r->early = true;
            proto_errorf(&r->early_e, PROTO_E_BAD_REQUEST, "the path contains %%00 (an "
                         "encoded NUL byte), which no resource name holds");
            return r;
        }
    }
    return r;
}

/* RFC 9110 token characters (header field names). */
static bool is_token(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (!(isalnum(c) || strchr("!#$%&'*+-.^_`|~", c)))
            return false;
    }
    return true;
}

struct header_scan {
    int n_length, n_te;
    const char *te;
    const char *bad_name;
};

static enum MHD_Result scan_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value)
{
    struct header_scan *h = cls;
    if (!key)
        return MHD_YES;
    if (!h->bad_name && !is_token(key))
        h->bad_name = key;
    if (!strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH))
        h->n_length++;
    else if (!strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING)) {
        h->n_te++;
        h->te = value ? value : "";
    }
    return MHD_YES;
}

/* The message's size, header names and body framing (RFC 9112 section 6): PROTO_OK, or
 * the error to answer before reading a body whose extent is ambiguous.  A server behind a
 * proxy must not guess here: the proxy may have framed the body differently. */
static enum proto_code check_message(struct MHD_Connection *conn, struct proto_error *e)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE);
    if (ci && ci->header_size > PROTO_MAX_HEADER_BYTES)
        return proto_errorf(e, PROTO_E_HEADERS_TOO_LARGE, "the request line and headers are "
                            "%zu bytes, more than the server accepts (%d)", ci->header_size,
                            PROTO_MAX_HEADER_BYTES);
    struct header_scan h = {0};
    MHD_get_connection_values(conn, MHD_HEADER_KIND, scan_header, &h);
    if (h.bad_name)
        return proto_errorf(e, PROTO_E_BAD_REQUEST, "the header name '%.64s' is not a valid "
                            "token (no whitespace before the colon)", h.bad_name);
    if (h.n_te && h.n_length)
        return proto_errorf(e, PROTO_E_BAD_REQUEST, "the request has both Transfer-Encoding "
                            "and Content-Length; send one of them");
    if (h.n_length > 1)
        return proto_errorf(e, PROTO_E_BAD_REQUEST, "Content-Length appears %d times; send "
                            "it once", h.n_length);
    if (h.n_te > 1 || (h.n_te && strcasecmp(h.te, "chunked") != 0))
        return proto_errorf(e, PROTO_E_BAD_REQUEST, "Transfer-Encoding '%.64s' is not "
                            "supported; send Content-Length, or Transfer-Encoding: chunked "
                            "once", h.n_te > 1 ? "(given twice)" : h.te);
    return PROTO_OK;
}

/* Routes that answer without the bearer token while --auth-probes is open: the health
 * probes, so an orchestrator's liveness and readiness checks need no secret. */
static bool is_probe(const struct proto_match *m)
{
    if (!m->route)
        return false;
    switch (m->route->id) {
    case PROTO_R_HEALTHZ:
    case PROTO_R_READYZ:
    case PROTO_R_V2_LIVE:
    case PROTO_R_V2_READY:
        return true;
    default:
        return false;
    }
}

/* The web page and its assets: open under --auth-token-file (they hold no data; the API
 * calls the page makes carry the token). */
static bool is_page(const struct proto_match *m)
{
    return m->route && (m->route->id == PROTO_R_UI_PAGE || m->route->id == PROTO_R_UI_JS ||
                        m->route->id == PROTO_R_UI_CSS);
}

/* --auth-token-file: true when the request may go on; otherwise r->resp is the 401, to be
 * answered at once with Connection: close. */
static bool authorized(struct req *r)
{
    struct srv_ctx *ctx = r->ctx;
    if (!ctx->auth || (ctx->cfg->auth_probes_open && is_probe(&r->match)) ||
        is_page(&r->match))
        return true;
    const char *h = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                                MHD_HTTP_HEADER_AUTHORIZATION);
    enum srv_auth_result a = srv_auth_check(ctx->auth, h);
    if (a == SRV_AUTH_OK)
        return true;
    struct proto_error e;
    if (a == SRV_AUTH_MISSING)
        proto_errorf(&e, PROTO_E_UNAUTHORIZED, "this server requires a bearer token: send "
                     "the header 'Authorization: Bearer <token>'");
    else
        proto_errorf(&e, PROTO_E_UNAUTHORIZED, "the bearer token is not valid (send "
                     "'Authorization: Bearer <token>' with the server's current token)");
    srv_response_error(&r->resp, ctx, &e);
    r->resp.www_authenticate = a == SRV_AUTH_MISSING
                                   ? "Bearer realm=\"innserve\""
                                   : "Bearer realm=\"innserve\", error=\"invalid_token\"";
    r->resp.close = true;
    return false;
}

static enum MHD_Result first_call(struct srv_ctx *ctx, struct MHD_Connection *conn,
                                  const char *url, const char *method, void **req_cls)
{
    struct req *r = *req_cls;
    if (!r) {
        r = req_new(ctx, conn);
        if (!r)
            return MHD_NO;
        *req_cls = r;
    }
    r->started = true;
    if (!conn_enter(r->cn, CONN_BODY, srv_now_ns()))
        return MHD_NO; /* cut at the header deadline meanwhile */
    copy(r->method, sizeof r->method, method);
    copy(r->path, sizeof r->path, url);
    if (r->early)
        return answer_close(r, &r->early_e);
    if (check_message(conn, &r->early_e) != PROTO_OK)
        return answer_close(r, &r->early_e);
    struct proto_error e;
    enum proto_code rc = proto_route_match(method, url, &r->match, &e);
    if (r->match.route)
        r->operation = r->match.route->operation;
    if (!authorized(r))
        return queue(r, &r->resp); /* nothing else is said; the body is never read */
    if (rc != PROTO_OK) {
        remember(r, &e);
        return MHD_YES;
    }
    r->have_route = true;
    if (!(r->match.route->methods & PROTO_M_POST))
        return MHD_YES;
    const char *ct = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_TYPE);
    bool npy = proto_content_type_npy(ct);
    if (npy && !proto_op_takes_npy(r->match.route->op)) {
        proto_errorf(&e, PROTO_E_MEDIA, "Content-Type '%.64s' is taken by forward, inverse, "
                     "log_prob and sample only; send this body as application/json", ct);
        remember(r, &e);
        return MHD_YES;
    }
    if (!npy && !proto_content_type_ok(ct)) {
        proto_errorf(&e, PROTO_E_MEDIA, "Content-Type '%.64s' is not supported; send the body "
                     "as application/json", ct);
        remember(r, &e);
        return MHD_YES;
    }
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        char *end;
        unsigned long long n = strtoull(cl, &end, 10);
        if (*end == 0 && n > ctx->lim.max_body_bytes) {
            proto_errorf(&e, PROTO_E_BODY_TOO_LARGE, "the body is %llu bytes, more than the "
                         "server accepts (%zu, --max-body)", n, ctx->lim.max_body_bytes);
            remember(r, &e);
            r->too_large = true;
            const char *ex = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                         MHD_HTTP_HEADER_EXPECT);
            if (ex && !strcasecmp(ex, "100-continue")) {
                /* the client waits for 100 Continue: refuse now, the body never comes */
                r->pending = false;
                return queue(r, &r->resp);
            }
        }
    }
    return MHD_YES;
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *conn, const char *url,
                               const char *method, const char *version,
                               const char *upload_data, size_t *upload_data_size,
                               void **req_cls)
{
    struct srv_ctx *ctx = cls;
    struct req *r = *req_cls;
    if (!r || !r->started)
        return first_call(ctx, conn, url, method, req_cls);
    if (r->status)
        return MHD_YES; /* answered early (413 before the body) */
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        r->seen += n;
        *upload_data_size = 0;
        if (r->pending && !r->too_large)
            return MHD_YES; /* discard: an answer is already decided */
        if (!r->too_large) {
            proto_buf_put(&r->body, upload_data, n);
            if (r->body.state == PROTO_BUF_OVER) {
                struct proto_error e;
                proto_errorf(&e, PROTO_E_BODY_TOO_LARGE, "the body is larger than the server "
                             "accepts (%zu bytes, --max-body)", ctx->lim.max_body_bytes);
                remember(r, &e);
                r->too_large = true;
                proto_buf_free(&r->body);
            } else if (r->body.state == PROTO_BUF_NOMEM) {
                struct proto_error e;
                proto_errorf(&e, PROTO_E_NOMEM, "out of memory reading the body");
                remember(r, &e);
                proto_buf_free(&r->body);
            }
        }
        if (r->too_large && r->seen > PROTO_DISCARD_MAX_BYTES)
            return MHD_NO; /* stop reading an endless oversized body */
        return MHD_YES;
    }
    /* final call */
    if (!r->busy) {
        r->busy = true;
        if (!conn_enter(r->cn, CONN_BUSY, 0))
            return MHD_NO; /* cut at the body deadline meanwhile */
    }
    if (r->call) {
        if (atomic_load_explicit(&r->call->state, memory_order_acquire) != SRV_CALL_DONE)
            return await_call(r);
        if (r->status)
            return MHD_YES;
        return queue(r, &r->call->resp);
    }
    if (r->pending)
        return queue(r, &r->resp);
    return dispatch(r);
}

static void completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                      enum MHD_RequestTerminationCode toe)
{
    struct srv_ctx *ctx = cls;
    struct req *r = *req_cls;
    if (!r)
        return;
    *req_cls = NULL;
    int64_t end = srv_now_ns();
    /* a kept-alive connection waits for its next request: idle up to --conn-timeout, then
     * --header-timeout for the request line and headers */
    conn_enter(r->cn, CONN_HEAD, end + (int64_t)ctx->cfg->conn_timeout_s * 1000000000LL);
    double dur = (double)(end - r->t0) * 1e-9;
    double qw = -1, comp = -1;
    /* the metrics label only names the repository registered; a 404 for a model it has
     * dropped counts under model="" too */
    const char *model = r->code && (!strcmp(r->code, "model_not_found") ||
                                    !strcmp(r->code, "not_found")) ? "" : r->match.model;
    if (r->call && r->call->timed && r->call->job.t_first) {
        qw = (double)(r->call->job.t_first - r->call->job.t_submit) * 1e-9;
        comp = (double)(r->call->job.t_last - r->call->job.t_first) * 1e-9;
    }
    int status = r->status ? r->status : 499; /* 499: closed before an answer */
    srv_metrics_request(ctx->metrics, model, r->operation, status, dur, qw, comp);
    if (srv_log_access_enabled() && srv_log_enabled(SRV_LOG_INFO)) {
        struct proto_buf b;
        proto_buf_init(&b, 0);
        proto_buf_puts(&b, "\"method\":");
        proto_buf_json_str(&b, r->method);
        proto_buf_puts(&b, ",\"path\":");
        proto_buf_json_str(&b, r->path);
        proto_buf_puts(&b, ",\"model\":");
        proto_buf_json_str(&b, r->match.model);
        if (r->call) {
            proto_buf_puts(&b, ",\"version\":");
            proto_buf_json_str(&b, r->call->ver->version);
        }
        proto_buf_puts(&b, ",\"operation\":");
        proto_buf_json_str(&b, r->call ? proto_op_str(r->call->req.op) : r->operation);
        proto_buf_printf(&b, ",\"status\":%d,\"duration_ms\":%.3f,\"bytes\":%zu", status,
                         dur * 1e3, r->bytes);
        if (qw >= 0)
            proto_buf_printf(&b, ",\"queue_ms\":%.3f,\"compute_ms\":%.3f,\"format_ms\":%.3f",
                             qw * 1e3, comp * 1e3, r->call->format_ms);
        if (r->code)
            proto_buf_printf(&b, ",\"code\":\"%s\"", r->code);
        if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
            proto_buf_printf(&b, ",\"terminated\":%d", (int)toe);
        proto_buf_putc(&b, 0);
        if (!proto_buf_failed(&b))
            srv_log_line(SRV_LOG_INFO, "access", b.p);
        proto_buf_free(&b);
    }
    if (r->call) {
        atomic_store(&r->call->wake_state, WAKE_GONE);
        srv_call_unref(r->call);
    }
    if (r->counted)
        atomic_fetch_sub(&ctx->calls_active, 1);
    srv_response_free(&r->resp);
    proto_buf_free(&r->body);
    free(r);
    srv_metrics_in_flight(ctx->metrics, -1);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    struct srv_http *h = cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = 0;
    if (h && atomic_load(&h->starting) && !h->start_err[0])
        snprintf(h->start_err, sizeof h->start_err, "%s", msg);
    srv_logf(SRV_LOG_DEBUG, "mhd", "%s", msg);
}

/* Bytes of a PEM file for --tls-cert / --tls-key (NUL-terminated, malloc'd), checked to
 * hold a `-----BEGIN ...` block of the expected kind.  NULL with err naming the file. */
#define TLS_PEM_MAX_BYTES (1u << 20)
static char *read_pem(const char *path, const char *flag, bool key, char *err, size_t cap)
{
    FILE *f = fopen(path, "rbe");
    if (!f) {
        snprintf(err, cap, "%s %s: cannot open: %s", flag, path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(TLS_PEM_MAX_BYTES + 1);
    size_t n = buf ? fread(buf, 1, TLS_PEM_MAX_BYTES + 1, f) : 0;
    bool rd_err = ferror(f);
    struct stat st;
    bool world = fstat(fileno(f), &st) == 0 && (st.st_mode & S_IROTH);
    fclose(f);
    const char *why = NULL;
    if (!buf)
        why = "out of memory";
    else if (rd_err)
        why = "cannot read it";
    else if (n > TLS_PEM_MAX_BYTES)
        why = "larger than 1 MiB: not a PEM file";
    if (!why) {
        buf[n] = 0;
        if (memchr(buf, 0, n))
            why = "it holds NUL bytes: not a PEM file (DER certificates and keys must be "
                  "converted to PEM)";
        else if (!key && !strstr(buf, "-----BEGIN CERTIFICATE-----"))
            why = "no '-----BEGIN CERTIFICATE-----' block: not a PEM certificate";
        else if (key && strstr(buf, "-----BEGIN ENCRYPTED PRIVATE KEY-----"))
            why = "the key is encrypted; innserve needs it unencrypted (protect the file "
                  "instead)";
        else if (key && !strstr(buf, "PRIVATE KEY-----"))
            why = "no '-----BEGIN ... PRIVATE KEY-----' block: not a PEM private key";
    }
    if (why) {
        snprintf(err, cap, "%s %s: %s", flag, path, why);
        if (buf)
            explicit_bzero(buf, n < TLS_PEM_MAX_BYTES ? n : TLS_PEM_MAX_BYTES);
        free(buf);
        return NULL;
    }
    char *fit = malloc(n + 1); /* keep n bytes, not 1 MiB; wipe the large buffer */
    if (fit) {
        memcpy(fit, buf, n + 1);
        explicit_bzero(buf, n);
        free(buf);
        buf = fit;
    }
    if (key && world)
        srv_logf(SRV_LOG_WARN, "tls_key_readable", "%s is readable by every user of this "
                 "machine; make it readable only by innserve (chmod 600)", path);
    return buf;
}

static void free_secret(char *s)
{
    if (s) {
        explicit_bzero(s, strlen(s));
        free(s);
    }
}

/* ---- connections ----------------------------------------------------------------------- */

static void notify_conn(void *cls, struct MHD_Connection *mc, void **socket_context,
                        enum MHD_ConnectionNotificationCode toe)
{
    struct srv_http *h = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        atomic_fetch_add(&h->open, 1);
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(mc, MHD_CONNECTION_INFO_CONNECTION_FD);
        struct conn *c = ci ? calloc(1, sizeof *c) : NULL;
        *socket_context = c;
        if (!c)
            return; /* no deadlines for this one; --conn-timeout still applies */
        c->fd = ci->connect_fd;
        atomic_init(&c->phase, CONN_HEAD);
        atomic_init(&c->since, srv_now_ns());
        pthread_mutex_lock(&h->mu);
        c->next = h->conns;
        if (h->conns)
            h->conns->prev = c;
        h->conns = c;
        pthread_mutex_unlock(&h->mu);
        return;
    }
    /* closed: called before libmicrohttpd closes the socket, so while the sweeper holds mu
     * every fd on the list is still this connection's */
    atomic_fetch_sub(&h->open, 1);
    struct conn *c = *socket_context;
    *socket_context = NULL;
    if (!c)
        return;
    pthread_mutex_lock(&h->mu);
    if (c->prev)
        c->prev->next = c->next;
    else
        h->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    pthread_mutex_unlock(&h->mu);
    free(c);
}

/* Connections past --max-connections are closed as soon as they are accepted. */
static enum MHD_Result accept_policy(void *cls, const struct sockaddr *addr, socklen_t len)
{
    struct srv_http *h = cls;
    return atomic_load(&h->open) >= h->max_conns ? MHD_NO : MHD_YES;
}

/* One pass: cut the connections past their phase's deadline.  Returns how many. */
static int sweep(struct srv_http *h, int *n_head)
{
    int64_t now = srv_now_ns();
    int cut = 0;
    *n_head = 0;
    pthread_mutex_lock(&h->mu);
    for (struct conn *c = h->conns; c; c = c->next) {
        int ph = atomic_load(&c->phase);
        int64_t lim = ph == CONN_HEAD ? h->header_ns : ph == CONN_BODY ? h->body_ns : 0;
        if (!lim || now - atomic_load(&c->since) <= lim)
            continue;
        if (!atomic_compare_exchange_strong(&c->phase, &ph, CONN_CUT))
            continue; /* the connection moved on meanwhile */
        if (ph == CONN_HEAD) {
            if (h->timeout_resp) {
                /* waiting for headers: nothing is being written to this connection */
                ssize_t w = send(c->fd, h->timeout_resp, h->timeout_len,
                                 MSG_NOSIGNAL | MSG_DONTWAIT);
                (void)w;
            }
            (*n_head)++;
        }
        shutdown(c->fd, SHUT_RDWR);
        cut++;
    }
    pthread_mutex_unlock(&h->mu);
    return cut;
}

static void *sweeper_main(void *arg)
{
    struct srv_http *h = arg;
    pthread_mutex_lock(&h->stop_mu);
    while (!h->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += SWEEP_NS;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&h->stop_cv, &h->stop_mu, &ts);
        if (h->stop)
            break;
        pthread_mutex_unlock(&h->stop_mu);
        int n_head;
        int cut = sweep(h, &n_head);
        if (cut)
            srv_logf(SRV_LOG_INFO, "connections_cut", "%d connection(s) past their deadline "
                     "closed: %d still sending headers (--header-timeout %g s), %d a body "
                     "(--body-timeout %g s)", cut, n_head, (double)h->header_ns * 1e-9,
                     cut - n_head, (double)h->body_ns * 1e-9);
        pthread_mutex_lock(&h->stop_mu);
    }
    pthread_mutex_unlock(&h->stop_mu);
    return NULL;
}

/* The 408 written to a connection cut while its headers trickle in. */
static bool build_timeout_resp(struct srv_http *h)
{
    struct proto_error e;
    proto_errorf(&e, PROTO_E_TIMEOUT, "the request line and headers did not arrive within %g "
                 "s (--header-timeout)", (double)h->header_ns * 1e-9);
    size_t blen;
    char *body = proto_error_json(&e, &blen);
    if (!body)
        return false;
    struct proto_buf b;
    proto_buf_init(&b, 0);
    proto_buf_printf(&b, "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: "
                     "application/json\r\nContent-Length: %zu\r\n\r\n", blen);
    proto_buf_put(&b, body, blen);
    free(body);
    if (proto_buf_failed(&b)) {
        proto_buf_free(&b);
        return false;
    }
    h->timeout_resp = proto_buf_take(&b, &h->timeout_len);
    return true;
}

static bool sweeper_start(struct srv_http *h)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&h->stop_cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&h->stop_mu, NULL);
    if (!h->header_ns && !h->body_ns)
        return true;
    /* over TLS a raw 408 would be garbage in the encrypted stream: the cut just closes */
    if (h->header_ns && !h->cert && !build_timeout_resp(h))
        return false;
    h->sweeper_on = pthread_create(&h->sweeper, NULL, sweeper_main, h) == 0;
    return h->sweeper_on;
}

static void sweeper_stop(struct srv_http *h)
{
    if (h->sweeper_on) {
        pthread_mutex_lock(&h->stop_mu);
        h->stop = true;
        pthread_cond_signal(&h->stop_cv);
        pthread_mutex_unlock(&h->stop_mu);
        pthread_join(h->sweeper, NULL);
        h->sweeper_on = false;
    }
}

struct srv_http *srv_http_start(struct srv_ctx *ctx, char *err, size_t cap)
{
    const struct srv_config *cfg = ctx->cfg;
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    char port[16];
    snprintf(port, sizeof port, "%d", cfg->port);
    int gai = getaddrinfo(cfg->host, port, &hints, &ai);
    if (gai != 0 || !ai) {
        snprintf(err, cap, "cannot resolve --host '%s': %s", cfg->host, gai_strerror(gai));
        return NULL;
    }
    struct srv_http *h = calloc(1, sizeof *h);
    if (!h) {
        freeaddrinfo(ai);
        snprintf(err, cap, "out of memory");
        return NULL;
    }
    h->ctx = ctx;
    h->max_conns = cfg->max_connections;
    h->header_ns = (int64_t)(cfg->header_timeout_s * 1e9);
    h->body_ns = (int64_t)(cfg->body_timeout_s * 1e9);
    atomic_init(&h->open, 0);
    pthread_mutex_init(&h->mu, NULL);
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG;
    if (cfg->tls_cert) {
        if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
            snprintf(err, cap, "--tls-cert: this libmicrohttpd was built without TLS support "
                     "(GnuTLS)");
            freeaddrinfo(ai);
            free(h);
            return NULL;
        }
        h->cert = read_pem(cfg->tls_cert, "--tls-cert", false, err, cap);
        h->key = h->cert ? read_pem(cfg->tls_key, "--tls-key", true, err, cap) : NULL;
        if (!h->key) {
            free_secret(h->cert);
            freeaddrinfo(ai);
            free(h);
            return NULL;
        }
        flags |= MHD_USE_TLS;
    }
    if (!sweeper_start(h)) {
        freeaddrinfo(ai);
        free(h->timeout_resp);
        free_secret(h->cert);
        free_secret(h->key);
        free(h);
        snprintf(err, cap, "cannot start the connection deadline thread");
        return NULL;
    }
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    unsigned threads = (unsigned)cfg->http_threads;
    if (!threads) {
        int c = srv_cpu_count();
        threads = (unsigned)(c < 4 ? c : 4);
    }
    unsigned limit = (unsigned)cfg->max_connections +
                     (unsigned)CONN_HEADROOM(cfg->max_connections);
    atomic_store(&h->starting, true);
    /* without TLS the certificate options are NULL and end the option list early */
    h->d = MHD_start_daemon(flags, (uint16_t)cfg->port, accept_policy, h, handler, ctx,
                            MHD_OPTION_EXTERNAL_LOGGER, mhd_log, h, /* first: sees everything */
                            MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                            MHD_OPTION_THREAD_POOL_SIZE, threads,
                            MHD_OPTION_CONNECTION_TIMEOUT, cfg->conn_timeout_s,
                            MHD_OPTION_CONNECTION_LIMIT, limit,
                            MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)cfg->max_conn_per_ip,
                            MHD_OPTION_LISTEN_BACKLOG_SIZE, LISTEN_BACKLOG,
                            MHD_OPTION_NOTIFY_CONNECTION, notify_conn, h,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, SRV_CONN_MEMORY,
                            MHD_OPTION_NOTIFY_COMPLETED, completed, ctx,
                            MHD_OPTION_URI_LOG_CALLBACK, uri_log, ctx,
                            MHD_OPTION_UNESCAPE_CALLBACK, unescape, NULL,
                            h->cert ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, h->cert,
                            MHD_OPTION_HTTPS_MEM_KEY, h->key,
                            MHD_OPTION_END);
    atomic_store(&h->starting, false);
    freeaddrinfo(ai);
    if (!h->d) {
        if (h->cert)
            snprintf(err, cap, "cannot start HTTPS on %s:%d with --tls-cert %s and --tls-key "
                     "%s: %s", cfg->host, cfg->port, cfg->tls_cert, cfg->tls_key,
                     h->start_err[0] ? h->start_err : "libmicrohttpd refused them (does the "
                     "key belong to the certificate? is the address in use?)");
        else
            snprintf(err, cap, "cannot listen on %s:%d (address in use, or not an address "
                     "of this host?)", cfg->host, cfg->port);
        sweeper_stop(h);
        free(h->timeout_resp);
        free_secret(h->cert);
        free_secret(h->key);
        free(h);
        return NULL;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    h->port = di ? di->port : cfg->port;
    return h;
}

int srv_http_port(const struct srv_http *h)
{
    return h->port;
}

void srv_http_stop(struct srv_http *h)
{
    if (!h)
        return;
    sweeper_stop(h);
    MHD_stop_daemon(h->d);
    free(h->timeout_resp);
    free_secret(h->cert);
    free_secret(h->key);
    free(h);
}
