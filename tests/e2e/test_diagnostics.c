/*
 * test_diagnostics.c — POST /v1/models/{m}/calibration and /mmd end to end, against the
 * demo models of models/ (ik_cinn, ik_inn, iresnet_toy, ik_mlp):
 *
 *   - a calibration's per-pair numbers are recomputed here from what /sample and /log_prob
 *     answer for the same seed (pair i is sampled as observation i, so /sample with the
 *     pairs' y rows gives the same samples; /log_prob gives log q of the samples and of
 *     theta*): SBC ranks, HPD ranks, TARP counts (from references sent in the request) and
 *     nltp, and from them the histogram and coverage ECDF;
 *   - the shapes, ranges and invariants of every section, the diagnostics subset, the
 *     clamping of bins, the seed drawn and echoed, sbi's warnings;
 *   - mmd: MMD^2 recomputed here from /sample's samples and the reference (biased and
 *     unbiased), the p-value on its grid (1 + k) / (1 + P), a reference drawn from the model
 *     itself not rejected, permutations 0 giving null;
 *   - the same bytes with --workers 1, 2 and 3, and as a job's result (202, progress
 *     counted in samples);
 *   - bad requests: exact status, code and message.
 */
#include "e2eutil.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct e2e_daemon DMN;

/* A temporary copy of the demo models (each daemon its own: its log is DIR.log). */
static void demo_models(char *dir)
{
    static const char *const NAMES[] = {"ik_cinn", "ik_inn", "ik_mlp", "iresnet_toy"};
    e2e_mkdtemp(dir);
    for (int i = 0; i < 4; i++) {
        char src[128], rel[128];
        size_t n;
        snprintf(src, sizeof src, "models/%s.safetensors", NAMES[i]);
        snprintf(rel, sizeof rel, "%s.safetensors", NAMES[i]);
        char *bytes = tu_slurp(src, &n);
        ck_assert_msg(bytes != NULL, "%s not found (run from the repository root)", src);
        e2e_write_file(dir, rel, bytes, n);
        free(bytes);
    }
}

static void setup(void)
{
    const char *args[] = {"--workers", "2", NULL};
    char dir[256];
    demo_models(dir);
    ck_assert(e2e_start(&DMN, dir, args));
}

static void teardown(void)
{
    e2e_stop_checked(&DMN, "test_diagnostics", 20);
}

static const cJSON *get(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    ck_assert_msg(v != NULL, "answer lacks '%s'", k);
    return v;
}

/* ---- pairs from the inverse-kinematics simulator (models/train/kinematics.py) -------- */

static double unif(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return ((double)(*s >> 11) + 0.5) / 9007199254740992.0;
}

static double gauss(uint64_t *s)
{
    double u = unif(s), v = unif(s);
    return sqrt(-2 * log(u)) * cos(6.283185307179586 * v);
}

/* N pairs: x ~ the prior, y = f(x); written as JSON arrays with 6 decimals (what the
 * daemon reads back as float32 is the same in every request). */
static void make_pairs(int N, uint64_t seed, char **xs, char **ys, float *x, float *y)
{
    static const double SIG[4] = {0.25, 0.5, 0.5, 0.5};
    size_t cap = (size_t)N * 80 + 16;
    char *a = malloc(cap), *b = malloc(cap);
    size_t na = 0, nb = 0;
    na += (size_t)snprintf(a + na, cap - na, "[");
    nb += (size_t)snprintf(b + nb, cap - nb, "[");
    for (int i = 0; i < N; i++) {
        double v[4];
        for (int j = 0; j < 4; j++)
            v[j] = round(gauss(&seed) * SIG[j] * 1e6) / 1e6;
        double a1 = v[1], a2 = a1 + v[2], a3 = a2 + v[3];
        double y1 = round((0.5 * cos(a1) + 0.5 * cos(a2) + cos(a3)) * 1e6) / 1e6;
        double y2 = round((v[0] + 0.5 * sin(a1) + 0.5 * sin(a2) + sin(a3)) * 1e6) / 1e6;
        na += (size_t)snprintf(a + na, cap - na, "%s[%.6f,%.6f,%.6f,%.6f]", i ? "," : "", v[0],
                               v[1], v[2], v[3]);
        nb += (size_t)snprintf(b + nb, cap - nb, "%s[%.6f,%.6f]", i ? "," : "", y1, y2);
        for (int j = 0; j < 4 && x; j++)
            x[i * 4 + j] = (float)v[j];
        if (y) {
            y[i * 2] = (float)y1;
            y[i * 2 + 1] = (float)y2;
        }
    }
    snprintf(a + na, cap - na, "]");
    snprintf(b + nb, cap - nb, "]");
    *xs = a;
    *ys = b;
}

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    int n = vsnprintf(NULL, 0, f, ap);
    va_end(ap);
    char *s = malloc((size_t)n + 1);
    va_start(ap, f);
    vsnprintf(s, (size_t)n + 1, f, ap);
    va_end(ap);
    return s;
}

static int ival(const cJSON *a, int i) { return cJSON_GetArrayItem(a, i)->valueint; }
static double dval(const cJSON *a, int i) { return cJSON_GetArrayItem(a, i)->valuedouble; }

/* ---- calibration against /sample and /log_prob ---------------------------------------- */

START_TEST(calibration_matches_sample_and_log_prob)
{
    enum { N = 12, L = 40, D = 4, B = 8, K = 10 };
    float x[N * D], y[N * 2], ref[N * D];
    char *xs, *ys;
    make_pairs(N, 99, &xs, &ys, x, y);
    /* references sent in the request: rows of x shifted */
    char rs[N * 80 + 16];
    size_t nr = 0;
    nr += (size_t)snprintf(rs + nr, sizeof rs - nr, "[");
    for (int i = 0; i < N; i++) {
        for (int j = 0; j < D; j++)
            ref[i * D + j] = x[((i + 5) % N) * D + j];
        nr += (size_t)snprintf(rs + nr, sizeof rs - nr, "%s[%.9g,%.9g,%.9g,%.9g]", i ? "," : "",
                               ref[i * D], ref[i * D + 1], ref[i * D + 2], ref[i * D + 3]);
    }
    snprintf(rs + nr, sizeof rs - nr, "]");
    char *body = fmt("{\"x\": %s, \"y\": %s, \"num_samples\": %d, \"seed\": 4242, \"bins\": %d, "
                     "\"coverage_points\": %d, \"tarp_references\": %s, \"tarp_bins\": 3, "
                     "\"z_score\": false}", xs, ys, L, B, K, rs);
    struct e2e_resp r;
    e2e_post(&DMN, "/v1/models/ik_cinn/calibration", body, &r);
    ck_assert_msg(r.status == 200, "%ld %s", r.status, r.body);
    const cJSON *j = r.json;
    ck_assert_str_eq(get(j, "model")->valuestring, "ik_cinn");
    ck_assert(cJSON_IsString(get(j, "sha256")) && strlen(get(j, "sha256")->valuestring) == 64);
    ck_assert_int_eq(get(j, "seed")->valueint, 4242);
    ck_assert_int_eq(get(j, "num_samples")->valueint, L);
    ck_assert_int_eq(get(j, "n")->valueint, N);
    ck_assert_int_eq(cJSON_GetArraySize(get(j, "warnings")), 2); /* N < 100 and L < 100 */

    /* the same samples through /sample (observation i = pair i) and log q through /log_prob */
    char *sb = fmt("{\"y\": %s, \"num_samples\": %d, \"seed\": 4242, \"outputs\": [\"samples\", "
                   "\"log_prob\"]}", ys, L);
    struct e2e_resp s;
    e2e_post(&DMN, "/v1/models/ik_cinn/sample", sb, &s);
    ck_assert_msg(s.status == 200, "%s", s.body);
    char *lb = fmt("{\"x\": %s, \"y\": %s}", xs, ys);
    struct e2e_resp lp;
    e2e_post(&DMN, "/v1/models/ik_cinn/log_prob", lb, &lp);
    ck_assert_msg(lp.status == 200, "%s", lp.body);
    const cJSON *samples = get(s.json, "samples");
    /* log q of every sample through /log_prob (the function log q(theta*) comes from) */
    size_t cap = (size_t)N * L * 120 + 64, nb = 0;
    char *all = malloc(cap);
    nb += (size_t)snprintf(all + nb, cap - nb, "{\"x\": [");
    for (int i = 0; i < N; i++)
        for (int l = 0; l < L; l++) {
            char *row = e2e_print(cJSON_GetArrayItem(cJSON_GetArrayItem(samples, i), l));
            nb += (size_t)snprintf(all + nb, cap - nb, "%s%s", i || l ? "," : "", row);
            free(row);
        }
    nb += (size_t)snprintf(all + nb, cap - nb, "], \"y\": [");
    for (int i = 0; i < N * L; i++)
        nb += (size_t)snprintf(all + nb, cap - nb, "%s[%.9g,%.9g]", i ? "," : "", y[i / L * 2],
                              y[i / L * 2 + 1]);
    snprintf(all + nb, cap - nb, "]}");
    struct e2e_resp slr;
    e2e_post(&DMN, "/v1/models/ik_cinn/log_prob", all, &slr);
    ck_assert_msg(slr.status == 200, "%s", slr.body);
    const cJSON *slp = get(slr.json, "log_prob");
    const cJSON *sbc = get(j, "sbc"), *ranks = get(sbc, "ranks");
    const cJSON *cov = get(j, "coverage"), *hpd = get(get(cov, "hpd"), "ranks");
    ck_assert_int_eq(cJSON_GetArraySize(ranks), N);
    int rk[N * D], h[N], tc[N];
    for (int i = 0; i < N; i++) {
        const cJSON *si = cJSON_GetArrayItem(samples, i);
        double lpt = dval(get(lp.json, "log_prob"), i);
        double dt = 0.0;
        for (int k = 0; k < D; k++)
            dt += ((double)ref[i * D + k] - x[i * D + k]) * ((double)ref[i * D + k] - x[i * D + k]);
        h[i] = tc[i] = 0;
        for (int k = 0; k < D; k++)
            rk[i * D + k] = 0;
        for (int l = 0; l < L; l++) {
            const cJSON *row = cJSON_GetArrayItem(si, l);
            double ds = 0.0;
            for (int k = 0; k < D; k++) {
                float v = (float)dval(row, k);
                rk[i * D + k] += v < x[i * D + k];
                ds += ((double)ref[i * D + k] - v) * ((double)ref[i * D + k] - v);
            }
            h[i] += dval(slp, i * L + l) > lpt;
            tc[i] += sqrt(ds) < sqrt(dt);
        }
        for (int k = 0; k < D; k++)
            ck_assert_msg(ival(cJSON_GetArrayItem(ranks, i), k) == rk[i * D + k],
                          "pair %d dim %d: rank %d, recomputed %d", i, k,
                          ival(cJSON_GetArrayItem(ranks, i), k), rk[i * D + k]);
        ck_assert_msg(ival(hpd, i) == h[i], "pair %d: hpd rank %d, recomputed %d", i,
                      ival(hpd, i), h[i]);
        ck_assert(dval(get(j, "nltp"), i) == -lpt); /* sbi's get_nltp */
    }
    /* histogram: edges b L / B, counts per dimension summing to N */
    const cJSON *hist = get(sbc, "histogram"), *edges = get(hist, "edges");
    ck_assert_int_eq(cJSON_GetArraySize(edges), B + 1);
    for (int b = 0; b <= B; b++)
        ck_assert(dval(edges, b) == (double)b * L / B);
    for (int k = 0; k < D; k++) {
        const cJSON *ck = cJSON_GetArrayItem(get(hist, "counts"), k);
        for (int b = 0; b < B; b++) {
            int want = 0;
            for (int i = 0; i < N; i++)
                want += (rk[i * D + k] * B / L < B ? rk[i * D + k] * B / L : B - 1) == b;
            ck_assert_int_eq(ival(ck, b), want);
        }
        double p = dval(get(sbc, "ks_pvalue"), k), st = dval(get(sbc, "ks_statistic"), k);
        ck_assert(p >= 0 && p <= 1 && st > 0 && st <= 1);
    }
    /* coverage: ECDF of the HPD ranks at k / K, band around it, lower <= upper */
    const cJSON *emp = get(get(cov, "hpd"), "empirical");
    for (int k = 0; k <= K; k++) {
        int n = 0;
        for (int i = 0; i < N; i++)
            n += h[i] * K <= k * L;
        ck_assert(dval(emp, k) == (double)n / N);
        ck_assert(dval(get(cov, "levels"), k) == (double)k / K);
        ck_assert(dval(get(cov, "lower"), k) <= dval(get(cov, "upper"), k));
    }
    ck_assert(dval(get(cov, "lower"), K) == 1.0 && dval(get(cov, "upper"), K) == 1.0);
    ck_assert(get(cov, "confidence")->valuedouble == 0.95);
    ck_assert_int_eq(cJSON_GetArraySize(get(get(cov, "central"), "empirical")), D);
    /* TARP: 3 bins, ecp from 0 to 1 over the counts recomputed here */
    const cJSON *tarp = get(j, "tarp"), *ecp = get(tarp, "ecp"), *alpha = get(tarp, "alpha");
    ck_assert_int_eq(cJSON_GetArraySize(ecp), 4);
    ck_assert(dval(ecp, 0) == 0.0 && dval(ecp, 3) == 1.0);
    int cmin = tc[0], cmax = tc[0];
    for (int i = 1; i < N; i++) {
        cmin = tc[i] < cmin ? tc[i] : cmin;
        cmax = tc[i] > cmax ? tc[i] : cmax;
    }
    if (cmax > cmin) {
        ck_assert(fabs(dval(alpha, 0) - (double)cmin / L) < 1e-15);
        ck_assert(fabs(dval(alpha, 3) - (double)cmax / L) < 1e-15);
        int below = 0; /* pairs in bin 0 */
        for (int i = 0; i < N; i++)
            below += (tc[i] - cmin) * 3 / (cmax - cmin) == 0;
        ck_assert(dval(ecp, 1) == (double)below / N);
    }
    double tp = get(tarp, "ks_pvalue")->valuedouble;
    ck_assert(tp >= 0 && tp <= 1 && cJSON_IsNumber(get(tarp, "atc")));
    free(xs);
    free(ys);
    free(body);
    free(sb);
    free(lb);
    free(all);
    e2e_resp_free(&r);
    e2e_resp_free(&s);
    e2e_resp_free(&lp);
    e2e_resp_free(&slr);
}
END_TEST

START_TEST(calibration_options_and_kinds)
{
    char *xs, *ys;
    make_pairs(20, 7, &xs, &ys, NULL, NULL);
    /* a subset of diagnostics: only those sections; bins clamped to L + 1; seed drawn */
    char *body = fmt("{\"x\": %s, \"y\": %s, \"num_samples\": 5, \"diagnostics\": [\"tarp\", "
                     "\"sbc\"], \"bins\": 50}", xs, ys);
    struct e2e_resp r;
    e2e_post(&DMN, "/v1/models/ik_inn/calibration", body, &r);
    ck_assert_msg(r.status == 200, "%s", r.body);
    ck_assert(cJSON_GetObjectItemCaseSensitive(r.json, "coverage") == NULL);
    ck_assert_int_eq(cJSON_GetArraySize(get(get(get(r.json, "sbc"), "histogram"), "edges")), 7);
    ck_assert_int_eq(cJSON_GetArraySize(get(get(r.json, "tarp"), "alpha")), 3); /* 20 // 10 + 1 */
    double seed = get(r.json, "seed")->valuedouble;
    ck_assert(seed >= 0 && seed <= 9007199254740991.0);
    char hdr[64];
    ck_assert(e2e_header(&r, "X-Seed", hdr, sizeof hdr) == NULL ||
              strtod(hdr, NULL) == seed);
    e2e_resp_free(&r);
    free(body);
    /* a flow: no y; the i-ResNet's numeric inverse */
    body = fmt("{\"x\": [[0.1, 0.2], [0.5, -0.3], [1.0, 0.0], [-0.4, 0.2], [0.0, 0.9]], "
               "\"num_samples\": 30, \"seed\": 3, \"diagnostics\": [\"coverage\"], "
               "\"coverage_points\": 4, \"confidence\": 0.5}");
    e2e_post(&DMN, "/v1/models/iresnet_toy/calibration", body, &r);
    ck_assert_msg(r.status == 200, "%s", r.body);
    ck_assert_int_eq(cJSON_GetArraySize(get(get(get(r.json, "coverage"), "hpd"), "ranks")), 5);
    ck_assert_int_eq(cJSON_GetArraySize(get(get(r.json, "coverage"), "levels")), 5);
    ck_assert(get(get(r.json, "coverage"), "confidence")->valuedouble == 0.5);
    e2e_resp_free(&r);
    free(body);
    free(xs);
    free(ys);
}
END_TEST

/* ---- mmd ------------------------------------------------------------------------------ */

static double imq(const double *a, const double *b, int d)
{
    static const double H[3] = {0.05, 0.2, 0.9};
    double d2 = 0.0, k = 0.0;
    for (int j = 0; j < d; j++)
        d2 += (a[j] - b[j]) * (a[j] - b[j]);
    for (int s = 0; s < 3; s++)
        k += H[s] * H[s] / (H[s] * H[s] + d2);
    return k;
}

START_TEST(mmd_matches_samples_and_reference)
{
    enum { n = 60, M = 40, Dx = 4 };
    /* the reference: the model's own samples under another seed */
    struct e2e_resp s1, s2, r;
    e2e_post(&DMN, "/v1/models/ik_cinn/sample",
             "{\"y\": [[1.5, 0]], \"num_samples\": 40, \"seed\": 77}", &s2);
    ck_assert_int_eq(s2.status, 200);
    char *refs = e2e_print(cJSON_GetArrayItem(get(s2.json, "samples"), 0));
    e2e_post(&DMN, "/v1/models/ik_cinn/sample",
             "{\"y\": [[1.5, 0]], \"num_samples\": 60, \"seed\": 5}", &s1);
    ck_assert_int_eq(s1.status, 200);
    const cJSON *xa = cJSON_GetArrayItem(get(s1.json, "samples"), 0);
    const cJSON *xb = cJSON_GetArrayItem(get(s2.json, "samples"), 0);
    double z[(n + M) * Dx];
    for (int i = 0; i < n + M; i++)
        for (int k = 0; k < Dx; k++)
            z[i * Dx + k] = (float)dval(cJSON_GetArrayItem(i < n ? xa : xb, i < n ? i : i - n), k);
    double sxx = 0, syy = 0, sxy = 0, dxx = 0, dyy = 0;
    for (int a = 0; a < n + M; a++)
        for (int b = 0; b < n + M; b++) {
            double k = imq(z + a * Dx, z + b * Dx, Dx);
            if (a < n && b < n)
                sxx += k, dxx += a == b ? k : 0;
            else if (a >= n && b >= n)
                syy += k, dyy += a == b ? k : 0;
            else if (a < n)
                sxy += k;
        }
    double biased = sxx / (n * n) + syy / (M * M) - 2 * sxy / (n * M);
    double unbiased = (sxx - dxx) / (n * (n - 1.0)) + (syy - dyy) / (M * (M - 1.0)) -
                      2 * sxy / (n * M);
    for (int est = 0; est < 2; est++) {
        char *body = fmt("{\"y\": [1.5, 0], \"reference\": %s, \"num_samples\": %d, \"seed\": 5, "
                         "\"estimator\": \"%s\", \"permutations\": 99}", refs, n,
                         est ? "biased" : "unbiased");
        e2e_post(&DMN, "/v1/models/ik_cinn/mmd", body, &r);
        ck_assert_msg(r.status == 200, "%s", r.body);
        double got = get(r.json, "mmd2")->valuedouble, want = est ? biased : unbiased;
        ck_assert_msg(fabs(got - want) <= 1e-12 * fabs(want) + 1e-15, "mmd2 %.17g want %.17g",
                      got, want);
        ck_assert_str_eq(get(r.json, "estimator")->valuestring, est ? "biased" : "unbiased");
        ck_assert_str_eq(get(r.json, "kernel")->valuestring, "imq");
        ck_assert_int_eq(get(r.json, "m")->valueint, M);
        ck_assert_int_eq(get(r.json, "permutations")->valueint, 99);
        double p = get(r.json, "p_value")->valuedouble, k = p * 100 - 1;
        ck_assert(p > 0 && p <= 1 && fabs(k - nearbyint(k)) < 1e-9);
        if (!est) /* both from the model: no evidence of a difference */
            ck_assert_msg(p > 0.01, "p = %g for two samples of one distribution", p);
        e2e_resp_free(&r);
        free(body);
    }
    /* permutations 0: no p-value */
    char *body = fmt("{\"y\": [1.5, 0], \"reference\": %s, \"num_samples\": 20, \"seed\": 5, "
                     "\"permutations\": 0}", refs);
    e2e_post(&DMN, "/v1/models/ik_cinn/mmd", body, &r);
    ck_assert_msg(r.status == 200, "%s", r.body);
    ck_assert(cJSON_IsNull(get(r.json, "p_value")));
    e2e_resp_free(&r);
    free(body);
    /* a reference far away: the smallest p-value */
    body = fmt("{\"y\": [1.5, 0], \"reference\": [[3,3,3,3],[3.1,3,3,3],[3,3.1,3,3]], "
               "\"num_samples\": 30, \"seed\": 5, \"permutations\": 49}");
    e2e_post(&DMN, "/v1/models/ik_cinn/mmd", body, &r);
    ck_assert_msg(r.status == 200, "%s", r.body);
    ck_assert(get(r.json, "p_value")->valuedouble == 1.0 / 50);
    e2e_resp_free(&r);
    free(body);
    free(refs);
    e2e_resp_free(&s1);
    e2e_resp_free(&s2);
}
END_TEST

/* ---- determinism --------------------------------------------------------------------- */

START_TEST(same_bytes_with_one_or_three_workers)
{
    struct e2e_daemon one, three;
    const char *a1[] = {"--workers", "1", NULL}, *a3[] = {"--workers", "3", NULL};
    char d1[256], d3[256];
    demo_models(d1);
    demo_models(d3);
    ck_assert(e2e_start(&one, d1, a1));
    ck_assert(e2e_start(&three, d3, a3));
    char *xs, *ys;
    make_pairs(150, 11, &xs, &ys, NULL, NULL);
    char *bodies[3] = {
        fmt("{\"x\": %s, \"y\": %s, \"num_samples\": 300, \"seed\": 8}", xs, ys),
        fmt("{\"x\": %s, \"num_samples\": 20, \"seed\": 8, \"z_score\": false}",
            "[[0.1,0.2],[0.3,0.1],[-0.5,0.4],[0.9,-0.2]]"),
        fmt("{\"y\": [1.2, 0.3], \"reference\": %s, \"num_samples\": 700, \"seed\": 8}", xs)};
    const char *paths[3] = {"/v1/models/ik_cinn/calibration",
                            "/v1/models/iresnet_toy/calibration", "/v1/models/ik_cinn/mmd"};
    for (int i = 0; i < 3; i++) {
        struct e2e_resp r1, r3, r2;
        e2e_post(&one, paths[i], bodies[i], &r1);
        e2e_post(&three, paths[i], bodies[i], &r3);
        e2e_post(&DMN, paths[i], bodies[i], &r2);
        ck_assert_msg(r1.status == 200, "%s: %s", paths[i], r1.body);
        ck_assert_msg(r1.len == r3.len && !memcmp(r1.body, r3.body, r1.len),
                      "%s: 1 and 3 workers answer different bytes", paths[i]);
        ck_assert_msg(r1.len == r2.len && !memcmp(r1.body, r2.body, r1.len),
                      "%s: 1 and 2 workers answer different bytes", paths[i]);
        /* as a job: 202, progress in samples, then the same bytes as the result */
        struct e2e_resp a, g;
        const char *pref[] = {"Prefer: respond-async", NULL};
        e2e_request(&DMN, "POST", paths[i], bodies[i], strlen(bodies[i]), pref, &a);
        ck_assert_msg(a.status == 202, "%s async: %ld %s", paths[i], a.status, a.body);
        char url[128], res[160];
        snprintf(url, sizeof url, "%s", get(a.json, "url")->valuestring);
        double t0 = e2e_now_s();
        for (;;) {
            e2e_get(&DMN, url, &g);
            ck_assert_int_eq(g.status, 200);
            const char *st = get(g.json, "state")->valuestring;
            ck_assert_str_eq(get(get(g.json, "progress"), "unit")->valuestring, "samples");
            if (!strcmp(st, "done"))
                break;
            ck_assert_msg(strcmp(st, "failed") && strcmp(st, "cancelled"), "%s", g.body);
            ck_assert_msg(e2e_now_s() - t0 < 60, "job not done: %s", g.body);
            e2e_resp_free(&g);
            usleep(20000);
        }
        long total = (long)get(get(g.json, "progress"), "total")->valuedouble;
        ck_assert_int_eq(total, i == 0 ? 150 * 300 : i == 1 ? 4 * 20 : 700);
        ck_assert_int_eq((long)get(get(g.json, "progress"), "done")->valuedouble, total);
        e2e_resp_free(&g);
        snprintf(res, sizeof res, "%s/result", url);
        e2e_get(&DMN, res, &g);
        ck_assert_msg(g.len == r1.len && !memcmp(g.body, r1.body, r1.len),
                      "%s: the job's result is not the synchronous answer", paths[i]);
        e2e_resp_free(&g);
        e2e_resp_free(&a);
        e2e_resp_free(&r1);
        e2e_resp_free(&r3);
        e2e_resp_free(&r2);
        free(bodies[i]);
    }
    free(xs);
    free(ys);
    e2e_stop_checked(&one, "one worker", 20);
    e2e_stop_checked(&three, "three workers", 20);
}
END_TEST

/* ---- bad requests ------------------------------------------------------------------- */

static const struct {
    const char *path, *body;
    long status;
    const char *answer; /* the whole body */
} BAD[] = {
    {"/v1/models/ik_mlp/calibration", "{\"x\": [[0,0,0,0]], \"y\": [[1,0]]}", 422,
     "{\"error\":\"calibration is not defined for an mlp model (use preimage search)\","
     "\"code\":\"unsupported_operation\"}\n"},
    {"/v1/models/ik_cinn/calibration", "{\"y\": [[1,0]]}", 400,
     "{\"error\":\"missing field 'x': the ground-truth parameters theta*, one row of 4 values "
     "per pair\",\"code\":\"missing_field\"}\n"},
    {"/v1/models/ik_cinn/calibration", "{\"x\": [[0,0,0,0]]}", 400,
     "{\"error\":\"missing field 'y': a cinn model needs the observation y (rows of 2 "
     "values)\",\"code\":\"missing_field\"}\n"},
    {"/v1/models/ik_cinn/calibration", "{\"x\": [[0,0,0,0],[1,1,1,1]], \"y\": [[1,0]]}", 400,
     "{\"error\":\"y has 1 rows and x has 2: calibration needs one observation y per "
     "ground-truth row of x\",\"code\":\"bad_shape\"}\n"},
    {"/v1/models/iresnet_toy/calibration", "{\"x\": [[0,0]], \"y\": [[1,0]]}", 400,
     "{\"error\":\"field 'y' is not taken here by a flow model (it has no observation y for "
     "this operation)\",\"code\":\"unknown_field\"}\n"},
    {"/v1/models/ik_cinn/calibration", "{\"x\": [[0,0,0,0]], \"y\": [[1,0]], \"L\": 3}", 400,
     NULL},
    {"/v1/models/ik_cinn/calibration", "{\"x\": [[0,0,0,0]], \"y\": [[1,0]], \"num_samples\": 0}",
     400, "{\"error\":\"num_samples must be at least 1, got 0\",\"code\":\"invalid_field\"}\n"},
    {"/v1/models/ik_cinn/calibration",
     "{\"x\": [[0,0,0,0],[0,0,0,0]], \"y\": [[1,0],[1,0]], \"num_samples\": 600000}", 413,
     "{\"error\":\"2 pairs x num_samples 600000 = 1200000 samples, more than the server allows "
     "per request (1048576, --max-samples); ask for fewer samples or split the request\","
     "\"code\":\"too_large\"}\n"},
    {"/v1/models/ik_cinn/calibration",
     "{\"x\": [[0,0,0,0]], \"y\": [[1,0]], \"diagnostics\": [\"sbc\", \"sbc\"]}", 400,
     "{\"error\":\"diagnostics[1] = \\\"sbc\\\" is listed twice\",\"code\":\"invalid_field\"}\n"},
    {"/v1/models/ik_cinn/calibration",
     "{\"x\": [[0,0,0,0]], \"y\": [[1,0]], \"diagnostics\": [\"c2st\"]}", 400,
     "{\"error\":\"diagnostics[0] = \\\"c2st\\\" is not one of sbc, coverage, tarp\","
     "\"code\":\"invalid_field\"}\n"},
    {"/v1/models/ik_cinn/calibration", "{\"x\": [[0,0,0,0]], \"y\": [[1,0]], \"diagnostics\": []}",
     400, "{\"error\":\"diagnostics must be a non-empty array of strings from sbc, coverage, "
     "tarp; got an empty array\",\"code\":\"invalid_field\"}\n"},
    {"/v1/models/ik_cinn/calibration", "{\"x\": [[0,0,0,0]], \"y\": [[1,0]], \"bins\": 0}", 400,
     NULL},
    {"/v1/models/ik_cinn/calibration", "{\"x\": [[0,0,0,0]], \"y\": [[1,0]], \"confidence\": 1}",
     400, "{\"error\":\"confidence must be in (0, 1), got 1\",\"code\":\"invalid_field\"}\n"},
    {"/v1/models/ik_cinn/calibration",
     "{\"x\": [[0,0,0,0]], \"y\": [[1,0]], \"coverage_points\": 1001}", 400, NULL},
    {"/v1/models/ik_cinn/calibration", "{\"x\": [[0,0,0,0]], \"y\": [[1,0]], \"tarp_bins\": 2}",
     400, "{\"error\":\"tarp_bins must be between 1 and 1, got 2\","
     "\"code\":\"invalid_field\"}\n"},
    {"/v1/models/ik_cinn/calibration",
     "{\"x\": [[0,0,0,0]], \"y\": [[1,0]], \"tarp_references\": [[0,0,0,0],[1,1,1,1]]}", 400,
     "{\"error\":\"tarp_references has 2 rows; it needs one reference point per pair (1 rows, "
     "as x)\",\"code\":\"bad_shape\"}\n"},
    {"/v1/models/ik_cinn/calibration", "{\"x\": [[0,0,0,0]], \"y\": [[1,0]], \"z_score\": 1}",
     400, "{\"error\":\"z_score must be true or false, got a number\","
     "\"code\":\"invalid_field\"}\n"},
    {"/v1/models/ik_cinn/calibration", "{\"x\": [[0,0,0]], \"y\": [[1,0]]}", 400, NULL},
    {"/v1/models/ik_mlp/mmd", "{\"y\": [1,0], \"reference\": [[0,0,0,0],[1,1,1,1]]}", 422,
     "{\"error\":\"mmd is not defined for an mlp model (use preimage search)\","
     "\"code\":\"unsupported_operation\"}\n"},
    {"/v1/models/ik_cinn/mmd", "{\"y\": [1,0]}", 400,
     "{\"error\":\"missing field 'reference': samples from the true posterior, rows of 4 "
     "values\",\"code\":\"missing_field\"}\n"},
    {"/v1/models/ik_cinn/mmd", "{\"y\": [1,0], \"reference\": [[0,0,0,0]]}", 400,
     "{\"error\":\"reference has 1 row; MMD needs at least 2 reference samples\","
     "\"code\":\"bad_shape\"}\n"},
    {"/v1/models/ik_cinn/mmd", "{\"y\": [[1,0],[0,1]], \"reference\": [[0,0,0,0],[1,1,1,1]]}",
     400, "{\"error\":\"y has 2 rows; mmd compares the posterior of one observation: give one "
     "row of 2 values\",\"code\":\"bad_shape\"}\n"},
    {"/v1/models/ik_cinn/mmd",
     "{\"y\": [1,0], \"reference\": [[0,0,0,0],[1,1,1,1]], \"estimator\": \"linear\"}", 400,
     "{\"error\":\"estimator must be \\\"unbiased\\\" or \\\"biased\\\", got \\\"linear\\\"\","
     "\"code\":\"invalid_field\"}\n"},
    {"/v1/models/ik_cinn/mmd", "{\"y\": [1,0], \"reference\": [[0,0,0,0],[1,1,1,1]], "
     "\"scales\": []}", 400, "{\"error\":\"scales must be a non-empty array of positive numbers "
     "(IMQ kernel widths), got an empty array\",\"code\":\"invalid_field\"}\n"},
    {"/v1/models/ik_cinn/mmd", "{\"y\": [1,0], \"reference\": [[0,0,0,0],[1,1,1,1]], "
     "\"scales\": [0.1, 0]}", 400, "{\"error\":\"scales[1] must be in (0, 1e+30], got 0\","
     "\"code\":\"invalid_field\"}\n"},
    {"/v1/models/ik_cinn/mmd", "{\"y\": [1,0], \"reference\": [[0,0,0,0],[1,1,1,1]], "
     "\"permutations\": -1}", 400, NULL},
    {"/v1/models/ik_cinn/mmd", "{\"y\": [1,0], \"reference\": [[0,0,0,0],[1,1,1,1]], "
     "\"num_samples\": 1}", 400, "{\"error\":\"num_samples must be at least 2, got 1\","
     "\"code\":\"invalid_field\"}\n"},
    {"/v1/models/ik_cinn/mmd", "{\"y\": [1,0], \"reference\": [[0,0,0,0],[1,1,1,1]], "
     "\"num_samples\": 4095}", 413, "{\"error\":\"num_samples 4095 + 2 reference rows = 4097 "
     "points, more than one MMD test takes (4096: its kernel matrix is their square); ask for "
     "fewer samples or subsample the reference\",\"code\":\"too_large\"}\n"},
    {"/v1/models/ik_cinn/mmd", "{\"y\": [1,0], \"reference\": [[0,0,0,0],[1,1,1,1]], "
     "\"quantiles\": [0.5]}", 400, NULL},
};

START_TEST(bad_requests_answer_exact_errors)
{
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        struct e2e_resp r;
        e2e_post(&DMN, BAD[i].path, BAD[i].body, &r);
        ck_assert_msg(r.status == BAD[i].status, "case %zu (%s %s): status %ld, want %ld: %s",
                      i, BAD[i].path, BAD[i].body, r.status, BAD[i].status, r.body);
        if (BAD[i].answer)
            ck_assert_msg(r.len == strlen(BAD[i].answer) && !memcmp(r.body, BAD[i].answer, r.len),
                          "case %zu: got %s want %s", i, r.body, BAD[i].answer);
        else
            ck_assert_msg(r.json && cJSON_IsString(get(r.json, "error")) &&
                              cJSON_IsString(get(r.json, "code")),
                          "case %zu: %s", i, r.body);
        e2e_resp_free(&r);
    }
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("diagnostics");
    TCase *t = tcase_create("diagnostics");
    tcase_set_timeout(t, 240);
    tcase_add_unchecked_fixture(t, setup, teardown);
    tcase_add_test(t, calibration_matches_sample_and_log_prob);
    tcase_add_test(t, calibration_options_and_kinds);
    tcase_add_test(t, mmd_matches_samples_and_reference);
    tcase_add_test(t, same_bytes_with_one_or_three_workers);
    tcase_add_test(t, bad_requests_answer_exact_errors);
    suite_add_tcase(s, t);
    return s;
}

E2E_MAIN
