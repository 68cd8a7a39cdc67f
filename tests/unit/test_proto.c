/*
 * test_proto.c — proto/: the float printers (round trip and shortest output on many random
 * and edge-case values), the capped buffer, request validation (table of valid and
 * malformed bodies -> code and exact message), the V2 mapping, the CSV / NPY writers,
 * summaries, media types, the route table, and the route table against proto/openapi.yaml
 * in both directions.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../proto/answer.h"
#include "../../proto/buf.h"
#include "../../proto/csv.h"
#include "../../proto/errors.h"
#include "../../proto/fmt.h"
#include "../../proto/npy.h"
#include "../../proto/request.h"
#include "../../proto/response.h"
#include "../../proto/route.h"
#include "../../proto/summary.h"
#include "../../proto/v2.h"
#include "testutil.h"

/* ---- a splitmix generator for random bit patterns ------------------------------------ */

static uint64_t mix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static const char *f32s(float v, char *buf)
{
    size_t n = proto_fmt_f32(buf, v);
    buf[n] = 0;
    return buf;
}

static const char *f64s(double v, char *buf)
{
    size_t n = proto_fmt_f64(buf, v);
    buf[n] = 0;
    return buf;
}

/* Significant digits of a printed number. */
static int sig_digits(const char *s)
{
    int n = 0, trailing = 0;
    bool started = false;
    for (; *s && *s != 'e'; s++) {
        if (*s < '0' || *s > '9')
            continue;
        if (*s != '0')
            started = true;
        if (!started)
            continue;
        n++;
        trailing = *s == '0' ? trailing + 1 : 0;
    }
    return n - trailing;
}

/* ---- printers ------------------------------------------------------------------------------ */

START_TEST(f32_edge_cases)
{
    char b[64];
    ck_assert_str_eq(f32s(0.0f, b), "0.0");
    ck_assert_str_eq(f32s(-0.0f, b), "-0.0");
    ck_assert_str_eq(f32s(1.0f, b), "1.0");
    ck_assert_str_eq(f32s(-2.5f, b), "-2.5");
    ck_assert_str_eq(f32s(0.1f, b), "0.1");
    ck_assert_str_eq(f32s(100.0f, b), "100.0");
    ck_assert_str_eq(f32s(1e-45f, b), "1e-45");
    ck_assert_str_eq(f32s(3.4028235e38f, b), "3.4028235e38");
    ck_assert_str_eq(f32s(-3.4028235e38f, b), "-3.4028235e38");
    ck_assert_str_eq(f32s(FLT_MIN, b), "1.1754944e-38");
    ck_assert_str_eq(f32s(1e-5f, b), "0.00001");
    ck_assert_str_eq(f32s(1e-7f, b), "1e-7");
    ck_assert_str_eq(f32s(16777216.0f, b), "16777216.0");
    ck_assert_str_eq(f32s(1e12f, b), "1e12");
    ck_assert_str_eq(f32s(0.3f, b), "0.3");
    ck_assert_str_eq(f32s(12345.678f, b), "12345.678");
    ck_assert_str_eq(f32s(NAN, b), "null");
    ck_assert_str_eq(f32s(INFINITY, b), "null");
    ck_assert_str_eq(f32s(-INFINITY, b), "null");
    /* the -0.0 sign survives the round trip */
    float z = strtof(f32s(-0.0f, b), NULL);
    ck_assert(signbit(z));
}
END_TEST

START_TEST(f32_round_trip_random)
{
    uint64_t s = 12345;
    char b[64], c[64];
    for (int i = 0; i < 400000; i++) {
        uint32_t u = (uint32_t)mix(&s);
        float v;
        memcpy(&v, &u, 4);
        if (!isfinite(v))
            continue;
        f32s(v, b);
        float w = strtof(b, NULL);
        ck_assert_msg(memcmp(&v, &w, 4) == 0, "%08x printed %s reads back %.9g", u, b,
                      (double)w);
        if (i % 64 == 0 && v != 0) {
            /* shortest: no printf precision with fewer digits reads back */
            int k;
            for (k = 1; k <= 9; k++) {
                snprintf(c, sizeof c, "%.*e", k - 1, (double)v);
                if (strtof(c, NULL) == v)
                    break;
            }
            ck_assert_msg(sig_digits(b) <= k, "%s is longer than %s", b, c);
        }
    }
    /* every power of two and its neighbours */
    for (int e = -149; e <= 127; e++) {
        float v = ldexpf(1.0f, e);
        float n[3] = {v, nextafterf(v, 0), nextafterf(v, INFINITY)};
        for (int k = 0; k < 3; k++) {
            if (!isfinite(n[k]))
                continue;
            ck_assert(strtof(f32s(n[k], b), NULL) == n[k]);
        }
    }
}
END_TEST

START_TEST(f64_round_trip_random)
{
    uint64_t s = 999;
    char b[64];
    for (int i = 0; i < 300000; i++) {
        uint64_t u = mix(&s);
        double v;
        memcpy(&v, &u, 8);
        if (!isfinite(v))
            continue;
        double w = strtod(f64s(v, b), NULL);
        ck_assert_msg(memcmp(&v, &w, 8) == 0, "%.17g printed %s", v, b);
    }
    for (int i = 0; i < 100000; i++) {
        double v = ((double)(mix(&s) >> 11) / 9007199254740992.0 - 0.5) * 2000.0;
        ck_assert(strtod(f64s(v, b), NULL) == v);
    }
    ck_assert_str_eq(f64s(0.05, b), "0.05");
    ck_assert_str_eq(f64s(-7.123456789, b), "-7.123456789");
    ck_assert_str_eq(f64s(1.7976931348623157e308, b), "1.7976931348623157e308");
    ck_assert_str_eq(f64s(5e-324, b), "5e-324");
    ck_assert_str_eq(f64s(-0.0, b), "-0.0");
    ck_assert_str_eq(f64s(NAN, b), "null");
}
END_TEST

START_TEST(printed_numbers_are_json)
{
    uint64_t s = 7;
    struct proto_buf b;
    proto_buf_init(&b, 0);
    float v[1000];
    for (int i = 0; i < 1000; i++) {
        uint32_t u = (uint32_t)mix(&s) & 0xbfffffffu; /* finite */
        memcpy(&v[i], &u, 4);
    }
    proto_buf_putc(&b, '[');
    proto_buf_f32_list(&b, v, 1000);
    proto_buf_putc(&b, ']');
    ck_assert(!proto_buf_failed(&b));
    cJSON *j = cJSON_ParseWithLength(b.p, b.len);
    ck_assert(j != NULL);
    ck_assert_int_eq(cJSON_GetArraySize(j), 1000);
    for (int i = 0; i < 1000; i++)
        ck_assert((float)cJSON_GetArrayItem(j, i)->valuedouble == v[i]);
    cJSON_Delete(j);
    proto_buf_free(&b);
}
END_TEST

START_TEST(buffer_cap)
{
    struct proto_buf b;
    proto_buf_init(&b, 10);
    proto_buf_puts(&b, "0123456789");
    ck_assert(!proto_buf_failed(&b));
    proto_buf_putc(&b, 'x');
    ck_assert_int_eq(b.state, PROTO_BUF_OVER);
    proto_buf_puts(&b, "more");
    ck_assert_int_eq((int)b.len, 10);
    proto_buf_free(&b);
    /* lists near the cap stop exactly at it */
    float v[100];
    for (int i = 0; i < 100; i++)
        v[i] = 1.0f; /* "1.0" + ',' = 4 bytes each, 399 in all */
    proto_buf_init(&b, 399);
    proto_buf_f32_list(&b, v, 100);
    ck_assert(!proto_buf_failed(&b));
    ck_assert_int_eq((int)b.len, 399);
    proto_buf_free(&b);
    proto_buf_init(&b, 398);
    proto_buf_f32_list(&b, v, 100);
    ck_assert_int_eq(b.state, PROTO_BUF_OVER);
    proto_buf_free(&b);
    /* take hands over a NUL-terminated string */
    proto_buf_init(&b, 0);
    proto_buf_json_str(&b, "a\"b\\c\n\x01");
    size_t n;
    char *s = proto_buf_take(&b, &n);
    ck_assert_str_eq(s, "\"a\\\"b\\\\c\\n\\u0001\"");
    ck_assert_int_eq((int)n, (int)strlen(s));
    free(s);
}
END_TEST

/* ---- requests ------------------------------------------------------------------------------ */

static const char *const XN[] = {"a", "b", "c", "d"};
static const char *const YN[] = {"p", "q"};

static struct eng_info info_of(enum eng_kind k)
{
    struct eng_info i;
    memset(&i, 0, sizeof i);
    i.kind = k;
    i.x_names = XN;
    i.y_names = YN;
    i.description = "";
    i.blocks_json = "[]";
    switch (k) {
    case ENG_KIND_FLOW: i.dims = (struct eng_dims){4, 0, 4, 0, 0}; break;
    case ENG_KIND_CINN: i.dims = (struct eng_dims){4, 2, 4, 0, 0}; break;
    case ENG_KIND_INN: i.dims = (struct eng_dims){4, 2, 3, 1, 0}; break;
    case ENG_KIND_MLP: i.dims = (struct eng_dims){4, 2, 0, 0, 0}; break;
    case ENG_KIND_MDN: i.dims = (struct eng_dims){4, 2, 0, 0, 0}; break;
    }
    memset(i.sha256, 'a', 64);
    return i;
}

struct rcase {
    enum proto_op op;
    enum eng_kind kind;
    const char *body;
    enum proto_code code;
    const char *msg; /* exact message (NULL: success) */
};

static const struct rcase CASES[] = {
    /* valid */
    {PROTO_OP_FORWARD, ENG_KIND_FLOW, "{\"x\":[[1,2,3,4]]}", PROTO_OK, NULL},
    {PROTO_OP_FORWARD, ENG_KIND_FLOW, " {\"x\":[1,2,3,4]} \n", PROTO_OK, NULL},
    {PROTO_OP_FORWARD, ENG_KIND_CINN, "{\"x\":[[1,2,3,4],[5,6,7,8]],\"y\":[[1,2]]}", PROTO_OK, NULL},
    {PROTO_OP_INVERSE, ENG_KIND_INN, "{\"z\":[[1,2,3]],\"y\":[1,2],\"tol\":1e-8,"
     "\"max_iter\":50,\"method\":\"anderson\"}", PROTO_OK, NULL},
    {PROTO_OP_SAMPLE, ENG_KIND_FLOW, "{}", PROTO_OK, NULL},
    {PROTO_OP_SAMPLE, ENG_KIND_CINN, "{\"y\":[[1,2],[3,4]],\"num_samples\":10,\"seed\":0,"
     "\"temperature\":0.5,\"outputs\":[\"summary\",\"log_prob\"]}", PROTO_OK, NULL},
    {PROTO_OP_LOG_PROB, ENG_KIND_INN, "{\"x\":[[1,2,3,4]],\"y\":[[1,2]]}", PROTO_OK, NULL},
    {PROTO_OP_PREIMAGE, ENG_KIND_MLP, "{\"target\":[[1,2]],\"method\":\"evolutionary\","
     "\"bounds\":{\"low\":[0,0,0,0],\"high\":[1,1,1,1]}}", PROTO_OK, NULL},
    /* JSON */
    {PROTO_OP_FORWARD, ENG_KIND_FLOW, "", PROTO_E_JSON,
     "the request body is empty; a JSON object is required"},
    {PROTO_OP_FORWARD, ENG_KIND_FLOW, "{\"x\":", PROTO_E_JSON,
     "the body is not valid JSON (error near byte 4)"},
    {PROTO_OP_FORWARD, ENG_KIND_FLOW, "{\"x\":[[1,2,3,4]]}x", PROTO_E_JSON,
     "the body is not valid JSON (unexpected data after the value at byte 17)"},
    {PROTO_OP_FORWARD, ENG_KIND_FLOW, "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]"
     "]]]]]]]", PROTO_E_JSON, "the body nests arrays/objects deeper than 32 levels (at byte 32; "
     "--max-depth)"},
    {PROTO_OP_FORWARD, ENG_KIND_FLOW, "42", PROTO_E_JSON,
     "the body must be a JSON object, got a number"},
    /* NaN and Infinity literals (JavaScript, Python's json.dumps) are named as such */
    {PROTO_OP_FORWARD, ENG_KIND_FLOW, "{\"x\": [[1, 2, NaN, 4]]}", PROTO_E_JSON,
     "NaN is not a JSON number (JSON has no NaN or Infinity); send finite numbers (the body "
     "is not valid JSON: error near byte 14)"},
    {PROTO_OP_FORWARD, ENG_KIND_FLOW, "{\"x\":[[nan,2,3,4]]}", PROTO_E_JSON,
     "nan is not a JSON number (JSON has no NaN or Infinity); send finite numbers (the body "
     "is not valid JSON: error near byte 7)"},
    {PROTO_OP_FORWARD, ENG_KIND_FLOW, "{\"x\":[[1,Infinity,3,4]]}", PROTO_E_JSON,
     "Infinity is not a JSON number (JSON has no NaN or Infinity); send finite numbers (the "
     "body is not valid JSON: error near byte 9)"},
    {PROTO_OP_FORWARD, ENG_KIND_FLOW, "{\"x\":[[1,2,-Infinity,4]]}", PROTO_E_JSON,
     "-Infinity is not a JSON number (JSON has no NaN or Infinity); send finite numbers (the "
     "body is not valid JSON: error near byte 11)"},
    {PROTO_OP_FORWARD, ENG_KIND_FLOW, "{\"x\":[[1,2,3,-inf]]}", PROTO_E_JSON,
     "-inf is not a JSON number (JSON has no NaN or Infinity); send finite numbers (the body "
     "is not valid JSON: error near byte 13)"},
    {PROTO_OP_FORWARD, ENG_KIND_FLOW, "{\"x\":[[1,2,3,+INF]]}", PROTO_E_JSON,
     "+INF is not a JSON number (JSON has no NaN or Infinity); send finite numbers (the body "
     "is not valid JSON: error near byte 13)"},
    {PROTO_OP_FORWARD, ENG_KIND_FLOW, "NaN", PROTO_E_JSON,
     "NaN is not a JSON number (JSON has no NaN or Infinity); send finite numbers (the body "
     "is not valid JSON: error near byte 0)"},
    /* other words stay plain syntax errors */
    {PROTO_OP_FORWARD, ENG_KIND_FLOW, "{\"x\":[[1,2,3,NaNa]]}", PROTO_E_JSON,
     "the body is not valid JSON (error near byte 13)"},
    {PROTO_OP_FORWARD, ENG_KIND_FLOW, "{\"x\":[[1,2,3,infinite]]}", PROTO_E_JSON,
     "the body is not valid JSON (error near byte 13)"},
    {PROTO_OP_FORWARD, ENG_KIND_FLOW, "{\"x\":[[1,2,3,-]]}", PROTO_E_JSON,
     "the body is not valid JSON (error near byte 13)"},
    /* fields */
    {PROTO_OP_FORWARD, ENG_KIND_FLOW, "{\"x\":[[1,2,3,4]],\"z\":1}", PROTO_E_UNKNOWN_FIELD,
     "unknown field 'z' (this endpoint takes: x, y)"},
    {PROTO_OP_FORWARD, ENG_KIND_FLOW, "{}", PROTO_E_MISSING, "missing field 'x' (rows of 4 values)"},
    {PROTO_OP_FORWARD, ENG_KIND_FLOW, "{\"x\":{}}", PROTO_E_FIELD,
     "x must be an array of rows (arrays of numbers), got an object"},
    {PROTO_OP_FORWARD, ENG_KIND_FLOW, "{\"x\":[[1,2,3]]}", PROTO_E_SHAPE,
     "x[0] has 3 values, expected 4 (the model's dims.x)"},
    {PROTO_OP_FORWARD, ENG_KIND_FLOW, "{\"x\":[[1,2,3,4],[1,2,3,4,5]]}", PROTO_E_SHAPE,
     "x[1] has 5 values, expected 4 (rows must all have the same length: the model's dims.x)"},
    {PROTO_OP_FORWARD, ENG_KIND_FLOW, "{\"x\":[[1,2,3,4],7]}", PROTO_E_FIELD,
     "x[1] must be an array of numbers, got a number"},
    {PROTO_OP_FORWARD, ENG_KIND_FLOW, "{\"x\":[[1,2,\"NaN\",4]]}", PROTO_E_FIELD,
     "x[0][2] must be a number, got the string \"NaN\" (NaN and Infinity are not accepted)"},
    {PROTO_OP_FORWARD, ENG_KIND_FLOW, "{\"x\":[[1,2,null,4]]}", PROTO_E_FIELD,
     "x[0][2] must be a number, got null"},
    {PROTO_OP_FORWARD, ENG_KIND_FLOW, "{\"x\":[[1,2,1e39,4]]}", PROTO_E_NONFINITE,
     "x[0][2] = 1e+39 is outside the float32 range (|v| <= 3.4028235e38)"},
    {PROTO_OP_FORWARD, ENG_KIND_FLOW, "{\"x\":[[1,2,3.4028235e38,-1e400]]}", PROTO_E_NONFINITE,
     "x[0][3] is not a finite number"},
    {PROTO_OP_FORWARD, ENG_KIND_FLOW, "{\"x\":[[1,2,3,4]],\"y\":[[1]]}", PROTO_E_UNKNOWN_FIELD,
     "field 'y' is not taken here by a flow model (it has no observation y for this operation)"},
    {PROTO_OP_FORWARD, ENG_KIND_CINN, "{\"x\":[[1,2,3,4]]}", PROTO_E_MISSING,
     "missing field 'y': a cinn model needs the observation y (rows of 2 values)"},
    {PROTO_OP_FORWARD, ENG_KIND_CINN, "{\"x\":[[1,2,3,4],[1,2,3,4],[1,2,3,4]],\"y\":[[1,2],[1,2]]}",
     PROTO_E_SHAPE, "y has 2 rows; it must have 1 row (used for every row of x) or 3 rows, one "
     "per row of x"},
    {PROTO_OP_FORWARD, ENG_KIND_FLOW, "{\"x\":[[1,2,3,4]],\"x\":[[1,2,3,4]]}", PROTO_E_FIELD,
     "field 'x' appears twice"},
    {PROTO_OP_INVERSE, ENG_KIND_MLP, "{\"z\":[[1]]}", PROTO_E_UNSUPPORTED,
     "inverse is not defined for an mlp model (use preimage search)"},
    {PROTO_OP_SAMPLE, ENG_KIND_MLP, "not even json", PROTO_E_UNSUPPORTED,
     "sample is not defined for an mlp model (use preimage search)"},
    {PROTO_OP_FORWARD, ENG_KIND_MDN, "{\"x\":[[1,2,3,4]],\"y\":[[1,2]]}", PROTO_E_UNSUPPORTED,
     "forward is not defined for an mdn model (a mixture density network is not a bijection: "
     "use sample or log_prob)"},
    {PROTO_OP_INVERSE, ENG_KIND_MDN, "{}", PROTO_E_UNSUPPORTED,
     "inverse is not defined for an mdn model (a mixture density network is not a bijection: "
     "use sample or log_prob)"},
    {PROTO_OP_PREIMAGE, ENG_KIND_MDN, "{}", PROTO_E_UNSUPPORTED,
     "preimage is not defined for an mdn model (a mixture density network is not a bijection: "
     "use sample or log_prob)"},
    {PROTO_OP_LOG_PROB, ENG_KIND_MDN, "{\"x\":[[1,2,3,4]],\"y\":[[1,2]]}", PROTO_OK, NULL},
    {PROTO_OP_LOG_PROB, ENG_KIND_MDN, "{\"x\":[[1,2,3,4]]}", PROTO_E_MISSING,
     "missing field 'y': a mdn model needs the observation y (rows of 2 values)"},
    {PROTO_OP_SAMPLE, ENG_KIND_MDN, "{\"y\":[[1,2]],\"num_samples\":5}", PROTO_OK, NULL},
    {PROTO_OP_INVERSE, ENG_KIND_FLOW, "{\"z\":[[1,2,3,4]],\"tol\":0}", PROTO_E_FIELD,
     "tol must be in (0, 1], got 0"},
    {PROTO_OP_INVERSE, ENG_KIND_FLOW, "{\"z\":[[1,2,3,4]],\"max_iter\":1.5}", PROTO_E_FIELD,
     "max_iter must be an integer, got 1.5"},
    {PROTO_OP_INVERSE, ENG_KIND_FLOW, "{\"z\":[[1,2,3,4]],\"method\":\"secant\"}", PROTO_E_FIELD,
     "method must be one of auto, newton, anderson, broyden, fixed_point; got \"secant\""},
    {PROTO_OP_SAMPLE, ENG_KIND_FLOW, "{\"num_samples\":-3}", PROTO_E_FIELD,
     "num_samples must be at least 1, got -3"},
    {PROTO_OP_SAMPLE, ENG_KIND_FLOW, "{\"num_samples\":1.5}", PROTO_E_FIELD,
     "num_samples must be a positive integer, got a fraction"},
    {PROTO_OP_SAMPLE, ENG_KIND_FLOW, "{\"num_samples\":true}", PROTO_E_FIELD,
     "num_samples must be a positive integer, got a boolean"},
    {PROTO_OP_SAMPLE, ENG_KIND_FLOW, "{\"num_samples\":2000000}", PROTO_E_TOO_LARGE,
     "num_samples = 2000000 is more than the server allows per request (1048576, "
     "--max-samples); ask for fewer samples"},
    {PROTO_OP_SAMPLE, ENG_KIND_CINN, "{\"y\":[[1,2],[1,2],[1,2]],\"num_samples\":400000}",
     PROTO_E_TOO_LARGE, "3 observations x num_samples 400000 = 1200000 samples, more than the "
     "server allows per request (1048576, --max-samples); ask for fewer samples or split the "
     "request"},
    {PROTO_OP_SAMPLE, ENG_KIND_FLOW, "{\"seed\":-1}", PROTO_E_FIELD,
     "seed must be between 0 and 9007199254740991, got -1"},
    {PROTO_OP_SAMPLE, ENG_KIND_FLOW, "{\"temperature\":1000}", PROTO_E_FIELD,
     "temperature must be in [0, 100], got 1000"},
    {PROTO_OP_SAMPLE, ENG_KIND_FLOW, "{\"outputs\":\"samples\"}", PROTO_E_FIELD,
     "outputs must be a non-empty array of strings from samples, log_prob, summary, "
     "resimulation; got a string"},
    {PROTO_OP_SAMPLE, ENG_KIND_FLOW, "{\"outputs\":[\"samples\",\"mode\"]}", PROTO_E_FIELD,
     "outputs[1] = \"mode\" is not one of samples, log_prob, summary, resimulation"},
    {PROTO_OP_SAMPLE, ENG_KIND_CINN, "{\"y\":[1,2],\"outputs\":[\"resimulation\"]}",
     PROTO_E_UNSUPPORTED, "outputs: resimulation is only defined for inn models (this model is "
     "a cinn)"},
    {PROTO_OP_SAMPLE, ENG_KIND_FLOW, "{\"quantiles\":[0.5,-0.1]}", PROTO_E_FIELD,
     "quantiles[1] must be in [0, 1], got -0.1"},
    {PROTO_OP_SAMPLE, ENG_KIND_FLOW, "{\"quantiles\":[0.5,0.1,0.5]}", PROTO_E_FIELD,
     "quantiles[2] = 0.5 is listed twice"},
    {PROTO_OP_SAMPLE, ENG_KIND_FLOW, "{\"async\":\"yes\"}", PROTO_E_FIELD,
     "async must be true or false, got a string"},
    {PROTO_OP_PREIMAGE, ENG_KIND_FLOW, "{\"target\":[[1,2,3,4]],\"async\":null}", PROTO_E_FIELD,
     "async must be true or false, got null"},
    {PROTO_OP_LOG_PROB, ENG_KIND_FLOW, "{\"x\":[[1,2,3,4]],\"async\":true}",
     PROTO_E_UNKNOWN_FIELD, "unknown field 'async' (this endpoint takes: x, y)"},
    /* the leakage options of log_prob exist only for a model with a prior box */
    {PROTO_OP_LOG_PROB, ENG_KIND_FLOW, "{\"x\":[[1,2,3,4]],\"leakage_correction\":true}",
     PROTO_E_UNKNOWN_FIELD, "unknown field 'leakage_correction' (this endpoint takes: x, y)"},
    {PROTO_OP_PREIMAGE, ENG_KIND_MLP, "{\"target\":[[1,2]],\"bounds\":{\"low\":[0,0,0,0]}}",
     PROTO_E_MISSING, "bounds needs both 'low' and 'high' (4 values each)"},
    {PROTO_OP_PREIMAGE, ENG_KIND_MLP, "{\"target\":[[1,2]],\"bounds\":{\"low\":[0,0,0,0],"
     "\"high\":[1,1,0,1]}}", PROTO_E_FIELD, "bounds.low[2] must be below bounds.high[2]"},
    {PROTO_OP_PREIMAGE, ENG_KIND_MLP, "{\"target\":[[1,2]],\"bounds\":{\"lo\":[0]}}",
     PROTO_E_UNKNOWN_FIELD, "unknown field 'bounds.lo' (this endpoint takes: low, high)"},
    {PROTO_OP_PREIMAGE, ENG_KIND_MLP, "{\"target\":[[1,2]],\"num_solutions\":0}", PROTO_E_FIELD,
     "num_solutions must be between 1 and 256, got 0"},
    {PROTO_OP_PREIMAGE, ENG_KIND_FLOW, "{\"target\":[[1,2]]}", PROTO_E_SHAPE,
     "target[0] has 2 values, expected 4 (the model's dims.z)"},
};

/* "async" is read by the operations that run as jobs, and only by them. */
START_TEST(async_field)
{
    struct proto_limits lim = proto_limits_default();
    struct eng_info info = info_of(ENG_KIND_FLOW);
    static const struct {
        enum proto_op op;
        const char *body;
        bool async;
    } C[] = {
        {PROTO_OP_SAMPLE, "{\"async\":true}", true},
        {PROTO_OP_SAMPLE, "{\"async\":false}", false},
        {PROTO_OP_SAMPLE, "{}", false},
        {PROTO_OP_PREIMAGE, "{\"target\":[[1,2,3,4]],\"async\":true}", true},
    };
    for (size_t i = 0; i < sizeof C / sizeof C[0]; i++) {
        struct proto_request r;
        struct proto_error e = {0};
        ck_assert_int_eq(proto_request_parse(C[i].op, C[i].body, strlen(C[i].body), &info, &lim,
                                             &r, &e), PROTO_OK);
        ck_assert_msg(r.async == C[i].async, "case %zu", i);
        proto_request_free(&r);
    }
    ck_assert(proto_op_async(PROTO_OP_SAMPLE) && proto_op_async(PROTO_OP_PREIMAGE));
    ck_assert(!proto_op_async(PROTO_OP_FORWARD) && !proto_op_async(PROTO_OP_INVERSE) &&
              !proto_op_async(PROTO_OP_LOG_PROB));
}
END_TEST

START_TEST(request_table)
{
    struct proto_limits lim = proto_limits_default();
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        const struct rcase *c = &CASES[i];
        struct eng_info info = info_of(c->kind);
        struct proto_request r;
        struct proto_error e = {0};
        enum proto_code rc = proto_request_parse(c->op, c->body, strlen(c->body), &info, &lim,
                                                 &r, &e);
        ck_assert_msg(rc == c->code, "case %zu (%s): code %s, want %s (%s)", i, c->body,
                      proto_code_str(rc), proto_code_str(c->code), e.msg);
        if (c->msg)
            ck_assert_msg(strcmp(e.msg, c->msg) == 0, "case %zu: message\n  '%s'\nwant\n  '%s'",
                          i, e.msg, c->msg);
        if (rc == PROTO_OK)
            proto_request_free(&r);
    }
}
END_TEST

/* Random byte mutations of valid bodies: every answer is a valid code, nothing crashes
 * (run under ASan/UBSan by `make SANITIZE=1 test-unit`). */
START_TEST(request_fuzz)
{
    struct proto_limits lim = proto_limits_default();
    uint64_t s = 2024;
    static const char ALPHABET[] = "{}[],:\"0123456789.-+eE \\ntrufalsx";
    char buf[512];
    int ok = 0;
    for (int it = 0; it < 30000; it++) {
        const struct rcase *c = &CASES[mix(&s) % 8]; /* the valid ones */
        size_t n = strlen(c->body);
        memcpy(buf, c->body, n);
        int muts = 1 + (int)(mix(&s) % 4);
        for (int k = 0; k < muts; k++) {
            uint64_t r = mix(&s);
            size_t at = (size_t)(r % (n ? n : 1));
            switch ((r >> 32) % 3) {
            case 0: /* replace */
                buf[at] = ALPHABET[(r >> 40) % (sizeof ALPHABET - 1)];
                break;
            case 1: /* delete */
                if (n > 1) {
                    memmove(buf + at, buf + at + 1, n - at - 1);
                    n--;
                }
                break;
            default: /* insert */
                if (n + 1 < sizeof buf) {
                    memmove(buf + at + 1, buf + at, n - at);
                    buf[at] = ALPHABET[(r >> 40) % (sizeof ALPHABET - 1)];
                    n++;
                }
            }
        }
        struct eng_info info = info_of(c->kind);
        struct proto_request r;
        struct proto_error e = {0};
        enum proto_code rc = proto_request_parse(c->op, buf, n, &info, &lim, &r, &e);
        ck_assert((unsigned)rc < PROTO_CODE_COUNT);
        if (rc == PROTO_OK) {
            ok++;
            proto_request_free(&r);
        } else {
            ck_assert(e.msg[0] != 0);
        }
        rc = proto_v2_parse(buf, n, &info, &lim, &r, &e);
        if (rc == PROTO_OK)
            proto_request_free(&r);
    }
    ck_assert(ok > 0);
}
END_TEST

START_TEST(value_count_bounds_parser_memory)
{
    /* A body whose values outnumber 2 x --max-elements is refused before cJSON allocates a
     * node for each of them (a byte-cheap "0," costs the parser ~64 bytes). */
    struct proto_limits lim = proto_limits_default();
    lim.max_elements = 1000;
    struct proto_error e;
    struct proto_request r;
    struct eng_info flow = info_of(ENG_KIND_FLOW);
    size_t n = 2 * 1000 + 4096 + 10, len = 0;
    char *b = malloc(8 + 2 * n + 8);
    len += (size_t)snprintf(b, 16, "{\"x\":[[");
    for (size_t i = 0; i < n; i++)
        b[len++] = '0', b[len++] = ',';
    b[len - 1] = ']';
    b[len++] = ']', b[len++] = '}';
    ck_assert_int_eq(proto_request_parse(PROTO_OP_FORWARD, b, len, &flow, &lim, &r, &e),
                     PROTO_E_TOO_LARGE);
    ck_assert_msg(strstr(e.msg, "--max-elements 1000") != NULL, "%s", e.msg);
    free(b);
}
END_TEST

START_TEST(request_values)
{
    struct proto_limits lim = proto_limits_default();
    struct proto_error e;
    struct proto_request r;
    struct eng_info flow = info_of(ENG_KIND_FLOW), cinn = info_of(ENG_KIND_CINN);
    const char *b = "{\"x\":[0.5,-1,2e-3,3]}";
    ck_assert_int_eq(proto_request_parse(PROTO_OP_FORWARD, b, strlen(b), &flow, &lim, &r, &e),
                     PROTO_OK);
    ck_assert_int_eq(r.x.rows, 1);
    ck_assert_int_eq(r.x.cols, 4);
    ck_assert(r.x.data[0] == 0.5f && r.x.data[2] == 2e-3f);
    ck_assert_int_eq(r.y.rows, 0);
    proto_request_free(&r);
    b = "{}";
    ck_assert_int_eq(proto_request_parse(PROTO_OP_SAMPLE, b, 2, &flow, &lim, &r, &e), PROTO_OK);
    ck_assert_int_eq(r.num_samples, 1000);
    ck_assert(!r.seed_given);
    ck_assert(r.temperature == 1.0f);
    ck_assert_int_eq(r.outputs, PROTO_OUT_SAMPLES);
    ck_assert_int_eq(r.n_quantiles, 0);
    ck_assert_int_eq(r.solver.method, ENG_SOLVE_AUTO);
    ck_assert(r.solver.tol == 1e-6 && r.solver.max_iter == 200);
    proto_request_free(&r);
    b = "{\"y\":[[1,2],[3,4]],\"seed\":9007199254740991,\"outputs\":[\"summary\"]}";
    ck_assert_int_eq(proto_request_parse(PROTO_OP_SAMPLE, b, strlen(b), &cinn, &lim, &r, &e),
                     PROTO_OK);
    ck_assert(r.seed_given && r.seed == 9007199254740991ull);
    ck_assert_int_eq(r.outputs, PROTO_OUT_SUMMARY);
    ck_assert_int_eq(r.n_quantiles, 3);
    ck_assert(r.quantiles[0] == 0.05 && r.quantiles[2] == 0.95);
    ck_assert_int_eq(r.y.rows, 2);
    proto_request_free(&r);
    b = "{\"target\":[[1,2,3,4]],\"seed\":5}";
    ck_assert_int_eq(proto_request_parse(PROTO_OP_PREIMAGE, b, strlen(b), &flow, &lim, &r, &e),
                     PROTO_OK);
    ck_assert_int_eq(r.pre.num_solutions, 8);
    ck_assert_int_eq(r.pre.max_steps, 500);
    ck_assert_int_eq(r.pre.method, ENG_PREIMAGE_GRADIENT);
    ck_assert(r.seed == 5 && r.pre.low == NULL);
    proto_request_free(&r);
    /* limits are the configured ones */
    lim.max_elements = 7;
    b = "{\"x\":[[1,2,3,4],[1,2,3,4]]}";
    ck_assert_int_eq(proto_request_parse(PROTO_OP_FORWARD, b, strlen(b), &flow, &lim, &r, &e),
                     PROTO_E_TOO_LARGE);
    ck_assert_str_eq(e.msg, "x has 8 values, more than the limit of 7 per tensor "
                     "(--max-elements)");
    lim = proto_limits_default();
    lim.max_rows = 1;
    ck_assert_int_eq(proto_request_parse(PROTO_OP_FORWARD, b, strlen(b), &flow, &lim, &r, &e),
                     PROTO_E_TOO_LARGE);
    ck_assert_str_eq(e.msg, "x has more than 1 rows (the limit for this field)");
}
END_TEST

START_TEST(v2_requests)
{
    struct proto_limits lim = proto_limits_default();
    struct proto_error e;
    struct proto_request r;
    struct eng_info cinn = info_of(ENG_KIND_CINN);
    const char *b = "{\"id\":\"a\",\"inputs\":[{\"name\":\"x\",\"shape\":[2,4],\"datatype\":"
                    "\"FP32\",\"data\":[1,2,3,4,5,6,7,8]},{\"name\":\"y\",\"shape\":[2],"
                    "\"datatype\":\"FP64\",\"data\":[9,10]}],\"outputs\":[{\"name\":\"z\"}]}";
    ck_assert_int_eq(proto_v2_parse(b, strlen(b), &cinn, &lim, &r, &e), PROTO_OK);
    ck_assert_int_eq(r.op, PROTO_OP_FORWARD);
    ck_assert_int_eq(r.x.rows, 2);
    ck_assert(r.x.data[7] == 8.0f);
    ck_assert_int_eq(r.y.rows, 1);
    ck_assert(r.y.data[1] == 10.0f);
    ck_assert_str_eq(r.v2_id, "a");
    ck_assert_int_eq(r.v2_outputs, 1u);
    proto_request_free(&r);
    b = "{\"inputs\":[{\"name\":\"y\",\"shape\":[1,2],\"datatype\":\"FP32\",\"data\":[[1,2]]}],"
        "\"parameters\":{\"operation\":\"sample\",\"num_samples\":7,\"seed\":3}}";
    ck_assert_int_eq(proto_v2_parse(b, strlen(b), &cinn, &lim, &r, &e), PROTO_OK);
    ck_assert_int_eq(r.op, PROTO_OP_SAMPLE);
    ck_assert_int_eq(r.num_samples, 7);
    ck_assert(r.seed_given && r.seed == 3);
    ck_assert_int_eq(r.outputs, PROTO_OUT_SAMPLES | PROTO_OUT_LOG_PROB);
    proto_request_free(&r);
    b = "{\"inputs\":[{\"name\":\"x\",\"shape\":[2,4],\"datatype\":\"FP32\",\"data\":[1]}]}";
    ck_assert_int_eq(proto_v2_parse(b, strlen(b), &cinn, &lim, &r, &e), PROTO_E_SHAPE);
    ck_assert_str_eq(e.msg, "input 'x': data has 1 values, its shape [2, 4] needs 8");
    b = "{\"inputs\":[],\"parameters\":{\"num_samples\":3}}";
    ck_assert_int_eq(proto_v2_parse(b, strlen(b), &cinn, &lim, &r, &e), PROTO_E_UNKNOWN_FIELD);
    ck_assert_str_eq(e.msg, "parameters.num_samples is not used by operation forward");
    b = "{\"inputs\":[{\"name\":\"w\",\"shape\":[1],\"datatype\":\"FP32\",\"data\":[1]}]}";
    ck_assert_int_eq(proto_v2_parse(b, strlen(b), &cinn, &lim, &r, &e), PROTO_E_FIELD);
    ck_assert_str_eq(e.msg, "inputs[0].name \"w\" is not an input of this model (x, y or z, see "
                     "GET /v2/models/{m})");
}
END_TEST

/* ---- writers ------------------------------------------------------------------------------- */

/* The answer policy: CSV and NPY carry samples (NPY nothing else), answers that cannot fit
 * --max-response are refused before compute, and each format has its writer and type. */
START_TEST(answer_formats_are_checked_and_written)
{
    struct eng_info info = info_of(ENG_KIND_FLOW);
    static const char *const names[] = {"a", "b", "c", "d"};
    info.x_names = names;
    struct proto_limits lim = proto_limits_default();
    struct proto_request q;
    memset(&q, 0, sizeof q);
    q.op = PROTO_OP_SAMPLE;
    q.num_samples = 2;
    q.outputs = PROTO_OUT_SAMPLES | PROTO_OUT_LOG_PROB;
    struct proto_error e;
    ck_assert_int_eq(proto_answer_check(&lim, &info, &q, PROTO_FMT_CSV, false, &e), PROTO_OK);
    ck_assert_int_eq(proto_answer_check(&lim, &info, &q, PROTO_FMT_NPY, false, &e),
                     PROTO_E_FIELD);
    ck_assert_str_eq(e.msg, "outputs: application/x-npy carries only the samples; ask for "
                     "outputs [\"samples\"] or use JSON");
    ck_assert_int_eq(proto_answer_check(&lim, &info, &q, PROTO_FMT_NPY, true, &e), PROTO_OK);
    q.outputs = PROTO_OUT_SAMPLES | PROTO_OUT_SUMMARY;
    ck_assert_int_eq(proto_answer_check(&lim, &info, &q, PROTO_FMT_CSV, false, &e),
                     PROTO_E_FIELD);
    ck_assert_str_eq(e.msg, "outputs: text/csv carries samples and log_prob only; use JSON "
                     "for summary and resimulation");
    q.outputs = PROTO_OUT_SAMPLES;
    q.num_samples = 1000000;
    lim.max_response_bytes = 1024;
    ck_assert_int_eq(proto_answer_check(&lim, &info, &q, PROTO_FMT_JSON, false, &e),
                     PROTO_E_RESULT_TOO_LARGE);
    ck_assert_int_eq(proto_answer_check(&lim, &info, &q, PROTO_FMT_NPY, false, &e),
                     PROTO_E_RESULT_TOO_LARGE);
    float x[4] = {1, 2, 3, 4};
    struct proto_result r;
    memset(&r, 0, sizeof r);
    r.op = PROTO_OP_SAMPLE;
    r.n = 1;
    r.num_samples = 1;
    r.samples = x;
    r.outputs = PROTO_OUT_SAMPLES;
    struct proto_model_id id = {"m", "1", "0"};
    q.num_samples = 1;
    const struct {
        enum proto_format fmt;
        const char *ctype;
    } want[] = {{PROTO_FMT_CSV, "text/csv; charset=utf-8"}, {PROTO_FMT_NPY, "application/x-npy"},
                {PROTO_FMT_JSON, "application/json"}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        struct proto_buf b;
        proto_buf_init(&b, 0);
        ck_assert_str_eq(proto_answer_write(&b, &id, &info, &q, &r, want[i].fmt, false),
                         want[i].ctype);
        ck_assert(b.len > 0 && !proto_buf_failed(&b));
        proto_buf_free(&b);
    }
}
END_TEST

START_TEST(csv_and_npy_writers)
{
    struct eng_info info = info_of(ENG_KIND_FLOW);
    static const char *const names[] = {"a", "b,c", "say \"hi\"", "d"};
    info.x_names = names;
    float x[2 * 4] = {1, 2, 3, 4, 0.5f, -0.25f, 1e-7f, 3e20f};
    double lp[2] = {-1.5, -2.25};
    struct proto_result r;
    memset(&r, 0, sizeof r);
    r.op = PROTO_OP_SAMPLE;
    r.n = 1;
    r.num_samples = 2;
    r.samples = x;
    r.sample_lp = lp;
    r.outputs = PROTO_OUT_SAMPLES | PROTO_OUT_LOG_PROB;
    struct proto_buf b;
    proto_buf_init(&b, 0);
    proto_write_sample_csv(&b, &info, &r);
    char *s = proto_buf_take(&b, NULL);
    ck_assert_str_eq(s, "obs,sample,a,\"b,c\",\"say \"\"hi\"\"\",d,log_prob\n"
                        "0,0,1.0,2.0,3.0,4.0,-1.5\n"
                        "0,1,0.5,-0.25,1e-7,3e20,-2.25\n");
    free(s);
    r.outputs = PROTO_OUT_SAMPLES;
    proto_buf_init(&b, 0);
    proto_write_sample_csv(&b, &info, &r);
    s = proto_buf_take(&b, NULL);
    ck_assert_str_eq(s, "obs,sample,a,\"b,c\",\"say \"\"hi\"\"\",d\n0,0,1.0,2.0,3.0,4.0\n"
                        "0,1,0.5,-0.25,1e-7,3e20\n");
    free(s);
    /* npy */
    proto_buf_init(&b, 0);
    proto_write_npy_f32(&b, x, 1, 2, 4);
    ck_assert(!proto_buf_failed(&b));
    ck_assert_int_eq((int)b.len, 128 + 32);
    ck_assert_int_eq((int)proto_npy_size(1, 2, 4), 160);
    ck_assert(memcmp(b.p, "\x93NUMPY\x01\x00\x76\x00", 10) == 0);
    ck_assert(memcmp(b.p + 10, "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 4), }",
                     61) == 0);
    ck_assert(b.p[127] == '\n' && b.p[126] == ' ');
    ck_assert(memcmp(b.p + 128, x, 32) == 0);
    proto_buf_free(&b);
    /* a result over the cap fails as OVER */
    proto_buf_init(&b, 50);
    proto_write_sample_csv(&b, &info, &r);
    ck_assert_int_eq(b.state, PROTO_BUF_OVER);
    proto_buf_free(&b);
}
END_TEST

START_TEST(metadata_test_vectors)
{
    /* the test vectors are written as rows after the certificate, omitted when none */
    struct eng_info info = info_of(ENG_KIND_CINN);
    float ty[4] = {0.5f, -1.25f, 3.0f, 0.1f};
    float tx[8] = {1, 2, 3, 4, -0.5f, 0, 1e-3f, 7.75f};
    struct proto_model_id id = {"m", "2", "abc"};
    struct proto_buf b;
    proto_buf_init(&b, 0);
    proto_write_metadata(&b, &id, &info, NULL, 0.0);
    char *s = proto_buf_take(&b, NULL);
    ck_assert_ptr_null(strstr(s, "test_vectors"));
    free(s);
    info.n_test_vectors = 2;
    info.test_y = ty;
    info.test_x = tx;
    proto_write_metadata(&b, &id, &info, NULL, 0.0);
    s = proto_buf_take(&b, NULL);
    ck_assert_ptr_nonnull(strstr(s, ",\"test_vectors\":{\"y\":[[0.5,-1.25],[3.0,0.1]],"
                                    "\"x\":[[1.0,2.0,3.0,4.0],[-0.5,0.0,0.001,7.75]]},"
                                    "\"load_ms\":0.0}\n"));
    cJSON *j = cJSON_Parse(s);
    ck_assert_ptr_nonnull(j);
    cJSON_Delete(j);
    free(s);
}
END_TEST

START_TEST(json_result_writer)
{
    struct eng_info info = info_of(ENG_KIND_INN);
    float z[3] = {1, 2, 3}, y[2] = {0.5f, 0.25f};
    double ld[1] = {-0.125};
    struct proto_result r;
    memset(&r, 0, sizeof r);
    r.op = PROTO_OP_FORWARD;
    r.n = 1;
    r.z = z;
    r.y_out = y;
    r.log_det = ld;
    struct proto_model_id id = {"m", "2", "abc"};
    struct proto_buf b;
    proto_buf_init(&b, 0);
    proto_write_result_json(&b, &id, &info, &r);
    char *s = proto_buf_take(&b, NULL);
    ck_assert_str_eq(s, "{\"model\":\"m\",\"version\":\"2\",\"sha256\":\"abc\",\"z\":[[1.0,2.0,"
                        "3.0]],\"y\":[[0.5,0.25]],\"log_det\":[-0.125]}\n");
    free(s);
    struct proto_error e;
    proto_errorf(&e, PROTO_E_SHAPE, "x[0] has \"3\" values");
    size_t n;
    s = proto_error_json(&e, &n);
    ck_assert_str_eq(s, "{\"error\":\"x[0] has \\\"3\\\" values\",\"code\":\"bad_shape\"}\n");
    free(s);
    ck_assert_int_eq(proto_code_http(PROTO_E_SHAPE), 400);
    ck_assert_int_eq(proto_code_http(PROTO_E_UNSUPPORTED), 422);
    ck_assert_int_eq(proto_code_http(PROTO_E_OVERLOADED), 503);
    ck_assert_int_eq(proto_code_http(PROTO_E_DEADLINE), 504);
    ck_assert_int_eq(proto_code_http(PROTO_E_RESULT_TOO_LARGE), 413);
    ck_assert_int_eq(proto_error_from_eng(&e, ENG_ERR_UNSUPPORTED, "no"), PROTO_E_UNSUPPORTED);
    ck_assert_int_eq(proto_error_from_eng(&e, ENG_ERR_NONFINITE, "x"), PROTO_E_NONFINITE);
    ck_assert_int_eq(proto_error_from_eng(&e, ENG_ERR_IO, ""), PROTO_E_INTERNAL);
}
END_TEST

START_TEST(summary_statistics)
{
    /* one observation, 5 samples of 2 dims */
    float x[10] = {1, 10, 2, 20, 3, 30, 4, 40, 5, 50};
    double lp[5] = {-3, -1, -2, -5, -4};
    double q[3] = {0.0, 0.5, 0.9};
    struct proto_summary s;
    ck_assert(proto_summary_compute(&s, x, lp, 1, 5, 2, q, 3));
    ck_assert(s.mean[0] == 3.0f && s.mean[1] == 30.0f);
    ck_assert(fabsf(s.std[0] - sqrtf(2.0f)) < 1e-6f);
    ck_assert(s.quant[0] == 1.0f && s.quant[1] == 10.0f);  /* q = 0 */
    ck_assert(s.quant[2] == 3.0f && s.quant[3] == 30.0f);  /* median */
    ck_assert(fabsf(s.quant[4] - 4.6f) < 1e-6f);           /* 0.9: 4 + 0.6 */
    ck_assert_int_eq((int)s.map_index[0], 1);
    ck_assert(s.map[0] == 2.0f && s.map[1] == 20.0f);
    proto_summary_free(&s);
}
END_TEST

START_TEST(media_types)
{
    ck_assert_int_eq(proto_format_from_accept(NULL), PROTO_FMT_JSON);
    ck_assert_int_eq(proto_format_from_accept("text/csv"), PROTO_FMT_CSV);
    ck_assert_int_eq(proto_format_from_accept("application/x-npy"), PROTO_FMT_NPY);
    ck_assert_int_eq(proto_format_from_accept("text/html, TEXT/CSV;q=0.9"), PROTO_FMT_CSV);
    ck_assert_int_eq(proto_format_from_accept("application/json, text/csv"), PROTO_FMT_JSON);
    ck_assert_int_eq(proto_format_from_accept("*/*"), PROTO_FMT_JSON);
    ck_assert(proto_content_type_ok(NULL));
    ck_assert(proto_content_type_ok("application/json"));
    ck_assert(proto_content_type_ok("Application/JSON; charset=utf-8"));
    ck_assert(proto_content_type_ok("application/vnd.api+json"));
    ck_assert(!proto_content_type_ok("text/plain"));
    ck_assert(!proto_content_type_ok("application/x-www-form-urlencoded"));
}
END_TEST

/* ---- routes -------------------------------------------------------------------------------- */

START_TEST(route_matching)
{
    struct proto_match m;
    struct proto_error e;
    ck_assert_int_eq(proto_route_match("GET", "/healthz", &m, &e), PROTO_OK);
    ck_assert_int_eq(m.route->id, PROTO_R_HEALTHZ);
    ck_assert_int_eq(proto_route_match("HEAD", "/v1/models", &m, &e), PROTO_OK);
    ck_assert_int_eq(proto_route_match("POST", "/v1/models/a.b-c_1/sample", &m, &e), PROTO_OK);
    ck_assert_int_eq(m.route->id, PROTO_R_SAMPLE);
    ck_assert_str_eq(m.model, "a.b-c_1");
    ck_assert_int_eq(proto_route_match("POST", "/v2/models/m/versions/7/infer", &m, &e), PROTO_OK);
    ck_assert_str_eq(m.model, "m");
    ck_assert_str_eq(m.version, "7");
    ck_assert_int_eq(proto_route_match("GET", "/v1/models/m/sample", &m, &e), PROTO_E_METHOD);
    ck_assert_str_eq(m.allow, "POST");
    ck_assert_str_eq(e.msg, "method GET is not allowed on /v1/models/m/sample (allowed: POST)");
    ck_assert_int_eq(proto_route_match("PUT", "/metrics", &m, &e), PROTO_E_METHOD);
    ck_assert_str_eq(m.allow, "GET, HEAD");
    ck_assert_int_eq(proto_route_match("GET", "/v1/models/", &m, &e), PROTO_E_ROUTE);
    /* jobs: {j} captured; DELETE only where the table allows it */
    ck_assert_int_eq(proto_route_match("DELETE", "/v1/jobs/abc", &m, &e), PROTO_OK);
    ck_assert_int_eq(m.route->id, PROTO_R_JOB);
    ck_assert_str_eq(m.job, "abc");
    ck_assert_str_eq(m.model, "");
    ck_assert_int_eq(proto_route_match("GET", "/v1/jobs/abc/result", &m, &e), PROTO_OK);
    ck_assert_int_eq(m.route->id, PROTO_R_JOB_RESULT);
    ck_assert_str_eq(m.job, "abc");
    ck_assert_int_eq(proto_route_match("PUT", "/v1/jobs/abc", &m, &e), PROTO_E_METHOD);
    ck_assert_str_eq(m.allow, "GET, HEAD, DELETE");
    ck_assert_int_eq(proto_route_match("DELETE", "/v1/jobs", &m, &e), PROTO_E_METHOD);
    ck_assert_str_eq(m.allow, "GET, HEAD");
    ck_assert_int_eq(proto_route_match("DELETE", "/v1/models/m/sample", &m, &e), PROTO_E_METHOD);
    ck_assert_str_eq(m.allow, "POST");
    ck_assert_int_eq(proto_route_match("GET", "/v1/models//certificate", &m, &e), PROTO_E_ROUTE);
    ck_assert_int_eq(proto_route_match("GET", "/v1/models/a/b/certificate", &m, &e),
                     PROTO_E_ROUTE);
    ck_assert_str_eq(e.msg, "no such endpoint: GET /v1/models/a/b/certificate");
}
END_TEST

/* Reads "METHOD PATH" pairs from the paths: section of proto/openapi.yaml. */
static int openapi_routes(char out[][96], int cap)
{
    FILE *f = fopen("proto/openapi.yaml", "r");
    ck_assert_msg(f != NULL, "proto/openapi.yaml not found (run from the repository root)");
    char line[512], path[256] = "";
    int n = 0;
    bool in_paths = false;
    while (fgets(line, sizeof line, f)) {
        size_t l = strlen(line);
        while (l && (line[l - 1] == '\n' || line[l - 1] == '\r'))
            line[--l] = 0;
        if (!strcmp(line, "paths:")) {
            in_paths = true;
            continue;
        }
        if (!in_paths)
            continue;
        if (l && line[0] != ' ' && line[0] != '#')
            break;
        if (!strncmp(line, "  /", 3) && line[l - 1] == ':') {
            snprintf(path, sizeof path, "%.*s", (int)(l - 3), line + 2);
        } else if (!strncmp(line, "    get:", 8) || !strncmp(line, "    post:", 9) ||
                   !strncmp(line, "    delete:", 11)) {
            ck_assert(n < cap);
            snprintf(out[n++], 96, "%s %.80s",
                     line[4] == 'g' ? "GET" : line[4] == 'p' ? "POST" : "DELETE", path);
        }
    }
    fclose(f);
    return n;
}

/* A v1 POST route runs the operation its label names; every other route runs none (a V2
 * infer body names its own). */
START_TEST(routes_carry_their_operation)
{
    size_t nr;
    const struct proto_route *r = proto_routes(&nr);
    int ops = 0;
    for (size_t i = 0; i < nr; i++) {
        if (r[i].op == PROTO_OP_COUNT) {
            ck_assert_msg(proto_op_parse(r[i].operation) == PROTO_OP_COUNT ||
                          !(r[i].methods & PROTO_M_POST), "%s runs no operation", r[i].pattern);
            continue;
        }
        ops++;
        ck_assert(r[i].methods == PROTO_M_POST);
        ck_assert_str_eq(proto_op_str(r[i].op), r[i].operation);
    }
    ck_assert_int_eq(ops, PROTO_OP_COUNT);
}
END_TEST

START_TEST(openapi_matches_route_table)
{
    char spec[64][96];
    int ns = openapi_routes(spec, 64);
    size_t nr;
    const struct proto_route *r = proto_routes(&nr);
    char table[64][96];
    int nt = 0;
    for (size_t i = 0; i < nr; i++) {
        if (r[i].methods & PROTO_M_GET)
            snprintf(table[nt++], 96, "GET %.80s", r[i].pattern);
        if (r[i].methods & PROTO_M_POST)
            snprintf(table[nt++], 96, "POST %.80s", r[i].pattern);
        if (r[i].methods & PROTO_M_DELETE)
            snprintf(table[nt++], 96, "DELETE %.80s", r[i].pattern);
    }
    for (int i = 0; i < nt; i++) {
        bool found = false;
        for (int k = 0; k < ns; k++)
            found |= !strcmp(table[i], spec[k]);
        ck_assert_msg(found, "route '%s' is served but not in proto/openapi.yaml", table[i]);
    }
    for (int k = 0; k < ns; k++) {
        bool found = false;
        for (int i = 0; i < nt; i++)
            found |= !strcmp(table[i], spec[k]);
        ck_assert_msg(found, "'%s' is in proto/openapi.yaml but not served", spec[k]);
    }
    ck_assert_int_eq(ns, nt);
}
END_TEST

/* RFC 8259 strictness on top of the parser: only space, tab, LF and CR separate tokens,
 * numbers have no leading zeros and digits after '.', strings hold no raw control bytes,
 * no invalid UTF-8 and no \u0000; each refusal names the byte. */
START_TEST(json_strictness)
{
    static const struct {
        const char *body;
        size_t len; /* 0: strlen */
        const char *msg;
    } bad[] = {
        {"{\"x\":\0[1]}", 10, "the body is not valid JSON (byte 0x00 at byte 5: only space, tab, "
         "LF and CR may separate JSON tokens)"},
        {"{\"x\":\x01[1]}", 0, "the body is not valid JSON (byte 0x01 at byte 5: only space, tab, "
         "LF and CR may separate JSON tokens)"},
        {"\x0b{\"x\":[1]}", 0, "the body is not valid JSON (byte 0x0b at byte 0: only space, tab, "
         "LF and CR may separate JSON tokens)"},
        {"{\"x\":[1]\x0c}", 0, "the body is not valid JSON (byte 0x0c at byte 8: only space, tab, "
         "LF and CR may separate JSON tokens)"},
        {"{\"x\":[01]}", 0, "the body is not valid JSON (malformed number at byte 6: leading "
         "zeros are not allowed)"},
        {"{\"x\":[-01]}", 0, "the body is not valid JSON (malformed number at byte 6: leading "
         "zeros are not allowed)"},
        {"{\"x\":[00.5]}", 0, "the body is not valid JSON (malformed number at byte 6: leading "
         "zeros are not allowed)"},
        {"{\"x\":[1.]}", 0, "the body is not valid JSON (malformed number at byte 6: digits must "
         "follow '-', '.' and the exponent)"},
        {"{\"x\":[-.5]}", 0, "the body is not valid JSON (malformed number at byte 6: digits "
         "must follow '-', '.' and the exponent)"},
        {"{\"x\":[1],\"m\":\"a\tb\"}", 0, "the body is not valid JSON (unescaped control "
         "character 0x09 in a string at byte 15)"},
        {"{\"x\\u0000y\":[1]}", 0, "the body is not valid JSON (\\u0000 in a string at byte 3: "
         "strings may not contain NUL)"},
        {"{\"x\xff\":[1]}", 0, "the body is not valid JSON (invalid UTF-8 in a string at byte 3)"},
        {"{\"x\":\"\xc3\"}", 0, "the body is not valid JSON (invalid UTF-8 in a string at byte 6)"},
        {"{\"x\":\"\xc0\xaf\"}", 0, "the body is not valid JSON (invalid UTF-8 in a string at "
         "byte 6)"}, /* overlong '/' */
        {"{\"x\":\"\xed\xa0\x80\"}", 0, "the body is not valid JSON (invalid UTF-8 in a string "
         "at byte 6)"}, /* a UTF-16 surrogate */
        {"{\"x\":\"\xf4\x90\x80\x80\"}", 0, "the body is not valid JSON (invalid UTF-8 in a "
         "string at byte 6)"}, /* above U+10FFFF */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cJSON *root = NULL;
        struct proto_error e = {0};
        size_t len = bad[i].len ? bad[i].len : strlen(bad[i].body);
        enum proto_code rc = proto_json_parse(bad[i].body, len, 32, 1000, &root, &e);
        ck_assert_msg(rc == PROTO_E_JSON, "case %zu: %s", i, proto_code_str(rc));
        ck_assert_msg(!root, "case %zu: a tree was returned", i);
        ck_assert_msg(!strcmp(e.msg, bad[i].msg), "case %zu:\n  '%s'\nwant\n  '%s'", i, e.msg,
                      bad[i].msg);
    }
    static const char *const good[] = {
        " \t\r\n{\"x\":[0, -0, 0.5, -0.5e-3, 10, 1E+2, 0e0]} \n",
        "{\"n\":\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \\u00e9 \\ud83d\\ude00 \\\"\\\\\"}",
        "{\"a\":[],\"b\":{},\"c\":true,\"d\":false,\"e\":null}",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        cJSON *root = NULL;
        struct proto_error e = {0};
        enum proto_code rc = proto_json_parse(good[i], strlen(good[i]), 32, 1000, &root, &e);
        ck_assert_msg(rc == PROTO_OK && root, "good case %zu: %s", i, e.msg);
        cJSON_Delete(root);
    }
    /* through the request parser: the same refusal, not a silently different value */
    struct proto_limits lim = proto_limits_default();
    struct eng_info info = info_of(ENG_KIND_FLOW);
    struct proto_request r;
    struct proto_error e = {0};
    const char *body = "{\"x\":[[1,2,3,04]]}";
    ck_assert_int_eq(proto_request_parse(PROTO_OP_FORWARD, body, strlen(body), &info, &lim, &r,
                                         &e), PROTO_E_JSON);
    ck_assert_str_eq(e.msg, "the body is not valid JSON (malformed number at byte 13: leading "
                     "zeros are not allowed)");
}
END_TEST

/* Strings written into answers are valid JSON and UTF-8 whatever they hold: invalid bytes
 * become U+FFFD, valid multi-byte sequences pass, control bytes are escaped. */
START_TEST(json_writer_utf8)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"caf\xc3\xa9", "\"caf\xc3\xa9\""},
        {"\xf0\x9f\x98\x80!", "\"\xf0\x9f\x98\x80!\""},
        {"a\xff" "b", "\"a\xef\xbf\xbd" "b\""},
        {"\xc3", "\"\xef\xbf\xbd\""},                          /* cut sequence at the end */
        {"\xe2\x82", "\"\xef\xbf\xbd\xef\xbf\xbd\""},         /* two bytes of a 3-byte one */
        {"\xc0\xaf", "\"\xef\xbf\xbd\xef\xbf\xbd\""},         /* overlong */
        {"\xed\xa0\x80", "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\""}, /* surrogate */
        {"\x01\x7f\"", "\"\\u0001\x7f\\\"\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct proto_buf b;
        proto_buf_init(&b, 0);
        proto_buf_json_str(&b, cases[i].in);
        char *s = proto_buf_take(&b, NULL);
        ck_assert_msg(!strcmp(s, cases[i].out), "case %zu: got '%s'", i, s);
        cJSON *j = cJSON_Parse(s);
        ck_assert_msg(cJSON_IsString(j), "case %zu is not a JSON string", i);
        cJSON_Delete(j);
        free(s);
    }
    /* the error body of a message holding a client's invalid bytes */
    struct proto_error e;
    proto_errorf(&e, PROTO_E_MODEL, "model '%s' is not in the repository", "m\xfe\xff");
    char *s = proto_error_json(&e, NULL);
    ck_assert_str_eq(s, "{\"error\":\"model 'm\xef\xbf\xbd\xef\xbf\xbd' is not in the "
                     "repository\",\"code\":\"model_not_found\"}\n");
    free(s);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("proto");
    TCase *t = tcase_create("proto");
    tcase_set_timeout(t, 60);
    tcase_add_test(t, f32_edge_cases);
    tcase_add_test(t, f32_round_trip_random);
    tcase_add_test(t, f64_round_trip_random);
    tcase_add_test(t, printed_numbers_are_json);
    tcase_add_test(t, buffer_cap);
    tcase_add_test(t, request_table);
    tcase_add_test(t, async_field);
    tcase_add_test(t, json_strictness);
    tcase_add_test(t, json_writer_utf8);
    tcase_add_test(t, request_fuzz);
    tcase_add_test(t, request_values);
    tcase_add_test(t, value_count_bounds_parser_memory);
    tcase_add_test(t, v2_requests);
    tcase_add_test(t, csv_and_npy_writers);
    tcase_add_test(t, answer_formats_are_checked_and_written);
    tcase_add_test(t, json_result_writer);
    tcase_add_test(t, metadata_test_vectors);
    tcase_add_test(t, summary_statistics);
    tcase_add_test(t, media_types);
    tcase_add_test(t, route_matching);
    tcase_add_test(t, openapi_matches_route_table);
    tcase_add_test(t, routes_carry_their_operation);
    suite_add_tcase(s, t);
    return s;
}

TU_MAIN
