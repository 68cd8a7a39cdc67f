/*
 * test_proto_image.c — proto/ for image and signal models (x's rows shaped [C, H, W] or
 * [C, L]): nested requests and their messages, nested answers in JSON and V2, CSV column
 * names, NPY shapes, bits per dimension, the answer format options (format, scale, low,
 * high) and the PNG grid, decoded by an independent reader (pngread.h) and compared pixel
 * by pixel with the samples.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../proto/answer.h"
#include "../../proto/csv.h"
#include "../../proto/image.h"
#include "../../proto/npy.h"
#include "../../proto/png.h"
#include "../../proto/request.h"
#include "../../proto/response.h"
#include "../../proto/v2.h"
#include "pngread.h"
#include "testutil.h"

/* A flow whose rows are [C, H, W] (or [C, L] when W == 0) images; z of the same shape. */
static struct eng_info image_info(int C, int H, int W)
{
    struct eng_info i;
    memset(&i, 0, sizeof i);
    i.kind = ENG_KIND_FLOW;
    int d = C * H * (W ? W : 1);
    i.dims = (struct eng_dims){d, 0, d, 0, 0};
    i.description = "";
    i.blocks_json = "[]";
    i.x_rank = i.z_rank = W ? 3 : 2;
    i.x_shape[0] = i.z_shape[0] = C;
    i.x_shape[1] = i.z_shape[1] = H;
    i.x_shape[2] = i.z_shape[2] = W ? W : 1;
    memset(i.sha256, 'a', 64);
    return i;
}

static char *take(struct proto_buf *b)
{
    ck_assert(!proto_buf_failed(b));
    return proto_buf_take(b, NULL);
}

struct icase {
    enum proto_op op;
    const char *body;
    enum proto_code code;
    const char *msg; /* exact message (NULL: success) */
};

/* x [2, 2, 3] (12 values a row) */
static const struct icase CASES[] = {
    {PROTO_OP_FORWARD, "{\"x\":[[[[1,2,3],[4,5,6]],[[7,8,9],[10,11,12]]]]}", PROTO_OK, NULL},
    {PROTO_OP_FORWARD, "{\"x\":[[1,2,3,4,5,6,7,8,9,10,11,12]]}", PROTO_OK, NULL},
    {PROTO_OP_FORWARD, "{\"x\":[1,2,3,4,5,6,7,8,9,10,11,12]}", PROTO_OK, NULL},
    {PROTO_OP_INVERSE, "{\"z\":[[[[1,2,3],[4,5,6]],[[7,8,9],[10,11,12]]],"
     "[[[1,2,3],[4,5,6]],[[7,8,9],[10,11,12]]]]}", PROTO_OK, NULL},
    {PROTO_OP_LOG_PROB, "{\"x\":[[[[1,2,3],[4,5,6]],[[7,8,9],[10,11,12]]]]}", PROTO_OK, NULL},
    {PROTO_OP_FORWARD, "{\"x\":[[[[1,2,3],[4,5,6]],[[7,8,9],[10,\"a\",12]]]]}", PROTO_E_FIELD,
     "x[0][1][1][1] must be a number, got the string \"a\" (NaN and Infinity are not "
     "accepted)"},
    {PROTO_OP_FORWARD, "{\"x\":[[[[1,2,3],[4,5,6]],[[7,8,9],[10,11,12]]],"
     "[[[1,2,3],[4,5,6]],[[7,8,9],[10,11,1e39]]]]}", PROTO_E_NONFINITE,
     "x[1][1][1][2] = 1e+39 is outside the float32 range (|v| <= 3.4028235e38)"},
    {PROTO_OP_FORWARD, "{\"x\":[[[[1,2,3],[4,5]],[[7,8,9],[10,11,12]]]]}", PROTO_E_SHAPE,
     "x[0][0][1] has 2 values, expected 3 (the model's shape.x [2, 2, 3])"},
    {PROTO_OP_FORWARD, "{\"x\":[[[[1,2,3],[4,5,6]]]]}", PROTO_E_SHAPE,
     "x[0] has 1 values, expected 2 (the model's shape.x [2, 2, 3])"},
    {PROTO_OP_FORWARD, "{\"x\":[[[[1,2,3],[4,5,6]],[7,8]]]}", PROTO_E_FIELD,
     "x[0][1][0] must be an array of 3 numbers (the model's shape.x [2, 2, 3]), got a number"},
    /* nested 3 deep: neither [B, C, H, W] nor rows of values */
    {PROTO_OP_FORWARD, "{\"x\":[[[1,2,3,4,5,6],[7,8,9,10,11,12]]]}", PROTO_E_SHAPE,
     "x[0][0] has 6 values, expected 2 (the model's shape.x [2, 2, 3])"},
    {PROTO_OP_FORWARD, "{\"x\":[[1,2,3]]}", PROTO_E_SHAPE,
     "x[0] has 3 values, expected 12 (the model's dims.x)"},
    {PROTO_OP_PREIMAGE, "{\"target\":[[[[1,2,3],[4,5,6]],[[7,8,9],[10,null,12]]]]}",
     PROTO_E_FIELD, "target[0][1][1][1] must be a number, got null"},
};

START_TEST(nested_requests)
{
    struct proto_limits lim = proto_limits_default();
    struct eng_info info = image_info(2, 2, 3);
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        const struct icase *c = &CASES[i];
        struct proto_request r;
        struct proto_error e = {0};
        enum proto_code rc = proto_request_parse(c->op, c->body, strlen(c->body), &info, &lim,
                                                 &r, &e);
        ck_assert_msg(rc == c->code, "case %zu: code %s, want %s (%s)", i, proto_code_str(rc),
                      proto_code_str(c->code), e.msg);
        if (c->msg)
            ck_assert_msg(strcmp(e.msg, c->msg) == 0, "case %zu: message\n  '%s'\nwant\n  '%s'",
                          i, e.msg, c->msg);
        if (rc != PROTO_OK)
            continue;
        /* every accepted form gives the same row-major rows */
        const struct proto_matrix *m = c->op == PROTO_OP_INVERSE ? &r.z : &r.x;
        ck_assert_int_eq(m->cols, 12);
        for (int k = 0; k < m->rows * 12; k++)
            ck_assert(m->data[k] == (float)(k % 12 + 1));
        proto_request_free(&r);
    }
    /* the nested form counts against the limits before anything is allocated */
    lim.max_elements = 20;
    const char *two = "{\"x\":[[[[1,2,3],[4,5,6]],[[7,8,9],[10,11,12]]],"
                      "[[[1,2,3],[4,5,6]],[[7,8,9],[10,11,12]]]]}";
    struct proto_request r;
    struct proto_error e;
    ck_assert_int_eq(proto_request_parse(PROTO_OP_FORWARD, two, strlen(two), &info, &lim, &r, &e),
                     PROTO_E_TOO_LARGE);
    ck_assert_str_eq(e.msg, "x has 24 values, more than the limit of 20 per tensor "
                     "(--max-elements)");
    lim = proto_limits_default();
    lim.max_rows = 1;
    ck_assert_int_eq(proto_request_parse(PROTO_OP_FORWARD, two, strlen(two), &info, &lim, &r, &e),
                     PROTO_E_TOO_LARGE);
    /* a signal [C, L]: nested 3 deep is [B, C, L]; 2 deep stays rows of values */
    struct eng_info sig = image_info(2, 3, 0);
    lim = proto_limits_default();
    const char *b3 = "{\"x\":[[[1,2,3],[4,5,6]]]}", *b2 = "{\"x\":[[1,2,3,4,5,6]]}";
    ck_assert_int_eq(proto_request_parse(PROTO_OP_FORWARD, b3, strlen(b3), &sig, &lim, &r, &e),
                     PROTO_OK);
    ck_assert(r.x.rows == 1 && r.x.cols == 6 && r.x.data[5] == 6.0f);
    proto_request_free(&r);
    ck_assert_int_eq(proto_request_parse(PROTO_OP_FORWARD, b2, strlen(b2), &sig, &lim, &r, &e),
                     PROTO_OK);
    ck_assert(r.x.rows == 1 && r.x.cols == 6 && r.x.data[5] == 6.0f);
    proto_request_free(&r);
    b3 = "{\"x\":[[[1,2,3],[4,5,6,7]]]}";
    ck_assert_int_eq(proto_request_parse(PROTO_OP_FORWARD, b3, strlen(b3), &sig, &lim, &r, &e),
                     PROTO_E_SHAPE);
    ck_assert_str_eq(e.msg, "x[0][1] has 4 values, expected 3 (the model's shape.x [2, 3])");
}
END_TEST

START_TEST(nested_answers)
{
    struct eng_info info = image_info(2, 1, 2);
    struct proto_model_id id = {"m", "1", "abc"};
    float v[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    double ld[2] = {0.5, -0.5};
    struct proto_result r;
    memset(&r, 0, sizeof r);
    r.op = PROTO_OP_FORWARD;
    r.n = 2;
    r.z = v;
    r.log_det = ld;
    struct proto_buf b;
    proto_buf_init(&b, 0);
    proto_write_result_json(&b, &id, &info, &r);
    char *s = take(&b);
    ck_assert_str_eq(s, "{\"model\":\"m\",\"version\":\"1\",\"sha256\":\"abc\",\"z\":[[[[1.0,2.0]],"
                        "[[3.0,4.0]]],[[[5.0,6.0]],[[7.0,8.0]]]],\"log_det\":[0.5,-0.5]}\n");
    free(s);
    r.op = PROTO_OP_INVERSE;
    r.z = NULL;
    r.x = v;
    proto_write_result_json(&b, &id, &info, &r);
    s = take(&b);
    ck_assert_ptr_nonnull(strstr(s, "\"x\":[[[[1.0,2.0]],[[3.0,4.0]]],[[[5.0,6.0]],[[7.0,8.0]]]]"));
    free(s);
    /* samples: [n_obs][num_samples][C][H][W] and the echoed shape */
    memset(&r, 0, sizeof r);
    r.op = PROTO_OP_SAMPLE;
    r.n = 1;
    r.num_samples = 2;
    r.samples = v;
    r.outputs = PROTO_OUT_SAMPLES;
    r.temperature = 1.0f;
    proto_write_result_json(&b, &id, &info, &r);
    s = take(&b);
    ck_assert_ptr_nonnull(strstr(s, ",\"shape\":[1,2,2,1,2],\"samples\":[[[[[1.0,2.0]],[[3.0,4.0]]],"
                                    "[[[5.0,6.0]],[[7.0,8.0]]]]]}"));
    cJSON *j = cJSON_Parse(s);
    ck_assert_ptr_nonnull(j);
    cJSON_Delete(j);
    free(s);
    /* the V2 answer of the same samples carries the shape too */
    struct proto_request q;
    memset(&q, 0, sizeof q);
    q.op = PROTO_OP_SAMPLE;
    proto_v2_write_result(&b, &id, &info, &q, &r);
    s = take(&b);
    ck_assert_ptr_nonnull(strstr(s, "{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[1,2,2,1,2],"
                                    "\"data\":[1.0,2.0,3.0,4.0,5.0,6.0,7.0,8.0]}"));
    free(s);
    /* metadata: the row shapes */
    proto_write_metadata(&b, &id, &info, NULL, 0.0);
    s = take(&b);
    ck_assert_ptr_nonnull(strstr(s, ",\"shape\":{\"x\":[2,1,2],\"z\":[2,1,2]}"));
    ck_assert_ptr_null(strstr(s, "\"image\""));
    free(s);
    /* a z shape that does not hold dims.z values (a latent of several outputs) is a vector */
    struct eng_info multi = info;
    multi.z_shape[0] = 1;
    struct proto_shape zs = proto_shape_z(&multi);
    ck_assert(zs.rank == 1 && zs.dim[0] == 4);
    ck_assert_int_eq(proto_shape_x(&multi).rank, 3);
    proto_v2_write_metadata(&b, &id, &info);
    s = take(&b);
    ck_assert_ptr_nonnull(strstr(s, "\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":"
                                    "[-1,2,1,2]}],\"outputs\":[{\"name\":\"z\",\"datatype\":"
                                    "\"FP32\",\"shape\":[-1,2,1,2]}"));
    free(s);
}
END_TEST

START_TEST(bits_per_dim)
{
    struct eng_info info = image_info(1, 2, 2); /* D = 4 */
    ck_assert(proto_has_bits_per_dim(&info));
    /* no image range: Delta = 1, bpd = -lp / (D ln 2) */
    ck_assert_double_eq_tol(proto_bits_per_dim(&info, -4.0 * M_LN2), 1.0, 1e-15);
    info.has_image = true;
    info.image_low = 0.0;
    info.image_high = 1.0;
    info.image_levels = 256;
    ck_assert_double_eq_tol(proto_bin_width(&info), 1.0 / 256, 1e-18);
    /* the uniform density on [0, 1]^4 (lp = 0) is 8 bits per dimension at 256 levels */
    ck_assert_double_eq_tol(proto_bits_per_dim(&info, 0.0), 8.0, 1e-12);
    ck_assert(isinf(proto_bits_per_dim(&info, -INFINITY)));
    double lp[2] = {0.0, -INFINITY};
    struct proto_result r;
    memset(&r, 0, sizeof r);
    r.op = PROTO_OP_LOG_PROB;
    r.n = 2;
    r.log_prob = lp;
    struct proto_model_id id = {"m", "1", "abc"};
    struct proto_buf b;
    proto_buf_init(&b, 0);
    proto_write_result_json(&b, &id, &info, &r);
    char *s = take(&b);
    ck_assert_ptr_nonnull(strstr(s, "\"log_prob\":[0.0,null],\"bits_per_dim\":[8.0,null]}"));
    free(s);
    /* V2 names it as an output of log_prob */
    struct proto_request q;
    memset(&q, 0, sizeof q);
    q.op = PROTO_OP_LOG_PROB;
    proto_v2_write_result(&b, &id, &info, &q, &r);
    s = take(&b);
    ck_assert_ptr_nonnull(strstr(s, "{\"name\":\"bits_per_dim\",\"datatype\":\"FP64\",\"shape\":"
                                    "[2],\"data\":[8.0,null]}"));
    free(s);
    /* metadata reports the range */
    proto_write_metadata(&b, &id, &info, NULL, 0.0);
    s = take(&b);
    ck_assert_ptr_nonnull(strstr(s, ",\"image\":{\"low\":0.0,\"high\":1.0,\"levels\":256,"
                                    "\"bin_width\":0.00390625}"));
    free(s);
    /* a vector model has none */
    struct eng_info vec = image_info(4, 1, 0);
    vec.x_rank = vec.z_rank = 1;
    vec.x_shape[0] = vec.z_shape[0] = 4;
    ck_assert(!proto_has_bits_per_dim(&vec));
    proto_write_result_json(&b, &id, &vec, &r);
    s = take(&b);
    ck_assert_ptr_null(strstr(s, "bits_per_dim"));
    free(s);
}
END_TEST

START_TEST(csv_and_npy_shapes)
{
    struct eng_info info = image_info(2, 1, 2);
    float v[4] = {1, 2, 3, 4};
    struct proto_result r;
    memset(&r, 0, sizeof r);
    r.op = PROTO_OP_SAMPLE;
    r.n = 1;
    r.num_samples = 1;
    r.samples = v;
    r.outputs = PROTO_OUT_SAMPLES;
    struct proto_buf b;
    proto_buf_init(&b, 0);
    proto_write_sample_csv(&b, &info, &r);
    char *s = take(&b);
    ck_assert_str_eq(s, "obs,sample,c0_h0_w0,c0_h0_w1,c1_h0_w0,c1_h0_w1\n0,0,1.0,2.0,3.0,4.0\n");
    free(s);
    struct eng_info sig = image_info(2, 2, 0);
    proto_write_sample_csv(&b, &sig, &r);
    s = take(&b);
    ck_assert_str_eq(s, "obs,sample,c0_l0,c0_l1,c1_l0,c1_l1\n0,0,1.0,2.0,3.0,4.0\n");
    free(s);
    /* NPY: (n_obs, num_samples, C, H, W) */
    struct proto_request q;
    memset(&q, 0, sizeof q);
    q.op = PROTO_OP_SAMPLE;
    q.num_samples = 1;
    q.outputs = PROTO_OUT_SAMPLES;
    struct proto_model_id id = {"m", "1", "abc"};
    ck_assert_str_eq(proto_answer_write(&b, &id, &info, &q, &r, PROTO_FMT_NPY, false),
                     "application/x-npy");
    size_t n;
    s = proto_buf_take(&b, &n);
    ck_assert(memcmp(s + 10, "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 2, 1, "
                     "2), }", 67) == 0);
    ck_assert_int_eq((int)n, 128 + 16);
    long sh[5] = {1, 1, 2, 1, 2};
    ck_assert_int_eq((int)proto_npy_size_nd(5, sh), 144);
    ck_assert(memcmp(s + 128, v, 16) == 0);
    free(s);
    /* a 1-d array is written (n,) as numpy does */
    long one[1] = {3};
    proto_write_npy_nd(&b, v, 1, one);
    s = proto_buf_take(&b, NULL);
    ck_assert(memcmp(s + 10, "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", 57) ==
              0);
    free(s);
}
END_TEST

/* format and its options from the query and Accept. */
START_TEST(answer_format_options)
{
    struct eng_info info = image_info(1, 2, 2);
    struct proto_request q;
    memset(&q, 0, sizeof q);
    q.op = PROTO_OP_SAMPLE;
    q.num_samples = 3;
    q.outputs = PROTO_OUT_SAMPLES;
    struct proto_query qp = {0};
    enum proto_format f;
    struct proto_error e;
    ck_assert_int_eq(proto_answer_format(&qp, "image/png", &info, &q, &f, &e), PROTO_OK);
    ck_assert_int_eq(f, PROTO_FMT_PNG);
    ck_assert(q.png.scale == 1 && q.png.low == 0.0 && q.png.high == 1.0);
    qp = (struct proto_query){3, {"format", "scale", "low"}, {"png", "4", "-1"}};
    ck_assert_int_eq(proto_answer_format(&qp, "text/csv", &info, &q, &f, &e), PROTO_OK);
    ck_assert_int_eq(f, PROTO_FMT_PNG);
    ck_assert(q.png.scale == 4 && q.png.low == -1.0 && q.png.high == 1.0);
    info.has_image = true;
    info.image_low = -0.5;
    info.image_high = 0.5;
    info.image_levels = 256;
    qp = (struct proto_query){1, {"format"}, {"png"}};
    ck_assert_int_eq(proto_answer_format(&qp, NULL, &info, &q, &f, &e), PROTO_OK);
    ck_assert(q.png.low == -0.5 && q.png.high == 0.5);
    qp = (struct proto_query){1, {"format"}, {"csv"}};
    ck_assert_int_eq(proto_answer_format(&qp, "application/x-npy", &info, &q, &f, &e), PROTO_OK);
    ck_assert_int_eq(f, PROTO_FMT_CSV);
    static const struct {
        int n;
        const char *k[2], *v[2];
        enum proto_op op;
        const char *msg;
    } BAD[] = {
        {1, {"format"}, {"gif"}, PROTO_OP_SAMPLE,
         "query parameter format must be one of json, csv, npy, png; got \"gif\""},
        {2, {"format", "scale"}, {"png", "0"}, PROTO_OP_SAMPLE,
         "query parameter scale must be an integer from 1 to 16, got \"0\""},
        {2, {"format", "scale"}, {"png", "2x"}, PROTO_OP_SAMPLE,
         "query parameter scale must be an integer from 1 to 16, got \"2x\""},
        {2, {"format", "high"}, {"png", "nan"}, PROTO_OP_SAMPLE,
         "query parameter high must be a finite number, got \"nan\""},
        {2, {"format", "high"}, {"png", "-0.5"}, PROTO_OP_SAMPLE,
         "the png value range needs low < high, got low -0.5, high -0.5"},
        {1, {"scale"}, {"2"}, PROTO_OP_SAMPLE, "query parameter scale only applies with format=png"},
        {1, {"format"}, {"png"}, PROTO_OP_FORWARD, "format=png is only for sample answers; "
         "forward answers JSON"},
    };
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        struct proto_query b = {BAD[i].n, {BAD[i].k[0], BAD[i].k[1]}, {BAD[i].v[0], BAD[i].v[1]}};
        q.op = BAD[i].op;
        ck_assert_int_eq(proto_answer_format(&b, NULL, &info, &q, &f, &e), PROTO_E_FIELD);
        ck_assert_str_eq(e.msg, BAD[i].msg);
    }
    /* forward keeps JSON whatever Accept says */
    qp = (struct proto_query){0};
    q.op = PROTO_OP_FORWARD;
    ck_assert_int_eq(proto_answer_format(&qp, "image/png", &info, &q, &f, &e), PROTO_OK);
    ck_assert_int_eq(f, PROTO_FMT_JSON);
}
END_TEST

/* The PNG grid decodes (CRCs, zlib, Adler-32 checked independently) to the samples mapped
 * to 0..255, with the gaps, scaled; and the answer check refuses what cannot be drawn. */
static void check_grid(int C, int H, int W, int n_obs, int N, int scale, double low,
                       double high)
{
    struct eng_info info = image_info(C, H, W);
    long D = (long)C * H * W, tot = (long)n_obs * N * D;
    float *v = malloc(sizeof(float) * (size_t)tot);
    tu_randn(v, (int)tot, 0.6f, 77 + (uint64_t)C);
    v[0] = NAN; /* maps to 0 */
    struct proto_result r;
    memset(&r, 0, sizeof r);
    r.op = PROTO_OP_SAMPLE;
    r.n = n_obs;
    r.num_samples = N;
    r.samples = v;
    struct proto_png_opts o = {low, high, scale};
    struct proto_buf b;
    proto_buf_init(&b, 0);
    proto_write_png_grid(&b, &info, &r, &o);
    ck_assert(!proto_buf_failed(&b));
    long gw, gh;
    proto_png_grid_dims(n_obs, N, H, W, scale, &gw, &gh);
    ck_assert_int_eq((int)b.len, (int)proto_png_size(gw, gh, C));
    long w, h;
    int ch;
    char why[256] = "";
    uint8_t *px = pr_read((const uint8_t *)b.p, b.len, &w, &h, &ch, why);
    ck_assert_msg(px != NULL, "%s", why);
    ck_assert_int_eq(w, N * W * scale + (N - 1) * PROTO_PNG_GAP);
    ck_assert_int_eq(h, n_obs * H * scale + (n_obs - 1) * PROTO_PNG_GAP);
    ck_assert_int_eq(ch, C);
    for (long y = 0; y < h; y++) {
        for (long x = 0; x < w; x++) {
            long o_ = y / (H * scale + PROTO_PNG_GAP), ty = y % (H * scale + PROTO_PNG_GAP);
            long s_ = x / (W * scale + PROTO_PNG_GAP), tx = x % (W * scale + PROTO_PNG_GAP);
            for (int c = 0; c < C; c++) {
                int want = PROTO_PNG_GAP_VALUE;
                if (ty < H * scale && tx < W * scale) {
                    float val = v[((size_t)o_ * N + s_) * D + (size_t)c * H * W +
                                  (ty / scale) * W + tx / scale];
                    double q = floor((val - low) / (high - low) * 255.0 + 0.5);
                    want = isnan(val) || q < 0 ? 0 : q > 255 ? 255 : (int)q;
                }
                ck_assert_msg(px[((size_t)y * w + x) * C + c] == want,
                              "pixel (%ld, %ld) channel %d: %d, want %d", x, y, c,
                              px[((size_t)y * w + x) * C + c], want);
            }
        }
    }
    /* a flipped byte is caught by the reader (the test can fail) */
    b.p[b.len / 2] ^= 1;
    uint8_t *bad = pr_read((const uint8_t *)b.p, b.len, &w, &h, &ch, why);
    ck_assert_ptr_null(bad);
    free(px);
    proto_buf_free(&b);
    free(v);
}

START_TEST(png_grid)
{
    check_grid(1, 3, 4, 2, 3, 1, -1.0, 1.0);
    check_grid(3, 2, 2, 3, 2, 3, 0.0, 1.0);
    /* more than one stored block (65535 bytes): 1 x 200 tiles of 16 x 16 at scale 2 */
    check_grid(1, 16, 16, 2, 40, 2, -2.0, 2.0);
}
END_TEST

START_TEST(png_answer_check)
{
    struct proto_limits lim = proto_limits_default();
    struct eng_info info = image_info(1, 8, 8);
    struct proto_request q;
    memset(&q, 0, sizeof q);
    q.op = PROTO_OP_SAMPLE;
    q.num_samples = 10;
    q.outputs = PROTO_OUT_SAMPLES;
    q.png.scale = 1;
    struct proto_error e;
    ck_assert_int_eq(proto_answer_check(&lim, &info, &q, PROTO_FMT_PNG, false, &e), PROTO_OK);
    q.outputs |= PROTO_OUT_LOG_PROB;
    ck_assert_int_eq(proto_answer_check(&lim, &info, &q, PROTO_FMT_PNG, false, &e),
                     PROTO_E_FIELD);
    ck_assert_str_eq(e.msg, "outputs: format=png carries only the samples; ask for outputs "
                     "[\"samples\"] or use JSON");
    q.outputs = PROTO_OUT_SAMPLES;
    q.num_samples = 3000; /* 3000 x 8 + gaps > 16384 */
    ck_assert_int_eq(proto_answer_check(&lim, &info, &q, PROTO_FMT_PNG, false, &e),
                     PROTO_E_TOO_LARGE);
    ck_assert_str_eq(e.msg, "the png grid would be 29998 x 8 pixels, more than the server draws "
                     "(sides up to 16384, 16777216 pixels); ask for fewer samples or "
                     "observations, or a smaller scale");
    q.num_samples = 100;
    lim.max_response_bytes = 1000;
    ck_assert_int_eq(proto_answer_check(&lim, &info, &q, PROTO_FMT_PNG, false, &e),
                     PROTO_E_RESULT_TOO_LARGE);
    /* C = 2 has no PNG color type; a signal is not an image */
    lim = proto_limits_default();
    struct eng_info two = image_info(2, 4, 4), sig = image_info(1, 4, 0);
    ck_assert_int_eq(proto_answer_check(&lim, &two, &q, PROTO_FMT_PNG, false, &e),
                     PROTO_E_UNSUPPORTED);
    ck_assert_str_eq(e.msg, "format=png needs an image model whose x is [C, H, W] with C = 1 "
                     "(gray) or 3 (RGB); this model's x has shape [2, 4, 4]");
    ck_assert_int_eq(proto_answer_check(&lim, &sig, &q, PROTO_FMT_PNG, false, &e),
                     PROTO_E_UNSUPPORTED);
}
END_TEST

/* A plain image through the encoder, and the exact bytes of a 1 x 1 gray PNG. */
START_TEST(png_encoder)
{
    uint8_t px[3] = {0x10, 0x20, 0x30};
    struct proto_buf b;
    proto_buf_init(&b, 0);
    proto_write_png(&b, px, 1, 1, 3);
    long w, h;
    int ch;
    char why[256];
    uint8_t *got = pr_read((const uint8_t *)b.p, b.len, &w, &h, &ch, why);
    ck_assert_msg(got != NULL, "%s", why);
    ck_assert(w == 1 && h == 1 && ch == 3 && !memcmp(got, px, 3));
    free(got);
    proto_buf_free(&b);
    /* 1 x 1 gray 0x10: the zlib stream 78 01, one final stored block of 2 bytes (01 02 00
     * fd ff), the scanline 00 10, Adler-32 00 12 00 11 */
    proto_buf_init(&b, 0);
    proto_write_png(&b, px, 1, 1, 1);
    static const uint8_t idat[] = {0x78, 0x01, 0x01, 0x02, 0x00, 0xfd, 0xff, 0x00, 0x10,
                                   0x00, 0x12, 0x00, 0x11};
    ck_assert_int_eq((int)b.len, (int)proto_png_size(1, 1, 1));
    ck_assert(memcmp(b.p + 33 + 8, idat, sizeof idat) == 0);
    proto_buf_free(&b);
}
END_TEST

START_TEST(v2_shaped_inputs)
{
    struct proto_limits lim = proto_limits_default();
    struct eng_info info = image_info(2, 1, 2);
    struct proto_request r;
    struct proto_error e;
    const char *b = "{\"inputs\":[{\"name\":\"x\",\"shape\":[2,2,1,2],\"datatype\":\"FP32\","
                    "\"data\":[[[[1,2]],[[3,4]]],[[[5,6]],[[7,8]]]]}]}";
    ck_assert_int_eq(proto_v2_parse(b, strlen(b), &info, &lim, &r, &e), PROTO_OK);
    ck_assert(r.x.rows == 2 && r.x.cols == 4 && r.x.data[7] == 8.0f);
    proto_request_free(&r);
    b = "{\"inputs\":[{\"name\":\"x\",\"shape\":[2,2,2,1],\"datatype\":\"FP32\","
        "\"data\":[1,2,3,4,5,6,7,8]}]}";
    ck_assert_int_eq(proto_v2_parse(b, strlen(b), &info, &lim, &r, &e), PROTO_E_SHAPE);
    ck_assert_str_eq(e.msg, "input 'x': shape[2] is 2; the model's row shape is [2, 1, 2]");
    b = "{\"inputs\":[{\"name\":\"x\",\"shape\":[1,2,4],\"datatype\":\"FP32\","
        "\"data\":[1,2,3,4,5,6,7,8]}]}";
    ck_assert_int_eq(proto_v2_parse(b, strlen(b), &info, &lim, &r, &e), PROTO_E_SHAPE);
    ck_assert_str_eq(e.msg, "input 'x': shape must be [rows, width], [width] or [rows] + the "
                     "model's row shape [2, 1, 2], got rank 3");
    b = "{\"inputs\":[{\"name\":\"x\",\"shape\":[1,4],\"datatype\":\"FP32\","
        "\"data\":[1,2,3,4]}],\"parameters\":{\"operation\":\"log_prob\"},"
        "\"outputs\":[{\"name\":\"bits_per_dim\"}]}";
    ck_assert_int_eq(proto_v2_parse(b, strlen(b), &info, &lim, &r, &e), PROTO_OK);
    ck_assert_int_eq(r.v2_outputs, 2u);
    proto_request_free(&r);
}
END_TEST

/* The manifest's "image" object reaches eng_info; bad ones are refused naming the field. */
START_TEST(manifest_image)
{
    static const char *fmt = "{\"format\":\"innserve-manifest\",\"version\":1,\"kind\":"
                             "\"flow\",\"dims\":{\"x\":4},%s\"blocks\":[{\"type\":"
                             "\"LearnedElementwiseScaling\",\"s\":\"s\"}]}";
    char man[1024];
    struct tu_ckpt *c = tu_ckpt_new();
    int64_t sh[2] = {1, 4};
    tu_add_randn(c, "s", 2, sh, 0.1f, 0.0f, 1);
    snprintf(man, sizeof man, fmt, "\"shape\":{\"x\":[1,2,2]},\"image\":{\"low\":-1,"
             "\"high\":1,\"levels\":32},");
    struct eng_model *m = tu_load(c, man, ENG_LOAD_NO_SELFTEST);
    const struct eng_info *in = eng_model_info(m);
    ck_assert(in->has_image && in->image_low == -1.0 && in->image_high == 1.0 &&
              in->image_levels == 32);
    ck_assert_double_eq(proto_bin_width(in), 2.0 / 32);
    eng_model_unref(m);
    snprintf(man, sizeof man, fmt, "\"shape\":{\"x\":[1,2,2]},\"image\":{\"low\":0,"
             "\"high\":255},");
    m = tu_load(c, man, ENG_LOAD_NO_SELFTEST);
    ck_assert_int_eq(eng_model_info(m)->image_levels, 256);
    eng_model_unref(m);
    static const struct {
        const char *member, *msg;
    } BAD[] = {
        {"\"image\":{\"low\":0,\"high\":1},", "needs a shape.x [C, H, W]"},
        {"\"shape\":{\"x\":[1,2,2]},\"image\":{\"low\":1,\"high\":1},",
         "image: low must be below high"},
        {"\"shape\":{\"x\":[1,2,2]},\"image\":{\"low\":0,\"high\":1,\"levels\":1},",
         "levels"},
        {"\"shape\":{\"x\":[1,2,2]},\"image\":{\"low\":0,\"high\":1,\"mode\":\"rgb\"},",
         "unknown field 'mode'"},
        {"\"shape\":{\"x\":[1,2,2]},\"image\":{\"high\":1},", "low"},
    };
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        char err[ENG_ERR_LEN];
        snprintf(man, sizeof man, fmt, BAD[i].member);
        ck_assert_int_eq(tu_load_fail(c, man, ENG_LOAD_NO_SELFTEST, err), ENG_ERR_MANIFEST);
        ck_assert_msg(strstr(err, BAD[i].msg), "case %zu: %s", i, err);
    }
    tu_ckpt_free(c);
}
END_TEST

/* ---- application/x-npy request bodies ------------------------------------------------ */

/* An .npy file with the given header dict (padded as numpy pads it) and raw data. */
static void npy_raw(struct proto_buf *b, int major, const char *dict, const void *data,
                    size_t n)
{
    size_t pre = major == 1 ? 10 : 12, dl = strlen(dict);
    size_t total = pre + dl + 1, pad = (64 - total % 64) % 64, hl = dl + pad + 1;
    unsigned char h[12] = {0x93, 'N', 'U', 'M', 'P', 'Y', (unsigned char)major, 0,
                           (unsigned char)(hl & 0xff), (unsigned char)(hl >> 8), 0, 0};
    proto_buf_put(b, h, pre);
    proto_buf_puts(b, dict);
    for (size_t i = 0; i < pad; i++)
        proto_buf_putc(b, ' ');
    proto_buf_putc(b, '\n');
    proto_buf_put(b, data, n);
}

static enum proto_code parse_npy(enum proto_op op, const struct eng_info *info,
                                 const struct proto_buf *b, const struct proto_query *q,
                                 struct proto_request *r, struct proto_error *e)
{
    struct proto_limits lim = proto_limits_default();
    memset(r, 0x5a, sizeof *r); /* the parser must not rely on a zeroed *out */
    return proto_request_parse_npy(op, b->p ? b->p : "", b->len, q, info, &lim, r, e);
}

START_TEST(npy_bodies)
{
    struct eng_info info = image_info(2, 2, 3);
    float v[24];
    for (int i = 0; i < 24; i++)
        v[i] = (float)(i % 12 + 1);
    struct proto_request r;
    struct proto_error e;
    struct proto_buf b;
    struct proto_query none = {0};
    /* (2, 12), (2, 2, 2, 3) and (12,) give the same rows */
    static const long SH[3][4] = {{2, 12}, {2, 2, 2, 3}, {12}};
    static const int ND[3] = {2, 4, 1};
    for (int k = 0; k < 3; k++) {
        proto_buf_init(&b, 0);
        proto_write_npy_nd(&b, v, ND[k], SH[k]);
        ck_assert_int_eq(parse_npy(PROTO_OP_FORWARD, &info, &b, &none, &r, &e), PROTO_OK);
        ck_assert_int_eq(r.x.rows, k == 2 ? 1 : 2);
        ck_assert_int_eq(r.x.cols, 12);
        ck_assert(memcmp(r.x.data, v, sizeof(float) * 12 * (size_t)r.x.rows) == 0);
        ck_assert(!r.npy && !r.npy_main.data && !r.npy_y.data);
        proto_request_free(&r);
        proto_buf_free(&b);
    }
    /* float64, format 2.0, double quotes and another key order */
    double d[12];
    for (int i = 0; i < 12; i++)
        d[i] = i + 1;
    proto_buf_init(&b, 0);
    npy_raw(&b, 2, "{\"shape\": (1, 12), \"fortran_order\": False, \"descr\": \"<f8\"}", d,
            sizeof d);
    ck_assert_int_eq(parse_npy(PROTO_OP_LOG_PROB, &info, &b, &none, &r, &e), PROTO_OK);
    ck_assert(r.x.rows == 1 && r.x.data[11] == 12.0f);
    proto_request_free(&r);
    proto_buf_free(&b);
    /* inverse reads z, and the options from the query */
    proto_buf_init(&b, 0);
    proto_write_npy_nd(&b, v, 4, SH[1]);
    struct proto_query opts = {3, {"tol", "method", "max_iter"}, {"1e-8", "anderson", "50"}};
    ck_assert_int_eq(parse_npy(PROTO_OP_INVERSE, &info, &b, &opts, &r, &e), PROTO_OK);
    ck_assert(r.z.rows == 2 && r.solver.tol == 1e-8 && r.solver.max_iter == 50 &&
              r.solver.method == ENG_SOLVE_ANDERSON);
    proto_request_free(&r);
    proto_buf_free(&b);

    static const struct {
        enum proto_op op;
        const char *dict;       /* NULL: the (2, 2, 2, 3) float32 array */
        int n_values;           /* float32 values after the header (dict given) */
        struct proto_query q;
        enum proto_code code;
        const char *msg;
    } BAD[] = {
        {PROTO_OP_FORWARD, "{'descr': '>f4', 'fortran_order': False, 'shape': (1, 12), }", 12,
         {0}, PROTO_E_FIELD, "x: dtype '>f4' is not accepted; send little-endian float32 or "
         "float64 ('<f4' or '<f8', x.astype(np.float32))"},
        {PROTO_OP_FORWARD, "{'descr': '<i8', 'fortran_order': False, 'shape': (1, 6), }", 12,
         {0}, PROTO_E_FIELD, "x: dtype '<i8' is not accepted; send little-endian float32 or "
         "float64 ('<f4' or '<f8', x.astype(np.float32))"},
        {PROTO_OP_FORWARD, "{'descr': '<f4', 'fortran_order': True, 'shape': (1, 12), }", 12,
         {0}, PROTO_E_FIELD, "x: a Fortran-order array is not accepted; send it in C order "
         "(np.ascontiguousarray)"},
        {PROTO_OP_FORWARD, "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }", 12,
         {0}, PROTO_E_SHAPE, "x has shape (3, 4); the model's rows of x are (B, 12), (12,) or "
         "(B, 2, 2, 3)"},
        {PROTO_OP_FORWARD, "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 3, 2), }",
         12, {0}, PROTO_E_SHAPE, "x has shape (1, 2, 3, 2); the model's rows of x are (B, 12), "
         "(12,) or (B, 2, 2, 3)"},
        {PROTO_OP_FORWARD, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 12), }", 20,
         {0}, PROTO_E_SHAPE, "x: the array's data is truncated: its shape needs 96 bytes, 80 "
         "follow the header"},
        {PROTO_OP_FORWARD, "{'descr': '<f4', 'fortran_order': False, 'shape': (), }", 1, {0},
         PROTO_E_SHAPE, "x: the array has 0 dimensions; 1 to 5 are read"},
        {PROTO_OP_FORWARD, "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 12), }", 0,
         {0}, PROTO_E_SHAPE, "x is empty (dimension 0 is 0)"},
        {PROTO_OP_FORWARD, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,12), }",
         12, {0}, PROTO_E_SHAPE, "x: the array has too many dimensions; 1 to 5 are read"},
        {PROTO_OP_FORWARD, "{'descr': '<f4', 'fortran_order': False}", 12, {0}, PROTO_E_FIELD,
         "x: the .npy header lacks 'shape'"},
        {PROTO_OP_FORWARD, "{'descr': '<f4', 'descr': '<f4', 'shape': (12,)}", 12, {0},
         PROTO_E_FIELD, "x: the .npy header gives 'descr' twice"},
        {PROTO_OP_FORWARD, "{'descr': '<f4', 'fortran_order': False, 'shape': (12,), 'x': 1}",
         12, {0}, PROTO_E_FIELD, "x: the .npy header has the key 'x'; only 'descr', "
         "'fortran_order' and 'shape' are read"},
        {PROTO_OP_FORWARD, "{'descr': '<f4' 'shape': (12,)}", 12, {0}, PROTO_E_FIELD,
         "x: the .npy header is not a dict of 'descr', 'fortran_order' and 'shape' (error near "
         "header byte 16)"},
        {PROTO_OP_FORWARD, NULL, 0, {1, {"x"}, {"[[1]]"}}, PROTO_E_FIELD,
         "query parameter x: the tensors of an application/x-npy request are the arrays of "
         "its body"},
        {PROTO_OP_FORWARD, NULL, 0, {1, {"tol"}, {"1e-3"}}, PROTO_E_UNKNOWN_FIELD,
         "unknown field 'tol' (this endpoint takes: x, y)"},
        {PROTO_OP_INVERSE, NULL, 0, {1, {"method"}, {"secant"}}, PROTO_E_FIELD,
         "method must be one of auto, newton, anderson, broyden, fixed_point; got \"secant\""},
        {PROTO_OP_CALIBRATION, NULL, 0, {0}, PROTO_E_MEDIA,
         "calibration takes a JSON body; application/x-npy bodies are for forward, inverse, "
         "log_prob and sample"},
        {PROTO_OP_SAMPLE, NULL, 0, {0}, PROTO_E_FIELD,
         "a flow model's sample takes no array (it has no observation y): send a JSON body"},
    };
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        proto_buf_init(&b, 0);
        if (BAD[i].dict)
            npy_raw(&b, 1, BAD[i].dict, v, sizeof(float) * (size_t)BAD[i].n_values);
        else
            proto_write_npy_nd(&b, v, 4, SH[1]);
        enum proto_code rc = parse_npy(BAD[i].op, &info, &b, &BAD[i].q, &r, &e);
        ck_assert_msg(rc == BAD[i].code, "case %zu: %s (%s)", i, proto_code_str(rc), e.msg);
        ck_assert_msg(!strcmp(e.msg, BAD[i].msg), "case %zu: '%s'\nwant '%s'", i, e.msg,
                      BAD[i].msg);
        proto_buf_free(&b);
    }
    /* non-finite values are named by their index; float64 past float32 too */
    d[7] = NAN;
    proto_buf_init(&b, 0);
    npy_raw(&b, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 2, 2, 3), }", d,
            sizeof d);
    ck_assert_int_eq(parse_npy(PROTO_OP_FORWARD, &info, &b, &none, &r, &e), PROTO_E_NONFINITE);
    ck_assert_str_eq(e.msg, "x[0][1][0][1] is not a finite number");
    proto_buf_free(&b);
    d[7] = 1e39;
    proto_buf_init(&b, 0);
    npy_raw(&b, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (12,), }", d, sizeof d);
    ck_assert_int_eq(parse_npy(PROTO_OP_FORWARD, &info, &b, &none, &r, &e), PROTO_E_NONFINITE);
    ck_assert_str_eq(e.msg, "x[7] = 1e+39 is outside the float32 range (|v| <= 3.4028235e38)");
    proto_buf_free(&b);
    /* not npy at all, and an empty body */
    proto_buf_init(&b, 0);
    proto_buf_puts(&b, "{\"x\": [[1]]}");
    ck_assert_int_eq(parse_npy(PROTO_OP_FORWARD, &info, &b, &none, &r, &e), PROTO_E_FIELD);
    ck_assert_str_eq(e.msg, "x: the body is not a .npy array (it must start with \\x93NUMPY, "
                     "as numpy.save writes it)");
    proto_buf_free(&b);
    proto_buf_init(&b, 0);
    ck_assert_int_eq(parse_npy(PROTO_OP_FORWARD, &info, &b, &none, &r, &e), PROTO_E_MISSING);
    /* a second array: y of a flow is refused; a third array is one too many */
    proto_buf_init(&b, 0);
    proto_write_npy_nd(&b, v, 4, SH[1]);
    proto_write_npy_nd(&b, v, 1, (const long[]){2});
    ck_assert_int_eq(parse_npy(PROTO_OP_FORWARD, &info, &b, &none, &r, &e),
                     PROTO_E_UNKNOWN_FIELD);
    ck_assert_str_eq(e.msg, "a second array y is not taken here by a flow model (it has no "
                     "observation y)");
    proto_write_npy_nd(&b, v, 1, (const long[]){2});
    ck_assert_int_eq(parse_npy(PROTO_OP_FORWARD, &info, &b, &none, &r, &e), PROTO_E_FIELD);
    ck_assert_str_eq(e.msg, "the body holds more than the arrays forward takes (x, then y for a "
                     "model that takes one), 136 bytes follow them");
    proto_buf_free(&b);
    /* the limits: elements and rows */
    struct proto_limits lim = proto_limits_default();
    lim.max_elements = 20;
    proto_buf_init(&b, 0);
    proto_write_npy_nd(&b, v, 2, SH[0]);
    ck_assert_int_eq(proto_request_parse_npy(PROTO_OP_FORWARD, b.p, b.len, &none, &info, &lim,
                                             &r, &e), PROTO_E_TOO_LARGE);
    ck_assert_str_eq(e.msg, "x has more values than the limit of 20 per tensor "
                     "(--max-elements)");
    lim = proto_limits_default();
    lim.max_rows = 1;
    ck_assert_int_eq(proto_request_parse_npy(PROTO_OP_FORWARD, b.p, b.len, &none, &info, &lim,
                                             &r, &e), PROTO_E_TOO_LARGE);
    ck_assert_str_eq(e.msg, "x has more than 1 rows (the limit for this field)");
    proto_buf_free(&b);
}
END_TEST

/* A cinn (x 4, y 2): x then y in the body; y broadcast or per row; sample reads y. */
START_TEST(npy_bodies_with_y)
{
    struct eng_info info = image_info(1, 2, 2);
    info.kind = ENG_KIND_CINN;
    info.dims.y = 2;
    float x[8] = {1, 2, 3, 4, 5, 6, 7, 8}, y[4] = {0.5f, -0.5f, 1, 2};
    struct proto_request r;
    struct proto_error e;
    struct proto_buf b;
    struct proto_query none = {0};
    proto_buf_init(&b, 0);
    proto_write_npy_nd(&b, x, 4, (const long[]){2, 1, 2, 2});
    proto_write_npy_nd(&b, y, 1, (const long[]){2});
    ck_assert_int_eq(parse_npy(PROTO_OP_FORWARD, &info, &b, &none, &r, &e), PROTO_OK);
    ck_assert(r.x.rows == 2 && r.y.rows == 1 && r.y.data[1] == -0.5f);
    proto_request_free(&r);
    proto_buf_free(&b);
    /* y rows must match */
    proto_buf_init(&b, 0);
    proto_write_npy_nd(&b, x, 2, (const long[]){1, 4});
    proto_write_npy_nd(&b, y, 2, (const long[]){2, 2});
    ck_assert_int_eq(parse_npy(PROTO_OP_LOG_PROB, &info, &b, &none, &r, &e), PROTO_E_SHAPE);
    ck_assert_str_eq(e.msg, "y has 2 rows; it must have 1 row (used for every row of x) or 1 "
                     "rows, one per row of x");
    proto_buf_free(&b);
    /* y missing */
    proto_buf_init(&b, 0);
    proto_write_npy_nd(&b, x, 2, (const long[]){1, 4});
    ck_assert_int_eq(parse_npy(PROTO_OP_FORWARD, &info, &b, &none, &r, &e), PROTO_E_MISSING);
    ck_assert_str_eq(e.msg, "missing field 'y': a cinn model needs the observation y (rows of 2 "
                     "values); in an application/x-npy body, a second array");
    proto_buf_free(&b);
    /* sample: the body is y; options and lists from the query */
    proto_buf_init(&b, 0);
    proto_write_npy_nd(&b, y, 2, (const long[]){2, 2});
    struct proto_query q = {4, {"num_samples", "seed", "outputs", "quantiles"},
                            {"7", "3", "samples,summary", "0.1,0.9"}};
    ck_assert_int_eq(parse_npy(PROTO_OP_SAMPLE, &info, &b, &q, &r, &e), PROTO_OK);
    ck_assert(r.y.rows == 2 && r.num_samples == 7 && r.seed_given && r.seed == 3);
    ck_assert_int_eq(r.outputs, PROTO_OUT_SAMPLES | PROTO_OUT_SUMMARY);
    ck_assert(r.n_quantiles == 2 && r.quantiles[1] == 0.9);
    proto_request_free(&r);
    /* format and the png options are the answer's, not fields */
    struct proto_query q2 = {2, {"format", "scale"}, {"png", "2"}};
    ck_assert_int_eq(parse_npy(PROTO_OP_SAMPLE, &info, &b, &q2, &r, &e), PROTO_OK);
    proto_request_free(&r);
    /* sample takes one array */
    proto_write_npy_nd(&b, y, 2, (const long[]){2, 2});
    ck_assert_int_eq(parse_npy(PROTO_OP_SAMPLE, &info, &b, &none, &r, &e), PROTO_E_FIELD);
    ck_assert_str_eq(e.msg, "the body holds more than the arrays sample takes (y), 144 bytes "
                     "follow them");
    proto_buf_free(&b);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("proto_image");
    TCase *t = tcase_create("image");
    tcase_set_timeout(t, 60);
    tcase_add_test(t, nested_requests);
    tcase_add_test(t, nested_answers);
    tcase_add_test(t, bits_per_dim);
    tcase_add_test(t, csv_and_npy_shapes);
    tcase_add_test(t, answer_format_options);
    tcase_add_test(t, png_grid);
    tcase_add_test(t, png_answer_check);
    tcase_add_test(t, png_encoder);
    tcase_add_test(t, v2_shaped_inputs);
    tcase_add_test(t, manifest_image);
    tcase_add_test(t, npy_bodies);
    tcase_add_test(t, npy_bodies_with_y);
    suite_add_tcase(s, t);
    return s;
}

TU_MAIN
