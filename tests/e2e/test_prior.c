/*
 * test_prior.c — a model with a prior box (manifest "prior") served by the daemon:
 *
 *   - sample rejects outside the box by default: the exact body (samples and densities
 *     are the engine's eng_sample_prior for the same seed, printed as the daemon prints
 *     them, with the acceptance counts); "reject_outside_prior": false gives eng_sample's
 *     samples, densities outside the box written as null (JSON) and -inf (CSV);
 *   - the same bytes with 1 worker and batching off as with 3 workers, batching on and
 *     concurrent clients, and as a job;
 *   - the draw limit answers 422 rejection_limit naming the observation, the deadline 504;
 *   - log_prob is null outside the box; leakage_correction subtracts the log of the
 *     reported acceptance rate, deterministically for a seed;
 *   - calibration and mmd sample as sample does: inside the box by default (each pair's SBC
 *     ranks and the MMD are those of sample's samples for the same seed, with the same
 *     acceptance counts, the same bytes from 1 or 3 workers and as a job),
 *     "reject_outside_prior": false gives eng_sample's samples, and the draw limit answers
 *     422 naming the pair or observation;
 *   - a non-finite observation is refused (400), GET /v1/models/{m} shows the prior.
 */
#include "ckptw.h"
#include "e2eutil.h"
#include "../../engine/calib.h"
#include "../../proto/fmt.h"

#include <math.h>
#include <signal.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct e2e_daemon ONE, THREE;
static char DIR1[256], DIR3[256];

/* A cinn (x 2, y 1): one ConditionalAffineTransform whose subnet maps y to scales and
 * shifts, with the prior box `prior` (a JSON member text). */
static void write_model(const char *dir, const char *name, const char *prior)
{
    struct ckw c = {0};
    c.seed = 5;
    ckw_linear(&c, "cat.0", 1, 8, 1.0);
    ckw_linear(&c, "cat.2", 8, 4, 0.5);
    char fmt[2048];
    snprintf(fmt, sizeof fmt,
             "{\"format\":\"innserve-manifest\",\"version\":1,\"kind\":\"cinn\","
             "\"description\":\"cinn with a prior box (test model)\",\"dims\":{\"x\":2,\"y\":1},"
             "%s,\"conditions\":[{\"net\":null}],\"blocks\":["
             "{\"type\":\"ConditionalAffineTransform\",\"cond\":0,\"subnet\":{\"layers\":["
             "{\"type\":\"linear\",\"weight\":\"cat.0.weight\",\"bias\":\"cat.0.bias\"},"
             "{\"type\":\"tanh\"},"
             "{\"type\":\"linear\",\"weight\":\"cat.2.weight\",\"bias\":\"cat.2.bias\"}]}}]%%s}",
             prior);
    char path[512];
    snprintf(path, sizeof path, "%s/%s.safetensors", dir, name);
    ckw_finish(&c, fmt, 4, 2, 1, path);
    ckw_free(&c);
}

static const char *BOX = "\"prior\":{\"type\":\"box\",\"low\":[-1,-0.5],\"high\":[1.5,1]}";

static void models(char *dir)
{
    e2e_mkdtemp(dir);
    write_model(dir, "boxed", BOX);
    write_model(dir, "far", "\"prior\":{\"type\":\"box\",\"low\":[50,50],\"high\":[51,51]}");
}

static void setup(void)
{
    models(DIR1);
    models(DIR3);
    static const char *const one[] = {"--workers", "1", "--batch-delay-us", "0", NULL};
    static const char *const three[] = {"--workers", "3", "--http-threads", "4",
                                        "--batch-delay-us", "5000", NULL};
    ck_assert(e2e_start(&ONE, DIR1, one));
    ck_assert(e2e_start(&THREE, DIR3, three));
}

static void teardown(void)
{
    e2e_stop_checked(&ONE, "one worker", 30);
    e2e_stop_checked(&THREE, "three workers", 30);
}

static struct eng_model *load(const char *dir, const char *name)
{
    char path[512], err[ENG_ERR_LEN];
    snprintf(path, sizeof path, "%s/%s.safetensors", dir, name);
    struct eng_model *m = NULL;
    ck_assert_msg(eng_model_load(path, &m, err) == ENG_OK, "%s", err);
    return m;
}

struct sb {
    char s[1 << 16];
    size_t n;
};

static void put(struct sb *b, const char *s)
{
    size_t k = strlen(s);
    ck_assert(b->n + k < sizeof b->s);
    memcpy(b->s + b->n, s, k + 1);
    b->n += k;
}

static void put_f32(struct sb *b, float v)
{
    char t[PROTO_FMT_MAX + 1];
    t[proto_fmt_f32(t, v)] = 0;
    put(b, t);
}

static void put_f64(struct sb *b, double v)
{
    char t[PROTO_FMT_MAX + 1];
    t[proto_fmt_f64(t, v)] = 0;
    put(b, t);
}

/* The exact answer: samples and densities from the engine, the acceptance counts. */
START_TEST(sample_exact_body)
{
    struct eng_model *m = load(DIR1, "boxed");
    struct eng_ws *ws = eng_ws_new();
    const float y[2] = {0.3f, -1.2f};
    enum { N = 5 };
    struct sb want = {.n = 0};
    char head[256];
    snprintf(head, sizeof head, "{\"model\":\"boxed\",\"version\":\"1\",\"sha256\":\"%s\","
             "\"seed\":42,\"num_samples\":5,\"temperature\":1.0,\"shape\":[2,5,2],\"samples\":[",
             eng_model_info(m)->sha256);
    put(&want, head);
    float x[2][N * 2];
    double lp[2][N];
    struct eng_accept acc[2];
    char err[ENG_ERR_LEN];
    for (int o = 0; o < 2; o++) {
        ck_assert_int_eq(eng_sample_prior(m, ws, &y[o], 42, (uint32_t)o, N, 1.0f, 100000, x[o],
                                          lp[o], NULL, NULL, &acc[o], err), ENG_OK);
        ck_assert_uint_eq(acc[o].accepted, N);
        put(&want, o ? ",[" : "[");
        for (int i = 0; i < N; i++) {
            put(&want, i ? ",[" : "[");
            put_f32(&want, x[o][2 * i]);
            put(&want, ",");
            put_f32(&want, x[o][2 * i + 1]);
            put(&want, "]");
        }
        put(&want, "]");
    }
    put(&want, "],\"log_prob\":[");
    for (int o = 0; o < 2; o++) {
        put(&want, o ? ",[" : "[");
        for (int i = 0; i < N; i++) {
            if (i)
                put(&want, ",");
            put_f64(&want, lp[o][i]);
        }
        put(&want, "]");
    }
    put(&want, "],\"acceptance\":{\"rate\":[");
    for (int o = 0; o < 2; o++) {
        if (o)
            put(&want, ",");
        put_f64(&want, (double)acc[o].accepted / (double)acc[o].drawn);
    }
    char tail[256];
    snprintf(tail, sizeof tail, "],\"drawn\":[%llu,%llu],\"accepted\":[5,5]}}",
             (unsigned long long)acc[0].drawn, (unsigned long long)acc[1].drawn);
    put(&want, tail);
    /* the box rejects some candidates here: the test means something */
    ck_assert_uint_gt(acc[0].drawn + acc[1].drawn, 2 * N);
    struct e2e_resp r;
    e2e_post(&ONE, "/v1/models/boxed/sample", "{\"y\": [[0.3], [-1.2]], \"num_samples\": 5, "
             "\"seed\": 42, \"outputs\": [\"samples\", \"log_prob\"]}", &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_msg(strcmp(r.body, want.s) == 0 || (strlen(r.body) == want.n + 1 &&
                                                  strncmp(r.body, want.s, want.n) == 0),
                  "got  %s\nwant %s", r.body, want.s);
    e2e_resp_free(&r);
    eng_ws_free(ws);
    eng_model_unref(m);
}
END_TEST

/* Without rejection: eng_sample's samples, null / -inf densities outside the box, no
 * acceptance object. */
START_TEST(sample_without_rejection)
{
    struct eng_model *m = load(DIR1, "boxed");
    struct eng_ws *ws = eng_ws_new();
    const float y = 0.3f;
    enum { N = 64 };
    float x[N * 2];
    double lp[N];
    char err[ENG_ERR_LEN];
    ck_assert_int_eq(eng_sample(m, ws, &y, 7, 0, 0, N, 1.0f, x, lp, NULL, NULL, err), ENG_OK);
    int outside = 0;
    for (int i = 0; i < N; i++)
        outside += isinf(lp[i]) ? 1 : 0;
    ck_assert_int_gt(outside, 0);
    struct e2e_resp r;
    e2e_post(&ONE, "/v1/models/boxed/sample", "{\"y\": [0.3], \"num_samples\": 64, \"seed\": 7, "
             "\"outputs\": [\"samples\", \"log_prob\"], \"reject_outside_prior\": false}", &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_null(cJSON_GetObjectItemCaseSensitive(r.json, "acceptance"));
    const cJSON *s = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(r.json, "samples"), 0);
    const cJSON *l = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(r.json, "log_prob"), 0);
    for (int i = 0; i < N; i++) {
        const cJSON *row = cJSON_GetArrayItem(s, i);
        for (int j = 0; j < 2; j++)
            ck_assert((float)cJSON_GetArrayItem(row, j)->valuedouble == x[2 * i + j]);
        const cJSON *v = cJSON_GetArrayItem(l, i);
        if (isinf(lp[i]))
            ck_assert_msg(cJSON_IsNull(v), "sample %d: density outside the box not null", i);
        else
            ck_assert(cJSON_IsNumber(v) && v->valuedouble == lp[i]);
    }
    e2e_resp_free(&r);
    const char *const csv[] = {"Accept: text/csv", NULL};
    const char *body = "{\"y\": [0.3], \"num_samples\": 64, \"seed\": 7, \"outputs\": "
                       "[\"samples\", \"log_prob\"], \"reject_outside_prior\": false}";
    e2e_request(&ONE, "POST", "/v1/models/boxed/sample", body, strlen(body), csv, &r);
    ck_assert_int_eq(r.status, 200);
    int lines = 0;
    for (char *p = r.body; (p = strstr(p, ",-inf\n")); p++)
        lines++;
    ck_assert_int_eq(lines, outside);
    e2e_resp_free(&r);
    eng_ws_free(ws);
    eng_model_unref(m);
}
END_TEST

struct client {
    const struct e2e_daemon *d;
    const char *body;
    char *got;
};

static void *client_run(void *p)
{
    struct client *c = p;
    struct e2e_resp r;
    e2e_post(c->d, "/v1/models/boxed/sample", c->body, &r);
    c->got = r.status == 200 ? strdup(r.body) : NULL;
    e2e_resp_free(&r);
    return NULL;
}

/* 1 worker without batching and 3 workers with batching and 8 concurrent clients give
 * the same bytes, also for requests above a tile and with many observations. */
START_TEST(same_bytes_any_workers)
{
    static const char *const bodies[] = {
        "{\"y\": [[0.3]], \"num_samples\": 3, \"seed\": 1, \"outputs\": [\"samples\", \"log_prob\"]}",
        "{\"y\": [[0.3], [1.0], [-0.7]], \"num_samples\": 50, \"seed\": 2}",
        "{\"y\": [[0.1], [2.0]], \"num_samples\": 700, \"seed\": 3, \"outputs\": [\"samples\", "
        "\"summary\"]}",
        "{\"y\": [[0.3]], \"num_samples\": 2000, \"seed\": 4, \"async\": false}",
    };
    enum { NB = sizeof bodies / sizeof bodies[0], NC = 8 };
    for (int b = 0; b < NB; b++) {
        struct e2e_resp ref;
        e2e_post(&ONE, "/v1/models/boxed/sample", bodies[b], &ref);
        ck_assert_int_eq(ref.status, 200);
        ck_assert_ptr_nonnull(strstr(ref.body, "\"acceptance\":{\"rate\":["));
        struct client cl[NC];
        pthread_t th[NC];
        for (int i = 0; i < NC; i++) {
            cl[i] = (struct client){&THREE, bodies[b], NULL};
            ck_assert_int_eq(pthread_create(&th[i], NULL, client_run, &cl[i]), 0);
        }
        for (int i = 0; i < NC; i++) {
            pthread_join(th[i], NULL);
            ck_assert_msg(cl[i].got && strcmp(cl[i].got, ref.body) == 0,
                          "body %d client %d differs", b, i);
            free(cl[i].got);
        }
        e2e_resp_free(&ref);
    }
}
END_TEST

/* POST async_body (the request of `sync` with "async": true) to path: 202, and the job's
 * result, polled for up to 30 s, is 200 with exactly sync's body. */
static void expect_job_result(const struct e2e_resp *sync, const char *path,
                              const char *async_body)
{
    struct e2e_resp job, res;
    e2e_post(&THREE, path, async_body, &job);
    ck_assert_int_eq(job.status, 202);
    char url[256];
    snprintf(url, sizeof url, "%s/result",
             cJSON_GetObjectItemCaseSensitive(job.json, "url")->valuestring);
    double end = e2e_now_s() + 30;
    for (;;) {
        e2e_get(&THREE, url, &res);
        if (res.status != 409 || e2e_now_s() > end)
            break;
        e2e_resp_free(&res);
    }
    ck_assert_int_eq(res.status, 200);
    ck_assert_str_eq(res.body, sync->body);
    e2e_resp_free(&job), e2e_resp_free(&res);
}

/* A job gives the synchronous answer's bytes (one unit per observation there too). */
START_TEST(job_same_bytes)
{
    const char *body = "{\"y\": [[0.3], [1.0]], \"num_samples\": 600, \"seed\": 5}";
    const char *async_body = "{\"y\": [[0.3], [1.0]], \"num_samples\": 600, \"seed\": 5, "
                             "\"async\": true}";
    struct e2e_resp sync;
    e2e_post(&THREE, "/v1/models/boxed/sample", body, &sync);
    ck_assert_int_eq(sync.status, 200);
    expect_job_result(&sync, "/v1/models/boxed/sample", async_body);
    e2e_resp_free(&sync);
}
END_TEST

START_TEST(rejection_limit)
{
    struct e2e_resp r;
    e2e_post(&ONE, "/v1/models/far/sample", "{\"y\": [[0.3], [0.5]], \"num_samples\": 10, "
             "\"seed\": 1}", &r);
    e2e_expect_error(&r, 422, "rejection_limit",
                     "observation 0: only 0 of 10 samples fell inside the prior box in 100000 "
                     "candidates");
    ck_assert_ptr_nonnull(strstr(r.body, "reject_outside_prior"));
    e2e_resp_free(&r);
    /* without rejection the same request answers */
    e2e_post(&ONE, "/v1/models/far/sample", "{\"y\": [[0.3], [0.5]], \"num_samples\": 10, "
             "\"seed\": 1, \"reject_outside_prior\": false}", &r);
    ck_assert_int_eq(r.status, 200);
    e2e_resp_free(&r);
    e2e_post(&ONE, "/v1/models/far/log_prob", "{\"x\": [[50.5, 50.5]], \"y\": [[0.3]], "
             "\"leakage_correction\": true, \"leakage_samples\": 10}", &r);
    e2e_expect_error(&r, 422, "rejection_limit", "leakage_correction: y row 0: none of 100000 "
                     "candidates fell inside the prior box");
    e2e_resp_free(&r);
}
END_TEST

/* The request deadline stops a long rejection run too (504, never a hang). */
START_TEST(rejection_deadline)
{
    struct e2e_daemon d;
    static const char *const args[] = {"--workers", "1", "--deadline-ms", "200", NULL};
    ck_assert(e2e_start(&d, DIR1, args));
    struct e2e_resp r;
    double t0 = e2e_now_s();
    e2e_post(&d, "/v1/models/far/sample", "{\"y\": [[0.3]], \"num_samples\": 1000000, "
             "\"seed\": 1}", &r);
    e2e_expect_error(&r, 504, "deadline_exceeded", NULL);
    ck_assert_msg(e2e_now_s() - t0 < 10, "the deadline took %.1f s", e2e_now_s() - t0);
    e2e_resp_free(&r);
    ck_assert_int_eq(e2e_stop(&d, SIGTERM, 30), 0);
}
END_TEST

START_TEST(log_prob_support_and_leakage)
{
    struct e2e_resp r, c1, c2;
    const char *x = "\"x\": [[0, 0], [1.5, -0.5], [2, 0], [0, -0.6]], \"y\": [[0.3]]";
    char body[512];
    snprintf(body, sizeof body, "{%s}", x);
    e2e_post(&ONE, "/v1/models/boxed/log_prob", body, &r);
    ck_assert_int_eq(r.status, 200);
    const cJSON *lp = cJSON_GetObjectItemCaseSensitive(r.json, "log_prob");
    ck_assert(cJSON_IsNumber(cJSON_GetArrayItem(lp, 0)));
    ck_assert(cJSON_IsNumber(cJSON_GetArrayItem(lp, 1))); /* the corner is inside */
    ck_assert(cJSON_IsNull(cJSON_GetArrayItem(lp, 2)));
    ck_assert(cJSON_IsNull(cJSON_GetArrayItem(lp, 3)));
    ck_assert_ptr_null(cJSON_GetObjectItemCaseSensitive(r.json, "acceptance"));
    snprintf(body, sizeof body, "{%s, \"leakage_correction\": true, \"leakage_samples\": 2000, "
             "\"seed\": 9}", x);
    e2e_post(&ONE, "/v1/models/boxed/log_prob", body, &c1);
    e2e_post(&THREE, "/v1/models/boxed/log_prob", body, &c2);
    ck_assert_int_eq(c1.status, 200);
    ck_assert_str_eq(c1.body, c2.body);
    const cJSON *acc = cJSON_GetObjectItemCaseSensitive(c1.json, "acceptance");
    double drawn = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(acc, "drawn"), 0)->valuedouble;
    double accd = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(acc, "accepted"), 0)->valuedouble;
    ck_assert(accd == 2000 && drawn > 2000);
    ck_assert_int_eq((int)cJSON_GetObjectItemCaseSensitive(c1.json, "seed")->valuedouble, 9);
    const cJSON *lc = cJSON_GetObjectItemCaseSensitive(c1.json, "log_prob");
    for (int i = 0; i < 2; i++) {
        double want = cJSON_GetArrayItem(lp, i)->valuedouble - log(accd / drawn);
        ck_assert_msg(cJSON_GetArrayItem(lc, i)->valuedouble == want, "row %d", i);
    }
    ck_assert(cJSON_IsNull(cJSON_GetArrayItem(lc, 2)));
    e2e_resp_free(&r), e2e_resp_free(&c1), e2e_resp_free(&c2);
    /* the options that only apply with leakage_correction, and the parse errors */
    snprintf(body, sizeof body, "{%s, \"seed\": 9}", x);
    e2e_post(&ONE, "/v1/models/boxed/log_prob", body, &r);
    e2e_expect_error(&r, 400, "invalid_field", "seed only applies with \"leakage_correction\": true");
    e2e_resp_free(&r);
    e2e_post(&ONE, "/v1/models/boxed/sample", "{\"y\": [0.3], \"reject_outside_prior\": 1}", &r);
    e2e_expect_error(&r, 400, "invalid_field", "reject_outside_prior must be true or false");
    e2e_resp_free(&r);
}
END_TEST

/* Served samples of a sample answer: n_obs x L x 2 floats (as the daemon printed them). */
static void served_samples(const cJSON *json, int n_obs, int L, float *out)
{
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(json, "samples");
    ck_assert_int_eq(cJSON_GetArraySize(s), n_obs);
    for (int o = 0; o < n_obs; o++) {
        const cJSON *so = cJSON_GetArrayItem(s, o);
        ck_assert_int_eq(cJSON_GetArraySize(so), L);
        for (int l = 0; l < L; l++)
            for (int j = 0; j < 2; j++)
                out[((size_t)o * L + l) * 2 + j] =
                    (float)cJSON_GetArrayItem(cJSON_GetArrayItem(so, l), j)->valuedouble;
    }
}

static double acc_at(const cJSON *json, const char *what, int i)
{
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(json, "acceptance");
    ck_assert_ptr_nonnull(a);
    return cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(a, what), i)->valuedouble;
}

/* Calibration's SBC ranks of the pairs against the ranks of sample's samples for the same
 * y rows and seed; *outside counts the samples outside the box. */
static void check_calibration(const char *xs, const char *ys, int N, int L, bool reject,
                              int *outside, uint64_t *drawn)
{
    static const float lo[2] = {-1.0f, -0.5f}, hi[2] = {1.5f, 1.0f};
    char body[1024];
    const char *flag = reject ? "" : ", \"reject_outside_prior\": false";
    snprintf(body, sizeof body, "{\"x\": %s, \"y\": %s, \"num_samples\": %d, \"seed\": 11, "
             "\"diagnostics\": [\"sbc\"]%s}", xs, ys, L, flag);
    struct e2e_resp cal, cal3, smp;
    e2e_post(&ONE, "/v1/models/boxed/calibration", body, &cal);
    ck_assert_msg(cal.status == 200, "%ld %s", cal.status, cal.body);
    e2e_post(&THREE, "/v1/models/boxed/calibration", body, &cal3);
    ck_assert_str_eq(cal3.body, cal.body);
    snprintf(body, sizeof body, "{\"y\": %s, \"num_samples\": %d, \"seed\": 11%s}", ys, L,
             flag);
    e2e_post(&ONE, "/v1/models/boxed/sample", body, &smp);
    ck_assert_int_eq(smp.status, 200);
    float *x = malloc(sizeof(float) * (size_t)N * L * 2), theta[2];
    ck_assert_ptr_nonnull(x);
    served_samples(smp.json, N, L, x);
    *outside = 0;
    for (long i = 0; i < (long)N * L; i++)
        for (int j = 0; j < 2; j++)
            *outside += x[i * 2 + j] < lo[j] || x[i * 2 + j] > hi[j];
    cJSON *xj = cJSON_Parse(xs);
    const cJSON *ranks = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(cal.json, "sbc"), "ranks");
    *drawn = 0;
    for (int i = 0; i < N; i++) {
        int want[2];
        for (int j = 0; j < 2; j++)
            theta[j] = (float)cJSON_GetArrayItem(cJSON_GetArrayItem(xj, i), j)->valuedouble;
        cal_sbc_ranks(L, 2, x + (size_t)i * L * 2, theta, want);
        for (int j = 0; j < 2; j++)
            ck_assert_msg(cJSON_GetArrayItem(cJSON_GetArrayItem(ranks, i), j)->valuedouble ==
                          want[j], "pair %d dim %d: rank %g, sample's samples give %d", i, j,
                          cJSON_GetArrayItem(cJSON_GetArrayItem(ranks, i), j)->valuedouble,
                          want[j]);
        if (reject) {
            ck_assert(acc_at(cal.json, "drawn", i) == acc_at(smp.json, "drawn", i));
            ck_assert(acc_at(cal.json, "accepted", i) == L);
            *drawn += (uint64_t)acc_at(cal.json, "drawn", i);
        }
    }
    if (!reject)
        ck_assert_ptr_null(cJSON_GetObjectItemCaseSensitive(cal.json, "acceptance"));
    cJSON_Delete(xj);
    free(x);
    e2e_resp_free(&cal), e2e_resp_free(&cal3), e2e_resp_free(&smp);
}

START_TEST(calibration_rejects_as_sample)
{
    const char *xs = "[[0.2, 0.1], [1.2, -0.4], [-0.8, 0.9], [0.5, 0.5], [0, 0], [1.4, 0.2]]";
    const char *ys = "[[0.3], [1.0], [-1.2], [0.1], [2.0], [-0.4]]";
    enum { N = 6, L = 40 };
    int outside;
    uint64_t drawn;
    check_calibration(xs, ys, N, L, true, &outside, &drawn);
    ck_assert_int_eq(outside, 0);
    ck_assert_uint_gt(drawn, (uint64_t)N * L); /* the box rejected candidates */
    check_calibration(xs, ys, N, L, false, &outside, &drawn);
    ck_assert_int_gt(outside, 0);             /* without rejection some lie outside */
    /* a job answers with the same bytes */
    const char *body = "{\"x\": [[0.2, 0.1], [1.2, -0.4]], \"y\": [[0.3], [1.0]], "
                       "\"num_samples\": 600, \"seed\": 3}";
    const char *async_body = "{\"x\": [[0.2, 0.1], [1.2, -0.4]], \"y\": [[0.3], [1.0]], "
                             "\"num_samples\": 600, \"seed\": 3, \"async\": true}";
    struct e2e_resp sync;
    e2e_post(&THREE, "/v1/models/boxed/calibration", body, &sync);
    ck_assert_int_eq(sync.status, 200);
    ck_assert_ptr_nonnull(strstr(sync.body, "\"acceptance\":{\"rate\":["));
    expect_job_result(&sync, "/v1/models/boxed/calibration", async_body);
    e2e_resp_free(&sync);
}
END_TEST

/* The MMD of sample's samples (n x 2, then the reference rows) as the daemon computes it. */
static double mmd_of(const float *x, int n, const float *ref, int m)
{
    float *z = malloc(sizeof(float) * (size_t)(n + m) * 2);
    double *K = malloc(sizeof(double) * (size_t)(n + m) * (n + m));
    ck_assert(z && K);
    memcpy(z, x, sizeof(float) * (size_t)n * 2);
    memcpy(z + (size_t)n * 2, ref, sizeof(float) * (size_t)m * 2);
    static const double h[3] = {0.05, 0.2, 0.9};
    cal_imq_matrix(n + m, 2, z, 3, h, K);
    double v = cal_mmd2(n + m, n, K, NULL, true);
    free(z), free(K);
    return v;
}

START_TEST(mmd_rejects_as_sample)
{
    static const float lo[2] = {-1.0f, -0.5f}, hi[2] = {1.5f, 1.0f};
    const float ref[8] = {0.1f, 0.2f, 0.5f, -0.3f, 1.0f, 0.4f, -0.5f, 0.8f};
    const char *refs = "[[0.1, 0.2], [0.5, -0.3], [1.0, 0.4], [-0.5, 0.8]]";
    enum { N = 300 };
    double got[2];
    for (int k = 0; k < 2; k++) {
        const char *flag = k == 0 ? "" : ", \"reject_outside_prior\": false";
        char body[512];
        struct e2e_resp mmd, mmd3, smp;
        snprintf(body, sizeof body, "{\"y\": [0.3], \"reference\": %s, \"num_samples\": %d, "
                 "\"seed\": 8, \"permutations\": 20%s}", refs, N, flag);
        e2e_post(&ONE, "/v1/models/boxed/mmd", body, &mmd);
        ck_assert_msg(mmd.status == 200, "%ld %s", mmd.status, mmd.body);
        e2e_post(&THREE, "/v1/models/boxed/mmd", body, &mmd3);
        ck_assert_str_eq(mmd3.body, mmd.body);
        snprintf(body, sizeof body, "{\"y\": [0.3], \"num_samples\": %d, \"seed\": 8%s}", N,
                 flag);
        e2e_post(&ONE, "/v1/models/boxed/sample", body, &smp);
        ck_assert_int_eq(smp.status, 200);
        float x[N * 2];
        served_samples(smp.json, 1, N, x);
        int outside = 0;
        for (int i = 0; i < N; i++)
            for (int j = 0; j < 2; j++)
                outside += x[i * 2 + j] < lo[j] || x[i * 2 + j] > hi[j];
        got[k] = cJSON_GetObjectItemCaseSensitive(mmd.json, "mmd2")->valuedouble;
        ck_assert_msg(got[k] == mmd_of(x, N, ref, 4), "mmd2 %.17g, sample's samples give %.17g",
                      got[k], mmd_of(x, N, ref, 4));
        if (k == 0) {
            ck_assert_int_eq(outside, 0);
            ck_assert(acc_at(mmd.json, "drawn", 0) == acc_at(smp.json, "drawn", 0));
            ck_assert(acc_at(mmd.json, "accepted", 0) == N);
            ck_assert(acc_at(mmd.json, "drawn", 0) > N);
        } else {
            ck_assert_int_gt(outside, 0);
            ck_assert_ptr_null(cJSON_GetObjectItemCaseSensitive(mmd.json, "acceptance"));
        }
        e2e_resp_free(&mmd), e2e_resp_free(&mmd3), e2e_resp_free(&smp);
    }
    ck_assert(got[0] != got[1]);
}
END_TEST

START_TEST(calibration_mmd_rejection_limit)
{
    struct e2e_resp r;
    e2e_post(&ONE, "/v1/models/far/calibration", "{\"x\": [[50.5, 50.5], [50.2, 50.7]], "
             "\"y\": [[0.3], [0.5]], \"num_samples\": 10, \"seed\": 1}", &r);
    e2e_expect_error(&r, 422, "rejection_limit",
                     "pair 0: only 0 of 10 samples fell inside the prior box in 100000 "
                     "candidates");
    ck_assert_ptr_nonnull(strstr(r.body, "reject_outside_prior"));
    e2e_resp_free(&r);
    e2e_post(&ONE, "/v1/models/far/calibration", "{\"x\": [[50.5, 50.5], [50.2, 50.7]], "
             "\"y\": [[0.3], [0.5]], \"num_samples\": 10, \"seed\": 1, "
             "\"reject_outside_prior\": false}", &r);
    ck_assert_int_eq(r.status, 200);
    e2e_resp_free(&r);
    e2e_post(&ONE, "/v1/models/far/mmd", "{\"y\": [0.3], \"reference\": [[50.5, 50.5], "
             "[50.2, 50.7]], \"num_samples\": 10, \"seed\": 1}", &r);
    e2e_expect_error(&r, 422, "rejection_limit",
                     "observation 0: only 0 of 10 samples fell inside the prior box in 100000 "
                     "candidates");
    e2e_resp_free(&r);
    e2e_post(&ONE, "/v1/models/far/mmd", "{\"y\": [0.3], \"reference\": [[50.5, 50.5], "
             "[50.2, 50.7]], \"num_samples\": 10, \"seed\": 1, \"reject_outside_prior\": "
             "false}", &r);
    ck_assert_int_eq(r.status, 200);
    e2e_resp_free(&r);
    e2e_post(&ONE, "/v1/models/boxed/calibration", "{\"x\": [[0, 0]], \"y\": [[0.3]], "
             "\"reject_outside_prior\": \"no\"}", &r);
    e2e_expect_error(&r, 400, "invalid_field", "reject_outside_prior must be true or false");
    e2e_resp_free(&r);
}
END_TEST

START_TEST(nonfinite_observation_and_metadata)
{
    struct e2e_resp r;
    e2e_post(&ONE, "/v1/models/boxed/sample", "{\"y\": [[1e39]], \"num_samples\": 3}", &r);
    e2e_expect_error(&r, 400, "non_finite", "y");
    e2e_resp_free(&r);
    e2e_get(&ONE, "/v1/models/boxed", &r);
    ck_assert_int_eq(r.status, 200);
    ck_assert_ptr_nonnull(strstr(r.body, "\"prior\":{\"type\":\"box\",\"low\":[-1.0,-0.5],"
                                         "\"high\":[1.5,1.0]}"));
    e2e_resp_free(&r);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("prior");
    TCase *tc = tcase_create("prior");
    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, sample_exact_body);
    tcase_add_test(tc, sample_without_rejection);
    tcase_add_test(tc, same_bytes_any_workers);
    tcase_add_test(tc, job_same_bytes);
    tcase_add_test(tc, rejection_limit);
    tcase_add_test(tc, rejection_deadline);
    tcase_add_test(tc, log_prob_support_and_leakage);
    tcase_add_test(tc, calibration_rejects_as_sample);
    tcase_add_test(tc, mmd_rejects_as_sample);
    tcase_add_test(tc, calibration_mmd_rejection_limit);
    tcase_add_test(tc, nonfinite_observation_and_metadata);
    suite_add_tcase(s, tc);
    return s;
}

E2E_MAIN
