/*
 * response.c — struct srv_response helpers (server.h): error bodies with their status
 * and Retry-After, and taking a proto_buf as the body.
 */
#include "server.h"

#include <stdlib.h>
#include <string.h>

void srv_response_init(struct srv_response *r)
{
    memset(r, 0, sizeof *r);
    r->unconverged = -1;
}

void srv_response_free(struct srv_response *r)
{
    free(r->body);
    r->body = NULL;
    r->len = 0;
}

void srv_response_error(struct srv_response *r, const struct srv_ctx *ctx,
                        const struct proto_error *e)
{
    free(r->body);
    r->status = proto_code_http(e->code);
    r->body = proto_error_json(e, &r->len);
    if (!r->body)
        r->len = 0;
    r->ctype = "application/json";
    r->code = proto_code_str(e->code);
    if (r->status == 503 || r->status == 429)
        r->retry_after = ctx && ctx->cfg ? (ctx->cfg->retry_after_s > 0
                                                ? ctx->cfg->retry_after_s : 1) : 1;
}

void srv_response_take(struct srv_response *r, int status, const char *ctype,
                       struct proto_buf *b)
{
    free(r->body);
    r->body = proto_buf_take(b, &r->len);
    r->status = status;
    r->ctype = ctype;
    r->code = NULL;
}
