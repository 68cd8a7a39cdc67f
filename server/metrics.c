/*
 * metrics.c — counters and histograms behind GET /metrics (metrics.h).
 *
 * Everything sits under one mutex, held for O(1) work per request: the model label is
 * found in a hash index of the names the repository registered (srv_metrics_model), the
 * (model, operation, status) counter in a second hash index over an insertion-ordered
 * array (so /metrics lists series in the order they first occurred).  A name the
 * repository never registered is counted under model="" and never stored, so what a
 * client writes in a URL cannot grow the label set.  Histograms are per operation
 * label.  Label values are escaped on output.
 */
#include "metrics.h"
#include "pool.h"
#include "../proto/route.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const double BUCKETS[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                 0.5, 1.0, 2.5, 5.0, 10.0, 30.0};
#define NB (sizeof BUCKETS / sizeof BUCKETS[0])
#define MAX_OPS 32

struct hist {
    uint64_t counts[NB + 1];
    double sum;
    uint64_t n;
};

struct req_key {
    uint32_t model;     /* model id: 0 = no model or one the repository does not know */
    uint16_t op;        /* index in ops[] */
    uint16_t status;
    uint64_t count;
};

/* Open-addressing index: slot -> position in an insertion-ordered array, -1 = empty.
 * Capacity is a power of two, kept at most half full. */
struct index {
    int32_t *slot;
    uint32_t cap;
};

struct srv_metrics {
    pthread_mutex_t mu;
    const char *ops[MAX_OPS];
    int n_ops;
    struct hist dur[MAX_OPS], queue[MAX_OPS], compute[MAX_OPS];
    /* models the repository knows, in registration order; id = position + 1 */
    char **models;
    uint64_t *samples;          /* per model, by position */
    int32_t *sample_order;      /* positions of models with samples, in order of first sample */
    int n_models, cap_models, n_sample_order;
    struct index model_ix;
    struct req_key *reqs;       /* in order of first occurrence */
    int n_reqs, cap_reqs;
    struct index req_ix;
    uint64_t reload_ok, reload_fail;
    atomic_int in_flight;
    struct timespec start;
};

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static uint64_t hash_key(uint32_t model, uint16_t op, uint16_t status)
{
    uint64_t h = ((uint64_t)model << 32) | ((uint64_t)op << 16) | status;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

/* Rebuilds ix with room for n + 1 entries whose hashes hash_at(i) gives.  False on OOM. */
static bool index_fit(struct index *ix, int n, uint64_t (*hash_at)(struct srv_metrics *, int),
                      struct srv_metrics *m)
{
    if (ix->cap && (uint32_t)(n + 1) * 2 <= ix->cap)
        return true;
    uint32_t cap = ix->cap ? ix->cap * 2 : 64;
    int32_t *slot = malloc(sizeof *slot * cap);
    if (!slot)
        return false;
    for (uint32_t i = 0; i < cap; i++)
        slot[i] = -1;
    for (int i = 0; i < n; i++) {
        uint32_t s = (uint32_t)hash_at(m, i) & (cap - 1);
        while (slot[s] >= 0)
            s = (s + 1) & (cap - 1);
        slot[s] = i;
    }
    free(ix->slot);
    ix->slot = slot;
    ix->cap = cap;
    return true;
}

static uint64_t model_hash_at(struct srv_metrics *m, int i)
{
    return hash_str(m->models[i]);
}

static uint64_t req_hash_at(struct srv_metrics *m, int i)
{
    return hash_key(m->reqs[i].model, m->reqs[i].op, m->reqs[i].status);
}

/* Position of a registered model, -1 if unknown.  Caller holds mu. */
static int model_pos(struct srv_metrics *m, const char *name)
{
    if (!name || !name[0] || !m->model_ix.cap)
        return -1;
    uint32_t s = (uint32_t)hash_str(name) & (m->model_ix.cap - 1);
    for (; m->model_ix.slot[s] >= 0; s = (s + 1) & (m->model_ix.cap - 1))
        if (!strcmp(m->models[m->model_ix.slot[s]], name))
            return m->model_ix.slot[s];
    return -1;
}

struct srv_metrics *srv_metrics_new(void)
{
    struct srv_metrics *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    pthread_mutex_init(&m->mu, NULL);
    size_t n;
    const struct proto_route *r = proto_routes(&n);
    for (size_t i = 0; i < n && m->n_ops < MAX_OPS; i++) {
        bool seen = false;
        for (int k = 0; k < m->n_ops; k++)
            seen |= strcmp(m->ops[k], r[i].operation) == 0;
        if (!seen)
            m->ops[m->n_ops++] = r[i].operation;
    }
    if (m->n_ops < MAX_OPS)
        m->ops[m->n_ops++] = "none"; /* requests that matched no route */
    clock_gettime(CLOCK_MONOTONIC, &m->start);
    return m;
}

void srv_metrics_free(struct srv_metrics *m)
{
    if (!m)
        return;
    for (int i = 0; i < m->n_models; i++)
        free(m->models[i]);
    free(m->models);
    free(m->samples);
    free(m->sample_order);
    free(m->model_ix.slot);
    free(m->reqs);
    free(m->req_ix.slot);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

bool srv_metrics_model(struct srv_metrics *m, const char *name)
{
    if (!m || !name || !name[0])
        return false;
    bool ok = true;
    pthread_mutex_lock(&m->mu);
    if (model_pos(m, name) >= 0)
        goto out;
    ok = false;
    if (m->n_models == m->cap_models) {
        int cap = m->cap_models ? m->cap_models * 2 : 16;
        char **nm = realloc(m->models, sizeof *nm * (size_t)cap);
        if (!nm)
            goto out;
        m->models = nm;
        uint64_t *ns = realloc(m->samples, sizeof *ns * (size_t)cap);
        if (!ns)
            goto out;
        m->samples = ns;
        int32_t *no = realloc(m->sample_order, sizeof *no * (size_t)cap);
        if (!no)
            goto out;
        m->sample_order = no;
        m->cap_models = cap;
    }
    if (!index_fit(&m->model_ix, m->n_models, model_hash_at, m))
        goto out;
    char *d = strdup(name);
    if (!d)
        goto out;
    int pos = m->n_models++;
    m->models[pos] = d;
    m->samples[pos] = 0;
    uint32_t s = (uint32_t)hash_str(d) & (m->model_ix.cap - 1);
    while (m->model_ix.slot[s] >= 0)
        s = (s + 1) & (m->model_ix.cap - 1);
    m->model_ix.slot[s] = pos;
    ok = true;
out:
    pthread_mutex_unlock(&m->mu);
    return ok;
}

static int op_index(struct srv_metrics *m, const char *op)
{
    for (int i = 0; i < m->n_ops; i++)
        if (m->ops[i] == op || strcmp(m->ops[i], op) == 0)
            return i;
    return m->n_ops - 1;
}

static void observe(struct hist *h, double v)
{
    size_t b = 0;
    while (b < NB && v > BUCKETS[b])
        b++;
    h->counts[b]++;
    h->sum += v;
    h->n++;
}

/* The counter of (model id, op, status), created on first use; NULL on OOM.  Caller holds
 * mu.  The keys are bounded: registered models x route labels x the statuses answered. */
static struct req_key *req_counter(struct srv_metrics *m, uint32_t model, int op, int status)
{
    uint16_t o = (uint16_t)op, st = (uint16_t)status;
    if (m->req_ix.cap) {
        uint32_t s = (uint32_t)hash_key(model, o, st) & (m->req_ix.cap - 1);
        for (; m->req_ix.slot[s] >= 0; s = (s + 1) & (m->req_ix.cap - 1)) {
            struct req_key *k = &m->reqs[m->req_ix.slot[s]];
            if (k->model == model && k->op == o && k->status == st)
                return k;
        }
    }
    if (m->n_reqs == m->cap_reqs) {
        int cap = m->cap_reqs ? m->cap_reqs * 2 : 64;
        struct req_key *p = realloc(m->reqs, sizeof *p * (size_t)cap);
        if (!p)
            return NULL;
        m->reqs = p;
        m->cap_reqs = cap;
    }
    if (!index_fit(&m->req_ix, m->n_reqs, req_hash_at, m))
        return NULL;
    int pos = m->n_reqs++;
    m->reqs[pos] = (struct req_key){model, o, st, 0};
    uint32_t s = (uint32_t)hash_key(model, o, st) & (m->req_ix.cap - 1);
    while (m->req_ix.slot[s] >= 0)
        s = (s + 1) & (m->req_ix.cap - 1);
    m->req_ix.slot[s] = pos;
    return &m->reqs[pos];
}

void srv_metrics_request(struct srv_metrics *m, const char *model, const char *operation,
                         int status, double duration, double queue, double compute)
{
    if (!m)
        return;
    if (status < 0 || status > 999)
        status = 0;
    pthread_mutex_lock(&m->mu);
    int oi = op_index(m, operation ? operation : "none");
    observe(&m->dur[oi], duration);
    if (queue >= 0)
        observe(&m->queue[oi], queue);
    if (compute >= 0)
        observe(&m->compute[oi], compute);
    int pos = model_pos(m, model);
    struct req_key *k = req_counter(m, (uint32_t)(pos + 1), oi, status);
    if (k)
        k->count++;
    pthread_mutex_unlock(&m->mu);
}

void srv_metrics_samples(struct srv_metrics *m, const char *model, uint64_t n)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    int pos = model_pos(m, model);
    if (pos >= 0) {
        if (!m->samples[pos])
            m->sample_order[m->n_sample_order++] = pos;
        m->samples[pos] += n;
    }
    pthread_mutex_unlock(&m->mu);
}

void srv_metrics_reload(struct srv_metrics *m, int ok)
{
    pthread_mutex_lock(&m->mu);
    if (ok)
        m->reload_ok++;
    else
        m->reload_fail++;
    pthread_mutex_unlock(&m->mu);
}

void srv_metrics_in_flight(struct srv_metrics *m, int delta)
{
    atomic_fetch_add(&m->in_flight, delta);
}

/* A label value: backslash, quote and newline escaped. */
static void label(struct proto_buf *b, const char *s)
{
    proto_buf_putc(b, '"');
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            proto_buf_putc(b, '\\');
        if (*s == '\n') {
            proto_buf_puts(b, "\\n");
            continue;
        }
        proto_buf_putc(b, *s);
    }
    proto_buf_putc(b, '"');
}

static void render_hist(struct proto_buf *b, const char *name, const char *help,
                        struct srv_metrics *m, struct hist *h)
{
    proto_buf_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    for (int o = 0; o < m->n_ops; o++) {
        if (!h[o].n)
            continue;
        uint64_t cum = 0;
        for (size_t k = 0; k <= NB; k++) {
            cum += h[o].counts[k];
            proto_buf_printf(b, "%s_bucket{operation=\"%s\",le=\"", name, m->ops[o]);
            if (k < NB)
                proto_buf_f64(b, BUCKETS[k]);
            else
                proto_buf_puts(b, "+Inf");
            proto_buf_printf(b, "\"} %llu\n", (unsigned long long)cum);
        }
        proto_buf_printf(b, "%s_sum{operation=\"%s\"} ", name, m->ops[o]);
        proto_buf_f64(b, h[o].sum);
        proto_buf_printf(b, "\n%s_count{operation=\"%s\"} %llu\n", name, m->ops[o],
                         (unsigned long long)h[o].n);
    }
}

void srv_metrics_render(struct srv_metrics *m, struct proto_buf *b)
{
    pthread_mutex_lock(&m->mu);
    proto_buf_puts(b, "# HELP innserve_requests_total Requests answered, by model, operation "
                   "and HTTP status.\n# TYPE innserve_requests_total counter\n");
    for (int i = 0; i < m->n_reqs; i++) {
        const struct req_key *k = &m->reqs[i];
        proto_buf_puts(b, "innserve_requests_total{model=");
        label(b, k->model ? m->models[k->model - 1] : "");
        proto_buf_printf(b, ",operation=\"%s\",status=\"%d\"} %llu\n", m->ops[k->op],
                         (int)k->status, (unsigned long long)k->count);
    }
    render_hist(b, "innserve_request_duration_seconds", "Time from request arrival to the "
                "response being queued.", m, m->dur);
    render_hist(b, "innserve_queue_wait_seconds", "Time a job waited for its first worker.", m,
                m->queue);
    render_hist(b, "innserve_compute_seconds", "Time from a job's first unit starting to its "
                "last unit ending (engine + formatting).", m, m->compute);
    proto_buf_puts(b, "# HELP innserve_samples_total Posterior samples drawn.\n"
                   "# TYPE innserve_samples_total counter\n");
    for (int i = 0; i < m->n_sample_order; i++) {
        int pos = m->sample_order[i];
        proto_buf_puts(b, "innserve_samples_total{model=");
        label(b, m->models[pos]);
        proto_buf_printf(b, "} %llu\n", (unsigned long long)m->samples[pos]);
    }
    proto_buf_printf(b, "# HELP innserve_reloads_total Repository reloads (SIGHUP) by result.\n"
                     "# TYPE innserve_reloads_total counter\n"
                     "innserve_reloads_total{result=\"ok\"} %llu\n"
                     "innserve_reloads_total{result=\"partial\"} %llu\n",
                     (unsigned long long)m->reload_ok, (unsigned long long)m->reload_fail);
    pthread_mutex_unlock(&m->mu);
    proto_buf_printf(b, "# HELP innserve_in_flight_requests Requests being processed.\n"
                     "# TYPE innserve_in_flight_requests gauge\n"
                     "innserve_in_flight_requests %d\n", atomic_load(&m->in_flight));
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    double up = (double)(now.tv_sec - m->start.tv_sec) +
                (double)(now.tv_nsec - m->start.tv_nsec) * 1e-9;
    proto_buf_puts(b, "# HELP innserve_uptime_seconds Seconds since start.\n"
                   "# TYPE innserve_uptime_seconds gauge\ninnserve_uptime_seconds ");
    proto_buf_f64(b, up);
    proto_buf_putc(b, '\n');
}

/* ---- dynamic batching (the pool's counts) --------------------------------------------- */

static void render_batch_hist(struct proto_buf *b, const char *name, const char *help,
                              const uint64_t *counts, uint64_t sum, uint64_t n)
{
    proto_buf_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (int k = 0; k <= SRV_BATCH_BUCKETS; k++) {
        cum += counts[k];
        if (k < SRV_BATCH_BUCKETS)
            proto_buf_printf(b, "%s_bucket{le=\"%d\"} %llu\n", name, 1 << k,
                             (unsigned long long)cum);
        else
            proto_buf_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
    }
    proto_buf_printf(b, "%s_sum %llu\n%s_count %llu\n", name, (unsigned long long)sum, name,
                     (unsigned long long)n);
}

void srv_metrics_render_batches(struct proto_buf *b, const struct srv_batch_stats *s)
{
    proto_buf_printf(b, "# HELP innserve_batches_total Batches computed by dynamic batching "
                     "(--batch-delay-us), each one engine call.\n"
                     "# TYPE innserve_batches_total counter\ninnserve_batches_total %llu\n",
                     (unsigned long long)s->batches);
    render_batch_hist(b, "innserve_batch_requests", "Requests per batch.", s->jobs, s->jobs_sum,
                      s->batches);
    render_batch_hist(b, "innserve_batch_rows", "Rows per batch.", s->rows, s->rows_sum,
                      s->batches);
}

void srv_metrics_render_jobs(struct proto_buf *b, const char *const *names, const uint64_t *by_state,
                             int n, uint64_t total)
{
    proto_buf_puts(b, "# HELP innserve_jobs Jobs (async requests) in the job table, by state.\n"
                   "# TYPE innserve_jobs gauge\n");
    for (int i = 0; i < n; i++)
        proto_buf_printf(b, "innserve_jobs{state=\"%s\"} %llu\n", names[i],
                         (unsigned long long)by_state[i]);
    proto_buf_printf(b, "# HELP innserve_jobs_total Jobs submitted (async requests answered "
                     "202).\n# TYPE innserve_jobs_total counter\ninnserve_jobs_total %llu\n",
                     (unsigned long long)total);
}
