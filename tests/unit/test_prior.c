/*
 * test_prior.c — the prior box of a checkpoint (manifest "prior"): its validation at load,
 * the density masked to -inf outside it, rejection sampling (eng_sample_prior: the first
 * accepted candidates in index order, whatever the count asked for; the draw limit) and
 * the acceptance estimate (eng_prior_acceptance).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#define D 2
#define CW 1

/* A cinn of width 2, condition width 1: one ConditionalAffineTransform whose subnet maps
 * y to scales and shifts, with `prior` (a JSON member text, or "" for none) added. */
static struct eng_model *model(const char *prior, char *err_out)
{
    struct tu_ckpt *c = tu_ckpt_new();
    char *sub = tu_add_subnet(c, "cat", CW, 8, 1, 2 * D, "{\"type\":\"tanh\"}", 0.5f, 7);
    char block[4096];
    snprintf(block, sizeof block,
             "{\"type\":\"ConditionalAffineTransform\",\"cond\":0,\"subnet\":%s}", sub);
    char *base = tu_manifest_one_block(D, CW, block);
    size_t cap = strlen(base) + strlen(prior) + 8;
    char *man = malloc(cap);
    snprintf(man, cap, "{%s%s%s", prior, *prior ? "," : "", base + 1);
    struct eng_model *m = NULL;
    if (err_out) {
        enum eng_status st = tu_load_fail(c, man, ENG_LOAD_NO_SELFTEST, err_out);
        ck_assert_int_ne(st, ENG_OK);
    } else {
        m = tu_load(c, man, ENG_LOAD_NO_SELFTEST);
    }
    free(man);
    free(base);
    free(sub);
    tu_ckpt_free(c);
    return m;
}

static const char *BOX = "\"prior\":{\"type\":\"box\",\"low\":[-1,-0.5],\"high\":[1.5,1]}";
static const float LO[D] = {-1.0f, -0.5f}, HI[D] = {1.5f, 1.0f};
static const float Y[CW] = {0.3f};

static bool inside(const float *x)
{
    for (int j = 0; j < D; j++)
        if (!(x[j] >= LO[j] && x[j] <= HI[j]))
            return false;
    return true;
}

START_TEST(prior_loaded)
{
    struct eng_model *m = model(BOX, NULL);
    const struct eng_info *in = eng_model_info(m);
    ck_assert_ptr_nonnull(in->prior_low);
    ck_assert_ptr_nonnull(in->prior_high);
    ck_assert_float_eq(in->prior_low[1], -0.5f);
    ck_assert_float_eq(in->prior_high[0], 1.5f);
    eng_model_unref(m);
    struct eng_model *m2 = model("", NULL);
    ck_assert_ptr_null(eng_model_info(m2)->prior_low);
    eng_model_unref(m2);
}
END_TEST

START_TEST(prior_refused)
{
    static const struct {
        const char *prior, *msg;
    } bad[] = {
        {"\"prior\":{\"type\":\"box\",\"low\":[-1,1],\"high\":[1,1]}",
         "low[1] = 1 must be below high[1] = 1"},
        {"\"prior\":{\"type\":\"box\",\"low\":[-1],\"high\":[1,1]}",
         "field 'low' must be a list of 2 numbers"},
        {"\"prior\":{\"type\":\"box\",\"low\":[-1,\"0\"],\"high\":[1,1]}",
         "low[1] must be a finite number"},
        {"\"prior\":{\"type\":\"box\",\"low\":[-1,0],\"high\":[1,1e39]}",
         "high[1] must be a finite number within float32"},
        {"\"prior\":{\"type\":\"gauss\",\"low\":[-1,0],\"high\":[1,1]}",
         "field 'type' must be \"box\""},
        {"\"prior\":{\"type\":\"box\",\"low\":[-1,0],\"high\":[1,1],\"mean\":0}",
         "unknown field 'mean'"},
        {"\"prior\":[0,1]", "field 'prior' must be an object"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[ENG_ERR_LEN] = "";
        model(bad[i].prior, err);
        ck_assert_msg(strstr(err, bad[i].msg) != NULL, "case %zu: '%s' lacks '%s'", i, err,
                      bad[i].msg);
    }
}
END_TEST

/* log_prob: -inf outside the closed box, the unmasked model's value inside (the bounds
 * themselves are inside). */
START_TEST(log_prob_masked)
{
    struct eng_model *m = model(BOX, NULL), *free_m = model("", NULL);
    struct eng_ws *ws = eng_ws_new();
    const float x[] = {0.0f, 0.0f, 1.5f, -0.5f, -1.0f, 1.0f, 1.5000001f, 0.0f,
                       0.0f, -0.50000006f, 2.0f, 2.0f};
    int n = 6;
    double lp[6], ref[6];
    char err[ENG_ERR_LEN];
    ck_assert_int_eq(eng_log_prob(m, ws, n, x, Y, 1, lp, err), ENG_OK);
    ck_assert_int_eq(eng_log_prob(free_m, ws, n, x, Y, 1, ref, err), ENG_OK);
    for (int i = 0; i < 3; i++) {
        ck_assert(isfinite(lp[i]));
        ck_assert(lp[i] == ref[i]);
    }
    for (int i = 3; i < 6; i++) {
        ck_assert(isfinite(ref[i]));
        ck_assert_msg(isinf(lp[i]) && lp[i] < 0, "row %d: %g", i, lp[i]);
    }
    eng_ws_free(ws);
    eng_model_unref(m);
    eng_model_unref(free_m);
}
END_TEST

/* eng_sample_prior keeps exactly the in-box candidates of eng_sample's indices 0, 1, ...
 * in order; its densities are eng_sample's; a smaller count gives the prefix (so how the
 * candidates are grouped never matters). */
START_TEST(sample_prior_is_filtered_sample)
{
    struct eng_model *m = model(BOX, NULL);
    struct eng_ws *ws = eng_ws_new();
    char err[ENG_ERR_LEN];
    enum { N = 700, POOL = 4096 };
    float *x = malloc(sizeof(float) * N * D), *pool = malloc(sizeof(float) * POOL * D);
    double *lp = malloc(sizeof(double) * N), *plp = malloc(sizeof(double) * POOL);
    struct eng_accept acc;
    ck_assert_int_eq(eng_sample_prior(m, ws, Y, 42, 3, N, 1.0f, 100 * N, x, lp, NULL, NULL,
                                      &acc, err), ENG_OK);
    ck_assert_uint_eq(acc.accepted, N);
    ck_assert_uint_gt(acc.drawn, N); /* the box rejects some: the test means something */
    ck_assert_uint_le(acc.drawn, POOL);
    ck_assert_int_eq(eng_sample(m, ws, Y, 42, 3, 0, (int)acc.drawn, 1.0f, pool, plp, NULL, NULL,
                                err), ENG_OK);
    int k = 0;
    for (int i = 0; i < (int)acc.drawn; i++) {
        if (!inside(pool + (size_t)i * D)) {
            ck_assert(isinf(plp[i]) && plp[i] < 0); /* eng_sample masks too */
            continue;
        }
        ck_assert_int_lt(k, N);
        ck_assert(memcmp(pool + (size_t)i * D, x + (size_t)k * D, sizeof(float) * D) == 0);
        ck_assert(plp[i] == lp[k]);
        k++;
    }
    ck_assert_int_eq(k, N);
    ck_assert(inside(pool + (size_t)(acc.drawn - 1) * D)); /* drawn ends at the last kept */
    /* smaller counts give the prefix */
    static const int counts[] = {1, 3, 255, 256, 257};
    for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++) {
        float xs[257 * D];
        double ls[257];
        struct eng_accept a2;
        ck_assert_int_eq(eng_sample_prior(m, ws, Y, 42, 3, counts[c], 1.0f, 100000, xs, ls,
                                          NULL, NULL, &a2, err), ENG_OK);
        ck_assert_uint_eq(a2.accepted, (uint64_t)counts[c]);
        ck_assert(memcmp(xs, x, sizeof(float) * (size_t)counts[c] * D) == 0);
        ck_assert(memcmp(ls, lp, sizeof(double) * (size_t)counts[c]) == 0);
    }
    free(x), free(pool), free(lp), free(plp);
    eng_ws_free(ws);
    eng_model_unref(m);
}
END_TEST

/* The draw limit: at most max_draws candidates, then a short count and ENG_OK. */
START_TEST(sample_prior_limit)
{
    struct eng_model *m = model(BOX, NULL);
    struct eng_ws *ws = eng_ws_new();
    char err[ENG_ERR_LEN];
    float x[100 * D];
    struct eng_accept acc;
    ck_assert_int_eq(eng_sample_prior(m, ws, Y, 1, 0, 100, 1.0f, 37, x, NULL, NULL, NULL, &acc,
                                      err), ENG_OK);
    ck_assert_uint_eq(acc.drawn, 37);
    ck_assert_uint_lt(acc.accepted, 37);
    ck_assert_uint_gt(acc.accepted, 0);
    /* a box 50 standard deviations away: nothing is accepted, the limit ends the run */
    struct eng_model *far = model("\"prior\":{\"type\":\"box\",\"low\":[50,50],\"high\":[51,51]}",
                                  NULL);
    ck_assert_int_eq(eng_sample_prior(far, ws, Y, 1, 0, 10, 1.0f, 1000, x, NULL, NULL, NULL,
                                      &acc, err), ENG_OK);
    ck_assert_uint_eq(acc.drawn, 1000);
    ck_assert_uint_eq(acc.accepted, 0);
    ck_assert_int_eq(eng_sample_prior(far, ws, Y, 1, 0, 10, 1.0f, 0, x, NULL, NULL, NULL, &acc,
                                      err), ENG_ERR_ARG);
    eng_model_unref(far);
    eng_ws_free(ws);
    eng_model_unref(m);
}
END_TEST

/* eng_prior_acceptance counts what eng_sample_prior counts; without a prior every
 * candidate is accepted and eng_sample_prior is eng_sample. */
START_TEST(acceptance_counts)
{
    struct eng_model *m = model(BOX, NULL), *free_m = model("", NULL);
    struct eng_ws *ws = eng_ws_new();
    char err[ENG_ERR_LEN];
    float *x = malloc(sizeof(float) * 2000 * D), *x2 = malloc(sizeof(float) * 2000 * D);
    struct eng_accept a, b;
    ck_assert_int_eq(eng_sample_prior(m, ws, Y, 9, 0, 2000, 1.0f, 1000000, x, NULL, NULL, NULL,
                                      &a, err), ENG_OK);
    ck_assert_int_eq(eng_prior_acceptance(m, ws, Y, 9, 0, 2000, 1000000, NULL, &b, err), ENG_OK);
    ck_assert_uint_eq(a.accepted, b.accepted);
    ck_assert_uint_eq(a.drawn, b.drawn);
    double rate = (double)b.accepted / (double)b.drawn;
    ck_assert_msg(rate > 0.05 && rate < 0.95, "rate %g", rate);
    ck_assert_int_eq(eng_prior_acceptance(free_m, ws, Y, 9, 0, 2000, 10, NULL, &b, err), ENG_OK);
    ck_assert_uint_eq(b.accepted, 2000);
    ck_assert_uint_eq(b.drawn, 2000);
    ck_assert_int_eq(eng_sample_prior(free_m, ws, Y, 9, 0, 300, 1.0f, 1, x, NULL, NULL, NULL,
                                      &a, err), ENG_OK);
    ck_assert_uint_eq(a.accepted, 300);
    ck_assert_int_eq(eng_sample(free_m, ws, Y, 9, 0, 0, 300, 1.0f, x2, NULL, NULL, NULL, err),
                     ENG_OK);
    ck_assert(memcmp(x, x2, sizeof(float) * 300 * D) == 0);
    /* a non-finite observation is refused, not looped on */
    float bad = NAN;
    ck_assert_int_eq(eng_sample_prior(m, ws, &bad, 9, 0, 10, 1.0f, 100, x, NULL, NULL, NULL,
                                      &a, err), ENG_ERR_NONFINITE);
    free(x), free(x2);
    eng_ws_free(ws);
    eng_model_unref(m);
    eng_model_unref(free_m);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("prior");
    TCase *tc = tcase_create("prior");
    tcase_add_test(tc, prior_loaded);
    tcase_add_test(tc, prior_refused);
    tcase_add_test(tc, log_prob_masked);
    tcase_add_test(tc, sample_prior_is_filtered_sample);
    tcase_add_test(tc, sample_prior_limit);
    tcase_add_test(tc, acceptance_counts);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN
