/*
 * opbodies.h — request bodies per operation and model kind for the allocation-failure
 * tests (opbodies.c).  Static strings.
 */
#ifndef INNSERVE_TESTS_OPBODIES_H
#define INNSERVE_TESTS_OPBODIES_H
#include "../../engine/engine.h"
#include "../../proto/request.h"

/* A v1 body of operation op for a model of kind k of models/ (cinn x 4 y 2; inn x 4 ->
 * z 2 with y 2; mlp x 4 -> y 2; flow x 2 with a numeric inverse); NULL for other ops. */
const char *ob_v1_body(enum eng_kind k, enum proto_op op);
/* A V2 infer body for kind k. */
const char *ob_v2_body(enum eng_kind k);
#endif
