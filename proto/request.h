/*
 * request.h — typed, validated requests for the model operations of the API
 * (docs/api.md): JSON body -> struct proto_request, checked against the model's kind and
 * dims and against struct proto_limits before anything reaches the engine.
 *
 * What is checked: the body is a JSON object with only the fields the operation takes;
 * tensors are arrays of rows of the model's widths (a flat vector is one row), finite and
 * within float32; counts and options are in range; fields that only some kinds take are
 * refused for the others (y for a flow).  An operation the kind does not define is
 * PROTO_E_UNSUPPORTED (422) before the body is looked at.
 */
#ifndef INNSERVE_PROTO_REQUEST_H
#define INNSERVE_PROTO_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../engine/engine.h"
#include "errors.h"
#include "json.h"
#include "limits.h"

enum proto_op {
    PROTO_OP_FORWARD = 0,
    PROTO_OP_INVERSE,
    PROTO_OP_SAMPLE,
    PROTO_OP_LOG_PROB,
    PROTO_OP_PREIMAGE,
    PROTO_OP_CALIBRATION,
    PROTO_OP_MMD,
    PROTO_OP_COUNT
};
/* "forward", "inverse", "sample", "log_prob", "preimage", "calibration", "mmd". */
const char *proto_op_str(enum proto_op op);
/* PROTO_OP_COUNT when s names none. */
enum proto_op proto_op_parse(const char *s);

/* sample outputs (bit set) */
#define PROTO_OUT_SAMPLES      1u
#define PROTO_OUT_LOG_PROB     2u
#define PROTO_OUT_SUMMARY      4u
#define PROTO_OUT_RESIMULATION 8u

/* calibration diagnostics (bit set) */
#define PROTO_DIAG_SBC      1u
#define PROTO_DIAG_COVERAGE 2u
#define PROTO_DIAG_TARP     4u
#define PROTO_DIAG_ALL      7u

/* Output formats of sample answers (chosen by Accept or the query parameter format). */
enum proto_format { PROTO_FMT_JSON = 0, PROTO_FMT_CSV, PROTO_FMT_NPY, PROTO_FMT_PNG };

/* format=png on sample: [low, high] is mapped to 0..255 (default: the manifest's image
 * range, else [0, 1]); each pixel becomes scale x scale pixels (png.h). */
struct proto_png_opts {
    double low, high;
    int scale;
};

/* The query parameters of a request, decoded, in order (borrowed strings; a parameter
 * without '=' has the value ""). */
struct proto_query {
    int n;
    const char *key[PROTO_MAX_QUERY_PARAMS];
    const char *val[PROTO_MAX_QUERY_PARAMS];
};
/* The value of key (the last one when repeated), NULL when absent. */
const char *proto_query_get(const struct proto_query *q, const char *key);

struct proto_request {
    enum proto_op op;
    /* tensors; rows 0 when absent.  x: forward/log_prob; z: inverse; y: condition or
     * observation (cinn/inn), 1 row = broadcast; target: preimage. */
    struct proto_matrix x, y, z, target;
    /* inverse and sample: numeric-inverse options (only used when numeric_inverse) */
    struct eng_solver_opts solver;
    /* sample */
    long num_samples;
    uint64_t seed;
    bool seed_given;      /* else the caller picks one and echoes it */
    float temperature;
    unsigned outputs;     /* PROTO_OUT_* */
    bool reject;          /* sample, calibration, mmd: "reject_outside_prior" (default
                             true; a field of models with a prior box only): keep only
                             samples inside the box */
    /* log_prob: "leakage_correction" divides the density by the posterior mass inside the
     * prior box, estimated by rejection from leakage_samples accepted candidates per y row
     * drawn under seed (default 0; seed_given says whether it was sent) */
    bool leakage;
    long leakage_samples;
    int n_quantiles;
    double *quantiles;    /* owned; ascending as given */
    /* preimage */
    struct eng_preimage_opts pre; /* low/high point into bounds_low/high */
    float *bounds_low, *bounds_high; /* owned, dims.x each, or NULL */
    /* calibration (docs/api.md): x = theta* (N x dims.x), y their observations (N rows;
     * none for a flow), num_samples = L per pair, seed, solver as sample; ref = the TARP
     * references (N x dims.x; rows 0 = drawn from the seed).
     * mmd: y one observation (1 row; none for a flow), ref = the reference samples
     * (M x dims.x), num_samples, seed, temperature, solver as sample. */
    struct proto_matrix ref;
    unsigned diagnostics;  /* PROTO_DIAG_* */
    int bins;              /* rank-histogram bins, already clamped to L + 1 */
    int coverage_points;   /* K: levels k / K, k = 0..K */
    double confidence;     /* of the binomial band, in (0, 1) */
    int tarp_bins;
    bool z_score;
    int n_scales;
    double scales[PROTO_MAX_MMD_SCALES]; /* IMQ widths, > 0 */
    bool unbiased;
    int permutations;
    /* "async": true asks for a job (202 + Location) instead of the answer; only the
     * operations proto_op_async names take the field */
    bool async;
    /* internal to request.c: the arrays of an application/x-npy body while it is parsed
     * (npy_main: x, or z for inverse; npy_y: y), moved into x / z / y (empty afterwards) */
    bool npy;
    struct proto_matrix npy_main, npy_y;
    /* sample with format=png: the grid's options (proto_answer_format) */
    struct proto_png_opts png;
    /* V2 only: the request id to echo (owned), and which inputs/outputs were named */
    char *v2_id;
    unsigned v2_outputs;  /* bit per output name, 0 = all */
};

/* True when the operation may run as a job ("async": true in its body, or the header
 * Prefer: respond-async): sample, preimage, calibration and mmd. */
bool proto_op_async(enum proto_op op);

/* True when the kind defines the operation (forward and preimage: every kind; inverse,
 * sample, log_prob, calibration, mmd: not mlp). */
bool proto_op_supported(enum proto_op op, enum eng_kind kind);

/* Parse body[0..len) for operation op of a model described by info.  On success *out is
 * filled (release with proto_request_free); on failure *out holds nothing to free and e
 * says why. */
enum proto_code proto_request_parse(enum proto_op op, const char *body, size_t len,
                                    const struct eng_info *info,
                                    const struct proto_limits *lim, struct proto_request *out,
                                    struct proto_error *e);

/* Parse the fields of an already parsed JSON object (the V2 layer reuses the checks).
 * Internal to proto/ but exposed for v2.c and tests. */
enum proto_code proto_request_from_json(enum proto_op op, const cJSON *root,
                                        const struct eng_info *info,
                                        const struct proto_limits *lim,
                                        struct proto_request *out, struct proto_error *e);

/* Parse an application/x-npy body for forward, inverse, log_prob or sample: the body is
 * the operation's main input as one .npy array (x for forward and log_prob, z for inverse,
 * y for sample), followed by a second array y for the operations where the model takes one
 * (np.save(f, x); np.save(f, y)); x and z as (B, D), (D,) or (B, C, H, W) / (B, C, L) for a
 * shaped model, y as (B, dims.y) or (dims.y,).  The other fields come from the query
 * parameters q (same names as the JSON fields; a value is read as JSON when it parses,
 * else as a string; outputs and quantiles may be comma-separated lists); the answer's
 * format, scale, low and high are left to proto_answer_format.  Then everything is
 * validated as proto_request_parse does.  Other operations: PROTO_E_MEDIA (415). */
enum proto_code proto_request_parse_npy(enum proto_op op, const char *body, size_t len,
                                        const struct proto_query *q,
                                        const struct eng_info *info,
                                        const struct proto_limits *lim,
                                        struct proto_request *out, struct proto_error *e);
/* True when the operation takes application/x-npy bodies (forward, inverse, log_prob,
 * sample). */
bool proto_op_takes_npy(enum proto_op op);
/* True when a Content-Type header value is application/x-npy (parameters allowed). */
bool proto_content_type_npy(const char *ctype);

void proto_request_free(struct proto_request *r);

/* The format an Accept header asks for (NULL/empty/unknown -> JSON). */
enum proto_format proto_format_from_accept(const char *accept);
/* True when a Content-Type header value is acceptable for a JSON body (absent, or
 * application/json or any type ending in +json, parameters allowed). */
bool proto_content_type_ok(const char *ctype);

#endif
