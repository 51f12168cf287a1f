/*
 * Radix router: one tree per HTTP method, keyed by path segment.
 *
 * A pattern is a '/'-separated list of segments: static text, `:name` (exactly one non-empty segment)
 * or `*name` (the rest of the path, possibly empty; last segment only). At every level a static child
 * is tried before the parameter child, which is tried before the catch-all (with backtracking), so
 * static beats parameter beats catch-all whatever the order the routes were added in.
 *
 * The router owns its nodes (allocated at load time, never on the request path). Matches refer to the
 * caller's path buffer and to parameter names owned by the router: both must outlive the match.
 */
#ifndef TR_ROUTER_H
#define TR_ROUTER_H

#include <stddef.h>

#define TR_ROUTER_MAX_PARAMS 16
#define TR_ROUTER_METHODS 64 /* indexed by http_parser's enum http_method */

typedef struct tr_router_s tr_router_t;

typedef struct tr_route_param_s {
    const char *name; /* owned by the router */
    size_t name_len;
    size_t offset; /* of the value, in the matched path */
    size_t len;
} tr_route_param_t;

typedef struct tr_route_match_s {
    unsigned nparams;
    tr_route_param_t params[TR_ROUTER_MAX_PARAMS];
} tr_route_match_t;

enum {
    TR_ROUTE_NOT_FOUND = -1,
    TR_ROUTE_METHOD_NOT_ALLOWED = -2,
};

tr_router_t *tr_router_new(void);
void tr_router_free(tr_router_t *router);

/* Method name ("GET") to its index, or -1 if HTTP has no such method. */
int tr_router_method_index(const char *name, size_t len);

/*
 * Add a route. Returns 0, or -1 with a message in err (a malformed pattern, an unknown method, or a
 * conflict with a route added before, which the message names).
 */
int tr_router_add(tr_router_t *router, const char *method, const char *pattern, size_t pattern_len, int handler,
                  char *err, size_t err_size);

/*
 * Find the handler for method (an index) and path (starting with '/', without query string).
 * Returns the handler (>= 0), TR_ROUTE_NOT_FOUND, or TR_ROUTE_METHOD_NOT_ALLOWED when the path matches
 * under other methods only. HEAD falls back to GET routes. Fills m's parameters on success.
 */
int tr_router_match(const tr_router_t *router, int method, const char *path, size_t len, tr_route_match_t *m);

/* The comma-separated methods whose routes match path ("GET, HEAD, POST"): the Allow header.
 * Returns its length (truncated to fit size - 1, always NUL-terminated). */
size_t tr_router_allow(const tr_router_t *router, const char *path, size_t len, char *buf, size_t size);

/* Number of routes added. */
unsigned tr_router_count(const tr_router_t *router);

/* "METHOD pattern" of the route added with this handler number ("GET /api/v1/protocols/:id"), for
 * logs, status and metrics; NULL for a number no route was added with. Owned by the router. */
const char *tr_router_label(const tr_router_t *router, int handler);

#endif
