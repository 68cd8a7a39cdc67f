/*
 * certificate.c — is this network invertible, and why: one verdict per block (from the
 * block's certify op) and the model's verdict, the weakest of its blocks.  For an mlp the
 * layers are examined: widths that change, non-injective activations, rank deficiency.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "blas.h"
#include "loader.h"

const char *eng_guarantee_str(enum eng_guarantee g)
{
    static const char *const n[] = {"analytic", "contraction", "none"};
    return (unsigned)g < 3 ? n[g] : "?";
}

static void cert_default(struct eng_block_cert *c)
{
    c->invertible = true;
    c->guarantee = ENG_GUARANTEE_ANALYTIC;
    c->lipschitz = NAN;
    c->lipschitz_inverse = NAN;
    c->condition = NAN;
    c->iterations_for_1e6 = -1;
    snprintf(c->reason, sizeof(c->reason), "closed-form inverse");
}

static bool act_injective(enum act_type t)
{
    return t != ACT_RELU; /* relu maps every negative input to 0; the others are strictly
                             monotone (leaky slope > 0, elu alpha > 0 checked below) */
}

/* Rank of an (r x c) float matrix by Gaussian elimination with partial pivoting in
 * double; `work` holds r*c doubles. */
static int matrix_rank(int r, int c, const float *w, double *work)
{
    double scale = 0;
    for (int i = 0; i < r * c; i++) {
        work[i] = w[i];
        scale = fmax(scale, fabs(work[i]));
    }
    int rank = 0;
    for (int col = 0; col < c && rank < r; col++) {
        int p = rank;
        for (int i = rank + 1; i < r; i++)
            if (fabs(work[(size_t)i * c + col]) > fabs(work[(size_t)p * c + col]))
                p = i;
        if (fabs(work[(size_t)p * c + col]) <= 1e-6 * scale)
            continue;
        for (int j = 0; j < c; j++) {
            double t = work[(size_t)p * c + j];
            work[(size_t)p * c + j] = work[(size_t)rank * c + j];
            work[(size_t)rank * c + j] = t;
        }
        for (int i = rank + 1; i < r; i++) {
            double f = work[(size_t)i * c + col] / work[(size_t)rank * c + col];
            for (int j = col; j < c; j++)
                work[(size_t)i * c + j] -= f * work[(size_t)rank * c + j];
        }
        rank++;
    }
    return rank;
}

static enum eng_status cert_mlp(struct ldr *L, const struct subnet *s, struct eng_certificate *out)
{
    struct eng_block_cert *bc = ldr_alloc(L, sizeof(*bc) * (size_t)s->n_layers);
    if (!bc)
        return ENG_ERR_NOMEM;
    out->invertible = true;
    for (int i = 0; i < s->n_layers; i++) {
        const struct subnet_layer *l = &s->layers[i];
        struct eng_block_cert *c = &bc[i];
        cert_default(c);
        c->index = i;
        if (l->is_linear) {
            c->type = "linear";
            if (l->out < l->in) {
                c->invertible = false;
                snprintf(c->reason, sizeof(c->reason), "input and output widths differ (%d -> %d): "
                         "many inputs map to one output", l->in, l->out);
            } else {
                double *work = ldr_alloc(L, sizeof(double) * (size_t)l->in * l->out);
                if (!work)
                    return ENG_ERR_NOMEM;
                int rank = matrix_rank(l->out, l->in, l->w, work);
                if (rank < l->in) {
                    c->invertible = false;
                    snprintf(c->reason, sizeof(c->reason), "rank-deficient layer: rank %d < input "
                             "width %d", rank, l->in);
                } else if (l->out > l->in) {
                    c->invertible = true;
                    snprintf(c->reason, sizeof(c->reason), "injective (full column rank %d) but "
                             "widens %d -> %d: inverse only on its image", rank, l->in, l->out);
                } else {
                    snprintf(c->reason, sizeof(c->reason), "square and full rank");
                }
            }
        } else {
            c->type = act_name(l->act);
            bool inj = act_injective(l->act) && !(l->act == ACT_LEAKY_RELU && !(l->p1 > 0)) &&
                       !(l->act == ACT_ELU && !(l->p1 > 0)) && l->act != ACT_GELU &&
                       l->act != ACT_GELU_TANH && l->act != ACT_SILU && l->act != ACT_LIPSWISH;
            c->invertible = inj;
            snprintf(c->reason, sizeof(c->reason), inj ? "strictly monotone activation"
                                                       : "non-injective activation (%s)",
                     act_name(l->act));
        }
        if (!c->invertible) {
            c->guarantee = ENG_GUARANTEE_NONE;
            out->invertible = false;
        }
    }
    out->guarantee = out->invertible ? ENG_GUARANTEE_ANALYTIC : ENG_GUARANTEE_NONE;
    out->certified = false;
    out->n_blocks = s->n_layers;
    out->blocks = bc;
    return ENG_OK;
}

enum eng_status cert_build(struct ldr *L, const struct blk *blocks, int n_blocks,
                           const struct subnet *mlp, struct eng_certificate *out)
{
    if (mlp)
        return cert_mlp(L, mlp, out);
    struct eng_block_cert *bc = ldr_alloc(L, sizeof(*bc) * (size_t)(n_blocks ? n_blocks : 1));
    if (!bc)
        return ENG_ERR_NOMEM;
    out->invertible = true;
    out->guarantee = ENG_GUARANTEE_ANALYTIC;
    out->certified = true;
    for (int i = 0; i < n_blocks; i++) {
        const struct blk *b = &blocks[i];
        cert_default(&bc[i]);
        if (b->ops->certify)
            b->ops->certify(b, &bc[i]);
        bc[i].index = i;
        bc[i].type = b->ops->type;
        if (!bc[i].invertible)
            out->invertible = false;
        if (bc[i].guarantee > out->guarantee)
            out->guarantee = bc[i].guarantee;
        if (b->numeric && bc[i].guarantee != ENG_GUARANTEE_CONTRACTION)
            out->certified = false;
    }
    if (!out->invertible)
        out->guarantee = ENG_GUARANTEE_NONE;
    out->n_blocks = n_blocks;
    out->blocks = bc;
    return ENG_OK;
}
