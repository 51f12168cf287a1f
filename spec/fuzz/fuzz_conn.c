/*
 * libFuzzer harness: the connection state machine (core/conn.c over core/http.c) on a real socket.
 * One client byte stream (pipelined requests) is written into a socketpair in pieces whose sizes the
 * fuzzer chooses, the worker's loop turning between pieces; the application finishes each request
 * either at once or only after the next piece has arrived (the fuzzer chooses which), as a handler
 * that waits does. Then the client half-closes and the connection must end.
 *
 * Input: byte 0, which requests finish late (bit i % 8 for request i); byte 1, the number of pieces
 * (1 + b % 16); then one byte per cut (where it falls in the stream); then the stream.
 *
 * Checked beyond the sanitizers: the connection closes, and every connection, request and buffer is
 * back in its pool.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"
#include "fuzz.h"

#define MAX_PIECES 16
#define TURNS 64 /* loop turns allowed for one piece to be taken in, or for the close */

static struct ev_loop *loop;
static tr_conn_server_t srv;
static tr_router_t *router;
static uint8_t late_mask;
static unsigned nrequests;
static tr_req_t *late; /* a request that finishes after the next piece */

static void finish(tr_req_t *r)
{
    r->pub.status = r->pub.handler >= 0 ? 200 : 404;
    tr_http_respond(r, "ok", 2);
    r->state = TR_REQ_FINISHED;
}

static void on_request(void *data, tr_req_t *r)
{
    (void)data;
    tr_http_route(r, router);
    FUZZ_CHECK(late == NULL); /* one request at a time per connection */
    if (late_mask & (1u << (nrequests++ % 8)))
        late = r; /* it waits */
    else
        finish(r);
}

static void finish_late(void)
{
    if (late != NULL) {
        tr_req_t *r = late;
        late = NULL;
        finish(r);
        tr_conn_request_done(r);
    }
}

static void drain(int fd)
{
    char buf[65536];
    while (read(fd, buf, sizeof(buf)) > 0) {
    }
}

static int unread(int fd)
{
    int n = 0;
    return srv.nconns > 0 && ioctl(fd, FIONREAD, &n) == 0 ? n : 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
    tr_http_limits_t limits = {.max_uri = 512, .max_header = 2048, .max_body = 8192};
    tr_conn_callbacks_t cb = {.on_request = on_request};
    tr_conn_limits_t conn_limits = {.keepalive_timeout = 60,
                                    .header_timeout = 60,
                                    .body_timeout = 60,
                                    .body_deadline = 60,
                                    .write_timeout = 60,
                                    .max_connections = 4};
    tr_conn_server_init(&srv, loop, &limits, &conn_limits, &cb, NULL);
    tr_http_set_id_prefix(&srv.env, 1700000000, 1);
    router = fuzz_sample_router();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    late_mask = data[0];
    unsigned npieces = 1 + data[1] % MAX_PIECES;
    if (size < 2 + (npieces - 1))
        return 0;
    const uint8_t *cuts = data + 2;
    const uint8_t *stream = cuts + (npieces - 1);
    size_t len = size - 2 - (npieces - 1);
    size_t ends[MAX_PIECES];
    for (unsigned i = 0; i + 1 < npieces; i++) {
        size_t at = len * cuts[i] / 256;
        ends[i] = i > 0 && at < ends[i - 1] ? ends[i - 1] : at;
    }
    ends[npieces - 1] = len;

    int sv[2];
    FUZZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
    nrequests = 0;
    late = NULL;
    tr_conn_accept(&srv, sv[0], NULL);
    size_t sent = 0;
    for (unsigned p = 0; p < npieces; p++) {
        for (int turn = 0; turn < TURNS && (sent < ends[p] || unread(sv[0]) > 0); turn++) {
            if (sent < ends[p]) {
                ssize_t n = write(sv[1], stream + sent, ends[p] - sent);
                if (n > 0)
                    sent += (size_t)n;
                else
                    FUZZ_CHECK(errno == EAGAIN || errno == EPIPE || errno == ECONNRESET);
            }
            ev_run(loop, EVRUN_NOWAIT);
            drain(sv[1]);
        }
        finish_late(); /* what waited through this piece ends now */
        ev_run(loop, EVRUN_NOWAIT);
        drain(sv[1]);
    }
    shutdown(sv[1], SHUT_WR);
    for (int turn = 0; turn < TURNS && srv.nconns > 0; turn++) {
        ev_run(loop, EVRUN_NOWAIT);
        finish_late();
        drain(sv[1]);
    }
    if (srv.nconns > 0) { /* e.g. a lingering close waiting for its timer: the client goes away */
        close(sv[1]);
        sv[1] = -1;
        for (int turn = 0; turn < TURNS && srv.nconns > 0; turn++)
            ev_run(loop, EVRUN_NOWAIT);
    }
    FUZZ_CHECK(srv.nconns == 0);
    finish_late();
    if (sv[1] >= 0)
        close(sv[1]);
    FUZZ_CHECK(srv.conn_pool.nfree == srv.conn_pool.total);
    FUZZ_CHECK(srv.req_pool.nfree == srv.req_pool.total);
    FUZZ_CHECK(srv.bufs.nfree == srv.bufs.total);
    return 0;
}
