/*
 * call.h — one model operation in flight: the parsed request, a reference to the model
 * version it started on, its plan of units for the worker pool, its result buffers and,
 * once finished, its response.
 *
 * Plan: the units of server/plan.h (rows, samples aligned to ENG_TILE_ROWS, targets).
 * Summaries and resimulation errors are reduced sequentially after the last unit, in
 * sample order.  A calibration's units are runs of pairs (plan.h): each samples its pairs
 * and computes their ranks and TARP counts; the statistics over all pairs (calib.h) follow
 * the last unit.  An mmd call is a sample plan for its one observation, with the reference
 * rows stored after the samples; the kernel matrix, MMD^2 and its permutation test follow
 * the last unit.  A forward / log_prob call of at most one tile, and (with batching on) a
 * sample call of at most one tile of samples in all, may be computed in a batch with others
 * of the same model and operation (pool.h, dynamic batching); such a sample call is one
 * pool unit that runs its observations in turn when it is not batched.  A sample call
 * that rejects outside the model's prior box has one unit per observation (its samples
 * are the first accepted candidates, so an observation cannot be cut) and is never
 * batched; a log_prob call with leakage_correction adds one unit per y row that estimates
 * the acceptance, applied after the last unit, and is never batched either.
 *
 * Lifetime: reference counted.  srv_call_new returns one reference (the HTTP side's);
 * srv_call_submit adds the pool's, dropped after `done`.  Exactly one of done / expired
 * / queue-full completes the call (atomic state), writes c->resp and calls c->wake.
 */
#ifndef INNSERVE_SERVER_CALL_H
#define INNSERVE_SERVER_CALL_H

#include <pthread.h>
#include <stdatomic.h>

#include "../proto/request.h"
#include "../proto/response.h"
#include "plan.h"
#include "pool.h"
#include "server.h"

/* PENDING -> CLAIMED (the one completer won the race) -> DONE (resp written; release). */
enum srv_call_state { SRV_CALL_PENDING = 0, SRV_CALL_CLAIMED, SRV_CALL_DONE };

struct srv_call {
    struct srv_job job;            /* must stay first */
    atomic_int refs;
    atomic_int state;
    struct srv_ctx *ctx;
    struct srv_version *ver;       /* one reference */
    struct proto_request req;      /* owned */
    struct proto_result res;       /* owned */
    enum proto_format fmt;
    bool v2;
    struct srv_unit *units;
    int n_plan;                    /* entries of units (job.n_units is 1 for a batchable
                                      sample call, whose one unit runs them all) */
    double *sq;                    /* resimulation: squared error per sample */
    /* log_prob with leakage_correction: units from leak_unit0 on estimate the acceptance
     * of y row (unit - leak_unit0), after the row units; -1 when none */
    int leak_unit0;
    /* calibration: the TARP reference points (N x dims.x, from the request or drawn from
     * the seed) and the z-scoring of theta* (dims.x each; NULL when z_score is false) */
    double *tarp_ref, *tarp_lo, *tarp_span;
    pthread_mutex_t err_mu;
    int err_unit;                  /* lowest failing unit, or -1 */
    struct proto_error err;
    struct srv_response resp;      /* written by whoever completes the call */
    double format_ms;
    /* true when the last unit completed the call (not a deadline or cancellation): only
     * then may the HTTP side read job.t_* (a cancelled job may still be running) */
    bool timed;
    /* set by the HTTP layer: called once when resp is ready (from any thread) */
    void (*wake)(struct srv_call *c);
    void *wake_arg;
    atomic_int wake_state;         /* the HTTP layer's handshake with wake (http.c) */
    /* progress, for jobs (jobs.h): work_total is the sum of the plan's unit counts
     * (samples, rows or targets); work_done grows as units return; t_started is when the
     * first unit began (CLOCK_MONOTONIC ns, 0 before) */
    long work_total;
    atomic_long work_done;
    _Atomic int64_t t_started;
    void (*unit_fn)(struct srv_job *j, int idx, struct eng_ws *ws); /* the real unit */
    /* run as a job: a deadline answers with --job-timeout's message */
    bool is_job;
};

/* Takes ownership of *req (left zeroed) and a new reference to ver.  Plans the units and
 * allocates the result buffers.  NULL with e set (503 out_of_memory) on failure. */
struct srv_call *srv_call_new(struct srv_ctx *ctx, struct srv_version *ver,
                              struct proto_request *req, enum proto_format fmt, bool v2,
                              struct proto_error *e);
void srv_call_unref(struct srv_call *c);

/* Queues the call on the pool with deadline_ns.  false when the queue is full (then the
 * call is untouched and the caller answers 503 with srv_call_fail). */
bool srv_call_submit(struct srv_call *c, int64_t deadline_ns);
/* Completes a pending call with the error e (no-op if it is already completed) and calls
 * wake.  Used for the queue-full answer. */
void srv_call_fail(struct srv_call *c, const struct proto_error *e);
/* Completes a pending call with the error e and cancels its work: units not yet started
 * are skipped and running ones stop at their next engine tile.  Calls wake.  false (and
 * nothing happens) when the call was already completed. */
bool srv_call_cancel(struct srv_call *c, const struct proto_error *e);
/* Adds a reference (the one srv_call_new returns is the caller's). */
void srv_call_ref(struct srv_call *c);

/* Runs every unit on this thread with ws and completes the call (wake is not called);
 * c->resp holds the answer afterwards. */
void srv_call_run_inline(struct srv_call *c, struct eng_ws *ws);

#endif
