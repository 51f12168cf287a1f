/*
 * libFuzzer harness: the HTTP parser glue (core/http.c) with the router, on one connection's read
 * buffer. The input is a byte stream as a client would send it: any number of pipelined requests.
 * Each complete request is routed, its parameters, headers and body are read, and a response is
 * serialized; the connection stops at the first rejected request, as the server does.
 *
 * Checked beyond the sanitizers: every slice of a parsed request lies inside the read buffer, and
 * every request context is back in its pool at the end.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "http.h"
#include "router.h"

static tr_http_env_t env;
static tr_pool_t req_pool;
static tr_bufpool_t bufs;
static tr_router_t *router;

static void check_slice(const tr_http_conn_t *h, tr_slice_t s)
{
    if (s.len > 0)
        FUZZ_CHECK((size_t)s.off + s.len <= h->rbuf.len);
}

static void exercise(tr_http_conn_t *h, tr_req_t *r)
{
    tr_http_route(r, router);
    check_slice(h, r->url);
    check_slice(h, r->body);
    FUZZ_CHECK(r->path_len <= r->url.len);
    for (unsigned i = 0; i < r->nheaders; i++) {
        check_slice(h, r->headers[i][0]);
        check_slice(h, r->headers[i][1]);
    }
    for (unsigned i = 0; r->pub.handler >= 0 && i < r->match.nparams; i++)
        FUZZ_CHECK(r->match.params[i].offset + r->match.params[i].len <= r->path_len);
    char id[TR_REQUEST_ID_MAX];
    FUZZ_CHECK(tr_http_request_id(r, id) <= TR_REQUEST_ID_MAX);
    r->pub.status = 200 + (int)(r->body.len % 300);
    tr_http_respond(r, tr_req_str(r, r->url), r->url.len);
    r->state = TR_REQ_FINISHED;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    tr_pool_init(&req_pool, sizeof(tr_req_t));
    env.limits = (tr_http_limits_t){.max_uri = 512, .max_header = 2048, .max_body = 8192};
    env.bufs = &bufs;
    env.req_pool = &req_pool;
    tr_http_update_date(&env, 1700000000);
    tr_http_set_id_prefix(&env, 1700000000, 3);
    router = fuzz_sample_router();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tr_http_conn_t h;
    tr_http_conn_init(&h, &env);
    size_t fed = 0;
    for (;;) {
        int space = tr_http_read_space(&h);
        if (space > 0) {
            tr_http_error(&h, space, 0);
            break;
        }
        FUZZ_CHECK(space == 0); /* no request is running here: reading never pauses */
        size_t n = h.rbuf.cap - h.rbuf.len;
        if (n > size - fed)
            n = size - fed;
        memcpy(h.rbuf.data + h.rbuf.len, data + fed, n);
        h.rbuf.len += n;
        fed += n;
        enum tr_http_parse_result res;
        while ((res = tr_http_parse(&h)) == TR_HTTP_REQUEST) {
            tr_req_t *r = h.req;
            exercise(&h, r);
            h.req = NULL;
            tr_http_release(&h, r);
        }
        if (res == TR_HTTP_REJECTED || fed == size)
            break;
    }
    if (h.req != NULL)
        tr_http_release(&h, h.req);
    tr_buf_release(&bufs, &h.rbuf);
    tr_buf_release(&bufs, &h.wbuf);
    FUZZ_CHECK(req_pool.nfree == req_pool.total);
    FUZZ_CHECK(bufs.nfree == bufs.total);
    return 0;
}
