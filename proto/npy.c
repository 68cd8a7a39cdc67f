/*
 * npy.c — .npy writer (npy.h).
 */
#include "npy.h"

#include <stdio.h>
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
