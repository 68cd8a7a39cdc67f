/*
 * safetensors.h — the checkpoint container: a read-only view of a .safetensors file.
 *
 * Layout: 8-byte little-endian header length N, N bytes of JSON
 * {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
 *  "__metadata__": {"key": "string", ...}}, then the raw little-endian data.
 * st_open reads the whole file into memory (a file changed while it loads cannot fault
 * the process, as a mapping could) and validates everything before returning: N against
 * the file size, the JSON (no key twice in an object), every dtype, shape and offset (in
 * bounds, size = prod(shape) * dtype size, no two tensors overlapping), metadata values
 * being strings.  After st_open, every tensor's bytes lie inside that buffer.  A hostile
 * file gets an error, never a read out of bounds.  This module does not interpret
 * tensors; loader.c does.
 */
#ifndef INNSERVE_SAFETENSORS_H
#define INNSERVE_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "engine.h"

#define ST_MAX_DIMS 8
#define ST_MAX_HEADER (64u << 20)   /* refuse headers over 64 MiB */
#define ST_MAX_TENSORS 100000

enum st_dtype { ST_F32, ST_F64, ST_F16, ST_BF16, ST_I64, ST_I32, ST_I16, ST_I8, ST_U8, ST_BOOL };

struct st_tensor {
    const char *name;          /* owned by the st_file */
    enum st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    int64_t numel;
    const uint8_t *data;       /* inside the file's bytes, numel * st_dtype_size(dtype) bytes */
    size_t nbytes;
};

struct st_file;

/* Map and validate `path`.  On success *out is owned by the caller (st_close). */
ENG_WARN_UNUSED enum eng_status st_open(const char *path, struct st_file **out,
                                        char err[ENG_ERR_LEN]);
/* Same, from a caller-owned buffer that must outlive the st_file (tests, fuzzing). */
ENG_WARN_UNUSED enum eng_status st_open_mem(const uint8_t *buf, size_t len, const char *label,
                                            struct st_file **out, char err[ENG_ERR_LEN]);
void st_close(struct st_file *f);

int st_count(const struct st_file *f);
const struct st_tensor *st_at(const struct st_file *f, int i);
const struct st_tensor *st_find(const struct st_file *f, const char *name); /* NULL if absent */
/* __metadata__ value for key, NULL if absent.  Borrowed. */
const char *st_metadata(const struct st_file *f, const char *key);
/* The whole file's bytes (for hashing).  Borrowed. */
const uint8_t *st_bytes(const struct st_file *f, size_t *len);
const char *st_label(const struct st_file *f);

size_t st_dtype_size(enum st_dtype t);
const char *st_dtype_str(enum st_dtype t);
/* Value i of a tensor converted to double (any dtype).  i < numel. */
double st_get(const struct st_tensor *t, int64_t i);

/* The first key that appears twice in one object anywhere in a parsed JSON tree (cJSON
 * keeps both copies), or NULL; *where then names the object: `name` for obj itself, else
 * the key holding it.  st_open refuses headers with one; the manifest is checked the same
 * way.  Borrowed pointers into the tree.  NULL with *nomem set when memory for the check
 * ran out (*nomem is false otherwise). */
struct cJSON;
const char *st_json_duplicate_key(const struct cJSON *obj, const char *name, const char **where,
                                  bool *nomem);

#endif
