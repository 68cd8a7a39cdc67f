/*
 * npy.h — posterior samples as a NumPy .npy file (Accept: application/x-npy): format
 * version 1.0, dtype '<f4', C order, shape (n_obs, num_samples, dims.x), or (n_obs,
 * num_samples, C, H, W) for an image model.  Only the samples travel in this format.
 */
#ifndef INNSERVE_PROTO_NPY_H
#define INNSERVE_PROTO_NPY_H

#include <stddef.h>
#include "response.h"

/* Most dimensions of an array read or written here: samples of an image model are
 * (n_obs, num_samples, C, H, W). */
#define PROTO_NPY_MAX_DIMS 5

/* Exact size in bytes of the .npy file for this shape. */
size_t proto_npy_size(long d0, long d1, long d2);
/* Header (magic, version, length, dict padded to 64 bytes) + raw little-endian float32. */
void proto_write_npy_f32(struct proto_buf *b, const float *v, long d0, long d1, long d2);
/* The same for any shape of 1 .. PROTO_NPY_MAX_DIMS dimensions. */
size_t proto_npy_size_nd(int ndim, const long *shape);
void proto_write_npy_nd(struct proto_buf *b, const float *v, int ndim, const long *shape);

#endif
