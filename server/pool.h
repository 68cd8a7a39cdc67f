/*
 * pool.h — the bounded compute pool: a fixed set of worker threads, each owning one
 * engine workspace, fed by a FIFO of jobs with a capacity and per-job deadlines.
 *
 * A job is split into n_units independent units (tiles of rows or of samples).  Workers
 * claim units of the job at the head of the queue, so one large request spreads over all
 * workers; when every unit has run (or was skipped because the job was cancelled),
 * `done` is called exactly once on the worker that finished last.  A monitor thread
 * watches deadlines: when a job's deadline passes before it is done, `expired` is called
 * once (from the monitor thread), the job is cancelled (units not yet started are
 * skipped, running ones stop at their next engine tile: the worker's workspace carries
 * the job's cancel flag), and `done` still follows when the running units return.  `expired` and
 * `done` never run at the same time for a job, and `expired` never runs after `done`.
 *
 * The job struct is the caller's (embed it); it must stay valid until `done` returns.
 */
#ifndef INNSERVE_SERVER_POOL_H
#define INNSERVE_SERVER_POOL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct eng_ws;
struct srv_pool;

struct srv_job {
    /* set by the submitter */
    void (*unit)(struct srv_job *j, int idx, struct eng_ws *ws);
    void (*done)(struct srv_job *j);
    void (*expired)(struct srv_job *j);
    int n_units;
    int64_t deadline_ns;      /* CLOCK_MONOTONIC; 0 = none */
    atomic_bool cancel;       /* set to skip units not yet started and stop running ones
                                 between engine tiles (eng_ws_set_cancel) */
    atomic_int skip_after;    /* units with a larger index not yet started are skipped (a
                                 failed unit sets its own index: the units before it still
                                 run, so the error reported is the first one's, whatever
                                 the timing); INT_MAX = none */
    /* timing, filled by the pool (CLOCK_MONOTONIC ns) */
    int64_t t_submit, t_first, t_last;
    /* pool-private */
    int next_unit, units_done;
    bool in_expire, done_pending, expired_called, finished;
    struct srv_job *qnext;               /* FIFO of jobs with unclaimed units */
    struct srv_job *anext, *aprev;       /* all jobs not yet done (deadline watch) */
};

/* workers >= 1 threads, queue >= 1 jobs waiting.  NULL on failure. */
struct srv_pool *srv_pool_new(int workers, int queue);
/* Stops the threads after the queue is empty (units still queued run first) and frees.
 * Call only when no more jobs will be submitted. */
void srv_pool_free(struct srv_pool *p);

/* Enqueues j.  false (nothing happens) when the queue already holds `queue` jobs
 * waiting for a worker. */
bool srv_pool_submit(struct srv_pool *p, struct srv_job *j);
/* Cancels every job not yet done, calling `expired` on each (as a deadline would). */
void srv_pool_cancel_all(struct srv_pool *p);

int srv_pool_workers(const struct srv_pool *p);
/* Jobs waiting for a worker (queue depth) and jobs submitted but not done. */
int srv_pool_depth(struct srv_pool *p);
int srv_pool_active(struct srv_pool *p);

int64_t srv_now_ns(void);

#endif
