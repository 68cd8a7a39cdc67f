/*
 * json.h — reading untrusted JSON bodies: parse with a depth limit, check an object's
 * field names, and convert fields into typed values (float32 matrices, integers, numbers,
 * strings) with messages that name the field ("x[2][1] must be a number").
 *
 * cJSON trees are created and deleted inside proto/; nothing here reaches the engine.
 * Every function returns PROTO_OK or fills *e and returns its code.
 */
#ifndef INNSERVE_PROTO_JSON_H
#define INNSERVE_PROTO_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cjson/cJSON.h>

#include "errors.h"
#include "limits.h"

/* A row-major float32 matrix read from a request.  data: owned, free with free(). */
struct proto_matrix {
    int rows, cols;
    float *data;
};

/* Parse body[0..len) (need not be NUL-terminated) as one JSON value whose nesting depth
 * is at most max_depth; nothing but whitespace may follow it.  A body with more than
 * PROTO_JSON_VALUES_PER_ELEMENT x max_elements (+ 4096) values is refused before parsing
 * (PROTO_E_TOO_LARGE), which bounds the parser's memory.  *out: owned by caller, free
 * with cJSON_Delete.  Errors: PROTO_E_JSON, PROTO_E_TOO_LARGE. */
enum proto_code proto_json_parse(const char *body, size_t len, int max_depth,
                                 long max_elements, cJSON **out, struct proto_error *e);

/* obj must be an object (else PROTO_E_JSON "the body must be a JSON object"); every key
 * must be in allowed[0..n) (else PROTO_E_UNKNOWN_FIELD naming it and the allowed ones) and
 * appear once.  `where` prefixes messages ("" for the top level, "parameters." ...). */
enum proto_code proto_json_fields(const cJSON *obj, const char *const *allowed, size_t n,
                                  const char *where, struct proto_error *e);

/* v: an array of rows (arrays of numbers), or — when allow_flat — one flat array of
 * numbers taken as a single row.  cols >= 0 requires that width (width_hint names it in the
 * message, e.g. "dims.x"); cols < 0 takes the first row's width.  Rows must be 1..max_rows,
 * rows*cols <= lim->max_elements (413), every number finite and within float32 range.
 * On success out->data is owned by caller. */
enum proto_code proto_json_matrix(const cJSON *v, const char *name, int cols,
                                  const char *width_hint, bool allow_flat, int max_rows,
                                  const struct proto_limits *lim, struct proto_matrix *out,
                                  struct proto_error *e);

/* Rows of a shaped tensor (an image [C, H, W] or a signal [C, L] per row: rank 2 or 3,
 * dim[0 .. rank)): v is either the nested form, an array of rows each nested rank deep
 * with exactly dim[k] entries at depth k ([B, C, H, W] / [B, C, L]), or what
 * proto_json_matrix reads with cols = prod(dim) (rows of flat values, or one flat row when
 * allow_flat).  Nested arrays are told apart by depth: a row whose first entry is an array
 * is read as nested.  Messages name the full index ("x[0][2][3][1] must be a number") and
 * the shape (shape_hint, e.g. "the model's shape.x [3, 8, 8]").  rank <= 1: exactly
 * proto_json_matrix.  Limits and ownership as proto_json_matrix. */
enum proto_code proto_json_shaped(const cJSON *v, const char *name, int rank, const int *dim,
                                  const char *width_hint, const char *shape_hint,
                                  bool allow_flat, int max_rows,
                                  const struct proto_limits *lim, struct proto_matrix *out,
                                  struct proto_error *e);

/* A flat array of exactly n (n >= 0) or, with n < 0, 1..|n| finite numbers -> float32
 * (owned by caller; count in *got). */
enum proto_code proto_json_vector(const cJSON *v, const char *name, int n, float **out,
                                  int *got, struct proto_error *e);

/* An integer-valued number in [lo, hi]. */
enum proto_code proto_json_int(const cJSON *v, const char *name, long long lo, long long hi,
                               long long *out, struct proto_error *e);
/* A finite number in [lo, hi]; lo_open/hi_open exclude the ends. */
enum proto_code proto_json_num(const cJSON *v, const char *name, double lo, bool lo_open,
                               double hi, bool hi_open, double *out, struct proto_error *e);
/* A string; *out borrowed from the tree. */
enum proto_code proto_json_str(const cJSON *v, const char *name, const char **out,
                               struct proto_error *e);
/* The JSON type of v in words ("a string", "an array", ...), for messages. */
const char *proto_json_type(const cJSON *v);

/* Matrix helpers. */
void proto_matrix_free(struct proto_matrix *m);

#endif
