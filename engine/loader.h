/*
 * loader.h — private to model.c and loader.c: the loading context behind the ldr_*
 * functions of block.h, and the arena that owns everything a model allocates at load.
 */
#ifndef INNSERVE_LOADER_H
#define INNSERVE_LOADER_H

#include "block.h"

struct arena_chunk;

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

/* Free every allocation of an arena (NULL-safe). */
void arena_free(struct arena_chunk *a);



/* certificate.c: build the model's certificate from its blocks (certify ops) or, for an
 * mlp, from its layers.  Arrays are allocated in the loader's arena. */
enum eng_status cert_build(struct ldr *L, const struct blk *blocks, int n_blocks,
                           const struct subnet *mlp, struct eng_certificate *out);
/* model.c: what preimage.c needs to see inside a model (borrowed, valid while it lives). */
struct model_view {
    const struct subnet *mlp;       /* mlp kind, else NULL */
    const float *x_mean, *x_std;    /* dims.x standardization of x, or NULL */
    const float *y_mean, *y_std;    /* dims.y standardization of y, or NULL */
};
void model_view(const struct eng_model *m, struct model_view *v);

#endif
