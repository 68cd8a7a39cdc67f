/*
 * test_preimage.c — eng_preimage (engine/preimage.c): on an MLP trained in the test to
 * f(x) ~= x1^2 + x2^2 (its preimages are circles), both methods return distinct
 * solutions with f(x) ~= target, best first, deterministic for a seed; the
 * evolutionary method spreads around the circle; invertible kinds (flow, inn) are
 * handled; bad arguments and the time limit.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "iresnet_models.h"
#include "testutil.h"

#define H 24

/* Fit f(x) = x1^2 + x2^2 on [-2, 2]^2 with a 2-H-H-1 tanh MLP, full-batch Adam in double. */
static void train(double *W1, double *b1, double *W2, double *b2, double *W3, double *b3)
{
    uint64_t s = 77;
    for (int i = 0; i < H * 2; i++)
        W1[i] = irm_randn(&s) * 0.8;
    for (int i = 0; i < H * H; i++)
        W2[i] = irm_randn(&s) / sqrt((double)H);
    for (int i = 0; i < H; i++)
        W3[i] = irm_randn(&s) / sqrt((double)H), b1[i] = 0.1 * irm_randn(&s), b2[i] = 0;
    *b3 = 0;
    enum { NP = 2 * H + H * H + 3 * H + 1, NG = 15 };
    double *th[6] = {W1, b1, W2, b2, W3, b3};
    int sz[6] = {2 * H, H, H * H, H, H, 1};
    double m[NP] = {0}, v[NP] = {0}, g[NP];
    double b1t = 1, b2t = 1;
    for (int step = 0; step < 1500; step++) {
        memset(g, 0, sizeof(g));
        double *gW1 = g, *gb1 = gW1 + 2 * H, *gW2 = gb1 + H, *gb2 = gW2 + H * H, *gW3 = gb2 + H,
               *gb3 = gW3 + H;
        for (int a = 0; a < NG; a++)
            for (int c = 0; c < NG; c++) {
                double x[2] = {-2 + 4.0 * a / (NG - 1), -2 + 4.0 * c / (NG - 1)};
                double h1[H], h2[H], out = *b3;
                for (int i = 0; i < H; i++)
                    h1[i] = tanh(W1[2 * i] * x[0] + W1[2 * i + 1] * x[1] + b1[i]);
                for (int i = 0; i < H; i++) {
                    double u = b2[i];
                    for (int j = 0; j < H; j++)
                        u += W2[i * H + j] * h1[j];
                    h2[i] = tanh(u);
                    out += W3[i] * h2[i];
                }
                double e = (out - (x[0] * x[0] + x[1] * x[1])) / (NG * NG);
                double d2[H], d1[H];
                *gb3 += e;
                for (int i = 0; i < H; i++) {
                    gW3[i] += e * h2[i];
                    d2[i] = e * W3[i] * (1 - h2[i] * h2[i]);
                    gb2[i] += d2[i];
                }
                for (int j = 0; j < H; j++) {
                    double s2 = 0;
                    for (int i = 0; i < H; i++) {
                        gW2[i * H + j] += d2[i] * h1[j];
                        s2 += d2[i] * W2[i * H + j];
                    }
                    d1[j] = s2 * (1 - h1[j] * h1[j]);
                    gb1[j] += d1[j];
                    gW1[2 * j] += d1[j] * x[0];
                    gW1[2 * j + 1] += d1[j] * x[1];
                }
            }
        b1t *= 0.9, b2t *= 0.999;
        int o = 0;
        for (int t = 0; t < 6; t++)
            for (int i = 0; i < sz[t]; i++, o++) {
                m[o] = 0.9 * m[o] + 0.1 * g[o];
                v[o] = 0.999 * v[o] + 0.001 * g[o] * g[o];
                th[t][i] -= 0.01 * (m[o] / (1 - b1t)) / (sqrt(v[o] / (1 - b2t)) + 1e-12);
            }
    }
}

static void addf(struct tu_ckpt *c, const char *name, int ndim, const int64_t *shape,
                 const double *v, int n)
{
    float *f = malloc(sizeof(float) * (size_t)n);
    for (int i = 0; i < n; i++)
        f[i] = (float)v[i];
    tu_add_f32(c, name, ndim, shape, f);
    free(f);
}

/* The trained MLP; with std_x (mean 1, std 2) and std_y (mean 0.5, std 3) when
 * standardized, composed so that the physical map is the same function of
 * u = (x - 1) / 2, i.e. f(x) = net((x - 1) / 2) * 3 + 0.5. */
static struct eng_model *mlp_model(bool standardized)
{
    static double W1[2 * H], b1[H], W2[H * H], b2[H], W3[H], b3;
    static int trained;
    if (!trained) {
        train(W1, b1, W2, b2, W3, &b3);
        trained = 1;
    }
    struct tu_ckpt *c = tu_ckpt_new();
    int64_t s1[2] = {H, 2}, s2[2] = {H, H}, s3[2] = {1, H}, sh[1] = {H}, so[1] = {1}, s2v[1] = {2};
    addf(c, "l0.w", 2, s1, W1, 2 * H);
    addf(c, "l0.b", 1, sh, b1, H);
    addf(c, "l2.w", 2, s2, W2, H * H);
    addf(c, "l2.b", 1, sh, b2, H);
    addf(c, "l4.w", 2, s3, W3, H);
    addf(c, "l4.b", 1, so, &b3, 1);
    double mx[2] = {1, 1}, sx[2] = {2, 2}, my = 0.5, sy = 3;
    addf(c, "mx", 1, s2v, mx, 2);
    addf(c, "sx", 1, s2v, sx, 2);
    addf(c, "my", 1, so, &my, 1);
    addf(c, "sy", 1, so, &sy, 1);
    char man[1024];
    snprintf(man, sizeof(man),
             "{\"format\":\"innserve-manifest\",\"version\":1,\"kind\":\"mlp\","
             "\"dims\":{\"x\":2,\"y\":1},%s"
             "\"network\":{\"layers\":[{\"type\":\"linear\",\"weight\":\"l0.w\",\"bias\":\"l0.b\"},"
             "{\"type\":\"tanh\"},{\"type\":\"linear\",\"weight\":\"l2.w\",\"bias\":\"l2.b\"},"
             "{\"type\":\"tanh\"},{\"type\":\"linear\",\"weight\":\"l4.w\",\"bias\":\"l4.b\"}]}}",
             standardized ? "\"standardize\":{\"x\":{\"mean\":\"mx\",\"std\":\"sx\"},"
                            "\"y\":{\"mean\":\"my\",\"std\":\"sy\"}}," : "");
    struct eng_model *m = tu_load(c, man, ENG_LOAD_NO_SELFTEST);
    tu_ckpt_free(c);
    return m;
}

static double fwd1(const struct eng_model *m, const float *x)
{
    float y;
    struct eng_ws *ws = eng_ws_new();
    char err[ENG_ERR_LEN];
    ck_assert_int_eq(eng_forward(m, ws, 1, x, NULL, 0, NULL, &y, NULL, err), ENG_OK);
    eng_ws_free(ws);
    return y;
}

/* Run a search and check: n_found solutions, residuals match the forward map, sorted,
 * pairwise distinct (> 1e-2 of the box diagonal). */
static int search(const struct eng_model *m, int method, float target, int S, uint64_t seed,
                  float *x, double *res, double res_max, double box_diag)
{
    struct eng_preimage_opts o = {method, S, 300, seed, NULL, NULL, 0.0, 30.0};
    struct eng_ws *ws = eng_ws_new();
    char err[ENG_ERR_LEN];
    int nf = -1;
    ck_assert_msg(eng_preimage(m, ws, &target, NULL, &o, x, res, &nf, err) == ENG_OK, "%s", err);
    ck_assert_int_ge(nf, 1);
    ck_assert_int_le(nf, S);
    for (int i = 0; i < nf; i++) {
        double f = fwd1(m, x + 2 * i);
        ck_assert_double_eq_tol(res[i], fabs(f - target), 1e-9);
        ck_assert_msg(res[i] <= res_max, "solution %d: residual %.3g", i, res[i]);
        if (i)
            ck_assert_double_ge(res[i], res[i - 1]);
        for (int j = 0; j < i; j++) {
            double dx = x[2 * i] - x[2 * j], dy = x[2 * i + 1] - x[2 * j + 1];
            ck_assert_msg(sqrt(dx * dx + dy * dy) > 1e-2 * box_diag, "solutions %d and %d "
                          "coincide", i, j);
        }
    }
    eng_ws_free(ws);
    return nf;
}

START_TEST(both_methods_find_distinct_preimages_of_a_trained_mlp)
{
    for (int stdz = 0; stdz < 2; stdz++) {
        struct eng_model *m = mlp_model(stdz);
        /* standardized: f(x) = net(u) * 3 + 0.5 with u = (x - 1) / 2, so target 6.5 means
         * net(u) = 2: |u|^2 ~ 2, i.e. |x - 1|^2 ~ 8; the default box is u in [-3, 3] */
        float target = stdz ? 6.5f : 2.0f;
        double diag = stdz ? 12.0 * sqrt(2.0) : 6.0 * sqrt(2.0);
        for (int meth = 0; meth < 2; meth++) {
            float x[16];
            double res[8];
            int nf = search(m, meth, target, 8, 5, x, res, 1e-4, diag);
            ck_assert_msg(nf == 8, "method %d found only %d", meth, nf);
            int quad = 0;
            for (int i = 0; i < nf; i++) {
                double u0 = stdz ? (x[2 * i] - 1) / 2 : x[2 * i];
                double u1 = stdz ? (x[2 * i + 1] - 1) / 2 : x[2 * i + 1];
                double r2 = u0 * u0 + u1 * u1;
                ck_assert_msg(fabs(r2 - 2.0) < 0.4, "solution %d off the circle: |u|^2 = %.3f", i,
                              r2); /* the fit is approximate */
                quad |= 1 << ((u0 >= 0) + 2 * (u1 >= 0));
            }
            int nq = __builtin_popcount((unsigned)quad);
            ck_assert_msg(nq >= 3, "method %d: solutions cover %d quadrants only", meth, nq);
        }
        eng_model_unref(m);
    }
}
END_TEST

START_TEST(deterministic_for_a_seed)
{
    struct eng_model *m = mlp_model(true);
    for (int meth = 0; meth < 2; meth++) {
        float a[12], b[12], c[12];
        double ra[6], rb[6], rc[6];
        int na = search(m, meth, 4.0f, 6, 11, a, ra, 1e-3, 12 * sqrt(2.0));
        int nb = search(m, meth, 4.0f, 6, 11, b, rb, 1e-3, 12 * sqrt(2.0));
        int nc = search(m, meth, 4.0f, 6, 12, c, rc, 1e-3, 12 * sqrt(2.0));
        ck_assert_int_eq(na, nb);
        ck_assert(memcmp(a, b, sizeof(float) * 2 * (size_t)na) == 0);
        ck_assert(memcmp(ra, rb, sizeof(double) * (size_t)na) == 0);
        ck_assert(nc != na || memcmp(a, c, sizeof(float) * 2 * (size_t)na) != 0);
    }
    eng_model_unref(m);
}
END_TEST

START_TEST(box_and_prior_are_respected)
{
    struct eng_model *m = mlp_model(false);
    float lo[2] = {0.2f, 0.2f}, hi[2] = {3.0f, 3.0f}, x[8], t = 2.0f;
    double res[4];
    int nf;
    struct eng_ws *ws = eng_ws_new();
    char err[ENG_ERR_LEN];
    for (int meth = 0; meth < 2; meth++) {
        struct eng_preimage_opts o = {meth, 4, 300, 3, lo, hi, 0.0, 0.0};
        ck_assert_int_eq(eng_preimage(m, ws, &t, NULL, &o, x, res, &nf, err), ENG_OK);
        ck_assert_int_ge(nf, 1);
        for (int i = 0; i < 2 * nf; i++)
            ck_assert(x[i] >= 0.2f && x[i] <= 3.0f);
        ck_assert_double_le(res[0], 1e-4);
    }
    /* a strong prior biases the search; the polish still lands on the preimage set */
    struct eng_preimage_opts o = {ENG_PREIMAGE_GRADIENT, 2, 300, 3, NULL, NULL, 10.0, 0.0};
    ck_assert_int_eq(eng_preimage(m, ws, &t, NULL, &o, x, res, &nf, err), ENG_OK);
    ck_assert_int_ge(nf, 1);
    ck_assert_double_le(res[0], 1e-4);
    eng_ws_free(ws);
    eng_model_unref(m);
}
END_TEST

static void put_tu(void *ctx, const char *name, int ndim, const int64_t *shape, const float *data)
{
    tu_add_f32(ctx, name, ndim, shape, data);
}

START_TEST(invertible_kinds_are_handled)
{
    struct eng_ws *ws = eng_ws_new();
    char err[ENG_ERR_LEN];
    /* flow: the unique preimage is the inverse */
    struct irm_block B;
    irm_build(&B, IRM_RANDOM, 3, 16, 0, 0.9, 2);
    struct tu_ckpt *c = tu_ckpt_new();
    irm_tensors(&B, "b0", put_tu, c);
    char *js = irm_json(&B, "b0", NULL), *man = tu_manifest_one_block(3, 0, js);
    struct eng_model *m = tu_load(c, man, ENG_LOAD_NO_SELFTEST);
    float x0[3] = {0.5f, -1.0f, 2.0f}, z[3], x[9];
    double res[3];
    int nf;
    ck_assert_int_eq(eng_forward(m, ws, 1, x0, NULL, 0, z, NULL, NULL, err), ENG_OK);
    struct eng_preimage_opts o = {ENG_PREIMAGE_GRADIENT, 3, 100, 1, NULL, NULL, 0, 0};
    ck_assert_int_eq(eng_preimage(m, ws, z, NULL, &o, x, res, &nf, err), ENG_OK);
    ck_assert_int_eq(nf, 1);
    for (int j = 0; j < 3; j++)
        ck_assert_float_eq_tol(x[j], x0[j], 1e-5f);
    ck_assert_double_le(res[0], 1e-5);
    eng_model_unref(m);
    free(js), free(man);
    tu_ckpt_free(c);
    irm_free(&B);

    /* cinn: the condition selects the bijection */
    irm_build(&B, IRM_RANDOM, 3, 16, 2, 0.9, 5);
    c = tu_ckpt_new();
    irm_tensors(&B, "b0", put_tu, c);
    js = irm_json(&B, "b0", ",\"cond\":0");
    man = tu_manifest_one_block(3, 2, js);
    m = tu_load(c, man, ENG_LOAD_NO_SELFTEST);
    float yc[2] = {0.3f, -0.7f};
    ck_assert_int_eq(eng_forward(m, ws, 1, x0, yc, 1, z, NULL, NULL, err), ENG_OK);
    ck_assert_int_eq(eng_preimage(m, ws, z, NULL, &o, x, res, &nf, err), ENG_ERR_SHAPE);
    ck_assert_int_eq(eng_preimage(m, ws, z, yc, &o, x, res, &nf, err), ENG_OK);
    ck_assert_int_eq(nf, 1);
    for (int j = 0; j < 3; j++)
        ck_assert_float_eq_tol(x[j], x0[j], 1e-5f);
    eng_model_unref(m);
    free(js), free(man);
    tu_ckpt_free(c);
    irm_free(&B);

    /* inn: x (3) + pad (1) <-> z (2) + y (2): the preimages of y form curves */
    struct irm_block C[2];
    irm_build(&C[0], IRM_RANDOM, 4, 16, 0, 0.8, 3);
    irm_build(&C[1], IRM_RANDOM, 4, 16, 0, 0.8, 4);
    c = tu_ckpt_new();
    irm_tensors(&C[0], "b0", put_tu, c);
    irm_tensors(&C[1], "b1", put_tu, c);
    tu_add_perm(c, "p0", 4, 9);
    char *j0 = irm_json(&C[0], "b0", NULL), *j1 = irm_json(&C[1], "b1", NULL);
    char mb[8192];
    snprintf(mb, sizeof(mb),
             "{\"format\":\"innserve-manifest\",\"version\":1,\"kind\":\"inn\","
             "\"dims\":{\"x\":3,\"y\":2,\"z\":2,\"pad_x\":1,\"pad_y\":0},"
             "\"layout\":{\"input\":[\"x\",\"pad\"],\"output\":[\"z\",\"y\"]},"
             "\"blocks\":[%s,{\"type\":\"PermuteRandom\",\"perm\":\"p0\"},%s]}", j0, j1);
    m = tu_load(c, mb, ENG_LOAD_NO_SELFTEST);
    float y0[2], zz[2], xs[24];
    double rs[12];
    ck_assert_int_eq(eng_forward(m, ws, 1, x0, NULL, 0, zz, y0, NULL, err), ENG_OK);
    for (int meth = 0; meth < 2; meth++) {
        struct eng_preimage_opts oi = {meth, 6, 40, 7, NULL, NULL, 0, 0};
        ck_assert_msg(eng_preimage(m, ws, y0, NULL, &oi, xs, rs, &nf, err) == ENG_OK, "%s", err);
        ck_assert_int_ge(nf, 2);
        for (int i = 0; i < nf; i++) {
            float yy[2];
            ck_assert_int_eq(eng_forward(m, ws, 1, xs + 3 * i, NULL, 0, zz, yy, NULL, err), ENG_OK);
            double r = hypot(yy[0] - y0[0], yy[1] - y0[1]);
            ck_assert_double_eq_tol(rs[i], r, 1e-9);
            ck_assert_msg(r < 1e-3, "inn method %d solution %d: residual %.3g", meth, i, r);
        }
    }
    eng_model_unref(m);
    free(j0), free(j1);
    tu_ckpt_free(c);
    irm_free(&C[0]);
    irm_free(&C[1]);
    eng_ws_free(ws);
}
END_TEST

START_TEST(bad_arguments_and_the_time_limit)
{
    struct eng_model *m = mlp_model(false);
    struct eng_ws *ws = eng_ws_new();
    char err[ENG_ERR_LEN];
    float x[2048], t = 1.0f, nan_t = NAN, lo[2] = {1, 0}, hi[2] = {0, 1};
    double res[1024];
    int nf;
    struct eng_preimage_opts o = {ENG_PREIMAGE_GRADIENT, 1, 10, 1, NULL, NULL, 0, 0};
    o.method = 7;
    ck_assert_int_eq(eng_preimage(m, ws, &t, NULL, &o, x, res, &nf, err), ENG_ERR_ARG);
    o.method = 0, o.num_solutions = 0;
    ck_assert_int_eq(eng_preimage(m, ws, &t, NULL, &o, x, res, &nf, err), ENG_ERR_ARG);
    o.num_solutions = 1, o.max_steps = 0;
    ck_assert_int_eq(eng_preimage(m, ws, &t, NULL, &o, x, res, &nf, err), ENG_ERR_ARG);
    o.max_steps = 10, o.low = lo, o.high = hi;
    ck_assert_int_eq(eng_preimage(m, ws, &t, NULL, &o, x, res, &nf, err), ENG_ERR_ARG);
    ck_assert(strstr(err, "box") != NULL);
    o.low = o.high = NULL;
    ck_assert_int_eq(eng_preimage(m, ws, &nan_t, NULL, &o, x, res, &nf, err), ENG_ERR_NONFINITE);
    /* an unreachable target still returns its best attempts, with honest residuals */
    t = -50.0f;
    ck_assert_int_eq(eng_preimage(m, ws, &t, NULL, &o, x, res, &nf, err), ENG_OK);
    ck_assert_int_ge(nf, 1);
    ck_assert_double_gt(res[0], 10.0);
    /* time limit: a huge step budget stops after ~0.3 s */
    struct eng_preimage_opts ot = {ENG_PREIMAGE_EVOLUTIONARY, 64, 1000000, 1, NULL, NULL, 0, 0.3};
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    t = 2.0f;
    ck_assert_int_eq(eng_preimage(m, ws, &t, NULL, &ot, x, res, &nf, err), ENG_OK);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double el = (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec);
    ck_assert_msg(el < 3.0, "took %.2f s", el);
    ck_assert_int_ge(nf, 1);
    eng_ws_free(ws);
    eng_model_unref(m);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("preimage");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, both_methods_find_distinct_preimages_of_a_trained_mlp);
    tcase_add_test(tc, deterministic_for_a_seed);
    tcase_add_test(tc, box_and_prior_are_respected);
    tcase_add_test(tc, invertible_kinds_are_handled);
    tcase_add_test(tc, bad_arguments_and_the_time_limit);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN
