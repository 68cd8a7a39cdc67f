/*
 * json_syntax.c — the non-allocating JSON syntax check of json_syntax.h: an explicit
 * stack of container kinds (no recursion), one pass.
 */
#include "json_syntax.h"

#include <stdint.h>
#include <string.h>

#define JSYN_MAX_DEPTH 1000

struct cur {
    const unsigned char *s;
    size_t len, i;
};

static void ws(struct cur *c)
{
    while (c->i < c->len && c->s[c->i] <= 0x20)
        c->i++;
}

static int hex4(struct cur *c, unsigned *out)
{
    if (c->len - c->i < 4)
        return 0;
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        unsigned char h = c->s[c->i + (size_t)k];
        v <<= 4;
        if (h >= '0' && h <= '9')
            v |= (unsigned)(h - '0');
        else if (h >= 'a' && h <= 'f')
            v |= (unsigned)(h - 'a' + 10);
        else if (h >= 'A' && h <= 'F')
            v |= (unsigned)(h - 'A' + 10);
        else
            return 0;
    }
    c->i += 4;
    *out = v;
    return 1;
}

/* At the opening quote. */
static int string(struct cur *c)
{
    c->i++;
    while (c->i < c->len) {
        unsigned char ch = c->s[c->i++];
        if (ch == '"')
            return 1;
        if (ch != '\\')
            continue;
        if (c->i >= c->len)
            return 0;
        ch = c->s[c->i++];
        if (strchr("\"\\/bfnrt", ch) && ch)
            continue;
        if (ch != 'u')
            return 0;
        unsigned u;
        if (!hex4(c, &u))
            return 0;
        if (u >= 0xDC00 && u <= 0xDFFF)
            return 0; /* a lone low surrogate */
        if (u >= 0xD800 && u <= 0xDBFF) {
            unsigned lo;
            if (c->len - c->i < 2 || c->s[c->i] != '\\' || c->s[c->i + 1] != 'u')
                return 0;
            c->i += 2;
            if (!hex4(c, &lo) || lo < 0xDC00 || lo > 0xDFFF)
                return 0;
        }
    }
    return 0;
}

static int digits(struct cur *c)
{
    size_t at = c->i;
    while (c->i < c->len && c->s[c->i] >= '0' && c->s[c->i] <= '9')
        c->i++;
    return c->i > at;
}

static int number(struct cur *c)
{
    size_t start = c->i;
    if (c->s[c->i] == '-')
        c->i++;
    if (c->i < c->len && c->s[c->i] == '0')
        c->i++;
    else if (!digits(c))
        return 0;
    if (c->i < c->len && c->s[c->i] == '.') {
        c->i++;
        if (!digits(c))
            return 0;
    }
    if (c->i < c->len && (c->s[c->i] == 'e' || c->s[c->i] == 'E')) {
        c->i++;
        if (c->i < c->len && (c->s[c->i] == '+' || c->s[c->i] == '-'))
            c->i++;
        if (!digits(c))
            return 0;
    }
    /* cJSON reads a number with strtod over the characters [0-9+-.eE]: one that goes on
     * with more of them ("0.5.1", "1e5e") is read differently; refuse it here */
    if (c->i < c->len && strchr("0123456789+-.eE", c->s[c->i]) && c->s[c->i])
        return 0;
    /* cJSON 1.7 reads at most 63 characters of a number */
    return c->i - start <= 63;
}

static int literal(struct cur *c, const char *w)
{
    size_t n = strlen(w);
    if (c->len - c->i < n || memcmp(c->s + c->i, w, n) != 0)
        return 0;
    c->i += n;
    return 1;
}

/* An object member's key and its colon ("key" ws ':'), at c->i; 1 when they are there. */
static int member_key(struct cur *c)
{
    if (c->i >= c->len || c->s[c->i] != '"' || !string(c))
        return 0;
    ws(c);
    if (c->i >= c->len || c->s[c->i] != ':')
        return 0;
    c->i++;
    return 1;
}

bool jsyn_valid(const char *s, size_t len, int max_depth, size_t *end)
{
    if (max_depth > JSYN_MAX_DEPTH || max_depth < 0)
        max_depth = JSYN_MAX_DEPTH;
    /* stack[d]: 1 = in an object, 0 = in an array */
    unsigned char stack[JSYN_MAX_DEPTH + 1];
    int d = 0;
    struct cur c = {(const unsigned char *)s, len, 0};
    for (;;) {
        /* a value */
        ws(&c);
        if (c.i >= c.len)
            return false;
        unsigned char ch = c.s[c.i];
        if (ch == '{' || ch == '[') {
            if (d >= max_depth)
                return false;
            stack[d++] = ch == '{';
            c.i++;
            ws(&c);
            if (c.i < c.len && c.s[c.i] == (ch == '{' ? '}' : ']')) {
                c.i++;
                d--;
                goto after_value;
            }
            if (ch == '{') {
                if (!member_key(&c))
                    return false;
            }
            continue;
        }
        if (ch == '"') {
            if (!string(&c))
                return false;
        } else if (ch == '-' || (ch >= '0' && ch <= '9')) {
            if (!number(&c))
                return false;
        } else if (!literal(&c, "null") && !literal(&c, "true") && !literal(&c, "false")) {
            return false;
        }
    after_value:
        for (;;) {
            if (d == 0) {
                if (end)
                    *end = c.i;
                return true;
            }
            ws(&c);
            if (c.i >= c.len)
                return false;
            ch = c.s[c.i++];
            if (ch == ',') {
                if (stack[d - 1]) {
                    ws(&c);
                    if (!member_key(&c))
                        return false;
                }
                break; /* the next value */
            }
            if (ch != (stack[d - 1] ? '}' : ']'))
                return false;
            d--;
        }
    }
}
