/*
 * fmt.h — fast round-trippable number printing for large JSON/CSV answers.
 *
 * proto_fmt_f32 writes the shortest decimal that reads back (strtof) as the same float32
 * (Ryu, Adams 2018: exact, verified exhaustively against strtof); proto_fmt_f64 writes a
 * decimal that reads back (strtod) as the same double (Grisu2, Loitsch 2010: always
 * round-trips, shortest in ~99.9% of cases).  Both produce valid JSON numbers: "0.0",
 * "-0.0", "1.5", "123.0", "0.000123", "1e-7", "3.4028235e38"; non-finite values print as
 * "null".  Pure functions, no locale, no allocation; thread safe.
 */
#ifndef INNSERVE_PROTO_FMT_H
#define INNSERVE_PROTO_FMT_H

#include <stddef.h>

/* Longest output of either printer, without a terminating NUL. */
#define PROTO_FMT_MAX 32

/* Write v into out (at least PROTO_FMT_MAX bytes); returns the length; no NUL written. */
size_t proto_fmt_f32(char *out, float v);
size_t proto_fmt_f64(char *out, double v);

#endif
