/*
 * conv.h — the convolution operators of convolutional subnets (torch's Conv1d, Conv2d,
 * ConvTranspose1d, ConvTranspose2d): the geometry, the patch (im2col) gather that turns
 * a convolution into one matrix product per group through the engine's kernels, the
 * exact operator and its adjoint in double (certificates), and a certified upper bound on
 * the operator's spectral norm.  Implemented in conv.c.  Not part of the public API.
 *
 * Layouts: a sample's flat row is channel-major, (c, h, w) at c*H*W + h*W + w (torch
 * contiguous), which the double-precision operator reads; the float32 subnets hold their
 * batches channels last (conv_patches).  A 1-D convolution is the 2-D one with H = 1.  The
 * weight matrix is cout x kg, row-major, kg = (cin / groups) * kh * kw in the order
 * (ci, a, b): the torch weight itself for a convolution, and for a transposed convolution
 * the torch weight (cin, cout / groups, kh, kw) rearranged at load (conv_weight_matrix);
 * the float32 kernels read it reordered to (a, b, ci) (conv_weight_hwc) and packed.
 *
 * Every function here is pure (no state, no allocation) except conv_norm2_upper, which
 * runs at load time only and allocates its temporaries.
 */
#ifndef INNSERVE_CONV_H
#define INNSERVE_CONV_H

#include <stdbool.h>
#include <stddef.h>

struct conv_geom {
    bool transposed;        /* ConvTranspose */
    bool circular;          /* padding_mode 'circular' (convolutions only) */
    int cin, cout, groups;
    int ih, iw, oh, ow;     /* input and output spatial size (ih = oh = 1 for 1-D) */
    int kh, kw, sh, sw, dh, dw;
    int pt, pb, pl, pr;     /* padding top, bottom, left, right (torch's 'same' may pad one
                               more at the bottom/right; transposed: pt = pb and pl = pr
                               are torch's padding, output_padding only enlarges oh, ow) */
    int kg;                 /* (cin / groups) * kh * kw: columns of the weight matrix */
};

/* Fill the derived fields (oh, ow, kg) from the others; returns false (with nothing
 * written to oh/ow) when the output would be empty.  For transposed convolutions opad_h
 * and opad_w are torch's output_padding; 0 otherwise. */
bool conv_geom_finish(struct conv_geom *g, int opad_h, int opad_w);

/* Floats of the patch matrix of one sample (oh*ow rows of groups*kg values); 0 when the
 * convolution reads its input directly (conv_direct). */
size_t conv_col_floats(const struct conv_geom *g);
/* A 1x1 convolution with stride 1 and no padding: the input itself is the matrix the
 * product reads (no gather). */
bool conv_direct(const struct conv_geom *g);

/* The patch ("im2col") matrix of R samples held channels-last: channel ci of position q
 * of sample r at src[(r*ih*iw + q)*cin + ci].  dst gets R*oh*ow rows (sample-major, then
 * output position), row stride ldp, each the groups*kg input values the output position
 * reads: group by group, within a group in the order (a, b, ci_local) of
 * conv_weight_hwc's weights.  Padding reads 0 (or wraps, circular).  Then one product per
 * group, patches (R*oh*ow x kg) times the weight's transpose, gives the output channels
 * last, as the next convolution reads them. */
void conv_patches(const struct conv_geom *g, int R, const float *src, float *dst, size_t ldp);
/* The cout x kg weight matrix in (ci, a, b) order (conv_weight_matrix's) reordered to
 * (a, b, ci) within each row, the order of conv_patches. */
void conv_weight_hwc(const struct conv_geom *g, const float *w, float *dst);

/* The torch weight of a transposed convolution (cin, cout/groups, kh, kw) as the cout x kg
 * matrix the product reads; a plain convolution's weight is already that matrix. */
void conv_weight_matrix(const struct conv_geom *g, const float *torch_w, float *dst);

/* Double-precision operator without bias: y (cout x oh*ow) = A x, and the adjoint
 * x (cin x ih*iw) = A^T y.  w is the cout x kg matrix. */
void conv_apply_f64(const struct conv_geom *g, const double *w, const double *x, double *y);
/* The operator's exact (cout*oh*ow x cx*ih*iw) matrix, row-major, on the input channels
 * [0, cx): column j is conv_apply_f64 of the j-th unit vector, bit for bit (each entry the
 * sum, in apply order, of the weights whose taps land on it), filled by index from the
 * weights without applying the convolution. */
void conv_dense_f64(const struct conv_geom *g, const double *w, int cx, double *M);
void conv_adjoint_f64(const struct conv_geom *g, const double *w, const double *y, double *x);

/* Spectral norm of the operator x -> A x restricted to the input channels [0, cx) (the x
 * part of a subnet's first layer; cx = cin for the whole operator).  Returns a certified
 * upper bound and stores in *lower a lower bound from power iteration on the exact
 * operator, and in *method a static description of how the bound was obtained:
 *   - the explicit (cout*oh*ow x cx*ih*iw) matrix when its smaller side is at most
 *     CONV_DENSE_MAX: la_norm2_upper (Jacobi singular values or the Gram iteration);
 *   - circular padding, stride 1, output size = input size: the exact norm, the largest
 *     over the ih x iw 2-D DFT frequencies of the per-frequency cout x cin matrix's
 *     spectral norm (each by complex one-sided Jacobi, with la_norm2_upper's margin for its
 *     real 2x2-block form; la_norm2_upper of that form when it is above LA_JACOBI_MAX);
 *   - zero padding: the same DFT maximum on the enlarged grid (ih + pt + pb) x (iw + pl +
 *     pr), where the circular operator contains the zero-padded one (rows restricted,
 *     input zero-extended) so its norm is an upper bound; stride > 1 only drops rows
 *     (norm <= the stride-1 one), and a transposed convolution is the adjoint of such a
 *     convolution (same norm).
 *   - when a DFT bound exceeds the power-iteration lower bound by more than CONV_REFINE
 *     (relative: zero padding on a small grid makes it loose) and the explicit matrix has
 *     at most CONV_REFINE_MAX on its smaller side and 2^22 entries, la_norm2_upper of the
 *     explicit matrix too (the Gram iteration above LA_JACOBI_MAX, stopped once within
 *     CONV_REFINE_TOL of the lower bound), and the smaller of the two rigorous bounds.
 * The power iteration runs 300 steps (40 on operators of over 5e6 multiply-adds) or to a
 * relative change of 1e-13.  Load time only; allocates temporaries; returns +inf on OOM. */
#define CONV_DENSE_MAX 384
#define CONV_REFINE 0.01
#define CONV_REFINE_MAX 1024
#define CONV_REFINE_TOL 1e-4
double conv_norm2_upper(const struct conv_geom *g, const float *w, int cx, double *lower,
                        const char **method);

#endif
