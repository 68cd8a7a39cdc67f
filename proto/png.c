/*
 * png.c — PNG writer with stored deflate blocks, and the sample grid (png.h).
 *
 * Layout (PNG 1.2, RFC 1950/1951): signature; IHDR (width, height, bit depth 8, color
 * type 0 gray or 2 RGB, deflate, filter method 0, no interlace); one IDAT holding a zlib
 * stream (CMF 0x78, FLG 0x01, then stored blocks of at most 65535 bytes: a header byte
 * with BFINAL and BTYPE 00, LEN and its one's complement NLEN, the bytes; then the
 * Adler-32 of the uncompressed data, big-endian) whose data are the scanlines, each a
 * filter byte 0 (None) and the pixels; IEND.  Every chunk ends with the CRC-32 of its type
 * and data.
 */
#include "png.h"
#include "image.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define STORED_MAX 65535u
#define ADLER_MOD 65521u
#define ADLER_NMAX 5552u /* bytes summed before a reduction cannot overflow 32 bits */

/* CRC-32 (polynomial 0xEDB88320, reflected) four bits at a time. */
static const uint32_t CRC_NIBBLE[16] = {
    0x00000000u, 0x1db71064u, 0x3b6e20c8u, 0x26d930acu, 0x76dc4190u, 0x6b6b51f4u,
    0x4db26158u, 0x5005713cu, 0xedb88320u, 0xf00f9344u, 0xd6d6a3e8u, 0xcb61b38cu,
    0x9b64c2b0u, 0x86d3d2d4u, 0xa00ae278u, 0xbdbdf21cu};

static uint32_t crc_update(uint32_t c, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        c = (c >> 4) ^ CRC_NIBBLE[c & 15];
        c = (c >> 4) ^ CRC_NIBBLE[c & 15];
    }
    return c;
}

/* The IDAT writer: chunk bytes go to b with their CRC; zlib data through the blocks. */
struct png_w {
    struct proto_buf *b;
    uint32_t crc;           /* running, pre-inverted */
    uint32_t a1, a2;        /* Adler-32 halves */
    size_t left_total;      /* uncompressed bytes still to come */
    size_t left_block;      /* of the current stored block */
};

static void put(struct png_w *w, const void *p, size_t n)
{
    w->crc = crc_update(w->crc, p, n);
    proto_buf_put(w->b, p, n);
}

static void be32(uint8_t *o, uint32_t v)
{
    o[0] = (uint8_t)(v >> 24);
    o[1] = (uint8_t)(v >> 16);
    o[2] = (uint8_t)(v >> 8);
    o[3] = (uint8_t)v;
}

static void chunk_begin(struct png_w *w, const char *type, uint32_t len)
{
    uint8_t h[4];
    be32(h, len);
    proto_buf_put(w->b, h, 4);
    w->crc = 0xffffffffu;
    put(w, type, 4);
}

static void chunk_end(struct png_w *w)
{
    uint8_t c[4];
    be32(c, w->crc ^ 0xffffffffu);
    proto_buf_put(w->b, c, 4);
}

static void adler(struct png_w *w, const uint8_t *p, size_t n)
{
    while (n) {
        size_t k = n < ADLER_NMAX ? n : ADLER_NMAX;
        for (size_t i = 0; i < k; i++) {
            w->a1 += p[i];
            w->a2 += w->a1;
        }
        w->a1 %= ADLER_MOD;
        w->a2 %= ADLER_MOD;
        p += k;
        n -= k;
    }
}

/* Uncompressed bytes into the zlib stream, opening stored blocks as needed. */
static void z_put(struct png_w *w, const uint8_t *p, size_t n)
{
    while (n && !proto_buf_failed(w->b)) {
        if (!w->left_block) {
            size_t len = w->left_total < STORED_MAX ? w->left_total : STORED_MAX;
            uint8_t h[5] = {(uint8_t)(len == w->left_total), (uint8_t)(len & 0xff),
                            (uint8_t)(len >> 8), (uint8_t)(~len & 0xff),
                            (uint8_t)((~len >> 8) & 0xff)};
            put(w, h, 5);
            w->left_block = len;
        }
        size_t k = n < w->left_block ? n : w->left_block;
        adler(w, p, k);
        put(w, p, k);
        p += k;
        n -= k;
        w->left_block -= k;
        w->left_total -= k;
    }
}

static size_t raw_size(long width, long height, int ch)
{
    return (size_t)height * (1 + (size_t)width * (size_t)ch);
}

static size_t zlib_size(size_t raw)
{
    size_t blocks = (raw + STORED_MAX - 1) / STORED_MAX;
    return 2 + raw + 5 * (blocks ? blocks : 1) + 4;
}

size_t proto_png_size(long width, long height, int ch)
{
    /* signature, IHDR (12 + 13), IDAT (12 + zlib), IEND (12) */
    return 8 + 25 + 12 + zlib_size(raw_size(width, height, ch)) + 12;
}

/* Signature, IHDR and the IDAT chunk's start; then the caller feeds the scanlines. */
static void png_begin(struct png_w *w, struct proto_buf *b, long width, long height, int ch)
{
    memset(w, 0, sizeof *w);
    w->b = b;
    w->a1 = 1;
    proto_buf_put(b, "\x89PNG\r\n\x1a\n", 8);
    uint8_t ih[13];
    be32(ih, (uint32_t)width);
    be32(ih + 4, (uint32_t)height);
    ih[8] = 8;                          /* bit depth */
    ih[9] = ch == 3 ? 2 : 0;            /* color type: RGB or gray */
    ih[10] = ih[11] = ih[12] = 0;       /* deflate, adaptive filtering, no interlace */
    chunk_begin(w, "IHDR", 13);
    put(w, ih, 13);
    chunk_end(w);
    size_t raw = raw_size(width, height, ch);
    chunk_begin(w, "IDAT", (uint32_t)zlib_size(raw));
    static const uint8_t zh[2] = {0x78, 0x01}; /* deflate, 32K window; (0x7801 % 31) == 0 */
    put(w, zh, 2);
    w->left_total = raw;
}

static void png_end(struct png_w *w)
{
    uint8_t a[4];
    be32(a, (w->a2 << 16) | w->a1);
    put(w, a, 4);
    chunk_end(w);
    chunk_begin(w, "IEND", 0);
    chunk_end(w);
}

void proto_write_png(struct proto_buf *b, const uint8_t *px, long width, long height, int ch)
{
    struct png_w w;
    png_begin(&w, b, width, height, ch);
    static const uint8_t filter = 0;
    size_t row = (size_t)width * (size_t)ch;
    for (long y = 0; y < height && !proto_buf_failed(b); y++) {
        z_put(&w, &filter, 1);
        z_put(&w, px + (size_t)y * row, row);
    }
    png_end(&w);
}

void proto_png_grid_dims(long n_obs, long n_samples, int H, int W, int scale, long *width,
                         long *height)
{
    *width = n_samples * (long)W * scale + (n_samples - 1) * PROTO_PNG_GAP;
    *height = n_obs * (long)H * scale + (n_obs - 1) * PROTO_PNG_GAP;
}

static uint8_t level(float v, double low, double span)
{
    double q = floor(((double)v - low) / span * 255.0 + 0.5);
    if (!(q > 0)) /* also NaN */
        return 0;
    return q > 255 ? 255 : (uint8_t)q;
}

void proto_write_png_grid(struct proto_buf *b, const struct eng_info *info,
                          const struct proto_result *r, const struct proto_png_opts *o)
{
    struct proto_shape xs = proto_shape_x(info);
    const int C = xs.dim[0], H = xs.dim[1], W = xs.dim[2];
    const int ch = C == 3 ? 3 : 1, s = o->scale > 0 ? o->scale : 1;
    const long N = r->num_samples, D = info->dims.x;
    long width, height;
    proto_png_grid_dims(r->n, N, H, W, s, &width, &height);
    size_t row = 1 + (size_t)width * ch;
    uint8_t *line = malloc(row);
    if (!line) {
        b->state = PROTO_BUF_NOMEM;
        return;
    }
    struct png_w w;
    png_begin(&w, b, width, height, ch);
    const double span = o->high - o->low;
    const long tile_h = (long)H * s + PROTO_PNG_GAP, tile_w = (long)W * s + PROTO_PNG_GAP;
    for (long y = 0; y < height && !proto_buf_failed(b); y++) {
        long obs = y / tile_h, ty = y % tile_h;
        line[0] = 0; /* filter: None */
        if (ty >= (long)H * s) {
            memset(line + 1, PROTO_PNG_GAP_VALUE, row - 1);
        } else {
            long py = ty / s;
            uint8_t *p = line + 1;
            for (long x = 0; x < width; x++, p += ch) {
                long smp = x / tile_w, tx = x % tile_w;
                if (tx >= (long)W * s) {
                    memset(p, PROTO_PNG_GAP_VALUE, (size_t)ch);
                    continue;
                }
                const float *v = r->samples + ((size_t)obs * N + smp) * D + py * W + tx / s;
                for (int c = 0; c < ch; c++)
                    p[c] = level(v[(size_t)c * H * W], o->low, span);
            }
        }
        z_put(&w, line, row);
    }
    png_end(&w);
    free(line);
}
