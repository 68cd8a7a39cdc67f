/*
 * reshape.c — the blocks that change only the per-row shape, not the values:
 *   Flatten   (C, H, W) -> (C*H*W,)          FrEIA Flatten: x.view(B, -1)
 *   Reshape   any shape -> output_dims        FrEIA Reshape: x.reshape(B, *output_dims)
 * A row is stored flat in row-major order, so both are the identity on the stored row
 * (log-det 0); load() declares the output shape the next node receives.
 */
#include <stdio.h>
#include <string.h>

#include "../block.h"
#include "../loader.h"

static size_t no_scratch(const struct blk *b, int rows)
{
    (void)b, (void)rows;
    return 0;
}

static void identity(const struct blk *b, struct blk_io *io) { (void)b, (void)io; }

static enum eng_status flatten_load(struct blk *b, struct ldr *L, const cJSON *j)
{
    (void)L, (void)j;
    b->out_rank = 1;
    b->out_shape[0] = b->d;
    b->out_shape[1] = b->out_shape[2] = 1;
    return ENG_OK;
}

/* "output_dims": 1 to 3 positive integers whose product is the input's size ("target_dim",
 * FrEIA's older name, is read too). */
static enum eng_status reshape_load(struct blk *b, struct ldr *L, const cJSON *j)
{
    const char *field = "output_dims";
    const cJSON *oj = cJSON_GetObjectItemCaseSensitive(j, field);
    if (!oj) {
        field = "target_dim";
        oj = cJSON_GetObjectItemCaseSensitive(j, field);
    }
    int n = cJSON_IsArray(oj) ? cJSON_GetArraySize(oj) : 0;
    if (n < 1 || n > 3)
        return ldr_fail(L, ENG_ERR_MANIFEST, "field 'output_dims' must be a list of 1 to 3 "
                        "positive integers (the shape without the batch dim)");
    long long prod = 1;
    int k = 0;
    for (const cJSON *e = oj->child; e; e = e->next, k++) {
        if (!cJSON_IsNumber(e) || e->valuedouble < 1 || e->valuedouble > 1 << 20 ||
            e->valuedouble != (double)(int)e->valuedouble)
            return ldr_fail(L, ENG_ERR_MANIFEST, "field '%s': entry %d must be a positive "
                            "integer", field, k);
        b->out_shape[k] = (int)e->valuedouble;
        prod *= b->out_shape[k];
    }
    if (prod != b->d)
        return ldr_fail(L, ENG_ERR_MANIFEST, "field '%s' has %lld elements, the input %d", field,
                        prod, b->d);
    b->out_rank = n;
    for (; k < 3; k++)
        b->out_shape[k] = 1;
    return ENG_OK;
}

/* The identity on the stored row: an isometry. */
static void reshape_certify(const struct blk *b, struct eng_block_cert *out)
{
    out->lipschitz = out->lipschitz_inverse = out->condition = 1.0;
    snprintf(out->reason, sizeof(out->reason), "%s: the same %d values in another shape",
             b->ops->type, b->d);
}

const struct blk_ops blk_flatten_ops = {
    .type = "Flatten",
    .load = flatten_load,
    .scratch = no_scratch,
    .forward = identity,
    .inverse = identity,
    .certify = reshape_certify,
};

const struct blk_ops blk_reshape_ops = {
    .type = "Reshape",
    .load = reshape_load,
    .scratch = no_scratch,
    .forward = identity,
    .inverse = identity,
    .certify = reshape_certify,
};
