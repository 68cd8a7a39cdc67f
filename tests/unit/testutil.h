/*
 * testutil.h — helpers shared by the Check unit tests: build small checkpoints in C
 * (tensors + a manifest string) and run generic numerical checks through the public
 * engine API (round trip, finite-difference log-det).
 *
 * Each tests/unit/test_<x>.c defines `Suite *make_suite(void)` and ends with
 * TU_MAIN, so every test file is its own runner binary (the Makefile runs them all).
 */
#ifndef INNSERVE_TESTUTIL_H
#define INNSERVE_TESTUTIL_H

#include <check.h>
#include <stdint.h>
#include "../../engine/engine.h"

struct tu_ckpt; /* a checkpoint under construction */

struct tu_ckpt *tu_ckpt_new(void);
void tu_ckpt_free(struct tu_ckpt *c);
/* Add tensors (data copied).  dtype strings as in safetensors ("F32", "I64", ...). */
void tu_add(struct tu_ckpt *c, const char *name, const char *dtype, int ndim,
            const int64_t *shape, const void *data);
void tu_add_f32(struct tu_ckpt *c, const char *name, int ndim, const int64_t *shape,
                const float *data);
/* A float tensor of N(0,1)*scale + offset values from a fixed-seed generator. */
void tu_add_randn(struct tu_ckpt *c, const char *name, int ndim, const int64_t *shape,
                  float scale, float offset, uint64_t seed);
/* int64 permutation of 0..n-1 (seeded shuffle). */
void tu_add_perm(struct tu_ckpt *c, const char *name, int n, uint64_t seed);
/* Add a Linear layer "<prefix>.weight" (out x in) and "<prefix>.bias" with the given
 * scale, and return the JSON text of a subnet {"layers":[...]} with hidden layers of width
 * h separated by activation `act` (e.g. "{\"type\":\"relu\"}"): in -> h -> ... -> out
 * with n_hidden hidden layers.  Returned string is malloc'd (caller frees). */
char *tu_add_subnet(struct tu_ckpt *c, const char *prefix, int in, int h, int n_hidden, int out,
                    const char *act_json, float scale, uint64_t seed);
/* Serialize to a temp file with `manifest` as __metadata__.manifest; returns the path
 * (malloc'd; caller unlinks and frees). */
char *tu_ckpt_write(struct tu_ckpt *c, const char *manifest);
/* Write + eng_model_load_ex(flags); fails the test with the error message if loading
 * fails.  The temp file is removed. */
struct eng_model *tu_load(struct tu_ckpt *c, const char *manifest, unsigned flags);
/* Write + load expecting failure: returns the status and copies the message into err. */
enum eng_status tu_load_fail(struct tu_ckpt *c, const char *manifest, unsigned flags,
                             char err[ENG_ERR_LEN]);

/* Build a single-block flow/cinn manifest around `block_json` (which must set "cond": 0
 * when cw > 0): kind flow when cw == 0, else cinn with dims.y = cw and one plain
 * condition.  malloc'd. */
char *tu_manifest_one_block(int d, int cw, const char *block_json);

/* inverse(forward(x)) ~= x on n random rows (scale `xscale`), with y random when the
 * kind has one; also checks inverse log-det == -forward log-det.  Max abs error on x
 * must be <= tol * (1 + |x|). */
void tu_check_roundtrip(const struct eng_model *m, int n, float xscale, double tol);
/* forward log-det vs log|det| of a central finite-difference Jacobian (in double, step
 * h) at n random rows; |diff| <= tol.  Only for flow/cinn (square). */
void tu_check_logdet_fd(const struct eng_model *m, int n, float xscale, double h, double tol);

/* Read a whole file into a NUL-terminated malloc'd buffer (NULL if it cannot be read);
 * *len (may be NULL) gets its size. */
char *tu_slurp(const char *path, size_t *len);

/* Deterministic N(0,1) floats. */
void tu_randn(float *v, int n, float scale, uint64_t seed);

#define TU_MAIN                                                          \
    int main(void)                                                       \
    {                                                                    \
        SRunner *sr = srunner_create(make_suite());                      \
        srunner_run_all(sr, CK_NORMAL);                                  \
        int nf = srunner_ntests_failed(sr);                              \
        srunner_free(sr);                                                \
        return nf == 0 ? 0 : 1;                                          \
    }

Suite *make_suite(void);

/* Every kernel path gives the same samples and densities of each named golden fixture, for
 * any split of the draws and with y broadcast or per row (testutil.c). */
void tu_check_fixture_paths_and_splits(const char *const *names, int n_names);

/* The MDN-kind model tests/fixtures/sbi/<stem>.safetensors (loaded with its self test) against
 * <stem>.expect.json: log_prob per row within 1e-5 relative (-inf where the fixture has null)
 * and the moments of 40000 prior-rejected samples per observation against the fixture's,
 * whose source `ref_name` names in failure messages. */
void tu_check_sbi_parity(const char *stem, const char *ref_name);

/* Sampling with observation y (dims.y floats) at temperature 0.8: 600 draws give the same bits
 * when split into pieces and when drawn by eng_sample_rows with y per row in reverse order;
 * another seed or observation index gives other draws. */
void tu_check_sample_reproducible(const struct eng_model *m, struct eng_ws *ws, const float *y);

/* Whether x[0 .. d) lies in the closed box [lo, hi] (NaN: outside). */
bool tu_in_box(const float *x, int d, const float *lo, const float *hi);
/* Prior rejection keeps eng_sample's candidates in index order: the draws 0 .. drawn-1 of
 * eng_sample(y, seed, observation 0, temperature 1) that lie in the closed box [lo, hi] are
 * x's n rows, in order. */
void tu_check_prior_kept(const struct eng_model *m, struct eng_ws *ws, const float *y,
                         uint64_t seed, uint64_t drawn, const float *x, int n, const float *lo,
                         const float *hi);

/* y broadcast: eng_log_prob of x's n rows with observation y0 given once gives the same bits
 * as with y0 repeated per row. */
void tu_check_log_prob_broadcast(const struct eng_model *m, struct eng_ws *ws, int n,
                                 const float *x, const float *y0);

/* Mean (d) and covariance (d x d, row stride ldc, divisor n - 1) of x's n rows of d floats, in
 * double, summed in row order. */
void tu_moments(const float *x, int n, int d, double *mean, double *cov, int ldc);

/* ---- the mdn-kind tests (test_mdn.c, test_mogmade.c) ------------------------------------ */

/* log q(x | y) of one row in float64, computed by a test from its own weights (ctx). */
typedef double tu_ref_log_prob_fn(const void *ctx, const float *y, const float *x);

/* Add "<name>": a rows x cols float matrix, or a vector of `rows` floats when cols is 0. */
void tu_add_mat(struct tu_ckpt *c, const char *name, int rows, int cols, const float *v);

/* The manifest's head for the mdn kind with dims x 3 and y 2, standardized by the tensors
 * sx.mean, sx.std, sy.mean, sy.std; a test appends "\"mixture\":{...}" and the closing brace. */
#define TU_MIX_MANIFEST_HEAD                                                            \
    "{\"format\":\"innserve-manifest\",\"version\":1,\"kind\":\"mdn\","                 \
    "\"dims\":{\"x\":3,\"y\":2},"                                                       \
    "\"standardize\":{\"x\":{\"mean\":\"sx.mean\",\"std\":\"sx.std\"},"                 \
    "\"y\":{\"mean\":\"sy.mean\",\"std\":\"sy.std\"}},"
/* The standardization of TU_MIX_MANIFEST_HEAD: fixed means and stds of x (3) and y (2)
 * written to xm, xs, ym, ys, and added as those four tensors. */
void tu_mix_std_init(float xm[3], float xs[3], float ym[2], float ys[2]);
void tu_mix_std_add(struct tu_ckpt *c, const float xm[3], const float xs[3], const float ym[2],
                    const float ys[2]);
/* A model under test and a workspace for it. */
struct tu_fix {
    struct eng_model *m;
    struct eng_ws *ws;
};
/* The model of checkpoint c with `manifest` (malloc'd), loaded without its self test (tu_load),
 * and a new workspace; frees the manifest and the checkpoint.  tu_fix_close frees both. */
struct tu_fix tu_fix_load(struct tu_ckpt *c, char *manifest);
void tu_fix_close(struct tu_fix *f);

/* An mdn-kind model (no z) against the test's reference: log_prob of 300 random rows (over
 * one tile; x scale 1.5, y scale 1, a y per row) within worst relative error rtol (of
 * max(1, |reference|)), and with y0 broadcast the same bits as y0 per row. */
void tu_check_mix_log_prob(const struct eng_model *m, struct eng_ws *ws, tu_ref_log_prob_fn *ref,
                           const void *ctx, double rtol, const float *y0);
/* The manifest members of a prior box for dims x 3: [-2, 3] x [-2, 0] x [0, 4]. */
#define TU_MIX_PRIOR_BOX "\"prior\":{\"type\":\"box\",\"low\":[-2,-2,0],\"high\":[3,0,4]}"
/* A model with TU_MIX_PRIOR_BOX and observation y0: eng_sample_prior (seed 5, at most
 * max_draws) gives n in-box rows with finite densities after more than n draws, and they are
 * eng_sample's in-box candidates in order; of n unrestricted samples (seed 6) log_prob is
 * -inf outside the box (at least one) and the reference inside (1e-5). */
void tu_check_mix_prior_box(const struct eng_model *m, struct eng_ws *ws, const float *y0, int n,
                            uint64_t max_draws, tu_ref_log_prob_fn *ref, const void *ctx);
/* An mdn-kind model refuses forward and inverse (ENG_ERR_UNSUPPORTED, "... is not defined
 * for an mdn model"), and a y with a NaN in log_prob (naming y[0][1]) and in sampling. */
void tu_check_mix_refused(const struct eng_model *m, struct eng_ws *ws, const float *y0);

#endif
