/*
 * ui.h — the web page (GET /, /ui/app.js, /ui/style.css): the files of ui/ compiled into
 * the binary by ui/embed.c at build time (the table below is that generator's output), and
 * the headers they are served with.  Nothing is fetched from elsewhere at run time.
 *
 * The page and its assets hold no data and answer without the bearer token; the API calls
 * the page makes need it (the page asks for it and keeps it in sessionStorage).
 */
#ifndef INNSERVE_SERVER_UI_H
#define INNSERVE_SERVER_UI_H

#include <stddef.h>

struct srv_ui_asset {
    const char *path;           /* the URL path it is served at: "/", "/ui/app.js", ... */
    const char *ctype;          /* its Content-Type */
    const unsigned char *data;  /* its bytes (static) */
    size_t len;
    const char *etag;           /* quoted FNV-1a 64 of the bytes: "\"0123456789abcdef\"" */
};

/* Written by ui/embed.c (build/gen/ui_assets.c). */
extern const struct srv_ui_asset srv_ui_assets[];
extern const size_t srv_ui_n_assets;

/* The asset served at path, or NULL. */
const struct srv_ui_asset *srv_ui_find(const char *path);

/* Headers of every answer of the page (static strings).  The policy allows only this
 * origin's script, style and API, and images from data: and blob: URLs (the plots'
 * downloads); no inline script, no framing. */
#define SRV_UI_CSP "default-src 'none'; script-src 'self'; style-src 'self'; " \
                   "img-src 'self' data: blob:; connect-src 'self'; base-uri 'none'; " \
                   "form-action 'none'; frame-ancestors 'none'"
/* Revalidated each time (If-None-Match against the ETag answers 304): a new binary serves
 * its new page at once. */
#define SRV_UI_CACHE "no-cache"

#endif
