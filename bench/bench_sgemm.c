/*
 * bench_sgemm.c — this machine's single-core float32 peaks, for the engine benchmark's
 * "% of peak": sgemm GFLOP/s of every kernel available (OpenBLAS as the environment
 * configures it, and the engine's own GEMM kernels when the engine has them) on the
 * reference cINN's real shapes and on 1024^3, plus the theoretical FMA ceiling of the core
 * from a register-only loop (AVX-512 or AVX2).  Prints one JSON object.
 *
 *   bench_sgemm [seconds-per-shape] [--openblas-only]
 *
 * Shapes are m x n x k: C (m x n) = A (m x k) B (k x n), in the engine's layout
 * (B a torch weight, n x k: Y = X W^T).  run_bench.py runs it again with
 * OPENBLAS_CORETYPE=SkylakeX when the CPU has AVX-512.
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fma_peak.h"
#include "../engine/engine.h"
#include "../engine/kern.h"

volatile float fma_sink;

/* openblas_get_corename/config are OpenBLAS extensions not always declared in cblas.h. */
char *openblas_get_corename(void);
char *openblas_get_config(void);

static const int shapes[][3] = {
    {1024, 1024, 1024}, /* the classic square peak */
    {256, 256, 256},    /* hidden layer, one tile of 256 rows */
    {256, 16, 256},     /* last layer (s and t) */
    {256, 256, 8},      /* first layer, x columns only (condition folded in) */
};
#define NSHAPES (int)(sizeof shapes / sizeof shapes[0])

static double openblas_gflops(int m, int n, int k, double seconds)
{
    float *a = malloc(sizeof(float) * (size_t)m * k), *b = malloc(sizeof(float) * (size_t)n * k),
          *c = malloc(sizeof(float) * (size_t)m * n);
    if (!a || !b || !c) {
        free(a), free(b), free(c);
        return 0.0;
    }
    for (size_t i = 0; i < (size_t)m * k; i++)
        a[i] = (float)((i * 7) % 13) * 0.01f;
    for (size_t i = 0; i < (size_t)n * k; i++)
        b[i] = (float)((i * 5) % 11) * 0.01f;
    long reps = 0;
    double t0 = 0, el = 0;
    for (int warm = 1; warm >= 0; warm--) { /* one pass to warm up, then the timed pass */
        reps = 0;
        t0 = fma_now();
        do {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, a, k, b, k,
                        0.0f, c, n);
            reps++;
            el = fma_now() - t0;
        } while (el < (warm ? 0.05 : seconds));
    }
    free(a), free(b), free(c);
    return 2.0 * m * n * (double)k * (double)reps / el / 1e9;
}

static void row(int *first, const char *kernel, const int *s, double g)
{
    printf("%s{\"kernel\": \"%s\", \"m\": %d, \"n\": %d, \"k\": %d, \"gflops\": %.2f}",
           *first ? "" : ", ", kernel, s[0], s[1], s[2], g);
    *first = 0;
}

int main(int argc, char **argv)
{
    double secs = argc > 1 ? atof(argv[1]) : 0.5;
    int openblas_only = argc > 2 && strcmp(argv[2], "--openblas-only") == 0;
    if (secs <= 0)
        secs = 0.5;
    openblas_set_num_threads(1);
#if defined(__x86_64__)
    __builtin_cpu_init();
    const int avx512 = __builtin_cpu_supports("avx512f");
#else
    const int avx512 = 0;
#endif
    char ob[96];
    snprintf(ob, sizeof ob, "OpenBLAS %s", openblas_get_corename());
    const char *cfg = openblas_get_config();
    printf("{\"openblas_core\": \"%s\", \"openblas_config\": \"%s\", \"avx512\": %s",
           openblas_get_corename(), cfg ? cfg : "", avx512 ? "true" : "false");
    const struct kern *used = kern_select(getenv("INNSERVE_KERNELS"), NULL); /* as the engine */
    printf(", \"engine_kernel\": \"%s\"", used ? used->name : "?");
    printf(", \"sgemm\": [");
    int first = 1;
    for (int i = 0; i < NSHAPES; i++)
        row(&first, ob, shapes[i], openblas_gflops(shapes[i][0], shapes[i][1], shapes[i][2], secs));
    /* The engine's own GEMM kernels: every path this CPU can run. */
    for (const char *const *p = kern_available(); !openblas_only && p && *p; p++) {
        char err[ENG_ERR_LEN], name[64];
        const struct kern *kt = kern_select(*p, err);
        snprintf(name, sizeof name, "engine %s", *p);
        for (int i = 0; kt && i < NSHAPES; i++) {
            if (strcmp(*p, "portable") == 0 && shapes[i][2] > 256)
                continue; /* plain C: seconds per call at 1024^3, and never the peak */
            row(&first, name, shapes[i], kern_sgemm_gflops(kt, shapes[i][0], shapes[i][1], shapes[i][2], secs));
        }
    }
    printf("], \"fma_peak\": {");
#if defined(__x86_64__)
    const char *sep = "";
    if (!openblas_only && avx512) {
        printf("\"avx512\": %.2f", fma_peak_avx512(secs / 2));
        sep = ", ";
    }
    if (!openblas_only && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        printf("%s\"avx2\": %.2f", sep, fma_peak_avx2(secs / 2));
#endif
    printf("}}\n");
    return 0;
}
