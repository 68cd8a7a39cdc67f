/*
 * repo.c — model repository with atomic reload (repo.h).
 *
 * The table is an array of entries sorted by name, guarded by one mutex.  A reload
 * builds a new array off to the side (loading changed files without holding the lock),
 * then swaps it in under the mutex; old versions are released when their last request
 * finishes.  The initial pass publishes LOADING entries first and fills them in one by
 * one so GET /v1/models shows progress.
 */
#include "repo.h"
#include "log.h"
#include "../proto/response.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

enum state { ST_LOADING = 0, ST_READY, ST_UNAVAILABLE };
static const char *const STATE_NAMES[] = {"LOADING", "READY", "UNAVAILABLE"};

struct entry {
    char *name;
    enum state state;
    struct srv_version *cur; /* serving version or NULL */
    char *reason;            /* why not READY */
    char *reload_error;      /* last reload failure while an old version kept serving */
    /* candidate found by the scan */
    char *path, *version;
    bool ignore;             /* a directory without numeric version subdirectories */
};

struct srv_repo {
    char *dir;
    struct srv_metrics *metrics;
    pthread_mutex_t mu;
    struct entry *e;
    int n;
    bool loaded;
    char *dir_error;         /* why the last scan could not read the directory, or NULL */
};

/* ---- versions ------------------------------------------------------------------------ */

struct srv_version *srv_version_ref(struct srv_version *v)
{
    if (v)
        __atomic_add_fetch(&v->refs, 1, __ATOMIC_RELAXED);
    return v;
}

void srv_version_unref(struct srv_version *v)
{
    if (!v || __atomic_sub_fetch(&v->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    eng_model_unref(v->model);
    free(v->name);
    free(v->version);
    free(v->path);
    free(v);
}

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec * 1e-6;
}

static bool file_id(const char *path, struct srv_version *v)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return false;
    v->dev = (unsigned long long)st.st_dev;
    v->ino = (unsigned long long)st.st_ino;
    v->size = (unsigned long long)st.st_size;
    v->mtime_ns = (long long)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
    return true;
}

static bool same_file(const struct srv_version *v, const char *path)
{
    struct srv_version now;
    if (strcmp(v->path, path) != 0 || !file_id(path, &now))
        return false;
    return now.dev == v->dev && now.ino == v->ino && now.size == v->size &&
           now.mtime_ns == v->mtime_ns;
}

/* Loads path as name/version.  NULL with err on failure. */
static struct srv_version *load_version(const char *name, const char *version, const char *path,
                                        char *err)
{
    struct srv_version *v = calloc(1, sizeof *v);
    if (!v) {
        snprintf(err, ENG_ERR_LEN, "out of memory");
        return NULL;
    }
    if (!file_id(path, v)) {
        snprintf(err, ENG_ERR_LEN, "%s: %s", path, strerror(errno));
        free(v);
        return NULL;
    }
    double t0 = now_ms();
    enum eng_status st = eng_model_load(path, &v->model, err);
    if (st != ENG_OK) {
        if (!err[0])
            snprintf(err, ENG_ERR_LEN, "%s: %s", path, eng_status_str(st));
        free(v);
        return NULL;
    }
    v->load_ms = now_ms() - t0;
    v->info = eng_model_info(v->model);
    v->name = strdup(name);
    v->version = strdup(version);
    v->path = strdup(path);
    v->refs = 1;
    if (!v->name || !v->version || !v->path) {
        v->refs = 1;
        srv_version_unref(v);
        snprintf(err, ENG_ERR_LEN, "out of memory");
        return NULL;
    }
    return v;
}

/* ---- scanning ------------------------------------------------------------------------- */

static bool valid_name(const char *s, size_t n)
{
    if (n == 0 || n > 128 || s[0] == '.')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '-' && s[i] != '.')
            return false;
    return true;
}

static bool numeric(const char *s)
{
    if (!*s || (s[0] == '0' && s[1]) || strlen(s) > 18)
        return false;
    for (; *s; s++)
        if (!isdigit((unsigned char)*s))
            return false;
    return true;
}

static void entry_free(struct entry *e)
{
    free(e->name);
    free(e->reason);
    free(e->reload_error);
    free(e->path);
    free(e->version);
    srv_version_unref(e->cur);
    memset(e, 0, sizeof *e);
}

static char *dupf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *dupf(const char *fmt, ...)
{
    char tmp[ENG_ERR_LEN + 256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    return strdup(tmp);
}

/* msg (owned, consumed) with every path under the models directory written relative to
 * it: "DIR/x" -> "x" where DIR starts the message or follows a space, '(' or a quote.
 * Returns the new string (msg itself if out of memory). */
static char *relative(const struct srv_repo *r, char *msg)
{
    if (!msg)
        return NULL;
    char *out = malloc(strlen(msg) + 1);
    if (!out)
        return msg;
    size_t dl = strlen(r->dir);
    char *w = out;
    for (const char *p = msg; *p;) {
        bool boundary = p == msg || p[-1] == ' ' || p[-1] == '(' || p[-1] == '\'' ||
                        p[-1] == '"';
        if (boundary && !strncmp(p, r->dir, dl) && p[dl] == '/' && p[dl + 1]) {
            p += dl + 1;
            continue;
        }
        *w++ = *p++;
    }
    *w = 0;
    free(msg);
    return out;
}

static int cmp_entry(const void *a, const void *b)
{
    return strcmp(((const struct entry *)a)->name, ((const struct entry *)b)->name);
}

/* Highest numeric version directory of dir/name containing model.safetensors. */
static void scan_versions(const char *dir, const char *name, struct entry *e)
{
    char sub[4096];
    snprintf(sub, sizeof sub, "%s/%s", dir, name);
    DIR *d = opendir(sub);
    if (!d) {
        e->reason = dupf("%s: %s", sub, strerror(errno));
        return;
    }
    long long best = -1;
    char bestname[32] = "";
    int numeric_dirs = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!numeric(de->d_name))
            continue;
        numeric_dirs++;
        char p[4096 + 300];
        snprintf(p, sizeof p, "%s/%s/model.safetensors", sub, de->d_name);
        struct stat st;
        if (stat(p, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        long long v = strtoll(de->d_name, NULL, 10);
        if (v > best) {
            best = v;
            snprintf(bestname, sizeof bestname, "%.20s", de->d_name);
        }
    }
    closedir(d);
    if (best < 0 && numeric_dirs == 0) {
        e->ignore = true; /* not a model directory (scripts, data, ...) */
        return;
    }
    if (best < 0) {
        e->reason = dupf("no version directory with a model file (expected %s/<version>/"
                         "model.safetensors)", sub);
        return;
    }
    e->version = strdup(bestname);
    e->path = dupf("%s/%s/model.safetensors", sub, bestname);
}

/* Scan into a fresh array of entries (name, path/version or reason).  When the directory
 * cannot be opened, *dir_err (owned by the caller) says why and no entries are returned. */
static int scan(const char *dir, struct entry **out, char **dir_err)
{
    *out = NULL;
    *dir_err = NULL;
    DIR *d = opendir(dir);
    if (!d) {
        *dir_err = dupf("the models directory '%s' cannot be read: %s (--models, "
                        "INNSERVE_MODELS)", dir, strerror(errno));
        srv_logf(SRV_LOG_ERROR, "repository_unreadable", "%s",
                 *dir_err ? *dir_err : "the models directory cannot be read");
        return 0;
    }
    struct entry *v = NULL;
    int n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        const char *fn = de->d_name;
        if (fn[0] == '.')
            continue;
        char full[4096 + 256];
        snprintf(full, sizeof full, "%s/%s", dir, fn);
        size_t len = strlen(fn);
        const bool suffix = len > 12 && !strcmp(fn + len - 12, ".safetensors");
        struct stat st;
        const bool found = stat(full, &st) == 0;
        if (!found) {
            /* a dangling symlink or a symlink loop: a *.safetensors name is a model that
             * fails to load (the loader says why); anything else is named in the log */
            int e = errno;
            struct stat lst;
            if (!suffix) {
                if (lstat(full, &lst) == 0 && S_ISLNK(lst.st_mode))
                    srv_logf(SRV_LOG_WARN, "model_skipped", "%s: %s (a symbolic link that "
                             "leads to no file)", full, strerror(e));
                continue;
            }
        }
        size_t nlen;
        bool is_dir = found && S_ISDIR(st.st_mode);
        if (is_dir) {
            nlen = len;
        } else if (suffix) {
            /* regular or not (a FIFO, a device, a broken link): the loader refuses what is
             * not a regular file, and the model is listed UNAVAILABLE with its reason */
            nlen = len - 12;
        } else {
            continue;
        }
        if (!valid_name(fn, nlen)) {
            srv_logf(SRV_LOG_WARN, "model_skipped", "%s: a model name may only use letters, "
                     "digits, '_', '-' and '.' (at most 128)", full);
            continue;
        }
        char name[129];
        memcpy(name, fn, nlen);
        name[nlen] = 0;
        struct entry cand;
        memset(&cand, 0, sizeof cand);
        cand.name = strdup(name);
        if (is_dir) {
            scan_versions(dir, name, &cand);
            if (cand.ignore) {
                srv_logf(SRV_LOG_DEBUG, "directory_ignored", "%s has no numeric version "
                         "directories; not a model", full);
                entry_free(&cand);
                continue;
            }
        } else {
            cand.version = strdup("1");
            cand.path = strdup(full);
        }
        /* a model directory and a flat file of the same name: the directory wins */
        int dup = -1;
        for (int i = 0; i < n; i++)
            if (!strcmp(v[i].name, name))
                dup = i;
        if (dup >= 0) {
            srv_logf(SRV_LOG_WARN, "model_duplicate", "model '%s' exists both as %s.safetensors "
                     "and as a directory; the directory is used", name, name);
            if (!is_dir) {
                entry_free(&cand);
                continue;
            }
            entry_free(&v[dup]);
            v[dup] = cand;
            continue;
        }
        if (n == cap) {
            int ncap = cap ? cap * 2 : 16;
            struct entry *p = realloc(v, sizeof *p * (size_t)ncap);
            if (!p) {
                entry_free(&cand);
                break;
            }
            v = p;
            cap = ncap;
        }
        v[n++] = cand;
    }
    closedir(d);
    if (n)
        qsort(v, (size_t)n, sizeof *v, cmp_entry);
    *out = v;
    return n;
}

/* ---- repository ----------------------------------------------------------------------- */

struct srv_repo *srv_repo_new(const char *dir, struct srv_metrics *metrics)
{
    struct srv_repo *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->dir = strdup(dir);
    r->metrics = metrics;
    pthread_mutex_init(&r->mu, NULL);
    if (!r->dir) {
        free(r);
        return NULL;
    }
    for (size_t n = strlen(r->dir); n > 1 && r->dir[n - 1] == '/'; n--)
        r->dir[n - 1] = 0; /* "models/" names its files "models/x", not "models//x" */
    return r;
}

void srv_repo_free(struct srv_repo *r)
{
    if (!r)
        return;
    for (int i = 0; i < r->n; i++)
        entry_free(&r->e[i]);
    free(r->e);
    free(r->dir);
    free(r->dir_error);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

bool srv_repo_loaded(struct srv_repo *r)
{
    pthread_mutex_lock(&r->mu);
    bool l = r->loaded;
    pthread_mutex_unlock(&r->mu);
    return l;
}

static struct entry *find(struct entry *v, int n, const char *name)
{
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        int c = strcmp(v[mid].name, name);
        if (!c)
            return &v[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return NULL;
}

/* First pass: the published LOADING entry of e's model takes e's outcome right away. */
static void fill_published(struct srv_repo *r, const struct entry *e)
{
    pthread_mutex_lock(&r->mu);
    struct entry *p = find(r->e, r->n, e->name);
    if (p) {
        p->state = e->state;
        srv_version_unref(p->cur);
        p->cur = srv_version_ref(e->cur);
        free(p->reason);
        p->reason = e->reason ? strdup(e->reason) : NULL;
    }
    pthread_mutex_unlock(&r->mu);
}

int srv_repo_load(struct srv_repo *r)
{
    struct entry *nv;
    char *dir_err;
    int n = scan(r->dir, &nv, &dir_err);
    int failed = 0;
    /* the metrics label these models by name (any other name a URL holds gets model="") */
    for (int i = 0; r->metrics && i < n; i++)
        srv_metrics_model(r->metrics, nv[i].name);
    /* carry over the serving versions of models that still exist */
    pthread_mutex_lock(&r->mu);
    bool first = !r->loaded;
    for (int i = 0; i < n; i++) {
        struct entry *old = find(r->e, r->n, nv[i].name);
        if (old && old->cur) {
            nv[i].cur = srv_version_ref(old->cur);
            nv[i].state = ST_READY;
        } else {
            nv[i].state = ST_LOADING;
        }
    }
    if (first) {
        /* publish LOADING entries so the list shows progress */
        struct entry *pub = calloc((size_t)(n ? n : 1), sizeof *pub);
        if (pub) {
            for (int i = 0; i < n; i++) {
                pub[i].name = strdup(nv[i].name);
                pub[i].state = ST_LOADING;
                pub[i].version = nv[i].version ? strdup(nv[i].version) : NULL;
            }
            for (int i = 0; i < r->n; i++)
                entry_free(&r->e[i]);
            free(r->e);
            r->e = pub;
            r->n = n;
        }
    }
    pthread_mutex_unlock(&r->mu);

    for (int i = 0; i < n; i++) {
        struct entry *e = &nv[i];
        char err[ENG_ERR_LEN] = "";
        if (!e->path) {
            /* directory without versions: reason already set */
            failed++;
            if (e->cur) {
                e->reload_error = e->reason;
                e->reason = NULL;
            } else {
                e->state = ST_UNAVAILABLE;
            }
            srv_logf(SRV_LOG_ERROR, "model_failed", "model '%s': %s", e->name,
                     e->reload_error ? e->reload_error : e->reason ? e->reason : "?");
            e->reason = relative(r, e->reason);
            e->reload_error = relative(r, e->reload_error);
            if (first)
                fill_published(r, e);
            continue;
        }
        if (e->cur && same_file(e->cur, e->path))
            continue; /* unchanged */
        struct srv_version *v = load_version(e->name, e->version, e->path, err);
        if (v) {
            srv_version_unref(e->cur);
            e->cur = v;
            e->state = ST_READY;
            char f[1024];
            snprintf(f, sizeof f, "\"model\":\"%s\",\"version\":\"%s\",\"sha256\":\"%s\","
                     "\"kind\":\"%s\",\"load_ms\":%.3f", v->name, v->version, v->info->sha256,
                     eng_kind_str(v->info->kind), v->load_ms);
            srv_log_line(SRV_LOG_INFO, "model_loaded", f);
        } else {
            failed++;
            if (e->cur) {
                e->reload_error = dupf("version %s (%s) failed to load, still serving version "
                                       "%s: %s", e->version, e->path, e->cur->version, err);
                srv_logf(SRV_LOG_ERROR, "model_reload_failed", "model '%s': %s", e->name,
                         e->reload_error);
            } else {
                e->state = ST_UNAVAILABLE;
                e->reason = dupf("%s", err);
                srv_logf(SRV_LOG_ERROR, "model_failed", "model '%s' version %s: %s", e->name,
                         e->version, err);
            }
        }
        e->reason = relative(r, e->reason);
        e->reload_error = relative(r, e->reload_error);
        if (first)
            fill_published(r, e);
    }
    pthread_mutex_lock(&r->mu);
    for (int i = 0; i < r->n; i++) {
        if (!find(nv, n, r->e[i].name) && r->e[i].cur)
            srv_logf(SRV_LOG_INFO, "model_removed", "model '%s' is no longer in the repository",
                     r->e[i].name);
        entry_free(&r->e[i]);
    }
    free(r->e);
    r->e = nv;
    r->n = n;
    free(r->dir_error);
    r->dir_error = dir_err;
    r->loaded = true;
    pthread_mutex_unlock(&r->mu);
    if (!first && r->metrics)
        srv_metrics_reload(r->metrics, failed == 0);
    return failed;
}

enum proto_code srv_repo_get(struct srv_repo *r, const char *name, const char *version,
                             struct srv_version **out, struct proto_error *e)
{
    *out = NULL;
    enum proto_code rc = PROTO_OK;
    pthread_mutex_lock(&r->mu);
    struct entry *en = find(r->e, r->n, name);
    if (!en) {
        rc = proto_errorf(e, PROTO_E_MODEL, "model '%.128s' is not in the repository (GET "
                          "/v1/models lists the models)", name);
    } else if (!en->cur) {
        rc = proto_errorf(e, PROTO_E_UNAVAILABLE, "model '%.128s' is %s%s%.400s", name,
                          en->state == ST_LOADING ? "still loading" : "unavailable",
                          en->reason ? ": " : "", en->reason ? en->reason : "");
    } else if (version && version[0] && strcmp(version, en->cur->version) != 0) {
        rc = proto_errorf(e, PROTO_E_MODEL, "version '%.64s' of model '%.128s' is not served "
                          "(serving version %s)", version, name, en->cur->version);
    } else {
        *out = srv_version_ref(en->cur);
    }
    pthread_mutex_unlock(&r->mu);
    return rc;
}

void srv_repo_write_list(struct srv_repo *r, struct proto_buf *b)
{
    pthread_mutex_lock(&r->mu);
    struct proto_model_entry *m = calloc((size_t)(r->n ? r->n : 1), sizeof *m);
    if (!m) {
        pthread_mutex_unlock(&r->mu);
        b->state = PROTO_BUF_NOMEM;
        return;
    }
    for (int i = 0; i < r->n; i++) {
        const struct entry *e = &r->e[i];
        m[i].name = e->name;
        m[i].version = e->cur ? e->cur->version : e->version ? e->version : "";
        m[i].state = e->cur ? "READY" : STATE_NAMES[e->state];
        m[i].reason = e->cur ? NULL : e->reason ? e->reason
                      : e->state == ST_LOADING ? "loading" : NULL;
        m[i].reload_error = e->reload_error;
        m[i].info = e->cur ? e->cur->info : NULL;
    }
    proto_write_models(b, m, r->n);
    pthread_mutex_unlock(&r->mu);
    free(m);
}

static void label(struct proto_buf *b, const char *s)
{
    proto_buf_putc(b, '"');
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            proto_buf_putc(b, '\\');
        proto_buf_putc(b, *s);
    }
    proto_buf_putc(b, '"');
}

void srv_repo_write_metrics(struct srv_repo *r, struct proto_buf *b)
{
    pthread_mutex_lock(&r->mu);
    proto_buf_puts(b, "# HELP innserve_model_state 1 for the state each model is in.\n"
                   "# TYPE innserve_model_state gauge\n");
    for (int i = 0; i < r->n; i++) {
        const struct entry *e = &r->e[i];
        const char *ver = e->cur ? e->cur->version : e->version ? e->version : "";
        int st = e->cur ? ST_READY : (int)e->state;
        for (int s = 0; s < 3; s++) {
            proto_buf_puts(b, "innserve_model_state{model=");
            label(b, e->name);
            proto_buf_puts(b, ",version=");
            label(b, ver);
            proto_buf_printf(b, ",state=\"%s\"} %d\n", STATE_NAMES[s], s == st);
        }
    }
    proto_buf_puts(b, "# HELP innserve_model_load_seconds Time to load and self-test the "
                   "serving version.\n# TYPE innserve_model_load_seconds gauge\n");
    for (int i = 0; i < r->n; i++) {
        const struct entry *e = &r->e[i];
        if (!e->cur)
            continue;
        proto_buf_puts(b, "innserve_model_load_seconds{model=");
        label(b, e->name);
        proto_buf_puts(b, ",version=");
        label(b, e->cur->version);
        proto_buf_puts(b, "} ");
        proto_buf_f64(b, e->cur->load_ms / 1000.0);
        proto_buf_putc(b, '\n');
    }
    pthread_mutex_unlock(&r->mu);
}

bool srv_repo_ready(struct srv_repo *r, bool allow_empty, char *msg, size_t cap,
                    struct proto_buf *reasons)
{
    int ready = 0, not_ready = 0;
    pthread_mutex_lock(&r->mu);
    for (int i = 0; i < r->n; i++) {
        if (r->e[i].cur)
            ready++;
        else
            not_ready++;
    }
    bool ok = r->loaded && (ready > 0 || (allow_empty && r->n == 0 && !r->dir_error));
    if (ok) {
        pthread_mutex_unlock(&r->mu);
        return true;
    }
    if (!r->loaded)
        snprintf(msg, cap, "the model repository is still loading");
    else if (r->dir_error)
        snprintf(msg, cap, "%s", r->dir_error);
    else if (r->n == 0)
        snprintf(msg, cap, "the models directory '%s' holds no models (NAME.safetensors or "
                 "NAME/<version>/model.safetensors); --allow-empty says an empty repository "
                 "is intended", r->dir);
    else
        snprintf(msg, cap, "no model is READY: %d %s unavailable (reasons names each with "
                 "its cause)", not_ready, not_ready == 1 ? "model is" : "models are");
    if (reasons) {
        proto_buf_puts(reasons, "[");
        if (!r->loaded || r->dir_error || r->n == 0) {
            proto_buf_json_str(reasons, msg);
        } else {
            bool sep = false;
            for (int i = 0; i < r->n; i++) {
                const struct entry *e = &r->e[i];
                if (e->cur)
                    continue;
                char line[700];
                snprintf(line, sizeof line, "model '%s'%s%s: %.500s", e->name,
                         e->version ? " version " : "", e->version ? e->version : "",
                         e->state == ST_LOADING ? "still loading"
                                                : e->reason ? e->reason : "unavailable");
                if (sep)
                    proto_buf_puts(reasons, ",");
                sep = true;
                proto_buf_json_str(reasons, line);
            }
        }
        proto_buf_puts(reasons, "]");
    }
    pthread_mutex_unlock(&r->mu);
    return false;
}

void srv_repo_counts(struct srv_repo *r, int *ready, int *loading, int *unavailable)
{
    int c[3] = {0, 0, 0};
    pthread_mutex_lock(&r->mu);
    for (int i = 0; i < r->n; i++)
        c[r->e[i].cur ? ST_READY : (int)r->e[i].state]++;
    pthread_mutex_unlock(&r->mu);
    if (ready)
        *ready = c[ST_READY];
    if (loading)
        *loading = c[ST_LOADING];
    if (unavailable)
        *unavailable = c[ST_UNAVAILABLE];
}
