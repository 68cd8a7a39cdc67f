/*
 * coupling_util.c — pieces shared by the coupling-family blocks (coupling.c, allinone.c,
 * spline.c): FrEIA's default split, the manifest fields every coupling block has
 * (split, clamp, clamp_activation), and the elementwise kernels of affine and
 * additive couplings.  See coupling.h for the layouts.
 *
 * The kernels are plain loops over rows and columns with the activation switch hoisted
 * out of them, so the compiler can vectorize the inner loop; log-dets are summed per row
 * in double.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "coupling.h"
#include "../block.h"
#include "../kern.h"
#include "../loader.h"

/* Python's round(0.5 * d) (round half to even), as FrEIA computes the default split_len:
 * even d -> d/2; odd d = 2k+1 -> k if k is even, else k+1.  d = 1, 3, 5, 7 -> 0, 2, 2, 4. */
int coupling_default_split(int d)
{
    if (d <= 0)
        return 0;
    int k = d / 2;
    if (d % 2 == 0)
        return k;
    return (k % 2 == 0) ? k : k + 1;
}

int cpl_channels(const struct blk *b)
{
    return b->rank > 1 ? b->shape[0] : b->d;
}

enum eng_status cpl_load_split(struct ldr *L, const cJSON *j, const struct blk *b, int lo,
                               int hi, int *l1)
{
    const int C = cpl_channels(b), P = b->d / C;
    int def = coupling_default_split(C);
    if (hi < lo)
        return ldr_fail(L, ENG_ERR_MANIFEST,
                        "split: %s %d is too small for this block (no split leaves "
                        "both halves non-empty)", P > 1 ? "the channel count" : "width d =", C);
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(j, "split");
    if (!f || cJSON_IsNull(f)) {
        if (def < lo || def > hi)
            return ldr_fail(L, ENG_ERR_MANIFEST,
                            "split: the default round(%s/2) = %d for %s = %d is outside [%d, %d]; "
                            "give \"split\" explicitly", P > 1 ? "C" : "d", def,
                            P > 1 ? "C" : "d", C, lo, hi);
        *l1 = def * P;
        return ENG_OK;
    }
    long v = 0;
    enum eng_status st = ldr_int(L, j, "split", true, (long)def * P, (long)lo * P, (long)hi * P, &v);
    if (st != ENG_OK)
        return st;
    if (v % P != 0)
        return ldr_fail(L, ENG_ERR_MANIFEST, "split: %ld is not a whole number of channels (a "
                        "multiple of the %d positions per channel)", v, P);
    *l1 = (int)v;
    return ENG_OK;
}

enum eng_status cpl_subnet(struct ldr *L, const struct blk *b, const cJSON *j,
                           const char *field, int dx, int dout, const struct subnet **out)
{
    if (b->rank <= 1)
        return ldr_subnet(L, j, field, dx, b->cw, dout, out);
    const int P = b->d / b->shape[0];
    int cc = 0;
    if (b->cw > 0) {
        bool ok = b->c_rank == b->rank;
        for (int k = 1; ok && k < b->rank; k++)
            ok = b->c_shape[k] == b->shape[k];
        if (!ok) {
            char cs[48], xs[48];
            if (b->c_rank == 1)
                snprintf(cs, sizeof(cs), "a vector of %d", b->cw);
            else if (b->c_rank == 2)
                snprintf(cs, sizeof(cs), "(%d, %d)", b->c_shape[0], b->c_shape[1]);
            else
                snprintf(cs, sizeof(cs), "(%d, %d, %d)", b->c_shape[0], b->c_shape[1],
                         b->c_shape[2]);
            if (b->rank == 2)
                snprintf(xs, sizeof(xs), "(%d)", b->shape[1]);
            else
                snprintf(xs, sizeof(xs), "(%d, %d)", b->shape[1], b->shape[2]);
            return ldr_fail(L, ENG_ERR_MANIFEST, "cond: the condition is %s; a subnet on image "
                            "rows concatenates it along channels, so it must have the block "
                            "input's positions %s (a vector condition needs "
                            "conditions[k].broadcast)", cs, xs);
        }
        cc = b->c_shape[0];
    }
    return ldr_subnet_img(L, j, field, b->rank, b->shape + 1, dx / P, cc, dout / P, out);
}

enum eng_status cpl_load_clamp(struct ldr *L, const cJSON *j, float *clamp, enum clamp_act *act)
{
    static const char *const names[] = {"ATAN", "TANH", "SIGMOID"};
    double c = 2.0;
    enum eng_status st = ldr_num(L, j, "clamp", false, 2.0, &c);
    if (st != ENG_OK)
        return st;
    if (!isfinite(c) || fabs(c) > 1e6)
        return ldr_fail(L, ENG_ERR_MANIFEST, "clamp: %g is not a finite number of sane size", c);
    int a = CLAMP_ATAN;
    st = ldr_enum(L, j, "clamp_activation", false, CLAMP_ATAN, names, 3, &a);
    if (st != ENG_OK)
        return st;
    *clamp = (float)c;
    *act = (enum clamp_act)a;
    return ENG_OK;
}

/* ---- elementwise kernels ---------------------------------------------------------------- */

/* Elementwise functions run on CPL_CHUNK values per kernel call: columns of several rows
 * are gathered into one buffer so a call is not made per row of a few values. */
#define CPL_CHUNK 256

void cpl_map_cols(const struct kern *k, enum kern_fn f, float *a, int n, int l, int lda)
{
    float buf[CPL_CHUNK];
    if (l <= 0)
        return;
    if (l > CPL_CHUNK) {
        for (int i = 0; i < n; i++)
            k->map(f, a + (size_t)i * lda, (size_t)l);
        return;
    }
    const int per = CPL_CHUNK / l;
    for (int i0 = 0; i0 < n; i0 += per) {
        int rows = n - i0 < per ? n - i0 : per;
        for (int i = 0; i < rows; i++)
            memcpy(buf + (size_t)i * l, a + (size_t)(i0 + i) * lda, sizeof(float) * (size_t)l);
        k->map(f, buf, (size_t)rows * l);
        for (int i = 0; i < rows; i++)
            memcpy(a + (size_t)(i0 + i) * lda, buf + (size_t)i * l, sizeof(float) * (size_t)l);
    }
}

void cpl_clamp_cols(const struct kern *k, enum clamp_act act, float clamp, float *a, int n,
                    int l, int lda)
{
    const enum kern_fn f = act == CLAMP_TANH ? KF_TANH : act == CLAMP_SIGMOID ? KF_SIGMOID : KF_ATAN;
    const float c = act == CLAMP_TANH ? clamp : act == CLAMP_SIGMOID ? clamp * 2.0f : clamp * 0.636f;
    cpl_map_cols(k, f, a, n, l, lda);
    for (int i = 0; i < n; i++) {
        float *s = a + (size_t)i * lda;
        if (act == CLAMP_SIGMOID)
            for (int j = 0; j < l; j++)
                s[j] = c * (s[j] - 0.5f);
        else
            for (int j = 0; j < l; j++)
                s[j] = c * s[j];
    }
}

void cpl_center_cols(float *a, int n, int l, int lda)
{
    if (l <= 0)
        return;
    for (int i = 0; i < n; i++) {
        float *s = a + (size_t)i * lda;
        double sum = 0.0;
        for (int j = 0; j < l; j++)
            sum += s[j];
        float mean = (float)(sum / l);
        for (int j = 0; j < l; j++)
            s[j] -= mean;
    }
}

void cpl_center_channels(float *a, int n, int C, int P, int lda)
{
    if (P == 1) {
        cpl_center_cols(a, n, C, lda);
        return;
    }
    if (C <= 0)
        return;
    for (int i = 0; i < n; i++) {
        float *s = a + (size_t)i * lda;
        for (int q = 0; q < P; q++) {
            double sum = 0.0;
            for (int c = 0; c < C; c++)
                sum += s[(size_t)c * P + q];
            float mean = (float)(sum / C);
            for (int c = 0; c < C; c++)
                s[(size_t)c * P + q] -= mean;
        }
    }
}

/* e (rows x l) = exp(sign * s) for the rows i0 .. i0+rows of a */
static void exp_rows(const struct kern *k, const float *a, int lda, int i0, int rows, int l,
                     float sign, float *e)
{
    for (int i = 0; i < rows; i++) {
        const float *s = a + (size_t)(i0 + i) * lda;
        for (int j = 0; j < l; j++)
            e[(size_t)i * l + j] = sign * s[j];
    }
    k->map(KF_EXP, e, (size_t)rows * l);
}

/* Rows per chunk (l <= CPL_CHUNK) or columns per chunk (l > CPL_CHUNK, one row). */
static void affine(const struct kern *k, float *x, int ldx, const float *a, int lda, int n,
                   int l, double *log_det, bool inv)
{
    float e[CPL_CHUNK];
    for (int i = 0; i < n && l > CPL_CHUNK; i++) { /* wide rows: one row, CPL_CHUNK at a time */
        float *xi = x + (size_t)i * ldx;
        const float *s = a + (size_t)i * lda, *t = s + l;
        double sum = 0.0;
        for (int j0 = 0; j0 < l; j0 += CPL_CHUNK) {
            int m = l - j0 < CPL_CHUNK ? l - j0 : CPL_CHUNK;
            exp_rows(k, s + j0, 0, 0, 1, m, inv ? -1.0f : 1.0f, e);
            for (int j = 0; j < m; j++) {
                xi[j0 + j] = inv ? (xi[j0 + j] - t[j0 + j]) * e[j] : xi[j0 + j] * e[j] + t[j0 + j];
                sum += s[j0 + j];
            }
        }
        if (log_det)
            log_det[i] += inv ? -sum : sum;
    }
    if (l > CPL_CHUNK || l <= 0)
        return;
    const int per = CPL_CHUNK / l;
    for (int i0 = 0; i0 < n; i0 += per) {
        int rows = n - i0 < per ? n - i0 : per;
        exp_rows(k, a, lda, i0, rows, l, inv ? -1.0f : 1.0f, e);
        for (int i = 0; i < rows; i++) {
            float *xi = x + (size_t)(i0 + i) * ldx;
            const float *s = a + (size_t)(i0 + i) * lda, *t = s + l, *ei = e + (size_t)i * l;
            double sum = 0.0;
            if (inv)
                for (int j = 0; j < l; j++) {
                    xi[j] = (xi[j] - t[j]) * ei[j];
                    sum += s[j];
                }
            else
                for (int j = 0; j < l; j++) {
                    xi[j] = xi[j] * ei[j] + t[j];
                    sum += s[j];
                }
            if (log_det)
                log_det[i0 + i] += inv ? -sum : sum;
        }
    }
}

void cpl_affine_fwd(const struct kern *k, float *x, int ldx, const float *a, int lda, int n,
                    int l, double *log_det)
{
    affine(k, x, ldx, a, lda, n, l, log_det, false);
}

void cpl_affine_inv(const struct kern *k, float *x, int ldx, const float *a, int lda, int n,
                    int l, double *log_det)
{
    affine(k, x, ldx, a, lda, n, l, log_det, true);
}

void cpl_add(float *x, int ldx, const float *a, int lda, int n, int l, float sign)
{
    for (int i = 0; i < n; i++) {
        float *xi = x + (size_t)i * ldx;
        const float *ai = a + (size_t)i * lda;
        for (int j = 0; j < l; j++)
            xi[j] += sign * ai[j];
    }
}
