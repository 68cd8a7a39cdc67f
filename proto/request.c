/*
 * request.c — JSON body -> validated struct proto_request for forward, inverse, sample,
 * log_prob and preimage (request.h), and the Accept / Content-Type checks.
 */
#include "request.h"
#include "image.h"
#include "npy.h"
#include "../engine/json_syntax.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const OP_NAMES[PROTO_OP_COUNT] = {"forward", "inverse", "sample",
                                                     "log_prob", "preimage", "calibration",
                                                     "mmd"};

const char *proto_op_str(enum proto_op op)
{
    return (unsigned)op < PROTO_OP_COUNT ? OP_NAMES[op] : "none";
}

enum proto_op proto_op_parse(const char *s)
{
    for (int i = 0; i < PROTO_OP_COUNT; i++)
        if (s && strcmp(s, OP_NAMES[i]) == 0)
            return (enum proto_op)i;
    return PROTO_OP_COUNT;
}

bool proto_op_supported(enum proto_op op, enum eng_kind kind)
{
    if (kind == ENG_KIND_MDN) /* a mixture has a density and samples, no map */
        return op != PROTO_OP_FORWARD && op != PROTO_OP_INVERSE && op != PROTO_OP_PREIMAGE;
    if (op == PROTO_OP_FORWARD || op == PROTO_OP_PREIMAGE)
        return true;
    return kind != ENG_KIND_MLP;
}

bool proto_op_async(enum proto_op op)
{
    return op == PROTO_OP_SAMPLE || op == PROTO_OP_PREIMAGE || op == PROTO_OP_CALIBRATION ||
           op == PROTO_OP_MMD;
}

static const char *const OUT_NAMES[] = {"samples", "log_prob", "summary", "resimulation"};

/* A non-empty array of distinct names from names[0 .. n) (n <= 8) into the bit set *out
 * (bit k for names[k]); errors name the field and the element. */
static enum proto_code name_set(const cJSON *v, const char *field, const char *const *names,
                                unsigned n, unsigned *out, struct proto_error *e)
{
    char list[128];
    size_t used = 0;
    for (unsigned k = 0; k < n && used < sizeof list; k++)
        used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", k ? ", " : "",
                                 names[k]);
    if (!cJSON_IsArray(v) || !v->child)
        return proto_errorf(e, PROTO_E_FIELD, "%s must be a non-empty array of strings from "
                            "%s; got %s", field, list,
                            cJSON_IsArray(v) ? "an empty array" : proto_json_type(v));
    *out = 0;
    int i = 0;
    for (const cJSON *c = v->child; c; c = c->next, i++) {
        if (!cJSON_IsString(c))
            return proto_errorf(e, PROTO_E_FIELD, "%s[%d] must be a string, got %s", field, i,
                                proto_json_type(c));
        unsigned bit = 0;
        for (unsigned k = 0; k < n; k++)
            if (strcmp(c->valuestring, names[k]) == 0)
                bit = 1u << k;
        if (!bit)
            return proto_errorf(e, PROTO_E_FIELD, "%s[%d] = \"%.32s\" is not one of %s", field,
                                i, c->valuestring, list);
        if (*out & bit)
            return proto_errorf(e, PROTO_E_FIELD, "%s[%d] = \"%s\" is listed twice", field, i,
                                c->valuestring);
        *out |= bit;
    }
    return PROTO_OK;
}

void proto_request_free(struct proto_request *r)
{
    proto_matrix_free(&r->x);
    proto_matrix_free(&r->y);
    proto_matrix_free(&r->z);
    proto_matrix_free(&r->target);
    proto_matrix_free(&r->ref);
    proto_matrix_free(&r->npy_main);
    proto_matrix_free(&r->npy_y);
    free(r->quantiles);
    free(r->bounds_low);
    free(r->bounds_high);
    free(r->v2_id);
    memset(r, 0, sizeof *r);
}

/* ---- shaped rows ------------------------------------------------------------------------ */

/* Rows of x (which = 'x') or z (which = 'z'): rows of dims values, or nested [B, C, H, W] /
 * [B, C, L] for a model whose rows have that shape. */
static enum proto_code read_rows(const cJSON *v, const char *name, char which,
                                 const struct eng_info *info, bool allow_flat, int max_rows,
                                 const struct proto_limits *lim, struct proto_matrix *out,
                                 struct proto_error *e)
{
    struct proto_shape s = which == 'x' ? proto_shape_x(info) : proto_shape_z(info);
    char sh[40], hint[64];
    proto_shape_str(&s, sh, sizeof sh);
    snprintf(hint, sizeof hint, "the model's shape.%c %s", which, sh);
    return proto_json_shaped(v, name, s.rank, s.dim, which == 'x' ? "the model's dims.x"
                             : "the model's dims.z", hint, allow_flat, max_rows, lim, out, e);
}

/* ---- y by kind --------------------------------------------------------------------------- */

/* Reads y for op.  need: the kind takes y here.  rows_match: 0 = any row count (sample:
 * observations), else y must have 1 or rows_match rows. */
static enum proto_code read_y(const cJSON *root, const struct eng_info *info, bool need,
                              int rows_match, const char *vs, int max_rows,
                              const struct proto_limits *lim, struct proto_matrix *y,
                              struct proto_matrix *npy_y, struct proto_error *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "y");
    const char *kind = eng_kind_str(info->kind);
    bool from_npy = npy_y && npy_y->data;
    if (!need) {
        if (v || from_npy)
            return proto_errorf(e, PROTO_E_UNKNOWN_FIELD, "%s is not taken here by a "
                                "%s model (it has no observation y for this operation)",
                                from_npy ? "a second array y" : "field 'y'", kind);
        return PROTO_OK;
    }
    if (!v && !from_npy)
        return proto_errorf(e, PROTO_E_MISSING, "missing field 'y': a %s model needs the "
                            "observation y (rows of %d values)%s", kind, info->dims.y,
                            npy_y ? "; in an application/x-npy body, a second array" : "");
    enum proto_code rc;
    if (from_npy) {
        *y = *npy_y;
        memset(npy_y, 0, sizeof *npy_y);
        if (y->rows > max_rows) {
            proto_matrix_free(y);
            return proto_errorf(e, PROTO_E_TOO_LARGE, "y has more than %d rows (the limit for "
                                "this field)", max_rows);
        }
    } else if ((rc = proto_json_matrix(v, "y", info->dims.y, "the model's dims.y", true,
                                       max_rows, lim, y, e)) != PROTO_OK) {
        return rc;
    }
    if (rows_match > 0 && y->rows != 1 && y->rows != rows_match) {
        int got = y->rows;
        proto_matrix_free(y);
        return proto_errorf(e, PROTO_E_SHAPE, "y has %d rows; it must have 1 row (used for "
                            "every row of %s) or %d rows, one per row of %s", got, vs,
                            rows_match, vs);
    }
    return PROTO_OK;
}

/* "auto, newton, ..." from the engine's table of method names (for messages). */
static void solve_method_list(char *buf, size_t n)
{
    size_t len = 0;
    buf[0] = '\0';
    for (int i = 0; i < ENG_SOLVE_COUNT && len < n; i++) {
        int k = snprintf(buf + len, n - len, "%s%s", i ? ", " : "", eng_solve_method_str(i));
        if (k < 0)
            break;
        len += (size_t)k;
    }
}

static enum proto_code read_solver(const cJSON *root, const struct proto_limits *lim,
                                   struct eng_solver_opts *s, struct proto_error *e)
{
    s->tol = ENG_SOLVER_DEFAULT_TOL;
    s->max_iter = ENG_SOLVER_DEFAULT_MAX_ITER;
    s->method = ENG_SOLVE_AUTO;
    const cJSON *v;
    enum proto_code rc;
    if ((v = cJSON_GetObjectItemCaseSensitive(root, "tol"))) {
        if ((rc = proto_json_num(v, "tol", 0.0, true, 1.0, false, &s->tol, e)) != PROTO_OK)
            return rc;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(root, "max_iter"))) {
        long long it;
        if ((rc = proto_json_int(v, "max_iter", 1, lim->max_solver_iter, &it, e)) != PROTO_OK)
            return rc;
        s->max_iter = (int)it;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(root, "method"))) {
        const char *m;
        if ((rc = proto_json_str(v, "method", &m, e)) != PROTO_OK)
            return rc;
        enum eng_solve_method k;
        if (!eng_solve_method_parse(m, &k)) {
            char names[128];
            solve_method_list(names, sizeof names);
            return proto_errorf(e, PROTO_E_FIELD, "method must be one of %s; got \"%.32s\"",
                                names, m);
        }
        s->method = (int)k;
    }
    return PROTO_OK;
}

static enum proto_code read_seed(const cJSON *root, uint64_t *seed, bool *given,
                                 struct proto_error *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "seed");
    *given = false;
    if (!v || cJSON_IsNull(v))
        return PROTO_OK;
    long long s;
    enum proto_code rc = proto_json_int(v, "seed", 0, (long long)PROTO_MAX_SEED, &s, e);
    if (rc != PROTO_OK)
        return rc;
    *seed = (uint64_t)s;
    *given = true;
    return PROTO_OK;
}

/* "async": a boolean (absent: false). */
static enum proto_code read_async(const cJSON *root, bool *out, struct proto_error *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "async");
    *out = false;
    if (!v)
        return PROTO_OK;
    if (!cJSON_IsBool(v))
        return proto_errorf(e, PROTO_E_FIELD, "async must be true or false, got %s",
                            proto_json_type(v));
    *out = cJSON_IsTrue(v);
    return PROTO_OK;
}

/* log_prob's "leakage_correction" (bool), "leakage_samples" and "seed" (only with it). */
static enum proto_code read_leakage(const cJSON *root, struct proto_request *r,
                                    struct proto_error *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "leakage_correction");
    r->leakage = false;
    r->leakage_samples = PROTO_DEF_LEAKAGE_SAMPLES;
    if (v && !cJSON_IsBool(v))
        return proto_errorf(e, PROTO_E_FIELD, "leakage_correction must be true or false, got %s",
                            proto_json_type(v));
    r->leakage = v && cJSON_IsTrue(v);
    const cJSON *ns = cJSON_GetObjectItemCaseSensitive(root, "leakage_samples");
    const cJSON *sd = cJSON_GetObjectItemCaseSensitive(root, "seed");
    if (!r->leakage && (ns || sd))
        return proto_errorf(e, PROTO_E_FIELD, "%s only applies with \"leakage_correction\": true",
                            ns ? "leakage_samples" : "seed");
    enum proto_code rc;
    if (ns) {
        long long k;
        if ((rc = proto_json_int(ns, "leakage_samples", 1, PROTO_DEF_MAX_SAMPLES, &k, e)) !=
            PROTO_OK)
            return rc;
        r->leakage_samples = (long)k;
    }
    r->seed = 0;
    return read_seed(root, &r->seed, &r->seed_given, e);
}

/* ---- per operation ------------------------------------------------------------------------ */

static enum proto_code parse_forward_like(enum proto_op op, const cJSON *root,
                                          const struct eng_info *info,
                                          const struct proto_limits *lim,
                                          struct proto_request *r, struct proto_error *e)
{
    static const char *const F[] = {"x", "y", "leakage_correction", "leakage_samples", "seed"};
    /* the leakage options only for a model with a prior box (like y for a flow, they are
     * unknown fields of the others) */
    bool leak = op == PROTO_OP_LOG_PROB && info->prior_low;
    enum proto_code rc = proto_json_fields(root, F, leak ? 5 : 2, "", e);
    if (rc != PROTO_OK)
        return rc;
    if (leak && (rc = read_leakage(root, r, e)) != PROTO_OK)
        return rc;
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(root, "x");
    if (r->npy) {
        r->x = r->npy_main;
        memset(&r->npy_main, 0, sizeof r->npy_main);
    } else if (!x) {
        return proto_errorf(e, PROTO_E_MISSING, "missing field 'x' (rows of %d values)",
                            info->dims.x);
    } else if ((rc = read_rows(x, "x", 'x', info, true, lim->max_rows, lim, &r->x, e)) !=
               PROTO_OK) {
        return rc;
    }
    bool need_y = op == PROTO_OP_FORWARD ? info->kind == ENG_KIND_CINN
                                         : (info->kind == ENG_KIND_CINN ||
                                            info->kind == ENG_KIND_INN ||
                                            info->kind == ENG_KIND_MDN);
    if ((rc = read_y(root, info, need_y, r->x.rows, "x", lim->max_rows, lim, &r->y,
                     r->npy ? &r->npy_y : NULL, e)) != PROTO_OK)
        return rc;
    long yrows = r->y.rows ? r->y.rows : 1;
    if (r->leakage && yrows * r->leakage_samples > lim->max_samples)
        return proto_errorf(e, PROTO_E_TOO_LARGE, "leakage_correction: %ld y rows x "
                            "leakage_samples %ld = %ld samples, more than the server allows per "
                            "request (%ld, --max-samples); send one y row (broadcast) or fewer "
                            "leakage_samples", yrows, r->leakage_samples,
                            yrows * r->leakage_samples, lim->max_samples);
    return PROTO_OK;
}

static enum proto_code parse_inverse(const cJSON *root, const struct eng_info *info,
                                     const struct proto_limits *lim, struct proto_request *r,
                                     struct proto_error *e)
{
    static const char *const F[] = {"z", "y", "tol", "max_iter", "method"};
    enum proto_code rc = proto_json_fields(root, F, 5, "", e);
    if (rc != PROTO_OK)
        return rc;
    const cJSON *z = cJSON_GetObjectItemCaseSensitive(root, "z");
    if (r->npy) {
        r->z = r->npy_main;
        memset(&r->npy_main, 0, sizeof r->npy_main);
    } else if (!z) {
        return proto_errorf(e, PROTO_E_MISSING, "missing field 'z' (rows of %d values)",
                            info->dims.z);
    } else if ((rc = read_rows(z, "z", 'z', info, true, lim->max_rows, lim, &r->z, e)) !=
               PROTO_OK) {
        return rc;
    }
    if ((rc = read_y(root, info, info->kind != ENG_KIND_FLOW, r->z.rows, "z", lim->max_rows,
                     lim, &r->y, r->npy ? &r->npy_y : NULL, e)) != PROTO_OK)
        return rc;
    return read_solver(root, lim, &r->solver, e);
}

/* "reject_outside_prior" of sample, calibration and mmd (default true).  The callers list
 * the field among the known ones only for a model with a prior box, so for the others it
 * is an unknown field. */
static enum proto_code read_reject(const cJSON *root, struct proto_request *r,
                                   struct proto_error *e)
{
    const cJSON *rj = cJSON_GetObjectItemCaseSensitive(root, "reject_outside_prior");
    r->reject = true;
    if (rj) {
        if (!cJSON_IsBool(rj))
            return proto_errorf(e, PROTO_E_FIELD, "reject_outside_prior must be true or false, "
                                "got %s", proto_json_type(rj));
        r->reject = cJSON_IsTrue(rj);
    }
    return PROTO_OK;
}

static enum proto_code parse_sample(const cJSON *root, const struct eng_info *info,
                                    const struct proto_limits *lim, struct proto_request *r,
                                    struct proto_error *e)
{
    static const char *const F[] = {"y", "num_samples", "seed", "temperature", "outputs",
                                    "quantiles", "tol", "max_iter", "method", "async",
                                    "reject_outside_prior"};
    /* reject_outside_prior only for a model with a prior box (an unknown field of the
     * others, like the leakage options of log_prob) */
    enum proto_code rc = proto_json_fields(root, F, info->prior_low ? 11 : 10, "", e);
    if (rc != PROTO_OK)
        return rc;
    if ((rc = read_reject(root, r, e)) != PROTO_OK)
        return rc;
    if ((rc = read_async(root, &r->async, e)) != PROTO_OK)
        return rc;
    if ((rc = read_y(root, info, info->kind != ENG_KIND_FLOW, 0, "", lim->max_obs, lim, &r->y,
                     r->npy ? &r->npy_y : NULL, e)) != PROTO_OK)
        return rc;
    long n_obs = info->kind == ENG_KIND_FLOW ? 1 : r->y.rows;
    const cJSON *v;
    r->num_samples = lim->default_num_samples;
    if ((v = cJSON_GetObjectItemCaseSensitive(root, "num_samples"))) {
        long long ns;
        if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) ||
            v->valuedouble != floor(v->valuedouble))
            return proto_errorf(e, PROTO_E_FIELD, "num_samples must be a positive integer, "
                                "got %s", cJSON_IsNumber(v) ? "a fraction" : proto_json_type(v));
        if (v->valuedouble < 1)
            return proto_errorf(e, PROTO_E_FIELD, "num_samples must be at least 1, got %.17g",
                                v->valuedouble);
        if (v->valuedouble > (double)lim->max_samples)
            return proto_errorf(e, PROTO_E_TOO_LARGE, "num_samples = %.17g is more than the "
                                "server allows per request (%ld, --max-samples); ask for "
                                "fewer samples", v->valuedouble, lim->max_samples);
        ns = (long long)v->valuedouble;
        r->num_samples = (long)ns;
    }
    if (n_obs * r->num_samples > lim->max_samples)
        return proto_errorf(e, PROTO_E_TOO_LARGE, "%ld observations x num_samples %ld = %ld "
                            "samples, more than the server allows per request (%ld, "
                            "--max-samples); ask for fewer samples or split the request",
                            n_obs, r->num_samples, n_obs * r->num_samples, lim->max_samples);
    if ((rc = read_seed(root, &r->seed, &r->seed_given, e)) != PROTO_OK)
        return rc;
    r->temperature = 1.0f;
    if ((v = cJSON_GetObjectItemCaseSensitive(root, "temperature"))) {
        double t;
        if ((rc = proto_json_num(v, "temperature", 0.0, false, lim->max_temperature, false, &t,
                                 e)) != PROTO_OK)
            return rc;
        r->temperature = (float)t;
    }
    r->outputs = PROTO_OUT_SAMPLES;
    if ((v = cJSON_GetObjectItemCaseSensitive(root, "outputs"))) {
        if ((rc = name_set(v, "outputs", OUT_NAMES, 4, &r->outputs, e)) != PROTO_OK)
            return rc;
        if ((r->outputs & PROTO_OUT_RESIMULATION) && info->kind != ENG_KIND_INN)
            return proto_errorf(e, PROTO_E_UNSUPPORTED, "outputs: resimulation is only defined "
                                "for inn models (this model is a %s)", eng_kind_str(info->kind));
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(root, "quantiles"))) {
        if (!cJSON_IsArray(v) || !v->child)
            return proto_errorf(e, PROTO_E_FIELD, "quantiles must be a non-empty array of "
                                "numbers in [0, 1], got %s",
                                cJSON_IsArray(v) ? "an empty array" : proto_json_type(v));
        int n = cJSON_GetArraySize(v);
        if (n > lim->max_quantiles)
            return proto_errorf(e, PROTO_E_TOO_LARGE, "quantiles has %d entries, more than "
                                "%d", n, lim->max_quantiles);
        r->quantiles = malloc(sizeof(double) * (size_t)n);
        if (!r->quantiles)
            return proto_errorf(e, PROTO_E_NOMEM, "out of memory");
        int i = 0;
        for (const cJSON *c = v->child; c; c = c->next, i++) {
            char name[32];
            snprintf(name, sizeof name, "quantiles[%d]", i);
            if ((rc = proto_json_num(c, name, 0.0, false, 1.0, false, &r->quantiles[i], e)) !=
                PROTO_OK)
                return rc;
            for (int k = 0; k < i; k++)
                if (r->quantiles[k] == r->quantiles[i])
                    return proto_errorf(e, PROTO_E_FIELD, "quantiles[%d] = %g is listed twice",
                                        i, r->quantiles[i]);
        }
        r->n_quantiles = n;
    } else if (r->outputs & PROTO_OUT_SUMMARY) {
        static const double DEF_Q[] = {0.05, 0.5, 0.95};
        r->quantiles = malloc(sizeof DEF_Q);
        if (!r->quantiles)
            return proto_errorf(e, PROTO_E_NOMEM, "out of memory");
        memcpy(r->quantiles, DEF_Q, sizeof DEF_Q);
        r->n_quantiles = 3;
    }
    return read_solver(root, lim, &r->solver, e);
}

static enum proto_code parse_preimage(const cJSON *root, const struct eng_info *info,
                                      const struct proto_limits *lim, struct proto_request *r,
                                      struct proto_error *e)
{
    static const char *const F[] = {"target", "y", "method", "num_solutions", "max_steps",
                                    "seed", "bounds", "prior_weight", "async"};
    enum proto_code rc = proto_json_fields(root, F, 9, "", e);
    if (rc != PROTO_OK)
        return rc;
    if ((rc = read_async(root, &r->async, e)) != PROTO_OK)
        return rc;
    bool to_y = info->kind == ENG_KIND_MLP || info->kind == ENG_KIND_INN;
    int tw = to_y ? info->dims.y : info->dims.z;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(root, "target");
    if (!t)
        return proto_errorf(e, PROTO_E_MISSING, "missing field 'target' (rows of %d values: "
                            "the model's %s)", tw, to_y ? "output y" : "latent z");
    if ((rc = to_y ? proto_json_matrix(t, "target", tw, "the model's dims.y", true,
                                       lim->max_preimage_targets, lim, &r->target, e)
                   : read_rows(t, "target", 'z', info, true, lim->max_preimage_targets, lim,
                               &r->target, e)) != PROTO_OK)
        return rc;
    if ((rc = read_y(root, info, info->kind == ENG_KIND_CINN, r->target.rows, "target",
                     lim->max_preimage_targets, lim, &r->y, NULL, e)) != PROTO_OK)
        return rc;
    struct eng_preimage_opts *p = &r->pre;
    p->method = ENG_PREIMAGE_GRADIENT;
    p->num_solutions = 8;
    p->max_steps = 500;
    p->prior_weight = 0.0;
    const cJSON *v;
    if ((v = cJSON_GetObjectItemCaseSensitive(root, "method"))) {
        const char *m;
        if ((rc = proto_json_str(v, "method", &m, e)) != PROTO_OK)
            return rc;
        if (strcmp(m, "gradient") == 0)
            p->method = ENG_PREIMAGE_GRADIENT;
        else if (strcmp(m, "evolutionary") == 0)
            p->method = ENG_PREIMAGE_EVOLUTIONARY;
        else
            return proto_errorf(e, PROTO_E_FIELD, "method must be \"gradient\" or "
                                "\"evolutionary\", got \"%.32s\"", m);
    }
    long long k;
    if ((v = cJSON_GetObjectItemCaseSensitive(root, "num_solutions"))) {
        if ((rc = proto_json_int(v, "num_solutions", 1, lim->max_preimage_solutions, &k, e)) !=
            PROTO_OK)
            return rc;
        p->num_solutions = (int)k;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(root, "max_steps"))) {
        if ((rc = proto_json_int(v, "max_steps", 1, lim->max_preimage_steps, &k, e)) != PROTO_OK)
            return rc;
        p->max_steps = (int)k;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(root, "prior_weight"))) {
        if ((rc = proto_json_num(v, "prior_weight", 0.0, false, 1e6, false, &p->prior_weight,
                                 e)) != PROTO_OK)
            return rc;
    }
    bool given;
    if ((rc = read_seed(root, &r->seed, &given, e)) != PROTO_OK)
        return rc;
    r->seed_given = given;
    if ((v = cJSON_GetObjectItemCaseSensitive(root, "bounds")) && !cJSON_IsNull(v)) {
        static const char *const B[] = {"low", "high"};
        if ((rc = proto_json_fields(v, B, 2, "bounds.", e)) != PROTO_OK)
            return rc;
        const cJSON *lo = cJSON_GetObjectItemCaseSensitive(v, "low");
        const cJSON *hi = cJSON_GetObjectItemCaseSensitive(v, "high");
        if (!lo || !hi)
            return proto_errorf(e, PROTO_E_MISSING, "bounds needs both 'low' and 'high' (%d "
                                "values each)", info->dims.x);
        if ((rc = proto_json_vector(lo, "bounds.low", info->dims.x, &r->bounds_low, NULL, e)) !=
            PROTO_OK)
            return rc;
        if ((rc = proto_json_vector(hi, "bounds.high", info->dims.x, &r->bounds_high, NULL,
                                    e)) != PROTO_OK)
            return rc;
        for (int j = 0; j < info->dims.x; j++)
            if (!(r->bounds_low[j] < r->bounds_high[j]))
                return proto_errorf(e, PROTO_E_FIELD, "bounds.low[%d] must be below "
                                    "bounds.high[%d]", j, j);
        p->low = r->bounds_low;
        p->high = r->bounds_high;
    }
    return PROTO_OK;
}

/* ---- calibration and mmd ------------------------------------------------------------------ */

/* num_samples: an integer in [lo, lim->max_samples], default def; n_obs of them in all must
 * stay within --max-samples too. */
static enum proto_code read_num_samples(const cJSON *root, const struct proto_limits *lim,
                                        long def, long lo, long n_obs, const char *per,
                                        long *out, struct proto_error *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "num_samples");
    *out = def;
    if (v) {
        if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) ||
            v->valuedouble != floor(v->valuedouble))
            return proto_errorf(e, PROTO_E_FIELD, "num_samples must be an integer, got %s",
                                cJSON_IsNumber(v) ? "a fraction" : proto_json_type(v));
        if (v->valuedouble < (double)lo)
            return proto_errorf(e, PROTO_E_FIELD, "num_samples must be at least %ld, got %.17g",
                                lo, v->valuedouble);
        if (v->valuedouble > (double)lim->max_samples)
            return proto_errorf(e, PROTO_E_TOO_LARGE, "num_samples = %.17g is more than the "
                                "server allows per request (%ld, --max-samples); ask for "
                                "fewer samples", v->valuedouble, lim->max_samples);
        *out = (long)v->valuedouble;
    }
    if (n_obs * *out > lim->max_samples)
        return proto_errorf(e, PROTO_E_TOO_LARGE, "%ld %s x num_samples %ld = %ld samples, more "
                            "than the server allows per request (%ld, --max-samples); ask for "
                            "fewer samples or split the request", n_obs, per, *out,
                            n_obs * *out, lim->max_samples);
    return PROTO_OK;
}

/* An optional integer field in [lo, hi]; *out keeps its default when absent. */
static enum proto_code opt_int(const cJSON *root, const char *name, long long lo, long long hi,
                               int *out, struct proto_error *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, name);
    if (!v)
        return PROTO_OK;
    long long k;
    enum proto_code rc = proto_json_int(v, name, lo, hi, &k, e);
    if (rc == PROTO_OK)
        *out = (int)k;
    return rc;
}

static enum proto_code opt_bool(const cJSON *root, const char *name, bool *out,
                                struct proto_error *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, name);
    if (!v)
        return PROTO_OK;
    if (!cJSON_IsBool(v))
        return proto_errorf(e, PROTO_E_FIELD, "%s must be true or false, got %s", name,
                            proto_json_type(v));
    *out = cJSON_IsTrue(v);
    return PROTO_OK;
}

static const char *const DIAG_NAMES[] = {"sbc", "coverage", "tarp"};

static enum proto_code parse_calibration(const cJSON *root, const struct eng_info *info,
                                         const struct proto_limits *lim,
                                         struct proto_request *r, struct proto_error *e)
{
    static const char *const F[] = {"x", "y", "num_samples", "seed", "diagnostics", "bins",
                                    "coverage_points", "confidence", "tarp_references",
                                    "tarp_bins", "z_score", "tol", "max_iter", "method",
                                    "async", "reject_outside_prior"};
    const size_t nf = sizeof F / sizeof F[0];
    enum proto_code rc = proto_json_fields(root, F, info->prior_low ? nf : nf - 1, "", e);
    if (rc != PROTO_OK)
        return rc;
    if ((rc = read_reject(root, r, e)) != PROTO_OK)
        return rc;
    if ((rc = read_async(root, &r->async, e)) != PROTO_OK)
        return rc;
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(root, "x");
    if (!x)
        return proto_errorf(e, PROTO_E_MISSING, "missing field 'x': the ground-truth parameters "
                            "theta*, one row of %d values per pair", info->dims.x);
    if ((rc = read_rows(x, "x", 'x', info, true, lim->max_rows, lim, &r->x, e)) != PROTO_OK)
        return rc;
    int N = r->x.rows;
    if ((rc = read_y(root, info, info->kind != ENG_KIND_FLOW, 0, "", lim->max_rows, lim, &r->y,
                     NULL, e)) != PROTO_OK)
        return rc;
    if (info->kind != ENG_KIND_FLOW && r->y.rows != N)
        return proto_errorf(e, PROTO_E_SHAPE, "y has %d rows and x has %d: calibration needs "
                            "one observation y per ground-truth row of x", r->y.rows, N);
    if ((rc = read_num_samples(root, lim, PROTO_DEF_CALIB_SAMPLES, 1, N, "pairs",
                               &r->num_samples, e)) != PROTO_OK)
        return rc;
    if ((rc = read_seed(root, &r->seed, &r->seed_given, e)) != PROTO_OK)
        return rc;
    r->temperature = 1.0f;
    const cJSON *v;
    r->diagnostics = PROTO_DIAG_ALL;
    if ((v = cJSON_GetObjectItemCaseSensitive(root, "diagnostics")) &&
        (rc = name_set(v, "diagnostics", DIAG_NAMES, 3, &r->diagnostics, e)) != PROTO_OK)
        return rc;
    r->bins = 20;
    if ((rc = opt_int(root, "bins", 1, PROTO_MAX_RANK_BINS, &r->bins, e)) != PROTO_OK)
        return rc;
    if (r->bins > r->num_samples + 1)
        r->bins = (int)r->num_samples + 1;
    r->coverage_points = 20;
    if ((rc = opt_int(root, "coverage_points", 1, PROTO_MAX_COVERAGE_POINTS,
                      &r->coverage_points, e)) != PROTO_OK)
        return rc;
    r->confidence = 0.95;
    if ((v = cJSON_GetObjectItemCaseSensitive(root, "confidence")) &&
        (rc = proto_json_num(v, "confidence", 0.0, true, 1.0, true, &r->confidence, e)) !=
            PROTO_OK)
        return rc;
    r->tarp_bins = N / 10 > 0 ? N / 10 : 1;
    if ((rc = opt_int(root, "tarp_bins", 1, N, &r->tarp_bins, e)) != PROTO_OK)
        return rc;
    r->z_score = true;
    if ((rc = opt_bool(root, "z_score", &r->z_score, e)) != PROTO_OK)
        return rc;
    if ((v = cJSON_GetObjectItemCaseSensitive(root, "tarp_references"))) {
        if ((rc = read_rows(v, "tarp_references", 'x', info, true, lim->max_rows, lim, &r->ref,
                            e)) != PROTO_OK)
            return rc;
        if (r->ref.rows != N)
            return proto_errorf(e, PROTO_E_SHAPE, "tarp_references has %d rows; it needs one "
                                "reference point per pair (%d rows, as x)", r->ref.rows, N);
    }
    return read_solver(root, lim, &r->solver, e);
}

static const double DEF_SCALES[] = {0.05, 0.2, 0.9};

static enum proto_code parse_mmd(const cJSON *root, const struct eng_info *info,
                                 const struct proto_limits *lim, struct proto_request *r,
                                 struct proto_error *e)
{
    static const char *const F[] = {"y", "reference", "num_samples", "seed", "temperature",
                                    "scales", "estimator", "permutations", "tol", "max_iter",
                                    "method", "async", "reject_outside_prior"};
    const size_t nf = sizeof F / sizeof F[0];
    enum proto_code rc = proto_json_fields(root, F, info->prior_low ? nf : nf - 1, "", e);
    if (rc != PROTO_OK)
        return rc;
    if ((rc = read_reject(root, r, e)) != PROTO_OK)
        return rc;
    if ((rc = read_async(root, &r->async, e)) != PROTO_OK)
        return rc;
    if ((rc = read_y(root, info, info->kind != ENG_KIND_FLOW, 0, "", lim->max_obs, lim, &r->y,
                     NULL, e)) != PROTO_OK)
        return rc;
    if (info->kind != ENG_KIND_FLOW && r->y.rows != 1)
        return proto_errorf(e, PROTO_E_SHAPE, "y has %d rows; mmd compares the posterior of "
                            "one observation: give one row of %d values", r->y.rows,
                            info->dims.y);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "reference");
    if (!v)
        return proto_errorf(e, PROTO_E_MISSING, "missing field 'reference': samples from the "
                            "true posterior, rows of %d values", info->dims.x);
    if ((rc = read_rows(v, "reference", 'x', info, false, lim->max_rows, lim, &r->ref, e)) !=
        PROTO_OK)
        return rc;
    if (r->ref.rows < 2)
        return proto_errorf(e, PROTO_E_SHAPE, "reference has %d row; MMD needs at least 2 "
                            "reference samples", r->ref.rows);
    if ((rc = read_num_samples(root, lim, PROTO_DEF_NUM_SAMPLES, 2, 1, "observation",
                               &r->num_samples, e)) != PROTO_OK)
        return rc;
    if (r->num_samples + r->ref.rows > lim->max_mmd_points)
        return proto_errorf(e, PROTO_E_TOO_LARGE, "num_samples %ld + %d reference rows = %ld "
                            "points, more than one MMD test takes (%d: its kernel matrix is "
                            "their square); ask for fewer samples or subsample the reference",
                            r->num_samples, r->ref.rows, r->num_samples + r->ref.rows,
                            lim->max_mmd_points);
    if ((rc = read_seed(root, &r->seed, &r->seed_given, e)) != PROTO_OK)
        return rc;
    r->temperature = 1.0f;
    if ((v = cJSON_GetObjectItemCaseSensitive(root, "temperature"))) {
        double t;
        if ((rc = proto_json_num(v, "temperature", 0.0, false, lim->max_temperature, false, &t,
                                 e)) != PROTO_OK)
            return rc;
        r->temperature = (float)t;
    }
    r->n_scales = 3;
    memcpy(r->scales, DEF_SCALES, sizeof DEF_SCALES);
    if ((v = cJSON_GetObjectItemCaseSensitive(root, "scales"))) {
        int n = cJSON_IsArray(v) ? cJSON_GetArraySize(v) : 0;
        if (!cJSON_IsArray(v) || n < 1)
            return proto_errorf(e, PROTO_E_FIELD, "scales must be a non-empty array of positive "
                                "numbers (IMQ kernel widths), got %s",
                                cJSON_IsArray(v) ? "an empty array" : proto_json_type(v));
        if (n > PROTO_MAX_MMD_SCALES)
            return proto_errorf(e, PROTO_E_TOO_LARGE, "scales has %d entries, more than %d", n,
                                PROTO_MAX_MMD_SCALES);
        int i = 0;
        for (const cJSON *c = v->child; c; c = c->next, i++) {
            char name[32];
            snprintf(name, sizeof name, "scales[%d]", i);
            if ((rc = proto_json_num(c, name, 0.0, true, 1e30, false, &r->scales[i], e)) !=
                PROTO_OK)
                return rc;
        }
        r->n_scales = n;
    }
    r->unbiased = true;
    if ((v = cJSON_GetObjectItemCaseSensitive(root, "estimator"))) {
        const char *s;
        if ((rc = proto_json_str(v, "estimator", &s, e)) != PROTO_OK)
            return rc;
        if (strcmp(s, "unbiased") == 0)
            r->unbiased = true;
        else if (strcmp(s, "biased") == 0)
            r->unbiased = false;
        else
            return proto_errorf(e, PROTO_E_FIELD, "estimator must be \"unbiased\" or "
                                "\"biased\", got \"%.32s\"", s);
    }
    r->permutations = 200;
    if ((rc = opt_int(root, "permutations", 0, PROTO_MAX_PERMUTATIONS, &r->permutations, e)) !=
        PROTO_OK)
        return rc;
    return read_solver(root, lim, &r->solver, e);
}

/* The fields of root (and, for an application/x-npy body, the arrays already in
 * out->npy_main / npy_y) into *out. */
static enum proto_code from_root(enum proto_op op, const cJSON *root,
                                 const struct eng_info *info, const struct proto_limits *lim,
                                 struct proto_request *out, struct proto_error *e)
{
    out->op = op;
    if (!proto_op_supported(op, info->kind))
        return proto_errorf(e, PROTO_E_UNSUPPORTED, "%s is not defined for a%s %s model%s",
                            proto_op_str(op),
                            info->kind == ENG_KIND_INN || info->kind == ENG_KIND_MLP ||
                                    info->kind == ENG_KIND_MDN ? "n" : "",
                            eng_kind_str(info->kind),
                            info->kind == ENG_KIND_MLP ? " (use preimage search)"
                            : info->kind == ENG_KIND_MDN ? " (a mixture density network is "
                                                           "not a bijection: use sample or "
                                                           "log_prob)" : "");
    enum proto_code rc;
    switch (op) {
    case PROTO_OP_FORWARD:
    case PROTO_OP_LOG_PROB:
        rc = parse_forward_like(op, root, info, lim, out, e);
        break;
    case PROTO_OP_INVERSE:
        rc = parse_inverse(root, info, lim, out, e);
        break;
    case PROTO_OP_SAMPLE:
        rc = parse_sample(root, info, lim, out, e);
        break;
    case PROTO_OP_PREIMAGE:
        rc = parse_preimage(root, info, lim, out, e);
        break;
    case PROTO_OP_CALIBRATION:
        rc = parse_calibration(root, info, lim, out, e);
        break;
    case PROTO_OP_MMD:
        rc = parse_mmd(root, info, lim, out, e);
        break;
    default:
        rc = proto_errorf(e, PROTO_E_INTERNAL, "unknown operation");
    }
    if (rc != PROTO_OK)
        proto_request_free(out);
    return rc;
}

enum proto_code proto_request_from_json(enum proto_op op, const cJSON *root,
                                        const struct eng_info *info,
                                        const struct proto_limits *lim,
                                        struct proto_request *out, struct proto_error *e)
{
    memset(out, 0, sizeof *out);
    return from_root(op, root, info, lim, out, e);
}

enum proto_code proto_request_parse(enum proto_op op, const char *body, size_t len,
                                    const struct eng_info *info,
                                    const struct proto_limits *lim, struct proto_request *out,
                                    struct proto_error *e)
{
    memset(out, 0, sizeof *out);
    if (!proto_op_supported(op, info->kind))
        return proto_request_from_json(op, NULL, info, lim, out, e);
    cJSON *root;
    enum proto_code rc =
        proto_json_parse(body, len, lim->max_json_depth, lim->max_elements, &root, e);
    if (rc != PROTO_OK)
        return rc;
    rc = proto_request_from_json(op, root, info, lim, out, e);
    cJSON_Delete(root);
    return rc;
}

const char *proto_query_get(const struct proto_query *q, const char *key)
{
    const char *v = NULL;
    for (int i = 0; q && i < q->n; i++)
        if (!strcmp(q->key[i], key))
            v = q->val[i];
    return v;
}

/* ---- media types ------------------------------------------------------------------------ */

/* Copies the media range of one Accept/Content-Type item, lowercased, without params. */
static size_t media_type(const char *s, size_t n, char *out, size_t cap)
{
    while (n && isspace((unsigned char)*s)) {
        s++;
        n--;
    }
    size_t k = 0;
    for (size_t i = 0; i < n && s[i] != ';' && k + 1 < cap; i++)
        if (!isspace((unsigned char)s[i]))
            out[k++] = (char)tolower((unsigned char)s[i]);
    out[k] = 0;
    return k;
}

/* ---- application/x-npy bodies ------------------------------------------------------------ */

bool proto_op_takes_npy(enum proto_op op)
{
    return op == PROTO_OP_FORWARD || op == PROTO_OP_INVERSE || op == PROTO_OP_LOG_PROB ||
           op == PROTO_OP_SAMPLE;
}

/* The query parameters that choose the answer's format (proto_answer_format reads them). */
static bool answer_key(const char *k)
{
    return !strcmp(k, "format") || !strcmp(k, "scale") || !strcmp(k, "low") ||
           !strcmp(k, "high");
}

/* A query value as JSON: what it is as JSON text (a number, true, an array...), else a
 * string.  NULL only when out of memory (the syntax check allocates nothing, so a failed
 * parse of valid text is a failed allocation). */
static cJSON *query_value(const char *v, size_t n)
{
    size_t end = 0;
    if (n && jsyn_valid(v, n, PROTO_DEF_MAX_JSON_DEPTH, &end) && end == n)
        return cJSON_ParseWithLength(v, n);
    char *t = malloc(n + 1);
    if (!t)
        return NULL;
    memcpy(t, v, n);
    t[n] = 0;
    cJSON *s = cJSON_CreateString(t);
    free(t);
    return s;
}

/* The query parameters q as the fields of a JSON object (*out, owned by the caller). */
static enum proto_code query_options(const struct proto_query *q, cJSON **out,
                                     struct proto_error *e)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return proto_errorf(e, PROTO_E_NOMEM, "out of memory");
    for (int i = 0; q && i < q->n; i++) {
        const char *k = q->key[i], *v = q->val[i];
        if (answer_key(k))
            continue;
        if (!strcmp(k, "x") || !strcmp(k, "y") || !strcmp(k, "z")) {
            cJSON_Delete(o);
            return proto_errorf(e, PROTO_E_FIELD, "query parameter %s: the tensors of an "
                                "application/x-npy request are the arrays of its body", k);
        }
        cJSON *j = query_value(v, strlen(v));
        bool list = !strcmp(k, "outputs") || !strcmp(k, "quantiles");
        if (j && list && !cJSON_IsArray(j)) {
            /* "samples,log_prob" / "0.1,0.9": one item per comma */
            cJSON_Delete(j);
            j = cJSON_CreateArray();
            for (const char *p = v; j;) {
                size_t n = strcspn(p, ",");
                cJSON *it = query_value(p, n);
                if (!it || !cJSON_AddItemToArray(j, it)) {
                    cJSON_Delete(it);
                    cJSON_Delete(j);
                    j = NULL;
                    break;
                }
                if (!p[n])
                    break;
                p += n + 1;
            }
        }
        if (!j || !cJSON_AddItemToObject(o, k, j)) {
            cJSON_Delete(j);
            cJSON_Delete(o);
            return proto_errorf(e, PROTO_E_NOMEM, "out of memory");
        }
    }
    *out = o;
    return PROTO_OK;
}

/* An array of the body as rows: of x or z ('x' / 'z': (B, D), (D,), or (B, row shape...)
 * for a shaped model) or y ('y': (B, dims.y), (dims.y,)).  Moves a->data into *out. */
static enum proto_code npy_rows(struct proto_npy_array *a, const char *name, char which,
                                const struct eng_info *info, struct proto_matrix *out,
                                struct proto_error *e)
{
    struct proto_shape s = which == 'x' ? proto_shape_x(info)
                           : which == 'z' ? proto_shape_z(info)
                                          : (struct proto_shape){1, {info->dims.y, 1, 1}};
    long w = proto_shape_count(&s), rows = -1;
    if (a->ndim == 1 && a->shape[0] == w)
        rows = 1;
    else if (a->ndim == 2 && a->shape[1] == w)
        rows = a->shape[0];
    else if (s.rank > 1 && a->ndim == s.rank + 1) {
        rows = a->shape[0];
        for (int k = 0; k < s.rank; k++)
            if (a->shape[1 + k] != s.dim[k])
                rows = -1;
    }
    if (rows < 0) {
        char got[96], sh[40];
        size_t n = 0;
        for (int k = 0; k < a->ndim && n < sizeof got; k++)
            n += (size_t)snprintf(got + n, sizeof got - n, "%s%ld", k ? ", " : "(",
                                  a->shape[k]);
        snprintf(got + (n < sizeof got - 3 ? n : sizeof got - 3), 3, "%s)",
                 a->ndim == 1 ? "," : "");
        proto_shape_str(&s, sh, sizeof sh);
        if (s.rank > 1)
            return proto_errorf(e, PROTO_E_SHAPE, "%s has shape %s; the model's rows of %s "
                                "are (B, %ld), (%ld,) or (B, %.*s)", name, got, name, w, w,
                                (int)strlen(sh) - 2, sh + 1);
        return proto_errorf(e, PROTO_E_SHAPE, "%s has shape %s; the model's rows of %s are "
                            "(B, %ld) or (%ld,) (dims.%c)", name, got, name, w, w, which);
    }
    out->rows = (int)rows;
    out->cols = (int)w;
    out->data = a->data;
    a->data = NULL;
    return PROTO_OK;
}

enum proto_code proto_request_parse_npy(enum proto_op op, const char *body, size_t len,
                                        const struct proto_query *q,
                                        const struct eng_info *info,
                                        const struct proto_limits *lim,
                                        struct proto_request *out, struct proto_error *e)
{
    memset(out, 0, sizeof *out);
    if (!proto_op_supported(op, info->kind))
        return proto_request_from_json(op, NULL, info, lim, out, e);
    if (!proto_op_takes_npy(op))
        return proto_errorf(e, PROTO_E_MEDIA, "%s takes a JSON body; application/x-npy bodies "
                            "are for forward, inverse, log_prob and sample", proto_op_str(op));
    bool flow_sample = op == PROTO_OP_SAMPLE && info->kind == ENG_KIND_FLOW;
    if (flow_sample)
        return proto_errorf(e, PROTO_E_FIELD, "a flow model's sample takes no array (it has no "
                            "observation y): send a JSON body");
    /* the main input, then y */
    const char *main = op == PROTO_OP_INVERSE ? "z" : op == PROTO_OP_SAMPLE ? "y" : "x";
    struct proto_npy_array a[PROTO_NPY_MAX_ARRAYS];
    memset(a, 0, sizeof a);
    size_t off = 0;
    int n = 0;
    enum proto_code rc = PROTO_OK;
    if (len == 0)
        rc = proto_errorf(e, PROTO_E_MISSING, "the body is empty: send %s as a .npy array "
                          "(numpy.save)", main);
    while (rc == PROTO_OK && off < len) {
        if (n == (op == PROTO_OP_SAMPLE ? 1 : PROTO_NPY_MAX_ARRAYS)) {
            rc = proto_errorf(e, PROTO_E_FIELD, "the body holds more than the arrays %s takes "
                              "(%s%s), %zu bytes follow them", proto_op_str(op), main,
                              op == PROTO_OP_SAMPLE ? "" : ", then y for a model that takes one",
                              len - off);
            break;
        }
        rc = proto_npy_read(body, len, &off, n == 0 ? main : "y", lim, &a[n], e);
        if (rc == PROTO_OK)
            n++;
    }
    if (rc == PROTO_OK && n >= 1)
        rc = npy_rows(&a[0], main, main[0], info, op == PROTO_OP_SAMPLE ? &out->npy_y
                                                                        : &out->npy_main, e);
    if (rc == PROTO_OK && n == 2 && info->dims.y == 0)
        rc = proto_errorf(e, PROTO_E_UNKNOWN_FIELD, "a second array y is not taken here by a "
                          "%s model (it has no observation y)", eng_kind_str(info->kind));
    if (rc == PROTO_OK && n == 2)
        rc = npy_rows(&a[1], "y", 'y', info, &out->npy_y, e);
    if (rc == PROTO_OK && out->npy_main.rows > lim->max_rows)
        rc = proto_errorf(e, PROTO_E_TOO_LARGE, "%s has more than %d rows (the limit for this "
                          "field)", main, lim->max_rows);
    for (int k = 0; k < PROTO_NPY_MAX_ARRAYS; k++)
        proto_npy_array_free(&a[k]);
    cJSON *opts = NULL;
    if (rc == PROTO_OK)
        rc = query_options(q, &opts, e);
    if (rc != PROTO_OK) {
        proto_request_free(out);
        return rc;
    }
    out->npy = true;
    rc = from_root(op, opts, info, lim, out, e);
    cJSON_Delete(opts);
    if (rc == PROTO_OK)
        out->npy = false;
    return rc;
}

bool proto_content_type_npy(const char *ctype)
{
    if (!ctype)
        return false;
    char mt[128];
    media_type(ctype, strlen(ctype), mt, sizeof mt);
    return strcmp(mt, "application/x-npy") == 0;
}

enum proto_format proto_format_from_accept(const char *accept)
{
    if (!accept)
        return PROTO_FMT_JSON;
    const char *p = accept;
    while (*p) {
        const char *q = strchr(p, ',');
        size_t n = q ? (size_t)(q - p) : strlen(p);
        char mt[64];
        media_type(p, n, mt, sizeof mt);
        if (strcmp(mt, "application/json") == 0 || strcmp(mt, "*/*") == 0 ||
            strcmp(mt, "application/*") == 0)
            return PROTO_FMT_JSON;
        if (strcmp(mt, "text/csv") == 0)
            return PROTO_FMT_CSV;
        if (strcmp(mt, "application/x-npy") == 0)
            return PROTO_FMT_NPY;
        if (strcmp(mt, "image/png") == 0)
            return PROTO_FMT_PNG;
        p = q ? q + 1 : p + n;
    }
    return PROTO_FMT_JSON;
}

bool proto_content_type_ok(const char *ctype)
{
    if (!ctype || !*ctype)
        return true;
    char mt[128];
    size_t n = media_type(ctype, strlen(ctype), mt, sizeof mt);
    if (strcmp(mt, "application/json") == 0)
        return true;
    return n > 5 && strcmp(mt + n - 5, "+json") == 0 && strchr(mt, '/') != NULL;
}
