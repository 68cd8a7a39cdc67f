/*
 * test_graph.c — models given as a "graph" (engine/graph.c): Split and Concat move exactly
 * the values FrEIA's torch.split / torch.cat do along any dim, several outputs make z in
 * their order, blocks on branches compute what they compute alone, a list of conditions
 * is their concatenation, results do not depend on the tile or batch, numeric (i-ResNet)
 * blocks invert inside a graph with finite certified bounds, and malformed graphs are
 * refused naming the node.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#define HEAD_FLOW "{\"format\":\"innserve-manifest\",\"version\":1,\"kind\":\"flow\","

/* A GLOW coupling of width d (even) reading condition width cw (cond_json e.g. ",\"cond\":0"
 * or ""); tensors under prefix.  malloc'd JSON. */
static char *glow(struct tu_ckpt *c, const char *prefix, int d, int cw, const char *cond_json,
                  uint64_t seed)
{
    char p1[64], p2[64];
    snprintf(p1, sizeof p1, "%s.s1", prefix);
    snprintf(p2, sizeof p2, "%s.s2", prefix);
    int h = d / 2;
    char *s1 = tu_add_subnet(c, p1, h + cw, 8, 1, 2 * h, "{\"type\":\"tanh\"}", 0.4f, seed);
    char *s2 = tu_add_subnet(c, p2, h + cw, 8, 1, 2 * h, "{\"type\":\"tanh\"}", 0.4f, seed + 1);
    size_t cap = strlen(s1) + strlen(s2) + 256;
    char *js = malloc(cap);
    snprintf(js, cap, "{\"type\":\"GLOWCouplingBlock\",\"clamp\":2.0%s,\"subnet1\":%s,"
             "\"subnet2\":%s}", cond_json, s1, s2);
    free(s1), free(s2);
    return js;
}

/* Split then Concat, with no blocks, along dim 1 of a (2, 3) row: z = x. */
START_TEST(split_then_concat_is_the_identity)
{
    struct tu_ckpt *c = tu_ckpt_new();
    const char *man = HEAD_FLOW "\"dims\":{\"x\":6},\"shape\":{\"x\":[2,3]},\"graph\":{"
        "\"nodes\":[{\"name\":\"s\",\"inputs\":[[\"x\",0]],\"block\":{\"type\":\"Split\","
        "\"section_sizes\":[1,2],\"dim\":1}},"
        "{\"name\":\"c\",\"inputs\":[[\"s\",0],[\"s\",1]],\"block\":{\"type\":\"Concat\","
        "\"dim\":1}}],\"outputs\":[[\"c\",0]]}}";
    struct eng_model *m = tu_load(c, man, ENG_LOAD_NO_SELFTEST);
    const struct eng_info *in = eng_model_info(m);
    ck_assert_int_eq(in->n_blocks, 0);
    ck_assert_int_eq(in->z_rank, 2);
    ck_assert_int_eq(in->z_shape[0], 2);
    ck_assert_int_eq(in->z_shape[1], 3);
    struct eng_ws *ws = eng_ws_new();
    float x[3 * 6], z[3 * 6], x2[3 * 6];
    double ld[3];
    tu_randn(x, 18, 1.0f, 1);
    char err[ENG_ERR_LEN];
    ck_assert_int_eq(eng_forward(m, ws, 3, x, NULL, 0, z, NULL, ld, err), ENG_OK);
    ck_assert_int_eq(memcmp(x, z, sizeof x), 0);
    ck_assert(ld[0] == 0.0 && ld[2] == 0.0);
    ck_assert_int_eq(eng_inverse(m, ws, 3, z, NULL, 0, x2, ld, NULL, NULL, err), ENG_OK);
    ck_assert_int_eq(memcmp(x, x2, sizeof x), 0);
    eng_ws_free(ws);
    eng_model_unref(m);
    tu_ckpt_free(c);
}
END_TEST

/* Two outputs of a Split along dim 1 of (2, 3): z = [x[:, :1] flat, x[:, 1:] flat], the
 * order of the outputs list; the inverse puts every value back. */
START_TEST(several_outputs_are_flattened_in_order)
{
    struct tu_ckpt *c = tu_ckpt_new();
    const char *fmt = HEAD_FLOW "\"dims\":{\"x\":6},\"shape\":{\"x\":[2,3]},\"graph\":{"
        "\"nodes\":[{\"name\":\"s\",\"inputs\":[[\"x\",0]],\"block\":{\"type\":\"Split\","
        "\"section_sizes\":1,\"dim\":1}}],\"outputs\":%s}}";
    char man[1024];
    snprintf(man, sizeof man, fmt, "[[\"s\",0],[\"s\",1]]");
    struct eng_model *m = tu_load(c, man, ENG_LOAD_NO_SELFTEST);
    ck_assert_int_eq(eng_model_info(m)->z_rank, 1);
    struct eng_ws *ws = eng_ws_new();
    const float x[6] = {0, 1, 2, 10, 11, 12}; /* (c, l) at c*3 + l */
    const float want[6] = {0, 10, 1, 2, 11, 12};
    float z[6], x2[6];
    char err[ENG_ERR_LEN];
    ck_assert_int_eq(eng_forward(m, ws, 1, x, NULL, 0, z, NULL, NULL, err), ENG_OK);
    ck_assert_int_eq(memcmp(z, want, sizeof z), 0);
    ck_assert_int_eq(eng_inverse(m, ws, 1, z, NULL, 0, x2, NULL, NULL, NULL, err), ENG_OK);
    ck_assert_int_eq(memcmp(x, x2, sizeof x), 0);
    eng_model_unref(m);
    /* the other order; FrEIA's default n_sections = 2 along dim 0 (sizes 1, 1) */
    snprintf(man, sizeof man, fmt, "[[\"s\",1],[\"s\",0]]");
    m = tu_load(c, man, ENG_LOAD_NO_SELFTEST);
    const float want2[6] = {1, 2, 11, 12, 0, 10};
    ck_assert_int_eq(eng_forward(m, ws, 1, x, NULL, 0, z, NULL, NULL, err), ENG_OK);
    ck_assert_int_eq(memcmp(z, want2, sizeof z), 0);
    eng_model_unref(m);
    const char *def = HEAD_FLOW "\"dims\":{\"x\":6},\"shape\":{\"x\":[2,3]},\"graph\":{"
        "\"nodes\":[{\"name\":\"s\",\"inputs\":[[\"x\",0]],\"block\":{\"type\":\"Split\"}}],"
        "\"outputs\":[[\"s\",1],[\"s\",0]]}}";
    m = tu_load(c, def, ENG_LOAD_NO_SELFTEST);
    const float want3[6] = {10, 11, 12, 0, 1, 2};
    ck_assert_int_eq(eng_forward(m, ws, 1, x, NULL, 0, z, NULL, NULL, err), ENG_OK);
    ck_assert_int_eq(memcmp(z, want3, sizeof z), 0);
    eng_ws_free(ws);
    eng_model_unref(m);
    tu_ckpt_free(c);
}
END_TEST

/* Blocks on the two branches of a Split compute exactly what one block with the
 * concatenated parameters computes on the whole row (elementwise scaling). */
START_TEST(blocks_on_branches_act_on_their_parts)
{
    struct tu_ckpt *c = tu_ckpt_new();
    float sa[2] = {0.3f, -0.2f}, sb[4] = {0.1f, 0.5f, -0.7f, 0.05f}, s[6];
    memcpy(s, sa, sizeof sa), memcpy(s + 2, sb, sizeof sb);
    int64_t s2[2] = {1, 2}, s4[2] = {1, 4}, s6[2] = {1, 6};
    tu_add_f32(c, "a.s", 2, s2, sa);
    tu_add_f32(c, "b.s", 2, s4, sb);
    tu_add_f32(c, "w.s", 2, s6, s);
    const char *graph = HEAD_FLOW "\"dims\":{\"x\":6},\"graph\":{\"nodes\":["
        "{\"name\":\"split\",\"inputs\":[[\"x\",0]],\"block\":{\"type\":\"Split\","
        "\"section_sizes\":[2]}},"
        "{\"name\":\"b\",\"inputs\":[[\"split\",1]],\"block\":{\"type\":"
        "\"LearnedElementwiseScaling\",\"s\":\"b.s\"}},"
        "{\"name\":\"a\",\"inputs\":[[\"split\",0]],\"block\":{\"type\":"
        "\"LearnedElementwiseScaling\",\"s\":\"a.s\"}},"
        "{\"name\":\"cat\",\"inputs\":[[\"a\",0],[\"b\",0]],\"block\":{\"type\":\"Concat\"}}],"
        "\"outputs\":[[\"cat\",0]]}}";
    const char *chain = HEAD_FLOW "\"dims\":{\"x\":6},\"blocks\":[{\"type\":"
        "\"LearnedElementwiseScaling\",\"s\":\"w.s\"}]}";
    struct eng_model *mg = tu_load(c, graph, ENG_LOAD_NO_SELFTEST);
    struct eng_model *mc = tu_load(c, chain, ENG_LOAD_NO_SELFTEST);
    ck_assert_int_eq(eng_model_info(mg)->n_blocks, 2);
    ck_assert_ptr_nonnull(strstr(eng_model_info(mg)->blocks_json, "\"b.s\""));
    enum { N = 300 };
    float *x = malloc(sizeof(float) * N * 6), *zg = malloc(sizeof(float) * N * 6),
          *zc = malloc(sizeof(float) * N * 6), *xi = malloc(sizeof(float) * N * 6);
    double lg[N], lc[N];
    tu_randn(x, N * 6, 1.0f, 2);
    struct eng_ws *ws = eng_ws_new();
    char err[ENG_ERR_LEN];
    ck_assert_int_eq(eng_forward(mg, ws, N, x, NULL, 0, zg, NULL, lg, err), ENG_OK);
    ck_assert_int_eq(eng_forward(mc, ws, N, x, NULL, 0, zc, NULL, lc, err), ENG_OK);
    ck_assert_int_eq(memcmp(zg, zc, sizeof(float) * N * 6), 0);
    for (int i = 0; i < N; i++)
        ck_assert_double_eq_tol(lg[i], lc[i], 1e-12);
    ck_assert_int_eq(eng_inverse(mg, ws, N, zg, NULL, 0, xi, lg, NULL, NULL, err), ENG_OK);
    for (int i = 0; i < N * 6; i++)
        ck_assert_float_eq_tol(xi[i], x[i], 1e-6f * (1.0f + fabsf(x[i])));
    free(x), free(zg), free(zc), free(xi);
    eng_ws_free(ws);
    eng_model_unref(mg);
    eng_model_unref(mc);
    tu_ckpt_free(c);
}
END_TEST

/* A multi-scale graph of couplings (a latent leaves early, two outputs, slots reused):
 * inverse(forward(x)) = x, the log-det is the Jacobian's, and every row is computed as it
 * would be alone (one call of 600 rows = 600 calls of one row, bit for bit). */
static const char *MULTISCALE =
    HEAD_FLOW "\"dims\":{\"x\":8},\"shape\":{\"x\":[2,4]},\"graph\":{\"nodes\":["
    "{\"name\":\"f0\",\"inputs\":[[\"x\",0]],\"block\":{\"type\":\"Flatten\"}},"
    "{\"name\":\"c0\",\"inputs\":[[\"f0\",0]],\"block\":%s},"
    "{\"name\":\"r0\",\"inputs\":[[\"c0\",0]],\"block\":{\"type\":\"Reshape\",\"output_dims\":[2,4]}},"
    "{\"name\":\"s\",\"inputs\":[[\"r0\",0]],\"block\":{\"type\":\"Split\",\"section_sizes\":[1,1],"
    "\"dim\":0}},"
    "{\"name\":\"f\",\"inputs\":[[\"s\",1]],\"block\":{\"type\":\"Flatten\"}},"
    "{\"name\":\"c1\",\"inputs\":[[\"s\",0]],\"block\":{\"type\":\"Reshape\",\"output_dims\":[4]}},"
    "{\"name\":\"c2\",\"inputs\":[[\"c1\",0]],\"block\":%s},"
    "{\"name\":\"s2\",\"inputs\":[[\"c2\",0]],\"block\":{\"type\":\"Split\",\"section_sizes\":[2]}},"
    "{\"name\":\"c3\",\"inputs\":[[\"s2\",1]],\"block\":%s},"
    "{\"name\":\"cat\",\"inputs\":[[\"s2\",0],[\"c3\",0]],\"block\":{\"type\":\"Concat\"}}],"
    "\"outputs\":[[\"cat\",0],[\"f\",0]]}}";

START_TEST(multiscale_graph_inverts_and_is_row_independent)
{
    struct tu_ckpt *c = tu_ckpt_new();
    char *b0 = glow(c, "c0", 8, 0, "", 10), *b2 = glow(c, "c2", 4, 0, "", 20),
         *b3 = glow(c, "c3", 2, 0, "", 30);
    char *man = malloc(strlen(MULTISCALE) + strlen(b0) + strlen(b2) + strlen(b3) + 1);
    sprintf(man, MULTISCALE, b0, b2, b3);
    struct eng_model *m = tu_load(c, man, ENG_LOAD_NO_SELFTEST);
    ck_assert_int_eq(eng_model_info(m)->n_blocks, 7);
    tu_check_roundtrip(m, 50, 1.0f, 1e-5);
    tu_check_logdet_fd(m, 5, 1.0f, 1e-3, 2e-3);
    enum { N = 600 };
    float *x = malloc(sizeof(float) * N * 8), *z = malloc(sizeof(float) * N * 8), z1[8];
    double ld[N], l1;
    tu_randn(x, N * 8, 1.0f, 5);
    struct eng_ws *ws = eng_ws_new();
    char err[ENG_ERR_LEN];
    ck_assert_int_eq(eng_forward(m, ws, N, x, NULL, 0, z, NULL, ld, err), ENG_OK);
    for (int i = 0; i < N; i += 37) {
        ck_assert_int_eq(eng_forward(m, ws, 1, x + i * 8, NULL, 0, z1, NULL, &l1, err), ENG_OK);
        ck_assert_int_eq(memcmp(z1, z + i * 8, sizeof z1), 0);
        ck_assert(l1 == ld[i]);
    }
    /* samples: the same whatever the split into calls */
    float *s = malloc(sizeof(float) * N * 8), *s2 = malloc(sizeof(float) * N * 8);
    ck_assert_int_eq(eng_sample(m, ws, NULL, 7, 0, 0, N, 1.0f, s, NULL, NULL, NULL, err), ENG_OK);
    ck_assert_int_eq(eng_sample(m, ws, NULL, 7, 0, 0, 300, 1.0f, s2, NULL, NULL, NULL, err), ENG_OK);
    ck_assert_int_eq(eng_sample(m, ws, NULL, 7, 0, 300, 300, 1.0f, s2 + 300 * 8, NULL, NULL,
                                NULL, err), ENG_OK);
    ck_assert_int_eq(memcmp(s, s2, sizeof(float) * N * 8), 0);
    free(s), free(s2), free(x), free(z), free(man), free(b0), free(b2), free(b3);
    eng_ws_free(ws);
    eng_model_unref(m);
    tu_ckpt_free(c);
}
END_TEST

/* "cond": [0, 1] with both conditions y (width 2) is the block given the width-4
 * condition (y, y): the same bits. */
START_TEST(a_list_of_conditions_is_their_concatenation)
{
    struct tu_ckpt *c = tu_ckpt_new();
    char *b = glow(c, "g", 4, 4, ",\"cond\":[0,1]", 3);
    char *b1 = strdup(b), *at = strstr(b1, "[0,1]");
    memcpy(at, "0    ", 5); /* the same block reading condition 0 */
    const char *fmt = "{\"format\":\"innserve-manifest\",\"version\":1,\"kind\":\"cinn\","
        "\"dims\":{\"x\":4,\"y\":%d},\"conditions\":[%s],\"graph\":{\"nodes\":["
        "{\"name\":\"g\",\"inputs\":[[\"x\",0]],\"block\":%s}],\"outputs\":[[\"g\",0]]}}";
    char *m2 = malloc(strlen(fmt) + strlen(b) + 64), *m1 = malloc(strlen(fmt) + strlen(b1) + 64);
    sprintf(m2, fmt, 2, "{\"net\":null},{\"net\":null}", b);
    sprintf(m1, fmt, 4, "{\"net\":null}", b1);
    struct eng_model *ma = tu_load(c, m2, ENG_LOAD_NO_SELFTEST);
    struct eng_model *mb = tu_load(c, m1, ENG_LOAD_NO_SELFTEST);
    enum { N = 5 };
    float x[N * 4], y[N * 2], yy[N * 4], za[N * 4], zb[N * 4];
    double la[N], lb[N];
    tu_randn(x, N * 4, 1.0f, 1);
    tu_randn(y, N * 2, 1.0f, 2);
    for (int i = 0; i < N; i++)
        for (int k = 0; k < 4; k++)
            yy[i * 4 + k] = y[i * 2 + k % 2];
    struct eng_ws *ws = eng_ws_new();
    char err[ENG_ERR_LEN];
    ck_assert_int_eq(eng_forward(ma, ws, N, x, y, N, za, NULL, la, err), ENG_OK);
    ck_assert_int_eq(eng_forward(mb, ws, N, x, yy, N, zb, NULL, lb, err), ENG_OK);
    ck_assert_int_eq(memcmp(za, zb, sizeof za), 0);
    ck_assert_int_eq(memcmp(la, lb, sizeof la), 0);
    /* one broadcast observation, and the inverse */
    ck_assert_int_eq(eng_forward(ma, ws, N, x, y, 1, za, NULL, la, err), ENG_OK);
    ck_assert_int_eq(eng_forward(mb, ws, N, x, yy, 1, zb, NULL, lb, err), ENG_OK);
    ck_assert_int_eq(memcmp(za, zb, sizeof za), 0);
    ck_assert_int_eq(eng_inverse(ma, ws, N, za, y, 1, x, la, NULL, NULL, err), ENG_OK);
    ck_assert_int_eq(eng_inverse(mb, ws, N, zb, yy, 1, za, lb, NULL, NULL, err), ENG_OK);
    ck_assert_int_eq(memcmp(x, za, sizeof za), 0);
    free(b), free(b1), free(m1), free(m2);
    eng_ws_free(ws);
    eng_model_unref(ma);
    eng_model_unref(mb);
    tu_ckpt_free(c);
}
END_TEST

/* i-ResNet blocks on both branches of a graph: the numeric inverse converges with a
 * finite certified error bound that holds. */
START_TEST(numeric_blocks_invert_inside_a_graph)
{
    struct tu_ckpt *c = tu_ckpt_new();
    char *ga = tu_add_subnet(c, "ra", 3, 8, 1, 3, "{\"type\":\"elu\"}", 0.08f, 11);
    char *gb = tu_add_subnet(c, "rb", 3, 8, 1, 3, "{\"type\":\"elu\"}", 0.08f, 12);
    char *gc = tu_add_subnet(c, "rc", 6, 8, 1, 6, "{\"type\":\"elu\"}", 0.05f, 13);
    const char *fmt = HEAD_FLOW "\"dims\":{\"x\":6},\"graph\":{\"nodes\":["
        "{\"name\":\"r0\",\"inputs\":[[\"x\",0]],\"block\":{\"type\":\"IResNetBlock\",\"subnet\":%s}},"
        "{\"name\":\"s\",\"inputs\":[[\"r0\",0]],\"block\":{\"type\":\"Split\"}},"
        "{\"name\":\"ra\",\"inputs\":[[\"s\",0]],\"block\":{\"type\":\"IResNetBlock\",\"subnet\":%s}},"
        "{\"name\":\"rb\",\"inputs\":[[\"s\",1]],\"block\":{\"type\":\"IResNetBlock\",\"subnet\":%s}},"
        "{\"name\":\"c\",\"inputs\":[[\"ra\",0],[\"rb\",0]],\"block\":{\"type\":\"Concat\"}}],"
        "\"outputs\":[[\"c\",0]]}}";
    char *man = malloc(strlen(fmt) + strlen(ga) + strlen(gb) + strlen(gc) + 1);
    sprintf(man, fmt, gc, ga, gb);
    struct eng_model *m = tu_load(c, man, ENG_LOAD_NO_SELFTEST);
    ck_assert(eng_model_info(m)->numeric_inverse);
    ck_assert(eng_model_certificate(m)->certified);
    enum { N = 20 };
    float x[N * 6], z[N * 6], x2[N * 6];
    int it[N];
    double res[N], bound[N];
    bool conv[N];
    struct eng_solver_stats st = {it, res, bound, conv, false};
    tu_randn(x, N * 6, 1.0f, 9);
    struct eng_ws *ws = eng_ws_new();
    char err[ENG_ERR_LEN];
    ck_assert_int_eq(eng_forward(m, ws, N, x, NULL, 0, z, NULL, NULL, err), ENG_OK);
    ck_assert_int_eq(eng_inverse(m, ws, N, z, NULL, 0, x2, NULL, NULL, &st, err), ENG_OK);
    for (int i = 0; i < N; i++) {
        ck_assert(conv[i]);
        ck_assert(isfinite(bound[i]) && bound[i] > 0);
        double e = 0;
        for (int k = 0; k < 6; k++)
            e += ((double)x2[i * 6 + k] - x[i * 6 + k]) * ((double)x2[i * 6 + k] - x[i * 6 + k]);
        ck_assert_msg(sqrt(e) <= bound[i] + 1e-6 * 6, "row %d: error %g over bound %g", i,
                      sqrt(e), bound[i]);
    }
    free(ga), free(gb), free(gc), free(man);
    eng_ws_free(ws);
    eng_model_unref(m);
    tu_ckpt_free(c);
}
END_TEST

/* Malformed graphs: each refused with a message naming the node and the fault. */
START_TEST(malformed_graphs_are_refused_naming_the_node)
{
    struct tu_ckpt *c = tu_ckpt_new();
    static const struct {
        const char *graph, *want;
    } cases[] = {
        {"\"nodes\":[{\"name\":\"a\",\"inputs\":[[\"b\",0]],\"block\":{\"type\":\"Flatten\"}},"
         "{\"name\":\"b\",\"inputs\":[[\"a\",0]],\"block\":{\"type\":\"Flatten\"}}],"
         "\"outputs\":[[\"b\",0]]",
         "graph.nodes[0] (a): inputs[0]: node 'b' is graph.nodes[1], not before this node"},
        {"\"nodes\":[{\"name\":\"a\",\"inputs\":[[\"q\",0]],\"block\":{\"type\":\"Flatten\"}}],"
         "\"outputs\":[[\"a\",0]]",
         "graph.nodes[0] (a): inputs[0]: unknown node 'q'"},
        {"\"nodes\":[{\"name\":\"s\",\"inputs\":[[\"x\",0]],\"block\":{\"type\":\"Split\"}},"
         "{\"name\":\"a\",\"inputs\":[[\"s\",0]],\"block\":{\"type\":\"Flatten\"}},"
         "{\"name\":\"b\",\"inputs\":[[\"s\",0]],\"block\":{\"type\":\"Flatten\"}}],"
         "\"outputs\":[[\"a\",0],[\"b\",0]]",
         "graph.nodes[2] (b): inputs[0]: output 0 of 's' is already used by graph.nodes[1] (a)"},
        {"\"nodes\":[{\"name\":\"s\",\"inputs\":[[\"x\",0]],\"block\":{\"type\":\"Split\"}}],"
         "\"outputs\":[[\"s\",0]]",
         "graph: output 1 of 's' (graph.nodes[0]) is not used"},
        {"\"nodes\":[{\"name\":\"s\",\"inputs\":[[\"x\",0]],\"block\":{\"type\":\"Split\","
         "\"section_sizes\":[3,2]}}],\"outputs\":[[\"s\",0],[\"s\",1]]",
         "graph.nodes[0] (s): field 'section_sizes': the sizes sum to 5, more than the 4"},
        {"\"nodes\":[{\"name\":\"s\",\"inputs\":[[\"x\",0]],\"block\":{\"type\":\"Split\","
         "\"dim\":1}}],\"outputs\":[[\"s\",0],[\"s\",1]]",
         "graph.nodes[0] (s): field 'dim' is 1 but the input has shape (4,)"},
        {"\"nodes\":[{\"name\":\"s\",\"inputs\":[[\"x\",0]],\"block\":{\"type\":\"Split\"}},"
         "{\"name\":\"x\",\"inputs\":[[\"s\",0]],\"block\":{\"type\":\"Flatten\"}}],"
         "\"outputs\":[[\"s\",1],[\"x\",0]]",
         "graph.nodes[1]: field 'name': \"x\" names the input"},
        {"\"nodes\":[{\"name\":\"s\",\"inputs\":[[\"x\",0]],\"block\":{\"type\":\"Split\"}},"
         "{\"name\":\"c\",\"inputs\":[[\"s\",0],[\"s\",1]],\"block\":{\"type\":\"Concat\"}},"
         "{\"name\":\"c2\",\"inputs\":[[\"c\",0]],\"block\":{\"type\":\"Bogus\"}}],"
         "\"outputs\":[[\"c2\",0]]",
         "graph.nodes[2] (c2): unknown block type \"Bogus\""},
        {"\"nodes\":[{\"name\":\"a\",\"inputs\":[[\"x\",0]],\"block\":{\"type\":\"Reshape\","
         "\"output_dims\":[3]}}],\"outputs\":[[\"a\",0]]",
         "graph.nodes[0] (a).block (Reshape): field 'output_dims' has 3 elements, the input 4"},
        {"\"nodes\":[{\"name\":\"a\",\"inputs\":[[\"x\",0]],\"block\":{\"type\":\"Flatten\"}}],"
         "\"outputs\":[[\"a\",0],[\"a\",0]]",
         "graph: outputs[1]: output 0 of 'a' is already a graph output"},
        {"\"nodes\":[{\"name\":\"s\",\"inputs\":[[\"x\",0]],\"block\":{\"type\":\"Split\"}},"
         "{\"name\":\"a\",\"inputs\":[[\"s\",0],[\"s\",1]],\"block\":{\"type\":\"Flatten\"}}],"
         "\"outputs\":[[\"a\",0]]",
         "graph.nodes[1] (a): field 'inputs': a Flatten has one input, not 2"},
    };
    char man[2048], err[ENG_ERR_LEN];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(man, sizeof man, HEAD_FLOW "\"dims\":{\"x\":4},\"graph\":{%s}}", cases[i].graph);
        ck_assert_int_eq(tu_load_fail(c, man, ENG_LOAD_NO_SELFTEST, err), ENG_ERR_MANIFEST);
        ck_assert_msg(strstr(err, cases[i].want), "case %zu: %s", i, err);
    }
    snprintf(man, sizeof man, HEAD_FLOW "\"dims\":{\"x\":4},\"blocks\":[{\"type\":\"Flatten\"}],"
             "\"graph\":{\"nodes\":[],\"outputs\":[]}}");
    ck_assert_int_eq(tu_load_fail(c, man, ENG_LOAD_NO_SELFTEST, err), ENG_ERR_MANIFEST);
    ck_assert_ptr_nonnull(strstr(err, "'blocks' and 'graph' both given"));
    tu_ckpt_free(c);
}
END_TEST

Suite *make_suite(void)
{
    Suite *s = suite_create("graph");
    TCase *tc = tcase_create("graph");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, split_then_concat_is_the_identity);
    tcase_add_test(tc, several_outputs_are_flattened_in_order);
    tcase_add_test(tc, blocks_on_branches_act_on_their_parts);
    tcase_add_test(tc, multiscale_graph_inverts_and_is_row_independent);
    tcase_add_test(tc, a_list_of_conditions_is_their_concatenation);
    tcase_add_test(tc, numeric_blocks_invert_inside_a_graph);
    tcase_add_test(tc, malformed_graphs_are_refused_naming_the_node);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN
