/*
 * test_api.c — end-to-end tests of every endpoint of the API against the real daemon:
 * health, readiness, model list and metadata, certificates, forward / inverse / log_prob
 * of every golden fixture against its expect.json, sampling in JSON, CSV and NPY with
 * summaries and resimulation, preimage, the V2 protocol, metrics, keep-alive, and the
 * routes of proto/openapi.yaml.
 */
#include "e2eutil.h"

#include <curl/curl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct e2e_daemon D;

static void setup(void)
{
    char dir[256];
    e2e_mkdtemp(dir);
    int n;
    char **names = e2e_fixture_names(&n);
    ck_assert_msg(n >= 10, "golden fixtures missing (%d)", n);
    for (int i = 0; i < n; i++) {
        char rel[300];
        snprintf(rel, sizeof rel, "%s.safetensors", names[i]);
        e2e_copy_fixture(dir, names[i], rel);
        free(names[i]);
    }
    free(names);
    /* a versioned model: the highest numeric version is served */
    e2e_copy_fixture(dir, "rnvp", "versioned/1/model.safetensors");
    e2e_copy_fixture(dir, "inn_ardizzone", "versioned/12/model.safetensors");
    e2e_copy_fixture(dir, "mlp", "versioned/9/model.safetensors");
    e2e_write_file(dir, "versioned/notanumber/model.safetensors", "x", 1);
    /* broken entries are reported, not fatal */
    e2e_write_file(dir, "broken.safetensors", "this is not a checkpoint", 24);
    e2e_write_file(dir, "noversions/3/README", "empty", 5);
    e2e_write_file(dir, "scripts/train.py", "print()", 7); /* not a model directory */
    e2e_write_file(dir, "notes.txt", "ignored", 7);
    static const char *const args[] = {"--max-body", "1M", "--max-response", "1M",
                                       "--max-samples", "500000", NULL};
    ck_assert(e2e_start(&D, dir, args));
}

static void teardown(void)
{
    e2e_stop_checked(&D, "test_api", 20);
}

static const cJSON *get(const cJSON *o, const char *k)
{
    return cJSON_GetObjectItemCaseSensitive(o, k);
}

static void expect_model_fields(const cJSON *j, const char *model)
{
    ck_assert_msg(cJSON_IsString(get(j, "model")) && !strcmp(get(j, "model")->valuestring, model),
                  "model field missing");
    ck_assert(cJSON_IsString(get(j, "version")));
    ck_assert(cJSON_IsString(get(j, "sha256")) && strlen(get(j, "sha256")->valuestring) == 64);
}

/* ---- operations endpoints ------------------------------------------------------------- */

START_TEST(health_and_readiness)
{
    struct e2e_resp r;
    e2e_get(&D, "/healthz", &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(get(r.json, "status")->valuestring, "ok");
    e2e_resp_free(&r);
    e2e_get(&D, "/readyz", &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert(cJSON_IsTrue(get(r.json, "ready")));
    e2e_resp_free(&r);
    e2e_get(&D, "/v2/health/live", &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert(cJSON_IsTrue(get(r.json, "live")));
    e2e_resp_free(&r);
    e2e_get(&D, "/v2/health/ready", &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert(cJSON_IsTrue(get(r.json, "ready")));
    e2e_resp_free(&r);
    e2e_get(&D, "/v2", &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(get(r.json, "name")->valuestring, "innserve");
    ck_assert(cJSON_IsArray(get(r.json, "extensions")));
    e2e_resp_free(&r);
    e2e_request(&D, "HEAD", "/healthz", NULL, 0, NULL, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq((int)r.len, 0);
    e2e_resp_free(&r);
}
END_TEST

START_TEST(model_list)
{
    struct e2e_resp r;
    e2e_get(&D, "/v1/models", &r);
    ck_assert_int_eq(r.status, 200);
    int n;
    char **names = e2e_fixture_names(&n);
    for (int i = 0; i < n; i++) {
        const cJSON *m = e2e_find_model(r.json, names[i]);
        ck_assert_msg(m != NULL, "%s not listed", names[i]);
        ck_assert_str_eq(get(m, "state")->valuestring, "READY");
        ck_assert_str_eq(get(m, "version")->valuestring, "1");
        ck_assert(cJSON_IsObject(get(m, "dims")));
        ck_assert(cJSON_IsString(get(m, "kind")));
        free(names[i]);
    }
    free(names);
    const cJSON *v = e2e_find_model(r.json, "versioned");
    ck_assert(v != NULL);
    ck_assert_str_eq(get(v, "state")->valuestring, "READY");
    ck_assert_str_eq(get(v, "version")->valuestring, "12");
    ck_assert_str_eq(get(v, "kind")->valuestring, "inn");
    const cJSON *b = e2e_find_model(r.json, "broken");
    ck_assert(b != NULL);
    ck_assert_str_eq(get(b, "state")->valuestring, "UNAVAILABLE");
    ck_assert_msg(cJSON_IsString(get(b, "reason")) && strstr(get(b, "reason")->valuestring,
                                                              "broken.safetensors"),
                  "reason should name the file: %s", r.body);
    const cJSON *nv = e2e_find_model(r.json, "noversions");
    ck_assert(nv != NULL);
    ck_assert_str_eq(get(nv, "state")->valuestring, "UNAVAILABLE");
    ck_assert(strstr(get(nv, "reason")->valuestring, "version") != NULL);
    ck_assert(e2e_find_model(r.json, "notes") == NULL);
    ck_assert(e2e_find_model(r.json, "scripts") == NULL);
    e2e_resp_free(&r);
    /* the log reports each bad file with its reason */
    ck_assert(e2e_log_count(&D, "\"event\":\"model_failed\"") >= 2);
}
END_TEST

START_TEST(metadata_and_certificate)
{
    struct e2e_resp r, l;
    e2e_get(&D, "/v1/models/cinn_standardized", &r);
    ck_assert_int_eq(r.status, 200);
    expect_model_fields(r.json, "cinn_standardized");
    ck_assert_str_eq(get(r.json, "name")->valuestring, "cinn_standardized");
    ck_assert_str_eq(get(r.json, "kind")->valuestring, "cinn");
    const cJSON *d = get(r.json, "dims");
    ck_assert_int_eq(get(d, "x")->valueint, 5);
    ck_assert_int_eq(get(d, "y")->valueint, 3);
    ck_assert_int_eq(get(d, "z")->valueint, 5);
    ck_assert_int_eq(get(d, "pad_x")->valueint, 0);
    const cJSON *nx = get(get(r.json, "names"), "x");
    ck_assert_int_eq(cJSON_GetArraySize(nx), 5);
    ck_assert_str_eq(cJSON_GetArrayItem(nx, 0)->valuestring, "h");
    ck_assert_str_eq(cJSON_GetArrayItem(get(get(r.json, "names"), "y"), 2)->valuestring, "pz");
    const cJSON *blocks = get(r.json, "blocks");
    ck_assert_int_eq(cJSON_GetArraySize(blocks), 3);
    ck_assert_str_eq(get(cJSON_GetArrayItem(blocks, 0), "type")->valuestring, "AllInOneBlock");
    ck_assert(get(r.json, "parameters")->valuedouble > 0);
    ck_assert(cJSON_IsFalse(get(r.json, "numeric_inverse")));
    ck_assert(cJSON_IsString(get(r.json, "description")));
    ck_assert(cJSON_IsTrue(get(get(r.json, "certificate"), "invertible")));
    /* sha256 agrees with the list */
    e2e_get(&D, "/v1/models", &l);
    ck_assert_str_eq(get(e2e_find_model(l.json, "cinn_standardized"), "sha256")->valuestring,
                     get(r.json, "sha256")->valuestring);
    e2e_resp_free(&l);
    e2e_resp_free(&r);

    e2e_get(&D, "/v1/models/glow_cond/certificate", &r);
    ck_assert_int_eq(r.status, 200);
    expect_model_fields(r.json, "glow_cond");
    ck_assert(cJSON_IsTrue(get(r.json, "invertible")));
    ck_assert_str_eq(get(r.json, "guarantee")->valuestring, "analytic");
    const cJSON *b0 = cJSON_GetArrayItem(get(r.json, "blocks"), 0);
    ck_assert_int_eq(get(b0, "index")->valueint, 0);
    ck_assert_str_eq(get(b0, "type")->valuestring, "GLOWCouplingBlock");
    ck_assert(cJSON_IsString(get(b0, "reason")));
    ck_assert(get(b0, "iterations_for_1e-6") != NULL);
    e2e_resp_free(&r);

    e2e_get(&D, "/v1/models/mlp/certificate", &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert(cJSON_IsFalse(get(r.json, "invertible")));
    e2e_resp_free(&r);
}
END_TEST

/* ---- golden values ------------------------------------------------------------------------ */

static char *body2(const char *k1, const cJSON *v1, const char *k2, const cJSON *v2)
{
    char *a = e2e_print(v1);
    char *b = v2 && !cJSON_IsNull(v2) ? e2e_print(v2) : NULL;
    size_t n = strlen(a) + (b ? strlen(b) : 0) + 64;
    char *s = malloc(n);
    if (b)
        snprintf(s, n, "{\"%s\":%s,\"%s\":%s}", k1, a, k2, b);
    else
        snprintf(s, n, "{\"%s\":%s}", k1, a);
    free(a);
    free(b);
    return s;
}

/* Appends the numbers of v (nested arrays) to the array out, row-major. */
static void flatten_into(const cJSON *v, cJSON *out)
{
    if (!cJSON_IsArray(v)) {
        cJSON_AddItemToArray(out, cJSON_CreateNumber(v->valuedouble));
        return;
    }
    for (const cJSON *c = v->child; c; c = c->next)
        flatten_into(c, out);
}

/* An answer's rows as flat rows (a model with a shape answers x and z nested [B, C, H, W];
 * the fixtures hold rows of values).  Owned by the caller. */
static cJSON *flat_rows(const cJSON *v)
{
    cJSON *out = cJSON_CreateArray();
    for (const cJSON *row = v ? v->child : NULL; row; row = row->next) {
        cJSON *r = cJSON_CreateArray();
        flatten_into(row, r);
        cJSON_AddItemToArray(out, r);
    }
    return out;
}

START_TEST(golden_forward_inverse_log_prob)
{
    int n;
    char **names = e2e_fixture_names(&n);
    for (int i = 0; i < n; i++) {
        char path[512];
        char *txt = tu_slurp(e2e_fixture(names[i], ".expect.json", path, sizeof path), NULL);
        ck_assert(txt != NULL);
        cJSON *ex = cJSON_Parse(txt);
        free(txt);
        const char *kind = get(ex, "kind")->valuestring;
        const cJSON *dims = get(ex, "dims");
        int width = get(dims, "x")->valueint +
                    (cJSON_IsNumber(get(dims, "pad_x")) ? get(dims, "pad_x")->valueint : 0);
        double rtol = 1e-5, atol = 1e-5;
        const cJSON *f = get(ex, "forward");
        char url[256], what[256];
        struct e2e_resp r;
        /* forward */
        char *b = body2("x", get(f, "x"), "y", !strcmp(kind, "cinn") ? get(f, "y") : NULL);
        snprintf(url, sizeof url, "/v1/models/%s/forward", names[i]);
        e2e_post(&D, url, b, &r);
        free(b);
        ck_assert_msg(r.status == 200, "%s forward: %ld %s", names[i], r.status, r.body);
        expect_model_fields(r.json, names[i]);
        snprintf(what, sizeof what, "%s forward", names[i]);
        if (cJSON_IsArray(get(f, "z"))) {
            cJSON *z = flat_rows(get(r.json, "z"));
            e2e_expect_close(z, get(f, "z"), rtol, atol, what);
            cJSON_Delete(z);
        }
        if (cJSON_IsArray(get(f, "y_out")))
            e2e_expect_close(get(r.json, "y"), get(f, "y_out"), rtol, atol, what);
        if (cJSON_IsArray(get(f, "log_det")))
            e2e_expect_close(get(r.json, "log_det"), get(f, "log_det"), rtol, atol * width, what);
        e2e_resp_free(&r);
        if (strcmp(kind, "mlp") != 0) {
            const cJSON *inv = get(ex, "inverse");
            b = body2("z", get(inv, "z"), "y", get(inv, "y"));
            snprintf(url, sizeof url, "/v1/models/%s/inverse", names[i]);
            e2e_post(&D, url, b, &r);
            free(b);
            ck_assert_msg(r.status == 200, "%s inverse: %ld %s", names[i], r.status, r.body);
            snprintf(what, sizeof what, "%s inverse", names[i]);
            cJSON *x = flat_rows(get(r.json, "x"));
            e2e_expect_close(x, get(inv, "x"), rtol, atol, what);
            cJSON_Delete(x);
            e2e_expect_close(get(r.json, "log_det"), get(inv, "log_det"), rtol, atol * width,
                             what);
            e2e_resp_free(&r);
            const cJSON *lp = get(ex, "log_prob");
            b = body2("x", get(lp, "x"), "y", get(lp, "y"));
            snprintf(url, sizeof url, "/v1/models/%s/log_prob", names[i]);
            e2e_post(&D, url, b, &r);
            free(b);
            ck_assert_msg(r.status == 200, "%s log_prob: %ld %s", names[i], r.status, r.body);
            snprintf(what, sizeof what, "%s log_prob", names[i]);
            e2e_expect_close(get(r.json, "log_prob"), get(lp, "log_prob"), rtol, atol * width,
                             what);
            e2e_resp_free(&r);
        }
        cJSON_Delete(ex);
        free(names[i]);
    }
    free(names);
}
END_TEST

START_TEST(log_prob_broadcasts_y)
{
    /* one y row is used for every x row */
    struct e2e_resp a, b;
    e2e_post(&D, "/v1/models/glow_cond/log_prob",
             "{\"x\":[[0.1,0.2,0.3,0.4,0.5,0.6],[0.6,0.5,0.4,0.3,0.2,0.1]],\"y\":[[1,2,3]]}", &a);
    ck_assert_int_eq(a.status, 200);
    e2e_post(&D, "/v1/models/glow_cond/log_prob",
             "{\"x\":[[0.1,0.2,0.3,0.4,0.5,0.6],[0.6,0.5,0.4,0.3,0.2,0.1]],"
             "\"y\":[[1,2,3],[1,2,3]]}", &b);
    ck_assert_int_eq(b.status, 200);
    e2e_expect_close(get(a.json, "log_prob"), get(b.json, "log_prob"), 0, 0, "broadcast");
    ck_assert_int_eq(cJSON_GetArraySize(get(a.json, "log_prob")), 2);
    e2e_resp_free(&a);
    e2e_resp_free(&b);
    /* a flat vector is one row */
    e2e_post(&D, "/v1/models/rnvp/forward", "{\"x\":[0.1,0.2,0.3,0.4,0.5]}", &a);
    e2e_post(&D, "/v1/models/rnvp/forward", "{\"x\":[[0.1,0.2,0.3,0.4,0.5]]}", &b);
    ck_assert_int_eq(a.status, 200);
    ck_assert_str_eq(a.body, b.body);
    e2e_resp_free(&a);
    e2e_resp_free(&b);
}
END_TEST

/* ---- sampling ------------------------------------------------------------------------------ */

static double num(const cJSON *v)
{
    return v->valuedouble;
}

START_TEST(sample_json)
{
    struct e2e_resp a, b, c;
    const char *req = "{\"y\":[[0.5,-1.0,0.25],[1,2,3]],\"num_samples\":300,\"seed\":42,"
                      "\"outputs\":[\"samples\",\"log_prob\",\"summary\"],"
                      "\"quantiles\":[0.1,0.5,0.9]}";
    e2e_post(&D, "/v1/models/glow_cond/sample", req, &a);
    ck_assert_msg(a.status == 200, "%s", a.body);
    expect_model_fields(a.json, "glow_cond");
    ck_assert_int_eq((int)num(get(a.json, "seed")), 42);
    const cJSON *s = get(a.json, "samples");
    ck_assert_int_eq(cJSON_GetArraySize(s), 2);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetArrayItem(s, 0)), 300);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetArrayItem(cJSON_GetArrayItem(s, 1), 299)), 6);
    const cJSON *lp = get(a.json, "log_prob");
    ck_assert_int_eq(cJSON_GetArraySize(lp), 2);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetArrayItem(lp, 1)), 300);
    /* same seed, same bytes */
    e2e_post(&D, "/v1/models/glow_cond/sample", req, &b);
    ck_assert_str_eq(a.body, b.body);
    e2e_resp_free(&b);
    /* summary = statistics of the samples */
    const cJSON *sum = get(a.json, "summary");
    for (int o = 0; o < 2; o++) {
        const cJSON *so = cJSON_GetArrayItem(s, o);
        const cJSON *lpo = cJSON_GetArrayItem(lp, o);
        int best = 0;
        for (int i = 1; i < 300; i++)
            if (num(cJSON_GetArrayItem(lpo, i)) > num(cJSON_GetArrayItem(lpo, best)))
                best = i;
        for (int j = 0; j < 6; j++) {
            double m = 0, v = 0;
            double col[300];
            for (int i = 0; i < 300; i++) {
                col[i] = num(cJSON_GetArrayItem(cJSON_GetArrayItem(so, i), j));
                m += col[i];
            }
            m /= 300;
            for (int i = 0; i < 300; i++)
                v += (col[i] - m) * (col[i] - m);
            double sd = sqrt(v / 300);
            double gm = num(cJSON_GetArrayItem(cJSON_GetArrayItem(get(sum, "mean"), o), j));
            double gs = num(cJSON_GetArrayItem(cJSON_GetArrayItem(get(sum, "std"), o), j));
            ck_assert_msg(fabs(gm - m) <= 1e-5 * (1 + fabs(m)), "mean %g vs %g", gm, m);
            ck_assert_msg(fabs(gs - sd) <= 1e-5 * (1 + sd), "std %g vs %g", gs, sd);
            /* the median lies between the order statistics */
            double q5 = num(cJSON_GetArrayItem(
                cJSON_GetArrayItem(get(get(sum, "quantiles"), "0.5"), o), j));
            int below = 0;
            for (int i = 0; i < 300; i++)
                below += col[i] < q5;
            ck_assert_msg(below >= 149 && below <= 151, "median splits %d/300", below);
            double q1 = num(cJSON_GetArrayItem(
                cJSON_GetArrayItem(get(get(sum, "quantiles"), "0.1"), o), j));
            double q9 = num(cJSON_GetArrayItem(
                cJSON_GetArrayItem(get(get(sum, "quantiles"), "0.9"), o), j));
            ck_assert(q1 <= q5 && q5 <= q9);
            double mp = num(cJSON_GetArrayItem(cJSON_GetArrayItem(get(sum, "map"), o), j));
            ck_assert(mp == col[best]);
        }
    }
    /* the sample log_prob is the model density of the samples */
    {
        const cJSON *so = cJSON_GetArrayItem(s, 1);
        char *xs = e2e_print(so);
        size_t n = strlen(xs) + 64;
        char *body = malloc(n);
        snprintf(body, n, "{\"x\":%s,\"y\":[1,2,3]}", xs);
        e2e_post(&D, "/v1/models/glow_cond/log_prob", body, &c);
        ck_assert_msg(c.status == 200, "%s", c.body);
        e2e_expect_close(get(c.json, "log_prob"), cJSON_GetArrayItem(lp, 1), 1e-4, 1e-3,
                         "sample log_prob vs log_prob");
        e2e_resp_free(&c);
        free(body);
        free(xs);
    }
    e2e_resp_free(&a);
}
END_TEST

START_TEST(sample_seed_and_temperature)
{
    struct e2e_resp a, b;
    /* no seed: the server picks one and echoes it; asking again with it reproduces */
    e2e_post(&D, "/v1/models/rnvp/sample", "{\"num_samples\":20}", &a);
    ck_assert_int_eq(a.status, 200);
    ck_assert(cJSON_IsNumber(get(a.json, "seed")));
    char req[128];
    snprintf(req, sizeof req, "{\"num_samples\":20,\"seed\":%.0f}", num(get(a.json, "seed")));
    e2e_post(&D, "/v1/models/rnvp/sample", req, &b);
    ck_assert_str_eq(a.body, b.body);
    e2e_resp_free(&b);
    e2e_post(&D, "/v1/models/rnvp/sample", "{\"num_samples\":20}", &b);
    ck_assert_str_ne(a.body, b.body);
    e2e_resp_free(&a);
    e2e_resp_free(&b);
    /* default num_samples is 1000 */
    e2e_post(&D, "/v1/models/rnvp/sample", "{\"seed\":3}", &a);
    ck_assert_int_eq(a.status, 200);
    ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetArrayItem(get(a.json, "samples"), 0)), 1000);
    e2e_resp_free(&a);
    /* temperature 0: every sample is the inverse of z = 0 */
    e2e_post(&D, "/v1/models/rnvp/sample", "{\"num_samples\":3,\"seed\":1,\"temperature\":0}",
             &a);
    ck_assert_int_eq(a.status, 200);
    e2e_post(&D, "/v1/models/rnvp/inverse", "{\"z\":[[0,0,0,0,0]]}", &b);
    ck_assert_int_eq(b.status, 200);
    const cJSON *s0 = cJSON_GetArrayItem(get(a.json, "samples"), 0);
    for (int i = 0; i < 3; i++)
        e2e_expect_close(cJSON_GetArrayItem(s0, i), cJSON_GetArrayItem(get(b.json, "x"), 0), 1e-6,
                         1e-7, "T=0 sample");
    e2e_resp_free(&a);
    e2e_resp_free(&b);
}
END_TEST

START_TEST(sample_resimulation)
{
    struct e2e_resp a;
    e2e_post(&D, "/v1/models/inn_ardizzone/sample",
             "{\"y\":[[0.1,0.2,0.3],[0,0,0]],\"num_samples\":50,\"seed\":9,"
             "\"outputs\":[\"samples\",\"resimulation\"]}", &a);
    ck_assert_msg(a.status == 200, "%s", a.body);
    const cJSON *rm = get(get(a.json, "resimulation"), "rmse");
    ck_assert_int_eq(cJSON_GetArraySize(rm), 2);
    for (int o = 0; o < 2; o++) {
        double v = num(cJSON_GetArrayItem(rm, o));
        ck_assert(isfinite(v) && v >= 0);
    }
    e2e_resp_free(&a);
    /* temperature 0 on an inn: x = inverse(0, y); forward(x).y reproduces y well only if
     * the model is exact; the rmse must equal the one computed from /forward */
    e2e_post(&D, "/v1/models/inn_ardizzone/sample",
             "{\"y\":[[0.1,0.2,0.3]],\"num_samples\":4,\"seed\":9,\"temperature\":0,"
             "\"outputs\":[\"samples\",\"resimulation\"]}", &a);
    ck_assert_int_eq(a.status, 200);
    const cJSON *x = cJSON_GetArrayItem(get(a.json, "samples"), 0);
    char *xs = e2e_print(x);
    char body[2048];
    snprintf(body, sizeof body, "{\"x\":%s}", xs);
    free(xs);
    struct e2e_resp f;
    e2e_post(&D, "/v1/models/inn_ardizzone/forward", body, &f);
    ck_assert_int_eq(f.status, 200);
    double s2 = 0;
    const double yv[3] = {0.1, 0.2, 0.3};
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 3; j++) {
            double d = num(cJSON_GetArrayItem(cJSON_GetArrayItem(get(f.json, "y"), i), j)) -
                       (double)(float)yv[j];
            s2 += d * d;
        }
    double want = sqrt(s2 / 12);
    double got = num(cJSON_GetArrayItem(get(get(a.json, "resimulation"), "rmse"), 0));
    ck_assert_msg(fabs(got - want) <= 1e-5 * (1 + want), "rmse %g vs %g", got, want);
    e2e_resp_free(&f);
    e2e_resp_free(&a);
    /* not for a cinn */
    e2e_post(&D, "/v1/models/glow_cond/sample",
             "{\"y\":[[0,0,0]],\"outputs\":[\"resimulation\"]}", &a);
    e2e_expect_error(&a, 422, "unsupported_operation", "resimulation");
    e2e_resp_free(&a);
}
END_TEST

START_TEST(sample_csv_and_npy)
{
    const char *req = "{\"y\":[[1,-20,0.25],[1.3,-18,0]],\"num_samples\":7,\"seed\":5,"
                      "\"outputs\":[\"samples\",\"log_prob\"]}";
    struct e2e_resp js, csv, npy;
    e2e_post(&D, "/v1/models/cinn_standardized/sample", req, &js);
    ck_assert_int_eq(js.status, 200);
    static const char *const hc[] = {"Accept: text/csv", NULL};
    e2e_request(&D, "POST", "/v1/models/cinn_standardized/sample", req, strlen(req), hc, &csv);
    ck_assert_int_eq(csv.status, 200);
    char h[128];
    ck_assert(strstr(e2e_header(&csv, "Content-Type", h, sizeof h), "text/csv") != NULL);
    ck_assert_str_eq(e2e_header(&csv, "X-Model", h, sizeof h), "cinn_standardized");
    ck_assert_str_eq(e2e_header(&csv, "X-Seed", h, sizeof h), "5");
    ck_assert(e2e_header(&csv, "X-Model-Sha256", h, sizeof h) != NULL);
    /* header line with the model's x names, then one line per sample */
    char *save = NULL;
    char *line = strtok_r(csv.body, "\n", &save);
    ck_assert_str_eq(line, "obs,sample,h,th1,th2,th3,th4,log_prob");
    const cJSON *S = get(js.json, "samples"), *LP = get(js.json, "log_prob");
    int rows = 0;
    while ((line = strtok_r(NULL, "\n", &save))) {
        int o, i;
        char *p = line;
        o = (int)strtol(p, &p, 10);
        ck_assert(*p == ',');
        i = (int)strtol(p + 1, &p, 10);
        ck_assert_int_eq(o, rows / 7);
        ck_assert_int_eq(i, rows % 7);
        for (int j = 0; j < 5; j++) {
            ck_assert(*p == ',');
            float v = strtof(p + 1, &p);
            float w = (float)num(cJSON_GetArrayItem(cJSON_GetArrayItem(cJSON_GetArrayItem(S, o),
                                                                       i), j));
            ck_assert_msg(v == w, "csv %g vs json %g", v, w);
        }
        ck_assert(*p == ',');
        double l = strtod(p + 1, &p);
        ck_assert(l == num(cJSON_GetArrayItem(cJSON_GetArrayItem(LP, o), i)));
        rows++;
    }
    ck_assert_int_eq(rows, 14);
    const char *req2 = "{\"y\":[[1,-20,0.25],[1.3,-18,0]],\"num_samples\":7,\"seed\":5}";
    static const char *const hn[] = {"Accept: application/x-npy", NULL};
    e2e_request(&D, "POST", "/v1/models/cinn_standardized/sample", req2, strlen(req2), hn, &npy);
    ck_assert_int_eq(npy.status, 200);
    ck_assert_str_eq(e2e_header(&npy, "Content-Type", h, sizeof h), "application/x-npy");
    ck_assert(npy.len > 10 && !memcmp(npy.body, "\x93NUMPY\x01\x00", 8));
    size_t hl = (unsigned char)npy.body[8] | ((size_t)(unsigned char)npy.body[9] << 8);
    ck_assert_int_eq((int)((10 + hl) % 64), 0);
    char *dict = strndup(npy.body + 10, hl);
    ck_assert_msg(strstr(dict, "'descr': '<f4'") && strstr(dict, "'fortran_order': False") &&
                  strstr(dict, "'shape': (2, 7, 5)"), "npy header %s", dict);
    free(dict);
    ck_assert_int_eq((int)npy.len, (int)(10 + hl + 2 * 7 * 5 * 4));
    const float *v = (const float *)(npy.body + 10 + hl);
    for (int o = 0; o < 2; o++)
        for (int i = 0; i < 7; i++)
            for (int j = 0; j < 5; j++) {
                float w = (float)num(cJSON_GetArrayItem(
                    cJSON_GetArrayItem(cJSON_GetArrayItem(S, o), i), j));
                ck_assert(memcmp(&v[(o * 7 + i) * 5 + j], &w, 4) == 0);
            }
    e2e_resp_free(&npy);
    /* npy carries the samples only */
    e2e_request(&D, "POST", "/v1/models/cinn_standardized/sample", req, strlen(req), hn, &npy);
    e2e_expect_error(&npy, 400, "invalid_field", "x-npy");
    e2e_resp_free(&npy);
    e2e_resp_free(&csv);
    e2e_resp_free(&js);
}
END_TEST

START_TEST(response_cap)
{
    struct e2e_resp r;
    /* certainly too large: refused before computing */
    e2e_post(&D, "/v1/models/rnvp/sample", "{\"num_samples\":200000,\"seed\":1}", &r);
    e2e_expect_error(&r, 413, "result_too_large", "fewer samples");
    e2e_resp_free(&r);
    /* found too large while printing JSON (~2 MB > 1 MB): same answer */
    e2e_post(&D, "/v1/models/rnvp/sample", "{\"num_samples\":40000,\"seed\":1}", &r);
    e2e_expect_error(&r, 413, "result_too_large", "application/x-npy");
    e2e_resp_free(&r);
    /* ... while the same samples as .npy (800 KB) fit */
    static const char *const hn[] = {"Accept: application/x-npy", NULL};
    const char *q = "{\"num_samples\":40000,\"seed\":1}";
    e2e_request(&D, "POST", "/v1/models/rnvp/sample", q, strlen(q), hn, &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_int_eq((int)r.len, 40000 * 5 * 4 + 128);
    e2e_resp_free(&r);
    /* over --max-samples */
    e2e_post(&D, "/v1/models/rnvp/sample", "{\"num_samples\":600000}", &r);
    e2e_expect_error(&r, 413, "too_large", "--max-samples");
    e2e_resp_free(&r);
}
END_TEST

START_TEST(preimage)
{
    struct e2e_resp r;
    e2e_post(&D, "/v1/models/mlp/preimage",
             "{\"target\":[[0.1,0.2,-0.1],[0,0,0]],\"num_solutions\":4,\"max_steps\":200,"
             "\"seed\":3}", &r);
    ck_assert_msg(r.status == 200, "%s", r.body);
    expect_model_fields(r.json, "mlp");
    ck_assert_int_eq((int)num(get(r.json, "seed")), 3);
    const cJSON *sol = get(r.json, "solutions");
    ck_assert_int_eq(cJSON_GetArraySize(sol), 2);
    const cJSON *t0 = cJSON_GetArrayItem(sol, 0);
    ck_assert(cJSON_GetArraySize(t0) >= 1 && cJSON_GetArraySize(t0) <= 4);
    double prev = -1;
    const cJSON *s;
    cJSON_ArrayForEach(s, t0) {
        ck_assert_int_eq(cJSON_GetArraySize(get(s, "x")), 4);
        double res = num(get(s, "residual"));
        ck_assert(res >= prev);
        prev = res;
    }
    /* same seed, same answer */
    struct e2e_resp b;
    e2e_post(&D, "/v1/models/mlp/preimage",
             "{\"target\":[[0.1,0.2,-0.1],[0,0,0]],\"num_solutions\":4,\"max_steps\":200,"
             "\"seed\":3}", &b);
    ck_assert_str_eq(r.body, b.body);
    e2e_resp_free(&b);
    e2e_resp_free(&r);
    e2e_post(&D, "/v1/models/mlp/preimage", "{\"target\":[[0.1,0.2]]}", &r);
    e2e_expect_error(&r, 400, "bad_shape", "target");
    e2e_resp_free(&r);
    e2e_post(&D, "/v1/models/mlp/preimage", "{\"target\":[[0.1,0.2,0.3]],\"method\":\"magic\"}",
             &r);
    e2e_expect_error(&r, 400, "invalid_field", "method");
    e2e_resp_free(&r);
}
END_TEST

/* ---- V2 ------------------------------------------------------------------------------------ */

START_TEST(v2_protocol)
{
    struct e2e_resp r, v1;
    e2e_get(&D, "/v2/models/glow_cond", &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_str_eq(get(r.json, "name")->valuestring, "glow_cond");
    ck_assert_str_eq(cJSON_GetArrayItem(get(r.json, "versions"), 0)->valuestring, "1");
    const cJSON *in0 = cJSON_GetArrayItem(get(r.json, "inputs"), 0);
    ck_assert_str_eq(get(in0, "name")->valuestring, "x");
    ck_assert_str_eq(get(in0, "datatype")->valuestring, "FP32");
    ck_assert_int_eq(cJSON_GetArrayItem(get(in0, "shape"), 1)->valueint, 6);
    e2e_resp_free(&r);
    e2e_get(&D, "/v2/models/glow_cond/ready", &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert(cJSON_IsTrue(get(r.json, "ready")));
    e2e_resp_free(&r);
    e2e_get(&D, "/v2/models/broken/ready", &r);
    ck_assert_int_eq(r.status, 503);
    ck_assert(cJSON_IsFalse(get(r.json, "ready")));
    e2e_resp_free(&r);
    e2e_get(&D, "/v2/models/versioned/versions/12", &r);
    ck_assert_int_eq(r.status, 200);
    e2e_resp_free(&r);
    e2e_get(&D, "/v2/models/versioned/versions/1", &r);
    e2e_expect_error(&r, 404, "model_not_found", "version");
    e2e_resp_free(&r);

    /* forward: flat FP32 data with a shape, as tritonclient sends it */
    e2e_post(&D, "/v2/models/glow_cond/infer",
             "{\"id\":\"r1\",\"inputs\":[{\"name\":\"x\",\"shape\":[2,6],\"datatype\":\"FP32\","
             "\"data\":[0.1,0.2,0.3,0.4,0.5,0.6,1,2,3,4,5,6]},{\"name\":\"y\",\"shape\":[1,3],"
             "\"datatype\":\"FP32\",\"data\":[[1,2,3]]}]}", &r);
    ck_assert_msg(r.status == 200, "%s", r.body);
    ck_assert_str_eq(get(r.json, "model_name")->valuestring, "glow_cond");
    ck_assert_str_eq(get(r.json, "model_version")->valuestring, "1");
    ck_assert_str_eq(get(r.json, "id")->valuestring, "r1");
    ck_assert_int_eq((int)strlen(get(get(r.json, "parameters"), "sha256")->valuestring), 64);
    e2e_post(&D, "/v1/models/glow_cond/forward",
             "{\"x\":[[0.1,0.2,0.3,0.4,0.5,0.6],[1,2,3,4,5,6]],\"y\":[[1,2,3]]}", &v1);
    const cJSON *o;
    int seen = 0;
    cJSON_ArrayForEach(o, get(r.json, "outputs")) {
        const char *nm = get(o, "name")->valuestring;
        if (!strcmp(nm, "z")) {
            ck_assert_str_eq(get(o, "datatype")->valuestring, "FP32");
            ck_assert_int_eq(cJSON_GetArrayItem(get(o, "shape"), 0)->valueint, 2);
            ck_assert_int_eq(cJSON_GetArrayItem(get(o, "shape"), 1)->valueint, 6);
            for (int i = 0; i < 12; i++)
                ck_assert(num(cJSON_GetArrayItem(get(o, "data"), i)) ==
                          num(cJSON_GetArrayItem(cJSON_GetArrayItem(get(v1.json, "z"), i / 6),
                                                 i % 6)));
            seen |= 1;
        } else if (!strcmp(nm, "log_det")) {
            ck_assert_str_eq(get(o, "datatype")->valuestring, "FP64");
            seen |= 2;
        }
    }
    ck_assert_int_eq(seen, 3);
    e2e_resp_free(&v1);
    e2e_resp_free(&r);

    /* sampling: parameters.operation */
    e2e_post(&D, "/v2/models/glow_cond/infer",
             "{\"inputs\":[{\"name\":\"y\",\"shape\":[1,3],\"datatype\":\"FP32\","
             "\"data\":[1,2,3]}],\"parameters\":{\"operation\":\"sample\",\"num_samples\":5,"
             "\"seed\":7},\"outputs\":[{\"name\":\"x\"}]}", &r);
    ck_assert_msg(r.status == 200, "%s", r.body);
    e2e_post(&D, "/v1/models/glow_cond/sample", "{\"y\":[[1,2,3]],\"num_samples\":5,\"seed\":7}",
             &v1);
    ck_assert_int_eq(cJSON_GetArraySize(get(r.json, "outputs")), 1);
    o = cJSON_GetArrayItem(get(r.json, "outputs"), 0);
    ck_assert_str_eq(get(o, "name")->valuestring, "x");
    ck_assert_int_eq(cJSON_GetArrayItem(get(o, "shape"), 1)->valueint, 5);
    ck_assert_int_eq(cJSON_GetArrayItem(get(o, "shape"), 2)->valueint, 6);
    for (int i = 0; i < 30; i++)
        ck_assert(num(cJSON_GetArrayItem(get(o, "data"), i)) ==
                  num(cJSON_GetArrayItem(cJSON_GetArrayItem(cJSON_GetArrayItem(
                      get(v1.json, "samples"), 0), i / 6), i % 6)));
    ck_assert_int_eq((int)num(get(get(r.json, "parameters"), "seed")), 7);
    e2e_resp_free(&v1);
    e2e_resp_free(&r);
    e2e_post(&D, "/v2/models/versioned/versions/12/infer",
             "{\"inputs\":[{\"name\":\"x\",\"shape\":[3],\"datatype\":\"FP64\","
             "\"data\":[0.1,0.2,0.3]}]}", &r);
    ck_assert_msg(r.status == 200, "%s", r.body);
    e2e_resp_free(&r);
    /* errors */
    e2e_post(&D, "/v2/models/glow_cond/infer",
             "{\"inputs\":[{\"name\":\"x\",\"shape\":[2,6],\"datatype\":\"FP32\","
             "\"data\":[1,2,3]}]}", &r);
    e2e_expect_error(&r, 400, "bad_shape", "'x'");
    e2e_resp_free(&r);
    e2e_post(&D, "/v2/models/glow_cond/infer",
             "{\"inputs\":[],\"parameters\":{\"operation\":\"dance\"}}", &r);
    e2e_expect_error(&r, 400, "invalid_field", "operation");
    e2e_resp_free(&r);
    e2e_post(&D, "/v2/models/glow_cond/infer",
             "{\"inputs\":[],\"parameters\":{\"binary_data_output\":true}}", &r);
    e2e_expect_error(&r, 400, "unknown_field", "binary_data_output");
    e2e_resp_free(&r);
    e2e_post(&D, "/v2/models/mlp/infer", "{\"inputs\":[],\"parameters\":{\"operation\":"
             "\"sample\"}}", &r);
    e2e_expect_error(&r, 422, "unsupported_operation", "mlp");
    e2e_resp_free(&r);
    e2e_post(&D, "/v2/models/glow_cond/infer",
             "{\"inputs\":[{\"name\":\"x\",\"shape\":[1,6],\"datatype\":\"FP16\","
             "\"data\":[1,2,3,4,5,6]}]}", &r);
    e2e_expect_error(&r, 400, "invalid_field", "FP16");
    e2e_resp_free(&r);
}
END_TEST

/* ---- errors -------------------------------------------------------------------------------- */

struct bad {
    const char *path, *body;
    long status;
    const char *code, *needle;
};

static const struct bad BAD[] = {
    {"/v1/models/rnvp/forward", "{", 400, "invalid_json", "not valid JSON"},
    {"/v1/models/rnvp/forward", "[1,2]", 400, "invalid_json", "JSON object"},
    {"/v1/models/rnvp/forward", "", 400, "invalid_json", "empty"},
    {"/v1/models/rnvp/forward", "{\"x\":[[1,2,3,4,5]]} trailing", 400, "invalid_json", "after"},
    {"/v1/models/rnvp/forward", "{\"x\":[[1,2,3,4,5]],\"foo\":1}", 400, "unknown_field", "'foo'"},
    {"/v1/models/rnvp/forward", "{\"x\":[[1,2,3,4,5]],\"x\":[[1,2,3,4,5]]}", 400, "invalid_field",
     "twice"},
    {"/v1/models/rnvp/forward", "{}", 400, "missing_field", "'x'"},
    {"/v1/models/rnvp/forward", "{\"x\":\"abc\"}", 400, "invalid_field", "x must be an array"},
    {"/v1/models/rnvp/forward", "{\"x\":[]}", 400, "bad_shape", "x is empty"},
    {"/v1/models/rnvp/forward", "{\"x\":[[1,2,3,4,5],[1,2,3,4]]}", 400, "bad_shape", "x[1]"},
    {"/v1/models/rnvp/forward", "{\"x\":[[1,2,3,4]]}", 400, "bad_shape", "dims.x"},
    {"/v1/models/rnvp/forward", "{\"x\":[[1,2,\"NaN\",4,5]]}", 400, "invalid_field", "x[0][2]"},
    {"/v1/models/rnvp/forward", "{\"x\":[[1,2,NaN,4,5]]}", 400, "invalid_json",
     "NaN is not a JSON number"},
    {"/v1/models/rnvp/forward", "{\"x\":[[1,2,1e39,4,5]]}", 400, "non_finite", "float32"},
    {"/v1/models/rnvp/forward", "{\"x\":[[1,2,-1e400,4,5]]}", 400, "non_finite", "x[0][2]"},
    {"/v1/models/rnvp/forward", "{\"x\":[[1,2,true,4,5]]}", 400, "invalid_field", "boolean"},
    {"/v1/models/rnvp/forward", "{\"x\":[[1,2,3,4,5]],\"y\":[[1]]}", 400, "unknown_field", "'y'"},
    {"/v1/models/rnvp/forward", "{\"x\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]"
     "]]]]]]]]]]]]]]]}", 400, "invalid_json", "deeper"},
    {"/v1/models/glow_cond/forward", "{\"x\":[[1,2,3,4,5,6]]}", 400, "missing_field", "'y'"},
    {"/v1/models/glow_cond/forward", "{\"x\":[[1,2,3,4,5,6],[1,2,3,4,5,6],[1,2,3,4,5,6]],"
     "\"y\":[[1,2,3],[1,2,3]]}", 400, "bad_shape", "y has 2 rows"},
    {"/v1/models/glow_cond/forward", "{\"x\":[[1,2,3,4,5,6]],\"y\":[[1,2]]}", 400, "bad_shape",
     "dims.y"},
    {"/v1/models/rnvp/inverse", "{\"z\":[[1,2,3,4,5]],\"tol\":0}", 400, "invalid_field", "tol"},
    {"/v1/models/rnvp/inverse", "{\"z\":[[1,2,3,4,5]],\"max_iter\":0}", 400, "invalid_field",
     "max_iter"},
    {"/v1/models/rnvp/inverse", "{\"z\":[[1,2,3,4,5]],\"method\":\"magic\"}", 400,
     "invalid_field", "method"},
    {"/v1/models/rnvp/inverse", "{\"x\":[[1,2,3,4,5]]}", 400, "unknown_field", "'x'"},
    {"/v1/models/inn_ardizzone/inverse", "{\"z\":[[1,2]]}", 400, "missing_field", "'y'"},
    {"/v1/models/rnvp/sample", "{\"num_samples\":-1}", 400, "invalid_field", "num_samples"},
    {"/v1/models/rnvp/sample", "{\"num_samples\":0}", 400, "invalid_field", "num_samples"},
    {"/v1/models/rnvp/sample", "{\"num_samples\":2.5}", 400, "invalid_field", "num_samples"},
    {"/v1/models/rnvp/sample", "{\"num_samples\":\"10\"}", 400, "invalid_field", "num_samples"},
    {"/v1/models/rnvp/sample", "{\"num_samples\":1e12}", 413, "too_large", "num_samples"},
    {"/v1/models/rnvp/sample", "{\"temperature\":-1}", 400, "invalid_field", "temperature"},
    {"/v1/models/rnvp/sample", "{\"temperature\":\"hot\"}", 400, "invalid_field", "temperature"},
    {"/v1/models/rnvp/sample", "{\"seed\":-1}", 400, "invalid_field", "seed"},
    {"/v1/models/rnvp/sample", "{\"seed\":1e300}", 400, "invalid_field", "seed"},
    {"/v1/models/rnvp/sample", "{\"outputs\":[\"foo\"]}", 400, "invalid_field", "outputs[0]"},
    {"/v1/models/rnvp/sample", "{\"outputs\":[]}", 400, "invalid_field", "outputs"},
    {"/v1/models/rnvp/sample", "{\"outputs\":[\"samples\",\"samples\"]}", 400, "invalid_field",
     "twice"},
    {"/v1/models/rnvp/sample", "{\"quantiles\":[0.5,2]}", 400, "invalid_field", "quantiles[1]"},
    {"/v1/models/rnvp/sample", "{\"y\":[[1]]}", 400, "unknown_field", "'y'"},
    {"/v1/models/rnvp/sample", "{\"n\":3}", 400, "unknown_field", "'n'"},
    {"/v1/models/glow_cond/sample", "{\"num_samples\":3}", 400, "missing_field", "'y'"},
    {"/v1/models/mlp/inverse", "{\"z\":[[1]]}", 422, "unsupported_operation", "mlp"},
    {"/v1/models/mlp/sample", "{}", 422, "unsupported_operation", "sample"},
    {"/v1/models/mlp/log_prob", "{\"x\":[[1,2,3,4]]}", 422, "unsupported_operation", "log_prob"},
    {"/v1/models/nosuch/forward", "{\"x\":[[1]]}", 404, "model_not_found", "nosuch"},
    {"/v1/models/broken/forward", "{\"x\":[[1]]}", 503, "model_unavailable", "broken"},
    {"/v1/models/rnvp/nosuchop", "{}", 404, "not_found", "nosuchop"},
};

START_TEST(bad_requests)
{
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        struct e2e_resp r;
        e2e_post(&D, BAD[i].path, BAD[i].body, &r);
        if (r.status != BAD[i].status)
            ck_abort_msg("case %zu (%s %s): status %ld, want %ld: %s", i, BAD[i].path,
                         BAD[i].body, r.status, BAD[i].status, r.body);
        e2e_expect_error(&r, BAD[i].status, BAD[i].code, BAD[i].needle);
        e2e_resp_free(&r);
    }
    /* the daemon is still fine */
    struct e2e_resp r;
    e2e_get(&D, "/healthz", &r);
    ck_assert_int_eq(r.status, 200);
    e2e_resp_free(&r);
}
END_TEST

/* NaN / Infinity literals (what JavaScript and Python's json.dumps write): 400 invalid_json,
 * saying that JSON has no such numbers, with the byte where the literal starts; the same on
 * the V2 route. */
START_TEST(nan_and_infinity_literals)
{
    static const struct {
        const char *path, *body, *want;
    } C[] = {
        {"/v1/models/rnvp/forward", "{\"x\": [[1, 2, NaN, 4, 5]]}",
         "{\"error\":\"NaN is not a JSON number (JSON has no NaN or Infinity); send finite "
         "numbers (the body is not valid JSON: error near byte 14)\",\"code\":\"invalid_json\"}\n"},
        {"/v1/models/rnvp/forward", "{\"x\":[[1,2,3,4,-Infinity]]}",
         "{\"error\":\"-Infinity is not a JSON number (JSON has no NaN or Infinity); send finite "
         "numbers (the body is not valid JSON: error near byte 15)\",\"code\":\"invalid_json\"}\n"},
        {"/v1/models/rnvp/inverse", "{\"z\":[[Infinity,1,2,3,4]]}",
         "{\"error\":\"Infinity is not a JSON number (JSON has no NaN or Infinity); send finite "
         "numbers (the body is not valid JSON: error near byte 7)\",\"code\":\"invalid_json\"}\n"},
        {"/v1/models/rnvp/sample", "{\"temperature\": nan}",
         "{\"error\":\"nan is not a JSON number (JSON has no NaN or Infinity); send finite "
         "numbers (the body is not valid JSON: error near byte 16)\",\"code\":\"invalid_json\"}\n"},
        {"/v2/models/rnvp/infer", "{\"inputs\":[{\"name\":\"x\",\"shape\":[1,5],"
         "\"datatype\":\"FP32\",\"data\":[1,2,3,4,NaN]}]}",
         "{\"error\":\"NaN is not a JSON number (JSON has no NaN or Infinity); send finite "
         "numbers (the body is not valid JSON: error near byte 71)\",\"code\":\"invalid_json\"}\n"},
    };
    for (size_t i = 0; i < sizeof C / sizeof C[0]; i++) {
        struct e2e_resp r;
        e2e_post(&D, C[i].path, C[i].body, &r);
        ck_assert_msg(r.status == 400, "%s %s: status %ld: %s", C[i].path, C[i].body, r.status,
                      r.body);
        ck_assert_msg(r.body && !strcmp(r.body, C[i].want), "%s %s:\n got  %s want %s",
                      C[i].path, C[i].body, r.body, C[i].want);
        e2e_resp_free(&r);
    }
}
END_TEST

START_TEST(http_errors)
{
    struct e2e_resp r;
    char h[64];
    e2e_get(&D, "/nope", &r);
    e2e_expect_error(&r, 404, "not_found", "/nope");
    e2e_resp_free(&r);
    e2e_get(&D, "/v1/models/nosuch", &r);
    e2e_expect_error(&r, 404, "model_not_found", "nosuch");
    e2e_resp_free(&r);
    e2e_get(&D, "/v1/models/rnvp/forward", &r);
    e2e_expect_error(&r, 405, "method_not_allowed", "POST");
    ck_assert_str_eq(e2e_header(&r, "Allow", h, sizeof h), "POST");
    e2e_resp_free(&r);
    e2e_request(&D, "DELETE", "/v1/models", NULL, 0, NULL, &r);
    e2e_expect_error(&r, 405, "method_not_allowed", NULL);
    ck_assert_str_eq(e2e_header(&r, "Allow", h, sizeof h), "GET, HEAD");
    e2e_resp_free(&r);
    e2e_post(&D, "/healthz", "{}", &r);
    e2e_expect_error(&r, 405, "method_not_allowed", NULL);
    e2e_resp_free(&r);
    static const char *const ct[] = {"Content-Type: text/plain", NULL};
    e2e_request(&D, "POST", "/v1/models/rnvp/forward", "{}", 2, ct, &r);
    e2e_expect_error(&r, 415, "unsupported_media_type", "application/json");
    e2e_resp_free(&r);
    static const char *const form[] = {"Content-Type: application/x-www-form-urlencoded", NULL};
    e2e_request(&D, "POST", "/v1/models/rnvp/forward", "a=b", 3, form, &r);
    e2e_expect_error(&r, 415, "unsupported_media_type", NULL);
    e2e_resp_free(&r);
    static const char *const ok[] = {"Content-Type: application/json; charset=utf-8", NULL};
    const char *fw = "{\"x\":[[1,2,3,4,5]]}";
    e2e_request(&D, "POST", "/v1/models/rnvp/forward", fw, strlen(fw), ok, &r);
    ck_assert_int_eq(r.status, 200);
    e2e_resp_free(&r);
    /* bodies over --max-body (1 MiB), with a length and chunked */
    size_t n = (1u << 20) + 100;
    char *big = malloc(n);
    memset(big, ' ', n);
    big[0] = '{';
    big[n - 1] = '}';
    e2e_request(&D, "POST", "/v1/models/rnvp/forward", big, n, NULL, &r);
    e2e_expect_error(&r, 413, "body_too_large", "--max-body");
    e2e_resp_free(&r);
    static const char *const chunked[] = {"Transfer-Encoding: chunked", NULL};
    e2e_request(&D, "POST", "/v1/models/rnvp/forward", big, n, chunked, &r);
    e2e_expect_error(&r, 413, "body_too_large", "--max-body");
    e2e_resp_free(&r);
    /* with Expect: 100-continue the answer comes before the body */
    static const char *const expect[] = {"Expect: 100-continue", NULL};
    e2e_request(&D, "POST", "/v1/models/rnvp/forward", big, n, expect, &r);
    e2e_expect_error(&r, 413, "body_too_large", NULL);
    e2e_resp_free(&r);
    free(big);
    /* a chunked body under the limit is fine */
    e2e_request(&D, "POST", "/v1/models/rnvp/forward", fw, strlen(fw), chunked, &r);
    ck_assert_int_eq(r.status, 200);
    e2e_resp_free(&r);
}
END_TEST

/* ---- keep-alive ------------------------------------------------------------------------------ */

static size_t sink(char *p, size_t s, size_t n, void *u)
{
    (void)p;
    (void)u;
    return s * n;
}

START_TEST(keep_alive)
{
    CURL *c = curl_easy_init();
    char url[128];
    struct curl_slist *hl = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    long total = 0;
    for (int i = 0; i < 6; i++) {
        if (i % 2) {
            snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/models/rnvp/sample", D.port);
            curl_easy_setopt(c, CURLOPT_POSTFIELDS, "{\"num_samples\":10,\"seed\":1}");
        } else {
            snprintf(url, sizeof url, "http://127.0.0.1:%d/healthz", D.port);
            curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
        }
        curl_easy_setopt(c, CURLOPT_URL, url);
        ck_assert_int_eq(curl_easy_perform(c), CURLE_OK);
        long code, conns;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
        curl_easy_getinfo(c, CURLINFO_NUM_CONNECTS, &conns);
        ck_assert_int_eq(code, 200);
        total += conns;
    }
    ck_assert_msg(total == 1, "%ld connections for 6 requests: keep-alive broken", total);
    curl_slist_free_all(hl);
    curl_easy_cleanup(c);
}
END_TEST

/* ---- metrics -------------------------------------------------------------------------------- */

START_TEST(metrics)
{
    struct e2e_resp r;
    e2e_post(&D, "/v1/models/rnvp/forward", "{\"x\":[[1,2,3,4,5]]}", &r);
    e2e_resp_free(&r);
    e2e_post(&D, "/v1/models/rnvp/sample", "{\"num_samples\":17,\"seed\":1}", &r);
    e2e_resp_free(&r);
    e2e_post(&D, "/v1/models/rnvp/forward", "{\"x\":[[1,2]]}", &r);
    e2e_resp_free(&r);
    e2e_get(&D, "/metrics", &r);
    ck_assert_int_eq(r.status, 200);
    char h[128];
    ck_assert(strstr(e2e_header(&r, "Content-Type", h, sizeof h), "text/plain") != NULL);
    static const char *const want[] = {
        "innserve_requests_total{model=\"rnvp\",operation=\"forward\",status=\"200\"}",
        "innserve_requests_total{model=\"rnvp\",operation=\"forward\",status=\"400\"}",
        "innserve_requests_total{model=\"rnvp\",operation=\"sample\",status=\"200\"}",
        "# TYPE innserve_request_duration_seconds histogram",
        "innserve_request_duration_seconds_bucket{operation=\"forward\",le=\"+Inf\"}",
        "innserve_queue_wait_seconds_bucket{operation=\"sample\"",
        "innserve_compute_seconds_count{operation=\"sample\"}",
        "innserve_in_flight_requests ",
        "innserve_queue_depth ",
        "innserve_samples_total{model=\"rnvp\"}",
        "innserve_model_state{model=\"rnvp\",version=\"1\",state=\"READY\"} 1",
        "innserve_model_state{model=\"broken\",version=\"1\",state=\"UNAVAILABLE\"} 1",
        "innserve_model_load_seconds{model=\"rnvp\",version=\"1\"}",
        NULL};
    for (int i = 0; want[i]; i++)
        ck_assert_msg(strstr(r.body, want[i]) != NULL, "metrics lack %s", want[i]);
    /* counters are numbers */
    const char *p = strstr(r.body, "innserve_samples_total{model=\"rnvp\"} ");
    ck_assert(p && atof(p + strlen("innserve_samples_total{model=\"rnvp\"} ")) >= 17);
    e2e_resp_free(&r);
    /* one access-log line per request, with its fields */
    ck_assert(e2e_log_count(&D, "\"event\":\"access\"") >= 3);
    char *log = tu_slurp(D.log, NULL);
    const char *a = strstr(log, "\"path\":\"/v1/models/rnvp/sample\"");
    ck_assert(a != NULL);
    const char *ls = a;
    while (ls > log && ls[-1] != '\n')
        ls--;
    const char *le = strchr(a, '\n');
    char *line = strndup(ls, (size_t)(le - ls));
    cJSON *j = cJSON_Parse(line);
    ck_assert_msg(j != NULL, "access line is not JSON: %s", line);
    static const char *const fields[] = {"time", "method", "path", "model", "operation",
                                         "status", "duration_ms", "bytes", NULL};
    for (int i = 0; fields[i]; i++)
        ck_assert_msg(get(j, fields[i]) != NULL, "access line lacks %s: %s", fields[i], line);
    cJSON_Delete(j);
    free(line);
    free(log);
}
END_TEST

/* ---- routes of openapi.yaml ------------------------------------------------------------------ */

START_TEST(openapi_routes_served)
{
    char *y = tu_slurp("proto/openapi.yaml", NULL);
    ck_assert_msg(y != NULL, "proto/openapi.yaml missing");
    char *p = strstr(y, "\npaths:\n");
    ck_assert(p != NULL);
    p += 8;
    int routes = 0;
    char path[256] = "";
    for (char *line = p; line && *line;) {
        char *eol = strchr(line, '\n');
        size_t len = eol ? (size_t)(eol - line) : strlen(line);
        if (len > 0 && line[0] != ' ' && line[0] != '#')
            break; /* next top-level key */
        if (len > 4 && !strncmp(line, "  /", 3) && line[len - 1] == ':') {
            snprintf(path, sizeof path, "%.*s", (int)(len - 3), line + 2);
        } else if (path[0] && len > 6 && !strncmp(line, "    ", 4) && line[4] != ' ' &&
                   (!strncmp(line + 4, "get:", 4) || !strncmp(line + 4, "post:", 5))) {
            char real[300] = "";
            const char *s = path;
            char *d = real;
            while (*s) {
                if (!strncmp(s, "{m}", 3)) {
                    d += sprintf(d, "%s", strstr(path, "versions") ? "versioned" : "glow_cond");
                    s += 3;
                } else if (!strncmp(s, "{v}", 3)) {
                    d += sprintf(d, "12");
                    s += 3;
                } else {
                    *d++ = *s++;
                }
            }
            *d = 0;
            bool post = line[4] == 'p';
            struct e2e_resp r;
            if (post)
                e2e_post(&D, real, "{}", &r);
            else
                e2e_get(&D, real, &r);
            const cJSON *code = r.json ? get(r.json, "code") : NULL;
            ck_assert_msg(r.status > 0 && r.status != 405 &&
                              !(r.status == 404 && code && !strcmp(code->valuestring,
                                                                   "not_found")),
                          "%s %s (openapi %s) is not served: %ld %s", post ? "POST" : "GET", real,
                          path, r.status, r.body);
            e2e_resp_free(&r);
            routes++;
        }
        line = eol ? eol + 1 : NULL;
    }
    ck_assert_msg(routes >= 20, "only %d routes found in openapi.yaml", routes);
    free(y);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("api");
    TCase *t = tcase_create("api");
    tcase_add_unchecked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 60);
    tcase_add_test(t, health_and_readiness);
    tcase_add_test(t, model_list);
    tcase_add_test(t, metadata_and_certificate);
    tcase_add_test(t, golden_forward_inverse_log_prob);
    tcase_add_test(t, log_prob_broadcasts_y);
    tcase_add_test(t, sample_json);
    tcase_add_test(t, sample_seed_and_temperature);
    tcase_add_test(t, sample_resimulation);
    tcase_add_test(t, sample_csv_and_npy);
    tcase_add_test(t, response_cap);
    tcase_add_test(t, preimage);
    tcase_add_test(t, v2_protocol);
    tcase_add_test(t, bad_requests);
    tcase_add_test(t, nan_and_infinity_literals);
    tcase_add_test(t, http_errors);
    tcase_add_test(t, keep_alive);
    tcase_add_test(t, metrics);
    tcase_add_test(t, openapi_routes_served);
    suite_add_tcase(s, t);
    return s;
}

E2E_MAIN
