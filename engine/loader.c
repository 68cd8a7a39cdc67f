/*
 * loader.c — the ldr_* functions of loader.h: read manifest fields and tensors with full
 * validation, converting tensors to f32 (or f64) copies owned by the model's arena, and
 * write one message per failure naming the file, the manifest path and the tensor.
 */
#include "loader.h"

#include "la.h"
#include "model_impl.h"
#include "safetensors.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct arena_chunk {
    struct arena_chunk *next;
    max_align_t data[];
};

void arena_free(struct arena_chunk *a)
{
    while (a) {
        struct arena_chunk *n = a->next;
        free(a);
        a = n;
    }
}

const struct kern *ldr_kern(const struct ldr *L) { return L->k; }

void *ldr_alloc(struct ldr *L, size_t bytes)
{
    struct arena_chunk *c = calloc(1, sizeof(*c) + (bytes ? bytes : 1) + 64);
    if (!c) {
        ldr_fail(L, ENG_ERR_NOMEM, "out of memory (%zu bytes)", bytes);
        return NULL;
    }
    c->next = *L->arena;
    *L->arena = c;
    /* 64-byte aligned (the slack above): a vector load of packed weights never spans two
     * cache lines */
    uintptr_t p = ((uintptr_t)c->data + 63) & ~(uintptr_t)63;
    return (void *)p;
}

enum eng_status ldr_fail(struct ldr *L, enum eng_status st, const char *fmt, ...)
{
    if (L->err[0] == '\0') { /* keep the first (innermost) message */
        int k = snprintf(L->err, ENG_ERR_LEN, "%s: %s%s", L->path, L->ctx,
                         L->ctx_len ? ": " : "");
        if (k < 0 || k >= ENG_ERR_LEN)
            k = ENG_ERR_LEN - 1;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(L->err + k, ENG_ERR_LEN - (size_t)k, fmt, ap);
        va_end(ap);
    }
    return st;
}

size_t ldr_push(struct ldr *L, const char *fmt, ...)
{
    size_t mark = L->ctx_len;
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(L->ctx + mark, sizeof(L->ctx) - mark, fmt, ap);
    va_end(ap);
    if (k > 0)
        L->ctx_len = mark + (size_t)k < sizeof(L->ctx) ? mark + (size_t)k : sizeof(L->ctx) - 1;
    return mark;
}

void ldr_pop(struct ldr *L, size_t mark)
{
    L->ctx_len = mark;
    L->ctx[mark] = '\0';
}

static const cJSON *field_of(const cJSON *obj, const char *field)
{
    const cJSON *v = cJSON_IsObject(obj) ? cJSON_GetObjectItemCaseSensitive(obj, field) : NULL;
    return cJSON_IsNull(v) ? NULL : v;
}

enum eng_status ldr_num(struct ldr *L, const cJSON *obj, const char *field, bool required,
                        double def, double *out)
{
    const cJSON *v = field_of(obj, field);
    if (!v) {
        if (required)
            return ldr_fail(L, ENG_ERR_MANIFEST, "field '%s' is missing", field);
        *out = def;
        return ENG_OK;
    }
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return ldr_fail(L, ENG_ERR_MANIFEST, "field '%s' must be a finite number", field);
    *out = v->valuedouble;
    return ENG_OK;
}

enum eng_status ldr_int(struct ldr *L, const cJSON *obj, const char *field, bool required,
                        long def, long lo, long hi, long *out)
{
    const cJSON *v = field_of(obj, field);
    if (!v) {
        if (required)
            return ldr_fail(L, ENG_ERR_MANIFEST, "field '%s' is missing", field);
        *out = def;
        return ENG_OK;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble))
        return ldr_fail(L, ENG_ERR_MANIFEST, "field '%s' must be an integer", field);
    if (v->valuedouble < (double)lo || v->valuedouble > (double)hi)
        return ldr_fail(L, ENG_ERR_MANIFEST, "field '%s' = %g is out of range [%ld, %ld]",
                        field, v->valuedouble, lo, hi);
    *out = (long)v->valuedouble;
    return ENG_OK;
}

enum eng_status ldr_bool(struct ldr *L, const cJSON *obj, const char *field, bool required,
                         bool def, bool *out)
{
    const cJSON *v = field_of(obj, field);
    if (!v) {
        if (required)
            return ldr_fail(L, ENG_ERR_MANIFEST, "field '%s' is missing", field);
        *out = def;
        return ENG_OK;
    }
    if (!cJSON_IsBool(v))
        return ldr_fail(L, ENG_ERR_MANIFEST, "field '%s' must be true or false", field);
    *out = cJSON_IsTrue(v);
    return ENG_OK;
}

enum eng_status ldr_enum(struct ldr *L, const cJSON *obj, const char *field, bool required,
                         int def, const char *const *choices, int n, int *out)
{
    const cJSON *v = field_of(obj, field);
    if (!v) {
        if (required)
            return ldr_fail(L, ENG_ERR_MANIFEST, "field '%s' is missing", field);
        *out = def;
        return ENG_OK;
    }
    if (cJSON_IsString(v))
        for (int i = 0; i < n; i++)
            if (strcmp(v->valuestring, choices[i]) == 0) {
                *out = i;
                return ENG_OK;
            }
    char list[256] = "";
    size_t k = 0;
    for (int i = 0; i < n && k < sizeof(list); i++) {
        int w = snprintf(list + k, sizeof(list) - k, "%s%s", i ? ", " : "", choices[i]);
        if (w < 0)
            break;
        k += (size_t)w;
    }
    if (cJSON_IsString(v))
        return ldr_fail(L, ENG_ERR_MANIFEST, "field '%s' = \"%.40s\" is not one of: %s", field,
                        v->valuestring, list);
    return ldr_fail(L, ENG_ERR_MANIFEST, "field '%s' must be a string, one of: %s", field,
                    list);
}

enum eng_status ldr_obj(struct ldr *L, const cJSON *obj, const char *field, bool required,
                        const cJSON **out)
{
    const cJSON *v = field_of(obj, field);
    *out = NULL;
    if (!v)
        return required ? ldr_fail(L, ENG_ERR_MANIFEST, "field '%s' is missing", field) : ENG_OK;
    if (!cJSON_IsObject(v))
        return ldr_fail(L, ENG_ERR_MANIFEST, "field '%s' must be an object", field);
    *out = v;
    return ENG_OK;
}

static void count_params(struct ldr *L, const struct st_tensor *t)
{
    int idx = (int)(t - st_at(L->f, 0));
    if (!L->used[idx]) {
        L->used[idx] = 1;
        L->n_params += t->numel;
    }
}

enum eng_status ldr_raw(struct ldr *L, const cJSON *obj, const char *field,
                        const struct st_tensor **out)
{
    *out = NULL;
    const cJSON *v = field_of(obj, field);
    if (!v)
        return ldr_fail(L, ENG_ERR_MANIFEST, "field '%s' (a tensor name) is missing", field);
    if (!cJSON_IsString(v))
        return ldr_fail(L, ENG_ERR_MANIFEST, "field '%s' must be a tensor name (string)", field);
    const struct st_tensor *t = st_find(L->f, v->valuestring);
    if (!t)
        return ldr_fail(L, ENG_ERR_TENSOR, "field '%s': tensor '%.100s' is not in the file", field,
                        v->valuestring);
    count_params(L, t);
    *out = t;
    return ENG_OK;
}

static void shape_str(char *buf, size_t n, int ndim, const int64_t *shape)
{
    size_t k = 0;
    k += (size_t)snprintf(buf, n, "(");
    for (int i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < n)
        snprintf(buf + k, n - k, "%s)", ndim == 1 ? "," : "");
}

static int is_float(enum st_dtype d)
{
    return d == ST_F32 || d == ST_F64 || d == ST_F16 || d == ST_BF16;
}

/* Fetch and check a float tensor; shape check unless ndim < 0 (then numel check). */
static enum eng_status get_float(struct ldr *L, const cJSON *obj, const char *field,
                                 bool required, int ndim, const int64_t *shape, int64_t numel,
                                 const struct st_tensor **out)
{
    *out = NULL;
    if (!field_of(obj, field) && !required)
        return ENG_OK;
    const struct st_tensor *t;
    enum eng_status st = ldr_raw(L, obj, field, &t);
    if (st != ENG_OK)
        return st;
    if (!is_float(t->dtype))
        return ldr_fail(L, ENG_ERR_TENSOR, "tensor '%s' (field '%s') has dtype %s, expected a "
                        "float dtype (F32, F64, F16, BF16)", t->name, field,
                        st_dtype_str(t->dtype));
    int ok = 1;
    if (ndim >= 0) {
        ok = t->ndim == ndim;
        for (int i = 0; ok && i < ndim; i++)
            ok = shape[i] < 0 || shape[i] == t->shape[i];
    } else {
        ok = t->numel == numel;
    }
    if (!ok) {
        char got[96], want[96];
        shape_str(got, sizeof(got), t->ndim, t->shape);
        if (ndim >= 0) {
            shape_str(want, sizeof(want), ndim, shape);
            for (char *p = want; *p; p++)
                if (*p == '-' && p[1] == '1')
                    p[0] = '*', memmove(p + 1, p + 2, strlen(p + 2) + 1);
        } else {
            snprintf(want, sizeof(want), "%lld elements", (long long)numel);
        }
        return ldr_fail(L, ENG_ERR_TENSOR, "tensor '%s' (field '%s') has shape %s, expected %s",
                        t->name, field, got, want);
    }
    for (int64_t i = 0; i < t->numel; i++) {
        double v = st_get(t, i);
        if (!isfinite(v) || (t->dtype != ST_F32 && fabs(v) > 3.4e38))
            return ldr_fail(L, ENG_ERR_TENSOR, "tensor '%s' (field '%s') is not finite at "
                            "element %lld (%g)", t->name, field, (long long)i, v);
    }
    *out = t;
    return ENG_OK;
}

static enum eng_status to_f32(struct ldr *L, const struct st_tensor *t, const float **out)
{
    float *p = ldr_alloc(L, sizeof(float) * (size_t)(t->numel ? t->numel : 1));
    if (!p)
        return ENG_ERR_NOMEM;
    if (t->dtype == ST_F32)
        memcpy(p, t->data, t->nbytes);
    else
        for (int64_t i = 0; i < t->numel; i++)
            p[i] = (float)st_get(t, i);
    *out = p;
    return ENG_OK;
}

enum eng_status ldr_tensor(struct ldr *L, const cJSON *obj, const char *field, bool required,
                           int ndim, const int64_t *shape, const float **out)
{
    const struct st_tensor *t;
    *out = NULL;
    enum eng_status st = get_float(L, obj, field, required, ndim, shape, 0, &t);
    if (st != ENG_OK || !t)
        return st;
    return to_f32(L, t, out);
}

enum eng_status ldr_linear(struct ldr *L, const cJSON *obj, const char *field, int out, int in,
                           const float **w, const float **bias)
{
    const cJSON *lj;
    enum eng_status st = ldr_obj(L, obj, field, true, &lj);
    if (st != ENG_OK)
        return st;
    size_t mark = ldr_push(L, ".%s", field);
    int64_t shp[2] = {out, in}, bs[1] = {out};
    if ((st = ldr_tensor(L, lj, "weight", true, 2, shp, w)) == ENG_OK)
        st = ldr_tensor(L, lj, "bias", false, 1, bs, bias);
    ldr_pop(L, mark);
    return st;
}

enum eng_status ldr_made_linear(struct ldr *L, const cJSON *obj, const char *field, int out,
                                int in, const int *dout, const int *din, bool strict,
                                const float **w, const float **mask, const float **bias)
{
    const cJSON *lj;
    enum eng_status st = ldr_obj(L, obj, field, true, &lj);
    if (st != ENG_OK)
        return st;
    size_t mark = ldr_push(L, ".%s", field);
    const float *m;
    int64_t shp[2] = {out, in}, bs[1] = {out};
    if ((st = ldr_tensor(L, lj, "weight", true, 2, shp, w)) != ENG_OK ||
        (st = ldr_tensor(L, lj, "mask", true, 2, shp, &m)) != ENG_OK ||
        (st = ldr_tensor(L, lj, "bias", false, 1, bs, bias)) != ENG_OK)
        goto out;
    for (int o = 0; o < out; o++)
        for (int i = 0; i < in; i++) {
            bool keep = strict ? dout[o] > din[i] : dout[o] >= din[i];
            float mv = m[(size_t)o * in + i];
            if (mv != (keep ? 1.0f : 0.0f)) {
                st = ldr_fail(L, ENG_ERR_TENSOR,
                              "tensor '%s' (field 'mask') is not the MADE mask of its degrees: "
                              "element [%d][%d] is %g, the degrees give %d (output degree %d, "
                              "input degree %d)",
                              ldr_tensor_name(lj, "mask"), o, i, (double)mv, keep ? 1 : 0,
                              dout[o], din[i]);
                goto out;
            }
        }
    *mask = m;
out:
    ldr_pop(L, mark);
    return st;
}

enum eng_status ldr_tensor_numel(struct ldr *L, const cJSON *obj, const char *field,
                                 bool required, int64_t numel, const float **out)
{
    const struct st_tensor *t;
    *out = NULL;
    enum eng_status st = get_float(L, obj, field, required, -1, NULL, numel, &t);
    if (st != ENG_OK || !t)
        return st;
    return to_f32(L, t, out);
}

enum eng_status ldr_tensor_f64(struct ldr *L, const cJSON *obj, const char *field,
                               bool required, int ndim, const int64_t *shape,
                               const double **out)
{
    const struct st_tensor *t;
    *out = NULL;
    enum eng_status st = get_float(L, obj, field, required, ndim, shape, 0, &t);
    if (st != ENG_OK || !t)
        return st;
    double *p = ldr_alloc(L, sizeof(double) * (size_t)(t->numel ? t->numel : 1));
    if (!p)
        return ENG_ERR_NOMEM;
    for (int64_t i = 0; i < t->numel; i++)
        p[i] = st_get(t, i);
    *out = p;
    return ENG_OK;
}

enum eng_status ldr_perm(struct ldr *L, const cJSON *obj, const char *field, int n,
                         const int32_t **out)
{
    *out = NULL;
    const struct st_tensor *t;
    enum eng_status st = ldr_raw(L, obj, field, &t);
    if (st != ENG_OK)
        return st;
    int32_t *p = ldr_alloc(L, sizeof(int32_t) * (size_t)(n ? n : 1));
    unsigned char *seen = ldr_alloc(L, (size_t)(n ? n : 1));
    if (!p || !seen)
        return ENG_ERR_NOMEM;
    if (t->ndim == 1 && t->shape[0] == n && !is_float(t->dtype) && t->dtype != ST_BOOL) {
        for (int i = 0; i < n; i++) {
            double v = st_get(t, i);
            if (!(v >= 0 && v < n))
                return ldr_fail(L, ENG_ERR_TENSOR, "tensor '%s' (field '%s') is not a "
                                "permutation of 0..%d: entry %d is %g", t->name, field, n - 1, i,
                                v);
            p[i] = (int32_t)v;
        }
    } else if (t->ndim == 2 && t->shape[0] == n && t->shape[1] == n && is_float(t->dtype)) {
        /* PyPI 0.2 AllInOneBlock: one-hot rows, w[i, perm[i]] = 1. */
        for (int i = 0; i < n; i++) {
            int one = -1;
            for (int j = 0; j < n; j++) {
                double v = st_get(t, (int64_t)i * n + j);
                if (v == 1.0 && one < 0)
                    one = j;
                else if (v != 0.0) {
                    one = -2;
                    break;
                }
            }
            if (one < 0)
                return ldr_fail(L, ENG_ERR_TENSOR, "tensor '%s' (field '%s') is not a one-hot "
                                "permutation matrix: row %d", t->name, field, i);
            p[i] = one;
        }
    } else {
        char got[96];
        shape_str(got, sizeof(got), t->ndim, t->shape);
        return ldr_fail(L, ENG_ERR_TENSOR, "tensor '%s' (field '%s') must be an integer vector "
                        "(%d,) or a one-hot float matrix (%d, %d), got %s %s", t->name, field, n,
                        n, n, st_dtype_str(t->dtype), got);
    }
    for (int i = 0; i < n; i++) {
        if (seen[p[i]])
            return ldr_fail(L, ENG_ERR_TENSOR, "tensor '%s' (field '%s') is not a permutation: "
                            "index %d appears twice", t->name, field, p[i]);
        seen[p[i]] = 1;
    }
    *out = p;
    return ENG_OK;
}

const char *ldr_tensor_name(const cJSON *obj, const char *field)
{
    const cJSON *f = cJSON_IsObject(obj) ? cJSON_GetObjectItemCaseSensitive(obj, field) : NULL;
    return cJSON_IsString(f) && f->valuestring ? f->valuestring : field;
}

enum eng_status ldr_invertible(struct ldr *L, const cJSON *obj, const char *field, int d,
                               const double **m, const double **inv, double *logabsdet)
{
    const int64_t shape[2] = {d, d};
    enum eng_status st = ldr_tensor_f64(L, obj, field, true, 2, shape, m);
    if (st != ENG_OK)
        return st;
    size_t dd = (size_t)d * d;
    double *out = ldr_alloc(L, sizeof(double) * dd);
    double *lu = malloc(sizeof(double) * dd * 2);
    int *piv = malloc(sizeof(int) * (size_t)(d ? d : 1));
    if (!out || !lu || !piv) {
        free(lu), free(piv);
        return ldr_fail(L, ENG_ERR_NOMEM, "out of memory inverting tensor '%s' (%d x %d)",
                        ldr_tensor_name(obj, field), d, d);
    }
    double *work = lu + dd;
    memcpy(lu, *m, sizeof(double) * dd);
    int bad = la_lu(d, lu, piv) != 0;
    double logdet = bad ? 0.0 : la_lu_logabsdet(d, lu);
    bad = bad || !isfinite(logdet) || la_inverse(d, *m, out, work, piv) != 0;
    for (size_t i = 0; !bad && i < dd; i++)
        bad = !isfinite(out[i]) || fabs(out[i]) > 3e38;
    free(lu), free(piv);
    if (bad)
        return ldr_fail(L, ENG_ERR_TENSOR, "tensor '%s' (field '%s', %d x %d) is singular",
                        ldr_tensor_name(obj, field), field, d, d);
    *inv = out;
    *logabsdet = logdet;
    return ENG_OK;
}
