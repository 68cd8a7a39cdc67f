/*
 * plan.c — cutting a call into units (plan.h).
 */
#include "plan.h"
#include "../engine/engine.h"

#include <stdlib.h>

static long round_up(long v, long m) { return (v + m - 1) / m * m; }

struct srv_unit *srv_plan_rows(long n, int workers, int *n_units)
{
    if (workers < 1)
        workers = 1;
    long chunk = round_up((n + workers - 1) / workers, ENG_TILE_ROWS);
    if (chunk < ENG_TILE_ROWS)
        chunk = ENG_TILE_ROWS;
    int nu = n > 0 ? (int)((n + chunk - 1) / chunk) : 0;
    struct srv_unit *u = calloc((size_t)(nu ? nu : 1), sizeof *u);
    if (!u)
        return NULL;
    for (int i = 0; i < nu; i++) {
        u[i].first = (long)i * chunk;
        u[i].count = (int)(n - u[i].first < chunk ? n - u[i].first : chunk);
    }
    *n_units = nu;
    return u;
}

struct srv_unit *srv_plan_samples(int n_obs, long num_samples, int workers, int *n_units)
{
    return srv_plan_samples_tiles(n_obs, num_samples, workers, SRV_PLAN_MAX_SAMPLE_TILES,
                                  n_units);
}

struct srv_unit *srv_plan_samples_tiles(int n_obs, long num_samples, int workers, int max_tiles,
                                        int *n_units)
{
    if (max_tiles < 1)
        max_tiles = 1;
    if (workers < 1)
        workers = 1;
    long N = num_samples > 0 ? num_samples : 0;
    long total = (long)(n_obs > 0 ? n_obs : 0) * N;
    long target = round_up((total + 2L * workers - 1) / (2L * workers), ENG_TILE_ROWS);
    if (target < ENG_TILE_ROWS)
        target = ENG_TILE_ROWS;
    if (target > (long)max_tiles * ENG_TILE_ROWS)
        target = (long)max_tiles * ENG_TILE_ROWS;
    long per_obs = (N + target - 1) / target;
    long nu = total > 0 ? per_obs * n_obs : 0;
    struct srv_unit *u = calloc((size_t)(nu ? nu : 1), sizeof *u);
    if (!u)
        return NULL;
    long k = 0;
    for (int o = 0; nu && o < n_obs; o++)
        for (long f = 0; f < N; f += target, k++) {
            u[k].obs = o;
            u[k].first = f;
            u[k].count = (int)(N - f < target ? N - f : target);
        }
    *n_units = (int)nu;
    return u;
}

struct srv_unit *srv_plan_targets(int n, int *n_units)
{
    int nu = n > 0 ? n : 0;
    struct srv_unit *u = calloc((size_t)(nu ? nu : 1), sizeof *u);
    if (!u)
        return NULL;
    for (int t = 0; t < nu; t++) {
        u[t].first = t;
        u[t].count = 1;
    }
    *n_units = nu;
    return u;
}

struct srv_unit *srv_plan_pairs(int n_pairs, long num_samples, int workers, int max_tiles,
                                int *n_units)
{
    if (max_tiles < 1)
        max_tiles = 1;
    if (workers < 1)
        workers = 1;
    long L = num_samples > 0 ? num_samples : 1;
    long n = n_pairs > 0 ? n_pairs : 0;
    long target = round_up((n * L + 2L * workers - 1) / (2L * workers), ENG_TILE_ROWS);
    if (target > (long)max_tiles * ENG_TILE_ROWS)
        target = (long)max_tiles * ENG_TILE_ROWS;
    long per = target / L > 0 ? target / L : 1;
    int nu = (int)((n + per - 1) / per);
    struct srv_unit *u = calloc((size_t)(nu ? nu : 1), sizeof *u);
    if (!u)
        return NULL;
    for (int i = 0; i < nu; i++) {
        long first = (long)i * per, k = n - first < per ? n - first : per;
        u[i].first = first;
        u[i].count = (int)(k * L);
    }
    *n_units = nu;
    return u;
}
