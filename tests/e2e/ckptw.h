/*
 * ckptw.h — a small header-only writer of innserve checkpoints (safetensors + manifest,
 * docs/checkpoint-format.md) for tests and benchmarks that need a model no fixture has:
 * an i-ResNet flow (numeric inverse) and the reference-size cINN of the benchmarks.
 *
 * Test vectors are produced by the engine itself: the model is written without them,
 * loaded with ENG_LOAD_NO_SELFTEST, run forward on random inputs, and written again with
 * those outputs as its "tests" (so the file passes the daemon's load-time self test).
 * Not thread safe; aborts on I/O errors (test code).
 */
#ifndef INNSERVE_CKPTW_H
#define INNSERVE_CKPTW_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../engine/engine.h"

struct ckw_tensor {
    char name[96];
    char dtype[4];      /* "F32", "F64", "I64" */
    int ndim;
    int64_t shape[4];
    void *data;
    size_t bytes;
};

struct ckw {
    struct ckw_tensor *t;
    int n, cap;
    uint64_t seed;
};

static inline uint64_t ckw_mix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline double ckw_randn(uint64_t *s)
{
    double u1 = ((double)(ckw_mix(s) >> 11) + 1.0) / 9007199254740993.0;
    double u2 = (double)(ckw_mix(s) >> 11) / 9007199254740992.0;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static inline void ckw_add(struct ckw *c, const char *name, const char *dtype, int ndim,
                           const int64_t *shape, const void *data)
{
    if (c->n == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 32;
        c->t = realloc(c->t, sizeof *c->t * (size_t)c->cap);
    }
    struct ckw_tensor *t = &c->t[c->n++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    snprintf(t->dtype, sizeof t->dtype, "%s", dtype);
    t->ndim = ndim;
    size_t n = 1;
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = shape[i];
        n *= (size_t)shape[i];
    }
    t->bytes = n * (strcmp(dtype, "F32") ? 8 : 4);
    t->data = malloc(t->bytes ? t->bytes : 1);
    memcpy(t->data, data, t->bytes);
}

/* N(0, scale^2) + offset float tensor. */
static inline void ckw_randn_t(struct ckw *c, const char *name, int ndim, const int64_t *shape,
                               double scale, double offset)
{
    size_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= (size_t)shape[i];
    float *v = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++)
        v[i] = (float)(offset + scale * ckw_randn(&c->seed));
    ckw_add(c, name, "F32", ndim, shape, v);
    free(v);
}

/* A random permutation of 0..n-1 as I64. */
static inline void ckw_perm(struct ckw *c, const char *name, int n)
{
    int64_t *p = malloc(sizeof(int64_t) * (size_t)n);
    for (int i = 0; i < n; i++)
        p[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(ckw_mix(&c->seed) % (uint64_t)(i + 1));
        int64_t t = p[i];
        p[i] = p[j];
        p[j] = t;
    }
    int64_t sh[1] = {n};
    ckw_add(c, name, "I64", 1, sh, p);
    free(p);
}

/* Linear layer <prefix>.weight (out x in, N(0, (gain/sqrt(in))^2)) and .bias (N(0, 0.01)). */
static inline void ckw_linear(struct ckw *c, const char *prefix, int in, int out, double gain)
{
    char nm[96];
    int64_t w[2] = {out, in}, b[1] = {out};
    snprintf(nm, sizeof nm, "%.80s.weight", prefix);
    ckw_randn_t(c, nm, 2, w, gain / sqrt((double)in), 0.0);
    snprintf(nm, sizeof nm, "%.80s.bias", prefix);
    ckw_randn_t(c, nm, 1, b, 0.01, 0.0);
}

static inline void ckw_free(struct ckw *c)
{
    for (int i = 0; i < c->n; i++)
        free(c->t[i].data);
    free(c->t);
    memset(c, 0, sizeof *c);
}

/* Appends s JSON-escaped (without quotes) to *o. */
static inline void ckw_escape(char **o, size_t *len, size_t *cap, const char *s)
{
    for (; *s; s++) {
        if (*len + 8 >= *cap) {
            *cap = *cap * 2 + 64;
            *o = realloc(*o, *cap);
        }
        if (*s == '"' || *s == '\\') {
            (*o)[(*len)++] = '\\';
            (*o)[(*len)++] = *s;
        } else if (*s == '\n') {
            (*o)[(*len)++] = '\\';
            (*o)[(*len)++] = 'n';
        } else {
            (*o)[(*len)++] = *s;
        }
    }
}

static inline void ckw_append(char **h, size_t *len, size_t *cap, const char *s, size_t n)
{
    while (*len + n + 16 >= *cap) {
        *cap *= 2;
        *h = realloc(*h, *cap);
    }
    memcpy(*h + *len, s, n);
    *len += n;
}

static inline void ckw_write(const struct ckw *c, const char *manifest, const char *path)
{
    size_t cap = 4096, len = 0;
    char *h = malloc(cap);
    const char *head = "{\"__metadata__\":{\"format\":\"innserve\",\"manifest\":\"";
    ckw_append(&h, &len, &cap, head, strlen(head));
    ckw_escape(&h, &len, &cap, manifest);
    ckw_append(&h, &len, &cap, "\"}", 2);
    size_t off = 0;
    for (int i = 0; i < c->n; i++) {
        const struct ckw_tensor *t = &c->t[i];
        char tmp[512];
        size_t tl = (size_t)snprintf(tmp, sizeof tmp, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[",
                                     t->name, t->dtype);
        for (int d = 0; d < t->ndim; d++)
            tl += (size_t)snprintf(tmp + tl, sizeof tmp - tl, "%s%lld", d ? "," : "",
                                   (long long)t->shape[d]);
        tl += (size_t)snprintf(tmp + tl, sizeof tmp - tl, "],\"data_offsets\":[%zu,%zu]}", off,
                               off + t->bytes);
        off += t->bytes;
        ckw_append(&h, &len, &cap, tmp, tl);
    }
    ckw_append(&h, &len, &cap, "}", 1);
    while (len % 8)
        ckw_append(&h, &len, &cap, " ", 1);
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        abort();
    }
    uint64_t hl = len;
    fwrite(&hl, 8, 1, f);
    fwrite(h, 1, len, f);
    for (int i = 0; i < c->n; i++)
        fwrite(c->t[i].data, 1, c->t[i].bytes, f);
    fclose(f);
    free(h);
}

/* Writes `manifest_fmt` (a manifest with one "%s" where the "tests" member goes, e.g.
 * `{"format": ..., "blocks": [...]%s}`) to path with test vectors computed by the engine
 * on `rows` random inputs.  y_dim > 0: cinn conditions (random) are added too. */
static inline void ckw_finish(struct ckw *c, const char *manifest_fmt, int rows, int dx,
                              int dy_cond, const char *path)
{
    size_t ml = strlen(manifest_fmt) + 512;
    char *man = malloc(ml);
    snprintf(man, ml, manifest_fmt, "");
    ckw_write(c, man, path);
    struct eng_model *m = NULL;
    char err[ENG_ERR_LEN];
    if (eng_model_load_ex(path, ENG_LOAD_NO_SELFTEST, &m, err) != ENG_OK) {
        fprintf(stderr, "ckw_finish: %s\n", err);
        abort();
    }
    const struct eng_info *info = eng_model_info(m);
    double *x = malloc(sizeof(double) * (size_t)rows * dx);
    float *xf = malloc(sizeof(float) * (size_t)rows * dx);
    for (int i = 0; i < rows * dx; i++)
        xf[i] = (float)(x[i] = (float)ckw_randn(&c->seed));
    double *y = NULL;
    float *yf = NULL;
    if (dy_cond > 0) {
        y = malloc(sizeof(double) * (size_t)rows * dy_cond);
        yf = malloc(sizeof(float) * (size_t)rows * dy_cond);
        for (int i = 0; i < rows * dy_cond; i++)
            yf[i] = (float)(y[i] = (float)ckw_randn(&c->seed));
    }
    int dz = info->dims.z > 0 ? info->dims.z : 1, dyo = info->dims.y > 0 ? info->dims.y : 1;
    float *z = malloc(sizeof(float) * (size_t)rows * dz);
    float *yo = malloc(sizeof(float) * (size_t)rows * dyo);
    double *ld = malloc(sizeof(double) * (size_t)rows);
    struct eng_ws *ws = eng_ws_new();
    if (eng_forward(m, ws, rows, xf, yf, yf ? rows : 0, z, yo, ld, err) != ENG_OK) {
        fprintf(stderr, "ckw_finish forward: %s\n", err);
        abort();
    }
    eng_ws_free(ws);
    int64_t sx[2] = {rows, dx}, sz[2] = {rows, info->dims.z}, sl[1] = {rows};
    ckw_add(c, "test.x", "F64", 2, sx, x);
    double *zd = malloc(sizeof(double) * (size_t)rows * dz);
    for (int i = 0; i < rows * info->dims.z; i++)
        zd[i] = z[i];
    ckw_add(c, "test.z", "F64", 2, sz, zd);
    ckw_add(c, "test.log_det", "F64", 1, sl, ld);
    char tests[256];
    if (dy_cond > 0) {
        int64_t sy[2] = {rows, dy_cond};
        ckw_add(c, "test.y", "F64", 2, sy, y);
        snprintf(tests, sizeof tests, ",\"tests\":{\"x\":\"test.x\",\"y\":\"test.y\",\"z\":"
                 "\"test.z\",\"log_det\":\"test.log_det\",\"rtol\":1e-4,\"atol\":1e-4}");
    } else {
        snprintf(tests, sizeof tests, ",\"tests\":{\"x\":\"test.x\",\"z\":\"test.z\","
                 "\"log_det\":\"test.log_det\",\"rtol\":1e-4,\"atol\":1e-4}");
    }
    snprintf(man, ml, manifest_fmt, tests);
    ckw_write(c, man, path);
    eng_model_unref(m);
    if (eng_model_load(path, &m, err) != ENG_OK) {
        fprintf(stderr, "ckw_finish: the written model fails its self test: %s\n", err);
        abort();
    }
    eng_model_unref(m);
    free(x), free(xf), free(y), free(yf), free(z), free(yo), free(ld), free(zd), free(man);
}

/* A flow of width d with two i-ResNet blocks (Linear d->h, ELU, Linear h->d, gain `gain`
 * each, so Lip(g) is about gain^2) around a permutation.  Numeric inverse. */
static inline void ckw_iresnet_flow(const char *path, int d, int h, double gain, uint64_t seed)
{
    struct ckw c = {0};
    c.seed = seed;
    ckw_linear(&c, "b0.0", d, h, gain);
    ckw_linear(&c, "b0.2", h, d, gain);
    ckw_perm(&c, "p1", d);
    ckw_linear(&c, "b2.0", d, h, gain);
    ckw_linear(&c, "b2.2", h, d, gain);
    char fmt[2048];
    snprintf(fmt, sizeof fmt,
             "{\"format\":\"innserve-manifest\",\"version\":1,\"kind\":\"flow\","
             "\"description\":\"i-ResNet flow (test model)\",\"dims\":{\"x\":%d},\"blocks\":["
             "{\"type\":\"IResNetBlock\",\"subnet\":{\"layers\":[{\"type\":\"linear\",\"weight\":"
             "\"b0.0.weight\",\"bias\":\"b0.0.bias\"},{\"type\":\"elu\"},{\"type\":\"linear\","
             "\"weight\":\"b0.2.weight\",\"bias\":\"b0.2.bias\"}]}},"
             "{\"type\":\"PermuteRandom\",\"perm\":\"p1\"},"
             "{\"type\":\"IResNetBlock\",\"subnet\":{\"layers\":[{\"type\":\"linear\",\"weight\":"
             "\"b2.0.weight\",\"bias\":\"b2.0.bias\"},{\"type\":\"elu\"},{\"type\":\"linear\","
             "\"weight\":\"b2.2.weight\",\"bias\":\"b2.2.bias\"}]}}]%%s}", d);
    ckw_finish(&c, fmt, 4, d, 0, path);
    ckw_free(&c);
}

/* The reference cINN of the benchmarks: `blocks` AllInOneBlocks (SOFTPLUS global affine,
 * hard permutations) of width dx with condition dy, subnets (dx/2 + dy) -> h -> h -> dx
 * with ReLU. */
static inline void ckw_reference_cinn(const char *path, int dx, int dy, int h, int blocks,
                                      uint64_t seed)
{
    struct ckw c = {0};
    c.seed = seed;
    int n1 = dx - dx / 2, n2 = dx / 2;
    size_t cap = 65536, len = 0;
    char *fmt = malloc(cap);
    len += (size_t)snprintf(fmt, cap,
                            "{\"format\":\"innserve-manifest\",\"version\":1,\"kind\":\"cinn\","
                            "\"description\":\"reference cINN: %d AllInOneBlocks, x %d, y %d, "
                            "subnets %d-%d-%d-%d ReLU (random weights, for benchmarks)\","
                            "\"dims\":{\"x\":%d,\"y\":%d},\"conditions\":[{\"net\":null}],"
                            "\"blocks\":[", blocks, dx, dy, n1 + dy, h, h, 2 * n2, dx, dy);
    for (int b = 0; b < blocks; b++) {
        char p[32], nm[96];
        snprintf(p, sizeof p, "module_list.%d", b);
        snprintf(nm, sizeof nm, "%s.subnet.0", p);
        ckw_linear(&c, nm, n1 + dy, h, 1.0);
        snprintf(nm, sizeof nm, "%s.subnet.2", p);
        ckw_linear(&c, nm, h, h, 1.0);
        snprintf(nm, sizeof nm, "%s.subnet.4", p);
        ckw_linear(&c, nm, h, 2 * n2, 0.1);
        int64_t gs[2] = {1, dx};
        snprintf(nm, sizeof nm, "%s.global_scale", p);
        ckw_randn_t(&c, nm, 2, gs, 0.05, 9.97);
        snprintf(nm, sizeof nm, "%s.global_offset", p);
        ckw_randn_t(&c, nm, 2, gs, 0.05, 0.0);
        snprintf(nm, sizeof nm, "%s.w_perm", p);
        ckw_perm(&c, nm, dx);
        len += (size_t)snprintf(
            fmt + len, cap - len,
            "%s{\"type\":\"AllInOneBlock\",\"cond\":0,\"affine_clamping\":2.0,"
            "\"global_affine_type\":\"SOFTPLUS\",\"global_scale\":\"%s.global_scale\","
            "\"global_offset\":\"%s.global_offset\",\"permutation\":{\"type\":\"hard\","
            "\"perm\":\"%s.w_perm\"},\"subnet\":{\"layers\":["
            "{\"type\":\"linear\",\"weight\":\"%s.subnet.0.weight\",\"bias\":\"%s.subnet.0.bias\"},"
            "{\"type\":\"relu\"},"
            "{\"type\":\"linear\",\"weight\":\"%s.subnet.2.weight\",\"bias\":\"%s.subnet.2.bias\"},"
            "{\"type\":\"relu\"},"
            "{\"type\":\"linear\",\"weight\":\"%s.subnet.4.weight\",\"bias\":\"%s.subnet.4.bias\"}"
            "]}}", b ? "," : "", p, p, p, p, p, p, p, p, p);
    }
    snprintf(fmt + len, cap - len, "]%%s}");
    ckw_finish(&c, fmt, 4, dx, dy, path);
    free(fmt);
    ckw_free(&c);
}

#endif
