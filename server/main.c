/*
 * main.c — innserve: start-up, signals, reload and drain; and the offline `--check FILE`.
 *
 * The process-wide state is the one struct srv_ctx below.  Signals are blocked in every
 * thread this program starts and taken synchronously by the main thread (sigtimedwait), so
 * reloads and shutdown run in ordinary code; a handler catches the ones the kernel hands
 * to a thread started before main (OpenBLAS) and the loop picks those up too:
 *   SIGHUP           srv_auth_reload (--auth-token-file), then srv_repo_load: rescan and
 *                    load what changed, swap atomically
 *   SIGTERM, SIGINT  drain: draining = true (readyz 503, new work 503 + Retry-After),
 *                    cancel the unfinished jobs (each logged), wait for calls in flight (up to --drain-timeout), cancel the rest,
 *                    stop the HTTP daemon, join the workers, exit 0
 */
#include "config.h"
#include "http.h"
#include "jobs.h"
#include "log.h"
#include "metrics.h"
#include "pool.h"
#include "repo.h"
#include "server.h"
#include "../proto/response.h"

#include <math.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Signals that reach a thread which does not block them — OpenBLAS starts its threads in a
 * library constructor, before main can block anything — land here instead of killing the
 * process; the main loop picks them up within SIGNAL_POLL_NS. */
static atomic_int g_sig_term, g_sig_hup; /* lock-free: safe in a handler, across threads */
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "signal flags need lock-free atomics");
#define SIGNAL_POLL_NS 100000000L

static void on_signal(int s)
{
    if (s == SIGHUP)
        atomic_store(&g_sig_hup, 1);
    else
        atomic_store(&g_sig_term, s);
}

/* Next signal for the main loop: taken synchronously (sigtimedwait) or noted by on_signal. */
static int next_signal(const sigset_t *sigs)
{
    for (;;) {
        siginfo_t si;
        struct timespec ts = {0, SIGNAL_POLL_NS};
        int s = sigtimedwait(sigs, &si, &ts);
        if (s > 0)
            return s;
        if ((s = atomic_exchange(&g_sig_term, 0)) != 0)
            return s;
        if (atomic_exchange(&g_sig_hup, 0))
            return SIGHUP;
    }
}

/* --check FILE: JSON verdict on stdout. */
static int check_file(const char *path)
{
    char err[ENG_ERR_LEN] = "";
    struct eng_model *m = NULL;
    int64_t t0 = srv_now_ns();
    enum eng_status st = eng_model_load(path, &m, err);
    double load_ms = (double)(srv_now_ns() - t0) * 1e-6;
    struct proto_buf b;
    proto_buf_init(&b, 0);
    proto_buf_puts(&b, "{\"file\":");
    proto_buf_json_str(&b, path);
    bool ok = st == ENG_OK;
    char verr[ENG_ERR_LEN] = "";
    if (!ok) {
        snprintf(verr, sizeof verr, "%s", err);
        /* the file may still be readable without its test vectors: show what we can */
        if (st == ENG_ERR_TESTVEC &&
            eng_model_load_ex(path, ENG_LOAD_NO_SELFTEST, &m, err) != ENG_OK)
            m = NULL;
    }
    proto_buf_printf(&b, ",\"ok\":%s,\"test_vectors\":", ok ? "true" : "false");
    if (ok)
        proto_buf_puts(&b, "\"pass\"");
    else if (st == ENG_ERR_TESTVEC)
        proto_buf_puts(&b, "\"fail\"");
    else
        proto_buf_puts(&b, "\"not run\"");
    if (!ok) {
        proto_buf_puts(&b, ",\"error\":");
        proto_buf_json_str(&b, verr);
        proto_buf_printf(&b, ",\"status\":\"%s\"", eng_status_str(st));
    }
    if (m) {
        const struct eng_info *info = eng_model_info(m);
        struct proto_model_id id = {path, "-", info->sha256};
        proto_buf_puts(&b, ",\"model\":");
        proto_write_metadata(&b, &id, info, eng_model_certificate(m), load_ms);
        b.len--; /* drop the newline */
        proto_buf_puts(&b, ",\"certificate\":");
        proto_write_certificate(&b, &id, eng_model_certificate(m));
        b.len--;
        eng_model_unref(m);
    }
    proto_buf_puts(&b, "}\n");
    if (!proto_buf_failed(&b))
        fwrite(b.p, 1, b.len, stdout);
    proto_buf_free(&b);
    return ok ? 0 : 1;
}

/* After a repository pass (the first, or a SIGHUP reload that `failed` models failed): the
 * first pass logs "ready" when the daemon is ready, a reload logs "reloaded"; a pass after
 * which /readyz answers 503 (no model READY, an unreadable or empty directory) logs
 * "not_ready" (warn) with the message and reasons /readyz gives. */
static void log_pass(struct srv_ctx *ctx, bool first, int failed)
{
    int ready, loading, unav;
    srv_repo_counts(ctx->repo, &ready, &loading, &unav);
    struct proto_buf reasons;
    proto_buf_init(&reasons, 0);
    char msg[1024];
    bool ok = srv_repo_ready(ctx->repo, ctx->cfg->allow_empty, msg, sizeof msg, &reasons);
    char counts[160];
    snprintf(counts, sizeof counts, "\"models_ready\":%d,\"models_unavailable\":%d,"
             "\"failed\":%d", ready, unav, failed);
    if (!first)
        srv_log_line(SRV_LOG_INFO, "reloaded", counts);
    else if (ok)
        srv_log_line(SRV_LOG_INFO, "ready", counts);
    if (!ok) {
        struct proto_buf f;
        proto_buf_init(&f, 0);
        proto_buf_puts(&f, counts);
        proto_buf_puts(&f, ",\"msg\":");
        proto_buf_json_str(&f, msg);
        proto_buf_puts(&f, ",\"reasons\":");
        if (!proto_buf_failed(&reasons) && reasons.len)
            proto_buf_put(&f, reasons.p, reasons.len);
        else
            proto_buf_puts(&f, "[]");
        proto_buf_putc(&f, 0);
        srv_log_line(SRV_LOG_WARN, "not_ready", proto_buf_failed(&f) ? counts : f.p);
        proto_buf_free(&f);
    }
    proto_buf_free(&reasons);
}

static void log_listening(const struct srv_config *cfg, int port, int workers, int threads)
{
    struct proto_buf b;
    proto_buf_init(&b, 0);
    proto_buf_puts(&b, "\"host\":");
    proto_buf_json_str(&b, cfg->host);
    proto_buf_printf(&b, ",\"port\":%d,\"workers\":%d,\"http_threads\":%d,\"queue\":%d,"
                     "\"deadline_ms\":%ld,\"batch_delay_us\":%ld,\"kernels\":\"%s\",\"tls\":%s,"
                     "\"auth\":\"%s\",\"models\":", port, workers, threads, cfg->queue,
                     cfg->deadline_ms, cfg->batch_delay_us, eng_kernels(NULL),
                     cfg->tls_cert ? "true" : "false",
                     !cfg->auth_token_file ? "off" : cfg->auth_probes_open ? "probes open"
                     : "everything");
    proto_buf_json_str(&b, cfg->models);
    proto_buf_putc(&b, 0);
    if (!proto_buf_failed(&b))
        srv_log_line(SRV_LOG_INFO, "listening", b.p);
    proto_buf_free(&b);
}

static void drain(struct srv_ctx *ctx, double timeout_s)
{
    atomic_store(&ctx->draining, true);
    /* jobs do not outlive the process: each unfinished one is cancelled now and logged
     * (job_cancelled), so no drain waits for hours of queued work */
    int nj = srv_jobs_cancel_all(ctx->jobs);
    if (nj)
        srv_logf(SRV_LOG_WARN, "jobs_cancelled", "%d unfinished job(s) cancelled by the "
                 "shutdown (jobs do not survive a restart)", nj);
    srv_logf(SRV_LOG_INFO, "draining", "waiting up to %.1f s for %d request(s) in flight",
             timeout_s, atomic_load(&ctx->calls_active));
    int64_t end = srv_now_ns() + (int64_t)(timeout_s * 1e9);
    while (atomic_load(&ctx->calls_active) > 0 && srv_now_ns() < end)
        usleep(2000);
    if (atomic_load(&ctx->calls_active) > 0) {
        srv_logf(SRV_LOG_WARN, "drain_timeout", "cancelling %d request(s) still in flight",
                 atomic_load(&ctx->calls_active));
        srv_pool_cancel_all(ctx->pool);
        /* cancelled calls answer 503 at once; give their responses a moment to go out */
        int64_t grace = srv_now_ns() + 2000000000LL;
        while (atomic_load(&ctx->calls_active) > 0 && srv_now_ns() < grace)
            usleep(2000);
    }
}

int main(int argc, char **argv)
{
    struct srv_config cfg;
    char err[512];
    if (!srv_config_parse(&cfg, argc, argv, err, sizeof err)) {
        fprintf(stderr, "innserve: %s\n", err);
        srv_config_free(&cfg);
        return 2;
    }
    if (cfg.help) {
        srv_config_help(stdout);
        srv_config_free(&cfg);
        return 0;
    }
    if (cfg.version) {
        printf("innserve %s\n", SRV_VERSION);
        srv_config_free(&cfg);
        return 0;
    }
    eng_blas_threads(1);
    {
        /* the engine reads INNSERVE_KERNELS when it loads a model: the flag sets it */
        if (cfg.kernels && setenv("INNSERVE_KERNELS", cfg.kernels, 1) != 0) {
            fprintf(stderr, "innserve: cannot set INNSERVE_KERNELS\n");
            srv_config_free(&cfg);
            return 2;
        }
        char kerr[ENG_ERR_LEN];
        if (!eng_kernels(kerr)) {
            fprintf(stderr, "innserve: %s\n", kerr);
            srv_config_free(&cfg);
            return 2;
        }
    }
    if (cfg.check) {
        int rc = check_file(cfg.check);
        srv_config_free(&cfg);
        return rc;
    }
    srv_log_init((enum srv_level)cfg.log_level, cfg.access_log);

    /* all threads inherit this mask; the main thread takes the signals synchronously */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGHUP);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    struct srv_ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.cfg = &cfg;
    ctx.lim = cfg.lim;
    atomic_init(&ctx.draining, false);
    atomic_init(&ctx.calls_active, 0);
    int workers = cfg.workers > 0 ? cfg.workers : srv_cpu_count();
    int rc = 1;
    struct srv_http *http = NULL;
    ctx.metrics = srv_metrics_new();
    ctx.pool = srv_pool_new(workers, cfg.queue, (int64_t)cfg.batch_delay_us * 1000, ENG_TILE_ROWS);
    ctx.repo = ctx.metrics ? srv_repo_new(cfg.models, ctx.metrics) : NULL;
    ctx.jobs = srv_jobs_new(&ctx);
    if (!ctx.metrics || !ctx.pool || !ctx.repo || !ctx.jobs) {
        srv_logf(SRV_LOG_ERROR, "startup_failed", "out of memory or cannot start threads");
        goto out;
    }
    if (cfg.auth_token_file && !(ctx.auth = srv_auth_new(cfg.auth_token_file, err,
                                                         sizeof err))) {
        srv_logf(SRV_LOG_ERROR, "startup_failed", "%s", err);
        goto out;
    }
    http = srv_http_start(&ctx, err, sizeof err);
    if (!http) {
        srv_logf(SRV_LOG_ERROR, "startup_failed", "%s", err);
        goto out;
    }
    int threads = cfg.http_threads ? cfg.http_threads
                                   : (srv_cpu_count() < 4 ? srv_cpu_count() : 4);
    log_listening(&cfg, srv_http_port(http), workers, threads);
    log_pass(&ctx, true, srv_repo_load(ctx.repo));
    for (;;) {
        int s = next_signal(&sigs);
        if (s == SIGHUP) {
            if (atomic_load(&ctx.draining))
                continue;
            if (ctx.auth) {
                if (srv_auth_reload(ctx.auth, err, sizeof err))
                    srv_logf(SRV_LOG_INFO, "auth_token_reloaded", "SIGHUP: re-read %s",
                             cfg.auth_token_file);
                else
                    srv_logf(SRV_LOG_ERROR, "auth_token_reload_failed", "%s; the previous "
                             "token stays in force", err);
            }
            srv_logf(SRV_LOG_INFO, "reload", "SIGHUP: rescanning %s", cfg.models);
            log_pass(&ctx, false, srv_repo_load(ctx.repo));
            continue;
        }
        srv_logf(SRV_LOG_INFO, "shutdown", "%s received", s == SIGTERM ? "SIGTERM" : "SIGINT");
        break;
    }
    drain(&ctx, cfg.drain_timeout_s);
    rc = 0;
out:
    srv_http_stop(http);
    srv_pool_free(ctx.pool);
    srv_jobs_free(ctx.jobs); /* after the pool: no call completes any more */
    srv_repo_free(ctx.repo);
    srv_metrics_free(ctx.metrics);
    srv_auth_free(ctx.auth);
    if (rc == 0)
        srv_logf(SRV_LOG_INFO, "exit", "bye");
    srv_config_free(&cfg);
    return rc;
}
