/*
 * The radix router (core/router.h): matching, priorities, parameters, 405 and Allow, and the routes it
 * refuses.
 */
#include <stdio.h>
#include <string.h>

#include "router.h"
#include "test.h"

static int GET, HEAD, POST, PUT, DELETE;

static tr_router_t *router(void)
{
    GET = tr_router_method_index("GET", 3);
    HEAD = tr_router_method_index("HEAD", 4);
    POST = tr_router_method_index("POST", 4);
    PUT = tr_router_method_index("PUT", 3);
    DELETE = tr_router_method_index("DELETE", 6);
    tr_router_t *r = tr_router_new();
    ASSERT_NOT_NULL(r);
    return r;
}

/* Add a route that must be accepted. */
#define ADD(r, method, pattern, handler)                                                                               \
    do {                                                                                                               \
        char err_[256] = "";                                                                                           \
        int rc_ = tr_router_add(r, method, pattern, strlen(pattern), handler, err_, sizeof(err_));                     \
        if (rc_ != 0)                                                                                                  \
            tr_test_fail(__FILE__, __LINE__, "tr_router_add(" #method ", " #pattern ") == 0", "%s", err_);             \
    } while (0)

/* Add a route that must be refused; its message is left in err. */
#define REFUSE(r, method, pattern, err)                                                                                \
    do {                                                                                                               \
        strcpy(err, "");                                                                                               \
        ASSERT_INT_EQ(tr_router_add(r, method, pattern, strlen(pattern), 99, err, sizeof(err)), -1);                   \
        ASSERT(strlen(err) > 0);                                                                                       \
    } while (0)

static tr_route_match_t m;

static int match(const tr_router_t *r, int method, const char *path)
{
    memset(&m, 0xa5, sizeof(m)); /* garbage, as in a reused request */
    return tr_router_match(r, method, path, strlen(path), &m);
}

/* The value of parameter i of the last match, which must be called name. */
#define ASSERT_PARAM(path, i, pname, value)                                                                            \
    do {                                                                                                               \
        ASSERT((unsigned)(i) < m.nparams);                                                                             \
        ASSERT_MEM_EQ(m.params[i].name, m.params[i].name_len, pname);                                                  \
        ASSERT(m.params[i].offset + m.params[i].len <= strlen(path));                                                  \
        ASSERT_MEM_EQ((path) + m.params[i].offset, m.params[i].len, value);                                            \
    } while (0)

TEST_IMPL(router_static)
{
    tr_router_t *r = router();
    ADD(r, "GET", "/users", 1);
    ADD(r, "GET", "/users/all", 2);
    ADD(r, "GET", "/about/team/leads", 3);
    ADD(r, "POST", "/users", 4);
    ASSERT_UINT_EQ(tr_router_count(r), 4);
    ASSERT_STR_EQ(tr_router_label(r, 2), "GET /users/all");
    ASSERT_STR_EQ(tr_router_label(r, 4), "POST /users");
    ASSERT(tr_router_label(r, 0) == NULL);
    ASSERT(tr_router_label(r, 5) == NULL);
    ASSERT(tr_router_label(r, -1) == NULL);

    ASSERT_INT_EQ(match(r, GET, "/users"), 1);
    ASSERT_UINT_EQ(m.nparams, 0);
    ASSERT_INT_EQ(match(r, GET, "/users/all"), 2);
    ASSERT_INT_EQ(match(r, GET, "/about/team/leads"), 3);
    ASSERT_INT_EQ(match(r, POST, "/users"), 4);

    ASSERT_INT_EQ(match(r, GET, "/user"), TR_ROUTE_NOT_FOUND);
    ASSERT_INT_EQ(match(r, GET, "/usersx"), TR_ROUTE_NOT_FOUND);
    ASSERT_INT_EQ(match(r, GET, "/Users"), TR_ROUTE_NOT_FOUND); /* case-sensitive */
    ASSERT_INT_EQ(match(r, GET, "/about/team"), TR_ROUTE_NOT_FOUND);
    ASSERT_INT_EQ(match(r, GET, "/about/team/leads/x"), TR_ROUTE_NOT_FOUND);
    ASSERT_INT_EQ(match(r, GET, "/users/all/"), TR_ROUTE_NOT_FOUND);

    /* Only the first len bytes are the path. */
    ASSERT_INT_EQ(tr_router_match(r, GET, "/users/allxyz", 10, &m), 2);
    /* Not a path, or not a method. */
    ASSERT_INT_EQ(tr_router_match(r, GET, "users", 5, &m), TR_ROUTE_NOT_FOUND);
    ASSERT_INT_EQ(tr_router_match(r, GET, "", 0, &m), TR_ROUTE_NOT_FOUND);
    ASSERT_INT_EQ(tr_router_match(r, -1, "/users", 6, &m), TR_ROUTE_NOT_FOUND);
    ASSERT_INT_EQ(tr_router_match(r, TR_ROUTER_METHODS, "/users", 6, &m), TR_ROUTE_NOT_FOUND);
    tr_router_free(r);
}

TEST_IMPL(router_root)
{
    tr_router_t *r = router();
    ASSERT_INT_EQ(match(r, GET, "/"), TR_ROUTE_NOT_FOUND); /* empty router */
    ADD(r, "GET", "/", 7);
    ADD(r, "GET", "/x", 8);
    ASSERT_INT_EQ(match(r, GET, "/"), 7);
    ASSERT_UINT_EQ(m.nparams, 0);
    ASSERT_INT_EQ(match(r, GET, "/x"), 8);
    ASSERT_INT_EQ(match(r, GET, "//"), TR_ROUTE_NOT_FOUND);
    ASSERT_INT_EQ(match(r, GET, "/y"), TR_ROUTE_NOT_FOUND);
    tr_router_free(r);

    /* "/" alone does not make every path match, nor does a parameter route match "/". */
    r = router();
    ADD(r, "GET", "/:id", 1);
    ASSERT_INT_EQ(match(r, GET, "/"), TR_ROUTE_NOT_FOUND);
    ASSERT_INT_EQ(match(r, GET, "/42"), 1);
    ADD(r, "GET", "/", 2);
    ASSERT_INT_EQ(match(r, GET, "/"), 2);
    ASSERT_INT_EQ(match(r, GET, "/42"), 1);
    tr_router_free(r);
}

TEST_IMPL(router_params)
{
    tr_router_t *r = router();
    ADD(r, "GET", "/users/:id", 1);
    ADD(r, "GET", "/users/:id/posts/:post", 2);
    ADD(r, "GET", "/:a/:b/:c/:d", 3);

    const char *p = "/users/42";
    ASSERT_INT_EQ(match(r, GET, p), 1);
    ASSERT_UINT_EQ(m.nparams, 1);
    ASSERT_PARAM(p, 0, "id", "42");
    ASSERT_UINT_EQ(m.params[0].offset, 7);
    ASSERT_UINT_EQ(m.params[0].len, 2);

    p = "/users/42/posts/abc";
    ASSERT_INT_EQ(match(r, GET, p), 2);
    ASSERT_UINT_EQ(m.nparams, 2);
    ASSERT_PARAM(p, 0, "id", "42");
    ASSERT_PARAM(p, 1, "post", "abc");
    ASSERT_UINT_EQ(m.params[1].offset, 16);
    ASSERT_UINT_EQ(m.params[1].len, 3);

    /* Values are raw bytes of the path: no decoding, any character but '/'. */
    p = "/users/a%20b;c=d";
    ASSERT_INT_EQ(match(r, GET, p), 1);
    ASSERT_PARAM(p, 0, "id", "a%20b;c=d");

    p = "/w/x/yy/zzz";
    ASSERT_INT_EQ(match(r, GET, p), 3);
    ASSERT_UINT_EQ(m.nparams, 4);
    ASSERT_PARAM(p, 0, "a", "w");
    ASSERT_PARAM(p, 1, "b", "x");
    ASSERT_PARAM(p, 2, "c", "yy");
    ASSERT_PARAM(p, 3, "d", "zzz");

    /* A parameter is exactly one non-empty segment. */
    ASSERT_INT_EQ(match(r, GET, "/users/"), TR_ROUTE_NOT_FOUND);
    ASSERT_INT_EQ(match(r, GET, "/users//posts/abc"), TR_ROUTE_NOT_FOUND);
    ASSERT_INT_EQ(match(r, GET, "/users/42/posts/"), TR_ROUTE_NOT_FOUND);
    ASSERT_INT_EQ(match(r, GET, "/users/42/posts/abc/def"), TR_ROUTE_NOT_FOUND);

    /* The maximum number of parameters. */
    char pattern[512] = "", path[512] = "";
    for (int i = 0; i < TR_ROUTER_MAX_PARAMS; i++) {
        snprintf(pattern + strlen(pattern), sizeof(pattern) - strlen(pattern), "/:p%d", i);
        snprintf(path + strlen(path), sizeof(path) - strlen(path), "/v%d", i);
    }
    ADD(r, "PUT", pattern, 4);
    ASSERT_INT_EQ(match(r, PUT, path), 4);
    ASSERT_UINT_EQ(m.nparams, TR_ROUTER_MAX_PARAMS);
    ASSERT_PARAM(path, 0, "p0", "v0");
    ASSERT_PARAM(path, TR_ROUTER_MAX_PARAMS - 1, "p15", "v15");
    tr_router_free(r);
}

TEST_IMPL(router_catch_all)
{
    tr_router_t *r = router();
    ADD(r, "GET", "/files/*path", 1);
    ADD(r, "GET", "/*all", 2);

    const char *p = "/files/a/b/c.txt";
    ASSERT_INT_EQ(match(r, GET, p), 1);
    ASSERT_UINT_EQ(m.nparams, 1);
    ASSERT_PARAM(p, 0, "path", "a/b/c.txt");
    ASSERT_UINT_EQ(m.params[0].offset, 7);
    ASSERT_UINT_EQ(m.params[0].len, 9);

    p = "/files/"; /* the rest may be empty */
    ASSERT_INT_EQ(match(r, GET, p), 1);
    ASSERT_UINT_EQ(m.nparams, 1);
    ASSERT_PARAM(p, 0, "path", "");
    ASSERT_UINT_EQ(m.params[0].offset, 7);

    p = "/files/dir/"; /* trailing slash kept */
    ASSERT_INT_EQ(match(r, GET, p), 1);
    ASSERT_PARAM(p, 0, "path", "dir/");

    p = "/anything/else";
    ASSERT_INT_EQ(match(r, GET, p), 2);
    ASSERT_PARAM(p, 0, "all", "anything/else");
    p = "/";
    ASSERT_INT_EQ(match(r, GET, p), 2);
    ASSERT_PARAM(p, 0, "all", "");
    ASSERT_UINT_EQ(m.params[0].offset, 1);

    /* After parameters. */
    ADD(r, "GET", "/u/:id/raw/*rest", 3);
    p = "/u/7/raw/x/y";
    ASSERT_INT_EQ(match(r, GET, p), 3);
    ASSERT_UINT_EQ(m.nparams, 2);
    ASSERT_PARAM(p, 0, "id", "7");
    ASSERT_PARAM(p, 1, "rest", "x/y");
    tr_router_free(r);
}

/* Static beats parameter beats catch-all, in either order of insertion. */
static void check_priority(tr_router_t *r)
{
    ASSERT_INT_EQ(match(r, GET, "/u/me"), 1);
    ASSERT_UINT_EQ(m.nparams, 0);
    const char *p = "/u/42";
    ASSERT_INT_EQ(match(r, GET, p), 2);
    ASSERT_UINT_EQ(m.nparams, 1);
    ASSERT_PARAM(p, 0, "id", "42");
    p = "/u/42/more";
    ASSERT_INT_EQ(match(r, GET, p), 3);
    ASSERT_UINT_EQ(m.nparams, 1);
    ASSERT_PARAM(p, 0, "rest", "42/more");
    p = "/u/";
    ASSERT_INT_EQ(match(r, GET, p), 3); /* an empty segment is no parameter */
    ASSERT_PARAM(p, 0, "rest", "");
}

TEST_IMPL(router_priority)
{
    tr_router_t *r = router();
    ADD(r, "GET", "/u/me", 1);
    ADD(r, "GET", "/u/:id", 2);
    ADD(r, "GET", "/u/*rest", 3);
    check_priority(r);
    tr_router_free(r);

    r = router();
    ADD(r, "GET", "/u/*rest", 3);
    ADD(r, "GET", "/u/:id", 2);
    ADD(r, "GET", "/u/me", 1);
    check_priority(r);
    tr_router_free(r);

    r = router();
    ADD(r, "GET", "/u/:id", 2);
    ADD(r, "GET", "/u/*rest", 3);
    ADD(r, "GET", "/u/me", 1);
    check_priority(r);
    tr_router_free(r);
}

TEST_IMPL(router_backtracking)
{
    tr_router_t *r = router();
    ADD(r, "GET", "/a/b/c/d", 1);
    ADD(r, "GET", "/a/:x/c", 2);
    ADD(r, "GET", "/a/b/:y/z", 3);
    ADD(r, "GET", "/a/:x/c/w", 4);

    /* /a/b/c is a prefix of a static route but no route itself: the parameter route takes it. */
    const char *p = "/a/b/c";
    ASSERT_INT_EQ(match(r, GET, p), 2);
    ASSERT_UINT_EQ(m.nparams, 1);
    ASSERT_PARAM(p, 0, "x", "b");
    ASSERT_UINT_EQ(m.params[0].offset, 3);
    ASSERT_UINT_EQ(m.params[0].len, 1);

    ASSERT_INT_EQ(match(r, GET, "/a/b/c/d"), 1);
    ASSERT_UINT_EQ(m.nparams, 0);

    /* /a/b/:y/z fails at its last segment after binding y: y must not be left in the match. */
    p = "/a/b/c/w";
    ASSERT_INT_EQ(match(r, GET, p), 4);
    ASSERT_UINT_EQ(m.nparams, 1);
    ASSERT_PARAM(p, 0, "x", "b");

    p = "/a/b/q/z";
    ASSERT_INT_EQ(match(r, GET, p), 3);
    ASSERT_UINT_EQ(m.nparams, 1);
    ASSERT_PARAM(p, 0, "y", "q");

    ASSERT_INT_EQ(match(r, GET, "/a/b/q/w"), TR_ROUTE_NOT_FOUND);
    tr_router_free(r);

    /* Back to a catch-all higher up, after a parameter deeper down failed. */
    r = router();
    ADD(r, "GET", "/*all", 1);
    ADD(r, "GET", "/a/:x", 2);
    ADD(r, "GET", "/a/b/c/d", 3);
    p = "/a/b/c";
    ASSERT_INT_EQ(match(r, GET, p), 1);
    ASSERT_UINT_EQ(m.nparams, 1);
    ASSERT_PARAM(p, 0, "all", "a/b/c");
    p = "/a/b";
    ASSERT_INT_EQ(match(r, GET, p), 2);
    ASSERT_PARAM(p, 0, "x", "b");
    tr_router_free(r);

    /* Parameter then catch-all at the same level. */
    r = router();
    ADD(r, "GET", "/a/:x/c", 1);
    ADD(r, "GET", "/a/*rest", 2);
    p = "/a/q/z";
    ASSERT_INT_EQ(match(r, GET, p), 2);
    ASSERT_UINT_EQ(m.nparams, 1);
    ASSERT_PARAM(p, 0, "rest", "q/z");
    p = "/a/q/c";
    ASSERT_INT_EQ(match(r, GET, p), 1);
    ASSERT_UINT_EQ(m.nparams, 1);
    ASSERT_PARAM(p, 0, "x", "q");
    tr_router_free(r);
}

TEST_IMPL(router_head_fallback)
{
    tr_router_t *r = router();
    ADD(r, "GET", "/doc/:id", 1);
    ADD(r, "GET", "/both", 2);
    ADD(r, "HEAD", "/both", 3);
    ADD(r, "POST", "/post-only", 4);

    const char *p = "/doc/9";
    ASSERT_INT_EQ(match(r, HEAD, p), 1);
    ASSERT_UINT_EQ(m.nparams, 1);
    ASSERT_PARAM(p, 0, "id", "9");
    /* A HEAD route of its own wins over the GET route. */
    ASSERT_INT_EQ(match(r, HEAD, "/both"), 3);
    ASSERT_INT_EQ(match(r, GET, "/both"), 2);
    /* GET does not fall back to HEAD, and HEAD falls back to GET only. */
    ASSERT_INT_EQ(match(r, HEAD, "/post-only"), TR_ROUTE_METHOD_NOT_ALLOWED);
    ASSERT_INT_EQ(match(r, HEAD, "/nowhere"), TR_ROUTE_NOT_FOUND);
    tr_router_free(r);

    r = router();
    ADD(r, "HEAD", "/h", 1);
    ASSERT_INT_EQ(match(r, HEAD, "/h"), 1);
    ASSERT_INT_EQ(match(r, GET, "/h"), TR_ROUTE_METHOD_NOT_ALLOWED);
    tr_router_free(r);
}

TEST_IMPL(router_method_not_allowed)
{
    tr_router_t *r = router();
    ADD(r, "GET", "/items", 1);
    ADD(r, "POST", "/items/:id", 2);
    ADD(r, "DELETE", "/files/*path", 3);

    ASSERT_INT_EQ(match(r, POST, "/items"), TR_ROUTE_METHOD_NOT_ALLOWED);
    ASSERT_INT_EQ(match(r, PUT, "/items"), TR_ROUTE_METHOD_NOT_ALLOWED);
    ASSERT_INT_EQ(match(r, GET, "/items/5"), TR_ROUTE_METHOD_NOT_ALLOWED);
    ASSERT_INT_EQ(match(r, HEAD, "/items/5"), TR_ROUTE_METHOD_NOT_ALLOWED);
    ASSERT_INT_EQ(match(r, GET, "/files/x/y"), TR_ROUTE_METHOD_NOT_ALLOWED);
    /* No method at all matches: 404, not 405. */
    ASSERT_INT_EQ(match(r, POST, "/nothing"), TR_ROUTE_NOT_FOUND);
    ASSERT_INT_EQ(match(r, GET, "/items/5/x"), TR_ROUTE_NOT_FOUND);
    ASSERT_INT_EQ(match(r, PUT, "/items/"), TR_ROUTE_NOT_FOUND);
    /* And the right method still matches. */
    ASSERT_INT_EQ(match(r, POST, "/items/5"), 2);
    tr_router_free(r);
}

static const char *allow(const tr_router_t *r, const char *path)
{
    static char buf[256];
    memset(buf, 'X', sizeof(buf));
    size_t n = tr_router_allow(r, path, strlen(path), buf, sizeof(buf));
    ASSERT_UINT_EQ(n, strlen(buf));
    return buf;
}

TEST_IMPL(router_allow)
{
    tr_router_t *r = router();
    ADD(r, "GET", "/items", 1);
    ADD(r, "POST", "/items/:id", 2);
    ADD(r, "PUT", "/items/:id", 3);
    ADD(r, "GET", "/all", 4);
    ADD(r, "POST", "/all", 5);
    ADD(r, "PUT", "/all", 6);
    ADD(r, "DELETE", "/all", 7);
    ADD(r, "HEAD", "/head", 8);
    ADD(r, "PATCH", "/*any", 9);

    ASSERT_STR_EQ(allow(r, "/items"), "GET, HEAD, PATCH");
    ASSERT_STR_EQ(allow(r, "/items/1"), "POST, PUT, PATCH");
    ASSERT_STR_EQ(allow(r, "/all"), "DELETE, GET, HEAD, POST, PUT, PATCH");
    ASSERT_STR_EQ(allow(r, "/head"), "HEAD, PATCH");
    tr_router_free(r);

    r = router();
    ADD(r, "GET", "/only-get", 1);
    ASSERT_STR_EQ(allow(r, "/only-get"), "GET, HEAD");
    ASSERT_STR_EQ(allow(r, "/nothing"), "");
    tr_router_free(r);
}

/* A buffer too small for the whole list: the result stays a NUL-terminated string of the returned
 * length, within size - 1 bytes. */
TEST_IMPL(router_allow_truncated)
{
    tr_router_t *r = router();
    ADD(r, "GET", "/x", 1);
    ADD(r, "POST", "/x", 2);
    const char *full = "GET, HEAD, POST";
    for (size_t size = 1; size <= strlen(full) + 1; size++) {
        char buf[32];
        memset(buf, 'X', sizeof(buf));
        size_t n = tr_router_allow(r, "/x", 2, buf, size);
        ASSERT(memchr(buf, '\0', size) != NULL);
        if (n != strlen(buf))
            tr_test_fail(__FILE__, __LINE__, "tr_router_allow(...) == strlen(buf)",
                         "size %zu: returned %zu, buf holds \"%s\" (%zu bytes)", size, n, buf, strlen(buf));
        ASSERT(n <= size - 1);
        ASSERT(strncmp(buf, full, n) == 0);
        if (size == strlen(full) + 1)
            ASSERT_STR_EQ(buf, full);
    }
    tr_router_free(r);
}

/* No path (or one that does not start with '/'): no method matches, as in tr_router_match. Found by
 * spec/fuzz/fuzz_router (corpus/router/regression-allow-empty-path): the empty path was scanned
 * from one byte past its end. */
TEST_IMPL(router_allow_no_path)
{
    tr_router_t *r = router();
    ADD(r, "GET", "/a/*rest", 1);
    ADD(r, "POST", "/:x", 2);
    char buf[32];
    char path[] = "/a/b";
    ASSERT_UINT_EQ(tr_router_allow(r, path, 0, buf, sizeof(buf)), 0);
    ASSERT_STR_EQ(buf, "");
    ASSERT_UINT_EQ(tr_router_allow(r, "a/b", 3, buf, sizeof(buf)), 0);
    ASSERT_STR_EQ(buf, "");
    tr_router_free(r);
}

TEST_IMPL(router_malformed)
{
    tr_router_t *r = router();
    ADD(r, "GET", "/ok", 1);
    char err[256];

    REFUSE(r, "GET", "users", err);
    ASSERT_STR_CONTAINS(err, "users");
    ASSERT_STR_CONTAINS(err, "must start with '/'");
    REFUSE(r, "GET", "", err);

    REFUSE(r, "GET", "/users/:", err); /* empty parameter name */
    ASSERT_STR_CONTAINS(err, "/users/:");
    ASSERT_STR_CONTAINS(err, "name");
    REFUSE(r, "GET", "/:/x", err);
    REFUSE(r, "GET", "/files/*", err);     /* empty catch-all name */
    REFUSE(r, "GET", "/users/:id-x", err); /* not a name */

    REFUSE(r, "GET", "/files/*path/x", err); /* catch-all not last */
    ASSERT_STR_CONTAINS(err, "/files/*path/x");
    ASSERT_STR_CONTAINS(err, "last");
    REFUSE(r, "GET", "/*path/", err);

    REFUSE(r, "GET", "/users/id:x", err); /* ':' inside a segment */
    ASSERT_STR_CONTAINS(err, "/users/id:x");
    REFUSE(r, "GET", "/a:b", err);
    REFUSE(r, "GET", "/files/x*", err);

    REFUSE(r, "FETCH", "/fine", err); /* unknown method */
    ASSERT_STR_CONTAINS(err, "FETCH");
    ASSERT_STR_CONTAINS(err, "method");
    REFUSE(r, "get", "/fine", err); /* methods are upper case */
    REFUSE(r, "", "/fine", err);

    REFUSE(r, "GET", "/search?q=1", err);
    REFUSE(r, "GET", "/page#top", err);

    /* Nothing refused was added, and what was there still works. */
    ASSERT_UINT_EQ(tr_router_count(r), 1);
    ASSERT_INT_EQ(match(r, GET, "/ok"), 1);
    ASSERT_INT_EQ(match(r, GET, "/users/42"), TR_ROUTE_NOT_FOUND);
    ASSERT_INT_EQ(match(r, GET, "/files/a/x"), TR_ROUTE_NOT_FOUND);
    ASSERT_INT_EQ(match(r, GET, "/fine"), TR_ROUTE_NOT_FOUND);
    tr_router_free(r);
}

TEST_IMPL(router_conflict_duplicate)
{
    tr_router_t *r = router();
    char err[256];
    ADD(r, "GET", "/users/:id", 1);
    REFUSE(r, "GET", "/users/:id", err);
    ASSERT_STR_CONTAINS(err, "GET /users/:id");
    ASSERT_STR_CONTAINS(err, "before");

    ADD(r, "GET", "/static", 2);
    REFUSE(r, "GET", "/static", err);
    ASSERT_STR_CONTAINS(err, "/static");
    ADD(r, "GET", "/files/*p", 3);
    REFUSE(r, "GET", "/files/*p", err);
    ASSERT_STR_CONTAINS(err, "/files/*p");

    /* The same pattern under another method is no conflict. */
    ADD(r, "POST", "/users/:id", 4);
    ADD(r, "HEAD", "/users/:id", 5);
    /* Nor are a parameter and a catch-all, or a static segment and a parameter, at one position. */
    ADD(r, "GET", "/users/*rest", 6);
    ADD(r, "GET", "/users/me", 7);

    ASSERT_UINT_EQ(tr_router_count(r), 7);
    ASSERT_INT_EQ(match(r, GET, "/users/5"), 1); /* the first route kept its handler */
    ASSERT_INT_EQ(match(r, GET, "/static"), 2);
    tr_router_free(r);
}

/* Two names for the parameter (or catch-all) at one position: refused, naming the route that
 * declared the first name. */
TEST_IMPL(router_conflict_names)
{
    tr_router_t *r = router();
    char err[256];
    ADD(r, "GET", "/p/:id/x", 1);
    REFUSE(r, "GET", "/p/:name/y", err);
    ASSERT_STR_CONTAINS(err, "/p/:name/y");
    ASSERT_STR_CONTAINS(err, ":id");
    ASSERT_STR_CONTAINS(err, "/p/:id/x");

    ADD(r, "GET", "/f/*path", 2);
    REFUSE(r, "GET", "/f/*rest", err);
    ASSERT_STR_CONTAINS(err, "/f/*rest");
    ASSERT_STR_CONTAINS(err, "*path");
    ASSERT_STR_CONTAINS(err, "/f/*path");

    /* The same name under another method is another tree. */
    ADD(r, "POST", "/p/:name/y", 3);
    ASSERT_UINT_EQ(tr_router_count(r), 3);
    ASSERT_INT_EQ(match(r, GET, "/p/1/x"), 1);
    ASSERT_INT_EQ(match(r, GET, "/p/1/y"), TR_ROUTE_METHOD_NOT_ALLOWED);
    tr_router_free(r);
}

TEST_IMPL(router_trailing_slash)
{
    tr_router_t *r = router();
    ADD(r, "GET", "/users", 1);
    ADD(r, "GET", "/docs/", 2);
    ADD(r, "GET", "/u/:id", 3);
    ASSERT_INT_EQ(match(r, GET, "/users"), 1);
    ASSERT_INT_EQ(match(r, GET, "/users/"), TR_ROUTE_NOT_FOUND);
    ASSERT_INT_EQ(match(r, GET, "/docs/"), 2);
    ASSERT_INT_EQ(match(r, GET, "/docs"), TR_ROUTE_NOT_FOUND);
    ASSERT_INT_EQ(match(r, GET, "/u/1"), 3);
    ASSERT_INT_EQ(match(r, GET, "/u/1/"), TR_ROUTE_NOT_FOUND);
    /* Both forms can be routes of their own. */
    ADD(r, "GET", "/users/", 4);
    ASSERT_INT_EQ(match(r, GET, "/users/"), 4);
    ASSERT_INT_EQ(match(r, GET, "/users"), 1);
    tr_router_free(r);
}

TEST_IMPL(router_many_routes)
{
    enum { N = 1000 };
    static const char *const methods[] = {"GET", "POST", "PUT", "DELETE"};
    tr_router_t *r = router();
    char pattern[128], path[128];
    for (int i = 0; i < N; i++) {
        snprintf(pattern, sizeof(pattern), "/api/v%d/res%d", i % 7, i);
        ADD(r, methods[i % 4], pattern, i);
        snprintf(pattern, sizeof(pattern), "/api/v%d/res%d/:id/sub/:sid", i % 7, i);
        ADD(r, methods[i % 4], pattern, N + i);
    }
    ADD(r, "GET", "/api/*rest", 3 * N);
    ASSERT_UINT_EQ(tr_router_count(r), 2 * N + 1);

    for (int i = 0; i < N; i++) {
        int method = tr_router_method_index(methods[i % 4], strlen(methods[i % 4]));
        snprintf(path, sizeof(path), "/api/v%d/res%d", i % 7, i);
        ASSERT_INT_EQ(match(r, method, path), i);
        snprintf(path, sizeof(path), "/api/v%d/res%d/x%d/sub/y%d", i % 7, i, i, i);
        ASSERT_INT_EQ(match(r, method, path), N + i);
        ASSERT_UINT_EQ(m.nparams, 2);
        char want[32];
        snprintf(want, sizeof(want), "x%d", i);
        ASSERT_PARAM(path, 0, "id", want);
        snprintf(want, sizeof(want), "y%d", i);
        ASSERT_PARAM(path, 1, "sid", want);
        /* Under the wrong version: the catch-all (GET) or 405/404. */
        snprintf(path, sizeof(path), "/api/v%d/res%d", (i + 1) % 7, i);
        ASSERT_INT_EQ(match(r, GET, path), 3 * N);
    }
    ASSERT_INT_EQ(match(r, POST, "/api/v0/res1"), TR_ROUTE_METHOD_NOT_ALLOWED); /* res1 is a POST route */
    ASSERT_INT_EQ(match(r, POST, "/api/v1/res1"), 1);
    ASSERT_INT_EQ(match(r, POST, "/elsewhere"), TR_ROUTE_NOT_FOUND);
    tr_router_free(r);
}

TEST_IMPL(router_method_index)
{
    tr_router_free(router()); /* sets the method indexes */
    ASSERT(GET >= 0 && HEAD >= 0 && POST >= 0 && PUT >= 0 && DELETE >= 0);
    ASSERT(GET != HEAD && GET != POST && POST != PUT && PUT != DELETE);
    ASSERT(GET < TR_ROUTER_METHODS && DELETE < TR_ROUTER_METHODS);
    ASSERT(tr_router_method_index("PATCH", 5) >= 0);
    ASSERT(tr_router_method_index("OPTIONS", 7) >= 0);
    ASSERT_INT_EQ(tr_router_method_index("GETX", 3), GET); /* only len bytes count */
    ASSERT_INT_EQ(tr_router_method_index("get", 3), -1);
    ASSERT_INT_EQ(tr_router_method_index("GE", 2), -1);
    ASSERT_INT_EQ(tr_router_method_index("", 0), -1);
    ASSERT_INT_EQ(tr_router_method_index("FETCH", 5), -1);
    ASSERT_INT_EQ(tr_router_method_index("<unknown>", 9), -1);
}
