/*
 * buf.h — a growing output buffer with a size cap, and the writers proto/ prints answers
 * with: raw bytes, strings, JSON-escaped strings, integers, and float32/float64 through
 * the round-trip printers of fmt.h.
 *
 * Errors are sticky: once an append would pass `max` (PROTO_BUF_OVER) or an allocation
 * fails (PROTO_BUF_NOMEM), later appends do nothing and proto_buf_failed() says so, so a
 * writer checks once at the end.  A buffer is used by one thread at a time.
 */
#ifndef INNSERVE_PROTO_BUF_H
#define INNSERVE_PROTO_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum proto_buf_state { PROTO_BUF_OK = 0, PROTO_BUF_OVER, PROTO_BUF_NOMEM };

struct proto_buf {
    char *p;         /* owned; NUL-terminated after proto_buf_take */
    size_t len, cap;
    size_t max;      /* 0: no cap */
    enum proto_buf_state state;
};

/* Empty buffer that refuses to grow past max bytes (0 = unbounded).  Allocates nothing. */
void proto_buf_init(struct proto_buf *b, size_t max);
/* Frees the storage (the struct itself is the caller's); safe on an initialized buffer. */
void proto_buf_free(struct proto_buf *b);
/* Makes room for `extra` more bytes; false (and the state set) when it cannot. */
bool proto_buf_reserve(struct proto_buf *b, size_t extra);
void proto_buf_put(struct proto_buf *b, const void *p, size_t n);
void proto_buf_puts(struct proto_buf *b, const char *s);
void proto_buf_putc(struct proto_buf *b, char c);
void proto_buf_printf(struct proto_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void proto_buf_i64(struct proto_buf *b, long long v);
void proto_buf_u64(struct proto_buf *b, unsigned long long v);
void proto_buf_f32(struct proto_buf *b, float v);
void proto_buf_f64(struct proto_buf *b, double v);
/* s as a JSON string literal with quotes: control characters escaped, valid UTF-8 copied,
 * every byte that is not part of a valid UTF-8 sequence replaced by U+FFFD, so the output
 * is valid JSON and UTF-8 whatever s holds (a client's path, a cut message). */
void proto_buf_json_str(struct proto_buf *b, const char *s);
/* Length (2..4) of the well-formed UTF-8 sequence (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF) starting at s[0] >= 0x80 within s[0..n), or 0 when
 * s[0] does not start one. */
size_t proto_utf8_seq(const unsigned char *s, size_t n);
/* Comma-separated float32 values "a,b,c" (no brackets). */
void proto_buf_f32_list(struct proto_buf *b, const float *v, size_t n);
/* Same for double values. */
void proto_buf_f64_list(struct proto_buf *b, const double *v, size_t n);
bool proto_buf_failed(const struct proto_buf *b);
/* Hands over the bytes (NUL-terminated; *len, if not NULL, gets the length without the
 * NUL): owned by caller, free with free().  The buffer is left empty.  Never NULL: an
 * empty or failed buffer yields "" (malloc'd) unless even that allocation fails. */
char *proto_buf_take(struct proto_buf *b, size_t *len);

#endif
