/*
 * In-process request API for handler specs (built into libtriage_test.so, not into the server): a
 * fake connection with no socket runs raw request bytes through the real parser, router and response
 * serializer, so a spec exercises the same C code as the server, minus the event loop.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "conn.h"
#include "ffi_api.h"
#include "worker.h"

tr_worker_t *tr_worker;

static tr_worker_t test_worker;
static tr_stats_t test_stats;
static tr_config_t test_config;
static tr_conn_t test_conn;
static tr_req_t *last_request;

static tr_worker_t *worker(void)
{
    if (tr_worker == NULL) {
        test_config.max_body = 1 << 20;
        test_config.max_header = 8 << 10;
        test_config.max_uri = 4 << 10;
        test_worker.cfg = &test_config;
        test_worker.stats = &test_stats;
        test_worker.started = time(NULL);
        test_worker.conns.next = test_worker.conns.prev = &test_worker.conns;
        tr_pool_init(&test_worker.conn_pool, sizeof(tr_conn_t));
        tr_pool_init(&test_worker.req_pool, sizeof(tr_req_t));
        tr_worker = &test_worker;
    }
    tr_http_update_date(&test_worker, time(NULL));
    return tr_worker;
}

/* Put the previous request back (its ctx goes stale) and empty the connection. */
static void reset(tr_worker_t *w)
{
    tr_conn_t *c = &test_conn;
    if (last_request != NULL) {
        tr_buf_release(&w->bufs, &last_request->resp_headers);
        last_request->pub.serial++;
        last_request->state = TR_REQ_FINISHED;
        tr_pool_put(&w->req_pool, last_request);
        last_request = NULL;
    }
    tr_buf_release(&w->bufs, &c->rbuf);
    tr_buf_release(&w->bufs, &c->wbuf);
    memset(c, 0, sizeof(*c));
    c->w = w;
    c->fd = -1;
    tr_http_begin(c);
    w->running = NULL;
}

TR_FFI_EXPORT tr_router_t *tr_ffi_test_router_new(void)
{
    return tr_router_new();
}

TR_FFI_EXPORT void tr_ffi_test_router_free(tr_router_t *router)
{
    tr_router_free(router);
}

TR_FFI_EXPORT tr_req_pub_t *tr_ffi_test_request(const char *raw, size_t len, tr_router_t *router, char *err,
                                                size_t err_size)
{
    tr_worker_t *w = worker();
    tr_conn_t *c = &test_conn;
    reset(w);
    tr_buf_append(&w->bufs, &c->rbuf, raw, len);
    size_t n = http_parser_execute(&c->parser, &tr_http_settings, c->rbuf.data, c->rbuf.len);
    c->parsed = n;
    if (HTTP_PARSER_ERRNO(&c->parser) != HPE_PAUSED) {
        int status = c->error_status ? c->error_status : HTTP_PARSER_ERRNO(&c->parser) == HPE_OK ? 0 : 400;
        snprintf(err, err_size, status ? "%d %s" : "incomplete request", status, tr_http_reason(status));
        if (c->req != NULL) {
            last_request = c->req;
            c->req = NULL;
        }
        return NULL;
    }
    tr_req_t *r = c->req;
    last_request = r;
    const char *path = tr_req_str(r, r->url);
    r->pub.handler = tr_router_match(router, r->pub.method, path, r->path_len, &r->match);
    if (r->pub.handler == TR_ROUTE_METHOD_NOT_ALLOWED)
        tr_router_allow(router, path, r->path_len, r->allow, sizeof(r->allow));
    r->state = TR_REQ_RUNNING;
    r->seq = ++w->req_seq;
    w->running = r;
    return &r->pub;
}

TR_FFI_EXPORT const char *tr_ffi_test_response(size_t *len)
{
    if (last_request != NULL && last_request->state == TR_REQ_FINISHED)
        last_request->pub.serial++; /* the request is over: its ctx must go stale now, as in the server */
    *len = test_conn.wbuf.len;
    return test_conn.wbuf.data ? test_conn.wbuf.data : "";
}
