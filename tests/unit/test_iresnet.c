/*
 * test_iresnet.c — i-ResNet blocks (engine/blocks/iresnet.c) and the root solvers
 * (engine/solve.c): certified Lipschitz bounds, inverses within tol for every method on
 * random and adversarial contractions (L = 0.9, 0.99) with the true error never above the
 * returned bound, L >= 1 flagged, exact and series log-dets, max_iter, batching.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../engine/la.h"
#include "../../engine/solve.h"
#include "iresnet_models.h"
#include "testutil.h"

static void put_tu(void *ctx, const char *name, int ndim, const int64_t *shape, const float *data)
{
    tu_add_f32(ctx, name, ndim, shape, data);
}

/* A flow (cw == 0) or cinn model of nb i-ResNet blocks, optionally with PermuteRandom
 * between them; block_extra is appended to every block object. */
static struct eng_model *load_chain(const struct irm_block *B, int nb, bool perms,
                                    const char *block_extra)
{
    struct tu_ckpt *ck = tu_ckpt_new();
    int d = B[0].d, cw = B[0].cw;
    size_t cap = 65536;
    char *blocks = malloc(cap);
    size_t k = 0;
    blocks[0] = 0;
    for (int i = 0; i < nb; i++) {
        char pfx[32], extra[160];
        snprintf(pfx, sizeof(pfx), "b%d", i);
        snprintf(extra, sizeof(extra), "%s%s", cw ? ",\"cond\":0" : "",
                 block_extra ? block_extra : "");
        irm_tensors(&B[i], pfx, put_tu, ck);
        char *js = irm_json(&B[i], pfx, extra);
        k += (size_t)snprintf(blocks + k, cap - k, "%s%s", i ? "," : "", js);
        free(js);
        if (perms && i + 1 < nb) {
            char pn[32];
            snprintf(pn, sizeof(pn), "p%d", i);
            tu_add_perm(ck, pn, d, (uint64_t)i + 5);
            k += (size_t)snprintf(blocks + k, cap - k,
                                  ",{\"type\":\"PermuteRandom\",\"perm\":\"%s\"}", pn);
        }
    }
    char *man = malloc(cap + 512);
    if (cw == 0)
        snprintf(man, cap + 512,
                 "{\"format\":\"innserve-manifest\",\"version\":1,\"kind\":\"flow\","
                 "\"dims\":{\"x\":%d},\"blocks\":[%s]}", d, blocks);
    else
        snprintf(man, cap + 512,
                 "{\"format\":\"innserve-manifest\",\"version\":1,\"kind\":\"cinn\","
                 "\"dims\":{\"x\":%d,\"y\":%d},\"conditions\":[{\"net\":null}],"
                 "\"blocks\":[%s]}", d, cw, blocks);
    struct eng_model *m = tu_load(ck, man, ENG_LOAD_NO_SELFTEST);
    free(blocks), free(man);
    tu_ckpt_free(ck);
    return m;
}

static double vnorm(int d, const double *v)
{
    double s = 0;
    for (int i = 0; i < d; i++)
        s += v[i] * v[i];
    return sqrt(s);
}

/* ---- the solvers alone ------------------------------------------------------------------- */

struct lin_ctx {
    int d;
    const double *A; /* d x d: g(x) = A x */
};

/* g(x) = A x by recursive summation; its rounding is at most gamma_{d+1} sum_j |A_ij x_j|
 * (with a factor 2 to spare) */
static void lin_g(void *ctx, int rows, const int *ids, const double *x, double *gx, double *ge)
{
    const struct lin_ctx *c = ctx;
    (void)ids;
    for (int r = 0; r < rows; r++)
        for (int i = 0; i < c->d; i++) {
            double s = 0, a = 0;
            for (int j = 0; j < c->d; j++) {
                s += c->A[i * c->d + j] * x[(size_t)r * c->d + j];
                a += fabs(c->A[i * c->d + j] * x[(size_t)r * c->d + j]);
            }
            gx[(size_t)r * c->d + i] = s;
            ge[(size_t)r * c->d + i] = 2.0 * la_gamma(c->d + 1) * a;
        }
}

static void lin_jac(void *ctx, int pos, double *J)
{
    const struct lin_ctx *c = ctx;
    (void)pos;
    memcpy(J, c->A, sizeof(double) * (size_t)c->d * c->d);
}

START_TEST(solvers_alone_converge_with_a_valid_bound)
{
    const int d = 6, n = 5;
    struct irm_block B;
    for (int reg = IRM_SYM; reg <= IRM_ROT; reg++) {
        irm_build(&B, (enum irm_regime)reg, d, 0, 0, 0.99, 3);
        /* A = W2 W1 (identity activation) */
        double A[36], y[30], x[30], xt[30];
        for (int i = 0; i < d; i++)
            for (int j = 0; j < d; j++) {
                double s = 0;
                for (int k = 0; k < d; k++)
                    s += B.lin[1].w[i * d + k] * B.lin[0].w[k * d + j];
                A[i * d + j] = s;
            }
        struct lin_ctx lc = {d, A};
        struct slv_fn fn = {d, &lc, lin_g, lin_jac, 0.99 * (1 + 1e-6)};
        for (int i = 0; i < n * d; i++)
            xt[i] = irm_randn(&(uint64_t){(uint64_t)i + 77});
        for (int r = 0; r < n; r++) /* y = x_true + A x_true */
            for (int i = 0; i < d; i++) {
                double s = xt[r * d + i];
                for (int j = 0; j < d; j++)
                    s += A[i * d + j] * xt[r * d + j];
                y[r * d + i] = s;
            }
        for (int meth = 0; meth < ENG_SOLVE_COUNT; meth++) {
            struct slv_opts o = {meth, 10000, 1e-8, 0};
            double *scr = malloc(sizeof(double) * slv_scratch(d, n, meth, 0));
            struct slv_row out[5];
            memcpy(x, y, sizeof(x));
            slv_solve(&fn, &o, n, y, x, out, scr);
            for (int r = 0; r < n; r++) {
                double e[6];
                for (int i = 0; i < d; i++)
                    e[i] = x[r * d + i] - xt[r * d + i];
                double err = vnorm(d, e), xn = vnorm(d, xt + r * d);
                ck_assert_msg(out[r].converged, "%s regime %d row %d did not converge",
                              eng_solve_method_str(meth), reg, r);
                ck_assert_msg(err <= out[r].error_bound, "%s: error %.3g above bound %.3g",
                              eng_solve_method_str(meth), err, out[r].error_bound);
                ck_assert_msg(err <= 1e-8 * fmax(xn, 1.0), "%s: error %.3g", eng_solve_method_str(meth),
                              err);
                if (meth == ENG_SOLVE_NEWTON || meth == ENG_SOLVE_AUTO)
                    ck_assert_int_le(out[r].iterations, 4); /* linear: exact after one step */
                if (meth == ENG_SOLVE_FIXED_POINT)
                    ck_assert_int_ge(out[r].iterations, 500);
            }
            free(scr);
        }
        irm_free(&B);
    }
}
END_TEST

START_TEST(solver_method_names)
{
    ck_assert_str_eq(eng_solve_method_str(ENG_SOLVE_AUTO), "auto");
    ck_assert_str_eq(eng_solve_method_str(ENG_SOLVE_FIXED_POINT), "fixed_point");
    ck_assert_ptr_null(eng_solve_method_str(ENG_SOLVE_COUNT));
    ck_assert_ptr_null(eng_solve_method_str(-1));
    ck_assert_int_eq(slv_resolve(ENG_SOLVE_AUTO, 8, true), ENG_SOLVE_NEWTON);
    ck_assert_int_eq(slv_resolve(ENG_SOLVE_AUTO, 200, true), ENG_SOLVE_BROYDEN);
    ck_assert_int_eq(slv_resolve(ENG_SOLVE_AUTO, 1000, true), ENG_SOLVE_ANDERSON);
    ck_assert_int_eq(slv_resolve(ENG_SOLVE_NEWTON, 8, false), ENG_SOLVE_BROYDEN);
}
END_TEST

START_TEST(singular_values_and_norm_bounds)
{
    /* Jacobi singular values of a known matrix, and the Gram-iteration bound of a large
     * one against a long power iteration. */
    double D[6] = {3, 0, 0, 0, 2, 0}, sv[2], w[64];
    ck_assert_int_ge(la_singular_values(2, 3, D, sv, w), 1);
    ck_assert_double_eq_tol(sv[0], 3.0, 1e-14);
    ck_assert_double_eq_tol(sv[1], 2.0, 1e-14);
    uint64_t s = 9;
    for (int trial = 0; trial < 2; trial++) {
        int r = trial ? 300 : 40, c = trial ? 200 : 64;
        double *A = malloc(sizeof(double) * (size_t)r * c);
        for (int i = 0; i < r * c; i++)
            A[i] = irm_randn(&s);
        double *wk = malloc(sizeof(double) * la_norm2_upper_work(r, c));
        double up = la_norm2_upper(r, c, A, wk);
        double lo = irm_norm(r, c, c, A, 4);
        ck_assert_msg(up >= lo && up <= lo * (1 + 1e-9), "%dx%d: bound %.15g, power %.15g", r, c,
                      up, lo);
        free(A), free(wk);
    }
}
END_TEST

/* ---- blocks: certificates ------------------------------------------------------------------ */

START_TEST(lipschitz_bound_is_the_product_of_exact_norms)
{
    struct irm_block B;
    irm_build(&B, IRM_RANDOM, 8, 32, 0, 0.9, 1);
    struct eng_model *m = load_chain(&B, 1, false, NULL);
    const struct eng_certificate *c = eng_model_certificate(m);
    ck_assert(c->certified && c->invertible);
    ck_assert_int_eq(c->guarantee, ENG_GUARANTEE_CONTRACTION);
    double L = 1.0;
    for (int k = 0; k < 3; k++)
        L *= irm_norm(B.lin[k].out, B.lin[k].in, B.lin[k].in, B.lin[k].w, 7);
    ck_assert_msg(c->blocks[0].lipschitz >= L && c->blocks[0].lipschitz <= L * (1 + 1e-9),
                  "certified %.15g vs power product %.15g", c->blocks[0].lipschitz, L);
    ck_assert_double_eq_tol(c->blocks[0].lipschitz_inverse, 1.0 / (1.0 - c->blocks[0].lipschitz), 1e-9);
    /* iterations for 1e-6 at L = 0.9: ceil(ln(1e-7)/ln(0.9)) = 153 (iresnet.md 6.9) */
    ck_assert_int_ge(c->blocks[0].iterations_for_1e6, 152);
    ck_assert_int_le(c->blocks[0].iterations_for_1e6, 154);
    ck_assert(strstr(c->blocks[0].reason, "contraction") != NULL);
    ck_assert(eng_model_info(m)->numeric_inverse);
    eng_model_unref(m);
    irm_free(&B);

    /* conditional: huge condition columns do not change L (only x columns count) */
    irm_build(&B, IRM_SYM, 6, 0, 3, 0.9, 2);
    for (int i = 0; i < 6; i++)
        for (int j = 0; j < 3; j++)
            B.lin[0].w[i * 9 + 6 + j] = 50.0f;
    m = load_chain(&B, 1, false, NULL);
    c = eng_model_certificate(m);
    ck_assert_msg(fabs(c->blocks[0].lipschitz - 0.9) < 1e-6, "L = %.9g", c->blocks[0].lipschitz);
    ck_assert(c->certified);
    eng_model_unref(m);
    irm_free(&B);
}
END_TEST

START_TEST(lipschitz_above_one_is_flagged)
{
    struct irm_block B;
    irm_build(&B, IRM_RANDOM, 6, 24, 0, 0.9, 4);
    irm_scale(&B, 1.2 / 0.9);
    struct eng_model *m = load_chain(&B, 1, false, NULL);
    const struct eng_certificate *c = eng_model_certificate(m);
    ck_assert(!c->certified);
    ck_assert(!c->blocks[0].invertible);
    ck_assert_int_eq(c->blocks[0].guarantee, ENG_GUARANTEE_NONE);
    ck_assert_double_eq_tol(c->blocks[0].lipschitz, 1.2, 1e-5);
    ck_assert_int_eq(c->blocks[0].iterations_for_1e6, -1);
    ck_assert(strstr(c->blocks[0].reason, "not certified") != NULL);
    /* the inverse still runs, and says it is not certified */
    const int n = 16, d = 6;
    float z[96], x[96];
    int it[16];
    double res[16], eb[16];
    bool conv[16];
    tu_randn(z, n * d, 1.0f, 3);
    struct eng_solver_stats st = {it, res, eb, conv, true};
    struct eng_solver_opts o = {1e-6, 50, ENG_SOLVE_AUTO};
    struct eng_ws *ws = eng_ws_new();
    char err[ENG_ERR_LEN];
    ck_assert_int_eq(eng_inverse(m, ws, n, z, NULL, 0, x, NULL, &o, &st, err), ENG_OK);
    ck_assert(!st.certified);
    for (int i = 0; i < n; i++) {
        ck_assert(isinf(eb[i]));
        ck_assert_int_le(it[i], 50);
    }
    /* forward still works, with its exact log-det */
    tu_check_logdet_fd(m, 3, 1.0f, 1e-3, 2e-3);
    eng_ws_free(ws);
    eng_model_unref(m);
    irm_free(&B);
}
END_TEST

/* ---- blocks: inverses ---------------------------------------------------------------------- */

/* Invert n rows through the model and check each against the reference inverse of the
 * exact composition: converged, error <= bound, error <= tol_factor * tol * max(|x|, 1). */
static void check_inverse(const struct eng_model *m, const struct irm_block *B, int nb, bool perms,
                          int method, int max_iter, double tol, double tol_factor, float zscale,
                          const char *what, long *evals_out)
{
    const int d = B[0].d, cw = B[0].cw, n = 24;
    float *z = malloc(sizeof(float) * n * d), *x = malloc(sizeof(float) * n * d);
    float *y = malloc(sizeof(float) * n * (cw ? cw : 1));
    int *it = malloc(sizeof(int) * n);
    double *res = malloc(sizeof(double) * n), *eb = malloc(sizeof(double) * n);
    bool *conv = malloc(sizeof(bool) * n);
    tu_randn(z, n * d, zscale, 31);
    tu_randn(y, n * (cw ? cw : 1), 1.0f, 32);
    struct eng_solver_stats st = {it, res, eb, conv, false};
    struct eng_solver_opts o = {tol, max_iter, method};
    struct eng_ws *ws = eng_ws_new();
    char err[ENG_ERR_LEN];
    ck_assert_int_eq(eng_inverse(m, ws, n, z, cw ? y : NULL, cw ? n : 0, x, NULL, &o, &st, err),
                     ENG_OK);
    ck_assert(st.certified);
    /* permutation order of the model (same seeds as load_chain) */
    long evals = 0;
    for (int r = 0; r < n; r++) {
        double cur[64], nxt[64], c[64];
        for (int j = 0; j < d; j++)
            cur[j] = z[r * d + j];
        for (int j = 0; j < cw; j++)
            c[j] = y[r * cw + j];
        for (int b = nb - 1; b >= 0; b--) {
            if (perms && b + 1 < nb) {
                /* undo PermuteRandom p_b: forward x'[k] = x[perm[k]] */
                int64_t perm[64];
                for (int i = 0; i < d; i++)
                    perm[i] = i;
                uint64_t s = (uint64_t)b + 5 + 1;
                for (int i = d - 1; i > 0; i--) { /* tu_add_perm's shuffle */
                    uint64_t zz = (s += 0x9E3779B97F4A7C15ull);
                    zz = (zz ^ (zz >> 30)) * 0xBF58476D1CE4E5B9ull;
                    zz = (zz ^ (zz >> 27)) * 0x94D049BB133111EBull;
                    zz ^= zz >> 31;
                    int j = (int)(zz % (uint64_t)(i + 1));
                    int64_t t = perm[i];
                    perm[i] = perm[j];
                    perm[j] = t;
                }
                for (int k = 0; k < d; k++)
                    nxt[perm[k]] = cur[k];
                memcpy(cur, nxt, sizeof(double) * d);
            }
            irm_inverse(&B[b], cur, c, nxt);
            memcpy(cur, nxt, sizeof(double) * d);
        }
        double e2 = 0;
        for (int j = 0; j < d; j++)
            e2 += (x[r * d + j] - cur[j]) * (x[r * d + j] - cur[j]);
        double e = sqrt(e2), xn = vnorm(d, cur);
        ck_assert_msg(conv[r], "%s, %s: row %d not converged (%d evals, residual %.3g)", what,
                      eng_solve_method_str(method), r, it[r], res[r]);
        /* irm_inverse is a double fixed point, good to about L/(1-L) 1e-14 relative per
         * block: 1e-9 max(|x|, 1) covers it through these chains (the exact comparison,
         * against longdouble references, is test_iresnet_cert.c) */
        ck_assert_msg(e - 1e-9 * fmax(xn, 1.0) <= eb[r], "%s, %s: row %d true error %.3g above "
                      "the bound %.3g", what, eng_solve_method_str(method), r, e, eb[r]);
        ck_assert_msg(e <= tol_factor * tol * fmax(xn, 1.0), "%s, %s: row %d error %.3g > tol "
                      "(|x| = %.3g)", what, eng_solve_method_str(method), r, e, xn);
        ck_assert_int_le(it[r], max_iter * nb);
        evals += it[r];
    }
    if (evals_out)
        *evals_out = evals;
    eng_ws_free(ws);
    free(z), free(x), free(y), free(it), free(res), free(eb), free(conv);
}

START_TEST(every_method_inverts_adversarial_contractions_within_tol)
{
    static const struct {
        enum irm_regime reg;
        int h;
        double c;
        const char *name;
    } regs[] = {{IRM_RANDOM, 32, 0.9, "random L=0.9"},     {IRM_SYM, 0, 0.9, "sym L=0.9"},
                {IRM_SYM, 0, 0.99, "sym L=0.99"},         {IRM_ROT, 0, 0.9, "rotation L=0.9"},
                {IRM_ROT, 0, 0.99, "rotation L=0.99"},    {IRM_SYM, 32, 0.99, "sym-elu L=0.99"},
                {IRM_ROT, 32, 0.99, "rotation-elu L=0.99"}};
    for (size_t k = 0; k < sizeof(regs) / sizeof(regs[0]); k++) {
        struct irm_block B;
        irm_build(&B, regs[k].reg, 8, regs[k].h, 0, regs[k].c, 10 + k);
        struct eng_model *m = load_chain(&B, 1, false, NULL);
        long ev[ENG_SOLVE_COUNT];
        for (int meth = 0; meth < ENG_SOLVE_COUNT; meth++)
            check_inverse(m, &B, 1, false, meth, 5000, 1e-6, 1.0, 2.0f, regs[k].name, &ev[meth]);
        /* the accelerated methods beat plain fixed point on the adversarial regimes */
        if (regs[k].reg != IRM_RANDOM) {
            ck_assert_msg(ev[ENG_SOLVE_NEWTON] * 5 < ev[ENG_SOLVE_FIXED_POINT], "%s: newton %ld "
                          "vs fixed point %ld evaluations", regs[k].name, ev[ENG_SOLVE_NEWTON],
                          ev[ENG_SOLVE_FIXED_POINT]);
            ck_assert_msg(ev[ENG_SOLVE_BROYDEN] < ev[ENG_SOLVE_FIXED_POINT], "%s: broyden %ld "
                          "vs fixed point %ld", regs[k].name, ev[ENG_SOLVE_BROYDEN],
                          ev[ENG_SOLVE_FIXED_POINT]);
        }
        eng_model_unref(m);
        irm_free(&B);
    }
}
END_TEST

START_TEST(chains_and_conditions_stay_within_the_bound)
{
    /* three blocks with permutations: the end-to-end error is within the summed,
     * propagated bound for every method */
    struct irm_block B[3];
    irm_build(&B[0], IRM_RANDOM, 8, 32, 0, 0.9, 21);
    irm_build(&B[1], IRM_SYM, 8, 0, 0, 0.9, 22);
    irm_build(&B[2], IRM_ROT, 8, 0, 0, 0.9, 23);
    struct eng_model *m = load_chain(B, 3, true, NULL);
    for (int meth = 0; meth < ENG_SOLVE_COUNT; meth++)
        check_inverse(m, B, 3, true, meth, 5000, 1e-6, 50.0, 1.0f, "chain of 3", NULL);
    eng_model_unref(m);
    for (int i = 0; i < 3; i++)
        irm_free(&B[i]);
    /* cinn: the condition enters g's first layer */
    struct irm_block C[2];
    irm_build(&C[0], IRM_RANDOM, 6, 24, 3, 0.95, 24);
    irm_build(&C[1], IRM_SYM, 6, 0, 3, 0.95, 25);
    m = load_chain(C, 2, false, NULL);
    for (int meth = 0; meth < ENG_SOLVE_COUNT; meth++)
        check_inverse(m, C, 2, false, meth, 5000, 1e-6, 50.0, 1.0f, "cinn", NULL);
    tu_check_roundtrip(m, 20, 1.0f, 1e-5);
    tu_check_logdet_fd(m, 4, 1.0f, 1e-3, 2e-3);
    eng_model_unref(m);
    for (int i = 0; i < 2; i++)
        irm_free(&C[i]);
}
END_TEST

START_TEST(max_iter_is_respected_and_reported)
{
    struct irm_block B;
    irm_build(&B, IRM_SYM, 8, 0, 0, 0.99, 5);
    struct eng_model *m = load_chain(&B, 1, false, NULL);
    const int n = 10, d = 8;
    float z[80], x[80];
    int it[10];
    double res[10], eb[10];
    bool conv[10];
    tu_randn(z, n * d, 1.0f, 8);
    struct eng_ws *ws = eng_ws_new();
    char err[ENG_ERR_LEN];
    int caps[2][2] = {{ENG_SOLVE_FIXED_POINT, 7}, {ENG_SOLVE_NEWTON, 1}};
    for (int k = 0; k < 2; k++) {
        struct eng_solver_stats st = {it, res, eb, conv, false};
        struct eng_solver_opts o = {1e-6, caps[k][1], caps[k][0]};
        ck_assert_int_eq(eng_inverse(m, ws, n, z, NULL, 0, x, NULL, &o, &st, err), ENG_OK);
        for (int i = 0; i < n; i++) {
            ck_assert_msg(!conv[i], "row %d claims convergence after %d evaluations", i, it[i]);
            ck_assert_int_eq(it[i], caps[k][1]);
            ck_assert(isfinite(eb[i]) && eb[i] > 1e-6); /* still a valid (large) bound */
        }
    }
    /* tolerance below the double-precision floor: stops early, not converged */
    struct eng_solver_stats st = {it, res, eb, conv, false};
    struct eng_solver_opts o = {1e-17, 1000, ENG_SOLVE_NEWTON};
    ck_assert_int_eq(eng_inverse(m, ws, n, z, NULL, 0, x, NULL, &o, &st, err), ENG_OK);
    for (int i = 0; i < n; i++) {
        ck_assert(!conv[i]);
        ck_assert_int_lt(it[i], 1000);
    }
    eng_ws_free(ws);
    eng_model_unref(m);
    irm_free(&B);
}
END_TEST

START_TEST(batched_rows_match_rows_one_at_a_time)
{
    struct irm_block B;
    irm_build(&B, IRM_RANDOM, 8, 32, 0, 0.97, 6);
    struct eng_model *m = load_chain(&B, 1, false, NULL);
    const int n = 300, d = 8; /* two tiles */
    float *z = malloc(sizeof(float) * n * d), *x = malloc(sizeof(float) * n * d), x1[8];
    int *it = malloc(sizeof(int) * n), it1;
    double *res = malloc(sizeof(double) * n), *eb = malloc(sizeof(double) * n), r1, e1;
    double *ld = malloc(sizeof(double) * n), ld1;
    bool *conv = malloc(sizeof(bool) * n), c1;
    tu_randn(z, n * d, 1.5f, 9);
    for (int i = 0; i < n * d; i += 37) /* some rows start far out, some at 0 */
        z[i] = (i % 2) ? 40.0f : 0.0f;
    struct eng_ws *ws = eng_ws_new();
    char err[ENG_ERR_LEN];
    for (int meth = 0; meth < ENG_SOLVE_COUNT; meth++) {
        struct eng_solver_stats st = {it, res, eb, conv, false};
        struct eng_solver_opts o = {1e-7, 3000, meth};
        ck_assert_int_eq(eng_inverse(m, ws, n, z, NULL, 0, x, ld, &o, &st, err), ENG_OK);
        for (int r = 0; r < n; r += 7) {
            struct eng_solver_stats s1 = {&it1, &r1, &e1, &c1, false};
            ck_assert_int_eq(eng_inverse(m, ws, 1, z + r * d, NULL, 0, x1, &ld1, &o, &s1, err),
                             ENG_OK);
            ck_assert(c1 && conv[r]);
            for (int j = 0; j < d; j++)
                ck_assert_msg(fabsf(x1[j] - x[r * d + j]) <= 3e-6f * (1 + fabsf(x1[j])),
                              "%s row %d", eng_solve_method_str(meth), r);
            ck_assert_double_eq_tol(ld1, ld[r], 1e-6);
            ck_assert_int_le(abs(it1 - it[r]), 2);
        }
    }
    eng_ws_free(ws);
    eng_model_unref(m);
    irm_free(&B);
    free(z), free(x), free(it), free(res), free(eb), free(ld), free(conv);
}
END_TEST

/* ---- log-dets ------------------------------------------------------------------------------ */

START_TEST(exact_logdet_matches_finite_differences)
{
    struct irm_block B[2];
    irm_build(&B[0], IRM_RANDOM, 7, 40, 0, 0.95, 12);
    irm_build(&B[1], IRM_SYM, 7, 0, 0, 0.95, 13);
    struct eng_model *m = load_chain(B, 2, true, NULL);
    tu_check_logdet_fd(m, 6, 1.0f, 1e-3, 2e-3);
    tu_check_roundtrip(m, 30, 1.0f, 1e-5);
    eng_model_unref(m);
    /* the sym block's log-det is sum log(1 + c lambda_i), independent of x */
    m = load_chain(&B[1], 1, false, NULL);
    float x[7] = {0.3f, -1, 2, 0.1f, 0, 1, -2}, z[7];
    double ld, want = 0;
    for (int i = 0; i < 7; i++)
        want += log(1.0 + 0.95 * (-1.0 + 2.0 * i / 6));
    struct eng_ws *ws = eng_ws_new();
    char err[ENG_ERR_LEN];
    ck_assert_int_eq(eng_forward(m, ws, 1, x, NULL, 0, z, NULL, &ld, err), ENG_OK);
    ck_assert_double_eq_tol(ld, want, 1e-5);
    eng_ws_free(ws);
    eng_model_unref(m);
    irm_free(&B[0]);
    irm_free(&B[1]);
}
END_TEST

START_TEST(series_logdet_is_within_its_bound)
{
    struct irm_block B;
    irm_build(&B, IRM_SYM, 8, 0, 0, 0.7, 14);
    struct eng_model *me = load_chain(&B, 1, false, NULL);
    const int n = 20, d = 8;
    float x[160], z[160];
    double le[20], ls[20];
    tu_randn(x, n * d, 1.0f, 15);
    struct eng_ws *ws = eng_ws_new();
    char err[ENG_ERR_LEN];
    ck_assert_int_eq(eng_forward(me, ws, n, x, NULL, 0, z, NULL, le, err), ENG_OK);
    double L = eng_model_certificate(me)->blocks[0].lipschitz;
    for (int terms = 2; terms <= 30; terms += 7) {
        char extra[96];
        snprintf(extra, sizeof(extra), ",\"logdet\":\"series\",\"series_terms\":%d", terms);
        struct eng_model *ms = load_chain(&B, 1, false, extra);
        ck_assert_int_eq(eng_forward(ms, ws, n, x, NULL, 0, z, NULL, ls, err), ENG_OK);
        double bound = d * pow(L, terms + 1) / ((terms + 1) * (1 - L));
        double worst = 0;
        for (int i = 0; i < n; i++) {
            ck_assert_msg(fabs(ls[i] - le[i]) <= bound + 1e-12, "%d terms: |%.9g - %.9g| > %.3g",
                          terms, ls[i], le[i], bound);
            worst = fmax(worst, fabs(ls[i] - le[i]));
        }
        if (terms == 2)
            ck_assert(worst > 1e-3); /* the truncation is real */
        ck_assert(strstr(eng_model_certificate(ms)->blocks[0].reason, "series") != NULL);
        eng_model_unref(ms);
    }
    eng_ws_free(ws);
    eng_model_unref(me);
    irm_free(&B);
}
END_TEST

START_TEST(manifest_errors_name_the_field)
{
    struct irm_block B;
    irm_build(&B, IRM_RANDOM, 6, 16, 0, 0.9, 16);
    irm_scale(&B, 1.5);
    struct tu_ckpt *ck = tu_ckpt_new();
    irm_tensors(&B, "b0", put_tu, ck);
    char err[ENG_ERR_LEN];
    char *js = irm_json(&B, "b0", ",\"logdet\":\"series\"");
    char *man = tu_manifest_one_block(6, 0, js);
    ck_assert_int_eq(tu_load_fail(ck, man, ENG_LOAD_NO_SELFTEST, err), ENG_ERR_MANIFEST);
    ck_assert_msg(strstr(err, "'logdet'") && strstr(err, "IResNetBlock"), "%s", err);
    free(js), free(man);
    js = irm_json(&B, "b0", ",\"logdet\":\"stochastic\"");
    man = tu_manifest_one_block(6, 0, js);
    ck_assert_int_eq(tu_load_fail(ck, man, ENG_LOAD_NO_SELFTEST, err), ENG_ERR_MANIFEST);
    ck_assert_msg(strstr(err, "logdet"), "%s", err);
    free(js), free(man);
    /* output width must be d */
    man = tu_manifest_one_block(5, 0, "{\"type\":\"IResNetBlock\",\"subnet\":{\"layers\":["
                                      "{\"type\":\"linear\",\"weight\":\"b0.0.weight\"}]}}");
    ck_assert_int_ne(tu_load_fail(ck, man, ENG_LOAD_NO_SELFTEST, err), ENG_OK);
    ck_assert_msg(strstr(err, "subnet"), "%s", err);
    free(man);
    tu_ckpt_free(ck);
    irm_free(&B);
}
END_TEST

/* la_gemm_f64 leaves out the zero terms of A (the convolutions' dense matrices of the
 * Jacobians) and may run the fused instruction: neither changes a bit of the fixed-order
 * fma chain, written out here with libm's fma, on matrices with +-0 entries, and with
 * infinities and NaNs in B (then no term may be left out). */
START_TEST(gemm_is_the_fma_chain_bit_for_bit)
{
    enum { M = 7, N = 41, K = 13 }; /* N: one block of 32 columns and a remainder */
    double A[M * K], B[K * N], C[M * N], R[M * N];
    for (int pass = 0; pass < 3; pass++) {
        uint64_t st = 77 + (uint64_t)pass;
        for (int i = 0; i < M * K; i++) {
            st = st * 6364136223846793005ull + 1442695040888963407ull;
            int r = (int)(st >> 59);
            A[i] = r < 12 ? 0.0 : r < 16 ? -0.0 : ldexp((double)(int64_t)(st >> 11) - 0x1p52, -50);
        }
        for (int i = 0; i < K * N; i++) {
            st = st * 6364136223846793005ull + 1442695040888963407ull;
            B[i] = ldexp((double)(int64_t)(st >> 11) - 0x1p52, -48 - (int)(st % 7));
            if (i % 5 == 0)
                B[i] = -B[i] * 1e-300; /* products that round to -0 or underflow */
        }
        if (pass == 1)
            B[3 * N + 2] = INFINITY;
        if (pass == 2)
            B[5 * N + 4] = NAN;
        la_gemm_f64(M, N, K, A, K, B, N, 0.0, C, N);
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                double acc = 0.0;
                for (int p = 0; p < K; p++)
                    acc = fma(A[i * K + p], B[p * N + j], acc);
                R[i * N + j] = acc;
            }
        ck_assert_msg(memcmp(C, R, sizeof(C)) == 0, "pass %d: la_gemm_f64 differs", pass);
        int nans = 0;
        for (int i = 0; i < M * N; i++)
            nans += isnan(C[i]);
        ck_assert_int_eq(nans > 0, pass > 0); /* 0 * inf and NaN reach the output */
    }
    /* la_linear_f64 and la_linear_err_f64 (outputs in blocks of four, then one by one):
     * Y = bias + X W^T with A as W (M = 7 outputs), B's first rows as X, and the running
     * error bound, against the chains written out */
    double Y[2 * M], EYv[2 * M], Yr[2 * M], EYr[2 * M], EX[2 * K];
    for (int r = 0; r < 2; r++)
        for (int k = 0; k < K; k++)
            EX[r * K + k] = 1e-12 * (1 + k + r);
    double Wabs[M * K];
    for (int i = 0; i < M * K; i++)
        Wabs[i] = fabs(A[i]);
    for (int i = 0; i < M * K; i++)
        A[i] = A[i] == 0.0 ? 0.25 * (i % 3) : A[i];
    for (int i = 0; i < 2 * K; i++)
        B[i] = isfinite(B[i]) ? B[i] : 1.5;
    for (int r = 0; r < 2; r++)
        for (int o = 0; o < M; o++) {
            Y[r * M + o] = 0.5 - o;
            EYv[r * M + o] = 1e-16;
            double acc = 0.5 - o, run = 0.0, pe = 1e-16;
            for (int k = 0; k < K; k++) {
                acc = fma(B[r * K + k], A[o * K + k], acc);
                run += fabs(acc);
            }
            for (int k = 0; k < K; k++)
                pe = fma(EX[r * K + k], Wabs[o * K + k], pe);
            Yr[r * M + o] = acc;
            EYr[r * M + o] = (LA_U * run + pe) * (1.0 + 2.0 * la_gamma(K + 2)) +
                             (double)(K + 1) * 0x1p-1074;
        }
    la_linear_err_f64(2, M, K, B, K, EX, K, A, Wabs, K, Y, M, EYv, M);
    ck_assert(memcmp(Y, Yr, sizeof(Y)) == 0);
    ck_assert(memcmp(EYv, EYr, sizeof(EYv)) == 0);
    for (int i = 0; i < 2 * M; i++)
        Y[i] = 0.5 - i % M;
    la_linear_f64(2, M, K, B, K, A, K, 1.0, Y, M);
    ck_assert(memcmp(Y, Yr, sizeof(Y)) == 0);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("iresnet");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, solver_method_names);
    tcase_add_test(tc, solvers_alone_converge_with_a_valid_bound);
    tcase_add_test(tc, singular_values_and_norm_bounds);
    tcase_add_test(tc, lipschitz_bound_is_the_product_of_exact_norms);
    tcase_add_test(tc, lipschitz_above_one_is_flagged);
    tcase_add_test(tc, every_method_inverts_adversarial_contractions_within_tol);
    tcase_add_test(tc, chains_and_conditions_stay_within_the_bound);
    tcase_add_test(tc, max_iter_is_respected_and_reported);
    tcase_add_test(tc, batched_rows_match_rows_one_at_a_time);
    tcase_add_test(tc, exact_logdet_matches_finite_differences);
    tcase_add_test(tc, series_logdet_is_within_its_bound);
    tcase_add_test(tc, manifest_errors_name_the_field);
    tcase_add_test(tc, gemm_is_the_fma_chain_bit_for_bit);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN
