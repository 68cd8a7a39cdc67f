/*
 * response.c — JSON answers of the v1 API (response.h): results of model operations,
 * metadata, certificate and model list.  Large arrays go through proto_buf_f32_list /
 * proto_buf_f64_list; only small fixed strings are formatted with printf.
 */
#include "response.h"
#include "image.h"
#include "../engine/calib.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void proto_result_free(struct proto_result *r)
{
    free(r->z);
    free(r->y_out);
    free(r->log_det);
    free(r->x);
    free(r->log_prob);
    free(r->samples);
    free(r->sample_lp);
    if (r->has_summary)
        proto_summary_free(&r->summary);
    free(r->rmse);
    free(r->drawn);
    free(r->accepted);
    free(r->iterations);
    free(r->residual);
    free(r->error_bound);
    free(r->converged);
    free(r->pre_x);
    free(r->pre_res);
    free(r->pre_found);
    proto_calib_free(&r->calib);
    memset(r, 0, sizeof *r);
}

bool proto_calib_alloc(struct proto_calib *c, int N, int D, int bins, int K, int tarp_bins)
{
    size_t n = (size_t)(N > 0 ? N : 1), d = (size_t)(D > 0 ? D : 1);
    size_t k1 = (size_t)K + 1, t1 = (size_t)tarp_bins + 1, b = (size_t)bins;
    c->D = D;
    c->bins = bins;
    c->K = K;
    c->tarp_bins = tarp_bins;
    return (c->ranks = calloc(n * d, sizeof(int))) && (c->hpd_ranks = calloc(n, sizeof(int))) &&
           (c->tarp_counts = calloc(n, sizeof(int))) &&
           (c->ks_stat = calloc(d, sizeof(double))) && (c->ks_p = calloc(d, sizeof(double))) &&
           (c->edges = calloc(b + 1, sizeof(double))) &&
           (c->counts = calloc(d * (b ? b : 1), sizeof(long))) &&
           (c->levels = calloc(k1, sizeof(double))) && (c->lower = calloc(k1, sizeof(double))) &&
           (c->upper = calloc(k1, sizeof(double))) && (c->hpd_emp = calloc(k1, sizeof(double))) &&
           (c->central_emp = calloc(d * k1, sizeof(double))) &&
           (c->alpha = calloc(t1, sizeof(double))) && (c->ecp = calloc(t1, sizeof(double)));
}

void proto_calib_free(struct proto_calib *c)
{
    free(c->ranks);
    free(c->hpd_ranks);
    free(c->tarp_counts);
    free(c->ks_stat);
    free(c->ks_p);
    free(c->edges);
    free(c->counts);
    free(c->levels);
    free(c->lower);
    free(c->upper);
    free(c->hpd_emp);
    free(c->central_emp);
    free(c->alpha);
    free(c->ecp);
    memset(c, 0, sizeof *c);
}

bool proto_calib_reduce(struct proto_calib *c, int N, int L)
{
    int D = c->D, K = c->K, T = c->tarp_bins;
    size_t nd = (size_t)(N > 2 * (T + 1) ? N : 2 * (T + 1));
    double *scratch = malloc(sizeof(double) * nd);
    int *cr = malloc(sizeof(int) * (size_t)(N > 0 ? N : 1));
    long *tl = malloc(sizeof(long) * (size_t)(T > 0 ? T : 1));
    bool ok = scratch && cr && tl;
    if (ok && (c->diagnostics & PROTO_DIAG_SBC)) {
        for (int j = 0; j < D; j++) {
            cal_rank_ks(N, D, c->ranks, j, L, scratch, &c->ks_stat[j], &c->ks_p[j]);
            /* NaN: the exact distribution's matrix could not be allocated */
            ok &= !isnan(c->ks_p[j]);
            cal_rank_histogram(N, D, c->ranks, j, L, c->bins, c->edges,
                               c->counts + (size_t)j * c->bins);
        }
    }
    if (ok && (c->diagnostics & PROTO_DIAG_COVERAGE)) {
        cal_band(N, L, K, c->confidence, c->levels, c->lower, c->upper);
        cal_coverage(N, c->hpd_ranks, 1, L, K, c->hpd_emp);
        for (int j = 0; j < D; j++) {
            cal_central_ranks(N, D, c->ranks, j, L, cr);
            cal_coverage(N, cr, 1, L, K, c->central_emp + (size_t)j * (K + 1));
        }
    }
    if (ok && (c->diagnostics & PROTO_DIAG_TARP)) {
        cal_tarp_curve(N, c->tarp_counts, L, T, c->alpha, c->ecp, tl);
        cal_tarp_check(T, c->alpha, c->ecp, scratch, &c->atc, &c->tarp_p);
        ok &= !isnan(c->tarp_p);
    }
    /* sbi's advice (run_sbc, check_sbc, run_tarp) */
    c->n_warnings = 0;
    if (N < 100)
        snprintf(c->warnings[c->n_warnings++], sizeof c->warnings[0], "only %d pair%s: "
                 "calibration checks should rest on at least 100 pairs (x*, y)", N,
                 N == 1 ? "" : "s");
    if (L < 100)
        snprintf(c->warnings[c->n_warnings++], sizeof c->warnings[0], "only %d posterior "
                 "sample%s per pair: ranks should rest on at least 100", L, L == 1 ? "" : "s");
    free(scratch);
    free(cr);
    free(tl);
    return ok;
}

bool proto_mmd_reduce(struct proto_result *r, int dims_x)
{
    int n = (int)r->num_samples, nz = n + r->mmd_m;
    double *K = malloc(sizeof(double) * (size_t)nz * (size_t)nz);
    int *idx = malloc(sizeof(int) * (size_t)nz);
    bool ok = K && idx;
    if (ok) {
        cal_imq_matrix(nz, dims_x, r->samples, r->n_scales, r->scales, K);
        r->mmd2 = cal_mmd2(nz, n, K, NULL, r->unbiased);
        r->mmd_p = r->permutations > 0 ? cal_mmd_pvalue(nz, n, K, r->unbiased, r->mmd2, r->seed,
                                                        r->permutations, idx)
                                       : NAN;
    }
    free(K);
    free(idx);
    return ok;
}

static void head(struct proto_buf *b, const struct proto_model_id *id)
{
    proto_buf_puts(b, "{\"model\":");
    proto_buf_json_str(b, id->name);
    proto_buf_puts(b, ",\"version\":");
    proto_buf_json_str(b, id->version);
    proto_buf_puts(b, ",\"sha256\":\"");
    proto_buf_puts(b, id->sha256);
    proto_buf_putc(b, '"');
}

void proto_write_f32_rows(struct proto_buf *b, const float *v, long n, int w)
{
    proto_buf_putc(b, '[');
    for (long i = 0; i < n && !proto_buf_failed(b); i++) {
        if (i)
            proto_buf_putc(b, ',');
        proto_buf_putc(b, '[');
        proto_buf_f32_list(b, v + (size_t)i * w, (size_t)w);
        proto_buf_putc(b, ']');
    }
    proto_buf_putc(b, ']');
}

static void f64_array(struct proto_buf *b, const double *v, long n)
{
    proto_buf_putc(b, '[');
    proto_buf_f64_list(b, v, (size_t)n);
    proto_buf_putc(b, ']');
}

/* n x w doubles as nested rows */
static void f64_rows(struct proto_buf *b, const double *v, long n, long w)
{
    proto_buf_putc(b, '[');
    for (long i = 0; i < n && !proto_buf_failed(b); i++) {
        if (i)
            proto_buf_putc(b, ',');
        f64_array(b, v + (size_t)i * w, w);
    }
    proto_buf_putc(b, ']');
}

void proto_write_solver(struct proto_buf *b, const struct proto_result *r, int nest)
{
    long n = r->solver_rows;
    long outer = nest > 0 ? nest : 1, inner = n / outer;
    const char *m = eng_solve_method_str(r->solver_method);
    proto_buf_puts(b, "{\"method\":\"");
    proto_buf_puts(b, m ? m : eng_solve_method_str(ENG_SOLVE_AUTO));
    proto_buf_puts(b, "\",\"iterations\":");
    for (int k = 0; k < 4; k++) {
        if (k == 1)
            proto_buf_puts(b, ",\"residual\":");
        else if (k == 2)
            proto_buf_puts(b, ",\"error_bound\":");
        else if (k == 3)
            proto_buf_puts(b, ",\"converged\":");
        if (nest > 0)
            proto_buf_putc(b, '[');
        for (long o = 0; o < outer && !proto_buf_failed(b); o++) {
            if (o)
                proto_buf_putc(b, ',');
            proto_buf_putc(b, '[');
            for (long i = o * inner; i < (o + 1) * inner; i++) {
                if (i > o * inner)
                    proto_buf_putc(b, ',');
                if (k == 0)
                    proto_buf_i64(b, r->iterations ? r->iterations[i] : 0);
                else if (k == 1)
                    proto_buf_f64(b, r->residual ? r->residual[i] : 0.0);
                else if (k == 2)
                    proto_buf_f64(b, r->error_bound ? r->error_bound[i] : INFINITY);
                else
                    proto_buf_puts(b, r->converged && !r->converged[i] ? "false" : "true");
            }
            proto_buf_putc(b, ']');
        }
        if (nest > 0)
            proto_buf_putc(b, ']');
    }
    long bad = 0;
    for (long i = 0; i < n; i++)
        bad += r->converged && !r->converged[i];
    proto_buf_puts(b, ",\"unconverged\":");
    proto_buf_i64(b, bad);
    proto_buf_puts(b, ",\"certified\":");
    proto_buf_puts(b, r->certified ? "true}" : "false}");
}

/* ,"acceptance":{"rate":[...],"drawn":[...],"accepted":[...]} when r has counts. */
static void write_acceptance(struct proto_buf *b, const struct proto_result *r)
{
    if (!r->drawn)
        return;
    proto_buf_puts(b, ",\"acceptance\":{\"rate\":[");
    for (int i = 0; i < r->n_accept; i++) {
        if (i)
            proto_buf_putc(b, ',');
        proto_buf_f64(b, r->drawn[i] ? (double)r->accepted[i] / (double)r->drawn[i] : 0.0);
    }
    proto_buf_puts(b, "],\"drawn\":[");
    for (int i = 0; i < r->n_accept; i++) {
        if (i)
            proto_buf_putc(b, ',');
        proto_buf_u64(b, r->drawn[i]);
    }
    proto_buf_puts(b, "],\"accepted\":[");
    for (int i = 0; i < r->n_accept; i++) {
        if (i)
            proto_buf_putc(b, ',');
        proto_buf_u64(b, r->accepted[i]);
    }
    proto_buf_puts(b, "]}");
}

static void write_sample(struct proto_buf *b, const struct eng_info *info,
                         const struct proto_result *r)
{
    const long N = r->num_samples;
    proto_buf_puts(b, ",\"seed\":");
    proto_buf_u64(b, r->seed);
    proto_buf_puts(b, ",\"num_samples\":");
    proto_buf_i64(b, N);
    proto_buf_puts(b, ",\"temperature\":");
    proto_buf_f32(b, r->temperature);
    struct proto_shape xs = proto_shape_x(info);
    long lead[2] = {r->n, N};
    proto_buf_puts(b, ",\"shape\":[");
    proto_buf_i64(b, r->n);
    proto_buf_putc(b, ',');
    proto_buf_i64(b, N);
    for (int k = 0; k < xs.rank; k++) {
        proto_buf_putc(b, ',');
        proto_buf_i64(b, xs.dim[k]);
    }
    proto_buf_putc(b, ']');
    if (r->outputs & PROTO_OUT_SAMPLES) {
        proto_buf_puts(b, ",\"samples\":");
        proto_write_f32_shaped(b, r->samples, 2, lead, &xs);
    }
    if ((r->outputs & PROTO_OUT_LOG_PROB) && r->sample_lp) {
        proto_buf_puts(b, ",\"log_prob\":");
        f64_rows(b, r->sample_lp, r->n, N);
    }
    if (r->has_summary) {
        const struct proto_summary *s = &r->summary;
        proto_buf_puts(b, ",\"summary\":{\"mean\":");
        proto_write_f32_shaped(b, s->mean, 1, lead, &xs);
        proto_buf_puts(b, ",\"std\":");
        proto_write_f32_shaped(b, s->std, 1, lead, &xs);
        proto_buf_puts(b, ",\"quantiles\":{");
        for (int k = 0; k < s->nq; k++) {
            if (k)
                proto_buf_putc(b, ',');
            proto_buf_putc(b, '"');
            proto_buf_f64(b, s->q[k]);
            proto_buf_puts(b, "\":");
            proto_write_f32_shaped(b, s->quant + (size_t)k * s->n_obs * s->dx, 1, lead, &xs);
        }
        proto_buf_putc(b, '}');
        if (s->map) {
            proto_buf_puts(b, ",\"map\":");
            proto_write_f32_shaped(b, s->map, 1, lead, &xs);
            proto_buf_puts(b, ",\"map_index\":[");
            for (int o = 0; o < s->n_obs; o++) {
                if (o)
                    proto_buf_putc(b, ',');
                proto_buf_i64(b, s->map_index[o]);
            }
            proto_buf_putc(b, ']');
        }
        proto_buf_putc(b, '}');
    }
    if (r->rmse) {
        proto_buf_puts(b, ",\"resimulation\":{\"rmse\":");
        f64_array(b, r->rmse, r->n);
        proto_buf_putc(b, '}');
    }
    write_acceptance(b, r);
}

static void write_preimage(struct proto_buf *b, const struct eng_info *info,
                           const struct proto_result *r)
{
    const int dx = info->dims.x;
    struct proto_shape xs = proto_shape_x(info);
    proto_buf_puts(b, ",\"method\":\"");
    proto_buf_puts(b, r->pre_method == ENG_PREIMAGE_EVOLUTIONARY ? "evolutionary" : "gradient");
    proto_buf_puts(b, "\",\"seed\":");
    proto_buf_u64(b, r->seed);
    proto_buf_puts(b, ",\"solutions\":[");
    for (int t = 0; t < r->n && !proto_buf_failed(b); t++) {
        if (t)
            proto_buf_putc(b, ',');
        proto_buf_putc(b, '[');
        for (int s = 0; s < r->pre_found[t]; s++) {
            size_t row = (size_t)t * r->num_solutions + s;
            if (s)
                proto_buf_putc(b, ',');
            proto_buf_puts(b, "{\"x\":");
            proto_write_f32_shaped(b, r->pre_x + row * dx, 0, NULL, &xs);
            proto_buf_puts(b, ",\"residual\":");
            proto_buf_f64(b, r->pre_res[row]);
            proto_buf_putc(b, '}');
        }
        proto_buf_putc(b, ']');
    }
    proto_buf_putc(b, ']');
}

/* n x w ints as nested rows */
static void int_rows(struct proto_buf *b, const int *v, long n, int w)
{
    proto_buf_putc(b, '[');
    for (long i = 0; i < n && !proto_buf_failed(b); i++) {
        if (i)
            proto_buf_putc(b, ',');
        if (w > 0)
            proto_buf_putc(b, '[');
        for (int j = 0; j < (w > 0 ? w : 1); j++) {
            if (j)
                proto_buf_putc(b, ',');
            proto_buf_i64(b, v[(size_t)i * (w > 0 ? w : 1) + j]);
        }
        if (w > 0)
            proto_buf_putc(b, ']');
    }
    proto_buf_putc(b, ']');
}

/* A number, or null when it is not finite (JSON has no NaN). */
static void f64_or_null(struct proto_buf *b, double v)
{
    if (isfinite(v))
        proto_buf_f64(b, v);
    else
        proto_buf_puts(b, "null");
}

static void write_calibration(struct proto_buf *b, const struct proto_result *r)
{
    const struct proto_calib *c = &r->calib;
    const int D = c->D;
    proto_buf_puts(b, ",\"seed\":");
    proto_buf_u64(b, r->seed);
    proto_buf_puts(b, ",\"num_samples\":");
    proto_buf_i64(b, r->num_samples);
    proto_buf_puts(b, ",\"n\":");
    proto_buf_i64(b, r->n);
    /* sbi's get_nltp: -log q(theta*_i | y_i) per pair */
    proto_buf_puts(b, ",\"nltp\":[");
    for (int i = 0; i < r->n && !proto_buf_failed(b); i++) {
        if (i)
            proto_buf_putc(b, ',');
        proto_buf_f64(b, -r->log_prob[i]);
    }
    proto_buf_putc(b, ']');
    if (c->diagnostics & PROTO_DIAG_SBC) {
        proto_buf_puts(b, ",\"sbc\":{\"ranks\":");
        int_rows(b, c->ranks, r->n, D);
        proto_buf_puts(b, ",\"ks_statistic\":");
        f64_array(b, c->ks_stat, D);
        proto_buf_puts(b, ",\"ks_pvalue\":[");
        for (int j = 0; j < D; j++) {
            if (j)
                proto_buf_putc(b, ',');
            f64_or_null(b, c->ks_p[j]);
        }
        proto_buf_puts(b, "],\"histogram\":{\"edges\":");
        f64_array(b, c->edges, c->bins + 1);
        proto_buf_puts(b, ",\"counts\":[");
        for (int j = 0; j < D && !proto_buf_failed(b); j++) {
            if (j)
                proto_buf_putc(b, ',');
            proto_buf_putc(b, '[');
            for (int k = 0; k < c->bins; k++) {
                if (k)
                    proto_buf_putc(b, ',');
                proto_buf_i64(b, c->counts[(size_t)j * c->bins + k]);
            }
            proto_buf_putc(b, ']');
        }
        proto_buf_puts(b, "]}}");
    }
    if (c->diagnostics & PROTO_DIAG_COVERAGE) {
        long k1 = c->K + 1;
        proto_buf_puts(b, ",\"coverage\":{\"levels\":");
        f64_array(b, c->levels, k1);
        proto_buf_puts(b, ",\"confidence\":");
        proto_buf_f64(b, c->confidence);
        proto_buf_puts(b, ",\"lower\":");
        f64_array(b, c->lower, k1);
        proto_buf_puts(b, ",\"upper\":");
        f64_array(b, c->upper, k1);
        proto_buf_puts(b, ",\"hpd\":{\"ranks\":");
        int_rows(b, c->hpd_ranks, r->n, 0);
        proto_buf_puts(b, ",\"empirical\":");
        f64_array(b, c->hpd_emp, k1);
        proto_buf_puts(b, "},\"central\":{\"empirical\":");
        f64_rows(b, c->central_emp, D, k1);
        proto_buf_puts(b, "}}");
    }
    if (c->diagnostics & PROTO_DIAG_TARP) {
        proto_buf_puts(b, ",\"tarp\":{\"alpha\":");
        f64_array(b, c->alpha, c->tarp_bins + 1);
        proto_buf_puts(b, ",\"ecp\":");
        f64_array(b, c->ecp, c->tarp_bins + 1);
        proto_buf_puts(b, ",\"atc\":");
        f64_or_null(b, c->atc);
        proto_buf_puts(b, ",\"ks_pvalue\":");
        f64_or_null(b, c->tarp_p);
        proto_buf_putc(b, '}');
    }
    write_acceptance(b, r);
    proto_buf_puts(b, ",\"warnings\":[");
    for (int i = 0; i < c->n_warnings; i++) {
        if (i)
            proto_buf_putc(b, ',');
        proto_buf_json_str(b, c->warnings[i]);
    }
    proto_buf_putc(b, ']');
}

static void write_mmd(struct proto_buf *b, const struct proto_result *r)
{
    proto_buf_puts(b, ",\"seed\":");
    proto_buf_u64(b, r->seed);
    proto_buf_puts(b, ",\"num_samples\":");
    proto_buf_i64(b, r->num_samples);
    proto_buf_puts(b, ",\"m\":");
    proto_buf_i64(b, r->mmd_m);
    proto_buf_puts(b, ",\"kernel\":\"imq\",\"scales\":");
    f64_array(b, r->scales, r->n_scales);
    proto_buf_puts(b, r->unbiased ? ",\"estimator\":\"unbiased\"" : ",\"estimator\":\"biased\"");
    proto_buf_puts(b, ",\"mmd2\":");
    f64_or_null(b, r->mmd2);
    proto_buf_puts(b, ",\"permutations\":");
    proto_buf_i64(b, r->permutations);
    proto_buf_puts(b, ",\"p_value\":");
    f64_or_null(b, r->permutations > 0 ? r->mmd_p : NAN);
    write_acceptance(b, r);
}

void proto_write_result_json(struct proto_buf *b, const struct proto_model_id *id,
                             const struct eng_info *info, const struct proto_result *r)
{
    const struct eng_dims *d = &info->dims;
    struct proto_shape xs = proto_shape_x(info), zs = proto_shape_z(info);
    long n = r->n;
    head(b, id);
    switch (r->op) {
    case PROTO_OP_FORWARD:
        if (r->z) {
            proto_buf_puts(b, ",\"z\":");
            proto_write_f32_shaped(b, r->z, 1, &n, &zs);
        }
        if (r->y_out) {
            proto_buf_puts(b, ",\"y\":");
            proto_write_f32_rows(b, r->y_out, r->n, d->y);
        }
        if (r->log_det) {
            proto_buf_puts(b, ",\"log_det\":");
            f64_array(b, r->log_det, r->n);
        }
        break;
    case PROTO_OP_INVERSE:
        proto_buf_puts(b, ",\"x\":");
        proto_write_f32_shaped(b, r->x, 1, &n, &xs);
        proto_buf_puts(b, ",\"log_det\":");
        f64_array(b, r->log_det, r->n);
        break;
    case PROTO_OP_LOG_PROB:
        proto_buf_puts(b, ",\"log_prob\":");
        f64_array(b, r->log_prob, r->n);
        if (proto_has_bits_per_dim(info)) {
            /* -log p(x) in bits per value after dequantization (image.h); null for -inf */
            proto_buf_puts(b, ",\"bits_per_dim\":[");
            for (int i = 0; i < r->n && !proto_buf_failed(b); i++) {
                if (i)
                    proto_buf_putc(b, ',');
                f64_or_null(b, proto_bits_per_dim(info, r->log_prob[i]));
            }
            proto_buf_putc(b, ']');
        }
        if (r->drawn) {
            proto_buf_puts(b, ",\"seed\":");
            proto_buf_u64(b, r->seed);
            write_acceptance(b, r);
        }
        break;
    case PROTO_OP_SAMPLE:
        write_sample(b, info, r);
        break;
    case PROTO_OP_PREIMAGE:
        write_preimage(b, info, r);
        break;
    case PROTO_OP_CALIBRATION:
        write_calibration(b, r);
        break;
    case PROTO_OP_MMD:
        write_mmd(b, r);
        break;
    default:
        break;
    }
    if (r->has_solver) {
        proto_buf_puts(b, ",\"solver\":");
        proto_write_solver(b, r, r->op == PROTO_OP_SAMPLE ? r->n : 0);
    }
    proto_buf_puts(b, "}\n");
}

/* ---- metadata ------------------------------------------------------------------------- */

static void names(struct proto_buf *b, const char *const *v, int n)
{
    proto_buf_putc(b, '[');
    for (int i = 0; v && i < n; i++) {
        if (i)
            proto_buf_putc(b, ',');
        proto_buf_json_str(b, v[i]);
    }
    proto_buf_putc(b, ']');
}

static void dims(struct proto_buf *b, const struct eng_dims *d)
{
    proto_buf_printf(b, "{\"x\":%d,\"y\":%d,\"z\":%d,\"pad_x\":%d,\"pad_y\":%d}", d->x, d->y,
                     d->z, d->pad_x, d->pad_y);
}

static void operations(struct proto_buf *b, enum eng_kind k)
{
    proto_buf_putc(b, '[');
    int c = 0;
    /* the per-request operations (calibration and mmd are listed in docs/api.md) */
    for (int op = 0; op <= PROTO_OP_PREIMAGE; op++) {
        if (!proto_op_supported((enum proto_op)op, k))
            continue;
        if (c++)
            proto_buf_putc(b, ',');
        proto_buf_putc(b, '"');
        proto_buf_puts(b, proto_op_str((enum proto_op)op));
        proto_buf_putc(b, '"');
    }
    proto_buf_putc(b, ']');
}

/* n rows of w floats as a JSON array of arrays. */
static void f32_rows(struct proto_buf *b, const float *v, int n, int w)
{
    proto_buf_putc(b, '[');
    for (int i = 0; i < n; i++) {
        if (i)
            proto_buf_putc(b, ',');
        proto_buf_putc(b, '[');
        proto_buf_f32_list(b, v + (size_t)i * w, (size_t)w);
        proto_buf_putc(b, ']');
    }
    proto_buf_putc(b, ']');
}

/* [C, H, W] */
static void shape_list(struct proto_buf *b, const struct proto_shape *s)
{
    proto_buf_putc(b, '[');
    for (int k = 0; k < s->rank; k++) {
        if (k)
            proto_buf_putc(b, ',');
        proto_buf_i64(b, s->dim[k]);
    }
    proto_buf_putc(b, ']');
}

void proto_write_metadata(struct proto_buf *b, const struct proto_model_id *id,
                          const struct eng_info *info, const struct eng_certificate *cert,
                          double load_ms)
{
    head(b, id);
    proto_buf_puts(b, ",\"name\":");
    proto_buf_json_str(b, id->name);
    proto_buf_puts(b, ",\"kind\":\"");
    proto_buf_puts(b, eng_kind_str(info->kind));
    proto_buf_puts(b, "\",\"state\":\"READY\",\"dims\":");
    dims(b, &info->dims);
    proto_buf_puts(b, ",\"names\":{\"x\":");
    names(b, info->x_names, info->dims.x);
    proto_buf_puts(b, ",\"y\":");
    names(b, info->y_names, info->dims.y);
    proto_buf_puts(b, "},\"blocks\":");
    proto_buf_puts(b, info->blocks_json && info->blocks_json[0] ? info->blocks_json : "[]");
    proto_buf_puts(b, ",\"n_blocks\":");
    proto_buf_i64(b, info->n_blocks);
    proto_buf_puts(b, ",\"parameters\":");
    proto_buf_i64(b, info->n_params);
    proto_buf_puts(b, ",\"kernels\":\"");
    proto_buf_puts(b, info->kernels ? info->kernels : "");
    proto_buf_puts(b, "\",\"numeric_inverse\":");
    proto_buf_puts(b, info->numeric_inverse ? "true" : "false");
    proto_buf_puts(b, ",\"description\":");
    proto_buf_json_str(b, info->description ? info->description : "");
    proto_buf_puts(b, ",\"operations\":");
    operations(b, info->kind);
    if (cert) {
        proto_buf_puts(b, ",\"certificate\":{\"invertible\":");
        proto_buf_puts(b, cert->invertible ? "true" : "false");
        proto_buf_puts(b, ",\"guarantee\":\"");
        proto_buf_puts(b, eng_guarantee_str(cert->guarantee));
        proto_buf_puts(b, "\",\"certified\":");
        proto_buf_puts(b, cert->certified ? "true" : "false");
        proto_buf_putc(b, '}');
    }
    if (info->prior_low && info->prior_high) {
        proto_buf_puts(b, ",\"prior\":{\"type\":\"box\",\"low\":[");
        proto_buf_f32_list(b, info->prior_low, (size_t)info->dims.x);
        proto_buf_puts(b, "],\"high\":[");
        proto_buf_f32_list(b, info->prior_high, (size_t)info->dims.x);
        proto_buf_puts(b, "]}");
    }
    struct proto_shape xs = proto_shape_x(info), zs = proto_shape_z(info);
    if (xs.rank > 1 || zs.rank > 1) {
        /* image and signal models: the row shapes of x and z (image.h) */
        proto_buf_puts(b, ",\"shape\":{\"x\":");
        shape_list(b, &xs);
        proto_buf_puts(b, ",\"z\":");
        shape_list(b, &zs);
        proto_buf_putc(b, '}');
    }
    if (info->has_image) {
        proto_buf_puts(b, ",\"image\":{\"low\":");
        proto_buf_f64(b, info->image_low);
        proto_buf_puts(b, ",\"high\":");
        proto_buf_f64(b, info->image_high);
        proto_buf_puts(b, ",\"levels\":");
        proto_buf_i64(b, info->image_levels);
        proto_buf_puts(b, ",\"bin_width\":");
        proto_buf_f64(b, proto_bin_width(info));
        proto_buf_putc(b, '}');
    }
    if (info->n_test_vectors > 0 && info->test_y && info->test_x) {
        long nt = info->n_test_vectors;
        proto_buf_puts(b, ",\"test_vectors\":{\"y\":");
        f32_rows(b, info->test_y, info->n_test_vectors, info->dims.y);
        proto_buf_puts(b, ",\"x\":");
        proto_write_f32_shaped(b, info->test_x, 1, &nt, &xs);
        proto_buf_putc(b, '}');
    }
    proto_buf_puts(b, ",\"load_ms\":");
    proto_buf_f64(b, round(load_ms * 1000.0) / 1000.0);
    proto_buf_puts(b, "}\n");
}

void proto_write_certificate(struct proto_buf *b, const struct proto_model_id *id,
                             const struct eng_certificate *cert)
{
    head(b, id);
    proto_buf_puts(b, ",\"invertible\":");
    proto_buf_puts(b, cert->invertible ? "true" : "false");
    proto_buf_puts(b, ",\"guarantee\":\"");
    proto_buf_puts(b, eng_guarantee_str(cert->guarantee));
    proto_buf_puts(b, "\",\"certified\":");
    proto_buf_puts(b, cert->certified ? "true" : "false");
    proto_buf_puts(b, ",\"blocks\":[");
    for (int i = 0; i < cert->n_blocks; i++) {
        const struct eng_block_cert *c = &cert->blocks[i];
        if (i)
            proto_buf_putc(b, ',');
        proto_buf_puts(b, "{\"index\":");
        proto_buf_i64(b, c->index);
        proto_buf_puts(b, ",\"type\":");
        proto_buf_json_str(b, c->type ? c->type : "");
        proto_buf_puts(b, ",\"invertible\":");
        proto_buf_puts(b, c->invertible ? "true" : "false");
        proto_buf_puts(b, ",\"guarantee\":\"");
        proto_buf_puts(b, eng_guarantee_str(c->guarantee));
        proto_buf_puts(b, "\",\"reason\":");
        proto_buf_json_str(b, c->reason);
        proto_buf_puts(b, ",\"lipschitz\":");
        f64_or_null(b, c->lipschitz);
        proto_buf_puts(b, ",\"lipschitz_inverse\":");
        f64_or_null(b, c->lipschitz_inverse);
        proto_buf_puts(b, ",\"condition\":");
        f64_or_null(b, c->condition);
        proto_buf_puts(b, ",\"iterations_for_1e-6\":");
        if (c->iterations_for_1e6 >= 0)
            proto_buf_i64(b, c->iterations_for_1e6);
        else
            proto_buf_puts(b, "null");
        proto_buf_putc(b, '}');
    }
    proto_buf_puts(b, "]}\n");
}

void proto_write_models(struct proto_buf *b, const struct proto_model_entry *m, int n)
{
    proto_buf_puts(b, "{\"models\":[");
    for (int i = 0; i < n; i++) {
        if (i)
            proto_buf_putc(b, ',');
        proto_buf_puts(b, "{\"name\":");
        proto_buf_json_str(b, m[i].name);
        proto_buf_puts(b, ",\"version\":");
        proto_buf_json_str(b, m[i].version ? m[i].version : "");
        if (m[i].info) {
            proto_buf_puts(b, ",\"kind\":\"");
            proto_buf_puts(b, eng_kind_str(m[i].info->kind));
            proto_buf_puts(b, "\",\"dims\":");
            dims(b, &m[i].info->dims);
            proto_buf_puts(b, ",\"sha256\":\"");
            proto_buf_puts(b, m[i].info->sha256);
            proto_buf_putc(b, '"');
        } else {
            proto_buf_puts(b, ",\"kind\":null,\"dims\":null");
        }
        proto_buf_puts(b, ",\"state\":\"");
        proto_buf_puts(b, m[i].state);
        proto_buf_putc(b, '"');
        if (m[i].reason) {
            proto_buf_puts(b, ",\"reason\":");
            proto_buf_json_str(b, m[i].reason);
        }
        if (m[i].reload_error) {
            proto_buf_puts(b, ",\"reload_error\":");
            proto_buf_json_str(b, m[i].reload_error);
        }
        proto_buf_putc(b, '}');
    }
    proto_buf_puts(b, "]}\n");
}
