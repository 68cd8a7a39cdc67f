/*
 * call.c — running and answering one model operation (call.h); the plan of units is
 * plan.c's.
 */
#include "call.h"
#include "log.h"
#include "../engine/calib.h"
#include "../proto/answer.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static size_t f32s(long n) { return sizeof(float) * (size_t)(n > 0 ? n : 1); }
static size_t f64s(long n) { return sizeof(double) * (size_t)(n > 0 ? n : 1); }

static void unit_rows(struct srv_job *j, int idx, struct eng_ws *ws);
static void run_batch(struct srv_job *first, struct eng_ws *ws);
static void unit_sample(struct srv_job *j, int idx, struct eng_ws *ws);
static void unit_sample_all(struct srv_job *j, int idx, struct eng_ws *ws);
static void run_sample_batch(struct srv_job *first, struct eng_ws *ws);
static void unit_preimage(struct srv_job *j, int idx, struct eng_ws *ws);
static void unit_calibration(struct srv_job *j, int idx, struct eng_ws *ws);
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
        c->job.unit = unit_rows;
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
        c->job.unit = unit_rows;
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
        ok = ok && (c->units = srv_plan_samples_tiles(n_obs, N, W, q->async
                                                      ? SRV_PLAN_JOB_SAMPLE_TILES
                                                      : SRV_PLAN_MAX_SAMPLE_TILES,
                                                      &c->job.n_units)) != NULL;
        c->job.unit = unit_sample;
        /* at most one tile of samples in all, with batching on: one unit that the pool
         * may compute together with other such calls (run_sample_batch); never a job's */
        if (ok && tot >= 1 && tot <= ENG_TILE_ROWS && srv_pool_batching(ctx->pool) &&
            !q->async) {
            c->n_plan = c->job.n_units;
            c->job.n_units = 1;
            c->job.unit = unit_sample_all;
            c->job.batch_key = ver->model;
            c->job.batch_op = (int)q->op;
            c->job.batch_rows = (int)tot;
            c->job.batch_run = run_sample_batch;
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
        c->job.unit = unit_preimage;
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
        ok = ok && (c->units = srv_plan_pairs(N, L, W, q->async ? SRV_PLAN_JOB_SAMPLE_TILES
                                                                : SRV_PLAN_MAX_SAMPLE_TILES,
                                              &c->job.n_units)) != NULL;
        c->job.unit = unit_calibration;
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
        ok = ok && (c->units = srv_plan_samples_tiles(1, n, W, q->async
                                                      ? SRV_PLAN_JOB_SAMPLE_TILES
                                                      : SRV_PLAN_MAX_SAMPLE_TILES,
                                                      &c->job.n_units)) != NULL;
        c->job.unit = unit_sample;
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
     * other such requests for the same model (run_batch) */
    /* a job runs behind the synchronous requests (pool.h, background) */
    c->job.background = q->async;
    if ((q->op == PROTO_OP_FORWARD || q->op == PROTO_OP_LOG_PROB) && c->job.n_units == 1 &&
        r->n >= 1 && r->n <= ENG_TILE_ROWS) {
        c->job.batch_key = ver->model;
        c->job.batch_op = (int)q->op;
        c->job.batch_rows = r->n;
        c->job.batch_run = run_batch;
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

/* ---- units ----------------------------------------------------------------------------- */

static void fail(struct srv_call *c, int idx, enum eng_status st, const char *msg)
{
    pthread_mutex_lock(&c->err_mu);
    if (c->err_unit < 0 || idx < c->err_unit) {
        c->err_unit = idx;
        proto_error_from_eng(&c->err, st, msg);
    }
    /* skip the units after this one; the ones before it still run (one of them may fail
     * too, and the lowest unit's error is the answer) */
    if (idx < atomic_load(&c->job.skip_after))
        atomic_store(&c->job.skip_after, idx);
    pthread_mutex_unlock(&c->err_mu);
}

/* y rows for rows [r0, r0+n): broadcast or the matching slice. */
static const float *y_slice(const struct proto_matrix *y, long r0, int *yrows, int n)
{
    if (!y->rows) {
        *yrows = 0;
        return NULL;
    }
    if (y->rows == 1) {
        *yrows = 1;
        return y->data;
    }
    *yrows = n;
    return y->data + (size_t)r0 * y->cols;
}

static void stats_at(struct srv_call *c, long off, struct eng_solver_stats *s)
{
    struct proto_result *r = &c->res;
    s->iterations = r->iterations + off;
    s->residual = r->residual + off;
    s->error_bound = r->error_bound + off;
    s->converged = r->converged + off;
    s->certified = true;
}

static void unit_rows(struct srv_job *j, int idx, struct eng_ws *ws)
{
    struct srv_call *c = (struct srv_call *)j;
    const struct eng_model *m = c->ver->model;
    const struct eng_dims *d = &c->ver->info->dims;
    struct proto_result *r = &c->res;
    const struct srv_unit *u = &c->units[idx];
    long r0 = u->first;
    int n = u->count, yrows;
    const float *y = y_slice(&c->req.y, r0, &yrows, n);
    char err[ENG_ERR_LEN] = "";
    enum eng_status st;
    switch (c->req.op) {
    case PROTO_OP_FORWARD:
        st = eng_forward(m, ws, n, c->req.x.data + (size_t)r0 * d->x, y, yrows,
                         r->z ? r->z + (size_t)r0 * d->z : NULL,
                         r->y_out ? r->y_out + (size_t)r0 * d->y : NULL,
                         r->log_det ? r->log_det + r0 : NULL, err);
        break;
    case PROTO_OP_INVERSE: {
        struct eng_solver_stats s, *sp = NULL;
        if (r->has_solver) {
            stats_at(c, r0, &s);
            sp = &s;
        }
        st = eng_inverse(m, ws, n, c->req.z.data + (size_t)r0 * d->z, y, yrows,
                         r->x + (size_t)r0 * d->x, r->log_det + r0, &c->req.solver, sp, err);
        break;
    }
    case PROTO_OP_LOG_PROB:
        st = eng_log_prob(m, ws, n, c->req.x.data + (size_t)r0 * d->x, y, yrows,
                          r->log_prob + r0, err);
        break;
    default:
        st = ENG_ERR_ARG;
    }
    if (st != ENG_OK) {
        /* row numbers in engine messages are relative to the unit */
        char msg[ENG_ERR_LEN + 64];
        long row;
        int used = 0;
        if (sscanf(err, "row %ld: %n", &row, &used) == 1 && used > 0)
            snprintf(msg, sizeof msg, "row %ld: %s", r0 + row, err + used);
        else if (r0)
            snprintf(msg, sizeof msg, "%s (in rows %ld..%ld)", err, r0, r0 + n - 1);
        else
            snprintf(msg, sizeof msg, "%s", err);
        fail(c, idx, st, msg);
    }
}

/* ---- batches --------------------------------------------------------------------------- */

/* A worker's buffers for batched rows, grown to the largest batch it has run, freed when
 * the thread exits. */
struct batch_buf {
    float *f;
    size_t nf;
    double *d;
    size_t nd;
};

static pthread_key_t g_batch_key;
static pthread_once_t g_batch_once = PTHREAD_ONCE_INIT;

static void batch_buf_free(void *p)
{
    struct batch_buf *b = p;
    free(b->f);
    free(b->d);
    free(b);
}

static void batch_key_init(void)
{
    pthread_key_create(&g_batch_key, batch_buf_free);
}

static struct batch_buf *batch_buf(size_t nf, size_t nd)
{
    pthread_once(&g_batch_once, batch_key_init);
    struct batch_buf *b = pthread_getspecific(g_batch_key);
    if (!b) {
        if (!(b = calloc(1, sizeof *b)))
            return NULL;
        pthread_setspecific(g_batch_key, b);
    }
    if (b->nf < nf) {
        float *f = malloc(sizeof(float) * nf);
        if (!f)
            return NULL;
        free(b->f);
        b->f = f;
        b->nf = nf;
    }
    if (b->nd < nd) {
        double *d = malloc(sizeof(double) * nd);
        if (!d)
            return NULL;
        free(b->d);
        b->d = d;
        b->nd = nd;
    }
    return b;
}

/* Computes the forward / log_prob calls of a batch (same model, same operation, at most
 * ENG_TILE_ROWS rows in all) with one engine call on their rows side by side, and copies
 * each call's rows into its own result.  A row's result does not depend on the rows
 * beside it in a tile nor on whether y is broadcast (engine invariant 6), so each call
 * gets the bytes it would get alone; tests/e2e/test_batching.c checks it.  When the
 * batched call fails (a non-finite result names a row of the batch), every call runs
 * alone instead, so errors are exactly those of unbatched requests. */
static void run_batch(struct srv_job *first, struct eng_ws *ws)
{
    struct srv_call *live[ENG_TILE_ROWS];
    int k = 0;
    long n = 0;
    for (struct srv_job *j = first; j && k < ENG_TILE_ROWS; j = j->batch_next) {
        struct srv_call *c = (struct srv_call *)j;
        if (atomic_load(&c->state) != SRV_CALL_PENDING)
            continue; /* answered already (deadline, drain): nothing to compute */
        live[k++] = c;
        n += c->req.x.rows;
    }
    if (k == 0)
        return;
    struct srv_call *c0 = live[0];
    const struct eng_model *m = c0->ver->model;
    const struct eng_dims *d = &c0->ver->info->dims;
    bool has_y = c0->req.y.rows > 0, bcast = has_y;
    for (int i = 0; i < k; i++) {
        const struct proto_matrix *y = &live[i]->req.y;
        if ((y->rows > 0) != has_y)
            goto alone;
        if (bcast && (y->rows != 1 ||
                      memcmp(y->data, c0->req.y.data, sizeof(float) * (size_t)d->y) != 0))
            bcast = false;
    }
    struct batch_buf *b = k > 1 ? batch_buf((size_t)n * (size_t)(d->x + 2 * d->y + d->z) + 1,
                                            (size_t)n) : NULL;
    if (!b)
        goto alone;
    float *x = b->f, *y = x + (size_t)n * d->x, *z = y + (size_t)n * d->y,
          *yo = z + (size_t)n * d->z;
    double *v = b->d;
    for (long off = 0, i = 0; i < k; i++) {
        const struct proto_request *q = &live[i]->req;
        long rows = q->x.rows;
        memcpy(x + (size_t)off * d->x, q->x.data, sizeof(float) * (size_t)rows * d->x);
        if (has_y && !bcast) {
            for (long r = 0; r < rows; r++)
                memcpy(y + (size_t)(off + r) * d->y,
                       q->y.data + (q->y.rows == 1 ? 0 : (size_t)r * d->y),
                       sizeof(float) * (size_t)d->y);
        }
        off += rows;
    }
    const float *yin = !has_y ? NULL : bcast ? c0->req.y.data : y;
    int yrows = !has_y ? 0 : bcast ? 1 : (int)n;
    const struct proto_result *r0 = &c0->res;
    char err[ENG_ERR_LEN] = "";
    enum eng_status st;
    if (c0->req.op == PROTO_OP_FORWARD)
        st = eng_forward(m, ws, (int)n, x, yin, yrows, r0->z ? z : NULL, r0->y_out ? yo : NULL,
                         r0->log_det ? v : NULL, err);
    else
        st = eng_log_prob(m, ws, (int)n, x, yin, yrows, v, err);
    if (st != ENG_OK)
        goto alone;
    for (long off = 0, i = 0; i < k; i++) {
        struct proto_result *r = &live[i]->res;
        long rows = live[i]->req.x.rows;
        if (r->z)
            memcpy(r->z, z + (size_t)off * d->z, sizeof(float) * (size_t)rows * d->z);
        if (r->y_out)
            memcpy(r->y_out, yo + (size_t)off * d->y, sizeof(float) * (size_t)rows * d->y);
        if (r->log_det)
            memcpy(r->log_det, v + off, sizeof(double) * (size_t)rows);
        if (r->log_prob)
            memcpy(r->log_prob, v + off, sizeof(double) * (size_t)rows);
        off += rows;
    }
    return;
alone:
    for (int i = 0; i < k; i++)
        live[i]->job.unit(&live[i]->job, 0, ws);
}

/* The y row of observation `obs` of a sample call (NULL for a flow). */
static const float *obs_y(const struct srv_call *c, int obs)
{
    const struct eng_info *info = c->ver->info;
    return info->kind == ENG_KIND_FLOW ? NULL
                                       : c->req.y.data + (size_t)obs * info->dims.y;
}

/* Re-simulation errors of the samples of plan entry u (already in the result). */
static enum eng_status resimulate(struct srv_call *c, const struct srv_unit *u,
                                  struct eng_ws *ws, char *err)
{
    size_t off = (size_t)u->obs * c->res.num_samples + u->first;
    return eng_resimulate(c->ver->model, ws, u->count,
                          c->res.samples + off * c->ver->info->dims.x, obs_y(c, u->obs),
                          c->sq + off, err);
}

static void fail_obs(struct srv_call *c, int idx, int obs, enum eng_status st, const char *err)
{
    char msg[ENG_ERR_LEN + 96];
    snprintf(msg, sizeof msg, "observation %d: %s", obs, err);
    fail(c, idx, st, msg);
}

/* Samples of plan entry units[idx]; false when it failed (the call's error is set, as
 * unit idx's). */
static bool sample_unit(struct srv_call *c, int idx, struct eng_ws *ws)
{
    const struct eng_model *m = c->ver->model;
    struct proto_result *r = &c->res;
    const struct srv_unit *u = &c->units[idx];
    size_t off = (size_t)u->obs * r->num_samples + u->first;
    const float *y = obs_y(c, u->obs);
    float *x = r->samples + off * c->ver->info->dims.x;
    char err[ENG_ERR_LEN] = "";
    struct eng_solver_stats s, *sp = NULL;
    if (r->has_solver) {
        stats_at(c, (long)off, &s);
        sp = &s;
    }
    enum eng_status st = eng_sample(m, ws, y, c->req.seed, (uint32_t)u->obs, (uint64_t)u->first,
                                    u->count, c->req.temperature, x,
                                    r->sample_lp ? r->sample_lp + off : NULL, &c->req.solver, sp,
                                    err);
    if (st == ENG_OK && c->sq)
        st = resimulate(c, u, ws, err);
    if (st != ENG_OK)
        fail_obs(c, idx, u->obs, st, err);
    return st == ENG_OK;
}

static void unit_sample(struct srv_job *j, int idx, struct eng_ws *ws)
{
    sample_unit((struct srv_call *)j, idx, ws);
}

/* The one unit of a batchable sample call: its plan entries in turn, up to the first that
 * fails (whose error is the one a call run as several units answers with). */
static void unit_sample_all(struct srv_job *j, int idx, struct eng_ws *ws)
{
    (void)idx;
    struct srv_call *c = (struct srv_call *)j;
    for (int i = 0; i < c->n_plan && !atomic_load(&c->job.cancel); i++)
        if (!sample_unit(c, i, ws))
            return;
}

static bool same_solver(const struct eng_solver_opts *a, const struct eng_solver_opts *b)
{
    return a->tol == b->tol && a->max_iter == b->max_iter && a->method == b->method;
}

/* Computes the sample calls of a batch (same model, at most ENG_TILE_ROWS samples in all)
 * with one eng_sample_rows call: every sample of every call is a row with its own draw
 * (seed, observation, sample index, temperature) and y (one row broadcast when every call
 * has the same single observation), so each call gets the bytes eng_sample gives it alone (tests/unit/test_batch_rows.c checks the engine, and
 * tests/e2e/test_batching.c the daemon).  Calls whose solver options differ from the
 * first's, and every call when the batched engine call fails, run alone. */
static void run_sample_batch(struct srv_job *first, struct eng_ws *ws)
{
    struct srv_call *live[ENG_TILE_ROWS];
    int k = 0;
    long n = 0;
    for (struct srv_job *j = first; j; j = j->batch_next) {
        struct srv_call *c = (struct srv_call *)j;
        if (atomic_load(&c->state) != SRV_CALL_PENDING)
            continue; /* answered already (deadline, drain): nothing to compute */
        long rows = (long)c->res.n * c->res.num_samples;
        if (k == ENG_TILE_ROWS || n + rows > ENG_TILE_ROWS ||
            (k > 0 && !same_solver(&c->req.solver, &live[0]->req.solver))) {
            c->job.unit(&c->job, 0, ws);
            continue;
        }
        live[k++] = c;
        n += rows;
    }
    if (k == 0)
        return;
    struct srv_call *c0 = live[0];
    const struct eng_model *m = c0->ver->model;
    const struct eng_dims *d = &c0->ver->info->dims;
    bool has_y = c0->ver->info->kind != ENG_KIND_FLOW, numeric = c0->res.has_solver, lp = false;
    /* every call asks about the same one observation: y broadcast (cheaper: a block then
     * computes the condition's share of its subnets once) */
    bool bcast = has_y;
    for (int i = 0; i < k; i++) {
        lp |= live[i]->res.sample_lp != NULL;
        if (bcast && (live[i]->res.n != 1 ||
                      memcmp(obs_y(live[i], 0), obs_y(c0, 0), sizeof(float) * (size_t)d->y)))
            bcast = false;
    }
    struct batch_buf *b = k > 1 ? batch_buf((size_t)n * (size_t)(d->x + d->y) + 1, 1) : NULL;
    if (!b)
        goto alone;
    float *x = b->f, *y = x + (size_t)n * d->x;
    struct eng_sample_draw dr[ENG_TILE_ROWS];
    double v[ENG_TILE_ROWS], res[ENG_TILE_ROWS], bound[ENG_TILE_ROWS];
    int iters[ENG_TILE_ROWS];
    bool conv[ENG_TILE_ROWS];
    long row = 0;
    for (int i = 0; i < k; i++) {
        const struct srv_call *c = live[i];
        for (int o = 0; o < c->res.n; o++) {
            const float *yo = obs_y(c, o);
            for (long s = 0; s < c->res.num_samples; s++, row++) {
                dr[row] = (struct eng_sample_draw){c->req.seed, (uint64_t)s, (uint32_t)o,
                                                   c->req.temperature};
                if (has_y && !bcast)
                    memcpy(y + (size_t)row * d->y, yo, sizeof(float) * (size_t)d->y);
            }
        }
    }
    struct eng_solver_stats all = {iters, res, bound, conv, true};
    char err[ENG_ERR_LEN] = "";
    const float *yin = !has_y ? NULL : bcast ? obs_y(c0, 0) : y;
    int yrows = !has_y ? 0 : bcast ? 1 : (int)n;
    enum eng_status st = eng_sample_rows(m, ws, (int)n, yin, yrows, dr, x, lp ? v : NULL,
                                         &c0->req.solver, numeric ? &all : NULL, err);
    if (st != ENG_OK)
        goto alone;
    row = 0;
    for (int i = 0; i < k; i++) {
        struct srv_call *c = live[i];
        struct proto_result *r = &c->res;
        long rows = (long)r->n * r->num_samples;
        memcpy(r->samples, x + (size_t)row * d->x, sizeof(float) * (size_t)rows * d->x);
        if (r->sample_lp)
            memcpy(r->sample_lp, v + row, sizeof(double) * (size_t)rows);
        if (r->has_solver) {
            memcpy(r->iterations, iters + row, sizeof(int) * (size_t)rows);
            memcpy(r->residual, res + row, sizeof(double) * (size_t)rows);
            memcpy(r->error_bound, bound + row, sizeof(double) * (size_t)rows);
            memcpy(r->converged, conv + row, sizeof(bool) * (size_t)rows);
        }
        row += rows;
        for (int u = 0; c->sq && u < c->n_plan; u++) {
            char e2[ENG_ERR_LEN] = "";
            enum eng_status s2 = resimulate(c, &c->units[u], ws, e2);
            if (s2 != ENG_OK) {
                fail_obs(c, 0, c->units[u].obs, s2, e2);
                break;
            }
        }
    }
    return;
alone:
    for (int i = 0; i < k; i++)
        live[i]->job.unit(&live[i]->job, 0, ws);
}

static void unit_preimage(struct srv_job *j, int idx, struct eng_ws *ws)
{
    struct srv_call *c = (struct srv_call *)j;
    const struct eng_info *info = c->ver->info;
    struct proto_result *r = &c->res;
    int t = idx, ns = r->num_solutions, dx = info->dims.x;
    char err[ENG_ERR_LEN] = "";
    struct eng_preimage_opts o = c->req.pre;
    o.seed = c->req.seed + (uint64_t)t;
    if (j->deadline_ns) {
        double left = (double)(j->deadline_ns - srv_now_ns()) * 1e-9;
        o.time_limit_s = left > 0.001 ? left : 0.001;
    }
    const float *y = NULL;
    if (c->req.y.rows)
        y = c->req.y.data + (c->req.y.rows == 1 ? 0 : (size_t)t * c->req.y.cols);
    const float *target = c->req.target.data + (size_t)t * c->req.target.cols;
    enum eng_status st = eng_preimage(c->ver->model, ws, target, y, &o,
                                      r->pre_x + (size_t)t * ns * dx,
                                      r->pre_res + (size_t)t * ns, &r->pre_found[t], err);
    if (st != ENG_OK) {
        char msg[ENG_ERR_LEN + 32];
        snprintf(msg, sizeof msg, "target[%d]: %s", t, err);
        fail(c, idx, st, msg);
    }
}

/* The pairs of plan entry idx: for each, its L samples (observation = pair index, so
 * they do not depend on how pairs are grouped into units), their log-densities by
 * eng_log_prob when coverage is asked for, then its SBC ranks, HPD rank and TARP count;
 * log q(theta* | y) of the unit's pairs first. */
static void unit_calibration(struct srv_job *j, int idx, struct eng_ws *ws)
{
    struct srv_call *c = (struct srv_call *)j;
    const struct eng_model *m = c->ver->model;
    const struct eng_dims *d = &c->ver->info->dims;
    const struct proto_request *q = &c->req;
    struct proto_result *r = &c->res;
    struct proto_calib *cb = &r->calib;
    const struct srv_unit *u = &c->units[idx];
    long L = r->num_samples;
    int D = d->x, p0 = (int)u->first, np = (int)(u->count / L);
    bool has_y = q->y.rows > 0, hpd = (q->diagnostics & PROTO_DIAG_COVERAGE) != 0;
    char err[ENG_ERR_LEN] = "", msg[ENG_ERR_LEN + 64];
    enum eng_status st = eng_log_prob(m, ws, np, q->x.data + (size_t)p0 * D,
                                      has_y ? q->y.data + (size_t)p0 * d->y : NULL,
                                      has_y ? np : 0, r->log_prob + p0, err);
    if (st != ENG_OK) {
        long row;
        int used = 0;
        if (sscanf(err, "row %ld: %n", &row, &used) == 1 && used > 0)
            snprintf(msg, sizeof msg, "x row %ld: %s", p0 + row, err + used);
        else
            snprintf(msg, sizeof msg, "x rows %d..%d: %s", p0, p0 + np - 1, err);
        fail(c, idx, st, msg);
        return;
    }
    for (int i = p0; i < p0 + np; i++) {
        if (atomic_load(&c->job.cancel))
            return;
        size_t off = (size_t)i * L;
        float *xs = r->samples + off * D;
        const float *theta = q->x.data + (size_t)i * D;
        const float *yi = has_y ? q->y.data + (size_t)i * d->y : NULL;
        st = eng_sample(m, ws, yi, q->seed, (uint32_t)i, 0, (int)L, 1.0f, xs, NULL,
                        &q->solver, NULL, err);
        /* log q of the samples as of any point (sbi evaluates posterior.log_prob on them),
         * the same function as log q(theta*) */
        if (st == ENG_OK && hpd)
            st = eng_log_prob(m, ws, (int)L, xs, yi, has_y ? 1 : 0, r->sample_lp + off, err);
        if (st != ENG_OK) {
            snprintf(msg, sizeof msg, "pair %d: %s", i, err);
            fail(c, idx, st, msg);
            return;
        }
        cal_sbc_ranks((int)L, D, xs, theta, cb->ranks + (size_t)i * D);
        if (hpd)
            cb->hpd_ranks[i] = cal_hpd_rank((int)L, r->sample_lp + off, r->log_prob[i]);
        cb->tarp_counts[i] = cal_tarp_count((int)L, D, xs, theta, c->tarp_ref + (size_t)i * D,
                                            c->tarp_lo, c->tarp_span);
    }
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

/* The statistics of a calibration over all pairs (after the last unit): KS tests and
 * histograms of the SBC ranks, the coverage curves with their band, the TARP curve; only
 * those of the diagnostics asked for.  false when out of memory. */
static bool reduce_calibration(struct srv_call *c)
{
    struct proto_result *r = &c->res;
    struct proto_calib *cb = &r->calib;
    int N = r->n, D = cb->D, L = (int)r->num_samples, K = cb->K, T = cb->tarp_bins;
    size_t nd = (size_t)(N > 2 * (T + 1) ? N : 2 * (T + 1));
    double *scratch = malloc(sizeof(double) * nd);
    int *cr = malloc(sizeof(int) * (size_t)N);
    long *tl = malloc(sizeof(long) * (size_t)T);
    bool ok = scratch && cr && tl;
    if (ok && (cb->diagnostics & PROTO_DIAG_SBC)) {
        for (int j = 0; j < D; j++) {
            cal_rank_ks(N, D, cb->ranks, j, L, scratch, &cb->ks_stat[j], &cb->ks_p[j]);
            /* NaN: the exact distribution's matrix could not be allocated */
            ok &= !isnan(cb->ks_p[j]);
            cal_rank_histogram(N, D, cb->ranks, j, L, cb->bins, cb->edges,
                               cb->counts + (size_t)j * cb->bins);
        }
    }
    if (ok && (cb->diagnostics & PROTO_DIAG_COVERAGE)) {
        cal_band(N, L, K, cb->confidence, cb->levels, cb->lower, cb->upper);
        cal_coverage(N, cb->hpd_ranks, 1, L, K, cb->hpd_emp);
        for (int j = 0; j < D; j++) {
            cal_central_ranks(N, D, cb->ranks, j, L, cr);
            cal_coverage(N, cr, 1, L, K, cb->central_emp + (size_t)j * (K + 1));
        }
    }
    if (ok && (cb->diagnostics & PROTO_DIAG_TARP)) {
        cal_tarp_curve(N, cb->tarp_counts, L, T, cb->alpha, cb->ecp, tl);
        cal_tarp_check(T, cb->alpha, cb->ecp, scratch, &cb->atc, &cb->tarp_p);
        ok &= !isnan(cb->tarp_p);
    }
    /* sbi's advice (run_sbc, check_sbc, run_tarp) */
    cb->n_warnings = 0;
    if (N < 100)
        snprintf(cb->warnings[cb->n_warnings++], sizeof cb->warnings[0], "only %d pair%s: "
                 "calibration checks should rest on at least 100 pairs (x*, y)", N,
                 N == 1 ? "" : "s");
    if (L < 100)
        snprintf(cb->warnings[cb->n_warnings++], sizeof cb->warnings[0], "only %d posterior "
                 "sample%s per pair: ranks should rest on at least 100", L, L == 1 ? "" : "s");
    free(scratch);
    free(cr);
    free(tl);
    return ok;
}

/* MMD^2 between the model's samples and the reference rows stored after them, and its
 * permutation p-value (after the last unit).  false when out of memory. */
static bool reduce_mmd(struct srv_call *c)
{
    struct proto_result *r = &c->res;
    int n = (int)r->num_samples, nz = n + r->mmd_m, D = c->ver->info->dims.x;
    double *K = malloc(sizeof(double) * (size_t)nz * (size_t)nz);
    int *idx = malloc(sizeof(int) * (size_t)nz);
    bool ok = K && idx;
    if (ok) {
        cal_imq_matrix(nz, D, r->samples, r->n_scales, r->scales, K);
        r->mmd2 = cal_mmd2(nz, n, K, NULL, r->unbiased);
        r->mmd_p = r->permutations > 0 ? cal_mmd_pvalue(nz, n, K, r->unbiased, r->mmd2,
                                                        r->seed, r->permutations, idx)
                                       : NAN;
    }
    free(K);
    free(idx);
    return ok;
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
        if (!(r->op == PROTO_OP_CALIBRATION ? reduce_calibration(c) : reduce_mmd(c))) {
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
