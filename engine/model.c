/*
 * model.c — the batched operations of engine.h (forward, inverse, log_prob, sample) on a
 * loaded model, run tile by tile through a per-thread workspace.  Loading is manifest.c,
 * the load-time self test selftest.c; the model's layout is model_impl.h.
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block.h"
#include "emath.h"
#include "model_impl.h"
#include "subnet.h"

#define LOG_2PI 1.8378770664093453

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
    [ENG_ERR_CANCELLED] = "cancelled",
};

const char *eng_status_str(enum eng_status st)
{
    return (unsigned)st < ENG_STATUS_COUNT ? status_str[st] : "unknown status";
}

const char *eng_kind_str(enum eng_kind k)
{
    static const char *const n[] = {"flow", "cinn", "inn", "mlp", "mdn"};
    return (unsigned)k < 5 ? n[k] : "?";
}

enum eng_status eng_errf(char *err, enum eng_status st, const char *fmt, ...)
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

void eng_ws_set_cancel(struct eng_ws *ws, const atomic_bool *flag)
{
    ws->cancel = flag;
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
    float *cond;     /* T x cond_total, conditions then combinations side by side */
    float *area;     /* the graph's buffer slots other than the state */
    float *scratch;  /* block / subnet scratch */
    double *ld;      /* T log-dets */
    double *aux;     /* T doubles */
    double *xd;      /* T x D doubles: the state between numeric blocks (NULL without them) */
    double *mpar;    /* mdn: one observation's mixture (mdn_par_doubles), then one row of
                        dims.x doubles and its draw's uniforms (dims.x at most; NULL for
                        the other kinds) */
};

static struct tile carve(const struct eng_model *m, struct eng_ws *ws)
{
    const size_t T = ENG_TILE_ROWS;
    struct tile t;
    t.state = ws->f;
    t.ys = t.state + T * (size_t)m->D;
    t.cond = t.ys + T * (size_t)(m->info.dims.y ? m->info.dims.y : 1);
    t.area = t.cond + T * (size_t)(m->cond_total ? m->cond_total : 1);
    t.scratch = t.area + m->g.area;
    t.ld = ws->d;
    t.aux = ws->d + T;
    t.xd = m->n_numeric ? ws->d + 2 * T : NULL;
    t.mpar = m->mdn ? ws->d + 2 * T : NULL;
    return t;
}

/* ==== tile kernels ========================================================================= */

static enum eng_status check_finite(const float *v, int rows, int cols, const char *what,
                                    char *err)
{
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++)
            if (!isfinite(v[(size_t)i * cols + j]))
                return eng_errf(err, ENG_ERR_NONFINITE, "%s[%d][%d] is not finite", what, i, j);
    return ENG_OK;
}

static enum eng_status check_args(const struct eng_model *m, int n, const float *in,
                                  int in_cols, const char *in_name, const float *y, int y_rows,
                                  bool need_y, char *err)
{
    if (n < 0)
        return eng_errf(err, ENG_ERR_ARG, "row count %d is negative", n);
    if (n > 0 && !in)
        return eng_errf(err, ENG_ERR_ARG, "%s is missing", in_name);
    int dy = m->info.dims.y;
    if (need_y) {
        if (!y || (y_rows != 1 && y_rows != n))
            return eng_errf(err, ENG_ERR_SHAPE, "y must have 1 or %d rows of %d values (got %d "
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

/* Spread rows [0, r) of v (r x vec, row stride vec) over pos positions, in place: row i
 * becomes (vec, pos) with element (ch, p) = v[i, ch], at stride vec * pos.  v must be the
 * start of a buffer of r * vec * pos floats; rows and channels are walked from the last,
 * so no value is overwritten before it is read. */
static void spread_rows(float *v, int r, int vec, int pos)
{
    for (int i = r - 1; i >= 0; i--)
        for (int ch = vec - 1; ch >= 0; ch--) {
            float a = v[(size_t)i * vec + ch];
            float *o = v + ((size_t)i * vec + ch) * pos;
            for (int p = 0; p < pos; p++)
                o[p] = a;
        }
}

/* The condition inputs a block may read: the conditions, then their combinations. */
#define MODEL_MAX_CIN (ENG_MAX_CONDITIONS + MODEL_MAX_COMBOS)

/* Conditions for rows [0, rows) of a tile from y (already offset to the tile; y_rows 1 =
 * broadcast), then the combinations (lists of conditions one block reads) concatenated
 * per row.  Returns per-input pointers and leading dims. */
static void make_conds(const struct eng_model *m, struct tile *t, const float *y, int rows,
                       bool bcast, const float **cp, int *cld)
{
    int dy = m->info.dims.y;
    int r = bcast ? 1 : rows;
    std_rows(&m->sy, y, r, dy, t->ys, dy);
    float *dst = t->cond;
    for (int k = 0; k < m->n_conds; k++) {
        const struct cond_def *cd = &m->conds[k];
        int w = cd->width, pos = cd->width / cd->vec;
        if (!cd->net && pos == 1) {
            cp[k] = t->ys;
            cld[k] = bcast ? 0 : dy;
        } else {
            if (cd->net)
                subnet_forward(cd->net, r, NULL, 0, t->ys, dy, dst, cd->vec, t->scratch);
            else
                memcpy(dst, t->ys, sizeof(float) * (size_t)r * dy);
            if (pos > 1)
                spread_rows(dst, r, cd->vec, pos);
            cp[k] = dst;
            cld[k] = bcast ? 0 : w;
        }
        dst += (size_t)ENG_TILE_ROWS * w;
    }
    for (int j = 0; j < m->n_combos; j++) {
        const struct cond_combo *c = &m->combos[j];
        for (int i = 0; i < r; i++) {
            float *o = dst + (size_t)i * c->width;
            for (int q = 0; q < c->n; q++) {
                int k = c->idx[q], w = m->conds[k].width;
                memcpy(o, cp[k] + (size_t)i * cld[k], sizeof(float) * (size_t)w);
                o += w;
            }
        }
        cp[m->n_conds + j] = dst;
        cld[m->n_conds + j] = bcast ? 0 : c->width;
        dst += (size_t)ENG_TILE_ROWS * c->width;
    }
}

static void run_blocks(const struct eng_model *m, struct tile *t, int rows, const float **cp,
                       const int *cld, bool inverse, struct blk_io *proto)
{
    const struct graph_bufs gb = {t->state, t->area, t->scratch, t->ld, t->xd};
    graph_run(m, &gb, rows, cp, cld, inverse, proto);
}

/* Forward of rows [0, rows) of x (already offset) through the blocks into t->state,
 * log-dets (incl. standardization) into t->ld. */
static void fwd_tile(const struct eng_model *m, struct tile *t, int rows, const float *x,
                     const float *y, bool ybcast)
{
    const int D = m->D, dx = m->info.dims.x;
    const float *cp[MODEL_MAX_CIN]; /* n_conds <= ENG_MAX_CONDITIONS (manifest.c) */
    int cld[MODEL_MAX_CIN];
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
             0.5 * d->pad_y * (LOG_2PI + em_log(sp2));
        const float *yo = y + (ybcast ? 0 : (size_t)i * d->y);
        double e = 0.0;
        for (int j = 0; j < d->y; j++) {
            double ys = m->sy.mean ? ((double)yo[j] - m->sy.mean[j]) / m->sy.std[j] : yo[j];
            double diff = (double)r[m->out_y + j] - ys;
            e += diff * diff;
        }
        l += -0.5 * e / sy2 - 0.5 * d->y * (LOG_2PI + em_log(sy2));
        lp[i] = l + t->ld[i];
    }
}

/* Inverse of rows whose block-space input is already in t->state; conditions from y. */
static void inv_tile(const struct eng_model *m, struct tile *t, int rows, const float *y,
                     bool ybcast, const struct eng_solver_opts *opts,
                     struct eng_solver_stats *stats, int row0)
{
    const float *cp[MODEL_MAX_CIN];
    int cld[MODEL_MAX_CIN];
    if (m->info.kind == ENG_KIND_CINN)
        make_conds(m, t, y, rows, ybcast, cp, cld);
    for (int i = 0; i < rows; i++)
        t->ld[i] = 0.0;
    struct blk_io proto = {0};
    static const struct eng_solver_opts defaults = {ENG_SOLVER_DEFAULT_TOL,
                                                    ENG_SOLVER_DEFAULT_MAX_ITER, ENG_SOLVE_AUTO};
    proto.opts = opts ? opts : &defaults;
    /* split in run_blocks */
    proto.tol = proto.opts->tol > 0 ? proto.opts->tol : ENG_SOLVER_DEFAULT_TOL;
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

/* ---- mdn: a mixture per observation (mixture.c) ------------------------------------- */

/* Hidden features of rows [0, rows) of y (offset to the tile; its one row when ybcast)
 * into t->cond (stride cond_total = the hidden width). */
static void mdn_hidden_tile(const struct eng_model *m, struct tile *t, int rows,
                            const float *y, bool ybcast)
{
    const int dy = m->info.dims.y, r = ybcast ? 1 : rows;
    std_rows(&m->sy, y, r, dy, t->ys, dy);
    mdn_hidden(m->mdn, r, t->ys, dy, t->cond, m->cond_total, t->scratch);
}

/* The mixture of row i into t->mpar (computed for row 0 only when ybcast). */
static enum eng_status mdn_row_mixture(const struct eng_model *m, struct tile *t, int i,
                                       bool ybcast, const char *unit, uint64_t index,
                                       char *err)
{
    if (i > 0 && ybcast)
        return ENG_OK;
    const float *h = t->cond + (size_t)(ybcast ? 0 : i) * m->cond_total;
    if (!mdn_mixture(m->mdn, h, t->mpar))
        return eng_errf(err, ENG_ERR_NUMERIC, "%s %llu: the mixture's parameters are not "
                        "finite (the observation is outside the range the network can map)",
                        unit, (unsigned long long)index);
    return ENG_OK;
}

/* log q(x | y) of one row of x (physical units) under the mixture in t->mpar. */
static double mdn_row_density(const struct eng_model *m, struct tile *t, const float *x)
{
    const int dx = m->info.dims.x;
    double *xs = t->mpar + mdn_par_doubles(m->mdn);
    for (int j = 0; j < dx; j++)
        xs[j] = m->sx.mean ? ((double)x[j] - m->sx.mean[j]) / m->sx.std[j] : x[j];
    return mdn_log_density(m->mdn, t->mpar, xs) - m->sx.log_std_sum;
}

static enum eng_status mdn_log_prob_tile(const struct eng_model *m, struct tile *t, int rows,
                                         const float *x, const float *y, bool ybcast,
                                         double *lp, int row0, char *err)
{
    mdn_hidden_tile(m, t, rows, y, ybcast);
    for (int i = 0; i < rows; i++) {
        enum eng_status st = mdn_row_mixture(m, t, i, ybcast, "row", (uint64_t)(row0 + i), err);
        if (st != ENG_OK)
            return st;
        lp[i] = mdn_row_density(m, t, x + (size_t)i * m->info.dims.x);
    }
    return ENG_OK;
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

/* Messages name the row ("row 3") or, when sampling, the absolute sample index
 * ("sample 515"), so they do not depend on how a request was split. */
static enum eng_status check_out(const float *v, int rows, int cols, int ld, const char *unit,
                                 uint64_t index0, const char *what, char *err)
{
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++)
            if (!isfinite(v[(size_t)i * ld + j]))
                return eng_errf(err, ENG_ERR_NUMERIC, "%s %llu: %s[%d] is not finite (the input "
                                "is outside the range the model can map)", unit,
                                (unsigned long long)(index0 + (uint64_t)i), what, j);
    return ENG_OK;
}

/* ==== operations =========================================================================== */

static enum eng_status cancelled(char *err, int done, int total, const char *what)
{
    return eng_errf(err, ENG_ERR_CANCELLED, "cancelled after %d of %d %s", done, total, what);
}

enum eng_status eng_forward(const struct eng_model *m, struct eng_ws *ws, int n, const float *x,
                            const float *y, int y_rows, float *z, float *y_out, double *log_det,
                            char err[ENG_ERR_LEN])
{
    const struct eng_dims *d = &m->info.dims;
    enum eng_kind k = m->info.kind;
    if (k == ENG_KIND_MDN)
        return eng_errf(err, ENG_ERR_UNSUPPORTED, "forward is not defined for an mdn model (a "
                        "mixture density network is not a bijection: use sample or log_prob)");
    enum eng_status st = check_args(m, n, x, d->x, "x", y, y_rows, k == ENG_KIND_CINN, err);
    if (st != ENG_OK)
        return st;
    if ((k == ENG_KIND_FLOW || k == ENG_KIND_CINN) && !z)
        return eng_errf(err, ENG_ERR_ARG, "z output is missing");
    if ((k == ENG_KIND_INN || k == ENG_KIND_MLP) && !y_out)
        return eng_errf(err, ENG_ERR_ARG, "y output is missing");
    if ((st = eng_ws_reserve(ws, m)) != ENG_OK)
        return eng_errf(err, st, "out of memory for the workspace");
    struct tile t = carve(m, ws);
    bool bc = y_rows == 1;
    for (int r0 = 0; r0 < n; r0 += ENG_TILE_ROWS) {
        if (ws_cancelled(ws))
            return cancelled(err, r0, n, "rows");
        int rows = n - r0 < ENG_TILE_ROWS ? n - r0 : ENG_TILE_ROWS;
        const float *xt = x + (size_t)r0 * d->x;
        const float *yt = y ? y + (bc ? 0 : (size_t)r0 * d->y) : NULL;
        if (k == ENG_KIND_MLP) {
            std_rows(&m->sx, xt, rows, d->x, t.state, d->x);
            subnet_forward(m->mlp, rows, t.state, d->x, NULL, 0, t.ys, d->y, t.scratch);
            const float *res = t.ys;
            if ((st = check_out(res, rows, d->y, d->y, "row", (uint64_t)r0, "y", err)) != ENG_OK)
                return st;
            unstd_rows(&m->sy, res, d->y, rows, d->y, y_out + (size_t)r0 * d->y);
            continue;
        }
        fwd_tile(m, &t, rows, xt, yt, bc);
        const int D = m->D;
        if (k == ENG_KIND_INN) {
            if ((st = check_out(t.state, rows, D, D, "row", (uint64_t)r0, "output", err)) != ENG_OK)
                return st;
            for (int i = 0; i < rows; i++) {
                const float *r = t.state + (size_t)i * D;
                if (z)
                    memcpy(z + (size_t)(r0 + i) * d->z, r + m->out_z, sizeof(float) * (size_t)d->z);
                unstd_rows(&m->sy, r + m->out_y, d->y, 1, d->y, y_out + (size_t)(r0 + i) * d->y);
            }
        } else {
            if ((st = check_out(t.state, rows, D, D, "row", (uint64_t)r0, "z", err)) != ENG_OK)
                return st;
            memcpy(z + (size_t)r0 * D, t.state, sizeof(float) * (size_t)rows * D);
        }
        if (log_det)
            memcpy(log_det + r0, t.ld, sizeof(double) * (size_t)rows);
    }
    return ENG_OK;
}

/* sum_k (unstandardized y_k - y_obs_k)^2 of one row a of standardized y: the value
 * eng_forward's unstd_rows would return, minus the observation, in double. */
static double resim_row(const struct stdz *s, const float *a, const float *yobs, int cols)
{
    double e2 = 0.0;
    for (int k = 0; k < cols; k++) {
        float v = s->mean ? a[k] * s->std[k] + s->mean[k] : a[k];
        double dv = (double)v - yobs[k];
        e2 += dv * dv;
    }
    return e2;
}

enum eng_status eng_resimulate(const struct eng_model *m, struct eng_ws *ws, int n,
                               const float *x, const float *y, double *sq_err,
                               char err[ENG_ERR_LEN])
{
    const struct eng_dims *d = &m->info.dims;
    enum eng_kind k = m->info.kind;
    if (k != ENG_KIND_INN && k != ENG_KIND_MLP)
        return eng_errf(err, ENG_ERR_UNSUPPORTED, "resimulation needs a model that predicts y "
                        "(inn or mlp)");
    enum eng_status st = check_args(m, n, x, d->x, "x", NULL, 0, false, err);
    if (st != ENG_OK)
        return st;
    if (n > 0 && (!y || !sq_err))
        return eng_errf(err, ENG_ERR_ARG, "y or the sq_err output is missing");
    if ((st = check_finite(y, 1, d->y, "y", err)) != ENG_OK)
        return st;
    if ((st = eng_ws_reserve(ws, m)) != ENG_OK)
        return eng_errf(err, st, "out of memory for the workspace");
    struct tile t = carve(m, ws);
    const int D = m->D;
    for (int r0 = 0; r0 < n; r0 += ENG_TILE_ROWS) {
        if (ws_cancelled(ws))
            return cancelled(err, r0, n, "rows");
        int rows = n - r0 < ENG_TILE_ROWS ? n - r0 : ENG_TILE_ROWS;
        const float *xt = x + (size_t)r0 * d->x;
        if (k == ENG_KIND_MLP) {
            std_rows(&m->sx, xt, rows, d->x, t.state, d->x);
            subnet_forward(m->mlp, rows, t.state, d->x, NULL, 0, t.ys, d->y, t.scratch);
            if ((st = check_out(t.ys, rows, d->y, d->y, "row", (uint64_t)r0, "y", err)) != ENG_OK)
                return st;
            for (int i = 0; i < rows; i++)
                sq_err[r0 + i] = resim_row(&m->sy, t.ys + (size_t)i * d->y, y, d->y);
            continue;
        }
        fwd_tile(m, &t, rows, xt, NULL, false);
        if ((st = check_out(t.state, rows, D, D, "row", (uint64_t)r0, "output", err)) != ENG_OK)
            return st;
        for (int i = 0; i < rows; i++)
            sq_err[r0 + i] = resim_row(&m->sy, t.state + (size_t)i * D + m->out_y, y, d->y);
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
        return eng_errf(err, ENG_ERR_UNSUPPORTED, "inverse is not defined for an mlp model (use "
                    "preimage search)");
    if (k == ENG_KIND_MDN)
        return eng_errf(err, ENG_ERR_UNSUPPORTED, "inverse is not defined for an mdn model (a "
                        "mixture density network is not a bijection: use sample or log_prob)");
    enum eng_status st = check_args(m, n, z, d->z, "z", y, y_rows, k != ENG_KIND_FLOW, err);
    if (st != ENG_OK)
        return st;
    if (!x)
        return eng_errf(err, ENG_ERR_ARG, "x output is missing");
    if ((st = eng_ws_reserve(ws, m)) != ENG_OK)
        return eng_errf(err, st, "out of memory for the workspace");
    if (stats)
        stats->certified = m->cert.certified; /* every numeric block has L < 1 */
    struct tile t = carve(m, ws);
    bool bc = y_rows == 1;
    const int D = m->D;
    for (int r0 = 0; r0 < n; r0 += ENG_TILE_ROWS) {
        if (ws_cancelled(ws))
            return cancelled(err, r0, n, "rows");
        int rows = n - r0 < ENG_TILE_ROWS ? n - r0 : ENG_TILE_ROWS;
        const float *yt = y ? y + (bc ? 0 : (size_t)r0 * d->y) : NULL;
        load_latent(m, &t, rows, z + (size_t)r0 * d->z, yt, bc);
        inv_tile(m, &t, rows, yt, bc, opts, stats, r0);
        int off = k == ENG_KIND_INN ? m->in_x : 0;
        if ((st = check_out(t.state + off, rows, d->x, D, "row", (uint64_t)r0, "x", err)) != ENG_OK)
            return st;
        unstd_rows(&m->sx, t.state + off, D, rows, d->x, x + (size_t)r0 * d->x);
        if (log_det)
            memcpy(log_det + r0, t.ld, sizeof(double) * (size_t)rows);
    }
    return ENG_OK;
}

/* Row i of x (rows x dims.x) lies in the model's prior box (closed; true without one). */
static bool in_box(const struct eng_model *m, const float *xi)
{
    const float *lo = m->info.prior_low, *hi = m->info.prior_high;
    if (!lo)
        return true;
    for (int j = 0; j < m->info.dims.x; j++)
        if (!(xi[j] >= lo[j] && xi[j] <= hi[j]))
            return false;
    return true;
}

/* -INFINITY for the rows of x outside the prior box (sbi's within_support mask). */
static void mask_support(const struct eng_model *m, int rows, const float *x, double *lp)
{
    if (!m->info.prior_low || !lp)
        return;
    for (int i = 0; i < rows; i++)
        if (!in_box(m, x + (size_t)i * m->info.dims.x))
            lp[i] = -INFINITY;
}

enum eng_status eng_log_prob(const struct eng_model *m, struct eng_ws *ws, int n, const float *x,
                             const float *y, int y_rows, double *log_prob, char err[ENG_ERR_LEN])
{
    const struct eng_dims *d = &m->info.dims;
    enum eng_kind k = m->info.kind;
    if (k == ENG_KIND_MLP)
        return eng_errf(err, ENG_ERR_UNSUPPORTED, "log_prob is not defined for an mlp model");
    enum eng_status st = check_args(m, n, x, d->x, "x", y, y_rows, k != ENG_KIND_FLOW, err);
    if (st != ENG_OK)
        return st;
    if ((st = eng_ws_reserve(ws, m)) != ENG_OK)
        return eng_errf(err, st, "out of memory for the workspace");
    struct tile t = carve(m, ws);
    bool bc = y_rows == 1;
    for (int r0 = 0; r0 < n; r0 += ENG_TILE_ROWS) {
        if (ws_cancelled(ws))
            return cancelled(err, r0, n, "rows");
        int rows = n - r0 < ENG_TILE_ROWS ? n - r0 : ENG_TILE_ROWS;
        const float *yt = y ? y + (bc ? 0 : (size_t)r0 * d->y) : NULL;
        if (m->mdn) {
            st = mdn_log_prob_tile(m, &t, rows, x + (size_t)r0 * d->x, yt, bc, log_prob + r0,
                                   r0, err);
            if (st != ENG_OK)
                return st;
        } else {
            fwd_tile(m, &t, rows, x + (size_t)r0 * d->x, yt, bc);
            density_tile(m, &t, rows, yt, bc, log_prob + r0);
        }
        for (int i = 0; i < rows; i++)
            if (isnan(log_prob[r0 + i]))
                return eng_errf(err, ENG_ERR_NUMERIC, "row %d: log_prob is not a number", r0 + i);
        mask_support(m, rows, x + (size_t)r0 * d->x, log_prob + r0);
    }
    return ENG_OK;
}

/* Checks shared by eng_sample and eng_sample_rows (y: y_rows rows; y_rows 0 for flow). */
static enum eng_status sample_args(const struct eng_model *m, int count, const float *x_out,
                                   const float *y, int y_rows, char *err)
{
    const struct eng_dims *d = &m->info.dims;
    if (m->info.kind == ENG_KIND_MLP)
        return eng_errf(err, ENG_ERR_UNSUPPORTED, "sampling is not defined for an mlp model");
    if (count < 0 || !x_out)
        return eng_errf(err, ENG_ERR_ARG, "count must be >= 0 and x output given");
    if (m->info.kind != ENG_KIND_FLOW) {
        if (!y)
            return eng_errf(err, ENG_ERR_SHAPE, "y (one observation of %d values) is missing", d->y);
        return check_finite(y, y_rows, d->y, "y", err);
    }
    return ENG_OK;
}

static bool temperature_ok(float temperature)
{
    return temperature >= 0.0f && isfinite(temperature);
}

/* One tile of mdn samples (sample_tile's contract): row i draws its component and its
 * normals from dr[i]'s stream (engine.h, eng_sample) under the mixture of y row i. */
static enum eng_status mdn_sample_tile(const struct eng_model *m, struct tile *t, int rows,
                                       const struct eng_sample_draw *dr, const float *y,
                                       bool ybcast, float *xo, double *lp, const char *unit,
                                       uint64_t index0, char *err)
{
    const int dx = m->info.dims.x;
    const uint32_t wu = 4u * (uint32_t)((dx + 3) / 4); /* the first word no normal uses */
    const int nu = mdn_uniforms(m->mdn);
    double *xs = t->mpar + mdn_par_doubles(m->mdn), *u = xs + dx;
    mdn_hidden_tile(m, t, rows, y, ybcast);
    for (int i = 0; i < rows; i++) {
        uint64_t idx = index0 + (uint64_t)i;
        enum eng_status st = mdn_row_mixture(m, t, i, ybcast, unit, idx, err);
        if (st != ENG_OK)
            return st;
        float *e = t->state + (size_t)i * m->D;
        eng_rng_normal_row(dr[i].seed, dr[i].obs, dr[i].sample, dx, e);
        for (int j = 0; j < dx; j++)
            e[j] *= dr[i].temperature;
        for (int j = 0; j < nu; j++) { /* uniform j: words wu + 2j, wu + 2j + 1 */
            uint32_t w0 = eng_rng_u32(dr[i].seed, dr[i].obs, dr[i].sample, wu + 2u * j);
            uint32_t w1 = eng_rng_u32(dr[i].seed, dr[i].obs, dr[i].sample, wu + 2u * j + 1);
            u[j] = ((double)(w0 >> 5) * 67108864.0 + (double)(w1 >> 6)) *
                   (1.0 / 9007199254740992.0); /* 53 bits, [0, 1) */
        }
        mdn_draw(m->mdn, t->mpar, u, e, xs);
        float *xr = xo + (size_t)i * dx;
        for (int j = 0; j < dx; j++)
            xr[j] = (float)(m->sx.mean ? xs[j] * m->sx.std[j] + m->sx.mean[j] : xs[j]);
        if ((st = check_out(xr, 1, dx, dx, unit, idx, "x", err)) != ENG_OK)
            return st;
        if (lp)
            lp[i] = mdn_row_density(m, t, xr);
    }
    mask_support(m, rows, xo, lp);
    return ENG_OK;
}

/* One tile of samples: row i is z = temperature_i * eng_rng_normal_row(seed_i, obs_i,
 * sample_i) taken back through the model under the condition y (row i of y, or its one
 * row when ybcast); x into xo (rows x dims.x), the density into lp (may be NULL), solver
 * statistics at row0 of stats.  Failures name rows as `unit` index0 + i.  Every row is
 * computed as it would be alone (engine invariant: no result depends on the rows beside
 * it nor on y broadcast). */
static enum eng_status sample_tile(const struct eng_model *m, struct tile *t, int rows,
                                   const struct eng_sample_draw *dr, const float *y,
                                   bool ybcast, float *xo, double *lp,
                                   const struct eng_solver_opts *opts,
                                   struct eng_solver_stats *stats, int row0, const char *unit,
                                   uint64_t index0, char *err)
{
    const struct eng_dims *d = &m->info.dims;
    enum eng_kind k = m->info.kind;
    if (k == ENG_KIND_MDN)
        return mdn_sample_tile(m, t, rows, dr, y, ybcast, xo, lp, unit, index0, err);
    const int D = m->D, dz = d->z;
    /* Draw z into the state rows (z segment for inn), keep ||z||^2 for the density. */
    if (k == ENG_KIND_INN)
        memset(t->state, 0, sizeof(float) * (size_t)rows * D);
    int zoff = k == ENG_KIND_INN ? m->out_z : 0;
    for (int i = 0; i < rows; i++) {
        float *r = t->state + (size_t)i * D + zoff;
        eng_rng_normal_row(dr[i].seed, dr[i].obs, dr[i].sample, dz, r);
        for (int j = 0; j < dz; j++)
            r[j] *= dr[i].temperature;
        t->aux[i] = log_normal_sq(r, dz);
        if (k == ENG_KIND_INN)
            std_rows(&m->sy, y + (ybcast ? 0 : (size_t)i * d->y), 1, d->y,
                     t->state + (size_t)i * D + m->out_y, d->y);
    }
    inv_tile(m, t, rows, y, ybcast, opts, stats, row0);
    int off = k == ENG_KIND_INN ? m->in_x : 0;
    enum eng_status st = check_out(t->state + off, rows, d->x, D, unit, index0, "x", err);
    if (st != ENG_OK)
        return st;
    unstd_rows(&m->sx, t->state + off, D, rows, d->x, xo);
    if (!lp)
        return ENG_OK;
    if (k != ENG_KIND_INN) {
        for (int i = 0; i < rows; i++)
            lp[i] = -0.5 * t->aux[i] - 0.5 * dz * LOG_2PI - t->ld[i];
    } else {
        /* inn: the density needs the forward pass of the produced x. */
        fwd_tile(m, t, rows, xo, y, ybcast);
        density_tile(m, t, rows, y, ybcast, lp);
    }
    mask_support(m, rows, xo, lp);
    return ENG_OK;
}

enum eng_status eng_sample(const struct eng_model *m, struct eng_ws *ws, const float *y,
                           uint64_t seed, uint32_t obs, uint64_t first, int count,
                           float temperature, float *x_out, double *log_prob,
                           const struct eng_solver_opts *opts, struct eng_solver_stats *stats,
                           char err[ENG_ERR_LEN])
{
    const struct eng_dims *d = &m->info.dims;
    enum eng_status st = sample_args(m, count, x_out, y, 1, err);
    if (st != ENG_OK)
        return st;
    if (!temperature_ok(temperature))
        return eng_errf(err, ENG_ERR_ARG, "temperature must be a finite number >= 0");
    if ((st = eng_ws_reserve(ws, m)) != ENG_OK)
        return eng_errf(err, st, "out of memory for the workspace");
    if (stats)
        stats->certified = m->cert.certified;
    struct tile t = carve(m, ws);
    struct eng_sample_draw dr[ENG_TILE_ROWS];
    /* Tiles are aligned to multiples of ENG_TILE_ROWS in the absolute sample index, so
     * they stay full whichever calls the range is split into.  (Results do not depend on
     * the tile shape: every element is computed in a fixed order, engine/kern.h.) */
    for (int r0 = 0, rows; r0 < count; r0 += rows) {
        if (ws_cancelled(ws))
            return cancelled(err, r0, count, "samples");
        uint64_t abs0 = first + (uint64_t)r0;
        uint64_t room = ENG_TILE_ROWS - abs0 % ENG_TILE_ROWS;
        rows = (uint64_t)(count - r0) < room ? count - r0 : (int)room;
        for (int i = 0; i < rows; i++)
            dr[i] = (struct eng_sample_draw){seed, abs0 + (uint64_t)i, obs, temperature};
        st = sample_tile(m, &t, rows, dr, y, true, x_out + (size_t)r0 * d->x,
                         log_prob ? log_prob + r0 : NULL, opts, stats, r0, "sample", abs0, err);
        if (st != ENG_OK)
            return st;
    }
    return ENG_OK;
}

enum eng_status eng_sample_rows(const struct eng_model *m, struct eng_ws *ws, int n,
                                const float *y, int y_rows, const struct eng_sample_draw *draws,
                                float *x_out, double *log_prob,
                                const struct eng_solver_opts *opts,
                                struct eng_solver_stats *stats, char err[ENG_ERR_LEN])
{
    const struct eng_dims *d = &m->info.dims;
    bool need_y = m->info.kind != ENG_KIND_FLOW;
    if (need_y && y && y_rows != 1 && y_rows != n)
        return eng_errf(err, ENG_ERR_SHAPE, "y must have 1 or %d rows of %d values (got %d "
                        "rows)", n, d->y, y_rows);
    enum eng_status st = sample_args(m, n, x_out, y, need_y ? y_rows : 0, err);
    if (st != ENG_OK)
        return st;
    if (n > 0 && !draws)
        return eng_errf(err, ENG_ERR_ARG, "draws are missing");
    for (int i = 0; i < n; i++)
        if (!temperature_ok(draws[i].temperature))
            return eng_errf(err, ENG_ERR_ARG, "row %d: temperature must be a finite number "
                            ">= 0", i);
    if ((st = eng_ws_reserve(ws, m)) != ENG_OK)
        return eng_errf(err, st, "out of memory for the workspace");
    if (stats)
        stats->certified = m->cert.certified;
    struct tile t = carve(m, ws);
    bool bc = y_rows == 1;
    for (int r0 = 0; r0 < n; r0 += ENG_TILE_ROWS) {
        if (ws_cancelled(ws))
            return cancelled(err, r0, n, "rows");
        int rows = n - r0 < ENG_TILE_ROWS ? n - r0 : ENG_TILE_ROWS;
        const float *yt = need_y ? y + (bc ? 0 : (size_t)r0 * d->y) : NULL;
        st = sample_tile(m, &t, rows, draws + r0, yt, bc, x_out + (size_t)r0 * d->x,
                         log_prob ? log_prob + r0 : NULL, opts, stats, r0, "row",
                         (uint64_t)r0, err);
        if (st != ENG_OK)
            return st;
    }
    return ENG_OK;
}

/* ---- rejection against the prior box ------------------------------------------------- */

/* Candidates per batch: enough to finish at the acceptance seen so far (with a margin),
 * at least 32, at most one tile and at most what max_draws leaves.  Only the amount of
 * work depends on it: every candidate is computed as it would be alone. */
static int batch_rows(uint64_t need, const struct eng_accept *a, uint64_t max_draws)
{
    uint64_t want;
    if (a->accepted == 0)
        want = a->drawn ? ENG_TILE_ROWS : need;
    else
        want = need * a->drawn / a->accepted + need / 4 + 1;
    if (want < 32)
        want = 32;
    if (want > ENG_TILE_ROWS)
        want = ENG_TILE_ROWS;
    if (want > max_draws - a->drawn)
        want = max_draws - a->drawn;
    return (int)want;
}

/* The loop shared by eng_sample_prior (x_out given: accepted rows kept) and
 * eng_prior_acceptance (x_out NULL: counted only).  Candidates go through the
 * workspace's prior scratch (one tile of x and of densities, sized at load when the model
 * has a prior). */
static enum eng_status reject_loop(const struct eng_model *m, struct eng_ws *ws,
                                   const float *y, uint64_t seed, uint32_t obs, int count,
                                   float temperature, uint64_t max_draws, float *x_out,
                                   double *log_prob, const struct eng_solver_opts *opts,
                                   struct eng_solver_stats *stats, struct eng_accept *acc,
                                   char *err)
{
    const int dx = m->info.dims.x;
    struct tile t = carve(m, ws);
    float *cx = ws->f + (m->ws_floats - (size_t)ENG_TILE_ROWS * (size_t)dx);
    double *clp = ws->d + (m->ws_doubles - ENG_TILE_ROWS);
    struct eng_sample_draw dr[ENG_TILE_ROWS];
    int it[ENG_TILE_ROWS];
    double res[ENG_TILE_ROWS], bound[ENG_TILE_ROWS];
    bool conv[ENG_TILE_ROWS];
    struct eng_solver_stats cs = {it, res, bound, conv, true};
    bool want_stats = stats && x_out && m->n_numeric > 0;
    while (acc->accepted < (uint64_t)count && acc->drawn < max_draws) {
        if (ws_cancelled(ws))
            return eng_errf(err, ENG_ERR_CANCELLED, "cancelled after %llu of %d samples "
                            "(%llu candidates drawn)", (unsigned long long)acc->accepted,
                            count, (unsigned long long)acc->drawn);
        int rows = batch_rows((uint64_t)count - acc->accepted, acc, max_draws);
        for (int i = 0; i < rows; i++)
            dr[i] = (struct eng_sample_draw){seed, acc->drawn + (uint64_t)i, obs, temperature};
        enum eng_status st = sample_tile(m, &t, rows, dr, y, true, cx,
                                         x_out && log_prob ? clp : NULL, opts,
                                         want_stats ? &cs : NULL, 0, "sample", acc->drawn, err);
        if (st != ENG_OK)
            return st;
        int i = 0;
        for (; i < rows && acc->accepted < (uint64_t)count; i++) {
            const float *xi = cx + (size_t)i * dx;
            if (!in_box(m, xi))
                continue;
            size_t k = (size_t)acc->accepted++;
            if (!x_out)
                continue;
            memcpy(x_out + k * dx, xi, sizeof(float) * (size_t)dx);
            if (log_prob)
                log_prob[k] = clp[i];
            if (want_stats) {
                stats->iterations[k] = it[i];
                stats->residual[k] = res[i];
                stats->error_bound[k] = bound[i];
                stats->converged[k] = conv[i];
            }
        }
        acc->drawn += (uint64_t)i; /* up to the last one kept: not how the batches fell */
    }
    return ENG_OK;
}

enum eng_status eng_sample_prior(const struct eng_model *m, struct eng_ws *ws, const float *y,
                                 uint64_t seed, uint32_t obs, int count, float temperature,
                                 uint64_t max_draws, float *x_out, double *log_prob,
                                 const struct eng_solver_opts *opts,
                                 struct eng_solver_stats *stats, struct eng_accept *acc,
                                 char err[ENG_ERR_LEN])
{
    if (!acc)
        return eng_errf(err, ENG_ERR_ARG, "acceptance counts output missing");
    *acc = (struct eng_accept){0, 0};
    if (!m->info.prior_low) {
        enum eng_status st = eng_sample(m, ws, y, seed, obs, 0, count, temperature, x_out,
                                        log_prob, opts, stats, err);
        if (st == ENG_OK)
            acc->drawn = acc->accepted = (uint64_t)count;
        return st;
    }
    enum eng_status st = sample_args(m, count, x_out, y, 1, err);
    if (st != ENG_OK)
        return st;
    if (!temperature_ok(temperature))
        return eng_errf(err, ENG_ERR_ARG, "temperature must be a finite number >= 0");
    if (max_draws < 1)
        return eng_errf(err, ENG_ERR_ARG, "max_draws must be >= 1");
    if ((st = eng_ws_reserve(ws, m)) != ENG_OK)
        return eng_errf(err, st, "out of memory for the workspace");
    if (stats)
        stats->certified = m->cert.certified;
    return reject_loop(m, ws, y, seed, obs, count, temperature, max_draws, x_out, log_prob,
                       opts, stats, acc, err);
}

enum eng_status eng_prior_acceptance(const struct eng_model *m, struct eng_ws *ws,
                                     const float *y, uint64_t seed, uint32_t obs, int count,
                                     uint64_t max_draws, const struct eng_solver_opts *opts,
                                     struct eng_accept *acc, char err[ENG_ERR_LEN])
{
    if (!acc)
        return eng_errf(err, ENG_ERR_ARG, "acceptance counts output missing");
    *acc = (struct eng_accept){0, 0};
    float dummy = 0.0f;
    enum eng_status st = sample_args(m, count, &dummy, y, 1, err);
    if (st != ENG_OK)
        return st;
    if (!m->info.prior_low) {
        acc->drawn = acc->accepted = (uint64_t)count;
        return ENG_OK;
    }
    if (max_draws < 1)
        return eng_errf(err, ENG_ERR_ARG, "max_draws must be >= 1");
    if ((st = eng_ws_reserve(ws, m)) != ENG_OK)
        return eng_errf(err, st, "out of memory for the workspace");
    return reject_loop(m, ws, y, seed, obs, count, 1.0f, max_draws, NULL, NULL, opts, NULL,
                       acc, err);
}
