/*
 * fuzz_loader.c — libFuzzer target: checkpoint bytes -> eng_model_load_mem -> every
 * operation of the loaded model.
 *
 * A model on disk is one .safetensors file (the manifest is its __metadata__.manifest), so
 * the input is exactly a file's bytes.  Each input is loaded twice: without the embedded
 * test vectors (ENG_LOAD_NO_SELFTEST, so checkpoints whose tensors were mutated still load
 * and their blocks run), and, when that succeeds, with them (the self test's own code).
 * A model that loads then goes through every operation engine/engine.h offers on a tiny
 * batch: forward, inverse (with solver statistics), log_prob, sample (with log-densities),
 * preimage (both methods, a few steps), the certificate and the info strings.  Any status
 * is fine; a crash, a leak, undefined behaviour or a hang is not, nor a load that fails
 * without a message or says out of memory.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>

#include "../../engine/engine.h"

#define ROWS 3

static void ops(const struct eng_model *m, struct eng_ws *ws)
{
    const struct eng_info *info = eng_model_info(m);
    const struct eng_dims *d = &info->dims;
    char err[ENG_ERR_LEN];
    /* the widths of a model that loaded are bounded by the loader; these are its inputs */
    size_t w = (size_t)(d->x > d->z ? d->x : d->z);
    if ((size_t)d->y > w)
        w = (size_t)d->y;
    w += (size_t)d->pad_x + (size_t)d->pad_y + 1;
    float *in = malloc(sizeof(float) * w * ROWS);
    float *y = malloc(sizeof(float) * ((size_t)d->y + 1) * ROWS);
    float *out = malloc(sizeof(float) * w * ROWS);
    float *out2 = malloc(sizeof(float) * w * ROWS);
    double *ld = malloc(sizeof(double) * ROWS * 4);
    int it[ROWS * 4];
    double res[ROWS * 4], eb[ROWS * 4];
    bool conv[ROWS * 4];
    if (!in || !y || !out || !out2 || !ld)
        goto out;
    for (size_t i = 0; i < w * ROWS; i++)
        in[i] = (float)((int)(i % 7) - 3) * 0.37f;
    for (size_t i = 0; i < ((size_t)d->y + 1) * ROWS; i++)
        y[i] = (float)((int)(i % 5) - 2) * 0.61f;
    const float *yp = d->y ? y : NULL;
    int yr = d->y ? ROWS : 0;
    struct eng_solver_opts so = {1e-5, 30, ENG_SOLVE_AUTO};
    struct eng_solver_stats ss = {it, res, eb, conv, false};

    (void)!eng_forward(m, ws, ROWS, in, yp, yr, out, out2, ld, err);
    (void)!eng_forward(m, ws, ROWS, in, yp, d->y ? 1 : 0, out, out2, ld, err);
    for (int method = 0; method < ENG_SOLVE_COUNT; method++) {
        so.method = method;
        (void)!eng_inverse(m, ws, ROWS, in, yp, yr, out, ld, &so, &ss, err);
    }
    (void)!eng_inverse(m, ws, ROWS, in, yp, yr, out, NULL, NULL, NULL, err);
    (void)!eng_log_prob(m, ws, ROWS, in, yp, yr, ld, err);
    so.method = ENG_SOLVE_AUTO;
    (void)!eng_sample(m, ws, yp, 7, 0, 0, ROWS, 1.0f, out, ld, &so, &ss, err);
    (void)!eng_sample(m, ws, yp, 7, 1, 255, 2, 0.5f, out, NULL, NULL, NULL, err);
    for (int method = ENG_PREIMAGE_GRADIENT; method <= ENG_PREIMAGE_EVOLUTIONARY; method++) {
        struct eng_preimage_opts po = {.method = method, .num_solutions = 2, .max_steps = 4,
                                       .seed = 3, .prior_weight = 0.1};
        float px[2 * 64];
        double pr[2];
        int nf = 0;
        if (d->x <= 64)
            (void)!eng_preimage(m, ws, in, yp, &po, px, pr, &nf, err);
    }
    const struct eng_certificate *c = eng_model_certificate(m);
    size_t sink = strlen(c->reason);
    for (int i = 0; i < c->n_blocks; i++)
        sink += strlen(c->blocks[i].reason) + strlen(c->blocks[i].type);
    sink += strlen(info->description) + strlen(info->manifest_json) + strlen(info->blocks_json);
    for (int i = 0; i < d->x; i++)
        sink += strlen(info->x_names[i]);
    for (int i = 0; i < d->y && info->y_names; i++)
        sink += strlen(info->y_names[i]);
    if (sink == 0)
        abort(); /* the manifest text is never empty */
out:
    free(in);
    free(y);
    free(out);
    free(out2);
    free(ld);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct eng_ws *ws;
    if (!ws && !(ws = eng_ws_new()))
        abort();
    char err[ENG_ERR_LEN];
    struct eng_model *m = NULL;
    enum eng_status st = eng_model_load_mem(data, size, "fuzz", ENG_LOAD_NO_SELFTEST, &m, err);
    if (st != ENG_OK) {
        /* no allocation fails here (ASan reports a huge one as a crash), so out of memory
         * means the header's syntax check and cJSON disagree */
        if (m || !err[0] || st == ENG_ERR_NOMEM) {
            fprintf(stderr, "fuzz_loader: failed load (%s) %s: %s\n", eng_status_str(st),
                    m ? "returned a model" : "", err);
            abort();
        }
        return 0;
    }
    ops(m, ws);
    eng_model_unref(m);
    m = NULL;
    if (eng_model_load_mem(data, size, "fuzz", 0, &m, err) == ENG_OK) {
        ops(m, ws);
        eng_model_unref(m);
    }
    return 0;
}
