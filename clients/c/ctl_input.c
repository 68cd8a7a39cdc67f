/*
 * ctl_input.c — parsing innctl's matrix arguments (see ctl_input.h for the syntax).
 */
#include "ctl_input.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FILE (256u << 20)
#define MAX_VALUES (64u << 20)

static bool stdin_used;

static int fail(char err[CTL_ERR_LEN], const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(char err[CTL_ERR_LEN], const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, CTL_ERR_LEN, fmt, ap);
    va_end(ap);
    return -1;
}

void ctl_matrix_free(struct ctl_matrix *m)
{
    if (!m)
        return;
    free(m->v);
    m->v = NULL;
    m->rows = m->cols = 0;
}

char *ctl_read_file(const char *path, size_t *len, char err[CTL_ERR_LEN])
{
    FILE *f;
    bool is_stdin = strcmp(path, "-") == 0;
    if (is_stdin) {
        if (stdin_used) {
            fail(err, "standard input can be read only once");
            return NULL;
        }
        stdin_used = true;
        f = stdin;
    } else {
        f = fopen(path, "rb");
        if (!f) {
            fail(err, "cannot open %s: %s", path, strerror(errno));
            return NULL;
        }
    }
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (n + 1 >= cap) {
            if (cap >= MAX_FILE) {
                fail(err, "%s is larger than %u MiB", is_stdin ? "standard input" : path,
                     MAX_FILE >> 20);
                free(buf);
                buf = NULL;
                break;
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) {
            if (ferror(f)) {
                fail(err, "cannot read %s: %s", is_stdin ? "standard input" : path,
                     strerror(errno));
                free(buf);
                buf = NULL;
            }
            break;
        }
    }
    if (!is_stdin)
        fclose(f);
    if (!buf) {
        if (!err[0])
            fail(err, "out of memory reading %s", path);
        return NULL;
    }
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

/* ---- growable value list ------------------------------------------------------------ */

struct vals {
    double *v;
    size_t n, cap;
};

static int push(struct vals *s, double x, char err[CTL_ERR_LEN])
{
    if (s->n == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 64;
        if (nc > MAX_VALUES)
            return fail(err, "too many values (more than %u)", MAX_VALUES);
        double *nv = realloc(s->v, nc * sizeof(double));
        if (!nv)
            return fail(err, "out of memory");
        s->v = nv;
        s->cap = nc;
    }
    s->v[s->n++] = x;
    return 0;
}

/* ---- JSON ---------------------------------------------------------------------------- */

static int json_row(const cJSON *row, struct vals *s, int *cols, int r, const char *field,
                    char err[CTL_ERR_LEN])
{
    int c = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, row) {
        if (!cJSON_IsNumber(e) || !isfinite(e->valuedouble))
            return fail(err, "%s: row %d column %d is not a finite number", field, r, c);
        if (push(s, e->valuedouble, err))
            return -1;
        c++;
    }
    if (*cols < 0)
        *cols = c;
    else if (c != *cols)
        return fail(err, "%s: row %d has %d values, row 0 has %d", field, r, c, *cols);
    return 0;
}

static int parse_json(const char *text, const char *field, struct ctl_matrix *m,
                      char err[CTL_ERR_LEN])
{
    cJSON *root = cJSON_Parse(text);
    if (!root)
        return fail(err, "%s: not valid JSON", field);
    const cJSON *a = root;
    if (cJSON_IsObject(a)) {
        a = cJSON_GetObjectItemCaseSensitive(root, field);
        if (!a) {
            cJSON_Delete(root);
            return fail(err, "%s: the JSON object has no field \"%s\"", field, field);
        }
    }
    int rc = 0;
    struct vals s = {0};
    int rows = 0, cols = -1;
    if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) == 0) {
        rc = fail(err, "%s: expected a non-empty JSON array", field);
    } else if (cJSON_IsNumber(cJSON_GetArrayItem(a, 0))) {
        rc = json_row(a, &s, &cols, 0, field, err);
        rows = 1;
    } else {
        const cJSON *row;
        cJSON_ArrayForEach(row, a) {
            if (!cJSON_IsArray(row)) {
                rc = fail(err, "%s: row %d is not an array", field, rows);
                break;
            }
            if ((rc = json_row(row, &s, &cols, rows, field, err)) != 0)
                break;
            rows++;
        }
    }
    cJSON_Delete(root);
    if (rc == 0 && cols <= 0)
        rc = fail(err, "%s: rows are empty", field);
    if (rc) {
        free(s.v);
        return -1;
    }
    m->rows = rows;
    m->cols = cols;
    m->v = s.v;
    return 0;
}

/* ---- text: rows separated by newlines or ';', values by ',' or whitespace ------------ */

static bool numeric_token_start(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == ',')
        p++;
    char *end;
    errno = 0;
    strtod(p, &end);
    return end != p;
}

static int parse_text(const char *text, const char *field, struct ctl_matrix *m,
                      char err[CTL_ERR_LEN])
{
    struct vals s = {0};
    int rows = 0, cols = -1, line = 0;
    const char *p = text;
    bool first = true;
    while (*p) {
        const char *eol = p;
        while (*eol && *eol != '\n' && *eol != ';')
            eol++;
        line++;
        const char *q = p;
        while (q < eol && isspace((unsigned char)*q))
            q++;
        bool skip = q == eol || *q == '#';
        if (!skip && first && !numeric_token_start(q))
            skip = true; /* header line */
        if (!skip) {
            first = false;
            int c = 0;
            while (q < eol) {
                while (q < eol && (isspace((unsigned char)*q) || *q == ','))
                    q++;
                if (q >= eol || *q == '\r')
                    break;
                char *end;
                errno = 0;
                double v = strtod(q, &end);
                if (end == q || end > eol) {
                    free(s.v);
                    return fail(err, "%s: line %d: '%.*s' is not a number", field, line,
                                (int)(eol - q > 20 ? 20 : eol - q), q);
                }
                if (!isfinite(v)) {
                    free(s.v);
                    return fail(err, "%s: line %d: value %d is not finite", field, line, c);
                }
                if (push(&s, v, err)) {
                    free(s.v);
                    return -1;
                }
                c++;
                q = end;
                if (q < eol && !isspace((unsigned char)*q) && *q != ',') {
                    free(s.v);
                    return fail(err, "%s: line %d: unexpected '%c'", field, line, *q);
                }
            }
            if (c > 0) {
                if (cols < 0)
                    cols = c;
                else if (c != cols) {
                    free(s.v);
                    return fail(err, "%s: row %d has %d values, row 0 has %d", field, rows, c,
                                cols);
                }
                rows++;
            }
        }
        p = *eol ? eol + 1 : eol;
    }
    if (rows == 0) {
        free(s.v);
        return fail(err, "%s: no numbers given", field);
    }
    m->rows = rows;
    m->cols = cols;
    m->v = s.v;
    return 0;
}

static int parse_any(const char *text, const char *field, struct ctl_matrix *m,
                     char err[CTL_ERR_LEN])
{
    const char *p = text;
    while (isspace((unsigned char)*p))
        p++;
    if (*p == '[' || *p == '{')
        return parse_json(p, field, m, err);
    return parse_text(p, field, m, err);
}

int ctl_matrix_parse(const char *spec, const char *field, struct ctl_matrix *m,
                     char err[CTL_ERR_LEN])
{
    memset(m, 0, sizeof(*m));
    err[0] = '\0';
    if (!spec || !*spec)
        return fail(err, "%s: empty value", field);
    if (spec[0] == '@' || strcmp(spec, "-") == 0) {
        const char *path = spec[0] == '@' ? spec + 1 : "-";
        char *text = ctl_read_file(path, NULL, err);
        if (!text)
            return -1;
        int rc = parse_any(text, field, m, err);
        free(text);
        return rc;
    }
    return parse_any(spec, field, m, err);
}

int ctl_vector_parse(const char *spec, const char *field, double **out, char err[CTL_ERR_LEN])
{
    struct ctl_matrix m;
    if (ctl_matrix_parse(spec, field, &m, err))
        return -1;
    if (m.rows != 1) {
        ctl_matrix_free(&m);
        return fail(err, "%s: expected one list of numbers", field);
    }
    *out = m.v;
    return m.cols;
}
