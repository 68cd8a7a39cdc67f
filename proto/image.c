/*
 * image.c — shapes of image and signal rows on the wire, and bits per dimension (image.h).
 */
#include "image.h"

#include <math.h>
#include <stdio.h>

/* The row shape rank/dims when it is one of `width` values, else the vector {width}: a
 * shape that does not hold exactly the row's values (a latent made of several outputs) is
 * never used to read or write a row. */
static struct proto_shape row_shape(int rank, const int *dims, int width)
{
    struct proto_shape s = {1, {width, 1, 1}};
    if (rank > 1 && rank <= 3) {
        long n = 1;
        for (int i = 0; i < rank; i++)
            n *= dims[i] > 0 ? dims[i] : 0;
        if (n != width)
            return s;
        s.rank = rank;
        for (int i = 0; i < 3; i++)
            s.dim[i] = i < rank ? dims[i] : 1;
    }
    return s;
}

struct proto_shape proto_shape_x(const struct eng_info *info)
{
    return row_shape(info->x_rank, info->x_shape, info->dims.x);
}

struct proto_shape proto_shape_z(const struct eng_info *info)
{
    return row_shape(info->z_rank, info->z_shape, info->dims.z);
}

long proto_shape_count(const struct proto_shape *s)
{
    long n = 1;
    for (int i = 0; i < s->rank; i++)
        n *= s->dim[i];
    return n;
}

void proto_shape_str(const struct proto_shape *s, char *buf, size_t cap)
{
    size_t k = 0;
    if (cap == 0)
        return;
    buf[0] = 0;
    for (int i = 0; i < s->rank && k < cap; i++) {
        int n = snprintf(buf + k, cap - k, "%s%d", i ? ", " : "[", s->dim[i]);
        if (n < 0)
            return;
        k += (size_t)n;
    }
    if (k + 1 < cap) {
        buf[k] = ']';
        buf[k + 1] = 0;
    }
}

/* One level of a nested array: dims[0] entries of the tensor below it. */
static void level(struct proto_buf *b, const float *v, int rank, const long *dims, long stride)
{
    proto_buf_putc(b, '[');
    if (rank == 1) {
        proto_buf_f32_list(b, v, (size_t)dims[0]);
    } else {
        long inner = stride / (dims[0] ? dims[0] : 1);
        for (long i = 0; i < dims[0] && !proto_buf_failed(b); i++) {
            if (i)
                proto_buf_putc(b, ',');
            level(b, v + (size_t)i * (size_t)inner, rank - 1, dims + 1, inner);
        }
    }
    proto_buf_putc(b, ']');
}

void proto_write_f32_tensor(struct proto_buf *b, const float *v, int rank, const long *dims)
{
    long n = 1;
    for (int i = 0; i < rank; i++)
        n *= dims[i];
    level(b, v, rank, dims, n);
}

void proto_write_f32_shaped(struct proto_buf *b, const float *v, int nlead, const long *lead,
                            const struct proto_shape *s)
{
    long dims[5];
    int r = 0;
    for (int i = 0; i < nlead && i < 2; i++)
        dims[r++] = lead[i];
    for (int i = 0; i < s->rank; i++)
        dims[r++] = s->dim[i];
    proto_write_f32_tensor(b, v, r, dims);
}

const char *proto_shape_column(const struct proto_shape *s, long j, char *buf, size_t cap)
{
    if (s->rank == 3) {
        long hw = (long)s->dim[1] * s->dim[2];
        snprintf(buf, cap, "c%ld_h%ld_w%ld", j / hw, j % hw / s->dim[2], j % s->dim[2]);
        return buf;
    }
    if (s->rank == 2) {
        snprintf(buf, cap, "c%ld_l%ld", j / s->dim[1], j % s->dim[1]);
        return buf;
    }
    return NULL;
}

bool proto_has_bits_per_dim(const struct eng_info *info)
{
    return info->x_rank > 1 || info->has_image;
}

double proto_bin_width(const struct eng_info *info)
{
    if (info->has_image && info->image_levels > 0)
        return (info->image_high - info->image_low) / info->image_levels;
    return 1.0;
}

double proto_bits_per_dim(const struct eng_info *info, double lp)
{
    double D = info->dims.x > 0 ? info->dims.x : 1;
    return -(lp + D * log(proto_bin_width(info))) / (D * M_LN2);
}
