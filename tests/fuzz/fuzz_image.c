/*
 * fuzz_image.c — libFuzzer target: request bodies of image and signal models (x's rows
 * shaped [C, H, W] / [C, L]) through proto/, without the engine: the nested JSON reader and
 * the application/x-npy reader (proto_request_parse / proto_request_parse_npy), the query
 * options, the answer format (proto_answer_format, proto_answer_check) and every writer
 * of shaped answers (nested JSON, V2, CSV, NPY, the PNG grid) on results made from the
 * parsed inputs.
 *
 * Input: byte 0 chooses the model (bits 0-1: a gray flow [1, 3, 4] with an image range, an
 * RGB cinn [3, 2, 2] with y of 2, a signal flow [2, 5], a vector cinn of 4 with y of 2),
 * the operation (bits 2-3: forward, inverse, log_prob, sample), the body's type (bit 4:
 * application/x-npy, else JSON), the limits (bit 5: tight) and the query (bits 6-7: none;
 * solver options; sampling options with comma lists; format=png with scale, low, high).
 * The rest is the body.
 *
 * Besides crashes, leaks and undefined behaviour, the target aborts when an accepted
 * request holds a tensor of the wrong width or a non-finite value, when a refusal has no
 * message, when a JSON answer does not parse or its nested arrays do not have the model's
 * shape, when an .npy answer's size is not proto_npy_size_nd's, and when a PNG answer does
 * not decode (tests/unit/pngread.h) to the size proto_png_grid_dims gives.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../proto/answer.h"
#include "../../proto/image.h"
#include "../../proto/npy.h"
#include "../../proto/png.h"
#include "../../proto/request.h"
#include "../../proto/response.h"
#include "../../proto/v2.h"
#include "../unit/pngread.h"

static const char *const NAMES4[] = {"a", "b", "c", "d"};
static const char *const YN[] = {"p", "q"};

static struct eng_info model(int k)
{
    struct eng_info i;
    memset(&i, 0, sizeof i);
    i.description = "";
    i.blocks_json = "[]";
    i.x_names = NAMES4;
    i.y_names = YN;
    memset(i.sha256, 'a', 64);
    static const int SH[4][4] = {{3, 1, 3, 4}, {3, 3, 2, 2}, {2, 2, 5, 1}, {1, 4, 1, 1}};
    i.x_rank = i.z_rank = SH[k][0];
    int d = 1;
    for (int j = 0; j < 3; j++) {
        i.x_shape[j] = i.z_shape[j] = SH[k][1 + j];
        d *= SH[k][1 + j];
    }
    bool cinn = k == 1 || k == 3;
    i.kind = cinn ? ENG_KIND_CINN : ENG_KIND_FLOW;
    i.dims = (struct eng_dims){d, cinn ? 2 : 0, d, 0, 0};
    if (k == 0) {
        i.has_image = true;
        i.image_low = 0.0;
        i.image_high = 1.0;
        i.image_levels = 256;
    }
    return i;
}

static void check_matrix(const struct proto_matrix *m, int cols)
{
    if (!m->rows)
        return;
    if (m->cols != cols || !m->data) {
        fprintf(stderr, "fuzz_image: a tensor of width %d, want %d\n", m->cols, cols);
        abort();
    }
    for (long i = 0; i < (long)m->rows * m->cols; i++)
        if (!isfinite(m->data[i])) {
            fprintf(stderr, "fuzz_image: a non-finite value was accepted\n");
            abort();
        }
}

/* The nested array v has dims[0 .. rank) exactly. */
static bool has_dims(const cJSON *v, const long *dims, int rank)
{
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != dims[0])
        return false;
    for (const cJSON *c = v->child; c; c = c->next)
        if (rank > 1 ? !has_dims(c, dims + 1, rank - 1) : !(cJSON_IsNumber(c) || cJSON_IsNull(c)))
            return false;
    return true;
}

static cJSON *parse_answer(const struct proto_buf *b)
{
    cJSON *j = cJSON_ParseWithLength(b->p, b->len);
    if (!j) {
        fprintf(stderr, "fuzz_image: the answer is not JSON: %.*s\n", (int)b->len, b->p);
        abort();
    }
    return j;
}

static void expect(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_image: %s\n", what);
        abort();
    }
}

/* Writes the answer of the accepted request q in format fmt from results made of its
 * inputs, and checks it. */
static void answer(const struct eng_info *info, struct proto_request *q, enum proto_format fmt,
                   const struct proto_limits *lim)
{
    struct proto_error e;
    if (proto_answer_check(lim, info, q, fmt, false, &e) != PROTO_OK)
        return;
    struct proto_result r;
    memset(&r, 0, sizeof r);
    r.op = q->op;
    struct proto_shape xs = proto_shape_x(info);
    long D = info->dims.x;
    float *buf = NULL;
    double *lp = NULL;
    switch (q->op) {
    case PROTO_OP_FORWARD:
        r.n = q->x.rows;
        r.z = q->x.data;
        lp = calloc((size_t)r.n, sizeof(double));
        r.log_det = lp;
        break;
    case PROTO_OP_INVERSE:
        r.n = q->z.rows;
        r.x = q->z.data;
        lp = calloc((size_t)r.n, sizeof(double));
        r.log_det = lp;
        break;
    case PROTO_OP_LOG_PROB:
        r.n = q->x.rows;
        lp = malloc(sizeof(double) * (size_t)r.n);
        for (int i = 0; lp && i < r.n; i++)
            lp[i] = i % 3 == 2 ? -INFINITY : -(double)q->x.data[(size_t)i * D];
        r.log_prob = lp;
        break;
    case PROTO_OP_SAMPLE: {
        r.n = info->kind == ENG_KIND_FLOW ? 1 : q->y.rows;
        r.num_samples = q->num_samples < 3 ? q->num_samples : 3;
        q->num_samples = r.num_samples;
        r.outputs = q->outputs & (PROTO_OUT_SAMPLES | PROTO_OUT_LOG_PROB);
        r.temperature = 1.0f;
        size_t n = (size_t)r.n * (size_t)r.num_samples;
        buf = malloc(sizeof(float) * n * (size_t)D);
        lp = calloc(n ? n : 1, sizeof(double));
        for (size_t i = 0; buf && i < n * (size_t)D; i++)
            buf[i] = (float)((double)(i % 37) / 18.0 - 1.0);
        r.samples = buf;
        r.sample_lp = lp;
        /* the check ran with the request's count; redo it for the smaller one */
        if (proto_answer_check(lim, info, q, fmt, false, &e) != PROTO_OK) {
            free(buf);
            free(lp);
            return;
        }
        break;
    }
    default:
        return;
    }
    if (!lp || (q->op == PROTO_OP_SAMPLE && !buf)) {
        free(buf);
        free(lp);
        return;
    }
    struct proto_model_id id = {"m", "1", "abc"};
    struct proto_buf b;
    proto_buf_init(&b, 0);
    proto_answer_write(&b, &id, info, q, &r, fmt, false);
    expect(!proto_buf_failed(&b), "a writer failed without a cap");
    if (fmt == PROTO_FMT_JSON) {
        cJSON *j = parse_answer(&b);
        long dims[5] = {r.n, r.num_samples};
        int k = q->op == PROTO_OP_SAMPLE ? 2 : 1;
        for (int i = 0; i < xs.rank; i++)
            dims[k + i] = xs.dim[i];
        if (q->op != PROTO_OP_SAMPLE)
            dims[0] = r.n;
        const char *f = q->op == PROTO_OP_FORWARD ? "z" : q->op == PROTO_OP_INVERSE ? "x"
                        : q->op == PROTO_OP_SAMPLE ? "samples" : NULL;
        if (f && (q->op != PROTO_OP_SAMPLE || (r.outputs & PROTO_OUT_SAMPLES)))
            expect(has_dims(cJSON_GetObjectItem(j, f), dims, k + xs.rank),
                   "a JSON answer without the model's shape");
        cJSON_Delete(j);
        /* and the V2 answer */
        proto_buf_free(&b);
        proto_buf_init(&b, 0);
        proto_v2_write_result(&b, &id, info, q, &r);
        cJSON_Delete(parse_answer(&b));
    } else if (fmt == PROTO_FMT_NPY) {
        long shape[5] = {r.n, r.num_samples};
        for (int i = 0; i < xs.rank; i++)
            shape[2 + i] = xs.dim[i];
        expect(b.len == proto_npy_size_nd(2 + xs.rank, shape), "an .npy of the wrong size");
    } else if (fmt == PROTO_FMT_PNG) {
        long w, h, gw, gh;
        int ch;
        char why[256];
        uint8_t *px = pr_read((const uint8_t *)b.p, b.len, &w, &h, &ch, why);
        if (!px) {
            fprintf(stderr, "fuzz_image: the PNG does not decode: %s\n", why);
            abort();
        }
        proto_png_grid_dims(r.n, r.num_samples, info->x_shape[1], info->x_shape[2],
                            q->png.scale, &gw, &gh);
        expect(w == gw && h == gh && ch == info->x_shape[0], "a PNG of the wrong size");
        free(px);
    }
    proto_buf_free(&b);
    free(buf);
    free(lp);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned sel = data[0];
    struct eng_info info = model(sel & 3);
    static const enum proto_op OPS[4] = {PROTO_OP_FORWARD, PROTO_OP_INVERSE, PROTO_OP_LOG_PROB,
                                         PROTO_OP_SAMPLE};
    enum proto_op op = OPS[(sel >> 2) & 3];
    bool npy = sel & 0x10;
    struct proto_limits lim = proto_limits_default();
    if (sel & 0x20) {
        lim.max_elements = 40;
        lim.max_rows = 3;
        lim.max_obs = 2;
        lim.max_samples = 8;
        lim.max_json_depth = 6;
        lim.max_response_bytes = 2048;
    }
    static const struct proto_query Q[4] = {
        {0, {NULL}, {NULL}},
        {3, {"tol", "max_iter", "method"}, {"1e-5", "20", "anderson"}},
        {4, {"num_samples", "seed", "outputs", "quantiles"}, {"2", "7", "samples,log_prob", "0.1,0.9"}},
        {4, {"format", "scale", "low", "high"}, {"png", "3", "-1", "1"}},
    };
    const struct proto_query *q = &Q[sel >> 6];
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    struct proto_request r;
    struct proto_error e;
    memset(&r, 0x5a, sizeof r); /* the parser must not rely on a zeroed *out */
    enum proto_code rc = npy ? proto_request_parse_npy(op, body, len, q, &info, &lim, &r, &e)
                             : proto_request_parse(op, body, len, &info, &lim, &r, &e);
    if (rc != PROTO_OK) {
        expect(e.code == rc && e.msg[0] && proto_code_http(rc) >= 400,
               "a refusal without a message or code");
        size_t n;
        char *j = proto_error_json(&e, &n);
        if (j) {
            cJSON *p = cJSON_ParseWithLength(j, n);
            expect(p != NULL, "an error body that is not JSON");
            cJSON_Delete(p);
            free(j);
        }
        return 0;
    }
    check_matrix(&r.x, info.dims.x);
    check_matrix(&r.z, info.dims.z);
    check_matrix(&r.y, info.dims.y);
    enum proto_format fmt;
    if (proto_answer_format(q, (sel & 0x40) ? "text/csv" : NULL, &info, &r, &fmt, &e) ==
        PROTO_OK)
        answer(&info, &r, fmt, &lim);
    proto_request_free(&r);
    return 0;
}
