/*
 * auth.h — optional bearer-token authentication (--auth-token-file, --auth-probes).
 *
 * The token is read from a file (one line; trailing CR/LF stripped; 1 to
 * PROTO_AUTH_TOKEN_MAX_BYTES visible ASCII characters, no spaces) and kept only as its
 * SHA-256 digest.  A request is let in when its `Authorization: Bearer <token>` hashes to
 * the same digest; the digests are compared in constant time, so neither the token's
 * bytes nor its length show in the answer's timing.  SIGHUP re-reads the file
 * (srv_auth_reload); a file that has become unreadable or invalid keeps the old token.
 *
 * Which routes need the token is the caller's policy (server/http.c): every route, except
 * the health probes while --auth-probes is open.
 */
#ifndef INNSERVE_SERVER_AUTH_H
#define INNSERVE_SERVER_AUTH_H

#include <stdbool.h>
#include <stddef.h>

struct srv_auth;

enum srv_auth_result {
    SRV_AUTH_OK,       /* the right token */
    SRV_AUTH_MISSING,  /* no Authorization header */
    SRV_AUTH_INVALID,  /* another scheme, a malformed header or the wrong token */
};

/* Reads token_file (copied).  NULL with a message naming the file in err when it cannot be
 * read or holds no valid token, or when out of memory.  Logs a warning when the file is
 * readable by every user.  Owned by the caller: srv_auth_free. */
struct srv_auth *srv_auth_new(const char *token_file, char *err, size_t cap);
void srv_auth_free(struct srv_auth *a);

/* Re-reads the token file.  On failure returns false with err set and keeps the token in
 * force.  Safe while other threads call srv_auth_check. */
bool srv_auth_reload(struct srv_auth *a, char *err, size_t cap);

/* Checks an Authorization header value (NULL when absent).  Thread safe. */
enum srv_auth_result srv_auth_check(struct srv_auth *a, const char *authorization);

#endif
