/*
 * HTTP/1.1 glue: the http-parser callbacks that record a request as slices of a connection's read
 * buffer and enforce the limits, and the serializer that writes responses into its write buffer.
 *
 * This layer knows no sockets, no event loop callbacks and no Lua. What it needs from the layer that
 * owns connections comes in a tr_http_env_t (limits, pools, the cached Date line, the request-id
 * prefix); what it parses goes out in tr_req_t, which the layers above read.
 *
 * Requests are recorded as offsets into the read buffer (no copies); their strings are made only
 * when Lua asks for them.
 */
#ifndef TR_HTTP_H
#define TR_HTTP_H

#include <ev.h>
#include <http_parser.h>
#include <stdint.h>
#include <time.h>

#include "ffi_cdef.h"
#include "pool.h"
#include "router.h"
#include "wait.h"

#define TR_MAX_HEADERS 64
#define TR_REQUEST_ID_MAX 128          /* longest X-Request-Id taken from a client */
#define TR_RESP_HEADERS_MAX (64 << 10) /* bytes of response header lines a handler may set */

/* tr_req_pub_t.flags */
#define TR_RESP_REQUEST_ID 1u /* send X-Request-Id */
#define TR_RESP_JSON 2u       /* send Content-Type: application/json unless the handler set one */

typedef struct tr_req_s tr_req_t;
typedef struct tr_http_conn_s tr_http_conn_t;
struct lua_State;
struct tr_gen_s;

typedef struct tr_slice_s {
    uint32_t off; /* into the connection's read buffer */
    uint32_t len;
} tr_slice_t;

typedef struct tr_http_limits_s {
    size_t max_uri;
    size_t max_header;
    size_t max_body;
    size_t max_response; /* largest response body a handler may send; 0: no limit */
} tr_http_limits_t;

/*
 * What the HTTP layer is given by its owner (one per worker). The owner keeps it alive as long as
 * any connection using it, and updates the Date line once a second (tr_http_update_date).
 */
typedef struct tr_http_env_s {
    tr_http_limits_t limits;
    tr_bufpool_t *bufs;
    tr_pool_t *req_pool;  /* of tr_req_t */
    struct ev_loop *loop; /* for request start times; NULL: none */
    int draining;         /* the server is stopping: every response closes its connection */
    uint64_t req_seq;     /* the last request number given out */
    char id_prefix[48];   /* of made request ids: "<start time>-<slot>-" in hex */
    size_t id_prefix_len;
    char date_line[64]; /* "Date: Wed, 25 Nov 2026 01:02:03 GMT\r\n" */
    size_t date_len;
    time_t date_sec;
    /* Where finished requests are counted (metrics.h), the worker's own slot; NULL: not counted. */
    struct tr_worker_metrics_s *metrics;
} tr_http_env_t;

enum tr_req_state {
    TR_REQ_PARSING,  /* headers or body still arriving */
    TR_REQ_RUNNING,  /* handed up to the application (it may be waiting) */
    TR_REQ_FINISHED, /* response serialized; the context goes back to its pool next */
};

struct tr_req_s {
    tr_req_pub_t pub; /* first: Lua sees a tr_req_t * as a tr_req_pub_t * */
    enum tr_req_state state;
    tr_http_conn_t *conn;
    /* Owned by the layer that runs the request (the Lua bridge); this layer never reads them. */
    struct tr_gen_s *gen; /* the generation the request runs on (pinned until it ends) */
    struct lua_State *co; /* its coroutine while running */
    int co_ref;           /* the coroutine's anchor in its generation's registry */
    uint16_t metric_slot; /* its route's slot in the worker's metrics (metrics.h); 0: unmatched */
    tr_waiter_t wait;     /* parked while the request waits (sleep, store) */
    /* Parsed. */
    ev_tstamp started;
    uint64_t seq; /* per worker, for the request id */
    tr_slice_t url;
    uint32_t path_len; /* of url, up to '?' */
    tr_slice_t body;
    tr_slice_t client_id; /* a well-formed X-Request-Id from the client, or empty */
    unsigned nheaders;
    uint32_t trailer_bytes; /* of a chunked body's trailer section */
    int in_value;           /* the last header callback was for a value */
    unsigned keep_alive : 1;
    unsigned head : 1;
    unsigned expect_continue : 1;
    unsigned content_type_set : 1;
    unsigned headers_done : 1;
    tr_buf_t resp_headers; /* "Name: value\r\n" lines set by the handler */
    size_t resp_body_len;
    /* Not cleared between requests (only their first nheaders / nparams entries are meaningful). */
    tr_slice_t headers[TR_MAX_HEADERS][2]; /* name, value */
    tr_route_match_t match;
    char allow[128]; /* for 405 */
};

/*
 * The HTTP state of one connection, embedded in the connection layer's tr_conn_t. Requests on a
 * connection are parsed one at a time: the parser pauses after each complete request, which the
 * owner hands up, and resumes parsing only once that request has finished.
 */
struct tr_http_conn_s {
    tr_http_env_t *env;
    http_parser parser;
    tr_buf_t rbuf;
    size_t parsed;    /* bytes of rbuf the parser has consumed */
    size_t req_start; /* where the request being parsed starts in rbuf */
    tr_buf_t wbuf;
    size_t written;   /* bytes of wbuf already sent */
    tr_req_t *req;    /* being parsed or running */
    int error_status; /* set by a parser callback that rejected the request (413, 414, 431, ...) */
    unsigned in_message : 1;
    unsigned closing : 1;    /* close once wbuf is sent */
    unsigned bad_method : 1; /* http-parser refused the method: waiting for the end of the request line */
};

/* Results of tr_http_parse. */
enum tr_http_parse_result {
    TR_HTTP_NEED_MORE, /* every byte consumed, no complete request yet */
    TR_HTTP_REQUEST,   /* h->req is a complete request (state RUNNING), ready to be handed up */
    TR_HTTP_REJECTED,  /* an error response was queued in wbuf and h->closing set */
};

/* Set up the HTTP state of a new connection. */
void tr_http_conn_init(tr_http_conn_t *h, tr_http_env_t *env);

/*
 * Parse from h->parsed on, up to the end of one complete request. Never called while a request is
 * running. A rejected request's context is back in its pool when this returns.
 */
enum tr_http_parse_result tr_http_parse(tr_http_conn_t *h);

/*
 * Make room in rbuf to read into. Returns 0, -1 to pause reading (a running request's slices point
 * into rbuf, which is full), or an HTTP status (413, 431) when the request can never fit.
 */
int tr_http_read_space(tr_http_conn_t *h);

/* Give rbuf back to the pool if it holds nothing that is unparsed or in use. */
void tr_http_trim(tr_http_conn_t *h);

/* A request has finished: give its context back to the pool (any ctx on it goes stale). */
void tr_http_release(tr_http_conn_t *h, tr_req_t *r);

/* Route r (parsed) with router: sets pub.handler, the parameters, and the Allow list for a 405. */
void tr_http_route(tr_req_t *r, const tr_router_t *router);

/* Serialize the response of r into its connection's write buffer. */
void tr_http_respond(tr_req_t *r, const char *body, size_t len);

/* Answer r with one of the core's own responses, dropping whatever the handler had set for its
 * response: status, a JSON body, and header lines ("Name: value\r\n"..., may be NULL). */
void tr_http_respond_core(tr_req_t *r, int status, const char *json, size_t len, const char *headers);

/* Answer r with the core's own 500 (JSON), dropping whatever the handler had set for its response. */
void tr_http_respond_internal_error(tr_req_t *r);

/* Queue an error response that the core produces itself (400, 404, 413, ...); counted in the
 * metrics under "unmatched" (no request reaches a route after one). */
void tr_http_error(tr_http_conn_t *h, int status, int keep_alive);

const char *tr_http_reason(int status);

/* r's request id (the client's X-Request-Id if it sent a well-formed one, else made by the worker)
 * written at buf, which holds TR_REQUEST_ID_MAX bytes; returns its length. */
size_t tr_http_request_id(const tr_req_t *r, char *buf);

/* Set env's request-id prefix from the worker's start time and slot. */
void tr_http_set_id_prefix(tr_http_env_t *env, time_t started, int slot);

/* Non-zero for the characters RFC 9110 allows in a header name (tchar). */
extern const unsigned char tr_http_token_chars[256];

/* Refresh env's cached Date header line if the second has changed. */
void tr_http_update_date(tr_http_env_t *env, time_t now);

/* A request of h's has been handed up and has not finished. */
static inline int tr_http_running(const tr_http_conn_t *h)
{
    return h->req != NULL && h->req->state == TR_REQ_RUNNING;
}

static inline const char *tr_req_str(const tr_req_t *r, tr_slice_t s)
{
    return r->conn->rbuf.data + s.off;
}

#endif
