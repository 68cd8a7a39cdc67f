/*
 * answer.c — the format policy of answers (answer.h).
 */
#include "answer.h"
#include "csv.h"
#include "image.h"
#include "npy.h"
#include "png.h"
#include "v2.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* A number query parameter (the whole value, finite). */
static enum proto_code query_num(const char *v, const char *name, double *out,
                                 struct proto_error *e)
{
    char *end;
    double d = strtod(v, &end);
    if (!*v || *end || !isfinite(d))
        return proto_errorf(e, PROTO_E_FIELD, "query parameter %s must be a finite number, got "
                            "\"%.32s\"", name, v);
    *out = d;
    return PROTO_OK;
}

enum proto_code proto_answer_format(const struct proto_query *q, const char *accept,
                                    const struct eng_info *info, struct proto_request *req,
                                    enum proto_format *fmt, struct proto_error *e)
{
    static const char *const NAMES[] = {"json", "csv", "npy", "png"};
    *fmt = proto_format_from_accept(accept);
    const char *f = q ? proto_query_get(q, "format") : NULL;
    if (f) {
        int k = -1;
        for (int i = 0; i < 4; i++)
            if (!strcmp(f, NAMES[i]))
                k = i;
        if (k < 0)
            return proto_errorf(e, PROTO_E_FIELD, "query parameter format must be one of json, "
                                "csv, npy, png; got \"%.32s\"", f);
        *fmt = (enum proto_format)k;
    }
    if (req->op != PROTO_OP_SAMPLE) {
        if (f && *fmt != PROTO_FMT_JSON)
            return proto_errorf(e, PROTO_E_FIELD, "format=%s is only for sample answers; %s "
                                "answers JSON", f, proto_op_str(req->op));
        *fmt = PROTO_FMT_JSON;
    }
    const char *sc = q ? proto_query_get(q, "scale") : NULL;
    const char *lo = q ? proto_query_get(q, "low") : NULL;
    const char *hi = q ? proto_query_get(q, "high") : NULL;
    if (*fmt != PROTO_FMT_PNG) {
        if (sc || lo || hi)
            return proto_errorf(e, PROTO_E_FIELD, "query parameter %s only applies with "
                                "format=png", sc ? "scale" : lo ? "low" : "high");
        return PROTO_OK;
    }
    struct proto_png_opts *o = &req->png;
    o->scale = 1;
    o->low = info->has_image ? info->image_low : 0.0;
    o->high = info->has_image ? info->image_high : 1.0;
    enum proto_code rc;
    if (sc) {
        char *end;
        long k = strtol(sc, &end, 10);
        if (!*sc || *end || k < 1 || k > PROTO_MAX_PNG_SCALE)
            return proto_errorf(e, PROTO_E_FIELD, "query parameter scale must be an integer "
                                "from 1 to %d, got \"%.32s\"", PROTO_MAX_PNG_SCALE, sc);
        o->scale = (int)k;
    }
    if (lo && (rc = query_num(lo, "low", &o->low, e)) != PROTO_OK)
        return rc;
    if (hi && (rc = query_num(hi, "high", &o->high, e)) != PROTO_OK)
        return rc;
    if (!(o->low < o->high))
        return proto_errorf(e, PROTO_E_FIELD, "the png value range needs low < high, got low "
                            "%g, high %g", o->low, o->high);
    return PROTO_OK;
}

/* (n_obs, num_samples, x's row shape...): the shape of the samples; returns its rank. */
static int sample_shape(const struct eng_info *info, long n_obs, long num_samples, long *shape)
{
    struct proto_shape xs = proto_shape_x(info);
    shape[0] = n_obs;
    shape[1] = num_samples;
    for (int k = 0; k < xs.rank; k++)
        shape[2 + k] = xs.dim[k];
    return 2 + xs.rank;
}

enum proto_code proto_answer_check(const struct proto_limits *lim, const struct eng_info *info,
                                   const struct proto_request *req, enum proto_format fmt,
                                   bool v2, struct proto_error *e)
{
    size_t cap = lim->max_response_bytes;
    long n_obs = info->kind == ENG_KIND_FLOW ? 1 : req->y.rows;
    if (req->op == PROTO_OP_SAMPLE && !v2) {
        long vals = n_obs * req->num_samples * info->dims.x;
        if (fmt == PROTO_FMT_PNG) {
            if (req->outputs != PROTO_OUT_SAMPLES)
                return proto_errorf(e, PROTO_E_FIELD, "outputs: format=png carries only the "
                                    "samples; ask for outputs [\"samples\"] or use JSON");
            struct proto_shape xs = proto_shape_x(info);
            if (xs.rank != 3 || (xs.dim[0] != 1 && xs.dim[0] != 3)) {
                char sh[40];
                proto_shape_str(&xs, sh, sizeof sh);
                return proto_errorf(e, PROTO_E_UNSUPPORTED, "format=png needs an image model "
                                    "whose x is [C, H, W] with C = 1 (gray) or 3 (RGB); this "
                                    "model's x has shape %s", sh);
            }
            long w, h;
            proto_png_grid_dims(n_obs, req->num_samples, xs.dim[1], xs.dim[2],
                                req->png.scale > 0 ? req->png.scale : 1, &w, &h);
            if (w > PROTO_MAX_PNG_SIDE || h > PROTO_MAX_PNG_SIDE || w * h > PROTO_MAX_PNG_PIXELS)
                return proto_errorf(e, PROTO_E_TOO_LARGE, "the png grid would be %ld x %ld "
                                    "pixels, more than the server draws (sides up to %d, %ld "
                                    "pixels); ask for fewer samples or observations, or a "
                                    "smaller scale", w, h, PROTO_MAX_PNG_SIDE,
                                    PROTO_MAX_PNG_PIXELS);
            size_t sz = proto_png_size(w, h, xs.dim[0]);
            if (sz > cap)
                return proto_errorf(e, PROTO_E_RESULT_TOO_LARGE, "the answer would be %zu bytes, "
                                    "more than the server sends (%zu, --max-response); ask for "
                                    "fewer samples or a smaller scale", sz, cap);
            return PROTO_OK;
        }
        if (fmt == PROTO_FMT_NPY) {
            if (req->outputs != PROTO_OUT_SAMPLES)
                return proto_errorf(e, PROTO_E_FIELD, "outputs: application/x-npy carries only "
                                    "the samples; ask for outputs [\"samples\"] or use JSON");
            long shape[5];
            int nd = sample_shape(info, n_obs, req->num_samples, shape);
            size_t sz = proto_npy_size_nd(nd, shape);
            if (sz > cap)
                return proto_errorf(e, PROTO_E_RESULT_TOO_LARGE, "the answer would be %zu bytes, "
                                    "more than the server sends (%zu, --max-response); ask for "
                                    "fewer samples", sz, cap);
            return PROTO_OK;
        }
        if (fmt == PROTO_FMT_CSV && (req->outputs & ~(PROTO_OUT_SAMPLES | PROTO_OUT_LOG_PROB)))
            return proto_errorf(e, PROTO_E_FIELD, "outputs: text/csv carries samples and "
                                "log_prob only; use JSON for summary and resimulation");
        if (fmt == PROTO_FMT_CSV && !(req->outputs & PROTO_OUT_SAMPLES))
            return proto_errorf(e, PROTO_E_FIELD, "outputs: text/csv needs \"samples\"");
        /* every value takes at least 2 bytes ("0," or "0\n"); refuse what cannot fit */
        if ((req->outputs & PROTO_OUT_SAMPLES) && (size_t)vals * 2 > cap)
            return proto_errorf(e, PROTO_E_RESULT_TOO_LARGE, "%ld sample values cannot fit in "
                                "the %zu bytes the server sends (--max-response); ask for fewer "
                                "samples, or Accept: application/x-npy (4 bytes a value)", vals,
                                cap);
    }
    return PROTO_OK;
}

const char *proto_answer_write(struct proto_buf *b, const struct proto_model_id *id,
                               const struct eng_info *info, const struct proto_request *req,
                               const struct proto_result *r, enum proto_format fmt, bool v2)
{
    if (v2) {
        proto_v2_write_result(b, id, info, req, r);
    } else if (r->op == PROTO_OP_SAMPLE && fmt == PROTO_FMT_CSV) {
        proto_write_sample_csv(b, info, r);
        return "text/csv; charset=utf-8";
    } else if (r->op == PROTO_OP_SAMPLE && fmt == PROTO_FMT_NPY) {
        long shape[5];
        int nd = sample_shape(info, r->n, r->num_samples, shape);
        proto_write_npy_nd(b, r->samples, nd, shape);
        return "application/x-npy";
    } else if (r->op == PROTO_OP_SAMPLE && fmt == PROTO_FMT_PNG) {
        proto_write_png_grid(b, info, r, &req->png);
        return "image/png";
    } else {
        proto_write_result_json(b, id, info, r);
    }
    return "application/json";
}
