/*
 * status_page — the HTML status page served at GET / (SPEC §2.4): one self-contained document
 * (inline CSS and script, no external assets) that polls GET /stats every second and draws
 * requests per second and events per second on a canvas, with the totals beside it.
 *
 * Owns: a static, read-only document. Pure; any thread.
 */
#ifndef RC_STATUS_PAGE_H
#define RC_STATUS_PAGE_H

#include <stddef.h>

#define STATUS_PAGE_CONTENT_TYPE "text/html; charset=utf-8"
/* Extra response headers (CRLF-terminated): the page may talk to its own origin only, and its
   inline script/style are the only ones allowed to run. */
#define STATUS_PAGE_HEADERS                                                                   \
    "Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline'; "               \
    "style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; "         \
    "form-action 'none'; frame-ancestors 'none'\r\n"                                          \
    "X-Content-Type-Options: nosniff\r\nCache-Control: no-cache\r\n"

/* The document; *len receives its length in bytes. Never NULL. */
const char *status_page_html(size_t *len);

#endif
