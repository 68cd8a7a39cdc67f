/*
 * manifest.c — eng_model_load: the manifest of a checkpoint → an immutable model
 * (standardization, names, conditions and their networks, the inn layout, the blocks or
 * graph (graph.c), the mlp network or the mdn mixture (mixture.c), the certificate and the
 * numeric-inverse budget), every field validated
 * through the loader with a message, then the embedded test vectors (selftest.c).
 * Also the model's reference counting and accessors.
 */
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block.h"
#include "emath.h"
#include "json_syntax.h"
#include "kern.h"
#include "loader.h"
#include "model_impl.h"
#include "safetensors.h"
#include "sha256.h"
#include "subnet.h"

/* ==== loading ============================================================================== */

struct eng_model *eng_model_ref(struct eng_model *m)
{
    if (m)
        atomic_fetch_add(&m->refs, 1);
    return m;
}

static void model_free(struct eng_model *m)
{
    if (!m)
        return;
    arena_free(m->arena);
    free(m->manifest_text);
    free(m->blocks_text);
    free(m->description);
    free(m);
}

void eng_model_unref(struct eng_model *m)
{
    if (m && atomic_fetch_sub(&m->refs, 1) == 1)
        model_free(m);
}

const struct eng_info *eng_model_info(const struct eng_model *m) { return &m->info; }

const struct eng_certificate *eng_model_certificate(const struct eng_model *m)
{
    return &m->cert;
}

void model_view(const struct eng_model *m, struct model_view *v)
{
    v->mlp = m->mlp;
    v->x_mean = m->sx.mean, v->x_std = m->sx.std;
    v->y_mean = m->sy.mean, v->y_std = m->sy.std;
}

static enum eng_status load_std(struct ldr *L, const cJSON *sj, const char *which, int n,
                                struct stdz *out)
{
    const cJSON *o;
    size_t mark = ldr_push(L, "standardize.%s", which);
    enum eng_status st = ldr_obj(L, sj, which, false, &o);
    if (st == ENG_OK && o) {
        st = ldr_tensor_numel(L, o, "mean", true, n, &out->mean);
        if (st == ENG_OK)
            st = ldr_tensor_numel(L, o, "std", true, n, &out->std);
        out->log_std_sum = 0.0;
        for (int i = 0; st == ENG_OK && i < n; i++) {
            if (!(out->std[i] > 0.0f))
                st = ldr_fail(L, ENG_ERR_TENSOR, "tensor '%s' (field 'std'): element %d is %g, "
                              "must be > 0", cJSON_GetObjectItemCaseSensitive(o, "std")->valuestring,
                              i, (double)out->std[i]);
            else
                out->log_std_sum += em_log((double)out->std[i]);
        }
    }
    ldr_pop(L, mark);
    return st;
}

/* The prior's box: {"type": "box", "low": [n numbers], "high": [n numbers]}, finite,
 * within float32, low < high per dimension. */
static enum eng_status load_prior(struct ldr *L, struct eng_model *m, const cJSON *pj, int n)
{
    if (!cJSON_IsObject(pj))
        return ldr_fail(L, ENG_ERR_MANIFEST, "field 'prior' must be an object "
                        "{\"type\": \"box\", \"low\": [...], \"high\": [...]}");
    size_t mark = ldr_push(L, "prior");
    enum eng_status st = ENG_OK;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(pj, "type");
    if (!cJSON_IsString(t) || strcmp(t->valuestring, "box") != 0)
        st = ldr_fail(L, ENG_ERR_MANIFEST, "field 'type' must be \"box\" (the only prior "
                      "this engine knows)");
    for (const cJSON *f = pj->child; st == ENG_OK && f; f = f->next)
        if (strcmp(f->string, "type") && strcmp(f->string, "low") && strcmp(f->string, "high"))
            st = ldr_fail(L, ENG_ERR_MANIFEST, "unknown field '%.64s' (a box prior has type, "
                          "low, high)", f->string);
    static const char *const side[2] = {"low", "high"};
    float *v[2] = {NULL, NULL};
    for (int k = 0; st == ENG_OK && k < 2; k++) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(pj, side[k]);
        if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) != n) {
            st = ldr_fail(L, ENG_ERR_MANIFEST, "field '%s' must be a list of %d numbers "
                          "(dims.x)", side[k], n);
            break;
        }
        if (!(v[k] = ldr_alloc(L, sizeof(float) * (size_t)n))) {
            st = ldr_fail(L, ENG_ERR_NOMEM, "out of memory");
            break;
        }
        int i = 0;
        for (const cJSON *e = a->child; e; e = e->next, i++) {
            if (!cJSON_IsNumber(e) || !isfinite(e->valuedouble) ||
                fabs(e->valuedouble) > 3.4028234663852886e38) {
                st = ldr_fail(L, ENG_ERR_MANIFEST, "%s[%d] must be a finite number within "
                              "float32", side[k], i);
                break;
            }
            v[k][i] = (float)e->valuedouble;
        }
    }
    for (int i = 0; st == ENG_OK && i < n; i++)
        if (!(v[0][i] < v[1][i]))
            st = ldr_fail(L, ENG_ERR_MANIFEST, "low[%d] = %.9g must be below high[%d] = %.9g",
                          i, (double)v[0][i], i, (double)v[1][i]);
    ldr_pop(L, mark);
    if (st == ENG_OK) {
        m->info.prior_low = v[0];
        m->info.prior_high = v[1];
    }
    return st;
}

static enum eng_status load_names(struct ldr *L, const cJSON *names, const char *which, int n,
                                  const char ***out)
{
    const char **v = ldr_alloc(L, sizeof(char *) * (size_t)(n + 1));
    if (!v)
        return ENG_ERR_NOMEM;
    const cJSON *arr = cJSON_IsObject(names) ? cJSON_GetObjectItemCaseSensitive(names, which) : NULL;
    if (arr && (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) != n))
        return ldr_fail(L, ENG_ERR_MANIFEST, "names.%s must be a list of %d strings", which, n);
    for (int i = 0; i < n; i++) {
        const cJSON *s = arr ? cJSON_GetArrayItem(arr, i) : NULL;
        if (arr && (!cJSON_IsString(s) || strlen(s->valuestring) > 64 || !s->valuestring[0]))
            return ldr_fail(L, ENG_ERR_MANIFEST, "names.%s[%d] must be a non-empty string of at "
                            "most 64 characters", which, i);
        char *p = ldr_alloc(L, 72);
        if (!p)
            return ENG_ERR_NOMEM;
        if (arr)
            snprintf(p, 72, "%s", s->valuestring);
        else
            snprintf(p, 72, "%c%d", which[0], i);
        v[i] = p;
    }
    *out = v;
    return ENG_OK;
}

/* "shape": {"x": [C, H, W]} (1 to 3 positive ints whose product is dims.x; flow and cinn
 * only).  Absent: the vector shape (dims.x). */
static enum eng_status load_shape(struct ldr *L, struct eng_model *m, const cJSON *root)
{
    struct eng_info *in = &m->info;
    in->x_rank = 1, in->x_shape[0] = in->dims.x, in->x_shape[1] = in->x_shape[2] = 1;
    in->z_rank = 1, in->z_shape[0] = in->dims.x, in->z_shape[1] = in->z_shape[2] = 1;
    const cJSON *sj = cJSON_GetObjectItemCaseSensitive(root, "shape");
    if (!sj || cJSON_IsNull(sj))
        return ENG_OK;
    if (in->kind != ENG_KIND_FLOW && in->kind != ENG_KIND_CINN)
        return ldr_fail(L, ENG_ERR_MANIFEST, "field 'shape' is only valid for kinds flow and "
                        "cinn");
    const cJSON *xs = cJSON_IsObject(sj) ? cJSON_GetObjectItemCaseSensitive(sj, "x") : NULL;
    int n = cJSON_IsArray(xs) ? cJSON_GetArraySize(xs) : 0;
    if (n < 1 || n > 3)
        return ldr_fail(L, ENG_ERR_MANIFEST, "field 'shape' must be {\"x\": [C, H, W]}: a list "
                        "of 1 to 3 positive integers");
    long long prod = 1;
    for (int i = 0; i < n; i++) {
        const cJSON *e = cJSON_GetArrayItem(xs, i);
        if (!cJSON_IsNumber(e) || e->valuedouble < 1 || e->valuedouble > 65536 ||
            e->valuedouble != (double)(int)e->valuedouble)
            return ldr_fail(L, ENG_ERR_MANIFEST, "shape.x[%d] must be a positive integer", i);
        in->x_shape[i] = (int)e->valuedouble;
        prod *= in->x_shape[i];
    }
    for (int i = n; i < 3; i++)
        in->x_shape[i] = 1;
    if (prod != in->dims.x)
        return ldr_fail(L, ENG_ERR_MANIFEST, "shape.x has %lld elements, dims.x is %d", prod,
                        in->dims.x);
    in->x_rank = in->z_rank = n;
    for (int i = 0; i < 3; i++)
        in->z_shape[i] = in->x_shape[i];
    return ENG_OK;
}

/* "image": {"low": 0, "high": 1, "levels": 256} (optional; needs a shape.x [C, H, W]):
 * the value range of the pixels in x's units and the number of quantization levels. */
static enum eng_status load_image(struct ldr *L, struct eng_model *m, const cJSON *root)
{
    struct eng_info *in = &m->info;
    const cJSON *ij = cJSON_GetObjectItemCaseSensitive(root, "image");
    if (!ij || cJSON_IsNull(ij))
        return ENG_OK;
    if (!cJSON_IsObject(ij) || in->x_rank != 3)
        return ldr_fail(L, ENG_ERR_MANIFEST, "field 'image' must be an object {\"low\", "
                        "\"high\", \"levels\"} and needs a shape.x [C, H, W]");
    size_t mark = ldr_push(L, "image");
    enum eng_status st = ENG_OK;
    for (const cJSON *f = ij->child; st == ENG_OK && f; f = f->next)
        if (strcmp(f->string, "low") && strcmp(f->string, "high") && strcmp(f->string, "levels"))
            st = ldr_fail(L, ENG_ERR_MANIFEST, "unknown field '%.64s' (an image has low, high, "
                          "levels)", f->string);
    long levels = 256;
    if (st == ENG_OK)
        st = ldr_num(L, ij, "low", true, 0.0, &in->image_low);
    if (st == ENG_OK)
        st = ldr_num(L, ij, "high", true, 0.0, &in->image_high);
    if (st == ENG_OK)
        st = ldr_int(L, ij, "levels", false, 256, 2, 1 << 16, &levels);
    if (st == ENG_OK && !(isfinite(in->image_low) && isfinite(in->image_high) &&
                          in->image_low < in->image_high))
        st = ldr_fail(L, ENG_ERR_MANIFEST, "low must be below high (finite numbers)");
    ldr_pop(L, mark);
    in->image_levels = (int)levels;
    in->has_image = st == ENG_OK;
    return st;
}

/* conditions[k].broadcast: [H, W] or [L], the condition vector repeated at every position,
 * giving a (vec, H, W) or (vec, L) condition (FrEIA image blocks concatenate conditions
 * along channels); or conditions[k].shape: [C, H, W] or [C, L], a condition that already
 * is an image (its width read channel-major).  Sets vec, width, rank and shape of c from
 * its vector width. */
static enum eng_status load_broadcast(struct ldr *L, const cJSON *e, struct cond_def *c)
{
    c->vec = c->width;
    c->rank = 1, c->shape[0] = c->vec, c->shape[1] = c->shape[2] = 1;
    const cJSON *bj = cJSON_GetObjectItemCaseSensitive(e, "broadcast");
    const cJSON *sj = cJSON_GetObjectItemCaseSensitive(e, "shape");
    if (sj && !cJSON_IsNull(sj)) {
        /* "shape": [C, H, W] or [C, L]: the condition row is already an image */
        int n = cJSON_IsArray(sj) ? cJSON_GetArraySize(sj) : 0;
        if (bj && !cJSON_IsNull(bj))
            return ldr_fail(L, ENG_ERR_MANIFEST, "give either 'shape' or 'broadcast', not both");
        if (n < 2 || n > 3)
            return ldr_fail(L, ENG_ERR_MANIFEST, "field 'shape' must be [C, H, W] or [C, L]");
        long long prod = 1;
        for (int i = 0; i < n; i++) {
            const cJSON *v = cJSON_GetArrayItem(sj, i);
            if (!cJSON_IsNumber(v) || v->valuedouble < 1 || v->valuedouble > 65536 ||
                v->valuedouble != (double)(int)v->valuedouble)
                return ldr_fail(L, ENG_ERR_MANIFEST, "shape[%d] must be a positive integer", i);
            c->shape[i] = (int)v->valuedouble;
            prod *= c->shape[i];
        }
        if (prod != c->width)
            return ldr_fail(L, ENG_ERR_MANIFEST, "field 'shape' has %lld elements, the "
                            "condition has width %d", prod, c->width);
        c->rank = n;
        return ENG_OK;
    }
    if (!bj || cJSON_IsNull(bj))
        return ENG_OK;
    int n = cJSON_IsArray(bj) ? cJSON_GetArraySize(bj) : 0;
    if (n < 1 || n > 2)
        return ldr_fail(L, ENG_ERR_MANIFEST, "field 'broadcast' must be [H, W] or [L]: 1 or 2 "
                        "positive integers");
    long long pos = 1;
    for (int i = 0; i < n; i++) {
        const cJSON *v = cJSON_GetArrayItem(bj, i);
        if (!cJSON_IsNumber(v) || v->valuedouble < 1 || v->valuedouble > 65536 ||
            v->valuedouble != (double)(int)v->valuedouble)
            return ldr_fail(L, ENG_ERR_MANIFEST, "broadcast[%d] must be a positive integer", i);
        c->shape[1 + i] = (int)v->valuedouble;
        pos *= c->shape[1 + i];
    }
    if (pos * c->vec > (1 << 20))
        return ldr_fail(L, ENG_ERR_MANIFEST, "field 'broadcast': %d x %lld condition values "
                        "per row is over %d", c->vec, pos, 1 << 20);
    c->rank = 1 + n;
    c->width = (int)(pos * c->vec);
    return ENG_OK;
}

/* inn layout: a list of segment names in order; fills offsets (-1 when absent). */
static enum eng_status load_layout(struct ldr *L, const cJSON *lay, const char *side,
                                   const char *const *names, const int *widths, int nseg,
                                   int *offs, int total)
{
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(lay, side);
    if (!cJSON_IsArray(arr))
        return ldr_fail(L, ENG_ERR_MANIFEST, "layout.%s must be a list of segment names", side);
    for (int k = 0; k < nseg; k++)
        offs[k] = -1;
    int pos = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr)
    {
        int found = -1;
        for (int k = 0; k < nseg; k++)
            if (cJSON_IsString(it) && strcmp(it->valuestring, names[k]) == 0)
                found = k;
        if (found < 0 || offs[found] >= 0)
            return ldr_fail(L, ENG_ERR_MANIFEST, "layout.%s: entries must be distinct names "
                            "among the segments of this side", side);
        offs[found] = pos;
        pos += widths[found];
    }
    for (int k = 0; k < nseg; k++)
        if (offs[k] < 0) {
            if (widths[k] != 0)
                return ldr_fail(L, ENG_ERR_MANIFEST, "layout.%s lacks segment '%s'", side,
                                names[k]);
            offs[k] = 0;
        }
    if (pos != total)
        return ldr_fail(L, ENG_ERR_MANIFEST, "layout.%s covers %d columns, expected %d", side,
                        pos, total);
    return ENG_OK;
}

static enum eng_status build(struct ldr *L, struct eng_model *m, const cJSON *root,
                             unsigned flags, struct eng_ws **ws_out)
{
    enum eng_status st;
    long ver;
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(root, "format");
    if (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, "innserve-manifest") != 0)
        return ldr_fail(L, ENG_ERR_MANIFEST, "manifest field 'format' must be "
                        "\"innserve-manifest\"");
    if ((st = ldr_int(L, root, "version", true, 1, 1, 1000000, &ver)) != ENG_OK)
        return st;
    if (ver != 1)
        return ldr_fail(L, ENG_ERR_MANIFEST, "manifest version %ld is not supported (this "
                        "engine reads version 1)", ver);
    static const char *const kinds[] = {"flow", "cinn", "inn", "mlp", "mdn"};
    int kind;
    if ((st = ldr_enum(L, root, "kind", true, 0, kinds, 5, &kind)) != ENG_OK)
        return st;
    m->info.kind = (enum eng_kind)kind;

    const cJSON *desc = cJSON_GetObjectItemCaseSensitive(root, "description");
    if (desc && !cJSON_IsString(desc))
        return ldr_fail(L, ENG_ERR_MANIFEST, "field 'description' must be a string");
    m->description = strdup(desc ? desc->valuestring : "");
    if (!m->description)
        return ldr_fail(L, ENG_ERR_NOMEM, "out of memory");
    m->info.description = m->description;

    /* dims */
    const cJSON *dj;
    if ((st = ldr_obj(L, root, "dims", true, &dj)) != ENG_OK)
        return st;
    size_t mark = ldr_push(L, "dims");
    long x, y = 0, z = 0, px = 0, py = 0;
    const long MAXD = 1 << 16;
    st = ldr_int(L, dj, "x", true, 0, 1, MAXD, &x);
    if (st == ENG_OK && kind != ENG_KIND_FLOW)
        st = ldr_int(L, dj, "y", true, 0, 1, MAXD, &y);
    if (st == ENG_OK && kind == ENG_KIND_INN) {
        st = ldr_int(L, dj, "z", true, 0, 0, MAXD, &z);
        if (st == ENG_OK)
            st = ldr_int(L, dj, "pad_x", false, 0, 0, MAXD, &px);
        if (st == ENG_OK)
            st = ldr_int(L, dj, "pad_y", false, 0, 0, MAXD, &py);
        if (st == ENG_OK && x + px != z + py + y)
            st = ldr_fail(L, ENG_ERR_MANIFEST, "x + pad_x = %ld must equal z + pad_y + y = %ld",
                          x + px, z + py + y);
    } else if (kind == ENG_KIND_FLOW || kind == ENG_KIND_CINN) {
        z = x;
    }
    ldr_pop(L, mark);
    if (st != ENG_OK)
        return st;
    m->info.dims = (struct eng_dims){(int)x, (int)y, (int)z, (int)px, (int)py};
    m->D = kind == ENG_KIND_INN ? (int)(x + px) : (int)x;

    const cJSON *names = cJSON_GetObjectItemCaseSensitive(root, "names");
    if (names && !cJSON_IsObject(names))
        return ldr_fail(L, ENG_ERR_MANIFEST, "field 'names' must be an object");
    if ((st = load_names(L, names, "x", (int)x, &m->x_names)) != ENG_OK)
        return st;
    if (y > 0 && (st = load_names(L, names, "y", (int)y, &m->y_names)) != ENG_OK)
        return st;
    m->info.x_names = m->x_names;
    m->info.y_names = y > 0 ? m->y_names : NULL;
    if ((st = load_shape(L, m, root)) != ENG_OK)
        return st;
    if ((st = load_image(L, m, root)) != ENG_OK)
        return st;

    const cJSON *sj;
    if ((st = ldr_obj(L, root, "standardize", false, &sj)) != ENG_OK)
        return st;
    if (sj && (st = load_std(L, sj, "x", (int)x, &m->sx)) != ENG_OK)
        return st;
    if (sj && y > 0 && (st = load_std(L, sj, "y", (int)y, &m->sy)) != ENG_OK)
        return st;

    const cJSON *pj = cJSON_GetObjectItemCaseSensitive(root, "prior");
    if (pj && !cJSON_IsNull(pj)) {
        if (kind == ENG_KIND_MLP)
            return ldr_fail(L, ENG_ERR_MANIFEST, "field 'prior' is for models that sample "
                            "(flow, cinn, inn), not an mlp");
        if ((st = load_prior(L, m, pj, (int)x)) != ENG_OK)
            return st;
    }

    /* conditions (cinn) */
    const cJSON *cj = cJSON_GetObjectItemCaseSensitive(root, "conditions");
    if (kind == ENG_KIND_CINN) {
        if (!cJSON_IsArray(cj) || cJSON_GetArraySize(cj) < 1 ||
            cJSON_GetArraySize(cj) > ENG_MAX_CONDITIONS)
            return ldr_fail(L, ENG_ERR_MANIFEST, "field 'conditions' must be a list of 1 to %d "
                            "entries for a cinn", ENG_MAX_CONDITIONS);
        m->n_conds = cJSON_GetArraySize(cj);
        m->conds = ldr_alloc(L, sizeof(*m->conds) * (size_t)m->n_conds);
        if (!m->conds)
            return ENG_ERR_NOMEM;
        for (int k = 0; k < m->n_conds; k++) {
            const cJSON *e = cJSON_GetArrayItem(cj, k);
            mark = ldr_push(L, "conditions[%d]", k);
            if (!cJSON_IsObject(e))
                return ldr_fail(L, ENG_ERR_MANIFEST, "must be an object {\"net\": null | subnet}");
            const cJSON *net = cJSON_GetObjectItemCaseSensitive(e, "net");
            if (net && !cJSON_IsNull(net)) {
                const struct subnet *cn;
                if ((st = ldr_subnet(L, e, "net", 0, (int)y, -1, &cn)) != ENG_OK)
                    return st;
                if (cn->dout > MAXD)
                    return ldr_fail(L, ENG_ERR_MANIFEST, "field 'net': output width %d is over "
                                    "%ld", cn->dout, MAXD);
                m->conds[k].net = cn;
                m->conds[k].width = cn->dout;
            } else {
                m->conds[k].width = (int)y;
            }
            if ((st = load_broadcast(L, e, &m->conds[k])) != ENG_OK)
                return st;
            m->cond_total += m->conds[k].width;
            ldr_pop(L, mark);
        }
    } else if (cj && !cJSON_IsNull(cj)) {
        return ldr_fail(L, ENG_ERR_MANIFEST, "field 'conditions' is only valid for kind cinn");
    }

    /* inn layout and sigmas */
    if (kind == ENG_KIND_INN) {
        const cJSON *lay;
        if ((st = ldr_obj(L, root, "layout", true, &lay)) != ENG_OK)
            return st;
        mark = ldr_push(L, "layout");
        static const char *const in_names[] = {"x", "pad"}, *const out_names[] = {"z", "pad", "y"};
        int in_w[2] = {(int)x, (int)px}, out_w[3] = {(int)z, (int)py, (int)y}, in_o[2], out_o[3];
        st = load_layout(L, lay, "input", in_names, in_w, 2, in_o, m->D);
        if (st == ENG_OK)
            st = load_layout(L, lay, "output", out_names, out_w, 3, out_o, m->D);
        ldr_pop(L, mark);
        if (st != ENG_OK)
            return st;
        m->in_x = in_o[0], m->in_pad = in_o[1];
        m->out_z = out_o[0], m->out_pad = out_o[1], m->out_y = out_o[2];
        const cJSON *ij;
        if ((st = ldr_obj(L, root, "inn", false, &ij)) != ENG_OK)
            return st;
        mark = ldr_push(L, "inn");
        st = ldr_num(L, ij, "sigma_y", false, 0.1, &m->sigma_y);
        if (st == ENG_OK)
            st = ldr_num(L, ij, "sigma_pad", false, 0.05, &m->sigma_pad);
        if (st == ENG_OK && !(m->sigma_y > 0 && m->sigma_pad > 0))
            st = ldr_fail(L, ENG_ERR_MANIFEST, "sigma_y and sigma_pad must be > 0");
        ldr_pop(L, mark);
        if (st != ENG_OK)
            return st;
    }

    /* blocks, graph or network */
    const cJSON *blocks = cJSON_GetObjectItemCaseSensitive(root, "blocks");
    const cJSON *graph = cJSON_GetObjectItemCaseSensitive(root, "graph");
    size_t sub_scratch = 0;
    if (kind != ENG_KIND_MDN && cJSON_GetObjectItemCaseSensitive(root, "mixture"))
        return ldr_fail(L, ENG_ERR_MANIFEST, "field 'mixture' is only valid for kind mdn");
    const cJSON *text = NULL; /* what the metadata shows as blocks, unless graph.c sets it */
    if (kind == ENG_KIND_MDN) {
        if (blocks || graph || cJSON_GetObjectItemCaseSensitive(root, "network"))
            return ldr_fail(L, ENG_ERR_MANIFEST, "fields 'blocks', 'graph' and 'network' are "
                            "not valid for kind mdn (use 'mixture')");
        text = cJSON_GetObjectItemCaseSensitive(root, "mixture");
        int hidden;
        if ((st = mdn_load(L, m, text, &hidden, &sub_scratch)) != ENG_OK)
            return st;
        m->cond_total = hidden; /* the tile's condition rows hold the hidden features */
    } else if (kind == ENG_KIND_MLP) {
        if (blocks || graph)
            return ldr_fail(L, ENG_ERR_MANIFEST, "field '%s' is not valid for kind mlp (use "
                            "'network')", blocks ? "blocks" : "graph");
        if ((st = ldr_subnet(L, root, "network", (int)x, 0, (int)y, &m->mlp)) != ENG_OK)
            return st;
        sub_scratch = subnet_scratch(m->mlp, ENG_TILE_ROWS);
        m->D = m->mlp->max_width > (int)x ? m->mlp->max_width : (int)x;
        if ((int)y > m->D)
            m->D = (int)y;
        text = cJSON_GetObjectItemCaseSensitive(root, "network");
    } else if (blocks && graph) {
        return ldr_fail(L, ENG_ERR_MANIFEST, "fields 'blocks' and 'graph' both given: a model "
                        "is a chain of blocks or a graph, not both");
    } else if (graph) {
        if ((st = graph_load(L, m, graph)) != ENG_OK)
            return st;
    } else {
        if ((st = graph_load_chain(L, m, blocks)) != ENG_OK)
            return st;
    }
    for (int k = 0; k < m->n_conds; k++)
        if (m->conds[k].net) {
            size_t s = subnet_scratch(m->conds[k].net, ENG_TILE_ROWS);
            if (s > sub_scratch)
                sub_scratch = s;
        }
    if (sub_scratch > m->blk_scratch)
        m->blk_scratch = sub_scratch;

    if (m->mdn) {
        m->cert = (struct eng_certificate){.invertible = false, .guarantee = ENG_GUARANTEE_NONE,
                                           .certified = false};
        snprintf(m->cert.reason, sizeof m->cert.reason, "not a bijection: a mixture density "
                 "network gives a Gaussian mixture over x for each y; it has a density and "
                 "samples, but no forward or inverse map");
    } else if ((st = cert_build(L, m->blocks, m->n_blocks, m->mlp, &m->cert)) != ENG_OK) {
        return st;
    }
    if (m->n_numeric && (st = graph_numeric_budget(L, m)) != ENG_OK)
        return st;
    if (text) {
        m->blocks_text = cJSON_PrintUnformatted(text);
        if (!m->blocks_text)
            return ldr_fail(L, ENG_ERR_NOMEM, "out of memory");
        m->info.blocks_json = m->blocks_text;
    }
    m->info.n_blocks = m->n_blocks;
    m->info.n_params = L->n_params;
    m->info.numeric_inverse = m->n_numeric > 0;

    const size_t T = ENG_TILE_ROWS;
    m->ws_floats = T * (size_t)m->D + T * (size_t)(y ? y : 1) +
                   T * (size_t)(m->cond_total ? m->cond_total : 1) + m->g.area +
                   m->blk_scratch + 64 +
                   (m->info.prior_low ? T * (size_t)x : 0);
    m->ws_doubles = 2 * T + (m->n_numeric ? T * (size_t)m->D : 0) +
                    (m->mdn ? mdn_par_doubles(m->mdn) + 2 * (size_t)x : 0) +
                    (m->info.prior_low ? T : 0);

    /* tests */
    const cJSON *tj = cJSON_GetObjectItemCaseSensitive(root, "tests");
    if (flags & ENG_LOAD_NO_SELFTEST)
        return ENG_OK;
    if (!cJSON_IsObject(tj))
        return ldr_fail(L, ENG_ERR_MANIFEST, "field 'tests' (test vectors) is missing: the "
                        "exporter must store inputs and the outputs it computed");
    struct eng_ws *ws = eng_ws_new();
    if (!ws)
        return ldr_fail(L, ENG_ERR_NOMEM, "out of memory");
    *ws_out = ws;
    if (eng_ws_reserve(ws, m) != ENG_OK)
        return ldr_fail(L, ENG_ERR_NOMEM, "out of memory for the workspace");
    mark = ldr_push(L, "tests");
    st = model_self_test(L, m, tj, ws);
    ldr_pop(L, mark);
    return st;
}

/* The load from an opened container f (closed here, whatever happens); path names it in
 * messages.  eng_model_load_ex and eng_model_load_mem differ only in how f is opened. */
static enum eng_status load_file(struct st_file *f, const char *path, unsigned flags,
                                 struct eng_model **out, char err[ENG_ERR_LEN])
{
    enum eng_status st;
    struct eng_model *m = calloc(1, sizeof(*m));
    unsigned char *used = calloc((size_t)st_count(f) + 1, 1);
    if (!m || !used) {
        free(m);
        free(used);
        st_close(f);
        return eng_errf(err, ENG_ERR_NOMEM, "%s: out of memory", path);
    }
    atomic_init(&m->refs, 1);
    struct ldr L = {.path = path, .f = f, .err = err, .arena = &m->arena, .used = used};
    L.ctx[0] = '\0';
    cJSON *root = NULL;
    struct eng_ws *ws = NULL;

    char kerr[ENG_ERR_LEN];
    m->kern = L.k = kern_select(getenv("INNSERVE_KERNELS"), kerr);
    if (!m->kern) {
        st = ldr_fail(&L, ENG_ERR_ARG, "%s", kerr);
        goto done;
    }
    m->info.kernels = m->kern->name;

    size_t flen;
    const uint8_t *bytes = st_bytes(f, &flen);
    sha256_hex(bytes, flen, m->info.sha256);

    const char *fmt = st_metadata(f, "format");
    const char *man = st_metadata(f, "manifest");
    if (!fmt && !man) {
        st = ldr_fail(&L, ENG_ERR_MANIFEST, "__metadata__ has no 'format' and no 'manifest': "
                      "not an innserve checkpoint (export it with innserve.export)");
        goto done;
    }
    if (!fmt || strcmp(fmt, "innserve") != 0) {
        st = ldr_fail(&L, ENG_ERR_MANIFEST, "__metadata__.format must be \"innserve\" (is this "
                      "an innserve checkpoint? export it with innserve.export)");
        goto done;
    }
    if (!man) {
        st = ldr_fail(&L, ENG_ERR_MANIFEST, "__metadata__.manifest is missing");
        goto done;
    }
    root = cJSON_Parse(man);
    if (!root && jsyn_valid(man, strlen(man), -1, NULL)) {
        st = ldr_fail(&L, ENG_ERR_NOMEM, "out of memory parsing __metadata__.manifest");
        goto done;
    }
    if (!cJSON_IsObject(root)) {
        st = ldr_fail(&L, ENG_ERR_MANIFEST, "__metadata__.manifest is not a JSON object");
        goto done;
    }
    {
        bool nomem;
        const char *where = NULL,
                   *dup = st_json_duplicate_key(root, "the manifest", &where, &nomem);
        if (nomem) {
            st = ldr_fail(&L, ENG_ERR_NOMEM, "out of memory checking the manifest's keys");
            goto done;
        }
        if (dup) {
            st = ldr_fail(&L, ENG_ERR_MANIFEST, "__metadata__.manifest: duplicate key \"%.64s\" "
                          "in %.80s: a key may appear once", dup, where);
            goto done;
        }
    }
    m->manifest_text = strdup(man);
    if (!m->manifest_text) {
        st = ldr_fail(&L, ENG_ERR_NOMEM, "out of memory");
        goto done;
    }
    m->info.manifest_json = m->manifest_text;
    st = build(&L, m, root, flags, &ws);
done:
    if (st != ENG_OK && !err[0])
        ldr_fail(&L, st, "%s", eng_status_str(st));
    eng_ws_free(ws);
    cJSON_Delete(root);
    free(used);
    st_close(f); /* every tensor was copied into the arena */
    if (st != ENG_OK) {
        model_free(m);
        return st;
    }
    *out = m;
    return ENG_OK;
}

enum eng_status eng_model_load_ex(const char *path, unsigned flags, struct eng_model **out,
                                  char err[ENG_ERR_LEN])
{
    *out = NULL;
    err[0] = '\0';
    struct st_file *f = NULL;
    enum eng_status st = st_open(path, &f, err);
    if (st != ENG_OK)
        return st;
    return load_file(f, path, flags, out, err);
}

enum eng_status eng_model_load_mem(const void *bytes, size_t len, const char *label,
                                   unsigned flags, struct eng_model **out,
                                   char err[ENG_ERR_LEN])
{
    *out = NULL;
    err[0] = '\0';
    if (!label)
        label = "<memory>";
    struct st_file *f = NULL;
    enum eng_status st = st_open_mem(bytes, len, label, &f, err);
    if (st != ENG_OK)
        return st;
    return load_file(f, label, flags, out, err);
}

enum eng_status eng_model_load(const char *path, struct eng_model **out, char err[ENG_ERR_LEN])
{
    return eng_model_load_ex(path, 0, out, err);
}
