/*
 * json_syntax.h — a JSON syntax check that allocates nothing, to tell a parser's
 * out-of-memory failure from a syntax error.
 *
 * cJSON returns NULL both when the text is not JSON and when an allocation fails while it
 * builds the tree.  After a failed cJSON parse, jsyn_valid() on the same text says which:
 * true means the text is one value cJSON accepts (so the failure was memory), false means
 * it is not JSON.  The check is at least as strict as cJSON (a text it passes, cJSON
 * parses when memory allows): literals, numbers as RFC 8259 writes them, strings with the
 * escapes and UTF-16 surrogate pairs cJSON decodes, objects with string keys, nesting at
 * most max_depth (cJSON's own limit is CJSON_NESTING_LIMIT, 1000).  Whitespace is any
 * byte up to 0x20, as cJSON skips it.  Bytes after the value are not looked at; *end (may
 * be NULL) gets the offset just past it.
 */
#ifndef INNSERVE_JSON_SYNTAX_H
#define INNSERVE_JSON_SYNTAX_H

#include <stdbool.h>
#include <stddef.h>

bool jsyn_valid(const char *s, size_t len, int max_depth, size_t *end);

#endif
