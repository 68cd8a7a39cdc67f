/*
 * model.c — a loaded model: manifest → standardization + conditions + blocks (or an MLP)
 * + the layout of its kind; and the batched operations of engine.h (forward, inverse,
 * log_prob, sample), run tile by tile through a per-thread workspace.
 *
 * Design notes
 *  1. Everything a model owns is allocated at load in its arena (loader.c) and never
 *     written after eng_model_load returns, so threads share it without locks.
 *  2. A workspace holds, for one tile of ENG_TILE_ROWS rows: the state (rows x D), the
 *     standardized y, each condition, the largest block/subnet scratch, and per-row
 *     doubles.  Operations process rows in tiles; nothing is allocated per row or tile.
 *  3. A condition that is one broadcast row (y_rows == 1, and always when sampling) is
 *     computed once per call, and subnets fold it into their first-layer bias.
 *  4. log-dets accumulate in double.  Standardization adds -sum(log std_x) forward.
 */
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blas.h"
#include "loader.h"
#include "sha256.h"

#define LOG_2PI 1.8378770664093453

struct stdz {
    const float *mean, *std; /* NULL when absent */
    double log_std_sum;
};

struct cond_def {
    const struct subnet *net; /* NULL: the condition is y_s itself */
    int width;
};

struct eng_model {
    atomic_int refs;
    struct eng_info info;
    struct arena_chunk *arena;
    char *manifest_text;
    char *blocks_text;
    char *description;
    const char **x_names, **y_names;

    int D;                   /* block width */
    int n_blocks;
    struct blk *blocks;
    int n_numeric;
    int n_conds;
    struct cond_def *conds;
    struct stdz sx, sy;
    const struct subnet *mlp;
    /* inn layout: offsets of the segments in the input and output rows */
    int in_x, in_pad, out_z, out_pad, out_y;
    double sigma_y, sigma_pad;

    size_t ws_floats, ws_doubles; /* per workspace, for ENG_TILE_ROWS rows */
    size_t blk_scratch;           /* floats */
    int cond_total;               /* sum of condition widths */
    struct eng_certificate cert;
    /* numeric inverses (issue 4): per block, the share of the end-to-end tolerance and the
     * factor by which an error in its output grows by the returned x (+inf if unknown) */
    double *tol_frac, *err_amp;
};

struct eng_ws {
    float *f;
    size_t nf;
    double *d;
    size_t nd;
};

static const char *const status_str[ENG_STATUS_COUNT] = {
    [ENG_OK] = "ok",
    [ENG_ERR_NOMEM] = "out of memory",
    [ENG_ERR_IO] = "i/o error",
    [ENG_ERR_FORMAT] = "malformed checkpoint container",
    [ENG_ERR_MANIFEST] = "invalid manifest",
    [ENG_ERR_TENSOR] = "invalid tensor",
    [ENG_ERR_TESTVEC] = "test vectors disagree",
    [ENG_ERR_SHAPE] = "shape mismatch",
    [ENG_ERR_NONFINITE] = "non-finite input",
    [ENG_ERR_UNSUPPORTED] = "operation not defined for this model kind",
    [ENG_ERR_NUMERIC] = "numerical failure",
    [ENG_ERR_ARG] = "argument out of range",
};

const char *eng_status_str(enum eng_status st)
{
    return (unsigned)st < ENG_STATUS_COUNT ? status_str[st] : "unknown status";
}

const char *eng_kind_str(enum eng_kind k)
{
    static const char *const n[] = {"flow", "cinn", "inn", "mlp"};
    return (unsigned)k < 4 ? n[k] : "?";
}

static enum eng_status errf(char *err, enum eng_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static enum eng_status errf(char *err, enum eng_status st, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, ENG_ERR_LEN, fmt, ap);
        va_end(ap);
    }
    return st;
}

/* ==== workspace ============================================================================ */

struct eng_ws *eng_ws_new(void) { return calloc(1, sizeof(struct eng_ws)); }

void eng_ws_free(struct eng_ws *ws)
{
    if (!ws)
        return;
    free(ws->f);
    free(ws->d);
    free(ws);
}

enum eng_status eng_ws_reserve(struct eng_ws *ws, const struct eng_model *m)
{
    if (ws->nf < m->ws_floats) {
        float *p = aligned_alloc(64, ((m->ws_floats * sizeof(float)) + 63) / 64 * 64);
        if (!p)
            return ENG_ERR_NOMEM;
        free(ws->f);
        ws->f = p;
        ws->nf = m->ws_floats;
    }
    if (ws->nd < m->ws_doubles) {
        double *p = malloc(m->ws_doubles * sizeof(double));
        if (!p)
            return ENG_ERR_NOMEM;
        free(ws->d);
        ws->d = p;
        ws->nd = m->ws_doubles;
    }
    return ENG_OK;
}

/* Carve the workspace for one tile. */
struct tile {
    float *state;    /* T x D */
    float *ys;       /* T x dims.y (standardized y) */
    float *cond;     /* T x cond_total, conditions side by side */
    float *scratch;  /* block / subnet scratch */
    double *ld;      /* T log-dets */
    double *aux;     /* T doubles */
    double *xd;      /* T x D doubles: the state between numeric blocks (NULL without them) */
};

static struct tile carve(const struct eng_model *m, struct eng_ws *ws)
{
    const size_t T = ENG_TILE_ROWS;
    struct tile t;
    t.state = ws->f;
    t.ys = t.state + T * (size_t)m->D;
    t.cond = t.ys + T * (size_t)(m->info.dims.y ? m->info.dims.y : 1);
    t.scratch = t.cond + T * (size_t)(m->cond_total ? m->cond_total : 1);
    t.ld = ws->d;
    t.aux = ws->d + T;
    t.xd = m->n_numeric ? ws->d + 2 * T : NULL;
    return t;
}

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
                out->log_std_sum += log((double)out->std[i]);
        }
    }
    ldr_pop(L, mark);
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

static enum eng_status load_blocks(struct ldr *L, struct eng_model *m, const cJSON *blocks)
{
    if (!cJSON_IsArray(blocks) || cJSON_GetArraySize(blocks) < 1 ||
        cJSON_GetArraySize(blocks) > 4096)
        return ldr_fail(L, ENG_ERR_MANIFEST, "field 'blocks' must be a non-empty list (at most "
                        "4096)");
    m->n_blocks = cJSON_GetArraySize(blocks);
    m->blocks = ldr_alloc(L, sizeof(struct blk) * (size_t)m->n_blocks);
    if (!m->blocks)
        return ENG_ERR_NOMEM;
    for (int i = 0; i < m->n_blocks; i++) {
        const cJSON *bj = cJSON_GetArrayItem(blocks, i);
        const cJSON *ty = cJSON_IsObject(bj) ? cJSON_GetObjectItemCaseSensitive(bj, "type") : NULL;
        size_t mark = ldr_push(L, "blocks[%d]", i);
        if (!cJSON_IsString(ty)) {
            ldr_fail(L, ENG_ERR_MANIFEST, "must be an object with a string field 'type'");
            return ENG_ERR_MANIFEST;
        }
        const struct blk_ops *ops = blk_lookup(ty->valuestring);
        if (!ops)
            return ldr_fail(L, ENG_ERR_MANIFEST, "unknown block type \"%.60s\"; known types: %s",
                            ty->valuestring, blk_known_types());
        ldr_pop(L, mark);
        mark = ldr_push(L, "blocks[%d] (%s)", i, ops->type);
        struct blk *b = &m->blocks[i];
        b->ops = ops, b->index = i, b->d = m->D, b->cond = -1;
        long c;
        enum eng_status st = ldr_int(L, bj, "cond", false, -1, -1, m->n_conds - 1, &c);
        if (st != ENG_OK) {
            if (m->n_conds == 0)
                L->err[0] = '\0',
                st = ldr_fail(L, ENG_ERR_MANIFEST, "field 'cond': this %s model has no "
                              "conditions", eng_kind_str(m->info.kind));
            return st;
        }
        if (c >= 0 && !ops->takes_cond)
            return ldr_fail(L, ENG_ERR_MANIFEST, "field 'cond': %s takes no condition", ops->type);
        if (c < 0 && ops->needs_cond)
            return ldr_fail(L, ENG_ERR_MANIFEST, "field 'cond' is missing: %s requires a "
                            "condition", ops->type);
        b->cond = (int)c;
        b->cw = c >= 0 ? m->conds[c].width : 0;
        long long before = L->n_params;
        if ((st = ops->load(b, L, bj)) != ENG_OK) {
            if (!L->err[0])
                ldr_fail(L, st, "%s", eng_status_str(st));
            return st;
        }
        b->n_params = L->n_params - before;
        if (b->numeric)
            m->n_numeric++;
        size_t s = ops->scratch(b, ENG_TILE_ROWS);
        if (s > m->blk_scratch)
            m->blk_scratch = s;
        ldr_pop(L, mark);
    }
    return ENG_OK;
}

static enum eng_status self_test(struct ldr *L, struct eng_model *m, const cJSON *tj,
                                 struct eng_ws *ws);

/* Tolerance split and error propagation for numeric blocks (docs/inversion.md).  The
 * inverse runs from the last block to the first, so an error e_b left in block b's output
 * reaches x multiplied by at most A_b = prod_{j<b} Lip(f_j^-1) (from the certificates)
 * times max std_x.  Block b gets tol / (n_numeric * A'_b), A'_b the product of the known
 * factors (unknown ones, e.g. an affine coupling's, count as 1), and reports A_b e_b
 * (+inf when a factor is unknown). */
static enum eng_status numeric_budget(struct ldr *L, struct eng_model *m)
{
    m->tol_frac = ldr_alloc(L, sizeof(double) * (size_t)m->n_blocks);
    m->err_amp = ldr_alloc(L, sizeof(double) * (size_t)m->n_blocks);
    if (!m->tol_frac || !m->err_amp)
        return ENG_ERR_NOMEM;
    double smax = 1.0;
    if (m->sx.std) {
        smax = 0.0;
        for (int k = 0; k < m->info.dims.x; k++)
            smax = fmax(smax, (double)m->sx.std[k]);
    }
    double known = 1.0, amp = smax;
    for (int b = 0; b < m->n_blocks; b++) {
        m->tol_frac[b] = 1.0 / ((double)m->n_numeric * known);
        m->err_amp[b] = amp;
        double li = m->cert.blocks[b].lipschitz_inverse;
        if (isfinite(li) && li > 0) {
            known *= li;
            amp *= li;
        } else {
            amp = INFINITY;
        }
    }
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
    static const char *const kinds[] = {"flow", "cinn", "inn", "mlp"};
    int kind;
    if ((st = ldr_enum(L, root, "kind", true, 0, kinds, 4, &kind)) != ENG_OK)
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

    const cJSON *sj;
    if ((st = ldr_obj(L, root, "standardize", false, &sj)) != ENG_OK)
        return st;
    if (sj && (st = load_std(L, sj, "x", (int)x, &m->sx)) != ENG_OK)
        return st;
    if (sj && y > 0 && (st = load_std(L, sj, "y", (int)y, &m->sy)) != ENG_OK)
        return st;

    /* conditions (cinn) */
    const cJSON *cj = cJSON_GetObjectItemCaseSensitive(root, "conditions");
    if (kind == ENG_KIND_CINN) {
        if (!cJSON_IsArray(cj) || cJSON_GetArraySize(cj) < 1 || cJSON_GetArraySize(cj) > 64)
            return ldr_fail(L, ENG_ERR_MANIFEST, "field 'conditions' must be a list of 1 to 64 "
                            "entries for a cinn");
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
                const cJSON *layers = cJSON_GetObjectItemCaseSensitive(net, "layers");
                const cJSON *last = cJSON_IsArray(layers) ? cJSON_GetArrayItem(layers,
                                        cJSON_GetArraySize(layers) - 1) : NULL;
                /* The output width is that of the last Linear layer. */
                int outw = -1;
                const cJSON *lj;
                cJSON_ArrayForEach(lj, layers)
                {
                    const cJSON *w = cJSON_GetObjectItemCaseSensitive(lj, "weight");
                    const struct st_tensor *t = cJSON_IsString(w) ? st_find(L->f, w->valuestring) : NULL;
                    if (t && t->ndim == 2)
                        outw = (int)t->shape[0];
                }
                (void)last;
                if (outw <= 0 || outw > MAXD)
                    return ldr_fail(L, ENG_ERR_MANIFEST, "field 'net' must be a subnet whose "
                                    "Linear layers name existing (out, in) weight tensors");
                if ((st = ldr_subnet(L, e, "net", 0, (int)y, outw, &m->conds[k].net)) != ENG_OK)
                    return st;
                m->conds[k].width = outw;
            } else {
                m->conds[k].width = (int)y;
            }
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

    /* blocks or network */
    const cJSON *blocks = cJSON_GetObjectItemCaseSensitive(root, "blocks");
    size_t sub_scratch = 0;
    if (kind == ENG_KIND_MLP) {
        if (blocks)
            return ldr_fail(L, ENG_ERR_MANIFEST, "field 'blocks' is not valid for kind mlp (use "
                            "'network')");
        if ((st = ldr_subnet(L, root, "network", (int)x, 0, (int)y, &m->mlp)) != ENG_OK)
            return st;
        sub_scratch = subnet_scratch(m->mlp, ENG_TILE_ROWS);
        m->D = m->mlp->max_width > (int)x ? m->mlp->max_width : (int)x;
        if ((int)y > m->D)
            m->D = (int)y;
        blocks = cJSON_GetObjectItemCaseSensitive(root, "network");
    } else {
        if ((st = load_blocks(L, m, blocks)) != ENG_OK)
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

    if ((st = cert_build(L, m->blocks, m->n_blocks, m->mlp, &m->cert)) != ENG_OK)
        return st;
    if (m->n_numeric && (st = numeric_budget(L, m)) != ENG_OK)
        return st;
    m->info.n_blocks = m->n_blocks;
    m->info.n_params = L->n_params;
    m->info.numeric_inverse = m->n_numeric > 0;
    m->blocks_text = cJSON_PrintUnformatted(blocks);
    if (!m->blocks_text)
        return ldr_fail(L, ENG_ERR_NOMEM, "out of memory");
    m->info.blocks_json = m->blocks_text;

    const size_t T = ENG_TILE_ROWS;
    m->ws_floats = T * (size_t)m->D + T * (size_t)(y ? y : 1) +
                   T * (size_t)(m->cond_total ? m->cond_total : 1) + m->blk_scratch + 64;
    m->ws_doubles = 2 * T + (m->n_numeric ? T * (size_t)m->D : 0);

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
    st = self_test(L, m, tj, ws);
    ldr_pop(L, mark);
    return st;
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
    struct eng_model *m = calloc(1, sizeof(*m));
    unsigned char *used = calloc((size_t)st_count(f) + 1, 1);
    if (!m || !used) {
        free(m);
        free(used);
        st_close(f);
        return errf(err, ENG_ERR_NOMEM, "%s: out of memory", path);
    }
    atomic_init(&m->refs, 1);
    struct ldr L = {.path = path, .f = f, .err = err, .arena = &m->arena, .used = used};
    L.ctx[0] = '\0';
    cJSON *root = NULL;
    struct eng_ws *ws = NULL;

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
    if (!cJSON_IsObject(root)) {
        st = ldr_fail(&L, ENG_ERR_MANIFEST, "__metadata__.manifest is not a JSON object");
        goto done;
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

enum eng_status eng_model_load(const char *path, struct eng_model **out, char err[ENG_ERR_LEN])
{
    return eng_model_load_ex(path, 0, out, err);
}

/* ==== tile kernels ========================================================================= */

static enum eng_status check_finite(const float *v, int rows, int cols, const char *what,
                                    char *err)
{
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++)
            if (!isfinite(v[(size_t)i * cols + j]))
                return errf(err, ENG_ERR_NONFINITE, "%s[%d][%d] is not finite", what, i, j);
    return ENG_OK;
}

static enum eng_status check_args(const struct eng_model *m, int n, const float *in,
                                  int in_cols, const char *in_name, const float *y, int y_rows,
                                  bool need_y, char *err)
{
    if (n < 0)
        return errf(err, ENG_ERR_ARG, "row count %d is negative", n);
    if (n > 0 && !in)
        return errf(err, ENG_ERR_ARG, "%s is missing", in_name);
    int dy = m->info.dims.y;
    if (need_y) {
        if (!y || (y_rows != 1 && y_rows != n))
            return errf(err, ENG_ERR_SHAPE, "y must have 1 or %d rows of %d values (got %d "
                        "rows)", n, dy, y ? y_rows : 0);
    }
    enum eng_status st = check_finite(in, n, in_cols, in_name, err);
    if (st == ENG_OK && need_y)
        st = check_finite(y, y_rows, dy, "y", err);
    return st;
}

/* Standardize rows of y into t->ys (n rows, or 1 when broadcast). */
static void std_rows(const struct stdz *s, const float *src, int rows, int cols, float *dst,
                     int ld)
{
    for (int i = 0; i < rows; i++) {
        const float *a = src + (size_t)i * cols;
        float *b = dst + (size_t)i * ld;
        if (s->mean)
            for (int j = 0; j < cols; j++)
                b[j] = (a[j] - s->mean[j]) / s->std[j];
        else if (a != b)
            memcpy(b, a, sizeof(float) * (size_t)cols);
    }
}

static void unstd_rows(const struct stdz *s, const float *src, int ld, int rows, int cols,
                       float *dst)
{
    for (int i = 0; i < rows; i++) {
        const float *a = src + (size_t)i * ld;
        float *b = dst + (size_t)i * cols;
        if (s->mean)
            for (int j = 0; j < cols; j++)
                b[j] = a[j] * s->std[j] + s->mean[j];
        else
            memcpy(b, a, sizeof(float) * (size_t)cols);
    }
}

/* Conditions for rows [0, rows) of a tile from y (already offset to the tile; y_rows 1 =
 * broadcast).  Returns per-condition pointers and leading dims. */
static void make_conds(const struct eng_model *m, struct tile *t, const float *y, int rows,
                       bool bcast, const float **cp, int *cld)
{
    int dy = m->info.dims.y;
    int r = bcast ? 1 : rows;
    std_rows(&m->sy, y, r, dy, t->ys, dy);
    float *dst = t->cond;
    for (int k = 0; k < m->n_conds; k++) {
        int w = m->conds[k].width;
        if (!m->conds[k].net) {
            cp[k] = t->ys;
        } else {
            subnet_forward(m->conds[k].net, r, NULL, 0, t->ys, dy, dst, w, t->scratch);
            cp[k] = dst;
        }
        cld[k] = bcast ? 0 : (m->conds[k].net ? w : dy);
        dst += (size_t)ENG_TILE_ROWS * w;
    }
}

static void run_blocks(const struct eng_model *m, struct tile *t, int rows, const float **cp,
                       const int *cld, bool inverse, struct blk_io *proto)
{
    bool xd_fresh = false; /* t->xd holds the exact output of the previous (numeric) block */
    for (int bi = 0; bi < m->n_blocks; bi++) {
        const struct blk *b = &m->blocks[inverse ? m->n_blocks - 1 - bi : bi];
        struct blk_io io = *proto;
        if (inverse && b->numeric) {
            /* Chain consecutive numeric blocks in double: fill the double state from the
             * float one only where the previous block was not numeric. */
            if (!xd_fresh)
                for (size_t i = 0; i < (size_t)rows * m->D; i++)
                    t->xd[i] = t->state[i];
            io.xd = t->xd;
            const struct blk *next = bi + 1 < m->n_blocks ? &m->blocks[m->n_blocks - 2 - bi] : NULL;
            io.rounds_out = !(next && next->numeric);
            xd_fresh = true;
        } else {
            xd_fresh = false;
        }
        io.n = rows;
        io.x = t->state;
        io.log_det = t->ld;
        io.c = b->cond >= 0 ? cp[b->cond] : NULL;
        io.c_ld = b->cond >= 0 ? cld[b->cond] : 0;
        io.scratch = t->scratch;
        if (inverse && b->numeric && m->tol_frac) {
            io.tol = proto->tol * m->tol_frac[b->index];
            io.err_scale = m->err_amp[b->index];
        }
        if (inverse)
            (void)b->ops->inverse(b, &io);
        else
            b->ops->forward(b, &io);
    }
}

/* Forward of rows [0, rows) of x (already offset) through the blocks into t->state,
 * log-dets (incl. standardization) into t->ld. */
static void fwd_tile(const struct eng_model *m, struct tile *t, int rows, const float *x,
                     const float *y, bool ybcast)
{
    const int D = m->D, dx = m->info.dims.x;
    const float *cp[64];
    int cld[64];
    if (m->info.kind == ENG_KIND_CINN)
        make_conds(m, t, y, rows, ybcast, cp, cld);
    int off = m->info.kind == ENG_KIND_INN ? m->in_x : 0;
    if (m->info.kind == ENG_KIND_INN)
        memset(t->state, 0, sizeof(float) * (size_t)rows * D);
    std_rows(&m->sx, x, rows, dx, t->state + off, D);
    for (int i = 0; i < rows; i++)
        t->ld[i] = -m->sx.log_std_sum;
    struct blk_io proto = {0};
    run_blocks(m, t, rows, cp, cld, false, &proto);
}

static double log_normal_sq(const float *v, int n)
{
    double s = 0.0;
    for (int j = 0; j < n; j++)
        s += (double)v[j] * v[j];
    return s;
}

/* Log-density of the forward result in t->state / t->ld, rows [0, rows), into lp.
 * y (offset to the tile, or one row) is used by inn only. */
static void density_tile(const struct eng_model *m, struct tile *t, int rows, const float *y,
                         bool ybcast, double *lp)
{
    const int D = m->D;
    if (m->info.kind != ENG_KIND_INN) {
        for (int i = 0; i < rows; i++)
            lp[i] = -0.5 * log_normal_sq(t->state + (size_t)i * D, D) - 0.5 * D * LOG_2PI + t->ld[i];
        return;
    }
    const struct eng_dims *d = &m->info.dims;
    double sy2 = m->sigma_y * m->sigma_y, sp2 = m->sigma_pad * m->sigma_pad;
    for (int i = 0; i < rows; i++) {
        const float *r = t->state + (size_t)i * D;
        double l = -0.5 * log_normal_sq(r + m->out_z, d->z) - 0.5 * d->z * LOG_2PI;
        l += -0.5 * log_normal_sq(r + m->out_pad, d->pad_y) / sp2 -
             0.5 * d->pad_y * (LOG_2PI + log(sp2));
        const float *yo = y + (ybcast ? 0 : (size_t)i * d->y);
        double e = 0.0;
        for (int j = 0; j < d->y; j++) {
            double ys = m->sy.mean ? ((double)yo[j] - m->sy.mean[j]) / m->sy.std[j] : yo[j];
            double diff = (double)r[m->out_y + j] - ys;
            e += diff * diff;
        }
        l += -0.5 * e / sy2 - 0.5 * d->y * (LOG_2PI + log(sy2));
        lp[i] = l + t->ld[i];
    }
}

/* Inverse of rows whose block-space input is already in t->state; conditions from y. */
static void inv_tile(const struct eng_model *m, struct tile *t, int rows, const float *y,
                     bool ybcast, const struct eng_solver_opts *opts,
                     struct eng_solver_stats *stats, int row0)
{
    const float *cp[64];
    int cld[64];
    if (m->info.kind == ENG_KIND_CINN)
        make_conds(m, t, y, rows, ybcast, cp, cld);
    for (int i = 0; i < rows; i++)
        t->ld[i] = 0.0;
    struct blk_io proto = {0};
    static const struct eng_solver_opts defaults = {1e-6, 200, 0};
    proto.opts = opts ? opts : &defaults;
    proto.tol = proto.opts->tol > 0 ? proto.opts->tol : 1e-6; /* split in run_blocks */
    if (stats && m->n_numeric) {
        proto.iterations = stats->iterations ? stats->iterations + row0 : NULL;
        proto.residual = stats->residual ? stats->residual + row0 : NULL;
        proto.error_bound = stats->error_bound ? stats->error_bound + row0 : NULL;
        proto.converged = stats->converged ? stats->converged + row0 : NULL;
        for (int i = 0; i < rows; i++) {
            if (proto.iterations) proto.iterations[i] = 0;
            if (proto.residual) proto.residual[i] = 0.0;
            if (proto.error_bound) proto.error_bound[i] = 0.0;
            if (proto.converged) proto.converged[i] = true;
        }
    }
    run_blocks(m, t, rows, cp, cld, true, &proto);
    for (int i = 0; i < rows; i++)
        t->ld[i] += m->sx.log_std_sum;
    /* The end-to-end verdict: a row has also converged when its certified error bound (already
     * propagated through the later blocks and the standardization) meets the tolerance
     * relative to max(1, |x|) in physical units, the same rule each block applies to its
     * own share.  The per-block shares are conservative, so a block can stop at its
     * rounding floor short of its share while the row as a whole is well within tol. */
    if (proto.converged && proto.error_bound) {
        const int D = m->D, off = m->info.kind == ENG_KIND_INN ? m->in_x : 0;
        for (int i = 0; i < rows; i++) {
            double eb = proto.error_bound[i], nx = 0.0;
            if (!isfinite(eb))
                continue; /* not certified: the blocks' own flags stand */
            const float *r = t->state + (size_t)i * D + off;
            for (int j = 0; j < m->info.dims.x; j++) {
                double v = m->sx.std ? (double)r[j] * m->sx.std[j] + m->sx.mean[j] : r[j];
                nx += v * v;
            }
            if (eb <= proto.tol * fmax(1.0, sqrt(nx)))
                proto.converged[i] = true;
        }
    }
}

/* Place z (rows x dims.z, stride ldz) and standardized y into the output layout (inn) or
 * copy z (flow/cinn) into t->state. */
static void load_latent(const struct eng_model *m, struct tile *t, int rows, const float *z,
                        const float *y, bool ybcast)
{
    const int D = m->D;
    const struct eng_dims *d = &m->info.dims;
    if (m->info.kind != ENG_KIND_INN) {
        memcpy(t->state, z, sizeof(float) * (size_t)rows * D);
        return;
    }
    memset(t->state, 0, sizeof(float) * (size_t)rows * D);
    for (int i = 0; i < rows; i++) {
        float *r = t->state + (size_t)i * D;
        memcpy(r + m->out_z, z + (size_t)i * d->z, sizeof(float) * (size_t)d->z);
        std_rows(&m->sy, y + (ybcast ? 0 : (size_t)i * d->y), 1, d->y, r + m->out_y, d->y);
    }
}

static enum eng_status check_out(const float *v, int rows, int cols, int ld, int row0,
                                 const char *what, char *err)
{
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++)
            if (!isfinite(v[(size_t)i * ld + j]))
                return errf(err, ENG_ERR_NUMERIC, "row %d: %s[%d] is not finite (the input is "
                            "outside the range the model can map)", row0 + i, what, j);
    return ENG_OK;
}

/* ==== operations =========================================================================== */

enum eng_status eng_forward(const struct eng_model *m, struct eng_ws *ws, int n, const float *x,
                            const float *y, int y_rows, float *z, float *y_out, double *log_det,
                            char err[ENG_ERR_LEN])
{
    const struct eng_dims *d = &m->info.dims;
    enum eng_kind k = m->info.kind;
    enum eng_status st = check_args(m, n, x, d->x, "x", y, y_rows, k == ENG_KIND_CINN, err);
    if (st != ENG_OK)
        return st;
    if ((k == ENG_KIND_FLOW || k == ENG_KIND_CINN) && !z)
        return errf(err, ENG_ERR_ARG, "z output is missing");
    if ((k == ENG_KIND_INN || k == ENG_KIND_MLP) && !y_out)
        return errf(err, ENG_ERR_ARG, "y output is missing");
    if ((st = eng_ws_reserve(ws, m)) != ENG_OK)
        return errf(err, st, "out of memory for the workspace");
    struct tile t = carve(m, ws);
    bool bc = y_rows == 1;
    for (int r0 = 0; r0 < n; r0 += ENG_TILE_ROWS) {
        int rows = n - r0 < ENG_TILE_ROWS ? n - r0 : ENG_TILE_ROWS;
        const float *xt = x + (size_t)r0 * d->x;
        const float *yt = y ? y + (bc ? 0 : (size_t)r0 * d->y) : NULL;
        if (k == ENG_KIND_MLP) {
            std_rows(&m->sx, xt, rows, d->x, t.state, d->x);
            subnet_forward(m->mlp, rows, t.state, d->x, NULL, 0, t.ys, d->y, t.scratch);
            const float *res = t.ys;
            if ((st = check_out(res, rows, d->y, d->y, r0, "y", err)) != ENG_OK)
                return st;
            unstd_rows(&m->sy, res, d->y, rows, d->y, y_out + (size_t)r0 * d->y);
            continue;
        }
        fwd_tile(m, &t, rows, xt, yt, bc);
        const int D = m->D;
        if (k == ENG_KIND_INN) {
            if ((st = check_out(t.state, rows, D, D, r0, "output", err)) != ENG_OK)
                return st;
            for (int i = 0; i < rows; i++) {
                const float *r = t.state + (size_t)i * D;
                if (z)
                    memcpy(z + (size_t)(r0 + i) * d->z, r + m->out_z, sizeof(float) * (size_t)d->z);
                unstd_rows(&m->sy, r + m->out_y, d->y, 1, d->y, y_out + (size_t)(r0 + i) * d->y);
            }
        } else {
            if ((st = check_out(t.state, rows, D, D, r0, "z", err)) != ENG_OK)
                return st;
            memcpy(z + (size_t)r0 * D, t.state, sizeof(float) * (size_t)rows * D);
        }
        if (log_det)
            memcpy(log_det + r0, t.ld, sizeof(double) * (size_t)rows);
    }
    return ENG_OK;
}

enum eng_status eng_inverse(const struct eng_model *m, struct eng_ws *ws, int n, const float *z,
                            const float *y, int y_rows, float *x, double *log_det,
                            const struct eng_solver_opts *opts, struct eng_solver_stats *stats,
                            char err[ENG_ERR_LEN])
{
    const struct eng_dims *d = &m->info.dims;
    enum eng_kind k = m->info.kind;
    if (k == ENG_KIND_MLP)
        return errf(err, ENG_ERR_UNSUPPORTED, "inverse is not defined for an mlp model (use "
                    "preimage search)");
    enum eng_status st = check_args(m, n, z, d->z, "z", y, y_rows, k != ENG_KIND_FLOW, err);
    if (st != ENG_OK)
        return st;
    if (!x)
        return errf(err, ENG_ERR_ARG, "x output is missing");
    if ((st = eng_ws_reserve(ws, m)) != ENG_OK)
        return errf(err, st, "out of memory for the workspace");
    if (stats)
        stats->certified = m->cert.certified; /* every numeric block has L < 1 */
    struct tile t = carve(m, ws);
    bool bc = y_rows == 1;
    const int D = m->D;
    for (int r0 = 0; r0 < n; r0 += ENG_TILE_ROWS) {
        int rows = n - r0 < ENG_TILE_ROWS ? n - r0 : ENG_TILE_ROWS;
        const float *yt = y ? y + (bc ? 0 : (size_t)r0 * d->y) : NULL;
        load_latent(m, &t, rows, z + (size_t)r0 * d->z, yt, bc);
        inv_tile(m, &t, rows, yt, bc, opts, stats, r0);
        int off = k == ENG_KIND_INN ? m->in_x : 0;
        if ((st = check_out(t.state + off, rows, d->x, D, r0, "x", err)) != ENG_OK)
            return st;
        unstd_rows(&m->sx, t.state + off, D, rows, d->x, x + (size_t)r0 * d->x);
        if (log_det)
            memcpy(log_det + r0, t.ld, sizeof(double) * (size_t)rows);
    }
    return ENG_OK;
}

enum eng_status eng_log_prob(const struct eng_model *m, struct eng_ws *ws, int n, const float *x,
                             const float *y, int y_rows, double *log_prob, char err[ENG_ERR_LEN])
{
    const struct eng_dims *d = &m->info.dims;
    enum eng_kind k = m->info.kind;
    if (k == ENG_KIND_MLP)
        return errf(err, ENG_ERR_UNSUPPORTED, "log_prob is not defined for an mlp model");
    enum eng_status st = check_args(m, n, x, d->x, "x", y, y_rows, k != ENG_KIND_FLOW, err);
    if (st != ENG_OK)
        return st;
    if ((st = eng_ws_reserve(ws, m)) != ENG_OK)
        return errf(err, st, "out of memory for the workspace");
    struct tile t = carve(m, ws);
    bool bc = y_rows == 1;
    for (int r0 = 0; r0 < n; r0 += ENG_TILE_ROWS) {
        int rows = n - r0 < ENG_TILE_ROWS ? n - r0 : ENG_TILE_ROWS;
        const float *yt = y ? y + (bc ? 0 : (size_t)r0 * d->y) : NULL;
        fwd_tile(m, &t, rows, x + (size_t)r0 * d->x, yt, bc);
        density_tile(m, &t, rows, yt, bc, log_prob + r0);
        for (int i = 0; i < rows; i++)
            if (isnan(log_prob[r0 + i]))
                return errf(err, ENG_ERR_NUMERIC, "row %d: log_prob is not a number", r0 + i);
    }
    return ENG_OK;
}

enum eng_status eng_sample(const struct eng_model *m, struct eng_ws *ws, const float *y,
                           uint64_t seed, uint32_t obs, uint64_t first, int count,
                           float temperature, float *x_out, double *log_prob,
                           const struct eng_solver_opts *opts, struct eng_solver_stats *stats,
                           char err[ENG_ERR_LEN])
{
    const struct eng_dims *d = &m->info.dims;
    enum eng_kind k = m->info.kind;
    if (k == ENG_KIND_MLP)
        return errf(err, ENG_ERR_UNSUPPORTED, "sampling is not defined for an mlp model");
    if (count < 0 || !x_out)
        return errf(err, ENG_ERR_ARG, "count must be >= 0 and x output given");
    if (!(temperature >= 0.0f) || !isfinite(temperature))
        return errf(err, ENG_ERR_ARG, "temperature must be a finite number >= 0");
    if (k != ENG_KIND_FLOW) {
        if (!y)
            return errf(err, ENG_ERR_SHAPE, "y (one observation of %d values) is missing", d->y);
        enum eng_status st = check_finite(y, 1, d->y, "y", err);
        if (st != ENG_OK)
            return st;
    }
    enum eng_status st = eng_ws_reserve(ws, m);
    if (st != ENG_OK)
        return errf(err, st, "out of memory for the workspace");
    if (stats)
        stats->certified = m->cert.certified;
    struct tile t = carve(m, ws);
    const int D = m->D;
    const int dz = d->z;
    /* Tiles are aligned to multiples of ENG_TILE_ROWS in the absolute sample index, so a
     * sample is always computed in the same tile shape, whichever calls the range is
     * split into (BLAS kernels may round differently for different row counts). */
    for (int r0 = 0, rows; r0 < count; r0 += rows) {
        uint64_t abs0 = first + (uint64_t)r0;
        uint64_t room = ENG_TILE_ROWS - abs0 % ENG_TILE_ROWS;
        rows = (uint64_t)(count - r0) < room ? count - r0 : (int)room;
        /* Draw z into the state rows (z segment for inn), keep ||z||^2 for the density. */
        if (k == ENG_KIND_INN)
            memset(t.state, 0, sizeof(float) * (size_t)rows * D);
        int zoff = k == ENG_KIND_INN ? m->out_z : 0;
        for (int i = 0; i < rows; i++) {
            float *r = t.state + (size_t)i * D + zoff;
            eng_rng_normal_row(seed, obs, first + (uint64_t)(r0 + i), dz, r);
            for (int j = 0; j < dz; j++)
                r[j] *= temperature;
            t.aux[i] = log_normal_sq(r, dz);
            if (k == ENG_KIND_INN)
                std_rows(&m->sy, y, 1, d->y, t.state + (size_t)i * D + m->out_y, d->y);
        }
        inv_tile(m, &t, rows, y, true, opts, stats, r0);
        int off = k == ENG_KIND_INN ? m->in_x : 0;
        if ((st = check_out(t.state + off, rows, d->x, D, r0, "x", err)) != ENG_OK)
            return st;
        float *xo = x_out + (size_t)r0 * d->x;
        unstd_rows(&m->sx, t.state + off, D, rows, d->x, xo);
        if (!log_prob)
            continue;
        if (k != ENG_KIND_INN) {
            for (int i = 0; i < rows; i++)
                log_prob[r0 + i] = -0.5 * t.aux[i] - 0.5 * dz * LOG_2PI - t.ld[i];
        } else {
            /* inn: the density needs the forward pass of the produced x. */
            fwd_tile(m, &t, rows, xo, y, true);
            density_tile(m, &t, rows, y, true, log_prob + r0);
        }
    }
    return ENG_OK;
}

/* ==== self test ============================================================================ */

static enum eng_status test_tensor(struct ldr *L, const cJSON *tj, const char *field, bool req,
                                   int rows, int cols, const double **out)
{
    int64_t shp[2] = {rows, cols};
    return ldr_tensor_f64(L, tj, field, req, cols >= 0 ? 2 : 1, shp, out);
}

static enum eng_status compare(struct ldr *L, const char *what, const float *got32,
                               const double *got64, const double *want, int rows, int cols,
                               double rtol, double atol)
{
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) {
            size_t k = (size_t)i * cols + j;
            double g = got32 ? got32[k] : got64[k];
            if (!(fabs(g - want[k]) <= atol + rtol * fabs(want[k])))
                return ldr_fail(L, ENG_ERR_TESTVEC, "test vector mismatch in %s at row %d, "
                                "column %d: engine %.9g, exporter %.9g (rtol %g, atol %g)", what,
                                i, j, g, want[k], rtol, atol);
        }
    return ENG_OK;
}

static enum eng_status self_test(struct ldr *L, struct eng_model *m, const cJSON *tj,
                                 struct eng_ws *ws)
{
    const struct eng_dims *d = &m->info.dims;
    enum eng_kind k = m->info.kind;
    const struct st_tensor *tx;
    enum eng_status st = ldr_raw(L, tj, "x", &tx);
    if (st != ENG_OK)
        return st;
    if (tx->ndim != 2 || tx->shape[0] < 1 || tx->shape[0] > 4096)
        return ldr_fail(L, ENG_ERR_TENSOR, "test input '%s' must be (rows, %d) with 1 to 4096 "
                        "rows", tx->name, d->x);
    int n = (int)tx->shape[0];
    double rtol, atol;
    if ((st = ldr_num(L, tj, "rtol", false, 1e-4, &rtol)) != ENG_OK ||
        (st = ldr_num(L, tj, "atol", false, 1e-4, &atol)) != ENG_OK)
        return st;
    if (!(rtol >= 0 && rtol <= 1 && atol >= 0 && atol <= 1))
        return ldr_fail(L, ENG_ERR_MANIFEST, "rtol and atol must be in [0, 1]");
    const double *x, *y = NULL, *z = NULL, *yo = NULL, *ld = NULL, *xinv = NULL;
    if ((st = test_tensor(L, tj, "x", true, n, d->x, &x)) != ENG_OK)
        return st;
    if (k == ENG_KIND_CINN && (st = test_tensor(L, tj, "y", true, n, d->y, &y)) != ENG_OK)
        return st;
    if (k != ENG_KIND_MLP) {
        if ((st = test_tensor(L, tj, "z", true, n, d->z, &z)) != ENG_OK)
            return st;
        if ((st = test_tensor(L, tj, "log_det", true, n, -1, &ld)) != ENG_OK)
            return st;
    }
    if ((k == ENG_KIND_INN || k == ENG_KIND_MLP) &&
        (st = test_tensor(L, tj, "y_out", true, n, d->y, &yo)) != ENG_OK)
        return st;
    if (k == ENG_KIND_INN && (st = test_tensor(L, tj, "x_inv", false, n, d->x, &xinv)) != ENG_OK)
        return st;

    size_t nx = (size_t)n * d->x, ny = (size_t)n * (d->y ? d->y : 1), nz = (size_t)n * (d->z ? d->z : 1);
    float *fx = ldr_alloc(L, sizeof(float) * (nx + 2 * ny + 2 * nz));
    double *fld = ldr_alloc(L, sizeof(double) * (size_t)n);
    if (!fx || !fld)
        return ENG_ERR_NOMEM;
    float *fy = fx + nx, *fz = fy + ny, *fyo = fz + nz, *fz_in = fyo + ny;
    for (size_t i = 0; i < nx; i++)
        fx[i] = (float)x[i];
    if (y)
        for (size_t i = 0; i < ny; i++)
            fy[i] = (float)y[i];
    char err[ENG_ERR_LEN];
    st = eng_forward(m, ws, n, fx, y ? fy : NULL, y ? n : 0, fz, fyo, fld, err);
    if (st != ENG_OK)
        return ldr_fail(L, ENG_ERR_TESTVEC, "forward on the test inputs failed: %s", err);
    if (z && (st = compare(L, "z", fz, NULL, z, n, d->z, rtol, atol)) != ENG_OK)
        return st;
    if (yo && (st = compare(L, "y_out", fyo, NULL, yo, n, d->y, rtol, atol)) != ENG_OK)
        return st;
    if (ld && (st = compare(L, "log_det", NULL, fld, ld, n, 1, rtol, atol * m->D)) != ENG_OK)
        return st;
    if (k == ENG_KIND_MLP)
        return ENG_OK;
    if (k == ENG_KIND_INN && !xinv)
        return ENG_OK; /* [z, 0, y] inverts to x only when the pad outputs were 0 */
    if (m->n_numeric && !m->cert.certified)
        return ENG_OK; /* a residual block with L >= 1 may not converge: such a model loads,
                          flagged not certified, and every inverse response says so */
    for (size_t i = 0; i < nz; i++)
        fz_in[i] = (float)z[i];
    const float *yin = NULL;
    if (k == ENG_KIND_CINN)
        yin = fy;
    if (k == ENG_KIND_INN) {
        for (size_t i = 0; i < ny; i++)
            fyo[i] = (float)yo[i];
        yin = fyo;
    }
    st = eng_inverse(m, ws, n, fz_in, yin, yin ? n : 0, fx, NULL, NULL, NULL, err);
    if (st != ENG_OK)
        return ldr_fail(L, ENG_ERR_TESTVEC, "inverse on the test outputs failed: %s", err);
    return compare(L, "inverse x", fx, NULL, xinv ? xinv : x, n, d->x, rtol, atol);
}
