/*
 * fmt.c — shortest round-trip float32 printing (Ryu) and round-trip float64 printing
 * (Grisu2), plus the common layout of digits + exponent as a JSON number.
 *
 * Ryu: the float is m * 2^e; the interval of decimals that round to it is computed in
 * fixed point with 5^q tables (fmt_tables.h), then digits are removed while the interval
 * still contains a shorter number.  Grisu2: the double and its rounding boundaries are
 * scaled by a cached power of ten into 64-bit fixed point, and digits are generated until
 * they lie inside the (conservatively shrunk) interval.  Both write digits D and a decimal
 * exponent K (value = D * 10^K); layout() chooses fixed or scientific notation.
 */
#include "fmt.h"
#include "fmt_tables.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

/* ==== layout ================================================================================ */

/* digits (n chars, no leading zeros, n >= 1), value = digits * 10^k.  Fixed notation
 * for decimal exponents -5 .. 11, scientific otherwise; always shows a '.' in fixed
 * notation so the number reads as a float ("2.0"). */
static size_t layout(char *out, bool neg, const char *digits, int n, int k)
{
    char *p = out;
    if (neg)
        *p++ = '-';
    /* trim trailing zeros of the digit string */
    while (n > 1 && digits[n - 1] == '0') {
        n--;
        k++;
    }
    int pp = n + k;     /* position of the decimal point after the first pp digits */
    int sci = pp - 1;   /* scientific exponent */
    if (sci >= -5 && sci < 0) {
        *p++ = '0';
        *p++ = '.';
        for (int i = 0; i < -pp; i++)
            *p++ = '0';
        memcpy(p, digits, (size_t)n);
        p += n;
    } else if (sci >= 0 && sci < 12) {
        if (k >= 0) {
            memcpy(p, digits, (size_t)n);
            p += n;
            for (int i = 0; i < k; i++)
                *p++ = '0';
            *p++ = '.';
            *p++ = '0';
        } else {
            memcpy(p, digits, (size_t)pp);
            p += pp;
            *p++ = '.';
            memcpy(p, digits + pp, (size_t)(n - pp));
            p += n - pp;
        }
    } else {
        *p++ = digits[0];
        if (n > 1) {
            *p++ = '.';
            memcpy(p, digits + 1, (size_t)(n - 1));
            p += n - 1;
        }
        *p++ = 'e';
        int e = sci;
        if (e < 0) {
            *p++ = '-';
            e = -e;
        }
        if (e >= 100)
            *p++ = (char)('0' + e / 100);
        if (e >= 10)
            *p++ = (char)('0' + e / 10 % 10);
        *p++ = (char)('0' + e % 10);
    }
    return (size_t)(p - out);
}

static int utoa_digits(char *buf, uint64_t v)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (int i = 0; i < n; i++)
        buf[i] = tmp[n - 1 - i];
    return n;
}

static size_t special(char *out, double v)
{
    if (isnan(v) || isinf(v)) {
        memcpy(out, "null", 4);
        return 4;
    }
    if (signbit(v)) {
        memcpy(out, "-0.0", 4);
        return 4;
    }
    memcpy(out, "0.0", 3);
    return 3;
}

/* ==== Ryu float32 =========================================================================== */

static inline int32_t pow5bits(int32_t e) { return (int32_t)(((uint32_t)e * 1217359u) >> 19) + 1; }
static inline uint32_t log10pow2(int32_t e) { return ((uint32_t)e * 78913u) >> 18; }
static inline uint32_t log10pow5(int32_t e) { return ((uint32_t)e * 732923u) >> 20; }

static inline uint32_t pow5factor(uint32_t v)
{
    uint32_t c = 0;
    while (v % 5 == 0) {
        v /= 5;
        c++;
    }
    return c;
}

static inline bool mult_pow5(uint32_t v, uint32_t p) { return pow5factor(v) >= p; }
static inline bool mult_pow2(uint32_t v, uint32_t p) { return (v & ((1u << p) - 1)) == 0; }

static inline uint32_t mul_shift(uint32_t m, uint64_t factor, int32_t shift)
{
    uint64_t lo = (uint64_t)m * (uint32_t)factor;
    uint64_t hi = (uint64_t)m * (uint32_t)(factor >> 32);
    uint64_t sum = (lo >> 32) + hi;
    return (uint32_t)(sum >> (shift - 32));
}

static size_t f32_digits(uint32_t mant, uint32_t expo, char *digits, int *kout)
{
    int32_t e2;
    uint32_t m2;
    if (expo == 0) {
        e2 = 1 - 127 - 23 - 2;
        m2 = mant;
    } else {
        e2 = (int32_t)expo - 127 - 23 - 2;
        m2 = (1u << 23) | mant;
    }
    const bool even = (m2 & 1) == 0;
    const bool accept = even;
    const uint32_t mv = 4 * m2, mp = 4 * m2 + 2;
    const uint32_t mmshift = mant != 0 || expo <= 1;
    const uint32_t mm = 4 * m2 - 1 - mmshift;

    uint32_t vr, vp, vm;
    int32_t e10;
    bool vm_tz = false, vr_tz = false;
    uint8_t last = 0;
    if (e2 >= 0) {
        const uint32_t q = log10pow2(e2);
        e10 = (int32_t)q;
        const int32_t k = FMT_POW5_INV_BITCOUNT + pow5bits((int32_t)q) - 1;
        const int32_t i = -e2 + (int32_t)q + k;
        vr = mul_shift(mv, FMT_POW5_INV[q], i);
        vp = mul_shift(mp, FMT_POW5_INV[q], i);
        vm = mul_shift(mm, FMT_POW5_INV[q], i);
        if (q != 0 && (vp - 1) / 10 <= vm / 10) {
            const int32_t l = FMT_POW5_INV_BITCOUNT + pow5bits((int32_t)(q - 1)) - 1;
            last = (uint8_t)(mul_shift(mv, FMT_POW5_INV[q - 1], -e2 + (int32_t)q - 1 + l) % 10);
        }
        if (q <= 9) {
            if (mv % 5 == 0)
                vr_tz = mult_pow5(mv, q);
            else if (accept)
                vm_tz = mult_pow5(mm, q);
            else
                vp -= mult_pow5(mp, q);
        }
    } else {
        const uint32_t q = log10pow5(-e2);
        e10 = (int32_t)q + e2;
        const int32_t i = -e2 - (int32_t)q;
        const int32_t k = pow5bits(i) - FMT_POW5_BITCOUNT;
        int32_t j = (int32_t)q - k;
        vr = mul_shift(mv, FMT_POW5[i], j);
        vp = mul_shift(mp, FMT_POW5[i], j);
        vm = mul_shift(mm, FMT_POW5[i], j);
        if (q != 0 && (vp - 1) / 10 <= vm / 10) {
            j = (int32_t)q - 1 - (pow5bits(i + 1) - FMT_POW5_BITCOUNT);
            last = (uint8_t)(mul_shift(mv, FMT_POW5[i + 1], j) % 10);
        }
        if (q <= 1) {
            vr_tz = true;
            if (accept)
                vm_tz = mmshift == 1;
            else
                --vp;
        } else if (q < 31) {
            vr_tz = mult_pow2(mv, q - 1);
        }
    }

    int32_t removed = 0;
    uint32_t output;
    if (vm_tz || vr_tz) {
        while (vp / 10 > vm / 10) {
            vm_tz &= vm % 10 == 0;
            vr_tz &= last == 0;
            last = (uint8_t)(vr % 10);
            vr /= 10;
            vp /= 10;
            vm /= 10;
            ++removed;
        }
        if (vm_tz) {
            while (vm % 10 == 0) {
                vr_tz &= last == 0;
                last = (uint8_t)(vr % 10);
                vr /= 10;
                vp /= 10;
                vm /= 10;
                ++removed;
            }
        }
        if (vr_tz && last == 5 && vr % 2 == 0)
            last = 4;
        output = vr + ((vr == vm && (!accept || !vm_tz)) || last >= 5);
    } else {
        while (vp / 10 > vm / 10) {
            last = (uint8_t)(vr % 10);
            vr /= 10;
            vp /= 10;
            vm /= 10;
            ++removed;
        }
        output = vr + (vr == vm || last >= 5);
    }
    *kout = e10 + removed;
    return (size_t)utoa_digits(digits, output);
}

size_t proto_fmt_f32(char *out, float v)
{
    if (!isfinite(v) || v == 0.0f)
        return special(out, v);
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    bool neg = bits >> 31;
    char digits[16];
    int k;
    int n = (int)f32_digits(bits & 0x7fffffu, (bits >> 23) & 0xffu, digits, &k);
    return layout(out, neg, digits, n, k);
}

/* ==== Grisu2 float64 ======================================================================== */

struct diyfp {
    uint64_t f;
    int e;
};

static struct diyfp dfp_mul(struct diyfp a, struct diyfp b)
{
    unsigned __int128 p = (unsigned __int128)a.f * b.f;
    uint64_t h = (uint64_t)(p >> 64), l = (uint64_t)p;
    if (l & (1ull << 63))
        h++;
    return (struct diyfp){h, a.e + b.e + 64};
}

static struct diyfp dfp_normalize(struct diyfp a)
{
    int s = __builtin_clzll(a.f);
    return (struct diyfp){a.f << s, a.e - s};
}

#define DP_SIG_BITS 52
#define DP_HIDDEN (1ull << 52)

static void grisu_round(char *buf, int len, uint64_t delta, uint64_t rest, uint64_t ten_kappa,
                        uint64_t wp_w)
{
    while (rest < wp_w && delta - rest >= ten_kappa &&
           (rest + ten_kappa < wp_w || wp_w - rest > rest + ten_kappa - wp_w)) {
        buf[len - 1]--;
        rest += ten_kappa;
    }
}

static int count_digits32(uint32_t n)
{
    int d = 1;
    while (n >= 10) {
        n /= 10;
        d++;
    }
    return d;
}

static const uint64_t POW10[20] = {1ull, 10ull, 100ull, 1000ull, 10000ull, 100000ull, 1000000ull,
    10000000ull, 100000000ull, 1000000000ull, 10000000000ull, 100000000000ull,
    1000000000000ull, 10000000000000ull, 100000000000000ull, 1000000000000000ull,
    10000000000000000ull, 100000000000000000ull, 1000000000000000000ull,
    10000000000000000000ull};

static void digit_gen(struct diyfp W, struct diyfp Mp, uint64_t delta, char *buf, int *len,
                      int *K)
{
    const struct diyfp one = {1ull << -Mp.e, Mp.e};
    const uint64_t wp_w = Mp.f - W.f;
    uint32_t p1 = (uint32_t)(Mp.f >> -one.e);
    uint64_t p2 = Mp.f & (one.f - 1);
    int kappa = count_digits32(p1);
    *len = 0;
    while (kappa > 0) {
        uint32_t div = (uint32_t)POW10[kappa - 1];
        uint32_t d = p1 / div;
        p1 %= div;
        if (d || *len)
            buf[(*len)++] = (char)('0' + d);
        kappa--;
        uint64_t tmp = ((uint64_t)p1 << -one.e) + p2;
        if (tmp <= delta) {
            *K += kappa;
            grisu_round(buf, *len, delta, tmp, POW10[kappa] << -one.e, wp_w);
            return;
        }
    }
    for (;;) {
        p2 *= 10;
        delta *= 10;
        char d = (char)(p2 >> -one.e);
        if (d || *len)
            buf[(*len)++] = (char)('0' + d);
        p2 &= one.f - 1;
        kappa--;
        if (p2 < delta) {
            *K += kappa;
            int idx = -kappa;
            grisu_round(buf, *len, delta, p2, one.f, wp_w * (idx < 20 ? POW10[idx] : 0));
            return;
        }
    }
}

static void grisu2(double value, char *buf, int *len, int *K)
{
    uint64_t u;
    memcpy(&u, &value, sizeof u);
    int be = (int)((u >> DP_SIG_BITS) & 0x7ff);
    uint64_t sig = u & (DP_HIDDEN - 1);
    struct diyfp v;
    if (be) {
        v.f = sig + DP_HIDDEN;
        v.e = be - 1075;
    } else {
        v.f = sig;
        v.e = -1074;
    }
    /* boundaries m+ and m- with the same exponent */
    struct diyfp pl = {(v.f << 1) + 1, v.e - 1};
    while (!(pl.f & (DP_HIDDEN << 1))) {
        pl.f <<= 1;
        pl.e--;
    }
    pl.f <<= 64 - DP_SIG_BITS - 2;
    pl.e -= 64 - DP_SIG_BITS - 2;
    struct diyfp mi = (v.f == DP_HIDDEN) ? (struct diyfp){(v.f << 2) - 1, v.e - 2}
                                         : (struct diyfp){(v.f << 1) - 1, v.e - 1};
    mi.f <<= mi.e - pl.e;
    mi.e = pl.e;
    /* cached power c_mk with exponent so that the scaled pl.e lands in [-60, -32] */
    double dk = (-61 - pl.e) * 0.30102999566398114 + 347;
    int k = (int)dk;
    if (dk - k > 0.0)
        k++;
    unsigned idx = (unsigned)((k >> 3) + 1);
    *K = -(-348 + (int)(idx << 3));
    struct diyfp c = {FMT_CACHED_F[idx], FMT_CACHED_E[idx]};
    struct diyfp W = dfp_mul(dfp_normalize(v), c);
    struct diyfp Wp = dfp_mul(pl, c);
    struct diyfp Wm = dfp_mul(mi, c);
    Wm.f++;
    Wp.f--;
    digit_gen(W, Wp, Wp.f - Wm.f, buf, len, K);
}

size_t proto_fmt_f64(char *out, double v)
{
    if (!isfinite(v) || v == 0.0)
        return special(out, v);
    bool neg = signbit(v);
    char digits[32];
    int n, K;
    grisu2(neg ? -v : v, digits, &n, &K);
    return layout(out, neg, digits, n, K);
}
