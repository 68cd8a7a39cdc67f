/*
 * test_mdn.c — the mdn kind (engine/mixture.c): a mixture density network built here in C
 * with known weights.  log_prob against a float64 reference computed in this file from the
 * same weights (precision A^T A + eps I, log-sum-exp); sampling moments against the
 * mixture's exact mean and covariance; bit-reproducibility (same seed, split ranges,
 * eng_sample_rows, y broadcast); the prior box (-inf outside, rejection); the refused
 * operations; non-finite y; the load-time self test and the manifest's validation.  And
 * parity with the real sbi: tests/fixtures/sbi/sbi_mdn (exported from a trained
 * posterior_nn("mdn") by gen_sbi.py): log_prob against sbi's within 1e-5 relative, and the
 * engine's samples (prior rejection included) against the mean and covariance of sbi's own.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#define DX 3
#define DY 2
#define K 3
#define H1 8
#define H2 6
#define U (DX * (DX - 1) / 2)
#define EPS 1e-4

/* Every weight of the test network, kept to compute the reference. */
struct net {
    float w1[H1 * DY], b1[H1], w2[H2 * H1], b2[H2];
    float wl[K * H2], bl[K], wm[K * DX * H2], bm[K * DX], wd[K * DX * H2], bd[K * DX];
    float wu[K * U * H2], bu[K * U];
    float xm[DX], xs[DX], ym[DY], ys[DY];
};

static void make_net(struct net *n)
{
    tu_randn(n->w1, H1 * DY, 0.8f, 1);
    tu_randn(n->b1, H1, 0.2f, 2);
    tu_randn(n->w2, H2 * H1, 0.5f, 3);
    tu_randn(n->b2, H2, 0.2f, 4);
    tu_randn(n->wl, K * H2, 0.7f, 5);
    tu_randn(n->bl, K, 0.3f, 6);
    tu_randn(n->wm, K * DX * H2, 0.6f, 7);
    tu_randn(n->bm, K * DX, 1.0f, 8);
    tu_randn(n->wd, K * DX * H2, 0.3f, 9);
    tu_randn(n->bd, K * DX, 0.3f, 10);
    tu_randn(n->wu, K * U * H2, 0.3f, 11);
    tu_randn(n->bu, K * U, 0.3f, 12);
    tu_mix_std_init(n->xm, n->xs, n->ym, n->ys);
}

static void add_tensors(struct tu_ckpt *c, const struct net *n)
{
    tu_add_mat(c, "net.0.weight", H1, DY, n->w1);
    tu_add_mat(c, "net.0.bias", H1, 0, n->b1);
    tu_add_mat(c, "net.2.weight", H2, H1, n->w2);
    tu_add_mat(c, "net.2.bias", H2, 0, n->b2);
    tu_add_mat(c, "logits.weight", K, H2, n->wl);
    tu_add_mat(c, "logits.bias", K, 0, n->bl);
    tu_add_mat(c, "means.weight", K * DX, H2, n->wm);
    tu_add_mat(c, "means.bias", K * DX, 0, n->bm);
    tu_add_mat(c, "diag.weight", K * DX, H2, n->wd);
    tu_add_mat(c, "diag.bias", K * DX, 0, n->bd);
    tu_add_mat(c, "upper.weight", K * U, H2, n->wu);
    tu_add_mat(c, "upper.bias", K * U, 0, n->bu);
    tu_mix_std_add(c, n->xm, n->xs, n->ym, n->ys);
}

/* The manifest with `extra` (JSON members, may be "") and the mixture's members `mix`
 * (NULL: the standard ones). */
static char *manifest(const char *extra, const char *mix)
{
    static const char *std_mix =
        "\"components\":3,\"epsilon\":1e-4,"
        "\"net\":{\"layers\":[{\"type\":\"linear\",\"weight\":\"net.0.weight\",\"bias\":"
        "\"net.0.bias\"},{\"type\":\"relu\"},{\"type\":\"linear\",\"weight\":\"net.2.weight\","
        "\"bias\":\"net.2.bias\"},{\"type\":\"relu\"}]},"
        "\"logits\":{\"weight\":\"logits.weight\",\"bias\":\"logits.bias\"},"
        "\"means\":{\"weight\":\"means.weight\",\"bias\":\"means.bias\"},"
        "\"diagonal\":{\"weight\":\"diag.weight\",\"bias\":\"diag.bias\"},"
        "\"upper\":{\"weight\":\"upper.weight\",\"bias\":\"upper.bias\"}";
    size_t cap = 8192;
    char *m = malloc(cap);
    snprintf(m, cap, TU_MIX_MANIFEST_HEAD "\"mixture\":{%s}%s%s}", mix ? mix : std_mix,
             *extra ? "," : "", extra);
    return m;
}

/* The test network in n, the model loaded from it (the manifest members `extra`) and a
 * workspace: what most tests start from. */
static struct tu_fix fix_open(struct net *n, const char *extra)
{
    make_net(n);
    struct tu_ckpt *c = tu_ckpt_new();
    add_tensors(c, n);
    return tu_fix_load(c, manifest(extra, NULL));
}

/* ---- the float64 reference ---------------------------------------------------------- */

struct mix {
    double logw[K], mu[K][DX], A[K][DX][DX];
};

static double dot_row(const float *w, const double *h, int n)
{
    double s = 0;
    for (int j = 0; j < n; j++)
        s += (double)w[j] * h[j];
    return s;
}

/* The mixture of y in standardized x units. */
static void ref_mixture(const struct net *n, const float *y, struct mix *q)
{
    double ys[DY], h1[H1], h2[H2];
    for (int j = 0; j < DY; j++)
        ys[j] = ((double)y[j] - n->ym[j]) / n->ys[j];
    for (int o = 0; o < H1; o++)
        h1[o] = fmax(0.0, n->b1[o] + dot_row(n->w1 + o * DY, ys, DY));
    for (int o = 0; o < H2; o++)
        h2[o] = fmax(0.0, n->b2[o] + dot_row(n->w2 + o * H1, h1, H1));
    double mx = -INFINITY, s = 0;
    for (int k = 0; k < K; k++) {
        q->logw[k] = n->bl[k] + dot_row(n->wl + k * H2, h2, H2);
        mx = fmax(mx, q->logw[k]);
    }
    for (int k = 0; k < K; k++)
        s += exp(q->logw[k] - mx);
    for (int k = 0; k < K; k++)
        q->logw[k] -= mx + log(s);
    memset(q->A, 0, sizeof q->A);
    for (int k = 0; k < K; k++) {
        for (int i = 0; i < DX; i++) {
            int o = k * DX + i;
            q->mu[k][i] = n->bm[o] + dot_row(n->wm + o * H2, h2, H2);
            q->A[k][i][i] = log1p(exp(n->bd[o] + dot_row(n->wd + o * H2, h2, H2)));
        }
        int u = 0; /* numpy triu_indices(DX, 1): row-major */
        for (int r = 0; r < DX; r++)
            for (int cc = r + 1; cc < DX; cc++, u++) {
                int o = k * U + u;
                q->A[k][r][cc] = n->bu[o] + dot_row(n->wu + o * H2, h2, H2);
            }
    }
}

/* log q(x | y) in physical units: precision P = A^T A + eps I, log-det sum log A_ii. */
static double ref_log_prob(const void *ctx, const float *y, const float *x)
{
    const struct net *n = ctx;
    struct mix q;
    ref_mixture(n, y, &q);
    double xs[DX], terms[K], mx = -INFINITY, logstd = 0;
    for (int j = 0; j < DX; j++) {
        xs[j] = ((double)x[j] - n->xm[j]) / n->xs[j];
        logstd += log(n->xs[j]);
    }
    for (int k = 0; k < K; k++) {
        double P[DX][DX], d[DX], quad = 0, ld = 0;
        for (int i = 0; i < DX; i++)
            for (int j = 0; j < DX; j++) {
                P[i][j] = i == j ? EPS : 0.0;
                for (int r = 0; r < DX; r++)
                    P[i][j] += q.A[k][r][i] * q.A[k][r][j];
            }
        for (int i = 0; i < DX; i++)
            d[i] = xs[i] - q.mu[k][i], ld += log(q.A[k][i][i]);
        for (int i = 0; i < DX; i++)
            for (int j = 0; j < DX; j++)
                quad += d[i] * P[i][j] * d[j];
        terms[k] = q.logw[k] - 0.5 * DX * log(2 * M_PI) + ld - 0.5 * quad;
        mx = fmax(mx, terms[k]);
    }
    double s = 0;
    for (int k = 0; k < K; k++)
        s += exp(terms[k] - mx);
    return mx + log(s) - logstd;
}

/* The mixture's mean and covariance in physical units (components N(mu, (A^T A)^-1), the
 * distribution sbi samples). */
static void ref_moments(const struct net *n, const float *y, double mean[DX],
                        double cov[DX][DX])
{
    struct mix q;
    ref_mixture(n, y, &q);
    double m2[DX][DX] = {{0}};
    memset(mean, 0, sizeof(double) * DX);
    for (int k = 0; k < K; k++) {
        double w = exp(q.logw[k]), Ainv[DX][DX] = {{0}}, S[DX][DX];
        for (int cc = 0; cc < DX; cc++) /* columns of A^-1 by back substitution */
            for (int r = DX - 1; r >= 0; r--) {
                double v = r == cc ? 1.0 : 0.0;
                for (int j = r + 1; j < DX; j++)
                    v -= q.A[k][r][j] * Ainv[j][cc];
                Ainv[r][cc] = v / q.A[k][r][r];
            }
        for (int i = 0; i < DX; i++)
            for (int j = 0; j < DX; j++) {
                S[i][j] = 0;
                for (int r = 0; r < DX; r++)
                    S[i][j] += Ainv[i][r] * Ainv[j][r];
            }
        for (int i = 0; i < DX; i++) {
            double mi = q.mu[k][i] * n->xs[i] + n->xm[i];
            mean[i] += w * mi;
            for (int j = 0; j < DX; j++) {
                double mj = q.mu[k][j] * n->xs[j] + n->xm[j];
                m2[i][j] += w * (S[i][j] * n->xs[i] * n->xs[j] + mi * mj);
            }
        }
    }
    for (int i = 0; i < DX; i++)
        for (int j = 0; j < DX; j++)
            cov[i][j] = m2[i][j] - mean[i] * mean[j];
}

static const float Y0[DY] = {0.4f, -0.3f};

/* ---- tests --------------------------------------------------------------------------- */

START_TEST(log_prob_matches_reference)
{
    struct net n;
    struct tu_fix f = fix_open(&n, "");
    ck_assert_str_eq(eng_kind_str(eng_model_info(f.m)->kind), "mdn");
    tu_check_mix_log_prob(f.m, f.ws, ref_log_prob, &n, 2e-6, Y0);
    tu_fix_close(&f);
}
END_TEST

START_TEST(sampling_moments)
{
    struct net n;
    struct tu_fix f = fix_open(&n, "");
    enum { N = 200000 };
    float *x = malloc(sizeof(float) * N * DX);
    double *lp = malloc(sizeof(double) * N);
    char err[ENG_ERR_LEN];
    ck_assert_int_eq(eng_sample(f.m, f.ws, Y0, 7, 0, 0, N, 1.0f, x, lp, NULL, NULL, err), ENG_OK);
    double mean[DX], cov[DX][DX], em[DX], ec[DX][DX];
    ref_moments(&n, Y0, mean, cov);
    tu_moments(x, N, DX, em, &ec[0][0], DX);
    for (int a = 0; a < DX; a++) {
        double se = sqrt(cov[a][a] / N);
        ck_assert_msg(fabs(em[a] - mean[a]) < 5 * se, "mean[%d]: %g vs %g (se %g)", a, em[a],
                      mean[a], se);
        for (int b = 0; b < DX; b++) {
            double sc = sqrt(cov[a][a] * cov[b][b]);
            ck_assert_msg(fabs(ec[a][b] - cov[a][b]) < 0.02 * sc, "cov[%d][%d]: %g vs %g", a,
                          b, ec[a][b], cov[a][b]);
        }
    }
    /* the density returned with the samples is log_prob's, bit for bit */
    double *lp2 = malloc(sizeof(double) * 1000);
    ck_assert_int_eq(eng_log_prob(f.m, f.ws, 1000, x, Y0, 1, lp2, err), ENG_OK);
    ck_assert_mem_eq(lp, lp2, sizeof(double) * 1000);
    ck_assert_double_eq_tol(lp[5], ref_log_prob(&n, Y0, x + 5 * DX), 1e-5);
    free(lp2), free(x), free(lp);
    tu_fix_close(&f);
}
END_TEST

START_TEST(sampling_reproducible)
{
    struct net n;
    struct tu_fix f = fix_open(&n, "");
    tu_check_sample_reproducible(f.m, f.ws, Y0);
    enum { N = 600 };
    float b[N * DX];
    char err[ENG_ERR_LEN];
    /* temperature 0: every sample is the mean of the component it drew */
    struct mix q;
    ref_mixture(&n, Y0, &q);
    ck_assert_int_eq(eng_sample(f.m, f.ws, Y0, 42, 3, 0, N, 0.0f, b, NULL, NULL, NULL, err),
                     ENG_OK);
    int hit[K] = {0};
    for (int i = 0; i < N; i++) {
        int found = -1;
        for (int k = 0; k < K; k++) {
            double d = 0;
            for (int j = 0; j < DX; j++)
                d = fmax(d, fabs(b[i * DX + j] - (q.mu[k][j] * n.xs[j] + n.xm[j])));
            if (d < 1e-5)
                found = k;
        }
        ck_assert_msg(found >= 0, "sample %d at temperature 0 is no component's mean", i);
        hit[found]++;
    }
    for (int k = 0; k < K; k++) { /* the choice follows the weights */
        double w = exp(q.logw[k]), se = sqrt(w * (1 - w) / N);
        ck_assert_msg(fabs(hit[k] / (double)N - w) < 5 * se + 1e-9, "component %d drawn %d of "
                      "%d times, weight %g", k, hit[k], N, w);
    }
    tu_fix_close(&f);
}
END_TEST

START_TEST(prior_box)
{
    struct net n;
    struct tu_fix f = fix_open(&n, TU_MIX_PRIOR_BOX);
    enum { N = 500 };
    tu_check_mix_prior_box(f.m, f.ws, Y0, N, 100000, ref_log_prob, &n);
    float x[N * DX];
    double lp2[N];
    char err[ENG_ERR_LEN];
    struct eng_accept acc;
    float edge[DX] = {3.0f, 0.0f, 0.0f}; /* on the boundary: inside */
    ck_assert_int_eq(eng_log_prob(f.m, f.ws, 1, edge, Y0, 1, lp2, err), ENG_OK);
    ck_assert(isfinite(lp2[0]));
    /* the acceptance estimate */
    ck_assert_int_eq(eng_prior_acceptance(f.m, f.ws, Y0, 5, 0, N, 100000, NULL, &acc, err), ENG_OK);
    ck_assert_uint_eq(acc.accepted, N);
    ck_assert_uint_gt(acc.drawn, N);
    /* the draw limit stops a run short, without error */
    ck_assert_int_eq(eng_sample_prior(f.m, f.ws, Y0, 5, 0, N, 1.0f, 10, x, NULL, NULL, NULL, &acc,
                                      err), ENG_OK);
    ck_assert_uint_eq(acc.drawn, 10);
    ck_assert_uint_lt(acc.accepted, 10 + 1);
    tu_fix_close(&f);
}
END_TEST

START_TEST(refused_operations)
{
    struct net n;
    struct tu_fix f = fix_open(&n, "");
    tu_check_mix_refused(f.m, f.ws, Y0);
    float x[DX] = {0, 0, 0}, out[DX];
    double ld, lp;
    char err[ENG_ERR_LEN];
    double se;
    ck_assert_int_eq(eng_resimulate(f.m, f.ws, 1, x, Y0, &se, err), ENG_ERR_UNSUPPORTED);
    struct eng_preimage_opts po = {.method = ENG_PREIMAGE_GRADIENT, .num_solutions = 1,
                                   .max_steps = 10};
    int nf;
    ck_assert_int_eq(eng_preimage(f.m, f.ws, x, Y0, &po, out, &ld, &nf, err), ENG_ERR_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(err, "mdn"));
    const struct eng_certificate *c = eng_model_certificate(f.m);
    ck_assert(!c->invertible);
    ck_assert_int_eq(c->n_blocks, 0);
    /* non-finite x: refused; no y */
    float badx[DX] = {INFINITY, 0, 0};
    ck_assert_int_eq(eng_log_prob(f.m, f.ws, 1, badx, Y0, 1, &lp, err), ENG_ERR_NONFINITE);
    ck_assert_int_eq(eng_log_prob(f.m, f.ws, 1, x, NULL, 0, &lp, err), ENG_ERR_SHAPE);
    tu_fix_close(&f);
}
END_TEST

/* The self test: tests.log_prob from the reference loads; a wrong value is refused. */
START_TEST(self_test)
{
    struct net n;
    make_net(&n);
    enum { N = 5 };
    float x[N * DX], y[N * DY];
    double lp[N];
    tu_randn(x, N * DX, 1.0f, 31);
    tu_randn(y, N * DY, 1.0f, 32);
    for (int i = 0; i < N; i++)
        lp[i] = ref_log_prob(&n, y + i * DY, x + i * DX);
    const char *tests = "\"tests\":{\"x\":\"t.x\",\"y\":\"t.y\",\"log_prob\":\"t.lp\","
                        "\"rtol\":1e-5,\"atol\":1e-5}";
    for (int bad = 0; bad < 2; bad++) {
        struct tu_ckpt *c = tu_ckpt_new();
        add_tensors(c, &n);
        int64_t sx[2] = {N, DX}, sy[2] = {N, DY}, sl[1] = {N};
        tu_add_f32(c, "t.x", 2, sx, x);
        tu_add_f32(c, "t.y", 2, sy, y);
        double l2[N];
        memcpy(l2, lp, sizeof lp);
        if (bad)
            l2[3] += 0.01;
        tu_add(c, "t.lp", "F64", 1, sl, l2);
        char *man = manifest(tests, NULL);
        if (!bad) {
            struct eng_model *m = tu_load(c, man, 0);
            const struct eng_info *in = eng_model_info(m);
            ck_assert_int_eq(in->n_test_vectors, N);
            ck_assert_float_eq(in->test_y[3 * DY + 1], y[3 * DY + 1]);
            eng_model_unref(m);
        } else {
            char err[ENG_ERR_LEN];
            ck_assert_int_eq(tu_load_fail(c, man, 0, err), ENG_ERR_TESTVEC);
            ck_assert_msg(strstr(err, "log_prob at row 3"), "%s", err);
        }
        free(man);
        tu_ckpt_free(c);
    }
}
END_TEST

START_TEST(manifest_refused)
{
    struct net n;
    make_net(&n);
    static const struct {
        const char *extra, *mix, *msg;
    } bad[] = {
        {"", "\"components\":3,\"net\":{\"layers\":[{\"type\":\"linear\",\"weight\":"
             "\"net.0.weight\",\"bias\":\"net.0.bias\"}]},\"logits\":{\"weight\":\"logits.weight\"},"
             "\"means\":{\"weight\":\"means.weight\"},\"diagonal\":{\"weight\":\"diag.weight\"},"
             "\"upper\":{\"weight\":\"upper.weight\"}",
         "tensor 'logits.weight'"},
        {"", "\"components\":3,\"net\":{\"layers\":[{\"type\":\"linear\",\"weight\":"
             "\"net.0.weight\",\"bias\":\"net.0.bias\"},{\"type\":\"relu\"},{\"type\":\"linear\","
             "\"weight\":\"net.2.weight\",\"bias\":\"net.2.bias\"}]},\"logits\":{\"weight\":"
             "\"logits.weight\"},\"means\":{\"weight\":\"means.weight\"},\"diagonal\":{\"weight\":"
             "\"diag.weight\"}",
         "field 'upper'"},
        {"", "\"components\":0", "components"},
        {"", "\"components\":3,\"mystery\":1", "unknown field 'mystery'"},
        {"\"blocks\":[]", NULL, "not valid for kind mdn"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        struct tu_ckpt *c = tu_ckpt_new();
        add_tensors(c, &n);
        char *man = manifest(bad[i].extra, bad[i].mix);
        char err[ENG_ERR_LEN];
        ck_assert_int_ne(tu_load_fail(c, man, ENG_LOAD_NO_SELFTEST, err), ENG_OK);
        ck_assert_msg(strstr(err, bad[i].msg), "case %zu: '%s' lacks '%s'", i, err, bad[i].msg);
        free(man);
        tu_ckpt_free(c);
    }
}
END_TEST

/* ---- parity with sbi --------------------------------------------------------------------- */

START_TEST(sbi_parity)
{
    tu_check_sbi_parity("sbi_mdn", "sbi");
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("mdn");
    TCase *tc = tcase_create("mdn");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, log_prob_matches_reference);
    tcase_add_test(tc, sampling_moments);
    tcase_add_test(tc, sampling_reproducible);
    tcase_add_test(tc, prior_box);
    tcase_add_test(tc, refused_operations);
    tcase_add_test(tc, self_test);
    tcase_add_test(tc, manifest_refused);
    tcase_add_test(tc, sbi_parity);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN
