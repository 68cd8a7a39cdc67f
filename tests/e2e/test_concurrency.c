/*
 * test_concurrency.c — the worker pool seen from outside: identical bytes for a seed
 * whatever the number of workers (tiles split at multiples of ENG_TILE_ROWS), concurrent
 * clients get the answers a lone client gets, a full queue answers 503 with Retry-After,
 * a request past its deadline answers 504 while the daemon keeps serving, and the work of
 * a request that passed its deadline stops (the next request is not delayed by it).
 */
#include "ckptw.h"
#include "e2eutil.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct e2e_daemon W1, W4;

static void models(char *dir)
{
    e2e_mkdtemp(dir);
    e2e_copy_fixture(dir, "glow_cond", "glow_cond.safetensors");
    e2e_copy_fixture(dir, "rnvp", "rnvp.safetensors");
    e2e_copy_fixture(dir, "inn_standardized", "inn.safetensors");
    e2e_copy_fixture(dir, "cinn_condnet", "condnet.safetensors");
}

static void setup(void)
{
    char a[256], b[256];
    models(a);
    models(b);
    static const char *const one[] = {"--workers", "1", NULL};
    static const char *const four[] = {"--workers", "4", "--http-threads", "4", NULL};
    ck_assert(e2e_start(&W1, a, one));
    ck_assert(e2e_start(&W4, b, four));
}

static void teardown(void)
{
    e2e_stop_checked(&W1, "workers=1", 30);
    e2e_stop_checked(&W4, "workers=4", 30);
}

/* Requests whose units are split differently with 1 and 4 workers. */
static const char *const REQS[][2] = {
    {"/v1/models/glow_cond/sample", "{\"y\":[[0.5,-1,0.25],[1,2,3],[0,0,0]],\"num_samples\":1500,"
     "\"seed\":77,\"outputs\":[\"samples\",\"log_prob\",\"summary\"]}"},
    {"/v1/models/rnvp/sample", "{\"num_samples\":5000,\"seed\":1,\"temperature\":0.7,"
     "\"outputs\":[\"samples\",\"log_prob\"]}"},
    {"/v1/models/inn/sample", "{\"y\":[[3,-0.5],[2,0]],\"num_samples\":700,\"seed\":5,"
     "\"outputs\":[\"samples\",\"log_prob\",\"resimulation\"]}"},
    {"/v1/models/condnet/sample", "{\"y\":[[1,2,3]],\"num_samples\":1025,\"seed\":2}"},
};

START_TEST(same_bytes_with_1_and_4_workers)
{
    for (size_t i = 0; i < sizeof REQS / sizeof REQS[0]; i++) {
        struct e2e_resp a, b;
        e2e_post(&W1, REQS[i][0], REQS[i][1], &a);
        e2e_post(&W4, REQS[i][0], REQS[i][1], &b);
        ck_assert_msg(a.status == 200 && b.status == 200, "%s: %ld %ld %s", REQS[i][0],
                      a.status, b.status, a.body);
        ck_assert_msg(a.len == b.len && memcmp(a.body, b.body, a.len) == 0,
                      "%s: answers differ between 1 and 4 workers", REQS[i][0]);
        e2e_resp_free(&a);
        e2e_resp_free(&b);
    }
    /* a batch of rows split across workers */
    char *body = malloc(1 << 20);
    size_t n = (size_t)sprintf(body, "{\"x\":[");
    for (int i = 0; i < 1000; i++)
        n += (size_t)sprintf(body + n, "%s[%g,%g,%g,%g,%g]", i ? "," : "", i * 0.001, -0.5,
                             0.25 * (i % 7), 1.0, -i * 0.002);
    sprintf(body + n, "]}");
    struct e2e_resp a, b;
    e2e_post(&W1, "/v1/models/rnvp/forward", body, &a);
    e2e_post(&W4, "/v1/models/rnvp/forward", body, &b);
    ck_assert_int_eq(a.status, 200);
    ck_assert_str_eq(a.body, b.body);
    e2e_resp_free(&a);
    e2e_resp_free(&b);
    free(body);
}
END_TEST

struct client {
    int id;
    int fails;
    char **ref;
};

#define N_CLIENTS 8
#define N_EACH 12

static void *client_main(void *arg)
{
    struct client *c = arg;
    for (int k = 0; k < N_EACH; k++) {
        int q = (c->id + k) % N_EACH;
        char body[256];
        snprintf(body, sizeof body, "{\"y\":[[%d,1,-1]],\"num_samples\":%d,\"seed\":%d,"
                 "\"outputs\":[\"samples\",\"log_prob\"]}", q, 200 + 50 * q, 1000 + q);
        struct e2e_resp r;
        e2e_post(&W4, "/v1/models/glow_cond/sample", body, &r);
        if (r.status != 200 || strcmp(r.body, c->ref[q]) != 0)
            c->fails++;
        e2e_resp_free(&r);
    }
    return NULL;
}

START_TEST(concurrent_clients_get_reproducible_answers)
{
    char *ref[N_EACH];
    for (int q = 0; q < N_EACH; q++) {
        char body[256];
        snprintf(body, sizeof body, "{\"y\":[[%d,1,-1]],\"num_samples\":%d,\"seed\":%d,"
                 "\"outputs\":[\"samples\",\"log_prob\"]}", q, 200 + 50 * q, 1000 + q);
        struct e2e_resp r;
        e2e_post(&W1, "/v1/models/glow_cond/sample", body, &r);
        ck_assert_int_eq(r.status, 200);
        ref[q] = strdup(r.body);
        e2e_resp_free(&r);
    }
    pthread_t th[N_CLIENTS];
    struct client cl[N_CLIENTS];
    for (int i = 0; i < N_CLIENTS; i++) {
        cl[i] = (struct client){i, 0, ref};
        pthread_create(&th[i], NULL, client_main, &cl[i]);
    }
    int fails = 0;
    for (int i = 0; i < N_CLIENTS; i++) {
        pthread_join(th[i], NULL);
        fails += cl[i].fails;
    }
    ck_assert_msg(fails == 0, "%d of %d concurrent answers differ from the serial ones", fails,
                  N_CLIENTS * N_EACH);
    for (int q = 0; q < N_EACH; q++)
        free(ref[q]);
}
END_TEST

/* ---- queue full and deadlines: their own small daemons ----------------------------------- */

struct shot {
    const struct e2e_daemon *d;
    const char *path, *body;
    long status;
    char retry[16];
    double seconds;
};

static void *shot_main(void *arg)
{
    struct shot *s = arg;
    struct e2e_resp r;
    e2e_post(s->d, s->path, s->body, &r);
    s->status = r.status;
    s->seconds = r.seconds;
    if (!e2e_header(&r, "Retry-After", s->retry, sizeof s->retry))
        s->retry[0] = 0;
    e2e_resp_free(&r);
    return NULL;
}

START_TEST(queue_full_is_503_with_retry_after)
{
    char dir[256];
    models(dir);
    struct e2e_daemon d;
    static const char *const args[] = {"--workers", "1", "--queue", "1", "--http-threads", "4",
                                       "--retry-after", "2", NULL};
    ck_assert(e2e_start(&d, dir, args));
    enum { N = 8 };
    pthread_t th[N];
    struct shot s[N];
    for (int i = 0; i < N; i++) {
        s[i] = (struct shot){&d, "/v1/models/rnvp/sample",
                             "{\"num_samples\":400000,\"seed\":1,\"outputs\":[\"log_prob\"]}", 0,
                             "", 0};
        pthread_create(&th[i], NULL, shot_main, &s[i]);
    }
    int ok = 0, busy = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        if (s[i].status == 200)
            ok++;
        else if (s[i].status == 503) {
            busy++;
            ck_assert_str_eq(s[i].retry, "2");
        } else
            ck_abort_msg("unexpected status %ld", s[i].status);
    }
    ck_assert_msg(ok >= 1 && busy >= 1, "%d ok, %d busy", ok, busy);
    struct e2e_resp r;
    e2e_post(&d, "/v1/models/rnvp/sample", "{\"num_samples\":10,\"seed\":1}", &r);
    ck_assert_int_eq(r.status, 200);
    e2e_resp_free(&r);
    e2e_get(&d, "/metrics", &r);
    ck_assert(strstr(r.body, "status=\"503\"") != NULL);
    e2e_resp_free(&r);
    ck_assert_int_eq(e2e_stop(&d, SIGTERM, 30), 0);
}
END_TEST

START_TEST(deadline_is_504)
{
    char dir[256];
    models(dir);
    struct e2e_daemon d;
    static const char *const args[] = {"--workers", "1", "--deadline-ms", "40", NULL};
    ck_assert(e2e_start(&d, dir, args));
    struct e2e_resp r;
    e2e_post(&d, "/v1/models/glow_cond/sample",
             "{\"y\":[[1,2,3]],\"num_samples\":1000000,\"seed\":1,\"outputs\":[\"log_prob\"]}",
             &r);
    e2e_expect_error(&r, 504, "deadline_exceeded", "--deadline-ms");
    ck_assert_msg(r.seconds < 5.0, "504 came after %.2f s", r.seconds);
    e2e_resp_free(&r);
    /* small requests work again once the worker has dropped the cancelled job (its
     * running unit finishes; the rest are skipped) */
    long st = 0;
    for (int i = 0; i < 500 && st != 200; i++) {
        e2e_post(&d, "/v1/models/rnvp/forward", "{\"x\":[[1,2,3,4,5]]}", &r);
        st = r.status;
        ck_assert_msg(st == 200 || st == 504, "status %ld", st);
        e2e_resp_free(&r);
        if (st != 200)
            usleep(20000);
    }
    ck_assert_int_eq(st, 200);
    ck_assert_int_eq(e2e_stop(&d, SIGTERM, 30), 0);
}
END_TEST

/* A 504 stops the work: the sample request below needs more than 20 s of compute (an
 * i-ResNet flow inverted to tol 1e-12: about 0.2 s per 256-sample tile here, 256 tiles, in
 * 4 units of 64 tiles with one worker), its deadline is 3 s.  Once it has answered 504, the
 * one worker must be free again after at most one tile, so a small request sent right
 * after it gets 200 within its own 3 s.  Were the running unit finished (64 tiles, >10 s),
 * the small request would wait for it and get 504 too. */
START_TEST(deadline_stops_the_running_work)
{
    char dir[256], path[320];
    e2e_mkdtemp(dir);
    snprintf(path, sizeof path, "%s/slow.safetensors", dir);
    ckw_iresnet_flow(path, 16, 64, 0.99, 7);
    struct e2e_daemon d;
    static const char *const args[] = {"--workers", "1", "--deadline-ms", "3000", NULL};
    ck_assert(e2e_start(&d, dir, args));
    struct e2e_resp r;
    e2e_post(&d, "/v1/models/slow/sample",
             "{\"num_samples\":65536,\"seed\":1,\"tol\":1e-12}", &r);
    e2e_expect_error(&r, 504, "deadline_exceeded", "--deadline-ms");
    e2e_resp_free(&r);
    e2e_post(&d, "/v1/models/slow/forward",
             "{\"x\":[[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]]}", &r);
    ck_assert_msg(r.status == 200, "the request after a 504 got %ld: %s", r.status, r.body);
    e2e_resp_free(&r);
    ck_assert_int_eq(e2e_stop(&d, SIGTERM, 30), 0);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("concurrency");
    TCase *t = tcase_create("pool");
    tcase_add_unchecked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 120);
    tcase_add_test(t, same_bytes_with_1_and_4_workers);
    tcase_add_test(t, concurrent_clients_get_reproducible_answers);
    suite_add_tcase(s, t);
    TCase *u = tcase_create("limits");
    tcase_set_timeout(u, 120);
    tcase_add_test(u, queue_full_is_503_with_retry_after);
    tcase_add_test(u, deadline_is_504);
    tcase_add_test(u, deadline_stops_the_running_work);
    suite_add_tcase(s, u);
    return s;
}

E2E_MAIN
