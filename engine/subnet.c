/*
 * subnet.c — the small MLPs inside coupling blocks, conditioning networks and `mlp`
 * models: a chain of Linear layers and activations, run on a whole tile through the
 * engine's kernels (kern.h; weights packed at load).  The first Linear is split into an x
 * part and a condition part (subnet.h) so a broadcast condition costs one one-row product
 * per tile, not one per row.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "subnet.h"

#include "la.h"
#include "emath.h"
#include "kern.h"
#include "loader.h"
#include "safetensors.h"

/* ---- activations ----------------------------------------------------------------------- */

static const char *const act_names[ACT_COUNT] = {
    [ACT_NONE] = "none",         [ACT_RELU] = "relu",         [ACT_LEAKY_RELU] = "leaky_relu", [ACT_ELU] = "elu",
    [ACT_TANH] = "tanh",         [ACT_SIGMOID] = "sigmoid",       [ACT_SOFTPLUS] = "softplus",
    [ACT_GELU] = "gelu",         [ACT_GELU_TANH] = "gelu",        [ACT_SILU] = "silu",
    [ACT_LIPSWISH] = "lipswish",
};

const char *act_name(enum act_type t) { return t < ACT_COUNT ? act_names[t] : "?"; }

void act_apply_f64(enum act_type t, float p1, float p2, double *v, size_t n)
{
    switch (t) {
    case ACT_RELU:
        for (size_t i = 0; i < n; i++)
            v[i] = v[i] > 0.0 ? v[i] : 0.0;
        break;
    case ACT_LEAKY_RELU:
        for (size_t i = 0; i < n; i++)
            v[i] = v[i] >= 0.0 ? v[i] : p1 * v[i];
        break;
    case ACT_ELU:
        for (size_t i = 0; i < n; i++)
            v[i] = v[i] > 0.0 ? v[i] : p1 * em_expm1(v[i]);
        break;
    case ACT_TANH:
        for (size_t i = 0; i < n; i++)
            v[i] = em_tanh(v[i]);
        break;
    case ACT_SIGMOID:
        for (size_t i = 0; i < n; i++)
            v[i] = 1.0 / (1.0 + em_exp(-v[i]));
        break;
    case ACT_SOFTPLUS:
        for (size_t i = 0; i < n; i++) {
            double bu = (double)p1 * v[i];
            v[i] = bu > p2 ? v[i] : em_log1p(em_exp(bu)) / p1;
        }
        break;
    case ACT_GELU:
        for (size_t i = 0; i < n; i++)
            v[i] = 0.5 * v[i] * (1.0 + em_erf(v[i] * 0.70710678118654752));
        break;
    case ACT_GELU_TANH:
        for (size_t i = 0; i < n; i++) {
            double u = v[i];
            v[i] = 0.5 * u * (1.0 + em_tanh(0.79788456080286536 * (u + 0.044715 * u * u * u)));
        }
        break;
    case ACT_SILU:
        for (size_t i = 0; i < n; i++)
            v[i] = v[i] / (1.0 + em_exp(-v[i]));
        break;
    case ACT_LIPSWISH:
        for (size_t i = 0; i < n; i++)
            v[i] = v[i] / (1.0 + em_exp(-v[i])) / 1.1;
        break;
    case ACT_NONE:
    case ACT_COUNT:
        break;
    }
}

double act_deriv(enum act_type t, float p1, float p2, double u)
{
    switch (t) {
    case ACT_RELU: return u > 0 ? 1.0 : 0.0;
    case ACT_LEAKY_RELU: return u >= 0 ? 1.0 : p1;
    case ACT_ELU: return u > 0 ? 1.0 : p1 * em_exp(u);
    case ACT_TANH: { double th = em_tanh(u); return 1.0 - th * th; }
    case ACT_SIGMOID: { double s = 1.0 / (1.0 + em_exp(-u)); return s * (1.0 - s); }
    case ACT_SOFTPLUS: return p1 * u > p2 ? 1.0 : 1.0 / (1.0 + em_exp(-p1 * u));
    case ACT_GELU:
        return 0.5 * (1.0 + em_erf(u / sqrt(2.0))) + u * em_exp(-0.5 * u * u) / sqrt(2.0 * M_PI);
    case ACT_GELU_TANH: {
        double k = 0.79788456080286536, a = k * (u + 0.044715 * u * u * u);
        double th = em_tanh(a);
        return 0.5 * (1.0 + th) + 0.5 * u * (1.0 - th * th) * k * (1.0 + 3 * 0.044715 * u * u);
    }
    case ACT_SILU: { double s = 1.0 / (1.0 + em_exp(-u)); return s * (1.0 + u * (1.0 - s)); }
    case ACT_LIPSWISH: { double s = 1.0 / (1.0 + em_exp(-u)); return s * (1.0 + u * (1.0 - s)) / 1.1; }
    case ACT_NONE: return 1.0;
    case ACT_COUNT: break;
    }
    return 0.0;
}

double act_lipschitz(enum act_type t, float p1, float p2)
{
    switch (t) {
    case ACT_NONE: case ACT_RELU: case ACT_TANH: return 1.0;
    case ACT_LEAKY_RELU: return fmax(1.0, fabs(p1));
    case ACT_ELU: return fmax(1.0, p1);
    case ACT_SIGMOID: return 0.25;
    case ACT_SOFTPLUS: return 1.0;
    case ACT_GELU: case ACT_GELU_TANH: return 1.1289; /* max of GELU' */
    case ACT_SILU: return 1.0998;                     /* max of SiLU' */
    case ACT_LIPSWISH: return 1.0;
    case ACT_COUNT: break;
    }
    (void)p2;
    return INFINITY;
}

/* ---- loading ------------------------------------------------------------------------------ */

/* The shape flowing through a subnet while it loads: rank 1 a flat vector of c values
 * (h = w = 1), rank 2 (c, L) held as (c, 1, L), rank 3 (c, h, w). */
struct shp {
    int rank, c, h, w;
};

static long long shp_numel(const struct shp *s) { return (long long)s->c * s->h * s->w; }

static const char *shp_str(const struct shp *s, char *buf, size_t n)
{
    if (s->rank == 1)
        snprintf(buf, n, "a flat vector of %d", s->c);
    else if (s->rank == 2)
        snprintf(buf, n, "(%d, %d)", s->c, s->w);
    else
        snprintf(buf, n, "(%d, %d, %d)", s->c, s->h, s->w);
    return buf;
}

/* An int field or a list of `dim` ints (torch's int-or-tuple arguments), each >= lo. */
static enum eng_status int_pair(struct ldr *L, const cJSON *lj, const char *field, int dim,
                                int def, int lo, int out[2])
{
    out[0] = out[1] = def;
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(lj, field);
    if (!f || cJSON_IsNull(f))
        return ENG_OK;
    if (cJSON_IsNumber(f)) {
        long v;
        enum eng_status st = ldr_int(L, lj, field, true, def, lo, 1 << 16, &v);
        out[0] = out[1] = (int)v;
        return st;
    }
    if (!cJSON_IsArray(f) || cJSON_GetArraySize(f) != dim)
        return ldr_fail(L, ENG_ERR_MANIFEST, "field '%s' must be an integer or a list of %d "
                        "integers", field, dim);
    for (int i = 0; i < dim; i++) {
        const cJSON *e = cJSON_GetArrayItem(f, i);
        double v = cJSON_IsNumber(e) ? e->valuedouble : -1e300;
        if (v != floor(v) || v < lo || v > (1 << 16))
            return ldr_fail(L, ENG_ERR_MANIFEST, "field '%s'[%d] must be an integer >= %d",
                            field, i, lo);
        out[i] = (int)v;
    }
    return ENG_OK;
}

/* conv1d / conv2d / conv_transpose1d / conv_transpose2d on the image state *sh. */
static enum eng_status load_conv(struct ldr *L, const cJSON *lj, struct subnet_layer *l,
                                 struct shp *sh, bool transposed, int dim, long long *n_params)
{
    char buf[64];
    const char *lname = transposed ? (dim == 2 ? "conv_transpose2d" : "conv_transpose1d")
                                   : (dim == 2 ? "conv2d" : "conv1d");
    if (sh->rank != dim + 1)
        return ldr_fail(L, ENG_ERR_MANIFEST, "%s needs a %s input; the layer's input is %s",
                        lname, dim == 2 ? "(C, H, W)" : "(C, L)", shp_str(sh, buf, sizeof(buf)));
    const struct st_tensor *wt;
    enum eng_status st = ldr_raw(L, lj, "weight", &wt);
    if (st != ENG_OK)
        return st;
    if (wt->ndim != dim + 2 || wt->shape[0] < 1 || wt->shape[0] > (1 << 16))
        return ldr_fail(L, ENG_ERR_TENSOR, "tensor '%s' (field 'weight') must have %d dims "
                        "(%s), got %d", wt->name, dim + 2,
                        transposed ? "in, out/groups, kernel..." : "out, in/groups, kernel...",
                        wt->ndim);
    long groups = 1;
    if ((st = ldr_int(L, lj, "groups", false, 1, 1, 1 << 16, &groups)) != ENG_OK)
        return st;
    struct conv_geom *g = &l->g;
    memset(g, 0, sizeof(*g));
    g->transposed = transposed;
    g->groups = (int)groups;
    g->cin = sh->c;
    g->ih = sh->h, g->iw = sh->w;
    if (g->cin % g->groups != 0)
        return ldr_fail(L, ENG_ERR_MANIFEST, "groups: %d does not divide the %d input channels",
                        g->groups, g->cin);
    int64_t k0 = wt->shape[2], k1 = dim == 2 ? wt->shape[3] : 1;
    if (dim == 1)
        k1 = wt->shape[2], k0 = 1;
    if (k0 < 1 || k1 < 1 || k0 > 4096 || k1 > 4096)
        return ldr_fail(L, ENG_ERR_TENSOR, "tensor '%s' (field 'weight'): kernel sizes must be "
                        "between 1 and 4096", wt->name);
    g->kh = (int)k0, g->kw = (int)k1;
    int64_t shp4[4];
    if (transposed) {
        int64_t og = wt->shape[1];
        g->cout = (int)(og * g->groups);
        shp4[0] = g->cin, shp4[1] = og;
    } else {
        g->cout = (int)wt->shape[0];
        shp4[0] = -1, shp4[1] = g->cin / g->groups;
        if (g->cout % g->groups != 0)
            return ldr_fail(L, ENG_ERR_TENSOR, "tensor '%s' (field 'weight'): %d output "
                            "channels are not divisible by groups = %d", wt->name, g->cout,
                            g->groups);
    }
    if (dim == 2)
        shp4[2] = g->kh, shp4[3] = g->kw;
    else
        shp4[2] = g->kw;
    const float *w;
    if ((st = ldr_tensor(L, lj, "weight", true, dim + 2, shp4, &w)) != ENG_OK)
        return st;
    if (g->cout < 1 || g->cout > (1 << 16))
        return ldr_fail(L, ENG_ERR_TENSOR, "tensor '%s' (field 'weight'): %d output channels",
                        wt->name, g->cout);
    int64_t bs[1] = {g->cout};
    if ((st = ldr_tensor(L, lj, "bias", false, 1, bs, &l->cb)) != ENG_OK)
        return st;

    int s2[2], d2[2], p2[2] = {0, 0}, op2[2] = {0, 0};
    if ((st = int_pair(L, lj, "stride", dim, 1, 1, s2)) != ENG_OK ||
        (st = int_pair(L, lj, "dilation", dim, 1, 1, d2)) != ENG_OK)
        return st;
    bool same = false;
    const cJSON *pj = cJSON_GetObjectItemCaseSensitive(lj, "padding");
    if (cJSON_IsString(pj)) {
        if (transposed)
            return ldr_fail(L, ENG_ERR_MANIFEST, "padding: %s takes integer padding only",
                            lname);
        if (strcmp(pj->valuestring, "same") == 0)
            same = true;
        else if (strcmp(pj->valuestring, "valid") != 0)
            return ldr_fail(L, ENG_ERR_MANIFEST, "padding: '%.40s' is not 'same', 'valid' or "
                            "integers", pj->valuestring);
    } else if ((st = int_pair(L, lj, "padding", dim, 0, 0, p2)) != ENG_OK) {
        return st;
    }
    if (transposed && (st = int_pair(L, lj, "output_padding", dim, 0, 0, op2)) != ENG_OK)
        return st;
    static const char *const modes[] = {"zeros", "circular", "reflect", "replicate"};
    int mode = 0;
    if ((st = ldr_enum(L, lj, "padding_mode", false, 0, modes, 4, &mode)) != ENG_OK)
        return st;
    if (mode >= 2 || (mode == 1 && transposed))
        return ldr_fail(L, ENG_ERR_MANIFEST, "padding_mode: '%s' is not supported for %s "
                        "(supported: 'zeros'%s)", modes[mode], lname,
                        transposed ? "" : ", 'circular'");
    g->circular = mode == 1;
    /* axis 0 is h (unused for 1-D), axis 1 is w */
    int ax = dim == 2 ? 0 : -1;
    g->sh = ax == 0 ? s2[0] : 1, g->sw = s2[dim - 1];
    g->dh = ax == 0 ? d2[0] : 1, g->dw = d2[dim - 1];
    if (same) {
        if (g->sh != 1 || g->sw != 1)
            return ldr_fail(L, ENG_ERR_MANIFEST, "padding: 'same' needs stride 1 (torch "
                            "refuses it otherwise)");
        int th = g->dh * (g->kh - 1), tw = g->dw * (g->kw - 1);
        g->pt = th / 2, g->pb = th - th / 2, g->pl = tw / 2, g->pr = tw - tw / 2;
    } else {
        g->pt = g->pb = ax == 0 ? p2[0] : 0;
        g->pl = g->pr = p2[dim - 1];
    }
    int oph = ax == 0 ? op2[0] : 0, opw = op2[dim - 1];
    if (transposed && (oph >= (g->sh > g->dh ? g->sh : g->dh) ||
                       opw >= (g->sw > g->dw ? g->sw : g->dw)))
        return ldr_fail(L, ENG_ERR_MANIFEST, "output_padding: must be smaller than the stride "
                        "or the dilation (torch's rule)");
    if (g->circular && (g->pt > g->ih || g->pb > g->ih || g->pl > g->iw || g->pr > g->iw))
        return ldr_fail(L, ENG_ERR_MANIFEST, "padding: circular padding larger than the input "
                        "(%d x %d) is not supported", g->ih, g->iw);
    if (!conv_geom_finish(g, oph, opw))
        return ldr_fail(L, ENG_ERR_TENSOR, "tensor '%s': a kernel of %d x %d (dilation %d, %d) "
                        "does not fit the padded input %s; the output would be empty",
                        wt->name, g->kh, g->kw, g->dh, g->dw, shp_str(sh, buf, sizeof(buf)));
    float *wm = ldr_alloc(L, sizeof(float) * (size_t)g->cout * (size_t)g->kg);
    if (!wm)
        return ENG_ERR_NOMEM;
    conv_weight_matrix(g, w, wm);
    l->cw = wm;
    const int cout_g = g->cout / g->groups;
    float *wh = ldr_alloc(L, sizeof(float) * (size_t)g->cout * (size_t)g->kg);
    l->cwp_stride = kern_packed_size(cout_g, g->kg);
    float *wp = ldr_alloc(L, sizeof(float) * ((size_t)g->groups * l->cwp_stride + 1));
    if (!wh || !wp)
        return ENG_ERR_NOMEM;
    conv_weight_hwc(g, wm, wh);
    for (int gr = 0; gr < g->groups; gr++)
        kern_pack_weight(cout_g, g->kg, wh + (size_t)gr * cout_g * g->kg, g->kg,
                         wp + (size_t)gr * l->cwp_stride);
    l->cwp = wp;
    l->wname = wt->name;
    l->kind = SUB_CONV;
    l->in = (int)shp_numel(sh);
    sh->c = g->cout, sh->h = g->oh, sh->w = g->ow;
    if (shp_numel(sh) > (1 << 24))
        return ldr_fail(L, ENG_ERR_TENSOR, "tensor '%s': the output %s is too large", wt->name,
                        shp_str(sh, buf, sizeof(buf)));
    l->out = (int)shp_numel(sh);
    *n_params += (long long)g->cout * g->kg + (l->cb ? g->cout : 0);
    return ENG_OK;
}

static enum eng_status load_linear(struct ldr *L, const cJSON *lj, struct subnet_layer *l,
                                   struct shp *sh, long long *n_params)
{
    char buf[64];
    const struct st_tensor *wt;
    enum eng_status st;
    if (sh->rank != 1)
        return ldr_fail(L, ENG_ERR_MANIFEST, "a linear layer on a %s input acts on its last "
                        "axis in torch; add a 'flatten' layer before it",
                        shp_str(sh, buf, sizeof(buf)));
    int width = sh->c;
    if ((st = ldr_raw(L, lj, "weight", &wt)) != ENG_OK)
        return st;
    int outw = wt->ndim == 2 ? (int)wt->shape[0] : -1;
    if (outw <= 0 || outw > (1 << 20))
        return ldr_fail(L, ENG_ERR_TENSOR, "tensor '%s' (field 'weight') must be a matrix "
                        "(out, in) with out > 0", wt->name);
    int64_t shp[2] = {outw, width};
    if ((st = ldr_tensor(L, lj, "weight", true, 2, shp, &l->w)) != ENG_OK)
        return st;
    int64_t bs[1] = {outw};
    if ((st = ldr_tensor(L, lj, "bias", false, 1, bs, &l->b)) != ENG_OK)
        return st;
    l->kind = SUB_LINEAR;
    l->is_linear = 1, l->in = width, l->out = outw;
    float *wp = ldr_alloc(L, sizeof(float) * (kern_packed_size(outw, width) + 1));
    if (!wp)
        return ENG_ERR_NOMEM;
    kern_pack_weight(outw, width, l->w, width, wp);
    l->wp = wp;
    l->wname = wt->name;
    *n_params += (long long)outw * width + (l->b ? outw : 0);
    sh->c = outw;
    return ENG_OK;
}

static enum eng_status load_act(struct ldr *L, const cJSON *lj, enum act_type act,
                                struct subnet_layer *l, const struct shp *sh)
{
    enum eng_status st = ENG_OK;
    l->kind = SUB_ACT;
    l->act = act;
    l->in = l->out = (int)shp_numel(sh);
    double p1 = 0, p2 = 0;
    if (l->act == ACT_LEAKY_RELU) {
        st = ldr_num(L, lj, "negative_slope", false, 0.01, &p1);
    } else if (l->act == ACT_ELU) {
        st = ldr_num(L, lj, "alpha", false, 1.0, &p1);
    } else if (l->act == ACT_SOFTPLUS) {
        st = ldr_num(L, lj, "beta", false, 1.0, &p1);
        if (st == ENG_OK)
            st = ldr_num(L, lj, "threshold", false, 20.0, &p2);
        if (st == ENG_OK && !(p1 > 0))
            st = ldr_fail(L, ENG_ERR_MANIFEST, "field 'beta' must be > 0");
    } else if (l->act == ACT_GELU) {
        static const char *const approx[] = {"none", "tanh"};
        int a = 0;
        st = ldr_enum(L, lj, "approximate", false, 0, approx, 2, &a);
        if (a == 1)
            l->act = ACT_GELU_TANH;
    }
    l->p1 = (float)p1, l->p2 = (float)p2;
    return st;
}

/* unflatten: a flat state to (C, H, W) / (C, L) from "shape". */
static enum eng_status load_unflatten(struct ldr *L, const cJSON *lj, struct subnet_layer *l,
                                      struct shp *sh)
{
    char buf[64];
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(lj, "shape");
    int n = cJSON_IsArray(f) ? cJSON_GetArraySize(f) : 0;
    if (n != 2 && n != 3)
        return ldr_fail(L, ENG_ERR_MANIFEST, "field 'shape' must be [C, H, W] or [C, L]");
    int v[3] = {1, 1, 1};
    long long prod = 1;
    for (int i = 0; i < n; i++) {
        const cJSON *e = cJSON_GetArrayItem(f, i);
        double x = cJSON_IsNumber(e) ? e->valuedouble : 0;
        if (x != floor(x) || x < 1 || x > (1 << 24))
            return ldr_fail(L, ENG_ERR_MANIFEST, "shape[%d] must be a positive integer", i);
        v[i] = (int)x;
        prod *= v[i];
    }
    if (sh->rank != 1 || prod != shp_numel(sh))
        return ldr_fail(L, ENG_ERR_MANIFEST, "unflatten to %lld values; the layer's input is %s",
                        prod, shp_str(sh, buf, sizeof(buf)));
    l->kind = SUB_UNFLATTEN;
    l->in = l->out = (int)prod;
    sh->rank = n, sh->c = v[0];
    sh->h = n == 3 ? v[1] : 1;
    sh->w = n == 3 ? v[2] : v[1];
    return ENG_OK;
}

/* Parse the layers; *in_sh is the input shape, *need the output shape the block needs. */
static enum eng_status load_layers(struct ldr *L, const cJSON *layers, int nl,
                                   struct subnet_layer *ls, struct subnet *s,
                                   const struct shp *in_sh, const struct shp *need)
{
    static const char *const types[] = {"linear", "relu", "leaky_relu", "elu", "tanh",
                                        "sigmoid", "softplus", "gelu", "silu", "lipswish",
                                        "conv1d", "conv2d", "conv_transpose1d",
                                        "conv_transpose2d", "flatten", "unflatten"};
    static const enum act_type acts[] = {0, ACT_RELU, ACT_LEAKY_RELU, ACT_ELU, ACT_TANH,
                                         ACT_SIGMOID, ACT_SOFTPLUS, ACT_GELU, ACT_SILU,
                                         ACT_LIPSWISH};
    struct shp sh = *in_sh;
    const char *last_w = "?";
    enum eng_status st = ENG_OK;
    char b1[64], b2[64];
    s->state_max = (size_t)shp_numel(&sh);
    for (int i = 0; i < nl; i++) {
        const cJSON *lj = cJSON_GetArrayItem(layers, i);
        size_t m2 = ldr_push(L, ".layers[%d]", i);
        int ty;
        st = ldr_enum(L, lj, "type", true, 0, types, (int)(sizeof(types) / sizeof(types[0])), &ty);
        struct subnet_layer *l = &ls[i];
        if (st != ENG_OK) {
        } else if (ty == 0) {
            st = load_linear(L, lj, l, &sh, &s->n_params);
        } else if (ty < 10) {
            st = load_act(L, lj, acts[ty], l, &sh);
        } else if (ty < 14) {
            st = load_conv(L, lj, l, &sh, ty >= 12, ty == 11 || ty == 13 ? 2 : 1, &s->n_params);
        } else if (ty == 14) {
            l->kind = SUB_FLATTEN;
            l->in = l->out = (int)shp_numel(&sh);
            sh.rank = 1, sh.c = l->out, sh.h = sh.w = 1;
        } else {
            st = load_unflatten(L, lj, l, &sh);
        }
        if (st != ENG_OK) {
            ldr_pop(L, m2);
            return st;
        }
        if (l->kind == SUB_LINEAR || l->kind == SUB_CONV)
            last_w = l->wname;
        if ((size_t)shp_numel(&sh) > s->state_max)
            s->state_max = (size_t)shp_numel(&sh);
        l->oc = sh.c, l->opos = sh.rank > 1 ? sh.h * sh.w : 1;
        if (l->kind == SUB_CONV) {
            size_t cf = conv_col_floats(&l->g);
            /* the first layer gathers [x, c] from the rows themselves even when 1x1 */
            if (cf == 0 && i == 0)
                cf = (size_t)l->g.cin * l->g.oh * l->g.ow;
            if (cf > s->col_max)
                s->col_max = cf;
        }
        ldr_pop(L, m2);
    }
    bool ok = need->rank == 1 ? sh.rank == 1 && sh.c == need->c
                              : sh.rank == need->rank && sh.c == need->c && sh.h == need->h &&
                                    sh.w == need->w;
    if (need->c < 0 && sh.rank == 1) /* any width */
        ok = true;
    if (!ok)
        return ldr_fail(L, ENG_ERR_TENSOR, "subnet output is %s (tensor '%s'), the block needs %s",
                        shp_str(&sh, b1, sizeof(b1)), last_w, shp_str(need, b2, sizeof(b2)));
    s->dout = (int)shp_numel(&sh);
    return ENG_OK;
}

/* Split the first (Linear) layer of an MLP subnet into its x and condition parts. */
static enum eng_status split_first(struct ldr *L, struct subnet *s)
{
    const struct subnet_layer *l0 = &s->layers[0];
    int dx = s->dx, dc = s->dc;
    float *wx = ldr_alloc(L, sizeof(float) * (size_t)(l0->out * (dx ? dx : 1)));
    float *wc = ldr_alloc(L, sizeof(float) * (size_t)(l0->out * (dc ? dc : 1)));
    if (!wx || !wc)
        return ENG_ERR_NOMEM;
    for (int o = 0; o < l0->out; o++) {
        memcpy(wx + (size_t)o * dx, l0->w + (size_t)o * l0->in, sizeof(float) * (size_t)dx);
        memcpy(wc + (size_t)o * dc, l0->w + (size_t)o * l0->in + dx, sizeof(float) * (size_t)dc);
    }
    s->w1x = wx, s->w1c = wc;
    float *wxp = ldr_alloc(L, sizeof(float) * (kern_packed_size(l0->out, dx) + 1));
    float *wcp = ldr_alloc(L, sizeof(float) * (kern_packed_size(l0->out, dc) + 1));
    if (!wxp || !wcp)
        return ENG_ERR_NOMEM;
    kern_pack_weight(l0->out, dx, wx, dx, wxp);
    kern_pack_weight(l0->out, dc, wc, dc, wcp);
    s->w1xp = wxp, s->w1cp = wcp;
    return ENG_OK;
}

static enum eng_status load_subnet(struct ldr *L, const cJSON *obj, const char *field,
                                   const struct shp *in_sh, const struct shp *need, int cx,
                                   int cc, const struct subnet **out)
{
    *out = NULL;
    const cJSON *sj;
    enum eng_status st = ldr_obj(L, obj, field, true, &sj);
    if (st != ENG_OK)
        return st;
    size_t mark = ldr_push(L, ".%s", field);
    const cJSON *layers = cJSON_GetObjectItemCaseSensitive(sj, "layers");
    int nl = cJSON_IsArray(layers) ? cJSON_GetArraySize(layers) : 0;
    struct subnet *s = NULL;
    struct subnet_layer *ls = NULL;
    if (nl <= 0 || nl > 256) {
        st = ldr_fail(L, ENG_ERR_MANIFEST, "field 'layers' must be a non-empty list (at most 256)");
        goto out;
    }
    s = ldr_alloc(L, sizeof(*s));
    ls = ldr_alloc(L, sizeof(*ls) * (size_t)nl);
    if (!s || !ls) {
        st = ENG_ERR_NOMEM;
        goto out;
    }
    const long long P = (long long)in_sh->h * in_sh->w;
    s->cx = cx, s->cc = cc;
    s->dx = (int)(cx * P), s->dc = (int)(cc * P);
    if ((st = load_layers(L, layers, nl, ls, s, in_sh, need)) != ENG_OK)
        goto out;
    /* An MLP (no convolution, a Linear before any activation) runs on whole tiles; the
     * flatten / unflatten layers around it are the flat layout itself. */
    int first = -1, nconv = 0, ncomp = 0;
    for (int i = 0; i < nl; i++) {
        if (ls[i].kind == SUB_CONV)
            nconv++;
        if (ls[i].kind == SUB_LINEAR || ls[i].kind == SUB_CONV)
            ncomp++;
        if ((ls[i].kind == SUB_LINEAR || ls[i].kind == SUB_ACT) && first < 0)
            first = i;
    }
    if (ncomp == 0) {
        st = ldr_fail(L, ENG_ERR_MANIFEST, "the subnet has no linear or convolution layer");
        goto out;
    }
    if (in_sh->rank == 1 && (first < 0 || ls[first].kind != SUB_LINEAR)) {
        st = ldr_fail(L, ENG_ERR_MANIFEST, "the first layer must be 'linear'");
        goto out;
    }
    if (nconv == 0 && first >= 0 && ls[first].kind == SUB_LINEAR) {
        int k = 0;
        for (int i = 0; i < nl; i++)
            if (ls[i].kind == SUB_LINEAR || ls[i].kind == SUB_ACT)
                ls[k++] = ls[i];
        s->layers = ls, s->n_layers = k;
        for (int i = 0; i < k; i++)
            if (ls[i].kind == SUB_LINEAR && ls[i].out > s->max_width)
                s->max_width = ls[i].out;
        if ((st = split_first(L, s)) != ENG_OK)
            goto out;
    } else {
        s->general = true;
        s->layers = ls, s->n_layers = nl;
        s->in_rank = in_sh->rank;
        s->in_pos = in_sh->rank > 1 ? in_sh->h * in_sh->w : 1;
        /* rows per batch: enough that the products have ~256 columns at the smallest
         * number of positions, at most 64 */
        int pmin = s->in_pos;
        for (int i = 0; i < nl; i++)
            if (ls[i].kind == SUB_CONV && ls[i].opos < pmin)
                pmin = ls[i].opos;
        s->rb = (256 + pmin - 1) / pmin;
        if (s->rb > 64)
            s->rb = 64;
        for (int i = 1; i < nl; i++)
            if (ls[i].kind == SUB_ACT &&
                (ls[i - 1].kind == SUB_LINEAR || ls[i - 1].kind == SUB_CONV))
                ls[i].fused = true;
        s->max_width = (int)s->state_max;
    }
    s->k = ldr_kern(L);
    *out = s;
out:
    ldr_pop(L, mark);
    return st;
}

enum eng_status ldr_subnet(struct ldr *L, const cJSON *obj, const char *field, int dx, int dc,
                           int dout, const struct subnet **out)
{
    struct shp in = {1, dx + dc, 1, 1}, need = {1, dout, 1, 1};
    return load_subnet(L, obj, field, &in, &need, dx, dc, out);
}

enum eng_status ldr_subnet_img(struct ldr *L, const cJSON *obj, const char *field, int rank,
                               const int *spatial, int cx, int cc, int cout,
                               const struct subnet **out)
{
    if (rank <= 1)
        return ldr_subnet(L, obj, field, cx, cc, cout, out);
    int h = rank == 3 ? spatial[0] : 1, w = rank == 3 ? spatial[1] : spatial[0];
    struct shp in = {rank, cx + cc, h, w}, need = {rank, cout, h, w};
    return load_subnet(L, obj, field, &in, &need, cx, cc, out);
}

/* ---- evaluation ------------------------------------------------------------------------- */

/* Convolutional subnets: for a batch of up to s->rb rows, two state buffers and the patch
 * matrix (each rounded to 16 floats so it starts 64-byte aligned relative to the
 * scratch). */
static size_t round16(size_t n) { return (n + 15) / 16 * 16; }

size_t subnet_scratch(const struct subnet *s, int rows)
{
    if (s->general)
    {
        size_t R = (size_t)(rows < s->rb ? (rows > 0 ? rows : 1) : s->rb);
        return 2 * round16(R * s->state_max) + round16(R * s->col_max) + 16;
    }
    return 2 * (size_t)rows * (size_t)s->max_width + (size_t)s->max_width;
}

/* Y = act(init + X W^T) through the model's kernels; W packed (kern.h). */
static void lin(const struct subnet *s, int rows, int out, int in, const float *X, int ldx,
                const float *wp, const float *init, bool acc, float *Y, int ldy,
                const struct subnet_layer *act)
{
    struct kern_gemm g = {.m = rows, .n = out, .k = in, .a = X, .lda = ldx, .b = wp,
                          .bmode = KERN_B_PACKED, .init = init, .accumulate = acc, .y = Y,
                          .ldy = ldy};
    if (act) {
        g.act = act->act;
        g.p1 = act->p1, g.p2 = act->p2;
    }
    s->k->gemm(&g);
}

static void act_rows(const struct kern *k, const struct subnet_layer *l, int rows, float *p,
                     int ld)
{
    if (ld == l->out)
        k->act(l->act, l->p1, l->p2, p, (size_t)rows * (size_t)l->out);
    else
        for (int i = 0; i < rows; i++)
            k->act(l->act, l->p1, l->p2, p + (size_t)i * ld, (size_t)l->out);
}

/* The activation right after Linear layer i, fused into its product (NULL if none). */
static const struct subnet_layer *fused_act(const struct subnet *s, int i)
{
    return i + 1 < s->n_layers && !s->layers[i + 1].is_linear ? &s->layers[i + 1] : NULL;
}

/* ---- convolutional subnets: batches of R rows ------------------------------------------------
 *
 * A state of R rows is held "image", channels last (channel c of position q of row r at
 * (r*pos + q)*C + c: conv_patches reads it and each product writes it), or "flat",
 * row-major (row r at r*width, the channel-major flat row; linear layers read and write
 * it); flatten and unflatten switch layouts, the input is gathered into one and the
 * output scattered back to channel-major rows.  Every output element of a product starts
 * from its bias and accumulates its (a, b, ci) terms in a fixed order (kern.h), so neither
 * the kernel path nor the rows per batch change a bit. */

struct gstate {
    float *p;
    bool img;
    int ch, pos;    /* image: channels and positions per channel */
};

/* image (R*pos x C) <-> flat (R x C*pos, channel-major rows) */
static void img_to_flat(const float *src, int C, int pos, int R, float *dst)
{
    for (int r = 0; r < R; r++)
        for (int q = 0; q < pos; q++) {
            const float *v = src + ((size_t)r * pos + q) * C;
            float *o = dst + (size_t)r * C * pos + q;
            for (int c = 0; c < C; c++)
                o[(size_t)c * pos] = v[c];
        }
}

static void flat_to_img(const float *src, int C, int pos, int R, float *dst)
{
    for (int r = 0; r < R; r++)
        for (int q = 0; q < pos; q++) {
            const float *v = src + (size_t)r * C * pos + q;
            float *o = dst + ((size_t)r * pos + q) * C;
            for (int c = 0; c < C; c++)
                o[c] = v[(size_t)c * pos];
        }
}

/* One convolution of the image src (R rows) into the image dst: per group, patches times
 * the packed weight, the bias as the start value, the next activation fused. */
static void conv_rows(const struct subnet *s, const struct subnet_layer *l,
                      const struct subnet_layer *act, int R, const float *src, float *col,
                      float *dst)
{
    const struct conv_geom *g = &l->g;
    const int rowsP = R * g->oh * g->ow, cout_g = g->cout / g->groups;
    const float *A = src;
    int lda = g->cin;
    if (!conv_direct(g)) {
        lda = g->groups * g->kg;
        conv_patches(g, R, src, col, (size_t)lda);
        A = col;
    }
    for (int gr = 0; gr < g->groups; gr++) {
        struct kern_gemm gm = {.m = rowsP, .n = cout_g, .k = g->kg, .a = A + (size_t)gr * g->kg,
                               .lda = lda, .b = l->cwp + (size_t)gr * l->cwp_stride,
                               .bmode = KERN_B_PACKED,
                               .init = l->cb ? l->cb + (size_t)gr * cout_g : NULL,
                               .y = dst + (size_t)gr * cout_g, .ldy = g->cout};
        if (act) {
            gm.act = act->act;
            gm.p1 = act->p1, gm.p2 = act->p2;
        }
        s->k->gemm(&gm);
    }
}

/* The input [x, c] of R rows into dst in the layout of st (image or flat). */
static void gather_input(const struct subnet *s, int R, const float *x, int ldx, const float *c,
                         int ldc, const struct gstate *st, float *dst)
{
    if (!st->img) {
        const int w = s->dx + s->dc;
        for (int r = 0; r < R; r++) {
            if (s->dx > 0)
                memcpy(dst + (size_t)r * w, x + (size_t)r * ldx, sizeof(float) * (size_t)s->dx);
            if (s->dc > 0)
                memcpy(dst + (size_t)r * w + s->dx, c + (size_t)r * ldc,
                       sizeof(float) * (size_t)s->dc);
        }
        return;
    }
    const int P = s->in_pos, C = s->cx + s->cc;
    for (int r = 0; r < R; r++)
        for (int ch = 0; ch < C; ch++) {
            const float *v = ch < s->cx ? x + (size_t)r * ldx + (size_t)ch * P
                                        : c + (size_t)r * ldc + (size_t)(ch - s->cx) * P;
            float *o = dst + (size_t)r * P * C + ch;
            for (int q = 0; q < P; q++)
                o[(size_t)q * C] = v[q];
        }
}

static void general_rows(const struct subnet *s, int R, const float *x, int ldx, const float *c,
                         int ldc, float *out, int ldo, float *scratch)
{
    float *buf[2] = {scratch, scratch + round16((size_t)R * s->state_max)};
    float *col = scratch + 2 * round16((size_t)R * s->state_max);
    struct gstate st = {buf[0], s->in_rank > 1, s->cx + s->cc, s->in_pos};
    gather_input(s, R, x, ldx, c, ldc, &st, buf[0]);
    for (int i = 0; i < s->n_layers; i++) {
        const struct subnet_layer *l = &s->layers[i];
        if (l->kind == SUB_ACT && l->fused)
            continue;
        float *dst = st.p == buf[0] ? buf[1] : buf[0];
        const struct subnet_layer *act =
            i + 1 < s->n_layers && s->layers[i + 1].fused ? &s->layers[i + 1] : NULL;
        switch (l->kind) {
        case SUB_ACT:
            s->k->act(l->act, l->p1, l->p2, st.p, (size_t)R * (size_t)l->out);
            break;
        case SUB_FLATTEN:
            if (st.img)
                img_to_flat(st.p, st.ch, st.pos, R, dst), st.p = dst;
            st.img = false;
            break;
        case SUB_UNFLATTEN:
            flat_to_img(st.p, l->oc, l->opos, R, dst), st.p = dst;
            st.img = true, st.ch = l->oc, st.pos = l->opos;
            break;
        case SUB_LINEAR: {
            struct kern_gemm gm = {.m = R, .n = l->out, .k = l->in, .a = st.p, .lda = l->in,
                                   .b = l->wp, .bmode = KERN_B_PACKED, .init = l->b, .y = dst,
                                   .ldy = l->out};
            if (act) {
                gm.act = act->act;
                gm.p1 = act->p1, gm.p2 = act->p2;
            }
            s->k->gemm(&gm);
            st.p = dst;
            break;
        }
        case SUB_CONV:
            conv_rows(s, l, act, R, st.p, col, dst);
            st.p = dst, st.img = true, st.ch = l->oc, st.pos = l->opos;
            break;
        }
    }
    if (st.img) {
        float *dst = st.p == buf[0] ? buf[1] : buf[0];
        img_to_flat(st.p, st.ch, st.pos, R, dst), st.p = dst;
    }
    for (int r = 0; r < R; r++)
        memcpy(out + (size_t)r * ldo, st.p + (size_t)r * s->dout, sizeof(float) * (size_t)s->dout);
}

/* MLPs: every output element is bias, then the condition columns, then the x columns, each
 * accumulated in order (kern.h): a broadcast condition row gives the same bits as the
 * same row repeated.  Convolutional subnets: in batches of s->rb rows (general_rows). */
void subnet_forward(const struct subnet *s, int rows, const float *x, int ldx, const float *c,
                    int ldc, float *out, int ldo, float *scratch)
{
    if (s->general) {
        for (int r0 = 0; r0 < rows; r0 += s->rb) {
            int R = rows - r0 < s->rb ? rows - r0 : s->rb;
            general_rows(s, R, x ? x + (size_t)r0 * ldx : NULL, ldx,
                         c ? c + (size_t)r0 * ldc : NULL, ldc, out + (size_t)r0 * ldo, ldo,
                         scratch);
        }
        return;
    }
    const int mw = s->max_width;
    float *buf[2] = {scratch, scratch + (size_t)rows * mw};
    float *crow = scratch + 2 * (size_t)rows * mw;
    /* The last Linear writes straight into `out`; activations after it run there. */
    int last_lin = 0;
    for (int i = 0; i < s->n_layers; i++)
        if (s->layers[i].is_linear)
            last_lin = i;

    const struct subnet_layer *l0 = &s->layers[0];
    float *cur = last_lin == 0 ? out : buf[0];
    int ldcur = last_lin == 0 ? ldo : l0->out;
    const float *init = l0->b;
    bool cont = false; /* continue from the condition part already in cur */
    if (s->dc > 0 && ldc == 0) {
        lin(s, 1, l0->out, s->dc, c, s->dc, s->w1cp, l0->b, false, crow, l0->out, NULL);
        init = crow;
    } else if (s->dc > 0) {
        lin(s, rows, l0->out, s->dc, c, ldc, s->w1cp, l0->b, false, cur, ldcur, NULL);
        init = NULL, cont = true;
    }
    lin(s, rows, l0->out, s->dx, x, ldx, s->w1xp, init, cont, cur, ldcur, fused_act(s, 0));

    int which = 0;
    for (int i = 1; i < s->n_layers; i++) {
        const struct subnet_layer *l = &s->layers[i];
        if (!l->is_linear) {
            if (!s->layers[i - 1].is_linear) /* a second activation in a row */
                act_rows(s->k, l, rows, cur, ldcur);
            continue;
        }
        float *dst = i == last_lin ? out : buf[which ^ 1];
        int lddst = i == last_lin ? ldo : l->out;
        lin(s, rows, l->out, l->in, cur, ldcur, l->wp, l->b, false, dst, lddst,
            fused_act(s, i));
        cur = dst, ldcur = lddst;
        which ^= 1;
    }
}

/* ---- back-propagation to the input (preimage search) -------------------------------------- */

size_t subnet_tape(const struct subnet *s, int rows)
{
    size_t w = 0;
    for (int i = 0; i < s->n_layers; i++)
        if (!s->layers[i].is_linear)
            w += (size_t)s->layers[i].out;
    return (size_t)rows * (w ? w : 1);
}

void subnet_forward_tape(const struct subnet *s, int rows, const float *x, int ldx, float *out,
                         int ldo, float *tape, float *scratch)
{
    const int mw = s->max_width;
    float *buf[2] = {scratch, scratch + (size_t)rows * mw};
    int last_lin = 0;
    for (int i = 0; i < s->n_layers; i++)
        if (s->layers[i].is_linear)
            last_lin = i;
    const struct subnet_layer *l0 = &s->layers[0];
    float *cur = last_lin == 0 ? out : buf[0];
    int ldcur = last_lin == 0 ? ldo : l0->out;
    lin(s, rows, l0->out, s->dx, x, ldx, s->w1xp, l0->b, false, cur, ldcur, NULL);
    int which = 0;
    float *t = tape;
    for (int i = 1; i < s->n_layers; i++) {
        const struct subnet_layer *l = &s->layers[i];
        if (!l->is_linear) {
            for (int r = 0; r < rows; r++)
                memcpy(t + (size_t)r * l->out, cur + (size_t)r * ldcur,
                       sizeof(float) * (size_t)l->out);
            t += (size_t)rows * l->out;
            act_rows(s->k, l, rows, cur, ldcur);
            continue;
        }
        float *dst = i == last_lin ? out : buf[which ^ 1];
        int lddst = i == last_lin ? ldo : l->out;
        lin(s, rows, l->out, l->in, cur, ldcur, l->wp, l->b, false, dst, lddst, NULL);
        cur = dst, ldcur = lddst;
        which ^= 1;
    }
}

/* g_in (rows x in) = g (rows x out) W, W the torch weight (out x in) read row-major. */
static void back_lin(const struct subnet *s, int rows, int in, int out, const float *g, int ldg,
                     const float *w, float *dst, int ldd)
{
    struct kern_gemm gm = {.m = rows, .n = in, .k = out, .a = g, .lda = ldg, .b = w, .ldb = in,
                           .bmode = KERN_B_ROWMAJOR, .y = dst, .ldy = ldd};
    s->k->gemm(&gm);
}

void subnet_backward_input(const struct subnet *s, int rows, const float *tape, const float *gout,
                           int ldg, float *gx, int ldgx, float *scratch)
{
    const int mw = s->max_width;
    float *buf[2] = {scratch, scratch + (size_t)rows * mw};
    /* tape offsets run forward; walk them backward */
    size_t off = 0;
    for (int i = 0; i < s->n_layers; i++)
        if (!s->layers[i].is_linear)
            off += (size_t)rows * s->layers[i].out;
    const float *g = gout;
    int ldcur = ldg, which = 0;
    for (int i = s->n_layers - 1; i >= 1; i--) {
        const struct subnet_layer *l = &s->layers[i];
        float *dst = buf[which];
        if (!l->is_linear) {
            off -= (size_t)rows * l->out;
            const float *u = tape + off;
            for (int r = 0; r < rows; r++)
                for (int j = 0; j < l->out; j++)
                    dst[(size_t)r * l->out + j] =
                        g[(size_t)r * ldcur + j] *
                        (float)act_deriv(l->act, l->p1, l->p2, u[(size_t)r * l->out + j]);
        } else {
            back_lin(s, rows, l->in, l->out, g, ldcur, l->w, dst, l->in);
        }
        g = dst;
        ldcur = l->is_linear ? l->in : l->out;
        which ^= 1;
    }
    const struct subnet_layer *l0 = &s->layers[0];
    back_lin(s, rows, s->dx, l0->out, g, ldcur, s->w1x, gx, ldgx);
}

/* ---- Lipschitz bound (certificates) ---------------------------------------------------------- */

double subnet_lipschitz(const struct subnet *s)
{
    double L = 1.0;
    bool first = true;
    for (int i = 0; i < s->n_layers; i++) {
        const struct subnet_layer *l = &s->layers[i];
        if (l->kind == SUB_FLATTEN || l->kind == SUB_UNFLATTEN)
            continue;
        if (l->kind == SUB_ACT) {
            L *= act_lipschitz(l->act, l->p1, l->p2);
            continue;
        }
        if (l->kind == SUB_CONV) {
            double lo;
            const char *method;
            L *= conv_norm2_upper(&l->g, l->cw, first ? s->cx : l->g.cin, &lo, &method);
            first = false;
            continue;
        }
        /* Linear: in the MLP layout the first layer's x columns are w1x; in a general
         * subnet the first product reads [x | c] and its x columns are the first dx */
        int in = first ? s->dx : l->in;
        const float *w = first && !s->general ? s->w1x : l->w;
        int ldw = first && !s->general ? s->dx : l->in;
        first = false;
        if (in == 0) { /* the first layer reads only the condition: constant in x */
            L = 0.0;
            continue;
        }
        size_t n = (size_t)l->out * in;
        double *a = malloc(sizeof(double) * (n + la_norm2_upper_work(l->out, in)));
        if (!a)
            return INFINITY;
        for (int r = 0; r < l->out; r++)
            for (int k = 0; k < in; k++)
                a[(size_t)r * in + k] = w[(size_t)r * ldw + k];
        L *= la_norm2_upper(l->out, in, a, a + n);
        free(a);
    }
    return L;
}
