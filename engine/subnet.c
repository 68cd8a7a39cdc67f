/*
 * subnet.c — the small MLPs inside coupling blocks, conditioning networks and `mlp`
 * models: a chain of Linear layers and activations, run on a whole tile through the
 * engine's kernels (kern.h; weights packed at load).  The first Linear is split into an x
 * part and a condition part (subnet.h) so a broadcast condition costs one one-row product
 * per tile, not one per row.
 */
#include <math.h>
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

enum eng_status ldr_subnet(struct ldr *L, const cJSON *obj, const char *field, int dx, int dc,
                           int dout, const struct subnet **out)
{
    *out = NULL;
    const cJSON *sj;
    enum eng_status st = ldr_obj(L, obj, field, true, &sj);
    if (st != ENG_OK)
        return st;
    size_t mark = ldr_push(L, ".%s", field);
    const cJSON *layers = cJSON_GetObjectItemCaseSensitive(sj, "layers");
    int nl = cJSON_IsArray(layers) ? cJSON_GetArraySize(layers) : 0;
    if (nl <= 0 || nl > 256) {
        st = ldr_fail(L, ENG_ERR_MANIFEST, "field 'layers' must be a non-empty list (at most 256)");
        goto out;
    }
    struct subnet *s = ldr_alloc(L, sizeof(*s));
    struct subnet_layer *ls = ldr_alloc(L, sizeof(*ls) * (size_t)nl);
    if (!s || !ls) {
        st = ENG_ERR_NOMEM;
        goto out;
    }
    s->dx = dx, s->dc = dc, s->dout = dout, s->n_layers = nl, s->layers = ls;
    int width = dx + dc;
    const char *last_w = "?"; /* name of the last Linear weight, for messages */
    for (int i = 0; i < nl; i++) {
        const cJSON *lj = cJSON_GetArrayItem(layers, i);
        size_t m2 = ldr_push(L, ".layers[%d]", i);
        static const char *const types[] = {"linear", "relu", "leaky_relu", "elu", "tanh",
                                            "sigmoid", "softplus", "gelu", "silu", "lipswish"};
        int ty;
        st = ldr_enum(L, lj, "type", true, 0, types, (int)(sizeof(types) / sizeof(types[0])), &ty);
        if (st != ENG_OK)
            goto out;
        struct subnet_layer *l = &ls[i];
        if (ty == 0) {
            const struct st_tensor *wt;
            if ((st = ldr_raw(L, lj, "weight", &wt)) != ENG_OK)
                goto out;
            int outw = wt->ndim == 2 ? (int)wt->shape[0] : -1;
            if (outw <= 0 || outw > (1 << 20)) {
                st = ldr_fail(L, ENG_ERR_TENSOR, "tensor '%s' (field 'weight') must be a matrix "
                              "(out, in) with out > 0", wt->name);
                goto out;
            }
            int64_t shp[2] = {outw, width};
            if ((st = ldr_tensor(L, lj, "weight", true, 2, shp, &l->w)) != ENG_OK)
                goto out;
            int64_t bs[1] = {outw};
            if ((st = ldr_tensor(L, lj, "bias", false, 1, bs, &l->b)) != ENG_OK)
                goto out;
            l->is_linear = 1, l->in = width, l->out = outw;
            float *wp = ldr_alloc(L, sizeof(float) * (kern_packed_size(outw, width) + 1));
            if (!wp) {
                st = ENG_ERR_NOMEM;
                goto out;
            }
            kern_pack_weight(outw, width, l->w, width, wp);
            l->wp = wp;
            last_w = wt->name;
            s->n_params += (long long)outw * width + (l->b ? outw : 0);
            width = outw;
            if (width > s->max_width)
                s->max_width = width;
        } else {
            if (i == 0) {
                st = ldr_fail(L, ENG_ERR_MANIFEST, "the first layer must be 'linear'");
                goto out;
            }
            static const enum act_type map[] = {0, ACT_RELU, ACT_LEAKY_RELU, ACT_ELU, ACT_TANH,
                                                ACT_SIGMOID, ACT_SOFTPLUS, ACT_GELU, ACT_SILU,
                                                ACT_LIPSWISH};
            l->act = map[ty];
            l->in = l->out = width;
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
            if (st != ENG_OK)
                goto out;
            l->p1 = (float)p1, l->p2 = (float)p2;
        }
        ldr_pop(L, m2);
    }
    if (dout >= 0 && width != dout) {
        st = ldr_fail(L, ENG_ERR_TENSOR, "subnet output width is %d (tensor '%s'), the block "
                      "needs %d", width, last_w, dout);
        goto out;
    }
    s->dout = width;
    /* Split the first layer into the x part and the condition part. */
    const struct subnet_layer *l0 = &ls[0];
    float *wx = ldr_alloc(L, sizeof(float) * (size_t)(l0->out * (dx ? dx : 1)));
    float *wc = ldr_alloc(L, sizeof(float) * (size_t)(l0->out * (dc ? dc : 1)));
    if (!wx || !wc) {
        st = ENG_ERR_NOMEM;
        goto out;
    }
    for (int o = 0; o < l0->out; o++) {
        memcpy(wx + (size_t)o * dx, l0->w + (size_t)o * l0->in, sizeof(float) * (size_t)dx);
        memcpy(wc + (size_t)o * dc, l0->w + (size_t)o * l0->in + dx, sizeof(float) * (size_t)dc);
    }
    s->w1x = wx, s->w1c = wc;
    float *wxp = ldr_alloc(L, sizeof(float) * (kern_packed_size(l0->out, dx) + 1));
    float *wcp = ldr_alloc(L, sizeof(float) * (kern_packed_size(l0->out, dc) + 1));
    if (!wxp || !wcp) {
        st = ENG_ERR_NOMEM;
        goto out;
    }
    kern_pack_weight(l0->out, dx, wx, dx, wxp);
    kern_pack_weight(l0->out, dc, wc, dc, wcp);
    s->w1xp = wxp, s->w1cp = wcp;
    s->k = ldr_kern(L);
    *out = s;
out:
    ldr_pop(L, mark);
    return st;
}

/* ---- evaluation ------------------------------------------------------------------------- */

size_t subnet_scratch(const struct subnet *s, int rows)
{
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

/* Every output element is bias, then the condition columns, then the x columns, each
 * accumulated in order (kern.h): a broadcast condition row gives the same bits as the
 * same row repeated. */
void subnet_forward(const struct subnet *s, int rows, const float *x, int ldx, const float *c,
                    int ldc, float *out, int ldo, float *scratch)
{
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
    for (int i = 0; i < s->n_layers; i++) {
        const struct subnet_layer *l = &s->layers[i];
        if (!l->is_linear) {
            L *= act_lipschitz(l->act, l->p1, l->p2);
            continue;
        }
        int in = i == 0 ? s->dx : l->in;
        const float *w = i == 0 ? s->w1x : l->w;
        if (in == 0) { /* the first layer reads only the condition: constant in x */
            L = 0.0;
            continue;
        }
        size_t n = (size_t)l->out * in;
        double *a = malloc(sizeof(double) * (n + la_norm2_upper_work(l->out, in)));
        if (!a)
            return INFINITY;
        for (size_t k = 0; k < n; k++)
            a[k] = w[k];
        L *= la_norm2_upper(l->out, in, a, a + n);
        free(a);
    }
    return L;
}
