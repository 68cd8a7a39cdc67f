/*
 * block.h — the internal contract between the model (model.c), the loader (loader.c),
 * subnets (subnet.c) and the invertible blocks (the files in blocks/).  Not part of the public API.
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
 * by iteration; they report per-row statistics through io->stats.
 *
 * Memory: a block may use io->scratch, which holds scratch(b, rows) floats; it must not
 * allocate during forward/inverse.  Weights are immutable after load.
 */
#ifndef INNSERVE_BLOCK_H
#define INNSERVE_BLOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cjson/cJSON.h>
#include "engine.h"
#include "kern.h"
#include "safetensors.h"

/* ---- Loader: manifest fields and tensors, validated, with messages ------------------- */

struct ldr; /* defined in loader.c; lives only during eng_model_load */

/* The kernel path of the model being loaded (subnets pack their weights for it). */
const struct kern *ldr_kern(const struct ldr *L);
/* Allocate zeroed memory owned by the model being loaded (freed with it).  NULL on OOM
 * (the loader has then already written the error). */
void *ldr_alloc(struct ldr *L, size_t bytes);
/* Write the error: "<file>: <context>: <message>"; returns ENG_ERR_MANIFEST or the given
 * status so callers can `return ldr_fail(L, ENG_ERR_TENSOR, "...")`. */
enum eng_status ldr_fail(struct ldr *L, enum eng_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Push/pop a context segment for messages, e.g. "blocks[3] (GLOWCouplingBlock)" then
 * ".subnet1".  The stack is a string; push appends, pop restores the previous length. */
size_t ldr_push(struct ldr *L, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ldr_pop(struct ldr *L, size_t mark);

/* Manifest scalars.  A missing optional field gives `def`; a present field of the wrong
 * type or out of range is an error naming the field. */
enum eng_status ldr_num(struct ldr *L, const cJSON *obj, const char *field, bool required,
                        double def, double *out);
enum eng_status ldr_int(struct ldr *L, const cJSON *obj, const char *field, bool required,
                        long def, long lo, long hi, long *out);
enum eng_status ldr_bool(struct ldr *L, const cJSON *obj, const char *field, bool required,
                         bool def, bool *out);
/* String field that must be one of choices[0..n); *out gets the index. */
enum eng_status ldr_enum(struct ldr *L, const cJSON *obj, const char *field, bool required,
                         int def, const char *const *choices, int n, int *out);
/* Object-valued field (NULL when absent and not required). */
enum eng_status ldr_obj(struct ldr *L, const cJSON *obj, const char *field, bool required,
                        const cJSON **out);

/* Tensor named by the string field `field` of obj, converted to f32 (owned by the model).
 * shape: ndim expected dims; a dim of -1 accepts any size.  The tensor must be finite.
 * Leading/trailing size-1 dims are NOT squeezed: FrEIA's (1, C) stays (1, C).  Use
 * ldr_tensor_numel to accept any shape with a given number of elements. */
enum eng_status ldr_tensor(struct ldr *L, const cJSON *obj, const char *field, bool required,
                           int ndim, const int64_t *shape, const float **out);
/* Any shape whose element count is `numel` (e.g. (1,C) or (C,)). */
enum eng_status ldr_tensor_numel(struct ldr *L, const cJSON *obj, const char *field,
                                 bool required, int64_t numel, const float **out);
/* Same in double (for tensors the engine inverts or factorizes at load). */
enum eng_status ldr_tensor_f64(struct ldr *L, const cJSON *obj, const char *field,
                               bool required, int ndim, const int64_t *shape,
                               const double **out);
/* A permutation of 0..n-1: an integer vector (n) or a one-hot float matrix (n x n, the
 * PyPI-0.2 AllInOneBlock storage, row i has its 1 at column perm[i]).  Checked to be a
 * bijection.  *out: n int32 owned by the model. */
enum eng_status ldr_perm(struct ldr *L, const cJSON *obj, const char *field, int n,
                         const int32_t **out);
/* An invertible d x d matrix named by obj[field], read in double: *m (d x d), its inverse
 * *inv and log|det| *logabsdet, all computed by LU with partial pivoting in double.  A
 * singular matrix, or one whose inverse does not fit in float, is refused with a message
 * naming the tensor.  *m and *inv are owned by the model. */
enum eng_status ldr_invertible(struct ldr *L, const cJSON *obj, const char *field, int d,
                               const double **m, const double **inv, double *logabsdet);
/* The tensor name stored in obj[field], or the field name itself (for messages). */
const char *ldr_tensor_name(const cJSON *obj, const char *field);
/* The raw tensor (for blocks that need to look at dtype/shape first); NULL + error when
 * missing.  Borrowed, valid during load only. */
enum eng_status ldr_raw(struct ldr *L, const cJSON *obj, const char *field,
                        const struct st_tensor **out);

/* ---- Subnets: Linear layers and activations ------------------------------------------- */

struct subnet_layer {
    int is_linear;
    /* linear: out x in weight (row-major), bias (out) or NULL */
    int in, out;
    const float *w;
    const float *wp;    /* w packed for the kernels (kern_pack_weight) */
    const float *b;
    /* activation */
    enum act_type act;
    float p1, p2;       /* leaky slope | elu alpha | softplus beta, threshold */
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
};

/* Parse a subnet description {"layers": [...]} from obj[field] (see
 * docs/checkpoint-format.md): first layer Linear with in = dx + dc, last output dout
 * (dout < 0: any width, read back from (*out)->dout). */
enum eng_status ldr_subnet(struct ldr *L, const cJSON *obj, const char *field, int dx, int dc,
                           int dout, const struct subnet **out);

/* Floats of scratch subnet_forward needs for `rows` rows. */
size_t subnet_scratch(const struct subnet *s, int rows);
/* out (rows x dout, stride ldo) = s([x, c]).  x: rows x dx (stride ldx; may be NULL when
 * dx == 0).  c: rows x dc with stride ldc, or one row broadcast when ldc == 0, or NULL when
 * dc == 0.  Scratch from subnet_scratch.  No allocation. */
void subnet_forward(const struct subnet *s, int rows, const float *x, int ldx, const float *c,
                    int ldc, float *out, int ldo, float *scratch);
/* Back-propagation to the input (preimage search; subnets without a condition, dc == 0).
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
 * product of the exact spectral norms of the Linear layers (the x columns of the first)
 * and of the activations' constants.  Load time only (allocates temporaries); +inf on
 * OOM. */
double subnet_lipschitz(const struct subnet *s);
/* The same in double (numeric inverses, i-ResNet blocks). */
void act_apply_f64(enum act_type t, float p1, float p2, double *v, size_t n);
/* Derivative of the activation at pre-activation u (for backprop and Jacobians). */
double act_deriv(enum act_type t, float p1, float p2, double u);
/* Lipschitz constant of the activation (for certificates). */
double act_lipschitz(enum act_type t, float p1, float p2);
const char *act_name(enum act_type t);

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
    /* Analytic inverses always return ENG_OK; numeric ones may report non-convergence
     * per row through io->converged and still return ENG_OK. */
    enum eng_status (*inverse)(const struct blk *b, struct blk_io *io);
    /* Fill the certificate of this block (invertible, guarantee, reason, bounds); called
     * once at load, after load().  NULL means "analytic inverse, no bounds". */
    void (*certify)(const struct blk *b, struct eng_block_cert *out);
};

/* Certificate of one block (engine/certificate.c fills these; see issue 4). */
struct blk {
    const struct blk_ops *ops;
    int index;              /* position in the model */
    int d;                  /* width */
    int cond;               /* condition index, -1 if none */
    int cw;                 /* condition width (0 if none) */
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
