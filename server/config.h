/*
 * config.h — every setting of the daemon, from command-line flags and INNSERVE_*
 * environment variables (flags win), with the defaults of docs/api.md.  `innserve --help`
 * prints the table this module is built from.
 */
#ifndef INNSERVE_SERVER_CONFIG_H
#define INNSERVE_SERVER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "../proto/limits.h"

#define SRV_VERSION "0.1.0"

struct srv_config {
    char *models;          /* --models DIR */
    bool allow_empty;      /* --allow-empty: ready with no models when the directory is empty */
    char *host;            /* --host */
    int port;              /* --port (0: ephemeral) */
    int workers;           /* --workers (0: CPUs, cgroup quota aware) */
    int http_threads;      /* --http-threads (0: automatic) */
    int queue;             /* --queue: jobs waiting for a worker before 503 */
    long deadline_ms;      /* --deadline-ms: per-request deadline (504) */
    double drain_timeout_s;/* --drain-timeout */
    unsigned conn_timeout_s; /* --conn-timeout: idle / slow-body connection timeout */
    int max_connections;   /* --max-connections: more are refused (accepted, closed) */
    int max_conn_per_ip;   /* --max-connections-per-ip (0: no limit) */
    double header_timeout_s; /* --header-timeout: request line + headers deadline (0: none) */
    double body_timeout_s; /* --body-timeout: whole-body deadline (0: none) */
    int retry_after_s;     /* --retry-after: Retry-After on 503 */
    long inline_rows;      /* --inline-rows: run tiny jobs on the HTTP thread */
    long batch_delay_us;   /* --batch-delay-us: dynamic batching window (0: off) */
    int max_jobs;          /* --max-jobs: jobs unfinished or kept before new ones get 503 */
    double job_ttl_s;      /* --job-ttl: how long a finished job is kept */
    double job_timeout_s;  /* --job-timeout: a job's deadline from submission (0: none) */
    size_t max_job_bytes;  /* --max-job-bytes: bytes of the results of kept jobs */
    int log_level;         /* --log-level */
    bool access_log;       /* --access-log on|off */
    struct proto_limits lim; /* --max-* */
    char *check;           /* --check FILE: offline verdict, then exit */
    char *kernels;         /* --kernels auto|avx512|avx2|portable (INNSERVE_KERNELS) */
    char *auth_token_file; /* --auth-token-file: bearer token required (NULL: no auth) */
    char *auth_probes;     /* --auth-probes open|protected: health probes without the token */
    bool auth_probes_open; /* auth_probes == "open" */
    char *tls_cert;        /* --tls-cert PEM file (with --tls-key: HTTPS only) */
    char *tls_key;         /* --tls-key PEM file */
    bool help, version;
};

/* Fills cfg from defaults, then INNSERVE_* variables, then argv.  On a bad value returns
 * false with a message in err.  Strings in cfg are owned: srv_config_free. */
bool srv_config_parse(struct srv_config *cfg, int argc, char **argv, char *err, size_t cap);
void srv_config_free(struct srv_config *cfg);
/* The --help text on out. */
void srv_config_help(void *out_file);
/* Number of CPUs this process may use: the affinity mask, capped by the cgroup CPU quota
 * (cgroup v2 cpu.max, or v1 cfs_quota_us / cfs_period_us), at least 1. */
int srv_cpu_count(void);

#endif
