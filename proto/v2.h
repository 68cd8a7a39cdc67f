/*
 * v2.h — the Open Inference Protocol (KServe V2) mapping: V2 inference requests ->
 * struct proto_request, results -> V2 inference responses, and the V2 metadata objects.
 *
 * Operation choice: `parameters.operation` in the request, one of "forward" (default),
 * "inverse", "sample", "log_prob".  Tensor names are the v1 field names: inputs x / z / y,
 * outputs z, y, log_det (forward), x, log_det (inverse), x, log_prob (sample: shapes
 * [n_obs, num_samples, dims.x] and [n_obs, num_samples]), log_prob (log_prob).  Float
 * tensors travel as FP32, log-densities and log-dets as FP64.  Sampling knobs
 * (num_samples, seed, temperature) and solver knobs (tol, max_iter, method) are request
 * parameters.  Input datatypes FP32 and FP64 are accepted; data may be flat or nested.
 */
#ifndef INNSERVE_PROTO_V2_H
#define INNSERVE_PROTO_V2_H

#include "response.h"

/* Parse a V2 infer body.  On success *out->op is the chosen operation. */
enum proto_code proto_v2_parse(const char *body, size_t len, const struct eng_info *info,
                               const struct proto_limits *lim, struct proto_request *out,
                               struct proto_error *e);

/* The V2 inference response for r (op and outputs as parsed by proto_v2_parse). */
void proto_v2_write_result(struct proto_buf *b, const struct proto_model_id *id,
                           const struct eng_info *info, const struct proto_request *req,
                           const struct proto_result *r);

/* GET /v2/models/{m}: {name, versions, platform, inputs, outputs, parameters}. */
void proto_v2_write_metadata(struct proto_buf *b, const struct proto_model_id *id,
                             const struct eng_info *info);

/* GET /v2: {name, version, extensions}. */
void proto_v2_write_server(struct proto_buf *b, const char *version);

#endif
