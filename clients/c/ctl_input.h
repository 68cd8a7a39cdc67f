/*
 * ctl_input.h — innctl's numeric inputs: matrices from the command line, files or stdin.
 *
 * One syntax for every matrix option (--x, --y, --z, --target):
 *   "1.5,0"            one row (commas or spaces between values)
 *   "1,2;3,4"          rows separated by ';'
 *   "[[1,2],[3,4]]"    JSON (a flat JSON array is one row)
 *   "@file"            a file: JSON (an array, or an object whose field named like the
 *                      option holds it) or CSV/whitespace text, one row per line; a first
 *                      line that is not numeric is taken as a header and skipped; blank
 *                      lines and lines starting with '#' are ignored
 *   "-"                the same, read from standard input
 * Values must be finite numbers and every row must have the same length.
 */
#ifndef INNSERVE_CTL_INPUT_H
#define INNSERVE_CTL_INPUT_H

#include <stddef.h>

#define CTL_ERR_LEN 512

struct ctl_matrix {
    int rows, cols;
    double *v; /* rows * cols, row-major; owned, free with ctl_matrix_free */
};

/* Parse `spec` (see above) for the option named `field` ("x", "y", ...).  Returns 0 and
 * fills *m, or -1 with a message in err.  Reading stdin twice is refused. */
int ctl_matrix_parse(const char *spec, const char *field, struct ctl_matrix *m,
                     char err[CTL_ERR_LEN]);
/* A flat list of numbers ("0.05,0.5,0.95"): returns the count, or -1 with err. */
int ctl_vector_parse(const char *spec, const char *field, double **out, char err[CTL_ERR_LEN]);
void ctl_matrix_free(struct ctl_matrix *m);

/* Read a whole file ("-" = stdin) into a NUL-terminated buffer (owned, free()).  NULL on
 * error with err set.  At most 256 MiB. */
char *ctl_read_file(const char *path, size_t *len, char err[CTL_ERR_LEN]);

#endif
