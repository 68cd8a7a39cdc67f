/*
 * testutil.c — see testutil.h: a tiny safetensors writer for building checkpoints in
 * tests, and generic numerical checks (round trip, finite-difference log-det).
 */
#include "testutil.h"
#include "../../engine/kern.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct tu_tensor {
    char name[128];
    char dtype[8];
    int ndim;
    int64_t shape[8];
    size_t nbytes;
    unsigned char *data;
};

struct tu_ckpt {
    int n, cap;
    struct tu_tensor *t;
};

static size_t dsize(const char *d)
{
    if (!strcmp(d, "F64") || !strcmp(d, "I64"))
        return 8;
    if (!strcmp(d, "F32") || !strcmp(d, "I32"))
        return 4;
    if (!strcmp(d, "F16") || !strcmp(d, "BF16") || !strcmp(d, "I16"))
        return 2;
    return 1;
}

struct tu_ckpt *tu_ckpt_new(void) { return calloc(1, sizeof(struct tu_ckpt)); }

void tu_ckpt_free(struct tu_ckpt *c)
{
    if (!c)
        return;
    for (int i = 0; i < c->n; i++)
        free(c->t[i].data);
    free(c->t);
    free(c);
}

void tu_add(struct tu_ckpt *c, const char *name, const char *dtype, int ndim,
            const int64_t *shape, const void *data)
{
    if (c->n == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 16;
        c->t = realloc(c->t, sizeof(*c->t) * (size_t)c->cap);
        ck_assert_ptr_nonnull(c->t);
    }
    struct tu_tensor *t = &c->t[c->n++];
    memset(t, 0, sizeof(*t));
    snprintf(t->name, sizeof(t->name), "%s", name);
    snprintf(t->dtype, sizeof(t->dtype), "%s", dtype);
    t->ndim = ndim;
    size_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = shape[i];
        numel *= (size_t)shape[i];
    }
    t->nbytes = numel * dsize(dtype);
    t->data = malloc(t->nbytes ? t->nbytes : 1);
    ck_assert_ptr_nonnull(t->data);
    memcpy(t->data, data, t->nbytes);
}

void tu_add_f32(struct tu_ckpt *c, const char *name, int ndim, const int64_t *shape,
                const float *data)
{
    tu_add(c, name, "F32", ndim, shape, data);
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void tu_randn(float *v, int n, float scale, uint64_t seed)
{
    uint64_t s = seed * 7919 + 17;
    for (int i = 0; i < n; i++) {
        double u1 = ((double)(splitmix(&s) >> 11) + 1.0) / 9007199254740993.0;
        double u2 = (double)(splitmix(&s) >> 11) / 9007199254740992.0;
        v[i] = (float)(scale * sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
    }
}

void tu_add_randn(struct tu_ckpt *c, const char *name, int ndim, const int64_t *shape,
                  float scale, float offset, uint64_t seed)
{
    size_t numel = 1;
    for (int i = 0; i < ndim; i++)
        numel *= (size_t)shape[i];
    float *v = malloc(sizeof(float) * (numel ? numel : 1));
    ck_assert_ptr_nonnull(v);
    tu_randn(v, (int)numel, scale, seed);
    for (size_t i = 0; i < numel; i++)
        v[i] += offset;
    tu_add_f32(c, name, ndim, shape, v);
    free(v);
}

void tu_add_perm(struct tu_ckpt *c, const char *name, int n, uint64_t seed)
{
    int64_t *p = malloc(sizeof(int64_t) * (size_t)n);
    ck_assert_ptr_nonnull(p);
    for (int i = 0; i < n; i++)
        p[i] = i;
    uint64_t s = seed + 1;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(splitmix(&s) % (uint64_t)(i + 1));
        int64_t t = p[i];
        p[i] = p[j];
        p[j] = t;
    }
    int64_t shape[1] = {n};
    tu_add(c, name, "I64", 1, shape, p);
    free(p);
}

char *tu_add_subnet(struct tu_ckpt *c, const char *prefix, int in, int h, int n_hidden, int out,
                    const char *act_json, float scale, uint64_t seed)
{
    size_t cap = 4096;
    char *js = malloc(cap);
    ck_assert_ptr_nonnull(js);
    size_t k = (size_t)snprintf(js, cap, "{\"layers\":[");
    int width = in;
    for (int l = 0; l <= n_hidden; l++) {
        int o = l == n_hidden ? out : h;
        char wn[160], bn[160];
        snprintf(wn, sizeof(wn), "%s.%d.weight", prefix, 2 * l);
        snprintf(bn, sizeof(bn), "%s.%d.bias", prefix, 2 * l);
        int64_t ws[2] = {o, width}, bs[1] = {o};
        tu_add_randn(c, wn, 2, ws, scale / sqrtf((float)(width > 0 ? width : 1)), 0.0f,
                     seed * 131 + (uint64_t)l * 2);
        tu_add_randn(c, bn, 1, bs, 0.1f, 0.0f, seed * 131 + (uint64_t)l * 2 + 1);
        k += (size_t)snprintf(js + k, cap - k,
                              "%s{\"type\":\"linear\",\"weight\":\"%s\",\"bias\":\"%s\"}",
                              l ? "," : "", wn, bn);
        if (l < n_hidden)
            k += (size_t)snprintf(js + k, cap - k, ",%s", act_json);
        width = o;
    }
    snprintf(js + k, cap - k, "]}");
    return js;
}

/* JSON-escape s into a malloc'd string. */
static char *escape(const char *s)
{
    size_t n = strlen(s);
    char *o = malloc(2 * n + 1), *p = o;
    ck_assert_ptr_nonnull(o);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            *p++ = '\\';
        if (*s == '\n') {
            *p++ = ' ';
            continue;
        }
        *p++ = *s;
    }
    *p = 0;
    return o;
}

char *tu_ckpt_write(struct tu_ckpt *c, const char *manifest)
{
    char *esc = escape(manifest);
    size_t cap = strlen(esc) + 256 + (size_t)c->n * 256;
    char *hdr = malloc(cap);
    ck_assert_ptr_nonnull(hdr);
    size_t k = (size_t)snprintf(hdr, cap,
                                "{\"__metadata__\":{\"format\":\"innserve\",\"manifest\":\"%s\"}",
                                esc);
    size_t off = 0;
    for (int i = 0; i < c->n; i++) {
        struct tu_tensor *t = &c->t[i];
        k += (size_t)snprintf(hdr + k, cap - k, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", t->name,
                              t->dtype);
        for (int d = 0; d < t->ndim; d++)
            k += (size_t)snprintf(hdr + k, cap - k, "%s%lld", d ? "," : "", (long long)t->shape[d]);
        k += (size_t)snprintf(hdr + k, cap - k, "],\"data_offsets\":[%zu,%zu]}", off,
                              off + t->nbytes);
        off += t->nbytes;
    }
    k += (size_t)snprintf(hdr + k, cap - k, "}");
    while (k % 8)
        hdr[k++] = ' ';
    char *path = strdup("/tmp/innserve-test-XXXXXX");
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    FILE *f = fdopen(fd, "wb");
    uint64_t hl = k;
    unsigned char le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (unsigned char)(hl >> (8 * i));
    fwrite(le, 1, 8, f);
    fwrite(hdr, 1, k, f);
    for (int i = 0; i < c->n; i++)
        fwrite(c->t[i].data, 1, c->t[i].nbytes, f);
    fclose(f);
    free(hdr);
    free(esc);
    return path;
}

struct eng_model *tu_load(struct tu_ckpt *c, const char *manifest, unsigned flags)
{
    char *path = tu_ckpt_write(c, manifest);
    char err[ENG_ERR_LEN];
    struct eng_model *m = NULL;
    enum eng_status st = eng_model_load_ex(path, flags, &m, err);
    unlink(path);
    free(path);
    ck_assert_msg(st == ENG_OK, "load failed: %s", err);
    return m;
}

enum eng_status tu_load_fail(struct tu_ckpt *c, const char *manifest, unsigned flags,
                             char err[ENG_ERR_LEN])
{
    char *path = tu_ckpt_write(c, manifest);
    struct eng_model *m = NULL;
    enum eng_status st = eng_model_load_ex(path, flags, &m, err);
    unlink(path);
    free(path);
    ck_assert_msg(st != ENG_OK, "load unexpectedly succeeded");
    ck_assert_ptr_null(m);
    return st;
}

char *tu_manifest_one_block(int d, int cw, const char *block_json)
{
    size_t cap = strlen(block_json) + 512;
    char *s = malloc(cap);
    ck_assert_ptr_nonnull(s);
    if (cw == 0)
        snprintf(s, cap,
                 "{\"format\":\"innserve-manifest\",\"version\":1,\"kind\":\"flow\","
                 "\"dims\":{\"x\":%d},\"blocks\":[%s]}",
                 d, block_json);
    else
        snprintf(s, cap,
                 "{\"format\":\"innserve-manifest\",\"version\":1,\"kind\":\"cinn\","
                 "\"dims\":{\"x\":%d,\"y\":%d},\"conditions\":[{\"net\":null}],"
                 "\"blocks\":[%s]}",
                 d, cw, block_json);
    return s;
}

void tu_check_roundtrip(const struct eng_model *m, int n, float xscale, double tol)
{
    const struct eng_info *in = eng_model_info(m);
    int dx = in->dims.x, dy = in->dims.y, dz = in->dims.z;
    ck_assert_msg(in->kind == ENG_KIND_FLOW || in->kind == ENG_KIND_CINN,
                  "round trip helper handles flow and cinn");
    float *x = malloc(sizeof(float) * (size_t)n * dx), *x2 = malloc(sizeof(float) * (size_t)n * dx);
    float *z = malloc(sizeof(float) * (size_t)n * dz);
    float *y = malloc(sizeof(float) * (size_t)n * (dy ? dy : 1));
    double *ld = malloc(sizeof(double) * (size_t)n), *ld2 = malloc(sizeof(double) * (size_t)n);
    tu_randn(x, n * dx, xscale, 11);
    tu_randn(y, n * (dy ? dy : 1), 1.0f, 12);
    struct eng_ws *ws = eng_ws_new();
    char err[ENG_ERR_LEN];
    enum eng_status st = eng_forward(m, ws, n, x, dy ? y : NULL, dy ? n : 0, z, NULL, ld, err);
    ck_assert_msg(st == ENG_OK, "forward: %s", err);
    st = eng_inverse(m, ws, n, z, dy ? y : NULL, dy ? n : 0, x2, ld2, NULL, NULL, err);
    ck_assert_msg(st == ENG_OK, "inverse: %s", err);
    for (int i = 0; i < n * dx; i++)
        ck_assert_msg(fabs((double)x2[i] - x[i]) <= tol * (1.0 + fabs((double)x[i])),
                      "round trip: row %d col %d: %.8g vs %.8g", i / dx, i % dx, x2[i], x[i]);
    for (int i = 0; i < n; i++)
        ck_assert_msg(fabs(ld[i] + ld2[i]) <= tol * (1.0 + fabs(ld[i])) * dx,
                      "row %d: forward log-det %.8g, inverse %.8g", i, ld[i], ld2[i]);
    /* forward and inverse actually did something unless the block is the identity */
    eng_ws_free(ws);
    free(x), free(x2), free(z), free(y), free(ld), free(ld2);
}

void tu_check_logdet_fd(const struct eng_model *m, int n, float xscale, double h, double tol)
{
    const struct eng_info *in = eng_model_info(m);
    int d = in->dims.x, dy = in->dims.y;
    ck_assert(in->kind == ENG_KIND_FLOW || in->kind == ENG_KIND_CINN);
    float *x = malloc(sizeof(float) * (size_t)n * d);
    float *y = malloc(sizeof(float) * (size_t)n * (dy ? dy : 1));
    float *xp = malloc(sizeof(float) * (size_t)2 * d), *zp = malloc(sizeof(float) * (size_t)2 * d);
    double *J = malloc(sizeof(double) * (size_t)d * d);
    double ld[2];
    tu_randn(x, n * d, xscale, 21);
    tu_randn(y, n * (dy ? dy : 1), 1.0f, 22);
    struct eng_ws *ws = eng_ws_new();
    char err[ENG_ERR_LEN];
    for (int r = 0; r < n; r++) {
        const float *xr = x + (size_t)r * d;
        const float *yr = y + (size_t)r * (dy ? dy : 1);
        double ld0;
        float *z0 = malloc(sizeof(float) * (size_t)d);
        enum eng_status st = eng_forward(m, ws, 1, xr, dy ? yr : NULL, dy ? 1 : 0, z0, NULL, &ld0, err);
        ck_assert_msg(st == ENG_OK, "forward: %s", err);
        free(z0);
        for (int j = 0; j < d; j++) {
            memcpy(xp, xr, sizeof(float) * (size_t)d);
            memcpy(xp + d, xr, sizeof(float) * (size_t)d);
            /* use the exactly representable step actually taken */
            float hp = (float)((double)xr[j] + h) - xr[j];
            float hm = xr[j] - (float)((double)xr[j] - h);
            xp[j] = xr[j] + hp;
            xp[d + j] = xr[j] - hm;
            st = eng_forward(m, ws, 2, xp, dy ? yr : NULL, dy ? 1 : 0, zp, NULL, ld, err);
            ck_assert_msg(st == ENG_OK, "forward: %s", err);
            for (int i = 0; i < d; i++)
                J[(size_t)i * d + j] = ((double)zp[i] - zp[d + i]) / ((double)hp + hm);
        }
        /* log|det J| by LU in double */
        double logdet = 0.0;
        for (int k = 0; k < d; k++) {
            int p = k;
            for (int i = k + 1; i < d; i++)
                if (fabs(J[(size_t)i * d + k]) > fabs(J[(size_t)p * d + k]))
                    p = i;
            if (p != k)
                for (int jj = 0; jj < d; jj++) {
                    double t = J[(size_t)k * d + jj];
                    J[(size_t)k * d + jj] = J[(size_t)p * d + jj];
                    J[(size_t)p * d + jj] = t;
                }
            double piv = J[(size_t)k * d + k];
            ck_assert_msg(piv != 0.0, "singular finite-difference Jacobian");
            logdet += log(fabs(piv));
            for (int i = k + 1; i < d; i++) {
                double f = J[(size_t)i * d + k] / piv;
                for (int jj = k; jj < d; jj++)
                    J[(size_t)i * d + jj] -= f * J[(size_t)k * d + jj];
            }
        }
        ck_assert_msg(fabs(logdet - ld0) <= tol, "row %d: engine log-det %.8g, finite "
                      "difference %.8g", r, ld0, logdet);
    }
    eng_ws_free(ws);
    free(x), free(y), free(xp), free(zp), free(J);
}

char *tu_slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
    size_t got = s ? fread(s, 1, (size_t)n, f) : 0;
    fclose(f);
    if (!s)
        return NULL;
    s[got] = 0;
    if (len)
        *len = got;
    return s;
}

/* A checkpoint of tests/fixtures/golden/ sampled and evaluated on every kernel path this
 * CPU runs: samples and densities are the same bytes on every path, for any split of the
 * draws into eng_sample calls, and with the observation broadcast or given per row.  For
 * each of names[0 .. n_names). */
void tu_check_fixture_paths_and_splits(const char *const *names, int n_names)
{
    const char *const *paths = kern_available();
    enum { N = 700 };
    char err[ENG_ERR_LEN];
    for (int f = 0; f < n_names; f++) {
        char path[256];
        snprintf(path, sizeof(path), "tests/fixtures/golden/%s.safetensors", names[f]);
        float *ref = NULL;
        double *lref = NULL;
        for (int p = 0; paths[p]; p++) {
            setenv("INNSERVE_KERNELS", paths[p], 1);
            struct eng_model *m = NULL;
            ck_assert_msg(eng_model_load(path, &m, err) == ENG_OK, "%s", err);
            const struct eng_dims *d = &eng_model_info(m)->dims;
            int D = d->x, Y = d->y;
            float y[8] = {0.3f, -1.2f, 0.7f, 0.1f, 0.2f, 0.3f, 0.4f, 0.5f};
            float *x = malloc(sizeof(float) * N * D), *b = malloc(sizeof(float) * N * D);
            float *yrows = malloc(sizeof(float) * N * (Y ? Y : 1));
            double *lp = malloc(sizeof(double) * N), *lb = malloc(sizeof(double) * N);
            for (int i = 0; i < N; i++)
                memcpy(yrows + Y * i, y, sizeof(float) * (size_t)Y);
            struct eng_ws *ws = eng_ws_new();
            ck_assert_int_eq(eng_sample(m, ws, Y ? y : NULL, 7, 0, 0, N, 1.0f, x, lp, NULL, NULL,
                                        err), ENG_OK);
            const int sizes[] = {1, 3, 300, 17, 256, 123};
            for (int pos = 0, k = 0; pos < N; k++) {
                int cnt = sizes[k % 6] < N - pos ? sizes[k % 6] : N - pos;
                ck_assert_int_eq(eng_sample(m, ws, Y ? y : NULL, 7, 0, (uint64_t)pos, cnt, 1.0f,
                                            b + pos * D, lb + pos, NULL, NULL, err), ENG_OK);
                pos += cnt;
            }
            ck_assert_msg(!memcmp(x, b, sizeof(float) * N * D), "%s: split samples differ (%s)",
                          names[f], paths[p]);
            ck_assert_msg(!memcmp(lp, lb, sizeof(double) * N), "%s: split densities differ (%s)",
                          names[f], paths[p]);
            ck_assert_int_eq(eng_log_prob(m, ws, N, x, Y ? y : NULL, Y ? 1 : 0, lp, err), ENG_OK);
            if (Y) {
                ck_assert_int_eq(eng_log_prob(m, ws, N, x, yrows, N, lb, err), ENG_OK);
                ck_assert_msg(!memcmp(lp, lb, sizeof(double) * N), "%s: broadcast y differs (%s)",
                              names[f], paths[p]);
            }
            if (!ref) {
                ref = x, lref = lp;
            } else {
                ck_assert_msg(!memcmp(ref, x, sizeof(float) * N * D), "%s: samples %s != %s",
                              names[f], paths[p], paths[0]);
                ck_assert_msg(!memcmp(lref, lp, sizeof(double) * N), "%s: log_prob %s != %s",
                              names[f], paths[p], paths[0]);
                free(x), free(lp);
            }
            free(b), free(lb), free(yrows);
            eng_ws_free(ws);
            eng_model_unref(m);
        }
        free(ref), free(lref);
    }
    unsetenv("INNSERVE_KERNELS");
}

/* ---- sample moments ----------------------------------------------------------------------- */

void tu_moments(const float *x, int n, int d, double *mean, double *cov, int ldc)
{
    for (int a = 0; a < d; a++) {
        mean[a] = 0.0;
        for (int b = 0; b < d; b++)
            cov[a * ldc + b] = 0.0;
    }
    for (int i = 0; i < n; i++)
        for (int a = 0; a < d; a++)
            mean[a] += x[i * d + a] / (double)n;
    for (int i = 0; i < n; i++)
        for (int a = 0; a < d; a++)
            for (int b = 0; b < d; b++)
                cov[a * ldc + b] += (x[i * d + a] - mean[a]) * (x[i * d + b] - mean[b]) /
                                    (n - 1.0);
}

/* ---- parity with sbi fixtures ------------------------------------------------------------- */

static void sbi_row_f32(const cJSON *a, float *out, int n)
{
    ck_assert_int_eq(cJSON_GetArraySize(a), n);
    for (int i = 0; i < n; i++)
        out[i] = (float)cJSON_GetArrayItem(a, i)->valuedouble;
}

void tu_check_sbi_parity(const char *stem, const char *ref_name)
{
    const char *dir = "tests/fixtures/sbi";
    char path[256];
    snprintf(path, sizeof path, "%s/%s.expect.json", dir, stem);
    char *txt = tu_slurp(path, NULL);
    ck_assert_msg(txt != NULL, "missing %s", path);
    cJSON *e = cJSON_Parse(txt);
    ck_assert_ptr_nonnull(e);
    snprintf(path, sizeof path, "%s/%s.safetensors", dir, stem);
    char err[ENG_ERR_LEN];
    struct eng_model *m = NULL;
    ck_assert_msg(eng_model_load(path, &m, err) == ENG_OK, "%s", err); /* self test included */
    const struct eng_info *in = eng_model_info(m);
    ck_assert_int_eq(in->kind, ENG_KIND_MDN);
    ck_assert_ptr_nonnull(in->prior_low);
    const int dx = in->dims.x, dy = in->dims.y;
    struct eng_ws *ws = eng_ws_new();
    /* log_prob: the fixture's log_prob (sbi's, float64 estimator), -inf (null) outside the box */
    const cJSON *lpj;
    int n_lp = 0, n_inf = 0;
    cJSON_ArrayForEach(lpj, cJSON_GetObjectItem(e, "log_prob"))
    {
        float y[8];
        sbi_row_f32(cJSON_GetObjectItem(lpj, "y"), y, dy);
        const cJSON *xs = cJSON_GetObjectItem(lpj, "x"), *want = cJSON_GetObjectItem(lpj,
                                                                                   "log_prob");
        int n = cJSON_GetArraySize(xs);
        float *x = malloc(sizeof(float) * (size_t)(n * dx));
        double *lp = malloc(sizeof(double) * (size_t)n);
        for (int i = 0; i < n; i++)
            sbi_row_f32(cJSON_GetArrayItem(xs, i), x + i * dx, dx);
        ck_assert_int_eq(eng_log_prob(m, ws, n, x, y, 1, lp, err), ENG_OK);
        for (int i = 0; i < n; i++, n_lp++) {
            const cJSON *w = cJSON_GetArrayItem(want, i);
            if (cJSON_IsNull(w)) {
                ck_assert_msg(lp[i] == -INFINITY, "row %d: %g, sbi -inf", i, lp[i]);
                n_inf++;
                continue;
            }
            double rel = fabs(lp[i] - w->valuedouble) / fmax(1.0, fabs(w->valuedouble));
            ck_assert_msg(rel <= 1e-5, "log_prob row %d: engine %.10g, sbi %.10g (rel %.3g)", i,
                          lp[i], w->valuedouble, rel);
        }
        free(x), free(lp);
    }
    ck_assert_int_ge(n_lp, 20);
    ck_assert_int_ge(n_inf, 2);
    /* sampling: moments of the engine's posterior samples vs the fixture's reference draws */
    const cJSON *sj;
    int obs = 0;
    cJSON_ArrayForEach(sj, cJSON_GetObjectItem(e, "samples"))
    {
        float y[8];
        sbi_row_f32(cJSON_GetObjectItem(sj, "y"), y, dy);
        int n2 = cJSON_GetObjectItem(sj, "n")->valueint, n = 40000;
        float *x = malloc(sizeof(float) * (size_t)(n * dx));
        struct eng_accept acc;
        ck_assert_int_eq(eng_sample_prior(m, ws, y, 11, (uint32_t)obs, n, 1.0f, 10000000, x, NULL,
                                          NULL, NULL, &acc, err), ENG_OK);
        ck_assert_uint_eq(acc.accepted, (uint64_t)n);
        double mean[8], cov[8][8];
        tu_moments(x, n, dx, mean, &cov[0][0], 8);
        const cJSON *wm = cJSON_GetObjectItem(sj, "mean"), *wc = cJSON_GetObjectItem(sj, "cov");
        double f = 1.0 / n + 1.0 / n2;
        for (int a = 0; a < dx; a++) {
            double ma = cJSON_GetArrayItem(wm, a)->valuedouble;
            double caa = cJSON_GetArrayItem(cJSON_GetArrayItem(wc, a), a)->valuedouble;
            ck_assert_msg(fabs(mean[a] - ma) < 5 * sqrt(caa * f), "obs %d mean[%d]: engine %g, "
                          "%s %g", obs, a, mean[a], ref_name, ma);
            for (int b = 0; b < dx; b++) {
                double cab = cJSON_GetArrayItem(cJSON_GetArrayItem(wc, a), b)->valuedouble;
                double cbb = cJSON_GetArrayItem(cJSON_GetArrayItem(wc, b), b)->valuedouble;
                double se = sqrt((caa * cbb + cab * cab) * f);
                ck_assert_msg(fabs(cov[a][b] - cab) < 6 * se, "obs %d cov[%d][%d]: engine %g, "
                              "%s %g (se %g)", obs, a, b, cov[a][b], ref_name, cab, se);
            }
        }
        free(x);
        obs++;
    }
    ck_assert_int_eq(obs, 2);
    eng_ws_free(ws);
    eng_model_unref(m);
    cJSON_Delete(e);
    free(txt);
}

/* ---- sampling reproducibility ------------------------------------------------------------- */

void tu_check_sample_reproducible(const struct eng_model *m, struct eng_ws *ws, const float *y)
{
    const struct eng_info *in = eng_model_info(m);
    const int dx = in->dims.x, dy = in->dims.y;
    enum { N = 600 };
    const size_t sz = sizeof(float) * (size_t)(N * dx);
    float *a = malloc(sz), *b = malloc(sz), *r = malloc(sz);
    float *yr = malloc(sizeof(float) * (size_t)(N * dy));
    struct eng_sample_draw *dr = malloc(sizeof *dr * N);
    ck_assert(a && b && r && yr && dr);
    char err[ENG_ERR_LEN];
    ck_assert_int_eq(eng_sample(m, ws, y, 42, 3, 0, N, 0.8f, a, NULL, NULL, NULL, err), ENG_OK);
    /* split at a tile boundary and at an odd place */
    ck_assert_int_eq(eng_sample(m, ws, y, 42, 3, 0, 256, 0.8f, b, NULL, NULL, NULL, err), ENG_OK);
    ck_assert_int_eq(eng_sample(m, ws, y, 42, 3, 256, 77, 0.8f, b + 256 * dx, NULL, NULL, NULL,
                                err), ENG_OK);
    ck_assert_int_eq(eng_sample(m, ws, y, 42, 3, 333, N - 333, 0.8f, b + 333 * dx, NULL, NULL,
                                NULL, err), ENG_OK);
    ck_assert_mem_eq(a, b, sz);
    /* eng_sample_rows with y per row, rows in reverse order */
    for (int i = 0; i < N; i++) {
        dr[i] = (struct eng_sample_draw){42, (uint64_t)(N - 1 - i), 3, 0.8f};
        memcpy(yr + i * dy, y, sizeof(float) * (size_t)dy);
    }
    ck_assert_int_eq(eng_sample_rows(m, ws, N, yr, N, dr, r, NULL, NULL, NULL, err), ENG_OK);
    for (int i = 0; i < N; i++)
        ck_assert_mem_eq(r + i * dx, a + (N - 1 - i) * dx, sizeof(float) * dx);
    /* another seed or observation gives other samples */
    ck_assert_int_eq(eng_sample(m, ws, y, 43, 3, 0, N, 0.8f, b, NULL, NULL, NULL, err), ENG_OK);
    ck_assert(memcmp(a, b, sz) != 0);
    ck_assert_int_eq(eng_sample(m, ws, y, 42, 4, 0, N, 0.8f, b, NULL, NULL, NULL, err), ENG_OK);
    ck_assert(memcmp(a, b, sz) != 0);
    free(a), free(b), free(r), free(yr), free(dr);
}

/* ---- prior rejection ---------------------------------------------------------------------- */

bool tu_in_box(const float *x, int d, const float *lo, const float *hi)
{
    for (int j = 0; j < d; j++)
        if (!(x[j] >= lo[j] && x[j] <= hi[j]))
            return false;
    return true;
}

void tu_check_prior_kept(const struct eng_model *m, struct eng_ws *ws, const float *y,
                         uint64_t seed, uint64_t drawn, const float *x, int n, const float *lo,
                         const float *hi)
{
    const int dx = eng_model_info(m)->dims.x;
    char err[ENG_ERR_LEN];
    float *all = malloc(sizeof(float) * dx * drawn);
    ck_assert_ptr_nonnull(all);
    ck_assert_int_eq(eng_sample(m, ws, y, seed, 0, 0, (int)drawn, 1.0f, all, NULL, NULL, NULL,
                                err), ENG_OK);
    int k = 0;
    for (uint64_t i = 0; i < drawn; i++)
        if (tu_in_box(all + i * dx, dx, lo, hi)) {
            ck_assert_int_lt(k, n);
            ck_assert_mem_eq(all + i * dx, x + k * dx, sizeof(float) * dx);
            k++;
        }
    ck_assert_int_eq(k, n);
    free(all);
}

/* ---- observation broadcast ---------------------------------------------------------------- */

void tu_check_log_prob_broadcast(const struct eng_model *m, struct eng_ws *ws, int n,
                                 const float *x, const float *y0)
{
    const int dy = eng_model_info(m)->dims.y;
    float *y = malloc(sizeof(float) * (size_t)(n * dy));
    double *lp = malloc(sizeof(double) * (size_t)n), *lpb = malloc(sizeof(double) * (size_t)n);
    ck_assert(y && lp && lpb);
    char err[ENG_ERR_LEN];
    for (int i = 0; i < n; i++)
        memcpy(y + i * dy, y0, sizeof(float) * (size_t)dy);
    ck_assert_int_eq(eng_log_prob(m, ws, n, x, y, n, lp, err), ENG_OK);
    ck_assert_int_eq(eng_log_prob(m, ws, n, x, y0, 1, lpb, err), ENG_OK);
    ck_assert_mem_eq(lp, lpb, sizeof(double) * (size_t)n);
    free(y), free(lp), free(lpb);
}

/* ---- the mdn-kind tests ------------------------------------------------------------------- */

void tu_add_mat(struct tu_ckpt *c, const char *name, int rows, int cols, const float *v)
{
    int64_t s[2] = {rows, cols};
    tu_add_f32(c, name, cols ? 2 : 1, s, v);
}

void tu_mix_std_init(float xm[3], float xs[3], float ym[2], float ys[2])
{
    const float xm0[3] = {0.5f, -1.0f, 2.0f}, xs0[3] = {2.0f, 0.5f, 1.5f};
    const float ym0[2] = {0.1f, -0.2f}, ys0[2] = {1.3f, 0.7f};
    memcpy(xm, xm0, sizeof xm0), memcpy(xs, xs0, sizeof xs0);
    memcpy(ym, ym0, sizeof ym0), memcpy(ys, ys0, sizeof ys0);
}

void tu_mix_std_add(struct tu_ckpt *c, const float xm[3], const float xs[3], const float ym[2],
                    const float ys[2])
{
    tu_add_mat(c, "sx.mean", 3, 0, xm);
    tu_add_mat(c, "sx.std", 3, 0, xs);
    tu_add_mat(c, "sy.mean", 2, 0, ym);
    tu_add_mat(c, "sy.std", 2, 0, ys);
}

struct tu_fix tu_fix_load(struct tu_ckpt *c, char *manifest)
{
    struct tu_fix f = {tu_load(c, manifest, ENG_LOAD_NO_SELFTEST), eng_ws_new()};
    ck_assert_ptr_nonnull(f.ws);
    free(manifest);
    tu_ckpt_free(c);
    return f;
}

void tu_fix_close(struct tu_fix *f)
{
    eng_ws_free(f->ws);
    eng_model_unref(f->m);
}

void tu_check_mix_log_prob(const struct eng_model *m, struct eng_ws *ws, tu_ref_log_prob_fn *ref,
                           const void *ctx, double rtol, const float *y0)
{
    const struct eng_info *in = eng_model_info(m);
    ck_assert_int_eq(in->kind, ENG_KIND_MDN);
    ck_assert_int_eq(in->dims.z, 0);
    const int dx = in->dims.x, dy = in->dims.y;
    enum { N = 300 };
    float *x = malloc(sizeof(float) * N * dx), *y = malloc(sizeof(float) * N * dy);
    double *lp = malloc(sizeof(double) * N);
    ck_assert(x && y && lp);
    tu_randn(x, N * dx, 1.5f, 21);
    tu_randn(y, N * dy, 1.0f, 22);
    char err[ENG_ERR_LEN];
    ck_assert_int_eq(eng_log_prob(m, ws, N, x, y, N, lp, err), ENG_OK);
    double worst = 0;
    for (int i = 0; i < N; i++) {
        double want = ref(ctx, y + i * dy, x + i * dx);
        worst = fmax(worst, fabs(lp[i] - want) / fmax(1.0, fabs(want)));
    }
    ck_assert_msg(worst < rtol, "log_prob vs float64 reference: worst relative error %g", worst);
    tu_check_log_prob_broadcast(m, ws, N, x, y0);
    free(x), free(y), free(lp);
}

void tu_check_mix_prior_box(const struct eng_model *m, struct eng_ws *ws, const float *y0, int n,
                            uint64_t max_draws, tu_ref_log_prob_fn *ref, const void *ctx)
{
    const int dx = eng_model_info(m)->dims.x;
    const float lo[3] = {-2, -2, 0}, hi[3] = {3, 0, 4};
    ck_assert_int_eq(dx, 3);
    float *x = malloc(sizeof(float) * (size_t)(n * dx));
    double *lp = malloc(sizeof(double) * (size_t)n);
    ck_assert(x && lp);
    char err[ENG_ERR_LEN];
    struct eng_accept acc;
    ck_assert_int_eq(eng_sample_prior(m, ws, y0, 5, 0, n, 1.0f, max_draws, x, lp, NULL, NULL,
                                      &acc, err), ENG_OK);
    ck_assert_uint_eq(acc.accepted, n);
    ck_assert_uint_gt(acc.drawn, n); /* the box cuts the density */
    for (int i = 0; i < n; i++)
        ck_assert(tu_in_box(x + i * dx, dx, lo, hi) && isfinite(lp[i]));
    /* the kept samples are the in-box candidates of eng_sample, in index order */
    ck_assert_uint_le(acc.drawn, max_draws);
    tu_check_prior_kept(m, ws, y0, 5, acc.drawn, x, n, lo, hi);
    /* log_prob: -inf outside the closed box, the density inside */
    ck_assert_int_eq(eng_sample(m, ws, y0, 6, 0, 0, n, 1.0f, x, NULL, NULL, NULL, err), ENG_OK);
    ck_assert_int_eq(eng_log_prob(m, ws, n, x, y0, 1, lp, err), ENG_OK);
    int out = 0;
    for (int i = 0; i < n; i++) {
        if (tu_in_box(x + i * dx, dx, lo, hi)) {
            ck_assert_double_eq_tol(lp[i], ref(ctx, y0, x + i * dx), 1e-5);
        } else {
            ck_assert(lp[i] == -INFINITY);
            out++;
        }
    }
    ck_assert_int_gt(out, 0);
    free(x), free(lp);
}

void tu_check_mix_refused(const struct eng_model *m, struct eng_ws *ws, const float *y0)
{
    const struct eng_info *in = eng_model_info(m);
    const int dx = in->dims.x, dy = in->dims.y;
    float *x = calloc((size_t)dx, sizeof(float)), *z = calloc((size_t)dx, sizeof(float));
    float *out = calloc((size_t)dx, sizeof(float)), *bad = malloc(sizeof(float) * (size_t)dy);
    ck_assert(x && z && out && bad && dy >= 2);
    double ld, lp;
    char err[ENG_ERR_LEN];
    ck_assert_int_eq(eng_forward(m, ws, 1, x, y0, 1, z, NULL, &ld, err), ENG_ERR_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(err, "forward is not defined for an mdn model"));
    ck_assert_int_eq(eng_inverse(m, ws, 1, z, y0, 1, out, &ld, NULL, NULL, err),
                     ENG_ERR_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(err, "inverse is not defined for an mdn model"));
    memcpy(bad, y0, sizeof(float) * (size_t)dy);
    bad[0] = 0.1f, bad[1] = NAN;
    ck_assert_int_eq(eng_log_prob(m, ws, 1, x, bad, 1, &lp, err), ENG_ERR_NONFINITE);
    ck_assert_ptr_nonnull(strstr(err, "y[0][1]"));
    ck_assert_int_eq(eng_sample(m, ws, bad, 1, 0, 0, 1, 1.0f, out, NULL, NULL, NULL, err),
                     ENG_ERR_NONFINITE);
    free(x), free(z), free(out), free(bad);
}
