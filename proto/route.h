/*
 * route.h — the route table of the HTTP API: every path the daemon serves, with its
 * methods, the operation label used in logs and metrics, and the model operation it runs.
 * server/http.c dispatches on it; tests compare it with proto/openapi.yaml so the two
 * cannot drift apart.
 *
 * Patterns are literal segments and `{m}` (model name) / `{v}` (version) / `{j}` (job id)
 * placeholders, each matching one non-empty path segment.  HEAD is accepted wherever GET is.
 */
#ifndef INNSERVE_PROTO_ROUTE_H
#define INNSERVE_PROTO_ROUTE_H

#include <stddef.h>
#include "errors.h"
#include "request.h"

enum proto_route_id {
    PROTO_R_HEALTHZ = 0,
    PROTO_R_READYZ,
    PROTO_R_METRICS,
    PROTO_R_MODELS,
    PROTO_R_MODEL,
    PROTO_R_FORWARD,
    PROTO_R_INVERSE,
    PROTO_R_SAMPLE,
    PROTO_R_LOG_PROB,
    PROTO_R_PREIMAGE,
    PROTO_R_CALIBRATION,
    PROTO_R_MMD,
    PROTO_R_CERTIFICATE,
    PROTO_R_V2_SERVER,
    PROTO_R_V2_LIVE,
    PROTO_R_V2_READY,
    PROTO_R_V2_MODEL,
    PROTO_R_V2_MODEL_READY,
    PROTO_R_V2_INFER,
    PROTO_R_V2_VMODEL,
    PROTO_R_V2_VMODEL_READY,
    PROTO_R_V2_VINFER,
    PROTO_R_JOBS,
    PROTO_R_JOB,
    PROTO_R_JOB_RESULT,
    PROTO_R_UI_PAGE,
    PROTO_R_UI_JS,
    PROTO_R_UI_CSS,
    PROTO_R_COUNT
};

#define PROTO_M_GET  1u
#define PROTO_M_POST 2u
#define PROTO_M_DELETE 4u

struct proto_route {
    enum proto_route_id id;
    const char *pattern;   /* "/v1/models/{m}/forward" */
    unsigned methods;      /* PROTO_M_* */
    const char *operation; /* label: "forward", "healthz", "v2_infer", ... */
    enum proto_op op;      /* the model operation the route runs; PROTO_OP_COUNT for none
                              and for V2 infer (its body says which) */
};

/* The table; *n gets its length.  Static. */
const struct proto_route *proto_routes(size_t *n);

#define PROTO_NAME_MAX 128

struct proto_match {
    const struct proto_route *route;
    char model[PROTO_NAME_MAX + 1];   /* {m}, "" if none */
    char version[PROTO_NAME_MAX + 1]; /* {v}, "" if none */
    char job[PROTO_NAME_MAX + 1];     /* {j}, "" if none */
    char allow[32];                   /* for 405: "POST" / "GET, HEAD" / "GET, HEAD, DELETE" */
};

/* Matches method + path (no query string).  PROTO_OK with m filled; PROTO_E_ROUTE (404)
 * when no pattern matches; PROTO_E_METHOD (405) when the path exists for other methods
 * (m->allow then holds the Allow header value, m->route the route). */
enum proto_code proto_route_match(const char *method, const char *path, struct proto_match *m,
                                  struct proto_error *e);

#endif
