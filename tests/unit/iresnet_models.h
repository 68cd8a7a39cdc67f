/*
 * iresnet_models.h — i-ResNet test blocks with a known Lipschitz bound, shared by
 * tests/unit/test_iresnet.c, test_certificate.c and bench/bench_iresnet.c (header-only,
 * no Check dependency).  Weights are generated in double, rounded to float (what the
 * checkpoint stores) and kept as the rounded values, so the reference g below is exactly
 * the function the engine evaluates, up to double rounding.
 *
 * Regimes (iresnet.md, "Measurement setup"):
 *   IRM_RANDOM  Linear(d+cw, h) ELU Linear(h, h) ELU Linear(h, d), each Linear's x part
 *               scaled to spectral norm c^(1/3): L = c, actual contraction far smaller.
 *   IRM_SYM     g(x) = c Q diag(lambda) Q^T x + b, lambda spread over [-1, 1] (both ends
 *               included): Jacobian pinned at norm c with eigenvalue -c, the slow and
 *               oscillating direction for fixed-point iteration.  Built as
 *               Linear(d, d) leaky_relu(slope 1 = identity) Linear(d, d), or with h > d
 *               as Linear(d, h) ELU Linear(h, d), linear while |x| < 3.
 *   IRM_ROT     the same with an orthogonal rotation R instead of diag(lambda): eigenvalues
 *               c e^{+-i theta} spread over the circle (hard for Anderson with m < d).
 */
#ifndef INNSERVE_IRESNET_MODELS_H
#define INNSERVE_IRESNET_MODELS_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum irm_regime { IRM_RANDOM = 0, IRM_SYM, IRM_ROT };

struct irm_lin {
    int in, out;   /* in includes the condition columns of the first layer */
    double *w, *b; /* out x in, out: float-rounded values */
};

struct irm_block {
    int d, cw, nlin;
    struct irm_lin lin[3];
    int elu;        /* activation: 1 elu, 0 identity (leaky_relu slope 1) */
};

static inline uint64_t irm_mix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline double irm_randn(uint64_t *s)
{
    double u1 = ((double)(irm_mix(s) >> 11) + 1.0) / 9007199254740993.0;
    double u2 = (double)(irm_mix(s) >> 11) / 9007199254740992.0;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* ||A||_2 of the first `cols` columns of A (rows x ld), by power iteration on A^T A run
 * 20000 steps from a random start (test-side, independent of the engine's SVD). */
static inline double irm_norm(int rows, int cols, int ld, const double *A, uint64_t seed)
{
    double *v = malloc(sizeof(double) * (size_t)cols), *u = malloc(sizeof(double) * (size_t)rows);
    for (int j = 0; j < cols; j++)
        v[j] = irm_randn(&seed);
    double s = 0.0;
    for (int it = 0; it < 20000; it++) {
        double nv = 0.0;
        for (int j = 0; j < cols; j++)
            nv += v[j] * v[j];
        nv = sqrt(nv);
        for (int j = 0; j < cols; j++)
            v[j] /= nv;
        for (int i = 0; i < rows; i++) {
            double a = 0.0;
            for (int j = 0; j < cols; j++)
                a += A[(size_t)i * ld + j] * v[j];
            u[i] = a;
        }
        double nu = 0.0;
        for (int i = 0; i < rows; i++)
            nu += u[i] * u[i];
        s = sqrt(nu);
        for (int j = 0; j < cols; j++) {
            double a = 0.0;
            for (int i = 0; i < rows; i++)
                a += A[(size_t)i * ld + j] * u[i];
            v[j] = a;
        }
    }
    free(v), free(u);
    return s;
}

static inline void irm_round(double *w, size_t n)
{
    for (size_t i = 0; i < n; i++)
        w[i] = (double)(float)w[i];
}

/* Random orthogonal d x d (Gram-Schmidt of a Gaussian matrix), row-major. */
static inline void irm_orth(int d, double *Q, uint64_t *s)
{
    for (int i = 0; i < d * d; i++)
        Q[i] = irm_randn(s);
    for (int j = 0; j < d; j++) { /* columns */
        for (int k = 0; k < j; k++) {
            double dt = 0.0;
            for (int i = 0; i < d; i++)
                dt += Q[i * d + j] * Q[i * d + k];
            for (int i = 0; i < d; i++)
                Q[i * d + j] -= dt * Q[i * d + k];
        }
        double n = 0.0;
        for (int i = 0; i < d; i++)
            n += Q[i * d + j] * Q[i * d + j];
        n = sqrt(n);
        for (int i = 0; i < d; i++)
            Q[i * d + j] /= n;
    }
}

static inline void irm_lin_alloc(struct irm_lin *l, int in, int out)
{
    l->in = in, l->out = out;
    l->w = calloc((size_t)in * out, sizeof(double));
    l->b = calloc((size_t)out, sizeof(double));
}

/* Build a block of the regime with certified bound c (h: hidden width; IRM_SYM / IRM_ROT
 * with h <= d are exactly linear). */
static inline void irm_build(struct irm_block *B, enum irm_regime reg, int d, int h, int cw, double c,
                      uint64_t seed)
{
    uint64_t s = seed * 2654435761u + 12345;
    memset(B, 0, sizeof(*B));
    B->d = d, B->cw = cw;
    if (reg == IRM_RANDOM) {
        B->elu = 1;
        B->nlin = 3;
        int ins[3] = {d + cw, h, h}, outs[3] = {h, h, d};
        double per = pow(c, 1.0 / 3.0);
        for (int k = 0; k < 3; k++) {
            struct irm_lin *l = &B->lin[k];
            irm_lin_alloc(l, ins[k], outs[k]);
            for (int i = 0; i < l->in * l->out; i++)
                l->w[i] = irm_randn(&s);
            for (int i = 0; i < l->out; i++)
                l->b[i] = 0.1 * irm_randn(&s);
            /* scale the x part to norm `per` (the condition columns by the same factor) */
            int xc = k == 0 ? d : l->in;
            double n = irm_norm(l->out, xc, l->in, l->w, seed + (uint64_t)k);
            for (int i = 0; i < l->in * l->out; i++)
                l->w[i] *= per / n;
            irm_round(l->w, (size_t)l->in * l->out);
            irm_round(l->b, (size_t)l->out);
        }
        return;
    }
    B->elu = 0;
    B->nlin = 2;
    double *Q = malloc(sizeof(double) * (size_t)d * d), *M = calloc((size_t)d * d, sizeof(double));
    irm_orth(d, Q, &s);
    if (reg == IRM_SYM) {
        for (int i = 0; i < d; i++)
            M[i * d + i] = d > 1 ? -1.0 + 2.0 * i / (d - 1) : -1.0;
    } else {
        int i = 0;
        for (int k = 0; i + 1 < d; i += 2, k++) {
            double th = 3.14159265358979 * (k + 1.0) / (d / 2 + 0.0);
            M[i * d + i] = cos(th), M[i * d + i + 1] = -sin(th);
            M[(i + 1) * d + i] = sin(th), M[(i + 1) * d + i + 1] = cos(th);
        }
        if (i < d)
            M[i * d + i] = -1.0;
    }
    /* W1 = U Q^T (+ condition columns), W2 = c Q M U^T with U (h x d) orthonormal
     * columns (U = I when h <= d): W2 W1 = c Q M Q^T, |W1| = 1, |W2| = c.  With h > d the
     * activation is ELU with the first bias at +3, so g is linear for |x| < 3 and bends
     * (Jacobian norm below c) beyond: "nearly linear" at a realistic cost. */
    int hh = h > d ? h : d;
    double *U = calloc((size_t)hh * d, sizeof(double));
    if (hh == d) {
        for (int i = 0; i < d; i++)
            U[i * d + i] = 1.0;
    } else {
        double *Z = malloc(sizeof(double) * (size_t)hh * hh);
        irm_orth(hh, Z, &s);
        for (int i = 0; i < hh; i++)
            for (int j = 0; j < d; j++)
                U[i * d + j] = Z[i * hh + j];
        free(Z);
        B->elu = 1;
    }
    irm_lin_alloc(&B->lin[0], d + cw, hh);
    irm_lin_alloc(&B->lin[1], hh, d);
    for (int i = 0; i < hh; i++) {
        for (int j = 0; j < d; j++) {
            double a = 0.0;
            for (int k = 0; k < d; k++)
                a += U[i * d + k] * Q[j * d + k];
            B->lin[0].w[i * (d + cw) + j] = a;
        }
        for (int j = 0; j < cw; j++)
            B->lin[0].w[i * (d + cw) + d + j] = 0.5 * irm_randn(&s);
        B->lin[0].b[i] = hh > d ? 3.0 : 0.2 * irm_randn(&s);
    }
    for (int i = 0; i < d; i++)
        B->lin[1].b[i] = 0.2 * irm_randn(&s);
    double *QM = malloc(sizeof(double) * (size_t)d * d);
    for (int i = 0; i < d; i++)
        for (int j = 0; j < d; j++) {
            double a = 0.0;
            for (int k = 0; k < d; k++)
                a += Q[i * d + k] * M[k * d + j];
            QM[i * d + j] = a;
        }
    for (int i = 0; i < d; i++)
        for (int j = 0; j < hh; j++) {
            double a = 0.0;
            for (int k = 0; k < d; k++)
                a += QM[i * d + k] * U[j * d + k];
            B->lin[1].w[i * hh + j] = c * a;
        }
    free(U), free(QM);
    for (int k = 0; k < 2; k++) {
        irm_round(B->lin[k].w, (size_t)B->lin[k].in * B->lin[k].out);
        irm_round(B->lin[k].b, (size_t)B->lin[k].out);
    }
    free(Q), free(M);
}

/* Multiply every weight of the last Linear by f (to push L above 1, say). */
static inline void irm_scale(struct irm_block *B, double f)
{
    struct irm_lin *l = &B->lin[B->nlin - 1];
    for (int i = 0; i < l->in * l->out; i++)
        l->w[i] = (double)(float)(l->w[i] * f);
}

static inline void irm_free(struct irm_block *B)
{
    for (int k = 0; k < B->nlin; k++)
        free(B->lin[k].w), free(B->lin[k].b);
}

/* Reference g in double: out (d) = g(x (d), c (cw)). */
static inline void irm_g(const struct irm_block *B, const double *x, const double *c, double *out)
{
    double a[1024], t[1024];
    int w = B->d + B->cw;
    for (int j = 0; j < B->d; j++)
        a[j] = x[j];
    for (int j = 0; j < B->cw; j++)
        a[B->d + j] = c[j];
    for (int k = 0; k < B->nlin; k++) {
        const struct irm_lin *l = &B->lin[k];
        for (int i = 0; i < l->out; i++) {
            double s = l->b[i];
            for (int j = 0; j < l->in; j++)
                s += l->w[(size_t)i * l->in + j] * a[j];
            t[i] = s;
        }
        w = l->out;
        for (int i = 0; i < w; i++)
            a[i] = (k + 1 < B->nlin && B->elu) ? (t[i] > 0 ? t[i] : expm1(t[i])) : t[i];
    }
    memcpy(out, a, sizeof(double) * (size_t)B->d);
}

/* Reference inverse: plain fixed point in double until the step is below 1e-14 ||x||
 * and has stopped shrinking (rounding noise), at most 100000 steps.  Its error is then
 * about L/(1-L) * 1e-14 relative. */
static inline void irm_inverse(const struct irm_block *B, const double *y, const double *c, double *x)
{
    double g[1024], prev = INFINITY;
    memcpy(x, y, sizeof(double) * (size_t)B->d);
    for (int it = 0; it < 100000; it++) {
        irm_g(B, x, c, g);
        double dn = 0.0, xn = 0.0;
        for (int j = 0; j < B->d; j++) {
            double nx = y[j] - g[j];
            dn += (nx - x[j]) * (nx - x[j]);
            xn += nx * nx;
            x[j] = nx;
        }
        dn = sqrt(dn);
        if (dn == 0.0 || (dn <= 1e-14 * fmax(sqrt(xn), 1.0) && dn >= prev))
            break;
        prev = dn;
    }
}

/* JSON of the block (malloc'd) naming tensors "<pfx>.<k>.weight/bias"; `extra` is
 * appended inside the object (e.g. ",\"cond\":0"). */
static inline char *irm_json(const struct irm_block *B, const char *pfx, const char *extra)
{
    size_t cap = 2048;
    char *js = malloc(cap);
    size_t k = (size_t)snprintf(js, cap, "{\"type\":\"IResNetBlock\",\"subnet\":{\"layers\":[");
    for (int l = 0; l < B->nlin; l++) {
        k += (size_t)snprintf(js + k, cap - k,
                              "%s{\"type\":\"linear\",\"weight\":\"%s.%d.weight\",\"bias\":\"%s.%d.bias\"}",
                              l ? "," : "", pfx, l, pfx, l);
        if (l + 1 < B->nlin)
            k += (size_t)snprintf(js + k, cap - k, "%s",
                                  B->elu ? ",{\"type\":\"elu\"}"
                                         : ",{\"type\":\"leaky_relu\",\"negative_slope\":1.0}");
    }
    snprintf(js + k, cap - k, "]}%s}", extra ? extra : "");
    return js;
}

/* The tensors of the block as float arrays: calls put(name, ndim, shape, data) per tensor. */
static inline void irm_tensors(const struct irm_block *B, const char *pfx,
                        void (*put)(void *ctx, const char *name, int ndim, const int64_t *shape,
                                    const float *data),
                        void *ctx)
{
    for (int l = 0; l < B->nlin; l++) {
        const struct irm_lin *L = &B->lin[l];
        float *w = malloc(sizeof(float) * (size_t)L->in * L->out), *b = malloc(sizeof(float) * (size_t)L->out);
        for (int i = 0; i < L->in * L->out; i++)
            w[i] = (float)L->w[i];
        for (int i = 0; i < L->out; i++)
            b[i] = (float)L->b[i];
        char nw[128], nb[128];
        snprintf(nw, sizeof(nw), "%s.%d.weight", pfx, l);
        snprintf(nb, sizeof(nb), "%s.%d.bias", pfx, l);
        int64_t sw[2] = {L->out, L->in}, sb[1] = {L->out};
        put(ctx, nw, 2, sw, w);
        put(ctx, nb, 1, sb, b);
        free(w), free(b);
    }
}

#endif
