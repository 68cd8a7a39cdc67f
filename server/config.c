/*
 * config.c — flags, INNSERVE_* variables and --help (config.h).
 *
 * One table describes every option: its flag, its environment variable (derived:
 * INNSERVE_ + upper-case name, '-' -> '_'), its kind, where it is stored and its help
 * line.  Sizes take K/M/G suffixes (powers of 1024); durations in seconds take ms/s.
 */
#include "config.h"
#include "log.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* K_FLAG: a switch; on the command line it takes no value (--flag, or --flag=on|off), its
 * variable takes on|off. */
enum kind { K_STR, K_INT, K_LONG, K_SIZE, K_SECS, K_BOOL, K_FLAG, K_LEVEL, K_DOUBLE, K_UINT };

struct opt {
    const char *name;  /* flag without "--" */
    enum kind kind;
    size_t off;        /* offset in struct srv_config */
    double lo, hi;     /* numeric range */
    const char *help;
    const char *arg;   /* the value's name in --help; NULL: from the kind (N, SIZE, ...) */
};

#define OFF(f) offsetof(struct srv_config, f)

static const struct opt OPTS[] = {
    {"models", K_STR, OFF(models), 0, 0, "model repository: NAME.safetensors or "
     "NAME/<version>/model.safetensors (highest version served)", "DIR"},
    {"allow-empty", K_FLAG, OFF(allow_empty), 0, 0, "an empty model repository is intended: "
     "/readyz answers 200 with no models (without it, not ready until a model is READY)", NULL},
    {"host", K_STR, OFF(host), 0, 0, "address to bind; 0.0.0.0 or :: in containers", "ADDR"},
    {"port", K_INT, OFF(port), 0, 65535, "TCP port; 0 picks a free one and logs it in the "
     "\"listening\" line", NULL},
    {"workers", K_INT, OFF(workers), 0, 1024, "compute threads; 0 = CPUs available (affinity "
     "and cgroup quota)", NULL},
    {"http-threads", K_INT, OFF(http_threads), 0, 256, "libmicrohttpd epoll threads; 0 = "
     "min(CPUs, 4)", NULL},
    {"queue", K_INT, OFF(queue), 1, 1000000, "jobs waiting for a worker before new ones get "
     "503 + Retry-After", NULL},
    {"deadline-ms", K_LONG, OFF(deadline_ms), 1, 86400000, "per-request deadline from arrival; "
     "past it the answer is 504", NULL},
    {"drain-timeout", K_SECS, OFF(drain_timeout_s), 0, 86400, "SIGTERM/SIGINT: how long "
     "in-flight requests may take to finish before they are cancelled (seconds, or 500ms)", NULL},
    {"conn-timeout", K_UINT, OFF(conn_timeout_s), 0, 86400, "close connections idle (or "
     "sending a body) this long, in seconds; 0 = never", NULL},
    {"max-connections", K_INT, OFF(max_connections), 1, 1000000, "concurrent connections; "
     "more are accepted and closed at once, not left waiting in the listen backlog", NULL},
    {"max-connections-per-ip", K_INT, OFF(max_conn_per_ip), 0, 1000000, "concurrent "
     "connections from one client address, more are closed at once; 0 = no limit (behind a "
     "proxy every connection has the proxy's address)", NULL},
    {"header-timeout", K_SECS, OFF(header_timeout_s), 0, 86400, "a request line and headers "
     "must arrive within this many seconds of the connection's start (on a kept-alive "
     "connection: of the previous answer, plus --conn-timeout), however steadily they "
     "trickle; past it 408 and close; 0 = no deadline", NULL},
    {"body-timeout", K_SECS, OFF(body_timeout_s), 0, 86400, "a request body must arrive "
     "within this many seconds of its headers, however steadily it trickles; past it the "
     "connection is closed; 0 = no deadline", NULL},
    {"retry-after", K_INT, OFF(retry_after_s), 0, 3600, "Retry-After seconds on 503", NULL},
    {"inline-rows", K_LONG, OFF(inline_rows), 0, 1000000, "forward/log_prob requests with at most "
     "this many rows run on the HTTP thread, skipping the queue; 0 turns it off", NULL},
    {"batch-delay-us", K_LONG, OFF(batch_delay_us), 0, 1000000, "dynamic batching: concurrent "
     "forward/log_prob/sample requests of one model wait up to this many microseconds to be "
     "computed as one tile (each answer is the bytes it gets alone); 0 turns it off", NULL},
    {"max-jobs", K_INT, OFF(max_jobs), 1, 1000000, "jobs (async requests) unfinished or kept "
     "at once; past it a new one gets 503 too_many_jobs + Retry-After", NULL},
    {"job-ttl", K_SECS, OFF(job_ttl_s), 0.001, 2592000, "how long a finished job and its "
     "result are kept (seconds, or 500ms); then GET /v1/jobs/ID answers 404", NULL},
    {"job-timeout", K_SECS, OFF(job_timeout_s), 0, 2592000, "a job's deadline from its "
     "submission (jobs are not bound by --deadline-ms); past it the job fails with 504; 0 = "
     "none", NULL},
    {"max-job-bytes", K_SIZE, OFF(max_job_bytes), 1024, 1e13, "bytes of kept job results in "
     "all; a new job past it gets 503 too_many_jobs, a result that would not fit fails the "
     "job with 413", NULL},
    {"log-level", K_LEVEL, OFF(log_level), 0, 0, "error, warn, info or debug", NULL},
    {"access-log", K_BOOL, OFF(access_log), 0, 0, "one JSON line per request on stderr", NULL},
    {"max-body", K_SIZE, OFF(lim.max_body_bytes), 1, 1e12, "request body bytes (413 above)", NULL},
    {"max-depth", K_INT, OFF(lim.max_json_depth), 2, 1000, "JSON nesting depth", NULL},
    {"max-elements", K_LONG, OFF(lim.max_elements), 1, 1e12, "numbers in one input tensor; "
     "a body may hold 2x as many JSON values", NULL},
    {"max-rows", K_INT, OFF(lim.max_rows), 1, 1e9, "rows of x, z or y in one request", NULL},
    {"max-obs", K_INT, OFF(lim.max_obs), 1, 1e9, "observations (rows of y) in one sample "
     "request", NULL},
    {"max-samples", K_LONG, OFF(lim.max_samples), 1, 1e12, "n_obs x num_samples in one "
     "request (413 above)", NULL},
    {"max-response", K_SIZE, OFF(lim.max_response_bytes), 1024, 1e13, "bytes of one answer; "
     "larger ones are refused with 413 (ask for fewer samples or application/x-npy)", NULL},
    {"max-quantiles", K_INT, OFF(lim.max_quantiles), 1, 1000, "quantiles in one summary", NULL},
    {"max-solver-iter", K_INT, OFF(lim.max_solver_iter), 1, 1e9, "max_iter of a numeric "
     "inverse", NULL},
    {"max-preimage-targets", K_INT, OFF(lim.max_preimage_targets), 1, 1e6, "target rows of "
     "one preimage request", NULL},
    {"max-preimage-solutions", K_INT, OFF(lim.max_preimage_solutions), 1, 1e6, "num_solutions "
     "of a preimage request", NULL},
    {"max-preimage-steps", K_INT, OFF(lim.max_preimage_steps), 1, 1e9, "max_steps of a "
     "preimage request", NULL},
    {"max-temperature", K_DOUBLE, OFF(lim.max_temperature), 0, 1e6, "largest sample "
     "temperature", NULL},
    {"kernels", K_STR, OFF(kernels), 0, 0, "compute kernels: auto (the best this CPU runs), "
     "avx512, avx2 or portable; every path gives the same bits", "NAME"},
    {"auth-token-file", K_STR, OFF(auth_token_file), 0, 0, "require 'Authorization: Bearer "
     "TOKEN' on every request; FILE holds the token on one line (SIGHUP re-reads it); "
     "answers without it are 401", "FILE"},
    {"auth-probes", K_STR, OFF(auth_probes), 0, 0, "with --auth-token-file: open (the "
     "health probes /healthz, /readyz, /v2/health/live and /v2/health/ready answer without "
     "the token) or protected (they need it too)", "MODE"},
    {"tls-cert", K_STR, OFF(tls_cert), 0, 0, "serve HTTPS only, with this PEM certificate "
     "(chain); needs --tls-key", "FILE"},
    {"tls-key", K_STR, OFF(tls_key), 0, 0, "PEM private key of --tls-cert (unencrypted)",
     "FILE"},
    {"check", K_STR, OFF(check), 0, 0, "load one checkpoint offline, print its certificate and "
     "test-vector verdict as JSON, exit 0 (ok) or 1", "FILE"},
};

#define N_OPTS (sizeof OPTS / sizeof OPTS[0])

static void defaults(struct srv_config *c)
{
    memset(c, 0, sizeof *c);
    c->models = strdup("models");
    c->host = strdup("127.0.0.1");
    c->port = 8080;
    c->queue = 256;
    c->deadline_ms = 30000;
    c->drain_timeout_s = 30.0;
    c->conn_timeout_s = 30;
    c->max_connections = 1024;
    c->header_timeout_s = 10;
    c->body_timeout_s = 60;
    c->retry_after_s = 1;
    c->batch_delay_us = 100;
    c->max_jobs = 16;
    c->job_ttl_s = 600;
    c->job_timeout_s = 3600;
    c->max_job_bytes = (size_t)256 << 20;
    c->log_level = SRV_LOG_INFO;
    c->access_log = true;
    c->auth_probes = strdup("open");
    c->auth_probes_open = true;
    c->lim = proto_limits_default();
}

void srv_config_free(struct srv_config *c)
{
    free(c->models);
    free(c->host);
    free(c->check);
    free(c->kernels);
    free(c->auth_token_file);
    free(c->auth_probes);
    free(c->tls_cert);
    free(c->tls_key);
    c->models = c->host = c->check = c->kernels = NULL;
    c->auth_token_file = c->auth_probes = c->tls_cert = c->tls_key = NULL;
}

static bool parse_number(const char *s, double *out, double mult_k)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || !isfinite(v))
        return false;
    if (mult_k > 0) {
        if (*end == 'k' || *end == 'K')
            v *= mult_k, end++;
        else if (*end == 'm' || *end == 'M')
            v *= mult_k * mult_k, end++;
        else if (*end == 'g' || *end == 'G')
            v *= mult_k * mult_k * mult_k, end++;
        if (*end == 'i' || *end == 'B' || *end == 'b')
            end++;
        if (*end == 'B' || *end == 'b')
            end++;
    }
    if (*end)
        return false;
    *out = v;
    return true;
}

static bool set_opt(struct srv_config *c, const struct opt *o, const char *val, const char *src,
                    char *err, size_t cap)
{
    char *base = (char *)c;
    double v = 0;
    switch (o->kind) {
    case K_STR: {
        char **dst = (char **)(base + o->off);
        char *d = strdup(val);
        if (!d) {
            snprintf(err, cap, "out of memory");
            return false;
        }
        free(*dst);
        *dst = d;
        return true;
    }
    case K_BOOL:
    case K_FLAG: {
        bool *dst = (bool *)(base + o->off);
        if (!strcasecmp(val, "on") || !strcasecmp(val, "true") || !strcmp(val, "1") ||
            !strcasecmp(val, "yes"))
            *dst = true;
        else if (!strcasecmp(val, "off") || !strcasecmp(val, "false") || !strcmp(val, "0") ||
                 !strcasecmp(val, "no"))
            *dst = false;
        else {
            snprintf(err, cap, "%s: '%s' is not on/off", src, val);
            return false;
        }
        return true;
    }
    case K_LEVEL: {
        int l = srv_log_level_parse(val);
        if (l < 0) {
            snprintf(err, cap, "%s: '%s' is not one of error, warn, info, debug", src, val);
            return false;
        }
        *(int *)(base + o->off) = l;
        return true;
    }
    case K_SECS: {
        size_t n = strlen(val);
        char tmp[64];
        double scale = 1.0;
        if (n >= sizeof tmp) {
            snprintf(err, cap, "%s: value too long", src);
            return false;
        }
        memcpy(tmp, val, n + 1);
        if (n > 2 && !strcmp(tmp + n - 2, "ms")) {
            tmp[n - 2] = 0;
            scale = 1e-3;
        } else if (n > 1 && tmp[n - 1] == 's') {
            tmp[n - 1] = 0;
        }
        if (!parse_number(tmp, &v, 0) || v * scale < o->lo || v * scale > o->hi) {
            snprintf(err, cap, "%s: '%s' is not a duration between %g and %g seconds", src, val,
                     o->lo, o->hi);
            return false;
        }
        *(double *)(base + o->off) = v * scale;
        return true;
    }
    default:
        break;
    }
    if (!parse_number(val, &v, o->kind == K_SIZE ? 1024.0 : 0) || v < o->lo || v > o->hi ||
        (o->kind != K_DOUBLE && v != floor(v))) {
        snprintf(err, cap, "%s: '%s' is not %s between %g and %g", src, val,
                 o->kind == K_DOUBLE ? "a number" : "an integer", o->lo, o->hi);
        return false;
    }
    switch (o->kind) {
    case K_INT: *(int *)(base + o->off) = (int)v; break;
    case K_UINT: *(unsigned *)(base + o->off) = (unsigned)v; break;
    case K_LONG: *(long *)(base + o->off) = (long)v; break;
    case K_SIZE: *(size_t *)(base + o->off) = (size_t)v; break;
    case K_DOUBLE: *(double *)(base + o->off) = v; break;
    default: break;
    }
    return true;
}

static void env_name(const char *flag, char *out, size_t cap)
{
    size_t k = (size_t)snprintf(out, cap, "INNSERVE_");
    for (const char *p = flag; *p && k + 1 < cap; p++)
        out[k++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
    out[k] = 0;
}

/* The authentication and TLS options, once all are read: values and pairs that belong
 * together.  Empty strings (INNSERVE_TLS_CERT= in a unit file) count as unset. */
static bool check_security(struct srv_config *c, char *err, size_t cap)
{
    char **strs[] = {&c->auth_token_file, &c->tls_cert, &c->tls_key};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        if (*strs[i] && !**strs[i]) {
            free(*strs[i]);
            *strs[i] = NULL;
        }
    if (!strcmp(c->auth_probes, "open") || !strcmp(c->auth_probes, "protected")) {
        c->auth_probes_open = !strcmp(c->auth_probes, "open");
    } else {
        snprintf(err, cap, "--auth-probes: '%s' is not open or protected", c->auth_probes);
        return false;
    }
    if (!c->tls_cert != !c->tls_key) {
        snprintf(err, cap, "%s is given without %s: HTTPS needs both the certificate and its "
                 "key", c->tls_cert ? "--tls-cert" : "--tls-key",
                 c->tls_cert ? "--tls-key" : "--tls-cert");
        return false;
    }
    return true;
}

bool srv_config_parse(struct srv_config *c, int argc, char **argv, char *err, size_t cap)
{
    defaults(c);
    if (!c->models || !c->host || !c->auth_probes) {
        snprintf(err, cap, "out of memory");
        return false;
    }
    for (size_t i = 0; i < N_OPTS; i++) {
        char env[64];
        if (OPTS[i].off == OFF(check))
            continue; /* a mode, not a setting: flag only */
        env_name(OPTS[i].name, env, sizeof env);
        const char *v = getenv(env);
        if (v && *v && !set_opt(c, &OPTS[i], v, env, err, cap))
            return false;
    }
    for (int a = 1; a < argc; a++) {
        const char *arg = argv[a];
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
            c->help = true;
            continue;
        }
        if (!strcmp(arg, "--version")) {
            c->version = true;
            continue;
        }
        if (strncmp(arg, "--", 2) != 0) {
            snprintf(err, cap, "unexpected argument '%s' (see --help)", arg);
            return false;
        }
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        const struct opt *o = NULL;
        for (size_t i = 0; i < N_OPTS; i++)
            if (strlen(OPTS[i].name) == nlen && !strncmp(OPTS[i].name, name, nlen))
                o = &OPTS[i];
        if (!o) {
            snprintf(err, cap, "unknown option '%.*s' (see --help)", (int)nlen + 2, arg);
            return false;
        }
        const char *val = eq ? eq + 1 : NULL;
        if (!val && o->kind == K_FLAG)
            val = "on";
        if (!val) {
            if (a + 1 >= argc) {
                snprintf(err, cap, "option --%s needs a value", o->name);
                return false;
            }
            val = argv[++a];
        }
        char src[80];
        snprintf(src, sizeof src, "--%s", o->name);
        if (!set_opt(c, o, val, src, err, cap))
            return false;
    }
    return check_security(c, err, cap);
}

/* The default of option o, formatted as a user would type it, from the defaults themselves
 * (so --help cannot drift from them). */
static void default_str(const struct srv_config *d, const struct opt *o, char *buf, size_t cap)
{
    const char *base = (const char *)d;
    static const char *const levels[] = {"error", "warn", "info", "debug"};
    size_t z;
    int lv;
    switch (o->kind) {
    case K_STR: {
        const char *v = *(char *const *)(base + o->off);
        snprintf(buf, cap, "%s", v ? v : o->off == OFF(kernels) ? "auto" : "");
        break;
    }
    case K_INT: snprintf(buf, cap, "%d", *(const int *)(base + o->off)); break;
    case K_UINT: snprintf(buf, cap, "%u", *(const unsigned *)(base + o->off)); break;
    case K_LONG: snprintf(buf, cap, "%ld", *(const long *)(base + o->off)); break;
    case K_DOUBLE: case K_SECS: snprintf(buf, cap, "%g", *(const double *)(base + o->off)); break;
    case K_BOOL: case K_FLAG:
        snprintf(buf, cap, "%s", *(const bool *)(base + o->off) ? "on" : "off");
        break;
    case K_LEVEL:
        lv = *(const int *)(base + o->off);
        snprintf(buf, cap, "%s", lv >= 0 && lv < 4 ? levels[lv] : "?");
        break;
    case K_SIZE:
        z = *(const size_t *)(base + o->off);
        if (z && z % (1u << 30) == 0)
            snprintf(buf, cap, "%zuG", z >> 30);
        else if (z && z % (1u << 20) == 0)
            snprintf(buf, cap, "%zuM", z >> 20);
        else if (z && z % (1u << 10) == 0)
            snprintf(buf, cap, "%zuK", z >> 10);
        else
            snprintf(buf, cap, "%zu", z);
        break;
    }
}

/* The value's name of option o in --help ("" for a switch). */
static const char *arg_name(const struct opt *o)
{
    if (o->arg)
        return o->arg;
    switch (o->kind) {
    case K_INT: case K_UINT: case K_LONG: return "N";
    case K_SIZE: return "SIZE";
    case K_SECS: return "SECONDS";
    case K_BOOL: return "on|off";
    case K_LEVEL: return "LEVEL";
    case K_DOUBLE: return "X";
    case K_STR: return "VALUE";
    case K_FLAG: return "";
    }
    return "";
}

#define HELP_WIDTH 79   /* columns of --help */
#define HELP_INDENT 29  /* where descriptions start */

/* Prints text from column `col` (the cursor is there), wrapped at word boundaries so that
 * no line passes HELP_WIDTH; continuation lines start at HELP_INDENT.  A word longer than
 * a whole line gets a line of its own.  Ends with a newline. */
static void put_wrapped(FILE *out, int col, const char *text)
{
    const char *p = text;
    bool first = true;
    while (*p) {
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        size_t w = strcspn(p, " ");
        if (!first && col + 1 + (int)w > HELP_WIDTH) {
            fprintf(out, "\n%*s", HELP_INDENT, "");
            col = HELP_INDENT;
            first = true;
        }
        if (!first) {
            fputc(' ', out);
            col++;
        }
        fprintf(out, "%.*s", (int)w, p);
        col += (int)w;
        first = false;
        p += w;
    }
    fputc('\n', out);
}

void srv_config_help(void *out_file)
{
    FILE *out = out_file;
    struct srv_config d;
    defaults(&d);
    fprintf(out,
            "innserve %s — serves invertible neural networks over HTTP (docs/api.md)\n\n"
            "usage: innserve [--models DIR] [--host ADDR] [--port N] [options]\n"
            "       innserve --check FILE\n"
            "       innserve --help | --version\n\n"
            "Every option can also be set by an environment variable INNSERVE_<NAME>\n"
            "(upper case, '-' -> '_', e.g. INNSERVE_MAX_BODY=16M); flags win.\n"
            "Sizes take K/M/G suffixes (x1024).  [default]\n\n",
            SRV_VERSION);
    for (size_t i = 0; i < N_OPTS; i++) {
        const struct opt *o = &OPTS[i];
        char env[64], flag[64], text[512];
        env_name(o->name, env, sizeof env);
        const char *a = arg_name(o);
        snprintf(flag, sizeof flag, "--%s%s%s", o->name, a[0] ? " " : "", a);
        if (o->off == OFF(check)) {
            snprintf(text, sizeof text, "%s", o->help);
        } else {
            char def[64];
            default_str(&d, o, def, sizeof def);
            snprintf(text, sizeof text, "%s [%s]", o->help, def[0] ? def : "unset");
        }
        int col = fprintf(out, "  %-26s ", flag);
        if (col > HELP_INDENT) {
            fprintf(out, "\n%*s", HELP_INDENT, "");
            col = HELP_INDENT;
        }
        put_wrapped(out, col, text);
        if (o->off != OFF(check))
            fprintf(out, "%*senv %s\n", HELP_INDENT + 2, "", env);
    }
    srv_config_free(&d);
    fprintf(out, "  %-26s this text\n  %-26s print the version\n\n", "--help", "--version");
    fprintf(out,
            "Signals: SIGHUP reloads the repository (a model whose new file fails keeps\n"
            "its old version) and re-reads --auth-token-file (a bad file keeps the token in\n"
            "force); SIGTERM/SIGINT drain: /readyz answers 503, new work 503 +\n"
            "Retry-After, in-flight requests finish (up to --drain-timeout), then exit 0.\n"
            "Readiness: /readyz answers 503 until a model is READY (with --allow-empty, an\n"
            "empty repository is ready too).\n"
            "Logs: JSON lines on stderr (events and one access line per request).\n");
}

/* ---- CPUs ----------------------------------------------------------------------------- */

static double cgroup_quota(void)
{
    FILE *f = fopen("/sys/fs/cgroup/cpu.max", "r");
    if (f) {
        char q[32] = "";
        double period = 0;
        int n = fscanf(f, "%31s %lf", q, &period);
        fclose(f);
        if (n == 2 && strcmp(q, "max") != 0 && period > 0) {
            double quota = strtod(q, NULL);
            if (quota > 0)
                return quota / period;
        }
        return 0;
    }
    f = fopen("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "r");
    if (!f)
        return 0;
    double quota = -1, period = 0;
    if (fscanf(f, "%lf", &quota) != 1)
        quota = -1;
    fclose(f);
    f = fopen("/sys/fs/cgroup/cpu/cpu.cfs_period_us", "r");
    if (f) {
        if (fscanf(f, "%lf", &period) != 1)
            period = 0;
        fclose(f);
    }
    return quota > 0 && period > 0 ? quota / period : 0;
}

int srv_cpu_count(void)
{
    int n = 1;
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0)
        n = CPU_COUNT(&set);
    double q = cgroup_quota();
    if (q > 0 && ceil(q) < n)
        n = (int)ceil(q);
    return n < 1 ? 1 : n;
}
