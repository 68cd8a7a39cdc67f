/*
 * png.h — PNG images written without a compression library: 8-bit grayscale or RGB,
 * the pixel rows in zlib "stored" (uncompressed) deflate blocks, with the zlib Adler-32
 * and the PNG chunk CRC-32 computed here.  About one byte per channel and pixel.
 *
 * The grid of a sample answer (format=png, docs/api.md): one row of tiles per
 * observation, num_samples tiles per row, each tile one sample of an image model (x's
 * shape [C, H, W] with C = 1: gray, C = 3: RGB), values mapped from [low, high] to 0..255
 * (rounded, clamped), each pixel repeated scale x scale times, PROTO_PNG_GAP pixels of
 * PROTO_PNG_GAP_VALUE between tiles.
 */
#ifndef INNSERVE_PROTO_PNG_H
#define INNSERVE_PROTO_PNG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "response.h"

#define PROTO_PNG_GAP       2     /* pixels between tiles (not scaled) */
#define PROTO_PNG_GAP_VALUE 128   /* their gray level */

/* Exact size in bytes of the PNG of a width x height image with ch channels (1 or 3). */
size_t proto_png_size(long width, long height, int ch);
/* Writes a PNG of width x height pixels, ch (1 or 3) bytes each, row-major in px.  On an
 * allocation failure b's state says so. */
void proto_write_png(struct proto_buf *b, const uint8_t *px, long width, long height, int ch);

/* The size of the grid of n_obs x n_samples tiles of H x W pixels each scaled by scale. */
void proto_png_grid_dims(long n_obs, long n_samples, int H, int W, int scale, long *width,
                         long *height);
/* The grid of r's samples (r->n observations x r->num_samples) of a model whose x has
 * shape [C, H, W] (proto_shape_x; C 1 or 3 and the size: the caller checks,
 * proto_answer_check). */
void proto_write_png_grid(struct proto_buf *b, const struct eng_info *info,
                          const struct proto_result *r, const struct proto_png_opts *o);

#endif
