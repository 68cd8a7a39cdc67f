/*
 * repo.h — the model repository: which checkpoints the daemon serves, in which version,
 * and why a model is not ready.
 *
 * Layout of --models DIR: `NAME.safetensors` (served as version "1") or
 * `NAME/<version>/model.safetensors` with numeric versions (the highest is served).
 * Hidden entries (".x") and other files are ignored.  Each model is READY (a version
 * serving), LOADING or UNAVAILABLE (with a reason).
 *
 * Versions (struct srv_version) are reference counted and immutable: a request takes a
 * reference when it starts and keeps answering from that version whatever reloads
 * happen meanwhile.  srv_repo_load (initial load and SIGHUP) is called from one thread
 * at a time; lookups may run concurrently from any thread.
 */
#ifndef INNSERVE_SERVER_REPO_H
#define INNSERVE_SERVER_REPO_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "../engine/engine.h"
#include "../proto/errors.h"
#include "../proto/buf.h"
#include "metrics.h"

struct srv_version {
    char *name;
    char *version;
    char *path;
    struct eng_model *model;          /* one reference, dropped with the version */
    const struct eng_info *info;      /* borrowed from model */
    double load_ms;
    /* file identity, to skip unchanged files on reload */
    unsigned long long dev, ino, size;
    long long mtime_ns;
    int refs;                         /* atomic */
};

struct srv_version *srv_version_ref(struct srv_version *v);
void srv_version_unref(struct srv_version *v);

struct srv_repo;

/* owned by caller: srv_repo_free. dir is copied. */
struct srv_repo *srv_repo_new(const char *dir, struct srv_metrics *metrics);
void srv_repo_free(struct srv_repo *r);

/* Scans the directory and loads what changed.  The first call publishes every model as
 * LOADING before loading them.  A model whose new file fails keeps its old version (and
 * reports the failure as reload_error); models whose files disappeared are dropped.
 * Returns the number of models that failed to load in this pass. */
int srv_repo_load(struct srv_repo *r);
/* True once the first load pass has completed. */
bool srv_repo_loaded(struct srv_repo *r);

/* The serving version of `name` (a new reference: srv_version_unref) and PROTO_OK;
 * PROTO_E_MODEL when no such model (or `version` given and not the served one);
 * PROTO_E_UNAVAILABLE when it is LOADING or UNAVAILABLE.  e names the reason. */
enum proto_code srv_repo_get(struct srv_repo *r, const char *name, const char *version,
                             struct srv_version **out, struct proto_error *e);

/* GET /v1/models body; and the model gauges for /metrics. */
void srv_repo_write_list(struct srv_repo *r, struct proto_buf *b);
void srv_repo_write_metrics(struct srv_repo *r, struct proto_buf *b);
/* Readiness of the repository (for /readyz): true once the first pass has completed and
 * at least one model is READY, or, with allow_empty, when the directory was read and holds
 * no models at all.  Otherwise false, with a one-line summary in msg (cap bytes) and, when
 * reasons is not NULL, a JSON array of strings appended to it: why the directory gives no
 * models (unreadable, empty, still loading), or each model that is not READY with its
 * reason ("model 'NAME' version V: ..."). */
bool srv_repo_ready(struct srv_repo *r, bool allow_empty, char *msg, size_t cap,
                    struct proto_buf *reasons);
/* Counts of models by state (any pointer may be NULL). */
void srv_repo_counts(struct srv_repo *r, int *ready, int *loading, int *unavailable);

#endif
