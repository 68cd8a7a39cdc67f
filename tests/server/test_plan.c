/*
 * test_plan.c — server/plan.c: units cover every row, sample or target exactly once, in
 * order; row units are whole tiles but the last; sample units start at multiples of
 * ENG_TILE_ROWS and hold at most SRV_PLAN_MAX_SAMPLE_TILES tiles, whatever the workers;
 * calibration units are runs of whole pairs whose counts are their samples.
 */
#include <stdlib.h>

#include "../../server/plan.h"
#include "../unit/testutil.h"

START_TEST(rows_are_cut_in_whole_tiles_about_n_over_workers)
{
    int nu = -1;
    struct srv_unit *u = srv_plan_rows(1, 2, &nu);
    ck_assert_int_eq(nu, 1);
    ck_assert(u[0].first == 0 && u[0].count == 1);
    free(u);
    u = srv_plan_rows(1000, 2, &nu); /* 500 rounded up to 512 */
    ck_assert_int_eq(nu, 2);
    ck_assert(u[0].first == 0 && u[0].count == 512);
    ck_assert(u[1].first == 512 && u[1].count == 488);
    free(u);
    u = srv_plan_rows(256, 4, &nu); /* never less than one tile a unit */
    ck_assert_int_eq(nu, 1);
    ck_assert_int_eq(u[0].count, 256);
    free(u);
    u = srv_plan_rows(0, 2, &nu);
    ck_assert(u != NULL);
    ck_assert_int_eq(nu, 0);
    free(u);
    for (long n = 1; n < 5000; n += 97)
        for (int w = 1; w <= 8; w++) {
            u = srv_plan_rows(n, w, &nu);
            long next = 0;
            for (int i = 0; i < nu; i++) {
                ck_assert_int_eq(u[i].first, next);
                ck_assert(u[i].count > 0);
                ck_assert_msg(i == nu - 1 || u[i].count % ENG_TILE_ROWS == 0,
                              "n %ld workers %d: unit %d has %d rows", n, w, i, u[i].count);
                next += u[i].count;
            }
            ck_assert_int_eq(next, n);
            ck_assert_msg(nu <= w, "n %ld: %d units for %d workers", n, nu, w);
            free(u);
        }
}
END_TEST

START_TEST(samples_start_on_tile_boundaries_whatever_the_workers)
{
    int nu = -1;
    struct srv_unit *u = srv_plan_samples(3, 1000, 2, &nu); /* 3000 / 4 -> 768 */
    ck_assert_int_eq(nu, 6);
    for (int o = 0; o < 3; o++) {
        ck_assert(u[2 * o].obs == o && u[2 * o].first == 0 && u[2 * o].count == 768);
        ck_assert(u[2 * o + 1].obs == o && u[2 * o + 1].first == 768 &&
                  u[2 * o + 1].count == 232);
    }
    free(u);
    u = srv_plan_samples(1, 1000000, 1, &nu); /* capped at 64 tiles a unit */
    ck_assert_int_eq(u[0].count, SRV_PLAN_MAX_SAMPLE_TILES * ENG_TILE_ROWS);
    ck_assert_int_eq(nu, (1000000 + 16383) / 16384);
    free(u);
    /* a job's units: at most SRV_PLAN_JOB_SAMPLE_TILES tiles, still on tile boundaries */
    u = srv_plan_samples_tiles(2, 5000, 1, SRV_PLAN_JOB_SAMPLE_TILES, &nu);
    ck_assert_int_eq(nu, 2 * ((5000 + 1023) / 1024));
    ck_assert(u[0].obs == 0 && u[0].first == 0 && u[0].count == 1024);
    ck_assert(u[4].obs == 0 && u[4].first == 4096 && u[4].count == 904);
    ck_assert(u[5].obs == 1 && u[5].first == 0 && u[5].count == 1024);
    free(u);
    const long Ns[] = {1, 100, 255, 256, 257, 1000, 5000, 70000};
    for (size_t a = 0; a < sizeof Ns / sizeof Ns[0]; a++)
        for (int obs = 1; obs <= 5; obs += 2)
            for (int w = 1; w <= 8; w++) {
                u = srv_plan_samples(obs, Ns[a], w, &nu);
                int k = 0;
                for (int o = 0; o < obs; o++) {
                    long next = 0;
                    for (; k < nu && u[k].obs == o; k++) {
                        ck_assert_int_eq(u[k].first, next);
                        ck_assert_int_eq(u[k].first % ENG_TILE_ROWS, 0);
                        ck_assert(u[k].count > 0 &&
                                  u[k].count <= SRV_PLAN_MAX_SAMPLE_TILES * ENG_TILE_ROWS);
                        next += u[k].count;
                    }
                    ck_assert_msg(next == Ns[a], "obs %d of %d, N %ld, %d workers: %ld samples",
                                  o, obs, Ns[a], w, next);
                }
                ck_assert_int_eq(k, nu);
                free(u);
            }
}
END_TEST

START_TEST(one_unit_per_preimage_target)
{
    int nu = -1;
    struct srv_unit *u = srv_plan_targets(5, &nu);
    ck_assert_int_eq(nu, 5);
    for (int t = 0; t < 5; t++)
        ck_assert(u[t].first == t && u[t].count == 1 && u[t].obs == 0);
    free(u);
}
END_TEST

/* Calibration: runs of whole pairs covering every pair once, in order; each unit's count is
 * its samples (pairs x L); about 2 units per worker, at most max_tiles tiles of samples a
 * unit unless one pair alone is larger; a job's smaller cap gives more units. */
START_TEST(pairs_are_cut_in_whole_pairs_counting_samples)
{
    static const struct {
        int n;
        long L;
        int workers, tiles;
    } C[] = {{1, 100, 4, 64}, {200, 100, 2, 64}, {1000, 1000, 8, 64}, {1000, 1000, 8, 4},
             {3, 100000, 2, 64}, {65536, 1, 16, 64}, {0, 10, 2, 64}};
    for (size_t c = 0; c < sizeof C / sizeof C[0]; c++) {
        int nu = -1;
        struct srv_unit *u = srv_plan_pairs(C[c].n, C[c].L, C[c].workers, C[c].tiles, &nu);
        ck_assert_ptr_nonnull(u);
        long next = 0;
        for (int i = 0; i < nu; i++) {
            ck_assert_int_eq(u[i].first, next);
            ck_assert(u[i].count > 0 && u[i].count % C[c].L == 0);
            long pairs = u[i].count / C[c].L;
            ck_assert(pairs == 1 || u[i].count <= (long)C[c].tiles * ENG_TILE_ROWS);
            next += pairs;
        }
        ck_assert_int_eq(next, C[c].n);
        long total = (long)C[c].n * C[c].L;
        if (total >= 4L * C[c].workers * ENG_TILE_ROWS && C[c].L <= ENG_TILE_ROWS)
            ck_assert_msg(nu >= C[c].workers, "case %zu: %d units for %d workers", c, nu,
                          C[c].workers);
        free(u);
    }
    int a, b;
    struct srv_unit *u1 = srv_plan_pairs(1000, 1000, 2, 64, &a);
    struct srv_unit *u2 = srv_plan_pairs(1000, 1000, 2, 4, &b);
    ck_assert_int_gt(b, a);
    free(u1);
    free(u2);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("server_plan");
    TCase *tc = tcase_create("plan");
    tcase_add_test(tc, rows_are_cut_in_whole_tiles_about_n_over_workers);
    tcase_add_test(tc, samples_start_on_tile_boundaries_whatever_the_workers);
    tcase_add_test(tc, one_unit_per_preimage_target);
    tcase_add_test(tc, pairs_are_cut_in_whole_pairs_counting_samples);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN
