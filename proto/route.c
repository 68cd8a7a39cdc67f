/*
 * route.c — the route table and its matcher (route.h).
 */
#include "route.h"

#include <stdio.h>
#include <string.h>

/* Routes that run no model operation, and V2 infer, whose body names its operation. */
#define NO_OP PROTO_OP_COUNT

static const struct proto_route ROUTES[PROTO_R_COUNT] = {
    {PROTO_R_HEALTHZ, "/healthz", PROTO_M_GET, "healthz", NO_OP},
    {PROTO_R_READYZ, "/readyz", PROTO_M_GET, "readyz", NO_OP},
    {PROTO_R_METRICS, "/metrics", PROTO_M_GET, "metrics", NO_OP},
    {PROTO_R_MODELS, "/v1/models", PROTO_M_GET, "models", NO_OP},
    {PROTO_R_MODEL, "/v1/models/{m}", PROTO_M_GET, "metadata", NO_OP},
    {PROTO_R_FORWARD, "/v1/models/{m}/forward", PROTO_M_POST, "forward", PROTO_OP_FORWARD},
    {PROTO_R_INVERSE, "/v1/models/{m}/inverse", PROTO_M_POST, "inverse", PROTO_OP_INVERSE},
    {PROTO_R_SAMPLE, "/v1/models/{m}/sample", PROTO_M_POST, "sample", PROTO_OP_SAMPLE},
    {PROTO_R_LOG_PROB, "/v1/models/{m}/log_prob", PROTO_M_POST, "log_prob", PROTO_OP_LOG_PROB},
    {PROTO_R_PREIMAGE, "/v1/models/{m}/preimage", PROTO_M_POST, "preimage", PROTO_OP_PREIMAGE},
    {PROTO_R_CALIBRATION, "/v1/models/{m}/calibration", PROTO_M_POST, "calibration",
     PROTO_OP_CALIBRATION},
    {PROTO_R_MMD, "/v1/models/{m}/mmd", PROTO_M_POST, "mmd", PROTO_OP_MMD},
    {PROTO_R_CERTIFICATE, "/v1/models/{m}/certificate", PROTO_M_GET, "certificate", NO_OP},
    {PROTO_R_V2_SERVER, "/v2", PROTO_M_GET, "v2_server", NO_OP},
    {PROTO_R_V2_LIVE, "/v2/health/live", PROTO_M_GET, "v2_live", NO_OP},
    {PROTO_R_V2_READY, "/v2/health/ready", PROTO_M_GET, "v2_ready", NO_OP},
    {PROTO_R_V2_MODEL, "/v2/models/{m}", PROTO_M_GET, "v2_metadata", NO_OP},
    {PROTO_R_V2_MODEL_READY, "/v2/models/{m}/ready", PROTO_M_GET, "v2_model_ready", NO_OP},
    {PROTO_R_V2_INFER, "/v2/models/{m}/infer", PROTO_M_POST, "v2_infer", NO_OP},
    {PROTO_R_V2_VMODEL, "/v2/models/{m}/versions/{v}", PROTO_M_GET, "v2_metadata", NO_OP},
    {PROTO_R_V2_VMODEL_READY, "/v2/models/{m}/versions/{v}/ready", PROTO_M_GET,
     "v2_model_ready", NO_OP},
    {PROTO_R_V2_VINFER, "/v2/models/{m}/versions/{v}/infer", PROTO_M_POST, "v2_infer", NO_OP},
    {PROTO_R_JOBS, "/v1/jobs", PROTO_M_GET, "jobs", NO_OP},
    {PROTO_R_JOB, "/v1/jobs/{j}", PROTO_M_GET | PROTO_M_DELETE, "job", NO_OP},
    {PROTO_R_JOB_RESULT, "/v1/jobs/{j}/result", PROTO_M_GET, "job_result", NO_OP},
    /* the web page (server/ui.h) */
    {PROTO_R_UI_PAGE, "/", PROTO_M_GET, "ui", NO_OP},
    {PROTO_R_UI_JS, "/ui/app.js", PROTO_M_GET, "ui", NO_OP},
    {PROTO_R_UI_CSS, "/ui/style.css", PROTO_M_GET, "ui", NO_OP},
};

const struct proto_route *proto_routes(size_t *n)
{
    *n = PROTO_R_COUNT;
    return ROUTES;
}

/* Matches pattern against path; placeholders captured into m.  Returns 1 on a match. */
static int match_one(const char *pat, const char *path, struct proto_match *m)
{
    char model[PROTO_NAME_MAX + 1] = "", version[PROTO_NAME_MAX + 1] = "",
         job[PROTO_NAME_MAX + 1] = "";
    while (*pat && *path) {
        if (*pat == '{') {
            const char *pe = strchr(pat, '}');
            const char *se = strchr(path, '/');
            size_t n = se ? (size_t)(se - path) : strlen(path);
            if (n == 0 || n > PROTO_NAME_MAX)
                return 0;
            char *dst = pat[1] == 'm' ? model : pat[1] == 'j' ? job : version;
            memcpy(dst, path, n);
            dst[n] = 0;
            pat = pe + 1;
            path += n;
            continue;
        }
        if (*pat != *path)
            return 0;
        pat++;
        path++;
    }
    if (*pat || *path)
        return 0;
    memcpy(m->model, model, sizeof model);
    memcpy(m->version, version, sizeof version);
    memcpy(m->job, job, sizeof job);
    return 1;
}

enum proto_code proto_route_match(const char *method, const char *path, struct proto_match *m,
                                  struct proto_error *e)
{
    memset(m, 0, sizeof *m);
    unsigned want = 0;
    if (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0)
        want = PROTO_M_GET;
    else if (strcmp(method, "POST") == 0)
        want = PROTO_M_POST;
    else if (strcmp(method, "DELETE") == 0)
        want = PROTO_M_DELETE;
    for (size_t i = 0; i < PROTO_R_COUNT; i++) {
        if (!match_one(ROUTES[i].pattern, path, m))
            continue;
        m->route = &ROUTES[i];
        if (ROUTES[i].methods & want)
            return PROTO_OK;
        unsigned ms = ROUTES[i].methods;
        snprintf(m->allow, sizeof m->allow, "%s%s%s%s",
                 ms & PROTO_M_GET ? "GET, HEAD" : "",
                 ms & PROTO_M_POST ? (ms & PROTO_M_GET ? ", POST" : "POST") : "",
                 ms & PROTO_M_DELETE && ms != PROTO_M_DELETE ? ", " : "",
                 ms & PROTO_M_DELETE ? "DELETE" : "");
        return proto_errorf(e, PROTO_E_METHOD, "method %.16s is not allowed on %.200s (allowed: "
                            "%s)", method, path, m->allow);
    }
    return proto_errorf(e, PROTO_E_ROUTE, "no such endpoint: %.16s %.200s", method, path);
}
