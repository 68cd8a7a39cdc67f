/*
 * limits.h — every bound innserve puts on untrusted input and on its answers, by name.
 *
 * The PROTO_DEF_* macros are the defaults; struct proto_limits carries the values in force
 * (the daemon fills it from flags / INNSERVE_* variables, see server/config.c and
 * docs/api.md "Limits").  proto/ enforces them while parsing, before anything is allocated
 * for a tensor or handed to the engine; server/ enforces the body, response and queue ones.
 */
#ifndef INNSERVE_PROTO_LIMITS_H
#define INNSERVE_PROTO_LIMITS_H

#include <stddef.h>

#define PROTO_DEF_MAX_BODY_BYTES     (8u << 20)   /* --max-body: request body bytes */
#define PROTO_DEF_MAX_JSON_DEPTH     32           /* --max-depth: nesting of [ and { */
#define PROTO_DEF_MAX_ELEMENTS       (1u << 20)   /* --max-elements: numbers in one tensor */
/* JSON values one request may hold, per --max-elements: two tensors (x and y) at full size
 * plus their row arrays.  The parser takes ~64 bytes per value, so the default bounds a
 * request's parse to ~128 MiB whatever the body looks like. */
#define PROTO_JSON_VALUES_PER_ELEMENT 2
#define PROTO_DEF_MAX_ROWS           65536        /* --max-rows: rows of x/z/y/target in one request */
#define PROTO_DEF_MAX_OBS            4096         /* --max-obs: observations (rows of y) in one sample request */
#define PROTO_DEF_MAX_SAMPLES        (1u << 20)   /* --max-samples: n_obs * num_samples per request */
#define PROTO_DEF_MAX_RESPONSE_BYTES (64u << 20)  /* --max-response: bytes of one answer */
#define PROTO_DEF_MAX_QUANTILES      32           /* quantiles in one summary */
#define PROTO_DEF_MAX_SOLVER_ITER    10000        /* --max-solver-iter: max_iter of a numeric inverse */
#define PROTO_DEF_MAX_PREIMAGE_TARGETS   64       /* --max-preimage-targets: target rows */
#define PROTO_DEF_MAX_PREIMAGE_SOLUTIONS 256      /* --max-preimage-solutions: num_solutions */
#define PROTO_DEF_MAX_PREIMAGE_STEPS     20000    /* --max-preimage-steps: max_steps */
#define PROTO_DEF_MAX_TEMPERATURE    100.0        /* sample temperature upper bound */
#define PROTO_DEF_NUM_SAMPLES        1000         /* num_samples when absent */
#define PROTO_DEF_MAX_MMD_POINTS     4096         /* num_samples + reference rows of one mmd
                                                     request: its kernel matrix is their
                                                     square in doubles (128 MiB at 4096) */
#define PROTO_MAX_MMD_SCALES         16           /* IMQ widths in one mmd request */
#define PROTO_MAX_PERMUTATIONS       10000        /* permutations of one mmd test */
#define PROTO_MAX_RANK_BINS          1000         /* calibration: rank-histogram bins */
#define PROTO_MAX_COVERAGE_POINTS    1000         /* calibration: coverage levels K */
#define PROTO_DEF_CALIB_SAMPLES      100          /* calibration: num_samples when absent */
/* Rejection against a model's prior box (sample with reject_outside_prior, log_prob with
 * leakage_correction): an observation's candidates stop after
 * max(PROTO_PRIOR_DRAWS_PER_SAMPLE x samples wanted, PROTO_PRIOR_MIN_DRAWS) draws (an
 * acceptance below about 1 %), answered 422 rejection_limit, besides the deadline. */
#define PROTO_PRIOR_DRAWS_PER_SAMPLE 100
#define PROTO_PRIOR_MIN_DRAWS        100000
#define PROTO_DEF_LEAKAGE_SAMPLES    10000        /* accepted candidates of one leakage
                                                     estimate (sbi's num_rejection_samples) */
#define PROTO_MAX_SEED               9007199254740991.0 /* 2^53 - 1: seeds survive JSON doubles */
#define PROTO_MAX_FIELD_NAME         64           /* longest field name quoted in a message */
#define PROTO_AUTH_TOKEN_MAX_BYTES   4096         /* longest bearer token (--auth-token-file) */
/* Query parameters of one request (more: 400). */
#define PROTO_MAX_QUERY_PARAMS       32
/* format=png grids of samples (png.h): the integer upscale, the side and the pixel count
 * of the image (413 too_large past them; the answer also stays under --max-response). */
#define PROTO_MAX_PNG_SCALE          16
#define PROTO_MAX_PNG_SIDE           16384
#define PROTO_MAX_PNG_PIXELS         (1L << 24)
/* An application/x-npy request body: the header of one array (numpy writes < 100 bytes
 * for every shape taken here) and the arrays in one body (the main input and y). */
#define PROTO_NPY_MAX_HEADER         4096
#define PROTO_NPY_MAX_ARRAYS         2
/* HTTP message limits, checked by the daemon before anything else (414 / 431).  They sit
 * below what libmicrohttpd's per-connection memory (SRV_CONN_MEMORY, server/http.c) holds,
 * so a request over them gets the JSON error, not libmicrohttpd's own page. */
#define PROTO_MAX_URI_BYTES          4096         /* request target (path and query) */
#define PROTO_MAX_HEADER_BYTES       8192         /* request line and header fields together */

/* Values in force.  A plain value struct: copy it freely. */
struct proto_limits {
    size_t max_body_bytes;
    int max_json_depth;
    long max_elements;
    int max_rows;
    int max_obs;
    long max_samples;
    size_t max_response_bytes;
    int max_quantiles;
    int max_solver_iter;
    int max_preimage_targets;
    int max_preimage_solutions;
    int max_preimage_steps;
    double max_temperature;
    int default_num_samples;
    int max_mmd_points;
};

/* The PROTO_DEF_* values. */
struct proto_limits proto_limits_default(void);

#endif
