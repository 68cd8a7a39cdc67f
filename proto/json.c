/*
 * json.c — depth-limited parsing and typed field readers for request bodies (json.h).
 */
#include "json.h"
#include "buf.h"
#include "../engine/json_syntax.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Largest double that rounds to a finite float32: FLT_MAX + half an ulp (exclusive). */
#define F32_OVERFLOW 0x1.ffffffp127

/* One pass outside strings: the nesting depth (stops early past max_depth, *where = its
 * byte) and an upper bound on the JSON values the parser would allocate (every '[', '{',
 * ',' and ':' starts at most one more value).  The parser costs ~64 bytes per value, so
 * counting before parsing bounds a request's memory by PROTO_JSON_VALUES_PER_ELEMENT x
 * --max-elements instead of by the body size. */
static int scan(const char *s, size_t len, int max, size_t *where, size_t *values)
{
    int d = 0;
    bool in_str = false;
    size_t v = 1;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = false;
            continue;
        }
        if (c == '"') {
            in_str = true;
        } else if (c == '[' || c == '{') {
            v++;
            if (++d > max) {
                *where = i;
                return 1;
            }
        } else if (c == ']' || c == '}') {
            d--;
        } else if (c == ',' || c == ':') {
            v++;
        }
    }
    *values = v;
    return 0;
}

/* What the parser tolerates and RFC 8259 does not, checked on a body the parser accepted
 * (so its structure is known to be sound): bytes other than space, tab, LF and CR between
 * tokens (NUL and other control bytes), numbers with leading zeros or without digits after
 * '.' ("01", "-01", "1.", "-.5"), unescaped control characters and invalid UTF-8 inside
 * strings, and the escape \u0000 (a NUL would cut the string short).  Returns PROTO_OK
 * or PROTO_E_JSON naming the byte. */
static enum proto_code strict(const char *body, size_t len, struct proto_error *e)
{
    const unsigned char *s = (const unsigned char *)body;
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        if (c == '"') {
            for (i++; i < len && s[i] != '"'; i++) {
                unsigned char d = s[i];
                if (d == '\\') {
                    if (i + 5 < len && s[i + 1] == 'u' && !memcmp(s + i + 2, "0000", 4))
                        return proto_errorf(e, PROTO_E_JSON, "the body is not valid JSON "
                                            "(\\u0000 in a string at byte %zu: strings may "
                                            "not contain NUL)", i);
                    i++;
                } else if (d < 0x20) {
                    return proto_errorf(e, PROTO_E_JSON, "the body is not valid JSON "
                                        "(unescaped control character 0x%02x in a string at "
                                        "byte %zu)", d, i);
                } else if (d >= 0x80) {
                    size_t n = proto_utf8_seq(s + i, len - i);
                    if (!n)
                        return proto_errorf(e, PROTO_E_JSON, "the body is not valid JSON "
                                            "(invalid UTF-8 in a string at byte %zu)", i);
                    i += n - 1;
                }
            }
            i++;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            size_t at = i;
            if (c == '-')
                i++;
            size_t int_start = i;
            while (i < len && s[i] >= '0' && s[i] <= '9')
                i++;
            bool ok = i > int_start && !(s[int_start] == '0' && i - int_start > 1);
            if (ok && i < len && s[i] == '.') {
                size_t f = ++i;
                while (i < len && s[i] >= '0' && s[i] <= '9')
                    i++;
                ok = i > f;
            }
            if (ok && i < len && (s[i] == 'e' || s[i] == 'E')) {
                i++;
                if (i < len && (s[i] == '+' || s[i] == '-'))
                    i++;
                size_t x = i;
                while (i < len && s[i] >= '0' && s[i] <= '9')
                    i++;
                ok = i > x;
            }
            if (!ok)
                return proto_errorf(e, PROTO_E_JSON, "the body is not valid JSON (malformed "
                                    "number at byte %zu: %s)", at,
                                    i > int_start && s[int_start] == '0' &&
                                            i - int_start > 1
                                        ? "leading zeros are not allowed"
                                        : "digits must follow '-', '.' and the exponent");
        } else if (c <= 0x20 && c != ' ' && c != '\t' && c != '\n' && c != '\r') {
            return proto_errorf(e, PROTO_E_JSON, "the body is not valid JSON (byte 0x%02x at "
                                "byte %zu: only space, tab, LF and CR may separate JSON "
                                "tokens)", c, i);
        } else {
            i++;
        }
    }
    return PROTO_OK;
}

/* Whether the parser stopped (at byte pos) on a NaN or Infinity literal, which JavaScript
 * and Python's json module write but JSON does not have: NaN, nan, Infinity, inf, -Infinity,
 * +inf, ... (letters in any case).  Then *at and *n give the literal as written. */
static bool non_finite_literal(const char *s, size_t len, size_t pos, size_t *at, size_t *n)
{
    if (pos >= len)
        return false;
    size_t i = pos;
    if (i > 0 && (s[i - 1] == '-' || s[i - 1] == '+') && s[i] != '-' && s[i] != '+')
        i--; /* the parser may stop after the sign */
    size_t start = i;
    if (s[i] == '-' || s[i] == '+')
        i++;
    size_t w = i;
    while (w < len && w - i < 16 && ((s[w] >= 'a' && s[w] <= 'z') || (s[w] >= 'A' && s[w] <= 'Z')))
        w++;
    static const char *const words[] = {"nan", "inf", "infinity"};
    for (size_t k = 0; k < sizeof words / sizeof words[0]; k++) {
        size_t wl = strlen(words[k]);
        if (w - i == wl && !strncasecmp(s + i, words[k], wl)) {
            *at = start;
            *n = w - start;
            return true;
        }
    }
    return false;
}

enum proto_code proto_json_parse(const char *body, size_t len, int max_depth,
                                 long max_elements, cJSON **out, struct proto_error *e)
{
    *out = NULL;
    size_t at = 0, values = 0;
    if (len == 0)
        return proto_errorf(e, PROTO_E_JSON, "the request body is empty; a JSON object is "
                            "required");
    if (scan(body, len, max_depth, &at, &values))
        return proto_errorf(e, PROTO_E_JSON, "the body nests arrays/objects deeper than %d "
                            "levels (at byte %zu; --max-depth)", max_depth, at);
    double cap = (double)PROTO_JSON_VALUES_PER_ELEMENT * (double)max_elements + 4096.0;
    if ((double)values > cap)
        return proto_errorf(e, PROTO_E_TOO_LARGE, "the body holds about %zu JSON values, more "
                            "than the %.0f a request may carry (--max-elements %ld); send fewer "
                            "rows per request", values, cap, max_elements);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(body, len, &end, 0);
    if (!root && jsyn_valid(body, len, -1, NULL))
        return proto_errorf(e, PROTO_E_NOMEM, "out of memory parsing the %zu-byte body", len);
    if (!root) {
        size_t pos = end && end >= body && end <= body + len ? (size_t)(end - body) : 0;
        size_t lit, n;
        if (non_finite_literal(body, len, pos, &lit, &n))
            return proto_errorf(e, PROTO_E_JSON, "%.*s is not a JSON number (JSON has no NaN or "
                                "Infinity); send finite numbers (the body is not valid JSON: "
                                "error near byte %zu)", (int)n, body + lit, lit);
        return proto_errorf(e, PROTO_E_JSON, "the body is not valid JSON (error near byte "
                            "%zu)", pos);
    }
    size_t pos = end ? (size_t)(end - body) : len;
    while (pos < len && (body[pos] == ' ' || body[pos] == '\t' || body[pos] == '\n' ||
                         body[pos] == '\r'))
        pos++;
    if (pos < len) {
        cJSON_Delete(root);
        return proto_errorf(e, PROTO_E_JSON, "the body is not valid JSON (unexpected data "
                            "after the value at byte %zu)", pos);
    }
    if (strict(body, len, e) != PROTO_OK) {
        cJSON_Delete(root);
        return e->code;
    }
    *out = root;
    return PROTO_OK;
}

const char *proto_json_type(const cJSON *v)
{
    if (!v)
        return "nothing";
    if (cJSON_IsNull(v))
        return "null";
    if (cJSON_IsBool(v))
        return "a boolean";
    if (cJSON_IsNumber(v))
        return "a number";
    if (cJSON_IsString(v))
        return "a string";
    if (cJSON_IsArray(v))
        return "an array";
    if (cJSON_IsObject(v))
        return "an object";
    return "an unknown value";
}

enum proto_code proto_json_fields(const cJSON *obj, const char *const *allowed, size_t n,
                                  const char *where, struct proto_error *e)
{
    if (!cJSON_IsObject(obj))
        return proto_errorf(e, where[0] ? PROTO_E_FIELD : PROTO_E_JSON, "%s must be a JSON "
                            "object, got %s", where[0] ? where : "the body",
                            proto_json_type(obj));
    for (const cJSON *c = obj->child; c; c = c->next) {
        const char *k = c->string ? c->string : "";
        bool ok = false;
        for (size_t i = 0; i < n && !ok; i++)
            ok = strcmp(k, allowed[i]) == 0;
        if (!ok) {
            char list[256] = "";
            size_t off = 0;
            for (size_t i = 0; i < n && off < sizeof list; i++)
                off += (size_t)snprintf(list + off, sizeof list - off, "%s%s", i ? ", " : "",
                                        allowed[i]);
            return proto_errorf(e, PROTO_E_UNKNOWN_FIELD, "unknown field '%s%.*s' (this "
                                "endpoint takes: %s)", where[0] ? where : "",
                                PROTO_MAX_FIELD_NAME, k, list);
        }
        for (const cJSON *d = obj->child; d != c; d = d->next)
            if (d->string && strcmp(d->string, k) == 0)
                return proto_errorf(e, PROTO_E_FIELD, "field '%s%s' appears twice",
                                    where[0] ? where : "", k);
    }
    return PROTO_OK;
}

/* One number -> float32 with checks; name/index for the message. */
static enum proto_code number(const cJSON *v, const char *name, int i, int j, float *out,
                              struct proto_error *e)
{
    char at[96];
    if (j >= 0)
        snprintf(at, sizeof at, "%s[%d][%d]", name, i, j);
    else
        snprintf(at, sizeof at, "%s[%d]", name, i);
    if (!cJSON_IsNumber(v)) {
        if (cJSON_IsString(v))
            return proto_errorf(e, PROTO_E_FIELD, "%s must be a number, got the string "
                                "\"%.32s\" (NaN and Infinity are not accepted)", at,
                                v->valuestring ? v->valuestring : "");
        return proto_errorf(e, PROTO_E_FIELD, "%s must be a number, got %s", at,
                            proto_json_type(v));
    }
    double d = v->valuedouble;
    if (!isfinite(d))
        return proto_errorf(e, PROTO_E_NONFINITE, "%s is not a finite number", at);
    if (fabs(d) >= F32_OVERFLOW)
        return proto_errorf(e, PROTO_E_NONFINITE, "%s = %g is outside the float32 range "
                            "(|v| <= 3.4028235e38)", at, d);
    *out = (float)d;
    return PROTO_OK;
}

void proto_matrix_free(struct proto_matrix *m)
{
    free(m->data);
    m->data = NULL;
    m->rows = m->cols = 0;
}

enum proto_code proto_json_matrix(const cJSON *v, const char *name, int cols,
                                  const char *width_hint, bool allow_flat, int max_rows,
                                  const struct proto_limits *lim, struct proto_matrix *out,
                                  struct proto_error *e)
{
    out->rows = out->cols = 0;
    out->data = NULL;
    if (!cJSON_IsArray(v))
        return proto_errorf(e, PROTO_E_FIELD, "%s must be an array of rows (arrays of "
                            "numbers), got %s", name, proto_json_type(v));
    const cJSON *first = v->child;
    if (!first)
        return proto_errorf(e, PROTO_E_SHAPE, "%s is empty; at least one row is required",
                            name);
    bool flat = !cJSON_IsArray(first);
    if (flat && !allow_flat)
        return proto_errorf(e, PROTO_E_FIELD, "%s must be an array of rows, e.g. [[1, 2]], "
                            "got an array whose first element is %s", name,
                            proto_json_type(first));
    long rows = 0, width = 0;
    if (flat) {
        rows = 1;
        for (const cJSON *c = first; c; c = c->next)
            width++;
    } else {
        for (const cJSON *c = first; c; c = c->next) {
            if (++rows > max_rows)
                return proto_errorf(e, PROTO_E_TOO_LARGE, "%s has more than %d rows (the "
                                    "limit for this field)", name, max_rows);
        }
        for (const cJSON *c = first->child; c; c = c->next)
            width++;
    }
    if (cols >= 0 && width != cols)
        return proto_errorf(e, PROTO_E_SHAPE, "%s%s has %ld values, expected %d (%s)", name,
                            flat ? "" : "[0]", width, cols, width_hint ? width_hint : "width");
    if (width == 0)
        return proto_errorf(e, PROTO_E_SHAPE, "%s%s is empty", name, flat ? "" : "[0]");
    if (rows * width > lim->max_elements)
        return proto_errorf(e, PROTO_E_TOO_LARGE, "%s has %ld values, more than the limit of "
                            "%ld per tensor (--max-elements)", name, rows * width,
                            lim->max_elements);
    float *data = malloc(sizeof(float) * (size_t)(rows * width));
    if (!data)
        return proto_errorf(e, PROTO_E_NOMEM, "out of memory reading %s", name);
    enum proto_code rc = PROTO_OK;
    if (flat) {
        int j = 0;
        for (const cJSON *c = first; c && rc == PROTO_OK; c = c->next, j++)
            rc = number(c, name, j, -1, &data[j], e);
    } else {
        int i = 0;
        for (const cJSON *r = first; r && rc == PROTO_OK; r = r->next, i++) {
            if (!cJSON_IsArray(r)) {
                rc = proto_errorf(e, PROTO_E_FIELD, "%s[%d] must be an array of numbers, got "
                                  "%s", name, i, proto_json_type(r));
                break;
            }
            long j = 0;
            const cJSON *c = r->child;
            for (; c && j < width && rc == PROTO_OK; c = c->next, j++)
                rc = number(c, name, i, (int)j, &data[(size_t)i * width + j], e);
            if (rc != PROTO_OK)
                break;
            if (c || j != width) {
                long n = 0;
                for (const cJSON *d = r->child; d; d = d->next)
                    n++;
                rc = proto_errorf(e, PROTO_E_SHAPE, "%s[%d] has %ld values, expected %ld "
                                  "(rows must all have the same length%s%s)", name, i, n,
                                  width, width_hint ? ": " : "", width_hint ? width_hint : "");
            }
        }
    }
    if (rc != PROTO_OK) {
        free(data);
        return rc;
    }
    out->rows = (int)rows;
    out->cols = (int)width;
    out->data = data;
    return PROTO_OK;
}

/* One level of a nested row: a is at index path at[0 .. atlen) (e.g. "x[0][2]"), depth k
 * of the shape; its values go to *dst (advanced). */
static enum proto_code nested(const cJSON *a, int k, int rank, const int *dim, char *at,
                              size_t atlen, size_t cap, const char *shape_hint, float **dst,
                              struct proto_error *e)
{
    at[atlen] = 0;
    if (!cJSON_IsArray(a))
        return proto_errorf(e, PROTO_E_FIELD, "%s must be an array of %d %s (%s), got %s", at,
                            dim[k], k + 1 == rank ? "numbers" : "arrays", shape_hint,
                            proto_json_type(a));
    int n = 0;
    for (const cJSON *c = a->child; c; c = c->next)
        n++;
    if (n != dim[k])
        return proto_errorf(e, PROTO_E_SHAPE, "%s has %d values, expected %d (%s)", at, n,
                            dim[k], shape_hint);
    int j = 0;
    for (const cJSON *c = a->child; c; c = c->next, j++) {
        if (k + 1 < rank) {
            int w = snprintf(at + atlen, cap - atlen, "[%d]", j);
            size_t nl = w > 0 && (size_t)w < cap - atlen ? atlen + (size_t)w : atlen;
            enum proto_code rc = nested(c, k + 1, rank, dim, at, nl, cap, shape_hint, dst, e);
            if (rc != PROTO_OK)
                return rc;
            continue;
        }
        /* a leaf: the message (and its index text) is only made on a refusal */
        if (!cJSON_IsNumber(c) || !isfinite(c->valuedouble) ||
            fabs(c->valuedouble) >= F32_OVERFLOW) {
            char name[112];
            snprintf(name, sizeof name, "%s", at);
            return number(c, name, j, -1, *dst, e);
        }
        *(*dst)++ = (float)c->valuedouble;
    }
    return PROTO_OK;
}

enum proto_code proto_json_shaped(const cJSON *v, const char *name, int rank, const int *dim,
                                  const char *width_hint, const char *shape_hint,
                                  bool allow_flat, int max_rows,
                                  const struct proto_limits *lim, struct proto_matrix *out,
                                  struct proto_error *e)
{
    long width = 1;
    for (int k = 0; k < rank; k++)
        width *= dim[k];
    bool shaped = rank > 1 && cJSON_IsArray(v) && cJSON_IsArray(v->child) &&
                  cJSON_IsArray(v->child->child);
    if (!shaped)
        return proto_json_matrix(v, name, (int)width, width_hint, allow_flat, max_rows, lim,
                                 out, e);
    out->rows = out->cols = 0;
    out->data = NULL;
    long rows = 0;
    for (const cJSON *c = v->child; c; c = c->next)
        if (++rows > max_rows)
            return proto_errorf(e, PROTO_E_TOO_LARGE, "%s has more than %d rows (the limit "
                                "for this field)", name, max_rows);
    if (rows * width > lim->max_elements)
        return proto_errorf(e, PROTO_E_TOO_LARGE, "%s has %ld values, more than the limit of "
                            "%ld per tensor (--max-elements)", name, rows * width,
                            lim->max_elements);
    float *data = malloc(sizeof(float) * (size_t)(rows * width));
    if (!data)
        return proto_errorf(e, PROTO_E_NOMEM, "out of memory reading %s", name);
    float *dst = data;
    char at[112];
    int i = 0;
    enum proto_code rc = PROTO_OK;
    for (const cJSON *r = v->child; r && rc == PROTO_OK; r = r->next, i++) {
        int w = snprintf(at, sizeof at, "%.64s[%d]", name, i);
        rc = nested(r, 0, rank, dim, at, w > 0 ? (size_t)w : 0, sizeof at, shape_hint, &dst,
                    e);
    }
    if (rc != PROTO_OK) {
        free(data);
        return rc;
    }
    out->rows = (int)rows;
    out->cols = (int)width;
    out->data = data;
    return PROTO_OK;
}

enum proto_code proto_json_vector(const cJSON *v, const char *name, int n, float **out,
                                  int *got, struct proto_error *e)
{
    *out = NULL;
    if (got)
        *got = 0;
    if (!cJSON_IsArray(v))
        return proto_errorf(e, PROTO_E_FIELD, "%s must be an array of numbers, got %s", name,
                            proto_json_type(v));
    int cnt = cJSON_GetArraySize(v);
    if (n >= 0 && cnt != n)
        return proto_errorf(e, PROTO_E_SHAPE, "%s has %d values, expected %d", name, cnt, n);
    if (n < 0 && (cnt < 1 || cnt > -n))
        return proto_errorf(e, PROTO_E_SHAPE, "%s must have 1 to %d values, got %d", name,
                            -n, cnt);
    float *d = malloc(sizeof(float) * (size_t)(cnt ? cnt : 1));
    if (!d)
        return proto_errorf(e, PROTO_E_NOMEM, "out of memory reading %s", name);
    int i = 0;
    for (const cJSON *c = v->child; c; c = c->next, i++) {
        enum proto_code rc = number(c, name, i, -1, &d[i], e);
        if (rc != PROTO_OK) {
            free(d);
            return rc;
        }
    }
    *out = d;
    if (got)
        *got = cnt;
    return PROTO_OK;
}

enum proto_code proto_json_int(const cJSON *v, const char *name, long long lo, long long hi,
                               long long *out, struct proto_error *e)
{
    if (!cJSON_IsNumber(v))
        return proto_errorf(e, PROTO_E_FIELD, "%s must be an integer, got %s", name,
                            proto_json_type(v));
    double d = v->valuedouble;
    if (!isfinite(d) || d != floor(d))
        return proto_errorf(e, PROTO_E_FIELD, "%s must be an integer, got %g", name, d);
    if (d < (double)lo || d > (double)hi)
        return proto_errorf(e, PROTO_E_FIELD, "%s must be between %lld and %lld, got %.17g",
                            name, lo, hi, d);
    *out = (long long)d;
    return PROTO_OK;
}

enum proto_code proto_json_num(const cJSON *v, const char *name, double lo, bool lo_open,
                               double hi, bool hi_open, double *out, struct proto_error *e)
{
    if (!cJSON_IsNumber(v))
        return proto_errorf(e, PROTO_E_FIELD, "%s must be a number, got %s", name,
                            proto_json_type(v));
    double d = v->valuedouble;
    if (!isfinite(d))
        return proto_errorf(e, PROTO_E_NONFINITE, "%s is not a finite number", name);
    if (d < lo || (lo_open && d == lo) || d > hi || (hi_open && d == hi))
        return proto_errorf(e, PROTO_E_FIELD, "%s must be in %c%g, %g%c, got %g", name,
                            lo_open ? '(' : '[', lo, hi, hi_open ? ')' : ']', d);
    *out = d;
    return PROTO_OK;
}

enum proto_code proto_json_str(const cJSON *v, const char *name, const char **out,
                               struct proto_error *e)
{
    if (!cJSON_IsString(v) || !v->valuestring)
        return proto_errorf(e, PROTO_E_FIELD, "%s must be a string, got %s", name,
                            proto_json_type(v));
    *out = v->valuestring;
    return PROTO_OK;
}
