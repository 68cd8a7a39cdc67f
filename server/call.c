/*
 * call.c — one model operation from request to answer (call.h): the result buffers and
 * the plan, completion (done, deadline, cancel, queue full) and the answer.  The plan of
 * units is plan.c's; the work of each unit and of a batch is units.c's.
 */
#include "call.h"
#include "log.h"
#include "units.h"
#include "../engine/calib.h"
#include "../proto/answer.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static size_t f32s(long n) { return sizeof(float) * (size_t)(n > 0 ? n : 1); }
static size_t f64s(long n) { return sizeof(double) * (size_t)(n > 0 ? n : 1); }

static void call_done(struct srv_job *j);
static void call_expired(struct srv_job *j);
static void unit_counted(struct srv_job *j, int idx, struct eng_ws *ws);

struct srv_call *srv_call_new(struct srv_ctx *ctx, struct srv_version *ver,
                              struct proto_request *req, enum proto_format fmt, bool v2,
                              struct proto_error *e)
{
    struct srv_call *c = calloc(1, sizeof *c);
    if (!c) {
        proto_errorf(e, PROTO_E_NOMEM, "out of memory");
        return NULL;
    }
    atomic_init(&c->refs, 1);
    atomic_init(&c->state, SRV_CALL_PENDING);
    atomic_init(&c->wake_state, 0);
    atomic_init(&c->work_done, 0);
    atomic_init(&c->t_started, 0);
    atomic_init(&c->job.cancel, false);
    atomic_init(&c->job.skip_after, INT_MAX);
    pthread_mutex_init(&c->err_mu, NULL);
    c->err_unit = -1;
    c->ctx = ctx;
    c->ver = srv_version_ref(ver);
    c->req = *req;
    memset(req, 0, sizeof *req);
    c->fmt = fmt;
    c->v2 = v2;
    srv_response_init(&c->resp);
    c->job.done = call_done;
    c->leak_unit0 = -1;
    c->job.expired = call_expired;

    const struct eng_info *info = ver->info;
    const struct eng_dims *d = &info->dims;
    struct proto_result *r = &c->res;
    struct proto_request *q = &c->req;
    r->op = q->op;
    int W = srv_pool_workers(ctx->pool);
    bool ok = true;
    bool numeric = info->numeric_inverse;
    switch (q->op) {
    case PROTO_OP_FORWARD: {
        long n = q->x.rows;
        r->n = (int)n;
        if (info->kind != ENG_KIND_MLP)
            ok &= (r->z = malloc(f32s(n * d->z))) && (r->log_det = malloc(f64s(n)));
        if (info->kind == ENG_KIND_INN || info->kind == ENG_KIND_MLP)
            ok &= (r->y_out = malloc(f32s(n * d->y))) != NULL;
        ok = ok && (c->units = srv_plan_rows(n, W, &c->job.n_units)) != NULL;
        c->job.unit = srv_unit_rows;
        break;
    }
    case PROTO_OP_INVERSE:
    case PROTO_OP_LOG_PROB: {
        long n = q->op == PROTO_OP_INVERSE ? q->z.rows : q->x.rows;
        r->n = (int)n;
        if (q->op == PROTO_OP_INVERSE) {
            ok &= (r->x = malloc(f32s(n * d->x))) && (r->log_det = malloc(f64s(n)));
            if (numeric) {
                r->has_solver = true;
                r->solver_rows = n;
            }
        } else {
            ok &= (r->log_prob = malloc(f64s(n))) != NULL;
        }
        ok = ok && (c->units = srv_plan_rows(n, W, &c->job.n_units)) != NULL;
        c->job.unit = srv_unit_rows;
        if (ok && q->leakage) {
            /* one more unit per y row (one for a flow or a broadcast y): its acceptance */
            int ne = q->y.rows ? q->y.rows : 1, nu = c->job.n_units;
            struct srv_unit *u = realloc(c->units, sizeof *u * (size_t)(nu + ne));
            ok = u != NULL;
            if (ok) {
                c->units = u;
                for (int k = 0; k < ne; k++)
                    u[nu + k] = (struct srv_unit){k, 0, (int)q->leakage_samples};
                c->leak_unit0 = nu;
                c->job.n_units = nu + ne;
                r->n_accept = ne;
                r->seed = q->seed;
                ok = (r->drawn = calloc((size_t)ne, sizeof(uint64_t))) &&
                     (r->accepted = calloc((size_t)ne, sizeof(uint64_t)));
            }
        }
        break;
    }
    case PROTO_OP_SAMPLE: {
        int n_obs = info->kind == ENG_KIND_FLOW ? 1 : q->y.rows;
        long N = q->num_samples;
        r->n = n_obs;
        r->num_samples = N;
        r->seed = q->seed;
        r->temperature = q->temperature;
        r->outputs = q->outputs;
        long tot = (long)n_obs * N;
        ok &= (r->samples = malloc(f32s(tot * d->x))) != NULL;
        if (q->outputs & (PROTO_OUT_LOG_PROB | PROTO_OUT_SUMMARY))
            ok &= (r->sample_lp = malloc(f64s(tot))) != NULL;
        if (q->outputs & PROTO_OUT_RESIMULATION)
            ok &= (c->sq = malloc(f64s(tot))) && (r->rmse = malloc(f64s(n_obs)));
        if (numeric) {
            r->has_solver = true;
            r->solver_rows = tot;
        }
        bool reject = q->reject && info->prior_low;
        if (reject) {
            /* one unit per observation: its samples are the first num_samples candidates
             * inside the prior box, which no cut of the sample indices can find */
            r->n_accept = n_obs;
            ok = ok && (r->drawn = calloc((size_t)n_obs, sizeof(uint64_t))) &&
                 (r->accepted = calloc((size_t)n_obs, sizeof(uint64_t))) &&
                 (c->units = malloc(sizeof *c->units * (size_t)n_obs));
            for (int o = 0; ok && o < n_obs; o++)
                c->units[o] = (struct srv_unit){o, 0, (int)N};
            c->job.n_units = n_obs;
        } else {
            ok = ok && (c->units = srv_plan_samples_tiles(n_obs, N, W, q->async
                                                          ? SRV_PLAN_JOB_SAMPLE_TILES
                                                          : SRV_PLAN_MAX_SAMPLE_TILES,
                                                          &c->job.n_units)) != NULL;
        }
        c->job.unit = srv_unit_sample;
        /* at most one tile of samples in all, with batching on: one unit that the pool
         * may compute together with other such calls (srv_batch_samples); never a job's,
         * never one that rejects */
        if (ok && tot >= 1 && tot <= ENG_TILE_ROWS && srv_pool_batching(ctx->pool) &&
            !q->async && !reject) {
            c->n_plan = c->job.n_units;
            c->job.n_units = 1;
            c->job.unit = srv_unit_sample_all;
            c->job.batch_key = ver->model;
            c->job.batch_op = (int)q->op;
            c->job.batch_rows = (int)tot;
            c->job.batch_run = srv_batch_samples;
        }
        break;
    }
    case PROTO_OP_PREIMAGE: {
        int nt = q->target.rows, ns = q->pre.num_solutions;
        r->n = nt;
        r->num_solutions = ns;
        r->pre_method = q->pre.method;
        r->seed = q->seed;
        ok &= (r->pre_x = malloc(f32s((long)nt * ns * d->x))) &&
              (r->pre_res = malloc(f64s((long)nt * ns))) &&
              (r->pre_found = calloc((size_t)nt, sizeof(int)));
        ok = ok && (c->units = srv_plan_targets(nt, &c->job.n_units)) != NULL;
        c->job.unit = srv_unit_preimage;
        break;
    }
    case PROTO_OP_CALIBRATION: {
        int N = q->x.rows, D = d->x;
        long L = q->num_samples, tot = (long)N * L;
        r->n = N;
        r->num_samples = L;
        r->seed = q->seed;
        r->temperature = 1.0f;
        ok &= (r->samples = malloc(f32s(tot * D))) && (r->sample_lp = malloc(f64s(tot))) &&
              (r->log_prob = malloc(f64s(N))) && (c->tarp_ref = malloc(f64s((long)N * D)));
        if (q->z_score)
            ok &= (c->tarp_lo = malloc(f64s(D))) && (c->tarp_span = malloc(f64s(D)));
        ok = ok && proto_calib_alloc(&r->calib, N, D, q->bins, q->coverage_points,
                                     q->tarp_bins);
        if (ok) {
            r->calib.diagnostics = q->diagnostics;
            r->calib.confidence = q->confidence;
            if (q->ref.rows)
                for (long i = 0; i < (long)N * D; i++)
                    c->tarp_ref[i] = q->ref.data[i];
            else
                cal_tarp_references(q->seed, N, D, q->x.data, c->tarp_ref);
            if (q->z_score)
                cal_tarp_scale(N, D, q->x.data, c->tarp_lo, c->tarp_span);
        }
        if (q->reject && info->prior_low) {
            /* each pair's samples: the first L candidates inside the prior box, as sample
             * draws them for observation i (pairs never straddle units) */
            r->n_accept = N;
            ok = ok && (r->drawn = calloc((size_t)N, sizeof(uint64_t))) &&
                 (r->accepted = calloc((size_t)N, sizeof(uint64_t)));
        }
        ok = ok && (c->units = srv_plan_pairs(N, L, W, q->async ? SRV_PLAN_JOB_SAMPLE_TILES
                                                                : SRV_PLAN_MAX_SAMPLE_TILES,
                                              &c->job.n_units)) != NULL;
        c->job.unit = srv_unit_calibration;
        break;
    }
    case PROTO_OP_MMD: {
        long n = q->num_samples;
        int M = q->ref.rows;
        r->n = 1;
        r->num_samples = n;
        r->seed = q->seed;
        r->temperature = q->temperature;
        r->mmd_m = M;
        r->n_scales = q->n_scales;
        memcpy(r->scales, q->scales, sizeof r->scales);
        r->unbiased = q->unbiased;
        r->permutations = q->permutations;
        /* the model's samples, then the reference rows: the pooled points of the test */
        ok &= (r->samples = malloc(f32s((n + M) * d->x))) != NULL;
        if (ok)
            memcpy(r->samples + (size_t)n * d->x, q->ref.data,
                   sizeof(float) * (size_t)M * d->x);
        if (q->reject && info->prior_low) {
            /* the samples sample gives: one unit, the first n candidates in the box */
            r->n_accept = 1;
            ok = ok && (r->drawn = calloc(1, sizeof(uint64_t))) &&
                 (r->accepted = calloc(1, sizeof(uint64_t))) &&
                 (c->units = malloc(sizeof *c->units)) != NULL;
            if (ok)
                c->units[0] = (struct srv_unit){0, 0, (int)n};
            c->job.n_units = 1;
        } else {
            ok = ok && (c->units = srv_plan_samples_tiles(1, n, W, q->async
                                                          ? SRV_PLAN_JOB_SAMPLE_TILES
                                                          : SRV_PLAN_MAX_SAMPLE_TILES,
                                                          &c->job.n_units)) != NULL;
        }
        c->job.unit = srv_unit_sample;
        break;
    }
    default:
        ok = false;
    }
    if (ok && !c->n_plan)
        c->n_plan = c->job.n_units;
    if (ok) {
        /* progress: every unit goes through unit_counted */
        for (int i = 0; i < c->n_plan; i++)
            c->work_total += c->units[i].count;
        c->unit_fn = c->job.unit;
        c->job.unit = unit_counted;
    }
    if (ok && r->has_solver) {
        long n = r->solver_rows;
        r->solver_method = q->solver.method;
        ok = (r->iterations = malloc(sizeof(int) * (size_t)(n ? n : 1))) &&
             (r->residual = malloc(f64s(n))) && (r->error_bound = malloc(f64s(n))) &&
             (r->converged = malloc(sizeof(bool) * (size_t)(n ? n : 1)));
        if (ok) {
            for (long i = 0; i < n; i++) {
                r->iterations[i] = 0;
                r->residual[i] = 0.0;
                r->error_bound[i] = 0.0;
                r->converged[i] = true;
            }
        }
    }
    if (!ok) {
        proto_errorf(e, PROTO_E_NOMEM, "out of memory for a result of this size; ask for "
                     "fewer rows or samples");
        srv_call_unref(c);
        return NULL;
    }
    /* forward / log_prob of at most one tile: the pool may compute it together with
     * other such requests for the same model (srv_batch_rows) */
    /* a job runs behind the synchronous requests (pool.h, background) */
    c->job.background = q->async;
    if ((q->op == PROTO_OP_FORWARD || q->op == PROTO_OP_LOG_PROB) && c->job.n_units == 1 &&
        r->n >= 1 && r->n <= ENG_TILE_ROWS) {
        c->job.batch_key = ver->model;
        c->job.batch_op = (int)q->op;
        c->job.batch_rows = r->n;
        c->job.batch_run = srv_batch_rows;
    }
    return c;
}

void srv_call_unref(struct srv_call *c)
{
    if (!c || atomic_fetch_sub(&c->refs, 1) != 1)
        return;
    srv_version_unref(c->ver);
    proto_request_free(&c->req);
    proto_result_free(&c->res);
    free(c->units);
    free(c->sq);
    free(c->tarp_ref);
    free(c->tarp_lo);
    free(c->tarp_span);
    srv_response_free(&c->resp);
    pthread_mutex_destroy(&c->err_mu);
    free(c);
}

void srv_call_ref(struct srv_call *c)
{
    atomic_fetch_add(&c->refs, 1);
}

/* Runs the call's unit idx and adds its work to work_done: its plan entry's count, or the
 * whole call for a call whose one unit runs its whole plan. */
static void unit_counted(struct srv_job *j, int idx, struct eng_ws *ws)
{
    struct srv_call *c = (struct srv_call *)j;
    int64_t zero = 0;
    atomic_compare_exchange_strong(&c->t_started, &zero, srv_now_ns());
    c->unit_fn(j, idx, ws);
    long w = c->job.n_units == c->n_plan ? c->units[idx].count : c->work_total;
    atomic_fetch_add(&c->work_done, w);
}

/* ---- answer ---------------------------------------------------------------------------- */

static void too_large(struct srv_call *c, struct srv_response *out, size_t cap)
{
    struct proto_error e;
    proto_errorf(&e, PROTO_E_RESULT_TOO_LARGE, "the answer would be larger than %zu bytes "
                 "(--max-response); ask for fewer samples or rows%s", cap,
                 c->req.op == PROTO_OP_SAMPLE ? ", or Accept: application/x-npy (4 bytes a "
                 "value)" : "");
    srv_response_error(out, c->ctx, &e);
}

static void build(struct srv_call *c, struct srv_response *out)
{
    const struct eng_info *info = c->ver->info;
    struct proto_result *r = &c->res;
    snprintf(out->model, sizeof out->model, "%s", c->ver->name);
    snprintf(out->version, sizeof out->version, "%s", c->ver->version);
    snprintf(out->sha256, sizeof out->sha256, "%s", info->sha256);
    if (atomic_load(&c->job.cancel)) {
        /* cancelled while no deadline or drain claimed the call: a worker had no
         * workspace (units were skipped; running ones stopped with ENG_ERR_CANCELLED) */
        struct proto_error e;
        proto_errorf(&e, PROTO_E_NOMEM, "out of memory for a worker's workspace");
        srv_response_error(out, c->ctx, &e);
        return;
    }
    if (c->err_unit >= 0) {
        srv_response_error(out, c->ctx, &c->err);
        return;
    }
    if (r->has_solver) {
        /* every numeric block's Lipschitz bound < 1: a property of the model */
        r->certified = eng_model_certificate(c->ver->model)->certified;
        long bad = 0;
        for (long i = 0; i < r->solver_rows; i++)
            bad += !r->converged[i];
        out->unconverged = bad;
    }
    if (r->op == PROTO_OP_LOG_PROB && r->drawn) {
        /* leakage correction: log q - log(accepted / drawn) of the row's y */
        for (int k = 0; k < r->n_accept; k++) {
            if (r->accepted[k] == 0) {
                struct proto_error e;
                proto_errorf(&e, PROTO_E_REJECTION, "leakage_correction: y row %d: none of "
                             "%llu candidates fell inside the prior box, so the posterior "
                             "mass inside it cannot be estimated; check the observation, or "
                             "ask without leakage_correction", k,
                             (unsigned long long)r->drawn[k]);
                srv_response_error(out, c->ctx, &e);
                return;
            }
        }
        for (int i = 0; i < r->n; i++) {
            int k = r->n_accept == 1 ? 0 : i;
            if (isfinite(r->log_prob[i]))
                r->log_prob[i] -= log((double)r->accepted[k] / (double)r->drawn[k]);
        }
    }
    if (r->op == PROTO_OP_SAMPLE) {
        long N = r->num_samples;
        if (c->req.outputs & PROTO_OUT_SUMMARY) {
            if (!proto_summary_compute(&r->summary, r->samples, r->sample_lp, r->n, N,
                                       info->dims.x, c->req.quantiles, c->req.n_quantiles)) {
                struct proto_error e;
                proto_errorf(&e, PROTO_E_NOMEM, "out of memory for the summary");
                srv_response_error(out, c->ctx, &e);
                return;
            }
            r->has_summary = true;
        }
        if (c->sq) {
            for (int o = 0; o < r->n; o++) {
                double s = 0.0;
                for (long i = 0; i < N; i++)
                    s += c->sq[(size_t)o * N + i];
                r->rmse[o] = sqrt(s / ((double)N * (info->dims.y ? info->dims.y : 1)));
            }
        }
        snprintf(out->seed, sizeof out->seed, "%llu", (unsigned long long)r->seed);
    }
    if (r->op == PROTO_OP_CALIBRATION || r->op == PROTO_OP_MMD) {
        bool ok = r->op == PROTO_OP_CALIBRATION
                      ? proto_calib_reduce(&r->calib, r->n, (int)r->num_samples)
                      : proto_mmd_reduce(r, info->dims.x);
        if (!ok) {
            struct proto_error e;
            proto_errorf(&e, PROTO_E_NOMEM, "out of memory for the %s statistics",
                         proto_op_str(r->op));
            srv_response_error(out, c->ctx, &e);
            return;
        }
        snprintf(out->seed, sizeof out->seed, "%llu", (unsigned long long)r->seed);
    }
    struct proto_model_id id = {c->ver->name, c->ver->version, info->sha256};
    size_t cap = c->ctx->lim.max_response_bytes;
    struct proto_buf b;
    proto_buf_init(&b, cap);
    const char *ctype = proto_answer_write(&b, &id, info, &c->req, r, c->fmt, c->v2);
    if (b.state == PROTO_BUF_OVER) {
        proto_buf_free(&b);
        too_large(c, out, cap);
    } else if (b.state == PROTO_BUF_NOMEM) {
        proto_buf_free(&b);
        struct proto_error e;
        proto_errorf(&e, PROTO_E_NOMEM, "out of memory writing the answer");
        srv_response_error(out, c->ctx, &e);
    } else {
        srv_response_take(out, 200, ctype, &b);
        if (r->op == PROTO_OP_SAMPLE)
            srv_metrics_samples(c->ctx->metrics, c->ver->name, (uint64_t)r->n * r->num_samples);
    }
}

/* Claims the right to complete the call; the winner writes c->resp, then publish(). */
static bool claim(struct srv_call *c)
{
    int expect = SRV_CALL_PENDING;
    return atomic_compare_exchange_strong(&c->state, &expect, SRV_CALL_CLAIMED);
}

static void publish(struct srv_call *c)
{
    atomic_store_explicit(&c->state, SRV_CALL_DONE, memory_order_release);
    if (c->wake)
        c->wake(c);
}

static void call_done(struct srv_job *j)
{
    struct srv_call *c = (struct srv_call *)j;
    if (atomic_load(&c->state) == SRV_CALL_PENDING) {
        struct srv_response out;
        srv_response_init(&out);
        int64_t t0 = srv_now_ns();
        build(c, &out);
        c->format_ms = (double)(srv_now_ns() - t0) * 1e-6;
        if (claim(c)) {
            c->resp = out;
            c->timed = true;
            publish(c);
        } else {
            srv_response_free(&out);
        }
    }
    srv_call_unref(c); /* the pool's reference */
}

static void call_expired(struct srv_job *j)
{
    struct srv_call *c = (struct srv_call *)j;
    if (!claim(c))
        return;
    struct proto_error e;
    if (c->is_job)
        proto_errorf(&e, PROTO_E_DEADLINE, "the job did not finish within %g s of its "
                     "submission (--job-timeout); ask for less work", c->ctx->cfg->job_timeout_s);
    else if (atomic_load(&c->ctx->draining))
        proto_errorf(&e, PROTO_E_DRAINING, "the server is shutting down and cancelled this "
                     "request before it finished; retry elsewhere");
    else
        proto_errorf(&e, PROTO_E_DEADLINE, "the request did not finish within the deadline of "
                     "%ld ms (--deadline-ms); ask for less work", c->ctx->cfg->deadline_ms);
    srv_response_error(&c->resp, c->ctx, &e);
    snprintf(c->resp.model, sizeof c->resp.model, "%s", c->ver->name);
    snprintf(c->resp.version, sizeof c->resp.version, "%s", c->ver->version);
    snprintf(c->resp.sha256, sizeof c->resp.sha256, "%s", c->ver->info->sha256);
    publish(c);
}

bool srv_call_cancel(struct srv_call *c, const struct proto_error *e)
{
    if (!claim(c))
        return false;
    atomic_store_explicit(&c->job.cancel, true, memory_order_release);
    srv_response_error(&c->resp, c->ctx, e);
    snprintf(c->resp.model, sizeof c->resp.model, "%s", c->ver->name);
    snprintf(c->resp.version, sizeof c->resp.version, "%s", c->ver->version);
    snprintf(c->resp.sha256, sizeof c->resp.sha256, "%s", c->ver->info->sha256);
    publish(c);
    return true;
}

void srv_call_fail(struct srv_call *c, const struct proto_error *e)
{
    if (!claim(c))
        return;
    srv_response_error(&c->resp, c->ctx, e);
    publish(c);
}

bool srv_call_submit(struct srv_call *c, int64_t deadline_ns)
{
    c->job.deadline_ns = deadline_ns;
    atomic_fetch_add(&c->refs, 1);
    if (!srv_pool_submit(c->ctx->pool, &c->job)) {
        atomic_fetch_sub(&c->refs, 1);
        return false;
    }
    return true;
}

void srv_call_run_inline(struct srv_call *c, struct eng_ws *ws)
{
    c->job.t_submit = c->job.t_first = srv_now_ns();
    for (int i = 0; i < c->job.n_units && !atomic_load(&c->job.cancel) &&
                    i <= atomic_load(&c->job.skip_after); i++)
        c->job.unit(&c->job, i, ws);
    c->job.t_last = srv_now_ns();
    struct srv_response out;
    srv_response_init(&out);
    build(c, &out);
    c->format_ms = (double)(srv_now_ns() - c->job.t_last) * 1e-6;
    if (claim(c)) {
        c->resp = out;
        c->timed = true;
        atomic_store_explicit(&c->state, SRV_CALL_DONE, memory_order_release);
    } else {
        srv_response_free(&out);
    }
}
