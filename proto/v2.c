/*
 * v2.c — KServe V2 / Open Inference Protocol requests and responses (v2.h).
 *
 * A V2 request is rewritten into the equivalent v1 JSON object (tensors as rows, the
 * parameters as fields) and then validated by the same code as /v1 (request.c), so both
 * APIs accept and refuse exactly the same things.
 */
#include "v2.h"
#include "image.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Output names per operation, bit i of proto_request.v2_outputs = name i. */
static const char *const OUT_FORWARD[] = {"z", "y", "log_det"};
static const char *const OUT_INVERSE[] = {"x", "log_det"};
static const char *const OUT_SAMPLE[] = {"x", "log_prob"};
static const char *const OUT_LOGPROB[] = {"log_prob", "bits_per_dim"};

static const char *const *out_names(enum proto_op op, int *n)
{
    switch (op) {
    case PROTO_OP_FORWARD: *n = 3; return OUT_FORWARD;
    case PROTO_OP_INVERSE: *n = 2; return OUT_INVERSE;
    case PROTO_OP_SAMPLE: *n = 2; return OUT_SAMPLE;
    case PROTO_OP_LOG_PROB: *n = 2; return OUT_LOGPROB;
    default: *n = 0; return NULL;
    }
}

/* Which outputs a model produces for op (bit per out_names entry). */
static unsigned out_avail(enum proto_op op, const struct eng_info *info)
{
    enum eng_kind k = info->kind;
    if (op == PROTO_OP_FORWARD) {
        if (k == ENG_KIND_MLP)
            return 2u;
        if (k == ENG_KIND_INN)
            return 7u;
        return 5u;
    }
    if (op == PROTO_OP_LOG_PROB)
        return proto_has_bits_per_dim(info) ? 3u : 1u;
    return 3u;
}

/* Collects the number leaves of data in row-major order (depth-first). */
static enum proto_code leaves(const cJSON *v, int depth, const cJSON **out, long cap, long *n,
                              const char *name, struct proto_error *e)
{
    if (cJSON_IsArray(v)) {
        if (depth > 8)
            return proto_errorf(e, PROTO_E_SHAPE, "input '%s': data nests deeper than its "
                                "shape", name);
        for (const cJSON *c = v->child; c; c = c->next) {
            enum proto_code rc = leaves(c, depth + 1, out, cap, n, name, e);
            if (rc != PROTO_OK)
                return rc;
        }
        return PROTO_OK;
    }
    if (*n >= cap)
        return proto_errorf(e, PROTO_E_SHAPE, "input '%s': data has more values than its "
                            "shape says (%ld)", name, cap);
    if (!cJSON_IsNumber(v))
        return proto_errorf(e, PROTO_E_FIELD, "input '%s': data[%ld] must be a number, got "
                            "%s", name, *n, proto_json_type(v));
    out[(*n)++] = v;
    return PROTO_OK;
}

/* One V2 input tensor -> rows array (new cJSON) added to v1 under its name.  x and z of an
 * image or signal model may also come shaped [B, C, H, W] / [B, C, L] (their row shape). */
static enum proto_code tensor_to_rows(const cJSON *in, int idx, const struct eng_info *info,
                                      const struct proto_limits *lim, cJSON *v1,
                                      struct proto_error *e)
{
    static const char *const F[] = {"name", "shape", "datatype", "data", "parameters"};
    char where[32];
    snprintf(where, sizeof where, "inputs[%d].", idx);
    enum proto_code rc = proto_json_fields(in, F, 5, where, e);
    if (rc != PROTO_OK)
        return rc;
    const cJSON *nm = cJSON_GetObjectItemCaseSensitive(in, "name");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(in, "shape");
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(in, "datatype");
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(in, "data");
    const cJSON *par = cJSON_GetObjectItemCaseSensitive(in, "parameters");
    if (!cJSON_IsString(nm))
        return proto_errorf(e, PROTO_E_MISSING, "inputs[%d].name must be a string", idx);
    const char *name = nm->valuestring;
    if (strcmp(name, "x") && strcmp(name, "y") && strcmp(name, "z"))
        return proto_errorf(e, PROTO_E_FIELD, "inputs[%d].name \"%.32s\" is not an input of "
                            "this model (x, y or z, see GET /v2/models/{m})", idx, name);
    if (cJSON_GetObjectItemCaseSensitive(v1, name))
        return proto_errorf(e, PROTO_E_FIELD, "input '%s' is given twice", name);
    if (par && cJSON_GetObjectItemCaseSensitive(par, "binary_data_size"))
        return proto_errorf(e, PROTO_E_MEDIA, "input '%s': binary tensor data is not "
                            "supported; send the values in \"data\"", name);
    if (!cJSON_IsString(dt))
        return proto_errorf(e, PROTO_E_MISSING, "input '%s': datatype must be a string "
                            "(FP32)", name);
    if (strcmp(dt->valuestring, "FP32") && strcmp(dt->valuestring, "FP64"))
        return proto_errorf(e, PROTO_E_FIELD, "input '%s': datatype %.16s is not supported "
                            "(use FP32 or FP64)", name, dt->valuestring);
    if (!cJSON_IsArray(sh) || !sh->child)
        return proto_errorf(e, PROTO_E_MISSING, "input '%s': shape must be an array such as "
                            "[rows, width]", name);
    int rank = cJSON_GetArraySize(sh);
    struct proto_shape rs = {1, {1, 1, 1}};
    if (name[0] == 'x')
        rs = proto_shape_x(info);
    else if (name[0] == 'z')
        rs = proto_shape_z(info);
    if (rank > 2 && (rs.rank < 2 || rank != rs.rank + 1)) {
        char sh_s[40];
        proto_shape_str(&rs, sh_s, sizeof sh_s);
        if (rs.rank < 2)
            return proto_errorf(e, PROTO_E_SHAPE, "input '%s': shape must be [rows, width] or "
                                "[width], got rank %d", name, rank);
        return proto_errorf(e, PROTO_E_SHAPE, "input '%s': shape must be [rows, width], "
                            "[width] or [rows] + the model's row shape %s, got rank %d", name,
                            sh_s, rank);
    }
    long dims[2] = {1, 1};
    int i = 0;
    for (const cJSON *c = sh->child; c; c = c->next, i++) {
        long long d;
        char nmb[48];
        snprintf(nmb, sizeof nmb, "input '%s': shape[%d]", name, i);
        if ((rc = proto_json_int(c, nmb, 1, lim->max_elements, &d, e)) != PROTO_OK)
            return rc;
        if (rank > 2 && i > 0 && d != rs.dim[i - 1]) {
            char sh_s[40];
            proto_shape_str(&rs, sh_s, sizeof sh_s);
            return proto_errorf(e, PROTO_E_SHAPE, "input '%s': shape[%d] is %lld; the model's "
                                "row shape is %s", name, i, d, sh_s);
        }
        if (rank > 2)
            dims[i == 0 ? 0 : 1] = i == 0 ? (long)d : proto_shape_count(&rs);
        else
            dims[rank == 1 ? 1 : i] = (long)d;
    }
    if (dims[0] * dims[1] > lim->max_elements)
        return proto_errorf(e, PROTO_E_TOO_LARGE, "input '%s' has %ld values, more than the "
                            "limit of %ld per tensor (--max-elements)", name, dims[0] * dims[1],
                            lim->max_elements);
    if (!data)
        return proto_errorf(e, PROTO_E_MISSING, "input '%s': data is missing", name);
    long total = dims[0] * dims[1], n = 0;
    const cJSON **vals = malloc(sizeof(cJSON *) * (size_t)total);
    if (!vals)
        return proto_errorf(e, PROTO_E_NOMEM, "out of memory");
    rc = leaves(data, 0, vals, total, &n, name, e);
    if (rc == PROTO_OK && n != total)
        rc = proto_errorf(e, PROTO_E_SHAPE, "input '%s': data has %ld values, its shape "
                          "[%ld, %ld] needs %ld", name, n, dims[0], dims[1], total);
    cJSON *rows = rc == PROTO_OK ? cJSON_CreateArray() : NULL;
    if (rc == PROTO_OK && !rows)
        rc = proto_errorf(e, PROTO_E_NOMEM, "out of memory");
    for (long r = 0; rc == PROTO_OK && r < dims[0]; r++) {
        cJSON *row = cJSON_CreateArray();
        if (!row) {
            rc = proto_errorf(e, PROTO_E_NOMEM, "out of memory");
            break;
        }
        cJSON_AddItemToArray(rows, row);
        for (long j = 0; j < dims[1]; j++) {
            cJSON *num = cJSON_CreateNumber(vals[r * dims[1] + j]->valuedouble);
            if (!num) {
                rc = proto_errorf(e, PROTO_E_NOMEM, "out of memory");
                break;
            }
            cJSON_AddItemToArray(row, num);
        }
    }
    free(vals);
    if (rc != PROTO_OK) {
        cJSON_Delete(rows);
        return rc;
    }
    if (!cJSON_AddItemToObject(v1, name, rows)) {
        cJSON_Delete(rows);
        return proto_errorf(e, PROTO_E_NOMEM, "out of memory");
    }
    return PROTO_OK;
}

static const char *const PARAMS[] = {"operation", "num_samples", "seed", "temperature", "tol",
                                     "max_iter", "method"};

enum proto_code proto_v2_parse(const char *body, size_t len, const struct eng_info *info,
                               const struct proto_limits *lim, struct proto_request *out,
                               struct proto_error *e)
{
    memset(out, 0, sizeof *out);
    cJSON *root;
    enum proto_code rc =
        proto_json_parse(body, len, lim->max_json_depth, lim->max_elements, &root, e);
    if (rc != PROTO_OK)
        return rc;
    cJSON *v1 = NULL;
    char *id = NULL;
    unsigned wanted = 0;
    /* the default operation: forward, or log_prob for an mdn (which has no forward map) */
    enum proto_op op = info->kind == ENG_KIND_MDN ? PROTO_OP_LOG_PROB : PROTO_OP_FORWARD;
    static const char *const F[] = {"id", "parameters", "inputs", "outputs"};
    if ((rc = proto_json_fields(root, F, 4, "", e)) != PROTO_OK)
        goto done;
    const cJSON *jid = cJSON_GetObjectItemCaseSensitive(root, "id");
    if (jid) {
        if (!cJSON_IsString(jid)) {
            rc = proto_errorf(e, PROTO_E_FIELD, "id must be a string, got %s",
                              proto_json_type(jid));
            goto done;
        }
        if (!(id = strdup(jid->valuestring))) {
            rc = proto_errorf(e, PROTO_E_NOMEM, "out of memory");
            goto done;
        }
    }
    v1 = cJSON_CreateObject();
    if (!v1) {
        rc = proto_errorf(e, PROTO_E_NOMEM, "out of memory");
        goto done;
    }
    const cJSON *par = cJSON_GetObjectItemCaseSensitive(root, "parameters");
    if (par) {
        if ((rc = proto_json_fields(par, PARAMS, 7, "parameters.", e)) != PROTO_OK)
            goto done;
        const cJSON *o = cJSON_GetObjectItemCaseSensitive(par, "operation");
        if (o) {
            if (!cJSON_IsString(o) || (op = proto_op_parse(o->valuestring)) == PROTO_OP_COUNT ||
                op == PROTO_OP_PREIMAGE || op == PROTO_OP_CALIBRATION || op == PROTO_OP_MMD) {
                rc = proto_errorf(e, PROTO_E_FIELD, "parameters.operation must be one of "
                                  "\"forward\", \"inverse\", \"sample\", \"log_prob\"");
                goto done;
            }
        }
        for (const cJSON *c = par->child; c; c = c->next) {
            if (strcmp(c->string, "operation") == 0)
                continue;
            bool solver = !strcmp(c->string, "tol") || !strcmp(c->string, "max_iter") ||
                          !strcmp(c->string, "method");
            bool sampling = !solver;
            if ((sampling && op != PROTO_OP_SAMPLE) ||
                (solver && op != PROTO_OP_SAMPLE && op != PROTO_OP_INVERSE)) {
                rc = proto_errorf(e, PROTO_E_UNKNOWN_FIELD, "parameters.%s is not used by "
                                  "operation %s", c->string, proto_op_str(op));
                goto done;
            }
            cJSON *dup = cJSON_Duplicate(c, 1);
            if (!dup) {
                rc = proto_errorf(e, PROTO_E_NOMEM, "out of memory");
                goto done;
            }
            if (!cJSON_AddItemToObject(v1, c->string, dup)) {
                cJSON_Delete(dup);
                rc = proto_errorf(e, PROTO_E_NOMEM, "out of memory");
                goto done;
            }
        }
    }
    if (!proto_op_supported(op, info->kind)) {
        rc = proto_request_from_json(op, v1, info, lim, out, e);
        goto done;
    }
    const cJSON *inputs = cJSON_GetObjectItemCaseSensitive(root, "inputs");
    if (!cJSON_IsArray(inputs)) {
        rc = proto_errorf(e, PROTO_E_MISSING, "inputs must be an array of tensors, got %s",
                          proto_json_type(inputs));
        goto done;
    }
    int i = 0;
    for (const cJSON *in = inputs->child; in; in = in->next, i++)
        if ((rc = tensor_to_rows(in, i, info, lim, v1, e)) != PROTO_OK)
            goto done;
    const cJSON *outs = cJSON_GetObjectItemCaseSensitive(root, "outputs");
    int nn;
    const char *const *names = out_names(op, &nn);
    unsigned avail = out_avail(op, info);
    if (outs) {
        if (!cJSON_IsArray(outs)) {
            rc = proto_errorf(e, PROTO_E_FIELD, "outputs must be an array of {\"name\": ...}");
            goto done;
        }
        i = 0;
        for (const cJSON *o = outs->child; o; o = o->next, i++) {
            static const char *const OF[] = {"name", "parameters"};
            char where[32];
            snprintf(where, sizeof where, "outputs[%d].", i);
            if ((rc = proto_json_fields(o, OF, 2, where, e)) != PROTO_OK)
                goto done;
            const cJSON *op_par = cJSON_GetObjectItemCaseSensitive(o, "parameters");
            if (op_par && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(op_par, "binary_data"))) {
                rc = proto_errorf(e, PROTO_E_FIELD, "outputs[%d]: binary tensor data is not "
                                  "supported; answers carry \"data\" in JSON", i);
                goto done;
            }
            const cJSON *nm = cJSON_GetObjectItemCaseSensitive(o, "name");
            int k = -1;
            for (int j = 0; cJSON_IsString(nm) && j < nn; j++)
                if (strcmp(nm->valuestring, names[j]) == 0 && (avail & (1u << j)))
                    k = j;
            if (k < 0) {
                rc = proto_errorf(e, PROTO_E_FIELD, "outputs[%d].name is not an output of "
                                  "operation %s for this %s model", i, proto_op_str(op),
                                  eng_kind_str(info->kind));
                goto done;
            }
            wanted |= 1u << k;
        }
    }
    if (!wanted)
        wanted = avail;
    if (op == PROTO_OP_SAMPLE) {
        cJSON *o = cJSON_CreateArray();
        if (!o) {
            rc = proto_errorf(e, PROTO_E_NOMEM, "out of memory");
            goto done;
        }
        bool ok = cJSON_AddItemToArray(o, cJSON_CreateString("samples"));
        if (ok && (wanted & 2u))
            ok = cJSON_AddItemToArray(o, cJSON_CreateString("log_prob"));
        if (!ok || !cJSON_AddItemToObject(v1, "outputs", o)) {
            cJSON_Delete(o);
            rc = proto_errorf(e, PROTO_E_NOMEM, "out of memory");
            goto done;
        }
    }
    rc = proto_request_from_json(op, v1, info, lim, out, e);
    if (rc == PROTO_OK) {
        out->v2_id = id;
        out->v2_outputs = wanted;
        id = NULL;
    }
done:
    free(id);
    cJSON_Delete(v1);
    cJSON_Delete(root);
    return rc;
}

/* ---- responses ---------------------------------------------------------------------------- */

static void tensor_head(struct proto_buf *b, bool *first, const char *name, const char *dt,
                        const long *shape, int rank)
{
    if (!*first)
        proto_buf_putc(b, ',');
    *first = false;
    proto_buf_puts(b, "{\"name\":\"");
    proto_buf_puts(b, name);
    proto_buf_puts(b, "\",\"datatype\":\"");
    proto_buf_puts(b, dt);
    proto_buf_puts(b, "\",\"shape\":[");
    for (int i = 0; i < rank; i++) {
        if (i)
            proto_buf_putc(b, ',');
        proto_buf_i64(b, shape[i]);
    }
    proto_buf_puts(b, "],\"data\":[");
}

static void f32_tensor(struct proto_buf *b, bool *first, const char *name, const float *v,
                       const long *shape, int rank)
{
    long n = 1;
    for (int i = 0; i < rank; i++)
        n *= shape[i];
    tensor_head(b, first, name, "FP32", shape, rank);
    proto_buf_f32_list(b, v, (size_t)n);
    proto_buf_puts(b, "]}");
}

static void f64_tensor(struct proto_buf *b, bool *first, const char *name, const double *v,
                       const long *shape, int rank)
{
    long n = 1;
    for (int i = 0; i < rank; i++)
        n *= shape[i];
    tensor_head(b, first, name, "FP64", shape, rank);
    proto_buf_f64_list(b, v, (size_t)n);
    proto_buf_puts(b, "]}");
}

/* [n, row shape...] into dims; returns the rank. */
static int row_dims(long n, const struct proto_shape *s, long *dims)
{
    dims[0] = n;
    for (int k = 0; k < s->rank; k++)
        dims[1 + k] = s->dim[k];
    return 1 + s->rank;
}

void proto_v2_write_result(struct proto_buf *b, const struct proto_model_id *id,
                           const struct eng_info *info, const struct proto_request *req,
                           const struct proto_result *r)
{
    const struct eng_dims *d = &info->dims;
    struct proto_shape xs = proto_shape_x(info), zs = proto_shape_z(info);
    unsigned w = req->v2_outputs ? req->v2_outputs : ~0u;
    proto_buf_puts(b, "{\"model_name\":");
    proto_buf_json_str(b, id->name);
    proto_buf_puts(b, ",\"model_version\":");
    proto_buf_json_str(b, id->version);
    if (req->v2_id) {
        proto_buf_puts(b, ",\"id\":");
        proto_buf_json_str(b, req->v2_id);
    }
    proto_buf_puts(b, ",\"parameters\":{\"sha256\":\"");
    proto_buf_puts(b, id->sha256);
    proto_buf_puts(b, "\",\"operation\":\"");
    proto_buf_puts(b, proto_op_str(r->op));
    proto_buf_putc(b, '"');
    if (r->op == PROTO_OP_SAMPLE) {
        proto_buf_puts(b, ",\"seed\":");
        proto_buf_u64(b, r->seed);
        proto_buf_puts(b, ",\"num_samples\":");
        proto_buf_i64(b, r->num_samples);
    }
    if (r->has_solver) {
        long bad = 0;
        for (long i = 0; i < r->solver_rows; i++)
            bad += r->converged && !r->converged[i];
        proto_buf_puts(b, ",\"solver_unconverged\":");
        proto_buf_i64(b, bad);
        proto_buf_puts(b, ",\"solver_certified\":");
        proto_buf_puts(b, r->certified ? "true" : "false");
    }
    proto_buf_puts(b, "},\"outputs\":[");
    bool first = true;
    long n = r->n;
    switch (r->op) {
    case PROTO_OP_FORWARD: {
        long sz[4], sy[2] = {n, d->y};
        int rz = row_dims(n, &zs, sz);
        if ((w & 1u) && r->z)
            f32_tensor(b, &first, "z", r->z, sz, rz);
        if ((w & 2u) && r->y_out)
            f32_tensor(b, &first, "y", r->y_out, sy, 2);
        if ((w & 4u) && r->log_det)
            f64_tensor(b, &first, "log_det", r->log_det, &n, 1);
        break;
    }
    case PROTO_OP_INVERSE: {
        long sx[4];
        int rx = row_dims(n, &xs, sx);
        if (w & 1u)
            f32_tensor(b, &first, "x", r->x, sx, rx);
        if (w & 2u)
            f64_tensor(b, &first, "log_det", r->log_det, &n, 1);
        break;
    }
    case PROTO_OP_SAMPLE: {
        long s5[5] = {n, 0}, s2[2] = {n, r->num_samples};
        int r5 = 1 + row_dims(r->num_samples, &xs, s5 + 1);
        if (w & 1u)
            f32_tensor(b, &first, "x", r->samples, s5, r5);
        if ((w & 2u) && r->sample_lp)
            f64_tensor(b, &first, "log_prob", r->sample_lp, s2, 2);
        break;
    }
    case PROTO_OP_LOG_PROB:
        if (w & 1u)
            f64_tensor(b, &first, "log_prob", r->log_prob, &n, 1);
        if ((w & 2u) && proto_has_bits_per_dim(info)) {
            /* written value by value: bits per dimension of each log_prob (image.h) */
            long one = n;
            tensor_head(b, &first, "bits_per_dim", "FP64", &one, 1);
            for (long i = 0; i < n && !proto_buf_failed(b); i++) {
                double v = proto_bits_per_dim(info, r->log_prob[i]);
                if (i)
                    proto_buf_putc(b, ',');
                if (isfinite(v))
                    proto_buf_f64(b, v);
                else
                    proto_buf_puts(b, "null");
            }
            proto_buf_puts(b, "]}");
        }
        break;
    default:
        break;
    }
    proto_buf_puts(b, "]}\n");
}

/* {"name", "datatype", "shape": [-1, row shape...]} (s NULL: [-1]). */
static void meta_tensor(struct proto_buf *b, bool *first, const char *name, const char *dt,
                        const struct proto_shape *s)
{
    if (!*first)
        proto_buf_putc(b, ',');
    *first = false;
    proto_buf_printf(b, "{\"name\":\"%s\",\"datatype\":\"%s\",\"shape\":[-1", name, dt);
    for (int k = 0; s && k < s->rank; k++)
        proto_buf_printf(b, ",%d", s->dim[k]);
    proto_buf_puts(b, "]}");
}

void proto_v2_write_metadata(struct proto_buf *b, const struct proto_model_id *id,
                             const struct eng_info *info)
{
    const struct eng_dims *d = &info->dims;
    enum eng_kind k = info->kind;
    proto_buf_puts(b, "{\"name\":");
    proto_buf_json_str(b, id->name);
    proto_buf_puts(b, ",\"versions\":[");
    proto_buf_json_str(b, id->version);
    proto_buf_puts(b, "],\"platform\":\"innserve_safetensors\",\"inputs\":[");
    bool first = true;
    struct proto_shape xs = proto_shape_x(info), zs = proto_shape_z(info);
    struct proto_shape ys = {1, {d->y, 1, 1}};
    meta_tensor(b, &first, "x", "FP32", &xs);
    if (k == ENG_KIND_CINN || k == ENG_KIND_MDN)
        meta_tensor(b, &first, "y", "FP32", &ys);
    proto_buf_puts(b, "],\"outputs\":[");
    first = true;
    if (k == ENG_KIND_MDN)
        meta_tensor(b, &first, "log_prob", "FP64", NULL);
    if (k != ENG_KIND_MLP && k != ENG_KIND_MDN)
        meta_tensor(b, &first, "z", "FP32", &zs);
    if (k == ENG_KIND_INN || k == ENG_KIND_MLP)
        meta_tensor(b, &first, "y", "FP32", &ys);
    if (k != ENG_KIND_MLP && k != ENG_KIND_MDN)
        meta_tensor(b, &first, "log_det", "FP64", NULL);
    proto_buf_puts(b, "],\"parameters\":{\"kind\":\"");
    proto_buf_puts(b, eng_kind_str(k));
    proto_buf_puts(b, "\",\"sha256\":\"");
    proto_buf_puts(b, id->sha256);
    if (k == ENG_KIND_MDN) {
        proto_buf_puts(b, "\",\"operations\":\"sample,log_prob\",\"default_operation\":"
                          "\"log_prob\"}}\n");
        return;
    }
    proto_buf_puts(b, "\",\"operations\":\"forward");
    if (k != ENG_KIND_MLP)
        proto_buf_puts(b, ",inverse,sample,log_prob");
    proto_buf_puts(b, "\",\"default_operation\":\"forward\"}}\n");
}

void proto_v2_write_server(struct proto_buf *b, const char *version)
{
    proto_buf_puts(b, "{\"name\":\"innserve\",\"version\":");
    proto_buf_json_str(b, version);
    proto_buf_puts(b, ",\"extensions\":[]}\n");
}
