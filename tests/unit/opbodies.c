/*
 * opbodies.c — one request body per operation and model kind of models/, shared by the
 * allocation-failure tests of the parsers and engine (test_allocfail.c) and of the daemon's
 * call path (test_call_allocfail.c), so both fail every allocation on the same requests.
 */
#include "opbodies.h"

/* Bodies per kind (models/: cinn x 4 y 2; inn x 4 -> z 2 with y 2; mlp x 4 -> y 2; flow x
 * 2 with a numeric inverse). */
const char *ob_v1_body(enum eng_kind k, enum proto_op op)
{
    switch (op) {
    case PROTO_OP_FORWARD:
        return k == ENG_KIND_CINN ? "{\"x\": [[0.1, 0.2, 0.3, 0.4], [1, 2, 3, 4]], \"y\": [1.5, 0]}"
               : k == ENG_KIND_FLOW ? "{\"x\": [[0.1, 0.2], [1, 2]]}"
                                    : "{\"x\": [[0.1, 0.2, 0.3, 0.4], [1, 2, 3, 4]]}";
    case PROTO_OP_INVERSE:
        return k == ENG_KIND_CINN ? "{\"z\": [[0.1, 0.2, 0.3, 0.4]], \"y\": [[1.5, 0]]}"
               : k == ENG_KIND_INN ? "{\"z\": [[0.1, 0.2], [0.3, 0.1]], \"y\": [[1.5, 0], [0, 1]]}"
                                   : "{\"z\": [[0.1, 0.2], [1, 2]], \"tol\": 1e-5, \"method\": \"newton\"}";
    case PROTO_OP_LOG_PROB:
        return k == ENG_KIND_FLOW ? "{\"x\": [[0.1, 0.2], [0.5, -1]]}"
                                  : "{\"x\": [[0.1, 0.2, 0.3, 0.4]], \"y\": [[1.5, 0]]}";
    case PROTO_OP_SAMPLE:
        return k == ENG_KIND_FLOW
                   ? "{\"num_samples\": 3, \"seed\": 1, \"outputs\": [\"samples\", \"log_prob\", "
                     "\"summary\"], \"quantiles\": [0.1, 0.9], \"max_iter\": 30}"
               : k == ENG_KIND_INN
                   ? "{\"y\": [[1.5, 0], [0.5, 1]], \"num_samples\": 3, \"seed\": 1, \"outputs\": "
                     "[\"samples\", \"log_prob\", \"summary\", \"resimulation\"], \"quantiles\": "
                     "[0.1, 0.9]}"
                   : "{\"y\": [[1.5, 0], [0.5, 1]], \"num_samples\": 3, \"seed\": 1, \"outputs\": "
                     "[\"samples\", \"log_prob\", \"summary\"], \"quantiles\": [0.1, 0.9]}";
    case PROTO_OP_PREIMAGE:
        return k == ENG_KIND_CINN ? "{\"target\": [[0.1, 0.2, 0.3, 0.4]], \"y\": [1.5, 0], "
                                    "\"num_solutions\": 2, \"max_steps\": 5, \"seed\": 2}"
               : k == ENG_KIND_FLOW ? "{\"target\": [[0.1, 0.2]], \"num_solutions\": 1, "
                                      "\"max_steps\": 5, \"seed\": 2, \"bounds\": {\"low\": [-3, -3], "
                                      "\"high\": [3, 3]}}"
                                    : "{\"target\": [[1.5, 0.1], [0.2, 0.3]], \"num_solutions\": 2, "
                                      "\"max_steps\": 5, \"seed\": 2, \"method\": \"evolutionary\"}";
    case PROTO_OP_CALIBRATION:
        return k == ENG_KIND_FLOW
                   ? "{\"x\": [[0.1, 0.2], [0.5, -1], [1, 0]], \"num_samples\": 4, \"seed\": 1, "
                     "\"max_iter\": 30}"
                   : "{\"x\": [[0.1, 0.2, 0.3, 0.4], [0, 0.1, -0.2, 0.3], [0.2, 0, 0, 0.1]], "
                     "\"y\": [[1.5, 0], [0.5, 1], [1, 1]], \"num_samples\": 4, \"seed\": 1}";
    case PROTO_OP_MMD:
        return k == ENG_KIND_FLOW
                   ? "{\"reference\": [[0.1, 0.2], [0.5, -1], [1, 0]], \"num_samples\": 5, "
                     "\"seed\": 1, \"permutations\": 3}"
                   : "{\"y\": [1.5, 0], \"reference\": [[0.1, 0.2, 0.3, 0.4], [0, 0.1, -0.2, "
                     "0.3], [0.2, 0, 0, 0.1]], \"num_samples\": 5, \"seed\": 1, "
                     "\"permutations\": 3, \"estimator\": \"biased\"}";
    default:
        return NULL;
    }
}

const char *ob_v2_body(enum eng_kind k)
{
    return k == ENG_KIND_CINN
               ? "{\"id\": \"r1\", \"inputs\": [{\"name\": \"x\", \"shape\": [1, 4], \"datatype\": "
                 "\"FP32\", \"data\": [0.1, 0.2, 0.3, 0.4]}, {\"name\": \"y\", \"shape\": [1, 2], "
                 "\"datatype\": \"FP64\", \"data\": [[1.5, 0]]}], \"outputs\": [{\"name\": \"z\"}]}"
           : k == ENG_KIND_FLOW
               ? "{\"id\": \"r2\", \"inputs\": [], \"parameters\": {\"operation\": \"sample\", "
                 "\"num_samples\": 2, \"seed\": 3}}"
               : "{\"inputs\": [{\"name\": \"x\", \"shape\": [2, 4], \"datatype\": \"FP32\", "
                 "\"data\": [0.1, 0.2, 0.3, 0.4, 1, 2, 3, 4]}]}";
}
