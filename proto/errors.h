/*
 * errors.h — innserve's error vocabulary on the wire: one enum of machine codes, one table
 * mapping each to its HTTP status and "code" string, and the error value every proto/
 * parser fills in (a code plus one message that names the field at fault).
 *
 * The body of every error answer is {"error": "<message>", "code": "<code string>"}
 * (proto_error_json).  Engine statuses map through proto_error_from_eng.  This is the only
 * table of HTTP statuses in the project; server/ looks them up here.
 */
#ifndef INNSERVE_PROTO_ERRORS_H
#define INNSERVE_PROTO_ERRORS_H

#include <stdarg.h>
#include "../engine/engine.h"

#define PROTO_ERR_LEN 512

enum proto_code {
    PROTO_OK = 0,
    PROTO_E_JSON,           /* 400 invalid_json: body is not JSON, or too deeply nested */
    PROTO_E_FIELD,          /* 400 invalid_field: a field has the wrong type or range */
    PROTO_E_MISSING,        /* 400 missing_field: a required field is absent */
    PROTO_E_UNKNOWN_FIELD,  /* 400 unknown_field: a field this endpoint does not take */
    PROTO_E_SHAPE,          /* 400 bad_shape: ragged rows, wrong widths, row counts */
    PROTO_E_NONFINITE,      /* 400 non_finite: NaN / Inf / out of float32 range */
    PROTO_E_BAD_REQUEST,    /* 400 bad_request: the HTTP message itself is malformed or
                               ambiguous (framing headers, header names, NUL in the path) */
    PROTO_E_UNAUTHORIZED,   /* 401 unauthorized: no or a wrong bearer token (WWW-Authenticate) */
    PROTO_E_ROUTE,          /* 404 not_found: no such path */
    PROTO_E_MODEL,          /* 404 model_not_found: no such model (or version) */
    PROTO_E_METHOD,         /* 405 method_not_allowed (the answer carries Allow) */
    PROTO_E_TIMEOUT,        /* 408 request_timeout: headers or body not received in time */
    PROTO_E_LENGTH,         /* 411 length_required */
    PROTO_E_BODY_TOO_LARGE, /* 413 body_too_large: request body over --max-body */
    PROTO_E_TOO_LARGE,      /* 413 too_large: a request limit (samples, elements, rows) */
    PROTO_E_RESULT_TOO_LARGE, /* 413 result_too_large: answer over --max-response */
    PROTO_E_URI_TOO_LONG,   /* 414 uri_too_long: request target over PROTO_MAX_URI_BYTES */
    PROTO_E_MEDIA,          /* 415 unsupported_media_type */
    PROTO_E_HEADERS_TOO_LARGE, /* 431 headers_too_large: over PROTO_MAX_HEADER_BYTES */
    PROTO_E_UNSUPPORTED,    /* 422 unsupported_operation: not defined for this model kind */
    PROTO_E_NUMERIC,        /* 422 numeric_error: the model cannot map this input */
    PROTO_E_OVERLOADED,     /* 503 overloaded: the work queue is full (Retry-After) */
    PROTO_E_DRAINING,       /* 503 draining: shutting down (Retry-After) */
    PROTO_E_UNAVAILABLE,    /* 503 model_unavailable: the model failed to load */
    PROTO_E_NOMEM,          /* 503 out_of_memory */
    PROTO_E_DEADLINE,       /* 504 deadline_exceeded */
    PROTO_E_INTERNAL,       /* 500 internal */
    PROTO_E_JOB_NOT_FOUND,  /* 404 job_not_found: no such job (unknown, expired or removed) */
    PROTO_E_JOB_NOT_DONE,   /* 409 job_not_done: the job's result is not there yet */
    PROTO_E_JOB_CANCELLED,  /* 409 job_cancelled: the job was cancelled; it has no result */
    PROTO_E_TOO_MANY_JOBS,  /* 503 too_many_jobs: --max-jobs or --max-job-bytes reached
                               (Retry-After) */
    PROTO_E_REJECTION,      /* 422 rejection_limit: too few candidates fell inside the
                               model's prior box before the draw limit */
    PROTO_CODE_COUNT
};

/* An error: code plus one message naming the field.  A value; PROTO_OK means none. */
struct proto_error {
    enum proto_code code;
    char msg[PROTO_ERR_LEN];
};

/* HTTP status of a code (200 for PROTO_OK). */
int proto_code_http(enum proto_code c);
/* Machine string ("invalid_json", ...); "ok" for PROTO_OK.  Static, never NULL. */
const char *proto_code_str(enum proto_code c);
/* Sets e->code and formats e->msg; returns c (so parsers can `return proto_errorf(...)`). */
enum proto_code proto_errorf(struct proto_error *e, enum proto_code c, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Maps an engine status and its message: SHAPE/NONFINITE/ARG -> 400, UNSUPPORTED and
 * NUMERIC -> 422, NOMEM -> 503, anything else -> 500. */
enum proto_code proto_error_from_eng(struct proto_error *e, enum eng_status st,
                                     const char *eng_msg);
/* {"error": msg, "code": str} as a NUL-terminated malloc'd string (owned by caller: free);
 * NULL only when out of memory. *len receives its length (may be NULL). */
char *proto_error_json(const struct proto_error *e, size_t *len);

#endif
