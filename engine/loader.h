/*
 * loader.h — the loading API the blocks and subnets use: manifest fields and tensors of
 * the checkpoint being loaded, validated, with one message per failure naming the file,
 * the manifest path and the tensor.  Implemented in loader.c.  Not part of the public API.
 *
 * struct ldr is opaque here: it is created by eng_model_load (manifest.c) for the
 * duration of one load and its layout is private to the engine (model_impl.h).  A block
 * never keeps a pointer to it past its load().
 *
 * Ownership: everything an ldr_* function returns through a pointer (converted tensors,
 * permutations, inverses, ldr_alloc memory) is owned by the model being loaded (its
 * arena) and freed with it, so callers never free it.  The exception is ldr_raw, whose
 * tensor is borrowed from the mapped file and valid during the load only.
 *
 * Errors: a failing call has already written the error message (the first, innermost
 * one is kept) and returns its status; callers just propagate it.
 */
#ifndef INNSERVE_LOADER_H
#define INNSERVE_LOADER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cjson/cJSON.h>
#include "engine.h"

struct ldr;       /* the loading context; lives only during eng_model_load (model_impl.h) */
struct kern;      /* kern.h */
struct st_tensor; /* safetensors.h */

/* The kernel path of the model being loaded (subnets pack their weights for it). */
const struct kern *ldr_kern(const struct ldr *L);
/* Allocate zeroed memory owned by the model being loaded (freed with it).  NULL on OOM
 * (the loader has then already written the error). */
void *ldr_alloc(struct ldr *L, size_t bytes);
/* Write the error: "<file>: <context>: <message>"; returns ENG_ERR_MANIFEST or the given
 * status so callers can `return ldr_fail(L, ENG_ERR_TENSOR, "...")`. */
enum eng_status ldr_fail(struct ldr *L, enum eng_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Push/pop a context segment for messages, e.g. "blocks[3] (GLOWCouplingBlock)" then
 * ".subnet1".  The stack is a string; push appends, pop restores the previous length. */
size_t ldr_push(struct ldr *L, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ldr_pop(struct ldr *L, size_t mark);

/* Manifest scalars.  A missing optional field gives `def`; a present field of the wrong
 * type or out of range is an error naming the field. */
enum eng_status ldr_num(struct ldr *L, const cJSON *obj, const char *field, bool required,
                        double def, double *out);
enum eng_status ldr_int(struct ldr *L, const cJSON *obj, const char *field, bool required,
                        long def, long lo, long hi, long *out);
enum eng_status ldr_bool(struct ldr *L, const cJSON *obj, const char *field, bool required,
                         bool def, bool *out);
/* String field that must be one of choices[0..n); *out gets the index. */
enum eng_status ldr_enum(struct ldr *L, const cJSON *obj, const char *field, bool required,
                         int def, const char *const *choices, int n, int *out);
/* Object-valued field (NULL when absent and not required).  Borrowed from the manifest,
 * valid during load only. */
enum eng_status ldr_obj(struct ldr *L, const cJSON *obj, const char *field, bool required,
                        const cJSON **out);

/* Tensor named by the string field `field` of obj, converted to f32 (owned by the model).
 * shape: ndim expected dims; a dim of -1 accepts any size.  The tensor must be finite.
 * Leading/trailing size-1 dims are NOT squeezed: FrEIA's (1, C) stays (1, C).  Use
 * ldr_tensor_numel to accept any shape with a given number of elements. */
enum eng_status ldr_tensor(struct ldr *L, const cJSON *obj, const char *field, bool required,
                           int ndim, const int64_t *shape, const float **out);
/* A Linear layer obj[field] = {"weight": out x in, "bias": out (optional: *bias NULL when
 * absent)}, read with ldr_tensor under the path ".field". */
enum eng_status ldr_linear(struct ldr *L, const cJSON *obj, const char *field, int out, int in,
                           const float **w, const float **bias);
/* A MADE masked Linear obj[field] = {"weight": out x in, "mask": out x in, "bias": out
 * (optional)}, read under the path ".field": the mask must be 1 where dout[o] > din[i]
 * (strict, the output rule) or dout[o] >= din[i] (the hidden rule) and 0 elsewhere, else
 * ENG_ERR_TENSOR naming the tensor, the element and the degrees.  *w, *mask: as stored. */
enum eng_status ldr_made_linear(struct ldr *L, const cJSON *obj, const char *field, int out,
                                int in, const int *dout, const int *din, bool strict,
                                const float **w, const float **mask, const float **bias);
/* Any shape whose element count is `numel` (e.g. (1,C) or (C,)). */
enum eng_status ldr_tensor_numel(struct ldr *L, const cJSON *obj, const char *field,
                                 bool required, int64_t numel, const float **out);
/* Same in double (for tensors the engine inverts or factorizes at load). */
enum eng_status ldr_tensor_f64(struct ldr *L, const cJSON *obj, const char *field,
                               bool required, int ndim, const int64_t *shape,
                               const double **out);
/* A permutation of 0..n-1: an integer vector (n) or a one-hot float matrix (n x n, the
 * PyPI-0.2 AllInOneBlock storage, row i has its 1 at column perm[i]).  Checked to be a
 * bijection.  *out: n int32 owned by the model. */
enum eng_status ldr_perm(struct ldr *L, const cJSON *obj, const char *field, int n,
                         const int32_t **out);
/* An invertible d x d matrix named by obj[field], read in double: *m (d x d), its inverse
 * *inv and log|det| *logabsdet, all computed by LU with partial pivoting in double.  A
 * singular matrix, or one whose inverse does not fit in float, is refused with a message
 * naming the tensor.  *m and *inv are owned by the model. */
enum eng_status ldr_invertible(struct ldr *L, const cJSON *obj, const char *field, int d,
                               const double **m, const double **inv, double *logabsdet);
/* The tensor name stored in obj[field], or the field name itself (for messages). */
const char *ldr_tensor_name(const cJSON *obj, const char *field);
/* The raw tensor (for blocks that need to look at dtype/shape first); NULL + error when
 * missing.  Borrowed, valid during load only. */
enum eng_status ldr_raw(struct ldr *L, const cJSON *obj, const char *field,
                        const struct st_tensor **out);

#endif
