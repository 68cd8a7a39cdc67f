/*
 * jobs.c — the job table (jobs.h): submission, state and progress, the kept answers,
 * cancellation, expiry and the limits.
 *
 * Tasks sit on a list in submission order (listing, expiry) and in a chained hash index by
 * id (lookup).  Expired tasks are dropped lazily, whenever the table is used.
 */
#include "jobs.h"
#include "call.h"
#include "log.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define ID_HEX 32

struct srv_task {
    char id[ID_HEX + 1];
    struct srv_jobs *table;
    enum proto_op op;
    enum proto_format fmt;
    char model[130], version[40], sha256[65];
    struct srv_call *call;        /* one reference while unfinished, NULL after */
    bool finished;
    enum srv_task_state state;    /* when finished: DONE, FAILED or CANCELLED */
    const char *cancel_reason;    /* "DELETE" or "shutdown" once a cancel was asked */
    bool cancel_tried;            /* srv_jobs_cancel_all has handled it */
    long total, done;             /* done: final count once finished */
    int64_t created, started, finished_at; /* CLOCK_MONOTONIC ns; started 0: never */
    int64_t created_wall;         /* CLOCK_REALTIME ns at `created` */
    struct srv_response resp;     /* finished: the answer */
    size_t kept;                  /* bytes of resp counted in table->bytes */
    struct srv_task *prev, *next; /* submission order */
    struct srv_task *hnext;       /* hash chain */
};

struct srv_jobs {
    pthread_mutex_t mu;
    struct srv_ctx *ctx;
    struct srv_task *head, *tail;
    struct srv_task **buckets;
    size_t n_buckets;             /* a power of two */
    int count;                    /* tasks in the table */
    size_t bytes;                 /* kept result bytes */
    uint64_t submitted;
};

static const char *const STATE_NAMES[SRV_TASK_NSTATES] = {"queued", "running", "done",
                                                          "failed", "cancelled"};

const char *srv_task_state_str(enum srv_task_state s)
{
    return (unsigned)s < SRV_TASK_NSTATES ? STATE_NAMES[s] : "unknown";
}

static int64_t wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static uint64_t hash_id(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

struct srv_jobs *srv_jobs_new(struct srv_ctx *ctx)
{
    struct srv_jobs *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    size_t want = (size_t)(ctx->cfg->max_jobs > 0 ? ctx->cfg->max_jobs : 1) * 2;
    if (want > 65536)
        want = 65536;
    t->n_buckets = 16;
    while (t->n_buckets < want)
        t->n_buckets *= 2;
    t->buckets = calloc(t->n_buckets, sizeof *t->buckets);
    if (!t->buckets) {
        free(t);
        return NULL;
    }
    t->ctx = ctx;
    pthread_mutex_init(&t->mu, NULL);
    return t;
}

static void task_free(struct srv_task *k)
{
    if (k->call)
        srv_call_unref(k->call);
    srv_response_free(&k->resp);
    free(k);
}

void srv_jobs_free(struct srv_jobs *t)
{
    if (!t)
        return;
    for (struct srv_task *k = t->head, *n; k; k = n) {
        n = k->next;
        task_free(k);
    }
    free(t->buckets);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

/* ---- the table (mu held) --------------------------------------------------------------- */

static struct srv_task *find(struct srv_jobs *t, const char *id)
{
    for (struct srv_task *k = t->buckets[hash_id(id) & (t->n_buckets - 1)]; k; k = k->hnext)
        if (!strcmp(k->id, id))
            return k;
    return NULL;
}

static void insert(struct srv_jobs *t, struct srv_task *k)
{
    size_t b = hash_id(k->id) & (t->n_buckets - 1);
    k->hnext = t->buckets[b];
    t->buckets[b] = k;
    k->prev = t->tail;
    k->next = NULL;
    if (t->tail)
        t->tail->next = k;
    else
        t->head = k;
    t->tail = k;
    t->count++;
}

static void unlink_task(struct srv_jobs *t, struct srv_task *k)
{
    struct srv_task **pp = &t->buckets[hash_id(k->id) & (t->n_buckets - 1)];
    while (*pp && *pp != k)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = k->hnext;
    if (k->prev)
        k->prev->next = k->next;
    else
        t->head = k->next;
    if (k->next)
        k->next->prev = k->prev;
    else
        t->tail = k->prev;
    t->count--;
    t->bytes -= k->kept;
    k->kept = 0;
}

static int64_t ttl_ns(const struct srv_jobs *t)
{
    return (int64_t)(t->ctx->cfg->job_ttl_s * 1e9);
}

/* Drops the finished tasks older than --job-ttl. */
static void sweep(struct srv_jobs *t, int64_t now)
{
    for (struct srv_task *k = t->head, *n; k; k = n) {
        n = k->next;
        if (k->finished && now - k->finished_at >= ttl_ns(t)) {
            unlink_task(t, k);
            srv_logf(SRV_LOG_DEBUG, "job_expired", "job %s (%s) removed %g s after it "
                     "finished (--job-ttl)", k->id, srv_task_state_str(k->state),
                     t->ctx->cfg->job_ttl_s);
            task_free(k);
        }
    }
}

static enum srv_task_state state_of(const struct srv_task *k)
{
    if (k->finished)
        return k->state;
    return atomic_load(&k->call->t_started) ? SRV_TASK_RUNNING : SRV_TASK_QUEUED;
}

static void put_time(struct proto_buf *b, const struct srv_task *k, int64_t mono)
{
    int64_t w = k->created_wall + (mono - k->created);
    time_t s = (time_t)(w / 1000000000LL);
    struct tm tm;
    gmtime_r(&s, &tm);
    proto_buf_printf(b, "\"%04d-%02d-%02dT%02d:%02d:%02d.%03dZ\"", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     (int)(w % 1000000000LL / 1000000));
}

static const char *unit_of(enum proto_op op)
{
    return op == PROTO_OP_PREIMAGE ? "targets"
           : op == PROTO_OP_SAMPLE || op == PROTO_OP_CALIBRATION || op == PROTO_OP_MMD
               ? "samples"
               : "rows";
}

/* The job object; with_result adds "result" (done, JSON answer) and "error" (failed). */
static void write_task(struct proto_buf *b, const struct srv_task *k, int64_t now,
                       bool with_result)
{
    enum srv_task_state st = state_of(k);
    long done = k->finished ? k->done : atomic_load(&k->call->work_done);
    int64_t started = k->finished ? k->started : atomic_load(&k->call->t_started);
    int64_t end = k->finished ? k->finished_at : now;
    proto_buf_printf(b, "{\"id\":\"%s\",\"url\":\"/v1/jobs/%s\",\"operation\":\"%s\","
                     "\"model\":", k->id, k->id, proto_op_str(k->op));
    proto_buf_json_str(b, k->model);
    proto_buf_puts(b, ",\"version\":");
    proto_buf_json_str(b, k->version);
    proto_buf_printf(b, ",\"sha256\":\"%s\",\"state\":\"%s\",\"progress\":{\"done\":%ld,"
                     "\"total\":%ld,\"unit\":\"%s\",\"rate\":", k->sha256,
                     srv_task_state_str(st), done, k->total, unit_of(k->op));
    double secs = started ? (double)(end - started) * 1e-9 : 0.0;
    double rate = secs > 0 && done > 0 ? (double)done / secs : 0.0;
    proto_buf_printf(b, "%.6g,\"eta_s\":", rate);
    if (k->finished)
        proto_buf_puts(b, st == SRV_TASK_DONE ? "0" : "null");
    else if (rate > 0)
        proto_buf_printf(b, "%.3f", (double)(k->total - done) / rate);
    else
        proto_buf_puts(b, "null");
    proto_buf_puts(b, "},\"created\":");
    put_time(b, k, k->created);
    proto_buf_puts(b, ",\"started\":");
    if (started)
        put_time(b, k, started);
    else
        proto_buf_puts(b, "null");
    proto_buf_puts(b, ",\"finished\":");
    if (k->finished)
        put_time(b, k, k->finished_at);
    else
        proto_buf_puts(b, "null");
    proto_buf_printf(b, ",\"result_url\":\"/v1/jobs/%s/result\"", k->id);
    const struct srv_response *r = &k->resp;
    size_t len = r->len;
    while (len && (r->body[len - 1] == '\n' || r->body[len - 1] == '\r'))
        len--;
    if (with_result && st == SRV_TASK_DONE && k->fmt == PROTO_FMT_JSON && len) {
        proto_buf_puts(b, ",\"result\":");
        proto_buf_put(b, r->body, len);
    }
    if (with_result && st == SRV_TASK_FAILED) {
        /* the error body {"error":...,"code":...} with the status added */
        proto_buf_puts(b, ",\"error\":");
        if (len >= 2 && r->body[0] == '{' && r->body[len - 1] == '}') {
            proto_buf_put(b, r->body, len - 1);
            proto_buf_printf(b, ",\"status\":%d}", r->status);
        } else {
            proto_buf_printf(b, "{\"error\":\"the job failed\",\"code\":\"%s\",\"status\":%d}",
                             r->code ? r->code : "internal", r->status);
        }
    }
    proto_buf_putc(b, '}');
}

/* ---- answers --------------------------------------------------------------------------- */

static void answer_json(struct srv_jobs *t, struct srv_response *out, int status,
                        struct proto_buf *b)
{
    if (proto_buf_failed(b)) {
        proto_buf_free(b);
        struct proto_error e;
        proto_errorf(&e, PROTO_E_NOMEM, "out of memory writing the answer");
        srv_response_error(out, t->ctx, &e);
        return;
    }
    srv_response_take(out, status, "application/json", b);
}

static bool is_id(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (!((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'f')))
            return false;
    return n == ID_HEX;
}

static void not_found(struct srv_jobs *t, const char *id, struct srv_response *out)
{
    struct proto_error e;
    if (!is_id(id))
        proto_errorf(&e, PROTO_E_JOB_NOT_FOUND, "'%.64s' is not a job id (ids are 32 "
                     "hexadecimal digits, from the Location of a 202 answer)", id);
    else
        proto_errorf(&e, PROTO_E_JOB_NOT_FOUND, "no job %s: jobs live in this server's memory "
                     "only (they do not survive a restart), and a finished job is kept for "
                     "%g s (--job-ttl) or until DELETE removes it", id,
                     t->ctx->cfg->job_ttl_s);
    srv_response_error(out, t->ctx, &e);
}

/* ---- completion (the call's wake, from any thread; mu not held) ------------------------ */

static void task_wake(struct srv_call *c)
{
    struct srv_task *k = c->wake_arg;
    struct srv_jobs *t = k->table;
    int64_t now = srv_now_ns();
    pthread_mutex_lock(&t->mu);
    k->resp = c->resp;
    srv_response_init(&c->resp);
    k->finished = true;
    k->finished_at = now;
    k->started = atomic_load(&c->t_started);
    k->done = atomic_load(&c->work_done);
    k->call = NULL;
    const char *code = k->resp.code;
    if (code && !strcmp(code, proto_code_str(PROTO_E_JOB_CANCELLED))) {
        k->state = SRV_TASK_CANCELLED;
    } else if (k->resp.status == 200) {
        k->state = SRV_TASK_DONE;
        k->done = k->total;
        size_t cap = t->ctx->cfg->max_job_bytes;
        if (t->bytes + k->resp.len > cap) {
            struct proto_error e;
            proto_errorf(&e, PROTO_E_RESULT_TOO_LARGE, "the job's result (%zu bytes) does not "
                         "fit in what --max-job-bytes (%zu) leaves for kept results (%zu bytes "
                         "held by other jobs); fetch or DELETE finished jobs, or ask for less",
                         k->resp.len, cap, t->bytes);
            srv_response_error(&k->resp, t->ctx, &e);
            k->state = SRV_TASK_FAILED;
        }
    } else {
        k->state = SRV_TASK_FAILED;
    }
    k->kept = k->resp.len;
    t->bytes += k->kept;
    char id[ID_HEX + 1], model[130];
    memcpy(id, k->id, sizeof id);
    memcpy(model, k->model, sizeof model);
    enum srv_task_state st = k->state;
    const char *reason = k->cancel_reason ? k->cancel_reason : "";
    int status = k->resp.status;
    long done = k->done, total = k->total;
    double secs = (double)(now - k->created) * 1e-9;
    pthread_mutex_unlock(&t->mu);
    struct proto_buf f;
    proto_buf_init(&f, 0);
    proto_buf_printf(&f, "\"id\":\"%s\",\"model\":", id);
    proto_buf_json_str(&f, model);
    proto_buf_printf(&f, ",\"operation\":\"%s\",\"state\":\"%s\",\"status\":%d,"
                     "\"seconds\":%.3f,\"done\":%ld,\"total\":%ld",
                     proto_op_str(c->req.op), srv_task_state_str(st), status, secs, done, total);
    if (st == SRV_TASK_CANCELLED)
        proto_buf_printf(&f, ",\"reason\":\"%s\"", reason);
    proto_buf_putc(&f, 0);
    if (!proto_buf_failed(&f))
        srv_log_line(st == SRV_TASK_FAILED ? SRV_LOG_WARN : SRV_LOG_INFO,
                     st == SRV_TASK_CANCELLED ? "job_cancelled" : "job_finished", f.p);
    proto_buf_free(&f);
    srv_call_unref(c); /* the table's reference; the pool still holds its own */
}

/* ---- the endpoints --------------------------------------------------------------------- */

void srv_jobs_submit(struct srv_jobs *t, struct srv_call *c, bool pref, struct srv_response *out)
{
    struct proto_error e;
    struct srv_ctx *ctx = t->ctx;
    const struct srv_config *cfg = ctx->cfg;
    unsigned char rnd[ID_HEX / 2];
    struct srv_task *k = calloc(1, sizeof *k);
    if (!k) {
        proto_errorf(&e, PROTO_E_NOMEM, "out of memory for a job");
        goto fail;
    }
    size_t got = 0;
    while (got < sizeof rnd) {
        ssize_t n = getrandom(rnd + got, sizeof rnd - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    if (got < sizeof rnd) {
        proto_errorf(&e, PROTO_E_INTERNAL, "cannot draw a job id (getrandom failed)");
        goto fail;
    }
    for (size_t i = 0; i < sizeof rnd; i++)
        snprintf(k->id + 2 * i, 3, "%02x", rnd[i]);
    k->table = t;
    k->op = c->req.op;
    k->fmt = c->fmt;
    snprintf(k->model, sizeof k->model, "%s", c->ver->name);
    snprintf(k->version, sizeof k->version, "%s", c->ver->version);
    snprintf(k->sha256, sizeof k->sha256, "%s", c->ver->info->sha256);
    k->total = c->work_total;
    k->created = srv_now_ns();
    k->created_wall = wall_ns();
    srv_response_init(&k->resp);
    int64_t now = k->created;

    pthread_mutex_lock(&t->mu);
    sweep(t, now);
    if (atomic_load(&ctx->draining)) {
        pthread_mutex_unlock(&t->mu);
        proto_errorf(&e, PROTO_E_DRAINING, "the server is shutting down and takes no new "
                     "work; retry elsewhere");
        goto fail;
    }
    const char *over = NULL;
    if (t->count >= cfg->max_jobs)
        over = "count";
    else if (t->bytes >= cfg->max_job_bytes)
        over = "bytes";
    if (over) {
        /* Retry-After: until the first kept job expires, when one does */
        int64_t first = 0;
        for (struct srv_task *q = t->head; q; q = q->next)
            if (q->finished && (!first || q->finished_at < first))
                first = q->finished_at;
        int retry = 0;
        if (first)
            retry = (int)ceil((double)(first + ttl_ns(t) - now) * 1e-9);
        if (*over == 'c')
            proto_errorf(&e, PROTO_E_TOO_MANY_JOBS, "%d jobs are unfinished or kept, the most "
                         "this server holds (--max-jobs %d); finished jobs are removed by "
                         "DELETE /v1/jobs/ID or %g s after they finish (--job-ttl)", t->count,
                         cfg->max_jobs, cfg->job_ttl_s);
        else
            proto_errorf(&e, PROTO_E_TOO_MANY_JOBS, "kept job results hold %zu bytes, the most "
                         "this server keeps (--max-job-bytes %zu); finished jobs are removed "
                         "by DELETE /v1/jobs/ID or %g s after they finish (--job-ttl)",
                         t->bytes, cfg->max_job_bytes, cfg->job_ttl_s);
        pthread_mutex_unlock(&t->mu);
        srv_response_error(out, ctx, &e);
        if (retry > 0)
            out->retry_after = retry;
        free(k);
        srv_call_unref(c);
        return;
    }
    k->call = c;
    c->is_job = true;
    c->wake = task_wake;
    c->wake_arg = k;
    insert(t, k);
    /* submitted under mu: no table operation sees the job before the pool has it (the pool
     * never completes a call inside srv_pool_submit, so task_wake cannot run here) */
    int64_t deadline = cfg->job_timeout_s > 0 ? now + (int64_t)(cfg->job_timeout_s * 1e9) : 0;
    if (!srv_call_submit(c, deadline)) {
        unlink_task(t, k);
        pthread_mutex_unlock(&t->mu);
        c->wake = NULL;
        proto_errorf(&e, PROTO_E_OVERLOADED, "the server is busy (%d jobs queued, --queue); "
                     "retry after the Retry-After delay", srv_pool_depth(ctx->pool));
        k->call = NULL;
        free(k);
        k = NULL;
        goto fail;
    }
    t->submitted++;
    struct proto_buf b;
    proto_buf_init(&b, 0);
    proto_buf_printf(&b, "{\"id\":\"%s\",\"url\":\"/v1/jobs/%s\",\"state\":\"queued\","
                     "\"operation\":\"%s\",\"model\":", k->id, k->id, proto_op_str(k->op));
    proto_buf_json_str(&b, k->model);
    proto_buf_puts(&b, ",\"version\":");
    proto_buf_json_str(&b, k->version);
    proto_buf_printf(&b, ",\"sha256\":\"%s\"}\n", k->sha256);
    snprintf(out->location, sizeof out->location, "/v1/jobs/%s", k->id);
    snprintf(out->model, sizeof out->model, "%s", k->model);
    snprintf(out->version, sizeof out->version, "%s", k->version);
    snprintf(out->sha256, sizeof out->sha256, "%s", k->sha256);
    char id[ID_HEX + 1];
    memcpy(id, k->id, sizeof id);
    long total = k->total;
    enum proto_op op = k->op;
    pthread_mutex_unlock(&t->mu);
    out->pref_applied = pref;
    if (srv_log_enabled(SRV_LOG_INFO)) {
        struct proto_buf f;
        proto_buf_init(&f, 0);
        proto_buf_printf(&f, "\"id\":\"%s\",\"model\":", id);
        proto_buf_json_str(&f, out->model);
        proto_buf_printf(&f, ",\"operation\":\"%s\",\"total\":%ld", proto_op_str(op), total);
        proto_buf_putc(&f, 0);
        if (!proto_buf_failed(&f))
            srv_log_line(SRV_LOG_INFO, "job_submitted", f.p);
        proto_buf_free(&f);
    }
    answer_json(t, out, 202, &b);
    return;
fail:
    free(k);
    srv_response_error(out, ctx, &e);
    srv_call_unref(c);
}

/* Takes the table's mutex and finds job id (expired ones swept first).  NULL, with the
 * mutex released and out holding the 404, when there is no such job. */
static struct srv_task *lock_find(struct srv_jobs *t, const char *id, int64_t now,
                                  struct srv_response *out)
{
    pthread_mutex_lock(&t->mu);
    sweep(t, now);
    struct srv_task *k = find(t, id);
    if (!k) {
        pthread_mutex_unlock(&t->mu);
        not_found(t, id, out);
    }
    return k;
}

void srv_jobs_get(struct srv_jobs *t, const char *id, struct srv_response *out)
{
    int64_t now = srv_now_ns();
    struct srv_task *k = lock_find(t, id, now, out);
    if (!k)
        return;
    struct proto_buf b;
    proto_buf_init(&b, 0);
    write_task(&b, k, now, true);
    proto_buf_putc(&b, '\n');
    pthread_mutex_unlock(&t->mu);
    answer_json(t, out, 200, &b);
}

void srv_jobs_result(struct srv_jobs *t, const char *id, struct srv_response *out)
{
    int64_t now = srv_now_ns();
    struct proto_error e;
    struct srv_task *k = lock_find(t, id, now, out);
    if (!k)
        return;
    enum srv_task_state st = state_of(k);
    if (st == SRV_TASK_DONE || st == SRV_TASK_FAILED) {
        /* the answer as the synchronous request would have had it */
        char *body = malloc(k->resp.len ? k->resp.len : 1);
        if (body) {
            *out = k->resp;
            memcpy(body, k->resp.body, k->resp.len);
            out->body = body;
        }
        pthread_mutex_unlock(&t->mu);
        if (!body) {
            srv_response_init(out);
            proto_errorf(&e, PROTO_E_NOMEM, "out of memory copying the job's result");
            srv_response_error(out, t->ctx, &e);
        }
        return;
    }
    if (st == SRV_TASK_CANCELLED)
        proto_errorf(&e, PROTO_E_JOB_CANCELLED, "job %s was cancelled (%s) before it finished; "
                     "it has no result", id, k->cancel_reason ? k->cancel_reason : "cancel");
    else
        proto_errorf(&e, PROTO_E_JOB_NOT_DONE, "job %s is %s (%ld of %ld %s done); poll GET "
                     "/v1/jobs/%s until its state is done", id, srv_task_state_str(st),
                     atomic_load(&k->call->work_done), k->total, unit_of(k->op), id);
    pthread_mutex_unlock(&t->mu);
    srv_response_error(out, t->ctx, &e);
}

void srv_jobs_delete(struct srv_jobs *t, const char *id, struct srv_response *out)
{
    int64_t now = srv_now_ns();
    struct srv_task *k = lock_find(t, id, now, out);
    if (!k)
        return;
    struct proto_buf b;
    proto_buf_init(&b, 0);
    if (k->finished) {
        write_task(&b, k, now, false);
        proto_buf_putc(&b, '\n');
        unlink_task(t, k);
        pthread_mutex_unlock(&t->mu);
        srv_logf(SRV_LOG_DEBUG, "job_removed", "job %s (%s) removed by DELETE", id,
                 srv_task_state_str(k->state));
        task_free(k);
        answer_json(t, out, 200, &b);
        return;
    }
    struct srv_call *c = k->call;
    srv_call_ref(c);
    if (!k->cancel_reason)
        k->cancel_reason = "DELETE";
    pthread_mutex_unlock(&t->mu);
    struct proto_error e;
    proto_errorf(&e, PROTO_E_JOB_CANCELLED, "job %s was cancelled (DELETE) before it "
                 "finished; it has no result", id);
    srv_call_cancel(c, &e); /* completes it: task_wake records the state */
    srv_call_unref(c);
    pthread_mutex_lock(&t->mu);
    k = find(t, id); /* a concurrent DELETE may have removed it meanwhile */
    if (k)
        write_task(&b, k, srv_now_ns(), false);
    pthread_mutex_unlock(&t->mu);
    if (!k) {
        proto_buf_free(&b);
        not_found(t, id, out);
        return;
    }
    proto_buf_putc(&b, '\n');
    answer_json(t, out, 200, &b);
}

void srv_jobs_list(struct srv_jobs *t, struct srv_response *out)
{
    int64_t now = srv_now_ns();
    struct proto_buf b;
    proto_buf_init(&b, 0);
    proto_buf_puts(&b, "{\"jobs\":[");
    pthread_mutex_lock(&t->mu);
    sweep(t, now);
    for (struct srv_task *k = t->head; k; k = k->next) {
        if (k != t->head)
            proto_buf_putc(&b, ',');
        write_task(&b, k, now, false);
    }
    pthread_mutex_unlock(&t->mu);
    proto_buf_puts(&b, "]}\n");
    answer_json(t, out, 200, &b);
}

int srv_jobs_cancel_all(struct srv_jobs *t)
{
    int n = 0;
    struct proto_error e;
    for (;;) {
        pthread_mutex_lock(&t->mu);
        struct srv_task *k = t->head;
        while (k && (k->finished || k->cancel_tried))
            k = k->next;
        if (!k) {
            pthread_mutex_unlock(&t->mu);
            return n;
        }
        k->cancel_tried = true;
        if (!k->cancel_reason)
            k->cancel_reason = "shutdown";
        struct srv_call *c = k->call;
        srv_call_ref(c);
        proto_errorf(&e, PROTO_E_JOB_CANCELLED, "job %s was cancelled because the server shut "
                     "down (SIGTERM) before it finished; it has no result", k->id);
        pthread_mutex_unlock(&t->mu);
        n += srv_call_cancel(c, &e);
        srv_call_unref(c);
    }
}

void srv_jobs_counts(struct srv_jobs *t, uint64_t by_state[SRV_TASK_NSTATES], uint64_t *total)
{
    for (int i = 0; i < SRV_TASK_NSTATES; i++)
        by_state[i] = 0;
    pthread_mutex_lock(&t->mu);
    sweep(t, srv_now_ns());
    for (struct srv_task *k = t->head; k; k = k->next)
        by_state[state_of(k)]++;
    *total = t->submitted;
    pthread_mutex_unlock(&t->mu);
}
