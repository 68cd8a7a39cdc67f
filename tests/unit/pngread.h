/*
 * pngread.h — a strict reader of the PNGs innserve writes, for tests: it checks the
 * signature, every chunk's CRC-32 (computed bit by bit here, independently of proto/png.c),
 * IHDR, the zlib header, the stored deflate blocks (LEN / NLEN), the Adler-32 and IEND, and
 * returns the pixels.  Only 8-bit gray or RGB, filter 0, stored blocks: anything else is a
 * failure (the writer under test makes nothing else).  Header-only.
 */
#ifndef INNSERVE_PNGREAD_H
#define INNSERVE_PNGREAD_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static inline uint32_t pr_crc(const uint8_t *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0xedb88320u : c >> 1;
    }
    return c ^ 0xffffffffu;
}

static inline uint32_t pr_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Decodes png[0..n); on success returns the pixels (malloc'd, width*height*ch bytes) and
 * fills the sizes; on failure NULL with why[0..255] saying what. */
static inline uint8_t *pr_read(const uint8_t *png, size_t n, long *width, long *height,
                               int *ch, char *why)
{
    static const uint8_t SIG[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    uint8_t *z = NULL, *px = NULL;
    size_t zl = 0;
    long w = 0, h = 0;
    int c = 0;
    bool end = false;
    if (n < 8 || memcmp(png, SIG, 8)) {
        snprintf(why, 256, "no PNG signature");
        return NULL;
    }
    size_t off = 8;
    while (off < n && !end) {
        if (off + 12 > n) {
            snprintf(why, 256, "truncated chunk at %zu", off);
            goto fail;
        }
        uint32_t len = pr_be32(png + off);
        if (off + 12 + len > n) {
            snprintf(why, 256, "chunk at %zu runs past the end", off);
            goto fail;
        }
        const uint8_t *type = png + off + 4, *data = png + off + 8;
        if (pr_crc(type, 4 + (size_t)len) != pr_be32(data + len)) {
            snprintf(why, 256, "bad CRC in chunk %.4s", (const char *)type);
            goto fail;
        }
        if (!memcmp(type, "IHDR", 4)) {
            if (len != 13 || data[8] != 8 || (data[9] != 0 && data[9] != 2) || data[10] ||
                data[11] || data[12]) {
                snprintf(why, 256, "unexpected IHDR");
                goto fail;
            }
            w = pr_be32(data);
            h = pr_be32(data + 4);
            c = data[9] == 2 ? 3 : 1;
        } else if (!memcmp(type, "IDAT", 4)) {
            uint8_t *nz = realloc(z, zl + len + 1);
            if (!nz)
                goto fail;
            z = nz;
            memcpy(z + zl, data, len);
            zl += len;
        } else if (!memcmp(type, "IEND", 4)) {
            end = true;
        } else {
            snprintf(why, 256, "unexpected chunk %.4s", (const char *)type);
            goto fail;
        }
        off += 12 + (size_t)len;
    }
    if (!end || off != n || !w || !h) {
        snprintf(why, 256, "no IEND at the end, or no IHDR");
        goto fail;
    }
    if (zl < 6 || z[0] != 0x78 || ((z[0] << 8) | z[1]) % 31) {
        snprintf(why, 256, "bad zlib header");
        goto fail;
    }
    size_t row = 1 + (size_t)w * c, raw = (size_t)h * row;
    uint8_t *r = malloc(raw ? raw : 1);
    if (!r)
        goto fail;
    size_t zo = 2, ro = 0;
    int final = 0;
    while (!final) {
        if (zo + 5 > zl || (z[zo] & 0x6)) {
            snprintf(why, 256, "not a stored block at %zu", zo);
            free(r);
            goto fail;
        }
        final = z[zo] & 1;
        unsigned bl = z[zo + 1] | z[zo + 2] << 8, nl = z[zo + 3] | z[zo + 4] << 8;
        if ((bl ^ 0xffffu) != nl || zo + 5 + bl > zl || ro + bl > raw) {
            snprintf(why, 256, "bad stored block at %zu", zo);
            free(r);
            goto fail;
        }
        memcpy(r + ro, z + zo + 5, bl);
        ro += bl;
        zo += 5 + bl;
    }
    uint32_t a = 1, b = 0;
    for (size_t i = 0; i < ro; i++) {
        a = (a + r[i]) % 65521u;
        b = (b + a) % 65521u;
    }
    if (ro != raw || zo + 4 != zl || pr_be32(z + zo) != (b << 16 | a)) {
        snprintf(why, 256, "data length or Adler-32 wrong");
        free(r);
        goto fail;
    }
    px = malloc(raw);
    for (long y = 0; px && y < h; y++) {
        if (r[(size_t)y * row] != 0) {
            snprintf(why, 256, "row %ld has filter %d", y, r[(size_t)y * row]);
            free(r);
            free(px);
            px = NULL;
            goto fail;
        }
        memcpy(px + (size_t)y * (row - 1), r + (size_t)y * row + 1, row - 1);
    }
    free(r);
    free(z);
    *width = w;
    *height = h;
    *ch = c;
    return px;
fail:
    free(z);
    return NULL;
}

#endif
