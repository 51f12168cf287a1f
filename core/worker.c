/*
 * The worker process: accept on its slot's socket, run the loop, publish stats, stop gracefully.
 */
#include "worker.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"
#include "ffi_api.h"
#include "guard.h"
#include "log.h"
#include "lua_vm.h"
#include "metrics.h"
#include "privilege.h"
#include "store.h"
#include "wait.h"

#define ACCEPT_BATCH 64

typedef struct tr_worker_s {
    struct ev_loop *loop;
    const tr_config_t *cfg;
    int slot;
    int listen_fd;
    int reserve_fd; /* kept open to be closed when out of descriptors: room to accept and refuse */
    ev_io accept_io;
    ev_timer accept_retry; /* accept paused after EMFILE/ENFILE */
    ev_timer tick;         /* once a second: Date, idle sweep, log flush, stats */
    ev_signal sigterm, sigint, sigreload;
    ev_timer shutdown_timer;
    tr_conn_server_t conns;
    tr_waits_t waits;
    tr_vm_t vm;
    tr_stats_t *stats;
    tr_shared_t *shared;
    int shutting_down;
    size_t lua_settled; /* Lua memory after the last full collection */
} tr_worker_t;

/* Lua memory grown this far above its last settled figure is collected at the next tick. */
#define LUA_COLLECT_GROWTH (8 << 20)

static void publish_stats(tr_worker_t *w)
{
    tr_stats_t *s = w->stats;
    tr_conn_server_t *srv = &w->conns;
    s->pool_conn_total = srv->conn_pool.total;
    s->pool_conn_free = srv->conn_pool.nfree;
    s->pool_req_total = srv->req_pool.total;
    s->pool_req_free = srv->req_pool.nfree;
    s->pool_buf_total = srv->bufs.total;
    s->pool_buf_free = srv->bufs.nfree;
    s->lua_memory = tr_vm_lua_memory(&w->vm);
    s->lua_memory_limit = w->cfg->lua_memory_limit;
}

static void stop_accepting(tr_worker_t *w)
{
    ev_io_stop(w->loop, &w->accept_io);
    ev_timer_stop(w->loop, &w->accept_retry);
    if (w->listen_fd >= 0) {
        close(w->listen_fd); /* the master keeps its copy: queued connections wait for the next worker */
        w->listen_fd = -1;
    }
}

static void on_drained(tr_conn_server_t *srv)
{
    ev_break(srv->loop, EVBREAK_ALL);
}

/* Out of descriptors with nothing idle to close: let go of the reserve descriptor, accept one waiting
 * client, answer it 503 and close it, then take the reserve back. A client at the limit is refused at
 * once instead of waiting in the accept queue. Returns 1 if a client was refused. */
static int refuse_one(tr_worker_t *w)
{
    if (w->reserve_fd < 0)
        return 0;
    close(w->reserve_fd);
    int fd = accept4(w->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0)
        tr_conn_refuse(&w->conns, fd);
    w->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    return fd >= 0;
}

static void on_accept(struct ev_loop *loop, ev_io *io, int revents)
{
    tr_worker_t *w = io->data;
    (void)revents;
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        int fd = accept4(w->listen_fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Out of descriptors: idle keep-alive connections make room for new clients; with
                 * none to close, pause accepting instead of spinning on a ready socket. */
                int saved = errno;
                if (tr_conn_shed_idle(&w->conns, 16) > 0)
                    continue;
                if (refuse_one(w))
                    continue; /* more may be waiting: each gets its 503 */
                if (!ev_is_active(&w->accept_retry))
                    tr_log_error("accept: %s; pausing accept for 100 ms", strerror(saved));
                ev_io_stop(loop, &w->accept_io);
                ev_timer_set(&w->accept_retry, 0.1, 0.);
                ev_timer_start(loop, &w->accept_retry);
            }
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        tr_conn_accept(&w->conns, fd, (struct sockaddr *)&ss);
    }
}

/*
 * --public-health: the public listener answers GET (or HEAD) /_triage/health itself, from the same
 * figures as the admin listener's, and hands every other request (other /_triage/ paths included) to
 * the application. Installed only with the flag, so that a server without it pays nothing.
 */
static void on_request_with_health(void *data, tr_req_t *r)
{
    tr_worker_t *w = (tr_worker_t *)((char *)data - offsetof(tr_worker_t, vm));
    static const char path[] = "/_triage/health";
    if (r->path_len == sizeof(path) - 1 && memcmp(tr_req_str(r, r->url), path, sizeof(path) - 1) == 0 &&
        (r->pub.method == HTTP_GET || r->pub.method == HTTP_HEAD)) {
        const char *body;
        size_t len;
        r->pub.status = tr_metrics_health(w->shared, w->cfg->workers, &body, &len);
        r->pub.flags |= TR_RESP_JSON;
        tr_http_respond(r, body, len);
        r->state = TR_REQ_FINISHED;
        return;
    }
    tr_vm_on_request(data, r);
}

static void on_accept_retry(struct ev_loop *loop, ev_timer *t, int revents)
{
    tr_worker_t *w = t->data;
    (void)revents;
    if (!w->shutting_down)
        ev_io_start(loop, &w->accept_io);
}

typedef struct reload_s {
    tr_worker_t *w;
    uint64_t id;
    tr_gen_t *gen;
    char err[TR_ERROR_MAX];
} reload_t;

/* Build generation `id` from its snapshot of the code (see snapshot.h). */
static tr_gen_t *build(tr_worker_t *w, uint64_t id, const char *carried, size_t carried_len, char *err, size_t err_size)
{
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/%llu", w->shared->code_root, (unsigned long long)id);
    return tr_gen_new(w->cfg, id, dir, carried, carried_len, err, err_size);
}

static void build_with_carried(const char *data, size_t len, void *arg)
{
    reload_t *rl = arg;
    rl->gen = build(rl->w, rl->id, data, len, rl->err, sizeof(rl->err));
}

/* Build generation `want` in a fresh state (handing it what the running one carries) and swap it in
 * if it loads. Requests already running stay on the generation they started on. */
static void swap_in(tr_worker_t *w, uint64_t want)
{
    reload_t rl = {.w = w, .id = want};
    tr_gen_export_carried(w->vm.current, build_with_carried, &rl);
    tr_gen_t *gen = rl.gen;
    char *err = rl.err;
    if (gen == NULL) {
        tr_log_error("worker %d: generation %llu failed to load, keeping %llu: %s", w->slot, (unsigned long long)want,
                     (unsigned long long)w->vm.current->id, err);
        snprintf(w->stats->last_error, sizeof(w->stats->last_error), "%s", err);
        return;
    }
    w->stats->last_error[0] = '\0';
    tr_vm_swap(&w->vm, gen);
    publish_stats(w);
}

/* Reload: the generation the master published. */
static void check_reload(tr_worker_t *w)
{
    uint64_t want = w->shared->generation;
    if (w->vm.current == NULL || w->vm.current->id != want)
        swap_in(w, want);
}

static void on_tick(struct ev_loop *loop, ev_timer *t, int revents)
{
    tr_worker_t *w = t->data;
    (void)revents;
    tr_conn_tick(&w->conns, (time_t)ev_now(loop));
    tr_access_log_flush();
    if (w->vm.renew) {
        w->vm.renew = 0;
        tr_log_info("worker %d: generation %llu rebuilt in a fresh Lua state after the memory limit, to give "
                    "the memory back",
                    w->slot, (unsigned long long)w->vm.current->id);
        swap_in(w, w->vm.current->id);
        tr_vm_collect(&w->vm);
        malloc_trim(0);
        w->lua_settled = tr_vm_lua_memory(&w->vm);
    }
    if (tr_vm_lua_memory(&w->vm) > w->lua_settled + LUA_COLLECT_GROWTH) {
        tr_vm_collect(&w->vm);
        w->lua_settled = tr_vm_lua_memory(&w->vm);
    }
    publish_stats(w);
    if (getppid() == 1) /* the master is gone: nobody will replace or stop us */
        kill(getpid(), SIGTERM);
}

static void on_reload_signal(struct ev_loop *loop, ev_signal *s, int revents)
{
    (void)loop, (void)revents;
    check_reload(s->data);
}

static void on_shutdown_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    tr_worker_t *w = t->data;
    (void)revents;
    char who[64];
    snprintf(who, sizeof(who), "worker %d: shutdown timeout (%.0f s)", w->slot, w->cfg->shutdown_timeout);
    unsigned n = tr_conn_log_unfinished(&w->conns, who);
    tr_log_error("worker %d: %u connections still busy (%u unfinished) after the shutdown timeout; exiting", w->slot,
                 w->conns.nconns, n);
    ev_break(loop, EVBREAK_ALL);
}

/* Stopping: take the connections already waiting in the accept queue before closing this copy of
 * the socket, so that a client whose connection the kernel accepted gets its answer. (When this was
 * the last copy, closing the socket would reset them.) */
static void accept_queued(tr_worker_t *w)
{
    for (;;) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        int fd = accept4(w->listen_fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE)
                while (refuse_one(w)) /* no room for them: a 503 each beats a reset */
                    ;
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        tr_conn_accept(&w->conns, fd, (struct sockaddr *)&ss);
    }
}

static void on_stop_signal(struct ev_loop *loop, ev_signal *s, int revents)
{
    tr_worker_t *w = s->data;
    (void)revents;
    if (w->shutting_down)
        return;
    w->shutting_down = 1;
    if (w->listen_fd >= 0)
        accept_queued(w);
    stop_accepting(w);
    ev_timer_init(&w->shutdown_timer, on_shutdown_timeout, w->cfg->shutdown_timeout, 0.);
    w->shutdown_timer.data = w;
    ev_timer_start(loop, &w->shutdown_timer);
    tr_conn_drain(&w->conns);
}

int tr_worker_run(const tr_config_t *cfg, int slot, int listen_fd, const int handoff_fds[2], tr_shared_t *shared)
{
    static tr_worker_t worker;
    tr_worker_t *w = &worker;
    w->cfg = cfg;
    w->slot = slot;
    w->shared = shared;
    w->stats = &shared->workers[slot];
    w->listen_fd = listen_fd;
    w->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    tr_mem_counter = (uint64_t *)&w->stats->core_allocations;
    *tr_mem_counter = 0;

    char err[TR_ERROR_MAX];
    /* Before anything runs the app's code or opens the store; before PR_SET_PDEATHSIG, which a
     * change of user clears. */
    if (tr_privilege_drop(&cfg->run_as, err, sizeof(err)) != 0) {
        tr_log_error("worker %d: %s", slot, err);
        return 1;
    }
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    signal(SIGUSR2, SIG_IGN); /* the master's (binary upgrade); `systemctl kill` signals every process */
    w->loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
    if (w->loop == NULL) {
        tr_log_error("worker %d: cannot create an event loop", slot);
        return 1;
    }
    int rc = tr_waits_init(&w->waits, w->loop);
    if (rc != 0) {
        tr_log_error("worker %d: cannot create the wait timer: %s", slot, strerror(-rc));
        return 1;
    }
    tr_http_limits_t limits = {.max_uri = cfg->max_uri,
                               .max_header = cfg->max_header,
                               .max_body = cfg->max_body,
                               .max_response = cfg->max_response};
    /* A fixed threshold: glibc would otherwise raise it after the first large free, and large blocks
     * (bodies, responses, Lua strings) would then stay in the heap instead of going back to the system. */
    mallopt(M_MMAP_THRESHOLD, 128 << 10);
    tr_conn_callbacks_t cb = {.on_request = cfg->public_health ? on_request_with_health : tr_vm_on_request,
                              .on_drained = on_drained};
    tr_conn_limits_t conn_limits = {.keepalive_timeout = cfg->keepalive_timeout,
                                    .header_timeout = cfg->header_timeout,
                                    .body_timeout = cfg->body_timeout,
                                    .body_deadline = cfg->body_deadline,
                                    .write_timeout = cfg->write_timeout,
                                    .max_connections = (unsigned)cfg->max_connections};
    tr_conn_server_init(&w->conns, w->loop, &limits, &conn_limits, &cb, &w->vm);
    w->conns.stats = w->stats;
    tr_http_set_id_prefix(&w->conns.env, time(NULL), slot);
    w->vm.stats = w->stats;
    w->vm.shared = shared;
    if (shared->metrics != NULL) {
        w->conns.env.metrics = &shared->metrics->workers[slot];
        w->vm.metrics = &shared->metrics->workers[slot];
    }
    tr_access_log_set_worker(slot);
    w->vm.request_done = tr_conn_request_done;
    tr_guard_init(w->stats, &w->conns, handoff_fds[0], cfg->handler_timeout);
    tr_ffi_env.running = NULL;
    tr_ffi_env.waits = &w->waits;
    tr_ffi_env.loop = w->loop;
    tr_ffi_env.slot = slot;
    tr_store_config_t store_cfg = {
        .data_dir = cfg->data_dir, .url = cfg->store_url, .connections = cfg->store_connections};
    tr_ffi_env.store = tr_store_open(&store_cfg, w->loop, &w->waits, w->stats, shared->store_lock, err, sizeof(err));
    if (tr_ffi_env.store == NULL) {
        tr_log_error("worker %d: %s", slot, err);
        return 1;
    }

    tr_gen_t *gen = build(w, shared->generation, NULL, 0, err, sizeof(err));
    if (gen == NULL) {
        tr_log_error("worker %d: the application failed to load: %s", slot, err);
        snprintf(w->stats->last_error, sizeof(w->stats->last_error), "%s", err);
        return 1;
    }
    tr_vm_swap(&w->vm, gen);

    ev_io_init(&w->accept_io, on_accept, listen_fd, EV_READ);
    w->accept_io.data = w;
    ev_io_start(w->loop, &w->accept_io);
    ev_timer_init(&w->accept_retry, on_accept_retry, 0.1, 0.);
    w->accept_retry.data = w;
    ev_timer_init(&w->tick, on_tick, 1., 1.);
    w->tick.data = w;
    ev_timer_start(w->loop, &w->tick);
    ev_signal_init(&w->sigterm, on_stop_signal, SIGTERM);
    ev_signal_init(&w->sigint, on_stop_signal, SIGINT);
    ev_signal_init(&w->sigreload, on_reload_signal, SIGUSR1);
    w->sigterm.data = w->sigint.data = w->sigreload.data = w;
    ev_signal_start(w->loop, &w->sigterm);
    ev_signal_start(w->loop, &w->sigint);
    ev_signal_start(w->loop, &w->sigreload);

    w->stats->pid = getpid();
    unsigned adopted = tr_conn_adopt(&w->conns, handoff_fds[1]);
    if (adopted > 0)
        tr_log_info("worker %d: took over %u connections from the worker it replaces", slot, adopted);
    publish_stats(w);
    check_reload(w); /* a reload published while this worker was starting */
    ev_run(w->loop, 0);

    tr_store_close(tr_ffi_env.store); /* what is queued is committed first */
    tr_access_log_flush();
    return 0;
}
