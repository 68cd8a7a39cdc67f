/*
 * test_blocks_other.c — the non-coupling blocks (blocks/linear.c, elementwise.c, dense.c):
 * PermuteRandom, FixedLinearTransform, OrthogonalTransform, HouseholderPerm, ActNorm (HEAD
 * and PyPI 0.2), LearnedElementwiseScaling, InvertibleSigmoid, InvertibleDense.
 *
 * Every block and variant is loaded as a single-block flow at widths 3, 5 and 6 and checked
 * three ways: forward values and log-det against an independent double-precision reference
 * written here from the FrEIA reference (freia-modules.md §5) (catches transposes and
 * sign conventions that a round trip cannot see), round trip, and the log-det against a
 * finite-difference Jacobian.  Then the special cases: the sigmoid's log-det at |x| up to
 * 1e4, the reverse log-det of LearnedElementwiseScaling, and the load-time refusals
 * (non-permutations, singular matrices, uninitialized ActNorm, wrong shapes), each of
 * which must name the tensor or field; and the per-block certificates (norms, condition
 * numbers, the OrthogonalTransform orthogonality warning).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#define MAXD 8
#define NROWS 7 /* rows for the value checks */

static const int widths[] = {3, 5, 6};
#define N_WIDTHS ((int)(sizeof(widths) / sizeof(widths[0])))

/* ---- helpers ------------------------------------------------------------------------- */

/* Load `block_json` as a one-block flow of width d (no self test); frees nothing of c. */
static struct eng_model *load_one(struct tu_ckpt *c, int d, const char *block_json)
{
    char *man = tu_manifest_one_block(d, 0, block_json);
    struct eng_model *m = tu_load(c, man, ENG_LOAD_NO_SELFTEST);
    free(man);
    ck_assert_ptr_nonnull(m);
    return m;
}

/* Expect the load to fail with status `want` and a message containing every string of
 * `needles` (NULL-terminated). */
static void expect_refused(struct tu_ckpt *c, int d, const char *block_json,
                           enum eng_status want, const char *const *needles)
{
    char *man = tu_manifest_one_block(d, 0, block_json);
    char err[ENG_ERR_LEN] = "";
    enum eng_status st = tu_load_fail(c, man, ENG_LOAD_NO_SELFTEST, err);
    free(man);
    ck_assert_msg(st == want, "status %d (%s), want %d (%s); message: %s", (int)st,
                  eng_status_str(st), (int)want, eng_status_str(want), err);
    for (int i = 0; needles[i]; i++)
        ck_assert_msg(strstr(err, needles[i]) != NULL, "message lacks \"%s\": %s", needles[i],
                      err);
}

/* Round trip and finite-difference log-det with the tolerances every block here meets. */
static void generic_checks(const struct eng_model *m, float xscale, double rt_tol, double fd_h,
                           double fd_tol)
{
    tu_check_roundtrip(m, 600, xscale, rt_tol); /* 3 tiles, the last partial */
    tu_check_logdet_fd(m, 6, xscale, fd_h, fd_tol);
}

/* Forward NROWS rows of x (NROWS × d) and compare with the reference z and log-det. */
static void expect_forward(const struct eng_model *m, int d, const float *x, const double *zref,
                           const double *ldref, double tol)
{
    struct eng_ws *ws = eng_ws_new();
    float z[NROWS * MAXD];
    double ld[NROWS];
    char err[ENG_ERR_LEN] = "";
    enum eng_status st = eng_forward(m, ws, NROWS, x, NULL, 0, z, NULL, ld, err);
    ck_assert_msg(st == ENG_OK, "forward: %s", err);
    for (int i = 0; i < NROWS; i++) {
        for (int k = 0; k < d; k++) {
            double want = zref[i * d + k], got = z[i * d + k];
            ck_assert_msg(fabs(got - want) <= tol * (1.0 + fabs(want)),
                          "d=%d row %d col %d: z = %.9g, reference %.9g", d, i, k, got, want);
        }
        ck_assert_msg(fabs(ld[i] - ldref[i]) <= tol * (1.0 + fabs(ldref[i])),
                      "d=%d row %d: log-det %.12g, reference %.12g", d, i, ld[i], ldref[i]);
    }
    eng_ws_free(ws);
}

/* A well-conditioned d × d matrix: I + 0.3·N(0,1)/sqrt(d). */
static void well_conditioned(float *a, int d, uint64_t seed)
{
    tu_randn(a, d * d, 0.3f / sqrtf((float)d), seed);
    for (int i = 0; i < d; i++)
        a[i * d + i] += 1.0f;
}

/* A random orthogonal d × d matrix (Gram–Schmidt of a Gaussian matrix, in double). */
static void random_orthogonal(float *q, int d, uint64_t seed)
{
    float g[MAXD * MAXD];
    double r[MAXD * MAXD];
    tu_randn(g, d * d, 1.0f, seed);
    for (int i = 0; i < d; i++) {
        for (int k = 0; k < d; k++)
            r[i * d + k] = g[i * d + k];
        for (int pass = 0; pass < 2; pass++) /* twice: re-orthogonalize */
            for (int j = 0; j < i; j++) {
                double dot = 0.0;
                for (int k = 0; k < d; k++)
                    dot += r[i * d + k] * r[j * d + k];
                for (int k = 0; k < d; k++)
                    r[i * d + k] -= dot * r[j * d + k];
            }
        double nrm = 0.0;
        for (int k = 0; k < d; k++)
            nrm += r[i * d + k] * r[i * d + k];
        nrm = sqrt(nrm);
        for (int k = 0; k < d; k++)
            r[i * d + k] /= nrm;
    }
    for (int i = 0; i < d * d; i++)
        q[i] = (float)r[i];
}

/* log|det A| of a d × d float matrix by Gaussian elimination with partial pivoting. */
static double ref_logabsdet(int d, const float *a)
{
    double m[MAXD * MAXD], s = 0.0;
    for (int i = 0; i < d * d; i++)
        m[i] = a[i];
    for (int k = 0; k < d; k++) {
        int p = k;
        for (int i = k + 1; i < d; i++)
            if (fabs(m[i * d + k]) > fabs(m[p * d + k]))
                p = i;
        for (int j = 0; j < d; j++) {
            double t = m[k * d + j];
            m[k * d + j] = m[p * d + j];
            m[p * d + j] = t;
        }
        s += log(fabs(m[k * d + k]));
        for (int i = k + 1; i < d; i++) {
            double f = m[i * d + k] / m[k * d + k];
            for (int j = k; j < d; j++)
                m[i * d + j] -= f * m[k * d + j];
        }
    }
    return s;
}

static void fill_x(float *x, int d, float scale, uint64_t seed)
{
    tu_randn(x, NROWS * d, scale, seed);
}

/* ==== PermuteRandom ==================================================================== */

static void permute_case(int d, const char *dtype)
{
    int64_t perm64[MAXD];
    int32_t perm32[MAXD];
    /* A fixed shuffle: i -> (3i + 1) mod d when d is coprime to 3, else i -> (d − i) mod d. */
    for (int i = 0; i < d; i++)
        perm64[i] = (d % 3 != 0) ? (3 * i + 1) % d : (d - i) % d;
    for (int i = 0; i < d; i++)
        perm32[i] = (int32_t)perm64[i];
    struct tu_ckpt *c = tu_ckpt_new();
    const int64_t shape[1] = {d};
    tu_add(c, "blk.perm", dtype, 1, shape, strcmp(dtype, "I64") == 0 ? (void *)perm64
                                                                      : (void *)perm32);
    struct eng_model *m = load_one(c, d, "{\"type\":\"PermuteRandom\",\"perm\":\"blk.perm\"}");

    float x[NROWS * MAXD];
    double z[NROWS * MAXD], ld[NROWS];
    fill_x(x, d, 1.0f, 11);
    for (int i = 0; i < NROWS; i++) {
        for (int k = 0; k < d; k++)
            z[i * d + k] = x[i * d + (int)perm64[k]];
        ld[i] = 0.0;
    }
    expect_forward(m, d, x, z, ld, 0.0);
    generic_checks(m, 2.0f, 1e-6, 1e-2, 1e-6);
    eng_model_unref(m);
    tu_ckpt_free(c);
}

START_TEST(test_permute)
{
    permute_case(widths[_i], "I64");
    permute_case(widths[_i], "I32");
}
END_TEST

START_TEST(test_permute_seeded)
{
    int d = widths[_i];
    struct tu_ckpt *c = tu_ckpt_new();
    tu_add_perm(c, "p", d, 1234 + (uint64_t)d);
    struct eng_model *m = load_one(c, d, "{\"type\":\"PermuteRandom\",\"perm\":\"p\"}");
    generic_checks(m, 2.0f, 1e-6, 1e-2, 1e-6);
    eng_model_unref(m);
    tu_ckpt_free(c);
}
END_TEST

/* ==== FixedLinearTransform ============================================================= */

enum bias_kind { BIAS_NONE, BIAS_ROW, BIAS_SCALAR };

static void fixedlinear_case(int d, enum bias_kind bk)
{
    float M[MAXD * MAXD], b[MAXD] = {0};
    well_conditioned(M, d, 100 + (uint64_t)d);
    struct tu_ckpt *c = tu_ckpt_new();
    tu_add_f32(c, "blk.M", 2, (const int64_t[]){d, d}, M);
    const char *json = "{\"type\":\"FixedLinearTransform\",\"M\":\"blk.M\"}";
    if (bk == BIAS_ROW) {
        tu_randn(b, d, 0.5f, 200 + (uint64_t)d);
        tu_add_f32(c, "blk.b", 2, (const int64_t[]){1, d}, b); /* FrEIA's (1, C) */
        json = "{\"type\":\"FixedLinearTransform\",\"M\":\"blk.M\",\"b\":\"blk.b\"}";
    } else if (bk == BIAS_SCALAR) {
        /* FrEIA HEAD with b=None stores a 0-d 0.; a nonzero 0-d b broadcasts. */
        float b0 = 0.25f;
        tu_add_f32(c, "blk.b", 0, NULL, &b0);
        for (int k = 0; k < d; k++)
            b[k] = b0;
        json = "{\"type\":\"FixedLinearTransform\",\"M\":\"blk.M\",\"b\":\"blk.b\"}";
    }
    struct eng_model *m = load_one(c, d, json);

    /* y = x·M_buf + b (the buffer holds Mᵀ, so this is y = M x + b for columns). */
    float x[NROWS * MAXD];
    double z[NROWS * MAXD], ld[NROWS];
    fill_x(x, d, 1.0f, 12);
    double lad = ref_logabsdet(d, M);
    for (int i = 0; i < NROWS; i++) {
        for (int j = 0; j < d; j++) {
            double s = b[j];
            for (int k = 0; k < d; k++)
                s += (double)x[i * d + k] * M[k * d + j];
            z[i * d + j] = s;
        }
        ld[i] = lad;
    }
    expect_forward(m, d, x, z, ld, 1e-5);
    generic_checks(m, 2.0f, 1e-5, 1e-2, 1e-3);
    eng_model_unref(m);
    tu_ckpt_free(c);
}

START_TEST(test_fixedlinear)
{
    fixedlinear_case(widths[_i], BIAS_ROW);
    fixedlinear_case(widths[_i], BIAS_NONE);
    fixedlinear_case(widths[_i], BIAS_SCALAR);
}
END_TEST

/* ==== OrthogonalTransform ============================================================= */

static void orthogonal_case(int d, double clamp, bool explicit_clamp)
{
    float W[MAXD * MAXD], bias[MAXD], scaling[MAXD];
    random_orthogonal(W, d, 300 + (uint64_t)d);
    tu_randn(bias, d, 0.5f, 301);
    tu_randn(scaling, d, 2.0f, 302);
    scaling[0] = 40.0f; /* far into the clamp */
    struct tu_ckpt *c = tu_ckpt_new();
    tu_add_f32(c, "o.weights", 2, (const int64_t[]){d, d}, W);
    tu_add_f32(c, "o.bias", 2, (const int64_t[]){1, d}, bias);
    tu_add_f32(c, "o.scaling", 2, (const int64_t[]){1, d}, scaling);
    char json[256], clamp_txt[64] = "";
    if (explicit_clamp)
        snprintf(clamp_txt, sizeof(clamp_txt), ",\"clamp\":%.17g", clamp);
    snprintf(json, sizeof(json),
             "{\"type\":\"OrthogonalTransform\",\"weights\":\"o.weights\",\"bias\":\"o.bias\","
             "\"scaling\":\"o.scaling\"%s}",
             clamp_txt);
    struct eng_model *m = load_one(c, d, json);

    /* y = (x·W + b) ⊙ e^{ls}, ls = clamp·0.636·atan(scaling/clamp); log-det Σ ls. */
    float x[NROWS * MAXD];
    double z[NROWS * MAXD], ld[NROWS], ls[MAXD], sum = 0.0;
    for (int k = 0; k < d; k++) {
        ls[k] = clamp * 0.636 * atan(scaling[k] / clamp);
        sum += ls[k];
    }
    fill_x(x, d, 1.0f, 13);
    for (int i = 0; i < NROWS; i++) {
        for (int j = 0; j < d; j++) {
            double s = bias[j];
            for (int k = 0; k < d; k++)
                s += (double)x[i * d + k] * W[k * d + j];
            z[i * d + j] = s * exp(ls[j]);
        }
        ld[i] = sum;
    }
    expect_forward(m, d, x, z, ld, 1e-5);
    generic_checks(m, 2.0f, 1e-5, 1e-2, 2e-3);
    eng_model_unref(m);
    tu_ckpt_free(c);
}

START_TEST(test_orthogonal)
{
    orthogonal_case(widths[_i], 5.0, false);
    orthogonal_case(widths[_i], 2.0, true);
}
END_TEST

/* ==== HouseholderPerm ================================================================== */

static void householder_case(int d, int nref)
{
    float V[4 * MAXD];
    tu_randn(V, nref * d, 1.0f, 400 + (uint64_t)(d * 10 + nref));
    struct tu_ckpt *c = tu_ckpt_new();
    tu_add_f32(c, "h.Vs", 2, (const int64_t[]){nref, d}, V);
    struct eng_model *m = load_one(c, d, "{\"type\":\"HouseholderPerm\",\"Vs\":\"h.Vs\"}");

    /* y = x·H(v_0)·H(v_1)·…: reflect the row by v_0 first, then v_1, ... */
    float x[NROWS * MAXD];
    double z[NROWS * MAXD], ld[NROWS];
    fill_x(x, d, 1.0f, 14);
    for (int i = 0; i < NROWS; i++) {
        double y[MAXD];
        for (int k = 0; k < d; k++)
            y[k] = x[i * d + k];
        for (int r = 0; r < nref; r++) {
            const float *v = V + r * d;
            double yv = 0.0, vv = 0.0;
            for (int k = 0; k < d; k++)
                yv += y[k] * v[k], vv += (double)v[k] * v[k];
            for (int k = 0; k < d; k++)
                y[k] -= 2.0 * yv / vv * v[k];
        }
        for (int k = 0; k < d; k++)
            z[i * d + k] = y[k];
        ld[i] = 0.0;
    }
    expect_forward(m, d, x, z, ld, 1e-5);
    generic_checks(m, 2.0f, 1e-5, 1e-2, 1e-3);
    eng_model_unref(m);
    tu_ckpt_free(c);
}

START_TEST(test_householder)
{
    householder_case(widths[_i], 1); /* FrEIA requires n >= 2; we accept 1 */
    householder_case(widths[_i], 2);
    householder_case(widths[_i], 4);
}
END_TEST

/* ==== ActNorm ========================================================================== */

static void actnorm_case(int d, bool legacy, bool with_init_flag)
{
    float scale[MAXD], shift[MAXD];
    tu_randn(scale, d, 0.7f, 500 + (uint64_t)d);
    tu_randn(shift, d, 1.0f, 501 + (uint64_t)d);
    struct tu_ckpt *c = tu_ckpt_new();
    tu_add_f32(c, "an.a", 2, (const int64_t[]){1, d}, scale);
    tu_add_f32(c, "an.b", 2, (const int64_t[]){1, d}, shift);
    const uint8_t yes = 1;
    if (with_init_flag)
        tu_add(c, "an.is_initialized", "BOOL", 0, NULL, &yes);
    char json[256];
    snprintf(json, sizeof(json), "{\"type\":\"ActNorm\",%s%s}",
             legacy ? "\"scale\":\"an.a\",\"bias\":\"an.b\""
                    : "\"log_scale\":\"an.a\",\"loc\":\"an.b\"",
             with_init_flag ? ",\"is_initialized\":\"an.is_initialized\"" : "");
    struct eng_model *m = load_one(c, d, json);

    float x[NROWS * MAXD];
    double z[NROWS * MAXD], ld[NROWS], sum = 0.0;
    for (int k = 0; k < d; k++)
        sum += legacy ? scale[k] : -scale[k];
    fill_x(x, d, 1.0f, 15);
    for (int i = 0; i < NROWS; i++) {
        for (int k = 0; k < d; k++) {
            double v = x[i * d + k];
            z[i * d + k] = legacy ? v * exp(scale[k]) + shift[k]     /* 0.2 */
                                  : (v - shift[k]) * exp(-scale[k]); /* HEAD */
        }
        ld[i] = sum;
    }
    expect_forward(m, d, x, z, ld, 1e-5);
    generic_checks(m, 2.0f, 1e-5, 1e-2, 1e-3);
    eng_model_unref(m);
    tu_ckpt_free(c);
}

START_TEST(test_actnorm)
{
    actnorm_case(widths[_i], false, true);
    actnorm_case(widths[_i], false, false);
    actnorm_case(widths[_i], true, false);
}
END_TEST

/* ==== LearnedElementwiseScaling ====================================================== */

static struct eng_model *elemscale_model(struct tu_ckpt *c, int d, const float *s)
{
    tu_add_f32(c, "e.s", 2, (const int64_t[]){1, d}, s);
    return load_one(c, d, "{\"type\":\"LearnedElementwiseScaling\",\"s\":\"e.s\"}");
}

START_TEST(test_elemscale)
{
    int d = widths[_i];
    float s[MAXD];
    tu_randn(s, d, 0.8f, 600 + (uint64_t)d);
    struct tu_ckpt *c = tu_ckpt_new();
    struct eng_model *m = elemscale_model(c, d, s);
    float x[NROWS * MAXD];
    double z[NROWS * MAXD], ld[NROWS], sum = 0.0;
    for (int k = 0; k < d; k++)
        sum += s[k];
    fill_x(x, d, 1.0f, 16);
    for (int i = 0; i < NROWS; i++) {
        for (int k = 0; k < d; k++)
            z[i * d + k] = x[i * d + k] * exp(s[k]);
        ld[i] = sum;
    }
    expect_forward(m, d, x, z, ld, 1e-5);
    generic_checks(m, 2.0f, 1e-5, 1e-2, 1e-3);
    eng_model_unref(m);
    tu_ckpt_free(c);
}
END_TEST

/* FrEIA returns +Σ s in reverse too; innserve returns −Σ s, exactly. */
START_TEST(test_elemscale_reverse_logdet)
{
    int d = widths[_i];
    float s[MAXD];
    for (int k = 0; k < d; k++) /* dyadic, so Σ s is exact in any order */
        s[k] = (k % 2 ? -0.375f : 0.5f) * (float)(k + 1);
    double sum = 0.0;
    for (int k = 0; k < d; k++)
        sum += s[k];
    struct tu_ckpt *c = tu_ckpt_new();
    struct eng_model *m = elemscale_model(c, d, s);
    struct eng_ws *ws = eng_ws_new();
    float z[NROWS * MAXD], x[NROWS * MAXD];
    double ld[NROWS];
    char err[ENG_ERR_LEN] = "";
    tu_randn(z, NROWS * d, 1.0f, 17);
    ck_assert_msg(eng_inverse(m, ws, NROWS, z, NULL, 0, x, ld, NULL, NULL, err) == ENG_OK,
                  "inverse: %s", err);
    for (int i = 0; i < NROWS; i++)
        ck_assert_msg(ld[i] == -sum, "row %d: reverse log-det %.17g, want %.17g", i, ld[i],
                      -sum);
    ck_assert_msg(eng_forward(m, ws, NROWS, x, NULL, 0, z, NULL, ld, err) == ENG_OK,
                  "forward: %s", err);
    for (int i = 0; i < NROWS; i++)
        ck_assert_msg(ld[i] == sum, "row %d: forward log-det %.17g, want %.17g", i, ld[i], sum);
    eng_ws_free(ws);
    eng_model_unref(m);
    tu_ckpt_free(c);
}
END_TEST

/* ==== InvertibleSigmoid =============================================================== */

/* log σ'(x) = −|x| − 2·log1p(e^{−|x|}) */
static double log_dsigmoid(double x)
{
    return -fabs(x) - 2.0 * log1p(exp(-fabs(x)));
}

START_TEST(test_sigmoid)
{
    int d = widths[_i];
    struct tu_ckpt *c = tu_ckpt_new();
    struct eng_model *m = load_one(c, d, "{\"type\":\"InvertibleSigmoid\"}");
    float x[NROWS * MAXD];
    double z[NROWS * MAXD], ld[NROWS];
    fill_x(x, d, 3.0f, 18);
    for (int i = 0; i < NROWS; i++) {
        ld[i] = 0.0;
        for (int k = 0; k < d; k++) {
            double v = x[i * d + k];
            z[i * d + k] = 1.0 / (1.0 + exp(-v));
            ld[i] += log_dsigmoid(v);
        }
    }
    expect_forward(m, d, x, z, ld, 1e-6);
    /* σ saturates in float: the round trip loses ~eps/σ'(x) of x, so keep |x| moderate. */
    generic_checks(m, 2.0f, 2e-4, 1e-2, 2e-3);
    eng_model_unref(m);
    tu_ckpt_free(c);
}
END_TEST

/* The log-det stays finite and exact where FrEIA's reaches −inf (|x| ≈ 100 in float32). */
START_TEST(test_sigmoid_extreme_logdet)
{
    const int d = 4;
    const float rows[][4] = {
        {80.0f, -80.0f, 0.0f, 1.0f},
        {1000.0f, -1000.0f, 80.0f, -80.0f},
        {1000.0f, 1000.0f, 1000.0f, 1000.0f},
        {-1000.0f, -1000.0f, -1000.0f, -1000.0f},
        {1e4f, -1e4f, 30.0f, -30.0f},
    };
    const int n = (int)(sizeof(rows) / sizeof(rows[0]));
    struct tu_ckpt *c = tu_ckpt_new();
    struct eng_model *m = load_one(c, d, "{\"type\":\"InvertibleSigmoid\"}");
    struct eng_ws *ws = eng_ws_new();
    float z[5 * 4];
    double ld[5];
    char err[ENG_ERR_LEN] = "";
    ck_assert_msg(eng_forward(m, ws, n, &rows[0][0], NULL, 0, z, NULL, ld, err) == ENG_OK,
                  "forward: %s", err);
    for (int i = 0; i < n; i++) {
        double want = 0.0;
        for (int k = 0; k < d; k++) {
            want += log_dsigmoid(rows[i][k]);
            ck_assert(z[i * d + k] >= 0.0f && z[i * d + k] <= 1.0f);
        }
        ck_assert_msg(isfinite(ld[i]), "row %d: log-det %g is not finite", i, ld[i]);
        ck_assert_msg(fabs(ld[i] - want) <= 1e-12 * fabs(want) + 1e-12,
                      "row %d: log-det %.17g, want %.17g", i, ld[i], want);
    }
    ck_assert(fabs(ld[1] - (-2160.0)) < 1e-9); /* −1000 − 1000 − 80 − 80 (+ ~1e-35) */
    eng_ws_free(ws);
    eng_model_unref(m);
    tu_ckpt_free(c);
}
END_TEST

/* The inverse is defined on (0, 1) only: outside, the engine reports a numeric error. */
START_TEST(test_sigmoid_inverse_domain)
{
    const int d = 3;
    struct tu_ckpt *c = tu_ckpt_new();
    struct eng_model *m = load_one(c, d, "{\"type\":\"InvertibleSigmoid\"}");
    struct eng_ws *ws = eng_ws_new();
    const float bad[][3] = {{0.5f, 1.5f, 0.25f}, {0.5f, -0.1f, 0.25f}, {0.5f, 1.0f, 0.25f}};
    for (int t = 0; t < 3; t++) {
        float x[3];
        double ld[1];
        char err[ENG_ERR_LEN] = "";
        enum eng_status st = eng_inverse(m, ws, 1, bad[t], NULL, 0, x, ld, NULL, NULL, err);
        ck_assert_msg(st == ENG_ERR_NUMERIC, "case %d: status %s (%s)", t, eng_status_str(st),
                      err);
    }
    /* and inside it, exact values */
    const float ok[3] = {0.5f, 0.25f, 0.875f};
    float x[3];
    double ld[1];
    char err[ENG_ERR_LEN] = "";
    ck_assert_msg(eng_inverse(m, ws, 1, ok, NULL, 0, x, ld, NULL, NULL, err) == ENG_OK, "%s",
                  err);
    double want_ld = 0.0;
    for (int k = 0; k < 3; k++) {
        double y = ok[k], want = log(y / (1.0 - y));
        ck_assert_msg(fabs(x[k] - want) <= 1e-6, "x[%d] = %.9g, want %.9g", k, x[k], want);
        want_ld -= log(y) + log(1.0 - y);
    }
    ck_assert_msg(fabs(ld[0] - want_ld) <= 1e-12, "log-det %.17g, want %.17g", ld[0], want_ld);
    eng_ws_free(ws);
    eng_model_unref(m);
    tu_ckpt_free(c);
}
END_TEST

/* ==== InvertibleDense ================================================================= */

static void invdense_case(int d, bool with_bias, double slope, bool explicit_slope)
{
    float W[MAXD * MAXD], b[MAXD] = {0};
    well_conditioned(W, d, 700 + (uint64_t)d);
    struct tu_ckpt *c = tu_ckpt_new();
    tu_add_f32(c, "dn.weight", 2, (const int64_t[]){d, d}, W);
    if (with_bias) {
        tu_randn(b, d, 0.3f, 701 + (uint64_t)d);
        tu_add_f32(c, "dn.bias", 1, (const int64_t[]){d}, b);
    }
    char json[256], slope_txt[64] = "";
    if (explicit_slope)
        snprintf(slope_txt, sizeof(slope_txt), ",\"negative_slope\":%.17g", slope);
    snprintf(json, sizeof(json), "{\"type\":\"InvertibleDense\",\"weight\":\"dn.weight\"%s%s}",
             with_bias ? ",\"bias\":\"dn.bias\"" : "", slope_txt);
    struct eng_model *m = load_one(c, d, json);

    /* u = x·Wᵀ + b; y = leaky(u); log-det log|det W| + #(u<0)·log(slope) */
    float x[NROWS * MAXD];
    double z[NROWS * MAXD], ld[NROWS];
    double lad = ref_logabsdet(d, W);
    float fslope = (float)slope;
    fill_x(x, d, 1.0f, 19);
    for (int i = 0; i < NROWS; i++) {
        ld[i] = lad;
        for (int o = 0; o < d; o++) {
            double u = b[o];
            for (int k = 0; k < d; k++)
                u += (double)x[i * d + k] * W[o * d + k];
            if (u < 0) {
                u *= fslope;
                ld[i] += log(fslope);
            }
            z[i * d + o] = u;
        }
    }
    expect_forward(m, d, x, z, ld, 1e-5);
    /* The FD step straddles a kink of leaky only when some |u| < h·‖W‖; small h. */
    generic_checks(m, 2.0f, 1e-4, 2e-3, 5e-3);
    eng_model_unref(m);
    tu_ckpt_free(c);
}

START_TEST(test_invdense)
{
    invdense_case(widths[_i], true, 0.2, true);
    invdense_case(widths[_i], false, 0.01, false); /* default slope */
    invdense_case(widths[_i], true, 1.0, true);    /* plain linear */
}
END_TEST

/* ==== Refusals ======================================================================== */

START_TEST(test_reject_perm)
{
    const int64_t dup[3] = {0, 1, 1}, big[3] = {0, 1, 3}, neg[3] = {0, -1, 2};
    const int64_t *bad[3] = {dup, big, neg};
    for (int t = 0; t < 3; t++) {
        struct tu_ckpt *c = tu_ckpt_new();
        tu_add(c, "net.0.perm", "I64", 1, (const int64_t[]){3}, bad[t]);
        expect_refused(c, 3, "{\"type\":\"PermuteRandom\",\"perm\":\"net.0.perm\"}",
                       ENG_ERR_TENSOR, (const char *const[]){"net.0.perm", NULL});
        tu_ckpt_free(c);
    }
    /* wrong length */
    struct tu_ckpt *c = tu_ckpt_new();
    tu_add_perm(c, "net.0.perm", 4, 5);
    expect_refused(c, 3, "{\"type\":\"PermuteRandom\",\"perm\":\"net.0.perm\"}", ENG_ERR_TENSOR,
                   (const char *const[]){"net.0.perm", NULL});
    tu_ckpt_free(c);
    /* field missing */
    c = tu_ckpt_new();
    expect_refused(c, 3, "{\"type\":\"PermuteRandom\"}", ENG_ERR_MANIFEST,
                   (const char *const[]){"perm", NULL});
    tu_ckpt_free(c);
}
END_TEST

START_TEST(test_reject_singular)
{
    /* rank 2: row 1 = 2·row 0 exactly, so elimination hits an exact zero pivot */
    const float sing[9] = {1, 2, 3, 2, 4, 6, 0, 1, 1};
    const float zero_row[9] = {1, 0, 0, 0, 0, 0, 0, 0, 1};
    const float *mats[2] = {sing, zero_row};
    for (int t = 0; t < 2; t++) {
        struct tu_ckpt *c = tu_ckpt_new();
        tu_add_f32(c, "flt.M", 2, (const int64_t[]){3, 3}, mats[t]);
        expect_refused(c, 3, "{\"type\":\"FixedLinearTransform\",\"M\":\"flt.M\"}",
                       ENG_ERR_TENSOR, (const char *const[]){"flt.M", "singular", NULL});
        tu_ckpt_free(c);

        c = tu_ckpt_new();
        tu_add_f32(c, "dense.weight", 2, (const int64_t[]){3, 3}, mats[t]);
        expect_refused(c, 3, "{\"type\":\"InvertibleDense\",\"weight\":\"dense.weight\"}",
                       ENG_ERR_TENSOR, (const char *const[]){"dense.weight", "singular", NULL});
        tu_ckpt_free(c);
    }
    /* a zero reflection vector has no Householder matrix */
    struct tu_ckpt *c = tu_ckpt_new();
    const float vs[6] = {1, 2, 3, 0, 0, 0};
    tu_add_f32(c, "hh.Vs", 2, (const int64_t[]){2, 3}, vs);
    expect_refused(c, 3, "{\"type\":\"HouseholderPerm\",\"Vs\":\"hh.Vs\"}", ENG_ERR_TENSOR,
                   (const char *const[]){"hh.Vs", NULL});
    tu_ckpt_free(c);
}
END_TEST

START_TEST(test_reject_actnorm)
{
    const float a[3] = {0.1f, 0.2f, 0.3f}, b[3] = {1, 2, 3};
    const uint8_t no = 0;
    struct tu_ckpt *c = tu_ckpt_new();
    tu_add_f32(c, "an.log_scale", 2, (const int64_t[]){1, 3}, a);
    tu_add_f32(c, "an.loc", 2, (const int64_t[]){1, 3}, b);
    tu_add(c, "an.is_initialized", "BOOL", 0, NULL, &no);
    expect_refused(c, 3,
                   "{\"type\":\"ActNorm\",\"log_scale\":\"an.log_scale\",\"loc\":\"an.loc\","
                   "\"is_initialized\":\"an.is_initialized\"}",
                   ENG_ERR_TENSOR, (const char *const[]){"an.is_initialized", NULL});
    /* neither format's fields */
    expect_refused(c, 3, "{\"type\":\"ActNorm\"}", ENG_ERR_MANIFEST,
                   (const char *const[]){"log_scale", NULL});
    /* a HEAD field without its partner */
    expect_refused(c, 3, "{\"type\":\"ActNorm\",\"log_scale\":\"an.log_scale\"}",
                   ENG_ERR_MANIFEST, (const char *const[]){"loc", NULL});
    /* both formats at once */
    expect_refused(c, 3,
                   "{\"type\":\"ActNorm\",\"log_scale\":\"an.log_scale\",\"loc\":\"an.loc\","
                   "\"scale\":\"an.log_scale\",\"bias\":\"an.loc\"}",
                   ENG_ERR_MANIFEST, (const char *const[]){"scale", NULL});
    tu_ckpt_free(c);
}
END_TEST

START_TEST(test_reject_shapes)
{
    const int d = 3;
    float buf[64];
    tu_randn(buf, 64, 0.1f, 9);
    for (int i = 0; i < 4; i++)
        buf[i * 4] += 1.0f; /* (4, 4) and (3, 4) views are far from singular */
    struct {
        const char *json;
        const char *tensor;
        int ndim;
        int64_t shape[2];
    } cases[] = {
        {"{\"type\":\"FixedLinearTransform\",\"M\":\"t.bad\"}", "t.bad", 2, {3, 4}},
        {"{\"type\":\"FixedLinearTransform\",\"M\":\"t.ok33\",\"b\":\"t.bad\"}", "t.bad", 2,
         {1, 4}},
        {"{\"type\":\"OrthogonalTransform\",\"weights\":\"t.bad\",\"bias\":\"t.v3\","
         "\"scaling\":\"t.v3\"}", "t.bad", 2, {4, 4}},
        {"{\"type\":\"OrthogonalTransform\",\"weights\":\"t.ok33\",\"bias\":\"t.bad\","
         "\"scaling\":\"t.v3\"}", "t.bad", 1, {2}},
        {"{\"type\":\"OrthogonalTransform\",\"weights\":\"t.ok33\",\"bias\":\"t.v3\","
         "\"scaling\":\"t.bad\"}", "t.bad", 2, {1, 4}},
        {"{\"type\":\"HouseholderPerm\",\"Vs\":\"t.bad\"}", "t.bad", 2, {2, 4}},
        {"{\"type\":\"HouseholderPerm\",\"Vs\":\"t.bad\"}", "t.bad", 1, {3}},
        {"{\"type\":\"HouseholderPerm\",\"Vs\":\"t.bad\"}", "t.bad", 2, {0, 3}},
        {"{\"type\":\"ActNorm\",\"log_scale\":\"t.bad\",\"loc\":\"t.v3\"}", "t.bad", 2, {1, 4}},
        {"{\"type\":\"ActNorm\",\"log_scale\":\"t.v3\",\"loc\":\"t.bad\"}", "t.bad", 1, {2}},
        {"{\"type\":\"ActNorm\",\"scale\":\"t.bad\",\"bias\":\"t.v3\"}", "t.bad", 2, {2, 3}},
        {"{\"type\":\"ActNorm\",\"log_scale\":\"t.v3\",\"loc\":\"t.v3\","
         "\"is_initialized\":\"t.bad\"}", "t.bad", 1, {2}},
        {"{\"type\":\"LearnedElementwiseScaling\",\"s\":\"t.bad\"}", "t.bad", 2, {1, 2}},
        {"{\"type\":\"InvertibleDense\",\"weight\":\"t.bad\"}", "t.bad", 2, {3, 2}},
        {"{\"type\":\"InvertibleDense\",\"weight\":\"t.bad\"}", "t.bad", 1, {9}},
        {"{\"type\":\"InvertibleDense\",\"weight\":\"t.ok33\",\"bias\":\"t.bad\"}", "t.bad", 1,
         {4}},
    };
    for (size_t t = 0; t < sizeof(cases) / sizeof(cases[0]); t++) {
        struct tu_ckpt *c = tu_ckpt_new();
        float ok33[9] = {1, 0.1f, 0, 0, 1, 0.2f, 0.3f, 0, 1};
        tu_add_f32(c, "t.ok33", 2, (const int64_t[]){d, d}, ok33);
        tu_add_f32(c, "t.v3", 1, (const int64_t[]){d}, buf + 20);
        tu_add_f32(c, "t.bad", cases[t].ndim, cases[t].shape, buf);
        expect_refused(c, d, cases[t].json, ENG_ERR_TENSOR,
                       (const char *const[]){cases[t].tensor, NULL});
        tu_ckpt_free(c);
    }
}
END_TEST

START_TEST(test_reject_fields)
{
    const float w[9] = {1, 0.1f, 0, 0, 1, 0.2f, 0.3f, 0, 1};
    const float v[3] = {0.1f, -0.2f, 0.3f};
    struct tu_ckpt *c = tu_ckpt_new();
    tu_add_f32(c, "w", 2, (const int64_t[]){3, 3}, w);
    tu_add_f32(c, "v", 1, (const int64_t[]){3}, v);
    const char *slopes[] = {"0", "-0.1", "1.5", "\"x\""};
    for (int t = 0; t < 4; t++) {
        char json[160];
        snprintf(json, sizeof(json),
                 "{\"type\":\"InvertibleDense\",\"weight\":\"w\",\"negative_slope\":%s}",
                 slopes[t]);
        expect_refused(c, 3, json, ENG_ERR_MANIFEST,
                       (const char *const[]){"negative_slope", NULL});
    }
    expect_refused(c, 3,
                   "{\"type\":\"OrthogonalTransform\",\"weights\":\"w\",\"bias\":\"v\","
                   "\"scaling\":\"v\",\"clamp\":0}",
                   ENG_ERR_MANIFEST, (const char *const[]){"clamp", NULL});
    /* a missing tensor is named */
    expect_refused(c, 3, "{\"type\":\"LearnedElementwiseScaling\",\"s\":\"nope.s\"}",
                   ENG_ERR_TENSOR, (const char *const[]){"nope.s", NULL});
    expect_refused(c, 3, "{\"type\":\"FixedLinearTransform\",\"M\":\"w\",\"b\":\"nope.b\"}",
                   ENG_ERR_TENSOR, (const char *const[]){"nope.b", NULL});
    tu_ckpt_free(c);
}
END_TEST

/* ==== Certificates ==================================================================== */

static const struct eng_block_cert *cert_of(const struct eng_model *m)
{
    const struct eng_certificate *c = eng_model_certificate(m);
    ck_assert_ptr_nonnull(c);
    ck_assert_int_eq(c->n_blocks, 1);
    ck_assert(c->invertible);
    ck_assert_int_eq(c->guarantee, ENG_GUARANTEE_ANALYTIC);
    return &c->blocks[0];
}

START_TEST(test_certificates)
{
    /* FixedLinearTransform with M = diag(2, 1, 0.5): ‖M‖ = 2, ‖M⁻¹‖ = 2, condition 4. */
    const float M[9] = {2, 0, 0, 0, 1, 0, 0, 0, 0.5f};
    struct tu_ckpt *c = tu_ckpt_new();
    tu_add_f32(c, "M", 2, (const int64_t[]){3, 3}, M);
    struct eng_model *m = load_one(c, 3, "{\"type\":\"FixedLinearTransform\",\"M\":\"M\"}");
    const struct eng_block_cert *bc = cert_of(m);
    ck_assert_str_eq(bc->type, "FixedLinearTransform");
    ck_assert_msg(fabs(bc->lipschitz - 2.0) < 1e-9 && fabs(bc->lipschitz_inverse - 2.0) < 1e-9 &&
                      fabs(bc->condition - 4.0) < 1e-9,
                  "lip %g, lip_inv %g, condition %g", bc->lipschitz, bc->lipschitz_inverse,
                  bc->condition);
    eng_model_unref(m);
    tu_ckpt_free(c);

    /* InvertibleDense with the same W and slope 0.25: Lip(f⁻¹) ≤ ‖W⁻¹‖/slope = 8. */
    c = tu_ckpt_new();
    tu_add_f32(c, "W", 2, (const int64_t[]){3, 3}, M);
    m = load_one(c, 3, "{\"type\":\"InvertibleDense\",\"weight\":\"W\",\"negative_slope\":0.25}");
    bc = cert_of(m);
    ck_assert_msg(fabs(bc->lipschitz - 2.0) < 1e-9 && fabs(bc->lipschitz_inverse - 8.0) < 1e-9 &&
                      fabs(bc->condition - 4.0) < 1e-9,
                  "lip %g, lip_inv %g, condition %g", bc->lipschitz, bc->lipschitz_inverse,
                  bc->condition);
    eng_model_unref(m);
    tu_ckpt_free(c);

    /* HouseholderPerm: orthogonal, condition 1. */
    c = tu_ckpt_new();
    tu_add_randn(c, "Vs", 2, (const int64_t[]){3, 5}, 1.0f, 0.0f, 5);
    m = load_one(c, 5, "{\"type\":\"HouseholderPerm\",\"Vs\":\"Vs\"}");
    bc = cert_of(m);
    ck_assert(bc->condition == 1.0);
    ck_assert_ptr_nonnull(strstr(bc->reason, "3 Householder"));
    eng_model_unref(m);
    tu_ckpt_free(c);

    /* OrthogonalTransform: an orthogonal W passes quietly, a drifted one is flagged (and
     * still loads: FrEIA's own inverse and log-det have the same approximation). */
    for (int drift = 0; drift < 2; drift++) {
        float W[25], z5[5] = {0};
        random_orthogonal(W, 5, 77);
        if (drift)
            W[7] += 0.01f;
        c = tu_ckpt_new();
        tu_add_f32(c, "W", 2, (const int64_t[]){5, 5}, W);
        tu_add_f32(c, "z", 1, (const int64_t[]){5}, z5);
        m = load_one(c, 5,
                     "{\"type\":\"OrthogonalTransform\",\"weights\":\"W\",\"bias\":\"z\","
                     "\"scaling\":\"z\"}");
        bc = cert_of(m);
        ck_assert_msg((strstr(bc->reason, "not orthogonal") != NULL) == (drift == 1), "%s",
                      bc->reason);
        if (!drift)
            ck_assert_msg(fabs(bc->condition - 1.0) < 1e-5, "condition %g", bc->condition);
        eng_model_unref(m);
        tu_ckpt_free(c);
    }
}
END_TEST

/* ==== Suite =========================================================================== */

Suite *make_suite(void)
{
    Suite *s = suite_create("blocks_other");
    TCase *tc = tcase_create("blocks");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_permute, 0, N_WIDTHS);
    tcase_add_loop_test(tc, test_permute_seeded, 0, N_WIDTHS);
    tcase_add_loop_test(tc, test_fixedlinear, 0, N_WIDTHS);
    tcase_add_loop_test(tc, test_orthogonal, 0, N_WIDTHS);
    tcase_add_loop_test(tc, test_householder, 0, N_WIDTHS);
    tcase_add_loop_test(tc, test_actnorm, 0, N_WIDTHS);
    tcase_add_loop_test(tc, test_elemscale, 0, N_WIDTHS);
    tcase_add_loop_test(tc, test_elemscale_reverse_logdet, 0, N_WIDTHS);
    tcase_add_loop_test(tc, test_sigmoid, 0, N_WIDTHS);
    tcase_add_test(tc, test_sigmoid_extreme_logdet);
    tcase_add_test(tc, test_sigmoid_inverse_domain);
    tcase_add_loop_test(tc, test_invdense, 0, N_WIDTHS);
    tcase_add_test(tc, test_certificates);
    suite_add_tcase(s, tc);

    TCase *tr = tcase_create("refusals");
    tcase_add_test(tr, test_reject_perm);
    tcase_add_test(tr, test_reject_singular);
    tcase_add_test(tr, test_reject_actnorm);
    tcase_add_test(tr, test_reject_shapes);
    tcase_add_test(tr, test_reject_fields);
    suite_add_tcase(s, tr);
    return s;
}

TU_MAIN
