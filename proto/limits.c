/*
 * limits.c — the default values of struct proto_limits (limits.h).
 */
#include "limits.h"

struct proto_limits proto_limits_default(void)
{
    struct proto_limits l = {
        .max_body_bytes = PROTO_DEF_MAX_BODY_BYTES,
        .max_json_depth = PROTO_DEF_MAX_JSON_DEPTH,
        .max_elements = PROTO_DEF_MAX_ELEMENTS,
        .max_rows = PROTO_DEF_MAX_ROWS,
        .max_obs = PROTO_DEF_MAX_OBS,
        .max_samples = PROTO_DEF_MAX_SAMPLES,
        .max_response_bytes = PROTO_DEF_MAX_RESPONSE_BYTES,
        .max_quantiles = PROTO_DEF_MAX_QUANTILES,
        .max_solver_iter = PROTO_DEF_MAX_SOLVER_ITER,
        .max_preimage_targets = PROTO_DEF_MAX_PREIMAGE_TARGETS,
        .max_preimage_solutions = PROTO_DEF_MAX_PREIMAGE_SOLUTIONS,
        .max_preimage_steps = PROTO_DEF_MAX_PREIMAGE_STEPS,
        .max_temperature = PROTO_DEF_MAX_TEMPERATURE,
        .default_num_samples = PROTO_DEF_NUM_SAMPLES,
        .max_mmd_points = PROTO_DEF_MAX_MMD_POINTS,
    };
    return l;
}
