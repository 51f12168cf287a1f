/*
 * Connections: a request's way from the socket to the layer above and back.
 *
 * A connection owns its socket, its HTTP state (http.h) and two pooled buffers: what was read and
 * what is to be written. Buffers are taken when needed and given back as soon as they are empty, so
 * an idle keep-alive connection holds no buffer. Requests on a connection are handled one at a time,
 * in order: while one runs (it may wait) the next ones are not parsed, only buffered (up to the
 * buffer's size), so their responses leave in order. Every response produced while handling the
 * bytes of one read is written with a single write call.
 *
 * The layer above (the Lua bridge in the server, the test library in specs) is reached only through
 * the callbacks it registers in tr_conn_server_t: this layer never calls it by name.
 */
#ifndef TR_CONN_H
#define TR_CONN_H

#include <ev.h>
#include <sys/socket.h>

#include "http.h"
#include "pool.h"
#include "shared.h"

typedef struct tr_conn_s tr_conn_t;
typedef struct tr_conn_server_s tr_conn_server_t;

typedef struct tr_conn_link_s tr_conn_link_t;
struct tr_conn_link_s {
    tr_conn_link_t *prev, *next;
};

struct tr_conn_s {
    tr_http_conn_t http; /* first: a tr_http_conn_t * of a connection is its tr_conn_t * */
    tr_conn_server_t *srv;
    int fd;
    ev_io rio, wio;
    unsigned lingering : 1;   /* response sent, draining the client's input before close */
    unsigned closed : 1;      /* socket closed; the context waits for its running request */
    unsigned had_request : 1; /* a request has ended on it: it is a keep-alive connection now */
    ev_tstamp last_active;
    ev_tstamp accepted_at;
    ev_tstamp write_waiting_since; /* output pending without progress since; 0: none pending */
    tr_conn_link_t link;           /* in the server's list, least recently active first */
    char peer[48];
};

/*
 * What the layer above provides. on_request gets a parsed request (state TR_REQ_RUNNING, not yet
 * routed) and runs it: if it finishes before returning (its response serialized, state
 * TR_REQ_FINISHED), the connection goes on at once; otherwise the layer above calls
 * tr_conn_request_done later, exactly once, from the loop.
 */
typedef struct tr_conn_callbacks_s {
    void (*on_request)(void *data, tr_req_t *r);
    /* The last connection closed while draining (tr_conn_drain): the server may stop. May be NULL. */
    void (*on_drained)(tr_conn_server_t *srv);
} tr_conn_callbacks_t;

/* Deadlines (seconds) and the connection cap of a worker's connections. On a deadline the
 * connection gets 408 if a response can still be sent, then closes. */
typedef struct tr_conn_limits_s {
    double keepalive_timeout; /* idle between requests */
    double header_timeout;    /* a request head (or a new connection's first request) from its start */
    double body_timeout;      /* a pause while a body arrives */
    double body_deadline;     /* a whole request, head and body, from its first byte */
    double write_timeout;     /* output pending without progress */
    unsigned max_connections; /* open at once; past it an idle one makes room, or the new one gets 503 */
} tr_conn_limits_t;

/*
 * The connections of one worker, with the pools and the HTTP environment they share. Lives as long
 * as the worker.
 */
struct tr_conn_server_s {
    struct ev_loop *loop;
    tr_conn_callbacks_t cb;
    void *cb_data;
    tr_http_env_t env;
    tr_pool_t conn_pool; /* of tr_conn_t */
    tr_pool_t req_pool;  /* of tr_req_t */
    tr_bufpool_t bufs;
    tr_conn_limits_t limits;
    tr_stats_t *stats;      /* where the connection count is published; may be NULL */
    tr_conn_link_t conns;   /* list head: every open connection */
    unsigned nconns;        /* draining: env.draining */
    unsigned surplus_ticks; /* ticks in a row with more free pooled objects than the pools should keep */
};

/* Set up srv (loop may be NULL until tr_conn_server_start). */
void tr_conn_server_init(tr_conn_server_t *srv, struct ev_loop *loop, const tr_http_limits_t *limits,
                         const tr_conn_limits_t *conn_limits, const tr_conn_callbacks_t *cb, void *cb_data);

/* Take a connection from the pool for an accepted, non-blocking socket and start reading. At the
 * connection cap the least recently active idle keep-alive connection is closed to make room; with
 * none, the new socket gets a 503 and is closed at once (counted in stats). */
void tr_conn_accept(tr_conn_server_t *srv, int fd, const struct sockaddr *addr);

/* Answer an accepted socket there is no room for with a 503 (without reading it) and close it. */
void tr_conn_refuse(tr_conn_server_t *srv, int fd);

/* Close up to n idle keep-alive connections, least recently active first (the worker is out of
 * descriptors). Returns how many were closed. */
unsigned tr_conn_shed_idle(tr_conn_server_t *srv, unsigned n);

/* Close a connection now (or as soon as its running request ends). */
void tr_conn_close(tr_conn_t *c);

/* The request that on_request left running has finished (its response is serialized, or it
 * failed): put it back in its pool and carry on with its connection. */
void tr_conn_request_done(tr_req_t *r);

/* Once a second: refresh the Date line and enforce the deadlines of tr_conn_limits_t (and close
 * lingering closes that took too long). */
void tr_conn_tick(tr_conn_server_t *srv, time_t now);

/*
 * The worker is about to exit with a handler stuck in its Lua code (guard.h), from a signal handler:
 * only system calls, no allocation, no event loop. Responses already serialized are sent first, as
 * far as the socket takes them without waiting. Then:
 * - a connection whose client is waiting for an answer (a request running, or partly read) gets the
 *   bytes answer() writes at buf (a complete response that closes the connection; r is the running
 *   request, NULL for one still arriving), after its unread input is drained so that the close does
 *   not reset the answer away;
 * - one between requests (nothing of a new request read yet: whatever the client sent since is still
 *   in the socket) is sent to handoff_fd (SCM_RIGHTS) for the next worker of the slot to adopt
 *   (tr_conn_adopt), so that its client never notices; if that fails, it is closed;
 * and every connection is closed here. Counts what was answered, handed off and closed in all.
 */
typedef size_t (*tr_conn_answer_fn)(const tr_req_t *r, char *buf, size_t size, void *data);
typedef struct tr_conn_abandoned_s {
    unsigned answered, handed_off, closed;
} tr_conn_abandoned_t;
void tr_conn_abandon(tr_conn_server_t *srv, tr_conn_answer_fn answer, void *data, int handoff_fd,
                     tr_conn_abandoned_t *out);

/* Take over the connections a previous worker of the slot handed off (tr_conn_abandon) and queued on
 * handoff_fd (non-blocking). Returns how many. */
unsigned tr_conn_adopt(tr_conn_server_t *srv, int handoff_fd);

/* Stop keeping connections alive: idle ones close now (unless their next request has arrived: it is
 * answered), busy ones after their response, new ones without a request after a second; on_drained
 * is called when the last one has closed (at once if there is none). */
void tr_conn_drain(tr_conn_server_t *srv);

/* Log (error log, prefixed with who) every connection whose request or response is unfinished: the
 * server gives up on them (the shutdown timeout). Returns how many. */
unsigned tr_conn_log_unfinished(tr_conn_server_t *srv, const char *who);

#endif
