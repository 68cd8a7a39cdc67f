/*
 * npy.h — NumPy .npy arrays: request bodies read (Content-Type: application/x-npy,
 * docs/api.md) and posterior samples written as a .npy file (Accept: application/x-npy): format
 * version 1.0, dtype '<f4', C order, shape (n_obs, num_samples, dims.x), or (n_obs,
 * num_samples, C, H, W) for an image model.  Only the samples travel in this format.
 */
#ifndef INNSERVE_PROTO_NPY_H
#define INNSERVE_PROTO_NPY_H

#include <stddef.h>
#include "errors.h"
#include "limits.h"
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

/* One array read from an application/x-npy request body. */
struct proto_npy_array {
    int ndim;                          /* 1 .. PROTO_NPY_MAX_DIMS */
    long shape[PROTO_NPY_MAX_DIMS];
    long count;                        /* prod(shape) >= 1 */
    float *data;                       /* owned (free()), count values, C order */
};

/* Reads the .npy array that starts at body[*off] (body holds len bytes) and advances *off
 * past its data (arrays may follow each other, as np.save writes them one after another to
 * one file).  Accepted: format version 1.0, 2.0 or 3.0; a header dict with exactly the keys
 * 'descr' ('<f4' or '<f8'; '|' or '=' byte orders are not accepted), 'fortran_order'
 * (False) and 'shape' (1 to PROTO_NPY_MAX_DIMS dimensions, each >= 1), at most
 * PROTO_NPY_MAX_HEADER bytes; all prod(shape) values present, finite and within float32
 * (float64 values are rounded to float32), prod(shape) <= lim->max_elements (413).  name
 * names the array in messages ("x: dtype '>f4' is not accepted ...", "x[0][2][3][1] is not a
 * finite number").  On failure nothing is owned and e says why. */
enum proto_code proto_npy_read(const char *body, size_t len, size_t *off, const char *name,
                               const struct proto_limits *lim, struct proto_npy_array *out,
                               struct proto_error *e);
void proto_npy_array_free(struct proto_npy_array *a);

#endif
