/*
 * spline.h — FrEIA's binned spline per coordinate (splines/binned.py with
 * rational_quadratic.py or linear.py): the configuration, its loading and the transform of
 * a run of coordinates; and the two-sided coupling through such splines.  Shared by the
 * RationalQuadraticSpline coupling (spline.c) and the blocks of binned.c
 * (ElementwiseRationalQuadraticSpline, LinearSpline).  Implemented in spline.c.  Internal
 * to engine/blocks/.
 *
 * Raw parameters per coordinate, K bins, in this order (FrEIA's BinnedSplineBase):
 *     affine tails   widths K | heights K | bottom 1 | left 1   (+ deltas K - 1)
 *     identity tails widths K | heights K | total_width 1      (+ deltas K - 1)
 * the deltas for the rational-quadratic spline only, so P = 2K + 2 or 2K + 1 (+ K - 1).
 *
 * Constraints (all per coordinate, in double):
 *   affine:   w_k = min_w + rqs_softplus(raw_w_k + log(e^(w0 - min_w) - 1)), w0 = (r - l)/K,
 *             h_k likewise, left = raw_left + l, bottom = raw_bottom + b; with
 *             domain_clamping D the widths and left scale by D tanh(W/D)/W (W = sum w),
 *             heights and bottom by the same ratio of H = sum h.
 *   identity: tw = (r - l) rqs_softplus(raw_tw + log(e - 1)) [-> D tanh(tw/D)],
 *             left = bottom = -tw/2, w = tw softmax(raw_w), h = tw softmax(raw_h).
 *   scale = sum h / sum w (the tail slope), shift = bottom - scale * left; rational-
 *   quadratic derivatives d_0 = d_K = scale, interior rqs_softplus(raw_delta + log(e - 1)).
 *   knots x_0 = left, x_k = left + cumsum(w); y_k likewise.
 *
 * Inside (x_0, x_K] (inverse (y_0, y_K]) the bin k with x_k < x <= x_{k+1}:
 *   linear:             y = s_k x + (y_k - s_k x_k), s_k = dy/dx, log-det log dy - log dx
 *   rational-quadratic: Durkan et al.'s map; the inverse solves the quadratic with the
 *       numerically stable root xi = 2C / (-B - sqrt(B^2 - 4AC)); a discriminant below 0
 *       (rounding) is taken as 0 and xi is clamped to [0, 1], so bin edges never give NaN.
 * Outside, the affine tail y = scale x + shift (log-det log scale).
 *
 * Per coordinate, with no state: the same bits whatever the rows beside it.  The caller
 * supplies the work area (spl_work_floats); nothing is allocated.
 */
#ifndef INNSERVE_BLOCKS_SPLINE_H
#define INNSERVE_BLOCKS_SPLINE_H

#include <stdbool.h>
#include <stddef.h>
#include <cjson/cJSON.h>
#include "../block.h"
#include "../engine.h"
#include "../loader.h"

#define SPL_MAX_BINS 1024

/* The spline's configuration (immutable after load). */
struct spl_cfg {
    int K, P;
    bool identity;              /* identity tails (else affine) */
    bool rq;                    /* rational-quadratic (else linear) */
    double dom[4];              /* default_domain: left, right, bottom, top */
    double min_w, min_h;
    double clampD;              /* domain_clamping, 0 = none */
    double xshift, yshift;      /* log(e^(w0 - min_w) - 1), same for heights */
    double dwidth;              /* right - left */
};

/* Read "bins" (default 10, at most SPL_MAX_BINS), "tails" ("affine" or "identity"),
 * "default_domain", "min_bin_sizes", "domain_clamping" (FrEIA's defaults) from j into *p,
 * for the rational-quadratic spline when rq, else the linear one.  Messages name the
 * field. */
enum eng_status spl_cfg_load(struct ldr *L, const cJSON *j, bool rq, struct spl_cfg *p);

/* Floats of work area spl_cols needs (one coordinate's gathered raw parameters and 2K
 * doubles, aligned inside). */
size_t spl_work_floats(const struct spl_cfg *p);

/* Transform coordinates [off, off + l) of each of the io->n rows of io->x (row stride d),
 * the inverse when inv; io->log_det[i] += the sum of row i's log-dets (in coordinate
 * order).  Coordinate j is channel j / S, position j % S (S positions per channel, 1 on
 * vectors); its parameter q comes from a + i lda + (c P + q) S + s (lda 0: one row shared
 * by all rows).  work: spl_work_floats(p) floats. */
void spl_cols(const struct spl_cfg *p, struct blk_io *io, int d, int off, int l, int S,
              const float *a, size_t lda, float *work, bool inv);

/* FrEIA's two-sided spline coupling, as GLOWCouplingBlock, x1 = x[0, l1), x2 = x[l1, d):
 *     forward:  y1 = S(x1; subnet1([x2, c])),  y2 = S(x2; subnet2([y1, c]))
 *     inverse:  x2 = S^-1(y2; subnet2([y1, c])), x1 = S^-1(y1; subnet1([x2, c]))
 * split along channels (a whole number of them); subnet1: l2 + cw -> l1 P, subnet2:
 * l1 + cw -> l2 P, convolutional with an image condition on image rows (coupling.h).  The
 * struct and its subnets live in the loader's arena (immutable after load). */
struct spl_coupling {
    struct spl_cfg s;
    int l1, l2;                 /* coordinates of the halves (channels x S) */
    int S;                      /* positions per channel (1 on vectors) */
    const struct subnet *net1;  /* [x2, c] -> l1 P: parameters of x1 */
    const struct subnet *net2;  /* [x1, c] -> l2 P: parameters of x2 */
};

/* Read "split", the spline's fields (spl_cfg_load) and "subnet1", "subnet2" for block b
 * into a struct spl_coupling allocated from L and set as b->priv. */
enum eng_status spl_coupling_load(struct blk *b, struct ldr *L, const cJSON *j, bool rq);
/* The block ops of a block whose priv spl_coupling_load set.  Scratch for `rows` rows:
 * parameters (rows x max(l1, l2) P) | work (spl_work_floats) | subnet. */
size_t spl_coupling_scratch(const struct blk *b, int rows);
void spl_coupling_forward(const struct blk *b, struct blk_io *io);
void spl_coupling_inverse(const struct blk *b, struct blk_io *io);

#endif
