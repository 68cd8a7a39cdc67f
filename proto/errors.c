/*
 * errors.c — the one table of innserve error codes: HTTP status and machine string for
 * each proto_code, engine-status mapping, and the JSON error body.
 */
#include "errors.h"
#include "buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    int http;
    const char *str;
} TABLE[PROTO_CODE_COUNT] = {
    [PROTO_OK] = {200, "ok"},
    [PROTO_E_JSON] = {400, "invalid_json"},
    [PROTO_E_FIELD] = {400, "invalid_field"},
    [PROTO_E_MISSING] = {400, "missing_field"},
    [PROTO_E_UNKNOWN_FIELD] = {400, "unknown_field"},
    [PROTO_E_SHAPE] = {400, "bad_shape"},
    [PROTO_E_NONFINITE] = {400, "non_finite"},
    [PROTO_E_BAD_REQUEST] = {400, "bad_request"},
    [PROTO_E_UNAUTHORIZED] = {401, "unauthorized"},
    [PROTO_E_ROUTE] = {404, "not_found"},
    [PROTO_E_MODEL] = {404, "model_not_found"},
    [PROTO_E_METHOD] = {405, "method_not_allowed"},
    [PROTO_E_TIMEOUT] = {408, "request_timeout"},
    [PROTO_E_LENGTH] = {411, "length_required"},
    [PROTO_E_BODY_TOO_LARGE] = {413, "body_too_large"},
    [PROTO_E_TOO_LARGE] = {413, "too_large"},
    [PROTO_E_RESULT_TOO_LARGE] = {413, "result_too_large"},
    [PROTO_E_URI_TOO_LONG] = {414, "uri_too_long"},
    [PROTO_E_MEDIA] = {415, "unsupported_media_type"},
    [PROTO_E_HEADERS_TOO_LARGE] = {431, "headers_too_large"},
    [PROTO_E_UNSUPPORTED] = {422, "unsupported_operation"},
    [PROTO_E_NUMERIC] = {422, "numeric_error"},
    [PROTO_E_OVERLOADED] = {503, "overloaded"},
    [PROTO_E_DRAINING] = {503, "draining"},
    [PROTO_E_UNAVAILABLE] = {503, "model_unavailable"},
    [PROTO_E_NOMEM] = {503, "out_of_memory"},
    [PROTO_E_DEADLINE] = {504, "deadline_exceeded"},
    [PROTO_E_INTERNAL] = {500, "internal"},
    [PROTO_E_JOB_NOT_FOUND] = {404, "job_not_found"},
    [PROTO_E_JOB_NOT_DONE] = {409, "job_not_done"},
    [PROTO_E_JOB_CANCELLED] = {409, "job_cancelled"},
    [PROTO_E_TOO_MANY_JOBS] = {503, "too_many_jobs"},
    [PROTO_E_REJECTION] = {422, "rejection_limit"},
};

int proto_code_http(enum proto_code c)
{
    return (unsigned)c < PROTO_CODE_COUNT ? TABLE[c].http : 500;
}

const char *proto_code_str(enum proto_code c)
{
    return (unsigned)c < PROTO_CODE_COUNT ? TABLE[c].str : "internal";
}

enum proto_code proto_errorf(struct proto_error *e, enum proto_code c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    e->code = c;
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return c;
}

enum proto_code proto_error_from_eng(struct proto_error *e, enum eng_status st,
                                     const char *eng_msg)
{
    enum proto_code c;
    switch (st) {
    case ENG_OK: c = PROTO_OK; break;
    case ENG_ERR_SHAPE: c = PROTO_E_SHAPE; break;
    case ENG_ERR_NONFINITE: c = PROTO_E_NONFINITE; break;
    case ENG_ERR_ARG: c = PROTO_E_FIELD; break;
    case ENG_ERR_UNSUPPORTED: c = PROTO_E_UNSUPPORTED; break;
    case ENG_ERR_NUMERIC: c = PROTO_E_NUMERIC; break;
    case ENG_ERR_NOMEM: c = PROTO_E_NOMEM; break;
    case ENG_ERR_CANCELLED: c = PROTO_E_DEADLINE; break;
    default: c = PROTO_E_INTERNAL; break;
    }
    const char *m = eng_msg && eng_msg[0] ? eng_msg : eng_status_str(st);
    return proto_errorf(e, c, "%s", m);
}

char *proto_error_json(const struct proto_error *e, size_t *len)
{
    struct proto_buf b;
    proto_buf_init(&b, 0);
    proto_buf_puts(&b, "{\"error\":");
    proto_buf_json_str(&b, e->msg);
    proto_buf_puts(&b, ",\"code\":\"");
    proto_buf_puts(&b, proto_code_str(e->code));
    proto_buf_puts(&b, "\"}\n");
    if (proto_buf_failed(&b)) {
        proto_buf_free(&b);
        return NULL;
    }
    return proto_buf_take(&b, len);
}
