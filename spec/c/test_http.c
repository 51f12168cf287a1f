/*
 * The HTTP glue (core/http.c) and the request API (core/ffi_api.c), driven through the in-process
 * test API of core/testing.c: raw bytes go through the real parser callbacks, router and response
 * serializer, as on a socket.
 *
 * testing.c keeps one fake connection: each tr_ffi_test_request ends the previous request (its
 * context goes back to the pool and its serial changes) and parses a new one.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "ffi_api.h"
#include "pool.h"
#include "router.h"
#include "test.h"
#include "testing.h"

/* The limits testing.c configures. */
#define MAX_BODY (1 << 20)
#define MAX_HEADER (8 << 10)
#define MAX_URI (4 << 10)

static char err[256];

static tr_router_t *new_router(void)
{
    tr_router_t *r = tr_ffi_test_router_new();
    ASSERT_NOT_NULL(r);
    return r;
}

static void add(tr_router_t *r, const char *method, const char *pattern, int handler)
{
    char e[256] = "";
    int rc = tr_ffi_router_add(r, method, pattern, strlen(pattern), handler, e, sizeof(e));
    if (rc != 0)
        tr_test_fail(__FILE__, __LINE__, "tr_ffi_router_add(...) == 0", "%s %s: %s", method, pattern, e);
}

/* Run raw request bytes; NULL (with err set) when the request was rejected or is incomplete. */
static tr_req_pub_t *request_n(tr_router_t *r, const char *raw, size_t len)
{
    strcpy(err, "(untouched)");
    return tr_ffi_test_request(raw, len, r, err, sizeof(err));
}

static tr_req_pub_t *request(tr_router_t *r, const char *raw)
{
    return request_n(r, raw, strlen(raw));
}

/* A request that must parse. */
#define REQUEST_OK(pub, r, raw)                                                                                        \
    do {                                                                                                               \
        (pub) = request(r, raw);                                                                                       \
        if ((pub) == NULL)                                                                                             \
            tr_test_fail(__FILE__, __LINE__, "tr_ffi_test_request(...) != NULL", "rejected: %s", err);                 \
    } while (0)

/* A request that must be rejected with err starting with the status. */
#define REJECTED(r, raw, len, status_text)                                                                             \
    do {                                                                                                               \
        ASSERT_NULL(request_n(r, raw, len));                                                                           \
        ASSERT_STR_EQ(err, status_text);                                                                               \
    } while (0)

/* Request-API shorthands on the current ctx (pub, serial). */
static const char *path_of(tr_req_pub_t *pub, uint32_t s, size_t *len)
{
    return tr_ffi_req_path(pub, s, len);
}

/* call, which returns a string and its length in len_ (a size_t the caller declares), gives want. */
#define ASSERT_REQ_STR(call, want)                                                                                     \
    do {                                                                                                               \
        len_ = 12345;                                                                                                  \
        const char *v_ = call;                                                                                         \
        ASSERT_NOT_NULL(v_);                                                                                           \
        ASSERT_MEM_EQ(v_, len_, want);                                                                                 \
    } while (0)

#define HEADER(pub, s, name) tr_ffi_req_header(pub, s, name, strlen(name), &len_)
#define QUERY(pub, s, name) tr_ffi_req_query(pub, s, name, strlen(name), &len_)
#define PARAM(pub, s, name) tr_ffi_req_param(pub, s, name, strlen(name), &len_)

static void finish(tr_req_pub_t *pub, const char *body, size_t len)
{
    ASSERT_INT_EQ(tr_ffi_resp_finish(pub, pub->serial, body, len), 0);
}

/* The message of the last refused set_header. */
static const char *header_err;

static int set_header(tr_req_pub_t *pub, const char *name, const char *value)
{
    header_err = NULL;
    return tr_ffi_resp_header(pub, pub->serial, name, strlen(name), value, strlen(value), &header_err);
}

/* set_header is refused with a message containing what. */
#define HEADER_REFUSED(pub, name, value, what)                                                                         \
    do {                                                                                                               \
        ASSERT_INT_EQ(set_header(pub, name, value), TR_FFI_ERROR);                                                     \
        ASSERT_NOT_NULL(header_err);                                                                                   \
        ASSERT_MEM_CONTAINS(header_err, strlen(header_err), what);                                                     \
    } while (0)

/* A serialized response, split. */
typedef struct resp_s {
    const char *raw;
    size_t len;
    size_t head_len; /* up to and including the blank line */
    const char *body;
    size_t body_len;
} resp_t;

static resp_t response(void)
{
    resp_t r;
    r.raw = tr_ffi_test_response(&r.len);
    ASSERT_NOT_NULL(r.raw);
    const char *end = memmem(r.raw, r.len, "\r\n\r\n", 4);
    ASSERT_NOT_NULL(end);
    r.head_len = (size_t)(end - r.raw) + 4;
    r.body = end + 4;
    r.body_len = r.len - r.head_len;
    return r;
}

/* Number of header lines called name; *value (NUL-terminated copy) gets the first one's value. */
static int resp_header(const resp_t *r, const char *name, char *value, size_t size)
{
    const char *p = memchr(r->raw, '\n', r->head_len); /* skip the status line */
    const char *end = r->raw + r->head_len - 2;
    size_t nlen = strlen(name);
    int found = 0;
    if (value != NULL && size > 0)
        value[0] = '\0';
    while (p != NULL && p + 1 < end) {
        const char *line = p + 1;
        const char *eol = memmem(line, (size_t)(end - line) + 2, "\r\n", 2);
        ASSERT_NOT_NULL(eol);
        const char *colon = memchr(line, ':', (size_t)(eol - line));
        ASSERT_NOT_NULL(colon); /* every header line is "Name: value" */
        if ((size_t)(colon - line) == nlen && strncasecmp(line, name, nlen) == 0) {
            if (found++ == 0 && value != NULL) {
                const char *v = colon + 1;
                while (v < eol && *v == ' ')
                    v++;
                snprintf(value, size, "%.*s", (int)(eol - v), v);
            }
        }
        p = eol + 1;
    }
    return found;
}

#define ASSERT_RESP_HEADER(resp, name, want)                                                                           \
    do {                                                                                                               \
        char v_[256];                                                                                                  \
        ASSERT_INT_EQ(resp_header(&(resp), name, v_, sizeof(v_)), 1);                                                  \
        ASSERT_STR_EQ(v_, want);                                                                                       \
    } while (0)

#define ASSERT_NO_RESP_HEADER(resp, name) ASSERT_INT_EQ(resp_header(&(resp), name, NULL, 0), 0)

#define ASSERT_STATUS_LINE(resp, line) ASSERT(strncmp((resp).raw, line "\r\n", strlen(line "\r\n")) == 0)

TEST_IMPL(http_get)
{
    tr_router_t *r = new_router();
    add(r, "GET", "/users/:id/posts", 5);
    tr_req_pub_t *pub;
    REQUEST_OK(pub, r,
               "GET /users/42/posts?sort=asc&limit=10&flag&empty=&eq=1=2 HTTP/1.1\r\n"
               "Host: example.org\r\n"
               "X-Trace-Id: abc-123\r\n"
               "Accept: text/html\r\n"
               "X-Empty:\r\n"
               "\r\n");
    uint32_t s = pub->serial;
    size_t len_;
    ASSERT_INT_EQ(pub->handler, 5);
    ASSERT_INT_EQ(pub->status, 200);
    ASSERT_INT_EQ(pub->method, tr_router_method_index("GET", 3));
    ASSERT_STR_EQ(tr_ffi_method_name(pub->method), "GET");
    ASSERT_PTR_EQ(tr_ffi_req_running(), pub);

    ASSERT_REQ_STR(path_of(pub, s, &len_), "/users/42/posts");
    ASSERT_REQ_STR(tr_ffi_req_query_string(pub, s, &len_), "sort=asc&limit=10&flag&empty=&eq=1=2");
    ASSERT_REQ_STR(QUERY(pub, s, "sort"), "asc");
    ASSERT_REQ_STR(QUERY(pub, s, "limit"), "10");
    ASSERT_REQ_STR(QUERY(pub, s, "flag"), "");
    ASSERT_REQ_STR(QUERY(pub, s, "empty"), "");
    ASSERT_REQ_STR(QUERY(pub, s, "eq"), "1=2");
    ASSERT_NULL(QUERY(pub, s, "missing"));
    ASSERT_NULL(QUERY(pub, s, "sor"));
    ASSERT_NULL(QUERY(pub, s, "SORT"));

    /* Header names are case-insensitive, values are as sent. */
    ASSERT_REQ_STR(HEADER(pub, s, "host"), "example.org");
    ASSERT_REQ_STR(HEADER(pub, s, "HOST"), "example.org");
    ASSERT_REQ_STR(HEADER(pub, s, "x-trace-id"), "abc-123");
    ASSERT_REQ_STR(HEADER(pub, s, "X-TRACE-ID"), "abc-123");
    ASSERT_REQ_STR(HEADER(pub, s, "Accept"), "text/html");
    ASSERT_REQ_STR(HEADER(pub, s, "x-empty"), "");
    ASSERT_NULL(HEADER(pub, s, "x-missing"));
    ASSERT_NULL(HEADER(pub, s, "hos"));
    ASSERT_INT_EQ(tr_ffi_req_header_count(pub, s), 4);

    ASSERT_REQ_STR(PARAM(pub, s, "id"), "42");
    ASSERT_NULL(PARAM(pub, s, "ID"));
    ASSERT_NULL(PARAM(pub, s, "sort"));
    ASSERT_REQ_STR(tr_ffi_req_body(pub, s, &len_), "");

    char id[64];
    int n = tr_ffi_req_id(pub, s, id, sizeof(id));
    ASSERT(n > 0);
    ASSERT_UINT_EQ(strlen(id), (size_t)n);
    ASSERT_NOT_NULL(strchr(id, '-'));
    ASSERT_INT_EQ(tr_ffi_req_id(pub, s, id, 2), -1); /* does not fit */

    /* No query string at all, or an empty one. */
    REQUEST_OK(pub, r, "GET /users/7/posts HTTP/1.0\r\n\r\n"); /* 1.0: no Host needed */
    s = pub->serial;
    ASSERT_REQ_STR(path_of(pub, s, &len_), "/users/7/posts");
    ASSERT_REQ_STR(tr_ffi_req_query_string(pub, s, &len_), "");
    ASSERT_NULL(QUERY(pub, s, "sort"));
    ASSERT_INT_EQ(tr_ffi_req_header_count(pub, s), 0);
    ASSERT_REQ_STR(PARAM(pub, s, "id"), "7");
    REQUEST_OK(pub, r, "GET /users/8/posts? HTTP/1.1\r\nHost: t\r\n\r\n");
    s = pub->serial;
    ASSERT_INT_EQ(pub->handler, 5);
    ASSERT_REQ_STR(path_of(pub, s, &len_), "/users/8/posts");
    ASSERT_REQ_STR(tr_ffi_req_query_string(pub, s, &len_), "");
    tr_ffi_test_router_free(r);
}

TEST_IMPL(http_header_at)
{
    tr_router_t *r = new_router();
    tr_req_pub_t *pub;
    REQUEST_OK(pub, r,
               "GET / HTTP/1.1\r\n"
               "Host: h\r\n"
               "X-A: 1\r\n"
               "x-a: 2\r\n"
               "Cookie: a=b; c=d\r\n"
               "X-Blank:\r\n"
               "\r\n");
    uint32_t s = pub->serial;
    static const char *const names[] = {"Host", "X-A", "x-a", "Cookie", "X-Blank"};
    static const char *const values[] = {"h", "1", "2", "a=b; c=d", ""};
    ASSERT_INT_EQ(tr_ffi_req_header_count(pub, s), 5);
    for (int i = 0; i < 5; i++) {
        size_t nlen = 999, vlen = 999;
        const char *value = NULL;
        const char *name = tr_ffi_req_header_at(pub, s, i, &nlen, &value, &vlen);
        ASSERT_MEM_EQ(name, nlen, names[i]);
        ASSERT_MEM_EQ(value, vlen, values[i]);
    }
    size_t nlen, vlen, len_;
    const char *value;
    ASSERT_NULL(tr_ffi_req_header_at(pub, s, 5, &nlen, &value, &vlen));
    ASSERT_NULL(tr_ffi_req_header_at(pub, s, -1, &nlen, &value, &vlen));
    /* A repeated header: the lookup gives the first. */
    ASSERT_REQ_STR(HEADER(pub, s, "x-a"), "1");
    tr_ffi_test_router_free(r);
}

TEST_IMPL(http_not_found)
{
    tr_router_t *r = new_router();
    add(r, "GET", "/a/:id", 1);
    tr_req_pub_t *pub;
    REQUEST_OK(pub, r, "GET /b/1 HTTP/1.1\r\nHost: t\r\n\r\n");
    uint32_t s = pub->serial;
    size_t len_;
    ASSERT_INT_EQ(pub->handler, -1);
    ASSERT_REQ_STR(path_of(pub, s, &len_), "/b/1");
    ASSERT_NULL(PARAM(pub, s, "id"));
    ASSERT_REQ_STR(tr_ffi_req_allow(pub, s, &len_), "");
    tr_ffi_test_router_free(r);
}

TEST_IMPL(http_method_not_allowed)
{
    tr_router_t *r = new_router();
    add(r, "GET", "/only-get/:id", 1);
    add(r, "POST", "/form", 2);
    add(r, "PUT", "/form", 3);
    tr_req_pub_t *pub;
    size_t len_;
    REQUEST_OK(pub, r, "POST /only-get/9 HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    ASSERT_INT_EQ(pub->handler, -2);
    ASSERT_REQ_STR(tr_ffi_req_allow(pub, pub->serial, &len_), "GET, HEAD");
    ASSERT_NULL(PARAM(pub, pub->serial, "id")); /* no route: no parameters */

    REQUEST_OK(pub, r, "DELETE /form HTTP/1.1\r\nHost: t\r\n\r\n");
    ASSERT_INT_EQ(pub->handler, -2);
    ASSERT_REQ_STR(tr_ffi_req_allow(pub, pub->serial, &len_), "POST, PUT");

    /* HEAD is answered by the GET route. */
    REQUEST_OK(pub, r, "HEAD /only-get/9 HTTP/1.1\r\nHost: t\r\n\r\n");
    ASSERT_INT_EQ(pub->handler, 1);
    ASSERT_STR_EQ(tr_ffi_method_name(pub->method), "HEAD");
    ASSERT_REQ_STR(PARAM(pub, pub->serial, "id"), "9");
    tr_ffi_test_router_free(r);
}

TEST_IMPL(http_chunked_body)
{
    tr_router_t *r = new_router();
    add(r, "POST", "/upload", 1);
    tr_req_pub_t *pub;
    size_t len_;
    REQUEST_OK(pub, r,
               "POST /upload HTTP/1.1\r\n"
               "Host: x\r\n"
               "Transfer-Encoding: chunked\r\n"
               "\r\n"
               "5;name=value\r\n"
               "hello\r\n"
               "1;ext\r\n"
               " \r\n"
               "6\r\n"
               "world!\r\n"
               "1A;a=\"quoted\";b\r\n"
               "abcdefghijklmnopqrstuvwxyz\r\n"
               "0\r\n"
               "\r\n");
    ASSERT_INT_EQ(pub->handler, 1);
    ASSERT_REQ_STR(tr_ffi_req_body(pub, pub->serial, &len_), "hello world!abcdefghijklmnopqrstuvwxyz");
    ASSERT_REQ_STR(HEADER(pub, pub->serial, "transfer-encoding"), "chunked");

    /* Many chunks of every size from 1 to 300, binary bytes (CR, LF, NUL included). */
    enum { NCHUNKS = 300 };
    size_t total = NCHUNKS * (NCHUNKS + 1) / 2;
    unsigned char *want = malloc(total);
    char *raw = malloc(total + NCHUNKS * 32 + 256);
    ASSERT(want != NULL && raw != NULL);
    size_t n = (size_t)sprintf(raw, "POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    size_t off = 0;
    for (size_t c = 1; c <= NCHUNKS; c++) {
        if (c % 3)
            n += (size_t)sprintf(raw + n, "%zx\r\n", c);
        else
            n += (size_t)sprintf(raw + n, "%zX;i=%zu\r\n", c, c);
        for (size_t i = 0; i < c; i++)
            want[off++] = (unsigned char)((c * 7 + i * 13) % 256);
        memcpy(raw + n, want + off - c, c);
        n += c;
        memcpy(raw + n, "\r\n", 2);
        n += 2;
    }
    n += (size_t)sprintf(raw + n, "0\r\n\r\n");
    pub = request_n(r, raw, n);
    if (pub == NULL)
        tr_test_fail(__FILE__, __LINE__, "tr_ffi_test_request(chunked) != NULL", "%s", err);
    const char *body = tr_ffi_req_body(pub, pub->serial, &len_);
    ASSERT_NOT_NULL(body);
    ASSERT_UINT_EQ(len_, total);
    ASSERT(memcmp(body, want, total) == 0);
    free(want);
    free(raw);
    tr_ffi_test_router_free(r);
}

/* Trailer fields of a chunked body are not request headers (RFC 9110 6.5.2: a recipient must not merge
 * them into the header section): a field checked before the body, such as Authorization, must not be
 * slipped in after it. */
TEST_IMPL(http_chunked_trailers)
{
    tr_router_t *r = new_router();
    add(r, "POST", "/upload", 1);
    tr_req_pub_t *pub;
    size_t len_;
    REQUEST_OK(pub, r,
               "POST /upload HTTP/1.1\r\n"
               "Host: h\r\n"
               "Transfer-Encoding: chunked\r\n"
               "\r\n"
               "5\r\nhello\r\n"
               "0\r\n"
               "Authorization: Bearer demo-token\r\n"
               "Host: other\r\n"
               "\r\n");
    ASSERT_REQ_STR(tr_ffi_req_body(pub, pub->serial, &len_), "hello");
    ASSERT_REQ_STR(HEADER(pub, pub->serial, "host"), "h");
    ASSERT_NULL(HEADER(pub, pub->serial, "authorization"));
    ASSERT_INT_EQ(tr_ffi_req_header_count(pub, pub->serial), 2);
    tr_ffi_test_router_free(r);
}

TEST_IMPL(http_content_length_body)
{
    tr_router_t *r = new_router();
    add(r, "POST", "/x", 1);
    tr_req_pub_t *pub;
    size_t len_;
    REQUEST_OK(pub, r,
               "POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\nContent-Type: text/plain\r\n\r\nhello world");
    ASSERT_REQ_STR(tr_ffi_req_body(pub, pub->serial, &len_), "hello world");
    ASSERT_REQ_STR(HEADER(pub, pub->serial, "content-length"), "11");

    REQUEST_OK(pub, r, "POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    ASSERT_REQ_STR(tr_ffi_req_body(pub, pub->serial, &len_), "");

    /* Every byte value. */
    char raw[512];
    int n = snprintf(raw, sizeof(raw), "POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 256\r\n\r\n");
    for (int i = 0; i < 256; i++)
        raw[n + i] = (char)i;
    pub = request_n(r, raw, (size_t)n + 256);
    ASSERT_NOT_NULL(pub);
    const char *body = tr_ffi_req_body(pub, pub->serial, &len_);
    ASSERT_UINT_EQ(len_, 256);
    ASSERT(memcmp(body, raw + n, 256) == 0);
    tr_ffi_test_router_free(r);
}

TEST_IMPL(http_incomplete)
{
    tr_router_t *r = new_router();
    add(r, "POST", "/x", 1);
    const char *partial[] = {
        "GET / HTTP/1.1\r\nHost: x\r\n",
        "GET /x HTT",
        "POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 20\r\n\r\nonly ten b",
        "POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    };
    for (size_t i = 0; i < sizeof(partial) / sizeof(partial[0]); i++)
        REJECTED(r, partial[i], strlen(partial[i]), "incomplete request");
    /* The next request is not disturbed by the abandoned one. */
    tr_req_pub_t *pub;
    size_t len_;
    REQUEST_OK(pub, r, "POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nok");
    ASSERT_INT_EQ(pub->handler, 1);
    ASSERT_REQ_STR(tr_ffi_req_body(pub, pub->serial, &len_), "ok");
    tr_ffi_test_router_free(r);
}

/* "GET <target> HTTP/1.1" with a target of exactly len bytes. */
static char *request_with_target(size_t len, int with_query)
{
    char *raw = malloc(len + 64);
    ASSERT_NOT_NULL(raw);
    memcpy(raw, "GET /", 5);
    memset(raw + 5, 'a', len - 1);
    if (with_query)
        raw[5 + 10] = '?';
    strcpy(raw + 4 + len, " HTTP/1.1\r\nHost: x\r\n\r\n");
    return raw;
}

TEST_IMPL(http_limit_uri)
{
    tr_router_t *r = new_router();
    tr_req_pub_t *pub;
    size_t len_;
    char *raw = request_with_target(MAX_URI, 0);
    REQUEST_OK(pub, r, raw);
    ASSERT_NOT_NULL(path_of(pub, pub->serial, &len_));
    ASSERT_UINT_EQ(len_, MAX_URI);
    free(raw);

    raw = request_with_target(MAX_URI + 1, 0);
    REJECTED(r, raw, strlen(raw), "414 URI Too Long");
    free(raw);
    raw = request_with_target(MAX_URI + 1, 1); /* the query string counts */
    REJECTED(r, raw, strlen(raw), "414 URI Too Long");
    free(raw);
    raw = request_with_target(MAX_URI * 3, 0);
    REJECTED(r, raw, strlen(raw), "414 URI Too Long");
    free(raw);
    tr_ffi_test_router_free(r);
}

/* A request whose header section ("Name: value\r\n" lines) is exactly section bytes. */
static char *request_with_header_section(size_t section)
{
    char *raw = malloc(section + 64);
    ASSERT_NOT_NULL(raw);
    size_t n = (size_t)sprintf(raw, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: ");
    size_t value = section - strlen("Host: x\r\n") - strlen("X-Big: \r\n");
    memset(raw + n, 'v', value);
    strcpy(raw + n + value, "\r\n\r\n");
    return raw;
}

TEST_IMPL(http_limit_header)
{
    tr_router_t *r = new_router();
    tr_req_pub_t *pub;
    size_t len_;
    char *raw = request_with_header_section(MAX_HEADER);
    REQUEST_OK(pub, r, raw);
    ASSERT_NOT_NULL(HEADER(pub, pub->serial, "x-big"));
    ASSERT_UINT_EQ(len_, MAX_HEADER - 9 - 9);
    free(raw);

    raw = request_with_header_section(MAX_HEADER + 1);
    REJECTED(r, raw, strlen(raw), "431 Request Header Fields Too Large");
    free(raw);
    raw = request_with_header_section(MAX_HEADER * 4);
    REJECTED(r, raw, strlen(raw), "431 Request Header Fields Too Large");
    free(raw);

    /* A long name counts as much as a long value. */
    raw = malloc(MAX_HEADER + 64);
    int n = sprintf(raw, "GET / HTTP/1.1\r\nHost: t\r\n");
    memset(raw + n, 'N', MAX_HEADER);
    strcpy(raw + n + MAX_HEADER, ": v\r\n\r\n");
    REJECTED(r, raw, strlen(raw), "431 Request Header Fields Too Large");
    free(raw);

    /* Too many headers, each small. */
    char many[4096];
    for (int count = 63; count <= 64; count++) { /* and Host */
        n = sprintf(many, "GET / HTTP/1.1\r\nHost: t\r\n");
        for (int i = 0; i < count; i++)
            n += sprintf(many + n, "X-H%d: %d\r\n", i, i);
        strcpy(many + n, "\r\n");
        if (count == 63) {
            REQUEST_OK(pub, r, many);
            ASSERT_INT_EQ(tr_ffi_req_header_count(pub, pub->serial), 64);
        } else {
            REJECTED(r, many, strlen(many), "431 Request Header Fields Too Large");
        }
    }
    tr_ffi_test_router_free(r);
}

TEST_IMPL(http_limit_body)
{
    tr_router_t *r = new_router();
    add(r, "POST", "/up", 1);
    tr_req_pub_t *pub;
    size_t len_;
    char *raw = malloc(MAX_BODY + 128);
    ASSERT_NOT_NULL(raw);
    int n = sprintf(raw, "POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n", MAX_BODY);
    memset(raw + n, 'b', MAX_BODY);
    pub = request_n(r, raw, (size_t)n + MAX_BODY);
    ASSERT_NOT_NULL(pub);
    ASSERT_NOT_NULL(tr_ffi_req_body(pub, pub->serial, &len_));
    ASSERT_UINT_EQ(len_, MAX_BODY);

    /* Refused on the announced length, before any body byte. */
    n = sprintf(raw, "POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n", MAX_BODY + 1);
    REJECTED(r, raw, (size_t)n, "413 Content Too Large");
    REJECTED(r, "POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999\r\n\r\n",
             strlen("POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999\r\n\r\n"), "413 Content Too Large");
    free(raw);
    tr_ffi_test_router_free(r);
}

/* A chunked request of total body bytes in chunks of at most 64 KiB. */
static char *chunked_request(size_t total, size_t *len)
{
    char *raw = malloc(total + total / 1024 + 256);
    ASSERT_NOT_NULL(raw);
    size_t n = (size_t)sprintf(raw, "POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (size_t left = total; left > 0;) {
        size_t c = left > 65536 ? 65536 : left;
        n += (size_t)sprintf(raw + n, "%zx\r\n", c);
        memset(raw + n, 'c', c);
        n += c;
        memcpy(raw + n, "\r\n", 2);
        n += 2;
        left -= c;
    }
    n += (size_t)sprintf(raw + n, "0\r\n\r\n");
    *len = n;
    return raw;
}

TEST_IMPL(http_limit_chunked_body)
{
    tr_router_t *r = new_router();
    add(r, "POST", "/up", 1);
    size_t n, len_;
    char *raw = chunked_request(MAX_BODY, &n);
    tr_req_pub_t *pub = request_n(r, raw, n);
    if (pub == NULL)
        tr_test_fail(__FILE__, __LINE__, "chunked body of max_body bytes accepted", "%s", err);
    ASSERT_NOT_NULL(tr_ffi_req_body(pub, pub->serial, &len_));
    ASSERT_UINT_EQ(len_, MAX_BODY);
    free(raw);

    raw = chunked_request(MAX_BODY + 1, &n);
    REJECTED(r, raw, n, "413 Content Too Large");
    free(raw);
    tr_ffi_test_router_free(r);
}

TEST_IMPL(http_bad_request)
{
    tr_router_t *r = new_router();
    add(r, "POST", "/x", 1);
    static const char *const bad[] = {
        "\x01\x02 garbage\r\n\r\n",
        "HELLO\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: t\r\nNo colon here\r\n\r\n",
        "GET /x HTTP/1.1\r\nHost: t\r\nBad Name: v\r\n\r\n",
        "POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n",
        "POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        /* Both framings: a request-smuggling attempt. */
        "POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        "GET /x\r\n\r\n",
        /* Only "<target> HTTP/<digit>.<digit>", and token header names. */
        "GET /x HTTX/1.1\r\nHost: t\r\n\r\n",
        "GET /x HTTP/1.1 \r\nHost: t\r\n\r\n",
        "GET /x  HTTP/1.1\r\nHost: t\r\n\r\n",
        "POST /x HTTP/1.1\r\nHost: t\r\nContent-Length : 5\r\n\r\nhello",
        "GET /x HTTP/1.1\r\nHost: t\r\nX(A): v\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n",
        "CONNECT example.org:443 HTTP/1.1\r\nHost: t\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (request(r, bad[i]) != NULL)
            tr_test_fail(__FILE__, __LINE__, "request rejected", "bad[%zu] accepted", i);
        if (strncmp(err, "400 ", 4) != 0)
            tr_test_fail(__FILE__, __LINE__, "err starts with \"400 \"", "bad[%zu]: \"%s\"", i, err);
    }
    REJECTED(r, bad[0], strlen(bad[0]), "400 Bad Request");
    /* The connection layer's own answer, as a client gets it: then the connection closes. */
    resp_t res = response();
    ASSERT_STATUS_LINE(res, "HTTP/1.1 400 Bad Request");
    ASSERT_RESP_HEADER(res, "Connection", "close");
    ASSERT_MEM_EQ(res.body, res.body_len, "{\"error\":\"bad request\"}");
    tr_ffi_test_router_free(r);
}

TEST_IMPL(http_expect)
{
    tr_router_t *r = new_router();
    add(r, "POST", "/x", 1);
    tr_req_pub_t *pub;
    size_t len_;
    REQUEST_OK(pub, r, "POST /x HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok");
    ASSERT_REQ_STR(tr_ffi_req_body(pub, pub->serial, &len_), "ok");
    finish(pub, "done", 4);
    size_t len;
    const char *raw = tr_ffi_test_response(&len);
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n";
    ASSERT(len > sizeof(cont) && memcmp(raw, cont, sizeof(cont) - 1) == 0);

    REQUEST_OK(pub, r, "POST /x HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok");
    finish(pub, "done", 4);
    raw = tr_ffi_test_response(&len);
    ASSERT(strncmp(raw, "HTTP/1.1 200 OK\r\n", 17) == 0); /* HTTP/1.0 clients get no 100 */

    const char *bad = "POST /x HTTP/1.1\r\nHost: t\r\nExpect: something-else\r\nContent-Length: 2\r\n\r\nok";
    REJECTED(r, bad, strlen(bad), "417 Expectation Failed");
    tr_ffi_test_router_free(r);
}

/* "Date: Sun, 06 Nov 1994 08:49:37 GMT", within a few seconds of now. */
static void check_date(const char *value)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    const char *end = strptime(value, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    ASSERT_NOT_NULL(end);
    ASSERT_INT_EQ(*end, '\0');
    ASSERT_UINT_EQ(strlen(value), 29);
    time_t t = timegm(&tm);
    time_t now = time(NULL);
    ASSERT(t <= now && t >= now - 5);
}

TEST_IMPL(http_response)
{
    tr_router_t *r = new_router();
    add(r, "GET", "/hello", 1);
    tr_req_pub_t *pub;
    REQUEST_OK(pub, r, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    ASSERT_INT_EQ(set_header(pub, "X-Custom", "yes"), 0);
    ASSERT_INT_EQ(set_header(pub, "Cache-Control", "no-store, max-age=0"), 0);
    ASSERT_INT_EQ(set_header(pub, "Set-Cookie", "a=1"), 0);
    ASSERT_INT_EQ(set_header(pub, "Set-Cookie", "b=2"), 0);
    finish(pub, "hi there", 8);
    resp_t res = response();
    ASSERT_STATUS_LINE(res, "HTTP/1.1 200 OK");
    ASSERT_RESP_HEADER(res, "Server", "triage");
    char date[64];
    ASSERT_INT_EQ(resp_header(&res, "Date", date, sizeof(date)), 1);
    check_date(date);
    ASSERT_RESP_HEADER(res, "Content-Length", "8");
    ASSERT_RESP_HEADER(res, "Content-Type", "text/plain; charset=utf-8");
    ASSERT_RESP_HEADER(res, "X-Custom", "yes");
    ASSERT_RESP_HEADER(res, "Cache-Control", "no-store, max-age=0");
    ASSERT_INT_EQ(resp_header(&res, "Set-Cookie", NULL, 0), 2);
    ASSERT_MEM_CONTAINS(res.raw, res.head_len, "\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n");
    ASSERT_NO_RESP_HEADER(res, "Connection"); /* HTTP/1.1 keeps the connection by default */
    ASSERT_NO_RESP_HEADER(res, "Transfer-Encoding");
    ASSERT_MEM_EQ(res.body, res.body_len, "hi there");

    /* A Content-Type of the handler's replaces the default. */
    REQUEST_OK(pub, r, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
    ASSERT_INT_EQ(set_header(pub, "content-type", "application/json"), 0);
    finish(pub, "{}", 2);
    res = response();
    ASSERT_RESP_HEADER(res, "Content-Type", "application/json");
    ASSERT_MEM_EQ(res.body, res.body_len, "{}");

    /* An empty body: Content-Length 0 and no Content-Type. */
    REQUEST_OK(pub, r, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
    finish(pub, "", 0);
    res = response();
    ASSERT_RESP_HEADER(res, "Content-Length", "0");
    ASSERT_NO_RESP_HEADER(res, "Content-Type");
    ASSERT_UINT_EQ(res.body_len, 0);

    /* A body with NUL bytes and a larger one (several buffer classes). */
    REQUEST_OK(pub, r, "GET /hello HTTP/1.1\r\nHost: t\r\n\r\n");
    enum { BIG = 100000 };
    char *big = malloc(BIG);
    for (int i = 0; i < BIG; i++)
        big[i] = (char)(i % 256);
    finish(pub, big, BIG);
    res = response();
    ASSERT_RESP_HEADER(res, "Content-Length", "100000");
    ASSERT_UINT_EQ(res.body_len, BIG);
    ASSERT(memcmp(res.body, big, BIG) == 0);
    free(big);
    tr_ffi_test_router_free(r);
}

static resp_t respond_with_status(tr_router_t *r, int status, const char *body)
{
    tr_req_pub_t *pub;
    REQUEST_OK(pub, r, "GET /s HTTP/1.1\r\nHost: t\r\n\r\n");
    pub->status = status;
    finish(pub, body, strlen(body));
    return response();
}

TEST_IMPL(http_response_status)
{
    tr_router_t *r = new_router();
    add(r, "GET", "/s", 1);
    resp_t res = respond_with_status(r, 201, "made");
    ASSERT_STATUS_LINE(res, "HTTP/1.1 201 Created");
    ASSERT_RESP_HEADER(res, "Content-Length", "4");
    ASSERT_MEM_EQ(res.body, res.body_len, "made");
    res = respond_with_status(r, 404, "nope");
    ASSERT_STATUS_LINE(res, "HTTP/1.1 404 Not Found");
    res = respond_with_status(r, 503, "");
    ASSERT_STATUS_LINE(res, "HTTP/1.1 503 Service Unavailable");
    res = respond_with_status(r, 599, "x");
    ASSERT_STATUS_LINE(res, "HTTP/1.1 599 Unknown");
    /* Out of range: the handler is broken, the client gets a 500. */
    res = respond_with_status(r, 42, "x");
    ASSERT_STATUS_LINE(res, "HTTP/1.1 500 Internal Server Error");
    res = respond_with_status(r, 1000, "x");
    ASSERT_STATUS_LINE(res, "HTTP/1.1 500 Internal Server Error");
    res = respond_with_status(r, -200, "x");
    ASSERT_STATUS_LINE(res, "HTTP/1.1 500 Internal Server Error");
    /* 304: no body. */
    res = respond_with_status(r, 304, "cached body");
    ASSERT_STATUS_LINE(res, "HTTP/1.1 304 Not Modified");
    ASSERT_UINT_EQ(res.body_len, 0);
    tr_ffi_test_router_free(r);
}

TEST_IMPL(http_response_head)
{
    tr_router_t *r = new_router();
    add(r, "GET", "/doc", 1);
    tr_req_pub_t *pub;
    REQUEST_OK(pub, r, "HEAD /doc HTTP/1.1\r\nHost: t\r\n\r\n");
    ASSERT_INT_EQ(pub->handler, 1);
    ASSERT_INT_EQ(set_header(pub, "X-Custom", "h"), 0);
    finish(pub, "hello", 5);
    resp_t res = response();
    ASSERT_STATUS_LINE(res, "HTTP/1.1 200 OK");
    ASSERT_RESP_HEADER(res, "Content-Length", "5"); /* what GET would send */
    ASSERT_RESP_HEADER(res, "Content-Type", "text/plain; charset=utf-8");
    ASSERT_RESP_HEADER(res, "X-Custom", "h");
    ASSERT_UINT_EQ(res.body_len, 0);
    tr_ffi_test_router_free(r);
}

TEST_IMPL(http_response_204)
{
    tr_router_t *r = new_router();
    add(r, "DELETE", "/item", 1);
    tr_req_pub_t *pub;
    REQUEST_OK(pub, r, "DELETE /item HTTP/1.1\r\nHost: t\r\n\r\n");
    pub->status = 204;
    ASSERT_INT_EQ(set_header(pub, "X-Deleted", "1"), 0);
    finish(pub, "", 0);
    resp_t res = response();
    ASSERT_STATUS_LINE(res, "HTTP/1.1 204 No Content");
    ASSERT_NO_RESP_HEADER(res, "Content-Length");
    ASSERT_NO_RESP_HEADER(res, "Transfer-Encoding");
    ASSERT_RESP_HEADER(res, "X-Deleted", "1");
    ASSERT_UINT_EQ(res.body_len, 0);

    /* A body given with a 204 is not sent. */
    REQUEST_OK(pub, r, "DELETE /item HTTP/1.1\r\nHost: t\r\n\r\n");
    pub->status = 204;
    finish(pub, "ignored", 7);
    res = response();
    ASSERT_NO_RESP_HEADER(res, "Content-Length");
    ASSERT_UINT_EQ(res.body_len, 0);
    tr_ffi_test_router_free(r);
}

static resp_t respond_to(tr_router_t *r, const char *raw)
{
    tr_req_pub_t *pub;
    REQUEST_OK(pub, r, raw);
    finish(pub, "ok", 2);
    return response();
}

TEST_IMPL(http_connection)
{
    tr_router_t *r = new_router();
    add(r, "GET", "/", 1);
    resp_t res = respond_to(r, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    ASSERT_NO_RESP_HEADER(res, "Connection");
    res = respond_to(r, "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    ASSERT_RESP_HEADER(res, "Connection", "close");
    res = respond_to(r, "GET / HTTP/1.0\r\n\r\n");
    ASSERT_STATUS_LINE(res, "HTTP/1.1 200 OK");
    ASSERT_RESP_HEADER(res, "Connection", "close");
    res = respond_to(r, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    ASSERT_RESP_HEADER(res, "Connection", "keep-alive");
    ASSERT_MEM_EQ(res.body, res.body_len, "ok");
    tr_ffi_test_router_free(r);
}

TEST_IMPL(http_resp_header_rejects)
{
    tr_router_t *r = new_router();
    add(r, "GET", "/", 1);
    tr_req_pub_t *pub;
    REQUEST_OK(pub, r, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    uint32_t s = pub->serial;
    const char *e = NULL;
    /* Response splitting. */
    HEADER_REFUSED(pub, "X-A", "a\r\nInjected: 1", "CR, LF or NUL");
    HEADER_REFUSED(pub, "X-A", "a\nInjected: 1", "CR, LF or NUL");
    HEADER_REFUSED(pub, "X-A", "a\r", "CR, LF or NUL");
    HEADER_REFUSED(pub, "X-A\r\nInjected", "1", "invalid header name");
    ASSERT_INT_EQ(tr_ffi_resp_header(pub, s, "X-A", 3, "a\0b", 3, &e), TR_FFI_ERROR);
    ASSERT_MEM_CONTAINS(e, strlen(e), "CR, LF or NUL");
    /* Not a token. */
    HEADER_REFUSED(pub, "", "v", "invalid header name");
    HEADER_REFUSED(pub, "Bad Name", "v", "invalid header name");
    HEADER_REFUSED(pub, "Bad:Name", "v", "invalid header name");
    HEADER_REFUSED(pub, "Bad\tName", "v", "invalid header name");
    e = NULL;
    ASSERT_INT_EQ(tr_ffi_resp_header(pub, s, "X\0A", 3, "v", 1, &e), TR_FFI_ERROR);
    ASSERT_MEM_CONTAINS(e, strlen(e), "invalid header name");
    /* Managed by the core. */
    HEADER_REFUSED(pub, "Content-Length", "5", "set by the server");
    HEADER_REFUSED(pub, "content-length", "5", "set by the server");
    HEADER_REFUSED(pub, "Transfer-Encoding", "chunked", "set by the server");
    HEADER_REFUSED(pub, "CONNECTION", "close", "set by the server");
    HEADER_REFUSED(pub, "Date", "yesterday", "set by the server");
    /* Fine. */
    ASSERT_INT_EQ(set_header(pub, "X-Ok", "value: with colon; and \"quotes\"\ttab"), 0);
    ASSERT_INT_EQ(set_header(pub, "X-Empty", ""), 0);
    ASSERT_INT_EQ(tr_ffi_resp_header(pub, s, "X-Lenxxx", 5, "v1xxx", 2, &e), 0); /* lengths, not NULs */
    finish(pub, "body", 4);
    resp_t res = response();
    ASSERT_MEM_LACKS(res.raw, res.len, "Injected");
    ASSERT_MEM_LACKS(res.raw, res.len, "Bad");
    ASSERT_MEM_LACKS(res.raw, res.len, "yesterday");
    ASSERT_RESP_HEADER(res, "Content-Length", "4");
    ASSERT_NO_RESP_HEADER(res, "Transfer-Encoding");
    ASSERT_NO_RESP_HEADER(res, "Connection");
    ASSERT_INT_EQ(resp_header(&res, "Date", NULL, 0), 1);
    ASSERT_RESP_HEADER(res, "X-Ok", "value: with colon; and \"quotes\"\ttab");
    ASSERT_MEM_CONTAINS(res.raw, res.head_len, "\r\nX-Empty: \r\n");
    ASSERT_RESP_HEADER(res, "X-Len", "v1");
    ASSERT_MEM_EQ(res.body, res.body_len, "body");
    tr_ffi_test_router_free(r);
}

/* Header lines past TR_RESP_HEADERS_MAX are refused with that reason, not as response splitting. */
TEST_IMPL(http_resp_header_too_large)
{
    tr_router_t *r = new_router();
    add(r, "GET", "/", 1);
    tr_req_pub_t *pub;
    REQUEST_OK(pub, r, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    char *big = malloc(TR_RESP_HEADERS_MAX);
    ASSERT_NOT_NULL(big);
    memset(big, 'v', TR_RESP_HEADERS_MAX - 1);
    big[TR_RESP_HEADERS_MAX - 1] = '\0';
    HEADER_REFUSED(pub, "X-Big", big, "response headers would exceed 65536 bytes");
    big[TR_RESP_HEADERS_MAX / 2] = '\0';
    ASSERT_INT_EQ(set_header(pub, "X-Half", big), 0);
    HEADER_REFUSED(pub, "X-Half2", big, "response headers would exceed 65536 bytes");
    ASSERT_INT_EQ(set_header(pub, "X-Small", "fits"), 0);
    finish(pub, "ok", 2);
    resp_t res = response();
    ASSERT_RESP_HEADER(res, "X-Small", "fits");
    ASSERT_MEM_LACKS(res.raw, res.len, "X-Half2");
    free(big);
    tr_ffi_test_router_free(r);
}

TEST_IMPL(http_resp_reset)
{
    tr_router_t *r = new_router();
    add(r, "GET", "/", 1);
    tr_req_pub_t *pub;
    REQUEST_OK(pub, r, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    ASSERT_INT_EQ(set_header(pub, "X-Before", "1"), 0);
    ASSERT_INT_EQ(set_header(pub, "Content-Type", "application/json"), 0);
    ASSERT_INT_EQ(tr_ffi_resp_reset(pub, pub->serial), 0);
    ASSERT_INT_EQ(set_header(pub, "X-After", "2"), 0);
    finish(pub, "plain", 5);
    resp_t res = response();
    ASSERT_NO_RESP_HEADER(res, "X-Before");
    ASSERT_RESP_HEADER(res, "X-After", "2");
    ASSERT_RESP_HEADER(res, "Content-Type", "text/plain; charset=utf-8");
    tr_ffi_test_router_free(r);
}

/* Every request call with (pub, s) fails without touching anything. */
static void check_stale(tr_req_pub_t *pub, uint32_t s)
{
    size_t len_ = 777, nlen, vlen;
    const char *value;
    char buf[64];
    ASSERT_NULL(tr_ffi_req_path(pub, s, &len_));
    ASSERT_NULL(tr_ffi_req_query_string(pub, s, &len_));
    ASSERT_NULL(QUERY(pub, s, "q"));
    ASSERT_NULL(PARAM(pub, s, "id"));
    ASSERT_NULL(HEADER(pub, s, "host"));
    ASSERT_INT_EQ(tr_ffi_req_header_count(pub, s), TR_FFI_STALE);
    ASSERT_NULL(tr_ffi_req_header_at(pub, s, 0, &nlen, &value, &vlen));
    ASSERT_NULL(tr_ffi_req_body(pub, s, &len_));
    ASSERT_NULL(tr_ffi_req_allow(pub, s, &len_));
    const char *e = NULL;
    ASSERT_INT_EQ(tr_ffi_req_id(pub, s, buf, sizeof(buf)), TR_FFI_STALE);
    ASSERT_INT_EQ(tr_ffi_resp_header(pub, s, "X-Stale", 7, "1", 1, &e), TR_FFI_STALE);
    ASSERT_NULL(e);
    ASSERT_INT_EQ(tr_ffi_resp_reset(pub, s), TR_FFI_STALE);
    ASSERT_INT_EQ(tr_ffi_resp_finish(pub, s, "stale", 5), TR_FFI_STALE);
    ASSERT_UINT_EQ(len_, 777);
}

TEST_IMPL(http_stale_serial)
{
    tr_router_t *r = new_router();
    add(r, "POST", "/a/:id", 1);
    tr_req_pub_t *pub;
    size_t len_;
    REQUEST_OK(pub, r, "POST /a/1?q=x HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nb");
    uint32_t s = pub->serial;
    ASSERT_NOT_NULL(path_of(pub, s, &len_));
    ASSERT_NULL(path_of(pub, s + 1, &len_)); /* a wrong serial fails at once */
    ASSERT_NULL(path_of(pub, s - 1, &len_));
    ASSERT_NULL(path_of(NULL, s, &len_));
    finish(pub, "done", 4);
    check_stale(pub, s); /* finished: nothing more to do with it */
    size_t len;
    const char *raw = tr_ffi_test_response(&len);
    ASSERT(len > 0 && strncmp(raw, "HTTP/1.1 200 OK\r\n", 17) == 0);
    ASSERT(pub->serial != s); /* the serial moved on */
    check_stale(pub, s);
    check_stale(pub, pub->serial);
    /* Nothing the stale calls tried reached the response. */
    resp_t res = response();
    ASSERT_MEM_LACKS(res.raw, res.len, "X-Stale");
    ASSERT_MEM_LACKS(res.raw, res.len, "stale");
    ASSERT_MEM_EQ(res.body, res.body_len, "done");
    tr_ffi_test_router_free(r);
}

/* The request object is reused by the next request: the old serial must not work on it. */
TEST_IMPL(http_stale_serial_reuse)
{
    tr_router_t *r = new_router();
    add(r, "GET", "/a/:id", 1);
    tr_req_pub_t *pub;
    size_t len_;
    REQUEST_OK(pub, r, "GET /a/first HTTP/1.1\r\nHost: t\r\nX-Who: first\r\n\r\n");
    uint32_t s1 = pub->serial;
    tr_req_pub_t *first = pub;
    finish(pub, "1", 1);
    size_t len;
    tr_ffi_test_response(&len);

    uint32_t seen[20];
    seen[0] = s1;
    for (int i = 1; i < 20; i++) {
        REQUEST_OK(pub, r, "GET /a/next HTTP/1.1\r\nHost: t\r\nX-Who: next\r\n\r\n");
        ASSERT_PTR_EQ(pub, first); /* the pooled object again */
        uint32_t s = pub->serial;
        for (int j = 0; j < i; j++) {
            if (s == seen[j])
                tr_test_fail(__FILE__, __LINE__, "new serial differs from every earlier one",
                             "request %d has serial %u, as request %d had", i, s, j);
        }
        seen[i] = s;
        /* Old ctxs see nothing of the new request. */
        for (int j = 0; j < i; j++)
            check_stale(pub, seen[j]);
        ASSERT_REQ_STR(HEADER(pub, s, "x-who"), "next");
        ASSERT_REQ_STR(PARAM(pub, s, "id"), "next");
        if (i % 2)
            finish(pub, "n", 1); /* some finish, some are just dropped by the next request */
        tr_ffi_test_response(&len);
    }
    tr_ffi_test_router_free(r);
}

/* One round of varied requests, each answered, as a worker would see them. */
static void round_of_requests(tr_router_t *r, int check)
{
    tr_req_pub_t *pub;
    size_t len_;
    REQUEST_OK(pub, r,
               "GET /users/42?verbose=1 HTTP/1.1\r\nHost: example.org\r\nAccept: */*\r\n"
               "User-Agent: unit\r\n\r\n");
    ASSERT_INT_EQ(pub->handler, 1);
    ASSERT_REQ_STR(PARAM(pub, pub->serial, "id"), "42");
    ASSERT_REQ_STR(QUERY(pub, pub->serial, "verbose"), "1");
    char id[64];
    ASSERT(tr_ffi_req_id(pub, pub->serial, id, sizeof(id)) > 0);
    ASSERT_INT_EQ(set_header(pub, "X-Request-Id", id), 0);
    ASSERT_INT_EQ(set_header(pub, "Content-Type", "application/json"), 0);
    finish(pub, "{\"id\":\"42\"}", 11);
    if (check) {
        resp_t res = response();
        ASSERT_MEM_EQ(res.body, res.body_len, "{\"id\":\"42\"}");
    }

    REQUEST_OK(pub, r,
               "POST /submit HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               "4\r\nabcd\r\n3;x=y\r\nefg\r\n0\r\n\r\n");
    ASSERT_REQ_STR(tr_ffi_req_body(pub, pub->serial, &len_), "abcdefg");
    finish(pub, "ok", 2);
    tr_ffi_test_response(&len_);

    REQUEST_OK(pub, r, "POST /submit HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello");
    ASSERT_INT_EQ(set_header(pub, "X-A", "1"), 0);
    ASSERT_INT_EQ(tr_ffi_resp_reset(pub, pub->serial), 0);
    finish(pub, "ok", 2);
    tr_ffi_test_response(&len_);

    REQUEST_OK(pub, r, "GET /nowhere HTTP/1.1\r\nHost: t\r\n\r\n");
    ASSERT_INT_EQ(pub->handler, -1);
    pub->status = 404;
    finish(pub, "{\"error\":\"not found\"}", 21);
    tr_ffi_test_response(&len_);

    REQUEST_OK(pub, r, "DELETE /users/1 HTTP/1.1\r\nHost: t\r\n\r\n");
    ASSERT_INT_EQ(pub->handler, -2);
    ASSERT_NOT_NULL(tr_ffi_req_allow(pub, pub->serial, &len_));
    pub->status = 405;
    ASSERT_INT_EQ(set_header(pub, "Allow", "GET, HEAD"), 0);
    finish(pub, "", 0);
    tr_ffi_test_response(&len_);

    REQUEST_OK(pub, r, "HEAD /users/1 HTTP/1.0\r\n\r\n");
    finish(pub, "head body", 9);
    tr_ffi_test_response(&len_);

    ASSERT_NULL(request(r, "\x01garbage\r\n\r\n"));
    ASSERT_NULL(request(r, "GET /users/1 HTTP/1.1\r\nHost: partial"));
}

/* After warm-up, requests cost no allocation: every context and buffer comes from a pool. */
TEST_IMPL(http_no_alloc_after_warmup)
{
    tr_router_t *r = new_router();
    add(r, "GET", "/users/:id", 1);
    add(r, "POST", "/submit", 2);
    for (int i = 0; i < 3; i++)
        round_of_requests(r, 1);
    tr_conn_server_t *srv = tr_testing_server();
    uint64_t count = *tr_mem_counter;
    uint64_t reqs = srv->req_pool.total, bufs = srv->bufs.total;
    for (int i = 0; i < 200; i++) {
        round_of_requests(r, i == 199);
        if (*tr_mem_counter != count)
            tr_test_fail(__FILE__, __LINE__, "*tr_mem_counter unchanged", "round %d: %llu allocation(s)", i,
                         (unsigned long long)(*tr_mem_counter - count));
    }
    ASSERT_UINT_EQ(*tr_mem_counter, count);
    ASSERT_UINT_EQ(srv->req_pool.total, reqs);
    ASSERT_UINT_EQ(srv->bufs.total, bufs);
    tr_ffi_test_router_free(r);
}

/* Requests RFC 9112 / RFC 9110 say to refuse, and the status each gets (the connection closes). */
TEST_IMPL(http_strict_refusals)
{
    tr_router_t *r = new_router();
    add(r, "GET", "/x", 1);
    add(r, "POST", "/x", 2);
    static const struct {
        const char *raw;
        const char *status;
    } cases[] = {
        /* Host (RFC 9112 3.2): missing on 1.1, twice, or not uri-host[:port]. */
        {"GET /x HTTP/1.1\r\n\r\n", "400 Bad Request"},
        {"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "400 Bad Request"},
        {"GET /x HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", "400 Bad Request"},
        {"GET /x HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n", "400 Bad Request"},
        {"GET /x HTTP/1.1\r\nHost: a b\r\n\r\n", "400 Bad Request"},
        {"GET /x HTTP/1.1\r\nHost: a/b\r\n\r\n", "400 Bad Request"},
        {"GET /x HTTP/1.1\r\nHost: user@a\r\n\r\n", "400 Bad Request"},
        {"GET /x HTTP/1.1\r\nHost: a:\r\n\r\n", "400 Bad Request"},
        {"GET /x HTTP/1.1\r\nHost: a:123456\r\n\r\n", "400 Bad Request"},
        {"GET /x HTTP/1.1\r\nHost: a:8o\r\n\r\n", "400 Bad Request"},
        {"GET /x HTTP/1.1\r\nHost: :80\r\n\r\n", "400 Bad Request"},
        {"GET /x HTTP/1.1\r\nHost: [::1\r\n\r\n", "400 Bad Request"},
        {"GET /x HTTP/1.1\r\nHost: [zz]\r\n\r\n", "400 Bad Request"},
        {"GET /x HTTP/1.1\r\nHost: []\r\n\r\n", "400 Bad Request"},
        {"GET /x HTTP/1.1\r\nHost: a%zz\r\n\r\n", "400 Bad Request"},
        {"GET /x HTTP/1.1\r\nHost: a\"b\r\n\r\n", "400 Bad Request"},
        {"GET /x HTTP/1.1\r\nHost: a\xc3\xa9\r\n\r\n", "400 Bad Request"},
        /* obs-fold (RFC 9112 5.2), with SP or HTAB, on any header. */
        {"GET /x HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n", "400 Bad Request"},
        {"GET /x HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\tc\r\n\r\n", "400 Bad Request"},
        {"GET /x HTTP/1.1\r\nHost: a\r\n b\r\n\r\n", "400 Bad Request"},
        {"GET /x HTTP/1.1\r\nX-A:\r\n c\r\nHost: a\r\n\r\n", "400 Bad Request"},
        {"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n 5\r\n\r\nhello", "400 Bad Request"},
        /* Transfer-Encoding on HTTP/1.0: faulty framing (RFC 9112 6.1). */
        {"POST /x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "400 Bad Request"},
        {"POST /x HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", "400 Bad Request"},
        /* Transfer codings (RFC 9112 6.1, 6.3): chunked must be the final one, once; others: 501. */
        {"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", "501 Not Implemented"},
        {"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
         "501 Not Implemented"},
        {"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", "400 Bad Request"},
        {"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", "400 Bad Request"},
        {"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", "400 Bad Request"},
        {"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", "400 Bad Request"},
        {"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
         "400 Bad Request"},
        {"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;q=1\r\n\r\n0\r\n\r\n", "400 Bad Request"},
        {"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,\r\n\r\n", "400 Bad Request"},
        /* Versions (RFC 9110 2.5, 15.6.6): 1.x only; another major is 505. */
        {"GET /x HTTP/2.0\r\nHost: a\r\n\r\n", "505 HTTP Version Not Supported"},
        {"GET /x HTTP/3.0\r\nHost: a\r\n\r\n", "505 HTTP Version Not Supported"},
        {"GET /x HTTP/0.9\r\nHost: a\r\n\r\n", "505 HTTP Version Not Supported"},
        {"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "505 HTTP Version Not Supported"},
        /* Unknown methods (RFC 9110 9.1): 501; methods are case-sensitive. */
        {"FOO /x HTTP/1.1\r\nHost: a\r\n\r\n", "501 Not Implemented"},
        {"get /x HTTP/1.1\r\nHost: a\r\n\r\n", "501 Not Implemented"},
        {"GETX /x HTTP/1.1\r\nHost: a\r\n\r\n", "501 Not Implemented"},
        {"\r\nBREW /pot HTTP/1.1\r\nHost: a\r\n\r\n", "501 Not Implemented"},
        {"FOO /x HTTP/1.0\n\n", "501 Not Implemented"},
        /* ... but a malformed request line stays a 400. */
        {"FOO\r\n\r\n", "400 Bad Request"},
        {"FOO /x\r\n\r\n", "400 Bad Request"},
        {"FOO /x HTTX/1.1\r\n\r\n", "400 Bad Request"},
        {"FOO  /x HTTP/1.1\r\n\r\n", "400 Bad Request"},
        {"FOO /x HTTP/1.1 \r\n\r\n", "400 Bad Request"},
        {"FO(O /x HTTP/1.1\r\n\r\n", "400 Bad Request"},
        /* Absolute-form targets: http(s) only, a host, no userinfo. */
        {"GET ftp://a/x HTTP/1.1\r\nHost: a\r\n\r\n", "400 Bad Request"},
        {"GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n", "400 Bad Request"},
        {"GET http://user@a/x HTTP/1.1\r\nHost: a\r\n\r\n", "400 Bad Request"},
        {"GET http://a:99999999/x HTTP/1.1\r\nHost: a\r\n\r\n", "400 Bad Request"},
        {"GET http://a/x HTTP/1.1\r\n\r\n", "400 Bad Request"}, /* Host is still required on 1.1 */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (request(r, cases[i].raw) != NULL)
            tr_test_fail(__FILE__, __LINE__, "request refused", "cases[%zu] accepted: %s", i, cases[i].raw);
        if (strcmp(err, cases[i].status) != 0)
            tr_test_fail(__FILE__, __LINE__, "refused with the RFC's status", "cases[%zu] %s: \"%s\", want \"%s\"", i,
                         cases[i].raw, err, cases[i].status);
        /* The core's answer closes the connection. */
        resp_t res = response();
        ASSERT_RESP_HEADER(res, "Connection", "close");
    }
    tr_ffi_test_router_free(r);
}

/* Requests RFC 9112 / RFC 9110 say to accept. */
TEST_IMPL(http_strict_accepts)
{
    tr_router_t *r = new_router();
    add(r, "GET", "/", 1);
    add(r, "GET", "/users/:id/posts", 2);
    add(r, "POST", "/x", 3);
    tr_req_pub_t *pub;
    size_t len_;
    /* Absolute-form (RFC 9112 3.2.2): routed on its path; its authority wins over Host. */
    REQUEST_OK(pub, r, "GET http://example.org:8080/users/42/posts?sort=asc HTTP/1.1\r\nHost: other\r\n\r\n");
    ASSERT_INT_EQ(pub->handler, 2);
    ASSERT_REQ_STR(path_of(pub, pub->serial, &len_), "/users/42/posts");
    ASSERT_REQ_STR(tr_ffi_req_query_string(pub, pub->serial, &len_), "sort=asc");
    ASSERT_REQ_STR(PARAM(pub, pub->serial, "id"), "42");
    ASSERT_REQ_STR(HEADER(pub, pub->serial, "host"), "example.org:8080");
    finish(pub, "ok", 2);
    resp_t res = response();
    ASSERT_STATUS_LINE(res, "HTTP/1.1 200 OK");
    /* An empty path is "/", with or without a query. */
    REQUEST_OK(pub, r, "GET HTTP://Example.org HTTP/1.1\r\nHost: example.org\r\n\r\n");
    ASSERT_INT_EQ(pub->handler, 1);
    ASSERT_REQ_STR(path_of(pub, pub->serial, &len_), "/");
    ASSERT_REQ_STR(HEADER(pub, pub->serial, "host"), "Example.org");
    REQUEST_OK(pub, r, "GET https://[::1]:8443?a=1 HTTP/1.1\r\nHost: x\r\n\r\n");
    ASSERT_INT_EQ(pub->handler, 1);
    ASSERT_REQ_STR(path_of(pub, pub->serial, &len_), "/");
    ASSERT_REQ_STR(tr_ffi_req_query_string(pub, pub->serial, &len_), "a=1");
    ASSERT_REQ_STR(QUERY(pub, pub->serial, "a"), "1");
    ASSERT_REQ_STR(HEADER(pub, pub->serial, "host"), "[::1]:8443");
    /* HTTP/1.0 needs no Host, in either form. */
    REQUEST_OK(pub, r, "GET http://10.0.0.1/users/7/posts HTTP/1.0\r\n\r\n");
    ASSERT_INT_EQ(pub->handler, 2);
    ASSERT_INT_EQ(tr_ffi_req_header_count(pub, pub->serial), 0);

    /* HTTP/1.x with x > 1 is HTTP/1.1 (RFC 9110 2.5): answered as 1.1, kept alive. */
    static const char *const minors[] = {"GET / HTTP/1.2\r\nHost: a\r\n\r\n", "GET / HTTP/1.9\r\nHost: a\r\n\r\n"};
    for (size_t i = 0; i < 2; i++) {
        REQUEST_OK(pub, r, minors[i]);
        ASSERT_INT_EQ(pub->handler, 1);
        finish(pub, "ok", 2);
        res = response();
        ASSERT_STATUS_LINE(res, "HTTP/1.1 200 OK");
        ASSERT_INT_EQ(resp_header(&res, "Connection", NULL, 0), 0);
    }

    /* Valid Host values: reg-name, IPv4, IPv6 literal, port, pct-encoded, empty (RFC 9110 7.2). */
    static const char *const hosts[] = {
        "Host: example.org\r\n",
        "Host: 127.0.0.1:8080\r\n",
        "Host: [::1]\r\n",
        "Host: [2001:db8::1]:443\r\n",
        "Host: a-b_c~d.e\r\n",
        "Host: a%20b\r\n",
        "Host:\r\n",
        "Host: h  \r\n",
        "HOST: h\r\n",
        "Host: xn--bcher-kva.ch\r\n",
    };
    for (size_t i = 0; i < sizeof(hosts) / sizeof(hosts[0]); i++) {
        char raw[256];
        snprintf(raw, sizeof(raw), "GET / HTTP/1.1\r\n%s\r\n", hosts[i]);
        pub = request(r, raw);
        if (pub == NULL)
            tr_test_fail(__FILE__, __LINE__, "valid Host accepted", "hosts[%zu] %s: %s", i, hosts[i], err);
    }
    REQUEST_OK(pub, r, "GET / HTTP/1.1\r\nHost: h  \r\n\r\n");
    ASSERT_REQ_STR(HEADER(pub, pub->serial, "host"), "h"); /* without the trailing whitespace */

    /* "chunked" alone, in any case, with OWS. */
    REQUEST_OK(pub, r, "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked \r\n\r\n2\r\nok\r\n0\r\n\r\n");
    ASSERT_REQ_STR(tr_ffi_req_body(pub, pub->serial, &len_), "ok");
    /* Methods http-parser knows are routed (404/405), not 501: the router can serve any of them. */
    REQUEST_OK(pub, r, "PROPFIND /x HTTP/1.1\r\nHost: a\r\n\r\n");
    ASSERT_INT_EQ(pub->handler, TR_ROUTE_METHOD_NOT_ALLOWED);
    tr_ffi_test_router_free(r);
}

/*
 * Parse raw one byte at a time on a bare HTTP connection, as a slow client sends it: 0 when it is a
 * complete request, the status of the refusal, or -1 when it is incomplete.
 */
static int parse_bytewise(const char *raw)
{
    tr_conn_server_t *srv = tr_testing_server();
    tr_http_conn_t h;
    tr_http_conn_init(&h, &srv->env);
    int status = -1;
    for (size_t i = 0; raw[i] != '\0' && status < 0; i++) {
        ASSERT_INT_EQ(tr_http_read_space(&h), 0);
        h.rbuf.data[h.rbuf.len++] = raw[i];
        enum tr_http_parse_result res = tr_http_parse(&h);
        if (res == TR_HTTP_REQUEST) {
            status = 0;
            h.req->state = TR_REQ_FINISHED;
            tr_http_release(&h, h.req);
            h.req = NULL;
        } else if (res == TR_HTTP_REJECTED) {
            ASSERT(h.closing);
            ASSERT(h.wbuf.len > 12);
            status = atoi(h.wbuf.data + 9);
        }
    }
    if (h.req != NULL)
        tr_http_release(&h, h.req);
    tr_buf_release(&srv->bufs, &h.rbuf);
    tr_buf_release(&srv->bufs, &h.wbuf);
    return status;
}

/* Each rule holds when the request arrives one byte at a time. */
TEST_IMPL(http_strict_bytewise)
{
    ASSERT_INT_EQ(parse_bytewise("GET /x HTTP/1.1\r\nHost: a\r\n\r\n"), 0);
    ASSERT_INT_EQ(parse_bytewise("GET http://a/x HTTP/1.1\r\nHost: b\r\n\r\n"), 0);
    ASSERT_INT_EQ(parse_bytewise("GET http://a HTTP/1.1\r\nHost: b\r\n\r\n"), 0);
    ASSERT_INT_EQ(parse_bytewise("GET /x HTTP/1.2\r\nHost: a\r\n\r\n"), 0);
    ASSERT_INT_EQ(
        parse_bytewise("POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n"), 0);
    ASSERT_INT_EQ(parse_bytewise("GET /x HTTP/1.1\r\n\r\n"), 400);
    ASSERT_INT_EQ(parse_bytewise("GET /x HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"), 400);
    ASSERT_INT_EQ(parse_bytewise("GET /x HTTP/1.1\r\nHost: a b\r\n\r\n"), 400);
    ASSERT_INT_EQ(parse_bytewise("GET /x HTTP/1.1\r\nHost: a\r\nX: b\r\n c\r\n\r\n"), 400);
    ASSERT_INT_EQ(parse_bytewise("POST /x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), 400);
    ASSERT_INT_EQ(parse_bytewise("POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"), 501);
    ASSERT_INT_EQ(parse_bytewise("GET /x HTTP/2.0\r\nHost: a\r\n\r\n"), 505);
    /* An unknown method is told from garbage only once its request line is complete. */
    ASSERT_INT_EQ(parse_bytewise("FOO /x HTTP/1.1\r\nHost: a\r\n\r\n"), 501);
    ASSERT_INT_EQ(parse_bytewise("GETX /x HTTP/1.1\r\nHost: a\r\n\r\n"), 501);
    ASSERT_INT_EQ(parse_bytewise("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 505);
    ASSERT_INT_EQ(parse_bytewise("FOO /x HTTP/1."), -1);
    ASSERT_INT_EQ(parse_bytewise("FOO /x HTTX"), 400);
    ASSERT_INT_EQ(parse_bytewise("FOO(/x HTTP/1.1\r\n"), 400);
    ASSERT_INT_EQ(parse_bytewise("\x16\x03\x01\x00"), 400);
    /* A request line with an unknown method that never ends is cut off (the target is too long). */
    char *raw = malloc(MAX_URI + 256);
    ASSERT_NOT_NULL(raw);
    strcpy(raw, "FOO /");
    memset(raw + 5, 'a', MAX_URI + 128);
    raw[5 + MAX_URI + 128] = '\0';
    ASSERT_INT_EQ(parse_bytewise(raw), 414);
    memset(raw, 'F', MAX_URI + 128);
    ASSERT_INT_EQ(parse_bytewise(raw), 400);
    free(raw);
}

/* A handler's status must be final (RFC 9110 15: 1xx are interim): anything else is answered 500. */
TEST_IMPL(http_final_status)
{
    tr_router_t *r = new_router();
    add(r, "GET", "/s", 1);
    static const int interim[] = {100, 101, 102, 103, 199, 600};
    for (size_t i = 0; i < sizeof(interim) / sizeof(interim[0]); i++) {
        resp_t res = respond_with_status(r, interim[i], "x");
        ASSERT_STATUS_LINE(res, "HTTP/1.1 500 Internal Server Error");
        ASSERT_RESP_HEADER(res, "Content-Length", "1");
    }
    resp_t res = respond_with_status(r, 200, "x");
    ASSERT_STATUS_LINE(res, "HTTP/1.1 200 OK");
    tr_ffi_test_router_free(r);
}

/* Does any buffer on the server's free lists hold needle (anywhere in its capacity)? */
static int free_buffers_contain(const char *needle)
{
    tr_conn_server_t *srv = tr_testing_server();
    for (int cls = 0; cls < TR_BUF_CLASSES; cls++)
        for (void *p = srv->bufs.free_list[cls]; p != NULL; p = *(void **)p)
            if (tr_test_contains(p, (size_t)1 << (cls + TR_BUF_MIN_SHIFT), needle))
                return 1;
    return 0;
}

/* Once a request is done, the pooled buffers that held its body, its response and its header lines
 * hold none of it: a later request's code (through the FFI, say) cannot read them. */
TEST_IMPL(http_pooled_buffers_cleared)
{
    size_t len_;
    tr_router_t *r = new_router();
    add(r, "POST", "/submit", 1);
    tr_req_pub_t *pub;
    REQUEST_OK(pub, r,
               "POST /submit HTTP/1.1\r\nHost: t\r\nContent-Length: 35\r\n\r\n"
               "{\"patient\":\"P-4711\",\"phq9\":[3,3,3]}");
    ASSERT_REQ_STR(tr_ffi_req_body(pub, pub->serial, &len_), "{\"patient\":\"P-4711\",\"phq9\":[3,3,3]}");
    ASSERT_INT_EQ(set_header(pub, "X-Patient", "P-0815"), 0);
    finish(pub, "{\"stored\":\"P-4711\"}", 19);
    tr_ffi_test_response(&len_);
    REQUEST_OK(pub, r,
               "POST /submit HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
               "9\r\nP-4242-ab\r\n0\r\n\r\n");
    ASSERT_REQ_STR(tr_ffi_req_body(pub, pub->serial, &len_), "P-4242-ab");
    finish(pub, "ok", 2);
    tr_ffi_test_response(&len_);
    REQUEST_OK(pub, r, "GET /elsewhere HTTP/1.1\r\nHost: t\r\n\r\n"); /* ends the ones before */
    ASSERT(!free_buffers_contain("P-4711"));
    ASSERT(!free_buffers_contain("P-0815"));
    ASSERT(!free_buffers_contain("P-4242"));
    tr_ffi_test_router_free(r);
}
