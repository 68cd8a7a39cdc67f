/*
 * server.h — the daemon's shared state (struct srv_ctx, one per process, owned by
 * main.c) and the response value every handler produces.  Modules receive a pointer to
 * the context; nothing in server/ keeps its own copy of these.
 */
#ifndef INNSERVE_SERVER_SERVER_H
#define INNSERVE_SERVER_SERVER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "../proto/errors.h"
#include "../proto/limits.h"
#include "auth.h"
#include "config.h"
#include "metrics.h"
#include "pool.h"
#include "repo.h"

struct srv_jobs;

struct srv_ctx {
    const struct srv_config *cfg;
    struct proto_limits lim;
    struct srv_repo *repo;
    struct srv_pool *pool;
    struct srv_metrics *metrics;
    struct srv_auth *auth;    /* NULL: no --auth-token-file */
    struct srv_jobs *jobs;    /* the job table (jobs.h) */
    atomic_bool draining;     /* SIGTERM seen: readyz 503, new work 503 */
    atomic_int calls_active;  /* requests holding a job, until their response completes */
};

/* An HTTP answer before it is handed to libmicrohttpd. */
struct srv_response {
    int status;
    char *body;            /* owned (malloc) */
    size_t len;
    const char *ctype;     /* static string */
    int retry_after;       /* > 0: Retry-After header */
    char allow[32];        /* 405: Allow header */
    const char *www_authenticate; /* 401: WWW-Authenticate header (static string) */
    const char *code;      /* error code for the access log, or NULL */
    /* model identity for formats without a JSON envelope (X-Model-* headers) */
    char model[130], version[40], sha256[65];
    char seed[24];         /* X-Seed, "" if none */
    long unconverged;      /* X-Solver-Unconverged when >= 0 */
    bool close;            /* Connection: close (the request's framing cannot be trusted) */
    char location[64];     /* Location header (a job's URL), "" if none */
    bool pref_applied;     /* Preference-Applied: respond-async */
};

void srv_response_init(struct srv_response *r);
void srv_response_free(struct srv_response *r);
/* r becomes the JSON error for e (status from proto_code_http).  Retry-After for 503. */
void srv_response_error(struct srv_response *r, const struct srv_ctx *ctx,
                        const struct proto_error *e);
/* r takes the buffer's bytes as its body (200 unless status given). */
void srv_response_take(struct srv_response *r, int status, const char *ctype,
                       struct proto_buf *b);

#endif
