/*
 * model_impl.h — private to the engine: the layout of a loaded model and of a workspace,
 * shared by manifest.c (which builds a model), model.c (which runs it) and selftest.c.
 *
 * Invariants: everything a model owns lives in its arena and is never written after
 * eng_model_load returns; a workspace is owned by one thread.
 */
#ifndef INNSERVE_MODEL_IMPL_H
#define INNSERVE_MODEL_IMPL_H

#include <stdatomic.h>

#include "loader.h"

struct stdz {
    const float *mean, *std; /* NULL when absent */
    double log_std_sum;
};

struct cond_def {
    const struct subnet *net; /* NULL: the condition is y_s itself */
    int width;
};

struct eng_model {
    atomic_int refs;
    struct eng_info info;
    struct arena_chunk *arena;
    char *manifest_text;
    char *blocks_text;
    char *description;
    const char **x_names, **y_names;

    const struct kern *kern; /* kernel path (INNSERVE_KERNELS or the CPU's best) */
    int D;                   /* block width */
    int n_blocks;
    struct blk *blocks;
    int n_numeric;
    int n_conds;
    struct cond_def *conds;
    struct stdz sx, sy;
    const struct subnet *mlp;
    /* inn layout: offsets of the segments in the input and output rows */
    int in_x, in_pad, out_z, out_pad, out_y;
    double sigma_y, sigma_pad;

    size_t ws_floats, ws_doubles; /* per workspace, for ENG_TILE_ROWS rows */
    size_t blk_scratch;           /* floats */
    int cond_total;               /* sum of condition widths */
    struct eng_certificate cert;
    /* numeric inverses (issue 4): per block, the share of the end-to-end tolerance and the
     * factor by which an error in its output grows by the returned x (+inf if unknown) */
    double *tol_frac, *err_amp;
};

struct eng_ws {
    float *f;
    size_t nf;
    double *d;
    size_t nd;
};

/* Write a message into err (may be NULL) and return st. */
enum eng_status eng_errf(char *err, enum eng_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* selftest.c: run the manifest's "tests" object tj through the loaded model m. */
enum eng_status model_self_test(struct ldr *L, struct eng_model *m, const cJSON *tj,
                                struct eng_ws *ws);

#endif
