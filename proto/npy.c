/*
 * npy.c — .npy writer (npy.h).
 */
#include "npy.h"

#include <stdio.h>
#include <string.h>

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "npy.c writes host floats as '<f4'");

static int header(char *h, size_t cap, long d0, long d1, long d2)
{
    int n = snprintf(h + 10, cap - 10, "{'descr': '<f4', 'fortran_order': False, 'shape': "
                     "(%ld, %ld, %ld), }", d0, d1, d2);
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

size_t proto_npy_size(long d0, long d1, long d2)
{
    char h[256];
    return (size_t)header(h, sizeof h, d0, d1, d2) + sizeof(float) * (size_t)d0 * d1 * d2;
}

void proto_write_npy_f32(struct proto_buf *b, const float *v, long d0, long d1, long d2)
{
    char h[256];
    int n = header(h, sizeof h, d0, d1, d2);
    proto_buf_put(b, h, (size_t)n);
    proto_buf_put(b, v, sizeof(float) * (size_t)d0 * d1 * d2);
}
