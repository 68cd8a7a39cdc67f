/*
 * ctl_offline.c — `innctl inspect FILE` and `innctl verify FILE...` on the engine.
 */
#include "ctl_offline.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../engine/engine.h"
#include "../../proto/buf.h"
#include "../../proto/response.h"

#define EXIT_INVALID 4

static const char *str_or(const cJSON *o, const char *k, const char *def)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : def;
}

static void print_names(FILE *out, const char *label, const char *const *names, int n)
{
    if (!names || n <= 0)
        return;
    fprintf(out, "%-13s", label);
    for (int i = 0; i < n; i++)
        fprintf(out, "%s%s", i ? ", " : "", names[i]);
    fputc('\n', out);
}

/* A graph model (manifest "graph"): its nodes, one line each, and its outputs in z order. */
static void print_graph(FILE *out, const cJSON *graph)
{
    const cJSON *nodes = cJSON_GetObjectItemCaseSensitive(graph, "nodes");
    const cJSON *outs = cJSON_GetObjectItemCaseSensitive(graph, "outputs");
    fprintf(out, "%-13s%d nodes, outputs (z in this order):", "graph:", cJSON_GetArraySize(nodes));
    for (const cJSON *o = cJSON_IsArray(outs) ? outs->child : NULL; o; o = o->next) {
        const cJSON *nm = cJSON_GetArrayItem(o, 0), *ix = cJSON_GetArrayItem(o, 1);
        fprintf(out, " %s[%d]", cJSON_IsString(nm) ? nm->valuestring : "?",
                cJSON_IsNumber(ix) ? ix->valueint : 0);
    }
    fputc('\n', out);
    for (const cJSON *n = cJSON_IsArray(nodes) ? nodes->child : NULL; n; n = n->next) {
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(n, "name");
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(n, "block");
        const cJSON *ty = b ? cJSON_GetObjectItemCaseSensitive(b, "type") : NULL;
        fprintf(out, "  %-16s %-27s <-", cJSON_IsString(nm) ? nm->valuestring : "?",
                cJSON_IsString(ty) ? ty->valuestring : "?");
        const cJSON *ins = cJSON_GetObjectItemCaseSensitive(n, "inputs");
        for (const cJSON *r = cJSON_IsArray(ins) ? ins->child : NULL; r; r = r->next) {
            const cJSON *rn = cJSON_GetArrayItem(r, 0), *ri = cJSON_GetArrayItem(r, 1);
            fprintf(out, " %s[%d]", cJSON_IsString(rn) ? rn->valuestring : "?",
                    cJSON_IsNumber(ri) ? ri->valueint : 0);
        }
        fputc('\n', out);
    }
}

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec * 1e-6;
}

/* The name and version the daemon gives the file: DIR/NAME/VERSION/model.safetensors
 * (a numeric VERSION) is NAME version VERSION; any other FILE.safetensors is FILE
 * version 1. */
static void model_id(const char *path, char *name, size_t ncap, char *version, size_t vcap)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t blen = strlen(base);
    static const char suffix[] = ".safetensors";
    size_t slen = sizeof suffix - 1;
    snprintf(version, vcap, "1");
    if (strcmp(base, "model.safetensors") == 0 && base - path >= 4) {
        /* .../NAME/VERSION/ */
        const char *vend = base - 1, *vbeg = vend;
        while (vbeg > path && vbeg[-1] != '/')
            vbeg--;
        bool numeric = vbeg < vend;
        for (const char *p = vbeg; p < vend; p++)
            numeric = numeric && isdigit((unsigned char)*p);
        if (numeric && vbeg - path >= 2) {
            const char *nend = vbeg - 1, *nbeg = nend;
            while (nbeg > path && nbeg[-1] != '/')
                nbeg--;
            if (nbeg < nend) {
                snprintf(name, ncap, "%.*s", (int)(nend - nbeg), nbeg);
                snprintf(version, vcap, "%.*s", (int)(vend - vbeg), vbeg);
                return;
            }
        }
    }
    if (blen > slen && strcmp(base + blen - slen, suffix) == 0)
        blen -= slen;
    snprintf(name, ncap, "%.*s", (int)blen, base);
}

/* --json: the daemon's metadata answer for the file, written by proto's writer. */
static int inspect_json(const char *path, FILE *out)
{
    char err[ENG_ERR_LEN] = "";
    struct eng_model *m = NULL;
    double t0 = now_ms();
    enum eng_status st = eng_model_load(path, &m, err);
    double load_ms = now_ms() - t0;
    enum eng_status tst = st;
    if (st == ENG_ERR_TESTVEC) {
        fprintf(stderr, "innctl: %s: self-test FAILED: %s\n", path, err);
        st = eng_model_load_ex(path, ENG_LOAD_NO_SELFTEST, &m, err);
    }
    if (st != ENG_OK) {
        fprintf(stderr, "innctl: %s: invalid checkpoint (%s): %s\n", path, eng_status_str(st),
                err);
        return EXIT_INVALID;
    }
    const struct eng_info *in = eng_model_info(m);
    char name[256], version[64];
    model_id(path, name, sizeof name, version, sizeof version);
    struct proto_model_id id = {name, version, in->sha256};
    struct proto_buf b;
    proto_buf_init(&b, 0);
    proto_write_metadata(&b, &id, in, eng_model_certificate(m), load_ms);
    int rc = tst == ENG_OK ? 0 : EXIT_INVALID;
    if (proto_buf_failed(&b)) {
        fprintf(stderr, "innctl: out of memory\n");
        rc = 5;
    } else {
        fwrite(b.p, 1, b.len, out);
    }
    proto_buf_free(&b);
    eng_model_unref(m);
    return rc;
}

int ctl_inspect(const char *path, bool json, FILE *out)
{
    if (json)
        return inspect_json(path, out);
    char err[ENG_ERR_LEN] = "";
    struct eng_model *m = NULL;
    enum eng_status st = eng_model_load_ex(path, ENG_LOAD_NO_SELFTEST, &m, err);
    if (st != ENG_OK) {
        fprintf(stderr, "innctl: %s: invalid checkpoint (%s): %s\n", path, eng_status_str(st), err);
        return EXIT_INVALID;
    }
    /* self-test: load again with the embedded test vectors */
    char terr[ENG_ERR_LEN] = "";
    struct eng_model *m2 = NULL;
    enum eng_status tst = eng_model_load(path, &m2, terr);
    eng_model_unref(m2);

    const struct eng_info *in = eng_model_info(m);
    const struct eng_certificate *cert = eng_model_certificate(m);
    cJSON *man = cJSON_Parse(in->manifest_json);
    const struct eng_dims *d = &in->dims;
    fprintf(out, "%-13s%s\n", "file:", path);
    fprintf(out, "%-13s%s\n", "sha256:", in->sha256);
    fprintf(out, "%-13s%s\n", "kind:", eng_kind_str(in->kind));
    if (in->description && in->description[0])
        fprintf(out, "%-13s%s\n", "description:", in->description);
    const cJSON *src = man ? cJSON_GetObjectItemCaseSensitive(man, "source") : NULL;
    if (cJSON_IsObject(src)) {
        fprintf(out, "%-13s", "source:");
        const cJSON *e;
        int k = 0;
        cJSON_ArrayForEach(e, src) {
            if (cJSON_IsString(e))
                fprintf(out, "%s%s %s", k++ ? ", " : "", e->string, e->valuestring);
        }
        fputc('\n', out);
    }
    fprintf(out, "%-13sx %d, y %d, z %d, pad_x %d, pad_y %d\n", "dims:", d->x, d->y, d->z,
            d->pad_x, d->pad_y);
    print_names(out, "x names:", in->x_names, d->x);
    print_names(out, "y names:", in->y_names, d->y);
    fprintf(out, "%-13s%lld\n", "parameters:", in->n_params);
    fprintf(out, "%-13s%s\n", "inverse:", in->kind == ENG_KIND_MDN ? "none (a mixture)"
                                         : in->numeric_inverse ? "numeric (i-ResNet blocks)"
                                                               : "analytic");
    fprintf(out, "%-13s%s (%s%s)\n", "certificate:",
            cert->invertible ? "invertible" : "NOT invertible",
            eng_guarantee_str(cert->guarantee), cert->certified ? ", certified" : "");
    /* the block objects in order (a graph's too: engine.h blocks_json) */
    cJSON *blocks = in->blocks_json ? cJSON_Parse(in->blocks_json) : NULL;
    const cJSON *graph = man ? cJSON_GetObjectItemCaseSensitive(man, "graph") : NULL;
    if (cJSON_IsObject(graph))
        print_graph(out, graph);
    fprintf(out, "%-13s%d\n", "blocks:", in->n_blocks);
    for (int i = 0; i < cert->n_blocks; i++) {
        const struct eng_block_cert *b = &cert->blocks[i];
        const cJSON *bj = cJSON_IsArray(blocks) ? cJSON_GetArrayItem(blocks, i) : NULL;
        const cJSON *cond = bj ? cJSON_GetObjectItemCaseSensitive(bj, "cond") : NULL;
        char condbuf[24] = "";
        if (cJSON_IsNumber(cond))
            snprintf(condbuf, sizeof(condbuf), "cond %d", cond->valueint);
        for (const cJSON *e = cJSON_IsArray(cond) ? cond->child : NULL; e; e = e->next) {
            size_t k = strlen(condbuf);
            snprintf(condbuf + k, sizeof(condbuf) - k, "%s%d", k ? "," : "cond ", e->valueint);
        }
        char lip[48] = "";
        if (isfinite(b->lipschitz))
            snprintf(lip, sizeof(lip), "  Lip %.4g", b->lipschitz);
        fprintf(out, "  %3d  %-27s %-7s %-11s%s  %s\n", b->index,
                b->type ? b->type : str_or(bj, "type", "?"), condbuf,
                eng_guarantee_str(b->guarantee), lip, b->reason);
    }
    if (tst == ENG_OK)
        fprintf(out, "%-13spassed\n", "self-test:");
    else
        fprintf(out, "%-13sFAILED: %s\n", "self-test:", terr);
    cJSON_Delete(blocks);
    cJSON_Delete(man);
    eng_model_unref(m);
    return tst == ENG_OK ? 0 : EXIT_INVALID;
}

int ctl_verify(const char *const *paths, int n, bool quiet, bool json, FILE *out)
{
    int rc = 0;
    cJSON *arr = json ? cJSON_CreateArray() : NULL;
    for (int i = 0; i < n; i++) {
        char err[ENG_ERR_LEN] = "";
        struct eng_model *m = NULL;
        enum eng_status st = eng_model_load(paths[i], &m, err);
        if (json) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "file", paths[i]);
            cJSON_AddBoolToObject(o, "passed", st == ENG_OK);
            if (st == ENG_OK) {
                cJSON_AddStringToObject(o, "kind", eng_kind_str(eng_model_info(m)->kind));
                cJSON_AddStringToObject(o, "sha256", eng_model_info(m)->sha256);
            } else {
                cJSON_AddStringToObject(o, "status", eng_status_str(st));
                cJSON_AddStringToObject(o, "error", err);
            }
            cJSON_AddItemToArray(arr, o);
        }
        if (st == ENG_OK) {
            const struct eng_info *in = eng_model_info(m);
            if (!quiet && !json && (in->kind == ENG_KIND_MLP || in->kind == ENG_KIND_MDN))
                fprintf(out, "PASS %s (%s, sha256 %.12s)\n", paths[i], eng_kind_str(in->kind),
                        in->sha256); /* no blocks */
            else if (!quiet && !json)
                fprintf(out, "PASS %s (%s, %d blocks, sha256 %.12s)\n", paths[i],
                        eng_kind_str(in->kind), in->n_blocks, in->sha256);
        } else {
            rc = EXIT_INVALID;
            if (!json)
                fprintf(out, "FAIL %s: %s: %s\n", paths[i], eng_status_str(st), err);
        }
        eng_model_unref(m);
    }
    if (json) {
        char *s = cJSON_Print(arr);
        fprintf(out, "%s\n", s);
        free(s);
        cJSON_Delete(arr);
    }
    return rc;
}
