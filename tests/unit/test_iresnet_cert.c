/*
 * test_iresnet_cert.c — are the i-ResNet error bounds true?  Real FrEIA IResNetLayer
 * chains (3 blocks, d 8, hidden 32, ELU, adversarial contractions L = 0.9 and 0.99), exported
 * by the project's exporter, with reference inverses computed in longdouble
 * (tests/fixtures/gen_iresnet_cert.py, tests/fixtures/iresnet_cert/).  Fails when any row's
 * true error exceeds its returned error_bound:
 *   - end to end (eng_inverse, float32 x) at tol 1e-6 and 1e-10, every method;
 *   - block by block in double (the state numeric blocks pass to each other, no float32
 *     rounding) at tol 1e-10: every row converges within 20 evaluations of g with auto,
 *     and the bound is neither below the true error nor absurdly loose.
 * A measured error is compared as |x - x_ref| - ref_bound, ref_bound being the reference's
 * own a-posteriori bound (<= 1e-16 here), so an inexact reference cannot fail the test.
 * The reference is a double pair (x_hi + x_lo), so errors far below double rounding of x*
 * are measured.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "../../engine/block.h"
#include "../../engine/model_impl.h"
#include "testutil.h"

#define CERT_DIR "tests/fixtures/iresnet_cert"
#define D 8

struct fixture {
    struct eng_model *m;
    cJSON *doc;
    double ref_bound;
};

static struct fixture open_fixture(const char *name)
{
    char path[256], jpath[256], err[ENG_ERR_LEN];
    snprintf(path, sizeof(path), CERT_DIR "/%s.safetensors", name);
    snprintf(jpath, sizeof(jpath), CERT_DIR "/%s.json", name);
    struct fixture f = {0};
    /* with the load-time self-test: the exporter's test vectors must reproduce */
    ck_assert_msg(eng_model_load(path, &f.m, err) == ENG_OK, "%s: %s", name, err);
    char *txt = tu_slurp(jpath, NULL);
    ck_assert_ptr_nonnull(txt);
    f.doc = cJSON_Parse(txt);
    free(txt);
    ck_assert_ptr_nonnull(f.doc);
    f.ref_bound = cJSON_GetObjectItem(f.doc, "reference_residual_bound")->valuedouble;
    ck_assert(f.ref_bound >= 0.0 && f.ref_bound < 1e-14);
    return f;
}

static void close_fixture(struct fixture *f)
{
    eng_model_unref(f->m);
    cJSON_Delete(f->doc);
}

/* rows x D doubles from a JSON array of arrays; returns the row count */
static int read_rows(const cJSON *a, double *out, int cap)
{
    int n = cJSON_GetArraySize(a);
    ck_assert_int_le(n, cap);
    for (int i = 0; i < n; i++) {
        const cJSON *row = cJSON_GetArrayItem(a, i);
        ck_assert_int_eq(cJSON_GetArraySize(row), D);
        for (int j = 0; j < D; j++)
            out[i * D + j] = cJSON_GetArrayItem(row, j)->valuedouble;
    }
    return n;
}

/* |x - (hi + lo)| for one row, computed without losing the lo part */
static double ref_error(const double *x, const double *hi, const double *lo)
{
    double s = 0.0;
    for (int j = 0; j < D; j++) {
        double e = (x[j] - hi[j]) - lo[j]; /* x - hi is exact when they are close */
        s += e * e;
    }
    return sqrt(s);
}

static double norm(const double *v)
{
    double s = 0.0;
    for (int j = 0; j < D; j++)
        s += v[j] * v[j];
    return sqrt(s);
}

#define MAXR 64

/* ---- end to end: float32 in, float32 out -------------------------------------------------- */

static void check_chain(const char *name, double tol, int method, double *worst_ratio,
                        int *max_iter_seen)
{
    struct fixture f = open_fixture(name);
    const cJSON *ch = cJSON_GetObjectItem(f.doc, "chain");
    static double z[MAXR * D], hi[MAXR * D], lo[MAXR * D];
    int n = read_rows(cJSON_GetObjectItem(ch, "z"), z, MAXR);
    read_rows(cJSON_GetObjectItem(ch, "x_hi"), hi, MAXR);
    read_rows(cJSON_GetObjectItem(ch, "x_lo"), lo, MAXR);
    float zf[MAXR * D], xf[MAXR * D];
    for (int i = 0; i < n * D; i++)
        zf[i] = (float)z[i]; /* exact: the fixture's z are float32 values */
    int it[MAXR];
    double res[MAXR], eb[MAXR];
    bool conv[MAXR];
    struct eng_solver_stats st = {it, res, eb, conv, false};
    struct eng_solver_opts o = {tol, method == ENG_SOLVE_FIXED_POINT ? 20000 : 200, method};
    struct eng_ws *ws = eng_ws_new();
    char err[ENG_ERR_LEN];
    ck_assert_int_eq(eng_inverse(f.m, ws, n, zf, NULL, 0, xf, NULL, &o, &st, err), ENG_OK);
    ck_assert(st.certified);
    for (int r = 0; r < n; r++) {
        double x[D];
        for (int j = 0; j < D; j++)
            x[j] = xf[r * D + j];
        double e = ref_error(x, hi + r * D, lo + r * D);
        double scale = fmax(norm(hi + r * D), 1.0);
        ck_assert_msg(e - f.ref_bound <= eb[r], "%s tol %g %s row %d: true error %.3e above "
                      "the returned bound %.3e", name, tol, eng_solve_method_str(method), r, e,
                      eb[r]);
        ck_assert_msg(eb[r] <= 1000.0 * fmax(e, tol * scale), "%s tol %g %s row %d: bound %.3e "
                      "is loose (true error %.3e)", name, tol, eng_solve_method_str(method), r,
                      eb[r], e);
        /* converged means every block met its share of tol relative to its own state
         * (docs/inversion.md), so the end-to-end bound may exceed tol * |x| a little */
        if (tol >= 1e-6)
            ck_assert_msg(conv[r] && eb[r] <= 10.0 * tol * scale, "%s tol %g %s row %d: not "
                          "converged (bound %.3e, %d evaluations)", name, tol,
                          eng_solve_method_str(method), r, eb[r], it[r]);
        if (worst_ratio && e / eb[r] > *worst_ratio)
            *worst_ratio = e / eb[r];
        if (max_iter_seen && it[r] > *max_iter_seen)
            *max_iter_seen = it[r];
    }
    eng_ws_free(ws);
    close_fixture(&f);
}

START_TEST(chain_error_is_within_the_returned_bound)
{
    static const char *const names[] = {"freia_iresnet_L090", "freia_iresnet_L099"};
    for (int k = 0; k < 2; k++) {
        for (int meth = 0; meth < ENG_SOLVE_COUNT; meth++) {
            double worst = 0.0;
            int evals = 0;
            check_chain(names[k], 1e-6, meth, &worst, &evals);
            check_chain(names[k], 1e-10, meth, NULL, NULL);
            printf("%s %-11s tol 1e-6: max true error / bound %.3f, max %d evaluations (3 "
                   "blocks)\n", names[k], eng_solve_method_str(meth), worst, evals);
            if (meth == ENG_SOLVE_AUTO)
                ck_assert_int_le(evals, 3 * 20);
        }
    }
}
END_TEST

/* ---- block by block, in double ------------------------------------------------------------ */

static void check_blocks(const char *name, double tol, int method, int max_iter, bool want_fast)
{
    struct fixture f = open_fixture(name);
    const cJSON *bl = cJSON_GetObjectItem(f.doc, "blocks");
    ck_assert_int_eq(cJSON_GetArraySize(bl), f.m->n_blocks);
    for (int b = 0; b < f.m->n_blocks; b++) {
        const struct blk *blk = &f.m->blocks[b];
        ck_assert(blk->numeric);
        const cJSON *e = cJSON_GetArrayItem(bl, b);
        static double y[MAXR * D], hi[MAXR * D], lo[MAXR * D], xd[MAXR * D];
        int n = read_rows(cJSON_GetObjectItem(e, "y"), y, MAXR);
        read_rows(cJSON_GetObjectItem(e, "x_hi"), hi, MAXR);
        read_rows(cJSON_GetObjectItem(e, "x_lo"), lo, MAXR);
        float xf[MAXR * D];
        double ld[MAXR], res[MAXR], eb[MAXR];
        int it[MAXR];
        bool conv[MAXR];
        for (int i = 0; i < n * D; i++) {
            xd[i] = y[i];
            xf[i] = (float)y[i];
        }
        for (int r = 0; r < n; r++) {
            ld[r] = res[r] = eb[r] = 0.0;
            it[r] = 0;
            conv[r] = true;
        }
        float *scratch = malloc(sizeof(float) * blk->ops->scratch(blk, n));
        struct eng_solver_opts o = {tol, max_iter, method};
        struct blk_io io = {0};
        io.n = n;
        io.x = xf;
        io.log_det = ld;
        io.scratch = scratch;
        io.opts = &o;
        io.iterations = it;
        io.residual = res;
        io.error_bound = eb;
        io.converged = conv;
        io.tol = tol;
        io.err_scale = 1.0;
        io.xd = xd;            /* the double state, as between chained numeric blocks */
        io.rounds_out = false; /* the caller reads xd: no float32 rounding in the bound */
        blk->ops->inverse(blk, &io);
        for (int r = 0; r < n; r++) {
            double er = ref_error(xd + r * D, hi + r * D, lo + r * D);
            double scale = fmax(norm(hi + r * D), 1.0);
            ck_assert_msg(er - f.ref_bound <= eb[r], "%s block %d %s row %d: true error %.3e "
                          "above the returned bound %.3e", name, b, eng_solve_method_str(method),
                          r, er, eb[r]);
            ck_assert_msg(eb[r] <= 1000.0 * fmax(er, tol * scale), "%s block %d row %d: bound "
                          "%.3e is loose (true error %.3e)", name, b, r, eb[r], er);
            ck_assert_msg(conv[r], "%s block %d %s row %d: not converged in %d evaluations "
                          "(bound %.3e, residual %.3e)", name, b, eng_solve_method_str(method), r,
                          it[r], eb[r], res[r]);
            ck_assert_msg(eb[r] <= tol * scale, "%s block %d row %d: bound %.3e above tol",
                          name, b, r, eb[r]);
            ck_assert_int_le(it[r], max_iter);
            if (want_fast)
                ck_assert_int_le(it[r], 20);
        }
        if (method == ENG_SOLVE_AUTO) {
            int mx = 0;
            double wr = 0.0, wb = 0.0;
            for (int r = 0; r < n; r++) {
                double er = ref_error(xd + r * D, hi + r * D, lo + r * D);
                mx = it[r] > mx ? it[r] : mx;
                wr = fmax(wr, er / fmax(norm(hi + r * D), 1.0));
                wb = fmax(wb, eb[r] / fmax(norm(hi + r * D), 1.0));
            }
            printf("%s block %d auto tol %g: max %d evaluations, max relative true error %.2e, "
                   "max relative bound %.2e\n", name, b, tol, mx, wr, wb);
        }
        free(scratch);
    }
    close_fixture(&f);
}

START_TEST(blocks_reach_1e10_within_20_evaluations_with_true_bounds)
{
    check_blocks("freia_iresnet_L090", 1e-10, ENG_SOLVE_AUTO, 20, true);
    check_blocks("freia_iresnet_L099", 1e-10, ENG_SOLVE_AUTO, 20, true);
    check_blocks("freia_iresnet_L099", 1e-10, ENG_SOLVE_NEWTON, 20, true);
    /* the other methods: slower, but their bounds must hold too */
    for (int meth = ENG_SOLVE_ANDERSON; meth < ENG_SOLVE_COUNT; meth++) {
        check_blocks("freia_iresnet_L090", 1e-10, meth, 20000, false);
        check_blocks("freia_iresnet_L099", 1e-10, meth, 20000, false);
    }
}
END_TEST

START_TEST(inverses_are_bit_identical_across_calls_and_batching)
{
    /* fixed-order double kernels: the same row gives the same bits alone or in a batch */
    struct fixture f = open_fixture("freia_iresnet_L099");
    const cJSON *ch = cJSON_GetObjectItem(f.doc, "chain");
    static double z[MAXR * D];
    int n = read_rows(cJSON_GetObjectItem(ch, "z"), z, MAXR);
    float zf[MAXR * D], xa[MAXR * D], xb[MAXR * D];
    double eba[MAXR], ebb[MAXR];
    for (int i = 0; i < n * D; i++)
        zf[i] = (float)z[i];
    struct eng_solver_opts o = {1e-8, 200, ENG_SOLVE_AUTO};
    struct eng_ws *ws = eng_ws_new();
    char err[ENG_ERR_LEN];
    struct eng_solver_stats sa = {NULL, NULL, eba, NULL, false};
    ck_assert_int_eq(eng_inverse(f.m, ws, n, zf, NULL, 0, xa, NULL, &o, &sa, err), ENG_OK);
    for (int r = 0; r < n; r++) {
        struct eng_solver_stats sb = {NULL, NULL, ebb + r, NULL, false};
        ck_assert_int_eq(eng_inverse(f.m, ws, 1, zf + r * D, NULL, 0, xb + r * D, NULL, &o, &sb,
                                     err), ENG_OK);
    }
    ck_assert_int_eq(memcmp(xa, xb, sizeof(float) * (size_t)n * D), 0);
    ck_assert_int_eq(memcmp(eba, ebb, sizeof(double) * (size_t)n), 0);
    eng_ws_free(ws);
    close_fixture(&f);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("iresnet_cert");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, chain_error_is_within_the_returned_bound);
    tcase_add_test(tc, blocks_reach_1e10_within_20_evaluations_with_true_bounds);
    tcase_add_test(tc, inverses_are_bit_identical_across_calls_and_batching);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN
