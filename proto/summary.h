/*
 * summary.h — per-observation summaries of posterior samples: mean, standard deviation,
 * quantiles and the MAP sample (the drawn sample with the highest log-density).
 *
 * Deterministic: computed sequentially in sample order (double accumulators), so the same
 * samples give the same bits whatever produced them.  std is the population standard
 * deviation (divide by N, numpy's default); quantiles interpolate linearly between order
 * statistics (numpy's default "linear" method).
 */
#ifndef INNSERVE_PROTO_SUMMARY_H
#define INNSERVE_PROTO_SUMMARY_H

#include <stdbool.h>

struct proto_summary {
    int n_obs, dx, nq;
    double *q;       /* nq quantile levels (owned copy) */
    float *mean;     /* n_obs x dx */
    float *std;      /* n_obs x dx */
    float *quant;    /* nq x n_obs x dx */
    float *map;      /* n_obs x dx, NULL when no log-densities were given */
    long *map_index; /* n_obs: sample index of the MAP sample, or NULL */
};

/* x: n_obs x N x dx samples; lp: n_obs x N log-densities or NULL (then no MAP).
 * Returns false when out of memory (s then holds nothing).  Free with proto_summary_free. */
bool proto_summary_compute(struct proto_summary *s, const float *x, const double *lp,
                           int n_obs, long N, int dx, const double *q, int nq);
void proto_summary_free(struct proto_summary *s);

#endif
