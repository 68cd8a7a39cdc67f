/*
 * http.h — the HTTP front end on libmicrohttpd: binds, accepts, routes (proto/route.h),
 * reads bodies under --max-body, answers the operational endpoints inline and hands model
 * operations to the worker pool as calls (call.h), suspending the connection until the
 * call completes.  One JSON access-log line and one metrics update per request.
 *
 * Threading: MHD_USE_EPOLL_INTERNAL_THREAD with a pool of --http-threads epoll threads and
 * MHD_ALLOW_SUSPEND_RESUME.  No MHD thread ever blocks on compute: a request with a job is
 * suspended (MHD_suspend_connection) and resumed by the worker that finishes it or by the
 * pool's deadline monitor (504).  Responses are queued only on the final access-handler
 * call of a request (keep-alive stays intact), except a 413 for a declared Content-Length
 * over the limit sent with `Expect: 100-continue` (the body is then never sent).
 */
#ifndef INNSERVE_SERVER_HTTP_H
#define INNSERVE_SERVER_HTTP_H

#include "server.h"

struct srv_http;

/* Binds host:port and starts serving.  NULL with a message in err on failure. */
struct srv_http *srv_http_start(struct srv_ctx *ctx, char *err, size_t cap);
/* The bound port (useful with --port 0). */
int srv_http_port(const struct srv_http *h);
/* Stops accepting and closes every connection; no call may be suspended. */
void srv_http_stop(struct srv_http *h);

#endif
