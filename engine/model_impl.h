/*
 * model_impl.h — private to the engine: the layout of a loaded model and of a workspace,
 * the loading context behind the ldr_* functions of loader.h, and the few functions the
 * engine's files call across each other.  Shared by manifest.c (which builds a model),
 * loader.c (the loading context and the arena), model.c (which runs it), mixture.c (the
 * mdn kind), selftest.c, certificate.c and preimage.c.  Blocks and subnets never include
 * it.
 *
 * Invariants: everything a model owns lives in its arena and is never written after
 * eng_model_load returns; a workspace is owned by one thread.
 */
#ifndef INNSERVE_MODEL_IMPL_H
#define INNSERVE_MODEL_IMPL_H

#include <stdatomic.h>
#include <stddef.h>
#include <cjson/cJSON.h>

#include "engine.h"
#include "loader.h"

struct arena_chunk; /* loader.c */
struct blk;         /* block.h */
struct subnet;      /* subnet.h */
struct kern;        /* kern.h */
struct st_file;     /* safetensors.h */
struct blk_io;      /* block.h */
struct mdn;         /* mixture.c */
struct mogmade;     /* mogmade.c */

/* ---- Loading context (the struct ldr of loader.h) ----------------------------------- */

/* Built by eng_model_load (manifest.c) on its stack for one load; every pointer in it is
 * borrowed from that call (file, error buffer, the model's arena) and dead after it. */
struct ldr {
    const char *path;          /* for messages */
    const struct st_file *f;
    char *err;                 /* ENG_ERR_LEN */
    char ctx[384];             /* "blocks[3] (GLOWCouplingBlock).subnet1" */
    size_t ctx_len;
    struct arena_chunk **arena;
    unsigned char *used;       /* per tensor: counted in n_params already */
    long long n_params;
    const struct kern *k;      /* the kernel path the model will run on */
};

/* loader.c: free every allocation of an arena (NULL-safe). */
void arena_free(struct arena_chunk *a);

/* ---- Loaded model and workspace ----------------------------------------------------- */

struct stdz {
    const float *mean, *std; /* NULL when absent */
    double log_std_sum;
};

/* Most conditions in one block's list, and most distinct lists in a model. */
#define MODEL_MAX_COMBO_LEN 8
#define MODEL_MAX_COMBOS 64
/* Most outputs of a Split, inputs of a Concat, and graph outputs. */
#define GRAPH_MAX_PARTS 64

struct cond_def {
    const struct subnet *net; /* NULL: the condition is y_s itself */
    int vec;                  /* width of y_s or of the net's output */
    int width;                /* flat width the blocks read: vec * positions */
    int rank, shape[3];       /* per-row shape: (vec) or, with "broadcast", (vec, H, W) /
                                 (vec, L), the vector repeated at every position */
};

/* A list of conditions given to one block (manifest "cond": [i, j, ...]): the listed
 * conditions concatenated per row in that order (along channels for image conditions,
 * features for vectors).  Its index among the condition inputs is n_conds + its position. */
struct cond_combo {
    int n;
    int idx[MODEL_MAX_COMBO_LEN];
    int width;
    int rank, shape[3];
};

/* ---- The graph of a model (graph.c) ------------------------------------------------- */

/* A model's blocks run as a topologically ordered list of nodes over values (a value is
 * one node output, or x).  A chain ("blocks") is the graph of its blocks in order.  Every
 * value lives in a buffer slot of the workspace (rows x width, row stride its width): a
 * block works in place, so its output shares its input's slot; Split and Concat copy
 * into new slots.  Slot 0 is the state (x at the start of the forward pass, z at its
 * end); the other slots are reused by values whose lifetimes do not meet, which holds in
 * both directions since the inverse visits the same nodes backwards. */
enum gnode_kind { GNODE_BLOCK = 0, GNODE_SPLIT, GNODE_CONCAT };

struct gval {
    int width;           /* floats per row */
    int rank, shape[3];  /* per-row shape, prod = width */
    int slot;
};

struct gnode {
    enum gnode_kind kind;
    struct blk *b;       /* GNODE_BLOCK */
    int n_in, n_out;
    int *in, *out;       /* value ids */
    /* Split / Concat: per row the whole value is `outer` runs; in each run part k has
     * part[k] * inner floats (part: the sizes along the axis, one per split output or
     * concat input). */
    int outer, inner, n_part;
    int *part;
};

struct graph {
    int n_nodes;
    struct gnode *nodes;
    int n_vals;
    struct gval *vals;
    int n_slots;
    size_t *slot_off;    /* slot k >= 1 starts at area + slot_off[k] (floats) */
    size_t area;         /* floats of the slots >= 1 for ENG_TILE_ROWS rows */
    int n_out;
    int *outputs;        /* value ids in z order */
    bool out_copy;       /* z is gathered from the outputs' slots into slot 0 (and back) */
    struct gnode out_node; /* that gather as a Concat of the flattened outputs */
};

struct eng_model {
    atomic_int refs;
    struct eng_info info;
    struct arena_chunk *arena;
    char *manifest_text;
    char *blocks_text;
    char *description;
    const char **x_names, **y_names;

    const struct kern *kern; /* kernel path (INNSERVE_KERNELS or the CPU's best) */
    int D;                   /* block width */
    int n_blocks;
    struct blk *blocks;
    int n_numeric;
    int n_conds;
    struct cond_def *conds;
    int n_combos;
    struct cond_combo *combos;
    struct graph g;
    struct stdz sx, sy;
    const struct subnet *mlp;
    const struct mdn *mdn;   /* mdn kind: the mixture network (mixture.c), else NULL */
    /* inn layout: offsets of the segments in the input and output rows */
    int in_x, in_pad, out_z, out_pad, out_y;
    double sigma_y, sigma_pad;

    size_t ws_floats, ws_doubles; /* per workspace, for ENG_TILE_ROWS rows */
    size_t blk_scratch;           /* floats */
    int cond_total;               /* sum of condition and combination widths */
    struct eng_certificate cert;
    /* numeric inverses (issue 4): per block, the share of the end-to-end tolerance and the
     * factor by which an error in its output grows by the returned x (+inf if unknown) */
    double *tol_frac, *err_amp;
};

struct eng_ws {
    float *f;
    size_t nf;
    double *d;
    size_t nd;
    const atomic_bool *cancel; /* borrowed (eng_ws_set_cancel), NULL = none */
};

/* The workspace's cancel flag is set (eng_ws_set_cancel). */
static inline bool ws_cancelled(const struct eng_ws *ws)
{
    return ws && ws->cancel && atomic_load_explicit(ws->cancel, memory_order_relaxed);
}

/* Write a message into err (may be NULL) and return st. */
enum eng_status eng_errf(char *err, enum eng_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* selftest.c: run the manifest's "tests" object tj through the loaded model m. */
enum eng_status model_self_test(struct ldr *L, struct eng_model *m, const cJSON *tj,
                                struct eng_ws *ws);

/* certificate.c: build the model's certificate from its blocks (certify ops) or, for an
 * mlp, from its layers.  Arrays are allocated in the loader's arena. */
enum eng_status cert_build(struct ldr *L, const struct blk *blocks, int n_blocks,
                           const struct subnet *mlp, struct eng_certificate *out);

/* graph.c: load the model's blocks from a "blocks" list (a chain) or a "graph" object into
 * m->blocks, m->n_blocks and m->g, with shapes propagated from x and validated; sets
 * info.z_rank / z_shape, n_numeric, blk_scratch, the condition combinations (cond_total
 * grows by their widths) and blocks_text. */
enum eng_status graph_load_chain(struct ldr *L, struct eng_model *m, const cJSON *blocks);
enum eng_status graph_load(struct ldr *L, struct eng_model *m, const cJSON *graph);
/* graph.c: per block, the share of the inverse's tolerance and the factor by which an
 * error in its inverse output grows by x (m->tol_frac, m->err_amp; docs/inversion.md). */
enum eng_status graph_numeric_budget(struct ldr *L, struct eng_model *m);

/* The buffers of one tile that a graph runs on (model.c carves them). */
struct graph_bufs {
    float *state;        /* slot 0: rows x D */
    float *area;         /* the other slots */
    float *scratch;      /* block scratch */
    double *ld;          /* rows: log-dets, accumulated */
    double *xd;          /* rows x D doubles for numeric inverses, or NULL */
};
/* graph.c: run the model's nodes on rows [0, rows) of a tile, forward or inverse; cp/cld
 * are the condition inputs (conditions then combinations); proto carries the solver
 * settings and statistics of an inverse. */
void graph_run(const struct eng_model *m, const struct graph_bufs *gb, int rows,
               const float *const *cp, const int *cld, bool inverse,
               const struct blk_io *proto);

/* ---- mdn (mixture.c) -----------------------------------------------------------------
 * The mixture of one observation lives in `par` doubles (mdn_par_doubles): log weights,
 * their cumulative weights, log-dets, means and precision factors in standardized x. */

/* Load the manifest's "mixture" object mj of an mdn model (dims set, standardization
 * loaded): the network and its heads into m->mdn, the hidden width into *hidden and the
 * network's scratch for a tile (floats) into *scratch. */
enum eng_status mdn_load(struct ldr *L, struct eng_model *m, const cJSON *mj, int *hidden,
                         size_t *scratch);
/* Doubles one observation's mixture takes. */
size_t mdn_par_doubles(const struct mdn *q);
/* The network part: hidden features h (rows x hidden, stride ldh) of standardized y rows
 * ys (stride ldy, or one row when ldy == 0 and rows == 1).  Scratch: subnet_scratch. */
void mdn_hidden(const struct mdn *q, int rows, const float *ys, int ldy, float *h, int ldh,
                float *scratch);
/* The heads: the mixture of one observation from its hidden features h into par; false
 * when a parameter is not finite. */
bool mdn_mixture(const struct mdn *q, const float *h, double *par);
/* log q(x_s) of one standardized row x_s (dims.x doubles) under the mixture par, in
 * double (sbi's MoG.log_prob: quadratic form with the precision A^T A + eps I, log-det
 * sum log diag A; a made mixture: mogmade.c).  par's scratch tail may be overwritten. */
double mdn_log_density(const struct mdn *q, double *par, const double *xs);
/* Uniforms one draw takes: 1 (the component), a made mixture dims.x (one per dimension). */
int mdn_uniforms(const struct mdn *q);
/* One draw: component from the uniform u[0] in [0, 1), then xs = mean + A^-1 e (e: dims.x
 * normals, already scaled by the temperature) into xs; a made mixture draws dimension d's
 * component with u[d] and xs_d = mean + std e_d, d = 0 .. dims.x - 1 in turn. */
void mdn_draw(const struct mdn *q, double *par, const double *u, const float *e, double *xs);

/* ---- the made mixture (mogmade.c), run through the mdn functions above ------------------
 * Load obj's MADE (components K, context width C, epsilon eps) for dims.x = D; the
 * struct lives in the model's arena. */
enum eng_status mogmade_load(struct ldr *L, const cJSON *obj, int D, int K, int C, double eps,
                             const struct mogmade **out);
size_t mogmade_par_doubles(const struct mogmade *g);
/* The context's contributions (context c of width C, float) into par; false when one is
 * not finite. */
bool mogmade_context(const struct mogmade *g, const float *c, double *par);
double mogmade_log_density(const struct mogmade *g, double *par, const double *xs);
void mogmade_draw(const struct mogmade *g, double *par, const double *u, const float *e,
                  double *xs);

/* model.c: what preimage.c needs to see inside a model (borrowed, valid while it lives). */
struct model_view {
    const struct subnet *mlp;       /* mlp kind, else NULL */
    const float *x_mean, *x_std;    /* dims.x standardization of x, or NULL */
    const float *y_mean, *y_std;    /* dims.y standardization of y, or NULL */
};
void model_view(const struct eng_model *m, struct model_view *v);

#endif
