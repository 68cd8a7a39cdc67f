/*
 * block.h — the contract between the model (manifest.c loads blocks, model.c runs them) and
 * the invertible blocks (the files in blocks/): struct blk, its ops, the per-tile I/O, the
 * registry of manifest types, and the helpers shared by the coupling blocks.  Not part of
 * the public API.  The loading API blocks use is in loader.h, the subnets in subnet.h;
 * this header includes both.
 *
 * A block is a bijection of R^d (optionally given a condition c of width cw) that works
 * in place on a tile of rows:
 *     forward:  x <- f(x | c),     log_det[i] += log|det df/dx| at row i
 *     inverse:  x <- f^-1(x | c),  log_det[i] += log|det d f^-1 / dx| (= -forward log-det)
 * A block is described in the manifest by one JSON object whose "type" selects its ops
 * (the table in blocks/registry.c).  Its load() reads hyperparameters and tensors
 * through the loader (which validates names, shapes, dtypes and finiteness and writes
 * the error message) and stores what it needs in b->priv, allocated with ldr_alloc
 * (freed with the model, so blocks have no free()).
 *
 * Blocks whose inverse is numerical (i-ResNet) set numeric = true and implement inverse
 * by iteration; they report per-row statistics through io->iterations, residual,
 * error_bound and converged.
 *
 * Ownership and lifetime: struct blk and everything b->priv points to belong to the model
 * (its arena), are written only during load and are immutable afterwards, so forward and
 * inverse may run on any number of threads at once.  struct blk_io belongs to the caller
 * of one forward/inverse call (model.c) and its pointers are valid for that call only.
 *
 * Memory: a block may use io->scratch, which holds scratch(b, rows) floats; it must not
 * allocate during forward/inverse.  Weights are immutable after load.
 */
#ifndef INNSERVE_BLOCK_H
#define INNSERVE_BLOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <cjson/cJSON.h>
#include "engine.h"
#include "kern.h"
#include "loader.h"
#include "subnet.h"

/* ---- Blocks ------------------------------------------------------------------------- */

struct blk_io {
    const struct kern *k;   /* the model's kernel path */
    int n;                  /* rows in this tile */
    float *x;               /* n x d, row stride d; transformed in place */
    double *log_det;        /* n; accumulate */
    const float *c;         /* condition rows (stride c_ld) or one row when c_ld == 0; NULL if none */
    int c_ld;
    float *scratch;         /* ops->scratch(b, n) floats */
    /* numeric inverse only */
    const struct eng_solver_opts *opts;
    int *iterations;        /* n, accumulate; NULL if not wanted */
    double *residual;       /* n, max over blocks */
    double *error_bound;    /* n, sum over blocks */
    bool *converged;        /* n, AND over blocks */
    double tol;             /* this block's share of the end-to-end tolerance */
    double err_scale;       /* bound on how much an error in this block's output grows by the
                               returned x (product of the inverse Lipschitz bounds of the
                               blocks inverted after it, times the largest std_x); +inf when
                               unknown; 0 (unset) is read as 1 */
    double *xd;             /* numeric inverse: n x d double state shared by consecutive
                               numeric blocks, or NULL.  When set, the block reads its input
                               from xd (not x) and writes its result to xd and x, so a chain
                               of residual blocks loses no precision to float32 between them */
    bool rounds_out;        /* the float32 x this block writes is what the next step reads
                               (so its rounding error counts in the error bound) */
};

struct blk;

struct blk_ops {
    const char *type;       /* manifest "type" */
    bool takes_cond;        /* may have a condition */
    bool needs_cond;        /* must have one (ConditionalAffineTransform) */
    /* Read hyperparameters and tensors; b->d, b->cw already set (cw = 0 if no condition). */
    enum eng_status (*load)(struct blk *b, struct ldr *L, const cJSON *j);
    size_t (*scratch)(const struct blk *b, int rows);
    void (*forward)(const struct blk *b, struct blk_io *io);
    /* The inverse cannot fail as a whole: analytic inverses always succeed, and numeric
     * ones report non-convergence per row through io->converged and io->error_bound. */
    void (*inverse)(const struct blk *b, struct blk_io *io);
    /* Fill the certificate of this block (invertible, guarantee, reason, bounds); called
     * once at load, after load().  NULL means "analytic inverse, no bounds". */
    void (*certify)(const struct blk *b, struct eng_block_cert *out);
};

/* One block of a loaded model: filled by manifest.c and the block's load(), owned by the
 * model, immutable after load.  Its certificate is built from ops->certify (certificate.c). */
struct blk {
    const struct blk_ops *ops;
    int index;              /* position in the model */
    int d;                  /* width */
    int cond;               /* condition index, -1 if none */
    int cw;                 /* condition width (0 if none) */
    /* Per-row shape of the block's input (set by manifest.c before load: the previous
     * block's output shape, the model's x shape for the first) and of its output (set equal
     * to the input shape before load; a block that reshapes, such as a downsampling, writes
     * its own in load).  rank 1 to 3, C order; prod(shape) = prod(out_shape) = d. */
    int rank, shape[3];
    int out_rank, out_shape[3];
    int c_rank, c_shape[3]; /* shape of the condition (when cond >= 0): (cw), or (C, H, W) /
                               (C, L) for a condition broadcast over positions */
    bool numeric;           /* inverse by iteration */
    long long n_params;
    void *priv;             /* block-specific, allocated with ldr_alloc */
};

/* Registry (blocks/registry.c): ops for a manifest type name, NULL if unknown. */
const struct blk_ops *blk_lookup(const char *type);
/* Comma-separated list of known types, for error messages. */
const char *blk_known_types(void);

/* ---- Helpers shared by the coupling blocks (blocks/coupling_util.c) ------------------ */

enum clamp_act { CLAMP_ATAN = 0, CLAMP_TANH, CLAMP_SIGMOID };
/* Python round-half-to-even of 0.5 * d: FrEIA's default split_len. */
int coupling_default_split(int d);

#endif
