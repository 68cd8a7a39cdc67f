/*
 * units.c — the work of a call (call.h): the pool units of each operation, each computing
 * its plan entry (plan.h) into the call's result buffers through the engine, and the
 * batched computation of several calls in one engine call (dynamic batching, pool.h).
 */
#include "units.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../engine/calib.h"

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

static void fail_code(struct srv_call *c, int idx, enum proto_code code, const char *msg)
{
    pthread_mutex_lock(&c->err_mu);
    if (c->err_unit < 0 || idx < c->err_unit) {
        c->err_unit = idx;
        proto_errorf(&c->err, code, "%s", msg);
    }
    if (idx < atomic_load(&c->job.skip_after))
        atomic_store(&c->job.skip_after, idx);
    pthread_mutex_unlock(&c->err_mu);
}

/* The most candidates one observation may draw to get `want` inside the prior box. */
static uint64_t max_draws(long want)
{
    uint64_t m = (uint64_t)want * PROTO_PRIOR_DRAWS_PER_SAMPLE;
    return m > PROTO_PRIOR_MIN_DRAWS ? m : PROTO_PRIOR_MIN_DRAWS;
}

/* The answer when fewer than `want` candidates of observation (or pair) k fell inside the
 * prior box before the draw limit (max_draws). */
static void fail_rejection(struct srv_call *c, int idx, const char *what, int k, long want,
                           const struct eng_accept *acc)
{
    char msg[ENG_ERR_LEN];
    snprintf(msg, sizeof msg, "%s %d: only %llu of %ld samples fell inside the prior box in "
             "%llu candidates (acceptance %.3g; the limit is %d candidates per sample, at "
             "least %d): the posterior puts almost no mass inside the prior for this "
             "observation. Check the observation, ask for fewer samples, or send "
             "\"reject_outside_prior\": false for samples that may lie outside the prior",
             what, k, (unsigned long long)acc->accepted, want,
             (unsigned long long)acc->drawn,
             acc->drawn ? (double)acc->accepted / (double)acc->drawn : 0.0,
             PROTO_PRIOR_DRAWS_PER_SAMPLE, PROTO_PRIOR_MIN_DRAWS);
    fail_code(c, idx, PROTO_E_REJECTION, msg);
}

/* log_prob with leakage_correction: the acceptance of y row k (unit leak_unit0 + k). */
static void leakage_unit(struct srv_call *c, int idx, struct eng_ws *ws)
{
    const struct srv_unit *u = &c->units[idx];
    int k = u->obs;
    const struct proto_matrix *y = &c->req.y;
    const float *yk = y->rows ? y->data + (size_t)k * y->cols : NULL;
    struct eng_accept acc;
    char err[ENG_ERR_LEN] = "";
    enum eng_status st = eng_prior_acceptance(c->ver->model, ws, yk, c->req.seed, (uint32_t)k,
                                              u->count, max_draws(u->count), NULL, &acc, err);
    if (st != ENG_OK) {
        char msg[ENG_ERR_LEN + 64];
        snprintf(msg, sizeof msg, "leakage_correction: y row %d: %s", k, err);
        fail(c, idx, st, msg);
        return;
    }
    c->res.drawn[k] = acc.drawn;
    c->res.accepted[k] = acc.accepted;
}

void srv_unit_rows(struct srv_job *j, int idx, struct eng_ws *ws)
{
    struct srv_call *c = (struct srv_call *)j;
    if (c->leak_unit0 >= 0 && idx >= c->leak_unit0) {
        leakage_unit(c, idx, ws);
        return;
    }
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
void srv_batch_rows(struct srv_job *first, struct eng_ws *ws)
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
    enum eng_status st;
    if (r->drawn) {
        /* rejection outside the prior box: the unit is the whole observation */
        struct eng_accept acc;
        uint64_t cap = max_draws(u->count);
        st = eng_sample_prior(m, ws, y, c->req.seed, (uint32_t)u->obs, u->count,
                              c->req.temperature, cap, x,
                              r->sample_lp ? r->sample_lp + off : NULL, &c->req.solver, sp,
                              &acc, err);
        if (st == ENG_OK) {
            r->drawn[u->obs] = acc.drawn;
            r->accepted[u->obs] = acc.accepted;
        }
        if (st == ENG_OK && acc.accepted < (uint64_t)u->count) {
            fail_rejection(c, idx, "observation", u->obs, u->count, &acc);
            return false;
        }
    } else {
        st = eng_sample(m, ws, y, c->req.seed, (uint32_t)u->obs, (uint64_t)u->first, u->count,
                        c->req.temperature, x, r->sample_lp ? r->sample_lp + off : NULL,
                        &c->req.solver, sp, err);
    }
    if (st == ENG_OK && c->sq)
        st = resimulate(c, u, ws, err);
    if (st != ENG_OK)
        fail_obs(c, idx, u->obs, st, err);
    return st == ENG_OK;
}

void srv_unit_sample(struct srv_job *j, int idx, struct eng_ws *ws)
{
    sample_unit((struct srv_call *)j, idx, ws);
}

/* The one unit of a batchable sample call: its plan entries in turn, up to the first that
 * fails (whose error is the one a call run as several units answers with). */
void srv_unit_sample_all(struct srv_job *j, int idx, struct eng_ws *ws)
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
void srv_batch_samples(struct srv_job *first, struct eng_ws *ws)
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

void srv_unit_preimage(struct srv_job *j, int idx, struct eng_ws *ws)
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
void srv_unit_calibration(struct srv_job *j, int idx, struct eng_ws *ws)
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
        if (r->drawn) {
            /* the samples sample gives observation i: the first L candidates in the box */
            struct eng_accept acc;
            st = eng_sample_prior(m, ws, yi, q->seed, (uint32_t)i, (int)L, 1.0f, max_draws(L),
                                  xs, NULL, &q->solver, NULL, &acc, err);
            if (st == ENG_OK) {
                r->drawn[i] = acc.drawn;
                r->accepted[i] = acc.accepted;
                if (acc.accepted < (uint64_t)L) {
                    fail_rejection(c, idx, "pair", i, L, &acc);
                    return;
                }
            }
        } else {
            st = eng_sample(m, ws, yi, q->seed, (uint32_t)i, 0, (int)L, 1.0f, xs, NULL,
                            &q->solver, NULL, err);
        }
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

