/*
 * conv.c — convolution operators of one sample (conv.h): geometry, the patch gather the
 * subnets feed to the kernels' matrix product, the exact operator and its adjoint in
 * double, and the certified spectral-norm bound of the Lipschitz certificates.
 *
 * Index map of every tap: output position y (one axis) reads input position
 *     convolution:  i = y*s - p + a*dl                 (a the tap, dl the dilation)
 *     transposed:   i = (y + p - a*dl) / s   when the division is exact
 * and nothing (zero) when i falls outside [0, n); with circular padding (convolutions
 * only) i is taken modulo n.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "conv.h"
#include "la.h"

bool conv_geom_finish(struct conv_geom *g, int opad_h, int opad_w)
{
    long oh, ow;
    if (g->transposed) {
        oh = (long)(g->ih - 1) * g->sh - g->pt - g->pb + (long)g->dh * (g->kh - 1) + opad_h + 1;
        ow = (long)(g->iw - 1) * g->sw - g->pl - g->pr + (long)g->dw * (g->kw - 1) + opad_w + 1;
    } else {
        long eh = (long)g->ih + g->pt + g->pb - (long)g->dh * (g->kh - 1);
        long ew = (long)g->iw + g->pl + g->pr - (long)g->dw * (g->kw - 1);
        if (eh < 1 || ew < 1)
            return false;
        oh = (eh - 1) / g->sh + 1;
        ow = (ew - 1) / g->sw + 1;
    }
    if (oh < 1 || ow < 1 || oh > (1 << 20) || ow > (1 << 20))
        return false;
    g->oh = (int)oh, g->ow = (int)ow;
    g->kg = g->cin / g->groups * g->kh * g->kw;
    return true;
}

bool conv_direct(const struct conv_geom *g)
{
    return !g->transposed && g->kh == 1 && g->kw == 1 && g->sh == 1 && g->sw == 1 &&
           g->pt == 0 && g->pb == 0 && g->pl == 0 && g->pr == 0;
}

size_t conv_col_floats(const struct conv_geom *g)
{
    if (conv_direct(g))
        return 0;
    return (size_t)g->groups * (size_t)g->kg * (size_t)g->oh * (size_t)g->ow;
}

static inline int wrap(int i, int n)
{
    int r = i % n;
    return r < 0 ? r + n : r;
}

/* Input index read by output y through tap a on one axis (n input positions), -1 for a
 * zero. */
static inline int tap_index(const struct conv_geom *g, int y, int a, int n, int s, int p, int dl)
{
    if (g->transposed) {
        int t = y + p - a * dl;
        if (t < 0 || t % s != 0 || t / s >= n)
            return -1;
        return t / s;
    }
    int i = y * s - p + a * dl;
    if (i >= 0 && i < n)
        return i;
    return g->circular ? wrap(i, n) : -1;
}

void conv_patches(const struct conv_geom *g, int R, const float *src, float *dst, size_t ldp)
{
    const int cin_g = g->cin / g->groups;
    const size_t Pin = (size_t)g->ih * g->iw;
    for (int r = 0; r < R; r++)
        for (int y = 0; y < g->oh; y++)
            for (int xx = 0; xx < g->ow; xx++) {
                float *row = dst + (((size_t)r * g->oh + y) * g->ow + xx) * ldp;
                for (int a = 0; a < g->kh; a++) {
                    int hh = tap_index(g, y, a, g->ih, g->sh, g->pt, g->dh);
                    for (int b = 0; b < g->kw; b++) {
                        int ww = hh < 0 ? -1 : tap_index(g, xx, b, g->iw, g->sw, g->pl, g->dw);
                        const float *s = ww < 0 ? NULL
                            : src + ((size_t)r * Pin + (size_t)hh * g->iw + (size_t)ww) * g->cin;
                        for (int gr = 0; gr < g->groups; gr++) {
                            float *o = row + (size_t)gr * g->kg + ((size_t)a * g->kw + b) * cin_g;
                            if (s)
                                memcpy(o, s + (size_t)gr * cin_g, sizeof(float) * (size_t)cin_g);
                            else
                                memset(o, 0, sizeof(float) * (size_t)cin_g);
                        }
                    }
                }
            }
}

void conv_weight_hwc(const struct conv_geom *g, const float *w, float *dst)
{
    const int cin_g = g->cin / g->groups, kk = g->kh * g->kw;
    for (int co = 0; co < g->cout; co++)
        for (int ci = 0; ci < cin_g; ci++)
            for (int t = 0; t < kk; t++)
                dst[(size_t)co * g->kg + (size_t)t * cin_g + ci] =
                    w[(size_t)co * g->kg + (size_t)ci * kk + t];
}

void conv_weight_matrix(const struct conv_geom *g, const float *w, float *dst)
{
    const int cin_g = g->cin / g->groups, cout_g = g->cout / g->groups;
    const size_t kk = (size_t)g->kh * g->kw;
    if (!g->transposed) {
        memcpy(dst, w, sizeof(float) * (size_t)g->cout * g->kg);
        return;
    }
    /* torch (cin, cout_g, kh, kw) -> (cout, cin_g * kh * kw) */
    for (int gr = 0; gr < g->groups; gr++)
        for (int co = 0; co < cout_g; co++)
            for (int ci = 0; ci < cin_g; ci++)
                for (size_t t = 0; t < kk; t++)
                    dst[(size_t)(gr * cout_g + co) * g->kg + (size_t)ci * kk + t] =
                        w[((size_t)(gr * cin_g + ci) * cout_g + co) * kk + t];
}

/* The outputs y in [*y0, *y1) whose tap a reads an input inside [0, n) on one axis of a
 * convolution with zero padding (i = y*s - p + a*dl, increasing in y). */
static inline void tap_range(int a, int n, int s, int p, int dl, int ny, int *y0, int *y1)
{
    long lo = (long)p - (long)a * dl;        /* y*s >= lo */
    long hi = (long)n - 1 + p - (long)a * dl; /* y*s <= hi */
    long first = lo <= 0 ? 0 : (lo + s - 1) / s;
    long last = hi < 0 ? -1 : hi / s;
    if (last > ny - 1)
        last = ny - 1;
    *y0 = (int)first;
    *y1 = (int)(last + 1 > first ? last + 1 : first);
}

/* out += A in (adj = false: in = x, out = y) or out += A^T in (adj = true: in = y,
 * out = x).  Every element takes its products in the loop order (co, cl, a, b, y, x). */
static void apply(const struct conv_geom *g, const double *w, const double *in, double *out,
                  bool adj)
{
    const int cin_g = g->cin / g->groups, cout_g = g->cout / g->groups;
    const size_t P = (size_t)g->oh * g->ow, HW = (size_t)g->ih * g->iw;
    /* a plain convolution with zero padding: the valid outputs of each tap are one range
     * per axis, so the inner loop runs without index tests (same products, same order) */
    const bool ranged = !g->transposed && !g->circular;
    for (int co = 0; co < g->cout; co++) {
        int gr = co / cout_g;
        for (int cl = 0; cl < cin_g; cl++) {
            int ci = gr * cin_g + cl;
            for (int a = 0; a < g->kh; a++)
                for (int b = 0; b < g->kw; b++) {
                    double wv = w[(size_t)co * g->kg + ((size_t)cl * g->kh + a) * g->kw + b];
                    if (wv == 0.0)
                        continue;
                    if (ranged) {
                        int y0, y1, x0, x1;
                        tap_range(a, g->ih, g->sh, g->pt, g->dh, g->oh, &y0, &y1);
                        tap_range(b, g->iw, g->sw, g->pl, g->dw, g->ow, &x0, &x1);
                        for (int yy = y0; yy < y1; yy++) {
                            int hh = yy * g->sh - g->pt + a * g->dh;
                            double *po = adj ? out + (size_t)ci * HW + (size_t)hh * g->iw
                                             : out + (size_t)co * P + (size_t)yy * g->ow;
                            const double *pi = adj ? in + (size_t)co * P + (size_t)yy * g->ow
                                                   : in + (size_t)ci * HW + (size_t)hh * g->iw;
                            for (int xx = x0; xx < x1; xx++) {
                                int ww = xx * g->sw - g->pl + b * g->dw;
                                if (adj)
                                    po[ww] += wv * pi[xx];
                                else
                                    po[xx] += wv * pi[ww];
                            }
                        }
                        continue;
                    }
                    for (int yy = 0; yy < g->oh; yy++) {
                        int hh = tap_index(g, yy, a, g->ih, g->sh, g->pt, g->dh);
                        if (hh < 0)
                            continue;
                        for (int xx = 0; xx < g->ow; xx++) {
                            int ww = tap_index(g, xx, b, g->iw, g->sw, g->pl, g->dw);
                            if (ww < 0)
                                continue;
                            size_t o = (size_t)co * P + (size_t)yy * g->ow + xx;
                            size_t i = (size_t)ci * HW + (size_t)hh * g->iw + ww;
                            if (adj)
                                out[i] += wv * in[o];
                            else
                                out[o] += wv * in[i];
                        }
                    }
                }
        }
    }
}

void conv_dense_f64(const struct conv_geom *g, const double *w, int cx, double *M)
{
    const int cin_g = g->cin / g->groups, cout_g = g->cout / g->groups;
    const size_t P = (size_t)g->oh * g->ow, HW = (size_t)g->ih * g->iw;
    const size_t nx = (size_t)cx * HW;
    memset(M, 0, sizeof(double) * (size_t)g->cout * P * nx);
    /* the loop order of apply(): an entry reached by several taps (circular wrap) sums
     * them in the order A e_j would */
    for (int co = 0; co < g->cout; co++) {
        int gr = co / cout_g;
        for (int cl = 0; cl < cin_g; cl++) {
            int ci = gr * cin_g + cl;
            if (ci >= cx)
                continue;
            for (int a = 0; a < g->kh; a++)
                for (int b = 0; b < g->kw; b++) {
                    double wv = w[(size_t)co * g->kg + ((size_t)cl * g->kh + a) * g->kw + b];
                    if (wv == 0.0)
                        continue;
                    for (int yy = 0; yy < g->oh; yy++) {
                        int hh = tap_index(g, yy, a, g->ih, g->sh, g->pt, g->dh);
                        if (hh < 0)
                            continue;
                        for (int xx = 0; xx < g->ow; xx++) {
                            int ww = tap_index(g, xx, b, g->iw, g->sw, g->pl, g->dw);
                            if (ww < 0)
                                continue;
                            size_t o = (size_t)co * P + (size_t)yy * g->ow + xx;
                            size_t i = (size_t)ci * HW + (size_t)hh * g->iw + ww;
                            M[o * nx + i] += wv;
                        }
                    }
                }
        }
    }
}

void conv_apply_f64(const struct conv_geom *g, const double *w, const double *x, double *y)
{
    memset(y, 0, sizeof(double) * (size_t)g->cout * g->oh * g->ow);
    apply(g, w, x, y, false);
}

void conv_adjoint_f64(const struct conv_geom *g, const double *w, const double *y, double *x)
{
    memset(x, 0, sizeof(double) * (size_t)g->cin * g->ih * g->iw);
    apply(g, w, y, x, true);
}

/* ---- spectral norm ------------------------------------------------------------------- */

static double vnorm(size_t n, const double *v)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += v[i] * v[i];
    return sqrt(s);
}

/* The operator and its adjoint of a plain convolution with zero padding and one group,
 * channels innermost, so that the innermost loop runs over the output channels (apply) or
 * the input channels (adjoint) and vectorizes.  Every element still takes the products of
 * apply() in the same order ((ci, a, b) for an output, (co, a, b) for an input) with the
 * same roundings; apply() leaves out zero weights, which add +-0 here: the same value,
 * since a sum from +0 never becomes -0 and the inputs are finite.  So the results are
 * apply()'s, bit for bit, for finite inputs.  wf: weights as (ci, a, b, co); wa: as
 * (co, a, b, ci); t: scratch of max(oh*ow*cout, ih*iw*cin) doubles. */
struct cl_ops {
    const struct conv_geom *g;
    double *wf, *wa, *t;
};

static bool cl_ok(const struct conv_geom *g)
{
    return !g->transposed && !g->circular && g->groups == 1;
}

static void cl_setup(struct cl_ops *c, const struct conv_geom *g, const double *w)
{
    const int kk = g->kh * g->kw;
    c->g = g;
    for (int co = 0; co < g->cout; co++)
        for (int ci = 0; ci < g->cin; ci++)
            for (int t = 0; t < kk; t++) {
                double v = w[(size_t)co * g->kg + (size_t)ci * kk + t];
                c->wf[((size_t)ci * kk + t) * g->cout + co] = v;
                c->wa[((size_t)co * kk + t) * g->cin + ci] = v;
            }
}

/* A (adj false: x -> y, over wf) or A^T (adj true: y -> x, over wa), accumulated
 * channels-innermost in t and transposed back to channel planes at the end.  adj is a
 * constant at each call, so each direction compiles to its own loops. */
static inline __attribute__((always_inline)) void cl_body(const struct cl_ops *c,
                                                          const double *in, double *out,
                                                          bool adj)
{
    const struct conv_geom *g = c->g;
    const int kk = g->kh * g->kw;
    const int n_src = adj ? g->cout : g->cin, n_dst = adj ? g->cin : g->cout;
    const size_t P = (size_t)g->oh * g->ow, HW = (size_t)g->ih * g->iw;
    const size_t Q = adj ? HW : P; /* positions of the result */
    const double *wt = adj ? c->wa : c->wf;
    double *t = c->t;
    memset(t, 0, sizeof(double) * Q * n_dst);
    for (int s = 0; s < n_src; s++)
        for (int a = 0; a < g->kh; a++)
            for (int b = 0; b < g->kw; b++) {
                const double *wk = wt + ((size_t)s * kk + (size_t)a * g->kw + b) * n_dst;
                int y0, y1, x0, x1;
                tap_range(a, g->ih, g->sh, g->pt, g->dh, g->oh, &y0, &y1);
                tap_range(b, g->iw, g->sw, g->pl, g->dw, g->ow, &x0, &x1);
                for (int yy = y0; yy < y1; yy++) {
                    int hh = yy * g->sh - g->pt + a * g->dh;
                    const double *r = adj ? in + (size_t)s * P + (size_t)yy * g->ow
                                          : in + (size_t)s * HW + (size_t)hh * g->iw;
                    for (int xx = x0; xx < x1; xx++) {
                        int ww = xx * g->sw - g->pl + b * g->dw;
                        const double v = adj ? r[xx] : r[ww];
                        double *o = adj ? t + ((size_t)hh * g->iw + ww) * n_dst
                                        : t + ((size_t)yy * g->ow + xx) * n_dst;
                        for (int d = 0; d < n_dst; d++)
                            o[d] += wk[d] * v;
                    }
                }
            }
    for (size_t q = 0; q < Q; q++)
        for (int d = 0; d < n_dst; d++)
            out[(size_t)d * Q + q] = t[q * n_dst + d];
}

static inline __attribute__((always_inline)) void cl_apply_body(const struct cl_ops *c,
                                                                const double *x, double *y)
{
    cl_body(c, x, y, false);
}

static inline __attribute__((always_inline)) void cl_adjoint_body(const struct cl_ops *c,
                                                                  const double *y, double *x)
{
    cl_body(c, y, x, true);
}

/* The two operators above compiled plain and for AVX2 (wider lanes; separate IEEE
 * multiplies and adds either way: the build contracts nothing), picked by cpuid. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
__attribute__((target("avx2"))) static void cl_apply_avx2(const struct cl_ops *c,
                                                          const double *x, double *y)
{
    cl_apply_body(c, x, y);
}
__attribute__((target("avx2"))) static void cl_adjoint_avx2(const struct cl_ops *c,
                                                            const double *y, double *x)
{
    cl_adjoint_body(c, y, x);
}
static bool cl_has_avx2(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2");
}
#define CL_CALL(fn, ...) (cl_has_avx2() ? fn##_avx2(__VA_ARGS__) : fn##_body(__VA_ARGS__))
#else
#define CL_CALL(fn, ...) fn##_body(__VA_ARGS__)
#endif

static void cl_apply(const struct cl_ops *c, const double *x, double *y)
{
    CL_CALL(cl_apply, c, x, y);
}

static void cl_adjoint(const struct cl_ops *c, const double *y, double *x)
{
    CL_CALL(cl_adjoint, c, y, x);
}

/* Power iteration on A^T A (x restricted to channels < cx by the zeroed weight columns):
 * ||A v|| for the final unit v, a lower bound on ||A||.  c: the channels-innermost
 * operators (same bits as conv_apply_f64 / conv_adjoint_f64), or NULL. */
static double power_lower(const struct conv_geom *g, const double *w, int cx, double *v,
                          double *u, const struct cl_ops *c)
{
    const size_t nin = (size_t)g->cin * g->ih * g->iw, nout = (size_t)g->cout * g->oh * g->ow;
    const size_t nx = (size_t)cx * g->ih * g->iw;
    for (size_t i = 0; i < nin; i++)
        v[i] = i < nx ? 1.0 + 0.01 * (double)((i * 7919u) % 97u) : 0.0;
    /* 300 steps, fewer on large operators (the witness is a sanity bracket only) */
    double cost = (double)g->cout * g->kg * g->oh * g->ow;
    int maxit = cost > 5e6 ? 40 : 300;
    double sig = 0.0;
    for (int it = 0; it < maxit; it++) {
        double nv = vnorm(nin, v);
        if (!(nv > 0.0) || !isfinite(nv))
            return 0.0;
        for (size_t i = 0; i < nin; i++)
            v[i] /= nv;
        if (c)
            cl_apply(c, v, u);
        else
            conv_apply_f64(g, w, v, u);
        double s = vnorm(nout, u);
        if (!isfinite(s))
            return 0.0;
        if (c)
            cl_adjoint(c, u, v);
        else
            conv_adjoint_f64(g, w, u, v);
        for (size_t i = nx; i < nin; i++)
            v[i] = 0.0;
        if (it > 10 && fabs(s - sig) <= 1e-13 * s) {
            sig = s;
            break;
        }
        sig = s;
    }
    return sig;
}

/* The explicit matrix (nout x nx) and la_norm2_upper. */
static double dense_upper(const struct conv_geom *g, const double *w, int cx, double enough)
{
    const size_t nin = (size_t)g->cin * g->ih * g->iw, nout = (size_t)g->cout * g->oh * g->ow;
    const size_t nx = (size_t)cx * g->ih * g->iw;
    double *M = malloc(sizeof(double) * (nout * nx + nin + nout +
                                         la_norm2_upper_work((int)nout, (int)nx)));
    if (!M)
        return INFINITY;
    double *work = M + nout * nx + nin + nout;
    conv_dense_f64(g, w, cx, M);
    double ub = la_norm2_upper_until((int)nout, (int)nx, M, work, enough);
    free(M);
    return ub;
}

/* Largest singular value of the complex m x n matrix K = Kr + i Ki (row-major) by one-sided
 * (Hestenes) Jacobi rotations on the columns of K (m >= n) or of K^H (m < n), each pair made
 * orthogonal by a phase and a real rotation; the same rule, tolerance and sweep limit as
 * la_singular_values, on the complex matrix instead of its real 2m x 2n form [[Kr, -Ki],
 * [Ki, Kr]] (whose singular values are K's, each twice; half the columns, a quarter of the
 * pairs).  work: 2 m n doubles.  Returns -1 when 60 sweeps do not converge or K is not
 * finite. */
static double cplx_norm2(int m, int n, const double *Kr, const double *Ki, double *work)
{
    const bool tr = m < n;
    const int len = tr ? n : m, nc = tr ? m : n;
    double *br = work, *bi = work + (size_t)len * nc;
    for (int j = 0; j < nc; j++)
        for (int i = 0; i < len; i++) {
            size_t src = tr ? (size_t)j * n + i : (size_t)i * n + j;
            br[(size_t)j * len + i] = Kr[src];
            bi[(size_t)j * len + i] = tr ? -Ki[src] : Ki[src];
        }
    bool converged = false;
    for (int sweep = 1; sweep <= 60 && !converged; sweep++) {
        int rotated = 0;
        for (int p = 0; p < nc - 1; p++)
            for (int q = p + 1; q < nc; q++) {
                double *pr = br + (size_t)p * len, *pi = bi + (size_t)p * len;
                double *qr = br + (size_t)q * len, *qi = bi + (size_t)q * len;
                double al = 0.0, be = 0.0, gr = 0.0, gi = 0.0; /* g = conj(b_p) . b_q */
                for (int i = 0; i < len; i++) {
                    al += pr[i] * pr[i] + pi[i] * pi[i];
                    be += qr[i] * qr[i] + qi[i] * qi[i];
                    gr += pr[i] * qr[i] + pi[i] * qi[i];
                    gi += pr[i] * qi[i] - pi[i] * qr[i];
                }
                if (!isfinite(al + be + gr + gi))
                    return -1.0;
                double ga = hypot(gr, gi);
                if (ga <= 4.0 * DBL_EPSILON * sqrt(al * be) || ga == 0.0)
                    continue;
                rotated = 1;
                const double er = gr / ga, ei = gi / ga; /* b_q <- conj(e) b_q makes g real */
                double zeta = (be - al) / (2.0 * ga);
                double t = (zeta >= 0 ? 1.0 : -1.0) / (fabs(zeta) + sqrt(1.0 + zeta * zeta));
                double c = 1.0 / sqrt(1.0 + t * t), sn = c * t;
                for (int i = 0; i < len; i++) {
                    double ur = pr[i], ui = pi[i];
                    double vr = er * qr[i] + ei * qi[i], vi = er * qi[i] - ei * qr[i];
                    pr[i] = c * ur - sn * vr;
                    pi[i] = c * ui - sn * vi;
                    qr[i] = sn * ur + c * vr;
                    qi[i] = sn * ui + c * vi;
                }
            }
        converged = !rotated;
    }
    if (!converged)
        return -1.0;
    double best = 0.0;
    for (int j = 0; j < nc; j++) {
        double s2 = 0.0;
        for (int i = 0; i < len; i++)
            s2 += br[(size_t)j * len + i] * br[(size_t)j * len + i] +
                  bi[(size_t)j * len + i] * bi[(size_t)j * len + i];
        best = fmax(best, sqrt(s2));
    }
    return best;
}

/* max over the N1 x N2 DFT frequencies of the per-group symbol's spectral norm (taps at
 * offsets a*dh, b*dw; weight columns of channels >= cx zeroed beforehand). */
static double dft_upper(const struct conv_geom *g, const double *w, int N1, int N2)
{
    const int cin_g = g->cin / g->groups, cout_g = g->cout / g->groups;
    const int m = cout_g, n = cin_g, kk = g->kh * g->kw;
    double *R = malloc(sizeof(double) * ((size_t)4 * m * n + la_norm2_upper_work(2 * m, 2 * n) +
                                         2 * (size_t)kk));
    if (!R)
        return INFINITY;
    double *work = R + (size_t)4 * m * n, *cs = work + la_norm2_upper_work(2 * m, 2 * n);
    double *sn = cs + kk;
    /* rounding margin of the symbol entries: kk terms, each |w| times a cos/sin accurate
     * to a few ulps, summed in double */
    double wmax = 0.0;
    for (size_t i = 0; i < (size_t)g->cout * g->kg; i++)
        wmax = fmax(wmax, fabs(w[i]));
    double margin = sqrt(4.0 * m * n) * (double)kk * wmax * 16.0 * LA_U * (double)(kk + 4);
    /* the complex Jacobi (cplx_norm2) where the real form would take la_norm2_upper's
     * Jacobi path, with that path's margin for the real form's size */
    const bool cplx = 2 * (m < n ? m : n) <= LA_JACOBI_MAX;
    const double cmargin = 1.0 + 16.0 * (double)(2 * (m > n ? m : n)) * DBL_EPSILON;
    double best = 0.0;
    const double tau = 6.283185307179586;
    for (int f1 = 0; f1 < N1; f1++)
        for (int f2 = 0; f2 < N2; f2++) {
            /* the symbol at -f is the conjugate of the one at f: same norm */
            int c1 = (N1 - f1) % N1, c2 = (N2 - f2) % N2;
            if (c1 < f1 || (c1 == f1 && c2 < f2))
                continue;
            for (int a = 0; a < g->kh; a++)
                for (int b = 0; b < g->kw; b++) {
                    double ph = tau * ((double)f1 * a * g->dh / N1 + (double)f2 * b * g->dw / N2);
                    cs[a * g->kw + b] = cos(ph);
                    sn[a * g->kw + b] = -sin(ph);
                }
            for (int gr = 0; gr < g->groups; gr++) {
                for (int i = 0; i < m; i++)
                    for (int j = 0; j < n; j++) {
                        const double *wr = w + (size_t)(gr * m + i) * g->kg + (size_t)j * kk;
                        double re = 0.0, im = 0.0;
                        for (int t = 0; t < kk; t++) {
                            re += wr[t] * cs[t];
                            im += wr[t] * sn[t];
                        }
                        if (cplx) { /* Re and Im, m x n each */
                            R[(size_t)i * n + j] = re;
                            R[(size_t)m * n + (size_t)i * n + j] = im;
                            continue;
                        }
                        /* [[Re, -Im], [Im, Re]] (2m x 2n) */
                        R[(size_t)i * 2 * n + j] = re;
                        R[(size_t)i * 2 * n + n + j] = -im;
                        R[(size_t)(m + i) * 2 * n + j] = im;
                        R[(size_t)(m + i) * 2 * n + n + j] = re;
                    }
                double s;
                if (cplx) {
                    s = cplx_norm2(m, n, R, R + (size_t)m * n, work);
                    s = s >= 0.0 ? s * cmargin : INFINITY;
                } else {
                    s = la_norm2_upper(2 * m, 2 * n, R, work);
                }
                if (!(s <= best))
                    best = s;
            }
        }
    free(R);
    return best + margin;
}

double conv_norm2_upper(const struct conv_geom *g, const float *w, int cx, double *lower,
                        const char **method)
{
    const size_t nin = (size_t)g->cin * g->ih * g->iw, nout = (size_t)g->cout * g->oh * g->ow;
    const size_t nx = (size_t)cx * g->ih * g->iw, nw = (size_t)g->cout * g->kg;
    const int cin_g = g->cin / g->groups;
    *lower = 0.0;
    *method = "none (out of memory)";
    double *wd = malloc(sizeof(double) * (nw + nin + nout));
    if (!wd)
        return INFINITY;
    double *v = wd + nw, *u = v + nin;
    for (int co = 0; co < g->cout; co++) {
        int gr = co / (g->cout / g->groups);
        for (int k = 0; k < g->kg; k++) {
            int ci = gr * cin_g + k / (g->kh * g->kw);
            wd[(size_t)co * g->kg + k] = ci < cx ? (double)w[(size_t)co * g->kg + k] : 0.0;
        }
    }
    /* the channels-innermost operators of the power iteration, where they apply */
    struct cl_ops cl = {0};
    double *clbuf = NULL;
    if (cl_ok(g)) {
        size_t P = (size_t)g->oh * g->ow, HW = (size_t)g->ih * g->iw;
        size_t nt = P * g->cout > HW * g->cin ? P * g->cout : HW * g->cin;
        clbuf = malloc(sizeof(double) * (2 * nw + nt));
        if (clbuf) {
            cl.wf = clbuf, cl.wa = clbuf + nw, cl.t = clbuf + 2 * nw;
            cl_setup(&cl, g, wd);
        }
    }
    *lower = power_lower(g, wd, cx, v, u, clbuf ? &cl : NULL);
    free(clbuf);
    double ub = INFINITY;
    size_t small = nout < nx ? nout : nx;
    if (nx == 0) {
        ub = 0.0;
        *method = "no input channels";
    } else if (small <= CONV_DENSE_MAX && nout * nx <= ((size_t)1 << 22)) {
        ub = dense_upper(g, wd, cx, 0.0);
        *method = "explicit matrix";
    } else if (g->circular) {
        long fh = (long)g->ih + g->pt + g->pb - (long)g->dh * (g->kh - 1);
        long fw = (long)g->iw + g->pl + g->pr - (long)g->dw * (g->kw - 1);
        if (fh == g->ih && fw == g->iw) {
            ub = dft_upper(g, wd, g->ih, g->iw);
            *method = g->sh == 1 && g->sw == 1 ? "2-D DFT (circular padding, exact)"
                                               : "2-D DFT of the stride-1 operator (circular)";
        } else {
            *method = "none (circular padding wider than the kernel)";
        }
    } else if (!g->transposed) {
        ub = dft_upper(g, wd, g->ih + g->pt + g->pb, g->iw + g->pl + g->pr);
        *method = "2-D DFT on the zero-extended grid (upper bound)";
    } else {
        int n1 = g->oh + g->pt, n2 = g->ow + g->pl;
        if ((g->ih - 1) * g->sh + 1 > n1)
            n1 = (g->ih - 1) * g->sh + 1;
        if ((g->iw - 1) * g->sw + 1 > n2)
            n2 = (g->iw - 1) * g->sw + 1;
        ub = dft_upper(g, wd, n1, n2);
        *method = "2-D DFT of the adjoint convolution on the zero-extended grid (upper bound)";
    }
    if (!(ub <= *lower * (1.0 + CONV_REFINE)) && small <= CONV_REFINE_MAX &&
        nout * nx <= ((size_t)1 << 22) && nx > 0 && small > CONV_DENSE_MAX) {
        double dense = dense_upper(g, wd, cx, *lower * (1.0 + CONV_REFINE_TOL));
        if (dense < ub) {
            ub = dense;
            *method = "explicit matrix (Gram iteration; the DFT bound was looser)";
        }
    }
    free(wd);
    if (isfinite(ub) && ub < *lower)
        ub = *lower * (1.0 + 1e-12); /* the bound's own rounding; never below a witness */
    return ub;
}
