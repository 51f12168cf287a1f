/*
 * libFuzzer harness: the route pattern parser and the matcher (core/router.c). The input is lines:
 * "METHOD PATTERN" lines add routes (most are refused: malformed, unknown method, conflicting), and
 * "? PATH" lines are matched against what was added (and their Allow list built).
 *
 * Checked beyond the sanitizers: a match returns a handler that was added, or a not-found code; its
 * parameters lie inside the path; the Allow list is NUL-terminated within its buffer; and a route
 * made only of static segments that was added matches its own pattern.
 */
#include <stdint.h>
#include <string.h>

#include "fuzz.h"

#define MAX_ROUTES 64

static int is_static(const char *p, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (p[i] == ':' || p[i] == '*' || p[i] == '?' || p[i] == '%')
            return 0;
    return len > 0 && p[0] == '/';
}

static void match(tr_router_t *r, int method, const char *path, size_t len, int nadded)
{
    tr_route_match_t m;
    int h = tr_router_match(r, method, path, len, &m);
    FUZZ_CHECK(h < nadded && h >= TR_ROUTE_METHOD_NOT_ALLOWED);
    if (h >= 0) {
        FUZZ_CHECK(m.nparams <= TR_ROUTER_MAX_PARAMS);
        for (unsigned i = 0; i < m.nparams; i++)
            FUZZ_CHECK(m.params[i].offset + m.params[i].len <= len);
    }
    char allow[64];
    size_t n = tr_router_allow(r, path, len, allow, sizeof(allow));
    FUZZ_CHECK(n < sizeof(allow) && allow[n] == '\0');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tr_router_t *r = tr_router_new();
    char line[1024], err[256];
    int nadded = 0;
    const char *p = (const char *)data, *end = p + size;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = (size_t)((nl ? nl : end) - p);
        const char *next = nl ? nl + 1 : end;
        if (n >= sizeof(line)) {
            p = next;
            continue;
        }
        memcpy(line, p, n);
        line[n] = '\0';
        p = next;
        char *sp = memchr(line, ' ', n);
        if (sp == NULL)
            continue;
        *sp = '\0';
        const char *pattern = sp + 1;
        size_t plen = n - (size_t)(pattern - line);
        if (strcmp(line, "?") == 0) {
            match(r, tr_router_method_index("GET", 3), pattern, plen, nadded);
            match(r, tr_router_method_index("POST", 4), pattern, plen, nadded);
        } else if (nadded < MAX_ROUTES) {
            if (tr_router_add(r, line, pattern, plen, nadded, err, sizeof(err)) == 0) {
                int method = tr_router_method_index(line, strlen(line));
                FUZZ_CHECK(method >= 0);
                if (is_static(pattern, plen) && memchr(pattern, '\0', plen) == NULL) {
                    tr_route_match_t m;
                    int h = tr_router_match(r, method, pattern, plen, &m);
                    FUZZ_CHECK(h >= 0);
                }
                nadded++;
            } else {
                FUZZ_CHECK(memchr(err, '\0', sizeof(err)) != NULL && err[0] != '\0');
            }
        }
    }
    FUZZ_CHECK((int)tr_router_count(r) == nadded);
    tr_router_free(r);
    return 0;
}
