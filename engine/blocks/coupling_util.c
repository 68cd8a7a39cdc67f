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
#include <string.h>
#include "coupling.h"

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

enum eng_status cpl_load_split(struct ldr *L, const cJSON *j, int d, int lo, int hi, int *l1)
{
    int def = coupling_default_split(d);
    if (hi < lo)
        return ldr_fail(L, ENG_ERR_MANIFEST,
                        "split: width d = %d is too small for this block (no split leaves "
                        "both halves non-empty)", d);
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(j, "split");
    if (!f || cJSON_IsNull(f)) {
        if (def < lo || def > hi)
            return ldr_fail(L, ENG_ERR_MANIFEST,
                            "split: the default round(d/2) = %d for d = %d is outside [%d, %d]; "
                            "give \"split\" explicitly", def, d, lo, hi);
        *l1 = def;
        return ENG_OK;
    }
    long v = 0;
    enum eng_status st = ldr_int(L, j, "split", true, def, lo, hi, &v);
    if (st != ENG_OK)
        return st;
    *l1 = (int)v;
    return ENG_OK;
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

void cpl_clamp_cols(enum clamp_act act, float clamp, float *a, int n, int l, int lda)
{
    /* The switch is outside; inside each case clamp_apply's switch folds to one branch. */
    switch (act) {
    case CLAMP_TANH:
        for (int i = 0; i < n; i++) {
            float *s = a + (size_t)i * lda;
            for (int j = 0; j < l; j++)
                s[j] = clamp_apply(CLAMP_TANH, clamp, s[j]);
        }
        break;
    case CLAMP_SIGMOID:
        for (int i = 0; i < n; i++) {
            float *s = a + (size_t)i * lda;
            for (int j = 0; j < l; j++)
                s[j] = clamp_apply(CLAMP_SIGMOID, clamp, s[j]);
        }
        break;
    case CLAMP_ATAN:
    default:
        for (int i = 0; i < n; i++) {
            float *s = a + (size_t)i * lda;
            for (int j = 0; j < l; j++)
                s[j] = clamp_apply(CLAMP_ATAN, clamp, s[j]);
        }
        break;
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

void cpl_affine_fwd(float *x, int ldx, const float *a, int lda, int n, int l, double *log_det)
{
    for (int i = 0; i < n; i++) {
        float *xi = x + (size_t)i * ldx;
        const float *s = a + (size_t)i * lda;
        const float *t = s + l;
        double sum = 0.0;
        for (int j = 0; j < l; j++) {
            xi[j] = xi[j] * expf(s[j]) + t[j];
            sum += s[j];
        }
        if (log_det)
            log_det[i] += sum;
    }
}

void cpl_affine_inv(float *x, int ldx, const float *a, int lda, int n, int l, double *log_det)
{
    for (int i = 0; i < n; i++) {
        float *xi = x + (size_t)i * ldx;
        const float *s = a + (size_t)i * lda;
        const float *t = s + l;
        double sum = 0.0;
        for (int j = 0; j < l; j++) {
            xi[j] = (xi[j] - t[j]) * expf(-s[j]);
            sum += s[j];
        }
        if (log_det)
            log_det[i] -= sum;
    }
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
