/*
 * image.h — image and signal models on the wire: the per-row shape of x and z (a model's
 * manifest "shape", eng_info x_shape / z_shape), nested JSON arrays of that shape
 * ([B, C, H, W], [B, C, L]; samples [n_obs, num_samples, C, H, W]), CSV column names of a
 * shaped row (c0_h3_w5, c0_l3), the shape text of messages, and bits per dimension.
 *
 * A row is shaped when its rank is above 1; vector models (rank 1) keep their rows of
 * dims values everywhere.
 */
#ifndef INNSERVE_PROTO_IMAGE_H
#define INNSERVE_PROTO_IMAGE_H

#include <stdbool.h>
#include <stddef.h>

#include "../engine/engine.h"
#include "buf.h"

/* The shape of one row: rank 1 to 3, dim[0 .. rank) in C order. A value. */
struct proto_shape {
    int rank;
    int dim[3];
};

/* x's row shape: info->x_shape when x_rank > 1 and it holds exactly dims.x values, else
 * {dims.x}. */
struct proto_shape proto_shape_x(const struct eng_info *info);
/* z's row shape: info->z_shape when z_rank > 1 and it holds exactly dims.z values, else
 * {dims.z} (a latent concatenated from several outputs is a vector). */
struct proto_shape proto_shape_z(const struct eng_info *info);
/* Number of values in a row of shape s. */
long proto_shape_count(const struct proto_shape *s);
/* "[3, 8, 8]" into buf (cap >= 40 holds every shape). */
void proto_shape_str(const struct proto_shape *s, char *buf, size_t cap);

/* Writes the float32 tensor v of the given rank (1..8) and dims as nested JSON arrays,
 * row-major: rank 1 "[a,b]", rank 2 "[[a,b],[c,d]]", ... */
void proto_write_f32_tensor(struct proto_buf *b, const float *v, int rank, const long *dims);
/* n rows of shape s after the leading dims lead[0 .. nlead) (nlead <= 2): the tensor
 * [lead..., s...].  Rank-1 rows give the usual [[...], ...] arrays. */
void proto_write_f32_shaped(struct proto_buf *b, const float *v, int nlead, const long *lead,
                            const struct proto_shape *s);

/* CSV column name of value j of a row of shape s: "c0_h3_w5" (rank 3), "c0_l3" (rank 2);
 * NULL for rank 1 (the model's names are used).  buf: >= 48 bytes. */
const char *proto_shape_column(const struct proto_shape *s, long j, char *buf, size_t cap);

/* True when log_prob answers carry bits per dimension: an image or signal model (x_rank >
 * 1, or a manifest "image" object). */
bool proto_has_bits_per_dim(const struct eng_info *info);
/* The bin width Delta of one pixel value in x's units: (image_high - image_low) /
 * image_levels with a manifest "image" object, else 1. */
double proto_bin_width(const struct eng_info *info);
/* Bits per dimension of a log-density lp of x (nats, in x's units):
 * -(lp + D log Delta) / (D ln 2), D = dims.x; +inf when lp is -inf. */
double proto_bits_per_dim(const struct eng_info *info, double lp);

#endif
