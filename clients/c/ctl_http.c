/*
 * ctl_http.c — libcurl glue for innctl (see ctl_http.h).
 */
#include "ctl_http.h"

#include <ctype.h>
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_BODY ((size_t)2 << 30) /* refuse answers above 2 GiB */

struct sink {
    char *p;
    size_t n, cap;
    bool overflow;
};

struct hdrs {
    double retry_after; /* < 0: none */
};

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
    struct sink *s = ud;
    size_t n = size * nmemb;
    if (s->n + n + 1 > s->cap) {
        size_t nc = s->cap ? s->cap : 16384;
        while (nc < s->n + n + 1)
            nc *= 2;
        if (nc > MAX_BODY) {
            s->overflow = true;
            return 0;
        }
        char *np = realloc(s->p, nc);
        if (!np)
            return 0;
        s->p = np;
        s->cap = nc;
    }
    memcpy(s->p + s->n, data, n);
    s->n += n;
    s->p[s->n] = '\0';
    return n;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *ud)
{
    struct hdrs *h = ud;
    size_t n = size * nmemb;
    static const char key[] = "retry-after:";
    if (n > sizeof(key) - 1) {
        size_t i = 0;
        while (i < sizeof(key) - 1 && tolower((unsigned char)data[i]) == key[i])
            i++;
        if (i == sizeof(key) - 1) {
            char tmp[64];
            size_t m = n - i < sizeof(tmp) - 1 ? n - i : sizeof(tmp) - 1;
            memcpy(tmp, data + i, m);
            tmp[m] = '\0';
            char *end;
            double v = strtod(tmp, &end);
            if (end != tmp && isfinite(v) && v >= 0)
                h->retry_after = v;
            else {
                time_t t = curl_getdate(tmp, NULL);
                if (t > 0)
                    h->retry_after = difftime(t, time(NULL)) > 0 ? difftime(t, time(NULL)) : 0;
            }
        }
    }
    return n;
}

void ctl_http_global_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

void ctl_http_global_cleanup(void)
{
    curl_global_cleanup();
}

void ctl_http_resp_free(struct ctl_http_resp *r)
{
    if (!r)
        return;
    free(r->body);
    r->body = NULL;
    r->len = 0;
}

char *ctl_http_escape(const char *s, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (; *s && o + 4 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
            out[o++] = (char)c;
        } else {
            out[o++] = '%';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    out[o] = '\0';
    return out;
}

#define TOKEN_MAX 4096

char *ctl_http_read_token(const char *path, char err[CTL_HTTP_ERR_LEN])
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, CTL_HTTP_ERR_LEN, "--token-file %s: cannot open: %s", path,
                 strerror(errno));
        return NULL;
    }
    char *buf = malloc(TOKEN_MAX + 3);
    size_t n = buf ? fread(buf, 1, TOKEN_MAX + 2, f) : 0;
    bool bad_read = ferror(f);
    fclose(f);
    if (!buf) {
        snprintf(err, CTL_HTTP_ERR_LEN, "out of memory");
        return NULL;
    }
    buf[n] = '\0';
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = '\0';
    const char *why = NULL;
    if (bad_read)
        why = "cannot read it";
    else if (n == 0)
        why = "the file is empty; it must hold the token on one line";
    else if (n > TOKEN_MAX)
        why = "the token is longer than 4096 bytes";
    for (size_t i = 0; !why && i < n; i++)
        if ((unsigned char)buf[i] < 0x21 || (unsigned char)buf[i] > 0x7e)
            why = "the token holds a space, a control character or a non-ASCII byte";
    if (why) {
        snprintf(err, CTL_HTTP_ERR_LEN, "--token-file %s: %s", path, why);
        free(buf);
        return NULL;
    }
    return buf;
}

static void sleep_s(double s)
{
    if (s <= 0)
        return;
    struct timespec ts = {(time_t)s, (long)((s - floor(s)) * 1e9)};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

/* Whether an error answer may go away when the request is sent again: 429, and 503 except
 * model_unavailable for a model that failed to load (the daemon says "still loading" while
 * the model may yet come).  A 503 whose body is not the daemon's JSON (a proxy's) is
 * transient. */
static bool transient(long status, const char *body, size_t n)
{
    if (status == 429)
        return true;
    if (status != 503)
        return false;
    if (!body)
        return true;
    cJSON *j = cJSON_ParseWithLength(body, n);
    if (!j)
        return true;
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(j, "code");
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(j, "error");
    bool t = !cJSON_IsString(code) || strcmp(code->valuestring, "model_unavailable") != 0 ||
             (cJSON_IsString(msg) && strstr(msg->valuestring, "still loading"));
    cJSON_Delete(j);
    return t;
}

enum ctl_http_rc ctl_http_request(const struct ctl_http_opts *o, const char *method,
                                  const char *path, const char *body, const char *accept,
                                  struct ctl_http_resp *resp, char err[CTL_HTTP_ERR_LEN])
{
    memset(resp, 0, sizeof(*resp));
    err[0] = '\0';
    size_t blen = strlen(o->base_url);
    while (blen > 0 && o->base_url[blen - 1] == '/')
        blen--;
    size_t ulen = blen + strlen(path) + 1;
    char *url = malloc(ulen);
    if (!url)
        return CTL_HTTP_NOMEM;
    snprintf(url, ulen, "%.*s%s", (int)blen, o->base_url, path);

    char accept_h[160];
    snprintf(accept_h, sizeof(accept_h), "Accept: %s", accept ? accept : "application/json");
    enum ctl_http_rc rc = CTL_HTTP_OK;
    for (int attempt = 0;; attempt++) {
        CURL *c = curl_easy_init();
        if (!c) {
            free(url);
            return CTL_HTTP_NOMEM;
        }
        struct sink s = {0};
        struct hdrs h = {-1.0};
        char cerr[CURL_ERROR_SIZE] = "";
        struct curl_slist *hl = NULL;
        hl = curl_slist_append(hl, accept_h);
        hl = curl_slist_append(hl, "User-Agent: innctl");
        if (body)
            hl = curl_slist_append(hl, "Content-Type: application/json");
        hl = curl_slist_append(hl, "Expect:");
        if (o->token) {
            size_t al = strlen(o->token) + 32;
            char *auth = malloc(al);
            if (!auth) {
                curl_slist_free_all(hl);
                curl_easy_cleanup(c);
                free(url);
                return CTL_HTTP_NOMEM;
            }
            snprintf(auth, al, "Authorization: Bearer %s", o->token);
            hl = curl_slist_append(hl, auth); /* copies */
            free(auth);
        }
        if (o->cacert)
            curl_easy_setopt(c, CURLOPT_CAINFO, o->cacert);
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
        curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(c, CURLOPT_HEADERDATA, &h);
        curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
        if (o->timeout_s > 0)
            curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)(o->timeout_s * 1000));
        if (strcmp(method, "POST") == 0) {
            curl_easy_setopt(c, CURLOPT_POST, 1L);
            curl_easy_setopt(c, CURLOPT_POSTFIELDS, body ? body : "");
            curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(body ? strlen(body) : 0));
        } else if (strcmp(method, "GET") != 0) {
            curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
        }
        CURLcode cc = curl_easy_perform(c);
        long status = 0;
        char *ct = NULL;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct);
        if (ct)
            snprintf(resp->content_type, sizeof(resp->content_type), "%s", ct);
        curl_slist_free_all(hl);
        curl_easy_cleanup(c);
        if (cc != CURLE_OK) {
            free(s.p);
            if (s.overflow)
                snprintf(err, CTL_HTTP_ERR_LEN, "the answer from %s is larger than 2 GiB", url);
            else if (cc == CURLE_OPERATION_TIMEDOUT)
                snprintf(err, CTL_HTTP_ERR_LEN, "timeout: no answer from %s within %gs", url,
                         o->timeout_s);
            else
                snprintf(err, CTL_HTTP_ERR_LEN, "%s: %s", url,
                         cerr[0] ? cerr : curl_easy_strerror(cc));
            rc = CTL_HTTP_CONNECT;
            break;
        }
        if (attempt < o->retries && transient(status, s.p, s.n)) {
            free(s.p);
            double wait = h.retry_after >= 0 ? h.retry_after : 0.25 * (double)(1 << attempt);
            if (o->max_wait_s > 0 && wait > o->max_wait_s)
                wait = o->max_wait_s;
            sleep_s(wait);
            continue;
        }
        resp->status = status;
        if (!s.p) {
            s.p = calloc(1, 1);
            if (!s.p) {
                rc = CTL_HTTP_NOMEM;
                break;
            }
        }
        resp->body = s.p;
        resp->len = s.n;
        break;
    }
    free(url);
    return rc;
}
