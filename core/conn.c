/*
 * Connection I/O: read, hand complete requests to the layer above one at a time, write the
 * responses of a batch with one write call, keep-alive, lingering close.
 */
#include "conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"

#define LINGER_SECONDS 2.0
#define DRAIN_FIRST_REQUEST_SECONDS 1.0 /* stopping: a new connection's time to send its request */

static void conn_process(tr_conn_t *c);

static tr_conn_t *conn_of(tr_http_conn_t *h)
{
    return (tr_conn_t *)h; /* the HTTP state is the connection's first member */
}

static tr_conn_t *conn_of_link(tr_conn_link_t *l)
{
    return (tr_conn_t *)((char *)l - offsetof(tr_conn_t, link));
}

static void list_remove(tr_conn_t *c)
{
    c->link.prev->next = c->link.next;
    c->link.next->prev = c->link.prev;
}

/* At the tail: the list runs from the least to the most recently active. */
static void list_append(tr_conn_server_t *srv, tr_conn_t *c)
{
    c->link.prev = srv->conns.prev;
    c->link.next = &srv->conns;
    srv->conns.prev->next = &c->link;
    srv->conns.prev = &c->link;
}

static void touch(tr_conn_t *c)
{
    c->last_active = ev_now(c->srv->loop);
    list_remove(c);
    list_append(c->srv, c);
}

static void set_count(tr_conn_server_t *srv, unsigned n)
{
    srv->nconns = n;
    if (srv->stats != NULL)
        srv->stats->connections = n;
}

/*
 * Write while something waits to be written, and read otherwise. Reading goes on while a request
 * runs (it only buffers what a pipelining client sends next, and notices a client that leaves), so a
 * request that waits costs no epoll changes; it pauses only when the buffer is full.
 */
static void update_watchers(tr_conn_t *c)
{
    struct ev_loop *loop = c->srv->loop;
    tr_http_conn_t *h = &c->http;
    int want_write = h->written < h->wbuf.len;
    int buffer_full = tr_http_running(h) && h->rbuf.len == h->rbuf.cap;
    int want_read = c->lingering || (!h->closing && !want_write && !buffer_full);
    if (want_read && !ev_is_active(&c->rio))
        ev_io_start(loop, &c->rio);
    else if (!want_read && ev_is_active(&c->rio))
        ev_io_stop(loop, &c->rio);
    if (want_write && !ev_is_active(&c->wio))
        ev_io_start(loop, &c->wio);
    else if (!want_write && ev_is_active(&c->wio))
        ev_io_stop(loop, &c->wio);
}

/* Give the connection's buffers and context back; when draining, the last one ends the server. */
static void free_conn(tr_conn_t *c)
{
    tr_conn_server_t *srv = c->srv;
    tr_buf_release(&srv->bufs, &c->http.rbuf);
    tr_buf_release(&srv->bufs, &c->http.wbuf);
    tr_pool_put(&srv->conn_pool, c);
    if (srv->env.draining && srv->nconns == 0 && srv->cb.on_drained != NULL)
        srv->cb.on_drained(srv);
}

void tr_conn_close(tr_conn_t *c)
{
    tr_conn_server_t *srv = c->srv;
    if (c->fd >= 0) {
        ev_io_stop(srv->loop, &c->rio);
        ev_io_stop(srv->loop, &c->wio);
        close(c->fd);
        c->fd = -1;
        list_remove(c);
        set_count(srv, srv->nconns - 1);
    }
    if (tr_http_running(&c->http)) {
        /* The layer above still holds the request (and its slices of rbuf): free both when it ends. */
        c->closed = 1;
        return;
    }
    if (c->http.req != NULL)
        tr_http_release(&c->http, c->http.req);
    free_conn(c);
}

static void flush(tr_conn_t *c)
{
    tr_http_conn_t *h = &c->http;
    while (h->written < h->wbuf.len) {
        ssize_t n = write(c->fd, h->wbuf.data + h->written, h->wbuf.len - h->written);
        if (n > 0) {
            h->written += (size_t)n;
            c->write_waiting_since = 0; /* progress */
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            break;
        } else {
            tr_conn_close(c);
            return;
        }
    }
    if (h->written < h->wbuf.len && c->write_waiting_since == 0)
        c->write_waiting_since = ev_now(c->srv->loop);
    if (h->written == h->wbuf.len) {
        c->write_waiting_since = 0;
        tr_buf_release(&c->srv->bufs, &h->wbuf);
        h->written = 0;
        if (h->closing && !c->lingering && !tr_http_running(h)) {
            /* Lingering close: stop sending, then drain what the client still sends until it closes,
             * so that closing with unread input does not reset the connection before it has read
             * the response. */
            shutdown(c->fd, SHUT_WR);
            c->lingering = 1;
            c->last_active = ev_now(c->srv->loop);
        }
    }
    update_watchers(c);
}

static void on_readable(struct ev_loop *loop, ev_io *io, int revents)
{
    tr_conn_t *c = io->data;
    tr_http_conn_t *h = &c->http;
    (void)loop, (void)revents;
    if (c->lingering) {
        char drain[4096];
        ssize_t n = read(c->fd, drain, sizeof(drain));
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
            tr_conn_close(c);
        return;
    }
    int status = tr_http_read_space(h);
    if (status < 0) {
        update_watchers(c);
        return;
    }
    if (status != 0) {
        tr_http_error(h, status, 0);
        flush(c);
        return;
    }
    ssize_t n = read(c->fd, h->rbuf.data + h->rbuf.len, h->rbuf.cap - h->rbuf.len);
    if (n > 0) {
        h->rbuf.len += (size_t)n;
        touch(c);
        conn_process(c);
    } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        tr_conn_close(c);
    } else {
        tr_http_trim(h);
    }
}

static void on_writable(struct ev_loop *loop, ev_io *io, int revents)
{
    tr_conn_t *c = io->data;
    tr_http_conn_t *h = &c->http;
    (void)loop, (void)revents;
    touch(c);
    flush(c);
    if (c->fd >= 0 && !h->closing && !tr_http_running(h) && h->written == h->wbuf.len)
        conn_process(c); /* pipelined requests that waited for the socket */
}

/* One access log line: peer, time, request line, status, body bytes, milliseconds, request id (the
 * same id as X-Request-Id, so a log line and a client's report can be matched). */
static void access_log_text(tr_conn_t *c, tr_req_t *r)
{
    const tr_http_env_t *env = &c->srv->env;
    char line[1024 + TR_REQUEST_ID_MAX];
    char id[TR_REQUEST_ID_MAX];
    size_t id_len = tr_http_request_id(r, id);
    const char *url = tr_req_str(r, r->url);
    /* Date line is "Date: Wed, 25 Nov 2026 01:02:03 GMT\r\n": keep the timestamp only. */
    int n = snprintf(line, sizeof(line), "%s [%.*s] \"%s %.*s HTTP/%d.%d\" %d %zu %.3f %.*s", c->peer,
                     (int)(env->date_len > 8 ? env->date_len - 8 : 0), env->date_line + 6,
                     http_method_str((enum http_method)r->pub.method), (int)(r->url.len > 512 ? 512 : r->url.len), url,
                     c->http.parser.http_major, c->http.parser.http_minor, r->pub.status, r->resp_body_len,
                     (ev_time() - r->started) * 1000.0, (int)id_len, id);
    if (n > 0)
        tr_access_log_append(line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

/* The same as one JSON object (--access-log-format json), for log shippers. The request id is made
 * of a client's well-formed X-Request-Id or the worker's hex digits, and the method is a known name:
 * only the path needs escaping. */
static void access_log_json(tr_conn_t *c, tr_req_t *r)
{
    char line[2048 + 6 * 512 + TR_REQUEST_ID_MAX];
    char id[TR_REQUEST_ID_MAX];
    char path[6 * 512];
    size_t id_len = tr_http_request_id(r, id);
    size_t path_len =
        tr_log_json_escape(path, sizeof(path), tr_req_str(r, r->url), r->url.len > 512 ? 512 : r->url.len);
    ev_tstamp now = ev_time();
    time_t sec = (time_t)now;
    struct tm tm;
    gmtime_r(&sec, &tm);
    int n = snprintf(line, sizeof(line),
                     "{\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03dZ\",\"request_id\":\"%.*s\",\"remote\":\"%s\","
                     "\"method\":\"%s\",\"path\":\"%.*s\",\"status\":%d,\"bytes\":%zu,\"duration_ms\":%.3f,"
                     "\"worker\":%d}",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     (int)((now - (double)sec) * 1000.0) % 1000, (int)id_len, id, c->peer,
                     http_method_str((enum http_method)r->pub.method), (int)path_len, path, r->pub.status,
                     r->resp_body_len, (now - r->started) * 1000.0, tr_access_log_worker());
    if (n > 0)
        tr_access_log_append(line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

/* The request of c has finished: log it and give its context back. Returns 0 if c lives on, -1 if
 * it was closed meanwhile and is now freed. */
static int end_request(tr_conn_t *c, tr_req_t *r)
{
    c->had_request = 1;
    if (r->state == TR_REQ_FINISHED) {
        tr_conn_server_t *srv = c->srv;
        if (srv->env.metrics != NULL)
            tr_metrics_count(srv->env.metrics, r->metric_slot, r->pub.status, ev_now(srv->loop) - r->started);
        if (tr_access_log_enabled() && !c->closed) {
            if (tr_access_log_format() == TR_ACCESS_LOG_JSON)
                access_log_json(c, r);
            else
                access_log_text(c, r);
        }
    }
    c->http.req = NULL;
    tr_http_release(&c->http, r);
    if (c->closed) {
        free_conn(c);
        return -1;
    }
    return 0;
}

/*
 * Parse and run every complete request in the read buffer, in order, stopping at a request that
 * goes on running after on_request returns; then write everything produced with one call.
 */
static void conn_process(tr_conn_t *c)
{
    tr_conn_server_t *srv = c->srv;
    tr_http_conn_t *h = &c->http;
    while (!h->closing && !tr_http_running(h)) {
        enum tr_http_parse_result res = tr_http_parse(h);
        if (res != TR_HTTP_REQUEST)
            break;
        tr_req_t *r = h->req;
        srv->cb.on_request(srv->cb_data, r);
        if (r->state != TR_REQ_FINISHED)
            break; /* it ends later, in tr_conn_request_done; what is queued goes out now */
        if (end_request(c, r) != 0)
            return;
    }
    tr_http_trim(h);
    flush(c);
}

void tr_conn_request_done(tr_req_t *r)
{
    tr_conn_t *c = conn_of(r->conn);
    if (end_request(c, r) == 0)
        conn_process(c);
}

/* An idle keep-alive connection: between requests, nothing to write, nothing half-read. */
static int idle_keepalive(const tr_conn_t *c)
{
    const tr_http_conn_t *h = &c->http;
    return !h->in_message && !tr_http_running(h) && h->written == h->wbuf.len && !c->lingering && !h->closing;
}

unsigned tr_conn_shed_idle(tr_conn_server_t *srv, unsigned n)
{
    unsigned shed = 0;
    for (tr_conn_link_t *l = srv->conns.next, *next; l != &srv->conns && shed < n; l = next) {
        next = l->next;
        tr_conn_t *c = conn_of_link(l);
        if (c->had_request && idle_keepalive(c)) {
            tr_conn_close(c);
            shed++;
        }
    }
    if (srv->stats != NULL)
        srv->stats->connections_shed += shed;
    return shed;
}

void tr_conn_refuse(tr_conn_server_t *srv, int fd)
{
    static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\nServer: triage\r\n"
                               "Content-Type: application/json\r\nContent-Length: 31\r\n"
                               "Retry-After: 1\r\nConnection: close\r\n\r\n"
                               "{\"error\":\"service unavailable\"}";
    (void)!send(fd, busy, sizeof(busy) - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
    close(fd);
    if (srv->stats != NULL)
        srv->stats->connections_refused++;
}

void tr_conn_accept(tr_conn_server_t *srv, int fd, const struct sockaddr *addr)
{
    if (srv->nconns >= srv->limits.max_connections && tr_conn_shed_idle(srv, 1) == 0) {
        tr_conn_refuse(srv, fd);
        return;
    }
    tr_conn_t *c = tr_pool_get(&srv->conn_pool);
    memset(c, 0, sizeof(*c));
    tr_http_conn_init(&c->http, &srv->env);
    c->srv = srv;
    c->fd = fd;
    ev_io_init(&c->rio, on_readable, fd, EV_READ);
    ev_io_init(&c->wio, on_writable, fd, EV_WRITE);
    c->rio.data = c;
    c->wio.data = c;
    c->last_active = c->accepted_at = ev_now(srv->loop);
    list_append(srv, c);
    set_count(srv, srv->nconns + 1);
    if (tr_access_log_enabled() && addr != NULL) {
        if (addr->sa_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)addr)->sin_addr, c->peer, sizeof(c->peer));
        else if (addr->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)addr)->sin6_addr, c->peer, sizeof(c->peer));
    }
    ev_io_start(srv->loop, &c->rio);
}

/* A deadline passed: 408 where a response can still be sent (then the lingering close), else close. */
static void expire(tr_conn_t *c, int answer)
{
    tr_conn_server_t *srv = c->srv;
    if (srv->stats != NULL)
        srv->stats->timeouts++;
    if (!answer) {
        tr_conn_close(c);
        return;
    }
    tr_http_error(&c->http, 408, 0);
    flush(c);
}

/* Bytes the client sent that this side has not read yet: a request on its way in. */
static int pending_input(const tr_conn_t *c)
{
    int n = 0;
    return ioctl(c->fd, FIONREAD, &n) == 0 && n > 0;
}

/*
 * Enforce the deadlines (tr_conn_limits_t) of every connection; with all_idle, also close every idle
 * keep-alive connection (the server is stopping). A connection whose request runs in the layer above
 * is left alone: its time is the handler's.
 */
static void sweep(tr_conn_server_t *srv, int all_idle)
{
    const tr_conn_limits_t *lim = &srv->limits;
    ev_tstamp now = ev_now(srv->loop);
    for (tr_conn_link_t *l = srv->conns.next, *next; l != &srv->conns; l = next) {
        next = l->next;
        tr_conn_t *c = conn_of_link(l);
        tr_http_conn_t *h = &c->http;
        if (tr_http_running(h))
            continue;
        if (h->written < h->wbuf.len) { /* a client that does not take its response */
            if (c->write_waiting_since > 0 && now - c->write_waiting_since > lim->write_timeout)
                expire(c, 0);
            continue;
        }
        if (c->lingering) {
            if (now - c->last_active > LINGER_SECONDS)
                tr_conn_close(c);
            continue;
        }
        if (h->closing)
            continue;
        if (h->in_message && h->req != NULL) {
            const tr_req_t *r = h->req;
            /* Every byte moves last_active, so the head has a deadline of its own: a client sending a
             * header line every few seconds must not hold the connection forever. */
            if ((!r->headers_done && now - r->started > lim->header_timeout) ||
                (r->headers_done &&
                 (now - c->last_active > lim->body_timeout || now - r->started > lim->body_deadline)))
                expire(c, 1);
            continue;
        }
        if (!c->had_request) { /* a new connection that has not sent a request yet */
            /* Stopping: a client that connected a moment ago is sending its request now; it gets a
             * second to do so, and its answer (with Connection: close), instead of a reset. */
            if (all_idle && now - c->accepted_at > DRAIN_FIRST_REQUEST_SECONDS && !pending_input(c))
                tr_conn_close(c);
            else if (now - c->accepted_at > lim->header_timeout)
                expire(c, 0);
            continue;
        }
        /* Stopping: an idle connection whose next request has arrived unread is answered (Connection:
         * close) rather than closed under it; the loop reads it next. */
        if ((all_idle && !pending_input(c)) || now - c->last_active > lim->keepalive_timeout)
            tr_conn_close(c);
    }
}

/*
 * Pools shrink back after a burst: once the free objects have outnumbered what the open connections
 * could use (twice their number plus a reserve) for SHRINK_TICKS ticks in a row, the surplus goes back
 * to the system. The delay and the reserve keep a steady load from trimming and regrowing (which would
 * allocate on the request path).
 */
#define SHRINK_TICKS 5
#define POOL_RESERVE 64

static void shrink_pools(tr_conn_server_t *srv)
{
    uint64_t keep = 2 * (uint64_t)srv->nconns + POOL_RESERVE;
    int surplus = srv->conn_pool.nfree > keep || srv->req_pool.nfree > keep || srv->bufs.nfree > 2 * keep;
    if (!surplus) {
        srv->surplus_ticks = 0;
        return;
    }
    if (++srv->surplus_ticks < SHRINK_TICKS)
        return;
    srv->surplus_ticks = 0;
    uint64_t freed = tr_pool_trim(&srv->conn_pool, keep) + tr_pool_trim(&srv->req_pool, keep) +
                     tr_bufpool_trim(&srv->bufs, 2 * keep);
    if (freed > 0)
        malloc_trim(0); /* and the heap's free top with them */
}

void tr_conn_tick(tr_conn_server_t *srv, time_t now)
{
    tr_http_update_date(&srv->env, now);
    sweep(srv, srv->env.draining);
    shrink_pools(srv);
}

unsigned tr_conn_log_unfinished(tr_conn_server_t *srv, const char *who)
{
    unsigned n = 0;
    ev_tstamp now = ev_now(srv->loop);
    for (tr_conn_link_t *l = srv->conns.next; l != &srv->conns; l = l->next) {
        tr_conn_t *c = conn_of_link(l);
        tr_http_conn_t *h = &c->http;
        const char *what = tr_http_running(h)                ? "still running"
                           : h->written < h->wbuf.len        ? "response still being sent"
                           : h->in_message && h->req != NULL ? "request still arriving"
                                                             : NULL;
        if (what == NULL)
            continue;
        n++;
        tr_req_t *r = h->req;
        if (r == NULL) {
            tr_log_error("%s: a client (%s) has not taken its whole response; its connection is closed", who,
                         c->peer[0] ? c->peer : "address not logged");
            continue;
        }
        char id[TR_REQUEST_ID_MAX];
        size_t id_len = tr_http_request_id(r, id);
        tr_log_error("%s: request %.*s (%s %.*s) %s after %.1f s; its connection is closed", who, (int)id_len, id,
                     http_method_str((enum http_method)r->pub.method), (int)(r->url.len > 256 ? 256 : r->url.len),
                     tr_req_str(r, r->url), what, now - r->started);
    }
    return n;
}

void tr_conn_drain(tr_conn_server_t *srv)
{
    srv->env.draining = 1;
    sweep(srv, 1); /* idle keep-alive connections go now; busy ones after their response */
    if (srv->nconns == 0 && srv->cb.on_drained != NULL)
        srv->cb.on_drained(srv);
}

/* Send what the socket takes now; returns 1 if all of it went. */
static int send_now(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return 0;
        p += n;
        len -= (size_t)n;
    }
    return 1;
}

#define HANDOFF_BATCH 250 /* descriptors per message (SCM_RIGHTS takes up to 253) */

/* Pass fds to the next worker of the slot (see tr_conn_abandon), then close them here. */
static void hand_off(int handoff_fd, const int *fds, unsigned n, tr_conn_abandoned_t *out)
{
    if (n == 0)
        return;
    char byte = 'c';
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    union {
        char buf[CMSG_SPACE(sizeof(int) * HANDOFF_BATCH)];
        struct cmsghdr align;
    } ctl;
    memset(&ctl, 0, sizeof(ctl));
    struct msghdr msg = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = CMSG_SPACE(sizeof(int) * n)};
    struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int) * n);
    memcpy(CMSG_DATA(cm), fds, sizeof(int) * n);
    if (handoff_fd >= 0 && sendmsg(handoff_fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL) == 1)
        out->handed_off += n;
    for (unsigned i = 0; i < n; i++)
        close(fds[i]);
    out->closed += n;
}

void tr_conn_abandon(tr_conn_server_t *srv, tr_conn_answer_fn answer, void *data, int handoff_fd,
                     tr_conn_abandoned_t *out)
{
    static int batch[HANDOFF_BATCH]; /* (static: this runs on a signal handler's stack) */
    unsigned nbatch = 0;
    char buf[2048];
    memset(out, 0, sizeof(*out));
    for (tr_conn_link_t *l = srv->conns.next; l != &srv->conns; l = l->next) {
        tr_conn_t *c = conn_of_link(l);
        tr_http_conn_t *h = &c->http;
        if (c->fd < 0)
            continue;
        int sent = send_now(c->fd, h->wbuf.data + h->written, h->wbuf.len - h->written);
        int waiting = tr_http_running(h) || h->in_message || h->rbuf.len > h->parsed;
        if (sent && !c->lingering && !h->closing && !waiting) {
            batch[nbatch++] = c->fd;
            c->fd = -1;
            if (nbatch == HANDOFF_BATCH) {
                hand_off(handoff_fd, batch, nbatch, out);
                nbatch = 0;
            }
            continue;
        }
        if (sent && !c->lingering && !h->closing) {
            for (int i = 0; i < 64 && recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT) > 0; i++)
                ;
            size_t n = answer(tr_http_running(h) ? h->req : NULL, buf, sizeof(buf), data);
            if (send_now(c->fd, buf, n))
                out->answered++;
            shutdown(c->fd, SHUT_WR);
        }
        close(c->fd);
        c->fd = -1;
        out->closed++;
    }
    hand_off(handoff_fd, batch, nbatch, out);
}

unsigned tr_conn_adopt(tr_conn_server_t *srv, int handoff_fd)
{
    unsigned n = 0;
    for (;;) {
        char byte;
        struct iovec iov = {.iov_base = &byte, .iov_len = 1};
        union {
            char buf[CMSG_SPACE(sizeof(int) * HANDOFF_BATCH)];
            struct cmsghdr align;
        } ctl;
        struct msghdr msg = {
            .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf)};
        ssize_t got = recvmsg(handoff_fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return n;
        for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm != NULL; cm = CMSG_NXTHDR(&msg, cm)) {
            if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
                continue;
            unsigned nfds = (unsigned)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            for (unsigned i = 0; i < nfds; i++) {
                int fd;
                memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
                fcntl(fd, F_SETFL, O_NONBLOCK);
                struct sockaddr_storage ss;
                socklen_t len = sizeof(ss);
                int named = getpeername(fd, (struct sockaddr *)&ss, &len) == 0;
                tr_conn_accept(srv, fd, named ? (struct sockaddr *)&ss : NULL);
                n++;
            }
        }
    }
}

void tr_conn_server_init(tr_conn_server_t *srv, struct ev_loop *loop, const tr_http_limits_t *limits,
                         const tr_conn_limits_t *conn_limits, const tr_conn_callbacks_t *cb, void *cb_data)
{
    memset(srv, 0, sizeof(*srv));
    srv->loop = loop;
    srv->cb = *cb;
    srv->cb_data = cb_data;
    srv->limits = *conn_limits;
    srv->conns.next = srv->conns.prev = &srv->conns;
    tr_pool_init(&srv->conn_pool, sizeof(tr_conn_t));
    tr_pool_init(&srv->req_pool, sizeof(tr_req_t));
    srv->env.limits = *limits;
    srv->env.bufs = &srv->bufs;
    srv->env.req_pool = &srv->req_pool;
    srv->env.loop = loop;
    tr_http_update_date(&srv->env, time(NULL));
}
