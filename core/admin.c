#include "admin.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "admin_token.h"
#include "log.h"
#include "metrics.h"
#include "status.h"

#define ADMIN_REQUEST_MAX 8192

struct tr_admin_conn_s {
    tr_admin_t *admin;
    int fd;
    ev_io rio, wio;
    ev_timer idle;
    ev_timer deadline; /* ADMIN_REQUEST_DEADLINE: to send the request, then to take the answer */
    size_t len;
    char buf[ADMIN_REQUEST_MAX];
    tr_buf_t out;
    size_t written;
    unsigned waiting_reload : 1;
    tr_admin_conn_t *prev, *next;
};

static void conn_close(tr_admin_conn_t *c)
{
    tr_admin_t *a = c->admin;
    ev_io_stop(a->loop, &c->rio);
    ev_io_stop(a->loop, &c->wio);
    ev_timer_stop(a->loop, &c->idle);
    ev_timer_stop(a->loop, &c->deadline);
    close(c->fd);
    explicit_bzero(c->buf, c->len); /* the request may have carried the token */
    tr_buf_release(&a->bufs, &c->out);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        a->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    tr_mem_free(c);
}

static void restart_idle(tr_admin_conn_t *c)
{
    ev_timer_again(c->admin->loop, &c->idle);
}

static void flush(tr_admin_conn_t *c)
{
    while (c->written < c->out.len) {
        ssize_t n = send(c->fd, c->out.data + c->written, c->out.len - c->written, MSG_NOSIGNAL);
        if (n > 0) {
            c->written += (size_t)n;
            restart_idle(c);
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            ev_io_start(c->admin->loop, &c->wio); /* the rest when the client takes it */
            return;
        } else {
            break;
        }
    }
    conn_close(c); /* answered (or the client is gone): one request per connection */
}

static void on_writable(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)loop, (void)revents;
    flush(io->data);
}

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 409: return "Conflict";
    case 503: return "Service Unavailable";
    default: return "Bad Request";
    }
}

/* Answer and close: content_type NULL means JSON; extra is more header lines ("" for none). */
static void reply_as(tr_admin_conn_t *c, int status, const char *content_type, const char *extra, const char *body,
                     size_t len)
{
    tr_admin_t *a = c->admin;
    char head[512];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nServer: triage\r\nContent-Type: %s\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\nCache-Control: no-store\r\n%s\r\n",
                     status, reason(status), content_type ? content_type : "application/json", len, extra);
    ev_io_stop(a->loop, &c->rio);
    /* A fresh deadline to take the answer (a reload may have kept the client waiting for long). */
    ev_timer_stop(a->loop, &c->deadline);
    ev_timer_set(&c->deadline, ADMIN_REQUEST_DEADLINE, 0.);
    ev_timer_start(a->loop, &c->deadline);
    ev_timer_again(a->loop, &c->idle);
    tr_buf_append(&a->bufs, &c->out, head, (size_t)n);
    tr_buf_append(&a->bufs, &c->out, body, len);
    flush(c);
}

static void reply(tr_admin_conn_t *c, int status, const char *body, size_t len)
{
    reply_as(c, status, NULL, "", body, len);
}

void tr_admin_reload_finished(tr_admin_t *a, int ok, uint64_t generation, const char *error, const char *behind)
{
    tr_buf_t body = {0};
    if (ok) {
        char tmp[128];
        int n = snprintf(tmp, sizeof(tmp), "{\"ok\":true,\"generation\":%llu", (unsigned long long)generation);
        tr_buf_append(&a->bufs, &body, tmp, (size_t)n);
        if (behind != NULL) {
            tr_buf_append(&a->bufs, &body, ",\"workers_behind\":[", 19);
            tr_buf_append(&a->bufs, &body, behind, strlen(behind));
            tr_buf_append(&a->bufs, &body, "]", 1);
        }
        tr_buf_append(&a->bufs, &body, "}", 1);
    } else {
        tr_buf_append(&a->bufs, &body, "{\"ok\":false,\"error\":", 20);
        tr_status_json_string(&a->bufs, &body, error);
        tr_buf_append(&a->bufs, &body, "}", 1);
    }
    for (tr_admin_conn_t *c = a->conns, *next; c != NULL; c = next) {
        next = c->next; /* reply may close c */
        if (c->waiting_reload) {
            c->waiting_reload = 0;
            reply(c, ok ? 200 : 409, body.data, body.len);
        }
    }
    tr_buf_release(&a->bufs, &body);
}

/* The value of the request's Authorization header, or NULL (c->buf holds the whole head, NUL-ended). */
static const char *authorization(tr_admin_conn_t *c, size_t *len)
{
    static const char name[] = "authorization:";
    for (const char *line = strchr(c->buf, '\n'); line != NULL; line = strchr(line, '\n')) {
        line++;
        if (strncasecmp(line, name, sizeof(name) - 1) != 0)
            continue;
        const char *v = line + sizeof(name) - 1;
        while (*v == ' ' || *v == '\t')
            v++;
        const char *end = v + strcspn(v, "\r\n");
        while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        *len = (size_t)(end - v);
        return v;
    }
    return NULL;
}

/*
 * Is the request allowed? Answers 401 (no token) or 403 (a wrong one) itself and returns 0 when not.
 * The token is looked at only when needed, and compared in constant time.
 */
static int authorized(tr_admin_conn_t *c)
{
    size_t len = 0;
    const char *v = authorization(c, &len);
    if (v == NULL || len < 7 || strncasecmp(v, "Bearer ", 7) != 0) {
        static const char body[] =
            "{\"error\":\"this admin endpoint needs the admin token: send Authorization: Bearer <token>; the "
            "token is in the server's --admin-token-file (default DATA_DIR/admin.token) or $TRIAGE_ADMIN_TOKEN\"}";
        reply_as(c, 401, NULL, "WWW-Authenticate: Bearer realm=\"triage admin\"\r\n", body, sizeof(body) - 1);
        return 0;
    }
    v += 7;
    len -= 7;
    while (len > 0 && *v == ' ')
        v++, len--;
    if (!tr_admin_token_equal(c->admin->opt.token, v, len)) {
        static const char body[] = "{\"error\":\"wrong admin token\"}";
        reply(c, 403, body, sizeof(body) - 1);
        return 0;
    }
    return 1;
}

/* Does the request line name method and path (with or without a query string)? */
static int is(const tr_admin_conn_t *c, const char *method, const char *path)
{
    size_t m = strlen(method), p = strlen(path);
    const char *b = c->buf;
    return strncmp(b, method, m) == 0 && b[m] == ' ' && strncmp(b + m + 1, path, p) == 0 &&
           (b[m + 1 + p] == ' ' || b[m + 1 + p] == '?');
}

static void handle(tr_admin_conn_t *c)
{
    tr_admin_t *a = c->admin;
    ev_timer_stop(a->loop, &c->deadline); /* the request is in */
    if (is(c, "GET", "/_triage/health")) {
        const char *body;
        size_t len;
        int status = tr_metrics_health(a->shared, a->nworkers, &body, &len);
        reply(c, status, body, len);
    } else if (is(c, "GET", "/_triage/status")) {
        if (!a->opt.loopback && !authorized(c))
            return;
        tr_buf_t out = {0};
        tr_status_json(&a->bufs, &out, a->shared, a->nworkers, a->started_at);
        reply(c, 200, out.data, out.len);
        tr_buf_release(&a->bufs, &out);
    } else if (is(c, "GET", "/_triage/metrics")) {
        if (!a->opt.loopback && !authorized(c))
            return;
        tr_buf_t out = {0};
        tr_metrics_render(&a->bufs, &out, a->opt.metrics, a->shared, a->nworkers);
        reply_as(c, 200, "text/plain; version=0.0.4; charset=utf-8", "", out.data, out.len);
        tr_buf_release(&a->bufs, &out);
    } else if (is(c, "POST", "/_triage/reload")) {
        if (!authorized(c))
            return;
        /* Answered by tr_admin_reload_finished; the timers stay off while the reload runs (a
         * --reload-check may take minutes). */
        ev_io_stop(a->loop, &c->rio);
        ev_timer_stop(a->loop, &c->idle);
        c->waiting_reload = 1;
        a->on_reload(a->data);
    } else {
        static const char body[] = "{\"error\":\"not found\",\"endpoints\":[\"GET /_triage/health\",\"GET "
                                   "/_triage/status\",\"GET /_triage/metrics\",\"POST /_triage/reload\"]}";
        reply(c, 404, body, sizeof(body) - 1);
    }
}

static void on_readable(struct ev_loop *loop, ev_io *io, int revents)
{
    tr_admin_conn_t *c = io->data;
    (void)loop, (void)revents;
    ssize_t n = read(c->fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len);
    if (n <= 0) {
        if (n == 0 || (errno != EAGAIN && errno != EINTR))
            conn_close(c);
        return;
    }
    restart_idle(c);
    c->len += (size_t)n;
    c->buf[c->len] = '\0';
    if (strstr(c->buf, "\r\n\r\n") != NULL || strstr(c->buf, "\n\n") != NULL)
        handle(c);
    else if (c->len == sizeof(c->buf) - 1)
        reply(c, 400, "{\"error\":\"bad request\"}", 23);
}

static void on_idle(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop, (void)revents;
    conn_close(t->data);
}

static void on_deadline(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop, (void)revents;
    conn_close(t->data);
}

static void on_accept_retry(struct ev_loop *loop, ev_timer *t, int revents)
{
    tr_admin_t *a = t->data;
    (void)revents;
    if (a->fd >= 0)
        ev_io_start(loop, &a->io);
}

static void on_accept(struct ev_loop *loop, ev_io *io, int revents)
{
    tr_admin_t *a = io->data;
    (void)revents;
    for (;;) {
        int fd = accept4(a->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* The listener stays readable: pause instead of spinning on it, and say so once. */
                if (!a->accept_paused)
                    tr_log_error("admin accept: %s; pausing it, retried every 100 ms", strerror(errno));
                a->accept_paused = 1;
                ev_io_stop(loop, &a->io);
                /* Set again: a one-shot timer restarted as it was left fires at once, every time. */
                ev_timer_set(&a->accept_retry, 0.1, 0.);
                ev_timer_start(loop, &a->accept_retry);
            }
            return;
        }
        a->accept_paused = 0;
        tr_admin_conn_t *c = tr_mem_alloc(sizeof(*c));
        memset(c, 0, sizeof(*c));
        c->admin = a;
        c->fd = fd;
        ev_io_init(&c->rio, on_readable, fd, EV_READ);
        ev_io_init(&c->wio, on_writable, fd, EV_WRITE);
        ev_init(&c->idle, on_idle);
        c->idle.repeat = ADMIN_IDLE_TIMEOUT;
        ev_timer_init(&c->deadline, on_deadline, ADMIN_REQUEST_DEADLINE, 0.);
        c->rio.data = c->wio.data = c->idle.data = c->deadline.data = c;
        c->next = a->conns;
        if (a->conns != NULL)
            a->conns->prev = c;
        a->conns = c;
        ev_io_start(loop, &c->rio);
        ev_timer_again(loop, &c->idle);
        ev_timer_start(loop, &c->deadline);
    }
}

void tr_admin_start(tr_admin_t *a, struct ev_loop *loop, int fd, const tr_shared_t *shared, int nworkers,
                    double started_at, const tr_admin_options_t *opt, void (*on_reload)(void *data), void *data)
{
    memset(a, 0, sizeof(*a));
    a->loop = loop;
    a->fd = fd;
    a->shared = shared;
    a->nworkers = nworkers;
    a->started_at = started_at;
    a->opt = *opt;
    a->on_reload = on_reload;
    a->data = data;
    ev_io_init(&a->io, on_accept, fd, EV_READ);
    a->io.data = a;
    ev_timer_init(&a->accept_retry, on_accept_retry, 0.1, 0.);
    a->accept_retry.data = a;
    ev_io_start(loop, &a->io);
}

void tr_admin_stop(tr_admin_t *a)
{
    if (a->fd >= 0) {
        ev_io_stop(a->loop, &a->io);
        ev_timer_stop(a->loop, &a->accept_retry);
        close(a->fd);
        a->fd = -1;
    }
    while (a->conns != NULL)
        conn_close(a->conns);
}

void tr_admin_close_fds(tr_admin_t *a)
{
    if (a->fd >= 0)
        close(a->fd);
    for (tr_admin_conn_t *c = a->conns; c != NULL; c = c->next) {
        close(c->fd);
        explicit_bzero(c->buf, c->len); /* a worker runs scripts: no token of a request in its memory */
    }
}
