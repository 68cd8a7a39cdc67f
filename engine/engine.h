/*
 * engine.h — the public contract of innserve's numerical engine.
 *
 * The engine loads an INN checkpoint (a .safetensors file whose __metadata__ holds the
 * architecture manifest, see docs/checkpoint-format.md) and runs it in batches: forward,
 * inverse, log-density, posterior sampling, MLP forward.  It knows nothing of HTTP or of
 * JSON requests; proto/ validates untrusted input before it gets here, and the engine
 * validates again (shapes, finiteness) so a bad call returns a status, never crashes.
 *
 * Data layout: every matrix is row-major, batch first, contiguous (row i of an n x d
 * matrix starts at p + i*d).  All values are in the user's physical units: the
 * standardization stored in the checkpoint is applied inside the engine, its log-det
 * included.  log-dets and log-densities are double.
 *
 * Threads: a loaded model is immutable and may be used by any number of threads at
 * once, each with its own workspace (struct eng_ws).  A workspace is not thread safe.
 *
 * Errors: every fallible call returns enum eng_status and, where it helps, writes one
 * line into a caller-provided char err[ENG_ERR_LEN] naming the file, tensor or field.
 */
#ifndef INNSERVE_ENGINE_H
#define INNSERVE_ENGINE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ENG_ERR_LEN 512
#define ENG_WARN_UNUSED __attribute__((warn_unused_result))

enum eng_status {
    ENG_OK = 0,
    ENG_ERR_NOMEM,       /* allocation failed */
    ENG_ERR_IO,          /* file cannot be opened, read or mapped */
    ENG_ERR_FORMAT,      /* safetensors container is malformed (header, offsets, dtypes) */
    ENG_ERR_MANIFEST,    /* manifest missing, not JSON, a field missing or mistyped */
    ENG_ERR_TENSOR,      /* a tensor is missing, mis-shaped, non-finite or not a permutation */
    ENG_ERR_TESTVEC,     /* the embedded test vectors disagree with the engine */
    ENG_ERR_SHAPE,       /* a call's sizes do not match the model */
    ENG_ERR_NONFINITE,   /* an input value is NaN or Inf */
    ENG_ERR_UNSUPPORTED, /* operation not defined for this model kind */
    ENG_ERR_NUMERIC,     /* the computation produced a non-finite value or did not converge */
    ENG_ERR_ARG,         /* an argument is out of range (temperature, counts, ...) */
    ENG_ERR_CANCELLED,   /* the workspace's cancel flag was set (eng_ws_set_cancel) */
    ENG_STATUS_COUNT
};

/* Static string for a status ("shape mismatch", ...).  Never NULL. */
const char *eng_status_str(enum eng_status st);

enum eng_kind { ENG_KIND_FLOW = 0, ENG_KIND_CINN, ENG_KIND_INN, ENG_KIND_MLP, ENG_KIND_MDN };
/* "flow", "cinn", "inn", "mlp", "mdn".  An mdn (mixture density network, sbi's `mdn`) is
 * a Gaussian mixture over x whose weights, means and covariances a network computes from
 * y (or, for sbi's `made`, an autoregressive MADE whose per-dimension Gaussian mixtures
 * depend on y and the previous dimensions): it samples and has a density, but no forward
 * or inverse map (a mixture is not a bijection), so forward, inverse, resimulate and
 * preimage return ENG_ERR_UNSUPPORTED. */
const char *eng_kind_str(enum eng_kind k);

/* Rows processed per tile by every operation; workspaces are sized for it. */
#define ENG_TILE_ROWS 256
/* Most conditions (manifest "conditions" entries) a cinn may have. */
#define ENG_MAX_CONDITIONS 64

struct eng_model; /* opaque, immutable after load, reference counted */
struct eng_ws;    /* opaque per-thread scratch */

/* Sizes of a model.  For flow: x = z, y = 0.  For cinn: y is the condition width.
 * For inn: x + pad_x == z + pad_y + y (the Ardizzone layout [x,pad] <-> [z,pad,y]).
 * For mlp: x -> y, z = 0.  For mdn: x, y (the observation), z = 0 (no latent). */
struct eng_dims {
    int x, y, z, pad_x, pad_y;
};

/* Most test vectors a model keeps from its checkpoint (struct eng_info). */
#define ENG_TEST_VECTORS_MAX 8

/* Read-only description of a loaded model; borrowed, valid while the model lives. */
struct eng_info {
    enum eng_kind kind;
    struct eng_dims dims;
    char sha256[65];           /* hex digest of the whole checkpoint file */
    const char *description;   /* from the manifest, "" if none */
    const char *const *x_names; /* dims.x names */
    const char *const *y_names; /* dims.y names (NULL when dims.y == 0) */
    int n_blocks;
    const char *kernels;       /* the kernel path that runs it: "avx512", "avx2", "portable" */
    long long n_params;        /* scalar parameters in all tensors the model uses */
    bool numeric_inverse;      /* some block inverts by iteration (i-ResNet) */
    const char *manifest_json; /* the manifest text exactly as stored */
    const char *blocks_json;   /* the manifest's "blocks" array (mlp: "network", mdn:
                                  "mixture") as JSON text */
    /* The first n_test_vectors (<= ENG_TEST_VECTORS_MAX) rows of the checkpoint's test
     * vectors (manifest "tests"), as observations a user may pick and the x stored with each:
     * test_y is n_test_vectors x dims.y, test_x n_test_vectors x dims.x, physical units,
     * float32 of the values the exporter stored.  cinn and mdn: test_y = tests.y (the condition),
     * test_x = tests.x (its ground truth only if the exporter stored simulated pairs).  inn
     * and mlp: test_y = tests.y_out (the y the network gives for tests.x), test_x = tests.x.
     * flow: none (a flow has no observation).  Kept only when
     * the self test ran and passed: 0 and NULL after ENG_LOAD_NO_SELFTEST.  Owned by the
     * model (its arena), borrowed like the rest of eng_info. */
    int n_test_vectors;
    const float *test_y;
    const float *test_x;
    /* The prior's support (manifest "prior", type "box"): dims.x finite lower and upper
     * bounds in physical units with low < high, the closed box low <= x <= high; both NULL
     * when the model has no prior.  Owned by the model, borrowed like the rest. */
    const float *prior_low;
    const float *prior_high;
    /* Per-row shapes (manifest "shape"): x_rank 1 to 3 with x_shape[0..x_rank) in C order,
     * e.g. (C, H, W) for images, (C, L) for signals; a row of x holds prod(x_shape) = dims.x
     * floats in row-major (torch contiguous) order.  Vector models: x_rank 1, x_shape[0] =
     * dims.x.  z_rank / z_shape: the shape of the latent the blocks return (the last block's
     * output shape; equal to x's unless a block such as a downsampling reshapes it). */
    int x_rank, x_shape[3];
    int z_rank, z_shape[3];
    /* Image value range (manifest "image": {"low", "high", "levels"}, only with a shape.x
     * of rank 3): pixel values lie in [image_low, image_high] in x's units and were
     * quantized to image_levels levels (bin width (high - low) / levels).  has_image false
     * when absent. */
    bool has_image;
    double image_low, image_high;
    int image_levels;
};

/* Load and fully validate a checkpoint, then run its embedded test vectors.
 * On success *out is a new model with one reference (owned by caller: eng_model_unref).
 * On failure *out is NULL and err names the file and the tensor or field at fault.
 * Thread safe. */
ENG_WARN_UNUSED enum eng_status eng_model_load(const char *path, struct eng_model **out,
                                               char err[ENG_ERR_LEN]);
/* Same with flags: ENG_LOAD_NO_SELFTEST skips the embedded test vectors and accepts a
 * file without them (for unit tests and `innctl inspect`; the daemon never sets it). */
#define ENG_LOAD_NO_SELFTEST 1u
ENG_WARN_UNUSED enum eng_status eng_model_load_ex(const char *path, unsigned flags,
                                                  struct eng_model **out,
                                                  char err[ENG_ERR_LEN]);
/* Same from a checkpoint's bytes in memory (bytes[0..len): what a .safetensors file
 * holds); label names it in messages and may be NULL ("<memory>").  The bytes are borrowed
 * for the call only: the model keeps copies of what it uses.  The file-based loads go
 * through the same code after reading the file.  Thread safe. */
ENG_WARN_UNUSED enum eng_status eng_model_load_mem(const void *bytes, size_t len,
                                                   const char *label, unsigned flags,
                                                   struct eng_model **out,
                                                   char err[ENG_ERR_LEN]);
/* Reference counting (atomic).  unref(NULL) is a no-op; the last unref frees. */
struct eng_model *eng_model_ref(struct eng_model *m);
void eng_model_unref(struct eng_model *m);

/* Borrowed; valid while the model lives. */
const struct eng_info *eng_model_info(const struct eng_model *m);

/* Workspace: scratch for one thread.  eng_ws_new() makes an empty one; eng_ws_reserve()
 * grows it to fit model m (a no-op when it already fits), so a worker sizes it once per
 * model and every call after that allocates nothing.  Every operation reserves itself,
 * so calling reserve is only needed to move the allocation out of the request path. */
struct eng_ws *eng_ws_new(void);
void eng_ws_free(struct eng_ws *ws);
ENG_WARN_UNUSED enum eng_status eng_ws_reserve(struct eng_ws *ws, const struct eng_model *m);

/* Cooperative cancellation.  While a workspace carries a cancel flag (borrowed: it must
 * stay valid until it is replaced or cleared with NULL), every operation run with it reads
 * the flag before each tile of rows or samples (and eng_preimage before each step): once
 * another thread has set it, forward / inverse / log_prob / sample stop there and return
 * ENG_ERR_CANCELLED with their outputs partly written, and eng_preimage returns the best
 * solutions found so far, as when its time limit passes.  So the work left after a cancel
 * is at most one tile.  Reading the flag allocates nothing and takes no lock. */
void eng_ws_set_cancel(struct eng_ws *ws, const atomic_bool *flag);

/* ---- Operations --------------------------------------------------------------------
 * n rows.  y is the observation: the condition of a cinn (n x dims.y, or one row
 * broadcast when y_rows == 1), the measured output of an inn for inverse.  Pass NULL /
 * y_rows 0 where the kind has no y.  Every output pointer may be NULL when not wanted,
 * except the main result.  Inputs must be finite (ENG_ERR_NONFINITE names row and column).
 */

/* flow, cinn: x (n x x) [, y] -> z (n x z), log_det (n).
 * inn: x (n x x) -> z (n x z), y_out (n x y), log_det (n)  (pad inputs are zero).
 * mlp: x -> y_out (n x y); z and log_det unused. */
ENG_WARN_UNUSED enum eng_status eng_forward(const struct eng_model *m, struct eng_ws *ws, int n,
                                            const float *x, const float *y, int y_rows,
                                            float *z, float *y_out, double *log_det,
                                            char err[ENG_ERR_LEN]);

/* The solver defaults: what the engine uses for a tol or max_iter <= 0 (or NULL opts), and
 * what the HTTP API (proto/request.c) uses when a request does not give them. */
#define ENG_SOLVER_DEFAULT_TOL 1e-6
#define ENG_SOLVER_DEFAULT_MAX_ITER 200

/* Options and per-row statistics of a numerical inverse (i-ResNet blocks; the rules are
 * in docs/inversion.md).  Each stats array has n entries and is filled only when the model
 * has numeric_inverse; any array may be NULL.  Caller owns the arrays. */
struct eng_solver_opts {
    double tol;       /* error target (default ENG_SOLVER_DEFAULT_TOL when <= 0): each numeric
                         block stops when its certified bound is <= its share of tol times
                         max(|x|, 1) in standardized units (relative, absolute near 0); the
                         shares divide tol by the number of numeric blocks and by the growth
                         of errors through the blocks inverted after it */
    int max_iter;     /* evaluations of g per row and block (default ENG_SOLVER_DEFAULT_MAX_ITER
                         when <= 0) */
    int method;       /* enum eng_solve_method; 0 = auto; out of range = auto */
};
struct eng_solver_stats {
    int *iterations;      /* evaluations of g, summed over the numeric blocks */
    double *residual;     /* largest block residual |x + g(x) - y| at the returned point */
    double *error_bound;  /* certified bound on |x - x_true| in physical units, summed over
                             blocks and propagated to x; +inf when not certified (L >= 1, or
                             a block without a global inverse Lipschitz bound, e.g. an affine
                             coupling, is inverted after a numeric block) */
    bool *converged;      /* every numeric block met its stopping rule; false when max_iter
                             was used up or the rounding floor was reached first */
    bool certified;       /* every numeric block's Lipschitz bound L < 1 (eng_certificate) */
};

/* flow, cinn: z (n x z) [, y] -> x (n x x), log_det (n) of the inverse map.
 * inn: z (n x z), y (n x y or 1 row) -> x (n x x), with pad outputs set to zero.
 * mlp: ENG_ERR_UNSUPPORTED.  opts/stats may be NULL. */
ENG_WARN_UNUSED enum eng_status eng_inverse(const struct eng_model *m, struct eng_ws *ws, int n,
                                            const float *z, const float *y, int y_rows,
                                            float *x, double *log_det,
                                            const struct eng_solver_opts *opts,
                                            struct eng_solver_stats *stats,
                                            char err[ENG_ERR_LEN]);

/* log-density of x in physical units: flow log p(x); cinn log q(x|y); inn the
 * maximum-likelihood density of docs/checkpoint-format.md; mdn the mixture's density
 * (sbi's MoG.log_prob, log-sum-exp in double).  y may be one row broadcast.
 * A model with a prior box gives -INFINITY for rows outside it (sbi's masked posterior
 * density, not renormalized: see eng_prior_acceptance).  mlp: ENG_ERR_UNSUPPORTED. */
ENG_WARN_UNUSED enum eng_status eng_log_prob(const struct eng_model *m, struct eng_ws *ws, int n,
                                             const float *x, const float *y, int y_rows,
                                             double *log_prob, char err[ENG_ERR_LEN]);

/* Posterior samples for one observation y (1 x dims.y; NULL for flow):
 * samples with indices [first, first + count) of observation `obs`, z ~ N(0, T^2 I) drawn
 * by eng_rng_normal(seed, obs, sample, dim).  Rows are computed in tiles aligned to
 * multiples of ENG_TILE_ROWS of the sample index, so splitting [0, N) into calls at
 * multiples of ENG_TILE_ROWS (as the server does) gives bit-identical samples.
 * x_out: count x dims.x.  log_prob (count, may be NULL): the model density log q(x|y) of
 * each sample (untempered; -INFINITY outside a prior box, as eng_log_prob).  No rejection:
 * see eng_sample_prior.
 * mdn: the component is drawn from the mixture weights with the uniform made of
 * eng_rng_u32 words 4b and 4b + 1 (b = ceil(dims.x / 4), the first block the normals do
 * not use), then x = mean + A^-1 (T e) with e the normals of dims 0 .. dims.x - 1 and A
 * the component's precision factor; the temperature scales the spread within a component,
 * not the choice of component.  An mdn whose mixture is of type made (sbi's MoG-MADE)
 * draws dimension d's component with the uniform of words 4b + 2d and 4b + 2d + 1, then
 * x_d = mean + std (T e_d), one dimension after the other. */
ENG_WARN_UNUSED enum eng_status eng_sample(const struct eng_model *m, struct eng_ws *ws,
                                           const float *y, uint64_t seed, uint32_t obs,
                                           uint64_t first, int count, float temperature,
                                           float *x_out, double *log_prob,
                                           const struct eng_solver_opts *opts,
                                           struct eng_solver_stats *stats,
                                           char err[ENG_ERR_LEN]);

/* One row of eng_sample_rows: the draw eng_sample makes for sample `sample` of
 * observation `obs` under `seed`, at `temperature` (finite, >= 0). */
struct eng_sample_draw {
    uint64_t seed;
    uint64_t sample;
    uint32_t obs;
    float temperature;
};

/* Samples of many requests in one call (the daemon's batching of sample requests): row i
 * is the sample eng_sample would return for draws[i] under the observation y row i (n x
 * dims.y, or one row broadcast when y_rows == 1; NULL / 0 for flow), bit for bit, whatever
 * the other rows are.  x_out: n x dims.x; log_prob (n, may be NULL) as eng_sample's;
 * stats rows as eng_inverse's.  Failures name the row ("row 3: ..."). */
ENG_WARN_UNUSED enum eng_status eng_sample_rows(const struct eng_model *m, struct eng_ws *ws,
                                                int n, const float *y, int y_rows,
                                                const struct eng_sample_draw *draws,
                                                float *x_out, double *log_prob,
                                                const struct eng_solver_opts *opts,
                                                struct eng_solver_stats *stats,
                                                char err[ENG_ERR_LEN]);

/* Counts of a rejection run (eng_sample_prior, eng_prior_acceptance). */
struct eng_accept {
    uint64_t drawn;    /* candidates examined: sample indices 0 .. drawn - 1, the last one
                          being the last accepted (or the max_draws-th); so it depends on
                          (seed, obs, count) only, not on how candidates were batched */
    uint64_t accepted; /* of them inside the prior box */
};

/* Posterior samples restricted to the prior box (sbi's reject_outside_prior): candidates
 * are the samples eng_sample draws for indices 0, 1, 2, ... of observation `obs` under
 * `seed`, and the first `count` that lie in the closed box low <= x <= high (every
 * dimension) are kept, in index order, into x_out (count x dims.x), log_prob (count, may
 * be NULL) and stats rows (may be NULL).  So the result depends only on (seed, obs,
 * count), never on how candidates are grouped.  Drawing stops after max_draws candidates
 * (>= 1): then acc->accepted < count and only the first acc->accepted rows are written,
 * with ENG_OK (the caller decides what a short run means).  A model without a prior
 * accepts every candidate (eng_sample's samples 0 .. count - 1).  Allocates nothing after
 * eng_ws_reserve; reads the cancel flag before each batch of candidates. */
ENG_WARN_UNUSED enum eng_status eng_sample_prior(const struct eng_model *m, struct eng_ws *ws,
                                                 const float *y, uint64_t seed, uint32_t obs,
                                                 int count, float temperature,
                                                 uint64_t max_draws, float *x_out,
                                                 double *log_prob,
                                                 const struct eng_solver_opts *opts,
                                                 struct eng_solver_stats *stats,
                                                 struct eng_accept *acc,
                                                 char err[ENG_ERR_LEN]);

/* sbi's leakage estimate: candidates drawn as eng_sample_prior draws them (temperature 1)
 * until `count` lie in the prior box or max_draws were drawn; acc says how many of each,
 * and accepted / drawn estimates the posterior mass inside the box (sbi's
 * leakage_correction with num_rejection_samples = count).  Nothing is kept.  A model
 * without a prior: acc->drawn = acc->accepted = count without drawing. */
ENG_WARN_UNUSED enum eng_status eng_prior_acceptance(const struct eng_model *m,
                                                     struct eng_ws *ws, const float *y,
                                                     uint64_t seed, uint32_t obs, int count,
                                                     uint64_t max_draws,
                                                     const struct eng_solver_opts *opts,
                                                     struct eng_accept *acc,
                                                     char err[ENG_ERR_LEN]);

/* Re-simulation error of n points x (n x dims.x) against one observation y (dims.y values):
 * sq_err[i] = sum_k (f(x_i)_k - y_k)^2 in double, where f(x_i) is the y that eng_forward
 * returns for row i (float32, physical units).  inn and mlp (the kinds whose forward
 * predicts y); ENG_ERR_UNSUPPORTED otherwise.  Runs in tiles through the workspace and
 * allocates nothing; errors name rows as eng_forward does. */
ENG_WARN_UNUSED enum eng_status eng_resimulate(const struct eng_model *m, struct eng_ws *ws,
                                               int n, const float *x, const float *y,
                                               double *sq_err, char err[ENG_ERR_LEN]);

/* The Gaussian draw used by eng_sample: standard normal number `dim` of sample `sample`
 * of observation `obs` under `seed` (Philox4x32-10 + Box-Muller).  Pure function. */
float eng_rng_normal(uint64_t seed, uint32_t obs, uint64_t sample, uint32_t dim);
/* Fill out[0..n) with eng_rng_normal(seed, obs, sample, 0..n-1), 4 draws per Philox call. */
void eng_rng_normal_row(uint64_t seed, uint32_t obs, uint64_t sample, int n, float *out);
/* The raw 32-bit Philox word `word` of the same stream (word / 4 is the block, word % 4 the
 * output): uniform on 0 .. 2^32 - 1.  Pure function. */
uint32_t eng_rng_u32(uint64_t seed, uint32_t obs, uint64_t sample, uint32_t word);

/* ---- Threads ------------------------------------------------------------------------ */

/* Threads of the linked OpenBLAS's pool (the engine calls no BLAS routine; callers set 1
 * so the library keeps no idle threads).  Process-wide; call once at start-up. */
void eng_blas_threads(int n);
/* The compute-kernel path models loaded now will run on: INNSERVE_KERNELS ("avx512",
 * "avx2", "portable"; unset or "auto": the best this CPU supports, from cpuid).  NULL,
 * with a message in err (may be NULL), when the variable names an unknown path or one
 * this CPU cannot run.  Every path gives the same bits (docs/performance.md). */
const char *eng_kernels(char *err);

/* ---- Numerical inversion (i-ResNet blocks, engine/solve.c) ---------------------------- */

enum eng_solve_method {
    ENG_SOLVE_AUTO = 0,    /* Newton for small widths, Anderson otherwise, fixed-point fallback */
    ENG_SOLVE_NEWTON,
    ENG_SOLVE_ANDERSON,
    ENG_SOLVE_BROYDEN,
    ENG_SOLVE_FIXED_POINT,
    ENG_SOLVE_COUNT
};
/* "auto", "newton", "anderson", "broyden", "fixed_point"; NULL if out of range.  The one
 * table of the method names (the HTTP API's "method" field uses it too). */
const char *eng_solve_method_str(int method);
/* The method named `name` (exact, case-sensitive match of eng_solve_method_str) into *out;
 * false, *out untouched, when name is NULL or no method has that name. */
bool eng_solve_method_parse(const char *name, enum eng_solve_method *out);

/* ---- Preimage search (engine/preimage.c) --------------------------------------------- */

enum eng_preimage_method { ENG_PREIMAGE_GRADIENT = 0, ENG_PREIMAGE_EVOLUTIONARY };

struct eng_preimage_opts {
    int method;            /* enum eng_preimage_method */
    int num_solutions;     /* distinct solutions wanted per target, 1 .. 1024 */
    int max_steps;         /* optimizer steps / generations, 1 .. 1000000 (plus at most 30
                              polishing steps) */
    uint64_t seed;         /* starts and mutations derive from it: deterministic */
    const float *low;      /* dims.x lower bounds of the search box, or NULL */
    const float *high;     /* dims.x upper bounds, or NULL; default box: mean +- 3 std of the
                              model's x standardization, else [-3, 3] */
    double prior_weight;   /* weight of the Gaussian prior penalty 0.5*|x_s|^2 on
                              standardized x (0 = off), >= 0 */
    double time_limit_s;   /* wall-clock bound for one target (<= 0: no limit beyond max_steps);
                              when it passes, the best solutions so far are returned */
};

/* Find up to opts->num_solutions distinct x with f(x) ~= target, best first, for one
 * target row.  f is the model's forward map to the quantity a user observes: y for mlp
 * and inn (dims.y values), z for flow and cinn (dims.z values; cinn also takes its
 * condition y, 1 row).  x_out: num_solutions x dims.x; residual_out: num_solutions
 * (||f(x) - target||_2, physical units); *n_found <= num_solutions rows are filled
 * (fewer when the candidates are not distinct; flow and cinn: exactly 1, the preimage of
 * a bijection being unique).  Methods per kind: docs/inversion.md.  Deterministic for a
 * seed; allocates its population per call.  Thread-safe like every operation (own
 * workspace). */
ENG_WARN_UNUSED enum eng_status eng_preimage(const struct eng_model *m, struct eng_ws *ws,
                                             const float *target, const float *y,
                                             const struct eng_preimage_opts *opts,
                                             float *x_out, double *residual_out, int *n_found,
                                             char err[ENG_ERR_LEN]);

/* ---- Invertibility certificate (engine/certificate.c) ------------------------------- */

enum eng_guarantee { ENG_GUARANTEE_ANALYTIC = 0, ENG_GUARANTEE_CONTRACTION, ENG_GUARANTEE_NONE };
/* "analytic", "contraction", "none". */
const char *eng_guarantee_str(enum eng_guarantee g);

struct eng_block_cert {
    int index;
    const char *type;          /* manifest type, or "mlp" layers for an mlp */
    bool invertible;
    enum eng_guarantee guarantee;
    char reason[256];          /* one sentence: why invertible / why not */
    double lipschitz;          /* i-ResNet: bound on Lip(g); coupling: bound on Lip(f); NAN if n/a */
    double lipschitz_inverse;  /* bound on Lip(f^-1), NAN if n/a */
    double condition;          /* invertible linear maps: condition number, NAN if n/a */
    int iterations_for_1e6;    /* i-ResNet: fixed-point iterations to reach 1e-6; -1 if n/a */
};

struct eng_certificate {
    bool invertible;
    enum eng_guarantee guarantee;  /* the weakest over the blocks */
    bool certified;                /* every numeric block has L < 1 */
    char reason[256];              /* one sentence: the model's verdict and why */
    int n_blocks;
    const struct eng_block_cert *blocks;
};

/* Computed once at load; borrowed, valid while the model lives. */
const struct eng_certificate *eng_model_certificate(const struct eng_model *m);

#endif
