/*
 * innctl.c — the innserve command-line client.
 *
 * Online commands talk to a daemon over HTTP or HTTPS (libcurl; --url, INNSERVE_URL,
 * default http://127.0.0.1:8080; --token-file / INNSERVE_TOKEN_FILE sends a bearer token,
 * --cacert / INNSERVE_CACERT names the CA of an https daemon): models, info, sample, forward, inverse, log-prob, preimage,
 * certificate, health, metrics.  Offline commands read a checkpoint through the engine:
 * inspect, verify.  `innctl help COMMAND` / `innctl COMMAND --help` describe each one.
 *
 * Exit codes (stable; scripts may rely on them):
 *   0  success
 *   1  usage error: unknown command or option, bad or unreadable input
 *   2  the daemon answered with an HTTP error (the message and code are printed)
 *   3  no answer: cannot connect, DNS failure, timeout
 *   4  checkpoint invalid or its embedded test vectors failed (inspect, verify)
 *   5  internal error (out of memory, unparsable answer)
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ctl_http.h"
#include "ctl_input.h"
#include "ctl_offline.h"
#include "ctl_opts.h"

enum { EX_OK = 0, EX_USAGE = 1, EX_HTTP = 2, EX_CONNECT = 3, EX_INVALID = 4, EX_INTERNAL = 5 };

#define CTL_VERSION "0.1.0" /* the release: the same as innserve's (server/config.h) */

static const char *prog = "innctl";

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return EX_USAGE;
}

static int internal_error(const char *what)
{
    fprintf(stderr, "%s: %s\n", prog, what);
    return EX_INTERNAL;
}

/* ---- HTTP helpers ---------------------------------------------------------------------- */

static struct ctl_http_opts http_opts(const struct ctl_args *o)
{
    struct ctl_http_opts h = {o->url, o->timeout, o->retries, 30.0, o->token, o->cacert};
    return h;
}

/* Report a non-2xx answer; returns EX_HTTP. */
static int http_failure(const struct ctl_http_resp *r)
{
    cJSON *j = cJSON_Parse(r->body);
    const cJSON *e = j ? cJSON_GetObjectItemCaseSensitive(j, "error") : NULL;
    const cJSON *c = j ? cJSON_GetObjectItemCaseSensitive(j, "code") : NULL;
    if (cJSON_IsString(e))
        fprintf(stderr, "%s: HTTP %ld %s: %s\n", prog, r->status,
                cJSON_IsString(c) ? c->valuestring : "error", e->valuestring);
    else {
        size_t n = r->len;
        while (n > 0 && (r->body[n - 1] == '\n' || r->body[n - 1] == '\r'))
            n--;
        fprintf(stderr, "%s: HTTP %ld: %.*s\n", prog, r->status, (int)(n > 400 ? 400 : n),
                r->body);
    }
    cJSON_Delete(j);
    return EX_HTTP;
}

/* One request; on success *resp holds a 2xx answer.  Returns an exit code. */
static int call(const struct ctl_args *o, const char *method, const char *path, const char *body,
                const char *accept, struct ctl_http_resp *resp)
{
    struct ctl_http_opts h = http_opts(o);
    char err[CTL_HTTP_ERR_LEN];
    enum ctl_http_rc rc = ctl_http_request(&h, method, path, body, accept, resp, err);
    if (rc == CTL_HTTP_NOMEM)
        return internal_error("out of memory");
    if (rc != CTL_HTTP_OK) {
        fprintf(stderr, "%s: cannot reach the daemon: %s\n", prog, err);
        return EX_CONNECT;
    }
    if (resp->status < 200 || resp->status >= 300) {
        int ex = http_failure(resp);
        ctl_http_resp_free(resp);
        return ex;
    }
    return EX_OK;
}

static int call_json(const struct ctl_args *o, const char *method, const char *path, cJSON *body,
                     cJSON **out)
{
    char *b = body ? cJSON_PrintUnformatted(body) : NULL;
    if (body && !b)
        return internal_error("out of memory");
    struct ctl_http_resp r;
    int ex = call(o, method, path, b, NULL, &r);
    free(b);
    if (ex)
        return ex;
    *out = cJSON_Parse(r.body);
    ctl_http_resp_free(&r);
    if (!*out)
        return internal_error("the daemon's answer is not valid JSON");
    return EX_OK;
}

static void model_path(char *out, size_t cap, const char *model, const char *op)
{
    char esc[1024];
    ctl_http_escape(model, esc, sizeof(esc));
    if (op)
        snprintf(out, cap, "/v1/models/%s/%s", esc, op);
    else
        snprintf(out, cap, "/v1/models/%s", esc);
}

/* ---- output helpers -------------------------------------------------------------------- */

static FILE *open_out(const struct ctl_args *o, bool binary)
{
    if (!o->out || strcmp(o->out, "-") == 0) {
        if (binary && isatty(STDOUT_FILENO)) {
            usage_error("refusing to write binary NPY or PNG to a terminal: use -o FILE or a "
                        "pipe");
            return NULL;
        }
        return stdout;
    }
    FILE *f = fopen(o->out, binary ? "wb" : "w");
    if (!f)
        fprintf(stderr, "%s: cannot write %s: %s\n", prog, o->out, strerror(errno));
    return f;
}

static int close_out(FILE *f)
{
    if (f == stdout)
        return fflush(f) == 0 ? EX_OK : EX_INTERNAL;
    return fclose(f) == 0 ? EX_OK : EX_INTERNAL;
}

static int print_json(const struct ctl_args *o, const cJSON *j, bool pretty)
{
    FILE *f = open_out(o, false);
    if (!f)
        return o->out ? EX_USAGE : EX_USAGE;
    char *s = pretty ? cJSON_Print(j) : cJSON_PrintUnformatted(j);
    if (!s)
        return internal_error("out of memory");
    fprintf(f, "%s\n", s);
    free(s);
    return close_out(f);
}

static void print_num(FILE *f, double v)
{
    fprintf(f, "%.9g", v);
}

/* ---- request bodies -------------------------------------------------------------------- */

static int add_matrix(cJSON *body, const char *key, const char *spec, bool required)
{
    if (!spec) {
        if (required)
            return usage_error("missing --%s (e.g. --%s 1.5,0, --%s @file.csv or --%s -)", key,
                               key, key, key);
        return EX_OK;
    }
    struct ctl_matrix m;
    char err[CTL_ERR_LEN];
    if (ctl_matrix_parse(spec, key, &m, err))
        return usage_error("%s", err);
    cJSON *rows = cJSON_AddArrayToObject(body, key);
    for (int i = 0; rows && i < m.rows; i++)
        cJSON_AddItemToArray(rows, cJSON_CreateDoubleArray(m.v + (size_t)i * m.cols, m.cols));
    ctl_matrix_free(&m);
    return rows ? EX_OK : internal_error("out of memory");
}

/* 64-bit integers exactly (a JSON double would round seeds above 2^53). */
static void add_u64(cJSON *body, const char *key, unsigned long long v)
{
    char buf[32];
    snprintf(buf, sizeof(buf), "%llu", v);
    cJSON_AddRawToObject(body, key, buf);
}

static int add_vector(cJSON *body, const char *key, const char *spec, const char *what)
{
    double *v = NULL;
    char err[CTL_ERR_LEN];
    int n = ctl_vector_parse(spec, what, &v, err);
    if (n < 0)
        return usage_error("%s", err);
    cJSON_AddItemToObject(body, key, cJSON_CreateDoubleArray(v, n));
    free(v);
    return EX_OK;
}

/* Names of x from the metadata (NULL on any failure; caller frees with cJSON_Delete). */
static cJSON *fetch_meta(const struct ctl_args *o, const char *model)
{
    char path[1200];
    model_path(path, sizeof(path), model, NULL);
    cJSON *j = NULL;
    struct ctl_args q = *o;
    q.retries = 0;
    if (call_json(&q, "GET", path, NULL, &j))
        return NULL;
    return j;
}

static const char *meta_name(const cJSON *meta, const char *which, int i, char *buf, size_t cap)
{
    const cJSON *names = meta ? cJSON_GetObjectItemCaseSensitive(meta, "names") : NULL;
    const cJSON *arr = names ? cJSON_GetObjectItemCaseSensitive(names, which) : NULL;
    const cJSON *e = cJSON_IsArray(arr) ? cJSON_GetArrayItem(arr, i) : NULL;
    if (cJSON_IsString(e))
        return e->valuestring;
    snprintf(buf, cap, "%s%d", which, i);
    return buf;
}

/* Numbers in a (nested) row. */
static int leaf_count(const cJSON *v)
{
    if (!cJSON_IsArray(v))
        return 1;
    int n = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, v)
        n += leaf_count(c);
    return n;
}

static void print_leaves(FILE *f, const cJSON *v, bool *first)
{
    if (cJSON_IsArray(v)) {
        const cJSON *c;
        cJSON_ArrayForEach(c, v)
            print_leaves(f, c, first);
        return;
    }
    if (!*first)
        fputc(',', f);
    print_num(f, v->valuedouble);
    *first = false;
}

/* Value k of a (nested) row in row-major order; NAN when there is none. */
static double leaf_at(const cJSON *v, int k)
{
    if (!cJSON_IsArray(v))
        return k == 0 && cJSON_IsNumber(v) ? v->valuedouble : NAN;
    const cJSON *c;
    cJSON_ArrayForEach(c, v) {
        int n = leaf_count(c);
        if (k < n)
            return leaf_at(c, k);
        k -= n;
    }
    return NAN;
}

/* The column name of value j of a nested row r0 (an image model's [C, H, W] or [C, L] row):
 * c0_h3_w5 / c0_l3 as the daemon's CSV names them, after "z_" for z; NULL for a flat row. */
static const char *nested_name(const cJSON *r0, const char *key, int j, char *buf, size_t cap)
{
    int d[3] = {0, 0, 0}, rank = 0;
    for (const cJSON *a = r0; cJSON_IsArray(a) && rank < 3; a = a->child)
        d[rank++] = cJSON_GetArraySize(a);
    if (rank < 2 || !d[1])
        return NULL;
    const char *pre = strcmp(key, "x") == 0 ? "" : key;
    const char *sep = *pre ? "_" : "";
    if (rank == 3 && d[2])
        snprintf(buf, cap, "%s%sc%d_h%d_w%d", pre, sep, j / (d[1] * d[2]), j / d[2] % d[1],
                 j % d[2]);
    else
        snprintf(buf, cap, "%s%sc%d_l%d", pre, sep, j / d[1], j % d[1]);
    return buf;
}

/* Write matrices side by side as CSV: cols of each named key (2-D, or rows nested as an
 * image model's [C, H, W]) or a vector (1-D). */
static int write_csv(const struct ctl_args *o, const cJSON *resp, const char *const *keys, int nkeys,
                     const cJSON *meta)
{
    FILE *f = open_out(o, false);
    if (!f)
        return EX_USAGE;
    int rows = -1;
    bool first = true;
    for (int k = 0; k < nkeys; k++) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(resp, keys[k]);
        if (!cJSON_IsArray(a))
            continue;
        int n = cJSON_GetArraySize(a);
        if (rows < 0)
            rows = n;
        const cJSON *r0 = cJSON_GetArrayItem(a, 0);
        if (cJSON_IsArray(r0)) {
            int c = leaf_count(r0);
            for (int j = 0; j < c; j++) {
                char buf[48];
                const char *which = strcmp(keys[k], "x") == 0 ? "x" : strcmp(keys[k], "y") == 0
                                                                           ? "y" : NULL;
                const char *nm = nested_name(r0, keys[k], j, buf, sizeof(buf));
                if (!nm && which)
                    nm = meta_name(meta, which, j, buf, sizeof(buf));
                if (!nm) {
                    snprintf(buf, sizeof(buf), "%s%d", keys[k], j);
                    nm = buf;
                }
                fprintf(f, "%s%s", first ? "" : ",", nm);
                first = false;
            }
        } else {
            fprintf(f, "%s%s", first ? "" : ",", keys[k]);
            first = false;
        }
    }
    fputc('\n', f);
    for (int i = 0; i < rows; i++) {
        first = true;
        for (int k = 0; k < nkeys; k++) {
            const cJSON *a = cJSON_GetObjectItemCaseSensitive(resp, keys[k]);
            if (!cJSON_IsArray(a))
                continue;
            const cJSON *r = cJSON_GetArrayItem(a, i);
            if (cJSON_IsArray(r)) {
                print_leaves(f, r, &first);
            } else {
                if (!first)
                    fputc(',', f);
                if (cJSON_IsNumber(r))
                    print_num(f, r->valuedouble);
                first = false;
            }
        }
        fputc('\n', f);
    }
    return close_out(f);
}

static bool format_is(const struct ctl_args *o, const char *f)
{
    return o->format && strcmp(o->format, f) == 0;
}

static int need_model(const struct ctl_args *o)
{
    if (o->npos != 1)
        return usage_error("%s needs exactly one MODEL (see '%s %s --help')", o->cmd, prog, o->cmd);
    return EX_OK;
}

static int submit(const struct ctl_args *o, const char *op, cJSON *body, const char *accept,
                  struct ctl_http_resp *r, bool *have);
static int write_body(const struct ctl_args *o, const struct ctl_http_resp *r, bool binary);

/* ---- commands -------------------------------------------------------------------------- */

static int cmd_models(struct ctl_args *o)
{
    if (o->npos)
        return usage_error("models takes no arguments");
    cJSON *j;
    int ex = call_json(o, "GET", "/v1/models", NULL, &j);
    if (ex)
        return ex;
    if (o->json) {
        ex = print_json(o, j, true);
        cJSON_Delete(j);
        return ex;
    }
    const cJSON *ms = cJSON_GetObjectItemCaseSensitive(j, "models");
    printf("%-24s %-10s %-5s %-28s %s\n", "NAME", "VERSION", "KIND", "DIMS", "STATE");
    const cJSON *m;
    cJSON_ArrayForEach(m, ms) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(m, "name");
        const cJSON *ver = cJSON_GetObjectItemCaseSensitive(m, "version");
        const cJSON *kind = cJSON_GetObjectItemCaseSensitive(m, "kind");
        const cJSON *dims = cJSON_GetObjectItemCaseSensitive(m, "dims");
        const cJSON *state = cJSON_GetObjectItemCaseSensitive(m, "state");
        const cJSON *reason = cJSON_GetObjectItemCaseSensitive(m, "reason");
        char vbuf[64] = "-", dbuf[128] = "";
        if (cJSON_IsString(ver))
            snprintf(vbuf, sizeof(vbuf), "%s", ver->valuestring);
        else if (cJSON_IsNumber(ver))
            snprintf(vbuf, sizeof(vbuf), "%.0f", ver->valuedouble);
        const cJSON *d;
        size_t off = 0;
        cJSON_ArrayForEach(d, dims) {
            if (cJSON_IsNumber(d) && d->valueint != 0 && off < sizeof(dbuf))
                off += (size_t)snprintf(dbuf + off, sizeof(dbuf) - off, "%s%s=%d", off ? " " : "",
                                        d->string, d->valueint);
        }
        printf("%-24s %-10s %-5s %-28s %s%s%s\n",
               cJSON_IsString(name) ? name->valuestring : "?", vbuf,
               cJSON_IsString(kind) ? kind->valuestring : "-", dbuf[0] ? dbuf : "-",
               cJSON_IsString(state) ? state->valuestring : "?",
               cJSON_IsString(reason) ? ": " : "", cJSON_IsString(reason) ? reason->valuestring : "");
    }
    cJSON_Delete(j);
    return EX_OK;
}

static void print_str_list(const char *label, const cJSON *arr)
{
    if (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) == 0)
        return;
    printf("%-17s", label);
    const cJSON *e;
    int i = 0;
    cJSON_ArrayForEach(e, arr) {
        printf("%s%s", i++ ? ", " : "", cJSON_IsString(e) ? e->valuestring : "?");
    }
    putchar('\n');
}

static int cmd_info(struct ctl_args *o)
{
    int ex = need_model(o);
    if (ex)
        return ex;
    char path[1200];
    model_path(path, sizeof(path), o->pos[0], NULL);
    cJSON *j;
    if ((ex = call_json(o, "GET", path, NULL, &j)) != 0)
        return ex;
    if (o->json) {
        ex = print_json(o, j, true);
        cJSON_Delete(j);
        return ex;
    }
    static const char *const scalars[] = {"name", "version", "kind", "sha256", "description",
                                          "parameters", "numeric_inverse"};
    for (size_t i = 0; i < sizeof(scalars) / sizeof(scalars[0]); i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, scalars[i]);
        if (!v)
            continue;
        char label[40];
        snprintf(label, sizeof(label), "%s:", scalars[i]);
        if (cJSON_IsString(v))
            printf("%-17s%s\n", label, v->valuestring);
        else if (cJSON_IsNumber(v))
            printf("%-17s%.15g\n", label, v->valuedouble);
        else if (cJSON_IsBool(v))
            printf("%-17s%s\n", label, cJSON_IsTrue(v) ? "true" : "false");
    }
    const cJSON *dims = cJSON_GetObjectItemCaseSensitive(j, "dims");
    if (cJSON_IsObject(dims)) {
        printf("%-17s", "dims:");
        const cJSON *d;
        int k = 0;
        cJSON_ArrayForEach(d, dims) {
            printf("%s%s %d", k++ ? ", " : "", d->string, d->valueint);
        }
        putchar('\n');
    }
    const cJSON *names = cJSON_GetObjectItemCaseSensitive(j, "names");
    if (names) {
        print_str_list("x names:", cJSON_GetObjectItemCaseSensitive(names, "x"));
        print_str_list("y names:", cJSON_GetObjectItemCaseSensitive(names, "y"));
    }
    const cJSON *blocks = cJSON_GetObjectItemCaseSensitive(j, "blocks");
    if (cJSON_IsArray(blocks)) {
        printf("%-17s%d\n", "blocks:", cJSON_GetArraySize(blocks));
        const cJSON *b;
        int i = 0;
        cJSON_ArrayForEach(b, blocks) {
            const cJSON *t = cJSON_GetObjectItemCaseSensitive(b, "type");
            const cJSON *c = cJSON_GetObjectItemCaseSensitive(b, "cond");
            printf("  %3d  %s", i++, cJSON_IsString(t) ? t->valuestring : "?");
            if (cJSON_IsNumber(c))
                printf("  (cond %d)", c->valueint);
            putchar('\n');
        }
    }
    cJSON_Delete(j);
    return EX_OK;
}

static int summary_table(const struct ctl_args *o, const cJSON *resp, const cJSON *meta)
{
    const cJSON *sum = cJSON_GetObjectItemCaseSensitive(resp, "summary");
    const cJSON *mean = sum ? cJSON_GetObjectItemCaseSensitive(sum, "mean") : NULL;
    const cJSON *sd = sum ? cJSON_GetObjectItemCaseSensitive(sum, "std") : NULL;
    const cJSON *qs = sum ? cJSON_GetObjectItemCaseSensitive(sum, "quantiles") : NULL;
    const cJSON *map = sum ? cJSON_GetObjectItemCaseSensitive(sum, "map") : NULL;
    const cJSON *rmse = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(resp, "resimulation"), "rmse");
    if (!cJSON_IsArray(mean))
        return internal_error("the answer has no summary");
    FILE *f = open_out(o, false);
    if (!f)
        return EX_USAGE;
    const cJSON *seed = cJSON_GetObjectItemCaseSensitive(resp, "seed");
    int nobs = cJSON_GetArraySize(mean);
    for (int i = 0; i < nobs; i++) {
        fprintf(f, "%sobservation %d", i ? "\n" : "", i);
        if (cJSON_IsNumber(seed))
            fprintf(f, " (seed %.0f)", seed->valuedouble);
        if (cJSON_IsArray(rmse))
            fprintf(f, "  resimulation rmse %.6g", cJSON_GetArrayItem(rmse, i)->valuedouble);
        fprintf(f, "\n%-12s %12s %12s", "", "mean", "std");
        const cJSON *q;
        cJSON_ArrayForEach(q, qs) {
            char qn[24];
            snprintf(qn, sizeof(qn), "q%s", q->string);
            fprintf(f, " %12s", qn);
        }
        if (cJSON_IsArray(map))
            fprintf(f, " %12s", "map");
        fputc('\n', f);
        const cJSON *mr = cJSON_GetArrayItem(mean, i);
        int dx = leaf_count(mr);
        for (int k = 0; k < dx; k++) {
            char buf[48];
            const char *nm = nested_name(mr, "x", k, buf, sizeof(buf));
            fprintf(f, "%-12s %12.6g %12.6g", nm ? nm : meta_name(meta, "x", k, buf, sizeof(buf)),
                    leaf_at(mr, k), cJSON_IsArray(sd) ? leaf_at(cJSON_GetArrayItem(sd, i), k) : NAN);
            cJSON_ArrayForEach(q, qs) {
                fprintf(f, " %12.6g", leaf_at(cJSON_GetArrayItem(q, i), k));
            }
            if (cJSON_IsArray(map))
                fprintf(f, " %12.6g", leaf_at(cJSON_GetArrayItem(map, i), k));
            fputc('\n', f);
        }
    }
    return close_out(f);
}

static int cmd_sample(struct ctl_args *o)
{
    int ex = need_model(o);
    if (ex)
        return ex;
    if (o->summary && o->format && !format_is(o, "json"))
        return usage_error("--summary works with JSON output only");
    cJSON *body = cJSON_CreateObject();
    if ((ex = add_matrix(body, "y", o->y, false)) != 0) {
        cJSON_Delete(body);
        return ex;
    }
    cJSON_AddNumberToObject(body, "num_samples", (double)o->n);
    if (o->given[CTL_O_SEED])
        add_u64(body, "seed", o->seed);
    if (o->given[CTL_O_TEMPERATURE])
        cJSON_AddNumberToObject(body, "temperature", o->temperature);
    cJSON *outs = cJSON_AddArrayToObject(body, "outputs");
    if (!o->summary || o->log_prob)
        cJSON_AddItemToArray(outs, cJSON_CreateString(o->summary ? "log_prob" : "samples"));
    if (o->summary)
        cJSON_AddItemToArray(outs, cJSON_CreateString("summary"));
    if (o->log_prob && !o->summary)
        cJSON_AddItemToArray(outs, cJSON_CreateString("log_prob"));
    if (o->resim)
        cJSON_AddItemToArray(outs, cJSON_CreateString("resimulation"));
    if (o->quantiles && (ex = add_vector(body, "quantiles", o->quantiles, "quantiles")) != 0) {
        cJSON_Delete(body);
        return ex;
    }
    const char *accept = format_is(o, "csv") ? "text/csv"
                         : format_is(o, "npy") ? "application/x-npy"
                         : format_is(o, "png") ? "image/png" : "application/json";
    bool binary = format_is(o, "npy") || format_is(o, "png");
    struct ctl_http_resp r;
    if (o->async) {
        /* the job is printed; `innctl job ID` with its wait option fetches the answer */
        bool have;
        ex = submit(o, "sample", body, accept, &r, &have);
        cJSON_Delete(body);
        if (!ex && have) {
            ex = write_body(o, &r, binary);
            ctl_http_resp_free(&r);
        }
        return ex;
    }
    char *b = cJSON_PrintUnformatted(body);
    cJSON_Delete(body);
    if (!b)
        return internal_error("out of memory");
    char path[1200];
    model_path(path, sizeof(path), o->pos[0], "sample");
    ex = call(o, "POST", path, b, accept, &r);
    free(b);
    if (ex)
        return ex;
    if (o->summary && !o->json) {
        cJSON *j = cJSON_Parse(r.body);
        ctl_http_resp_free(&r);
        if (!j)
            return internal_error("the daemon's answer is not valid JSON");
        cJSON *meta = fetch_meta(o, o->pos[0]);
        ex = summary_table(o, j, meta);
        cJSON_Delete(meta);
        cJSON_Delete(j);
        return ex;
    }
    FILE *f = open_out(o, binary);
    if (!f) {
        ctl_http_resp_free(&r);
        return EX_USAGE;
    }
    fwrite(r.body, 1, r.len, f);
    if (!binary && r.len && r.body[r.len - 1] != '\n')
        fputc('\n', f);
    ctl_http_resp_free(&r);
    return close_out(f);
}

/* forward, inverse, log-prob: JSON answer printed, or CSV of its arrays. */
static int simple_op(struct ctl_args *o, const char *op, const char *in_key, const char *in_spec,
                     const char *const *csv_keys, int ncsv, const char *csv_names_of)
{
    int ex = need_model(o);
    if (ex)
        return ex;
    cJSON *body = cJSON_CreateObject();
    if ((ex = add_matrix(body, in_key, in_spec, true)) != 0 ||
        (ex = add_matrix(body, "y", o->y, false)) != 0) {
        cJSON_Delete(body);
        return ex;
    }
    if (strcmp(op, "inverse") == 0) {
        if (o->given[CTL_O_TOL])
            cJSON_AddNumberToObject(body, "tol", o->tol);
        if (o->given[CTL_O_MAX_ITER])
            cJSON_AddNumberToObject(body, "max_iter", (double)o->max_iter);
        if (o->method)
            cJSON_AddStringToObject(body, "method", o->method);
    }
    char path[1200];
    model_path(path, sizeof(path), o->pos[0], op);
    cJSON *j;
    ex = call_json(o, "POST", path, body, &j);
    cJSON_Delete(body);
    if (ex)
        return ex;
    if (format_is(o, "csv")) {
        cJSON *meta = csv_names_of ? fetch_meta(o, o->pos[0]) : NULL;
        ex = write_csv(o, j, csv_keys, ncsv, meta);
        cJSON_Delete(meta);
    } else {
        ex = print_json(o, j, false);
    }
    cJSON_Delete(j);
    return ex;
}

static int cmd_forward(struct ctl_args *o)
{
    static const char *const keys[] = {"z", "y", "log_det"};
    return simple_op(o, "forward", "x", o->x, keys, 3, "y");
}

static int cmd_inverse(struct ctl_args *o)
{
    static const char *const keys[] = {"x", "log_det"};
    return simple_op(o, "inverse", "z", o->z, keys, 2, "x");
}

static int cmd_log_prob(struct ctl_args *o)
{
    static const char *const keys[] = {"log_prob"};
    return simple_op(o, "log_prob", "x", o->x, keys, 1, NULL);
}

static int cmd_preimage(struct ctl_args *o)
{
    int ex = need_model(o);
    if (ex)
        return ex;
    cJSON *body = cJSON_CreateObject();
    if ((ex = add_matrix(body, "target", o->target, true)) != 0 ||
        (ex = add_matrix(body, "y", o->y, false)) != 0) {
        cJSON_Delete(body);
        return ex;
    }
    cJSON_AddStringToObject(body, "method", o->method ? o->method : "gradient");
    cJSON_AddNumberToObject(body, "num_solutions", o->num_solutions > 0 ? (double)o->num_solutions : 32);
    cJSON_AddNumberToObject(body, "max_steps", o->max_steps > 0 ? (double)o->max_steps : 500);
    add_u64(body, "seed", o->given[CTL_O_SEED] ? o->seed : 1);
    if (o->low || o->high) {
        if (!o->low || !o->high) {
            cJSON_Delete(body);
            return usage_error("--low and --high go together");
        }
        cJSON *bounds = cJSON_AddObjectToObject(body, "bounds");
        if ((ex = add_vector(bounds, "low", o->low, "low")) != 0 ||
            (ex = add_vector(bounds, "high", o->high, "high")) != 0) {
            cJSON_Delete(body);
            return ex;
        }
    }
    char path[1200];
    model_path(path, sizeof(path), o->pos[0], "preimage");
    cJSON *j;
    ex = call_json(o, "POST", path, body, &j);
    cJSON_Delete(body);
    if (ex)
        return ex;
    if (!format_is(o, "csv")) {
        ex = print_json(o, j, false);
        cJSON_Delete(j);
        return ex;
    }
    cJSON *meta = fetch_meta(o, o->pos[0]);
    FILE *f = open_out(o, false);
    if (!f) {
        cJSON_Delete(meta);
        cJSON_Delete(j);
        return EX_USAGE;
    }
    const cJSON *sols = cJSON_GetObjectItemCaseSensitive(j, "solutions");
    bool header = false;
    const cJSON *per;
    int t = 0;
    cJSON_ArrayForEach(per, sols) {
        const cJSON *s;
        int rank = 0;
        cJSON_ArrayForEach(s, per) {
            const cJSON *x = cJSON_GetObjectItemCaseSensitive(s, "x");
            const cJSON *res = cJSON_GetObjectItemCaseSensitive(s, "residual");
            if (!header) {
                fprintf(f, "target,rank");
                for (int k = 0; k < cJSON_GetArraySize(x); k++) {
                    char buf[32];
                    fprintf(f, ",%s", meta_name(meta, "x", k, buf, sizeof(buf)));
                }
                fprintf(f, ",residual\n");
                header = true;
            }
            fprintf(f, "%d,%d", t, rank++);
            const cJSON *v;
            cJSON_ArrayForEach(v, x) {
                fputc(',', f);
                print_num(f, v->valuedouble);
            }
            fputc(',', f);
            print_num(f, cJSON_IsNumber(res) ? res->valuedouble : NAN);
            fputc('\n', f);
        }
        t++;
    }
    cJSON_Delete(meta);
    cJSON_Delete(j);
    return close_out(f);
}

static int cmd_certificate(struct ctl_args *o)
{
    int ex = need_model(o);
    if (ex)
        return ex;
    char path[1200];
    model_path(path, sizeof(path), o->pos[0], "certificate");
    cJSON *j;
    if ((ex = call_json(o, "GET", path, NULL, &j)) != 0)
        return ex;
    if (o->json) {
        ex = print_json(o, j, true);
        cJSON_Delete(j);
        return ex;
    }
    const cJSON *inv = cJSON_GetObjectItemCaseSensitive(j, "invertible");
    const cJSON *g = cJSON_GetObjectItemCaseSensitive(j, "guarantee");
    printf("invertible: %s (guarantee: %s)\n", cJSON_IsTrue(inv) ? "yes" : "NO",
           cJSON_IsString(g) ? g->valuestring : "?");
    const cJSON *b;
    cJSON_ArrayForEach(b, cJSON_GetObjectItemCaseSensitive(j, "blocks")) {
        const cJSON *idx = cJSON_GetObjectItemCaseSensitive(b, "index");
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(b, "type");
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(b, "reason");
        const cJSON *l = cJSON_GetObjectItemCaseSensitive(b, "lipschitz");
        printf("  %3d  %-27s", cJSON_IsNumber(idx) ? idx->valueint : -1,
               cJSON_IsString(t) ? t->valuestring : "?");
        if (cJSON_IsNumber(l))
            printf(" Lip %-9.4g", l->valuedouble);
        printf(" %s\n", cJSON_IsString(r) ? r->valuestring : "");
    }
    cJSON_Delete(j);
    return EX_OK;
}

static int cmd_health(struct ctl_args *o)
{
    if (o->npos)
        return usage_error("health takes no arguments");
    struct ctl_http_resp r;
    struct ctl_args q = *o;
    q.retries = 0;
    int ex = call(&q, "GET", o->live ? "/healthz" : "/readyz", NULL, "*/*", &r);
    if (ex)
        return ex;
    if (!o->quiet)
        printf("%s\n", o->live ? "live" : "ready");
    ctl_http_resp_free(&r);
    return EX_OK;
}

static int cmd_metrics(struct ctl_args *o)
{
    if (o->npos)
        return usage_error("metrics takes no arguments");
    struct ctl_http_resp r;
    int ex = call(o, "GET", "/metrics", NULL, "text/plain", &r);
    if (ex)
        return ex;
    FILE *f = open_out(o, false);
    if (f) {
        fwrite(r.body, 1, r.len, f);
        ex = close_out(f);
    } else {
        ex = EX_USAGE;
    }
    ctl_http_resp_free(&r);
    return ex;
}

static int cmd_inspect(struct ctl_args *o)
{
    if (o->npos != 1)
        return usage_error("inspect needs exactly one FILE");
    return ctl_inspect(o->pos[0], o->json, stdout);
}

static int cmd_verify(struct ctl_args *o)
{
    if (o->npos < 1)
        return usage_error("verify needs at least one FILE");
    return ctl_verify(o->pos, o->npos, o->quiet, o->json, stdout);
}

/* ---- jobs ------------------------------------------------------------------------------- */

static const char *jstr(const cJSON *o, const char *k, const char *def)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : def;
}

static double jnum(const cJSON *o, const char *k, double def)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : def;
}

static bool job_finished(const cJSON *job)
{
    const char *s = jstr(job, "state", "");
    return !strcmp(s, "done") || !strcmp(s, "failed") || !strcmp(s, "cancelled");
}

static void job_path(char *out, size_t cap, const char *id, const char *tail)
{
    char esc[512];
    ctl_http_escape(id, esc, sizeof esc);
    snprintf(out, cap, "/v1/jobs/%s%s", esc, tail ? tail : "");
}

/* "4200/10000 samples, 1234/s, ETA 5 s" into buf from a job's progress object. */
static void progress_text(const cJSON *job, char *buf, size_t cap)
{
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(job, "progress");
    double done = jnum(p, "done", -1), total = jnum(p, "total", -1), rate = jnum(p, "rate", -1);
    double eta = jnum(p, "eta_s", -1);
    size_t off = 0;
    buf[0] = '\0';
    if (done < 0)
        return;
    off += (size_t)snprintf(buf, cap, "%.0f", done);
    if (total >= 0 && off < cap)
        off += (size_t)snprintf(buf + off, cap - off, "/%.0f", total);
    if (off < cap)
        off += (size_t)snprintf(buf + off, cap - off, " %s", jstr(p, "unit", ""));
    if (rate > 0 && off < cap)
        off += (size_t)snprintf(buf + off, cap - off, rate >= 100 ? ", %.0f/s" : ", %.3g/s",
                                rate);
    if (eta >= 0 && off < cap)
        snprintf(buf + off, cap - off, ", ETA %.0f s", eta);
}

/* One progress line on stderr, rewritten in place: "job ID  running [####....]  42%  ...". */
static void progress_draw(const cJSON *job)
{
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(job, "progress");
    double done = jnum(p, "done", 0), total = jnum(p, "total", 0);
    double frac = total > 0 ? done / total : 0;
    if (frac > 1)
        frac = 1;
    char bar[33];
    int fill = (int)(frac * 30 + 0.5);
    bar[0] = '[';
    for (int i = 0; i < 30; i++)
        bar[1 + i] = i < fill ? '#' : '.';
    bar[31] = ']';
    bar[32] = '\0';
    char text[160];
    progress_text(job, text, sizeof text);
    fprintf(stderr, "\r%-9s %s %3.0f%%  %-50s", jstr(job, "state", "?"), bar, frac * 100, text);
    fflush(stderr);
}

static void sleep_s(double s)
{
    struct timespec t = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&t, NULL);
}

/* Polls GET /v1/jobs/{id} until the job has finished; *out is its last object (caller
 * deletes).  A progress line on stderr when it is a terminal or with --progress. */
static int job_wait(const struct ctl_args *o, const char *id, cJSON **out)
{
    bool draw = o->progress || isatty(STDERR_FILENO);
    char path[700];
    job_path(path, sizeof path, id, NULL);
    double pause = 0.02;
    cJSON *job = NULL;
    int ex;
    for (;;) {
        if ((ex = call_json(o, "GET", path, NULL, &job)) != 0)
            break;
        if (draw)
            progress_draw(job);
        if (job_finished(job))
            break;
        cJSON_Delete(job);
        job = NULL;
        sleep_s(pause);
        pause = pause * 2 > 0.5 ? 0.5 : pause * 2;
    }
    if (draw)
        fputc('\n', stderr);
    *out = job;
    return ex;
}

/* The failure of a finished job that has no result: exit 2 with its error. */
static int job_failure(const cJSON *job)
{
    const char *id = jstr(job, "id", "?"), *state = jstr(job, "state", "?");
    if (!strcmp(state, "cancelled")) {
        fprintf(stderr, "%s: job %s was cancelled\n", prog, id);
        return EX_HTTP;
    }
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(job, "error");
    fprintf(stderr, "%s: job %s failed: HTTP %.0f %s: %s\n", prog, id, jnum(e, "status", 0),
            jstr(e, "code", "error"), jstr(e, "error", "(no message)"));
    return EX_HTTP;
}

/* GET /v1/jobs/{id}/result into *r (the bytes the synchronous request would have got). */
static int job_result(const struct ctl_args *o, const char *id, const char *accept,
                      struct ctl_http_resp *r)
{
    char path[700];
    job_path(path, sizeof path, id, "/result");
    return call(o, "GET", path, NULL, accept, r);
}

/* Writes an answer's bytes to -o FILE or stdout (binary: NPY, never to a terminal). */
static int write_body(const struct ctl_args *o, const struct ctl_http_resp *r, bool binary)
{
    FILE *f = open_out(o, binary);
    if (!f)
        return EX_USAGE;
    fwrite(r->body, 1, r->len, f);
    if (!binary && r->len && r->body[r->len - 1] != '\n')
        fputc('\n', f);
    return close_out(f);
}

/* POSTs body with "async": true.  A 202 gives the job: with --async it is printed and
 * *done stays false; else it is waited for and its result fetched into *r.  A daemon that
 * answered at once (200) gives its answer in *r.  Returns an exit code. */
static int submit(const struct ctl_args *o, const char *op, cJSON *body, const char *accept,
                  struct ctl_http_resp *r, bool *have)
{
    *have = false;
    cJSON_AddBoolToObject(body, "async", true);
    char *b = cJSON_PrintUnformatted(body);
    if (!b)
        return internal_error("out of memory");
    char path[1200];
    model_path(path, sizeof path, o->pos[0], op);
    int ex = call(o, "POST", path, b, accept, r);
    free(b);
    if (ex)
        return ex;
    if (r->status != 202) {
        *have = true;
        return EX_OK;
    }
    cJSON *job = cJSON_Parse(r->body);
    ctl_http_resp_free(r);
    if (!job || !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(job, "id"))) {
        cJSON_Delete(job);
        return internal_error("the daemon's 202 answer has no job id");
    }
    if (o->async) {
        ex = print_json(o, job, false);
        cJSON_Delete(job);
        return ex;
    }
    char id[256];
    snprintf(id, sizeof id, "%s", jstr(job, "id", ""));
    cJSON_Delete(job);
    if ((ex = job_wait(o, id, &job)) != 0)
        return ex;
    if (strcmp(jstr(job, "state", ""), "done") != 0) {
        ex = job_failure(job);
        cJSON_Delete(job);
        return ex;
    }
    cJSON_Delete(job);
    if ((ex = job_result(o, id, accept, r)) != 0)
        return ex;
    *have = true;
    return EX_OK;
}

static int cmd_jobs(struct ctl_args *o)
{
    if (o->npos)
        return usage_error("jobs takes no arguments");
    cJSON *j;
    int ex = call_json(o, "GET", "/v1/jobs", NULL, &j);
    if (ex)
        return ex;
    if (o->json) {
        ex = print_json(o, j, true);
        cJSON_Delete(j);
        return ex;
    }
    printf("%-32s %-9s %-11s %-16s %s\n", "ID", "STATE", "OPERATION", "MODEL", "PROGRESS");
    const cJSON *job;
    cJSON_ArrayForEach(job, cJSON_GetObjectItemCaseSensitive(j, "jobs")) {
        char text[160];
        progress_text(job, text, sizeof text);
        printf("%-32s %-9s %-11s %-16s %s\n", jstr(job, "id", "?"), jstr(job, "state", "?"),
               jstr(job, "operation", "?"), jstr(job, "model", "?"), text);
    }
    cJSON_Delete(j);
    return EX_OK;
}

static void job_table(const cJSON *job)
{
    static const char *const keys[] = {"id", "state", "operation", "model", "version",
                                       "created", "started", "finished", "result_url"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const char *v = jstr(job, keys[i], NULL);
        if (v)
            printf("%-11s%s\n", keys[i], v);
        if (i == 1) {
            char text[160];
            progress_text(job, text, sizeof text);
            if (text[0])
                printf("%-11s%s\n", "progress", text);
        }
    }
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(job, "error");
    if (e)
        printf("%-11sHTTP %.0f %s: %s\n", "error", jnum(e, "status", 0), jstr(e, "code", "?"),
               jstr(e, "error", ""));
}

static int cmd_job(struct ctl_args *o)
{
    if (o->npos != 1)
        return usage_error("job needs exactly one ID (see 'innctl jobs')");
    if (o->wait && o->cancel)
        return usage_error("--wait and --cancel exclude each other");
    const char *id = o->pos[0];
    char path[700];
    job_path(path, sizeof path, id, NULL);
    cJSON *job = NULL;
    int ex;
    if (o->wait) {
        if ((ex = job_wait(o, id, &job)) != 0)
            return ex;
        if (strcmp(jstr(job, "state", ""), "done") != 0) {
            ex = job_failure(job);
            cJSON_Delete(job);
            return ex;
        }
        cJSON_Delete(job);
        struct ctl_http_resp r;
        if ((ex = job_result(o, id, "*/*", &r)) != 0)
            return ex;
        bool binary = strstr(r.content_type, "npy") || strstr(r.content_type, "image/png");
        ex = write_body(o, &r, binary);
        ctl_http_resp_free(&r);
        return ex;
    }
    if ((ex = call_json(o, o->cancel ? "DELETE" : "GET", path, NULL, &job)) != 0)
        return ex;
    if (o->json)
        ex = print_json(o, job, true);
    else
        job_table(job);
    cJSON_Delete(job);
    return ex;
}

/* ---- calibration and MMD ------------------------------------------------------------- */

/* Adds the comma-separated words of spec as a JSON array of strings. */
static void add_words(cJSON *body, const char *key, const char *spec)
{
    cJSON *a = cJSON_AddArrayToObject(body, key);
    for (const char *p = spec; a && *p;) {
        size_t n = strcspn(p, ",");
        char w[64];
        snprintf(w, sizeof w, "%.*s", (int)(n < sizeof w ? n : sizeof w - 1), p);
        if (n)
            cJSON_AddItemToArray(a, cJSON_CreateString(w));
        p += n;
        if (*p == ',')
            p++;
    }
}

static void add_solver(cJSON *body, const struct ctl_args *o)
{
    if (o->given[CTL_O_TOL])
        cJSON_AddNumberToObject(body, "tol", o->tol);
    if (o->given[CTL_O_MAX_ITER])
        cJSON_AddNumberToObject(body, "max_iter", (double)o->max_iter);
    if (o->method)
        cJSON_AddStringToObject(body, "method", o->method);
}

static double arr_num(const cJSON *a, int i)
{
    const cJSON *v = cJSON_GetArrayItem(a, i);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static const cJSON *jpath(const cJSON *o, const char *a, const char *b)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, a);
    return b ? cJSON_GetObjectItemCaseSensitive(v, b) : v;
}

/* The readable calibration report: SBC per variable, the coverage curves, TARP. */
static int calibration_report(const struct ctl_args *o, const cJSON *j, const cJSON *meta)
{
    FILE *f = open_out(o, false);
    if (!f)
        return EX_USAGE;
    fprintf(f, "%s version %s: %.0f pairs x %.0f posterior samples (seed %.0f)\n",
            jstr(j, "model", "?"), jstr(j, "version", "?"), jnum(j, "n", 0),
            jnum(j, "num_samples", 0), jnum(j, "seed", 0));
    const cJSON *sbc = cJSON_GetObjectItemCaseSensitive(j, "sbc");
    if (sbc) {
        const cJSON *ks = cJSON_GetObjectItemCaseSensitive(sbc, "ks_statistic");
        const cJSON *pv = cJSON_GetObjectItemCaseSensitive(sbc, "ks_pvalue");
        fprintf(f, "\nSBC: ranks of x* among the samples, KS test against uniform\n"
                   "%-14s %12s %12s\n", "", "ks_statistic", "ks_pvalue");
        for (int k = 0; k < cJSON_GetArraySize(pv); k++) {
            char buf[32];
            fprintf(f, "%-14s %12.4g %12.4g\n", meta_name(meta, "x", k, buf, sizeof buf),
                    arr_num(ks, k), arr_num(pv, k));
        }
    }
    const cJSON *cov = cJSON_GetObjectItemCaseSensitive(j, "coverage");
    if (cov) {
        const cJSON *lv = jpath(cov, "levels", NULL), *lo = jpath(cov, "lower", NULL),
                    *hi = jpath(cov, "upper", NULL), *hpd = jpath(cov, "hpd", "empirical"),
                    *cen = jpath(cov, "central", "empirical");
        int d = cJSON_GetArraySize(cen);
        fprintf(f, "\nexpected coverage: empirical against nominal level, with the %g%% "
                   "binomial band\n%8s %8s %8s %8s", 100 * jnum(cov, "confidence", NAN),
                "level", "lower", "upper", "hpd");
        for (int k = 0; k < d; k++) {
            char buf[32];
            fprintf(f, " %8.8s", meta_name(meta, "x", k, buf, sizeof buf));
        }
        fputc('\n', f);
        for (int i = 0; i < cJSON_GetArraySize(lv); i++) {
            fprintf(f, "%8.4g %8.4g %8.4g %8.4g", arr_num(lv, i), arr_num(lo, i),
                    arr_num(hi, i), arr_num(hpd, i));
            for (int k = 0; k < d; k++)
                fprintf(f, " %8.4g", arr_num(cJSON_GetArrayItem(cen, k), i));
            fputc('\n', f);
        }
    }
    const cJSON *tarp = cJSON_GetObjectItemCaseSensitive(j, "tarp");
    if (tarp)
        fprintf(f, "\nTARP: ATC %.4g, KS p-value %.4g\n", jnum(tarp, "atc", NAN),
                jnum(tarp, "ks_pvalue", NAN));
    const cJSON *w;
    bool first = true;
    cJSON_ArrayForEach(w, cJSON_GetObjectItemCaseSensitive(j, "warnings")) {
        if (cJSON_IsString(w))
            fprintf(f, "%swarning: %s\n", first ? "\n" : "", w->valuestring);
        first = false;
    }
    return close_out(f);
}

/* calibrate and mmd: run as a job (or --async), print the report or the JSON. */
static int diag_op(struct ctl_args *o, const char *op, cJSON *body)
{
    struct ctl_http_resp r;
    bool have;
    int ex = submit(o, op, body, "application/json", &r, &have);
    cJSON_Delete(body);
    if (ex || !have)
        return ex;
    if (o->json) {
        ex = write_body(o, &r, false);
        ctl_http_resp_free(&r);
        return ex;
    }
    cJSON *j = cJSON_Parse(r.body);
    ctl_http_resp_free(&r);
    if (!j)
        return internal_error("the daemon's answer is not valid JSON");
    if (!strcmp(op, "calibration")) {
        cJSON *meta = fetch_meta(o, o->pos[0]);
        ex = calibration_report(o, j, meta);
        cJSON_Delete(meta);
    } else {
        FILE *f = open_out(o, false);
        if (!f) {
            cJSON_Delete(j);
            return EX_USAGE;
        }
        const cJSON *pv = cJSON_GetObjectItemCaseSensitive(j, "p_value");
        fprintf(f, "mmd2 %.6g", jnum(j, "mmd2", NAN));
        if (cJSON_IsNumber(pv))
            fprintf(f, "  p-value %.4g (%.0f permutations)", pv->valuedouble,
                    jnum(j, "permutations", 0));
        fprintf(f, "\n%s version %s: %.0f posterior samples (seed %.0f) against %.0f reference "
                   "samples, %s estimator, %s kernel, scales",
                jstr(j, "model", "?"), jstr(j, "version", "?"), jnum(j, "num_samples", 0),
                jnum(j, "seed", 0), jnum(j, "m", 0), jstr(j, "estimator", "?"),
                jstr(j, "kernel", "?"));
        const cJSON *h;
        int k = 0;
        cJSON_ArrayForEach(h, cJSON_GetObjectItemCaseSensitive(j, "scales")) {
            fprintf(f, "%s%g", k++ ? ", " : " ", h->valuedouble);
        }
        fputc('\n', f);
        ex = close_out(f);
    }
    cJSON_Delete(j);
    return ex;
}

/* --pairs: rows of dims.x + dims.y values (the model's metadata), split into "x" and "y". */
static int add_pairs(const struct ctl_args *o, cJSON *body)
{
    struct ctl_matrix m;
    char err[CTL_ERR_LEN];
    if (ctl_matrix_parse(o->pairs, "pairs", &m, err))
        return usage_error("%s", err);
    cJSON *meta = fetch_meta(o, o->pos[0]);
    const cJSON *dims = meta ? cJSON_GetObjectItemCaseSensitive(meta, "dims") : NULL;
    int dx = (int)jnum(dims, "x", -1), dy = (int)jnum(dims, "y", -1);
    cJSON_Delete(meta);
    int ex = EX_OK;
    if (dx < 0 || dy < 0) {
        ex = usage_error("--pairs: cannot read the dims of model '%s' (GET /v1/models/%s)",
                         o->pos[0], o->pos[0]);
    } else if (m.cols != dx + dy) {
        ex = usage_error("--pairs: rows have %d values; model '%s' wants dims.x + dims.y = "
                         "%d + %d", m.cols, o->pos[0], dx, dy);
    } else {
        cJSON *xs = cJSON_AddArrayToObject(body, "x");
        cJSON *ys = dy ? cJSON_AddArrayToObject(body, "y") : NULL;
        for (int i = 0; xs && i < m.rows; i++) {
            const double *r = m.v + (size_t)i * m.cols;
            cJSON_AddItemToArray(xs, cJSON_CreateDoubleArray(r, dx));
            if (ys)
                cJSON_AddItemToArray(ys, cJSON_CreateDoubleArray(r + dx, dy));
        }
        if (!xs || (dy && !ys))
            ex = internal_error("out of memory");
    }
    ctl_matrix_free(&m);
    return ex;
}

static int cmd_calibrate(struct ctl_args *o)
{
    int ex = need_model(o);
    if (ex)
        return ex;
    if (!o->pairs == !o->x)
        return usage_error("calibrate needs --x ROWS (and --y ROWS) or --pairs ROWS (see "
                           "'innctl calibrate --help')");
    if (o->pairs && o->y)
        return usage_error("--pairs holds y already: give --pairs or --x and --y");
    cJSON *body = cJSON_CreateObject();
    if ((ex = o->pairs ? add_pairs(o, body) : add_matrix(body, "x", o->x, true)) != 0 ||
        (ex = add_matrix(body, "y", o->y, false)) != 0 ||
        (ex = add_matrix(body, "tarp_references", o->tarp_references, false)) != 0) {
        cJSON_Delete(body);
        return ex;
    }
    cJSON_AddNumberToObject(body, "num_samples", (double)o->n);
    if (o->given[CTL_O_SEED])
        add_u64(body, "seed", o->seed);
    if (o->diagnostics)
        add_words(body, "diagnostics", o->diagnostics);
    if (o->given[CTL_O_BINS])
        cJSON_AddNumberToObject(body, "bins", (double)o->bins);
    if (o->given[CTL_O_COVERAGE_POINTS])
        cJSON_AddNumberToObject(body, "coverage_points", (double)o->coverage_points);
    if (o->given[CTL_O_CONFIDENCE])
        cJSON_AddNumberToObject(body, "confidence", o->confidence);
    if (o->given[CTL_O_TARP_BINS])
        cJSON_AddNumberToObject(body, "tarp_bins", (double)o->tarp_bins);
    if (o->no_z_score)
        cJSON_AddBoolToObject(body, "z_score", false);
    add_solver(body, o);
    return diag_op(o, "calibration", body);
}

static int cmd_mmd(struct ctl_args *o)
{
    int ex = need_model(o);
    if (ex)
        return ex;
    cJSON *body = cJSON_CreateObject();
    if ((ex = add_matrix(body, "reference", o->reference, true)) != 0 ||
        (ex = add_matrix(body, "y", o->y, false)) != 0 ||
        (o->scales && (ex = add_vector(body, "scales", o->scales, "scales")) != 0)) {
        cJSON_Delete(body);
        return ex;
    }
    cJSON_AddNumberToObject(body, "num_samples", (double)o->n);
    if (o->given[CTL_O_SEED])
        add_u64(body, "seed", o->seed);
    if (o->given[CTL_O_TEMPERATURE])
        cJSON_AddNumberToObject(body, "temperature", o->temperature);
    if (o->estimator)
        cJSON_AddStringToObject(body, "estimator", o->estimator);
    if (o->given[CTL_O_PERMUTATIONS])
        cJSON_AddNumberToObject(body, "permutations", (double)o->permutations);
    add_solver(body, o);
    return diag_op(o, "mmd", body);
}

static int cmd_help(struct ctl_args *o);

/* ---- command table ----------------------------------------------------------------------- */

#define END {CTL_O_NONE, 0, NULL, NULL, NULL, NULL}
#define USE(id) {id, 0, NULL, NULL, NULL, NULL}
#define USE_H(id, help) {id, 0, NULL, help, NULL, NULL}
#define JSON_H(help) {CTL_O_JSON, 0, NULL, help, NULL, NULL}
#define FORMAT(choices, help) {CTL_O_FORMAT, 0, NULL, help, NULL, choices}
#define REQ(id, help) {id, CTL_REQUIRED, NULL, help, NULL, NULL}

static const struct ctl_cmd cmds[] = {
    {"models", "", (const struct ctl_use[]){USE(CTL_O_JSON), END}, cmd_models, true,
     "List the models the daemon serves: name, version, kind, dims, state."},
    {"info", "MODEL", (const struct ctl_use[]){USE(CTL_O_JSON), END}, cmd_info, true,
     "Show a model's metadata: kind, sha256, dims, variable names, blocks, parameters."},
    {"sample", "MODEL",
     (const struct ctl_use[]){
         USE_H(CTL_O_Y, "observations, one row each (omit for a flow)"),
         {CTL_O_N, 0, NULL, NULL, "1000", NULL}, USE(CTL_O_SEED), USE(CTL_O_TEMPERATURE),
         FORMAT("json csv npy png", "json (default), csv (columns obs, sample, the x names "
                "(c0_h0_w0... for an image model) and log_prob), npy or png (image models: a "
                "grid of the samples, one row per observation)"),
         USE(CTL_O_SUMMARY), JSON_H("with --summary: print the daemon's JSON"),
         USE(CTL_O_LOG_PROB), USE(CTL_O_RESIMULATION), USE(CTL_O_QUANTILES),
         USE_H(CTL_O_ASYNC, "submit as a job and print the job at once; the job command "
               "waits for it and fetches the samples"),
         USE_H(CTL_O_OUT, "write the answer to FILE (needed for npy and png on a terminal)"),
         END},
     cmd_sample, true, "Draw posterior samples x ~ p(x | y) (cinn, inn) or x ~ p(x) (flow)."},
    {"forward", "MODEL",
     (const struct ctl_use[]){
         REQ(CTL_O_X, "the inputs"),
         USE_H(CTL_O_Y, "the observations of a cinn (one row is used for every row of x)"),
         FORMAT("json csv", "json (default) or csv (columns z0.., the y names, log_det)"),
         USE(CTL_O_OUT), END},
     cmd_forward, true,
     "Run the model forward: x (and y for a cinn) -> z, log_det (inn, mlp: also y)."},
    {"inverse", "MODEL",
     (const struct ctl_use[]){
         REQ(CTL_O_Z, "the latent rows"), USE_H(CTL_O_Y, "the observations of a cinn or inn"),
         USE(CTL_O_TOL), USE(CTL_O_MAX_ITER),
         {CTL_O_METHOD, 0, "M", "auto, newton, anderson, broyden or fixed_point", NULL,
          "auto newton anderson broyden fixed_point"},
         FORMAT("json csv", "json (default) or csv (columns: the x names, log_det)"),
         USE(CTL_O_OUT), END},
     cmd_inverse, true, "Invert the model: z (and y for cinn/inn) -> x, log_det."},
    {"log-prob", "MODEL",
     (const struct ctl_use[]){REQ(CTL_O_X, "the points"),
                              USE_H(CTL_O_Y, "the observations (cinn, inn)"),
                              FORMAT("json csv", "json (default) or csv"), USE(CTL_O_OUT), END},
     cmd_log_prob, true,
     "Log-density log p(x) / log q(x | y) in the units of x; one y row is broadcast."},
    {"preimage", "MODEL",
     (const struct ctl_use[]){
         REQ(CTL_O_TARGET, NULL), USE_H(CTL_O_Y, "the observation of a cinn"),
         {CTL_O_METHOD, 0, NULL, "search method", "gradient", "gradient evolutionary"},
         USE(CTL_O_NUM_SOLUTIONS), USE(CTL_O_MAX_STEPS),
         {CTL_O_SEED, 0, NULL, "seed of the search (deterministic)", "1", NULL},
         USE(CTL_O_LOW), USE(CTL_O_HIGH),
         FORMAT("json csv", "json (default) or csv (columns target, rank, the x names, "
                "residual)"),
         USE(CTL_O_OUT), END},
     cmd_preimage, true,
     "Find many x with f(x) ~= target (any model kind, above all mlp surrogates)."},
    {"certificate", "MODEL", (const struct ctl_use[]){USE(CTL_O_JSON), END}, cmd_certificate,
     true, "Is the network invertible, and why: per-block reasons and Lipschitz bounds."},
    {"health", "", (const struct ctl_use[]){USE(CTL_O_LIVE), USE(CTL_O_QUIET), END}, cmd_health,
     true, "Exit 0 when the daemon is ready (GET /readyz), 2 when it answers not ready (503), "
     "3 when it cannot be reached."},
    {"metrics", "", (const struct ctl_use[]){USE(CTL_O_OUT), END}, cmd_metrics, true,
     "Print the Prometheus metrics text."},
    {"calibrate", "MODEL",
     (const struct ctl_use[]){
         USE_H(CTL_O_X, "ground-truth parameters x*, one row per pair"),
         USE_H(CTL_O_Y, "their simulated observations, one row per pair (omit for a flow)"),
         USE(CTL_O_PAIRS),
         {CTL_O_N, 0, "L", "posterior samples per pair", "100", NULL}, USE(CTL_O_SEED),
         USE(CTL_O_DIAGNOSTICS), USE(CTL_O_BINS), USE(CTL_O_COVERAGE_POINTS),
         USE(CTL_O_CONFIDENCE), USE(CTL_O_TARP_REFERENCES), USE(CTL_O_TARP_BINS),
         USE(CTL_O_NO_Z_SCORE), USE(CTL_O_TOL), USE(CTL_O_MAX_ITER),
         {CTL_O_METHOD, 0, "M", "auto, newton, anderson, broyden or fixed_point", NULL,
          "auto newton anderson broyden fixed_point"},
         USE(CTL_O_ASYNC), USE(CTL_O_PROGRESS),
         JSON_H("print the daemon's JSON answer instead of the report"), USE(CTL_O_OUT), END},
     cmd_calibrate, true,
     "Check the calibration of a posterior on pairs (x*, y) from your simulator: SBC rank "
     "statistics, expected coverage (HPD and central intervals) and TARP, as sbi defines "
     "them. Runs as a job of the daemon and waits for it, with a progress bar on stderr when "
     "that is a terminal."},
    {"mmd", "MODEL",
     (const struct ctl_use[]){
         USE_H(CTL_O_Y, "the observation, one row (omit for a flow)"),
         REQ(CTL_O_REFERENCE, NULL), {CTL_O_N, 0, NULL, "posterior samples", "1000", NULL},
         USE(CTL_O_SEED), USE(CTL_O_TEMPERATURE), USE(CTL_O_SCALES),
         {CTL_O_ESTIMATOR, 0, NULL, NULL, NULL, "unbiased biased"}, USE(CTL_O_PERMUTATIONS),
         USE(CTL_O_TOL), USE(CTL_O_MAX_ITER),
         {CTL_O_METHOD, 0, "M", "auto, newton, anderson, broyden or fixed_point", NULL,
          "auto newton anderson broyden fixed_point"},
         USE(CTL_O_ASYNC), USE(CTL_O_PROGRESS),
         JSON_H("print the daemon's JSON answer instead of the report"), USE(CTL_O_OUT), END},
     cmd_mmd, true,
     "MMD^2 between the model's posterior for y and reference samples of the true posterior "
     "(inverse multiquadric kernel), with its permutation p-value. Runs as a job of the "
     "daemon and waits for it, with a progress bar on stderr when that is a terminal."},
    {"jobs", "", (const struct ctl_use[]){USE(CTL_O_JSON), END}, cmd_jobs, true,
     "List the daemon's jobs: id, state, operation, model, progress. Jobs live in the "
     "daemon's memory only; finished ones are kept for the daemon's job TTL."},
    {"job", "ID",
     (const struct ctl_use[]){
         USE(CTL_O_WAIT), USE(CTL_O_CANCEL),
         USE_H(CTL_O_PROGRESS, "with --wait: draw the progress bar on standard error even "
               "when it is not a terminal"),
         JSON_H("print the daemon's JSON job object"),
         USE_H(CTL_O_OUT, "write the result or the job to FILE (needed for npy on a "
               "terminal)"), END},
     cmd_job, true,
     "Show a job: state, progress, times. --wait waits for it (a progress bar on stderr "
     "when that is a terminal) and prints its result as the synchronous request would have "
     "answered it (JSON, CSV or NPY); --cancel stops it, or forgets a finished one."},
    {"inspect", "FILE",
     (const struct ctl_use[]){
         JSON_H("print the metadata JSON the daemon answers to GET /v1/models/MODEL for this "
                "file (MODEL and version named as the daemon names them; load_ms is this "
                "load's)"),
         END},
     cmd_inspect, false,
     "Offline: describe a checkpoint file (manifest, dims, names, parameter count, blocks, "
     "invertibility certificate, self-test). Exit 4 when the file is invalid or its test "
     "vectors fail."},
    {"verify", "FILE...",
     (const struct ctl_use[]){USE_H(CTL_O_QUIET, "print only the failures"),
                              JSON_H("print the verdicts as JSON"), END},
     cmd_verify, false,
     "Offline: load each checkpoint and run its embedded test vectors through the engine "
     "(forward, inverse, log-det). Prints PASS or FAIL per file; exit 0 when all pass, 4 "
     "otherwise."},
    {"help", "[COMMAND]", (const struct ctl_use[]){USE(CTL_O_ROFF), END}, cmd_help, false,
     "Show the general help, or a command's."},
};

#define NCMDS (sizeof(cmds) / sizeof(cmds[0]))

static int cmd_help(struct ctl_args *o)
{
    if (o->roff) {
        if (o->npos)
            return usage_error("help --roff takes no COMMAND");
        ctl_roff(stdout, cmds, NCMDS);
        return EX_OK;
    }
    if (o->npos == 0) {
        ctl_help_general(stdout, cmds, NCMDS);
        return EX_OK;
    }
    const struct ctl_cmd *c = ctl_find_cmd(cmds, NCMDS, o->pos[0]);
    if (!c)
        return usage_error("unknown command '%s' (see 'innctl --help')", o->pos[0]);
    ctl_help_cmd(stdout, c);
    return EX_OK;
}

int main(int argc, char **argv)
{
    struct ctl_args o;
    const struct ctl_cmd *c = NULL;
    char err[512];
    if (ctl_parse(argc, argv, cmds, NCMDS, &o, &c, err, sizeof err) != CTL_PARSE_OK)
        return usage_error("%s", err);
    if (o.version) {
        printf("innctl %s\n", CTL_VERSION);
        return EX_OK;
    }
    if (!c) {
        ctl_help_general(o.help ? stdout : stderr, cmds, NCMDS);
        return o.help ? EX_OK : EX_USAGE;
    }
    if (o.help) {
        ctl_help_cmd(stdout, c);
        return EX_OK;
    }
    if (o.token_file) {
        char terr[CTL_HTTP_ERR_LEN];
        if (!(o.token = ctl_http_read_token(o.token_file, terr)))
            return usage_error("%s", terr);
    }
    ctl_http_global_init();
    int ex = c->run(&o);
    ctl_http_global_cleanup();
    free(o.token);
    return ex;
}
