/*
 * inverse.c — FrEIA's Inverse: a wrapped block run backwards.
 *     forward(x | c) = inner⁻¹(x | c),  inverse(y | c) = inner(y | c)
 * and the log-dets follow (the inner block's inverse already reports the log-det of the
 * inverse map, −forward log-det at the recovered point).
 *
 * Manifest: {"type": "Inverse", "block": {...any block object...}, "block_shape": [...]}.
 * The wrapped block's input shape is FrEIA's module.dims_in: `block_shape` (1 to 3 positive
 * integers with d elements), or the Inverse's own input shape when absent (a block that keeps
 * the shape).  The wrapped block's output shape must be the Inverse's input shape; the
 * Inverse's output shape is the wrapped block's input shape.  A condition given to the
 * Inverse goes to the wrapped block (which must accept one).  Blocks with a numeric
 * inverse (IResNetBlock) are refused: their forward would need the iteration.
 *
 * Ownership: the wrapped struct blk and its private data live in the model's arena.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../block.h"
#include "../loader.h"

static enum eng_status inverse_load(struct blk *b, struct ldr *L, const cJSON *j)
{
    const cJSON *ij;
    enum eng_status st;
    if ((st = ldr_obj(L, j, "block", true, &ij)) != ENG_OK)
        return st;
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(ij, "type");
    if (!cJSON_IsString(ty))
        return ldr_fail(L, ENG_ERR_MANIFEST, "field 'block' must be a block object with a "
                        "string field 'type'");
    const struct blk_ops *ops = blk_lookup(ty->valuestring);
    if (!ops)
        return ldr_fail(L, ENG_ERR_MANIFEST, "field 'block': unknown block type \"%.60s\"; "
                        "known types: %s", ty->valuestring, blk_known_types());
    if (cJSON_GetObjectItemCaseSensitive(ij, "cond"))
        return ldr_fail(L, ENG_ERR_MANIFEST, "field 'block': give 'cond' on the Inverse, not "
                        "on the wrapped block");
    if (b->cond >= 0 && !ops->takes_cond)
        return ldr_fail(L, ENG_ERR_MANIFEST, "field 'cond': the wrapped %s takes no condition",
                        ops->type);
    if (b->cond < 0 && ops->needs_cond)
        return ldr_fail(L, ENG_ERR_MANIFEST, "field 'cond' is missing: the wrapped %s requires "
                        "a condition", ops->type);

    struct blk *in = ldr_alloc(L, sizeof(*in));
    if (!in)
        return ENG_ERR_NOMEM;
    *in = *b;
    in->ops = ops;
    in->priv = NULL;
    /* the wrapped block's input shape */
    const cJSON *sj = cJSON_GetObjectItemCaseSensitive(j, "block_shape");
    if (sj && !cJSON_IsNull(sj)) {
        int n = cJSON_IsArray(sj) ? cJSON_GetArraySize(sj) : 0;
        if (n < 1 || n > 3)
            return ldr_fail(L, ENG_ERR_MANIFEST, "field 'block_shape' must be a list of 1 to 3 "
                            "positive integers");
        long long prod = 1;
        for (int i = 0; i < 3; i++) {
            const cJSON *e = i < n ? cJSON_GetArrayItem(sj, i) : NULL;
            if (e && (!cJSON_IsNumber(e) || e->valuedouble < 1 || e->valuedouble > 1e9 ||
                      e->valuedouble != (int)e->valuedouble))
                return ldr_fail(L, ENG_ERR_MANIFEST, "block_shape[%d] must be a positive "
                                "integer", i);
            in->shape[i] = e ? (int)e->valuedouble : 1;
            prod *= in->shape[i];
        }
        if (prod != b->d)
            return ldr_fail(L, ENG_ERR_MANIFEST, "field 'block_shape' has %lld elements, the "
                            "block width is %d", prod, b->d);
        in->rank = n;
    }
    in->out_rank = in->rank;
    for (int k = 0; k < 3; k++)
        in->out_shape[k] = in->shape[k];
    size_t mark = ldr_push(L, ".block (%s)", ops->type);
    if ((st = ops->load(in, L, ij)) != ENG_OK)
        return st;
    ldr_pop(L, mark);
    if (in->numeric)
        return ldr_fail(L, ENG_ERR_MANIFEST, "field 'block': %s has a numeric inverse, which "
                        "an Inverse would have to run forward; not supported", ops->type);
    bool same = in->out_rank == b->rank;
    for (int k = 0; same && k < b->rank; k++)
        same = in->out_shape[k] == b->shape[k];
    if (!same)
        return ldr_fail(L, ENG_ERR_MANIFEST, "field 'block_shape': the wrapped %s maps it to a "
                        "shape of rank %d (%d, %d, %d), not to the Inverse's input shape (rank "
                        "%d: %d, %d, %d)", ops->type, in->out_rank, in->out_shape[0],
                        in->out_shape[1], in->out_shape[2], b->rank, b->shape[0], b->shape[1],
                        b->shape[2]);
    b->out_rank = in->rank;
    for (int k = 0; k < 3; k++)
        b->out_shape[k] = in->shape[k];
    b->priv = in;
    return ENG_OK;
}

static size_t inverse_scratch(const struct blk *b, int rows)
{
    const struct blk *in = b->priv;
    return in->ops->scratch(in, rows);
}

static void inverse_forward(const struct blk *b, struct blk_io *io)
{
    const struct blk *in = b->priv;
    in->ops->inverse(in, io);
}

static void inverse_inverse(const struct blk *b, struct blk_io *io)
{
    const struct blk *in = b->priv;
    in->ops->forward(in, io);
}

static void inverse_certify(const struct blk *b, struct eng_block_cert *out)
{
    const struct blk *in = b->priv;
    struct eng_block_cert c = *out;
    if (in->ops->certify)
        in->ops->certify(in, &c);
    out->invertible = c.invertible;
    out->guarantee = c.guarantee;
    out->lipschitz = c.lipschitz_inverse;
    out->lipschitz_inverse = c.lipschitz;
    out->condition = c.condition;
    snprintf(out->reason, sizeof(out->reason), "inverse of %s: %.200s", in->ops->type, c.reason);
}

const struct blk_ops blk_inverse_ops = {
    .type = "Inverse",
    .takes_cond = true,
    .load = inverse_load,
    .scratch = inverse_scratch,
    .forward = inverse_forward,
    .inverse = inverse_inverse,
    .certify = inverse_certify,
};
