/*
 * safetensors.c — map a .safetensors file and validate its container before anyone reads
 * a tensor: header length, JSON, dtypes, shapes, offsets (in bounds, consistent with the
 * shape, non-overlapping), unique names, string metadata.  See safetensors.h.
 */
#include "safetensors.h"
#include "json_syntax.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct st_meta {
    char *key, *value;
};

struct st_file {
    char *label;
    const uint8_t *base; /* whole file */
    size_t len;
    int owned;           /* base was read by st_open: freed on close */
    int n;
    struct st_tensor *t;
    char *names;         /* storage for tensor names */
    int n_meta;
    struct st_meta *meta;
};

static const struct {
    const char *name;
    enum st_dtype t;
    size_t size;
} dtypes[] = {
    {"F32", ST_F32, 4}, {"F64", ST_F64, 8}, {"F16", ST_F16, 2}, {"BF16", ST_BF16, 2},
    {"I64", ST_I64, 8}, {"I32", ST_I32, 4}, {"I16", ST_I16, 2}, {"I8", ST_I8, 1},
    {"U8", ST_U8, 1},   {"BOOL", ST_BOOL, 1},
};

size_t st_dtype_size(enum st_dtype t)
{
    for (size_t i = 0; i < sizeof(dtypes) / sizeof(dtypes[0]); i++)
        if (dtypes[i].t == t)
            return dtypes[i].size;
    return 0;
}

const char *st_dtype_str(enum st_dtype t)
{
    for (size_t i = 0; i < sizeof(dtypes) / sizeof(dtypes[0]); i++)
        if (dtypes[i].t == t)
            return dtypes[i].name;
    return "?";
}

static enum eng_status fail(char err[ENG_ERR_LEN], enum eng_status st, const char *label,
                            const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static enum eng_status fail(char err[ENG_ERR_LEN], enum eng_status st, const char *label,
                            const char *fmt, ...)
{
    if (err) {
        int k = snprintf(err, ENG_ERR_LEN, "%s: ", label);
        if (k < 0 || k >= ENG_ERR_LEN)
            k = 0;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err + k, ENG_ERR_LEN - (size_t)k, fmt, ap);
        va_end(ap);
    }
    return st;
}

void st_close(struct st_file *f)
{
    if (!f)
        return;
    if (f->owned)
        free((void *)f->base);
    for (int i = 0; i < f->n_meta; i++) {
        free(f->meta[i].key);
        free(f->meta[i].value);
    }
    free(f->meta);
    free(f->t);
    free(f->names);
    free(f->label);
    free(f);
}

static int cmp_offset(const void *a, const void *b)
{
    const struct st_tensor *x = *(const struct st_tensor *const *)a;
    const struct st_tensor *y = *(const struct st_tensor *const *)b;
    return x->data < y->data ? -1 : x->data > y->data ? 1 : 0;
}

static int cmp_name(const void *a, const void *b)
{
    const struct st_tensor *x = *(const struct st_tensor *const *)a;
    const struct st_tensor *y = *(const struct st_tensor *const *)b;
    return strcmp(x->name, y->name);
}

/* A JSON number that is an exact non-negative integer no larger than `max`. */
static int json_uint(const cJSON *j, double max, uint64_t *out)
{
    if (!cJSON_IsNumber(j))
        return -1;
    double v = j->valuedouble;
    if (!(v >= 0.0) || v > max || v != floor(v))
        return -1;
    *out = (uint64_t)v;
    return 0;
}

static int cmp_key(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

const char *st_json_duplicate_key(const cJSON *obj, const char *name, const char **where,
                                  bool *nomem)
{
    *nomem = false;
    int n = cJSON_GetArraySize(obj);
    if (cJSON_IsObject(obj) && n > 1) {
        const char **keys = malloc(sizeof(*keys) * (size_t)n);
        if (!keys) {
            *nomem = true;
            return NULL;
        }
        int k = 0;
        const cJSON *c;
        cJSON_ArrayForEach(c, obj)
            keys[k++] = c->string ? c->string : "";
        qsort(keys, (size_t)n, sizeof(*keys), cmp_key);
        const char *dup = NULL;
        for (int i = 1; i < n && !dup; i++)
            if (strcmp(keys[i - 1], keys[i]) == 0)
                dup = keys[i];
        free(keys);
        if (dup) {
            *where = name;
            return dup;
        }
    }
    const cJSON *c;
    cJSON_ArrayForEach(c, obj)
    {
        if (!cJSON_IsObject(c) && !cJSON_IsArray(c))
            continue;
        const char *d = st_json_duplicate_key(c, c->string ? c->string : name, where, nomem);
        if (d || *nomem)
            return d;
    }
    return NULL;
}

static enum eng_status parse_header(struct st_file *f, char err[ENG_ERR_LEN])
{
    const char *L = f->label;
    if (f->len < 8)
        return fail(err, ENG_ERR_FORMAT, L, "file is truncated: %zu bytes, shorter than the "
                    "8-byte header length", f->len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | f->base[i];
    /* The value itself is not quoted: a file that is not a checkpoint (a symbolic link in
     * the models directory may lead anywhere) would have its first bytes shown to every
     * client of GET /v1/models. */
    if (hlen > ST_MAX_HEADER)
        return fail(err, ENG_ERR_FORMAT, L, "header length (the first 8 bytes) is over the "
                    "limit of %u bytes: not a safetensors file?", ST_MAX_HEADER);
    if (hlen > f->len - 8)
        return fail(err, ENG_ERR_FORMAT, L, "file is truncated: its header length is larger "
                    "than the %zu bytes that follow", f->len - 8);
    if (hlen < 2)
        return fail(err, ENG_ERR_FORMAT, L, "header of %llu bytes cannot hold a JSON object",
                    (unsigned long long)hlen);
    const char *hdr = (const char *)f->base + 8;
    const uint8_t *data = f->base + 8 + hlen;
    size_t data_len = f->len - 8 - (size_t)hlen;

    cJSON *root = cJSON_ParseWithLength(hdr, (size_t)hlen);
    if (!root && jsyn_valid(hdr, (size_t)hlen, -1, NULL))
        return fail(err, ENG_ERR_NOMEM, L, "out of memory parsing the %llu-byte header",
                    (unsigned long long)hlen);
    if (!root)
        return fail(err, ENG_ERR_FORMAT, L, "header is not valid JSON (or nested deeper "
                    "than the parser's limit)");
    enum eng_status st = ENG_OK;
    if (!cJSON_IsObject(root)) {
        st = fail(err, ENG_ERR_FORMAT, L, "header is not a JSON object");
        goto out;
    }
    bool nomem;
    const char *dup_in = NULL, *dup = st_json_duplicate_key(root, "the header", &dup_in, &nomem);
    if (nomem) {
        st = fail(err, ENG_ERR_NOMEM, L, "out of memory checking the header's keys");
        goto out;
    }
    if (dup) {
        st = fail(err, ENG_ERR_FORMAT, L, "duplicate key \"%.64s\" in %.80s: a key may appear once",
                  dup, dup_in);
        goto out;
    }
    int n = 0;
    size_t names_len = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, root)
    {
        if (!it->string) {
            st = fail(err, ENG_ERR_FORMAT, L, "header entry without a name");
            goto out;
        }
        if (strcmp(it->string, "__metadata__") == 0)
            continue;
        n++;
        names_len += strlen(it->string) + 1;
        if (n > ST_MAX_TENSORS) {
            st = fail(err, ENG_ERR_FORMAT, L, "more than %d tensors", ST_MAX_TENSORS);
            goto out;
        }
    }
    f->t = calloc((size_t)n + 1, sizeof(*f->t));
    f->names = malloc(names_len + 1);
    if (!f->t || !f->names) {
        st = fail(err, ENG_ERR_NOMEM, L, "out of memory reading the header");
        goto out;
    }
    char *np = f->names;
    cJSON_ArrayForEach(it, root)
    {
        if (strcmp(it->string, "__metadata__") == 0) {
            if (!cJSON_IsObject(it)) {
                st = fail(err, ENG_ERR_FORMAT, L, "__metadata__ is not an object");
                goto out;
            }
            int nm = cJSON_GetArraySize(it);
            f->meta = calloc((size_t)nm + 1, sizeof(*f->meta));
            if (!f->meta) {
                st = fail(err, ENG_ERR_NOMEM, L, "out of memory reading __metadata__");
                goto out;
            }
            const cJSON *m;
            cJSON_ArrayForEach(m, it)
            {
                if (!cJSON_IsString(m)) {
                    st = fail(err, ENG_ERR_FORMAT, L, "__metadata__.%s is not a string",
                              m->string ? m->string : "?");
                    goto out;
                }
                f->meta[f->n_meta].key = strdup(m->string);
                f->meta[f->n_meta].value = strdup(m->valuestring);
                f->n_meta++;
                if (!f->meta[f->n_meta - 1].key || !f->meta[f->n_meta - 1].value) {
                    st = fail(err, ENG_ERR_NOMEM, L, "out of memory reading __metadata__");
                    goto out;
                }
            }
            continue;
        }
        struct st_tensor *t = &f->t[f->n];
        size_t nl = strlen(it->string) + 1;
        memcpy(np, it->string, nl);
        t->name = np;
        np += nl;
        if (!cJSON_IsObject(it)) {
            st = fail(err, ENG_ERR_FORMAT, L, "tensor '%s': entry is not an object", t->name);
            goto out;
        }
        const cJSON *dt = cJSON_GetObjectItemCaseSensitive(it, "dtype");
        const cJSON *sh = cJSON_GetObjectItemCaseSensitive(it, "shape");
        const cJSON *of = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
        if (!cJSON_IsString(dt)) {
            st = fail(err, ENG_ERR_FORMAT, L, "tensor '%s': dtype missing or not a string",
                      t->name);
            goto out;
        }
        size_t esize = 0;
        for (size_t k = 0; k < sizeof(dtypes) / sizeof(dtypes[0]); k++)
            if (strcmp(dt->valuestring, dtypes[k].name) == 0) {
                t->dtype = dtypes[k].t;
                esize = dtypes[k].size;
            }
        if (!esize) {
            st = fail(err, ENG_ERR_FORMAT, L, "tensor '%s': unsupported dtype \"%.32s\"",
                      t->name, dt->valuestring);
            goto out;
        }
        if (!cJSON_IsArray(sh) || cJSON_GetArraySize(sh) > ST_MAX_DIMS) {
            st = fail(err, ENG_ERR_FORMAT, L, "tensor '%s': shape must be an array of at most "
                      "%d dims", t->name, ST_MAX_DIMS);
            goto out;
        }
        t->ndim = 0;
        double numel = 1.0;
        const cJSON *d;
        cJSON_ArrayForEach(d, sh)
        {
            uint64_t v;
            if (json_uint(d, (double)(1ull << 40), &v) != 0) {
                st = fail(err, ENG_ERR_FORMAT, L, "tensor '%s': shape entry is not a "
                          "non-negative integer", t->name);
                goto out;
            }
            t->shape[t->ndim++] = (int64_t)v;
            numel *= (double)v;
        }
        if (numel * (double)esize > (double)data_len) {
            st = fail(err, ENG_ERR_FORMAT, L, "tensor '%s': shape needs %.0f bytes, more than "
                      "the %zu-byte data section", t->name, numel * (double)esize, data_len);
            goto out;
        }
        t->numel = (int64_t)numel;
        uint64_t b0, b1;
        if (!cJSON_IsArray(of) || cJSON_GetArraySize(of) != 2 ||
            json_uint(cJSON_GetArrayItem(of, 0), 1e18, &b0) != 0 ||
            json_uint(cJSON_GetArrayItem(of, 1), 1e18, &b1) != 0) {
            st = fail(err, ENG_ERR_FORMAT, L, "tensor '%s': data_offsets must be two "
                      "non-negative integers", t->name);
            goto out;
        }
        if (b1 < b0 || b1 > data_len) {
            st = fail(err, ENG_ERR_FORMAT, L, "tensor '%s': data_offsets [%llu, %llu] out of "
                      "bounds of the %zu-byte data section", t->name, (unsigned long long)b0,
                      (unsigned long long)b1, data_len);
            goto out;
        }
        if (b1 - b0 != (uint64_t)t->numel * esize) {
            st = fail(err, ENG_ERR_FORMAT, L, "tensor '%s': data_offsets span %llu bytes but "
                      "dtype %s and shape need %llu", t->name, (unsigned long long)(b1 - b0),
                      dt->valuestring, (unsigned long long)t->numel * esize);
            goto out;
        }
        t->data = data + b0;
        t->nbytes = (size_t)(b1 - b0);
        f->n++;
    }
    if (f->n > 1) {
        struct st_tensor **order = malloc(sizeof(*order) * (size_t)f->n);
        if (!order) {
            st = fail(err, ENG_ERR_NOMEM, L, "out of memory");
            goto out;
        }
        for (int i = 0; i < f->n; i++)
            order[i] = &f->t[i];
        qsort(order, (size_t)f->n, sizeof(*order), cmp_offset);
        for (int i = 0; i + 1 < f->n && st == ENG_OK; i++)
            if (order[i]->nbytes && order[i]->data + order[i]->nbytes > order[i + 1]->data)
                st = fail(err, ENG_ERR_FORMAT, L, "tensors '%s' and '%s' overlap "
                          "(data_offsets)", order[i]->name, order[i + 1]->name);
        qsort(order, (size_t)f->n, sizeof(*order), cmp_name);
        for (int i = 0; i + 1 < f->n && st == ENG_OK; i++)
            if (strcmp(order[i]->name, order[i + 1]->name) == 0)
                st = fail(err, ENG_ERR_FORMAT, L, "tensor '%s' appears twice", order[i]->name);
        free(order);
    }
out:
    cJSON_Delete(root);
    return st;
}

enum eng_status st_open_mem(const uint8_t *buf, size_t len, const char *label,
                            struct st_file **out, char err[ENG_ERR_LEN])
{
    *out = NULL;
    struct st_file *f = calloc(1, sizeof(*f));
    if (!f || !(f->label = strdup(label ? label : "<memory>"))) {
        free(f);
        return fail(err, ENG_ERR_NOMEM, label ? label : "<memory>", "out of memory");
    }
    f->base = buf;
    f->len = len;
    enum eng_status st = parse_header(f, err);
    if (st != ENG_OK) {
        st_close(f);
        return st;
    }
    *out = f;
    return ENG_OK;
}

/* The file is read into memory, not mapped: a file truncated or rewritten while it loads
 * then gives a short read or bytes that fail validation, never SIGBUS.  O_NONBLOCK: opening
 * a FIFO (or other special file) returns at once and is refused as not a regular file. */
enum eng_status st_open(const char *path, struct st_file **out, char err[ENG_ERR_LEN])
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return fail(err, ENG_ERR_IO, path, "cannot open: %s", strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return fail(err, ENG_ERR_IO, path, "not a regular file");
    }
    size_t len = (size_t)sb.st_size;
    if (len < 8) {
        close(fd);
        return fail(err, ENG_ERR_FORMAT, path, "file is truncated: %zu bytes, shorter than "
                    "the 8-byte header length", len);
    }
    uint8_t *buf = malloc(len);
    if (!buf) {
        close(fd);
        return fail(err, ENG_ERR_NOMEM, path, "out of memory reading %zu bytes", len);
    }
    size_t got = 0;
    while (got < len) {
        ssize_t r = read(fd, buf + got, len - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            close(fd);
            free(buf);
            return fail(err, ENG_ERR_IO, path, "cannot read: %s", strerror(e));
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    if (got != len) {
        free(buf);
        return fail(err, ENG_ERR_IO, path, "the file changed while it was read (%zu of %zu "
                    "bytes: truncated or being written?)", got, len);
    }
    struct st_file *f = NULL;
    enum eng_status st = st_open_mem(buf, len, path, &f, err);
    if (st != ENG_OK) {
        free(buf);
        return st;
    }
    f->owned = 1;
    *out = f;
    return ENG_OK;
}

int st_count(const struct st_file *f) { return f->n; }
const struct st_tensor *st_at(const struct st_file *f, int i) { return &f->t[i]; }
const char *st_label(const struct st_file *f) { return f->label; }

const struct st_tensor *st_find(const struct st_file *f, const char *name)
{
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->t[i].name, name) == 0)
            return &f->t[i];
    return NULL;
}

const char *st_metadata(const struct st_file *f, const char *key)
{
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta[i].key, key) == 0)
            return f->meta[i].value;
    return NULL;
}

const uint8_t *st_bytes(const struct st_file *f, size_t *len)
{
    *len = f->len;
    return f->base;
}

static float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    float v;
    if (exp == 0)
        v = ldexpf((float)man, -24);
    else if (exp == 31)
        v = man ? NAN : INFINITY;
    else
        v = ldexpf((float)(man | 0x400), (int)exp - 25);
    return sign ? -v : v;
}

double st_get(const struct st_tensor *t, int64_t i)
{
    const uint8_t *p = t->data + (size_t)i * st_dtype_size(t->dtype);
    switch (t->dtype) {
    case ST_F32: { float v; memcpy(&v, p, 4); return v; }
    case ST_F64: { double v; memcpy(&v, p, 8); return v; }
    case ST_F16: { uint16_t h; memcpy(&h, p, 2); return half_to_float(h); }
    case ST_BF16: {
        uint16_t h; memcpy(&h, p, 2);
        uint32_t u = (uint32_t)h << 16; float v; memcpy(&v, &u, 4); return v;
    }
    case ST_I64: { int64_t v; memcpy(&v, p, 8); return (double)v; }
    case ST_I32: { int32_t v; memcpy(&v, p, 4); return v; }
    case ST_I16: { int16_t v; memcpy(&v, p, 2); return v; }
    case ST_I8: return (int8_t)p[0];
    case ST_U8: return p[0];
    case ST_BOOL: return p[0] ? 1.0 : 0.0;
    }
    return NAN;
}
