/*
 * jobs.h — model operations run as jobs: a POST with "async": true (or the header
 * Prefer: respond-async) is answered 202 with the job's URL at once, while the call runs
 * on the worker pool like any other; GET /v1/jobs/{id} reports its state and progress,
 * GET /v1/jobs/{id}/result answers what the synchronous request would have answered
 * (status, Content-Type and bytes), DELETE cancels it or removes a finished one.
 *
 * The table lives in memory only: jobs do not survive a restart.  A finished job (done,
 * failed or cancelled) is kept for --job-ttl seconds after it finished, then dropped the
 * next time the table is used.  Limits: --max-jobs jobs unfinished or kept, --max-job-bytes
 * bytes of kept results; a submission past either is refused (503 too_many_jobs with
 * Retry-After) and nothing is evicted to make room.  A job's deadline is --job-timeout
 * from its submission (not --deadline-ms, which bounds synchronous requests).
 *
 * Ids are 128 random bits (getrandom) in 32 lowercase hexadecimal digits, found through a
 * hash index (O(1)).  One mutex guards the table; the pool's threads report a finished call
 * through the call's `wake` callback, which takes that mutex (so no call into call.c that
 * may complete a call is made while holding it, except srv_call_submit, which never does).
 *
 * Ownership: the table holds one reference to each unfinished job's call and drops it when
 * the call completes; a finished job keeps the call's response (its body) until it is
 * removed.  Every function answers into *out (a response the caller queues and frees).
 */
#ifndef INNSERVE_SERVER_JOBS_H
#define INNSERVE_SERVER_JOBS_H

#include <stdbool.h>
#include <stdint.h>

#include "server.h"

struct srv_call;
struct srv_jobs;

/* Job states, in the order of innserve_jobs{state}. */
enum srv_task_state {
    SRV_TASK_QUEUED = 0,
    SRV_TASK_RUNNING,
    SRV_TASK_DONE,
    SRV_TASK_FAILED,
    SRV_TASK_CANCELLED,
    SRV_TASK_NSTATES
};
/* "queued", "running", "done", "failed", "cancelled". */
const char *srv_task_state_str(enum srv_task_state s);

/* The limits and the Retry-After delay come from ctx->cfg.  NULL when out of memory. */
struct srv_jobs *srv_jobs_new(struct srv_ctx *ctx);
/* Frees every job.  Call after the pool is freed (no call may complete any more). */
void srv_jobs_free(struct srv_jobs *t);

/* Runs call c (not yet submitted) as a job; takes the caller's reference to c, also when
 * it fails.  *out: 202 with Location and the job's first state, or the error (503
 * too_many_jobs past a limit, with Retry-After; 503 overloaded when the pool's queue is
 * full; 503 draining while shutting down).  pref: the request asked with Prefer:
 * respond-async (the answer says Preference-Applied). */
void srv_jobs_submit(struct srv_jobs *t, struct srv_call *c, bool pref, struct srv_response *out);

/* GET /v1/jobs/{id}: 200 with the job object, or 404 job_not_found. */
void srv_jobs_get(struct srv_jobs *t, const char *id, struct srv_response *out);
/* GET /v1/jobs/{id}/result: the stored answer of a done or failed job; 409 job_not_done
 * while it is queued or running, 409 job_cancelled; 404 job_not_found. */
void srv_jobs_result(struct srv_jobs *t, const char *id, struct srv_response *out);
/* DELETE /v1/jobs/{id}: cancels an unfinished job (200 with the job object, state
 * "cancelled" unless it finished meanwhile) or removes a finished one (200 with its last
 * object); 404 job_not_found. */
void srv_jobs_delete(struct srv_jobs *t, const char *id, struct srv_response *out);
/* GET /v1/jobs: 200 {"jobs": [...]} in submission order, without "result". */
void srv_jobs_list(struct srv_jobs *t, struct srv_response *out);

/* SIGTERM: cancels every unfinished job (each logged as job_cancelled, reason
 * "shutdown").  Returns how many were cancelled. */
int srv_jobs_cancel_all(struct srv_jobs *t);

/* Jobs by state now, and jobs submitted since the start. */
void srv_jobs_counts(struct srv_jobs *t, uint64_t by_state[SRV_TASK_NSTATES], uint64_t *total);

#endif
