/*
 * answer.c — the format policy of answers (answer.h).
 */
#include "answer.h"
#include "csv.h"
#include "npy.h"
#include "v2.h"

enum proto_code proto_answer_check(const struct proto_limits *lim, const struct eng_info *info,
                                   const struct proto_request *req, enum proto_format fmt,
                                   bool v2, struct proto_error *e)
{
    size_t cap = lim->max_response_bytes;
    long n_obs = info->kind == ENG_KIND_FLOW ? 1 : req->y.rows;
    if (req->op == PROTO_OP_SAMPLE && !v2) {
        long vals = n_obs * req->num_samples * info->dims.x;
        if (fmt == PROTO_FMT_NPY) {
            if (req->outputs != PROTO_OUT_SAMPLES)
                return proto_errorf(e, PROTO_E_FIELD, "outputs: application/x-npy carries only "
                                    "the samples; ask for outputs [\"samples\"] or use JSON");
            size_t sz = proto_npy_size(n_obs, req->num_samples, info->dims.x);
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
        proto_write_npy_f32(b, r->samples, r->n, r->num_samples, info->dims.x);
        return "application/x-npy";
    } else {
        proto_write_result_json(b, id, info, r);
    }
    return "application/json";
}
