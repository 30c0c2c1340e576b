/*
 * seeds — writes the seed corpus of one fuzz target from the case tables of its unit tests, so
 * the corpora start from every input the tests already thought of (and follow them: `make
 * fuzz-seeds` re-harvests). Built once per target with -DSEED_<TARGET>, against the stand-in
 * criterion header of fuzz/seedgen (the unit-test file is compiled for its tables only).
 *
 * Usage: seeds_<target> DIR  — writes DIR/t-NNN files (existing ones are overwritten).
 * Each file is in the input format of its target (see the header of fuzz/fuzz_<target>.c).
 */
#if defined(SEED_HTTP)
#include "../tests/unit/test_http.c"
#elif defined(SEED_JSON) || defined(SEED_SESSION)
#include "../tests/unit/test_json.c"
#elif defined(SEED_DECIMAL)
#include "../tests/unit/test_decimal.c"
#elif defined(SEED_ROUTER)
#include "../tests/unit/test_router.c"
#else
#error "define one of SEED_HTTP SEED_JSON SEED_SESSION SEED_DECIMAL SEED_ROUTER"
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *dir;
static unsigned nseed;

/* Write prefix (plen bytes, may be 0) + p[0..n) as the next seed file. */
static void seed2(const void *prefix, size_t plen, const void *p, size_t n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/t-%03u", dir, nseed++);
    FILE *f = fopen(path, "wb");
    if (!f || (plen && fwrite(prefix, 1, plen, f) != plen) || (n && fwrite(p, 1, n, f) != n) ||
        fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

#if defined(SEED_SESSION)
/* Requests for the routes and framings the session handles beyond POST /event. */
static const char *const extra[] = {
    "GET /stats HTTP/1.1\r\nHost: t\r\n\r\n",
    "HEAD /stats HTTP/1.1\r\nHost: t\r\n\r\nGET /health HTTP/1.1\r\nHost: t\r\n\r\n",
    "GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /livez HTTP/1.0\r\n\r\n",
    "GET /readyz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\nGET /stats HTTP/1.1\r\n\r\n",
    "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n",
    "POST /reset HTTP/1.1\r\nHost: t\r\nX-API-Key: k\r\nContent-Length: 0\r\n\r\n",
    "POST /reset HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer nope\r\nContent-Length: 0\r\n\r\n",
    "OPTIONS /event HTTP/1.1\r\nHost: t\r\n\r\nDELETE /stats HTTP/1.1\r\nHost: t\r\n\r\n",
    "GET /nope HTTP/1.1\r\nHost: t\r\n\r\nOPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n",
    "POST /api/v2/increment HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"
    "GET /api/v2/increment HTTP/1.1\r\nHost: t\r\n\r\n"
    "POST /api/v1/increment HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"
    "GET /api/v1/counter HTTP/1.1\r\nHost: t\r\n\r\n",
    "POST /event HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    "a\r\n{\"userId\":\r\n10;x=y\r\n\"c1\",\"value\":2.5}\r\n0\r\nT: v\r\n\r\n",
    "POST /event HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 27\r\n\r\n"
    "{\"userId\":\"e1\",\"value\":1.5}",
    "POST /event HTTP/1.1\r\nHost: t\r\nContent-Length: 99999\r\n\r\n",
    "GET /stats?scope=cluster HTTP/1.1\r\nHost: t\r\n\r\nGET /stats?scope=x HTTP/1.1\r\nHost: "
    "t\r\n\r\n",
    "\x16\x03\x01\x02\x01\x01\x02\x01\xfc\x03\x03garbage\r\n\r\n",
    "GET /health HTTP/1.1\r\nHost: t\r\n\r\nGET /health HTTP/1.1\r\nHost: t\r\n",
};
#endif

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    dir = argv[1];
#if defined(SEED_HTTP)
    /* byte 0 = 0: default limits; 0x21: small limits (fuzz_http.c limits_from) */
    static const char dflt[1] = {0}, small[2] = {0x21, 0x33};
    char *all = NULL;
    size_t alln = 0;
    for (size_t i = 0; i < sizeof good_cases / sizeof good_cases[0]; i++) {
        seed2(dflt, 1, good_cases[i].in, good_cases[i].n);
        seed2(small, 2, good_cases[i].in, good_cases[i].n);
        all = realloc(all, alln + good_cases[i].n);
        memcpy(all + alln, good_cases[i].in, good_cases[i].n);
        alln += good_cases[i].n;
    }
    seed2(dflt, 1, all, alln); /* every valid request, pipelined */
    free(all);
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++)
        seed2(dflt, 1, bad_cases[i].in, bad_cases[i].n);
#elif defined(SEED_JSON)
    for (size_t i = 0; i < sizeof ev_cases / sizeof ev_cases[0]; i++)
        seed2(NULL, 0, ev_cases[i].body, ev_cases[i].len);
#elif defined(SEED_SESSION)
    for (size_t i = 0; i < sizeof ev_cases / sizeof ev_cases[0]; i += 2) {
        char head[160];
        int hl = snprintf(head, sizeof head,
                          "POST /event HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n\r\n",
                          ev_cases[i].len);
        char *req = malloc((size_t)hl + ev_cases[i].len + 64);
        memcpy(req, head, (size_t)hl);
        memcpy(req + hl, ev_cases[i].body, ev_cases[i].len);
        static const char stats[] = "GET /stats HTTP/1.1\r\nHost: t\r\n\r\n";
        memcpy(req + hl + ev_cases[i].len, stats, sizeof stats - 1);
        seed2(NULL, 0, req, (size_t)hl + ev_cases[i].len + sizeof stats - 1);
        free(req);
    }
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++)
        seed2(NULL, 0, extra[i], strlen(extra[i]));
    /* Large answers pipelined faster than they are sent: 200 x (/metrics + /) (~6 KiB each) outgrow
       the 256 KiB output buffer, so the session must pause (back-pressure), not refuse. */
    static const char m[] = "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n";
    char *big = malloc(200 * (sizeof m - 1));
    for (size_t i = 0; i < 200; i++)
        memcpy(big + i * (sizeof m - 1), m, sizeof m - 1);
    seed2(NULL, 0, big, 200 * (sizeof m - 1));
    free(big);
#elif defined(SEED_DECIMAL)
    /* byte 0 picks max_abs (fuzz_decimal.c bounds[]): 1 = 1e15 (the /event bound), 0 = DEC_MAX */
    for (size_t i = 0; i < sizeof parse_cases / sizeof parse_cases[0]; i++) {
        const char mode = parse_cases[i].max_abs == 0 ? 1 : 0;
        seed2(&mode, 1, parse_cases[i].in, strlen(parse_cases[i].in));
    }
#elif defined(SEED_ROUTER)
    /* byte 0 = method (enum http_method) */
    for (size_t i = 0; i < NDEFS; i++)
        for (unsigned char m = 0; m < HTTP_M__COUNT; m += 2)
            seed2(&m, 1, defs[i].path, strlen(defs[i].path));
    for (size_t i = 0; i < sizeof unknown_paths / sizeof unknown_paths[0]; i++) {
        const unsigned char m = (unsigned char)(i % HTTP_M__COUNT);
        seed2(&m, 1, unknown_paths[i], strlen(unknown_paths[i]));
    }
#endif
    printf("%s: %u seeds\n", dir, nseed);
    return 0;
}
