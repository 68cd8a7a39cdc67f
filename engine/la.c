/*
 * la.c — double-precision dense linear algebra in plain C, fixed evaluation order (see
 * la.h): LU, inverse, power iteration, Jacobi singular values, the certified norm bound
 * (Jacobi or Gram iteration), and the GEMM / GEMV / rank-1 kernels of the numerical
 * inverses with fma() accumulation.  No BLAS call, no allocation.
 */
#include "la.h"
#include "emath.h"

#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>

double la_gamma(int n)
{
    double nu = (double)n * LA_U;
    if (!(nu < 0.5))
        return INFINITY;
    return nu / (1.0 - nu) * (1.0 + 4.0 * LA_U);
}

double la_norm_up(int d, const double *v)
{
    double s = 0.0;
    for (int i = 0; i < d; i++)
        s = fma(v[i], v[i], s);
    /* + d 2^-537: squares below 2^-1074 may flush to zero */
    return sqrt(s) * (1.0 + (double)(d + 4) * LA_U) + (double)d * 0x1p-537;
}

/* ---- LU, inverse, power iteration -------------------------------------------------------- */

int la_lu(int n, double *A, int *piv)
{
    double scale = 0.0;
    for (int i = 0; i < n * n; i++)
        scale = fmax(scale, fabs(A[i]));
    if (!(scale > 0.0) || !isfinite(scale))
        return -1;
    for (int k = 0; k < n; k++) {
        int p = k;
        double best = fabs(A[(size_t)k * n + k]);
        for (int i = k + 1; i < n; i++) {
            double v = fabs(A[(size_t)i * n + k]);
            if (v > best) {
                best = v;
                p = i;
            }
        }
        piv[k] = p;
        if (best <= scale * 1e-13)
            return -1;
        if (p != k)
            for (int j = 0; j < n; j++) {
                double t = A[(size_t)k * n + j];
                A[(size_t)k * n + j] = A[(size_t)p * n + j];
                A[(size_t)p * n + j] = t;
            }
        double inv = 1.0 / A[(size_t)k * n + k];
        for (int i = k + 1; i < n; i++) {
            double f = A[(size_t)i * n + k] * inv;
            A[(size_t)i * n + k] = f;
            if (f != 0.0)
                for (int j = k + 1; j < n; j++)
                    A[(size_t)i * n + j] -= f * A[(size_t)k * n + j];
        }
    }
    return 0;
}

double la_lu_logabsdet(int n, const double *LU)
{
    double s = 0.0;
    for (int k = 0; k < n; k++)
        s += em_log(fabs(LU[(size_t)k * n + k]));
    return s;
}

void la_lu_solve(int n, const double *LU, const int *piv, double *b)
{
    for (int k = 0; k < n; k++)
        if (piv[k] != k) {
            double t = b[k];
            b[k] = b[piv[k]];
            b[piv[k]] = t;
        }
    for (int i = 1; i < n; i++) {
        double s = b[i];
        for (int j = 0; j < i; j++)
            s -= LU[(size_t)i * n + j] * b[j];
        b[i] = s;
    }
    for (int i = n - 1; i >= 0; i--) {
        double s = b[i];
        for (int j = i + 1; j < n; j++)
            s -= LU[(size_t)i * n + j] * b[j];
        b[i] = s / LU[(size_t)i * n + i];
    }
}

int la_inverse(int n, const double *A, double *Ainv, double *work, int *piv)
{
    memcpy(work, A, sizeof(double) * (size_t)n * n);
    if (la_lu(n, work, piv) != 0)
        return -1;
    /* Solve column by column: column j of A^{-1} = A^{-1} e_j. */
    for (int j = 0; j < n; j++) {
        double *b = Ainv + (size_t)j * n; /* row j of Ainv temporarily holds column j */
        for (int i = 0; i < n; i++)
            b[i] = (i == j) ? 1.0 : 0.0;
        la_lu_solve(n, work, piv, b);
    }
    /* Rows now hold columns: transpose in place. */
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) {
            double t = Ainv[(size_t)i * n + j];
            Ainv[(size_t)i * n + j] = Ainv[(size_t)j * n + i];
            Ainv[(size_t)j * n + i] = t;
        }
    return 0;
}

double la_spectral_norm(int rows, int cols, const double *A, double *work)
{
    double *v = work;          /* cols */
    double *u = work + cols;   /* rows */
    /* Deterministic start: all ones plus a small ramp so it is not orthogonal to the top
     * singular vector by accident. */
    for (int j = 0; j < cols; j++)
        v[j] = 1.0 + 0.01 * j;
    double sigma = 0.0;
    for (int it = 0; it < 10000; it++) {
        double nv = 0.0;
        for (int j = 0; j < cols; j++)
            nv += v[j] * v[j];
        nv = sqrt(nv);
        if (nv == 0.0)
            return 0.0;
        for (int j = 0; j < cols; j++)
            v[j] /= nv;
        for (int i = 0; i < rows; i++) {
            double s = 0.0;
            for (int j = 0; j < cols; j++)
                s += A[(size_t)i * cols + j] * v[j];
            u[i] = s;
        }
        for (int j = 0; j < cols; j++) {
            double s = 0.0;
            for (int i = 0; i < rows; i++)
                s += A[(size_t)i * cols + j] * u[i];
            v[j] = s;
        }
        double nu = 0.0;
        for (int j = 0; j < cols; j++)
            nu += v[j] * v[j];
        double next = sqrt(sqrt(nu)); /* ||A^T A v|| = sigma^2 */
        if (it > 2 && fabs(next - sigma) <= 1e-12 * next) {
            sigma = next;
            break;
        }
        sigma = next;
    }
    return sigma;
}

/* ---- fixed-order kernels ------------------------------------------------------------------ */

/* Each kernel below is written once (an always-inline body) and compiled twice on x86-64:
 * plain, where fma() is a call into libm per element, and for AVX2+FMA, where it is the
 * fused instruction (and the compiler may vectorize across independent outputs).  Both
 * compute the same correctly rounded fma(a, b, c) for every element in the same order, so
 * the results are bit-identical; cpuid picks the second where the CPU has it. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define LA_FMA_CLONES 1
#define LA_FMA_TARGET __attribute__((target("avx2,fma")))
static bool la_has_fma(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#endif
#define LA_INLINE static inline __attribute__((always_inline))

LA_INLINE void linear_body(int n, int out, int in, const double *X, int ldx, const double *W,
                           int ldw, double beta, double *Y, int ldy)
{
    for (int i = 0; i < n; i++) {
        const double *x = X + (size_t)i * ldx;
        double *y = Y + (size_t)i * ldy;
        int o = 0;
        /* four outputs at a time: four independent chains, each in its own order */
        for (; o + 4 <= out; o += 4) {
            const double *w0 = W + (size_t)o * ldw, *w1 = w0 + ldw, *w2 = w1 + ldw,
                         *w3 = w2 + ldw;
            double a0 = beta != 0.0 ? y[o] : 0.0, a1 = beta != 0.0 ? y[o + 1] : 0.0;
            double a2 = beta != 0.0 ? y[o + 2] : 0.0, a3 = beta != 0.0 ? y[o + 3] : 0.0;
            for (int k = 0; k < in; k++) {
                const double xk = x[k];
                a0 = fma(xk, w0[k], a0);
                a1 = fma(xk, w1[k], a1);
                a2 = fma(xk, w2[k], a2);
                a3 = fma(xk, w3[k], a3);
            }
            y[o] = a0, y[o + 1] = a1, y[o + 2] = a2, y[o + 3] = a3;
        }
        for (; o < out; o++) {
            const double *w = W + (size_t)o * ldw;
            double acc = beta != 0.0 ? y[o] : 0.0;
            for (int k = 0; k < in; k++)
                acc = fma(x[k], w[k], acc);
            y[o] = acc;
        }
    }
}

LA_INLINE void linear_err_body(int n, int out, int in, const double *X, int ldx, const double *EX,
                               int ldex, const double *W, const double *Wabs, int ldw, double *Y,
                               int ldy, double *EY, int ldey)
{
    /* Running error bound: step k computes acc_k = fl(x_k w_k + acc_{k-1}) with one rounding,
     * |acc_k - (x_k w_k + acc_{k-1})| <= u |acc_k| (+ 2^-1075 if it underflows), and in a
     * sum the local errors add up: |fl(s) - s| <= u sum_k |acc_k| + in 2^-1074.  The
     * inherited error is at most P = e_b + sum_k |w_k| e_x,k.  Both sums are of
     * non-negative terms computed in double, so their exact values are at most
     * (1 + 2 gamma_{in+2}) times the computed ones (factor f, which also covers the final
     * combination). */
    const double f = 1.0 + 2.0 * la_gamma(in + 2);
    const double tiny = (double)(in + 1) * 0x1p-1074;
    for (int i = 0; i < n; i++) {
        const double *x = X + (size_t)i * ldx;
        const double *ex = EX ? EX + (size_t)i * ldex : NULL;
        double *y = Y + (size_t)i * ldy, *ey = EY + (size_t)i * ldey;
        int o = 0;
        /* four outputs at a time: independent chains, each in its own order */
        for (; o + 4 <= out; o += 4) {
            const double *w0 = W + (size_t)o * ldw, *w1 = w0 + ldw, *w2 = w1 + ldw,
                         *w3 = w2 + ldw;
            double a0 = y[o], a1 = y[o + 1], a2 = y[o + 2], a3 = y[o + 3];
            double r0 = 0.0, r1 = 0.0, r2 = 0.0, r3 = 0.0;
            double p0 = ey[o], p1 = ey[o + 1], p2 = ey[o + 2], p3 = ey[o + 3];
            for (int k = 0; k < in; k++) {
                const double xk = x[k];
                a0 = fma(xk, w0[k], a0);
                a1 = fma(xk, w1[k], a1);
                a2 = fma(xk, w2[k], a2);
                a3 = fma(xk, w3[k], a3);
                r0 += fabs(a0);
                r1 += fabs(a1);
                r2 += fabs(a2);
                r3 += fabs(a3);
            }
            if (ex) {
                const double *v0 = Wabs + (size_t)o * ldw, *v1 = v0 + ldw, *v2 = v1 + ldw,
                             *v3 = v2 + ldw;
                for (int k = 0; k < in; k++) {
                    const double ek = ex[k];
                    p0 = fma(ek, v0[k], p0);
                    p1 = fma(ek, v1[k], p1);
                    p2 = fma(ek, v2[k], p2);
                    p3 = fma(ek, v3[k], p3);
                }
            }
            y[o] = a0, y[o + 1] = a1, y[o + 2] = a2, y[o + 3] = a3;
            ey[o] = (LA_U * r0 + p0) * f + tiny;
            ey[o + 1] = (LA_U * r1 + p1) * f + tiny;
            ey[o + 2] = (LA_U * r2 + p2) * f + tiny;
            ey[o + 3] = (LA_U * r3 + p3) * f + tiny;
        }
        for (; o < out; o++) {
            const double *w = W + (size_t)o * ldw;
            double acc = y[o], run = 0.0, p = ey[o];
            for (int k = 0; k < in; k++) {
                acc = fma(x[k], w[k], acc);
                run += fabs(acc);
            }
            if (ex) {
                const double *wa = Wabs + (size_t)o * ldw;
                for (int k = 0; k < in; k++)
                    p = fma(ex[k], wa[k], p);
            }
            y[o] = acc;
            ey[o] = (LA_U * run + p) * f + tiny;
        }
    }
}

/* skip_zero: terms with A[i][p] = +-0 are left out.  The caller allows it only when C
 * starts from +0 (beta = 0) and B is finite: then fma(+-0, b, c) = c exactly (c is never
 * -0, since a sum from +0 can only become -0 by adding -0 to -0), so the result is the
 * same bit for bit. */
LA_INLINE void gemm_body(int m, int n, int k, const double *A, int lda, const double *B, int ldb,
                         double beta, double *C, int ldc, bool skip_zero)
{
    enum { JB = 32 };
    for (int i = 0; i < m; i++) {
        double *c = C + (size_t)i * ldc;
        const double *a = A + (size_t)i * lda;
        if (beta == 0.0)
            for (int j = 0; j < n; j++)
                c[j] = 0.0;
        /* element (i, j) still accumulates p = 0, 1, ... in order; JB columns at a time
         * are held in a local block (registers) across the whole p loop */
        int j0 = 0;
        for (; j0 + JB <= n; j0 += JB) {
            double t[JB];
            for (int j = 0; j < JB; j++)
                t[j] = c[j0 + j];
            for (int p = 0; p < k; p++) {
                const double ap = a[p], *b = B + (size_t)p * ldb + j0;
                if (skip_zero && ap == 0.0)
                    continue;
                for (int j = 0; j < JB; j++)
                    t[j] = fma(ap, b[j], t[j]);
            }
            for (int j = 0; j < JB; j++)
                c[j0 + j] = t[j];
        }
        if (j0 < n)
            for (int p = 0; p < k; p++) {
                const double ap = a[p], *b = B + (size_t)p * ldb;
                if (skip_zero && ap == 0.0)
                    continue;
                for (int j = j0; j < n; j++)
                    c[j] = fma(ap, b[j], c[j]);
            }
    }
}

LA_INLINE void gemv_body(bool trans, int m, int n, const double *A, int lda, const double *x,
                         double *y)
{
    if (!trans) {
        for (int i = 0; i < m; i++) {
            const double *a = A + (size_t)i * lda;
            double acc = 0.0;
            for (int j = 0; j < n; j++)
                acc = fma(a[j], x[j], acc);
            y[i] = acc;
        }
        return;
    }
    for (int j = 0; j < n; j++)
        y[j] = 0.0;
    for (int i = 0; i < m; i++) { /* y[j] accumulates i = 0, 1, ... in order */
        const double *a = A + (size_t)i * lda, xi = x[i];
        for (int j = 0; j < n; j++)
            y[j] = fma(a[j], xi, y[j]);
    }
}

LA_INLINE void ger_body(int m, int n, double alpha, const double *x, const double *y, double *A,
                        int lda)
{
    for (int i = 0; i < m; i++) {
        double *a = A + (size_t)i * lda;
        const double t = alpha * x[i];
        for (int j = 0; j < n; j++)
            a[j] = fma(t, y[j], a[j]);
    }
}

#ifdef LA_FMA_CLONES
LA_FMA_TARGET static void linear_fma(int n, int out, int in, const double *X, int ldx,
                                     const double *W, int ldw, double beta, double *Y, int ldy)
{
    linear_body(n, out, in, X, ldx, W, ldw, beta, Y, ldy);
}
LA_FMA_TARGET static void linear_err_fma(int n, int out, int in, const double *X, int ldx,
                                         const double *EX, int ldex, const double *W,
                                         const double *Wabs, int ldw, double *Y, int ldy,
                                         double *EY, int ldey)
{
    linear_err_body(n, out, in, X, ldx, EX, ldex, W, Wabs, ldw, Y, ldy, EY, ldey);
}
LA_FMA_TARGET static void gemm_fma(int m, int n, int k, const double *A, int lda, const double *B,
                                   int ldb, double beta, double *C, int ldc, bool skip_zero)
{
    gemm_body(m, n, k, A, lda, B, ldb, beta, C, ldc, skip_zero);
}
LA_FMA_TARGET static void gemv_fma(bool trans, int m, int n, const double *A, int lda,
                                   const double *x, double *y)
{
    gemv_body(trans, m, n, A, lda, x, y);
}
LA_FMA_TARGET static void ger_fma(int m, int n, double alpha, const double *x, const double *y,
                                  double *A, int lda)
{
    ger_body(m, n, alpha, x, y, A, lda);
}
/* AVX-512: the same body once more, eight lanes wide */
static bool la_has_avx512(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && la_has_fma();
}
#ifdef __clang__
#define LA_AVX512_TARGET __attribute__((target("avx512f,avx2,fma")))
#else /* GCC's default tuning would keep 256-bit vectors */
#define LA_AVX512_TARGET __attribute__((target("avx512f,avx2,fma,prefer-vector-width=512")))
#endif
LA_AVX512_TARGET
static void gemm_avx512(int m, int n, int k, const double *A, int lda, const double *B, int ldb,
                        double beta, double *C, int ldc, bool skip_zero)
{
    gemm_body(m, n, k, A, lda, B, ldb, beta, C, ldc, skip_zero);
}
#define LA_DISPATCH(fast, plain) do { if (la_has_fma()) fast; else plain; } while (0)
#else
#define LA_DISPATCH(fast, plain) plain
#endif

void la_linear_f64(int n, int out, int in, const double *X, int ldx, const double *W, int ldw,
                     double beta, double *Y, int ldy)
{
    LA_DISPATCH(linear_fma(n, out, in, X, ldx, W, ldw, beta, Y, ldy),
                linear_body(n, out, in, X, ldx, W, ldw, beta, Y, ldy));
}

void la_linear_err_f64(int n, int out, int in, const double *X, int ldx, const double *EX,
                       int ldex, const double *W, const double *Wabs, int ldw, double *Y, int ldy,
                       double *EY, int ldey)
{
    LA_DISPATCH(linear_err_fma(n, out, in, X, ldx, EX, ldex, W, Wabs, ldw, Y, ldy, EY, ldey),
                linear_err_body(n, out, in, X, ldx, EX, ldex, W, Wabs, ldw, Y, ldy, EY, ldey));
}

/* Leaving out zero terms of A (convolutions' dense matrices are mostly zeros) is exact
 * when C starts from +0 and B is finite (gemm_body). */
static bool gemm_may_skip(int n, int k, const double *B, int ldb, double beta)
{
    if (beta != 0.0)
        return false;
    for (int p = 0; p < k; p++)
        for (int j = 0; j < n; j++)
            if (!isfinite(B[(size_t)p * ldb + j]))
                return false;
    return true;
}

void la_gemm_f64(int m, int n, int k, const double *A, int lda, const double *B, int ldb,
                   double beta, double *C, int ldc)
{
    bool skip = gemm_may_skip(n, k, B, ldb, beta);
#ifdef LA_FMA_CLONES
    if (la_has_avx512()) {
        gemm_avx512(m, n, k, A, lda, B, ldb, beta, C, ldc, skip);
        return;
    }
#endif
    LA_DISPATCH(gemm_fma(m, n, k, A, lda, B, ldb, beta, C, ldc, skip),
                gemm_body(m, n, k, A, lda, B, ldb, beta, C, ldc, skip));
}

void la_gemv_f64(bool trans, int m, int n, const double *A, int lda, const double *x, double *y)
{
    LA_DISPATCH(gemv_fma(trans, m, n, A, lda, x, y), gemv_body(trans, m, n, A, lda, x, y));
}

void la_ger_f64(int m, int n, double alpha, const double *x, const double *y, double *A, int lda)
{
    LA_DISPATCH(ger_fma(m, n, alpha, x, y, A, lda), ger_body(m, n, alpha, x, y, A, lda));
}

/* ---- singular values -------------------------------------------------------------------- */

int la_singular_values(int rows, int cols, const double *A, double *sv, double *work)
{
    /* Work on B with n = min(rows, cols) columns of length m = max(rows, cols), stored
     * column by column (B = A if rows >= cols, else A^T): its singular values are A's. */
    const bool tr = rows < cols;
    const int m = tr ? cols : rows, n = tr ? rows : cols;
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++)
            work[(size_t)j * m + i] = tr ? A[(size_t)j * cols + i] : A[(size_t)i * cols + j];
    int sweeps = -1;
    for (int sweep = 1; sweep <= 60; sweep++) {
        int rotated = 0;
        for (int p = 0; p < n - 1; p++)
            for (int q = p + 1; q < n; q++) {
                double *bp = work + (size_t)p * m, *bq = work + (size_t)q * m;
                double al = 0.0, be = 0.0, ga = 0.0;
                for (int i = 0; i < m; i++) {
                    al += bp[i] * bp[i];
                    be += bq[i] * bq[i];
                    ga += bp[i] * bq[i];
                }
                if (!isfinite(al + be + ga))
                    goto done;
                if (fabs(ga) <= 4.0 * DBL_EPSILON * sqrt(al * be) || ga == 0.0)
                    continue;
                rotated = 1;
                double zeta = (be - al) / (2.0 * ga);
                double t = (zeta >= 0 ? 1.0 : -1.0) / (fabs(zeta) + sqrt(1.0 + zeta * zeta));
                double c = 1.0 / sqrt(1.0 + t * t), s = c * t;
                for (int i = 0; i < m; i++) {
                    double u = bp[i], v = bq[i];
                    bp[i] = c * u - s * v;
                    bq[i] = s * u + c * v;
                }
            }
        if (!rotated) {
            sweeps = sweep;
            break;
        }
    }
done:
    for (int j = 0; j < n; j++) {
        double s2 = 0.0;
        for (int i = 0; i < m; i++)
            s2 += work[(size_t)j * m + i] * work[(size_t)j * m + i];
        sv[j] = sqrt(s2);
    }
    for (int i = 1; i < n; i++) /* insertion sort, descending */
        for (int j = i; j > 0 && sv[j] > sv[j - 1]; j--) {
            double t = sv[j];
            sv[j] = sv[j - 1];
            sv[j - 1] = t;
        }
    return sweeps;
}

size_t la_norm2_upper_work(int rows, int cols)
{
    size_t n = (size_t)(rows < cols ? rows : cols);
    size_t jac = (size_t)rows * cols + n;
    size_t gram = 2 * n * n + (size_t)rows * cols;
    return (jac > gram ? jac : gram) + 1;
}

/* G (n x n, n = min(rows, cols)) = A^T A when rows >= cols, else A A^T; each element
 * accumulates its products in index order with fma (through la_gemm_f64 on a transposed
 * copy T of A, rows * cols doubles). */
static void gram0(int rows, int cols, const double *A, double *G, double *T)
{
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++)
            T[(size_t)c * rows + r] = A[(size_t)r * cols + c];
    if (rows >= cols)
        la_gemm_f64(cols, cols, rows, T, rows, A, cols, 0.0, G, cols);
    else
        la_gemm_f64(rows, rows, cols, A, cols, T, rows, 0.0, G, rows);
}

static double frob(size_t n, const double *a)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += a[i] * a[i];
    return sqrt(s);
}

double la_norm2_upper(int rows, int cols, const double *A, double *work)
{
    return la_norm2_upper_until(rows, cols, A, work, 0.0);
}

double la_norm2_upper_until(int rows, int cols, const double *A, double *work, double enough)
{
    const int n = rows < cols ? rows : cols;
    const double margin = 1.0 + 16.0 * (double)(rows > cols ? rows : cols) * DBL_EPSILON;
    if (n <= 0)
        return 0.0;
    for (size_t i = 0; i < (size_t)rows * cols; i++)
        if (!isfinite(A[i]))
            return INFINITY;
    if (n <= LA_JACOBI_MAX) {
        double *sv = work + (size_t)rows * cols;
        if (la_singular_values(rows, cols, A, sv, work) < 0)
            return INFINITY;
        return sv[0] * margin;
    }
    /* Gram iteration on the smaller side.  G_0 = A^T A (or A A^T), scaled to unit
     * Frobenius norm with log-scale bookkeeping: ||A||_2^(2^(t+1)) <= ||G_t||_F. */
    double *G = work, *H = work + (size_t)n * n;
    gram0(rows, cols, A, G, work + 2 * (size_t)n * n);
    double logscale = 0.0; /* log of the factor divided out of G_t so far, weighted */
    double f = frob((size_t)n * n, G);
    if (!(f > 0.0))
        return 0.0;
    /* log ||A||_2 <= (log ||G_t||_F + L_t) / 2^(t+1), with L_t the accumulated scales. */
    double best = 0.5 * em_log(f);
    for (int t = 1; t <= 40; t++) {
        double fn = frob((size_t)n * n, G);
        for (size_t i = 0; i < (size_t)n * n; i++)
            G[i] /= fn;
        logscale = 2.0 * (logscale + em_log(fn)); /* G_{t} = (G_{t-1}/fn)^2: scales square */
        la_gemm_f64(n, n, n, G, n, G, n, 0.0, H, n);
        double *tmp = G;
        G = H, H = tmp;
        double fnew = frob((size_t)n * n, G);
        double bound = (em_log(fnew) + logscale) / ldexp(1.0, t + 1);
        if (!isfinite(bound) || bound >= best - 1e-13) {
            if (isfinite(bound) && bound < best)
                best = bound;
            break;
        }
        best = bound;
        if (enough > 0.0 && em_exp(best) * margin <= enough)
            break;
    }
    return em_exp(best) * margin;
}
