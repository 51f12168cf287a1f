/*
 * In-process request API for handler specs: raw request bytes go over a socketpair into a real
 * connection of the connection layer (conn.c), through the real parser, the same routing call and
 * the same completion path as in a worker, and the response comes back over the socket. Only the
 * coroutine is driven differently: the host Lua state (busted's) resumes it, since a C function
 * called through the FFI must not re-enter the Lua VM.
 *
 * One request per connection: each tr_ffi_test_request ends the previous request and connection
 * (the request's context goes back to the pool and its serial changes) and opens a new one.
 */
#include "testing.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ffi_api.h"
#include "jwt.h"
#include "pg.h"
#include "pg_migrate.h"
#include "store.h"

/* Turns of the loop without progress after which a request is taken as incomplete. */
#define IDLE_TURNS 3
/* Turns of the loop a connection may take to close after its client has. */
#define CLOSE_TURNS 100

static struct {
    int ready;
    struct ev_loop *loop;
    tr_conn_server_t srv;
    const tr_router_t *router; /* of the request being sent */
    int client_fd;             /* the client's end of the current connection, or -1 */
    int server_fd;
    tr_req_t *handed; /* handed up and not yet done */
    tr_buf_t out;     /* what the server wrote to the client */
} t;

static void on_request(void *data, tr_req_t *r)
{
    (void)data;
    tr_http_route(r, t.router);
    t.handed = r;
    tr_ffi_env.running = r; /* the host resumes the request loop, which asks tr_ffi_req_running */
}

static void setup(void)
{
    if (t.ready)
        return;
    t.loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
    tr_http_limits_t limits = {.max_uri = 4 << 10, .max_header = 8 << 10, .max_body = 1 << 20};
    tr_conn_callbacks_t cb = {.on_request = on_request};
    tr_conn_limits_t conn_limits = {.keepalive_timeout = 60,
                                    .header_timeout = 60,
                                    .body_timeout = 60,
                                    .body_deadline = 60,
                                    .write_timeout = 60,
                                    .max_connections = 16};
    tr_conn_server_init(&t.srv, t.loop, &limits, &conn_limits, &cb, NULL);
    tr_http_set_id_prefix(&t.srv.env, time(NULL), 0);
    tr_ffi_env.loop = t.loop;
    tr_ffi_env.waits = NULL; /* triage.sleep blocks in specs (triage.testing) */
    tr_ffi_env.slot = 0;
    t.client_fd = t.server_fd = -1;
    t.ready = 1;
}

tr_conn_server_t *tr_testing_server(void)
{
    setup();
    return &t.srv;
}

/* Read what the server has written so far. Returns the number of bytes read. */
static size_t read_output(void)
{
    size_t got = 0;
    char buf[16384];
    ssize_t n;
    while (t.client_fd >= 0 && (n = read(t.client_fd, buf, sizeof(buf))) > 0) {
        tr_buf_append(&t.srv.bufs, &t.out, buf, (size_t)n);
        got += (size_t)n;
    }
    return got;
}

/* Bytes the server has not read yet (0 once its connection is closed). */
static int server_unread(void)
{
    int n = 0;
    if (t.srv.nconns == 0 || ioctl(t.server_fd, FIONREAD, &n) != 0)
        return 0;
    return n;
}

/* Turn the loop until nothing moves: no output, no unread input. */
static void settle(void)
{
    for (int idle = 0; idle < IDLE_TURNS;) {
        ev_run(t.loop, EVRUN_NOWAIT);
        if (read_output() > 0 || server_unread() > 0)
            idle = 0;
        else
            idle++;
    }
}

/* End the previous request and its connection. */
static void finish_previous(void)
{
    if (t.handed != NULL) {
        tr_req_t *r = t.handed; /* abandoned by the spec: end it without a response */
        t.handed = NULL;
        r->state = TR_REQ_FINISHED;
        tr_conn_request_done(r);
    }
    tr_ffi_env.running = NULL;
    if (t.client_fd >= 0) {
        close(t.client_fd);
        t.client_fd = -1;
        for (int i = 0; i < CLOSE_TURNS && t.srv.nconns > 0; i++)
            ev_run(t.loop, EVRUN_NOWAIT);
    }
    t.out.len = 0;
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
    setup();
    finish_previous();
    tr_http_update_date(&t.srv.env, time(NULL));
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) {
        snprintf(err, err_size, "socketpair: %s", strerror(errno));
        return NULL;
    }
    t.server_fd = sv[0];
    t.client_fd = sv[1];
    t.router = router;
    tr_conn_accept(&t.srv, t.server_fd, NULL);
    size_t sent = 0;
    for (int idle = 0; t.handed == NULL && idle < IDLE_TURNS;) {
        int moved = 0;
        if (sent < len) {
            ssize_t n = write(t.client_fd, raw + sent, len - sent);
            if (n > 0) {
                sent += (size_t)n;
                moved = 1;
            }
        }
        ev_run(t.loop, EVRUN_NOWAIT);
        moved |= read_output() > 0 || server_unread() > 0;
        idle = moved ? 0 : idle + 1;
    }
    if (t.handed != NULL)
        return &t.handed->pub;
    /* Rejected ("HTTP/1.1 413 Content Too Large\r\n...") or incomplete. */
    const char *eol = t.out.len > 9 ? memchr(t.out.data, '\r', t.out.len) : NULL;
    if (eol != NULL)
        snprintf(err, err_size, "%.*s", (int)(eol - t.out.data - 9), t.out.data + 9);
    else
        snprintf(err, err_size, "incomplete request");
    return NULL;
}

TR_FFI_EXPORT const char *tr_ffi_test_response(size_t *len)
{
    if (t.handed != NULL && t.handed->state == TR_REQ_FINISHED) {
        tr_req_t *r = t.handed;
        t.handed = NULL;
        tr_ffi_env.running = NULL;
        tr_conn_request_done(r); /* as a worker does when a request that waited ends */
    }
    if (t.ready)
        settle();
    *len = t.out.len;
    return t.out.data ? t.out.data : "";
}

/*
 * $TRIAGE_TEST_STORE (a postgres:// URL): the specs' stores are that database's, one schema per data
 * directory (t_ and a hash of its path, made if missing), so that each spec's data directory is a
 * store of its own as with SQLite. The schema's URL is written to url.
 */
static int test_pg_url(const char *base, const char *data_dir, char *url, size_t size, char *err, size_t err_size)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (const char *p = data_dir; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    char schema[32], sql[96];
    snprintf(schema, sizeof(schema), "t_%016llx", (unsigned long long)h);
    snprintf(sql, sizeof(sql), "CREATE SCHEMA IF NOT EXISTS %s", schema);
    if (tr_pg_exec_once(base, sql, err, err_size) != 0)
        return -1;
    snprintf(url, size, "%s%soptions=-csearch_path%%3D%s", base, strchr(base, '?') ? "&" : "?", schema);
    return 0;
}

TR_FFI_EXPORT int tr_ffi_test_store_open(const char *data_dir, const char *app_dir, char *err, size_t err_size)
{
    setup();
    const char *base = getenv("TRIAGE_TEST_STORE");
    static char url[4096];
    tr_store_config_t cfg = {.data_dir = data_dir};
    if (base != NULL && *base != '\0') {
        if (test_pg_url(base, data_dir, url, sizeof(url), err, err_size) != 0 ||
            tr_pg_migrate(url, app_dir, err, err_size) < 0)
            return -1;
        cfg.url = url;
    } else if (tr_store_migrate(data_dir, app_dir, err, err_size) < 0) {
        return -1;
    }
    tr_store_t *st = tr_store_open(&cfg, NULL, NULL, NULL, NULL, err, err_size);
    if (st == NULL)
        return -1;
    tr_store_close(tr_ffi_env.store); /* the store of an earlier app in this process */
    tr_ffi_env.store = st;
    return 0;
}

/* The keys of the in-process specs (a worker's come from the master instead: master.c). */
static tr_jwt_keys_t test_keys;

TR_FFI_EXPORT int tr_ffi_test_auth_keys(const char *path, double skew, char *err, size_t err_size)
{
    tr_jwt_use(NULL);
    if (tr_jwt_keys_load(&test_keys, path, err, err_size) != 0)
        return -1;
    test_keys.skew = skew;
    tr_jwt_use(&test_keys);
    return 0;
}

TR_FFI_EXPORT int tr_ffi_test_auth_sign(const char *kid, const char *payload, size_t len, char *out, size_t size)
{
    for (int k = 0; k < test_keys.count; k++)
        if (kid == NULL || strcmp(kid, test_keys.keys[k].kid) == 0)
            return tr_jwt_sign(&test_keys.keys[k], payload, len, out, size);
    return -1;
}
