/*
 * Connection I/O: read, hand complete requests to the Lua bridge one at a time, write the responses
 * of a batch with one write call, keep-alive, lingering close.
 */
#include "conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "lua_vm.h"
#include "worker.h"

#define READ_CHUNK 4096
#define LINGER_SECONDS 2.0

static void conn_process(tr_conn_t *c);

static int request_running(const tr_conn_t *c)
{
    return c->req != NULL && c->req->state == TR_REQ_RUNNING;
}

static void list_remove(tr_conn_t *c)
{
    c->prev->next = c->next;
    c->next->prev = c->prev;
}

static void list_append(tr_worker_t *w, tr_conn_t *c)
{
    c->prev = w->conns.prev;
    c->next = &w->conns;
    w->conns.prev->next = c;
    w->conns.prev = c;
}

static void touch(tr_conn_t *c)
{
    c->last_active = ev_now(c->w->loop);
    list_remove(c);
    list_append(c->w, c);
}

/*
 * Write while something waits to be written, and read otherwise. Reading goes on while a request
 * runs (it only buffers what a pipelining client sends next, and notices a client that leaves), so a
 * request that sleeps costs no epoll changes; it pauses only when the buffer is full.
 */
static void update_watchers(tr_conn_t *c)
{
    struct ev_loop *loop = c->w->loop;
    int want_write = c->written < c->wbuf.len;
    int buffer_full = request_running(c) && c->rbuf.len == c->rbuf.cap;
    int want_read = c->lingering || (!c->closing && !want_write && !buffer_full);
    if (want_read && !ev_is_active(&c->rio))
        ev_io_start(loop, &c->rio);
    else if (!want_read && ev_is_active(&c->rio))
        ev_io_stop(loop, &c->rio);
    if (want_write && !ev_is_active(&c->wio))
        ev_io_start(loop, &c->wio);
    else if (!want_write && ev_is_active(&c->wio))
        ev_io_stop(loop, &c->wio);
}

static void release_request(tr_worker_t *w, tr_req_t *r)
{
    tr_buf_release(&w->bufs, &r->resp_headers);
    r->pub.serial++; /* any ctx still holding this request now fails its checks */
    r->conn = NULL;
    tr_pool_put(&w->req_pool, r);
}

void tr_conn_close(tr_conn_t *c)
{
    tr_worker_t *w = c->w;
    if (c->fd >= 0) {
        ev_io_stop(w->loop, &c->rio);
        ev_io_stop(w->loop, &c->wio);
        close(c->fd);
        c->fd = -1;
        list_remove(c);
        w->nconns--;
        w->stats->connections = w->nconns;
    }
    if (request_running(c)) {
        /* The coroutine still holds the request (and its slices of rbuf): free both when it ends. */
        c->closed = 1;
        return;
    }
    if (c->req != NULL)
        release_request(w, c->req);
    tr_buf_release(&w->bufs, &c->rbuf);
    tr_buf_release(&w->bufs, &c->wbuf);
    tr_pool_put(&w->conn_pool, c);
    tr_worker_conn_closed(w);
}

static void flush(tr_conn_t *c)
{
    while (c->written < c->wbuf.len) {
        ssize_t n = write(c->fd, c->wbuf.data + c->written, c->wbuf.len - c->written);
        if (n > 0) {
            c->written += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            break;
        } else {
            tr_conn_close(c);
            return;
        }
    }
    if (c->written == c->wbuf.len) {
        tr_buf_release(&c->w->bufs, &c->wbuf);
        c->written = 0;
        if (c->closing && !c->lingering && !request_running(c)) {
            /* Lingering close: stop sending, then drain what the client still sends until it closes,
             * so that closing with unread input does not reset the connection before it has read
             * the response. */
            shutdown(c->fd, SHUT_WR);
            c->lingering = 1;
            c->last_active = ev_now(c->w->loop);
        }
    }
    update_watchers(c);
}

/* Move the request being parsed to the start of rbuf, shifting its recorded offsets. */
static void compact(tr_conn_t *c)
{
    size_t delta = c->req_start;
    if (delta == 0)
        return;
    memmove(c->rbuf.data, c->rbuf.data + delta, c->rbuf.len - delta);
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

/* Make room to read into. Returns 0, -1 to pause reading (the buffer holds a running request and is
 * full), or an HTTP status when the request can never fit. */
static int ensure_read_space(tr_conn_t *c)
{
    tr_worker_t *w = c->w;
    if (request_running(c)) /* its slices point into rbuf: neither move nor grow it */
        return c->rbuf.len < c->rbuf.cap ? 0 : -1;
    if (!c->in_message && c->parsed == c->rbuf.len) {
        c->rbuf.len = c->parsed = c->req_start = 0;
    } else if (c->rbuf.len == c->rbuf.cap && c->req_start > 0) {
        compact(c);
    }
    if (c->rbuf.data != NULL && c->rbuf.len < c->rbuf.cap)
        return 0;
    const tr_config_t *cfg = w->cfg;
    /* Chunk framing can double a tiny-chunked body; the parser's callbacks enforce the real limits. */
    size_t limit = cfg->max_uri + cfg->max_header + 2 * cfg->max_body + 4096;
    size_t want = c->rbuf.cap ? c->rbuf.cap : READ_CHUNK;
    if (c->req != NULL && c->req->headers_done && c->parser.content_length != ULLONG_MAX &&
        !(c->parser.flags & F_CHUNKED))
        want = c->parser.content_length + 1024; /* the rest of the body in one go */
    if (c->rbuf.len >= limit)
        return c->req != NULL && c->req->headers_done ? 413 : 431;
    if (tr_buf_reserve(&w->bufs, &c->rbuf, want) != 0)
        return 413;
    return 0;
}

static void on_readable(struct ev_loop *loop, ev_io *io, int revents)
{
    tr_conn_t *c = io->data;
    (void)loop, (void)revents;
    if (c->lingering) {
        char drain[4096];
        ssize_t n = read(c->fd, drain, sizeof(drain));
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
            tr_conn_close(c);
        return;
    }
    int status = ensure_read_space(c);
    if (status < 0) {
        update_watchers(c);
        return;
    }
    if (status != 0) {
        tr_http_error(c, status, 0);
        flush(c);
        return;
    }
    ssize_t n = read(c->fd, c->rbuf.data + c->rbuf.len, c->rbuf.cap - c->rbuf.len);
    if (n > 0) {
        c->rbuf.len += (size_t)n;
        touch(c);
        conn_process(c);
    } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        tr_conn_close(c);
    } else if (!c->in_message && c->parsed == c->rbuf.len && !request_running(c)) {
        tr_buf_release(&c->w->bufs, &c->rbuf);
        c->parsed = c->req_start = 0;
    }
}

static void on_writable(struct ev_loop *loop, ev_io *io, int revents)
{
    tr_conn_t *c = io->data;
    (void)loop, (void)revents;
    touch(c);
    flush(c);
    if (c->fd >= 0 && !c->closing && !request_running(c) && c->written == c->wbuf.len)
        conn_process(c); /* pipelined requests that waited for the socket */
}

/*
 * Parse and run every complete request in the read buffer, in order, stopping at a request that
 * suspends; then write everything produced with one call.
 */
static void conn_process(tr_conn_t *c)
{
    tr_worker_t *w = c->w;
    while (!c->closing && c->parsed < c->rbuf.len && !request_running(c)) {
        size_t n =
            http_parser_execute(&c->parser, &tr_http_settings, c->rbuf.data + c->parsed, c->rbuf.len - c->parsed);
        c->parsed += n;
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
        if (e == HPE_PAUSED) {
            http_parser_pause(&c->parser, 0);
            c->dispatching = 1;
            tr_vm_dispatch(w, c->req);
            c->dispatching = 0;
            continue;
        }
        if (e != HPE_OK) {
            int status = c->error_status ? c->error_status : 400;
            if (c->req != NULL) {
                release_request(w, c->req);
                c->req = NULL;
            }
            c->in_message = 0;
            tr_http_error(c, status, 0);
            break;
        }
        if (n == 0)
            break;
    }
    if (!c->in_message && c->parsed == c->rbuf.len && !request_running(c)) {
        tr_buf_release(&w->bufs, &c->rbuf);
        c->parsed = c->req_start = 0;
    }
    flush(c);
}

/* One access log line: peer, time, request line, status, body bytes, milliseconds, request id (the
 * same id as X-Request-Id, so a log line and a client's report can be matched). */
static void access_log(tr_req_t *r)
{
    tr_conn_t *c = r->conn;
    tr_worker_t *w = c->w;
    char line[1024 + TR_REQUEST_ID_MAX];
    char id[TR_REQUEST_ID_MAX];
    size_t id_len = tr_http_request_id(r, id);
    const char *url = tr_req_str(r, r->url);
    /* Date line is "Date: Wed, 25 Nov 2026 01:02:03 GMT\r\n": keep the timestamp only. */
    int n = snprintf(line, sizeof(line), "%s [%.*s] \"%s %.*s HTTP/%d.%d\" %d %zu %.3f %.*s", c->peer,
                     (int)(w->date_len > 8 ? w->date_len - 8 : 0), w->date_line + 6,
                     http_method_str((enum http_method)r->pub.method), (int)(r->url.len > 512 ? 512 : r->url.len), url,
                     c->parser.http_major, c->parser.http_minor, r->pub.status, r->resp_body_len,
                     (ev_time() - r->started) * 1000.0, (int)id_len, id);
    if (n > 0)
        tr_access_log_append(line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

void tr_conn_request_done(tr_req_t *r)
{
    tr_conn_t *c = r->conn;
    tr_worker_t *w = c->w;
    if (tr_access_log_enabled() && r->state == TR_REQ_FINISHED && !c->closed)
        access_log(r);
    c->req = NULL;
    release_request(w, r);
    if (c->closed) {
        tr_buf_release(&w->bufs, &c->rbuf);
        tr_buf_release(&w->bufs, &c->wbuf);
        tr_pool_put(&w->conn_pool, c);
        tr_worker_conn_closed(w);
        return;
    }
    if (!c->dispatching) /* it ended later, from a timer: carry on with the connection */
        conn_process(c);
}

void tr_conn_accept(tr_worker_t *w, int fd, const struct sockaddr *addr)
{
    tr_conn_t *c = tr_pool_get(&w->conn_pool);
    memset(c, 0, sizeof(*c));
    c->w = w;
    c->fd = fd;
    tr_http_begin(c);
    ev_io_init(&c->rio, on_readable, fd, EV_READ);
    ev_io_init(&c->wio, on_writable, fd, EV_WRITE);
    c->rio.data = c;
    c->wio.data = c;
    c->last_active = ev_now(w->loop);
    list_append(w, c);
    w->nconns++;
    w->stats->connections = w->nconns;
    if (tr_access_log_enabled()) {
        if (addr->sa_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)addr)->sin_addr, c->peer, sizeof(c->peer));
        else if (addr->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)addr)->sin6_addr, c->peer, sizeof(c->peer));
    }
    ev_io_start(w->loop, &c->rio);
}

void tr_conn_sweep(tr_worker_t *w, int all_idle)
{
    ev_tstamp now = ev_now(w->loop);
    for (tr_conn_t *c = w->conns.next, *next; c != &w->conns; c = next) {
        next = c->next;
        if (request_running(c))
            continue;
        ev_tstamp idle = now - c->last_active;
        int idle_keepalive = !c->in_message && c->written == c->wbuf.len;
        if ((c->lingering && idle > LINGER_SECONDS) || idle > w->cfg->keepalive_timeout || (all_idle && idle_keepalive))
            tr_conn_close(c);
    }
}
