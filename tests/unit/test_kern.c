/*
 * test_kern.c — the engine's own kernels (engine/kern.h): every path this CPU can run
 * gives exactly the bits of a scalar fma reference, for every operand layout, start value,
 * activation and odd size; path selection and its messages; and whole models give the
 * same bytes under every path, for any batch split and with y broadcast or per row.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../engine/emath.h"
#include "../../engine/kern.h"
#include "testutil.h"

static float frand(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(*s >> 40) / (double)(1ull << 24)) - 0.5f;
}

/* What kern.h promises for one element, written the plainest way. */
static float ref_act(enum act_type t, float p1, float p2, float v)
{
    switch (t) {
    case ACT_RELU: return v > 0.0f ? v : 0.0f;
    case ACT_LEAKY_RELU: return v >= 0.0f ? v : p1 * v;
    case ACT_ELU: return v > 0.0f ? v : p1 * em_expm1f(v);
    case ACT_TANH: return em_tanhf_fast(v);
    case ACT_SIGMOID: return em_sigmoidf(v);
    case ACT_SOFTPLUS: return em_softplusf(v, p1, p2);
    case ACT_SILU: return v * em_sigmoidf(v);
    default: return v;
    }
}

START_TEST(every_path_matches_the_scalar_fma_reference)
{
    const char *const *paths = kern_available();
    uint64_t seed = 12345;
    const enum act_type acts[] = {ACT_NONE, ACT_RELU, ACT_LEAKY_RELU, ACT_ELU, ACT_TANH,
                                  ACT_SIGMOID, ACT_SOFTPLUS, ACT_SILU};
    int compared = 0;
    for (int t = 0; t < 400; t++) {
        /* sizes around the microkernel and chunk edges: rows 1..40, cols 1..80, k 0..600 */
        int m = 1 + (int)((frand(&seed) + 0.5f) * 40), n = 1 + (int)((frand(&seed) + 0.5f) * 80);
        int k = t % 7 == 0 ? 0 : (int)((frand(&seed) + 0.5f) * (t % 3 ? 70 : 600));
        if (t % 5 == 0) /* one row: the matrix-vector microkernels */
            m = 1;
        if (t % 10 == 0) /* one panel, or the 16-wide last superpanel */
            n = 1 + n % 16;
        int mode = t % 3, start = (t / 3) % 3;
        enum act_type act = acts[t % 8];
        int lda = k + 1, ldy = n + 3;
        float *a = malloc(sizeof(float) * ((size_t)m * lda + 1));
        /* holds both layouts: n x k with stride k+1 and k x n with stride n+1 */
        size_t wn = (size_t)(n + 1) * (k + 1) + 1;
        float *w = malloc(sizeof(float) * wn);
        float *wp = malloc(sizeof(float) * (kern_packed_size(n, k) + 1));
        float *init = malloc(sizeof(float) * (size_t)n), *want = malloc(sizeof(float) * (size_t)m * ldy);
        float *got = malloc(sizeof(float) * (size_t)m * ldy);
        for (int i = 0; i < m * lda; i++)
            a[i] = frand(&seed) * 4.0f;
        for (size_t i = 0; i < wn; i++)
            w[i] = frand(&seed);
        for (int j = 0; j < n; j++)
            init[j] = frand(&seed);
        /* B[kk][j]: weight layout (n x k, stride k+1), row-major (k x n, stride n+1) */
        int ldb = mode == 2 ? n + 1 : k + 1;
        kern_pack_weight(n, k, w, k + 1, wp);
        for (int i = 0; i < m; i++)
            for (int j = 0; j < ldy; j++) {
                float v = start == 2 ? 0.125f * (float)((i * ldy + j) % 9) : 0.0f;
                if (j >= n) {
                    want[(size_t)i * ldy + j] = 0.125f * (float)((i * ldy + j) % 9);
                    continue;
                }
                if (start == 1)
                    v = init[j];
                for (int kk = 0; kk < k; kk++) {
                    float b = mode == 2 ? w[(size_t)kk * ldb + j] : w[(size_t)j * (k + 1) + kk];
                    v = fmaf(a[(size_t)i * lda + kk], b, v);
                }
                want[(size_t)i * ldy + j] = ref_act(act, 0.1f, 20.0f, v);
            }
        for (int p = 0; paths[p]; p++) {
            char err[ENG_ERR_LEN];
            const struct kern *kp = kern_select(paths[p], err);
            ck_assert_msg(kp != NULL, "%s", err);
            for (int i = 0; i < m * ldy; i++)
                got[i] = 0.125f * (float)(i % 9);
            struct kern_gemm g = {.m = m, .n = n, .k = k, .a = a, .lda = lda,
                                  .b = mode == 0 ? wp : w, .ldb = ldb,
                                  .bmode = mode == 0 ? KERN_B_PACKED : mode == 1 ? KERN_B_WEIGHT
                                                                                 : KERN_B_ROWMAJOR,
                                  .init = start == 1 ? init : NULL, .accumulate = start == 2,
                                  .y = got, .ldy = ldy, .act = act, .p1 = 0.1f, .p2 = 20.0f};
            kp->gemm(&g);
            for (int i = 0; i < m * ldy; i++)
                ck_assert_msg(memcmp(&got[i], &want[i], sizeof(float)) == 0,
                              "path %s, case %d (m %d n %d k %d layout %d start %d act %d): "
                              "element (%d, %d) is %.9g, the reference %.9g", paths[p], t, m, n,
                              k, mode, start, (int)act, i / ldy, i % ldy, got[i], want[i]);
            compared++;
        }
        free(a), free(w), free(wp), free(init), free(want), free(got);
    }
    printf("kern: %d products compared bit for bit on paths:", compared);
    for (int p = 0; paths[p]; p++)
        printf(" %s", paths[p]);
    printf("\n");
}
END_TEST

/* kern.map gives emath.h's function of each element, bit for bit, on every path, for
 * lengths around the vector widths and values over the functions' whole range. */
START_TEST(every_path_maps_like_the_scalar_function)
{
    const char *const *paths = kern_available();
    enum { NMAX = 203 };
    float in[NMAX], v[NMAX];
    uint64_t seed = 99;
    for (int i = 0; i < NMAX; i++)
        in[i] = frand(&seed) * (i % 3 ? 8.0f : 220.0f);
    in[0] = NAN, in[1] = INFINITY, in[2] = -INFINITY, in[3] = -0.0f, in[4] = 1e-40f;
    const enum kern_fn fns[] = {KF_EXP, KF_TANH, KF_ATAN, KF_SIGMOID, KF_EXP_FAST};
    int compared = 0;
    for (int p = 0; paths[p]; p++) {
        const struct kern *k = kern_select(paths[p], NULL);
        ck_assert_ptr_nonnull(k);
        for (size_t f = 0; f < sizeof fns / sizeof *fns; f++)
            for (int n = 1; n <= NMAX; n += n < 40 ? 1 : 27) {
                memcpy(v, in, sizeof(float) * (size_t)n);
                k->map(fns[f], v, (size_t)n);
                for (int i = 0; i < n; i++) {
                    float x = in[i];
                    float want = fns[f] == KF_EXP ? em_expf(x) : fns[f] == KF_TANH ? em_tanhf(x)
                                 : fns[f] == KF_ATAN ? em_atanf(x) : fns[f] == KF_SIGMOID
                                 ? em_sigmoidf(x) : em_expf_fast(x);
                    /* NaN in, NaN out (its sign and payload are not part of the contract:
                     * a non-finite result is an error status) */
                    ck_assert_msg(isnan(want) ? isnan(v[i]) : memcmp(&want, &v[i], sizeof(float)) == 0,
                                  "path %s, fn %d, n %d, element %d (%a): %a, want %a", paths[p],
                                  (int)f, n, i, (double)x, (double)v[i], (double)want);
                    compared++;
                }
            }
    }
    printf("kern: %d mapped elements compared bit for bit\n", compared);
}
END_TEST

START_TEST(selection_names_what_is_wrong)
{
    char err[ENG_ERR_LEN];
    ck_assert_ptr_null(kern_select("avx9000", err));
    ck_assert_ptr_nonnull(strstr(err, "INNSERVE_KERNELS='avx9000' is not a kernel path"));
    ck_assert_ptr_nonnull(kern_select("portable", err));
    ck_assert_str_eq(kern_select(NULL, err)->name, kern_available()[0]);
    ck_assert_str_eq(kern_select("auto", err)->name, kern_available()[0]);
    const char *const *av = kern_available();
    int n = 0;
    while (av[n])
        n++;
    ck_assert_str_eq(av[n - 1], "portable");
    if (strcmp(av[0], "avx512") != 0) {
        ck_assert_ptr_null(kern_select("avx512", err));
        ck_assert_ptr_nonnull(strstr(err, "this CPU cannot run that kernel path"));
    }
}
END_TEST

/* A cinn with GLOW (tanh subnet), AllInOne (relu, soft permutation off) and RNVP-style
 * blocks (elu), conditions of width 3. */
static struct eng_model *mixed_model(void)
{
    struct tu_ckpt *c = tu_ckpt_new();
    char *s1 = tu_add_subnet(c, "g1", 3 + 3, 40, 1, 2 * 3, "{\"type\":\"tanh\"}", 0.5f, 1);
    char *s2 = tu_add_subnet(c, "g2", 3 + 3, 33, 2, 2 * 3, "{\"type\":\"elu\"}", 0.5f, 2);
    char *s3 = tu_add_subnet(c, "a1", 3 + 3, 70, 2, 2 * 3, "{\"type\":\"relu\"}", 0.5f, 3);
    tu_add_perm(c, "p0", 6, 4);
    int64_t sh[2] = {1, 6};
    tu_add_randn(c, "gs", 2, sh, 0.1f, 1.0f, 5);
    tu_add_randn(c, "go", 2, sh, 0.1f, 0.0f, 6);
    char man[16384];
    snprintf(man, sizeof(man),
             "{\"format\":\"innserve-manifest\",\"version\":1,\"kind\":\"cinn\","
             "\"dims\":{\"x\":6,\"y\":3},\"conditions\":[{\"net\":null}],\"blocks\":["
             "{\"type\":\"GLOWCouplingBlock\",\"cond\":0,\"subnet1\":%s,\"subnet2\":%s},"
             "{\"type\":\"PermuteRandom\",\"perm\":\"p0\"},"
             "{\"type\":\"AllInOneBlock\",\"cond\":0,\"subnet\":%s,\"global_scale\":\"gs\","
             "\"global_offset\":\"go\",\"permutation\":{\"type\":\"hard\",\"perm\":\"p0\"}}]}",
             s1, s2, s3);
    struct eng_model *m = tu_load(c, man, ENG_LOAD_NO_SELFTEST);
    free(s1), free(s2), free(s3);
    tu_ckpt_free(c);
    return m;
}

START_TEST(models_give_the_same_bytes_on_every_path_and_split)
{
    const char *const *paths = kern_available();
    const int N = 700;
    float *ref = NULL, *x = malloc(sizeof(float) * N * 6), *yrows = malloc(sizeof(float) * N * 3);
    double *lref = NULL, *lp = malloc(sizeof(double) * N), *lp2 = malloc(sizeof(double) * N);
    float y[3] = {0.3f, -1.2f, 0.7f};
    for (int i = 0; i < N; i++)
        memcpy(yrows + 3 * i, y, sizeof(y));
    char err[ENG_ERR_LEN];
    for (int p = 0; paths[p]; p++) {
        setenv("INNSERVE_KERNELS", paths[p], 1);
        struct eng_model *m = mixed_model();
        ck_assert_str_eq(eng_model_info(m)->kernels, paths[p]);
        struct eng_ws *ws = eng_ws_new();
        ck_assert_int_eq(eng_sample(m, ws, y, 7, 0, 0, N, 1.0f, x, lp, NULL, NULL, err), ENG_OK);
        /* unaligned splits give the same bytes */
        float *b = malloc(sizeof(float) * N * 6);
        double *lb = malloc(sizeof(double) * N);
        const int sizes[] = {1, 3, 300, 17, 256, 123};
        for (int pos = 0, k = 0; pos < N; k++) {
            int cnt = sizes[k % 6] < N - pos ? sizes[k % 6] : N - pos;
            ck_assert_int_eq(eng_sample(m, ws, y, 7, 0, (uint64_t)pos, cnt, 1.0f, b + pos * 6,
                                        lb + pos, NULL, NULL, err), ENG_OK);
            pos += cnt;
        }
        ck_assert_msg(memcmp(x, b, sizeof(float) * N * 6) == 0, "split samples differ (%s)", paths[p]);
        ck_assert_msg(memcmp(lp, lb, sizeof(double) * N) == 0, "split log-dets differ (%s)", paths[p]);
        /* log_prob with y broadcast == y per row, bit for bit */
        ck_assert_int_eq(eng_log_prob(m, ws, N, x, y, 1, lp2, err), ENG_OK);
        ck_assert_int_eq(eng_log_prob(m, ws, N, x, yrows, N, lb, err), ENG_OK);
        ck_assert_msg(memcmp(lp2, lb, sizeof(double) * N) == 0, "broadcast y differs (%s)", paths[p]);
        if (!ref) {
            ref = malloc(sizeof(float) * N * 6);
            lref = malloc(sizeof(double) * N);
            memcpy(ref, x, sizeof(float) * N * 6);
            memcpy(lref, lp2, sizeof(double) * N);
        } else {
            ck_assert_msg(memcmp(ref, x, sizeof(float) * N * 6) == 0, "samples: %s != %s",
                          paths[p], paths[0]);
            ck_assert_msg(memcmp(lref, lp2, sizeof(double) * N) == 0, "log_prob: %s != %s",
                          paths[p], paths[0]);
        }
        free(b), free(lb);
        eng_ws_free(ws);
        eng_model_unref(m);
    }
    unsetenv("INNSERVE_KERNELS");
    free(ref), free(lref), free(x), free(yrows), free(lp), free(lp2);
}
END_TEST

START_TEST(a_forced_path_the_cpu_lacks_is_refused_at_load)
{
    setenv("INNSERVE_KERNELS", "sse1", 1);
    struct tu_ckpt *c = tu_ckpt_new();
    char *s1 = tu_add_subnet(c, "g1", 2, 8, 1, 2, "{\"type\":\"relu\"}", 0.5f, 1);
    char man[4096], err[ENG_ERR_LEN];
    snprintf(man, sizeof(man),
             "{\"format\":\"innserve-manifest\",\"version\":1,\"kind\":\"flow\","
             "\"dims\":{\"x\":4},\"blocks\":[{\"type\":\"NICECouplingBlock\",\"subnet1\":%s,"
             "\"subnet2\":%s}]}", s1, s1);
    ck_assert_int_ne(tu_load_fail(c, man, ENG_LOAD_NO_SELFTEST, err), ENG_OK);
    ck_assert_msg(strstr(err, "INNSERVE_KERNELS='sse1' is not a kernel path") != NULL, "%s", err);
    unsetenv("INNSERVE_KERNELS");
    free(s1);
    tu_ckpt_free(c);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("kern");
    TCase *tc = tcase_create("kern");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, every_path_matches_the_scalar_fma_reference);
    tcase_add_test(tc, every_path_maps_like_the_scalar_function);
    tcase_add_test(tc, selection_names_what_is_wrong);
    tcase_add_test(tc, models_give_the_same_bytes_on_every_path_and_split);
    tcase_add_test(tc, a_forced_path_the_cpu_lacks_is_refused_at_load);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN
