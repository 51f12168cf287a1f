/*
 * The worker process: accept on its slot's socket, run the loop, publish stats, stop gracefully.
 */
#include "worker.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "lua_vm.h"

tr_worker_t *tr_worker;

#define ACCEPT_BATCH 64

void tr_worker_init(tr_worker_t *w, const tr_config_t *cfg, int slot, tr_stats_t *stats)
{
    memset(w, 0, sizeof(*w));
    w->cfg = cfg;
    w->slot = slot;
    w->stats = stats;
    w->listen_fd = -1;
    w->sleep_fd = -1;
    w->started = time(NULL);
    w->conns.next = w->conns.prev = &w->conns;
    tr_pool_init(&w->conn_pool, sizeof(tr_conn_t));
    tr_pool_init(&w->req_pool, sizeof(tr_req_t));
    tr_http_update_date(w, w->started);
}

void tr_worker_publish_stats(tr_worker_t *w)
{
    tr_stats_t *s = w->stats;
    s->pool_conn_total = w->conn_pool.total;
    s->pool_conn_free = w->conn_pool.nfree;
    s->pool_req_total = w->req_pool.total;
    s->pool_req_free = w->req_pool.nfree;
    s->pool_buf_total = w->bufs.total;
    s->pool_buf_free = w->bufs.nfree;
    size_t lua = w->current ? tr_gen_lua_memory(w->current) : 0;
    for (tr_gen_t *g = w->old; g != NULL; g = g->next_old)
        lua += tr_gen_lua_memory(g);
    s->lua_memory = lua;
}

static void stop_accepting(tr_worker_t *w)
{
    ev_io_stop(w->loop, &w->accept_io);
    ev_timer_stop(w->loop, &w->accept_retry);
    if (w->listen_fd >= 0) {
        close(w->listen_fd); /* the master keeps its copy: queued connections wait for the next worker */
        w->listen_fd = -1;
        w->sleep_fd = -1;
    }
}

void tr_worker_conn_closed(tr_worker_t *w)
{
    if (w->shutting_down && w->nconns == 0 && w->loop != NULL)
        ev_break(w->loop, EVBREAK_ALL);
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
                /* Out of descriptors: pause accepting instead of spinning on a ready socket. */
                tr_log_error("accept: %s; pausing accept for 100 ms", strerror(errno));
                ev_io_stop(loop, &w->accept_io);
                ev_timer_set(&w->accept_retry, 0.1, 0.);
                ev_timer_start(loop, &w->accept_retry);
            }
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        tr_conn_accept(w, fd, (struct sockaddr *)&ss);
    }
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

/* Build generation `id` from its snapshot of the code (see reload.h). */
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

/* Reload: build the generation the master published (handing it what the running one carries), and
 * swap it in if it loads. Requests already running stay on the generation they started on. */
static void check_reload(tr_worker_t *w)
{
    uint64_t want = w->shared->generation;
    if (w->current != NULL && w->current->id == want)
        return;
    reload_t rl = {.w = w, .id = want};
    tr_gen_export_carried(w->current, build_with_carried, &rl);
    tr_gen_t *gen = rl.gen;
    char *err = rl.err;
    if (gen == NULL) {
        tr_log_error("worker %d: generation %llu failed to load, keeping %llu: %s", w->slot, (unsigned long long)want,
                     (unsigned long long)w->current->id, err);
        snprintf(w->stats->last_error, sizeof(w->stats->last_error), "%s", err);
        return;
    }
    w->stats->last_error[0] = '\0';
    tr_vm_swap(w, gen);
    tr_worker_publish_stats(w);
}

static void on_tick(struct ev_loop *loop, ev_timer *t, int revents)
{
    tr_worker_t *w = t->data;
    (void)revents;
    tr_http_update_date(w, (time_t)ev_now(loop));
    tr_conn_sweep(w, w->shutting_down);
    tr_access_log_flush();
    tr_worker_publish_stats(w);
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
    tr_log_error("worker %d: %u connections still busy after the shutdown timeout; exiting", w->slot, w->nconns);
    ev_break(loop, EVBREAK_ALL);
}

static void on_stop_signal(struct ev_loop *loop, ev_signal *s, int revents)
{
    tr_worker_t *w = s->data;
    (void)revents;
    if (w->shutting_down)
        return;
    w->shutting_down = 1;
    stop_accepting(w);
    tr_conn_sweep(w, 1); /* idle keep-alive connections go now; busy ones after their response */
    ev_timer_init(&w->shutdown_timer, on_shutdown_timeout, w->cfg->shutdown_timeout, 0.);
    w->shutdown_timer.data = w;
    ev_timer_start(loop, &w->shutdown_timer);
    tr_worker_conn_closed(w);
}

int tr_worker_run(const tr_config_t *cfg, int slot, int listen_fd, tr_shared_t *shared)
{
    static tr_worker_t worker;
    tr_worker_t *w = &worker;
    tr_worker_init(w, cfg, slot, &shared->workers[slot]);
    w->shared = shared;
    w->listen_fd = listen_fd;
    tr_worker = w;
    tr_mem_counter = (uint64_t *)&w->stats->core_allocations;
    *tr_mem_counter = 0;

    prctl(PR_SET_PDEATHSIG, SIGTERM);
    w->loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
    if (w->loop == NULL) {
        tr_log_error("worker %d: cannot create an event loop", slot);
        return 1;
    }

    char err[TR_ERROR_MAX];
    tr_gen_t *gen = build(w, shared->generation, NULL, 0, err, sizeof(err));
    if (gen == NULL) {
        tr_log_error("worker %d: the application failed to load: %s", slot, err);
        snprintf(w->stats->last_error, sizeof(w->stats->last_error), "%s", err);
        return 1;
    }
    tr_vm_swap(w, gen);
    int rc = tr_vm_sleep_init(w);
    if (rc != 0) {
        tr_log_error("worker %d: cannot create the sleep timer: %s", slot, strerror(-rc));
        return 1;
    }

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
    tr_worker_publish_stats(w);
    check_reload(w); /* a reload published while this worker was starting */
    ev_run(w->loop, 0);

    tr_access_log_flush();
    return 0;
}
