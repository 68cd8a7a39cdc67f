/*
 * test_batch_rows.c — what the daemon's dynamic batching relies on: a row's forward and
 * log_prob results, bit for bit, do not depend on the other rows computed in the same call
 * (alone, among 40 others, in reverse order) nor on whether its y is broadcast or given per
 * row; eng_sample_rows gives each row the bytes eng_sample gives that draw alone (samples,
 * densities and solver statistics), in any order and mix of seeds, observations, sample
 * indices and temperatures; and eng_resimulate returns the squared distance of
 * eng_forward's y to the observation.  Checked on every checkpoint of
 * tests/fixtures/golden/ and models/.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

enum { N = 41 };

static uint64_t lcg(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 11;
}

/* Uniform in [-1, 1). */
static float unif(uint64_t *s)
{
    return (float)((double)lcg(s) / 4503599627370496.0 - 1.0);
}

struct out {
    float *z, *yo;
    double *ld, *lp;
    enum eng_status fst, lst;
};

static void run(const struct eng_model *m, struct eng_ws *ws, int n, const float *x,
                const float *y, int yrows, struct out *o)
{
    const struct eng_info *info = eng_model_info(m);
    const struct eng_dims *d = &info->dims;
    char err[ENG_ERR_LEN];
    bool ycond = info->kind == ENG_KIND_CINN;
    o->fst = eng_forward(m, ws, n, x, ycond ? y : NULL, ycond ? yrows : 0,
                         d->z ? o->z : NULL, (info->kind == ENG_KIND_INN ||
                                              info->kind == ENG_KIND_MLP) ? o->yo : NULL,
                         info->kind == ENG_KIND_MLP ? NULL : o->ld, err);
    bool ylp = info->kind != ENG_KIND_FLOW;
    o->lst = eng_log_prob(m, ws, n, x, ylp ? y : NULL, ylp ? yrows : 0, o->lp, err);
}

static void alloc_out(struct out *o, const struct eng_dims *d)
{
    o->z = calloc((size_t)N * (size_t)(d->z + 1), sizeof(float));
    o->yo = calloc((size_t)N * (size_t)(d->y + 1), sizeof(float));
    o->ld = calloc(N, sizeof(double));
    o->lp = calloc(N, sizeof(double));
}

static void free_out(struct out *o)
{
    free(o->z), free(o->yo), free(o->ld), free(o->lp);
}

/* Row i of a equals row j of b, bit for bit, for every output that succeeded in both. */
static void same_row(const char *name, const char *how, const struct eng_model *m,
                     const struct out *a, int i, const struct out *b, int j)
{
    const struct eng_info *info = eng_model_info(m);
    const struct eng_dims *d = &info->dims;
    ck_assert_msg(a->fst == b->fst && a->lst == b->lst, "%s (%s): statuses differ", name, how);
    if (a->fst == ENG_OK) {
        if (d->z)
            ck_assert_msg(!memcmp(a->z + (size_t)i * d->z, b->z + (size_t)j * d->z,
                                  sizeof(float) * (size_t)d->z),
                          "%s (%s): z of row %d differs", name, how, i);
        if (info->kind == ENG_KIND_INN || info->kind == ENG_KIND_MLP)
            ck_assert_msg(!memcmp(a->yo + (size_t)i * d->y, b->yo + (size_t)j * d->y,
                                  sizeof(float) * (size_t)d->y),
                          "%s (%s): y of row %d differs", name, how, i);
        if (info->kind != ENG_KIND_MLP)
            ck_assert_msg(!memcmp(&a->ld[i], &b->ld[j], sizeof(double)),
                          "%s (%s): log_det of row %d differs", name, how, i);
    }
    if (a->lst == ENG_OK)
        ck_assert_msg(!memcmp(&a->lp[i], &b->lp[j], sizeof(double)),
                      "%s (%s): log_prob of row %d differs", name, how, i);
}

/* ---- sampling: eng_sample_rows against eng_sample ----------------------------------------- */

enum { NS = 37 };

struct samples {
    float *x;
    double lp[NS], res[NS], bound[NS];
    int it[NS];
    bool conv[NS];
    enum eng_status st[NS];
};

static struct eng_solver_stats stats_of(struct samples *s, int i)
{
    return (struct eng_solver_stats){s->it + i, s->res + i, s->bound + i, s->conv + i, false};
}

static void same_sample(const char *name, const char *how, int dx, const struct samples *a,
                        int i, const struct samples *b, int j)
{
    ck_assert_msg(!memcmp(a->x + (size_t)i * dx, b->x + (size_t)j * dx, sizeof(float) * dx),
                  "%s (%s): x of row %d differs", name, how, i);
    ck_assert_msg(!memcmp(&a->lp[i], &b->lp[j], sizeof(double)) && a->it[i] == b->it[j] &&
                  !memcmp(&a->res[i], &b->res[j], sizeof(double)) &&
                  !memcmp(&a->bound[i], &b->bound[j], sizeof(double)) &&
                  a->conv[i] == b->conv[j],
                  "%s (%s): log_prob or solver statistics of row %d differ", name, how, i);
}

/* Returns whether the model inverts numerically and its solver statistics were compared
 * (some row iterated). */
static bool check_sampling(const struct eng_model *m, struct eng_ws *ws, const char *name,
                           const float *y)
{
    const struct eng_info *info = eng_model_info(m);
    const int dx = info->dims.x, dy = info->dims.y ? info->dims.y : 1;
    const bool ycond = info->kind != ENG_KIND_FLOW;
    static const float temps[] = {1.0f, 0.7f, 0.0f, 1.3f};
    struct eng_sample_draw dr[NS], rdr[NS];
    float *yr = malloc(sizeof(float) * NS * (size_t)dy);
    float *yrev = malloc(sizeof(float) * NS * (size_t)dy);
    ck_assert(yr && yrev);
    for (int i = 0; i < NS; i++) {
        /* sample indices on both sides of a tile boundary (256) */
        dr[i] = (struct eng_sample_draw){7u + (uint64_t)(i % 3), (uint64_t)((i * 37) % 300),
                                         (uint32_t)(i % 4), temps[i % 4]};
        rdr[NS - 1 - i] = dr[i];
    }
    for (int i = 0; ycond && i < NS; i++) {
        memcpy(yr + (size_t)i * dy, y + (size_t)(i % 4) * dy, sizeof(float) * dy);
        memcpy(yrev + (size_t)(NS - 1 - i) * dy, y + (size_t)(i % 4) * dy, sizeof(float) * dy);
    }
    struct samples one = {0}, all = {0}, rev = {0};
    one.x = calloc((size_t)NS * dx, sizeof(float));
    all.x = calloc((size_t)NS * dx, sizeof(float));
    rev.x = calloc((size_t)NS * dx, sizeof(float));
    char err[ENG_ERR_LEN];
    bool all_ok = true;
    for (int i = 0; i < NS; i++) {
        struct eng_solver_stats s = stats_of(&one, i);
        one.st[i] = eng_sample(m, ws, ycond ? y + (size_t)(i % 4) * dy : NULL, dr[i].seed,
                               dr[i].obs, dr[i].sample, 1, dr[i].temperature,
                               one.x + (size_t)i * dx, &one.lp[i], NULL, &s, err);
        all_ok &= one.st[i] == ENG_OK;
    }
    struct eng_solver_stats sa = stats_of(&all, 0), sr = stats_of(&rev, 0);
    enum eng_status st = eng_sample_rows(m, ws, NS, ycond ? yr : NULL, ycond ? NS : 0, dr,
                                         all.x, all.lp, NULL, &sa, err);
    enum eng_status rst = eng_sample_rows(m, ws, NS, ycond ? yrev : NULL, ycond ? NS : 0, rdr,
                                          rev.x, rev.lp, NULL, &sr, err);
    ck_assert_msg((st == ENG_OK) == all_ok && (rst == ENG_OK) == all_ok,
                  "%s: eng_sample_rows status %d/%d, eng_sample per row %s", name, st, rst,
                  all_ok ? "ok" : "failed");
    for (int i = 0; all_ok && i < NS; i++) {
        same_sample(name, "eng_sample alone vs eng_sample_rows", dx, &one, i, &all, i);
        same_sample(name, "eng_sample_rows in reverse order", dx, &all, i, &rev, NS - 1 - i);
    }
    /* one observation's samples 0..NS-1: one eng_sample call = rows with y broadcast */
    struct samples seq = {0}, rows = {0};
    seq.x = calloc((size_t)NS * dx, sizeof(float));
    rows.x = calloc((size_t)NS * dx, sizeof(float));
    struct eng_sample_draw sd[NS];
    for (int i = 0; i < NS; i++)
        sd[i] = (struct eng_sample_draw){11, (uint64_t)i, 2, 0.9f};
    struct eng_solver_stats sq = stats_of(&seq, 0), sw = stats_of(&rows, 0);
    st = eng_sample(m, ws, ycond ? y : NULL, 11, 2, 0, NS, 0.9f, seq.x, seq.lp, NULL, &sq, err);
    rst = eng_sample_rows(m, ws, NS, ycond ? y : NULL, ycond ? 1 : 0, sd, rows.x, rows.lp, NULL,
                          &sw, err);
    ck_assert_msg(st == rst, "%s: eng_sample %d vs eng_sample_rows %d", name, st, rst);
    for (int i = 0; st == ENG_OK && i < NS; i++)
        same_sample(name, "one eng_sample call vs rows, y broadcast", dx, &seq, i, &rows, i);
    /* a bad draw is named by its row */
    sd[5].temperature = -1.0f;
    st = eng_sample_rows(m, ws, NS, ycond ? y : NULL, ycond ? 1 : 0, sd, rows.x, NULL, NULL,
                         NULL, err);
    ck_assert_int_eq(st, ENG_ERR_ARG);
    ck_assert_msg(strstr(err, "row 5: temperature") != NULL, "%s: %s", name, err);
    bool iterated = false;
    for (int i = 0; all_ok && i < NS; i++)
        iterated |= all.it[i] > 0;
    free(one.x), free(all.x), free(rev.x), free(seq.x), free(rows.x);
    free(yr), free(yrev);
    return info->numeric_inverse && iterated;
}

static int check_model(const char *path, const char *name, uint64_t seed, int *numeric)
{
    struct eng_model *m;
    char err[ENG_ERR_LEN];
    if (eng_model_load(path, &m, err) != ENG_OK)
        return 0; /* broken on purpose (the corrupt corpus lives elsewhere) or not ours */
    const struct eng_dims *d = &eng_model_info(m)->dims;
    int dy = d->y ? d->y : 1;
    float *x = malloc(sizeof(float) * N * (size_t)d->x), *y = malloc(sizeof(float) * N * dy);
    float *xr = malloc(sizeof(float) * N * (size_t)d->x), *yr = malloc(sizeof(float) * N * dy);
    float *yb = malloc(sizeof(float) * N * dy);
    for (int i = 0; i < N * d->x; i++)
        x[i] = 0.5f * unif(&seed);
    for (int i = 0; i < N * dy; i++)
        y[i] = 0.5f * unif(&seed);
    for (int i = 0; i < N; i++) {
        memcpy(xr + (size_t)i * d->x, x + (size_t)(N - 1 - i) * d->x, sizeof(float) * d->x);
        memcpy(yr + (size_t)i * dy, y + (size_t)(N - 1 - i) * dy, sizeof(float) * dy);
        memcpy(yb + (size_t)i * dy, y, sizeof(float) * dy);
    }
    struct eng_ws *ws = eng_ws_new();
    struct out all, rev, one, bc, per;
    alloc_out(&all, d), alloc_out(&rev, d), alloc_out(&one, d), alloc_out(&bc, d),
        alloc_out(&per, d);
    run(m, ws, N, x, y, N, &all);
    run(m, ws, N, xr, yr, N, &rev);
    run(m, ws, N, x, y, 1, &bc);   /* y row 0 broadcast */
    run(m, ws, N, x, yb, N, &per); /* the same y given per row */
    for (int i = 0; i < N; i++) {
        run(m, ws, 1, x + (size_t)i * d->x, y + (size_t)i * dy, 1, &one);
        if (all.fst == ENG_OK && all.lst == ENG_OK) {
            same_row(name, "alone vs among 41", m, &one, 0, &all, i);
            same_row(name, "reversed order", m, &all, i, &rev, N - 1 - i);
            same_row(name, "y broadcast vs per row", m, &bc, i, &per, i);
        }
    }
    /* eng_resimulate: the squared distance of eng_forward's y to one observation */
    const struct eng_info *info = eng_model_info(m);
    double sq[N];
    enum eng_status rs = eng_resimulate(m, ws, N, x, y, sq, err);
    if (info->kind == ENG_KIND_INN || info->kind == ENG_KIND_MLP) {
        if (all.fst == ENG_OK) {
            ck_assert_msg(rs == ENG_OK, "%s: eng_resimulate: %s", name, err);
            for (int i = 0; i < N; i++) {
                double e2 = 0.0;
                for (int k = 0; k < d->y; k++) {
                    double dv = (double)all.yo[(size_t)i * d->y + k] - y[k];
                    e2 += dv * dv;
                }
                ck_assert_msg(!memcmp(&e2, &sq[i], sizeof e2), "%s: resimulation of row %d",
                              name, i);
            }
        }
    } else {
        ck_assert_int_eq(rs, ENG_ERR_UNSUPPORTED);
    }
    if (info->kind != ENG_KIND_MLP)
        *numeric += check_sampling(m, ws, name, y);
    eng_ws_free(ws);
    free_out(&all), free_out(&rev), free_out(&one), free_out(&bc), free_out(&per);
    free(x), free(y), free(xr), free(yr), free(yb);
    eng_model_unref(m);
    return 1;
}

static int check_dir(const char *dir, int *numeric)
{
    DIR *dh = opendir(dir);
    ck_assert_msg(dh != NULL, "cannot open %s", dir);
    struct dirent *e;
    int n = 0;
    uint64_t seed = 1;
    while ((e = readdir(dh))) {
        size_t l = strlen(e->d_name);
        if (l < 12 || strcmp(e->d_name + l - 12, ".safetensors") != 0)
            continue;
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        n += check_model(path, e->d_name, seed++, numeric);
    }
    closedir(dh);
    return n;
}

START_TEST(a_rows_result_does_not_depend_on_the_rows_beside_it)
{
    int numeric = 0;
    int n = check_dir("tests/fixtures/golden", &numeric) + check_dir("models", &numeric);
    ck_assert_msg(n >= 20, "only %d models checked", n);
    ck_assert_msg(numeric >= 1, "no i-ResNet model's sampling statistics were compared");
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("batch_rows");
    TCase *tc = tcase_create("rows");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, a_rows_result_does_not_depend_on_the_rows_beside_it);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN
