/*
 * ctl_offline.c — `innctl inspect FILE` and `innctl verify FILE...` on the engine.
 */
#include "ctl_offline.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../engine/engine.h"

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

static cJSON *num_or_null(double v)
{
    return isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull();
}

static cJSON *cert_json(const struct eng_certificate *c)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "invertible", c->invertible);
    cJSON_AddStringToObject(o, "guarantee", eng_guarantee_str(c->guarantee));
    cJSON_AddBoolToObject(o, "certified", c->certified);
    cJSON *bl = cJSON_AddArrayToObject(o, "blocks");
    for (int i = 0; i < c->n_blocks; i++) {
        const struct eng_block_cert *b = &c->blocks[i];
        cJSON *e = cJSON_CreateObject();
        cJSON_AddNumberToObject(e, "index", b->index);
        cJSON_AddStringToObject(e, "type", b->type ? b->type : "");
        cJSON_AddBoolToObject(e, "invertible", b->invertible);
        cJSON_AddStringToObject(e, "guarantee", eng_guarantee_str(b->guarantee));
        cJSON_AddStringToObject(e, "reason", b->reason);
        cJSON_AddItemToObject(e, "lipschitz", num_or_null(b->lipschitz));
        cJSON_AddItemToObject(e, "lipschitz_inverse", num_or_null(b->lipschitz_inverse));
        cJSON_AddItemToObject(e, "condition", num_or_null(b->condition));
        if (b->iterations_for_1e6 >= 0)
            cJSON_AddNumberToObject(e, "iterations_for_1e-6", b->iterations_for_1e6);
        cJSON_AddItemToArray(bl, e);
    }
    return o;
}

static cJSON *names_json(const char *const *names, int n)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; names && i < n; i++)
        cJSON_AddItemToArray(a, cJSON_CreateString(names[i]));
    return a;
}

int ctl_inspect(const char *path, bool json, FILE *out)
{
    char err[ENG_ERR_LEN] = "";
    struct eng_model *m = NULL;
    enum eng_status st = eng_model_load_ex(path, ENG_LOAD_NO_SELFTEST, &m, err);
    if (st != ENG_OK) {
        if (json) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "file", path);
            cJSON_AddBoolToObject(o, "valid", false);
            cJSON_AddStringToObject(o, "error", err);
            cJSON_AddStringToObject(o, "status", eng_status_str(st));
            char *s = cJSON_Print(o);
            fprintf(out, "%s\n", s);
            free(s);
            cJSON_Delete(o);
        }
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
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "file", path);
        cJSON_AddBoolToObject(o, "valid", true);
        cJSON_AddStringToObject(o, "sha256", in->sha256);
        cJSON_AddStringToObject(o, "kind", eng_kind_str(in->kind));
        cJSON_AddStringToObject(o, "description", in->description);
        cJSON *dj = cJSON_AddObjectToObject(o, "dims");
        cJSON_AddNumberToObject(dj, "x", d->x);
        cJSON_AddNumberToObject(dj, "y", d->y);
        cJSON_AddNumberToObject(dj, "z", d->z);
        cJSON_AddNumberToObject(dj, "pad_x", d->pad_x);
        cJSON_AddNumberToObject(dj, "pad_y", d->pad_y);
        cJSON *nj = cJSON_AddObjectToObject(o, "names");
        cJSON_AddItemToObject(nj, "x", names_json(in->x_names, d->x));
        cJSON_AddItemToObject(nj, "y", names_json(in->y_names, d->y));
        cJSON_AddNumberToObject(o, "parameters", (double)in->n_params);
        cJSON_AddNumberToObject(o, "n_blocks", in->n_blocks);
        cJSON_AddBoolToObject(o, "numeric_inverse", in->numeric_inverse);
        cJSON *t = cJSON_AddObjectToObject(o, "self_test");
        cJSON_AddBoolToObject(t, "passed", tst == ENG_OK);
        if (tst != ENG_OK)
            cJSON_AddStringToObject(t, "error", terr);
        cJSON_AddItemToObject(o, "certificate", cert_json(cert));
        if (man)
            cJSON_AddItemToObject(o, "manifest", cJSON_Duplicate(man, true));
        char *s = cJSON_Print(o);
        fprintf(out, "%s\n", s);
        free(s);
        cJSON_Delete(o);
    } else {
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
        fprintf(out, "%-13s%s\n", "inverse:", in->numeric_inverse ? "numeric (i-ResNet blocks)"
                                                                  : "analytic");
        fprintf(out, "%-13s%s (%s%s)\n", "certificate:",
                cert->invertible ? "invertible" : "NOT invertible",
                eng_guarantee_str(cert->guarantee), cert->certified ? ", certified" : "");
        const cJSON *blocks = man ? cJSON_GetObjectItemCaseSensitive(man, "blocks") : NULL;
        fprintf(out, "%-13s%d\n", "blocks:", in->n_blocks);
        for (int i = 0; i < cert->n_blocks; i++) {
            const struct eng_block_cert *b = &cert->blocks[i];
            const cJSON *bj = cJSON_IsArray(blocks) ? cJSON_GetArrayItem(blocks, i) : NULL;
            const cJSON *cond = bj ? cJSON_GetObjectItemCaseSensitive(bj, "cond") : NULL;
            char condbuf[24] = "";
            if (cJSON_IsNumber(cond))
                snprintf(condbuf, sizeof(condbuf), "cond %d", cond->valueint);
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
    }
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
            if (!quiet && !json && in->kind == ENG_KIND_MLP)
                fprintf(out, "PASS %s (mlp, sha256 %.12s)\n", paths[i], in->sha256);
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
