/*
 * graph.c — a model's blocks as a graph: loading a chain ("blocks") or a graph ("graph":
 * nodes with named inputs, Split and Concat nodes, several outputs) into a topologically
 * ordered node list over values with per-row shapes propagated from x and validated, the
 * buffer slots those values live in, the numeric-inverse error budget over the graph, and
 * running the nodes on a tile (forward in node order, inverse backwards with Split and
 * Concat swapped).  The layout (struct graph) is in model_impl.h; the manifest format in
 * docs/checkpoint-format.md ("Graphs").
 *
 * A chain is the graph of its blocks in order: every value lives in slot 0 (the state),
 * so running it is the loop over the blocks it always was.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block.h"
#include "loader.h"
#include "model_impl.h"

#define GRAPH_MAX_NODES 4096

/* ==== shapes ============================================================================== */

static void shape_str(int rank, const int *shape, char *buf, size_t n)
{
    int o = snprintf(buf, n, "(");
    for (int k = 0; k < rank && o > 0 && (size_t)o < n; k++)
        o += snprintf(buf + o, n - (size_t)o, k ? ", %d" : "%d", shape[k]);
    if (o > 0 && (size_t)o < n)
        snprintf(buf + o, n - (size_t)o, rank == 1 ? ",)" : ")");
}

/* ==== conditions ========================================================================== */

/* The condition input for the list idx[0..n) (n >= 2): an existing combination or a new
 * one.  Shapes: all vectors (concatenated features) or all of one rank with equal
 * positions (concatenated channels). */
static enum eng_status combo_for(struct ldr *L, struct eng_model *m, const int *idx, int n,
                                 int *out)
{
    for (int j = 0; j < m->n_combos; j++) {
        const struct cond_combo *c = &m->combos[j];
        if (c->n == n && memcmp(c->idx, idx, sizeof(int) * (size_t)n) == 0) {
            *out = m->n_conds + j;
            return ENG_OK;
        }
    }
    if (m->n_combos >= MODEL_MAX_COMBOS)
        return ldr_fail(L, ENG_ERR_MANIFEST, "field 'cond': more than %d distinct lists of "
                        "conditions in one model", MODEL_MAX_COMBOS);
    if (!m->combos && !(m->combos = ldr_alloc(L, sizeof(*m->combos) * MODEL_MAX_COMBOS)))
        return ENG_ERR_NOMEM;
    struct cond_combo *c = &m->combos[m->n_combos];
    const struct cond_def *c0 = &m->conds[idx[0]];
    c->n = n;
    c->rank = c0->rank;
    c->width = 0;
    c->shape[0] = 0;
    for (int k = 1; k < 3; k++)
        c->shape[k] = c0->shape[k];
    for (int i = 0; i < n; i++) {
        const struct cond_def *ci = &m->conds[idx[i]];
        if (ci->rank != c0->rank || ci->shape[1] != c0->shape[1] || ci->shape[2] != c0->shape[2]) {
            char a[64], b[64];
            shape_str(c0->rank, c0->shape, a, sizeof(a));
            shape_str(ci->rank, ci->shape, b, sizeof(b));
            return ldr_fail(L, ENG_ERR_MANIFEST, "field 'cond': condition %d has shape %s and "
                            "condition %d shape %s: conditions given together are "
                            "concatenated along their first dim, so the others must agree",
                            idx[0], a, idx[i], b);
        }
        c->idx[i] = idx[i];
        c->width += ci->width;
        c->shape[0] += ci->shape[0];
    }
    m->cond_total += c->width;
    *out = m->n_conds + m->n_combos++;
    return ENG_OK;
}

/* The block's "cond": absent, a condition index, or a list of them.  Sets b->cond (a
 * condition input: a condition or a combination), cw, c_rank, c_shape. */
static enum eng_status load_cond(struct ldr *L, struct eng_model *m, const cJSON *bj,
                                 struct blk *b)
{
    const struct blk_ops *ops = b->ops;
    const cJSON *cj = cJSON_GetObjectItemCaseSensitive(bj, "cond");
    int idx[MODEL_MAX_COMBO_LEN], n = 0;
    b->cond = -1;
    if (cJSON_IsArray(cj)) {
        n = cJSON_GetArraySize(cj);
        if (n < 1 || n > MODEL_MAX_COMBO_LEN)
            return ldr_fail(L, ENG_ERR_MANIFEST, "field 'cond': a list of 1 to %d condition "
                            "indices", MODEL_MAX_COMBO_LEN);
        int i = 0;
        for (const cJSON *e = cj->child; e; e = e->next, i++) {
            if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble >= m->n_conds ||
                e->valuedouble != (double)(int)e->valuedouble)
                return ldr_fail(L, ENG_ERR_MANIFEST, "field 'cond': entry %d must be a "
                                "condition index from 0 to %d", i, m->n_conds - 1);
            idx[i] = (int)e->valuedouble;
        }
    } else if (cj && !cJSON_IsNull(cj)) {
        long c;
        enum eng_status st = ldr_int(L, bj, "cond", false, -1, -1, m->n_conds - 1, &c);
        if (st != ENG_OK) {
            if (m->n_conds == 0)
                L->err[0] = '\0',
                st = ldr_fail(L, ENG_ERR_MANIFEST, "field 'cond': this %s model has no "
                              "conditions", eng_kind_str(m->info.kind));
            return st;
        }
        if (c >= 0)
            idx[n++] = (int)c;
    }
    if (n > 0 && !ops->takes_cond)
        return ldr_fail(L, ENG_ERR_MANIFEST, "field 'cond': %s takes no condition", ops->type);
    if (n == 0 && ops->needs_cond)
        return ldr_fail(L, ENG_ERR_MANIFEST, "field 'cond' is missing: %s requires a "
                        "condition", ops->type);
    if (n == 0)
        return ENG_OK;
    if (n == 1) {
        const struct cond_def *cd = &m->conds[idx[0]];
        b->cond = idx[0];
        b->cw = cd->width;
        b->c_rank = cd->rank;
        for (int k = 0; k < 3; k++)
            b->c_shape[k] = cd->shape[k];
        return ENG_OK;
    }
    int ci = 0;
    enum eng_status st = combo_for(L, m, idx, n, &ci);
    if (st != ENG_OK)
        return st;
    const struct cond_combo *c = &m->combos[ci - m->n_conds];
    b->cond = ci;
    b->cw = c->width;
    b->c_rank = c->rank;
    for (int k = 0; k < 3; k++)
        b->c_shape[k] = c->shape[k];
    return ENG_OK;
}

/* ==== blocks ============================================================================== */

/* Load block object bj (whose ops are known) into b, the index-th block, with input value
 * in (its width and shape).  The caller has pushed the message context. */
static enum eng_status load_block(struct ldr *L, struct eng_model *m, const cJSON *bj,
                                  const struct blk_ops *ops, int index, const struct gval *in,
                                  struct blk *b)
{
    b->ops = ops, b->index = index, b->d = in->width;
    enum eng_status st = load_cond(L, m, bj, b);
    if (st != ENG_OK)
        return st;
    b->rank = b->out_rank = in->rank;
    for (int k = 0; k < 3; k++)
        b->shape[k] = b->out_shape[k] = k < in->rank ? in->shape[k] : 1;
    long long before = L->n_params;
    if ((st = ops->load(b, L, bj)) != ENG_OK) {
        if (!L->err[0])
            ldr_fail(L, st, "%s", eng_status_str(st));
        return st;
    }
    long long prod = 1;
    for (int k = 0; k < b->out_rank; k++)
        prod *= b->out_shape[k];
    if (b->out_rank < 1 || b->out_rank > 3 || prod != b->d)
        return ldr_fail(L, ENG_ERR_MANIFEST, "%s declares an output of %lld values for an "
                        "input of %d", ops->type, prod, b->d);
    for (int k = b->out_rank; k < 3; k++)
        b->out_shape[k] = 1;
    b->n_params = L->n_params - before;
    if (b->numeric)
        m->n_numeric++;
    size_t s = ops->scratch(b, ENG_TILE_ROWS);
    if (s > m->blk_scratch)
        m->blk_scratch = s;
    return ENG_OK;
}

/* The value x: the model's input shape (the block width as a vector for an inn). */
static void x_value(const struct eng_model *m, struct gval *v)
{
    v->slot = 0;
    v->width = m->D;
    v->rank = m->info.x_rank;
    for (int k = 0; k < 3; k++)
        v->shape[k] = m->info.x_shape[k];
    if (m->info.kind == ENG_KIND_INN)
        v->rank = 1, v->shape[0] = m->D, v->shape[1] = v->shape[2] = 1;
}

static void out_value(const struct blk *b, struct gval *v)
{
    v->width = b->d;
    v->rank = b->out_rank;
    for (int k = 0; k < 3; k++)
        v->shape[k] = b->out_shape[k];
}

/* info.z_rank / z_shape: the one output's shape, or a vector for several. */
static void set_z_shape(struct eng_model *m)
{
    const struct graph *g = &m->g;
    const struct gval *v = &g->vals[g->outputs[0]];
    m->info.z_rank = g->n_out == 1 ? v->rank : 1;
    for (int k = 0; k < 3; k++)
        m->info.z_shape[k] = g->n_out == 1 ? v->shape[k] : (k ? 1 : m->D);
}

/* blocks_text: the block objects in order, as a JSON array. */
static enum eng_status set_blocks_text(struct ldr *L, struct eng_model *m,
                                       const cJSON *const *objs, int n)
{
    cJSON *arr = cJSON_CreateArray();
    for (int i = 0; arr && i < n; i++) {
        cJSON *c = cJSON_Duplicate(objs[i], true);
        if (!c || !cJSON_AddItemToArray(arr, c)) {
            cJSON_Delete(c);
            cJSON_Delete(arr);
            arr = NULL;
        }
    }
    m->blocks_text = arr ? cJSON_PrintUnformatted(arr) : NULL;
    cJSON_Delete(arr);
    if (!m->blocks_text)
        return ldr_fail(L, ENG_ERR_NOMEM, "out of memory");
    m->info.blocks_json = m->blocks_text;
    return ENG_OK;
}

static int *ints(struct ldr *L, int n) { return ldr_alloc(L, sizeof(int) * (size_t)(n ? n : 1)); }

enum eng_status graph_load_chain(struct ldr *L, struct eng_model *m, const cJSON *blocks)
{
    if (!cJSON_IsArray(blocks) || cJSON_GetArraySize(blocks) < 1 ||
        cJSON_GetArraySize(blocks) > GRAPH_MAX_NODES)
        return ldr_fail(L, ENG_ERR_MANIFEST, "field 'blocks' must be a non-empty list (at most "
                        "%d)", GRAPH_MAX_NODES);
    int n = cJSON_GetArraySize(blocks);
    struct graph *g = &m->g;
    m->blocks = ldr_alloc(L, sizeof(struct blk) * (size_t)n);
    g->nodes = ldr_alloc(L, sizeof(struct gnode) * (size_t)n);
    g->vals = ldr_alloc(L, sizeof(struct gval) * (size_t)(n + 1));
    int *io = ints(L, 2 * n);
    const cJSON **objs = ldr_alloc(L, sizeof(*objs) * (size_t)n);
    g->outputs = ints(L, 1);
    g->slot_off = ldr_alloc(L, sizeof(size_t));
    if (!m->blocks || !g->nodes || !g->vals || !io || !objs || !g->outputs || !g->slot_off)
        return ENG_ERR_NOMEM;
    x_value(m, &g->vals[0]);
    int i = 0;
    for (const cJSON *bj = blocks->child; bj; bj = bj->next, i++) {
        const cJSON *ty = cJSON_IsObject(bj) ? cJSON_GetObjectItemCaseSensitive(bj, "type") : NULL;
        size_t mark = ldr_push(L, "blocks[%d]", i);
        if (!cJSON_IsString(ty))
            return ldr_fail(L, ENG_ERR_MANIFEST, "must be an object with a string field 'type'");
        const struct blk_ops *ops = blk_lookup(ty->valuestring);
        if (!ops)
            return ldr_fail(L, ENG_ERR_MANIFEST, "unknown block type \"%.60s\"; known types: %s",
                            ty->valuestring, blk_known_types());
        ldr_pop(L, mark);
        mark = ldr_push(L, "blocks[%d] (%s)", i, ops->type);
        struct gnode *nd = &g->nodes[i];
        nd->kind = GNODE_BLOCK;
        nd->b = &m->blocks[i];
        nd->n_in = nd->n_out = 1;
        nd->in = io + 2 * i, nd->out = io + 2 * i + 1;
        nd->in[0] = i, nd->out[0] = i + 1;
        enum eng_status st = load_block(L, m, bj, ops, i, &g->vals[i], nd->b);
        if (st != ENG_OK)
            return st;
        out_value(nd->b, &g->vals[i + 1]);
        objs[i] = bj;
        ldr_pop(L, mark);
    }
    m->n_blocks = g->n_nodes = n;
    g->n_vals = n + 1;
    g->n_slots = 1;
    g->n_out = 1;
    g->outputs[0] = n;
    set_z_shape(m);
    return set_blocks_text(L, m, objs, n);
}

/* ==== graphs ============================================================================== */

/* Loading state of a graph: per node its name and first value (node i's outputs are the
 * values first_val[i] .. first_val[i + 1] - 1), per value its consumer (node index; -1
 * while unused, n_nodes for a graph output). */
struct gload {
    int n_nodes;
    const char **name;
    int *first_val;
    int *cons;
    const cJSON *nodes;
};

/* Parse the reference e = [name, index] (where: "inputs[2]" or "outputs[0]") read by node
 * `by` (n_nodes for the graph outputs); *v is the value. */
static enum eng_status resolve_ref(struct ldr *L, struct gload *G, const cJSON *e,
                                   const char *where, int by, int *v)
{
    const cJSON *nj = cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 ? e->child : NULL;
    const cJSON *ij = nj ? nj->next : NULL;
    if (!cJSON_IsString(nj) || !cJSON_IsNumber(ij) || ij->valuedouble < 0 ||
        ij->valuedouble > GRAPH_MAX_PARTS || ij->valuedouble != (double)(int)ij->valuedouble)
        return ldr_fail(L, ENG_ERR_MANIFEST, "%s must be [node name, output index]", where);
    const char *name = nj->valuestring;
    int idx = (int)ij->valuedouble, node = -2;
    if (strcmp(name, "x") == 0)
        node = -1;
    for (int j = 0; node == -2 && j < by && j < G->n_nodes; j++)
        if (G->name[j] && strcmp(G->name[j], name) == 0)
            node = j;
    if (node == -2) {
        const cJSON *later = G->nodes->child;
        for (int j = 0; later; later = later->next, j++) {
            const cJSON *lj = cJSON_GetObjectItemCaseSensitive(later, "name");
            if (j >= by && cJSON_IsString(lj) && strcmp(lj->valuestring, name) == 0)
                return ldr_fail(L, ENG_ERR_MANIFEST, "%s: node '%.64s' is graph.nodes[%d], "
                                "not before this node: nodes must be listed in topological "
                                "order, and a graph has no cycles", where, name, j);
        }
        return ldr_fail(L, ENG_ERR_MANIFEST, "%s: unknown node '%.64s' (the input is \"x\")",
                        where, name);
    }
    int n_out = node < 0 ? 1 : G->first_val[node + 1] - G->first_val[node];
    if (idx >= n_out)
        return ldr_fail(L, ENG_ERR_MANIFEST, "%s: '%.64s' has %d output%s, no output %d", where,
                        name, n_out, n_out == 1 ? "" : "s", idx);
    *v = node < 0 ? 0 : G->first_val[node] + idx;
    int c = G->cons[*v];
    if (c >= 0) {
        if (c >= G->n_nodes)
            return ldr_fail(L, ENG_ERR_MANIFEST, "%s: output %d of '%.64s' is already a graph "
                            "output: every output is used exactly once", where, idx, name);
        return ldr_fail(L, ENG_ERR_MANIFEST, "%s: output %d of '%.64s' is already used by "
                        "graph.nodes[%d] (%.64s): every output is used exactly once (a value "
                        "needed twice must be produced twice)", where, idx, name, c, G->name[c]);
    }
    G->cons[*v] = by;
    return ENG_OK;
}

/* Section sizes of a Split of value in along axis dim: FrEIA's rules (a list whose sum
 * falls short gets one more section for the rest; an int s gives [s, n - s]; none gives
 * n_sections parts as numpy.array_split).  Fills part[], returns the count via *np. */
static enum eng_status split_sections(struct ldr *L, const cJSON *bj, int n, int *part, int *np)
{
    const cJSON *sj = cJSON_GetObjectItemCaseSensitive(bj, "section_sizes");
    int k = 0;
    if (!sj || cJSON_IsNull(sj)) {
        long ns;
        enum eng_status st = ldr_int(L, bj, "n_sections", false, 2, 2, GRAPH_MAX_PARTS, &ns);
        if (st != ENG_OK)
            return st;
        if (ns > n)
            return ldr_fail(L, ENG_ERR_MANIFEST, "field 'n_sections': %ld sections of a dim of "
                            "size %d would leave some empty", ns, n);
        for (; k < ns; k++)
            part[k] = n / (int)ns + (k < n % (int)ns ? 1 : 0);
    } else if (cJSON_IsNumber(sj)) {
        if (sj->valuedouble != (double)(int)sj->valuedouble || sj->valuedouble < 1 ||
            sj->valuedouble >= n)
            return ldr_fail(L, ENG_ERR_MANIFEST, "field 'section_sizes': an integer section "
                            "size must be from 1 to %d (the split dim has size %d)", n - 1, n);
        part[k++] = (int)sj->valuedouble;
        part[k++] = n - part[0];
    } else if (cJSON_IsArray(sj) && cJSON_GetArraySize(sj) >= 1 &&
               cJSON_GetArraySize(sj) < GRAPH_MAX_PARTS) {
        long sum = 0;
        for (const cJSON *e = sj->child; e; e = e->next, k++) {
            if (!cJSON_IsNumber(e) || e->valuedouble != (double)(int)e->valuedouble ||
                e->valuedouble < 1 || e->valuedouble > n)
                return ldr_fail(L, ENG_ERR_MANIFEST, "field 'section_sizes': entry %d must be "
                                "an integer from 1 to %d", k, n);
            part[k] = (int)e->valuedouble;
            sum += part[k];
        }
        if (sum > n)
            return ldr_fail(L, ENG_ERR_MANIFEST, "field 'section_sizes': the sizes sum to %ld, "
                            "more than the %d of the split dim", sum, n);
        if (sum < n)
            part[k++] = n - (int)sum;
    } else {
        return ldr_fail(L, ENG_ERR_MANIFEST, "field 'section_sizes' must be an integer or a "
                        "list of 1 to %d positive integers", GRAPH_MAX_PARTS - 1);
    }
    if (k < 2)
        return ldr_fail(L, ENG_ERR_MANIFEST, "field 'section_sizes': one section of the whole "
                        "dim is not a split");
    *np = k;
    return ENG_OK;
}

/* Copy geometry of a Split / Concat along axis dim of the (whole) shape. */
static void set_geometry(struct gnode *nd, const struct gval *whole, int dim)
{
    nd->outer = 1, nd->inner = 1;
    for (int k = 0; k < dim; k++)
        nd->outer *= whole->shape[k];
    for (int k = dim + 1; k < whole->rank; k++)
        nd->inner *= whole->shape[k];
}

static enum eng_status read_dim(struct ldr *L, const cJSON *bj, const struct gval *v, int *dim)
{
    long d;
    enum eng_status st = ldr_int(L, bj, "dim", false, 0, 0, 2, &d);
    if (st != ENG_OK)
        return st;
    if (d >= v->rank) {
        char s[64];
        shape_str(v->rank, v->shape, s, sizeof(s));
        return ldr_fail(L, ENG_ERR_MANIFEST, "field 'dim' is %ld but the input has shape %s "
                        "(dims count from 0, without the batch dim)", d, s);
    }
    *dim = (int)d;
    return ENG_OK;
}

static enum eng_status load_split(struct ldr *L, struct graph *g, struct gnode *nd,
                                  const cJSON *bj)
{
    const struct gval *in = &g->vals[nd->in[0]];
    int dim = 0, part[GRAPH_MAX_PARTS];
    enum eng_status st = read_dim(L, bj, in, &dim);
    if (st == ENG_OK)
        st = split_sections(L, bj, in->shape[dim], part, &nd->n_part);
    if (st != ENG_OK)
        return st;
    if (!(nd->part = ints(L, nd->n_part)))
        return ENG_ERR_NOMEM;
    memcpy(nd->part, part, sizeof(int) * (size_t)nd->n_part);
    set_geometry(nd, in, dim);
    for (int k = 0; k < nd->n_part; k++) {
        struct gval *o = &g->vals[nd->out[k]];
        *o = *in;
        o->shape[dim] = part[k];
        o->width = nd->outer * part[k] * nd->inner;
    }
    return ENG_OK;
}

static enum eng_status load_concat(struct ldr *L, struct graph *g, struct gnode *nd,
                                   const cJSON *bj)
{
    const struct gval *a = &g->vals[nd->in[0]];
    int dim = 0;
    enum eng_status st = read_dim(L, bj, a, &dim);
    if (st != ENG_OK)
        return st;
    nd->n_part = nd->n_in;
    if (!(nd->part = ints(L, nd->n_part)))
        return ENG_ERR_NOMEM;
    struct gval *o = &g->vals[nd->out[0]];
    *o = *a;
    o->shape[dim] = 0;
    for (int k = 0; k < nd->n_in; k++) {
        const struct gval *v = &g->vals[nd->in[k]];
        bool ok = v->rank == a->rank;
        for (int j = 0; ok && j < a->rank; j++)
            ok = j == dim || v->shape[j] == a->shape[j];
        if (!ok) {
            char s0[64], sk[64];
            shape_str(a->rank, a->shape, s0, sizeof(s0));
            shape_str(v->rank, v->shape, sk, sizeof(sk));
            return ldr_fail(L, ENG_ERR_MANIFEST, "inputs[0] has shape %s and inputs[%d] %s: "
                            "a Concat along dim %d needs the same shape in the other dims",
                            s0, k, sk, dim);
        }
        nd->part[k] = v->shape[dim];
        o->shape[dim] += v->shape[dim];
    }
    set_geometry(nd, o, dim);
    o->width = 0;
    for (int k = 0; k < nd->n_in; k++)
        o->width += g->vals[nd->in[k]].width;
    return ENG_OK;
}

/* Outputs a node's JSON can have at most (to size the value table before loading). */
static int max_outputs(const cJSON *nj)
{
    const cJSON *bj = cJSON_IsObject(nj) ? cJSON_GetObjectItemCaseSensitive(nj, "block") : NULL;
    const cJSON *ty = cJSON_IsObject(bj) ? cJSON_GetObjectItemCaseSensitive(bj, "type") : NULL;
    if (!cJSON_IsString(ty) || strcmp(ty->valuestring, "Split") != 0)
        return 1;
    return GRAPH_MAX_PARTS;
}

/* Slots: the values linked by blocks (which work in place) form a chain sharing one slot;
 * a chain lives from the node that produces its first value to the node that consumes its
 * last.  Chains whose lifetimes do not meet share slots; chain 0 (x's) and, when there is
 * one graph output, the chain ending in it (if it starts after chain 0 ends) use slot 0,
 * otherwise the outputs are gathered into slot 0 at the end. */
static enum eng_status assign_slots(struct ldr *L, struct graph *g, const struct gload *G)
{
    int nv = g->n_vals, N = g->n_nodes;
    int *chain = ints(L, nv), *start = ints(L, nv), *end = ints(L, nv), *width = ints(L, nv);
    int *cap = ints(L, nv), *busy = ints(L, nv), *slot_of = ints(L, nv);
    if (!chain || !start || !end || !width || !cap || !busy || !slot_of)
        return ENG_ERR_NOMEM;
    int nc = 1;
    chain[0] = 0, start[0] = -1, end[0] = -1, width[0] = g->vals[0].width;
    for (int i = 0; i < N; i++) {
        const struct gnode *nd = &g->nodes[i];
        for (int k = 0; k < nd->n_out; k++) {
            int v = nd->out[k];
            if (nd->kind == GNODE_BLOCK) {
                chain[v] = chain[nd->in[0]];
            } else {
                chain[v] = nc;
                start[nc] = i, end[nc] = i, width[nc] = g->vals[v].width;
                nc++;
            }
        }
    }
    for (int v = 0; v < nv; v++)
        if (G->cons[v] > end[chain[v]])
            end[chain[v]] = G->cons[v];
    g->out_copy = true;
    slot_of[0] = 0;
    busy[0] = end[0];
    cap[0] = width[0];
    int ns = 1;
    int oc = g->n_out == 1 ? chain[g->outputs[0]] : -1;
    for (int c = 1; c < nc; c++) {
        if (c == oc && end[0] < start[c]) {
            slot_of[c] = 0;
            busy[0] = end[c];
            continue;
        }
        int fit = -1, big = -1; /* free slots: the smallest that fits, else the largest */
        for (int s = 1; s < ns; s++) {
            if (busy[s] >= start[c])
                continue;
            if (cap[s] >= width[c] && (fit < 0 || cap[s] < cap[fit]))
                fit = s;
            if (big < 0 || cap[s] > cap[big])
                big = s;
        }
        int best = fit >= 0 ? fit : big;
        if (best < 0) {
            best = ns++;
            cap[best] = 0;
        }
        if (cap[best] < width[c])
            cap[best] = width[c];
        busy[best] = end[c];
        slot_of[c] = best;
    }
    if (oc >= 0 && slot_of[oc] == 0)
        g->out_copy = false;
    for (int v = 0; v < nv; v++)
        g->vals[v].slot = slot_of[chain[v]];
    for (int k = 0; g->out_copy && k < g->n_out; k++)
        if (g->vals[g->outputs[k]].slot == 0)
            return ldr_fail(L, ENG_ERR_MANIFEST, "graph: internal error: an output shares the "
                            "state");
    g->n_slots = ns;
    if (!(g->slot_off = ldr_alloc(L, sizeof(size_t) * (size_t)ns)))
        return ENG_ERR_NOMEM;
    size_t off = 0;
    for (int s = 1; s < ns; s++) {
        g->slot_off[s] = off;
        off += (size_t)ENG_TILE_ROWS * (size_t)cap[s];
    }
    g->area = off;
    return ENG_OK;
}

enum eng_status graph_load(struct ldr *L, struct eng_model *m, const cJSON *gj)
{
    if (!cJSON_IsObject(gj))
        return ldr_fail(L, ENG_ERR_MANIFEST, "field 'graph' must be an object {\"nodes\": [...], "
                        "\"outputs\": [...]}");
    size_t gmark = ldr_push(L, "graph");
    for (const cJSON *f = gj->child; f; f = f->next)
        if (strcmp(f->string, "nodes") && strcmp(f->string, "outputs"))
            return ldr_fail(L, ENG_ERR_MANIFEST, "unknown field '%.64s' (a graph has nodes and "
                            "outputs)", f->string);
    const cJSON *nodes = cJSON_GetObjectItemCaseSensitive(gj, "nodes");
    const cJSON *outs = cJSON_GetObjectItemCaseSensitive(gj, "outputs");
    int N = cJSON_IsArray(nodes) ? cJSON_GetArraySize(nodes) : 0;
    int NO = cJSON_IsArray(outs) ? cJSON_GetArraySize(outs) : 0;
    if (N < 1 || N > GRAPH_MAX_NODES)
        return ldr_fail(L, ENG_ERR_MANIFEST, "field 'nodes' must be a non-empty list (at most "
                        "%d)", GRAPH_MAX_NODES);
    if (NO < 1 || NO > GRAPH_MAX_PARTS)
        return ldr_fail(L, ENG_ERR_MANIFEST, "field 'outputs' must be a list of 1 to %d "
                        "[node name, output index] pairs", GRAPH_MAX_PARTS);
    ldr_pop(L, gmark);

    struct graph *g = &m->g;
    struct gload G = {.n_nodes = N, .nodes = nodes};
    int cap_vals = 1;
    for (const cJSON *nj = nodes->child; nj; nj = nj->next)
        cap_vals += max_outputs(nj);
    G.name = ldr_alloc(L, sizeof(char *) * (size_t)N);
    G.first_val = ints(L, N + 1);
    G.cons = ints(L, cap_vals);
    g->nodes = ldr_alloc(L, sizeof(struct gnode) * (size_t)N);
    g->vals = ldr_alloc(L, sizeof(struct gval) * (size_t)cap_vals);
    m->blocks = ldr_alloc(L, sizeof(struct blk) * (size_t)N);
    const cJSON **objs = ldr_alloc(L, sizeof(*objs) * (size_t)N);
    g->outputs = ints(L, NO);
    if (!G.name || !G.first_val || !G.cons || !g->nodes || !g->vals || !m->blocks || !objs ||
        !g->outputs)
        return ENG_ERR_NOMEM;
    for (int v = 0; v < cap_vals; v++)
        G.cons[v] = -1;
    x_value(m, &g->vals[0]);
    int nv = 1;
    G.first_val[0] = 1;

    int i = 0;
    for (const cJSON *nj = nodes->child; nj; nj = nj->next, i++) {
        size_t mark = ldr_push(L, "graph.nodes[%d]", i);
        if (!cJSON_IsObject(nj))
            return ldr_fail(L, ENG_ERR_MANIFEST, "must be an object {\"name\", \"inputs\", "
                            "\"block\"}");
        for (const cJSON *f = nj->child; f; f = f->next)
            if (strcmp(f->string, "name") && strcmp(f->string, "inputs") &&
                strcmp(f->string, "block"))
                return ldr_fail(L, ENG_ERR_MANIFEST, "unknown field '%.64s' (a node has name, "
                                "inputs and block)", f->string);
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(nj, "name");
        if (!cJSON_IsString(name) || !name->valuestring[0] || strlen(name->valuestring) > 64)
            return ldr_fail(L, ENG_ERR_MANIFEST, "field 'name' must be a string of 1 to 64 "
                            "characters");
        if (strcmp(name->valuestring, "x") == 0)
            return ldr_fail(L, ENG_ERR_MANIFEST, "field 'name': \"x\" names the input");
        for (int j = 0; j < i; j++)
            if (strcmp(G.name[j], name->valuestring) == 0)
                return ldr_fail(L, ENG_ERR_MANIFEST, "field 'name': '%s' is also the name of "
                                "graph.nodes[%d]", name->valuestring, j);
        G.name[i] = name->valuestring;
        ldr_pop(L, mark);
        mark = ldr_push(L, "graph.nodes[%d] (%s)", i, name->valuestring);

        const cJSON *bj = cJSON_GetObjectItemCaseSensitive(nj, "block");
        const cJSON *ty = cJSON_IsObject(bj) ? cJSON_GetObjectItemCaseSensitive(bj, "type") : NULL;
        if (!cJSON_IsString(ty))
            return ldr_fail(L, ENG_ERR_MANIFEST, "field 'block' must be an object with a "
                            "string field 'type'");
        struct gnode *nd = &g->nodes[i];
        const struct blk_ops *ops = NULL;
        if (strcmp(ty->valuestring, "Split") == 0) {
            nd->kind = GNODE_SPLIT;
        } else if (strcmp(ty->valuestring, "Concat") == 0) {
            nd->kind = GNODE_CONCAT;
        } else if (!(ops = blk_lookup(ty->valuestring))) {
            return ldr_fail(L, ENG_ERR_MANIFEST, "unknown block type \"%.60s\"; known types: "
                            "Split, Concat, %s", ty->valuestring, blk_known_types());
        }

        const cJSON *ins = cJSON_GetObjectItemCaseSensitive(nj, "inputs");
        int n_in = cJSON_IsArray(ins) ? cJSON_GetArraySize(ins) : 0;
        if (n_in < 1 || n_in > GRAPH_MAX_PARTS)
            return ldr_fail(L, ENG_ERR_MANIFEST, "field 'inputs' must be a list of 1 to %d "
                            "[node name, output index] pairs", GRAPH_MAX_PARTS);
        if (nd->kind != GNODE_CONCAT && n_in != 1)
            return ldr_fail(L, ENG_ERR_MANIFEST, "field 'inputs': a %s has one input, not %d",
                            nd->kind == GNODE_SPLIT ? "Split" : ops->type, n_in);
        if (nd->kind == GNODE_CONCAT && n_in < 2)
            return ldr_fail(L, ENG_ERR_MANIFEST, "field 'inputs': a Concat joins 2 or more "
                            "inputs");
        nd->n_in = n_in;
        if (!(nd->in = ints(L, n_in)))
            return ENG_ERR_NOMEM;
        int k = 0;
        for (const cJSON *e = ins->child; e; e = e->next, k++) {
            char where[32];
            snprintf(where, sizeof(where), "inputs[%d]", k);
            enum eng_status st = resolve_ref(L, &G, e, where, i, &nd->in[k]);
            if (st != ENG_OK)
                return st;
        }

        enum eng_status st;
        if (nd->kind == GNODE_BLOCK) {
            nd->n_out = 1;
            if (!(nd->out = ints(L, 1)))
                return ENG_ERR_NOMEM;
            nd->out[0] = nv;
            nd->b = &m->blocks[m->n_blocks];
            size_t bmark = ldr_push(L, ".block (%s)", ops->type);
            st = load_block(L, m, bj, ops, m->n_blocks, &g->vals[nd->in[0]], nd->b);
            if (st != ENG_OK)
                return st;
            ldr_pop(L, bmark);
            out_value(nd->b, &g->vals[nv]);
            g->vals[nv].slot = 0;
            objs[m->n_blocks++] = bj;
        } else if (nd->kind == GNODE_SPLIT) {
            /* the section count is known once the sizes are read: outputs are numbered after */
            nd->out = ints(L, GRAPH_MAX_PARTS);
            if (!nd->out)
                return ENG_ERR_NOMEM;
            for (int o = 0; o < GRAPH_MAX_PARTS; o++)
                nd->out[o] = nv + o;
            if ((st = load_split(L, g, nd, bj)) != ENG_OK)
                return st;
            nd->n_out = nd->n_part;
        } else {
            nd->n_out = 1;
            if (!(nd->out = ints(L, 1)))
                return ENG_ERR_NOMEM;
            nd->out[0] = nv;
            if ((st = load_concat(L, g, nd, bj)) != ENG_OK)
                return st;
        }
        nv += nd->n_out;
        G.first_val[i + 1] = nv;
        ldr_pop(L, mark);
    }
    g->n_nodes = N;
    g->n_vals = nv;

    size_t mark = ldr_push(L, "graph");
    g->n_out = NO;
    int k = 0, total = 0;
    for (const cJSON *e = outs->child; e; e = e->next, k++) {
        char where[32];
        snprintf(where, sizeof(where), "outputs[%d]", k);
        enum eng_status st = resolve_ref(L, &G, e, where, N, &g->outputs[k]);
        if (st != ENG_OK)
            return st;
        total += g->vals[g->outputs[k]].width;
    }
    for (int v = 0; v < nv; v++) {
        if (G.cons[v] >= 0)
            continue;
        if (v == 0)
            return ldr_fail(L, ENG_ERR_MANIFEST, "no node reads the input \"x\"");
        int p = 0;
        while (G.first_val[p + 1] <= v)
            p++;
        return ldr_fail(L, ENG_ERR_MANIFEST, "output %d of '%s' (graph.nodes[%d]) is not used: "
                        "every node output must be used exactly once, by a node or in "
                        "graph.outputs", v - G.first_val[p], G.name[p], p);
    }
    if (total != m->D)
        return ldr_fail(L, ENG_ERR_MANIFEST, "the outputs hold %d values per row, x %d",
                        total, m->D);
    ldr_pop(L, mark);

    if (!(g->out_node.part = ints(L, NO)))
        return ENG_ERR_NOMEM;
    g->out_node.kind = GNODE_CONCAT;
    g->out_node.n_in = g->out_node.n_part = NO;
    g->out_node.outer = g->out_node.inner = 1;
    for (int o = 0; o < NO; o++)
        g->out_node.part[o] = g->vals[g->outputs[o]].width;
    enum eng_status st = assign_slots(L, g, &G);
    if (st != ENG_OK)
        return st;
    set_z_shape(m);
    return set_blocks_text(L, m, objs, m->n_blocks);
}

/* ==== numeric-inverse budget ============================================================== */

/* Over the graph, the factor A(v) by which an error in value v can grow by x in the
 * inverse: A(x) = max std_x; a block's output A_in * Lip(f^-1) (+inf when unknown); a
 * Split's outputs A_in (each is a part of the input); a Concat's output
 * sqrt(sum A_k^2) (an error e splits into parts e_k with sum |e_k|^2 = |e|^2, and
 * sum A_k |e_k| <= sqrt(sum A_k^2) |e|).  Block b gets err_amp = A of its input and the
 * tolerance share 1 / (n_numeric * K), K the same product over the known factors only.
 * For a chain these are the products along it. */
enum eng_status graph_numeric_budget(struct ldr *L, struct eng_model *m)
{
    const struct graph *g = &m->g;
    m->tol_frac = ldr_alloc(L, sizeof(double) * (size_t)m->n_blocks);
    m->err_amp = ldr_alloc(L, sizeof(double) * (size_t)m->n_blocks);
    double *amp = ldr_alloc(L, sizeof(double) * (size_t)g->n_vals);
    double *known = ldr_alloc(L, sizeof(double) * (size_t)g->n_vals);
    if (!m->tol_frac || !m->err_amp || !amp || !known)
        return ENG_ERR_NOMEM;
    double smax = 1.0;
    if (m->sx.std) {
        smax = 0.0;
        for (int k = 0; k < m->info.dims.x; k++)
            smax = fmax(smax, (double)m->sx.std[k]);
    }
    amp[0] = smax, known[0] = 1.0;
    for (int i = 0; i < g->n_nodes; i++) {
        const struct gnode *nd = &g->nodes[i];
        if (nd->kind == GNODE_BLOCK) {
            int a = nd->in[0], o = nd->out[0], b = nd->b->index;
            m->tol_frac[b] = 1.0 / ((double)m->n_numeric * known[a]);
            m->err_amp[b] = amp[a];
            double li = m->cert.blocks[b].lipschitz_inverse;
            bool ok = isfinite(li) && li > 0;
            known[o] = ok ? known[a] * li : known[a];
            amp[o] = ok ? amp[a] * li : INFINITY;
        } else if (nd->kind == GNODE_SPLIT) {
            for (int k = 0; k < nd->n_out; k++)
                amp[nd->out[k]] = amp[nd->in[0]], known[nd->out[k]] = known[nd->in[0]];
        } else {
            double a2 = 0.0, k2 = 0.0;
            for (int k = 0; k < nd->n_in; k++) {
                a2 += amp[nd->in[k]] * amp[nd->in[k]];
                k2 += known[nd->in[k]] * known[nd->in[k]];
            }
            amp[nd->out[0]] = sqrt(a2);
            known[nd->out[0]] = sqrt(k2);
        }
    }
    return ENG_OK;
}

/* ==== running ============================================================================= */

static float *vbuf(const struct graph *g, const struct graph_bufs *gb, int v)
{
    int s = g->vals[v].slot;
    return s == 0 ? gb->state : gb->area + g->slot_off[s];
}

/* Rows [0, rows) between a whole value (whole) and its parts (parts[k], nd->part[k] along
 * the axis): to_parts splits, otherwise it concatenates. */
static void move_parts(const struct gnode *nd, float *whole, float *const *parts, int rows,
                       bool to_parts)
{
    size_t wsum = 0;
    for (int k = 0; k < nd->n_part; k++)
        wsum += (size_t)nd->part[k];
    const size_t inner = (size_t)nd->inner, outer = (size_t)nd->outer;
    for (size_t i = 0; i < (size_t)rows; i++) {
        float *w = whole + i * outer * wsum * inner;
        for (size_t o = 0; o < outer; o++)
            for (int k = 0; k < nd->n_part; k++) {
                size_t n = (size_t)nd->part[k] * inner;
                float *p = parts[k] + (i * outer + o) * n;
                if (to_parts)
                    memcpy(p, w, sizeof(float) * n);
                else
                    memcpy(w, p, sizeof(float) * n);
                w += n;
            }
    }
}

static void run_copy(const struct graph *g, const struct graph_bufs *gb, const struct gnode *nd,
                     int rows, bool inverse)
{
    float *parts[GRAPH_MAX_PARTS];
    bool split = nd->kind == GNODE_SPLIT;
    const int *pv = split ? nd->out : nd->in;
    for (int k = 0; k < nd->n_part; k++)
        parts[k] = vbuf(g, gb, pv[k]);
    float *whole = vbuf(g, gb, split ? nd->in[0] : nd->out[0]);
    move_parts(nd, whole, parts, rows, split != inverse);
}

static void run_outputs(const struct graph *g, const struct graph_bufs *gb, int rows,
                        bool to_parts)
{
    float *parts[GRAPH_MAX_PARTS];
    for (int k = 0; k < g->n_out; k++)
        parts[k] = vbuf(g, gb, g->outputs[k]);
    move_parts(&g->out_node, gb->state, parts, rows, to_parts);
}

void graph_run(const struct eng_model *m, const struct graph_bufs *gb, int rows,
               const float *const *cp, const int *cld, bool inverse,
               const struct blk_io *proto)
{
    const struct graph *g = &m->g;
    const int N = g->n_nodes;
    if (inverse && g->out_copy)
        run_outputs(g, gb, rows, true);
    int xd_slot = -1; /* the slot whose exact (double) inverse state gb->xd holds */
    for (int step = 0; step < N; step++) {
        int i = inverse ? N - 1 - step : step;
        const struct gnode *nd = &g->nodes[i];
        if (nd->kind != GNODE_BLOCK) {
            xd_slot = -1;
            run_copy(g, gb, nd, rows, inverse);
            continue;
        }
        const struct blk *b = nd->b;
        float *x = vbuf(g, gb, nd->in[0]);
        struct blk_io io = *proto;
        if (inverse && b->numeric) {
            /* Consecutive numeric blocks on one value chain in double: fill the double
             * state from the float one only where the block before was not one of them. */
            int s = g->vals[nd->in[0]].slot;
            if (xd_slot != s)
                for (size_t k = 0; k < (size_t)rows * (size_t)b->d; k++)
                    gb->xd[k] = x[k];
            io.xd = gb->xd;
            const struct gnode *next = i > 0 ? &g->nodes[i - 1] : NULL;
            io.rounds_out = !(next && next->kind == GNODE_BLOCK && next->b->numeric &&
                              g->vals[next->in[0]].slot == s);
            xd_slot = s;
            if (m->tol_frac) {
                io.tol = proto->tol * m->tol_frac[b->index];
                io.err_scale = m->err_amp[b->index];
            }
        } else {
            xd_slot = -1;
        }
        io.k = m->kern;
        io.n = rows;
        io.x = x;
        io.log_det = gb->ld;
        io.c = b->cond >= 0 ? cp[b->cond] : NULL;
        io.c_ld = b->cond >= 0 ? cld[b->cond] : 0;
        io.scratch = gb->scratch;
        if (inverse)
            b->ops->inverse(b, &io);
        else
            b->ops->forward(b, &io);
    }
    if (!inverse && g->out_copy)
        run_outputs(g, gb, rows, false);
}
