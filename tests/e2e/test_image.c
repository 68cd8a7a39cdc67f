/*
 * test_image.c — image models served by the daemon (x's rows shaped [C, H, W], manifest
 * "shape" and "image"): a gray flow [1, 4, 4] with the value range [0, 1] at 256 levels and
 * an RGB flow [3, 2, 3], built here from elementwise and fixed linear blocks.
 *
 *   - metadata reports the shapes and the image range;
 *   - forward / inverse take and answer nested [B, C, H, W] arrays, the flat rows give the
 *     same answer, the messages name the full index;
 *   - log_prob adds bits_per_dim = -(log p + D log(1/256)) / (D ln 2);
 *   - sample answers [n_obs, num_samples, C, H, W] in JSON, CSV columns c0_h0_w0..., NPY
 *     shape (1, 3, 1, 4, 4), and format=png: the grid decoded by tests/unit/pngread.h (and
 *     by Python's zlib when /usr/bin/python3 is there) holds the JSON samples of the same
 *     seed mapped to 0..255;
 *   - V2 takes a shaped x and answers shaped tensors;
 *   - application/x-npy request bodies (float32 (2, 1, 4, 4), float64 (2, 16)) give the
 *     same answers as JSON, options come from the query, other routes answer 415;
 *   - a vector model refuses format=png (422);
 *   - innctl sample --format png -o FILE writes the same PNG.
 */
#include "ckptw.h"
#include "e2eutil.h"
#include "../unit/pngread.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct e2e_daemon D;
static char DIR_[256];

/* A flow of width d = prod(shape): LearnedElementwiseScaling, then FixedLinearTransform with
 * M = I + 0.1 N(0, 1). */
static void write_flow(const char *dir, const char *name, const char *extra, int d,
                       uint64_t seed)
{
    struct ckw c = {0};
    c.seed = seed;
    int64_t sd[2] = {1, d}, sm[2] = {d, d}, sb[1] = {d};
    ckw_randn_t(&c, "s", 2, sd, 0.2, 0.0);
    float *m = malloc(sizeof(float) * (size_t)d * d);
    for (int i = 0; i < d * d; i++)
        m[i] = (float)(0.1 * ckw_randn(&c.seed) + (i % (d + 1) == 0 ? 1.0 : 0.0));
    ckw_add(&c, "M", "F32", 2, sm, m);
    free(m);
    ckw_randn_t(&c, "b", 1, sb, 0.1, 0.5);
    char fmt[2048];
    snprintf(fmt, sizeof fmt,
             "{\"format\":\"innserve-manifest\",\"version\":1,\"kind\":\"flow\","
             "\"description\":\"image flow (test model)\",\"dims\":{\"x\":%d},%s"
             "\"blocks\":[{\"type\":\"LearnedElementwiseScaling\",\"s\":\"s\"},"
             "{\"type\":\"FixedLinearTransform\",\"M\":\"M\",\"b\":\"b\"}]%%s}", d, extra);
    char path[512];
    snprintf(path, sizeof path, "%s/%s.safetensors", dir, name);
    ckw_finish(&c, fmt, 4, d, 0, path);
    ckw_free(&c);
}

static void setup(void)
{
    e2e_mkdtemp(DIR_);
    write_flow(DIR_, "gray", "\"shape\":{\"x\":[1,4,4]},\"image\":{\"low\":0,\"high\":1,"
               "\"levels\":256},", 16, 3);
    write_flow(DIR_, "rgb", "\"shape\":{\"x\":[3,2,3]},", 18, 4);
    write_flow(DIR_, "vec", "", 4, 5);
    static const char *const args[] = {"--workers", "2", NULL};
    ck_assert(e2e_start(&D, DIR_, args));
}

static void teardown(void)
{
    e2e_stop_checked(&D, "image", 30);
}

static const char *X2 = "[[[[0.1,0.2,0.3,0.4],[0.5,0.6,0.7,0.8],[0.9,1.0,0.0,0.1],[0.2,0.3,0.4,0.5]]],"
                        "[[[0.5,0.5,0.5,0.5],[0.25,0.25,0.25,0.25],[0.0,0.0,1.0,1.0],[0.3,0.6,0.9,0.1]]]]";
static const char *X2_FLAT = "[[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0,0.0,0.1,0.2,0.3,0.4,0.5],"
                             "[0.5,0.5,0.5,0.5,0.25,0.25,0.25,0.25,0.0,0.0,1.0,1.0,0.3,0.6,0.9,0.1]]";

/* The nested array v has dims dims[0 .. rank) exactly (numbers at the bottom). */
static void expect_dims(const cJSON *v, const int *dims, int rank, const char *what)
{
    ck_assert_msg(cJSON_IsArray(v) && cJSON_GetArraySize(v) == dims[0], "%s: size %d, want %d",
                  what, cJSON_GetArraySize(v), dims[0]);
    for (const cJSON *c = v->child; c; c = c->next) {
        if (rank == 1)
            ck_assert_msg(cJSON_IsNumber(c) || cJSON_IsNull(c), "%s: not a number", what);
        else
            expect_dims(c, dims + 1, rank - 1, what);
    }
}

/* Row-major numbers of a nested array into out (returns the count). */
static int flatten(const cJSON *v, double *out, int cap)
{
    if (!cJSON_IsArray(v)) {
        if (cap > 0)
            out[0] = v->valuedouble;
        return 1;
    }
    int n = 0;
    for (const cJSON *c = v->child; c; c = c->next)
        n += flatten(c, out + n, cap - n);
    return n;
}

START_TEST(metadata_shapes)
{
    struct e2e_resp r;
    e2e_get(&D, "/v1/models/gray", &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(r.body, "\"shape\":{\"x\":[1,4,4],\"z\":[1,4,4]},\"image\":{"
                                         "\"low\":0.0,\"high\":1.0,\"levels\":256,"
                                         "\"bin_width\":0.00390625}"));
    e2e_resp_free(&r);
    e2e_get(&D, "/v1/models/vec", &r);
    ck_assert_ptr_null(strstr(r.body, "\"shape\""));
    e2e_resp_free(&r);
    e2e_get(&D, "/v2/models/rgb", &r);
    ck_assert_ptr_nonnull(strstr(r.body, "\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\","
                                         "\"shape\":[-1,3,2,3]}]"));
    e2e_resp_free(&r);
}
END_TEST

START_TEST(forward_inverse_nested)
{
    char body[2048];
    struct e2e_resp a, b, c;
    snprintf(body, sizeof body, "{\"x\": %s}", X2);
    e2e_post(&D, "/v1/models/gray/forward", body, &a);
    ck_assert_int_eq(a.status, 200);
    static const int dz[4] = {2, 1, 4, 4};
    expect_dims(cJSON_GetObjectItem(a.json, "z"), dz, 4, "z");
    snprintf(body, sizeof body, "{\"x\": %s}", X2_FLAT);
    e2e_post(&D, "/v1/models/gray/forward", body, &b);
    ck_assert_int_eq(b.status, 200);
    ck_assert_str_eq(a.body, b.body);
    e2e_resp_free(&b);
    /* inverse of the nested z gives x back */
    char *z = e2e_print(cJSON_GetObjectItem(a.json, "z"));
    snprintf(body, sizeof body, "{\"z\": %s}", z);
    free(z);
    e2e_post(&D, "/v1/models/gray/inverse", body, &c);
    ck_assert_int_eq(c.status, 200);
    cJSON *want = cJSON_Parse(X2);
    e2e_expect_close(cJSON_GetObjectItem(c.json, "x"), want, 1e-5, 1e-5, "inverse(forward(x))");
    cJSON_Delete(want);
    e2e_resp_free(&c);
    e2e_resp_free(&a);
    /* messages name the index */
    e2e_post(&D, "/v1/models/gray/forward",
             "{\"x\": [[[[0,0,0,0],[0,0,0,0],[0,0,0,0],[0,0,\"x\",0]]]]}", &a);
    e2e_expect_error(&a, 400, "invalid_field", "x[0][0][3][2] must be a number");
    e2e_resp_free(&a);
    e2e_post(&D, "/v1/models/gray/forward", "{\"x\": [[[[0,0,0,0],[0,0,0,0],[0,0,0,0]]]]}", &a);
    e2e_expect_error(&a, 400, "bad_shape", "x[0][0] has 3 values, expected 4 (the model's "
                     "shape.x [1, 4, 4])");
    e2e_resp_free(&a);
}
END_TEST

START_TEST(log_prob_bits_per_dim)
{
    char body[2048];
    struct e2e_resp r;
    snprintf(body, sizeof body, "{\"x\": %s}", X2);
    e2e_post(&D, "/v1/models/gray/log_prob", body, &r);
    ck_assert_int_eq(r.status, 200);
    const cJSON *lp = cJSON_GetObjectItem(r.json, "log_prob");
    const cJSON *bpd = cJSON_GetObjectItem(r.json, "bits_per_dim");
    ck_assert_int_eq(cJSON_GetArraySize(bpd), 2);
    for (int i = 0; i < 2; i++) {
        double l = cJSON_GetArrayItem(lp, i)->valuedouble;
        double want = -(l + 16 * log(1.0 / 256)) / (16 * log(2.0));
        ck_assert_double_eq_tol(cJSON_GetArrayItem(bpd, i)->valuedouble, want, 1e-12);
    }
    e2e_resp_free(&r);
    e2e_post(&D, "/v1/models/vec/log_prob", "{\"x\": [[1, 2, 3, 4]]}", &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_null(cJSON_GetObjectItem(r.json, "bits_per_dim"));
    e2e_resp_free(&r);
}
END_TEST

/* Samples in JSON (nested), CSV (column names), NPY (shape) and PNG (the grid holds the
 * JSON samples). */
START_TEST(sample_formats)
{
    const char *body = "{\"num_samples\": 3, \"seed\": 11}";
    struct e2e_resp j, r;
    e2e_post(&D, "/v1/models/gray/sample", body, &j);
    ck_assert_int_eq(j.status, 200);
    static const int ds[5] = {1, 3, 1, 4, 4};
    expect_dims(cJSON_GetObjectItem(j.json, "samples"), ds, 5, "samples");
    ck_assert_ptr_nonnull(strstr(j.body, "\"shape\":[1,3,1,4,4]"));
    double s[48];
    ck_assert_int_eq(flatten(cJSON_GetObjectItem(j.json, "samples"), s, 48), 48);

    static const char *const csv[] = {"Accept: text/csv", NULL};
    e2e_request(&D, "POST", "/v1/models/gray/sample", body, strlen(body), csv, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert(strncmp(r.body, "obs,sample,c0_h0_w0,c0_h0_w1,c0_h0_w2,c0_h0_w3,c0_h1_w0,", 56) == 0);
    ck_assert_ptr_nonnull(strstr(r.body, ",c0_h3_w3\n0,0,"));
    e2e_resp_free(&r);

    e2e_request(&D, "POST", "/v1/models/gray/sample?format=npy", body, strlen(body), NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(r.body + 10, "'shape': (1, 3, 1, 4, 4), }"));
    ck_assert_int_eq((int)r.len, 128 + 48 * 4);
    for (int i = 0; i < 48; i++) {
        float f;
        memcpy(&f, r.body + 128 + 4 * i, 4);
        ck_assert(f == (float)s[i]);
    }
    e2e_resp_free(&r);

    e2e_request(&D, "POST", "/v1/models/gray/sample?format=png&scale=2", body, strlen(body),
                NULL, &r);
    ck_assert_int_eq(r.status, 200);
    char ct[64], seed[32];
    ck_assert_str_eq(e2e_header(&r, "Content-Type", ct, sizeof ct), "image/png");
    ck_assert_str_eq(e2e_header(&r, "X-Seed", seed, sizeof seed), "11");
    long w, h;
    int ch;
    char why[256];
    uint8_t *px = pr_read((const uint8_t *)r.body, r.len, &w, &h, &ch, why);
    ck_assert_msg(px != NULL, "%s", why);
    ck_assert(w == 3 * 8 + 2 * 2 && h == 8 && ch == 1);
    long sum = 0;
    for (int k = 0; k < 3; k++)
        for (int y = 0; y < 8; y++)
            for (int x = 0; x < 8; x++) {
                double q = floor(s[k * 16 + (y / 2) * 4 + x / 2] * 255.0 + 0.5);
                int want = q < 0 ? 0 : q > 255 ? 255 : (int)q;
                ck_assert_int_eq(px[y * w + k * 10 + x], want);
            }
    for (long i = 0; i < w * h; i++)
        sum += px[i];
    free(px);
    /* Python's zlib reads the same pixels (when Python is there) */
    if (access("/usr/bin/python3", X_OK) == 0) {
        char path[300];
        snprintf(path, sizeof path, "%s/grid.png", DIR_);
        FILE *f = fopen(path, "wb");
        ck_assert_ptr_nonnull(f);
        fwrite(r.body, 1, r.len, f);
        fclose(f);
        const char *py =
            "import struct, sys, zlib\n"
            "b = open(sys.argv[1], 'rb').read()\n"
            "assert b[:8] == b'\\x89PNG\\r\\n\\x1a\\n'\n"
            "o, idat, w, h = 8, b'', 0, 0\n"
            "while o < len(b):\n"
            "    n, t = struct.unpack('>I4s', b[o:o + 8])\n"
            "    d = b[o + 8:o + 8 + n]\n"
            "    assert zlib.crc32(t + d) == struct.unpack('>I', b[o + 8 + n:o + 12 + n])[0]\n"
            "    if t == b'IHDR': w, h = struct.unpack('>II', d[:8])\n"
            "    if t == b'IDAT': idat += d\n"
            "    o += 12 + n\n"
            "raw = zlib.decompress(idat)\n"
            "rows = [raw[y * (w + 1) + 1:(y + 1) * (w + 1)] for y in range(h)]\n"
            "print(w, h, sum(sum(r) for r in rows))\n";
        const char *argv[] = {"/usr/bin/python3", "-c", py, path, NULL};
        char *out = NULL;
        int st = e2e_run(argv, NULL, &out);
        char want[64];
        snprintf(want, sizeof want, "%ld %ld %ld\n", w, h, sum);
        ck_assert_msg(st == 0 && strcmp(out, want) == 0, "python: %s (want %s)", out, want);
        free(out);
    }
    e2e_resp_free(&r);
    e2e_resp_free(&j);
}
END_TEST

START_TEST(rgb_png_and_refusals)
{
    const char *body = "{\"num_samples\": 2, \"seed\": 1}";
    static const char *const png[] = {"Accept: image/png", NULL};
    struct e2e_resp r, j;
    e2e_request(&D, "POST", "/v1/models/rgb/sample?low=-2&high=2", body, strlen(body), png, &r);
    ck_assert_int_eq(r.status, 200);
    e2e_post(&D, "/v1/models/rgb/sample", body, &j);
    double s[36];
    ck_assert_int_eq(flatten(cJSON_GetObjectItem(j.json, "samples"), s, 36), 36);
    long w, h;
    int ch;
    char why[256];
    uint8_t *px = pr_read((const uint8_t *)r.body, r.len, &w, &h, &ch, why);
    ck_assert_msg(px != NULL, "%s", why);
    ck_assert(w == 2 * 3 + 2 && h == 2 && ch == 3);
    for (int k = 0; k < 2; k++)
        for (int y = 0; y < 2; y++)
            for (int x = 0; x < 3; x++)
                for (int c = 0; c < 3; c++) {
                    double q = floor((s[k * 18 + c * 6 + y * 3 + x] + 2) / 4 * 255.0 + 0.5);
                    int want = q < 0 ? 0 : q > 255 ? 255 : (int)q;
                    ck_assert_int_eq(px[(y * w + k * 5 + x) * 3 + c], want);
                }
    free(px);
    e2e_resp_free(&r);
    e2e_resp_free(&j);
    e2e_request(&D, "POST", "/v1/models/vec/sample", body, strlen(body), png, &r);
    e2e_expect_error(&r, 422, "unsupported_operation", "format=png needs an image model");
    e2e_resp_free(&r);
    e2e_request(&D, "POST", "/v1/models/gray/sample?format=png&scale=99", body, strlen(body),
                NULL, &r);
    e2e_expect_error(&r, 400, "invalid_field", "scale must be an integer from 1 to 16");
    e2e_resp_free(&r);
    char fw[1024];
    snprintf(fw, sizeof fw, "{\"x\": %s}", X2_FLAT);
    e2e_request(&D, "POST", "/v1/models/gray/forward?format=png", fw, strlen(fw), NULL, &r);
    e2e_expect_error(&r, 400, "invalid_field", "format=png is only for sample answers; forward "
                     "answers JSON");
    e2e_resp_free(&r);
}
END_TEST

START_TEST(v2_shaped)
{
    char body[2048];
    struct e2e_resp r;
    snprintf(body, sizeof body, "{\"inputs\": [{\"name\": \"x\", \"shape\": [2, 1, 4, 4], "
             "\"datatype\": \"FP32\", \"data\": %s}], \"parameters\": {\"operation\": "
             "\"log_prob\"}}", X2);
    e2e_post(&D, "/v2/models/gray/infer", body, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(r.body, "{\"name\":\"bits_per_dim\",\"datatype\":\"FP64\","
                                         "\"shape\":[2],"));
    e2e_resp_free(&r);
    snprintf(body, sizeof body, "{\"inputs\": [{\"name\": \"x\", \"shape\": [2, 1, 4, 4], "
             "\"datatype\": \"FP32\", \"data\": %s}]}", X2);
    e2e_post(&D, "/v2/models/gray/infer", body, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(r.body, "{\"name\":\"z\",\"datatype\":\"FP32\",\"shape\":"
                                         "[2,1,4,4],"));
    e2e_resp_free(&r);
}
END_TEST

/* application/x-npy bodies give the same answers as the JSON ones; options come from the
 * query; the other routes answer 415. */
START_TEST(npy_request_bodies)
{
    float x[32];
    double xd[32];
    cJSON *j = cJSON_Parse(X2_FLAT);
    int k = 0;
    for (const cJSON *row = j->child; row; row = row->next)
        for (const cJSON *c = row->child; c; c = c->next, k++)
            xd[k] = (float)c->valuedouble, x[k] = (float)c->valuedouble;
    cJSON_Delete(j);
    /* the .npy file numpy writes for x.astype(np.float32) of shape (2, 1, 4, 4) */
    char npy[128 + sizeof x];
    const char *dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 1, 4, 4), }";
    memset(npy, ' ', 128);
    memcpy(npy, "\x93NUMPY\x01\x00\x76\x00", 10);
    memcpy(npy + 10, dict, strlen(dict));
    npy[127] = '\n';
    memcpy(npy + 128, x, sizeof x);
    static const char *const ct[] = {"Content-Type: application/x-npy", NULL};
    struct e2e_resp a, b;
    char body[2048];
    snprintf(body, sizeof body, "{\"x\": %s}", X2);
    e2e_post(&D, "/v1/models/gray/log_prob", body, &a);
    e2e_request(&D, "POST", "/v1/models/gray/log_prob", npy, sizeof npy, ct, &b);
    ck_assert_int_eq(b.status, 200);
    ck_assert_str_eq(a.body, b.body);
    e2e_resp_free(&b);
    /* float64 (2, 16) gives the same answer */
    char npy8[128 + sizeof xd];
    dict = "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 16), }";
    memset(npy8, ' ', 128);
    memcpy(npy8, "\x93NUMPY\x01\x00\x76\x00", 10);
    memcpy(npy8 + 10, dict, strlen(dict));
    npy8[127] = '\n';
    memcpy(npy8 + 128, xd, sizeof xd);
    e2e_request(&D, "POST", "/v1/models/gray/log_prob", npy8, sizeof npy8, ct, &b);
    ck_assert_int_eq(b.status, 200);
    ck_assert_str_eq(a.body, b.body);
    e2e_resp_free(&b);
    e2e_resp_free(&a);
    /* forward, then inverse of z sent as .npy with solver options in the query */
    e2e_request(&D, "POST", "/v1/models/gray/forward", npy, sizeof npy, ct, &a);
    ck_assert_int_eq(a.status, 200);
    double z[32];
    ck_assert_int_eq(flatten(cJSON_GetObjectItem(a.json, "z"), z, 32), 32);
    float zf[32];
    for (int i = 0; i < 32; i++)
        zf[i] = (float)z[i];
    memcpy(npy + 128, zf, sizeof zf);
    e2e_request(&D, "POST", "/v1/models/gray/inverse?tol=1e-6&method=auto", npy, sizeof npy, ct,
                &b);
    ck_assert_int_eq(b.status, 200);
    double xr[32];
    ck_assert_int_eq(flatten(cJSON_GetObjectItem(b.json, "x"), xr, 32), 32);
    for (int i = 0; i < 32; i++)
        ck_assert_double_eq_tol(xr[i], x[i], 1e-5);
    e2e_resp_free(&b);
    e2e_resp_free(&a);
    /* refusals */
    e2e_request(&D, "POST", "/v1/models/gray/inverse?tol=2", npy, sizeof npy, ct, &b);
    e2e_expect_error(&b, 400, "invalid_field", "tol must be in (0, 1], got 2");
    e2e_resp_free(&b);
    e2e_request(&D, "POST", "/v1/models/gray/forward", npy, 100, ct, &b);
    e2e_expect_error(&b, 400, "invalid_field", "x: the .npy header is truncated");
    e2e_resp_free(&b);
    e2e_request(&D, "POST", "/v1/models/gray/calibration", npy, sizeof npy, ct, &b);
    e2e_expect_error(&b, 415, "unsupported_media_type", "taken by forward, inverse, log_prob "
                     "and sample only");
    e2e_resp_free(&b);
    e2e_request(&D, "POST", "/v2/models/gray/infer", npy, sizeof npy, ct, &b);
    e2e_expect_error(&b, 415, "unsupported_media_type", NULL);
    e2e_resp_free(&b);
}
END_TEST

/* innctl sample --format png -o FILE writes the daemon's PNG (the same bytes as the API's). */
START_TEST(innctl_png)
{
    const char *bin = getenv("INNCTL_BIN");
    if (!bin || !*bin)
        bin = "build/innctl";
    char url[64], path[300], seed[16];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", D.port);
    snprintf(path, sizeof path, "%s/innctl.png", DIR_);
    snprintf(seed, sizeof seed, "%d", 5);
    const char *argv[] = {bin, "--url", url, "sample", "gray", "-n", "4", "--seed", seed,
                          "--format", "png", "-o", path, NULL};
    char *out = NULL;
    int st = e2e_run(argv, NULL, &out);
    ck_assert_msg(st == 0, "innctl: %d %s", st, out);
    free(out);
    size_t n;
    char *png = tu_slurp(path, &n);
    ck_assert_ptr_nonnull(png);
    struct e2e_resp r;
    const char *body = "{\"num_samples\": 4, \"seed\": 5}";
    e2e_request(&D, "POST", "/v1/models/gray/sample?format=png", body, strlen(body), NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert(r.len == n && memcmp(r.body, png, n) == 0);
    long w, h;
    int ch;
    char why[256];
    uint8_t *px = pr_read((const uint8_t *)png, n, &w, &h, &ch, why);
    ck_assert_msg(px != NULL, "%s", why);
    ck_assert(w == 4 * 4 + 3 * 2 && h == 4 && ch == 1);
    free(px);
    free(png);
    e2e_resp_free(&r);
    /* forward --format csv names the columns by position; --summary flattens the image */
    const char *fw[] = {bin, "--url", url, "forward", "rgb", "--x",
                        "0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1", "--format", "csv", NULL};
    st = e2e_run(fw, NULL, &out);
    ck_assert_msg(st == 0, "innctl: %d %s", st, out);
    ck_assert_msg(strncmp(out, "z_c0_h0_w0,z_c0_h0_w1,z_c0_h0_w2,z_c0_h1_w0,", 44) == 0 &&
                  strstr(out, ",z_c2_h1_w2,log_det\n"), "%s", out);
    free(out);
    const char *sm[] = {bin, "--url", url, "sample", "rgb", "-n", "3", "--seed", "2",
                        "--summary", NULL};
    st = e2e_run(sm, NULL, &out);
    ck_assert_msg(st == 0, "innctl: %d %s", st, out);
    ck_assert_msg(strstr(out, "\nc0_h0_w0 ") && strstr(out, "\nc2_h1_w2 ") &&
                  !strstr(out, "nan"), "%s", out);
    free(out);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("image");
    TCase *tc = tcase_create("image");
    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, metadata_shapes);
    tcase_add_test(tc, forward_inverse_nested);
    tcase_add_test(tc, log_prob_bits_per_dim);
    tcase_add_test(tc, sample_formats);
    tcase_add_test(tc, rgb_png_and_refusals);
    tcase_add_test(tc, v2_shaped);
    tcase_add_test(tc, npy_request_bodies);
    tcase_add_test(tc, innctl_png);
    suite_add_tcase(s, tc);
    return s;
}

E2E_MAIN
