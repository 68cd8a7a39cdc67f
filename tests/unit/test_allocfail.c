/*
 * test_allocfail.c — allocation-failure injection for the checkpoint loader and the
 * request path: every allocation of an operation fails in turn (the 1st, then the 2nd,
 * ... until the operation runs through without reaching the failing one), and each run
 * must end with a clean error (the operation's out-of-memory status with a message, never
 * a crash, never a success that is wrong) and free everything it allocated.
 *
 * How: this binary is linked with -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,
 * --wrap=free,--wrap=strdup,--wrap=aligned_alloc (Makefile), so every allocation of
 * engine/, proto/ and this file goes through the wrappers of allocwrap.c, and cJSON's go
 * there too (af_hooks).  The wrappers count live blocks (the leak check here) and fail
 * the allocation whose number is armed.  Under `make test-san` the same
 * test runs under ASan+UBSan, whose leak checker checks again.
 *
 * Covered: eng_model_load_mem and eng_model_load (with the self test) on a checkpoint of
 * every kind and block family; the v1 and V2 request parsers on a body per operation; the
 * engine operations with a fresh workspace (forward, inverse, log_prob, sample,
 * preimage); the answer writers (JSON, V2, CSV, NPY, error bodies, the sample summary);
 * for an image model, the nested JSON reader, the application/x-npy reader with its query
 * options, and the shaped JSON, NPY and PNG writers.
 * The daemon's call path around them (server/call.c: srv_call_new, the units on a
 * workspace, the answer and the response, inline and through the worker pool) is
 * tests/server/test_call_allocfail.c's, with the same wrappers.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../proto/answer.h"
#include "../../proto/csv.h"
#include "../../proto/npy.h"
#include "../../proto/png.h"
#include "../../proto/request.h"
#include "../../proto/response.h"
#include "../../proto/v2.h"
#include "allocwrap.h"
#include "opbodies.h"
#include "testutil.h"

/* ---- the loader ------------------------------------------------------------------------ */

static const char *const CKPTS[] = {
    "tests/fixtures/golden/rnvp.safetensors",
    "tests/fixtures/golden/cinn_condnet.safetensors",
    "tests/fixtures/golden/inn_standardized.safetensors",
    "tests/fixtures/golden/mlp_standardized.safetensors",
    "tests/fixtures/golden/aio_gin_legacy.safetensors",
    "tests/fixtures/golden/aio_exp_householder.safetensors",
    "tests/fixtures/golden/rqs_affine_clamp.safetensors",
    "tests/fixtures/golden/inv_dense.safetensors",
    "tests/fixtures/golden/householder_perm.safetensors",
    "tests/fixtures/golden/actnorm.safetensors",
    "tests/fixtures/golden/glow_split.safetensors",
    "tests/fixtures/golden/dtype_f64_f16_bf16.safetensors",
    "tests/fixtures/golden/maf_d5_residual.safetensors",
    "tests/fixtures/golden/iaf_d2_cond.safetensors",
    "tests/fixtures/golden/nsf_d5_cond.safetensors",
    "tests/fixtures/golden/nsf_d1_sbi.safetensors",
    "tests/fixtures/golden/mrqs_d2.safetensors",
    "tests/fixtures/golden/zuko_maf_d5_cond.safetensors",
    "tests/fixtures/golden/zuko_nsf_d1.safetensors",
    "tests/fixtures/golden/zuko_nsf_d2.safetensors",
    "tests/fixtures/iresnet_cert/freia_iresnet_L090.safetensors",
};
#define N_CKPTS (int)(sizeof CKPTS / sizeof CKPTS[0])

struct load_arg {
    const char *path;
    char *bytes;
    size_t len;
    bool from_file;
};

static int op_load(void *p, char why[512])
{
    struct load_arg *a = p;
    char err[ENG_ERR_LEN] = "";
    struct eng_model *m = NULL;
    enum eng_status st = a->from_file ? eng_model_load(a->path, &m, err)
                                      : eng_model_load_mem(a->bytes, a->len, a->path, 0, &m, err);
    if (st == ENG_OK) {
        if (!m) {
            snprintf(why, 512, "ENG_OK without a model");
            return -1;
        }
        eng_model_unref(m);
        return 1;
    }
    if (m || !err[0] || st != ENG_ERR_NOMEM) {
        snprintf(why, 512, "status %s%s: %.400s", eng_status_str(st),
                 m ? " with a model" : "", err[0] ? err : "(no message)");
        return -1;
    }
    return 0;
}

START_TEST(loader_survives_every_allocation_failing)
{
    af_hooks();
    struct load_arg a = {.path = CKPTS[_i]};
    a.bytes = tu_slurp(a.path, &a.len);
    ck_assert_ptr_nonnull(a.bytes);
    long n = af_run_failing(a.path, op_load, &a);
    ck_assert_msg(n > 10, "%s: only %ld allocations: is the wrapper linked?", a.path, n);
    free(a.bytes);
}
END_TEST

START_TEST(file_loader_survives_every_allocation_failing)
{
    af_hooks();
    struct load_arg a = {.path = "tests/fixtures/golden/rnvp.safetensors", .from_file = true};
    af_run_failing(a.path, op_load, &a);
}
END_TEST

/* ---- the request path ------------------------------------------------------------------ */

static const char *const MODELS[] = {"models/ik_cinn.safetensors", "models/ik_inn.safetensors",
                                     "models/ik_mlp.safetensors",
                                     "models/iresnet_toy.safetensors"};

struct req_arg {
    const struct eng_model *m;
    enum proto_op op;
    bool v2;
    const char *body;
    struct proto_request q;
};

static int op_parse(void *p, char why[512])
{
    struct req_arg *a = p;
    const struct eng_info *info = eng_model_info(a->m);
    struct proto_limits lim = proto_limits_default();
    struct proto_error e;
    memset(&e, 0, sizeof e);
    enum proto_code rc =
        a->v2 ? proto_v2_parse(a->body, strlen(a->body), info, &lim, &a->q, &e)
              : proto_request_parse(a->op, a->body, strlen(a->body), info, &lim, &a->q, &e);
    if (rc == PROTO_OK)
        return 1;
    if (rc != PROTO_E_NOMEM || !e.msg[0]) {
        snprintf(why, 512, "%s (%d): %.400s", proto_code_str(rc), proto_code_http(rc), e.msg);
        return -1;
    }
    return 0;
}

/* A parse that must leave nothing behind: the request is freed at once. */
static int op_parse_free(void *p, char why[512])
{
    int rc = op_parse(p, why);
    if (rc == 1)
        proto_request_free(&((struct req_arg *)p)->q);
    return rc;
}

static size_t f32s(long n) { return sizeof(float) * (size_t)(n > 0 ? n : 1); }
static size_t f64s(long n) { return sizeof(double) * (size_t)(n > 0 ? n : 1); }

/* The engine operation of a parsed request on a fresh workspace, into a result, and the
 * answer written in every format: what the daemon does with it, allocations included. */
static int op_run(void *p, char why[512])
{
    struct req_arg *a = p;
    const struct eng_model *m = a->m;
    const struct eng_info *info = eng_model_info(m);
    const struct eng_dims *d = &info->dims;
    const struct proto_request *q = &a->q;
    struct proto_result r;
    memset(&r, 0, sizeof r);
    r.op = q->op;
    char err[ENG_ERR_LEN] = "";
    enum eng_status st = ENG_ERR_NOMEM;
    bool ok = true;
    struct eng_ws *ws = eng_ws_new();
    if (!ws)
        goto out;
    if (q->op == PROTO_OP_FORWARD) {
        int n = r.n = q->x.rows;
        if (info->kind != ENG_KIND_MLP)
            ok = (r.z = malloc(f32s((long)n * d->z))) && (r.log_det = malloc(f64s(n)));
        if (ok && (info->kind == ENG_KIND_INN || info->kind == ENG_KIND_MLP))
            ok = (r.y_out = malloc(f32s((long)n * d->y))) != NULL;
        if (ok)
            st = eng_forward(m, ws, n, q->x.data, q->y.data, q->y.rows, r.z, r.y_out, r.log_det,
                             err);
    } else if (q->op == PROTO_OP_INVERSE || q->op == PROTO_OP_LOG_PROB) {
        int n = r.n = q->op == PROTO_OP_INVERSE ? q->z.rows : q->x.rows;
        if (q->op == PROTO_OP_LOG_PROB) {
            if ((r.log_prob = malloc(f64s(n))))
                st = eng_log_prob(m, ws, n, q->x.data, q->y.data, q->y.rows, r.log_prob, err);
        } else {
            ok = (r.x = malloc(f32s((long)n * d->x))) && (r.log_det = malloc(f64s(n)));
            struct eng_solver_stats s = {0}, *sp = NULL;
            if (ok && info->numeric_inverse) {
                r.has_solver = true;
                r.solver_rows = n;
                ok = (s.iterations = r.iterations = calloc((size_t)n, sizeof(int))) &&
                     (s.residual = r.residual = calloc((size_t)n, sizeof(double))) &&
                     (s.error_bound = r.error_bound = calloc((size_t)n, sizeof(double))) &&
                     (s.converged = r.converged = calloc((size_t)n, sizeof(bool)));
                sp = &s;
            }
            if (ok)
                st = eng_inverse(m, ws, n, q->z.data, q->y.data, q->y.rows, r.x, r.log_det,
                                 &q->solver, sp, err);
            r.certified = s.certified;
        }
    } else if (q->op == PROTO_OP_SAMPLE) {
        int n_obs = r.n = info->kind == ENG_KIND_FLOW ? 1 : q->y.rows;
        long N = r.num_samples = q->num_samples, tot = (long)n_obs * N;
        r.seed = q->seed;
        r.temperature = q->temperature;
        r.outputs = q->outputs;
        ok = (r.samples = malloc(f32s(tot * d->x))) && (r.sample_lp = malloc(f64s(tot)));
        if (ok && info->numeric_inverse) {
            r.has_solver = true;
            r.solver_rows = tot;
            ok = (r.iterations = calloc((size_t)tot, sizeof(int))) &&
                 (r.residual = calloc((size_t)tot, sizeof(double))) &&
                 (r.error_bound = calloc((size_t)tot, sizeof(double))) &&
                 (r.converged = calloc((size_t)tot, sizeof(bool)));
        }
        st = ok ? ENG_OK : ENG_ERR_NOMEM;
        for (int o = 0; o < n_obs && st == ENG_OK; o++) {
            size_t off = (size_t)o * (size_t)N;
            struct eng_solver_stats s = {0}, *sp = NULL;
            if (r.has_solver) {
                s = (struct eng_solver_stats){r.iterations + off, r.residual + off,
                                              r.error_bound + off, r.converged + off, false};
                sp = &s;
            }
            const float *y = info->kind == ENG_KIND_FLOW ? NULL : q->y.data + (size_t)o * d->y;
            st = eng_sample(m, ws, y, q->seed, (uint32_t)o, 0, (int)N, q->temperature,
                            r.samples + off * d->x, r.sample_lp + off, &q->solver, sp, err);
        }
        if (st == ENG_OK && (q->outputs & PROTO_OUT_SUMMARY)) {
            if (proto_summary_compute(&r.summary, r.samples, r.sample_lp, n_obs, N, d->x,
                                      q->quantiles, q->n_quantiles))
                r.has_summary = true;
            else
                st = ENG_ERR_NOMEM;
        }
    } else if (q->op == PROTO_OP_PREIMAGE) {
        int nt = r.n = q->target.rows, ns = r.num_solutions = q->pre.num_solutions;
        r.pre_method = q->pre.method;
        ok = (r.pre_x = malloc(f32s((long)nt * ns * d->x))) &&
             (r.pre_res = malloc(f64s((long)nt * ns))) &&
             (r.pre_found = calloc((size_t)nt, sizeof(int)));
        st = ok ? ENG_OK : ENG_ERR_NOMEM;
        for (int t = 0; t < nt && st == ENG_OK; t++) {
            const float *y = q->y.rows ? q->y.data + (q->y.rows == 1 ? 0 : (size_t)t * d->y)
                                       : NULL;
            st = eng_preimage(m, ws, q->target.data + (size_t)t * q->target.cols, y, &q->pre,
                              r.pre_x + (size_t)t * ns * d->x, r.pre_res + (size_t)t * ns,
                              &r.pre_found[t], err);
        }
    }
    if (st != ENG_OK && st != ENG_ERR_NOMEM) {
        snprintf(why, 512, "%s: %.400s", eng_status_str(st), err);
        st = ENG_ERR_ARG;
        goto out;
    }
    if (st != ENG_OK)
        goto out;
    /* the answers: each writer reports a failed allocation in the buffer's state */
    struct proto_model_id id = {"m", "1", info->sha256};
    for (int f = 0; f < 4; f++) {
        struct proto_buf b;
        proto_buf_init(&b, 0);
        if (f == 0)
            proto_write_result_json(&b, &id, info, &r);
        else if (f == 1 && a->v2)
            proto_v2_write_result(&b, &id, info, q, &r);
        else if (f == 2 && q->op == PROTO_OP_SAMPLE)
            proto_write_sample_csv(&b, info, &r);
        else if (f == 3 && q->op == PROTO_OP_SAMPLE)
            proto_write_npy_f32(&b, r.samples, r.n, r.num_samples, d->x);
        else
            continue;
        size_t len = 0;
        bool failed = proto_buf_failed(&b);
        char *out = proto_buf_take(&b, &len);
        if (!out || failed) {
            if (b.state != PROTO_BUF_NOMEM && out)
                snprintf(why, 512, "writer %d: buffer state %d", f, b.state);
            st = out && b.state != PROTO_BUF_NOMEM ? ENG_ERR_ARG : ENG_ERR_NOMEM;
        } else if (len == 0) {
            snprintf(why, 512, "writer %d: an empty answer", f);
            st = ENG_ERR_ARG;
        }
        free(out);
        proto_buf_free(&b);
    }
    struct proto_error e;
    proto_errorf(&e, PROTO_E_FIELD, "field 'x' is wrong");
    size_t elen;
    char *ej = proto_error_json(&e, &elen);
    if (!ej)
        st = ENG_ERR_NOMEM;
    free(ej);
out:
    proto_result_free(&r);
    eng_ws_free(ws);
    return st == ENG_OK ? 1 : st == ENG_ERR_NOMEM ? 0 : -1;
}

static struct eng_model *load_model(const char *path)
{
    char err[ENG_ERR_LEN];
    struct eng_model *m = NULL;
    ck_assert_msg(eng_model_load(path, &m, err) == ENG_OK, "%s: %s", path, err);
    return m;
}

/* ---- image models ------------------------------------------------------------------------ */

struct img_arg {
    struct eng_info info;  /* a gray flow [1, 2, 3] */
    const char *json;      /* forward, x nested */
    const char *npy;       /* inverse, z as (2, 1, 2, 3) */
    size_t npy_len;
};

/* 0 when the buffer ran out of memory, -1 when it failed otherwise, 1 when it holds an answer. */
static int buf_done(struct proto_buf *b, char why[512])
{
    int rc = b->state == PROTO_BUF_OK ? 1 : b->state == PROTO_BUF_NOMEM ? 0 : -1;
    if (rc < 0)
        snprintf(why, 512, "a writer passed its cap");
    proto_buf_free(b);
    return rc;
}

static int op_image(void *p, char why[512])
{
    struct img_arg *a = p;
    struct proto_limits lim = proto_limits_default();
    struct proto_request q, z;
    struct proto_error e;
    enum proto_code rc = proto_request_parse(PROTO_OP_FORWARD, a->json, strlen(a->json),
                                             &a->info, &lim, &q, &e);
    if (rc != PROTO_OK) {
        snprintf(why, 512, "%s: %.400s", proto_code_str(rc), e.msg);
        return rc == PROTO_E_NOMEM && e.msg[0] ? 0 : -1;
    }
    struct proto_query qp = {2, {"tol", "method"}, {"1e-5", "newton"}};
    rc = proto_request_parse_npy(PROTO_OP_INVERSE, a->npy, a->npy_len, &qp, &a->info, &lim, &z,
                                 &e);
    if (rc != PROTO_OK) {
        proto_request_free(&q);
        snprintf(why, 512, "%s: %.400s", proto_code_str(rc), e.msg);
        return rc == PROTO_E_NOMEM && e.msg[0] ? 0 : -1;
    }
    double ld[2] = {0.5, -0.5};
    struct proto_result r;
    memset(&r, 0, sizeof r);
    r.op = PROTO_OP_FORWARD;
    r.n = q.x.rows;
    r.z = q.x.data;
    r.log_det = ld;
    struct proto_model_id id = {"m", "1", "abc"};
    struct proto_buf b;
    proto_buf_init(&b, 0);
    proto_write_result_json(&b, &id, &a->info, &r);
    int out = buf_done(&b, why);
    /* the samples: the rows of z as 1 observation x 2 samples, in NPY and PNG */
    struct proto_request s;
    memset(&s, 0, sizeof s);
    s.op = PROTO_OP_SAMPLE;
    s.num_samples = 2;
    s.outputs = PROTO_OUT_SAMPLES;
    s.png = (struct proto_png_opts){-1.0, 1.0, 2};
    memset(&r, 0, sizeof r);
    r.op = PROTO_OP_SAMPLE;
    r.n = 1;
    r.num_samples = 2;
    r.samples = z.z.data;
    r.outputs = PROTO_OUT_SAMPLES;
    for (int f = PROTO_FMT_NPY; out == 1 && f <= PROTO_FMT_PNG; f++) {
        proto_buf_init(&b, 0);
        proto_answer_write(&b, &id, &a->info, &s, &r, (enum proto_format)f, false);
        out = buf_done(&b, why);
    }
    proto_request_free(&q);
    proto_request_free(&z);
    return out;
}

START_TEST(image_paths_survive_every_allocation_failing)
{
    af_hooks();
    struct img_arg a;
    memset(&a, 0, sizeof a);
    a.info.kind = ENG_KIND_FLOW;
    a.info.dims = (struct eng_dims){6, 0, 6, 0, 0};
    a.info.description = "";
    a.info.blocks_json = "[]";
    a.info.x_rank = a.info.z_rank = 3;
    int sh[3] = {1, 2, 3};
    memcpy(a.info.x_shape, sh, sizeof sh);
    memcpy(a.info.z_shape, sh, sizeof sh);
    a.json = "{\"x\": [[[[1, 2, 3], [4, 5, 6]]], [[[0.5, 0, -1], [2, 0.25, 1]]]]}";
    float v[12] = {0.1f, 0.2f, 0.3f, -0.4f, 0.5f, 0.6f, 0.7f, -0.8f, 0.9f, 1.0f, 0.0f, -1.5f};
    long zs[4] = {2, 1, 2, 3};
    struct proto_buf b;
    proto_buf_init(&b, 0);
    proto_write_npy_nd(&b, v, 4, zs);
    a.npy = b.p;
    a.npy_len = b.len;
    long n = af_run_failing("image paths", op_image, &a);
    ck_assert_msg(n > 10, "only %ld allocations", n);
    proto_buf_free(&b);
}
END_TEST

START_TEST(request_parse_survives_every_allocation_failing)
{
    af_hooks();
    struct eng_model *m = load_model(MODELS[_i]);
    const struct eng_info *info = eng_model_info(m);
    for (int op = 0; op <= PROTO_OP_COUNT; op++) {
        struct req_arg a = {.m = m, .op = (enum proto_op)op, .v2 = op == PROTO_OP_COUNT};
        a.body = a.v2 ? ob_v2_body(info->kind) : ob_v1_body(info->kind, a.op);
        if (!a.v2 && !proto_op_supported(a.op, info->kind))
            continue;
        af_run_failing(a.body, op_parse_free, &a);
    }
    eng_model_unref(m);
}
END_TEST

START_TEST(request_run_survives_every_allocation_failing)
{
    af_hooks();
    struct eng_model *m = load_model(MODELS[_i]);
    const struct eng_info *info = eng_model_info(m);
    for (int op = 0; op <= PROTO_OP_COUNT; op++) {
        struct req_arg a = {.m = m, .op = (enum proto_op)op, .v2 = op == PROTO_OP_COUNT};
        a.body = a.v2 ? ob_v2_body(info->kind) : ob_v1_body(info->kind, a.op);
        if (!a.v2 && !proto_op_supported(a.op, info->kind))
            continue;
        /* calibration and mmd run only through the server's calls:
         * tests/server/test_call_allocfail.c fails their allocations */
        if (!a.v2 && (a.op == PROTO_OP_CALIBRATION || a.op == PROTO_OP_MMD))
            continue;
        char why[512] = "";
        ck_assert_msg(op_parse(&a, why) == 1, "%s: %s", a.body, why);
        long n = af_run_failing(a.body, op_run, &a);
        ck_assert_msg(n >= 2, "%s: %ld allocations", a.body, n);
        proto_request_free(&a.q);
    }
    eng_model_unref(m);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("allocfail");
    TCase *tc = tcase_create("loader");
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, loader_survives_every_allocation_failing, 0, N_CKPTS);
    tcase_add_test(tc, file_loader_survives_every_allocation_failing);
    suite_add_tcase(s, tc);
    tc = tcase_create("request");
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, request_parse_survives_every_allocation_failing, 0, 4);
    tcase_add_loop_test(tc, request_run_survives_every_allocation_failing, 0, 4);
    tcase_add_test(tc, image_paths_survive_every_allocation_failing);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN
