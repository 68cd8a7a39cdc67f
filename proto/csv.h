/*
 * csv.h — posterior samples as CSV (Accept: text/csv): a header
 * `obs,sample,<x names>[,log_prob]` and one line per sample, numbers printed by the
 * round-trip printers of fmt.h.  Names are quoted per RFC 4180 when they need it.  The
 * columns of an image or signal model's x are named by position instead: c0_h3_w5 for
 * (channel 0, row 3, column 5) of a [C, H, W] row, c0_l3 for a [C, L] row (image.h).
 */
#ifndef INNSERVE_PROTO_CSV_H
#define INNSERVE_PROTO_CSV_H

#include "response.h"

/* r: a sample result (samples present); log_prob column when r->sample_lp and the
 * request asked for log_prob. */
void proto_write_sample_csv(struct proto_buf *b, const struct eng_info *info,
                            const struct proto_result *r);

#endif
