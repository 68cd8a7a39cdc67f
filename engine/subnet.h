/*
 * subnet.h — the small networks inside coupling blocks, conditioning networks and `mlp`
 * models, and the activations' scalar helpers.  Implemented in subnet.c.  Not part of the
 * public API.
 *
 * Two kinds, one interface (rows of flat widths dx, dc -> dout):
 *   - MLPs: a chain of Linear layers and activations, run on whole tiles through the
 *     kernels (weights packed at load);
 *   - convolutional subnets on (C, H, W) or (C, L) rows (ldr_subnet_img): conv1d, conv2d,
 *     conv_transpose1d/2d, activations, and linear layers between a flatten and an
 *     unflatten, run on batches of rows (the batch's patch matrix in scratch, one kernel
 *     product per group with packed weights; conv.h).  A row's image is its flat channel-major layout, so [x, c]
 *     concatenated along channels is the flat [x | c].  An image subnet that is a
 *     flatten, an MLP and an unflatten back to the output shape runs as an MLP on the
 *     flat rows (the same numbers: torch's Flatten is the flat layout).
 *
 * Ownership: a subnet is built by ldr_subnet while a model loads; it and every array it
 * points to (layers, weights, packed weights) live in the model's arena, are immutable
 * after load and are freed with the model.  Running a subnet allocates nothing: the caller
 * passes scratch sized by subnet_scratch / subnet_tape.
 *
 * enum act_type (the activations) is defined in kern.h, where the kernels apply them.
 */
#ifndef INNSERVE_SUBNET_H
#define INNSERVE_SUBNET_H

#include <stddef.h>
#include <cjson/cJSON.h>
#include "engine.h"
#include "conv.h"
#include "kern.h"
#include "loader.h"

enum subnet_kind { SUB_LINEAR, SUB_ACT, SUB_CONV, SUB_FLATTEN, SUB_UNFLATTEN };

struct subnet_layer {
    enum subnet_kind kind;
    int is_linear;      /* kind == SUB_LINEAR */
    /* flat widths of the layer's input and output (every kind) */
    int in, out;
    /* linear: out x in weight (row-major), bias (out) or NULL */
    const float *w;
    const float *wp;    /* w packed for the kernels (kern_pack_weight) */
    const float *b;
    /* activation */
    enum act_type act;
    float p1, p2;       /* leaky slope | elu alpha | softplus beta, threshold */
    bool fused;         /* (convolutional subnets) applied inside the preceding product */
    /* convolution: geometry, weight matrix (cout x kg, conv.h), bias (cout) or NULL */
    struct conv_geom g;
    const float *cw;
    const float *cb;
    const float *cwp;   /* per group: cw reordered to conv_weight_hwc's (a, b, ci) and packed
                           for the kernels, group gr at cwp + gr * cwp_stride */
    size_t cwp_stride;
    const char *wname;  /* weight tensor name (messages, certificates) */
    int oc, opos;       /* (convolutional subnets) the output as oc channels of opos positions
                           (a flat output: oc = its width, opos = 1) */
};

/* A subnet maps [x_part (dx), c (dc)] -> out.  The first layer is Linear; its weight is
 * split at load into w_x (H x dx) and w_c (H x dc) so the condition's contribution can be
 * computed once per tile when the condition is one broadcast row. */
struct subnet {
    int dx, dc, dout;
    int n_layers;
    struct subnet_layer *layers;
    const float *w1x, *w1c;    /* first layer split: H x dx and H x dc (row-major) */
    const float *w1xp, *w1cp;  /* the same packed for the kernels */
    const struct kern *k;      /* the model's kernel path */
    int max_width;             /* widest layer output */
    long long n_params;
    /* convolutional subnets (general = true): run per row; layers[0..n_layers) of any kind;
     * the input image has cx + cc channels (x's, then the condition's) */
    bool general;
    int cx, cc;
    int in_rank, in_pos;       /* the input's rank and positions per channel */
    int rb;                    /* rows run together (subnet.c's general_rows) */
    size_t state_max;          /* floats of the widest state (one row) */
    size_t col_max;            /* floats of the largest patch matrix (one row) */
};

/* Parse a subnet description {"layers": [...]} from obj[field] (see
 * docs/checkpoint-format.md): first layer Linear with in = dx + dc, last output dout
 * (dout < 0: any width, read back from (*out)->dout).  *out is owned by the model being
 * loaded. */
enum eng_status ldr_subnet(struct ldr *L, const cJSON *obj, const char *field, int dx, int dc,
                           int dout, const struct subnet **out);

/* A subnet on rows of shape (C, H, W) (rank 3) or (C, L) (rank 2): `spatial` holds the
 * rank - 1 spatial sizes shared by x, the condition and the output; cx, cc and cout are
 * channel counts (cc = 0: no condition).  The first layer sees torch.cat([x, c], 1).
 * Layer shapes are checked against the input shape and the output must be (cout, ...
 * spatial), each failure named by tensor.  rank 1 is ldr_subnet(cx, cc, cout). */
enum eng_status ldr_subnet_img(struct ldr *L, const cJSON *obj, const char *field, int rank,
                               const int *spatial, int cx, int cc, int cout,
                               const struct subnet **out);

/* Floats of scratch subnet_forward needs for `rows` rows. */
size_t subnet_scratch(const struct subnet *s, int rows);
/* out (rows x dout, stride ldo) = s([x, c]).  x: rows x dx (stride ldx; may be NULL when
 * dx == 0).  c: rows x dc with stride ldc, or one row broadcast when ldc == 0, or NULL when
 * dc == 0.  Scratch from subnet_scratch.  No allocation. */
void subnet_forward(const struct subnet *s, int rows, const float *x, int ldx, const float *c,
                    int ldc, float *out, int ldo, float *scratch);
/* Back-propagation to the input (preimage search; MLP subnets without a condition,
 * dc == 0; not for convolutional subnets).
 * subnet_forward_tape is subnet_forward that also records, in `tape` (subnet_tape floats),
 * the input of every activation layer; subnet_backward_input then computes, for each row,
 * gx = (d out / d x)^T gout (rows x dx, stride ldgx) from that tape.  Scratch as for
 * subnet_forward.  No allocation. */
size_t subnet_tape(const struct subnet *s, int rows);
void subnet_forward_tape(const struct subnet *s, int rows, const float *x, int ldx, float *out,
                         int ldo, float *tape, float *scratch);
void subnet_backward_input(const struct subnet *s, int rows, const float *tape, const float *gout,
                           int ldg, float *gx, int ldgx, float *scratch);
/* Certified upper bound on the Lipschitz constant of x -> s([x, c]) for fixed c: the
 * product of the spectral norms of the Linear layers (exact; the x columns of the first)
 * and convolutions (conv_norm2_upper; the x channels of the first) and of the
 * activations' constants.  Load time only (allocates temporaries); +inf on OOM. */
double subnet_lipschitz(const struct subnet *s);

/* ---- Activations (scalar, double) --------------------------------------------------- */

/* The activation applied in double to v[0..n) in place (numeric inverses, i-ResNet
 * blocks). */
void act_apply_f64(enum act_type t, float p1, float p2, double *v, size_t n);
/* Derivative of the activation at pre-activation u (for backprop and Jacobians). */
double act_deriv(enum act_type t, float p1, float p2, double u);
/* Lipschitz constant of the activation (for certificates). */
double act_lipschitz(enum act_type t, float p1, float p2);
/* Static name ("relu", ...); "?" when out of range. */
const char *act_name(enum act_type t);

#endif
