/*
 * response.h — the results of model operations (struct proto_result, filled by the
 * server's workers from engine calls) and the JSON writers that print them, with every
 * large array printed straight into a struct proto_buf by the round-trip printers of
 * fmt.h (no cJSON tree per number).  Also the metadata, model list and certificate
 * answers.  CSV and NPY writers for samples are in csv.h and npy.h; V2 in v2.h.
 *
 * Writers append to b and never fail on their own: check proto_buf_failed(b) afterwards
 * (PROTO_BUF_OVER: the answer would pass the buffer's cap -> 413 result_too_large).
 */
#ifndef INNSERVE_PROTO_RESPONSE_H
#define INNSERVE_PROTO_RESPONSE_H

#include <stdbool.h>
#include <stdint.h>

#include "../engine/engine.h"
#include "buf.h"
#include "request.h"
#include "summary.h"

/* Which checkpoint answered: carried by every model response. Borrowed strings. */
struct proto_model_id {
    const char *name;
    const char *version;
    const char *sha256;
};

struct proto_result;

/* The statistics of a calibration answer (docs/api.md), all arrays owned.  D = dims.x,
 * N pairs, B = bins, K = coverage_points, T = tarp_bins. */
struct proto_calib {
    unsigned diagnostics;   /* PROTO_DIAG_* asked for */
    int D;
    int *ranks;             /* N x D SBC ranks */
    int *hpd_ranks;         /* N */
    int *tarp_counts;       /* N: #{l : d(ref, theta_l) < d(ref, theta*)} */
    double *ks_stat, *ks_p; /* D each */
    int bins;
    double *edges;          /* B + 1 */
    long *counts;           /* D x B */
    int K;
    double confidence;
    double *levels, *lower, *upper, *hpd_emp; /* K + 1 each */
    double *central_emp;    /* D x (K + 1) */
    int tarp_bins;
    double *alpha, *ecp;    /* T + 1 each */
    double atc, tarp_p;
    int n_warnings;
    char warnings[2][160];  /* sbi's advice on small N or L */
};

/* Allocates every array of c for the sizes given (zeroed); false when out of memory (then
 * proto_calib_free releases what was allocated). */
bool proto_calib_alloc(struct proto_calib *c, int N, int D, int bins, int K, int tarp_bins);
void proto_calib_free(struct proto_calib *c);
/* The statistics over all N pairs of L samples from the per-pair ranks and TARP counts
 * already in c (engine/calib.h): KS tests and histograms of the SBC ranks, the coverage
 * curves and their band, the TARP curve and its check, each only when its diagnostic is
 * asked for; and sbi's warnings on small N or L.  false when out of memory (scratch, or the
 * matrix of the exact KS distribution). */
bool proto_calib_reduce(struct proto_calib *c, int N, int L);
/* MMD^2 between r's num_samples samples and the mmd_m reference rows stored after them in
 * r->samples (dims_x wide), and its permutation p-value under r->seed (NAN when
 * r->permutations is 0).  false when out of memory (the kernel matrix). */
bool proto_mmd_reduce(struct proto_result *r, int dims_x);

/* Result of one operation.  Every pointer member is owned: free with proto_result_free. */
struct proto_result {
    enum proto_op op;
    int n;              /* rows: forward/inverse/log_prob; observations: sample; targets: preimage */
    /* forward: z (n x dims.z; flow/cinn/inn), y_out (n x dims.y; inn/mlp), log_det (n) */
    float *z, *y_out;
    double *log_det;
    /* inverse: x (n x dims.x) and log_det (n) */
    float *x;
    /* log_prob: n values */
    double *log_prob;
    /* sample: samples (n x num_samples x dims.x), sample_lp (n x num_samples) */
    long num_samples;
    uint64_t seed;
    float temperature;
    unsigned outputs;
    float *samples;
    double *sample_lp;
    bool has_summary;
    struct proto_summary summary;
    double *rmse;       /* n: resimulation error per observation (inn) */
    /* rejection against the prior box: n_accept entries (sample: one per observation, with
     * reject_outside_prior on a model with a prior; log_prob: one per y row, with
     * leakage_correction), NULL when none */
    int n_accept;
    uint64_t *drawn, *accepted;
    /* numeric inverse statistics (inverse, sample): solver_rows rows, nested as
     * [n][solver_rows / n] for sample */
    bool has_solver;
    int solver_method;
    long solver_rows;
    int *iterations;
    double *residual, *error_bound;
    bool *converged;
    bool certified;
    /* preimage: n targets x num_solutions rows of dims.x; pre_found[n] rows valid */
    int num_solutions;
    int pre_method;
    float *pre_x;
    double *pre_res;
    int *pre_found;
    /* calibration: n pairs, num_samples samples each in samples / sample_lp (pair by pair),
     * log_prob (n): log q(theta* | y) */
    struct proto_calib calib;
    /* mmd: m reference rows, the estimate and its permutation p-value (NAN: none) */
    int mmd_m, permutations, n_scales;
    double scales[PROTO_MAX_MMD_SCALES];
    bool unbiased;
    double mmd2, mmd_p;
};

void proto_result_free(struct proto_result *r);

/* The JSON answer of a model operation: {"model", "version", "sha256", ...fields of op}. */
void proto_write_result_json(struct proto_buf *b, const struct proto_model_id *id,
                             const struct eng_info *info, const struct proto_result *r);

/* The solver object: {"method", "iterations", "residual", "error_bound", "converged",
 * "unconverged", "certified"}; per-row arrays, nested [nest][rows/nest] when nest > 0
 * (sample: one list per observation), flat when nest == 0. */
void proto_write_solver(struct proto_buf *b, const struct proto_result *r, int nest);

/* GET /v1/models/{m}: metadata (blocks from info->blocks_json, certificate summary, and
 * "test_vectors": {"y": [[...]], "x": [[...]]} from info->test_y / test_x, omitted when
 * info->n_test_vectors is 0). */
void proto_write_metadata(struct proto_buf *b, const struct proto_model_id *id,
                          const struct eng_info *info, const struct eng_certificate *cert,
                          double load_ms);

/* GET /v1/models/{m}/certificate */
void proto_write_certificate(struct proto_buf *b, const struct proto_model_id *id,
                             const struct eng_certificate *cert);

/* One entry of GET /v1/models.  info NULL when no version is loaded. */
struct proto_model_entry {
    const char *name;
    const char *version;       /* "" when none */
    const char *state;         /* "READY", "LOADING", "UNAVAILABLE" */
    const char *reason;        /* NULL or why not ready */
    const char *reload_error;  /* NULL or why the last reload of this model failed */
    const struct eng_info *info;
};
void proto_write_models(struct proto_buf *b, const struct proto_model_entry *m, int n);

/* Writes a JSON array of n float32 rows of width w: [[..],[..]]. */
void proto_write_f32_rows(struct proto_buf *b, const float *v, long n, int w);

#endif
