/*
 * Connections and requests: a request's way from the socket to Lua and back.
 *
 * A connection owns its socket, its parser and two pooled buffers: what was read and what is to be
 * written. Buffers are taken when needed and given back as soon as they are empty, so an idle
 * keep-alive connection holds no buffer. Requests on a connection are handled one at a time, in
 * order: while one runs in Lua (it may sleep) the next ones are not parsed, only buffered (up to the
 * buffer's size), so their responses leave in order. Every response produced while handling the bytes
 * of one read is written with a single write call.
 *
 * The parser records requests as offsets into the read buffer (no copies); a request's strings are
 * made only when Lua asks for them.
 */
#ifndef TR_CONN_H
#define TR_CONN_H

#include <ev.h>
#include <http_parser.h>
#include <lua.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>

#include "ffi_api.h"
#include "pool.h"
#include "router.h"

#define TR_MAX_HEADERS 64
#define TR_REQUEST_ID_MAX 128 /* longest X-Request-Id taken from a client */

/* tr_req_pub_t.flags */
#define TR_RESP_REQUEST_ID 1u /* send X-Request-Id */
#define TR_RESP_JSON 2u       /* send Content-Type: application/json unless the handler set one */

typedef struct tr_worker_s tr_worker_t;
typedef struct tr_conn_s tr_conn_t;
typedef struct tr_req_s tr_req_t;
typedef struct tr_gen_s tr_gen_t;

typedef struct tr_slice_s {
    uint32_t off; /* into the connection's read buffer */
    uint32_t len;
} tr_slice_t;

enum tr_req_state {
    TR_REQ_PARSING,  /* headers or body still arriving */
    TR_REQ_RUNNING,  /* in Lua (or waiting in a sleep) */
    TR_REQ_FINISHED, /* response serialized; the context goes back to its pool next */
};

struct tr_req_s {
    tr_req_pub_t pub; /* first: Lua sees a tr_req_t * as a tr_req_pub_t * */
    enum tr_req_state state;
    tr_conn_t *conn;
    tr_gen_t *gen;  /* the generation the request runs on (pinned until it ends) */
    lua_State *co;  /* its coroutine while running */
    int co_ref;     /* the coroutine's anchor in its generation's registry */
    int waiting;    /* suspended in triage.sleep */
    double wake_at; /* CLOCK_MONOTONIC seconds at which a sleep ends */
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

struct tr_conn_s {
    tr_worker_t *w;
    int fd;
    ev_io rio, wio;
    http_parser parser;
    tr_buf_t rbuf;
    size_t parsed;    /* bytes of rbuf the parser has consumed */
    size_t req_start; /* where the request being parsed starts in rbuf */
    tr_buf_t wbuf;
    size_t written;   /* bytes of wbuf already sent */
    tr_req_t *req;    /* being parsed or running */
    int error_status; /* set by a parser callback that rejected the request (413, 414, 431) */
    unsigned in_message : 1;
    unsigned closing : 1;     /* close once wbuf is sent */
    unsigned lingering : 1;   /* response sent, draining the client's input before close */
    unsigned closed : 1;      /* socket closed; the context waits for its running request */
    unsigned dispatching : 1; /* inside tr_vm_dispatch: a request ending now ends synchronously */
    ev_tstamp last_active;
    tr_conn_t *prev, *next; /* the worker's connections, least recently active first */
    char peer[48];
};

/* Take a connection from the pool for an accepted, non-blocking socket and start reading. */
void tr_conn_accept(tr_worker_t *w, int fd, const struct sockaddr *addr);

/* Close a connection now (or as soon as its running request ends). */
void tr_conn_close(tr_conn_t *c);

/* Called by the Lua bridge when a request has finished running (its response is serialized or it
 * failed): puts the request back in its pool and carries on with the connection. */
void tr_conn_request_done(tr_req_t *r);

/* Close idle connections (shutdown) or those idle longer than the keep-alive timeout. */
void tr_conn_sweep(tr_worker_t *w, int all_idle);

/* Parser glue (http.c). */
extern const http_parser_settings tr_http_settings;
void tr_http_begin(tr_conn_t *c);
/* Serialize the response of r into its connection's write buffer. */
void tr_http_respond(tr_req_t *r, const char *body, size_t len);
/* Append an error response that the core produces itself (400, 404, 413, ...). */
void tr_http_error(tr_conn_t *c, int status, int keep_alive);
const char *tr_http_reason(int status);
/* r's request id (the client's X-Request-Id if it sent a well-formed one, else made by the worker)
 * written at buf, which holds TR_REQUEST_ID_MAX bytes; returns its length. */
size_t tr_http_request_id(const tr_req_t *r, char *buf);
/* Non-zero for the characters RFC 9110 allows in a header name (tchar). */
extern const unsigned char tr_http_token_chars[256];
/* Refresh w's cached Date header line if the second has changed. */
void tr_http_update_date(tr_worker_t *w, time_t now);

/* Request accessors shared by the FFI layer. */
tr_req_t *tr_req_check(tr_req_pub_t *r, uint32_t serial);
static inline const char *tr_req_str(const tr_req_t *r, tr_slice_t s)
{
    return r->conn->rbuf.data + s.off;
}

#endif
