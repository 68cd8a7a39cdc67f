/*
 * test_batching.c — dynamic batching (--batch-delay-us) seen from outside: concurrent
 * forward / log_prob requests (v1 and V2, y broadcast and per row, every model kind) and
 * sample requests (one or several observations, seeds, temperatures, outputs with log_prob,
 * summary, re-simulation, an i-ResNet with and without its own solver options, some too
 * large to batch) answered by a daemon that batches them get exactly the bytes a daemon
 * with batching off gives each request alone, and /metrics shows batches of more than one
 * request.
 */
#include "ckptw.h"
#include "e2eutil.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct e2e_daemon OFF, ON;

static void models(char *dir)
{
    e2e_mkdtemp(dir);
    e2e_copy_fixture(dir, "glow_cond", "glow_cond.safetensors");
    e2e_copy_fixture(dir, "rnvp", "rnvp.safetensors");
    e2e_copy_fixture(dir, "inn_standardized", "inn.safetensors");
    e2e_copy_fixture(dir, "cinn_condnet", "condnet.safetensors");
    e2e_copy_fixture(dir, "mlp_standardized", "mlp.safetensors");
    char path[320];
    snprintf(path, sizeof path, "%s/big.safetensors", dir);
    /* the reference cINN with wider subnets: a forward row costs a few hundred µs, so
     * requests arriving during one computation queue up and are batched */
    ckw_reference_cinn(path, 16, 8, 512, 8, 11);
    size_t n;
    char *b = tu_slurp("models/iresnet_toy.safetensors", &n);
    ck_assert_msg(b != NULL, "models/iresnet_toy.safetensors is missing");
    e2e_write_file(dir, "iresnet.safetensors", b, n);
    free(b);
}

static void setup(void)
{
    char a[256], b[256];
    models(a);
    models(b);
    static const char *const off[] = {"--workers", "1", "--batch-delay-us", "0", NULL};
    static const char *const on[] = {"--workers", "1", "--http-threads", "4",
                                     "--batch-delay-us", "5000", NULL};
    ck_assert(e2e_start(&OFF, a, off));
    ck_assert(e2e_start(&ON, b, on));
}

static void teardown(void)
{
    e2e_stop_checked(&OFF, "batching off", 30);
    e2e_stop_checked(&ON, "batching on", 30);
}

/* ---- the requests ----------------------------------------------------------------------- */

struct model {
    const char *name;
    int x, y;          /* widths of x and of y */
    bool fwd_y;        /* forward takes y (cinn) */
    bool lp, lp_y;     /* log_prob defined; it takes y */
};

static const struct model MODELS[] = {
    {"glow_cond", 6, 3, true, true, true},
    {"rnvp", 5, 0, false, true, false},
    {"inn", 4, 2, false, true, true},
    {"condnet", 5, 3, true, true, true},
    {"mlp", 5, 2, false, false, false},
    {"big", 16, 8, true, true, true},
};
#define N_MODELS (int)(sizeof MODELS / sizeof MODELS[0])
#define NQ_ROWS 48 /* forward / log_prob requests */
#define NQ (NQ_ROWS + 30)

/* The models that sample: y width (0 for a flow), whether re-simulation is defined, whether
 * the inverse is numeric. */
struct sampler {
    const char *name;
    int y;
    bool resim, numeric;
};

static const struct sampler SAMPLERS[] = {
    {"glow_cond", 3, false, false}, {"rnvp", 0, false, false}, {"inn", 2, true, false},
    {"condnet", 3, false, false},   {"big", 8, false, false},  {"iresnet", 0, false, true},
};
#define N_SAMPLERS (int)(sizeof SAMPLERS / sizeof SAMPLERS[0])

struct req {
    char path[96];
    char body[2048];
};

static void matrix(char *b, size_t cap, size_t *n, int rows, int cols, int q, int salt)
{
    *n += (size_t)snprintf(b + *n, cap - *n, "[");
    for (int r = 0; r < rows; r++) {
        *n += (size_t)snprintf(b + *n, cap - *n, "%s[", r ? "," : "");
        for (int c = 0; c < cols; c++)
            *n += (size_t)snprintf(b + *n, cap - *n, "%s%g", c ? "," : "",
                                   0.125 * ((q * 7 + r * 3 + c * 5 + salt) % 17) - 1.0);
        *n += (size_t)snprintf(b + *n, cap - *n, "]");
    }
    *n += (size_t)snprintf(b + *n, cap - *n, "]");
}

/* Sample request i: 1-3 observations of 1-64 samples (two requests of 400 samples, which
 * are not batched), its own seed and temperature, outputs, v1 or V2; solver options on half
 * the i-ResNet requests. */
static void make_sample_req(int i, struct req *out)
{
    const struct sampler *m = &SAMPLERS[i % N_SAMPLERS];
    static const int counts[] = {1, 5, 17, 40, 64, 3, 9};
    static const char *const temps[] = {"1", "0.5", "0.8"};
    static const char *const outs[] = {"[\"samples\"]", "[\"samples\",\"log_prob\"]",
                                       "[\"samples\",\"summary\"]",
                                       "[\"samples\",\"resimulation\"]"};
    int n_obs = m->y ? 1 + (i / N_SAMPLERS) % 3 : 1;
    int ns = i % 13 == 7 ? 400 : counts[i % 7];
    bool v2 = i % 5 == 3;
    int o = i % 4 == 3 && !m->resim ? 1 : i % 4;
    size_t n = 0, cap = sizeof out->body;
    if (v2) {
        snprintf(out->path, sizeof out->path, "/v2/models/%s/infer", m->name);
        n += (size_t)snprintf(out->body, cap, "{\"inputs\":[");
        if (m->y) {
            n += (size_t)snprintf(out->body + n, cap - n, "{\"name\":\"y\",\"shape\":[%d,%d],"
                                  "\"datatype\":\"FP32\",\"data\":", n_obs, m->y);
            matrix(out->body, cap, &n, n_obs, m->y, i, 2);
            n += (size_t)snprintf(out->body + n, cap - n, "}");
        }
        snprintf(out->body + n, cap - n, "],\"parameters\":{\"operation\":\"sample\","
                 "\"num_samples\":%d,\"seed\":%d,\"temperature\":%s%s}}", ns, 100 + i,
                 temps[i % 3], m->numeric && i % 2 ? ",\"tol\":1e-5" : "");
        return;
    }
    snprintf(out->path, sizeof out->path, "/v1/models/%s/sample", m->name);
    n += (size_t)snprintf(out->body, cap, "{");
    if (m->y) {
        n += (size_t)snprintf(out->body + n, cap - n, "\"y\":");
        matrix(out->body, cap, &n, n_obs, m->y, i, 2);
        n += (size_t)snprintf(out->body + n, cap - n, ",");
    }
    snprintf(out->body + n, cap - n, "\"num_samples\":%d,\"seed\":%d,\"temperature\":%s,"
             "\"outputs\":%s%s}", ns, 100 + i, temps[i % 3], outs[o],
             m->numeric && i % 2 ? ",\"tol\":1e-5,\"method\":\"anderson\"" : "");
}

/* Request q: a model, forward or log_prob, 1-3 rows, y broadcast or per row, v1 or V2;
 * past NQ_ROWS, sample requests. */
static void make_req(int q, struct req *out)
{
    if (q >= NQ_ROWS) {
        make_sample_req(q - NQ_ROWS, out);
        return;
    }
    const struct model *m = &MODELS[q % N_MODELS];
    bool lp = m->lp && (q / N_MODELS) % 2 == 1;
    bool v2 = !lp && q % 5 == 0;
    bool need_y = lp ? m->lp_y : m->fwd_y;
    int rows = 1 + q % 3;
    int yrows = (q / 2) % 2 ? rows : 1;
    size_t n = 0, cap = sizeof out->body;
    if (v2) {
        snprintf(out->path, sizeof out->path, "/v2/models/%s/infer", m->name);
        n += (size_t)snprintf(out->body, cap, "{\"inputs\":[{\"name\":\"x\",\"shape\":[%d,%d],"
                              "\"datatype\":\"FP32\",\"data\":", rows, m->x);
        matrix(out->body, cap, &n, rows, m->x, q, 0);
        n += (size_t)snprintf(out->body + n, cap - n, "}");
        if (need_y) {
            n += (size_t)snprintf(out->body + n, cap - n, ",{\"name\":\"y\",\"shape\":[%d,%d],"
                                  "\"datatype\":\"FP32\",\"data\":", yrows, m->y);
            matrix(out->body, cap, &n, yrows, m->y, q, 1);
            n += (size_t)snprintf(out->body + n, cap - n, "}");
        }
        snprintf(out->body + n, cap - n, "]}");
        return;
    }
    snprintf(out->path, sizeof out->path, "/v1/models/%s/%s", m->name,
             lp ? "log_prob" : "forward");
    n += (size_t)snprintf(out->body, cap, "{\"x\":");
    matrix(out->body, cap, &n, rows, m->x, q, 0);
    if (need_y) {
        n += (size_t)snprintf(out->body + n, cap - n, ",\"y\":");
        matrix(out->body, cap, &n, yrows, m->y, q, 1);
    }
    snprintf(out->body + n, cap - n, "}");
}

static struct req REQ[NQ];
static char *REF[NQ];

static void references(void)
{
    for (int q = 0; q < NQ; q++) {
        make_req(q, &REQ[q]);
        struct e2e_resp r;
        e2e_post(&OFF, REQ[q].path, REQ[q].body, &r);
        ck_assert_msg(r.status == 200, "%s %s: %ld %s", REQ[q].path, REQ[q].body, r.status,
                      r.body);
        REF[q] = strdup(r.body);
        e2e_resp_free(&r);
    }
}

struct client {
    int id, fails, first_bad;
    pthread_barrier_t *start;
    int burst; /* 0: every request in turn; BURST_ROWS, BURST_SAMPLES: one request at once */
};

enum { BURST_ROWS = 1, BURST_SAMPLES };

static void *client_main(void *arg)
{
    struct client *c = arg;
    c->first_bad = -1;
    pthread_barrier_wait(c->start);
    for (int k = 0; k < (c->burst ? 1 : NQ); k++) {
        /* burst: every client sends a request for the big model at once (forward /
         * log_prob, or sample) */
        int q = c->burst == BURST_ROWS
                    ? (N_MODELS - 1) + N_MODELS * (c->id % (NQ_ROWS / N_MODELS))
                : c->burst == BURST_SAMPLES
                    ? NQ_ROWS + 4 + N_SAMPLERS * (c->id % ((NQ - NQ_ROWS) / N_SAMPLERS))
                    : (c->id * 5 + k) % NQ;
        struct e2e_resp r;
        e2e_post(&ON, REQ[q].path, REQ[q].body, &r);
        if (r.status != 200 || strcmp(r.body, REF[q]) != 0) {
            c->fails++;
            if (c->first_bad < 0)
                c->first_bad = q;
        }
        e2e_resp_free(&r);
    }
    return NULL;
}

static int run_clients(int n, int burst)
{
    pthread_t th[32];
    struct client cl[32];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)n);
    for (int i = 0; i < n; i++) {
        cl[i] = (struct client){i, 0, -1, &start, burst};
        pthread_create(&th[i], NULL, client_main, &cl[i]);
    }
    int fails = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(th[i], NULL);
        fails += cl[i].fails;
        if (cl[i].first_bad >= 0)
            fprintf(stderr, "client %d: request %d (%s %s) differs\n", i, cl[i].first_bad,
                    REQ[cl[i].first_bad].path, REQ[cl[i].first_bad].body);
    }
    pthread_barrier_destroy(&start);
    return fails;
}

/* A value of /metrics (the first line starting with `name `), -1 when absent. */
static double metric(const struct e2e_daemon *d, const char *name)
{
    struct e2e_resp r;
    e2e_get(d, "/metrics", &r);
    ck_assert_int_eq(r.status, 200);
    double v = -1;
    size_t l = strlen(name);
    for (const char *p = r.body; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (!strncmp(p, name, l) && p[l] == ' ') {
            v = strtod(p + l + 1, NULL);
            break;
        }
    e2e_resp_free(&r);
    return v;
}

START_TEST(batched_answers_are_the_bytes_of_lone_ones)
{
    references();
    int fails = run_clients(16, false);
    ck_assert_msg(fails == 0, "%d of %d concurrent answers differ from the unbatched ones",
                  fails, 16 * NQ);
    fails = run_clients(24, BURST_ROWS);
    ck_assert_msg(fails == 0, "%d of 24 burst answers differ from the unbatched ones", fails);
    /* sample requests are batched too */
    double b0 = metric(&ON, "innserve_batch_requests_count");
    double r0 = metric(&ON, "innserve_batch_requests_sum");
    fails = run_clients(24, BURST_SAMPLES);
    ck_assert_msg(fails == 0, "%d of 24 burst sample answers differ from the unbatched ones",
                  fails);
    double b1 = metric(&ON, "innserve_batch_requests_count");
    double r1 = metric(&ON, "innserve_batch_requests_sum");
    ck_assert_msg(r1 - r0 > b1 - b0, "sample burst: %g requests in %g batches", r1 - r0,
                  b1 - b0);
    /* batches of more than one request were formed */
    double batches = metric(&ON, "innserve_batch_requests_count");
    double singles = metric(&ON, "innserve_batch_requests_bucket{le=\"1\"}");
    double total = metric(&ON, "innserve_batch_requests_sum");
    ck_assert_msg(batches > 0 && singles >= 0 && batches > singles,
                  "no batch of more than one request: %g batches, %g of one request", batches,
                  singles);
    ck_assert_msg(total > batches, "%g requests in %g batches", total, batches);
    ck_assert(metric(&ON, "innserve_batch_rows_sum") >= total);
    /* with --batch-delay-us 0 nothing is batched */
    ck_assert_msg(metric(&OFF, "innserve_batches_total") == 0, "batches with batching off");
    for (int q = 0; q < NQ; q++)
        free(REF[q]);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("batching");
    TCase *t = tcase_create("batching");
    tcase_add_unchecked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 180);
    tcase_add_test(t, batched_answers_are_the_bytes_of_lone_ones);
    suite_add_tcase(s, t);
    return s;
}

E2E_MAIN
