/*
 * ctl_http.h — innctl's HTTP client: one request to the daemon over libcurl (http or
 * https, with an optional bearer token), with timeouts and retries of transient 429/503
 * answers that honour Retry-After (a 503 model_unavailable for a model that failed to
 * load is permanent: not retried).
 */
#ifndef INNSERVE_CTL_HTTP_H
#define INNSERVE_CTL_HTTP_H

#include <stddef.h>

#define CTL_HTTP_ERR_LEN 512

struct ctl_http_opts {
    const char *base_url; /* e.g. "http://127.0.0.1:8080" (no trailing slash needed) */
    double timeout_s;     /* whole request; <= 0: none */
    int retries;          /* how often a transient 429/503 is retried */
    double max_wait_s;    /* cap on one Retry-After wait */
    const char *token;    /* sent as "Authorization: Bearer <token>"; NULL: none */
    const char *cacert;   /* PEM file of the CA(s) that sign an https daemon's certificate;
                             NULL: the system's CA store */
};

struct ctl_http_resp {
    long status;          /* HTTP status; 0 when no answer came */
    char *body;           /* NUL-terminated; owned, free with ctl_http_resp_free */
    size_t len;
    char content_type[128];
};

enum ctl_http_rc {
    CTL_HTTP_OK = 0,      /* an HTTP answer arrived (any status) */
    CTL_HTTP_CONNECT,     /* no answer: connection refused, DNS, timeout, ... (err says) */
    CTL_HTTP_NOMEM
};

/* method "GET" or "POST"; path starts with '/'; body (JSON) may be NULL; accept may be
 * NULL for application/json.  On CTL_HTTP_OK *resp holds the answer (free it). */
enum ctl_http_rc ctl_http_request(const struct ctl_http_opts *o, const char *method,
                                  const char *path, const char *body, const char *accept,
                                  struct ctl_http_resp *resp, char err[CTL_HTTP_ERR_LEN]);
void ctl_http_resp_free(struct ctl_http_resp *r);

/* Percent-encode a path segment (model name) into out; returns out. */
char *ctl_http_escape(const char *s, char *out, size_t cap);

/* The bearer token in `path` (one line; trailing CR/LF stripped; visible ASCII, at most
 * 4096 bytes) as a malloc'd string; NULL with err naming the file. */
char *ctl_http_read_token(const char *path, char err[CTL_HTTP_ERR_LEN]);

void ctl_http_global_init(void);
void ctl_http_global_cleanup(void);

#endif
