/*
 * fuzz_request.c — libFuzzer target: a request body through the real request parsers of
 * proto/ (proto_request_parse for the v1 operations, proto_v2_parse for the Open Inference
 * Protocol), against the four shipped models of models/ (loaded once), then — when the
 * parser accepts — the engine operation on the parsed request and the answer written in
 * every format the operation has, the way the daemon does.
 *
 * Input: byte 0 chooses the model (bits 0-1: iresnet_toy (flow, numeric inverse), ik_cinn,
 * ik_inn, ik_mlp), the entry point (bits 2-4: 0-6 = v1 forward, inverse, sample, log_prob,
 * preimage, calibration, mmd; 7 = V2 infer) and the limits (bit 5: tight limits instead of the defaults,
 * so every limit's refusal is reached; bits 6-7: the answer format of a v1 sample: JSON,
 * CSV, NPY).  The rest is the body.
 *
 * Besides crashes, leaks and undefined behaviour, the target aborts when a request the
 * parser accepted is refused by the engine for a reason the parser should have caught
 * (shape, argument, non-finite input, unsupported operation): proto/ validates every
 * input before the engine sees it; and when a refusal says out of memory (nothing runs out
 * here, so the syntax check of engine/json_syntax.h accepted a body cJSON refused).  To keep an execution short, the engine runs only on
 * requests of a bounded size (rows x samples, preimage steps, solver iterations); the
 * parse and the refusal checks run on every input.
 *
 * The models are read from $INNSERVE_FUZZ_MODELS, else from the models/ directory of the
 * tree the target was built from (FUZZ_MODELS_DIR).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../engine/calib.h"
#include "../../engine/engine.h"
#include "../../proto/csv.h"
#include "../../proto/npy.h"
#include "../../proto/request.h"
#include "../../proto/response.h"
#include "../../proto/v2.h"

#ifndef FUZZ_MODELS_DIR
#define FUZZ_MODELS_DIR "models"
#endif

static const char *const MODEL_FILES[4] = {"iresnet_toy", "ik_cinn", "ik_inn", "ik_mlp"};
static struct eng_model *g_models[4];
static struct eng_ws *g_ws;

/* Work bounds for running the engine on an accepted request (the parse is not bounded). */
#define RUN_MAX_ROWS 64
#define RUN_MAX_SAMPLES 64
#define RUN_MAX_ITER 40
#define RUN_MAX_STEPS 20
#define RUN_MAX_SOLUTIONS 4
#define RUN_MAX_PAIRS 4     /* calibration: pairs x num_samples <= 4 x 16 */
#define RUN_MAX_PAIR_SAMPLES 16
#define RUN_MAX_MMD_POINTS 48
#define RUN_MAX_PERMUTATIONS 8

static void load_models(void)
{
    const char *dir = getenv("INNSERVE_FUZZ_MODELS");
    if (!dir)
        dir = FUZZ_MODELS_DIR;
    for (int i = 0; i < 4; i++) {
        char path[4096], err[ENG_ERR_LEN];
        snprintf(path, sizeof path, "%s/%s.safetensors", dir, MODEL_FILES[i]);
        if (eng_model_load(path, &g_models[i], err) != ENG_OK) {
            fprintf(stderr, "fuzz_request: cannot load %s (set INNSERVE_FUZZ_MODELS): %s\n",
                    path, err);
            abort();
        }
    }
    g_ws = eng_ws_new();
    if (!g_ws)
        abort();
}

static struct proto_limits tight_limits(void)
{
    struct proto_limits l = proto_limits_default();
    l.max_json_depth = 4;
    l.max_elements = 8;
    l.max_rows = 3;
    l.max_obs = 2;
    l.max_samples = 5;
    l.max_response_bytes = 1024;
    l.max_quantiles = 2;
    l.max_solver_iter = 5;
    l.max_preimage_targets = 2;
    l.max_preimage_solutions = 2;
    l.max_preimage_steps = 3;
    l.max_temperature = 2.0;
    l.default_num_samples = 3;
    return l;
}

/* The engine refused something the parser let through: a validation gap in proto/. */
static void check_status(enum eng_status st, const char *what, const char *err)
{
    if (st == ENG_ERR_SHAPE || st == ENG_ERR_ARG || st == ENG_ERR_NONFINITE ||
        st == ENG_ERR_UNSUPPORTED) {
        fprintf(stderr, "fuzz_request: the parser accepted a request the engine refuses "
                "(%s: %s: %s)\n", what, eng_status_str(st), err);
        abort();
    }
}

static void write_all(const struct eng_info *info, const struct proto_request *q,
                      const struct proto_result *r, bool v2, int fmt)
{
    struct proto_model_id id = {"m", "1", info->sha256};
    struct proto_buf b;
    proto_buf_init(&b, 1u << 22);
    if (v2)
        proto_v2_write_result(&b, &id, info, q, r);
    else if (r->op == PROTO_OP_SAMPLE && fmt == PROTO_FMT_CSV)
        proto_write_sample_csv(&b, info, r);
    else if (r->op == PROTO_OP_SAMPLE && fmt == PROTO_FMT_NPY) {
        proto_write_npy_f32(&b, r->samples, r->n, r->num_samples, info->dims.x);
        if (b.state == PROTO_BUF_OK &&
            b.len != proto_npy_size(r->n, r->num_samples, info->dims.x)) {
            fprintf(stderr, "fuzz_request: .npy of %zu bytes, proto_npy_size says %zu\n", b.len,
                    proto_npy_size(r->n, r->num_samples, info->dims.x));
            abort();
        }
    } else
        proto_write_result_json(&b, &id, info, r);
    size_t len;
    char *out = proto_buf_take(&b, &len);
    if (out && (v2 || fmt == PROTO_FMT_JSON)) {
        /* a JSON answer must parse */
        cJSON *j = cJSON_ParseWithLength(out, len);
        if (!j) {
            fprintf(stderr, "fuzz_request: the answer is not JSON: %.300s\n", out);
            abort();
        }
        cJSON_Delete(j);
    }
    free(out);
    proto_buf_free(&b);
}

static size_t f32s(long n) { return sizeof(float) * (size_t)(n > 0 ? n : 1); }
static size_t f64s(long n) { return sizeof(double) * (size_t)(n > 0 ? n : 1); }

/* Run the parsed request through the engine (bounded) and write the answer. */
static void run(const struct eng_model *m, struct proto_request *q, bool v2, int fmt)
{
    const struct eng_info *info = eng_model_info(m);
    const struct eng_dims *d = &info->dims;
    struct proto_result r;
    memset(&r, 0, sizeof r);
    r.op = q->op;
    char err[ENG_ERR_LEN] = "";
    enum eng_status st = ENG_OK;
    struct eng_solver_opts so = q->solver;
    if (so.max_iter > RUN_MAX_ITER || so.max_iter <= 0)
        so.max_iter = RUN_MAX_ITER;
    int yrows = q->y.rows;
    switch (q->op) {
    case PROTO_OP_FORWARD: {
        int n = q->x.rows;
        if (n > RUN_MAX_ROWS)
            return;
        r.n = n;
        if (info->kind != ENG_KIND_MLP) {
            r.z = malloc(f32s((long)n * d->z));
            r.log_det = malloc(f64s(n));
        }
        if (info->kind == ENG_KIND_INN || info->kind == ENG_KIND_MLP)
            r.y_out = malloc(f32s((long)n * d->y));
        st = eng_forward(m, g_ws, n, q->x.data, q->y.data, yrows, r.z, r.y_out, r.log_det, err);
        check_status(st, "forward", err);
        break;
    }
    case PROTO_OP_INVERSE: {
        int n = q->z.rows;
        if (n > RUN_MAX_ROWS)
            return;
        r.n = n;
        r.x = malloc(f32s((long)n * d->x));
        r.log_det = malloc(f64s(n));
        struct eng_solver_stats s = {0}, *sp = NULL;
        if (info->numeric_inverse) {
            r.has_solver = true;
            r.solver_rows = n;
            r.solver_method = q->solver.method;
            s.iterations = r.iterations = calloc((size_t)n + 1, sizeof(int));
            s.residual = r.residual = calloc((size_t)n + 1, sizeof(double));
            s.error_bound = r.error_bound = calloc((size_t)n + 1, sizeof(double));
            s.converged = r.converged = calloc((size_t)n + 1, sizeof(bool));
            sp = &s;
        }
        st = eng_inverse(m, g_ws, n, q->z.data, q->y.data, yrows, r.x, r.log_det, &so, sp, err);
        r.certified = s.certified;
        check_status(st, "inverse", err);
        break;
    }
    case PROTO_OP_LOG_PROB: {
        int n = q->x.rows;
        if (n > RUN_MAX_ROWS)
            return;
        r.n = n;
        r.log_prob = malloc(f64s(n));
        st = eng_log_prob(m, g_ws, n, q->x.data, q->y.data, yrows, r.log_prob, err);
        check_status(st, "log_prob", err);
        break;
    }
    case PROTO_OP_SAMPLE: {
        int n_obs = info->kind == ENG_KIND_FLOW ? 1 : q->y.rows;
        long N = q->num_samples;
        if ((long)n_obs * N > RUN_MAX_SAMPLES)
            return;
        long tot = (long)n_obs * N;
        r.n = n_obs;
        r.num_samples = N;
        r.seed = q->seed;
        r.temperature = q->temperature;
        r.outputs = q->outputs;
        r.samples = malloc(f32s(tot * d->x));
        r.sample_lp = malloc(f64s(tot));
        if (q->outputs & PROTO_OUT_RESIMULATION)
            r.rmse = calloc((size_t)n_obs + 1, sizeof(double));
        if (info->numeric_inverse) {
            r.has_solver = true;
            r.solver_rows = tot;
            r.solver_method = q->solver.method;
            r.iterations = calloc((size_t)tot + 1, sizeof(int));
            r.residual = calloc((size_t)tot + 1, sizeof(double));
            r.error_bound = calloc((size_t)tot + 1, sizeof(double));
            r.converged = calloc((size_t)tot + 1, sizeof(bool));
        }
        r.certified = true;
        for (int o = 0; o < n_obs && st == ENG_OK; o++) {
            size_t off = (size_t)o * (size_t)N;
            struct eng_solver_stats s = {0}, *sp = NULL;
            if (r.has_solver) {
                s = (struct eng_solver_stats){r.iterations + off, r.residual + off,
                                              r.error_bound + off, r.converged + off, false};
                sp = &s;
            }
            const float *y = info->kind == ENG_KIND_FLOW ? NULL : q->y.data + (size_t)o * d->y;
            st = eng_sample(m, g_ws, y, q->seed, (uint32_t)o, 0, (int)N, q->temperature,
                            r.samples + off * d->x, r.sample_lp + off, &so, sp, err);
            r.certified &= s.certified;
            check_status(st, "sample", err);
        }
        if (st == ENG_OK && (q->outputs & PROTO_OUT_SUMMARY)) {
            if (!proto_summary_compute(&r.summary, r.samples, r.sample_lp, n_obs, N, d->x,
                                       q->quantiles, q->n_quantiles))
                abort();
            r.has_summary = true;
        }
        break;
    }
    case PROTO_OP_PREIMAGE: {
        int nt = q->target.rows;
        struct eng_preimage_opts o = q->pre;
        if (nt > 4 || o.num_solutions > RUN_MAX_SOLUTIONS)
            return;
        if (o.max_steps > RUN_MAX_STEPS)
            o.max_steps = RUN_MAX_STEPS;
        int ns = o.num_solutions;
        r.n = nt;
        r.num_solutions = ns;
        r.pre_method = o.method;
        r.seed = q->seed;
        r.pre_x = malloc(f32s((long)nt * ns * d->x));
        r.pre_res = malloc(f64s((long)nt * ns));
        r.pre_found = calloc((size_t)nt + 1, sizeof(int));
        for (int t = 0; t < nt && st == ENG_OK; t++) {
            const float *y = q->y.rows ? q->y.data + (q->y.rows == 1 ? 0 : (size_t)t * d->y)
                                       : NULL;
            o.seed = q->seed + (uint64_t)t;
            st = eng_preimage(m, g_ws, q->target.data + (size_t)t * q->target.cols, y, &o,
                              r.pre_x + (size_t)t * ns * d->x, r.pre_res + (size_t)t * ns,
                              &r.pre_found[t], err);
            check_status(st, "preimage", err);
        }
        break;
    }
    case PROTO_OP_CALIBRATION: {
        /* what server/call.c's units and reduction do, on a bounded request */
        int N = q->x.rows, D = d->x;
        long L = q->num_samples;
        if (N > RUN_MAX_PAIRS || L > RUN_MAX_PAIR_SAMPLES || D > 8)
            return;
        const float *yv = q->y.rows ? q->y.data : NULL;
        r.n = N;
        r.num_samples = L;
        r.seed = q->seed;
        double ref[RUN_MAX_PAIRS * 8], lo[8], span[8];
        if (!proto_calib_alloc(&r.calib, N, D, q->bins, q->coverage_points, q->tarp_bins) ||
            !(r.samples = malloc(f32s(L * D))) || !(r.sample_lp = malloc(f64s(L))) ||
            !(r.log_prob = malloc(f64s(N))))
            abort();
        r.calib.diagnostics = q->diagnostics;
        r.calib.confidence = q->confidence;
        if (q->ref.rows)
            for (int i = 0; i < N * D; i++)
                ref[i] = q->ref.data[i];
        else
            cal_tarp_references(q->seed, N, D, q->x.data, ref);
        cal_tarp_scale(N, D, q->x.data, lo, span);
        st = eng_log_prob(m, g_ws, N, q->x.data, yv, yv ? N : 0, r.log_prob, err);
        check_status(st, "calibration log_prob", err);
        for (int i = 0; i < N && st == ENG_OK; i++) {
            const float *yi = yv ? yv + (size_t)i * d->y : NULL, *th = q->x.data + i * D;
            st = eng_sample(m, g_ws, yi, q->seed, (uint32_t)i, 0, (int)L, 1.0f, r.samples, NULL,
                            &so, NULL, err);
            check_status(st, "calibration sample", err);
            if (st == ENG_OK)
                st = eng_log_prob(m, g_ws, (int)L, r.samples, yi, yi ? 1 : 0, r.sample_lp, err);
            check_status(st, "calibration samples' log_prob", err);
            if (st != ENG_OK)
                break;
            cal_sbc_ranks((int)L, D, r.samples, th, r.calib.ranks + i * D);
            r.calib.hpd_ranks[i] = cal_hpd_rank((int)L, r.sample_lp, r.log_prob[i]);
            r.calib.tarp_counts[i] = cal_tarp_count((int)L, D, r.samples, th, ref + i * D,
                                                    q->z_score ? lo : NULL,
                                                    q->z_score ? span : NULL);
        }
        if (st == ENG_OK && !proto_calib_reduce(&r.calib, N, (int)L))
            abort();
        break;
    }
    case PROTO_OP_MMD: {
        long n = q->num_samples;
        int M = q->ref.rows;
        if (n + M > RUN_MAX_MMD_POINTS || q->permutations > RUN_MAX_PERMUTATIONS)
            return;
        r.n = 1;
        r.num_samples = n;
        r.seed = q->seed;
        r.mmd_m = M;
        r.n_scales = q->n_scales;
        memcpy(r.scales, q->scales, sizeof r.scales);
        r.unbiased = q->unbiased;
        r.permutations = q->permutations;
        if (!(r.samples = malloc(f32s((n + M) * d->x))))
            abort();
        memcpy(r.samples + n * d->x, q->ref.data, sizeof(float) * (size_t)M * d->x);
        st = eng_sample(m, g_ws, q->y.rows ? q->y.data : NULL, q->seed, 0, 0, (int)n,
                        q->temperature, r.samples, NULL, &so, NULL, err);
        check_status(st, "mmd sample", err);
        if (st == ENG_OK && !proto_mmd_reduce(&r, d->x))
            abort();
        break;
    }
    default:
        abort();
    }
    if (st == ENG_OK)
        write_all(info, q, &r, v2, fmt);
    proto_result_free(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!g_models[0])
        load_models();
    if (size < 1)
        return 0;
    unsigned sel = data[0];
    const struct eng_model *m = g_models[sel & 3];
    const struct eng_info *info = eng_model_info(m);
    unsigned entry = (sel >> 2) & 7;
    bool v2 = entry >= PROTO_OP_COUNT;
    struct proto_limits lim = (sel & 0x20) ? tight_limits() : proto_limits_default();
    int fmt = (int)((sel >> 6) % 3);
    /* the body is not NUL-terminated, as libmicrohttpd's buffer need not be */
    const char *body = (const char *)data + 1;
    size_t len = size - 1;

    struct proto_request q;
    struct proto_error e;
    memset(&q, 0x5a, sizeof q); /* the parser must not rely on a zeroed *out */
    enum proto_code rc = v2 ? proto_v2_parse(body, len, info, &lim, &q, &e)
                            : proto_request_parse((enum proto_op)entry, body, len, info, &lim,
                                                  &q, &e);
    if (rc != PROTO_OK) {
        if (rc == PROTO_E_NOMEM) {
            /* nothing runs out of memory here: the parser's syntax check and cJSON disagree */
            fprintf(stderr, "fuzz_request: out of memory reported: %s\n", e.msg);
            abort();
        }
        if (e.code != rc || !e.msg[0] || proto_code_http(rc) < 400) {
            fprintf(stderr, "fuzz_request: refusal without a message or code (%d)\n", rc);
            abort();
        }
        /* the error body must be JSON whatever the message quotes */
        size_t n;
        char *j = proto_error_json(&e, &n);
        if (j) {
            cJSON *p = cJSON_ParseWithLength(j, n);
            if (!p) {
                fprintf(stderr, "fuzz_request: error body is not JSON: %s\n", j);
                abort();
            }
            cJSON_Delete(p);
        }
        free(j);
        return 0;
    }
    if (!proto_op_supported(q.op, info->kind)) {
        fprintf(stderr, "fuzz_request: accepted %s for a %s model\n", proto_op_str(q.op),
                eng_kind_str(info->kind));
        abort();
    }
    run(m, &q, v2, fmt);
    proto_request_free(&q);
    return 0;
}
