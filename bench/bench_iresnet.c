/*
 * bench_iresnet.c — i-ResNet inversion: evaluations of g and time to tol 1e-6 for each
 * solver method (engine/solve.c) against plain fixed-point iteration (the i-ResNet
 * paper's method), on random blocks and on adversarial contractions at L = 0.9 and 0.99
 * (tests/unit/iresnet_models.h: "sym", a real spectrum with eigenvalue -L, and "rot",
 * eigenvalues L e^{+-i theta} on a circle).  Every returned row is checked against a
 * double-precision reference inverse: its error must be within tol * max(|x|, 1) and
 * below the returned bound.  Single-threaded BLAS.  Prints a markdown table
 * (docs/performance.md, "i-ResNet inversion").
 *
 *   bench_iresnet [rows]        (default 256; d >= 64 regimes use rows / 4)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../engine/engine.h"
#include "../tests/unit/iresnet_models.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* ---- a minimal safetensors writer -------------------------------------------------------- */

struct wt {
    char name[160];
    int ndim;
    int64_t shape[2];
    float *data;
    size_t n;
};

struct writer {
    struct wt t[64];
    int n;
};

static void put(void *ctx, const char *name, int ndim, const int64_t *shape, const float *data)
{
    struct writer *w = ctx;
    struct wt *t = &w->t[w->n++];
    snprintf(t->name, sizeof(t->name), "%s", name);
    t->ndim = ndim;
    t->n = 1;
    for (int i = 0; i < ndim; i++)
        t->shape[i] = shape[i], t->n *= (size_t)shape[i];
    t->data = malloc(sizeof(float) * t->n);
    memcpy(t->data, data, sizeof(float) * t->n);
}

static char *write_file(struct writer *w, const char *manifest)
{
    size_t cap = strlen(manifest) * 2 + 4096 + (size_t)w->n * 160;
    char *h = malloc(cap), *esc = malloc(strlen(manifest) * 2 + 1), *e = esc;
    for (const char *s = manifest; *s; s++) {
        if (*s == '"' || *s == '\\')
            *e++ = '\\';
        *e++ = *s;
    }
    *e = 0;
    size_t k = (size_t)snprintf(h, cap, "{\"__metadata__\":{\"format\":\"innserve\",\"manifest\":\"%s\"}",
                                esc);
    size_t off = 0;
    for (int i = 0; i < w->n; i++) {
        struct wt *t = &w->t[i];
        k += (size_t)snprintf(h + k, cap - k, ",\"%s\":{\"dtype\":\"F32\",\"shape\":[", t->name);
        for (int d = 0; d < t->ndim; d++)
            k += (size_t)snprintf(h + k, cap - k, "%s%lld", d ? "," : "", (long long)t->shape[d]);
        k += (size_t)snprintf(h + k, cap - k, "],\"data_offsets\":[%zu,%zu]}", off,
                              off + 4 * t->n);
        off += 4 * t->n;
    }
    k += (size_t)snprintf(h + k, cap - k, "}");
    while (k % 8)
        h[k++] = ' ';
    char *path = strdup("/tmp/bench-iresnet-XXXXXX");
    int fd = mkstemp(path);
    FILE *f = fdopen(fd, "wb");
    unsigned char le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (unsigned char)((uint64_t)k >> (8 * i));
    fwrite(le, 1, 8, f);
    fwrite(h, 1, k, f);
    for (int i = 0; i < w->n; i++)
        fwrite(w->t[i].data, 4, w->t[i].n, f);
    fclose(f);
    for (int i = 0; i < w->n; i++)
        free(w->t[i].data);
    free(h), free(esc);
    return path;
}

static struct eng_model *load_blocks(const struct irm_block *B, int nb)
{
    struct writer *w = calloc(1, sizeof(*w));
    char *blocks = calloc(1, 65536);
    size_t k = 0;
    for (int i = 0; i < nb; i++) {
        char pfx[16];
        snprintf(pfx, sizeof(pfx), "b%d", i);
        irm_tensors(&B[i], pfx, put, w);
        char *js = irm_json(&B[i], pfx, NULL);
        k += (size_t)snprintf(blocks + k, 65536 - k, "%s%s", i ? "," : "", js);
        free(js);
    }
    char *man = malloc(65536 + 256);
    snprintf(man, 65536 + 256, "{\"format\":\"innserve-manifest\",\"version\":1,\"kind\":\"flow\","
             "\"dims\":{\"x\":%d},\"blocks\":[%s]}", B[0].d, blocks);
    char *path = write_file(w, man);
    struct eng_model *m = NULL;
    char err[ENG_ERR_LEN];
    if (eng_model_load_ex(path, ENG_LOAD_NO_SELFTEST, &m, err) != ENG_OK) {
        fprintf(stderr, "load: %s\n", err);
        exit(1);
    }
    unlink(path);
    free(path), free(man), free(blocks), free(w);
    return m;
}

static int cmp_int(const void *a, const void *b)
{
    return *(const int *)a - *(const int *)b;
}

struct result {
    double med, p95, max, mean, us_row, worst_err_over_tol;
    int unconverged, above_bound;
};

/* Statistics of one method (one run; the solver is deterministic). */
static struct result run(const struct eng_model *m, const struct irm_block *B, int nb, int n,
                         int method, const double *xref)
{
    const int d = B[0].d;
    const double tol = 1e-6;
    float *z = malloc(sizeof(float) * (size_t)n * d), *x = malloc(sizeof(float) * (size_t)n * d);
    int *it = malloc(sizeof(int) * (size_t)n);
    double *res = malloc(sizeof(double) * (size_t)n), *eb = malloc(sizeof(double) * (size_t)n);
    bool *conv = malloc(sizeof(bool) * (size_t)n);
    for (int i = 0; i < n; i++)
        eng_rng_normal_row(7, 0, (uint64_t)i, d, z + (size_t)i * d);
    struct eng_solver_opts o = {tol, 20000, method};
    struct eng_solver_stats st = {it, res, eb, conv, false};
    struct eng_ws *ws = eng_ws_new();
    char err[ENG_ERR_LEN];
    if (eng_ws_reserve(ws, m) != ENG_OK)
        exit(1);
    if (eng_inverse(m, ws, n, z, NULL, 0, x, NULL, &o, &st, err) != ENG_OK) {
        fprintf(stderr, "inverse: %s\n", err);
        exit(1);
    }
    struct result r = {0};
    long tot = 0;
    for (int i = 0; i < n; i++) {
        tot += it[i];
        double e2 = 0, x2 = 0;
        for (int j = 0; j < d; j++) {
            double e = x[(size_t)i * d + j] - xref[(size_t)i * d + j];
            e2 += e * e, x2 += xref[(size_t)i * d + j] * xref[(size_t)i * d + j];
        }
        double e = sqrt(e2);
        r.worst_err_over_tol = fmax(r.worst_err_over_tol, e / (tol * fmax(sqrt(x2), 1.0)));
        r.unconverged += !conv[i];
        r.above_bound += !(e <= eb[i]);
    }
    qsort(it, (size_t)n, sizeof(int), cmp_int);
    r.med = it[n / 2] / (double)nb, r.p95 = it[(n * 95) / 100] / (double)nb;
    r.max = it[n - 1] / (double)nb, r.mean = (double)tot / n / nb;
    eng_ws_free(ws);
    free(z), free(x), free(it), free(res), free(eb), free(conv);
    return r;
}

/* Seconds for one inverse of the n rows with this method. */
static double timed(const struct eng_model *m, struct eng_ws *ws, int d, int n, int method,
                    const float *z, float *x)
{
    struct eng_solver_opts o = {1e-6, 20000, method};
    char err[ENG_ERR_LEN];
    double t0 = now();
    if (eng_inverse(m, ws, n, z, NULL, 0, x, NULL, &o, NULL, err) != ENG_OK) {
        fprintf(stderr, "inverse: %s\n", err);
        exit(1);
    }
    (void)d;
    return now() - t0;
}

int main(int argc, char **argv)
{
    int rows = argc > 1 ? atoi(argv[1]) : 256;
    eng_blas_threads(1);
    struct {
        const char *name;
        enum irm_regime reg;
        int d, h, nb;
        double c;
    } cases[] = {
        {"random (block L = 0.9), 4 blocks", IRM_RANDOM, 8, 64, 4, 0.9},
        {"sym L = 0.9", IRM_SYM, 8, 0, 1, 0.9},
        {"sym L = 0.99", IRM_SYM, 8, 0, 1, 0.99},
        {"rot L = 0.9", IRM_ROT, 8, 0, 1, 0.9},
        {"rot L = 0.99", IRM_ROT, 8, 0, 1, 0.99},
        {"sym-elu L = 0.9", IRM_SYM, 8, 64, 1, 0.9},
        {"sym-elu L = 0.99", IRM_SYM, 8, 64, 1, 0.99},
        {"rot-elu L = 0.9", IRM_ROT, 8, 64, 1, 0.9},
        {"rot-elu L = 0.99", IRM_ROT, 8, 64, 1, 0.99},
        {"random (block L = 0.9)", IRM_RANDOM, 64, 128, 1, 0.9},
        {"sym L = 0.99", IRM_SYM, 64, 0, 1, 0.99},
        {"rot L = 0.99", IRM_ROT, 64, 0, 1, 0.99},
        {"random (block L = 0.9)", IRM_RANDOM, 128, 256, 1, 0.9},
        {"sym L = 0.99", IRM_SYM, 128, 0, 1, 0.99},
        {"rot L = 0.99", IRM_ROT, 128, 0, 1, 0.99},
    };
    const int methods[] = {ENG_SOLVE_FIXED_POINT, ENG_SOLVE_AUTO, ENG_SOLVE_NEWTON,
                           ENG_SOLVE_ANDERSON, ENG_SOLVE_BROYDEN};
    printf("| regime | d | method | g-evals per block: median / p95 / max | mean | vs fixed point "
           "| us per row | max error / tol | unconverged | error > bound |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|\n");
    int failures = 0;
    for (size_t ci = 0; ci < sizeof(cases) / sizeof(cases[0]); ci++) {
        int d = cases[ci].d, nb = cases[ci].nb, n = d >= 64 ? rows / 4 : rows;
        struct irm_block B[4];
        for (int b = 0; b < nb; b++)
            irm_build(&B[b], cases[ci].reg, d, cases[ci].h, 0, cases[ci].c, 100 + ci * 7 + (size_t)b);
        struct eng_model *m = load_blocks(B, nb);
        /* reference: the exact composition of exact inverses, in double */
        double *xref = malloc(sizeof(double) * (size_t)n * d), cur[256], nxt[256];
        float *zr = malloc(sizeof(float) * (size_t)d);
        for (int i = 0; i < n; i++) {
            eng_rng_normal_row(7, 0, (uint64_t)i, d, zr);
            for (int j = 0; j < d; j++)
                cur[j] = zr[j];
            for (int b = nb - 1; b >= 0; b--) {
                irm_inverse(&B[b], cur, NULL, nxt);
                memcpy(cur, nxt, sizeof(double) * (size_t)d);
            }
            memcpy(xref + (size_t)i * d, cur, sizeof(double) * (size_t)d);
        }
        /* times: the methods alternate, 5 rounds, best of each (the machine is noisy) */
        enum { NM = sizeof(methods) / sizeof(methods[0]) };
        double best[NM];
        float *zt = malloc(sizeof(float) * (size_t)n * d), *xt = malloc(sizeof(float) * (size_t)n * d);
        for (int i = 0; i < n; i++)
            eng_rng_normal_row(7, 0, (uint64_t)i, d, zt + (size_t)i * d);
        struct eng_ws *ws = eng_ws_new();
        for (int mi = 0; mi < NM; mi++)
            best[mi] = INFINITY;
        for (int round = 0; round < 5; round++)
            for (int mi = 0; mi < NM; mi++)
                best[mi] = fmin(best[mi], timed(m, ws, d, n, methods[mi], zt, xt));
        eng_ws_free(ws);
        free(zt), free(xt);
        double fp_mean = 0;
        for (size_t mi = 0; mi < NM; mi++) {
            struct result r = run(m, B, nb, n, methods[mi], xref);
            r.us_row = 1e6 * best[mi] / n;
            if (methods[mi] == ENG_SOLVE_FIXED_POINT)
                fp_mean = r.mean;
            printf("| %s | %d | %s | %.0f / %.0f / %.0f | %.1f | %.1fx | %.1f | %.2f | %d | %d |\n",
                   cases[ci].name, d, eng_solve_method_str(methods[mi]), r.med, r.p95, r.max,
                   r.mean, fp_mean / r.mean, r.us_row, r.worst_err_over_tol, r.unconverged,
                   r.above_bound);
            fflush(stdout);
            failures += r.unconverged + r.above_bound + (r.worst_err_over_tol > 1.0 && nb == 1);
        }
        eng_model_unref(m);
        for (int b = 0; b < nb; b++)
            irm_free(&B[b]);
        free(xref), free(zr);
    }
    printf("\n%d rows failed a check\n", failures);
    return failures ? 1 : 0;
}
