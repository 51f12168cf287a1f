/*
 * HTTP/1.1 glue: http-parser callbacks that record a request as slices of the read buffer and
 * enforce the limits, read-buffer management, and the serialization of responses into the write
 * buffer.
 */
#include "http.h"

#include <limits.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

#include "metrics.h"

/* RFC 9110 tchar: the characters a header name may use. */
const unsigned char tr_http_token_chars[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1, ['-'] = 1, ['.'] = 1,
    ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1, ['~'] = 1, ['0'] = 1,  ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1,
    ['5'] = 1, ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1, ['A'] = 1,  ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1,
    ['F'] = 1, ['G'] = 1, ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1,  ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1,
    ['P'] = 1, ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1,  ['V'] = 1, ['W'] = 1, ['X'] = 1, ['Y'] = 1,
    ['Z'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1,  ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1,
    ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1,  ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1,
    ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1,  ['z'] = 1,
};

#define READ_CHUNK 4096

static tr_http_conn_t *conn_of(http_parser *p)
{
    return p->data;
}

static uint32_t offset_of(tr_http_conn_t *c, const char *at)
{
    return (uint32_t)(at - c->rbuf.data);
}

static int reject(tr_http_conn_t *c, int status)
{
    c->error_status = status;
    return -1; /* makes http_parser_execute stop with a callback error */
}

static int on_message_begin(http_parser *p)
{
    tr_http_conn_t *c = conn_of(p);
    tr_http_env_t *env = c->env;
    tr_req_t *r = tr_pool_get(env->req_pool);
    uint32_t serial = r->pub.serial;           /* survives reuse: only ever incremented */
    memset(r, 0, offsetof(tr_req_t, headers)); /* resp_headers was released: all zero already */
    r->allow[0] = '\0';
    r->match.nparams = 0;
    r->pub.serial = serial + 1;
    r->pub.status = 200;
    r->pub.handler = -1;
    r->conn = c;
    r->state = TR_REQ_PARSING;
    r->started = env->loop ? ev_now(env->loop) : 0;
    c->req = r;
    c->req_start = c->parsed;
    c->in_message = 1;
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    tr_http_conn_t *c = conn_of(p);
    tr_req_t *r = c->req;
    if (r->url.len == 0)
        r->url.off = offset_of(c, at);
    r->url.len += (uint32_t)len;
    if (r->url.len > c->env->limits.max_uri)
        return reject(c, 414);
    return 0;
}

static int header_bytes_ok(tr_http_conn_t *c, tr_req_t *r, size_t more)
{
    size_t total = more;
    for (unsigned i = 0; i < r->nheaders; i++)
        total += r->headers[i][0].len + r->headers[i][1].len + 4;
    return total <= c->env->limits.max_header;
}

/* Trailer fields of a chunked body are not headers (RFC 9110 6.5.2): they are only counted toward the
 * header limit, never recorded. */
static int on_trailer(tr_http_conn_t *c, tr_req_t *r, size_t len)
{
    r->trailer_bytes += (uint32_t)len;
    return r->trailer_bytes <= c->env->limits.max_header ? 0 : reject(c, 431);
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    tr_http_conn_t *c = conn_of(p);
    tr_req_t *r = c->req;
    if (r->headers_done)
        return on_trailer(c, r, len);
    if (r->nheaders == 0 || r->in_value) {
        if (r->nheaders == TR_MAX_HEADERS)
            return reject(c, 431);
        r->headers[r->nheaders][0].off = offset_of(c, at);
        r->headers[r->nheaders][0].len = 0;
        r->headers[r->nheaders][1].off = 0;
        r->headers[r->nheaders][1].len = 0;
        r->nheaders++;
        r->in_value = 0;
    }
    r->headers[r->nheaders - 1][0].len += (uint32_t)len;
    return header_bytes_ok(c, r, 0) ? 0 : reject(c, 431);
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    tr_http_conn_t *c = conn_of(p);
    tr_req_t *r = c->req;
    if (r->headers_done)
        return on_trailer(c, r, len);
    tr_slice_t *v = &r->headers[r->nheaders - 1][1];
    if (!r->in_value) {
        v->off = offset_of(c, at);
        v->len = 0;
        r->in_value = 1;
    }
    v->len += (uint32_t)len;
    return header_bytes_ok(c, r, 0) ? 0 : reject(c, 431);
}

static int header_is(const tr_req_t *r, unsigned i, const char *name, size_t len)
{
    return r->headers[i][0].len == len && strncasecmp(tr_req_str(r, r->headers[i][0]), name, len) == 0;
}

/* A request id worth echoing: 1 to TR_REQUEST_ID_MAX characters of [A-Za-z0-9._:-]. */
static int valid_request_id(const char *s, size_t len)
{
    if (len == 0 || len > TR_REQUEST_ID_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
              ch == '_' || ch == '.' || ch == ':'))
            return 0;
    }
    return 1;
}

/* RFC 3986 reg-name characters: unreserved, sub-delims and the '%' of pct-encoded. */
/* RFC 3986 reg-name characters (unreserved and sub-delims; '%' is handled apart): a table, because
 * every request's Host goes through it. */
static const unsigned char reg_name_chars[256] = {
    ['a' ... 'z'] = 1, ['A' ... 'Z'] = 1, ['0' ... '9'] = 1, ['-'] = 1, ['.'] = 1,  ['_'] = 1,
    ['~'] = 1,         ['!'] = 1,         ['$'] = 1,         ['&'] = 1, ['\''] = 1, ['('] = 1,
    [')'] = 1,         ['*'] = 1,         ['+'] = 1,         [','] = 1, [';'] = 1,  ['='] = 1,
};

static int reg_name_char(unsigned char ch)
{
    return reg_name_chars[ch];
}

static int hex_digit(unsigned char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

/*
 * A Host field value or the authority of an absolute-form target (RFC 9110 7.2, 4.2.3): uri-host
 * [":" port], where uri-host is "[" hex digits, ':' and '.' "]" (an IPv6 literal) or a non-empty
 * reg-name (which covers IPv4), and port 1 to 5 digits. An empty value (RFC 9110 7.2 lets a client
 * send one when the target has no authority) is valid too.
 */
static int valid_host(const char *s, size_t len)
{
    size_t i = 0;
    if (len == 0)
        return 1;
    if (s[0] == '[') {
        for (i = 1; i < len && s[i] != ']'; i++)
            if (!hex_digit((unsigned char)s[i]) && s[i] != ':' && s[i] != '.')
                return 0;
        if (i == len || i == 1)
            return 0;
        i++;
    } else {
        for (; i < len && s[i] != ':'; i++) {
            if (s[i] == '%') {
                if (len - i < 3 || !hex_digit((unsigned char)s[i + 1]) || !hex_digit((unsigned char)s[i + 2]))
                    return 0;
                i += 2;
            } else if (!reg_name_char((unsigned char)s[i])) {
                return 0;
            }
        }
        if (i == 0)
            return 0;
    }
    if (i == len)
        return 1;
    if (s[i] != ':' || len - i - 1 == 0 || len - i - 1 > 5)
        return 0;
    for (i++; i < len; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

/* A field value without the trailing whitespace http-parser leaves on it. */
static size_t trimmed_len(const char *s, size_t len)
{
    while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t'))
        len--;
    return len;
}

/*
 * The Transfer-Encoding field lines of r, read as one list (RFC 9112 6.1, 6.3): 0 for "chunked" alone;
 * 400 when the list is empty or malformed, when chunked is not the final coding (the body's length
 * cannot be known) or is applied twice; 501 for a list that ends in chunked but holds a coding
 * triage does not implement ("gzip, chunked").
 */
static int transfer_coding_status(const tr_req_t *r)
{
    int codings = 0, chunked = 0, last_chunked = 0, other = 0;
    for (unsigned i = 0; i < r->nheaders; i++) {
        if (!header_is(r, i, "transfer-encoding", 17))
            continue;
        const char *s = tr_req_str(r, r->headers[i][1]);
        size_t n = r->headers[i][1].len;
        for (size_t k = 0; k <= n;) {
            size_t e = k;
            while (e < n && s[e] != ',')
                e++;
            size_t a = k, b = e;
            while (a < b && (s[a] == ' ' || s[a] == '\t'))
                a++;
            while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\t'))
                b--;
            if (a < b) {
                size_t t = a;
                while (t < b && tr_http_token_chars[(unsigned char)s[t]])
                    t++;
                if (t == a)
                    return 400;
                codings++;
                last_chunked = t == b && b - a == 7 && strncasecmp(s + a, "chunked", 7) == 0;
                if (last_chunked)
                    chunked++;
                else
                    other = 1;
            }
            k = e + 1;
        }
    }
    if (codings == 0 || !last_chunked || chunked > 1)
        return 400;
    return other ? 501 : 0;
}

/*
 * An absolute-form target ("http://host:port/path?query", RFC 9112 3.2.2): check it and make r->url
 * its path and query, so that it routes as the origin-form would; *authority gets its host[:port].
 * An empty path is "/": the authority moves one byte left over the second '/' of "://" to make room.
 * Returns 0 or 400.
 */
static int absolute_form(tr_http_conn_t *c, tr_req_t *r, tr_slice_t *authority)
{
    char *url = c->rbuf.data + r->url.off;
    size_t len = r->url.len, i;
    if (len >= 7 && strncasecmp(url, "http://", 7) == 0)
        i = 7;
    else if (len >= 8 && strncasecmp(url, "https://", 8) == 0)
        i = 8;
    else
        return 400;
    size_t a = i;
    while (i < len && url[i] != '/' && url[i] != '?')
        i++;
    size_t alen = i - a;
    /* No userinfo (RFC 9110 4.2.4) and no empty host (4.2.1). */
    if (alen == 0 || memchr(url + a, '@', alen) != NULL || !valid_host(url + a, alen))
        return 400;
    if (i < len && url[i] == '/') {
        authority->off = r->url.off + (uint32_t)a;
    } else {
        memmove(url + a - 1, url + a, alen);
        url[--i] = '/';
        authority->off = r->url.off + (uint32_t)(a - 1);
    }
    authority->len = (uint32_t)alen;
    r->url.off += (uint32_t)i;
    r->url.len -= (uint32_t)i;
    return 0;
}

/* A header line of the head from `from` on starts with SP or HTAB: an obs-fold (RFC 9112 5.2). */
static int has_obs_fold(const char *from, const char *end)
{
    for (const char *s = from; (s = memchr(s, '\n', (size_t)(end - s))) != NULL && ++s < end;) {
        if (*s == ' ' || *s == '\t')
            return 1;
        if (*s == '\r' || *s == '\n') /* the blank line that ends the head */
            return 0;
    }
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    tr_http_conn_t *c = conn_of(p);
    tr_req_t *r = c->req;
    tr_http_env_t *env = c->env;
    const char *url = tr_req_str(r, r->url);
    const char *end = c->rbuf.data + c->rbuf.len;
    r->pub.method = (int32_t)p->method;
    r->head = p->method == HTTP_HEAD;
    r->keep_alive = http_should_keep_alive(p) != 0;
    r->headers_done = 1;
    if (r->url.len == 0)
        return reject(c, 400);
    /* Debian's http-parser is built lenient: insist on exactly "<target> HTTP/<digit>.<digit>" and on
     * header names made of token characters, so "HTTX/1.1" or "Content-Length : 5" (a smuggling
     * vector) get 400 instead of a guess. HTTP/1.x with x > 1 is served as 1.1 (RFC 9110 2.5: the
     * parser's own keep-alive rule already does); a major version other than 1 gets 505. */
    const char *v = url + r->url.len;
    if (end - v < 10 || memcmp(v, " HTTP/", 6) != 0 || v[6] < '0' || v[6] > '9' || v[7] != '.' || v[8] < '0' ||
        v[8] > '9' || (v[9] != '\r' && v[9] != '\n'))
        return reject(c, 400);
    if (p->http_major != 1)
        return reject(c, 505);
    for (unsigned i = 0; i < r->nheaders; i++) {
        const unsigned char *name = (const unsigned char *)tr_req_str(r, r->headers[i][0]);
        if (r->headers[i][0].len == 0)
            return reject(c, 400);
        for (uint32_t k = 0; k < r->headers[i][0].len; k++)
            if (!tr_http_token_chars[name[k]])
                return reject(c, 400);
    }
    if (has_obs_fold(v, end))
        return reject(c, 400);
    /* Host (RFC 9112 3.2): exactly one on HTTP/1.1, at most one on 1.0, and a valid value. */
    int host = -1, te = 0;
    for (unsigned i = 0; i < r->nheaders; i++) {
        if (header_is(r, i, "host", 4)) {
            if (host >= 0)
                return reject(c, 400);
            host = (int)i;
            tr_slice_t *hv = &r->headers[i][1];
            hv->len = (uint32_t)trimmed_len(tr_req_str(r, *hv), hv->len);
            if (!valid_host(tr_req_str(r, *hv), hv->len))
                return reject(c, 400);
        } else if (header_is(r, i, "transfer-encoding", 17)) {
            te = 1;
        }
    }
    if (host < 0 && p->http_minor >= 1)
        return reject(c, 400);
    if (url[0] != '/') {
        tr_slice_t authority;
        if (absolute_form(c, r, &authority) != 0)
            return reject(c, 400);
        if (host >= 0) /* the target's authority wins over the Host field (RFC 9112 3.2.2) */
            r->headers[host][1] = authority;
        url = tr_req_str(r, r->url);
    }
    const char *q = memchr(url, '?', r->url.len);
    r->path_len = q ? (uint32_t)(q - url) : r->url.len;
    /* Transfer-Encoding: faulty framing on HTTP/1.0 (RFC 9112 6.1), else "chunked" alone. */
    if (te) {
        int status = p->http_minor == 0 ? 400 : transfer_coding_status(r);
        if (status != 0)
            return reject(c, status);
    }
    if (!(p->flags & F_CHUNKED) && p->content_length != ULLONG_MAX && p->content_length > env->limits.max_body)
        return reject(c, 413);
    for (unsigned i = 0; i < r->nheaders; i++) {
        if (header_is(r, i, "x-request-id", 12) &&
            valid_request_id(tr_req_str(r, r->headers[i][1]), r->headers[i][1].len))
            r->client_id = r->headers[i][1];
        if (header_is(r, i, "expect", 6)) {
            if (r->headers[i][1].len == 12 && strncasecmp(tr_req_str(r, r->headers[i][1]), "100-continue", 12) == 0)
                r->expect_continue = 1;
            else
                return reject(c, 417);
        }
    }
    /* Ask for the body (harmless if some of it is here already); HTTP/1.0 clients do not know 100. */
    if (r->expect_continue && p->http_minor >= 1 &&
        (p->flags & F_CHUNKED || (p->content_length > 0 && p->content_length != ULLONG_MAX)))
        tr_buf_append(env->bufs, &c->wbuf, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    tr_http_conn_t *c = conn_of(p);
    tr_req_t *r = c->req;
    if ((size_t)r->body.len + len > c->env->limits.max_body)
        return reject(c, 413);
    uint32_t off = offset_of(c, at);
    if (r->body.len == 0)
        r->body.off = off;
    else if (off != r->body.off + r->body.len) /* chunked: close the gap the chunk framing left */
        memmove(c->rbuf.data + r->body.off + r->body.len, at, len);
    r->body.len += (uint32_t)len;
    return 0;
}

static int on_message_complete(http_parser *p)
{
    tr_http_conn_t *c = conn_of(p);
    c->in_message = 0;
    c->req->seq = ++c->env->req_seq;
    /* One request at a time: stop here so the request runs before the next one is parsed. */
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings tr_http_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

void tr_http_update_date(tr_http_env_t *env, time_t now)
{
    if (now == env->date_sec)
        return;
    struct tm tm;
    gmtime_r(&now, &tm);
    env->date_len = strftime(env->date_line, sizeof(env->date_line), "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
    env->date_sec = now;
}

void tr_http_conn_init(tr_http_conn_t *h, tr_http_env_t *env)
{
    memset(h, 0, sizeof(*h));
    h->env = env;
    http_parser_init(&h->parser, HTTP_REQUEST);
    h->parser.data = h;
}

void tr_http_release(tr_http_conn_t *h, tr_req_t *r)
{
    tr_buf_release(h->env->bufs, &r->resp_headers);
    r->pub.serial++; /* any ctx still holding this request now fails its checks */
    r->conn = NULL;
    tr_pool_put(h->env->req_pool, r);
}

/* Move the request being parsed to the start of rbuf, shifting its recorded offsets. */
static void compact(tr_http_conn_t *c)
{
    size_t delta = c->req_start;
    if (delta == 0)
        return;
    memmove(c->rbuf.data, c->rbuf.data + delta, c->rbuf.len - delta);
    memset(c->rbuf.data + c->rbuf.len - delta, 0, delta); /* finished requests' bytes: see tr_buf_release */
    c->rbuf.len -= delta;
    c->parsed -= delta;
    c->req_start = 0;
    tr_req_t *r = c->req;
    if (r != NULL && c->in_message) {
        if (r->url.len)
            r->url.off -= (uint32_t)delta;
        for (unsigned i = 0; i < r->nheaders; i++) {
            r->headers[i][0].off -= (uint32_t)delta;
            if (r->headers[i][1].len)
                r->headers[i][1].off -= (uint32_t)delta;
        }
        if (r->body.len)
            r->body.off -= (uint32_t)delta;
    }
}

int tr_http_read_space(tr_http_conn_t *c)
{
    if (tr_http_running(c)) /* its slices point into rbuf: neither move nor grow it */
        return c->rbuf.len < c->rbuf.cap ? 0 : -1;
    if (!c->in_message && c->parsed == c->rbuf.len) {
        if (c->rbuf.data != NULL)
            memset(c->rbuf.data, 0, c->rbuf.len); /* finished requests' bytes: see tr_buf_release */
        c->rbuf.len = c->parsed = c->req_start = 0;
    } else if (c->rbuf.len == c->rbuf.cap && c->req_start > 0) {
        compact(c);
    }
    if (c->rbuf.data != NULL && c->rbuf.len < c->rbuf.cap)
        return 0;
    const tr_http_limits_t *lim = &c->env->limits;
    /* Chunk framing can double a tiny-chunked body; the parser's callbacks enforce the real limits. */
    size_t limit = lim->max_uri + lim->max_header + 2 * lim->max_body + 4096;
    size_t want = c->rbuf.cap ? c->rbuf.cap : READ_CHUNK;
    if (c->req != NULL && c->req->headers_done && c->parser.content_length != ULLONG_MAX &&
        !(c->parser.flags & F_CHUNKED))
        want = c->parser.content_length + 1024; /* the rest of the body in one go */
    if (c->rbuf.len >= limit)
        return c->req != NULL && c->req->headers_done ? 413 : 431;
    if (tr_buf_reserve(c->env->bufs, &c->rbuf, want) != 0)
        return 413;
    return 0;
}

void tr_http_trim(tr_http_conn_t *c)
{
    if (!c->in_message && c->parsed == c->rbuf.len && !tr_http_running(c)) {
        tr_buf_release(c->env->bufs, &c->rbuf);
        c->parsed = c->req_start = 0;
    }
}

/*
 * http-parser has refused the method of the request that starts at c->req_start. A well-formed
 * request line, "token SP target SP HTTP/<digit>.<digit>", names a method triage does not know: 501
 * (505 for a version other than 1.x). Anything else is 400. Returns 0 while the line is still
 * arriving, so that a request sent one byte at a time gets the same answer.
 */
static int bad_method_status(const tr_http_conn_t *c)
{
    const char *start = c->rbuf.data + c->req_start, *end = c->rbuf.data + c->rbuf.len, *s = start;
    size_t too_long = c->env->limits.max_uri + 64;
    while (s < end && (*s == '\r' || *s == '\n')) /* empty lines before a request are ignored */
        s++;
    const char *m = s;
    while (s < end && tr_http_token_chars[(unsigned char)*s])
        s++;
    if (s == end)
        return (size_t)(end - start) > too_long ? 400 : 0;
    if (s == m || *s++ != ' ')
        return 400;
    const char *t = s;
    while (s < end && (unsigned char)*s > ' ' && *s != 0x7f)
        s++;
    if (s == end)
        return (size_t)(end - start) > too_long ? 414 : 0;
    if (s == t || *s++ != ' ')
        return 400;
    static const char version[] = "HTTP/#.#";
    for (size_t k = 0; k < 8; k++, s++) {
        if (s == end)
            return 0;
        if (version[k] == '#' ? (*s < '0' || *s > '9') : *s != version[k])
            return 400;
    }
    if (s == end)
        return 0;
    if (*s != '\r' && *s != '\n')
        return 400;
    return s[-3] == '1' ? 501 : 505;
}

static enum tr_http_parse_result refuse(tr_http_conn_t *c, int status)
{
    if (c->req != NULL) {
        tr_http_release(c, c->req);
        c->req = NULL;
    }
    c->in_message = 0;
    c->bad_method = 0;
    tr_http_error(c, status, 0);
    return TR_HTTP_REJECTED;
}

enum tr_http_parse_result tr_http_parse(tr_http_conn_t *c)
{
    if (c->bad_method) {
        int status = bad_method_status(c);
        if (status != 0)
            return refuse(c, status);
        c->parsed = c->rbuf.len;
        return TR_HTTP_NEED_MORE;
    }
    while (c->parsed < c->rbuf.len) {
        size_t n =
            http_parser_execute(&c->parser, &tr_http_settings, c->rbuf.data + c->parsed, c->rbuf.len - c->parsed);
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
        if (e == HPE_INVALID_METHOD && c->error_status == 0) {
            /* Keep the request line (a request context holds its place, as for any request being
             * parsed) until it can be told apart from garbage. */
            if (c->req == NULL) {
                on_message_begin(&c->parser);
                c->req_start = c->parsed + n;
            }
            c->bad_method = 1;
            return tr_http_parse(c);
        }
        c->parsed += n;
        if (e == HPE_PAUSED) {
            http_parser_pause(&c->parser, 0);
            c->req->state = TR_REQ_RUNNING;
            return TR_HTTP_REQUEST;
        }
        if (e != HPE_OK)
            return refuse(c, c->error_status ? c->error_status : 400);
        if (n == 0)
            break;
    }
    return TR_HTTP_NEED_MORE;
}

void tr_http_route(tr_req_t *r, const tr_router_t *router)
{
    const char *path = tr_req_str(r, r->url);
    r->pub.handler = tr_router_match(router, r->pub.method, path, r->path_len, &r->match);
    if (r->pub.handler == TR_ROUTE_METHOD_NOT_ALLOWED)
        tr_router_allow(router, path, r->path_len, r->allow, sizeof(r->allow));
}

const char *tr_http_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

/* Decimal digits of v at the end of buf[24]; returns the first digit. */
static char *format_u64(char *end, uint64_t v)
{
    char *p = end;
    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    return p;
}

static void append_str(tr_buf_t *b, const char *s, size_t len)
{
    if (len == 0) /* s may be NULL then (no handler headers) */
        return;
    memcpy(b->data + b->len, s, len);
    b->len += len;
}

#define APPEND_LIT(b, lit) append_str(b, lit, sizeof(lit) - 1)

/* Lower-case hex of v at buf, no leading zeros; returns the length. */
static size_t put_hex(char *buf, uint64_t v)
{
    char tmp[16];
    size_t n = 0;
    do {
        tmp[n++] = "0123456789abcdef"[v & 15];
        v >>= 4;
    } while (v != 0);
    for (size_t i = 0; i < n; i++)
        buf[i] = tmp[n - 1 - i];
    return n;
}

/* Made ids are "<worker start time>-<slot>-<request sequence>" in hex: unique across workers and
 * restarts, and formatted by hand because every response may carry one. */
size_t tr_http_request_id(const tr_req_t *r, char *buf)
{
    if (r->client_id.len > 0) {
        memcpy(buf, tr_req_str(r, r->client_id), r->client_id.len);
        return r->client_id.len;
    }
    const tr_http_env_t *env = r->conn->env;
    memcpy(buf, env->id_prefix, env->id_prefix_len);
    return env->id_prefix_len + put_hex(buf + env->id_prefix_len, r->seq);
}

void tr_http_set_id_prefix(tr_http_env_t *env, time_t started, int slot)
{
    size_t n = put_hex(env->id_prefix, (uint64_t)started);
    env->id_prefix[n++] = '-';
    n += put_hex(env->id_prefix + n, (uint64_t)slot);
    env->id_prefix[n++] = '-';
    env->id_prefix_len = n;
}

/*
 * Serialize a response into c's write buffer. `extra` holds header lines the core adds (request id,
 * JSON content type), `headers` those the handler set.
 */
static void respond(tr_http_conn_t *c, int status, int keep_alive, int http10, int head, const char *extra,
                    size_t extra_len, const char *headers, size_t headers_len, int content_type_set, const char *body,
                    size_t len)
{
    tr_http_env_t *env = c->env;
    tr_buf_t *b = &c->wbuf;
    const char *reason = tr_http_reason(status);
    size_t reason_len = strlen(reason);
    int no_body = status == 204 || status == 304 || status < 200;
    size_t body_len = (head || no_body) ? 0 : len;
    /* Reserve the whole response at once: the status line and fixed headers take < 200 bytes. */
    if (tr_buf_reserve(env->bufs, b, 256 + reason_len + env->date_len + extra_len + headers_len + body_len) != 0) {
        c->closing = 1;
        return;
    }
    char num[24];
    char *digits = format_u64(num + sizeof(num), (uint64_t)status);
    APPEND_LIT(b, "HTTP/1.1 ");
    append_str(b, digits, (size_t)(num + sizeof(num) - digits));
    b->data[b->len++] = ' ';
    append_str(b, reason, reason_len);
    APPEND_LIT(b, "\r\nServer: triage\r\n");
    append_str(b, env->date_line, env->date_len);
    if (status != 204 && status >= 200) {
        digits = format_u64(num + sizeof(num), (uint64_t)len);
        APPEND_LIT(b, "Content-Length: ");
        append_str(b, digits, (size_t)(num + sizeof(num) - digits));
        APPEND_LIT(b, "\r\n");
    }
    if (!keep_alive)
        APPEND_LIT(b, "Connection: close\r\n");
    else if (http10)
        APPEND_LIT(b, "Connection: keep-alive\r\n");
    if (!content_type_set && len > 0)
        APPEND_LIT(b, "Content-Type: text/plain; charset=utf-8\r\n");
    append_str(b, extra, extra_len);
    append_str(b, headers, headers_len);
    APPEND_LIT(b, "\r\n");
    append_str(b, body, body_len);
    if (!keep_alive)
        c->closing = 1;
}

void tr_http_respond(tr_req_t *r, const char *body, size_t len)
{
    tr_http_conn_t *c = r->conn;
    int keep_alive = r->keep_alive && !c->closing && !c->env->draining && !c->parser.upgrade;
    int status = r->pub.status;
    if (status < 200 || status > 599) /* only a final status ends a request (no 1xx: see ffi_api.c) */
        status = 500;
    char extra[TR_REQUEST_ID_MAX + 64];
    size_t n = 0;
    int content_type_set = r->content_type_set;
    if (r->pub.flags & TR_RESP_REQUEST_ID) {
        memcpy(extra, "X-Request-Id: ", 14);
        n = 14 + tr_http_request_id(r, extra + 14);
        extra[n++] = '\r';
        extra[n++] = '\n';
    }
    if ((r->pub.flags & TR_RESP_JSON) && !content_type_set) {
        static const char ct[] = "Content-Type: application/json\r\n";
        memcpy(extra + n, ct, sizeof(ct) - 1);
        n += sizeof(ct) - 1;
        content_type_set = 1;
    }
    respond(c, status, keep_alive, c->parser.http_minor == 0, r->head, extra, n, r->resp_headers.data,
            r->resp_headers.len, content_type_set, body, len);
    r->resp_body_len = len;
}

void tr_http_respond_core(tr_req_t *r, int status, const char *json, size_t len, const char *headers)
{
    static const char ct[] = "Content-Type: application/json\r\n";
    tr_bufpool_t *bufs = r->conn->env->bufs;
    tr_buf_release(bufs, &r->resp_headers);
    tr_buf_append(bufs, &r->resp_headers, ct, sizeof(ct) - 1);
    if (headers != NULL)
        tr_buf_append(bufs, &r->resp_headers, headers, strlen(headers));
    r->content_type_set = 1;
    r->pub.status = status; /* (the request id still goes out if the handler asked for it) */
    tr_http_respond(r, json, len);
}

void tr_http_respond_internal_error(tr_req_t *r)
{
    static const char body[] = "{\"error\":\"internal server error\"}";
    tr_http_respond_core(r, 500, body, sizeof(body) - 1, NULL);
}

void tr_http_error(tr_http_conn_t *c, int status, int keep_alive)
{
    char body[128];
    const char *reason = tr_http_reason(status);
    int n = 0;
    for (const char *s = "{\"error\":\""; *s; s++)
        body[n++] = *s;
    for (const char *s = reason; *s && n < 100; s++)
        body[n++] = (char)((*s >= 'A' && *s <= 'Z') ? *s + 32 : *s);
    body[n++] = '"';
    body[n++] = '}';
    static const char ct[] = "Content-Type: application/json\r\n";
    if (c->env->metrics != NULL)
        tr_metrics_count(c->env->metrics, TR_METRICS_UNMATCHED, status,
                         c->req != NULL && c->env->loop != NULL ? ev_now(c->env->loop) - c->req->started : 0);
    respond(c, status, keep_alive, c->parser.http_minor == 0, 0, ct, sizeof(ct) - 1, NULL, 0, 1, body, (size_t)n);
}
