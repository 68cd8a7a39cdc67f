/*
 * test_certificate.c — engine/certificate.c and the blocks' certify ops: every block type
 * gets the right verdict (couplings analytic with their clamp bounds, linear maps with
 * their condition numbers, i-ResNets contractions with L and the iteration bound), the
 * model verdict follows from the blocks, and each mlp case gets the right reason (widths,
 * narrowing layer, rank deficiency, non-injective and non-monotone activations).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "iresnet_models.h"
#include "testutil.h"

static const struct eng_certificate *cert(const struct eng_model *m)
{
    return eng_model_certificate(m);
}

static struct eng_model *one(struct tu_ckpt *c, int d, int cw, const char *json)
{
    char *man = tu_manifest_one_block(d, cw, json);
    struct eng_model *m = tu_load(c, man, ENG_LOAD_NO_SELFTEST);
    free(man);
    return m;
}

#define HAS(s, sub) ck_assert_msg(strstr((s), (sub)) != NULL, "'%s' lacks '%s'", (s), (sub))

START_TEST(coupling_blocks_are_analytic_with_clamp_bounds)
{
    const int d = 4;
    struct tu_ckpt *c = tu_ckpt_new();
    char *a = tu_add_subnet(c, "a", 2, 8, 1, 4, "{\"type\":\"relu\"}", 0.5f, 1);
    char *b = tu_add_subnet(c, "b", 2, 8, 1, 4, "{\"type\":\"relu\"}", 0.5f, 2);
    char *f = tu_add_subnet(c, "f", 2, 8, 1, 2, "{\"type\":\"tanh\"}", 0.5f, 3);
    char *g = tu_add_subnet(c, "g", 2, 8, 1, 2, "{\"type\":\"tanh\"}", 0.5f, 4);
    char *ca = tu_add_subnet(c, "ca", 3, 8, 1, 8, "{\"type\":\"relu\"}", 0.5f, 5);
    char js[4096];
    /* GLOW, TANH clamp 1.5: scales within e^+-1.5 */
    snprintf(js, sizeof(js), "{\"type\":\"GLOWCouplingBlock\",\"clamp\":1.5,"
             "\"clamp_activation\":\"TANH\",\"subnet1\":%s,\"subnet2\":%s}", a, b);
    struct eng_model *m = one(c, d, 0, js);
    const struct eng_block_cert *bc = &cert(m)->blocks[0];
    ck_assert(bc->invertible && bc->guarantee == ENG_GUARANTEE_ANALYTIC);
    ck_assert(isnan(bc->lipschitz)); /* no global bound for an x-dependent scale */
    HAS(bc->reason, "e^1.5");
    HAS(bc->reason, "TANH");
    ck_assert(cert(m)->invertible && cert(m)->certified);
    ck_assert_int_eq(cert(m)->guarantee, ENG_GUARANTEE_ANALYTIC);
    HAS(cert(m)->reason, "closed-form");
    eng_model_unref(m);
    /* ATAN clamp 2: 2 * 0.636 * pi/2 = 1.998 */
    snprintf(js, sizeof(js), "{\"type\":\"GINCouplingBlock\",\"clamp\":2.0,"
             "\"subnet1\":%s,\"subnet2\":%s}", a, b);
    m = one(c, d, 0, js);
    HAS(cert(m)->blocks[0].reason, "GIN");
    HAS(cert(m)->blocks[0].reason, "e^3.996"); /* centred: twice the clamp bound */
    eng_model_unref(m);
    /* NICE: finite Lipschitz bounds from the subnets' exact norms */
    snprintf(js, sizeof(js), "{\"type\":\"NICECouplingBlock\",\"F\":%s,\"G\":%s}", f, g);
    m = one(c, d, 0, js);
    bc = &cert(m)->blocks[0];
    ck_assert(isfinite(bc->lipschitz) && bc->lipschitz > 1.0);
    ck_assert_double_eq(bc->lipschitz, bc->lipschitz_inverse);
    HAS(bc->reason, "additive");
    eng_model_unref(m);
    /* ConditionalAffineTransform: scale from the condition only, global bound e^{clamp c} */
    snprintf(js, sizeof(js), "{\"type\":\"ConditionalAffineTransform\",\"cond\":0,\"clamp\":1.0,"
             "\"clamp_activation\":\"SIGMOID\",\"subnet\":%s}", ca);
    m = one(c, d, 3, js);
    bc = &cert(m)->blocks[0];
    ck_assert_double_eq_tol(bc->lipschitz, exp(1.0), 1e-12);
    ck_assert_double_eq_tol(bc->lipschitz_inverse, exp(1.0), 1e-12);
    eng_model_unref(m);
    free(a), free(b), free(f), free(g), free(ca);
    tu_ckpt_free(c);
}
END_TEST

START_TEST(allinone_and_spline_are_analytic)
{
    const int d = 3;
    struct tu_ckpt *c = tu_ckpt_new();
    char *sub = tu_add_subnet(c, "s", 2, 8, 1, 2, "{\"type\":\"relu\"}", 0.5f, 7);
    float gs[3] = {0, 1, 2}, off[3] = {0, 0, 0};
    float W[9] = {0.6f, 0.8f, 0, -0.8f, 0.6f, 0, 0, 0, 1}, Wi[9] = {0.6f, -0.8f, 0, 0.8f, 0.6f, 0,
                                                                  0, 0, 1}; /* a rotation */
    tu_add_f32(c, "gs", 1, (const int64_t[]){3}, gs);
    tu_add_f32(c, "off", 1, (const int64_t[]){3}, off);
    tu_add_f32(c, "W", 2, (const int64_t[]){3, 3}, W);
    tu_add_f32(c, "Wi", 2, (const int64_t[]){3, 3}, Wi);
    char js[4096];
    snprintf(js, sizeof(js), "{\"type\":\"AllInOneBlock\",\"affine_clamping\":2.0,"
             "\"global_affine_type\":\"EXP\",\"global_scale\":\"gs\",\"global_offset\":\"off\","
             "\"permutation\":{\"type\":\"soft\",\"w\":\"W\",\"w_inv\":\"Wi\"},\"subnet\":%s}", sub);
    struct eng_model *m = one(c, d, 0, js);
    const struct eng_block_cert *bc = &cert(m)->blocks[0];
    ck_assert(bc->invertible && bc->guarantee == ENG_GUARANTEE_ANALYTIC);
    ck_assert_double_eq_tol(bc->condition, 1.0, 1e-6); /* the soft permutation's */
    HAS(bc->reason, "condition number 1");
    HAS(bc->reason, "e^2");
    HAS(bc->reason, "[1, 7.39]"); /* global scale e^0 .. e^2 */
    eng_model_unref(m);
    char *s1 = tu_add_subnet(c, "p", 1, 8, 1, 2 * 31, "{\"type\":\"relu\"}", 0.3f, 8);
    char *s2 = tu_add_subnet(c, "q", 2, 8, 1, 31, "{\"type\":\"relu\"}", 0.3f, 9);
    snprintf(js, sizeof(js), "{\"type\":\"RationalQuadraticSpline\",\"split\":2,\"bins\":10,"
             "\"subnet1\":%s,\"subnet2\":%s}", s1, s2);
    m = one(c, d, 0, js);
    bc = &cert(m)->blocks[0];
    ck_assert(bc->invertible && bc->guarantee == ENG_GUARANTEE_ANALYTIC);
    HAS(bc->reason, "spline");
    eng_model_unref(m);
    free(sub), free(s1), free(s2);
    tu_ckpt_free(c);
}
END_TEST

START_TEST(linear_blocks_report_condition_numbers)
{
    const int d = 3;
    struct tu_ckpt *c = tu_ckpt_new();
    float M[9] = {2, 0, 0, 0, 0.5f, 0, 0, 0, 1};
    tu_add_f32(c, "M", 2, (const int64_t[]){3, 3}, M);
    tu_add_perm(c, "perm", 3, 1);
    float ls[3] = {0.5f, -0.5f, 0.0f}, loc[3] = {0, 0, 0};
    tu_add_f32(c, "ls", 1, (const int64_t[]){3}, ls);
    tu_add_f32(c, "loc", 1, (const int64_t[]){3}, loc);
    struct eng_model *m = one(c, d, 0, "{\"type\":\"FixedLinearTransform\",\"M\":\"M\"}");
    ck_assert_double_eq_tol(cert(m)->blocks[0].condition, 4.0, 1e-9);
    ck_assert_double_eq_tol(cert(m)->blocks[0].lipschitz, 2.0, 1e-9);
    ck_assert_double_eq_tol(cert(m)->blocks[0].lipschitz_inverse, 2.0, 1e-9);
    eng_model_unref(m);
    m = one(c, d, 0, "{\"type\":\"PermuteRandom\",\"perm\":\"perm\"}");
    ck_assert_double_eq(cert(m)->blocks[0].condition, 1.0);
    eng_model_unref(m);
    m = one(c, d, 0, "{\"type\":\"InvertibleDense\",\"weight\":\"M\",\"negative_slope\":0.5}");
    ck_assert_double_eq_tol(cert(m)->blocks[0].condition, 4.0, 1e-9);
    ck_assert_double_eq_tol(cert(m)->blocks[0].lipschitz_inverse, 4.0, 1e-9); /* 2 / 0.5 */
    eng_model_unref(m);
    m = one(c, d, 0, "{\"type\":\"ActNorm\",\"log_scale\":\"ls\",\"loc\":\"loc\"}");
    ck_assert_double_eq_tol(cert(m)->blocks[0].condition, exp(1.0), 1e-6);
    eng_model_unref(m);
    tu_ckpt_free(c);
}
END_TEST

static void put_tu(void *ctx, const char *name, int ndim, const int64_t *shape, const float *data)
{
    tu_add_f32(ctx, name, ndim, shape, data);
}

START_TEST(iresnet_blocks_are_contractions_or_flagged)
{
    struct irm_block B;
    irm_build(&B, IRM_SYM, 5, 0, 0, 0.5, 1);
    struct tu_ckpt *c = tu_ckpt_new();
    irm_tensors(&B, "b0", put_tu, c);
    tu_add_perm(c, "perm", 5, 2);
    char *js = irm_json(&B, "b0", NULL), blocks[4096];
    snprintf(blocks, sizeof(blocks), "%s,{\"type\":\"PermuteRandom\",\"perm\":\"perm\"}", js);
    char *man = malloc(8192);
    snprintf(man, 8192, "{\"format\":\"innserve-manifest\",\"version\":1,\"kind\":\"flow\","
             "\"dims\":{\"x\":5},\"blocks\":[%s]}", blocks);
    struct eng_model *m = tu_load(c, man, ENG_LOAD_NO_SELFTEST);
    const struct eng_certificate *ce = cert(m);
    ck_assert(ce->invertible && ce->certified);
    ck_assert_int_eq(ce->guarantee, ENG_GUARANTEE_CONTRACTION); /* the weakest block's */
    ck_assert_int_eq(ce->blocks[0].guarantee, ENG_GUARANTEE_CONTRACTION);
    ck_assert_int_eq(ce->blocks[1].guarantee, ENG_GUARANTEE_ANALYTIC);
    ck_assert_double_eq_tol(ce->blocks[0].lipschitz, 0.5, 1e-6);
    ck_assert_double_eq_tol(ce->blocks[0].condition, 3.0, 1e-5); /* (1 + L)/(1 - L) */
    ck_assert_int_eq(ce->blocks[0].iterations_for_1e6, 21);     /* iresnet.md 6.9 */
    HAS(ce->reason, "certified contraction");
    eng_model_unref(m);
    free(js), free(man);
    tu_ckpt_free(c);
    irm_free(&B);
}
END_TEST

/* mlp with the given layer JSON (weights named w0, w1, ... already added). */
static struct eng_model *mlp(struct tu_ckpt *c, int x, int y, const char *layers)
{
    char man[4096];
    snprintf(man, sizeof(man), "{\"format\":\"innserve-manifest\",\"version\":1,\"kind\":\"mlp\","
             "\"dims\":{\"x\":%d,\"y\":%d},\"network\":{\"layers\":[%s]}}", x, y, layers);
    return tu_load(c, man, ENG_LOAD_NO_SELFTEST);
}

START_TEST(mlp_verdicts_name_the_reason)
{
    struct tu_ckpt *c = tu_ckpt_new();
    float w33[9] = {1, 0.2f, 0, 0, 2, 0.1f, 0.3f, 0, 1.5f};
    float wr[9] = {1, 2, 3, 2, 4, 6, 0, 1, 1}; /* rank 2 */
    float w23[6] = {1, 0, 0, 0, 1, 0}, w32[6] = {1, 0, 0, 1, 1, 1}, w13[3] = {1, 1, 1};
    tu_add_f32(c, "w33", 2, (const int64_t[]){3, 3}, w33);
    tu_add_f32(c, "wr", 2, (const int64_t[]){3, 3}, wr);
    tu_add_f32(c, "w23", 2, (const int64_t[]){2, 3}, w23);
    tu_add_f32(c, "w32", 2, (const int64_t[]){3, 2}, w32);
    tu_add_f32(c, "w13", 2, (const int64_t[]){1, 3}, w13);
#define L(n) "{\"type\":\"linear\",\"weight\":\"" n "\"}"
#define A(t) "{\"type\":\"" t "\"}"
    /* fewer outputs than inputs */
    struct eng_model *m = mlp(c, 3, 1, L("w33") "," A("tanh") "," L("w13"));
    ck_assert(!cert(m)->invertible && !cert(m)->certified);
    ck_assert_int_eq(cert(m)->guarantee, ENG_GUARANTEE_NONE);
    HAS(cert(m)->reason, "maps 3 inputs to 1 outputs");
    HAS(cert(m)->blocks[2].reason, "narrows 3 inputs to 1");
    ck_assert_int_eq(cert(m)->n_blocks, 3);
    eng_model_unref(m);
    /* a bottleneck layer inside a square network */
    m = mlp(c, 3, 3, L("w23") "," A("tanh") "," L("w32") "," A("tanh") "," L("w33"));
    ck_assert(!cert(m)->invertible);
    HAS(cert(m)->reason, "squeezes the 3 inputs through 2 units");
    eng_model_unref(m);
    /* rank-deficient first layer */
    m = mlp(c, 3, 3, L("wr") "," A("tanh") "," L("w33"));
    ck_assert(!cert(m)->invertible);
    HAS(cert(m)->reason, "rank 2 < 3");
    HAS(cert(m)->blocks[0].reason, "rank-deficient");
    eng_model_unref(m);
    /* non-injective activations: relu (flat), gelu and silu (non-monotone) */
    const char *acts[3] = {"relu", "gelu", "silu"}, *why[3] = {"every negative input",
                                                               "not monotone", "not monotone"};
    for (int k = 0; k < 3; k++) {
        char layers[512];
        snprintf(layers, sizeof(layers), L("w33") ",{\"type\":\"%s\"}," L("w33"), acts[k]);
        m = mlp(c, 3, 3, layers);
        ck_assert(!cert(m)->invertible);
        HAS(cert(m)->reason, "no invertibility guarantee");
        HAS(cert(m)->blocks[1].reason, why[k]);
        ck_assert(!cert(m)->blocks[1].invertible);
        eng_model_unref(m);
    }
    /* square, full rank, strictly increasing: invertible layer by layer */
    m = mlp(c, 3, 3, L("w33") "," A("leaky_relu") "," L("w33") "," A("tanh") "," L("w33") ","
                         A("elu") "," L("w33") "," A("softplus") "," L("w33") "," A("sigmoid"));
    ck_assert(cert(m)->invertible);
    ck_assert_int_eq(cert(m)->guarantee, ENG_GUARANTEE_ANALYTIC);
    HAS(cert(m)->reason, "layer by layer");
    double cond = cert(m)->blocks[0].condition;
    ck_assert(isfinite(cond) && cond > 1.0);
    HAS(cert(m)->blocks[0].reason, "square and full rank");
    eng_model_unref(m);
    /* widening, injective: invertible on its image only */
    m = mlp(c, 2, 3, L("w32") "," A("tanh"));
    ck_assert(cert(m)->invertible);
    ck_assert_int_eq(cert(m)->guarantee, ENG_GUARANTEE_NONE);
    HAS(cert(m)->reason, "on its image");
    eng_model_unref(m);
#undef L
#undef A
    tu_ckpt_free(c);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("certificate");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, coupling_blocks_are_analytic_with_clamp_bounds);
    tcase_add_test(tc, allinone_and_spline_are_analytic);
    tcase_add_test(tc, linear_blocks_report_condition_numbers);
    tcase_add_test(tc, iresnet_blocks_are_contractions_or_flagged);
    tcase_add_test(tc, mlp_verdicts_name_the_reason);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN
