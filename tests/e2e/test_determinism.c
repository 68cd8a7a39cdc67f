/*
 * test_determinism.c — the same request gives the same bytes whatever runs underneath it:
 *
 *   (a) every kernel path this CPU has (INNSERVE_KERNELS=avx512|avx2|portable, from the
 *       /proc/cpuinfo flags engine/kern.c requires); the daemon must say which one runs (its
 *       log, /metrics or a model's metadata: "kernel" and "avx2" on one line), so a path
 *       that is silently ignored fails;
 *   (b) every OpenBLAS core type the CPU can run (OPENBLAS_CORETYPE unset, Haswell,
 *       SkylakeX, Prescott);
 *   (c) --workers 1 and 2;
 *   (d) row i of a request is the same bytes as row i of a request with more rows, and
 *       sample i of num_samples 1, 3, 300 is sample i of num_samples 1000 (same seed; tiles
 *       are 256 rows; models wider than 16 columns, the image models, use 30 rows and
 *       30, 10, 3, 1 samples);
 *   (e) one y row broadcast over every x/z row gives the same bytes as y given per row.
 *
 * Requests: forward, inverse (not for an mdn), log_prob and sample for every model of models/ (the demo
 * models) and tests/fixtures/golden, and an i-ResNet flow written by ckptw.h; preimage
 * (gradient and evolutionary) for the mlp models. Bodies are
 * compared byte for byte (nothing is stripped). The reference is the daemon with
 * INNSERVE_KERNELS and OPENBLAS_CORETYPE unset and 2 workers; each daemon of (a)-(c) gets
 * its variables in its own environment (this process's environment is left alone), and
 * (d)-(e) are checked inside every daemon's answers.
 */
#include "ckptw.h"
#include "e2eutil.h"

#include <dirent.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { ROWS = 300, MAX_REQ = 2048, MAX_SHOWN = 2 };
/* Models wider than this (the image models) get 30 rows and samples at most instead of 300
 * and 1000: a numerically inverted 64-wide i-ResNet takes ~30 ms per row, and crossing the
 * 256-row tiles is checked on the narrow models. */
enum { WIDE = 16, WIDE_ROWS = 30 };

/* ---- the requests ---------------------------------------------------------------------- */

struct req {
    char label[160]; /* "model op rows=N" */
    char path[160];
    char *body;
    int prefix_of;   /* index of the larger request this one is a prefix of, or -1 */
    int depth;       /* 1: rows are the first array level; 2: samples (per observation) */
    int same_as;     /* index of a request that must answer the same bytes, or -1 */
};

static struct req REQ[MAX_REQ];
static int NREQ;
static char DIR_[256];

struct sb {
    char *p;
    size_t n, cap;
};

static void sb_printf(struct sb *s, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int k = vsnprintf(s->p ? s->p + s->n : NULL, s->p ? s->cap - s->n : 0, fmt, ap);
        va_end(ap);
        if (s->p && (size_t)k < s->cap - s->n) {
            s->n += (size_t)k;
            return;
        }
        s->cap = 2 * (s->cap + (size_t)k + 64);
        s->p = realloc(s->p, s->cap);
        ck_assert(s->p != NULL);
    }
}

/* Input value (which, row, col): three decimals in [-1.5, 1.5], the same in every request. */
static double val(int which, int row, int col)
{
    uint64_t z = ((uint64_t)which << 48) ^ ((uint64_t)row << 16) ^ (uint64_t)col;
    z = (z + 0x9E3779B97F4A7C15ull) * 0xBF58476D1CE4E5B9ull;
    z ^= z >> 31;
    return ((double)(z % 3001) - 1500.0) / 1000.0;
}

/* "name":[[...],...] with `rows` rows of `cols` values; row0 >= 0 repeats that one row. */
static void sb_rows(struct sb *s, const char *name, int which, int rows, int cols, int row0)
{
    sb_printf(s, "\"%s\":[", name);
    for (int r = 0; r < rows; r++) {
        sb_printf(s, r ? ",[" : "[");
        for (int c = 0; c < cols; c++)
            sb_printf(s, c ? ",%.3f" : "%.3f", val(which, row0 >= 0 ? row0 : r, c));
        sb_printf(s, "]");
    }
    sb_printf(s, "]");
}

static int add(const char *model, const char *op, const char *label, char *body)
{
    ck_assert(NREQ < MAX_REQ);
    struct req *q = &REQ[NREQ];
    snprintf(q->label, sizeof q->label, "%s %s %s", model, op, label);
    snprintf(q->path, sizeof q->path, "/v1/models/%s/%s", model, op);
    q->body = body;
    q->prefix_of = q->same_as = -1;
    q->depth = 1;
    return NREQ++;
}

/* forward / inverse / log_prob with in_dim columns of `in` (and y when cond), for 300, 3
 * and 1 rows, plus y broadcast vs y repeated per row. */
static void add_rows_op(const char *model, const char *op, const char *in, int in_dim,
                        int y_dim, bool wide)
{
    const int rows[] = {wide ? WIDE_ROWS : ROWS, 3, 1};
    int big = -1;
    for (int k = 0; k < 3; k++) {
        struct sb s = {0};
        sb_printf(&s, "{");
        sb_rows(&s, in, 1, rows[k], in_dim, -1);
        if (y_dim) {
            sb_printf(&s, ",");
            sb_rows(&s, "y", 2, rows[k], y_dim, -1);
        }
        sb_printf(&s, "}");
        char label[32];
        snprintf(label, sizeof label, "rows=%d", rows[k]);
        int i = add(model, op, label, s.p);
        if (k == 0)
            big = i;
        else
            REQ[i].prefix_of = big;
    }
    if (!y_dim)
        return;
    struct sb a = {0}, b = {0};
    sb_printf(&a, "{");
    sb_rows(&a, in, 1, rows[0], in_dim, -1);
    sb_printf(&a, ",");
    sb_rows(&a, "y", 2, 1, y_dim, 5);
    sb_printf(&a, "}");
    sb_printf(&b, "{");
    sb_rows(&b, in, 1, rows[0], in_dim, -1);
    sb_printf(&b, ",");
    sb_rows(&b, "y", 2, rows[0], y_dim, 5);
    sb_printf(&b, "}");
    int ia = add(model, op, "rows=N y broadcast", a.p);
    int ib = add(model, op, "rows=N y per row", b.p);
    REQ[ib].same_as = ia;
}

static void add_model(const cJSON *m)
{
    const char *name = cJSON_GetObjectItem(m, "name")->valuestring;
    const char *kind = cJSON_GetObjectItem(m, "kind")->valuestring;
    const cJSON *d = cJSON_GetObjectItem(m, "dims");
    int dx = cJSON_GetObjectItem(d, "x")->valueint, dy = cJSON_GetObjectItem(d, "y")->valueint,
        dz = cJSON_GetObjectItem(d, "z")->valueint;
    bool cinn = !strcmp(kind, "cinn"), inn = !strcmp(kind, "inn"), mdn = !strcmp(kind, "mdn");
    bool wide = dx > WIDE;
    if (!mdn) /* a mixture density network has no forward or inverse map */
        add_rows_op(name, "forward", "x", dx, cinn ? dy : 0, wide);
    if (!strcmp(kind, "mlp")) {
        static const char *const method[] = {"gradient", "evolutionary"};
        for (int k = 0; k < 2; k++) {
            struct sb s = {0};
            sb_printf(&s, "{\"method\":\"%s\",\"num_solutions\":2,\"max_steps\":40,"
                          "\"seed\":3,", method[k]);
            sb_rows(&s, "target", 3, 2, dy, -1);
            sb_printf(&s, "}");
            add(name, "preimage", method[k], s.p);
        }
        return;
    }
    if (!mdn)
        add_rows_op(name, "inverse", "z", dz, cinn || inn ? dy : 0, wide);
    add_rows_op(name, "log_prob", "x", dx, cinn || inn || mdn ? dy : 0, wide);
    const int ns[] = {wide ? WIDE_ROWS : 1000, wide ? 10 : 300, 3, 1};
    int big = -1;
    for (int k = 0; k < 4; k++) {
        struct sb s = {0};
        sb_printf(&s, "{\"num_samples\":%d,\"seed\":7,\"outputs\":[\"samples\",\"log_prob\"]", ns[k]);
        if (cinn || inn || mdn) {
            sb_printf(&s, ",");
            sb_rows(&s, "y", 2, 2, dy, -1);
        }
        sb_printf(&s, "}");
        char label[32];
        snprintf(label, sizeof label, "num_samples=%d", ns[k]);
        int i = add(name, "sample", label, s.p);
        REQ[i].depth = 2;
        if (k == 0)
            big = i;
        else
            REQ[i].prefix_of = big;
    }
}

/* ---- raw JSON: spans of the answer's text, so comparisons are of bytes ------------------- */

static const char *ws(const char *p, const char *e)
{
    while (p < e && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    return p;
}

/* End of the JSON value starting at p. */
static const char *skip(const char *p, const char *e)
{
    int depth = 0;
    bool str = false;
    for (; p < e; p++) {
        if (str) {
            if (*p == '\\')
                p++;
            else if (*p == '"')
                str = false;
            if (!str && depth == 0)
                return p + 1;
            continue;
        }
        if (*p == '"')
            str = true;
        else if (*p == '[' || *p == '{')
            depth++;
        else if (*p == ']' || *p == '}') {
            if (--depth == 0)
                return p + 1;
            if (depth < 0)
                return p;
        } else if (depth == 0 && (*p == ',' || *p == ' ' || *p == '\n'))
            return p;
    }
    return p;
}

struct span {
    const char *p;
    size_t n;
};

/* The elements of an array (or the "key":value members of an object, as key spans in kv
 * when it is non-NULL). Returns their count (at most max), -1 when v is not that container. */
static int items(struct span v, char open, struct span *out, struct span *kv, int max)
{
    const char *p = ws(v.p, v.p + v.n), *e = v.p + v.n;
    if (p >= e || *p != open)
        return -1;
    int n = 0;
    p = ws(p + 1, e);
    while (p < e && *p != (open == '[' ? ']' : '}')) {
        if (kv) {
            const char *k = p;
            p = skip(p, e);
            if (n < max)
                kv[n] = (struct span){k + 1, (size_t)(p - k - 2)};
            p = ws(p, e);
            p = ws(p + 1, e); /* ':' */
        }
        const char *s = p;
        p = skip(p, e);
        if (n < max)
            out[n] = (struct span){s, (size_t)(p - s)};
        n++;
        p = ws(p, e);
        if (p < e && *p == ',')
            p = ws(p + 1, e);
    }
    return n;
}

static bool span_eq(struct span a, struct span b)
{
    return a.n == b.n && !memcmp(a.p, b.p, a.n);
}

static bool key_is(struct span k, const char *s)
{
    return k.n == strlen(s) && !memcmp(k.p, s, k.n);
}

/* ---- daemons ----------------------------------------------------------------------------- */

struct cfg {
    const char *kernels;  /* INNSERVE_KERNELS, NULL = unset */
    const char *coretype; /* OPENBLAS_CORETYPE, NULL = unset */
    int workers;
};

static char *cfg_name(const struct cfg *c, char *buf, size_t cap)
{
    snprintf(buf, cap, "INNSERVE_KERNELS=%s OPENBLAS_CORETYPE=%s --workers %d",
             c->kernels ? c->kernels : "(unset)", c->coretype ? c->coretype : "(unset)",
             c->workers);
    return buf;
}

static bool start_cfg(struct e2e_daemon *d, const struct cfg *c)
{
    char k[64], o[64], w[16];
    snprintf(k, sizeof k, c->kernels ? "INNSERVE_KERNELS=%s" : "INNSERVE_KERNELS", c->kernels);
    snprintf(o, sizeof o, c->coretype ? "OPENBLAS_CORETYPE=%s" : "OPENBLAS_CORETYPE",
             c->coretype);
    snprintf(w, sizeof w, "%d", c->workers);
    const char *const env[] = {k, o, NULL};
    /* the deadline is the client's timeout: sanitizer builds on a loaded machine are slow,
     * and this test is about bytes, not time */
    const char *const args[] = {"--workers", w, "--deadline-ms", E2E_STR(E2E_CLIENT_TIMEOUT_S) "000", NULL};
    return e2e_start_env(d, DIR_, args, env);
}

/* Does a line of text say which kernels run ("kernel" and "\"path\"" on one line)? */
static bool says_kernels(const char *text, const char *path)
{
    char q[32];
    snprintf(q, sizeof q, "\"%s\"", path);
    for (const char *l = text; l && *l;) {
        const char *nl = strchr(l, '\n');
        size_t n = nl ? (size_t)(nl - l) : strlen(l);
        char *line = strndup(l, n);
        bool hit = strstr(line, "kernel") && strstr(line, q);
        free(line);
        if (hit)
            return true;
        l = nl ? nl + 1 : NULL;
    }
    return false;
}

/* What went wrong, counted per daemon; the first MAX_SHOWN of each kind are printed. */
enum { E_ERROR, E_REFERENCE, E_PREFIX, E_BROADCAST, NKINDS };
static const char *const KIND[NKINDS] = {
    "errors", "answers differ from the reference daemon's",
    "rows/samples differ from a larger request's (d)", "broadcast-y answers differ (e)"};
static int g_count[NKINDS];

static void report(int kind, const char *cfg, const char *fmt, ...)
{
    if (++g_count[kind] > MAX_SHOWN)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "  DIFF [%s] ", cfg);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
}

/* First difference of two bodies, shown with the text around it. */
static void report_diff(int kind, const char *cfg, const char *what, struct span a, struct span b)
{
    size_t i = 0;
    while (i < a.n && i < b.n && a.p[i] == b.p[i])
        i++;
    size_t from = i > 40 ? i - 40 : 0;
    int la = (int)((a.n - from) < 100 ? a.n - from : 100);
    int lb = (int)((b.n - from) < 100 ? b.n - from : 100);
    report(kind, cfg, "%s: first difference at byte %zu\n        got  ...%.*s\n        want ...%.*s",
           what, i, la, a.p + from, lb, b.p + from);
}

/* (d): the array members (and solver's) of small are the first rows / samples of big's. */
static void check_prefix(const char *cfg, const struct req *q, struct span small, struct span big)
{
    enum { M = 32 };
    struct span ks[M], vs[M], kb[M], vb[M];
    int ns = items(small, '{', vs, ks, M), nb = items(big, '{', vb, kb, M);
    for (int i = 0; i < nb && i < M; i++) {
        if (key_is(kb[i], "solver")) {
            int j = 0;
            while (j < ns && !key_is(ks[j], "solver"))
                j++;
            if (j == ns) {
                report(E_PREFIX, cfg, "%s: no solver object", q->label);
                return;
            }
            check_prefix(cfg, q, vs[j], vb[i]);
            continue;
        }
        if (key_is(kb[i], "shape") || *ws(vb[i].p, vb[i].p + vb[i].n) != '[')
            continue;
        int j = 0;
        while (j < ns && !span_eq(ks[j], kb[i]))
            j++;
        if (j == ns) {
            report(E_PREFIX, cfg, "%s: no \"%.*s\"", q->label, (int)kb[i].n, kb[i].p);
            continue;
        }
        static struct span ob[2048], os[2048], rb[2048], rs[2048];
        int no = 1;
        ob[0] = vb[i], os[0] = vs[j];
        if (q->depth == 2) {
            no = items(vb[i], '[', ob, NULL, 2048);
            if (items(vs[j], '[', os, NULL, 2048) != no) {
                report(E_PREFIX, cfg, "%s: \"%.*s\" has another number of observations",
                       q->label, (int)kb[i].n, kb[i].p);
                continue;
            }
        }
        for (int o = 0; o < no; o++) {
            int nrb = items(ob[o], '[', rb, NULL, 2048), nrs = items(os[o], '[', rs, NULL, 2048);
            if (nrs < 0 || nrs > nrb) {
                report(E_PREFIX, cfg, "%s: \"%.*s\" has %d rows, the larger request %d",
                       q->label, (int)kb[i].n, kb[i].p, nrs, nrb);
                continue;
            }
            for (int r = 0; r < nrs; r++) {
                if (span_eq(rs[r], rb[r]))
                    continue;
                char what[300];
                snprintf(what, sizeof what, "%s: \"%.*s\"[%s%d] differs from the larger request's "
                         "(%s)", q->label, (int)kb[i].n, kb[i].p, q->depth == 2 ? "obs][" : "",
                         r, REQ[q->prefix_of].label);
                report_diff(E_PREFIX, cfg, what, rs[r], rb[r]);
                break;
            }
        }
    }
}

static char **REF;   /* the reference daemon's bodies */
static long *REF_STATUS;
static int REF_BAD;  /* its failures of (d) and (e) */

/* Starts the daemon of c, sends every request, checks (d) and (e) in its answers and, when
 * ref is given, compares each body with ref's. Returns the number of mismatches. */
static int run_cfg(const struct cfg *c, char ***bodies_out, char **ref)
{
    memset(g_count, 0, sizeof g_count);
    char name[160];
    cfg_name(c, name, sizeof name);
    struct e2e_daemon d;
    if (!start_cfg(&d, c)) {
        fprintf(stderr, "  FAIL %s: the daemon did not start (log above)\n", name);
        return 1;
    }
    if (c->kernels) {
        struct e2e_resp m, info;
        e2e_get(&d, "/metrics", &m);
        e2e_get(&d, "/v1/models/ik_cinn", &info);
        char *log = tu_slurp(d.log, NULL);
        if (!says_kernels(log, c->kernels) && !says_kernels(m.body, c->kernels) &&
            !says_kernels(info.body, c->kernels))
            report(E_ERROR, name, "neither the daemon's log, /metrics nor /v1/models/ik_cinn says "
                   "it runs the %s kernels (\"kernel\" and \"%s\" on one line): is "
                   "INNSERVE_KERNELS honoured?", c->kernels, c->kernels);
        free(log);
        e2e_resp_free(&m);
        e2e_resp_free(&info);
    }
    char **body = calloc((size_t)NREQ, sizeof *body);
    long *status = calloc((size_t)NREQ, sizeof *status);
    for (int i = 0; i < NREQ; i++) {
        struct e2e_resp r;
        e2e_post(&d, REQ[i].path, REQ[i].body, &r);
        status[i] = r.status;
        /* a model's numeric_error (input outside its range) is an answer too: its bytes are
         * compared like the others; any other error is a broken test */
        if (r.status != 200 && (ref ? r.status != REF_STATUS[i]
                                    : r.status != 422 || !strstr(r.body, "numeric_error"))) {
            report(E_ERROR, name, "%s: status %ld: %.300s", REQ[i].label, r.status, r.body);
        }
        body[i] = r.body;
        r.body = NULL;
        e2e_resp_free(&r);
    }
    int st = e2e_stop(&d, SIGTERM, 60);
    if (st != 0) {
        report(E_ERROR, name, "the daemon exited %d (log %s)", st, d.log);
    }
    for (int i = 0; i < NREQ; i++) {
        struct span b = {body[i], strlen(body[i])};
        if (REQ[i].prefix_of >= 0 && status[i] == 200 && status[REQ[i].prefix_of] == 200)
            check_prefix(name, &REQ[i], b,
                                (struct span){body[REQ[i].prefix_of], strlen(body[REQ[i].prefix_of])});
        if (REQ[i].same_as >= 0 && strcmp(body[i], body[REQ[i].same_as])) {
            char what[300];
            snprintf(what, sizeof what, "%.200s vs broadcast", REQ[i].label);
            report_diff(E_BROADCAST, name, what, b,
                        (struct span){body[REQ[i].same_as], strlen(body[REQ[i].same_as])});
        }
        if (ref && strcmp(body[i], ref[i])) {
            char what[300];
            snprintf(what, sizeof what, "%.200s vs the reference daemon", REQ[i].label);
            report_diff(E_REFERENCE, name, what, b, (struct span){ref[i], strlen(ref[i])});
        }
    }
    if (bodies_out) {
        *bodies_out = body;
        REF_STATUS = status;
    } else {
        free(status);
        for (int i = 0; i < NREQ; i++)
            free(body[i]);
        free(body);
    }
    int bad = 0;
    for (int k = 0; k < NKINDS; k++)
        bad += g_count[k];
    fprintf(stderr, "  %s %s", bad ? "FAIL" : "ok  ", name);
    for (int k = 0, first = 1; k < NKINDS; k++)
        if (g_count[k]) {
            fprintf(stderr, "%s%d %s", first ? ": " : ", ", g_count[k], KIND[k]);
            first = 0;
        }
    fprintf(stderr, "\n");
    return bad;
}

/* ---- what the machine has ------------------------------------------------------------------ */

static bool cpu_flag(const char *flag)
{
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[8192];
    bool has = false;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "flags", 5)) {
            for (char *t = strtok(strchr(line, ':') + 1, " \n"); t; t = strtok(NULL, " \n"))
                has |= !strcmp(t, flag);
            break;
        }
    if (f)
        fclose(f);
    return has;
}

/* Kernel paths this CPU runs, fastest first; portable always (engine/kern.c's cpu_has). */
static int kernel_paths(const char **out)
{
    int n = 0;
    if (cpu_flag("avx512f") && cpu_flag("avx2") && cpu_flag("fma"))
        out[n++] = "avx512";
    if (cpu_flag("avx2") && cpu_flag("fma"))
        out[n++] = "avx2";
    out[n++] = "portable";
    return n;
}

/* OpenBLAS core types this CPU runs (x86-64). */
static int coretypes(const char **out)
{
    int n = 0;
    if (cpu_flag("avx2") && cpu_flag("fma"))
        out[n++] = "Haswell";
    if (cpu_flag("avx512f") && cpu_flag("avx512bw") && cpu_flag("avx512dq") && cpu_flag("avx512vl"))
        out[n++] = "SkylakeX";
    if (cpu_flag("pni"))
        out[n++] = "Prescott";
    return n;
}

static void print_list(const char *what, const char **v, int n)
{
    fprintf(stderr, "determinism: %s compared with the reference:", what);
    for (int i = 0; i < n; i++)
        fprintf(stderr, " %s", v[i]);
    fprintf(stderr, "%s\n", n ? "" : " none");
}

/* ---- fixture ------------------------------------------------------------------------------- */

static void copy_file(const char *src, const char *rel)
{
    size_t n;
    char *b = tu_slurp(src, &n);
    ck_assert_msg(b != NULL, "cannot read %s", src);
    e2e_write_file(DIR_, rel, b, n);
    free(b);
}

static const struct cfg REFERENCE = {NULL, NULL, 2};

static void setup(void)
{
    e2e_mkdtemp(DIR_);
    int n;
    char **names = e2e_fixture_names(&n);
    ck_assert_msg(n >= 10, "golden fixtures missing (%d)", n);
    char src[512], rel[300];
    for (int i = 0; i < n; i++) {
        snprintf(rel, sizeof rel, "%s.safetensors", names[i]);
        e2e_copy_fixture(DIR_, names[i], rel);
        free(names[i]);
    }
    free(names);
    const char *demo = getenv("INNSERVE_DEMO_MODELS") ? getenv("INNSERVE_DEMO_MODELS") : "models";
    DIR *dd = opendir(demo);
    ck_assert_msg(dd != NULL, "no demo models in %s (run from the repository root)", demo);
    int ndemo = 0;
    for (struct dirent *de; (de = readdir(dd));) {
        size_t l = strlen(de->d_name);
        if (l > 12 && !strcmp(de->d_name + l - 12, ".safetensors")) {
            snprintf(src, sizeof src, "%s/%s", demo, de->d_name);
            copy_file(src, de->d_name);
            ndemo++;
        }
    }
    closedir(dd);
    ck_assert_msg(ndemo >= 4, "only %d demo models in %s", ndemo, demo);
    snprintf(src, sizeof src, "%s/ires_e2e.safetensors", DIR_);
    ckw_iresnet_flow(src, 4, 8, 0.5, 1);

    /* the requests, from the models the daemon lists */
    struct e2e_daemon d;
    ck_assert(start_cfg(&d, &REFERENCE));
    struct e2e_resp r;
    e2e_get(&d, "/v1/models", &r);
    ck_assert_int_eq(r.status, 200);
    const cJSON *m;
    int nm = 0;
    cJSON_ArrayForEach(m, cJSON_GetObjectItem(r.json, "models")) {
        ck_assert_msg(!strcmp(cJSON_GetObjectItem(m, "state")->valuestring, "READY"),
                      "model not READY: %s", r.body);
        add_model(m);
        nm++;
    }
    e2e_resp_free(&r);
    ck_assert_int_eq(e2e_stop(&d, SIGTERM, 30), 0);
    fprintf(stderr, "determinism: %d models, %d requests per daemon\n", nm, NREQ);
    REF_BAD = run_cfg(&REFERENCE, &REF, NULL);
    int ne = 0;
    for (int i = 0; i < NREQ; i++)
        ne += REF_STATUS[i] != 200;
    fprintf(stderr, "determinism: %d requests answer 422 numeric_error in the reference "
            "(input outside the model's range; compared as bytes too)\n", ne);
}

static void teardown(void)
{
    for (int i = 0; REF && i < NREQ; i++)
        free(REF[i]);
    free(REF);
    free(REF_STATUS);
    for (int i = 0; i < NREQ; i++)
        free(REQ[i].body);
}

/* ---- tests --------------------------------------------------------------------------------- */

START_TEST(every_kernel_path)
{
    const char *k[4];
    int nk = kernel_paths(k);
    print_list("kernel paths (INNSERVE_KERNELS)", k, nk);
    ck_assert_msg(nk >= 2 || !cpu_flag("avx2"), "an AVX2 CPU has at least two kernel paths");
    int bad = 0;
    for (int i = 0; i < nk; i++)
        bad += run_cfg(&(struct cfg){k[i], NULL, 2}, NULL, REF);
    ck_assert_msg(bad == 0, "%d differences between kernel paths (see DIFF above)", bad);
}
END_TEST

START_TEST(every_openblas_coretype)
{
    /* under the engine's own choice of kernels (a forced path is what every_kernel_path
     * compares; the portable one is slow, so it is not crossed with every core type) */
    const char *c[4];
    int nc = coretypes(c);
    print_list("OPENBLAS_CORETYPE values", c, nc);
    int bad = 0;
    for (int j = 0; j < nc; j++)
        bad += run_cfg(&(struct cfg){NULL, c[j], 2}, NULL, REF);
    ck_assert_msg(bad == 0, "%d differences between OpenBLAS core types (see DIFF above)", bad);
}
END_TEST

START_TEST(one_and_two_workers)
{
    fprintf(stderr, "determinism: --workers 1 compared with --workers 2 (the reference)\n");
    int bad = run_cfg(&(struct cfg){NULL, NULL, 1}, NULL, REF);
    ck_assert_msg(bad == 0, "%d differences between 1 and 2 workers (see DIFF above)", bad);
}
END_TEST

START_TEST(prefixes_and_broadcast_in_the_reference)
{
    /* (d) and (e), checked on the reference daemon's answers in setup (DIFF lines there) */
    int prefix = 0, same = 0, tiles = 0;
    for (int i = 0; i < NREQ; i++) {
        prefix += REQ[i].prefix_of >= 0;
        same += REQ[i].same_as >= 0;
        tiles += strstr(REQ[i].label, "num_samples=1000") != NULL;
    }
    fprintf(stderr, "determinism: %d prefix pairs, %d broadcast pairs, %d requests of 1000 "
            "samples (4 tiles)\n", prefix, same, tiles);
    ck_assert(prefix > 20 && same > 5 && tiles > 5);
    ck_assert_msg(REF_BAD == 0, "%d answers of the reference daemon are not the bytes of a larger "
                  "request's rows or of the broadcast request (see DIFF above)", REF_BAD);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("determinism");
    TCase *t = tcase_create("bytes");
    tcase_add_unchecked_fixture(t, setup, teardown);
    tcase_set_timeout(t, 600);
    tcase_add_test(t, prefixes_and_broadcast_in_the_reference);
    tcase_add_test(t, every_kernel_path);
    tcase_add_test(t, every_openblas_coretype);
    tcase_add_test(t, one_and_two_workers);
    suite_add_tcase(s, t);
    return s;
}

E2E_MAIN
