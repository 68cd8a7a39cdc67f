/*
 * csv.c — CSV writer for posterior samples (csv.h).
 */
#include "csv.h"
#include "image.h"

#include <math.h>
#include "fmt.h"

#include <string.h>

static void field(struct proto_buf *b, const char *s)
{
    if (!strpbrk(s, ",\"\r\n")) {
        proto_buf_puts(b, s);
        return;
    }
    proto_buf_putc(b, '"');
    for (; *s; s++) {
        if (*s == '"')
            proto_buf_putc(b, '"');
        proto_buf_putc(b, *s);
    }
    proto_buf_putc(b, '"');
}

void proto_write_sample_csv(struct proto_buf *b, const struct eng_info *info,
                            const struct proto_result *r)
{
    const int dx = info->dims.x;
    const long N = r->num_samples;
    bool lp = r->sample_lp && (r->outputs & PROTO_OUT_LOG_PROB);
    struct proto_shape xs = proto_shape_x(info);
    proto_buf_puts(b, "obs,sample");
    for (int j = 0; j < dx && !proto_buf_failed(b); j++) {
        char col[48];
        const char *pos = proto_shape_column(&xs, j, col, sizeof col);
        proto_buf_putc(b, ',');
        field(b, pos ? pos : info->x_names ? info->x_names[j] : "");
    }
    proto_buf_puts(b, lp ? ",log_prob\n" : "\n");
    for (int o = 0; o < r->n && !proto_buf_failed(b); o++) {
        for (long i = 0; i < N && !proto_buf_failed(b); i++) {
            size_t row = (size_t)o * N + i;
            /* worst case of one line: two integers, dx floats, a double, separators */
            if (!proto_buf_reserve(b, 48 + (size_t)(dx + 1) * (PROTO_FMT_MAX + 1))) {
                /* near the cap: fall back to exact appends so the cap stays exact */
                if (b->state != PROTO_BUF_OVER)
                    return;
                b->state = PROTO_BUF_OK;
            }
            proto_buf_i64(b, o);
            proto_buf_putc(b, ',');
            proto_buf_i64(b, i);
            proto_buf_putc(b, ',');
            proto_buf_f32_list(b, r->samples + row * dx, (size_t)dx);
            if (lp) {
                proto_buf_putc(b, ',');
                /* -inf (outside a prior box) as numpy and pandas read it */
                if (isinf(r->sample_lp[row]) && r->sample_lp[row] < 0)
                    proto_buf_puts(b, "-inf");
                else
                    proto_buf_f64(b, r->sample_lp[row]);
            }
            proto_buf_putc(b, '\n');
        }
    }
}
