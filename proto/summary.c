/*
 * summary.c — mean, std, quantiles and MAP of posterior samples (summary.h).
 */
#include "summary.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

void proto_summary_free(struct proto_summary *s)
{
    free(s->q);
    free(s->mean);
    free(s->std);
    free(s->quant);
    free(s->map);
    free(s->map_index);
    memset(s, 0, sizeof *s);
}

bool proto_summary_compute(struct proto_summary *s, const float *x, const double *lp,
                           int n_obs, long N, int dx, const double *q, int nq)
{
    memset(s, 0, sizeof *s);
    s->n_obs = n_obs;
    s->dx = dx;
    s->nq = nq;
    size_t od = (size_t)n_obs * dx;
    s->q = malloc(sizeof(double) * (size_t)(nq ? nq : 1));
    s->mean = malloc(sizeof(float) * od);
    s->std = malloc(sizeof(float) * od);
    s->quant = malloc(sizeof(float) * od * (size_t)(nq ? nq : 1));
    float *col = malloc(sizeof(float) * (size_t)N);
    if (lp) {
        s->map = malloc(sizeof(float) * od);
        s->map_index = malloc(sizeof(long) * (size_t)n_obs);
    }
    if (!s->q || !s->mean || !s->std || !s->quant || !col || (lp && (!s->map || !s->map_index))) {
        free(col);
        proto_summary_free(s);
        return false;
    }
    if (nq)
        memcpy(s->q, q, sizeof(double) * (size_t)nq);
    for (int o = 0; o < n_obs; o++) {
        const float *xo = x + (size_t)o * N * dx;
        for (int j = 0; j < dx; j++) {
            double sum = 0.0;
            for (long i = 0; i < N; i++)
                sum += xo[(size_t)i * dx + j];
            double mean = sum / (double)N;
            double ss = 0.0;
            for (long i = 0; i < N; i++) {
                double d = xo[(size_t)i * dx + j] - mean;
                ss += d * d;
            }
            s->mean[(size_t)o * dx + j] = (float)mean;
            s->std[(size_t)o * dx + j] = (float)sqrt(ss / (double)N);
            if (nq) {
                for (long i = 0; i < N; i++)
                    col[i] = xo[(size_t)i * dx + j];
                qsort(col, (size_t)N, sizeof(float), cmp_float);
                for (int k = 0; k < nq; k++) {
                    double h = (double)(N - 1) * q[k];
                    long lo = (long)floor(h);
                    if (lo > N - 1)
                        lo = N - 1;
                    long hi = lo + 1 < N ? lo + 1 : lo;
                    double fr = h - (double)lo;
                    double v = col[lo] + (col[hi] - (double)col[lo]) * fr;
                    s->quant[((size_t)k * n_obs + o) * dx + j] = (float)v;
                }
            }
        }
        if (lp) {
            const double *lo = lp + (size_t)o * N;
            long best = 0;
            for (long i = 1; i < N; i++)
                if (lo[i] > lo[best])
                    best = i;
            s->map_index[o] = best;
            memcpy(s->map + (size_t)o * dx, xo + (size_t)best * dx, sizeof(float) * (size_t)dx);
        }
    }
    free(col);
    return true;
}
