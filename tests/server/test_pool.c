/*
 * test_pool.c — server/pool.c with jobs of its own (no HTTP, no model): every unit runs
 * and `done` follows once; a full queue refuses; a passed deadline calls `expired` once,
 * sets the cancel flag a running unit sees, and `done` still follows; with batching on,
 * batchable jobs queued behind a busy worker are computed in one batch_run call per key
 * (in submission order, within the row limit), each still getting its own `done`; a job
 * submitted behind a background job's many units runs before the units left of it.
 * Waits are bounded (10 s) so a broken pool fails instead of hanging.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../server/pool.h"
#include "../unit/testutil.h"

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;

struct tjob {
    struct srv_job job; /* first */
    int id;
    atomic_int units, dones, expireds, batched;
    atomic_uint seen;   /* bit per unit index */
    bool gate_wait;     /* unit waits until `gate` opens */
    bool until_cancel;  /* unit runs until its cancel flag is set */
    bool saw_cancel;
    int expired_before_done;
};

static bool gate;
static int batch_calls;
static int batch_order[64], n_order;

static void signal_all(void)
{
    pthread_mutex_lock(&mu);
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

/* Waits until *v >= want (10 s at most); returns the value seen. */
static int wait_ge(atomic_int *v, int want)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 10;
    pthread_mutex_lock(&mu);
    while (atomic_load(v) < want && pthread_cond_timedwait(&cv, &mu, &ts) == 0)
        ;
    pthread_mutex_unlock(&mu);
    return atomic_load(v);
}

static void t_unit(struct srv_job *j, int idx, struct eng_ws *ws)
{
    struct tjob *t = (struct tjob *)j;
    atomic_fetch_or(&t->seen, 1u << idx);
    if (t->gate_wait) {
        pthread_mutex_lock(&mu);
        while (!gate)
            pthread_cond_wait(&cv, &mu);
        pthread_mutex_unlock(&mu);
    }
    if (t->until_cancel) {
        for (int i = 0; i < 10000 && !atomic_load(&j->cancel); i++) {
            struct timespec d = {0, 1000000};
            nanosleep(&d, NULL);
        }
        t->saw_cancel = atomic_load(&j->cancel);
    }
    atomic_fetch_add(&t->units, 1);
}

static void t_done(struct srv_job *j)
{
    struct tjob *t = (struct tjob *)j;
    t->expired_before_done = atomic_load(&t->expireds);
    atomic_fetch_add(&t->dones, 1);
    signal_all();
}

static void t_expired(struct srv_job *j)
{
    atomic_fetch_add(&((struct tjob *)j)->expireds, 1);
    signal_all();
}

static void t_batch(struct srv_job *first, struct eng_ws *ws)
{
    pthread_mutex_lock(&mu);
    batch_calls++;
    for (struct srv_job *j = first; j; j = j->batch_next) {
        atomic_fetch_add(&((struct tjob *)j)->batched, 1);
        if (n_order < 64)
            batch_order[n_order++] = ((struct tjob *)j)->id;
    }
    batch_order[n_order < 64 ? n_order++ : 63] = -1; /* end of this batch */
    pthread_mutex_unlock(&mu);
}

static void init(struct tjob *t, int id, int n_units)
{
    memset(t, 0, sizeof *t);
    t->id = id;
    t->job.unit = t_unit;
    t->job.done = t_done;
    t->job.expired = t_expired;
    t->job.n_units = n_units;
    atomic_init(&t->job.cancel, false);
    atomic_init(&t->job.skip_after, 1 << 30);
}

static void batchable(struct tjob *t, int id, const void *key, int rows)
{
    init(t, id, 1);
    t->job.batch_key = key;
    t->job.batch_op = 1;
    t->job.batch_rows = rows;
    t->job.batch_run = t_batch;
}

START_TEST(every_unit_runs_and_done_follows_once)
{
    struct srv_pool *p = srv_pool_new(2, 8, 0, 256);
    ck_assert(p != NULL);
    static struct tjob a;
    init(&a, 1, 5);
    ck_assert(srv_pool_submit(p, &a.job));
    ck_assert_int_eq(wait_ge(&a.dones, 1), 1);
    ck_assert_int_eq(atomic_load(&a.units), 5);
    ck_assert_uint_eq(atomic_load(&a.seen), 0x1fu);
    ck_assert_int_eq(atomic_load(&a.expireds), 0);
    ck_assert_int_eq(srv_pool_active(p), 0);
    srv_pool_free(p);
    ck_assert_int_eq(atomic_load(&a.dones), 1);
}
END_TEST

START_TEST(a_full_queue_refuses)
{
    struct srv_pool *p = srv_pool_new(1, 1, 0, 256);
    static struct tjob blocker, a, b;
    gate = false;
    init(&blocker, 0, 1);
    blocker.gate_wait = true;
    init(&a, 1, 1);
    init(&b, 2, 1);
    ck_assert(srv_pool_submit(p, &blocker.job));
    /* wait until the worker holds the blocker (it leaves the queue) */
    for (int i = 0; i < 10000 && atomic_load(&blocker.seen) == 0; i++) {
        struct timespec d = {0, 1000000};
        nanosleep(&d, NULL);
    }
    ck_assert_uint_eq(atomic_load(&blocker.seen), 1u);
    ck_assert(srv_pool_submit(p, &a.job));
    ck_assert_int_eq(srv_pool_depth(p), 1);
    ck_assert(!srv_pool_submit(p, &b.job)); /* --queue 1: refused */
    pthread_mutex_lock(&mu);
    gate = true;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    ck_assert_int_eq(wait_ge(&a.dones, 1), 1);
    ck_assert_int_eq(wait_ge(&blocker.dones, 1), 1);
    ck_assert_int_eq(atomic_load(&b.units), 0);
    srv_pool_free(p);
}
END_TEST

START_TEST(a_deadline_expires_and_cancels_the_running_unit)
{
    struct srv_pool *p = srv_pool_new(1, 4, 0, 256);
    static struct tjob a;
    init(&a, 1, 3);
    a.until_cancel = true; /* unit 0 runs until the job is cancelled (10 s at most) */
    a.job.deadline_ns = srv_now_ns() + 50000000LL;
    ck_assert(srv_pool_submit(p, &a.job));
    ck_assert_int_eq(wait_ge(&a.dones, 1), 1);
    ck_assert_int_eq(atomic_load(&a.expireds), 1);
    ck_assert_int_eq(a.expired_before_done, 1); /* expired first, then done */
    ck_assert(a.saw_cancel);
    ck_assert_int_eq(atomic_load(&a.units), 1); /* units 1 and 2 were skipped */
    srv_pool_free(p);
}
END_TEST

/* One worker busy with unit 0 of a background job of 4 units; a job submitted meanwhile
 * runs next, before units 1..3. */
static atomic_int g_order_pos;
static int g_fg_at = -1;

static void t_unit_ordered(struct srv_job *j, int idx, struct eng_ws *ws)
{
    struct tjob *t = (struct tjob *)j;
    int pos = atomic_fetch_add(&g_order_pos, 1);
    if (t->id == 2)
        g_fg_at = pos;
    t_unit(j, idx, ws);
}

START_TEST(a_job_runs_before_the_rest_of_a_background_job)
{
    struct srv_pool *p = srv_pool_new(1, 8, 0, 256);
    static struct tjob bg, fg;
    gate = false;
    atomic_store(&g_order_pos, 0);
    init(&bg, 1, 4);
    bg.job.unit = t_unit_ordered;
    bg.job.background = true;
    bg.gate_wait = true;
    init(&fg, 2, 1);
    fg.job.unit = t_unit_ordered;
    ck_assert(srv_pool_submit(p, &bg.job));
    for (int i = 0; i < 10000 && atomic_load(&bg.seen) == 0; i++) {
        struct timespec d = {0, 1000000};
        nanosleep(&d, NULL);
    }
    ck_assert_uint_eq(atomic_load(&bg.seen), 1u); /* the worker holds unit 0 */
    ck_assert(srv_pool_submit(p, &fg.job));
    pthread_mutex_lock(&mu);
    gate = true;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    ck_assert_int_eq(wait_ge(&bg.dones, 1), 1);
    ck_assert_int_eq(wait_ge(&fg.dones, 1), 1);
    ck_assert_int_eq(g_fg_at, 1); /* right after the unit that was running */
    ck_assert_int_eq(atomic_load(&bg.units), 4);
    srv_pool_free(p);
}
END_TEST

START_TEST(batchable_jobs_behind_a_busy_worker_share_one_batch)
{
    static int key1, key2;
    struct srv_pool *p = srv_pool_new(1, 64, 1000000 /* 1 ms */, 256);
    static struct tjob blocker, j[8];
    gate = false;
    batch_calls = 0;
    n_order = 0;
    init(&blocker, 0, 1);
    blocker.gate_wait = true;
    ck_assert(srv_pool_submit(p, &blocker.job));
    for (int i = 0; i < 10000 && atomic_load(&blocker.seen) == 0; i++) {
        struct timespec d = {0, 1000000};
        nanosleep(&d, NULL);
    }
    batchable(&j[0], 1, &key1, 1);
    batchable(&j[1], 2, &key1, 3);
    batchable(&j[2], 3, &key2, 1);   /* another key: its own batch */
    batchable(&j[3], 4, &key1, 2);
    batchable(&j[4], 5, &key1, 200); /* 1 + 3 + 2 + 200 = 206 rows fit */
    batchable(&j[5], 6, &key1, 100); /* does not fit: opens a second key1 batch */
    for (int i = 0; i < 6; i++)
        ck_assert(srv_pool_submit(p, &j[i].job));
    ck_assert_int_eq(srv_pool_depth(p), 6); /* a batch counts each of its jobs */
    pthread_mutex_lock(&mu);
    gate = true;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    for (int i = 0; i < 6; i++)
        ck_assert_int_eq(wait_ge(&j[i].dones, 1), 1);
    srv_pool_free(p);
    for (int i = 0; i < 6; i++) {
        ck_assert_int_eq(atomic_load(&j[i].dones), 1);
        ck_assert_int_eq(atomic_load(&j[i].batched), 1);
        ck_assert_int_eq(atomic_load(&j[i].units), 0); /* batch_run, not unit */
    }
    ck_assert_int_eq(batch_calls, 3);
    const int want[] = {1, 2, 4, 5, -1, 3, -1, 6, -1};
    ck_assert_int_eq(n_order, 9);
    for (int i = 0; i < 9; i++)
        ck_assert_int_eq(batch_order[i], want[i]);
    (void)key2;
}
END_TEST

START_TEST(batch_statistics_count_jobs_and_rows)
{
    static int key;
    struct srv_pool *p = srv_pool_new(1, 64, 1000000, 256);
    static struct tjob blocker, j[3];
    gate = false;
    init(&blocker, 0, 1);
    blocker.gate_wait = true;
    ck_assert(srv_pool_submit(p, &blocker.job));
    for (int i = 0; i < 10000 && atomic_load(&blocker.seen) == 0; i++) {
        struct timespec d = {0, 1000000};
        nanosleep(&d, NULL);
    }
    for (int i = 0; i < 3; i++) {
        batchable(&j[i], i + 1, &key, 5);
        ck_assert(srv_pool_submit(p, &j[i].job));
    }
    pthread_mutex_lock(&mu);
    gate = true;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(wait_ge(&j[i].dones, 1), 1);
    struct srv_batch_stats s;
    srv_pool_batch_stats(p, &s);
    srv_pool_free(p);
    ck_assert_uint_eq(s.batches, 1);
    ck_assert_uint_eq(s.jobs_sum, 3);
    ck_assert_uint_eq(s.rows_sum, 15);
    ck_assert_uint_eq(s.jobs[2], 1); /* 3 jobs: the "at most 4" bucket */
    ck_assert_uint_eq(s.rows[4], 1); /* 15 rows: the "at most 16" bucket */
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("server_pool");
    TCase *tc = tcase_create("pool");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, every_unit_runs_and_done_follows_once);
    tcase_add_test(tc, a_full_queue_refuses);
    tcase_add_test(tc, a_deadline_expires_and_cancels_the_running_unit);
    tcase_add_test(tc, a_job_runs_before_the_rest_of_a_background_job);
    tcase_add_test(tc, batchable_jobs_behind_a_busy_worker_share_one_batch);
    tcase_add_test(tc, batch_statistics_count_jobs_and_rows);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN
