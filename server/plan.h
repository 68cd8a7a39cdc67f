/*
 * plan.h — how one model operation is cut into units for the worker pool.  Pure functions
 * of the request's size and the number of workers: no state, no locks.
 *
 *   rows (forward / inverse / log_prob): ranges of whole multiples of ENG_TILE_ROWS rows,
 *     about n / workers each (at least one tile), so one large request spreads over all
 *     workers;
 *   samples: (observation, samples [first, first + count)) with `first` a multiple of
 *     ENG_TILE_ROWS, about 2 units per worker in all and at most 64 tiles a unit, so every
 *     sample is computed in the same engine tile whatever the number of workers (the
 *     engine's determinism contract: same seed, same bytes);
 *   targets (preimage): one unit per target row;
 *   pairs (calibration): runs of whole pairs, each pair num_samples samples: `first` is the
 *     first pair, `count` the samples of the unit (pairs x num_samples, so the pool's
 *     progress counts samples), about 2 units per worker and at most max_tiles tiles of
 *     samples a unit, but at least one pair.  Every pair is sampled whole by one engine
 *     call with observation = pair index, so its samples do not depend on the cut.
 *
 * Each returns a new array (owned by the caller: free) of *n_units units covering the
 * request exactly once, in order; NULL when out of memory.  An empty request gives one
 * zeroed unit and *n_units = 0.
 */
#ifndef INNSERVE_SERVER_PLAN_H
#define INNSERVE_SERVER_PLAN_H

struct srv_unit {
    int obs;       /* samples: the observation; rows and targets: 0 */
    long first;    /* first row, sample index or target */
    int count;     /* rows, samples or targets in this unit */
};

/* Most tiles of ENG_TILE_ROWS samples in one sample unit. */
#define SRV_PLAN_MAX_SAMPLE_TILES 64
/* The same for a job (jobs.h): smaller units report progress more often and let requests
 * waiting ahead of the job in the pool's order in sooner. */
#define SRV_PLAN_JOB_SAMPLE_TILES 4

struct srv_unit *srv_plan_rows(long n, int workers, int *n_units);
struct srv_unit *srv_plan_samples(int n_obs, long num_samples, int workers, int *n_units);
/* srv_plan_samples with at most max_tiles tiles a unit (>= 1). */
struct srv_unit *srv_plan_samples_tiles(int n_obs, long num_samples, int workers, int max_tiles,
                                        int *n_units);
struct srv_unit *srv_plan_targets(int n, int *n_units);
struct srv_unit *srv_plan_pairs(int n_pairs, long num_samples, int workers, int max_tiles,
                                int *n_units);

#endif
