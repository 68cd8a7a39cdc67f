/*
 * answer.h — the format policy of model-operation answers: which formats an answer may
 * take (JSON always; CSV, NPY and PNG carry samples; KServe V2 its own JSON) and which writer
 * produces each.  The server asks proto_answer_check before any compute and
 * proto_answer_write after the last unit; it holds no format rules of its own.
 */
#ifndef INNSERVE_PROTO_ANSWER_H
#define INNSERVE_PROTO_ANSWER_H

#include <stdbool.h>

#include "../engine/engine.h"
#include "buf.h"
#include "errors.h"
#include "limits.h"
#include "request.h"
#include "response.h"

/* The answer's format and options from the query parameters and the Accept header:
 * format=json|csv|npy|png (query) wins over Accept (application/json, text/csv,
 * application/x-npy, image/png); csv, npy and png only for sample.  With png also scale
 * (integer 1 .. PROTO_MAX_PNG_SCALE, default 1), low and high (numbers, low < high; default
 * the manifest's image range, else [0, 1]) into req->png; those parameters without png are
 * refused.  Other query parameters are not looked at.  PROTO_OK with *fmt set, or the
 * code with e filled (400). */
enum proto_code proto_answer_format(const struct proto_query *q, const char *accept,
                                    const struct eng_info *info, struct proto_request *req,
                                    enum proto_format *fmt, struct proto_error *e);

/* Checks the format against the outputs asked for (CSV: samples and log_prob only; NPY and
 * PNG: samples only; PNG: a model whose x is [C, H, W] with C = 1 or 3, the grid within
 * the PROTO_MAX_PNG_* limits) and refuses, before any compute, answers that would certainly pass
 * lim->max_response_bytes (413 result_too_large).  v2: the answer is KServe V2 JSON (no
 * format choice).  PROTO_OK, or the code with e filled. */
enum proto_code proto_answer_check(const struct proto_limits *lim, const struct eng_info *info,
                                   const struct proto_request *req, enum proto_format fmt,
                                   bool v2, struct proto_error *e);

/* Writes the answer to req (result r) into b in format fmt (v2: V2 JSON) and returns its
 * Content-Type (a static string).  b's own state tells whether it fit (proto_buf). */
const char *proto_answer_write(struct proto_buf *b, const struct proto_model_id *id,
                               const struct eng_info *info, const struct proto_request *req,
                               const struct proto_result *r, enum proto_format fmt, bool v2);

#endif
