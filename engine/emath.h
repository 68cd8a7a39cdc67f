/*
 * emath.h — the engine's own deterministic elementary functions (exp, log, tanh, erf,
 * atan, sin/cos of 2*pi*u, ...), header-only, `static inline`.
 *
 * Guarantee: given IEEE-754 binary32/binary64 arithmetic with round-to-nearest-even and a
 * correctly rounded fused multiply-add, every function returns the SAME BITS on every
 * machine, whatever the libm/glibc variant, and identical bits between scalar code and
 * auto-vectorized (SSE2/AVX2/AVX-512) code.  To that end the code uses only + - * / ,
 * comparisons and selects, conversions, integer bit manipulation (memcpy) and
 * __builtin_fma (exact single rounding: vfmadd when compiled with -mfma, glibc's correctly
 * rounded fma() otherwise), with a fixed evaluation order, no libm call, no long double and
 * no table.  The compiler must not fuse a*b+c by itself: compile with -ffp-contract=off
 * (the default for -std=c11; NOT the default for -std=gnu11 with -mfma/-march=native).
 * -ffast-math / -Ofast / -freciprocal-math / -fassociative-math break the guarantee.
 * Assumes the default rounding mode and no flush-to-zero/denormals-are-zero (MXCSR FTZ/DAZ).
 *
 * The float functions but em_tanhf_fast compute internally in double (one float->double
 * conversion, a short double kernel, one rounding to float), so their error is a hair above
 * 0.5 ulp; em_tanhf_fast and em_expf_fast compute in float (within a few ulp, at a
 * fraction of the cost).  They are
 * branch-free and GCC -O3 -mavx2 -mfma (or -mavx512f) vectorizes loops that call them.
 * Subnormal inputs and outputs are handled (gradual underflow, not flushed).
 *
 * Speed: build with -mfma (or -march=x86-64-v3 / native).  Without it every __builtin_fma
 * is a call to libm's fma() (still correctly rounded, so the SAME bits) and the functions
 * are ~25x slower and do not vectorize.  Measured (this repo's CI box, AVX2+FMA, vectorized
 * loop): em_expf 3.2 ns/elem vs glibc expf 7.2; em_tanhf 5.7 vs tanhf 24.9; em_logf 4.2 vs
 * logf 6.9; em_erff 14 vs erff 25; without -mfma em_expf is ~80 ns/elem.
 *
 * Accuracy (max error measured by tests/unit/test_emath.c, which prints it):
 *   float  em_expf em_expm1f em_logf em_log1pf em_tanhf em_sigmoidf em_atanf em_erff
 *          em_softplusf: 0.500 ulp over every 64th float bit pattern (correctly
 *          rounded but for rare double-rounding cases; bound 0.5 ulp + 2^-27);
 *   float  em_tanhf_fast (float arithmetic only, the kernels' tanh): 2.42 ulp over every
 *          float (2.28 over test_emath.c's sweep); em_expf_fast (float arithmetic only, the
 *          splines' softmax): 0.979 ulp over every float;
 *   double em_exp 0.75, em_expm1 1.8, em_log 0.81, em_log1p 0.80, em_tanh 1.9,
 *          em_atan 0.78, em_erf 0.90, em_sincos_2pi 1.04 ulp;
 *          em_pow 1.2 ulp while |y log x| <= 20, up to ~30 ulp near overflow/underflow
 *          (|y log x| ~ 700): see its comment.
 * clang: any -ffp-contract but "fast" is fine (the pragma below turns contraction off);
 * -ffp-contract=fast ignores it.
 *
 * Coefficients of em_log/em_log1p (Lg1..7), em_atan (aT) and em_erf (pp, qq, pa, qa, ra,
 * sa, rb, sb) are fdlibm's: "Copyright (C) 1993 by Sun Microsystems, Inc. All rights
 * reserved.  Developed at SunPro, a Sun Microsystems, Inc. business.  Permission to use,
 * copy, modify, and distribute this software is freely granted, provided that this notice
 * is preserved."  The exp/expm1/sin/cos polynomials are Taylor series on reduced ranges.
 */
#ifndef INNSERVE_EMATH_H
#define INNSERVE_EMATH_H

#include <stdint.h>
#include <string.h>

/* Always inlined: a call left in a loop would stop its vectorization. */
#define EM_INLINE static inline __attribute__((always_inline))
/* clang contracts a*b+c within an expression by default (-ffp-contract=on), even in ISO
 * mode: switch that off inside every function body here.  GCC has no such pragma: GCC
 * users need -ffp-contract=off (the default for -std=c11, not for -std=gnu11). */
#ifdef __clang__
#define EM__NOCONTRACT _Pragma("clang fp contract(off)")
#else
#define EM__NOCONTRACT
#endif

/* ---- bit casts and small helpers -------------------------------------------------- */

EM_INLINE uint64_t em__bits(double x)
{
    EM__NOCONTRACT
    uint64_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}
EM_INLINE double em__dbl(uint64_t u)
{
    EM__NOCONTRACT
    double x;
    memcpy(&x, &u, sizeof x);
    return x;
}
EM_INLINE double em__fma(double a, double b, double c) { return __builtin_fma(a, b, c); }

#define EM__INF (__builtin_inf())
#define EM__NAN (__builtin_nan(""))
#define EM__MAGIC 0x1.8p52              /* adding it rounds |v| < 2^51 to an integer */
#define EM__MAGIC_BITS 0x4338000000000000ULL
#define EM__LN2HI 0x1.62e42fefa39efp-1  /* double nearest ln 2 */
#define EM__LN2LO 0x1.abc9e3b39803fp-56 /* ln 2 - EM__LN2HI */
#define EM__LOG2E 0x1.71547652b82fep+0
#define EM__SIGN 0x8000000000000000ULL

/* |x| and copysign(y, x) by bits (sign of -0 and NaN kept). */
EM_INLINE double em__fabs(double x) { return em__dbl(em__bits(x) & ~EM__SIGN); }
EM_INLINE double em__copysign(double y, double x)
{
    EM__NOCONTRACT
    return em__dbl((em__bits(y) & ~EM__SIGN) | (em__bits(x) & EM__SIGN));
}

/* c ? a : b through a bit mask (c is 0 or 1): never a branch, whatever the optimizer
 * does with chains of selects. */
EM_INLINE double em__sel(int c, double a, double b)
{
    EM__NOCONTRACT
    uint64_t m = (uint64_t)0 - (uint64_t)c;
    return em__dbl((em__bits(a) & m) | (em__bits(b) & ~m));
}

/* 2^k as a double for an integer k in [-1022, 1023] (unsigned arithmetic: no UB). */
EM_INLINE double em__pow2i(uint64_t k) { return em__dbl((k + 1023) << 52); }

/* Reduction for exp: x = k*ln2 + r, |r| <= ~0.3466; returns r and k (two's complement in
 * a uint64) and k as a double.  x must be finite and |x| < 2^40 (NaN gives garbage k and
 * NaN r, which the callers propagate). */
EM_INLINE double em__exp_reduce(double x, uint64_t *k, double *kd)
{
    EM__NOCONTRACT
    double t = em__fma(x, EM__LOG2E, EM__MAGIC);
    *k = em__bits(t) - EM__MAGIC_BITS;
    *kd = t - EM__MAGIC;
    double r = em__fma(-*kd, EM__LN2HI, x); /* exact */
    return em__fma(-*kd, EM__LN2LO, r);
}

/* Taylor series of exp(r) - 1 - r divided by r^2, i.e. 1/2 + r/6 + ... + r^11/13!,
 * on |r| <= 0.3466 (truncation error < 2^-57 relative to exp(r)). */
EM_INLINE double em__expm1_q(double r)
{
    EM__NOCONTRACT
    double q = 0x1.6124613a86d09p-33;
    q = em__fma(q, r, 0x1.1eed8eff8d898p-29);
    q = em__fma(q, r, 0x1.ae64567f544e4p-26);
    q = em__fma(q, r, 0x1.27e4fb7789f5cp-22);
    q = em__fma(q, r, 0x1.71de3a556c734p-19);
    q = em__fma(q, r, 0x1.a01a01a01a01ap-16);
    q = em__fma(q, r, 0x1.a01a01a01a01ap-13);
    q = em__fma(q, r, 0x1.6c16c16c16c17p-10);
    q = em__fma(q, r, 0x1.1111111111111p-7);
    q = em__fma(q, r, 0x1.5555555555555p-5);
    q = em__fma(q, r, 0x1.5555555555555p-3);
    return em__fma(q, r, 0.5);
}

/* ---- double functions ------------------------------------------------------------- */

/* e^x.  Overflow -> +inf (x > 709.78), gradual underflow to subnormals, -> 0 below
 * -745.13; NaN -> NaN. */
EM_INLINE double em_exp(double x)
{
    EM__NOCONTRACT
    double xc = x > 709.8 ? 709.8 : x;
    xc = xc < -745.2 ? -745.2 : xc;
    uint64_t k;
    double kd, r = em__exp_reduce(xc, &k, &kd);
    double h = 1.0 + r, hl = (1.0 - h) + r;                 /* 1 + r = h + hl exactly */
    double p = h + em__fma(r * r, em__expm1_q(r), hl);      /* 1 + r + r^2 q */
    /* 2^k in two factors (k in [-1075, 1024]), the second multiply rounds once. */
    uint64_t e1 = (k + 2046) >> 1, e2 = k + 2046 - e1;
    double s1 = em__dbl(e1 << 52), s2 = em__dbl(e2 << 52);
    return p * s1 * s2;
}

/* e^x - 1, accurate near 0.  -> -1 for x < -37.4, +inf above 709.78, NaN -> NaN. */
EM_INLINE double em_expm1(double x)
{
    EM__NOCONTRACT
    double xc = x > 709.8 ? 709.8 : x;
    xc = xc < -40.0 ? -40.0 : xc;
    uint64_t k;
    double kd, r = em__exp_reduce(xc, &k, &kd);
    double p = em__fma(r * r, em__expm1_q(r), r); /* expm1(r) */
    /* k in [-58, 1024]; 2^1024 is done as 2^1023 * 2. */
    uint64_t big = k == 1024;
    double t = em__pow2i(k - big);
    double y = em__fma(t, p, t - 1.0);
    return big ? y * 2.0 : y;
}

/* log(1 + f) - f + f^2/2 kernel of fdlibm: returns f - (hfsq - s*(hfsq + R)) parts.
 * Given f in [sqrt(1/2) - 1, sqrt(2) - 1]: s = f/(2+f), R = z*(Lg1 + ... + z^6 Lg7). */
EM_INLINE double em__log_R(double z)
{
    EM__NOCONTRACT
    double R = 1.479819860511658591e-01;   /* Lg7 */
    R = em__fma(R, z, 1.531383769920937332e-01);
    R = em__fma(R, z, 1.818357216161805012e-01);
    R = em__fma(R, z, 2.222219843214978396e-01);
    R = em__fma(R, z, 2.857142874366239149e-01);
    R = em__fma(R, z, 3.999999999940941908e-01);
    R = em__fma(R, z, 6.666666666666735130e-01); /* Lg1 */
    return z * R;
}
#define EM__LN2HI_F 0x1.62e42feep-1          /* fdlibm ln2_hi: k*ln2_hi exact, |k| < 2^11 */
#define EM__LN2LO_F 0x1.a39ef35793c76p-33    /* fdlibm ln2_lo */
#define EM__SQRTH_BITS 0x3fe6a09e667f3bcdULL /* sqrt(1/2) */

/* Split a positive finite normal y as y = 2^k * m, m in [sqrt(1/2), sqrt(2)). */
EM_INLINE double em__log_split(double y, uint64_t *k)
{
    EM__NOCONTRACT
    uint64_t iy = em__bits(y);
    uint64_t u = iy + (0x800ULL << 52) - EM__SQRTH_BITS; /* no wrap for y >= 0 */
    *k = (u >> 52) - 2048;
    return em__dbl(iy - (*k << 52));
}
/* An integer held in a uint64 (two's complement, |k| < 2^51) as a double. */
EM_INLINE double em__i2d(uint64_t k) { return em__dbl(EM__MAGIC_BITS + k) - EM__MAGIC; }

/* Natural logarithm.  log(0) = -inf, log(x < 0) = NaN, log(+inf) = +inf, NaN -> NaN;
 * subnormal x handled. */
EM_INLINE double em_log(double x)
{
    EM__NOCONTRACT
    int sub = x < 0x1p-1022;
    double xs = sub ? x * 0x1p54 : x;
    uint64_t k;
    double m = em__log_split(xs, &k);
    double kd = em__i2d(k) - (sub ? 54.0 : 0.0);
    double f = m - 1.0, hfsq = 0.5 * f * f, s = f / (2.0 + f);
    double R = em__log_R(s * s);
    double y = kd * EM__LN2HI_F - ((hfsq - (s * (hfsq + R) + kd * EM__LN2LO_F)) - f);
    y = x > 0 ? y : (x == 0 ? -EM__INF : EM__NAN);
    return x == EM__INF ? x : y;
}

/* log(1 + x), accurate near 0.  log1p(-1) = -inf, x < -1 -> NaN, +inf -> +inf. */
EM_INLINE double em_log1p(double x)
{
    EM__NOCONTRACT
    double u = 1.0 + x;
    uint64_t k;
    double m = em__log_split(u, &k);
    int k0 = k == 0;
    /* c = (1 + x) - u exactly (Fast2Sum), then the correction log(1+x) - log(u) ~ c/u. */
    double c = x >= 1.0 ? 1.0 - (u - x) : x - (u - 1.0);
    c = k0 ? 0.0 : c / u;
    double f = k0 ? x : m - 1.0;
    double kd = em__i2d(k);
    double hfsq = 0.5 * f * f, s = f / (2.0 + f);
    double R = em__log_R(s * s);
    double y = kd * EM__LN2HI_F - ((hfsq - (s * (hfsq + R) + (kd * EM__LN2LO_F + c))) - f);
    y = x > -1.0 ? y : (x == -1.0 ? -EM__INF : EM__NAN);
    return x == EM__INF ? x : y;
}

/* tanh(x) = sign(x) * t / (t + 2), t = expm1(2|x|); exactly +-1 for |x| > 19.1. */
EM_INLINE double em_tanh(double x)
{
    EM__NOCONTRACT
    double a = em__fabs(x);
    a = a > 20.0 ? 20.0 : a;
    double t = em_expm1(2.0 * a);
    double d = t + 2.0, dl = (2.0 - d) + t; /* t + 2 = d + dl exactly (Fast2Sum with */
    dl = t > 2.0 ? (t - d) + 2.0 : dl;      /* the larger operand first) */
    double q = t / d;
    q = q + (em__fma(-q, d, t) - q * dl) / d; /* one correction step: t/(t+2) to ~0.5 ulp */
    return em__copysign(q, x);
}

/* sin(2*pi*u) and cos(2*pi*u), meant for u in (0, 1] (Box-Muller); valid for
 * |u| < 2^49.  The reduction is exact: k = rint(4u), f = u - k/4, |f| <= 1/8; then
 * Taylor polynomials in f (coefficients (2 pi)^n / n!) on |2 pi f| <= pi/4. */
EM_INLINE void em_sincos_2pi(double u, double *s, double *c)
{
    EM__NOCONTRACT
    double t = em__fma(u, 4.0, EM__MAGIC);
    uint64_t q = em__bits(t);
    double f = u - (t - EM__MAGIC) * 0.25; /* exact */
    double z = f * f;
    double ps = 0x1.aaec32af93359p-4;
    ps = em__fma(ps, z, -0x1.6fadb9f155744p-1);
    ps = em__fma(ps, z, 0x1.e8f434d018d63p+1);
    ps = em__fma(ps, z, -0x1.e3074fde8871fp+3);
    ps = em__fma(ps, z, 0x1.50783487ee782p+5);
    ps = em__fma(ps, z, -0x1.32d2cce62bd86p+6);
    ps = em__fma(ps, z, 0x1.466bc6775aae2p+6);
    ps = em__fma(ps, z, -0x1.4abbce625be53p+5);
    double sn = em__fma(0x1.921fb54442d18p+2, f, em__fma(0x1.1a62633145c07p-52, f, (f * z) * ps));
    double pc = -0x1.2a0c591af8314p-5;
    pc = em__fma(pc, z, 0x1.20c62c2f2d7f5p-2);
    pc = em__fma(pc, z, -0x1.b6e24f44b128fp+0);
    pc = em__fma(pc, z, 0x1.f9d38a3763cc3p+2);
    pc = em__fma(pc, z, -0x1.a6d1f2a204a8cp+4);
    pc = em__fma(pc, z, 0x1.e1f506891babbp+5);
    pc = em__fma(pc, z, -0x1.55d3c7e3cbffap+6);
    pc = em__fma(pc, z, 0x1.03c1f081b5ac4p+6);
    pc = em__fma(pc, z, -0x1.3bd3cc9be45dep+4);
    double cs = em__fma(pc, z, 1.0);
    /* quadrant q = k mod 4: (s, c) -> (s, c), (c, -s), (-s, -c), (-c, s) */
    uint64_t odd = q & 1;
    double so = odd ? cs : sn, co = odd ? sn : cs;
    *s = em__dbl(em__bits(so) ^ ((q & 2) << 62));
    *c = em__dbl(em__bits(co) ^ (((q + 1) & 2) << 62));
}

/* atan(x) (fdlibm's reduction, made branch-free): |x| is mapped into |t| <= 7/16 by
 * one of atan(1/2), atan(1), atan(3/2), atan(inf) offsets.  atan(+-inf) = +-pi/2. */
EM_INLINE double em_atan(double x)
{
    EM__NOCONTRACT
    double a = em__fabs(x);
    int i0 = a < 0.4375, i1 = a < 0.6875, i2 = a < 1.1875, i3 = a < 2.4375;
    /* t = num / den: a/1, (2a-1)/(2+a), (a-1)/(a+1), (a-1.5)/(1+1.5a), -1/a */
    double num = em__sel(i3, a - 1.5, -1.0), den = em__sel(i3, 1.0 + 1.5 * a, a);
    double hi = em__sel(i3, 9.82793723247329054082e-01, 1.57079632679489655800e+00);
    double lo = em__sel(i3, 1.39033110312309984516e-17, 6.12323399573676603587e-17);
    num = em__sel(i2, a - 1.0, num), den = em__sel(i2, a + 1.0, den);
    hi = em__sel(i2, 7.85398163397448278999e-01, hi);
    lo = em__sel(i2, 3.06161699786838301793e-17, lo);
    num = em__sel(i1, 2.0 * a - 1.0, num), den = em__sel(i1, 2.0 + a, den);
    hi = em__sel(i1, 4.63647609000806093515e-01, hi);
    lo = em__sel(i1, 2.26987774529616870924e-17, lo);
    num = em__sel(i0, a, num), den = em__sel(i0, 1.0, den);
    hi = em__sel(i0, 0.0, hi), lo = em__sel(i0, 0.0, lo);
    double t = num / den;
    double z = t * t, w = z * z;
    double s1 = 1.62858201153657823623e-02;
    s1 = em__fma(s1, w, 4.97687799461593236017e-02);
    s1 = em__fma(s1, w, 6.66107313738753120669e-02);
    s1 = em__fma(s1, w, 9.09088713343650656196e-02);
    s1 = em__fma(s1, w, 1.42857142725034663711e-01);
    s1 = em__fma(s1, w, 3.33333333333329318027e-01);
    s1 = z * s1;
    double s2 = -3.65315727442169155270e-02;
    s2 = em__fma(s2, w, -5.83357013379057348645e-02);
    s2 = em__fma(s2, w, -7.69187620504482999495e-02);
    s2 = em__fma(s2, w, -1.11111104054623557880e-01);
    s2 = em__fma(s2, w, -1.99999999998764832476e-01);
    s2 = w * s2;
    double y = hi - ((t * (s1 + s2) - lo) - t);
    return em__copysign(y, x);
}

/* erf(x) (fdlibm's four rational approximations, evaluated two at a time with selected
 * coefficients, branch-free).  Exactly +-1 for |x| >= 6; NaN -> NaN. */
EM_INLINE double em_erf(double x)
{
    EM__NOCONTRACT
    double a = em__fabs(x);
    int r1 = a < 0.84375, r3 = a < 2.857142857142857;
    /* |x| < 1.25: r1 ? x + x*P(z)/Q(z), z = x^2 : erx + P(s)/Q(s), s = |x| - 1 */
    double v = em__sel(r1, a * a, a - 1.0);
    double P = em__sel(r1, 0.0, -2.16637559486879084300e-03);
    P = em__fma(P, v, em__sel(r1, 0.0, 3.54783043256182359371e-02));
    P = em__fma(P, v, em__sel(r1, -2.37630166566501626084e-05, -1.10894694282396677476e-01));
    P = em__fma(P, v, em__sel(r1, -5.77027029648944159157e-03, 3.18346619901161753674e-01));
    P = em__fma(P, v, em__sel(r1, -2.84817495755985104766e-02, -3.72207876035701323847e-01));
    P = em__fma(P, v, em__sel(r1, -3.25042107247001499370e-01, 4.14856118683748331666e-01));
    P = em__fma(P, v, em__sel(r1, 1.28379167095512558561e-01, -2.36211856075265944077e-03));
    double Q = em__sel(r1, 0.0, 1.19844998467991074170e-02);
    Q = em__fma(Q, v, em__sel(r1, -3.96022827877536812320e-06, 1.36370839120290507362e-02));
    Q = em__fma(Q, v, em__sel(r1, 1.32494738004321644526e-04, 1.26171219808761642112e-01));
    Q = em__fma(Q, v, em__sel(r1, 5.08130628187576562776e-03, 7.18286544141962662868e-02));
    Q = em__fma(Q, v, em__sel(r1, 6.50222499887672944485e-02, 5.40397917702171048937e-01));
    Q = em__fma(Q, v, em__sel(r1, 3.97917223959155352819e-01, 1.06420880400844228286e-01));
    Q = em__fma(Q, v, 1.0);
    double pq = P / Q;
    double ylo = em__sel(r1, a + a * pq, 8.45062911510467529297e-01 + pq);
    /* 1.25 <= |x| < 6: 1 - exp(-x^2 - 0.5625 + R(w)/S(w)) / |x|, w = 1/x^2 */
    double x2 = a * a, x2l = em__fma(a, a, -x2); /* x^2 = x2 + x2l exactly */
    double w = 1.0 / x2;
    double R = em__sel(r3, -9.81432934416914548592e+00, 0.0);
    R = em__fma(R, w, em__sel(r3, -8.12874355063065934246e+01, -4.83519191608651397019e+02));
    R = em__fma(R, w, em__sel(r3, -1.84605092906711035994e+02, -1.02509513161107724954e+03));
    R = em__fma(R, w, em__sel(r3, -1.62396669462573470355e+02, -6.37566443368389627722e+02));
    R = em__fma(R, w, em__sel(r3, -6.23753324503260060396e+01, -1.60636384855821916062e+02));
    R = em__fma(R, w, em__sel(r3, -1.05586262253232909814e+01, -1.77579549177547519889e+01));
    R = em__fma(R, w, em__sel(r3, -6.93858572707181764372e-01, -7.99283237680523006574e-01));
    R = em__fma(R, w, em__sel(r3, -9.86494403484714822705e-03, -9.86494292470009928597e-03));
    double S = em__sel(r3, -6.04244152148580987438e-02, 0.0);
    S = em__fma(S, w, em__sel(r3, 6.57024977031928170135e+00, -2.24409524465858183362e+01));
    S = em__fma(S, w, em__sel(r3, 1.08635005541779435134e+02, 4.74528541206955367215e+02));
    S = em__fma(S, w, em__sel(r3, 4.29008140027567833386e+02, 2.55305040643316442583e+03));
    S = em__fma(S, w, em__sel(r3, 6.45387271733267880336e+02, 3.19985821950859553908e+03));
    S = em__fma(S, w, em__sel(r3, 4.34565877475229228821e+02, 1.53672958608443695994e+03));
    S = em__fma(S, w, em__sel(r3, 1.37657754143519042600e+02, 3.25792512996573918826e+02));
    S = em__fma(S, w, em__sel(r3, 1.96512716674392571292e+01, 3.03380607434824582924e+01));
    S = em__fma(S, w, 1.0);
    double e = em_exp((-x2 - 0.5625) + (R / S - x2l));
    double yhi = 1.0 - e / a;
    double y = em__sel(a < 1.25, ylo, yhi);
    y = em__sel(a >= 6.0, 1.0, y);
    return em__copysign(y, x);
}

/* x^y for x > 0 (and the C special cases: x == 0, +inf, y == 0, x == 1; x < 0 -> NaN).
 * log x is carried in double-double (~2^-58 relative), y*log x as an exact product, so
 * the error is about 1 ulp + |y log x| * 2^-58 relative: measured 1.2 ulp while
 * |y log x| <= 20, growing to ~18-30 ulp for results near the overflow/underflow limits
 * (|y log x| ~ 700).  Fine for densities; not a correctly rounded pow. */
EM_INLINE double em_pow(double x, double y)
{
    EM__NOCONTRACT
    int sub = x < 0x1p-1022;
    double xs = sub ? x * 0x1p54 : x;
    uint64_t k;
    double m = em__log_split(xs, &k);
    double kd = em__i2d(k) - (sub ? 54.0 : 0.0);
    double f = m - 1.0;
    double dh = 2.0 + f, dl = f - (dh - 2.0); /* 2 + f = dh + dl exactly */
    double sh = f / dh;
    double sl = (em__fma(-sh, dh, f) - sh * dl) / dh; /* s = f/(2+f) = sh + sl */
    double R = em__log_R(sh * sh);                     /* log1p(f) = 2s + s R(s^2) */
    double ta = kd * EM__LN2HI_F, tb = 2.0 * sh;
    double hi = ta + tb, bb = hi - ta;
    double lo = ((ta - (hi - bb)) + (tb - bb)) + (2.0 * sl + (sh * R + kd * EM__LN2LO_F));
    double L = hi + lo, Ll = lo - (L - hi); /* log x = L + Ll */
    double ph = y * L;
    double pl = em__fma(y, L, -ph) + y * Ll;
    pl = pl - pl == 0.0 ? pl : 0.0; /* y = +-inf */
    double e = em_exp(ph);
    double r = e == EM__INF ? e : em__fma(e, pl, e);
    r = x > 0 ? r : x == 0 ? (y < 0 ? EM__INF : 0.0) : EM__NAN;
    r = x == EM__INF ? (y < 0 ? 0.0 : EM__INF) : r;
    return (y == 0.0 || x == 1.0) ? 1.0 : r;
}

/* ---- float functions (double kernels, one final rounding) ------------------------- */

EM_INLINE float em_expf(float x) { return (float)em_exp((double)x); }
EM_INLINE float em_expm1f(float x) { return (float)em_expm1((double)x); }
EM_INLINE float em_logf(float x) { return (float)em_log((double)x); }
EM_INLINE float em_log1pf(float x) { return (float)em_log1p((double)x); }
EM_INLINE float em_tanhf(float x) { return (float)em_tanh((double)x); }
/* 1 / (1 + e^-x): exactly 0 below -103.98, exactly 1 above 17.33. */
EM_INLINE float em_sigmoidf(float x) { return (float)(1.0 / (1.0 + em_exp(-(double)x))); }

/* ---- float functions in float arithmetic (for the kernels' hot loops) -------------- */

EM_INLINE uint32_t em__fbits(float x)
{
    EM__NOCONTRACT
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}
EM_INLINE float em__flt(uint32_t u)
{
    EM__NOCONTRACT
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}
EM_INLINE float em__fmaf(float a, float b, float c) { return __builtin_fmaf(a, b, c); }

/* expm1(r) = r + r^2 P(r) for |r| <= ln2/2 (a minimax fit, float coefficients: 2^-28.8
 * relative), float operations only. */
EM_INLINE float em__expm1f_poly(float r)
{
    EM__NOCONTRACT
    float P = 0x1.a032bep-13f;
    P = em__fmaf(P, r, 0x1.6d71e6p-10f);
    P = em__fmaf(P, r, 0x1.11118ap-7f);
    P = em__fmaf(P, r, 0x1.5554b2p-5f);
    P = em__fmaf(P, r, 0x1.555554p-3f);
    P = em__fmaf(P, r, 0.5f);
    return em__fmaf(r * r, P, r);
}

/* e^x with float operations only (the kernels' and splines' vector exp): x = k ln2 + r,
 * |r| <= ln2/2, e^x = 2^k (1 + expm1(r)), 2^k applied as two factors so that results in
 * the subnormal range round once.  +inf above 88.73, gradual underflow, 0 below -103.98,
 * NaN -> NaN.  Max error in the header comment's table. */
EM_INLINE float em_expf_fast(float x)
{
    EM__NOCONTRACT
    float xc = x > 89.0f ? 89.0f : x;
    xc = xc < -104.0f ? -104.0f : xc;
    float kf = em__fmaf(xc, 0x1.715476p+0f, 0x1.8p23f);
    uint32_t k = em__fbits(kf) - 0x4b400000u;           /* -150 .. 129, two's complement */
    float kd = kf - 0x1.8p23f;
    float r = em__fmaf(-kd, 0x1.62e43p-1f, xc);
    r = em__fmaf(-kd, -0x1.05c61p-29f, r);
    float p = 1.0f + em__expm1f_poly(r);
    uint32_t e1 = (k + 254u) >> 1, e2 = k + 254u - e1;  /* biased exponents in [52, 192] */
    return p * em__flt(e1 << 23) * em__flt(e2 << 23);
}

/* tanh(x) with float operations only (no double), so a vector holds twice the lanes of
 * em_tanhf's double kernel: tanh|x| = q / (q + 2), q = expm1(2|x|) = 2^k (1 + p) - 1 with
 * 2|x| = k ln2 + r, |r| <= ln2/2, p = expm1(r) = r + r^2 P(r) (P of degree 5, a minimax
 * fit on that interval, float coefficients: 2^-28.8 relative), one fma for 2^k p + 2^k - 1
 * and one division.  Exactly +-1 for |x| > 9, x for tiny and subnormal x, sign of -0 kept,
 * NaN -> NaN.  Not correctly rounded: the max error tests/unit/test_emath.c measures over
 * every float is in its header comment's table. */
EM_INLINE float em_tanhf_fast(float x)
{
    EM__NOCONTRACT
    uint32_t sign = em__fbits(x) & 0x80000000u;
    float a0 = em__flt(em__fbits(x) & 0x7fffffffu);
    float a = a0 > 9.0f ? 9.0f : a0;
    float t2 = 2.0f * a;
    float kf = em__fmaf(t2, 0x1.715476p+0f, 0x1.8p23f); /* rint(2a / ln2) + 1.5 * 2^23 */
    uint32_t k = em__fbits(kf) - 0x4b400000u;           /* 0 .. 13 */
    float kd = kf - 0x1.8p23f;
    float r = em__fmaf(-kd, 0x1.62e43p-1f, t2);         /* ln2 = 0x1.62e43p-1 - 0x1.05c61p-29 */
    r = em__fmaf(-kd, -0x1.05c61p-29f, r);
    float p = em__expm1f_poly(r);
    float t = em__flt((k + 127u) << 23);
    float q = em__fmaf(t, p, t - 1.0f);
    float y = q / (q + 2.0f);
    y = a0 > 9.0f ? 1.0f : y;
    return em__flt(em__fbits(y) | sign);
}

EM_INLINE float em_atanf(float x) { return (float)em_atan((double)x); }
EM_INLINE float em_erff(float x) { return (float)em_erf((double)x); }
/* torch.nn.functional.softplus: x if beta*x > threshold, else log1p(exp(beta*x)) / beta
 * (beta*x formed in float as torch does; the rest in double as
 * max(t, 0) + log1p(exp(-|t|)), which cannot overflow). */
EM_INLINE float em_softplusf(float x, float beta, float threshold)
{
    EM__NOCONTRACT
    float bx = x * beta;
    double t = (double)bx;
    double sp = (t > 0 ? t : 0.0) + em_log1p(em_exp(-em__fabs(t)));
    float r = (float)(sp / (double)beta);
    return bx > threshold ? x : r;
}

/* Streaming log-sum-exp over terms l (none NaN): start with mx = -inf and s = 0, call
 * em_lse_add for each term in order, then em_lse_end gives log(sum exp l) (-inf when every
 * term is -inf).  s is the sum of exp(l - mx), rescaled whenever the maximum grows. */
EM_INLINE void em_lse_add(double *mx, double *s, double l)
{
    if (l > *mx) {
        *s = (*mx == -EM__INF ? 0.0 : *s * em_exp(*mx - l)) + 1.0;
        *mx = l;
    } else if (l > -EM__INF) {
        *s += em_exp(l - *mx);
    }
}

EM_INLINE double em_lse_end(double mx, double s)
{
    return mx == -EM__INF ? mx : mx + em_log(s);
}

#endif
