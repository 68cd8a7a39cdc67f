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
 * Dynamic batching (on when the pool is made with a batch delay > 0): a one-unit job with a
 * batch_key joins a job of the same key and batch_op that is still queued, while their rows
 * fit in one batch (batch_rows of srv_pool_new); the first job of a batch waits in the
 * queue until its delay has passed since it was submitted, the batch is full, or no other
 * job is in flight (then nothing could join it), and a worker then computes the whole batch
 * with one batch_run call instead of `unit`.  Every job of a batch keeps its own deadline,
 * `expired` and `done` (called once each, after batch_run returns).  A batch is not
 * cancelled by one job's deadline: it is at most one engine tile.  While workers are busy,
 * requests queue up and join batches without any delay, so batches grow with the load.
 *
 * Background jobs (background = true: the jobs of jobs.h) wait in a FIFO of their own that
 * workers serve only while the main FIFO is empty, so a long job delays a synchronous
 * request by at most the unit each worker is computing.  They are never batched.
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
    bool background;          /* claimed only while no other job waits (a job of jobs.h) */
    atomic_bool cancel;       /* set to skip units not yet started and stop running ones
                                 between engine tiles (eng_ws_set_cancel) */
    atomic_int skip_after;    /* units with a larger index not yet started are skipped (a
                                 failed unit sets its own index: the units before it still
                                 run, so the error reported is the first one's, whatever
                                 the timing); INT_MAX = none */
    /* batching (set by the submitter; batch_key NULL = never batched) */
    const void *batch_key;    /* jobs with the same key and batch_op may be computed together */
    int batch_op;
    int batch_rows;           /* rows the job adds to a batch, 1 .. the pool's batch_rows */
    /* computes every job of the list first, first->batch_next, ... (instead of `unit`);
     * skipped jobs are the callee's business: done follows for each either way */
    void (*batch_run)(struct srv_job *first, struct eng_ws *ws);
    struct srv_job *batch_next;          /* filled by the pool: the batch's next job */
    /* timing, filled by the pool (CLOCK_MONOTONIC ns) */
    int64_t t_submit, t_first, t_last;
    /* pool-private */
    int next_unit, units_done;
    bool in_expire, done_pending, expired_called, finished;
    bool batch_open;                     /* first job of a batch still in the FIFO */
    int batch_n, batch_sum;              /* jobs and rows in the batch it opened */
    int64_t batch_ready_ns;              /* when its batch stops waiting for more jobs */
    struct srv_job *batch_tail;
    struct srv_job *qnext;               /* FIFO of jobs with unclaimed units */
    struct srv_job *anext, *aprev;       /* all jobs not yet done (deadline watch) */
};

/* workers >= 1 threads, queue >= 1 jobs waiting (a batch counts each of its jobs).
 * batch_delay_ns > 0 turns dynamic batching on: a batch waits at most that long for more
 * jobs and holds at most batch_rows rows.  NULL on failure. */
struct srv_pool *srv_pool_new(int workers, int queue, int64_t batch_delay_ns, int batch_rows);
/* Stops the threads after the queue is empty (units still queued run first) and frees.
 * Call only when no more jobs will be submitted. */
void srv_pool_free(struct srv_pool *p);

/* Enqueues j.  false (nothing happens) when the queue already holds `queue` jobs
 * waiting for a worker. */
bool srv_pool_submit(struct srv_pool *p, struct srv_job *j);
/* Cancels every job not yet done, calling `expired` on each (as a deadline would). */
void srv_pool_cancel_all(struct srv_pool *p);

/* Batches computed so far (only with batching on): how many, and histograms of the jobs
 * and of the rows per batch, bucket i counting batches with at most 2^i of them (the last
 * bucket: more than 2^(SRV_BATCH_BUCKETS-1)), not cumulative. */
#define SRV_BATCH_BUCKETS 10
struct srv_batch_stats {
    uint64_t batches;
    uint64_t jobs[SRV_BATCH_BUCKETS + 1], rows[SRV_BATCH_BUCKETS + 1];
    uint64_t jobs_sum, rows_sum;
};
void srv_pool_batch_stats(struct srv_pool *p, struct srv_batch_stats *out);

int srv_pool_workers(const struct srv_pool *p);
/* Whether dynamic batching is on (made with a batch delay > 0). */
bool srv_pool_batching(const struct srv_pool *p);
/* Jobs waiting for a worker (queue depth) and jobs submitted but not done. */
int srv_pool_depth(struct srv_pool *p);
int srv_pool_active(struct srv_pool *p);

int64_t srv_now_ns(void);

#endif
