/*
 * npy.c — .npy writer and the strict reader of application/x-npy request bodies (npy.h).
 */
#include "npy.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "npy.c writes host floats as '<f4'");

static int header(char *h, size_t cap, int ndim, const long *shape)
{
    int n = snprintf(h + 10, cap - 10, "{'descr': '<f4', 'fortran_order': False, 'shape': (");
    for (int i = 0; i < ndim; i++)
        n += snprintf(h + 10 + n, cap - 10 - (size_t)n, "%s%ld", i ? ", " : "", shape[i]);
    n += snprintf(h + 10 + n, cap - 10 - (size_t)n, "%s), }", ndim == 1 ? "," : "");
    int total = 10 + n + 1; /* + '\n' */
    int pad = (64 - total % 64) % 64;
    memset(h + 10 + n, ' ', (size_t)pad);
    h[10 + n + pad] = '\n';
    int hlen = n + pad + 1;
    memcpy(h, "\x93NUMPY\x01\x00", 8);
    h[8] = (char)(hlen & 0xff);
    h[9] = (char)(hlen >> 8);
    return 10 + hlen;
}

static size_t count(int ndim, const long *shape)
{
    size_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= (size_t)shape[i];
    return n;
}

size_t proto_npy_size_nd(int ndim, const long *shape)
{
    char h[384];
    return (size_t)header(h, sizeof h, ndim, shape) + sizeof(float) * count(ndim, shape);
}

void proto_write_npy_nd(struct proto_buf *b, const float *v, int ndim, const long *shape)
{
    char h[384];
    int n = header(h, sizeof h, ndim, shape);
    proto_buf_put(b, h, (size_t)n);
    proto_buf_put(b, v, sizeof(float) * count(ndim, shape));
}

size_t proto_npy_size(long d0, long d1, long d2)
{
    long s[3] = {d0, d1, d2};
    return proto_npy_size_nd(3, s);
}

void proto_write_npy_f32(struct proto_buf *b, const float *v, long d0, long d1, long d2)
{
    long s[3] = {d0, d1, d2};
    proto_write_npy_nd(b, v, 3, s);
}

/* ---- reading ------------------------------------------------------------------------------ */

void proto_npy_array_free(struct proto_npy_array *a)
{
    free(a->data);
    memset(a, 0, sizeof *a);
}

/* A cursor over the header text h[0 .. n). */
struct hdr {
    const char *h;
    size_t n, i;
};

static void skip_ws(struct hdr *p)
{
    while (p->i < p->n && (p->h[p->i] == ' ' || p->h[p->i] == '\t'))
        p->i++;
}

static bool eat(struct hdr *p, char c)
{
    skip_ws(p);
    if (p->i < p->n && p->h[p->i] == c) {
        p->i++;
        return true;
    }
    return false;
}

/* A quoted Python string ('...' or "...", no escapes) into out (cap bytes). */
static bool str_lit(struct hdr *p, char *out, size_t cap)
{
    skip_ws(p);
    if (p->i >= p->n || (p->h[p->i] != '\'' && p->h[p->i] != '"'))
        return false;
    char q = p->h[p->i++];
    size_t k = 0;
    while (p->i < p->n && p->h[p->i] != q) {
        if (p->h[p->i] == '\\' || k + 1 >= cap)
            return false;
        out[k++] = p->h[p->i++];
    }
    if (p->i >= p->n)
        return false;
    p->i++;
    out[k] = 0;
    return true;
}

static bool word(struct hdr *p, const char *w)
{
    skip_ws(p);
    size_t n = strlen(w);
    if (p->n - p->i >= n && !memcmp(p->h + p->i, w, n)) {
        p->i += n;
        return true;
    }
    return false;
}

/* "(2, 3)" / "(4,)" / "()" into shape; *nd = -1 when there are more than max entries. */
static bool tuple(struct hdr *p, long *shape, int max, int *nd)
{
    if (!eat(p, '('))
        return false;
    *nd = 0;
    for (;;) {
        skip_ws(p);
        if (eat(p, ')'))
            return true;
        if (p->i >= p->n || p->h[p->i] < '0' || p->h[p->i] > '9')
            return false;
        long v = 0;
        while (p->i < p->n && p->h[p->i] >= '0' && p->h[p->i] <= '9') {
            if (v > (1L << 40))
                return false;
            v = v * 10 + (p->h[p->i++] - '0');
        }
        if (*nd >= 0 && *nd < max)
            shape[*nd] = v;
        *nd = *nd >= 0 && *nd < max ? *nd + 1 : -1;
        if (eat(p, ','))
            continue;
        if (!eat(p, ')'))
            return false;
        return true;
    }
}

/* name[i][j]... of flat index k in an array of shape[0 .. nd) */
static void index_text(char *buf, size_t cap, const char *name, long k, int nd,
                       const long *shape)
{
    long idx[PROTO_NPY_MAX_DIMS];
    for (int d = nd - 1; d >= 0; d--) {
        idx[d] = k % shape[d];
        k /= shape[d];
    }
    size_t n = (size_t)snprintf(buf, cap, "%.32s", name);
    for (int d = 0; d < nd && n < cap; d++)
        n += (size_t)snprintf(buf + n, cap - n, "[%ld]", idx[d]);
}

enum proto_code proto_npy_read(const char *body, size_t len, size_t *off, const char *name,
                               const struct proto_limits *lim, struct proto_npy_array *out,
                               struct proto_error *e)
{
    memset(out, 0, sizeof *out);
    const unsigned char *b = (const unsigned char *)body + *off;
    size_t left = len - *off;
    if (left < 10 || memcmp(b, "\x93NUMPY", 6))
        return proto_errorf(e, PROTO_E_FIELD, "%s: the body is not a .npy array (it must start "
                            "with \\x93NUMPY, as numpy.save writes it)", name);
    unsigned major = b[6], minor = b[7];
    if (major < 1 || major > 3 || minor != 0)
        return proto_errorf(e, PROTO_E_FIELD, "%s: .npy format version %u.%u is not "
                            "supported (1.0, 2.0, 3.0)", name, major, minor);
    size_t hl, start;
    if (major == 1) {
        hl = (size_t)b[8] | (size_t)b[9] << 8;
        start = 10;
    } else {
        if (left < 12)
            return proto_errorf(e, PROTO_E_FIELD, "%s: the .npy header is truncated", name);
        hl = (size_t)b[8] | (size_t)b[9] << 8 | (size_t)b[10] << 16 | (size_t)b[11] << 24;
        start = 12;
    }
    if (hl > PROTO_NPY_MAX_HEADER)
        return proto_errorf(e, PROTO_E_FIELD, "%s: the .npy header is %zu bytes, more than "
                            "the server reads (%d)", name, hl, PROTO_NPY_MAX_HEADER);
    if (hl > left - start)
        return proto_errorf(e, PROTO_E_FIELD, "%s: the .npy header is truncated (%zu bytes "
                            "announced, %zu present)", name, hl, left - start);
    struct hdr p = {(const char *)b + start, hl, 0};
    for (size_t i = 0; i < hl; i++)
        if ((unsigned char)p.h[i] >= 0x80 || (p.h[i] < 0x20 && p.h[i] != '\n'))
            return proto_errorf(e, PROTO_E_FIELD, "%s: the .npy header holds a byte that is "
                                "not printable ASCII (offset %zu)", name, start + i);
    char key[32], descr[16] = "";
    int fortran = -1, nd = -2;
    long shape[PROTO_NPY_MAX_DIMS];
    bool ok = eat(&p, '{');
    while (ok && !eat(&p, '}')) {
        if (!str_lit(&p, key, sizeof key) || !eat(&p, ':')) {
            ok = false;
            break;
        }
        bool dup = false;
        if (!strcmp(key, "descr")) {
            dup = descr[0] != 0;
            ok = str_lit(&p, descr, sizeof descr) && descr[0];
        } else if (!strcmp(key, "fortran_order")) {
            dup = fortran >= 0;
            fortran = word(&p, "True") ? 1 : word(&p, "False") ? 0 : -1;
            ok = fortran >= 0;
        } else if (!strcmp(key, "shape")) {
            dup = nd != -2;
            ok = tuple(&p, shape, PROTO_NPY_MAX_DIMS, &nd);
        } else {
            return proto_errorf(e, PROTO_E_FIELD, "%s: the .npy header has the key '%s'; "
                                "only 'descr', 'fortran_order' and 'shape' are read", name, key);
        }
        if (dup)
            return proto_errorf(e, PROTO_E_FIELD, "%s: the .npy header gives '%s' twice", name,
                                key);
        if (ok && !eat(&p, ',')) {
            ok = eat(&p, '}');
            break;
        }
    }
    skip_ws(&p);
    while (ok && p.i < p.n && (p.h[p.i] == ' ' || p.h[p.i] == '\n'))
        p.i++;
    if (!ok || p.i != p.n)
        return proto_errorf(e, PROTO_E_FIELD, "%s: the .npy header is not a dict of 'descr', "
                            "'fortran_order' and 'shape' (error near header byte %zu)", name,
                            p.i);
    if (!descr[0] || fortran < 0 || nd == -2)
        return proto_errorf(e, PROTO_E_FIELD, "%s: the .npy header lacks '%s'", name,
                            !descr[0] ? "descr" : fortran < 0 ? "fortran_order" : "shape");
    int item = !strcmp(descr, "<f4") ? 4 : !strcmp(descr, "<f8") ? 8 : 0;
    if (!item)
        return proto_errorf(e, PROTO_E_FIELD, "%s: dtype '%s' is not accepted; send "
                            "little-endian float32 or float64 ('<f4' or '<f8', "
                            "x.astype(np.float32))", name, descr);
    if (fortran)
        return proto_errorf(e, PROTO_E_FIELD, "%s: a Fortran-order array is not accepted; send "
                            "it in C order (np.ascontiguousarray)", name);
    if (nd < 1)
        return proto_errorf(e, PROTO_E_SHAPE, "%s: the array has %s dimensions; 1 to %d are "
                            "read", name, nd == 0 ? "0" : "too many", PROTO_NPY_MAX_DIMS);
    long count = 1;
    for (int d = 0; d < nd; d++) {
        if (shape[d] < 1)
            return proto_errorf(e, PROTO_E_SHAPE, "%s is empty (dimension %d is 0)", name, d);
        if (shape[d] > lim->max_elements || count * shape[d] > lim->max_elements)
            return proto_errorf(e, PROTO_E_TOO_LARGE, "%s has more values than the limit of %ld "
                                "per tensor (--max-elements)", name, lim->max_elements);
        count *= shape[d];
    }
    size_t data_off = start + hl, need = (size_t)count * (size_t)item;
    if (left - data_off < need)
        return proto_errorf(e, PROTO_E_SHAPE, "%s: the array's data is truncated: its shape "
                            "needs %zu bytes, %zu follow the header", name, need,
                            left - data_off);
    float *v = malloc(sizeof(float) * (size_t)count);
    if (!v)
        return proto_errorf(e, PROTO_E_NOMEM, "out of memory reading %s", name);
    const unsigned char *src = b + data_off;
    for (long k = 0; k < count; k++) {
        double d;
        if (item == 4) {
            float f;
            memcpy(&f, src + 4 * k, 4);
            d = f;
            v[k] = f;
        } else {
            memcpy(&d, src + 8 * k, 8);
            v[k] = (float)d;
        }
        if (!isfinite(d) || !isfinite(v[k])) {
            char at[160];
            index_text(at, sizeof at, name, k, nd, shape);
            free(v);
            if (isfinite(d))
                return proto_errorf(e, PROTO_E_NONFINITE, "%s = %g is outside the float32 "
                                    "range (|v| <= 3.4028235e38)", at, d);
            return proto_errorf(e, PROTO_E_NONFINITE, "%s is not a finite number", at);
        }
    }
    out->ndim = nd;
    memcpy(out->shape, shape, sizeof(long) * (size_t)nd);
    out->count = count;
    out->data = v;
    *off += data_off + need;
    return PROTO_OK;
}
