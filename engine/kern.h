/*
 * kern.h — the engine's own float32 compute kernels: matrix products with a fused bias
 * and activation, and the elementwise functions of the hot paths.  Three
 * implementations of one contract, chosen at run time from the CPU itself (cpuid):
 *
 *     avx512    AVX-512F microkernels (8 rows x 32 columns of accumulators)
 *     avx2      AVX2 + FMA microkernels (6 rows x 16 columns)
 *     portable  plain C with fmaf (any C11 target: other x86-64, ARM64, ...)
 *
 * The contract that makes results bit-identical across the three (and across tilings,
 * batch sizes and thread counts): every output element of a product is
 *
 *     y = init;  for kk = 0 .. k-1 in order:  y = fma(a[kk], b[kk], y);  y = act(y)
 *
 * with one float32 accumulator per element (a fused multiply-add rounds once, so the
 * vector width never changes a bit), and every elementwise function is emath.h's, built
 * from IEEE operations and fma only.  OPENBLAS_* settings play no part: OpenBLAS is not
 * called on these paths.
 *
 * Selection: kern_select(NULL) takes the best path the CPU supports; a name ("avx512",
 * "avx2", "portable", from INNSERVE_KERNELS) forces one, and fails with a message when
 * the CPU lacks it.  The returned table is static and immutable; models keep a pointer.
 */
#ifndef INNSERVE_KERN_H
#define INNSERVE_KERN_H

#include <stdbool.h>
#include <stddef.h>

/* Activation functions (torch semantics; parameters in kern_act). */
enum act_type {
    ACT_NONE = 0, ACT_RELU, ACT_LEAKY_RELU, ACT_ELU, ACT_TANH, ACT_SIGMOID, ACT_SOFTPLUS,
    ACT_GELU, ACT_GELU_TANH, ACT_SILU, ACT_LIPSWISH, ACT_COUNT
};

/* Elementwise functions of kern.map: em_expf, em_tanhf, em_atanf, em_sigmoidf, and
 * em_expf_fast (float arithmetic, within 1 ulp). */
enum kern_fn { KF_EXP, KF_TANH, KF_ATAN, KF_SIGMOID, KF_EXP_FAST };

/* The packed layout every path reads: columns in superpanels of KERN_SUPER (32), each k
 * rows of 32 floats (so one superpanel is one contiguous stream of weights); when the last
 * one would hold 16 columns or fewer it is 16 wide.  Zero padded. */
#define KERN_PANEL 16
#define KERN_SUPER 32

/* How B (k x n) is stored. */
enum kern_bmode {
    KERN_B_PACKED,   /* kern_pack_weight's layout (KERN_SUPER above; kern_packed_at) */
    KERN_B_WEIGHT,   /* a torch weight (n x k, row stride ldb): B[kk][j] = b[j*ldb + kk] */
    KERN_B_ROWMAJOR, /* k x n, row stride ldb: B[kk][j] = b[kk*ldb + j] */
};

/* Y (m x n) = act(init + A B), A m x k (row stride lda).  The start value of element
 * (i, j) is init[j] when init is set, else Y's current value when accumulate, else 0. */
struct kern_gemm {
    int m, n, k;
    const float *a;
    int lda;
    const float *b;
    int ldb;
    enum kern_bmode bmode;
    const float *init;
    bool accumulate;
    float *y;
    int ldy;
    enum act_type act;
    float p1, p2;    /* leaky slope | elu alpha | softplus beta, threshold */
};

struct kern {
    const char *name;
    void (*gemm)(const struct kern_gemm *g);
    /* v[i] = act(v[i]) for i < n */
    void (*act)(enum act_type t, float p1, float p2, float *v, size_t n);
    /* v[i] = f(v[i]) for i < n (emath.h's functions) */
    void (*map)(enum kern_fn f, float *v, size_t n);
};

/* The kernel table for `name` ("avx512", "avx2", "portable"; NULL or "" or "auto": the
 * best this CPU supports).  NULL with a message in err (ENG_ERR_LEN bytes) when the name
 * is unknown or the CPU cannot run that path. */
const struct kern *kern_select(const char *name, char *err);
/* The paths this CPU can run, best first, NULL-terminated (static). */
const char *const *kern_available(void);

/* Floats needed to pack an (n x k) torch weight; kern_pack_weight writes them (zero
 * padding the last panel).  Load time only. */
size_t kern_packed_size(int n, int k);
void kern_pack_weight(int n, int k, const float *w, int ldw, float *dst);

/* Start of column j0 (a multiple of 16) of a packed n x k weight, and the distance in floats
 * from one k row to the next there (32, or 16 in a 16-wide last superpanel). */
static inline const float *kern_packed_at(const float *b, int n, int k, int j0, size_t *kstride)
{
    int s = j0 / KERN_SUPER;
    *kstride = n - s * KERN_SUPER <= KERN_PANEL ? KERN_PANEL : KERN_SUPER;
    return b + (size_t)s * KERN_SUPER * (size_t)k + (size_t)(j0 % KERN_SUPER);
}

/* Y (n x out) = X W^T with W a torch weight (out x in, row stride ldw), not packed. */
static inline void kern_linear_w(const struct kern *k, int n, int out, int in, const float *X,
                                 int ldx, const float *W, int ldw, float *Y, int ldy)
{
    struct kern_gemm g = {.m = n, .n = out, .k = in, .a = X, .lda = ldx, .b = W, .ldb = ldw,
                          .bmode = KERN_B_WEIGHT, .y = Y, .ldy = ldy};
    k->gemm(&g);
}

/* Y (n x out) = X M with M row-major (in x out, row stride ldm). */
static inline void kern_matmul(const struct kern *k, int n, int out, int in, const float *X,
                               int ldx, const float *M, int ldm, float *Y, int ldy)
{
    struct kern_gemm g = {.m = n, .n = out, .k = in, .a = X, .lda = ldx, .b = M, .ldb = ldm,
                          .bmode = KERN_B_ROWMAJOR, .y = Y, .ldy = ldy};
    k->gemm(&g);
}

/* Single-thread GFLOP/s of k->gemm on an m x n x k product with packed B (benchmarks). */
double kern_sgemm_gflops(const struct kern *k, int m, int n, int kk, double seconds);

/* Hot loops outside the kernel files (Gaussian draws, spline and sigmoid blocks) call
 * emath.h, whose fma is a libm call unless the compiler may emit FMA instructions.  They
 * are marked KERN_FMA_CLONES: GCC builds an x86-64-v3 (AVX2 + FMA) clone beside the
 * baseline one and the loader picks by cpuid.  Both give the same bits (fma is exact).
 * Not under ThreadSanitizer: its instrumented ifunc resolvers crash at load time. */
#if defined(__x86_64__) && !defined(__FMA__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(__SANITIZE_THREAD__)
#define KERN_FMA_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define KERN_FMA_CLONES
#endif

/* The per-path tables (kern_avx512.c, kern_avx2.c, kern_portable.c); the x86 ones are
 * NULL-equivalent stubs on other architectures (kern.c never selects them there). */
extern const struct kern kern_portable;
#if defined(__x86_64__)
extern const struct kern kern_avx2;
extern const struct kern kern_avx512;
#endif

#endif
