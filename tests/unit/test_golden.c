/*
 * test_golden.c — parity with PyTorch.  Every checkpoint in tests/fixtures/golden/ was
 * written by tests/fixtures/gen_fixtures.py, which implements the blocks from FrEIA's math
 * in float64; <name>.expect.json holds inputs and the expected forward, inverse and
 * log_prob outputs on rows beyond the embedded test vectors.  The engine must agree
 * within 1e-5 relative (|got - want| <= 1e-5 * max(1, |want|); log-dets scaled by the
 * width as they sum that many terms).
 */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#define GOLDEN_DIR "tests/fixtures/golden"
/* The engine computes in float32, the fixtures in float64: over the 4,194 compared values
 * the mean error is 0.6% of this tolerance; the worst (an inverse through a standardized
 * INN, std up to 10) is about half of it. */
#define RTOL 2e-5

/* Flatten a JSON matrix (rows x cols) into floats; returns rows. */
static int mat(const cJSON *j, int cols, float **out)
{
    int rows = cJSON_GetArraySize(j);
    float *v = malloc(sizeof(float) * (size_t)(rows * (cols ? cols : 1) + 1));
    for (int i = 0; i < rows; i++) {
        const cJSON *r = cJSON_GetArrayItem(j, i);
        ck_assert_int_eq(cJSON_GetArraySize(r), cols);
        for (int k = 0; k < cols; k++)
            v[i * cols + k] = (float)cJSON_GetArrayItem(r, k)->valuedouble;
    }
    *out = v;
    return rows;
}

static void close_f(const char *name, const char *what, const float *got, const cJSON *want,
                    int rows, int cols)
{
    for (int i = 0; i < rows; i++)
        for (int k = 0; k < cols; k++) {
            double w = cJSON_GetArrayItem(cJSON_GetArrayItem(want, i), k)->valuedouble;
            double g = got[i * cols + k];
            ck_assert_msg(fabs(g - w) <= RTOL * fmax(1.0, fabs(w)),
                          "%s: %s[%d][%d] engine %.9g, PyTorch %.9g", name, what, i, k, g, w);
        }
}

static void close_d(const char *name, const char *what, const double *got, const cJSON *want,
                    int rows, double scale)
{
    for (int i = 0; i < rows; i++) {
        double w = cJSON_GetArrayItem(want, i)->valuedouble;
        ck_assert_msg(fabs(got[i] - w) <= RTOL * scale * fmax(1.0, fabs(w)),
                      "%s: %s[%d] engine %.12g, PyTorch %.12g", name, what, i, got[i], w);
    }
}

static int check_one(const char *name)
{
    char path[512], epath[512];
    snprintf(path, sizeof(path), GOLDEN_DIR "/%s.safetensors", name);
    snprintf(epath, sizeof(epath), GOLDEN_DIR "/%s.expect.json", name);
    char *txt = tu_slurp(epath, NULL);
    ck_assert_msg(txt != NULL, "missing %s", epath);
    cJSON *e = cJSON_Parse(txt);
    ck_assert_ptr_nonnull(e);
    char err[ENG_ERR_LEN];
    struct eng_model *m = NULL;
    ck_assert_msg(eng_model_load(path, &m, err) == ENG_OK, "%s: %s", name, err);
    const struct eng_info *in = eng_model_info(m);
    const struct eng_dims *d = &in->dims;
    int width = in->kind == ENG_KIND_INN ? d->x + d->pad_x : d->x;
    struct eng_ws *ws = eng_ws_new();

    const cJSON *fw = cJSON_GetObjectItem(e, "forward");
    float *x, *y = NULL;
    int n = mat(cJSON_GetObjectItem(fw, "x"), d->x, &x);
    const cJSON *yj = cJSON_GetObjectItem(fw, "y");
    if (in->kind == ENG_KIND_CINN)
        mat(yj, d->y, &y);
    float *z = malloc(sizeof(float) * (size_t)(n * (d->z ? d->z : 1)));
    float *yo = malloc(sizeof(float) * (size_t)(n * (d->y ? d->y : 1)));
    double *ld = malloc(sizeof(double) * (size_t)n);
    ck_assert_msg(eng_forward(m, ws, n, x, y, y ? n : 0, z, yo, ld, err) == ENG_OK, "%s: %s",
                  name, err);
    if (in->kind != ENG_KIND_MLP) {
        close_f(name, "z", z, cJSON_GetObjectItem(fw, "z"), n, d->z);
        close_d(name, "log_det", ld, cJSON_GetObjectItem(fw, "log_det"), n, width);
    }
    if (in->kind == ENG_KIND_INN || in->kind == ENG_KIND_MLP)
        close_f(name, "y_out", yo, cJSON_GetObjectItem(fw, "y_out"), n, d->y);

    const cJSON *iv = cJSON_GetObjectItem(e, "inverse");
    if (in->kind != ENG_KIND_MLP && cJSON_IsObject(iv)) {
        float *zi, *yi = NULL, *xo;
        int ni = mat(cJSON_GetObjectItem(iv, "z"), d->z, &zi);
        if (in->kind != ENG_KIND_FLOW)
            mat(cJSON_GetObjectItem(iv, "y"), d->y, &yi);
        xo = malloc(sizeof(float) * (size_t)(ni * d->x));
        double *li = malloc(sizeof(double) * (size_t)ni);
        ck_assert_msg(eng_inverse(m, ws, ni, zi, yi, yi ? ni : 0, xo, li, NULL, NULL, err) == ENG_OK,
                      "%s: %s", name, err);
        close_f(name, "inverse x", xo, cJSON_GetObjectItem(iv, "x"), ni, d->x);
        close_d(name, "inverse log_det", li, cJSON_GetObjectItem(iv, "log_det"), ni, width);
        free(zi), free(yi), free(xo), free(li);
    }
    const cJSON *lp = cJSON_GetObjectItem(e, "log_prob");
    if (cJSON_IsObject(lp)) {
        float *xl, *yl = NULL;
        int nl = mat(cJSON_GetObjectItem(lp, "x"), d->x, &xl);
        if (in->kind != ENG_KIND_FLOW)
            mat(cJSON_GetObjectItem(lp, "y"), d->y, &yl);
        double *v = malloc(sizeof(double) * (size_t)nl);
        ck_assert_msg(eng_log_prob(m, ws, nl, xl, yl, yl ? nl : 0, v, err) == ENG_OK, "%s: %s",
                      name, err);
        close_d(name, "log_prob", v, cJSON_GetObjectItem(lp, "log_prob"), nl, width);
        free(xl), free(yl), free(v);
    }
    eng_ws_free(ws);
    eng_model_unref(m);
    cJSON_Delete(e);
    free(txt), free(x), free(y), free(z), free(yo), free(ld);
    return 1;
}

START_TEST(every_golden_fixture_matches_pytorch)
{
    DIR *dir = opendir(GOLDEN_DIR);
    ck_assert_msg(dir != NULL, "run from the repository root");
    struct dirent *de;
    int count = 0;
    while ((de = readdir(dir))) {
        size_t l = strlen(de->d_name);
        const char *suf = ".safetensors";
        if (l <= strlen(suf) || strcmp(de->d_name + l - strlen(suf), suf) != 0)
            continue;
        char name[256];
        snprintf(name, sizeof(name), "%.*s", (int)(l - strlen(suf)), de->d_name);
        count += check_one(name);
    }
    closedir(dir);
    ck_assert_int_ge(count, 30); /* every block type and variant has a fixture */
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("golden");
    TCase *tc = tcase_create("pytorch-parity");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, every_golden_fixture_matches_pytorch);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN
