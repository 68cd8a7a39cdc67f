/*
 * pool.c — worker threads, job FIFO, deadline monitor (pool.h).
 *
 * One mutex guards the FIFO and the list of active jobs.  Workers sleep on `work`;
 * the monitor sleeps on `tick` until the earliest deadline (or a new submission).
 * Each worker creates its eng_ws when it first has work and keeps it for its lifetime, so
 * after the first request per model no allocation happens in the engine.  When that
 * allocation fails, the jobs the worker takes are cancelled (answered out of memory) and
 * it tries again when it next has work: one failed allocation does not disable a worker.  While a unit runs, the worker's
 * workspace carries the job's cancel flag (eng_ws_set_cancel), so a cancelled job stops
 * between engine tiles instead of at the end of its running units.
 */
#include "pool.h"
#include "../engine/engine.h"
#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

struct srv_pool {
    pthread_mutex_t mu;
    pthread_cond_t work, tick;
    pthread_t *threads;
    pthread_t monitor;
    int n_workers, cap, depth, active;
    struct srv_job *head, *tail;  /* FIFO */
    struct srv_job *bg_head, *bg_tail; /* FIFO of background jobs, served when head is NULL */
    struct srv_job *all;          /* active list */
    bool stop;
    int64_t batch_delay_ns;       /* 0: no batching */
    int batch_rows;
    struct srv_batch_stats bstats;
};

int64_t srv_now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void active_remove(struct srv_pool *p, struct srv_job *j)
{
    if (j->aprev)
        j->aprev->anext = j->anext;
    else
        p->all = j->anext;
    if (j->anext)
        j->anext->aprev = j->aprev;
    j->anext = j->aprev = NULL;
    p->active--;
}

/* Called with mu held when the last unit of j has been accounted for. */
static void finish_locked(struct srv_pool *p, struct srv_job *j, bool *call_done)
{
    j->t_last = srv_now_ns();
    j->finished = true;
    active_remove(p, j);
    if (j->in_expire) {
        j->done_pending = true; /* the monitor calls done after expired returns */
        *call_done = false;
    } else {
        *call_done = true;
    }
}

static int bucket(int v)
{
    int b = 0;
    while (b < SRV_BATCH_BUCKETS && v > (1 << b))
        b++;
    return b;
}

/* The batch opened by j waits for more jobs: not full, its delay not over, and some other
 * job in flight that could still send a request to join it. */
static bool batch_waits(const struct srv_pool *p, const struct srv_job *j, int64_t now)
{
    return !p->stop && now < j->batch_ready_ns && j->batch_sum < p->batch_rows &&
           p->active > j->batch_n;
}

/* Runs the batch opened by j (mu held on entry and exit; j is the FIFO head). */
static void run_batch(struct srv_pool *p, struct srv_job *j, struct eng_ws *ws)
{
    p->head = j->qnext;
    if (!p->head)
        p->tail = NULL;
    j->qnext = NULL;
    j->next_unit = j->n_units;
    j->batch_open = false;
    p->depth -= j->batch_n;
    int64_t now = srv_now_ns();
    for (struct srv_job *m = j; m; m = m->batch_next)
        m->t_first = now;
    p->bstats.batches++;
    p->bstats.jobs[bucket(j->batch_n)]++;
    p->bstats.rows[bucket(j->batch_sum)]++;
    p->bstats.jobs_sum += (uint64_t)j->batch_n;
    p->bstats.rows_sum += (uint64_t)j->batch_sum;
    if (p->head || p->bg_head)
        pthread_cond_signal(&p->work); /* the next job need not wait for this batch */
    pthread_mutex_unlock(&p->mu);
    if (ws) {
        j->batch_run(j, ws);
    } else {
        for (struct srv_job *m = j; m; m = m->batch_next)
            atomic_store(&m->cancel, true);
    }
    pthread_mutex_lock(&p->mu);
    /* every job of the batch is finished; `done` in batch order, without the lock (done
     * may free the job, so the list is read first) */
    struct srv_job *todo = NULL, **tail = &todo;
    for (struct srv_job *m = j, *next; m; m = next) {
        next = m->batch_next;
        bool call_done = false;
        m->units_done = m->n_units;
        finish_locked(p, m, &call_done);
        if (call_done) {
            *tail = m;
            tail = &m->qnext;
        }
    }
    *tail = NULL;
    pthread_mutex_unlock(&p->mu);
    for (struct srv_job *m = todo, *next; m; m = next) {
        next = m->qnext;
        m->done(m);
    }
    pthread_mutex_lock(&p->mu);
}

static void *worker_main(void *arg)
{
    struct srv_pool *p = arg;
    struct eng_ws *ws = NULL;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->head && !p->bg_head && !p->stop)
            pthread_cond_wait(&p->work, &p->mu);
        if (!p->head && !p->bg_head && p->stop)
            break;
        if (!ws)
            ws = eng_ws_new(); /* at the first work, and again after a failure */
        struct srv_job *j = p->head ? p->head : p->bg_head;
        if (j->batch_open) {
            if (batch_waits(p, j, srv_now_ns())) {
                struct timespec ts = {(time_t)(j->batch_ready_ns / 1000000000LL),
                                      (long)(j->batch_ready_ns % 1000000000LL)};
                pthread_cond_timedwait(&p->work, &p->mu, &ts);
                continue;
            }
            run_batch(p, j, ws);
            continue;
        }
        int idx = j->next_unit++;
        if (j->next_unit >= j->n_units) {
            if (j == p->head) {
                p->head = j->qnext;
                if (!p->head)
                    p->tail = NULL;
            } else {
                p->bg_head = j->qnext;
                if (!p->bg_head)
                    p->bg_tail = NULL;
            }
            j->qnext = NULL;
            p->depth--;
        }
        if (idx == 0)
            j->t_first = srv_now_ns();
        pthread_mutex_unlock(&p->mu);
        if (!atomic_load_explicit(&j->cancel, memory_order_acquire) &&
            idx <= atomic_load_explicit(&j->skip_after, memory_order_acquire) && ws) {
            /* the engine reads the job's cancel flag between tiles: a deadline or a drain
             * stops a running unit after at most one tile */
            eng_ws_set_cancel(ws, &j->cancel);
            j->unit(j, idx, ws);
            eng_ws_set_cancel(ws, NULL);
        } else if (!ws)
            atomic_store(&j->cancel, true);
        pthread_mutex_lock(&p->mu);
        bool call_done = false;
        if (++j->units_done == j->n_units)
            finish_locked(p, j, &call_done);
        if (call_done) {
            pthread_mutex_unlock(&p->mu);
            j->done(j); /* j may be freed by done */
            pthread_mutex_lock(&p->mu);
        }
    }
    pthread_mutex_unlock(&p->mu);
    eng_ws_free(ws);
    return NULL;
}

static void expire(struct srv_pool *p, struct srv_job *j)
{
    /* mu held on entry and exit */
    j->in_expire = true;
    j->expired_called = true;
    atomic_store_explicit(&j->cancel, true, memory_order_release);
    pthread_mutex_unlock(&p->mu);
    j->expired(j);
    pthread_mutex_lock(&p->mu);
    j->in_expire = false;
    if (j->done_pending) {
        j->done_pending = false;
        pthread_mutex_unlock(&p->mu);
        j->done(j);
        pthread_mutex_lock(&p->mu);
    }
}

static void *monitor_main(void *arg)
{
    struct srv_pool *p = arg;
    pthread_mutex_lock(&p->mu);
    while (!p->stop) {
        int64_t now = srv_now_ns(), next = 0;
        bool again;
        do {
            again = false;
            for (struct srv_job *j = p->all; j; j = j->anext) {
                if (!j->deadline_ns || j->expired_called || j->finished)
                    continue;
                if (j->deadline_ns <= now) {
                    expire(p, j); /* drops the lock: restart the scan */
                    again = true;
                    break;
                }
                if (!next || j->deadline_ns < next)
                    next = j->deadline_ns;
            }
            if (again) {
                now = srv_now_ns();
                next = 0;
            }
        } while (again);
        if (p->stop)
            break;
        if (!next) {
            pthread_cond_wait(&p->tick, &p->mu);
        } else {
            struct timespec ts = {(time_t)(next / 1000000000LL), (long)(next % 1000000000LL)};
            pthread_cond_timedwait(&p->tick, &p->mu, &ts);
        }
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

struct srv_pool *srv_pool_new(int workers, int queue, int64_t batch_delay_ns, int batch_rows)
{
    struct srv_pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->n_workers = workers < 1 ? 1 : workers;
    p->cap = queue < 1 ? 1 : queue;
    p->batch_delay_ns = batch_delay_ns > 0 && batch_rows > 0 ? batch_delay_ns : 0;
    p->batch_rows = batch_rows;
    pthread_mutex_init(&p->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->work, &ca);
    pthread_cond_init(&p->tick, &ca);
    pthread_condattr_destroy(&ca);
    p->threads = calloc((size_t)p->n_workers, sizeof *p->threads);
    if (!p->threads) {
        free(p);
        return NULL;
    }
    int started = 0;
    for (; started < p->n_workers; started++)
        if (pthread_create(&p->threads[started], NULL, worker_main, p) != 0)
            break;
    if (started < p->n_workers || pthread_create(&p->monitor, NULL, monitor_main, p) != 0) {
        pthread_mutex_lock(&p->mu);
        p->stop = true;
        pthread_cond_broadcast(&p->work);
        pthread_mutex_unlock(&p->mu);
        for (int i = 0; i < started; i++)
            pthread_join(p->threads[i], NULL);
        free(p->threads);
        free(p);
        return NULL;
    }
    return p;
}

void srv_pool_free(struct srv_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->work);
    pthread_cond_broadcast(&p->tick);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_workers; i++)
        pthread_join(p->threads[i], NULL);
    pthread_join(p->monitor, NULL);
    pthread_cond_destroy(&p->work);
    pthread_cond_destroy(&p->tick);
    pthread_mutex_destroy(&p->mu);
    free(p->threads);
    free(p);
}

bool srv_pool_submit(struct srv_pool *p, struct srv_job *j)
{
    j->next_unit = j->units_done = 0;
    j->in_expire = j->done_pending = j->expired_called = j->finished = false;
    j->qnext = j->anext = j->aprev = NULL;
    j->batch_next = NULL;
    j->batch_tail = j;
    j->batch_open = false;
    j->batch_n = 1;
    j->batch_sum = j->batch_rows;
    j->t_first = j->t_last = 0;
    j->t_submit = srv_now_ns();
    pthread_mutex_lock(&p->mu);
    if (p->depth >= p->cap || p->stop) {
        pthread_mutex_unlock(&p->mu);
        return false;
    }
    if (j->n_units < 1)
        j->n_units = 1;
    bool batchable = p->batch_delay_ns && j->batch_key && j->batch_run && j->n_units == 1 &&
                     j->batch_rows >= 1 && j->batch_rows <= p->batch_rows && !j->background;
    struct srv_job *lead = NULL;
    if (batchable)
        for (struct srv_job *q = p->head; q && !lead; q = q->qnext)
            if (q->batch_open && q->batch_key == j->batch_key && q->batch_op == j->batch_op &&
                q->batch_sum + j->batch_rows <= p->batch_rows)
                lead = q;
    if (lead) {
        /* join the queued batch: no new FIFO entry, no worker to wake (unless it is full
         * now: a worker may be waiting for it) */
        lead->batch_tail->batch_next = j;
        lead->batch_tail = j;
        lead->batch_n++;
        lead->batch_sum += j->batch_rows;
    } else if (j->background) {
        if (p->bg_tail)
            p->bg_tail->qnext = j;
        else
            p->bg_head = j;
        p->bg_tail = j;
    } else {
        if (batchable) {
            j->batch_open = true;
            j->batch_ready_ns = j->t_submit + p->batch_delay_ns;
        }
        if (p->tail)
            p->tail->qnext = j;
        else
            p->head = j;
        p->tail = j;
    }
    p->depth++;
    j->anext = p->all;
    if (p->all)
        p->all->aprev = j;
    p->all = j;
    p->active++;
    if (lead) {
        /* a worker may be waiting for this batch to fill */
        if (lead->batch_sum >= p->batch_rows)
            pthread_cond_broadcast(&p->work);
    } else if (j->n_units > 1) {
        pthread_cond_broadcast(&p->work);
    } else {
        /* one worker is enough: one waiting for a batch at the head wakes at its ready
         * time anyway, and a worker that takes a batch wakes the next one (run_batch) */
        pthread_cond_signal(&p->work);
    }
    if (j->deadline_ns)
        pthread_cond_signal(&p->tick);
    pthread_mutex_unlock(&p->mu);
    return true;
}

void srv_pool_cancel_all(struct srv_pool *p)
{
    pthread_mutex_lock(&p->mu);
    bool again;
    do {
        again = false;
        for (struct srv_job *j = p->all; j; j = j->anext) {
            if (j->expired_called || j->finished)
                continue;
            expire(p, j);
            again = true;
            break;
        }
    } while (again);
    pthread_mutex_unlock(&p->mu);
}

void srv_pool_batch_stats(struct srv_pool *p, struct srv_batch_stats *out)
{
    pthread_mutex_lock(&p->mu);
    *out = p->bstats;
    pthread_mutex_unlock(&p->mu);
}

int srv_pool_workers(const struct srv_pool *p)
{
    return p->n_workers;
}

bool srv_pool_batching(const struct srv_pool *p)
{
    return p->batch_delay_ns > 0;
}

int srv_pool_depth(struct srv_pool *p)
{
    pthread_mutex_lock(&p->mu);
    int d = p->depth;
    pthread_mutex_unlock(&p->mu);
    return d;
}

int srv_pool_active(struct srv_pool *p)
{
    pthread_mutex_lock(&p->mu);
    int d = p->active;
    pthread_mutex_unlock(&p->mu);
    return d;
}
