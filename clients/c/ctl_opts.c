/*
 * ctl_opts.c — innctl's option table, its parser and the help and manual-page text made
 * from it (ctl_opts.h).
 */
#include "ctl_opts.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define OFF(f) offsetof(struct ctl_args, f)
#define WIDTH 79   /* help text wraps here */
#define COL 18     /* an option's help starts in this column */

static const struct ctl_opt OPTS[CTL_O_COUNT] = {
    [CTL_O_URL] = {"url", 0, CTL_STR, OFF(url), 0, 0, "URL", "http://127.0.0.1:8080",
                   "INNSERVE_URL", true, "daemon address; https://... for a daemon started "
                   "with --tls-cert"},
    [CTL_O_TOKEN_FILE] = {"token-file", 0, CTL_STR, OFF(token_file), 0, 0, "FILE", NULL,
                          "INNSERVE_TOKEN_FILE", true, "send the bearer token FILE holds (one "
                          "line) to a daemon started with --auth-token-file"},
    [CTL_O_CACERT] = {"cacert", 0, CTL_STR, OFF(cacert), 0, 0, "FILE", NULL, "INNSERVE_CACERT",
                      true, "trust the CA certificate(s) of this PEM file for https instead "
                      "of the system's CA store"},
    [CTL_O_TIMEOUT] = {"timeout", 0, CTL_DOUBLE, OFF(timeout), 0.001, 1e6, "S", "60", NULL,
                       true, "seconds allowed for each request"},
    [CTL_O_RETRIES] = {"retries", 0, CTL_LONG, OFF(retries), 0, 100, "N", "2", NULL, true,
                       "retries of transient 429/503 answers (overloaded, draining, still "
                       "loading; not a model that failed to load), honouring Retry-After"},
    [CTL_O_HELP] = {"help", 'h', CTL_FLAG, OFF(help), 0, 0, NULL, NULL, NULL, true,
                    "help; 'innctl COMMAND --help' for a command"},
    [CTL_O_VERSION] = {"version", 0, CTL_FLAG, OFF(version), 0, 0, NULL, NULL, NULL, true,
                       "print the version"},

    [CTL_O_X] = {"x", 0, CTL_STR, OFF(x), 0, 0, "ROWS", NULL, NULL, false, "the inputs x"},
    [CTL_O_Y] = {"y", 0, CTL_STR, OFF(y), 0, 0, "ROWS", NULL, NULL, false,
                 "observations, one row each"},
    [CTL_O_Z] = {"z", 0, CTL_STR, OFF(z), 0, 0, "ROWS", NULL, NULL, false, "the latent rows"},
    [CTL_O_TARGET] = {"target", 0, CTL_STR, OFF(target), 0, 0, "ROWS", NULL, NULL, false,
                      "the targets: y for mlp and inn models, z for flow and cinn models"},
    [CTL_O_REFERENCE] = {"reference", 0, CTL_STR, OFF(reference), 0, 0, "ROWS", NULL, NULL,
                         false, "samples of the true posterior, one row each"},
    [CTL_O_TARP_REFERENCES] = {"tarp-references", 0, CTL_STR, OFF(tarp_references), 0, 0,
                               "ROWS", NULL, NULL, false, "TARP reference points, one per "
                               "pair (default: uniform in the box of the x rows)"},
    [CTL_O_PAIRS] = {"pairs", 0, CTL_STR, OFF(pairs), 0, 0, "ROWS", NULL, NULL, false,
                     "x* and y side by side, one pair per row (dims.x + dims.y columns, as "
                     "the model's metadata says), instead of --x and --y"},

    [CTL_O_N] = {"n", 'n', CTL_LONG, OFF(n), 1, 1e12, "N", NULL, NULL, false,
                 "samples per observation"},
    [CTL_O_SEED] = {"seed", 0, CTL_U64, OFF(seed), 0, 0, "S", NULL, NULL, false,
                    "seed; the same seed gives bit-identical samples"},
    [CTL_O_TEMPERATURE] = {"temperature", 0, CTL_DOUBLE, OFF(temperature), 0, 1e6, "T", NULL,
                           NULL, false, "z ~ N(0, T^2 I) (default 1)"},
    [CTL_O_SUMMARY] = {"summary", 0, CTL_FLAG, OFF(summary), 0, 0, NULL, NULL, NULL, false,
                       "print mean, std, quantiles and MAP per variable instead of samples"},
    [CTL_O_LOG_PROB] = {"log-prob", 0, CTL_FLAG, OFF(log_prob), 0, 0, NULL, NULL, NULL, false,
                        "also return log q(x | y) of every sample"},
    [CTL_O_RESIMULATION] = {"resimulation", 0, CTL_FLAG, OFF(resim), 0, 0, NULL, NULL, NULL,
                            false, "inn: also return the re-simulation error per "
                            "observation"},
    [CTL_O_QUANTILES] = {"quantiles", 0, CTL_STR, OFF(quantiles), 0, 0, "Q,..", NULL, NULL,
                         false, "quantiles of the summary (default 0.05,0.5,0.95)"},

    [CTL_O_TOL] = {"tol", 0, CTL_DOUBLE, OFF(tol), 0, 1e6, "T", NULL, NULL, false,
                   "tolerance of the numerical inverse of i-ResNet blocks"},
    [CTL_O_MAX_ITER] = {"max-iter", 0, CTL_LONG, OFF(max_iter), 1, 1e9, "N", NULL, NULL, false,
                        "iteration limit of the numerical inverse"},
    [CTL_O_METHOD] = {"method", 0, CTL_STR, OFF(method), 0, 0, "M", NULL, NULL, false,
                      "solver of the numerical inverse"},
    [CTL_O_NUM_SOLUTIONS] = {"num-solutions", 0, CTL_LONG, OFF(num_solutions), 1, 1e6, "N",
                             "32", NULL, false, "distinct solutions per target row"},
    [CTL_O_MAX_STEPS] = {"max-steps", 0, CTL_LONG, OFF(max_steps), 1, 1e9, "N", "500", NULL,
                         false, "steps of the search"},
    [CTL_O_LOW] = {"low", 0, CTL_STR, OFF(low), 0, 0, "V,..", NULL, NULL, false,
                   "lower corner of the search box, one value per x (with --high)"},
    [CTL_O_HIGH] = {"high", 0, CTL_STR, OFF(high), 0, 0, "V,..", NULL, NULL, false,
                    "upper corner of the search box, one value per x (with --low)"},

    [CTL_O_DIAGNOSTICS] = {"diagnostics", 0, CTL_STR, OFF(diagnostics), 0, 0, "D,..", NULL,
                           NULL, false, "which of sbc, coverage, tarp (default all three)"},
    [CTL_O_BINS] = {"bins", 0, CTL_LONG, OFF(bins), 1, 1e6, "B", NULL, NULL, false,
                    "bins of the SBC rank histogram (default 20)"},
    [CTL_O_COVERAGE_POINTS] = {"coverage-points", 0, CTL_LONG, OFF(coverage_points), 1, 1e6,
                               "K", NULL, NULL, false, "nominal levels k/K, k = 0..K, of the "
                               "coverage curves (default 20)"},
    [CTL_O_CONFIDENCE] = {"confidence", 0, CTL_DOUBLE, OFF(confidence), 0, 1, "C", NULL, NULL,
                          false, "level of the binomial band around the coverage curves "
                          "(default 0.95)"},
    [CTL_O_TARP_BINS] = {"tarp-bins", 0, CTL_LONG, OFF(tarp_bins), 1, 1e6, "B", NULL, NULL,
                         false, "bins of the TARP curve (default: pairs / 10)"},
    [CTL_O_NO_Z_SCORE] = {"no-z-score", 0, CTL_FLAG, OFF(no_z_score), 0, 0, NULL, NULL, NULL,
                          false, "TARP on the raw x instead of z-scored x"},
    [CTL_O_SCALES] = {"scales", 0, CTL_STR, OFF(scales), 0, 0, "H,..", NULL, NULL, false,
                      "widths of the inverse multiquadric kernel (default 0.05,0.2,0.9)"},
    [CTL_O_ESTIMATOR] = {"estimator", 0, CTL_STR, OFF(estimator), 0, 0, "E", NULL, NULL, false,
                         "unbiased (default) or biased MMD^2 estimate"},
    [CTL_O_PERMUTATIONS] = {"permutations", 0, CTL_LONG, OFF(permutations), 0, 1e6, "P", NULL,
                            NULL, false, "permutations of the p-value; 0: none (default "
                            "200)"},

    [CTL_O_ASYNC] = {"async", 0, CTL_FLAG, OFF(async), 0, 0, NULL, NULL, NULL, false,
                     "submit as a job and print the job (its id) at once"},
    [CTL_O_WAIT] = {"wait", 0, CTL_FLAG, OFF(wait), 0, 0, NULL, NULL, NULL, false,
                    "wait until the job has finished, then print its result"},
    [CTL_O_CANCEL] = {"cancel", 0, CTL_FLAG, OFF(cancel), 0, 0, NULL, NULL, NULL, false,
                      "cancel the job (or forget a finished one)"},
    [CTL_O_PROGRESS] = {"progress", 0, CTL_FLAG, OFF(progress), 0, 0, NULL, NULL, NULL, false,
                        "draw a progress bar on standard error while waiting even when it "
                        "is not a terminal"},

    [CTL_O_FORMAT] = {"format", 0, CTL_STR, OFF(format), 0, 0, "F", NULL, NULL, false,
                      "output format"},
    [CTL_O_OUT] = {"out", 'o', CTL_STR, OFF(out), 0, 0, "FILE", NULL, NULL, false,
                   "write the answer to FILE"},
    [CTL_O_JSON] = {"json", 0, CTL_FLAG, OFF(json), 0, 0, NULL, NULL, NULL, false,
                    "print the daemon's JSON answer"},
    [CTL_O_QUIET] = {"quiet", 0, CTL_FLAG, OFF(quiet), 0, 0, NULL, NULL, NULL, false,
                     "print nothing on success; the exit status says it"},
    [CTL_O_LIVE] = {"live", 0, CTL_FLAG, OFF(live), 0, 0, NULL, NULL, NULL, false,
                    "check liveness (GET /healthz) instead"},
    [CTL_O_ROFF] = {"roff", 0, CTL_FLAG, OFF(roff), 0, 0, NULL, NULL, NULL, false,
                    "print the manual page's GLOBAL OPTIONS and COMMANDS sections in roff"},
};

/* What --help and the manual page say about innctl besides its options. */
static const char DESCRIPTION[] =
    "Client for the innserve daemon (INN inference over HTTP): it lists the models, draws "
    "posterior samples, runs models forward and backward, computes densities, searches "
    "preimages, reads certificates, health and metrics, and prints the answers as readable "
    "text or as the daemon's JSON, CSV or NPY. inspect and verify work offline on checkpoint "
    "files, without a daemon. Options may come before or after the command; a value follows "
    "its option as the next argument or after '='.";
static const char ROWS[] =
    "ROWS: '1.5,0' (one row), '1,2;3,4' (rows), '[[1,2],[3,4]]' (JSON), '@file' (a CSV or "
    "JSON file) or '-' (standard input).";
static const struct {
    int code;
    const char *meaning;
} EXITS[] = {
    {0, "success"},
    {1, "usage error: unknown command or option, a missing or bad value, unreadable input"},
    {2, "the daemon answered with an HTTP error (status, code and message on stderr), or "
        "health found it not ready"},
    {3, "the daemon cannot be reached (connection refused, name not resolved, timeout)"},
    {4, "inspect, verify: a checkpoint is invalid or its test vectors fail"},
    {5, "internal error (out of memory, an unparsable answer)"},
};

const struct ctl_opt *ctl_opt(enum ctl_opt_id id)
{
    return id > CTL_O_NONE && id < CTL_O_COUNT ? &OPTS[id] : NULL;
}

/* ---- parsing ---------------------------------------------------------------------------- */

static enum ctl_parse_rc fail(char *err, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static enum ctl_parse_rc fail(char *err, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
    return CTL_PARSE_USAGE;
}

static const struct ctl_use *find_use(const struct ctl_cmd *c, enum ctl_opt_id id)
{
    for (const struct ctl_use *u = c ? c->uses : NULL; u && u->id != CTL_O_NONE; u++)
        if (u->id == id)
            return u;
    return NULL;
}

/* "--name" for an option that has a long form shown, else "-n". */
static void flag_name(const struct ctl_opt *o, char *buf, size_t cap)
{
    if (o->short_name && o->type != CTL_FLAG)
        snprintf(buf, cap, "-%c", o->short_name);
    else
        snprintf(buf, cap, "--%s", o->name);
}

/* Stores val (NULL for a flag) into a's field of option o. */
static enum ctl_parse_rc store(struct ctl_args *a, const struct ctl_opt *o, const char *val,
                               char *err, size_t cap)
{
    char *field = (char *)a + o->off;
    char fn[40];
    flag_name(o, fn, sizeof fn);
    char *end;
    errno = 0;
    switch (o->type) {
    case CTL_FLAG:
        *(bool *)field = true;
        break;
    case CTL_STR:
        *(const char **)field = val;
        break;
    case CTL_DOUBLE: {
        double v = strtod(val, &end);
        if (end == val || *end || errno || !isfinite(v))
            return fail(err, cap, "%s: '%s' is not a number", fn, val);
        if (v < o->lo || v > o->hi)
            return fail(err, cap, "%s: %s is outside [%g, %g]", fn, val, o->lo, o->hi);
        *(double *)field = v;
        break;
    }
    case CTL_LONG: {
        long v = strtol(val, &end, 10);
        if (end == val || *end || errno)
            return fail(err, cap, "%s: '%s' is not an integer", fn, val);
        if ((double)v < o->lo || (double)v > o->hi)
            return fail(err, cap, "%s: %s is outside [%.0f, %.0f]", fn, val, o->lo, o->hi);
        *(long *)field = v;
        break;
    }
    case CTL_U64: {
        if (*val == '-')
            return fail(err, cap, "%s: '%s' must be >= 0", fn, val);
        unsigned long long v = strtoull(val, &end, 10);
        if (end == val || *end || errno)
            return fail(err, cap, "%s: '%s' is not an integer >= 0", fn, val);
        *(unsigned long long *)field = v;
        break;
    }
    }
    return CTL_PARSE_OK;
}

static bool in_choices(const char *choices, const char *v)
{
    size_t n = strlen(v);
    for (const char *p = choices; n && (p = strstr(p, v)) != NULL; p += n)
        if ((p == choices || p[-1] == ' ') && (p[n] == '\0' || p[n] == ' '))
            return true;
    return false;
}

const struct ctl_cmd *ctl_find_cmd(const struct ctl_cmd *cmds, size_t ncmds, const char *name)
{
    for (size_t i = 0; i < ncmds; i++)
        if (strcmp(cmds[i].name, name) == 0)
            return &cmds[i];
    return NULL;
}

/* The option that argument a names ("--name", "--name=v", "-n"); *val set after '='. */
static const struct ctl_opt *lookup(const char *a, const char **val)
{
    *val = NULL;
    if (a[1] != '-') {
        for (int i = 1; i < CTL_O_COUNT; i++)
            if (OPTS[i].short_name && a[1] == OPTS[i].short_name && !a[2])
                return &OPTS[i];
        return NULL;
    }
    const char *eq = strchr(a + 2, '=');
    size_t len = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
    for (int i = 1; i < CTL_O_COUNT; i++)
        if (strlen(OPTS[i].name) == len && strncmp(OPTS[i].name, a + 2, len) == 0) {
            if (eq)
                *val = eq + 1;
            return &OPTS[i];
        }
    return NULL;
}

enum ctl_parse_rc ctl_parse(int argc, char **argv, const struct ctl_cmd *cmds, size_t ncmds,
                            struct ctl_args *a, const struct ctl_cmd **cmd, char *err,
                            size_t cap)
{
    memset(a, 0, sizeof *a);
    const struct ctl_cmd *c = NULL;
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        bool optlike = s[0] == '-' && s[1] && strcmp(s, "-") != 0 &&
                       !(s[1] >= '0' && s[1] <= '9') && s[1] != '.';
        if (!optlike) {
            if (!c) {
                if (!(c = ctl_find_cmd(cmds, ncmds, s)))
                    return fail(err, cap, "unknown command '%s' (see 'innctl --help')", s);
                a->cmd = c->name;
            } else if (a->npos < CTL_MAX_POS) {
                a->pos[a->npos++] = s;
            } else {
                return fail(err, cap, "too many arguments");
            }
            continue;
        }
        const char *val;
        const struct ctl_opt *o = lookup(s, &val);
        if (!o || (!o->global && (!c || !find_use(c, (enum ctl_opt_id)(o - OPTS))))) {
            int len = (int)strcspn(s, "=");
            return fail(err, cap, "unknown option '%.*s'%s%s (see 'innctl %s%s--help')", len,
                        s, c ? " for " : "", c ? c->name : "", c ? c->name : "", c ? " " : "");
        }
        if (o->type == CTL_FLAG && val)
            return fail(err, cap, "option '--%s' takes no value", o->name);
        if (o->type != CTL_FLAG && !val) {
            if (i + 1 >= argc)
                return fail(err, cap, "option '%s' needs a value", s);
            val = argv[++i];
        }
        if (store(a, o, val, err, cap) != CTL_PARSE_OK)
            return CTL_PARSE_USAGE;
        a->given[o - OPTS] = true;
    }
    /* variables, then defaults, for what was not given */
    for (int i = 1; i < CTL_O_COUNT; i++) {
        const struct ctl_opt *o = &OPTS[i];
        const struct ctl_use *u = find_use(c, (enum ctl_opt_id)i);
        if (a->given[i] || (!o->global && !u))
            continue;
        const char *env = o->env ? getenv(o->env) : NULL;
        if (env && *env) {
            if (store(a, o, env, err, cap) != CTL_PARSE_OK)
                return CTL_PARSE_USAGE;
            a->given[i] = true;
            continue;
        }
        const char *def = u && u->def ? u->def : o->def;
        if (def && store(a, o, def, err, cap) != CTL_PARSE_OK)
            return CTL_PARSE_USAGE;
    }
    for (const struct ctl_use *u = c ? c->uses : NULL; u && u->id != CTL_O_NONE && !a->help;
         u++) {
        const struct ctl_opt *o = &OPTS[u->id];
        char fn[40];
        flag_name(o, fn, sizeof fn);
        if ((u->flags & CTL_REQUIRED) && !a->given[u->id])
            return fail(err, cap, "%s needs %s %s (see 'innctl %s --help')", c->name, fn,
                        u->arg ? u->arg : o->arg, c->name);
        const char *v = o->type == CTL_STR ? *(const char **)((char *)a + o->off) : NULL;
        if (u->choices && v && !in_choices(u->choices, v))
            return fail(err, cap, "%s must be one of: %s (not '%s')", fn, u->choices, v);
    }
    *cmd = c;
    return CTL_PARSE_OK;
}

/* ---- help text ---------------------------------------------------------------------------- */

/* NBSP joins the words of one usage item ("[--y ROWS]"): printed as a space, never broken. */
#define NBSP '\x01'

/* Writes text from column col, wrapping at WIDTH with continuation lines indented to
 * indent; words are separated by spaces (line breaks in text read as spaces).  Returns the
 * column after the last word. */
static int wrap(FILE *f, const char *text, int col, int indent)
{
    bool first = true;
    for (const char *p = text; *p;) {
        while (*p == ' ' || *p == '\n')
            p++;
        size_t w = strcspn(p, " \n");
        if (!w)
            break;
        if (!first && col + 1 + (int)w > WIDTH) {
            fprintf(f, "\n%*s", indent, "");
            col = indent;
        } else if (!first) {
            fputc(' ', f);
            col++;
        }
        for (size_t k = 0; k < w; k++)
            fputc(p[k] == NBSP ? ' ' : p[k], f);
        col += (int)w;
        first = false;
        p += w;
    }
    return col;
}

/* The first sentence of text (up to ". " or the end), into buf. */
static const char *first_sentence(const char *text, char *buf, size_t cap)
{
    size_t end = 0;
    while (text[end] && !(text[end] == '.' && (text[end + 1] == ' ' || !text[end + 1])))
        end++;
    if (text[end])
        end++;
    snprintf(buf, cap, "%.*s", (int)end, text);
    return buf;
}

static const char *use_arg(const struct ctl_use *u, char *buf, size_t cap)
{
    const struct ctl_opt *o = &OPTS[u->id];
    if (u->arg)
        return u->arg;
    if (u->choices && o->type == CTL_STR) {
        snprintf(buf, cap, "%s", u->choices);
        for (char *p = buf; *p; p++)
            if (*p == ' ')
                *p = '|';
        return buf;
    }
    return o->arg;
}

/* "-n N", "--y ROWS", "--json" for one use. */
static void use_label(const struct ctl_use *u, char *buf, size_t cap)
{
    const struct ctl_opt *o = &OPTS[u->id];
    char fn[40], ab[160];
    flag_name(o, fn, sizeof fn);
    const char *arg = o->type == CTL_FLAG ? NULL : use_arg(u, ab, sizeof ab);
    snprintf(buf, cap, "%s%s%s", fn, arg ? " " : "", arg ? arg : "");
}

/* The help sentence of a use, with its default and variable. */
static void use_help(const struct ctl_use *u, char *buf, size_t cap)
{
    const struct ctl_opt *o = &OPTS[u->id];
    const char *h = u->help ? u->help : o->help;
    const char *def = u->def ? u->def : o->def;
    if (strstr(h, "(default") || (!def && !o->env) || o->type == CTL_FLAG)
        snprintf(buf, cap, "%s", h);
    else if (o->env && def)
        snprintf(buf, cap, "%s (default $%s, else %s)", h, o->env, def);
    else if (o->env)
        snprintf(buf, cap, "%s (default $%s)", h, o->env);
    else
        snprintf(buf, cap, "%s (default %s)", h, def);
}

static void option_line(FILE *f, const struct ctl_use *u)
{
    char label[200], help[600];
    use_label(u, label, sizeof label);
    if (u->id == CTL_O_HELP)
        snprintf(label, sizeof label, "-h, --help");
    use_help(u, help, sizeof help);
    fprintf(f, "  %s", label);
    int col = 2 + (int)strlen(label);
    if (col + 1 > COL) {
        fprintf(f, "\n%*s", COL, "");
    } else {
        fprintf(f, "%*s", COL - col, "");
    }
    wrap(f, help, COL, COL);
    fputc('\n', f);
}

/* The usage of c without "innctl ": "sample MODEL [--y ROWS] [-n N] ...". */
static void usage_words(const struct ctl_cmd *c, char *buf, size_t cap)
{
    size_t off = (size_t)snprintf(buf, cap, "%s%s%s", c->name, c->operands[0] ? " " : "",
                                  c->operands);
    for (const struct ctl_use *u = c->uses; u->id != CTL_O_NONE && off < cap; u++) {
        char label[200];
        use_label(u, label, sizeof label);
        bool req = u->flags & CTL_REQUIRED;
        for (char *p = label; *p; p++)
            if (*p == ' ')
                *p = NBSP;
        off += (size_t)snprintf(buf + off, cap - off, " %s%s%s", req ? "" : "[", label,
                                req ? "" : "]");
    }
}

/* The global options with a value, as the synopsis shows them. */
static void synopsis(char *syn, size_t cap)
{
    size_t off = 0;
    syn[0] = '\0';
    for (int i = 1; i < CTL_O_COUNT && off < cap; i++)
        if (OPTS[i].global && OPTS[i].arg)
            off += (size_t)snprintf(syn + off, cap - off, "[--%s %s] ", OPTS[i].name,
                                    OPTS[i].arg);
    if (off < cap)
        snprintf(syn + off, cap - off, "COMMAND [ARGS]");
}

void ctl_help_general(FILE *f, const struct ctl_cmd *cmds, size_t ncmds)
{
    char syn[600];
    synopsis(syn, sizeof syn);
    fprintf(f, "usage: innctl ");
    wrap(f, syn, 14, 14);
    fprintf(f, "\n       innctl --help | --version | COMMAND --help\n\n");
    wrap(f, DESCRIPTION, 0, 0);
    fprintf(f, "\n\nCommands:\n");
    for (size_t i = 0; i < ncmds; i++) {
        char s[400];
        fprintf(f, "  %-12s ", cmds[i].name);
        wrap(f, first_sentence(cmds[i].help, s, sizeof s), 15, 15);
        fputc('\n', f);
    }
    fprintf(f, "\nGlobal options:\n");
    for (int i = 1; i < CTL_O_COUNT; i++)
        if (OPTS[i].global) {
            struct ctl_use u = {(enum ctl_opt_id)i, 0, NULL, NULL, NULL, NULL};
            option_line(f, &u);
        }
    fputc('\n', f);
    wrap(f, ROWS, 0, 0);
    fprintf(f, "\n\nExit codes:\n");
    for (size_t i = 0; i < sizeof EXITS / sizeof EXITS[0]; i++) {
        fprintf(f, "  %d  ", EXITS[i].code);
        wrap(f, EXITS[i].meaning, 5, 5);
        fputc('\n', f);
    }
}

void ctl_help_cmd(FILE *f, const struct ctl_cmd *c)
{
    char usage[1200];
    usage_words(c, usage, sizeof usage);
    fprintf(f, "usage: innctl ");
    wrap(f, usage, 14, 16);
    fprintf(f, "\n\n");
    wrap(f, c->help, 0, 0);
    fputc('\n', f);
    for (const struct ctl_use *u = c->uses; u->id != CTL_O_NONE; u++)
        option_line(f, u);
    if (c->online) {
        fprintf(f, "\nGlobal options:");
        const char *sep = " ";
        for (int i = 1; i < CTL_O_COUNT; i++)
            if (OPTS[i].global && OPTS[i].arg) {
                fprintf(f, "%s--%s", sep, OPTS[i].name);
                sep = ", ";
            }
        fprintf(f, " (see 'innctl --help').\n");
    }
}

/* ---- the manual page ---------------------------------------------------------------------- */

/* Text for roff: '-' and '\' escaped, sentence-final "." kept. */
static void roff_text(FILE *f, const char *s)
{
    for (; *s; s++) {
        if (*s == '-')
            fputs("\\-", f);
        else if (*s == '\\')
            fputs("\\e", f);
        else if (*s == '\n' || *s == NBSP)
            fputc(' ', f);
        else
            fputc(*s, f);
    }
}

/* A paragraph: one sentence per line (no line starts with '.' or '\''). */
static void roff_para(FILE *f, const char *s)
{
    bool start = true;
    for (; *s; s++) {
        if (start && (*s == ' ' || *s == '\n'))
            continue;
        if (start && (*s == '.' || *s == '\''))
            fputs("\\&", f);
        start = false;
        if (*s == '.' && (s[1] == ' ' || s[1] == '\n')) {
            fputs(".\n", f);
            start = true;
            continue;
        }
        char one[2] = {*s == '\n' ? ' ' : *s, 0};
        roff_text(f, one);
    }
    if (!start)
        fputc('\n', f);
}

static void roff_tag(FILE *f, const struct ctl_use *u)
{
    const struct ctl_opt *o = &OPTS[u->id];
    char ab[160];
    fputs(".TP\n", f);
    if (u->id == CTL_O_HELP) {
        fputs("\\fB\\-h\\fR, \\fB\\-\\-help\\fR\n", f);
    } else {
        char fn[40];
        flag_name(o, fn, sizeof fn);
        fputs("\\fB", f);
        roff_text(f, fn);
        fputs("\\fR", f);
        if (o->type != CTL_FLAG) {
            fputs(" \\fI", f);
            roff_text(f, use_arg(u, ab, sizeof ab));
            fputs("\\fR", f);
        }
        fputc('\n', f);
    }
    char help[600];
    use_help(u, help, sizeof help);
    roff_text(f, help);
    fputs(".\n", f);
}

/* roff of a one-line synopsis: options bold, their values italic, the rest roman. */
static void roff_synopsis(FILE *f, const char *syn)
{
    fputs(".B innctl\n", f);
    for (const char *p = syn; *p;) {
        while (*p == ' ')
            p++;
        size_t w = strcspn(p, " ");
        if (!w)
            break;
        char word[200];
        snprintf(word, sizeof word, "%.*s", (int)w, p);
        p += w;
        if (word[0] == '[' && word[1] == '-') {
            /* "[--name" and "VALUE]" */
            fputs(".RB [ ", f);
            roff_text(f, word + 1);
            fputc('\n', f);
            while (*p == ' ')
                p++;
            size_t v = strcspn(p, " ");
            fputs(".IR ", f);
            fprintf(f, "%.*s ]\n", (int)(v && p[v - 1] == ']' ? v - 1 : v), p);
            p += v;
        } else if (strcmp(word, "COMMAND") == 0) {
            fputs(".I COMMAND\n", f);
        } else if (strcmp(word, "[ARGS]") == 0) {
            fputs(".RI [ ARGS ]\n", f);
        }
    }
}

void ctl_roff(FILE *f, const struct ctl_cmd *cmds, size_t ncmds)
{
    char syn[600];
    synopsis(syn, sizeof syn);
    fputs(".SH SYNOPSIS\n", f);
    roff_synopsis(f, syn);
    fputs(".br\n.B innctl\n.BR \\-\\-help \" | \" \\-\\-version\n.br\n.B innctl\n"
          ".I COMMAND\n.B \\-\\-help\n", f);
    fputs(".SH DESCRIPTION\n", f);
    roff_para(f, DESCRIPTION);
    fputs(".PP\n", f);
    roff_para(f, ROWS);
    fputs(".SH GLOBAL OPTIONS\n", f);
    for (int i = 1; i < CTL_O_COUNT; i++)
        if (OPTS[i].global) {
            struct ctl_use u = {(enum ctl_opt_id)i, 0, NULL, NULL, NULL, NULL};
            roff_tag(f, &u);
        }
    fputs(".SH COMMANDS\n", f);
    for (size_t i = 0; i < ncmds; i++) {
        char usage[1200];
        usage_words(&cmds[i], usage, sizeof usage);
        fputs(".SS \"", f);
        roff_text(f, usage);
        fputs("\"\n", f);
        roff_para(f, cmds[i].help);
        for (const struct ctl_use *u = cmds[i].uses; u->id != CTL_O_NONE; u++)
            roff_tag(f, u);
    }
    fputs(".SH EXIT STATUS\n", f);
    for (size_t i = 0; i < sizeof EXITS / sizeof EXITS[0]; i++) {
        fprintf(f, ".TP\n.B %d\n", EXITS[i].code);
        roff_text(f, EXITS[i].meaning);
        fputs(".\n", f);
    }
    fputs(".SH ENVIRONMENT\n", f);
    for (int i = 1; i < CTL_O_COUNT; i++)
        if (OPTS[i].env) {
            fprintf(f, ".TP\n.B %s\n", OPTS[i].env);
            fputs("The value of \\fB", f);
            roff_text(f, "--");
            roff_text(f, OPTS[i].name);
            fputs("\\fR when it is not given.\n", f);
        }
}
