/*
 * The request API exported to Lua (declared in lua/triage/cdef.h). No Lua stack work here: these are
 * plain C functions the LuaJIT FFI calls directly, so the JIT can compile the Lua side around them.
 * Every request call first checks the caller's serial against the request's (tr_req_check).
 */
#include "ffi_api.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "log.h"

tr_ffi_env_t tr_ffi_env = {.slot = -1};

tr_req_t *tr_req_check(tr_req_pub_t *pub, uint32_t serial)
{
    tr_req_t *r = (tr_req_t *)pub;
    if (pub == NULL || pub->serial != serial || r->state != TR_REQ_RUNNING || r->conn == NULL)
        return NULL;
    return r;
}

TR_FFI_EXPORT const char *tr_ffi_method_name(int method)
{
    return http_method_str((enum http_method)method);
}

TR_FFI_EXPORT const char *tr_ffi_req_path(tr_req_pub_t *pub, uint32_t serial, size_t *len)
{
    tr_req_t *r = tr_req_check(pub, serial);
    if (r == NULL)
        return NULL;
    *len = r->path_len;
    return tr_req_str(r, r->url);
}

TR_FFI_EXPORT const char *tr_ffi_req_query_string(tr_req_pub_t *pub, uint32_t serial, size_t *len)
{
    tr_req_t *r = tr_req_check(pub, serial);
    if (r == NULL)
        return NULL;
    if (r->path_len == r->url.len) {
        *len = 0;
        return "";
    }
    *len = r->url.len - r->path_len - 1;
    return tr_req_str(r, r->url) + r->path_len + 1;
}

TR_FFI_EXPORT const char *tr_ffi_req_query(tr_req_pub_t *pub, uint32_t serial, const char *name, size_t name_len,
                                           size_t *len)
{
    size_t qlen;
    const char *q = tr_ffi_req_query_string(pub, serial, &qlen);
    if (q == NULL)
        return NULL;
    const char *end = q + qlen;
    while (q < end) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *stop = amp ? amp : end;
        const char *eq = memchr(q, '=', (size_t)(stop - q));
        const char *key_end = eq ? eq : stop;
        if ((size_t)(key_end - q) == name_len && memcmp(q, name, name_len) == 0) {
            const char *v = eq ? eq + 1 : stop;
            *len = (size_t)(stop - v);
            return v;
        }
        q = stop + 1;
    }
    return NULL;
}

TR_FFI_EXPORT const char *tr_ffi_req_param(tr_req_pub_t *pub, uint32_t serial, const char *name, size_t name_len,
                                           size_t *len)
{
    tr_req_t *r = tr_req_check(pub, serial);
    if (r == NULL || r->pub.handler < 0)
        return NULL;
    for (unsigned i = 0; i < r->match.nparams; i++) {
        const tr_route_param_t *p = &r->match.params[i];
        if (p->name_len == name_len && memcmp(p->name, name, name_len) == 0) {
            *len = p->len;
            return tr_req_str(r, r->url) + p->offset;
        }
    }
    return NULL;
}

TR_FFI_EXPORT const char *tr_ffi_req_header(tr_req_pub_t *pub, uint32_t serial, const char *name, size_t name_len,
                                            size_t *len)
{
    tr_req_t *r = tr_req_check(pub, serial);
    if (r == NULL)
        return NULL;
    for (unsigned i = 0; i < r->nheaders; i++) {
        if (r->headers[i][0].len == name_len && strncasecmp(tr_req_str(r, r->headers[i][0]), name, name_len) == 0) {
            *len = r->headers[i][1].len;
            return r->headers[i][1].len ? tr_req_str(r, r->headers[i][1]) : "";
        }
    }
    return NULL;
}

TR_FFI_EXPORT int tr_ffi_req_header_count(tr_req_pub_t *pub, uint32_t serial)
{
    tr_req_t *r = tr_req_check(pub, serial);
    return r == NULL ? TR_FFI_STALE : (int)r->nheaders;
}

TR_FFI_EXPORT const char *tr_ffi_req_header_at(tr_req_pub_t *pub, uint32_t serial, int i, size_t *name_len,
                                               const char **value, size_t *value_len)
{
    tr_req_t *r = tr_req_check(pub, serial);
    if (r == NULL || i < 0 || (unsigned)i >= r->nheaders)
        return NULL;
    *name_len = r->headers[i][0].len;
    *value_len = r->headers[i][1].len;
    *value = r->headers[i][1].len ? tr_req_str(r, r->headers[i][1]) : "";
    return tr_req_str(r, r->headers[i][0]);
}

TR_FFI_EXPORT const char *tr_ffi_req_body(tr_req_pub_t *pub, uint32_t serial, size_t *len)
{
    tr_req_t *r = tr_req_check(pub, serial);
    if (r == NULL)
        return NULL;
    *len = r->body.len;
    return r->body.len ? tr_req_str(r, r->body) : "";
}

TR_FFI_EXPORT const char *tr_ffi_req_allow(tr_req_pub_t *pub, uint32_t serial, size_t *len)
{
    tr_req_t *r = tr_req_check(pub, serial);
    if (r == NULL)
        return NULL;
    *len = strlen(r->allow);
    return r->allow;
}

TR_FFI_EXPORT int tr_ffi_req_stopped(tr_req_pub_t *pub, uint32_t serial)
{
    tr_req_t *r = tr_req_check(pub, serial);
    return r != NULL && r == tr_ffi_env.stopped && r->seq == tr_ffi_env.stopped_seq;
}

TR_FFI_EXPORT int tr_ffi_req_id(tr_req_pub_t *pub, uint32_t serial, char *buf, size_t size)
{
    tr_req_t *r = tr_req_check(pub, serial);
    char id[TR_REQUEST_ID_MAX];
    if (r == NULL)
        return TR_FFI_STALE;
    size_t n = tr_http_request_id(r, id);
    if (n > size)
        return TR_FFI_ERROR;
    memcpy(buf, id, n);
    return (int)n;
}

static int fail(const char **errmsg, const char *msg)
{
    *errmsg = msg;
    return TR_FFI_ERROR;
}

static int is_token(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (!tr_http_token_chars[(unsigned char)s[i]])
            return 0;
    return len > 0;
}

TR_FFI_EXPORT int tr_ffi_resp_header(tr_req_pub_t *pub, uint32_t serial, const char *name, size_t name_len,
                                     const char *value, size_t value_len, const char **errmsg)
{
    tr_req_t *r = tr_req_check(pub, serial);
    if (r == NULL)
        return TR_FFI_STALE;
    if (!is_token(name, name_len))
        return fail(errmsg, "invalid header name (it must be a token: letters, digits and !#$%&'*+-.^_`|~)");
    if (memchr(value, '\r', value_len) != NULL || memchr(value, '\n', value_len) != NULL ||
        memchr(value, '\0', value_len) != NULL)
        return fail(errmsg, "invalid header value (CR, LF or NUL would split the response)");
    static const char *const managed[] = {"content-length", "transfer-encoding", "connection", "date"};
    for (size_t i = 0; i < sizeof(managed) / sizeof(managed[0]); i++)
        if (strlen(managed[i]) == name_len && strncasecmp(managed[i], name, name_len) == 0)
            return fail(errmsg, "this header is set by the server");
    tr_buf_t *h = &r->resp_headers;
    size_t line = name_len + value_len + 4;
    if (line > TR_RESP_HEADERS_MAX || h->len > TR_RESP_HEADERS_MAX - line)
        return fail(errmsg, "response headers would exceed 65536 bytes");
    if (tr_buf_reserve(r->conn->env->bufs, h, line) != 0)
        return fail(errmsg, "no memory left for response headers");
    if (name_len == 12 && strncasecmp(name, "content-type", 12) == 0)
        r->content_type_set = 1;
    memcpy(h->data + h->len, name, name_len);
    h->len += name_len;
    memcpy(h->data + h->len, ": ", 2);
    memcpy(h->data + h->len + 2, value, value_len);
    h->len += 2 + value_len;
    memcpy(h->data + h->len, "\r\n", 2);
    h->len += 2;
    return TR_FFI_OK;
}

TR_FFI_EXPORT int tr_ffi_resp_reset(tr_req_pub_t *pub, uint32_t serial)
{
    tr_req_t *r = tr_req_check(pub, serial);
    if (r == NULL)
        return TR_FFI_STALE;
    tr_buf_release(r->conn->env->bufs, &r->resp_headers);
    r->content_type_set = 0;
    return TR_FFI_OK;
}

TR_FFI_EXPORT int tr_ffi_resp_finish(tr_req_pub_t *pub, uint32_t serial, const char *body, size_t len)
{
    tr_req_t *r = tr_req_check(pub, serial);
    if (r == NULL)
        return TR_FFI_STALE;
    /* Only a final status ends a request: a 1xx (there are no upgrades) would make the client take
     * the next response on the connection for this one's. ctx:status refuses them; this is the
     * backstop for whatever set the status past it. */
    if (pub->status < 200 || pub->status > 599) {
        char id[TR_REQUEST_ID_MAX];
        size_t id_len = tr_http_request_id(r, id);
        tr_log_error("request %.*s: %s %.*s: status %d is not a final status, answered 500", (int)id_len, id,
                     http_method_str((enum http_method)r->pub.method), (int)r->path_len, tr_req_str(r, r->url),
                     (int)pub->status);
        pub->status = 500;
    }
    size_t max = r->conn->env->limits.max_response;
    if (max > 0 && len > max) { /* the body is the handler's mistake: none of it goes out */
        char id[TR_REQUEST_ID_MAX];
        size_t id_len = tr_http_request_id(r, id);
        tr_log_error("request %.*s: %s %.*s: a response of %zu bytes is over --max-response (%zu), answered 500",
                     (int)id_len, id, http_method_str((enum http_method)r->pub.method), (int)r->path_len,
                     tr_req_str(r, r->url), len, max);
        tr_http_respond_internal_error(r);
        r->state = TR_REQ_FINISHED;
        return TR_FFI_OK;
    }
    tr_http_respond(r, body, len);
    r->state = TR_REQ_FINISHED;
    return TR_FFI_OK;
}

TR_FFI_EXPORT int tr_ffi_sleep(double seconds, const char **errmsg)
{
    tr_req_t *r = tr_ffi_env.running;
    if (r == NULL)
        return fail(errmsg, "called outside a request");
    if (tr_ffi_env.waits == NULL)
        return fail(errmsg, "no event loop in this process");
    if (!(seconds > 0))
        seconds = 0;
    tr_wait_park(tr_ffi_env.waits, &r->wait, tr_wait_clock() + seconds);
    return TR_FFI_OK;
}

TR_FFI_EXPORT void tr_ffi_log_error(const char *msg, size_t len)
{
    tr_log_error("%.*s", (int)len, msg);
}

TR_FFI_EXPORT int tr_ffi_router_add(tr_router_t *router, const char *method, const char *pattern, size_t pattern_len,
                                    int handler, char *err, size_t err_size)
{
    return tr_router_add(router, method, pattern, pattern_len, handler, err, err_size);
}

TR_FFI_EXPORT tr_req_pub_t *tr_ffi_req_running(void)
{
    return tr_ffi_env.running != NULL ? &tr_ffi_env.running->pub : NULL;
}

TR_FFI_EXPORT double tr_ffi_now(void)
{
    return tr_ffi_env.loop != NULL ? ev_now(tr_ffi_env.loop) : tr_wall_clock();
}

TR_FFI_EXPORT int tr_ffi_worker_slot(void)
{
    return tr_ffi_env.slot;
}
