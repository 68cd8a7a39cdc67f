/*
 * selftest.c — the load-time self test: run the checkpoint's embedded test vectors (what
 * the exporting framework computed) through the engine and refuse a model that disagrees,
 * naming the first row, column and both values (an mdn, which has no forward map: its
 * log_prob of the test rows).  A model that passes keeps float copies of
 * the first ENG_TEST_VECTORS_MAX rows' observation and x (struct eng_info).
 */
#include <math.h>

#include "loader.h"
#include "model_impl.h"
#include "safetensors.h"

/* ==== self test ============================================================================ */

static enum eng_status test_tensor(struct ldr *L, const cJSON *tj, const char *field, bool req,
                                   int rows, int cols, const double **out)
{
    int64_t shp[2] = {rows, cols};
    return ldr_tensor_f64(L, tj, field, req, cols >= 0 ? 2 : 1, shp, out);
}

static enum eng_status compare(struct ldr *L, const char *what, const float *got32,
                               const double *got64, const double *want, int rows, int cols,
                               double rtol, double atol)
{
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) {
            size_t k = (size_t)i * cols + j;
            double g = got32 ? got32[k] : got64[k];
            if (!(fabs(g - want[k]) <= atol + rtol * fabs(want[k])))
                return ldr_fail(L, ENG_ERR_TESTVEC, "test vector mismatch in %s at row %d, "
                                "column %d: engine %.9g, exporter %.9g (rtol %g, atol %g)", what,
                                i, j, g, want[k], rtol, atol);
        }
    return ENG_OK;
}

/* The test tensors of one checkpoint (arena memory, n rows each; NULL when absent). */
struct tvec {
    int n;
    double rtol, atol;
    const double *x, *y, *z, *yo, *ld, *xinv;
    const double *lp; /* mdn: log q(x | y) */
};

/* mdn: log_prob of the test rows against what the exporter computed. */
static enum eng_status check_mdn(struct ldr *L, struct eng_model *m, const struct tvec *t,
                                 struct eng_ws *ws)
{
    const struct eng_dims *d = &m->info.dims;
    size_t nx = (size_t)t->n * d->x, ny = (size_t)t->n * d->y;
    float *fx = ldr_alloc(L, sizeof(float) * (nx + ny));
    double *lp = ldr_alloc(L, sizeof(double) * (size_t)t->n);
    if (!fx || !lp)
        return ENG_ERR_NOMEM;
    float *fy = fx + nx;
    for (size_t i = 0; i < nx; i++)
        fx[i] = (float)t->x[i];
    for (size_t i = 0; i < ny; i++)
        fy[i] = (float)t->y[i];
    char err[ENG_ERR_LEN];
    enum eng_status st = eng_log_prob(m, ws, t->n, fx, fy, t->n, lp, err);
    if (st != ENG_OK)
        return ldr_fail(L, ENG_ERR_TESTVEC, "log_prob on the test inputs failed: %s", err);
    return compare(L, "log_prob", NULL, lp, t->lp, t->n, 1, t->rtol, t->atol * d->x);
}

/* Run the test vectors t through m and compare with what the exporter computed. */
static enum eng_status check(struct ldr *L, struct eng_model *m, const struct tvec *t,
                             struct eng_ws *ws)
{
    const struct eng_dims *d = &m->info.dims;
    enum eng_kind k = m->info.kind;
    int n = t->n;
    double rtol = t->rtol, atol = t->atol;
    const double *x = t->x, *y = t->y, *z = t->z, *yo = t->yo, *ld = t->ld, *xinv = t->xinv;
    size_t nx = (size_t)n * d->x, ny = (size_t)n * (d->y ? d->y : 1), nz = (size_t)n * (d->z ? d->z : 1);
    float *fx = ldr_alloc(L, sizeof(float) * (nx + 2 * ny + 2 * nz));
    double *fld = ldr_alloc(L, sizeof(double) * (size_t)n);
    if (!fx || !fld)
        return ENG_ERR_NOMEM;
    float *fy = fx + nx, *fz = fy + ny, *fyo = fz + nz, *fz_in = fyo + ny;
    for (size_t i = 0; i < nx; i++)
        fx[i] = (float)x[i];
    if (y)
        for (size_t i = 0; i < ny; i++)
            fy[i] = (float)y[i];
    char err[ENG_ERR_LEN];
    enum eng_status st = eng_forward(m, ws, n, fx, y ? fy : NULL, y ? n : 0, fz, fyo, fld, err);
    if (st != ENG_OK)
        return ldr_fail(L, ENG_ERR_TESTVEC, "forward on the test inputs failed: %s", err);
    if (z && (st = compare(L, "z", fz, NULL, z, n, d->z, rtol, atol)) != ENG_OK)
        return st;
    if (yo && (st = compare(L, "y_out", fyo, NULL, yo, n, d->y, rtol, atol)) != ENG_OK)
        return st;
    if (ld && (st = compare(L, "log_det", NULL, fld, ld, n, 1, rtol, atol * m->D)) != ENG_OK)
        return st;
    if (k == ENG_KIND_MLP)
        return ENG_OK;
    if (k == ENG_KIND_INN && !xinv)
        return ENG_OK; /* [z, 0, y] inverts to x only when the pad outputs were 0 */
    if (m->n_numeric && !m->cert.certified)
        return ENG_OK; /* a residual block with L >= 1 may not converge: such a model loads,
                          flagged not certified, and every inverse response says so */
    for (size_t i = 0; i < nz; i++)
        fz_in[i] = (float)z[i];
    const float *yin = NULL;
    if (k == ENG_KIND_CINN)
        yin = fy;
    if (k == ENG_KIND_INN) {
        for (size_t i = 0; i < ny; i++)
            fyo[i] = (float)yo[i];
        yin = fyo;
    }
    st = eng_inverse(m, ws, n, fz_in, yin, yin ? n : 0, fx, NULL, NULL, NULL, err);
    if (st != ENG_OK)
        return ldr_fail(L, ENG_ERR_TESTVEC, "inverse on the test outputs failed: %s", err);
    return compare(L, "inverse x", fx, NULL, xinv ? xinv : x, n, d->x, rtol, atol);
}

/* Keep float copies of the first rows' observation and x in the model (what
 * struct eng_info documents): cinn y / x, inn and mlp y_out / x, nothing for a flow. */
static enum eng_status keep(struct ldr *L, struct eng_model *m, const struct tvec *t)
{
    const struct eng_dims *d = &m->info.dims;
    const double *obs = m->info.kind == ENG_KIND_CINN || m->info.kind == ENG_KIND_MDN ? t->y
                                                                                     : t->yo;
    if (m->info.kind == ENG_KIND_FLOW || !obs)
        return ENG_OK;
    int n = t->n < ENG_TEST_VECTORS_MAX ? t->n : ENG_TEST_VECTORS_MAX;
    size_t ny = (size_t)n * d->y, nx = (size_t)n * d->x;
    float *f = ldr_alloc(L, sizeof(float) * (ny + nx));
    if (!f)
        return ENG_ERR_NOMEM;
    for (size_t i = 0; i < ny; i++)
        f[i] = (float)obs[i];
    for (size_t i = 0; i < nx; i++)
        f[ny + i] = (float)t->x[i];
    m->info.test_y = f;
    m->info.test_x = f + ny;
    m->info.n_test_vectors = n;
    return ENG_OK;
}

enum eng_status model_self_test(struct ldr *L, struct eng_model *m, const cJSON *tj,
                                struct eng_ws *ws)
{
    const struct eng_dims *d = &m->info.dims;
    enum eng_kind k = m->info.kind;
    const struct st_tensor *tx;
    enum eng_status st = ldr_raw(L, tj, "x", &tx);
    if (st != ENG_OK)
        return st;
    if (tx->ndim != 2 || tx->shape[0] < 1 || tx->shape[0] > 4096)
        return ldr_fail(L, ENG_ERR_TENSOR, "test input '%s' must be (rows, %d) with 1 to 4096 "
                        "rows", tx->name, d->x);
    int n = (int)tx->shape[0];
    double rtol, atol;
    if ((st = ldr_num(L, tj, "rtol", false, 1e-4, &rtol)) != ENG_OK ||
        (st = ldr_num(L, tj, "atol", false, 1e-4, &atol)) != ENG_OK)
        return st;
    if (!(rtol >= 0 && rtol <= 1 && atol >= 0 && atol <= 1))
        return ldr_fail(L, ENG_ERR_MANIFEST, "rtol and atol must be in [0, 1]");
    const double *x, *y = NULL, *z = NULL, *yo = NULL, *ld = NULL, *xinv = NULL;
    if ((st = test_tensor(L, tj, "x", true, n, d->x, &x)) != ENG_OK)
        return st;
    if ((k == ENG_KIND_CINN || k == ENG_KIND_MDN) &&
        (st = test_tensor(L, tj, "y", true, n, d->y, &y)) != ENG_OK)
        return st;
    if (k == ENG_KIND_MDN) {
        const double *lp;
        if ((st = test_tensor(L, tj, "log_prob", true, n, -1, &lp)) != ENG_OK)
            return st;
        struct tvec t = {n, rtol, atol, x, y, NULL, NULL, NULL, NULL, lp};
        if ((st = check_mdn(L, m, &t, ws)) != ENG_OK)
            return st;
        return keep(L, m, &t);
    }
    if (k != ENG_KIND_MLP) {
        if ((st = test_tensor(L, tj, "z", true, n, d->z, &z)) != ENG_OK)
            return st;
        if ((st = test_tensor(L, tj, "log_det", true, n, -1, &ld)) != ENG_OK)
            return st;
    }
    if ((k == ENG_KIND_INN || k == ENG_KIND_MLP) &&
        (st = test_tensor(L, tj, "y_out", true, n, d->y, &yo)) != ENG_OK)
        return st;
    /* x_inv: what the inverse of z gives when that is not x (an inn whose pad outputs are
     * not 0; a layer whose inverse is inexact by design, such as InvAutoFC's transpose) */
    if (k != ENG_KIND_MLP && (st = test_tensor(L, tj, "x_inv", false, n, d->x, &xinv)) != ENG_OK)
        return st;

    struct tvec t = {n, rtol, atol, x, y, z, yo, ld, xinv, NULL};
    if ((st = check(L, m, &t, ws)) != ENG_OK)
        return st;
    return keep(L, m, &t);
}
