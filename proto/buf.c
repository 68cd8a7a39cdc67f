/*
 * buf.c — the capped growing buffer of buf.h and its typed writers.
 */
#include "buf.h"

#include <stdbool.h>
#include "fmt.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void proto_buf_init(struct proto_buf *b, size_t max)
{
    b->p = NULL;
    b->len = b->cap = 0;
    b->max = max;
    b->state = PROTO_BUF_OK;
}

void proto_buf_free(struct proto_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

bool proto_buf_reserve(struct proto_buf *b, size_t extra)
{
    if (b->state != PROTO_BUF_OK)
        return false;
    size_t need = b->len + extra + 1; /* room for a NUL */
    if (need < b->len || (b->max && b->len + extra > b->max)) {
        b->state = PROTO_BUF_OVER;
        return false;
    }
    if (need <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap = cap * 2 > cap ? cap * 2 : need;
    if (b->max && cap > b->max + 1)
        cap = need > b->max + 1 ? need : b->max + 1;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->state = PROTO_BUF_NOMEM;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

void proto_buf_put(struct proto_buf *b, const void *p, size_t n)
{
    if (!proto_buf_reserve(b, n))
        return;
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

void proto_buf_puts(struct proto_buf *b, const char *s)
{
    proto_buf_put(b, s, strlen(s));
}

void proto_buf_putc(struct proto_buf *b, char c)
{
    if (!proto_buf_reserve(b, 1))
        return;
    b->p[b->len++] = c;
}

void proto_buf_printf(struct proto_buf *b, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof small) {
        proto_buf_put(b, small, (size_t)n);
        return;
    }
    if (!proto_buf_reserve(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void proto_buf_u64(struct proto_buf *b, unsigned long long v)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[sizeof tmp - 1 - n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    proto_buf_put(b, tmp + sizeof tmp - n, (size_t)n);
}

void proto_buf_i64(struct proto_buf *b, long long v)
{
    if (v < 0) {
        proto_buf_putc(b, '-');
        proto_buf_u64(b, 0ull - (unsigned long long)v);
    } else {
        proto_buf_u64(b, (unsigned long long)v);
    }
}

void proto_buf_f32(struct proto_buf *b, float v)
{
    char t[PROTO_FMT_MAX];
    proto_buf_put(b, t, proto_fmt_f32(t, v));
}

void proto_buf_f64(struct proto_buf *b, double v)
{
    char t[PROTO_FMT_MAX];
    proto_buf_put(b, t, proto_fmt_f64(t, v));
}

/* Lists are printed in chunks straight into the buffer; near the cap, value by value so the
 * cap is exact. */
#define LIST_CHUNK 64

/* Element j of a float32 (f64 false) or float64 list, printed at p; returns its length. */
static size_t fmt_at(char *p, const void *v, size_t j, bool f64)
{
    return f64 ? proto_fmt_f64(p, ((const double *)v)[j])
               : proto_fmt_f32(p, ((const float *)v)[j]);
}

static void put_list(struct proto_buf *b, const void *v, size_t n, bool f64)
{
    for (size_t i = 0; i < n && b->state == PROTO_BUF_OK;) {
        size_t c = n - i < LIST_CHUNK ? n - i : LIST_CHUNK;
        size_t worst = c * (PROTO_FMT_MAX + 1);
        if (!b->max || b->len + worst <= b->max) {
            if (!proto_buf_reserve(b, worst))
                return;
            char *p = b->p + b->len;
            for (size_t j = i; j < i + c; j++) {
                if (j)
                    *p++ = ',';
                p += fmt_at(p, v, j, f64);
            }
            b->len = (size_t)(p - b->p);
        } else {
            for (size_t j = i; j < i + c; j++) {
                char t[PROTO_FMT_MAX + 1];
                size_t k = 0;
                if (j)
                    t[k++] = ',';
                k += fmt_at(t + k, v, j, f64);
                proto_buf_put(b, t, k);
            }
        }
        i += c;
    }
}

void proto_buf_f32_list(struct proto_buf *b, const float *v, size_t n)
{
    put_list(b, v, n, false);
}

void proto_buf_f64_list(struct proto_buf *b, const double *v, size_t n)
{
    put_list(b, v, n, true);
}

size_t proto_utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0; /* no overlong forms */
        else if (c == 0xED)
            hi = 0x9F; /* no UTF-16 surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F; /* nothing above U+10FFFF */
    } else
        return 0;
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    return len;
}

void proto_buf_json_str(struct proto_buf *b, const char *s)
{
    static const char HEX[] = "0123456789abcdef";
    proto_buf_putc(b, '"');
    const char *run = s;
    while (*s) {
        unsigned char c = (unsigned char)*s;
        if (c >= 0x80) {
            /* continuation bytes are never NUL, so this stops at the terminator */
            size_t k = 1;
            while (k < 4 && s[k] && ((unsigned char)s[k] & 0xC0) == 0x80)
                k++;
            size_t n = proto_utf8_seq((const unsigned char *)s, k);
            if (n) {
                s += n;
                continue;
            }
            proto_buf_put(b, run, (size_t)(s - run));
            proto_buf_puts(b, "\xEF\xBF\xBD"); /* U+FFFD */
            run = ++s;
            continue;
        }
        if (c >= 0x20 && c != '"' && c != '\\') {
            s++;
            continue;
        }
        proto_buf_put(b, run, (size_t)(s - run));
        run = ++s;
        char esc[7] = {'\\', 0};
        size_t n = 2;
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = HEX[c >> 4];
            esc[5] = HEX[c & 15];
            n = 6;
        }
        proto_buf_put(b, esc, n);
    }
    proto_buf_put(b, run, (size_t)(s - run));
    proto_buf_putc(b, '"');
}

bool proto_buf_failed(const struct proto_buf *b)
{
    return b->state != PROTO_BUF_OK;
}

char *proto_buf_take(struct proto_buf *b, size_t *len)
{
    char *p;
    if (b->state != PROTO_BUF_OK || !b->p) {
        free(b->p);
        p = malloc(1);
        if (p)
            p[0] = 0;
        if (len)
            *len = 0;
    } else {
        b->p[b->len] = 0; /* reserve always keeps one byte for it */
        p = b->p;
        if (len)
            *len = b->len;
    }
    b->p = NULL;
    b->len = b->cap = 0;
    return p;
}
