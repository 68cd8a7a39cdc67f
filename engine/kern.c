/*
 * kern.c — choosing a kernel path from the CPU (cpuid, never OpenBLAS's detection),
 * packing weights into the panels every path reads, and the kernels' own GFLOP/s
 * measurement for the benchmarks.  See kern.h.
 */
#include "kern.h"
#include "engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static bool cpu_has(const char *path)
{
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (strcmp(path, "avx512") == 0)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") &&
               __builtin_cpu_supports("fma");
    if (strcmp(path, "avx2") == 0)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    return strcmp(path, "portable") == 0;
}

static const struct kern *table(const char *path)
{
#if defined(__x86_64__)
    if (strcmp(path, "avx512") == 0)
        return &kern_avx512;
    if (strcmp(path, "avx2") == 0)
        return &kern_avx2;
#endif
    if (strcmp(path, "portable") == 0)
        return &kern_portable;
    return NULL;
}

static const char *const all_paths[] = {"avx512", "avx2", "portable"};

const char *const *kern_available(void)
{
    /* computed on every call: a pure function of the CPU, no cached global */
    static const char *const sets[][4] = {
        {"avx512", "avx2", "portable", NULL},
        {"avx2", "portable", NULL, NULL},
        {"portable", NULL, NULL, NULL},
    };
    if (cpu_has("avx512"))
        return sets[0];
    if (cpu_has("avx2"))
        return sets[1];
    return sets[2];
}

const struct kern *kern_select(const char *name, char *err)
{
    if (!name || !*name || strcmp(name, "auto") == 0)
        return table(kern_available()[0]);
    bool known = false;
    for (size_t i = 0; i < sizeof(all_paths) / sizeof(all_paths[0]); i++)
        known |= strcmp(name, all_paths[i]) == 0;
    if (!known) {
        if (err)
            snprintf(err, ENG_ERR_LEN, "INNSERVE_KERNELS='%.64s' is not a kernel path (one of: "
                     "auto, avx512, avx2, portable)", name);
        return NULL;
    }
    if (!cpu_has(name) || !table(name)) {
        if (err) {
            const char *const *av = kern_available();
            char list[64] = "";
            size_t used = 0;
            for (int i = 0; av[i] && used < sizeof list; i++) {
                int n = snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", av[i]);
                used += n > 0 ? (size_t)n : 0;
            }
            snprintf(err, ENG_ERR_LEN, "INNSERVE_KERNELS=%s: this CPU cannot run that kernel "
                     "path (it can run: %s)", name, list);
        }
        return NULL;
    }
    return table(name);
}

const char *eng_kernels(char *err)
{
    const struct kern *k = kern_select(getenv("INNSERVE_KERNELS"), err);
    return k ? k->name : NULL;
}

size_t kern_packed_size(int n, int k)
{
    size_t full = (size_t)(n / KERN_SUPER), rem = (size_t)(n % KERN_SUPER);
    size_t cols = full * KERN_SUPER + (rem > KERN_PANEL ? KERN_SUPER : rem > 0 ? KERN_PANEL : 0);
    return cols * (size_t)(k > 0 ? k : 0);
}

void kern_pack_weight(int n, int k, const float *w, int ldw, float *dst)
{
    for (int j0 = 0; j0 < n; j0 += KERN_PANEL) {
        size_t ks;
        float *d = (float *)kern_packed_at(dst, n, k, j0, &ks);
        for (int kk = 0; kk < k; kk++)
            for (int jj = 0; jj < KERN_PANEL; jj++) {
                int j = j0 + jj;
                d[(size_t)kk * ks + jj] = j < n ? w[(size_t)j * ldw + kk] : 0.0f;
            }
    }
}

double kern_sgemm_gflops(const struct kern *k, int m, int n, int kk, double seconds)
{
    float *a = malloc(sizeof(float) * (size_t)m * kk), *w = malloc(sizeof(float) * (size_t)n * kk);
    float *bp = malloc(sizeof(float) * kern_packed_size(n, kk)), *y = malloc(sizeof(float) * (size_t)m * n);
    double gf = 0.0;
    if (a && w && bp && y) {
        for (size_t i = 0; i < (size_t)m * kk; i++)
            a[i] = (float)((i * 7) % 13) * 0.01f;
        for (size_t i = 0; i < (size_t)n * kk; i++)
            w[i] = (float)((i * 5) % 11) * 0.01f;
        kern_pack_weight(n, kk, w, kk, bp);
        struct kern_gemm g = {.m = m, .n = n, .k = kk, .a = a, .lda = kk, .b = bp,
                              .bmode = KERN_B_PACKED, .y = y, .ldy = n};
        k->gemm(&g);
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        long reps = 0;
        double el;
        do {
            k->gemm(&g);
            reps++;
            clock_gettime(CLOCK_MONOTONIC, &t1);
            el = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
        } while (el < seconds);
        gf = 2.0 * m * (double)n * kk * (double)reps / el / 1e9;
    }
    free(a), free(w), free(bp), free(y);
    return gf;
}
