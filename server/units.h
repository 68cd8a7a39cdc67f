/*
 * units.h — the work of a call: what a pool worker runs for one unit of a call's plan, and
 * for a batch of calls computed together.  srv_call_new (call.c) picks them per operation;
 * units.c computes them.
 *
 * Every unit writes only its own plan entry's part of the call's result buffers; a failure
 * is recorded on the call (the lowest failing unit's error is the answer, and the units
 * after it are skipped) and never stops the other calls of a batch.  Units read the call's
 * cancel flag between pairs or tiles.
 */
#ifndef INNSERVE_SERVER_UNITS_H
#define INNSERVE_SERVER_UNITS_H
#include "call.h"

/* forward / inverse / log_prob: rows units[idx].first .. + count. */
void srv_unit_rows(struct srv_job *j, int idx, struct eng_ws *ws);
/* sample: plan entry idx (one observation's range of sample indices), with its
 * re-simulation errors when asked for. */
void srv_unit_sample(struct srv_job *j, int idx, struct eng_ws *ws);
/* sample, the one unit of a batchable call: its plan entries in turn. */
void srv_unit_sample_all(struct srv_job *j, int idx, struct eng_ws *ws);
/* preimage: target idx. */
void srv_unit_preimage(struct srv_job *j, int idx, struct eng_ws *ws);
/* calibration: the pairs of plan entry idx. */
void srv_unit_calibration(struct srv_job *j, int idx, struct eng_ws *ws);

/* Batches (srv_job.batch_run): the forward / log_prob calls, or the sample calls, of one
 * batch computed with one engine call, each call getting the bytes it gets alone. */
void srv_batch_rows(struct srv_job *first, struct eng_ws *ws);
void srv_batch_samples(struct srv_job *first, struct eng_ws *ws);
#endif
