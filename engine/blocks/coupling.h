/*
 * coupling.h — helpers shared by the coupling-family block files (coupling.c, allinone.c,
 * spline.c); implemented in coupling_util.c.  Internal to engine/blocks/.
 *
 * Conventions used by all of them: a tile is n rows of width d, row-major, stride d
 * (io->x).  A coupling splits each row into x1 = columns [0, l1) and x2 = [l1, d); the
 * subnets read a half straight out of the tile with leading dimension d (no copy) and
 * write their coefficients into scratch, laid out per row as [s (l) | t (l)] with stride
 * lda = 2*l, exactly FrEIA's a[:, :l], a[:, l:] split.
 */
#ifndef INNSERVE_BLOCKS_COUPLING_H
#define INNSERVE_BLOCKS_COUPLING_H

#include <stdbool.h>
#include <stddef.h>
#include <cjson/cJSON.h>
#include "../block.h"
#include "../engine.h"
#include "../kern.h"
#include "../loader.h"

/* Floats per scratch segment are rounded up to this (64 bytes) so every segment stays
 * aligned for vector loads and can hold doubles. */
#define CPL_ALIGN_FLOATS 16
static inline size_t cpl_round(size_t nfloats)
{
    return (nfloats + CPL_ALIGN_FLOATS - 1) / CPL_ALIGN_FLOATS * CPL_ALIGN_FLOATS;
}

/* Channels of the block's rows: shape[0] on (C, H, W) / (C, L) rows, d on vectors (where
 * a channel is one element).  A coupling splits rows along channels, which on the flat
 * channel-major row is the split at c1 * (d / C). */
int cpl_channels(const struct blk *b);
/* Manifest "split" (l1, in flat elements: c1 * positions): default FrEIA's
 * coupling_default_split(C) channels; c1 must lie in [lo, hi] (channels) and the split be a
 * whole number of channels.  The message names the field and says which range and why. */
enum eng_status cpl_load_split(struct ldr *L, const cJSON *j, const struct blk *b, int lo,
                               int hi, int *l1);
/* Subnet `field` of a coupling block: input [x part (dx flat values), the block's
 * condition], output dout flat values.  On vectors ldr_subnet; on image rows
 * ldr_subnet_img with dx, dout as channels (whole channels, as the split is) and the
 * condition an image of the block's spatial size (refused otherwise, naming 'cond'). */
enum eng_status cpl_subnet(struct ldr *L, const struct blk *b, const cJSON *j,
                           const char *field, int dx, int dout, const struct subnet **out);

/* Manifest "clamp" (default 2.0, finite) and "clamp_activation" ("ATAN" default, "TANH",
 * "SIGMOID"). */
enum eng_status cpl_load_clamp(struct ldr *L, const cJSON *j, float *clamp, enum clamp_act *act);

/* s <- clamp * f(s) in place on the first l columns of n rows of a (stride lda): FrEIA's
 * `self.clamp * self.f_clamp(s)`.  The activation switch is outside the loops. */
void cpl_clamp_cols(const struct kern *k, enum clamp_act act, float clamp, float *a, int n,
                    int l, int lda);
/* a[i*lda + j] <- f(a[i*lda + j]) for j < l, through the kernels in large calls. */
void cpl_map_cols(const struct kern *k, enum kern_fn f, float *a, int n, int l, int lda);
/* GIN: s <- s - mean(s) over the l columns of each row (mean in double). */
void cpl_center_cols(float *a, int n, int l, int lda);
/* GIN on image rows: the first C*P columns of each row are C channels of P positions;
 * s <- s - mean over the channels at each position (FrEIA's s.mean(1)).  P = 1 is
 * cpl_center_cols. */
void cpl_center_channels(float *a, int n, int C, int P, int lda);

/* Affine coupling of n rows on l columns.  x: first active column of row 0 (stride ldx);
 * a: [s | t] per row, s at a[i*lda + j], t at a[i*lda + l + j].  When lda == 0 one
 * coefficient row is broadcast to all rows.
 *   forward:  x <- x * exp(s) + t,     log_det[i] += sum_j s  (when log_det != NULL)
 *   inverse:  x <- (x - t) * exp(-s),  log_det[i] -= sum_j s  (when log_det != NULL) */
void cpl_affine_fwd(const struct kern *k, float *x, int ldx, const float *a, int lda, int n,
                    int l, double *log_det);
void cpl_affine_inv(const struct kern *k, float *x, int ldx, const float *a, int lda, int n,
                    int l, double *log_det);

/* Additive coupling (NICE): x <- x + sign * a (a: n x l, stride lda). */
void cpl_add(float *x, int ldx, const float *a, int lda, int n, int l, float sign);

#endif
