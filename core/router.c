#include "router.h"

#include <http_parser.h>
#include <stdio.h>
#include <string.h>

#include "pool.h"

typedef struct node_s node_t;

/* A `:name` or `*name` child: one per node, whatever the name, so two names at one position conflict. */
typedef struct wildcard_s {
    node_t *node;
    char *name;
    char *origin; /* the route that created it, for conflict messages */
} wildcard_t;

struct node_s {
    char *segment; /* static text of this node, as a child of its parent */
    size_t segment_len;
    node_t **statics;
    unsigned nstatics;
    wildcard_t param;     /* the `:name` child */
    wildcard_t catch_all; /* the `*name` child: always a leaf */
    int handler;          /* -1: no route ends here */
    char *pattern;        /* the route that ends here, for conflict messages */
};

struct tr_router_s {
    node_t *roots[TR_ROUTER_METHODS];
    unsigned count;
    char **labels; /* "METHOD pattern" by handler number (NULL where none) */
    unsigned nlabels;
};

static node_t *node_new(const char *segment, size_t len)
{
    node_t *n = tr_mem_alloc(sizeof(*n));
    memset(n, 0, sizeof(*n));
    n->handler = -1;
    if (segment != NULL) {
        n->segment = tr_mem_alloc(len + 1);
        memcpy(n->segment, segment, len);
        n->segment[len] = '\0';
        n->segment_len = len;
    }
    return n;
}

static void node_free(node_t *n)
{
    if (n == NULL)
        return;
    for (unsigned i = 0; i < n->nstatics; i++)
        node_free(n->statics[i]);
    tr_mem_free(n->statics);
    wildcard_t *wcs[] = {&n->param, &n->catch_all};
    for (int i = 0; i < 2; i++) {
        node_free(wcs[i]->node);
        tr_mem_free(wcs[i]->name);
        tr_mem_free(wcs[i]->origin);
    }
    tr_mem_free(n->segment);
    tr_mem_free(n->pattern);
    tr_mem_free(n);
}

tr_router_t *tr_router_new(void)
{
    tr_router_t *r = tr_mem_alloc(sizeof(*r));
    memset(r, 0, sizeof(*r));
    return r;
}

void tr_router_free(tr_router_t *router)
{
    if (router == NULL)
        return;
    for (int i = 0; i < TR_ROUTER_METHODS; i++)
        node_free(router->roots[i]);
    for (unsigned i = 0; i < router->nlabels; i++)
        tr_mem_free(router->labels[i]);
    tr_mem_free(router->labels);
    tr_mem_free(router);
}

unsigned tr_router_count(const tr_router_t *router)
{
    return router->count;
}

const char *tr_router_label(const tr_router_t *router, int handler)
{
    if (handler < 0 || (unsigned)handler >= router->nlabels)
        return NULL;
    return router->labels[handler];
}

/* Remember "METHOD pattern" as handler's label. */
static void set_label(tr_router_t *router, int handler, const char *method, const char *pattern, size_t plen)
{
    if ((unsigned)handler >= router->nlabels) {
        unsigned n = (unsigned)handler + 1;
        router->labels = tr_mem_realloc(router->labels, sizeof(char *) * n);
        memset(router->labels + router->nlabels, 0, sizeof(char *) * (n - router->nlabels));
        router->nlabels = n;
    }
    size_t mlen = strlen(method);
    char *label = tr_mem_alloc(mlen + 1 + plen + 1);
    memcpy(label, method, mlen);
    label[mlen] = ' ';
    memcpy(label + mlen + 1, pattern, plen);
    label[mlen + 1 + plen] = '\0';
    tr_mem_free(router->labels[handler]);
    router->labels[handler] = label;
}

int tr_router_method_index(const char *name, size_t len)
{
    for (int i = 0; i < TR_ROUTER_METHODS; i++) {
        const char *s = http_method_str((enum http_method)i);
        if (strcmp(s, "<unknown>") == 0)
            break;
        if (strlen(s) == len && memcmp(s, name, len) == 0)
            return i;
    }
    return -1;
}

static int valid_name(const char *s, size_t len)
{
    if (len == 0)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'))
            return 0;
    }
    return 1;
}

static char *dup_n(const char *s, size_t len)
{
    char *d = tr_mem_alloc(len + 1);
    memcpy(d, s, len);
    d[len] = '\0';
    return d;
}

/* The wildcard child for segment seg (":id" or "*rest"), made on first use; NULL with a message in err if
 * a route declared before used another name at this position. */
static node_t *wildcard_child(wildcard_t *wc, const char *seg, size_t len, const char *method, const char *pattern,
                              size_t plen, char *err, size_t err_size)
{
    if (wc->node == NULL) {
        wc->node = node_new(NULL, 0);
        wc->name = dup_n(seg + 1, len - 1);
        wc->origin = dup_n(pattern, plen);
    } else if (strlen(wc->name) != len - 1 || memcmp(wc->name, seg + 1, len - 1) != 0) {
        snprintf(err, err_size,
                 "%s %.*s: %s '%.*s' conflicts with '%c%s' at the same position in the route %s %s declared before",
                 method, (int)plen, pattern, seg[0] == ':' ? "parameter" : "catch-all", (int)len, seg, seg[0], wc->name,
                 method, wc->origin);
        return NULL;
    }
    return wc->node;
}

int tr_router_add(tr_router_t *router, const char *method, const char *pattern, size_t plen, int handler, char *err,
                  size_t err_size)
{
    int m = tr_router_method_index(method, strlen(method));
    if (m < 0) {
        snprintf(err, err_size, "unknown HTTP method '%s'", method);
        return -1;
    }
    if (plen == 0 || pattern[0] != '/') {
        snprintf(err, err_size, "pattern '%.*s' must start with '/'", (int)plen, pattern);
        return -1;
    }
    if (memchr(pattern, '?', plen) != NULL || memchr(pattern, '#', plen) != NULL) {
        snprintf(err, err_size, "pattern '%.*s' must not contain '?' or '#'", (int)plen, pattern);
        return -1;
    }
    /* Validate the whole pattern before touching the tree, so a bad route leaves it unchanged. */
    unsigned nparams = 0;
    for (const char *p = pattern + 1, *end = pattern + plen;;) {
        const char *e = memchr(p, '/', (size_t)(end - p));
        if (e == NULL)
            e = end;
        size_t len = (size_t)(e - p);
        if (len > 0 && (p[0] == ':' || p[0] == '*')) {
            if (!valid_name(p + 1, len - 1)) {
                snprintf(err, err_size, "pattern '%.*s': parameter '%.*s' needs a name of letters, digits or _",
                         (int)plen, pattern, (int)len, p);
                return -1;
            }
            if (p[0] == '*' && e != end) {
                snprintf(err, err_size, "pattern '%.*s': catch-all '%.*s' must be the last segment", (int)plen, pattern,
                         (int)len, p);
                return -1;
            }
            if (++nparams > TR_ROUTER_MAX_PARAMS) {
                snprintf(err, err_size, "pattern '%.*s' has more than %d parameters", (int)plen, pattern,
                         TR_ROUTER_MAX_PARAMS);
                return -1;
            }
        } else if (memchr(p, ':', len) != NULL || memchr(p, '*', len) != NULL) {
            snprintf(err, err_size, "pattern '%.*s': ':' and '*' may only start a segment", (int)plen, pattern);
            return -1;
        }
        if (e == end)
            break;
        p = e + 1;
    }

    if (router->roots[m] == NULL)
        router->roots[m] = node_new(NULL, 0);
    node_t *n = router->roots[m];
    for (const char *p = pattern + 1, *end = pattern + plen;;) {
        const char *e = memchr(p, '/', (size_t)(end - p));
        if (e == NULL)
            e = end;
        size_t len = (size_t)(e - p);
        if (len > 0 && (p[0] == ':' || p[0] == '*')) {
            n = wildcard_child(p[0] == ':' ? &n->param : &n->catch_all, p, len, method, pattern, plen, err, err_size);
            if (n == NULL)
                return -1;
        } else {
            node_t *child = NULL;
            for (unsigned i = 0; i < n->nstatics; i++) {
                if (n->statics[i]->segment_len == len && memcmp(n->statics[i]->segment, p, len) == 0) {
                    child = n->statics[i];
                    break;
                }
            }
            if (child == NULL) {
                child = node_new(p, len);
                n->statics = tr_mem_realloc(n->statics, sizeof(node_t *) * (n->nstatics + 1));
                n->statics[n->nstatics++] = child;
            }
            n = child;
        }
        if (e == end)
            break;
        p = e + 1;
    }
    if (n->handler >= 0) {
        snprintf(err, err_size, "%s %.*s conflicts with the route %s %s declared before", method, (int)plen, pattern,
                 method, n->pattern);
        return -1;
    }
    n->handler = handler;
    n->pattern = dup_n(pattern, plen);
    if (handler >= 0)
        set_label(router, handler, method, pattern, plen);
    router->count++;
    return 0;
}

/* Match the segments starting at p (just after a '/'); p == NULL means the path is used up. */
static int match_node(const node_t *n, const char *path, const char *p, const char *end, tr_route_match_t *m)
{
    if (p == NULL)
        return n->handler;
    const char *e = memchr(p, '/', (size_t)(end - p));
    const char *next = e != NULL ? e + 1 : NULL;
    if (e == NULL)
        e = end;
    size_t len = (size_t)(e - p);

    for (unsigned i = 0; i < n->nstatics; i++) {
        const node_t *c = n->statics[i];
        if (c->segment_len == len && memcmp(c->segment, p, len) == 0) {
            int h = match_node(c, path, next, end, m);
            if (h >= 0)
                return h;
            break;
        }
    }
    if (n->param.node != NULL && len > 0) {
        unsigned saved = m->nparams;
        tr_route_param_t *pp = &m->params[m->nparams++];
        pp->name = n->param.name;
        pp->name_len = strlen(n->param.name);
        pp->offset = (size_t)(p - path);
        pp->len = len;
        int h = match_node(n->param.node, path, next, end, m);
        if (h >= 0)
            return h;
        m->nparams = saved;
    }
    if (n->catch_all.node != NULL && n->catch_all.node->handler >= 0) {
        tr_route_param_t *pp = &m->params[m->nparams++];
        pp->name = n->catch_all.name;
        pp->name_len = strlen(n->catch_all.name);
        pp->offset = (size_t)(p - path);
        pp->len = (size_t)(end - p);
        return n->catch_all.node->handler;
    }
    return -1;
}

static int match_method(const tr_router_t *router, int method, const char *path, size_t len, tr_route_match_t *m)
{
    const node_t *root = router->roots[method];
    if (root == NULL)
        return -1;
    m->nparams = 0;
    return match_node(root, path, path + 1, path + len, m);
}

int tr_router_match(const tr_router_t *router, int method, const char *path, size_t len, tr_route_match_t *m)
{
    if (len == 0 || path[0] != '/' || method < 0 || method >= TR_ROUTER_METHODS)
        return TR_ROUTE_NOT_FOUND;
    int h = match_method(router, method, path, len, m);
    if (h >= 0)
        return h;
    if (method == HTTP_HEAD) {
        h = match_method(router, HTTP_GET, path, len, m);
        if (h >= 0)
            return h;
    }
    for (int i = 0; i < TR_ROUTER_METHODS; i++) {
        tr_route_match_t scratch;
        if (i != method && router->roots[i] != NULL && match_method(router, i, path, len, &scratch) >= 0)
            return TR_ROUTE_METHOD_NOT_ALLOWED;
    }
    return TR_ROUTE_NOT_FOUND;
}

size_t tr_router_allow(const tr_router_t *router, const char *path, size_t len, char *buf, size_t size)
{
    size_t used = 0;
    buf[0] = '\0';
    if (len == 0 || path[0] != '/') /* as tr_router_match: no path, no route (and no segment to scan) */
        return 0;
    for (int i = 0; i < TR_ROUTER_METHODS; i++) {
        tr_route_match_t scratch;
        int matched = router->roots[i] != NULL && match_method(router, i, path, len, &scratch) >= 0;
        /* GET routes answer HEAD too. */
        if (!matched && i == HTTP_HEAD && router->roots[HTTP_GET] != NULL)
            matched = match_method(router, HTTP_GET, path, len, &scratch) >= 0;
        if (!matched)
            continue;
        int n = snprintf(buf + used, size - used, "%s%s", used ? ", " : "", http_method_str((enum http_method)i));
        if (n < 0 || (size_t)n >= size - used) {
            buf[used] = '\0'; /* drop the method that did not fit whole */
            break;
        }
        used += (size_t)n;
    }
    return used;
}
