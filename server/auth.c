/*
 * auth.c — bearer-token authentication (auth.h): reading the token file, the constant-time
 * check of an Authorization header, reload on SIGHUP.
 */
#include "auth.h"
#include "log.h"
#include "../engine/sha256.h"
#include "../proto/limits.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

struct srv_auth {
    char *file;
    pthread_rwlock_t lock;
    char digest[65];    /* SHA-256 of the token in force, hex */
};

/* Reads the token of `file` and stores its digest in out.  False with err naming the file. */
static bool read_token(const char *file, char out[65], char *err, size_t cap)
{
    int fd = open(file, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        snprintf(err, cap, "--auth-token-file %s: cannot open: %s", file, strerror(errno));
        return false;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        snprintf(err, cap, "--auth-token-file %s: not a regular file", file);
        return false;
    }
    char buf[PROTO_AUTH_TOKEN_MAX_BYTES + 3]; /* the token, CR LF, one byte too many */
    size_t n = 0;
    for (;;) {
        ssize_t k = read(fd, buf + n, sizeof buf - n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            int e = errno;
            close(fd);
            snprintf(err, cap, "--auth-token-file %s: cannot read: %s", file, strerror(e));
            return false;
        }
        if (k == 0 || (n += (size_t)k) == sizeof buf)
            break;
    }
    close(fd);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    bool ok = false;
    if (n == 0) {
        snprintf(err, cap, "--auth-token-file %s: the file is empty; it must hold the token "
                 "on one line", file);
    } else if (n > PROTO_AUTH_TOKEN_MAX_BYTES) {
        snprintf(err, cap, "--auth-token-file %s: the token is longer than %d bytes", file,
                 PROTO_AUTH_TOKEN_MAX_BYTES);
    } else {
        size_t bad = n;
        for (size_t i = 0; i < n && bad == n; i++)
            if ((unsigned char)buf[i] < 0x21 || (unsigned char)buf[i] > 0x7e)
                bad = i;
        if (bad < n)
            snprintf(err, cap, "--auth-token-file %s: byte %zu of the token is a space, a "
                     "control character or not ASCII (a token is one line of visible ASCII "
                     "characters)", file, bad + 1);
        else
            ok = true;
    }
    if (ok) {
        sha256_hex((const uint8_t *)buf, n, out);
        if (st.st_mode & S_IROTH)
            srv_logf(SRV_LOG_WARN, "auth_token_file_readable", "%s is readable by every user "
                     "of this machine; make it readable only by innserve (chmod 600)", file);
    }
    explicit_bzero(buf, sizeof buf);
    return ok;
}

struct srv_auth *srv_auth_new(const char *token_file, char *err, size_t cap)
{
    char digest[65];
    if (!read_token(token_file, digest, err, cap))
        return NULL;
    struct srv_auth *a = calloc(1, sizeof *a);
    if (!a || !(a->file = strdup(token_file))) {
        free(a);
        snprintf(err, cap, "out of memory");
        return NULL;
    }
    pthread_rwlock_init(&a->lock, NULL);
    memcpy(a->digest, digest, sizeof digest);
    return a;
}

void srv_auth_free(struct srv_auth *a)
{
    if (!a)
        return;
    pthread_rwlock_destroy(&a->lock);
    free(a->file);
    free(a);
}

bool srv_auth_reload(struct srv_auth *a, char *err, size_t cap)
{
    char digest[65];
    if (!read_token(a->file, digest, err, cap))
        return false;
    pthread_rwlock_wrlock(&a->lock);
    memcpy(a->digest, digest, sizeof digest);
    pthread_rwlock_unlock(&a->lock);
    return true;
}

enum srv_auth_result srv_auth_check(struct srv_auth *a, const char *h)
{
    if (!h)
        return SRV_AUTH_MISSING;
    while (*h == ' ' || *h == '\t')
        h++;
    if (strncasecmp(h, "Bearer", 6) != 0 || (h[6] != ' ' && h[6] != '\t'))
        return SRV_AUTH_INVALID;
    h += 6;
    while (*h == ' ' || *h == '\t')
        h++;
    size_t n = strlen(h);
    while (n && (h[n - 1] == ' ' || h[n - 1] == '\t'))
        n--;
    if (n == 0 || n > PROTO_AUTH_TOKEN_MAX_BYTES)
        return SRV_AUTH_INVALID;
    char given[65];
    sha256_hex((const uint8_t *)h, n, given);
    pthread_rwlock_rdlock(&a->lock);
    volatile unsigned char diff = 0;
    for (int i = 0; i < 64; i++)
        diff |= (unsigned char)(given[i] ^ a->digest[i]);
    pthread_rwlock_unlock(&a->lock);
    return diff == 0 ? SRV_AUTH_OK : SRV_AUTH_INVALID;
}
