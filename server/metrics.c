/*
 * metrics.c — counters and histograms behind GET /metrics (metrics.h).
 *
 * Labelled counters live in small arrays under one mutex (one update per request);
 * histograms are per operation label, also under the mutex.  Label values are
 * escaped on output.
 */
#include "metrics.h"
#include "pool.h"
#include "../proto/route.h"

#include <pthread.h>
#include <stdatomic.h>
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
    char *model;
    const char *op; /* static route label */
    int status;
    uint64_t count;
};

struct samp {
    char *model;
    uint64_t count;
};

struct srv_metrics {
    pthread_mutex_t mu;
    const char *ops[MAX_OPS];
    int n_ops;
    struct hist dur[MAX_OPS], queue[MAX_OPS], compute[MAX_OPS];
    struct req_key *reqs;
    int n_reqs, cap_reqs;
    struct samp *samples;
    int n_samples, cap_samples;
    uint64_t reload_ok, reload_fail;
    atomic_int in_flight;
    struct timespec start;
};

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
    for (int i = 0; i < m->n_reqs; i++)
        free(m->reqs[i].model);
    for (int i = 0; i < m->n_samples; i++)
        free(m->samples[i].model);
    free(m->reqs);
    free(m->samples);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

static int op_index(struct srv_metrics *m, const char *op)
{
    for (int i = 0; i < m->n_ops; i++)
        if (strcmp(m->ops[i], op) == 0)
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

void srv_metrics_request(struct srv_metrics *m, const char *model, const char *operation,
                         int status, double duration, double queue, double compute)
{
    if (!m)
        return;
    model = model ? model : "";
    pthread_mutex_lock(&m->mu);
    int oi = op_index(m, operation ? operation : "none");
    const char *op = m->ops[oi];
    observe(&m->dur[oi], duration);
    if (queue >= 0)
        observe(&m->queue[oi], queue);
    if (compute >= 0)
        observe(&m->compute[oi], compute);
    int i;
    for (i = 0; i < m->n_reqs; i++)
        if (m->reqs[i].op == op && m->reqs[i].status == status &&
            strcmp(m->reqs[i].model, model) == 0)
            break;
    if (i == m->n_reqs && m->n_reqs < 100000) {
        if (m->n_reqs == m->cap_reqs) {
            int cap = m->cap_reqs ? m->cap_reqs * 2 : 64;
            struct req_key *p = realloc(m->reqs, sizeof *p * (size_t)cap);
            if (!p)
                goto out;
            m->reqs = p;
            m->cap_reqs = cap;
        }
        char *dm = strdup(model);
        if (!dm)
            goto out;
        m->reqs[i] = (struct req_key){dm, op, status, 0};
        m->n_reqs++;
    }
    if (i < m->n_reqs)
        m->reqs[i].count++;
out:
    pthread_mutex_unlock(&m->mu);
}

void srv_metrics_samples(struct srv_metrics *m, const char *model, uint64_t n)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    int i;
    for (i = 0; i < m->n_samples; i++)
        if (strcmp(m->samples[i].model, model) == 0)
            break;
    if (i == m->n_samples) {
        if (m->n_samples == m->cap_samples) {
            int cap = m->cap_samples ? m->cap_samples * 2 : 16;
            struct samp *p = realloc(m->samples, sizeof *p * (size_t)cap);
            if (!p)
                goto out;
            m->samples = p;
            m->cap_samples = cap;
        }
        char *dm = strdup(model);
        if (!dm)
            goto out;
        m->samples[i] = (struct samp){dm, 0};
        m->n_samples++;
    }
    m->samples[i].count += n;
out:
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
        proto_buf_puts(b, "innserve_requests_total{model=");
        label(b, m->reqs[i].model);
        proto_buf_printf(b, ",operation=\"%s\",status=\"%d\"} %llu\n", m->reqs[i].op,
                         m->reqs[i].status, (unsigned long long)m->reqs[i].count);
    }
    render_hist(b, "innserve_request_duration_seconds", "Time from request arrival to the "
                "response being queued.", m, m->dur);
    render_hist(b, "innserve_queue_wait_seconds", "Time a job waited for its first worker.", m,
                m->queue);
    render_hist(b, "innserve_compute_seconds", "Time from a job's first unit starting to its "
                "last unit ending (engine + formatting).", m, m->compute);
    proto_buf_puts(b, "# HELP innserve_samples_total Posterior samples drawn.\n"
                   "# TYPE innserve_samples_total counter\n");
    for (int i = 0; i < m->n_samples; i++) {
        proto_buf_puts(b, "innserve_samples_total{model=");
        label(b, m->samples[i].model);
        proto_buf_printf(b, "} %llu\n", (unsigned long long)m->samples[i].count);
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
