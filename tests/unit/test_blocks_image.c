/*
 * test_blocks_image.c — the shape-aware blocks (blocks/image.c), the invertible-autoencoder
 * layers (invauto.c), ElementwiseRationalQuadraticSpline and LinearSpline (binned.c),
 * GaussianMixtureModel (gmm.c), Inverse (inverse.c), and ActNorm / PermuteRandom per
 * channel.  Each block is loaded as a one-block flow (or cinn) with a per-row shape and
 * checked by a round trip and a finite-difference log-det; the squeezes' output shapes and
 * a few values are checked against a direct computation here (the golden img_* fixtures pin
 * every block against FrEIA itself); InvAutoConv2D's inverse is checked to be the adjoint of
 * its forward; and every shape or width error is refused with a message naming it.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

/* A one-block flow (cw == 0) or cinn over rows of `shape` (rank 1..3). malloc'd. */
static char *manifest(int rank, const int *shape, int cw, const char *block)
{
    int d = 1;
    char sh[64];
    int o = snprintf(sh, sizeof(sh), "[");
    for (int i = 0; i < rank; i++) {
        d *= shape[i];
        o += snprintf(sh + o, sizeof(sh) - (size_t)o, "%s%d", i ? "," : "", shape[i]);
    }
    snprintf(sh + o, sizeof(sh) - (size_t)o, "]");
    size_t cap = strlen(block) + 512;
    char *s = malloc(cap);
    ck_assert_ptr_nonnull(s);
    if (cw == 0)
        snprintf(s, cap, "{\"format\":\"innserve-manifest\",\"version\":1,\"kind\":\"flow\","
                 "\"dims\":{\"x\":%d},\"shape\":{\"x\":%s},\"blocks\":[%s]}", d, sh, block);
    else
        snprintf(s, cap, "{\"format\":\"innserve-manifest\",\"version\":1,\"kind\":\"cinn\","
                 "\"dims\":{\"x\":%d,\"y\":%d},\"shape\":{\"x\":%s},"
                 "\"conditions\":[{\"net\":null}],\"blocks\":[%s]}", d, cw, sh, block);
    return s;
}

static struct eng_model *load(struct tu_ckpt *c, int rank, const int *shape, int cw,
                              const char *block)
{
    char *man = manifest(rank, shape, cw, block);
    struct eng_model *m = tu_load(c, man, ENG_LOAD_NO_SELFTEST);
    free(man);
    ck_assert_ptr_nonnull(m);
    return m;
}

static void refused(struct tu_ckpt *c, int rank, const int *shape, int cw, const char *block,
                    const char *const *needles)
{
    char *man = manifest(rank, shape, cw, block);
    char err[ENG_ERR_LEN] = "";
    enum eng_status st = tu_load_fail(c, man, ENG_LOAD_NO_SELFTEST, err);
    free(man);
    ck_assert_msg(st != ENG_OK, "loaded: %s", block);
    for (int i = 0; needles[i]; i++)
        ck_assert_msg(strstr(err, needles[i]) != NULL, "message lacks \"%s\": %s", needles[i],
                      err);
}

/* Round trip on 600 rows (3 tiles) and the log-det against a float32 central difference
 * of step h on 6 rows (its error grows with the width: about 1e-7/h per entry). */
static void generic(const struct eng_model *m, float xscale, double rt, double h, double fd)
{
    tu_check_roundtrip(m, 600, xscale, rt);
    tu_check_logdet_fd(m, 6, xscale, h, fd);
}

static void z_shape_is(const struct eng_model *m, int c, int h, int w)
{
    const struct eng_info *in = eng_model_info(m);
    ck_assert_int_eq(in->z_rank, 3);
    ck_assert_msg(in->z_shape[0] == c && in->z_shape[1] == h && in->z_shape[2] == w,
                  "z shape (%d, %d, %d), want (%d, %d, %d)", in->z_shape[0], in->z_shape[1],
                  in->z_shape[2], c, h, w);
}

/* forward of one row x (d) into z (d) and its log-det */
static double fwd1(const struct eng_model *m, const float *x, float *z)
{
    struct eng_ws *ws = eng_ws_new();
    double ld = 0.0;
    char err[ENG_ERR_LEN] = "";
    enum eng_status st = eng_forward(m, ws, 1, x, NULL, 0, z, NULL, &ld, err);
    ck_assert_msg(st == ENG_OK, "%s", err);
    eng_ws_free(ws);
    return ld;
}

/* ---- Haar ------------------------------------------------------------------------------ */

START_TEST(haar_values_shapes_and_roundtrip)
{
    const int sh[3] = {3, 4, 6};
    struct tu_ckpt *c = tu_ckpt_new();
    /* default order: channel c's wavelets at 4c + k; f = rebalance/2 */
    struct eng_model *m = load(c, 3, sh, 0, "{\"type\":\"HaarDownsampling\",\"rebalance\":0.5}");
    z_shape_is(m, 12, 2, 3);
    float x[72], z[72];
    tu_randn(x, 72, 1.0f, 5);
    double ld = fwd1(m, x, z);
    ck_assert_msg(fabs(ld - 72 * log(0.5)) < 1e-9, "log-det %g", ld);
    /* channel 1, patch (i, j) = (1, 2): pixels (2, 4) (2, 5) (3, 4) (3, 5) */
    const float *xc = x + 24;
    float a = xc[2 * 6 + 4], b = xc[2 * 6 + 5], cc = xc[3 * 6 + 4], dd = xc[3 * 6 + 5];
    float want[4] = {a + b + cc + dd, a - b + cc - dd, a + b - cc - dd, a - b - cc + dd};
    for (int k = 0; k < 4; k++)
        ck_assert_msg(fabsf(z[(4 + k) * 6 + 1 * 3 + 2] - 0.25f * want[k]) < 1e-6f, "k %d", k);
    generic(m, 1.0f, 1e-6, 1e-2, 3e-3);
    eng_model_unref(m);
    /* order_by_wavelet: at k·C + c */
    m = load(c, 3, sh, 0, "{\"type\":\"HaarDownsampling\",\"order_by_wavelet\":true}");
    fwd1(m, x, z);
    for (int k = 0; k < 4; k++)
        ck_assert_msg(fabsf(z[(k * 3 + 1) * 6 + 1 * 3 + 2] - 0.5f * want[k]) < 1e-6f, "k %d", k);
    generic(m, 1.0f, 1e-6, 1e-2, 3e-3);
    eng_model_unref(m);
    /* Upsampling is the inverse: (12, 2, 3) -> (3, 4, 6) */
    const int su[3] = {12, 2, 3};
    m = load(c, 3, su, 0, "{\"type\":\"HaarUpsampling\",\"rebalance\":2.0}");
    z_shape_is(m, 3, 4, 6);
    ck_assert_msg(fabs(fwd1(m, x, z) + 72 * log(2.0)) < 1e-9, "upsampling log-det");
    generic(m, 1.0f, 1e-6, 1e-2, 3e-3);
    eng_model_unref(m);
    tu_ckpt_free(c);
}
END_TEST

START_TEST(irevnet_is_a_permutation)
{
    const int sh[3] = {3, 4, 6};
    struct tu_ckpt *c = tu_ckpt_new();
    for (int legacy = 0; legacy < 2; legacy++) {
        char blk[128];
        snprintf(blk, sizeof(blk), "{\"type\":\"IRevNetDownsampling\",\"legacy_backend\":%s}",
                 legacy ? "true" : "false");
        struct eng_model *m = load(c, 3, sh, 0, blk);
        z_shape_is(m, 12, 2, 3);
        float x[72], z[72];
        for (int i = 0; i < 72; i++)
            x[i] = (float)i;
        ck_assert(fwd1(m, x, z) == 0.0);
        /* pixel (2i + a, 2j + b) of channel c at channel 4c + k or k C + c, k = 2a + b */
        for (int ch = 0; ch < 3; ch++)
            for (int k = 0; k < 4; k++) {
                int oc = legacy ? k * 3 + ch : 4 * ch + k;
                float want = (float)(ch * 24 + (2 * 1 + k / 2) * 6 + 2 * 2 + k % 2);
                ck_assert_msg(z[oc * 6 + 1 * 3 + 2] == want, "legacy %d c %d k %d", legacy, ch,
                              k);
            }
        generic(m, 1.0f, 0.0, 1e-2, 3e-3);
        eng_model_unref(m);
    }
    const int su[3] = {8, 2, 3};
    struct eng_model *m = load(c, 3, su, 0, "{\"type\":\"IRevNetUpsampling\"}");
    z_shape_is(m, 2, 4, 6);
    generic(m, 1.0f, 0.0, 1e-2, 3e-3);
    eng_model_unref(m);
    tu_ckpt_free(c);
}
END_TEST

START_TEST(squeeze_shape_errors_are_named)
{
    struct tu_ckpt *c = tu_ckpt_new();
    const int odd[3] = {3, 5, 4}, vec[1] = {12}, c6[3] = {6, 2, 2};
    refused(c, 3, odd, 0, "{\"type\":\"HaarDownsampling\"}",
            (const char *const[]){"HaarDownsampling", "even height and width", "(3, 5, 4)", NULL});
    refused(c, 1, vec, 0, "{\"type\":\"IRevNetDownsampling\"}",
            (const char *const[]){"IRevNetDownsampling", "(C, H, W)", "(12)", NULL});
    refused(c, 3, c6, 0, "{\"type\":\"HaarUpsampling\"}",
            (const char *const[]){"HaarUpsampling", "divisible by 4", "(6, 2, 2)", NULL});
    refused(c, 3, c6, 0, "{\"type\":\"IRevNetUpsampling\"}",
            (const char *const[]){"IRevNetUpsampling", "divisible by 4", NULL});
    refused(c, 3, c6, 0, "{\"type\":\"HaarDownsampling\",\"rebalance\":0}",
            (const char *const[]){"rebalance", "!= 0", NULL});
    tu_ckpt_free(c);
}
END_TEST

/* ---- Fixed1x1Conv, ActNorm and PermuteRandom per channel ------------------------------ */

START_TEST(conv1x1_per_pixel)
{
    const int sh[3] = {3, 2, 5};
    struct tu_ckpt *c = tu_ckpt_new();
    float M[9] = {1.2f, 0.3f, -0.4f, 0.1f, 0.9f, 0.2f, -0.5f, 0.6f, 1.1f};
    tu_add_f32(c, "M", 4, (const int64_t[]){3, 3, 1, 1}, M);
    struct eng_model *m = load(c, 3, sh, 0, "{\"type\":\"Fixed1x1Conv\",\"M\":\"M\"}");
    float x[30], z[30];
    tu_randn(x, 30, 1.0f, 9);
    double ld = fwd1(m, x, z);
    double det = M[0] * (M[4] * M[8] - M[5] * M[7]) - M[1] * (M[3] * M[8] - M[5] * M[6]) +
                 M[2] * (M[3] * M[7] - M[4] * M[6]);
    ck_assert_msg(fabs(ld - 10 * log(fabs(det))) < 1e-5, "log-det %g", ld);
    for (int o = 0; o < 3; o++)   /* y[o] = Σ_i M[o, i] x[i] at pixel 7 */
        ck_assert(fabsf(z[o * 10 + 7] - (M[o * 3] * x[7] + M[o * 3 + 1] * x[17] +
                                         M[o * 3 + 2] * x[27])) < 1e-5f);
    generic(m, 1.0f, 1e-5, 1e-2, 3e-3);
    eng_model_unref(m);
    tu_ckpt_free(c);

    c = tu_ckpt_new();
    float S[9] = {1, 2, 3, 2, 4, 6, 0, 1, 1};
    tu_add_f32(c, "M", 4, (const int64_t[]){3, 3, 1, 1}, S);
    refused(c, 3, sh, 0, "{\"type\":\"Fixed1x1Conv\",\"M\":\"M\"}",
            (const char *const[]){"'M'", "singular", NULL});
    const int vec[1] = {3};
    refused(c, 1, vec, 0, "{\"type\":\"Fixed1x1Conv\",\"M\":\"M\"}",
            (const char *const[]){"Fixed1x1Conv", "(C, H, W)", NULL});
    tu_ckpt_free(c);
}
END_TEST

START_TEST(actnorm_and_permute_per_channel)
{
    const int sh[3] = {3, 2, 2};
    struct tu_ckpt *c = tu_ckpt_new();
    float ls[3] = {0.5f, -0.25f, 0.1f}, loc[3] = {1.0f, -2.0f, 0.5f};
    tu_add_f32(c, "ls", 4, (const int64_t[]){1, 3, 1, 1}, ls);
    tu_add_f32(c, "loc", 4, (const int64_t[]){1, 3, 1, 1}, loc);
    struct eng_model *m = load(c, 3, sh, 0,
                               "{\"type\":\"ActNorm\",\"log_scale\":\"ls\",\"loc\":\"loc\"}");
    float x[12], z[12];
    tu_randn(x, 12, 1.0f, 3);
    double ld = fwd1(m, x, z);
    ck_assert_msg(fabs(ld + 4 * (0.5 + -0.25 + 0.1)) < 1e-6, "log-det %g", ld);
    for (int k = 0; k < 12; k++)
        ck_assert(fabsf(z[k] - (x[k] - loc[k / 4]) * expf(-ls[k / 4])) < 1e-5f);
    generic(m, 1.0f, 1e-6, 1e-2, 3e-3);
    eng_model_unref(m);
    tu_add(c, "perm", "I64", 1, (const int64_t[]){3}, (const int64_t[]){2, 0, 1});
    m = load(c, 3, sh, 0, "{\"type\":\"PermuteRandom\",\"perm\":\"perm\"}");
    fwd1(m, x, z);
    const int p[3] = {2, 0, 1};
    for (int k = 0; k < 12; k++)
        ck_assert(z[k] == x[p[k / 4] * 4 + k % 4]);
    generic(m, 1.0f, 0.0, 1e-2, 3e-3);
    eng_model_unref(m);
    tu_ckpt_free(c);
}
END_TEST

/* ---- invertible-autoencoder layers ----------------------------------------------------- */

START_TEST(invauto_act_both_kinds)
{
    const int sh[2] = {3, 4};
    struct tu_ckpt *c = tu_ckpt_new();
    float a[3] = {0.7f, -0.3f, 0.2f}, an[3] = {-0.4f, 0.5f, 0.0f}, w4[4] = {0, 0, 0, 0};
    tu_add_f32(c, "W", 1, (const int64_t[]){4}, w4);
    tu_add_f32(c, "a", 3, (const int64_t[]){1, 3, 1}, a);
    tu_add_f32(c, "an", 3, (const int64_t[]){1, 3, 1}, an);
    struct eng_model *m = load(c, 2, sh, 0, "{\"type\":\"InvAutoAct\",\"alpha\":\"a\"}");
    generic(m, 1.0f, 1e-6, 1e-3, 2e-3);
    float x[12], z[12];
    tu_randn(x, 12, 1.0f, 4);
    fwd1(m, x, z);
    for (int k = 0; k < 12; k++)
        ck_assert(fabsf(z[k] - x[k] * expf(x[k] > 0 ? a[k / 4] : -a[k / 4])) < 1e-6f);
    eng_model_unref(m);
    m = load(c, 2, sh, 0, "{\"type\":\"InvAutoActTwoSided\",\"alpha_pos\":\"a\","
                          "\"alpha_neg\":\"an\"}");
    generic(m, 1.0f, 1e-6, 1e-3, 2e-3);
    fwd1(m, x, z);
    for (int k = 0; k < 12; k++)
        ck_assert(fabsf(z[k] - x[k] * expf(x[k] > 0 ? a[k / 4] : an[k / 4])) < 1e-6f);
    eng_model_unref(m);
    refused(c, 2, sh, 0, "{\"type\":\"InvAutoAct\",\"alpha\":\"W\"}",
            (const char *const[]){"'alpha'", NULL});
    tu_ckpt_free(c);
}
END_TEST

START_TEST(invauto_linear_layers)
{
    struct tu_ckpt *c = tu_ckpt_new();
    /* InvAutoFC with an orthogonal W (a rotation): an exact inverse and log-det 0 */
    const double t = 0.6;
    float W[9] = {(float)cos(t), (float)-sin(t), 0, (float)sin(t), (float)cos(t), 0, 0, 0, 1};
    float b[3] = {0.1f, -0.2f, 0.3f};
    tu_add_f32(c, "W", 2, (const int64_t[]){3, 3}, W);
    tu_add_f32(c, "b", 2, (const int64_t[]){1, 3}, b);
    const int v3[1] = {3};
    struct eng_model *m = load(c, 1, v3, 0, "{\"type\":\"InvAutoFC\",\"weights\":\"W\","
                                            "\"bias\":\"b\"}");
    generic(m, 1.0f, 1e-6, 1e-3, 2e-3);
    ck_assert(eng_model_certificate(m)->blocks[0].invertible);
    eng_model_unref(m);
    /* a W that is not orthogonal: the transpose "inverse" is flagged in the certificate */
    float W2[9] = {1.5f, 0, 0, 0, 1, 0, 0, 0, 1};
    tu_add_f32(c, "W2", 2, (const int64_t[]){3, 3}, W2);
    m = load(c, 1, v3, 0, "{\"type\":\"InvAutoFC\",\"weights\":\"W2\",\"bias\":\"b\"}");
    const struct eng_certificate *ct = eng_model_certificate(m);
    ck_assert(!ct->invertible && !ct->blocks[0].invertible);
    ck_assert_msg(strstr(ct->blocks[0].reason, "1.2") != NULL, "%s", ct->blocks[0].reason);
    eng_model_unref(m);

    /* InvAutoConv2D 3 x 3, padding 1: the inverse of (y) is the adjoint applied to y − b */
    const int sh[3] = {2, 3, 4};
    tu_add_randn(c, "K", 4, (const int64_t[]){2, 2, 3, 3}, 0.4f, 0.0f, 31);
    tu_add_f32(c, "kb", 4, (const int64_t[]){1, 2, 1, 1}, b);
    m = load(c, 3, sh, 0, "{\"type\":\"InvAutoConv2D\",\"weight\":\"K\",\"bias\":\"kb\"}");
    float x[24], y[24], u[24], v[24];
    tu_randn(x, 24, 1.0f, 41);
    tu_randn(u, 24, 1.0f, 42);
    ck_assert(fwd1(m, x, y) == 0.0);
    for (int k = 0; k < 24; k++)
        u[k] += b[k / 12];        /* inverse(u + b) = Aᵀ u */
    struct eng_ws *ws = eng_ws_new();
    char err[ENG_ERR_LEN] = "";
    double ld;
    ck_assert(eng_inverse(m, ws, 1, u, NULL, 0, v, &ld, NULL, NULL, err) == ENG_OK);
    eng_ws_free(ws);
    double lhs = 0.0, rhs = 0.0;  /* <A x, u> = <x, Aᵀ u> */
    for (int k = 0; k < 24; k++) {
        lhs += (double)(y[k] - b[k / 12]) * (double)(u[k] - b[k / 12]);
        rhs += (double)x[k] * (double)v[k];
    }
    ck_assert_msg(fabs(lhs - rhs) < 1e-4 * (1 + fabs(lhs)), "<Ax,u> %g, <x,A^T u> %g", lhs, rhs);
    eng_model_unref(m);
    /* an output with another number of elements than the input is refused */
    refused(c, 3, sh, 0, "{\"type\":\"InvAutoConv2D\",\"weight\":\"K\",\"bias\":\"kb\","
                         "\"padding\":0}",
            (const char *const[]){"InvAutoConv2D", "(2, 1, 2)", "same number of elements", NULL});
    refused(c, 1, v3, 0, "{\"type\":\"InvAutoConv2D\",\"weight\":\"K\",\"bias\":\"kb\"}",
            (const char *const[]){"InvAutoConv2D", "(C, H, W)", NULL});
    tu_ckpt_free(c);
}
END_TEST

/* ---- splines --------------------------------------------------------------------------- */

START_TEST(elementwise_spline_free_and_conditional)
{
    struct tu_ckpt *c = tu_ckpt_new();
    const int sh[3] = {2, 2, 3};
    /* K = 4 affine tails: P = 3K + 1 = 13 per coordinate, (2·13, 2, 3) */
    tu_add_randn(c, "sp", 3, (const int64_t[]){26, 2, 3}, 0.7f, 0.0f, 51);
    struct eng_model *m = load(c, 3, sh, 0, "{\"type\":\"ElementwiseRationalQuadraticSpline\","
                                            "\"bins\":4,\"spline_parameters\":\"sp\"}");
    generic(m, 2.5f, 1e-5, 1e-3, 2e-3);
    eng_model_unref(m);
    refused(c, 3, sh, 0, "{\"type\":\"ElementwiseRationalQuadraticSpline\",\"bins\":5,"
                         "\"spline_parameters\":\"sp\"}",
            (const char *const[]){"'sp'", NULL});
    /* conditional, identity tails: P = 3K = 12, subnet 3 -> 4·12 */
    char *net = tu_add_subnet(c, "net", 3, 8, 1, 48, "{\"type\":\"relu\"}", 0.5f, 52);
    char blk[2048];
    snprintf(blk, sizeof(blk), "{\"type\":\"ElementwiseRationalQuadraticSpline\",\"cond\":0,"
             "\"bins\":4,\"tails\":\"identity\",\"subnet\":%s}", net);
    const int v4[1] = {4};
    m = load(c, 1, v4, 3, blk);
    generic(m, 2.5f, 1e-5, 1e-3, 2e-3);
    eng_model_unref(m);
    free(net);
    tu_ckpt_free(c);
}
END_TEST

START_TEST(linear_spline_coupling)
{
    struct tu_ckpt *c = tu_ckpt_new();
    /* d = 5, split 2, K = 6 affine: P = 2K + 2 = 14 */
    char *n1 = tu_add_subnet(c, "s1", 3, 8, 1, 2 * 14, "{\"type\":\"relu\"}", 0.5f, 61);
    char *n2 = tu_add_subnet(c, "s2", 2, 8, 1, 3 * 14, "{\"type\":\"relu\"}", 0.5f, 62);
    char blk[4096];
    snprintf(blk, sizeof(blk), "{\"type\":\"LinearSpline\",\"bins\":6,\"split\":2,"
             "\"subnet1\":%s,\"subnet2\":%s}", n1, n2);
    const int v5[1] = {5};
    struct eng_model *m = load(c, 1, v5, 0, blk);
    generic(m, 2.5f, 1e-5, 1e-3, 2e-3);
    eng_model_unref(m);
    /* on a (5, 2) row the split must be a whole number of channels */
    const int c5[2] = {5, 2};
    snprintf(blk, sizeof(blk), "{\"type\":\"LinearSpline\",\"bins\":6,\"split\":3,"
             "\"subnet1\":%s,\"subnet2\":%s}", n1, n2);
    refused(c, 2, c5, 0, blk, (const char *const[]){"split", "whole number of channels", NULL});
    free(n1), free(n2);
    tu_ckpt_free(c);
}
END_TEST

/* ---- GaussianMixtureModel -------------------------------------------------------------- */

/* condition rows for d = 3, K = 2: w 2 | mu 6 | U 12 | i 1 = 21 */
static void gmm_rows(float *y, int n)
{
    tu_randn(y, n * 21, 0.5f, 71);
    for (int r = 0; r < n; r++)
        y[r * 21 + 20] = (float)(r % 2);
}

START_TEST(gmm_component_from_condition)
{
    struct tu_ckpt *c = tu_ckpt_new();
    const int v3[1] = {3};
    struct eng_model *m = load(c, 1, v3, 21, "{\"type\":\"GaussianMixtureModel\","
                                             "\"components\":2,\"cond\":0}");
    enum { N = 6 };
    float y[N * 21], x[N * 3], z[N * 3], x2[N * 3];
    double ld[N], ld2[N];
    gmm_rows(y, N);
    tu_randn(x, N * 3, 1.0f, 72);
    struct eng_ws *ws = eng_ws_new();
    char err[ENG_ERR_LEN] = "";
    ck_assert(eng_forward(m, ws, N, x, y, N, z, NULL, ld, err) == ENG_OK);
    ck_assert(eng_inverse(m, ws, N, z, y, N, x2, ld2, NULL, NULL, err) == ENG_OK);
    for (int r = 0; r < N; r++) {
        const float *yr = y + r * 21;
        int i = r % 2;
        const float *mu = yr + 2 + i * 3, *u = yr + 8 + i * 6;
        /* U = [e^u0 u3 u4; 0 e^u1 u5; 0 0 e^u2] */
        double v0 = x[r * 3] - mu[0], v1 = x[r * 3 + 1] - mu[1], v2 = x[r * 3 + 2] - mu[2];
        double want[3] = {exp(u[0]) * v0 + u[3] * v1 + u[4] * v2, exp(u[1]) * v1 + u[5] * v2,
                          exp(u[2]) * v2};
        for (int k = 0; k < 3; k++) {
            ck_assert_msg(fabs(z[r * 3 + k] - want[k]) < 1e-5 * (1 + fabs(want[k])),
                          "row %d z%d %g want %g", r, k, z[r * 3 + k], want[k]);
            ck_assert(fabsf(x2[r * 3 + k] - x[r * 3 + k]) < 1e-5f * (1 + fabsf(x[r * 3 + k])));
        }
        ck_assert(fabs(ld[r] - ((double)u[0] + u[1] + u[2])) < 1e-6);
        ck_assert(fabs(ld[r] + ld2[r]) < 1e-9);
    }
    /* a component index that is not an integer in 0..K−1 is a numerical error */
    y[3 * 21 + 20] = 2.0f;
    ck_assert(eng_forward(m, ws, N, x, y, N, z, NULL, ld, err) != ENG_OK);
    y[3 * 21 + 20] = 0.5f;
    ck_assert(eng_forward(m, ws, N, x, y, N, z, NULL, ld, err) != ENG_OK);
    eng_ws_free(ws);
    eng_model_unref(m);
    refused(c, 1, v3, 20, "{\"type\":\"GaussianMixtureModel\",\"components\":2,\"cond\":0}",
            (const char *const[]){"GaussianMixtureModel", "width 21", "got 20", NULL});
    refused(c, 1, v3, 0, "{\"type\":\"GaussianMixtureModel\",\"components\":2}",
            (const char *const[]){"'cond'", NULL});
    tu_ckpt_free(c);
}
END_TEST

/* ---- Inverse --------------------------------------------------------------------------- */

START_TEST(inverse_wraps_and_reshapes)
{
    struct tu_ckpt *c = tu_ckpt_new();
    const int coarse[3] = {12, 2, 3}, fine[3] = {3, 4, 6};
    const char *down = "{\"type\":\"HaarDownsampling\",\"order_by_wavelet\":true,\"rebalance\":0.5}";
    char blk[512];
    snprintf(blk, sizeof(blk), "{\"type\":\"Inverse\",\"block_shape\":[3,4,6],\"block\":%s}",
             down);
    struct eng_model *inv = load(c, 3, coarse, 0, blk);
    z_shape_is(inv, 3, 4, 6);
    struct eng_model *fwd = load(c, 3, fine, 0, down);
    float x[72], z[72], back[72];
    tu_randn(x, 72, 1.0f, 81);
    double ldf = fwd1(fwd, x, z);         /* z = down(x) */
    double ldi = fwd1(inv, z, back);      /* Inverse forward = down⁻¹ */
    for (int k = 0; k < 72; k++)
        ck_assert(fabsf(back[k] - x[k]) < 1e-5f);
    ck_assert(fabs(ldf + ldi) < 1e-9);
    generic(inv, 1.0f, 1e-6, 1e-2, 3e-3);
    /* the wrapped block's bounds, exchanged: Haar with rebalance 0.5 contracts by 0.5 */
    ck_assert(fabs(eng_model_certificate(fwd)->blocks[0].lipschitz - 0.5) < 1e-12);
    ck_assert(fabs(eng_model_certificate(inv)->blocks[0].lipschitz - 2.0) < 1e-12);
    ck_assert(strstr(eng_model_certificate(inv)->blocks[0].reason, "inverse of HaarDown") != NULL);
    eng_model_unref(inv), eng_model_unref(fwd);
    /* the wrapped block must map block_shape to the Inverse's input shape */
    snprintf(blk, sizeof(blk), "{\"type\":\"Inverse\",\"block\":%s}", down);
    refused(c, 3, coarse, 0, blk, (const char *const[]){"HaarDownsampling", "even", NULL});
    snprintf(blk, sizeof(blk), "{\"type\":\"Inverse\",\"block_shape\":[3,2,12],\"block\":%s}",
             down);
    refused(c, 3, coarse, 0, blk, (const char *const[]){"block_shape", "(rank 3: 12, 2, 3)", NULL});
    /* conditions go to the wrapped block, which must take one */
    snprintf(blk, sizeof(blk), "{\"type\":\"Inverse\",\"cond\":0,\"block\":%s}", down);
    refused(c, 3, fine, 2, blk, (const char *const[]){"'cond'", "HaarDownsampling takes no "
                                                      "condition", NULL});
    tu_ckpt_free(c);
}
END_TEST

START_TEST(inverse_of_a_conditional_coupling)
{
    struct tu_ckpt *c = tu_ckpt_new();
    char *n1 = tu_add_subnet(c, "g1", 2 + 2, 8, 1, 2 * 3, "{\"type\":\"relu\"}", 0.4f, 91);
    char *n2 = tu_add_subnet(c, "g2", 3 + 2, 8, 1, 2 * 2, "{\"type\":\"relu\"}", 0.4f, 92);
    char blk[4096];
    snprintf(blk, sizeof(blk), "{\"type\":\"Inverse\",\"cond\":0,\"block\":{\"type\":"
             "\"GLOWCouplingBlock\",\"split\":2,\"subnet1\":%s,\"subnet2\":%s}}", n1, n2);
    const int v5[1] = {5};
    struct eng_model *m = load(c, 1, v5, 2, blk);
    generic(m, 1.0f, 1e-5, 1e-3, 2e-3);
    eng_model_unref(m);
    free(n1), free(n2);
    tu_ckpt_free(c);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("blocks_image");
    TCase *tc = tcase_create("image");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, haar_values_shapes_and_roundtrip);
    tcase_add_test(tc, irevnet_is_a_permutation);
    tcase_add_test(tc, squeeze_shape_errors_are_named);
    tcase_add_test(tc, conv1x1_per_pixel);
    tcase_add_test(tc, actnorm_and_permute_per_channel);
    tcase_add_test(tc, invauto_act_both_kinds);
    tcase_add_test(tc, invauto_linear_layers);
    tcase_add_test(tc, elementwise_spline_free_and_conditional);
    tcase_add_test(tc, linear_spline_coupling);
    tcase_add_test(tc, gmm_component_from_condition);
    tcase_add_test(tc, inverse_wraps_and_reshapes);
    tcase_add_test(tc, inverse_of_a_conditional_coupling);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN
