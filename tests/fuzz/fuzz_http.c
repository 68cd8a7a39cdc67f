/*
 * fuzz_http.c — libFuzzer target: the HTTP-facing helpers of proto/ that see raw request
 * text or write answer bytes: the route matcher, Accept and Content-Type negotiation, the
 * JSON string escaper and error bodies, the number printers, and the CSV and .npy writers.
 *
 * Input: NUL-separated fields "method\0path\0accept\0content-type\0rest".  Missing fields
 * are empty.  `rest` is used as a string (escaping, error bodies, CSV column names split
 * at '|') and as raw bits (floats and doubles for the printers and the writers).
 *
 * Oracles beyond crashes and undefined behaviour:
 *  - a matched route rebuilds the path from its pattern and the captured {m} / {v};
 *    a 405 carries an Allow value, a 404 does not match any pattern;
 *  - proto_buf_json_str output is valid UTF-8 and JSON, and parses (cJSON) back to the
 *    same string when that was valid UTF-8; an error body ({"error","code"}) is UTF-8 JSON
 *    whatever the message holds;
 *  - proto_fmt_f32 / proto_fmt_f64 output is at most PROTO_FMT_MAX bytes, reads back
 *    (strtof / strtod) to the same bits (any NaN / Inf prints "null");
 *  - the CSV answer parses back (RFC 4180) to the header names and the same numbers;
 *  - the .npy answer has exactly proto_npy_size bytes, a 64-byte aligned header and the
 *    samples' bytes after it;
 *  - jsyn_valid (engine/json_syntax.h) never accepts a text cJSON refuses, and where both
 *    accept they end the value at the same byte.
 */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../engine/json_syntax.h"
#include "../../proto/csv.h"
#include "../../proto/fmt.h"
#include "../../proto/npy.h"
#include "../../proto/request.h"
#include "../../proto/response.h"
#include "../../proto/route.h"

#define FAIL(...)                                                                         \
    do {                                                                                  \
        fprintf(stderr, "fuzz_http: " __VA_ARGS__);                                       \
        fputc('\n', stderr);                                                              \
        abort();                                                                          \
    } while (0)

static void check_jsyn(const uint8_t *data, size_t size)
{
    size_t end = 0;
    if (!jsyn_valid((const char *)data, size, -1, &end))
        return;
    const char *cend = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts((const char *)data, size, &cend, 0);
    if (!j)
        FAIL("jsyn_valid accepts %zu bytes cJSON refuses", size);
    if ((size_t)(cend - (const char *)data) != end)
        FAIL("jsyn_valid ends the value at %zu, cJSON at %zu", end,
             (size_t)(cend - (const char *)data));
    cJSON_Delete(j);
}

static void check_route(const char *method, const char *path)
{
    struct proto_match m;
    struct proto_error e;
    enum proto_code rc = proto_route_match(method, path, &m, &e);
    if (rc == PROTO_OK || rc == PROTO_E_METHOD) {
        if (!m.route)
            FAIL("route code %d without a route", rc);
        /* rebuild the path from the pattern */
        char buf[1024];
        size_t k = 0;
        for (const char *p = m.route->pattern; *p && k + 1 < sizeof buf;) {
            if (*p == '{') {
                const char *v = p[1] == 'm' ? m.model : m.version;
                size_t n = strlen(v);
                if (n == 0 || strchr(v, '/'))
                    FAIL("placeholder captured '%s' for %s", v, path);
                if (k + n >= sizeof buf)
                    break;
                memcpy(buf + k, v, n);
                k += n;
                p = strchr(p, '}') + 1;
            } else {
                buf[k++] = *p++;
            }
        }
        buf[k] = 0;
        if (strcmp(buf, path) != 0)
            FAIL("path '%s' matched %s but rebuilds as '%s'", path, m.route->pattern, buf);
        if (rc == PROTO_E_METHOD && !m.allow[0])
            FAIL("405 without Allow");
    } else if (rc != PROTO_E_ROUTE) {
        FAIL("route code %d", rc);
    }
    if (rc != PROTO_OK && (e.code != rc || !e.msg[0]))
        FAIL("route error without a message");
}

/* RFC 3629 UTF-8 (no overlong forms, no surrogates, nothing above U+10FFFF); written here
 * independently of proto/'s own check. */
static bool utf8_ok(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t k;
        unsigned cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            k = 1, cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            k = 2, cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            k = 3, cp = c & 0x07;
        } else {
            return false;
        }
        if (n - i <= k)
            return false;
        for (size_t m = 1; m <= k; m++) {
            if ((s[i + m] & 0xC0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + m] & 0x3F);
        }
        if ((k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000) || cp > 0x10FFFF ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += k + 1;
    }
    return true;
}

static void check_json_str(const char *s)
{
    struct proto_buf b;
    proto_buf_init(&b, 0);
    proto_buf_json_str(&b, s);
    size_t len;
    char *out = proto_buf_take(&b, &len);
    if (!out)
        FAIL("proto_buf_json_str: out of memory");
    /* answers are always valid UTF-8 (invalid input bytes become U+FFFD); a valid string
     * parses back to itself */
    if (!utf8_ok((const unsigned char *)out, len))
        FAIL("escaped string is not UTF-8: %s", out);
    cJSON *j = cJSON_ParseWithLength(out, len);
    if (!cJSON_IsString(j) ||
        (utf8_ok((const unsigned char *)s, strlen(s)) && strcmp(j->valuestring, s) != 0))
        FAIL("escaped string does not parse back: %s", out);
    cJSON_Delete(j);
    free(out);

    struct proto_error e;
    proto_errorf(&e, PROTO_E_FIELD, "field '%s' is wrong", s);
    char *body = proto_error_json(&e, &len);
    if (!body)
        FAIL("proto_error_json: out of memory");
    if (!utf8_ok((const unsigned char *)body, len))
        FAIL("error body is not UTF-8: %s", body);
    j = cJSON_ParseWithLength(body, len);
    if (!cJSON_IsObject(j) || !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "error")) ||
        !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "code")))
        FAIL("error body is not {\"error\",\"code\"}: %s", body);
    cJSON_Delete(j);
    free(body);
}

static void check_f32(float v)
{
    char out[PROTO_FMT_MAX + 1];
    size_t n = proto_fmt_f32(out, v);
    if (n == 0 || n > PROTO_FMT_MAX)
        FAIL("proto_fmt_f32 wrote %zu bytes", n);
    out[n] = 0;
    if (!isfinite(v)) {
        if (strcmp(out, "null") != 0)
            FAIL("non-finite float printed as %s", out);
        return;
    }
    char *end;
    float back = strtof(out, &end);
    if (*end || memcmp(&back, &v, sizeof v) != 0)
        FAIL("float %a printed as %s reads back as %a", (double)v, out, (double)back);
}

static void check_f64(double v)
{
    char out[PROTO_FMT_MAX + 1];
    size_t n = proto_fmt_f64(out, v);
    if (n == 0 || n > PROTO_FMT_MAX)
        FAIL("proto_fmt_f64 wrote %zu bytes", n);
    out[n] = 0;
    if (!isfinite(v)) {
        if (strcmp(out, "null") != 0)
            FAIL("non-finite double printed as %s", out);
        return;
    }
    char *end;
    double back = strtod(out, &end);
    if (*end || memcmp(&back, &v, sizeof v) != 0)
        FAIL("double %a printed as %s reads back as %a", v, out, back);
}

/* One RFC 4180 field from *p (up to ',' or '\n'); returns a malloc'd string. */
static char *csv_field(const char **p, const char *end)
{
    const char *s = *p;
    char *out = malloc((size_t)(end - s) + 1);
    size_t k = 0;
    if (!out)
        abort();
    if (s < end && *s == '"') {
        s++;
        while (s < end) {
            if (*s == '"') {
                if (s + 1 < end && s[1] == '"') {
                    out[k++] = '"';
                    s += 2;
                    continue;
                }
                s++;
                break;
            }
            out[k++] = *s++;
        }
    } else {
        while (s < end && *s != ',' && *s != '\n')
            out[k++] = *s++;
    }
    out[k] = 0;
    *p = s;
    return out;
}

static void check_csv_npy(const char *rest, const uint8_t *bits, size_t nbits)
{
    /* column names: rest split at '|' (at most 6), never empty */
    char names_buf[6][80];
    const char *names[6];
    int dx = 0;
    for (const char *p = rest; dx < 6;) {
        const char *q = strchr(p, '|');
        size_t n = q ? (size_t)(q - p) : strlen(p);
        snprintf(names_buf[dx], sizeof names_buf[dx], "%.*s", (int)(n < 79 ? n : 79), p);
        names[dx] = names_buf[dx];
        dx++;
        if (!q)
            break;
        p = q + 1;
    }
    long n_obs = 1 + (nbits > 0 ? bits[0] % 2 : 0), N = 1 + (nbits > 1 ? bits[1] % 3 : 0);
    size_t tot = (size_t)(n_obs * N);
    float *x = calloc(tot * (size_t)dx, sizeof(float));
    double *lp = calloc(tot, sizeof(double));
    if (!x || !lp)
        abort();
    for (size_t i = 0; i < tot * (size_t)dx && (i + 1) * 4 <= nbits; i++)
        memcpy(&x[i], bits + i * 4, 4);
    for (size_t i = 0; i < tot && (i + 1) * 8 <= nbits; i++)
        memcpy(&lp[i], bits + nbits - (i + 1) * 8, 8);

    struct eng_info info;
    memset(&info, 0, sizeof info);
    info.kind = ENG_KIND_FLOW;
    info.dims.x = info.dims.z = dx;
    info.x_names = names;
    struct proto_result r;
    memset(&r, 0, sizeof r);
    r.op = PROTO_OP_SAMPLE;
    r.n = (int)n_obs;
    r.num_samples = N;
    r.outputs = PROTO_OUT_SAMPLES | PROTO_OUT_LOG_PROB;
    r.samples = x;
    r.sample_lp = lp;

    struct proto_buf b;
    proto_buf_init(&b, 0);
    proto_write_sample_csv(&b, &info, &r);
    size_t len;
    char *csv = proto_buf_take(&b, &len);
    if (!csv)
        FAIL("csv: out of memory");
    /* parse it back */
    const char *p = csv, *end = csv + len;
    const char *head[2] = {"obs", "sample"};
    for (int c = 0; c < dx + 3; c++) {
        char *f = csv_field(&p, end);
        const char *want = c < 2 ? head[c] : c < 2 + dx ? names[c - 2] : "log_prob";
        if (strcmp(f, want) != 0)
            FAIL("csv header column %d is '%s', not '%s'", c, f, want);
        free(f);
        if (p >= end || *p != (c == dx + 2 ? '\n' : ','))
            FAIL("csv header: bad separator after column %d", c);
        p++;
    }
    for (size_t row = 0; row < tot; row++) {
        for (int c = 0; c < dx + 3; c++) {
            char *f = csv_field(&p, end);
            if (c >= 2 && c < 2 + dx) {
                float v = x[row * (size_t)dx + (size_t)(c - 2)];
                float back = isfinite(v) ? strtof(f, NULL) : 0.0f;
                if (isfinite(v) ? memcmp(&v, &back, 4) != 0 : strcmp(f, "null") != 0)
                    FAIL("csv row %zu column %d: '%s' for %a", row, c, f, (double)v);
            }
            free(f);
            if (p >= end || *p != (c == dx + 2 ? '\n' : ','))
                FAIL("csv row %zu: bad separator after column %d", row, c);
            p++;
        }
    }
    if (p != end)
        FAIL("csv: %zu bytes after the last row", (size_t)(end - p));
    free(csv);

    proto_buf_init(&b, 0);
    proto_write_npy_f32(&b, x, n_obs, N, dx);
    char *npy = proto_buf_take(&b, &len);
    if (!npy)
        FAIL("npy: out of memory");
    size_t hl = (size_t)(uint8_t)npy[8] | (size_t)(uint8_t)npy[9] << 8;
    if (len != proto_npy_size(n_obs, N, dx) || memcmp(npy, "\x93NUMPY\x01\x00", 8) != 0 ||
        (10 + hl) % 64 != 0 || len != 10 + hl + tot * (size_t)dx * 4 ||
        memcmp(npy + 10 + hl, x, tot * (size_t)dx * 4) != 0)
        FAIL("npy: malformed (%zu bytes, header %zu)", len, hl);
    free(npy);
    free(x);
    free(lp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* fields, NUL-terminated copies */
    char *buf = malloc(size + 5);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    memset(buf + size, 0, 5);
    const char *field[5];
    size_t off = 0;
    for (int i = 0; i < 5; i++) {
        field[i] = buf + (off <= size ? off : size);
        if (off <= size)
            off += strlen(buf + off) + 1;
    }
    const char *method = field[0], *path = field[1], *accept = field[2], *ctype = field[3],
               *rest = field[4];
    size_t rest_off = (size_t)(rest - buf), nbits = rest_off < size ? size - rest_off : 0;
    const uint8_t *bits = data + (rest_off < size ? rest_off : size);

    check_jsyn(data, size);
    check_jsyn(bits, nbits);
    check_route(method, path);
    enum proto_format f = proto_format_from_accept(accept);
    if (f != PROTO_FMT_JSON && f != PROTO_FMT_CSV && f != PROTO_FMT_NPY && f != PROTO_FMT_PNG)
        FAIL("accept: format %d", f);
    (void)proto_content_type_ok(ctype);
    (void)proto_content_type_ok(accept);
    check_json_str(rest);
    check_json_str(path);

    for (size_t i = 0; i + 4 <= nbits; i += 4) {
        float v;
        memcpy(&v, bits + i, 4);
        check_f32(v);
    }
    for (size_t i = 0; i + 8 <= nbits; i += 8) {
        double v;
        memcpy(&v, bits + i, 8);
        check_f64(v);
    }
    check_csv_npy(rest, bits, nbits);
    free(buf);
    return 0;
}
