/*
 * ctl_opts.h — innctl's one table of options: every option's name, type, field of struct
 * ctl_args, limits, default, environment variable and help sentence, and the command
 * descriptions (struct ctl_cmd: operands, the options each takes, per-command wording;
 * innctl.c holds the command table).  Parsing,
 * `innctl --help`, `innctl COMMAND --help` and the manual page from SYNOPSIS to ENVIRONMENT
 * (`innctl help --roff`, from which docs/man/innctl.1 is made) are all produced from these
 * tables; no option is spelled anywhere else.
 */
#ifndef INNSERVE_CTL_OPTS_H
#define INNSERVE_CTL_OPTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#define CTL_MAX_POS 64

/* Every option innctl knows; CTL_O_NONE ends a command's list of uses. */
enum ctl_opt_id {
    CTL_O_NONE,
    /* global */
    CTL_O_URL, CTL_O_TOKEN_FILE, CTL_O_CACERT, CTL_O_TIMEOUT, CTL_O_RETRIES, CTL_O_HELP,
    CTL_O_VERSION,
    /* inputs */
    CTL_O_X, CTL_O_Y, CTL_O_Z, CTL_O_TARGET, CTL_O_REFERENCE, CTL_O_TARP_REFERENCES, CTL_O_PAIRS,
    /* sampling */
    CTL_O_N, CTL_O_SEED, CTL_O_TEMPERATURE, CTL_O_SUMMARY, CTL_O_LOG_PROB, CTL_O_RESIMULATION,
    CTL_O_QUANTILES,
    /* numeric inverse and preimage */
    CTL_O_TOL, CTL_O_MAX_ITER, CTL_O_METHOD, CTL_O_NUM_SOLUTIONS, CTL_O_MAX_STEPS, CTL_O_LOW,
    CTL_O_HIGH,
    /* diagnostics */
    CTL_O_DIAGNOSTICS, CTL_O_BINS, CTL_O_COVERAGE_POINTS, CTL_O_CONFIDENCE, CTL_O_TARP_BINS,
    CTL_O_NO_Z_SCORE, CTL_O_SCALES, CTL_O_ESTIMATOR, CTL_O_PERMUTATIONS,
    /* jobs */
    CTL_O_ASYNC, CTL_O_WAIT, CTL_O_CANCEL, CTL_O_PROGRESS,
    /* output */
    CTL_O_FORMAT, CTL_O_OUT, CTL_O_JSON, CTL_O_QUIET, CTL_O_LIVE, CTL_O_ROFF,
    CTL_O_COUNT
};

/* Every value innctl's commands read.  Strings point into argv or the environment (not
 * owned) except token, read from token_file (owned: free it).  given[id] says the option
 * was on the command line or came from its variable; a default does not set it. */
struct ctl_args {
    const char *cmd;
    const char *url, *token_file, *cacert;
    char *token;
    double timeout;
    long retries;
    bool help, version;
    const char *x, *y, *z, *target, *reference, *tarp_references, *pairs;
    long n;
    unsigned long long seed;
    double temperature;
    bool summary, log_prob, resim;
    const char *quantiles;
    double tol;
    long max_iter;
    const char *method;
    long num_solutions, max_steps;
    const char *low, *high;
    const char *diagnostics;
    long bins, coverage_points, tarp_bins;
    double confidence;
    bool no_z_score;
    const char *scales, *estimator;
    long permutations;
    bool async, wait, cancel, progress;
    const char *format, *out;
    bool json, quiet, live, roff;
    bool given[CTL_O_COUNT];
    const char *pos[CTL_MAX_POS];
    int npos;
};

enum ctl_type {
    CTL_FLAG,   /* bool; takes no value */
    CTL_STR,    /* const char * */
    CTL_DOUBLE, /* double in [lo, hi] */
    CTL_LONG,   /* long in [lo, hi] */
    CTL_U64     /* unsigned long long (seeds: all 64 bits) */
};

struct ctl_opt {
    const char *name;  /* long name without "--" */
    char short_name;   /* -n, -o, -h; 0 for none */
    enum ctl_type type;
    size_t off;        /* field of struct ctl_args */
    double lo, hi;     /* CTL_DOUBLE, CTL_LONG: accepted range, inclusive */
    const char *arg;   /* the value's name in help (ROWS, N, FILE...); NULL for flags */
    const char *def;   /* default, parsed as if given (NULL: none, or per command) */
    const char *env;   /* variable read when the option is not given, or NULL */
    bool global;       /* accepted before or after any command */
    const char *help;  /* one sentence, no final full stop; may say "(default X)" itself */
};

/* The table, indexed by enum ctl_opt_id. */
const struct ctl_opt *ctl_opt(enum ctl_opt_id id);

#define CTL_REQUIRED 1u /* the command fails without it (a usage error) */

/* How one command uses one option; NULL members take the option's own. */
struct ctl_use {
    enum ctl_opt_id id;
    unsigned flags;
    const char *arg;     /* value's name in this command's usage and help (json|csv) */
    const char *help;    /* this command's help sentence for the option */
    const char *def;     /* this command's default, parsed as if given */
    const char *choices; /* space-separated values allowed here; NULL: any */
};

struct ctl_cmd {
    const char *name;
    const char *operands;        /* "MODEL", "FILE...", "[COMMAND]" or "" */
    const struct ctl_use *uses;  /* ends with id CTL_O_NONE */
    int (*run)(struct ctl_args *);
    bool online;                 /* talks to the daemon: the global options apply */
    const char *help;            /* sentences; the first one is its line in --help */
};

enum ctl_parse_rc {
    CTL_PARSE_OK,      /* *cmd set (NULL: no command given) */
    CTL_PARSE_USAGE,   /* err holds the message */
};

/* Parses argv into a (zeroed first), then applies variables and defaults to the options
 * not given: the global ones and those *cmd uses.  Checks types, ranges and choices. */
enum ctl_parse_rc ctl_parse(int argc, char **argv, const struct ctl_cmd *cmds, size_t ncmds,
                            struct ctl_args *a, const struct ctl_cmd **cmd, char *err,
                            size_t cap);

const struct ctl_cmd *ctl_find_cmd(const struct ctl_cmd *cmds, size_t ncmds, const char *name);

/* `innctl --help`: synopsis, commands with their first sentence, global options. */
void ctl_help_general(FILE *f, const struct ctl_cmd *cmds, size_t ncmds);

/* `innctl COMMAND --help`: usage line, help, the command's options. */
void ctl_help_cmd(FILE *f, const struct ctl_cmd *c);

/* The manual page from SYNOPSIS to ENVIRONMENT in roff (man macros): synopsis,
 * description, global options, commands, exit status, variables. */
void ctl_roff(FILE *f, const struct ctl_cmd *cmds, size_t ncmds);

#endif
