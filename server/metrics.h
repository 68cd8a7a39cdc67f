/*
 * metrics.h — Prometheus counters, gauges and histograms of the daemon, rendered in the
 * text exposition format (version 0.0.4) by GET /metrics.
 *
 *   innserve_requests_total{model,operation,status}      counter (model "" unless the
 *                                                        repository knows the model)
 *   innserve_request_duration_seconds{operation}         histogram (arrival -> response queued)
 *   innserve_queue_wait_seconds{operation}               histogram (submitted -> first unit)
 *   innserve_compute_seconds{operation}                  histogram (first unit -> last unit)
 *   innserve_in_flight_requests, innserve_queue_depth    gauges
 *   innserve_samples_total{model}                        counter (posterior samples drawn)
 *   innserve_model_state{model,version,state}, innserve_model_load_seconds{model,version}
 *   innserve_reloads_total{result}, innserve_workers, innserve_uptime_seconds
 *   innserve_batches_total, innserve_batch_requests, innserve_batch_rows (dynamic batching)
 *   innserve_jobs{state}, innserve_jobs_total (the job table, jobs.h)
 *
 * Thread safe; counters are updated once per request.
 */
#ifndef INNSERVE_SERVER_METRICS_H
#define INNSERVE_SERVER_METRICS_H

#include <stdbool.h>
#include <stdint.h>
#include "../proto/buf.h"

struct srv_metrics;

/* Operations are the route table's labels (proto_routes().operation). */
struct srv_metrics *srv_metrics_new(void);
void srv_metrics_free(struct srv_metrics *m);

/* Registers a model name the repository holds (copied): from then on requests naming it
 * are counted under their own model label.  Names are never unregistered (counters do
 * not go backwards), so the label set is bounded by the names the repository has held.
 * False when out of memory (the model's requests then count under model=""). */
bool srv_metrics_model(struct srv_metrics *m, const char *name);

/* One finished request.  model: the name the request addressed (NULL or "" for none);
 * an unregistered name is counted under model="".  Times in seconds; queue/compute < 0 when the request had no job. */
void srv_metrics_request(struct srv_metrics *m, const char *model, const char *operation,
                         int status, double duration, double queue, double compute);
/* Posterior samples drawn for a registered model (others are not counted). */
void srv_metrics_samples(struct srv_metrics *m, const char *model, uint64_t n);
void srv_metrics_reload(struct srv_metrics *m, int ok);
void srv_metrics_in_flight(struct srv_metrics *m, int delta);

/* Appends the dynamic batching counters of the pool (srv_pool_batch_stats):
 *   innserve_batches_total, innserve_batch_requests (histogram), innserve_batch_rows (histogram) */
struct srv_batch_stats;
void srv_metrics_render_batches(struct proto_buf *b, const struct srv_batch_stats *s);

/* Appends the job table's gauges and counter (srv_jobs_counts):
 *   innserve_jobs{state} (gauge: jobs in the table by state), innserve_jobs_total (counter:
 *   jobs submitted).  names: the n state names, by_state their counts. */
void srv_metrics_render_jobs(struct proto_buf *b, const char *const *names, const uint64_t *by_state,
                             int n, uint64_t total);

/* Appends everything the metrics object holds (not the model/queue gauges, which the
 * caller appends from the repository and pool). */
void srv_metrics_render(struct srv_metrics *m, struct proto_buf *b);

#endif
